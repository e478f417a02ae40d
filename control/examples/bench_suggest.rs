//! Rule suggestion and what-if over 1 000 000 conversation-buckets (`cargo xtask bench suggest` runs it in
//! release and reads the JSON line it prints): 40 segments of 50 hosts, a 25-rule policy, 100 000 distinct
//! conversations seen in 10 buckets each — a fifth of them whole segment pairs talking alike, the rest random
//! host pairs on 20 services.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use bulkhead_control::history::{Conversation, ConversationKey};
use bulkhead_control::suggest::{self, Grouping, Scope, SuggestOptions, Tuple, Window};
use bulkhead_pktgen::rng::SplitMix64;
use policy::{Decision, Policy};
use protocol::Verdict;
use serde_json::json;

const SEGMENTS: u8 = 40;
const HOSTS: u8 = 50;
const DISTINCT: usize = 100_000;
const BUCKETS: u64 = 10;
const PORTS: [u16; 20] = [
    22, 25, 53, 80, 123, 161, 389, 443, 502, 636, 1433, 1521, 3306, 3389, 5432, 5672, 6379, 8080,
    8443, 9200,
];
const HOUR_MS: u64 = 3_600_000;

fn host(segment: u8, n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, segment, 0, n + 1))
}

fn policy() -> Policy {
    let tiers = ["web", "app", "db", "ot"];
    let segments: Vec<_> = (0..SEGMENTS)
        .map(|i| {
            json!({"name": format!("seg{i:02}"), "prefixes": [format!("10.{i}.0.0/24")],
                   "labels": {"tier": tiers[usize::from(i) % 4]},
                   "mode": if i % 5 == 0 { "monitor" } else { "enforce" }})
        })
        .collect();
    let mut rules: Vec<_> = (0..SEGMENTS / 2)
        .map(|k| {
            json!({"id": 10 * (u32::from(k) + 1), "name": format!("web{k}"),
                   "from": {"segment": format!("seg{:02}", 2 * k)},
                   "to": {"segment": format!("seg{:02}", 2 * k + 1)}, "service": "https", "action": "allow"})
        })
        .collect();
    for k in 0..5u32 {
        rules.push(
            json!({"id": 1000 + k, "name": format!("no-ssh{k}"), "from": "any",
                          "to": {"segment": format!("seg{:02}", 7 * k + 3)}, "service": "ssh",
                          "action": "deny"}),
        );
    }
    Policy::from_value(json!({
        "format": "bulkhead.policy/v1",
        "segments": segments,
        "services": [
            {"name": "https", "protocol": "tcp", "ports": ["443"]},
            {"name": "ssh", "protocol": "tcp", "ports": ["22"]},
            {"name": "dns", "protocol": "udp", "ports": ["53"]}
        ],
        "rules": rules,
    }))
    .expect("the bench policy is valid")
}

/// The distinct tuples: whole segment pairs on postgres first, then random host pairs.
fn tuples() -> Vec<Tuple> {
    let mut out = Vec::with_capacity(DISTINCT);
    let mut seen = HashSet::new();
    let mut add = |t: Tuple, out: &mut Vec<Tuple>| {
        if seen.insert(t) {
            out.push(t);
        }
    };
    for pair in 0..8u8 {
        let (a, b) = (pair * 4 + 1, pair * 4 + 2);
        for i in 0..HOSTS {
            for j in 0..HOSTS {
                let t = Tuple {
                    src: host(a, i),
                    dst: host(b, j),
                    vlan: 0,
                    proto: 6,
                    service: 5432,
                };
                add(t, &mut out);
            }
        }
    }
    let mut rng = SplitMix64::new(14);
    while out.len() < DISTINCT {
        let (a, b) = (
            rng.below(SEGMENTS.into()) as u8,
            rng.below(SEGMENTS.into()) as u8,
        );
        if a == b {
            continue;
        }
        let port = *rng.choose(&PORTS);
        let t = Tuple {
            src: host(a, rng.below(HOSTS.into()) as u8),
            dst: host(b, rng.below(HOSTS.into()) as u8),
            vlan: 0,
            proto: if port == 53 || port == 123 || port == 161 {
                17
            } else {
                6
            },
            service: port,
        };
        add(t, &mut out);
    }
    out
}

/// Each tuple in `BUCKETS` hourly buckets, judged as `active` judges it.
fn conversations(active: &Policy, tuples: &[Tuple]) -> Vec<Conversation> {
    let mut out = Vec::with_capacity(tuples.len() * BUCKETS as usize);
    for t in tuples {
        let d = active.evaluate(&t.flow());
        let verdict = if d.would_deny() {
            Verdict::WouldDeny
        } else if d.passes() {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
        let rule_id = match d {
            Decision::Rule { id, .. } => id,
            Decision::Default { .. } | Decision::TierDefault { .. } => 0,
        };
        for b in 0..BUCKETS {
            let bucket = b * 24 * HOUR_MS;
            out.push(Conversation {
                key: ConversationKey {
                    src: t.src,
                    dst: t.dst,
                    proto: t.proto,
                    service: t.service,
                    vlan: t.vlan,
                    verdict,
                    rule_id,
                    policy_version: 1,
                    gateway: None,
                    tier: None,
                },
                bucket_unix_ms: bucket,
                first_unix_ms: bucket + 1_000,
                last_unix_ms: bucket + 2_000,
                flows: 3,
                packets: [30, 20],
                bytes: [3_000, 20_000],
            });
        }
    }
    out
}

fn main() {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .map_or(3, |n| n.parse().expect("--runs N"));
    let active = policy();
    let conversations = conversations(&active, &tuples());
    // The draft drops the first four allow rules: what-if has something to report.
    let mut doc = active.document().clone();
    doc.rules.retain(|r| r.id > 40);
    let draft = Policy::new(doc).expect("valid draft");
    let options = SuggestOptions {
        scope: Scope::All,
        grouping: Grouping::Segments,
        include_denied: true,
        window: Window {
            from_unix_ms: 0,
            to_unix_ms: BUCKETS * 24 * HOUR_MS,
        },
        now_unix_ms: BUCKETS * 24 * HOUR_MS,
    };
    let (mut suggest_s, mut what_if_s) = (Vec::new(), Vec::new());
    let (mut rules, mut cut) = (0, 0);
    for _ in 0..runs {
        let t = Instant::now();
        let s = suggest::suggest(&conversations, &draft, &options).expect("a suggestion");
        suggest_s.push(t.elapsed().as_secs_f64());
        rules = s.rules.len();
        let t = Instant::now();
        let w = suggest::what_if(&conversations, &draft, 100);
        what_if_s.push(t.elapsed().as_secs_f64());
        cut = w.newly_denied.conversations;
    }
    println!(
        "{}",
        json!({"conversations": conversations.len(), "distinct": DISTINCT, "suggested_rules": rules,
               "newly_denied": cut, "suggest_s": suggest_s, "what_if_s": what_if_s})
    );
}
