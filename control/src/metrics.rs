//! Prometheus metrics: `GET /metrics` in the text exposition format, from the `prometheus` crate.
//!
//! Scrapes never reach the dataplane: a poller ([`Metrics::run`]) reads the dataplane's `counters` report
//! (which its management thread aggregates from the workers' single-writer counters) once per `poll_ms`, and
//! every scrape is answered from the last reading. Any number of scrapers cost the dataplane nothing more.
//!
//! The dataplane's counters are monotonic for the life of its process and restart from zero when it restarts.
//! They are exported as Prometheus counters whose value IS the dataplane's value (a custom [`Collector`]
//! reports the last reading as is), never as deltas accumulated here: a dataplane restart then shows as an
//! ordinary counter reset, which `rate()`/`increase()` handle, and a control restart changes nothing. While the
//! dataplane is unreachable its series are not exported at all (Prometheus marks them stale) and
//! `bulkhead_dataplane_up` is 0. With several gateways, one poller per gateway keeps one reading each, and every
//! family of the readings carries a `gateway` label (its configured name: as many values as configured
//! gateways). See `docs/metrics.md` for the list.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, Histogram, HistogramOpts, IntGauge, Registry, TextEncoder};
use serde::{Deserialize, Deserializer};

use crate::dataplane::{Dataplane, DataplaneError};
use protocol::CountersReport;

/// `[metrics]` in the control config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// How often the dataplane's counters are read, in milliseconds (at least 100).
    #[serde(deserialize_with = "at_least::<_, 100>")]
    pub poll_ms: u64,
    /// How long one reading may wait for the dataplane, in milliseconds (at least 10).
    #[serde(deserialize_with = "at_least::<_, 10>")]
    pub timeout_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            poll_ms: 1000,
            timeout_ms: 2000,
        }
    }
}

/// A config integer with a lower bound, rejected with a precise message (serde adds the key's path).
pub(crate) fn at_least<'de, D: Deserializer<'de>, const MIN: u64>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v < MIN {
        return Err(serde::de::Error::custom(format!(
            "must be at least {MIN}, got {v}"
        )));
    }
    Ok(v)
}

// ---- The exported families. ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct Def {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
}

