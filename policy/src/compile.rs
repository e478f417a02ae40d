//! Compilation to flat rules: pure (src prefix, dst prefix, VLAN, protocol, port range, port range) matches in
//! priority order, the shape DPDK's `rte_acl` classifies. First match over [`Compiled::v4`]/[`Compiled::v6`]
//! gives the same [`Decision`] as [`Policy::evaluate`] for every flow (property-tested).
//!
//! A rule expands to from-side atoms × to-side atoms × service ranges, where an atom is one prefix with either
//! one exact VLAN or no VLAN condition. Two reductions keep the count down without changing any decision:
//! * each side's atoms are merged (prefix aggregation per VLAN, atoms inside a VLAN-less prefix dropped), and
//!   a service's port lists are merged into disjoint ranges;
//! * a flat rule covered by one already emitted (every flow it matches, the earlier one matches first) is
//!   dropped. The same test tells which rules are shadowed.
//!
//! # Tiers and `pass`
//!
//! Pass chains are resolved here, at compile time, into the one flat first-match list the classifier already
//! runs: the first flat rule a flow matches names the rule (or default) that decides it, whatever the number of
//! tiers, so the dataplane finds the deciding rule and its tier in one classification, at no extra cost per
//! packet. The construction, per family: `flatten(tiers k..n)` is
//!
//! 1. tier k's rules in order: a decisive rule's flat rules as they are; a `pass` rule P's flat rules each
//!    intersected with every flat rule of `flatten(tiers k+1..n)`, in that order, at P's position — each
//!    intersection keeps the lower rule's target, so a flow P matches is decided exactly as the tiers below
//!    would decide it;
//! 2. then tier k's default: `deny` as "src/dst in a monitor-mode segment" (monitored) and a catch-all;
//!    `pass` as `flatten(tiers k+1..n)` itself.
//!
//! `flatten(tiers n..n)` (past the last tier) is the policy default: the monitored-default flat rules and a
//! catch-all, so every `flatten` ends in a catch-all and a pass rule's intersections cover everything it
//! matches. Intersections are exact (two prefixes nest or are disjoint; ranges intersect to a range; exact VLAN
//! and protocol values meet or not); empty ones are dropped, and covered flat rules are dropped at every level
//! as for v1. The trailing catch-all of the plain policy default is dropped at the end (no match means the
//! same), so a v1 policy compiles exactly as before. A pass rule costs at most its own flat rules times those
//! of the tiers below it; validation bounds that product ([`crate::limits::MAX_PASS_EXPANSION`], an error
//! naming the pass rule), and [`Policy::compile_limited`] bounds the whole list.
//!
//! The alternative is `rte_acl` categories: one category per tier, each classification returning a result per
//! tier and the worker taking the first decisive one. It has no blow-up, but costs every new flow a walk over
//! the tiers' results and puts per-tier semantics (pass, tier defaults, monitored defaults) into the worker's
//! hot path, and `rte_acl` allows at most 16 categories (tiers). Policies are compiled rarely and classified per
//! new flow, so the work belongs here: with realistic pass rules (a segment pair passed on to the tier that
//! owns it) most intersections are empty and the flat list grows little (see the README's figures).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::ops::Range;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::ValidationError;
use crate::eval::{Decision, Flow};
use crate::model::{Action, Mode, PortRange, Selector, TierDefault, ANY_SERVICE};
use crate::policy::Policy;

/// Every port (or ICMP type/code) value, 0 included.
pub const FULL_RANGE: (u16, u16) = (0, u16::MAX);

/// What a flat rule decides when it is the first match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleRef {
    /// The user rule at this index of [`Policy::rules`] (never a `pass` rule: those are resolved away).
    Rule(usize),
    /// The default action, monitored: src or dst is in a monitor-mode segment (see [`Decision::Default`]).
    MonitoredDefault,
    /// The policy's default action, reached through a `pass` rule of a higher tier (elsewhere the default is
    /// simply "no match").
    Default,
    /// The `deny` default of the tier at this index.
    TierDefault(usize),
    /// The `deny` default of the tier at this index, monitored (src or dst in a monitor-mode segment).
    MonitoredTierDefault(usize),
}

/// One 5-tuple + VLAN match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlatRule<N> {
    pub rule: RuleRef,
    pub src: N,
    pub dst: N,
    /// An exact VLAN id, or `None` for any VLAN and untagged frames alike.
    pub vlan: Option<u16>,
    /// An exact protocol, or `None` for every protocol.
    pub proto: Option<u8>,
    /// Inclusive source port range (ICMP: type range).
    pub sport: (u16, u16),
    /// Inclusive destination port range (ICMP: code range).
    pub dport: (u16, u16),
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for ipnet::Ipv4Net {}
    impl Sealed for ipnet::Ipv6Net {}
}

