//! `GET /api/v1/traffic/map`: what talks to what, by segment, aggregated from the flow log's events in memory
//! whose `time` falls within the window.
//!
//! Nodes are every segment of the active policy (observed or not) plus [`UNSEGMENTED`] when an address in no
//! segment was seen (and any segment named by an event but absent from the active policy, e.g. removed since).
//! An event with several segments on a side counts for every (src, dst) pair. Counting, so that a flow is
//! never counted twice:
//! * `new`: one flow, `allowed` or `would_deny` by its verdict;
//! * `denied`: one flow in `denied` (deny and reject), and its packets and bytes;
//! * `closed`: only packets and bytes (both directions, the whole flow: its `new` event was counted already).
//!
//! Services (protocol, destination port; port 0 for ICMP and ICMPv6, whose events carry an echo identifier or
//! type/code there) and deciding rules are counted per flow (`new` and `denied`).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use policy::Policy;
use serde_json::{json, Value};

use crate::flowlog::{FlowLog, FlowLogFilter, UNSEGMENTED};
use crate::time;
use protocol::EventKind;

pub const DEFAULT_WINDOW_S: u64 = 900;
pub const MAX_WINDOW_S: u64 = 86_400;
/// Services listed per edge, the busiest first.
const TOP_SERVICES: usize = 10;

/// What the map is asked (`?window_s=N&proto=&port=`).
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficMapQuery {
    /// Only events whose time is within this many seconds before now (1..=[`MAX_WINDOW_S`]).
    pub window_s: u64,
    /// Only `proto` and `port` are ever set.
    pub filter: FlowLogFilter,
}

impl Default for TrafficMapQuery {
    fn default() -> Self {
        TrafficMapQuery {
            window_s: DEFAULT_WINDOW_S,
            filter: FlowLogFilter::default(),
        }
    }
}

#[derive(Default)]
struct Edge {
    allowed: u64,
    denied: u64,
    would_deny: u64,
    packets: u64,
    bytes: u64,
    last_seen: Option<SystemTime>,
    services: HashMap<(u8, u16), u64>,
    rules: HashMap<u32, u64>,
}

/// A side's segments; an address in no segment is [`UNSEGMENTED`].
fn side<'a>(l: &'a Option<Vec<String>>, unsegmented: &'a [String]) -> &'a [String] {
    match l {
        Some(l) if !l.is_empty() => l,
        _ => unsegmented,
    }
}

