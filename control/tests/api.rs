//! The REST API, route by route, against a real control process and a real dataplane (on `net_null` ports).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[test]
fn auth_limits_and_openapi_match_the_routes() {
    let dir = test_dir("auth");
    let dp = NullDataplane::start(&dir);
    let opts = control_opts(&dir, &dp.socket);
    // The web console's static files, served at / without a token when the directory exists.
    std::fs::create_dir_all(opts.dir.join("web")).unwrap();
    std::fs::write(opts.dir.join("web/index.html"), "<title>console</title>").unwrap();
    let c = start_control(&opts);
    let page = c.request("GET", "/", None, &[], None).unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.body, json!("<title>console</title>"));

    // Health needs no token; everything else does.
    let h = c.request("GET", "/api/v1/health", None, &[], None).unwrap();
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.body["dataplane"]["reachable"], true);
    for token in [None, Some("wrong-token-wrong-token")] {
        let r = c.request("GET", "/api/v1/draft", None, &[], token).unwrap();
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "unauthorized");
        let r = c.request("GET", "/metrics", None, &[], token).unwrap();
        assert_eq!(r.status, 401);
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(c.opts.store_dir().join("tokens"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let v = c.call("GET", "/api/v1/version", None).unwrap();
    assert_eq!(
        v.body["policy_formats"],
        json!(["bulkhead.policy/v1", "bulkhead.policy/v2"])
    );

    // Every documented operation is served (not the router's "no route" 404, not 405), and the router serves
    // nothing that is undocumented (checked by the unit test on the route table).
    let doc = c.call("GET", "/api/v1/openapi.json", None).unwrap();
    assert_eq!(doc.body["openapi"], "3.1.0");
    let paths = doc.body["paths"].as_object().unwrap();
    assert!(paths.len() > 30);
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path
                .replace("{key}", "nothing-here")
                .replace("{version}", "999")
                .replace("{which}", "draft");
            if path.ends_with("/stream") {
                // An endless event stream: only check it is there and authorized.
                let out = c
                    .curl_command()
                    .args(["-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1"])
                    .args(["-H", &format!("Authorization: Bearer {}", c.token)])
                    .arg(format!("{}{concrete}", c.url))
                    .output()
                    .unwrap();
                assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{path}");
                continue;
            }
            let m = method.to_uppercase();
            if path.ends_with("/token/rotate") {
                continue; // would change the token under this loop; exercised below
            }
            let r = c.call(&m, &concrete, None).unwrap();
            assert_ne!(r.status, 405, "{m} {path}: {}", r.body);
            assert_ne!(r.body["error"]["code"], "no_route", "{m} {path}");
        }
    }
    let r = c.call("GET", "/api/v1/nonsense", None).unwrap();
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("no_route"))
    );

    // Body limit: 413 with a JSON error.
    let big = vec![b' '; 2 << 20];
    let r = c
        .request_raw("PUT", "/api/v1/draft", Some(&big), &[], Some(&c.token))
        .unwrap();
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "too_large");

    // Token rotation: the old token stops working, the new one works, and it is audited.
    let old = c.token.clone();
    let r = c.call("POST", "/api/v1/token/rotate", None).unwrap();
    ok(&r);
    let new = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(r.body["identity"], "admin");
    let r = c
        .request("GET", "/api/v1/draft", None, &[], Some(&old))
        .unwrap();
    assert_eq!(r.status, 401);
    let r = c
        .request("GET", "/api/v1/audit", None, &[], Some(&new))
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["entries"][0]["action"], "token.rotate");
    assert_eq!(r.body["entries"][0]["who"], "admin");
}