/// The two prefix types flat rules are built from, so one generic expansion serves both families.
pub trait Prefix:
    sealed::Sealed + Copy + Eq + Ord + Hash + fmt::Debug + fmt::Display + 'static
{
    /// The prefix that matches every address of the family (`0.0.0.0/0`, `::/0`).
    fn everything() -> Self;
    fn bits(&self) -> u8;
    /// The enclosing prefix of length `len` (`len <= self.bits()`).
    fn supernet(&self, len: u8) -> Self;
    fn covers(&self, other: &Self) -> bool;
    fn contains_addr(&self, addr: IpAddr) -> bool;
    /// The smallest set of prefixes with the same union.
    fn aggregate(nets: Vec<Self>) -> Vec<Self>;
    /// `Some` when `net` is of this family.
    fn of(net: &IpNet) -> Option<Self>;
}

impl Prefix for Ipv4Net {
    fn everything() -> Self {
        Ipv4Net::default()
    }
    fn bits(&self) -> u8 {
        self.prefix_len()
    }
    fn supernet(&self, len: u8) -> Self {
        Ipv4Net::new(self.network(), len)
            .expect("len is at most the prefix length")
            .trunc()
    }
    fn covers(&self, other: &Self) -> bool {
        self.contains(other)
    }
    fn contains_addr(&self, addr: IpAddr) -> bool {
        matches!(addr, IpAddr::V4(a) if self.contains(&a))
    }
    fn aggregate(nets: Vec<Self>) -> Vec<Self> {
        Ipv4Net::aggregate(&nets)
    }
    fn of(net: &IpNet) -> Option<Self> {
        match net {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        }
    }
}

impl Prefix for Ipv6Net {
    fn everything() -> Self {
        Ipv6Net::default()
    }
    fn bits(&self) -> u8 {
        self.prefix_len()
    }
    fn supernet(&self, len: u8) -> Self {
        Ipv6Net::new(self.network(), len)
            .expect("len is at most the prefix length")
            .trunc()
    }
    fn covers(&self, other: &Self) -> bool {
        self.contains(other)
    }
    fn contains_addr(&self, addr: IpAddr) -> bool {
        matches!(addr, IpAddr::V6(a) if self.contains(&a))
    }
    fn aggregate(nets: Vec<Self>) -> Vec<Self> {
        Ipv6Net::aggregate(&nets)
    }
    fn of(net: &IpNet) -> Option<Self> {
        match net {
            IpNet::V6(n) => Some(*n),
            IpNet::V4(_) => None,
        }
    }
}

fn range_contains(r: (u16, u16), v: u16) -> bool {
    r.0 <= v && v <= r.1
}

fn range_covers(outer: (u16, u16), inner: (u16, u16)) -> bool {
    outer.0 <= inner.0 && inner.1 <= outer.1
}

impl<N: Prefix> FlatRule<N> {
    /// Whether the flow matches this flat rule (a flow of the other family never does).
    pub fn matches(&self, flow: &Flow) -> bool {
        self.src.contains_addr(flow.src)
            && self.dst.contains_addr(flow.dst)
            && self.vlan.is_none_or(|v| flow.vlan == Some(v))
            && self.proto.is_none_or(|p| flow.proto == p)
            && range_contains(self.sport, flow.sport)
            && range_contains(self.dport, flow.dport)
    }

    /// The flat rule matching exactly the flows both match, with `other`'s target; `None` when no flow matches
    /// both. Exact, because prefixes either nest or are disjoint and ranges intersect to a range.
    pub fn intersect(&self, other: &Self) -> Option<Self> {
        let narrower = |a: N, b: N| {
            if a.covers(&b) {
                Some(b)
            } else if b.covers(&a) {
                Some(a)
            } else {
                None
            }
        };
        let range = |a: (u16, u16), b: (u16, u16)| {
            let r = (a.0.max(b.0), a.1.min(b.1));
            (r.0 <= r.1).then_some(r)
        };
        Some(FlatRule {
            rule: other.rule,
            src: narrower(self.src, other.src)?,
            dst: narrower(self.dst, other.dst)?,
            vlan: meet(self.vlan, other.vlan)?,
            proto: meet(self.proto, other.proto)?,
            sport: range(self.sport, other.sport)?,
            dport: range(self.dport, other.dport)?,
        })
    }

