//! Corner cases of the reference evaluation. Each test also checks that the compiled flat rules agree.

mod common;

use common::{ip, policy};
use policy::*;
use serde_json::{json, Value};

/// Evaluates, checks the compiled classifier agrees, and returns the decision.
fn decide(p: &Policy, flow: Flow) -> Decision {
    let d = p.evaluate(&flow);
    assert_eq!(
        p.compile().classify(&flow),
        d,
        "compiled disagrees on {flow:?}"
    );
    d
}

fn rule(index: usize, id: u32, action: Action, mode: Mode) -> Decision {
    Decision::Rule {
        index,
        id,
        action,
        mode,
    }
}

const DENY: Decision = Decision::Default {
    action: Action::Deny,
    monitored: false,
};
const MONITORED: Decision = Decision::Default {
    action: Action::Deny,
    monitored: true,
};

fn doc(segments: Value, services: Value, rules: Value) -> Value {
    json!({"format": "bulkhead.policy/v1", "segments": segments, "services": services, "rules": rules})
}

fn r(id: u32, from: Value, to: Value, service: &str, action: &str) -> Value {
    json!({"id": id, "name": format!("r{id}"), "from": from, "to": to, "service": service, "action": action})
}

fn tcp(src: &str, dst: &str, vlan: Option<u16>, dport: u16) -> Flow {
    Flow::tcp(ip(src), ip(dst), vlan, 40000, dport)
}

#[test]
fn vlan_segments_exclude_untagged_and_other_vlans() {
    let p = policy(doc(
        json!([{"name": "plc", "prefixes": ["10.0.0.0/24"], "vlans": [20, 30]}]),
        json!([]),
        json!([r(
            1,
            json!("any"),
            json!({"segment": "plc"}),
            "any",
            "allow"
        )]),
    ));
    assert_eq!(
        decide(&p, tcp("10.9.9.9", "10.0.0.5", Some(20), 80)),
        rule(0, 1, Action::Allow, Mode::Enforce)
    );
    assert_eq!(
        decide(&p, tcp("10.9.9.9", "10.0.0.5", Some(30), 80)),
        rule(0, 1, Action::Allow, Mode::Enforce)
    );
    assert_eq!(decide(&p, tcp("10.9.9.9", "10.0.0.5", None, 80)), DENY);
    assert_eq!(decide(&p, tcp("10.9.9.9", "10.0.0.5", Some(21), 80)), DENY);
    assert_eq!(p.segments_of(ip("10.0.0.5"), None).len(), 0);
    assert_eq!(p.segments_of(ip("10.0.0.5"), Some(20)).len(), 1);
}

#[test]
fn vlan_conditions_of_both_sides_must_hold_together() {
    let p = policy(doc(
        json!([{"name": "a", "prefixes": ["10.0.0.0/24"], "vlans": [10, 20]},
               {"name": "b", "prefixes": ["10.0.1.0/24"], "vlans": [20, 30]}]),
        json!([]),
        json!([r(
            1,
            json!({"segment": "a"}),
            json!({"segment": "b"}),
            "any",
            "allow"
        )]),
    ));
    assert!(decide(&p, tcp("10.0.0.1", "10.0.1.1", Some(20), 80)).passes());
    assert!(!decide(&p, tcp("10.0.0.1", "10.0.1.1", Some(10), 80)).passes());
    assert!(!decide(&p, tcp("10.0.0.1", "10.0.1.1", Some(30), 80)).passes());
    assert!(!decide(&p, tcp("10.0.0.1", "10.0.1.1", None, 80)).passes());
}

#[test]
fn prefix_selectors_ignore_vlans() {
    let p = policy(doc(
        json!([]),
        json!([]),
        json!([
            r(
                1,
                json!({"prefix": "10.0.0.0/8"}),
                json!({"prefix": "fd00::/8"}),
                "any",
                "allow"
            ),
            r(
                2,
                json!({"prefix": "10.0.0.0/8"}),
                json!({"prefix": "192.168.0.0/16"}),
                "any",
                "allow"
            )
        ]),
    ));
    for vlan in [None, Some(1), Some(4094)] {
        assert!(decide(&p, tcp("10.1.1.1", "192.168.3.4", vlan, 1)).passes());
    }
    // A v4 prefix to a v6 prefix never matches anything (and is not an error).
    assert_eq!(decide(&p, tcp("10.1.1.1", "fd00::1", None, 1)), DENY);
}

