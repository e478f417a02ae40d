//! The flow history: every flow event drained from the dataplane, aggregated into conversations per time bucket
//! ([`Conversation`]) in an SQLite database in control's store directory, kept for weeks.
//!
//! Ingestion never blocks the flow-log poller: [`History::offer`] turns a drained batch into compact records
//! and `try_send`s it into a bounded queue (full ⇒ the batch is dropped and counted). One writer thread
//! ([`ingest`]) owns the database's only writing connection: it aggregates records in memory per (bucket,
//! conversation) and flushes them every `flush_ms` or `flush_keys` keys in one transaction of UPSERTs, then
//! applies retention. Buckets are placed by the events' own `time`, never by this clock, and retention counts
//! back from the newest bucket stored, so weeks of history can be replayed (and tested) in seconds.
//!
//! Reads ([`History::conversations`], [`query`]) open their own read-only connection (WAL: readers never wait
//! for the writer); they are blocking calls, made from the blocking pool.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::IpNet;
use prometheus::{IntCounter, IntGauge, Registry};
use serde::Deserialize;

use crate::metrics::at_least;
use protocol::{FlowEvent, Verdict};

mod conversation;
mod ingest;
pub mod query;
mod store;

pub use conversation::{Conversation, ConversationKey};
pub use ingest::{service, Record};
pub use store::{verdict_code, Reader, ScanStats, StoreError};

/// `[history]` in the control config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Keep a flow history at all.
    pub enabled: bool,
    /// The database file; default `<store_dir>/history.sqlite`.
    pub path: Option<PathBuf>,
    /// Length of a bucket in seconds (60 to 86400, dividing a day). One hour by default: a conversation that
    /// lasts the whole 30-day retention costs 720 rows (8640 with 5-minute buckets), and a window over weeks
    /// rarely needs a finer edge; shorter windows are what the flow log's memory is for.
    #[serde(deserialize_with = "at_least::<_, 60>")]
    pub bucket_s: u64,
    /// Buckets older than this many days before the newest stored bucket are dropped (at least 1).
    #[serde(deserialize_with = "at_least::<_, 1>")]
    pub retention_days: u64,
    /// The database may hold at most this many bytes of live pages; beyond, the oldest buckets are dropped
    /// (at least 1 MiB).
    #[serde(deserialize_with = "at_least::<_, 1048576>")]
    pub max_bytes: u64,
    /// Longest time aggregated events wait in memory before they are written, in milliseconds (at least 10).
    #[serde(deserialize_with = "at_least::<_, 10>")]
    pub flush_ms: u64,
    /// Write as soon as this many distinct conversation-buckets wait in memory (at least 1).
    #[serde(deserialize_with = "at_least::<_, 1>")]
    pub flush_keys: u64,
    /// Drained batches that may wait for the writer (at least 1); one more is dropped and counted.
    #[serde(deserialize_with = "at_least::<_, 1>")]
    pub queue: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: true,
            path: None,
            bucket_s: 3600,
            retention_days: 30,
            max_bytes: 4 << 30,
            flush_ms: 1000,
            flush_keys: 100_000,
            queue: 256,
        }
    }
}

impl HistoryConfig {
    /// What `Config::validate` checks beyond the field minimums.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.bucket_s > 86_400 || 86_400 % self.bucket_s != 0 {
            return Err(("history.bucket_s", "must divide a day (86400) evenly"));
        }
        if self.retention_days > 3650 {
            return Err(("history.retention_days", "must be at most 3650"));
        }
        Ok(())
    }

    /// The database file for a store in `store_dir`.
    pub fn file(&self, store_dir: &Path) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| store_dir.join("history.sqlite"))
    }

    /// The retention in milliseconds.
    pub fn retention_ms(&self) -> u64 {
        self.retention_days * 86_400_000
    }
}

/// How far ahead of control's clock an event's time may be and still be kept.
pub const MAX_AHEAD: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Errors of the history (opening, writing or reading the database).
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the history writer has stopped")]
    WriterGone,
    #[error("cannot start the history writer: {0}")]
    Thread(std::io::Error),
}

/// The time range a read covers: buckets that start at or after `from`'s bucket and before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: SystemTime,
    pub to: SystemTime,
}

impl Window {
    /// Everything, whatever its age.
    pub fn all() -> Window {
        Window {
            from: SystemTime::UNIX_EPOCH,
            to: crate::time::from_unix_ms(i64::MAX as u64),
        }
    }
}

/// Selects conversations; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationFilter {
    /// Source address within this prefix (a host is a /32 or /128).
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    /// Either address within this prefix.
    pub addr: Option<IpNet>,
    pub proto: Option<u8>,
    /// [`ConversationKey::service`].
    pub service: Option<u16>,
    pub vlan: Option<u16>,
    /// Any of these verdicts (empty: all).
    pub verdicts: Vec<Verdict>,
    pub rule_id: Option<u32>,
    pub policy_version: Option<u32>,
    /// The gateway that reported it, or an HA pair one of whose members did.
    pub gateway: Option<String>,
    /// The members of the pair `gateway` names (none when it names a gateway; the API fills them in from the
    /// configured pairs): either matches.
    pub members: Vec<String>,
    /// The tier that decided ([`crate::flowlog::NO_TIER`]: none did).
    pub tier: Option<String>,
}

