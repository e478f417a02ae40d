//! A test bed of two network namespaces joined only through a Bulkhead dataplane.
//!
//! ```text
//!   netns <id>-a                bulkhead-dataplane                netns <id>-b
//!  [ tap a: 10.99.0.1 ] <-> net_tap0 ==worker== net_tap1 <-> [ tap b: 10.99.0.2 ]
//! ```
//!
//! The dataplane creates both TAP devices; the bed moves each into its own namespace, so the only path
//! between the namespaces is through the dataplane. Every bed has its own namespace names, interface names and
//! DPDK file prefix, so beds run in parallel; [`TestBed`]'s `Drop` stops the dataplane and deletes the
//! namespaces even when a test panics. Needs root.
//!
//! # Remote gateways
//!
//! With [`Options::remote`] the bed's dataplane also serves its remote control listener (`[remote_control]`)
//! on 127.0.0.1 at a port the kernel picks ([`TestBed::remote_addr`]), with a server certificate issued for
//! 127.0.0.1 by the given [`pki::Pki`] (made with the `openssl` commands of `docs/remote-gateways.md`), and
//! accepts clients by that CA and/or pins ([`remote::RemoteOptions`]). [`TestBed::ask_remote`] and
//! [`TestBed::control_remote`] send a request over TLS with a given client identity. Several beds (say, three
//! gateways for one control) share one `Pki`; [`Options::idle_sleep_max_us`] (1000 is a good value) lets
//! their workers yield the core when idle, so they run side by side on a small machine:
//!
//! ```no_run
//! # fn main() -> testbed::Result<()> {
//! use testbed::{pki::Pki, remote::RemoteOptions, Options, TestBed};
//! let pki = Pki::new(std::env::temp_dir().join("my-test-pki"))?;
//! let control = pki.client("control", 30)?;
//! let mut opts = Options::new("target/debug/bulkhead-dataplane");
//! opts.remote = Some(RemoteOptions::new(pki.clone()));
//! opts.idle_sleep_max_us = 1000;
//! let beds: Vec<TestBed> = (0..3).map(|_| TestBed::start(&opts)).collect::<Result<_, _>>()?;
//! let status: protocol::Status = beds[0].ask_remote(Some(&control), &protocol::Request::Status {})?;
//! // A control process is configured with beds[i].remote_addr(), pki.ca(), control.cert and control.key.
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod control;
pub mod pair;
pub mod pki;
pub mod remote;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use protocol::Request;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Address plan, the same in every bed (namespaces keep beds apart).
pub mod addr {
    pub const A4: &str = "10.99.0.1";
    pub const B4: &str = "10.99.0.2";
    pub const A6: &str = "fd00:99::1";
    pub const B6: &str = "fd00:99::2";
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("pcap: {0}")]
    Pcap(String),
    #[error("control socket: {0}")]
    Protocol(String),
    #[error("the dataplane refused ({}): {}", .0.code, .0.message)]
    Refused(protocol::ErrorReply),
    #[error("the dataplane exited before it was ready ({status}); its stderr:\n{stderr}")]
    DataplaneDied { status: String, stderr: String },
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error("TLS: {0}")]
    Tls(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `bulkhead-dataplane` binary.
    pub dataplane: PathBuf,
    /// Worker cores for the dataplane.
    pub workers: Vec<u32>,
    /// Counters report period of the dataplane, in ms.
    pub stats_interval_ms: u64,
    /// A policy document the dataplane loads at start (its `policy.bootstrap`). Without one it forwards
    /// nothing until a policy arrives on the control socket (fail-closed).
    pub policy: Option<PathBuf>,
    /// Serve the remote control listener too (see the crate docs).
    pub remote: Option<remote::RemoteOptions>,
    /// The workers' idle back-off (`[workers] idle_sleep_max_us`; 0: pure polling). With it, idle beds
    /// yield the cores they share.
    pub idle_sleep_max_us: u32,
    /// Make the dataplane a member of an HA pair: the body of its `[ha]` section (empty: the defaults). It
    /// starts as standby, forwarding nothing.
    pub ha: Option<String>,
}

