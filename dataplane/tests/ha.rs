//! A member of an HA pair (`[ha]`): it starts as standby and forwards nothing, every packet counted as
//! `standby`; `set_role` (sent by the `bulkhead-dataplane role` command keepalived's notify scripts run) makes
//! it active and standby again. Needs root and ping.

use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use protocol::{CountersReport, PortLink, Request, Role, RoleChange, Status};
use testbed::{addr, Options, TestBed};

fn bed(ha: Option<&str>) -> TestBed {
    let mut opts = Options::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"));
    opts.policy = Some(testbed::policy_file("open.json"));
    // Beds of this file may run beside another dataplane: idle workers yield the shared cores.
    opts.idle_sleep_max_us = 1000;
    opts.ha = ha.map(str::to_string);
    TestBed::start(&opts).unwrap_or_else(|e| panic!("test bed: {e}"))
}

fn ping(bed: &TestBed) -> bool {
    bed.a
        .run(&["ping", "-c", "2", "-i", "0.2", "-W", "1", addr::B4])
        .unwrap()
        .status
        .success()
}

/// `bulkhead-dataplane role --socket <bed's socket> [role]`.
fn role_command(bed: &TestBed, role: Option<&str>) -> Output {
    let socket = bed.control_socket();
    let mut args = vec!["role", "--socket", socket.to_str().unwrap()];
    args.extend(role);
    std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
        .args(&args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn counters(bed: &TestBed) -> CountersReport {
    bed.ask(&Request::Counters {}).unwrap()
}

/// Every packet received is forwarded or dropped under a reason, in every worker.
fn assert_accounted(c: &CountersReport) {
    for w in c.workers.iter().chain([&c.totals]) {
        assert_eq!(w.rx_packets, w.tx_packets + w.dropped(), "{w:?}");
    }
}

#[test]
fn ha_member_starts_standby_and_forwards_only_while_active() {
    let bed = bed(Some(""));
    let status: Status = bed.ask(&Request::Status {}).unwrap();
    let ha = status.ha.expect("an [ha] member reports its role");
    assert_eq!((ha.role, ha.role_changes), (Role::Standby, 0));
    assert_eq!(bed.ready()["ha_role"], "standby");

    // Standby: nothing crosses, and everything received is counted as `standby`.
    assert!(!ping(&bed), "a standby forwarded a ping");
    let c = counters(&bed);
    assert!(c.totals.drops["standby"] >= 2, "{:?}", c.totals.drops);
    assert_eq!(c.totals.tx_packets, 0);
    assert_accounted(&c);
    let out = role_command(&bed, None);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(3), "standby")
    );

    // Active, by the command keepalived's notify script runs.
    let out = role_command(&bed, Some("active"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "active (was standby)");
    assert!(ping(&bed), "the active member does not forward");
    let out = role_command(&bed, None);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "active")
    );

    // Standby again, by the control protocol: the standby count grows, nothing more is forwarded.
    let before = counters(&bed);
    let change: RoleChange = bed
        .ask(&Request::SetRole {
            role: Role::Standby,
        })
        .unwrap();
    assert_eq!(
        change,
        RoleChange {
            role: Role::Standby,
            previous: Role::Active,
            // No peer heard: standby at once.
            effective: Some(Role::Standby),
            held: None,
        }
    );
    assert!(!ping(&bed), "a standby forwarded a ping");
    let after = counters(&bed);
    assert!(after.totals.drops["standby"] >= before.totals.drops["standby"] + 2);
    assert_eq!(after.totals.tx_packets, before.totals.tx_packets);
    assert_accounted(&after);
    let status: Status = bed.ask(&Request::Status {}).unwrap();
    assert_eq!(status.ha.unwrap().role_changes, 2);
}

