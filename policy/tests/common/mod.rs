//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::net::IpAddr;

use policy::{Policy, PolicyError};
use serde_json::Value;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A valid policy from a JSON tree, or a panic that shows why not.
pub fn policy(v: Value) -> Policy {
    match Policy::from_value(v) {
        Ok(p) => p,
        Err(e) => panic!("expected a valid policy: {e}"),
    }
}

/// The `(path, message)` pairs of an invalid document.
pub fn errors(v: Value) -> Vec<(String, String)> {
    match Policy::from_value(v) {
        Err(PolicyError::Invalid(errors)) => {
            errors.into_iter().map(|e| (e.path, e.message)).collect()
        }
        Err(e) => panic!("expected validation errors, got {e:?}"),
        Ok(_) => panic!("expected validation errors, the document is valid"),
    }
}

/// The one error of an invalid document.
pub fn error(v: Value) -> (String, String) {
    let mut all = errors(v);
    assert_eq!(all.len(), 1, "expected exactly one error: {all:#?}");
    all.remove(0)
}

pub fn pair(path: &str, message: &str) -> (String, String) {
    (path.to_string(), message.to_string())
}
