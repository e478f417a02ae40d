//! The two-person rule, scheduled commits (fired once, across a restart too) and reverting a pending commit
//! on request, against a real control process and a real dataplane (on `net_null` ports).

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use serde_json::{json, Value};
use testbed::control::Control;

/// A token of `role` for `identity`, made through the API with the admin token: its secret.
fn new_token(c: &Control, identity: &str, role: &str) -> String {
    let r = c
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&json!({"identity": identity, "role": role})),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["token"].as_str().unwrap().to_string()
}

/// A request with `token` (and `If-Match: etag` when not empty): status and body.
fn send(
    c: &Control,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    etag: &str,
) -> (u16, Value) {
    let headers: &[(&str, &str)] = if etag.is_empty() {
        &[]
    } else {
        &[("If-Match", etag)]
    };
    let r = c.request(method, path, body, headers, Some(token)).unwrap();
    (r.status, r.body)
}

fn versions(c: &Control) -> Vec<Value> {
    let r = c.call("GET", "/api/v1/versions", None).unwrap();
    ok(&r);
    r.body["versions"].as_array().unwrap().clone()
}

fn audit(c: &Control) -> Vec<Value> {
    let r = c.call("GET", "/api/v1/audit", None).unwrap();
    ok(&r);
    r.body["entries"].as_array().unwrap().clone()
}

fn with_rule_removed(doc: &Value, id: u64) -> Value {
    let mut doc = doc.clone();
    doc["rules"]
        .as_array_mut()
        .unwrap()
        .retain(|r| r["id"] != id);
    doc
}

/// RFC 3339 for `secs` from now.
fn in_secs(secs: u64) -> String {
    let t = SystemTime::now() + Duration::from_secs(secs);
    humantime::format_rfc3339_millis(t).to_string()
}