#[test]
fn hosts_in_several_segments() {
    let p = policy(doc(
        json!([{"name": "lab", "prefixes": ["10.0.0.0/16"]},
               {"name": "printers", "prefixes": ["10.0.5.0/24", "10.9.0.7/32"]},
               {"name": "servers", "prefixes": ["10.1.0.0/16"]}]),
        json!([{"name": "ipp", "protocol": "tcp", "ports": ["631"]}]),
        json!([r(
            1,
            json!({"segment": "servers"}),
            json!({"segment": "printers"}),
            "ipp",
            "allow"
        )]),
    ));
    let names = |addr: &str| -> Vec<String> {
        p.segments_of(ip(addr), None)
            .iter()
            .map(|s| s.name.clone())
            .collect()
    };
    assert_eq!(names("10.0.5.9"), ["lab", "printers"]);
    assert_eq!(names("10.0.6.9"), ["lab"]);
    assert_eq!(names("10.9.0.7"), ["printers"]);
    assert!(names("172.16.0.1").is_empty());
    // The rule names "printers"; a host also in "lab" still matches it.
    assert!(decide(&p, tcp("10.1.2.3", "10.0.5.9", None, 631)).passes());
    assert!(!decide(&p, tcp("10.1.2.3", "10.0.6.9", None, 631)).passes());
}

#[test]
fn label_selectors_match_every_segment_with_all_pairs() {
    let p = policy(doc(
        json!([{"name": "plc1", "prefixes": ["10.0.1.0/24"], "labels": {"zone": "ot", "role": "plc"}},
               {"name": "plc2", "prefixes": ["10.0.2.0/24"], "labels": {"zone": "ot", "role": "plc", "site": "b"}},
               {"name": "hmi", "prefixes": ["10.0.3.0/24"], "labels": {"zone": "ot", "role": "hmi"}},
               {"name": "office", "prefixes": ["10.0.4.0/24"], "labels": {"zone": "it"}}]),
        json!([]),
        json!([r(
            1,
            json!({"labels": {"zone": "ot", "role": "hmi"}}),
            json!({"labels": {"role": "plc"}}),
            "any",
            "allow"
        )]),
    ));
    assert!(decide(&p, tcp("10.0.3.1", "10.0.1.1", None, 1)).passes());
    assert!(decide(&p, tcp("10.0.3.1", "10.0.2.1", None, 1)).passes());
    assert!(!decide(&p, tcp("10.0.3.1", "10.0.3.2", None, 1)).passes());
    assert!(!decide(&p, tcp("10.0.4.1", "10.0.1.1", None, 1)).passes());
    assert!(!decide(&p, tcp("10.0.1.1", "10.0.3.1", None, 1)).passes());
}

#[test]
fn first_match_wins() {
    let p = policy(doc(
        json!([{"name": "a", "prefixes": ["10.0.0.0/24"]}]),
        json!([{"name": "web", "protocol": "tcp", "ports": ["80"]}]),
        json!([
            r(5, json!({"segment": "a"}), json!("any"), "web", "reject"),
            r(3, json!("any"), json!("any"), "web", "allow")
        ]),
    ));
    assert_eq!(
        decide(&p, tcp("10.0.0.1", "1.1.1.1", None, 80)),
        rule(0, 5, Action::Reject, Mode::Enforce)
    );
    assert_eq!(
        decide(&p, tcp("10.0.1.1", "1.1.1.1", None, 80)),
        rule(1, 3, Action::Allow, Mode::Enforce)
    );
}

fn monitor_policy(default: &str) -> Policy {
    policy(json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "new", "prefixes": ["10.0.1.0/24", "fd00:1::/64"], "mode": "monitor"},
            {"name": "tagged", "prefixes": ["10.0.2.0/24"], "vlans": [7], "mode": "monitor"},
            {"name": "old", "prefixes": ["10.0.3.0/24"]}
        ],
        "services": [{"name": "ssh", "protocol": "tcp", "ports": ["22"]},
                     {"name": "telnet", "protocol": "tcp", "ports": ["23"]},
                     {"name": "web", "protocol": "tcp", "ports": ["80"]}],
        "rules": [
            {"id": 1, "name": "ssh-enforced", "from": "any", "to": {"segment": "new"}, "service": "ssh", "action": "deny"},
            {"id": 2, "name": "telnet-monitored", "from": "any", "to": "any", "service": "telnet", "action": "reject", "mode": "monitor"},
            {"id": 3, "name": "web-monitor-allow", "from": "any", "to": "any", "service": "web", "action": "allow", "mode": "monitor"}
        ],
        "settings": {"default_action": default}
    }))
}

