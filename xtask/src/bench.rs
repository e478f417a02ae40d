//! Forwarding throughput: Bulkhead against `dpdk-testpmd` io forwarding, on the same input and sink, in the
//! same run, alternating, so the ratio means something on a noisy machine.
//!
//! Input: a pcap of 64-byte TCP packets over 4096 flows, replayed from memory by `net_pcap`
//! (`infinite_rx=1`); sink: `net_null` with `no-rx=1` (a plain net_null would also *generate* packets and
//! testpmd would forward both ways). One forwarding core each (lcore 1), the main thread on lcore 0. Rates are
//! per-second samples after a warm-up, median per run; the figure is the median over runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{build_release, root, run, show, target_dir, Result};

/// The benchmark suites.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// Stateful forwarding of established flows vs dpdk-testpmd io forwarding.
    Forwarding,
    /// ClassBench classification vs dpdk-test-acl with its best algorithm on this CPU.
    Classify,
    /// Compile + persist + swap of a 10k-rule policy in a running dataplane, and its peak memory.
    Swap,
}

#[derive(clap::Args)]
pub struct Args {
    /// Suites to run (default: all).
    #[arg(value_enum)]
    suites: Vec<Suite>,
    /// Runs of each program (alternating).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Flows in the generated input.
    #[arg(long, default_value_t = 4096)]
    flows: u32,
    /// Frame size on the wire, FCS included (RFC 2544).
    #[arg(long, default_value_t = 64)]
    frame_size: u32,
    /// Back DPDK memory with 2 MiB hugepages (reserved and mounted if needed) instead of --no-huge.
    #[arg(long)]
    hugepages: bool,
}

/// Samples taken before this many seconds are warm-up and ignored.
const WARMUP_SAMPLES: usize = 2;

pub fn bench(args: &Args) -> Result {
    let all = args.suites.is_empty();
    if all || args.suites.contains(&Suite::Forwarding) {
        forwarding(args)?;
    }
    if all || args.suites.contains(&Suite::Classify) {
        classify(args)?;
    }
    if all || args.suites.contains(&Suite::Swap) {
        swap(args)?;
    }
    Ok(())
}

