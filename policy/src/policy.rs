//! [`Policy`]: a document that passed validation, plus the lookups evaluation needs.

use std::collections::HashMap;
use std::ops::Range;

use serde_json::Value;

use crate::error::{document_from_json, document_from_value, PolicyError};
use crate::model::{Document, Format, Rule, Segment, Service, Settings, TierDefault, V1_TIER};
use crate::validate::validate;

/// A validated policy. The only way to get one is through validation, so everything downstream (evaluation,
/// compilation) may rely on names resolving, ranges being ordered and so on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    doc: Document,
    segment_by_name: HashMap<String, usize>,
    service_by_name: HashMap<String, usize>,
    /// A v2 document's rules, tier by tier (a v1 document's are its `rules`).
    tier_rules: Vec<Rule>,
    tiers: Vec<TierView>,
}

/// One tier as evaluation sees it, whatever the document's format: a v1 document is the one tier [`V1_TIER`]
/// with default `pass`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierView {
    pub name: String,
    /// Its rules' indices in [`Policy::rules`] (evaluation order).
    pub rules: Range<usize>,
    pub default: TierDefault,
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
        let (tier_rules, tiers) = match doc.format {
            Format::V1 => (
                Vec::new(),
                vec![TierView {
                    name: V1_TIER.to_string(),
                    rules: 0..doc.rules.len(),
                    default: TierDefault::Pass,
                }],
            ),
            Format::V2 => {
                let mut rules = Vec::new();
                let mut tiers = Vec::with_capacity(doc.tiers.len());
                for t in &doc.tiers {
                    let start = rules.len();
                    rules.extend(t.rules.iter().cloned());
                    tiers.push(TierView {
                        name: t.name.clone(),
                        rules: start..rules.len(),
                        default: t.default,
                    });
                }
                (rules, tiers)
            }
        };
        let policy = Policy {
            doc,
            segment_by_name,
            service_by_name,
            tier_rules,
            tiers,
        };
        let errors = crate::compile::pass_expansion_errors(&policy);
        if !errors.is_empty() {
            return Err(PolicyError::Invalid(errors));
        }
        Ok(policy)
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

    /// Every rule in evaluation order: a v1 document's `rules`, a v2 document's tiers' rules one tier after the
    /// other. A rule's index here is its index everywhere (decisions, compiled rules, counters' metadata).
    pub fn rules(&self) -> &[Rule] {
        match self.doc.format {
            Format::V1 => &self.doc.rules,
            Format::V2 => &self.tier_rules,
        }
    }

    /// The tiers in evaluation order (the v2 view of any document; a v1 document is one tier).
    pub fn tiers(&self) -> &[TierView] {
        &self.tiers
    }

    /// The index of the tier holding the rule at `index` of [`Policy::rules`].
    pub fn tier_of(&self, index: usize) -> usize {
        self.tiers.partition_point(|t| t.rules.end <= index)
    }

    /// The name of the tier holding the rule at `index` of [`Policy::rules`].
    pub fn tier_name_of(&self, index: usize) -> &str {
        self.tiers.get(self.tier_of(index)).map_or("", |t| &t.name)
    }

    /// The same policy as a `bulkhead.policy/v2` document (see [`Document::to_v2`]).
    pub fn to_v2(&self) -> Policy {
        Policy::new(self.doc.to_v2()).expect("migration keeps a valid document valid")
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
