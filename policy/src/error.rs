//! Errors for people who write policies by hand: every one says where (a JSON path or a line and column) and
//! what to do about it.

use std::fmt;

use serde_json::Value;

use crate::model::{Document, FORMAT_V1, FORMAT_V2};

/// One problem with a document, located by its JSON path (e.g. `rules[3].from.segment`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not JSON.
    #[error("line {line}, column {col}: {msg}")]
    Syntax {
        line: usize,
        col: usize,
        msg: String,
    },
    /// The JSON is not a valid policy: every problem found (type errors stop at the first one; semantic
    /// checks report them all).
    #[error("{}", InvalidList(.0))]
    Invalid(Vec<ValidationError>),
}

struct InvalidList<'a>(&'a [ValidationError]);

impl fmt::Display for InvalidList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "invalid policy: {one}"),
            all => {
                write!(f, "invalid policy ({} errors):", all.len())?;
                for e in all {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

/// The path serde_path_to_error gives the document root.
pub(crate) const ROOT: &str = "(document)";

/// serde_json appends the position to every message; the path already locates a type error, and a syntax error
/// carries line and column separately.
fn message_without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(msg) if e.line() != 0 => msg.to_string(),
        _ => text,
    }
}

pub(crate) fn syntax_error(e: &serde_json::Error) -> PolicyError {
    PolicyError::Syntax {
        line: e.line(),
        col: e.column(),
        msg: message_without_position(e),
    }
}

pub(crate) fn data_error(e: serde_path_to_error::Error<serde_json::Error>) -> PolicyError {
    if e.inner().is_syntax() || e.inner().is_eof() {
        return syntax_error(e.inner());
    }
    let mut path = e.path().to_string();
    let mut message = message_without_position(e.inner());
    // "missing field `x`" at `rules[2]` reads better as `rules[2].x: required field is missing`.
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        path = if path == "." {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        message = "required field is missing".to_string();
    } else if path == "." {
        path = ROOT.to_string();
    }
    // serde quotes names in backticks; in a JSON document's error they are JSON strings.
    if ["unknown variant", "unknown field", "duplicate field"]
        .iter()
        .any(|p| message.starts_with(p))
    {
        message = message.replace('`', "\"");
    }
    PolicyError::Invalid(vec![ValidationError { path, message }])
}

/// Checks `format` before anything else: a document of another version would otherwise fail on whatever field
/// changed first, which hides the real reason.
pub(crate) fn check_format(value: &Value) -> Result<(), PolicyError> {
    let fail = |path: &str, message: String| {
        Err(PolicyError::Invalid(vec![ValidationError::new(
            path, message,
        )]))
    };
    let Some(object) = value.as_object() else {
        return fail(
            ROOT,
            format!("expected a JSON object with \"format\": \"{FORMAT_V2}\" (or \"{FORMAT_V1}\")"),
        );
    };
    match object.get("format") {
        None => fail(
            "format",
            format!("required field is missing; this version of Bulkhead reads \"{FORMAT_V1}\" and \"{FORMAT_V2}\""),
        ),
        Some(Value::String(s)) if s == FORMAT_V1 || s == FORMAT_V2 => Ok(()),
        Some(other) => fail(
            "format",
            format!("unsupported format {other}; this version of Bulkhead reads \"{FORMAT_V1}\" and \"{FORMAT_V2}\""),
        ),
    }
}

pub(crate) fn document_from_json(text: &str) -> Result<Document, PolicyError> {
    // Parse to a tree first: syntax errors get line/column, and the format is checked before the shape.
    // Repeated keys are refused here, with their path: a tree would keep only the last one.
    let value = crate::json::parse_value(text.as_bytes())?;
    check_format(&value)?;
    // Then deserialize from the text itself (not from the tree), so type errors carry serde's precise path.
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(data_error)
}

pub(crate) fn document_from_value(value: Value) -> Result<Document, PolicyError> {
    check_format(&value)?;
    serde_path_to_error::deserialize(value).map_err(data_error)
}
