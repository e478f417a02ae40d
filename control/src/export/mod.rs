//! SIEM export: flow events (and audit entries) sent as they happen to syslog receivers (RFC 5424 over UDP,
//! TCP or TLS, JSON or CEF bodies) and IPFIX collectors (RFC 7011 over UDP).
//!
//! Export never blocks control or the dataplane. Each configured exporter has a bounded queue and its own task;
//! the flow-log poller and the store's audit append only `try_send` into those queues (full: the item is dropped
//! and counted, `reason="queue_full"`). A task that loses its receiver reconnects with exponential backoff
//! (capped) while its queue fills and overflows; what it fails to send is counted (`reason="send_error"`). So a
//! receiver down for minutes loses exactly what `bulkhead_export_dropped_total` says, and export resumes by
//! itself. See `docs/export.md`.
//!
//! * [`community_id`]: Community ID v1 of a flow.
//! * [`flow`]: [`ExportedFlow`] (an event with what control adds: Community ID, Zeek-style `conn_state`).
//! * [`syslog`]: RFC 5424 framing, JSON and CEF bodies, the syslog task.
//! * [`ipfix`]: RFC 7011 templates and data records, the IPFIX task.

pub mod community_id;
pub mod flow;
pub mod ipfix;
pub mod syslog;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Deserialize;
use tokio::sync::mpsc::{self, error::TrySendError};

pub use flow::ExportedFlow;

use crate::store::AuditEntry;

/// `[export]` in the control config: any number of syslog receivers and IPFIX collectors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    pub syslog: Vec<SyslogConfig>,
    pub ipfix: Vec<IpfixConfig>,
}

/// How syslog messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RFC 5426: one message per datagram.
    Udp,
    /// RFC 6587 octet counting over plain TCP.
    Tcp,
    /// RFC 5425: octet counting over TLS.
    Tls,
}

/// The body of a syslog message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The flow-log line (or the audit entry) as JSON.
    Json,
    /// ArcSight Common Event Format, `CEF:0|...`.
    Cef,
}

/// What an exporter sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Flows,
    Audit,
}

/// `[[export.syslog]]`: one syslog receiver.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// The `exporter` label of this receiver's metrics (unique, `[a-z0-9_-]`, at most 32 characters).
    pub name: String,
    /// `host:port` of the receiver (resolved at each connection).
    pub address: String,
    pub transport: Transport,
    #[serde(default = "default_format")]
    pub format: Format,
    /// `flows`, `audit` or both.
    #[serde(default = "default_streams")]
    pub streams: Vec<Stream>,
    /// TLS: the CA certificate(s) (PEM) the receiver's certificate must chain to.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// TLS: the name the receiver's certificate must carry (default: the host of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// TLS: a client certificate chain (PEM) and its key, for receivers that authenticate senders.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// HOSTNAME of each message (default: this machine's host name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// APP-NAME of each message.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// Syslog facility, 0..=23 (default 16, local0).
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// Items waiting to be sent at most; more are dropped (`queue_full`).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// First wait before reconnecting, in milliseconds; doubled after each failure up to `max_backoff_ms`.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
}

/// `[[export.ipfix]]`: one IPFIX collector.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpfixConfig {
    /// The `exporter` label of this collector's metrics (unique, `[a-z0-9_-]`, at most 32 characters).
    pub name: String,
    /// `host:port` of the collector (UDP).
    pub address: String,
    /// Observation domain id of every message.
    #[serde(default)]
    pub observation_domain: u32,
    /// Templates are sent at start and again this often, in seconds (RFC 7011 §8.4 over UDP; at least 1).
    #[serde(default = "default_template_interval")]
    pub template_interval_s: u64,
    /// Largest IPFIX message, in bytes (the path MTU less IP and UDP headers; 512..=65000).
    #[serde(default = "default_mtu")]
    pub max_message_bytes: usize,
    /// Items waiting to be sent at most; more are dropped (`queue_full`).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// First wait before reconnecting, in milliseconds; doubled after each failure up to `max_backoff_ms`.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
}

/// Queue and reconnection settings of any exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub queue: usize,
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl SyslogConfig {
    pub fn pacing(&self) -> Pacing {
        Pacing {
            queue: self.queue,
            backoff_ms: self.backoff_ms,
            max_backoff_ms: self.max_backoff_ms,
        }
    }
}

