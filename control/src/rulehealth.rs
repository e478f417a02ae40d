//! `GET /api/v1/rules/health`: per rule of the active policy (or of the draft), its counters and last hit from
//! the metrics poller's last reading, whether it is stale (never hit, or not within `stale_after_s`), and
//! whether it is shadowed (it can never be the first match: [`policy::Policy::shadowed_rules`], conservative).
//!
//! Counters are looked up by rule id, so a rule that the dataplane does not run (a draft-only rule, or one
//! committed after the last reading) has zeros and no last hit. When the dataplane cannot be read, counters,
//! last hits and staleness are `null`; shadowing, which depends only on the policy, is still given.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use policy::{Policy, ShadowReason};
use serde_json::{json, Value};

use crate::metrics::Reading;
use protocol::RuleCounters;

pub const DEFAULT_STALE_AFTER_S: u64 = 86_400;

/// Which policy to report on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Active,
    Draft,
}

/// What `rules/health` is asked (`?policy=active|draft&stale_after_s=N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesHealthQuery {
    pub which: Which,
    /// A rule not hit for longer than this (or never) is stale; at least 1.
    pub stale_after_s: u64,
}

impl Default for RulesHealthQuery {
    fn default() -> Self {
        RulesHealthQuery {
            which: Which::Active,
            stale_after_s: DEFAULT_STALE_AFTER_S,
        }
    }
}

/// The counters of the last good reading (rule id → counters), and when it was taken; `None` when the dataplane
/// cannot be read now.
pub(crate) fn rule_counters(r: &Reading) -> Option<(SystemTime, HashMap<u32, RuleCounters>)> {
    if !r.up {
        return None;
    }
    let report = r.report.as_ref()?;
    let (at, _) = r.read_at?;
    Some((
        at,
        report
            .rules
            .iter()
            .map(|s| (s.rule_id, s.clone()))
            .collect(),
    ))
}

/// What identifies a policy's content: an active version is immutable, and every draft write changes the
/// revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKey {
    Active(u64),
    Draft(u64),
}

/// The shadowing of the last policy asked about. Finding it compiles the policy, which takes long for a large
/// one, and the console asks again every few seconds about the same version.
#[derive(Default)]
pub struct ShadowCache(Mutex<Option<(CacheKey, Arc<Shadowing>)>>);

/// Rule id → `{"reason", "by"}` for the shadowed rules.
pub type Shadowing = HashMap<u32, Value>;

impl ShadowCache {
    /// The shadowing of `policy` (identified by `key`), computed at most once per key in a row.
    pub fn get(&self, key: CacheKey, policy: &Policy) -> Arc<Shadowing> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, s)) = slot.as_ref() {
            if *k == key {
                return s.clone();
            }
        }
        let s = Arc::new(shadowing(policy));
        *slot = Some((key, s.clone()));
        s
    }
}

/// Rules of `policy` that can never be the first match, and why.
pub fn shadowing(policy: &Policy) -> Shadowing {
    policy
        .shadowed_rules()
        .into_iter()
        .map(|s| {
            let v = match s.reason {
                ShadowReason::CoveredBy(ids) => json!({"reason": "covered_by", "by": ids}),
                ShadowReason::MatchesNothing => json!({"reason": "matches_nothing", "by": []}),
            };
            (s.id, v)
        })
        .collect()
}

