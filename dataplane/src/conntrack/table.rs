//! The connection table: a pre-allocated slab of entries indexed by a pre-sized, open-addressed hash index of
//! slab slots.
//!
//! Nothing here allocates after [`ConnTable::new`]: the slab and its intrusive free list are filled at
//! construction, and the index — a power-of-two array of `u32`s at least half again as large as the table, so
//! at most two thirds full — never grows. It is probed linearly from the key's home position (one cache line
//! holds sixteen neighbours, so a lookup almost always reads one line of the index and then the entry), and a
//! removal shifts the rest of its probe run back instead of leaving a tombstone, so the index never degrades
//! and never needs rebuilding.
//!
//! **Hash flooding.** Keys are hashed with foldhash keyed by a per-boot random seed supplied by the caller, so
//! tuples crafted offline to collide (or learned to collide on another gateway or boot) do not collide here.
//! foldhash is not a cryptographic PRF; the seed raises the bar, and the bounded table (a hard cap, no growth,
//! the index at most two thirds full) bounds what any collision can cost.

use std::hash::Hasher;
use std::net::IpAddr;

use foldhash::quality::FoldHasher;
use foldhash::SharedSeed;

use super::key::{self, Dir, FlowKey, Side, FAMILY_V6};
use super::sync::FlowState;
use super::tcp::{self, TcpConnState, TcpState};
use super::Timeouts;

/// Largest supported capacity (slab indices are `u32`, with one value reserved).
pub const MAX_CAPACITY: usize = 1 << 31;

/// Most slots examined, from the eviction hand on, when the table is full and a victim is sought.
pub const EVICT_SCAN: usize = 16;

/// Most evictions [`ConnTable::prefetch_victims`] prepares at once: a whole burst's new flows.
const VICTIM_HINTS: usize = dpdk::MAX_BURST;

/// Longest timeout honoured, in milliseconds (~12.4 days; longer ones are clamped): idle times are computed
/// on the low 32 bits of the millisecond clock in serial arithmetic, good for idle times up to ~24.8 days,
/// and the expiry cursor visits every slot far more often than that.
pub const MAX_TIMEOUT_MS: u32 = 1 << 30;

const NIL: u32 = u32::MAX;

// Entry flags.
const OCCUPIED: u8 = 0x01;
/// The originator is the key's second endpoint.
const ORIG_SECOND: u8 = 0x02;
/// A packet was seen in the reply direction.
const SEEN_REPLY: u8 = 0x04;
/// The admitting rule asked for logging.
const LOGGED: u8 = 0x08;
/// Admitted in monitor mode (the policy would have denied it).
const MONITORED: u8 = 0x10;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

/// Index of a flow in its table. Valid until the flow is removed; the slot is then reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(u32);

impl FlowId {
    /// The slab index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// As a plain number (for listings).
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The id of slab index `index` (the flood limits keep ids as plain numbers).
    pub(super) const fn from_index(index: u32) -> Self {
        FlowId(index)
    }
}

/// The table is full and nothing could be evicted; the caller counts it (`table_full`) and drops the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("connection table full")]
pub struct Full;

/// A successful [`ConnTable::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// The new flow.
    pub id: FlowId,
    /// The flow that gave up its place, to be reported as closed: an entry with the same key (expired, or a
    /// finished connection whose tuple is reused), or an unestablished flow evicted because the table was full.
    pub displaced: Option<Entry>,
}

/// Result of [`ConnTable::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A live flow.
    Hit(FlowId),
    /// The flow exists but is past its timeout: treat it as absent. It is reaped (and reported) by the next
    /// [`insert`](ConnTable::insert) of the same key or by [`expire`](ConnTable::expire), whichever comes first,
    /// so no close event is lost; [`reap`](ConnTable::reap) removes it at once.
    Expired(FlowId),
    /// No such flow.
    Miss,
}

/// A 48-bit packet counter and a 48-bit byte counter in 12 bytes, 4-aligned (keeps [`Entry`] at 116 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Counters {
    packets_lo: u32,
    bytes_lo: u32,
    /// Packets in the high half, bytes in the low half.
    hi: u32,
}

const MAX48: u64 = (1 << 48) - 1;

impl Counters {
    #[inline]
    fn packets(&self) -> u64 {
        (u64::from(self.hi >> 16) << 32) | u64::from(self.packets_lo)
    }

    #[inline]
    fn bytes(&self) -> u64 {
        (u64::from(self.hi & 0xffff) << 32) | u64::from(self.bytes_lo)
    }

    /// Totals beyond 48 bits are held at the maximum.
    fn from_totals(packets: u64, bytes: u64) -> Self {
        let (p, b) = (packets.min(MAX48), bytes.min(MAX48));
        Counters {
            packets_lo: p as u32,
            bytes_lo: b as u32,
            hi: (((p >> 32) as u32) << 16) | ((b >> 32) as u32),
        }
    }

    #[inline]
    fn add(&mut self, bytes: u32) {
        // Neither low word carries (all but one packet in 2^32): the high word cannot change.
        if let (Some(p), Some(b)) = (
            self.packets_lo.checked_add(1),
            self.bytes_lo.checked_add(bytes),
        ) {
            self.packets_lo = p;
            self.bytes_lo = b;
            return;
        }
        let p = (self.packets() + 1).min(MAX48);
        let b = (self.bytes() + u64::from(bytes)).min(MAX48);
        self.packets_lo = p as u32;
        self.bytes_lo = b as u32;
        self.hi = (((p >> 32) as u32) << 16) | ((b >> 32) as u32);
    }
}

