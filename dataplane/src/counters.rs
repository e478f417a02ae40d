//! Per-worker counters. Each worker is the only writer of its own block, which sits on cache lines of its
//! own (`CachePadded`), so counting costs plain loads and stores — no atomic read-modify-write, no sharing.
//! Any other thread may read them at any time (relaxed atomics): a reader sees each counter's latest value
//! without stopping or slowing the worker. Aggregation across workers happens on read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;
use net::ParseError;
pub use protocol::{RuleCounters, WorkerSnapshot};

use crate::conntrack;

/// Why the dataplane dropped a packet. Small and `Copy`: it travels with packets on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// The egress device did not take the packet — its TX queue was full (back-pressure) or its link was
    /// down — so it was freed.
    TxUnsent,
    /// No policy is loaded yet: the gateway fails closed.
    NoPolicy,
    /// The frame failed to parse (see the `malformed` detail counters).
    Malformed,
    /// A non-IP EtherType the policy does not pass (ARP and neighbour discovery have their own settings).
    Ethertype,
    /// A non-first IP fragment: it carries no ports to judge or track it by.
    Fragment,
    /// Denied by a rule or the default action.
    PolicyDeny,
    /// Rejected by a rule or the default action (and answered with a TCP RST or ICMP unreachable).
    PolicyReject,
    /// A tracked connection that the current policy version no longer allows.
    PolicyRevoked,
    /// TCP refused by the state machine: invalid flags, not a SYN, unexpected SYN or SYN-ACK, invalid state.
    TcpInvalid,
    /// TCP outside the receiver's window (data or RST); dropped silently, never answered.
    TcpOutOfWindow,
    /// ICMP that fits no tracked flow: unsolicited echo reply, wrong direction, unrelated error.
    IcmpInvalid,
    /// A new flow could not be tracked: the table is full of established flows.
    TableFull,
    /// A new flow the policy allows, over one of its flood limits (see the `conntrack` detail counters).
    FloodLimit,
    /// This gateway is the standby member of an HA pair: it forwards nothing.
    Standby,
    /// A heartbeat of this gateway's HA pair (`ha.pair_id`), consumed: heartbeats are never forwarded.
    HaHeartbeat,
}

impl DropReason {
    pub const ALL: [DropReason; 15] = [
        DropReason::TxUnsent,
        DropReason::NoPolicy,
        DropReason::Malformed,
        DropReason::Ethertype,
        DropReason::Fragment,
        DropReason::PolicyDeny,
        DropReason::PolicyReject,
        DropReason::PolicyRevoked,
        DropReason::TcpInvalid,
        DropReason::TcpOutOfWindow,
        DropReason::IcmpInvalid,
        DropReason::TableFull,
        DropReason::FloodLimit,
        DropReason::Standby,
        DropReason::HaHeartbeat,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::TxUnsent => "tx_unsent",
            DropReason::NoPolicy => "no_policy",
            DropReason::Malformed => "malformed",
            DropReason::Ethertype => "ethertype",
            DropReason::Fragment => "fragment",
            DropReason::PolicyDeny => "policy_deny",
            DropReason::PolicyReject => "policy_reject",
            DropReason::PolicyRevoked => "policy_revoked",
            DropReason::TcpInvalid => "tcp_invalid",
            DropReason::TcpOutOfWindow => "tcp_out_of_window",
            DropReason::IcmpInvalid => "icmp_invalid",
            DropReason::TableFull => "table_full",
            DropReason::FloodLimit => "flood_limit",
            DropReason::Standby => "standby",
            DropReason::HaHeartbeat => "ha_heartbeat",
        }
    }

    /// The top-level reason of a connection-tracking refusal.
    pub const fn of_refusal(r: conntrack::Refusal) -> Self {
        use conntrack::TcpRefusal as T;
        match r {
            conntrack::Refusal::Tcp(T::OutOfWindow | T::RstOutOfWindow) => {
                DropReason::TcpOutOfWindow
            }
            conntrack::Refusal::Tcp(_) => DropReason::TcpInvalid,
            conntrack::Refusal::Limit(_) => DropReason::FloodLimit,
            _ => DropReason::IcmpInvalid,
        }
    }
}

/// A single-writer counter: the owning worker adds with a plain load and store.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline(always)]
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One rule's counters in one worker. The slot is tagged with the rule id it counts for: a slot handed to a
/// new rule id after the old rule was deleted is reset by its worker at the first hit, so counts never leak
/// from one rule to another, and a rule that persists across versions keeps its slot and its counts.
#[derive(Debug, Default)]
pub struct RuleSlot {
    pub rule_id: Counter,
    pub packets: Counter,
    pub bytes: Counter,
    pub flows: Counter,
    /// [`crate::clock::Clock`] milliseconds of the last hit + 1 (0: never).
    pub last_hit: Counter,
}

