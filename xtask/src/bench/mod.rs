//! `cargo xtask bench`: Bulkhead against the field's baselines, on the same input, in the same run.
//!
//! Every packet-rate suite runs `dpdk-testpmd` io forwarding and `bulkhead-dataplane` alternately on the very
//! same input (a pcap replayed from memory by `net_pcap`, `infinite_rx=1`) and sink (`net_null`, `no-rx=1`: a
//! plain net_null would also *generate* packets and testpmd would forward both ways), one forwarding core each
//! (lcore 1), the main thread on lcore 0. Rates are per-second samples after a warm-up, median per run; the
//! figure is the median over runs, with the spread (min–max of the run medians). The forwarding and stateful
//! suites also run testpmd's `macswap` and `5tswap` modes, which read every packet as Bulkhead must (io
//! forwarding never does): the cost of looking at packets at all on these ports. The stateful and new-flow
//! suites also run OVS-DPDK's userspace connection tracker on the same input (see [`ovs`]). Classification runs
//! `dpdk-test-acl` with its best algorithm on the same ClassBench sets. Every suite's rows go into one
//! Markdown table and one JSON file (`bench-results/summary.{md,json}`), stamped with the date, machine and
//! commit; each suite also writes its own detailed JSON.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{root, show, Result};

mod classify;
mod fastpath;
mod flood;
mod gateways;
mod ha;
mod history;
mod inputs;
mod ovs;
mod suggest;
mod swap;

/// The benchmark suites, in the order `cargo xtask bench` runs them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Suite {
    /// Plain L2 forwarding (frames the policy passes without state) vs dpdk-testpmd io and macswap.
    Forwarding,
    /// Stateful forwarding of established flows vs dpdk-testpmd io and 5tswap and OVS-DPDK's userspace
    /// conntrack; the fast path without I/O at 4096, 65 536 and 1 000 000 flows.
    Stateful,
    /// Every packet a new flow judged against ClassBench acl1_10k, vs dpdk-testpmd io forwarding and OVS-DPDK.
    Newflows,
    /// An established-flow stream beside a SYN flood through one worker: the stream's delivered share, the
    /// flood's fates by reason.
    Flood,
    /// ClassBench classification vs dpdk-test-acl with its best algorithm on this CPU.
    Classify,
    /// Compile + persist + swap of a 10k-rule policy in a running dataplane, and its peak memory.
    Swap,
    /// Memory per tracked flow at one million flows.
    Memory,
    /// Commit to enforced through control of a 10k-rule policy on one and on three gateways.
    Gateways,
    /// Control's flow history: ingestion rate, 30-day queries over 10⁶ conversation-buckets, bytes per row.
    History,
    /// Rule suggestion and what-if over 1 000 000 conversation-buckets (control's engines, no dataplane).
    Suggest,
    /// An HA pair with keepalived: SIGKILL failover gaps, established flows lost, the sync's update rate.
    Ha,
}

const ALL: [Suite; 11] = [
    Suite::Forwarding,
    Suite::Stateful,
    Suite::Newflows,
    Suite::Flood,
    Suite::Classify,
    Suite::Swap,
    Suite::Memory,
    Suite::Gateways,
    Suite::History,
    Suite::Suggest,
    Suite::Ha,
];

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
    /// Flows in the established-flow input.
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

/// Medians and spread of one measured quantity.
#[derive(Debug, Clone)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

impl Stat {
    pub fn of(runs: Vec<f64>) -> Stat {
        Stat {
            median: median(&runs),
            min: runs.iter().cloned().fold(f64::INFINITY, f64::min),
            max: runs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            runs,
        }
    }

    fn json(&self) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max, "runs": self.runs})
    }
}

/// One line of the summary: Bulkhead's figure beside its baseline's.
pub struct Row {
    pub suite: Suite,
    pub what: String,
    pub unit: &'static str,
    /// Divide the raw values by this for display (e.g. 1e6 for Mpps).
    pub scale: f64,
    pub bulkhead: Stat,
    pub baseline: Option<(&'static str, Stat)>,
    /// The issue's target for the ratio (or for the value, when there is no baseline), if any.
    pub target: Option<&'static str>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .map(|(_, b)| self.bulkhead.median / b.median)
    }

