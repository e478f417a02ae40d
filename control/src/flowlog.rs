//! Flow log: flow events (new, denied, closed) drained from the dataplane, kept in a bounded buffer for queries
//! (`GET /api/v1/flow-log`), delivered to subscribers (`GET /api/v1/flow-log/stream`, server-sent events; both
//! served by `api::flow_log`) and appended to a JSON-lines file with size-based rotation.
//!
//! One poller ([`FlowLog::run`]) owns the drain. Each event gets a sequence number (`seq`, increasing, and
//! continued from the file across control restarts) that clients page and resume with. Subscribers hang off
//! a broadcast channel: a slow one loses the oldest events it has not read and is told how many (an SSE
//! `lagged` event); the poller never waits for anyone.
//!
//! File durability: each drained batch is written with plain writes before the poller asks for more, so a
//! crash of control loses at most the batch in hand; `fdatasync` runs at most every `fsync_ms` (0: after every
//! batch) and always before a rotation, so a power loss loses at most the last `fsync_ms` of events.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounter, IntGauge, Registry};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use crate::dataplane::{Dataplane, DataplaneError};
use crate::export::{ExportedFlow, Exporters};
use crate::history::History;
use crate::metrics::at_least;
use crate::store::{PRIVATE_DIR, PRIVATE_FILE};
use protocol::{EventBatch, EventKind, FlowEvent};

/// `[flow_log]` in the control config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowLogConfig {
    /// The JSON-lines file; rotated files get `.1` (newest) ... `.keep` (oldest) suffixes.
    pub path: PathBuf,
    /// Rotate before the file would grow past this many bytes (at least 1024).
    #[serde(deserialize_with = "at_least::<_, 1024>")]
    pub rotate_bytes: u64,
    /// Rotated files kept (0: the file is started afresh at each rotation).
    pub keep: u32,
    /// Events kept in memory for the API (at least 1); also the largest `limit` a query may ask for.
    #[serde(deserialize_with = "at_least_usize::<_, 1>")]
    pub buffer: usize,
    /// How often the dataplane's event queue is drained, in milliseconds (at least 10).
    #[serde(deserialize_with = "at_least::<_, 10>")]
    pub poll_ms: u64,
    /// Longest time written events may wait for `fdatasync`, in milliseconds (0: after every batch).
    pub fsync_ms: u64,
    /// Events a stream subscriber may fall behind before it loses some (at least 16).
    #[serde(deserialize_with = "at_least_usize::<_, 16>")]
    pub stream_capacity: usize,
}

impl Default for FlowLogConfig {
    fn default() -> Self {
        FlowLogConfig {
            path: PathBuf::from("/var/log/bulkhead/flows.jsonl"),
            rotate_bytes: 64 << 20,
            keep: 5,
            buffer: 10_000,
            poll_ms: 500,
            fsync_ms: 1000,
            stream_capacity: 4096,
        }
    }
}

fn at_least_usize<'de, D: serde::Deserializer<'de>, const MIN: u64>(
    d: D,
) -> Result<usize, D::Error> {
    let v = at_least::<D, MIN>(d)?;
    usize::try_from(v).map_err(|_| serde::de::Error::custom(format!("{v} is too large")))
}

/// Events asked for per request; more are fetched at once while the dataplane reports some remaining.
const BATCH: usize = 10_000;

/// A flow event kind as query parameters spell it.
pub fn parse_kind(s: &str) -> Option<EventKind> {
    match s {
        "new" => Some(EventKind::New),
        "denied" => Some(EventKind::Denied),
        "closed" => Some(EventKind::Closed),
        _ => None,
    }
}

/// The fields filters (and the traffic map) look at, parsed once when the event arrives.
#[derive(Debug, Default, Clone)]
pub struct Key {
    pub kind: Option<EventKind>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub proto: Option<u8>,
    pub rule_id: Option<u32>,
    /// Segment names of each address (`None`: the event has no such list).
    pub src_segments: Option<Vec<String>>,
    pub dst_segments: Option<Vec<String>>,
    /// The event's wall time (its `time`).
    pub time: Option<SystemTime>,
    /// `allow`, `deny`, `reject` or `would_deny`.
    pub verdict: Option<String>,
    /// Both directions together.
    pub packets: u64,
    pub bytes: u64,
    /// The gateway that reported it (absent on records written before gateways were named).
    pub gateway: Option<String>,
    /// The tier that decided (absent: a v1 policy, the policy's default, or an older dataplane).
    pub tier: Option<String>,
}

