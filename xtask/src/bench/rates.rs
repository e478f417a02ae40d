//! The packet-rate suites: Bulkhead and `dpdk-testpmd` io forwarding, alternately, on the same pcap and sink.
//! The forwarding and stateful suites also run testpmd in a forwarding mode that reads every packet (see
//! [`Touching`]): io forwarding never looks at a packet, and on a software port that is much of the cost.
//! The stateful and new-flow suites also run OVS-DPDK's userspace connection tracker ([`super::ovs`]) on the
//! same input, alternated with the others run by run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::{
    dataplane_rates, inputs, median, spawn_reporting, stop_after, warm, Args, Row, Stat, Suite,
};
use crate::util::{build_release, root, run, target_dir, Result};

/// How one rate benchmark is set up; testpmd and Bulkhead get the same pcap, memory and mbuf count.
struct Setup<'a> {
    name: &'static str,
    pcap: &'a Path,
    /// The policy Bulkhead enforces (bootstrap).
    policy: PathBuf,
    /// Mbufs in the pool: `net_pcap` with `infinite_rx` holds the whole pcap in mbufs.
    mbufs: u32,
    memory_mb: u32,
    flows_per_worker: u32,
    /// A testpmd forwarding mode that touches every packet, run beside io forwarding.
    touching: Option<Touching>,
    /// Also run OVS-DPDK's userspace conntrack, on this pcap (the suite's own unless OVS cannot hold it).
    ovs: Option<&'a Path>,
}

/// testpmd forwarding modes that read (and rewrite) every packet: what forwarding costs once a program looks
/// at the packets at all, measured by DPDK's own reference application on the same input.
#[derive(Debug, Clone, Copy)]
enum Touching {
    /// Reads and swaps each frame's Ethernet addresses.
    Macswap,
    /// Parses each frame to its transport header and swaps its addresses and ports (MAC, IP, L4).
    FiveTupleSwap,
}

impl Touching {
    fn mode(self) -> &'static str {
        match self {
            Touching::Macswap => "macswap",
            Touching::FiveTupleSwap => "5tswap",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Touching::Macswap => "dpdk-testpmd macswap",
            Touching::FiveTupleSwap => "dpdk-testpmd 5tswap",
        }
    }
}

/// The baselines' per-run medians: testpmd io forwarding, the touching mode if the suite has one, and
/// OVS-DPDK if the suite runs it.
struct Baselines {
    io: Vec<f64>,
    touching: Option<(Touching, Vec<f64>)>,
    ovs: Option<Vec<OvsFigures>>,
}

/// One OVS-DPDK run: its median rate and the connections its tracker held at the end.
#[derive(Debug, Clone, Copy)]
struct OvsFigures {
    pps: f64,
    connections: u64,
}

impl<'a> Setup<'a> {
    /// The allow-everything policy, the default pool and table sizes.
    fn open_policy(name: &'static str, pcap: &'a Path) -> Self {
        Setup {
            name,
            pcap,
            policy: testbed::policy_file("open.json"),
            mbufs: 32767,
            memory_mb: 1024,
            flows_per_worker: 65536,
            touching: None,
            ovs: None,
        }
    }

    fn touching(self, t: Touching) -> Self {
        Setup {
            touching: Some(t),
            ..self
        }
    }

    fn with_ovs(self) -> Self {
        Setup {
            ovs: Some(self.pcap),
            ..self
        }
    }
}

/// Per-second rates Bulkhead reported: packets received and forwarded, flows created.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rx: f64,
    tx: f64,
    created: f64,
    evicted: f64,
}