impl IpfixConfig {
    pub fn pacing(&self) -> Pacing {
        Pacing {
            queue: self.queue,
            backoff_ms: self.backoff_ms,
            max_backoff_ms: self.max_backoff_ms,
        }
    }
}

fn default_format() -> Format {
    Format::Json
}
fn default_streams() -> Vec<Stream> {
    vec![Stream::Flows, Stream::Audit]
}
fn default_app_name() -> String {
    "bulkhead".into()
}
fn default_facility() -> u8 {
    16
}
fn default_template_interval() -> u64 {
    60
}
fn default_mtu() -> usize {
    1400
}
fn default_queue() -> usize {
    10_000
}
fn default_backoff() -> u64 {
    200
}
fn default_max_backoff() -> u64 {
    30_000
}

/// A configuration the exporters cannot run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    #[error("export.{kind}[{index}].name {name:?}: use 1 to 32 of a-z, 0-9, '-' and '_'")]
    BadName {
        kind: &'static str,
        index: usize,
        name: String,
    },
    #[error("export: the name {0:?} is used twice (names label the metrics)")]
    DuplicateName(String),
    #[error("export.syslog[{index}]: {problem}")]
    Syslog { index: usize, problem: String },
    #[error("export.ipfix[{index}]: {problem}")]
    Ipfix { index: usize, problem: String },
    #[error("export.{kind}[{index}]: queue must be at least 1 and backoff_ms at least 10, at most max_backoff_ms")]
    Pacing { kind: &'static str, index: usize },
    #[error("export metrics: {0}")]
    Metrics(String),
}

impl ExportConfig {
    /// Checks what serde cannot: names, ranges, and that a TLS receiver has a CA to verify it against.
    pub fn validate(&self) -> Result<(), ExportError> {
        let mut names = BTreeSet::new();
        let all = self
            .syslog
            .iter()
            .enumerate()
            .map(|(i, s)| ("syslog", i, &s.name, s.pacing()))
            .chain(
                self.ipfix
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ("ipfix", i, &c.name, c.pacing())),
            );
        for (kind, index, name, pacing) in all {
            let valid = !name.is_empty()
                && name.len() <= 32
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !valid {
                return Err(ExportError::BadName {
                    kind,
                    index,
                    name: name.clone(),
                });
            }
            if !names.insert(name.as_str()) {
                return Err(ExportError::DuplicateName(name.clone()));
            }
            if pacing.queue == 0
                || pacing.backoff_ms < 10
                || pacing.backoff_ms > pacing.max_backoff_ms
            {
                return Err(ExportError::Pacing { kind, index });
            }
        }
        for (index, s) in self.syslog.iter().enumerate() {
            let problem = |p: &str| ExportError::Syslog {
                index,
                problem: p.into(),
            };
            if s.facility > 23 {
                return Err(problem("facility must be 0..=23"));
            }
            if s.streams.is_empty() {
                return Err(problem("streams is empty: name flows, audit or both"));
            }
            let tls_only = s.ca.is_some() || s.client_cert.is_some() || s.server_name.is_some();
            match s.transport {
                Transport::Tls if s.ca.is_none() => {
                    return Err(problem(
                        "transport \"tls\" needs `ca`, the CA file that verifies the receiver",
                    ))
                }
                Transport::Udp | Transport::Tcp if tls_only => {
                    return Err(problem(
                        "ca, server_name and client_cert apply to transport \"tls\" only",
                    ))
                }
                _ => {}
            }
            if s.client_cert.is_some() != s.client_key.is_some() {
                return Err(problem("client_cert and client_key go together"));
            }
            if !syslog::is_printable_token(&s.app_name, 48) {
                return Err(problem(
                    "app_name must be 1 to 48 printable ASCII characters",
                ));
            }
            if s.hostname
                .as_ref()
                .is_some_and(|h| !syslog::is_printable_token(h, 255))
            {
                return Err(problem(
                    "hostname must be 1 to 255 printable ASCII characters",
                ));
            }
        }
        for (index, c) in self.ipfix.iter().enumerate() {
            let problem = |p: &str| ExportError::Ipfix {
                index,
                problem: p.into(),
            };
            if !(512..=65000).contains(&c.max_message_bytes) {
                return Err(problem("max_message_bytes must be 512..=65000"));
            }
            if c.template_interval_s == 0 {
                return Err(problem("template_interval_s must be at least 1"));
            }
        }
        Ok(())
    }
}

