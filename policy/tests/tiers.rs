//! Tiered (`bulkhead.policy/v2`) documents: what loads and what is refused (with paths within tiers), the
//! decisions of pass chains and tier defaults, their compiled form, and shadowing across tiers.

use std::net::IpAddr;

use policy::*;
use serde_json::{json, Value};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// global: pci is isolated from the office (deny), office → ot is passed on to the segment tier;
/// segments: office → ot modbus allowed, default deny; a lower "hosts" tier that allows everything.
fn layered() -> Value {
    json!({
        "format": "bulkhead.policy/v2",
        "segments": [
            {"name": "office", "prefixes": ["10.1.0.0/16"]},
            {"name": "pci", "prefixes": ["10.2.0.0/16"]},
            {"name": "ot", "prefixes": ["10.3.0.0/16"]},
        ],
        "services": [{"name": "modbus", "protocol": "tcp", "ports": ["502"]}],
        "tiers": [
            {"name": "global", "description": "security team", "rules": [
                {"id": 1, "name": "pci-isolated", "from": {"segment": "office"}, "to": {"segment": "pci"},
                 "service": "any", "action": "deny"},
                {"id": 2, "name": "office-to-ot", "from": {"segment": "office"}, "to": {"segment": "ot"},
                 "service": "any", "action": "pass"},
            ], "default": "pass"},
            {"name": "segments", "rules": [
                {"id": 10, "name": "office-to-pci", "from": {"segment": "office"}, "to": {"segment": "pci"},
                 "service": "any", "action": "allow"},
                {"id": 11, "name": "office-modbus", "from": {"segment": "office"}, "to": {"segment": "ot"},
                 "service": "modbus", "action": "allow"},
                {"id": 12, "name": "ot-pass", "from": {"segment": "ot"}, "to": "any",
                 "service": "any", "action": "pass"},
            ], "default": "deny"},
            {"name": "hosts", "rules": [
                {"id": 20, "name": "anything", "from": "any", "to": "any", "service": "any", "action": "allow"},
            ]},
        ],
        "settings": {"default_action": "deny"},
    })
}

fn errors(doc: Value) -> Vec<(String, String)> {
    match Policy::from_value(doc) {
        Err(PolicyError::Invalid(list)) => list.into_iter().map(|e| (e.path, e.message)).collect(),
        Err(other) => panic!("expected validation errors, got {other}"),
        Ok(_) => panic!("expected validation errors, the document is valid"),
    }
}

fn decided(p: &Policy, src: &str, dst: &str, dport: u16) -> (Option<u32>, Option<String>, bool) {
    let flow = Flow::tcp(ip(src), ip(dst), None, 40000, dport);
    let d = p.evaluate(&flow);
    assert_eq!(p.compile().classify(&flow), d, "{flow:?}");
    let id = match d {
        Decision::Rule { id, .. } => Some(id),
        _ => None,
    };
    (id, p.decision_tier(&d).map(str::to_string), d.passes())
}

#[test]
fn tiers_decide_in_order_and_pass_goes_on() {
    let p = Policy::from_value(layered()).unwrap();
    assert_eq!(p.tiers().len(), 3);
    assert_eq!(p.rules().len(), 6);
    assert_eq!(p.tier_name_of(3), "segments");
    let tier = |t: &str| Some(t.to_string());
    // The global deny is not undone by the lower tier's allow.
    assert_eq!(
        decided(&p, "10.1.0.5", "10.2.0.5", 443),
        (Some(1), tier("global"), false)
    );
    // A pass lets the segment tier decide: modbus allowed, anything else denied by that tier's default.
    assert_eq!(
        decided(&p, "10.1.0.5", "10.3.0.5", 502),
        (Some(11), tier("segments"), true)
    );
    assert_eq!(
        decided(&p, "10.1.0.5", "10.3.0.5", 80),
        (None, tier("segments"), false)
    );
    // ot → anything passes on to the hosts tier; nothing else gets past the segment tier's default.
    assert_eq!(
        decided(&p, "10.3.0.5", "10.1.0.5", 80),
        (Some(20), tier("hosts"), true)
    );
    assert_eq!(
        decided(&p, "10.9.0.5", "10.1.0.5", 80),
        (None, tier("segments"), false)
    );
}