fn out_dir() -> Result<PathBuf> {
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Frames the open policy passes without state (an experimental EtherType): the poll loop, the parser and
/// the L2 forward, nothing else.
pub fn forwarding(args: &Args) -> Result<Vec<Row>> {
    let bin = build_release(&["bulkhead-dataplane"])?;
    let pcap = out_dir()?.join(format!("l2-{}B.pcap", args.frame_size));
    inputs::l2_frames(&pcap, args.frame_size as usize, 4096)?;
    let setup = Setup::open_policy("forwarding", &pcap).touching(Touching::Macswap);
    let (t, b) = alternate(args, &bin, &setup)?;
    report(args, &setup, &t, &b, json!({}))?;
    Ok(testpmd_rows(
        Suite::Forwarding,
        format!(
            "L2 forwarding, {} B frames (EtherType passed by policy, no state)",
            args.frame_size
        ),
        &b,
        |x| x.tx,
        t,
        Some("≥ 0.9"),
        None,
        None,
    ))
}

/// Established flows: a pcap of TCP data segments over `--flows` flows, allowed by the open policy (loose
/// TCP: picked up mid-stream), so after the first round every packet belongs to a tracked connection.
pub fn stateful(args: &Args) -> Result<Vec<Row>> {
    let bin = build_release(&["bulkhead-dataplane", "bulkhead-pktgen"])?;
    let pcap = out_dir()?.join(format!("tcp-{}flows-{}B.pcap", args.flows, args.frame_size));
    run(Command::new(bin.join("bulkhead-pktgen"))
        .args(["flows", "--proto", "tcp", "--seed", "1"])
        .args(["--flows", &args.flows.to_string()])
        .args(["--frame-size", &args.frame_size.to_string(), "--out"])
        .arg(&pcap))?;
    let setup = Setup::open_policy("stateful", &pcap)
        .touching(Touching::FiveTupleSwap)
        .with_ovs();
    let (t, b) = alternate(args, &bin, &setup)?;
    report(args, &setup, &t, &b, json!({"flows": args.flows}))?;
    let mut rows = testpmd_rows(
        Suite::Stateful,
        format!(
            "established flows, {} TCP flows, {} B frames, open policy",
            args.flows, args.frame_size
        ),
        &b,
        |x| x.tx,
        t,
        Some("≥ 0.7"),
        Some("≥ 1.0"),
        Some("≥ 5"),
    );
    rows.extend(super::fastpath::rows(args)?);
    Ok(rows)
}

/// Summary rows: Bulkhead's per-run medians of `rate` beside testpmd io forwarding's (with the issue's
/// `target`), beside the touching mode's if the suite ran one (`touching_target`) and beside OVS-DPDK's if
/// it ran (`ovs_target`).
#[allow(clippy::too_many_arguments)]
fn testpmd_rows(
    suite: Suite,
    what: String,
    bulkhead: &[Vec<Sample>],
    rate: impl Fn(&Sample) -> f64 + Copy,
    testpmd: Baselines,
    target: Option<&'static str>,
    touching_target: Option<&'static str>,
    ovs_target: Option<&'static str>,
) -> Vec<Row> {
    let ours = Stat::of(bulkhead.iter().map(|s| median_of(s, rate)).collect());
    let mut rows = vec![Row {
        suite,
        what: what.clone(),
        unit: "Mpps",
        scale: 1e6,
        bulkhead: ours.clone(),
        baseline: Some(("dpdk-testpmd io", Stat::of(testpmd.io))),
        target,
    }];
    if let Some((t, runs)) = testpmd.touching {
        rows.push(Row {
            suite,
            what: format!("{what}; beside testpmd reading every packet"),
            unit: "Mpps",
            scale: 1e6,
            bulkhead: ours.clone(),
            baseline: Some((t.name(), Stat::of(runs))),
            target: touching_target,
        });
    }
    if let Some(runs) = testpmd.ovs {
        rows.push(Row {
            suite,
            what: format!("{what}; beside OVS-DPDK userspace conntrack"),
            unit: "Mpps",
            scale: 1e6,
            bulkhead: ours,
            baseline: Some((
                "OVS-DPDK 3.1 ct()",
                Stat::of(runs.iter().map(|r| r.pps).collect()),
            )),
            target: ovs_target,
        });
    }
    rows
}

/// Flows in the new-flow input, and the table they overflow (4×), so a flow's next packet finds its entry
/// evicted and is judged as a new flow again.
const NEW_FLOWS: u32 = 262_144;
const NEW_FLOWS_TABLE: u32 = 65_536;
/// Packets of the new-flow input OVS-DPDK replays: as many as its mbuf pool holds with room to spare.
const OVS_NEW_FLOWS: usize = 8192;

/// Every packet a new flow: SYNs (and UDP datagrams) of distinct connections sampled inside the rules of
/// ClassBench acl1_10k, judged against acl1_10k as a Bulkhead policy. The connection table holds a quarter of
/// them, so each replayed packet's flow has been evicted (half-open flows are evictable; established ones
/// never are) and the packet goes the whole new-flow way: lookup miss, rte_acl classification, insertion
/// (with an eviction). The share of packets that really were new flows is measured and reported.
pub fn new_flows(args: &Args) -> Result<Vec<Row>> {
    let bin = build_release(&["bulkhead-dataplane"])?;
    let dir = out_dir()?;
    let rules = classbench::read_rules(&classbench::rules_path(&classbench::dir(), "acl1_10k"))?;
    let policy = dir.join("acl1_10k.policy.json");
    std::fs::write(
        &policy,
        serde_json::to_string(&super::swap::classbench_policy(&rules))?,
    )?;
    let pcap = dir.join(format!("newflows-acl1_10k-{}B.pcap", args.frame_size));
    let input = inputs::classbench_new_flows(&rules, NEW_FLOWS, args.frame_size as usize, &pcap)?;
    eprintln!(
        "xtask: {} new-flow packets from {} of {} acl1_10k rules (the others are not TCP/UDP)",
        input.packets, input.rules_used, input.rules_total
    );
    // OVS-DPDK's mbuf pool cannot hold the whole input for `net_pcap` to replay (it then never forwards): it
    // gets the input's first packets.
    let ovs_pcap = dir.join(format!(
        "newflows-acl1_10k-{}B-first{OVS_NEW_FLOWS}.pcap",
        args.frame_size
    ));
    super::ovs::pcap_prefix(&pcap, &ovs_pcap, OVS_NEW_FLOWS)?;
    let setup = Setup {
        name: "newflows",
        pcap: &pcap,
        policy,
        mbufs: NEW_FLOWS + 32767,
        memory_mb: 2048,
        flows_per_worker: NEW_FLOWS_TABLE,
        touching: None,
        ovs: Some(&ovs_pcap),
    };
    let (t, b) = alternate(args, &bin, &setup)?;
    let new_share = median(
        &b.iter()
            .map(|s| median_of(s, |x| x.created / x.rx.max(1.0)))
            .collect::<Vec<_>>(),
    );
    let evicted = median(
        &b.iter()
            .map(|s| median_of(s, |x| x.evicted / x.rx.max(1.0)))
            .collect::<Vec<_>>(),
    );
    report(
        args,
        &setup,
        &t,
        &b,
        json!({"flows": NEW_FLOWS, "table": NEW_FLOWS_TABLE, "rules": rules.len(),
               "new_flow_share": new_share, "evicted_share": evicted}),
    )?;
    println!(
        "new-flow share of received packets: {:.1} % (evictions per packet {:.3})",
        new_share * 100.0,
        evicted
    );
    let ovs_connections = t.ovs.as_ref().map_or(0.0, |runs| {
        median(
            &runs
                .iter()
                .map(|r| r.connections as f64)
                .collect::<Vec<_>>(),
        )
    });
    let created = Stat::of(b.iter().map(|s| median_of(s, |x| x.created)).collect());
    let ovs_rate = t
        .ovs
        .as_ref()
        .map(|runs| Stat::of(runs.iter().map(|r| r.pps).collect()));
    let mut rows = testpmd_rows(
        Suite::Newflows,
        format!(
            "every packet a new flow ({:.1} % measured), acl1_10k ({} rules), {} B",
            new_share * 100.0,
            rules.len(),
            args.frame_size
        ),
        &b,
        |x| x.rx,
        t,
        Some("≥ 0.2"),
        None,
        None,
    );
    // OVS-DPDK never evicts: it keeps every flow of the input (its connection count is reported), so after
    // the first pass its packets belong to tracked connections and its rate bounds its new-connection rate
    // from above.
    if let Some(ovs) = ovs_rate {
        rows.push(Row {
            suite: Suite::Newflows,
            what: format!(
                "new connections per second; OVS-DPDK's packet rate on the input's first {OVS_NEW_FLOWS} packets (it kept all {ovs_connections:.0} connections, no eviction: an upper bound of its new-connection rate)"
            ),
            unit: "M/s",
            scale: 1e6,
            bulkhead: created,
            baseline: Some(("OVS-DPDK 3.1 ct(commit)", ovs)),
            target: None,
        });
    }
    Ok(rows)
}

fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(&samples.iter().map(f).collect::<Vec<_>>())
}

