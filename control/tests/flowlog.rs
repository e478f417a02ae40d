//! Flow log: filters and paging, precise 400s, the SSE stream (fan-out, lag notice, resume), file rotation,
//! a dataplane that is down at first, and a real `bulkhead-dataplane` with real traffic (needs root, ping).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_control::auth::{Caller, Role};
use bulkhead_control::dataplane::{Dataplane, Transport};
use bulkhead_control::export::community_id::community_id;
use bulkhead_control::flowlog::{rotated, FlowLog, FlowLogConfig, FlowLogQuery};
use bulkhead_control::metrics::{Metrics, MetricsConfig};
use protocol::{ErrorReply, EventBatch, Request};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

// ---- A simulated dataplane whose `events` queue the test fills. ----

struct FakeDataplane {
    path: PathBuf,
    events: Arc<Mutex<VecDeque<Value>>>,
}

impl FakeDataplane {
    fn start(path: &Path) -> FakeDataplane {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let events: Arc<Mutex<VecDeque<Value>>> = Arc::default();
        let ev = events.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let ev = ev.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut line = String::new();
                    BufReader::new(r).read_line(&mut line).await.unwrap();
                    let (_, request) = protocol::decode_request(&line);
                    let Ok(Request::Events { max: Some(max) }) = request else {
                        panic!("unexpected request {line}");
                    };
                    let result = {
                        let mut q = ev.lock().unwrap();
                        let n = max.min(q.len());
                        let events = q.drain(..n).map(|e| serde_json::from_value(e).unwrap());
                        EventBatch {
                            events: events.collect(),
                            remaining: q.len(),
                        }
                    };
                    let answer = protocol::encode_reply(&Value::Null, &Ok::<_, ErrorReply>(result));
                    w.write_all(format!("{answer}\n").as_bytes()).await.unwrap();
                });
            }
        });
        FakeDataplane {
            path: path.to_path_buf(),
            events,
        }
    }

    fn push(&self, evs: impl IntoIterator<Item = Value>) {
        self.events.lock().unwrap().extend(evs);
    }

    fn client(&self) -> Dataplane {
        Dataplane::new(&self.path).with_timeout(Duration::from_secs(5))
    }
}

