//! Loading documents: syntax errors with line and column, type errors with their JSON path, the format check,
//! defaults, and round trips.

mod common;

use common::{error, pair};
use policy::*;
use serde_json::json;

/// The example document of the design brief, everything spelled out.
const FULL: &str = r#"{
  "format": "bulkhead.policy/v1",
  "segments": [
    {"name": "ot-legacy", "description": "legacy PLCs", "prefixes": ["10.99.0.2/32", "fd00:99::2/128"], "vlans": [20],
     "labels": {"zone": "ot", "role": "scada"}, "mode": "enforce"},
    {"name": "engineering", "prefixes": ["10.99.0.1/32"], "labels": {"zone": "it"}, "mode": "monitor"}
  ],
  "services": [
    {"name": "modbus", "protocol": "tcp", "ports": ["502"]},
    {"name": "web", "protocol": "tcp", "ports": ["80", "8080-8081"], "source_ports": ["1024-65535"]},
    {"name": "ping", "protocol": "icmp", "icmp_type": 8, "icmp_code": 0},
    {"name": "ping6", "protocol": "icmpv6", "icmp_type": 128},
    {"name": "any-udp", "protocol": "udp"},
    {"name": "gre", "protocol": 47}
  ],
  "rules": [
    {"id": 10, "name": "eng-to-plc", "description": "engineering polls the PLCs", "from": {"segment": "engineering"},
     "to": {"labels": {"role": "scada"}}, "service": "modbus", "action": "allow", "log": false, "mode": "enforce"},
    {"id": 20, "name": "lan-reject", "from": {"prefix": "192.168.1.0/24"}, "to": "any", "service": "any", "action": "reject"}
  ],
  "settings": {
    "default_action": "deny",
    "tcp_strictness": "strict",
    "timeouts": {"tcp_syn": 30, "tcp_established": 7440, "tcp_fin": 120, "tcp_time_wait": 120, "tcp_close": 10,
                 "udp": 60, "udp_stream": 180, "icmp": 30, "other": 60},
    "on_policy_change": "reevaluate",
    "pass_arp": true, "pass_neighbor_discovery": true, "drop_other_ethertypes": true
  }
}"#;

fn invalid(text: &str) -> (String, String) {
    match Policy::from_json(text) {
        Err(PolicyError::Invalid(mut e)) => {
            assert_eq!(e.len(), 1, "{e:#?}");
            let e = e.remove(0);
            (e.path, e.message)
        }
        other => panic!("expected one error, got {other:?}"),
    }
}

