//! SIEM export to real receivers started here: rsyslog (its gtls driver on TCP, and imudp) receives the syslog
//! stream as JSON and CEF, nfdump's `nfcapd` receives IPFIX, and the Community IDs are checked against the
//! reference implementation from PyPI (`communityid`, in a venv this test creates). The flows are real traffic
//! across `bulkhead-dataplane` on the namespace test bed. Needs root, rsyslog, rsyslog-gnutls, nfdump,
//! python3-venv and PyPI.

mod common;

use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::{json, Value};
use testbed::control::{Control, ControlOptions};
use testbed::{addr, Options, TestBed};

/// A receiver process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = testbed::terminate(&mut c, testbed::STOP_GRACE);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(program: &str, args: &[&str], log: &Path) -> Daemon {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} (is it installed? cargo xtask deps): {e}"));
    Daemon { child: Some(child) }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA, and a certificate it signed for `localhost` with its key: (ca, cert, key) files.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Bulkhead export test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let files = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, cert.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

/// Each message as rsyslog parsed it: `PRI|HOSTNAME|APP-NAME|MSGID|MSG`.
const LINE_TEMPLATE: &str = "%pri%|%hostname%|%app-name%|%msgid%|%msg%\\n";

struct Rsyslog {
    conf: PathBuf,
    dir: PathBuf,
    tls_port: u16,
    daemon: Daemon,
}

impl Rsyslog {
    fn start(dir: &Path, tls_port: u16, udp_port: u16) -> Rsyslog {
        let (ca, cert, key) = certificates(dir);
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let conf = dir.join("rsyslog.conf");
        let p = |p: &Path| p.display().to_string();
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{ca}" defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
module(load="imudp")
template(name="fields" type="string" string="{LINE_TEMPLATE}")
ruleset(name="tls") {{ action(type="omfile" file="{tls_log}" template="fields") }}
ruleset(name="udp") {{ action(type="omfile" file="{udp_log}" template="fields") }}
input(type="imtcp" address="127.0.0.1" port="{tls_port}" ruleset="tls")
input(type="imudp" address="127.0.0.1" port="{udp_port}" ruleset="udp")
"#,
                work = p(&work),
                ca = p(&ca),
                cert = p(&cert),
                key = p(&key),
                tls_log = p(&dir.join("tls.log")),
                udp_log = p(&dir.join("udp.log")),
            ),
        )
        .unwrap();
        let daemon = Rsyslog::run(dir, &conf, tls_port);
        Rsyslog {
            conf,
            dir: dir.to_path_buf(),
            tls_port,
            daemon,
        }
    }

    fn run(dir: &Path, conf: &Path, tls_port: u16) -> Daemon {
        let pid = dir.join("rsyslogd.pid");
        let _ = std::fs::remove_file(&pid);
        let daemon = spawn(
            "rsyslogd",
            &[
                "-n",
                "-f",
                conf.to_str().unwrap(),
                "-i",
                pid.to_str().unwrap(),
            ],
            &dir.join("rsyslogd.out"),
        );
        wait_for(20, "rsyslogd to listen", || {
            TcpStream::connect(("127.0.0.1", tls_port)).ok()
        });
        daemon
    }

    fn restart(&mut self) {
        self.daemon = Rsyslog::run(&self.dir, &self.conf, self.tls_port);
    }

    /// The messages received so far on `input` (`tls` or `udp`), as `[pri, hostname, app, msgid, msg]`.
    fn lines(&self, input: &str) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.dir.join(format!("{input}.log")))
            .unwrap_or_default()
            .lines()
            .map(|l| l.splitn(5, '|').map(String::from).collect())
            .collect()
    }
}

