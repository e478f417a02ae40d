//! The flow history's benchmark (run by `cargo xtask bench history`, pinned to one core): ingestion rate of
//! flow events through [`History::offer`] to stored rows, then over about a million conversation-buckets (30
//! days of hourly buckets) the latency of the 30-day segment map, the unused-rules report and a conversations
//! query (p50 and p95), and the bytes on disk per conversation-bucket. Prints one JSON line.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use bulkhead_control::history::query;
use bulkhead_control::history::{ConversationFilter, Grouping, History, HistoryConfig, Window};
use bulkhead_control::suggest::{self, ConversationSource, HistorySource, Scope, SuggestOptions};
use policy::Policy;
use protocol::{EventKind, FlowEvent, Verdict};
use serde_json::json;

/// 2026-10-01T00:00:00Z.
const T0_MS: u64 = 1_790_812_800_000;
const HOUR_MS: u64 = 3_600_000;
const SEGMENTS: u32 = 20;
const HOSTS_PER_SEGMENT: u32 = 200;
const RULES: u32 = 200;
/// Distinct conversations; each hour sees `PER_HOUR` of them.
const CONVERSATIONS: u64 = 20_000;
const PER_HOUR: u64 = 1400;
const HOURS: u64 = 30 * 24;
const SAMPLES: usize = 9;

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn policy() -> Policy {
    let segments: Vec<_> = (0..SEGMENTS)
        .map(|s| json!({"name": format!("seg{s}"), "prefixes": [format!("10.{s}.0.0/24")]}))
        .collect();
    let rules: Vec<_> = (0..RULES)
        .map(|i| {
            json!({"id": i + 1, "name": format!("r{i}"),
                   "from": {"segment": format!("seg{}", i % SEGMENTS)},
                   "to": {"segment": format!("seg{}", (i / SEGMENTS) % SEGMENTS)},
                   "service": "any", "action": "allow"})
        })
        .collect();
    Policy::from_value(
        json!({"format": "bulkhead.policy/v1", "segments": segments, "rules": rules}),
    )
    .expect("a valid policy")
}

/// A conversation of the pool: (src, dst, dport, rule id, verdict).
fn conversation(i: u64) -> (IpAddr, IpAddr, u16, u32, Verdict) {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ (i + 1).wrapping_mul(0xff51_afd7_ed55_8ccd));
    let host = |r: &mut Rng| -> IpAddr {
        if r.next(20) == 0 {
            // Outside every segment.
            IpAddr::from([192, 168, r.next(8) as u8, r.next(250) as u8 + 1])
        } else {
            let s = r.next(u64::from(SEGMENTS)) as u8;
            IpAddr::from([10, s, 0, r.next(u64::from(HOSTS_PER_SEGMENT)) as u8 + 1])
        }
    };
    let src = host(&mut r);
    let dst = host(&mut r);
    let port = [443, 80, 22, 53, 5432, 502, 8080, 3389][r.next(8) as usize];
    let (rule, verdict) = match r.next(10) {
        0 => (0, Verdict::Deny),
        1 => (0, Verdict::WouldDeny),
        _ => (1 + r.next(u64::from(RULES) / 2) as u32, Verdict::Allow),
    };
    (src, dst, port, rule, verdict)
}

fn event(kind: EventKind, at_ms: u64, c: (IpAddr, IpAddr, u16, u32, Verdict)) -> FlowEvent {
    let closed = kind == EventKind::Closed;
    FlowEvent {
        kind,
        time_ms: 0,
        time: humantime::format_rfc3339_millis(
            SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms),
        )
        .to_string(),
        worker: 0,
        src: c.0,
        dst: c.1,
        sport: 40_000,
        dport: c.2,
        proto: 6,
        vlan: 0,
        src_segments: vec![],
        dst_segments: vec![],
        verdict: c.4,
        rule_id: c.3,
        tier: None,
        policy_version: 7,
        packets: if closed { [12, 10] } else { [0, 0] },
        bytes: if closed { [1500, 9000] } else { [0, 0] },
        duration_ms: 0,
        tcp_state: None,
        tcp_flags: None,
        limit: None,
    }
}

/// p50 and p95 in milliseconds of `f` run [`SAMPLES`] times.
fn latency(mut f: impl FnMut()) -> (f64, f64) {
    let mut ms: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95))
}

