//! A policy version in the form workers consult: the flat rules of [`policy::Compiled`] loaded into two
//! `rte_acl` contexts (IPv4, IPv6), the per-rule facts a verdict needs, and the runtime settings.
//!
//! Built on the management thread, published through [`dpdk::rcu::RcuCell`], read by workers between quiescent
//! points; never modified once built, so workers share it without locks.
//!
//! ACL inputs (bytes, big-endian, built per packet by [`flow_input`]):
//!
//! ```text
//! IPv4 (20 B): proto @0 | vlan u32 @4 | src @8  | dst @12      | sport @16 dport @18
//! IPv6 (44 B): proto @0 | vlan u32 @4 | src @8..24 | dst @24..40 | sport @40 dport @42
//! ```
//!
//! `vlan` is the outer VLAN id, 0 for untagged frames. For ICMP/ICMPv6 the port fields carry type and code, as
//! in the policy model. A flat rule's position `i` becomes priority `MAX_PRIORITY - i` (first listed wins) and
//! its target becomes the userdata: `index + 1` for a user rule, [`MONITORED_DEFAULT`] for the monitored
//! default, [`DEFAULT`] for the policy's default reached through a tier's `pass` rule, and two values per tier
//! below [`TIER_DEFAULTS`] for a tier's `deny` default (enforced, then monitored); 0 (no match) is the default
//! action. A tiered policy's pass chains are resolved by [`policy::Policy::compile`], so one classification
//! finds the deciding rule (or default) whatever the number of tiers.

use std::net::IpAddr;

use dpdk::acl::{
    AclBuilder, AclContext, FieldDef, FieldKind, FieldValue, Layout, Rule, MAX_PRIORITY,
};
use dpdk::Eal;
use net::{Parsed, L4};
use policy::{
    Action, FlatRule, Ipv4Net, Ipv6Net, Mode, OnPolicyChange, Policy, RuleRef, TcpStrictness,
};

use crate::conntrack::{Dir, Entry, FlowKey, Side, Strictness, Timeouts};
use crate::segment_index::SegmentIndex;

/// Userdata of the flat rules that stand for the monitored default.
pub const MONITORED_DEFAULT: u32 = u32::MAX;
/// Userdata of the flat rules that stand for the policy's default (reached through a `pass` rule).
pub const DEFAULT: u32 = u32::MAX - 1;
/// Userdata of tier `t`'s deny default: `TIER_DEFAULTS - 2t`, monitored `TIER_DEFAULTS - 2t - 1`.
pub const TIER_DEFAULTS: u32 = u32::MAX - 2;
pub const V4_INPUT: usize = 20;
pub const V6_INPUT: usize = 44;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the policy has {rules} rules; this dataplane is configured for at most {max} (policy.max_rules)")]
    TooManyRules { rules: usize, max: usize },
    #[error(transparent)]
    Compile(#[from] policy::CompileError),
    #[error("building the {family} classifier: {source}")]
    Acl {
        family: &'static str,
        source: dpdk::Error,
    },
}

/// What a worker needs to know about a rule when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMeta {
    pub id: u32,
    pub action: Action,
    pub mode: Mode,
    pub log: bool,
    /// The rule's counter slot (stable for its id across versions; see [`crate::counters::RuleCounters`]).
    pub slot: u32,
    /// The rule's tier (index into [`Ruleset::tiers`]).
    pub tier: u8,
}

/// The verdict for a new flow (or a stateless packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// 0 for the default action.
    pub rule_id: u32,
    pub slot: u32,
    pub action: Action,
    /// A deny or reject that passes anyway (monitor mode): counted as would-deny.
    pub monitored: bool,
    pub log: bool,
    /// The tier of the deciding rule or tier default (index into [`Ruleset::tiers`]); `None` for the
    /// policy's default.
    pub tier: Option<u8>,
}

impl Judgement {
    pub fn passes(&self) -> bool {
        self.action == Action::Allow || self.monitored
    }
}

