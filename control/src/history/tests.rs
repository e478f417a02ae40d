//! The store over 30 (and more) simulated days: events carry their own times, so nothing waits.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;

use policy::Policy;
use serde_json::json;

use super::query::{map_counts, Counts, Drill, Group, Segments};
use super::*;
use crate::time::{from_unix_ms, rfc3339};
use protocol::EventKind;

/// 2026-10-01T00:00:00Z.
const T0_MS: u64 = 1_790_812_800_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bh-history-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config() -> HistoryConfig {
    HistoryConfig {
        flush_keys: 1_000_000,
        flush_ms: 60_000,
        ..HistoryConfig::default()
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn event(
    kind: EventKind,
    at_ms: u64,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    dport: u16,
    verdict: Verdict,
    rule_id: u32,
    packets: [u64; 2],
) -> FlowEvent {
    serde_json::from_value(json!({
        "kind": kind.as_str(), "time": rfc3339(from_unix_ms(at_ms)), "time_ms": 0, "worker": 0, "vlan": 0,
        "src": src, "dst": dst, "sport": 40000, "dport": dport, "proto": proto,
        "verdict": verdict.as_str(), "rule_id": rule_id, "policy_version": 3, "duration_ms": 0,
        "tcp_state": null, "packets": packets, "bytes": [packets[0] * 100, packets[1] * 60],
        "src_segments": [], "dst_segments": [],
    }))
    .unwrap()
}

/// A small deterministic generator (xorshift), so every run sees the same traffic.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Hosts of segment `a` (10.1.0.0/24), `b` (10.2.0.0/24 and fd00:2::/64), and outside every segment
/// (192.168.7.0/24, 192.168.8.5, fd00:9::/64).
const HOSTS: &[&str] = &[
    "10.1.0.1",
    "10.1.0.2",
    "10.1.0.3",
    "10.2.0.1",
    "10.2.0.2",
    "fd00:2::1",
    "192.168.7.10",
    "192.168.7.11",
    "192.168.8.5",
    "fd00:9::5",
];

fn policy() -> Policy {
    Policy::from_value(json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "a", "prefixes": ["10.1.0.0/24"]},
            {"name": "b", "prefixes": ["10.2.0.0/24", "fd00:2::/64"]}
        ],
        "rules": [{"id": 5, "name": "a-b", "from": {"segment": "a"}, "to": {"segment": "b"},
                   "service": "any", "action": "allow"}]
    }))
    .unwrap()
}

/// `days` of traffic from T0: every hour a few flows between random hosts of one family, each a `new` (allow
/// or would-deny) then a `closed` event, or a `denied` one.
fn generate(days: u64, per_hour: u64) -> Vec<FlowEvent> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    for hour in 0..days * 24 {
        for i in 0..per_hour {
            let at = T0_MS + hour * HOUR_MS + rng.next(HOUR_MS - 10_000);
            let src = addr(HOSTS[rng.next(HOSTS.len() as u64) as usize]);
            let dst = loop {
                let d = addr(HOSTS[rng.next(HOSTS.len() as u64) as usize]);
                if d.is_ipv4() == src.is_ipv4() && d != src {
                    break d;
                }
            };
            let (proto, port) = [(6, 443), (17, 53), (6, 22), (1, 0)][rng.next(4) as usize];
            let packets = [1 + rng.next(50), rng.next(50)];
            match rng.next(3) {
                0 => out.push(event(
                    EventKind::Denied,
                    at,
                    src,
                    dst,
                    proto,
                    port,
                    Verdict::Deny,
                    0,
                    [1, 0],
                )),
                k => {
                    let verdict = if k == 1 {
                        Verdict::Allow
                    } else {
                        Verdict::WouldDeny
                    };
                    let rule = if k == 1 { 5 } else { 0 };
                    out.push(event(
                        EventKind::New,
                        at,
                        src,
                        dst,
                        proto,
                        port,
                        verdict,
                        rule,
                        [0; 2],
                    ));
                    // Closed a little later: sometimes in the next bucket.
                    let closed = at + 1000 + (i % 3) * 5000;
                    out.push(event(
                        EventKind::Closed,
                        closed,
                        src,
                        dst,
                        proto,
                        port,
                        verdict,
                        rule,
                        packets,
                    ));
                }
            }
        }
    }
    out
}

