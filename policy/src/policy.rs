//! [`Policy`]: a document that passed validation, plus the lookups evaluation needs.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{document_from_json, document_from_value, PolicyError};
use crate::model::{Document, Rule, Segment, Service, Settings};
use crate::validate::validate;

/// A validated policy. The only way to get one is through validation, so everything downstream (evaluation,
/// compilation) may rely on names resolving, ranges being ordered and so on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    doc: Document,
    segment_by_name: HashMap<String, usize>,
    service_by_name: HashMap<String, usize>,
}

impl Policy {
    /// Validates a document (e.g. one the REST API built) into a policy.
    pub fn new(doc: Document) -> Result<Policy, PolicyError> {
        let errors = validate(&doc);
        if !errors.is_empty() {
            return Err(PolicyError::Invalid(errors));
        }
        let segment_by_name = doc
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let service_by_name = doc
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Ok(Policy {
            doc,
            segment_by_name,
            service_by_name,
        })
    }

    /// Parses and validates a JSON document. Syntax errors carry line and column; type errors the JSON path of
    /// the first offending value; semantic errors all of them, each with its path.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        Policy::new(document_from_json(text)?)
    }

    /// Like [`Policy::from_json`], for a document that is already a JSON tree (e.g. a REST request body).
    pub fn from_value(value: Value) -> Result<Policy, PolicyError> {
        Policy::new(document_from_value(value)?)
    }

    /// The document, pretty-printed; [`Policy::from_json`] reads it back to an equal policy.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.doc).expect("a policy document always serializes")
    }

    pub fn document(&self) -> &Document {
        &self.doc
    }

    pub fn into_document(self) -> Document {
        self.doc
    }

    pub fn segments(&self) -> &[Segment] {
        &self.doc.segments
    }

    pub fn services(&self) -> &[Service] {
        &self.doc.services
    }

    pub fn rules(&self) -> &[Rule] {
        &self.doc.rules
    }

    pub fn settings(&self) -> &Settings {
        &self.doc.settings
    }

    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segment_by_name
            .get(name)
            .map(|&i| &self.doc.segments[i])
    }

    /// The user service of that name; `None` for unknown names and for the built-in `"any"`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.service_by_name
            .get(name)
            .map(|&i| &self.doc.services[i])
    }
}
