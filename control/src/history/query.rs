//! What the history answers besides plain conversation lists: the segment map over any window with its
//! drill-down (segment pair → host pairs → services), rules' last hits, and the hosts outside every segment as
//! candidate segments. Segments come from the policy given (active or draft) applied to the stored addresses at
//! query time, so a map can be redrawn with a segment the draft just gained.
//!
//! Counting per conversation-bucket: `flows` go to `allowed` (allow), `would_deny` or `denied` (deny and
//! reject) by verdict; packets and bytes are both directions together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use policy::Policy;
use serde_json::{json, Value};

use super::store::{Reader, RuleHits, ScanStats, StoreError};
use super::{Conversation, ConversationFilter, Window};
use crate::flowlog::UNSEGMENTED;
use crate::time::{from_unix_ms, rfc3339};
use crate::traffic;
use protocol::Verdict;

/// Services and rules listed per edge, the busiest first.
const TOP: usize = 10;

/// The segments of addresses under one policy, looked up once per (address, VLAN). Each distinct set of
/// segment names gets a small id, so a scan over a million rows compares and groups integers, not strings.
pub struct Segments<'a> {
    policy: Option<&'a Policy>,
    /// Set id → its segment names (`[UNSEGMENTED]` for an address in none).
    sets: Vec<Vec<String>>,
    ids: HashMap<Vec<String>, u32>,
    cache: HashMap<(IpAddr, u16), u32>,
}

impl<'a> Segments<'a> {
    pub fn new(policy: Option<&'a Policy>) -> Segments<'a> {
        Segments {
            policy,
            sets: Vec::new(),
            ids: HashMap::new(),
            cache: HashMap::new(),
        }
    }

    /// The id of the set of segments `addr` (seen on `vlan`, 0: untagged) is in.
    pub fn id(&mut self, addr: IpAddr, vlan: u16) -> u32 {
        if let Some(id) = self.cache.get(&(addr, vlan)) {
            return *id;
        }
        let mut names: Vec<String> = self.policy.map_or_else(Vec::new, |p| {
            p.segments_of(addr, (vlan != 0).then_some(vlan))
                .into_iter()
                .map(|s| s.name.clone())
                .collect()
        });
        if names.is_empty() {
            names.push(UNSEGMENTED.to_string());
        }
        let id = match self.ids.get(&names) {
            Some(id) => *id,
            None => {
                let id = self.sets.len() as u32;
                self.sets.push(names.clone());
                self.ids.insert(names, id);
                id
            }
        };
        self.cache.insert((addr, vlan), id);
        id
    }

    /// The segment names of set `id` ([`UNSEGMENTED`] alone: in no segment).
    pub fn names(&self, id: u32) -> &[String] {
        &self.sets[id as usize]
    }

    fn unsegmented(&self, id: u32) -> bool {
        self.names(id).first().map(String::as_str) == Some(UNSEGMENTED)
    }
}

/// Flows by verdict, traffic, and when, of a group of conversations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub allowed: u64,
    pub denied: u64,
    pub would_deny: u64,
    pub packets: u64,
    pub bytes: u64,
    pub first_unix_ms: Option<u64>,
    pub last_unix_ms: Option<u64>,
    pub services: HashMap<(u8, u16), u64>,
    /// Flows per deciding rule and its tier.
    pub rules: HashMap<Decider, u64>,
}

/// What decided a conversation: the rule's id (0: a default) and the tier (none: a v1 policy or the default).
pub type Decider = (u32, Option<Arc<str>>);

impl Counts {
    pub fn add(&mut self, c: &Conversation) {
        match c.key.verdict {
            Verdict::Allow => self.allowed += c.flows,
            Verdict::WouldDeny => self.would_deny += c.flows,
            Verdict::Deny | Verdict::Reject => self.denied += c.flows,
        }
        self.packets += c.packets[0] + c.packets[1];
        self.bytes += c.bytes[0] + c.bytes[1];
        self.first_unix_ms = Some(
            self.first_unix_ms
                .map_or(c.first_unix_ms, |t| t.min(c.first_unix_ms)),
        );
        self.last_unix_ms = Some(
            self.last_unix_ms
                .map_or(c.last_unix_ms, |t| t.max(c.last_unix_ms)),
        );
        if c.flows > 0 {
            *self
                .services
                .entry((c.key.proto, c.key.service))
                .or_default() += c.flows;
            *self
                .rules
                .entry((c.key.rule_id, c.key.tier.clone()))
                .or_default() += c.flows;
        }
    }