#[test]
fn the_policy_default_applies_after_the_last_tier() {
    let mut doc = layered();
    doc["tiers"][2]["rules"] = json!([]);
    let p = Policy::from_value(doc).unwrap();
    let flow = Flow::tcp(ip("10.3.0.5"), ip("10.1.0.5"), None, 40000, 80);
    assert_eq!(
        p.evaluate(&flow),
        Decision::Default {
            action: Action::Deny,
            monitored: false
        }
    );
    assert_eq!(p.compile().classify(&flow), p.evaluate(&flow));
    assert_eq!(p.decision_tier(&p.evaluate(&flow)), None);
}

#[test]
fn monitor_mode_segments_monitor_tier_defaults() {
    let mut doc = layered();
    doc["segments"][2]["mode"] = json!("monitor");
    let p = Policy::from_value(doc).unwrap();
    let flow = Flow::tcp(ip("10.1.0.5"), ip("10.3.0.5"), None, 40000, 80);
    let d = p.evaluate(&flow);
    assert_eq!(
        d,
        Decision::TierDefault {
            tier: 1,
            monitored: true
        }
    );
    assert!(d.passes() && d.would_deny());
    assert_eq!(p.compile().classify(&flow), d);
}

#[test]
fn documents_keep_their_format_and_migrate_only_on_request() {
    let v2 = Policy::from_value(layered()).unwrap();
    let text = v2.to_json_pretty();
    let value: Value = serde_json::from_str(&text).unwrap();
    assert!(value.get("rules").is_none(), "{text}");
    assert_eq!(Policy::from_json(&text).unwrap(), v2);

    let v1 = Policy::from_value(json!({"format": "bulkhead.policy/v1", "rules": [
        {"id": 1, "name": "a", "from": "any", "to": "any", "service": "any", "action": "allow"}]}))
    .unwrap();
    let value: Value = serde_json::from_str(&v1.to_json_pretty()).unwrap();
    assert!(value.get("tiers").is_none());
    assert_eq!(value["format"], "bulkhead.policy/v1");
    assert_eq!(v1.tiers()[0].name, V1_TIER);
    assert_eq!(v1.tiers()[0].default, TierDefault::Pass);

    let migrated = v1.to_v2();
    let value: Value = serde_json::from_str(&migrated.to_json_pretty()).unwrap();
    assert_eq!(value["format"], "bulkhead.policy/v2");
    assert!(value.get("rules").is_none());
    assert_eq!(value["tiers"][0]["name"], "main");
    assert_eq!(value["tiers"][0]["default"], "pass");
    assert_eq!(value["tiers"][0]["rules"][0]["id"], 1);
    assert_eq!(migrated.to_v2(), migrated);
}

