//! What the worker idle back-off costs and saves: ping round trips across a test bed (p50, p99) and the
//! dataplane's CPU use while idle, for several `[workers] idle_sleep_max_us` values. Needs root (the bed's
//! namespaces) and a built dataplane:
//!
//! ```text
//! cargo build --release -p bulkhead-dataplane
//! cargo run --release -p bulkhead-dataplane --example idle_latency -- target/release/bulkhead-dataplane 0 100 1000
//! ```

use std::time::{Duration, Instant};

use testbed::{addr, Options, TestBed};

/// Pings sent per setting, and their interval: long enough apart for the worker to fall asleep in between.
const PINGS: u32 = 300;
const INTERVAL: &str = "0.02";

fn main() {
    let mut args = std::env::args().skip(1);
    let binary = args
        .next()
        .unwrap_or_else(|| "target/release/bulkhead-dataplane".into());
    let settings: Vec<u32> = args
        .map(|a| a.parse().expect("idle_sleep_max_us values"))
        .collect();
    let settings = if settings.is_empty() {
        vec![0, 100, 1000]
    } else {
        settings
    };
    println!("| idle_sleep_max_us | ping RTT p50 | p99 | max | dataplane CPU while idle |");
    println!("|---:|---:|---:|---:|---:|");
    for max_us in settings {
        let mut opts = Options::new(&binary);
        opts.policy = Some(testbed::policy_file("open.json"));
        opts.idle_sleep_max_us = max_us;
        let bed = TestBed::start(&opts).unwrap_or_else(|e| panic!("test bed: {e}"));
        let cpu = idle_cpu(&bed);
        let mut rtts = ping_rtts(&bed);
        rtts.sort_by(f64::total_cmp);
        let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q).round() as usize];
        println!(
            "| {max_us} | {:.3} ms | {:.3} ms | {:.3} ms | {:.0} % of a core |",
            at(0.5),
            at(0.99),
            rtts[rtts.len() - 1],
            cpu * 100.0
        );
    }
}

/// The dataplane's CPU time over two idle seconds, as a share of one core.
fn idle_cpu(bed: &TestBed) -> f64 {
    let pid = bed.dataplane_pid().expect("running");
    let ticks = || -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of the whole line, 12 and 13 after the name.
        f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()
    };
    // Clock ticks per second (USER_HZ), 100 on Linux.
    const HZ: f64 = 100.0;
    std::thread::sleep(Duration::from_secs(1));
    let (t0, c0) = (Instant::now(), ticks());
    std::thread::sleep(Duration::from_secs(2));
    (ticks() - c0) / HZ / t0.elapsed().as_secs_f64()
}

/// Round-trip times in ms of `PINGS` pings from A to B.
fn ping_rtts(bed: &TestBed) -> Vec<f64> {
    let count = PINGS.to_string();
    let out = bed
        .a
        .run(&["ping", "-c", &count, "-i", INTERVAL, "-W", "1", addr::B4])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rtts: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!rtts.is_empty(), "no ping answered: {text}");
    rtts
}