/// Runs testpmd (io, then the touching mode if any) and Bulkhead `--runs` times each, alternating; returns
/// testpmd's run medians and Bulkhead's samples per run.
fn alternate(args: &Args, bin: &Path, setup: &Setup) -> Result<(Baselines, Vec<Vec<Sample>>)> {
    let mut testpmd = Baselines {
        io: Vec::new(),
        touching: setup.touching.map(|t| (t, Vec::new())),
        ovs: setup.ovs.map(|_| Vec::new()),
    };
    let mut bulkhead = Vec::new();
    for i in 1..=args.runs {
        eprintln!(
            "xtask: {} run {i}/{}: dpdk-testpmd io",
            setup.name, args.runs
        );
        testpmd.io.push(median(&run_testpmd(args, setup, "io")?));
        if let Some((t, runs)) = &mut testpmd.touching {
            eprintln!(
                "xtask: {} run {i}/{}: dpdk-testpmd {}",
                setup.name,
                args.runs,
                t.mode()
            );
            runs.push(median(&run_testpmd(args, setup, t.mode())?));
        }
        if let (Some(runs), Some(pcap)) = (&mut testpmd.ovs, setup.ovs) {
            eprintln!(
                "xtask: {} run {i}/{}: OVS-DPDK userspace conntrack",
                setup.name, args.runs
            );
            let dir = out_dir()?.join(format!("ovs-{}", std::process::id()));
            let r = super::ovs::measure(&dir, pcap, setup.memory_mb, args.seconds)?;
            runs.push(OvsFigures {
                pps: median(&r.pps),
                connections: r.connections,
            });
        }
        eprintln!(
            "xtask: {} run {i}/{}: bulkhead-dataplane",
            setup.name, args.runs
        );
        bulkhead.push(run_bulkhead(args, bin, setup)?);
    }
    Ok((testpmd, bulkhead))
}

