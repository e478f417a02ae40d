//! Flood limits per source, applied only where a new flow is admitted
//! ([`Tracker::commit_new`](super::Tracker::commit_new)): packets of tracked flows never reach this table, so
//! established connections pay nothing for it.
//!
//! [`SourceTable`] is a fixed, set-associative table keyed by source (hashed with a per-boot seed, like the
//! connection table), allocated at start and never grown. A source is an IPv4 address, or an IPv6 /64: one
//! host's share of IPv6 space, so a host cannot step past its limits by changing its interface identifier. Each
//! slot holds the source's new flows in the current second and the ids of its half-open TCP flows (SYN seen,
//! handshake not completed). Half-open flows are not counted down as their handshakes complete or they end —
//! that would put work on the established path — but re-checked against the connection table only when the
//! source is at its limit: a listed flow still counts if it is still tracked, still half-open, not expired and
//! still from this source. Flows admitted while every per-source limit was off are not listed.
//!
//! **A full table** is itself a flood (many sources, e.g. randomly spoofed ones): a source without a slot
//! takes the slot in its bucket that was least recently used, and the eviction is counted
//! ([`SourceTable::evictions`]). A new source is never refused for want of a slot; what the evicted source had
//! used of its limits is forgotten. A source that floods from one address keeps its slot by using it, and each
//! spoofed address holds at most one half-open flow anyway: what bounds such a flood is the connection table,
//! which evicts half-open flows before established ones and never an established flow for a new one.

use std::hash::BuildHasher;

use foldhash::quality::FixedState;
use policy::FloodLimits;

use super::key::{FlowKey, Side};
use super::table::{ConnTable, FlowId};
use super::tcp::TcpConnState;

/// Half-open flows a slot remembers: the largest `half_open_per_source` a policy may set.
pub const MAX_HALF_OPEN: usize = FloodLimits::MAX_HALF_OPEN_PER_SOURCE as usize;

/// Slots per bucket: a new source may take the least recently used of these.
pub const WAYS: usize = 8;

/// Fewest and most slots of a table (see [`SourceTable::new`]).
pub const MIN_SOURCES: usize = 1024;
pub const MAX_SOURCES: usize = 32_768;

const PROTO_TCP: u8 = 6;

/// A flood limit a new flow was refused by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloodLimit {
    /// `settings.flood_limits.half_open_per_source`.
    HalfOpenPerSource,
    /// `settings.flood_limits.new_per_second_per_source`.
    NewPerSecondPerSource,
    /// `settings.flood_limits.connections_per_segment` (see [`super::segments`]).
    ConnectionsPerSegment,
}

impl FloodLimit {
    /// Every limit.
    pub const ALL: [FloodLimit; 3] = [
        FloodLimit::HalfOpenPerSource,
        FloodLimit::NewPerSecondPerSource,
        FloodLimit::ConnectionsPerSegment,
    ];

    /// The setting's name, stable for metrics labels and flow events.
    pub const fn as_str(self) -> &'static str {
        match self {
            FloodLimit::HalfOpenPerSource => "half_open_per_source",
            FloodLimit::NewPerSecondPerSource => "new_per_second_per_source",
            FloodLimit::ConnectionsPerSegment => "connections_per_segment",
        }
    }
}

/// One source address's use of the limits.
#[derive(Debug, Clone, Copy)]
struct SourceSlot {
    addr: [u8; 16],
    /// 0: vacant; 4 or 6: the address family.
    family: u8,
    half_open_len: u8,
    /// The second (of the caller's clock) of the source's last new flow: the rate window and the age.
    second: u32,
    /// New flows admitted during `second`.
    in_second: u32,
    /// Slot indices of half-open flows, `half_open_len` of them (some may have moved on since).
    half_open: [u32; MAX_HALF_OPEN],
}

impl SourceSlot {
    const VACANT: SourceSlot = SourceSlot {
        addr: [0; 16],
        family: 0,
        half_open_len: 0,
        second: 0,
        in_second: 0,
        half_open: [0; MAX_HALF_OPEN],
    };
}

/// Where [`SourceTable::check`] found the source, for [`SourceTable::admitted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRef(usize);

/// The per-source flood limits of one worker; see the module documentation.
#[derive(Debug)]
pub struct SourceTable {
    slots: Box<[SourceSlot]>,
    bucket_mask: usize,
    hasher: FixedState,
    limits: FloodLimits,
    evictions: u64,
}

/// Whether a flow is half-open: TCP, SYN seen, handshake not completed.
pub(super) fn is_half_open(proto: u8, state: TcpConnState) -> bool {
    proto == PROTO_TCP
        && matches!(
            state,
            TcpConnState::SynSent | TcpConnState::SynSent2 | TcpConnState::SynRecv
        )
}