impl Key {
    fn of(e: &FlowEvent) -> Key {
        Key {
            kind: Some(e.kind),
            src: Some(e.src),
            dst: Some(e.dst),
            sport: Some(e.sport),
            dport: Some(e.dport),
            proto: Some(e.proto),
            rule_id: Some(e.rule_id),
            src_segments: Some(e.src_segments.clone()),
            dst_segments: Some(e.dst_segments.clone()),
            time: humantime::parse_rfc3339(&e.time).ok(),
            verdict: Some(e.verdict.as_str().to_string()),
            packets: e.packets.iter().sum(),
            bytes: e.bytes.iter().sum(),
            gateway: None,
            tier: e.tier.clone(),
        }
    }

    /// The key of a line of the flow log file (an event with its `seq`); empty for a line that is not one.
    fn of_line(mut line: Map<String, Value>) -> Key {
        line.remove("seq");
        let gateway = match line.remove("gateway") {
            Some(Value::String(g)) => Some(g),
            _ => None,
        };
        serde_json::from_value::<FlowEvent>(Value::Object(line))
            .map(|e| Key {
                gateway,
                ..Key::of(&e)
            })
            .unwrap_or_default()
    }
}

/// One event as stored: its sequence number, its filter fields, and its JSON text (with `seq`).
#[derive(Debug)]
pub struct StoredEvent {
    pub seq: u64,
    pub key: Key,
    pub json: String,
}

/// Selects flow-log events; every given field must match.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FlowLogFilter {
    /// Any of these kinds (empty: all).
    pub kinds: Vec<EventKind>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// Either endpoint.
    pub addr: Option<IpAddr>,
    /// Either port.
    pub port: Option<u16>,
    pub proto: Option<u8>,
    pub rule_id: Option<u32>,
    /// A segment name in the event's `src_segments` / `dst_segments` ([`UNSEGMENTED`]: an empty list).
    pub src_segment: Option<String>,
    pub dst_segment: Option<String>,
    /// The gateway that reported the event, or an HA pair one of whose members did.
    pub gateway: Option<String>,
    /// The members of the pair `gateway` names (none when it names a gateway), filled in by the flow log from
    /// the configured pairs ([`FlowLog::know_pairs`]).
    pub members: Vec<String>,
    /// The tier that decided ([`NO_TIER`]: the event names none).
    pub tier: Option<String>,
}

/// The segment "name" of an address that is in no segment.
pub const UNSEGMENTED: &str = "-";

/// The tier "name" of an event no tier decided (a v1 policy, or the policy's default).
pub const NO_TIER: &str = "-";

fn in_segment(list: Option<&Vec<String>>, name: &str) -> bool {
    list.is_some_and(|l| {
        if name == UNSEGMENTED {
            l.is_empty()
        } else {
            l.iter().any(|n| n == name)
        }
    })
}

impl FlowLogFilter {
    pub fn matches(&self, k: &Key) -> bool {
        (self.kinds.is_empty() || k.kind.is_some_and(|x| self.kinds.contains(&x)))
            && self.src.is_none_or(|a| k.src == Some(a))
            && self.dst.is_none_or(|a| k.dst == Some(a))
            && self
                .addr
                .is_none_or(|a| k.src == Some(a) || k.dst == Some(a))
            && self
                .port
                .is_none_or(|p| k.sport == Some(p) || k.dport == Some(p))
            && self.proto.is_none_or(|p| k.proto == Some(p))
            && self.rule_id.is_none_or(|r| k.rule_id == Some(r))
            && self
                .src_segment
                .as_ref()
                .is_none_or(|n| in_segment(k.src_segments.as_ref(), n))
            && self
                .dst_segment
                .as_ref()
                .is_none_or(|n| in_segment(k.dst_segments.as_ref(), n))
            && self.gateway.as_ref().is_none_or(|g| {
                k.gateway
                    .as_ref()
                    .is_some_and(|by| by == g || self.members.contains(by))
            })
            && self.tier.as_ref().is_none_or(|t| match &k.tier {
                Some(tier) => tier == t,
                None => t == NO_TIER,
            })
    }
}

