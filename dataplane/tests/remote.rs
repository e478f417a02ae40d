//! What a control process that drives several gateways relies on: two-step policy loading (prepare, then
//! publish) with real traffic across the bed, a restart between the two steps, and the remote listener's
//! mutual TLS (certificates made with the `openssl` commands of docs/remote-gateways.md). Needs root, ping and
//! openssl.

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use protocol::{
    CountersReport, DiscardResult, FlowFilter, FlowList, LoadPolicyResult, PreparedPolicy, Request,
    Status,
};
use serde_json::{json, Value};
use testbed::pki::{Identity, Pki};
use testbed::remote::RemoteOptions;
use testbed::{addr, Options, TestBed};

fn demo_policy() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// No rules, and a default that drops everything.
fn deny_all() -> Value {
    let mut p: Value =
        serde_json::from_str(&std::fs::read_to_string(testbed::policy_file("open.json")).unwrap())
            .unwrap();
    p["settings"]["default_action"] = json!("deny");
    p
}

/// Beds here run with the idle back-off on: publishes and flow commands must not wait for sleeping workers.
fn options() -> Options {
    let mut opts = Options::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"));
    opts.idle_sleep_max_us = 1000;
    opts
}

fn bed() -> TestBed {
    TestBed::start(&options()).unwrap_or_else(|e| panic!("test bed: {e}"))
}

fn ping(bed: &TestBed) -> bool {
    bed.a
        .run(&["ping", "-c", "2", "-i", "0.2", "-W", "1", addr::B4])
        .unwrap()
        .status
        .success()
}

fn status(bed: &TestBed) -> Status {
    bed.ask(&Request::Status {}).unwrap()
}

/// The rte_acl algorithm DPDK picks on this x86-64 CPU under the EAL's default 256-bit SIMD limit: AVX-512
/// (16 flows at once) where the CPU has the four extensions rte_acl's AVX-512 code needs, else AVX2, else SSE.
fn default_classifier() -> &'static str {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &str| flags.contains(&f);
    if ["avx512f", "avx512vl", "avx512cd", "avx512bw"]
        .iter()
        .all(|f| has(f))
    {
        "avx512x16"
    } else if has("avx2") {
        "avx2"
    } else {
        "sse"
    }
}