#[test]
fn monitor_segments_turn_the_default_into_would_deny() {
    let p = monitor_policy("deny");
    // dst in a monitor segment, src in one, both: monitored; neither: denied.
    for (src, dst) in [
        ("10.0.3.1", "10.0.1.1"),
        ("10.0.1.1", "10.0.3.1"),
        ("10.0.1.1", "10.0.1.2"),
    ] {
        let d = decide(&p, tcp(src, dst, None, 443));
        assert_eq!(d, MONITORED);
        assert!(d.passes() && d.would_deny());
    }
    assert_eq!(
        decide(
            &p,
            Flow::tcp(ip("fd00:1::5"), ip("fd00:2::1"), None, 1, 443)
        ),
        MONITORED
    );
    let d = decide(&p, tcp("10.0.3.1", "10.0.3.2", None, 443));
    assert_eq!(d, DENY);
    assert!(!d.passes() && !d.would_deny());
    // A monitor segment that lists VLANs: only its tagged traffic is monitored.
    assert_eq!(
        decide(&p, tcp("10.0.3.1", "10.0.2.1", Some(7), 443)),
        MONITORED
    );
    assert_eq!(decide(&p, tcp("10.0.3.1", "10.0.2.1", None, 443)), DENY);
    // Reject defaults are monitored too.
    let p = monitor_policy("reject");
    assert_eq!(
        decide(&p, tcp("10.0.3.1", "10.0.1.1", None, 443)),
        Decision::Default {
            action: Action::Reject,
            monitored: true
        }
    );
    // An allow default is just an allow.
    let p = monitor_policy("allow");
    let d = decide(&p, tcp("10.0.3.1", "10.0.1.1", None, 443));
    assert_eq!(
        d,
        Decision::Default {
            action: Action::Allow,
            monitored: false
        }
    );
    assert!(d.passes() && !d.would_deny());
    assert!(p
        .compile()
        .v4
        .iter()
        .all(|f| f.rule != RuleRef::MonitoredDefault));
}

#[test]
fn a_matching_rule_s_own_mode_governs() {
    let p = monitor_policy("deny");
    // An enforce-mode deny applies even though dst is in a monitor segment.
    let d = decide(&p, tcp("10.0.3.1", "10.0.1.1", None, 22));
    assert_eq!(d, rule(0, 1, Action::Deny, Mode::Enforce));
    assert!(!d.passes() && !d.would_deny());
    // A monitor-mode reject passes and counts, between enforce segments too.
    let d = decide(&p, tcp("10.0.3.1", "10.0.3.2", None, 23));
    assert_eq!(d, rule(1, 2, Action::Reject, Mode::Monitor));
    assert!(d.passes() && d.would_deny());
    // A monitor-mode allow is an allow.
    let d = decide(&p, tcp("10.0.3.1", "10.0.3.2", None, 80));
    assert_eq!(d, rule(2, 3, Action::Allow, Mode::Monitor));
    assert!(d.passes() && !d.would_deny());
}

#[test]
fn decision_verdicts() {
    use Action::*;
    use Mode::*;
    let cases = [
        (rule(0, 1, Allow, Enforce), true, false),
        (rule(0, 1, Allow, Monitor), true, false),
        (rule(0, 1, Deny, Enforce), false, false),
        (rule(0, 1, Deny, Monitor), true, true),
        (rule(0, 1, Reject, Enforce), false, false),
        (rule(0, 1, Reject, Monitor), true, true),
        (
            Decision::Default {
                action: Allow,
                monitored: false,
            },
            true,
            false,
        ),
        (
            Decision::Default {
                action: Deny,
                monitored: false,
            },
            false,
            false,
        ),
        (
            Decision::Default {
                action: Deny,
                monitored: true,
            },
            true,
            true,
        ),
        (
            Decision::Default {
                action: Reject,
                monitored: false,
            },
            false,
            false,
        ),
        (
            Decision::Default {
                action: Reject,
                monitored: true,
            },
            true,
            true,
        ),
    ];
    for (d, passes, would_deny) in cases {
        assert_eq!((d.passes(), d.would_deny()), (passes, would_deny), "{d:?}");
    }
    assert_eq!(rule(0, 1, Reject, Monitor).action(), Reject);
}

