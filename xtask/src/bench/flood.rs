//! The flood suite: an established-flow stream and a SYN flood through the same worker, each replayed from its
//! own pcap port (`net_pcap`, `infinite_rx`) to its own sink, so the port counters tell the two apart. The
//! established stream's delivered share should be 100.0 %; the flood's packets are refused by reason (the
//! per-source flood limits, a full table) or forwarded (what the policy and the limits let in).

use std::path::Path;

use bulkhead_pktgen::flood::{self, FloodConfig, SERVER_PORT};
use serde_json::{json, Value};

use super::{dataplane_rates, median, Args, Row, Stat, Suite};
use crate::util::{build_release, root, target_dir, Result};

/// SYNs in the flood pcap: a spoofed random source each, or one of [`HEAVY_SOURCES`].
const SYNS: u32 = 131_072;
const HEAVY_SOURCES: u32 = 64;
const HEAVY_SHARE: f64 = 0.5;
/// Data segments per established connection in its pcap.
const SEGMENTS_PER_FLOW: u32 = 16;
const TABLE: u32 = 65_536;
const HALF_OPEN_PER_SOURCE: u32 = 16;
const NEW_PER_SECOND_PER_SOURCE: u32 = 50;

/// What the flood's packets became.
const FATES: [&str; 4] = [
    "half_open_per_source",
    "new_per_second_per_source",
    "table_full",
    "forwarded",
];

/// Per-second deltas of one run: established stream in and delivered, flood in, and each of [`FATES`].
#[derive(Debug, Clone, Copy)]
struct Sample {
    stream_rx: f64,
    stream_tx: f64,
    flood_rx: f64,
    fates: [f64; 4],
}

pub fn flood(args: &Args) -> Result<Vec<Row>> {
    let bin = build_release(&["bulkhead-dataplane"])?;
    let dir = target_dir().join("bench").join("flood");
    std::fs::create_dir_all(&dir)?;
    let cfg = FloodConfig {
        seed: 17,
        flows: args.flows,
        segments_per_flow: SEGMENTS_PER_FLOW,
        handshakes: false,
        syns: SYNS,
        heavy_sources: HEAVY_SOURCES,
        heavy_share: HEAVY_SHARE,
        frame_len: args.frame_size as usize - 4,
    };
    let (stream, syns) = (dir.join("stream.pcap"), dir.join("syns.pcap"));
    let frames = flood::established(&cfg);
    flood::write_pcap(&stream, frames.iter().map(Vec::as_slice))?;
    let flood_frames = flood::syn_flood(&cfg);
    flood::write_pcap(&syns, flood_frames.iter().map(|(_, f)| f.as_slice()))?;
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        json!({
            "format": "bulkhead.policy/v1", "segments": [],
            "services": [{"name": "web", "protocol": "tcp", "ports": [SERVER_PORT.to_string()]}],
            "rules": [{"id": 1, "name": "web", "from": "any", "to": "any", "service": "web", "action": "allow"}],
            "settings": {"default_action": "deny", "tcp_strictness": "loose", "flood_limits": {
                "half_open_per_source": HALF_OPEN_PER_SOURCE,
                "new_per_second_per_source": NEW_PER_SECOND_PER_SOURCE}}
        })
        .to_string(),
    )?;
    let mbufs = frames.len() as u32 + SYNS + 32_767;
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        eprintln!("xtask: flood run {i}/{}: bulkhead-dataplane", args.runs);
        runs.push(run(args, &bin, &dir, [&stream, &syns], &policy, mbufs)?);
    }
    let share = |f: &dyn Fn(&Sample) -> (f64, f64)| {
        Stat::of(
            runs.iter()
                .map(|r| {
                    let (num, den) = r
                        .iter()
                        .map(f)
                        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
                    100.0 * num / den.max(1.0)
                })
                .collect(),
        )
    };
    let rate = |f: fn(&Sample) -> f64| {
        Stat::of(
            runs.iter()
                .map(|r| median(&r.iter().map(f).collect::<Vec<_>>()))
                .collect(),
        )
    };
    let delivered = share(&|s| (s.stream_tx, s.stream_rx));
    let fates: Vec<Stat> = (0..FATES.len())
        .map(|k| share(&|s| (s.fates[k], s.flood_rx)))
        .collect();
    println!(
        "\nflood: {} established TCP flows beside a SYN flood ({SYNS} SYNs, {:.0} % from {HEAVY_SOURCES} heavy \
         sources, the rest from random ones), {} B frames, one worker; limits: {HALF_OPEN_PER_SOURCE} half-open \
         and {NEW_PER_SECOND_PER_SOURCE} new a second per source; table {TABLE}",
        args.flows,
        HEAVY_SHARE * 100.0,
        args.frame_size
    );
    println!(
        "| established delivered | established rx (Mpps) | flood rx (Mpps) | flood: {} |",
        FATES.join(" | ")
    );
    println!("|---|---|---|{}", "---|".repeat(FATES.len()));
    println!(
        "| {:.3} % | {:.2} | {:.2} | {} |",
        delivered.median,
        rate(|s| s.stream_rx).median / 1e6,
        rate(|s| s.flood_rx).median / 1e6,
        fates
            .iter()
            .map(|f| format!("{:.1} %", f.median))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let results = root().join("bench-results");
    std::fs::create_dir_all(&results)?;
    let out = results.join("flood.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "benchmark": "flood", "frame_size": args.frame_size, "seconds": args.seconds,
            "flows": args.flows, "syns": SYNS, "heavy_sources": HEAVY_SOURCES, "heavy_share": HEAVY_SHARE,
            "table": TABLE, "half_open_per_source": HALF_OPEN_PER_SOURCE,
            "new_per_second_per_source": NEW_PER_SECOND_PER_SOURCE,
            "established_delivered_percent": delivered.json(),
            "flood_percent": FATES
                .iter()
                .zip(&fates)
                .map(|(k, f)| (k.to_string(), f.json()))
                .collect::<serde_json::Map<_, _>>(),
        }))?,
    )?;
    println!("written: {}", out.display());
    let row = |what: String, unit: &'static str, scale: f64, bulkhead: Stat, target| Row {
        suite: Suite::Flood,
        what,
        unit,
        scale,
        bulkhead,
        baseline: None,
        target,
    };
    let mut rows = vec![
        row(
            format!(
                "established stream delivered beside a SYN flood ({} flows, {} B)",
                args.flows, args.frame_size
            ),
            "%",
            1.0,
            delivered,
            Some("100.0 %"),
        ),
        row(
            "established stream rate".into(),
            "Mpps",
            1e6,
            rate(|s| s.stream_tx),
            None,
        ),
        row(
            "SYN flood rate".into(),
            "Mpps",
            1e6,
            rate(|s| s.flood_rx),
            None,
        ),
    ];
    for (fate, stat) in FATES.iter().zip(fates) {
        rows.push(row(format!("flood packets: {fate}"), "%", 1.0, stat, None));
    }
    Ok(rows)
}

