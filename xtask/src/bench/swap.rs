//! Policy compile + swap time for a 10k-rule policy, and memory per tracked flow.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Instant;

use protocol::{LoadPolicyResult, Request};
use serde_json::json;

use super::{median, spawn_reporting, Args, Row, Stat, Suite};
use crate::util::{build_release, root, target_dir, Result};

/// A Bulkhead policy made from a ClassBench rule set: each rule becomes a rule from its source prefix to its
/// destination prefix on a service with its protocol and port ranges. Rules with a wildcard protocol but port
/// constraints cannot be written in the policy model (ports belong to TCP or UDP), so they keep their prefixes
/// and match any protocol and port: the rule count stays that of the set.
pub fn classbench_policy(rules: &[classbench::Rule]) -> serde_json::Value {
    use std::collections::BTreeMap;
    let net = |(a, l): (u32, u32)| format!("{}/{l}", std::net::Ipv4Addr::from(a));
    let range = |(lo, hi): (u16, u16)| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    };
    let mut services: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let proto = if r.proto.1 == 0 {
            None
        } else {
            Some(r.proto.0)
        };
        let svc = match proto {
            Some(p @ (6 | 17)) => {
                let mut s = json!({"protocol": if p == 6 { "tcp" } else { "udp" }});
                if r.dport != (0, 65535) {
                    s["ports"] = json!([range(r.dport)]);
                }
                if r.sport != (0, 65535) {
                    s["source_ports"] = json!([range(r.sport)]);
                }
                s
            }
            Some(p) => json!({"protocol": p}),
            None => json!({"protocol": "any"}),
        };
        let key = svc.to_string();
        let n = services.len();
        let name = services.entry(key).or_insert_with(|| {
            let mut s = svc.clone();
            s["name"] = json!(format!("svc{n}"));
            s
        })["name"]
            .clone();
        out.push(json!({
            "id": i + 1, "name": format!("cb{}", i + 1),
            "from": {"prefix": net(r.src)}, "to": {"prefix": net(r.dst)},
            "service": name, "action": "allow",
        }));
    }
    json!({"format": "bulkhead.policy/v1", "segments": [], "services": services.into_values().collect::<Vec<_>>(),
           "rules": out, "settings": {"default_action": "deny"}})
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// A dataplane config for `cargo xtask bench <suite>`: two idle `net_null` ports, no policy at start, its state
/// and control socket (`control.sock`) in `dir`; `workers_extra` goes in `[workers]`.
pub fn idle_ports_config(suite: &str, dir: &std::path::Path, workers_extra: &str) -> String {
    // Unique per run and directory: two benchmarks on one machine must not share DPDK runtime files.
    let prefix = format!(
        "bench-{suite}-{}-{}",
        std::process::id(),
        dir.file_name().unwrap_or_default().to_string_lossy()
    );
    format!(
        r#"# Written by `cargo xtask bench {suite}`: two idle ports, no policy at start.
[eal]
file_prefix = "{prefix}"
hugepages = false
memory_mb = 2048
log_level = "warning"
[workers]
cores = [1]
{workers_extra}
[mempool]
mbufs = 8191
cache = 64
[[ports]]
name = "a"
device = "net_null0,no-rx=1"
[[ports]]
name = "b"
device = "net_null1,no-rx=1"
[[links]]
ports = ["a", "b"]
[policy]
state_dir = {state:?}
control_socket = {socket:?}
max_rules = 16384
"#,
        state = dir.join("state").display().to_string(),
        socket = dir.join("control.sock").display().to_string(),
    )
}