fn icmp_policy() -> Policy {
    policy(doc(
        json!([]),
        json!([{"name": "echo", "protocol": "icmp", "icmp_type": 8},
               {"name": "unreach-port", "protocol": "icmp", "icmp_type": 3, "icmp_code": 3},
               {"name": "echo6", "protocol": "icmpv6", "icmp_type": 128, "icmp_code": 0},
               {"name": "icmp-all", "protocol": 1}]),
        json!([
            r(
                1,
                json!("any"),
                json!({"prefix": "10.0.0.0/8"}),
                "echo",
                "allow"
            ),
            r(
                2,
                json!("any"),
                json!({"prefix": "10.0.0.0/8"}),
                "unreach-port",
                "allow"
            ),
            r(3, json!("any"), json!("any"), "echo6", "allow"),
            r(
                4,
                json!("any"),
                json!({"prefix": "10.9.0.0/16"}),
                "icmp-all",
                "reject"
            )
        ]),
    ))
}

#[test]
fn icmp_type_and_code() {
    let p = icmp_policy();
    let icmp = |dst: &str, v6: bool, ty: u8, code: u8| {
        let src = if v6 { "fd00::1" } else { "10.1.1.1" };
        decide(&p, Flow::icmp(ip(src), ip(dst), None, v6, ty, code))
    };
    // Type only: every code.
    assert_eq!(
        icmp("10.0.0.1", false, 8, 0),
        rule(0, 1, Action::Allow, Mode::Enforce)
    );
    assert_eq!(
        icmp("10.0.0.1", false, 8, 5),
        rule(0, 1, Action::Allow, Mode::Enforce)
    );
    // Type and code.
    assert_eq!(
        icmp("10.0.0.1", false, 3, 3),
        rule(1, 2, Action::Allow, Mode::Enforce)
    );
    assert_eq!(icmp("10.0.0.1", false, 3, 1), DENY);
    assert_eq!(icmp("10.0.0.1", false, 0, 0), DENY);
    // ICMPv6 is its own protocol.
    assert_eq!(
        icmp("fd00::2", true, 128, 0),
        rule(2, 3, Action::Allow, Mode::Enforce)
    );
    assert_eq!(icmp("fd00::2", true, 128, 1), DENY);
    assert_eq!(icmp("fd00::2", true, 8, 0), DENY);
    assert_eq!(icmp("10.0.0.1", false, 128, 0), DENY);
    // An icmp service without a type: every type and code.
    assert_eq!(
        icmp("10.9.0.1", false, 13, 0),
        rule(3, 4, Action::Reject, Mode::Enforce)
    );
    assert_eq!(
        icmp("10.9.0.1", false, 255, 255),
        rule(3, 4, Action::Reject, Mode::Enforce)
    );
    // Flow::icmp puts type in sport and code in dport.
    let f = Flow::icmp(ip("fd00::1"), ip("fd00::2"), Some(3), true, 128, 7);
    assert_eq!((f.proto, f.sport, f.dport, f.vlan), (58, 128, 7, Some(3)));
    assert_eq!(
        Flow::icmp(ip("10.0.0.1"), ip("10.0.0.2"), None, false, 8, 0).proto,
        1
    );
}

