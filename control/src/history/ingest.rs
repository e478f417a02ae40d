//! From flow events to stored conversation-buckets: [`Record`] (one event, reduced to what the history keeps)
//! and the writer thread that aggregates records in memory and flushes them in batched transactions.
//!
//! Counting, the same as the traffic map's, so a flow is never counted twice: a `new` or `denied` event counts
//! one flow (a `denied` one also its packets and bytes); a `closed` event adds the whole flow's packets and bytes
//! in both directions and no flow (its `new` event counted it already).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::{Db, StoreError};
use super::{merge, Conversation, ConversationKey, HistoryConfig, HistoryError, Message, Stats};
use crate::time::unix_ms;
use protocol::{EventKind, FlowEvent};

/// One flow event as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Start of the event's bucket, Unix ms.
    pub bucket_unix_ms: u64,
    /// The event's wall time, Unix ms.
    pub unix_ms: u64,
    pub key: ConversationKey,
    /// 1 for `new` and `denied` events, 0 for `closed` ones.
    pub flows: u64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

/// The conversation's service of an event: the destination port, or for ICMP and ICMPv6 `type << 8 | code`
/// ([`FlowEvent::icmp_type_code`]).
pub fn service(e: &FlowEvent) -> u16 {
    match e.icmp_type_code() {
        Some((t, c)) => u16::from(t) << 8 | u16::from(c),
        None => e.dport,
    }
}

impl Record {
    /// The record as a conversation-bucket of its own.
    pub fn conversation(&self) -> Conversation {
        Conversation {
            key: self.key.clone(),
            bucket_unix_ms: self.bucket_unix_ms,
            first_unix_ms: self.unix_ms,
            last_unix_ms: self.unix_ms,
            flows: self.flows,
            packets: self.packets,
            bytes: self.bytes,
        }
    }

    /// The record of `e` in buckets of `bucket_s` seconds, with no gateway; `None` when its `time` is not RFC 3339.
    pub fn of(e: &FlowEvent, bucket_s: u64) -> Option<Record> {
        let unix_ms = unix_ms(humantime::parse_rfc3339(&e.time).ok()?);
        let bucket_ms = bucket_s.max(1) * 1000;
        let (flows, counted) = match e.kind {
            EventKind::New => (1, false),
            EventKind::Denied => (1, true),
            EventKind::Closed => (0, true),
        };
        let (packets, bytes) = if counted {
            (e.packets, e.bytes)
        } else {
            ([0; 2], [0; 2])
        };
        Some(Record {
            bucket_unix_ms: unix_ms - unix_ms % bucket_ms,
            unix_ms,
            key: ConversationKey {
                src: e.src,
                dst: e.dst,
                proto: e.proto,
                service: service(e),
                vlan: e.vlan,
                verdict: e.verdict,
                rule_id: e.rule_id,
                policy_version: e.policy_version,
                gateway: None,
                tier: e.tier.as_deref().map(Arc::from),
            },
            flows,
            packets,
            bytes,
        })
    }
}

/// Conversation-buckets waiting to be written.
#[derive(Default)]
pub(crate) struct Pending {
    rows: HashMap<(u64, ConversationKey), Conversation>,
    events: u64,
}

impl Pending {
    pub fn add(&mut self, r: &Record) {
        self.events += 1;
        let c = r.conversation();
        match self.rows.entry((r.bucket_unix_ms, r.key.clone())) {
            Entry::Occupied(mut into) => merge(into.get_mut(), &c),
            Entry::Vacant(slot) => {
                slot.insert(c);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }
}

/// The writer: owns the database's writing connection.
struct Writer {
    db: Db,
    config: HistoryConfig,
    stats: Arc<Stats>,
    pending: Pending,
    /// When the gauges were last refreshed (counting rows scans the table: not at every flush).
    gauges_at: Option<Instant>,
}

/// How often the size gauges are refreshed at most (besides every explicit flush).
const GAUGES_EVERY: Duration = Duration::from_secs(30);

impl Writer {
    /// Writes what waits, then applies retention. A failed write loses the batch (counted and logged): the
    /// writer carries on with the next.
    fn write(&mut self, refresh_gauges: bool) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.pending);
        let mut result = Ok(());
        if pending.len() > 0 {
            match self.db.upsert(pending.rows.values()) {
                Ok(()) => self.stats.events.inc_by(pending.events),
                Err(e) => {
                    self.stats.write_errors.inc();
                    eprintln!(
                        "bulkhead-control: history: {e}; {} event(s) lost",
                        pending.events
                    );
                    result = Err(e);
                }
            }
        }
        match self
            .db
            .expire(self.config.retention_ms(), self.config.max_bytes)
        {
            Ok(n) => self.stats.expired_buckets.inc_by(n),
            Err(e) => {
                self.stats.write_errors.inc();
                eprintln!("bulkhead-control: history: retention: {e}");
                result = result.and(Err(e));
            }
        }
        let due = self.gauges_at.is_none_or(|t| t.elapsed() >= GAUGES_EVERY);
        if refresh_gauges || due {
            if let (Ok(rows), Ok(bytes)) = (self.db.rows(), self.db.live_bytes()) {
                self.stats.conversation_buckets.set(rows as i64);
                self.stats.bytes.set(bytes as i64);
            }
            self.gauges_at = Some(Instant::now());
        }
        result
    }

    fn run(mut self, rx: Receiver<Message>) {
        let flush_every = Duration::from_millis(self.config.flush_ms);
        let mut deadline: Option<Instant> = None;
        loop {
            let message = match deadline {
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match message {
                Ok(Message::Records(records)) => {
                    for r in &records {
                        self.pending.add(r);
                    }
                    if self.pending.len() as u64 >= self.config.flush_keys {
                        let _ = self.write(false);
                        deadline = None;
                    } else if deadline.is_none() {
                        deadline = Some(Instant::now() + flush_every);
                    }
                }
                Ok(Message::Flush(reply)) => {
                    let _ = reply.send(self.write(true));
                    deadline = None;
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.write(false);
                    deadline = None;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.write(false);
                    return;
                }
            }
        }
    }
}

/// Starts the writer thread on `db`; it ends once every sender of `rx` is gone, after writing what it holds.
pub(super) fn spawn(
    db: Db,
    rx: Receiver<Message>,
    config: HistoryConfig,
    stats: Arc<Stats>,
) -> Result<(), HistoryError> {
    let writer = Writer {
        db,
        config,
        stats,
        pending: Pending::default(),
        gauges_at: None,
    };
    std::thread::Builder::new()
        .name("history-writer".into())
        .spawn(move || writer.run(rx))
        .map(|_| ())
        .map_err(HistoryError::Thread)
}
