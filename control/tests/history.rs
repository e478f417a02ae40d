//! The flow history's routes, in process with no dataplane: a history written beforehand (as control's flow-log
//! poller would), read through the API — conversations with filters and paging, the map and its drill-down under
//! the draft's segments, rules' last hits, hosts outside every segment —, damaged rows counted in the answers and
//! the metric rather than failing them, and hostile or bad query parameters, each a 400 naming the parameter.

use std::time::{Duration, SystemTime};

use bulkhead_control::history::{History, HistoryConfig};
use protocol::FlowEvent;
use reqwest::StatusCode;
use serde_json::{json, Value};

mod local;

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn event(
    kind: &str,
    at: SystemTime,
    src: &str,
    dst: &str,
    dport: u16,
    verdict: &str,
    rule: u32,
) -> FlowEvent {
    let packets = if kind == "new" { [0, 0] } else { [3, 2] };
    serde_json::from_value(json!({
        "kind": kind, "time": rfc3339(at), "time_ms": 0, "worker": 0, "vlan": 0,
        "src": src, "dst": dst, "sport": 40000, "dport": dport, "proto": 6,
        "verdict": verdict, "rule_id": rule, "policy_version": 2, "duration_ms": 0, "tcp_state": null,
        "packets": packets, "bytes": [packets[0] * 100, packets[1] * 100],
        "src_segments": [], "dst_segments": [],
    }))
    .unwrap()
}

/// Ten days of a little traffic, ending an hour ago: engineering (10.99.0.1) to the HMI (10.99.0.2:8080) every
/// day under rule 10, an unsegmented 192.168.7.x host to the HMI's Modbus port (would-deny), and a denied one.
fn traffic(now: SystemTime) -> Vec<FlowEvent> {
    let mut out = Vec::new();
    for day in 0..10u64 {
        let at = now - Duration::from_secs((10 - day) * 86_400 + 3600);
        out.push(event(
            "new",
            at,
            "10.99.0.1",
            "10.99.0.2",
            8080,
            "allow",
            10,
        ));
        out.push(event(
            "closed",
            at + Duration::from_secs(5),
            "10.99.0.1",
            "10.99.0.2",
            8080,
            "allow",
            10,
        ));
        out.push(event(
            "new",
            at,
            "192.168.7.10",
            "10.99.0.2",
            502,
            "would_deny",
            0,
        ));
    }
    out.push(event(
        "denied",
        now - Duration::from_secs(7200),
        "192.168.7.11",
        "10.99.0.2",
        23,
        "deny",
        0,
    ));
    out
}

fn policy() -> Value {
    json!({
        "format": "bulkhead.policy/v1",
        "segments": [
            {"name": "engineering", "prefixes": ["10.99.0.1/32"]},
            {"name": "ot-legacy", "prefixes": ["10.99.0.2/32"]}
        ],
        "services": [{"name": "hmi-web", "protocol": "tcp", "ports": ["8080"]}],
        "rules": [
            {"id": 10, "name": "eng-hmi-web", "from": {"segment": "engineering"}, "to": {"segment": "ot-legacy"},
             "service": "hmi-web", "action": "allow"},
            {"id": 11, "name": "never-used", "from": {"segment": "ot-legacy"}, "to": {"segment": "engineering"},
             "service": "hmi-web", "action": "allow"}
        ]
    })
}

struct Api {
    url: String,
    token: String,
    client: reqwest::Client,
}

fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Api {
    /// Control in process, keeping its files in `dir` (`extra`: the top of its config).
    async fn start(dir: &std::path::Path, extra: &str) -> Api {
        let local = local::start(dir, extra).await;
        Api {
            client: local.client(),
            url: local.url.clone(),
            token: local.token.clone(),
        }
    }

    /// `GET path_and_query` (from the root) with the token.
    async fn fetch(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path_and_query}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    async fn draft_etag(&self) -> reqwest::header::HeaderValue {
        self.fetch("/api/v1/draft").await.headers()["etag"].clone()
    }

    async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        let r = self.fetch(&format!("/api/v1{path_and_query}")).await;
        let status = r.status();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
        )
    }

    /// `POST /api/v1{path}` with `body` and the token.
    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
        )
    }

    /// Asserts that `POST /suggest` and `POST /what-if` over everything answer, saying they skipped `unreadable`.
    async fn suggest_and_what_if_skip(&self, unreadable: u64) {
        for path in ["/suggest", "/what-if"] {
            let (s, v) = self.post(path, &json!({})).await;
            assert_eq!(
                (s, v["unreadable_rows"].as_u64()),
                (StatusCode::OK, Some(unreadable)),
                "{path}: {v}"
            );
        }
    }

    /// The value of `series` in `GET /metrics`.
    async fn metric(&self, series: &str) -> u64 {
        let text = self.fetch("/metrics").await.text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }
}

