//! The connection table: a pre-allocated slab of entries indexed by a pre-sized hash table of slab indices.
//!
//! Nothing here allocates after [`ConnTable::new`]: the slab and its intrusive free list are filled at
//! construction, and the hash index is sized so it never has to grow — when hashbrown would want to rehash
//! (its tombstones used up the spare room) the index is rebuilt in place from the slab instead
//! ([`TableStats::index_rebuilds`]), which allocates nothing.
//!
//! **Hash flooding.** Keys are hashed with foldhash keyed by a per-boot random seed supplied by the caller, so
//! tuples crafted offline to collide (or learned to collide on another gateway or boot) do not collide here.
//! foldhash is not a cryptographic PRF; the seed raises the bar, and the bounded table (a hard cap, no growth,
//! load factor at most 70 % of the buckets) bounds what any collision can cost.

use std::hash::Hasher;
use std::net::IpAddr;

use foldhash::quality::FoldHasher;
use foldhash::SharedSeed;
use hashbrown::HashTable;

use super::key::{self, Dir, FlowKey, Side, FAMILY_V6};
use super::tcp::{self, TcpConnState, TcpState};
use super::Timeouts;

/// Largest supported capacity (slab indices are `u32`, with one value reserved).
pub const MAX_CAPACITY: usize = 1 << 31;

/// Most slots examined, from the eviction hand on, when the table is full and a victim is sought.
pub const EVICT_SCAN: usize = 16;

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

/// Timeouts in milliseconds, laid out for the expiry check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeoutsMs {
    tcp: [u32; 9],
    udp: u32,
    udp_stream: u32,
    icmp: u32,
    other: u32,
}

