//! The per-packet entry point: [`Tracker::process`] classifies a parsed frame against the worker's table.

use net::icmpv4::types as icmp4;
use net::icmpv6::types as icmp6;
use net::tcp::{TcpOption, TcpPacket};
use net::{Ipv4Frame, Parsed, TcpFlags, L3, L4};

use super::key::{self, Dir, FlowKey, Side};
use super::segments::{SegmentKey, SegmentTable};
use super::sources::{self, FloodLimit, SourceTable};
use super::sync::{FlowState, SyncNotes};
use super::table::{ConnTable, Entry, FlowId, Full, Inserted, TableStats};
use super::tcp::{Strictness, TcpRefusal, TcpSegment, TcpState, TcpVerdict};
use super::Timeouts;

/// The verdict for a packet of the tracked flow `e` (already accounted).
#[inline(always)]
fn known(id: FlowId, dir: Dir, e: &Entry) -> Track {
    Track::Known {
        id,
        dir,
        policy_version: e.policy_version(),
        rule_id: e.rule_id(),
        monitored: e.monitored(),
    }
}

/// Why the tracker refuses a packet (besides a full table, which [`Tracker::commit_new`] reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The TCP state machine refused the segment.
    Tcp(TcpRefusal),
    /// An ICMP/ICMPv6 echo reply with no matching request flow.
    IcmpUnsolicitedReply,
    /// An echo request from the responder of an echo flow, or a reply from its originator.
    IcmpEchoDirection,
    /// An ICMP/ICMPv6 error that quotes no tracked flow (or is not addressed to the quoted packet's sender).
    IcmpErrorUnrelated,
    /// A new flow the policy allows, over one of its flood limits ([`Tracker::commit_new`]).
    Limit(FloodLimit),
}

impl Refusal {
    /// Number of distinct reasons.
    pub const COUNT: usize = TcpRefusal::ALL.len() + 3 + FloodLimit::ALL.len();

    /// Every reason, in [`index`](Self::index) order.
    pub const ALL: [Refusal; Self::COUNT] = [
        Refusal::Tcp(TcpRefusal::InvalidFlags),
        Refusal::Tcp(TcpRefusal::NotSyn),
        Refusal::Tcp(TcpRefusal::UnexpectedSyn),
        Refusal::Tcp(TcpRefusal::UnexpectedSynAck),
        Refusal::Tcp(TcpRefusal::InvalidState),
        Refusal::Tcp(TcpRefusal::OutOfWindow),
        Refusal::Tcp(TcpRefusal::RstOutOfWindow),
        Refusal::IcmpUnsolicitedReply,
        Refusal::IcmpEchoDirection,
        Refusal::IcmpErrorUnrelated,
        Refusal::Limit(FloodLimit::HalfOpenPerSource),
        Refusal::Limit(FloodLimit::NewPerSecondPerSource),
        Refusal::Limit(FloodLimit::ConnectionsPerSegment),
    ];

    /// Dense index, e.g. into an array of counters.
    pub const fn index(self) -> usize {
        match self {
            Refusal::Tcp(r) => r as usize,
            Refusal::IcmpUnsolicitedReply => TcpRefusal::ALL.len(),
            Refusal::IcmpEchoDirection => TcpRefusal::ALL.len() + 1,
            Refusal::IcmpErrorUnrelated => TcpRefusal::ALL.len() + 2,
            Refusal::Limit(l) => TcpRefusal::ALL.len() + 3 + l as usize,
        }
    }

    /// Short snake_case name, stable for metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::Tcp(r) => r.as_str(),
            Refusal::IcmpUnsolicitedReply => "icmp_unsolicited_reply",
            Refusal::IcmpEchoDirection => "icmp_echo_direction",
            Refusal::IcmpErrorUnrelated => "icmp_error_unrelated",
            Refusal::Limit(l) => l.as_str(),
        }
    }
}

/// Packets the tracker does not keep state for; the caller applies stateless policy (or drops).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Untracked {
    /// Not IPv4/IPv6 (ARP, other EtherTypes).
    NotIp,
    /// A non-first IP fragment: no transport header to key on.
    Fragment,
    /// ICMP/ICMPv6 that is neither echo nor a relatable error (neighbour discovery, router messages,
    /// redirects, timestamps, ...).
    IcmpInfo,
}