fn main() {
    let dir = std::env::temp_dir().join(format!("bh-history-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = HistoryConfig {
        queue: 4096,
        ..HistoryConfig::default()
    };
    let history = History::open(config, &dir).expect("the history opens");
    // Events made beforehand: the dataplane and the flow log's parsing are not what is measured.
    let mut rng = Rng(42);
    let mut batches: Vec<Vec<FlowEvent>> = Vec::new();
    let mut batch = Vec::with_capacity(10_000);
    for hour in 0..HOURS {
        let first = rng.next(CONVERSATIONS);
        for j in 0..PER_HOUR {
            let c = conversation((first + j * 7) % CONVERSATIONS);
            let at = T0_MS + hour * HOUR_MS + j * 2000;
            if c.4 == Verdict::Deny {
                batch.push(event(EventKind::Denied, at, c));
            } else {
                batch.push(event(EventKind::New, at, c));
                batch.push(event(EventKind::Closed, at + 1000, c));
            }
            if batch.len() >= 10_000 {
                batches.push(std::mem::take(&mut batch));
            }
        }
    }
    batches.push(batch);
    let events: usize = batches.iter().map(Vec::len).sum();
    let started = Instant::now();
    for b in &batches {
        while !history.offer("bench", b) {
            // The benchmark wants every event in: wait for the writer rather than drop (the poller never does).
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    history.flush().expect("flushed");
    let ingest_s = started.elapsed().as_secs_f64();
    assert_eq!(history.dropped() as usize, 0);

    let reader = history.reader().expect("a reader");
    let window = Window {
        from: SystemTime::UNIX_EPOCH + Duration::from_millis(T0_MS),
        to: SystemTime::UNIX_EPOCH + Duration::from_millis(T0_MS + HOURS * HOUR_MS),
    };
    let mut rows = 0u64;
    let scanned = reader
        .scan(window, &ConversationFilter::default(), |_| rows += 1)
        .expect("a scan");
    assert_eq!(scanned.unreadable, 0);
    let policy = policy();
    let map = latency(|| {
        query::map(
            &reader,
            window,
            &ConversationFilter::default(),
            Some(&policy),
            &Default::default(),
        )
        .expect("the map");
    });
    let unused = latency(|| {
        query::rules(&reader, window, Some(&policy)).expect("the rules report");
    });
    let filter = ConversationFilter {
        dst: Some("10.3.0.0/24".parse().expect("a prefix")),
        ..Default::default()
    };
    let conversations = latency(|| {
        let _ = history
            .conversations(window, &filter, Grouping::Window)
            .expect("conversations");
    });
    // The historical impact of a draft and a suggestion, end to end as the API runs them: every
    // conversation-bucket of the window read from the store, then the engine.
    let source = HistorySource(history.clone());
    let span = suggest::Window {
        from_unix_ms: T0_MS,
        to_unix_ms: T0_MS + HOURS * HOUR_MS,
    };
    let what_if = latency(|| {
        let (seen, _) = source.conversations(span).expect("conversations");
        suggest::what_if(&seen, &policy, 100);
    });
    let options = SuggestOptions {
        scope: Scope::All,
        grouping: suggest::Grouping::Segments,
        include_denied: false,
        window: span,
        now_unix_ms: T0_MS + HOURS * HOUR_MS,
    };
    let suggestion = latency(|| {
        let (seen, _) = source.conversations(span).expect("conversations");
        suggest::suggest(&seen, &policy, &options).expect("a suggestion");
    });
    drop(reader);
    drop(source);
    drop(history);
    // Everything in the main file: checkpoint the write-ahead log before measuring.
    let file = dir.join("history.sqlite");
    let conn = rusqlite::Connection::open(&file).expect("the database");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .expect("a checkpoint");
    drop(conn);
    let bytes = std::fs::metadata(&file).expect("the file").len();
    println!(
        "{}",
        json!({
            "events": events,
            "ingest_s": ingest_s,
            "events_per_s": events as f64 / ingest_s,
            "conversation_buckets": rows,
            "bytes": bytes,
            "bytes_per_conversation_bucket": bytes as f64 / rows as f64,
            "map_ms": [map.0, map.1],
            "unused_rules_ms": [unused.0, unused.1],
            "conversations_ms": [conversations.0, conversations.1],
            "what_if_ms": [what_if.0, what_if.1],
            "suggestion_ms": [suggestion.0, suggestion.1],
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
}
