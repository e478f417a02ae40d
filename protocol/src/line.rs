//! One message per line. Messages pass through `serde_json::Value` on their way out, so the keys of every
//! object are written in sorted order whatever the field order of the Rust types: the bytes on the wire do
//! not depend on how a struct happens to be declared.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::{ErrorCode, ErrorReply, Request, PROTOCOL_VERSION};

/// A reply line that is not a reply of this protocol.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("protocol version {0} is not supported; this build speaks v{PROTOCOL_VERSION}")]
    Version(Value),
    #[error("neither a result nor an error: {0}")]
    Shape(String),
    #[error("unexpected result: {0}")]
    Result(serde_json::Error),
}

/// The line (without its newline) for `request`, with `id` when given.
pub fn encode_request(id: Option<&Value>, request: &Request) -> String {
    let mut value = to_value(request);
    value["v"] = json!(PROTOCOL_VERSION);
    if let Some(id) = id {
        value["id"] = id.clone();
    }
    value.to_string()
}

/// Parses one request line into its id (`null` when absent or unreadable) and request.
pub fn decode_request(line: &str) -> (Value, Result<Request, ErrorReply>) {
    // Repeated keys are refused (a policy document with `"action":"deny","action":"allow"` must not load as allow);
    // syntax errors keep serde_json's own wording.
    let value: Value = match policy::json::parse_value(line.as_bytes()) {
        Ok(v) => v,
        Err(policy::PolicyError::Invalid(errors)) => {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            return (
                Value::Null,
                Err(ErrorReply::new(ErrorCode::BadRequest, message)),
            );
        }
        Err(policy::PolicyError::Syntax { .. }) => {
            let e = serde_json::from_str::<serde::de::IgnoredAny>(line)
                .err()
                .map_or_else(|| "unreadable".to_string(), |e| e.to_string());
            return (
                Value::Null,
                Err(ErrorReply::new(
                    ErrorCode::BadJson,
                    format!("not JSON: {e}"),
                )),
            );
        }
    };
    let Value::Object(mut obj) = value else {
        return (
            Value::Null,
            Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "a request is a JSON object",
            )),
        );
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    match obj.remove("v") {
        Some(Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION) => {}
        Some(other) => {
            let message = format!(
                "protocol version {other} is not supported; this dataplane speaks v{PROTOCOL_VERSION}"
            );
            return (
                id,
                Err(ErrorReply::new(ErrorCode::UnsupportedVersion, message)),
            );
        }
        None => {
            let message = "missing protocol version \"v\"";
            return (id, Err(ErrorReply::new(ErrorCode::BadRequest, message)));
        }
    }
    let request = serde_json::from_value(Value::Object(obj))
        .map_err(|e| ErrorReply::new(ErrorCode::BadRequest, e.to_string()));
    (id, request)
}

/// The line (without its newline) answering the request `id`.
pub fn encode_reply<T: Serialize>(id: &Value, answer: &Result<T, ErrorReply>) -> String {
    let body = match answer {
        Ok(result) => {
            json!({"v": PROTOCOL_VERSION, "id": id, "ok": true, "result": to_value(result)})
        }
        Err(e) => json!({"v": PROTOCOL_VERSION, "id": id, "ok": false, "error": to_value(e)}),
    };
    body.to_string()
}

/// Reads a reply line: the result as `T`, or the dataplane's refusal.
pub fn decode_reply<T: DeserializeOwned>(line: &str) -> Result<Result<T, ErrorReply>, DecodeError> {
    let mut answer: Value = serde_json::from_str(line)?;
    match &answer["v"] {
        Value::Number(n) if n.as_u64() == Some(PROTOCOL_VERSION) => {}
        other => return Err(DecodeError::Version(other.clone())),
    }
    match answer["ok"] {
        Value::Bool(true) => serde_json::from_value(answer["result"].take())
            .map(Ok)
            .map_err(DecodeError::Result),
        Value::Bool(false) => serde_json::from_value(answer["error"].take())
            .map(Err)
            .map_err(|_| DecodeError::Shape(line.trim_end().to_string())),
        _ => Err(DecodeError::Shape(line.trim_end().to_string())),
    }
}

/// Every protocol type serialises to a JSON value: its fields are plain data with string keys.
fn to_value(message: &impl Serialize) -> Value {
    serde_json::to_value(message).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    #[test]
    fn malformed_requests_get_precise_errors() {
        let cases = [
            ("{not json", ErrorCode::BadJson),
            ("[1,2]", ErrorCode::BadRequest),
            (r#"{"op":"status"}"#, ErrorCode::BadRequest),
            (r#"{"v":2,"op":"status"}"#, ErrorCode::UnsupportedVersion),
            (r#"{"v":"1","op":"status"}"#, ErrorCode::UnsupportedVersion),
            (r#"{"v":1,"op":"reboot"}"#, ErrorCode::BadRequest),
            (
                r#"{"v":1,"op":"flows","filter":{"prot":6}}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"v":1,"op":"flows","filter":{"addr":"10.0.0.300"}}"#,
                ErrorCode::BadRequest,
            ),
            (r#"{"v":1,"op":"status","extra":1}"#, ErrorCode::BadRequest),
            (
                r#"{"v":1,"op":"status","op":"counters"}"#,
                ErrorCode::BadRequest,
            ),
        ];
        for (line, code) in cases {
            let (_, r) = decode_request(line);
            assert_eq!(r.unwrap_err().code, code, "{line}");
        }
    }

    #[test]
    fn a_policy_that_repeats_a_key_is_refused_with_its_path() {
        let (_, r) = decode_request(
            r#"{"v":1,"op":"load_policy","policy":{"format":"bulkhead.policy/v1","rules":[{"action":"deny","action":"allow"}]}}"#,
        );
        let e = r.unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(
            e.message.starts_with("policy.rules[0]: key \"action\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn requests_keep_their_id_and_defaults() {
        let (id, r) = decode_request(r#"{"v":1,"id":"a","op":"status"}"#);
        assert_eq!((id, r), (json!("a"), Ok(Request::Status {})));
        let (id, r) = decode_request(r#"{"v":1,"op":"load_policy","policy":{"format":"x"}}"#);
        assert_eq!(id, Value::Null);
        assert!(matches!(r, Ok(Request::LoadPolicy { version: None, .. })));
    }

    #[test]
    fn replies_from_other_versions_and_shapes_are_errors() {
        let unknown_code = r#"{"v":1,"id":null,"ok":false,"error":{"code":"new_thing","message":"m","details":[]}}"#;
        assert_eq!(
            decode_reply::<Status>(unknown_code)
                .unwrap()
                .unwrap_err()
                .code,
            ErrorCode::Other
        );
        assert!(matches!(
            decode_reply::<Status>(r#"{"v":2,"ok":true,"result":{}}"#),
            Err(DecodeError::Version(_))
        ));
        assert!(matches!(
            decode_reply::<Status>(r#"{"v":1,"ok":true,"result":{"x":1}}"#),
            Err(DecodeError::Result(_))
        ));
        assert!(matches!(
            decode_reply::<Status>(r#"{"v":1}"#),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            decode_reply::<Status>("not json"),
            Err(DecodeError::Json(_))
        ));
    }
}