#[test]
fn ha_role_on_a_single_gateway_is_not_ha() {
    let bed = bed(None);
    let status: Status = bed.ask(&Request::Status {}).unwrap();
    assert_eq!(status.ha, None);
    match bed.ask::<RoleChange>(&Request::SetRole {
        role: Role::Standby,
    }) {
        Err(testbed::Error::Refused(e)) => assert_eq!(e.code, protocol::ErrorCode::NotHa),
        other => panic!("expected not_ha, got {other:?}"),
    }
    // The single gateway still forwards.
    assert!(ping(&bed));
    let out = role_command(&bed, Some("standby"));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    // A socket nobody serves: a precise error, exit status 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
        .args([
            "role",
            "--socket",
            "/nonexistent/bulkhead-ha.sock",
            "active",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bulkhead-ha.sock"));
}

/// A dataplane on two TAP devices it creates in this namespace (tests may move them elsewhere), with an `[ha]`
/// section. Stopped and cleaned up on drop.
struct Gateway {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    track: PathBuf,
    taps: [String; 2],
}

impl Gateway {
    /// Gateway `tag` (a short name, unique within the test), with `ha` in its `[ha]` section (the track file
    /// is added) and the policy `policy`.
    fn start(tag: &str, ha: &str, policy: PathBuf) -> Gateway {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("bulkhead-ha-{tag}-{pid}"));
        std::fs::create_dir_all(&dir).unwrap();
        // Interface names: at most 15 bytes.
        let taps = [format!("bh{tag}{pid:x}a"), format!("bh{tag}{pid:x}b")];
        let track = dir.join("links.track");
        let mut opts = Options::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"));
        opts.idle_sleep_max_us = 1000;
        opts.policy = Some(policy);
        let mut text =
            testbed::config_text(&opts, &format!("ha-{tag}-{pid}"), &dir, &taps[0], &taps[1]);
        text += &format!(
            "\n[ha]\n{ha}\ntrack_file = {:?}\n",
            track.display().to_string()
        );
        let config = dir.join("dataplane.toml");
        std::fs::write(&config, text).unwrap();
        let stderr = std::fs::File::create(dir.join("dataplane.stderr")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let gw = Gateway {
            child,
            socket: dir.join("control.sock"),
            dir,
            track,
            taps,
        };
        gw.wait_for("the control socket", |gw| gw.try_links().is_some());
        gw
    }

    /// `request`'s answer, `None` if there is none (yet) or a refusal.
    fn try_ask<T: serde::de::DeserializeOwned>(&self, request: &Request) -> Option<T> {
        testbed::ask_socket(&self.socket, request, Duration::from_secs(30)).ok()
    }

    fn ask<T: serde::de::DeserializeOwned>(&self, request: &Request) -> T {
        self.try_ask(request)
            .unwrap_or_else(|| panic!("no answer to {request:?}"))
    }

    fn try_links(&self) -> Option<Vec<PortLink>> {
        let status: Status = self.try_ask(&Request::Status {})?;
        Some(status.ha?.links)
    }

    /// (up, held down) of each port.
    fn links(&self) -> Vec<(bool, bool)> {
        self.try_links()
            .unwrap()
            .iter()
            .map(|l| (l.up, l.held_down))
            .collect()
    }

    /// What its stderr says of its HA role.
    fn role_log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("dataplane.stderr")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("HA role")).collect();
        lines.join("\n")
    }

    fn track(&self) -> String {
        std::fs::read_to_string(&self.track).unwrap_or_default()
    }

    /// Whether the kernel has TAP device `i` administratively up.
    fn tap_up(&self, i: usize) -> bool {
        let out = testbed::sh(&["ip", "-o", "link", "show", &self.taps[i]]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let flags = text
            .split(['<', '>'])
            .nth(1)
            .unwrap_or_default()
            .to_string();
        flags.split(',').any(|f| f == "UP")
    }

    fn set_tap(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        testbed::sh(&["ip", "link", "set", &self.taps[i], state]).unwrap();
    }

    /// Waits (up to a minute) until `ready` holds.
    fn wait_for(&self, what: &str, ready: impl Fn(&Gateway) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready(self) {
            assert!(
                Instant::now() < deadline,
                "waiting for {what}: links {:?}, track {:?}\n{}",
                self.try_links(),
                self.track(),
                std::fs::read_to_string(self.dir.join("dataplane.stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A test may have killed it already.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = testbed::terminate(&mut self.child, Duration::from_secs(10));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn ha_link_lost_on_one_port_takes_the_linked_port_down_until_it_returns() {
    // The TAP devices stay in this namespace: moved into another one, net_tap's flag ioctls no longer reach
    // them and it reports their links down whatever their state (docs/ha.md).
    let gw = Gateway::start("l", "link_check_ms = 20", testbed::policy_file("open.json"));
    gw.wait_for("both links up", |gw| {
        gw.links() == [(true, false), (true, false)]
    });
    assert_eq!(gw.track(), "0\n");

    // Port a's link goes: the dataplane takes port b down (its neighbour sees the carrier go), and the track
    // file tells keepalived.
    gw.set_tap(0, false);
    gw.wait_for("port b held down", |gw| {
        gw.links() == [(false, false), (false, true)]
    });
    assert!(!gw.tap_up(1), "port b's device is still up");
    gw.wait_for("the track file", |gw| gw.track() == "1\n");

    // It returns: so does port b.
    gw.set_tap(0, true);
    gw.wait_for("both links up again", |gw| {
        gw.links() == [(true, false), (true, false)]
    });
    assert!(gw.tap_up(1), "port b's device stayed down");
    gw.wait_for("the track file", |gw| gw.track() == "0\n");
}

/// The `[ha]` body of a member that receives on `listen` and sends to `peer`.
fn sync_section(listen: u16, peer: u16) -> String {
    format!("sync_listen = \"127.0.0.1:{listen}\"\nsync_peer = \"127.0.0.1:{peer}\"\nsync_refresh_ms = 200")
}

/// The flows of `bed` on TCP port `port` and their states.
fn tcp_states(bed: &TestBed, port: u16) -> Vec<String> {
    testbed::flow_states(bed.ask(&testbed::tcp_flows_request(port)).unwrap())
}

fn sync_status(bed: &TestBed) -> protocol::SyncStatus {
    let s: Status = bed.ask(&Request::Status {}).unwrap();
    s.ha.unwrap().sync.expect("sync is configured")
}

/// Waits (up to a minute) until `ready` holds.
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ha_sync_established_flows_reach_the_standby_and_a_restarted_standby_resyncs() {
    let (pa, pb) = (testbed::free_port(), testbed::free_port());
    let active = bed(Some(&sync_section(pa, pb)));
    let mut standby = bed(Some(&sync_section(pb, pa)));
    active
        .ask::<RoleChange>(&Request::SetRole { role: Role::Active })
        .unwrap();

    // A TCP connection held open through the active (strict tracking: it is seen from its SYN).
    let port = 5501u16;
    let server = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET6 if ':' in '{b}' else socket.AF_INET)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{b}',{port}))\ns.listen(1)\n\
         c,_=s.accept()\nc.sendall(c.recv(100))\ntime.sleep(120)\n",
        b = addr::B4
    );
    let _server = active.b.spawn(&["python3", "-c", &server]).unwrap();
    active.b.wait_listening(port).unwrap();
    let client = format!(
        "import socket,time\nc=socket.create_connection(('{b}',{port}))\nc.sendall(b'hello')\n\
         assert c.recv(100)==b'hello'\ntime.sleep(120)\n",
        b = addr::B4
    );
    let _client = active.a.spawn(&["python3", "-c", &client]).unwrap();
    wait_until("the connection on the active", || {
        tcp_states(&active, port) == ["established"]
    });

    // It appears in the standby's table with its TCP state, and the sync catches up.
    wait_until("the connection on the standby", || {
        tcp_states(&standby, port) == ["established"]
    });
    // One reading holds it all: the periodic refresh sends the flow again every 200 ms, so a second reading
    // may catch the next batch in flight.
    wait_until("the sync in sync, every update acknowledged", || {
        let s = sync_status(&active);
        s.state == protocol::SyncState::InSync
            && s.sending
            && s.sent > 0
            && s.acked == s.sent
            && s.lag == 0
    });
    let received = sync_status(&standby);
    assert!(!received.sending && received.received > 0, "{received:?}");
    assert_eq!(received.state, protocol::SyncState::InSync);

    // The standby restarts with an empty table: the active reconnects and resyncs it in bulk.
    standby.restart().unwrap();
    assert_eq!(
        standby
            .ask::<Status>(&Request::Status {})
            .unwrap()
            .ha
            .unwrap()
            .role,
        Role::Standby
    );
    wait_until("the connection on the restarted standby", || {
        tcp_states(&standby, port) == ["established"]
    });
    // An on-demand resync is answered by every worker.
    let r: protocol::ResyncResult = active.ask(&Request::Resync {}).unwrap();
    assert_eq!(r.workers, 1);
    wait_until("the sync in sync again", || {
        sync_status(&active).state == protocol::SyncState::InSync
    });

    // A flow killed on the active is removed from the standby too.
    let killed: protocol::KillResult = active
        .ask(&Request::KillFlows {
            filter: protocol::FlowFilter {
                port: Some(port),
                ..Default::default()
            },
        })
        .unwrap();
    assert_eq!(killed.killed, 1);
    wait_until("the killed connection gone from the standby", || {
        tcp_states(&standby, port).is_empty()
    });
}

#[test]
fn ha_sync_sends_new_flows_and_state_changes_as_they_happen() {
    // The longest refresh period: after the sweep the peer's connection starts, the next one is a minute
    // away, so what the standby learns before then came as it happened.
    let section = |listen, peer| {
        sync_section(listen, peer).replace("sync_refresh_ms = 200", "sync_refresh_ms = 60000")
    };
    let (pa, pb) = (testbed::free_port(), testbed::free_port());
    let active = bed(Some(&section(pa, pb)));
    let standby = bed(Some(&section(pb, pa)));
    active
        .ask::<RoleChange>(&Request::SetRole { role: Role::Active })
        .unwrap();
    wait_until("the sync in sync", || {
        sync_status(&active).state == protocol::SyncState::InSync
    });
    let synced = Instant::now();

    // A connection opened after that, held until `close` exists, then closed by the client.
    let close = std::env::temp_dir().join(format!("bulkhead-ha-sync-close-{}", std::process::id()));
    let port = 5503u16;
    let server = format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('{b}',{port}))\ns.listen(1)\nc,_=s.accept()\nc.sendall(c.recv(100))\n\
         while c.recv(100): pass\nc.close()\n",
        b = addr::B4
    );
    let _server = active.b.spawn(&["python3", "-c", &server]).unwrap();
    active.b.wait_listening(port).unwrap();
    let client = format!(
        "import os,socket,time\nc=socket.create_connection(('{b}',{port}))\nc.sendall(b'hello')\n\
         assert c.recv(100)==b'hello'\nwhile not os.path.exists('{close}'): time.sleep(0.05)\n\
         c.close()\ntime.sleep(60)\n",
        b = addr::B4,
        close = close.display()
    );
    let _client = active.a.spawn(&["python3", "-c", &client]).unwrap();
    wait_until("the connection on the standby", || {
        tcp_states(&standby, port) == ["established"]
    });
    std::fs::write(&close, b"").unwrap();
    wait_until(
        "the close on the active",
        || !matches!(tcp_states(&active, port).as_slice(), [s] if s == "established"),
    );
    wait_until("the close on the standby", || {
        let (a, s) = (tcp_states(&active, port), tcp_states(&standby, port));
        a.len() == 1 && a == s
    });
    println!(
        "new flow and close on the standby {} ms after the sync was in step",
        synced.elapsed().as_millis()
    );
    let _ = std::fs::remove_file(&close);
    // The resync sweep ended (and the next one was due a minute later) before the sync was seen in step.
    assert!(
        synced.elapsed() < Duration::from_secs(50),
        "the standby may have learned them from a sweep, not as they happened"
    );
}

/// Two gateways in parallel between two segments: each segment is a namespace whose Linux bridge joins the
/// host's address and both gateways' ports on that side. The bridges flood every frame (ageing time 0, a
/// hub), so both members see all traffic and the standby's drops decide nothing: only the active forwards.
/// The members sync connection state over loopback. Namespaces removed on drop.
struct PairBed {
    sides: [testbed::Side; 2],
    gws: [Gateway; 2],
    dir: PathBuf,
}

impl PairBed {
    fn start() -> PairBed {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("bulkhead-ha-pair-{pid}"));
        std::fs::create_dir_all(&dir).unwrap();
        // Strict TCP tracking: a connection the new active has no state for would not continue.
        let mut policy: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(testbed::policy_file("open.json")).unwrap(),
        )
        .unwrap();
        policy["settings"]["tcp_strictness"] = "strict".into();
        let policy_path = dir.join("strict.json");
        std::fs::write(&policy_path, policy.to_string()).unwrap();
        let (p1, p2) = (testbed::free_port(), testbed::free_port());
        // The split-brain guard's silence, generous: the members' workers share a core with other tests, and
        // one descheduled for a while must not look dead.
        let section =
            |listen, peer| format!("{}\npeer_silence_ms = 1000", sync_section(listen, peer));
        let gws = [
            Gateway::start("p1", &section(p1, p2), policy_path.clone()),
            Gateway::start("p2", &section(p2, p1), policy_path),
        ];
        let sides = [0, 1].map(|i| testbed::Side {
            netns: format!("bulkhead-ha-{pid}-{}", ["a", "b"][i]),
            iface: "br0".to_string(),
        });
        let bed = PairBed { sides, gws, dir };
        for (i, side) in bed.sides.iter().enumerate() {
            testbed::sh(&["ip", "netns", "add", &side.netns]).unwrap();
            side.ok(&["ip", "link", "set", "lo", "up"]).unwrap();
            side.ok(&[
                "ip",
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "ageing_time",
                "0",
            ])
            .unwrap();
            // A bridge takes the lowest MAC of its ports unless given one: a member's ports leaving (its
            // dataplane killed) must not change the address the hosts' ARP caches hold.
            let mac = format!("02:00:00:00:00:0{}", i + 1);
            side.ok(&["ip", "link", "set", "br0", "address", &mac])
                .unwrap();
            for gw in &bed.gws {
                let tap = &gw.taps[i];
                testbed::sh(&["ip", "link", "set", tap, "netns", &side.netns]).unwrap();
                side.ok(&["ip", "link", "set", tap, "master", "br0"])
                    .unwrap();
                side.ok(&["ip", "link", "set", tap, "up"]).unwrap();
            }
            let address = format!("{}/24", [addr::A4, addr::B4][i]);
            side.ok(&["ip", "addr", "add", &address, "dev", "br0"])
                .unwrap();
            side.ok(&["ip", "link", "set", "br0", "up"]).unwrap();
        }
        bed
    }
}

