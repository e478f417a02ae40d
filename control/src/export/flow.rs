//! A flow event as control exports it: the dataplane's event, its flow-log `seq`, and what control derives from
//! it — the Community ID and, for a closed TCP flow, a Zeek-style `conn_state`.
//!
//! **`conn_state` is an approximation.** Zeek derives it from the flags each side sent; the dataplane reports a
//! closed flow's final TCP state and its packet counts each way, not per-direction flags (adding them to the
//! connection entry would take it past its memory budget). So:
//!
//! | final state | conn_state |
//! |---|---|
//! | `syn_sent`, no reply packet | `S0` (attempt, no reply) |
//! | `syn_sent` with reply packets, `syn_sent2` | `OTH` (no handshake the gateway could follow) |
//! | `syn_recv`, `established` | `S1` (established, not terminated: idle timeout, kill, eviction) |
//! | `fin_wait`, `close_wait` | `S2` (one side closed; Zeek would say `S3` when it was the responder) |
//! | `last_ack`, `time_wait` | `SF` (normal establishment and termination) |
//! | `close`, one packet each way | `REJ` (a SYN answered by a reset) |
//! | `close`, no reply packet | `RSTOS0` (the originator reset before any answer) |
//! | `close`, otherwise | `RSTO` (reset after the handshake; Zeek would say `RSTR` when the responder reset) |
//!
//! `SH`, `SHR` and `RSTRH` cannot occur: the dataplane never tracks a flow whose SYN it did not see open it (in
//! strict mode), and drops a FIN before the handshake.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use protocol::{EventKind, FlowEvent};

use super::community_id;

const TCP: u8 = 6;

/// One exported flow event.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedFlow {
    /// The flow log's sequence number of the event.
    pub seq: u64,
    pub event: FlowEvent,
    pub community_id: String,
    /// For a closed TCP flow: its Zeek-style state (see the module docs).
    pub conn_state: Option<&'static str>,
}

impl ExportedFlow {
    pub fn new(seq: u64, event: FlowEvent) -> Arc<ExportedFlow> {
        Arc::new(ExportedFlow {
            seq,
            community_id: community_id::of_event(&event),
            conn_state: conn_state(&event),
            event,
        })
    }

    /// Wall time the event happened (the dataplane's `time`; now, if it cannot be read).
    pub fn end_time(&self) -> SystemTime {
        humantime::parse_rfc3339(&self.event.time).unwrap_or_else(|_| SystemTime::now())
    }

