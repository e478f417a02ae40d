//! `config/policy.json`, the demo policy: it loads, and the test bed's flows get the intended decisions.
//! Side A is the engineering workstation (10.99.0.1, fd00:99::1), side B the legacy OT host (10.99.0.2,
//! fd00:99::2).

mod common;

use common::ip;
use policy::*;

const DEMO: &str = include_str!("../../config/policy.json");

fn demo() -> Policy {
    Policy::from_json(DEMO).unwrap_or_else(|e| panic!("config/policy.json: {e}"))
}

const A4: &str = "10.99.0.1";
const B4: &str = "10.99.0.2";
const A6: &str = "fd00:99::1";
const B6: &str = "fd00:99::2";

/// Evaluates, checks the compiled classifier agrees, and returns (rule id or None for the default, passes,
/// would_deny).
fn check(p: &Policy, c: &Compiled, flow: Flow) -> (Option<u32>, bool, bool) {
    let d = p.evaluate(&flow);
    assert_eq!(c.classify(&flow), d, "{flow:?}");
    let id = match d {
        Decision::Rule { id, .. } => Some(id),
        Decision::Default { .. } | Decision::TierDefault { .. } => None,
    };
    (id, d.passes(), d.would_deny())
}

#[test]
fn demo_policy_loads_and_is_clean() {
    let p = demo();
    assert_eq!(p.segments().len(), 2);
    assert_eq!(p.settings().default_action, Action::Deny);
    assert_eq!(p.shadowed_rules(), []);
    // What a hand edit round-trips to is the same policy.
    assert_eq!(Policy::from_json(&p.to_json_pretty()).unwrap(), p);
}

#[test]
fn demo_policy_decisions() {
    let p = demo();
    let c = p.compile();
    for (a, b) in [(A4, B4), (A6, B6)] {
        let v6 = a.contains(':');
        let tcp = |src: &str, dst: &str, dport| Flow::tcp(ip(src), ip(dst), None, 43210, dport);
        // Allowed: the HMI web interface, ping, Modbus, the UDP test service.
        assert_eq!(check(&p, &c, tcp(a, b, 8080)), (Some(10), true, false));
        let echo_type = if v6 { 128 } else { 8 };
        let ping_rule = if v6 { 21 } else { 20 };
        assert_eq!(
            check(&p, &c, Flow::icmp(ip(a), ip(b), None, v6, echo_type, 0)),
            (Some(ping_rule), true, false)
        );
        assert_eq!(check(&p, &c, tcp(a, b, 502)), (Some(30), true, false));
        assert_eq!(
            check(&p, &c, Flow::udp(ip(a), ip(b), None, 40000, 5353)),
            (Some(40), true, false)
        );
        // Telnet is monitored: it passes and counts as would-deny.
        assert_eq!(check(&p, &c, tcp(a, b, 23)), (Some(50), true, true));
        // Everything else is denied by default: iperf3, other ports, udp elsewhere, other ICMP, other protocols.
        for flow in [
            tcp(a, b, 5201),
            tcp(a, b, 8081),
            tcp(a, b, 22),
            Flow::udp(ip(a), ip(b), None, 40000, 5201),
            Flow::icmp(ip(a), ip(b), None, v6, echo_type, 1),
            Flow::icmp(ip(a), ip(b), None, !v6, echo_type, 0),
            Flow::other(ip(a), ip(b), None, 47),
        ] {
            assert_eq!(check(&p, &c, flow), (None, false, false), "{flow:?}");
        }
        // The legacy side may start nothing, not even what it is allowed to receive.
        assert_eq!(check(&p, &c, tcp(b, a, 8080)), (Some(90), false, false));
        assert_eq!(
            check(&p, &c, Flow::icmp(ip(b), ip(a), None, v6, echo_type, 0)),
            (Some(90), false, false)
        );
        // Tagged frames are still the same hosts (the demo segments do not list VLANs).
        assert_eq!(
            check(&p, &c, Flow::tcp(ip(a), ip(b), Some(100), 1, 502)),
            (Some(30), true, false)
        );
    }
    // Hosts outside both segments: default deny.
    assert_eq!(
        check(&p, &c, Flow::tcp(ip("10.99.0.3"), ip(B4), None, 1, 8080)),
        (None, false, false)
    );
}

#[test]
fn demo_policy_flat_rules() {
    let c = demo().compile();
    let s = c.stats();
    eprintln!("{s}");
    assert_eq!((s.v4, s.v6), (7, 7));
    assert_eq!((s.monitored_default_v4, s.monitored_default_v6), (0, 0));
    for r in &s.rules {
        assert_eq!((r.v4, r.v6, r.candidates), (1, 1, 2), "{r:?}");
    }
}