#[test]
fn any_service_and_protocol_numbers() {
    let p = policy(doc(
        json!([]),
        json!([{"name": "gre", "protocol": 47},
               {"name": "everything", "protocol": "any"},
               {"name": "ssh-by-number", "protocol": 6, "ports": ["22"]},
               {"name": "dns-client", "protocol": "udp", "ports": ["53"], "source_ports": ["1024-65535"]}]),
        json!([
            r(
                1,
                json!({"prefix": "10.1.0.0/16"}),
                json!("any"),
                "gre",
                "allow"
            ),
            r(
                2,
                json!({"prefix": "10.2.0.0/16"}),
                json!("any"),
                "everything",
                "allow"
            ),
            r(
                3,
                json!({"prefix": "10.3.0.0/16"}),
                json!("any"),
                "ssh-by-number",
                "allow"
            ),
            r(
                4,
                json!({"prefix": "10.4.0.0/16"}),
                json!("any"),
                "dns-client",
                "allow"
            ),
            r(
                5,
                json!({"prefix": "10.5.0.0/16"}),
                json!("any"),
                "any",
                "allow"
            )
        ]),
    ));
    let f = |src: &str, proto: u8, sport: u16, dport: u16| {
        decide(
            &p,
            Flow::new(ip(src), ip("192.0.2.1"), None, proto, sport, dport),
        )
        .passes()
    };
    assert!(f("10.1.0.1", 47, 0, 0));
    assert!(!f("10.1.0.1", 6, 0, 47));
    for proto in [0, 1, 6, 17, 47, 58, 132, 255] {
        assert!(f("10.2.0.1", proto, 9, 9), "protocol any, {proto}");
        assert!(f("10.5.0.1", proto, 0, 0), "service any, {proto}");
    }
    assert!(f("10.3.0.1", 6, 50000, 22));
    assert!(!f("10.3.0.1", 17, 50000, 22));
    assert!(!f("10.3.0.1", 6, 50000, 23));
    assert!(f("10.4.0.1", 17, 1024, 53));
    assert!(f("10.4.0.1", 17, 65535, 53));
    assert!(!f("10.4.0.1", 17, 1023, 53));
    assert!(!f("10.4.0.1", 17, 2000, 54));
}

#[test]
fn port_ranges_are_inclusive_and_absent_means_all_ports() {
    let p = policy(doc(
        json!([]),
        json!([{"name": "web", "protocol": "tcp", "ports": ["80", "8080-8081"]},
               {"name": "all-tcp", "protocol": "tcp"}]),
        json!([
            r(
                1,
                json!({"prefix": "10.1.0.0/16"}),
                json!("any"),
                "web",
                "allow"
            ),
            r(
                2,
                json!({"prefix": "10.2.0.0/16"}),
                json!("any"),
                "all-tcp",
                "allow"
            )
        ]),
    ));
    let ok = |src: &str, dport: u16| decide(&p, tcp(src, "192.0.2.1", None, dport)).passes();
    assert!(!ok("10.1.0.1", 79));
    assert!(ok("10.1.0.1", 80));
    assert!(!ok("10.1.0.1", 81));
    assert!(!ok("10.1.0.1", 8079));
    assert!(ok("10.1.0.1", 8080));
    assert!(ok("10.1.0.1", 8081));
    assert!(!ok("10.1.0.1", 8082));
    for port in [0, 1, 65535] {
        assert!(ok("10.2.0.1", port));
    }
}

#[test]
fn prefix_boundaries() {
    let p = policy(doc(
        json!([{"name": "half", "prefixes": ["10.0.0.128/25", "fd00::80/121"]}]),
        json!([]),
        json!([r(
            1,
            json!("any"),
            json!({"segment": "half"}),
            "any",
            "allow"
        )]),
    ));
    let ok = |dst: &str| {
        decide(
            &p,
            Flow::udp(
                ip(if dst.contains(':') {
                    "fd00::1"
                } else {
                    "10.0.0.1"
                }),
                ip(dst),
                None,
                1,
                1,
            ),
        )
        .passes()
    };
    assert!(!ok("10.0.0.127"));
    assert!(ok("10.0.0.128"));
    assert!(ok("10.0.0.255"));
    assert!(!ok("10.0.1.0"));
    assert!(!ok("fd00::7f"));
    assert!(ok("fd00::80"));
    assert!(ok("fd00::ff"));
    assert!(!ok("fd00::100"));
}

#[test]
fn mixed_family_flows_get_the_plain_default() {
    let p = monitor_policy("deny");
    let f = Flow::tcp(ip("10.0.1.1"), ip("fd00:1::1"), None, 1, 23);
    assert!(!f.same_family());
    assert_eq!(decide(&p, f), DENY);
}

#[test]
fn empty_policy_applies_the_default() {
    let p =
        policy(json!({"format": "bulkhead.policy/v1", "settings": {"default_action": "allow"}}));
    assert_eq!(
        decide(&p, tcp("10.0.0.1", "10.0.0.2", None, 1)),
        Decision::Default {
            action: Action::Allow,
            monitored: false
        }
    );
    assert!(p.compile().v4.is_empty() && p.compile().v6.is_empty());
}
