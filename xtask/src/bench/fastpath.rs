//! The established-flow path at table sizes a pcap replay cannot hold: the `fastpath` example (parse and the
//! worker's pipelined connection tracking, no I/O) at 4096, 65 536 and 1 000 000 established flows, sizes
//! alternated run by run. Each larger size is reported beside the 4096-flow rate of the same runs, so the
//! row's ratio is how much of the in-cache rate survives a table that does not fit in the caches.

use std::process::Command;

use super::{median, run_capture, Args, Row, Stat, Suite};
use crate::util::{cargo, run, target_dir, Result};

/// Table sizes measured; the first is the reference.
const SIZES: [u32; 3] = [4096, 65_536, 1_000_000];

/// Rows for the stateful suite: the pipeline's rate at each size, the larger ones beside the first.
pub fn rows(args: &Args) -> Result<Vec<Row>> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "bulkhead-dataplane",
        "--example",
        "fastpath",
    ]))?;
    let bin = target_dir().join("release/examples/fastpath");
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); SIZES.len()];
    for i in 1..=args.runs {
        for (k, flows) in SIZES.iter().enumerate() {
            eprintln!(
                "xtask: fast path run {i}/{}: {flows} established flows",
                args.runs
            );
            let out = run_capture(Command::new(&bin).args([
                "--flows",
                &flows.to_string(),
                "--only",
                "c",
                "--reps",
                "5",
                "--seconds",
                "1",
            ]))?;
            rates[k].push(1e9 / pipeline_ns(&out)?);
        }
    }
    let reference = Stat::of(rates[0].clone());
    let mut rows = vec![Row {
        suite: Suite::Stateful,
        what: format!(
            "fast path without I/O (fastpath example: parse + pipelined tracking), {} established flows",
            SIZES[0]
        ),
        unit: "Mpps",
        scale: 1e6,
        bulkhead: reference.clone(),
        baseline: None,
        target: None,
    }];
    for (k, flows) in SIZES.iter().enumerate().skip(1) {
        rows.push(Row {
            suite: Suite::Stateful,
            what: format!("the same at {flows} established flows, beside {}", SIZES[0]),
            unit: "Mpps",
            scale: 1e6,
            bulkhead: Stat::of(rates[k].clone()),
            baseline: Some(("fast path at 4096 flows", reference.clone())),
            target: (*flows == 1_000_000).then_some("≥ 0.6"),
        });
    }
    for (k, flows) in SIZES.iter().enumerate() {
        println!(
            "fast path, {flows} flows: {:.1} ns/packet (median of {} runs)",
            1e9 / median(&rates[k]),
            args.runs
        );
    }
    Ok(rows)
}

/// The median ns/packet of the example's pipelined pass, from its `(c) ...: N ns/packet` line.
fn pipeline_ns(out: &str) -> Result<f64> {
    out.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("(c)")?;
            rest.split(':')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| {
            format!("no pipelined figure in the fastpath example's output: {out}").into()
        })
}
