//! Rule suggestion and what-if against a real control process and a real dataplane replaying a pcap written
//! here (exact flows, hence exact conversations).

mod common;

use bulkhead_pktgen::frame::L4Spec;
use common::*;
use serde_json::{json, Value};
use testbed::control::Control;

/// Clients and a legacy host: postgres and ping allowed, snmp only monitored, ssh left to the default.
fn policy() -> Value {
    json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "clients", "prefixes": ["10.98.0.0/24"], "labels": {"zone": "it"}},
            {"name": "legacy", "prefixes": ["10.98.1.2/32"], "labels": {"zone": "ot"}}
        ],
        "services": [
            {"name": "postgres", "protocol": "tcp", "ports": ["5432"]},
            {"name": "ping", "protocol": "icmp", "icmp_type": 8},
            {"name": "snmp", "protocol": "udp", "ports": ["161"]}
        ],
        "rules": [
            {"id": 10, "name": "clients-db", "from": {"segment": "clients"}, "to": {"segment": "legacy"},
             "service": "postgres", "action": "allow"},
            {"id": 20, "name": "clients-ping", "from": {"segment": "clients"}, "to": {"segment": "legacy"},
             "service": "ping", "action": "allow"},
            {"id": 30, "name": "snmp-watch", "from": {"segment": "clients"}, "to": {"segment": "legacy"},
             "service": "snmp", "action": "deny", "mode": "monitor"}
        ],
        "settings": {"default_action": "deny"}
    })
}

/// Six flows: postgres from two clients (rule 10), ping (rule 20), snmp (would-deny by rule 30), ssh from a
/// client and from an address in no segment (denied by the default).
fn frames() -> Vec<Vec<u8>> {
    vec![
        syn("10.98.0.1", "10.98.1.2", 40000, 5432),
        syn("10.98.0.3", "10.98.1.2", 40000, 5432),
        frame("10.98.0.1", "10.98.1.2", L4Spec::echo(8, 7, 1), &[0u8; 32]),
        frame("10.98.0.1", "10.98.1.2", L4Spec::udp(5000, 161), &[0u8; 40]),
        syn("10.98.0.1", "10.98.1.2", 40002, 22),
        syn("10.98.9.9", "10.98.1.2", 40001, 22),
    ]
}

fn post(c: &Control, path: &str, body: &Value) -> Value {
    let r = c.call("POST", path, Some(body)).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body
}

fn without_rules(ids: &[u64]) -> Value {
    let mut p = policy();
    p["rules"]
        .as_array_mut()
        .unwrap()
        .retain(|r| !ids.contains(&r["id"].as_u64().unwrap()));
    p
}