impl Options {
    pub fn new(dataplane: impl Into<PathBuf>) -> Self {
        Options {
            dataplane: dataplane.into(),
            workers: vec![1],
            stats_interval_ms: 200,
            policy: None,
            remote: None,
            idle_sleep_max_us: 0,
            ha: None,
        }
    }
}

/// One side of the bed.
#[derive(Debug, Clone)]
pub struct Side {
    pub netns: String,
    pub iface: String,
}

impl Side {
    /// `cmd` run inside this side's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, program]);
        c
    }

    /// Runs `args` in the namespace and returns its output whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let mut c = self.command(args[0]);
        c.args(&args[1..]);
        c.output().map_err(|source| Error::Spawn {
            cmd: args.join(" "),
            source,
        })
    }

    /// Runs `args` in the namespace and fails unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> Result<Output> {
        let out = self.run(args)?;
        check(&args.join(" "), out)
    }

    /// Waits until something in this namespace listens on TCP `port` (a server started with [`Side::spawn`]).
    pub fn wait_listening(&self, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let filter = format!("sport = :{port}");
        while Instant::now() < deadline {
            let out = self.run(&["ss", "-H", "-l", "-t", "-n", &filter])?;
            if !out.stdout.is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::Timeout(
            Duration::from_secs(20),
            "a server to listen",
        ))
    }

    /// Sends raw Ethernet frames, byte for byte, out of this side's interface (AF_PACKET).
    pub fn send_frames(&self, frames: &[Vec<u8>]) -> Result<()> {
        let hex: String = frames
            .iter()
            .map(|f| f.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
            .collect();
        let script = script("send_frames.py");
        let mut c = self.command("python3");
        c.arg(&script)
            .arg(&self.iface)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|source| Error::Spawn {
            cmd: "send_frames.py".into(),
            source,
        })?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(hex.as_bytes())?;
        check("send_frames.py", child.wait_with_output()?).map(drop)
    }

    /// Starts capturing frames on this side's interface that match a tcpdump `filter`; returns once tcpdump
    /// is listening. VLAN tags the kernel moved into metadata are put back by libpcap, so frames are as on the
    /// wire.
    pub fn capture(&self, filter: &str, file: &Path) -> Result<Capture> {
        self.capture_with(filter, file, false)
    }

    /// A capture that hands every packet to tcpdump as it arrives (`--immediate-mode`) rather than in the
    /// kernel's blocks (up to a second late): for counting exactly what crossed, with [`Capture::stop`].
    pub fn capture_immediate(&self, filter: &str, file: &Path) -> Result<Capture> {
        self.capture_with(filter, file, true)
    }

    fn capture_with(&self, filter: &str, file: &Path, immediate: bool) -> Result<Capture> {
        let mut c = self.command("tcpdump");
        c.args(["-i", &self.iface, "-U", "-n"]);
        if immediate {
            c.arg("--immediate-mode");
        }
        c.arg("-w").arg(file).arg(filter);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|source| Error::Spawn {
            cmd: "tcpdump".into(),
            source,
        })?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let capture = Capture {
            child: Background(child),
            file: file.to_path_buf(),
        };
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| Error::Timeout(Duration::from_secs(10), "tcpdump to listen"))?;
        Ok(capture)
    }

    /// Starts `args` in the namespace in the background (killed when the returned guard drops).
    pub fn spawn(&self, args: &[&str]) -> Result<Background> {
        let mut c = self.command(args[0]);
        c.args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = c.spawn().map_err(|source| Error::Spawn {
            cmd: args.join(" "),
            source,
        })?;
        Ok(Background(child))
    }
}

