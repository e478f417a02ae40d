//! An HA pair between two switched segments, with keepalived deciding which member is active.
//!
//! ```text
//!   netns <id>-a                 netns <id>-g1 (member 1's management side)              netns <id>-b
//!  [ br0 10.99.0.1 ]--g1--ea--[bra]--bha== dataplane 1 ==bhb--[brb]--eb--g1--[ br0 10.99.0.2 ]
//!        |  (switch)              ha0 192.168.255.1 ── keepalived, sync                    (switch) |
//!        |                          |                                                               |
//!        |                   netns <id>-ha [ br0 ]  (the HA link's switch)                          |
//!        |                          |                                                               |
//!        +------------g2--ea--[bra]--bha== dataplane 2 ==bhb--[brb]--eb--g2------------------------+
//!                                 ha0 192.168.255.2 ── keepalived, sync
//! ```
//!
//! Each side is a namespace whose Linux bridge `br0` is the switch and holds the side's host address. Each
//! member has a namespace of its own: its dataplane runs there, so the TAP devices it creates stay there and
//! `net_tap` reads and sets their links (docs/ha.md, "Virtual devices"); a two-port bridge that learns nothing
//! (a hub) joins each TAP to a veth whose peer is a port of the side's switch. The switch ports facing the pair do not learn: the switch
//! floods traffic toward the pair, so after a member dies or hands over no stale forwarding entry points at it
//! (the bed cannot drop a switch port's carrier when a member dies). No port isolation: the members hear each
//! other on the segments. The members' `ha0` meet on a bridge in a namespace of its own (the HA link's switch),
//! so the link can be cut without either member losing its carrier ([`Pair::cut_ha_link`]). keepalived runs
//! in each member's namespace with the configuration of docs/ha.md, taken from the document as it stands
//! ([`keepalived_config`]). Strict TCP tracking. Everything (keepalived, dataplanes, namespaces, files) is torn
//! down on drop; a bed left by a killed test process is removed by the next one.
//!
//! Needs root, keepalived, tcpdump, curl, ping, python3 and sha256sum.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protocol::{CountersReport, Request, Role, Status, SyncState, SyncStatus};
use serde::de::DeserializeOwned;

use crate::{addr, check, config_text, sh, Background, Capture, Error, Options, Result, Side};

/// The address keepalived holds on the master's `ha0` (the doc's `virtual_ipaddress`).
pub const VIP: &str = "192.168.255.3";
const NETNS_PREFIX: &str = "bulkhead-pair-";
/// Where each member receives the connection-state sync, on its `ha0`.
const SYNC_PORT: u16 = 7400;
/// keepalived's priorities: member 1 is preferred (the doc's value), member 2 runs `OTHER_PRIORITY`.
const PREFERRED_PRIORITY: u32 = 150;
const OTHER_PRIORITY: u32 = 100;
/// Long enough for keepalived, a failover or a bulk resync on a loaded machine; a wait that runs out is a
/// failure with the bed's state in its message.
pub const WAIT: Duration = Duration::from_secs(60);

/// What to build.
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// The `bulkhead-dataplane` binary (absolute: keepalived's scripts run it).
    pub dataplane: PathBuf,
    /// More lines for each member's `[ha]` section (the sync addresses and the track file are the bed's).
    pub ha: String,
}

impl PairOptions {
    pub fn new(dataplane: impl Into<PathBuf>) -> Self {
        PairOptions {
            dataplane: dataplane.into(),
            ha: "link_check_ms = 20\nsync_refresh_ms = 200".into(),
        }
    }
}

/// One member: its namespace, dataplane and keepalived.
#[derive(Debug)]
pub struct Member {
    /// `g1` or `g2`.
    pub name: String,
    /// The member's namespace (`iface`: its HA link, `ha0`).
    pub ns: Side,
    pub dir: PathBuf,
    binary: PathBuf,
    dataplane: Option<Child>,
    keepalived: Option<Child>,
}

impl Member {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub fn track_file(&self) -> PathBuf {
        self.dir.join("ha-links")
    }

    /// The dataplane's process id, while it runs.
    pub fn dataplane_pid(&self) -> Option<u32> {
        self.dataplane.as_ref().map(Child::id)
    }

    /// `request`'s answer, `None` if there is none (a dead or starting dataplane) or a refusal.
    pub fn try_ask<T: DeserializeOwned>(&self, request: &Request) -> Option<T> {
        crate::ask_socket(&self.socket(), request, Duration::from_secs(10)).ok()
    }