    /// Whether every flow `other` matches, `self` matches too.
    pub fn covers(&self, other: &Self) -> bool {
        self.src.covers(&other.src)
            && self.dst.covers(&other.dst)
            && (self.vlan.is_none() || self.vlan == other.vlan)
            && (self.proto.is_none() || self.proto == other.proto)
            && range_covers(self.sport, other.sport)
            && range_covers(self.dport, other.dport)
    }
}

/// Linear first match: the semantics `rte_acl` must reproduce (by priority).
pub fn first_match<N: Prefix>(rules: &[FlatRule<N>], flow: &Flow) -> Option<RuleRef> {
    rules.iter().find(|r| r.matches(flow)).map(|r| r.rule)
}

/// What the classifier needs to know about a user rule to turn a match into a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo {
    pub id: u32,
    pub action: Action,
    pub mode: Mode,
    pub log: bool,
    /// The rule's tier (index in [`Compiled::tiers`]).
    pub tier: usize,
}

/// A rule that can never decide (a `pass` rule: never sends a flow on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    pub index: usize,
    pub id: u32,
    /// The rule's own tier.
    pub tier: String,
    pub reason: ShadowReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShadowReason {
    /// Earlier rules (these ids, in evaluation order; of this tier or of a higher one) match everything this one
    /// does.
    CoveredBy(Vec<u32>),
    /// A higher tier makes the rule unreachable: that tier's `deny` default (with these rules of any higher
    /// tier, possibly none) decides every flow this rule matches.
    BehindTierDefault { tier: String, rules: Vec<u32> },
    /// The rule matches no flow at all: its sides have no address family or VLAN in common (e.g. an IPv4-only
    /// segment to an IPv6-only one).
    MatchesNothing,
}

impl fmt::Display for Shadowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tier == crate::model::V1_TIER {
            write!(f, "rule {} (rules[{}]) ", self.id, self.index)?;
        } else {
            write!(f, "rule {} (tier {}) ", self.id, self.tier)?;
        }
        let list = |ids: &[u32]| {
            ids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.reason {
            ShadowReason::CoveredBy(ids) => {
                write!(f, "can never match: covered by rule {}", list(ids))
            }
            ShadowReason::BehindTierDefault { tier, rules } if rules.is_empty() => write!(
                f,
                "can never match: tier {tier} denies by default everything it matches"
            ),
            ShadowReason::BehindTierDefault { tier, rules } => write!(
                f,
                "can never match: rule {} and tier {tier}'s default deny decide everything it matches",
                list(rules)
            ),
            ShadowReason::MatchesNothing => write!(
                f,
                "can never match: its sides share no address family or VLAN"
            ),
        }
    }
}

/// Flat-rule counts, to measure how a policy expands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileStats {
    /// Flat rules emitted per family, monitored defaults included.
    pub v4: usize,
    pub v6: usize,
    /// Of which the monitored-default tail.
    pub monitored_default_v4: usize,
    pub monitored_default_v6: usize,
    pub rules: Vec<RuleStats>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStats {
    pub index: usize,
    pub id: u32,
    pub name: String,
    /// Flat rules the expansion produced (after merging each side's prefixes, before dropping covered ones).
    pub candidates: usize,
    pub v4: usize,
    pub v6: usize,
}

impl fmt::Display for CompileStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flat rules: {} IPv4, {} IPv6 (of which monitored default: {} IPv4, {} IPv6)",
            self.v4, self.v6, self.monitored_default_v4, self.monitored_default_v6
        )?;
        for r in &self.rules {
            write!(
                f,
                "\n  rule {} {:?}: {} IPv4 + {} IPv6 of {} candidates",
                r.id, r.name, r.v4, r.v6, r.candidates
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("{} takes the policy past the limit of {limit} flat rules", what(.rule))]
    TooManyFlatRules { limit: usize, rule: Option<u32> },
    #[error("the default of tier {tier} takes the policy past the limit of {limit} flat rules")]
    TooManyFlatRulesAtTierDefault { limit: usize, tier: String },
}

fn what(rule: &Option<u32>) -> String {
    match rule {
        Some(id) => format!("rule {id}"),
        None => "the monitored default".to_string(),
    }
}

/// The classifier's input: flat rules per family in priority order, and what each match means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub v4: Vec<FlatRule<Ipv4Net>>,
    pub v6: Vec<FlatRule<Ipv6Net>>,
    pub default_action: Action,
    /// Per user rule, by index.
    pub rules: Vec<RuleInfo>,
    /// Tier names, in evaluation order.
    pub tiers: Vec<String>,
    stats: CompileStats,
    shadowed: Vec<Shadowed>,
}

