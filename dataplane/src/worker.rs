//! The poll loop. It runs on a pinned worker lcore and, by design, never allocates, locks, logs or makes a
//! system call: everything it needs — queues, its connection table, a burst buffer on its stack, its counters,
//! its event queue — is set up before it starts, and it reports only through counters and events.
//!
//! One deliberate exception, off by default: the idle back-off (`[workers] idle_sleep_max_us`). After
//! `idle_polls_before_sleep` consecutive iterations that found every queue empty, the worker goes offline for
//! RCU (a policy publish never waits for it), answers a pending flow command, and sleeps — a system call —
//! starting at a few microseconds and doubling up to the maximum; the first packet resets it. Pollers with
//! nothing to do then yield their core (gateways sharing cores, quiet segments, power), at the price of up to
//! the maximum sleep of added latency for the first packet after a quiet spell.
//!
//! Per loop iteration: announce a quiescent point (QSBR) and pick up the current policy version; then, for each
//! port, receive a burst, judge it, send what passes to the linked port and the reject answers back out the
//! port they came from; finally advance connection expiry by a fixed budget.
//!
//! Judging a burst happens in three passes so that new flows are classified together (one `rte_acl` call per
//! family per burst): (1) parse and look every packet up in the connection table; (2) classify the packets
//! that start a flow, or belong to a flow admitted by an older policy version; (3) apply the verdicts in
//! packet order, so a flow created by one packet is seen by the next packet of the same flow in the burst.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crossbeam_channel::{Receiver, Sender};
use dpdk::rcu::Reader;
use dpdk::{Burst, Mbuf, Mempool, RxQueue, TxQueue, MAX_BURST};
use net::ethernet::EtherType;
use net::{Parsed, L3, L4};
use policy::Action;

use crate::clock::Clock;
use crate::conntrack::{
    Admission, CommitError, FlowId, FlowInfo, NewFlow, Prepared, Refusal, Track, Tracker, Untracked,
};
use crate::counters::{DropReason, WorkerCounters};
use crate::events::{EventKind, EventSink, FlowEvent, Verdict};
use crate::ha::heartbeat::{self, WorkerBeats};
use crate::ha::sync::WorkerSync;
use crate::ha::RoleCell;
use crate::reject;
use crate::ruleset::{entry_input, flow_input, key_input, Judgement, Ruleset, V6_INPUT};
use protocol::FlowFilter;

/// A request from the management thread, answered by the worker between bursts.
#[derive(Debug)]
pub enum Command {
    /// Copy the matching flows into `out`, which comes with its capacity reserved (the worker never grows it).
    List {
        filter: FlowFilter,
        out: Vec<FlowInfo>,
        reply: Sender<Vec<FlowInfo>>,
    },
    /// Remove the matching flows; answers how many.
    Kill {
        filter: FlowFilter,
        reply: Sender<usize>,
    },
}

/// After the peer's heartbeat saying it is standby made this member active, how long (ms) its other ports
/// wait for their copies of that heartbeat (sent at once after it on every port) before forwarding anyway.
const AWAIT_HEARTBEAT_MS: u64 = 10;

/// How often (in loop iterations) the worker looks for commands.
const COMMAND_PERIOD: u32 = 1024;

/// The first sleep of the idle back-off, in microseconds.
const FIRST_IDLE_SLEEP_US: u32 = 2;

/// The idle back-off's settings (see the module docs); `sleep_max_us` 0: never sleep (pure polling).
#[derive(Debug, Clone, Copy, Default)]
pub struct IdleBackoff {
    pub sleep_max_us: u32,
    pub polls_before_sleep: u32,
}

/// Where a worker is in its idle back-off.
#[derive(Debug)]
struct Idle {
    cfg: IdleBackoff,
    empty_polls: u32,
    next_sleep_us: u32,
}

impl Idle {
    fn new(cfg: IdleBackoff) -> Self {
        Idle {
            cfg,
            empty_polls: 0,
            next_sleep_us: FIRST_IDLE_SLEEP_US.min(cfg.sleep_max_us),
        }
    }

    /// After an iteration that found every queue empty: how long to sleep now, if at all.
    #[inline]
    fn after_empty_poll(&mut self) -> Option<std::time::Duration> {
        if self.cfg.sleep_max_us == 0 {
            return None;
        }
        self.empty_polls = self.empty_polls.saturating_add(1);
        if self.empty_polls < self.cfg.polls_before_sleep {
            return None;
        }
        let us = self.next_sleep_us;
        self.next_sleep_us = us.saturating_mul(2).min(self.cfg.sleep_max_us);
        Some(std::time::Duration::from_micros(u64::from(us)))
    }

    /// After an iteration that moved packets.
    #[inline]
    fn reset(&mut self) {
        self.empty_polls = 0;
        self.next_sleep_us = FIRST_IDLE_SLEEP_US.min(self.cfg.sleep_max_us);
    }
}

