//! Flow events — a new flow admitted, a flow denied, a flow closed — leave the workers through a bounded queue
//! per worker. A worker never waits for room: when its queue is full the event is dropped and counted, because
//! telemetry must never slow down or stop enforcement.

use std::net::IpAddr;

use crossbeam_channel::{Receiver, Sender, TrySendError};
pub use protocol::{EventKind, Verdict};

use crate::counters::{Counter, WorkerCounters};

/// One event as a worker records it: `Copy` and allocation-free. The management thread turns it into the
/// protocol's [`protocol::FlowEvent`] ([`FlowEvent::into_wire`]), adding what only it knows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowEvent {
    pub kind: EventKind,
    /// Milliseconds since the dataplane started ([`crate::clock::Clock`]).
    pub time_ms: u64,
    pub worker: u16,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// Outer VLAN id; 0 when untagged.
    pub vlan: u16,
    pub verdict: Verdict,
    /// The deciding rule's id; 0 for the default action.
    pub rule_id: u32,
    pub policy_version: u32,
    /// Original direction, reply direction.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub duration_ms: u64,
    /// TCP state when the flow closed (`time_wait`, `close`, ...), if TCP.
    pub tcp_state: Option<&'static str>,
    /// TCP control flags each side sent, `[original, reply]`, if TCP and tracked.
    pub tcp_flags: Option<[u8; 2]>,
    /// The flood limit that refused a flow the policy allows (a denied event).
    pub limit: Option<&'static str>,
}

impl FlowEvent {
    /// The event as the control socket sends it: with its wall-clock `time` and the policy segments of its
    /// addresses.
    pub fn into_wire(
        self,
        time: String,
        src_segments: Vec<String>,
        dst_segments: Vec<String>,
    ) -> protocol::FlowEvent {
        protocol::FlowEvent {
            kind: self.kind,
            time_ms: self.time_ms,
            time,
            worker: self.worker,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            vlan: self.vlan,
            src_segments,
            dst_segments,
            verdict: self.verdict,
            rule_id: self.rule_id,
            policy_version: self.policy_version,
            packets: self.packets,
            bytes: self.bytes,
            duration_ms: self.duration_ms,
            tcp_state: self.tcp_state.map(String::from),
            tcp_flags: self.tcp_flags,
            limit: self.limit.map(String::from),
        }
    }
}

/// A worker's end of its event queue.
#[derive(Debug)]
pub struct EventSink {
    tx: Sender<FlowEvent>,
}

impl EventSink {
    /// Queues `ev`, or counts it in `dropped` when the queue is full or the reader is gone.
    #[inline]
    pub fn emit(&self, ev: FlowEvent, dropped: &Counter) {
        match self.tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => dropped.add(1),
        }
    }

    /// Shorthand with a worker's counters.
    #[inline]
    pub fn emit_counted(&self, ev: FlowEvent, counters: &WorkerCounters) {
        self.emit(ev, &counters.events_dropped)
    }

    /// [`emit_counted`](Self::emit_counted) of the event `make` builds, built only if the queue has room: in a
    /// flood of new flows, when most events are dropped anyway, the worker does not build them first.
    #[inline]
    pub fn emit_counted_with(&self, make: impl FnOnce() -> FlowEvent, counters: &WorkerCounters) {
        if self.tx.is_full() {
            counters.events_dropped.add(1);
            return;
        }
        self.emit(make(), &counters.events_dropped)
    }
}

/// The management side's end of every worker's queue.
#[derive(Debug)]
pub struct EventSource {
    rx: Receiver<FlowEvent>,
}

impl EventSource {
    /// Takes what is queued now, without waiting, at most `max`.
    pub fn drain(&self, max: usize, into: &mut Vec<FlowEvent>) -> usize {
        let before = into.len();
        into.extend(self.rx.try_iter().take(max));
        into.len() - before
    }
}

/// A bounded queue for one worker: its sink, and the source the management thread reads.
pub fn queue(capacity: usize) -> (EventSink, EventSource) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    (EventSink { tx }, EventSource { rx })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u16) -> FlowEvent {
        FlowEvent {
            kind: EventKind::New,
            time_ms: 1,
            worker: 0,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            sport: n,
            dport: 80,
            proto: 6,
            vlan: 0,
            verdict: Verdict::Allow,
            rule_id: 7,
            policy_version: 1,
            packets: [1, 0],
            bytes: [60, 0],
            duration_ms: 0,
            tcp_state: None,
            tcp_flags: None,
            limit: None,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (sink, source) = queue(4);
        let dropped = Counter::default();
        for n in 0..10 {
            sink.emit(ev(n), &dropped);
        }
        assert_eq!(dropped.get(), 6);
        let mut got = Vec::new();
        assert_eq!(source.drain(100, &mut got), 4);
        assert_eq!(
            got.iter().map(|e| e.sport).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        sink.emit(ev(10), &dropped);
        assert_eq!(dropped.get(), 6);
        drop(source);
        sink.emit(ev(11), &dropped);
        assert_eq!(dropped.get(), 7, "a gone reader is a drop, not a hang");
    }

    #[test]
    fn a_full_queue_does_not_build_the_event() {
        let (sink, source) = queue(2);
        let all = crate::counters::Counters::new(1, 1);
        let counters = all.worker(0);
        let mut built = 0;
        for n in 0..5 {
            sink.emit_counted_with(
                || {
                    built += 1;
                    ev(n)
                },
                counters,
            );
        }
        assert_eq!(built, 2, "only the events that fit were built");
        assert_eq!(counters.events_dropped.get(), 3);
        let mut got = Vec::new();
        assert_eq!(source.drain(100, &mut got), 2);
        assert_eq!(got.iter().map(|e| e.sport).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn goes_on_the_wire_with_time_and_segments() {
        let wire = ev(1).into_wire("t".into(), vec!["a".into()], Vec::new());
        let v = serde_json::to_value(&wire).unwrap();
        assert_eq!(v["kind"], "new");
        assert_eq!(v["verdict"], "allow");
        assert_eq!(v["src"], "10.0.0.1");
        assert_eq!(
            (v["time"].clone(), v["src_segments"][0].clone()),
            ("t".into(), "a".into())
        );
        assert!(v["tcp_state"].is_null());
    }
}
