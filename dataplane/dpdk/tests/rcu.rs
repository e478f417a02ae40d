//! `dpdk::rcu` against a real EAL, with the reader on worker lcore 1: one test running named checks in order
//! (see `support`). The watchdog's limit is short because a grace period that never ends is the bug to catch.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::ThreadId;
use std::time::Duration;

use dpdk::rcu::{Qsbr, RcuCell, MAX_THREADS};
use dpdk::{lcore, Eal, Error};
use support::{run_checks, Check};

/// Who dropped which version, and on which thread.
struct Tracker {
    main: ThreadId,
    drops: Vec<AtomicU32>,
    off_main: AtomicU32,
}

impl Tracker {
    fn new(versions: usize) -> Self {
        Tracker {
            main: std::thread::current().id(),
            drops: (0..=versions).map(|_| AtomicU32::new(0)).collect(),
            off_main: AtomicU32::new(0),
        }
    }

    fn dropped(&self, version: u64) -> u32 {
        self.drops[version as usize].load(Ordering::SeqCst)
    }
}

/// A published value: self-consistent (`b == 3 * a`) while alive; dropping it is recorded in the tracker (a side
/// table, so a reader can detect use after free without touching freed memory).
struct V<'t> {
    a: u64,
    b: u64,
    tracker: &'t Tracker,
}

impl<'t> V<'t> {
    fn new(a: u64, tracker: &'t Tracker) -> Box<Self> {
        Box::new(V {
            a,
            b: 3 * a,
            tracker,
        })
    }
}

impl Drop for V<'_> {
    fn drop(&mut self) {
        if std::thread::current().id() != self.tracker.main {
            self.tracker.off_main.fetch_add(1, Ordering::SeqCst);
        }
        self.tracker.drops[self.a as usize].fetch_add(1, Ordering::SeqCst);
        // Poison the value, in case anything still looked at it.
        self.b = u64::MAX;
    }
}

#[test]
fn rcu_on_a_real_eal() {
    let eal = support::start_eal("rcu", &[]);
    let checks: &[(&str, Check)] = &[
        ("qsbr_and_thread_ids", qsbr_and_thread_ids),
        (
            "fail_closed_before_first_publish",
            fail_closed_before_first_publish,
        ),
        (
            "offline_readers_do_not_block_publish",
            offline_readers_do_not_block_publish,
        ),
        (
            "hot_swap_under_a_reader_on_lcore_1",
            hot_swap_under_a_reader_on_lcore_1,
        ),
        (
            "grace_period_ends_while_reader_keeps_reporting",
            grace_period_ends_while_reader_keeps_reporting,
        ),
        (
            "reader_offline_while_blocked_on_lcore_1",
            reader_offline_while_blocked_on_lcore_1,
        ),
    ];
    run_checks("rcu", &eal, Duration::from_secs(60), checks);
}

fn qsbr_and_thread_ids(_eal: &Eal) {
    assert!(matches!(Qsbr::new(0), Err(Error::RcuMaxThreads(0))));
    assert!(matches!(
        Qsbr::new(MAX_THREADS + 1),
        Err(Error::RcuMaxThreads(_))
    ));
    assert_eq!(Qsbr::new(MAX_THREADS).unwrap().max_threads(), MAX_THREADS);
    assert_eq!(Qsbr::new(100).unwrap().max_threads(), 100);
    let cell = RcuCell::<u64>::new(3).unwrap();
    let r1 = cell.register(1).unwrap();
    assert!(matches!(cell.register(1), Err(Error::RcuThreadIdTaken(1))));
    assert!(matches!(
        cell.register(3),
        Err(Error::RcuThreadIdRange {
            id: 3,
            max_threads: 3
        })
    ));
    let r0 = cell.reader().unwrap();
    let r2 = cell.reader().unwrap();
    assert_eq!((r0.id(), r1.id(), r2.id()), (0, 1, 2));
    assert!(matches!(cell.reader(), Err(Error::RcuNoFreeThreadId(3))));
    drop(r1);
    assert_eq!(
        cell.reader().unwrap().id(),
        1,
        "a dropped reader's id is free again"
    );
    // More than one bitmap word of ids.
    let big = RcuCell::<u64>::new(130).unwrap();
    let readers: Vec<_> = (0..130).map(|_| big.reader().unwrap()).collect();
    assert_eq!(readers.last().unwrap().id(), 129);
    big.publish(Box::new(1));
    drop(readers);
}