    fn cell(&self, s: &Stat) -> String {
        if s.runs.len() > 1 {
            format!(
                "{:.2} ({:.2}–{:.2})",
                s.median / self.scale,
                s.min / self.scale,
                s.max / self.scale
            )
        } else {
            format!("{:.2}", s.median / self.scale)
        }
    }
}

pub fn bench(args: &Args) -> Result {
    if args.seconds <= WARMUP_SAMPLES as u64 + 1 {
        return Err(format!("--seconds must be above {}", WARMUP_SAMPLES + 1).into());
    }
    let suites: Vec<Suite> = if args.suites.is_empty() {
        ALL.to_vec()
    } else {
        ALL.into_iter()
            .filter(|s| args.suites.contains(s))
            .collect()
    };
    if args.hugepages {
        reserve_hugepages()?;
    }
    let mut rows = Vec::new();
    for suite in suites {
        eprintln!("xtask: bench {suite:?}");
        rows.extend(match suite {
            Suite::Forwarding => rates::forwarding(args)?,
            Suite::Stateful => rates::stateful(args)?,
            Suite::Newflows => rates::new_flows(args)?,
            Suite::Flood => flood::flood(args)?,
            Suite::Classify => classify::classify(args)?,
            Suite::Swap => swap::swap(args)?,
            Suite::Memory => swap::memory()?,
            Suite::Gateways => gateways::gateways(args)?,
            Suite::History => history::history()?,
            Suite::Suggest => suggest::suggest(args)?,
            Suite::Ha => ha::ha(args)?,
        });
    }
    summary(args, &rows)
}

/// Prints the summary table and writes `bench-results/summary.{md,json}`.
fn summary(args: &Args, rows: &[Row]) -> Result {
    let machine = machine();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut md = format!(
        "Bulkhead benchmark suite — {date}, commit {commit}, {machine}; {} runs × {} s, medians (min–max over runs)\n\n\
         | suite | what | unit | Bulkhead | baseline | baseline figure | ratio | target |\n\
         |---|---|---|---|---|---|---|---|\n",
        args.runs, args.seconds
    );
    for r in rows {
        let (base_name, base) = match &r.baseline {
            Some((name, s)) => (name.to_string(), r.cell(s)),
            None => ("—".into(), "—".into()),
        };
        md += &format!(
            "| {:?} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.suite,
            r.what,
            r.unit,
            r.cell(&r.bulkhead),
            base_name,
            base,
            r.ratio().map_or("—".into(), |x| format!("**{x:.3}**")),
            r.target.unwrap_or("—"),
        );
    }
    println!("\n{md}");
    let out = root().join("bench-results");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("summary.md"), &md)?;
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "suite": format!("{:?}", r.suite).to_lowercase(), "what": r.what, "unit": r.unit,
                "bulkhead": r.bulkhead.json(),
                "baseline": r.baseline.as_ref().map(|(n, s)| json!({"name": n, "stat": s.json()})),
                "ratio": r.ratio(), "target": r.target,
            })
        })
        .collect();
    let file = out.join("summary.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!({
            "date": date, "commit": commit, "machine": machine,
            "runs": args.runs, "seconds": args.seconds, "rows": json_rows,
        }))?,
    )?;
    println!("written: {} and summary.md", file.display());
    Ok(())
}

/// CPU model and core count, for the record.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cpu.lines().filter(|l| l.starts_with("processor")).count();
    format!("{model}, {cores} cores")
}

/// Whether this CPU lists `flag` in `/proc/cpuinfo`.
pub fn cpu_has(flag: &str) -> bool {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu.lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|x| x == flag))
}

