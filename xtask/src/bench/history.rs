//! The flow history: control's `history_bench` example (release build, pinned to one core with `taskset`)
//! ingests 30 days of generated flow events — about a million conversation-buckets — then times the 30-day
//! segment map, the unused-rules report and a conversations query, and weighs the database.

use std::process::Command;

use serde_json::Value;

use super::{run_capture, Row, Stat, Suite};
use crate::util::Result;

pub fn history() -> Result<Vec<Row>> {
    run_capture(crate::util::cargo().args([
        "build",
        "--release",
        "-p",
        "bulkhead-control",
        "--example",
        "history_bench",
    ]))?;
    let bin = crate::util::target_dir().join("release/examples/history_bench");
    // One core: the figures are what one core of the gateway's management side does.
    let out = run_capture(Command::new("taskset").arg("-c").arg("1").arg(&bin))?;
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or("the history benchmark printed no figures")?;
    println!("\n{line}");
    let v: Value = serde_json::from_str(line)?;
    let num = |k: &str| -> Result<f64> {
        v[k].as_f64()
            .ok_or_else(|| format!("no `{k}` in: {line}").into())
    };
    let pair = |k: &str| -> Result<[f64; 2]> {
        match (v[k][0].as_f64(), v[k][1].as_f64()) {
            (Some(a), Some(b)) => Ok([a, b]),
            _ => Err(format!("no `{k}` pair in: {line}").into()),
        }
    };
    let rows = num("conversation_buckets")?;
    let row = |what: String, unit: &'static str, scale: f64, value: f64, target| Row {
        suite: Suite::History,
        what,
        unit,
        scale,
        bulkhead: Stat::of(vec![value]),
        baseline: None,
        target,
    };
    let mut out = vec![
        row(
            format!("ingestion of {} flow events (one core)", num("events")?),
            "kevents/s",
            1e3,
            num("events_per_s")?,
            Some("≥ 100"),
        ),
        row(
            format!("bytes on disk per conversation-bucket ({rows} rows)"),
            "B",
            1.0,
            num("bytes_per_conversation_bucket")?,
            None,
        ),
    ];
    for (key, what, target) in [
        ("map_ms", "30-day segment map", "≤ 1000"),
        ("unused_rules_ms", "30-day unused-rules report", "≤ 1000"),
        (
            "conversations_ms",
            "30-day conversations of one /24",
            "≤ 1000",
        ),
        (
            "what_if_ms",
            "30-day historical impact of a draft (what-if)",
            "≤ 1000",
        ),
        (
            "suggestion_ms",
            "30-day rule suggestion (segments grouping)",
            "≤ 5000",
        ),
    ] {
        let [p50, p95] = pair(key)?;
        out.push(row(
            format!("{what} over {rows} conversation-buckets, p50"),
            "ms",
            1.0,
            p50,
            Some(target),
        ));
        out.push(row(format!("{what}, p95"), "ms", 1.0, p95, Some(target)));
    }
    Ok(out)
}