    /// Adds another group's counts.
    pub fn merge(&mut self, o: &Counts) {
        self.allowed += o.allowed;
        self.denied += o.denied;
        self.would_deny += o.would_deny;
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.first_unix_ms = match (self.first_unix_ms, o.first_unix_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_unix_ms = self.last_unix_ms.max(o.last_unix_ms);
        for (k, n) in &o.services {
            *self.services.entry(*k).or_default() += n;
        }
        for (k, n) in &o.rules {
            *self.rules.entry(k.clone()).or_default() += n;
        }
    }

    pub fn flows(&self) -> u64 {
        self.allowed + self.denied + self.would_deny
    }

    fn to_json(&self, rule_name: &dyn Fn(u32) -> Value) -> Value {
        let mut services: Vec<(&(u8, u16), &u64)> = self.services.iter().collect();
        services.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut rules: Vec<(&Decider, &u64)> = self.rules.iter().collect();
        rules.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        json!({
            "allowed": self.allowed, "denied": self.denied, "would_deny": self.would_deny,
            "packets": self.packets, "bytes": self.bytes,
            "first_seen": self.first_unix_ms.map(|t| rfc3339(from_unix_ms(t))),
            "last_seen": self.last_unix_ms.map(|t| rfc3339(from_unix_ms(t))),
            "services": services.iter().take(TOP).map(|((proto, port), n)| json!({"proto": proto, "port": port, "flows": n})).collect::<Vec<_>>(),
            "rules": rules.iter().take(TOP).map(|((id, tier), n)| json!({"id": id, "name": rule_name(*id), "tier": tier, "flows": n})).collect::<Vec<_>>(),
        })
    }
}

/// How deep the map looks: every segment pair, the host pairs of one segment pair, or the services of one host
/// pair in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drill {
    /// Both or neither ([`UNSEGMENTED`]: addresses in no segment).
    pub segments: Option<(String, String)>,
    /// Only with `segments`.
    pub hosts: Option<(IpAddr, IpAddr)>,
}

/// The grouping key of one map level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Segments(String, String),
    Hosts(IpAddr, IpAddr),
    Service(u8, u16),
}

/// The map's edges over `window`: per segment pair, or per host pair or service when drilling down. Every
/// conversation whose side is in several segments counts for each (src, dst) pair, as on the live map. Also
/// the rows skipped as unreadable.
pub fn map_counts(
    reader: &Reader,
    window: Window,
    filter: &ConversationFilter,
    segments: &mut Segments,
    drill: &Drill,
) -> Result<(BTreeMap<Group, Counts>, ScanStats), StoreError> {
    let mut groups: BTreeMap<Group, Counts> = BTreeMap::new();
    // The segment level is counted per (source set, destination set) and spread over segment pairs at the end.
    let mut by_sets: HashMap<(u32, u32), Counts> = HashMap::new();
    let stats = reader.scan(window, filter, |c| {
        let k = &c.key;
        if let Some((a, b)) = drill.hosts {
            if (k.src, k.dst) != (a, b) {
                return;
            }
        }
        let src = segments.id(k.src, k.vlan);
        let dst = segments.id(k.dst, k.vlan);
        let Some((want_src, want_dst)) = &drill.segments else {
            by_sets.entry((src, dst)).or_default().add(c);
            return;
        };
        if !segments.names(src).contains(want_src) || !segments.names(dst).contains(want_dst) {
            return;
        }
        let group = match drill.hosts {
            None => Group::Hosts(k.src, k.dst),
            Some(_) => Group::Service(k.proto, k.service),
        };
        groups.entry(group).or_default().add(c);
    })?;
    for ((src, dst), counts) in by_sets {
        for s in segments.names(src) {
            for d in segments.names(dst) {
                groups
                    .entry(Group::Segments(s.clone(), d.clone()))
                    .or_default()
                    .merge(&counts);
            }
        }
    }
    Ok((groups, stats))
}

