//! Differential test of the classifier exactly as the workers run it — policy → flat rules → two `rte_acl`
//! contexts (`Ruleset`) → verdict — against the straightforward reference, `Policy::evaluate` (a linear scan
//! over the rules, first match wins). Random policies and flows, biased toward prefix and port-range edges,
//! VLANs, ICMP, monitor modes, IPv4 and IPv6, one-list (v1) and tiered (v2, with `pass` rules and tier
//! defaults) documents; there must be no mismatch, in the verdict, the deciding rule or its tier.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bulkhead_dataplane::ruleset::{model_input, Ruleset, V6_INPUT};
use dpdk::Eal;
use policy::{Action, Decision, Flow, Mode, Policy};
use serde_json::{json, Value};

/// splitmix64: deterministic, so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const PORT_EDGES: [u16; 9] = [1, 22, 23, 79, 80, 443, 1024, 8080, 65535];

/// A prefix in a small address space, so prefixes of different rules overlap often.
fn prefix(r: &mut Rng, v6: bool) -> (IpAddr, u8) {
    if v6 {
        let len = *r.pick(&[16u8, 48, 64, 120, 126, 128]);
        let bits = (0xfd00u128 << 112) | (u128::from(r.below(4)) << 64) | u128::from(r.below(16));
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        };
        (IpAddr::V6(Ipv6Addr::from(bits & mask)), len)
    } else {
        let len = *r.pick(&[8u8, 16, 24, 28, 30, 32]);
        let bits = (10u32 << 24)
            | ((r.below(4) as u32) << 16)
            | ((r.below(4) as u32) << 8)
            | r.below(16) as u32;
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        (IpAddr::V4(Ipv4Addr::from(bits & mask)), len)
    }
}

fn ports(r: &mut Rng) -> String {
    let lo = *r.pick(&PORT_EDGES);
    let hi = lo.saturating_add(r.below(3) as u16 * 50);
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

fn random_policy(r: &mut Rng) -> Value {
    let zones = ["a", "b"];
    let segments: Vec<Value> = (0..1 + r.below(4))
        .map(|i| {
            let v6 = r.chance(40);
            let prefixes: Vec<String> = (0..1 + r.below(3))
                .map(|_| prefix(r, v6))
                .map(|(a, l)| format!("{a}/{l}"))
                .collect();
            let mut s = json!({
                "name": format!("s{i}"), "prefixes": prefixes,
                "labels": {"zone": r.pick(&zones)},
                "mode": if r.chance(20) { "monitor" } else { "enforce" },
            });
            if r.chance(25) {
                s["vlans"] = json!([10 + r.below(3)]);
            }
            s
        })
        .collect();
    let nseg = segments.len();
    let mut services = Vec::new();
    for i in 0..1 + r.below(5) {
        let svc = match r.below(6) {
            0 | 1 => {
                let mut s = json!({"name": format!("v{i}"), "protocol": r.pick(&["tcp", "udp"]), "ports": [ports(r)]});
                if r.chance(20) {
                    s["source_ports"] = json!([ports(r)]);
                }
                s
            }
            2 => {
                json!({"name": format!("v{i}"), "protocol": "icmp", "icmp_type": r.pick(&[0u8, 8, 3])})
            }
            3 => {
                json!({"name": format!("v{i}"), "protocol": "icmpv6", "icmp_type": 128, "icmp_code": 0})
            }
            4 => json!({"name": format!("v{i}"), "protocol": 47}),
            _ => json!({"name": format!("v{i}"), "protocol": "any"}),
        };
        services.push(svc);
    }
    let nsvc = services.len();
    let selector = |r: &mut Rng| -> Value {
        match r.below(4) {
            0 => json!("any"),
            1 => json!({"segment": format!("s{}", r.below(nseg as u64))}),
            2 => json!({"labels": {"zone": "a"}}),
            _ => {
                let v6 = r.chance(40);
                let (a, l) = prefix(r, v6);
                json!({"prefix": format!("{a}/{l}")})
            }
        }
    };
    let tiered = r.chance(50);
    let actions: &[&str] = if tiered {
        &["allow", "deny", "reject", "pass", "pass"]
    } else {
        &["allow", "deny", "reject"]
    };
    let mut rules: Vec<Value> = (0..1 + r.below(12))
        .map(|i| {
            let service = if r.chance(20) {
                "any".to_string()
            } else {
                format!("v{}", r.below(nsvc as u64))
            };
            let action = *r.pick(actions);
            let monitor = action != "pass" && r.chance(20);
            json!({
                "id": 10 * i + 1, "name": format!("r{i}"), "from": selector(r), "to": selector(r),
                "service": service, "action": action,
                "mode": if monitor { "monitor" } else { "enforce" },
            })
        })
        .collect();
    let settings = json!({"default_action": r.pick(&["deny", "deny", "allow", "reject"])});
    if !tiered {
        return json!({
            "format": "bulkhead.policy/v1", "segments": segments, "services": services, "rules": rules,
            "settings": settings,
        });
    }
    let ntiers = 1 + r.below(4);
    let tiers: Vec<Value> = (0..ntiers)
        .map(|t| {
            let take = if t + 1 == ntiers {
                rules.len()
            } else {
                (r.below(5) as usize).min(rules.len())
            };
            json!({
                "name": format!("t{t}"), "rules": rules.drain(..take).collect::<Vec<_>>(),
                "default": if r.chance(30) { "deny" } else { "pass" },
            })
        })
        .collect();
    json!({
        "format": "bulkhead.policy/v2", "segments": segments, "services": services, "tiers": tiers,
        "settings": settings,
    })
}

/// Every rule of a v1 or v2 document.
fn all_rules(doc: &Value) -> Vec<&Value> {
    match doc.get("tiers") {
        Some(tiers) => tiers
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["rules"].as_array().unwrap())
            .collect(),
        None => doc["rules"].as_array().unwrap().iter().collect(),
    }
}

