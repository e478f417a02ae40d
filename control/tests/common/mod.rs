//! Shared by the control tests: a real `bulkhead-dataplane` on `net_null` ports (no namespaces: enough for
//! every route that reaches the dataplane), a control process beside it, and small helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bulkhead_pktgen::frame::{FrameSpec, IpSpec, L4Spec};
use bulkhead_pktgen::pcap::PcapSink;
use net::tcp::TcpFlags;
use serde_json::{json, Value};
use testbed::control::{Control, ControlOptions, Response};
use testbed::Side;

pub fn control_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bulkhead-control"))
}

/// Built beside this package's binary by `cargo test --workspace` (or `cargo build -p bulkhead-dataplane`).
pub fn dataplane_bin() -> PathBuf {
    let p = control_bin().with_file_name("bulkhead-dataplane");
    assert!(
        p.exists(),
        "{} is missing: cargo build -p bulkhead-dataplane (same profile and target dir)",
        p.display()
    );
    p
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh directory for one test.
pub fn test_dir(name: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("bh-ctl-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A dataplane whose ports are `net_null` devices: it answers every control op; no traffic.
pub struct NullDataplane {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl NullDataplane {
    pub fn start(dir: &Path) -> NullDataplane {
        NullDataplane::start_with(dir, "")
    }

    /// `policy_extra` is added to the `[policy]` section (e.g. `max_rules = 2`).
    pub fn start_with(dir: &Path, policy_extra: &str) -> NullDataplane {
        NullDataplane::start_ports(
            dir,
            policy_extra,
            "net_null{n}0,no-rx=1",
            "net_null{n}1,no-rx=1",
        )
    }

    /// Bootstrapped with `policy`, replaying `frames` once into port a (a `net_pcap` device), port b a sink.
    pub fn replaying(dir: &Path, policy: &Value, frames: &[Vec<u8>]) -> NullDataplane {
        let pcap = dir.join("flows.pcap");
        write_frames(&pcap, frames);
        let policy_file = dir.join("policy.json");
        std::fs::write(&policy_file, policy.to_string()).unwrap();
        let boot = format!("bootstrap = {:?}", policy_file.display().to_string());
        NullDataplane::start_ports(
            dir,
            &boot,
            &format!("net_pcap{{n}}0,rx_pcap={}", pcap.display()),
            "net_null{n}1,no-rx=1",
        )
    }

    /// With the given port devices (`{n}` is replaced by a number unique to this dataplane, for device names):
    /// e.g. `net_pcap{n}0,rx_pcap=FILE` replays a capture into port a, a plain `net_null{n}0` generates packets.
    pub fn start_ports(
        dir: &Path,
        policy_extra: &str,
        port_a: &str,
        port_b: &str,
    ) -> NullDataplane {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port_a = port_a.replace("{n}", &n.to_string());
        let port_b = port_b.replace("{n}", &n.to_string());
        let state = dir.join("dp-state");
        let socket = dir.join("dp.sock");
        let config = format!(
            r#"[eal]
file_prefix = "ctl-{pid}-{n}"
main_core = 0
hugepages = false
memory_mb = 256
log_level = "warning"

[workers]
cores = [1]

[mempool]
mbufs = 4095
cache = 64

[rings]
rx = 256
tx = 256

[[ports]]
name = "a"
device = {port_a:?}

[[ports]]
name = "b"
device = {port_b:?}

[[links]]
ports = ["a", "b"]

[stats]
interval_ms = 0

[policy]
state_dir = {state:?}
control_socket = {socket:?}
{policy_extra}

[conntrack]
flows_per_worker = 1024
"#,
            pid = std::process::id(),
            state = state.display().to_string(),
            socket = socket.display().to_string(),
        );
        let path = dir.join("dataplane.toml");
        std::fs::write(&path, config).unwrap();
        let stderr = std::fs::File::create(dir.join("dataplane.stderr")).unwrap();
        let child = Command::new(dataplane_bin())
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let dp = NullDataplane {
            child: Some(child),
            dir: dir.to_path_buf(),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while dp.status().is_none() {
            assert!(
                Instant::now() < deadline,
                "dataplane not ready: {}",
                std::fs::read_to_string(dir.join("dataplane.stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        dp
    }

    /// One control-socket request (as JSON, to show the wire) and its result; `None` when the dataplane does
    /// not answer or refuses.
    pub fn request(&self, req: Value) -> Option<Value> {
        use std::io::{BufRead, BufReader, Write};
        let req: protocol::Request = serde_json::from_value(req).ok()?;
        let s = std::os::unix::net::UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let line = protocol::encode_request(None, &req) + "\n";
        (&s).write_all(line.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).ok()?;
        protocol::decode_reply::<Value>(&line).ok()?.ok()
    }

    pub fn status(&self) -> Option<Value> {
        self.request(json!({"op": "status"}))
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = testbed::terminate(&mut c, testbed::STOP_GRACE);
        }
    }
}

impl Drop for NullDataplane {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn control_opts(dir: &Path, socket: &Path) -> ControlOptions {
    ControlOptions::new(control_bin(), &dir.join("control"), socket)
}

pub fn start_control(opts: &ControlOptions) -> Control {
    Control::start(opts).unwrap_or_else(|e| panic!("control did not start: {e}"))
}

/// A small valid policy: clients on one side, a database and a SCADA host on the other.
pub fn policy_doc() -> Value {
    json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "clients", "prefixes": ["10.99.0.1/32"], "labels": {"zone": "it"}},
            {"name": "legacy", "prefixes": ["10.99.0.2/32"], "labels": {"zone": "ot"}}
        ],
        "services": [
            {"name": "postgres", "protocol": "tcp", "ports": ["5432"]},
            {"name": "hmi", "protocol": "tcp", "ports": ["8080"]},
            {"name": "ping", "protocol": "icmp", "icmp_type": 8}
        ],
        "rules": [
            {"id": 10, "name": "clients-db", "from": {"segment": "clients"}, "to": {"segment": "legacy"},
             "service": "postgres", "action": "allow"},
            {"id": 20, "name": "clients-ping", "from": {"segment": "clients"}, "to": {"segment": "legacy"},
             "service": "ping", "action": "allow"}
        ],
        "settings": {"default_action": "deny"}
    })
}

/// Polls `f` until it returns `Some` (or panics after `secs`).
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The namespace test bed, started with the example policy, and a directory for its file servers holding
/// `small`.
pub fn bed_with_www() -> (testbed::TestBed, PathBuf) {
    let mut opts = testbed::Options::new(dataplane_bin());
    opts.policy = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json"));
    let bed = testbed::TestBed::start(&opts).unwrap();
    let www = bed.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("small"), b"hello").unwrap();
    (bed, www)
}

/// Whether `side` can download `http://host:port/small` (the test bed's file server) within 2 s, from its
/// address `from` when given.
pub fn fetches(side: &Side, from: Option<&str>, host: &str, port: u16) -> bool {
    let url = format!("http://{host}:{port}/small");
    let mut args = vec!["curl", "-sS", "-o", "/dev/null", "--max-time", "2"];
    if let Some(from) = from {
        args.extend(["--interface", from]);
    }
    args.push(&url);
    side.run(&args).unwrap().status.success()
}

// ---- REST calls most tests make ----

/// Asserts a success.
pub fn ok(r: &Response) {
    assert!(r.status < 300, "{} {}", r.status, r.body);
}

pub fn draft_etag(c: &Control) -> String {
    let r = c.call("GET", "/api/v1/draft", None).unwrap();
    ok(&r);
    r.etag()
}

pub fn active_etag(c: &Control) -> String {
    let r = c.call("GET", "/api/v1/active", None).unwrap();
    ok(&r);
    r.etag()
}

pub fn import(c: &Control, doc: &Value) {
    let r = c
        .write("PUT", "/api/v1/draft", Some(doc), &draft_etag(c))
        .unwrap();
    ok(&r);
}

pub fn commit(c: &Control, body: Value) -> Response {
    c.write("POST", "/api/v1/commit", Some(&body), &draft_etag(c))
        .unwrap()
}

pub fn audit_actions(c: &Control) -> Vec<String> {
    let r = c.call("GET", "/api/v1/audit", None).unwrap();
    ok(&r);
    r.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

/// Deletes rule `delete_rule` from the draft and commits it through the API; the commit's answer.
pub fn edit_and_commit(c: &Control, delete_rule: u32) -> Value {
    let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
    let r = c
        .write(
            "DELETE",
            &format!("/api/v1/draft/rules/{delete_rule}"),
            None,
            &etag,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c
        .write(
            "POST",
            "/api/v1/commit",
            Some(&json!({"comment": format!("without rule {delete_rule}")})),
            &r.etag(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// A download of `http://10.99.0.2:8080/blob` from `side`, limited to `rate` (curl's `--limit-rate`) and ending
/// after `max_time_s`: a connection that stays established for a while.
pub fn slow_download(side: &Side, rate: &str, max_time_s: u32) -> std::process::Child {
    side.command("curl")
        .args(["-sS", "-o", "/dev/null", "--limit-rate", rate, "--max-time"])
        .arg(max_time_s.to_string())
        .arg(format!("http://{}:8080/blob", testbed::addr::B4))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// An HTTP server of `dir`'s files on `side`, listening on `host:port` when this returns.
pub fn file_server(side: &Side, host: &str, port: u16, dir: &Path) -> testbed::Background {
    let server = side
        .spawn(&[
            "python3",
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            host,
            "--directory",
            dir.to_str().unwrap(),
        ])
        .unwrap();
    side.wait_listening(port).unwrap();
    server
}

/// A padded frame from `src` to `dst` carrying `l4` and `payload`.
pub fn frame(src: &str, dst: &str, l4: L4Spec, payload: &[u8]) -> Vec<u8> {
    let ip = IpSpec::from_addrs(src.parse().unwrap(), dst.parse().unwrap()).unwrap();
    FrameSpec::new(ip, l4).build_padded(payload).unwrap()
}

/// A TCP SYN: a new flow.
pub fn syn(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    frame(
        src,
        dst,
        L4Spec::tcp(sport, dport, 1000, 0, TcpFlags::SYN),
        &[],
    )
}

/// A pcap of `frames`, in order (the input of a `net_pcap` port).
pub fn write_frames(path: &Path, frames: &[Vec<u8>]) {
    let mut sink = PcapSink::create(path).unwrap();
    for f in frames {
        sink.write(f).unwrap();
    }
    assert_eq!(sink.finish().unwrap(), frames.len() as u64);
}
