//! IPFIX export (RFC 7011) of flow events over UDP: one template per address family, sent when the socket opens
//! and again every `template_interval_s`; data records packed into messages no larger than `max_message_bytes`.
//!
//! Each flow event is one data record whose `firewallEvent` (IE 233) says what it is, as NSX exports it:
//! 1 created, 3 denied, 2 deleted (closed). Counters are deltas whose sum over a flow's records is the flow's
//! total: a created record counts 0 (its first packet is counted when the flow closes), a deleted record counts
//! the whole flow, a denied record the one packet refused. The reply direction travels in RFC 5103 reverse
//! elements (private enterprise 29305).
//!
//! Enterprise elements use private enterprise number [`PEN`] 32473, which RFC 5612 reserves for documentation:
//! a placeholder until Bulkhead registers its own number with IANA.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::flow::{flow_end_reason, tcp_control_bits};
use super::{connected_udp, Counters, DropReason, ExportedFlow, IpfixConfig, Item, Link};
use protocol::EventKind;

/// Bulkhead's private enterprise number (placeholder: RFC 5612's documentation number).
pub const PEN: u32 = 32473;
/// RFC 5103's reverse-direction enterprise number.
pub const REVERSE_PEN: u32 = 29305;

pub const TEMPLATE_V4: u16 = 256;
pub const TEMPLATE_V6: u16 = 257;
const TEMPLATE_SET: u16 = 2;
const HEADER_LEN: usize = 16;
const SET_HEADER_LEN: usize = 4;
/// RFC 7011 variable-length marker.
const VARIABLE: u16 = 65535;
/// Longest string element sent (segment lists are cut at a character boundary).
const MAX_STRING: usize = 200;

/// Bulkhead's enterprise elements.
pub mod enterprise {
    pub const RULE_ID: u16 = 1;
    pub const POLICY_VERSION: u16 = 2;
    pub const SOURCE_SEGMENTS: u16 = 3;
    pub const DESTINATION_SEGMENTS: u16 = 4;
    pub const COMMUNITY_ID: u16 = 5;
    pub const CONN_STATE: u16 = 6;
}

/// One template field: element id, length, enterprise number (0: IANA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub id: u16,
    pub len: u16,
    pub pen: u32,
}

const fn iana(id: u16, len: u16) -> Field {
    Field { id, len, pen: 0 }
}
const fn reverse(id: u16, len: u16) -> Field {
    Field {
        id,
        len,
        pen: REVERSE_PEN,
    }
}
const fn ours(id: u16, len: u16) -> Field {
    Field { id, len, pen: PEN }
}

/// The fields of a template after the two addresses (same for both families), in record order.
const COMMON: [Field; 19] = [
    iana(7, 2),   // sourceTransportPort
    iana(11, 2),  // destinationTransportPort
    iana(4, 1),   // protocolIdentifier
    iana(58, 2),  // vlanId
    iana(152, 8), // flowStartMilliseconds
    iana(153, 8), // flowEndMilliseconds
    iana(2, 8),   // packetDeltaCount
    iana(1, 8),   // octetDeltaCount
    reverse(2, 8),
    reverse(1, 8),
    iana(6, 2),   // tcpControlBits
    iana(136, 1), // flowEndReason
    iana(233, 1), // firewallEvent
    ours(enterprise::RULE_ID, 4),
    ours(enterprise::POLICY_VERSION, 4),
    ours(enterprise::SOURCE_SEGMENTS, VARIABLE),
    ours(enterprise::DESTINATION_SEGMENTS, VARIABLE),
    ours(enterprise::COMMUNITY_ID, VARIABLE),
    ours(enterprise::CONN_STATE, VARIABLE),
];

/// The template of a family: its id and fields.
pub fn template(v6: bool) -> (u16, Vec<Field>) {
    let addrs = if v6 {
        [iana(27, 16), iana(28, 16)] // sourceIPv6Address, destinationIPv6Address
    } else {
        [iana(8, 4), iana(12, 4)] // sourceIPv4Address, destinationIPv4Address
    };
    let id = if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 };
    (id, addrs.into_iter().chain(COMMON).collect())
}

