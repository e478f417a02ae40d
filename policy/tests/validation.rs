//! Every semantic validation error: its path and its message.

mod common;

use common::{error, errors, pair, policy};
use policy::limits;
use serde_json::{json, Value};

/// A small valid document the tests break one field at a time.
fn base() -> Value {
    json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "engineering", "prefixes": ["10.99.0.1/32", "fd00:99::1/128"],
             "labels": {"zone": "it", "role": "engineering"}},
            {"name": "ot-legacy", "prefixes": ["10.99.0.2/32", "fd00:99::2/128"],
             "labels": {"zone": "ot", "role": "scada"}}
        ],
        "services": [
            {"name": "modbus", "protocol": "tcp", "ports": ["502"]},
            {"name": "ping", "protocol": "icmp", "icmp_type": 8}
        ],
        "rules": [
            {"id": 10, "name": "eng-to-plc", "from": {"segment": "engineering"},
             "to": {"labels": {"role": "scada"}}, "service": "modbus", "action": "allow"}
        ]
    })
}

fn with(f: impl FnOnce(&mut Value)) -> Value {
    let mut v = base();
    f(&mut v);
    v
}

#[test]
fn base_is_valid() {
    policy(base());
}

// ---- segments ----

#[test]
fn segment_name_syntax() {
    let bad_names = ["", "with space", "sl/ash", "ü", &"x".repeat(65)];
    for name in bad_names {
        let v = with(|v| v["segments"][0]["name"] = json!(name));
        let got = errors(v);
        assert!(got.contains(&pair(
            "segments[0].name",
            &format!("segment name {name:?} is not valid: use 1 to 64 characters from A-Z a-z 0-9 _ . -")
        )), "{name:?}: {got:#?}");
    }
    // The longest allowed name and every allowed character.
    let v = with(|v| {
        v["segments"][0]["name"] = json!("a".repeat(64));
        v["segments"][1]["name"] = json!("Az09_.-");
        v["rules"][0]["from"] = json!("any");
    });
    policy(v);
}

#[test]
fn duplicate_segment_name() {
    let v = with(|v| v["segments"][1]["name"] = json!("engineering"));
    assert_eq!(
        error(v),
        pair(
            "segments[1].name",
            r#"duplicate segment name "engineering" (also segments[0])"#
        )
    );
}

#[test]
fn description_too_long() {
    let v = with(|v| v["segments"][0]["description"] = json!("d".repeat(1025)));
    assert_eq!(
        error(v),
        pair(
            "segments[0].description",
            "description is 1025 characters long (the limit is 1024)"
        )
    );
    let v = with(|v| v["rules"][0]["description"] = json!("d".repeat(2000)));
    assert_eq!(error(v).0, "rules[0].description");
    let v = with(|v| v["services"][0]["description"] = json!("d".repeat(2000)));
    assert_eq!(error(v).0, "services[0].description");
    policy(with(|v| {
        v["segments"][0]["description"] = json!("d".repeat(1024))
    }));
}

#[test]
fn segment_without_prefixes() {
    let v = with(|v| v["segments"][0]["prefixes"] = json!([]));
    assert_eq!(
        error(v),
        pair(
            "segments[0].prefixes",
            "a segment needs at least one prefix"
        )
    );
}

#[test]
fn host_bits_set() {
    let v = with(|v| {
        v["segments"][0]["prefixes"] = json!(["10.99.0.1/32", "10.1.2.3/24", "fd00:99::1/64"])
    });
    assert_eq!(
        errors(v),
        vec![
            pair(
                "segments[0].prefixes[1]",
                "10.1.2.3/24 has host bits set; did you mean 10.1.2.0/24?"
            ),
            pair(
                "segments[0].prefixes[2]",
                "fd00:99::1/64 has host bits set; did you mean fd00:99::/64?"
            ),
        ]
    );
}

