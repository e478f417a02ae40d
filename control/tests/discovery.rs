//! The discovery lifecycle on the namespace test bed with real clients: a monitor-mode segment lets real traffic
//! through as would-deny, the flow history records it, control suggests rules from it, the rules are applied to the
//! draft, the segment is switched to enforce and committed; then the same traffic still passes and anything else
//! is denied by the dataplane. Needs root.

mod common;

use common::*;
use serde_json::{json, Value};
use testbed::control::{Control, ControlOptions};
use testbed::{addr, Options, Side, TestBed};

/// A second address of side a, in the clients segment, that sends nothing during discovery.
const OTHER_CLIENT: &str = "10.99.0.11";
/// ICMP echo request as a conversation's service (`type << 8 | code`).
const ECHO: u64 = 8 << 8;

/// Clients on side a, the protected plant host on side b in monitor mode; no rules, default deny.
fn policy() -> Value {
    json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "clients", "prefixes": [format!("{}/32", addr::A4), format!("{OTHER_CLIENT}/32")]},
            {"name": "plant", "prefixes": [format!("{}/32", addr::B4)], "mode": "monitor"}
        ],
        "services": [],
        "rules": [],
        "settings": {"default_action": "deny", "pass_arp": true, "pass_neighbor_discovery": true}
    })
}

fn get(c: &Control, path: &str) -> Value {
    let r = c.call("GET", path, None).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body
}

fn pings(side: &Side, to: &str) -> bool {
    side.run(&["ping", "-c", "1", "-W", "1", to])
        .unwrap()
        .status
        .success()
}

/// The discovered traffic: side a's first address to the plant host on HTTP 8080, HTTP 502 and ping.
fn discovered_traffic_passes(bed: &TestBed) -> [bool; 3] {
    [
        fetches(&bed.a, None, addr::B4, 8080),
        fetches(&bed.a, None, addr::B4, 502),
        pings(&bed.a, addr::B4),
    ]
}