    /// Wall time the flow started: the event's time less the flow's age.
    pub fn start_time(&self) -> SystemTime {
        self.end_time()
            .checked_sub(Duration::from_millis(self.event.duration_ms))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The ICMP or ICMPv6 type and code of an event; `None` for other protocols. Tracked ICMP flows are echo
/// exchanges keyed by identifier (their ports), opened by an echo request (type 8 / 128, code 0); a denied
/// ICMP packet's event carries its own type and code in `sport` and `dport`.
pub fn icmp_type_code(e: &FlowEvent) -> Option<(u8, u8)> {
    const ICMP: u8 = 1;
    const ICMPV6: u8 = 58;
    match (e.proto, e.kind) {
        (ICMP, EventKind::New | EventKind::Closed) => Some((8, 0)),
        (ICMPV6, EventKind::New | EventKind::Closed) => Some((128, 0)),
        (ICMP | ICMPV6, EventKind::Denied) => Some((e.sport as u8, e.dport as u8)),
        _ => None,
    }
}

/// The Zeek-style state of a closed TCP flow; `None` for other events and protocols.
pub fn conn_state(e: &FlowEvent) -> Option<&'static str> {
    if e.kind != EventKind::Closed || e.proto != TCP {
        return None;
    }
    let [orig, reply] = e.packets;
    Some(match e.tcp_state.as_deref()? {
        "syn_sent" if reply == 0 => "S0",
        "syn_sent" | "syn_sent2" => "OTH",
        "syn_recv" | "established" => "S1",
        "fin_wait" | "close_wait" => "S2",
        "last_ack" | "time_wait" => "SF",
        "close" if orig == 1 && reply == 1 => "REJ",
        "close" if reply == 0 => "RSTOS0",
        "close" => "RSTO",
        _ => "OTH",
    })
}

/// TCP control bits (IPFIX `tcpControlBits`) a flow's TCP state implies were seen, both directions together:
/// SYN once a handshake began, ACK once answered, FIN in the closing states, RST when reset. Like
/// `conn_state`, derived from the state at the event, not from the flags of every packet; 0 for other
/// protocols.
pub fn tcp_control_bits(e: &FlowEvent) -> u16 {
    const FIN: u16 = 0x01;
    const SYN: u16 = 0x02;
    const RST: u16 = 0x04;
    const ACK: u16 = 0x10;
    if e.proto != TCP {
        return 0;
    }
    match e.tcp_state.as_deref() {
        Some("syn_sent" | "syn_sent2") => SYN,
        Some("syn_recv" | "established") => SYN | ACK,
        Some("fin_wait" | "close_wait" | "last_ack" | "time_wait") => SYN | ACK | FIN,
        Some("close") if e.packets[1] > 0 => SYN | ACK | RST,
        Some("close") => SYN | RST,
        // A denied packet: its flags are not reported.
        _ => 0,
    }
}

/// IPFIX `flowEndReason` of a closed flow: 3 (end of flow detected) when it ended by FIN or RST, else 1
/// (idle timeout: the dataplane does not tell expiry from a kill or an eviction); 0 for events that end no
/// flow (created, denied).
pub fn flow_end_reason(e: &FlowEvent) -> u8 {
    if e.kind != EventKind::Closed {
        return 0;
    }
    match e.tcp_state.as_deref() {
        Some("last_ack" | "time_wait" | "close") => 3,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Verdict;

    fn closed(state: &str, packets: [u64; 2]) -> FlowEvent {
        FlowEvent {
            kind: EventKind::Closed,
            time_ms: 5000,
            time: "2026-12-07T11:40:17.431Z".into(),
            worker: 0,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            sport: 40000,
            dport: 80,
            proto: TCP,
            vlan: 0,
            src_segments: vec![],
            dst_segments: vec![],
            verdict: Verdict::Allow,
            rule_id: 1,
            policy_version: 1,
            packets,
            bytes: [100, 100],
            duration_ms: 1500,
            tcp_state: Some(state.into()),
        }
    }

    #[test]
    fn conn_state_of_each_ending() {
        let cases = [
            ("syn_sent", [3, 0], "S0"),
            ("syn_sent", [1, 1], "OTH"),
            ("established", [5, 4], "S1"),
            ("fin_wait", [5, 4], "S2"),
            ("time_wait", [6, 5], "SF"),
            ("last_ack", [6, 4], "SF"),
            ("close", [1, 1], "REJ"),
            ("close", [2, 0], "RSTOS0"),
            ("close", [5, 4], "RSTO"),
        ];
        for (state, packets, want) in cases {
            assert_eq!(
                conn_state(&closed(state, packets)),
                Some(want),
                "{state} {packets:?}"
            );
        }
        let mut udp = closed("established", [1, 1]);
        udp.proto = 17;
        udp.tcp_state = None;
        assert_eq!(conn_state(&udp), None);
        let mut new = closed("syn_sent", [1, 0]);
        new.kind = EventKind::New;
        assert_eq!(
            conn_state(&new),
            None,
            "only closed flows have a conn_state"
        );
    }

    #[test]
    fn times_and_end_reasons() {
        let f = ExportedFlow::new(7, closed("time_wait", [6, 5]));
        assert_eq!(
            f.end_time().duration_since(f.start_time()).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(flow_end_reason(&f.event), 3);
        assert_eq!(flow_end_reason(&closed("established", [1, 1])), 1);
        assert_eq!(tcp_control_bits(&f.event), 0x13);
        assert_eq!(f.community_id, community_id::of_event(&f.event));
    }
}
