//! The engines against traffic generated from a known policy (pktgen's policy traffic), and hand-made cases.

use std::collections::{BTreeSet, HashMap};

use bulkhead_pktgen::policy_traffic::{generate, PolicyTrafficConfig};
use policy::{Decision, Policy, Selector};
use protocol::Verdict;
use serde_json::json;

use super::*;
use crate::history::{Conversation, ConversationKey};

/// The known policy: segments with labels, services of every kind, allow and deny rules, default deny.
fn known() -> Policy {
    Policy::from_value(json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "eng", "prefixes": ["10.1.0.0/29", "fd00:1::/125"], "labels": {"zone": "it"}},
            {"name": "ot", "prefixes": ["10.2.0.0/30"], "labels": {"zone": "ot"}},
            {"name": "db", "prefixes": ["10.3.0.0/31"], "vlans": [30]}
        ],
        "services": [
            {"name": "modbus", "protocol": "tcp", "ports": ["502"]},
            {"name": "dns", "protocol": "udp", "ports": ["53"]},
            {"name": "pg", "protocol": "tcp", "ports": ["5432-5433"]},
            {"name": "ping", "protocol": "icmp", "icmp_type": 8},
            {"name": "gre", "protocol": 47}
        ],
        "rules": [
            {"id": 10, "name": "eng-ot", "from": {"segment": "eng"}, "to": {"labels": {"zone": "ot"}},
             "service": "modbus", "action": "allow"},
            {"id": 20, "name": "no-ping-ot", "from": "any", "to": {"segment": "ot"}, "service": "ping",
             "action": "deny"},
            {"id": 30, "name": "eng-db", "from": {"segment": "eng"}, "to": {"segment": "db"}, "service": "pg",
             "action": "allow"},
            {"id": 40, "name": "dns", "from": "any", "to": {"prefix": "10.9.0.53/32"}, "service": "dns",
             "action": "allow"},
            {"id": 50, "name": "ping-any", "from": {"prefix": "10.0.0.0/8"}, "to": "any", "service": "ping",
             "action": "allow"},
            {"id": 60, "name": "gre", "from": {"segment": "ot"}, "to": {"segment": "eng"}, "service": "gre",
             "action": "allow"}
        ]
    }))
    .unwrap()
}

fn verdict_of(d: &Decision) -> Verdict {
    whatif::verdict(d)
}

fn rule_id_of(d: &Decision) -> u32 {
    whatif::rule_id(d)
}

/// Generated traffic as conversations: one per flow, its verdict and rule the policy's, its time its index.
fn observed(policy: &Policy) -> Vec<Conversation> {
    let cfg = PolicyTrafficConfig {
        per_case: 8,
        packets: 1,
        frame_sizes: vec![128],
        seed: 7,
    };
    generate(policy, &cfg)
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let f = l.conv.policy_flow();
            let service = match f.proto {
                1 | 58 => (f.sport << 8) | f.dport,
                _ => f.dport,
            };
            let t = 1_000_000 + i as u64;
            Conversation {
                key: ConversationKey {
                    src: f.src,
                    dst: f.dst,
                    proto: f.proto,
                    service,
                    vlan: f.vlan.unwrap_or(0),
                    verdict: verdict_of(&l.decision),
                    rule_id: rule_id_of(&l.decision),
                    policy_version: 1,
                    gateway: None,
                    tier: None,
                },
                bucket_unix_ms: t - t % 3_600_000,
                first_unix_ms: t,
                last_unix_ms: t,
                flows: 1,
                packets: [1, 0],
                bytes: [128, 0],
            }
        })
        .collect()
}

/// `known()` without its allow rules: what the suggestion starts from.
fn without_allows(p: &Policy) -> Policy {
    let mut doc = p.document().clone();
    doc.rules.retain(|r| r.action != policy::Action::Allow);
    Policy::new(doc).unwrap()
}

fn options(grouping: Grouping) -> SuggestOptions {
    SuggestOptions {
        scope: Scope::All,
        grouping,
        include_denied: false,
        window: Window {
            from_unix_ms: 0,
            to_unix_ms: 2_000_000,
        },
        now_unix_ms: 2_000_000,
    }
}