/// The bootstrap policy with idle timeouts of a second, so flows close (and are exported closed) quickly.
fn quick_policy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json"),
    )
    .unwrap();
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    for t in doc["settings"]["timeouts"]
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        *t = json!(1);
    }
    let path = dir.join("policy-quick.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

/// One sample of control's `/metrics` (0 when absent).
fn metric(c: &Control, series: &str) -> f64 {
    let text = c.call("GET", "/metrics", None).unwrap().body;
    let text = text.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn flow_log(c: &Control, query: &str) -> Vec<Value> {
    let r = c
        .call("GET", &format!("/api/v1/flow-log?limit=1000&{query}"), None)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["events"].as_array().unwrap().clone()
}

/// Community IDs from the reference implementation (PyPI `communityid`) of `(proto, src, dst, sport, dport)`
/// tuples (type and code for ICMP).
fn reference_community_ids(tuples: &[(u8, String, String, u16, u16)]) -> Vec<String> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("communityid-venv");
    let python = venv.join("bin/python3");
    if !python.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv", venv.to_str().unwrap()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "python3 -m venv failed (python3-venv installed?)");
    }
    let ok = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "-q",
            "--disable-pip-version-check",
            "communityid==1.5",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "pip install communityid failed");
    let script = r#"
import json, sys, communityid
cid = communityid.CommunityID()
make = {6: communityid.FlowTuple.make_tcp, 17: communityid.FlowTuple.make_udp,
        1: communityid.FlowTuple.make_icmp, 58: communityid.FlowTuple.make_icmp6}
for proto, src, dst, sport, dport in json.load(sys.stdin):
    print(cid.calc(make[proto](src, dst, sport, dport)))
"#;
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), &json!(tuples)).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// The records nfdump reads from what nfcapd wrote: `[src, dst, sport, dport, proto, packets, bytes, flags]`.
fn nfdump_records(dir: &Path) -> Vec<Vec<String>> {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("nfcapd.")
        })
        .collect();
    assert!(
        !files.is_empty(),
        "nfcapd wrote no file in {}",
        dir.display()
    );
    let mut out = Vec::new();
    for f in files {
        let o = Command::new("nfdump")
            .args(["-q", "-N", "-r", f.to_str().unwrap(), "-o"])
            .arg("fmt:%sa|%da|%sp|%dp|%pr|%pkt|%byt|%flg")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            out.push(l.split('|').map(|s| s.trim().to_string()).collect());
        }
    }
    out
}