/// One tracked flow (116 bytes). The key is stored field by field so the flag byte fills what would be the
/// key's padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    addrs: [[u8; 16]; 2],
    ports: [u16; 2],
    vlan: u16,
    proto: u8,
    flags: u8,
    tcp: TcpState,
    /// Creation time, whole seconds of the caller's clock.
    created_s: u32,
    /// Last packet, low 32 bits of the caller's millisecond clock.
    last_seen: u32,
    counters: [Counters; 2],
    /// In a vacant slot: the next free slot.
    rule_id: u32,
    policy_version: u32,
}

impl Entry {
    const VACANT: Entry = Entry {
        addrs: [[0; 16]; 2],
        ports: [0; 2],
        vlan: 0,
        proto: 0,
        flags: 0,
        tcp: TcpState::EMPTY,
        created_s: 0,
        last_seen: 0,
        counters: [Counters {
            packets_lo: 0,
            bytes_lo: 0,
            hi: 0,
        }; 2],
        rule_id: NIL,
        policy_version: 0,
    };

    fn fresh(key: &FlowKey, originator: Side, now: u64) -> Entry {
        Entry {
            addrs: key.addrs,
            ports: key.ports,
            vlan: key.vlan,
            proto: key.proto,
            flags: OCCUPIED
                | match originator {
                    Side::First => 0,
                    Side::Second => ORIG_SECOND,
                },
            tcp: TcpState::EMPTY,
            created_s: (now / 1000) as u32,
            last_seen: now as u32,
            counters: [Counters::default(); 2],
            rule_id: 0,
            policy_version: 0,
        }
    }

    const fn is_occupied(&self) -> bool {
        self.flags & OCCUPIED != 0
    }

    #[inline]
    pub(super) fn key_eq(&self, key: &FlowKey) -> bool {
        // Whole-word comparisons, combined without branches: one 32-byte compare and one 8-byte one.
        let addrs = (u128::from_ne_bytes(self.addrs[0]) ^ u128::from_ne_bytes(key.addrs[0]))
            | (u128::from_ne_bytes(self.addrs[1]) ^ u128::from_ne_bytes(key.addrs[1]));
        let rest = (u64::from(self.ports[0])
            | u64::from(self.ports[1]) << 16
            | u64::from(self.vlan) << 32
            | u64::from(self.proto) << 48)
            ^ (u64::from(key.ports[0])
                | u64::from(key.ports[1]) << 16
                | u64::from(key.vlan) << 32
                | u64::from(key.proto) << 48);
        addrs == 0 && rest == 0
    }

    /// The flow's key.
    pub fn key(&self) -> FlowKey {
        FlowKey {
            addrs: self.addrs,
            ports: self.ports,
            vlan: self.vlan,
            proto: self.proto,
        }
    }

    /// Which key endpoint sent the first packet.
    pub const fn originator(&self) -> Side {
        if self.flags & ORIG_SECOND != 0 {
            Side::Second
        } else {
            Side::First
        }
    }

    /// Direction of a packet whose source is the key's `side` endpoint.
    pub const fn dir_of(&self, side: Side) -> Dir {
        if side.index() == self.originator().index() {
            Dir::Original
        } else {
            Dir::Reply
        }
    }

    /// Address and port of the endpoint that sends in `dir` (the client for [`Dir::Original`]).
    pub fn endpoint(&self, dir: Dir) -> (IpAddr, u16) {
        let side = match dir {
            Dir::Original => self.originator(),
            Dir::Reply => self.originator().other(),
        };
        self.key().endpoint(side)
    }

    /// IP protocol number.
    pub const fn proto(&self) -> u8 {
        self.proto
    }

    /// TCP tracking state (meaningless for other protocols).
    pub const fn tcp(&self) -> &TcpState {
        &self.tcp
    }

    /// Mutable TCP tracking state, to feed segments to [`TcpState::track`].
    pub fn tcp_mut(&mut self) -> &mut TcpState {
        &mut self.tcp
    }

    pub(super) fn set_tcp(&mut self, tcp: TcpState) {
        self.tcp = tcp;
    }

    /// Creation time in milliseconds (second resolution).
    pub fn created_ms(&self) -> u64 {
        u64::from(self.created_s) * 1000
    }

    /// Milliseconds since the last packet, as of `now`.
    pub fn idle_ms(&self, now: u64) -> u64 {
        u64::from(idle(self.last_seen, now))
    }

    /// Time of the last packet, in milliseconds.
    pub fn last_seen_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.idle_ms(now))
    }

    /// Packets seen in `dir`.
    pub fn packets(&self, dir: Dir) -> u64 {
        self.counters[dir.index()].packets()
    }

    /// IP bytes seen in `dir`.
    pub fn bytes(&self, dir: Dir) -> u64 {
        self.counters[dir.index()].bytes()
    }

    /// Accounts one packet of `bytes` in `dir` at `now`.
    #[inline]
    pub fn record(&mut self, dir: Dir, bytes: u32, now: u64) {
        self.counters[dir.index()].add(bytes);
        self.last_seen = now as u32;
        if dir == Dir::Reply {
            self.flags |= SEEN_REPLY;
        }
    }

    /// Whether a packet was seen in the reply direction (a UDP "stream", an answered ping).
    pub const fn seen_reply(&self) -> bool {
        self.flags & SEEN_REPLY != 0
    }

    /// Id of the rule that admitted the flow.
    pub const fn rule_id(&self) -> u32 {
        self.rule_id
    }

    /// Version of the policy that admitted the flow.
    pub const fn policy_version(&self) -> u32 {
        self.policy_version
    }

    /// Records the rule and policy version that (re)admitted the flow.
    pub fn set_admission(&mut self, rule_id: u32, policy_version: u32) {
        self.rule_id = rule_id;
        self.policy_version = policy_version;
    }

    /// Whether the admitting rule asked for logging.
    pub const fn logged(&self) -> bool {
        self.flags & LOGGED != 0
    }

    /// Whether the flow was admitted in monitor mode (the policy would have denied it).
    pub const fn monitored(&self) -> bool {
        self.flags & MONITORED != 0
    }

    fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// Sets the logging flag.
    pub fn set_logged(&mut self, on: bool) {
        self.set_flag(LOGGED, on);
    }

    /// Sets the monitor (would-deny) flag.
    pub fn set_monitored(&mut self, on: bool) {
        self.set_flag(MONITORED, on);
    }

    fn is_tcp(&self) -> bool {
        self.proto == PROTO_TCP
    }

    fn is_icmp(&self) -> bool {
        let v6 = self.vlan & FAMILY_V6 != 0;
        (self.proto == PROTO_ICMP && !v6) || (self.proto == PROTO_ICMPV6 && v6)
    }

    /// Whether the flow is established: TCP past the handshake and not closed, any other protocol answered.
    /// Established flows are never evicted to make room.
    pub fn is_assured(&self) -> bool {
        if self.is_tcp() {
            self.tcp.is_assured()
        } else {
            self.seen_reply()
        }
    }

    /// Name of the flow's state: the TCP state, or `unreplied` / `replied` (`stream` for UDP).
    pub fn state_name(&self) -> &'static str {
        if self.is_tcp() {
            self.tcp.state().as_str()
        } else if !self.seen_reply() {
            "unreplied"
        } else if self.proto == PROTO_UDP {
            "stream"
        } else {
            "replied"
        }
    }
}