fn applied(draft: &Policy, s: &Suggestion) -> Policy {
    Policy::new(with_suggestion(
        draft.document(),
        &s.services,
        s.rules.iter().map(|r| r.rule.clone()),
    ))
    .unwrap()
}

#[test]
fn suggested_back_allows_exactly_what_was_observed_allowed() {
    let known = known();
    let conversations = observed(&known);
    let allowed: Vec<&Conversation> = conversations
        .iter()
        .filter(|c| c.key.verdict == Verdict::Allow)
        .collect();
    assert!(allowed.len() > 20 && allowed.len() < conversations.len());
    let draft = without_allows(&known);
    for grouping in [Grouping::Hosts, Grouping::Segments, Grouping::Labels] {
        let s = suggest(&conversations, &draft, &options(grouping)).unwrap();
        let after = applied(&draft, &s);
        for c in &conversations {
            let t = Tuple::of(&c.key);
            let now = verdict_of(&after.evaluate(&t.flow()));
            if grouping == Grouping::Hosts {
                // Exactly what was seen: every allowed flow, nothing else that was generated.
                assert_eq!(
                    now == Verdict::Allow,
                    c.key.verdict == Verdict::Allow,
                    "{grouping:?} {t:?}"
                );
            } else if c.key.verdict == Verdict::Allow {
                assert_eq!(now, Verdict::Allow, "{grouping:?} {t:?}");
            }
        }
        assert_eq!(s.coverage_after.conversation_share, 1.0, "{grouping:?}");
        // Coverage equals a full evaluation of every observed tuple under the draft plus the suggestion.
        let mut by_tuple: HashMap<Tuple, u64> = HashMap::new();
        for c in conversations
            .iter()
            .filter(|c| c.key.verdict != Verdict::Deny)
        {
            *by_tuple.entry(Tuple::of(&c.key)).or_default() += c.flows;
        }
        let allowed_now: Vec<u64> = by_tuple
            .iter()
            .filter(|(t, _)| verdict_of(&after.evaluate(&t.flow())) == Verdict::Allow)
            .map(|(_, f)| *f)
            .collect();
        assert_eq!(
            (
                s.coverage_after.conversations,
                s.coverage_after.conversations_allowed
            ),
            (by_tuple.len() as u64, allowed_now.len() as u64),
            "{grouping:?}"
        );
        assert_eq!(
            s.coverage_after.flows_allowed,
            allowed_now.iter().sum::<u64>()
        );
        assert!(s.coverage_before.conversations_allowed < s.coverage_before.conversations);
        // Provenance counts: every allowed tuple is covered by exactly one rule, and the flows add up.
        let distinct: BTreeSet<Tuple> = allowed.iter().map(|c| Tuple::of(&c.key)).collect();
        let covered: u64 = s
            .rules
            .iter()
            .map(|r| r.rule.provenance.as_ref().unwrap().conversations.unwrap())
            .sum();
        let flows: u64 = s
            .rules
            .iter()
            .map(|r| r.rule.provenance.as_ref().unwrap().flows.unwrap())
            .sum();
        assert_eq!(covered, distinct.len() as u64, "{grouping:?}");
        assert_eq!(flows, allowed.len() as u64, "{grouping:?}");
        for r in &s.rules {
            assert_eq!(
                r.conversations,
                r.rule.provenance.as_ref().unwrap().conversations.unwrap()
            );
            assert!(r.rule.id > 20, "above the draft's highest id");
            assert!(r
                .rule
                .description
                .as_ref()
                .unwrap()
                .starts_with("Suggested from traffic seen"));
        }
        // Deterministic.
        assert_eq!(
            s,
            suggest(&conversations, &draft, &options(grouping)).unwrap()
        );
    }
}

