//! `bulkhead-pktgen send` through the real dataplane: `bulkhead-dataplane`
//! runs with two memif ports (servers, worker on core 1), pktgen connects to
//! them as client on core 0, sends a pcap in one side and receives the other.
//! Needs root and DPDK (as the dataplane's own tests do).
//!
//! The dataplane binary is built here with the same cargo, profile and
//! target directory as this test (a no-op when it is up to date).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_pktgen::flows::{FlowSet, FlowsConfig};
use bulkhead_pktgen::frame::L4Proto;
use bulkhead_pktgen::pcap::PcapSink;
use serde_json::Value;

const PKTGEN: &str = env!("CARGO_BIN_EXE_bulkhead-pktgen");

/// Dataplanes spin on core 1: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Builds `bulkhead-dataplane` next to the pktgen binary under test.
fn dataplane_bin() -> PathBuf {
    let pktgen = Path::new(PKTGEN);
    let profile_dir = pktgen.parent().expect("binary has a directory");
    let target = profile_dir.parent().expect("profile dir has a parent");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "-p", "bulkhead-dataplane"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p bulkhead-dataplane failed");
    profile_dir.join("bulkhead-dataplane")
}

/// A running dataplane on two memif servers; killed and its directory
/// (config, state, sockets) removed on drop, also when a test fails.
struct Dataplane {
    child: Option<Child>,
    dir: PathBuf,
    /// DPDK file prefixes used (the dataplane's and pktgen's), whose runtime
    /// directories under /var/run/dpdk are removed on drop.
    prefixes: Mutex<Vec<String>>,
    a: String,
    b: String,
    stdout: mpsc::Receiver<Value>,
}

impl Dataplane {
    fn start(policy: &Path) -> Dataplane {
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("bulkhead-live-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = format!("live-dp-{id}");
        // socket-abstract=no: the sockets are files in `dir`, removed with it.
        let a = format!("socket={},socket-abstract=no", dir.join("a.sock").display());
        let b = format!("socket={},socket-abstract=no", dir.join("b.sock").display());
        let config = format!(
            r#"[eal]
file_prefix = "{prefix}"
main_core = 0
hugepages = false
memory_mb = 256
log_level = "warning"

[workers]
cores = [1]

[mempool]
mbufs = 8191
cache = 128

[rings]
rx = 1024
tx = 1024

[[ports]]
name = "a"
device = "net_memif0,role=server,{a}"

[[ports]]
name = "b"
device = "net_memif1,role=server,{b}"

[[links]]
ports = ["a", "b"]

[stats]
interval_ms = 100

[policy]
state_dir = {state:?}
control_socket = {socket:?}
bootstrap = {policy:?}

[conntrack]
flows_per_worker = 16384
"#,
            state = dir.join("state").display().to_string(),
            socket = dir.join("control.sock").display().to_string(),
            policy = policy.display().to_string(),
        );
        let config_path = dir.join("dataplane.toml");
        std::fs::write(&config_path, config).unwrap();
        let stderr = std::fs::File::create(dir.join("dataplane.stderr")).unwrap();
        let mut child = Command::new(dataplane_bin())
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start bulkhead-dataplane");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let dp = Dataplane {
            child: Some(child),
            dir,
            prefixes: Mutex::new(vec![prefix]),
            a,
            b,
            stdout: rx,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match dp.stdout.recv_timeout(left) {
                Ok(v) if v["event"] == "ready" => break,
                Ok(_) => {}
                Err(_) => panic!("dataplane not ready:\n{}", dp.stderr()),
            }
        }
        dp
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("dataplane.stderr")).unwrap_or_default()
    }

    /// pktgen's device strings: clients of the dataplane's two servers.
    fn devices(&self) -> [String; 2] {
        [
            format!("net_memif0,role=client,{}", self.a),
            format!("net_memif1,role=client,{}", self.b),
        ]
    }

    /// The first counters report (every 100 ms) whose totals satisfy
    /// `done`; the last one seen if none does within 10 s. Read while the
    /// dataplane runs rather than from its report at shutdown, so that these
    /// tests judge forwarding, not how the process ends.
    fn totals_when(&self, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = Value::Null;
        while let Ok(v) = self
            .stdout
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if v["event"] == "stats" {
                last = v["totals"].clone();
                if done(&last) {
                    break;
                }
            }
        }
        last
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A debug build on a busy machine can take a while to shut down.
            let _ = testbed::terminate(&mut child, Duration::from_secs(30));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let prefixes = self.prefixes.get_mut().unwrap_or_else(|p| p.into_inner());
        for prefix in prefixes.drain(..) {
            let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(prefix));
        }
    }
}