impl ConversationFilter {
    pub fn matches(&self, k: &ConversationKey) -> bool {
        self.src.is_none_or(|n| n.contains(&k.src))
            && self.dst.is_none_or(|n| n.contains(&k.dst))
            && self
                .addr
                .is_none_or(|n| n.contains(&k.src) || n.contains(&k.dst))
            && self.proto.is_none_or(|p| p == k.proto)
            && self.service.is_none_or(|s| s == k.service)
            && self.vlan.is_none_or(|v| v == k.vlan)
            && (self.verdicts.is_empty() || self.verdicts.contains(&k.verdict))
            && self.rule_id.is_none_or(|r| r == k.rule_id)
            && self.policy_version.is_none_or(|v| v == k.policy_version)
            && self.gateway.as_deref().is_none_or(|g| {
                k.gateway
                    .as_deref()
                    .is_some_and(|by| by == g || self.members.iter().any(|m| m.as_str() == by))
            })
            && self
                .tier
                .as_deref()
                .is_none_or(|t| match k.tier.as_deref() {
                    Some(tier) => tier == t,
                    None => t == crate::flowlog::NO_TIER,
                })
    }
}

/// How [`History::conversations`] returns what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// One [`Conversation`] per conversation and bucket.
    PerBucket,
    /// One per conversation over the whole window (`bucket_unix_ms`: the first bucket it was seen in).
    Window,
}

/// The history's own counters (exported once [`History::register_metrics`] is called).
pub(crate) struct Stats {
    pub events: IntCounter,
    pub dropped: IntCounter,
    pub refused: IntCounter,
    pub write_errors: IntCounter,
    pub expired_buckets: IntCounter,
    pub unreadable_rows: IntCounter,
    pub conversation_buckets: IntGauge,
    pub bytes: IntGauge,
}

impl Stats {
    fn new() -> Stats {
        let c = |n: &str, h: &str| IntCounter::new(n, h).expect("a valid counter name");
        let g = |n: &str, h: &str| IntGauge::new(n, h).expect("a valid gauge name");
        Stats {
            events: c(
                "bulkhead_history_events_total",
                "Flow events written to the flow history.",
            ),
            dropped: c(
                "bulkhead_history_dropped_events_total",
                "Flow events not kept in the history because its queue was full (or its writer stopped).",
            ),
            refused: c(
                "bulkhead_history_refused_events_total",
                "Flow events not kept because their time was unreadable or more than a day ahead of this clock.",
            ),
            write_errors: c(
                "bulkhead_history_write_errors_total",
                "Failed writes to the history database (their events are lost).",
            ),
            expired_buckets: c(
                "bulkhead_history_expired_buckets_total",
                "Buckets dropped from the history by retention (age or size).",
            ),
            unreadable_rows: c(
                "bulkhead_history_unreadable_rows_total",
                "History rows that queries left out because they could not be read (a damaged database); every query counts those it met.",
            ),
            conversation_buckets: g(
                "bulkhead_history_conversation_buckets",
                "Conversation-buckets stored in the history.",
            ),
            bytes: g(
                "bulkhead_history_bytes",
                "Bytes of live pages in the history database.",
            ),
        }
    }
}

/// What the writer thread is sent.
pub(crate) enum Message {
    Records(Vec<Record>),
    /// Write what is in memory, apply retention, then answer.
    Flush(SyncSender<Result<(), StoreError>>),
}

/// The flow history: the handle the flow-log poller offers events to and queries read from.
pub struct History {
    config: HistoryConfig,
    file: PathBuf,
    tx: SyncSender<Message>,
    stats: Arc<Stats>,
}

impl History {
    /// Opens (creating it, mode 0600, if needed) the database of a store in `store_dir`, migrates its schema,
    /// applies retention, and starts the writer thread.
    pub fn open(config: HistoryConfig, store_dir: &Path) -> Result<Arc<History>, HistoryError> {
        let file = config.file(store_dir);
        let db = store::Db::open(&file)?;
        let stats = Arc::new(Stats::new());
        let (tx, rx) = mpsc::sync_channel(config.queue as usize);
        ingest::spawn(db, rx, config.clone(), stats.clone())?;
        let history = Arc::new(History {
            config,
            file,
            tx,
            stats,
        });
        history.flush()?;
        Ok(history)
    }

    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Adds the history's counters to `registry` (the one `/metrics` renders).
    pub fn register_metrics(&self, registry: &Registry) -> prometheus::Result<()> {
        let s = &self.stats;
        for c in [
            &s.events,
            &s.dropped,
            &s.refused,
            &s.write_errors,
            &s.expired_buckets,
            &s.unreadable_rows,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(s.conversation_buckets.clone()))?;
        registry.register(Box::new(s.bytes.clone()))
    }