/// A flow-log query: the filter, and paging.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FlowLogQuery {
    pub filter: FlowLogFilter,
    /// Only events with a greater `seq`.
    pub since: Option<u64>,
    pub limit: Option<usize>,
}

/// The newest events, and the next sequence number.
struct Ring {
    events: VecDeque<Arc<StoredEvent>>,
    next_seq: u64,
}

/// Control-side counters of the flow log (exported once [`FlowLog::register_metrics`] is called).
struct Stats {
    events: IntCounter,
    write_errors: IntCounter,
    lost: IntCounter,
    rotations: IntCounter,
    lagged: IntCounter,
    unreadable: IntCounter,
    left_out_at_start: IntCounter,
    subscribers: IntGauge,
}

impl Stats {
    fn new() -> Stats {
        let c = |n: &str, h: &str| IntCounter::new(n, h).expect("a valid counter name");
        Stats {
            events: c(
                "bulkhead_flow_log_events_total",
                "Flow events drained from the dataplane.",
            ),
            write_errors: c(
                "bulkhead_flow_log_write_errors_total",
                "Failed writes or rotations of the flow-log file.",
            ),
            lost: c(
                "bulkhead_flow_log_file_lost_events_total",
                "Flow events that could not be written to the flow-log file.",
            ),
            rotations: c(
                "bulkhead_flow_log_rotations_total",
                "Rotations of the flow-log file.",
            ),
            lagged: c(
                "bulkhead_flow_log_stream_lagged_events_total",
                "Flow events stream subscribers missed because they fell behind.",
            ),
            unreadable: c(
                "bulkhead_flow_log_unreadable_events_total",
                "Flow events held in memory that rule suggestion or what-if left out because they could not be read (a damaged flow-log file); every query counts those it met.",
            ),
            left_out_at_start: c(
                "bulkhead_flow_log_lines_left_out_total",
                "Lines of the flow-log files left out when control read them back at start: not an event with a sequence number (a line torn by a crash, a damaged or edited file), or out of sequence order.",
            ),
            subscribers: IntGauge::new(
                "bulkhead_flow_log_stream_subscribers",
                "Open flow-log streams.",
            )
            .expect("a valid gauge name"),
        }
    }
}