#[test]
fn hosts_grouping_reuses_exact_services_and_names_new_ones() {
    let known = known();
    let conversations = observed(&known);
    let draft = without_allows(&known);
    let s = suggest(&conversations, &draft, &options(Grouping::Hosts)).unwrap();
    let used: BTreeSet<&str> = s.rules.iter().map(|r| r.rule.service.as_str()).collect();
    // modbus and dns match the observed ports exactly; pg is a range, so 5432 and 5433 get their own.
    assert!(
        used.contains("modbus") && used.contains("dns") && used.contains("gre"),
        "{used:?}"
    );
    let new: BTreeSet<&str> = s.services.iter().map(|s| s.name.as_str()).collect();
    assert!(
        new.iter()
            .all(|n| n.starts_with("tcp-543") || n.starts_with("icmp")),
        "{new:?}"
    );
    for r in &s.rules {
        assert!(matches!(r.rule.from, Selector::Prefix(n) if n.prefix_len() == n.max_prefix_len()));
        assert!(matches!(r.rule.to, Selector::Prefix(n) if n.prefix_len() == n.max_prefix_len()));
    }
}

fn conv(src: &str, dst: &str, port: u16, flows: u64) -> Conversation {
    Conversation {
        key: ConversationKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: 6,
            service: port,
            vlan: 0,
            verdict: Verdict::WouldDeny,
            rule_id: 0,
            policy_version: 1,
            gateway: None,
            tier: None,
        },
        bucket_unix_ms: 0,
        first_unix_ms: 10,
        last_unix_ms: 20,
        flows,
        packets: [0; 2],
        bytes: [0; 2],
    }
}