impl Compiled {
    /// The decision a first match (or no match) stands for.
    pub fn decision(&self, hit: Option<RuleRef>) -> Decision {
        match hit {
            Some(RuleRef::Rule(index)) => {
                let r = &self.rules[index];
                Decision::Rule {
                    index,
                    id: r.id,
                    action: r.action,
                    mode: r.mode,
                }
            }
            Some(RuleRef::MonitoredDefault) => Decision::Default {
                action: self.default_action,
                monitored: self.default_action != Action::Allow,
            },
            Some(RuleRef::TierDefault(tier)) => Decision::TierDefault {
                tier,
                monitored: false,
            },
            Some(RuleRef::MonitoredTierDefault(tier)) => Decision::TierDefault {
                tier,
                monitored: true,
            },
            Some(RuleRef::Default) | None => Decision::Default {
                action: self.default_action,
                monitored: false,
            },
        }
    }

    /// Linear first match over the flat rules of the flow's family; equals [`Policy::evaluate`].
    pub fn classify(&self, flow: &Flow) -> Decision {
        let hit = match (flow.src, flow.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => first_match(&self.v4, flow),
            (IpAddr::V6(_), IpAddr::V6(_)) => first_match(&self.v6, flow),
            _ => None,
        };
        self.decision(hit)
    }

    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// Rules that can never be the first match (found while dropping covered flat rules).
    pub fn shadowed(&self) -> &[Shadowed] {
        &self.shadowed
    }
}

/// One prefix with one exact VLAN or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Atom<N> {
    net: N,
    vlan: Option<u16>,
}

/// (protocol, sport range, dport range)
type ServiceAtom = (Option<u8>, (u16, u16), (u16, u16));

fn segment_atoms<N: Prefix>(seg: &crate::model::Segment, out: &mut Vec<Atom<N>>) {
    for net in seg.prefixes.iter().filter_map(N::of) {
        match &seg.vlans {
            None => out.push(Atom { net, vlan: None }),
            Some(vlans) => out.extend(vlans.iter().map(|&v| Atom { net, vlan: Some(v) })),
        }
    }
}

/// The same union of (address, VLAN) pairs with fewer atoms: prefixes aggregated per VLAN, and VLAN-specific
/// atoms dropped when a VLAN-less atom contains them.
fn reduce<N: Prefix>(atoms: Vec<Atom<N>>) -> Vec<Atom<N>> {
    let mut by_vlan: BTreeMap<Option<u16>, Vec<N>> = BTreeMap::new();
    for a in atoms {
        by_vlan.entry(a.vlan).or_default().push(a.net);
    }
    let untagged_or_any = by_vlan.remove(&None).map(N::aggregate).unwrap_or_default();
    let any_vlan: HashSet<N> = untagged_or_any.iter().copied().collect();
    let in_any_vlan = |n: &N| (0..=n.bits()).any(|len| any_vlan.contains(&n.supernet(len)));
    let mut out: Vec<Atom<N>> = untagged_or_any
        .iter()
        .map(|&net| Atom { net, vlan: None })
        .collect();
    for (vlan, nets) in by_vlan {
        out.extend(
            N::aggregate(nets)
                .into_iter()
                .filter(|n| !in_any_vlan(n))
                .map(|net| Atom { net, vlan }),
        );
    }
    out.sort();
    out
}