/// A live flow's entry, borrowed for one packet (see [`ConnTable::live_mut`]).
pub(super) struct Live<'a> {
    pub(super) entry: &'a mut Entry,
    seen: &'a mut u16,
}

impl Live<'_> {
    /// [`Entry::record`], keeping the expiry sweep's copy of the last packet's second in step.
    #[inline(always)]
    pub(super) fn record(&mut self, dir: Dir, bytes: u32, now: u64) {
        self.entry.record(dir, bytes, now);
        *self.seen = seen_second(now);
    }
}

/// Milliseconds from `last` (low 32 bits of the clock) to `now`, 0 if `now` appears to be earlier.
#[inline]
fn idle(last: u32, now: u64) -> u32 {
    let d = (now as u32).wrapping_sub(last);
    if d > i32::MAX as u32 {
        0
    } else {
        d
    }
}

/// Most seconds of idleness for which the expiry sweep skips a flow's entry. The sweep's seconds wrap every
/// 2^16 s (~18 hours), so a flow idle longer than that may look recently active for this long once per wrap:
/// its expiry can come this much late, never early.
const SWEEP_SKIP_MAX_S: u32 = 60;

/// The low 16 bits of the second of the millisecond clock `now`: a flow's last packet as the expiry sweep reads
/// it (see [`ConnTable::seen`]).
#[inline(always)]
fn seen_second(now: u64) -> u16 {
    (now / 1000) as u16
}

/// Timeouts in milliseconds, laid out for the expiry check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeoutsMs {
    tcp: [u32; 9],
    udp: u32,
    udp_stream: u32,
    icmp: u32,
    other: u32,
    /// Whole seconds of idleness below which no flow can have expired, whatever its state (the shortest
    /// timeout, less one for the rounding of [`seen_second`]; at most [`SWEEP_SKIP_MAX_S`]): the expiry sweep
    /// does not read the entry of a flow idle for less, by its [`ConnTable::seen`] second.
    sweep_skip_s: u16,
}

impl TimeoutsMs {
    fn new(t: &Timeouts) -> Self {
        let ms = |ms: u64| ms.min(u64::from(MAX_TIMEOUT_MS)) as u32;
        let s = |secs: u32| ms(u64::from(secs) * 1000);
        let tcp = TcpConnState::ALL.map(|st| ms(tcp::timeout_ms(st, t)));
        let (udp, udp_stream, icmp, other) = (s(t.udp), s(t.udp_stream), s(t.icmp), s(t.other));
        let shortest = tcp
            .into_iter()
            .chain([udp, udp_stream, icmp, other])
            .min()
            .unwrap_or(0);
        TimeoutsMs {
            tcp,
            udp,
            udp_stream,
            icmp,
            other,
            sweep_skip_s: (shortest / 1000).saturating_sub(1).min(SWEEP_SKIP_MAX_S) as u16,
        }
    }

    #[inline]
    fn of(&self, e: &Entry) -> u32 {
        if e.is_tcp() {
            self.tcp[e.tcp.state() as usize]
        } else if e.proto == PROTO_UDP {
            if e.seen_reply() {
                self.udp_stream
            } else {
                self.udp
            }
        } else if e.is_icmp() {
            self.icmp
        } else {
            self.other
        }
    }
}

/// The keyed hash of flow keys.
#[derive(Debug, Clone)]
struct KeyHasher {
    per_hasher: u64,
    shared: SharedSeed,
}

impl KeyHasher {
    fn new(seed: u64) -> Self {
        KeyHasher {
            per_hasher: seed.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15,
            shared: SharedSeed::from_u64(seed),
        }
    }

    #[inline(always)]
    fn hash_words(&self, (a0, a1, rest): (u128, u128, u64)) -> u64 {
        let mut h = FoldHasher::with_seed(self.per_hasher, &self.shared);
        h.write_u128(a0);
        h.write_u128(a1);
        h.write_u64(rest);
        h.finish()
    }

    #[inline]
    fn hash(&self, k: &FlowKey) -> u64 {
        self.hash_words(k.words())
    }

    fn hash_entry(&self, e: &Entry) -> u64 {
        self.hash_words(key::words_of(&e.addrs, e.ports, e.vlan, e.proto))
    }
}

