//! One control, three gateways on the namespace test bed: one on its local control socket, two over their remote
//! listeners (mutual TLS; one checked against the CA, one by a pin). Commits change real traffic through all
//! three; flows, kill and explain per gateway; a gateway killed (SIGKILL) between prepare and publish misses the
//! version without anything half applied and runs it once it is back, while the others keep enforcing; a control
//! with a foreign CA or a wrong pin refuses the gateway; a restarted control adopts what runs and disturbs no
//! flow. Needs root and `openssl`.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use protocol::{FlowFilter, Request, Status};
use serde_json::{json, Value};
use testbed::control::{Control, ControlOptions};
use testbed::pki::Pki;
use testbed::remote::RemoteOptions;
use testbed::{addr, Options, Side, TestBed};

const NAMES: [&str; 3] = ["plant-a", "plant-b", "plant-c"];

fn reaches(side: &Side, port: u16) -> bool {
    fetches(side, None, addr::B4, port)
}

/// A rate-limited download of the 3 MiB file from `side` (about 8 s), and its tracked flow on `bed`.
fn download(bed: &TestBed) -> (Child, Value) {
    let child = slow_download(&bed.a, "400k", 60);
    let flow = wait_for(10, "the download's flow", || {
        let r = bed
            .control(&Request::Flows {
                filter: FlowFilter {
                    port: Some(8080),
                    ..Default::default()
                },
                limit: None,
            })
            .unwrap();
        r["result"]["flows"]
            .as_array()?
            .iter()
            .find(|f| f["state"] == "established")
            .cloned()
    });
    (child, flow)
}

fn finished(mut child: Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.success();
        }
        assert!(Instant::now() < deadline, "download hung");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(bed: &TestBed) -> Status {
    bed.ask(&Request::Status {}).unwrap()
}

/// The `[[gateways]]` of the three beds: the first on its socket, the second by CA, the third by pin.
fn gateways_toml(beds: &[TestBed], pki: &Pki, ca: &std::path::Path, pin: &str) -> String {
    let client = pki.client("control", 30).unwrap();
    let remote = |name: &str, bed: &TestBed, check: String| {
        format!(
            "[[gateways]]\nname = \"{name}\"\naddress = \"{}\"\n{check}\nclient_cert = {:?}\nclient_key = {:?}\n",
            bed.remote_addr().unwrap(),
            client.cert.display().to_string(),
            client.key.display().to_string(),
        )
    };
    format!(
        "[[gateways]]\nname = \"{}\"\nsocket = {:?}\n{}{}",
        NAMES[0],
        beds[0].control_socket().display().to_string(),
        remote(
            NAMES[1],
            &beds[1],
            format!("ca = {:?}", ca.display().to_string())
        ),
        remote(NAMES[2], &beds[2], format!("pin = \"{pin}\"")),
    )
}

/// The SHA-256 of a PEM certificate, as openssl prints it.
fn fingerprint(cert: &std::path::Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl x509 -fingerprint");
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().split_once('=').unwrap().1.to_string()
}

