//! Tokens scoped to tiers: an application team's token edits its tier, the security team's owns `global`. A
//! draft write by a scoped token is checked by what it changes — the draft before and after, both read as
//! tiers (a v1 document is its one tier `main`) — so every route that writes the draft is covered alike.
//!
//! A scoped token may change, in the tiers it is granted, anything: rules, their order, the tier's
//! description and default, adding or removing such a tier. Everything else is someone else's: other tiers,
//! the order of tiers, and the document-wide segments, services, settings and format.

use policy::{Document, Tier};

/// What a scoped edit changed outside its scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeViolation {
    /// A tier the token is not granted (added, removed or changed).
    #[error("this token may edit only the tiers {granted}; the edit changes tier {tier:?}")]
    Tier { tier: String, granted: String },
    /// A document-wide part: `segments`, `services`, `settings`, `format` or `tier order`.
    #[error("this token may edit only the tiers {granted}; the edit changes the document's {part}, which only a token without tiers may change")]
    Document { part: &'static str, granted: String },
}

impl ScopeViolation {
    /// The tier or part concerned (the 403's detail).
    pub fn part(&self) -> &str {
        match self {
            ScopeViolation::Tier { tier, .. } => tier,
            ScopeViolation::Document { part, .. } => part,
        }
    }
}

/// Whether going from `before` to `after` stays within `granted` tiers.
pub fn check(
    before: &Document,
    after: &Document,
    granted: &[String],
) -> Result<(), ScopeViolation> {
    let names = || granted.join(", ");
    let document = |part| ScopeViolation::Document {
        part,
        granted: names(),
    };
    if before.format != after.format {
        return Err(document("format"));
    }
    if before.segments != after.segments {
        return Err(document("segments"));
    }
    if before.services != after.services {
        return Err(document("services"));
    }
    if before.settings != after.settings {
        return Err(document("settings"));
    }
    let (before, after) = (before.to_v2(), after.to_v2());
    let find = |d: &Document, name: &str| -> Option<Tier> {
        d.tiers.iter().find(|t| t.name == name).cloned()
    };
    for tier in before.tiers.iter().chain(&after.tiers) {
        if granted.contains(&tier.name) {
            continue;
        }
        if find(&before, &tier.name) != find(&after, &tier.name) {
            return Err(ScopeViolation::Tier {
                tier: tier.name.clone(),
                granted: names(),
            });
        }
    }
    // The tiers both sides have, in order: moving a tier changes what it may override.
    let order = |x: &Document, y: &Document| -> Vec<String> {
        x.tiers
            .iter()
            .map(|t| t.name.clone())
            .filter(|n| y.tiers.iter().any(|t| &t.name == n))
            .collect()
    };
    if order(&before, &after) != order(&after, &before) {
        return Err(document("tier order"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Document {
        serde_json::from_value(json!({
            "format": "bulkhead.policy/v2",
            "segments": [{"name": "a", "prefixes": ["10.0.0.0/8"]}],
            "tiers": [
                {"name": "global", "rules": [
                    {"id": 1, "name": "g", "from": "any", "to": "any", "service": "any", "action": "pass"}]},
                {"name": "apps", "rules": [
                    {"id": 2, "name": "x", "from": "any", "to": "any", "service": "any", "action": "allow"}]},
            ]
        }))
        .unwrap()
    }

    #[test]
    fn a_scoped_edit_stays_in_its_tiers() {
        let apps = ["apps".to_string()];
        let before = doc();
        let mut after = before.clone();
        after.tiers[1].rules[0].action = policy::Action::Deny;
        after.tiers[1].default = policy::TierDefault::Deny;
        assert_eq!(check(&before, &after, &apps), Ok(()));

        let mut after = before.clone();
        after.tiers[0].rules.clear();
        let e = check(&before, &after, &apps).unwrap_err();
        assert_eq!(e.part(), "global");
        assert_eq!(
            e.to_string(),
            "this token may edit only the tiers apps; the edit changes tier \"global\""
        );

        // A rule moved from the granted tier into another is a change of the other.
        let mut after = before.clone();
        let r = after.tiers[1].rules.remove(0);
        after.tiers[0].rules.push(r);
        assert_eq!(check(&before, &after, &apps).unwrap_err().part(), "global");

        let mut after = before.clone();
        after.segments.clear();
        assert_eq!(
            check(&before, &after, &apps).unwrap_err().part(),
            "segments"
        );

        let mut after = before.clone();
        after.tiers.swap(0, 1);
        let both = ["apps".to_string(), "global".to_string()];
        assert_eq!(
            check(&before, &after, &both).unwrap_err().part(),
            "tier order"
        );

        // A new tier of one's own is fine; one of another's is not.
        let mut after = before.clone();
        after.tiers.push(Tier {
            name: "apps".into(),
            ..before.tiers[1].clone()
        });
        after.tiers[2].name = "hosts".into();
        assert_eq!(check(&before, &after, &apps).unwrap_err().part(), "hosts");
        let hosts = ["hosts".to_string()];
        assert_eq!(check(&before, &after, &hosts), Ok(()));
    }

    #[test]
    fn a_v1_document_is_the_tier_main() {
        let before: Document =
            serde_json::from_value(json!({"format": "bulkhead.policy/v1", "rules": []})).unwrap();
        let mut after = before.clone();
        after.rules = doc().tiers[1].rules.clone();
        assert_eq!(check(&before, &after, &["main".to_string()]), Ok(()));
        assert_eq!(
            check(&before, &after, &["apps".to_string()])
                .unwrap_err()
                .part(),
            "main"
        );
        assert_eq!(
            check(&before, &after.to_v2(), &["main".to_string()])
                .unwrap_err()
                .part(),
            "format"
        );
    }
}