#[test]
fn vlan_errors() {
    let v = with(|v| v["segments"][0]["vlans"] = json!([]));
    assert_eq!(
        error(v),
        pair(
            "segments[0].vlans",
            "an empty VLAN list would match no traffic; omit \"vlans\" to accept any VLAN and untagged frames"
        )
    );
    let v = with(|v| v["segments"][0]["vlans"] = json!([0, 1, 4094, 4095, 20, 20]));
    assert_eq!(
        errors(v),
        vec![
            pair("segments[0].vlans[0]", "VLAN id 0 is out of range 1..=4094"),
            pair(
                "segments[0].vlans[3]",
                "VLAN id 4095 is out of range 1..=4094"
            ),
            pair("segments[0].vlans[5]", "duplicate VLAN id 20"),
        ]
    );
}

#[test]
fn label_syntax_and_count() {
    let v = with(|v| v["segments"][0]["labels"] = json!({"bad key": "x", "ok": "bad value"}));
    assert_eq!(
        errors(v),
        vec![
            pair(
                "segments[0].labels.bad key",
                r#"label key "bad key" is not valid: use 1 to 64 characters from A-Z a-z 0-9 _ . -"#
            ),
            pair(
                "segments[0].labels.ok",
                r#"label value "bad value" is not valid: use 1 to 64 characters from A-Z a-z 0-9 _ . -"#
            ),
        ]
    );
    let many: serde_json::Map<String, Value> = (0..=limits::MAX_LABELS)
        .map(|i| (format!("k{i}"), json!("v")))
        .collect();
    let v = with(|v| {
        v["segments"][1]["labels"] = Value::Object(many);
        v["rules"][0]["to"] = json!("any");
    });
    assert_eq!(
        error(v),
        pair(
            "segments[1].labels",
            "too many labels: 65 (the limit is 64)"
        )
    );
}

// ---- services ----

#[test]
fn service_name_errors() {
    let v = with(|v| v["services"][1]["name"] = json!("any"));
    assert_eq!(
        error(v),
        pair(
            "services[1].name",
            "\"any\" is reserved for the built-in service that matches all traffic"
        )
    );
    let v = with(|v| v["services"][1]["name"] = json!("modbus"));
    assert_eq!(
        error(v),
        pair(
            "services[1].name",
            r#"duplicate service name "modbus" (also services[0])"#
        )
    );
    let v = with(|v| v["services"][1]["name"] = json!("ping 4"));
    assert_eq!(
        error(v),
        pair(
            "services[1].name",
            r#"service name "ping 4" is not valid: use 1 to 64 characters from A-Z a-z 0-9 _ . -"#
        )
    );
}

#[test]
fn ports_only_for_tcp_and_udp() {
    let v = with(|v| {
        v["services"][1]["ports"] = json!(["1"]);
        v["services"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "all", "protocol": "any", "source_ports": ["1"]}));
        v["services"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "gre", "protocol": 47, "ports": ["1"]}));
    });
    assert_eq!(
        errors(v),
        vec![
            pair(
                "services[1].ports",
                "ports apply only to tcp and udp services, not to icmp"
            ),
            pair(
                "services[2].source_ports",
                "source_ports apply only to tcp and udp services, not to any"
            ),
            pair(
                "services[3].ports",
                "ports apply only to tcp and udp services, not to protocol 47"
            ),
        ]
    );
    // Protocol numbers 6 and 17 are tcp and udp.
    policy(with(|v| {
        v["services"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "t", "protocol": 6, "ports": ["1"]}));
        v["services"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "u", "protocol": 17, "source_ports": ["1"]}));
    }));
}

#[test]
fn port_range_errors() {
    let v = with(|v| v["services"][0]["ports"] = json!(["0", "0-80", "90-80", "80-80", "1-65535"]));
    assert_eq!(
        errors(v),
        vec![
            pair(
                "services[0].ports[0]",
                "port 0 in \"0\" is not a valid port (1..=65535)"
            ),
            pair(
                "services[0].ports[1]",
                "port 0 in \"0-80\" is not a valid port (1..=65535)"
            ),
            pair(
                "services[0].ports[2]",
                "port range \"90-80\" is reversed; did you mean \"80-90\"?"
            ),
        ]
    );
    let v = with(|v| v["services"][0]["source_ports"] = json!([]));
    assert_eq!(
        error(v),
        pair(
            "services[0].source_ports",
            "an empty list would match no packet; omit \"source_ports\" to match every port"
        )
    );
    let many: Vec<String> = (1..=limits::MAX_PORT_RANGES + 1)
        .map(|p| p.to_string())
        .collect();
    let v = with(|v| v["services"][0]["ports"] = json!(many));
    assert_eq!(
        error(v),
        pair(
            "services[0].ports",
            "too many port ranges: 1025 (the limit is 1024)"
        )
    );
}