/// Prints the per-run table and writes `bench-results/<name>.json`.
fn report(
    args: &Args,
    setup: &Setup,
    testpmd: &Baselines,
    bulkhead: &[Vec<Sample>],
    extra: Value,
) -> Result {
    println!(
        "\n{}: {}, {} B frames, net_pcap(infinite_rx) -> net_null(no-rx), 1 worker core",
        setup.name,
        setup.pcap.display(),
        args.frame_size
    );
    let touching = testpmd.touching.as_ref();
    let (mut head, mut rule) = match touching {
        Some((t, _)) => (
            format!(
                " {0} (Mpps) | {0} / io | bulkhead tx / {1} |",
                t.name(),
                t.mode()
            ),
            "---|---|---|".to_string(),
        ),
        None => (String::new(), String::new()),
    };
    if testpmd.ovs.is_some() {
        head += " OVS-DPDK (Mpps) | OVS-DPDK connections | bulkhead tx / OVS-DPDK |";
        rule += "---|---|---|";
    }
    println!(
        "| run | dpdk-testpmd io (Mpps) | bulkhead rx (Mpps) | bulkhead tx (Mpps) | tx ratio |{head}"
    );
    println!("|---|---|---|---|---|{rule}");
    let mut runs = Vec::new();
    for (i, (t, b)) in testpmd.io.iter().zip(bulkhead).enumerate() {
        let (rx, tx) = (median_of(b, |s| s.rx), median_of(b, |s| s.tx));
        let touched = touching.and_then(|(_, runs)| runs.get(i)).copied();
        let mut extra_cells = touched.map_or(String::new(), |x| {
            format!(" {:.2} | {:.3} | {:.3} |", x / 1e6, x / t, tx / x)
        });
        let ovs = testpmd.ovs.as_ref().and_then(|runs| runs.get(i)).copied();
        if let Some(o) = ovs {
            extra_cells += &format!(
                " {:.2} | {} | {:.3} |",
                o.pps / 1e6,
                o.connections,
                tx / o.pps
            );
        }
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.3} |{extra_cells}",
            i + 1,
            t / 1e6,
            rx / 1e6,
            tx / 1e6,
            tx / t
        );
        runs.push(
            json!({"testpmd_pps": t, "bulkhead_rx_pps": rx, "bulkhead_tx_pps": tx,
            "bulkhead_created_per_s": median_of(b, |s| s.created),
            "testpmd_touching": touching.map(|(t, _)| t.mode()), "testpmd_touching_pps": touched,
            "ovs_pps": ovs.map(|o| o.pps), "ovs_connections": ovs.map(|o| o.connections)}),
        );
    }
    let results = root().join("bench-results");
    std::fs::create_dir_all(&results)?;
    let out = results.join(format!("{}.json", setup.name));
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "benchmark": setup.name, "frame_size": args.frame_size, "seconds": args.seconds,
            "hugepages": args.hugepages, "runs": runs, "setup": extra,
        }))?,
    )?;
    println!("written: {}", out.display());
    Ok(())
}

