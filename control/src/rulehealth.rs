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
    /// The gateway whose counters are read (default: the first configured), or an HA pair (its members' summed).
    pub gateway: Option<String>,
}

impl Default for RulesHealthQuery {
    fn default() -> Self {
        RulesHealthQuery {
            which: Which::Active,
            stale_after_s: DEFAULT_STALE_AFTER_S,
            gateway: None,
        }
    }
}

/// The rule counters of the last good reading, counting across the gateway's restarts ([`RuleTotals`]), and
/// when it was taken; `None` when the dataplane cannot be read now.
pub(crate) fn rule_counters(r: &Reading) -> Option<(SystemTime, HashMap<u32, RuleCounters>)> {
    r.up.then(|| counted(r))?
}

/// What a gateway has counted, as of its last good reading (whether or not it can be read now).
fn counted(r: &Reading) -> Option<(SystemTime, HashMap<u32, RuleCounters>)> {
    r.report.as_ref()?;
    let (at, _) = r.read_at?;
    Some((at, r.rule_totals.totals()))
}

/// An HA pair's rule counters from its members' readings ([`pair_counters`]); `None` while no member can be
/// read. A member that cannot be read now (restarting, say) counts with what it had counted: its hits are not
/// lost from the pair's sum while it is away.
pub(crate) fn pair_rule_counters(
    members: &[(&str, &Reading)],
) -> Option<(SystemTime, HashMap<u32, RuleCounters>)> {
    if !members.iter().any(|(_, r)| r.up) {
        return None;
    }
    pair_counters(members.iter().filter_map(|(_, r)| counted(r)))
}

/// One gateway's rule counters across its restarts. A dataplane counts from zero when it starts, so the counts
/// of its earlier processes are kept here: when a rule's counters go backwards (the dataplane restarted, or the
/// rule's slot was freed), or the rule leaves the report, its last reading is added to what earlier processes
/// counted. A failover restarts nothing, a restarted member loses no counted hit, and the sum of a pair's members
/// keeps counting up. Kept in control's memory: since control's own start.
#[derive(Debug, Default)]
pub(crate) struct RuleTotals {
    earlier: HashMap<u32, RuleCounters>,
    current: HashMap<u32, RuleCounters>,
}

impl RuleTotals {
    /// Takes a new reading of `rules`; `restarted`: the dataplane's counters went backwards since the last one.
    pub(crate) fn update(&mut self, rules: &[RuleCounters], restarted: bool) {
        let new: HashMap<u32, RuleCounters> =
            rules.iter().map(|r| (r.rule_id, r.clone())).collect();
        for (id, old) in self.current.drain() {
            let reset = restarted
                || new.get(&id).is_none_or(|n| {
                    n.packets < old.packets || n.bytes < old.bytes || n.flows < old.flows
                });
            if reset {
                add(&mut self.earlier, &old);
            }
        }
        self.current = new;
    }

    /// Every rule's counts: earlier processes' plus the current one's.
    pub(crate) fn totals(&self) -> HashMap<u32, RuleCounters> {
        let mut sum = self.earlier.clone();
        for c in self.current.values() {
            add(&mut sum, c);
        }
        sum
    }
}

/// Adds `b` to its rule's entry of `sum`; the last hit is the later one.
fn add(sum: &mut HashMap<u32, RuleCounters>, b: &RuleCounters) {
    let a = sum.entry(b.rule_id).or_insert_with(|| RuleCounters {
        packets: 0,
        bytes: 0,
        flows: 0,
        last_hit_ms: None,
        last_hit: None,
        ..b.clone()
    });
    a.packets += b.packets;
    a.bytes += b.bytes;
    a.flows += b.flows;
    // RFC 3339 times in the same (UTC) form order as strings.
    if b.last_hit > a.last_hit {
        a.last_hit.clone_from(&b.last_hit);
        a.last_hit_ms = b.last_hit_ms;
    }
}

/// An HA pair's rule counters: the sum of its members' (each counted across its restarts, [`RuleTotals`]; a
/// failover moves the traffic, not the counts). Read at the later of the readings; a rule's last hit is the
/// later of its members'. `None` when no member was read.
pub(crate) fn pair_counters(
    members: impl IntoIterator<Item = (SystemTime, HashMap<u32, RuleCounters>)>,
) -> Option<(SystemTime, HashMap<u32, RuleCounters>)> {
    members
        .into_iter()
        .reduce(|(at_a, mut sum), (at_b, other)| {
            for b in other.values() {
                add(&mut sum, b);
            }
            (at_a.max(at_b), sum)
        })
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
                ShadowReason::BehindTierDefault { tier, rules } => {
                    json!({"reason": "behind_tier_default", "tier_default": tier, "by": rules})
                }
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
                "tier": policy.tier_name_of(position),
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
mod tests;
