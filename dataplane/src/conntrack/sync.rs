//! The wire form of a connection's state, for the HA pair's connection-state sync: the active member sends
//! each flow's state (new, changed, refreshed) or its end to the standby, which imports it into its own table
//! so it can take over strict TCP tracking where the active left off.
//!
//! One record is [`RECORD_LEN`] bytes, big-endian, fixed size (a batch is a whole number of records, and a
//! record is read without allocating):
//!
//! ```text
//!  0  kind            1 = state, 2 = closed
//!  1  proto           IP protocol number
//!  2  vlan            u16: VLAN id, bit 15 set for IPv6 (the key's own encoding)
//!  4  addrs           2 × 16 bytes: the key's endpoints (IPv4 as IPv4-mapped)
//! 36  ports           2 × u16
//! 40  flags           bit 0 originator is the second endpoint, 1 reply seen, 2 logged, 3 monitored
//! 41  tcp state       index in TcpConnState::ALL
//! 42  tcp flags       the tracker's per-connection flags
//! 43  window flags    2 × u8, original then reply
//! 45  reserved        3 bytes, zero
//! 48  tcp windows     end, maxend, maxwin, maxack: each 2 × u32 (original, reply)
//! 80  rule_id         u32
//! 84  policy_version  u32
//! 88  idle_ms         u32: time since the flow's last packet when the record was made
//! 92  age_s           u32: time since the flow was created
//! 96  counters        packets original, packets reply, bytes original, bytes reply: u64 each
//! ```
//!
//! A closed record carries the key only (the rest is zero). Times are relative, so the two members' clocks
//! need not agree. No crate covers this: it is the layout of this table's entries.

use super::key::{FlowKey, Side};
use super::table::FlowId;
use super::tcp::{TcpConnState, TcpState};

/// Bytes of one record.
pub const RECORD_LEN: usize = 128;

const KIND_STATE: u8 = 1;
const KIND_CLOSED: u8 = 2;

const F_ORIG_SECOND: u8 = 0x01;
const F_SEEN_REPLY: u8 = 0x02;
const F_LOGGED: u8 = 0x04;
const F_MONITORED: u8 = 0x08;
const KNOWN_FLAGS: u8 = F_ORIG_SECOND | F_SEEN_REPLY | F_LOGGED | F_MONITORED;

/// Everything the standby needs to continue tracking one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowState {
    pub key: FlowKey,
    pub originator: Side,
    pub seen_reply: bool,
    pub logged: bool,
    pub monitored: bool,
    pub tcp: TcpState,
    pub rule_id: u32,
    pub policy_version: u32,
    /// Milliseconds since the last packet.
    pub idle_ms: u32,
    /// Seconds since the flow was created.
    pub age_s: u32,
    /// Indexed by [`Dir::index`](super::Dir::index).
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

/// One update of the sync stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowRecord {
    /// A flow is new, changed state, or is refreshed (TCP windows).
    State(FlowState),
    /// A flow ended (closed, expired, killed, revoked, displaced).
    Closed(FlowKey),
}

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("a record is {RECORD_LEN} bytes, got {0}")]
    Length(usize),
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("unknown flow flags {0:#04x}")]
    Flags(u8),
    #[error("unknown TCP state {0}")]
    TcpState(u8),
    #[error("reserved bytes are not zero")]
    Reserved,
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(w)
}

fn emit_key(key: &FlowKey, b: &mut [u8; RECORD_LEN]) {
    b[1] = key.proto;
    put_u16(b, 2, key.vlan);
    b[4..20].copy_from_slice(&key.addrs[0]);
    b[20..36].copy_from_slice(&key.addrs[1]);
    put_u16(b, 36, key.ports[0]);
    put_u16(b, 38, key.ports[1]);
}

fn parse_key(b: &[u8]) -> FlowKey {
    let mut addrs = [[0; 16]; 2];
    addrs[0].copy_from_slice(&b[4..20]);
    addrs[1].copy_from_slice(&b[20..36]);
    FlowKey {
        addrs,
        ports: [u16_at(b, 36), u16_at(b, 38)],
        vlan: u16_at(b, 2),
        proto: b[1],
    }
}