fn doc(rest: &str) -> String {
    format!(r#"{{"format": "bulkhead.policy/v1"{rest}}}"#)
}

#[test]
fn full_example_parses_into_the_model() {
    let p = Policy::from_json(FULL).unwrap();
    let d = p.document();
    assert_eq!(d.segments[0].vlans, Some(vec![20]));
    assert_eq!(d.segments[1].mode, Mode::Monitor);
    assert_eq!(
        d.services[1].ports,
        Some(vec![
            PortRange::single(80),
            PortRange { lo: 8080, hi: 8081 }
        ])
    );
    assert_eq!(
        d.services[1].source_ports,
        Some(vec![PortRange {
            lo: 1024,
            hi: 65535
        }])
    );
    assert_eq!(d.services[3].protocol, Protocol::Icmpv6);
    assert_eq!(d.services[5].protocol, Protocol::Number(47));
    assert_eq!(
        d.rules[0].to,
        Selector::Labels([("role".to_string(), "scada".to_string())].into())
    );
    assert_eq!(
        d.rules[1].from,
        Selector::Prefix("192.168.1.0/24".parse().unwrap())
    );
    assert_eq!(d.rules[1].to, Selector::Any);
    assert_eq!(d.rules[1].action, Action::Reject);
    assert_eq!(d.settings, Settings::default());
}

#[test]
fn defaults() {
    let p = Policy::from_json(&doc(
        r#", "segments": [{"name": "a", "prefixes": ["10.0.0.0/8"]}],
           "rules": [{"id": 1, "name": "r", "from": "any", "to": "any", "service": "any", "action": "allow"}]"#,
    ))
    .unwrap();
    let d = p.document();
    assert_eq!(d.segments[0].mode, Mode::Enforce);
    assert_eq!(d.segments[0].vlans, None);
    assert!(d.segments[0].labels.is_empty());
    assert!(!d.rules[0].log);
    assert_eq!(d.rules[0].mode, Mode::Enforce);
    let s = p.settings();
    assert_eq!(s.default_action, Action::Deny);
    assert_eq!(s.tcp_strictness, TcpStrictness::Strict);
    assert_eq!(s.on_policy_change, OnPolicyChange::Reevaluate);
    assert!(s.pass_arp && s.pass_neighbor_discovery && s.drop_other_ethertypes);
    assert_eq!(s.timeouts.tcp_established, 7440);
    assert_eq!(s.timeouts.udp_stream, 180);
    // Partial settings keep the other defaults.
    let p = Policy::from_json(&doc(
        r#", "settings": {"default_action": "reject", "timeouts": {"udp": 5}}"#,
    ))
    .unwrap();
    assert_eq!(p.settings().default_action, Action::Reject);
    assert_eq!(p.settings().timeouts.udp, 5);
    assert_eq!(p.settings().timeouts.icmp, 30);
    // The smallest policy: deny everything.
    let p = Policy::from_json(&doc("")).unwrap();
    assert!(p.rules().is_empty());
}

#[test]
fn syntax_errors_have_line_and_column() {
    let e = Policy::from_json("{\n  \"format\": \"bulkhead.policy/v1\",\n  \"rules\": [}\n")
        .unwrap_err();
    assert_eq!(
        e,
        PolicyError::Syntax {
            line: 3,
            col: 13,
            msg: "expected value".into()
        }
    );
    assert_eq!(e.to_string(), "line 3, column 13: expected value");
    let e = Policy::from_json("{\"format\": \"bulkhead.policy/v1\"} x").unwrap_err();
    assert!(
        matches!(e, PolicyError::Syntax { line: 1, col: 34, ref msg } if msg == "trailing characters"),
        "{e:?}"
    );
    let e = Policy::from_json("{\"format\": ").unwrap_err();
    assert!(
        matches!(e, PolicyError::Syntax { line: 1, ref msg, .. } if msg.starts_with("EOF")),
        "{e:?}"
    );
    let e = Policy::from_json("").unwrap_err();
    assert!(matches!(e, PolicyError::Syntax { .. }), "{e:?}");
}

#[test]
fn format_is_checked_first() {
    assert_eq!(
        invalid(r#"{"format": "bulkhead.policy/v3", "rules": 7}"#),
        pair(
            "format",
            r#"unsupported format "bulkhead.policy/v3"; this version of Bulkhead reads "bulkhead.policy/v1" and "bulkhead.policy/v2""#
        )
    );
    assert_eq!(
        invalid(r#"{"format": 1}"#),
        pair(
            "format",
            r#"unsupported format 1; this version of Bulkhead reads "bulkhead.policy/v1" and "bulkhead.policy/v2""#
        )
    );
    assert_eq!(
        invalid(r#"{"rules": []}"#),
        pair(
            "format",
            r#"required field is missing; this version of Bulkhead reads "bulkhead.policy/v1" and "bulkhead.policy/v2""#
        )
    );
    assert_eq!(
        invalid("[]"),
        pair(
            "(document)",
            r#"expected a JSON object with "format": "bulkhead.policy/v2" (or "bulkhead.policy/v1")"#
        )
    );
    assert_eq!(
        error(json!({"format": "v1"})),
        pair(
            "format",
            r#"unsupported format "v1"; this version of Bulkhead reads "bulkhead.policy/v1" and "bulkhead.policy/v2""#
        )
    );
}

#[test]
fn unknown_variant_names_the_path() {
    let rules = r#", "rules": [
        {"id": 1, "name": "a", "from": "any", "to": "any", "service": "any", "action": "allow"},
        {"id": 2, "name": "b", "from": "any", "to": "any", "service": "any", "action": "deny"},
        {"id": 3, "name": "c", "from": "any", "to": "any", "service": "any", "action": "permit"}]"#;
    let (path, message) = invalid(&doc(rules));
    assert_eq!(path, "rules[2].action");
    assert_eq!(
        message,
        r#"unknown variant "permit", expected one of "allow", "deny", "reject", "pass""#
    );
    let e = Policy::from_json(&doc(rules)).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"invalid policy: rules[2].action: unknown variant "permit", expected one of "allow", "deny", "reject", "pass""#
    );
    assert_eq!(
        invalid(&doc(r#", "settings": {"on_policy_change": "drop"}"#)),
        pair(
            "settings.on_policy_change",
            r#"unknown variant "drop", expected "reevaluate" or "keep""#
        )
    );
    assert_eq!(
        invalid(&doc(
            r#", "segments": [{"name": "a", "prefixes": ["10.0.0.0/8"], "mode": "audit"}]"#
        )),
        pair(
            "segments[0].mode",
            r#"unknown variant "audit", expected "enforce" or "monitor""#
        )
    );
}

#[test]
fn unknown_fields_anywhere() {
    let cases = [
        (r#", "bogus": 1"#, "bogus"),
        (
            r#", "segments": [{"name": "a", "prefixes": ["10.0.0.0/8"], "colour": "red"}]"#,
            "segments[0].colour",
        ),
        (
            r#", "services": [{"name": "a", "protocol": "tcp", "port": ["80"]}]"#,
            "services[0].port",
        ),
        (
            r#", "rules": [{"id": 1, "name": "a", "from": "any", "to": "any", "service": "any", "action": "allow", "priority": 1}]"#,
            "rules[0].priority",
        ),
        (r#", "settings": {"default": "deny"}"#, "settings.default"),
        (
            r#", "settings": {"timeouts": {"tcp": 5}}"#,
            "settings.timeouts.tcp",
        ),
    ];
    for (rest, path) in cases {
        let (got_path, message) = invalid(&doc(rest));
        assert_eq!(got_path, path);
        let field = path.rsplit('.').next().unwrap();
        assert!(
            message.starts_with(&format!("unknown field \"{field}\", expected ")),
            "{message}"
        );
    }
}

#[test]
fn missing_and_mistyped_fields() {
    assert_eq!(
        invalid(&doc(
            r#", "rules": [{"id": 1, "name": "a", "from": "any", "to": "any", "service": "any"}]"#
        )),
        pair("rules[0].action", "required field is missing")
    );
    assert_eq!(
        invalid(&doc(r#", "segments": [{"name": "a"}]"#)),
        pair("segments[0].prefixes", "required field is missing")
    );
    assert_eq!(
        invalid(&doc(
            r#", "rules": [{"id": "one", "name": "a", "from": "any", "to": "any", "service": "any", "action": "allow"}]"#
        )),
        pair("rules[0].id", r#"invalid type: string "one", expected u32"#)
    );
    assert_eq!(
        invalid(&doc(
            r#", "segments": [{"name": "a", "prefixes": ["10.0.0.0/8"], "vlans": [70000]}]"#
        )),
        pair(
            "segments[0].vlans[0]",
            "invalid value: integer `70000`, expected u16"
        )
    );
    assert_eq!(
        invalid(&doc(
            r#", "services": [{"name": "p", "protocol": "icmp", "icmp_type": 256}]"#
        )),
        pair(
            "services[0].icmp_type",
            "invalid value: integer `256`, expected u8"
        )
    );
    assert_eq!(
        invalid(&doc(r#", "settings": {"timeouts": {"udp": -1}}"#)),
        pair(
            "settings.timeouts.udp",
            "invalid value: integer `-1`, expected u32"
        )
    );
    assert_eq!(
        invalid(&doc(r#", "rules": {}"#)),
        pair("rules", "invalid type: map, expected a sequence")
    );
}

#[test]
fn repeated_keys_are_refused() {
    assert_eq!(
        invalid(&doc(
            r#", "rules": [{"id": 1, "id": 2, "name": "a", "from": "any", "to": "any", "service": "any", "action": "allow"}]"#
        )),
        pair(
            "rules[0]",
            r#"key "id" appears more than once; write it once"#
        )
    );
    assert_eq!(
        invalid(&doc(
            r#", "segments": [{"name": "a", "prefixes": ["10.0.0.0/8"], "labels": {"zone": "it", "zone": "ot"}}]"#
        )),
        pair(
            "segments[0].labels",
            r#"key "zone" appears more than once; write it once"#
        )
    );
    // A reviewer reads the first "action"; serde_json alone would keep the last.
    assert_eq!(
        invalid(&doc(
            r#", "rules": [{"id": 1, "name": "a", "from": "any", "to": "any", "service": "any", "action": "deny", "action": "allow"}]"#
        )),
        pair(
            "rules[0]",
            r#"key "action" appears more than once; write it once"#
        )
    );
}

#[test]
fn ipv4_addresses_with_leading_zeros_are_refused() {
    assert_eq!(
        invalid(&doc(
            r#", "segments": [{"name": "a", "prefixes": ["010.0.0.0/8"]}]"#
        )),
        pair(
            "segments[0].prefixes[0]",
            r#""010.0.0.0/8": an address with leading zeros is ambiguous (some tools read 010 as octal 8); write "10.0.0.0/8""#
        )
    );
    assert_eq!(
        invalid(&rule_with(r#"{"prefix": "10.0.0.01/32"}"#)),
        pair(
            "rules[0].from.prefix",
            r#""10.0.0.01/32": an address with leading zeros is ambiguous (some tools read 010 as octal 8); write "10.0.0.1/32""#
        )
    );
    // Zero itself is not a leading zero.
    assert!(Policy::from_json(&doc(
        r#", "segments": [{"name": "a", "prefixes": ["10.0.0.0/8", "0.0.0.0/0"]}]"#
    ))
    .is_ok());
}

fn rule_with(side: &str) -> String {
    doc(&format!(
        r#", "segments": [{{"name": "eng", "prefixes": ["10.0.0.0/8"]}}],
           "rules": [{{"id": 1, "name": "a", "from": {side}, "to": "any", "service": "any", "action": "allow"}}]"#
    ))
}

#[test]
fn selector_errors() {
    assert_eq!(
        invalid(&rule_with(r#""eng""#)),
        pair(
            "rules[0].from",
            r#""eng" is not a selector: write "any", {"segment": "eng"}, {"labels": {...}} or {"prefix": "CIDR"}"#
        )
    );
    assert_eq!(
        invalid(&rule_with("{}")),
        pair(
            "rules[0].from",
            r#"empty selector: write "any" or an object with one of "segment", "labels", "prefix""#
        )
    );
    assert_eq!(
        invalid(&rule_with(r#"{"segment": "eng", "prefix": "10.0.0.0/8"}"#)),
        pair(
            "rules[0].from",
            r#"a selector takes exactly one of "segment", "labels", "prefix"; "prefix" comes after "segment""#
        )
    );
    assert_eq!(
        invalid(&rule_with(r#"{"segmnt": "eng"}"#)),
        pair(
            "rules[0].from",
            r#"unknown field "segmnt", expected one of "segment", "labels", "prefix""#
        )
    );
    assert_eq!(
        invalid(&rule_with(r#"{"prefix": "10.0.0.1"}"#)),
        pair(
            "rules[0].from.prefix",
            r#""10.0.0.1" has no prefix length; for this one host write "10.0.0.1/32""#
        )
    );
    assert_eq!(
        invalid(&rule_with(r#"{"prefix": "fd00::1"}"#)),
        pair(
            "rules[0].from.prefix",
            r#""fd00::1" has no prefix length; for this one host write "fd00::1/128""#
        )
    );
    assert_eq!(
        invalid(&rule_with(r#"{"prefix": "10.0.0.0/33"}"#)),
        pair(
            "rules[0].from.prefix",
            r#""10.0.0.0/33" is not an IPv4 or IPv6 prefix in CIDR notation (e.g. "10.0.0.0/8", "fd00::/64")"#
        )
    );
    assert_eq!(
        invalid(&rule_with(r#"{"segment": 5}"#)),
        pair(
            "rules[0].from.segment",
            "invalid type: integer `5`, expected a string"
        )
    );
    assert_eq!(
        invalid(&rule_with("7")),
        pair(
            "rules[0].from",
            r#"invalid type: integer `7`, expected "any" or an object with one of "segment", "labels", "prefix""#
        )
    );
    assert_eq!(
        invalid(&doc(
            r#", "segments": [{"name": "a", "prefixes": ["10.0.0.0/8", "nonsense"]}]"#
        )),
        pair(
            "segments[0].prefixes[1]",
            r#""nonsense" is not an IPv4 or IPv6 prefix in CIDR notation (e.g. "10.0.0.0/8", "fd00::/64")"#
        )
    );
}

fn service(fields: &str) -> String {
    doc(&format!(r#", "services": [{{"name": "s", {fields}}}]"#))
}

#[test]
fn protocol_and_port_syntax() {
    assert_eq!(
        invalid(&service(r#""protocol": "tpc""#)),
        pair(
            "services[0].protocol",
            r#"unknown protocol "tpc", expected "tcp", "udp", "icmp", "icmpv6", "any" or a protocol number 0..=255"#
        )
    );
    assert_eq!(
        invalid(&service(r#""protocol": 256"#)),
        pair(
            "services[0].protocol",
            "protocol number 256 out of range 0..=255"
        )
    );
    assert_eq!(
        invalid(&service(r#""protocol": -1"#)),
        pair(
            "services[0].protocol",
            "protocol number -1 out of range 0..=255"
        )
    );
    assert_eq!(
        invalid(&service(r#""protocol": "tcp", "ports": ["80-"]"#)),
        pair(
            "services[0].ports[0]",
            r#""80-" is not a port or port range; write "N" or "LO-HI", e.g. "502" or "8080-8081""#
        )
    );
    assert_eq!(
        invalid(&service(r#""protocol": "tcp", "ports": [" 80"]"#)).0,
        "services[0].ports[0]"
    );
    assert_eq!(
        invalid(&service(r#""protocol": "tcp", "ports": ["70000"]"#)),
        pair(
            "services[0].ports[0]",
            "port 70000 is out of range 1..=65535"
        )
    );
    assert_eq!(
        invalid(&service(
            r#""protocol": "udp", "source_ports": ["1-70000"]"#
        )),
        pair(
            "services[0].source_ports[0]",
            r#"port 70000 in "1-70000" is out of range 1..=65535"#
        )
    );
    assert_eq!(
        invalid(&service(r#""protocol": "udp", "ports": [65536]"#)),
        pair(
            "services[0].ports[0]",
            "port 65536 is out of range 1..=65535"
        )
    );
    // Bare numbers are accepted as ports (and written back as strings).
    let p = Policy::from_json(&service(r#""protocol": "udp", "ports": [53, "5353"]"#)).unwrap();
    assert_eq!(
        p.services()[0].ports,
        Some(vec![PortRange::single(53), PortRange::single(5353)])
    );
    assert!(p.to_json_pretty().contains(r#""53""#));
    // Protocol numbers are kept as written.
    let p = Policy::from_json(&service(r#""protocol": 6, "ports": ["22"]"#)).unwrap();
    assert_eq!(p.services()[0].protocol, Protocol::Number(6));
    assert!(p.to_json_pretty().contains(r#""protocol": 6"#));
}

#[test]
fn from_value_reports_paths_too() {
    let v = json!({"format": "bulkhead.policy/v1", "rules": [
        {"id": 1, "name": "a", "from": "any", "to": "any", "service": "any", "action": "permit"}]});
    assert_eq!(
        error(v),
        pair(
            "rules[0].action",
            r#"unknown variant "permit", expected one of "allow", "deny", "reject", "pass""#
        )
    );
}

#[test]
fn round_trip_preserves_everything() {
    let p = Policy::from_json(FULL).unwrap();
    let text = p.to_json_pretty();
    let back = Policy::from_json(&text).unwrap();
    assert_eq!(back, p);
    assert_eq!(back.to_json_pretty(), text);
    // The written form is the documented one.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], json!("bulkhead.policy/v1"));
    assert_eq!(v["rules"][1]["to"], json!("any"));
    assert_eq!(v["rules"][1]["from"], json!({"prefix": "192.168.1.0/24"}));
    assert_eq!(v["rules"][0]["to"], json!({"labels": {"role": "scada"}}));
    assert_eq!(v["rules"][0]["from"], json!({"segment": "engineering"}));
    assert_eq!(v["services"][1]["ports"], json!(["80", "8080-8081"]));
    assert_eq!(v["services"][5]["protocol"], json!(47));
    assert_eq!(v["services"][2]["icmp_code"], json!(0));
    assert_eq!(
        v["segments"][0]["prefixes"],
        json!(["10.99.0.2/32", "fd00:99::2/128"])
    );
    assert!(v["segments"][1].get("vlans").is_none());
    // And through a JSON tree, as the REST API will.
    assert_eq!(Policy::from_value(v).unwrap(), p);
}

#[test]
fn model_round_trips_through_serde() {
    let p = Policy::from_json(FULL).unwrap();
    for s in &p.document().segments {
        let back: Segment = serde_json::from_value(serde_json::to_value(s).unwrap()).unwrap();
        assert_eq!(&back, s);
    }
    for s in &p.document().services {
        let back: Service = serde_json::from_value(serde_json::to_value(s).unwrap()).unwrap();
        assert_eq!(&back, s);
    }
    for r in &p.document().rules {
        let back: Rule = serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap();
        assert_eq!(&back, r);
    }
    let d = Document::default();
    let text = serde_json::to_string(&d).unwrap();
    assert_eq!(Policy::from_json(&text).unwrap().document(), &d);
}
