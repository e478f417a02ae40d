//! The `policy` workload: conversations drawn from a Bulkhead policy, each
//! labelled with the verdict the policy's reference evaluation
//! ([`policy::Policy::evaluate`]) gives its originator's packets.
//!
//! For every rule, [`PolicyTrafficConfig::per_case`] flows of each case:
//!
//! - **inside**: source in the rule's `from`, destination in its `to`
//!   (VLAN ids from the segments when they list some), protocol and ports of
//!   its service;
//! - **service outside**: the same, but a destination port outside the
//!   service's ports, another ICMP type, or another protocol;
//! - **source outside** / **destination outside**: one address outside the
//!   selector (taken from another segment, else from 198.18.0.0/15 or
//!   2001:db8::/32, ranges no real network uses);
//! - **VLAN outside**: untagged, or a VLAN id no segment of the rule lists.
//!
//! and for the default, flows between random segment members and from
//! outsiders, with random services. A case that cannot exist (an "outside"
//! of `any`) is skipped. The label is always the reference evaluation of
//! the flow actually generated — an inside flow shadowed by an earlier rule
//! is labelled with that rule — so the sidecar is right by construction
//! and the cases only steer which decisions get exercised.
//!
//! A flow the gateway should drop has only its originator's packets in the
//! pcap (the responder never sees the request, so it never answers); a
//! passing flow has both directions.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use policy::{Decision, Policy, Protocol, Selector, Service};

use crate::conversation::{
    check_frame_sizes, write_interleaved, Conversation, Kind, Teardown, Written, UDP_PORTS,
};
use crate::error::{Error, Result};
use crate::flows::{is_source_port, DST_PORTS, SRC_PORTS};
use crate::frame::FCS_LEN;
use crate::prefix::Prefix;
use crate::rng::SplitMix64;
use crate::verdicts::{self, Expect, Verdict};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTrafficConfig {
    /// Flows per rule and case (`--flows-per-case`).
    pub per_case: u32,
    /// Data packets per conversation (`--packets`).
    pub packets: u32,
    /// Frame sizes on the wire, FCS included (`--frame-size`).
    pub frame_sizes: Vec<usize>,
    /// RNG seed (`--seed`).
    pub seed: u64,
}

/// One generated flow and its reference decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// The conversation.
    pub conv: Conversation,
    /// `Policy::evaluate` of its originator's packets.
    pub decision: Decision,
    /// Which case produced it, e.g. `rule 10 inside`, `default`.
    pub case: String,
}

/// Addresses selected by one side of a rule: prefixes, each with the VLAN
/// ids its segment requires (`None`: any tag or none).
type Members = Vec<(IpNet, Option<Vec<u16>>)>;

/// Benchmark-only ranges outsiders are drawn from (RFC 2544, RFC 3849).
fn outsider_nets() -> [IpNet; 2] {
    [
        "198.18.0.0/15".parse().expect("valid"),
        "2001:db8::/32".parse().expect("valid"),
    ]
}