impl FlowRecord {
    /// Writes the record into `b` (every byte of it).
    pub fn emit(&self, b: &mut [u8; RECORD_LEN]) {
        *b = [0; RECORD_LEN];
        match self {
            FlowRecord::Closed(key) => {
                b[0] = KIND_CLOSED;
                emit_key(key, b);
            }
            FlowRecord::State(s) => {
                b[0] = KIND_STATE;
                emit_key(&s.key, b);
                b[40] = [
                    (s.originator == Side::Second, F_ORIG_SECOND),
                    (s.seen_reply, F_SEEN_REPLY),
                    (s.logged, F_LOGGED),
                    (s.monitored, F_MONITORED),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .fold(0, |acc, (_, bit)| acc | bit);
                let t = &s.tcp;
                b[41] = t.state as u8;
                b[42] = t.tflags;
                b[43] = t.wflags[0];
                b[44] = t.wflags[1];
                for (i, pair) in [t.end, t.maxend, t.maxwin, t.maxack].iter().enumerate() {
                    put_u32(b, 48 + 8 * i, pair[0]);
                    put_u32(b, 52 + 8 * i, pair[1]);
                }
                put_u32(b, 80, s.rule_id);
                put_u32(b, 84, s.policy_version);
                put_u32(b, 88, s.idle_ms);
                put_u32(b, 92, s.age_s);
                for (i, v) in [s.packets[0], s.packets[1], s.bytes[0], s.bytes[1]]
                    .into_iter()
                    .enumerate()
                {
                    put_u64(b, 96 + 8 * i, v);
                }
            }
        }
    }

    /// Reads a record written by [`emit`](Self::emit).
    pub fn parse(b: &[u8]) -> Result<FlowRecord, RecordError> {
        if b.len() != RECORD_LEN {
            return Err(RecordError::Length(b.len()));
        }
        let key = parse_key(b);
        match b[0] {
            KIND_CLOSED => {
                if b[40..].iter().any(|&x| x != 0) {
                    return Err(RecordError::Reserved);
                }
                Ok(FlowRecord::Closed(key))
            }
            KIND_STATE => {
                let flags = b[40];
                if flags & !KNOWN_FLAGS != 0 {
                    return Err(RecordError::Flags(flags));
                }
                if b[45..48].iter().any(|&x| x != 0) {
                    return Err(RecordError::Reserved);
                }
                let state = *TcpConnState::ALL
                    .get(usize::from(b[41]))
                    .ok_or(RecordError::TcpState(b[41]))?;
                let pair = |i: usize| [u32_at(b, 48 + 8 * i), u32_at(b, 52 + 8 * i)];
                let tcp = TcpState {
                    end: pair(0),
                    maxend: pair(1),
                    maxwin: pair(2),
                    maxack: pair(3),
                    wflags: [b[43], b[44]],
                    state,
                    tflags: b[42],
                };
                Ok(FlowRecord::State(FlowState {
                    key,
                    originator: if flags & F_ORIG_SECOND != 0 {
                        Side::Second
                    } else {
                        Side::First
                    },
                    seen_reply: flags & F_SEEN_REPLY != 0,
                    logged: flags & F_LOGGED != 0,
                    monitored: flags & F_MONITORED != 0,
                    tcp,
                    rule_id: u32_at(b, 80),
                    policy_version: u32_at(b, 84),
                    idle_ms: u32_at(b, 88),
                    age_s: u32_at(b, 92),
                    packets: [u64_at(b, 96), u64_at(b, 104)],
                    bytes: [u64_at(b, 112), u64_at(b, 120)],
                }))
            }
            other => Err(RecordError::Kind(other)),
        }
    }
}

/// Room in [`SyncNotes`] per kind: a poll-loop iteration notes at most one change and one end per packet
/// received (two ports' full bursts are 128 packets).
pub const NOTES: usize = 256;

/// What the worker's packet path changed since the HA sync last took it ([`super::Tracker::take_notes`]): the
/// flows created or whose TCP state changed, and the keys of flows removed. Fixed arrays, so noting allocates
/// nothing; a note that finds its array full is dropped and `overflowed` set (the sync then resyncs). Off (and
/// costing one predictable branch) unless the worker is the active member of a pair.
#[derive(Debug)]
pub struct SyncNotes {
    on: bool,
    overflowed: bool,
    changed_len: usize,
    ended_len: usize,
    changed: [FlowId; NOTES],
    ended: [FlowKey; NOTES],
}

/// Appends `item` to the first `len` of `list`, or sets `overflowed` when they are all of it.
#[inline]
fn push<T>(list: &mut [T; NOTES], len: &mut usize, overflowed: &mut bool, item: T) {
    match list.get_mut(*len) {
        Some(slot) => {
            *slot = item;
            *len += 1;
        }
        None => *overflowed = true,
    }
}

impl SyncNotes {
    pub fn new() -> Box<SyncNotes> {
        Box::new(SyncNotes {
            on: false,
            overflowed: false,
            changed_len: 0,
            ended_len: 0,
            changed: [FlowId::from_index(0); NOTES],
            ended: [FlowKey::ZERO; NOTES],
        })
    }

    /// Turns noting on or off; off forgets what was noted.
    pub fn set_on(&mut self, on: bool) {
        self.on = on;
        if !on {
            (self.changed_len, self.ended_len, self.overflowed) = (0, 0, false);
        }
    }

    /// The flow `id` was created or changed state.
    #[inline]
    pub fn changed(&mut self, id: FlowId) {
        if !self.on {
            return;
        }
        // A handshake's segments often arrive in one burst: one note per flow is enough.
        if self.changed_len > 0 && self.changed[self.changed_len - 1] == id {
            return;
        }
        push(
            &mut self.changed,
            &mut self.changed_len,
            &mut self.overflowed,
            id,
        );
    }

    /// The flow `key` was removed.
    pub fn ended(&mut self, key: FlowKey) {
        if !self.on {
            return;
        }
        push(
            &mut self.ended,
            &mut self.ended_len,
            &mut self.overflowed,
            key,
        );
    }

    /// Hands out and forgets what was noted: the ends first (a flow replaced by one with the same key, a SYN
    /// reusing the tuple of a closed connection, must reach the peer as its end, then the new flow), then the
    /// changed flows by id. Answers whether notes were dropped.
    pub fn take(
        &mut self,
        mut ended: impl FnMut(FlowKey),
        mut changed: impl FnMut(FlowId),
    ) -> bool {
        for key in &self.ended[..self.ended_len] {
            ended(*key);
        }
        for id in &self.changed[..self.changed_len] {
            changed(*id);
        }
        let overflowed = self.overflowed;
        (self.changed_len, self.ended_len, self.overflowed) = (0, 0, false);
        overflowed
    }
}