#[test]
fn draft_crud_etags_validation_and_diff() {
    let dir = test_dir("draft");
    let dp = NullDataplane::start(&dir);
    let c = start_control(&control_opts(&dir, &dp.socket));

    let e0 = draft_etag(&c);
    assert!(e0.starts_with("\"draft-"), "{e0}");
    let seg = json!({"name": "db", "prefixes": ["10.99.0.2/32"]});
    // 428 without If-Match, 409 with a stale one.
    let r = c
        .call("POST", "/api/v1/draft/segments", Some(&seg))
        .unwrap();
    assert_eq!(r.status, 428, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "precondition_required");
    let r = c
        .write(
            "POST",
            "/api/v1/draft/segments",
            Some(&seg),
            "\"draft-999\"",
        )
        .unwrap();
    assert_eq!(r.status, 409);
    assert_eq!(r.body["error"]["code"], "stale_etag");
    let r = c
        .write("POST", "/api/v1/draft/segments", Some(&seg), &e0)
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let e1 = r.etag();
    assert_ne!(e1, e0);
    // The old ETag is stale now: a second writer that read before loses.
    let r = c
        .write("DELETE", "/api/v1/draft/segments/db", None, &e0)
        .unwrap();
    assert_eq!(r.status, 409);
    // Duplicate create: 409 naming the key.
    let r = c
        .write("POST", "/api/v1/draft/segments", Some(&seg), &e1)
        .unwrap();
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("exists"))
    );
    // Type errors name the field.
    let r = c
        .write(
            "PUT",
            "/api/v1/draft/segments/db",
            Some(&json!({"name": "db", "prefixes": ["10.99.0.2"]})),
            &e1,
        )
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["path"], "prefixes[0]");
    assert!(r.body["error"]["details"][0]["message"]
        .as_str()
        .unwrap()
        .contains("10.99.0.2/32"));
    let r = c
        .write("PUT", "/api/v1/draft/segments/other", Some(&seg), &e1)
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["details"][0]["path"], "name");
    let r = c
        .request_raw(
            "PUT",
            "/api/v1/draft/segments/db",
            Some(b"{\"name\": "),
            &[("If-Match", &e1)],
            Some(&c.token),
        )
        .unwrap();
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("bad_json"))
    );

    // A rule that refers to an unknown service: stored (a draft may be invalid), reported precisely.
    let rule = json!({"id": 10, "name": "r", "from": "any", "to": {"segment": "db"}, "service": "smb", "action": "allow"});
    let r = c
        .write("POST", "/api/v1/draft/rules", Some(&rule), &e1)
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["validation"]["valid"], false);
    let e2 = r.etag();
    let v = c.call("POST", "/api/v1/validate", None).unwrap();
    assert_eq!(v.body["valid"], false);
    assert_eq!(v.body["errors"][0]["path"], "rules[0].service");
    // Commit refuses an invalid draft with every error.
    let r = c
        .write("POST", "/api/v1/commit", Some(&json!({})), &e2)
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["path"], "rules[0].service");
    // Fix it: add the service, then a rule at position 0, then move it.
    let svc = json!({"name": "smb", "protocol": "tcp", "ports": ["445"]});
    let r = c
        .write("PUT", "/api/v1/draft/services/smb", Some(&svc), &e2)
        .unwrap();
    ok(&r);
    assert_eq!(r.body["validation"]["valid"], true);
    let rule2 = json!({"id": 5, "name": "first", "from": "any", "to": "any", "service": "any", "action": "deny"});
    let r = c
        .write(
            "POST",
            "/api/v1/draft/rules?position=0",
            Some(&rule2),
            &r.etag(),
        )
        .unwrap();
    assert_eq!(r.status, 201);
    let rules = c.call("GET", "/api/v1/draft/rules", None).unwrap();
    assert_eq!(rules.body[0]["id"], 5);
    let r = c
        .write(
            "PUT",
            "/api/v1/draft/rules/5?position=1",
            Some(&rule2),
            &rules.etag(),
        )
        .unwrap();
    ok(&r);
    let r1 = c.call("GET", "/api/v1/draft/rules/5", None).unwrap();
    ok(&r1);
    let rules = c.call("GET", "/api/v1/draft/rules", None).unwrap();
    assert_eq!(rules.body[1]["id"], 5);
    let r = c
        .write("POST", "/api/v1/draft/rules?position=9", Some(&json!({"id": 6, "name": "x", "from": "any", "to": "any", "service": "any", "action": "deny"})), &rules.etag())
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["details"][0]["path"], "position");
    let r = c.call("GET", "/api/v1/draft/rules/77", None).unwrap();
    assert_eq!(r.status, 404);
    // Settings.
    let mut s = c.call("GET", "/api/v1/draft/settings", None).unwrap();
    s.body["pass_arp"] = json!(false);
    let r = c
        .write("PUT", "/api/v1/draft/settings", Some(&s.body), &s.etag())
        .unwrap();
    ok(&r);
    let r = c
        .write(
            "PUT",
            "/api/v1/draft/settings",
            Some(&json!({"default_action": "maybe"})),
            &r.etag(),
        )
        .unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["details"][0]["path"], "default_action");

    // Diff before the first commit: everything added.
    let d = c.call("GET", "/api/v1/diff", None).unwrap();
    assert_eq!(d.body["segments"]["added"][0]["name"], "db");
    assert_eq!(d.body["rules"]["added"].as_array().unwrap().len(), 2);
    assert!(d.body["settings"]["after"].is_object());
    // Active is read-only and empty before the first commit.
    let r = c.call("GET", "/api/v1/active", None).unwrap();
    assert_eq!(r.status, 404);
    let r = c
        .call("PUT", "/api/v1/active/segments/db", Some(&seg))
        .unwrap();
    assert_eq!(r.status, 405);

    // Commit, then edit, diff shows changes; export; import of a bad document names the field.
    let r = commit(&c, json!({"comment": "first"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c.call("GET", "/api/v1/active/segments/db", None).unwrap();
    ok(&r);
    let r = c.call("GET", "/api/v1/active/rules", None).unwrap();
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    let e = draft_etag(&c);
    let r = c
        .write("DELETE", "/api/v1/draft/services/smb", None, &e)
        .unwrap();
    ok(&r);
    assert_eq!(r.body["validation"]["valid"], false);
    let d = c.call("GET", "/api/v1/diff", None).unwrap();
    assert_eq!(d.body["services"]["removed"][0]["name"], "smb");
    assert_eq!(d.body["changes"], 1);
    let ex = c.call("GET", "/api/v1/export/active", None).unwrap();
    assert_eq!(ex.body["services"][0]["name"], "smb");
    assert!(ex
        .header("content-disposition")
        .unwrap()
        .contains("attachment"));
    let ex1 = c.call("GET", "/api/v1/export/1", None).unwrap();
    assert_eq!(ex1.body, ex.body);
    let r = c.call("GET", "/api/v1/export/latest", None).unwrap();
    assert_eq!(r.status, 400);
    let mut bad = policy_doc();
    bad["segments"][0]["vlans"] = json!(["ten"]);
    let r = c
        .write("PUT", "/api/v1/draft", Some(&bad), &draft_etag(&c))
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        r.body["error"]["details"][0]["path"],
        "segments[0].vlans[0]"
    );
    // Reset the draft to the active policy.
    let r = c
        .write("POST", "/api/v1/draft/reset", None, &draft_etag(&c))
        .unwrap();
    ok(&r);
    let d = c.call("GET", "/api/v1/diff", None).unwrap();
    assert_eq!(d.body["identical"], true);
    // Nothing to commit now.
    let r = commit(&c, json!({}));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("no_changes"))
    );

    let actions = audit_actions(&c);
    for a in [
        "draft.segments.create",
        "draft.rules.create",
        "draft.services.put",
        "draft.rules.put",
        "draft.settings.put",
        "commit",
        "draft.services.delete",
        "draft.reset",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} not in {actions:?}");
    }
    // Rejected writes leave no audit entry and no revision.
    assert!(!actions.iter().any(|x| x == "draft.import"));
}

