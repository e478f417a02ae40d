//! JSON text to a `serde_json::Value` that refuses repeated keys.
//!
//! serde_json keeps the last of a repeated key, so `{"action": "deny", "action": "allow"}` would be stored as allow
//! while a reviewer reads deny. Every place that reads a policy document (or a request carrying one) as a tree goes
//! through [`parse_value`]. No maintained crate offers this for `Value` (serde_json has no option for it), hence this
//! small visitor.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{syntax_error, PolicyError, ValidationError, ROOT};

/// Parses `text` as JSON, failing on a repeated key with the path of the object that repeats it.
pub fn parse_value(text: &[u8]) -> Result<Value, PolicyError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let mut repeated = None;
    let value = Node {
        path: &mut Vec::new(),
        repeated: &mut repeated,
    }
    .deserialize(&mut de);
    let value = match (value, repeated) {
        (_, Some(e)) => return Err(PolicyError::Invalid(vec![e])),
        (Err(e), None) => return Err(syntax_error(&e)),
        (Ok(v), None) => v,
    };
    de.end().map_err(|e| syntax_error(&e))?;
    Ok(value)
}

enum Step {
    Key(String),
    Index(usize),
}

/// Renders a path the way validation errors do: `rules[3].from`.
fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        out.push_str(ROOT);
    }
    out
}

/// One value at `path`; the first repeated key found is put in `repeated` (serde's error type carries only a
/// message, and the caller wants the path separately).
struct Node<'a> {
    path: &'a mut Vec<Step>,
    repeated: &'a mut Option<ValidationError>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.path.push(Step::Index(items.len()));
            let item = seq.next_element_seed(Node {
                path: self.path,
                repeated: self.repeated,
            });
            self.path.pop();
            match item? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                *self.repeated = Some(ValidationError::new(
                    render(self.path),
                    format!("key {key:?} appears more than once; write it once"),
                ));
                return Err(de::Error::custom("repeated key"));
            }
            self.path.push(Step::Key(key.clone()));
            let value = map.next_value_seed(Node {
                path: self.path,
                repeated: self.repeated,
            });
            self.path.pop();
            object.insert(key, value?);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repeated(text: &str) -> ValidationError {
        match parse_value(text.as_bytes()) {
            Err(PolicyError::Invalid(mut e)) => e.remove(0),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn values_read_as_serde_json_reads_them() {
        let text = r#"{"a": [1, -2, 3.5, "x", null, true, {"b": {}}], "c": {"d": []}}"#;
        let strict = parse_value(text.as_bytes()).unwrap();
        let plain: Value = serde_json::from_str(text).unwrap();
        assert_eq!(strict, plain);
    }

    #[test]
    fn a_repeated_key_is_refused_with_its_path() {
        let e = repeated(r#"{"rules": [{"id": 1}, {"action": "deny", "action": "allow"}]}"#);
        assert_eq!(e.path, "rules[1]");
        assert!(e.message.contains("\"action\""), "{}", e.message);
        assert_eq!(repeated(r#"{"a": 1, "a": 1}"#).path, ROOT);
        assert_eq!(
            repeated(r#"{"settings": {"timeouts": {"udp": 1, "udp": 2}}}"#).path,
            "settings.timeouts"
        );
    }

    #[test]
    fn syntax_errors_keep_line_and_column() {
        for text in ["{\"a\": ", "{\"a\": 1} x", "[1,]", ""] {
            assert!(
                matches!(
                    parse_value(text.as_bytes()),
                    Err(PolicyError::Syntax { .. })
                ),
                "{text:?}"
            );
        }
    }
}