/// How the flow of a new packet is kept, decided before policy so [`Tracker::commit_new`] has nothing to
/// re-derive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFlow {
    key: FlowKey,
    /// The key's hash, as the lookup that missed computed it, and the hash function's identity (see
    /// [`Tracker::commit_new`]).
    hash: u64,
    hasher: u64,
    originator: Side,
    tcp: TcpState,
    bytes: u32,
    reuses: bool,
}

impl NewFlow {
    /// A placeholder, e.g. to initialize a burst's array once.
    pub const EMPTY: NewFlow = NewFlow {
        key: FlowKey::ZERO,
        hash: 0,
        hasher: 0,
        originator: Side::First,
        tcp: TcpState::EMPTY,
        bytes: 0,
        reuses: false,
    };

    /// The flow's key.
    pub const fn key(&self) -> &FlowKey {
        &self.key
    }

    /// The key's hash under the tracker that looked the flow up: two new flows of one tracker with different
    /// hashes have different keys.
    pub const fn hash(&self) -> u64 {
        self.hash
    }

    /// The key endpoint that sent this (first) packet.
    pub const fn originator(&self) -> Side {
        self.originator
    }

    /// Whether an entry with this key exists (expired, or a finished TCP connection whose tuple a new SYN
    /// reuses): committing replaces it and returns it as [`Committed::displaced`].
    pub const fn reuses_entry(&self) -> bool {
        self.reuses
    }
}

/// What [`Tracker::process`] tells the worker to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// A packet of a tracked flow; its state and counters are updated: forward it (after re-checking policy if
    /// the flow's `policy_version` is stale and the policy says so).
    Known {
        /// The flow.
        id: FlowId,
        /// Direction of the packet.
        dir: Dir,
        /// Version of the policy that admitted the flow.
        policy_version: u32,
        /// The rule that admitted the flow (its counters count the packet).
        rule_id: u32,
        /// Admitted in monitor mode (the policy would deny it).
        monitored: bool,
    },
    /// No flow yet: classify the packet against the policy, then [`Tracker::commit_new`] if it is allowed
    /// (or drop it, leaving no state behind).
    New(NewFlow),
    /// An ICMP/ICMPv6 error about a tracked flow: forward it (policy permitting). The flow is not refreshed.
    Related {
        /// The flow the quoted packet belongs to.
        id: FlowId,
        /// Direction the error travels in (opposite to the quoted packet).
        dir: Dir,
    },
    /// Not connection-tracked; see [`Untracked`].
    Untracked(Untracked),
    /// Drop silently and count `reason`.
    Drop(Refusal),
}

/// What the policy decided for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Admission {
    /// The matching rule.
    pub rule_id: u32,
    /// The policy version that matched.
    pub policy_version: u32,
    /// The rule asks for the flow to be logged.
    pub log: bool,
    /// Admitted in monitor mode: the policy would deny it.
    pub monitor: bool,
    /// The segment the flow's source is in, when the per-segment flood limit is on (see [`super::segments`]).
    pub segment: Option<SegmentKey>,
}

/// Why [`Tracker::commit_new`] did not track a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CommitError {
    /// The table is full of established flows (the caller counts `table_full`).
    #[error("connection table full")]
    Full,
    /// The flow's source is over a flood limit (the caller counts [`Refusal::Limit`]).
    #[error("over the flood limit {}", .0.as_str())]
    Limit(FloodLimit),
}

impl From<Full> for CommitError {
    fn from(_: Full) -> Self {
        CommitError::Full
    }
}

/// A committed new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The new flow.
    pub id: FlowId,
    /// The flow that gave up its place, to be reported as closed (see [`super::Inserted::displaced`]).
    pub displaced: Option<Entry>,
}

/// Slot value of a [`Prepared`] whose probe found nothing (or that was not probed).
const NO_SLOT: u32 = u32::MAX;

