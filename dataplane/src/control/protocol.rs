use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const PROTOCOL_VERSION: u64 = 1;

/// What a client can ask.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // Empty struct variants rather than unit variants: serde ignores unknown fields on unit variants of an
    // internally tagged enum, and a typo in a request must be an error.
    /// Process, policy version, workers, uptime.
    Status {},
    /// Every counter: per worker and totals, drops by reason, per rule, per port, flows.
    Counters {},
    /// Validate, compile, persist and publish a policy document. `version` is the control process's version
    /// number for it (the dataplane numbers it itself when absent).
    LoadPolicy { policy: Value, version: Option<u64> },
    /// The active policy document and its version.
    GetPolicy {},
    /// Tracked connections matching `filter`, at most `limit` (default 1000).
    Flows {
        #[serde(default)]
        filter: FlowFilter,
        limit: Option<usize>,
    },
    /// Remove the tracked connections matching `filter` (their next packet is judged as a new flow).
    KillFlows {
        #[serde(default)]
        filter: FlowFilter,
    },
    /// Flow events (new, denied, closed) queued since the last call, at most `max` (default 10000).
    Events { max: Option<usize> },
}

/// Selects connections; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FlowFilter {
    /// Either endpoint's address.
    pub addr: Option<std::net::IpAddr>,
    pub src: Option<std::net::IpAddr>,
    pub dst: Option<std::net::IpAddr>,
    pub port: Option<u16>,
    pub proto: Option<u8>,
    pub rule_id: Option<u32>,
}

impl FlowFilter {
    pub fn matches(&self, f: &crate::conntrack::FlowInfo) -> bool {
        self.addr.is_none_or(|a| a == f.src || a == f.dst)
            && self.src.is_none_or(|a| a == f.src)
            && self.dst.is_none_or(|a| a == f.dst)
            && self.port.is_none_or(|p| p == f.sport || p == f.dport)
            && self.proto.is_none_or(|p| p == f.proto)
            && self.rule_id.is_none_or(|r| r == f.rule_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    UnsupportedVersion,
    BadRequest,
    InvalidPolicy,
    TooLarge,
    Internal,
}

/// An error answer: a code for programs, a message for people, and details (e.g. every validation error).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

/// Parses one request line into its id and request.
pub fn parse(line: &str) -> (Value, Result<Request, ApiError>) {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return (
                Value::Null,
                Err(ApiError::new(ErrorCode::BadJson, format!("not JSON: {e}"))),
            )
        }
    };
    let Value::Object(mut obj) = value else {
        return (
            Value::Null,
            Err(ApiError::new(
                ErrorCode::BadRequest,
                "a request is a JSON object",
            )),
        );
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    match obj.remove("v") {
        Some(Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION) => {}
        Some(other) => {
            return (
                id,
                Err(ApiError::new(
                    ErrorCode::UnsupportedVersion,
                    format!("protocol version {other} is not supported; this dataplane speaks v{PROTOCOL_VERSION}"),
                )),
            )
        }
        None => return (id, Err(ApiError::new(ErrorCode::BadRequest, "missing protocol version \"v\"")))
    }
    let request = serde_json::from_value(Value::Object(obj))
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()));
    (id, request)
}

/// The response line for a request.
pub fn respond(id: Value, result: Result<Value, ApiError>) -> String {
    let body = match result {
        Ok(result) => json!({"v": PROTOCOL_VERSION, "id": id, "ok": true, "result": result}),
        Err(e) => json!({
            "v": PROTOCOL_VERSION, "id": id, "ok": false,
            "error": {"code": e.code, "message": e.message, "details": e.details},
        }),
    };
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let (id, r) = parse(r#"{"v":1,"id":"a","op":"status"}"#);
        assert_eq!(id, json!("a"));
        assert_eq!(r.unwrap(), Request::Status {});
        let (_, r) = parse(r#"{"v":1,"op":"flows","filter":{"port":502},"limit":5}"#);
        assert_eq!(
            r.unwrap(),
            Request::Flows {
                filter: FlowFilter {
                    port: Some(502),
                    ..Default::default()
                },
                limit: Some(5)
            }
        );
        let (_, r) = parse(r#"{"v":1,"op":"load_policy","policy":{"format":"x"}}"#);
        assert!(matches!(
            r.unwrap(),
            Request::LoadPolicy { version: None, .. }
        ));
    }

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
        ];
        for (line, code) in cases {
            let (_, r) = parse(line);
            assert_eq!(r.unwrap_err().code, code, "{line}");
        }
    }

    #[test]
    fn responses_carry_the_id() {
        let ok: Value = serde_json::from_str(&respond(json!(3), Ok(json!({"x": 1})))).unwrap();
        assert_eq!(ok, json!({"v": 1, "id": 3, "ok": true, "result": {"x": 1}}));
        let mut e = ApiError::new(ErrorCode::InvalidPolicy, "2 errors");
        e.details = vec!["rules[0].service: unknown service \"smb\"".into()];
        let err: Value = serde_json::from_str(&respond(Value::Null, Err(e))).unwrap();
        assert_eq!(err["error"]["code"], "invalid_policy");
        assert_eq!(
            err["error"]["details"][0],
            "rules[0].service: unknown service \"smb\""
        );
    }
}
