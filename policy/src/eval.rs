//! The reference evaluation: a plain linear scan over the rules, selectors evaluated directly. It is the oracle
//! the compiled classifier is tested against, so it favours being obviously right over being fast.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{
    proto, Action, Mode, PortRange, Segment, Selector, Service, TierDefault, ANY_SERVICE,
};
use crate::policy::Policy;
use crate::validate::labels_match;

/// What the classifier sees of a packet.
///
/// For ICMP (protocol 1) and ICMPv6 (58), `sport` carries the ICMP type and `dport` the code, so services can
/// match them with the same port fields as TCP and UDP. Protocols without ports carry 0 in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The 802.1Q VLAN id, `None` when untagged.
    pub vlan: Option<u16>,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl Flow {
    pub fn new(
        src: IpAddr,
        dst: IpAddr,
        vlan: Option<u16>,
        proto: u8,
        sport: u16,
        dport: u16,
    ) -> Flow {
        Flow {
            src,
            dst,
            vlan,
            proto,
            sport,
            dport,
        }
    }

    pub fn tcp(src: IpAddr, dst: IpAddr, vlan: Option<u16>, sport: u16, dport: u16) -> Flow {
        Flow::new(src, dst, vlan, proto::TCP, sport, dport)
    }

    pub fn udp(src: IpAddr, dst: IpAddr, vlan: Option<u16>, sport: u16, dport: u16) -> Flow {
        Flow::new(src, dst, vlan, proto::UDP, sport, dport)
    }

    /// An ICMP (`v6 == false`) or ICMPv6 flow: the type goes in `sport`, the code in `dport`.
    pub fn icmp(src: IpAddr, dst: IpAddr, vlan: Option<u16>, v6: bool, ty: u8, code: u8) -> Flow {
        let proto = if v6 { proto::ICMPV6 } else { proto::ICMP };
        Flow::new(src, dst, vlan, proto, ty.into(), code.into())
    }

    /// A flow of a protocol without ports (GRE, ESP, ...).
    pub fn other(src: IpAddr, dst: IpAddr, vlan: Option<u16>, proto: u8) -> Flow {
        Flow::new(src, dst, vlan, proto, 0, 0)
    }

    /// Whether src and dst are of the same family, as in every real packet.
    pub fn same_family(&self) -> bool {
        self.src.is_ipv4() == self.dst.is_ipv4()
    }
}

/// The verdict on a flow, and which part of the policy gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The rule at `index` (position in the document; `id` is its stable identity) matched.
    Rule {
        index: usize,
        id: u32,
        action: Action,
        mode: Mode,
    },
    /// No rule decided. `monitored`: the action is deny or reject, but src or dst is in a monitor-mode
    /// segment, so the packet passes and counts as would-deny.
    Default { action: Action, monitored: bool },
    /// No rule of the tier at `tier` (index in [`Policy::tiers`]) decided, and its default is `deny`.
    /// `monitored` as for [`Decision::Default`].
    TierDefault { tier: usize, monitored: bool },
}

impl Decision {
    /// Whether the packet goes through: an allow, or a deny/reject that is only monitored.
    pub fn passes(&self) -> bool {
        match *self {
            Decision::Rule { action, mode, .. } => action == Action::Allow || mode == Mode::Monitor,
            Decision::Default { action, monitored } => action == Action::Allow || monitored,
            Decision::TierDefault { monitored, .. } => monitored,
        }
    }

    /// Whether the packet passes only because of monitor mode (enforcing would have dropped it).
    pub fn would_deny(&self) -> bool {
        match *self {
            Decision::Rule { action, mode, .. } => action != Action::Allow && mode == Mode::Monitor,
            Decision::Default { action, monitored } => action != Action::Allow && monitored,
            Decision::TierDefault { monitored, .. } => monitored,
        }
    }

    /// The action as written (before monitor mode is taken into account).
    pub fn action(&self) -> Action {
        match *self {
            Decision::Rule { action, .. } | Decision::Default { action, .. } => action,
            Decision::TierDefault { .. } => Action::Deny,
        }
    }
}

/// Whether `net` contains `addr`; a net of the other family never does.
pub(crate) fn net_contains(net: &IpNet, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpNet::V4(net), IpAddr::V4(a)) => net.contains(&a),
        (IpNet::V6(net), IpAddr::V6(a)) => net.contains(&a),
        _ => false,
    }
}

impl Segment {
    /// Membership: one of the prefixes contains `addr` and, if the segment lists VLANs, the frame carries one
    /// of them (untagged frames are never in a segment that lists VLANs).
    pub fn contains(&self, addr: IpAddr, vlan: Option<u16>) -> bool {
        let vlan_ok = match &self.vlans {
            None => true,
            Some(list) => vlan.is_some_and(|v| list.contains(&v)),
        };
        vlan_ok && self.prefixes.iter().any(|p| net_contains(p, addr))
    }
}