impl RuleSlot {
    #[inline]
    fn claim(&self, rule_id: u32) {
        if self.rule_id.get() != u64::from(rule_id) {
            self.packets.set(0);
            self.bytes.set(0);
            self.flows.set(0);
            self.last_hit.set(0);
            self.rule_id.set(u64::from(rule_id));
        }
    }

    /// Counts a packet of a flow the rule admitted earlier. A slot that has meanwhile been claimed by another
    /// rule is left alone (the flow outlived its rule).
    #[inline]
    pub fn hit(&self, rule_id: u32, bytes: u64, now_ms: u64) {
        if self.rule_id.get() == u64::from(rule_id) {
            self.count(bytes, now_ms);
        }
    }

    /// Counts a new flow (or a denied packet) the rule decided, claiming the slot for the rule.
    #[inline]
    pub fn new_flow(&self, rule_id: u32, bytes: u64, now_ms: u64) {
        self.claim(rule_id);
        self.count(bytes, now_ms);
        self.flows.add(1);
    }

    #[inline]
    fn count(&self, bytes: u64, now_ms: u64) {
        self.packets.add(1);
        self.bytes.add(bytes);
        self.last_hit.set(now_ms + 1);
    }
}

/// One worker's counters.
#[derive(Debug)]
pub struct WorkerCounters {
    pub rx_packets: Counter,
    pub tx_packets: Counter,
    /// Loop iterations that moved at least one packet, and those that found every queue empty.
    pub busy_polls: Counter,
    pub idle_polls: Counter,
    /// Packets that passed only because of monitor mode.
    pub would_deny: Counter,
    pub flows_created: Counter,
    /// Flows that ended: expired, closed, displaced, revoked or killed.
    pub flows_closed: Counter,
    /// Flows tracked right now (set by the worker).
    pub flows_active: Counter,
    /// Unestablished flows evicted to make room for new ones in a full table (set by the worker).
    pub flows_evicted: Counter,
    /// Sources that lost their flood-limit slot to a new one (set by the worker).
    pub flood_sources_evicted: Counter,
    pub rejects_sent: Counter,
    /// Flow events lost because the worker's event queue was full.
    pub events_dropped: Counter,
    /// Denied-flow events not emitted because of the per-worker rate limit.
    pub events_rate_limited: Counter,
    pub drops: [Counter; DropReason::COUNT],
    pub malformed: [Counter; ParseError::ALL.len()],
    pub conntrack: [Counter; conntrack::Refusal::COUNT],
    /// Indexed by rule counter slot; slot 0 counts the default action.
    pub rules: Box<[RuleSlot]>,
}

impl WorkerCounters {
    fn new(rule_slots: usize) -> Self {
        WorkerCounters {
            rx_packets: Counter::default(),
            tx_packets: Counter::default(),
            busy_polls: Counter::default(),
            idle_polls: Counter::default(),
            would_deny: Counter::default(),
            flows_created: Counter::default(),
            flows_closed: Counter::default(),
            flows_active: Counter::default(),
            flows_evicted: Counter::default(),
            flood_sources_evicted: Counter::default(),
            rejects_sent: Counter::default(),
            events_dropped: Counter::default(),
            events_rate_limited: Counter::default(),
            drops: Default::default(),
            malformed: Default::default(),
            conntrack: Default::default(),
            rules: (0..rule_slots).map(|_| RuleSlot::default()).collect(),
        }
    }

    #[inline(always)]
    pub fn drop(&self, reason: DropReason, n: u64) {
        self.drops[reason as usize].add(n);
    }

    #[inline]
    pub fn malformed(&self, e: ParseError) {
        self.drop(DropReason::Malformed, 1);
        if let Some(i) = ParseError::ALL.iter().position(|x| *x == e) {
            self.malformed[i].add(1);
        }
    }

    #[inline]
    pub fn refused(&self, r: conntrack::Refusal) {
        self.drop(DropReason::of_refusal(r), 1);
        self.conntrack[r.index()].add(1);
    }

    /// The rule slot `slot` (slot 0, the default action, if out of range).
    #[inline]
    pub fn rule(&self, slot: u32) -> &RuleSlot {
        self.rules.get(slot as usize).unwrap_or(&self.rules[0])
    }