#[test]
fn the_two_person_rule_needs_a_submission_by_someone_else() {
    let d = test_dir("two-person");
    let dp = NullDataplane::start(&d);
    let mut opts = control_opts(&d, &dp.socket);
    opts.extra = "[approvals]\ntwo_person = true\n".into();
    let c = start_control(&opts);
    let alice = new_token(&c, "alice", "author");
    let carol = new_token(&c, "carol", "author");
    let bob = new_token(&c, "bob", "approver");

    // Nothing submitted: no commit, even by an approver.
    import(&c, &policy_doc());
    let etag = draft_etag(&c);
    let (status, body) = send(&c, &bob, "POST", "/api/v1/commit", None, &etag);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "approval_required", "{body}");

    // Alice submits; an author cannot commit, and an approver cannot approve their own submission.
    let (status, body) = send(
        &c,
        &alice,
        "POST",
        "/api/v1/draft/submission",
        Some(&json!({"comment": "db access for clients"})),
        &etag,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["submission"]["submitted_by"], "alice", "{body}");
    let (status, body) = send(&c, &alice, "POST", "/api/v1/commit", None, &etag);
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("commit"),
        "{body}"
    );
    let (status, _) = send(&c, &bob, "POST", "/api/v1/draft/submission", None, &etag);
    assert_eq!(status, 200);
    let (status, body) = send(&c, &bob, "POST", "/api/v1/commit", None, &etag);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "two_person_rule", "{body}");

    // An edit withdraws the submission.
    import(&c, &with_rule_removed(&policy_doc(), 20));
    let r = c.call("GET", "/api/v1/draft/submission", None).unwrap();
    assert_eq!(r.body["submission"], Value::Null, "{}", r.body);
    assert_eq!(commit(&c, json!({})).status, 409);

    // Submitted by alice, committed by bob: both identities recorded.
    let etag = draft_etag(&c);
    let (status, _) = send(&c, &alice, "POST", "/api/v1/draft/submission", None, &etag);
    assert_eq!(status, 200);
    let (status, body) = send(
        &c,
        &bob,
        "POST",
        "/api/v1/commit",
        Some(&json!({"comment": "approved"})),
        &etag,
    );
    assert_eq!(status, 200, "{body}");
    let version = body["version"].as_u64().unwrap();
    let meta = &versions(&c)[0];
    assert_eq!(meta["version"], version);
    assert_eq!(meta["author"], "bob");
    assert_eq!(meta["submitted_by"], "alice");
    let entries = audit(&c);
    let submit = entries
        .iter()
        .rfind(|e| e["action"] == "draft.submit")
        .unwrap();
    assert_eq!(submit["who"], "alice");
    let committed = entries
        .iter()
        .filter(|e| e["action"] == "commit")
        .collect::<Vec<_>>();
    assert_eq!(committed.len(), 2, "intent and outcome: {entries:?}");
    assert!(committed.iter().all(|e| e["who"] == "bob"));
    assert_eq!(committed[0]["phase"], "intent");
    assert_eq!(committed[0]["details"]["submitted_by"], "alice");
    // The submission is used up.
    let r = c.call("GET", "/api/v1/draft/submission", None).unwrap();
    assert_eq!(r.body["submission"], Value::Null);

    // Withdrawn by its author; another author may not reject it, an approver may.
    import(&c, &policy_doc());
    let etag = draft_etag(&c);
    send(&c, &alice, "POST", "/api/v1/draft/submission", None, &etag);
    let (status, body) = send(&c, &alice, "DELETE", "/api/v1/draft/submission", None, "");
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(&c, &alice, "DELETE", "/api/v1/draft/submission", None, "");
    assert_eq!(status, 409, "{body}");
    send(&c, &alice, "POST", "/api/v1/draft/submission", None, &etag);
    let (status, body) = send(&c, &carol, "DELETE", "/api/v1/draft/submission", None, "");
    assert_eq!(status, 403, "{body}");
    let (status, body) = send(
        &c,
        &bob,
        "DELETE",
        "/api/v1/draft/submission",
        Some(&json!({"reason": "too broad"})),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let actions = audit_actions(&c);
    assert!(
        actions.contains(&"draft.withdraw".to_string()),
        "{actions:?}"
    );
    assert!(actions.contains(&"draft.reject".to_string()), "{actions:?}");
}

#[test]
fn the_rule_is_off_by_default() {
    let d = test_dir("one-person");
    let dp = NullDataplane::start(&d);
    let c = start_control(&control_opts(&d, &dp.socket));
    import(&c, &policy_doc());
    ok(&commit(&c, json!({})));
    let r = c.call("GET", "/api/v1/draft/submission", None).unwrap();
    assert_eq!(r.body["two_person_rule"], false);
}

