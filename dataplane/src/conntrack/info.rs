//! Plain, serializable descriptions of flows for listings and flow logs (control path).

use std::net::IpAddr;

use serde::Serialize;

use super::key::Dir;
use super::table::{Entry, FlowId};

/// One flow as shown to operators: originator first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}