/// What one worker owns.
pub struct Worker<'a, 'p, 'eal> {
    pub index: u16,
    /// Queue `index` of every port, and for each port the index of the port it is linked to.
    pub rx: Vec<RxQueue<'p>>,
    pub tx: Vec<TxQueue<'p>>,
    pub peer: Vec<usize>,
    pub burst: usize,
    pub counters: &'a WorkerCounters,
    pub tracker: Tracker,
    pub policy: Reader<'a, Ruleset<'eal>>,
    pub events: EventSink,
    pub commands: Receiver<Command>,
    pub clock: Clock,
    pub expiry_budget: usize,
    /// Denied-flow events per second; beyond that they are counted, not queued.
    pub denied_events_per_sec: u32,
    /// Buffers for reject answers.
    pub pool: &'p Mempool<'eal>,
    pub idle: IdleBackoff,
    /// The HA role (always active for a gateway without `[ha]`): a standby drops every packet it receives.
    pub role: &'a RoleCell,
    /// Connection-state sync with the HA peer, when configured: the active sweeps its table into the sync
    /// queue, the standby applies the peer's updates (`ha::sync`).
    pub sync: Option<WorkerSync<'a>>,
    /// The split-brain guard's heartbeats, for a member of a pair: every worker consumes the pair's, worker 0
    /// also sends them (`ha::heartbeat`).
    pub beats: Option<WorkerBeats<'a>>,
}

/// Per-packet notes between the passes.
#[derive(Clone, Copy)]
enum Note {
    Forward,
    /// Drop, and count the reason when the burst is done.
    Drop(DropReason),
    /// Drop; already counted (with its detail counter).
    Dropped,
    /// Starts a flow (the [`Scratch::news`] entry of the packet): classify, then commit if allowed.
    New,
    /// A tracked flow admitted by another policy version: classify, then keep or revoke.
    Recheck(FlowId),
}

/// Per-packet state of a burst between the passes. The worker keeps one for its whole life: each pass reads
/// only what an earlier pass wrote for the same burst, so nothing is cleared (or even zeroed) per burst.
struct Scratch {
    notes: [Note; MAX_BURST],
    /// Frame lengths (first segment), so later passes need not look at the mbufs again.
    lens: [u32; MAX_BURST],
    parsed: [Parsed; MAX_BURST],
    /// The packet is a common frame, prepared without a `Parsed` (written only if it is needed).
    common: [bool; MAX_BURST],
    prepared: [Prepared; MAX_BURST],
    news: [NewFlow; MAX_BURST],
    inputs: [[u8; V6_INPUT]; MAX_BURST],
    families: [bool; MAX_BURST],
    results: [u32; MAX_BURST],
    created: Created,
}

impl Scratch {
    fn new() -> Box<Self> {
        Box::new(Scratch {
            notes: [Note::Dropped; MAX_BURST],
            lens: [0; MAX_BURST],
            parsed: [Parsed::EMPTY; MAX_BURST],
            common: [false; MAX_BURST],
            prepared: [Prepared::EMPTY; MAX_BURST],
            news: [NewFlow::EMPTY; MAX_BURST],
            inputs: [[0; V6_INPUT]; MAX_BURST],
            families: [false; MAX_BURST],
            results: [0; MAX_BURST],
            created: Created::EMPTY,
        })
    }
}

/// Remembers rule id → counter slot for the current version, so established-flow packets are counted against
/// their rule without a hash lookup per packet; and sums the hits of a run of packets of one rule, so its
/// counters are updated once per run (at the latest at the end of each pass over a burst) rather than three
/// times per packet.
struct SlotCache {
    version: u32,
    entries: [(u32, u32); 64],
    pending: Option<PendingHits>,
}

/// Hits of one rule not yet added to its counters.
#[derive(Clone, Copy)]
struct PendingHits {
    slot: u32,
    rule_id: u32,
    packets: u64,
    bytes: u64,
}

impl SlotCache {
    fn new() -> Self {
        SlotCache {
            version: u32::MAX,
            entries: [(u32::MAX, 0); 64],
            pending: None,
        }
    }

    fn slot(&mut self, rs: &Ruleset<'_>, rule_id: u32) -> Option<u32> {
        if self.version != rs.version {
            self.version = rs.version;
            self.entries = [(u32::MAX, 0); 64];
        }
        let e = &mut self.entries[rule_id as usize % 64];
        if e.0 == rule_id {
            return Some(e.1);
        }
        let slot = rs.slot_of(rule_id)?;
        *e = (rule_id, slot);
        Some(slot)
    }

    /// Counts a packet of `len` bytes of a flow `rule_id` admitted (see [`flush`](Self::flush)).
    #[inline]
    fn hit(
        &mut self,
        counters: &WorkerCounters,
        rs: &Ruleset<'_>,
        rule_id: u32,
        len: u64,
        now: u64,
    ) {
        if let Some(p) = &mut self.pending {
            if p.rule_id == rule_id {
                p.packets += 1;
                p.bytes += len;
                return;
            }
        }
        self.flush(counters, now);
        if let Some(slot) = self.slot(rs, rule_id) {
            self.pending = Some(PendingHits {
                slot,
                rule_id,
                packets: 1,
                bytes: len,
            });
        }
    }

    /// Adds the pending hits to their rule's counters: what [`RuleSlot::hit`](crate::counters::RuleSlot::hit)
    /// per packet would have done (nothing if the slot now counts another rule). Call before anything else
    /// touches rule counters (a new flow may claim a slot) and before the ruleset reference is given up.
    fn flush(&mut self, counters: &WorkerCounters, now: u64) {
        if let Some(p) = self.pending.take() {
            let r = counters.rule(p.slot);
            if r.rule_id.get() == u64::from(p.rule_id) {
                r.packets.add(p.packets);
                r.bytes.add(p.bytes);
                r.last_hit.set(now + 1);
            }
        }
    }
}

