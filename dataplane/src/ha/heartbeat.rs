//! Heartbeats over the data segments, the split-brain guard's second path between the members of a pair
//! ([`super::guard`]).
//!
//! Every member sends one out of each data port every `heartbeat_ms`, and at once after its role (or the role
//! it was told) changes: worker 0 builds it in a buffer of its own mempool and transmits it like a reject
//! answer (no allocation outside the pool, no lock, no system call). Every worker consumes the heartbeats of
//! its pair — never forwarded, whatever the role, counted as the drop reason `ha_heartbeat` — and records the
//! peer's latest in a [`PeerCell`] (atomics, no lock), which the guard reads.
//!
//! The frame (untagged; big-endian fields):
//!
//! | bytes | field |
//! |---|---|
//! | 0–5 | destination [`DESTINATION`], a locally administered multicast address: bridges flood it |
//! | 6–11 | source: the sending port's MAC |
//! | 12–13 | EtherType [`ETHERTYPE`] (0x88B5, IEEE local experimental): hosts ignore it |
//! | 14–17 | magic `BHHB` |
//! | 18 | format version (1) |
//! | 19 | the sender's role (0 standby, 1 active) |
//! | 20 | the role it was last told |
//! | 21 | 0 |
//! | 22–25 | `pair_id` |
//! | 26–33 | the sender's instance id (random per start) |
//! | 34–41 | how long it has been active (ms; 0 while standby) |
//! | 42–49 | sequence number (per sender, from 1) |
//! | 50–59 | zero padding to the shortest Ethernet frame |
//!
//! A frame with the EtherType but another `pair_id`, magic or version, a VLAN tag, or too short, is not a
//! heartbeat of this pair: it is judged as any frame of another EtherType.

use std::sync::atomic::{AtomicU64, Ordering};

use net::ethernet::{EtherType, MacAddr};
use net::link::EthernetRepr;
use protocol::Role;

use super::guard::Peer;
use super::RoleCell;

/// IEEE 802 "local experimental" EtherType 1.
pub const ETHERTYPE: u16 = 0x88B5;
/// Locally administered (bit 1) multicast (bit 0) address of the heartbeats.
pub const DESTINATION: MacAddr = MacAddr([0x03, 0x42, 0x48, 0x48, 0x42, 0x00]);
/// Frame length: the shortest Ethernet frame (without FCS), as not every NIC pads.
pub const FRAME_LEN: usize = 60;

const MAGIC: [u8; 4] = *b"BHHB";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 14;
const PAYLOAD_LEN: usize = 36;

/// One heartbeat's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    pub pair_id: u32,
    pub instance: u64,
    pub role: Role,
    pub desired: Role,
    pub active_for_ms: u64,
    pub seq: u64,
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Standby => 0,
        Role::Active => 1,
    }
}

fn role_of(b: u8) -> Option<Role> {
    match b {
        0 => Some(Role::Standby),
        1 => Some(Role::Active),
        _ => None,
    }
}

/// Whether `frame` carries the heartbeat EtherType (untagged): the one check a standby makes per frame.
#[inline]
pub fn has_ethertype(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&ETHERTYPE.to_be_bytes())
}

