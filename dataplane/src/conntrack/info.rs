//! Plain descriptions of flows for listings and flow logs (control path).

use std::net::IpAddr;

use protocol::FlowFilter;

use super::key::Dir;
use super::table::{Entry, FlowId};

/// One flow as shown to operators: originator first. Built on the worker without allocating; the management
/// thread turns it into the protocol's [`protocol::FlowInfo`] ([`FlowInfo::into_wire`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    /// Slot of the flow in its worker's table.
    pub id: u32,
    /// IP protocol number.
    pub proto: u8,
    /// Outer VLAN id, 0 if untagged.
    pub vlan: u16,
    /// Originator address.
    pub src: IpAddr,
    /// Originator port (echo identifier for ICMP echo, 0 for port-less protocols).
    pub sport: u16,
    /// Responder address.
    pub dst: IpAddr,
    /// Responder port.
    pub dport: u16,
    /// State name (TCP state, or `unreplied` / `replied` / `stream`).
    pub state: &'static str,
    /// TCP: the control flags each side sent, `[original, reply]` ([`TcpState::flags_seen`]); `None` otherwise.
    ///
    /// [`TcpState::flags_seen`]: super::TcpState::flags_seen
    pub tcp_flags: Option<[u8; 2]>,
    /// Packets from the originator.
    pub packets_orig: u64,
    /// IP bytes from the originator.
    pub bytes_orig: u64,
    /// Packets from the responder.
    pub packets_reply: u64,
    /// IP bytes from the responder.
    pub bytes_reply: u64,
    /// Time since creation (second resolution).
    pub age_ms: u64,
    /// Time since the last packet.
    pub idle_ms: u64,
    /// Rule that admitted the flow.
    pub rule_id: u32,
    /// Policy version that admitted it.
    pub policy_version: u32,
    /// The rule asked for logging.
    pub logged: bool,
    /// Admitted in monitor mode.
    pub monitored: bool,
}

impl FlowInfo {
    /// Describes flow `id` as of `now` (milliseconds, the tracker's clock).
    pub fn new(id: FlowId, e: &Entry, now: u64) -> Self {
        let (src, sport) = e.endpoint(Dir::Original);
        let (dst, dport) = e.endpoint(Dir::Reply);
        FlowInfo {
            id: id.get(),
            proto: e.proto(),
            vlan: e.key().vlan(),
            src,
            sport,
            dst,
            dport,
            state: e.state_name(),
            tcp_flags: (e.proto() == 6).then(|| e.tcp().flags_seen()),
            packets_orig: e.packets(Dir::Original),
            bytes_orig: e.bytes(Dir::Original),
            packets_reply: e.packets(Dir::Reply),
            bytes_reply: e.bytes(Dir::Reply),
            age_ms: now.saturating_sub(e.created_ms()),
            idle_ms: e.idle_ms(now),
            rule_id: e.rule_id(),
            policy_version: e.policy_version(),
            logged: e.logged(),
            monitored: e.monitored(),
        }
    }

    /// Whether `filter` selects this flow (every given field must match).
    pub fn matches(&self, filter: &FlowFilter) -> bool {
        filter.addr.is_none_or(|a| a == self.src || a == self.dst)
            && filter.src.is_none_or(|a| a == self.src)
            && filter.dst.is_none_or(|a| a == self.dst)
            && filter
                .port
                .is_none_or(|p| p == self.sport || p == self.dport)
            && filter.proto.is_none_or(|p| p == self.proto)
            && filter.rule_id.is_none_or(|r| r == self.rule_id)
    }

    /// The flow as the control socket lists it.
    pub fn into_wire(self) -> protocol::FlowInfo {
        protocol::FlowInfo {
            id: self.id,
            proto: self.proto,
            vlan: self.vlan,
            src: self.src,
            sport: self.sport,
            dst: self.dst,
            dport: self.dport,
            state: self.state.to_string(),
            packets_orig: self.packets_orig,
            bytes_orig: self.bytes_orig,
            packets_reply: self.packets_reply,
            bytes_reply: self.bytes_reply,
            age_ms: self.age_ms,
            idle_ms: self.idle_ms,
            rule_id: self.rule_id,
            policy_version: self.policy_version,
            logged: self.logged,
            monitored: self.monitored,
        }
    }
}