/// Rate limit of denied-flow events: a budget per one-second window.
struct DenyBudget {
    window_start: u64,
    left: u32,
}

impl<'p> Worker<'_, 'p, '_> {
    /// Runs until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut burst: Burst<'p> = Burst::with_capacity(self.burst);
        let mut replies: Burst<'p> = Burst::new();
        let mut beats_out: Burst<'p> = Burst::new();
        let mut was_standby = self.role.is_standby();
        // After a heartbeat on one port made this member active: the ports (bits) whose own copy of that
        // heartbeat has not arrived yet, and until when they wait for it.
        let mut awaiting: u64 = 0;
        let mut awaiting_until = 0;
        let all_ports = u64::MAX
            .checked_shr(64 - self.rx.len().min(64) as u32)
            .unwrap_or(0);
        let mut scratch = Scratch::new();
        let mut cache = SlotCache::new();
        let mut deny = DenyBudget {
            window_start: 0,
            left: self.denied_events_per_sec,
        };
        let mut applied_version = u32::MAX;
        let mut iteration: u32 = 0;
        let mut idle = Idle::new(self.idle);
        while !stop.load(Relaxed) {
            self.policy.quiescent();
            let now = self.clock.ms(dpdk::tsc());
            // Split borrows: the ruleset reference lives until the next quiescent point only.
            let Worker {
                policy, tracker, ..
            } = &mut self;
            let rs = policy.read();
            if let Some(rs) = rs {
                if rs.version != applied_version {
                    applied_version = rs.version;
                    tracker.set_timeouts(&rs.settings.timeouts);
                    tracker.set_strictness(rs.settings.strictness);
                    tracker.set_flood_limits(rs.settings.flood_limits);
                }
            }
            let mut moved = 0u64;
            // A member that has just stopped forwards once more what its queues already hold: those frames
            // reached it before its heartbeat saying it is standby (sent after this pass), and the peer it
            // hands over to drops what arrives before that heartbeat.
            let now_standby = self.role.is_standby();
            let mut standby = now_standby && was_standby;
            was_standby = now_standby;
            if now_standby || now >= awaiting_until {
                awaiting = 0;
            }
            // Worker 0 of a member of a pair: the heartbeat, when due, goes out of each port right after that
            // port's queue is read. On a member that has just stopped, what it read it forwards (above), what
            // arrives later reaches the peer after the heartbeat and is the peer's to forward.
            let beat_due = self.heartbeat_due(now);
            // The ports (bits) whose frames are dropped as a standby's: all of them on a standby; after a
            // heartbeat made this member active, those still waiting for their copy of it.
            let mut dropping = if standby { all_ports } else { awaiting };
            for port in 0..self.rx.len() {
                let n = self.rx[port].rx(&mut burst);
                if beat_due {
                    self.send_heartbeat(port, &mut beats_out);
                }
                if n == 0 {
                    continue;
                }
                moved += n as u64;
                self.counters.rx_packets.add(n as u64);
                let bit = 1u64 << (port % 64);
                if dropping & bit != 0 {
                    if !self.standby_burst(&mut burst, now) {
                        continue;
                    }
                    // The peer's heartbeat saying it is standby, in this burst: what follows it is judged.
                    // The peer forwarded what reached its other ports before its copies of that heartbeat
                    // did: those ports wait for theirs (a short while at most), or the frames would be
                    // forwarded twice.
                    if standby {
                        standby = false;
                        was_standby = false;
                        awaiting_until = now + AWAIT_HEARTBEAT_MS;
                    }
                    dropping &= !bit;
                }
                // Re-borrow per burst: `judge` needs the ruleset and the rest of `self` at once.
                let rs = self.policy.read();
                judge(
                    &mut JudgeCtx {
                        rs,
                        tracker: &mut self.tracker,
                        counters: self.counters,
                        events: &self.events,
                        worker: self.index,
                        now,
                        cache: &mut cache,
                        deny: &mut deny,
                        deny_rate: self.denied_events_per_sec,
                        pool: self.pool,
                        replies: &mut replies,
                        beats: self.beats.as_ref(),
                    },
                    &mut burst,
                    &mut scratch,
                );
                let peer = self.peer[port];
                let sent = self.tx[peer].tx(&mut burst);
                self.counters.tx_packets.add(sent as u64);
                self.counters
                    .drop(DropReason::TxUnsent, burst.clear() as u64);
                if !replies.is_empty() {
                    let sent = self.tx[port].tx(&mut replies);
                    self.counters.rejects_sent.add(sent as u64);
                    self.counters
                        .drop(DropReason::TxUnsent, replies.clear() as u64);
                }
            }
            awaiting = if standby { 0 } else { dropping };
            if moved == 0 {
                self.counters.idle_polls.add(1);
                if let Some(pause) = idle.after_empty_poll() {
                    self.idle_sleep(pause, now);
                }
            } else {
                self.counters.busy_polls.add(1);
                idle.reset();
            }
            let (counters, events, worker) = (self.counters, &self.events, self.index);
            // The active tells its HA peer at once, rather than leaving the standby to time the flow out.
            let sync = self.sync.as_ref().filter(|_| !standby);
            self.tracker.expire(now, self.expiry_budget, |id, e| {
                if let Some(sync) = sync {
                    sync.closed(e.key());
                }
                counters.flows_closed.add(1);
                events.emit_counted_with(
                    || closed_event(&FlowInfo::new(id, e, now), worker, now),
                    counters,
                );
            });
            if let Some(sync) = &mut self.sync {
                sync.step(standby, &mut self.tracker, now);
            }
            iteration = iteration.wrapping_add(1);
            if iteration.is_multiple_of(COMMAND_PERIOD) {
                self.counters
                    .flows_active
                    .set(self.tracker.table().len() as u64);
                self.counters
                    .flows_evicted
                    .set(self.tracker.stats().evictions);
                self.counters
                    .flood_sources_evicted
                    .set(self.tracker.sources().evictions());
                if let Ok(cmd) = self.commands.try_recv() {
                    self.command(cmd, now);
                }
            }
        }
        self.policy.offline();
    }

    /// A standby's burst: every frame is dropped as `standby`, but for this pair's heartbeats, consumed
    /// (`ha_heartbeat`) — the one look a standby takes at a frame is its EtherType. Answers true when the
    /// burst holds the peer's heartbeat saying it is standby and this member is active (a held member it
    /// released: rule (d) of `ha::guard`; or a port still waiting for its copy of that heartbeat); the frames
    /// after it are then left in `burst`, to be judged. Kept out of the poll loop's body, so the forwarding
    /// path is compiled as if it were not there.
    #[inline(never)]
    fn standby_burst(&self, burst: &mut Burst<'_>, now: u64) -> bool {
        let mut beats = 0u64;
        let mut released_at = None;
        if let Some(b) = &self.beats {
            for (i, frame) in burst.iter().enumerate() {
                if !heartbeat::has_ethertype(frame) {
                    continue;
                }
                let Some(peer_standby) = b.consume(frame, now) else {
                    continue;
                };
                beats += 1;
                if peer_standby && !self.role.is_standby() {
                    released_at = Some(i);
                    break;
                }
            }
        }
        self.counters.drop(DropReason::HaHeartbeat, beats);
        let (dropped, released) = match released_at {
            None => (burst.clear(), false),
            Some(at) => {
                let mut i = 0;
                let dropped = burst.retain(|_| {
                    i += 1;
                    i > at + 1
                });
                (dropped, true)
            }
        };
        self.counters
            .drop(DropReason::Standby, dropped as u64 - beats);
        released
    }

    /// Worker 0 of a member of a pair: whether a heartbeat is due in this iteration. Out of line, like
    /// [`standby_burst`](Self::standby_burst): once per iteration, nothing per packet.
    #[inline(never)]
    fn heartbeat_due(&mut self, now: u64) -> bool {
        let Some(sender) = self.beats.as_mut().and_then(|b| b.sender.as_mut()) else {
            return false;
        };
        sender.due(self.role, now)
    }

    /// Sends the heartbeat out of `port`, from its MAC. A heartbeat the port does not take (its link is down)
    /// is freed.
    #[cold]
    fn send_heartbeat(&mut self, port: usize, out: &mut Burst<'p>) {
        let Some(beats) = &self.beats else {
            return;
        };
        let Some(frame) = beats.sender.as_ref().and_then(|s| s.frame(port)) else {
            return;
        };
        if let Some(m) = Mbuf::from_bytes(self.pool, &frame) {
            let _ = out.push(m);
            let sent = self.tx[port].tx(out);
            beats.peer.sent(sent as u64);
            out.clear();
        }
    }

    /// The idle back-off's sleep (the documented exception to the no-syscall rule): offline for RCU first, so
    /// a publish does not wait for a sleeping worker; a pending flow command is answered first, so commands
    /// are not held up by the sleeps.
    #[cold]
    fn idle_sleep(&mut self, pause: std::time::Duration, now: u64) {
        self.policy.offline();
        if let Ok(cmd) = self.commands.try_recv() {
            self.command(cmd, now);
        }
        std::thread::sleep(pause);
    }

    fn command(&mut self, cmd: Command, now: u64) {
        match cmd {
            Command::List {
                filter,
                mut out,
                reply,
            } => {
                for (id, e) in self.tracker.table().iter() {
                    if out.len() == out.capacity() {
                        break;
                    }
                    let info = FlowInfo::new(id, e, now);
                    if info.matches(&filter) {
                        out.push(info);
                    }
                }
                let _ = reply.try_send(out);
            }
            Command::Kill { filter, reply } => {
                let (counters, events, worker) = (self.counters, &self.events, self.index);
                // The active tells its HA peer, so a killed flow is not kept alive on the standby.
                let sync = self.sync.as_ref().filter(|_| !self.role.is_standby());
                let n = self.tracker.remove_where(|id, e| {
                    let info = FlowInfo::new(id, e, now);
                    let kill = info.matches(&filter);
                    if kill {
                        counters.flows_closed.add(1);
                        events.emit_counted(closed_event(&info, worker, now), counters);
                        if let Some(sync) = sync {
                            sync.closed(e.key());
                        }
                    }
                    kill
                });
                self.counters
                    .flows_active
                    .set(self.tracker.table().len() as u64);
                let _ = reply.try_send(n);
            }
        }
    }
}