fn forwarding(args: &Args) -> Result {
    if args.seconds <= WARMUP_SAMPLES as u64 + 1 {
        return Err(format!("--seconds must be above {}", WARMUP_SAMPLES + 1).into());
    }
    let bin = build_release(&["bulkhead-dataplane", "bulkhead-pktgen"])?;
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let pcap = dir.join(format!("tcp-{}flows-{}B.pcap", args.flows, args.frame_size));
    run(Command::new(bin.join("bulkhead-pktgen"))
        .args(["flows", "--proto", "tcp", "--seed", "1"])
        .args([
            "--flows",
            &args.flows.to_string(),
            "--frame-size",
            &args.frame_size.to_string(),
            "--out",
        ])
        .arg(&pcap))?;
    if args.hugepages {
        reserve_hugepages()?;
    }
    let memory = if args.hugepages {
        vec!["-m", "1024"]
    } else {
        vec!["--no-huge", "-m", "1024"]
    };

    let mut testpmd = Vec::new();
    let mut bulkhead = Vec::new();
    for i in 1..=args.runs {
        eprintln!("xtask: run {i}/{}: dpdk-testpmd", args.runs);
        testpmd.push(median(&run_testpmd(&pcap, &memory, args.seconds)?));
        eprintln!("xtask: run {i}/{}: bulkhead-dataplane", args.runs);
        bulkhead.push(median(&run_bulkhead(
            &bin,
            &dir,
            &pcap,
            args.hugepages,
            args.seconds,
        )?));
    }

    let (t, b) = (median(&testpmd), median(&bulkhead));
    let spread = |v: &[f64]| {
        (
            v.iter().cloned().fold(f64::INFINITY, f64::min),
            v.iter().cloned().fold(0.0, f64::max),
        )
    };
    println!("\nForwarding, {} B frames, {} TCP flows, net_pcap(infinite_rx) -> net_null(no-rx), 1 worker core", args.frame_size, args.flows);
    println!("| run | dpdk-testpmd io (Mpps) | bulkhead-dataplane (Mpps) | ratio |");
    println!("|---|---|---|---|");
    for (i, (t, b)) in testpmd.iter().zip(&bulkhead).enumerate() {
        println!(
            "| {} | {:.2} | {:.2} | {:.3} |",
            i + 1,
            t / 1e6,
            b / 1e6,
            b / t
        );
    }
    let (tmin, tmax) = spread(&testpmd);
    let (bmin, bmax) = spread(&bulkhead);
    println!(
        "| median | {:.2} ({:.2}–{:.2}) | {:.2} ({:.2}–{:.2}) | **{:.3}** |",
        t / 1e6,
        tmin / 1e6,
        tmax / 1e6,
        b / 1e6,
        bmin / 1e6,
        bmax / 1e6,
        b / t
    );

    let results = root().join("bench-results");
    std::fs::create_dir_all(&results)?;
    let out = results.join("forwarding.json");
    let report = json!({
        "benchmark": "forwarding",
        "frame_size": args.frame_size, "flows": args.flows, "seconds": args.seconds, "hugepages": args.hugepages,
        "testpmd_pps": testpmd, "bulkhead_pps": bulkhead,
        "testpmd_median_pps": t, "bulkhead_median_pps": b, "ratio": b / t,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("\nwritten: {}", out.display());
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn vdevs(pcap: &Path) -> [String; 2] {
    [
        format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", pcap.display()),
        "--vdev=net_null0,no-rx=1".into(),
    ]
}

/// Sends SIGINT after `seconds` and waits for the process.
fn stop_after(child: &mut Child, started: Instant, seconds: u64) -> Result {
    while started.elapsed() < Duration::from_secs(seconds) {
        if let Some(status) = child.try_wait()? {
            return Err(format!("exited early ({status})").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    child.wait()?;
    Ok(())
}

/// testpmd with `--stats-period 1` prints, per port and second, `Tx-pps: N`; the sum over ports is what it
/// forwarded (the pcap port transmits nothing: the sink receives nothing).
fn run_testpmd(pcap: &Path, memory: &[&str], seconds: u64) -> Result<Vec<f64>> {
    let mut cmd = Command::new("dpdk-testpmd");
    cmd.args([
        "-l",
        "0,1",
        "--no-pci",
        &format!("--file-prefix=bench-testpmd-{}", std::process::id()),
        "--log-level=warning",
    ])
    .args(memory)
    .args(vdevs(pcap))
    .args([
        "--",
        "--forward-mode=io",
        "--auto-start",
        "--stats-period=1",
        "--nb-cores=1",
        "--burst=32",
    ]);
    eprintln!("$ {}", show(&cmd));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut per_period = Vec::new();
        let mut current = 0.0;
        let mut ports_seen = 0;
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if line.contains("NIC statistics for port") {
                ports_seen += 1;
            }
            if let Some(rest) = line.trim().strip_prefix("Tx-pps:") {
                current += rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<f64>().ok())
                    .unwrap_or(0.0);
                if ports_seen == 2 {
                    per_period.push(current);
                    current = 0.0;
                    ports_seen = 0;
                }
            }
        }
        per_period
    });
    stop_after(&mut child, Instant::now(), seconds)?;
    let samples = reader.join().map_err(|_| "testpmd reader panicked")?;
    warm(samples, "dpdk-testpmd")
}

fn run_bulkhead(
    bin: &Path,
    dir: &Path,
    pcap: &Path,
    hugepages: bool,
    seconds: u64,
) -> Result<Vec<f64>> {
    let config = dir.join("bench.toml");
    // A fresh state directory each run, so the bootstrap policy is the one enforced.
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let policy = testbed::policy_file("open.json");
    let socket = dir.join("control.sock");
    let [pcap_dev, null_dev] = vdevs(pcap).map(|v| v.trim_start_matches("--vdev=").to_string());
    // Unique per run: two benchmarks on one machine must not share DPDK runtime files.
    let pid = std::process::id();
    std::fs::write(
        &config,
        format!(
            r#"# Written by `cargo xtask bench`.
[eal]
file_prefix = "bench-bulkhead-{pid}"
main_core = 0
hugepages = {hugepages}
memory_mb = 1024
log_level = "warning"

[workers]
cores = [1]
burst = 32

[mempool]
mbufs = 32767
cache = 256

[[ports]]
name = "pcap"
device = "{pcap_dev}"

[[ports]]
name = "sink"
device = "{null_dev}"

[[links]]
ports = ["pcap", "sink"]

[stats]
interval_ms = 1000

# Every flow allowed; loose TCP so the replayed mid-stream segments are picked up as established flows.
[policy]
state_dir = {state:?}
control_socket = {socket:?}
bootstrap = {policy:?}

[conntrack]
flows_per_worker = 65536
"#
        ),
    )?;
    let mut cmd = Command::new(bin.join("bulkhead-dataplane"));
    cmd.arg("--config").arg(&config);
    eprintln!("$ {}", show(&cmd));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut samples = Vec::new();
        let mut last: Option<(f64, u64)> = None;
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["event"] != "stats" {
                continue;
            }
            let (Some(t), Some(tx)) = (v["uptime_s"].as_f64(), v["totals"]["tx_packets"].as_u64())
            else {
                continue;
            };
            if let Some((t0, tx0)) = last {
                samples.push((tx - tx0) as f64 / (t - t0));
            }
            last = Some((t, tx));
        }
        samples
    });
    stop_after(&mut child, Instant::now(), seconds)?;
    let samples = reader.join().map_err(|_| "bulkhead reader panicked")?;
    warm(samples, "bulkhead-dataplane")
}