fn fail_closed_before_first_publish(_eal: &Eal) {
    let tracker = Tracker::new(2);
    let cell: RcuCell<V<'_>> = RcuCell::new(2).unwrap();
    let mut r = cell.register(0).unwrap();
    assert!(!r.is_online());
    assert!(r.read().is_none(), "nothing published: fail closed");
    assert!(r.is_online());
    r.quiescent();
    cell.with_current(|v| assert!(v.is_none()));
    r.offline();
    assert_eq!(
        cell.publish(V::new(1, &tracker)),
        Duration::ZERO,
        "nothing to wait for"
    );
    assert_eq!(r.read().map(|v| v.a), Some(1));
    r.offline();
    cell.clear();
    assert_eq!(tracker.dropped(1), 1);
    assert!(r.read().is_none(), "cleared: fail closed again");
    drop(r);
    cell.publish(V::new(2, &tracker));
    cell.with_current(|v| assert_eq!(v.map(|v| v.b), Some(6)));
    drop(cell);
    assert_eq!(tracker.dropped(2), 1, "the cell drops its last value");
}

fn offline_readers_do_not_block_publish(_eal: &Eal) {
    let tracker = Tracker::new(4);
    let cell: RcuCell<V<'_>> = RcuCell::new(4).unwrap();
    cell.publish(V::new(1, &tracker));
    // Registered, never read: not online yet.
    let never = cell.register(0).unwrap();
    // Read, then offline.
    let mut off = cell.register(1).unwrap();
    assert_eq!(off.read().unwrap().a, 1);
    off.offline();
    // Read, then dropped (drop goes offline and unregisters).
    let mut gone = cell.register(2).unwrap();
    assert_eq!(gone.read().unwrap().a, 1);
    drop(gone);
    // All on this very thread: if any of them counted as online, this would wait forever.
    cell.publish(V::new(2, &tracker));
    assert_eq!(tracker.dropped(1), 1);
    assert_eq!(off.read().unwrap().a, 2, "back online on the next read");
    off.offline();
    cell.publish(V::new(3, &tracker));
    drop((never, off));
    assert_eq!(tracker.dropped(2), 1);
    assert_eq!(tracker.off_main.load(Ordering::SeqCst), 0);
}