struct JudgeCtx<'x, 'eal, 'p> {
    rs: Option<&'x Ruleset<'eal>>,
    tracker: &'x mut Tracker,
    counters: &'x WorkerCounters,
    events: &'x EventSink,
    worker: u16,
    now: u64,
    cache: &'x mut SlotCache,
    deny: &'x mut DenyBudget,
    deny_rate: u32,
    pool: &'p Mempool<'eal>,
    replies: &'x mut Burst<'p>,
    beats: Option<&'x WorkerBeats<'x>>,
}

/// Judges a burst in place: what may pass stays in `burst`, in order; the rest is freed and counted.
fn judge(cx: &mut JudgeCtx<'_, '_, '_>, burst: &mut Burst<'_>, s: &mut Scratch) {
    let Some(rs) = cx.rs else {
        // Fail-closed: no policy, nothing crosses.
        cx.counters.drop(DropReason::NoPolicy, burst.clear() as u64);
        return;
    };
    let n = burst.len();

    // Pass 1: key and look every packet up, in stages over the burst so the table's memory accesses overlap:
    // (a) key and hash each packet (the common IPv4 TCP/UDP frame straight from its fields, anything else
    // parsed first) — those that belong to no flow (not IP, fragments, ...) are decided there and then,
    // without the table; (b) start loading the index line each lookup starts at, in a loop that does nothing
    // else so the loads' misses overlap; (c) probe the index, prefetching the entries; (d) in packet order,
    // finish tracking (state, counters).
    let mut flows = [0u8; MAX_BURST];
    let mut nflows = 0;
    let mut undecided = 0;
    let mut forwarded = 0;
    let mut tally = |note: Note, counters: &WorkerCounters| match note {
        Note::Forward => forwarded += 1,
        Note::New | Note::Recheck(_) => undecided += 1,
        Note::Drop(reason) => counters.drop(reason, 1),
        Note::Dropped => {}
    };
    for (i, frame) in burst.iter().enumerate() {
        s.lens[i] = frame.len() as u32;
        // The common frame (IPv4 TCP/UDP) is keyed straight from its fields: no `Parsed` is built unless the
        // packet turns out to need one (see the finishing loop).
        s.common[i] = false;
        if let Some(f) = net::parse_common(frame) {
            cx.tracker.prepare_common(frame, &f, &mut s.prepared[i]);
            s.common[i] = true;
            flows[nflows] = i as u8;
            nflows += 1;
            continue;
        }
        let parsed = &mut s.parsed[i];
        if let Err(e) = net::parse_into(frame, parsed) {
            cx.counters.malformed(e);
            s.notes[i] = Note::Dropped;
            continue;
        }
        let prepared = &mut s.prepared[i];
        cx.tracker.prepare_into(frame, parsed, prepared);
        let note = match prepared.decided() {
            None => {
                flows[nflows] = i as u8;
                nflows += 1;
                continue;
            }
            // A heartbeat of this pair is a frame of another EtherType: IP packets never get here.
            Some(Ok(Untracked::NotIp))
                if matches!(parsed.l3, L3::Other(EtherType(heartbeat::ETHERTYPE)))
                    && cx.beats.is_some_and(|b| b.consume(frame, cx.now).is_some()) =>
            {
                Note::Drop(DropReason::HaHeartbeat)
            }
            Some(Ok(u)) => untracked(rs, parsed, u),
            Some(Err(reason)) => {
                cx.counters.refused(reason);
                Note::Dropped
            }
        };
        tally(note, cx.counters);
        s.notes[i] = note;
    }
    for &i in &flows[..nflows] {
        cx.tracker.prefetch_index(&s.prepared[usize::from(i)]);
    }
    for &i in &flows[..nflows] {
        cx.tracker.probe(&mut s.prepared[usize::from(i)]);
    }
    for &i in &flows[..nflows] {
        let i = usize::from(i);
        let note = match cx.tracker.finish(&s.prepared[i], cx.now) {
            Track::Known {
                id,
                policy_version,
                rule_id,
                monitored,
                ..
            } => {
                if policy_version != rs.version && rs.settings.reevaluate {
                    Note::Recheck(id)
                } else {
                    count_known(cx, rs, rule_id, monitored, s.lens[i]);
                    Note::Forward
                }
            }
            // A common frame's new flow is classified from its key; its `Parsed` is built only if needed (see
            // `Packet`).
            Track::New(new) => {
                s.news[i] = new;
                Note::New
            }
            Track::Related { .. } => Note::Forward,
            Track::Untracked(u) => {
                // The stateless policy reads the `Parsed` the common path did not build.
                if s.common[i] {
                    if let Some(frame) = burst.data(i) {
                        let _ = net::parse_into(frame, &mut s.parsed[i]);
                    }
                }
                untracked(rs, &s.parsed[i], u)
            }
            Track::Drop(reason) => {
                cx.counters.refused(reason);
                Note::Dropped
            }
        };
        tally(note, cx.counters);
        s.notes[i] = note;
    }
    cx.cache.flush(cx.counters, cx.now);

    if undecided > 0 {
        decide(cx, rs, burst, s);
        cx.cache.flush(cx.counters, cx.now);
        forwarded = s.notes[..n]
            .iter()
            .filter(|note| matches!(note, Note::Forward))
            .count();
    }
    if forwarded < n {
        let mut i = 0;
        burst.retain(|_| {
            let keep = matches!(s.notes[i], Note::Forward);
            i += 1;
            keep
        });
    }
}