/// A process started in a namespace; killed on drop.
#[derive(Debug)]
pub struct Background(pub Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running tcpdump.
#[derive(Debug)]
pub struct Capture {
    child: Background,
    file: PathBuf,
}

impl Capture {
    /// Stops tcpdump as an operator would (SIGINT: it writes what it holds and exits) and returns the frames.
    pub fn stop(self) -> Result<Vec<Vec<u8>>> {
        let mut child = self.child;
        sh(&["kill", "-INT", &child.0.id().to_string()])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.0.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(child);
        read_pcap(&self.file)
    }

    /// Waits until `count` frames were captured (or `timeout`), stops tcpdump and returns the frames.
    pub fn frames(self, count: usize, timeout: Duration) -> Result<Vec<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        loop {
            let frames = read_pcap(&self.file).unwrap_or_default();
            if frames.len() >= count || Instant::now() >= deadline {
                drop(self.child);
                return read_pcap(&self.file);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The frames of a pcap file.
pub fn read_pcap(path: &Path) -> Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path)?;
    let mut reader =
        pcap_file::pcap::PcapReader::new(file).map_err(|e| Error::Pcap(e.to_string()))?;
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        match packet {
            Ok(p) => frames.push(p.data.into_owned()),
            // tcpdump may be mid-write of the last record.
            Err(_) => break,
        }
    }
    Ok(frames)
}

/// A policy document shipped with the test bed (`testbed/policies/`).
/// The control request for the TCP flows with `port` at either end.
pub fn tcp_flows_request(port: u16) -> Request {
    Request::Flows {
        filter: protocol::FlowFilter {
            port: Some(port),
            proto: Some(6),
            ..Default::default()
        },
        limit: None,
    }
}

/// The states of a flow list's flows.
pub fn flow_states(list: protocol::FlowList) -> Vec<String> {
    list.flows.into_iter().map(|f| f.state).collect()
}

pub fn policy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(name)
}

/// A helper script shipped with the test bed.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Events the dataplane printed on stdout (one JSON object per line), shared with the reader thread.
#[derive(Debug, Default)]
struct Events {
    ready: Option<Value>,
    last_stats: Option<Value>,
    stopped: Option<Value>,
    closed: bool,
}

/// How the dataplane ended.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// Its final counters report (`"event": "stopped"`), if it printed one.
    pub report: Option<Value>,
    pub stderr: String,
}

/// A running bed. See the crate docs.
#[derive(Debug)]
pub struct TestBed {
    pub a: Side,
    pub b: Side,
    pub dir: PathBuf,
    child: Option<Child>,
    binary: PathBuf,
    events: Arc<(Mutex<Events>, Condvar)>,
    netns_created: Vec<String>,
    /// With a remote listener: the dataplane's server certificate, its name (`gw-<bed id>`, also its DNS
    /// subject alternative name besides IP 127.0.0.1) and the CA that checks it.
    server: Option<(pki::Identity, String, PathBuf)>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);