pub fn swap(args: &Args) -> Result<Vec<Row>> {
    let rules = classbench::read_rules(&classbench::rules_path(&classbench::dir(), "acl1_10k"))?;
    let doc = classbench_policy(&rules);
    let bin = build_release(&["bulkhead-dataplane"])?;
    let dir = target_dir().join("bench-swap");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("swap.toml");
    let socket = dir.join("control.sock");
    std::fs::write(&config, idle_ports_config("swap", &dir, ""))?;
    let (mut child, stdout) = spawn_reporting(
        Command::new(bin.join("bulkhead-dataplane"))
            .arg("--config")
            .arg(&config),
    )?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .by_ref()
        .map_while(|l| l.ok())
        .any(|l| l.contains("\"event\":\"ready\""));
    if !ready {
        let _ = child.kill();
        return Err("the dataplane did not start".into());
    }
    let pid = child.id();
    let mut results = Vec::new();
    let stream = std::os::unix::net::UnixStream::connect(&socket)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    // Encoded once, before the clock starts: the round trip is the dataplane's work (reading the line, decoding
    // and validating the document, compile, rte_acl build, persist, publish), not the client's encoding.
    let mut line = protocol::encode_request(
        None,
        &Request::LoadPolicy {
            policy: doc,
            version: None,
        },
    );
    line.push('\n');
    let mut ask = || -> Result<LoadPolicyResult> {
        use std::io::Write;
        (&stream).write_all(line.as_bytes())?;
        let mut reply = String::new();
        reader.read_line(&mut reply)?;
        match protocol::decode_reply(&reply)? {
            Ok(result) => Ok(result),
            Err(refusal) => {
                Err(format!("load_policy: {} ({})", refusal.message, refusal.code).into())
            }
        }
    };
    let rss_before = vm_kib(pid, "VmRSS:");
    for i in 0..args.runs.max(1) {
        let t0 = Instant::now();
        let r = ask()?;
        let round_trip = t0.elapsed().as_secs_f64() * 1e3;
        eprintln!("xtask: swap {}: {}", i + 1, serde_json::to_value(&r)?);
        results.push((r, round_trip));
    }
    let hwm = vm_kib(pid, "VmHWM:");
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    child.wait()?;
    let med = |key: fn(&LoadPolicyResult) -> f64| {
        median(&results.iter().map(|(r, _)| key(r)).collect::<Vec<_>>())
    };
    let rt = median(&results.iter().map(|(_, t)| *t).collect::<Vec<_>>());
    let flat = results[0].0.flat_rules;
    println!(
        "\nPolicy swap, ClassBench acl1_10k as a Bulkhead policy ({} rules), median of {} swaps",
        rules.len(),
        results.len()
    );
    println!("| compiled rules (IPv4 / IPv6) | compile + rte_acl build | persist (fsync) | grace period | request round trip | dataplane RSS before → peak |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} / {} | {:.0} ms | {:.1} ms | {:.0} µs | {:.0} ms | {} MiB → {} MiB |",
        flat.ipv4,
        flat.ipv6,
        med(|r| r.compile_ms),
        med(|r| r.persist_ms),
        med(|r| r.grace_period_us),
        rt,
        rss_before / 1024,
        hwm / 1024
    );
    let out = root().join("bench-results");
    std::fs::create_dir_all(&out)?;
    let file = out.join("swap.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!({
            "benchmark": "swap", "rules": rules.len(), "flat_rules": flat,
            "compile_ms": med(|r| r.compile_ms), "persist_ms": med(|r| r.persist_ms),
            "grace_period_us": med(|r| r.grace_period_us),
            "round_trip_ms": rt, "rss_before_kib": rss_before, "peak_rss_kib": hwm,
        }))?,
    )?;
    println!("\nwritten: {}", file.display());
    let stat =
        |key: fn(&LoadPolicyResult) -> f64| Stat::of(results.iter().map(|(r, _)| key(r)).collect());
    let row = |what: String, unit: &'static str, bulkhead: Stat| Row {
        suite: Suite::Swap,
        what,
        unit,
        scale: 1.0,
        bulkhead,
        baseline: None,
        target: None,
    };
    Ok(vec![
        row(
            format!(
                "acl1_10k policy ({} rules): compile + rte_acl build",
                rules.len()
            ),
            "ms",
            stat(|r| r.compile_ms),
        ),
        row(
            "persist (temp file, fsync, rename, dir fsync)".into(),
            "ms",
            stat(|r| r.persist_ms),
        ),
        row(
            "RCU grace period (workers moved on)".into(),
            "µs",
            stat(|r| r.grace_period_us),
        ),
        Row {
            target: Some("≤ 500 ms"),
            ..row(
                "load_policy request round trip (commit to enforced)".into(),
                "ms",
                Stat::of(results.iter().map(|(_, t)| *t).collect()),
            )
        },
        row(
            format!(
                "dataplane peak RSS during builds (before: {} MiB)",
                rss_before / 1024
            ),
            "MiB",
            Stat::of(vec![hwm as f64 / 1024.0]),
        ),
    ])
}

/// Memory per tracked flow at one million flows: the connection-table test that fills a table of 10⁶ flows
/// and reads both the allocation sizes and the process's resident set, run in release.
pub fn memory() -> Result<Vec<Row>> {
    let out = super::run_capture(crate::util::cargo().args([
        "test",
        "--release",
        "-p",
        "bulkhead-dataplane",
        "--lib",
        "conntrack::tests::mem::bytes_per_flow_at_one_million",
        "--",
        "--exact",
        "--nocapture",
    ]))?;
    let line = out
        .lines()
        .find(|l| l.starts_with("conntrack memory at"))
        .ok_or("the memory test printed no figure")?;
    println!("\n{line}");
    let figure = |suffix: &str| -> Result<f64> {
        let before = line
            .split(suffix)
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok());
        before.ok_or_else(|| format!("no `{suffix}` figure in: {line}").into())
    };
    let computed = figure(" B/flow computed")?;
    let measured = figure(" B/flow measured")?;
    Ok(vec![
        Row {
            suite: Suite::Memory,
            what: "memory per tracked flow at 10⁶ flows (entry + index + sweep seconds, allocated)"
                .into(),
            unit: "B",
            scale: 1.0,
            bulkhead: Stat::of(vec![computed]),
            baseline: None,
            target: Some("≤ 128 B"),
        },
        Row {
            suite: Suite::Memory,
            what: "the same, measured as resident-set growth".into(),
            unit: "B",
            scale: 1.0,
            bulkhead: Stat::of(vec![measured]),
            baseline: None,
            target: Some("≤ 128 B"),
        },
    ])
}
