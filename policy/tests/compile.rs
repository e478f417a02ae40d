//! Compilation: exact expansions, the reductions, the monitored-default tail, stats, shadowed rules, limits.

mod common;

use common::{ip, policy};
use policy::*;
use serde_json::{json, Value};

fn v4(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

fn doc(segments: Value, services: Value, rules: Value) -> Value {
    json!({"format": "bulkhead.policy/v1", "segments": segments, "services": services, "rules": rules})
}

fn r(id: u32, from: Value, to: Value, service: &str, action: &str) -> Value {
    json!({"id": id, "name": format!("r{id}"), "from": from, "to": to, "service": service, "action": action})
}

fn flat<N>(
    rule: RuleRef,
    src: N,
    dst: N,
    vlan: Option<u16>,
    proto: Option<u8>,
    sport: (u16, u16),
    dport: (u16, u16),
) -> FlatRule<N> {
    FlatRule {
        rule,
        src,
        dst,
        vlan,
        proto,
        sport,
        dport,
    }
}

const ALL: (u16, u16) = FULL_RANGE;

#[test]
fn expansion_of_a_segment_pair() {
    let p = policy(doc(
        json!([{"name": "a", "prefixes": ["10.0.0.0/24", "fd00:a::/64", "10.9.0.0/16"]},
               {"name": "b", "prefixes": ["10.1.0.0/24", "fd00:b::/64"]}]),
        json!([{"name": "web", "protocol": "tcp", "ports": ["80", "443"], "source_ports": ["1024-65535"]}]),
        json!([r(
            7,
            json!({"segment": "a"}),
            json!({"segment": "b"}),
            "web",
            "allow"
        )]),
    ));
    let c = p.compile();
    let r0 = RuleRef::Rule(0);
    let tcp = Some(6);
    assert_eq!(
        c.v4,
        [
            flat(
                r0,
                v4("10.0.0.0/24"),
                v4("10.1.0.0/24"),
                None,
                tcp,
                (1024, 65535),
                (80, 80)
            ),
            flat(
                r0,
                v4("10.0.0.0/24"),
                v4("10.1.0.0/24"),
                None,
                tcp,
                (1024, 65535),
                (443, 443)
            ),
            flat(
                r0,
                v4("10.9.0.0/16"),
                v4("10.1.0.0/24"),
                None,
                tcp,
                (1024, 65535),
                (80, 80)
            ),
            flat(
                r0,
                v4("10.9.0.0/16"),
                v4("10.1.0.0/24"),
                None,
                tcp,
                (1024, 65535),
                (443, 443)
            ),
        ]
    );
    assert_eq!(
        c.v6,
        [
            flat(
                r0,
                v6("fd00:a::/64"),
                v6("fd00:b::/64"),
                None,
                tcp,
                (1024, 65535),
                (80, 80)
            ),
            flat(
                r0,
                v6("fd00:a::/64"),
                v6("fd00:b::/64"),
                None,
                tcp,
                (1024, 65535),
                (443, 443)
            ),
        ]
    );
    assert_eq!(
        c.rules,
        [RuleInfo {
            id: 7,
            action: Action::Allow,
            mode: Mode::Enforce,
            log: false,
            tier: 0
        }]
    );
}

#[test]
fn any_is_both_default_routes_and_icmp_uses_the_port_fields() {
    let p = policy(doc(
        json!([]),
        json!([{"name": "unreach", "protocol": "icmp", "icmp_type": 3, "icmp_code": 4},
               {"name": "icmp6", "protocol": "icmpv6"}]),
        json!([
            r(1, json!("any"), json!("any"), "unreach", "allow"),
            r(2, json!("any"), json!("any"), "icmp6", "allow")
        ]),
    ));
    let c = p.compile();
    assert_eq!(
        c.v4,
        [
            flat(
                RuleRef::Rule(0),
                v4("0.0.0.0/0"),
                v4("0.0.0.0/0"),
                None,
                Some(1),
                (3, 3),
                (4, 4)
            ),
            flat(
                RuleRef::Rule(1),
                v4("0.0.0.0/0"),
                v4("0.0.0.0/0"),
                None,
                Some(58),
                ALL,
                ALL
            ),
        ]
    );
    assert_eq!(
        c.v6[0],
        flat(
            RuleRef::Rule(0),
            v6("::/0"),
            v6("::/0"),
            None,
            Some(1),
            (3, 3),
            (4, 4)
        )
    );
}

#[test]
fn vlan_lists_are_intersected() {
    let p = policy(doc(
        json!([{"name": "a", "prefixes": ["10.0.0.0/24"], "vlans": [10, 20, 30]},
               {"name": "b", "prefixes": ["10.0.1.0/24"], "vlans": [30, 20, 40]},
               {"name": "c", "prefixes": ["10.0.2.0/24"], "vlans": [99]},
               {"name": "d", "prefixes": ["10.0.3.0/24"]}]),
        json!([]),
        json!([
            r(
                1,
                json!({"segment": "a"}),
                json!({"segment": "b"}),
                "any",
                "allow"
            ),
            r(
                2,
                json!({"segment": "a"}),
                json!({"segment": "c"}),
                "any",
                "allow"
            ),
            r(
                3,
                json!({"segment": "d"}),
                json!({"segment": "c"}),
                "any",
                "allow"
            )
        ]),
    ));
    let c = p.compile();
    let vlans = |i: usize| -> Vec<Option<u16>> {
        c.v4.iter()
            .filter(|f| f.rule == RuleRef::Rule(i))
            .map(|f| f.vlan)
            .collect()
    };
    assert_eq!(vlans(0), [Some(20), Some(30)]);
    assert_eq!(vlans(1), []);
    assert_eq!(vlans(2), [Some(99)]);
    assert_eq!(
        p.shadowed_rules(),
        [Shadowed {
            index: 1,
            id: 2,
            tier: V1_TIER.to_string(),
            reason: ShadowReason::MatchesNothing
        }]
    );
}

#[test]
fn side_prefixes_are_collapsed() {
    let p = policy(doc(
        json!([{"name": "wide", "prefixes": ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32"]},
               {"name": "halves", "prefixes": ["192.168.0.0/25", "192.168.0.128/25"]}]),
        json!([]),
        json!([
            r(1, json!({"segment": "wide"}), json!("any"), "any", "allow"),
            r(
                2,
                json!({"segment": "halves"}),
                json!("any"),
                "any",
                "allow"
            ),
            r(
                3,
                json!({"prefix": "10.0.0.0/8"}),
                json!("any"),
                "any",
                "deny"
            )
        ]),
    ));
    let c = p.compile();
    let srcs = |i: usize| -> Vec<Ipv4Net> {
        c.v4.iter()
            .filter(|f| f.rule == RuleRef::Rule(i))
            .map(|f| f.src)
            .collect()
    };
    assert_eq!(srcs(0), [v4("10.0.0.0/8")]);
    assert_eq!(srcs(1), [v4("192.168.0.0/24")]);
    // Rule 3 repeats rule 1: all covered.
    assert_eq!(srcs(2), []);
    assert_eq!(c.stats().rules[2].candidates, 1);

    // Within a label selector, a VLAN-less prefix absorbs the tagged prefixes inside it, not the others.
    let p = policy(doc(
        json!([{"name": "wide", "prefixes": ["10.0.0.0/8"], "labels": {"site": "x"}},
               {"name": "tagged-inside", "prefixes": ["10.5.0.0/16"], "vlans": [5], "labels": {"site": "x"}},
               {"name": "tagged-outside", "prefixes": ["172.16.0.0/16"], "vlans": [5], "labels": {"site": "x"}}]),
        json!([]),
        json!([r(
            1,
            json!({"labels": {"site": "x"}}),
            json!("any"),
            "any",
            "allow"
        )]),
    ));
    let c = p.compile();
    let atoms: Vec<(Ipv4Net, Option<u16>)> = c.v4.iter().map(|f| (f.src, f.vlan)).collect();
    assert_eq!(
        atoms,
        [(v4("10.0.0.0/8"), None), (v4("172.16.0.0/16"), Some(5))]
    );
}

#[test]
fn port_lists_are_merged() {
    let p = policy(doc(
        json!([]),
        json!([{"name": "s", "protocol": "udp", "ports": ["82-90", "80", "81", "100", "95-99", "200-300", "250"]}]),
        json!([r(1, json!("any"), json!("any"), "s", "allow")]),
    ));
    let dports: Vec<(u16, u16)> = p.compile().v4.iter().map(|f| f.dport).collect();
    assert_eq!(dports, [(80, 90), (95, 100), (200, 300)]);
}

#[test]
fn monitored_default_tail() {
    let p = policy(json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "m1", "prefixes": ["10.1.0.0/16", "fd00:1::/64"], "mode": "monitor"},
            {"name": "m2", "prefixes": ["10.1.5.0/24"], "vlans": [3], "mode": "monitor"},
            {"name": "m3", "prefixes": ["10.2.0.0/16"], "vlans": [3], "mode": "monitor"},
            {"name": "e", "prefixes": ["10.3.0.0/16"]}
        ],
        "rules": [{"id": 1, "name": "e-out", "from": {"segment": "e"}, "to": "any", "service": "any", "action": "deny"}]
    }));
    let c = p.compile();
    let md = RuleRef::MonitoredDefault;
    let any4 = v4("0.0.0.0/0");
    assert_eq!(
        c.v4,
        [
            flat(
                RuleRef::Rule(0),
                v4("10.3.0.0/16"),
                any4,
                None,
                None,
                ALL,
                ALL
            ),
            flat(md, v4("10.1.0.0/16"), any4, None, None, ALL, ALL),
            flat(md, v4("10.2.0.0/16"), any4, Some(3), None, ALL, ALL),
            flat(md, any4, v4("10.1.0.0/16"), None, None, ALL, ALL),
            flat(md, any4, v4("10.2.0.0/16"), Some(3), None, ALL, ALL),
        ]
    );
    assert_eq!(c.v6.len(), 2);
    let s = c.stats();
    assert_eq!(
        (s.v4, s.v6, s.monitored_default_v4, s.monitored_default_v6),
        (5, 2, 4, 2)
    );
    assert_eq!(
        c.decision(Some(md)),
        Decision::Default {
            action: Action::Deny,
            monitored: true
        }
    );
    assert_eq!(
        c.decision(None),
        Decision::Default {
            action: Action::Deny,
            monitored: false
        }
    );
    // A catch-all rule leaves nothing for the default: the tail is dropped as covered.
    let mut d = p.into_document();
    d.rules.push(Rule {
        id: 2,
        name: "rest".into(),
        description: None,
        from: Selector::Any,
        to: Selector::Any,
        service: ANY_SERVICE.into(),
        action: Action::Deny,
        log: false,
        mode: Mode::Enforce,
        provenance: None,
    });
    let c = Policy::new(d).unwrap().compile();
    assert_eq!(
        (
            c.stats().monitored_default_v4,
            c.stats().monitored_default_v6
        ),
        (0, 0)
    );
    assert_eq!(c.v4.len(), 2);
}

