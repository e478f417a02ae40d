//! Differences between two policy documents, object by object: segments and services by name, rules by id
//! (plus whether the rule order changed, since order decides which rule matches first), settings as a whole.
//! When either side is tiered (`bulkhead.policy/v2`; a v1 side is read as its one tier), every rule says its
//! tier (a rule moved to another tier is changed), tiers are compared by name (description, default) and
//! their order, and a change of format is one change.

use policy::{Document, Format};
use serde::Serialize;
use serde_json::{json, Value};

fn by_key<T: Serialize>(key: impl Fn(&T) -> String, a: &[T], b: &[T]) -> Value {
    let ka: Vec<String> = a.iter().map(&key).collect();
    let kb: Vec<String> = b.iter().map(&key).collect();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    for (k, x) in ka.iter().zip(a) {
        match kb.iter().position(|o| o == k) {
            None => removed.push(json!(x)),
            Some(j) => {
                let (before, after) = (json!(x), json!(b[j]));
                if before != after {
                    changed.push(json!({"key": k, "before": before, "after": after}));
                }
            }
        }
    }
    for (k, y) in kb.iter().zip(b) {
        if !ka.contains(k) {
            added.push(json!(y));
        }
    }
    json!({"added": added, "removed": removed, "changed": changed})
}

/// What changes going from `a` to `b`.
pub fn diff(a: &Document, b: &Document) -> Value {
    let segments = by_key(
        |s: &policy::Segment| s.name.clone(),
        &a.segments,
        &b.segments,
    );
    let services = by_key(
        |s: &policy::Service| s.name.clone(),
        &a.services,
        &b.services,
    );
    let formats = (a.format, b.format);
    let tiered = a.format == Format::V2 || b.format == Format::V2;
    let (a, b) = if tiered {
        (&a.to_v2(), &b.to_v2())
    } else {
        (a, b)
    };
    // Every rule in evaluation order, with its tier when tiered.
    let rules_of = |d: &Document| -> Vec<(u32, Value)> {
        if !tiered {
            return d.rules.iter().map(|r| (r.id, json!(r))).collect();
        }
        d.tiers
            .iter()
            .flat_map(|t| {
                t.rules.iter().map(|r| {
                    let mut v = json!(r);
                    v["tier"] = json!(t.name);
                    (r.id, v)
                })
            })
            .collect()
    };
    let (ra, rb) = (rules_of(a), rules_of(b));
    let mut rules = by_key(|(id, _): &(u32, Value)| id.to_string(), &ra, &rb);
    for list in ["added", "removed"] {
        if let Some(items) = rules[list].as_array_mut() {
            for item in items {
                *item = item[1].take();
            }
        }
    }
    if let Some(items) = rules["changed"].as_array_mut() {
        for item in items {
            item["before"] = item["before"][1].take();
            item["after"] = item["after"][1].take();
        }
    }
    // Order of the rules both sides have: a move changes which rule matches first.
    let common = |x: &[(u32, Value)], y: &[(u32, Value)]| -> Vec<u32> {
        x.iter()
            .map(|(id, _)| *id)
            .filter(|id| y.iter().any(|(o, _)| o == id))
            .collect()
    };
    rules["order_changed"] = json!(common(&ra, &rb) != common(&rb, &ra));
    let settings = if a.settings == b.settings {
        Value::Null
    } else {
        json!({"before": a.settings, "after": b.settings})
    };
    let count = |v: &Value| {
        ["added", "removed", "changed"]
            .iter()
            .map(|k| v[k].as_array().map_or(0, Vec::len))
            .sum::<usize>()
    };
    let mut changes = count(&segments)
        + count(&services)
        + count(&rules)
        + usize::from(rules["order_changed"] == true)
        + usize::from(!settings.is_null());
    let mut out = json!({
        "segments": segments,
        "services": services,
        "rules": rules,
        "settings": settings,
    });
    if tiered {
        let summary = |d: &Document| -> Vec<Value> {
            d.tiers
                .iter()
                .map(
                    |t| json!({"name": t.name, "description": t.description, "default": t.default}),
                )
                .collect()
        };
        let (ta, tb) = (summary(a), summary(b));
        let mut tiers = by_key(|t: &Value| t["name"].to_string(), &ta, &tb);
        let names = |x: &[Value], y: &[Value]| -> Vec<Value> {
            x.iter()
                .map(|t| t["name"].clone())
                .filter(|n| y.iter().any(|o| &o["name"] == n))
                .collect()
        };
        tiers["order_changed"] = json!(names(&ta, &tb) != names(&tb, &ta));
        changes += count(&tiers) + usize::from(tiers["order_changed"] == true);
        out["tiers"] = tiers;
    }
    if formats.0 != formats.1 {
        changes += 1;
        out["format"] = json!({"before": formats.0, "after": formats.1});
    }
    out["identical"] = json!(changes == 0);
    out["changes"] = json!(changes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_removed_changed_moved() {
        let a: Document = serde_json::from_value(json!({
            "format": "bulkhead.policy/v1",
            "segments": [{"name": "x", "prefixes": ["10.0.0.0/8"]}, {"name": "y", "prefixes": ["10.1.0.0/16"]}],
            "rules": [
                {"id": 1, "name": "a", "from": "any", "to": "any", "service": "any", "action": "allow"},
                {"id": 2, "name": "b", "from": "any", "to": "any", "service": "any", "action": "deny"}
            ]
        }))
        .unwrap();
        let mut b = a.clone();
        b.segments.remove(1);
        b.segments[0].prefixes = vec!["10.0.0.0/9".parse().unwrap()];
        b.rules.swap(0, 1);
        b.settings.pass_arp = false;
        let d = diff(&a, &b);
        assert_eq!(d["segments"]["removed"][0]["name"], "y");
        assert_eq!(d["segments"]["changed"][0]["key"], "x");
        assert_eq!(d["rules"]["order_changed"], true);
        assert_eq!(d["settings"]["after"]["pass_arp"], false);
        assert_eq!(d["changes"], 4);
        assert_eq!(diff(&a, &a)["identical"], true);
    }

    #[test]
    fn tiers_rules_moved_between_tiers_and_migration() {
        let v1: Document = serde_json::from_value(json!({
            "format": "bulkhead.policy/v1",
            "rules": [
                {"id": 1, "name": "a", "from": "any", "to": "any", "service": "any", "action": "allow"},
                {"id": 2, "name": "b", "from": "any", "to": "any", "service": "any", "action": "deny"}
            ]
        }))
        .unwrap();
        let v2 = v1.to_v2();
        let d = diff(&v1, &v2);
        assert_eq!(d["format"]["after"], "bulkhead.policy/v2");
        assert_eq!(d["changes"], 1, "{d:#}");
        assert_eq!(d["rules"]["changed"], json!([]));

        let mut b = v2.clone();
        let moved = b.tiers[0].rules.remove(1);
        b.tiers.insert(
            0,
            policy::Tier {
                name: "global".into(),
                description: None,
                rules: vec![moved],
                default: policy::TierDefault::Deny,
            },
        );
        let d = diff(&v2, &b);
        assert_eq!(d["tiers"]["added"][0]["name"], "global");
        assert_eq!(d["tiers"]["added"][0]["default"], "deny");
        assert_eq!(d["rules"]["changed"][0]["key"], "2");
        assert_eq!(d["rules"]["changed"][0]["before"]["tier"], "main");
        assert_eq!(d["rules"]["changed"][0]["after"]["tier"], "global");
        assert_eq!(d["rules"]["order_changed"], true);
        assert_eq!(d["changes"], 3, "{d:#}");
    }
}