/// Housekeeping counters of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableStats {
    /// Unestablished flows evicted to make room.
    pub evictions: u64,
    /// Slots examined looking for a victim (at most [`EVICT_SCAN`] per insert into a full table).
    pub evict_slots_scanned: u64,
}

/// An unused index position. Index values keep bit 31 clear (see [`ConnTable::index_tag`]), so no flow's value
/// is ever this.
const EMPTY: u32 = u32::MAX;

/// Where an index value keeps its distance from its home position (bits 28–30, below the clear bit 31), so a
/// removal's backward shift knows the home of each value it passes without loading the flow's entry and hashing
/// its key. Only in tables whose slot numbers leave these bits free.
const DIST_SHIFT: u32 = 28;
/// The stored distance meaning "this far or further": the home is then found by hashing the key.
const DIST_SATURATED: u32 = 7;

/// A fixed-capacity connection table owned by one worker.
///
/// The index stores one `u32` per position: the slab slot in the low bits and, in the bits the slot does not
/// need (bit 31 aside), bits of the key's hash other than those that pick the home position. They let
/// [`probe`](Self::probe) pick the flow's slot without reading the slab (so a burst can probe first and
/// prefetch the entries), and a full lookup reads the slab only for a near-certain match.
#[derive(Debug)]
pub struct ConnTable {
    slab: Vec<Entry>,
    /// Open-addressed, linearly probed; a power of two long, [`EMPTY`] where unused.
    index: Vec<u32>,
    /// `index.len() - 1`.
    index_mask: usize,
    /// Mask of the slot bits of an index value.
    slot_mask: u32,
    /// The index value bits of the distance from home (see [`DIST_SHIFT`]); 0 in a table too large for them.
    dist_mask: u32,
    /// One bit per slot, set while the slot holds a flow: the expiry sweep reads 64 slots' occupancy in one
    /// word instead of one cache line per slot.
    occupied: Vec<u64>,
    /// Per slot, the [`seen_second`] of the flow's last packet: the expiry sweep reads two bytes per slot here
    /// and the entry only of a flow idle for [`TimeoutsMs::sweep_skip_s`] seconds or more, instead of every
    /// occupied slot's entry (at a million flows the sweep otherwise loads more memory than the packets'
    /// lookups). Written with the entry's own clock on every accepted packet; where it lags (an entry
    /// refreshed through [`get_mut`](Self::get_mut)) the sweep only reads the entry sooner.
    seen: Vec<u16>,
    free_head: u32,
    len: usize,
    cursor: usize,
    /// Where the next victim search starts when the table is full (see [`insert`](Self::insert)).
    hand: usize,
    /// Slot and key hash of evictable flows [`prefetch_victims`](Self::prefetch_victims) hashed, at `slot %
    /// VICTIM_HINTS`: the eviction that follows finds the victim's index value without hashing its key again.
    /// Only a hint (the slot may have changed hands since): see [`remove_hinted`](Self::remove_hinted).
    victim_hints: [(u32, u64); VICTIM_HINTS],
    hasher: KeyHasher,
    timeouts: TimeoutsMs,
    stats: TableStats,
}

impl ConnTable {
    /// A table for up to `capacity` flows with default [`Timeouts`], hashing with `seed`, which must be random
    /// per boot (e.g. from `getrandom` at start-up) for the flooding resistance described in the module
    /// documentation. All memory is allocated (and touched) here.
    ///
    /// # Panics
    /// If `capacity` exceeds [`MAX_CAPACITY`] (the configuration layer rejects that first).
    pub fn new(capacity: usize, seed: u64) -> Self {
        Self::with_timeouts(capacity, seed, &Timeouts::default())
    }

    /// Like [`new`](Self::new) with explicit timeouts.
    pub fn with_timeouts(capacity: usize, seed: u64, timeouts: &Timeouts) -> Self {
        assert!(
            capacity <= MAX_CAPACITY,
            "connection table capacity {capacity} exceeds {MAX_CAPACITY}"
        );
        let mut slab = vec![Entry::VACANT; capacity];
        for (i, e) in slab.iter_mut().enumerate() {
            e.rule_id = if i + 1 < capacity {
                (i + 1) as u32
            } else {
                NIL
            };
        }
        // Half again as many positions as flows, rounded up to a power of two: at most two thirds full, so
        // probe runs stay short (and there is always an empty position to end one).
        let positions = (capacity + capacity / 2).max(2).next_power_of_two();
        // Slots are below `capacity`, so they need the bits of `capacity - 1`.
        let slot_bits = usize::BITS - capacity.saturating_sub(1).leading_zeros();
        let slot_mask = u32::try_from((1u64 << slot_bits) - 1).unwrap_or(u32::MAX);
        let dist_mask = if slot_bits <= DIST_SHIFT {
            DIST_SATURATED << DIST_SHIFT
        } else {
            0
        };
        ConnTable {
            slab,
            index: vec![EMPTY; positions],
            index_mask: positions - 1,
            slot_mask,
            dist_mask,
            occupied: vec![0; capacity.div_ceil(64)],
            seen: vec![0; capacity],
            free_head: if capacity == 0 { NIL } else { 0 },
            len: 0,
            cursor: 0,
            hand: 0,
            victim_hints: [(NIL, 0); VICTIM_HINTS],
            hasher: KeyHasher::new(seed),
            timeouts: TimeoutsMs::new(timeouts),
            stats: TableStats::default(),
        }
    }

    /// Replaces the timeouts (they apply to existing flows too).
    pub fn set_timeouts(&mut self, timeouts: &Timeouts) {
        self.timeouts = TimeoutsMs::new(timeouts);
    }

    /// Number of flows (including expired ones not yet reaped).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no flow.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of flows.
    pub fn capacity(&self) -> usize {
        self.slab.len()
    }