#[test]
fn flows_and_audit_reach_rsyslog_and_nfcapd() {
    let dir = test_dir("export");
    let (tls_port, udp_port, ipfix_port) = (testbed::free_port(), free_udp_port(), free_udp_port());
    let mut rsyslog = Rsyslog::start(&dir, tls_port, udp_port);
    let nf_dir = dir.join("nfcapd");
    std::fs::create_dir_all(&nf_dir).unwrap();
    let mut nfcapd = spawn(
        "nfcapd",
        &[
            "-b",
            "127.0.0.1",
            "-p",
            &ipfix_port.to_string(),
            "-w",
            nf_dir.to_str().unwrap(),
        ],
        &dir.join("nfcapd.out"),
    );

    let mut opts = Options::new(dataplane_bin());
    opts.policy = Some(quick_policy(&dir));
    let bed = TestBed::start(&opts).unwrap();
    let mut copts = ControlOptions::new(
        control_bin(),
        &bed.dir.join("control"),
        &bed.control_socket(),
    );
    copts.extra = format!(
        r#"
[[export.syslog]]
name = "siem-tls"
address = "127.0.0.1:{tls_port}"
transport = "tls"
format = "json"
ca = {ca:?}
server_name = "localhost"
hostname = "gw-test"
queue = 64
backoff_ms = 100
max_backoff_ms = 800

[[export.syslog]]
name = "siem-udp"
address = "127.0.0.1:{udp_port}"
transport = "udp"
format = "cef"
hostname = "gw-test"
app_name = "bulkhead-cef"

[[export.ipfix]]
name = "nfcapd"
address = "127.0.0.1:{ipfix_port}"
observation_domain = 7
"#,
        ca = dir.join("ca.pem").display().to_string(),
    );
    let c = Control::start(&copts).unwrap();
    wait_for(10, "the TLS exporter to connect", || {
        (metric(&c, r#"bulkhead_export_connected{exporter="siem-tls"}"#) == 1.0).then_some(())
    });

    // Traffic of every kind: TCP (HTTP), UDP, ICMP and ICMPv6 allowed; a ping from B denied.
    let www = bed.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("small"), vec![b'x'; 20_000]).unwrap();
    let _server = file_server(&bed.b, addr::B4, 8080, &www);
    assert!(fetches(&bed.a, None, addr::B4, 8080));
    // Modbus (rule 30) over IPv6.
    let _server6 = file_server(&bed.b, addr::B6, 502, &www);
    assert!(fetches(&bed.a, None, &format!("[{}]", addr::B6), 502));
    for (family, to) in [("AF_INET", addr::B4), ("AF_INET6", addr::B6)] {
        let udp = format!(
            "import socket; s=socket.socket(socket.{family}, socket.SOCK_DGRAM); s.sendto(b'ping', ('{to}', 5353))"
        );
        bed.a.ok(&["python3", "-c", &udp]).unwrap();
    }
    bed.a
        .ok(&["ping", "-c", "2", "-i", "0.2", "-W", "1", addr::B4])
        .unwrap();
    bed.a
        .ok(&["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", addr::B6])
        .unwrap();
    assert!(!bed
        .b
        .run(&["ping", "-c", "1", "-W", "1", addr::A4])
        .unwrap()
        .status
        .success());

    // A commit: an audit intent and outcome.
    assert_eq!(edit_and_commit(&c, 50)["version"], 2);

    // Every flow closes within a few seconds (timeouts of 1 s).
    let closed = wait_for(30, "the closed HTTP, UDP, ICMP and ICMPv6 flows", || {
        let closed = flow_log(&c, "kind=closed");
        let has = |proto: u64| closed.iter().any(|e| e["proto"] == proto);
        (has(6) && has(17) && has(1) && has(58)).then_some(closed)
    });
    let http = closed
        .iter()
        .find(|e| e["proto"] == 6 && e["dport"] == 8080)
        .unwrap()
        .clone();
    // Both sides opened and closed: SYN and FIN from the client, SYN-ACK and FIN from the server.
    assert_eq!(http["tcp_flags"], json!([0x03, 0x13]), "{http}");
    assert_eq!(http["conn_state"], "SF", "{http}");

    // The flow log's Community IDs against the reference implementation.
    let all = flow_log(&c, "");
    let tuples: Vec<(u8, String, String, u16, u16)> = all
        .iter()
        .map(|e| {
            let proto = e["proto"].as_u64().unwrap() as u8;
            let (sport, dport) = match (proto, e["kind"].as_str().unwrap()) {
                // Tracked ICMP flows are echo exchanges opened by a request (type 8 / 128, code 0); a denied
                // packet's event carries its type and code as ports.
                (1, "new" | "closed") => (8, 0),
                (58, "new" | "closed") => (128, 0),
                _ => (
                    e["sport"].as_u64().unwrap() as u16,
                    e["dport"].as_u64().unwrap() as u16,
                ),
            };
            let ip = |k: &str| e[k].as_str().unwrap().to_string();
            (proto, ip("src"), ip("dst"), sport, dport)
        })
        .collect();
    let reference = reference_community_ids(&tuples);
    assert_eq!(reference.len(), all.len());
    for (e, want) in all.iter().zip(&reference) {
        assert_eq!(e["community_id"], want.as_str(), "{e}");
    }
    let protos: std::collections::BTreeSet<u8> = tuples.iter().map(|t| t.0).collect();
    assert_eq!(protos, [1, 6, 17, 58].into(), "v4 and v6, TCP, UDP, ICMP");
    for proto in [6, 17, 58] {
        assert!(
            all.iter()
                .any(|e| e["src"] == addr::A6 && e["proto"] == proto),
            "an IPv6 flow of protocol {proto}"
        );
    }

    // rsyslog over TLS: JSON bodies, the same events as the flow log, and the commit's audit entries.
    let last_seq = all.last().unwrap()["seq"].as_u64().unwrap();
    let tls = wait_for(20, "rsyslog to receive every flow event over TLS", || {
        let lines = rsyslog.lines("tls");
        let seqs = lines
            .iter()
            .filter(|l| l[3] == "flow")
            .filter_map(|l| serde_json::from_str::<Value>(&l[4]).ok()?["seq"].as_u64());
        (seqs.max() >= Some(last_seq)).then_some(lines)
    });
    for l in &tls {
        assert_eq!(
            (l[1].as_str(), l[2].as_str()),
            ("gw-test", "bulkhead"),
            "{l:?}"
        );
    }
    let flows: Vec<Value> = tls
        .iter()
        .filter(|l| l[3] == "flow")
        .map(|l| serde_json::from_str(&l[4]).unwrap())
        .collect();
    let got = flows
        .iter()
        .find(|f| f["seq"] == http["seq"])
        .expect("the HTTP flow's closed event");
    for key in [
        "src",
        "dst",
        "sport",
        "dport",
        "proto",
        "packets",
        "bytes",
        "community_id",
        "conn_state",
        "rule_id",
    ] {
        assert_eq!(got[key], http[key], "{key}");
    }
    assert_eq!(got["type"], "flow");
    let denied = flows
        .iter()
        .find(|f| f["kind"] == "denied")
        .expect("the denied ping");
    assert_eq!(
        (denied["rule_id"].clone(), denied["verdict"].clone()),
        (json!(90), json!("deny"))
    );
    let pri = |l: &Vec<String>| l[0].parse::<u32>().unwrap();
    assert!(tls
        .iter()
        .filter(|l| l[3] == "flow")
        .all(|l| pri(l) == 16 * 8 + 6 || pri(l) == 16 * 8 + 5));
    let audits: Vec<Value> = wait_for(10, "the commit's audit entries", || {
        let a: Vec<Value> = rsyslog
            .lines("tls")
            .iter()
            .filter(|l| l[3] == "audit")
            .map(|l| serde_json::from_str(&l[4]).unwrap())
            .filter(|a: &Value| a["action"] == "commit")
            .collect();
        (a.len() >= 2).then_some(a)
    });
    assert!(
        audits
            .iter()
            .any(|a| a["phase"] == "intent" && a["who"] == "admin"),
        "{audits:?}"
    );
    assert!(
        audits
            .iter()
            .any(|a| a["outcome"].is_string() && a["version_after"] == 2),
        "{audits:?}"
    );

    // rsyslog over UDP: CEF bodies.
    let cef = wait_for(20, "CEF messages over UDP", || {
        let lines = rsyslog.lines("udp");
        lines
            .iter()
            .any(|l| l[4].contains(&format!("externalId={}", http["seq"])))
            .then_some(lines)
    });
    let http_cef = &cef
        .iter()
        .find(|l| l[4].contains(&format!("externalId={} ", http["seq"])))
        .unwrap()[4];
    assert!(
        http_cef.starts_with("CEF:0|Bulkhead|Bulkhead Gateway|"),
        "{http_cef}"
    );
    assert!(
        http_cef.contains("|flow:closed|Flow closed|3|"),
        "{http_cef}"
    );
    for field in [
        format!("src={}", http["src"].as_str().unwrap()),
        format!("dst={}", http["dst"].as_str().unwrap()),
        format!("spt={}", http["sport"]),
        "dpt=8080".into(),
        "proto=TCP".into(),
        format!("out={}", http["bytes"][0]),
        format!("in={}", http["bytes"][1]),
        format!(
            "cs2={}",
            http["community_id"].as_str().unwrap().replace('=', "\\=")
        ),
        "cs1=10 cs1Label=ruleId".into(),
        "cs3=engineering cs3Label=srcSegments".into(),
    ] {
        assert!(http_cef.contains(&field), "{field} in {http_cef}");
    }
    let audit_cef = cef
        .iter()
        .find(|l| l[3] == "audit" && l[4].contains("|audit:commit|") && l[4].contains("cn2=2"))
        .expect("the commit's CEF audit entry");
    assert!(
        audit_cef[4].contains("suser=admin act=commit"),
        "{audit_cef:?}"
    );
    assert!(
        audit_cef[4].contains("cs2=intent cs2Label=phase"),
        "{audit_cef:?}"
    );

    // nfcapd: stopped, so it closes its file; nfdump reads the closed HTTP flow back with its counts.
    wait_for(10, "the IPFIX exporter to send the closed flows", || {
        (metric(&c, r#"bulkhead_export_sent_total{exporter="nfcapd"}"#) >= all.len() as f64)
            .then_some(())
    });
    nfcapd.stop();
    let records = nfdump_records(&nf_dir);
    let want = [
        http["src"].as_str().unwrap().to_string(),
        http["dst"].as_str().unwrap().to_string(),
        http["sport"].to_string(),
        "8080".into(),
        "6".into(),
        http["packets"][0].to_string(),
        http["bytes"][0].to_string(),
        "...A..SF".into(),
    ];
    assert!(
        records.iter().any(|r| r[..] == want[..]),
        "{want:?} not in {records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r[0] == addr::A6 && r[1] == addr::B6 && r[3] == "128.0" && r[4] == "58"),
        "an ICMPv6 record in {records:?}"
    );

    // The TLS receiver goes away: what the exporter cannot hold is dropped and counted; it reconnects by
    // itself when the receiver is back.
    rsyslog.daemon.stop();
    wait_for(10, "the exporter to see the receiver gone", || {
        (metric(&c, r#"bulkhead_export_connected{exporter="siem-tls"}"#) == 0.0).then_some(())
    });
    let burst = format!(
        "import socket\nfor _ in range(150):\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{}', 5353))",
        addr::B4
    );
    bed.a.ok(&["python3", "-c", &burst]).unwrap();
    wait_for(20, "drops while the receiver is down", || {
        (metric(
            &c,
            r#"bulkhead_export_dropped_total{exporter="siem-tls",reason="queue_full"}"#,
        ) > 0.0)
            .then_some(())
    });
    rsyslog.restart();
    wait_for(20, "the exporter to reconnect", || {
        (metric(&c, r#"bulkhead_export_connected{exporter="siem-tls"}"#) == 1.0
            && metric(
                &c,
                r#"bulkhead_export_reconnects_total{exporter="siem-tls"}"#,
            ) >= 1.0)
            .then_some(())
    });
    bed.a.ok(&["ping", "-c", "1", "-W", "1", addr::B4]).unwrap();
    // Everything offered is either received or counted as dropped.
    let offered = || {
        metric(&c, "bulkhead_flow_log_events_total")
            + c.call("GET", "/api/v1/audit", None).unwrap().body["entries"]
                .as_array()
                .unwrap()
                .len() as f64
    };
    let (sent, dropped) = wait_for(30, "the exporter to account for every item", || {
        let sent = metric(&c, r#"bulkhead_export_sent_total{exporter="siem-tls"}"#);
        let dropped = metric(
            &c,
            r#"bulkhead_export_dropped_total{exporter="siem-tls",reason="queue_full"}"#,
        ) + metric(
            &c,
            r#"bulkhead_export_dropped_total{exporter="siem-tls",reason="send_error"}"#,
        );
        (sent + dropped == offered() && rsyslog.lines("tls").len() as f64 == sent)
            .then_some((sent, dropped))
    });
    assert!(dropped > 0.0 && sent > 0.0);
    drop(c);
    drop(bed);
}
