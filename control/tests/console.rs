//! The endpoints the web console reads — `/stats`, `/rules/health`, `/traffic/map`, and the flow log's segment
//! filters — against a real control process and a real dataplane: one fed by `net_null` (which generates
//! packets on receive: live counters), one replaying a pcap written here (exact flows, events and counters).

mod common;

use std::time::Duration;

use bulkhead_pktgen::frame::L4Spec;
use common::*;
use serde_json::{json, Value};
use testbed::control::Control;

const FAST_METRICS: &str = "[metrics]\npoll_ms = 100\n";

fn get(c: &Control, path: &str) -> Value {
    let r = c.call("GET", path, None).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body
}

fn bad(c: &Control, path: &str, param: &str) {
    let r = c.call("GET", path, None).unwrap();
    assert_eq!(r.status, 400, "{path}: {}", r.body);
    assert_eq!(r.body["error"]["code"], "bad_request", "{path}");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("`{param}`")), "{path}: {message}");
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

/// Clients, a legacy host, and an IPv6-only lab; a monitor-mode rule, a rule covered by an earlier one, and a
/// rule between families (it matches nothing).
fn policy() -> Value {
    json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "clients", "prefixes": ["10.99.0.1/32"], "labels": {"zone": "it"}},
            {"name": "legacy", "prefixes": ["10.99.0.2/32"], "labels": {"zone": "ot"}},
            {"name": "lab6", "prefixes": ["fd00:99::/64"]}
        ],
        "services": [
            {"name": "postgres", "protocol": "tcp", "ports": ["5432"]},
            {"name": "ping", "protocol": "icmp", "icmp_type": 8},
            {"name": "snmp", "protocol": "udp", "ports": ["161"]}
        ],
        "rules": [
            {"id": 10, "name": "clients-db", "from": {"segment": "clients"}, "to": {"segment": "legacy"},
             "service": "postgres", "action": "allow", "description": "the ERP database"},
            {"id": 20, "name": "clients-ping", "from": {"segment": "clients"}, "to": {"segment": "legacy"},
             "service": "ping", "action": "allow"},
            {"id": 30, "name": "snmp-watch", "from": {"segment": "clients"}, "to": {"segment": "legacy"},
             "service": "snmp", "action": "deny", "mode": "monitor"},
            {"id": 40, "name": "db-again", "from": {"segment": "clients"}, "to": {"segment": "legacy"},
             "service": "postgres", "action": "deny"},
            {"id": 50, "name": "to-lab", "from": {"segment": "clients"}, "to": {"segment": "lab6"},
             "service": "any", "action": "allow"}
        ],
        "settings": {"default_action": "deny"}
    })
}

/// Five flows into port a: three allowed (one only by monitor mode), two denied by the default action (one
/// from an address in no segment).
fn frames() -> Vec<Vec<u8>> {
    vec![
        syn("10.99.0.1", "10.99.0.2", 40000, 5432),
        frame("10.99.0.1", "10.99.0.2", L4Spec::echo(8, 7, 1), &[0u8; 32]),
        frame("10.99.0.1", "10.99.0.2", L4Spec::udp(5000, 161), &[0u8; 40]),
        syn("10.99.0.9", "10.99.0.2", 40001, 22),
        syn("10.99.0.1", "10.99.0.2", 40002, 22),
    ]
}

