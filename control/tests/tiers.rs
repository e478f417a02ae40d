//! A tiered policy on the namespace test bed with real clients: a global deny that a lower tier's allow cannot
//! undo, a global pass that lets the segment tier decide (its allow, and its default deny), the flow log naming
//! the deciding tier; and a token scoped to the segment tier, refused outside it. Needs root.

mod common;

use common::*;
use serde_json::{json, Value};
use testbed::addr;
use testbed::control::ControlOptions;

/// global (security team): modbus from the clients to the plant is denied, everything else between them is
/// passed on; segments (application team): web and modbus allowed, anything else denied by the tier.
fn policy() -> Value {
    json!({
        "format": "bulkhead.policy/v2",
        "segments": [
            {"name": "clients", "prefixes": [format!("{}/32", addr::A4)]},
            {"name": "plant", "prefixes": [format!("{}/32", addr::B4)]}
        ],
        "services": [
            {"name": "web", "protocol": "tcp", "ports": ["8080"]},
            {"name": "modbus", "protocol": "tcp", "ports": ["502"]}
        ],
        "tiers": [
            {"name": "global", "description": "security team", "default": "pass", "rules": [
                {"id": 1, "name": "no-modbus-from-clients", "from": {"segment": "clients"},
                 "to": {"segment": "plant"}, "service": "modbus", "action": "deny"},
                {"id": 2, "name": "clients-to-plant", "from": {"segment": "clients"},
                 "to": {"segment": "plant"}, "service": "any", "action": "pass"}
            ]},
            {"name": "segments", "description": "plant team", "default": "deny", "rules": [
                {"id": 10, "name": "clients-web", "from": {"segment": "clients"}, "to": {"segment": "plant"},
                 "service": "web", "action": "allow"},
                {"id": 11, "name": "clients-modbus", "from": {"segment": "clients"}, "to": {"segment": "plant"},
                 "service": "modbus", "action": "allow"}
            ]}
        ],
        "settings": {"default_action": "deny", "pass_arp": true, "pass_neighbor_discovery": true}
    })
}

/// (dport, kind, rule_id, tier) of the flow-log events that opened or denied a flow to the plant host.
fn decided(c: &testbed::control::Control) -> Vec<(u64, String, u64, Value)> {
    let r = c.call("GET", "/api/v1/flow-log?limit=1000", None).unwrap();
    ok(&r);
    let mut out: Vec<_> = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| (e["kind"] == "new" || e["kind"] == "denied") && e["dst"] == addr::B4)
        .map(|e| {
            (
                e["dport"].as_u64().unwrap(),
                e["kind"].as_str().unwrap().to_string(),
                e["rule_id"].as_u64().unwrap(),
                e["tier"].clone(),
            )
        })
        .collect();
    out.sort_by_key(|e| e.0);
    out.dedup();
    out
}

#[test]
fn tiers_decide_real_traffic_and_scoped_tokens_stay_in_their_tier() {
    let (bed, www) = bed_with_www();
    let _servers = [8080, 502, 5432].map(|port| file_server(&bed.b, addr::B4, port, &www));
    for port in [8080, 502, 5432] {
        assert!(
            fetches(&bed.b, None, addr::B4, port),
            "{port} answers locally"
        );
    }
    let copts = ControlOptions::new(
        control_bin(),
        &bed.dir.join("control"),
        &bed.control_socket(),
    );
    let c = start_control(&copts);
    import(&c, &policy());
    let r = commit(&c, json!({"comment": "tiers"}));
    ok(&r);

    // The pass lets the segment tier allow the web; the global deny wins over the segment tier's modbus allow;
    // anything else the global tier passed on is denied by the segment tier's default.
    assert!(fetches(&bed.a, None, addr::B4, 8080), "web passes");
    assert!(!fetches(&bed.a, None, addr::B4, 502), "modbus is denied");
    assert!(!fetches(&bed.a, None, addr::B4, 5432), "5432 is denied");
    let want = vec![
        (502, "denied".to_string(), 1, json!("global")),
        (5432, "denied".to_string(), 0, json!("segments")),
        (8080, "new".to_string(), 10, json!("segments")),
    ];
    wait_for(20, "the three decisions in the flow log", || {
        (decided(&c) == want).then_some(())
    });

    // Explain says the same, with the tier.
    let r = c
        .call(
            "POST",
            "/api/v1/explain",
            Some(&json!({"src": addr::A4, "dst": addr::B4, "protocol": "tcp", "port": 5432})),
        )
        .unwrap();
    ok(&r);
    assert_eq!(
        r.body["active"]["matched"],
        json!({"type": "tier_default", "tier": "segments", "action": "deny", "monitored": false})
    );

    // A token of the plant team, scoped to the segment tier.
    let r = c
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&json!({"identity": "plant-team", "role": "author", "tiers": ["segments"]})),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["tiers"], json!(["segments"]));
    let team = r.body["token"].as_str().unwrap().to_string();
    let as_team = |method: &str, path: &str, body: Option<&Value>| {
        c.request(
            method,
            path,
            body,
            &[("If-Match", &draft_etag(&c))],
            Some(&team),
        )
        .unwrap()
    };
    let r = c
        .request("GET", "/api/v1/whoami", None, &[], Some(&team))
        .unwrap();
    assert_eq!(r.body["tiers"], json!(["segments"]));

    // Its own tier: a rule added, one changed.
    let r = as_team(
        "POST",
        "/api/v1/draft/rules?tier=segments&position=0",
        Some(
            &json!({"id": 12, "name": "clients-5432", "from": {"segment": "clients"},
                     "to": {"segment": "plant"}, "service": "any", "action": "allow"}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["validation"]["valid"], true, "{}", r.body);
    let draft = c.call("GET", "/api/v1/draft", None).unwrap().body;
    assert_eq!(draft["tiers"][1]["rules"][0]["id"], 12);

    // The global tier, the document-wide settings and the segments are refused, naming what they touch.
    let mut global = draft["tiers"][0]["rules"][0].clone();
    global["action"] = json!("allow");
    let r = as_team("PUT", "/api/v1/draft/rules/1", Some(&global));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "forbidden_tier");
    assert_eq!(r.body["error"]["details"][0]["path"], "tier");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tier \"global\""),
        "{}",
        r.body
    );
    let r = as_team(
        "PUT",
        "/api/v1/draft/rules/11?tier=global",
        Some(&draft["tiers"][1]["rules"][2]),
    );
    assert_eq!(r.status, 403, "moving a rule into global: {}", r.body);
    let r = as_team(
        "PUT",
        "/api/v1/draft/settings",
        Some(&json!({"default_action": "allow"})),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let mut doc = draft.clone();
    doc["tiers"][0]["rules"] = json!([]);
    let r = as_team("PUT", "/api/v1/draft", Some(&doc));
    assert_eq!(r.status, 403, "an import that empties global: {}", r.body);
    let draft_after = c.call("GET", "/api/v1/draft", None).unwrap().body;
    assert_eq!(
        draft_after, draft,
        "refused edits leave the draft as it was"
    );

    // The team's rule, committed, lets 5432 through; modbus stays denied by the global tier.
    let r = commit(&c, json!({"comment": "plant team: 5432"}));
    ok(&r);
    assert!(fetches(&bed.a, None, addr::B4, 5432), "5432 passes now");
    assert!(
        !fetches(&bed.a, None, addr::B4, 502),
        "modbus is still denied"
    );
}