#[test]
fn a_scheduled_commit_fires_once_and_can_be_cancelled() {
    let d = test_dir("schedule");
    let dp = NullDataplane::start(&d);
    let c = start_control(&control_opts(&d, &dp.socket));
    import(&c, &policy_doc());
    ok(&commit(&c, json!({})));
    let first = versions(&c).len();

    // Refusals: a time in the past, a time that is not RFC 3339, an unknown field.
    let etag = draft_etag(&c);
    for (body, status) in [
        (json!({"at": "2020-01-01T00:00:00Z"}), 400),
        (json!({"at": "tomorrow"}), 400),
        (json!({"at": in_secs(3600), "extra": 1}), 422),
    ] {
        let r = c
            .write("POST", "/api/v1/scheduled-commit", Some(&body), &etag)
            .unwrap();
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }

    // Scheduled far ahead, then cancelled: nothing happens.
    import(&c, &with_rule_removed(&policy_doc(), 20));
    let etag = draft_etag(&c);
    let r = c
        .write(
            "POST",
            "/api/v1/scheduled-commit",
            Some(&json!({"at": in_secs(3600), "comment": "window"})),
            &etag,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["scheduled"]["state"], "waiting");
    let r = c
        .write(
            "POST",
            "/api/v1/scheduled-commit",
            Some(&json!({"at": in_secs(7200)})),
            &etag,
        )
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "already_scheduled");
    ok(&c.call("DELETE", "/api/v1/scheduled-commit", None).unwrap());
    let r = c.call("DELETE", "/api/v1/scheduled-commit", None).unwrap();
    assert_eq!(r.status, 404);

    // Scheduled soon: committed once, what was scheduled (not the later edit).
    let r = c
        .write(
            "POST",
            "/api/v1/scheduled-commit",
            Some(&json!({"at": in_secs(2), "comment": "soon"})),
            &etag,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["scheduled"]["id"].as_u64().unwrap();
    import(&c, &with_rule_removed(&policy_doc(), 10));
    wait_for(30, "the scheduled commit", || {
        let r = c.call("GET", "/api/v1/scheduled-commit", None).unwrap();
        r.body["scheduled"].is_null().then_some(())
    });
    let list = versions(&c);
    assert_eq!(list.len(), first + 1, "{list:?}");
    assert_eq!(list[0]["scheduled"], id);
    assert_eq!(list[0]["comment"], "soon");
    let active = c.call("GET", "/api/v1/active", None).unwrap();
    let ids: Vec<u64> = active.body["policy"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [10], "the scheduled document, not the later draft");
    let actions = audit_actions(&c);
    for a in ["commit.schedule", "commit.schedule.cancel", "commit"] {
        assert!(actions.contains(&a.to_string()), "{a}: {actions:?}");
    }
}

#[test]
fn a_scheduled_commit_survives_a_restart() {
    let d = test_dir("schedule-restart");
    let dp = NullDataplane::start(&d);
    let opts = control_opts(&d, &dp.socket);
    let mut c = start_control(&opts);
    import(&c, &policy_doc());
    ok(&commit(&c, json!({})));
    import(&c, &with_rule_removed(&policy_doc(), 20));
    let r = c
        .write(
            "POST",
            "/api/v1/scheduled-commit",
            Some(&json!({"at": in_secs(3)})),
            &draft_etag(&c),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["scheduled"]["id"].as_u64().unwrap();
    c.kill9();
    // Down past the scheduled time.
    std::thread::sleep(Duration::from_secs(4));
    let c = start_control(&opts);
    wait_for(30, "the scheduled commit after the restart", || {
        let list = versions(&c);
        (list[0]["scheduled"] == id).then_some(())
    });
    let list = versions(&c);
    assert_eq!(list.len(), 2, "fired once: {list:?}");
    let status = dp.status().unwrap();
    assert_eq!(status["policy_version"], list[0]["version"]);
}

#[test]
fn a_pending_commit_is_reverted_on_request() {
    let d = test_dir("revert-now");
    let dp = NullDataplane::start(&d);
    let c = start_control(&control_opts(&d, &dp.socket));
    import(&c, &policy_doc());
    ok(&commit(&c, json!({})));
    let r = c
        .write("POST", "/api/v1/revert", None, &active_etag(&c))
        .unwrap();
    assert_eq!(r.status, 409, "nothing pending: {}", r.body);
    import(&c, &with_rule_removed(&policy_doc(), 20));
    let r = commit(&c, json!({"confirm_within_s": 600}));
    ok(&r);
    let pending = r.body["version"].as_u64().unwrap();
    let r = c
        .write("POST", "/api/v1/revert", None, &active_etag(&c))
        .unwrap();
    ok(&r);
    let version = r.body["version"].as_u64().unwrap();
    assert!(version > pending);
    let meta = &versions(&c)[0];
    assert_eq!(meta["kind"], "revert");
    assert_eq!(meta["source"], 1);
    assert_eq!(meta["author"], "admin");
    assert_eq!(
        dp.status().unwrap()["policy_version"],
        json!(version),
        "the dataplane runs the revert"
    );
}