fn members(policy: &Policy, sel: &Selector) -> Members {
    let of_segment = |s: &policy::Segment| -> Members {
        s.prefixes.iter().map(|p| (*p, s.vlans.clone())).collect()
    };
    match sel {
        Selector::Any => {
            let mut all: Members = policy
                .segments()
                .iter()
                .flat_map(|s| s.prefixes.iter().map(|p| (*p, None)))
                .collect();
            all.extend(outsider_nets().into_iter().map(|n| (n, None)));
            all
        }
        Selector::Segment(name) => policy.segment(name).map(of_segment).unwrap_or_default(),
        Selector::Labels(wanted) => policy
            .segments()
            .iter()
            .filter(|s| wanted.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .flat_map(of_segment)
            .collect(),
        Selector::Prefix(net) => vec![(*net, None)],
    }
}

fn random_in(net: &IpNet, rng: &mut SplitMix64) -> IpAddr {
    Prefix::new_truncating(net.network(), net.prefix_len())
        .expect("an IpNet's length fits its family")
        .random_host(rng)
}

/// Family a service forces: ICMP is IPv4, ICMPv6 is IPv6.
fn service_family(svc: Option<&Service>) -> Option<bool> {
    match svc.map(|s| s.protocol) {
        Some(Protocol::Icmp) => Some(false),
        Some(Protocol::Icmpv6) => Some(true),
        Some(Protocol::Number(1)) => Some(false),
        Some(Protocol::Number(58)) => Some(true),
        _ => None,
    }
}

fn ephemeral(rng: &mut SplitMix64) -> u16 {
    loop {
        let p = rng.range_inclusive(u64::from(*SRC_PORTS.start()), u64::from(*SRC_PORTS.end()));
        if is_source_port(p as u16) {
            return p as u16;
        }
    }
}

fn port_in(ranges: &Option<Vec<policy::PortRange>>, rng: &mut SplitMix64, dflt: u16) -> u16 {
    match ranges.as_deref() {
        Some([_, ..]) => {
            let r = rng.choose(ranges.as_deref().unwrap_or_default());
            rng.range_inclusive(u64::from(r.lo), u64::from(r.hi)) as u16
        }
        _ => dflt,
    }
}

/// `(kind, sport, dport)` matching the service (`None`: the built-in any).
fn inside_service(svc: Option<&Service>, rng: &mut SplitMix64, v6: bool) -> (Kind, u16, u16) {
    let Some(s) = svc else {
        return (Kind::Tcp, ephemeral(rng), *rng.choose(&DST_PORTS));
    };
    let proto = s.protocol.number().unwrap_or(6);
    match proto {
        6 | 17 => {
            let dflt = if proto == 6 {
                *rng.choose(&DST_PORTS)
            } else {
                *rng.choose(&UDP_PORTS)
            };
            let dport = port_in(&s.ports, rng, dflt);
            let sp = ephemeral(rng);
            let sport = port_in(&s.source_ports, rng, sp);
            let kind = if proto == 6 { Kind::Tcp } else { Kind::Udp };
            (kind, sport, dport)
        }
        1 | 58 => {
            let echo = if v6 { 128 } else { 8 };
            let ty = s.icmp_type.unwrap_or(echo);
            let code = s.icmp_code.unwrap_or(0);
            if ty == echo && code == 0 {
                (
                    Kind::Echo {
                        ident: rng.next_u32() as u16,
                    },
                    0,
                    0,
                )
            } else {
                (Kind::IcmpMessage { ty, code }, 0, 0)
            }
        }
        p => (Kind::Raw { proto: p }, 0, 0),
    }
}

/// Something the service does not match, or `None` if it matches all.
fn outside_service(
    svc: Option<&Service>,
    rng: &mut SplitMix64,
    v6: bool,
) -> Option<(Kind, u16, u16)> {
    let s = svc?;
    let proto = s.protocol.number()?;
    match proto {
        6 | 17 if s.ports.is_some() => {
            let ranges = s.ports.as_deref().unwrap_or_default();
            let dport = (0..256)
                .map(|_| rng.range_inclusive(1, 65535) as u16)
                .find(|p| !ranges.iter().any(|r| r.contains(*p)))?;
            let kind = if proto == 6 { Kind::Tcp } else { Kind::Udp };
            Some((kind, ephemeral(rng), dport))
        }
        1 | 58 if s.icmp_type.is_some() => {
            let echo = if v6 { 128 } else { 8 };
            if s.icmp_type == Some(echo) {
                // Timestamp request / node information query.
                let other = if v6 { 139 } else { 13 };
                Some((Kind::IcmpMessage { ty: other, code: 0 }, 0, 0))
            } else {
                Some((
                    Kind::Echo {
                        ident: rng.next_u32() as u16,
                    },
                    0,
                    0,
                ))
            }
        }
        // Same ports, other protocol.
        6 => Some((Kind::Udp, ephemeral(rng), *rng.choose(&UDP_PORTS))),
        _ => Some((Kind::Tcp, ephemeral(rng), *rng.choose(&DST_PORTS))),
    }
}

/// A VLAN id satisfying both sides' requirements when possible.
fn vlan_for(a: &Option<Vec<u16>>, b: &Option<Vec<u16>>, rng: &mut SplitMix64) -> Option<u16> {
    match (a.as_deref(), b.as_deref()) {
        (Some(x), Some(y)) => {
            let both: Vec<u16> = x.iter().copied().filter(|v| y.contains(v)).collect();
            let pick = if both.is_empty() { x } else { &both[..] };
            (!pick.is_empty()).then(|| *rng.choose(pick))
        }
        (Some(x), None) | (None, Some(x)) => (!x.is_empty()).then(|| *rng.choose(x)),
        (None, None) => None,
    }
}

/// A drawn flow: source, destination, VLAN, and `(kind, sport, dport)`.
type Drawn = (IpAddr, IpAddr, Option<u16>, (Kind, u16, u16));

/// Which dimension a case moves out of the rule.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Inside,
    ServiceOutside,
    SrcOutside,
    DstOutside,
    VlanOutside,
}

impl Case {
    const ALL: [Case; 5] = [
        Case::Inside,
        Case::ServiceOutside,
        Case::SrcOutside,
        Case::DstOutside,
        Case::VlanOutside,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Inside => "inside",
            Case::ServiceOutside => "service outside",
            Case::SrcOutside => "source outside",
            Case::DstOutside => "destination outside",
            Case::VlanOutside => "VLAN outside",
        }
    }
}