impl TimeoutsMs {
    fn new(t: &Timeouts) -> Self {
        let ms = |ms: u64| ms.min(u64::from(MAX_TIMEOUT_MS)) as u32;
        let s = |secs: u32| ms(u64::from(secs) * 1000);
        TimeoutsMs {
            tcp: TcpConnState::ALL.map(|st| ms(tcp::timeout_ms(st, t))),
            udp: s(t.udp),
            udp_stream: s(t.udp_stream),
            icmp: s(t.icmp),
            other: s(t.other),
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
    /// Rebuilds of the hash index in place (instead of a rehash that could allocate).
    pub index_rebuilds: u64,
    /// Slots examined looking for a victim (at most [`EVICT_SCAN`] per insert into a full table).
    pub evict_slots_scanned: u64,
}

/// Hash bits stored in the index next to a slot start here: above every bit hashbrown uses to pick a bucket
/// (at most 32 of them, for [`MAX_CAPACITY`]) minus the slot bits, and below its 7-bit control tag (bits 57..64).
const INDEX_TAG_SHIFT: u32 = 24;

/// A fixed-capacity connection table owned by one worker.
///
/// The index stores one `u32` per flow: the slab slot in the low bits and, in the bits the slot does not need,
/// more bits of the key's hash. With hashbrown's own 7-bit tag they let [`probe`](Self::probe) pick the flow's
/// slot without reading the slab (so a burst can probe first and prefetch the entries), and a full lookup
/// reads the slab only for a near-certain match.
#[derive(Debug)]
pub struct ConnTable {
    slab: Vec<Entry>,
    index: HashTable<u32>,
    /// Mask of the slot bits of an index value.
    slot_mask: u32,
    /// One bit per slot, set while the slot holds a flow: the expiry sweep reads 64 slots' occupancy in one
    /// word instead of one cache line per slot.
    occupied: Vec<u64>,
    free_head: u32,
    len: usize,
    cursor: usize,
    /// Where the next victim search starts when the table is full (see [`insert`](Self::insert)).
    hand: usize,
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
        // A quarter more than the cap keeps the index at most ~70 % loaded and leaves hashbrown room for
        // tombstones, so rebuilds stay rare.
        let index = HashTable::with_capacity(capacity + capacity / 4);
        // Slots are below `capacity`, so they need the bits of `capacity - 1`.
        let slot_bits = usize::BITS - capacity.saturating_sub(1).leading_zeros();
        let slot_mask = u32::try_from((1u64 << slot_bits) - 1).unwrap_or(u32::MAX);
        ConnTable {
            slab,
            index,
            slot_mask,
            occupied: vec![0; capacity.div_ceil(64)],
            free_head: if capacity == 0 { NIL } else { 0 },
            len: 0,
            cursor: 0,
            hand: 0,
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
            + self.index.allocation_size()
            + self.occupied.capacity() * size_of::<u64>()
    }

    /// Bytes of the hash index's allocation (constant: the index never grows).
    pub fn index_allocation_bytes(&self) -> usize {
        self.index.allocation_size()
    }

    #[inline]
    pub(super) fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash(key)
    }

    /// The hash bits an index value keeps above its slot.
    #[inline(always)]
    fn index_tag(&self, hash: u64) -> u32 {
        ((hash >> INDEX_TAG_SHIFT) as u32) & !self.slot_mask
    }

    /// The index value of the flow in `slot` whose key hashes to `hash`.
    #[inline(always)]
    fn index_value(&self, hash: u64, slot: u32) -> u32 {
        slot | self.index_tag(hash)
    }

    /// The hash of the flow an index value points to (hashbrown's rehash callback; the table never lets it
    /// run, see [`rebuild_index`](Self::rebuild_index)).
    fn rehash_of(hasher: &KeyHasher, slab: &[Entry], slot_mask: u32, value: u32) -> u64 {
        slab.get((value & slot_mask) as usize)
            .map_or(0, |e| hasher.hash_entry(e))
    }

    /// The flow with `key` (live or expired), by its precomputed [`hash`](Self::hash).
    #[inline]
    pub(super) fn find_hashed(&self, hash: u64, key: &FlowKey) -> Option<FlowId> {
        let (slab, tag, mask) = (&self.slab, self.index_tag(hash), self.slot_mask);
        self.index
            .find(hash, |&v| {
                v & !mask == tag && slab.get((v & mask) as usize).is_some_and(|e| e.key_eq(key))
            })
            .map(|&v| FlowId(v & mask))
    }

    /// The slot the flow hashing to `hash` most likely occupies, from the index alone (the slab is not read):
    /// the first indexed flow along the probe sequence whose stored hash bits match. `None` means no flow with
    /// this hash is tracked; a slot must be [`confirm`](Self::confirm)ed against the key.
    #[inline]
    pub(super) fn probe(&self, hash: u64) -> Option<u32> {
        let (tag, mask) = (self.index_tag(hash), self.slot_mask);
        self.index
            .find(hash, |&v| v & !mask == tag)
            .map(|&v| v & mask)
    }

    /// Starts loading the index buckets a lookup of `hash` compares into the cache: walks the probe sequence
    /// (reading the control bytes) and prefetches, rather than reads, each candidate bucket.
    #[inline]
    pub(super) fn prefetch_index(&self, hash: u64) {
        let _ = self.index.find(hash, |v| {
            dpdk::prefetch(v);
            false
        });
    }

    /// When the table is full, starts loading what the next `count` inserts will touch to make room: the
    /// entries from the eviction hand on and, for those that will be evicted, their hash-index buckets (the
    /// removal's lookup). Nothing when a free slot is at hand. Reads the entries (their keys are hashed to find
    /// the buckets), so call it early enough for the entries' own loads to overlap: one call per burst.
    pub(super) fn prefetch_victims(&self, count: usize, now: u64) {
        if self.free_head != NIL || self.slab.is_empty() {
            return;
        }
        let cap = self.slab.len();
        let count = count.min(EVICT_SCAN).min(cap);
        for k in 0..count {
            dpdk::prefetch(&self.slab[(self.hand + k) % cap]);
        }
        for k in 0..count {
            let e = &self.slab[(self.hand + k) % cap];
            if e.is_occupied() && (!e.is_assured() || self.is_expired(e, now)) {
                self.prefetch_index(self.hasher.hash_entry(e));
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
        self.insert_hashed(hash, &key, originator, now)
    }

    pub(super) fn insert_hashed(
        &mut self,
        hash: u64,
        key: &FlowKey,
        originator: Side,
        now: u64,
    ) -> Result<Inserted, Full> {
        if let Some(id) = self.find_hashed(hash, key) {
            let slot = &mut self.slab[id.index()];
            let old = *slot;
            *slot = Entry::fresh(key, originator, now);
            return Ok(Inserted {
                id,
                displaced: Some(old),
            });
        }
        let mut displaced = None;
        if self.free_head == NIL {
            let victim = self.find_victim(now).ok_or(Full)?;
            displaced = self.remove(victim);
            self.stats.evictions += 1;
        }
        let slot = self.free_head;
        let Some(free) = self.slab.get_mut(slot as usize) else {
            return Err(Full);
        };
        self.free_head = free.rule_id;
        // hashbrown would rehash (and might allocate) on an insert with no growth left; rebuild instead, while
        // the new slot is still vacant so it is not indexed twice.
        if self.index.len() >= self.index.capacity() {
            self.rebuild_index();
        }
        self.slab[slot as usize] = Entry::fresh(key, originator, now);
        self.occupied[slot as usize / 64] |= 1 << (slot % 64);
        self.len += 1;
        let value = self.index_value(hash, slot);
        let (slab, hasher, mask) = (&self.slab, &self.hasher, self.slot_mask);
        self.index
            .insert_unique(hash, value, |&v| Self::rehash_of(hasher, slab, mask, v));
        Ok(Inserted {
            id: FlowId(slot),
            displaced,
        })
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

    /// Rebuilds the index from the slab, reusing its allocation: clears tombstones without a rehash that
    /// could allocate. O(capacity); rare (see the module documentation).
    fn rebuild_index(&mut self) {
        self.stats.index_rebuilds += 1;
        self.index.clear();
        let mask = self.slot_mask;
        let (slab, hasher, index) = (&self.slab, &self.hasher, &mut self.index);
        for (i, e) in slab.iter().enumerate() {
            if e.is_occupied() {
                let hash = hasher.hash_entry(e);
                let value = (i as u32) | (((hash >> INDEX_TAG_SHIFT) as u32) & !mask);
                index.insert_unique(hash, value, |&v| Self::rehash_of(hasher, slab, mask, v));
            }
        }
    }

    /// Removes the flow `id`, returning it; `None` if the slot is not in use.
    pub fn remove(&mut self, id: FlowId) -> Option<Entry> {
        let e = *self.get(id)?;
        let hash = self.hasher.hash_entry(&e);
        let value = self.index_value(hash, id.0);
        if let Ok(found) = self.index.find_entry(hash, |&v| v == value) {
            found.remove();
        }
        let slot = &mut self.slab[id.index()];
        *slot = Entry::VACANT;
        slot.rule_id = self.free_head;
        self.occupied[id.index() / 64] &= !(1 << (id.0 % 64));
        self.free_head = id.0;
        self.len -= 1;
        Some(e)
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
            while due != 0 {
                let i = word * 64 + due.trailing_zeros() as usize;
                due &= due - 1;
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