impl Beat {
    /// The whole frame, sent from `src`.
    pub fn frame(&self, src: MacAddr) -> [u8; FRAME_LEN] {
        let mut out = [0u8; FRAME_LEN];
        // The buffer always has room for the untagged header.
        let _ = EthernetRepr::new(src, DESTINATION, EtherType(ETHERTYPE)).emit(&mut out);
        let p = &mut out[HEADER_LEN..HEADER_LEN + PAYLOAD_LEN];
        p[0..4].copy_from_slice(&MAGIC);
        p[4] = VERSION;
        p[5] = role_byte(self.role);
        p[6] = role_byte(self.desired);
        p[8..12].copy_from_slice(&self.pair_id.to_be_bytes());
        p[12..20].copy_from_slice(&self.instance.to_be_bytes());
        p[20..28].copy_from_slice(&self.active_for_ms.to_be_bytes());
        p[28..36].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// Reads a heartbeat; `None` if `frame` is not one (see the module docs). Never panics.
    pub fn parse(frame: &[u8]) -> Option<Beat> {
        if !has_ethertype(frame) {
            return None;
        }
        let p = frame.get(HEADER_LEN..HEADER_LEN + PAYLOAD_LEN)?;
        if p[0..4] != MAGIC || p[4] != VERSION {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(p[i..i + 8].try_into().unwrap_or([0; 8]));
        Some(Beat {
            pair_id: u32::from_be_bytes(p[8..12].try_into().unwrap_or([0; 4])),
            instance: u64_at(12),
            role: role_of(p[5])?,
            desired: role_of(p[6])?,
            active_for_ms: u64_at(20),
            seq: u64_at(28),
        })
    }
}

/// The peer's latest heartbeat, written by any worker, read by the guard; and the heartbeat counts.
#[derive(Debug, Default)]
pub struct PeerCell {
    /// [`crate::clock::Clock`] milliseconds + 1 of the latest heartbeat (0: none yet); written last.
    heard_at: AtomicU64,
    instance: AtomicU64,
    seq: AtomicU64,
    /// `active_for_ms << 2 | active << 1 | told active`.
    state: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
}

impl PeerCell {
    /// Records a heartbeat of the peer heard at `now`, if it is newer than the one recorded (each is sent
    /// out of every port: the copies that arrive later are only counted).
    pub fn heard(&self, b: &Beat, now: u64) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if self.instance.load(Ordering::Relaxed) == b.instance
            && b.seq <= self.seq.load(Ordering::Relaxed)
        {
            return;
        }
        let state = b.active_for_ms << 2
            | u64::from(b.role == Role::Active) << 1
            | u64::from(b.desired == Role::Active);
        self.instance.store(b.instance, Ordering::Relaxed);
        self.seq.store(b.seq, Ordering::Relaxed);
        self.state.store(state, Ordering::Relaxed);
        self.heard_at.store(now + 1, Ordering::Release);
    }

    /// The latest heartbeat heard, if any.
    pub fn latest(&self) -> Option<Peer> {
        let heard = self.heard_at.load(Ordering::Acquire);
        if heard == 0 {
            return None;
        }
        let state = self.state.load(Ordering::Relaxed);
        let role = |bit: u64| {
            if state & bit != 0 {
                Role::Active
            } else {
                Role::Standby
            }
        };
        Some(Peer {
            heard_at: heard - 1,
            instance: self.instance.load(Ordering::Relaxed),
            role: role(2),
            desired: role(1),
            active_for_ms: state >> 2,
        })
    }

    pub fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// (sent, received).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }
}

/// A worker's side of the heartbeats.
#[derive(Debug)]
pub struct WorkerBeats<'a> {
    pub pair_id: u32,
    /// This run's instance id: its own heartbeats, should a loop bring them back, are no peer's.
    pub instance: u64,
    pub peer: &'a PeerCell,
    pub role: &'a RoleCell,
    /// Worker 0 sends; the others only receive.
    pub sender: Option<BeatSender>,
}

impl WorkerBeats<'_> {
    /// A frame with the heartbeat EtherType: if it is a heartbeat of this pair (then consumed), whether it is
    /// the peer saying it is standby. The peer's is recorded, and one saying it is standby releases a member
    /// held by it at once (rule (d) of the guard).
    #[cold]
    pub fn consume(&self, frame: &[u8], now: u64) -> Option<bool> {
        let b = Beat::parse(frame).filter(|b| b.pair_id == self.pair_id)?;
        if b.instance == self.instance {
            return Some(false);
        }
        self.peer.heard(&b, now);
        if b.role == Role::Standby {
            self.role.release(now);
        }
        Some(b.role == Role::Standby)
    }
}

/// Worker 0's heartbeat schedule.
#[derive(Debug)]
pub struct BeatSender {
    pair_id: u32,
    instance: u64,
    /// Each data port's MAC, the source of its heartbeats.
    pub macs: Vec<MacAddr>,
    period_ms: u64,
    next_at: u64,
    seq: u64,
    /// The last heartbeat made (`None`: none yet).
    last: Option<Beat>,
}