#[test]
fn commit_confirm_revert_rollback_and_audit() {
    let dir = test_dir("lifecycle");
    let dp = NullDataplane::start(&dir);
    let mut opts = control_opts(&dir, &dp.socket);
    opts.reconcile_interval_ms = 200;
    let mut c = start_control(&opts);

    import(&c, &policy_doc());
    let r = c
        .write(
            "POST",
            "/api/v1/commit",
            Some(&json!({"comment": "v1"})),
            "\"draft-1\"",
        )
        .unwrap();
    assert_eq!(r.status, 409, "the import moved the revision: {}", r.body);
    let r = commit(&c, json!({"comment": "v1", "confirm_within_s": 30}));
    assert_eq!(r.status, 409, "no earlier version to revert to: {}", r.body);
    let r = commit(&c, json!({"comment": "v1"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["dataplane"]["version"], 1);
    assert_eq!(dp.status().unwrap()["policy_version"], 1);
    let got = dp.request(json!({"op": "get_policy"})).unwrap();
    assert_eq!(got["policy"]["rules"][0]["name"], "clients-db");

    // v2 with a confirm window that lapses: control reverts by itself (as v3, a copy of v1).
    let e = draft_etag(&c);
    let r = c
        .write("DELETE", "/api/v1/draft/rules/20", None, &e)
        .unwrap();
    ok(&r);
    let r = commit(&c, json!({"comment": "drop ping", "confirm_within_s": 2}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["pending_confirm"]["revert_to"], 1);
    assert_eq!(dp.status().unwrap()["policy_version"], 2);
    // A second commit while one awaits confirmation is refused.
    let e = draft_etag(&c);
    let r = c
        .write("PUT", "/api/v1/draft/rules/30", Some(&json!({"id": 30, "name": "x", "from": "any", "to": "any", "service": "any", "action": "deny"})), &e)
        .unwrap();
    ok(&r);
    let r = commit(&c, json!({}));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("confirm_pending"))
    );
    wait_for(15, "the automatic revert", || {
        (dp.status()?["policy_version"] == 3).then_some(())
    });
    let a = c.call("GET", "/api/v1/active", None).unwrap();
    assert_eq!(a.body["version"], 3);
    assert_eq!(a.body["meta"]["kind"], "revert");
    assert_eq!(a.body["meta"]["source"], 1);
    assert!(a.body["pending_confirm"].is_null());
    assert_eq!(a.body["policy"]["rules"].as_array().unwrap().len(), 2);

    // Confirmed in time: stays. Confirm takes the active ETag.
    let e = draft_etag(&c);
    let r = c
        .write("DELETE", "/api/v1/draft/rules/30", None, &e)
        .unwrap();
    ok(&r);
    let r = commit(&c, json!({"confirm": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 4);
    let r = c.call("POST", "/api/v1/confirm", None).unwrap();
    assert_eq!(r.status, 428);
    let r = c
        .write("POST", "/api/v1/confirm", None, "\"active-3\"")
        .unwrap();
    assert_eq!(r.status, 409);
    let r = c
        .write("POST", "/api/v1/confirm", None, &active_etag(&c))
        .unwrap();
    ok(&r);
    let r = c
        .write("POST", "/api/v1/confirm", None, &active_etag(&c))
        .unwrap();
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("nothing_pending"))
    );

    // A pending deadline survives a control restart: commit with a window, kill -9 control, start it again.
    let e = draft_etag(&c);
    let r = c
        .write("DELETE", "/api/v1/draft/rules/10", None, &e)
        .unwrap();
    ok(&r);
    let r = commit(&c, json!({"confirm_within_s": 3}));
    assert_eq!(r.body["version"], 5, "{}", r.body);
    c.kill9();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        dp.status().unwrap()["policy_version"],
        5,
        "no control, no revert"
    );
    let c = start_control(&opts);
    wait_for(15, "the revert after restart", || {
        (dp.status()?["policy_version"] == 6).then_some(())
    });
    let a = c.call("GET", "/api/v1/active", None).unwrap();
    assert_eq!(a.body["meta"]["source"], 4);

    // Rollback to any version: v1 comes back as v7.
    let r = c
        .write(
            "POST",
            "/api/v1/rollback",
            Some(&json!({"version": 1})),
            "\"active-1\"",
        )
        .unwrap();
    assert_eq!(r.status, 409);
    let r = c
        .write(
            "POST",
            "/api/v1/rollback",
            Some(&json!({"version": 42})),
            &active_etag(&c),
        )
        .unwrap();
    assert_eq!(r.status, 404);
    let r = c
        .write(
            "POST",
            "/api/v1/rollback",
            Some(&json!({"version": 1, "comment": "back to the start"})),
            &active_etag(&c),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 7);
    assert_eq!(dp.status().unwrap()["policy_version"], 7);
    let got = dp.request(json!({"op": "get_policy"})).unwrap();
    let v1 = c.call("GET", "/api/v1/versions/1", None).unwrap();
    assert_eq!(got["policy"], v1.body["policy"]);

    // History, newest first, with authors and kinds.
    let h = c.call("GET", "/api/v1/versions", None).unwrap();
    let kinds: Vec<&str> = h.body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["rollback", "revert", "commit", "commit", "revert", "commit", "commit"]
    );
    assert_eq!(h.body["versions"][0]["author"], "admin");
    assert_eq!(h.body["versions"][1]["author"], "system");
    assert_eq!(h.body["active"], 7);
    let r = c.call("GET", "/api/v1/versions/abc", None).unwrap();
    assert_eq!(r.status, 400);

    // The audit log: who, what, before/after version.
    let log = c.call("GET", "/api/v1/audit", None).unwrap();
    let entries = log.body["entries"].as_array().unwrap();
    // Activations are an intent and an outcome: count the intents, each with its `applied` outcome.
    let find = |action: &str| -> Vec<&Value> {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["phase"] != "outcome")
            .collect()
    };
    for e in entries.iter().filter(|e| e["phase"] == "intent") {
        assert!(
            entries
                .iter()
                .any(|o| o["intent"] == e["seq"] && o["outcome"] == "applied"),
            "{e} has no applied outcome"
        );
    }
    assert_eq!(find("commit").len(), 4);
    let reverts = find("revert");
    assert_eq!(reverts.len(), 2);
    assert_eq!(
        (
            &reverts[0]["version_before"],
            &reverts[0]["version_after"],
            &reverts[0]["who"]
        ),
        (&json!(2), &json!(3), &json!("system"))
    );
    let rb = find("rollback");
    assert_eq!(
        (&rb[0]["version_before"], &rb[0]["version_after"]),
        (&json!(6), &json!(7))
    );
    assert_eq!(find("confirm").len(), 1);
    let since = entries[entries.len() - 2]["seq"].as_u64().unwrap();
    let tail = c
        .call("GET", &format!("/api/v1/audit?since={since}"), None)
        .unwrap();
    assert_eq!(tail.body["entries"].as_array().unwrap().len(), 1);
    let r = c.call("GET", "/api/v1/audit?since=x", None).unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn explain_flows_and_a_dataplane_that_is_down() {
    let dir = test_dir("explain");
    let mut dp = NullDataplane::start(&dir);
    let mut opts = control_opts(&dir, &dp.socket);
    opts.reconcile_interval_ms = 200;
    let c = start_control(&opts);
    import(&c, &policy_doc());
    ok(&commit(&c, json!({})));
    // Draft: drop the ping rule.
    let r = c
        .write("DELETE", "/api/v1/draft/rules/20", None, &draft_etag(&c))
        .unwrap();
    ok(&r);

    let x = c
        .call(
            "POST",
            "/api/v1/explain",
            Some(&json!({"src": "10.99.0.1", "dst": "10.99.0.2", "protocol": "tcp", "port": 5432})),
        )
        .unwrap();
    assert_eq!(x.status, 200, "{}", x.body);
    for side in ["draft", "active"] {
        assert_eq!(x.body[side]["verdict"], "allow");
        assert_eq!(x.body[side]["matched"]["id"], 10);
        assert_eq!(x.body[side]["src_segments"], json!(["clients"]));
        assert_eq!(x.body[side]["dst_segments"], json!(["legacy"]));
    }
    assert_eq!(x.body["connections"]["would_cut"], 0);
    assert_eq!(x.body["connections"]["tracked"], 0);
    let x = c
        .call(
            "POST",
            "/api/v1/explain",
            Some(&json!({"src": "10.99.0.1", "dst": "10.99.0.2", "protocol": "icmp"})),
        )
        .unwrap();
    assert_eq!(x.body["active"]["matched"]["name"], "clients-ping");
    assert_eq!(x.body["draft"]["verdict"], "deny");
    assert_eq!(x.body["draft"]["matched"]["type"], "default");
    let x = c
        .call(
            "POST",
            "/api/v1/explain",
            Some(&json!({"src": "10.99.0.2", "dst": "10.99.0.1", "protocol": 6, "port": 22, "vlan": 20})),
        )
        .unwrap();
    assert_eq!(x.body["active"]["verdict"], "deny");
    assert_eq!(x.body["active"]["src_segments"], json!(["legacy"]));
    for (bad, field) in [
        (
            json!({"src": "10.99.0.1", "dst": "fd00::1", "protocol": "tcp", "port": 1}),
            "dst",
        ),
        (
            json!({"src": "10.99.0.1", "dst": "10.99.0.2", "protocol": "tcp"}),
            "port",
        ),
        (
            json!({"src": "10.99.0.1", "dst": "10.99.0.2", "protocol": "gre"}),
            "protocol",
        ),
        (
            json!({"src": "10.99.0.1", "dst": "10.99.0.2", "protocol": "icmp", "port": 3}),
            "port",
        ),
        (
            json!({"src": "10.99.0.300", "dst": "10.99.0.2", "protocol": "udp", "port": 3}),
            "src",
        ),
        (
            json!({"src": "10.99.0.1", "dst": "10.99.0.2", "protocol": "udp", "port": 3, "vlan": 5000}),
            "vlan",
        ),
    ] {
        let r = c.call("POST", "/api/v1/explain", Some(&bad)).unwrap();
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
        assert_eq!(r.body["error"]["details"][0]["path"], field, "{}", r.body);
    }

    // Flows: proxied with the filter; bad filters are precise errors.
    let f = c
        .call(
            "GET",
            "/api/v1/flows?addr=10.99.0.2&proto=tcp&limit=5",
            None,
        )
        .unwrap();
    assert_eq!(f.status, 200, "{}", f.body);
    assert_eq!(f.body["flows"], json!([]));
    for (q, field) in [
        ("port=http", "port"),
        ("adr=1.2.3.4", "adr"),
        ("src=x", "src"),
    ] {
        let r = c.call("GET", &format!("/api/v1/flows?{q}"), None).unwrap();
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.body["error"]["details"][0]["path"], field);
    }
    let r = c
        .call("POST", "/api/v1/flows/kill", Some(&json!({})))
        .unwrap();
    assert_eq!(r.status, 400, "an empty filter needs all: true");
    let r = c
        .call("POST", "/api/v1/flows/kill", Some(&json!({"port": 5432})))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["killed"], 0);
    let r = c
        .call("POST", "/api/v1/flows/kill", Some(&json!({"prt": 5432})))
        .unwrap();
    assert_eq!(r.status, 422);
    assert!(audit_actions(&c).iter().any(|a| a == "flows.kill"));

    // The dataplane goes down: control keeps serving; a commit is refused (503) and leaves the store as it was.
    dp.stop();
    let h = wait_for(10, "health to see the dataplane down", || {
        let h = c.request("GET", "/api/v1/health", None, &[], None).ok()?;
        (h.body["dataplane"]["reachable"] == false).then_some(h)
    });
    assert_eq!(h.status, 200);
    let r = commit(&c, json!({}));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "dataplane_unavailable");
    let h = c.call("GET", "/api/v1/versions", None).unwrap();
    assert_eq!(h.body["active"], 1);
    assert_eq!(h.body["versions"].as_array().unwrap().len(), 1);
    let r = c.call("GET", "/api/v1/flows", None).unwrap();
    assert_eq!(r.status, 503);
    let x = c
        .call(
            "POST",
            "/api/v1/explain",
            Some(&json!({"src": "10.99.0.1", "dst": "10.99.0.2", "protocol": "tcp", "port": 5432})),
        )
        .unwrap();
    assert_eq!(x.status, 200, "explain works without the dataplane");
    assert!(x.body["connections"]["error"].is_string());

    // It comes back with its persisted version: control finds it in sync. Then its state is wiped: control
    // pushes the active version again.
    let dp = NullDataplane::start(&dir);
    wait_for(10, "health in sync", || {
        let h = c.request("GET", "/api/v1/health", None, &[], None).ok()?;
        (h.body["in_sync"] == true).then_some(())
    });
    let loaded = dp.status().unwrap()["policy_loaded_at"].clone();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        dp.status().unwrap()["policy_loaded_at"],
        loaded,
        "nothing pushed"
    );
    drop(dp);
    std::fs::remove_dir_all(dir.join("dp-state")).unwrap();
    let dp = NullDataplane::start(&dir);
    wait_for(10, "the push of the active version", || {
        (dp.status()?["policy_version"] == 1).then_some(())
    });
}