/// The code of a refusal.
fn refusal(result: testbed::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(testbed::Error::Refused(e)) => e.code.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn load(bed: &TestBed, policy: Value, version: u64) {
    let loaded: LoadPolicyResult = bed
        .ask(&Request::LoadPolicy {
            policy,
            version: Some(version),
        })
        .unwrap();
    assert_eq!(u64::from(loaded.version), version);
}

fn prepare(bed: &TestBed, policy: Value, version: u32) -> PreparedPolicy {
    bed.ask(&Request::PreparePolicy { policy, version })
        .unwrap()
}

#[test]
fn two_step_prepare_changes_nothing_and_publish_enforces() {
    let bed = bed();
    let pending_file = bed.dir.join("state/pending.json");
    assert_eq!(status(&bed).classifier, None, "no policy, no classifier");
    load(&bed, demo_policy(), 1);
    assert!(ping(&bed), "the demo policy allows ping from A to B");
    assert_eq!(
        status(&bed).classifier.as_deref(),
        Some(default_classifier()),
        "the status names the rte_acl algorithm DPDK picked"
    );

    let prepared = prepare(&bed, deny_all(), 2);
    assert_eq!(prepared.version, 2);
    let s = status(&bed);
    assert_eq!((s.policy_version, s.prepared_version), (Some(1), Some(2)));
    assert!(pending_file.exists(), "the pending version is persisted");
    assert!(ping(&bed), "a prepared version changes nothing");

    // Only the prepared version can be published.
    let other = bed.ask::<LoadPolicyResult>(&Request::PublishPolicy { version: 3 });
    assert_eq!(refusal(other), "not_prepared");
    assert!(ping(&bed));

    let published: LoadPolicyResult = bed.ask(&Request::PublishPolicy { version: 2 }).unwrap();
    assert_eq!(published.version, 2);
    assert!(!ping(&bed), "the published version denies everything");
    let s = status(&bed);
    assert_eq!((s.policy_version, s.prepared_version), (Some(2), None));
    assert!(!pending_file.exists());
    let again = bed.ask::<LoadPolicyResult>(&Request::PublishPolicy { version: 2 });
    assert_eq!(refusal(again), "not_prepared", "a version publishes once");

    // Discard: only the pending version, and then it cannot be published.
    prepare(&bed, demo_policy(), 3);
    let d: DiscardResult = bed.ask(&Request::DiscardPrepared { version: 4 }).unwrap();
    assert!(!d.discarded);
    assert_eq!(status(&bed).prepared_version, Some(3));
    let d: DiscardResult = bed.ask(&Request::DiscardPrepared { version: 3 }).unwrap();
    assert!(d.discarded);
    assert_eq!(status(&bed).prepared_version, None);
    assert!(!pending_file.exists());
    let gone = bed.ask::<LoadPolicyResult>(&Request::PublishPolicy { version: 3 });
    assert_eq!(refusal(gone), "not_prepared");

    // A new prepare replaces the pending one; an invalid one leaves none pending.
    prepare(&bed, demo_policy(), 3);
    prepare(&bed, demo_policy(), 4);
    assert_eq!(status(&bed).prepared_version, Some(4));
    let replaced = bed.ask::<LoadPolicyResult>(&Request::PublishPolicy { version: 3 });
    assert_eq!(refusal(replaced), "not_prepared");
    let invalid = bed.ask::<PreparedPolicy>(&Request::PreparePolicy {
        policy: json!({"format": "x"}),
        version: 5,
    });
    assert_eq!(refusal(invalid), "invalid_policy");
    assert_eq!(status(&bed).prepared_version, None);
    assert!(!ping(&bed), "nothing of this changed what is enforced");
    assert_eq!(status(&bed).policy_version, Some(2));

    // load_policy supersedes a pending version.
    prepare(&bed, deny_all(), 6);
    load(&bed, demo_policy(), 7);
    assert_eq!(status(&bed).prepared_version, None);
    assert!(ping(&bed));
}

#[test]
fn two_step_a_kill_between_prepare_and_publish_restarts_with_the_published_version() {
    let mut bed = bed();
    load(&bed, demo_policy(), 1);
    prepare(&bed, deny_all(), 2);
    let killed = bed.kill_and_restart().unwrap();
    assert!(!killed.success(), "{killed}");
    let s = status(&bed);
    assert_eq!((s.policy_version, s.prepared_version), (Some(1), None));
    assert!(
        ping(&bed),
        "the published version is enforced, not the pending one"
    );
    assert!(
        bed.stderr()
            .contains("removed a prepared policy version that was never published"),
        "{}",
        bed.stderr()
    );
    assert!(!bed.dir.join("state/pending.json").exists());
    let lost = bed.ask::<LoadPolicyResult>(&Request::PublishPolicy { version: 2 });
    assert_eq!(refusal(lost), "not_prepared");
}

/// One test's CA (in a directory of its own, removed at the end) and control's client certificate from it.
struct TestPki {
    dir: PathBuf,
    pki: Pki,
    control: Identity,
}

impl TestPki {
    fn new(name: &str) -> TestPki {
        let dir = std::env::temp_dir().join(format!("bh-remote-{}-{name}", std::process::id()));
        let pki = Pki::new(dir.join("ca")).unwrap();
        let control = pki.client("control", 30).unwrap();
        TestPki { dir, pki, control }
    }

    /// Another CA beside this one.
    fn other(&self, name: &str) -> Pki {
        Pki::new(self.dir.join(name)).unwrap()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn remote_bed(remote: RemoteOptions) -> TestBed {
    let mut opts = options();
    opts.remote = Some(remote);
    TestBed::start(&opts).unwrap_or_else(|e| panic!("test bed: {e}"))
}

fn remote_status(bed: &TestBed, who: &Identity) -> Status {
    bed.ask_remote(Some(who), &Request::Status {}).unwrap()
}

/// The request is refused during the handshake: the client gets a TLS error or a closed connection, never an
/// answer.
fn refused_handshake(bed: &TestBed, who: Option<&Identity>) {
    match bed.control_remote(who, &Request::Status {}) {
        Err(testbed::Error::Tls(_) | testbed::Error::Io(_)) => {}
        other => panic!("{who:?}: expected the handshake to be refused, got {other:?}"),
    }
}

#[test]
fn mtls_refuses_clients_without_a_certificate_the_ca_issued_and_serves_one_that_has() {
    let t = TestPki::new("refuses");
    let (pki, control) = (&t.pki, t.control.clone());
    let expired = pki.client("expired", -1).unwrap();
    let foreign = t.other("other-ca").client("control", 30).unwrap();
    let lone = t.other("self-signed");
    let bed = remote_bed(RemoteOptions::new(pki.clone()));

    for who in [
        None,
        Some(&lone.self_signed()),
        Some(&foreign),
        Some(&expired),
    ] {
        refused_handshake(&bed, who);
    }
    let s = remote_status(&bed, &control);
    let remote = s.remote_control.expect("status shows the remote listener");
    assert_eq!(remote.handshake_failures, 4, "{remote:?}");
    assert_eq!(remote.sessions, 1, "{remote:?}");
    assert_eq!(
        remote.listen,
        bed.remote_addr().unwrap().to_string(),
        "{remote:?}"
    );

    // A good client drives the two-step load over TLS, and it changes real traffic.
    load(&bed, demo_policy(), 1);
    assert!(ping(&bed));
    let prepared: PreparedPolicy = bed
        .ask_remote(
            Some(&control),
            &Request::PreparePolicy {
                policy: deny_all(),
                version: 2,
            },
        )
        .unwrap();
    assert_eq!(prepared.version, 2);
    assert_eq!(remote_status(&bed, &control).prepared_version, Some(2));
    let published: LoadPolicyResult = bed
        .ask_remote(Some(&control), &Request::PublishPolicy { version: 2 })
        .unwrap();
    assert_eq!(published.version, 2);
    assert!(!ping(&bed));
    // Flow commands reach the (sleeping) worker too.
    load(&bed, demo_policy(), 3);
    let pinger = bed.a.spawn(&["ping", "-i", "0.2", addr::B4]).unwrap();
    let flows = wait_for(|| {
        let list: FlowList = bed
            .ask_remote(
                Some(&control),
                &Request::Flows {
                    filter: FlowFilter {
                        proto: Some(1),
                        ..Default::default()
                    },
                    limit: None,
                },
            )
            .unwrap();
        (!list.flows.is_empty()).then_some(list)
    });
    assert_eq!(flows.flows[0].dst.to_string(), addr::B4);
    drop(pinger);
    // The same handling as the local socket: a malformed request gets its error on the connection.
    let bad = testbed::remote::exchange(
        bed.remote_addr().unwrap(),
        &pki.ca(),
        Some(&control),
        "{\"v\":1,\"op\":\"no_such_op\"}",
    )
    .unwrap();
    assert!(bad.contains("bad_request"), "{bad}");
}

#[test]
fn mtls_accepts_a_pinned_certificate_and_no_other() {
    let t = TestPki::new("pins");
    // Clients of a CA the dataplane does not trust: only the pinned one gets in.
    let clients = t.other("clients");
    let pinned = clients.client("pinned", 30).unwrap();
    let other = clients.client("other", 30).unwrap();
    let remote = RemoteOptions {
        client_ca: None,
        client_pins: vec![clients.fingerprint("pinned").unwrap()],
        ..RemoteOptions::new(t.pki.clone())
    };
    let bed = remote_bed(remote);
    refused_handshake(&bed, Some(&other));
    refused_handshake(&bed, None);
    let s = remote_status(&bed, &pinned);
    assert_eq!(s.remote_control.unwrap().handshake_failures, 2);
}

/// Polls `f` until it gives something (10 s at most; the dataplane is then broken, not slow).
fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "the condition never held");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Replaces `to` with `from`'s content the way an operator should: a new file renamed over the old.
fn replace_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[test]
fn mtls_server_certificate_rotates_on_sighup_while_traffic_crosses_undisturbed() {
    let t = TestPki::new("rotate");
    let (pki, control) = (&t.pki, t.control.clone());
    let mut opts = options();
    opts.remote = Some(RemoteOptions::new(pki.clone()));
    opts.policy = Some(testbed::policy_file("open.json"));
    let bed = TestBed::start(&opts).unwrap_or_else(|e| panic!("test bed: {e}"));
    let server = bed.server_identity().unwrap().clone();
    let before = remote_status(&bed, &control).remote_control.unwrap();

    // The kernel's own IPv6 chatter (MLD reports, router solicitations) is dropped by policy at its own pace;
    // without IPv6 on the bed's interfaces every drop below would be the rotation's.
    for side in [&bed.a, &bed.b] {
        let knob = format!("net.ipv6.conf.{}.disable_ipv6=1", side.iface);
        side.ok(&["sysctl", "-q", "-w", &knob]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let dropped = || {
        let c: CountersReport = bed.ask(&Request::Counters {}).unwrap();
        c.totals.dropped()
    };
    let drops_before = dropped();
    let side = bed.a.clone();
    let traffic = std::thread::spawn(move || {
        side.run(&["ping", "-c", "150", "-i", "0.02", "-W", "1", addr::B4])
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));

    // A new certificate for the same gateway, swapped in and announced with SIGHUP.
    let next = pki
        .server("gw-next", testbed::remote::LISTEN_ADDR, 30)
        .unwrap();
    replace_file(&next.key, &server.key);
    replace_file(&next.cert, &server.cert);
    bed.reload().unwrap();
    let after = wait_for(|| {
        let r = remote_status(&bed, &control).remote_control.unwrap();
        (r.reloads == 1).then_some(r)
    });
    assert_eq!(after.cert_sha256, pki.fingerprint("gw-next").unwrap());
    assert_ne!(after.cert_sha256, before.cert_sha256);

    // An unusable set (a key that is not the certificate's) is refused; the served one stays.
    replace_file(&control.key, &server.key);
    bed.reload().unwrap();
    let kept = wait_for(|| {
        let r = remote_status(&bed, &control).remote_control.unwrap();
        (r.reload_failures == 1).then_some(r)
    });
    assert_eq!(kept.cert_sha256, after.cert_sha256);
    assert!(
        bed.stderr().contains("keeps its previous certificates"),
        "{}",
        bed.stderr()
    );

    let ping = traffic.join().unwrap();
    let out = String::from_utf8_lossy(&ping.stdout);
    assert!(out.contains(" 0% packet loss"), "{out}");
    assert_eq!(dropped(), drops_before, "no packet was dropped meanwhile");
}

#[test]
fn mtls_a_silent_or_plaintext_client_is_closed_and_counted() {
    use std::io::{Read, Write};
    let t = TestPki::new("silent");
    let remote = RemoteOptions {
        handshake_timeout_ms: 300,
        ..RemoteOptions::new(t.pki.clone())
    };
    let bed = remote_bed(remote);
    let addr = bed.remote_addr().unwrap();

    // Says nothing: closed at the handshake deadline, without a byte.
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    silent.read_to_end(&mut got).unwrap();
    assert!(got.is_empty(), "{got:?}");

    // Speaks the protocol without TLS: no answer, whatever it asks.
    let mut plain = std::net::TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain.write_all(b"{\"v\":1,\"op\":\"status\"}\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("\"ok\""), "{got:?}");

    let r = remote_status(&bed, &t.control).remote_control.unwrap();
    assert_eq!(
        (r.handshake_timeouts, r.handshake_failures),
        (1, 1),
        "{r:?}"
    );
}

#[test]
fn mtls_three_remote_beds_run_side_by_side() {
    let t = TestPki::new("three");
    let (pki, control) = (&t.pki, t.control.clone());
    let beds: Vec<TestBed> = (0..3)
        .map(|_| remote_bed(RemoteOptions::new(pki.clone())))
        .collect();
    for (i, bed) in beds.iter().enumerate() {
        let version = 10 + i as u32;
        let _: PreparedPolicy = bed
            .ask_remote(
                Some(&control),
                &Request::PreparePolicy {
                    policy: demo_policy(),
                    version,
                },
            )
            .unwrap();
        let _: LoadPolicyResult = bed
            .ask_remote(Some(&control), &Request::PublishPolicy { version })
            .unwrap();
    }
    for (i, bed) in beds.iter().enumerate() {
        assert!(ping(bed), "bed {i}");
        assert_eq!(
            remote_status(bed, &control).policy_version,
            Some(10 + i as u32)
        );
    }
}

#[test]
fn remote_config_is_checked_before_anything_starts() {
    let t = TestPki::new("check");
    let (dir, pki) = (&t.dir, &t.pki);
    let server = pki.server("gw", testbed::remote::LISTEN_ADDR, 30).unwrap();
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dataplane.toml"),
    )
    .unwrap();
    let check = |section: String| {
        let path = dir.join("dataplane.toml");
        std::fs::write(&path, format!("{base}\n[remote_control]\n{section}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let files = |cert: &Path, key: &Path| {
        format!(
            "listen = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        )
    };
    let ca = format!("client_ca = {:?}\n", pki.ca().display().to_string());
    let good = files(&server.cert, &server.key);
    assert_eq!(check(good.clone() + &ca).0, Some(0));

    // Nobody could be accepted: refused, naming the section.
    let (code, err) = check(good.clone());
    assert_eq!(code, Some(2));
    assert!(
        err.contains("remote_control: set client_ca, client_pins or both"),
        "{err}"
    );
    // There is no plaintext listener: without a certificate it is not a config.
    let (code, err) = check(format!("listen = \"127.0.0.1:0\"\n{ca}"));
    assert_eq!(code, Some(2));
    assert!(err.contains("missing field `cert`"), "{err}");
    let (code, err) = check(good.clone() + "client_pins = [\"AB:CD\"]\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("remote_control.client_pins[0]"), "{err}");
    // The files themselves are read: a key that is not the certificate's, a CA that is not PEM.
    let client = pki.client("client", 30).unwrap();
    let (code, err) = check(files(&server.cert, &client.key) + &ca);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("remote_control.cert and remote_control.key"),
        "{err}"
    );
    let (code, err) =
        check(good + &format!("client_ca = {:?}\n", server.key.display().to_string()));
    assert_eq!(code, Some(2));
    assert!(err.contains("remote_control.client_ca"), "{err}");
}

#[test]
fn mtls_connections_beyond_the_limit_are_closed_and_counted() {
    let t = TestPki::new("limit");
    let remote = RemoteOptions {
        max_connections: 1,
        ..RemoteOptions::new(t.pki.clone())
    };
    let bed = remote_bed(remote);
    // A connection that has not finished its handshake holds the only slot...
    let holder = std::net::TcpStream::connect(bed.remote_addr().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    refused_handshake(&bed, Some(&t.control));
    // ...until it goes; then the slot serves again.
    drop(holder);
    let r = wait_for(|| {
        bed.ask_remote::<Status>(Some(&t.control), &Request::Status {})
            .ok()
    })
    .remote_control
    .unwrap();
    assert!(r.over_limit >= 1, "{r:?}");
    assert_eq!(r.sessions, 1, "{r:?}");
}

#[test]
fn mtls_sighup_rereads_the_client_ca_and_pins() {
    let t = TestPki::new("reread");
    let next_ca = t.other("next-ca");
    let newcomer = next_ca.client("newcomer", 30).unwrap();
    let clients = t.other("clients");
    let pinned = clients.client("pinned", 30).unwrap();
    // The dataplane's client CA file, apart from the file its own certificate is checked with.
    let ca_file = t.dir.join("client-ca.pem");
    std::fs::copy(t.pki.ca(), &ca_file).unwrap();
    let bed = remote_bed(RemoteOptions {
        client_ca: Some(ca_file.clone()),
        ..RemoteOptions::new(t.pki.clone())
    });
    refused_handshake(&bed, Some(&newcomer));
    refused_handshake(&bed, Some(&pinned));

    // The operator trusts a second CA (both in the CA file) and pins one more certificate, then reloads.
    let both = std::fs::read_to_string(&ca_file).unwrap()
        + &std::fs::read_to_string(next_ca.ca()).unwrap();
    std::fs::write(ca_file.with_extension("both"), both).unwrap();
    replace_file(&ca_file.with_extension("both"), &ca_file);
    let config = bed.dir.join("dataplane.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "client_pins = []",
        &format!(
            "client_pins = [{:?}]",
            clients.fingerprint("pinned").unwrap()
        ),
    );
    std::fs::write(&config, text).unwrap();
    bed.reload().unwrap();
    wait_for(|| {
        let r = remote_status(&bed, &t.control).remote_control.unwrap();
        (r.reloads == 1).then_some(())
    });
    for who in [&t.control, &newcomer, &pinned] {
        remote_status(&bed, who);
    }

    // And withdraws the first CA: its clients are refused from the next connection on.
    replace_file(&next_ca.ca(), &ca_file);
    bed.reload().unwrap();
    wait_for(|| {
        let r = remote_status(&bed, &newcomer).remote_control.unwrap();
        (r.reloads == 2).then_some(())
    });
    refused_handshake(&bed, Some(&t.control));
    remote_status(&bed, &pinned);
}
