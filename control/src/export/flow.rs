//! A flow event as control exports it: the dataplane's event, its flow-log `seq`, and what control derives from
//! it — the Community ID and, for a closed TCP flow, a Zeek-style `conn_state`.
//!
//! `conn_state` follows Zeek's definitions from the control flags each side sent (`tcp_flags`: SYN, FIN, RST;
//! the responder's SYN-ACK). The dataplane records them where its state machine handles them anyway, never on
//! the per-packet path. From an older dataplane that does not report them, it is derived from the final TCP
//! state and the packet counts, which cannot tell who closed or reset (`S2`, `RSTO`).

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

    /// Adds `community_id` and, when known, `conn_state` to the event's JSON object.
    pub fn add_derived_fields(&self, event: &mut serde_json::Map<String, serde_json::Value>) {
        event.insert("community_id".into(), self.community_id.clone().into());
        if let Some(state) = self.conn_state {
            event.insert("conn_state".into(), state.into());
        }
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

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// The Zeek-style state of a closed TCP flow; `None` for other events and protocols.
pub fn conn_state(e: &FlowEvent) -> Option<&'static str> {
    if e.kind != EventKind::Closed || e.proto != TCP {
        return None;
    }
    let Some([orig, resp]) = e.tcp_flags else {
        return conn_state_from_state(e);
    };
    let has = |side: u8, flag: u8| side & flag != 0;
    let answered = has(resp, SYN);
    Some(match (has(orig, RST), has(resp, RST)) {
        _ if !has(orig, SYN) => "OTH",
        (true, _) if !answered => "RSTOS0",
        (_, true) if !answered => "REJ",
        (true, _) => "RSTO",
        (_, true) => "RSTR",
        _ if !answered && e.packets[1] == 0 => "S0",
        _ if !answered => "OTH",
        _ => match (has(orig, FIN), has(resp, FIN)) {
            (true, true) => "SF",
            (true, false) => "S2",
            (false, true) => "S3",
            (false, false) => "S1",
        },
    })
}

/// `conn_state` from the final state and packet counts alone (a dataplane that reports no `tcp_flags`).
fn conn_state_from_state(e: &FlowEvent) -> Option<&'static str> {
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

/// IPFIX `tcpControlBits`: the flags both sides sent together (`tcp_flags`), or, from a dataplane that does
/// not report them, what the TCP state implies; 0 for other protocols and denied packets.
pub fn tcp_control_bits(e: &FlowEvent) -> u16 {
    if e.proto != TCP {
        return 0;
    }
    if let Some([orig, resp]) = e.tcp_flags {
        return u16::from(orig | resp);
    }
    u16::from(match e.tcp_state.as_deref() {
        Some("syn_sent" | "syn_sent2") => SYN,
        Some("syn_recv" | "established") => SYN | ACK,
        Some("fin_wait" | "close_wait" | "last_ack" | "time_wait") => SYN | ACK | FIN,
        Some("close") if e.packets[1] > 0 => SYN | ACK | RST,
        Some("close") => SYN | RST,
        _ => 0,
    })
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
            tcp_flags: None,
            limit: None,
        }
    }

    #[test]
    fn conn_state_from_the_flags_each_side_sent() {
        const SA: u8 = SYN | ACK;
        let cases = [
            ([SYN, 0], [2, 0], "S0"),
            ([SYN, RST | ACK], [1, 1], "REJ"),
            ([SYN | RST, 0], [2, 0], "RSTOS0"),
            ([SYN, SA], [3, 2], "S1"),
            ([SYN | FIN, SA | FIN], [6, 5], "SF"),
            ([SYN | FIN, SA], [5, 4], "S2"),
            ([SYN, SA | FIN], [5, 4], "S3"),
            ([SYN | RST, SA], [5, 4], "RSTO"),
            ([SYN, SA | RST], [5, 4], "RSTR"),
            ([FIN, FIN], [5, 4], "OTH"),
        ];
        for (flags, packets, want) in cases {
            let mut e = closed("close", packets);
            e.tcp_flags = Some(flags);
            assert_eq!(conn_state(&e), Some(want), "{flags:?} {packets:?}");
        }
        let mut e = closed("time_wait", [6, 5]);
        e.tcp_flags = Some([SYN | FIN | 0x08, SA | FIN]);
        assert_eq!(tcp_control_bits(&e), 0x1b);
    }

    #[test]
    fn conn_state_of_each_ending_without_flags() {
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
