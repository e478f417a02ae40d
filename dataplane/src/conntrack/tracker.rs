//! The per-packet entry point: [`Tracker::process`] classifies a parsed frame against the worker's table.

use net::icmpv4::types as icmp4;
use net::icmpv6::types as icmp6;
use net::tcp::{TcpOption, TcpPacket};
use net::{Parsed, TcpFlags, L3, L4};

use super::key::{self, Dir, FlowKey, Side};
use super::segments::{SegmentKey, SegmentTable};
use super::sources::{self, FloodLimit, SourceTable};
use super::table::{ConnTable, Entry, FlowId, Full, TableStats};
use super::tcp::{Strictness, TcpRefusal, TcpSegment, TcpState, TcpVerdict};
use super::Timeouts;

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
    originator: Side,
    tcp: TcpState,
    bytes: u32,
    reuses: bool,
}

impl NewFlow {
    /// A placeholder, e.g. to initialize a burst's array once.
    pub const EMPTY: NewFlow = NewFlow {
        key: FlowKey::ZERO,
        originator: Side::First,
        tcp: TcpState::EMPTY,
        bytes: 0,
        reuses: false,
    };

    /// The flow's key.
    pub const fn key(&self) -> &FlowKey {
        &self.key
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

/// One packet between [`Tracker::prepare`], [`Tracker::probe`] and [`Tracker::finish`]: its flow key and hash,
/// computed once, and the probed slot. A plain value (one cache line), so a worker can keep an array of them
/// for a burst and reuse it from burst to burst without clearing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    key: FlowKey,
    hash: u64,
    bytes: u32,
    slot: u32,
    stage: Stage,
    side: Side,
    wscale: Option<u8>,
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
        wscale: None,
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
}

/// The window-scale option of a SYN's header, if present and well formed.
fn wscale(frame: &[u8], p: &Parsed) -> Option<u8> {
    let seg = TcpPacket::new_checked(key::l4_bytes(frame, p)?).ok()?;
    seg.options().find_map(|o| match o {
        Ok(TcpOption::WindowScale(s)) => Some(Some(s)),
        Ok(_) => None,
        Err(_) => Some(None),
    })?
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
        Some(removed)
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
        self.finish(parsed, &p, now)
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
        let (keyed, flags) = match parsed.l4 {
            L4::Icmp { ident, .. } | L4::Icmpv6 { ident, .. } => {
                (ident.is_some(), TcpFlags::empty())
            }
            L4::Tcp { flags, .. } => (true, flags),
            _ => (true, TcpFlags::empty()),
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
        p.wscale = if flags.contains(TcpFlags::SYN) {
            wscale(frame, parsed)
        } else {
            None
        };
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

    /// Starts loading the hash-index buckets [`probe`](Self::probe) will compare for this packet (it reads the
    /// index's control bytes). Prepare a whole burst, then call this for each packet in a loop of its own, then
    /// probe them all, then finish them in order: each step's cache misses overlap across the burst instead of
    /// every lookup waiting for a control-byte miss, then a bucket miss, then an entry miss in turn (a loop
    /// that only loads control bytes keeps many of those loads in flight at once; interleaved with parsing it
    /// kept one or two). Same results as `process`.
    #[inline]
    pub fn prefetch_index(&self, p: &Prepared) {
        if matches!(p.stage, Stage::Flow | Stage::Related) {
            self.table.prefetch_index(p.hash);
        }
    }

    /// Before committing `count` new flows (after classification): when the table is full, starts loading
    /// what their evictions will touch (see [`ConnTable::insert`]); otherwise nothing.
    #[inline]
    pub fn prefetch_commits(&self, count: usize, now: u64) {
        self.table.prefetch_victims(count, now);
    }

    /// Stage 3 of [`process`](Self::process): the verdict, updating the flow's state and counters. `parsed` and
    /// `p` must be of the same frame, and `p` probed on this tracker with no flow inserted or removed since
    /// (a worker prepares and probes a burst, then finishes its packets in order, and commits new flows only
    /// after that).
    #[inline]
    pub fn finish(&mut self, parsed: &Parsed, p: &Prepared, now: u64) -> Track {
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
        let (key, side, bytes) = (p.key, p.side, p.bytes);
        let found = self.table.confirm(p.hash, &key, probed);
        let live = found.filter(|&id| {
            self.table
                .get(id)
                .is_some_and(|e| !self.table.is_expired(e, now))
        });

        if let L4::Tcp {
            flags,
            seq,
            ack,
            window,
            payload_len,
            ..
        } = parsed.l4
        {
            let seg = TcpSegment {
                flags,
                seq,
                ack,
                window,
                payload_len,
                wscale: p.wscale,
            };
            let strictness = self.strictness;
            if let Some(id) = live {
                if let Some(e) = self.table.get_mut(id) {
                    let dir = e.dir_of(side);
                    match e.tcp_mut().track(dir, &seg, strictness) {
                        TcpVerdict::Accept => {
                            e.record(dir, bytes, now);
                            return Track::Known {
                                id,
                                dir,
                                policy_version: e.policy_version(),
                            };
                        }
                        TcpVerdict::Drop(r) => return Track::Drop(Refusal::Tcp(r)),
                        TcpVerdict::Reopen => {}
                    }
                }
            }
            return match TcpState::from_first(&seg, strictness) {
                Ok(tcp) => Track::New(NewFlow {
                    key,
                    originator: side,
                    tcp,
                    bytes,
                    reuses: found.is_some(),
                }),
                Err(r) => Track::Drop(Refusal::Tcp(r)),
            };
        }

        let (echo_request, is_echo) = match parsed.l4 {
            L4::Icmp { ty, ident, .. } => (ty == icmp4::ECHO_REQUEST, ident.is_some()),
            L4::Icmpv6 { ty, ident, .. } => (ty == icmp6::ECHO_REQUEST, ident.is_some()),
            _ => (false, false),
        };
        match live.and_then(|id| self.table.get_mut(id).map(|e| (id, e))) {
            Some((id, e)) => {
                let dir = e.dir_of(side);
                if is_echo && echo_request != (dir == Dir::Original) {
                    return Track::Drop(Refusal::IcmpEchoDirection);
                }
                e.record(dir, bytes, now);
                Track::Known {
                    id,
                    dir,
                    policy_version: e.policy_version(),
                }
            }
            None if is_echo && !echo_request => Track::Drop(Refusal::IcmpUnsolicitedReply),
            None => Track::New(NewFlow {
                key,
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
        // Hashed again rather than trusting a value carried by the caller: a NewFlow from another worker's
        // tracker (another seed) must not corrupt this index.
        let inserted = self.table.insert(new.key, new.originator, now)?;
        if inserted.displaced.is_some() {
            // The flow it replaced or evicted held this very slot.
            self.segments.removed(inserted.id);
        }
        if let Some(at) = source {
            self.sources.admitted(at, inserted.id, half_open);
        }
        if let Some(at) = segment {
            self.segments.admitted(inserted.id, at);
        }
        if let Some(e) = self.table.get_mut(inserted.id) {
            e.set_tcp(new.tcp);
            e.set_admission(admission.rule_id, admission.policy_version);
            e.set_logged(admission.log);
            e.set_monitored(admission.monitor);
            e.record(Dir::Original, new.bytes, now);
        }
        Ok(Committed {
            id: inserted.id,
            displaced: inserted.displaced,
        })
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
