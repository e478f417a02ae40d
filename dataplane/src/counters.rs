//! Per-worker counters. Each worker is the only writer of its own block, which sits on cache lines of its
//! own (`CachePadded`), so counting costs plain loads and stores — no atomic read-modify-write, no sharing.
//! Any other thread may read them at any time (relaxed atomics): a reader sees each counter's latest value
//! without stopping or slowing the worker.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;
use serde::Serialize;

/// Why the dataplane dropped a packet. Small and `Copy`: it travels with packets on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// The egress device did not take the packet — its TX queue was full (back-pressure) or its link was
    /// down — so it was freed.
    TxUnsent,
}

impl DropReason {
    pub const ALL: [DropReason; 1] = [DropReason::TxUnsent];
    pub const COUNT: usize = Self::ALL.len();

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::TxUnsent => "tx_unsent",
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

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One worker's counters.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    pub rx_packets: Counter,
    pub tx_packets: Counter,
    /// Loop iterations that moved at least one packet, and those that found every queue empty.
    pub busy_polls: Counter,
    pub idle_polls: Counter,
    pub drops: [Counter; DropReason::COUNT],
    /// Flow events lost because the worker's event queue was full.
    pub events_dropped: Counter,
}

impl WorkerCounters {
    #[inline(always)]
    pub fn drop(&self, reason: DropReason, n: u64) {
        self.drops[reason as usize].add(n);
    }

    pub fn snapshot(&self) -> WorkerSnapshot {
        WorkerSnapshot {
            rx_packets: self.rx_packets.get(),
            tx_packets: self.tx_packets.get(),
            busy_polls: self.busy_polls.get(),
            idle_polls: self.idle_polls.get(),
            drops: Drops(std::array::from_fn(|i| self.drops[i].get())),
        }
    }
}

/// The counters of every worker, each on its own cache lines.
#[derive(Debug)]
pub struct Counters {
    workers: Box<[CachePadded<WorkerCounters>]>,
}

impl Counters {
    pub fn new(workers: usize) -> Self {
        Counters {
            workers: (0..workers)
                .map(|_| CachePadded::new(WorkerCounters::default()))
                .collect(),
        }
    }

    pub fn worker(&self, i: usize) -> &WorkerCounters {
        &self.workers[i]
    }

    pub fn snapshot(&self) -> Vec<WorkerSnapshot> {
        self.workers.iter().map(|w| w.snapshot()).collect()
    }
}

/// Drop counts by reason, serialized as `{"tx_unsent": n, ...}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops(pub [u64; DropReason::COUNT]);

impl Serialize for Drops {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(DropReason::COUNT))?;
        for r in DropReason::ALL {
            m.serialize_entry(r.name(), &self.0[r as usize])?;
        }
        m.end()
    }
}

/// A reading of one worker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WorkerSnapshot {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub busy_polls: u64,
    pub idle_polls: u64,
    pub drops: Drops,
}

impl WorkerSnapshot {
    /// Sums readings (for totals across workers).
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a WorkerSnapshot>) -> WorkerSnapshot {
        all.into_iter()
            .fold(WorkerSnapshot::default(), |mut acc, w| {
                acc.rx_packets += w.rx_packets;
                acc.tx_packets += w.tx_packets;
                acc.busy_polls += w.busy_polls;
                acc.idle_polls += w.idle_polls;
                for (a, b) in acc.drops.0.iter_mut().zip(w.drops.0) {
                    *a += b;
                }
                acc
            })
    }

    /// Share of polls that found work, 0..=1.
    pub fn busy_ratio(&self) -> f64 {
        let total = self.busy_polls + self.idle_polls;
        if total == 0 {
            0.0
        } else {
            self.busy_polls as f64 / total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_do_not_share_cache_lines() {
        let c = Counters::new(2);
        let a = c.worker(0) as *const _ as usize;
        let b = c.worker(1) as *const _ as usize;
        assert!(b.abs_diff(a) >= 64);
        assert_eq!(a % 64, 0);
    }

    #[test]
    fn snapshot_and_sum() {
        let c = Counters::new(2);
        c.worker(0).rx_packets.add(5);
        c.worker(1).rx_packets.add(7);
        c.worker(1).drop(DropReason::TxUnsent, 3);
        c.worker(0).busy_polls.add(1);
        c.worker(0).idle_polls.add(3);
        let snaps = c.snapshot();
        let total = WorkerSnapshot::sum(&snaps);
        assert_eq!(total.rx_packets, 12);
        assert_eq!(total.drops.0[DropReason::TxUnsent as usize], 3);
        assert_eq!(snaps[0].busy_ratio(), 0.25);
        let json = serde_json::to_value(total).unwrap();
        assert_eq!(json["drops"]["tx_unsent"], 3);
    }
}