/// The map as the API answers it (`level`: `segments`, `hosts` or `services`).
pub fn map(
    reader: &Reader,
    window: Window,
    filter: &ConversationFilter,
    policy: Option<&Policy>,
    drill: &Drill,
) -> Result<Value, StoreError> {
    let mut segments = Segments::new(policy);
    let (groups, stats) = map_counts(reader, window, filter, &mut segments, drill)?;
    let name = |id| traffic::rule_name(policy, id);
    let edges: Vec<Value> = groups
        .iter()
        .map(|(g, counts)| {
            let mut v = counts.to_json(&name);
            let o = v.as_object_mut().expect("an object");
            match g {
                Group::Segments(a, b) => {
                    o.insert("from".into(), json!(a));
                    o.insert("to".into(), json!(b));
                }
                Group::Hosts(a, b) => {
                    o.insert("src".into(), json!(a));
                    o.insert("dst".into(), json!(b));
                }
                Group::Service(proto, port) => {
                    o.insert("proto".into(), json!(proto));
                    o.insert("port".into(), json!(port));
                }
            }
            v
        })
        .collect();
    let level = match (&drill.segments, drill.hosts) {
        (None, _) => "segments",
        (Some(_), None) => "hosts",
        (Some(_), Some(_)) => "services",
    };
    let mut out = json!({
        "level": level,
        "from": rfc3339(window.from),
        "to": rfc3339(window.to),
        "edges": edges,
        "unreadable_rows": stats.unreadable,
    });
    if level == "segments" {
        let observed: BTreeSet<&str> = groups
            .keys()
            .flat_map(|g| match g {
                Group::Segments(a, b) => [a.as_str(), b.as_str()],
                _ => unreachable!("a segment-level map has segment pairs only"),
            })
            .collect();
        let nodes = traffic::nodes(policy, &observed);
        out["nodes"] = json!(nodes);
    }
    Ok(out)
}

/// Per rule id: flows decided by it in the window, and its last hit (Unix ms); and the rows skipped as
/// unreadable.
pub fn rule_hits(reader: &Reader, window: Window) -> Result<(RuleHits, ScanStats), StoreError> {
    reader.rule_hits(window)
}

/// Rules health over the window: per rule of `policy`, flows it decided and its last hit; stale when it
/// decided none within the window.
pub fn rules(
    reader: &Reader,
    window: Window,
    policy: Option<&Policy>,
) -> Result<Value, StoreError> {
    let (hits, stats) = rule_hits(reader, window)?;
    let entry = |id: u32| {
        let (flows, last) = hits.get(&id).copied().unwrap_or_default();
        let last_hit = (flows > 0).then(|| rfc3339(from_unix_ms(last)));
        (flows, last_hit)
    };
    let rules: Vec<Value> = policy
        .map(|p| p.rules())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(position, r)| {
            let (flows, last_hit) = entry(r.id);
            json!({"position": position, "id": r.id, "name": r.name, "action": r.action, "mode": r.mode,
                   "flows": flows, "last_hit": last_hit, "stale": flows == 0})
        })
        .collect();
    let (flows, last_hit) = entry(0);
    Ok(json!({
        "from": rfc3339(window.from),
        "to": rfc3339(window.to),
        "rules": rules,
        "default": {"flows": flows, "last_hit": last_hit},
        "unreadable_rows": stats.unreadable,
    }))
}

/// One address in no segment.
#[derive(Debug, Default)]
struct Host {
    flows: u64,
    bytes: u64,
    first: u64,
    last: u64,
    /// Segment names of the peers it talked to ([`UNSEGMENTED`]: a peer also in none), with flows.
    peers: BTreeMap<String, u64>,
}

