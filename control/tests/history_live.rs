//! The flow history with a real dataplane and a real control process: flows replayed from a pcap become
//! conversations in the history, which a graceful stop writes out and a restart (graceful or kill -9) keeps.

mod common;

use bulkhead_pktgen::frame::L4Spec;
use common::*;
use serde_json::{json, Value};
use testbed::control::Control;

fn get(c: &Control, path: &str) -> Value {
    let r = c.call("GET", path, None).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body
}

fn policy() -> Value {
    json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "clients", "prefixes": ["10.99.0.1/32"]},
            {"name": "legacy", "prefixes": ["10.99.0.2/32"]}
        ],
        "services": [
            {"name": "postgres", "protocol": "tcp", "ports": ["5432"]},
            {"name": "snmp", "protocol": "udp", "ports": ["161"]}
        ],
        "rules": [
            {"id": 10, "name": "clients-db", "from": {"segment": "clients"}, "to": {"segment": "legacy"},
             "service": "postgres", "action": "allow"},
            {"id": 30, "name": "snmp-watch", "from": {"segment": "clients"}, "to": {"segment": "legacy"},
             "service": "snmp", "action": "deny", "mode": "monitor"},
            {"id": 40, "name": "unused", "from": {"segment": "legacy"}, "to": {"segment": "clients"},
             "service": "postgres", "action": "allow"}
        ],
        "settings": {"default_action": "deny"}
    })
}

/// Four flows into port a: an allowed one, one allowed only by monitor mode, two denied by the default action
/// (one from 192.168.50.7, in no segment).
fn frames() -> Vec<Vec<u8>> {
    vec![
        syn("10.99.0.1", "10.99.0.2", 40000, 5432),
        frame("10.99.0.1", "10.99.0.2", L4Spec::udp(5000, 161), &[0u8; 20]),
        syn("10.99.0.1", "10.99.0.2", 40002, 22),
        syn("192.168.50.7", "10.99.0.2", 40001, 22),
    ]
}

/// (src, dst, service, verdict, rule, flows) of every conversation over the whole retention.
fn conversations(c: &Control) -> Vec<(String, String, u64, String, u64, u64)> {
    let v = get(c, "/api/v1/history/conversations?group=window");
    let mut out: Vec<_> = v["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let k = &c["key"];
            (
                k["src"].as_str().unwrap().to_string(),
                k["dst"].as_str().unwrap().to_string(),
                k["service"].as_u64().unwrap(),
                k["verdict"].as_str().unwrap().to_string(),
                k["rule_id"].as_u64().unwrap(),
                c["flows"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn real_flows_reach_the_history_and_survive_control_restarts() {
    let dir = test_dir("history-live");
    let dp = NullDataplane::replaying(&dir, &policy(), &frames());
    // The first control keeps what it aggregates in memory (a minute between writes): only its graceful stop
    // writes it out.
    let mut opts = control_opts(&dir, &dp.socket);
    opts.extra = "[history]\nflush_ms = 60000\n".into();
    let mut c = start_control(&opts);
    wait_for(20, "four events in the flow log", || {
        (get(&c, "/api/v1/flow-log")["count"] == 4).then_some(())
    });
    c.stop().unwrap();

    opts.extra = "[history]\nflush_ms = 100\n".into();
    let mut c = start_control(&opts);
    let expected = vec![
        (
            "10.99.0.1".into(),
            "10.99.0.2".into(),
            22,
            "deny".into(),
            0,
            1,
        ),
        (
            "10.99.0.1".into(),
            "10.99.0.2".into(),
            161,
            "would_deny".into(),
            30,
            1,
        ),
        (
            "10.99.0.1".into(),
            "10.99.0.2".into(),
            5432,
            "allow".into(),
            10,
            1,
        ),
        (
            "192.168.50.7".into(),
            "10.99.0.2".into(),
            22,
            "deny".into(),
            0,
            1,
        ),
    ];
    assert_eq!(conversations(&c), expected);

    // The map, rules and unsegmented hosts of that history, under the active policy.
    let m = get(&c, "/api/v1/history/map");
    let edges = m["edges"].as_array().unwrap();
    let edge = |from: &str, to: &str| {
        edges
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .unwrap_or_else(|| panic!("no {from} → {to} in {m}"))
    };
    let e = edge("clients", "legacy");
    assert_eq!(
        (
            e["allowed"].clone(),
            e["would_deny"].clone(),
            e["denied"].clone()
        ),
        (json!(1), json!(1), json!(1))
    );
    assert_eq!(edge("-", "legacy")["denied"], 1);
    let rules = get(&c, "/api/v1/history/rules");
    let stale: Vec<bool> = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["stale"].as_bool().unwrap())
        .collect();
    assert_eq!(stale, [false, false, true], "{rules}");
    let u = get(&c, "/api/v1/history/unsegmented");
    assert_eq!(u["candidates"][0]["subnet"], "192.168.50.0/24", "{u}");
    assert_eq!(
        u["candidates"][0]["talks_to"],
        json!([{"segment": "legacy", "flows": 1}])
    );

    // kill -9 keeps what was written.
    c.kill9();
    let c = start_control(&opts);
    assert_eq!(conversations(&c), expected);
}
