//! Compile time and flat-rule count of a tiered 10 000-rule policy, against the same decisive rules as one v1
//! list: what resolving pass chains at compile time costs.
//!
//! `cargo run --release -p policy --example tiered_compile [runs]` prints a Markdown table (medians of `runs`,
//! default 5).
//!
//! The policy: 1000 application segments (a /24 each, every fourth also an IPv6 /64), 40 services, and three
//! tiers — `global` (security team, default pass): 100 segment-to-segment denies and 100 passes handing an
//! application's traffic to the next tier; `segments` (application teams, default deny): 9600 segment-to-segment
//! allows and 100 passes of single hosts on to `hosts`; `hosts` (default pass): 100 host-to-host allows.

use std::time::{Duration, Instant};

use policy::{Policy, TierDefault};
use serde_json::{json, Value};

const SEGMENTS: usize = 1000;

fn seg(i: usize) -> Value {
    json!({"segment": format!("app{}", i % SEGMENTS)})
}

fn host(i: usize) -> String {
    format!("10.{}.{}.{}/32", (i / 256) % 4, i % 256, 1 + i % 250)
}

fn rule(id: usize, from: Value, to: Value, service: String, action: &str) -> Value {
    json!({"id": id, "name": format!("r{id}"), "from": from, "to": to, "service": service, "action": action})
}

fn tiered() -> Value {
    let segments: Vec<Value> = (0..SEGMENTS)
        .map(|i| {
            let mut prefixes = vec![format!("10.{}.{}.0/24", i / 256, i % 256)];
            if i % 4 == 0 {
                prefixes.push(format!("fd00:{i:x}::/64"));
            }
            json!({"name": format!("app{i}"), "prefixes": prefixes, "labels": {"zone": format!("z{}", i % 10)}})
        })
        .collect();
    let services: Vec<Value> = (0..40)
        .map(|i| json!({"name": format!("svc{i}"), "protocol": "tcp", "ports": [format!("{}", 8000 + i)]}))
        .collect();
    let svc = |i: usize| format!("svc{}", i % 40);
    let mut id = 0;
    let mut next = || {
        id += 1;
        id
    };
    let mut global = Vec::new();
    for i in 0..100 {
        global.push(rule(
            next(),
            seg(i * 7),
            seg(i * 13 + 500),
            "any".into(),
            "deny",
        ));
    }
    for i in 0..100 {
        global.push(rule(next(), seg(i * 3), json!("any"), "any".into(), "pass"));
    }
    let mut apps = Vec::new();
    for i in 0..100 {
        apps.push(rule(
            next(),
            json!({"prefix": host(i * 11)}),
            json!("any"),
            "any".into(),
            "pass",
        ));
    }
    for i in 0..9600 {
        // Distinct (from, to, service) for every rule: the offset changes with each round of the segments.
        let round = i / SEGMENTS;
        apps.push(rule(
            next(),
            seg(i),
            seg(i * 7 + 3 + round * 101),
            svc(i + round),
            "allow",
        ));
    }
    let mut hosts = Vec::new();
    for i in 0..100 {
        hosts.push(rule(
            next(),
            json!({"prefix": host(i * 11)}),
            json!({"prefix": host(i * 5 + 3)}),
            svc(i),
            "allow",
        ));
    }
    json!({
        "format": "bulkhead.policy/v2",
        "segments": segments,
        "services": services,
        "tiers": [
            {"name": "global", "rules": global, "default": "pass"},
            {"name": "segments", "rules": apps, "default": "deny"},
            {"name": "hosts", "rules": hosts, "default": "pass"},
        ],
        "settings": {"default_action": "deny"},
    })
}

/// The same decisive rules, in the same order, as one v1 list (no pass rules, no tier defaults).
fn flat_v1(doc: &Value) -> Value {
    let rules: Vec<Value> = doc["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["rules"].as_array().unwrap().iter())
        .filter(|r| r["action"] != "pass")
        .cloned()
        .collect();
    json!({"format": "bulkhead.policy/v1", "segments": doc["segments"], "services": doc["services"],
           "rules": rules, "settings": doc["settings"]})
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn measure(doc: &Value, runs: usize) -> (Policy, Duration, Duration) {
    let mut load = Vec::new();
    let mut compile = Vec::new();
    let mut policy = None;
    for _ in 0..runs {
        let t = Instant::now();
        let p = Policy::from_value(doc.clone()).expect("valid");
        load.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(p.compile());
        compile.push(t.elapsed());
        policy = Some(p);
    }
    (policy.unwrap(), median(load), median(compile))
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map_or(5, |a| a.parse().expect("runs: a number"));
    let doc = tiered();
    println!("| policy | rules (pass) | tiers | validate | compile | flat rules IPv4 / IPv6 |");
    println!("|---|---|---|---|---|---|");
    for (name, doc) in [
        ("tiered (v2)", doc.clone()),
        ("same decisive rules, one list (v1)", flat_v1(&doc)),
    ] {
        let (p, load, compile) = measure(&doc, runs);
        let passes = p
            .rules()
            .iter()
            .filter(|r| r.action == policy::Action::Pass)
            .count();
        let deny_defaults = p
            .tiers()
            .iter()
            .filter(|t| t.default == TierDefault::Deny)
            .count();
        let c = p.compile();
        println!(
            "| {name} | {} ({passes}) | {} ({deny_defaults} default deny) | {:.1} ms | {:.1} ms | {} / {} |",
            p.rules().len(),
            p.tiers().len(),
            load.as_secs_f64() * 1e3,
            compile.as_secs_f64() * 1e3,
            c.stats().v4,
            c.stats().v6,
        );
    }
}