impl BeatSender {
    pub fn new(pair_id: u32, instance: u64, macs: Vec<MacAddr>, period_ms: u64) -> Self {
        BeatSender {
            pair_id,
            instance,
            macs,
            period_ms,
            next_at: 0,
            seq: 0,
            last: None,
        }
    }

    /// Whether a heartbeat is due now: every `period_ms`, and at once when the role (or the role told) changed
    /// since the last one. When it is, [`frame`](Self::frame) writes it.
    #[inline]
    pub fn due(&mut self, role: &RoleCell, now: u64) -> bool {
        let (current, desired) = (role.role(), role.desired());
        let same = self
            .last
            .is_some_and(|b| b.role == current && b.desired == desired);
        if now < self.next_at && same {
            return false;
        }
        self.next_at = now + self.period_ms;
        self.seq += 1;
        self.last = Some(Beat {
            pair_id: self.pair_id,
            instance: self.instance,
            role: current,
            desired,
            active_for_ms: match current {
                Role::Active => now.saturating_sub(role.active_since()),
                Role::Standby => 0,
            },
            seq: self.seq,
        });
        true
    }

    /// The last heartbeat made, as sent out of `port`.
    pub fn frame(&self, port: usize) -> Option<[u8; FRAME_LEN]> {
        Some(self.last?.frame(*self.macs.get(port)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat() -> Beat {
        Beat {
            pair_id: 7,
            instance: 0x0123_4567_89ab_cdef,
            role: Role::Active,
            desired: Role::Standby,
            active_for_ms: 123_456,
            seq: 42,
        }
    }

    #[test]
    fn a_heartbeat_reads_back_and_anything_else_is_none() {
        let src = MacAddr([2, 0, 0, 0, 0, 1]);
        let frame = beat().frame(src);
        assert_eq!(frame.len(), FRAME_LEN);
        assert_eq!(&frame[0..6], &DESTINATION.0);
        assert_eq!(&frame[6..12], &src.0);
        assert!(has_ethertype(&frame));
        assert_eq!(Beat::parse(&frame), Some(beat()));
        // net's parser sees a frame of another EtherType.
        let p = net::parse(&frame).unwrap();
        assert!(matches!(p.l3, net::L3::Other(EtherType(ETHERTYPE))));
        // Short, wrong magic, version or role, another EtherType: not a heartbeat, never a panic.
        for len in 0..50 {
            assert_eq!(Beat::parse(&frame[..len]), None);
        }
        for (at, value) in [(14, b'X'), (18, 2), (19, 9), (20, 9), (12, 0x08)] {
            let mut bad = frame;
            bad[at] = value;
            assert_eq!(Beat::parse(&bad), None, "byte {at}");
        }
    }

    #[test]
    fn the_peer_cell_keeps_the_latest_heartbeat_of_the_latest_instance() {
        let cell = PeerCell::default();
        assert_eq!(cell.latest(), None);
        cell.heard(&beat(), 1000);
        let p = cell.latest().unwrap();
        assert_eq!(
            (p.heard_at, p.instance, p.role, p.desired, p.active_for_ms),
            (1000, beat().instance, Role::Active, Role::Standby, 123_456)
        );
        // The copy from the other port, and an older one, are only counted.
        cell.heard(&beat(), 1001);
        cell.heard(&Beat { seq: 41, ..beat() }, 1002);
        assert_eq!(cell.latest().unwrap().heard_at, 1000);
        cell.heard(
            &Beat {
                seq: 43,
                role: Role::Standby,
                ..beat()
            },
            1100,
        );
        assert_eq!(cell.latest().unwrap().role, Role::Standby);
        // A restarted peer starts its sequence again.
        cell.heard(
            &Beat {
                seq: 1,
                instance: 5,
                ..beat()
            },
            1200,
        );
        assert_eq!(cell.latest().unwrap().instance, 5);
        assert_eq!(cell.counts(), (0, 5));
    }
}