/// Passes 2 and 3 of [`judge`], for bursts with packets that need a policy decision: classify them, one batch
/// per family, then apply the verdicts in packet order (so a flow created by one packet is seen by the next
/// packet of the same flow in the burst). Counts the drops it decides.
fn decide(cx: &mut JudgeCtx<'_, '_, '_>, rs: &Ruleset<'_>, burst: &Burst<'_>, s: &mut Scratch) {
    let n = burst.len();
    let mut news = 0;
    for i in 0..n {
        match s.notes[i] {
            Note::New => {
                // A common frame's flow is classified from its key, the frame not parsed (see `Packet`).
                let family = if s.common[i] {
                    let new = &s.news[i];
                    key_input(new.key(), new.originator(), &mut s.inputs[i]).map(|(v6, _)| v6)
                } else {
                    flow_input(&s.parsed[i], &mut s.inputs[i]).map(|(v6, _)| v6)
                };
                match family {
                    Some(v6) => {
                        s.families[i] = v6;
                        news += 1;
                    }
                    None => {
                        cx.counters.drop(DropReason::Malformed, 1);
                        s.notes[i] = Note::Dropped;
                    }
                }
            }
            // Judge the flow as it was opened, whichever direction this packet travels.
            Note::Recheck(id) => match cx.tracker.table().get(id) {
                Some(e) => s.families[i] = entry_input(e, &mut s.inputs[i]).0,
                None => {
                    cx.counters.drop(DropReason::PolicyRevoked, 1);
                    s.notes[i] = Note::Dropped;
                }
            },
            _ => {}
        }
    }
    // In a full table, the evictions' memory accesses overlap the classification.
    cx.tracker.prefetch_commits(news, cx.now);
    for v6 in [false, true] {
        let len = if v6 {
            V6_INPUT
        } else {
            crate::ruleset::V4_INPUT
        };
        let mut batch: [&[u8]; MAX_BURST] = [&[]; MAX_BURST];
        let mut which = [0usize; MAX_BURST];
        let mut k = 0;
        for i in 0..n {
            if s.families[i] == v6 && matches!(s.notes[i], Note::New | Note::Recheck(_)) {
                batch[k] = &s.inputs[i][..len];
                which[k] = i;
                k += 1;
            }
        }
        if k > 0 {
            let mut out = [0u32; MAX_BURST];
            rs.classify(v6, &batch[..k], &mut out[..k]);
            for j in 0..k {
                s.results[which[j]] = out[j];
                rs.prefetch_rule(out[j]);
            }
        }
    }
    // Start the memory accesses of pass 3 for the whole burst before any is needed: the counter slot of each
    // deciding rule (its metadata was prefetched just above).
    for i in 0..n {
        if matches!(s.notes[i], Note::New | Note::Recheck(_)) {
            dpdk::prefetch(cx.counters.rule(rs.judge(s.results[i]).slot));
        }
    }

    let created = &mut s.created;
    created.clear();
    for i in 0..n {
        let note = match s.notes[i] {
            Note::New => {
                let Some(frame) = burst.data(i) else { continue };
                let mut packet = Packet {
                    frame,
                    parsed: &mut s.parsed[i],
                    ready: !s.common[i],
                };
                new_flow(
                    cx,
                    rs,
                    &s.news[i],
                    rs.judge(s.results[i]),
                    &mut packet,
                    created,
                )
            }
            Note::Recheck(id) => recheck(cx, rs, id, rs.judge(s.results[i]), s.lens[i] as usize),
            _ => continue,
        };
        if let Note::Drop(reason) = note {
            cx.counters.drop(reason, 1);
        }
        s.notes[i] = note;
    }
}

