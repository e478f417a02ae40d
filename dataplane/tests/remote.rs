//! What a control process that drives several gateways relies on: two-step policy loading (prepare, then
//! publish) with real traffic across the bed, and a restart between the two steps. Needs root and ping.

use std::path::Path;

use protocol::{DiscardResult, LoadPolicyResult, PreparedPolicy, Request, Status};
use serde_json::{json, Value};
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