/// The runtime part of `settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub timeouts: Timeouts,
    pub strictness: Strictness,
    /// Re-judge tracked flows admitted by an older version at their next packet.
    pub reevaluate: bool,
    pub pass_arp: bool,
    pub pass_neighbor_discovery: bool,
    pub drop_other_ethertypes: bool,
    pub flood_limits: policy::FloodLimits,
}

impl Settings {
    fn from_policy(s: &policy::Settings) -> Self {
        Settings {
            timeouts: s.timeouts,
            strictness: match s.tcp_strictness {
                TcpStrictness::Strict => Strictness::Strict,
                TcpStrictness::Loose => Strictness::Loose,
            },
            reevaluate: s.on_policy_change == OnPolicyChange::Reevaluate,
            pass_arp: s.pass_arp,
            pass_neighbor_discovery: s.pass_neighbor_discovery,
            drop_other_ethertypes: s.drop_other_ethertypes,
            flood_limits: s.flood_limits,
        }
    }
}

/// One published policy version.
pub struct Ruleset<'eal> {
    pub version: u32,
    pub settings: Settings,
    v4: AclContext<'eal>,
    v6: AclContext<'eal>,
    rules: Box<[RuleMeta]>,
    /// Per tier, its deny default enforced and monitored (see [`TIER_DEFAULTS`]).
    tier_defaults: Box<[Judgement]>,
    /// Tier names in evaluation order.
    tiers: Box<[String]>,
    /// Rule id → counter slot.
    slots: hashbrown::HashMap<u32, u32>,
    default: Judgement,
    /// Flat rules per family (the compiled rule count, for status and benchmarks).
    pub flat_rules: (usize, usize),
    /// Source address → segment, for the per-segment flood limit.
    pub segments: SegmentIndex,
}

impl std::fmt::Debug for Ruleset<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ruleset")
            .field("version", &self.version)
            .field("flat_rules", &self.flat_rules)
            .finish()
    }
}

fn layout(v6: bool) -> Layout {
    use FieldKind::*;
    let mut defs = vec![
        FieldDef::new(Bitmask, 1, 0, 0, 0),
        FieldDef::new(Range, 4, 1, 1, 4),
    ];
    let words = if v6 { 4 } else { 1 };
    for side in 0..2u8 {
        for w in 0..words {
            let i = 2 + side * words + w;
            defs.push(FieldDef::new(Mask, 4, i, i, 8 + 4 * u32::from(i - 2)));
        }
    }
    let (i, off) = (2 + 2 * words, 8 + 8 * u32::from(words));
    defs.push(FieldDef::new(Range, 2, i, i, off));
    defs.push(FieldDef::new(Range, 2, i + 1, i, off + 2));
    Layout::new(&defs).expect("the ruleset layouts are valid")
}

/// A 128-bit prefix as four 32-bit ACL mask fields.
fn v6_words(net: &Ipv6Net) -> [FieldValue; 4] {
    let bits = u128::from(net.network());
    let len = u32::from(net.prefix_len());
    std::array::from_fn(|w| {
        let word = (bits >> (96 - 32 * w)) as u32;
        let covered = len.saturating_sub(32 * w as u32).min(32);
        FieldValue::prefix(u64::from(word), covered)
    })
}

fn common<N>(r: &FlatRule<N>) -> [FieldValue; 2] {
    let proto = match r.proto {
        Some(p) => FieldValue::bitmask(u64::from(p), 0xff),
        None => FieldValue::bitmask(0, 0),
    };
    let vlan = match r.vlan {
        Some(v) => FieldValue::range(u64::from(v), u64::from(v)),
        None => FieldValue::range(0, u64::from(u32::MAX)),
    };
    [proto, vlan]
}

fn ports<N>(r: &FlatRule<N>) -> [FieldValue; 2] {
    [
        FieldValue::range(u64::from(r.sport.0), u64::from(r.sport.1)),
        FieldValue::range(u64::from(r.dport.0), u64::from(r.dport.1)),
    ]
}