/// The answer for `policy` (`None`: there is no active policy yet) with its `shadowed` rules.
pub(crate) fn report(
    q: &RulesHealthQuery,
    version: Option<u64>,
    policy: Option<(&Policy, &Shadowing)>,
    counters: Option<&(SystemTime, HashMap<u32, RuleCounters>)>,
    now: SystemTime,
) -> Value {
    let which = match q.which {
        Which::Active => "active",
        Which::Draft => "draft",
    };
    let stale_after = Duration::from_secs(q.stale_after_s);
    let counted = |id: u32| -> Value {
        let Some((_, by_id)) = counters else {
            return json!({"packets": null, "bytes": null, "flows": null, "last_hit": null, "stale": null});
        };
        let s = by_id.get(&id).cloned().unwrap_or_default();
        let last = s
            .last_hit
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok());
        // Never hit, or the last hit is older than the window (a hit "in the future" of this clock is recent).
        let stale = last.is_none_or(|t| now.duration_since(t).is_ok_and(|ago| ago > stale_after));
        json!({"packets": s.packets, "bytes": s.bytes, "flows": s.flows, "last_hit": s.last_hit, "stale": stale})
    };
    let read_at = counters.map(|(at, _)| crate::time::rfc3339(*at));
    let Some((policy, shadowed)) = policy else {
        return json!({"policy": which, "version": version, "stale_after_s": q.stale_after_s,
                      "read_at": read_at, "rules": [], "default": null});
    };
    let rules: Vec<Value> = policy
        .rules()
        .iter()
        .enumerate()
        .map(|(position, rule)| {
            let mut v = json!({
                "position": position,
                "id": rule.id,
                "name": rule.name,
                "description": rule.description,
                "action": rule.action,
                "mode": rule.mode,
                "shadowed": shadowed.get(&rule.id),
            });
            merge(&mut v, counted(rule.id));
            v
        })
        .collect();
    let mut default = json!({"action": policy.settings().default_action});
    merge(&mut default, counted(0));
    default.as_object_mut().map(|o| o.remove("stale"));
    json!({
        "policy": which,
        "version": version,
        "stale_after_s": q.stale_after_s,
        "read_at": read_at,
        "rules": rules,
        "default": default,
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_value(json!({
            "format": "bulkhead.policy/v1",
            "segments": [
                {"name": "a", "prefixes": ["10.0.0.0/24"]},
                {"name": "b", "prefixes": ["10.0.1.0/24"]},
                {"name": "v6", "prefixes": ["fd00::/64"]}
            ],
            "rules": [
                {"id": 1, "name": "a-b", "from": {"segment": "a"}, "to": {"segment": "b"}, "service": "any",
                 "action": "allow", "description": "everything from a to b"},
                {"id": 2, "name": "a-b-again", "from": {"segment": "a"}, "to": {"segment": "b"}, "service": "any",
                 "action": "deny"},
                {"id": 3, "name": "a-v6", "from": {"segment": "a"}, "to": {"segment": "v6"}, "service": "any",
                 "action": "allow", "mode": "monitor"}
            ]
        }))
        .unwrap()
    }

    fn stats(id: u32, packets: u64, last_hit: Option<&str>) -> (u32, RuleCounters) {
        (
            id,
            RuleCounters {
                rule_id: id,
                packets,
                bytes: packets * 100,
                flows: 1,
                last_hit: last_hit.map(String::from),
                ..Default::default()
            },
        )
    }

    #[test]
    fn counters_staleness_and_shadowing() {
        let now = humantime::parse_rfc3339("2026-11-21T12:00:00Z").unwrap();
        let counters = (
            now,
            HashMap::from([
                stats(0, 7, Some("2026-11-21T11:59:00.000Z")),
                stats(1, 5, Some("2026-11-21T11:00:00.000Z")),
            ]),
        );
        let q = RulesHealthQuery {
            which: Which::Active,
            stale_after_s: 1800,
        };
        let p = policy();
        let sh = shadowing(&p);
        let v = report(&q, Some(4), Some((&p, &sh)), Some(&counters), now);
        assert_eq!(v["version"], 4);
        assert_eq!(v["read_at"], "2026-11-21T12:00:00.000Z");
        let r = &v["rules"];
        assert_eq!(r[0]["packets"], 5);
        assert_eq!(r[0]["description"], "everything from a to b");
        assert_eq!(r[0]["stale"], true, "last hit an hour ago, window 30 min");
        assert_eq!(r[0]["shadowed"], Value::Null);
        assert_eq!(r[1]["shadowed"], json!({"reason": "covered_by", "by": [1]}));
        assert_eq!(r[1]["packets"], 0, "not in the reading: zeros");
        assert_eq!(r[1]["last_hit"], Value::Null);
        assert_eq!(r[1]["stale"], true);
        assert_eq!(
            r[2]["shadowed"],
            json!({"reason": "matches_nothing", "by": []})
        );
        assert_eq!(
            (r[2]["position"].clone(), r[2]["mode"].clone()),
            (json!(2), json!("monitor"))
        );
        assert_eq!(
            v["default"],
            json!({"action": "deny", "packets": 7, "bytes": 700, "flows": 1,
                   "last_hit": "2026-11-21T11:59:00.000Z"})
        );
        let q = RulesHealthQuery {
            which: Which::Active,
            stale_after_s: 7200,
        };
        let v = report(&q, Some(4), Some((&p, &sh)), Some(&counters), now);
        assert_eq!(v["rules"][0]["stale"], false, "within two hours");
    }

    #[test]
    fn without_a_reading_shadowing_is_still_given() {
        let q = RulesHealthQuery {
            which: Which::Draft,
            stale_after_s: 60,
        };
        let p = policy();
        let v = report(
            &q,
            None,
            Some((&p, &shadowing(&p))),
            None,
            SystemTime::now(),
        );
        assert_eq!(v["policy"], "draft");
        assert_eq!(v["read_at"], Value::Null);
        let r = &v["rules"][1];
        assert_eq!(r["packets"], Value::Null);
        assert_eq!(r["stale"], Value::Null);
        assert_eq!(r["shadowed"]["reason"], "covered_by");
        assert_eq!(v["default"]["packets"], Value::Null);
    }

    #[test]
    fn the_cache_answers_per_key() {
        let cache = ShadowCache::default();
        let p = policy();
        let a = cache.get(CacheKey::Active(1), &p);
        assert!(
            Arc::ptr_eq(&a, &cache.get(CacheKey::Active(1), &p)),
            "computed once"
        );
        let open = Policy::from_value(json!({"format": "bulkhead.policy/v1"})).unwrap();
        let d = cache.get(CacheKey::Draft(1), &open);
        assert!(d.is_empty(), "another key: computed for that policy");
        assert_eq!(cache.get(CacheKey::Active(1), &p).len(), 2);
    }
}