    /// Reads every counter (on the management thread: it allocates the name maps).
    pub fn snapshot(&self) -> WorkerSnapshot {
        let named = |names: &mut dyn Iterator<Item = &'static str>, values: &[Counter]| {
            names
                .zip(values)
                .map(|(n, c)| (n.to_string(), c.get()))
                .collect::<BTreeMap<_, _>>()
        };
        WorkerSnapshot {
            rx_packets: self.rx_packets.get(),
            tx_packets: self.tx_packets.get(),
            busy_polls: self.busy_polls.get(),
            idle_polls: self.idle_polls.get(),
            would_deny: self.would_deny.get(),
            flows_created: self.flows_created.get(),
            flows_closed: self.flows_closed.get(),
            flows_active: self.flows_active.get(),
            flows_evicted: self.flows_evicted.get(),
            flood_sources_evicted: self.flood_sources_evicted.get(),
            rejects_sent: self.rejects_sent.get(),
            events_dropped: self.events_dropped.get(),
            events_rate_limited: self.events_rate_limited.get(),
            drops: named(&mut DropReason::ALL.iter().map(|r| r.name()), &self.drops),
            malformed: named(
                &mut ParseError::ALL.iter().map(|e| e.as_str()),
                &self.malformed,
            ),
            conntrack: named(
                &mut conntrack::Refusal::ALL.iter().map(|r| r.as_str()),
                &self.conntrack,
            ),
        }
    }
}

/// The counters of every worker, each on its own cache lines.
#[derive(Debug)]
pub struct Counters {
    workers: Box<[CachePadded<WorkerCounters>]>,
}

impl Counters {
    /// `rule_slots` includes slot 0 (the default action).
    pub fn new(workers: usize, rule_slots: usize) -> Self {
        Counters {
            workers: (0..workers)
                .map(|_| CachePadded::new(WorkerCounters::new(rule_slots)))
                .collect(),
        }
    }

    pub fn worker(&self, i: usize) -> &WorkerCounters {
        &self.workers[i]
    }

    pub fn snapshot(&self) -> Vec<WorkerSnapshot> {
        self.workers.iter().map(|w| w.snapshot()).collect()
    }

    /// Counters of rule `rule_id` (0: the default action) counted in `slot`, summed over workers. The rule's
    /// `name` and the wall-clock `last_hit` are left for the caller, who knows the policy and the clock.
    pub fn rule(&self, rule_id: u32, slot: u32) -> RuleCounters {
        let mut r = RuleCounters {
            rule_id,
            ..Default::default()
        };
        for w in self.workers.iter() {
            let s = w.rule(slot);
            if s.rule_id.get() == u64::from(rule_id) {
                r.packets += s.packets.get();
                r.bytes += s.bytes.get();
                r.flows += s.flows.get();
                r.last_hit_ms = r.last_hit_ms.max(s.last_hit.get().checked_sub(1));
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_do_not_share_cache_lines() {
        let c = Counters::new(2, 4);
        let a = c.worker(0) as *const _ as usize;
        let b = c.worker(1) as *const _ as usize;
        assert!(b.abs_diff(a) >= 64);
        assert_eq!(a % 64, 0);
    }

    #[test]
    fn snapshot_and_sum() {
        let c = Counters::new(2, 4);
        c.worker(0).rx_packets.add(5);
        c.worker(1).rx_packets.add(7);
        c.worker(1).drop(DropReason::TxUnsent, 3);
        c.worker(0).malformed(ParseError::BadIhl);
        c.worker(0).busy_polls.add(1);
        c.worker(0).idle_polls.add(3);
        let snaps = c.snapshot();
        let total = WorkerSnapshot::sum(&snaps);
        assert_eq!(total.rx_packets, 12);
        assert_eq!(total.drops["tx_unsent"], 3);
        assert_eq!(total.drops["malformed"], 1);
        assert_eq!(total.malformed["bad_ihl"], 1);
        assert_eq!(total.dropped(), 4);
        assert_eq!(snaps[0].busy_ratio(), 0.25);
        let json = serde_json::to_value(&total).unwrap();
        assert_eq!(json["drops"]["tx_unsent"], 3);
    }

    #[test]
    fn rule_slots_follow_rule_ids() {
        let c = Counters::new(2, 4);
        c.worker(0).rule(2).new_flow(10, 60, 5);
        c.worker(1).rule(2).new_flow(10, 40, 7);
        c.worker(1).rule(2).hit(10, 40, 9);
        let r = c.rule(10, 2);
        assert_eq!(
            (r.packets, r.bytes, r.flows, r.last_hit_ms),
            (3, 140, 2, Some(9))
        );
        // Rule 10 deleted; its slot goes to rule 11: the first new flow resets the slot in that worker.
        c.worker(0).rule(2).new_flow(11, 1, 20);
        assert_eq!(c.rule(11, 2).packets, 1);
        assert_eq!(
            c.rule(10, 2).packets,
            2,
            "worker 1 still holds rule 10's count until rule 11 claims it"
        );
        // A late packet of a rule-10 flow does not count against rule 11.
        c.worker(0).rule(2).hit(10, 1, 21);
        assert_eq!(c.rule(11, 2).packets, 1);
        assert_eq!(
            c.rule(12, 3),
            RuleCounters {
                rule_id: 12,
                ..Default::default()
            }
        );
        // Out-of-range slots count as the default action rather than panicking.
        c.worker(0).rule(99).new_flow(0, 1, 1);
        assert_eq!(c.rule(0, 0).packets, 1);
    }
}
