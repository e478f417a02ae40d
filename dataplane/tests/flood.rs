//! Floods through the running dataplane, judged by counts: a pcap replayed once into a `net_pcap` port (in a
//! fixed order, so every count is exact), the forwarded frames written to a pcap on the linked port. Needs root
//! (the EAL), no namespaces.
//!
//! * Under a SYN flood from random sources that fills the connection table many times over, every packet of
//!   an established stream is forwarded and no established connection is evicted.
//! * Each flood limit of `settings.flood_limits` refuses the new flows over it, counted under its reason, with
//!   a denied flow event naming it.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bulkhead_pktgen::flood::{self, FloodConfig, SERVER, SERVER_PORT};
use bulkhead_pktgen::frame::{FrameSpec, IpSpec, L4Spec};
use net::TcpFlags;
use protocol::{CountersReport, EventBatch, FlowList, Request};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// The connection table of the dataplane under test (the smallest the configuration allows).
const TABLE: u32 = 1024;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A dataplane reading `input` once on port `in`, forwarding to port `out` (a pcap), under `policy`.
struct Replay {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    output: PathBuf,
}

impl Replay {
    fn start(name: &str, input: &[Vec<u8>], policy: &Value) -> Replay {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("bulkhead-flood-{name}-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (rx, empty, output) = (
            dir.join("in.pcap"),
            dir.join("empty.pcap"),
            dir.join("out.pcap"),
        );
        flood::write_pcap(&rx, input.iter().map(Vec::as_slice)).unwrap();
        flood::write_pcap(&empty, []).unwrap();
        let policy_file = dir.join("policy.json");
        std::fs::write(&policy_file, policy.to_string()).unwrap();
        let socket = dir.join("control.sock");
        let config = dir.join("dataplane.toml");
        std::fs::write(
            &config,
            format!(
                r#"[eal]
file_prefix = "flood-{name}-{id}"
main_core = 0
hugepages = false
memory_mb = 256
log_level = "warning"

[workers]
cores = [1]

[mempool]
mbufs = 8191
cache = 128

[[ports]]
name = "in"
device = "net_pcap0,rx_pcap={rx},tx_pcap={rejects}"

[[ports]]
name = "out"
device = "net_pcap1,rx_pcap={empty},tx_pcap={output}"

[[links]]
ports = ["in", "out"]

[stats]
interval_ms = 100

[policy]
state_dir = {state:?}
control_socket = {socket:?}
bootstrap = {policy:?}

[conntrack]
flows_per_worker = {TABLE}
"#,
                rx = rx.display(),
                rejects = dir.join("rejects.pcap").display(),
                empty = empty.display(),
                output = output.display(),
                state = dir.join("state").display().to_string(),
                socket = socket.display().to_string(),
                policy = policy_file.display().to_string(),
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("\"event\":\"ready\""));
        assert!(ready, "the dataplane did not start");
        // Keep draining its reports so it never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Replay {
            child,
            dir,
            socket,
            output,
        }
    }

    fn ask<T: DeserializeOwned>(&self, request: &Request) -> T {
        let stream = UnixStream::connect(&self.socket).unwrap();
        let mut line = protocol::encode_request(None, request);
        line.push('\n');
        (&stream).write_all(line.as_bytes()).unwrap();
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply).unwrap();
        protocol::decode_reply(&reply)
            .unwrap()
            .unwrap_or_else(|e| panic!("{request:?} refused: {}", e.message))
    }

    /// The counters once the worker has judged all `packets` of the input (counts, not time: the deadline only
    /// keeps a broken build from hanging the suite).
    fn counters_after(&self, packets: u64) -> CountersReport {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let c: CountersReport = self.ask(&Request::Counters {});
            let judged = c.totals.tx_packets + c.totals.drops.values().sum::<u64>();
            if c.totals.rx_packets == packets && judged == packets {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {packets} packets judged",
                c.totals.rx_packets
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the dataplane (which closes its output pcap) and returns the frames it forwarded.
    fn stop(mut self) -> Vec<Vec<u8>> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the dataplane exited with {status}");
        let frames = testbed::read_pcap(&self.output).unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
        frames
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sources of the `lab` segment.
const LAB: std::ops::Range<u32> = 64..70;

/// Allows TCP to the server's port and UDP to 53; strict TCP tracking; `flood_limits` as given. The segment
/// `lab` holds heavy sources 64 to 127.
fn policy(flood_limits: Value) -> Value {
    json!({
        "format": "bulkhead.policy/v1",
        "segments": [{"name": "lab", "prefixes": ["172.16.0.64/26"]}],
        "services": [{"name": "web", "protocol": "tcp", "ports": [SERVER_PORT.to_string()]},
                     {"name": "dns", "protocol": "udp", "ports": ["53"]}],
        "rules": [{"id": 1, "name": "web", "from": "any", "to": "any", "service": "web", "action": "allow"},
                  {"id": 2, "name": "dns", "from": "any", "to": "any", "service": "dns", "action": "allow"}],
        "settings": {"default_action": "deny", "flood_limits": flood_limits}
    })
}

/// The IPv4 source of an untagged frame.
fn source(frame: &[u8]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]))
}