/// An address of family `v6` that `sel` does not select with `vlan`.
fn outside_addr(
    policy: &Policy,
    sel: &Selector,
    v6: bool,
    vlan: Option<u16>,
    rng: &mut SplitMix64,
) -> Option<IpAddr> {
    let mut pool: Vec<IpNet> = policy
        .segments()
        .iter()
        .flat_map(|s| s.prefixes.iter().copied())
        .chain(outsider_nets())
        .filter(|n| matches!(n, IpNet::V6(_)) == v6)
        .collect();
    pool.dedup();
    (0..64)
        .map(|_| {
            let net = *rng.choose(&pool);
            random_in(&net, rng)
        })
        .find(|a| !policy.selector_matches(sel, *a, vlan))
        .or_else(|| {
            // The outsider range, if the pool's segments are all selected.
            let net = outsider_nets()[usize::from(v6)];
            (0..16)
                .map(|_| random_in(&net, rng))
                .find(|a| !policy.selector_matches(sel, *a, vlan))
        })
}

/// One flow of `case` for the rule at `index`, or `None` if the case
/// cannot exist for it (or no address fits).
fn draw_case(policy: &Policy, index: usize, case: Case, rng: &mut SplitMix64) -> Option<Drawn> {
    let rule = &policy.rules()[index];
    let svc = policy.service(&rule.service);
    let from = members(policy, &rule.from);
    let to = members(policy, &rule.to);
    let fam = service_family(svc);
    let from_ok: Vec<_> = from
        .iter()
        .filter(|(n, _)| fam.is_none_or(|v6| matches!(n, IpNet::V6(_)) == v6))
        .filter(|(n, _)| {
            to.iter()
                .any(|(m, _)| n.network().is_ipv6() == m.network().is_ipv6())
        })
        .collect();
    if from_ok.is_empty() {
        return None;
    }
    let (fnet, fvl) = *rng.choose(&from_ok);
    let v6 = fnet.network().is_ipv6();
    let to_ok: Vec<_> = to
        .iter()
        .filter(|(m, _)| m.network().is_ipv6() == v6)
        .collect();
    let (tnet, tvl) = *rng.choose(&to_ok);
    let mut src = random_in(fnet, rng);
    let mut dst = random_in(tnet, rng);
    let mut vlan = vlan_for(fvl, tvl, rng);
    let mut service = inside_service(svc, rng, v6);
    match case {
        Case::Inside => {}
        Case::ServiceOutside => service = outside_service(svc, rng, v6)?,
        Case::SrcOutside => {
            if rule.from == Selector::Any {
                return None;
            }
            src = outside_addr(policy, &rule.from, v6, vlan, rng)?;
        }
        Case::DstOutside => {
            if rule.to == Selector::Any {
                return None;
            }
            dst = outside_addr(policy, &rule.to, v6, vlan, rng)?;
        }
        Case::VlanOutside => {
            let listed: Vec<u16> = [fvl, tvl]
                .into_iter()
                .flatten()
                .flatten()
                .copied()
                .collect();
            if listed.is_empty() {
                return None;
            }
            vlan = if rng.below(2) == 0 {
                None
            } else {
                (1..=4094u16)
                    .map(|_| rng.range_inclusive(1, 4094) as u16)
                    .find(|v| !listed.contains(v))
            };
        }
    }
    if src == dst {
        return None;
    }
    Some((src, dst, vlan, service))
}

/// A default-case flow: random members of any segments (or outsiders),
/// a random user service (or plain TCP).
fn draw_default(policy: &Policy, rng: &mut SplitMix64) -> Option<Drawn> {
    let all = members(policy, &Selector::Any);
    let (fnet, _) = rng.choose(&all);
    let v6 = fnet.network().is_ipv6();
    let same: Vec<_> = all
        .iter()
        .filter(|(n, _)| n.network().is_ipv6() == v6)
        .collect();
    let (tnet, _) = rng.choose(&same);
    let (src, dst) = (random_in(fnet, rng), random_in(tnet, rng));
    // Tag as the segments of the endpoints require, if they do.
    let vl = |a: IpAddr| {
        policy
            .segments()
            .iter()
            .find(|s| s.prefixes.iter().any(|p| p.contains(&a)))
            .and_then(|s| s.vlans.clone())
    };
    let vlan = vlan_for(&vl(src), &vl(dst), rng);
    let services: Vec<&Service> = policy
        .services()
        .iter()
        .filter(|s| service_family(Some(s)).is_none_or(|f| f == v6))
        .collect();
    let svc = (!services.is_empty() && rng.below(4) != 0).then(|| *rng.choose(&services));
    let service = inside_service(svc, rng, v6);
    (src != dst).then_some((src, dst, vlan, service))
}