fn warm(samples: Vec<f64>, who: &str) -> Result<Vec<f64>> {
    let kept: Vec<f64> = samples.into_iter().skip(WARMUP_SAMPLES).collect();
    if kept.is_empty() {
        return Err(format!("{who} reported no throughput samples").into());
    }
    Ok(kept)
}

/// 1024 × 2 MiB pages, mounted at /dev/hugepages.
fn reserve_hugepages() -> Result {
    let nr = PathBuf::from("/proc/sys/vm/nr_hugepages");
    let have: u64 = std::fs::read_to_string(&nr)?.trim().parse().unwrap_or(0);
    if have < 1024 {
        std::fs::write(&nr, "1024")?;
    }
    let mounted = std::fs::read_to_string("/proc/mounts")?
        .lines()
        .any(|l| l.contains(" hugetlbfs "));
    if !mounted {
        std::fs::create_dir_all("/dev/hugepages")?;
        run(Command::new("mount").args(["-t", "hugetlbfs", "nodev", "/dev/hugepages"]))?;
    }
    Ok(())
}

/// ClassBench sets with a trace (acl1_10k comes without one).
const CLASSBENCH_SETS: [&str; 5] = ["acl1_1k", "fw1_1k", "ipc1_1k", "ipc1_10k", "fw1_10k"];
/// Lookups per timed run.
const LOOKUPS_PER_RUN: usize = 4_000_000;

/// The fastest rte_acl algorithm this CPU runs.
fn best_acl_algorithm() -> &'static str {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpu
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if has("avx512f") && has("avx512bw") {
        "avx512x32"
    } else if has("avx2") {
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

fn run_capture(cmd: &mut Command) -> Result<String> {
    eprintln!("$ {}", show(cmd));
    let out = cmd.output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            show(cmd),
            out.status,
            text.lines().last().unwrap_or("")
        )
        .into());
    }
    Ok(text)
}