const fn def(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Def {
    Def {
        name,
        help,
        kind,
        labels,
    }
}

use Kind::{Counter as C, Gauge as G};

/// Every family the poller exports, in output order (plus the commit histogram, registered separately).
const DEFS: &[Def] = &[
    def("bulkhead_dataplane_up", G, &[], "1 if the last reading of the dataplane's counters succeeded, else 0."),
    def("bulkhead_dataplane_poll_errors_total", C, &["kind"], "Failed readings of the dataplane's counters, by kind (unreachable, timeout, io, protocol, refused)."),
    def("bulkhead_dataplane_last_poll_error", G, &["kind"], "1 for the kind of error that failed the last reading of the dataplane's counters; all 0 when it succeeded."),
    def("bulkhead_dataplane_last_poll_success_timestamp_seconds", G, &[], "Unix time of the last successful reading of the dataplane's counters."),
    def("bulkhead_dataplane_poll_duration_seconds", G, &[], "How long the last successful reading of the dataplane's counters took."),
    def("bulkhead_dataplane_restarts_total", C, &[], "Readings in which the dataplane's counters went backwards (the dataplane restarted)."),
    def("bulkhead_port_rx_packets_total", C, &["port"], "Packets received by the port's device."),
    def("bulkhead_port_tx_packets_total", C, &["port"], "Packets sent by the port's device."),
    def("bulkhead_port_rx_bytes_total", C, &["port"], "Bytes received by the port's device."),
    def("bulkhead_port_tx_bytes_total", C, &["port"], "Bytes sent by the port's device."),
    def("bulkhead_port_rx_missed_total", C, &["port"], "Packets the port's device dropped because no receive descriptor was free."),
    def("bulkhead_port_rx_nombuf_total", C, &["port"], "Receive failures of the port for lack of packet buffers."),
    def("bulkhead_port_rx_errors_total", C, &["port"], "Erroneous packets received by the port's device."),
    def("bulkhead_port_tx_errors_total", C, &["port"], "Failed transmissions of the port's device."),
    def("bulkhead_worker_rx_packets_total", C, &["worker"], "Packets the worker received."),
    def("bulkhead_worker_tx_packets_total", C, &["worker"], "Packets the worker sent."),
    def("bulkhead_worker_polls_total", C, &["worker", "result"], "Poll-loop iterations of the worker: busy (moved packets) or idle."),
    def("bulkhead_worker_busy_ratio", G, &["worker"], "Share of the worker's poll-loop iterations that moved packets since the previous reading (0..1)."),
    def("bulkhead_drops_total", C, &["reason"], "Packets dropped, by reason."),
    def("bulkhead_malformed_packets_total", C, &["error"], "Malformed packets dropped, by parse error."),
    def("bulkhead_conntrack_refusals_total", C, &["reason"], "Packets refused by connection tracking, by reason."),
    def("bulkhead_flows_active", G, &[], "Connections tracked right now."),
    def("bulkhead_flows_created_total", C, &[], "Connections that started being tracked."),
    def("bulkhead_flows_closed_total", C, &[], "Tracked connections that ended: expired, closed, displaced, revoked or killed."),
    def("bulkhead_flows_evicted_total", C, &[], "Unestablished flows evicted to make room for new ones in a full connection table."),
    def("bulkhead_flow_table_full_total", C, &[], "New connections refused because the connection table was full of established flows."),
    def("bulkhead_would_deny_packets_total", C, &[], "Packets that passed only because the policy is in monitor mode."),
    def("bulkhead_rejects_sent_total", C, &[], "TCP resets and ICMP unreachables sent for rejected packets."),
    def("bulkhead_rule_packets_total", C, &["rule_id"], "Packets decided by the rule (rule_id 0: the default action)."),
    def("bulkhead_rule_bytes_total", C, &["rule_id"], "Bytes decided by the rule (rule_id 0: the default action)."),
    def("bulkhead_rule_flows_total", C, &["rule_id"], "New flows and denied packets decided by the rule (rule_id 0: the default action)."),
    def("bulkhead_policy_active_version", G, &[], "Version of the policy the dataplane enforces (0: none)."),
    def("bulkhead_policy_rules", G, &[], "Rules in the active policy."),
    def("bulkhead_flow_events_dropped_total", C, &["stage"], "Flow events lost inside the dataplane: worker_queue (a worker's queue was full) or dataplane_buffer (not drained in time)."),
    def("bulkhead_flow_events_rate_limited_total", C, &[], "Denied-flow events not emitted because of the dataplane's per-worker rate limit."),
    def("bulkhead_ha_role", G, &["role"], "1 for the HA member's role (active or standby), 0 for the other; absent without [ha]."),
    def("bulkhead_ha_role_changes_total", C, &[], "Role changes of the HA member since its start."),
    def("bulkhead_ha_sync_state", G, &["state"], "1 for the connection-state sync's state (in_sync, lagging, resyncing, disconnected), 0 for the others."),
    def("bulkhead_ha_sync_lag", G, &[], "Sync updates sent to the HA peer and not yet acknowledged."),
    def("bulkhead_ha_sync_updates_total", C, &["outcome"], "Sync updates: sent, acked, resent (after a reconnection), lost (each answered by a resync), received (from the peer)."),
];

const ROLES: [(protocol::Role, &str); 2] = [
    (protocol::Role::Active, "active"),
    (protocol::Role::Standby, "standby"),
];

const SYNC_STATES: [(protocol::SyncState, &str); 4] = [
    (protocol::SyncState::InSync, "in_sync"),
    (protocol::SyncState::Lagging, "lagging"),
    (protocol::SyncState::Resyncing, "resyncing"),
    (protocol::SyncState::Disconnected, "disconnected"),
];

const ERROR_KINDS: [&str; 5] = ["unreachable", "timeout", "io", "protocol", "refused"];

fn error_kind(e: &DataplaneError) -> &'static str {
    match e {
        DataplaneError::Unreachable { .. } => "unreachable",
        DataplaneError::Timeout(_) => "timeout",
        DataplaneError::Io(_) => "io",
        DataplaneError::Protocol(_) => "protocol",
        DataplaneError::Refused { .. } => "refused",
    }
}