/// Stateless policy for what the tracker does not keep state for.
fn untracked(rs: &Ruleset<'_>, p: &Parsed, u: Untracked) -> Note {
    let s = &rs.settings;
    match u {
        Untracked::NotIp if matches!(p.l3, L3::Arp) => {
            if s.pass_arp {
                Note::Forward
            } else {
                Note::Drop(DropReason::Ethertype)
            }
        }
        Untracked::NotIp => {
            if s.drop_other_ethertypes {
                Note::Drop(DropReason::Ethertype)
            } else {
                Note::Forward
            }
        }
        Untracked::Fragment => Note::Drop(DropReason::Fragment),
        Untracked::IcmpInfo => {
            let nd = matches!(p.l4, L4::Icmpv6 { ty: 133..=137, .. });
            if nd && s.pass_neighbor_discovery {
                Note::Forward
            } else {
                // Router advertisements, redirects and the like are judged as flows would be: not without a rule.
                Note::Drop(DropReason::PolicyDeny)
            }
        }
    }
}

/// Counts a forwarded packet of a tracked flow against the rule that admitted it.
#[inline]
fn count_known(
    cx: &mut JudgeCtx<'_, '_, '_>,
    rs: &Ruleset<'_>,
    rule_id: u32,
    monitored: bool,
    len: u32,
) {
    if monitored {
        cx.counters.would_deny.add(1);
    }
    cx.cache
        .hit(cx.counters, rs, rule_id, u64::from(len), cx.now);
}

/// [`count_known`] for the flow `id` (a packet decided after pass 1).
fn known_packet(cx: &mut JudgeCtx<'_, '_, '_>, rs: &Ruleset<'_>, id: FlowId, len: usize) {
    if let Some(e) = cx.tracker.table().get(id) {
        let (rule_id, monitored) = (e.rule_id(), e.monitored());
        count_known(cx, rs, rule_id, monitored, len as u32);
    }
}