/// An event in the shape of `protocol::FlowEvent`.
fn event(
    kind: &str,
    src: &str,
    dst: &str,
    sport: u16,
    dport: u16,
    proto: u8,
    rule_id: u32,
) -> Value {
    json!({
        "kind": kind, "time_ms": 1000, "time": "2026-11-21T15:00:01.000Z", "worker": 0,
        "src": src, "dst": dst, "sport": sport, "dport": dport, "proto": proto, "vlan": 0,
        "verdict": if kind == "denied" { "deny" } else { "allow" },
        "rule_id": rule_id, "policy_version": 1, "packets": [1, 0], "bytes": [60, 0], "duration_ms": 0,
        "tcp_state": null, "tcp_flags": null, "src_segments": ["engineering"], "dst_segments": ["ot-legacy"],
    })
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bh-flowlog-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(dir: &Path) -> FlowLogConfig {
    FlowLogConfig {
        path: dir.join("log").join("flows.jsonl"),
        ..Default::default()
    }
}

async fn serve(log: &Arc<FlowLog>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let viewer = Caller {
        token_id: "flow-log-test".into(),
        identity: "viewer".into(),
        role: Role::Viewer,
        tiers: None,
        expires_unix_ms: None,
        hash: [0; 32],
    };
    let router = bulkhead_control::api::flow_log::router(log, viewer);
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (addr, task)
}

async fn get(addr: SocketAddr, query: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("http://{addr}/api/v1/flow-log{query}"))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

fn seqs(v: &Value) -> Vec<u64> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn filters_and_paging_select_exactly() {
    let dir = tempdir("filters");
    let fake = FakeDataplane::start(&dir.join("dp.sock"));
    let log = FlowLog::new(config(&dir)).unwrap();
    fake.push([
        event("new", "10.99.0.1", "10.99.0.2", 40000, 8080, 6, 10), // seq 1
        event("denied", "10.99.0.2", "10.99.0.1", 50000, 22, 6, 90), // 2
        event("new", "10.99.0.1", "10.99.0.2", 0, 0, 1, 20),        // 3
        event("closed", "10.99.0.1", "10.99.0.2", 40000, 8080, 6, 10), // 4
        event("denied", "10.99.0.2", "10.99.0.1", 0, 0, 1, 0),      // 5
        event("new", "fd00:99::1", "fd00:99::2", 40001, 502, 6, 30), // 6
        event("denied", "10.99.0.3", "10.99.0.2", 5353, 5353, 17, 0), // 7
    ]);
    assert_eq!(log.poll_once(&fake.client()).await.unwrap(), 0);
    let (addr, server) = serve(&log).await;

    for (query, want) in [
        ("", vec![1, 2, 3, 4, 5, 6, 7]),
        ("?kind=denied", vec![2, 5, 7]),
        ("?kind=new,closed", vec![1, 3, 4, 6]),
        ("?src=10.99.0.2", vec![2, 5]),
        ("?dst=10.99.0.2", vec![1, 3, 4, 7]),
        ("?addr=10.99.0.2", vec![1, 2, 3, 4, 5, 7]),
        ("?addr=fd00:99::2", vec![6]),
        ("?port=8080", vec![1, 4]),
        ("?port=50000", vec![2]),
        ("?proto=tcp", vec![1, 2, 4, 6]),
        ("?proto=1", vec![3, 5]),
        ("?proto=UDP", vec![7]),
        ("?rule_id=0", vec![5, 7]),
        ("?rule_id=10&kind=closed", vec![4]),
        ("?kind=denied&addr=10.99.0.1&proto=icmp", vec![5]),
        ("?src=10.99.0.9", vec![]),
        // Without since: the newest `limit`, oldest first.
        ("?limit=2", vec![6, 7]),
        ("?kind=new&limit=2", vec![3, 6]),
        // With since: the oldest `limit` after it.
        ("?since=2&limit=3", vec![3, 4, 5]),
        ("?since=5", vec![6, 7]),
        ("?since=7", vec![]),
        ("?since=0&kind=denied&limit=1", vec![2]),
    ] {
        let (status, v) = get(addr, query).await;
        assert_eq!(status, 200, "{query}: {v}");
        assert_eq!(seqs(&v), want, "{query}: {v}");
        assert_eq!(v["count"], want.len(), "{query}");
    }
    let (_, v) = get(addr, "?since=2&limit=3").await;
    assert_eq!(
        (v["truncated"].clone(), v["next_since"].clone()),
        (json!(true), json!(5))
    );
    let (_, v) = get(addr, "?since=5&limit=3").await;
    assert_eq!(
        (v["truncated"].clone(), v["next_since"].clone()),
        (json!(false), json!(7))
    );
    let (_, v) = get(addr, "?since=7").await;
    assert_eq!(v["next_since"], 7, "an empty page keeps the cursor");
    assert_eq!(
        (v["oldest_seq"].clone(), v["newest_seq"].clone()),
        (json!(1), json!(7))
    );
    // The event is the dataplane's, plus seq, the gateway's name and its Community ID.
    let (_, v) = get(addr, "?rule_id=90").await;
    let mut e = v["events"][0].clone();
    assert_eq!(e.as_object_mut().unwrap().remove("seq"), Some(json!(2)));
    assert_eq!(
        e.as_object_mut().unwrap().remove("gateway"),
        Some(json!("local"))
    );
    assert_eq!(
        e.as_object_mut().unwrap().remove("community_id"),
        Some(json!(community_id(
            0,
            "10.99.0.2".parse().unwrap(),
            "10.99.0.1".parse().unwrap(),
            50000,
            22,
            6
        )))
    );
    assert_eq!(
        e,
        event("denied", "10.99.0.2", "10.99.0.1", 50000, 22, 6, 90)
    );
    server.abort();
}

#[tokio::test]
async fn the_buffer_keeps_the_newest_events() {
    let dir = tempdir("ring");
    let fake = FakeDataplane::start(&dir.join("dp.sock"));
    let log = FlowLog::new(FlowLogConfig {
        buffer: 5,
        ..config(&dir)
    })
    .unwrap();
    fake.push((0..12).map(|i| event("new", "10.0.0.1", "10.0.0.2", i, 80, 6, 1)));
    log.poll_once(&fake.client()).await.unwrap();
    let (addr, server) = serve(&log).await;
    let (_, v) = get(addr, "").await;
    assert_eq!(seqs(&v), [8, 9, 10, 11, 12]);
    let (_, v) = get(addr, "?since=2&limit=2").await;
    assert_eq!(seqs(&v), [8, 9], "what fell out of memory is skipped");
    let (status, v) = get(addr, "?limit=6").await;
    assert_eq!(status, 400);
    assert_eq!(
        v["error"]["message"],
        "query parameter `limit`: 6 is more than the 5 events kept in memory"
    );
    server.abort();
}

#[tokio::test]
async fn bad_query_parameters_are_400_with_a_precise_message() {
    let dir = tempdir("bad");
    let log = FlowLog::new(config(&dir)).unwrap();
    let (addr, server) = serve(&log).await;
    for (query, message) in [
        ("?kind=dropped", "query parameter `kind`: \"dropped\" is not new, denied or closed (or a comma-separated list of them)"),
        ("?kind=new,", "query parameter `kind`: \"new,\" is not new, denied or closed (or a comma-separated list of them)"),
        ("?src=10.0.0.300", "query parameter `src`: \"10.0.0.300\" is not an IPv4 or IPv6 address"),
        ("?dst=", "query parameter `dst`: \"\" is not an IPv4 or IPv6 address"),
        ("?addr=host", "query parameter `addr`: \"host\" is not an IPv4 or IPv6 address"),
        ("?port=70000", "query parameter `port`: \"70000\" is not a port (0-65535)"),
        ("?proto=sctp", "query parameter `proto`: \"sctp\" is not a protocol: tcp, udp, icmp, icmpv6 or a number 0-255"),
        ("?proto=256", "query parameter `proto`: \"256\" is not a protocol: tcp, udp, icmp, icmpv6 or a number 0-255"),
        ("?rule_id=-1", "query parameter `rule_id`: \"-1\" is not a rule id (0-4294967295; 0 is the default action)"),
        ("?since=yesterday", "query parameter `since`: \"yesterday\" is not an event sequence number (a non-negative integer)"),
        ("?limit=0", "query parameter `limit`: \"0\" is not a positive integer"),
        ("?limit=ten", "query parameter `limit`: \"ten\" is not a positive integer"),
        ("?port=80&port=443", "query parameter `port` is given more than once"),
        ("?src_segment=", "query parameter `src_segment`: \"\" is not a segment name (or - for addresses in no segment)"),
        ("?src_segment=a&src_segment=b", "query parameter `src_segment` is given more than once"),
        ("?prot=6", "unknown query parameter `prot`; known: kind, src, dst, addr, port, proto, rule_id, src_segment, dst_segment, gateway, tier, since, limit"),
    ] {
        let (status, v) = get(addr, query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(v["error"]["code"], "bad_request", "{query}");
        assert_eq!(v["error"]["message"], message, "{query}");
    }
    // The stream takes the same filters, but no limit; and a Last-Event-ID must be a sequence number.
    let resp = reqwest::get(format!("http://{addr}/api/v1/flow-log/stream?limit=5"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(
        v["error"]["message"],
        "unknown query parameter `limit`; known: kind, src, dst, addr, port, proto, rule_id, src_segment, dst_segment, gateway, tier, since"
    );
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/flow-log/stream"))
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(
        v["error"]["message"],
        "header Last-Event-ID: \"abc\" is not an event sequence number"
    );
    server.abort();
}

/// An event with the given segment lists.
fn segmented(kind: &str, src: &[&str], dst: &[&str]) -> Value {
    let mut e = event(kind, "10.99.0.1", "10.99.0.2", 40000, 80, 6, 10);
    e["src_segments"] = json!(src);
    e["dst_segments"] = json!(dst);
    e
}

#[tokio::test]
async fn segment_filters_match_by_name_and_dash_means_no_segment() {
    let dir = tempdir("segments");
    let fake = FakeDataplane::start(&dir.join("dp.sock"));
    let log = FlowLog::new(config(&dir)).unwrap();
    let (addr, server) = serve(&log).await;
    let stream_url = format!("http://{addr}/api/v1/flow-log/stream");
    let mut unsegmented_src = SseReader::open(format!("{stream_url}?src_segment=-"), None).await;
    let mut to_db = SseReader::open(format!("{stream_url}?dst_segment=db&kind=new"), None).await;
    fake.push([
        segmented("new", &["office"], &["db"]),          // 1
        segmented("new", &["office", "it"], &["db"]),    // 2
        segmented("denied", &[], &["db"]),               // 3
        segmented("new", &["it"], &[]),                  // 4
        segmented("closed", &["office"], &["db", "ot"]), // 5
        segmented("denied", &[], &[]),                   // 6
    ]);
    log.poll_once(&fake.client()).await.unwrap();
    for (query, want) in [
        ("?src_segment=office", vec![1, 2, 5]),
        ("?src_segment=it", vec![2, 4]),
        ("?dst_segment=db", vec![1, 2, 3, 5]),
        ("?dst_segment=ot", vec![5]),
        ("?src_segment=-", vec![3, 6]),
        ("?dst_segment=-", vec![4, 6]),
        ("?src_segment=-&dst_segment=db", vec![3]),
        ("?src_segment=office&dst_segment=db&kind=new", vec![1, 2]),
        ("?src_segment=nowhere", vec![]),
        ("", vec![1, 2, 3, 4, 5, 6]),
    ] {
        let (status, v) = get(addr, query).await;
        assert_eq!(status, 200, "{query}: {v}");
        assert_eq!(seqs(&v), want, "{query}: {v}");
    }
    // The stream applies the same filters.
    for want in [3, 6] {
        assert_eq!(unsegmented_src.next().await.id, Some(want));
    }
    for want in [1, 2] {
        assert_eq!(to_db.next().await.id, Some(want));
    }
    server.abort();
}

/// An event decided by `tier` (none: a v1 policy or the policy's default).
fn decided_by(tier: Option<&str>) -> Value {
    let mut e = event("new", "10.99.0.1", "10.99.0.2", 40000, 80, 6, 10);
    if let Some(tier) = tier {
        e["tier"] = json!(tier);
    }
    e
}

#[tokio::test]
async fn the_tier_filter_matches_the_deciding_tier_and_dash_means_none() {
    let dir = tempdir("tiers");
    let fake = FakeDataplane::start(&dir.join("dp.sock"));
    let log = FlowLog::new(config(&dir)).unwrap();
    let (addr, server) = serve(&log).await;
    let mut global = SseReader::open(
        format!("http://{addr}/api/v1/flow-log/stream?tier=global&gateway=local"),
        None,
    )
    .await;
    fake.push([
        decided_by(Some("global")), // 1
        decided_by(Some("hosts")),  // 2
        decided_by(None),           // 3
        decided_by(Some("global")), // 4
    ]);
    log.poll_once(&fake.client()).await.unwrap();
    for (query, want) in [
        ("?tier=global", vec![1, 4]),
        ("?tier=hosts", vec![2]),
        ("?tier=-", vec![3]),
        ("?tier=global&gateway=local", vec![1, 4]),
        ("?tier=global&gateway=elsewhere", vec![]),
        ("?tier=nowhere", vec![]),
    ] {
        let (status, v) = get(addr, query).await;
        assert_eq!(status, 200, "{query}: {v}");
        assert_eq!(seqs(&v), want, "{query}: {v}");
    }
    for want in [1, 4] {
        assert_eq!(global.next().await.id, Some(want));
    }
    let (status, v) = get(addr, "?tier=").await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        v["error"]["message"],
        "query parameter `tier`: \"\" is not a tier name (or - for events no tier decided)"
    );
    server.abort();
}

#[tokio::test]
async fn a_pairs_name_matches_either_members_events() {
    let dir = tempdir("pair");
    let members = [
        FakeDataplane::start(&dir.join("m1.sock")),
        FakeDataplane::start(&dir.join("m2.sock")),
    ];
    let client = |i: usize, name: &str| {
        Dataplane::with_transport(name, Transport::Unix(members[i].path.clone()))
            .with_timeout(Duration::from_secs(5))
    };
    let log = FlowLog::new(config(&dir)).unwrap();
    log.know_pairs(vec![("gw".into(), vec!["gw-1".into(), "gw-2".into()])]);
    let (addr, server) = serve(&log).await;
    let mut pair = SseReader::open(
        format!("http://{addr}/api/v1/flow-log/stream?gateway=gw"),
        None,
    )
    .await;
    // Before the failover through the first member, after it through the second.
    members[0].push([decided_by(None), decided_by(None)]);
    log.poll_once(&client(0, "gw-1")).await.unwrap();
    members[1].push([decided_by(None)]);
    log.poll_once(&client(1, "gw-2")).await.unwrap();
    for (query, want) in [
        ("?gateway=gw", vec![1, 2, 3]),
        ("?gateway=gw-1", vec![1, 2]),
        ("?gateway=gw-2", vec![3]),
        ("?gateway=gw&since=1&limit=1", vec![2]),
        ("?gateway=g", vec![]),
    ] {
        let (status, v) = get(addr, query).await;
        assert_eq!(status, 200, "{query}: {v}");
        assert_eq!(seqs(&v), want, "{query}: {v}");
    }
    let (_, v) = get(addr, "?gateway=gw").await;
    assert_eq!(
        v["events"][2]["gateway"], "gw-2",
        "each event names its member: {v}"
    );
    for want in [1, 2, 3] {
        assert_eq!(pair.next().await.id, Some(want));
    }
    server.abort();
}

// ---- Server-sent events. ----

#[derive(Debug, Clone, PartialEq)]
struct Sse {
    event: String,
    id: Option<u64>,
    data: Value,
}

/// Reads an SSE response event by event.
struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    async fn open(url: String, last_event_id: Option<u64>) -> SseReader {
        let mut req = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                // Keep-alive comments carry no data.
                if let Some(data) = data {
                    return Sse { event, id, data };
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.resp.chunk())
                .await
                .expect("an SSE event within 20 s")
                .unwrap()
                .expect("the stream stays open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test]
async fn the_stream_fans_out_filters_and_resumes_and_the_poller_waits_for_the_dataplane() {
    let dir = tempdir("stream");
    let sock = dir.join("dp.sock");
    let log = FlowLog::new(FlowLogConfig {
        poll_ms: 20,
        ..config(&dir)
    })
    .unwrap();
    // The dataplane is not there yet: the poller waits for it.
    let poller = tokio::spawn(log.clone().run(Dataplane::new(&sock)));
    let (addr, server) = serve(&log).await;
    let url = format!("http://{addr}/api/v1/flow-log/stream");
    let mut all = SseReader::open(url.clone(), None).await;
    let mut denied = SseReader::open(format!("{url}?kind=denied&addr=10.99.0.2"), None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let fake = FakeDataplane::start(&sock);
    fake.push([
        event("new", "10.99.0.1", "10.99.0.2", 1, 80, 6, 10),
        event("denied", "10.99.0.2", "10.99.0.1", 2, 80, 6, 90),
        event("denied", "10.99.0.3", "10.99.0.1", 3, 80, 6, 90),
        event("closed", "10.99.0.1", "10.99.0.2", 1, 80, 6, 10),
    ]);
    for seq in 1..=4 {
        let e = all.next().await;
        assert_eq!((e.event.as_str(), e.id), ("flow", Some(seq)));
        assert_eq!(e.data["seq"], seq);
    }
    let e = denied.next().await;
    assert_eq!((e.id, e.data["src"].clone()), (Some(2), json!("10.99.0.2")));
    let tuple = ("10.99.0.2".parse().unwrap(), "10.99.0.1".parse().unwrap());
    assert_eq!(
        e.data["community_id"],
        community_id(0, tuple.0, tuple.1, 2, 80, 6),
        "streamed events carry their Community ID"
    );

    // A client that reconnects with Last-Event-ID gets what it missed, then live events, without duplicates.
    let mut resumed = SseReader::open(url.clone(), Some(2)).await;
    assert_eq!(resumed.next().await.id, Some(3));
    assert_eq!(resumed.next().await.id, Some(4));
    fake.push([event("denied", "10.99.0.2", "10.99.0.1", 5, 80, 6, 90)]);
    assert_eq!(resumed.next().await.id, Some(5));
    assert_eq!(all.next().await.id, Some(5));
    let e = denied.next().await;
    assert_eq!(e.id, Some(5), "the filtered stream skipped 3 and 4");
    poller.abort();
    server.abort();
}

#[tokio::test]
async fn a_slow_subscriber_is_told_what_it_missed_and_never_blocks_the_poller() {
    let dir = tempdir("lag");
    let fake = FakeDataplane::start(&dir.join("dp.sock"));
    let log = FlowLog::new(FlowLogConfig {
        stream_capacity: 16,
        ..config(&dir)
    })
    .unwrap();
    let metrics = Metrics::new(MetricsConfig::default());
    log.register_metrics(metrics.registry()).unwrap();
    let (addr, server) = serve(&log).await;
    let mut slow = SseReader::open(format!("http://{addr}/api/v1/flow-log/stream"), None).await;
    // 500 events arrive in one drain on this single-threaded runtime: the subscriber cannot read any of them
    // before all are sent, so it can keep only the last 16.
    fake.push((0..500).map(|i| event("new", "10.0.0.1", "10.0.0.2", i, 80, 6, 1)));
    log.poll_once(&fake.client()).await.unwrap();
    let e = slow.next().await;
    assert_eq!(e.event, "lagged");
    assert_eq!(e.data, json!({"missed": 484}));
    for seq in 485..=500 {
        assert_eq!(slow.next().await.id, Some(seq));
    }
    // Everything is still in memory and in the file.
    let (_, v) = get(addr, "?limit=1000").await;
    assert_eq!(v["count"], 500);
    let text = metrics.render();
    assert!(
        text.contains("bulkhead_flow_log_stream_lagged_events_total 484"),
        "{text}"
    );
    assert!(text.contains("bulkhead_flow_log_events_total 500"));
    let lines = std::fs::read_to_string(dir.join("log/flows.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 500);
    server.abort();
}

// ---- The file. ----

fn file_seqs(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            v["seq"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn rotation_keeps_keep_files_and_never_loses_or_splits_a_line() {
    let dir = tempdir("rotate");
    let fake = FakeDataplane::start(&dir.join("dp.sock"));
    let cfg = FlowLogConfig {
        rotate_bytes: 4096,
        keep: 3,
        fsync_ms: 0,
        ..config(&dir)
    };
    let log = FlowLog::new(cfg.clone()).unwrap();
    let metrics = Metrics::new(MetricsConfig::default());
    log.register_metrics(metrics.registry()).unwrap();
    // Batches of different sizes, so rotations fall inside batches and between them.
    let mut n = 0u16;
    for batch in [1usize, 7, 30, 2, 45, 13, 1, 60] {
        fake.push((0..batch).map(|_| {
            n += 1;
            event("new", "10.99.0.1", "10.99.0.2", 10000 + n, 8080, 6, 10)
        }));
        log.poll_once(&fake.client()).await.unwrap();
    }
    let total = u64::from(n);
    let path = &cfg.path;
    assert!(!rotated(path, 4).exists(), "only `keep` rotated files");
    for f in [path.to_path_buf(), rotated(path, 1), rotated(path, 3)] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is readable by others", f.display());
    }
    let mut kept = Vec::new();
    for f in [
        rotated(path, 3),
        rotated(path, 2),
        rotated(path, 1),
        path.clone(),
    ] {
        let len = std::fs::metadata(&f).unwrap().len();
        assert!(len <= cfg.rotate_bytes, "{} is {len} bytes", f.display());
        assert!(len > 0);
        kept.extend(file_seqs(&f));
    }
    // Consecutive, ending with the last event: no line lost at any rotation, none duplicated.
    let first = kept[0];
    assert!(first > 1, "older files were dropped");
    assert_eq!(kept, (first..=total).collect::<Vec<_>>());
    // Each rotated file was full: its successor's first line would not have fitted.
    let files = [
        rotated(path, 3),
        rotated(path, 2),
        rotated(path, 1),
        path.clone(),
    ];
    for pair in files.windows(2) {
        let len = std::fs::metadata(&pair[0]).unwrap().len();
        let next = std::fs::read_to_string(&pair[1]).unwrap();
        let first = next.lines().next().unwrap().len() as u64 + 1;
        assert!(
            len + first > cfg.rotate_bytes,
            "{} rotated early",
            pair[0].display()
        );
    }
    // Rotations, counted from the lines' lengths by the documented rule.
    let (mut size, mut rotations) = (0u64, 0);
    for seq in 1..=total {
        let mut e = event(
            "new",
            "10.99.0.1",
            "10.99.0.2",
            10000 + seq as u16,
            8080,
            6,
            10,
        );
        e["seq"] = json!(seq);
        e["gateway"] = json!("local");
        e["community_id"] = json!(community_id(
            0,
            "10.99.0.1".parse().unwrap(),
            "10.99.0.2".parse().unwrap(),
            10000 + seq as u16,
            8080,
            6
        ));
        let len = e.to_string().len() as u64 + 1;
        if size > 0 && size + len > cfg.rotate_bytes {
            rotations += 1;
            size = 0;
        }
        size += len;
    }
    assert!(rotations >= 4);
    let text = metrics.render();
    assert!(
        text.contains(&format!("bulkhead_flow_log_rotations_total {rotations}")),
        "{rotations} rotations expected:\n{text}"
    );
    drop(log);

    // A new control process (after a crash that tore the last line) starts with the files' events in
    // memory and continues the numbering.
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":99999,\"kind\":\"ne").unwrap();
    drop(f);
    let log = FlowLog::new(cfg.clone()).unwrap();
    let all = FlowLogQuery {
        limit: Some(10_000),
        ..Default::default()
    };
    let (events, _) = log.query(&all);
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), kept);
    // The torn line is left out, and counted.
    assert_eq!(log.left_out_at_start(), 1);
    let (events, _) = log.query(&FlowLogQuery {
        since: Some(total - 3),
        ..all
    });
    assert_eq!(events.len(), 3);
    fake.push([event("new", "10.99.0.1", "10.99.0.2", 1, 8080, 6, 10)]);
    log.poll_once(&fake.client()).await.unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let last: Vec<&str> = text.lines().rev().take(2).collect();
    assert_eq!(
        last[1], "{\"seq\":99999,\"kind\":\"ne",
        "the torn line is ended, not glued to"
    );
    let v: Value = serde_json::from_str(last[0]).unwrap();
    assert_eq!(v["seq"], total + 1);
}

#[tokio::test]
async fn keep_zero_starts_the_file_afresh() {
    let dir = tempdir("keep0");
    let fake = FakeDataplane::start(&dir.join("dp.sock"));
    let cfg = FlowLogConfig {
        rotate_bytes: 2048,
        keep: 0,
        ..config(&dir)
    };
    let log = FlowLog::new(cfg.clone()).unwrap();
    fake.push((0..40).map(|i| event("new", "10.0.0.1", "10.0.0.2", i, 80, 6, 1)));
    log.poll_once(&fake.client()).await.unwrap();
    assert!(!rotated(&cfg.path, 1).exists());
    let seqs = file_seqs(&cfg.path);
    assert_eq!(*seqs.last().unwrap(), 40);
    assert!(seqs.len() < 40 && seqs.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn config_bounds_are_checked_precisely() {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[allow(dead_code)]
        flow_log: FlowLogConfig,
    }
    let err = toml::from_str::<Doc>("[flow_log]\nrotate_bytes = 10\n")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("must be at least 1024, got 10"), "{err}");
    let err = toml::from_str::<Doc>("[flow_log]\nbufer = 10\n")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown field `bufer`"), "{err}");
    let ok: Doc = toml::from_str("[flow_log]\npath = \"/tmp/x.jsonl\"\n").unwrap();
    assert_eq!(ok.flow_log.keep, 5);
}

// ---- A real dataplane with real traffic. ----

fn dataplane_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap(); // target/<profile>/deps/<test> → target/<profile>
                                                               // Always through cargo: a no-op when up to date, and never a stale binary.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-q",
        "-p",
        "bulkhead-dataplane",
        "--bin",
        "bulkhead-dataplane",
    ])
    .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
    if profile_dir.file_name().unwrap() == "release" {
        cmd.arg("--release");
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "building bulkhead-dataplane failed");
    profile_dir.join("bulkhead-dataplane")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_dataplane_logs_admitted_and_denied_flows() {
    let binary = dataplane_binary();
    let bed = tokio::task::spawn_blocking(move || {
        let mut opts = testbed::Options::new(binary);
        opts.policy = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json"));
        let bed = testbed::TestBed::start(&opts).unwrap_or_else(|e| panic!("test bed: {e}"));
        let ping = |side: &testbed::Side, to: &str| {
            side.run(&["ping", "-c", "2", "-i", "0.2", "-W", "1", to])
                .unwrap()
                .status
                .success()
        };
        assert!(ping(&bed.a, testbed::addr::B4), "rule 20 allows it");
        assert!(!ping(&bed.b, testbed::addr::A4), "rule 90 denies it");
        bed
    })
    .await
    .unwrap();
    let dir = tempdir("real");
    let log = FlowLog::new(config(&dir)).unwrap();
    let (addr, server) = serve(&log).await;
    let dp = Dataplane::new(bed.control_socket());
    let deadline = Instant::now() + Duration::from_secs(20);
    let (new, denied) = loop {
        log.poll_once(&dp).await.unwrap();
        let (_, new) = get(addr, "?kind=new&rule_id=20&src=10.99.0.1&proto=icmp").await;
        let (_, denied) = get(addr, "?kind=denied&src=10.99.0.2&dst=10.99.0.1").await;
        if new["count"] != 0 && denied["count"] != 0 {
            break (new, denied);
        }
        assert!(Instant::now() < deadline, "no events: {new} {denied}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let n = &new["events"][0];
    assert_eq!(
        (n["dst"].clone(), n["verdict"].clone()),
        (json!("10.99.0.2"), json!("allow"))
    );
    assert_eq!(n["src_segments"], json!(["engineering"]));
    let d = &denied["events"][0];
    assert_eq!(
        (d["rule_id"].clone(), d["verdict"].clone()),
        (json!(90), json!("deny"))
    );
    assert_eq!(d["policy_version"], 1);
    let lines = std::fs::read_to_string(dir.join("log/flows.jsonl")).unwrap();
    assert!(lines
        .lines()
        .any(|l| l.contains("\"kind\":\"denied\"") && l.contains("\"rule_id\":90")));
    server.abort();
    drop(bed);
}

#[tokio::test]
async fn events_of_an_older_file_get_their_community_id_when_read_back() {
    let dir = tempdir("upgrade");
    let cfg = config(&dir);
    std::fs::create_dir_all(cfg.path.parent().unwrap()).unwrap();
    // A line as control wrote it before events carried a Community ID (and the dataplane its tcp_flags).
    let mut line = event("closed", "10.99.0.1", "10.99.0.2", 40000, 8080, 6, 10);
    line.as_object_mut().unwrap().remove("tcp_flags");
    line["seq"] = json!(1);
    std::fs::write(&cfg.path, format!("{line}\n")).unwrap();
    let log = FlowLog::new(cfg).unwrap();
    let (events, _) = log.query(&FlowLogQuery::default());
    let read: Value = serde_json::from_str(&events[0].json).unwrap();
    let (src, dst) = ("10.99.0.1".parse().unwrap(), "10.99.0.2".parse().unwrap());
    assert_eq!(
        read["community_id"],
        community_id(0, src, dst, 40000, 8080, 6)
    );
    assert_eq!(
        (read["seq"].clone(), read["dport"].clone()),
        (json!(1), json!(8080))
    );
}
