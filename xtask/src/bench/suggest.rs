//! Rule suggestion and what-if over 1 000 000 conversation-buckets: control's `bench_suggest` example, built in
//! release, generates them and times both engines (see the example for the data).

use serde_json::Value;

use super::{run_capture, Args, Row, Stat, Suite};
use crate::util::{cargo, run, target_dir, Result};

pub fn suggest(args: &Args) -> Result<Vec<Row>> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "bulkhead-control",
        "--example",
        "bench_suggest",
    ]))?;
    let bin = target_dir().join("release/examples/bench_suggest");
    let out = run_capture(
        std::process::Command::new(&bin).args(["--runs", &args.runs.max(1).to_string()]),
    )?;
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or("bench_suggest printed no result")?;
    let v: Value = serde_json::from_str(line)?;
    let times = |key: &str| -> Result<Stat> {
        let runs: Vec<f64> = v[key]
            .as_array()
            .ok_or_else(|| format!("bench_suggest: no {key}"))?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        Ok(Stat::of(runs))
    };
    eprintln!(
        "suggest: {} conversation-buckets ({} distinct): {} rules suggested, {} conversations newly denied",
        v["conversations"], v["distinct"], v["suggested_rules"], v["newly_denied"]
    );
    Ok(vec![
        Row {
            suite: Suite::Suggest,
            what: "rule suggestion over 1M conversation-buckets (segments grouping)".into(),
            unit: "s",
            scale: 1.0,
            bulkhead: times("suggest_s")?,
            baseline: None,
            target: Some("≤ 5 s"),
        },
        Row {
            suite: Suite::Suggest,
            what: "what-if of a draft over 1M conversation-buckets".into(),
            unit: "s",
            scale: 1.0,
            bulkhead: times("what_if_s")?,
            baseline: None,
            target: Some("≤ 1 s"),
        },
    ])
}