    pub fn ask<T: DeserializeOwned>(&self, request: &Request) -> Result<T> {
        self.try_ask(request)
            .ok_or_else(|| Error::Protocol(format!("{}: no answer to {request:?}", self.name)))
    }

    pub fn status(&self) -> Option<Status> {
        self.try_ask(&Request::Status {})
    }

    /// The dataplane's role (`None`: it does not answer).
    pub fn role(&self) -> Option<Role> {
        Some(self.status()?.ha?.role)
    }

    pub fn sync(&self) -> Option<SyncStatus> {
        self.status()?.ha?.sync
    }

    pub fn counters(&self) -> Option<CountersReport> {
        self.try_ask(&Request::Counters {})
    }

    /// The TCP flows on `port` and their states (empty when the dataplane does not answer).
    pub fn tcp_states(&self, port: u16) -> Vec<String> {
        self.try_ask(&crate::tcp_flows_request(port))
            .map(crate::flow_states)
            .unwrap_or_default()
    }

    /// Whether keepalived holds the pair's address on this member (it is VRRP master).
    pub fn is_master(&self) -> bool {
        self.ns
            .run(&["ip", "-o", "addr", "show", "dev", "ha0"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {VIP}/")))
            .unwrap_or(false)
    }

    /// What keepalived logged so far.
    pub fn keepalived_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("keepalived.log")).unwrap_or_default()
    }