/// A list of port ranges as sorted, disjoint, non-adjacent ranges; `None` (no constraint) is the full range.
fn merged_ranges(list: &Option<Vec<PortRange>>) -> Vec<(u16, u16)> {
    let Some(list) = list else {
        return vec![FULL_RANGE];
    };
    let mut ranges: Vec<(u16, u16)> = list.iter().map(|r| (r.lo, r.hi)).collect();
    ranges.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// `ranges` narrowed to a single value when `exact` is set (ICMP type or code).
fn narrowed(ranges: Vec<(u16, u16)>, exact: Option<u8>) -> Vec<(u16, u16)> {
    match exact {
        None => ranges,
        Some(v) => {
            let v = u16::from(v);
            if ranges.iter().any(|&r| range_contains(r, v)) {
                vec![(v, v)]
            } else {
                Vec::new()
            }
        }
    }
}

fn service_atoms(policy: &Policy, name: &str) -> Vec<ServiceAtom> {
    if name == ANY_SERVICE {
        return vec![(None, FULL_RANGE, FULL_RANGE)];
    }
    let Some(svc) = policy.service(name) else {
        return Vec::new();
    };
    let Some(proto) = svc.protocol.number() else {
        return vec![(None, FULL_RANGE, FULL_RANGE)];
    };
    let sports = narrowed(merged_ranges(&svc.source_ports), svc.icmp_type);
    let dports = narrowed(merged_ranges(&svc.ports), svc.icmp_code);
    let mut out = Vec::with_capacity(sports.len() * dports.len());
    for &s in &sports {
        for &d in &dports {
            out.push((Some(proto), s, d));
        }
    }
    out
}

/// The condition of a pair of optional exact values (VLAN, protocol; `None` is "any"): `None` when they can
/// never hold together.
fn meet<T: PartialEq>(a: Option<T>, b: Option<T>) -> Option<Option<T>> {
    match (a, b) {
        (None, x) | (x, None) => Some(x),
        (Some(x), Some(y)) => (x == y).then_some(Some(x)),
    }
}

/// Emitted flat rules of one family, indexed so that "is this candidate covered by an emitted rule?" looks only
/// at rules whose src and dst are supernets of the candidate's (at most 33 or 129 lengths each).
struct Emitted<N: Prefix> {
    rules: Vec<FlatRule<N>>,
    by_src: HashMap<N, HashMap<N, Vec<usize>>>,
    src_lens: BTreeSet<u8>,
    dst_lens: BTreeSet<u8>,
}

impl<N: Prefix> Emitted<N> {
    fn new() -> Self {
        Emitted {
            rules: Vec::new(),
            by_src: HashMap::new(),
            src_lens: BTreeSet::new(),
            dst_lens: BTreeSet::new(),
        }
    }

    /// An emitted rule with an index in `among` that covers `r`.
    fn cover(&self, r: &FlatRule<N>, among: Range<usize>) -> Option<usize> {
        for &sl in self.src_lens.range(..=r.src.bits()) {
            let Some(by_dst) = self.by_src.get(&r.src.supernet(sl)) else {
                continue;
            };
            for &dl in self.dst_lens.range(..=r.dst.bits()) {
                let Some(candidates) = by_dst.get(&r.dst.supernet(dl)) else {
                    continue;
                };
                // Indices are pushed in increasing order, so each list is sorted.
                let first = candidates.partition_point(|&i| i < among.start);
                if let Some(&i) = candidates[first..]
                    .iter()
                    .take_while(|&&i| i < among.end)
                    .find(|&&i| self.rules[i].covers(r))
                {
                    return Some(i);
                }
            }
        }
        None
    }

    fn push(&mut self, r: FlatRule<N>) {
        let i = self.rules.len();
        self.src_lens.insert(r.src.bits());
        self.dst_lens.insert(r.dst.bits());
        self.by_src
            .entry(r.src)
            .or_default()
            .entry(r.dst)
            .or_default()
            .push(i);
        self.rules.push(r);
    }
}

/// Per-rule bookkeeping while expanding.
#[derive(Default)]
struct Tally {
    /// Flat rules the rule's own expansion produced.
    candidates: usize,
    /// A `pass` rule: intersections emitted at its position.
    passed_on: usize,
    /// Indices of other rules whose flat rules covered candidates of this one.
    covering: BTreeSet<usize>,
    /// Tiers whose `deny` default covered candidates of this one.
    covering_tiers: BTreeSet<usize>,
}

struct Compiler<'p> {
    policy: &'p Policy,
    limit: usize,
    /// Flat rules already emitted for the other family (the limit counts both).
    other_family: usize,
    /// Segments selected by each distinct label selector: many rules tend to share a few selectors, and
    /// matching labels against every segment for each rule dominated compile time on large policies.
    by_labels: HashMap<&'p BTreeMap<String, String>, Vec<usize>>,
    tallies: Vec<Tally>,
}

impl<'p> Compiler<'p> {
    fn side_atoms<N: Prefix>(&mut self, sel: &'p Selector) -> Vec<Atom<N>> {
        let policy = self.policy;
        let mut atoms = Vec::new();
        match sel {
            Selector::Any => atoms.push(Atom {
                net: N::everything(),
                vlan: None,
            }),
            Selector::Segment(name) => {
                if let Some(seg) = policy.segment(name) {
                    segment_atoms(seg, &mut atoms);
                }
            }
            Selector::Labels(wanted) => {
                let selected = self.by_labels.entry(wanted).or_insert_with(|| {
                    (0..policy.segments().len())
                        .filter(|&i| {
                            crate::validate::labels_match(wanted, &policy.segments()[i].labels)
                        })
                        .collect()
                });
                for &i in selected.iter() {
                    segment_atoms(&policy.segments()[i], &mut atoms);
                }
            }
            Selector::Prefix(net) => atoms.extend(N::of(net).map(|net| Atom { net, vlan: None })),
        }
        reduce(atoms)
    }