/// One item in an exporter's queue.
#[derive(Debug, Clone)]
pub enum Item {
    Flow(Arc<ExportedFlow>),
    Audit(Arc<AuditEntry>),
}

/// Why an item was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The exporter's queue was full (its receiver is down or slower than the events).
    QueueFull,
    /// Sending failed (the receiver went away, refused it, or the item cannot be encoded).
    SendError,
}

impl DropReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::SendError => "send_error",
        }
    }
}

/// Counters of every exporter, labelled by its configured name.
#[derive(Clone)]
pub struct ExportMetrics {
    sent: IntCounterVec,
    dropped: IntCounterVec,
    reconnects: IntCounterVec,
    connected: IntGaugeVec,
}

impl ExportMetrics {
    fn new() -> ExportMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter")
        };
        ExportMetrics {
            sent: counter(
                "bulkhead_export_sent_total",
                "Items (flow events, audit entries) an exporter handed to its receiver.",
                &["exporter"],
            ),
            dropped: counter(
                "bulkhead_export_dropped_total",
                "Items an exporter lost, by reason (queue_full, send_error).",
                &["exporter", "reason"],
            ),
            reconnects: counter(
                "bulkhead_export_reconnects_total",
                "Connections an exporter re-established after losing one.",
                &["exporter"],
            ),
            connected: IntGaugeVec::new(
                Opts::new(
                    "bulkhead_export_connected",
                    "1 while an exporter holds a connection (or a socket, for UDP) to its receiver.",
                ),
                &["exporter"],
            )
            .expect("a valid gauge"),
        }
    }

    fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.sent.clone()))?;
        registry.register(Box::new(self.dropped.clone()))?;
        registry.register(Box::new(self.reconnects.clone()))?;
        registry.register(Box::new(self.connected.clone()))
    }

    /// The handles one exporter counts with (its series exist, at zero, from the start).
    fn exporter(&self, name: &str) -> Counters {
        let c = Counters {
            sent: self.sent.with_label_values(&[name]),
            queue_full: self
                .dropped
                .with_label_values(&[name, DropReason::QueueFull.as_str()]),
            send_error: self
                .dropped
                .with_label_values(&[name, DropReason::SendError.as_str()]),
            reconnects: self.reconnects.with_label_values(&[name]),
            connected: self.connected.with_label_values(&[name]),
        };
        c.connected.set(0);
        c
    }
}

/// One exporter's counters.
#[derive(Clone)]
pub struct Counters {
    pub sent: prometheus::IntCounter,
    pub queue_full: prometheus::IntCounter,
    pub send_error: prometheus::IntCounter,
    pub reconnects: prometheus::IntCounter,
    pub connected: prometheus::IntGauge,
}

impl Counters {
    pub fn dropped(&self, reason: DropReason, n: u64) {
        match reason {
            DropReason::QueueFull => self.queue_full.inc_by(n),
            DropReason::SendError => self.send_error.inc_by(n),
        }
    }
}

/// An exporter's end of its queue, as the flow-log poller and the store hold it.
struct Feed {
    streams: Vec<Stream>,
    tx: mpsc::Sender<Item>,
    counters: Counters,
}

impl Feed {
    fn offer(&self, stream: Stream, item: impl FnOnce() -> Item) {
        if !self.streams.contains(&stream) {
            return;
        }
        match self.tx.try_send(item()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                self.counters.dropped(DropReason::QueueFull, 1)
            }
        }
    }
}

/// Every configured exporter's queue. Offering never waits.
#[derive(Default)]
pub struct Exporters {
    feeds: Vec<Feed>,
}

impl std::fmt::Debug for Exporters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Exporters({})", self.feeds.len())
    }
}

impl Exporters {
    /// No exporter: offers go nowhere.
    pub fn none() -> Arc<Exporters> {
        Arc::new(Exporters::default())
    }

    /// Validates `config`, registers the export metrics in `registry` and starts one task per exporter (on the
    /// current tokio runtime).
    pub fn start(
        config: &ExportConfig,
        registry: &Registry,
    ) -> Result<Arc<Exporters>, ExportError> {
        config.validate()?;
        let metrics = ExportMetrics::new();
        metrics
            .register(registry)
            .map_err(|e| ExportError::Metrics(e.to_string()))?;
        let mut feeds = Vec::new();
        for (index, s) in config.syslog.iter().enumerate() {
            let sender = sender(index, s)?;
            let counters = metrics.exporter(&s.name);
            let (tx, rx) = mpsc::channel(s.queue);
            tokio::spawn(syslog::run(sender, rx, counters.clone()));
            feeds.push(Feed {
                streams: s.streams.clone(),
                tx,
                counters,
            });
        }
        for c in &config.ipfix {
            let counters = metrics.exporter(&c.name);
            let (tx, rx) = mpsc::channel(c.queue);
            tokio::spawn(ipfix::run(c.clone(), rx, counters.clone()));
            feeds.push(Feed {
                streams: vec![Stream::Flows],
                tx,
                counters,
            });
        }
        Ok(Arc::new(Exporters { feeds }))
    }

