//! Microbenchmark of the per-packet fast path without DPDK: `net::parse` and connection tracking over
//! established flows, in bursts of 32 as the worker receives them.
//!
//! ```sh
//! cargo build --release -p bulkhead-pktgen
//! target/release/bulkhead-pktgen flows --proto tcp --seed 1 --flows 4096 --frame-size 64 --out /tmp/fp.pcap
//! cargo run --release -p bulkhead-dataplane --example fastpath -- --pcap /tmp/fp.pcap
//! cargo run --release -p bulkhead-dataplane --example fastpath -- --flows 1000000   # generated in memory
//! ```
//!
//! The frames are replayed round robin (so consecutive packets belong to different flows, as in
//! `cargo xtask bench`). A first pass creates every flow (loose TCP: the data segments are picked up
//! mid-stream) in a table of `--capacity` slots (default: the flow count rounded up to a power of two, at
//! least 65536 as in the benchmark's configuration); the timed passes then see only established flows.
//! Reported, in nanoseconds of on-CPU time per packet (median and best of `--reps` runs of `--seconds`):
//!
//! * (a) `net::parse_into` alone, into the burst's array;
//! * (b) parse + `Tracker::process` one packet at a time (no batching);
//! * (c) the worker's pass 1: key each packet of the burst (`net::parse_common` and `Tracker::prepare_common`
//!   for the common IPv4 TCP/UDP frame, else parse and `Tracker::prepare_into`), `prefetch_index`
//!   them (index-line loads back to back), `probe` them (index lookups back to back, entries prefetched),
//!   `finish` in packet order, then one expiry step of the default budget, as the poll loop does once per
//!   burst.
//!
//! `--only a|b|c` runs one of them (e.g. under `perf record`). `--passes N` makes each repetition exactly N
//! passes over the frames instead of `--seconds`, for counting instructions: the difference between two
//! `valgrind --tool=callgrind` runs with different N, divided by the extra packets, is instructions per
//! packet, whatever else the machine is doing. It measures and prints; it asserts nothing about timings.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bulkhead_dataplane::conntrack::{Admission, Prepared, Strictness, Timeouts, Track, Tracker};
use bulkhead_pktgen::flows::{FlowSet, FlowsConfig};

const BURST: usize = 32;
/// The worker's default `conntrack.expiry_budget`: table slots examined per poll-loop iteration.
const EXPIRY_BUDGET: usize = 64;

struct Args {
    pcap: Option<PathBuf>,
    flows: u32,
    capacity: Option<usize>,
    seconds: f64,
    reps: usize,
    only: Option<char>,
    passes: Option<u64>,
}

fn usage() -> ! {
    eprintln!(
        "usage: fastpath [--pcap FILE | --flows N] [--capacity SLOTS] [--seconds S per measurement] [--reps R] \
         [--only a|b|c] [--passes N]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        pcap: None,
        flows: 4096,
        capacity: None,
        seconds: 1.0,
        reps: 5,
        only: None,
        passes: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--pcap" => a.pcap = Some(val().into()),
            "--flows" => a.flows = val().parse().unwrap_or_else(|_| usage()),
            "--capacity" => a.capacity = Some(val().parse().unwrap_or_else(|_| usage())),
            "--seconds" => a.seconds = val().parse().unwrap_or_else(|_| usage()),
            "--reps" => a.reps = val().parse().unwrap_or_else(|_| usage()),
            "--only" => a.only = val().chars().next(),
            "--passes" => a.passes = Some(val().parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    a
}

/// Frames of a classic pcap file (either byte order, micro- or nanosecond timestamps).
fn read_pcap(path: &PathBuf) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("fastpath: {}: {e}", path.display());
        std::process::exit(1)
    });
    let magic = bytes.get(..4).map(|m| [m[0], m[1], m[2], m[3]]);
    let le = match magic {
        Some([0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1]) => true,
        Some([0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d]) => false,
        _ => {
            eprintln!("fastpath: {}: not a classic pcap file", path.display());
            std::process::exit(1)
        }
    };
    let u32_at = |i: usize| {
        let b = [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let len = u32_at(at + 8) as usize;
        let start = at + 16;
        let Some(frame) = bytes.get(start..start + len) else {
            break;
        };
        frames.push(frame.to_vec());
        at = start + len;
    }
    frames
}

fn generate(flows: u32) -> Vec<Vec<u8>> {
    let set = FlowSet::new(&FlowsConfig {
        flows,
        ..FlowsConfig::default()
    })
    .unwrap_or_else(|e| {
        eprintln!("fastpath: {e}");
        std::process::exit(2)
    });
    let mut frames = Vec::with_capacity(flows as usize);
    set.for_each_frame(|f| {
        frames.push(f.to_vec());
        Ok(())
    })
    .expect("in memory");
    frames
}

/// Nanoseconds this thread has spent on a CPU (Linux schedstat), so time the scheduler gives to other
/// processes on a busy machine is not counted; wall-clock time where that is unavailable.
fn cpu_ns(wall: Instant) -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| wall.elapsed().as_nanos() as u64)
}