    /// The rule's own expansion (from-side atoms × to-side atoms × service ranges), targeting the rule itself.
    fn expand<N: Prefix>(&mut self, index: usize) -> Vec<FlatRule<N>> {
        let rule = &self.policy.rules()[index];
        let services = service_atoms(self.policy, &rule.service);
        let from = self.side_atoms::<N>(&rule.from);
        let to = self.side_atoms::<N>(&rule.to);
        let mut out = Vec::new();
        for f in &from {
            for t in &to {
                let Some(vlan) = meet(f.vlan, t.vlan) else {
                    continue;
                };
                for &(proto, sport, dport) in &services {
                    out.push(FlatRule {
                        rule: RuleRef::Rule(index),
                        src: f.net,
                        dst: t.net,
                        vlan,
                        proto,
                        sport,
                        dport,
                    });
                }
            }
        }
        self.tallies[index].candidates += out.len();
        out
    }

    /// Emits `cand` unless an emitted rule covers it (then the first match never reaches it). Returns whether
    /// it was emitted.
    fn offer<N: Prefix>(
        &mut self,
        out: &mut Emitted<N>,
        cand: FlatRule<N>,
        origin: Option<u32>,
    ) -> Result<bool, CompileError> {
        if let Some(i) = out.cover(&cand, 0..usize::MAX) {
            let by = out.rules[i].rule;
            if let RuleRef::Rule(index) = cand.rule {
                if by != cand.rule {
                    let tally = &mut self.tallies[index];
                    match by {
                        RuleRef::Rule(other) => {
                            tally.covering.insert(other);
                        }
                        RuleRef::TierDefault(t) | RuleRef::MonitoredTierDefault(t) => {
                            tally.covering_tiers.insert(t);
                        }
                        RuleRef::Default | RuleRef::MonitoredDefault => {}
                    }
                }
            }
            return Ok(false);
        }
        // One more than the limit is let through here: the policy default's catch-all, dropped at the end, may
        // be that one (`compile` checks the final count).
        if out.rules.len() + self.other_family > self.limit {
            return Err(CompileError::TooManyFlatRules {
                limit: self.limit,
                rule: origin,
            });
        }
        out.push(cand);
        Ok(true)
    }

    /// "src in S" then "dst in S" for every monitor-mode segment S, targeting `target` (a monitored default).
    fn monitored<N: Prefix>(&self, target: RuleRef) -> Vec<FlatRule<N>> {
        let mut atoms = Vec::new();
        for seg in self
            .policy
            .segments()
            .iter()
            .filter(|s| s.mode == Mode::Monitor)
        {
            segment_atoms(seg, &mut atoms);
        }
        let atoms = reduce(atoms);
        let any = N::everything();
        let side = |is_src: bool| {
            atoms.iter().map(move |a| {
                let (src, dst) = if is_src { (a.net, any) } else { (any, a.net) };
                FlatRule {
                    rule: target,
                    src,
                    dst,
                    vlan: a.vlan,
                    proto: None,
                    sport: FULL_RANGE,
                    dport: FULL_RANGE,
                }
            })
        };
        side(true).chain(side(false)).collect()
    }

    /// The flat rule that matches every flow of the family.
    fn catch_all<N: Prefix>(target: RuleRef) -> FlatRule<N> {
        FlatRule {
            rule: target,
            src: N::everything(),
            dst: N::everything(),
            vlan: None,
            proto: None,
            sport: FULL_RANGE,
            dport: FULL_RANGE,
        }
    }