fn frames(flows: u32, frame_size: usize, seed: u64) -> Vec<Vec<u8>> {
    let set = FlowSet::new(&FlowsConfig {
        flows,
        frame_size,
        proto: L4Proto::Udp,
        seed,
        ..FlowsConfig::default()
    })
    .unwrap();
    let mut out = Vec::new();
    set.for_each_frame(|f| {
        out.push(f.to_vec());
        Ok(())
    })
    .unwrap();
    out
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut sink = PcapSink::create(path).unwrap();
    for f in frames {
        sink.write(f).unwrap();
    }
    sink.finish().unwrap();
}

/// Runs `send` and returns its exit code and JSON report.
fn send(dp: &Dataplane, pcap: &Path, extra: &[&str]) -> (i32, Value, Output) {
    let [tx, rx] = dp.devices();
    let json = dp.dir.join(format!(
        "report-{}.json",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let prefix = format!(
        "live-pg-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    dp.prefixes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(prefix.clone());
    let out = Command::new(PKTGEN)
        .args([
            "send",
            "--memory-mb",
            "256",
            "--cores",
            "0",
            "--drain-ms",
            "1000",
        ])
        .arg("--pcap")
        .arg(pcap)
        .args(["--tx", &tx, "--rx", &rx, "--file-prefix", &prefix])
        .arg("--json")
        .arg(&json)
        .args(extra)
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, out)
}

fn show(out: &Output, dp: &Dataplane) -> String {
    format!(
        "pktgen stderr:\n{}\ndataplane stderr:\n{}",
        String::from_utf8_lossy(&out.stderr),
        dp.stderr()
    )
}

#[test]
fn open_policy_every_packet_arrives_stamped_or_not() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbed/policies/open.json");
    let dp = Dataplane::start(&policy);
    // 128-byte frames carry a stamp; 64-byte ones are matched by tuple.
    let mut all = frames(64, 128, 1);
    all.extend(frames(16, 64, 2));
    let pcap = dp.dir.join("mixed.pcap");
    write_pcap(&pcap, &all);

    let (code, rep, out) = send(&dp, &pcap, &["--count", "4000", "--rate", "4000"]);
    assert_eq!(code, 0, "{}", show(&out, &dp));
    let r = &rep["report"];
    assert_eq!(r["sent"], 4000, "{r:#}");
    assert_eq!(r["received"], 4000, "{r:#}\n{}", show(&out, &dp));
    assert_eq!(r["loss"], 0);
    // 64 of every 80 templates are stamped: 4000 = 50 rounds of 80.
    assert_eq!(r["stamped"]["sent"], 3200);
    assert_eq!(r["stamped"]["received"], 3200);
    assert_eq!(r["unstamped"]["sent"], 800);
    assert_eq!(r["unstamped"]["received"], 800);
    assert_eq!(r["latency_ns"]["samples"], 3200);
    assert!(r["latency_ns"]["p50"].as_u64().unwrap() > 0);
    assert_eq!(r["duplicates"], 0);
    assert_eq!(r["stale"], 0);
    assert_eq!(rep["port_stats"]["rx_side"]["rx_packets"], 4000);

    let totals = dp.totals_when(|t| t["tx_packets"] == 4000);
    assert_eq!(totals["rx_packets"], 4000, "{totals:#}");
    assert_eq!(totals["tx_packets"], 4000, "{totals:#}");
}

fn in_half(ip: IpAddr) -> bool {
    // 172.16.0.0/13: the lower half of the flows' 172.16.0.0/12.
    matches!(ip, IpAddr::V4(a) if u32::from(a) >> 19 == u32::from(Ipv4Addr::new(172, 16, 0, 0)) >> 19)
}

#[test]
fn restrictive_policy_allowed_flows_arrive_denied_do_not() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let frames = frames(128, 128, 7);
    let dir = std::env::temp_dir().join(format!("bulkhead-live-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("half.json");
    std::fs::write(
        &policy,
        r#"{
  "format": "bulkhead.policy/v1",
  "segments": [],
  "services": [{"name": "udp-all", "protocol": "udp"}],
  "rules": [{"id": 1, "name": "lower-half", "from": "any", "to": {"prefix": "172.16.0.0/13"},
             "service": "udp-all", "action": "allow"}],
  "settings": {"default_action": "deny", "tcp_strictness": "loose", "drop_other_ethertypes": false}
}"#,
    )
    .unwrap();
    let dp = Dataplane::start(&policy);
    let _ = std::fs::remove_dir_all(&dir);
    let pcap = dp.dir.join("flows.pcap");
    write_pcap(&pcap, &frames);

    // The sidecar by the reference reading of the policy: allowed iff the
    // destination is in 172.16.0.0/13. Also a wrong one claiming every flow
    // passes, which the run must catch.
    let mut right = String::new();
    let mut wrong = String::new();
    let mut passing = 0;
    for (i, f) in frames.iter().enumerate() {
        let p = net::parse::parse(f).unwrap();
        let (src, dst) = (p.src_ip().unwrap(), p.dst_ip().unwrap());
        let (sport, dport) = p.ports().unwrap();
        let pass = in_half(dst);
        passing += usize::from(pass);
        let line = |expect: &str| {
            format!(
                r#"{{"flow": {i}, "proto": 17, "src": "{src}", "sport": {sport}, "dst": "{dst}", "dport": {dport}, "vlan": null, "expect": "{expect}", "decision": "test", "rule_id": null, "packets": 1, "reply_packets": 0}}"#
            ) + "\n"
        };
        right += &line(if pass { "pass" } else { "drop" });
        wrong += &line("pass");
    }
    assert!(
        passing > 16 && passing < 112,
        "both kinds present: {passing}"
    );
    let right_path = dp.dir.join("flows.pcap.verdicts.jsonl");
    let wrong_path = dp.dir.join("wrong.verdicts.jsonl");
    std::fs::write(&right_path, right).unwrap();
    std::fs::write(&wrong_path, wrong).unwrap();

    let count = (frames.len() * 20).to_string();
    let v = right_path.display().to_string();
    let (code, rep, out) = send(
        &dp,
        &pcap,
        &["--count", &count, "--rate", "4000", "--verdicts", &v],
    );
    assert_eq!(code, 0, "{rep:#}\n{}", show(&out, &dp));
    let r = &rep["report"];
    let verdicts = &r["verdicts"];
    assert_eq!(verdicts["flows_sent"], 128);
    assert_eq!(verdicts["pass_ok"], passing);
    assert_eq!(verdicts["drop_ok"], 128 - passing);
    assert_eq!(verdicts["mismatches"].as_array().unwrap().len(), 0);
    assert_eq!(
        r["received"],
        passing * 20,
        "every allowed packet, nothing else"
    );
    assert_eq!(r["foreign"], 0);

    let w = wrong_path.display().to_string();
    let (code, rep, out) = send(
        &dp,
        &pcap,
        &["--count", &count, "--rate", "4000", "--verdicts", &w],
    );
    assert_eq!(code, 3, "mismatches exit with 3\n{}", show(&out, &dp));
    let m = rep["report"]["verdicts"]["mismatches"].as_array().unwrap();
    assert_eq!(m.len(), 128 - passing);
    assert!(m.iter().all(|m| m["received"] == 0 && m["sent"] == 20));

    let want = 2 * (128 - passing) as u64 * 20;
    let totals = dp.totals_when(|t| t["drops"]["policy_deny"] == want);
    assert_eq!(totals["drops"]["policy_deny"], want, "{totals:#}");
}

#[test]
fn policy_conversations_get_their_expected_verdicts() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // The example gateway policy: segments, services, allow and deny rules, a
    // monitored deny, strict TCP. `pktgen policy` draws conversations (TCP
    // handshakes, data both ways, teardowns; UDP; ICMP; IPv4 and IPv6) from
    // it, with the expected verdict of each flow.
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json");
    let dp = Dataplane::start(&policy);
    let pcap = dp.dir.join("policy.pcap");
    let out = Command::new(PKTGEN)
        .args(["policy", "--policy"])
        .arg(&policy)
        .arg("--out")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sidecar = dp.dir.join("policy.pcap.verdicts.jsonl");
    let lines = std::fs::read_to_string(&sidecar).unwrap();
    let pass = lines.matches(r#""expect":"pass""#).count();
    let drop = lines.matches(r#""expect":"drop""#).count();
    assert!(pass > 0 && drop > 0, "{lines}");

    // A reply goes out the other port than its request, and the gateway
    // polls its ports independently: pktgen waits at each turn of direction
    // until what it sent has come through (or 200 ms passed: dropped).
    let s = sidecar.display().to_string();
    let (code, rep, out) = send(&dp, &pcap, &["--rate", "1000", "--verdicts", &s]);
    let v = &rep["report"]["verdicts"];
    if code != 0 {
        let totals = dp.totals_when(|_| true);
        panic!(
            "exit {code}: {v:#}\n{}\ndataplane drops: {:#}",
            show(&out, &dp),
            totals["drops"]
        );
    }
    assert_eq!(v["flows_sent"], pass + drop);
    assert_eq!(v["pass_ok"], pass);
    assert_eq!(v["drop_ok"], drop);
    assert_eq!(rep["report"]["foreign"], 0);
}