fn hot_swap_under_a_reader_on_lcore_1(eal: &Eal) {
    const VERSIONS: u64 = 5000;
    let tracker = Tracker::new(VERSIONS as usize);
    let cell: RcuCell<V<'_>> = RcuCell::new(2).unwrap();
    let reader = cell.register(1).unwrap();
    let seen = AtomicU64::new(0);
    let nones = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    let mut graces = Vec::with_capacity(VERSIONS as usize);
    let ((), joined) = lcore::scope(eal, |s| {
        let tracker = &tracker;
        let (seen, nones, reads) = (&seen, &nones, &reads);
        s.spawn(1, move || {
            let mut reader = reader;
            let mut last = 0;
            loop {
                match reader.read() {
                    Some(v) => {
                        let a = v.a;
                        assert_eq!(v.b, 3 * a, "inconsistent value");
                        assert!(a >= last, "versions went back: {a} after {last}");
                        assert_eq!(tracker.dropped(a), 0, "version {a} was dropped while read");
                        // Hold the reference a while, then look again: still alive, still consistent.
                        for _ in 0..(a % 97) {
                            std::hint::spin_loop();
                        }
                        assert_eq!(tracker.dropped(a), 0, "version {a} was dropped while read");
                        assert_eq!(v.b, 3 * v.a, "value changed under the reader");
                        if a != last {
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                        last = a;
                        if a == VERSIONS {
                            break;
                        }
                    }
                    None => {
                        assert_eq!(last, 0, "None after a value was published");
                        nones.fetch_add(1, Ordering::Relaxed);
                    }
                }
                reader.quiescent();
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
        .expect("launch on lcore 1");
        for a in 1..=VERSIONS {
            graces.push(cell.publish(V::new(a, tracker)));
        }
    });
    assert!(
        joined.panicked.is_empty(),
        "the reader saw only live, consistent, non-decreasing values"
    );
    for a in 1..VERSIONS {
        assert_eq!(tracker.dropped(a), 1, "version {a} dropped exactly once");
    }
    assert_eq!(tracker.dropped(VERSIONS), 0, "the current version is alive");
    assert_eq!(
        tracker.off_main.load(Ordering::SeqCst),
        0,
        "every drop ran on the main thread"
    );
    drop(cell);
    assert_eq!(tracker.dropped(VERSIONS), 1);
    assert_eq!(tracker.off_main.load(Ordering::SeqCst), 0);
    graces.sort();
    eprintln!(
        "  {VERSIONS} versions published; the reader made {} reads, saw {} distinct versions ({} reads before the first); \
         grace period median {:?}, p99 {:?}, max {:?}",
        reads.load(Ordering::Relaxed),
        seen.load(Ordering::Relaxed),
        nones.load(Ordering::Relaxed),
        graces[graces.len() / 2],
        graces[graces.len() * 99 / 100],
        graces[graces.len() - 1]
    );
    assert!(seen.load(Ordering::Relaxed) > 1);
}

fn grace_period_ends_while_reader_keeps_reporting(eal: &Eal) {
    let tracker = Tracker::new(101);
    let cell: RcuCell<V<'_>> = RcuCell::new(2).unwrap();
    cell.publish(V::new(1, &tracker));
    let reader = cell.register(1).unwrap();
    let online = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let mut graces = Vec::new();
    let ((), joined) = lcore::scope(eal, |s| {
        let (online, stop, tracker) = (&online, &stop, &tracker);
        s.spawn(1, move || {
            let mut reader = reader;
            while !stop.load(Ordering::Relaxed) {
                let v = reader.read().expect("published");
                assert_eq!(tracker.dropped(v.a), 0);
                online.store(true, Ordering::Relaxed);
                reader.quiescent();
            }
        })
        .expect("launch on lcore 1");
        while !online.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
        // The reader is online and never goes offline: every grace period ends through its quiescent states.
        for a in 2..=101 {
            graces.push(cell.publish(V::new(a, tracker)));
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(joined.panicked.is_empty());
    assert!(
        graces.iter().all(|g| *g < Duration::from_secs(1)),
        "{graces:?}"
    );
    assert!(
        graces.iter().any(|g| *g > Duration::ZERO),
        "publish waited for the reader"
    );
    for a in 1..=100 {
        assert_eq!(tracker.dropped(a), 1);
    }
    eprintln!(
        "  100 grace periods with an online reader, max {:?}",
        graces.iter().max().unwrap()
    );
}

fn reader_offline_while_blocked_on_lcore_1(eal: &Eal) {
    let tracker = Tracker::new(3);
    let cell: RcuCell<V<'_>> = RcuCell::new(2).unwrap();
    cell.publish(V::new(1, &tracker));
    let reader = cell.register(1).unwrap();
    let (to_worker, from_main) = mpsc::channel::<()>();
    let (to_main, from_worker) = mpsc::channel::<u64>();
    let ((), joined) = lcore::scope(eal, |s| {
        s.spawn(1, move || {
            let mut reader = reader;
            let first = reader.read().expect("published").a;
            // About to block: go offline so writers do not wait for us.
            reader.offline();
            to_main.send(first).unwrap();
            from_main.recv().unwrap();
            to_main.send(reader.read().expect("published").a).unwrap();
            reader.quiescent();
        })
        .expect("launch on lcore 1");
        assert_eq!(from_worker.recv().unwrap(), 1);
        // The worker is blocked in recv, offline: the grace period does not wait for it.
        cell.publish(V::new(2, &tracker));
        assert_eq!(tracker.dropped(1), 1);
        to_worker.send(()).unwrap();
        assert_eq!(from_worker.recv().unwrap(), 2);
    });
    assert!(joined.panicked.is_empty());
}