    /// `flatten(tiers k..n)` for every k, from the last tier up; returns `flatten(tiers 0..n)`, which ends in
    /// the policy default's catch-all (dropped by the caller). See the module docs for the construction.
    fn flatten<N: Prefix>(&mut self) -> Result<Vec<FlatRule<N>>, CompileError> {
        let policy = self.policy;
        let default = policy.settings().default_action;
        let mut below: Vec<FlatRule<N>> = Vec::new();
        if default != Action::Allow {
            below = self.monitored(RuleRef::MonitoredDefault);
        }
        below.push(Self::catch_all(RuleRef::Default));
        let mut out = Emitted::<N>::new();
        for rule in std::mem::take(&mut below) {
            self.offer(&mut out, rule, None)?;
        }
        below = out.rules;
        for (k, tier) in policy.tiers().iter().enumerate().rev() {
            let mut out = Emitted::<N>::new();
            for index in tier.rules.clone() {
                let rule = &policy.rules()[index];
                let origin = Some(rule.id);
                let own = self.expand::<N>(index);
                if rule.action != Action::Pass {
                    for cand in own {
                        self.offer(&mut out, cand, origin)?;
                    }
                    continue;
                }
                for p in &own {
                    for r in &below {
                        if let Some(cand) = p.intersect(r) {
                            if self.offer(&mut out, cand, origin)? {
                                self.tallies[index].passed_on += 1;
                            }
                        }
                    }
                }
            }
            match tier.default {
                TierDefault::Deny => {
                    let mut tail = self.monitored(RuleRef::MonitoredTierDefault(k));
                    tail.push(Self::catch_all(RuleRef::TierDefault(k)));
                    for rule in tail {
                        self.offer(&mut out, rule, None)
                            .map_err(|e| e.in_tier(&tier.name))?;
                    }
                }
                TierDefault::Pass => {
                    for rule in below {
                        let origin = match rule.rule {
                            RuleRef::Rule(i) => Some(policy.rules()[i].id),
                            _ => None,
                        };
                        self.offer(&mut out, rule, origin)?;
                    }
                }
            }
            below = out.rules;
        }
        Ok(below)
    }
}

/// Upper bounds of `flatten(tiers k..n)`'s length per family, and of each pass rule's intersections, without
/// building them: what validation checks against [`crate::limits::MAX_PASS_EXPANSION`].
pub(crate) fn pass_expansion_errors(policy: &Policy) -> Vec<ValidationError> {
    if !policy.rules().iter().any(|r| r.action == Action::Pass) {
        return Vec::new();
    }
    let mut c = Compiler {
        policy,
        limit: usize::MAX,
        other_family: 0,
        by_labels: HashMap::new(),
        tallies: (0..policy.rules().len())
            .map(|_| Tally::default())
            .collect(),
    };
    let mut bounds = vec![0usize; policy.rules().len()];
    c.pass_bounds::<Ipv4Net>(&mut bounds);
    c.pass_bounds::<Ipv6Net>(&mut bounds);
    let limit = crate::limits::MAX_PASS_EXPANSION;
    let mut errors = Vec::new();
    for (t, tier) in policy.tiers().iter().enumerate() {
        for (i, index) in tier.rules.clone().enumerate() {
            if bounds[index] > limit {
                errors.push(ValidationError::new(
                    format!("tiers[{t}].rules[{i}].action"),
                    format!(
                        "this pass rule stands for up to {} flat rules (its matches times the rules of the tiers below), over the limit of {limit}: narrow its match, or move the rules it passes to into fewer tiers",
                        bounds[index]
                    ),
                ));
            }
        }
    }
    errors
}

impl Compiler<'_> {
    /// Adds each pass rule's bound for family `N` to `bounds` (by rule index).
    fn pass_bounds<N: Prefix>(&mut self, bounds: &mut [usize]) {
        let policy = self.policy;
        let monitored = if policy.settings().default_action != Action::Allow {
            self.monitored::<N>(RuleRef::MonitoredDefault).len()
        } else {
            0
        };
        let mut below = monitored + 1;
        for tier in policy.tiers().iter().rev() {
            let mut size = 0usize;
            for index in tier.rules.clone() {
                let own = self.expand::<N>(index).len();
                if policy.rules()[index].action == Action::Pass {
                    let n = own.saturating_mul(below);
                    bounds[index] = bounds[index].saturating_add(n);
                    size = size.saturating_add(n);
                } else {
                    size = size.saturating_add(own);
                }
            }
            below = match tier.default {
                TierDefault::Deny => size.saturating_add(monitored + 1),
                TierDefault::Pass => size.saturating_add(below),
            };
        }
    }
}

impl CompileError {
    /// A limit hit while emitting a tier's default: name the tier.
    fn in_tier(self, tier: &str) -> CompileError {
        match self {
            CompileError::TooManyFlatRules { limit, rule: None } => {
                CompileError::TooManyFlatRulesAtTierDefault {
                    limit,
                    tier: tier.to_string(),
                }
            }
            other => other,
        }
    }
}

/// Drops the trailing catch-all of the plain policy default: no match means the same.
fn without_default_tail<N: Prefix>(mut rules: Vec<FlatRule<N>>) -> Vec<FlatRule<N>> {
    if rules.last().is_some_and(|r| {
        r.rule == RuleRef::Default && *r == Compiler::catch_all::<N>(RuleRef::Default)
    }) {
        rules.pop();
    }
    rules
}