    /// Reads what the exporters will need from files (the TLS CAs, client certificates and keys), as
    /// [`start`](Self::start) does, without starting anything: for `--check`.
    pub fn check_files(config: &ExportConfig) -> Result<(), ExportError> {
        for (index, s) in config.syslog.iter().enumerate() {
            sender(index, s)?;
        }
        Ok(())
    }

    /// Queues a flow event for every exporter of flows.
    pub fn offer_flow(&self, flow: &Arc<ExportedFlow>) {
        for f in &self.feeds {
            f.offer(Stream::Flows, || Item::Flow(flow.clone()));
        }
    }

    /// Queues an audit entry for every exporter of the audit stream.
    pub fn offer_audit(&self, entry: &AuditEntry) {
        let mut shared = None;
        for f in &self.feeds {
            f.offer(Stream::Audit, || {
                Item::Audit(
                    shared
                        .get_or_insert_with(|| Arc::new(entry.clone()))
                        .clone(),
                )
            });
        }
    }
}

/// One exporter's connection to its receiver: the backoff between attempts, the `connected` gauge, the
/// `reconnects` counter, and one log line per change (not one per failed attempt).
pub struct Link {
    name: String,
    address: String,
    counters: Counters,
    backoff: Backoff,
    ever_connected: bool,
    reported_down: bool,
}

impl Link {
    pub fn new(name: &str, address: &str, pacing: Pacing, counters: Counters) -> Link {
        Link {
            name: name.to_string(),
            address: address.to_string(),
            counters,
            backoff: Backoff::new(pacing),
            ever_connected: false,
            reported_down: false,
        }
    }

    /// A connection is established.
    pub fn up(&mut self) {
        if self.ever_connected {
            self.counters.reconnects.inc();
        }
        if self.reported_down {
            eprintln!(
                "bulkhead-control: export {}: connected to {}",
                self.name, self.address
            );
        }
        self.ever_connected = true;
        self.reported_down = false;
        self.backoff.reset();
        self.counters.connected.set(1);
    }

    /// Connecting failed or the connection was lost: waits out the backoff before the next attempt.
    pub async fn down(&mut self, error: &(dyn std::fmt::Display + Sync)) {
        self.counters.connected.set(0);
        if !self.reported_down {
            eprintln!(
                "bulkhead-control: export {}: {}: {error}; retrying with backoff",
                self.name, self.address
            );
            self.reported_down = true;
        }
        tokio::time::sleep(self.backoff.next_wait()).await;
    }

    /// The exporter ends (control is stopping).
    pub fn close(&self) {
        self.counters.connected.set(0);
    }
}

/// The sender of syslog receiver `index` (its TLS files read).
fn sender(index: usize, config: &SyslogConfig) -> Result<syslog::Sender, ExportError> {
    syslog::Sender::new(config).map_err(|problem| ExportError::Syslog {
        index,
        problem: problem.to_string(),
    })
}

/// Exponential backoff between reconnection attempts: `backoff_ms`, doubled after each failure, at most
/// `max_backoff_ms`; back to the start after a success.
#[derive(Debug)]
pub struct Backoff {
    pacing: Pacing,
    next: u64,
}

impl Backoff {
    pub fn new(pacing: Pacing) -> Backoff {
        Backoff {
            pacing,
            next: pacing.backoff_ms,
        }
    }

    /// The wait before the next attempt (and doubles the one after).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.pacing.max_backoff_ms);
        Duration::from_millis(wait)
    }

    pub fn reset(&mut self) {
        self.next = self.pacing.backoff_ms;
    }
}

/// A UDP socket connected to the first address `address` resolves to.
pub async fn connected_udp(address: &str) -> std::io::Result<tokio::net::UdpSocket> {
    let addr = tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{address} resolves to nothing"),
            )
        })?;
    let local: std::net::SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(addr).await?;
    Ok(socket)
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests;
