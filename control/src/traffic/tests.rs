use std::collections::BTreeMap;

use super::*;
use crate::flowlog::FlowLogConfig;
use protocol::FlowEvent;

fn log(name: &str, buffer: usize) -> std::sync::Arc<FlowLog> {
    let dir = std::env::temp_dir().join(format!("bh-traffic-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    FlowLog::new(FlowLogConfig {
        path: dir.join("flows.jsonl"),
        buffer,
        ..Default::default()
    })
    .unwrap()
}

#[allow(clippy::too_many_arguments)]
fn ev(
    kind: &str,
    verdict: &str,
    at: SystemTime,
    src: &[&str],
    dst: &[&str],
    proto: u8,
    dport: u16,
    rule_id: u32,
    packets: [u64; 2],
) -> FlowEvent {
    serde_json::from_value(json!({
            "kind": kind, "time": time::rfc3339(at), "time_ms": 0, "worker": 0, "vlan": 0,
            "src": "10.0.0.1", "dst": "10.0.1.1", "sport": 40000, "dport": dport, "proto": proto,
            "verdict": verdict, "rule_id": rule_id, "policy_version": 1, "duration_ms": 0, "tcp_state": null,
            "packets": packets, "bytes": [packets[0] * 100, packets[1] * 100],
            "src_segments": src, "dst_segments": dst,
        }))
        .unwrap()
}

fn policy() -> Policy {
    Policy::from_value(json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "a", "prefixes": ["10.0.0.0/24"], "labels": {"zone": "it"}},
            {"name": "a2", "prefixes": ["10.0.0.0/25"]},
            {"name": "b", "prefixes": ["10.0.1.0/24"], "mode": "monitor"},
            {"name": "quiet", "prefixes": ["10.0.9.0/24"]}
        ],
        "rules": [{"id": 5, "name": "a-b", "from": {"segment": "a"}, "to": {"segment": "b"},
                   "service": "any", "action": "allow"}]
    }))
    .unwrap()
}

fn query(window_s: u64, proto: Option<u8>, port: Option<u16>) -> TrafficMapQuery {
    let filter = FlowLogFilter {
        proto,
        port,
        ..Default::default()
    };
    TrafficMapQuery { window_s, filter }
}

fn edge<'a>(m: &'a Value, from: &str, to: &str) -> &'a Value {
    m["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == from && e["to"] == to)
        .unwrap_or_else(|| panic!("no edge {from} -> {to}: {m}"))
}

#[test]
fn counts_flows_once_and_every_segment_pair() {
    let now = SystemTime::now();
    let s = |secs: u64| now - Duration::from_secs(secs);
    let l = log("count", 100);
    l.ingest(
        "local",
        vec![
            // Too old for a 600 s window.
            ev("new", "allow", s(700), &["a"], &["b"], 6, 80, 5, [1, 0]),
            ev(
                "new",
                "allow",
                s(100),
                &["a", "a2"],
                &["b"],
                6,
                80,
                5,
                [1, 0],
            ),
            ev(
                "closed",
                "allow",
                s(50),
                &["a", "a2"],
                &["b"],
                6,
                80,
                5,
                [4, 3],
            ),
            ev(
                "new",
                "would_deny",
                s(40),
                &["a"],
                &["b"],
                17,
                53,
                0,
                [1, 0],
            ),
            ev("denied", "deny", s(30), &[], &["b"], 6, 22, 0, [1, 0]),
            ev("denied", "reject", s(20), &[], &["b"], 6, 22, 0, [1, 0]),
            ev(
                "new",
                "allow",
                s(10),
                &["gone"],
                &["a"],
                1,
                4242,
                77,
                [1, 0],
            ),
        ],
    );
    let m = map(&l, Some(&policy()), &query(600, None, None), now);
    assert_eq!(m["events_considered"], 6);
    assert_eq!(m["truncated"], false);
    let ab = edge(&m, "a", "b");
    assert_eq!(
        (
            ab["allowed"].clone(),
            ab["would_deny"].clone(),
            ab["denied"].clone()
        ),
        (json!(1), json!(1), json!(0))
    );
    assert_eq!(
        (ab["packets"].clone(), ab["bytes"].clone()),
        (json!(7), json!(700)),
        "only from closed"
    );
    assert_eq!(ab["last_seen"], time::rfc3339(s(40)));
    assert_eq!(
        ab["services"],
        json!([{"proto": 6, "port": 80, "flows": 1}, {"proto": 17, "port": 53, "flows": 1}])
    );
    assert_eq!(
        ab["rules"],
        json!([{"id": 0, "name": "default", "flows": 1}, {"id": 5, "name": "a-b", "flows": 1}])
    );
    let a2b = edge(&m, "a2", "b");
    assert_eq!(
        (a2b["allowed"].clone(), a2b["packets"].clone()),
        (json!(1), json!(7))
    );
    let denied = edge(&m, UNSEGMENTED, "b");
    assert_eq!(
        (denied["denied"].clone(), denied["packets"].clone()),
        (json!(2), json!(2))
    );
    let gone = edge(&m, "gone", "a");
    assert_eq!(gone["rules"], json!([{"id": 77, "name": null, "flows": 1}]));
    assert_eq!(
        gone["services"],
        json!([{"proto": 1, "port": 0, "flows": 1}]),
        "ICMP: port 0"
    );
    assert_eq!(m["edges"].as_array().unwrap().len(), 4);
    let nodes: BTreeMap<String, Value> = m["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap().to_string(), n.clone()))
        .collect();
    assert_eq!(
        nodes.keys().map(String::as_str).collect::<Vec<_>>(),
        ["-", "a", "a2", "b", "gone", "quiet"]
    );
    assert_eq!(
        nodes["a"],
        json!({"id": "a", "name": "a", "labels": {"zone": "it"}, "prefixes": ["10.0.0.0/24"],
                   "mode": "enforce", "observed": true})
    );
    assert_eq!(nodes["b"]["mode"], "monitor");
    assert_eq!(nodes["quiet"]["observed"], false);
    assert_eq!(nodes["-"]["mode"], Value::Null);
    assert_eq!(nodes["gone"]["observed"], true);

    // Filters and a narrower window.
    let m = map(&l, Some(&policy()), &query(600, Some(17), None), now);
    assert_eq!(m["events_considered"], 1);
    assert_eq!(edge(&m, "a", "b")["would_deny"], 1);
    let m = map(&l, Some(&policy()), &query(600, None, Some(22)), now);
    assert_eq!(m["edges"].as_array().unwrap().len(), 1);
    let m = map(&l, Some(&policy()), &query(15, None, None), now);
    assert_eq!(m["events_considered"], 1);
}

#[test]
fn truncated_when_the_full_buffer_starts_inside_the_window() {
    let now = SystemTime::now();
    let l = log("trunc", 2);
    let e = |secs| {
        ev(
            "new",
            "allow",
            now - Duration::from_secs(secs),
            &["a"],
            &["b"],
            6,
            80,
            5,
            [1, 0],
        )
    };
    l.ingest("local", vec![e(500), e(400), e(300)]);
    assert_eq!(
        map(&l, None, &query(600, None, None), now)["truncated"],
        true
    );
    assert_eq!(
        map(&l, None, &query(350, None, None), now)["truncated"],
        false
    );
    assert!(map(&l, None, &query(350, None, None), now)["nodes"][0]["id"] == "a");
}