/// Where a packet stands between the stages of [`Tracker::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Decided without the table.
    Untracked(Untracked),
    /// Decided without the table.
    Drop(Refusal),
    /// A packet of the flow `key`.
    Flow,
    /// An ICMP error quoting a packet of the flow `key`.
    Related,
}

/// One packet between [`Tracker::prepare`] (or [`Tracker::prepare_common`]), [`Tracker::probe`] and
/// [`Tracker::finish`]: its flow key and hash, computed once, what finishing needs of its transport header, and
/// the probed slot. A plain value, so a worker can keep an array of them for a burst and reuse it from burst to
/// burst without clearing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    key: FlowKey,
    hash: u64,
    bytes: u32,
    slot: u32,
    stage: Stage,
    side: Side,
    transport: Transport,
}

/// What [`Tracker::finish`] needs of a packet's transport header, read once by the prepare stage so finishing
/// needs nothing but the [`Prepared`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// A TCP segment (with its window scale if it is a SYN).
    Tcp(TcpSegment),
    /// An ICMP or ICMPv6 echo request (`true`) or reply.
    Echo { request: bool },
    /// UDP, other protocols, ICMP errors.
    Other,
}

impl Prepared {
    /// A placeholder (a not-IP packet), e.g. to initialize a burst's array once.
    pub const EMPTY: Prepared = Prepared {
        key: FlowKey::ZERO,
        hash: 0,
        bytes: 0,
        slot: NO_SLOT,
        stage: Stage::Untracked(Untracked::NotIp),
        side: Side::First,
        transport: Transport::Other,
    };
}

impl Prepared {
    /// The verdict of a packet decided by the packet alone — not IP, a non-first fragment, ICMP that is
    /// neither echo nor a relatable error, an error quoting nothing usable — exactly what
    /// [`Tracker::finish`] would answer ([`Track::Untracked`] as `Ok`, [`Track::Drop`] as `Err`); `None` when
    /// its flow has to be looked up (probe, then finish).
    #[inline]
    pub fn decided(&self) -> Option<Result<Untracked, Refusal>> {
        match self.stage {
            Stage::Untracked(u) => Some(Ok(u)),
            Stage::Drop(r) => Some(Err(r)),
            Stage::Flow | Stage::Related => None,
        }
    }
}

impl Default for Prepared {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// One worker's connection tracker: its table plus the TCP strictness. Single-threaded; allocates only in
/// [`new`](Self::new).
#[derive(Debug)]
pub struct Tracker {
    table: ConnTable,
    strictness: Strictness,
    sources: SourceTable,
    segments: SegmentTable,
    /// Flows created, changed or removed by the packet path, for the HA sync (off unless active in a pair).
    notes: Box<SyncNotes>,
}

/// The window-scale option of a SYN's header (the transport bytes from `l4_offset` to `ip_end`), if present
/// and well formed.
fn wscale(frame: &[u8], l4_offset: usize, ip_end: usize) -> Option<u8> {
    let seg = TcpPacket::new_checked(frame.get(l4_offset..ip_end)?).ok()?;
    seg.options().find_map(|o| match o {
        Ok(TcpOption::WindowScale(s)) => Some(Some(s)),
        Ok(_) => None,
        Err(_) => Some(None),
    })?
}

/// The [`Transport`] of a TCP segment: its fields, and the window scale if it is a SYN.
#[inline(always)]
fn tcp_transport(l4: L4, wscale_of_syn: impl FnOnce() -> Option<u8>) -> Transport {
    match l4 {
        L4::Tcp {
            flags,
            seq,
            ack,
            window,
            payload_len,
            ..
        } => Transport::Tcp(TcpSegment {
            flags,
            seq,
            ack,
            window,
            payload_len,
            wscale: if flags.contains(TcpFlags::SYN) {
                wscale_of_syn()
            } else {
                None
            },
        }),
        _ => Transport::Other,
    }
}

/// IP length of the packet, for the byte counters.
fn ip_bytes(frame: &[u8], p: &Parsed) -> u32 {
    key::ip_end(frame, p).map_or(0, |end| end.saturating_sub(p.l3_offset) as u32)
}

/// Whether an ICMP type is an error that may be related to a flow.
fn relatable_error(p: &Parsed) -> bool {
    match p.l4 {
        L4::Icmp { ty, .. } => matches!(
            ty,
            icmp4::DEST_UNREACHABLE | icmp4::TIME_EXCEEDED | icmp4::PARAMETER_PROBLEM
        ),
        L4::Icmpv6 { ty, .. } => matches!(
            ty,
            icmp6::DEST_UNREACHABLE
                | icmp6::PACKET_TOO_BIG
                | icmp6::TIME_EXCEEDED
                | icmp6::PARAMETER_PROBLEM
        ),
        _ => false,
    }
}

impl Tracker {
    /// A tracker with room for `capacity` flows; see [`ConnTable::new`] for `seed`.
    pub fn new(capacity: usize, seed: u64, timeouts: &Timeouts, strictness: Strictness) -> Self {
        Tracker {
            table: ConnTable::with_timeouts(capacity, seed, timeouts),
            strictness,
            sources: SourceTable::new(capacity, seed),
            segments: SegmentTable::new(capacity),
            notes: SyncNotes::new(),
        }
    }