fn userdata(r: RuleRef) -> u32 {
    match r {
        RuleRef::Rule(index) => index as u32 + 1,
        RuleRef::MonitoredDefault => MONITORED_DEFAULT,
        RuleRef::Default => DEFAULT,
        RuleRef::TierDefault(t) => TIER_DEFAULTS - 2 * t as u32,
        RuleRef::MonitoredTierDefault(t) => TIER_DEFAULTS - 2 * t as u32 - 1,
    }
}

fn build_acl<'eal, N>(
    eal: &'eal Eal,
    family: &'static str,
    rules: &[FlatRule<N>],
    fields: impl Fn(&FlatRule<N>) -> Vec<FieldValue>,
) -> Result<AclContext<'eal>, BuildError> {
    let v6 = family == "ipv6";
    let err = |source| BuildError::Acl { family, source };
    let mut b = AclBuilder::new(eal, family, &layout(v6), rules.len() as u32).map_err(err)?;
    for (i, r) in rules.iter().enumerate() {
        let values = fields(r);
        b.add_rule(&Rule {
            priority: MAX_PRIORITY - i as i32,
            userdata: userdata(r.rule),
            category_mask: 1,
            fields: &values,
        })
        .map_err(err)?;
    }
    b.build(1).map_err(err)
}

impl<'eal> Ruleset<'eal> {
    /// Compiles `policy` into classifiers. `slot_of` gives each rule id its counter slot.
    pub fn build(
        eal: &'eal Eal,
        policy: &Policy,
        version: u32,
        max_rules: usize,
        slot_of: impl Fn(u32) -> u32,
    ) -> Result<Self, BuildError> {
        if policy.rules().len() > max_rules {
            return Err(BuildError::TooManyRules {
                rules: policy.rules().len(),
                max: max_rules,
            });
        }
        let compiled = policy.compile_limited(dpdk::acl::MAX_PRIORITY as usize)?;
        let v4 = build_acl(eal, "ipv4", &compiled.v4, |r: &FlatRule<Ipv4Net>| {
            let [p, v] = common(r);
            let [sp, dp] = ports(r);
            let net = |n: &Ipv4Net| {
                FieldValue::prefix(u64::from(u32::from(n.network())), u32::from(n.prefix_len()))
            };
            vec![p, v, net(&r.src), net(&r.dst), sp, dp]
        })?;
        let v6 = build_acl(eal, "ipv6", &compiled.v6, |r: &FlatRule<Ipv6Net>| {
            let mut f = common(r).to_vec();
            f.extend(v6_words(&r.src));
            f.extend(v6_words(&r.dst));
            f.extend(ports(r));
            f
        })?;
        let rules: Box<[RuleMeta]> = compiled
            .rules
            .iter()
            .map(|r| RuleMeta {
                id: r.id,
                action: r.action,
                mode: r.mode,
                log: r.log,
                slot: slot_of(r.id),
                tier: r.tier as u8,
            })
            .collect();
        let mut slots: hashbrown::HashMap<u32, u32> =
            rules.iter().map(|r| (r.id, r.slot)).collect();
        slots.insert(0, 0);
        let default = Judgement {
            rule_id: 0,
            slot: 0,
            action: compiled.default_action,
            monitored: false,
            log: false,
            tier: None,
        };
        let tier_defaults = (0..compiled.tiers.len())
            .flat_map(|t| {
                [false, true].map(|monitored| Judgement {
                    action: Action::Deny,
                    monitored,
                    tier: Some(t as u8),
                    ..default
                })
            })
            .collect();
        Ok(Ruleset {
            version,
            settings: Settings::from_policy(policy.settings()),
            v4,
            v6,
            rules,
            tier_defaults,
            tiers: compiled.tiers.into(),
            slots,
            default,
            flat_rules: (compiled.v4.len(), compiled.v6.len()),
            segments: SegmentIndex::new(policy),
        })
    }