fn tuples(set: &Value) -> Vec<(String, String, u64, u64)> {
    let mut out: Vec<_> = set["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["src"].as_str().unwrap().to_string(),
                c["dst"].as_str().unwrap().to_string(),
                c["proto"].as_u64().unwrap(),
                c["service"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn suggest_apply_and_what_if_over_replayed_traffic() {
    let dir = test_dir("suggest");
    let dp = NullDataplane::replaying(&dir, &policy(), &frames());
    let c = start_control(&control_opts(&dir, &dp.socket));
    wait_for(20, "the six flows in the flow log", || {
        let r = c.call("GET", "/api/v1/flow-log", None).unwrap();
        let started = r.body["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["kind"] == "new" || e["kind"] == "denied")
            .count();
        (started == 6).then_some(())
    });
    // ...and in the flow history, where suggestion and what-if read them (written every `[history] flush_ms`).
    wait_for(20, "the six flows in the history", || {
        let r = c
            .call("GET", "/api/v1/history/conversations?group=window", None)
            .unwrap();
        let flows: u64 = r.body["conversations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["flows"].as_u64().unwrap_or(0))
            .sum();
        (flows == 6).then_some(())
    });

    // What-if: a draft without the postgres rule cuts exactly the two postgres conversations it allowed.
    import(&c, &without_rules(&[10]));
    let w = post(&c, "/api/v1/what-if", &json!({}));
    assert_eq!(w["judged"], "draft");
    assert_eq!(w["unreadable_rows"], 0, "a sound history: {w}");
    assert_eq!(
        (w["conversations"].clone(), w["flows"].clone()),
        (json!(6), json!(6)),
        "{w}"
    );
    let cut = &w["newly_denied"];
    assert_eq!(
        tuples(cut),
        [
            ("10.98.0.1".into(), "10.98.1.2".into(), 6, 5432),
            ("10.98.0.3".into(), "10.98.1.2".into(), 6, 5432)
        ]
    );
    assert_eq!(
        cut["by_rule"],
        json!([{"observed_rule_id": 10, "draft_rule_id": 0, "conversations": 2, "flows": 2}])
    );
    assert_eq!(w["newly_allowed"]["conversations"], 0);

    // A posted document (CI): allowing everything newly allows the three denied or would-denied ones.
    let mut open = policy();
    open["settings"]["default_action"] = json!("allow");
    open["rules"] = json!([]);
    let w = post(&c, "/api/v1/what-if", &json!({"policy": open, "limit": 1}));
    assert_eq!(w["judged"], "posted");
    assert_eq!(w["newly_allowed"]["conversations"], 3, "{w}");
    assert_eq!(w["newly_allowed"]["list"].as_array().unwrap().len(), 1);
    assert_eq!(w["newly_allowed"]["truncated"], true);
    let mut broken = policy();
    broken["rules"][0]["service"] = json!("postgress");
    let r = c
        .call("POST", "/api/v1/what-if", Some(&json!({"policy": broken})))
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["path"], "rules[0].service");
    let r = c
        .call(
            "POST",
            "/api/v1/what-if",
            Some(&json!({"window": {"from": "yesterday"}})),
        )
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["path"], "window.from");

    // Suggest from a draft with no rules: the allowed and would-deny conversations come back as host rules.
    import(&c, &without_rules(&[10, 20, 30]));
    let s = post(&c, "/api/v1/suggest", &json!({}));
    assert_eq!(s["unreadable_rows"], 0, "a sound history: {s}");
    let rules = s["rules"].as_array().unwrap();
    let summary: Vec<(String, String, String, u64)> = rules
        .iter()
        .map(|r| {
            let rule = &r["rule"];
            (
                rule["from"]["prefix"].as_str().unwrap().to_string(),
                rule["to"]["prefix"].as_str().unwrap().to_string(),
                rule["service"].as_str().unwrap().to_string(),
                rule["provenance"]["flows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "10.98.0.1/32".into(),
                "10.98.1.2/32".into(),
                "icmp-8-0".into(),
                1
            ),
            (
                "10.98.0.1/32".into(),
                "10.98.1.2/32".into(),
                "postgres".into(),
                1
            ),
            (
                "10.98.0.1/32".into(),
                "10.98.1.2/32".into(),
                "snmp".into(),
                1
            ),
            (
                "10.98.0.3/32".into(),
                "10.98.1.2/32".into(),
                "postgres".into(),
                1
            ),
        ]
    );
    assert_eq!(s["coverage_after"]["conversations"], 4, "{s}");
    assert_eq!(s["coverage_after"]["conversation_share"], 1.0, "{s}");
    assert_eq!(s["coverage_before"]["conversations_allowed"], 0, "{s}");
    assert_eq!(s["services"][0]["name"], "icmp-8-0");
    assert_eq!(rules[0]["rule"]["provenance"]["source"], "suggested");

    // Grouping by segments: both clients that were seen reach the legacy host on postgres.
    let g = post(
        &c,
        "/api/v1/suggest",
        &json!({"grouping": "segments", "scope": {"segments": ["legacy"]}}),
    );
    let from: Vec<&Value> = g["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["rule"]["from"])
        .collect();
    assert!(from.contains(&&json!({"segment": "clients"})), "{g}");

    // Apply two of the rules: the draft gets them (with provenance) and the one new service they use.
    let ids = [
        rules[0]["rule"]["id"].clone(),
        rules[1]["rule"]["id"].clone(),
    ];
    let body = json!({"proposal": s, "rule_ids": ids});
    let apply = |etag: &str| {
        c.write("POST", "/api/v1/suggest/apply", Some(&body), etag)
            .unwrap()
    };
    let r = c
        .call("POST", "/api/v1/suggest/apply", Some(&body))
        .unwrap();
    assert_eq!(r.status, 428, "{}", r.body);
    let r = apply(&draft_etag(&c));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["object"]["services_added"], json!(["icmp-8-0"]));
    assert_eq!(r.body["validation"]["valid"], true, "{}", r.body);
    let draft = c.call("GET", "/api/v1/draft", None).unwrap().body;
    let added: Vec<&Value> = draft["rules"].as_array().unwrap().iter().collect();
    assert_eq!(added.len(), 2);
    assert_eq!(added[0]["provenance"], rules[0]["rule"]["provenance"]);
    // The diff shows the provenance of the added rules.
    let diff = c.call("GET", "/api/v1/diff", None).unwrap().body;
    assert!(diff.to_string().contains("\"provenance\""), "{diff}");
    // Applying again is a conflict; nothing is committed.
    let r = apply(&draft_etag(&c));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(audit_actions(&c).contains(&"draft.suggestion.apply".to_string()));
    let active = c.call("GET", "/api/v1/active", None).unwrap().body;
    assert_eq!(
        active["policy"]["rules"].as_array().unwrap().len(),
        3,
        "{active}"
    );

    // Committed, the provenance reaches the dataplane, which accepts it (and ignores it).
    ok(&commit(&c, json!({"comment": "suggested rules"})));
    let running = dp.request(json!({"op": "get_policy"})).unwrap();
    let rules = running["policy"]["rules"].as_array().unwrap().clone();
    assert_eq!(rules.len(), 2, "{running}");
    assert_eq!(rules[0]["provenance"], added[0]["provenance"], "{running}");

    // A draft rule that denies a conversation is left alone.
    import(&c, &without_rules(&[10, 20]));
    let s = post(&c, "/api/v1/suggest", &json!({}));
    assert_eq!(s["left_to_draft_rules"], 1, "{s}");
    assert_eq!(s["rules"].as_array().unwrap().len(), 3);
}