fn memory_args(args: &Args, setup: &Setup) -> Vec<String> {
    let mut v = Vec::new();
    if !args.hugepages {
        v.push("--no-huge".to_string());
    }
    v.extend(["-m".to_string(), setup.memory_mb.to_string()]);
    v
}

fn vdevs(pcap: &Path) -> [String; 2] {
    [
        format!("net_pcap0,rx_pcap={},infinite_rx=1", pcap.display()),
        "net_null0,no-rx=1".into(),
    ]
}

/// testpmd with `--stats-period 1` prints, per port and second, `Tx-pps: N`; the sum over ports is what it
/// forwarded (the pcap port transmits nothing: the sink receives nothing).
fn run_testpmd(args: &Args, setup: &Setup, mode: &str) -> Result<Vec<f64>> {
    let mut cmd = Command::new("dpdk-testpmd");
    cmd.args([
        "-l",
        "0,1",
        "--no-pci",
        &format!("--file-prefix=bench-testpmd-{}", std::process::id()),
        "--log-level=warning",
    ])
    .args(memory_args(args, setup))
    .args(vdevs(setup.pcap).map(|d| format!("--vdev={d}")))
    .args([
        "--",
        &format!("--forward-mode={mode}"),
        "--auto-start",
        "--stats-period=1",
        "--nb-cores=1",
        "--burst=32",
        &format!("--total-num-mbufs={}", setup.mbufs),
    ]);
    let (mut child, stdout) = spawn_reporting(&mut cmd)?;
    let (started, on_start) = std::sync::mpsc::channel();
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
                    if current > 0.0 {
                        let _ = started.send(());
                    }
                    per_period.push(current);
                    current = 0.0;
                    ports_seen = 0;
                }
            }
        }
        per_period
    });
    stop_after(&mut child, &on_start, args.seconds)?;
    let samples = reader.join().map_err(|_| "testpmd reader panicked")?;
    warm(samples, "dpdk-testpmd", |&pps| pps > 0.0)
}

fn run_bulkhead(args: &Args, bin: &Path, setup: &Setup) -> Result<Vec<Sample>> {
    let dir = out_dir()?.join(setup.name);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("bench.toml");
    // A fresh state directory each run, so the bootstrap policy is the one enforced.
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let socket = dir.join("control.sock");
    let [pcap_dev, null_dev] = vdevs(setup.pcap);
    // Unique per run: two benchmarks on one machine must not share DPDK runtime files.
    let pid = std::process::id();
    std::fs::write(
        &config,
        format!(
            r#"# Written by `cargo xtask bench {name}`.
[eal]
file_prefix = "bench-bulkhead-{pid}"
main_core = 0
hugepages = {hugepages}
memory_mb = {memory}
log_level = "warning"
{simd}

[workers]
cores = [1]
burst = 32

[mempool]
mbufs = {mbufs}
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

[policy]
state_dir = {state:?}
control_socket = {socket:?}
bootstrap = {policy:?}
max_rules = 16384

[conntrack]
flows_per_worker = {flows}
"#,
            name = setup.name,
            hugepages = args.hugepages,
            memory = setup.memory_mb,
            mbufs = setup.mbufs,
            policy = setup.policy,
            flows = setup.flows_per_worker,
            simd = super::eal_simd_setting(),
        ),
    )?;
    let rates = dataplane_rates(bin, &config, args.seconds, |v| {
        if v["event"] != "stats" {
            return None;
        }
        let t = &v["totals"];
        Some([
            t["rx_packets"].as_u64()?,
            t["tx_packets"].as_u64()?,
            t["flows_created"].as_u64()?,
            t["flows_evicted"].as_u64().unwrap_or(0),
        ])
    })?;
    Ok(rates
        .into_iter()
        .map(|[rx, tx, created, evicted]| Sample {
            rx,
            tx,
            created,
            evicted,
        })
        .collect())
}