/// The history of a control keeping its files in `dir`, holding [`traffic`] up to `now` (offered as the flow-log
/// poller would).
fn stored_history(dir: &std::path::Path, now: SystemTime) -> std::sync::Arc<History> {
    let history = History::open(HistoryConfig::default(), &dir.join("store")).unwrap();
    assert!(history.offer("local", &traffic(now)));
    history.flush().unwrap();
    history
}

#[tokio::test]
async fn the_history_routes_answer_from_the_stored_history() {
    let dir = fresh_dir("bh-history-api");
    let now = SystemTime::now();
    drop(stored_history(&dir, now));
    let api = Api::start(&dir, "").await;
    let put = api
        .client
        .put(format!("{}/api/v1/draft", api.url))
        .bearer_auth(&api.token)
        .header("If-Match", api.draft_etag().await)
        .header("content-type", "application/json")
        .body(policy().to_string())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{:?}", put.text().await);

    // Conversations over the whole retention, per bucket, paged.
    let (s, v) = api.get("/history/conversations?limit=5").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["matched"], 21, "{v}");
    assert_eq!(v["unreadable_rows"], 0, "{v}");
    assert_eq!(v["conversations"].as_array().unwrap().len(), 5);
    assert_eq!(v["more"], true);
    let (_, last) = api.get("/history/conversations?limit=5&offset=20").await;
    assert_eq!(last["conversations"].as_array().unwrap().len(), 1);
    assert_eq!(last["more"], false);
    // Over the window, one per conversation; filters by prefix, port and verdict.
    let (_, v) = api
        .get("/history/conversations?group=window&src=192.168.7.0/24&verdict=would_deny,deny")
        .await;
    let convs = v["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 2, "{v}");
    assert_eq!(convs[0]["key"]["service"], 502);
    assert_eq!(convs[0]["flows"], 10);
    // Three days back (whole buckets from the hour three days ago): the flows of 1 and 2 days ago.
    let (_, v) = api
        .get("/history/conversations?group=window&window_s=259200&port=8080")
        .await;
    assert_eq!(v["conversations"][0]["flows"], 2, "{v}");
    assert_eq!(v["conversations"][0]["packets"], json!([6, 4]));
    // Each conversation names its gateway and the deciding tier (none: a v1 policy); both filter.
    assert_eq!(v["conversations"][0]["key"]["gateway"], "local", "{v}");
    assert_eq!(v["conversations"][0]["key"]["tier"], Value::Null, "{v}");
    for (query, matched) in [
        ("gateway=local", 21),
        ("gateway=plant-b", 0),
        ("tier=-", 21),
        ("tier=global", 0),
    ] {
        let (s, v) = api.get(&format!("/history/conversations?{query}")).await;
        assert_eq!(
            (s, v["matched"].as_u64()),
            (StatusCode::OK, Some(matched)),
            "{query}: {v}"
        );
    }
    let (_, v) = api.get("/history/map?gateway=plant-b").await;
    assert_eq!(v["edges"], json!([]), "{v}");

    // The map under the draft's segments, and its drill-down.
    let (s, v) = api.get("/history/map?policy=draft").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["level"], "segments");
    let edges = v["edges"].as_array().unwrap();
    let edge = |from: &str, to: &str| {
        edges
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .cloned()
    };
    let eng = edge("engineering", "ot-legacy").unwrap();
    assert_eq!(
        (eng["allowed"].as_u64(), eng["packets"].as_u64()),
        (Some(10), Some(50))
    );
    let outside = edge("-", "ot-legacy").unwrap();
    assert_eq!(
        (outside["would_deny"].as_u64(), outside["denied"].as_u64()),
        (Some(10), Some(1))
    );
    let (_, hosts) = api
        .get("/history/map?policy=draft&src_segment=-&dst_segment=ot-legacy")
        .await;
    assert_eq!(hosts["level"], "hosts");
    assert_eq!(hosts["edges"].as_array().unwrap().len(), 2, "{hosts}");
    let (_, services) = api
        .get("/history/map?policy=draft&src_segment=-&dst_segment=ot-legacy&src=192.168.7.10&dst=10.99.0.2")
        .await;
    assert_eq!(services["level"], "services");
    assert_eq!(services["edges"][0]["port"], 502);
    assert_eq!(services["edges"][0]["would_deny"], 10);
    assert_eq!(
        services["edges"][0]["rules"][0],
        json!({"id": 0, "name": "default", "tier": null, "flows": 10})
    );
    // No active policy: every address is outside every segment.
    let (_, v) = api.get("/history/map").await;
    assert_eq!(v["edges"].as_array().unwrap().len(), 1, "{v}");

    // Rules over the window: rule 10 hit, rule 11 stale.
    let (_, v) = api.get("/history/rules?policy=draft").await;
    assert_eq!(v["rules"][0]["flows"], 10, "{v}");
    assert_eq!(v["rules"][0]["stale"], false);
    assert_eq!(v["rules"][1]["stale"], true);
    assert_eq!(v["default"]["flows"], 11);

    // Hosts outside every segment, as a candidate segment.
    let (_, v) = api.get("/history/unsegmented?policy=draft").await;
    let c = &v["candidates"][0];
    assert_eq!(c["subnet"], "192.168.7.0/24", "{v}");
    assert_eq!(c["name"], "peers-of-ot-legacy-192-168-7-0-24");
    assert_eq!(c["hosts"].as_array().unwrap().len(), 2);
    let added = api
        .client
        .post(format!("{}/api/v1/draft/segments", api.url))
        .bearer_auth(&api.token)
        .header("If-Match", api.draft_etag().await)
        .header("content-type", "application/json")
        .body(json!({"name": c["name"], "prefixes": c["prefixes"]}).to_string())
        .send()
        .await
        .unwrap();
    assert!(added.status().is_success(), "{:?}", added.text().await);
    let (_, v) = api.get("/history/unsegmented?policy=draft").await;
    let left: Vec<&str> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subnet"].as_str().unwrap())
        .collect();
    assert!(left.is_empty(), "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn rows_the_history_cannot_read_are_counted_in_answers_and_metrics() {
    let dir = fresh_dir("bh-history-unreadable");
    let now = SystemTime::now();
    {
        let history = stored_history(&dir, now);
        // Damaged rows written straight into the file: a 5-byte address, an unknown verdict code.
        let db = rusqlite::Connection::open(history.file()).unwrap();
        let bucket_s = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 3600
            * 3600
            - 3600;
        for (src, verdict) in [(vec![10u8, 99, 0, 7, 7], 0), (vec![10, 99, 0, 8], 9)] {
            db.execute(
                "INSERT INTO conversations VALUES (?1, ?2, ?3, 6, 22, 0, ?4, 0, 2, 0, 0, 1, 1, 1, 60, 60, 0, 0)",
                rusqlite::params![bucket_s as i64, src, vec![10u8, 99, 0, 2], verdict],
            )
            .unwrap();
        }
        // Text where the rule id belongs: unreadable for the rules' answer too.
        db.execute(
            "INSERT INTO conversations VALUES (?1, ?2, ?3, 6, 22, 0, 0, 'x', 2, 0, 0, 1, 1, 1, 60, 60, 0, 0)",
            rusqlite::params![bucket_s as i64, vec![10u8, 99, 0, 9], vec![10u8, 99, 0, 2]],
        )
        .unwrap();
    }
    let api = Api::start(&dir, "").await;
    assert_eq!(
        api.metric("bulkhead_history_unreadable_rows_total ").await,
        0
    );
    // The good rows are answered as before; the bad ones are counted in every answer built from a scan.
    let (s, v) = api.get("/history/conversations").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["matched"].as_u64(), v["unreadable_rows"].as_u64()),
        (Some(21), Some(3)),
        "{v}"
    );
    let (_, v) = api.get("/history/conversations?group=window").await;
    assert_eq!(v["unreadable_rows"], 3, "{v}");
    let (s, v) = api.get("/history/map").await;
    assert_eq!(
        (s, v["unreadable_rows"].as_u64()),
        (StatusCode::OK, Some(3)),
        "{v}"
    );
    let (s, v) = api.get("/history/unsegmented").await;
    assert_eq!(
        (s, v["unreadable_rows"].as_u64()),
        (StatusCode::OK, Some(3)),
        "{v}"
    );
    // Rules health reads the rule, time and flow columns only: the row with text for its rule id.
    let (s, v) = api.get("/history/rules").await;
    assert_eq!(
        (s, v["unreadable_rows"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
    // A window without them: none met, none counted.
    let (s, v) = api
        .get("/history/map?window_s=7200&to=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(
        (s, v["unreadable_rows"].as_u64()),
        (StatusCode::OK, Some(0)),
        "{v}"
    );
    // Suggestion and what-if read every row of their window: the same three skipped, said in their answers.
    api.suggest_and_what_if_skip(3).await;
    // Every scan counts what it skipped.
    assert_eq!(
        api.metric("bulkhead_history_unreadable_rows_total ").await,
        19
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_and_hostile_query_parameters_are_400s_naming_them() {
    let dir = fresh_dir("bh-history-bad");
    let api = Api::start(&dir, "").await;
    let cases: &[(&str, &str)] = &[
        ("/history/map?window_s=0", "window_s"),
        ("/history/map?window_s=99999999999999999999", "window_s"),
        ("/history/map?window_s=-5", "window_s"),
        ("/history/map?from=yesterday", "from"),
        ("/history/map?to=2026-13-45T00:00:00Z", "to"),
        (
            "/history/map?from=2026-12-01T00:00:00Z&window_s=60",
            "window_s",
        ),
        (
            "/history/map?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
            "from",
        ),
        ("/history/map?src_segment=a", "src_segment"),
        ("/history/map?src=10.0.0.1&dst=10.0.0.2", "src"),
        ("/history/map?src_segment=", "src_segment"),
        ("/history/map?policy=yours", "policy"),
        ("/history/map?verdict=maybe", "verdict"),
        ("/history/map?vlan=4095", "vlan"),
        ("/history/map?proto=300", "proto"),
        ("/history/conversations?limit=0", "limit"),
        ("/history/conversations?limit=10001", "limit"),
        ("/history/conversations?offset=-1", "offset"),
        ("/history/conversations?src=10.0.0.300", "src"),
        ("/history/conversations?dst=10.0.0.0/33", "dst"),
        ("/history/conversations?group=hour", "group"),
        ("/history/conversations?port=65536", "port"),
        ("/history/conversations?rule_id=x", "rule_id"),
        ("/history/conversations?limit=1&limit=2", "limit"),
        ("/history/rules?stale_after_s=5", "stale_after_s"),
        ("/history/unsegmented?window_s=1e9", "window_s"),
    ];
    for (path, param) in cases {
        let (s, v) = api.get(path).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        let details = v["error"]["details"].as_array().unwrap();
        assert!(
            details.iter().any(|d| d["path"] == *param),
            "{path}: the error names {param}: {v}"
        );
    }
    // Good parameters on an empty history: an empty answer.
    let (s, v) = api.get("/history/unsegmented").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["candidates"], json!([]));
    assert_eq!(v["unreadable_rows"], 0, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_the_history_suggest_counts_the_flow_log_events_it_cannot_read() {
    let dir = fresh_dir("bh-history-off-unreadable");
    // The flow-log file control loads into memory at start: events, a line that is no event, an event whose time
    // cannot be read.
    let line = |seq: u64, e: &FlowEvent| {
        let mut v = serde_json::to_value(e).unwrap();
        v["seq"] = json!(seq);
        v.to_string() + "\n"
    };
    let now = SystemTime::now();
    let mut text = String::new();
    for (i, e) in traffic(now).iter().enumerate() {
        text += &line(i as u64 + 1, e);
    }
    text += &(json!({"seq": 100, "kind": "new", "src": "10.99.0.300"}).to_string() + "\n");
    let mut undated = event("new", now, "10.99.0.1", "10.99.0.2", 8080, "allow", 10);
    undated.time = "yesterday".into();
    text += &line(101, &undated);
    std::fs::write(dir.join("flows.jsonl"), text).unwrap();
    let api = Api::start(&dir, "history = { enabled = false }").await;
    api.suggest_and_what_if_skip(2).await;
    let (_, v) = api.post("/what-if", &json!({})).await;
    assert_eq!(v["flows"], 21, "the readable events all judged: {v}");
    assert_eq!(
        api.metric("bulkhead_flow_log_unreadable_events_total ")
            .await,
        6
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_disabled_history_is_404_history_disabled() {
    let dir = fresh_dir("bh-history-off");
    let api = Api::start(&dir, "history = { enabled = false }").await;
    let (s, v) = api.get("/history/map").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "history_disabled");
    assert!(!dir.join("store/history.sqlite").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