/// (src, dst, proto, service, verdict, rule) of the flow-log events that started or denied a flow under
/// `version`, sorted and without repeats.
fn decisions(c: &Control, version: u64) -> Vec<(String, String, u64, u64, String, u64)> {
    let log = get(c, "/api/v1/flow-log?limit=1000");
    let mut out: Vec<_> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| (e["kind"] == "new" || e["kind"] == "denied") && e["policy_version"] == version)
        .map(|e| {
            let proto = e["proto"].as_u64().unwrap();
            let service = if proto == 1 {
                ECHO
            } else {
                e["dport"].as_u64().unwrap()
            };
            (
                e["src"].as_str().unwrap().to_string(),
                e["dst"].as_str().unwrap().to_string(),
                proto,
                service,
                e["verdict"].as_str().unwrap().to_string(),
                e["rule_id"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// (src, dst, proto, service, verdict) of the history's conversations with the plant host under `version`.
fn conversations(c: &Control, version: u64) -> Vec<(String, String, u64, u64, String)> {
    let v = get(
        c,
        &format!(
            "/api/v1/history/conversations?group=window&addr={}",
            addr::B4
        ),
    );
    let mut out: Vec<_> = v["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["key"])
        .filter(|k| k["policy_version"] == version)
        .map(|k| {
            (
                k["src"].as_str().unwrap().to_string(),
                k["dst"].as_str().unwrap().to_string(),
                k["proto"].as_u64().unwrap(),
                k["service"].as_u64().unwrap(),
                k["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn tuple(
    src: &str,
    dst: &str,
    proto: u64,
    service: u64,
    verdict: &str,
) -> (String, String, u64, u64, String) {
    (src.into(), dst.into(), proto, service, verdict.into())
}

#[test]
fn monitored_traffic_becomes_the_enforced_policy() {
    let mut opts = Options::new(dataplane_bin());
    opts.policy =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json"));
    let bed = TestBed::start(&opts).unwrap();
    bed.a
        .ok(&[
            "ip",
            "addr",
            "add",
            &format!("{OTHER_CLIENT}/24"),
            "dev",
            &bed.a.iface,
        ])
        .unwrap();
    let www = bed.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("small"), b"hello").unwrap();
    // Listeners on every port the test expects denied too, so that a pass would show.
    let _servers = [
        file_server(&bed.b, addr::B4, 8080, &www),
        file_server(&bed.b, addr::B4, 502, &www),
        file_server(&bed.b, addr::B4, 5432, &www),
        file_server(&bed.a, addr::A4, 8080, &www),
    ];
    assert!(
        fetches(&bed.b, None, addr::B4, 5432),
        "the 5432 server answers locally"
    );
    assert!(
        fetches(&bed.a, None, addr::A4, 8080),
        "side a's server answers locally"
    );

    let mut copts = ControlOptions::new(
        control_bin(),
        &bed.dir.join("control"),
        &bed.control_socket(),
    );
    copts.extra = "[history]\nflush_ms = 50\n".into();
    let c = start_control(&copts);

    // The discovery policy, as automation would put it: plant in monitor mode, nothing allowed.
    import(&c, &policy());
    let r = commit(&c, json!({"comment": "discovery: plant in monitor mode"}));
    ok(&r);
    let monitored = r.body["version"].as_u64().unwrap();

    // Real traffic passes only because the plant segment is monitored: would-deny by the default action.
    assert_eq!(
        discovered_traffic_passes(&bed),
        [true; 3],
        "monitor mode lets the traffic pass"
    );
    let seen = vec![
        tuple(addr::A4, addr::B4, 1, ECHO, "would_deny"),
        tuple(addr::A4, addr::B4, 6, 502, "would_deny"),
        tuple(addr::A4, addr::B4, 6, 8080, "would_deny"),
    ];
    wait_for(20, "the three conversations in the history", || {
        (conversations(&c, monitored) == seen).then_some(())
    });
    assert_eq!(
        decisions(&c, monitored),
        seen.iter()
            .map(|(s, d, p, svc, v)| (s.clone(), d.clone(), *p, *svc, v.clone(), 0))
            .collect::<Vec<_>>(),
        "the dataplane decided would-deny by the default action"
    );

    // Suggest host rules for the plant segment's traffic and add them to the draft.
    let r = c
        .call(
            "POST",
            "/api/v1/suggest",
            Some(&json!({"grouping": "hosts", "scope": {"segments": ["plant"]}})),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let proposal = r.body;
    let rules: Vec<(Value, Value, u64)> = proposal["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let rule = &r["rule"];
            let service = proposal["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == rule["service"])
                .unwrap_or_else(|| panic!("{} is a proposed service", rule["service"]));
            let port = service["ports"][0].as_str().map(|p| p.parse().unwrap());
            (
                rule["from"].clone(),
                rule["to"].clone(),
                port.unwrap_or_else(|| service["icmp_type"].as_u64().unwrap() << 8),
            )
        })
        .collect();
    let a = json!({"prefix": format!("{}/32", addr::A4)});
    let b = json!({"prefix": format!("{}/32", addr::B4)});
    let mut services: Vec<u64> = rules.iter().map(|r| r.2).collect();
    services.sort();
    assert_eq!(services, [502, ECHO, 8080], "{proposal}");
    assert!(rules.iter().all(|r| r.0 == a && r.1 == b), "{proposal}");
    assert_eq!(
        proposal["coverage_after"]["conversation_share"], 1.0,
        "{proposal}"
    );
    let r = c
        .write(
            "POST",
            "/api/v1/suggest/apply",
            Some(&json!({"proposal": proposal})),
            &draft_etag(&c),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // Enforce the plant segment (a draft edit), then commit.
    let mut plant = get(&c, "/api/v1/draft/segments/plant");
    plant["mode"] = json!("enforce");
    let r = c
        .write(
            "PUT",
            "/api/v1/draft/segments/plant",
            Some(&plant),
            &draft_etag(&c),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = commit(&c, json!({"comment": "enforce the discovered rules"}));
    ok(&r);
    let enforced = r.body["version"].as_u64().unwrap();
    let active = get(&c, "/api/v1/active");
    let rule_ids: Vec<u64> = active["policy"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(rule_ids.len(), 3, "{active}");
    assert!(
        active["policy"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["provenance"]["source"] == "suggested"),
        "{active}"
    );

    // The same traffic still passes, now allowed by the suggested rules...
    assert_eq!(
        discovered_traffic_passes(&bed),
        [true; 3],
        "the discovered traffic passes"
    );
    // ...and anything else is denied: another port of the same host, the reverse direction, another client.
    assert!(
        !fetches(&bed.a, None, addr::B4, 5432),
        "another port is denied"
    );
    assert!(
        !fetches(&bed.b, None, addr::A4, 8080),
        "the reverse direction is denied"
    );
    assert!(!pings(&bed.b, addr::A4), "a reverse ping is denied");
    assert!(
        !fetches(&bed.a, Some(OTHER_CLIENT), addr::B4, 8080),
        "another client is denied"
    );

    // The dataplane decided each: allowed by a suggested rule, or denied by the default action.
    let mut expected = vec![
        tuple(addr::A4, addr::B4, 1, ECHO, "allow"),
        tuple(addr::A4, addr::B4, 6, 502, "allow"),
        tuple(addr::A4, addr::B4, 6, 8080, "allow"),
        tuple(addr::A4, addr::B4, 6, 5432, "deny"),
        tuple(addr::B4, addr::A4, 1, ECHO, "deny"),
        tuple(addr::B4, addr::A4, 6, 8080, "deny"),
        tuple(OTHER_CLIENT, addr::B4, 6, 8080, "deny"),
    ];
    expected.sort();
    let seen = wait_for(20, "the enforced decisions in the flow log", || {
        let d = decisions(&c, enforced);
        let tuples: Vec<_> = d
            .iter()
            .map(|(s, d, p, svc, v, _)| (s.clone(), d.clone(), *p, *svc, v.clone()))
            .collect();
        (tuples == expected).then_some(d)
    });
    for (_, _, _, _, verdict, rule) in &seen {
        if verdict == "allow" {
            assert!(
                rule_ids.contains(rule),
                "allowed by a suggested rule: {seen:?}"
            );
        } else {
            assert_eq!(*rule, 0, "denied by the default action: {seen:?}");
        }
    }
}
