//! Metrics: a simulated dataplane socket answering recorded `counters` reports (exact values), a real
//! `bulkhead-dataplane` on the namespace test bed with real traffic, `promtool check metrics`, a real
//! Prometheus server scraping `/metrics` over HTTPS (control's listener with its self-signed certificate), and the Grafana dashboard's queries against what is exported.
//! Needs root (test bed), ping, and Debian's `prometheus` package (`prometheus`, `promtool`).

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_control::dataplane::Dataplane;
use bulkhead_control::flowlog::{FlowLog, FlowLogConfig};
use bulkhead_control::metrics::{Metrics, MetricsConfig};
use protocol::{ErrorReply, EventBatch, Request};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

// ---- A simulated dataplane: answers `counters` with whatever the test set, and counts requests. ----

#[derive(Default)]
struct FakeState {
    counters: Value,
    events: VecDeque<Value>,
    requests: usize,
}

struct FakeDataplane {
    path: PathBuf,
    state: Arc<Mutex<FakeState>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeDataplane {
    fn start(path: &Path, counters: Value) -> FakeDataplane {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let state = Arc::new(Mutex::new(FakeState {
            counters,
            ..Default::default()
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut line = String::new();
                    BufReader::new(r).read_line(&mut line).await.unwrap();
                    let (_, request) = protocol::decode_request(&line);
                    let result = {
                        let mut s = st.lock().unwrap();
                        s.requests += 1;
                        // Counters as the test wrote them (some tests send a malformed report on purpose).
                        match request {
                            Ok(Request::Counters {}) => s.counters.clone(),
                            // The poller's status request (a standalone gateway: no `ha`).
                            Ok(Request::Status {}) => serde_json::to_value(protocol::Status {
                                policy_version: Some(1),
                                policy_loaded_at: None,
                                rules: 0,
                                workers: vec![1],
                                uptime_s: 1.0,
                                flows_active: 0,
                                dpdk: "fake".into(),
                                classifier: None,
                                last_swap: Default::default(),
                                prepared_version: None,
                                remote_control: None,
                                ha: None,
                            })
                            .unwrap(),
                            Ok(Request::Events { max: Some(max) }) => {
                                let n = max.min(s.events.len());
                                let events = s
                                    .events
                                    .drain(..n)
                                    .map(|e| serde_json::from_value(e).unwrap());
                                let batch = EventBatch {
                                    events: events.collect(),
                                    remaining: s.events.len(),
                                };
                                serde_json::to_value(batch).unwrap()
                            }
                            other => panic!("unexpected request {other:?}"),
                        }
                    };
                    let answer = protocol::encode_reply(&Value::Null, &Ok::<_, ErrorReply>(result));
                    w.write_all(format!("{answer}\n").as_bytes()).await.unwrap();
                });
            }
        });
        FakeDataplane {
            path: path.to_path_buf(),
            state,
            task,
        }
    }

    fn client(&self) -> Dataplane {
        Dataplane::new(&self.path).with_timeout(Duration::from_secs(5))
    }

    fn set(&self, counters: Value) {
        self.state.lock().unwrap().counters = counters;
    }

    fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// The dataplane goes away: nothing accepts on the socket any more.
    fn stop(self) {
        self.task.abort();
    }
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bh-metrics-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `counters` answer in the shape of dataplane/src/management.rs `counters_report` (two workers, the
/// demo policy's rules), plus per-port device counters in the shape of its `stats` events.
fn report(scale: u64, rules: &[u32]) -> Value {
    let drops = |deny: u64| {
        json!({
            "tx_unsent": 0, "no_policy": 0, "malformed": 1, "ethertype": 0, "fragment": 0,
            "policy_deny": deny, "policy_reject": 0, "policy_revoked": 0, "tcp_invalid": 3,
            "tcp_out_of_window": 0, "icmp_invalid": 0, "table_full": 2 * scale,
        })
    };
    let worker = |busy: u64, idle: u64| {
        json!({
            "rx_packets": 1000 * scale, "tx_packets": 990 * scale, "busy_polls": busy, "idle_polls": idle,
            "would_deny": 4 * scale, "flows_created": 20 * scale, "flows_closed": 15 * scale,
            "flows_active": 5, "flows_evicted": 8 * scale, "rejects_sent": 0, "events_dropped": 6, "events_rate_limited": 9 * scale,
            "drops": drops(7 * scale), "malformed": {"bad_ihl": 1, "truncated": 0},
            "conntrack": {"tcp_not_syn": 3},
        })
    };
    let mut totals = worker(0, 0);
    totals["drops"] = drops(7 * scale);
    let mut rule_list = vec![
        json!({"rule_id": 0, "packets": 7 * scale, "bytes": 420 * scale, "flows": 7 * scale, "last_hit_ms": 5, "name": "default"}),
    ];
    for id in rules {
        rule_list.push(json!({"rule_id": id, "packets": u64::from(*id) * scale, "bytes": 100 * u64::from(*id) * scale, "flows": scale, "last_hit_ms": null, "name": format!("r{id}")}));
    }
    json!({
        "policy_version": 3,
        "totals": totals,
        "workers": [worker(25 * scale, 75 * scale), worker(50 * scale, 50 * scale)],
        "rules": rule_list,
        "events_buffer_overflow": 11,
        "ports": [
            {"name": "a", "rx_packets": 1000 * scale, "tx_packets": 980 * scale, "rx_bytes": 64000 * scale, "tx_bytes": 62720 * scale, "rx_missed": 1, "rx_errors": 0, "tx_errors": 0, "rx_nombuf": 0},
            {"name": "b", "rx_packets": 990, "tx_packets": 1000, "rx_bytes": 63360, "tx_bytes": 64000, "rx_missed": 0, "rx_errors": 0, "tx_errors": 0, "rx_nombuf": 0},
        ],
    })
}

/// The value of the sample `series` (name with labels, exactly as rendered, but for the `gateway` label that
/// families of the dataplane's readings carry first: `local`, the one gateway of these tests), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    let labelled = match series.split_once('{') {
        Some((name, labels)) => format!("{name}{{gateway=\"local\",{labels}"),
        None => format!("{series}{{gateway=\"local\"}}"),
    };
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        [series, labelled.as_str()]
            .iter()
            .find_map(|s| l.strip_prefix(s)?.strip_prefix(' ')?.parse().ok())
    })
}