#[test]
fn icmp_fields_only_for_icmp() {
    let v = with(|v| {
        v["services"][0]["icmp_type"] = json!(8);
        v["services"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "u", "protocol": "udp", "icmp_code": 0}));
    });
    assert_eq!(
        errors(v),
        vec![
            pair(
                "services[0].icmp_type",
                "icmp_type applies only to icmp and icmpv6 services, not to tcp"
            ),
            pair(
                "services[2].icmp_code",
                "icmp_code applies only to icmp and icmpv6 services, not to udp"
            ),
        ]
    );
    let v = with(|v| {
        v["services"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "p6", "protocol": "icmpv6", "icmp_code": 0}));
    });
    assert_eq!(
        error(v),
        pair(
            "services[2].icmp_code",
            "icmp_code needs icmp_type (a code means nothing without its type)"
        )
    );
    // icmp by number, icmpv6 with type and code: fine.
    policy(with(|v| {
        v["services"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "p", "protocol": 1, "icmp_type": 3, "icmp_code": 4}));
        v["services"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "p6", "protocol": "icmpv6", "icmp_type": 128, "icmp_code": 0}));
    }));
}

// ---- rules ----

#[test]
fn rule_ids() {
    let v = with(|v| v["rules"][0]["id"] = json!(0));
    assert_eq!(error(v), pair("rules[0].id", "rule ids start at 1"));
    let v = with(|v| {
        let mut r = v["rules"][0].clone();
        r["name"] = json!("other");
        v["rules"].as_array_mut().unwrap().push(r);
    });
    assert_eq!(
        error(v),
        pair("rules[1].id", "duplicate rule id 10 (also rules[0])")
    );
}

#[test]
fn rule_names() {
    let v = with(|v| {
        let mut r = v["rules"][0].clone();
        r["id"] = json!(11);
        v["rules"].as_array_mut().unwrap().push(r);
    });
    assert_eq!(
        error(v),
        pair(
            "rules[1].name",
            r#"duplicate rule name "eng-to-plc" (also rules[0])"#
        )
    );
    let v = with(|v| v["rules"][0]["name"] = json!(""));
    assert_eq!(
        error(v),
        pair(
            "rules[0].name",
            r#"rule name "" is not valid: use 1 to 64 characters from A-Z a-z 0-9 _ . -"#
        )
    );
}

#[test]
fn unknown_references() {
    let v = with(|v| {
        v["rules"][0]["from"] = json!({"segment": "engneering"});
        v["rules"][0]["to"] = json!({"segment": "printers"});
        v["rules"][0]["service"] = json!("modbsu");
    });
    assert_eq!(
        errors(v),
        vec![
            pair(
                "rules[0].from.segment",
                r#"unknown segment "engneering"; did you mean "engineering"?"#
            ),
            pair("rules[0].to.segment", r#"unknown segment "printers""#),
            pair(
                "rules[0].service",
                r#"unknown service "modbsu"; did you mean "modbus"?"#
            ),
        ]
    );
    let v = with(|v| v["rules"][0]["service"] = json!("ANY"));
    assert_eq!(
        error(v),
        pair(
            "rules[0].service",
            r#"unknown service "ANY"; did you mean "any"?"#
        )
    );
}

#[test]
fn label_selectors() {
    let v = with(|v| v["rules"][0]["to"] = json!({"labels": {"role": "scada", "zone": "it"}}));
    assert_eq!(
        error(v),
        pair(
            "rules[0].to.labels",
            "no segment has all the labels role=scada, zone=it"
        )
    );
    let v = with(|v| v["rules"][0]["from"] = json!({"labels": {}}));
    assert_eq!(
        error(v),
        pair(
            "rules[0].from.labels",
            "an empty label selector would select every segment; name at least one label (or use \"any\")"
        )
    );
}

#[test]
fn rule_prefix_host_bits() {
    let v = with(|v| v["rules"][0]["to"] = json!({"prefix": "192.168.1.1/24"}));
    assert_eq!(
        error(v),
        pair(
            "rules[0].to.prefix",
            "192.168.1.1/24 has host bits set; did you mean 192.168.1.0/24?"
        )
    );
}

#[test]
fn mixed_families_are_not_an_error() {
    policy(with(|v| {
        v["segments"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "v6only", "prefixes": ["fd00:1::/64"]}));
        v["rules"].as_array_mut().unwrap().push(json!(
            {"id": 20, "name": "v4-to-v6", "from": {"prefix": "192.168.1.0/24"}, "to": {"segment": "v6only"},
             "service": "any", "action": "deny"}));
    }));
}