    pub fn dataplane_stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("dataplane.stderr")).unwrap_or_default()
    }

    /// Starts the dataplane in the member's namespace (it starts as standby), waits until it answers, and
    /// joins its TAP devices to the bridges toward the switches.
    pub fn start_dataplane(&mut self) -> Result<()> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dataplane.stderr"))?;
        let mut c = self.ns.command(&self.binary.display().to_string());
        c.arg("--config")
            .arg(self.dir.join("dataplane.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        self.dataplane = Some(c.spawn().map_err(|source| Error::Spawn {
            cmd: "bulkhead-dataplane".into(),
            source,
        })?);
        let deadline = Instant::now() + WAIT;
        while self.status().is_none() {
            if let Some(status) = self.dataplane.as_mut().and_then(|c| c.try_wait().ok()?) {
                self.dataplane = None;
                return Err(Error::DataplaneDied {
                    status: status.to_string(),
                    stderr: self.dataplane_stderr(),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(WAIT, "a member's dataplane to answer"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for (tap, bridge) in [("bha", "bra"), ("bhb", "brb")] {
            self.ns.ok(&["ip", "link", "set", tap, "master", bridge])?;
            self.ns.ok(&["ip", "link", "set", tap, "up"])?;
        }
        Ok(())
    }

    /// SIGKILL of the dataplane: no shutdown of any kind (its TAP devices vanish with it).
    pub fn kill_dataplane(&mut self) -> Result<()> {
        if let Some(mut child) = self.dataplane.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts keepalived in the member's namespace, in the foreground, with the doc's configuration and pid
    /// files of its own (no interference with a system keepalived).
    pub fn start_keepalived(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("keepalived.log"))?;
        // Line-buffered: its log is readable while it runs (it explains a failed wait).
        let mut c = self.ns.command("stdbuf");
        c.args([
            "-oL",
            "-eL",
            "keepalived",
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
        ])
        .arg("--use-file")
        .arg(self.dir.join("keepalived.conf"))
        .arg("--pid")
        .arg(self.dir.join("keepalived.pid"))
        .arg("--vrrp_pid")
        .arg(self.dir.join("keepalived-vrrp.pid"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        self.keepalived = Some(c.spawn().map_err(|source| Error::Spawn {
            cmd: "keepalived".into(),
            source,
        })?);
        Ok(())
    }

    /// Stops keepalived as a maintenance would (SIGTERM: it tells the peer, which takes over, and runs its
    /// `notify_stop`); then, if anything is left of it, kills it.
    pub fn stop_keepalived(&mut self) -> Result<()> {
        let Some(mut child) = self.keepalived.take() else {
            return Ok(());
        };
        let vrrp = std::fs::read_to_string(self.dir.join("keepalived-vrrp.pid")).ok();
        crate::terminate(&mut child, Duration::from_secs(10))?;
        // The VRRP child ends with its parent; after a SIGKILL of the parent it would not.
        if let Some(pid) = vrrp.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        Ok(())
    }

    /// Sets data port `port` (0: side a, 1: side b) of this member up or down, as a lost cable would: its TAP
    /// device, in the member's namespace, where the dataplane reads its link.
    pub fn set_data_link(&self, port: usize, up: bool) -> Result<()> {
        let tap = ["bha", "bhb"][port];
        self.ns
            .ok(&["ip", "link", "set", tap, if up { "up" } else { "down" }])
            .map(drop)
    }
}

/// Two members between two switched segments. See the module docs.
#[derive(Debug)]
pub struct Pair {
    /// The hosts' sides: `a` (10.99.0.1) and `b` (10.99.0.2), each on its switch's `br0`.
    pub sides: [Side; 2],
    pub members: [Member; 2],
    /// The HA link's switch.
    ha: Side,
    pub dir: PathBuf,
    /// `<process id>-<bed number>`: in the names of the bed's namespaces, directory and DPDK file prefixes.
    id: String,
    netns: Vec<String>,
}

impl Pair {
    /// Builds the bed, starts both dataplanes and both keepalived, and waits until member 1 is active (VRRP
    /// master, and its dataplane told so), member 2 standby, and the sync in step.
    pub fn start(opts: &PairOptions) -> Result<Pair> {
        remove_stale_beds();
        for tool in [
            "keepalived",
            "tcpdump",
            "curl",
            "ping",
            "python3",
            "sha256sum",
            "stdbuf",
        ] {
            which(tool)?;
        }
        // Unique per process and bed: a bed's name is never reused while anything of an earlier one may linger.
        let id = format!("{}-{}", std::process::id(), unique());
        let dir = std::env::temp_dir().join(format!("bulkhead-pair-{id}"));
        std::fs::create_dir_all(&dir)?;
        let ns = |n: &str| format!("{NETNS_PREFIX}{id}-{n}");
        let side = |n: &str| Side {
            netns: ns(n),
            iface: "br0".into(),
        };
        let members = [1, 2].map(|n| Member {
            name: format!("g{n}"),
            ns: Side {
                netns: ns(&format!("g{n}")),
                iface: "ha0".into(),
            },
            dir: dir.join(format!("g{n}")),
            binary: opts.dataplane.clone(),
            dataplane: None,
            keepalived: None,
        });
        let mut pair = Pair {
            sides: [side("a"), side("b")],
            members,
            ha: side("ha"),
            dir,
            id,
            netns: Vec::new(),
        };
        pair.build(opts)?;
        pair.wait_active(0)?;
        pair.wait_in_sync(0)?;
        Ok(pair)
    }

    fn build(&mut self, opts: &PairOptions) -> Result<()> {
        let policy = strict_policy(&self.dir)?;
        let all: Vec<Side> = self
            .sides
            .iter()
            .chain([&self.ha])
            .chain(self.members.iter().map(|m| &m.ns))
            .cloned()
            .collect();
        for s in &all {
            sh(&["ip", "netns", "add", &s.netns])?;
            self.netns.push(s.netns.clone());
            s.ok(&["ip", "link", "set", "lo", "up"])?;
        }
        // Switches: the hosts' addresses on the bridges themselves.
        for (s, host) in self.sides.iter().zip([addr::A4, addr::B4]) {
            s.ok(&["ip", "link", "add", "br0", "type", "bridge"])?;
            s.ok(&["ip", "addr", "add", &format!("{host}/24"), "dev", "br0"])?;
            s.ok(&["ip", "link", "set", "br0", "up"])?;
        }
        self.ha
            .ok(&["ip", "link", "add", "br0", "type", "bridge"])?;
        self.ha.ok(&["ip", "link", "set", "br0", "up"])?;
        for (i, m) in self.members.iter().enumerate() {
            let g = &m.ns;
            // The bridges of a member's namespace say nothing of their own on the segments.
            for key in ["all", "default"] {
                g.ok(&[
                    "sysctl",
                    "-q",
                    "-w",
                    &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
                ])?;
            }
            for (side, (veth, bridge)) in self.sides.iter().zip([("ea", "bra"), ("eb", "brb")]) {
                g.ok(&[
                    "ip", "link", "add", veth, "type", "veth", "peer", "name", &m.name,
                ])?;
                g.ok(&["ip", "link", "set", &m.name, "netns", &side.netns])?;
                // A hub (nothing learned): a frame the standby saw arrive from the switch must not teach it that
                // the destination is on the switch's side, or once active it would drop that destination's
                // frames before they reach its TAP.
                g.ok(&[
                    "ip",
                    "link",
                    "add",
                    bridge,
                    "type",
                    "bridge",
                    "ageing_time",
                    "0",
                ])?;
                g.ok(&["ip", "link", "set", veth, "master", bridge])?;
                g.ok(&["ip", "link", "set", veth, "up"])?;
                g.ok(&["ip", "link", "set", bridge, "up"])?;
                side.ok(&["ip", "link", "set", &m.name, "master", "br0"])?;
                side.ok(&["bridge", "link", "set", "dev", &m.name, "learning", "off"])?;
                side.ok(&["ip", "link", "set", &m.name, "up"])?;
            }
            g.ok(&[
                "ip", "link", "add", "ha0", "type", "veth", "peer", "name", &m.name,
            ])?;
            g.ok(&["ip", "link", "set", &m.name, "netns", &self.ha.netns])?;
            self.ha
                .ok(&["ip", "link", "set", &m.name, "master", "br0"])?;
            self.ha.ok(&["ip", "link", "set", &m.name, "up"])?;
            g.ok(&[
                "ip",
                "addr",
                "add",
                &format!("{}/29", ha_addr(i)),
                "dev",
                "ha0",
            ])?;
            g.ok(&["ip", "link", "set", "ha0", "up"])?;
        }
        for i in 0..2 {
            let m = &self.members[i];
            std::fs::create_dir_all(&m.dir)?;
            let mut dp = Options::new(&opts.dataplane);
            dp.policy = Some(policy.clone());
            dp.idle_sleep_max_us = 1000;
            let mut text = config_text(
                &dp,
                &format!("pair-{}-{}", self.id, m.name),
                &m.dir,
                "bha",
                "bhb",
            );
            text += &format!(
                "\n[ha]\n{}\ntrack_file = {:?}\nsync_listen = \"{}:{SYNC_PORT}\"\nsync_peer = \"{}:{SYNC_PORT}\"\n",
                opts.ha,
                m.track_file().display().to_string(),
                ha_addr(i),
                ha_addr(1 - i),
            );
            std::fs::write(m.dir.join("dataplane.toml"), text)?;
            let priority = [PREFERRED_PRIORITY, OTHER_PRIORITY][i];
            let conf = keepalived_config(&opts.dataplane, &m.socket(), &m.track_file(), priority)?;
            std::fs::write(m.dir.join("keepalived.conf"), conf)?;
        }
        for m in &mut self.members {
            m.start_dataplane()?;
        }
        for m in &mut self.members {
            m.start_keepalived()?;
        }
        Ok(())
    }

    /// Side a's and side b's hosts.
    pub fn a(&self) -> &Side {
        &self.sides[0]
    }

    pub fn b(&self) -> &Side {
        &self.sides[1]
    }

    /// The roles the dataplanes report and whether keepalived is master on each, for messages.
    pub fn describe(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "{}: role {:?}, master {}, sync {:?}",
                    m.name,
                    m.role(),
                    m.is_master(),
                    m.sync().map(|s| (s.state, s.lag, s.lost))
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Waits (up to [`WAIT`]) until `ready` holds; the error says what the bed looked like.
    pub fn wait_for(&self, what: &str, ready: impl Fn(&Pair) -> bool) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while !ready(self) {
            if Instant::now() > deadline {
                let logs: String = self
                    .members
                    .iter()
                    .map(|m| {
                        let log = m.keepalived_log();
                        let tail: Vec<&str> = log.lines().rev().take(15).collect();
                        format!(
                            "\n{} keepalived (last lines, newest first):\n{}",
                            m.name,
                            tail.join("\n")
                        )
                    })
                    .collect();
                return Err(Error::Protocol(format!(
                    "waiting for {what}: {}{logs}",
                    self.describe()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits until member `i` is VRRP master with its dataplane active, and the other member's dataplane (if
    /// it answers) is standby.
    pub fn wait_active(&self, i: usize) -> Result<()> {
        self.wait_for(&format!("{} active", self.members[i].name), |p| {
            let other = &p.members[1 - i];
            p.members[i].is_master()
                && p.members[i].role() == Some(Role::Active)
                && !other.is_master()
                && other.role() != Some(Role::Active)
        })
    }

    /// Waits until the sync of active member `i` to its peer is in step.
    pub fn wait_in_sync(&self, i: usize) -> Result<()> {
        self.wait_for("the sync in step", |p| {
            p.members[i]
                .sync()
                .is_some_and(|s| s.sending && s.state == SyncState::InSync)
        })
    }

    /// The member whose dataplane reports itself active, if exactly one does.
    pub fn active(&self) -> Option<usize> {
        let active: Vec<usize> = (0..2)
            .filter(|&i| self.members[i].role() == Some(Role::Active))
            .collect();
        (active.len() == 1).then(|| active[0])
    }

    /// SIGKILL of member `i`'s dataplane.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        self.members[i].kill_dataplane()
    }

    /// Starts member `i`'s dataplane again (as standby; keepalived tells it its role once it answers).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.members[i].start_dataplane()
    }

    /// Cuts the HA link between the members (VRRP and the sync): both ends keep their carrier, nothing
    /// crosses, as when the switch between them fails.
    pub fn cut_ha_link(&self) -> Result<()> {
        for m in &self.members {
            self.ha.ok(&["ip", "link", "set", &m.name, "nomaster"])?;
        }
        Ok(())
    }

    pub fn restore_ha_link(&self) -> Result<()> {
        for m in &self.members {
            self.ha
                .ok(&["ip", "link", "set", &m.name, "master", "br0"])?;
        }
        Ok(())
    }

    /// Captures of RSTs on both sides' switches (see [`assert_no_rst`]).
    pub fn capture_rsts(&self) -> Result<[Capture; 2]> {
        let [a, b] = &self.sides;
        Ok([
            a.capture("tcp[tcpflags] & tcp-rst != 0", &self.dir.join("rst-a.pcap"))?,
            b.capture("tcp[tcpflags] & tcp-rst != 0", &self.dir.join("rst-b.pcap"))?,
        ])
    }

    /// Starts a ping flood from side a to side b (an echo request every `interval`), with a capture of the
    /// replies arriving in side a for the gap.
    pub fn ping_flood(&self, interval: Duration) -> Result<PingFlood> {
        let file = self.dir.join(format!("ping-{}.pcap", unique()));
        let capture = self
            .a()
            .capture_immediate(&format!("icmp and host {}", addr::B4), &file)?;
        let interval = format!("{:.3}", interval.as_secs_f64());
        let mut c = self.a().command("ping");
        c.args(["-q", "-f", "-i", &interval, "-W", "1", addr::B4])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().map_err(|source| Error::Spawn {
            cmd: "ping".into(),
            source,
        })?;
        Ok(PingFlood {
            child: Some(child),
            capture: Some(capture),
            file,
        })
    }

    /// Starts `count` interactive TCP sessions from side a to an echo server in side b on `port`, a line
    /// every `interval_ms` each, and waits until active member `via` tracks them all established.
    pub fn sessions(
        &self,
        via: usize,
        port: u16,
        count: usize,
        interval_ms: u64,
    ) -> Result<Sessions> {
        let script = crate::script("tcp_sessions.py").display().to_string();
        let port_s = port.to_string();
        let server = self
            .b()
            .spawn(&["python3", &script, "serve", addr::B4, &port_s])?;
        self.b().wait_listening(port)?;
        let stop = self.dir.join(format!("sessions-{port}.stop"));
        let _ = std::fs::remove_file(&stop);
        let mut c = self.a().command("python3");
        c.args([
            &script,
            "run",
            addr::B4,
            &port_s,
            &count.to_string(),
            &interval_ms.to_string(),
        ])
        .arg(&stop)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let client = c.spawn().map_err(|source| Error::Spawn {
            cmd: "tcp_sessions.py".into(),
            source,
        })?;
        let sessions = Sessions {
            _server: server,
            client: Some(client),
            stop,
            port,
        };
        let m = &self.members[via];
        self.wait_for("the sessions established on the active", |_| {
            let states = m.tcp_states(port);
            states.len() == count && states.iter().all(|s| s == "established")
        })?;
        Ok(sessions)
    }

    /// Opens new UDP flows from side a toward side b as fast as one Python process can for `seconds`, one
    /// datagram each; answers the datagrams sent.
    pub fn udp_flows(&self, seconds: f64) -> Result<u64> {
        let script = crate::script("udp_flows.py").display().to_string();
        let out = self
            .a()
            .ok(&["python3", &script, addr::B4, &seconds.to_string()])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .map_err(|_| Error::Protocol(format!("udp_flows.py printed {text:?}")))
    }

    /// Starts an HTTP download of `mib` MiB of random bytes from side b to side a, at most `rate` (curl's
    /// `--limit-rate`, e.g. `20M`) bytes per second.
    pub fn download(&self, mib: usize, rate: &str, port: u16) -> Result<Download> {
        let root = self.dir.join("www");
        std::fs::create_dir_all(&root)?;
        let source = root.join("file");
        check(
            "head -c /dev/urandom",
            Command::new("head")
                .args(["-c", &format!("{mib}M"), "/dev/urandom"])
                .stdout(std::fs::File::create(&source)?)
                .output()?,
        )?;
        let port_s = port.to_string();
        let root_s = root.display().to_string();
        let server = self.b().spawn(&[
            "python3",
            "-m",
            "http.server",
            "--bind",
            addr::B4,
            "-d",
            &root_s,
            &port_s,
        ])?;
        self.b().wait_listening(port)?;
        let target = self.dir.join("downloaded");
        let url = format!("http://{}:{port}/file", addr::B4);
        let target_s = target.display().to_string();
        let client = self.a().spawn(&[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "120",
            "--limit-rate",
            rate,
            "-o",
            &target_s,
            &url,
        ])?;
        Ok(Download {
            _server: server,
            client,
            source,
            target,
            size: (mib as u64) << 20,
        })
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.stop_keepalived();
            if let Some(mut child) = m.dataplane.take() {
                let _ = crate::terminate(&mut child, Duration::from_secs(10));
            }
        }
        for ns in self.netns.drain(..) {
            kill_namespace(&ns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills what still runs in namespace `ns` (by process id) and deletes it.
fn kill_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Removes beds whose test process is gone (killed with SIGKILL, say): their processes and namespaces.
fn remove_stale_beds() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            kill_namespace(name);
            if let Some(id) = name
                .strip_prefix(NETNS_PREFIX)
                .and_then(|r| r.rsplit_once('-'))
            {
                let _ = std::fs::remove_dir_all(
                    std::env::temp_dir().join(format!("bulkhead-pair-{}", id.0)),
                );
            }
        }
    }
}

fn ha_addr(i: usize) -> String {
    format!("192.168.255.{}", i + 1)
}

fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A missing tool is an error (a test that needs it fails).
fn which(tool: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    let sbin = ["/usr/sbin", "/sbin"]
        .iter()
        .any(|d| Path::new(d).join(tool).is_file());
    if found || sbin {
        Ok(())
    } else {
        Err(Error::Spawn {
            cmd: tool.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not installed"),
        })
    }
}

/// The open policy with strict TCP tracking: a connection the new active has no state for does not continue.
fn strict_policy(dir: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(crate::policy_file("open.json"))?;
    let mut policy: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Protocol(e.to_string()))?;
    policy["settings"]["tcp_strictness"] = "strict".into();
    let path = dir.join("strict.json");
    std::fs::write(&path, policy.to_string())?;
    Ok(path)
}

/// The documentation whose keepalived configuration the bed runs.
pub fn doc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ha.md")
}

/// The keepalived configuration of docs/ha.md (the block after `<!-- keepalived: member -->`) for a member:
/// the doc's binary, socket and track file replaced by the bed's, and its priority by `priority`. Every
/// replaced string must be in the block, so the bed runs what the doc shows or fails.
pub fn keepalived_config(
    binary: &Path,
    socket: &Path,
    track: &Path,
    priority: u32,
) -> Result<String> {
    let text = std::fs::read_to_string(doc())?;
    let marker = "<!-- keepalived: member -->\n```\n";
    let start = text
        .find(marker)
        .map(|i| i + marker.len())
        .ok_or_else(|| Error::Protocol(format!("no keepalived block in {}", doc().display())))?;
    let len = text[start..]
        .find("```")
        .ok_or_else(|| Error::Protocol("the keepalived block is not closed".into()))?;
    let mut conf = text[start..start + len].to_string();
    for (from, to) in [
        ("/usr/bin/bulkhead-dataplane", binary.display().to_string()),
        ("/run/bulkhead/dataplane.sock", socket.display().to_string()),
        ("/run/bulkhead/ha-links", track.display().to_string()),
        (
            &format!("priority {PREFERRED_PRIORITY}\n") as &str,
            format!("priority {priority}\n"),
        ),
    ] {
        if !conf.contains(from) {
            return Err(Error::Protocol(format!(
                "the keepalived block of {} has no {from:?}",
                doc().display()
            )));
        }
        conf = conf.replace(from, &to);
    }
    if !conf.contains(&format!("{VIP}/29")) {
        return Err(Error::Protocol(format!(
            "the keepalived block has no address {VIP}/29"
        )));
    }
    Ok(conf)
}

/// A running ping flood ([`Pair::ping_flood`]).
#[derive(Debug)]
pub struct PingFlood {
    child: Option<Child>,
    capture: Option<Capture>,
    file: PathBuf,
}

/// What a ping flood saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingResult {
    pub sent: u64,
    pub received: u64,
    pub duplicates: u64,
    /// The longest interval between two replies arriving in side a (captured there): the longest outage, give
    /// or take the ping's interval.
    pub longest_gap: Duration,
}

impl PingResult {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

impl PingFlood {
    /// Stops ping and the capture, and counts from the capture (ping's own summary counts the request it sent
    /// just before it was stopped as lost, whose reply was still on its way).
    pub fn finish(mut self) -> Result<PingResult> {
        let mut child = self.child.take().expect("finished once");
        let stopped = sh(&["kill", "-INT", &child.id().to_string()]);
        if stopped.is_err() {
            let _ = child.kill();
        }
        child.wait()?;
        stopped?;
        // The replies to the last requests are still on their way: give them time, then stop tcpdump so that
        // it writes everything it received.
        std::thread::sleep(Duration::from_millis(500));
        if let Some(capture) = self.capture.take() {
            capture.stop()?;
        }
        let echoes = echoes(&self.file)?;
        Ok(PingResult::of(&echoes))
    }
}

impl PingResult {
    /// What the echoes captured in side a say of the flood (the identifier with the most echoes: other pings
    /// may cross meanwhile): a request sent (its sequence number seen at all), answered (a reply with its
    /// number), and replies beyond the first per number (duplicates).
    pub fn of(echoes: &[Echo]) -> PingResult {
        let mut per_id: BTreeMap<u16, usize> = BTreeMap::new();
        for e in echoes {
            *per_id.entry(e.id).or_default() += 1;
        }
        let flood = per_id.iter().max_by_key(|(_, n)| **n).map(|(id, _)| *id);
        let echoes: Vec<Echo> = echoes
            .iter()
            .filter(|e| Some(e.id) == flood)
            .copied()
            .collect();
        let mut replies: BTreeMap<u16, u64> = BTreeMap::new();
        let mut seen: BTreeSet<u16> = BTreeSet::new();
        for e in &echoes {
            seen.insert(e.seq);
            if e.reply {
                *replies.entry(e.seq).or_default() += 1;
            }
        }
        PingResult {
            sent: seen.len() as u64,
            received: replies.len() as u64,
            duplicates: replies.values().map(|n| n - 1).sum(),
            longest_gap: longest_outage(&echoes),
        }
    }
}

impl Drop for PingFlood {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An ICMP echo request or reply seen in a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub time: Duration,
    pub reply: bool,
    /// The echo identifier: one per ping process.
    pub id: u16,
    pub seq: u16,
}

/// The IPv4 ICMP echoes of a pcap file (Ethernet frames), with their capture times.
pub fn echoes(path: &Path) -> Result<Vec<Echo>> {
    let file = std::fs::File::open(path)?;
    let mut reader =
        pcap_file::pcap::PcapReader::new(file).map_err(|e| Error::Pcap(e.to_string()))?;
    let mut echoes = Vec::new();
    while let Some(packet) = reader.next_packet() {
        // tcpdump may be mid-write of the last record.
        let Ok(p) = packet else { break };
        let f = &p.data;
        if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 1 {
            continue;
        }
        let icmp = 14 + usize::from(f[14] & 0x0f) * 4;
        if f.len() < icmp + 8 || !matches!(f[icmp], 0 | 8) {
            continue;
        }
        echoes.push(Echo {
            time: p.timestamp,
            reply: f[icmp] == 0,
            id: u16::from_be_bytes([f[icmp + 4], f[icmp + 5]]),
            seq: u16::from_be_bytes([f[icmp + 6], f[icmp + 7]]),
        });
    }
    Ok(echoes)
}

/// The longest interval between two consecutive echo replies (the first request and the last one count as
/// bounds too): an upper bound of the outage, by at most the ping's interval (or its slower pace while no reply
/// comes).
pub fn longest_outage(echoes: &[Echo]) -> Duration {
    let mut replies: Vec<Duration> = echoes.iter().filter(|e| e.reply).map(|e| e.time).collect();
    // An outage from the first request on, or until the last one, is an outage too.
    let first = echoes.iter().map(|e| e.time).min();
    let last_request = echoes.iter().filter(|e| !e.reply).map(|e| e.time).max();
    if let Some(t) = first.filter(|t| replies.first().is_none_or(|r| t < r)) {
        replies.insert(0, t);
    }
    if let Some(t) = last_request.filter(|t| replies.last().is_some_and(|r| t > r)) {
        replies.push(t);
    }
    replies
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .max()
        .unwrap_or_default()
}

/// Interactive TCP sessions through the pair ([`Pair::sessions`]).
#[derive(Debug)]
pub struct Sessions {
    _server: Background,
    client: Option<Child>,
    stop: PathBuf,
    pub port: u16,
}

/// How the sessions ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SessionsResult {
    /// Sessions that ran to the end, every line echoed.
    pub ok: usize,
    /// Why each of the others broke.
    pub broken: Vec<String>,
    /// Lines echoed in all.
    pub lines: u64,
}

impl Sessions {
    /// Ends the sessions (each closes after its current line) and says how they went.
    pub fn finish(mut self) -> Result<SessionsResult> {
        std::fs::write(&self.stop, b"")?;
        let client = self.client.take().expect("finished once");
        let out = client.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).map_err(|e| {
            Error::Protocol(format!(
                "tcp_sessions.py: {e}: {text:?} {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        })
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        if let Some(mut c) = self.client.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.stop);
    }
}

/// An HTTP download through the pair ([`Pair::download`]).
#[derive(Debug)]
pub struct Download {
    _server: Background,
    client: Background,
    source: PathBuf,
    target: PathBuf,
    pub size: u64,
}

impl Download {
    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        std::fs::metadata(&self.target)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Waits for curl to end; `Ok(true)` if it succeeded and the file's SHA-256 is the source's.
    pub fn finish(mut self) -> Result<bool> {
        let status = self.client.0.wait()?;
        if !status.success() {
            let mut stderr = String::new();
            if let Some(e) = self.client.0.stderr.as_mut() {
                let _ = std::io::Read::read_to_string(e, &mut stderr);
            }
            return Err(Error::Command {
                cmd: "curl".into(),
                status: status.to_string(),
                stderr,
            });
        }
        Ok(sha256(&self.source)? == sha256(&self.target)?)
    }
}

fn sha256(path: &Path) -> Result<String> {
    let out = sh(&["sha256sum", &path.display().to_string()])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(ms: u64, reply: bool, seq: u16) -> Echo {
        Echo {
            time: Duration::from_millis(ms),
            reply,
            id: 7,
            seq,
        }
    }

    #[test]
    fn the_outage_is_the_longest_interval_between_replies() {
        let echoes = [
            echo(0, false, 1),
            echo(1, true, 1),
            echo(2, false, 2),
            echo(3, true, 2),
            echo(4, false, 3),
            echo(6, false, 4),
            echo(9, false, 5),
            echo(10, true, 5),
            echo(11, false, 6),
        ];
        assert_eq!(longest_outage(&echoes), Duration::from_millis(7));
        assert_eq!(longest_outage(&[echo(0, true, 1)]), Duration::ZERO);
        // An outage at the start (the first replies never came) or at the end counts.
        let start = [
            echo(0, false, 1),
            echo(2, false, 2),
            echo(40, false, 3),
            echo(41, true, 3),
        ];
        assert_eq!(longest_outage(&start), Duration::from_millis(41));
        let end = [echo(0, false, 1), echo(1, true, 1), echo(30, false, 2)];
        assert_eq!(longest_outage(&end), Duration::from_millis(29));
    }

    #[test]
    fn a_flood_is_counted_by_its_own_echoes() {
        let other = |ms, reply, seq| Echo {
            id: 9,
            ..echo(ms, reply, seq)
        };
        let echoes = [
            echo(0, false, 1),
            other(0, false, 1),
            echo(1, true, 1),
            other(1, true, 1),
            echo(2, false, 2),
            // Request 3 was not captured, its reply was.
            echo(4, true, 3),
            echo(5, false, 4),
            echo(6, true, 4),
            echo(6, true, 4),
            echo(7, false, 5),
            echo(8, true, 5),
        ];
        let r = PingResult::of(&echoes);
        assert_eq!((r.sent, r.received, r.duplicates, r.lost()), (5, 4, 1, 1));
        assert_eq!(r.longest_gap, Duration::from_millis(3));
    }
}