fn gateways(c: &Control) -> Vec<Value> {
    let r = c.call("GET", "/api/v1/gateways", None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["gateways"].as_array().unwrap().clone()
}

fn all_in_sync(c: &Control, version: u64) -> bool {
    gateways(c)
        .iter()
        .all(|g| g["in_sync"] == true && g["policy_version"] == version)
}

#[test]
fn one_control_three_gateways() {
    let dir = test_dir("gateways");
    let pki = Pki::new(dir.join("pki")).unwrap();
    let mut opts = Options::new(dataplane_bin());
    opts.policy =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json"));
    opts.remote = Some(RemoteOptions::new(pki.clone()));
    // Three dataplanes share this machine's cores: idle workers yield theirs.
    opts.idle_sleep_max_us = 1000;
    let mut beds: Vec<TestBed> = (0..3).map(|_| TestBed::start(&opts).unwrap()).collect();
    let mut servers = Vec::new();
    for bed in &beds {
        let www = bed.dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("small"), b"hello").unwrap();
        std::fs::write(www.join("blob"), vec![0x5a; 3 << 20]).unwrap();
        servers.extend([8080, 502].map(|port| file_server(&bed.b, addr::B4, port, &www)));
    }
    let pin = fingerprint(&beds[2].server_identity().unwrap().cert);
    let mut copts = ControlOptions::new(
        control_bin(),
        &dir.join("control"),
        std::path::Path::new(""),
    );
    copts.extra = gateways_toml(&beds, &pki, &pki.ca(), &pin);
    let mut c = start_control(&copts);

    // The store was empty: the policy the gateways run is adopted (from the first), the others agree.
    let ready = &c.ready["reconcile"];
    assert_eq!(ready["gateways"][NAMES[0]]["outcome"], "adopted", "{ready}");
    for name in &NAMES[1..] {
        assert_eq!(ready["gateways"][name]["outcome"], "in_sync", "{ready}");
    }
    let v1 = c.ready["active_version"].as_u64().unwrap();
    let listed = gateways(&c);
    let names: Vec<&str> = listed.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, NAMES);
    assert_eq!(listed[0]["transport"], "unix");
    assert_eq!(listed[1]["transport"], "tls");
    assert!(all_in_sync(&c, v1), "{listed:?}");
    assert!(listed.iter().all(|g| g["last_contact"].is_string()));

    // A commit without the Modbus rule (30) changes traffic through all three gateways.
    let r = edit_and_commit(&c, 30);
    let v2 = r["version"].as_u64().unwrap();
    for name in NAMES {
        assert_eq!(r["gateways"][name]["outcome"], "applied", "{r}");
    }
    for bed in &beds {
        assert!(!reaches(&bed.a, 502), "rule 30 is gone: tcp/502 is denied");
        assert!(reaches(&bed.a, 8080));
    }
    let health = c.call("GET", "/api/v1/health", None).unwrap().body;
    assert_eq!(health["in_sync"], true, "{health}");
    assert_eq!(health["dataplane"]["policy_version"], v2, "{health}");

    // Flows and explain per gateway: a download through plant-b is listed there only.
    let (download_b, flow_b) = download(&beds[1]);
    let sport = flow_b["sport"].clone();
    let on = |gateway: &str| -> Vec<Value> {
        let r = c
            .call(
                "GET",
                &format!("/api/v1/flows?gateway={gateway}&port=8080"),
                None,
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["flows"].as_array().unwrap().clone()
    };
    let b = on(NAMES[1]);
    assert!(b
        .iter()
        .any(|f| f["sport"] == sport && f["gateway"] == NAMES[1]));
    assert!(!on(NAMES[0])
        .iter()
        .any(|f| f["state"] == "established" && f["sport"] == sport));
    let all = c.call("GET", "/api/v1/flows?port=8080", None).unwrap().body;
    assert!(all["flows"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["sport"] == sport && f["gateway"] == NAMES[1]));
    let r = c
        .call("GET", "/api/v1/flows?gateway=nowhere", None)
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);

    let etag = draft_etag(&c);
    let r = c
        .write("DELETE", "/api/v1/draft/rules/10", None, &etag)
        .unwrap();
    assert_eq!(r.status, 200);
    let explain = |gateway: Option<&str>| {
        let mut flow = json!({"src": addr::A4, "dst": addr::B4, "protocol": "tcp", "port": 8080});
        if let Some(g) = gateway {
            flow["gateway"] = json!(g);
        }
        let x = c.call("POST", "/api/v1/explain", Some(&flow)).unwrap();
        assert_eq!(x.status, 200, "{}", x.body);
        x.body["connections"].clone()
    };
    let cut_all = explain(None);
    assert!(
        cut_all["cut"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["sport"] == sport && f["gateway"] == NAMES[1]),
        "{cut_all}"
    );
    assert_eq!(cut_all["gateways"].as_object().unwrap().len(), 3);
    let cut_a = explain(Some(NAMES[0]));
    assert!(
        cut_a["cut"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["gateway"] == NAMES[0]),
        "{cut_a}"
    );
    assert_eq!(
        cut_a["gateways"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [NAMES[0]]
    );
    let r = c
        .write("POST", "/api/v1/draft/reset", None, &draft_etag(&c))
        .unwrap();
    assert_eq!(r.status, 200);

    // plant-a is killed between prepare and publish of a rollback (control waits there in this run): nothing is
    // half applied, the others publish, and plant-a runs the new version once it is back, with no manual step.
    c.kill9();
    let mut paused = copts.clone();
    paused.env = vec![(
        "BULKHEAD_CONTROL_PAUSE_BEFORE_PUBLISH_MS".into(),
        "4000".into(),
    )];
    let mut c = start_control(&paused);
    assert_eq!(c.ready["reconcile"]["outcome"], "in_sync", "{}", c.ready);
    let rollback = std::thread::scope(|s| {
        let c = &c;
        let call = s.spawn(move || {
            c.write(
                "POST",
                "/api/v1/rollback",
                Some(&json!({"version": v1})),
                &active_etag(c),
            )
            .unwrap()
        });
        let prepared = wait_for(20, "plant-a to prepare the rollback", || {
            status(&beds[0]).prepared_version
        });
        assert_eq!(
            status(&beds[0]).policy_version.map(u64::from),
            Some(v2),
            "prepared, not published"
        );
        // The rollback holds its gateways between prepare and publish; reads of the store answer meanwhile: the
        // draft comes back while plant-a still holds the version prepared, unpublished.
        let draft = c.call("GET", "/api/v1/draft", None).unwrap();
        assert_eq!(draft.status, 200, "{}", draft.body);
        let during = status(&beds[0]);
        assert_eq!(
            (
                during.prepared_version,
                during.policy_version.map(u64::from)
            ),
            (Some(prepared), Some(v2)),
            "the draft answered only after the rollback published"
        );
        beds[0].kill_and_restart().unwrap();
        // Back from a SIGKILL with a version prepared: it enforces the last published one.
        let back = status(&beds[0]);
        assert_eq!(back.prepared_version, None);
        assert!(
            back.policy_version.map(u64::from) == Some(v2) || back.policy_version == Some(prepared),
            "{back:?}"
        );
        call.join().unwrap()
    });
    assert_eq!(rollback.status, 200, "{}", rollback.body);
    let v3 = rollback.body["version"].as_u64().unwrap();
    let answers = &rollback.body["gateways"];
    assert_eq!(answers[NAMES[0]]["outcome"], "out_of_sync", "{answers}");
    assert_eq!(answers[NAMES[1]]["outcome"], "applied", "{answers}");
    assert_eq!(answers[NAMES[2]]["outcome"], "applied", "{answers}");
    assert!(rollback.body["warning"]
        .as_str()
        .is_some_and(|w| w.contains(NAMES[0])));
    for bed in &beds[1..] {
        assert!(reaches(&bed.a, 502), "version {v3} enforced: Modbus again");
    }
    wait_for(30, "plant-a brought to the active version", || {
        all_in_sync(&c, v3).then_some(())
    });
    assert_eq!(status(&beds[0]).policy_version.map(u64::from), Some(v3));
    assert!(reaches(&beds[0].a, 502));
    assert!(finished(download_b), "plant-b never stopped forwarding");
    let audit = c.call("GET", "/api/v1/audit", None).unwrap().body;
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["action"] == "rollback"
            && e["outcome"] == "applied"
            && e["details"]["gateways"][NAMES[0]]["outcome"] == "out_of_sync"),
        "{audit}"
    );
    assert!(
        entries.iter().any(|e| e["action"] == "reconcile.push"
            && e["object"] == format!("gateways/{}", NAMES[0])
            && e["outcome"] == "applied"
            && e["version_after"] == v3),
        "{audit}"
    );

    // Per-gateway kill: a download through plant-c is cut there only.
    let (download_c, _) = download(&beds[2]);
    let (download_a, _) = download(&beds[0]);
    let r = c
        .call(
            "POST",
            "/api/v1/flows/kill",
            Some(&json!({"gateway": NAMES[2], "port": 8080, "src": addr::A4})),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["killed"].as_u64().unwrap() >= 1, "{}", r.body);
    assert_eq!(
        r.body["gateways"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [NAMES[2]]
    );
    assert!(
        !finished(download_c),
        "a killed connection does not complete"
    );

    // Metrics and the flow log name the gateways.
    let metrics = c.call("GET", "/metrics", None).unwrap().body;
    let text = metrics.as_str().unwrap_or_default();
    for name in NAMES {
        assert!(
            text.contains(&format!("bulkhead_dataplane_up{{gateway=\"{name}\"}} 1")),
            "{text}"
        );
    }
    let log = wait_for(10, "flow events of plant-c", || {
        let r = c
            .call(
                "GET",
                &format!("/api/v1/flow-log?gateway={}", NAMES[2]),
                None,
            )
            .unwrap();
        let events = r.body["events"].as_array()?.clone();
        (!events.is_empty()).then_some(events)
    });
    assert!(log.iter().all(|e| e["gateway"] == NAMES[2]));

    // A control that does not trust the gateways' certificates: a foreign CA, a wrong pin.
    let foreign = Pki::new(dir.join("foreign-pki")).unwrap();
    let mut wary = ControlOptions::new(control_bin(), &dir.join("wary"), std::path::Path::new(""));
    wary.extra = gateways_toml(&beds, &pki, &foreign.ca(), &"00".repeat(32));
    let wary = start_control(&wary);
    let seen = gateways(&wary);
    for g in &seen[1..] {
        assert_eq!(g["reachable"], false, "{g}");
        let error = g["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("certificate"), "{g}");
    }
    assert_eq!(seen[0]["reachable"], true);
    drop(wary);

    // Control killed and restarted: it adopts what runs, pushes nothing, and an established download through
    // plant-a continues.
    let before: Vec<Status> = beds.iter().map(status).collect();
    c.kill9();
    let c = start_control(&copts);
    assert_eq!(c.ready["reconcile"]["outcome"], "in_sync", "{}", c.ready);
    assert_eq!(c.ready["active_version"], v3);
    for (bed, before) in beds.iter().zip(&before) {
        let after = status(bed);
        assert_eq!(after.policy_version.map(u64::from), Some(v3));
        assert_eq!(
            after.policy_loaded_at, before.policy_loaded_at,
            "nothing pushed"
        );
    }
    assert!(
        finished(download_a),
        "the established download was disturbed"
    );
    drop(servers);
    beds.clear();
}

/// Two gateways on `net_null`, one of which takes at most two rules: a three-rule commit is refused there, so it
/// is discarded on the other and published nowhere; the commit fails with both answers and the store, both
/// gateways and their pending versions are as before. With one gateway down, a commit publishes on the other
/// and the one that comes back is brought to it.
#[test]
fn a_refusal_on_one_gateway_publishes_nowhere() {
    let dir = test_dir("gateways-refusal");
    std::fs::create_dir_all(dir.join("x")).unwrap();
    std::fs::create_dir_all(dir.join("y")).unwrap();
    let x = NullDataplane::start(&dir.join("x"));
    let mut y = NullDataplane::start_with(&dir.join("y"), "max_rules = 2");
    let mut copts = ControlOptions::new(
        control_bin(),
        &dir.join("control"),
        std::path::Path::new(""),
    );
    copts.extra = format!(
        "[[gateways]]\nname = \"x\"\nsocket = {:?}\n[[gateways]]\nname = \"y\"\nsocket = {:?}\n",
        x.socket.display().to_string(),
        y.socket.display().to_string()
    );
    let c = start_control(&copts);
    // Neither has [ha]: standalone, outside any pair, and nothing to resync.
    let listed = gateways(&c);
    assert!(
        listed
            .iter()
            .all(|g| g["role"] == "standalone" && g["pair"].is_null()),
        "{listed:?}"
    );
    let r = c.call("POST", "/api/v1/gateways/x/resync", None).unwrap();
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("not_ha")),
        "{}",
        r.body
    );
    import(&c, &policy_doc());
    let r = commit(&c, json!({"comment": "two rules"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 1);
    let rule = json!({"id": 30, "name": "third", "from": "any", "to": "any", "service": "any", "action": "deny"});
    let r = c
        .write("POST", "/api/v1/draft/rules", Some(&rule), &draft_etag(&c))
        .unwrap();
    assert_eq!(r.status, 201);
    let r = commit(&c, json!({"comment": "three rules"}));
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "dataplane_refused");
    let details = r.body["error"]["details"].as_array().unwrap();
    let answer = |name: &str| {
        details
            .iter()
            .find(|d| d["path"] == format!("gateways.{name}"))
            .map(|d| d["message"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert!(
        answer("y").contains("refused (invalid_policy)"),
        "{}",
        r.body
    );
    assert!(answer("x").contains("discarded"), "{}", r.body);
    for dp in [&x, &y] {
        let s = dp.status().unwrap();
        assert_eq!(s["policy_version"], 1, "{s}");
        assert!(s["prepared_version"].is_null(), "{s}");
    }
    let versions = c.call("GET", "/api/v1/versions", None).unwrap().body;
    assert_eq!(versions["active"], 1);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    let audit = c.call("GET", "/api/v1/audit", None).unwrap().body;
    assert!(
        audit["entries"].as_array().unwrap().iter().any(|e| {
            e["outcome"] == "failed" && e["details"]["gateways"]["y"]["outcome"] == "refused"
        }),
        "{audit}"
    );

    // y down: a commit (rule 30 gone again, another change) publishes on x, y is out of sync; when y is back,
    // reconciliation brings it to the active version.
    y.stop();
    let r = c
        .write("DELETE", "/api/v1/draft/rules/30", None, &draft_etag(&c))
        .unwrap();
    assert_eq!(r.status, 200);
    let r = c
        .write("DELETE", "/api/v1/draft/rules/20", None, &draft_etag(&c))
        .unwrap();
    assert_eq!(r.status, 200);
    let r = commit(&c, json!({"comment": "one rule"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.body["version"].as_u64().unwrap();
    assert_eq!(r.body["gateways"]["x"]["outcome"], "applied", "{}", r.body);
    assert_eq!(
        r.body["gateways"]["y"]["outcome"], "out_of_sync",
        "{}",
        r.body
    );
    assert_eq!(x.status().unwrap()["policy_version"], v);
    let health = c.call("GET", "/api/v1/health", None).unwrap().body;
    assert_eq!(health["in_sync"], false, "{health}");
    let y = NullDataplane::start_with(&dir.join("y"), "max_rules = 2");
    wait_for(30, "y brought to the active version", || {
        (y.status()?["policy_version"] == v).then_some(())
    });
    wait_for(10, "health to see both in sync", || {
        let h = c.call("GET", "/api/v1/health", None).ok()?.body;
        (h["in_sync"] == true).then_some(())
    });
}