/// The subnet a candidate segment is offered for: a /24 for IPv4, a /64 for IPv6.
pub fn subnet(addr: IpAddr) -> IpNet {
    let len = if addr.is_ipv4() { 24 } else { 64 };
    IpNet::new(addr, len)
        .expect("a valid prefix length")
        .trunc()
}

/// A segment name for hosts of `subnet` talking mostly to `peer`: letters, digits, `.`, `-` and `_` only.
pub fn candidate_name(subnet: &IpNet, peer: Option<&str>) -> String {
    let net: String = subnet
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    match peer.filter(|p| *p != UNSEGMENTED) {
        Some(p) => format!("peers-of-{p}-{net}"),
        None => format!("hosts-{net}"),
    }
}

/// Addresses seen in the window that are in no segment of `policy`, grouped by subnet (/24, /64) as candidate
/// segments: their hosts, the segments they talk to (the busiest gives the suggested name), and the prefix to
/// add. Within a subnet, hosts are also grouped by the set of segments they talk to, which may split it.
pub fn unsegmented(
    reader: &Reader,
    window: Window,
    policy: Option<&Policy>,
) -> Result<Value, StoreError> {
    let mut segments = Segments::new(policy);
    let mut hosts: BTreeMap<IpAddr, Host> = BTreeMap::new();
    let stats = reader.scan(window, &ConversationFilter::default(), |c| {
        let k = &c.key;
        let src = segments.id(k.src, k.vlan);
        let dst = segments.id(k.dst, k.vlan);
        for (addr, own, peer) in [(k.src, src, dst), (k.dst, dst, src)] {
            if !segments.unsegmented(own) {
                continue;
            }
            let h = hosts.entry(addr).or_insert_with(|| Host {
                first: c.first_unix_ms,
                ..Host::default()
            });
            h.flows += c.flows;
            h.bytes += c.bytes[0] + c.bytes[1];
            h.first = h.first.min(c.first_unix_ms);
            h.last = h.last.max(c.last_unix_ms);
            for p in segments.names(peer) {
                *h.peers.entry(p.clone()).or_default() += c.flows;
            }
        }
    })?;
    let mut subnets: BTreeMap<IpNet, Vec<(IpAddr, Host)>> = BTreeMap::new();
    for (addr, h) in hosts {
        subnets.entry(subnet(addr)).or_default().push((addr, h));
    }
    let candidates: Vec<Value> = subnets
        .into_iter()
        .map(|(net, hosts)| {
            let mut talks_to: BTreeMap<&str, u64> = BTreeMap::new();
            let mut by_peers: BTreeMap<Vec<&str>, Vec<IpAddr>> = BTreeMap::new();
            for (addr, h) in &hosts {
                for (p, n) in &h.peers {
                    *talks_to.entry(p).or_default() += n;
                }
                by_peers
                    .entry(h.peers.keys().map(String::as_str).collect())
                    .or_default()
                    .push(*addr);
            }
            let busiest = talks_to
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(p, _)| *p);
            json!({
                "subnet": net.to_string(),
                "name": candidate_name(&net, busiest),
                "prefixes": [net.to_string()],
                "flows": hosts.iter().map(|(_, h)| h.flows).sum::<u64>(),
                "talks_to": talks_to.iter().map(|(p, n)| json!({"segment": p, "flows": n})).collect::<Vec<_>>(),
                "by_peers": by_peers.iter().map(|(peers, addrs)| json!({"talks_to": peers, "hosts": addrs})).collect::<Vec<_>>(),
                "hosts": hosts.iter().map(|(a, h)| json!({
                    "addr": a, "flows": h.flows, "bytes": h.bytes,
                    "first_seen": rfc3339(from_unix_ms(h.first)), "last_seen": rfc3339(from_unix_ms(h.last)),
                    "talks_to": h.peers.keys().collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "from": rfc3339(window.from),
        "to": rfc3339(window.to),
        "candidates": candidates,
        "unreadable_rows": stats.unreadable,
    }))
}