    /// Housekeeping counters.
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Bytes of heap the table holds (slab, hash index, occupancy bits); constant after construction.
    pub fn heap_bytes(&self) -> usize {
        self.slab.capacity() * size_of::<Entry>()
            + self.index_allocation_bytes()
            + self.occupied.capacity() * size_of::<u64>()
            + self.seen.capacity() * size_of::<u16>()
    }

    /// Bytes of the hash index's allocation (constant: the index never grows).
    pub fn index_allocation_bytes(&self) -> usize {
        self.index.capacity() * size_of::<u32>()
    }

    #[inline]
    pub(super) fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash(key)
    }

    /// Identifies the hash function: equal for two tables exactly when they hash every key alike (it is a
    /// bijection of the seed).
    #[inline]
    pub(super) fn hasher_id(&self) -> u64 {
        self.hasher.per_hasher
    }

    /// The hash bits an index value keeps above its slot (and below its distance bits): from the hash's high
    /// half (its low bits pick the home position), bit 31 clear so no value is [`EMPTY`].
    #[inline(always)]
    fn index_tag(&self, hash: u64) -> u32 {
        ((hash >> 32) as u32) & !(self.slot_mask | self.dist_mask) & 0x7fff_ffff
    }

    /// The distance bits of a value `dist` positions past its home.
    #[inline(always)]
    fn dist_bits(&self, dist: usize) -> u32 {
        ((dist.min(DIST_SATURATED as usize) as u32) << DIST_SHIFT) & self.dist_mask
    }

    /// The distance of the value `v` at `pos` from its home: from its distance bits, or, when they are saturated
    /// (or the table has none), from its flow's key.
    #[inline]
    fn dist_of(&self, v: u32, pos: usize) -> usize {
        let stored = (v & self.dist_mask) >> DIST_SHIFT;
        if self.dist_mask != 0 && stored < DIST_SATURATED {
            return stored as usize;
        }
        self.slab.get((v & self.slot_mask) as usize).map_or(0, |e| {
            pos.wrapping_sub(self.home(self.hasher.hash_entry(e))) & self.index_mask
        })
    }

    /// The index value of the flow in `slot` whose key hashes to `hash`.
    #[inline(always)]
    fn index_value(&self, hash: u64, slot: u32) -> u32 {
        slot | self.index_tag(hash)
    }

    /// Where the probe run of `hash` starts.
    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.index_mask
    }

    /// The first slot along the probe run of `hash` whose index value carries the hash's bits and that `is_it`
    /// accepts; `None` at the run's end.
    #[inline(always)]
    fn walk(&self, hash: u64, mut is_it: impl FnMut(u32) -> bool) -> Option<u32> {
        let (tag, mask) = (self.index_tag(hash), self.slot_mask);
        let keep = !(mask | self.dist_mask);
        let positions = self.index_mask;
        // Exactly `positions + 1` long, so masked positions need no bounds check.
        let index = &self.index[..=positions];
        let mut pos = self.home(hash);
        loop {
            let v = index[pos & positions];
            if v == EMPTY {
                return None;
            }
            if v & keep == tag && is_it(v & mask) {
                return Some(v & mask);
            }
            pos += 1;
        }
    }

    /// The flow with `key` (live or expired), by its precomputed [`hash`](Self::hash).
    #[inline]
    pub(super) fn find_hashed(&self, hash: u64, key: &FlowKey) -> Option<FlowId> {
        self.walk(hash, |slot| {
            self.slab.get(slot as usize).is_some_and(|e| e.key_eq(key))
        })
        .map(FlowId)
    }

    /// The slot the flow hashing to `hash` most likely occupies, from the index alone (the slab is not read):
    /// the first indexed flow along the probe run whose stored hash bits match. `None` means no flow with
    /// this hash is tracked; a slot must be [`confirm`](Self::confirm)ed against the key.
    #[inline]
    pub(super) fn probe(&self, hash: u64) -> Option<u32> {
        self.walk(hash, |_| true)
    }

    /// Starts loading the index line a lookup of `hash` starts at into the cache. Prefetch a whole burst's
    /// lines in a loop of their own, then probe: the misses overlap instead of each lookup waiting in turn.
    #[inline]
    pub(super) fn prefetch_index(&self, hash: u64) {
        dpdk::prefetch(&self.index[self.home(hash)]);
    }

    /// When the table is full, starts loading what the next `count` inserts will touch to make room: the
    /// entries from the eviction hand on and, for those that will be evicted, their hash-index buckets (the
    /// removal's lookup). Nothing when a free slot is at hand. Reads the entries (their keys are hashed to find
    /// the buckets), so call it early enough for the entries' own loads to overlap: one call per burst.
    pub(super) fn prefetch_victims(&mut self, count: usize, now: u64) {
        if self.free_head != NIL || self.slab.is_empty() {
            return;
        }
        let cap = self.slab.len();
        let count = count.min(VICTIM_HINTS).min(cap);
        for k in 0..count {
            dpdk::prefetch(&self.slab[(self.hand + k) % cap]);
        }
        for k in 0..count {
            let slot = (self.hand + k) % cap;
            let e = &self.slab[slot];
            if e.is_occupied() && (!e.is_assured() || self.is_expired(e, now)) {
                let hash = self.hasher.hash_entry(e);
                self.prefetch_index(hash);
                // Kept for the removal (see `victim_hints`).
                self.victim_hints[slot % VICTIM_HINTS] = (slot as u32, hash);
            }
        }
    }

    /// Starts loading the entry in `slot` into the cache (see [`probe`](Self::probe)).
    #[inline]
    pub(super) fn prefetch(&self, slot: u32) {
        if let Some(e) = self.slab.get(slot as usize) {
            dpdk::prefetch(e);
        }
    }

    /// The flow with `key`, given what [`probe`](Self::probe) answered for its `hash`: the probed slot when it
    /// holds the key (the usual case), else a full lookup (another flow's hash bits matched first).
    #[inline]
    pub(super) fn confirm(&self, hash: u64, key: &FlowKey, probed: Option<u32>) -> Option<FlowId> {
        let slot = probed?;
        match self.slab.get(slot as usize) {
            Some(e) if e.key_eq(key) => Some(FlowId(slot)),
            _ => self.find_hashed(hash, key),
        }
    }

    /// The flow with `key`, whether or not it has expired.
    pub fn find(&self, key: &FlowKey) -> Option<FlowId> {
        self.find_hashed(self.hash(key), key)
    }

    /// The flow with `key`, treating one past its timeout as absent (see [`Lookup::Expired`]).
    pub fn lookup(&self, key: &FlowKey, now: u64) -> Lookup {
        match self.find(key) {
            None => Lookup::Miss,
            Some(id) if self.is_expired(&self.slab[id.index()], now) => Lookup::Expired(id),
            Some(id) => Lookup::Hit(id),
        }
    }

    /// Whether `e` is idle past its state's timeout at `now`.
    #[inline]
    pub fn is_expired(&self, e: &Entry, now: u64) -> bool {
        idle(e.last_seen, now) > self.timeouts.of(e)
    }

    /// Idle timeout of `e` in its current state, in milliseconds.
    pub fn timeout_of(&self, e: &Entry) -> u64 {
        u64::from(self.timeouts.of(e))
    }

    /// The flow `id`, mutably, if the slot is in use and the flow has not expired at `now`: one access to the
    /// entry for the established-packet path (the occupancy, the timeout and then the state and counters).
    #[inline]
    pub(super) fn live_mut(&mut self, id: FlowId, now: u64) -> Option<Live<'_>> {
        let timeouts = &self.timeouts;
        let entry = self
            .slab
            .get_mut(id.index())
            .filter(|e| e.is_occupied() && idle(e.last_seen, now) <= timeouts.of(e))?;
        Some(Live {
            entry,
            seen: self.seen.get_mut(id.index())?,
        })
    }

    /// The flow `id`, if the slot is in use.
    #[inline]
    pub fn get(&self, id: FlowId) -> Option<&Entry> {
        self.slab.get(id.index()).filter(|e| e.is_occupied())
    }

    /// The flow `id`, mutably, if the slot is in use.
    #[inline]
    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut Entry> {
        self.slab.get_mut(id.index()).filter(|e| e.is_occupied())
    }

    /// Inserts a flow first seen from the key's `originator` side at `now`, with zeroed counters, state and
    /// admission (set them through [`get_mut`](Self::get_mut)). An existing entry with the same key is
    /// replaced in place. When the table is full, the first expired or unestablished flow among [`EVICT_SCAN`]
    /// slots from the eviction hand is evicted (established flows never are), and the hand moves past it: a
    /// clock over the slots, so in a full table slots are reused in turn and the flow evicted is the one that
    /// has held its slot longest. Bounded, and normally O(1), work.
    pub fn insert(&mut self, key: FlowKey, originator: Side, now: u64) -> Result<Inserted, Full> {
        let hash = self.hash(&key);
        let mut displaced = None;
        let id = self.insert_hashed(
            hash,
            &key,
            originator,
            now,
            |_, old| displaced = Some(*old),
            |_| {},
        )?;
        Ok(Inserted { id, displaced })
    }

    /// [`insert`](Self::insert) by the key's precomputed [`hash`](Self::hash), showing the flow that gives up
    /// its place to `displaced` in place, just before it is overwritten, instead of copying it out: on the
    /// new-flow path of a full table that is every insert, and most callers only read a few of its fields.
    /// `displaced` is called only when the insert succeeds. `admit` completes the fresh entry (state,
    /// admission, the first packet) before it is stored: the slot is written once.
    pub(super) fn insert_hashed(
        &mut self,
        hash: u64,
        key: &FlowKey,
        originator: Side,
        now: u64,
        displaced: impl FnOnce(FlowId, &Entry),
        admit: impl FnOnce(&mut Entry),
    ) -> Result<FlowId, Full> {
        let mut entry = Entry::fresh(key, originator, now);
        admit(&mut entry);
        if let Some(id) = self.find_hashed(hash, key) {
            displaced(id, &self.slab[id.index()]);
            self.slab[id.index()] = entry;
            self.seen[id.index()] = seen_second(now);
            return Ok(id);
        }
        let slot = if self.free_head != NIL {
            let slot = self.free_head;
            self.free_head = self.slab[slot as usize].rule_id;
            self.len += 1;
            slot
        } else {
            // The victim's slot is taken over at once: unindexed, never vacated or put on the free list.
            let victim = self.find_victim(now).ok_or(Full)?;
            let (slot, hash) = self.victim_hints[victim.index() % VICTIM_HINTS];
            let hint = (slot == victim.0).then_some(hash);
            displaced(victim, &self.slab[victim.index()]);
            self.unindex_hinted(victim, hint);
            self.stats.evictions += 1;
            victim.0
        };
        self.slab[slot as usize] = entry;
        self.occupied[slot as usize / 64] |= 1 << (slot % 64);
        self.seen[slot as usize] = seen_second(now);
        // The end of the key's probe run: the index is at most two thirds full, so there is one.
        let (home, mask) = (self.home(hash), self.index_mask);
        let value = self.index_value(hash, slot);
        // `..=mask` is the whole index: masked positions need no bounds check.
        let mut pos = home;
        while self.index[..=mask][pos & mask] != EMPTY {
            pos += 1;
        }
        let value = value | self.dist_bits(pos - home);
        self.index[..=mask][pos & mask] = value;
        Ok(FlowId(slot))
    }

    /// The first evictable flow (expired, or not established) among [`EVICT_SCAN`] slots from the hand; the
    /// hand moves past it, or past the slots examined when there is none.
    fn find_victim(&mut self, now: u64) -> Option<FlowId> {
        let cap = self.slab.len();
        if cap == 0 {
            return None;
        }
        let scan = EVICT_SCAN.min(cap);
        for _ in 0..scan {
            self.stats.evict_slots_scanned += 1;
            let i = self.hand;
            self.hand = if i + 1 == cap { 0 } else { i + 1 };
            let e = &self.slab[i];
            if e.is_occupied() && (!e.is_assured() || self.is_expired(e, now)) {
                return Some(FlowId(i as u32));
            }
        }
        None
    }

    /// Removes the flow `id`, returning it; `None` if the slot is not in use.
    pub fn remove(&mut self, id: FlowId) -> Option<Entry> {
        self.remove_hinted(id, None)
    }

    /// [`remove`](Self::remove), trying the flow's hash as `hint` says first (the hash an eviction's prefetch
    /// computed, possibly for an earlier flow of the slot). A slot is indexed exactly once, so a value with its
    /// slot found along the hinted run is the flow's own, whatever the hint was; otherwise its key is hashed.
    pub(super) fn remove_hinted(&mut self, id: FlowId, hint: Option<u64>) -> Option<Entry> {
        let e = *self.get(id)?;
        self.unindex_hinted(id, hint);
        let slot = &mut self.slab[id.index()];
        *slot = Entry::VACANT;
        slot.rule_id = self.free_head;
        self.len -= 1;
        self.free_head = id.0;
        Some(e)
    }

    /// Takes the occupied slot `id` out of the index and the occupancy bits, its entry left as it is (see
    /// [`remove_hinted`](Self::remove_hinted) for `hint`).
    fn unindex_hinted(&mut self, id: FlowId, hint: Option<u64>) {
        let pos = match hint.and_then(|hash| self.index_position(hash, id.0)) {
            Some(pos) => Some(pos),
            None => self.index_position(self.hasher.hash_entry(&self.slab[id.index()]), id.0),
        };
        // Every flow in the slab is indexed along its run, so the walk with its own hash finds its value.
        if let Some(pos) = pos {
            self.unindex(pos);
        }
        self.occupied[id.index() / 64] &= !(1 << (id.0 % 64));
    }

    /// The index position of the value of `slot` along the probe run of `hash`, if there.
    fn index_position(&self, hash: u64, slot: u32) -> Option<usize> {
        let value = self.index_value(hash, slot);
        let mask = self.index_mask;
        // Exactly `mask + 1` long, so positions masked with `mask` need no bounds check.
        let index = &self.index[..=mask];
        let mut pos = self.home(hash);
        loop {
            let v = index[pos & mask];
            if v == EMPTY {
                return None;
            }
            if v & !self.dist_mask == value {
                return Some(pos & mask);
            }
            pos += 1;
        }
    }

    /// Empties index position `hole` and closes the gap (backward-shift deletion): each later value of the
    /// probe run whose home is not between the hole and itself moves back into the hole, so every run stays
    /// unbroken and lookups may stop at the first empty position, with no tombstones. Each value's home comes
    /// from its distance bits; only a value saturated there (rare: the index is at most two thirds full) has its
    /// flow's key hashed again.
    fn unindex(&mut self, mut hole: usize) {
        let (mask, dist_mask) = (self.index_mask, self.dist_mask);
        let mut pos = hole;
        loop {
            pos = (pos + 1) & mask;
            // `..=mask` is the whole index: masked positions need no bounds check.
            let v = self.index[..=mask][pos];
            if v == EMPTY {
                break;
            }
            // Distances along the run, modulo the index size: the value may move back if its home is no further
            // from it than the hole is; it is then that much closer to its home.
            let dist = self.dist_of(v, pos);
            let gap = pos.wrapping_sub(hole) & mask;
            if dist >= gap {
                self.index[..=mask][hole & mask] = (v & !dist_mask) | self.dist_bits(dist - gap);
                hole = pos;
            }
        }
        self.index[..=mask][hole & mask] = EMPTY;
    }

    /// Checks the index against the slab: every flow indexed once, reachable from its home without crossing
    /// an empty position, its distance bits its distance from that home as hashing its key finds it (the
    /// removal's shortcut held to the general path), and nothing else indexed.
    #[cfg(test)]
    pub(super) fn check_index(&self) {
        let mut indexed = 0;
        for (pos, &v) in self.index.iter().enumerate() {
            if v == EMPTY {
                continue;
            }
            indexed += 1;
            let e = self
                .get(FlowId(v & self.slot_mask))
                .expect("indexed slot in use");
            let hash = self.hasher.hash_entry(e);
            let dist = pos.wrapping_sub(self.home(hash)) & self.index_mask;
            assert_eq!(
                v,
                self.index_value(hash, v & self.slot_mask) | self.dist_bits(dist)
            );
            let mut at = self.home(hash);
            while at != pos {
                assert_ne!(
                    self.index[at], EMPTY,
                    "run of position {pos} broken at {at}"
                );
                at = (at + 1) & self.index_mask;
            }
        }
        assert_eq!(indexed, self.len);
    }

    /// The index, as stored.
    #[cfg(test)]
    pub(super) fn index_for_test(&self) -> &[u32] {
        &self.index
    }

    /// Positions in the index.
    #[cfg(test)]
    pub(super) fn index_positions(&self) -> usize {
        self.index.len()
    }

    /// Whether no index position is in use.
    #[cfg(test)]
    pub(super) fn index_is_empty_for_test(&self) -> bool {
        self.index.iter().all(|&v| v == EMPTY)
    }

    /// The state of flow `id` as of `now`, for the HA peer ([`FlowState`]); `None` if the slot is vacant.
    pub fn export(&self, id: FlowId, now: u64) -> Option<FlowState> {
        let e = self.get(id)?;
        Some(FlowState {
            key: e.key(),
            originator: e.originator(),
            seen_reply: e.seen_reply(),
            logged: e.logged(),
            monitored: e.monitored(),
            tcp: e.tcp,
            rule_id: e.rule_id,
            policy_version: e.policy_version,
            idle_ms: idle(e.last_seen, now),
            age_s: ((now / 1000) as u32).saturating_sub(e.created_s),
            packets: [e.packets(Dir::Original), e.packets(Dir::Reply)],
            bytes: [e.bytes(Dir::Original), e.bytes(Dir::Reply)],
        })
    }

    /// Exports the flows of the `budget` slots from `from` on (the HA sync's sweep, a budget per poll-loop
    /// iteration like expiry); answers where the next call starts, 0 once the end of the slab is reached. `out`
    /// answers whether it took the flow: the first one it refuses stops the export, and the answer is that
    /// flow's slot (so the next call starts with it, and nothing taken is exported twice).
    pub fn export_slots<F: FnMut(FlowState) -> bool>(
        &self,
        from: usize,
        budget: usize,
        now: u64,
        mut out: F,
    ) -> usize {
        let end = from.saturating_add(budget).min(self.slab.len());
        for i in from..end {
            if let Some(state) = self.export(FlowId(i as u32), now) {
                if !out(state) {
                    return i;
                }
            }
        }
        if end == self.slab.len() {
            0
        } else {
            end
        }
    }

    /// Creates the flow `state` describes, or overwrites the flow with its key, as of `now` (the HA standby
    /// applying the active's updates). `displaced` of the answer is another flow that gave up its place (an
    /// unestablished one evicted from a full table), never the flow updated.
    pub fn import(&mut self, state: &FlowState, now: u64) -> Result<Inserted, Full> {
        let mut inserted = self.insert(state.key, state.originator, now)?;
        if inserted.displaced.is_some_and(|d| d.key_eq(&state.key)) {
            inserted.displaced = None;
        }
        let e = &mut self.slab[inserted.id.index()];
        e.tcp = state.tcp;
        e.tcp.mark_synced();
        e.rule_id = state.rule_id;
        e.policy_version = state.policy_version;
        e.set_flag(SEEN_REPLY, state.seen_reply);
        e.set_flag(LOGGED, state.logged);
        e.set_flag(MONITORED, state.monitored);
        e.last_seen = (now as u32).wrapping_sub(state.idle_ms);
        e.created_s = ((now / 1000) as u32).saturating_sub(state.age_s);
        // The sweep's copy of the last packet's second, so the flow expires on the active's schedule.
        self.seen[inserted.id.index()] = seen_second(now.saturating_sub(u64::from(state.idle_ms)));
        for dir in Dir::BOTH {
            let i = dir.index();
            e.counters[i] = Counters::from_totals(state.packets[i], state.bytes[i]);
        }
        Ok(inserted)
    }

    /// Removes the flow `id` if it has expired at `now`, returning it.
    pub fn reap(&mut self, id: FlowId, now: u64) -> Option<Entry> {
        let e = self.get(id)?;
        if self.is_expired(e, now) {
            self.remove(id)
        } else {
            None
        }
    }

    /// Advances the expiry cursor over `budget` slots, removing the flows idle past their timeout and passing
    /// each to `closed`. Call once per poll-loop iteration: the whole table is swept every
    /// `capacity / budget` calls, without ever scanning it at once. Returns the number removed.
    pub fn expire<F: FnMut(FlowId, &Entry)>(
        &mut self,
        now: u64,
        budget: usize,
        mut closed: F,
    ) -> usize {
        let cap = self.slab.len();
        let mut removed = 0;
        let mut left = budget.min(cap);
        // Slot by slot as before, a word of occupancy bits at a time: only occupied slots are read.
        while left > 0 {
            let start = self.cursor;
            let (word, bit) = (start / 64, start % 64);
            let span = (64 - bit).min(left).min(cap - start);
            left -= span;
            self.cursor = if start + span == cap { 0 } else { start + span };
            let mask = (u64::MAX >> (64 - span)) << bit;
            let mut due = self.occupied[word] & mask;
            let (now_s, skip) = (seen_second(now), self.timeouts.sweep_skip_s);
            while due != 0 {
                let i = word * 64 + due.trailing_zeros() as usize;
                due &= due - 1;
                if now_s.wrapping_sub(self.seen[i]) < skip {
                    continue;
                }
                if self.is_expired(&self.slab[i], now) {
                    let id = FlowId(i as u32);
                    if let Some(old) = self.remove(id) {
                        closed(id, &old);
                        removed += 1;
                    }
                }
            }
        }
        removed
    }

    /// Removes every flow for which `pred` holds (control path: O(capacity)); returns how many.
    pub fn remove_where<F: FnMut(FlowId, &Entry) -> bool>(&mut self, mut pred: F) -> usize {
        let mut removed = 0;
        for i in 0..self.slab.len() {
            let id = FlowId(i as u32);
            let e = &self.slab[i];
            if e.is_occupied() && pred(id, e) {
                self.remove(id);
                removed += 1;
            }
        }
        removed
    }

    /// Every flow, in slab order (control path: O(capacity)).
    pub fn iter(&self) -> impl Iterator<Item = (FlowId, &Entry)> + '_ {
        self.slab
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_occupied())
            .map(|(i, e)| (FlowId(i as u32), e))
    }

    #[cfg(test)]
    pub(super) fn hash_for_test(&self, key: &FlowKey) -> u64 {
        self.hash(key)
    }
}
