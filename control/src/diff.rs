//! Differences between two policy documents, object by object: segments and services by name, rules by id
//! (plus whether the rule order changed, since order decides which rule matches first), settings as a whole.

use policy::Document;
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
    let mut rules = by_key(|r: &policy::Rule| r.id.to_string(), &a.rules, &b.rules);
    // Order of the rules both sides have: a move changes which rule matches first.
    let common_a: Vec<u32> = a
        .rules
        .iter()
        .map(|r| r.id)
        .filter(|id| b.rules.iter().any(|r| r.id == *id))
        .collect();
    let common_b: Vec<u32> = b
        .rules
        .iter()
        .map(|r| r.id)
        .filter(|id| a.rules.iter().any(|r| r.id == *id))
        .collect();
    rules["order_changed"] = json!(common_a != common_b);
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
    let changes = count(&segments)
        + count(&services)
        + count(&rules)
        + usize::from(rules["order_changed"] == true)
        + usize::from(!settings.is_null());
    json!({
        "identical": changes == 0,
        "changes": changes,
        "segments": segments,
        "services": services,
        "rules": rules,
        "settings": settings,
    })
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
}