    /// Offers a batch of events drained from `gateway` without waiting: a full queue drops the batch, counted in
    /// `bulkhead_history_dropped_events_total`. Returns whether the batch was queued.
    ///
    /// An event whose `time` is unreadable, or more than [`MAX_AHEAD`] ahead of this clock, is not kept (counted
    /// in `bulkhead_history_refused_events_total`): retention counts back from the newest bucket, so one event
    /// dated years ahead would otherwise expire everything.
    pub fn offer(&self, gateway: &str, events: &[FlowEvent]) -> bool {
        let latest = crate::time::unix_ms(SystemTime::now() + MAX_AHEAD);
        let gateway: Arc<str> = Arc::from(gateway);
        let records: Vec<Record> = events
            .iter()
            .filter_map(|e| Record::of(e, self.config.bucket_s))
            .filter(|r| r.unix_ms <= latest)
            .map(|mut r| {
                r.key.gateway = Some(gateway.clone());
                r
            })
            .collect();
        self.stats
            .refused
            .inc_by((events.len() - records.len()) as u64);
        self.offer_records(records)
    }

    /// [`offer`](Self::offer) for records already made (the benchmark makes them once).
    pub fn offer_records(&self, records: Vec<Record>) -> bool {
        if records.is_empty() {
            return true;
        }
        let n = records.len() as u64;
        match self.tx.try_send(Message::Records(records)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.inc_by(n);
                false
            }
        }
    }

    /// Writes everything offered so far and applies retention, waiting for it (tests, benchmarks, shutdown).
    pub fn flush(&self) -> Result<(), HistoryError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Message::Flush(tx))
            .map_err(|_| HistoryError::WriterGone)?;
        rx.recv().map_err(|_| HistoryError::WriterGone)??;
        Ok(())
    }

    /// Flow events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.get()
    }

    /// Flow events not kept for their time (unreadable, or too far ahead).
    pub fn refused(&self) -> u64 {
        self.stats.refused.get()
    }

    /// Rows queries skipped because they could not be read, over this handle's life.
    pub fn unreadable_rows(&self) -> u64 {
        self.stats.unreadable_rows.get()
    }

    /// The conversations of `window` that match `filter`, ordered by bucket then key (per bucket) or by key
    /// (over the window), and the rows skipped as unreadable. A blocking call: from async code, run it on the
    /// blocking pool.
    pub fn conversations(
        &self,
        window: Window,
        filter: &ConversationFilter,
        grouping: Grouping,
    ) -> Result<(Vec<Conversation>, ScanStats), HistoryError> {
        let reader = self.reader()?;
        let mut out = Vec::new();
        let stats = match grouping {
            Grouping::PerBucket => reader.scan(window, filter, |c| out.push(c.clone()))?,
            Grouping::Window => {
                let mut by_key: std::collections::HashMap<ConversationKey, Conversation> =
                    std::collections::HashMap::new();
                let stats = reader.scan(window, filter, |c| match by_key.get_mut(&c.key) {
                    Some(a) => merge(a, c),
                    None => {
                        by_key.insert(c.key.clone(), c.clone());
                    }
                })?;
                out.extend(by_key.into_values());
                out.sort_by(|a, b| key_order(&a.key).cmp(&key_order(&b.key)));
                stats
            }
        };
        Ok((out, stats))
    }

    /// A read-only connection to the database (for [`query`]).
    pub fn reader(&self) -> Result<store::Reader, HistoryError> {
        Ok(store::Reader::open(
            &self.file,
            self.config.bucket_s,
            self.stats.unreadable_rows.clone(),
        )?)
    }

    /// The oldest and newest bucket starts stored (Unix ms), if any.
    pub fn extent(&self) -> Result<Option<(u64, u64)>, HistoryError> {
        Ok(self.reader()?.extent()?)
    }
}

/// Adds `c`'s counts to `into` (same key).
pub fn merge(into: &mut Conversation, c: &Conversation) {
    into.bucket_unix_ms = into.bucket_unix_ms.min(c.bucket_unix_ms);
    into.first_unix_ms = into.first_unix_ms.min(c.first_unix_ms);
    into.last_unix_ms = into.last_unix_ms.max(c.last_unix_ms);
    into.flows += c.flows;
    for i in 0..2 {
        into.packets[i] += c.packets[i];
        into.bytes[i] += c.bytes[i];
    }
}

/// The fields of a key in [`key_order`].
type KeyOrder<'a> = (
    IpAddr,
    IpAddr,
    u8,
    u16,
    u16,
    u8,
    u32,
    u32,
    Option<&'a str>,
    Option<&'a str>,
);

/// A total order of keys: addresses, then service, then the rest.
pub(crate) fn key_order(k: &ConversationKey) -> KeyOrder<'_> {
    (
        k.src,
        k.dst,
        k.proto,
        k.service,
        k.vlan,
        verdict_code(k.verdict),
        k.rule_id,
        k.policy_version,
        k.gateway.as_deref(),
        k.tier.as_deref(),
    )
}

#[cfg(test)]
mod tests;