    /// Classifies a batch of inputs of one family (see [`flow_input`]); `out[i]` gets the userdata.
    pub fn classify(&self, v6: bool, inputs: &[&[u8]], out: &mut [u32]) {
        let ctx = if v6 { &self.v6 } else { &self.v4 };
        // Inputs are built by flow_input with the exact layout length, so this cannot fail; if it ever did,
        // "no match" (the default action) is the fail-safe answer.
        if ctx.classify(inputs, &mut out[..inputs.len()]).is_err() {
            out[..inputs.len()].fill(0);
        }
    }

    /// Starts loading the rule a classification result names (its metadata is read once per new flow; with
    /// thousands of rules it is rarely in the cache).
    #[inline]
    pub fn prefetch_rule(&self, userdata: u32) {
        if let Some(r) = (userdata as usize)
            .checked_sub(1)
            .and_then(|i| self.rules.get(i))
        {
            dpdk::prefetch(r);
        }
    }

    /// The verdict a classification result stands for.
    #[inline]
    pub fn judge(&self, userdata: u32) -> Judgement {
        match userdata {
            0 | DEFAULT => self.default,
            MONITORED_DEFAULT => Judgement {
                monitored: self.default.action != Action::Allow,
                ..self.default
            },
            n => match self.rules.get(n as usize - 1) {
                Some(r) => Judgement {
                    rule_id: r.id,
                    slot: r.slot,
                    action: r.action,
                    monitored: r.mode == Mode::Monitor && r.action != Action::Allow,
                    log: r.log,
                    tier: Some(r.tier),
                },
                None => self
                    .tier_defaults
                    .get(TIER_DEFAULTS.wrapping_sub(n) as usize)
                    .copied()
                    .unwrap_or(self.default),
            },
        }
    }

    /// The counter slot of a rule id of this version (0: the default action).
    pub fn slot_of(&self, rule_id: u32) -> Option<u32> {
        self.slots.get(&rule_id).copied()
    }

    /// The rte_acl classification algorithm both address families' contexts run (DPDK picks the best the CPU
    /// and the EAL's SIMD bitwidth allow).
    pub fn classifier(&self) -> dpdk::acl::Alg {
        self.v4.algorithm()
    }

    /// The rules of this version (id, counter slot, ...), in order.
    pub fn rules(&self) -> &[RuleMeta] {
        &self.rules
    }

    /// The tier names of this version, in evaluation order (a v1 policy has one).
    pub fn tiers(&self) -> &[String] {
        &self.tiers
    }

    /// The name of a judgement's tier; `None` for the policy's default.
    pub fn tier_name(&self, j: &Judgement) -> Option<&str> {
        j.tier
            .and_then(|t| self.tiers.get(usize::from(t)))
            .map(String::as_str)
    }
}

/// Writes a classifier input (layout in the module docs); `None` if the addresses are of different families.
#[inline]
fn encode(
    buf: &mut [u8; V6_INPUT],
    proto: u8,
    vlan: u16,
    (src, sport): (IpAddr, u16),
    (dst, dport): (IpAddr, u16),
) -> Option<(bool, &[u8])> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            encode_raw(buf, proto, vlan, (&s.octets(), sport), (&d.octets(), dport))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            encode_raw(buf, proto, vlan, (&s.octets(), sport), (&d.octets(), dport))
        }
        _ => None,
    }
}

/// [`encode`] from the addresses' bytes, both 4 (IPv4) or both 16 (IPv6) long; `None` otherwise.
#[inline]
fn encode_raw<'b>(
    buf: &'b mut [u8; V6_INPUT],
    proto: u8,
    vlan: u16,
    (src, sport): (&[u8], u16),
    (dst, dport): (&[u8], u16),
) -> Option<(bool, &'b [u8])> {
    // Fixed-size copies per family: plain moves, no length-generic copy.
    let (v6, ports) = match (src.len(), dst.len()) {
        (4, 4) => {
            buf[8..12].copy_from_slice(src);
            buf[12..16].copy_from_slice(dst);
            (false, 16)
        }
        (16, 16) => {
            buf[8..24].copy_from_slice(src);
            buf[24..40].copy_from_slice(dst);
            (true, 40)
        }
        _ => return None,
    };
    buf[0] = proto;
    buf[1..4].fill(0);
    buf[4..8].copy_from_slice(&u32::from(vlan).to_be_bytes());
    buf[ports..ports + 2].copy_from_slice(&sport.to_be_bytes());
    buf[ports + 2..ports + 4].copy_from_slice(&dport.to_be_bytes());
    Some((v6, &buf[..ports + 4]))
}

