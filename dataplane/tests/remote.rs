//! What a control process that drives several gateways relies on: two-step policy loading (prepare, then
//! publish) with real traffic across the bed, a restart between the two steps, and the remote listener's
//! mutual TLS (certificates made with the `openssl` commands of docs/remote-gateways.md). Needs root, ping and
//! openssl.

use std::path::{Path, PathBuf};

use protocol::{DiscardResult, LoadPolicyResult, PreparedPolicy, Request, Status};
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

fn bed() -> TestBed {
    let opts = Options::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"));
    TestBed::start(&opts).unwrap_or_else(|e| panic!("test bed: {e}"))
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
    load(&bed, demo_policy(), 1);
    assert!(ping(&bed), "the demo policy allows ping from A to B");

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

/// A directory of its own for one test's certificates.
fn pki_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bh-remote-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn remote_bed(remote: RemoteOptions) -> TestBed {
    let mut opts = Options::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"));
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
    let dir = pki_dir("refuses");
    let pki = Pki::new(dir.join("ca")).unwrap();
    let control = pki.client("control", 30).unwrap();
    let expired = pki.client("expired", -1).unwrap();
    let stranger = Pki::new(dir.join("other-ca")).unwrap();
    let foreign = stranger.client("control", 30).unwrap();
    let lone = Pki::new(dir.join("self-signed")).unwrap();
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
    // The same handling as the local socket: a malformed request gets its error on the connection.
    let bad = testbed::remote::exchange(
        bed.remote_addr().unwrap(),
        &pki.ca(),
        Some(&control),
        "{\"v\":1,\"op\":\"no_such_op\"}",
    )
    .unwrap();
    assert!(bad.contains("bad_request"), "{bad}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mtls_accepts_a_pinned_certificate_and_no_other() {
    let dir = pki_dir("pins");
    let pki = Pki::new(dir.join("ca")).unwrap();
    // Clients of a CA the dataplane does not trust: only the pinned one gets in.
    let clients = Pki::new(dir.join("clients")).unwrap();
    let pinned = clients.client("pinned", 30).unwrap();
    let other = clients.client("other", 30).unwrap();
    let remote = RemoteOptions {
        client_ca: None,
        client_pins: vec![clients.fingerprint("pinned").unwrap()],
        pki,
    };
    let bed = remote_bed(remote);
    refused_handshake(&bed, Some(&other));
    refused_handshake(&bed, None);
    let s = remote_status(&bed, &pinned);
    assert_eq!(s.remote_control.unwrap().handshake_failures, 2);
    let _ = std::fs::remove_dir_all(&dir);
}