    /// The per-source flood limits' table (statistics).
    pub fn sources(&self) -> &SourceTable {
        &self.sources
    }

    /// The per-segment flood limit's table (statistics).
    pub fn segments(&self) -> &SegmentTable {
        &self.segments
    }

    /// Changes the flood limits (policy reload).
    pub fn set_flood_limits(&mut self, limits: policy::FloodLimits) {
        self.sources.set_limits(limits);
        self.segments.set_limit(limits.connections_per_segment);
    }

    /// Removes the flow `id` (a kill, a revocation), returning it.
    pub fn remove(&mut self, id: FlowId) -> Option<Entry> {
        let removed = self.table.remove(id)?;
        self.segments.removed(id);
        self.notes.ended(removed.key());
        Some(removed)
    }

    /// Turns noting flows created, changed (TCP state) and removed for the HA sync on (the active member) or
    /// off; see [`take_notes`](Self::take_notes).
    pub fn set_noting(&mut self, on: bool) {
        self.notes.set_on(on);
    }

    /// Hands out what was noted since the last call — the keys of removed flows, then the current state of
    /// each flow created or changed — and forgets it; answers whether notes were dropped (more than fit
    /// between two calls: the caller resyncs).
    pub fn take_notes(
        &mut self,
        now: u64,
        mut ended: impl FnMut(FlowKey),
        mut changed: impl FnMut(FlowState),
    ) -> bool {
        let table = &self.table;
        self.notes.take(&mut ended, |id| {
            // A flow created and removed since is gone; its end was handed out first.
            if let Some(state) = table.export(id, now) {
                changed(state);
            }
        })
    }

    /// Creates or overwrites a flow from the HA peer's state (the standby applying the active's updates). An
    /// imported flow is not counted against the per-segment limit, and whatever held its slot before is counted
    /// out.
    pub fn import(&mut self, state: &FlowState, now: u64) -> Result<Inserted, Full> {
        let inserted = self.table.import(state, now)?;
        self.segments.removed(inserted.id);
        Ok(inserted)
    }

    /// Removes every flow for which `pred` holds (control path: O(capacity)); returns how many.
    pub fn remove_where<F: FnMut(FlowId, &Entry) -> bool>(&mut self, mut pred: F) -> usize {
        let segments = &mut self.segments;
        self.table.remove_where(|id, e| {
            let remove = pred(id, e);
            if remove {
                segments.removed(id);
            }
            remove
        })
    }

    /// The table (listing, statistics).
    pub fn table(&self) -> &ConnTable {
        &self.table
    }

    /// The table, mutably (killing flows, re-admission after a policy change).
    pub fn table_mut(&mut self) -> &mut ConnTable {
        &mut self.table
    }

    /// Housekeeping counters of the table.
    pub fn stats(&self) -> TableStats {
        self.table.stats()
    }

    /// Current TCP strictness.
    pub fn strictness(&self) -> Strictness {
        self.strictness
    }

    /// Changes the TCP strictness (policy reload).
    pub fn set_strictness(&mut self, strictness: Strictness) {
        self.strictness = strictness;
    }

