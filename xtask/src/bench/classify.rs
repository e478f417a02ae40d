//! Classification alone: Bulkhead's `dpdk::acl` against `dpdk-test-acl` on the same ClassBench sets.

use std::process::Command;

use serde_json::json;

use super::{median, run_capture, Args, Row, Stat, Suite};
use crate::util::{root, run, target_dir, Result};

/// ClassBench sets with a trace (acl1_10k comes without one).
const CLASSBENCH_SETS: [&str; 5] = ["acl1_1k", "fw1_1k", "ipc1_1k", "ipc1_10k", "fw1_10k"];
/// Lookups per timed run.
const LOOKUPS_PER_RUN: usize = 4_000_000;

/// The fastest rte_acl algorithm this CPU runs.
fn best_acl_algorithm() -> &'static str {
    if super::has_avx512() {
        "avx512x32"
    } else if super::cpu_has("avx2") {
        "avx2"
    } else {
        "sse"
    }
}

/// The `N pkt/sec` figure both programs print.
fn pkt_per_sec(output: &str) -> Option<f64> {
    output
        .lines()
        .filter(|l| l.contains("pkt/sec"))
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let i = words.iter().position(|w| *w == "pkt/sec")?;
            words
                .get(i.checked_sub(1)?)?
                .trim_end_matches(',')
                .parse()
                .ok()
        })
}

pub fn classify(args: &Args) -> Result<Vec<Row>> {
    run(crate::util::cargo().args([
        "build",
        "--release",
        "-p",
        "bulkhead-dataplane",
        "--example",
        "classify",
    ]))?;
    let example = target_dir().join("release/examples/classify");
    let data = classbench::dir();
    let alg = best_acl_algorithm();
    let mut rows = Vec::new();
    let mut summary = Vec::new();
    println!(
        "\nClassification alone, ClassBench, one core (lcore 1), algorithm {alg}, bursts of 256"
    );
    println!("| set | rules | dpdk-test-acl (Mpps) | bulkhead dpdk::acl (Mpps) | ratio |");
    println!("|---|---|---|---|---|");
    for set in CLASSBENCH_SETS {
        let (rules, trace) = (
            classbench::rules_path(&data, set),
            classbench::trace_path(&data, set),
        );
        // Read here first, so that a missing or malformed set fails the suite with the file's name.
        let n_rules = classbench::read_rules(&rules)?.len();
        let n = classbench::read_trace(&trace)?.len();
        let iter = LOOKUPS_PER_RUN.div_ceil(n.max(1)).to_string();
        let (mut theirs, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let out = run_capture(
                Command::new("dpdk-test-acl")
                    .args([
                        "--no-huge",
                        "-m",
                        "2048",
                        "-l",
                        "1",
                        "--no-pci",
                        &format!("--file-prefix=bench-test-acl-{}", std::process::id()),
                    ])
                    .args(["--log-level=warning", "--force-max-simd-bitwidth=512", "--"])
                    .arg(format!("--rulesf={}", rules.display()))
                    .arg(format!("--tracef={}", trace.display()))
                    .arg(format!("--tracenum={n}"))
                    .arg(format!("--iter={iter}"))
                    .arg(format!("--alg={alg}"))
                    .arg("--verbose=1"),
            )?;
            theirs.push(pkt_per_sec(&out).ok_or("dpdk-test-acl printed no pkt/sec")?);
            let out = run_capture(
                Command::new(&example)
                    .arg(&rules)
                    .arg(&trace)
                    .args([&iter, alg, "1"]),
            )?;
            ours.push(pkt_per_sec(&out).ok_or("classify printed no pkt/sec")?);
        }
        let (t, b) = (median(&theirs), median(&ours));
        summary.push(Row {
            suite: Suite::Classify,
            what: format!("ClassBench {set} ({n_rules} rules, {n} lookups), {alg}"),
            unit: "Mpps",
            scale: 1e6,
            bulkhead: Stat::of(ours.clone()),
            baseline: Some(("dpdk-test-acl", Stat::of(theirs.clone()))),
            target: Some("≥ 0.9"),
        });
        println!(
            "| {set} | {n_rules} | {:.2} | {:.2} | {:.3} |",
            t / 1e6,
            b / 1e6,
            b / t
        );
        rows.push(json!({"set": set, "rules": n_rules, "lookups": n, "test_acl_pps": theirs, "bulkhead_pps": ours,
            "test_acl_median_pps": t, "bulkhead_median_pps": b, "ratio": b / t}));
    }
    let results = root().join("bench-results");
    std::fs::create_dir_all(&results)?;
    let out = results.join("classify.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(
            &json!({"benchmark": "classify", "algorithm": alg, "sets": rows}),
        )?,
    )?;
    println!("\nwritten: {}", out.display());
    Ok(summary)
}