/// The classifier input of a parsed IP packet: its family and the bytes (in `buf`), or `None` for non-IP.
#[inline]
pub fn flow_input<'b>(p: &Parsed, buf: &'b mut [u8; V6_INPUT]) -> Option<(bool, &'b [u8])> {
    let (sport, dport) = match p.l4 {
        L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
        L4::Icmp { ty, code, .. } | L4::Icmpv6 { ty, code, .. } => (u16::from(ty), u16::from(code)),
        L4::None => (0, 0),
    };
    let proto = p.ip_proto()?.0;
    encode(
        buf,
        proto,
        p.vlans[0].unwrap_or(0),
        (p.src_ip()?, sport),
        (p.dst_ip()?, dport),
    )
}

/// The classifier input of a TCP or UDP flow's first packet from its key and the side that sent it: the same
/// bytes as [`flow_input`] of that packet (held equal by a property test), without the packet parsed. `None`
/// for other protocols, whose key does not hold what the classifier reads (ICMP's type and code).
#[inline]
pub fn key_input<'b>(
    key: &FlowKey,
    originator: Side,
    buf: &'b mut [u8; V6_INPUT],
) -> Option<(bool, &'b [u8])> {
    let proto = net::IpProtocol(key.proto());
    if proto != net::IpProtocol::TCP && proto != net::IpProtocol::UDP {
        return None;
    }
    encode_raw(
        buf,
        key.proto(),
        key.vlan(),
        key.raw_endpoint(originator),
        key.raw_endpoint(originator.other()),
    )
}

/// The classifier input of a policy-model flow (explain, tests).
pub fn model_input<'b>(f: &policy::Flow, buf: &'b mut [u8; V6_INPUT]) -> Option<(bool, &'b [u8])> {
    encode(
        buf,
        f.proto,
        f.vlan.unwrap_or(0),
        (f.src, f.sport),
        (f.dst, f.dport),
    )
}

/// The classifier input of a tracked flow's original direction — what the policy judged when the flow was
/// admitted, and what it must judge again after a policy change (never the direction of the packet that
/// happens to trigger the re-check: a reply is not a new connection from the responder). Echo flows are judged
/// as the echo request that opened them.
pub fn entry_input<'b>(e: &Entry, buf: &'b mut [u8; V6_INPUT]) -> (bool, &'b [u8]) {
    let (src, sport) = e.endpoint(Dir::Original);
    let (dst, dport) = e.endpoint(Dir::Reply);
    let (sport, dport) = match e.proto() {
        1 => (u16::from(net::icmpv4::types::ECHO_REQUEST), 0),
        58 => (u16::from(net::icmpv6::types::ECHO_REQUEST), 0),
        _ => (sport, dport),
    };
    let v6 = matches!(src, IpAddr::V6(_));
    // A tracked flow's endpoints share one family (its key says which), so this always encodes.
    let _ = encode(buf, e.proto(), e.key().vlan(), (src, sport), (dst, dport));
    (v6, &buf[..if v6 { V6_INPUT } else { V4_INPUT }])
}

/// The policy-model flow of a parsed IP packet (same field conventions as [`flow_input`]).
pub fn flow_of(p: &Parsed) -> Option<policy::Flow> {
    let (sport, dport) = match p.l4 {
        L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
        L4::Icmp { ty, code, .. } | L4::Icmpv6 { ty, code, .. } => (u16::from(ty), u16::from(code)),
        L4::None => (0, 0),
    };
    Some(policy::Flow {
        src: p.src_ip()?,
        dst: p.dst_ip()?,
        vlan: p.vlans[0],
        proto: p.ip_proto()?.0,
        sport,
        dport,
    })
}