/// Whether `port` is in one of the ranges; an absent list means every port.
fn in_ranges(list: &Option<Vec<PortRange>>, port: u16) -> bool {
    list.as_ref()
        .is_none_or(|ranges| ranges.iter().any(|r| r.contains(port)))
}

impl Service {
    /// Whether a flow is of this service: same protocol (any, for `"any"`), dport in `ports`, sport in
    /// `source_ports`, ICMP type (`sport`) and code (`dport`) equal; an absent constraint matches everything.
    pub fn matches(&self, flow: &Flow) -> bool {
        let Some(p) = self.protocol.number() else {
            return true;
        };
        flow.proto == p
            && in_ranges(&self.ports, flow.dport)
            && in_ranges(&self.source_ports, flow.sport)
            && self.icmp_type.is_none_or(|t| flow.sport == u16::from(t))
            && self.icmp_code.is_none_or(|c| flow.dport == u16::from(c))
    }
}

impl Policy {
    /// Every segment `addr` (seen with this VLAN tag) is in, in document order.
    pub fn segments_of(&self, addr: IpAddr, vlan: Option<u16>) -> Vec<&Segment> {
        self.segments()
            .iter()
            .filter(|s| s.contains(addr, vlan))
            .collect()
    }

    /// Whether a rule side selects `addr` (with the flow's VLAN tag).
    pub fn selector_matches(&self, sel: &Selector, addr: IpAddr, vlan: Option<u16>) -> bool {
        match sel {
            Selector::Any => true,
            Selector::Segment(name) => self.segment(name).is_some_and(|s| s.contains(addr, vlan)),
            Selector::Labels(wanted) => self
                .segments()
                .iter()
                .any(|s| s.contains(addr, vlan) && labels_match(wanted, &s.labels)),
            Selector::Prefix(net) => net_contains(net, addr),
        }
    }

    /// Whether a rule's service (a name or the built-in `"any"`) matches the flow.
    pub fn service_matches(&self, service: &str, flow: &Flow) -> bool {
        service == ANY_SERVICE || self.service(service).is_some_and(|s| s.matches(flow))
    }

    /// Whether a rule matches the flow (whatever its action).
    pub fn rule_matches(&self, rule: &crate::model::Rule, flow: &Flow) -> bool {
        self.selector_matches(&rule.from, flow.src, flow.vlan)
            && self.selector_matches(&rule.to, flow.dst, flow.vlan)
            && self.service_matches(&rule.service, flow)
    }

    /// Whether src or dst is in a monitor-mode segment (a deny by default is then only monitored).
    fn in_monitor_segment(&self, flow: &Flow) -> bool {
        self.segments().iter().any(|s| {
            s.mode == Mode::Monitor
                && (s.contains(flow.src, flow.vlan) || s.contains(flow.dst, flow.vlan))
        })
    }

    /// The reference decision for a flow: see the crate documentation for the exact semantics. Tier by tier,
    /// the first matching rule with a decisive action decides; a matching `pass` rule ends its tier's scan; a
    /// tier's `deny` default decides what its rules did not; the policy's default applies at the end.
    pub fn evaluate(&self, flow: &Flow) -> Decision {
        let default = self.settings().default_action;
        if !flow.same_family() {
            return Decision::Default {
                action: default,
                monitored: false,
            };
        }
        'tiers: for (tier, view) in self.tiers().iter().enumerate() {
            for index in view.rules.clone() {
                let rule = &self.rules()[index];
                if !self.rule_matches(rule, flow) {
                    continue;
                }
                if rule.action == Action::Pass {
                    continue 'tiers;
                }
                return Decision::Rule {
                    index,
                    id: rule.id,
                    action: rule.action,
                    mode: rule.mode,
                };
            }
            if view.default == TierDefault::Deny {
                return Decision::TierDefault {
                    tier,
                    monitored: self.in_monitor_segment(flow),
                };
            }
        }
        Decision::Default {
            action: default,
            monitored: default != Action::Allow && self.in_monitor_segment(flow),
        }
    }

    /// The name of the tier that gave a decision: the deciding rule's tier, or the tier whose default denied;
    /// `None` for the policy's default.
    pub fn decision_tier(&self, decision: &Decision) -> Option<&str> {
        match *decision {
            Decision::Rule { index, .. } => Some(self.tier_name_of(index)),
            Decision::TierDefault { tier, .. } => self.tiers().get(tier).map(|t| t.name.as_str()),
            Decision::Default { .. } => None,
        }
    }
}