/// What the poller last learned; scrapes (and `GET /api/v1/stats`) read only this.
#[derive(Debug, Default)]
pub(crate) struct Reading {
    pub(crate) up: bool,
    /// The last good reading, when it arrived (wall time and monotonic time).
    pub(crate) report: Option<CountersReport>,
    pub(crate) read_at: Option<(SystemTime, Instant)>,
    /// The good reading before it, and when it arrived: rates are the deltas between the two.
    pub(crate) previous: Option<(CountersReport, Instant)>,
    pub(crate) busy_ratio: Vec<f64>,
    pub(crate) errors: BTreeMap<&'static str, u64>,
    pub(crate) last_error_kind: Option<&'static str>,
    pub(crate) last_success: Option<SystemTime>,
    pub(crate) last_duration: Duration,
    pub(crate) last_error: Option<String>,
    pub(crate) resets: u64,
    /// The HA member's role and sync, from its last `status` (none without `[ha]`, or when it did not answer).
    pub(crate) ha: Option<protocol::HaStatus>,
    /// Its rule counters across its restarts (rules health; the exported families stay as the dataplane has
    /// them).
    pub(crate) rule_totals: crate::rulehealth::RuleTotals,
}

impl Reading {
    pub(crate) fn fail(&mut self, kind: &'static str, message: String) {
        self.up = false;
        *self.errors.entry(kind).or_default() += 1;
        self.last_error = Some(message);
        self.last_error_kind = Some(kind);
    }

    pub(crate) fn succeed(&mut self, report: CountersReport, took: Duration) {
        let prev = self.report.take();
        // Busy ratio over the last interval, from the deltas; the lifetime ratio after a restart or at first.
        self.busy_ratio = report
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let old = prev.as_ref().and_then(|p| p.workers.get(i));
                let (busy, idle) = match old {
                    Some(o) if w.busy_polls >= o.busy_polls && w.idle_polls >= o.idle_polls => {
                        (w.busy_polls - o.busy_polls, w.idle_polls - o.idle_polls)
                    }
                    _ => (w.busy_polls, w.idle_polls),
                };
                if busy + idle == 0 {
                    0.0
                } else {
                    busy as f64 / (busy + idle) as f64
                }
            })
            .collect();
        let restarted = prev.as_ref().is_some_and(|p| went_backwards(p, &report));
        if restarted {
            self.resets += 1;
        }
        self.rule_totals.update(&report.rules, restarted);
        let now = (SystemTime::now(), Instant::now());
        self.previous = prev.zip(self.read_at.map(|(_, at)| at));
        self.report = Some(report);
        self.read_at = Some(now);
        self.up = true;
        self.last_success = Some(now.0);
        self.last_duration = took;
        self.last_error = None;
        self.last_error_kind = None;
    }
}

/// Whether any counter is lower in `new` than in `old`: the dataplane restarted in between
/// (its counters start again from zero), so deltas across the two mean nothing.
pub(crate) fn went_backwards(old: &CountersReport, new: &CountersReport) -> bool {
    let (a, b) = (&old.totals, &new.totals);
    let lower = |k: &BTreeMap<String, u64>, n: &BTreeMap<String, u64>| {
        k.iter()
            .any(|(key, v)| n.get(key).copied().unwrap_or(0) < *v)
    };
    b.rx_packets < a.rx_packets
        || b.tx_packets < a.tx_packets
        || b.busy_polls < a.busy_polls
        || b.idle_polls < a.idle_polls
        || b.flows_created < a.flows_created
        || b.flows_closed < a.flows_closed
        || b.would_deny < a.would_deny
        || lower(&a.drops, &b.drops)
        || new
            .workers
            .iter()
            .zip(&old.workers)
            .any(|(n, o)| n.rx_packets < o.rx_packets)
}

/// Builds the families of one scrape.
struct Out {
    families: Vec<MetricFamily>,
    index: HashMap<&'static str, usize>,
    /// The gateway whose reading is being added (its `gateway` label).
    gateway: String,
}