#[test]
fn restart_reconciles_and_adopts() {
    let dir = test_dir("restart");
    let dp = NullDataplane::start(&dir);
    let opts = control_opts(&dir, &dp.socket);
    // An empty store next to a dataplane that runs a policy: control adopts it (version number included).
    assert!(dp
        .request(json!({"op": "load_policy", "policy": policy_doc(), "version": 41}))
        .is_some());
    let mut c = start_control(&opts);
    assert_eq!(c.ready["reconcile"]["outcome"], "adopted", "{}", c.ready);
    let a = c.call("GET", "/api/v1/active", None).unwrap();
    assert_eq!(a.body["version"], 41);
    assert_eq!(a.body["meta"]["kind"], "adopted");
    assert_eq!(
        c.call("GET", "/api/v1/diff", None).unwrap().body["identical"],
        true
    );
    c.stop().unwrap();
    // Restart: in sync, nothing pushed.
    let loaded = dp.status().unwrap()["policy_loaded_at"].clone();
    let mut c = start_control(&opts);
    assert_eq!(c.ready["reconcile"]["outcome"], "in_sync", "{}", c.ready);
    assert_eq!(dp.status().unwrap()["policy_loaded_at"], loaded);
    c.stop().unwrap();
    // The dataplane got another version behind control's back: control pushes its active one.
    let mut other = policy_doc();
    other["rules"] = json!([]);
    assert!(dp
        .request(json!({"op": "load_policy", "policy": other, "version": 41}))
        .is_some());
    let c = start_control(&opts);
    assert_eq!(c.ready["reconcile"]["outcome"], "pushed", "{}", c.ready);
    let got = dp.request(json!({"op": "get_policy"})).unwrap();
    assert_eq!(got["policy"]["rules"].as_array().unwrap().len(), 2);
    drop(c);
    // A corrupt store file: a clear error at start, not a silent reset.
    std::fs::write(opts.store_dir().join("active.json"), "{\"version\": \"x\"}").unwrap();
    let out = std::process::Command::new(control_bin())
        .arg("--config")
        .arg(opts.dir.join("control.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("active.json") && err.contains("version"),
        "{err}"
    );
}

#[test]
fn a_policy_the_dataplane_refuses_changes_nothing() {
    let dir = test_dir("refused");
    let dp = NullDataplane::start_with(&dir, "max_rules = 2");
    let c = start_control(&control_opts(&dir, &dp.socket));
    import(&c, &policy_doc());
    ok(&commit(&c, json!({"comment": "two rules"})));
    let rule = json!({"id": 30, "name": "third", "from": "any", "to": "any", "service": "any", "action": "deny"});
    let r = c
        .write("POST", "/api/v1/draft/rules", Some(&rule), &draft_etag(&c))
        .unwrap();
    assert_eq!(r.status, 201);
    let r = commit(&c, json!({"comment": "three rules"}));
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "dataplane_refused");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_rules"),
        "{}",
        r.body
    );
    // The store and the dataplane stay on version 1; the refused version leaves no trace but its absence.
    let h = c.call("GET", "/api/v1/versions", None).unwrap();
    assert_eq!(h.body["active"], 1);
    assert_eq!(h.body["versions"].as_array().unwrap().len(), 1);
    assert_eq!(dp.status().unwrap()["policy_version"], 1);
    // The refused commit is recorded as attempted and failed.
    let log = c.call("GET", "/api/v1/audit", None).unwrap();
    let outcomes: Vec<&Value> = log.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "commit" && e["phase"] == "outcome")
        .map(|e| &e["outcome"])
        .collect();
    assert_eq!(outcomes, [&json!("applied"), &json!("failed")]);
    // Fixed, the next commit is version 2.
    let r = c
        .write("DELETE", "/api/v1/draft/rules/20", None, &draft_etag(&c))
        .unwrap();
    ok(&r);
    let r = commit(&c, json!({}));
    assert_eq!(
        (r.status, &r.body["version"]),
        (200, &json!(2)),
        "{}",
        r.body
    );
    assert_eq!(dp.status().unwrap()["policy_version"], 2);
}