/// Whether this CPU has the AVX-512 subsets `rte_acl`'s AVX-512 classifiers need (DPDK checks these four).
pub fn has_avx512() -> bool {
    ["avx512f", "avx512vl", "avx512cd", "avx512bw"]
        .into_iter()
        .all(cpu_has)
}

/// The `[eal]` setting of the suites' dataplane configurations: on a CPU with AVX-512, DPDK is allowed 512-bit
/// vectors (`--force-max-simd-bitwidth=512`; its default stops at 256 bits), so `rte_acl` classifies 32 flows
/// at once, as `dpdk-test-acl` does in the classify suite.
pub fn eal_simd_setting() -> &'static str {
    if has_avx512() {
        r#"extra_args = ["--force-max-simd-bitwidth=512"]"#
    } else {
        ""
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn run_capture(cmd: &mut Command) -> Result<String> {
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
        crate::util::run(Command::new("mount").args([
            "-t",
            "hugetlbfs",
            "nodev",
            "/dev/hugepages",
        ]))?;
    }
    Ok(())
}

/// Starts a benchmarked program with its stdout (its reports) piped to us, stdin and stderr closed.
fn spawn_reporting(cmd: &mut Command) -> Result<(Child, ChildStdout)> {
    eprintln!("$ {}", show(cmd));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    Ok((child, stdout))
}

/// Runs `bulkhead-dataplane` (in `bin`) with `config` until it has forwarded for `seconds`, and returns, for each
/// of its stats reports after the warm-up, the per-second rates of the counters `counts` reads from the report
/// (`None`: not a stats report). The first counter must be the packets received: it tells when traffic started.
fn dataplane_rates<const N: usize>(
    bin: &Path,
    config: &Path,
    seconds: u64,
    counts: fn(&Value) -> Option<[u64; N]>,
) -> Result<Vec<[f64; N]>> {
    let (mut child, stdout) = spawn_reporting(
        Command::new(bin.join("bulkhead-dataplane"))
            .arg("--config")
            .arg(config),
    )?;
    let (started, on_start) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut samples = Vec::new();
        let mut last: Option<(f64, [u64; N])> = None;
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let (Some(now), Some(time)) = (counts(&v), v["uptime_s"].as_f64()) else {
                continue;
            };
            if let Some((t0, before)) = last {
                if now[0] > before[0] {
                    let _ = started.send(());
                }
                samples.push(std::array::from_fn(|i| {
                    now[i].saturating_sub(before[i]) as f64 / (time - t0)
                }));
            }
            last = Some((time, now));
        }
        samples
    });
    stop_after(&mut child, &on_start, seconds)?;
    let samples = reader.join().map_err(|_| "bulkhead reader panicked")?;
    warm(samples, "bulkhead-dataplane", |s: &[f64; N]| s[0] > 0.0)
}

/// How long a program may take to start forwarding (loading a large pcap into mbufs takes a while).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

/// Waits until the program reports that it forwards (`started` receives), lets it run `seconds` more, then
/// sends SIGINT and waits for it.
fn stop_after(child: &mut Child, started: &Receiver<()>, seconds: u64) -> Result {
    let t0 = Instant::now();
    let mut since: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(format!("exited early ({status})").into());
        }
        if since.is_none() && started.try_recv().is_ok() {
            since = Some(Instant::now());
        }
        match since {
            Some(t) if t.elapsed() >= Duration::from_secs(seconds) => break,
            None if t0.elapsed() > STARTUP_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not start forwarding within {STARTUP_TIMEOUT:?}").into());
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    child.wait()?;
    Ok(())
}

/// Drops the samples before forwarding started (loading a large pcap into mbufs takes seconds) and the
/// warm-up ones after it.
fn warm<T>(samples: Vec<T>, who: &str, started: impl Fn(&T) -> bool) -> Result<Vec<T>> {
    let kept: Vec<T> = samples
        .into_iter()
        .skip_while(|s| !started(s))
        .skip(WARMUP_SAMPLES)
        .collect();
    if kept.is_empty() {
        return Err(format!("{who} reported no throughput samples").into());
    }
    Ok(kept)
}

mod rates;