/// Flows, packets and bytes of one conversation-bucket.
type Totals = (u64, [u64; 2], [u64; 2]);

fn ingest(history: &History, events: &[FlowEvent]) {
    for batch in events.chunks(500) {
        assert!(history.offer("plant-a", batch));
        // Keep the queue from filling: this test is about what is stored, not about drops.
        history.flush().unwrap();
    }
}

/// A history in a fresh directory, with `days` of generated traffic in it (and that traffic).
fn filled(
    name: &str,
    days: u64,
    per_hour: u64,
) -> (PathBuf, std::sync::Arc<History>, Vec<FlowEvent>) {
    let d = dir(name);
    let events = generate(days, per_hour);
    let history = History::open(config(), &d).unwrap();
    ingest(&history, &events);
    (d, history, events)
}

/// The buckets retention keeps: those starting less than the retention before the newest (as [`ingest`] offers
/// them, from `plant-a`).
fn kept(events: &[FlowEvent], c: &HistoryConfig) -> Vec<Record> {
    let gateway: std::sync::Arc<str> = "plant-a".into();
    let records: Vec<Record> = events
        .iter()
        .map(|e| {
            let mut r = Record::of(e, c.bucket_s).unwrap();
            r.key.gateway = Some(gateway.clone());
            r
        })
        .collect();
    let newest = records.iter().map(|r| r.bucket_unix_ms).max().unwrap();
    records
        .into_iter()
        .filter(|r| r.bucket_unix_ms + c.retention_ms() > newest)
        .collect()
}