#[test]
fn stats_and_display() {
    let p = policy(doc(
        json!([{"name": "a", "prefixes": ["10.0.0.0/24", "fd00::/64"]}]),
        json!([{"name": "two", "protocol": "tcp", "ports": ["1", "3"]}]),
        json!([
            r(1, json!({"segment": "a"}), json!("any"), "two", "allow"),
            r(
                2,
                json!({"segment": "a"}),
                json!({"prefix": "10.0.0.0/8"}),
                "two",
                "allow"
            )
        ]),
    ));
    let c = p.compile();
    let s = c.stats();
    assert_eq!((s.v4, s.v6), (2, 2));
    assert_eq!(
        s.rules,
        [
            RuleStats {
                index: 0,
                id: 1,
                name: "r1".into(),
                candidates: 4,
                v4: 2,
                v6: 2
            },
            RuleStats {
                index: 1,
                id: 2,
                name: "r2".into(),
                candidates: 2,
                v4: 0,
                v6: 0
            },
        ]
    );
    assert_eq!(
        s.to_string(),
        "flat rules: 2 IPv4, 2 IPv6 (of which monitored default: 0 IPv4, 0 IPv6)\n  \
         rule 1 \"r1\": 2 IPv4 + 2 IPv6 of 4 candidates\n  \
         rule 2 \"r2\": 0 IPv4 + 0 IPv6 of 2 candidates"
    );
}