impl Drop for PairBed {
    fn drop(&mut self) {
        for side in &self.sides {
            let _ = testbed::sh(&["ip", "netns", "del", &side.netns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn gw_tcp_states(gw: &Gateway, port: u16) -> Vec<String> {
    gw.try_ask(&testbed::tcp_flows_request(port))
        .map(testbed::flow_states)
        .unwrap_or_default()
}

/// An interactive TCP session through the pair: the client in segment a sends a line every 50 ms and expects
/// it echoed, 120 times; RSTs on segment a are captured.
struct Session {
    _server: testbed::Background,
    client: testbed::Background,
    rst: testbed::Capture,
    port: u16,
}

impl Session {
    /// Starts it through `g1` (made active) and waits until both members track it.
    fn start(bed: &PairBed) -> Session {
        let [a, b] = &bed.sides;
        let [g1, g2] = &bed.gws;
        let _: RoleChange = g1.ask(&Request::SetRole { role: Role::Active });
        let port = 5502u16;
        let server = format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('{b}',{port}))\ns.listen(1)\nc,_=s.accept()\nwhile True:\n    d=c.recv(100)\n    \
             if not d: break\n    c.sendall(d)\n",
            b = addr::B4
        );
        let server = b.spawn(&["python3", "-c", &server]).unwrap();
        b.wait_listening(port).unwrap();
        let rst = a
            .capture("tcp[tcpflags] & tcp-rst != 0", &bed.dir.join("rst.pcap"))
            .unwrap();
        let client = format!(
            "import socket,time\nc=socket.create_connection(('{b}',{port}))\nc.settimeout(30)\n\
             for i in range(120):\n    m=b'line %d' % i\n    c.sendall(m)\n    got=b''\n    \
             while len(got)<len(m): got+=c.recv(100)\n    assert got==m, (got, m)\n    time.sleep(0.05)\n\
             c.close()\n",
            b = addr::B4
        );
        let client = a.spawn(&["python3", "-c", &client]).unwrap();
        wait_until("the session on the active", || {
            gw_tcp_states(g1, port) == ["established"]
        });
        // The standby has it too (synced).
        wait_until("the session on the standby", || {
            gw_tcp_states(g2, port) == ["established"]
        });
        Session {
            _server: server,
            client,
            rst,
            port,
        }
    }

    /// Waits for the client to finish: every line echoed, and no RST from either end. `new_active`'s counters
    /// explain a failure.
    fn completes(mut self, new_active: &Gateway) {
        let status = self.client.0.wait().unwrap();
        let mut stderr = String::new();
        if let Some(e) = self.client.0.stderr.as_mut() {
            let _ = std::io::Read::read_to_string(e, &mut stderr);
        }
        assert!(
            status.success(),
            "the session on port {} broke: {stderr}\nnew active: {:?}\nflows: {:?}",
            self.port,
            new_active
                .try_ask::<CountersReport>(&Request::Counters {})
                .map(|c| c.totals),
            gw_tcp_states(new_active, self.port),
        );
        let rsts = self.rst.frames(1, Duration::from_millis(500)).unwrap();
        assert!(rsts.is_empty(), "{} RST(s) seen", rsts.len());
    }
}

/// The new active forwarded, and refused nothing of the session's TCP.
fn assert_took_over(g: &Gateway, before: &CountersReport) {
    let after: CountersReport = g.ask(&Request::Counters {});
    assert!(
        after.totals.tx_packets > before.totals.tx_packets,
        "the new active forwarded nothing"
    );
    assert_eq!(
        after.totals.drops["tcp_invalid"], 0,
        "{:?}",
        after.totals.drops
    );
    assert_eq!(after.totals.drops["tcp_out_of_window"], 0);
}

#[test]
fn ha_switchover_keeps_an_established_tcp_session_without_rst() {
    let bed = PairBed::start();
    let [g1, g2] = &bed.gws;
    let session = Session::start(&bed);
    // The roles swap mid-session: standby first, so the two never forward at once.
    let _: RoleChange = g1.ask(&Request::SetRole {
        role: Role::Standby,
    });
    let _: RoleChange = g2.ask(&Request::SetRole { role: Role::Active });
    let before: CountersReport = g2.ask(&Request::Counters {});
    session.completes(g2);
    assert_took_over(g2, &before);
}

/// The `ha` section of a gateway's status.
fn gw_ha(gw: &Gateway) -> protocol::HaStatus {
    let status: Status = gw.ask(&Request::Status {});
    status.ha.expect("an [ha] member reports its role")
}

fn set_role(gw: &Gateway, role: Role) -> RoleChange {
    gw.ask(&Request::SetRole { role })
}

/// A ping flood from segment a to segment b through the pair: `count` echo requests every 2 ms.
struct Flood(Child);

impl Flood {
    fn start(bed: &PairBed, count: u32) -> Flood {
        let count = count.to_string();
        let child = bed.sides[0]
            .command("ping")
            .args(["-q", "-i", "0.002", "-W", "2", "-c", &count, addr::B4])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Flood(child)
    }

    /// Waits for it to end; answers (sent, received, duplicates) from ping's summary.
    fn finish(self) -> (u64, u64, u64) {
        let out = self.0.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no summary from ping: {text}"));
        let number_before = |word: &str| -> u64 {
            line.split(", ")
                .find(|part| part.ends_with(word))
                .and_then(|part| part.trim_start_matches('+').split(' ').next())
                .map_or(0, |n| n.parse().unwrap())
        };
        (
            number_before("packets transmitted"),
            number_before("received"),
            number_before("duplicates"),
        )
    }
}

/// Both members carried and consumed heartbeats, and every packet each received is accounted for.
fn assert_heartbeats_counted(bed: &PairBed) {
    for gw in &bed.gws {
        // Heartbeats keep arriving: a reading may catch a worker between counting a burst received and
        // counting its fate, so wait for one taken between bursts.
        let accounted = |c: &CountersReport| {
            c.workers
                .iter()
                .chain([&c.totals])
                .all(|w| w.rx_packets == w.tx_packets + w.dropped())
        };
        let mut c: CountersReport = gw.ask(&Request::Counters {});
        for _ in 0..100 {
            if accounted(&c) {
                break;
            }
            c = gw.ask(&Request::Counters {});
        }
        assert!(c.totals.drops["ha_heartbeat"] > 0, "{:?}", c.totals.drops);
        assert_accounted(&c);
        let beats = gw_ha(gw).heartbeats.expect("heartbeat counts");
        assert!(beats.sent > 0 && beats.received > 0, "{beats:?}");
    }
}

/// g1 active, and g2 has heard it so.
fn g1_active_and_heard(bed: &PairBed) {
    let [g1, g2] = &bed.gws;
    assert_eq!(set_role(g1, Role::Active).effective, Some(Role::Active));
    g2.wait_for("g2 hearing g1 active", |g2| {
        gw_ha(g2).peer.is_some_and(|p| p.role == Role::Active)
    });
    // ARP settled before the floods count.
    assert!(bed.sides[0]
        .run(&["ping", "-c", "1", "-W", "2", addr::B4])
        .unwrap()
        .status
        .success());
}

#[test]
fn ha_split_brain_the_second_member_told_active_stays_standby_until_the_active_dies() {
    let mut bed = PairBed::start();
    g1_active_and_heard(&bed);
    let [g1, g2] = &bed.gws;

    // The HA link is cut: keepalived makes g2 master too. It hears g1's heartbeats on the data segments and
    // stays standby, held.
    let change = set_role(g2, Role::Active);
    assert_eq!(
        (change.effective, change.held),
        (Some(Role::Standby), Some(protocol::Hold::PeerActive)),
        "{change:?}"
    );
    let ha = gw_ha(g2);
    assert_eq!(
        (ha.role, ha.desired, ha.held),
        (
            Role::Standby,
            Some(Role::Active),
            Some(protocol::Hold::PeerActive)
        )
    );
    assert_eq!(ha.peer.unwrap().instance, gw_ha(g1).instance.unwrap());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
        .args(["role", "--socket", g2.socket.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        stdout(&out).starts_with("standby (told active, held: "),
        "{out:?}"
    );

    // No loop: every echo answered once.
    let (sent, received, duplicates) = Flood::start(&bed, 500).finish();
    assert_eq!((received, duplicates), (sent, 0), "sent {sent}");
    assert_eq!(gw_ha(g1).role, Role::Active);
    assert_heartbeats_counted(&bed);

    // g1's dataplane dies: g2 hears nothing more and takes over by itself.
    bed.gws[0].child.kill().unwrap();
    bed.gws[0].child.wait().unwrap();
    let g2 = &bed.gws[1];
    g2.wait_for("g2 active after the peer's silence", |g2| {
        gw_ha(g2).role == Role::Active
    });
    assert_eq!(gw_ha(g2).held, None);
    let (sent, received, duplicates) = Flood::start(&bed, 200).finish();
    let c: CountersReport = g2.ask(&Request::Counters {});
    assert_eq!(
        (received, duplicates),
        (sent, 0),
        "sent {sent}: {:?} {:?}",
        c.totals,
        gw_ha(g2)
    );
}

#[test]
fn ha_planned_switchover_in_either_order_loses_and_duplicates_nothing() {
    let bed = PairBed::start();
    g1_active_and_heard(&bed);
    let [g1, g2] = &bed.gws;
    let flood = Flood::start(&bed, 2000);
    std::thread::sleep(Duration::from_secs(1));

    // The new master first: g2 is held until g1, told standby, hands over.
    let change = set_role(g2, Role::Active);
    assert_eq!(
        change.held,
        Some(protocol::Hold::PeerActive),
        "{change:?}: g2 {:?}",
        gw_ha(g2)
    );
    g1.wait_for("g1 hearing that g2 wants to be active", |g1| {
        gw_ha(g1).peer.is_some_and(|p| p.desired == Role::Active)
    });
    let change = set_role(g1, Role::Standby);
    assert_eq!(change.effective, Some(Role::Standby), "{change:?}");
    g2.wait_for("g2 active", |g2| gw_ha(g2).role == Role::Active);
    std::thread::sleep(Duration::from_secs(1));

    // The old master first: g2, told standby, keeps forwarding until g1, told active, wants to take over.
    let change = set_role(g2, Role::Standby);
    assert_eq!(
        (change.effective, change.held),
        (Some(Role::Active), Some(protocol::Hold::Handover)),
        "{change:?}"
    );
    set_role(g1, Role::Active);
    g1.wait_for("g1 active", |g1| gw_ha(g1).role == Role::Active);
    assert_eq!(gw_ha(g2).role, Role::Standby);

    let (sent, received, duplicates) = flood.finish();
    assert_eq!(sent, 2000);
    assert_eq!(
        (received, duplicates),
        (sent, 0),
        "g1: {}\ng2: {}",
        g1.role_log(),
        g2.role_log()
    );
    assert_heartbeats_counted(&bed);
    for gw in &bed.gws {
        assert_eq!(gw_ha(gw).held, None);
    }
}

#[test]
fn ha_two_members_told_active_at_once_resolve_to_one_active() {
    let bed = PairBed::start();
    let [g1, g2] = &bed.gws;
    // Each has heard the other (standby) before.
    for (gw, other) in [(g1, g2), (g2, g1)] {
        gw.wait_for("the peer heard", |gw| {
            gw_ha(gw).peer.map(|p| p.instance) == gw_ha(other).instance
        });
    }
    std::thread::scope(|s| {
        for gw in [g1, g2] {
            s.spawn(move || set_role(gw, Role::Active));
        }
    });
    let one_active = || {
        let (a, b) = (gw_ha(g1), gw_ha(g2));
        (a.role == Role::Active) != (b.role == Role::Active)
            && [a, b]
                .iter()
                .any(|h| h.held == Some(protocol::Hold::PeerActive))
    };
    g1.wait_for("exactly one active, the other held", |_| one_active());
    let (sent, received, duplicates) = Flood::start(&bed, 300).finish();
    assert_eq!((received, duplicates), (sent, 0), "sent {sent}");
    assert!(one_active());
}