pub struct FlowLog {
    config: FlowLogConfig,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<StoredEvent>>,
    file: Arc<Mutex<LogFile>>,
    stats: Stats,
    /// SIEM exporters: each event is offered to them once, without waiting.
    export: Arc<Exporters>,
    /// The flow history: each drained batch is offered to it once, without waiting.
    history: Option<Arc<History>>,
    /// Held from numbering a batch to writing it, so the file's lines stay in `seq` order when several
    /// gateways' pollers drain at once.
    writing: tokio::sync::Mutex<()>,
    /// The HA pairs and their members' names: a `gateway` filter naming a pair matches either member's events.
    pairs: std::sync::OnceLock<Vec<(String, Vec<String>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FlowLog {
    /// Opens (creating it and its directory if needed) the log file. Memory starts with the newest `buffer`
    /// events of the files, so the API and stream resumption survive a control restart, and numbering
    /// continues after them.
    pub fn new(config: FlowLogConfig) -> std::io::Result<Arc<FlowLog>> {
        FlowLog::with_outputs(config, Exporters::none(), None)
    }

    /// [`new`](Self::new), offering every event to `export` and every drained batch to `history`.
    pub fn with_outputs(
        config: FlowLogConfig,
        export: Arc<Exporters>,
        history: Option<Arc<History>>,
    ) -> std::io::Result<Arc<FlowLog>> {
        let file = LogFile::open(&config)?;
        let (events, left_out) = self::history(&config)?;
        if left_out > 0 {
            eprintln!(
                "bulkhead-control: flow log: {left_out} lines of {} and its rotations left out when read back \
                 (not events with a sequence number, or out of order; counted in bulkhead_flow_log_lines_left_out_total)",
                config.path.display()
            );
        }
        let stats = Stats::new();
        stats.left_out_at_start.inc_by(left_out);
        let next_seq = events.back().map_or(1, |e| e.seq + 1);
        let (tx, _) = broadcast::channel(config.stream_capacity.max(16));
        Ok(Arc::new(FlowLog {
            ring: Mutex::new(Ring { events, next_seq }),
            tx,
            file: Arc::new(Mutex::new(file)),
            stats,
            config,
            export,
            history,
            writing: tokio::sync::Mutex::new(()),
            pairs: std::sync::OnceLock::new(),
        }))
    }

    /// Makes a `gateway` filter naming one of `pairs` (a pair and its members' names) match either member's
    /// events. Once, at start; later calls change nothing.
    pub fn know_pairs(&self, pairs: Vec<(String, Vec<String>)>) {
        let _ = self.pairs.set(pairs);
    }

    /// `filter` with the members of the pair its `gateway` names, if it names one.
    fn resolve(&self, filter: &FlowLogFilter) -> FlowLogFilter {
        let mut filter = filter.clone();
        if let Some(g) = &filter.gateway {
            let pairs = self.pairs.get().map(Vec::as_slice).unwrap_or_default();
            if let Some((_, members)) = pairs.iter().find(|(pair, _)| pair == g) {
                filter.members.clone_from(members);
            }
        }
        filter
    }

    /// Adds the flow log's own counters to `registry` (the one `/metrics` renders).
    pub fn register_metrics(&self, registry: &Registry) -> prometheus::Result<()> {
        let s = &self.stats;
        for c in [
            &s.events,
            &s.write_errors,
            &s.lost,
            &s.rotations,
            &s.lagged,
            &s.unreadable,
            &s.left_out_at_start,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(s.subscribers.clone()))
    }

    /// Drains one gateway's events every `poll_ms` until the process ends (one such task per gateway); an
    /// unreachable gateway is retried at the same pace (no spinning, no crash), and state changes are logged once.
    pub async fn run(self: Arc<Self>, dataplane: Dataplane) {
        let dataplane = dataplane.with_timeout(Duration::from_secs(5));
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.poll_ms.max(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_up = None;
        loop {
            tick.tick().await;
            // Drain what is queued now, in batches, before waiting again.
            let result = loop {
                match self.poll_once(&dataplane).await {
                    Ok(remaining) if remaining > 0 => continue,
                    other => break other,
                }
            };
            let up = result.is_ok();
            if was_up != Some(up) {
                match result {
                    Ok(_) => eprintln!(
                        "bulkhead-control: flow log: draining the events of gateway {}",
                        dataplane.name()
                    ),
                    Err(e) => eprintln!(
                        "bulkhead-control: flow log: cannot read the events of gateway {} ({e}); retrying every {} ms",
                        dataplane.name(),
                        self.config.poll_ms
                    ),
                }
                was_up = Some(up);
            }
        }
    }

    /// Drains one batch of events of `dataplane`'s gateway: named after it, numbered, kept, streamed, written.
    /// Returns how many the gateway still holds.
    pub async fn poll_once(&self, dataplane: &Dataplane) -> Result<u64, DataplaneError> {
        let EventBatch { events, remaining } = dataplane.events(BATCH).await?;
        let remaining = remaining as u64;
        self.stats.subscribers.set(self.tx.receiver_count() as i64);
        if events.is_empty() {
            return Ok(remaining);
        }
        let _writing = self.writing.lock().await;
        let stored = self.ingest(dataplane.name(), events);
        let file = self.file.clone();
        let lines = stored.clone();
        let written = tokio::task::spawn_blocking(move || lock(&file).append(&lines)).await;
        match written {
            Ok(w) => {
                self.stats.rotations.inc_by(w.rotations);
                if let Some(e) = w.error {
                    self.stats.write_errors.inc();
                    self.stats.lost.inc_by((stored.len() - w.lines) as u64);
                    eprintln!(
                        "bulkhead-control: flow log: {}: {e}; {} event(s) not written",
                        self.config.path.display(),
                        stored.len() - w.lines
                    );
                }
            }
            Err(e) => {
                self.stats.write_errors.inc();
                self.stats.lost.inc_by(stored.len() as u64);
                eprintln!("bulkhead-control: flow log: writer failed: {e}");
            }
        }
        Ok(remaining)
    }

    /// Numbers `events` (reported by `gateway`), puts them in the ring and sends them to subscribers.
    pub(crate) fn ingest(&self, gateway: &str, events: Vec<FlowEvent>) -> Vec<Arc<StoredEvent>> {
        if let Some(history) = &self.history {
            // Never waits: a full queue drops the batch, counted by the history.
            history.offer(gateway, &events);
        }
        let mut out = Vec::with_capacity(events.len());
        {
            let mut ring = lock(&self.ring);
            for e in events {
                let key = Key {
                    gateway: Some(gateway.to_string()),
                    ..Key::of(&e)
                };
                // Through a `Value`: the file and the API have always had the event's keys in sorted order.
                let Ok(Value::Object(mut map)) = serde_json::to_value(&e) else {
                    continue;
                };
                let seq = ring.next_seq;
                ring.next_seq += 1;
                let flow = ExportedFlow::new(seq, e);
                map.insert("seq".into(), json!(seq));
                map.insert("gateway".into(), json!(gateway));
                flow.add_derived_fields(&mut map);
                self.export.offer_flow(&flow);
                let ev = Arc::new(StoredEvent {
                    seq,
                    key,
                    json: Value::Object(map).to_string(),
                });
                if ring.events.len() >= self.config.buffer {
                    ring.events.pop_front();
                }
                ring.events.push_back(ev.clone());
                out.push(ev);
            }
        }
        self.stats.events.inc_by(out.len() as u64);
        for ev in &out {
            // No subscriber is not an error.
            let _ = self.tx.send(ev.clone());
        }
        out
    }

    /// Events matching `q`, oldest first: with `since`, the first `limit` after it (page forward with the
    /// returned `next_since`); without, the newest `limit`. Also whether more matched than were returned.
    pub fn query(&self, q: &FlowLogQuery) -> (Vec<Arc<StoredEvent>>, bool) {
        let limit = q.limit.unwrap_or(100).min(self.config.buffer);
        let filter = self.resolve(&q.filter);
        let ring = lock(&self.ring);
        let mut out = Vec::new();
        let mut more = false;
        match q.since {
            Some(since) => {
                // Sequence numbers increase through the ring (with gaps where a file lost lines).
                let skip = ring.events.partition_point(|e| e.seq <= since);
                for e in ring.events.iter().skip(skip) {
                    if filter.matches(&e.key) {
                        if out.len() == limit {
                            more = true;
                            break;
                        }
                        out.push(e.clone());
                    }
                }
            }
            None => {
                for e in ring.events.iter().rev() {
                    if filter.matches(&e.key) {
                        if out.len() == limit {
                            more = true;
                            break;
                        }
                        out.push(e.clone());
                    }
                }
                out.reverse();
            }
        }
        (out, more)
    }

    /// Every event held in memory, oldest first (shared, so the lock is held only to copy pointers), and
    /// whether the buffer is full (older events were let go).
    pub fn snapshot(&self) -> (Vec<Arc<StoredEvent>>, bool) {
        let ring = lock(&self.ring);
        (
            ring.events.iter().cloned().collect(),
            ring.events.len() >= self.config.buffer,
        )
    }

    /// Adds `n` events of memory a reader skipped because it could not read them.
    pub fn count_unreadable(&self, n: u64) {
        self.stats.unreadable.inc_by(n);
    }

    /// Events of memory readers skipped because they could not read them, over this log's life.
    pub fn unreadable(&self) -> u64 {
        self.stats.unreadable.get()
    }

    /// Lines of the files left out when they were read back at start (see [`FlowLog::new`]).
    pub fn left_out_at_start(&self) -> u64 {
        self.stats.left_out_at_start.get()
    }

    /// The oldest and newest sequence numbers held in memory.
    pub fn bounds(&self) -> (Option<u64>, Option<u64>) {
        let ring = lock(&self.ring);
        (
            ring.events.front().map(|e| e.seq),
            ring.events.back().map(|e| e.seq),
        )
    }

    /// Events held in memory at most (`[flow_log] buffer`): also the largest `limit` a query may ask for.
    pub fn capacity(&self) -> usize {
        self.config.buffer
    }

    /// Subscribes to the events matching `filter` as they arrive, first replaying what memory still holds after
    /// `since`.
    pub fn subscribe(self: &Arc<Self>, filter: FlowLogFilter, since: Option<u64>) -> Subscription {
        let filter = self.resolve(&filter);
        // Subscribe before reading the replay so nothing falls between them; duplicates are skipped by seq.
        let rx = self.tx.subscribe();
        let replay: VecDeque<Arc<StoredEvent>> = match since {
            Some(since) => {
                let ring = lock(&self.ring);
                let skip = ring.events.partition_point(|e| e.seq <= since);
                ring.events
                    .iter()
                    .skip(skip)
                    .filter(|e| filter.matches(&e.key))
                    .cloned()
                    .collect()
            }
            None => VecDeque::new(),
        };
        let last = replay.back().map(|e| e.seq).or(since).unwrap_or(0);
        self.stats.subscribers.set(self.tx.receiver_count() as i64);
        Subscription {
            rx,
            replay,
            filter,
            last,
            log: self.clone(),
        }
    }
}

/// What a subscriber receives.
pub enum Delivery {
    Event(Arc<StoredEvent>),
    /// This many events were skipped because the subscriber fell behind (counted before filtering).
    Lagged(u64),
}

/// One subscriber's view of the flow log ([`FlowLog::subscribe`]).
pub struct Subscription {
    rx: broadcast::Receiver<Arc<StoredEvent>>,
    replay: VecDeque<Arc<StoredEvent>>,
    filter: FlowLogFilter,
    last: u64,
    log: Arc<FlowLog>,
}

impl Subscription {
    /// The next matching event (or lag notice); `None` once the flow log is gone.
    pub async fn next(&mut self) -> Option<Delivery> {
        if let Some(e) = self.replay.pop_front() {
            return Some(Delivery::Event(e));
        }
        loop {
            match self.rx.recv().await {
                Ok(e) if e.seq > self.last && self.filter.matches(&e.key) => {
                    self.last = e.seq;
                    return Some(Delivery::Event(e));
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.log.stats.lagged.inc_by(n);
                    return Some(Delivery::Lagged(n));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

// ---- The file. ----

struct LogFile {
    path: PathBuf,
    rotate_bytes: u64,
    keep: u32,
    fsync_every: Duration,
    file: File,
    size: u64,
    last_sync: Instant,
}

/// What one append did.
struct Written {
    /// Lines written (all of them unless `error`).
    lines: usize,
    rotations: u64,
    error: Option<std::io::Error>,
}

impl LogFile {
    fn open(config: &FlowLogConfig) -> std::io::Result<LogFile> {
        let path = config.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Private when we create it; an existing directory (say /var/log) is left as it is.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(PRIVATE_DIR)
                .create(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(PRIVATE_FILE)
            .open(&path)?;
        let mut size = file.metadata()?.len();
        if size > 0 {
            // A crash mid-write leaves a torn last line: end it, so the next line is not glued onto it.
            let mut last = [0u8];
            file.seek(SeekFrom::Start(size - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                size += 1;
            }
        }
        Ok(LogFile {
            path,
            rotate_bytes: config.rotate_bytes,
            keep: config.keep,
            fsync_every: Duration::from_millis(config.fsync_ms),
            file,
            size,
            last_sync: Instant::now(),
        })
    }

    /// Appends one line per event, rotating whenever the next line would not fit; a line is never split
    /// across files.
    fn append(&mut self, events: &[Arc<StoredEvent>]) -> Written {
        let mut w = Written {
            lines: 0,
            rotations: 0,
            error: None,
        };
        let mut buf = Vec::new();
        let mut in_buf = 0;
        for e in events {
            let len = e.json.len() as u64 + 1;
            if self.size > 0 && self.size + len > self.rotate_bytes {
                let done = self.file.write_all(&buf).and_then(|()| self.rotate());
                if let Err(err) = done {
                    w.error = Some(err);
                    return w;
                }
                w.lines += in_buf;
                w.rotations += 1;
                buf.clear();
                in_buf = 0;
            }
            buf.extend_from_slice(e.json.as_bytes());
            buf.push(b'\n');
            self.size += len;
            in_buf += 1;
        }
        if let Err(err) = self.file.write_all(&buf) {
            w.error = Some(err);
            return w;
        }
        w.lines += in_buf;
        if self.last_sync.elapsed() >= self.fsync_every {
            if let Err(err) = self.file.sync_data() {
                w.error = Some(err);
            }
            self.last_sync = Instant::now();
        }
        w
    }

    /// `path` → `path.1` → ... → `path.keep` (the oldest is dropped), then a fresh `path`.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for i in (1..self.keep).rev() {
                let from = rotated(&self.path, i);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, i + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(PRIVATE_FILE)
            .open(&self.path)?;
        // Make the renames and the new file durable.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        self.size = 0;
        self.last_sync = Instant::now();
        Ok(())
    }
}

/// `path.n`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// At most this much of the files is read at start.
const HISTORY_BYTES: u64 = 64 << 20;

/// The newest `buffer` events of the log files (newest file first, then `.1`, `.2`, ...), reading at most
/// [`HISTORY_BYTES`], and how many lines were left out: lines that do not parse or carry no `seq` (a torn last line
/// after a crash, a damaged file) and lines out of `seq` order (files edited or mixed up). Empty lines are not
/// counted.
/// A line written before events carried their Community ID, with it (and `conn_state`) added; `None` for a line
/// that has it, or is no event.
fn with_community_id(line: &Map<String, Value>, seq: u64) -> Option<Map<String, Value>> {
    if line.contains_key("community_id") {
        return None;
    }
    let mut event = line.clone();
    event.remove("seq");
    let event: FlowEvent = serde_json::from_value(Value::Object(event)).ok()?;
    let mut upgraded = line.clone();
    ExportedFlow::new(seq, event).add_derived_fields(&mut upgraded);
    Some(upgraded)
}

fn history(config: &FlowLogConfig) -> std::io::Result<(VecDeque<Arc<StoredEvent>>, u64)> {
    let mut out: VecDeque<Arc<StoredEvent>> = VecDeque::new();
    let mut left_out = 0;
    let mut budget = HISTORY_BYTES;
    let files = std::iter::once(config.path.clone())
        .chain((1..=config.keep).map(|n| rotated(&config.path, n)));
    for path in files {
        if out.len() >= config.buffer || budget == 0 {
            break;
        }
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let start = len.saturating_sub(budget);
        budget -= len - start;
        f.seek(SeekFrom::Start(start))?;
        let mut text = Vec::new();
        f.read_to_end(&mut text)?;
        let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        if start > 0 {
            lines.remove(0); // begun mid-line
        }
        // This file's events are older than everything collected so far.
        let mut older = Vec::new();
        for line in lines.into_iter().rev() {
            if out.len() + older.len() >= config.buffer {
                break;
            }
            if line.is_empty() {
                continue;
            }
            let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(line) else {
                left_out += 1;
                continue;
            };
            let Some(seq) = map.get("seq").and_then(Value::as_u64) else {
                left_out += 1;
                continue;
            };
            // Keep seq increasing even if files were edited or mixed up.
            if out.front().is_some_and(|newer| seq >= newer.seq)
                || older
                    .last()
                    .is_some_and(|newer: &Arc<StoredEvent>| seq >= newer.seq)
            {
                left_out += 1;
                continue;
            }
            let json = match with_community_id(&map, seq) {
                Some(upgraded) => Value::Object(upgraded).to_string(),
                None => String::from_utf8_lossy(line).into_owned(),
            };
            older.push(Arc::new(StoredEvent {
                seq,
                json,
                key: Key::of_line(map),
            }));
        }
        for e in older {
            out.push_front(e);
        }
    }
    Ok((out, left_out))
}