const NETNS_PREFIX: &str = "bulkhead-tb-";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl TestBed {
    /// Creates the namespaces, starts the dataplane on two TAP devices, and wires them in.
    pub fn start(opts: &Options) -> Result<TestBed> {
        remove_stale_namespaces();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let id = format!("{pid}-{n}");
        // Interface names are at most 15 bytes: "bh" + 8 hex digits + 2 + side letter.
        let tag = format!("{:x}{:02x}", pid, n % 256);
        let dir = std::env::temp_dir().join(format!("bulkhead-testbed-{id}"));
        std::fs::create_dir_all(&dir)?;
        let mut bed = TestBed {
            a: Side {
                netns: format!("{NETNS_PREFIX}{id}-a"),
                iface: format!("bh{tag}a"),
            },
            b: Side {
                netns: format!("{NETNS_PREFIX}{id}-b"),
                iface: format!("bh{tag}b"),
            },
            dir,
            child: None,
            binary: PathBuf::new(),
            events: Arc::default(),
            netns_created: Vec::new(),
            server: None,
        };
        for ns in [bed.a.netns.clone(), bed.b.netns.clone()] {
            sh(&["ip", "netns", "add", &ns])?;
            bed.netns_created.push(ns);
        }
        let config = bed.dir.join("dataplane.toml");
        let mut text = config_text(
            opts,
            &format!("tb-{id}"),
            &bed.dir,
            &bed.a.iface,
            &bed.b.iface,
        );
        if let Some(r) = &opts.remote {
            let name = format!("gw-{id}");
            let server = r.pki.server(&name, remote::LISTEN_ADDR, 30)?;
            text += &remote::config_section(r, &server);
            bed.server = Some((server, name, r.pki.ca()));
        }
        if let Some(ha) = &opts.ha {
            text += &format!("\n[ha]\n{ha}\n");
        }
        std::fs::write(&config, text)?;
        bed.binary = opts.dataplane.clone();
        bed.start_dataplane(&opts.dataplane, &config)?;
        bed.wire()?;
        Ok(bed)
    }

    /// Moves the dataplane's TAP devices into the namespaces and addresses them.
    fn wire(&self) -> Result<()> {
        for side in [&self.a, &self.b] {
            sh(&["ip", "link", "set", &side.iface, "netns", &side.netns])?;
        }
        for (side, v4, v6) in [(&self.a, addr::A4, addr::A6), (&self.b, addr::B4, addr::B6)] {
            side.ok(&["ip", "link", "set", "lo", "up"])?;
            side.ok(&["ip", "addr", "add", &format!("{v4}/24"), "dev", &side.iface])?;
            let v6 = format!("{v6}/64");
            side.ok(&["ip", "-6", "addr", "add", &v6, "dev", &side.iface, "nodad"])?;
            side.ok(&["ip", "link", "set", &side.iface, "up"])?;
        }
        Ok(())
    }

    /// Stops the dataplane and starts it again with the same config and state directory (its TAP devices
    /// are recreated and wired in again). Returns how the first process ended.
    pub fn restart(&mut self) -> Result<Stopped> {
        let stopped = self.stop()?;
        self.start_again()?;
        Ok(stopped)
    }

    /// Starts the dataplane again with the bed's config and state directory, and wires its new TAP devices in.
    fn start_again(&mut self) -> Result<()> {
        self.events = Arc::default();
        let config = self.dir.join("dataplane.toml");
        let binary = self.binary.clone();
        self.start_dataplane(&binary, &config)?;
        self.wire()
    }

    /// Kills the dataplane with SIGKILL (no shutdown of any kind) and starts it again with the same config and
    /// state directory, wired in as before. Returns how the first process ended.
    pub fn kill_and_restart(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(Error::Timeout(
                Duration::ZERO,
                "a running dataplane (already stopped)",
            ));
        };
        child.kill()?;
        let status = child.wait()?;
        self.start_again()?;
        Ok(status)
    }

    /// The dataplane's process id, while it runs.
    pub fn dataplane_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn start_dataplane(&mut self, binary: &Path, config: &Path) -> Result<()> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dataplane.stderr"))?;
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: binary.display().to_string(),
                source,
            })?;
        let stdout = child.stdout.take().expect("piped");
        self.child = Some(child);
        let events = Arc::clone(&self.events);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let (lock, cv) = &*events;
                let mut e = lock.lock().unwrap_or_else(|p| p.into_inner());
                match v["event"].as_str() {
                    Some("ready") => e.ready = Some(v),
                    Some("stats") => e.last_stats = Some(v),
                    Some("stopped") => e.stopped = Some(v),
                    _ => {}
                }
                cv.notify_all();
            }
            let (lock, cv) = &*events;
            lock.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
            cv.notify_all();
        });
        let (lock, cv) = &*self.events;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut e = lock.lock().unwrap_or_else(|p| p.into_inner());
        while e.ready.is_none() {
            if e.closed {
                drop(e);
                let status = self.child.as_mut().map(|c| c.wait()).transpose()?;
                return Err(Error::DataplaneDied {
                    status: status.map_or("unknown".into(), |s| s.to_string()),
                    stderr: self.stderr(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(READY_TIMEOUT, "the dataplane to be ready"));
            }
            e = cv
                .wait_timeout(e, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// The dataplane's `ready` event (ports, drivers, MACs, workers).
    pub fn ready(&self) -> Value {
        self.events
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ready
            .clone()
            .unwrap_or_default()
    }

    /// Waits for a counters report that satisfies `pred` (reports arrive every `stats_interval_ms`).
    pub fn wait_stats(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let (lock, cv) = &*self.events;
        let deadline = Instant::now() + timeout;
        let mut e = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = e.last_stats.as_ref().filter(|v| pred(v)) {
                return Ok(v.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || e.closed {
                return Err(Error::Timeout(timeout, "a matching counters report"));
            }
            e = cv
                .wait_timeout(e, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The dataplane's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Sends one request on the control socket and returns the whole answer line as JSON (for tests that
    /// look at the wire itself).
    pub fn control(&self, request: &Request) -> Result<Value> {
        let reply = self.exchange(request)?;
        serde_json::from_str(&reply).map_err(|e| Error::Protocol(format!("{e}: {reply:?}")))
    }

    /// Sends one request on the control socket and reads its result as `T`, the result type of its op; a
    /// refusal is an [`Error::Refused`].
    pub fn ask<T: DeserializeOwned>(&self, request: &Request) -> Result<T> {
        decode(&self.exchange(request)?)
    }

    /// Sends `request`, returns the answer line.
    fn exchange(&self, request: &Request) -> Result<String> {
        exchange(&self.control_socket(), request, Duration::from_secs(30))
    }

    /// Where the remote listener listens (from the `ready` event), if the bed has one.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.ready()["remote_control"].as_str()?.parse().ok()
    }

    /// The dataplane's server certificate and key (replace them and [`TestBed::reload`] to rotate them).
    pub fn server_identity(&self) -> Option<&pki::Identity> {
        self.server.as_ref().map(|(id, _, _)| id)
    }

    /// The name in the dataplane's server certificate (a DNS subject alternative name; the certificate also
    /// holds IP 127.0.0.1, the address [`TestBed::remote_addr`] gives).
    pub fn remote_name(&self) -> Option<&str> {
        self.server.as_ref().map(|(_, name, _)| name.as_str())
    }

    /// Sends one request over the remote listener presenting `identity` (`None`: no client certificate), the
    /// dataplane's certificate checked against the bed's CA; the whole answer line as JSON.
    pub fn control_remote(
        &self,
        identity: Option<&pki::Identity>,
        request: &Request,
    ) -> Result<Value> {
        let reply = self.exchange_remote(identity, request)?;
        serde_json::from_str(&reply).map_err(|e| Error::Protocol(format!("{e}: {reply:?}")))
    }

    /// [`TestBed::control_remote`], the result read as `T`; a refusal is an [`Error::Refused`].
    pub fn ask_remote<T: DeserializeOwned>(
        &self,
        identity: Option<&pki::Identity>,
        request: &Request,
    ) -> Result<T> {
        decode(&self.exchange_remote(identity, request)?)
    }

    fn exchange_remote(
        &self,
        identity: Option<&pki::Identity>,
        request: &Request,
    ) -> Result<String> {
        let (Some(addr), Some((_, _, ca))) = (self.remote_addr(), &self.server) else {
            return Err(Error::Tls("the bed has no remote listener".into()));
        };
        remote::exchange(addr, ca, identity, &protocol::encode_request(None, request))
    }

    /// Sends the dataplane SIGHUP (it reads its remote listener's certificates again).
    pub fn reload(&self) -> Result<()> {
        let pid = self
            .dataplane_pid()
            .ok_or(Error::Timeout(Duration::ZERO, "a running dataplane"))?;
        sh(&["kill", "-HUP", &pid.to_string()]).map(drop)
    }

    /// Everything the dataplane wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("dataplane.stderr")).unwrap_or_default()
    }

    /// Asks the dataplane to stop (SIGTERM) and returns how it ended, with its final counters.
    pub fn stop(&mut self) -> Result<Stopped> {
        let Some(mut child) = self.child.take() else {
            return Err(Error::Timeout(
                Duration::ZERO,
                "a running dataplane (already stopped)",
            ));
        };
        let status = terminate(&mut child, STOP_GRACE)?;
        // The reader thread sees EOF once the process is gone.
        let (lock, cv) = &*self.events;
        let mut e = lock.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !e.closed && Instant::now() < deadline {
            e = cv
                .wait_timeout(e, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let report = e.stopped.clone();
        drop(e);
        Ok(Stopped {
            status,
            report,
            stderr: self.stderr(),
        })
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = terminate(&mut child, STOP_GRACE);
        }
        for ns in self.netns_created.drain(..) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How long [`terminate`] waits after SIGTERM by default.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// SIGTERM, then SIGKILL if the process has not exited within `grace`; its exit status.
pub fn terminate(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    Ok(child.wait()?)
}

/// Deletes namespaces left by beds whose process is gone (a test run killed with SIGKILL, say).
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// An answer line's result as `T`; a refusal is an [`Error::Refused`].
/// Sends `request` to the control socket at `socket` (any dataplane's, not only a bed's), waits up to `timeout`
/// for the answer and decodes it.
pub fn ask_socket<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T> {
    decode(&exchange(socket, request, timeout)?)
}

/// One request line to the control socket at `socket`, its answer line back.
fn exchange(socket: &Path, request: &Request, timeout: Duration) -> Result<String> {
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = protocol::encode_request(None, request);
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    Ok(reply)
}

/// A free TCP port on 127.0.0.1 (chosen by the kernel).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn decode<T: DeserializeOwned>(reply: &str) -> Result<T> {
    match protocol::decode_reply(reply) {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(refusal)) => Err(Error::Refused(refusal)),
        Err(e) => Err(Error::Protocol(format!("{e}: {reply:?}"))),
    }
}

fn check(cmd: &str, out: Output) -> Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            cmd: cmd.into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
        })
    }
}

/// Runs a command in the current namespace and fails unless it succeeds.
pub fn sh(args: &[&str]) -> Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|source| Error::Spawn {
            cmd: args.join(" "),
            source,
        })?;
    check(&args.join(" "), out)
}