#[test]
fn stats_rates_come_from_live_counters_and_go_null_when_the_dataplane_dies() {
    let dir = test_dir("stats");
    std::fs::write(dir.join("policy.json"), policy().to_string()).unwrap();
    let boot = format!(
        "bootstrap = {:?}",
        dir.join("policy.json").display().to_string()
    );
    // A plain net_null port generates (meaningless) packets on every receive: real, ever-growing counters.
    let mut dp = NullDataplane::start_ports(&dir, &boot, "net_null{n}0", "net_null{n}1,no-rx=1");
    let mut opts = control_opts(&dir, &dp.socket);
    opts.extra = FAST_METRICS.into();
    let c = start_control(&opts);

    let s = wait_for(20, "rates after two readings", || {
        let s = get(&c, "/api/v1/stats");
        (!s["rates"].is_null()).then_some(s)
    });
    assert_eq!(
        keys(&s),
        [
            "interval_s",
            "last_error",
            "policy_version",
            "ports",
            "rates",
            "read_at",
            "totals",
            "up",
            "workers"
        ]
    );
    assert_eq!(s["up"], true);
    assert_eq!(s["last_error"], Value::Null);
    assert_eq!(s["policy_version"], 1);
    assert!(humantime::parse_rfc3339(s["read_at"].as_str().unwrap()).is_ok());
    let dt = s["interval_s"].as_f64().unwrap();
    assert!(dt > 0.0 && dt < 5.0, "{dt}");
    let t = &s["totals"];
    assert_eq!(
        keys(t),
        [
            "drops",
            "drops_total",
            "flows_active",
            "flows_closed",
            "flows_created",
            "flows_evicted",
            "rejects_sent",
            "rx_packets",
            "tx_packets",
            "would_deny"
        ]
    );
    assert!(t["rx_packets"].as_u64().unwrap() > 0);
    let drops: u64 = t["drops"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(t["drops_total"], drops);
    let r = &s["rates"];
    assert_eq!(
        keys(r),
        [
            "closed_flows_ps",
            "drops_pps",
            "drops_pps_by_reason",
            "new_flows_ps",
            "rx_pps",
            "tx_pps",
            "would_deny_pps"
        ]
    );
    assert!(r["rx_pps"].as_f64().unwrap() > 0.0, "{r}");
    let by_reason: f64 = r["drops_pps_by_reason"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!(
        (by_reason - r["drops_pps"].as_f64().unwrap()).abs() < 1e-6 * by_reason.max(1.0),
        "{r}"
    );
    let w = &s["workers"][0];
    assert_eq!(w["worker"], 0);
    assert!(w["rx_pps"].as_f64().unwrap() > 0.0, "{w}");
    let busy = w["busy_ratio"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&busy), "{busy}");
    let ports: Vec<&str> = s["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(ports, ["a", "b"]);
    let a = &s["ports"][0];
    assert!(a["rx_packets"].as_u64().unwrap() > 0);
    assert!(a["rx_pps"].as_f64().unwrap() > 0.0, "{a}");
    // net_null counts no bytes: a rate of zero, not a missing one.
    assert_eq!(a["rx_bps"], 0.0, "{a}");
    bad(&c, "/api/v1/stats?verbose=1", "verbose");

    // The dataplane goes away: no stale number is repeated, the error is given, shadowing is still known.
    dp.stop();
    let s = wait_for(20, "up=false", || {
        let s = get(&c, "/api/v1/stats");
        (s["up"] == false).then_some(s)
    });
    assert!(!s["last_error"].as_str().unwrap().is_empty(), "{s}");
    for k in ["read_at", "interval_s", "policy_version", "totals", "rates"] {
        assert_eq!(s[k], Value::Null, "{k}: {s}");
    }
    assert_eq!(
        (s["workers"].clone(), s["ports"].clone()),
        (json!([]), json!([]))
    );
    let h = get(&c, "/api/v1/rules/health");
    assert_eq!(h["read_at"], Value::Null);
    assert_eq!(h["rules"][0]["packets"], Value::Null);
    assert_eq!(h["rules"][0]["stale"], Value::Null);
    assert_eq!(
        h["rules"][3]["shadowed"],
        json!({"reason": "covered_by", "by": [10]})
    );
}

#[test]
fn real_flows_make_counters_rule_health_segment_filters_and_the_map() {
    let dir = test_dir("flows");
    let dp = NullDataplane::replaying(&dir, &policy(), &frames());
    let mut opts = control_opts(&dir, &dp.socket);
    opts.extra = FAST_METRICS.into();
    let c = start_control(&opts);

    // Exact counters: five packets in, three forwarded (one only by monitor mode), two denied.
    let s = wait_for(20, "the five packets counted, and rates", || {
        let s = get(&c, "/api/v1/stats");
        (s["totals"]["rx_packets"] == 5 && !s["rates"].is_null()).then_some(s)
    });
    let t = &s["totals"];
    assert_eq!(t["tx_packets"], 3, "{s}");
    assert_eq!(t["would_deny"], 1, "{s}");
    assert_eq!(t["flows_created"], 3, "{s}");
    assert_eq!(t["drops"]["policy_deny"], 2, "{s}");
    assert_eq!(t["drops_total"], 2, "{s}");
    assert_eq!(s["ports"][0]["rx_packets"], 5, "{s}");
    assert_eq!(s["ports"][1]["tx_packets"], 3, "{s}");
    assert_eq!(
        s["rates"]["rx_pps"], 0.0,
        "the capture was replayed once, before these readings"
    );

    // Rules health: hits with their time, shadowing, staleness.
    let h = get(&c, "/api/v1/rules/health");
    assert_eq!(
        (
            h["policy"].clone(),
            h["version"].clone(),
            h["stale_after_s"].clone()
        ),
        (json!("active"), json!(1), json!(86400))
    );
    assert!(humantime::parse_rfc3339(h["read_at"].as_str().unwrap()).is_ok());
    let rules = h["rules"].as_array().unwrap();
    let ids: Vec<u64> = rules.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [10, 20, 30, 40, 50]);
    for (i, r) in rules.iter().enumerate() {
        assert_eq!(r["position"], i);
    }
    assert_eq!(rules[0]["description"], "the ERP database");
    assert_eq!(rules[2]["mode"], "monitor");
    assert_eq!(rules[2]["action"], "deny");
    for r in &rules[..3] {
        assert_eq!(
            (r["packets"].clone(), r["flows"].clone()),
            (json!(1), json!(1)),
            "{r}"
        );
        assert!(r["bytes"].as_u64().unwrap() >= 60, "{r}");
        let hit = humantime::parse_rfc3339(r["last_hit"].as_str().unwrap()).unwrap();
        let ago = std::time::SystemTime::now()
            .duration_since(hit)
            .unwrap_or_default();
        assert!(ago < Duration::from_secs(120), "{r}");
        assert_eq!(r["stale"], false, "{r}");
        assert_eq!(r["shadowed"], Value::Null, "{r}");
    }
    for r in &rules[3..] {
        assert_eq!(
            (r["packets"].clone(), r["last_hit"].clone()),
            (json!(0), Value::Null),
            "{r}"
        );
        assert_eq!(r["stale"], true, "never hit: {r}");
    }
    assert_eq!(
        rules[3]["shadowed"],
        json!({"reason": "covered_by", "by": [10]})
    );
    assert_eq!(
        rules[4]["shadowed"],
        json!({"reason": "matches_nothing", "by": []})
    );
    let d = &h["default"];
    assert_eq!(
        (d["action"].clone(), d["packets"].clone()),
        (json!("deny"), json!(2)),
        "{d}"
    );
    assert!(d["last_hit"].is_string(), "{d}");
    std::thread::sleep(Duration::from_millis(1100));
    let h = get(&c, "/api/v1/rules/health?stale_after_s=1");
    assert_eq!(
        h["rules"][0]["stale"], true,
        "last hit more than a second ago"
    );
    // The draft: a rule the dataplane does not run has zeros.
    let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
    let rule = json!({"id": 60, "name": "new-one", "from": {"segment": "legacy"}, "to": {"segment": "clients"},
                      "service": "ping", "action": "allow"});
    let r = c
        .write("POST", "/api/v1/draft/rules", Some(&rule), &etag)
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let h = get(&c, "/api/v1/rules/health?policy=draft");
    assert_eq!(
        (h["policy"].clone(), h["version"].clone()),
        (json!("draft"), Value::Null)
    );
    let last = &h["rules"][5];
    assert_eq!(
        (
            last["id"].clone(),
            last["packets"].clone(),
            last["last_hit"].clone()
        ),
        (json!(60), json!(0), Value::Null)
    );
    assert_eq!(h["rules"][0]["packets"], 1, "counted by rule id");

    // The flow log: 3 new + 2 denied; then killing the flows closes them (3 closed, with their counts).
    let log = wait_for(20, "five events", || {
        let v = get(&c, "/api/v1/flow-log");
        (v["count"] == 5).then_some(v)
    });
    let kinds: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "new").count(), 3, "{log}");
    let r = c
        .call("POST", "/api/v1/flows/kill", Some(&json!({"all": true})))
        .unwrap();
    assert_eq!(
        (r.status, r.body["killed"].clone()),
        (200, json!(3)),
        "{}",
        r.body
    );
    wait_for(20, "three closed events", || {
        let v = get(&c, "/api/v1/flow-log?kind=closed");
        (v["count"] == 3).then_some(())
    });
    let count = |q: &str| {
        get(&c, &format!("/api/v1/flow-log?{q}"))["count"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count("src_segment=clients"), 7, "3 new, 1 denied, 3 closed");
    assert_eq!(count("src_segment=-"), 1, "the unsegmented source");
    assert_eq!(count("src_segment=-&dst_segment=legacy"), 1);
    assert_eq!(count("dst_segment=legacy&kind=denied"), 2);
    assert_eq!(count("dst_segment=clients"), 0);
    assert_eq!(count("dst_segment=-"), 0);
    bad(&c, "/api/v1/flow-log?src_segment=", "src_segment");

    // The map from those real events.
    let m = get(&c, "/api/v1/traffic/map?window_s=600");
    assert_eq!(m["window_s"], 600);
    assert_eq!(m["events_considered"], 8);
    assert_eq!(m["truncated"], false);
    let node = |id: &str| {
        m["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap_or_else(|| panic!("no node {id}: {m}"))
            .clone()
    };
    assert_eq!(
        node("clients"),
        json!({"id": "clients", "name": "clients", "labels": {"zone": "it"}, "prefixes": ["10.99.0.1/32"],
               "mode": "enforce", "observed": true})
    );
    assert_eq!(node("lab6")["observed"], false);
    assert_eq!(node("-")["observed"], true);
    assert_eq!(m["nodes"].as_array().unwrap().len(), 4);
    let edges = m["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{m}");
    let e = edges
        .iter()
        .find(|e| e["from"] == "clients" && e["to"] == "legacy")
        .unwrap();
    assert_eq!(
        (
            e["allowed"].clone(),
            e["would_deny"].clone(),
            e["denied"].clone()
        ),
        (json!(2), json!(1), json!(1)),
        "{e}"
    );
    assert_eq!(
        e["packets"], 4,
        "three closed flows of one packet, one denied packet: {e}"
    );
    let mut services: Vec<(u64, u64, u64)> = e["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["proto"].as_u64().unwrap(),
                s["port"].as_u64().unwrap(),
                s["flows"].as_u64().unwrap(),
            )
        })
        .collect();
    services.sort();
    assert_eq!(
        services,
        [(1, 0, 1), (6, 22, 1), (6, 5432, 1), (17, 161, 1)]
    );
    let mut rules: Vec<(u64, Value, u64)> = e["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().unwrap(),
                r["name"].clone(),
                r["flows"].as_u64().unwrap(),
            )
        })
        .collect();
    rules.sort_by_key(|r| r.0);
    assert_eq!(
        rules,
        [
            (0, json!("default"), 1),
            (10, json!("clients-db"), 1),
            (20, json!("clients-ping"), 1),
            (30, json!("snmp-watch"), 1)
        ]
    );
    assert!(e["last_seen"].is_string());
    let u = edges.iter().find(|e| e["from"] == "-").unwrap();
    assert_eq!(
        (u["to"].clone(), u["denied"].clone(), u["allowed"].clone()),
        (json!("legacy"), json!(1), json!(0))
    );
    // Filters: UDP only, port 22 only.
    let m = get(&c, "/api/v1/traffic/map?proto=udp");
    assert_eq!(m["edges"][0]["would_deny"], 1, "{m}");
    assert_eq!(m["edges"].as_array().unwrap().len(), 1, "{m}");
    let m = get(&c, "/api/v1/traffic/map?port=22");
    assert_eq!(m["events_considered"], 2, "{m}");

    for (path, param) in [
        ("/api/v1/traffic/map?window_s=0", "window_s"),
        ("/api/v1/traffic/map?window_s=86401", "window_s"),
        ("/api/v1/traffic/map?port=70000", "port"),
        ("/api/v1/traffic/map?proto=sctp", "proto"),
        ("/api/v1/traffic/map?kind=new", "kind"),
        ("/api/v1/rules/health?policy=both", "policy"),
        ("/api/v1/rules/health?stale_after_s=0", "stale_after_s"),
        (
            "/api/v1/rules/health?stale_after_s=1&stale_after_s=2",
            "stale_after_s",
        ),
        ("/api/v1/rules/health?window=5", "window"),
    ] {
        bad(&c, path, param);
    }
}