#[test]
fn a_syn_flood_that_fills_the_table_costs_the_established_stream_nothing() {
    const FLOWS: u32 = 128;
    let cfg = FloodConfig {
        seed: 17,
        flows: FLOWS,
        segments_per_flow: 8,
        handshakes: true,
        syns: 16 * TABLE,
        heavy_sources: 0,
        heavy_share: 0.0,
        frame_len: 0,
    };
    let stream = flood::established(&cfg);
    let syns = flood::syn_flood(&cfg);
    // The handshakes first (3 frames a connection), then the data segments, each behind a run of flood SYNs.
    let (handshakes, data) = stream.split_at(3 * FLOWS as usize);
    let per_segment = syns.len() / data.len();
    let mut input: Vec<Vec<u8>> = handshakes.to_vec();
    let mut flood_frames = syns.iter().map(|(_, f)| f.clone());
    for segment in data {
        input.extend(flood_frames.by_ref().take(per_segment));
        input.push(segment.clone());
    }
    input.extend(flood_frames);
    let total = input.len() as u64;

    let replay = Replay::start("table", &input, &policy(json!({})));
    replay.counters_after(total);
    let flows: FlowList = replay.ask(&Request::Flows {
        filter: Default::default(),
        limit: Some(TABLE as usize),
    });
    // Read after the listing: the worker refreshes its table counters where it answers it.
    let c: CountersReport = replay.ask(&Request::Counters {});
    assert_eq!(
        c.totals.flows_active,
        u64::from(TABLE),
        "the flood filled the table"
    );
    // ... many times over: half-open flows were evicted to make room.
    assert!(
        c.totals.flows_evicted > u64::from(4 * TABLE),
        "{:?}",
        c.totals
    );
    let established: Vec<_> = flows
        .flows
        .iter()
        .filter(|f| flood::is_client(f.src) && f.state == "established")
        .collect();
    assert_eq!(
        established.len(),
        FLOWS as usize,
        "every established flow kept"
    );
    for f in &established {
        assert_eq!(f.packets_orig, 2 + u64::from(cfg.segments_per_flow));
        assert_eq!(f.packets_reply, 1);
    }
    let forwarded = replay.stop();
    // Every frame of the established stream crossed, each exactly once, in order.
    let crossed: Vec<_> = forwarded
        .iter()
        .filter(|f| flood::is_client(source(f)) || source(f) == IpAddr::V4(SERVER))
        .cloned()
        .collect();
    assert_eq!(crossed.len(), stream.len());
    assert!(
        crossed == stream,
        "the stream crossed changed or out of order"
    );
}

#[test]
fn each_flood_limit_refuses_with_its_reason_and_event() {
    const SYNS: u16 = 50;
    const DATAGRAMS: u16 = 50;
    const LAB_FLOWS_EACH: u16 = 5;
    let half_open = 8;
    let per_second = 20;
    let per_segment = 12;
    let scanner = flood::heavy_source(1);
    let sprayer = flood::heavy_source(2);
    let mut input = Vec::new();
    for k in 0..SYNS {
        let syn = L4Spec::tcp(20_000 + k, SERVER_PORT, 7, 0, TcpFlags::SYN);
        input.push(
            FrameSpec::new(IpSpec::v4(scanner, SERVER), syn)
                .build_padded(&[])
                .unwrap(),
        );
    }
    for k in 0..DATAGRAMS {
        let udp = L4Spec::udp(30_000 + k, 53);
        input.push(
            FrameSpec::new(IpSpec::v4(sprayer, SERVER), udp)
                .build_padded(&[0; 8])
                .unwrap(),
        );
    }
    // Six lab hosts, five flows each: all under the per-source limits, 30 over the segment's 12.
    for host in LAB {
        for k in 0..LAB_FLOWS_EACH {
            let udp = L4Spec::udp(40_000 + k, 53);
            let spec = FrameSpec::new(IpSpec::v4(flood::heavy_source(host), SERVER), udp);
            input.push(spec.build_padded(&[0; 8]).unwrap());
        }
    }
    let lab_flows = LAB.len() as u64 * u64::from(LAB_FLOWS_EACH);
    let limits = json!({"half_open_per_source": half_open, "new_per_second_per_source": per_second,
                        "connections_per_segment": per_segment});
    let replay = Replay::start("limits", &input, &policy(limits));
    let c = replay.counters_after(input.len() as u64);
    let refused = |reason: &str| c.totals.conntrack.get(reason).copied().unwrap_or(0);
    // The scanner's SYNs past its 8 half-open connections (admitted SYNs, 8, stay under the rate limit).
    assert_eq!(refused("half_open_per_source"), u64::from(SYNS) - half_open);
    // The sprayer's datagrams past 20 a second: the replay takes well under a second, so at most one more
    // window of 20 can open while it runs.
    let over_rate = refused("new_per_second_per_source");
    assert!(
        (u64::from(DATAGRAMS) - 2 * per_second..=u64::from(DATAGRAMS) - per_second)
            .contains(&over_rate),
        "{over_rate}"
    );
    assert_eq!(refused("connections_per_segment"), lab_flows - per_segment);
    assert_eq!(
        c.totals.drops.get("flood_limit").copied(),
        Some(u64::from(SYNS) - half_open + over_rate + lab_flows - per_segment)
    );
    assert_eq!(
        c.totals.flows_created,
        half_open + u64::from(DATAGRAMS) - over_rate + per_segment
    );
    let events: EventBatch = replay.ask(&Request::Events { max: None });
    let named = |limit: &str, src: Ipv4Addr| {
        events
            .events
            .iter()
            .filter(|e| {
                e.kind == protocol::EventKind::Denied
                    && e.limit.as_deref() == Some(limit)
                    && e.src == IpAddr::V4(src)
                    && e.verdict == protocol::Verdict::Deny
            })
            .count() as u64
    };
    assert_eq!(
        named("half_open_per_source", scanner),
        refused("half_open_per_source")
    );
    assert_eq!(named("new_per_second_per_source", sprayer), over_rate);
    replay.stop();
}