    /// Changes the timeouts (policy reload).
    pub fn set_timeouts(&mut self, timeouts: &Timeouts) {
        self.table.set_timeouts(timeouts);
    }

    /// Classifies one parsed frame (`parsed` must come from [`net::parse`] of `frame`) and updates the state
    /// of its flow. The established-flow path costs one hash and, normally, one probe.
    ///
    /// The same as [`prepare`](Self::prepare), [`probe`](Self::probe) and [`finish`](Self::finish) in a row;
    /// a worker runs those stages over a whole burst instead, so the table's memory accesses overlap.
    pub fn process(&mut self, frame: &[u8], parsed: &Parsed, now: u64) -> Track {
        let mut p = self.prepare(frame, parsed);
        self.probe(&mut p);
        self.finish(&p, now)
    }

    /// Stage 1 of [`process`](Self::process): everything that depends on the packet alone — what kind of
    /// packet it is for the tracker, its flow key, the key's hash, its IP length and (SYNs) window scale.
    /// Reads nothing of the table but its hash seed.
    #[inline]
    pub fn prepare(&self, frame: &[u8], parsed: &Parsed) -> Prepared {
        let mut p = Prepared::EMPTY;
        self.prepare_into(frame, parsed, &mut p);
        p
    }

    /// [`prepare`](Self::prepare) into a caller's `Prepared` (e.g. a slot of a burst's array): saves copying
    /// the result, which the fast path feels.
    #[inline]
    pub fn prepare_into(&self, frame: &[u8], parsed: &Parsed, p: &mut Prepared) {
        p.slot = NO_SLOT;
        if !matches!(parsed.l3, L3::Ipv4 { .. } | L3::Ipv6 { .. }) {
            p.stage = Stage::Untracked(Untracked::NotIp);
            return;
        }
        if parsed.l4_offset.is_none() {
            p.stage = Stage::Untracked(Untracked::Fragment);
            return;
        }
        let keyed = match parsed.l4 {
            L4::Icmp { ident, .. } | L4::Icmpv6 { ident, .. } => ident.is_some(),
            _ => true,
        };
        if !keyed {
            // ICMP that is not echo: an error is judged by the flow it quotes.
            if !relatable_error(parsed) {
                p.stage = Stage::Untracked(Untracked::IcmpInfo);
                return;
            }
            let Some((key, quoted_side)) = key::quoted_key(frame, parsed) else {
                p.stage = Stage::Drop(Refusal::IcmpErrorUnrelated);
                return;
            };
            p.stage = Stage::Related;
            p.hash = self.table.hash(&key);
            p.key = key;
            p.side = quoted_side;
            return;
        }
        let Some((key, side)) = key::packet_key(parsed) else {
            p.stage = Stage::Untracked(Untracked::NotIp);
            return;
        };
        p.stage = Stage::Flow;
        p.hash = self.table.hash(&key);
        p.key = key;
        p.side = side;
        p.bytes = ip_bytes(frame, parsed);
        p.transport = match parsed.l4 {
            L4::Icmp { ty, ident, .. } if ident.is_some() => Transport::Echo {
                request: ty == icmp4::ECHO_REQUEST,
            },
            L4::Icmpv6 { ty, ident, .. } if ident.is_some() => Transport::Echo {
                request: ty == icmp6::ECHO_REQUEST,
            },
            l4 => tcp_transport(l4, || {
                wscale(frame, parsed.l4_offset?, key::ip_end(frame, parsed)?)
            }),
        };
    }

    /// [`prepare_into`](Self::prepare_into) for the common frame, decoded by [`net::parse_common`] (IPv4 TCP or
    /// UDP, untagged or one VLAN tag): the key and its hash straight from the frame's fields, with no
    /// [`Parsed`] built or read. The same `Prepared` as `prepare_into` with the frame's [`net::parse`] (held
    /// equal by a property test).
    #[inline]
    pub fn prepare_common(&self, frame: &[u8], f: &Ipv4Frame, p: &mut Prepared) {
        let (sport, dport) = match f.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
            _ => (0, 0),
        };
        let (key, side) = FlowKey::v4(f.src, sport, f.dst, dport, f.proto().0, f.vlan.unwrap_or(0));
        p.slot = NO_SLOT;
        p.stage = Stage::Flow;
        p.hash = self.table.hash(&key);
        p.key = key;
        p.side = side;
        p.bytes = u32::from(f.total_len);
        p.transport = tcp_transport(f.l4, || {
            wscale(
                frame,
                f.l4_offset(),
                f.l3_offset() + usize::from(f.total_len),
            )
        });
    }