/// The dataplane config of a bed: small memory, no hugepages, two TAP ports linked together, state and control
/// socket inside the bed's directory.
pub fn config_text(
    opts: &Options,
    file_prefix: &str,
    dir: &Path,
    iface_a: &str,
    iface_b: &str,
) -> String {
    let cores = opts
        .workers
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let bootstrap = opts.policy.as_ref().map_or(String::new(), |p| {
        format!("bootstrap = {:?}\n", p.display().to_string())
    });
    let state = dir.join("state").display().to_string();
    let socket = dir.join("control.sock").display().to_string();
    format!(
        r#"# Generated by the test bed.
[eal]
file_prefix = "{file_prefix}"
main_core = 0
hugepages = false
memory_mb = 256
log_level = "warning"

[workers]
cores = [{cores}]
idle_sleep_max_us = {idle_sleep_max_us}

[mempool]
mbufs = 8191
cache = 128

[rings]
rx = 512
tx = 512

[[ports]]
name = "a"
device = "net_tap0,iface={iface_a}"

[[ports]]
name = "b"
device = "net_tap1,iface={iface_b}"

[[links]]
ports = ["a", "b"]

[stats]
interval_ms = {interval}

[policy]
state_dir = {state:?}
control_socket = {socket:?}
{bootstrap}
[conntrack]
flows_per_worker = 16384
"#,
        interval = opts.stats_interval_ms,
        idle_sleep_max_us = opts.idle_sleep_max_us,
    )
}