/// Draws every case's flows and labels them.
pub fn generate(policy: &Policy, cfg: &PolicyTrafficConfig) -> Result<Vec<Labelled>> {
    if cfg.per_case == 0 || cfg.per_case > 4096 {
        return Err(Error::arg(
            "--flows-per-case",
            format!("{} is not in 1..=4096", cfg.per_case),
        ));
    }
    if cfg.packets == 0 || cfg.packets > 1024 {
        return Err(Error::arg(
            "--packets",
            format!("{} is not in 1..=1024", cfg.packets),
        ));
    }
    check_frame_sizes(&cfg.frame_sizes)?;
    let mut rng = SplitMix64::new(cfg.seed);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut cases: Vec<(Option<usize>, Option<Case>)> = Vec::new();
    for index in 0..policy.rules().len() {
        for case in Case::ALL {
            cases.push((Some(index), Some(case)));
        }
    }
    cases.push((None, None));
    for (index, case) in cases {
        let mut made = 0;
        // A few extra attempts for duplicates (e.g. /32 segments and ICMP).
        for _ in 0..cfg.per_case * 4 {
            if made == cfg.per_case {
                break;
            }
            let drawn = match (index, case) {
                (Some(i), Some(c)) => draw_case(policy, i, c, &mut rng),
                _ => draw_default(policy, &mut rng),
            };
            let Some((src, dst, vlan, (kind, sport, dport))) = drawn else {
                if index.is_some() {
                    break; // The case cannot exist for this rule.
                }
                continue;
            };
            let conv = Conversation {
                kind,
                src,
                dst,
                sport,
                dport,
                vlan,
                isn: (rng.next_u32(), rng.next_u32()),
                ident: (rng.next_u32() as u16, rng.next_u32() as u16),
                data_frames: (0..cfg.packets)
                    .map(|_| rng.choose(&cfg.frame_sizes) - FCS_LEN)
                    .collect(),
                teardown: if rng.below(4) == 0 {
                    Teardown::Rst
                } else {
                    Teardown::Fin
                },
            };
            let flow = conv.policy_flow();
            if !seen.insert(flow) {
                continue;
            }
            made += 1;
            let case = match (index, case) {
                (Some(i), Some(c)) => format!("rule {} {}", policy.rules()[i].id, c.name()),
                _ => "default".to_owned(),
            };
            out.push(Labelled {
                decision: policy.evaluate(&flow),
                conv,
                case,
            });
        }
    }
    Ok(out)
}

/// The `policy` subcommand: generates, writes the pcap and its sidecar.
pub fn write_policy_traffic(
    policy: &Policy,
    cfg: &PolicyTrafficConfig,
    path: &Path,
) -> Result<(Written, Vec<Verdict>)> {
    let flows = generate(policy, cfg)?;
    let convs: Vec<Conversation> = flows.iter().map(|l| l.conv.clone()).collect();
    let (counts, packets) = write_interleaved(&convs, path, |i| flows[i].decision.passes())?;
    let verdicts: Vec<Verdict> = flows
        .iter()
        .zip(&counts)
        .enumerate()
        .map(|(i, (l, n))| {
            let f = l.conv.policy_flow();
            Verdict {
                flow: i as u32,
                proto: f.proto,
                src: f.src,
                sport: f.sport,
                dst: f.dst,
                dport: f.dport,
                vlan: f.vlan,
                expect: Expect::from_passes(l.decision.passes()),
                decision: verdicts::describe(policy, &l.decision),
                rule_id: verdicts::rule_id(&l.decision),
                packets: n.orig,
                reply_packets: n.reply,
            }
        })
        .collect();
    let sidecar = verdicts::sidecar_path(path);
    verdicts::write(&sidecar, &verdicts).map_err(|e| match e {
        verdicts::VerdictsError::Io {
            action,
            path,
            source,
        } => Error::Io {
            action,
            path,
            source,
        },
        other => Error::Io {
            action: "write",
            path: sidecar.clone(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    Ok((
        Written {
            packets,
            flows: convs.len(),
            unit: "flows",
            path: path.to_owned(),
            sidecar: Some(sidecar),
        },
        verdicts,
    ))
}

/// Reads and validates a policy file for `--policy`.
pub fn load_policy(path: &Path) -> Result<Policy> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    Policy::from_json(&text).map_err(|e| Error::arg("--policy", format!("{}: {e}", path.display())))
}