/// The flows committed so far while deciding a burst, with their keys' hashes. Kept in [`Scratch`]: a burst
/// clears only its length and filter.
struct Created {
    ids: [Option<FlowId>; MAX_BURST],
    hashes: [u64; MAX_BURST],
    len: usize,
    /// One bit per value of a hash's top byte, set for every hash pushed: most new flows find theirs clear and
    /// skip the scan of `hashes`.
    filter: [u64; 4],
}

impl Created {
    const EMPTY: Created = Created {
        ids: [None; MAX_BURST],
        hashes: [0; MAX_BURST],
        len: 0,
        filter: [0; 4],
    };

    fn clear(&mut self) {
        self.len = 0;
        self.filter = [0; 4];
    }

    /// The word and bit of `hash` in `filter`.
    fn filter_bit(hash: u64) -> (usize, u64) {
        let top = (hash >> 56) as usize;
        (top / 64, 1 << (top % 64))
    }

    fn contains(&self, id: FlowId) -> bool {
        self.ids[..self.len].contains(&Some(id))
    }

    /// Whether a flow committed in this burst may have the key of `new`: only one with its hash can (the
    /// hashes come from the same tracker). Most new flows have no such twin, and skip the table lookup.
    fn may_hold(&self, new: &NewFlow) -> bool {
        let (word, bit) = Self::filter_bit(new.hash());
        self.filter[word] & bit != 0 && self.hashes[..self.len].contains(&new.hash())
    }

    fn push(&mut self, id: FlowId, hash: u64) {
        if let (Some(slot), Some(h)) = (self.ids.get_mut(self.len), self.hashes.get_mut(self.len)) {
            *slot = Some(id);
            *h = hash;
            self.len += 1;
            let (word, bit) = Self::filter_bit(hash);
            self.filter[word] |= bit;
        }
    }
}

/// A packet that opens a flow, its [`Parsed`] filled on first use: a common frame (IPv4 TCP/UDP) is keyed and
/// classified without one (`ruleset::key_input`), and parsed only when what follows reads more of it (a
/// refusal's event or reject).
struct Packet<'f, 'p> {
    frame: &'f [u8],
    parsed: &'p mut Parsed,
    /// Whether `parsed` holds this frame's parse.
    ready: bool,
}

impl Packet<'_, '_> {
    fn parsed(&mut self) -> &Parsed {
        if !self.ready {
            // A common frame: the full parser accepts what `parse_common` did (a property test holds them equal).
            let _ = net::parse_into(self.frame, self.parsed);
            self.ready = true;
        }
        self.parsed
    }
}

fn new_flow(
    cx: &mut JudgeCtx<'_, '_, '_>,
    rs: &Ruleset<'_>,
    new: &NewFlow,
    j: Judgement,
    packet: &mut Packet<'_, '_>,
    created: &mut Created,
) -> Note {
    let frame = packet.frame;
    // An earlier packet of this burst may have created the flow already. An entry that was there before the
    // burst (expired, or a finished connection whose tuple a new SYN reuses) is not that: this packet is judged
    // and, if allowed, replaces it.
    if let Some(id) = created
        .may_hold(new)
        .then(|| cx.tracker.table().find(new.key()))
        .flatten()
    {
        if created.contains(id) {
            known_packet(cx, rs, id, frame.len());
            return Note::Forward;
        }
    }
    if !j.passes() {
        cx.counters
            .rule(j.slot)
            .new_flow(j.rule_id, frame.len() as u64, cx.now);
        let verdict = if j.action == Action::Reject {
            Verdict::Reject
        } else {
            Verdict::Deny
        };
        denied_event(cx, rs, packet.parsed(), &j, verdict, None);
        if j.action == Action::Reject {
            send_reject(cx, frame, packet.parsed());
        }
        return Note::Drop(if j.action == Action::Reject {
            DropReason::PolicyReject
        } else {
            DropReason::PolicyDeny
        });
    }
    let segment = if rs.settings.flood_limits.connections_per_segment != 0 {
        let (source, _) = new.key().endpoint(new.originator());
        rs.segments.segment_of(source, new.key().vlan())
    } else {
        None
    };
    let admission = Admission {
        rule_id: j.rule_id,
        policy_version: rs.version,
        log: j.log,
        monitor: j.monitored,
        segment,
    };
    let (worker, now, counters, events) = (cx.worker, cx.now, cx.counters, &mut cx.events);
    // The flow that gives up its place is reported closed from its entry in place, before it is overwritten.
    let committed = cx.tracker.commit_new_with(new, admission, now, |id, old| {
        counters.flows_closed.add(1);
        events.emit_counted_with(
            || closed_event(&FlowInfo::new(id, old, now), worker, now),
            counters,
        );
    });
    match committed {
        Ok(id) => {
            created.push(id, new.hash());
            counters.flows_created.add(1);
            counters
                .rule(j.slot)
                .new_flow(j.rule_id, frame.len() as u64, now);
            if j.monitored {
                counters.would_deny.add(1);
            }
            if let Some(e) = cx.tracker.table().get(id) {
                let verdict = if j.monitored {
                    Verdict::WouldDeny
                } else {
                    Verdict::Allow
                };
                cx.events.emit_counted_with(
                    || {
                        event(
                            EventKind::New,
                            &FlowInfo::new(id, e, now),
                            verdict,
                            worker,
                            now,
                        )
                    },
                    counters,
                );
            }
            Note::Forward
        }
        Err(CommitError::Full) => Note::Drop(DropReason::TableFull),
        Err(CommitError::Limit(limit)) => {
            cx.counters.refused(Refusal::Limit(limit));
            denied_event(
                cx,
                rs,
                packet.parsed(),
                &j,
                Verdict::Deny,
                Some(limit.as_str()),
            );
            Note::Dropped
        }
    }
}