fn has_family(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[tokio::test]
async fn counters_are_mirrored_exactly_and_resets_stay_resets() {
    let dir = tempdir("mirror");
    let fake = FakeDataplane::start(&dir.join("dp.sock"), report(1, &[10, 20, 90]));
    let m = Metrics::new(MetricsConfig::default());
    m.poll_once(&fake.client()).await.unwrap();
    let t = m.render();
    for (series, want) in [
        ("bulkhead_dataplane_up", 1.0),
        ("bulkhead_drops_total{reason=\"policy_deny\"}", 7.0),
        ("bulkhead_drops_total{reason=\"table_full\"}", 2.0),
        ("bulkhead_flow_table_full_total", 2.0),
        ("bulkhead_malformed_packets_total{error=\"bad_ihl\"}", 1.0),
        (
            "bulkhead_conntrack_refusals_total{reason=\"tcp_not_syn\"}",
            3.0,
        ),
        ("bulkhead_flows_active", 5.0),
        ("bulkhead_flows_created_total", 20.0),
        ("bulkhead_flows_closed_total", 15.0),
        ("bulkhead_flows_evicted_total", 8.0),
        ("bulkhead_would_deny_packets_total", 4.0),
        ("bulkhead_rule_packets_total{rule_id=\"20\"}", 20.0),
        ("bulkhead_rule_bytes_total{rule_id=\"90\"}", 9000.0),
        ("bulkhead_rule_flows_total{rule_id=\"0\"}", 7.0),
        ("bulkhead_policy_active_version", 3.0),
        ("bulkhead_policy_rules", 3.0),
        ("bulkhead_worker_rx_packets_total{worker=\"1\"}", 1000.0),
        (
            "bulkhead_worker_polls_total{worker=\"0\",result=\"busy\"}",
            25.0,
        ),
        ("bulkhead_worker_busy_ratio{worker=\"0\"}", 0.25),
        ("bulkhead_worker_busy_ratio{worker=\"1\"}", 0.5),
        ("bulkhead_port_rx_bytes_total{port=\"a\"}", 64000.0),
        ("bulkhead_port_rx_missed_total{port=\"a\"}", 1.0),
        (
            "bulkhead_flow_events_dropped_total{stage=\"worker_queue\"}",
            6.0,
        ),
        (
            "bulkhead_flow_events_dropped_total{stage=\"dataplane_buffer\"}",
            11.0,
        ),
        ("bulkhead_flow_events_rate_limited_total", 9.0),
        (
            "bulkhead_dataplane_poll_errors_total{kind=\"unreachable\"}",
            0.0,
        ),
    ] {
        assert_eq!(sample(&t, series), Some(want), "{series} in\n{t}");
    }

    // Traffic goes on: the busy ratio is the interval's, not the lifetime's.
    fake.set(report(3, &[10, 20, 90]));
    m.poll_once(&fake.client()).await.unwrap();
    let t = m.render();
    assert_eq!(
        sample(&t, "bulkhead_drops_total{reason=\"policy_deny\"}"),
        Some(21.0)
    );
    // Worker 0 went from 25 busy / 75 idle to 75 / 225: 50 busy of the 200 polls in between.
    assert_eq!(
        sample(&t, "bulkhead_worker_busy_ratio{worker=\"0\"}"),
        Some(0.25)
    );

    // Rule 20 is deleted from the policy: its series go with it.
    fake.set(report(3, &[10, 90]));
    m.poll_once(&fake.client()).await.unwrap();
    let t = m.render();
    assert_eq!(
        sample(&t, "bulkhead_rule_packets_total{rule_id=\"20\"}"),
        None
    );
    assert_eq!(
        sample(&t, "bulkhead_rule_packets_total{rule_id=\"10\"}"),
        Some(30.0)
    );
    assert_eq!(sample(&t, "bulkhead_policy_rules"), Some(2.0));

    // The dataplane restarts: its counters start again from zero and are exported as they are (a counter
    // reset for Prometheus), never as a negative delta or a frozen sum.
    fake.set(report(1, &[10, 90]));
    m.poll_once(&fake.client()).await.unwrap();
    let t = m.render();
    assert_eq!(
        sample(&t, "bulkhead_drops_total{reason=\"policy_deny\"}"),
        Some(7.0)
    );
    assert_eq!(sample(&t, "bulkhead_dataplane_restarts_total"), Some(1.0));

    // The dataplane goes away: up is 0, its series are withdrawn, the failure is counted by kind.
    fake.stop();
    assert!(m
        .poll_once(&Dataplane::new(dir.join("dp.sock")))
        .await
        .is_err());
    let t = m.render();
    assert_eq!(sample(&t, "bulkhead_dataplane_up"), Some(0.0));
    assert_eq!(
        sample(
            &t,
            "bulkhead_dataplane_poll_errors_total{kind=\"unreachable\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &t,
            "bulkhead_dataplane_last_poll_error{kind=\"unreachable\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&t, "bulkhead_dataplane_last_poll_error{kind=\"timeout\"}"),
        Some(0.0)
    );
    assert!(!has_family(&t, "bulkhead_drops_total"), "{t}");
    assert!(!has_family(&t, "bulkhead_rule_packets_total"));
    assert!(has_family(
        &t,
        "bulkhead_dataplane_last_poll_success_timestamp_seconds"
    ));
    assert!(m.last_error().unwrap().contains("unreachable"));
    assert!(!m.dataplane_up());
}

#[tokio::test]
async fn a_malformed_report_is_a_counted_protocol_error() {
    let dir = tempdir("malformed");
    let fake = FakeDataplane::start(
        &dir.join("dp.sock"),
        json!({"totals": {"rx_packets": "many"}}),
    );
    let m = Metrics::new(MetricsConfig::default());
    let err = m.poll_once(&fake.client()).await.unwrap_err();
    assert!(err.to_string().contains("counters report"), "{err}");
    let t = m.render();
    assert_eq!(sample(&t, "bulkhead_dataplane_up"), Some(0.0));
    assert_eq!(
        sample(
            &t,
            "bulkhead_dataplane_poll_errors_total{kind=\"protocol\"}"
        ),
        Some(1.0)
    );
}

/// `router` served over HTTPS by control's own listener, with the self-signed certificate control makes in its
/// store (`dir`): the address and the certificate file (which clients trust).
async fn serve_tls(router: axum::Router, dir: &Path) -> (SocketAddr, PathBuf) {
    let text = format!(
        "store_dir = {:?}\ndataplane_socket = {:?}\n",
        dir.join("store"),
        dir.join("dp.sock")
    );
    let config = bulkhead_control::config::Config::parse(&text, &dir.join("control.toml")).unwrap();
    let tls = bulkhead_control::tls::Tls::start(&config).unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(bulkhead_control::http::serve(
        listener,
        router,
        bulkhead_control::http::Limits::new(&config),
        Some(tls.server),
        Default::default(),
        std::future::pending(),
    ));
    (addr, tls.cert_path)
}

async fn serve(router: axum::Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (addr, task)
}

#[tokio::test]
async fn scrapes_are_answered_from_the_last_poll_and_the_poller_neither_spins_nor_dies() {
    let dir = tempdir("poller");
    let sock = dir.join("dp.sock");
    let m = Metrics::new(MetricsConfig {
        poll_ms: 100,
        ..Default::default()
    });
    // Start with no dataplane at all: the poller keeps trying, at most once per poll_ms (a spinning retry
    // would make thousands of attempts), and /metrics says the dataplane is down.
    let t0 = Instant::now();
    m.watch(["local"]);
    let gateway = Arc::new(bulkhead_control::gateway::Gateway::new(Dataplane::new(
        &sock,
    )));
    let poller = tokio::spawn(m.clone().run(gateway));
    let (addr, server) = serve(m.router()).await;
    let failures = loop {
        let t = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(sample(&t, "bulkhead_dataplane_up"), Some(0.0));
        let failures = sample(
            &t,
            "bulkhead_dataplane_poll_errors_total{kind=\"unreachable\"}",
        )
        .unwrap();
        if failures >= 5.0 {
            break failures;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The first attempt is immediate, then one per 100 ms at most.
    let allowed = (t0.elapsed().as_millis() / 100 + 1) as f64;
    assert!(
        failures <= allowed,
        "{failures} attempts, at most {allowed} allowed"
    );

    // The dataplane comes up: the poller picks it up by itself.
    let fake = FakeDataplane::start(&sock, report(1, &[10]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !m.dataplane_up() {
        assert!(
            Instant::now() < deadline,
            "never came up: {:?}",
            m.last_error()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Many scrapes, and the dataplane sees only the poller's requests.
    poller.abort();
    let _ = poller.await;
    let before = fake.requests();
    let client = reqwest::Client::new();
    for _ in 0..50 {
        let resp = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        let t = resp.text().await.unwrap();
        assert_eq!(
            sample(&t, "bulkhead_drops_total{reason=\"policy_deny\"}"),
            Some(7.0)
        );
    }
    assert_eq!(fake.requests(), before, "a scrape reached the dataplane");
    server.abort();
}

fn promtool_check(text: &str) -> std::process::Output {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install -y prometheus)");
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, text.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn promtool_accepts_the_output() {
    let dir = tempdir("promtool");
    let fake = FakeDataplane::start(&dir.join("dp.sock"), report(2, &[10, 20]));
    let m = Metrics::new(MetricsConfig::default());
    let log = FlowLog::new(FlowLogConfig {
        path: dir.join("flows.jsonl"),
        ..Default::default()
    })
    .unwrap();
    log.register_metrics(m.registry()).unwrap();
    m.observe_commit(Duration::from_millis(40));
    m.poll_once(&fake.client()).await.unwrap();
    let text = m.render();
    let out = promtool_check(&text);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: a counter without _total and a non-base unit are reported.
    let bad = "# HELP x_milliseconds t\n# TYPE x_milliseconds counter\nx_milliseconds 1\n";
    assert!(!promtool_check(bad).status.success() || !promtool_check(bad).stdout.is_empty());
}

/// Kills the Prometheus server when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn prom_query(client: &reqwest::Client, prom: u16, q: &str) -> Option<String> {
    let url = format!("http://127.0.0.1:{prom}/api/v1/query");
    let resp = client.get(url).query(&[("query", q)]).send().await.ok()?;
    let v: Value = serde_json::from_str(&resp.text().await.ok()?).ok()?;
    assert_eq!(v["status"], "success", "{q}: {v}");
    Some(v["data"]["result"][0]["value"][1].as_str()?.to_string())
}

async fn wait_query(client: &reqwest::Client, prom: u16, q: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        last = prom_query(client, prom, q).await;
        if last.as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{q}: wanted {want}, last answer {last:?}");
}

#[tokio::test]
async fn a_real_prometheus_scrapes_and_sees_the_counters_and_their_reset() {
    let dir = tempdir("prometheus");
    let fake = FakeDataplane::start(&dir.join("dp.sock"), report(1, &[10, 20]));
    let m = Metrics::new(MetricsConfig::default());
    let log = FlowLog::new(FlowLogConfig {
        path: dir.join("flows.jsonl"),
        ..Default::default()
    })
    .unwrap();
    log.register_metrics(m.registry()).unwrap();
    m.observe_commit(Duration::from_millis(40));
    m.poll_once(&fake.client()).await.unwrap();
    let (addr, cert) = serve_tls(m.router(), &dir).await;

    let prom = testbed::free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: bulkhead\n    \
             scheme: https\n    tls_config:\n      ca_file: {cert:?}\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (apt-get install -y prometheus)");
    let _guard = Killed(child);
    let client = reqwest::Client::new();

    wait_query(&client, prom, "up{job=\"bulkhead\"}", "1").await;
    wait_query(
        &client,
        prom,
        "bulkhead_drops_total{reason=\"policy_deny\"}",
        "7",
    )
    .await;
    wait_query(
        &client,
        prom,
        "bulkhead_rule_packets_total{rule_id=\"20\"}",
        "20",
    )
    .await;
    wait_query(&client, prom, "bulkhead_dataplane_up", "1").await;

    // More traffic, then a dataplane restart: Prometheus sees one counter reset, no negative rate.
    fake.set(report(3, &[10, 20]));
    m.poll_once(&fake.client()).await.unwrap();
    wait_query(
        &client,
        prom,
        "bulkhead_drops_total{reason=\"policy_deny\"}",
        "21",
    )
    .await;
    fake.set(report(1, &[10, 20]));
    m.poll_once(&fake.client()).await.unwrap();
    wait_query(
        &client,
        prom,
        "bulkhead_drops_total{reason=\"policy_deny\"}",
        "7",
    )
    .await;
    wait_query(
        &client,
        prom,
        "resets(bulkhead_drops_total{reason=\"policy_deny\"}[10m])",
        "1",
    )
    .await;
    // 7 → 21, reset, 7: Prometheus counts 14 + 7 = 21 of increase (extrapolation aside, never below 0).
    let inc: f64 = prom_query(
        &client,
        prom,
        "increase(bulkhead_drops_total{reason=\"policy_deny\"}[10m])",
    )
    .await
    .unwrap()
    .parse()
    .unwrap();
    assert!(inc >= 14.0, "increase {inc}");

    // Every query of the Grafana dashboard parses and evaluates on a real Prometheus holding our series
    // (Grafana's variables replaced as Grafana would).
    let mut all = Vec::new();
    exprs(&dashboard(), &mut all);
    for e in &all {
        let q = e
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$instance", ".*");
        let url = format!("http://127.0.0.1:{prom}/api/v1/query");
        let v: Value = serde_json::from_str(
            &client
                .get(url)
                .query(&[("query", &q)])
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(v["status"], "success", "{q}: {v}");
    }
}

/// An HA member's status as its poller reads it: the active sends (3 updates not yet acknowledged), the
/// standby receives.
fn ha_member(role: protocol::Role, state: protocol::SyncState) -> protocol::HaStatus {
    let active = role == protocol::Role::Active;
    protocol::HaStatus {
        role,
        role_changes: 2,
        links: Vec::new(),
        sync: Some(protocol::SyncStatus {
            sending: active,
            peer: active.then(|| "127.0.0.1:7000".into()),
            listen: (!active).then(|| "127.0.0.1:7000".into()),
            state,
            lag: if active { 3 } else { 0 },
            sent: if active { 10 } else { 0 },
            acked: if active { 7 } else { 0 },
            resent: 0,
            lost: 0,
            received: if active { 0 } else { 42 },
        }),
        desired: Some(role),
        held: None,
        instance: None,
        peer: None,
        heartbeats: None,
    }
}

#[tokio::test]
async fn an_ha_members_role_and_sync_are_exported() {
    let dir = tempdir("ha");
    let fake = FakeDataplane::start(&dir.join("dp.sock"), report(1, &[10]));
    let m = Metrics::new(MetricsConfig::default());
    m.poll_once(&fake.client()).await.unwrap();
    assert!(!m.render().contains("bulkhead_ha_"), "a standalone gateway");
    m.set_ha(
        fake.client().name(),
        Some(ha_member(
            protocol::Role::Standby,
            protocol::SyncState::InSync,
        )),
    );
    let text = m.render();
    let g = fake.client().name().to_string();
    for (series, value) in [
        (
            format!("bulkhead_ha_role{{gateway=\"{g}\",role=\"standby\"}}"),
            1.0,
        ),
        (
            format!("bulkhead_ha_role{{gateway=\"{g}\",role=\"active\"}}"),
            0.0,
        ),
        (
            format!("bulkhead_ha_role_changes_total{{gateway=\"{g}\"}}"),
            2.0,
        ),
        (
            format!("bulkhead_ha_sync_state{{gateway=\"{g}\",state=\"in_sync\"}}"),
            1.0,
        ),
        (
            format!("bulkhead_ha_sync_state{{gateway=\"{g}\",state=\"disconnected\"}}"),
            0.0,
        ),
        (format!("bulkhead_ha_sync_lag{{gateway=\"{g}\"}}"), 0.0),
        (
            format!("bulkhead_ha_sync_updates_total{{gateway=\"{g}\",outcome=\"received\"}}"),
            42.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(value), "{series}\n{text}");
    }
}

// ---- The Grafana dashboard. ----

fn dashboard() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/grafana/bulkhead-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `expr` of every panel target (rows may nest panels).
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(e)) = map.get("expr") {
                out.push(e.clone());
            }
            map.values().for_each(|x| exprs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression uses: identifiers with our prefix, outside label matchers' values.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_string = None;
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if let Some(q) = in_string {
            if c == q {
                in_string = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if word.starts_with("bulkhead_") {
            names.insert(std::mem::take(&mut word));
        }
        word.clear();
        if c == '"' || c == '\'' || c == '`' {
            in_string = Some(c);
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let dir = tempdir("dashboard");
    let fake = FakeDataplane::start(&dir.join("dp.sock"), report(1, &[10, 20]));
    let m = Metrics::new(MetricsConfig::default());
    let log = FlowLog::new(FlowLogConfig {
        path: dir.join("flows.jsonl"),
        ..Default::default()
    })
    .unwrap();
    log.register_metrics(m.registry()).unwrap();
    m.observe_commit(Duration::from_millis(40));
    m.poll_once(&fake.client()).await.unwrap();
    // An HA member's role and sync, as its poller reads them from its status.
    m.set_ha(
        fake.client().name(),
        Some(ha_member(
            protocol::Role::Active,
            protocol::SyncState::Lagging,
        )),
    );
    // What a scrape actually contains after a poll (histograms also as _bucket, _sum, _count).
    let text = m.render();
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();

    let mut all = Vec::new();
    exprs(&dashboard(), &mut all);
    assert!(all.len() >= 10, "only {} queries", all.len());
    let mut used = BTreeSet::new();
    for e in &all {
        let names = metric_names(e);
        assert!(
            !names.is_empty(),
            "a query that uses no gateway metric: {e}"
        );
        for n in names {
            assert!(
                exported.contains(&n),
                "the dashboard queries {n} ({e}), which is not exported:\n{text}"
            );
            used.insert(n);
        }
    }
    // The subjects the dashboard exists for.
    for must in [
        "bulkhead_port_rx_bytes_total",
        "bulkhead_worker_rx_packets_total",
        "bulkhead_drops_total",
        "bulkhead_flows_active",
        "bulkhead_rule_packets_total",
        "bulkhead_worker_busy_ratio",
        "bulkhead_policy_active_version",
        "bulkhead_policy_commit_seconds_bucket",
        "bulkhead_flow_events_dropped_total",
        "bulkhead_flow_events_rate_limited_total",
        "bulkhead_dataplane_up",
    ] {
        assert!(used.contains(must), "the dashboard does not show {must}");
    }
    // The name extraction itself.
    assert_eq!(
        metric_names("sum by (reason) (rate(bulkhead_drops_total{reason!=\"bulkhead_x\"}[5m]))"),
        BTreeSet::from(["bulkhead_drops_total".to_string()])
    );
}

// ---- A real dataplane with real traffic. ----

/// The `bulkhead-dataplane` binary of this build, brought up to date first (it belongs to another package, so
/// Cargo does not hand its path to this test).
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

fn ping(side: &testbed::Side, to: &str, count: u32) -> bool {
    let c = count.to_string();
    side.run(&["ping", "-c", &c, "-i", "0.2", "-W", "1", to])
        .unwrap()
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_dataplane_with_traffic_and_a_restart() {
    let binary = dataplane_binary();
    let bed = tokio::task::spawn_blocking(move || {
        let mut opts = testbed::Options::new(binary);
        opts.policy = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json"));
        let bed = testbed::TestBed::start(&opts).unwrap_or_else(|e| panic!("test bed: {e}"));
        // Allowed by rule 20 (eng-ping); the reverse direction is denied by rule 90.
        assert!(ping(&bed.a, testbed::addr::B4, 3));
        assert!(!ping(&bed.b, testbed::addr::A4, 2));
        bed
    })
    .await
    .unwrap();
    let m = Metrics::new(MetricsConfig::default());
    m.poll_once(&Dataplane::new(bed.control_socket()))
        .await
        .unwrap();
    let t = m.render();
    let at_least = |series: &str, n: f64| {
        let v = sample(&t, series).unwrap_or_else(|| panic!("{series} missing:\n{t}"));
        assert!(v >= n, "{series} = {v}, expected at least {n}");
    };
    assert_eq!(sample(&t, "bulkhead_dataplane_up"), Some(1.0));
    assert_eq!(sample(&t, "bulkhead_policy_active_version"), Some(1.0));
    assert_eq!(sample(&t, "bulkhead_policy_rules"), Some(7.0));
    // 3 echo requests and 3 replies of one flow.
    at_least("bulkhead_rule_packets_total{rule_id=\"20\"}", 6.0);
    at_least("bulkhead_rule_flows_total{rule_id=\"20\"}", 1.0);
    at_least("bulkhead_rule_flows_total{rule_id=\"90\"}", 2.0);
    at_least("bulkhead_drops_total{reason=\"policy_deny\"}", 2.0);
    at_least("bulkhead_worker_rx_packets_total{worker=\"0\"}", 8.0);
    at_least("bulkhead_flows_created_total", 1.0);
    assert_eq!(sample(&t, "bulkhead_flows_evicted_total"), Some(0.0));
    assert_eq!(
        sample(&t, "bulkhead_rule_packets_total{rule_id=\"30\"}"),
        Some(0.0)
    );
    let ratio = sample(&t, "bulkhead_worker_busy_ratio{worker=\"0\"}").unwrap();
    assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    let out = promtool_check(&t);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Figures for the record (printed, not asserted): a reading's round trip and a scrape's rendering.
    let dp = Dataplane::new(bed.control_socket());
    let t0 = Instant::now();
    for _ in 0..100 {
        m.poll_once(&dp).await.unwrap();
    }
    let poll = t0.elapsed() / 100;
    let t0 = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(m.render());
    }
    let render = t0.elapsed() / 1000;
    eprintln!(
        "measured: counters reading {poll:?} per poll, /metrics rendering {render:?} per scrape ({} bytes)",
        m.render().len()
    );

    // The dataplane restarts: its counters start again from zero, and that is what is exported.
    let rx_before = sample(
        &m.render(),
        "bulkhead_worker_rx_packets_total{worker=\"0\"}",
    )
    .unwrap();
    let mut bed = bed;
    let bed = tokio::task::spawn_blocking(move || {
        bed.restart().unwrap();
        bed
    })
    .await
    .unwrap();
    m.poll_once(&dp).await.unwrap();
    let t = m.render();
    let rx_after = sample(&t, "bulkhead_worker_rx_packets_total{worker=\"0\"}").unwrap();
    assert!(
        rx_after < rx_before,
        "{rx_after} after, {rx_before} before the restart"
    );
    assert_eq!(sample(&t, "bulkhead_dataplane_restarts_total"), Some(1.0));
    assert_eq!(sample(&t, "bulkhead_dataplane_up"), Some(1.0));
    assert_eq!(sample(&t, "bulkhead_policy_active_version"), Some(1.0));
    drop(bed);
}