impl Out {
    fn new() -> Self {
        let families = DEFS
            .iter()
            .map(|d| {
                let mut f = MetricFamily::default();
                f.set_name(d.name.to_string());
                f.set_help(d.help.to_string());
                f.set_field_type(match d.kind {
                    Kind::Counter => MetricType::COUNTER,
                    Kind::Gauge => MetricType::GAUGE,
                });
                f
            })
            .collect();
        let index = DEFS.iter().enumerate().map(|(i, d)| (d.name, i)).collect();
        Out {
            families,
            index,
            gateway: String::new(),
        }
    }

    /// One sample of the current gateway; `values` in the order of the family's labels.
    fn add(&mut self, name: &str, values: &[&str], value: f64) {
        let Some(&i) = self.index.get(name) else {
            debug_assert!(false, "{name} is not in DEFS");
            return;
        };
        let def = &DEFS[i];
        debug_assert_eq!(def.labels.len(), values.len(), "{name}");
        let mut m = proto::Metric::default();
        m.set_label(
            std::iter::once((&GATEWAY_LABEL, self.gateway.as_str()))
                .chain(def.labels.iter().zip(values.iter().copied()))
                .map(|(k, v)| {
                    let mut l = proto::LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        );
        match def.kind {
            Kind::Counter => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.families[i].mut_metric().push(m);
    }

    fn finish(self) -> Vec<MetricFamily> {
        self.families
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

/// The label every family of the readings carries first.
const GATEWAY_LABEL: &str = "gateway";

/// Every gateway's reading, in the order the gateways were configured.
fn render_readings(readings: &[(String, Reading)]) -> Vec<MetricFamily> {
    let mut o = Out::new();
    for (gateway, r) in readings {
        o.gateway.clone_from(gateway);
        render_reading(&mut o, r);
    }
    o.finish()
}

fn render_reading(o: &mut Out, r: &Reading) {
    o.add("bulkhead_dataplane_up", &[], if r.up { 1.0 } else { 0.0 });
    for kind in ERROR_KINDS {
        let n = r.errors.get(kind).copied().unwrap_or(0);
        o.add("bulkhead_dataplane_poll_errors_total", &[kind], n as f64);
        let last = r.last_error_kind == Some(kind);
        o.add(
            "bulkhead_dataplane_last_poll_error",
            &[kind],
            f64::from(u8::from(last)),
        );
    }
    o.add("bulkhead_dataplane_restarts_total", &[], r.resets as f64);
    if let Some(t) = r.last_success {
        let unix = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        o.add(
            "bulkhead_dataplane_last_poll_success_timestamp_seconds",
            &[],
            unix.as_secs_f64(),
        );
    }
    let Some(rep) = r.report.as_ref().filter(|_| r.up) else {
        return;
    };
    o.add(
        "bulkhead_dataplane_poll_duration_seconds",
        &[],
        r.last_duration.as_secs_f64(),
    );
    for p in &rep.ports {
        let n = p.name.as_str();
        for (name, v) in [
            ("bulkhead_port_rx_packets_total", p.rx_packets),
            ("bulkhead_port_tx_packets_total", p.tx_packets),
            ("bulkhead_port_rx_bytes_total", p.rx_bytes),
            ("bulkhead_port_tx_bytes_total", p.tx_bytes),
            ("bulkhead_port_rx_missed_total", p.rx_missed),
            ("bulkhead_port_rx_nombuf_total", p.rx_nombuf),
            ("bulkhead_port_rx_errors_total", p.rx_errors),
            ("bulkhead_port_tx_errors_total", p.tx_errors),
        ] {
            o.add(name, &[n], v as f64);
        }
    }
    for (i, w) in rep.workers.iter().enumerate() {
        let i = i.to_string();
        o.add(
            "bulkhead_worker_rx_packets_total",
            &[&i],
            w.rx_packets as f64,
        );
        o.add(
            "bulkhead_worker_tx_packets_total",
            &[&i],
            w.tx_packets as f64,
        );
        o.add(
            "bulkhead_worker_polls_total",
            &[&i, "busy"],
            w.busy_polls as f64,
        );
        o.add(
            "bulkhead_worker_polls_total",
            &[&i, "idle"],
            w.idle_polls as f64,
        );
    }
    for (i, ratio) in r.busy_ratio.iter().enumerate() {
        o.add("bulkhead_worker_busy_ratio", &[&i.to_string()], *ratio);
    }
    let t = &rep.totals;
    for (reason, n) in &t.drops {
        o.add("bulkhead_drops_total", &[reason], *n as f64);
    }
    for (error, n) in &t.malformed {
        o.add("bulkhead_malformed_packets_total", &[error], *n as f64);
    }
    for (reason, n) in &t.conntrack {
        o.add("bulkhead_conntrack_refusals_total", &[reason], *n as f64);
    }
    o.add("bulkhead_flows_active", &[], t.flows_active as f64);
    o.add("bulkhead_flows_created_total", &[], t.flows_created as f64);
    o.add("bulkhead_flows_closed_total", &[], t.flows_closed as f64);
    o.add("bulkhead_flows_evicted_total", &[], t.flows_evicted as f64);
    let table_full = t.drops.get("table_full").copied().unwrap_or(0);
    o.add("bulkhead_flow_table_full_total", &[], table_full as f64);
    o.add(
        "bulkhead_would_deny_packets_total",
        &[],
        t.would_deny as f64,
    );
    o.add("bulkhead_rejects_sent_total", &[], t.rejects_sent as f64);
    // The report lists exactly the active policy's rules (and 0, the default action): a rule deleted from
    // the policy disappears from the output with it.
    for rule in &rep.rules {
        let id = rule.rule_id.to_string();
        o.add("bulkhead_rule_packets_total", &[&id], rule.packets as f64);
        o.add("bulkhead_rule_bytes_total", &[&id], rule.bytes as f64);
        o.add("bulkhead_rule_flows_total", &[&id], rule.flows as f64);
    }
    o.add(
        "bulkhead_policy_active_version",
        &[],
        rep.policy_version.unwrap_or(0) as f64,
    );
    let rules = rep.rules.iter().filter(|r| r.rule_id != 0).count();
    o.add("bulkhead_policy_rules", &[], rules as f64);
    o.add(
        "bulkhead_flow_events_dropped_total",
        &["worker_queue"],
        t.events_dropped as f64,
    );
    o.add(
        "bulkhead_flow_events_dropped_total",
        &["dataplane_buffer"],
        rep.events_buffer_overflow as f64,
    );
    o.add(
        "bulkhead_flow_events_rate_limited_total",
        &[],
        t.events_rate_limited as f64,
    );
    if let Some(ha) = &r.ha {
        render_ha(o, ha);
    }
}

fn render_ha(o: &mut Out, ha: &protocol::HaStatus) {
    for (role, label) in ROLES {
        o.add(
            "bulkhead_ha_role",
            &[label],
            f64::from(u8::from(ha.role == role)),
        );
    }
    o.add(
        "bulkhead_ha_role_changes_total",
        &[],
        ha.role_changes as f64,
    );
    let Some(sync) = &ha.sync else { return };
    for (state, label) in SYNC_STATES {
        let on = u8::from(sync.state == state);
        o.add("bulkhead_ha_sync_state", &[label], f64::from(on));
    }
    o.add("bulkhead_ha_sync_lag", &[], sync.lag as f64);
    for (outcome, n) in [
        ("sent", sync.sent),
        ("acked", sync.acked),
        ("resent", sync.resent),
        ("lost", sync.lost),
        ("received", sync.received),
    ] {
        o.add("bulkhead_ha_sync_updates_total", &[outcome], n as f64);
    }
}

/// Reports the last reading as is (see the module docs for why not deltas).
struct DataplaneCollector {
    descs: Vec<Desc>,
    readings: Arc<Mutex<Vec<(String, Reading)>>>,
}

impl Collector for DataplaneCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        render_readings(&lock(&self.readings))
    }
}

/// A poisoned lock only means a panic elsewhere while holding it; the reading is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Metrics {
    registry: Registry,
    commit_latency: Histogram,
    reconcile_refused: IntGauge,
    /// Per gateway, in config order ([`Metrics::watch`]).
    readings: Arc<Mutex<Vec<(String, Reading)>>>,
    config: MetricsConfig,
}

impl Metrics {
    pub fn new(config: MetricsConfig) -> Arc<Metrics> {
        let registry = Registry::new();
        let commit_latency = Histogram::with_opts(
            HistogramOpts::new(
                "bulkhead_policy_commit_seconds",
                "Time from a commit request to the dataplane enforcing the new version.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("a valid histogram");
        registry
            .register(Box::new(commit_latency.clone()))
            .expect("registered once");
        let reconcile_refused = IntGauge::new(
            "bulkhead_control_reconcile_refused",
            "1 while reconciliation refuses to push the store's active version because the dataplane runs a \
             newer one (see GET /health), else 0.",
        )
        .expect("a valid gauge");
        registry
            .register(Box::new(reconcile_refused.clone()))
            .expect("registered once");
        let readings = Arc::new(Mutex::new(Vec::new()));
        let descs = DEFS
            .iter()
            .map(|d| {
                Desc::new(
                    d.name.to_string(),
                    d.help.to_string(),
                    std::iter::once(GATEWAY_LABEL)
                        .chain(d.labels.iter().copied())
                        .map(str::to_string)
                        .collect(),
                    HashMap::new(),
                )
                .expect("valid metric names (checked by the tests)")
            })
            .collect();
        registry
            .register(Box::new(DataplaneCollector {
                descs,
                readings: readings.clone(),
            }))
            .expect("names distinct from the histogram's");
        Arc::new(Metrics {
            registry,
            commit_latency,
            reconcile_refused,
            readings,
            config,
        })
    }

    /// Reserves a reading per gateway, in this order (the order of the output, and the first is the one
    /// [`with_reading`](Self::with_reading) reads by default).
    pub fn watch<'a>(&self, gateways: impl IntoIterator<Item = &'a str>) {
        let mut readings = lock(&self.readings);
        for name in gateways {
            if !readings.iter().any(|(n, _)| n == name) {
                readings.push((name.to_string(), Reading::default()));
            }
        }
    }

    /// Records how long a commit took from request to enforcement by the dataplane.
    pub fn observe_commit(&self, took: Duration) {
        self.commit_latency.observe(took.as_secs_f64());
    }

    /// Whether reconciliation currently refuses to move the dataplane back to an older version.
    pub fn set_reconcile_refused(&self, refused: bool) {
        self.reconcile_refused.set(i64::from(refused));
    }

    /// The registry `/metrics` renders: other parts of control (the flow log) add their collectors here.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether the last reading of every gateway succeeded.
    pub fn dataplane_up(&self) -> bool {
        let readings = lock(&self.readings);
        !readings.is_empty() && readings.iter().all(|(_, r)| r.up)
    }

    /// Runs `f` on the last reading of `gateway` (default: the first configured; for the stats and
    /// rules-health endpoints: never a new request to a gateway). `None` for a gateway never watched.
    pub(crate) fn with_reading<R>(
        &self,
        gateway: Option<&str>,
        f: impl FnOnce(&Reading) -> R,
    ) -> Option<R> {
        let readings = lock(&self.readings);
        let found = match gateway {
            None => readings.first(),
            Some(name) => readings.iter().find(|(n, _)| n == name),
        };
        found.map(|(_, r)| f(r))
    }

    /// Runs `f` on the last readings of `gateways` (those watched, in config order: an HA pair's members).
    pub(crate) fn with_readings<R>(
        &self,
        gateways: &[&str],
        f: impl FnOnce(&[(&str, &Reading)]) -> R,
    ) -> R {
        let readings = lock(&self.readings);
        let found: Vec<(&str, &Reading)> = readings
            .iter()
            .filter(|(n, _)| gateways.contains(&n.as_str()))
            .map(|(n, r)| (n.as_str(), r))
            .collect();
        f(&found)
    }

    /// Why the last reading of a gateway failed, if one did (the first such gateway's).
    pub fn last_error(&self) -> Option<String> {
        lock(&self.readings)
            .iter()
            .find_map(|(_, r)| r.last_error.clone())
    }

    /// Reads the dataplane's counters once and makes them what scrapes see.
    pub async fn poll_once(&self, dataplane: &Dataplane) -> Result<(), DataplaneError> {
        let t0 = Instant::now();
        let answer = dataplane.counters().await.map_err(|e| match e {
            DataplaneError::Protocol(m) => {
                DataplaneError::Protocol(format!("counters report: {m}"))
            }
            other => other,
        });
        let took = t0.elapsed();
        let mut readings = lock(&self.readings);
        let i = match readings.iter().position(|(n, _)| n == dataplane.name()) {
            Some(i) => i,
            None => {
                readings.push((dataplane.name().to_string(), Reading::default()));
                readings.len() - 1
            }
        };
        let r = &mut readings[i].1;
        match answer {
            Ok(report) => {
                r.succeed(report, took);
                Ok(())
            }
            Err(e) => {
                r.fail(error_kind(&e), e.to_string());
                Err(e)
            }
        }
    }

    /// Makes `ha` (the gateway's last HA status, `None` without `[ha]`) part of its reading.
    pub fn set_ha(&self, gateway: &str, ha: Option<protocol::HaStatus>) {
        if let Some((_, r)) = lock(&self.readings).iter_mut().find(|(n, _)| n == gateway) {
            r.ha = ha;
        }
    }

    /// Refreshes the readings from the gateway every `poll_ms`, until the process ends: its counters, and its
    /// status (which keeps `GET /gateways` and the HA families as fresh as the counters: a role change by
    /// keepalived shows within one poll). An unreachable dataplane is retried at the same pace (no spinning, no
    /// crash); state changes are logged once.
    pub async fn run(self: Arc<Self>, gateway: Arc<crate::gateway::Gateway>) {
        let dataplane = gateway
            .client
            .clone()
            .with_timeout(Duration::from_millis(self.config.timeout_ms));
        self.watch([dataplane.name()]);
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.poll_ms.max(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_up = None;
        loop {
            tick.tick().await;
            let result = self.poll_once(&dataplane).await;
            let up = result.is_ok();
            let ha = if up {
                gateway.refresh().await.ok().and_then(|s| s.ha)
            } else {
                None
            };
            self.set_ha(dataplane.name(), ha);
            if was_up != Some(up) {
                match result {
                    Ok(()) => eprintln!(
                        "bulkhead-control: metrics: reading the counters of gateway {}",
                        dataplane.name()
                    ),
                    Err(e) => eprintln!(
                        "bulkhead-control: metrics: cannot read the counters of gateway {} ({e}); retrying every {} ms",
                        dataplane.name(),
                        self.config.poll_ms
                    ),
                }
                was_up = Some(up);
            }
        }
    }

    /// `GET /metrics`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .with_state(self.clone())
    }

    /// The text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// The names of every family `/metrics` can export (whether or not it has samples right now).
    pub fn family_names(&self) -> Vec<String> {
        let mut names: Vec<String> = DEFS.iter().map(|d| d.name.to_string()).collect();
        names.extend(
            self.registry
                .gather()
                .into_iter()
                .map(|f| f.name().to_string()),
        );
        names.sort();
        names.dedup();
        names
    }
}

async fn scrape(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            TextEncoder::new().format_type().to_string(),
        )],
        m.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_a_valid_distinct_name() {
        let mut seen = std::collections::HashSet::new();
        for d in DEFS {
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(d.name.starts_with("bulkhead_"), "{}", d.name);
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                d.name
            );
        }
        // Metrics::new builds a Desc per family, which validates names and labels.
        let m = Metrics::new(MetricsConfig::default());
        assert!(m.family_names().len() > DEFS.len());
    }

    #[test]
    fn busy_ratio_is_per_interval_and_survives_a_restart() {
        let report = |busy: u64, idle: u64| CountersReport {
            workers: vec![protocol::WorkerSnapshot {
                busy_polls: busy,
                idle_polls: idle,
                ..Default::default()
            }],
            totals: protocol::WorkerSnapshot {
                busy_polls: busy,
                idle_polls: idle,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut r = Reading::default();
        r.succeed(report(10, 90), Duration::ZERO);
        assert_eq!(r.busy_ratio, [0.1]);
        r.succeed(report(60, 140), Duration::ZERO);
        assert_eq!(
            r.busy_ratio,
            [0.5],
            "50 busy of 100 polls since the last reading"
        );
        assert_eq!(r.resets, 0);
        r.succeed(report(3, 1), Duration::ZERO);
        assert_eq!(
            r.busy_ratio,
            [0.75],
            "after a restart: the new process's own ratio"
        );
        assert_eq!(r.resets, 1);
    }
}
