//! End to end on the namespace test bed: policy committed through the REST API changes real traffic; control
//! killed with SIGKILL leaves enforcement untouched; a restarted control adopts the running version without a
//! push and without disturbing flows. Needs root.

mod common;

use std::time::{Duration, Instant};

use common::*;
use protocol::{FlowFilter, Request};
use serde_json::{json, Value};
use testbed::control::{Control, ControlOptions};
use testbed::{addr, Options, Side, TestBed};

fn reaches(side: &Side, port: u16) -> bool {
    fetches(side, None, addr::B4, port)
}

fn flows_on(bed: &TestBed, port: u16) -> Vec<Value> {
    let r = bed
        .control(&Request::Flows {
            filter: FlowFilter {
                port: Some(port),
                ..Default::default()
            },
            limit: None,
        })
        .unwrap();
    r["result"]["flows"].as_array().cloned().unwrap_or_default()
}

#[test]
fn rest_commits_change_traffic_and_control_crashes_do_not() {
    let mut opts = Options::new(dataplane_bin());
    opts.policy =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json"));
    let bed = TestBed::start(&opts).unwrap();
    let www = bed.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("small"), b"hello").unwrap();
    std::fs::write(www.join("blob"), vec![0x5a; 3 << 20]).unwrap();
    let servers = [8080, 502].map(|port| file_server(&bed.b, addr::B4, port, &www));
    let copts = ControlOptions::new(
        control_bin(),
        &bed.dir.join("control"),
        &bed.control_socket(),
    );
    let mut c = Control::start(&copts).unwrap();
    // The store was empty: control adopts what the dataplane runs (the bootstrap policy, version 1).
    assert_eq!(c.ready["reconcile"]["outcome"], "adopted", "{}", c.ready);
    assert!(reaches(&bed.a, 8080) && reaches(&bed.a, 502));

    // Commit without the Modbus rule (30): tcp/502 is cut for new connections; tcp/8080 is not.
    let r = edit_and_commit(&c, 30);
    assert_eq!(r["version"], 2);
    assert!(
        !reaches(&bed.a, 502),
        "rule 30 is gone: tcp/502 must be denied"
    );
    assert!(reaches(&bed.a, 8080));

    // A long download (rate-limited, ~8 s) stays established through everything below.
    let mut download = slow_download(&bed.a, "400k", 60);
    let flow = wait_for(10, "the download's flow", || {
        flows_on(&bed, 8080)
            .into_iter()
            .find(|f| f["state"] == "established")
    });

    // Explain: a draft without rule 10 (hmi-web) would cut the download.
    let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
    let r = c
        .write("DELETE", "/api/v1/draft/rules/10", None, &etag)
        .unwrap();
    assert_eq!(r.status, 200);
    let x = c
        .call(
            "POST",
            "/api/v1/explain",
            Some(&json!({"src": addr::A4, "dst": addr::B4, "protocol": "tcp", "port": 8080})),
        )
        .unwrap();
    assert_eq!(x.body["active"]["verdict"], "allow", "{}", x.body);
    assert_eq!(x.body["active"]["matched"]["id"], 10);
    assert_eq!(x.body["draft"]["verdict"], "deny");
    assert_eq!(x.body["draft"]["src_segments"], json!(["engineering"]));
    let cut = x.body["connections"]["cut"].as_array().unwrap();
    assert!(
        cut.iter()
            .any(|f| f["sport"] == flow["sport"] && f["dport"] == 8080),
        "the download is listed as cut: {}",
        x.body["connections"]
    );
    let r = c
        .write("POST", "/api/v1/draft/reset", None, &r.etag())
        .unwrap();
    assert_eq!(r.status, 200);

    // kill -9 control: the established download continues; new flows are still judged by version 2.
    c.kill9();
    assert!(!reaches(&bed.a, 502), "still denied without control");
    assert!(reaches(&bed.a, 8080), "still allowed without control");
    assert!(flows_on(&bed, 8080)
        .iter()
        .any(|f| f["sport"] == flow["sport"]));

    // Restart control: it finds version 2 running, pushes nothing, and every tracked flow stays.
    let before = bed.control(&Request::Status {}).unwrap()["result"].clone();
    let flows_before = flows_on(&bed, 8080).len();
    let c = Control::start(&copts).unwrap();
    assert_eq!(c.ready["reconcile"]["outcome"], "in_sync", "{}", c.ready);
    assert_eq!(c.ready["active_version"], 2);
    let after = bed.control(&Request::Status {}).unwrap()["result"].clone();
    assert_eq!(after["policy_version"], 2);
    assert_eq!(
        after["policy_loaded_at"], before["policy_loaded_at"],
        "no load_policy was pushed"
    );
    assert_eq!(
        flows_on(&bed, 8080).len(),
        flows_before,
        "no flow disturbed"
    );
    let listed = c
        .call(
            "GET",
            &format!("/api/v1/flows?port=8080&src={}", addr::A4),
            None,
        )
        .unwrap();
    assert!(listed.body["flows"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["sport"] == flow["sport"]));

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = download.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "download hung");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the established download was disturbed");

    // Rollback through the API brings Modbus back.
    let etag = c.call("GET", "/api/v1/active", None).unwrap().etag();
    let r = c
        .write(
            "POST",
            "/api/v1/rollback",
            Some(&json!({"version": 1})),
            &etag,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(reaches(&bed.a, 502));

    // Killing connections through the API: a fresh download is cut from the table (strict TCP then drops its
    // mid-stream packets, so it cannot come back).
    let mut download = slow_download(&bed.a, "200k", 8);
    let flow = wait_for(10, "the second download's flow", || {
        flows_on(&bed, 8080)
            .into_iter()
            .find(|f| f["state"] == "established")
    });
    let r = c
        .call(
            "POST",
            "/api/v1/flows/kill",
            Some(&json!({"port": 8080, "src": addr::A4})),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["killed"].as_u64().unwrap() >= 1);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!flows_on(&bed, 8080)
        .iter()
        .any(|f| f["sport"] == flow["sport"] && f["state"] == "established"));
    assert!(
        !download.wait().unwrap().success(),
        "a killed connection does not complete"
    );
    drop(servers);
}