#[test]
fn validation_names_paths_within_tiers() {
    let mut doc = layered();
    doc["tiers"][1]["rules"][1]["id"] = json!(2);
    doc["tiers"][1]["rules"][0]["to"] = json!({"segment": "pcl"});
    doc["tiers"][2]["name"] = json!("global");
    doc["tiers"][2]["rules"][0]["action"] = json!("pass");
    doc["tiers"][2]["rules"][0]["mode"] = json!("monitor");
    doc["tiers"][2]["rules"][0]["log"] = json!(true);
    doc["settings"]["default_action"] = json!("pass");
    assert_eq!(
        errors(doc),
        [
            (
                "tiers[2].name".to_string(),
                "duplicate tier name \"global\" (also tiers[0])".to_string()
            ),
            (
                "tiers[1].rules[0].to.segment".to_string(),
                "unknown segment \"pcl\"; did you mean \"pci\"?".to_string()
            ),
            (
                "tiers[1].rules[1].id".to_string(),
                "duplicate rule id 2 (also tiers[0].rules[1])".to_string()
            ),
            (
                "tiers[2].rules[0].mode".to_string(),
                "a pass rule decides nothing, so monitor mode has nothing to monitor; set the mode on the rules that decide".to_string()
            ),
            (
                "tiers[2].rules[0].log".to_string(),
                "a pass rule decides nothing, so it logs nothing; set log on the rules that decide".to_string()
            ),
            (
                "settings.default_action".to_string(),
                "the policy's default must decide: allow, deny or reject (\"pass\" is for rules and tier defaults)".to_string()
            ),
        ]
    );
    let mut doc = layered();
    doc["tiers"][1]["rules"][2]["action"] = json!("permit");
    assert_eq!(
        errors(doc),
        [(
            "tiers[1].rules[2].action".to_string(),
            "unknown variant \"permit\", expected one of \"allow\", \"deny\", \"reject\", \"pass\""
                .to_string()
        )]
    );
    let mut doc = layered();
    doc["tiers"][0]["default"] = json!("allow");
    assert_eq!(
        errors(doc),
        [(
            "tiers[0].default".to_string(),
            "unknown variant \"allow\", expected \"pass\" or \"deny\"".to_string()
        )]
    );
}

#[test]
fn each_format_keeps_its_rules_in_its_place() {
    let rule = json!({"id": 1, "name": "a", "from": "any", "to": "any", "service": "any", "action": "pass"});
    assert_eq!(
        errors(json!({"format": "bulkhead.policy/v1", "rules": [rule], "tiers": []})),
        [(
            "rules[0].action".to_string(),
            "\"pass\" continues with the next tier; it needs \"format\": \"bulkhead.policy/v2\" and tiers"
                .to_string()
        )]
    );
    assert_eq!(
        errors(json!({"format": "bulkhead.policy/v1", "tiers": [{"name": "x"}]})),
        [(
            "tiers".to_string(),
            "tiers need \"format\": \"bulkhead.policy/v2\"".to_string()
        )]
    );
    assert_eq!(
        errors(json!({"format": "bulkhead.policy/v2", "rules": [rule]})),
        [(
            "rules".to_string(),
            "a bulkhead.policy/v2 document keeps its rules in tiers: move them to tiers[N].rules"
                .to_string()
        )]
    );
}

/// A pass rule stands for its intersections with every flat rule of the tiers below; past the documented
/// bound the document is refused, naming the pass rule.
#[test]
fn a_pass_rule_that_would_blow_up_is_refused_by_name() {
    let n = 1_100usize;
    let segments: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("h{i}"), "prefixes": [format!("10.{}.{}.0/24", i / 256, i % 256)]}))
        .collect();
    let below: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": 10_000 + i, "name": format!("r{i}"), "from": {"segment": format!("h{i}")},
                        "to": "any", "service": "any", "action": "allow"})
        })
        .collect();
    let doc = |pass_from: Vec<String>| {
        let nets: Vec<Value> = pass_from
            .iter()
            .map(|p| json!({"id": 1 + nets_id(p), "name": format!("p-{}", nets_id(p)), "from": {"prefix": p},
                             "to": "any", "service": "any", "action": "pass"}))
            .collect();
        json!({"format": "bulkhead.policy/v2", "segments": segments.clone(), "tiers": [
            {"name": "global", "rules": nets},
            {"name": "apps", "rules": below.clone()},
        ]})
    };
    fn nets_id(p: &str) -> usize {
        p.split('.').nth(2).unwrap().parse().unwrap()
    }
    // 1100 flat rules below: 100 prefixes pass on to them (110 000 flat rules at most), fine.
    let few: Vec<String> = (0..100).map(|i| format!("172.16.{i}.0/24")).collect();
    let p = Policy::from_value(doc(few)).unwrap();
    // Each pass prefix meets none of the 10.x rules: the empty intersections are dropped.
    assert_eq!(p.compile().stats().v4, n + 100);
    // A pass rule over 1000 source prefixes (a segment) times 1100 rules below is over the bound.
    let mut big = doc(Vec::new());
    let prefixes: Vec<String> = (0..1000)
        .map(|i| format!("192.168.{}.{}/32", i / 128, (i % 128) * 2))
        .collect();
    big["segments"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "wide", "prefixes": prefixes}));
    big["tiers"][0]["rules"] = json!([{"id": 1, "name": "wide-pass", "from": {"segment": "wide"}, "to": "any",
                                       "service": "any", "action": "pass"}]);
    let errs = errors(big);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "tiers[0].rules[0].action");
    assert!(
        errs[0]
            .1
            .starts_with("this pass rule stands for up to 1101000 flat rules"),
        "{}",
        errs[0].1
    );
}