/// An address near the edges of some prefix of the policy (first, last, just outside), or anywhere.
fn address(r: &mut Rng, doc: &Value, v6: bool) -> IpAddr {
    let prefixes: Vec<(IpAddr, u8)> = doc["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["prefixes"].as_array().unwrap().iter())
        .chain(all_rules(doc).into_iter().flat_map(|rule| {
            ["from", "to"]
                .into_iter()
                .filter_map(move |k| rule[k].get("prefix"))
        }))
        .filter_map(|p| {
            let (a, l) = p.as_str()?.split_once('/')?;
            Some((a.parse().ok()?, l.parse().ok()?))
        })
        .filter(|(a, _): &(IpAddr, u8)| a.is_ipv6() == v6)
        .collect();
    if prefixes.is_empty() || r.chance(10) {
        return prefix(r, v6).0;
    }
    let (base, len) = *r.pick(&prefixes);
    match base {
        IpAddr::V4(a) => {
            let a = u32::from(a);
            let size = 1u64 << (32 - u32::from(len));
            let off = match r.below(4) {
                0 => 0,
                1 => size - 1,
                2 => size,
                _ => r.below(size),
            };
            IpAddr::V4(Ipv4Addr::from(
                a.wrapping_add(off as u32)
                    .wrapping_sub(u32::from(r.chance(10))),
            ))
        }
        IpAddr::V6(a) => {
            let a = u128::from(a);
            let size = 1u128.checked_shl(128 - u32::from(len)).unwrap_or(0);
            let off = match r.below(4) {
                0 => 0,
                1 => size.wrapping_sub(1),
                2 => size,
                _ => u128::from(r.next()) % size.max(1),
            };
            IpAddr::V6(Ipv6Addr::from(a.wrapping_add(off)))
        }
    }
}

fn random_flow(r: &mut Rng, doc: &Value) -> Flow {
    let v6 = r.chance(40);
    let (src, dst) = (address(r, doc, v6), address(r, doc, v6));
    let vlan = if r.chance(30) {
        Some(10 + r.below(3) as u16)
    } else {
        None
    };
    match r.below(5) {
        0 | 1 => {
            let edge = |r: &mut Rng| {
                let p = *r.pick(&PORT_EDGES);
                match r.below(4) {
                    0 => p.saturating_sub(1),
                    1 => p.saturating_add(1),
                    2 => p.saturating_add(r.below(3) as u16 * 50),
                    _ => p,
                }
            };
            Flow {
                src,
                dst,
                vlan,
                proto: *r.pick(&[6u8, 17]),
                sport: edge(r),
                dport: edge(r),
            }
        }
        2 => Flow::icmp(
            src,
            dst,
            vlan,
            v6,
            *r.pick(&[0u8, 3, 8, 128, 129]),
            *r.pick(&[0u8, 1]),
        ),
        3 => Flow {
            src,
            dst,
            vlan,
            proto: 47,
            sport: 0,
            dport: 0,
        },
        _ => Flow {
            src,
            dst,
            vlan,
            proto: r.below(256) as u8,
            sport: r.below(3) as u16,
            dport: r.below(3) as u16,
        },
    }
}

/// (rule id, action, passes-as-monitored, tier) of the reference decision.
fn reference(p: &Policy, d: Decision) -> (u32, Action, bool, Option<&str>) {
    let tier = p.decision_tier(&d);
    match d {
        Decision::Rule {
            id, action, mode, ..
        } => (
            id,
            action,
            mode == Mode::Monitor && action != Action::Allow,
            tier,
        ),
        Decision::Default { action, monitored } => (0, action, monitored, tier),
        Decision::TierDefault { monitored, .. } => (0, Action::Deny, monitored, tier),
    }
}

#[test]
fn compiled_classifier_matches_the_reference_evaluator() {
    let prefix_arg = format!("--file-prefix=classifier-{}", std::process::id());
    let eal = Eal::init(&[
        "classifier",
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        &prefix_arg,
        "-l",
        "0",
        "--log-level=*:warning",
    ])
    .expect("EAL");
    let mut r = Rng(0x5eed_b01c);
    let (mut policies, mut flows, mut refused, mut matched_rules) = (0, 0, 0, 0);
    let (mut tiered, mut lower_tier) = (0, 0);
    for case in 0..600 {
        let doc = random_policy(&mut r);
        let policy = match Policy::from_value(doc.clone()) {
            Ok(p) => p,
            Err(_) => {
                refused += 1; // e.g. a label selector that matches no segment
                continue;
            }
        };
        let ruleset = Ruleset::build(&eal, &policy, case + 1, 1024, |_| 0).expect("compiles");
        policies += 1;
        tiered += u64::from(policy.tiers().len() > 1);
        for _ in 0..300 {
            let flow = random_flow(&mut r, &doc);
            let mut buf = [0u8; V6_INPUT];
            let (v6, input) = model_input(&flow, &mut buf).expect("one family");
            let mut out = [0u32; 1];
            ruleset.classify(v6, &[input], &mut out);
            let j = ruleset.judge(out[0]);
            let want = reference(&policy, policy.evaluate(&flow));
            assert_eq!(
                (j.rule_id, j.action, j.monitored, ruleset.tier_name(&j)),
                want,
                "case {case}: flow {flow:?}\npolicy {}",
                serde_json::to_string_pretty(&doc).unwrap()
            );
            flows += 1;
            matched_rules += u64::from(want.0 != 0);
            lower_tier += u64::from(want.3.is_some_and(|t| t != "t0" && t != "main"));
        }
    }
    eprintln!("{policies} policies ({refused} more refused by validation, {tiered} with several tiers), {flows} flows, {matched_rules} decided by a rule, {lower_tier} below the first tier, 0 mismatches");
    assert!(
        policies >= 200 && matched_rules >= flows / 10,
        "the generator must exercise rules, not just defaults"
    );
    assert!(
        tiered >= 50 && lower_tier >= flows / 20,
        "the generator must exercise tiers and pass chains"
    );
}