fn count_refs<N>(rules: &[FlatRule<N>], counts: &mut [usize], monitored: &mut usize) {
    for r in rules {
        match r.rule {
            RuleRef::Rule(i) => counts[i] += 1,
            RuleRef::MonitoredDefault => *monitored += 1,
            _ => {}
        }
    }
}

pub(crate) fn compile(policy: &Policy, limit: usize) -> Result<Compiled, CompileError> {
    let mut c = Compiler {
        policy,
        limit,
        other_family: 0,
        by_labels: HashMap::new(),
        tallies: (0..policy.rules().len())
            .map(|_| Tally::default())
            .collect(),
    };
    let v4 = without_default_tail(c.flatten::<Ipv4Net>()?);
    c.other_family = v4.len();
    let v6 = without_default_tail(c.flatten::<Ipv6Net>()?);
    if v4.len() + v6.len() > limit {
        return Err(CompileError::TooManyFlatRules { limit, rule: None });
    }
    let (mut n4, mut n6) = (vec![0; policy.rules().len()], vec![0; policy.rules().len()]);
    let (mut md4, mut md6) = (0, 0);
    count_refs(&v4, &mut n4, &mut md4);
    count_refs(&v6, &mut n6, &mut md6);
    let mut rule_stats = Vec::with_capacity(policy.rules().len());
    let mut shadowed = Vec::new();
    for (index, rule) in policy.rules().iter().enumerate() {
        let tally = &c.tallies[index];
        let effective = if rule.action == Action::Pass {
            tally.passed_on > 0
        } else {
            n4[index] + n6[index] > 0
        };
        let rules = || -> Vec<u32> {
            tally
                .covering
                .iter()
                .map(|&i| policy.rules()[i].id)
                .collect()
        };
        let reason = if tally.candidates == 0 {
            Some(ShadowReason::MatchesNothing)
        } else if effective {
            None
        } else if let Some(t) = tally.covering_tiers.first().copied().or_else(|| {
            if !tally.covering.is_empty() {
                return None;
            }
            // Never even reached the top: no pass rule above sends its flows on, so the nearest tier above
            // that denies by default stops them.
            let own = policy.tier_of(index);
            (0..own)
                .rev()
                .find(|&t| policy.tiers()[t].default == TierDefault::Deny)
        }) {
            Some(ShadowReason::BehindTierDefault {
                tier: policy.tiers()[t].name.clone(),
                rules: rules(),
            })
        } else {
            Some(ShadowReason::CoveredBy(rules()))
        };
        if let Some(reason) = reason {
            shadowed.push(Shadowed {
                index,
                id: rule.id,
                tier: policy.tier_name_of(index).to_string(),
                reason,
            });
        }
        rule_stats.push(RuleStats {
            index,
            id: rule.id,
            name: rule.name.clone(),
            candidates: tally.candidates,
            v4: n4[index],
            v6: n6[index],
        });
    }
    let stats = CompileStats {
        v4: v4.len(),
        v6: v6.len(),
        monitored_default_v4: md4,
        monitored_default_v6: md6,
        rules: rule_stats,
    };
    Ok(Compiled {
        v4,
        v6,
        default_action: policy.settings().default_action,
        rules: policy
            .rules()
            .iter()
            .enumerate()
            .map(|(index, r)| RuleInfo {
                id: r.id,
                action: r.action,
                mode: r.mode,
                log: r.log,
                tier: policy.tier_of(index),
            })
            .collect(),
        tiers: policy.tiers().iter().map(|t| t.name.clone()).collect(),
        stats,
        shadowed,
    })
}

impl Policy {
    /// The flat rules for the classifier. See the [module docs](crate::compile) for the expansion.
    pub fn compile(&self) -> Compiled {
        compile(self, usize::MAX).expect("no limit, no error")
    }

    /// Like [`Policy::compile`], but fails as soon as more than `max_flat_rules` flat rules (both families
    /// together) would be emitted, so a policy that blows up cannot exhaust memory or the classifier.
    pub fn compile_limited(&self, max_flat_rules: usize) -> Result<Compiled, CompileError> {
        compile(self, max_flat_rules)
    }

    /// Rules that can never be the first match, because earlier rules cover everything they match, or because
    /// they match nothing. Conservative: a rule is reported only when that is certain (each of its flat rules is
    /// covered by one earlier flat rule); a rule covered only by a combination finer than that is not reported.
    pub fn shadowed_rules(&self) -> Vec<Shadowed> {
        self.compile().shadowed
    }
}