#[test]
fn shadowed_rules() {
    let p = policy(doc(
        json!([{"name": "a", "prefixes": ["10.0.0.0/24", "fd00:a::/64"]},
               {"name": "b", "prefixes": ["10.1.0.0/24", "fd00:b::/64"]},
               {"name": "v6only", "prefixes": ["fd00:c::/64"]},
               {"name": "tagged", "prefixes": ["10.0.0.0/24"], "vlans": [4]}]),
        json!([{"name": "low", "protocol": "tcp", "ports": ["1-1000"]},
               {"name": "web", "protocol": "tcp", "ports": ["80"]},
               {"name": "web-and-more", "protocol": "tcp", "ports": ["80", "2000"]}]),
        json!([
            r(10, json!("any"), json!({"segment": "b"}), "low", "allow"),
            // Entirely inside rule 10.
            r(
                20,
                json!({"segment": "a"}),
                json!({"segment": "b"}),
                "web",
                "deny"
            ),
            // Partly outside (port 2000): not shadowed.
            r(
                30,
                json!({"segment": "a"}),
                json!({"segment": "b"}),
                "web-and-more",
                "deny"
            ),
            // IPv4 part covered by rule 40's v4 half of 'any'... set up two halves:
            r(
                40,
                json!({"prefix": "10.0.0.0/8"}),
                json!("any"),
                "any",
                "reject"
            ),
            r(
                50,
                json!({"prefix": "fd00::/16"}),
                json!("any"),
                "any",
                "reject"
            ),
            // Covered piecewise: its IPv4 flat rules by rule 40, its IPv6 ones by rule 50.
            r(60, json!({"segment": "a"}), json!("any"), "web", "allow"),
            // A v4 prefix to a v6-only segment: matches nothing.
            r(
                70,
                json!({"prefix": "192.168.0.0/16"}),
                json!({"segment": "v6only"}),
                "any",
                "allow"
            ),
            // Tagged traffic of a covered prefix: covered by rule 40 regardless of VLAN.
            r(
                80,
                json!({"segment": "tagged"}),
                json!("any"),
                "any",
                "allow"
            ),
            // Not covered: source outside all earlier rules.
            r(
                90,
                json!({"prefix": "172.16.0.0/12"}),
                json!("any"),
                "any",
                "allow"
            ),
        ]),
    ));
    let got = p.shadowed_rules();
    assert_eq!(
        got,
        [
            Shadowed {
                index: 1,
                id: 20,
                tier: V1_TIER.to_string(),
                reason: ShadowReason::CoveredBy(vec![10])
            },
            Shadowed {
                index: 5,
                id: 60,
                tier: V1_TIER.to_string(),
                reason: ShadowReason::CoveredBy(vec![40, 50])
            },
            Shadowed {
                index: 6,
                id: 70,
                tier: V1_TIER.to_string(),
                reason: ShadowReason::MatchesNothing
            },
            Shadowed {
                index: 7,
                id: 80,
                tier: V1_TIER.to_string(),
                reason: ShadowReason::CoveredBy(vec![40])
            },
        ]
    );
    assert_eq!(
        got[1].to_string(),
        "rule 60 (rules[5]) can never match: covered by rule 40, 50"
    );
    assert_eq!(
        got[2].to_string(),
        "rule 70 (rules[6]) can never match: its sides share no address family or VLAN"
    );
    // The report is sound: those rules never decide.
    for src in ["10.0.0.1", "10.1.0.1", "192.168.1.1", "172.16.0.1"] {
        for dst in ["10.1.0.1", "10.0.0.1"] {
            for dport in [22, 80, 2000] {
                for vlan in [None, Some(4)] {
                    let d = p.evaluate(&Flow::tcp(ip(src), ip(dst), vlan, 1, dport));
                    if let Decision::Rule { id, .. } = d {
                        assert!(![20, 60, 70, 80].contains(&id), "{d:?}");
                    }
                    assert_eq!(
                        p.compile()
                            .classify(&Flow::tcp(ip(src), ip(dst), vlan, 1, dport)),
                        d
                    );
                }
            }
        }
    }
}