/// Sixteen connections to `socket` that send nothing: as many as the dataplane serves there at once.
fn hold_idle(socket: &std::path::Path) -> Vec<std::os::unix::net::UnixStream> {
    (0..16)
        .map(|_| {
            let conn = std::os::unix::net::UnixStream::connect(socket).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            conn
        })
        .collect()
}

#[test]
fn local_clients_holding_the_control_socket_cannot_lock_control_out() {
    // The single-socket setup, with the default idle timeout (5 s): clients that hold every connection and say
    // nothing are disconnected, and control's requests get through again.
    let dir = test_dir("socket-idle");
    let dp = NullDataplane::start(&dir);
    let c = start_control(&control_opts(&dir, &dp.socket));
    let idle = hold_idle(&dp.socket);
    let t0 = std::time::Instant::now();
    loop {
        let r = c.call("GET", "/api/v1/flows", None).unwrap();
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 502, "{}", r.body);
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "control still locked out: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(idle);
    drop(c);
    drop(dp);

    // With a socket reserved for control, control is never locked out: not by sixteen idle clients, nor by one
    // that reopens connections on the shared socket as fast as they are closed.
    let dir = test_dir("socket-reserved");
    let reserved = dir.join("dp-control.sock");
    let dp = NullDataplane::start_with(
        &dir,
        &format!(
            "\n[control_socket]\nidle_timeout_ms = 1000\nreserved_path = {:?}\n",
            reserved.display().to_string()
        ),
    );
    let c = start_control(&control_opts(&dir, &reserved));
    import(&c, &policy_doc());
    let idle = hold_idle(&dp.socket);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let hog = s.spawn(|| {
            let mut held = std::collections::VecDeque::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(conn) = std::os::unix::net::UnixStream::connect(&dp.socket) {
                    held.push_back(conn);
                    if held.len() > 32 {
                        held.pop_front();
                    }
                }
            }
        });
        // The shared socket is full...
        assert!(dp.status().is_none(), "the shared socket should be full");
        // ...and control commits, reads flows and sees the dataplane through its own socket.
        let r = commit(&c, json!({"comment": "through the reserved socket"}));
        let passed = (r.status, r.body.clone());
        let flows = c.call("GET", "/api/v1/flows", None).unwrap().status;
        // Past the idle timeout: the hog's connections are replaced, control's still pass.
        std::thread::sleep(Duration::from_millis(1500));
        let health = c.call("GET", "/api/v1/health", None).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        hog.join().unwrap();
        assert_eq!(passed.0, 200, "{}", passed.1);
        assert_eq!(passed.1["version"], 1);
        assert_eq!(flows, 200);
        assert_eq!(
            health.body["dataplane"]["policy_version"], 1,
            "{}",
            health.body
        );
        assert_eq!(health.body["in_sync"], true, "{}", health.body);
    });
    // The idle clients were disconnected after the (shortened) idle timeout, told why first.
    for conn in &idle {
        let mut said = String::new();
        std::io::Read::read_to_string(&mut &*conn, &mut said).unwrap();
        assert!(
            said.contains("no complete request line within 1000 ms"),
            "{said}"
        );
    }
    // Once the hog's last connections are drained, the shared socket serves again.
    let t0 = std::time::Instant::now();
    let status = loop {
        match dp.status() {
            Some(status) => break status,
            None if t0.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            None => panic!("the shared socket still refuses"),
        }
    };
    assert_eq!(status["policy_version"], 1);
}
