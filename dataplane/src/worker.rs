//! The poll loop. It runs on a pinned worker lcore and, by design, never allocates, locks, logs or makes a
//! system call: everything it needs (queues, a burst buffer on its stack, its counters) is set up before it
//! starts, and it reports only through its counters.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use dpdk::{Burst, RxQueue, TxQueue};

use crate::counters::{DropReason, WorkerCounters};

/// One direction across a link, as seen by one worker: its RX queue on the ingress port and its TX queue on
/// the egress port.
#[derive(Debug)]
pub struct Path<'p> {
    pub rx: RxQueue<'p>,
    pub tx: TxQueue<'p>,
}

/// Forwards frames unchanged along `paths` until `stop` is set. Frames the egress device does not take are
/// freed and counted as [`DropReason::TxUnsent`]: holding them back would stall the ingress side, and a bump
/// in the wire must never build an unbounded queue.
pub fn run(
    paths: &mut [Path<'_>],
    burst_size: usize,
    counters: &WorkerCounters,
    stop: &AtomicBool,
) {
    let mut burst = Burst::with_capacity(burst_size);
    while !stop.load(Relaxed) {
        let (mut rx, mut tx, mut dropped) = (0, 0, 0);
        for path in paths.iter_mut() {
            let n = path.rx.rx(&mut burst);
            if n == 0 {
                continue;
            }
            rx += n;
            tx += path.tx.tx(&mut burst);
            dropped += burst.clear();
        }
        if rx == 0 {
            counters.idle_polls.add(1);
            continue;
        }
        counters.busy_polls.add(1);
        counters.rx_packets.add(rx as u64);
        counters.tx_packets.add(tx as u64);
        if dropped > 0 {
            counters.drop(DropReason::TxUnsent, dropped as u64);
        }
    }
}