#[test]
fn a_rule_covered_only_by_a_union_is_not_reported() {
    // Rules 1 and 2 together cover rule 3's port range, but neither alone covers a flat rule of it: the
    // check is conservative and stays silent.
    let p = policy(doc(
        json!([]),
        json!([{"name": "lo", "protocol": "tcp", "ports": ["1-100"]},
               {"name": "hi", "protocol": "tcp", "ports": ["101-200"]},
               {"name": "both", "protocol": "tcp", "ports": ["50-150"]}]),
        json!([
            r(1, json!("any"), json!("any"), "lo", "allow"),
            r(2, json!("any"), json!("any"), "hi", "allow"),
            r(3, json!("any"), json!("any"), "both", "deny")
        ]),
    ));
    assert_eq!(p.shadowed_rules(), []);
}

#[test]
fn compile_limit() {
    let prefixes: Vec<String> = (0..20).map(|i| format!("10.0.{i}.0/24")).collect();
    let far: Vec<String> = (0..20).map(|i| format!("10.1.{}.0/24", i * 2)).collect();
    let p = policy(doc(
        json!([{"name": "a", "prefixes": prefixes}, {"name": "b", "prefixes": far}]),
        json!([]),
        json!([
            r(1, json!({"segment": "a"}), json!("any"), "any", "allow"),
            r(
                2,
                json!({"segment": "a"}),
                json!({"segment": "b"}),
                "any",
                "deny"
            ),
            r(
                3,
                json!({"segment": "b"}),
                json!({"segment": "a"}),
                "any",
                "deny"
            )
        ]),
    ));
    // "a" (20 adjacent /24s) collapses to 10.0.0.0/20 + 10.0.16.0/22; "b" (every other /24) stays 20 prefixes.
    let full = p.compile();
    assert_eq!(full.stats().rules[0].v4, 2);
    assert_eq!(full.stats().rules[1].v4, 0);
    assert_eq!(full.stats().rules[2].v4, 40);
    let e = p.compile_limited(30).unwrap_err();
    assert_eq!(
        e,
        CompileError::TooManyFlatRules {
            limit: 30,
            rule: Some(3)
        }
    );
    assert_eq!(
        e.to_string(),
        "rule 3 takes the policy past the limit of 30 flat rules"
    );
    assert_eq!(p.compile_limited(42).unwrap(), full);
}