// ---- settings ----

#[test]
fn zero_timeouts() {
    let v = with(|v| v["settings"] = json!({"timeouts": {"tcp_syn": 0, "other": 0, "udp": 1}}));
    assert_eq!(
        errors(v),
        vec![
            pair(
                "settings.timeouts.tcp_syn",
                "a timeout must be at least 1 second"
            ),
            pair(
                "settings.timeouts.other",
                "a timeout must be at least 1 second"
            ),
        ]
    );
}

#[test]
fn flood_limits() {
    let p = policy(with(
        |v| {
            v["settings"] = json!({"flood_limits": {"half_open_per_source": 64, "new_per_second_per_source": 100}})
        },
    ));
    let limits = p.settings().flood_limits;
    assert_eq!(limits.half_open_per_source, 64);
    assert_eq!(limits.new_per_second_per_source, 100);
    // Off by default, and then left out of the document, so documents that do not use them serialize as before.
    let p = policy(base());
    assert!(p.settings().flood_limits.is_off());
    assert!(!serde_json::to_string(p.document())
        .unwrap()
        .contains("flood_limits"));

    let v = with(|v| v["settings"] = json!({"flood_limits": {"half_open_per_source": 65}}));
    assert_eq!(
        errors(v),
        vec![pair(
            "settings.flood_limits.half_open_per_source",
            "at most 64 (0 turns the limit off)"
        )]
    );
}

// ---- limits ----

#[test]
fn too_many_rules() {
    let rules: Vec<Value> = (1..=limits::MAX_RULES as u32 + 1)
        .map(|i| json!({"id": i, "name": format!("r{i}"), "from": "any", "to": "any", "service": "any", "action": "deny"}))
        .collect();
    let v = with(|v| v["rules"] = json!(rules));
    assert_eq!(
        error(v),
        pair("rules", "too many rules: 100001 (the limit is 100000)")
    );
}

#[test]
fn too_many_segments_services_and_prefixes() {
    let segments: Vec<Value> = (0..=limits::MAX_SEGMENTS)
        .map(|i| json!({"name": format!("s{i}"), "prefixes": [format!("10.{}.{}.0/24", i / 256, i % 256)]}))
        .collect();
    let services: Vec<Value> = (0..=limits::MAX_SERVICES)
        .map(|i| json!({"name": format!("svc{i}"), "protocol": "udp"}))
        .collect();
    let v = with(|v| {
        v["segments"] = json!(segments);
        v["services"] = json!(services);
        v["rules"] = json!([]);
    });
    assert_eq!(
        errors(v),
        vec![
            pair("segments", "too many segments: 10001 (the limit is 10000)"),
            pair("services", "too many services: 10001 (the limit is 10000)"),
        ]
    );
    let prefixes: Vec<String> = (0..=limits::MAX_PREFIXES as u32)
        .map(|i| format!("{}/32", std::net::Ipv4Addr::from(i)))
        .collect();
    // 100_001 here and 2 in segments[1].
    let v = with(|v| v["segments"][0]["prefixes"] = json!(prefixes));
    assert_eq!(
        error(v),
        pair(
            "segments",
            "too many prefixes in all segments together: 100003 (the limit is 100000)"
        )
    );
}