/// A flow admitted by an older version meets the current one: it stays (re-stamped) or goes.
fn recheck(
    cx: &mut JudgeCtx<'_, '_, '_>,
    rs: &Ruleset<'_>,
    id: FlowId,
    j: Judgement,
    len: usize,
) -> Note {
    if j.passes() {
        if let Some(e) = cx.tracker.table_mut().get_mut(id) {
            e.set_admission(j.rule_id, rs.version);
            e.set_monitored(j.monitored);
            e.set_logged(j.log);
        }
        known_packet(cx, rs, id, len);
        return Note::Forward;
    }
    if let Some(e) = cx.tracker.remove(id) {
        cx.counters.flows_closed.add(1);
        let info = FlowInfo::new(id, &e, cx.now);
        cx.events
            .emit_counted(closed_event(&info, cx.worker, cx.now), cx.counters);
    }
    Note::Drop(DropReason::PolicyRevoked)
}

/// A denied flow event (rate limited): by the rule `rule_id`, or by the flood `limit` of a flow it allows.
fn denied_event(
    cx: &mut JudgeCtx<'_, '_, '_>,
    rs: &Ruleset<'_>,
    p: &Parsed,
    j: &Judgement,
    verdict: Verdict,
    limit: Option<&'static str>,
) {
    if cx.now.saturating_sub(cx.deny.window_start) >= 1000 {
        cx.deny.window_start = cx.now;
        cx.deny.left = cx.deny_rate;
    }
    if cx.deny.left == 0 {
        cx.counters.events_rate_limited.add(1);
        return;
    }
    cx.deny.left -= 1;
    let Some(flow) = crate::ruleset::flow_of(p) else {
        return;
    };
    let ev = FlowEvent {
        kind: EventKind::Denied,
        time_ms: cx.now,
        worker: cx.worker,
        src: flow.src,
        dst: flow.dst,
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        vlan: flow.vlan.unwrap_or(0),
        verdict,
        rule_id: j.rule_id,
        tier: j.tier,
        policy_version: rs.version,
        packets: [1, 0],
        bytes: [0, 0],
        duration_ms: 0,
        tcp_state: None,
        tcp_flags: None,
        limit,
    };
    cx.events.emit_counted(ev, cx.counters);
}

/// Answers a rejected packet out of the port it came in on.
fn send_reject(cx: &mut JudgeCtx<'_, '_, '_>, frame: &[u8], p: &Parsed) {
    let mut out = [0u8; reject::MAX_REPLY_LEN];
    let Ok(len) = reject::build_reject(frame, p, &mut out) else {
        return;
    };
    if let Some(m) = Mbuf::from_bytes(cx.pool, &out[..len]) {
        // A full reply burst drops the answer; the packet itself is dropped either way.
        let _ = cx.replies.push(m);
    }
}

fn event(kind: EventKind, f: &FlowInfo, verdict: Verdict, worker: u16, now: u64) -> FlowEvent {
    FlowEvent {
        kind,
        time_ms: now,
        worker,
        src: f.src,
        dst: f.dst,
        sport: f.sport,
        dport: f.dport,
        proto: f.proto,
        vlan: f.vlan,
        verdict,
        rule_id: f.rule_id,
        tier: None,
        policy_version: f.policy_version,
        packets: [f.packets_orig, f.packets_reply],
        bytes: [f.bytes_orig, f.bytes_reply],
        duration_ms: f.age_ms,
        tcp_state: (f.proto == 6).then_some(f.state),
        tcp_flags: f.tcp_flags,
        limit: None,
    }
}

fn closed_event(f: &FlowInfo, worker: u16, now: u64) -> FlowEvent {
    let verdict = if f.monitored {
        Verdict::WouldDeny
    } else {
        Verdict::Allow
    };
    event(EventKind::Closed, f, verdict, worker, now)
}

#[cfg(test)]
mod tests {
    use super::{Idle, IdleBackoff};
    use std::time::Duration;

    fn sleeps(idle: &mut Idle, polls: usize) -> Vec<Option<Duration>> {
        (0..polls).map(|_| idle.after_empty_poll()).collect()
    }

    #[test]
    fn idle_backoff_sleeps_after_empty_polls_doubling_to_the_max_and_resets_on_a_packet() {
        let us = |n| Some(Duration::from_micros(n));
        let mut idle = Idle::new(IdleBackoff {
            sleep_max_us: 20,
            polls_before_sleep: 3,
        });
        assert_eq!(
            sleeps(&mut idle, 8),
            [None, None, us(2), us(4), us(8), us(16), us(20), us(20)]
        );
        idle.reset();
        assert_eq!(sleeps(&mut idle, 4), [None, None, us(2), us(4)]);
        // Off: pure polling, however long the quiet.
        let mut off = Idle::new(IdleBackoff {
            sleep_max_us: 0,
            polls_before_sleep: 1,
        });
        assert!(sleeps(&mut off, 10_000).iter().all(Option::is_none));
    }
}