fn classify(args: &Args) -> Result {
    run(crate::util::cargo().args([
        "build",
        "--release",
        "-p",
        "bulkhead-dataplane",
        "--example",
        "classify",
    ]))?;
    let example = target_dir().join("release/examples/classify");
    let data = std::env::var_os("BULKHEAD_CLASSBENCH")
        .map_or_else(|| root().join("../shared/data/classbench"), PathBuf::from);
    let alg = best_acl_algorithm();
    let mut rows = Vec::new();
    println!(
        "\nClassification alone, ClassBench, one core (lcore 1), algorithm {alg}, bursts of 256"
    );
    println!("| set | rules | dpdk-test-acl (Mpps) | bulkhead dpdk::acl (Mpps) | ratio |");
    println!("|---|---|---|---|---|");
    for set in CLASSBENCH_SETS {
        let (rules, trace) = (data.join(set), data.join(format!("{set}_trace")));
        if !rules.exists() || !trace.exists() {
            eprintln!("xtask: {set}: not found under {}, skipped", data.display());
            continue;
        }
        let n_rules = std::fs::read_to_string(&rules)?
            .lines()
            .filter(|l| l.starts_with('@'))
            .count();
        let n = std::fs::read_to_string(&trace)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
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
    Ok(())
}

/// A Bulkhead policy made from a ClassBench rule set: each rule becomes a rule from its source prefix to its
/// destination prefix on a service with its protocol and port ranges. Rules with a wildcard protocol but port
/// constraints cannot be written in the policy model (ports belong to TCP or UDP), so they keep their prefixes
/// and match any protocol and port: the rule count stays that of the set.
fn classbench_policy(rules: &[bulkhead_pktgen::classbench::Rule]) -> serde_json::Value {
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

fn swap(args: &Args) -> Result {
    let data = std::env::var_os("BULKHEAD_CLASSBENCH")
        .map_or_else(|| root().join("../shared/data/classbench"), PathBuf::from);
    let text =
        std::fs::read_to_string(data.join("acl1_10k")).map_err(|e| format!("acl1_10k: {e}"))?;
    let rules = bulkhead_pktgen::classbench::parse_rules(&text)?;
    let doc = classbench_policy(&rules);
    let bin = build_release(&["bulkhead-dataplane"])?;
    let dir = target_dir().join("bench-swap");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("swap.toml");
    let socket = dir.join("control.sock");
    // Unique per run: two benchmarks on one machine must not share DPDK runtime files.
    let pid = std::process::id();
    std::fs::write(
        &config,
        format!(
            r#"# Written by `cargo xtask bench swap`: two idle ports, no policy at start.
[eal]
file_prefix = "bench-swap-{pid}"
hugepages = false
memory_mb = 2048
log_level = "warning"
[workers]
cores = [1]
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
            socket = socket.display().to_string(),
        ),
    )?;
    let mut cmd = Command::new(bin.join("bulkhead-dataplane"));
    cmd.arg("--config").arg(&config);
    eprintln!("$ {}", show(&cmd));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
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
    let mut ask = |req: serde_json::Value| -> Result<serde_json::Value> {
        use std::io::Write;
        let mut line = serde_json::to_vec(&req)?;
        line.push(b'\n');
        (&stream).write_all(&line)?;
        let mut reply = String::new();
        reader.read_line(&mut reply)?;
        let v: serde_json::Value = serde_json::from_str(&reply)?;
        if v["ok"] != true {
            return Err(format!("load_policy: {}", v["error"]).into());
        }
        Ok(v["result"].clone())
    };
    let rss_before = vm_kib(pid, "VmRSS:");
    for i in 0..args.runs.max(1) {
        let t0 = Instant::now();
        let r = ask(json!({"v": 1, "op": "load_policy", "policy": doc}))?;
        let round_trip = t0.elapsed().as_secs_f64() * 1e3;
        eprintln!("xtask: swap {}: {r}", i + 1);
        results.push((r, round_trip));
    }
    let hwm = vm_kib(pid, "VmHWM:");
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    child.wait()?;
    let med = |key: &str| {
        median(
            &results
                .iter()
                .filter_map(|(r, _)| r[key].as_f64())
                .collect::<Vec<_>>(),
        )
    };
    let rt = median(&results.iter().map(|(_, t)| *t).collect::<Vec<_>>());
    let flat = &results[0].0["flat_rules"];
    println!(
        "\nPolicy swap, ClassBench acl1_10k as a Bulkhead policy ({} rules), median of {} swaps",
        rules.len(),
        results.len()
    );
    println!("| compiled rules (IPv4 / IPv6) | compile + rte_acl build | persist (fsync) | grace period | request round trip | dataplane RSS before → peak |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} / {} | {:.0} ms | {:.1} ms | {:.0} µs | {:.0} ms | {} MiB → {} MiB |",
        flat["ipv4"],
        flat["ipv6"],
        med("compile_ms"),
        med("persist_ms"),
        med("grace_period_us"),
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
            "compile_ms": med("compile_ms"), "persist_ms": med("persist_ms"), "grace_period_us": med("grace_period_us"),
            "round_trip_ms": rt, "rss_before_kib": rss_before, "peak_rss_kib": hwm,
        }))?,
    )?;
    println!("\nwritten: {}", file.display());
    Ok(())
}