#[test]
fn compiled_pass_chain_is_the_exact_intersection() {
    let p = Policy::from_value(json!({
        "format": "bulkhead.policy/v2",
        "tiers": [
            {"name": "global", "rules": [
                {"id": 1, "name": "pass-10", "from": {"prefix": "10.0.0.0/8"}, "to": "any", "service": "any",
                 "action": "pass"},
            ], "default": "deny"},
            {"name": "apps", "rules": [
                {"id": 2, "name": "narrow", "from": {"prefix": "10.1.0.0/16"}, "to": "any", "service": "any",
                 "action": "allow"},
                {"id": 3, "name": "wide", "from": {"prefix": "0.0.0.0/1"}, "to": "any", "service": "any",
                 "action": "reject"},
            ]},
        ],
    }))
    .unwrap();
    let c = p.compile();
    let flat: Vec<(RuleRef, String)> = c.v4.iter().map(|r| (r.rule, r.src.to_string())).collect();
    assert_eq!(
        flat,
        [
            (RuleRef::Rule(1), "10.1.0.0/16".to_string()),
            (RuleRef::Rule(2), "10.0.0.0/8".to_string()),
            (RuleRef::TierDefault(0), "0.0.0.0/0".to_string()),
        ]
    );
    // The pass rule never decides, nor is it shadowed: it sends 10/8 on.
    assert!(p.shadowed_rules().is_empty(), "{:?}", p.shadowed_rules());
    assert_eq!(c.rules[1].tier, 1);
    assert_eq!(c.tiers, ["global", "apps"]);
}

#[test]
fn shadowing_across_tiers() {
    let p = Policy::from_value(json!({
        "format": "bulkhead.policy/v2",
        "tiers": [
            {"name": "global", "rules": [
                {"id": 1, "name": "deny-10-1", "from": {"prefix": "10.1.0.0/16"}, "to": "any", "service": "any",
                 "action": "deny"},
                {"id": 2, "name": "pass-10", "from": {"prefix": "10.0.0.0/8"}, "to": "any", "service": "any",
                 "action": "pass"},
            ], "default": "deny"},
            {"name": "apps", "rules": [
                {"id": 3, "name": "under-global-deny", "from": {"prefix": "10.1.2.0/24"}, "to": "any",
                 "service": "any", "action": "allow"},
                {"id": 4, "name": "outside-the-pass", "from": {"prefix": "192.168.0.0/16"}, "to": "any",
                 "service": "any", "action": "allow"},
                {"id": 5, "name": "reachable", "from": {"prefix": "10.2.0.0/16"}, "to": "any",
                 "service": "any", "action": "allow"},
            ]},
        ],
    }))
    .unwrap();
    let shadowed = p.shadowed_rules();
    assert_eq!(
        shadowed,
        [
            Shadowed {
                index: 2,
                id: 3,
                tier: "apps".to_string(),
                reason: ShadowReason::CoveredBy(vec![1]),
            },
            Shadowed {
                index: 3,
                id: 4,
                tier: "apps".to_string(),
                reason: ShadowReason::BehindTierDefault {
                    tier: "global".to_string(),
                    rules: vec![]
                },
            },
        ]
    );
    assert_eq!(
        shadowed[1].to_string(),
        "rule 4 (tier apps) can never match: tier global denies by default everything it matches"
    );
}