/// How long one repetition runs: `seconds`, or exactly `passes` passes.
#[derive(Clone, Copy)]
struct Length {
    seconds: f64,
    passes: Option<u64>,
}

/// Runs `pass` (one pass over every frame) for `len`, `reps` times; the median and best ns/packet of on-CPU
/// time.
fn measure(frames: usize, len: Length, reps: usize, mut pass: impl FnMut()) -> Figure {
    if reps == 0 {
        return Figure {
            median: f64::NAN,
            min: f64::NAN,
        };
    }
    pass();
    let mut per_packet = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        let cpu0 = cpu_ns(start);
        let mut passes = 0u64;
        while match len.passes {
            Some(n) => passes < n,
            None => start.elapsed() < Duration::from_secs_f64(len.seconds),
        } {
            pass();
            passes += 1;
        }
        let ns = cpu_ns(start).saturating_sub(cpu0) as f64;
        per_packet.push(ns / (passes as f64 * frames as f64));
    }
    per_packet.sort_by(f64::total_cmp);
    Figure {
        median: per_packet[per_packet.len() / 2],
        min: per_packet[0],
    }
}

/// ns/packet over the repetitions of a measurement.
#[derive(Clone, Copy)]
struct Figure {
    median: f64,
    min: f64,
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:6.1} ns/packet (best {:5.1}), {:5.1} Mpps",
            self.median,
            self.min,
            1e3 / self.median
        )
    }
}

fn main() {
    let a = args();
    let frames = match &a.pcap {
        Some(p) => read_pcap(p),
        None => generate(a.flows),
    };
    if frames.is_empty() {
        eprintln!("fastpath: no frames");
        std::process::exit(1);
    }
    let n = frames.len();
    let capacity = a.capacity.unwrap_or(n.next_power_of_two().max(65_536));
    let clock = Instant::now();
    let now = || clock.elapsed().as_millis() as u64;

    let mut tracker = Tracker::new(capacity, 0x5eed, &Timeouts::default(), Strictness::Loose);
    let mut created = 0usize;
    for f in &frames {
        let Ok(p) = net::parse(f) else { continue };
        if let Track::New(new) = tracker.process(f, &p, now()) {
            if tracker
                .commit_new(&new, Admission::default(), now())
                .is_ok()
            {
                created += 1;
            }
        }
    }
    println!(
        "{n} frames, {created} flows created, table capacity {capacity}, {} × {:.1} s per figure",
        a.reps, a.seconds
    );

    let reps = |which: char| {
        if a.only.is_none_or(|o| o == which) {
            a.reps
        } else {
            0
        }
    };

    let len = Length {
        seconds: a.seconds,
        passes: a.passes,
    };

    // (a) Parse alone, burst by burst, into the burst's array as the worker does.
    let mut parsed = [net::Parsed::EMPTY; BURST];
    let parse_ns = measure(n, len, reps('a'), || {
        for burst in frames.chunks(BURST) {
            for (i, f) in burst.iter().enumerate() {
                let _ = black_box(net::parse_into(black_box(f), &mut parsed[i]));
            }
            black_box(&mut parsed);
        }
    });

    // (b) Parse + Tracker::process, one packet at a time (pass 1 of the worker before batching).
    let mut known = 0u64;
    let per_packet_ns = measure(n, len, reps('b'), || {
        let t = now();
        for burst in frames.chunks(BURST) {
            for f in burst {
                let Ok(p) = net::parse(f) else { continue };
                if let Track::Known { .. } = black_box(tracker.process(f, &p, t)) {
                    known += 1;
                }
            }
        }
    });

    // (c) The worker's pass 1: parse and prepare the burst, probe it, then finish packet by packet.
    let mut ok = [false; BURST];
    let mut prepared = [Prepared::EMPTY; BURST];
    let burst_ns = measure(n, len, reps('c'), || {
        let t = now();
        for burst in frames.chunks(BURST) {
            for (i, f) in burst.iter().enumerate() {
                // As the worker: the common frame keyed straight from its fields, anything else parsed.
                ok[i] = true;
                if let Some(c) = net::parse_common(f) {
                    tracker.prepare_common(f, &c, &mut prepared[i]);
                    continue;
                }
                ok[i] = net::parse_into(f, &mut parsed[i]).is_ok();
                if ok[i] {
                    tracker.prepare_into(f, &parsed[i], &mut prepared[i]);
                } else {
                    prepared[i] = Prepared::EMPTY;
                }
            }
            for p in &prepared[..burst.len()] {
                tracker.prefetch_index(p);
            }
            for p in &mut prepared[..burst.len()] {
                tracker.probe(p);
            }
            for i in 0..burst.len() {
                if !ok[i] {
                    continue;
                }
                if let Track::Known { .. } = black_box(tracker.finish(&prepared[i], t)) {
                    known += 1;
                }
            }
            // The worker advances expiry once per poll-loop iteration (default budget).
            tracker.expire(t, EXPIRY_BUDGET, |_, _| {});
        }
    });
    black_box(known);

    println!("(a) parse alone:                     {parse_ns}");
    println!("(b) parse + Tracker::process:        {per_packet_ns}");
    println!("(c) parse + burst pipeline + expiry: {burst_ns}");
}