// ---- all at once ----

#[test]
fn all_errors_are_reported_together() {
    let v = with(|v| {
        v["segments"][0]["prefixes"] = json!(["10.1.2.3/24"]);
        v["segments"][1]["vlans"] = json!([5000]);
        v["services"][0]["ports"] = json!(["90-80"]);
        v["rules"][0]["id"] = json!(0);
        v["rules"][0]["from"] = json!({"segment": "nope"});
        v["settings"] = json!({"timeouts": {"icmp": 0}});
    });
    let got = errors(v);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "segments[0].prefixes[0]",
            "segments[1].vlans[0]",
            "services[0].ports[0]",
            "rules[0].id",
            "rules[0].from.segment",
            "settings.timeouts.icmp",
        ]
    );
}

#[test]
fn error_display() {
    let e = policy::ValidationError::new("rules[3].from.segment", "unknown segment \"x\"");
    assert_eq!(
        e.to_string(),
        "rules[3].from.segment: unknown segment \"x\""
    );
    let one = policy::PolicyError::Invalid(vec![e.clone()]);
    assert_eq!(
        one.to_string(),
        "invalid policy: rules[3].from.segment: unknown segment \"x\""
    );
    let two = policy::PolicyError::Invalid(vec![e.clone(), e]);
    assert_eq!(
        two.to_string(),
        "invalid policy (2 errors):\n  rules[3].from.segment: unknown segment \"x\"\n  rules[3].from.segment: unknown segment \"x\""
    );
}

#[test]
fn validate_works_on_a_document_directly() {
    let mut doc = policy(base()).into_document();
    assert!(policy::validate(&doc).is_empty());
    doc.rules[0].service = "nope".into();
    assert_eq!(
        policy::validate(&doc)[0].to_string(),
        "rules[0].service: unknown service \"nope\""
    );
    assert!(
        matches!(policy::Policy::new(doc), Err(policy::PolicyError::Invalid(e)) if e.len() == 1)
    );
}

// ---- provenance ----

#[test]
fn provenance_round_trips_and_never_changes_a_verdict() {
    let provenance = json!({
        "source": "suggested",
        "window": {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
        "conversations": 3, "flows": 120,
        "first_seen": "2026-11-02T08:00:00Z", "last_seen": "2026-11-30T17:00:00Z",
        "created": "2026-12-01T09:00:00Z", "note": "engineering reaches the PLCs on modbus"
    });
    let plain = policy(base());
    let with_provenance = policy(with(|v| v["rules"][0]["provenance"] = provenance.clone()));
    let rule = &with_provenance.rules()[0];
    assert_eq!(
        serde_json::to_value(rule).unwrap()["provenance"],
        provenance
    );
    assert_eq!(
        rule.provenance.as_ref().unwrap().source,
        policy::ProvenanceSource::Suggested
    );
    // Compiled alike: provenance is documentation only.
    assert_eq!(
        format!("{:?}", plain.compile()),
        format!("{:?}", with_provenance.compile())
    );
    // A rule without provenance serializes without the key.
    assert!(serde_json::to_value(&plain.rules()[0])
        .unwrap()
        .get("provenance")
        .is_none());
}

#[test]
fn provenance_errors() {
    let long = "x".repeat(limits::MAX_DESCRIPTION + 1);
    let v = with(
        |v| v["rules"][0]["provenance"] = json!({"source": "suggested", "note": long, "window": {"from": "x".repeat(65), "to": "t"}}),
    );
    let got = errors(v);
    assert_eq!(
        got,
        vec![
            pair(
                "rules[0].provenance.note",
                "description is 1025 characters long (the limit is 1024)"
            ),
            pair(
                "rules[0].provenance.window.from",
                "65 characters long (the limit is 64)"
            ),
        ]
    );
    // Unknown keys and sources are type errors, as everywhere in the document.
    for bad in [
        json!({"source": "guessed"}),
        json!({"source": "manual", "why": 1}),
        json!({}),
    ] {
        let v = with(|v| v["rules"][0]["provenance"] = bad.clone());
        assert!(policy::Policy::from_value(v).is_err(), "{bad}");
    }
}