#[test]
fn segments_only_where_every_host_behaves_alike() {
    let draft = Policy::from_value(json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "app", "prefixes": ["10.0.1.0/24"], "mode": "monitor"},
            {"name": "db", "prefixes": ["10.0.2.0/24"]}
        ]
    }))
    .unwrap();
    let conversations = vec![
        // Both app hosts reach both databases on 5432: alike.
        conv("10.0.1.1", "10.0.2.1", 5432, 3),
        conv("10.0.1.2", "10.0.2.1", 5432, 1),
        conv("10.0.1.1", "10.0.2.2", 5432, 1),
        conv("10.0.1.2", "10.0.2.2", 5432, 1),
        // Only one app host uses ssh on one database: a host rule.
        conv("10.0.1.1", "10.0.2.1", 22, 2),
        conv("10.0.1.1", "10.0.2.1", 22, 1),
    ];
    let s = suggest(&conversations, &draft, &options(Grouping::Segments)).unwrap();
    let rules: Vec<(String, String, String, u64, u64)> = s
        .rules
        .iter()
        .map(|r| {
            let p = r.rule.provenance.as_ref().unwrap();
            (
                serde_json::to_string(&r.rule.from).unwrap(),
                serde_json::to_string(&r.rule.to).unwrap(),
                r.rule.service.clone(),
                p.conversations.unwrap(),
                p.flows.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        vec![
            (
                r#"{"prefix":"10.0.1.1/32"}"#.into(),
                r#"{"prefix":"10.0.2.1/32"}"#.into(),
                "tcp-22".into(),
                1,
                3
            ),
            (
                r#"{"segment":"app"}"#.into(),
                r#"{"segment":"db"}"#.into(),
                "tcp-5432".into(),
                4,
                6
            ),
        ]
    );
    assert_eq!(s.rules[0].rule.id, 1);
    assert_eq!(s.rules[1].rule.id, 2);
    assert_eq!(s.coverage_after.flows_allowed, 9);
    // A scope naming an unknown segment is an error, not an empty suggestion.
    let mut other = options(Grouping::Segments);
    other.scope = Scope::Segments(vec!["nope".into()]);
    assert!(matches!(
        suggest(&conversations, &draft, &other),
        Err(SuggestError::UnknownSegment(_))
    ));
}

#[test]
fn what_if_a_removed_rule_reports_exactly_what_it_allowed() {
    let known = known();
    let conversations = observed(&known);
    for removed in [10, 30, 40, 50, 60] {
        let mut doc = known.document().clone();
        doc.rules.retain(|r| r.id != removed);
        let draft = Policy::new(doc).unwrap();
        let w = what_if(&conversations, &draft, usize::MAX);
        let expected: HashMap<Tuple, u64> = conversations
            .iter()
            .filter(|c| c.key.rule_id == removed && c.key.verdict == Verdict::Allow)
            .fold(HashMap::new(), |mut m, c| {
                *m.entry(Tuple::of(&c.key)).or_default() += c.flows;
                m
            });
        assert!(!expected.is_empty(), "rule {removed}");
        let got: HashMap<Tuple, u64> = w
            .newly_denied
            .list
            .iter()
            .map(|c| (c.tuple, c.seen.flows))
            .collect();
        assert_eq!(got, expected, "rule {removed}");
        assert_eq!(w.newly_denied.conversations, expected.len() as u64);
        assert!(w
            .newly_denied
            .by_rule
            .iter()
            .all(|r| r.observed_rule_id == removed));
        assert_eq!(w.newly_allowed.conversations, 0, "rule {removed}");
        assert!(!w.newly_denied.truncated);
    }
    // The active policy itself changes nothing; a bounded list says it was cut.
    let w = what_if(&conversations, &known, 3);
    assert_eq!(
        (w.newly_denied.conversations, w.newly_allowed.conversations),
        (0, 0)
    );
    let w = what_if(&conversations, &without_allows(&known), 3);
    assert_eq!(w.newly_denied.list.len(), 3);
    assert!(w.newly_denied.truncated);
    assert!(w.newly_denied.conversations > 3);
}

#[test]
fn what_if_reports_what_a_draft_newly_allows() {
    let known = known();
    let mut conversations = observed(&known);
    // As the history keeps them under a tiered policy: the tier that decided each (`main` for rule 20's).
    for c in conversations.iter_mut().filter(|c| c.key.rule_id == 20) {
        c.key.tier = Some("main".into());
    }
    let mut doc = known.document().clone();
    doc.rules.retain(|r| r.id != 20);
    let draft = Policy::new(doc).unwrap();
    let w = what_if(&conversations, &draft, usize::MAX);
    assert!(w.newly_allowed.conversations > 0);
    assert!(w.newly_allowed.list.iter().all(|c| c.observed_rule_id == 20
        && c.observed_tier.as_deref() == Some("main")
        && c.draft == Verdict::Allow));
    let json = serde_json::to_value(&w.newly_allowed.list[0]).unwrap();
    assert_eq!(json["observed_tier"], "main", "{json}");
    assert_eq!(w.newly_denied.conversations, 0);
}

fn event(
    kind: protocol::EventKind,
    time: &str,
    proto: u8,
    sport: u16,
    dport: u16,
) -> protocol::FlowEvent {
    protocol::FlowEvent {
        kind,
        time_ms: 0,
        time: time.into(),
        worker: 0,
        src: "10.0.0.1".parse().unwrap(),
        dst: "10.0.0.2".parse().unwrap(),
        sport,
        dport,
        proto,
        vlan: 0,
        src_segments: vec![],
        dst_segments: vec![],
        verdict: Verdict::Allow,
        rule_id: 1,
        tier: None,
        policy_version: 1,
        packets: [2, 1],
        bytes: [200, 100],
        duration_ms: 0,
        tcp_state: None,
        tcp_flags: None,
        limit: None,
    }
}

#[test]
fn flow_events_aggregate_into_conversations_per_bucket() {
    use protocol::EventKind::{Closed, Denied, New};
    let window = Window {
        from_unix_ms: 0,
        to_unix_ms: 7_200_000,
    };
    let events = vec![
        event(New, "1970-01-01T00:00:01Z", 6, 40000, 443),
        event(Closed, "1970-01-01T00:00:05Z", 6, 40000, 443),
        event(New, "1970-01-01T00:10:00Z", 6, 40001, 443),
        // The next hour: another bucket.
        event(New, "1970-01-01T01:00:00Z", 6, 40002, 443),
        // Tracked echo: the identifier in both ports; a denied ICMP message: type and code.
        event(New, "1970-01-01T00:00:02Z", 1, 77, 77),
        event(Denied, "1970-01-01T00:00:03Z", 1, 13, 0),
        // Outside the window, and without a readable time.
        event(New, "1970-01-01T02:00:00Z", 6, 40003, 443),
        event(New, "yesterday", 6, 40004, 443),
    ];
    let (got, read) = source::aggregate(events, window);
    assert_eq!(read.unreadable, 1, "the event without a readable time");
    let summary: Vec<(u16, u64, u64, u64, u64, [u64; 2])> = got
        .iter()
        .map(|c| {
            (
                c.key.service,
                c.bucket_unix_ms,
                c.first_unix_ms,
                c.last_unix_ms,
                c.flows,
                c.packets,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (443, 0, 1_000, 600_000, 2, [2, 1]),
            (443, 3_600_000, 3_600_000, 3_600_000, 1, [0, 0]),
            (8 << 8, 0, 2_000, 2_000, 1, [0, 0]),
            (13 << 8, 0, 3_000, 3_000, 1, [0, 0]),
        ]
    );
    assert_eq!(Tuple::of(&got[2].key).flow().sport, 8, "echo request type");
}

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bh-suggest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const EVERYTHING: Window = Window {
    from_unix_ms: 0,
    to_unix_ms: i64::MAX as u64,
};

#[test]
fn the_history_source_reports_the_rows_it_could_not_read() {
    use crate::history::{History, HistoryConfig};
    let d = temp_dir("history-unreadable");
    let history = History::open(HistoryConfig::default(), &d).unwrap();
    let new = protocol::EventKind::New;
    // Not in the epoch's first bucket: retention drops buckets at or before the newest one less 30 days (here 0).
    assert!(history.offer(
        "plant-a",
        &[event(new, "1970-01-02T00:00:01Z", 6, 40000, 443)]
    ));
    history.flush().unwrap();
    // Damaged rows beside it, written straight into the file: a 5-byte source address, an unknown verdict code.
    let db = rusqlite::Connection::open(history.file()).unwrap();
    for (src, verdict) in [(vec![10u8, 0, 0, 3, 9], 0), (vec![10, 0, 0, 4], 9)] {
        db.execute(
            "INSERT INTO conversations VALUES (86400, ?1, ?2, 6, 443, 0, ?3, 1, 1, 0, 0, 1, 1, 1, 60, 60, 0, 0)",
            rusqlite::params![src, vec![10u8, 0, 0, 2], verdict],
        )
        .unwrap();
    }
    drop(db);

    let (conversations, read) = HistorySource(history.clone())
        .conversations(EVERYTHING)
        .unwrap();
    assert_eq!(conversations.len(), 1);
    assert_eq!(
        conversations[0].key.src,
        "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(read.unreadable, 2);
    assert_eq!(history.unreadable_rows(), 2, "counted in the metric too");
    drop(history);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_ring_source_counts_the_events_it_could_not_read() {
    use crate::flowlog::{FlowLog, FlowLogConfig};
    use protocol::EventKind::New;
    let d = temp_dir("ring-unreadable");
    let line = |seq: u64, e: &protocol::FlowEvent| {
        let mut v = serde_json::to_value(e).unwrap();
        v["seq"] = json!(seq);
        v.to_string()
    };
    // A flow-log file loaded into memory at start: a good event, a line that is no event, an event whose time
    // cannot be read.
    let lines = [
        line(1, &event(New, "1970-01-01T00:00:01Z", 6, 40000, 443)),
        json!({"seq": 2, "kind": "new", "src": "10.0.0.300"}).to_string(),
        line(3, &event(New, "yesterday", 6, 40001, 443)),
    ];
    let path = d.join("flows.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let flowlog = FlowLog::new(FlowLogConfig {
        path,
        ..FlowLogConfig::default()
    })
    .unwrap();
    flowlog.ingest(
        "plant-a",
        vec![event(New, "1970-01-01T00:00:02Z", 6, 40002, 22)],
    );

    let (conversations, read) = RingSource(flowlog.clone())
        .conversations(EVERYTHING)
        .unwrap();
    let services: Vec<u16> = conversations.iter().map(|c| c.key.service).collect();
    assert_eq!(services, [443, 22]);
    assert_eq!(read.unreadable, 2);
    assert_eq!(flowlog.unreadable(), 2, "counted in the metric too");
    // Every read counts what it skipped, whatever its window: their times are unknown.
    let (conversations, read) = RingSource(flowlog.clone())
        .conversations(Window {
            from_unix_ms: 3_600_000,
            to_unix_ms: 7_200_000,
        })
        .unwrap();
    assert_eq!((conversations.len(), read.unreadable), (0, 2));
    assert_eq!(flowlog.unreadable(), 4);
    let _ = std::fs::remove_dir_all(&d);
}

mod properties {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    const SERVICES: [(u8, u16); 6] = [(6, 22), (6, 80), (6, 443), (17, 53), (1, 8 << 8), (47, 0)];

    fn addr(i: u8) -> std::net::IpAddr {
        // Hosts 0..24 in three segments of eight; 24.. outside every segment.
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, i / 8, i % 8))
    }

    fn selector(k: u8, n: u8) -> Value {
        match k % 4 {
            0 => json!("any"),
            1 => json!({"segment": format!("s{}", n % 3)}),
            2 => json!({"labels": {"tier": if n.is_multiple_of(2) { "a" } else { "b" }}}),
            _ => json!({"prefix": format!("{}/32", addr(n % 26))}),
        }
    }

    /// A policy over three segments (the first in monitor mode) with these rules: (from, to, service, allow).
    fn policy_of(rules: &[(u8, u8, u8, u8, u8, bool)]) -> Policy {
        let rules: Vec<Value> = rules
            .iter()
            .enumerate()
            .map(|(i, &(fk, fnn, tk, tn, svc, allow))| {
                let service = ["ssh", "http", "https", "dns", "ping", "any"][usize::from(svc % 6)];
                json!({"id": i + 1, "name": format!("r{i}"), "from": selector(fk, fnn), "to": selector(tk, tn),
                       "service": service,
                       "action": if allow { "allow" } else { "deny" }})
            })
            .collect();
        Policy::from_value(json!({
            "format": "bulkhead.policy/v1",
            "segments": [
                {"name": "s0", "prefixes": ["10.0.0.0/29"], "labels": {"tier": "a"}, "mode": "monitor"},
                {"name": "s1", "prefixes": ["10.0.1.0/29"], "labels": {"tier": "a"}},
                {"name": "s2", "prefixes": ["10.0.2.0/29"], "labels": {"tier": "b"}}
            ],
            "services": [
                {"name": "ssh", "protocol": "tcp", "ports": ["22"]},
                {"name": "http", "protocol": "tcp", "ports": ["80"]},
                {"name": "https", "protocol": "tcp", "ports": ["443"]},
                {"name": "dns", "protocol": "udp", "ports": ["53"]},
                {"name": "ping", "protocol": "icmp", "icmp_type": 8}
            ],
            "rules": rules
        }))
        .unwrap()
    }

    fn tuple(src: u8, dst: u8, svc: u8) -> Tuple {
        let (proto, service) = SERVICES[usize::from(svc) % SERVICES.len()];
        Tuple {
            src: addr(src % 26),
            dst: addr(dst % 26),
            vlan: 0,
            proto,
            service,
        }
    }

    fn conversation(active: &Policy, t: Tuple, flows: u64) -> Conversation {
        let d = active.evaluate(&t.flow());
        Conversation {
            key: ConversationKey {
                src: t.src,
                dst: t.dst,
                proto: t.proto,
                service: t.service,
                vlan: 0,
                verdict: verdict_of(&d),
                rule_id: rule_id_of(&d),
                policy_version: 1,
                gateway: None,
                tier: None,
            },
            bucket_unix_ms: 0,
            first_unix_ms: flows,
            last_unix_ms: flows + 5,
            flows,
            packets: [0; 2],
            bytes: [0; 2],
        }
    }

    fn rule() -> impl Strategy<Value = (u8, u8, u8, u8, u8, bool)> {
        (
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<bool>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Host grouping adds exactly the observed tuples the draft left to its default; every other flow keeps
        /// its draft verdict, and the coverage is that of a full evaluation.
        #[test]
        fn suggestion_is_exact_and_coverage_true(
            active in prop::collection::vec(rule(), 0..6),
            draft in prop::collection::vec(rule(), 0..6),
            seen in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), 1..5u64), 1..40),
            grouping in prop::sample::select(vec![Grouping::Hosts, Grouping::Segments, Grouping::Labels]),
        ) {
            let (active, draft) = (policy_of(&active), policy_of(&draft));
            let conversations: Vec<Conversation> = seen
                .iter()
                .map(|&(s, d, svc, flows)| conversation(&active, tuple(s, d, svc), flows))
                .collect();
            let s = suggest(&conversations, &draft, &options(grouping)).unwrap();
            let after = applied(&draft, &s);
            let wanted: HashMap<Tuple, u64> = conversations
                .iter()
                .filter(|c| c.key.verdict != Verdict::Deny)
                .fold(HashMap::new(), |mut m, c| {
                    *m.entry(Tuple::of(&c.key)).or_default() += c.flows;
                    m
                });
            let mut allowed = (0, 0);
            for (t, flows) in &wanted {
                let before = draft.evaluate(&t.flow());
                let now = after.evaluate(&t.flow());
                if matches!(before, Decision::Default { .. }) {
                    prop_assert_eq!(verdict_of(&now), Verdict::Allow, "{:?}", t);
                } else {
                    prop_assert_eq!(now, before, "{:?}", t);
                }
                if verdict_of(&now) == Verdict::Allow {
                    allowed.0 += 1;
                    allowed.1 += flows;
                }
            }
            prop_assert_eq!(
                (s.coverage_after.conversations_allowed, s.coverage_after.flows_allowed),
                allowed
            );
            if grouping == Grouping::Hosts {
                // Never wider than what was seen: every possible tuple not observed keeps its verdict.
                for src in 0..26 {
                    for dst in 0..26 {
                        for svc in 0..SERVICES.len() as u8 {
                            let t = tuple(src, dst, svc);
                            if !wanted.contains_key(&t) {
                                prop_assert_eq!(
                                    after.evaluate(&t.flow()),
                                    draft.evaluate(&t.flow()),
                                    "{:?}",
                                    t
                                );
                            }
                        }
                    }
                }
            }
        }

        /// What-if lists exactly the observed tuples whose verdict class changes, with their flows.
        #[test]
        fn what_if_matches_a_direct_replay(
            active in prop::collection::vec(rule(), 0..6),
            draft in prop::collection::vec(rule(), 0..6),
            seen in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), 1..5u64), 1..40),
        ) {
            let (active, draft) = (policy_of(&active), policy_of(&draft));
            let conversations: Vec<Conversation> = seen
                .iter()
                .map(|&(s, d, svc, flows)| conversation(&active, tuple(s, d, svc), flows))
                .collect();
            let w = what_if(&conversations, &draft, usize::MAX);
            let (mut denied, mut allowed): (HashMap<Tuple, u64>, HashMap<Tuple, u64>) = Default::default();
            for c in &conversations {
                let t = Tuple::of(&c.key);
                let now = verdict_of(&draft.evaluate(&t.flow()));
                match (c.key.verdict == Verdict::Allow, now == Verdict::Allow) {
                    (true, false) => *denied.entry(t).or_default() += c.flows,
                    (false, true) => *allowed.entry(t).or_default() += c.flows,
                    _ => {}
                }
            }
            let listed = |set: &whatif::ChangeSet| -> HashMap<Tuple, u64> {
                set.list.iter().map(|c| (c.tuple, c.seen.flows)).collect()
            };
            prop_assert_eq!(listed(&w.newly_denied), denied);
            prop_assert_eq!(listed(&w.newly_allowed), allowed);
        }
    }
}