/// The map of the events `log` holds within `q.window_s` before `now`, with `active`'s segments as nodes.
pub fn map(log: &FlowLog, active: Option<&Policy>, q: &TrafficMapQuery, now: SystemTime) -> Value {
    let from = now
        .checked_sub(Duration::from_secs(q.window_s))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // Keyed by source, then destination: looked up by reference, a key is allocated once per pair.
    let mut edges: HashMap<String, HashMap<String, Edge>> = HashMap::new();
    let mut considered = 0u64;
    let unsegmented = [UNSEGMENTED.to_string()];
    let side = |l| side(l, &unsegmented);
    let (events, full) = log.snapshot();
    let oldest = events.first().and_then(|e| e.key.time);
    for k in events.iter().map(|e| &e.key) {
        // Not bounded above: the dataplane's clock may run a few milliseconds ahead of this one.
        let Some(t) = k.time.filter(|t| *t >= from) else {
            continue;
        };
        let Some(kind) = k.kind else { continue };
        if !q.filter.matches(k) {
            continue;
        }
        considered += 1;
        for s in side(&k.src_segments) {
            if !edges.contains_key(s) {
                edges.insert(s.clone(), HashMap::new());
            }
            let row = edges.get_mut(s).expect("inserted above");
            for d in side(&k.dst_segments) {
                if !row.contains_key(d) {
                    row.insert(d.clone(), Edge::default());
                }
                let e = row.get_mut(d).expect("inserted above");
                e.last_seen = e.last_seen.max(Some(t));
                let flow = match kind {
                    EventKind::New => {
                        if k.verdict.as_deref() == Some("would_deny") {
                            e.would_deny += 1;
                        } else {
                            e.allowed += 1;
                        }
                        true
                    }
                    EventKind::Denied => {
                        e.denied += 1;
                        e.packets += k.packets;
                        e.bytes += k.bytes;
                        true
                    }
                    EventKind::Closed => {
                        e.packets += k.packets;
                        e.bytes += k.bytes;
                        false
                    }
                };
                if flow {
                    if let Some(proto) = k.proto {
                        // An ICMP event's "ports" are an echo identifier or type/code, not a service: port 0.
                        let port = if proto == policy::proto::ICMP || proto == policy::proto::ICMPV6
                        {
                            0
                        } else {
                            k.dport.unwrap_or(0)
                        };
                        *e.services.entry((proto, port)).or_default() += 1;
                    }
                    if let Some(id) = k.rule_id {
                        *e.rules.entry(id).or_default() += 1;
                    }
                }
            }
        }
    }
    let rule_name = |id: u32| rule_name(active, id);
    let mut edges: Vec<(String, String, Edge)> = edges
        .into_iter()
        .flat_map(|(from, row)| row.into_iter().map(move |(to, e)| (from.clone(), to, e)))
        .collect();
    edges.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let observed: BTreeSet<&str> = edges
        .iter()
        .flat_map(|(a, b, _)| [a.as_str(), b.as_str()])
        .collect();
    let nodes = nodes(active, &observed);
    let edges: Vec<Value> = edges
        .into_iter()
        .map(|(from, to, e)| {
            let mut services: Vec<((u8, u16), u64)> = e.services.into_iter().collect();
            services.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            services.truncate(TOP_SERVICES);
            let mut rules: Vec<(u32, u64)> = e.rules.into_iter().collect();
            rules.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            json!({
                "from": from, "to": to,
                "allowed": e.allowed, "denied": e.denied, "would_deny": e.would_deny,
                "packets": e.packets, "bytes": e.bytes,
                "last_seen": e.last_seen.map(time::rfc3339),
                "services": services.iter().map(|((proto, port), n)| json!({"proto": proto, "port": port, "flows": n})).collect::<Vec<_>>(),
                "rules": rules.iter().map(|(id, n)| json!({"id": id, "name": rule_name(*id), "flows": n})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "window_s": q.window_s,
        "from": time::rfc3339(from),
        "to": time::rfc3339(now),
        "events_considered": considered,
        "truncated": full && oldest.is_some_and(|t| t >= from),
        "nodes": nodes,
        "edges": edges,
    })
}

/// The name of rule `id` in `policy`: `"default"` for 0 (the default action), null for a rule it does not have.
pub(crate) fn rule_name(policy: Option<&Policy>, id: u32) -> Value {
    if id == 0 {
        return json!("default");
    }
    policy
        .and_then(|p| p.rules().iter().find(|r| r.id == id))
        .map_or(Value::Null, |r| json!(r.name))
}

/// The map's nodes: every segment of `active`, observed or not, then every `observed` name it does not have
/// ([`UNSEGMENTED`] as `(no segment)`).
pub(crate) fn nodes(active: Option<&Policy>, observed: &BTreeSet<&str>) -> Vec<Value> {
    let mut nodes: Vec<Value> = active
        .map(|p| p.segments())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            json!({
                "id": s.name, "name": s.name, "labels": s.labels,
                "prefixes": s.prefixes.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "mode": s.mode, "observed": observed.contains(s.name.as_str()),
            })
        })
        .collect();
    for name in observed {
        let known = active.is_some_and(|p| p.segment(name).is_some());
        if !known {
            let label = if *name == UNSEGMENTED {
                "(no segment)"
            } else {
                name
            };
            nodes.push(
                json!({"id": name, "name": label, "labels": {}, "prefixes": [],
                              "mode": null, "observed": true}),
            );
        }
    }
    nodes
}

#[cfg(test)]
mod tests;