/// One run of the dataplane; per-second samples after the warm-up.
fn run(
    args: &Args,
    bin: &Path,
    dir: &Path,
    [stream, syns]: [&Path; 2],
    policy: &Path,
    mbufs: u32,
) -> Result<Vec<Sample>> {
    let config = dir.join("bench.toml");
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let pid = std::process::id();
    std::fs::write(
        &config,
        format!(
            r#"# Written by `cargo xtask bench flood`.
[eal]
file_prefix = "bench-flood-{pid}"
main_core = 0
hugepages = {hugepages}
memory_mb = 2048
log_level = "warning"
{simd}

[workers]
cores = [1]
burst = 32

[mempool]
mbufs = {mbufs}
cache = 256

[[ports]]
name = "stream"
device = "net_pcap0,rx_pcap={stream},infinite_rx=1"

[[ports]]
name = "flood"
device = "net_pcap1,rx_pcap={syns},infinite_rx=1"

[[ports]]
name = "stream_sink"
device = "net_null0,no-rx=1"

[[ports]]
name = "flood_sink"
device = "net_null1,no-rx=1"

[[links]]
ports = ["stream", "stream_sink"]

[[links]]
ports = ["flood", "flood_sink"]

[stats]
interval_ms = 1000

[policy]
state_dir = {state:?}
control_socket = {socket:?}
bootstrap = {policy:?}
max_rules = 1024

[conntrack]
flows_per_worker = {TABLE}
"#,
            hugepages = args.hugepages,
            simd = super::eal_simd_setting(),
            stream = stream.display(),
            syns = syns.display(),
            state = state.display().to_string(),
            socket = dir.join("control.sock").display().to_string(),
            policy = policy.display().to_string(),
        ),
    )?;
    let rates = dataplane_rates(bin, &config, args.seconds, counts)?;
    Ok(rates
        .into_iter()
        .map(|r| Sample {
            stream_rx: r[0],
            stream_tx: r[1],
            flood_rx: r[2],
            fates: [r[3], r[4], r[5], r[6]],
        })
        .collect())
}

/// From a stats report: stream rx, stream delivered, flood rx, then the flood's fates in [`FATES`] order.
fn counts(v: &Value) -> Option<[u64; 7]> {
    if v["event"] != "stats" {
        return None;
    }
    let port = |name: &str, field: &str| {
        v["ports"].as_array()?.iter().find(|p| p["name"] == name)?[field].as_u64()
    };
    let t = &v["totals"];
    Some([
        port("stream", "rx_packets")?,
        port("stream_sink", "tx_packets")?,
        port("flood", "rx_packets")?,
        t["conntrack"]["half_open_per_source"].as_u64()?,
        t["conntrack"]["new_per_second_per_source"].as_u64()?,
        t["drops"]["table_full"].as_u64()?,
        port("flood_sink", "tx_packets")?,
    ])
}