    /// Stage 2 of [`process`](Self::process): finds the slot the packet's flow most likely occupies from the
    /// hash index alone and starts loading that entry into the cache. Changes nothing.
    #[inline]
    pub fn probe(&self, p: &mut Prepared) {
        if matches!(p.stage, Stage::Flow | Stage::Related) {
            p.slot = match self.table.probe(p.hash) {
                Some(slot) => {
                    self.table.prefetch(slot);
                    slot
                }
                None => NO_SLOT,
            };
        }
    }

    /// Starts loading the index line [`probe`](Self::probe) will read for this packet. Prepare a whole burst,
    /// then call this for each packet in a loop of its own, then probe them all, then finish them in order:
    /// each step's cache misses overlap across the burst instead of every lookup waiting for an index miss,
    /// then an entry miss in turn. Same results as `process`.
    #[inline]
    pub fn prefetch_index(&self, p: &Prepared) {
        if matches!(p.stage, Stage::Flow | Stage::Related) {
            self.table.prefetch_index(p.hash);
        }
    }

    /// Before committing `count` new flows (after classification): when the table is full, starts loading
    /// what their evictions will touch (see [`ConnTable::insert`]); otherwise nothing.
    #[inline]
    pub fn prefetch_commits(&mut self, count: usize, now: u64) {
        self.table.prefetch_victims(count, now);
    }

    /// Stage 3 of [`process`](Self::process): the verdict, updating the flow's state and counters, from the
    /// prepared packet alone. `p` must have been probed on this tracker with no flow inserted or removed since
    /// (a worker prepares and probes a burst, then finishes its packets in order, and commits new flows only
    /// after that).
    #[inline]
    pub fn finish(&mut self, p: &Prepared, now: u64) -> Track {
        let probed = (p.slot != NO_SLOT).then_some(p.slot);
        match p.stage {
            Stage::Flow => {}
            Stage::Untracked(u) => return Track::Untracked(u),
            Stage::Drop(r) => return Track::Drop(r),
            Stage::Related => {
                let found = self.table.confirm(p.hash, &p.key, probed);
                return match found.and_then(|id| self.table.get(id).map(|e| (id, e))) {
                    Some((id, e)) if !self.table.is_expired(e, now) => Track::Related {
                        id,
                        dir: e.dir_of(p.side).reverse(),
                    },
                    _ => Track::Drop(Refusal::IcmpErrorUnrelated),
                };
            }
        }
        // The key is read in place: copied only into a new flow.
        let (side, bytes) = (p.side, p.bytes);
        let found = self.table.confirm(p.hash, &p.key, probed);
        // The live entry is borrowed once: its timeout, state and counters are one access.
        let live = found.and_then(|id| Some((id, self.table.live_mut(id, now)?)));

        if let Transport::Tcp(seg) = p.transport {
            let strictness = self.strictness;
            if let Some((id, mut live)) = live {
                let dir = live.entry.dir_of(side);
                match live
                    .entry
                    .tcp_mut()
                    .track_noting_change(dir, &seg, strictness)
                {
                    (TcpVerdict::Accept, changed) => {
                        live.record(dir, bytes, now);
                        if changed {
                            self.notes.changed(id);
                        }
                        return known(id, dir, live.entry);
                    }
                    (TcpVerdict::Drop(r), _) => return Track::Drop(Refusal::Tcp(r)),
                    (TcpVerdict::Reopen, _) => {}
                }
            }
            return match TcpState::from_first(&seg, strictness) {
                Ok(tcp) => Track::New(NewFlow {
                    key: p.key,
                    hash: p.hash,
                    hasher: self.table.hasher_id(),
                    originator: side,
                    tcp,
                    bytes,
                    reuses: found.is_some(),
                }),
                Err(r) => Track::Drop(Refusal::Tcp(r)),
            };
        }

        let (echo_request, is_echo) = match p.transport {
            Transport::Echo { request } => (request, true),
            _ => (false, false),
        };
        match live {
            Some((id, mut live)) => {
                let dir = live.entry.dir_of(side);
                if is_echo && echo_request != (dir == Dir::Original) {
                    return Track::Drop(Refusal::IcmpEchoDirection);
                }
                live.record(dir, bytes, now);
                known(id, dir, live.entry)
            }
            None if is_echo && !echo_request => Track::Drop(Refusal::IcmpUnsolicitedReply),
            None => Track::New(NewFlow {
                key: p.key,
                hash: p.hash,
                hasher: self.table.hasher_id(),
                originator: side,
                tcp: TcpState::EMPTY,
                bytes,
                reuses: found.is_some(),
            }),
        }
    }