/// The template set announcing both templates.
pub fn template_set() -> Vec<u8> {
    let mut set = Vec::new();
    set.extend_from_slice(&TEMPLATE_SET.to_be_bytes());
    set.extend_from_slice(&[0, 0]);
    for v6 in [false, true] {
        let (id, fields) = template(v6);
        set.extend_from_slice(&id.to_be_bytes());
        set.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        for f in fields {
            let id = if f.pen == 0 { f.id } else { f.id | 0x8000 };
            set.extend_from_slice(&id.to_be_bytes());
            set.extend_from_slice(&f.len.to_be_bytes());
            if f.pen != 0 {
                set.extend_from_slice(&f.pen.to_be_bytes());
            }
        }
    }
    let len = set.len() as u16;
    set[2..4].copy_from_slice(&len.to_be_bytes());
    set
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// The transport ports of a record. ICMP and ICMPv6 carry, as NetFlow collectors (nfdump among them) read
/// it, source port 0 and destination port `type * 256 + code`.
fn ports(e: &protocol::FlowEvent) -> (u16, u16) {
    match e.icmp_type_code() {
        Some((ty, code)) => (0, (u16::from(ty) << 8) | u16::from(code)),
        None => (e.sport, e.dport),
    }
}

/// A flow's data record for its family's template: (template id, bytes).
pub fn record(f: &ExportedFlow) -> (u16, Vec<u8>) {
    let e = &f.event;
    let mut r = Vec::with_capacity(160);
    let v6 = match (e.src, e.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            r.extend_from_slice(&s.octets());
            r.extend_from_slice(&d.octets());
            false
        }
        (s, d) => {
            for a in [s, d] {
                let v6 = match a {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                r.extend_from_slice(&v6.octets());
            }
            true
        }
    };
    let (packets, bytes, firewall_event) = match e.kind {
        EventKind::New => ([0, 0], [0, 0], 1u8),
        EventKind::Denied => (e.packets, e.bytes, 3),
        EventKind::Closed => (e.packets, e.bytes, 2),
    };
    let (sport, dport) = ports(e);
    r.extend_from_slice(&sport.to_be_bytes());
    r.extend_from_slice(&dport.to_be_bytes());
    r.push(e.proto);
    r.extend_from_slice(&e.vlan.to_be_bytes());
    r.extend_from_slice(&unix_ms(f.start_time()).to_be_bytes());
    r.extend_from_slice(&unix_ms(f.end_time()).to_be_bytes());
    r.extend_from_slice(&packets[0].to_be_bytes());
    r.extend_from_slice(&bytes[0].to_be_bytes());
    r.extend_from_slice(&packets[1].to_be_bytes());
    r.extend_from_slice(&bytes[1].to_be_bytes());
    r.extend_from_slice(&tcp_control_bits(e).to_be_bytes());
    r.push(flow_end_reason(e));
    r.push(firewall_event);
    r.extend_from_slice(&e.rule_id.to_be_bytes());
    r.extend_from_slice(&e.policy_version.to_be_bytes());
    put_string(&mut r, &e.src_segments.join(","));
    put_string(&mut r, &e.dst_segments.join(","));
    put_string(&mut r, &f.community_id);
    put_string(&mut r, f.conn_state.unwrap_or(""));
    (if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 }, r)
}

/// Packs records into IPFIX messages for one observation domain, numbering them as RFC 7011 §3.1 says (the
/// sequence number counts data records sent before the message).
#[derive(Debug)]
pub struct Packer {
    domain: u32,
    max: usize,
    sequence: u32,
    /// The message being filled: header reserved, then sets.
    message: Vec<u8>,
    /// Where the open data set starts and its template.
    open_set: Option<(usize, u16)>,
    records: u32,
}