#[test]
fn retention_drops_exactly_the_expired_buckets_and_a_restart_keeps_the_rest() {
    let c = config();
    let (d, history, events) = filled("retention", 35, 6);
    let expected = kept(&events, &c);
    let newest = expected.iter().map(|r| r.bucket_unix_ms).max().unwrap();
    assert!(newest >= T0_MS + 35 * DAY_MS - HOUR_MS);
    // Exactly 30 days of hourly buckets are left, the newest one included.
    assert_eq!(
        history.extent().unwrap(),
        Some((newest - 30 * DAY_MS + HOUR_MS, newest))
    );
    let direct = |records: &[Record]| {
        let mut by: BTreeMap<(u64, String), Totals> = BTreeMap::new();
        for r in records {
            let e = by
                .entry((r.bucket_unix_ms, format!("{:?}", r.key)))
                .or_default();
            e.0 += r.flows;
            for i in 0..2 {
                e.1[i] += r.packets[i];
                e.2[i] += r.bytes[i];
            }
        }
        by
    };
    let stored = |h: &History| {
        let mut by = BTreeMap::new();
        for c in h
            .conversations(
                Window::all(),
                &ConversationFilter::default(),
                Grouping::PerBucket,
            )
            .unwrap()
            .0
        {
            by.insert(
                (c.bucket_unix_ms, format!("{:?}", c.key)),
                (c.flows, c.packets, c.bytes),
            );
        }
        by
    };
    assert_eq!(stored(&history), direct(&expected));
    // Restart: the writer goes with the last handle; a new one finds everything.
    drop(history);
    let history = History::open(c.clone(), &d).unwrap();
    assert_eq!(stored(&history), direct(&expected));
    // The file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(history.file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // One more day later, the oldest day goes and nothing else.
    let later: Vec<FlowEvent> = generate(36, 6).split_off(events.len());
    ingest(&history, &later);
    let all: Vec<FlowEvent> = events.iter().chain(&later).cloned().collect();
    assert_eq!(stored(&history), direct(&kept(&all, &c)));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_map_over_thirty_days_equals_a_direct_count_of_the_events() {
    let (d, history, events) = filled("map", 30, 10);
    let policy = policy();
    // Direct: each event's side segments, straight from the policy, counted as the map counts.
    let mut expected: BTreeMap<Group, Counts> = BTreeMap::new();
    let seg = |a: IpAddr| -> String {
        policy
            .segments_of(a, None)
            .first()
            .map_or("-".to_string(), |s| s.name.clone())
    };
    for e in &events {
        let counts = expected
            .entry(Group::Segments(seg(e.src), seg(e.dst)))
            .or_default();
        match (e.kind, e.verdict) {
            (EventKind::New, Verdict::Allow) => counts.allowed += 1,
            (EventKind::New, _) => counts.would_deny += 1,
            (EventKind::Denied, _) => counts.denied += 1,
            (EventKind::Closed, _) => {}
        }
        if e.kind != EventKind::New {
            counts.packets += e.packets[0] + e.packets[1];
            counts.bytes += e.bytes[0] + e.bytes[1];
        }
    }
    let reader = history.reader().unwrap();
    let window = Window {
        from: from_unix_ms(T0_MS),
        to: from_unix_ms(T0_MS + 31 * DAY_MS),
    };
    let (got, scanned) = map_counts(
        &reader,
        window,
        &ConversationFilter::default(),
        &mut Segments::new(Some(&policy)),
        &Drill::default(),
    )
    .unwrap();
    let summary = |m: &BTreeMap<Group, Counts>| -> Vec<(Group, [u64; 5])> {
        m.iter()
            .map(|(g, c)| {
                (
                    g.clone(),
                    [c.allowed, c.denied, c.would_deny, c.packets, c.bytes],
                )
            })
            .collect()
    };
    assert_eq!(summary(&got), summary(&expected));
    assert_eq!(scanned.unreadable, 0);
    assert!(
        expected.len() >= 6,
        "the traffic covers several segment pairs"
    );

    // Drill down: segment pair → host pairs → services, each summing to its parent.
    let pair = ("a".to_string(), "b".to_string());
    let (hosts, _) = map_counts(
        &reader,
        window,
        &ConversationFilter::default(),
        &mut Segments::new(Some(&policy)),
        &Drill {
            segments: Some(pair.clone()),
            hosts: None,
        },
    )
    .unwrap();
    let parent = &got[&Group::Segments(pair.0.clone(), pair.1.clone())];
    assert_eq!(
        hosts.values().map(Counts::flows).sum::<u64>(),
        parent.flows()
    );
    let Some(Group::Hosts(s, t)) = hosts.keys().next().cloned() else {
        panic!("host pairs expected")
    };
    let (services, _) = map_counts(
        &reader,
        window,
        &ConversationFilter::default(),
        &mut Segments::new(Some(&policy)),
        &Drill {
            segments: Some(pair),
            hosts: Some((s, t)),
        },
    )
    .unwrap();
    assert_eq!(
        services.values().map(Counts::flows).sum::<u64>(),
        hosts[&Group::Hosts(s, t)].flows()
    );
    // The window selects whole buckets: the first day alone.
    let day = Window {
        from: from_unix_ms(T0_MS),
        to: from_unix_ms(T0_MS + DAY_MS),
    };
    let first_day = history
        .conversations(day, &ConversationFilter::default(), Grouping::Window)
        .unwrap()
        .0;
    let expected_flows = events
        .iter()
        .filter(|e| e.kind != EventKind::Closed)
        .filter(|e| Record::of(e, 3600).unwrap().bucket_unix_ms < T0_MS + DAY_MS)
        .count() as u64;
    assert_eq!(
        first_day.iter().map(|c| c.flows).sum::<u64>(),
        expected_flows
    );

    // Hosts outside every segment, by subnet.
    let v = query::unsegmented(&reader, window, Some(&policy)).unwrap();
    let subnets: Vec<&str> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subnet"].as_str().unwrap())
        .collect();
    assert_eq!(subnets, ["192.168.7.0/24", "192.168.8.0/24", "fd00:9::/64"]);
    let c7 = &v["candidates"][0];
    assert_eq!(c7["hosts"].as_array().unwrap().len(), 2);
    assert!(
        Policy::from_value(json!({
            "format": "bulkhead.policy/v1",
            "segments": [{"name": c7["name"], "prefixes": c7["prefixes"]}], "rules": []
        }))
        .is_ok(),
        "a candidate is a valid segment: {c7}"
    );

    // Rules: the allow rule was hit, and its last hit is the newest allowed flow.
    let (hits, stats) = query::rule_hits(&reader, window).unwrap();
    assert_eq!(stats.unreadable, 0);
    let newest_allow = events
        .iter()
        .filter(|e| e.rule_id == 5)
        .map(|e| Record::of(e, 3600).unwrap().unix_ms)
        .max()
        .unwrap();
    assert_eq!(hits[&5].1, newest_allow);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_full_queue_drops_and_counts_whole_batches() {
    let d = dir("full");
    let c = HistoryConfig {
        queue: 1,
        flush_keys: 1,
        ..config()
    };
    let history = History::open(c, &d).unwrap();
    // Another connection holds the write lock: the writer blocks on its first batch.
    let lock = rusqlite::Connection::open(history.file()).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let events = generate(1, 10);
    let batches: Vec<&[FlowEvent]> = events.chunks(10).take(4).collect();
    let accepted: Vec<bool> = batches
        .iter()
        .map(|b| history.offer("plant-a", b))
        .collect();
    lock.execute_batch("COMMIT").unwrap();
    history.flush().unwrap();
    let refused: u64 = batches
        .iter()
        .zip(&accepted)
        .filter(|(_, a)| !**a)
        .map(|(b, _)| b.len() as u64)
        .sum();
    // One batch with the writer, at most one in the queue: the others were dropped, and counted.
    assert!(refused >= 20, "{accepted:?}");
    assert_eq!(history.dropped(), refused);
    let flows_offered: u64 = batches
        .iter()
        .zip(&accepted)
        .filter(|(_, a)| **a)
        .flat_map(|(b, _)| b.iter())
        .filter(|e| e.kind != EventKind::Closed)
        .count() as u64;
    let stored: u64 = history
        .conversations(
            Window::all(),
            &ConversationFilter::default(),
            Grouping::Window,
        )
        .unwrap()
        .0
        .iter()
        .map(|c| c.flows)
        .sum();
    assert_eq!(stored, flows_offered);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_size_bound_drops_the_oldest_buckets_first() {
    let d = dir("size");
    let c = HistoryConfig {
        max_bytes: 1 << 20,
        ..config()
    };
    let history = History::open(c, &d).unwrap();
    // Many distinct conversations per hour, so a few days exceed a MiB.
    let mut events = Vec::new();
    for hour in 0..72u64 {
        for i in 0..400u32 {
            let src = IpAddr::from([10, 9, (i >> 8) as u8, i as u8]);
            events.push(event(
                EventKind::New,
                T0_MS + hour * HOUR_MS + u64::from(i),
                src,
                addr("10.2.0.1"),
                6,
                443,
                Verdict::Allow,
                5,
                [0; 2],
            ));
        }
    }
    ingest(&history, &events);
    let (oldest, newest) = history.extent().unwrap().unwrap();
    assert_eq!(newest, T0_MS + 71 * HOUR_MS);
    assert!(oldest > T0_MS, "the oldest buckets went");
    // What is left is every bucket from the oldest kept one on, whole.
    let per_bucket: HashMap<u64, u64> = history
        .conversations(
            Window::all(),
            &ConversationFilter::default(),
            Grouping::PerBucket,
        )
        .unwrap()
        .0
        .iter()
        .fold(HashMap::new(), |mut m, c| {
            *m.entry(c.bucket_unix_ms).or_default() += c.flows;
            m
        });
    assert_eq!(per_bucket.len() as u64, (newest - oldest) / HOUR_MS + 1);
    assert!(per_bucket.values().all(|n| *n == 400));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn config_bounds_are_checked() {
    let c = |bucket_s, retention_days| HistoryConfig {
        bucket_s,
        retention_days,
        ..HistoryConfig::default()
    };
    assert_eq!(c(3600, 30).check(), Ok(()));
    assert_eq!(c(300, 1).check(), Ok(()));
    assert_eq!(c(7000, 30).check().unwrap_err().0, "history.bucket_s");
    assert_eq!(c(172_800, 30).check().unwrap_err().0, "history.bucket_s");
    assert_eq!(
        c(3600, 4000).check().unwrap_err().0,
        "history.retention_days"
    );
    let e = toml::from_str::<HistoryConfig>("bucket_s = 30").unwrap_err();
    assert!(e.to_string().contains("at least 60"), "{e}");
    let e = toml::from_str::<HistoryConfig>("retention = 30").unwrap_err();
    assert!(e.to_string().contains("unknown field"), "{e}");
}

#[test]
fn an_event_without_a_time_or_far_ahead_is_not_kept_and_a_newer_schema_is_refused() {
    let mut e = event(
        EventKind::New,
        T0_MS,
        addr("10.1.0.1"),
        addr("10.2.0.1"),
        6,
        22,
        Verdict::Allow,
        5,
        [0; 2],
    );
    e.time = "yesterday".into();
    assert_eq!(Record::of(&e, 3600), None);
    // Neither that, nor an event dated years ahead (it would expire everything else), is kept.
    let d = dir("ahead");
    let history = History::open(config(), &d).unwrap();
    let mut ahead = e.clone();
    ahead.time = "2099-01-01T00:00:00Z".into();
    let mut fine = e.clone();
    fine.time = rfc3339(from_unix_ms(T0_MS));
    history.offer("plant-a", &[e.clone(), ahead, fine]);
    history.flush().unwrap();
    assert_eq!(history.refused(), 2);
    assert_eq!(history.extent().unwrap(), Some((T0_MS, T0_MS)));
    drop(history);
    let _ = std::fs::remove_dir_all(&d);
    let d = dir("schema");
    std::fs::create_dir_all(&d).unwrap();
    let file = d.join("history.sqlite");
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = History::open(config(), &d).err().unwrap();
    assert!(err.to_string().contains("schema version 99"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn filters_select_what_matches_would() {
    let (d, history, _) = filled("filters", 3, 30);
    let all = history
        .conversations(
            Window::all(),
            &ConversationFilter::default(),
            Grouping::PerBucket,
        )
        .unwrap()
        .0;
    let net = |s: &str| Some(s.parse::<IpNet>().unwrap());
    let filters = [
        ConversationFilter {
            src: net("10.1.0.0/24"),
            ..Default::default()
        },
        ConversationFilter {
            dst: net("192.168.7.11/32"),
            ..Default::default()
        },
        ConversationFilter {
            addr: net("fd00:9::/64"),
            ..Default::default()
        },
        ConversationFilter {
            addr: net("10.0.0.0/8"),
            proto: Some(6),
            service: Some(22),
            ..Default::default()
        },
        ConversationFilter {
            verdicts: vec![Verdict::WouldDeny, Verdict::Deny],
            ..Default::default()
        },
        ConversationFilter {
            rule_id: Some(5),
            vlan: Some(0),
            policy_version: Some(3),
            ..Default::default()
        },
        ConversationFilter {
            policy_version: Some(4),
            ..Default::default()
        },
    ];
    for f in filters {
        let want: Vec<&Conversation> = all.iter().filter(|c| f.matches(&c.key)).collect();
        let got = history
            .conversations(Window::all(), &f, Grouping::PerBucket)
            .unwrap()
            .0;
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "{f:?}");
        assert!(
            f.policy_version == Some(4) || !want.is_empty(),
            "{f:?} selects something"
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// The conversations table as schema 1 wrote it (no gateway, no tier).
const SCHEMA_V1: &str = "
PRAGMA auto_vacuum = INCREMENTAL;
CREATE TABLE conversations (
    bucket INTEGER NOT NULL, src BLOB NOT NULL, dst BLOB NOT NULL, proto INTEGER NOT NULL,
    service INTEGER NOT NULL, vlan INTEGER NOT NULL, verdict INTEGER NOT NULL, rule_id INTEGER NOT NULL,
    policy_version INTEGER NOT NULL, first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL, flows INTEGER NOT NULL,
    packets_orig INTEGER NOT NULL, packets_reply INTEGER NOT NULL, bytes_orig INTEGER NOT NULL,
    bytes_reply INTEGER NOT NULL,
    PRIMARY KEY (bucket, src, dst, proto, service, vlan, verdict, rule_id, policy_version)
) WITHOUT ROWID;
PRAGMA user_version = 1;
";

/// `e` decided by `tier`.
fn tiered(mut e: FlowEvent, tier: &str) -> FlowEvent {
    e.tier = Some(tier.into());
    e
}

#[test]
fn a_schema_1_history_keeps_its_rows_and_gains_gateways_and_tiers() {
    let d = dir("from-v1");
    std::fs::create_dir_all(&d).unwrap();
    let file = d.join("history.sqlite");
    let old = rusqlite::Connection::open(&file).unwrap();
    old.execute_batch(SCHEMA_V1).unwrap();
    let bucket_s = (T0_MS / 1000) as i64;
    for (src, flows) in [([10u8, 1, 0, 1], 3i64), ([10, 1, 0, 2], 5)] {
        old.execute(
            "INSERT INTO conversations VALUES (?1, ?2, ?3, 6, 22, 0, 0, 5, 3, 10, 20, ?4, 1, 2, 3, 4)",
            rusqlite::params![bucket_s, src.to_vec(), vec![10u8, 2, 0, 1], flows],
        )
        .unwrap();
    }
    drop(old);

    let history = History::open(config(), &d).unwrap();
    let version: i64 = rusqlite::Connection::open(&file)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    let all = |f: &ConversationFilter| {
        history
            .conversations(Window::all(), f, Grouping::PerBucket)
            .unwrap()
            .0
    };
    let before = all(&ConversationFilter::default());
    assert_eq!(
        before
            .iter()
            .map(|c| (
                c.key.src,
                c.flows,
                c.key.gateway.clone(),
                c.key.tier.clone()
            ))
            .collect::<Vec<_>>(),
        vec![
            (addr("10.1.0.1"), 3, None, None),
            (addr("10.1.0.2"), 5, None, None)
        ]
    );
    assert_eq!(
        (before[0].first_unix_ms, before[0].packets, before[0].bytes),
        (T0_MS + 10, [1, 2], [3, 4])
    );

    // The same conversation through two gateways, decided by two tiers: one row each, after the old ones.
    let e = event(
        EventKind::New,
        T0_MS + 100,
        addr("10.1.0.1"),
        addr("10.2.0.1"),
        6,
        22,
        Verdict::Allow,
        5,
        [0; 2],
    );
    assert!(history.offer("plant-a", &[tiered(e.clone(), "global"), e.clone()]));
    assert!(history.offer("plant-b", &[tiered(e.clone(), "hosts")]));
    history.flush().unwrap();
    let every = all(&ConversationFilter::default());
    assert_eq!(every.len(), 5);
    let named = |f: ConversationFilter| {
        all(&f)
            .iter()
            .map(|c| {
                (
                    c.key.gateway.as_deref().map(str::to_string),
                    c.key.tier.as_deref().map(str::to_string),
                    c.flows,
                )
            })
            .collect::<Vec<_>>()
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        named(ConversationFilter {
            gateway: s("plant-a"),
            ..Default::default()
        }),
        vec![(s("plant-a"), None, 1), (s("plant-a"), s("global"), 1)]
    );
    assert_eq!(
        named(ConversationFilter {
            tier: s("hosts"),
            ..Default::default()
        }),
        vec![(s("plant-b"), s("hosts"), 1)]
    );
    assert_eq!(
        named(ConversationFilter {
            tier: s("-"),
            src: Some("10.1.0.1/32".parse().unwrap()),
            ..Default::default()
        }),
        vec![(None, None, 3), (s("plant-a"), None, 1)]
    );
    assert_eq!(
        named(ConversationFilter {
            gateway: s("elsewhere"),
            ..Default::default()
        }),
        vec![]
    );
    // The HA pair of plant-a and plant-b: either member's conversations, each naming its member.
    let pair = ConversationFilter {
        gateway: s("plant"),
        members: vec!["plant-a".into(), "plant-b".into()],
        ..Default::default()
    };
    let mut got = named(pair.clone());
    got.sort();
    assert_eq!(
        got,
        vec![
            (s("plant-a"), None, 1),
            (s("plant-a"), s("global"), 1),
            (s("plant-b"), s("hosts"), 1)
        ]
    );
    // SQL and `matches` agree on the new fields.
    for f in [
        pair,
        ConversationFilter {
            gateway: s("plant-b"),
            ..Default::default()
        },
        ConversationFilter {
            tier: s("-"),
            ..Default::default()
        },
    ] {
        let want: Vec<&Conversation> = every.iter().filter(|c| f.matches(&c.key)).collect();
        assert_eq!(all(&f).iter().collect::<Vec<_>>(), want, "{f:?}");
    }
    // A restart reads the names back.
    drop(history);
    let history = History::open(config(), &d).unwrap();
    assert!(history.offer("plant-b", &[tiered(e, "hosts")]));
    history.flush().unwrap();
    let again = history
        .conversations(
            Window::all(),
            &ConversationFilter {
                gateway: s("plant-b"),
                ..Default::default()
            },
            Grouping::PerBucket,
        )
        .unwrap()
        .0;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].flows, 2);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn unreadable_rows_are_counted_never_a_failed_query() {
    let d = dir("unreadable");
    let history = History::open(config(), &d).unwrap();
    let new = |src: &str, verdict| {
        event(
            EventKind::New,
            T0_MS,
            addr(src),
            addr("10.2.0.1"),
            6,
            22,
            verdict,
            5,
            [0; 2],
        )
    };
    assert!(history.offer(
        "plant-a",
        &[
            new("10.1.0.1", Verdict::Allow),
            new("10.1.0.2", Verdict::Deny)
        ]
    ));
    history.flush().unwrap();
    // Damaged rows beside them, written straight into the file.
    use rusqlite::types::Value as Sql;
    let db = rusqlite::Connection::open(history.file()).unwrap();
    let damaged: [(&[u8], i64, Sql); 4] = [
        // A source address of 5 bytes.
        (&[10, 1, 0, 3, 9], 0, Sql::Integer(1)),
        // An unknown verdict code.
        (&[10, 1, 0, 4], 9, Sql::Integer(1)),
        // Text where a count belongs, and a negative count.
        (&[10, 1, 0, 5], 0, Sql::Text("many".into())),
        (&[10, 1, 0, 6], 0, Sql::Integer(-1)),
    ];
    for (src, verdict, flows) in damaged {
        db.execute(
            "INSERT INTO conversations VALUES (?1, ?2, ?3, 6, 22, 0, ?4, 5, 3, 10, 20, ?5, 1, 2, 3, 4, 0, 0)",
            rusqlite::params![(T0_MS / 1000) as i64, src, vec![10u8, 2, 0, 1], verdict, flows],
        )
        .unwrap();
    }
    drop(db);

    let reader = history.reader().unwrap();
    let mut seen = Vec::new();
    let scanned = reader
        .scan(Window::all(), &ConversationFilter::default(), |c| {
            seen.push(c.key.src)
        })
        .unwrap();
    assert_eq!(seen, [addr("10.1.0.1"), addr("10.1.0.2")]);
    assert_eq!(scanned, ScanStats { unreadable: 4 });
    let (over_window, scanned) = history
        .conversations(
            Window::all(),
            &ConversationFilter::default(),
            Grouping::Window,
        )
        .unwrap();
    assert_eq!(over_window.len(), 2);
    assert_eq!(scanned.unreadable, 4);
    // Rows the filter rules out in SQL are never read, so never counted.
    let denied = ConversationFilter {
        verdicts: vec![Verdict::Deny],
        ..Default::default()
    };
    let (got, scanned) = history
        .conversations(Window::all(), &denied, Grouping::PerBucket)
        .unwrap();
    assert_eq!(
        (got.len(), got[0].key.src, scanned.unreadable),
        (1, addr("10.1.0.2"), 0)
    );
    // The reports built from scans carry the count.
    let day = Window {
        from: from_unix_ms(T0_MS),
        to: from_unix_ms(T0_MS + DAY_MS),
    };
    let v = query::unsegmented(&reader, day, None).unwrap();
    assert_eq!(v["unreadable_rows"], 4, "{v}");
    let v = query::map(
        &reader,
        day,
        &ConversationFilter::default(),
        None,
        &Drill::default(),
    )
    .unwrap();
    assert_eq!(v["unreadable_rows"], 4, "{v}");
    assert_eq!(v["edges"][0]["would_deny"], 0, "{v}");
    assert_eq!(v["edges"][0]["allowed"], 1, "{v}");
    // Rules health reads only the rule, time and flow columns: of the damaged rows, only the one with text for
    // its count is unreadable there (the negative count is ruled out in SQL, `flows > 0`).
    let v = query::rules(&reader, day, None).unwrap();
    assert_eq!(v["unreadable_rows"], 1, "{v}");
    // Every scan adds what it skipped to the metric.
    assert_eq!(history.unreadable_rows(), 17);
    let _ = std::fs::remove_dir_all(&d);
}