    /// Inserts the flow of a [`Track::New`] packet the policy admitted, counting that packet. Refuses it when
    /// its source is over a flood limit ([`CommitError::Limit`]; the per-source table is consulted only here,
    /// and only when a limit is on) or the table is full of established flows ([`CommitError::Full`]).
    pub fn commit_new(
        &mut self,
        new: &NewFlow,
        admission: Admission,
        now: u64,
    ) -> Result<Committed, CommitError> {
        let mut displaced = None;
        let id = self.commit_new_with(new, admission, now, |_, old| displaced = Some(*old))?;
        Ok(Committed { id, displaced })
    }

    /// [`commit_new`](Self::commit_new), showing the flow that gives up its place (to be reported as closed; see
    /// [`super::Inserted::displaced`]) to `displaced` in place instead of copying it out: the worker's new-flow
    /// path, where a full table makes every insert an eviction. Called, with the slot both flows hold in turn,
    /// only when the flow is committed.
    pub fn commit_new_with(
        &mut self,
        new: &NewFlow,
        admission: Admission,
        now: u64,
        displaced: impl FnOnce(FlowId, &Entry),
    ) -> Result<FlowId, CommitError> {
        let half_open = sources::is_half_open(new.key.proto(), new.tcp.state());
        let source = if self.sources.is_active() {
            let at = self
                .sources
                .check(&new.key, new.originator, half_open, &self.table, now)
                .map_err(CommitError::Limit)?;
            Some(at)
        } else {
            None
        };
        let segment = match admission.segment {
            Some(key) if self.segments.is_active() => {
                self.segments.check(key).map_err(CommitError::Limit)?
            }
            _ => None,
        };
        // The hash of the lookup that missed, not computed again; a NewFlow from another worker's tracker
        // (another seed) is hashed again, so it cannot corrupt this index.
        let hash = if new.hasher == self.table.hasher_id() {
            new.hash
        } else {
            self.table.hash(&new.key)
        };
        let (segments, notes) = (&mut self.segments, &mut self.notes);
        let id = self.table.insert_hashed(
            hash,
            &new.key,
            new.originator,
            now,
            |slot, old| {
                // The flow it replaced or evicted held this very slot.
                segments.removed(slot);
                notes.ended(old.key());
                displaced(slot, old);
            },
            |e| {
                e.set_tcp(new.tcp);
                e.set_admission(admission.rule_id, admission.policy_version);
                e.set_logged(admission.log);
                e.set_monitored(admission.monitor);
                e.record(Dir::Original, new.bytes, now);
            },
        )?;
        self.notes.changed(id);
        if let Some(at) = source {
            self.sources.admitted(at, id, half_open);
        }
        if let Some(at) = segment {
            self.segments.admitted(id, at);
        }
        Ok(id)
    }

    /// Advances the expiry cursor by `budget` slots; see [`ConnTable::expire`].
    pub fn expire<F: FnMut(FlowId, &Entry)>(
        &mut self,
        now: u64,
        budget: usize,
        mut closed: F,
    ) -> usize {
        let segments = &mut self.segments;
        self.table.expire(now, budget, |id, e| {
            segments.removed(id);
            closed(id, e);
        })
    }
}