impl SourceTable {
    /// A table for a connection table of `flows` flows: a slot per 64 flows, a power of two between
    /// [`MIN_SOURCES`] and [`MAX_SOURCES`] (about 290 bytes a slot). Limits start off.
    pub fn new(flows: usize, seed: u64) -> Self {
        let slots = (flows / 64)
            .next_power_of_two()
            .clamp(MIN_SOURCES, MAX_SOURCES);
        SourceTable {
            slots: vec![SourceSlot::VACANT; slots].into_boxed_slice(),
            bucket_mask: slots / WAYS - 1,
            hasher: FixedState::with_seed(seed.rotate_left(17) ^ 0x5eed_f100d),
            limits: FloodLimits::default(),
            evictions: 0,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Sources that lost their slot to a new one (see the module documentation).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Bytes of heap the table holds; constant after construction.
    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * size_of::<SourceSlot>()
    }

    /// Changes the limits (policy reload); what sources have used so far stays.
    pub fn set_limits(&mut self, limits: FloodLimits) {
        self.limits = limits;
    }

    /// Whether any per-source limit is on; when none is, new flows skip the table entirely.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.limits.half_open_per_source != 0 || self.limits.new_per_second_per_source != 0
    }

    /// Finds (or takes) the slot of the source of a new flow with `key` opened by `originator` and checks its
    /// limits at `now` (milliseconds); `half_open` says whether the new flow is a half-open TCP flow. Counts
    /// nothing: call [`admitted`](Self::admitted) once the flow is in the table.
    pub fn check(
        &mut self,
        key: &FlowKey,
        originator: Side,
        half_open: bool,
        table: &ConnTable,
        now: u64,
    ) -> Result<SourceRef, FloodLimit> {
        let family = if key.is_ipv6() { 6 } else { 4 };
        let addr = source_of(key.addrs[originator.index()], family);
        let second = (now / 1000) as u32;
        let at = self.slot_of(addr, family, second);
        let limits = self.limits;
        let slot = &mut self.slots[at];
        if slot.second != second {
            slot.second = second;
            slot.in_second = 0;
        }
        if limits.new_per_second_per_source != 0
            && slot.in_second >= limits.new_per_second_per_source
        {
            return Err(FloodLimit::NewPerSecondPerSource);
        }
        let most = limits.half_open_per_source as usize;
        if half_open && most != 0 && usize::from(slot.half_open_len) >= most {
            prune(slot, table, now);
            if usize::from(slot.half_open_len) >= most {
                return Err(FloodLimit::HalfOpenPerSource);
            }
        }
        Ok(SourceRef(at))
    }

    /// Counts a new flow [`check`](Self::check) let in, now in the table as `id`.
    pub fn admitted(&mut self, at: SourceRef, id: FlowId, half_open: bool) {
        let slot = &mut self.slots[at.0];
        slot.in_second = slot.in_second.saturating_add(1);
        let len = usize::from(slot.half_open_len);
        // The id may be listed already: a flow of this source that has ended left it behind.
        if half_open && len < MAX_HALF_OPEN && !slot.half_open[..len].contains(&id.get()) {
            slot.half_open[len] = id.get();
            slot.half_open_len += 1;
        }
    }

    /// The slot of `addr`: its own, a vacant one, or the least recently used of its bucket (evicted).
    fn slot_of(&mut self, addr: [u8; 16], family: u8, second: u32) -> usize {
        let bucket = (self.hasher.hash_one((addr, family)) as usize & self.bucket_mask) * WAYS;
        let ways = &self.slots[bucket..bucket + WAYS];
        if let Some(w) = ways
            .iter()
            .position(|s| s.family == family && s.addr == addr)
        {
            return bucket + w;
        }
        let (w, victim) = match ways.iter().position(|s| s.family == 0) {
            Some(w) => (w, false),
            // Oldest first; serial arithmetic, so the clock's wrap does not matter.
            None => (
                (0..WAYS)
                    .max_by_key(|&w| second.wrapping_sub(ways[w].second))
                    .unwrap_or(0),
                true,
            ),
        };
        if victim {
            self.evictions += 1;
        }
        self.slots[bucket + w] = SourceSlot {
            addr,
            family,
            second,
            ..SourceSlot::VACANT
        };
        bucket + w
    }
}

/// The source an address counts as: itself for IPv4 (`family` 4), its /64 for IPv6.
fn source_of(mut addr: [u8; 16], family: u8) -> [u8; 16] {
    if family == 6 {
        addr[8..].fill(0);
    }
    addr
}

/// Keeps the half-open flows of `slot` that still are: tracked, half-open, not expired, from this source.
fn prune(slot: &mut SourceSlot, table: &ConnTable, now: u64) {
    let mut kept = 0;
    for i in 0..usize::from(slot.half_open_len) {
        let id = slot.half_open[i];
        let still = table.get(FlowId::from_index(id)).is_some_and(|e| {
            let key = e.key();
            is_half_open(e.proto(), e.tcp().state())
                && !table.is_expired(e, now)
                && (key.is_ipv6() == (slot.family == 6))
                && source_of(key.addrs[e.originator().index()], slot.family) == slot.addr
        });
        if still {
            slot.half_open[kept] = id;
            kept += 1;
        }
    }
    slot.half_open_len = kept as u8;
}
