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
//! mid-stream); the timed passes then see only established flows. Reported: nanoseconds of on-CPU time per
//! packet for (a) parse alone, (b) parse + per-packet `Tracker::process`. It measures and prints; it asserts
//! nothing about timings.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bulkhead_dataplane::conntrack::{Admission, Strictness, Timeouts, Track, Tracker};
use bulkhead_pktgen::flows::{FlowSet, FlowsConfig};

const BURST: usize = 32;

struct Args {
    pcap: Option<PathBuf>,
    flows: u32,
    capacity: Option<usize>,
    seconds: f64,
    reps: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: fastpath [--pcap FILE | --flows N] [--capacity SLOTS] [--seconds S per measurement] [--reps R]"
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

/// Runs `pass` (one pass over every frame) until `seconds` elapse, `reps` times; the median ns/packet of
/// on-CPU time.
fn measure(frames: usize, seconds: f64, reps: usize, mut pass: impl FnMut()) -> f64 {
    pass();
    let mut per_packet = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        let cpu0 = cpu_ns(start);
        let mut passes = 0u64;
        while start.elapsed() < Duration::from_secs_f64(seconds) {
            pass();
            passes += 1;
        }
        let ns = cpu_ns(start).saturating_sub(cpu0) as f64;
        per_packet.push(ns / (passes as f64 * frames as f64));
    }
    per_packet.sort_by(f64::total_cmp);
    per_packet[per_packet.len() / 2]
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
        "{n} frames, {created} flows created, table capacity {capacity}, {} × {:.1} s per figure (median)",
        a.reps, a.seconds
    );

    // (a) Parse alone, burst by burst.
    let parse_ns = measure(n, a.seconds, a.reps, || {
        for burst in frames.chunks(BURST) {
            for f in burst {
                let _ = black_box(net::parse(black_box(f)));
            }
        }
    });

    // (b) Parse + Tracker::process, one packet at a time (pass 1 of the worker before batching).
    let mut known = 0u64;
    let per_packet_ns = measure(n, a.seconds, a.reps, || {
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
    black_box(known);

    println!("(a) parse alone:                 {parse_ns:6.1} ns/packet");
    println!(
        "(b) parse + Tracker::process:    {per_packet_ns:6.1} ns/packet  ({:.1} Mpps)",
        1e3 / per_packet_ns
    );
}