impl Packer {
    pub fn new(domain: u32, max_message_bytes: usize) -> Packer {
        Packer {
            domain,
            max: max_message_bytes,
            sequence: 0,
            message: vec![0; HEADER_LEN],
            open_set: None,
            records: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.message.len() == HEADER_LEN
    }

    /// Adds the template set; returns a finished message first if it would not fit.
    pub fn push_templates(&mut self, now: SystemTime) -> Option<Vec<u8>> {
        let set = template_set();
        let full = (self.message.len() + set.len() > self.max && !self.is_empty())
            .then(|| self.finish(now))
            .flatten();
        self.close_set();
        self.message.extend_from_slice(&set);
        full
    }

    /// Adds one record; returns a finished message first if it would not fit.
    pub fn push_record(
        &mut self,
        template: u16,
        record: &[u8],
        now: SystemTime,
    ) -> Option<Vec<u8>> {
        let needs_set = self.open_set.is_none_or(|(_, t)| t != template);
        let extra = record.len() + if needs_set { SET_HEADER_LEN } else { 0 };
        let mut full = None;
        if self.message.len() + extra > self.max && !self.is_empty() {
            full = self.finish(now);
        }
        if self.open_set.is_none_or(|(_, t)| t != template) {
            self.close_set();
            self.open_set = Some((self.message.len(), template));
            self.message.extend_from_slice(&template.to_be_bytes());
            self.message.extend_from_slice(&[0, 0]);
        }
        self.message.extend_from_slice(record);
        self.records += 1;
        full
    }

    fn close_set(&mut self) {
        if let Some((start, _)) = self.open_set.take() {
            let len = (self.message.len() - start) as u16;
            self.message[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    /// The message filled so far, with its header; `None` if empty.
    pub fn finish(&mut self, now: SystemTime) -> Option<Vec<u8>> {
        if self.is_empty() {
            return None;
        }
        self.close_set();
        let mut m = std::mem::replace(&mut self.message, vec![0; HEADER_LEN]);
        let export_time = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as u32;
        let len = m.len() as u16;
        m[0..2].copy_from_slice(&10u16.to_be_bytes());
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m[4..8].copy_from_slice(&export_time.to_be_bytes());
        m[8..12].copy_from_slice(&self.sequence.to_be_bytes());
        m[12..16].copy_from_slice(&self.domain.to_be_bytes());
        self.sequence = self.sequence.wrapping_add(self.records);
        self.records = 0;
        Some(m)
    }

    /// Records in the message being filled.
    pub fn pending(&self) -> u32 {
        self.records
    }
}

/// The IPFIX task: sends templates at start and on schedule, and every flow event as a record. Records that
/// arrive together share messages; a failed send loses the records of that message (counted) and the socket is
/// opened again, with backoff.
pub async fn run(config: IpfixConfig, mut rx: mpsc::Receiver<Item>, counters: Counters) {
    let interval = Duration::from_secs(config.template_interval_s);
    let mut link = Link::new(
        &config.name,
        &config.address,
        config.pacing(),
        counters.clone(),
    );
    loop {
        let socket = match connected_udp(&config.address).await {
            Ok(s) => s,
            Err(e) => {
                link.down(&e).await;
                continue;
            }
        };
        link.up();
        let mut packer = Packer::new(config.observation_domain, config.max_message_bytes);
        // The first tick is immediate: templates go first, then on schedule.
        let mut templates = tokio::time::interval(interval);
        templates.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let error = 'connected: loop {
            let mut messages = Vec::new();
            tokio::select! {
                _ = templates.tick() => {
                    messages.extend(packer.push_templates(SystemTime::now()).map(|m| (m, 0)));
                }
                item = rx.recv() => {
                    let Some(first) = item else {
                        link.close();
                        return;
                    };
                    let mut batch = vec![first];
                    while batch.len() < 1024 {
                        match rx.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                    let now = SystemTime::now();
                    for item in &batch {
                        let Item::Flow(f) = item else { continue };
                        let (template, rec) = record(f);
                        let before = packer.pending();
                        if let Some(m) = packer.push_record(template, &rec, now) {
                            messages.push((m, before));
                        }
                    }
                }
            }
            let now = SystemTime::now();
            let last = packer.pending();
            messages.extend(packer.finish(now).map(|m| (m, last)));
            for (i, (m, records)) in messages.iter().enumerate() {
                if let Err(e) = socket.send(m).await {
                    let unsent: u32 = messages[i..].iter().map(|(_, n)| n).sum();
                    counters.dropped(DropReason::SendError, u64::from(unsent));
                    break 'connected e;
                }
                counters.sent.inc_by(u64::from(*records));
            }
        };
        link.down(&error).await;
    }
}
