//! Where conversations come from: any [`ConversationSource`]: the flow history ([`HistorySource`]), or, when
//! it is disabled, the flow log's in-memory ring ([`RingSource`]), aggregated by key into hourly buckets.

use std::collections::HashMap;
use std::sync::Arc;

use protocol::{EventKind, FlowEvent};
use serde_json::Value;

use crate::flowlog::FlowLog;
use crate::history::{
    Conversation, ConversationFilter, ConversationKey, Grouping as HistoryGrouping, History,
    ScanStats,
};
use crate::time::{from_unix_ms, unix_ms};

/// A time interval in Unix milliseconds, `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_unix_ms: u64,
    pub to_unix_ms: u64,
}

impl Window {
    pub fn contains(&self, unix_ms: u64) -> bool {
        self.from_unix_ms <= unix_ms && unix_ms < self.to_unix_ms
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the conversation source failed: {0}")]
    Failed(String),
}

/// Conversations seen in a window.
pub trait ConversationSource: Send + Sync {
    /// The window's conversations, and the stored records skipped because they could not be read (the answers
    /// carry their number as `unreadable_rows`: nothing is left out unsaid).
    fn conversations(&self, window: Window) -> Result<(Vec<Conversation>, ScanStats), SourceError>;
}

/// The flow history as a conversation source: its conversation-buckets whose bucket falls in the window
/// (a window is resolved to whole buckets, see [`History::conversations`]).
pub struct HistorySource(pub Arc<History>);

impl ConversationSource for HistorySource {
    fn conversations(&self, window: Window) -> Result<(Vec<Conversation>, ScanStats), SourceError> {
        let window = crate::history::Window {
            from: from_unix_ms(window.from_unix_ms),
            to: from_unix_ms(window.to_unix_ms),
        };
        self.0
            .conversations(
                window,
                &ConversationFilter::default(),
                HistoryGrouping::PerBucket,
            )
            // The scan has also added its unreadable rows to `bulkhead_history_unreadable_rows_total`.
            .map_err(|e| SourceError::Failed(e.to_string()))
    }
}

/// Bucket width of [`RingSource`]'s conversations.
const BUCKET_MS: u64 = 3_600_000;

/// The flow log's in-memory ring as a conversation source: every event in the window, aggregated. An event it
/// cannot read (a damaged line of the flow-log file, loaded into memory at start) is skipped and counted, in the
/// answer and in `bulkhead_flow_log_unreadable_events_total`, whatever the window: its time is unknown.
pub struct RingSource(pub Arc<FlowLog>);

impl ConversationSource for RingSource {
    fn conversations(&self, window: Window) -> Result<(Vec<Conversation>, ScanStats), SourceError> {
        let (events, _) = self.0.snapshot();
        let mut unparsed = 0;
        let events = events.iter().filter_map(|stored| {
            let event = event_of(&stored.json);
            unparsed += u64::from(event.is_none());
            event
        });
        let (conversations, mut stats) = aggregate(events, window);
        stats.unreadable += unparsed;
        self.0.count_unreadable(stats.unreadable);
        Ok((conversations, stats))
    }
}

/// The flow event of a line of the flow log (which adds `seq` to it), if it is one.
fn event_of(json: &str) -> Option<FlowEvent> {
    let mut line: Value = serde_json::from_str(json).ok()?;
    line.as_object_mut()?.remove("seq");
    serde_json::from_value::<FlowEvent>(line).ok()
}

/// Flow events aggregated into conversations per bucket, in the order their keys were first seen. `new` and
/// `denied` events count flows; `closed` ones carry packets and bytes. Events outside the window are left out;
/// those without a readable time too, counted as unreadable.
pub fn aggregate(
    events: impl IntoIterator<Item = FlowEvent>,
    window: Window,
) -> (Vec<Conversation>, ScanStats) {
    let mut at: HashMap<(ConversationKey, u64), usize> = HashMap::new();
    let mut out: Vec<Conversation> = Vec::new();
    let mut stats = ScanStats::default();
    for e in events {
        let Ok(time) = humantime::parse_rfc3339(&e.time) else {
            stats.unreadable += 1;
            continue;
        };
        let t = unix_ms(time);
        if !window.contains(t) {
            continue;
        }
        let service = crate::history::service(&e);
        let key = ConversationKey {
            src: e.src,
            dst: e.dst,
            proto: e.proto,
            service,
            vlan: e.vlan,
            verdict: e.verdict,
            rule_id: e.rule_id,
            policy_version: e.policy_version,
            gateway: None,
            tier: e.tier.as_deref().map(std::sync::Arc::from),
        };
        let bucket = t - t % BUCKET_MS;
        let i = *at.entry((key.clone(), bucket)).or_insert_with(|| {
            out.push(Conversation {
                key,
                bucket_unix_ms: bucket,
                first_unix_ms: t,
                last_unix_ms: t,
                flows: 0,
                packets: [0; 2],
                bytes: [0; 2],
            });
            out.len() - 1
        });
        let c = &mut out[i];
        c.first_unix_ms = c.first_unix_ms.min(t);
        c.last_unix_ms = c.last_unix_ms.max(t);
        match e.kind {
            EventKind::New | EventKind::Denied => c.flows += 1,
            EventKind::Closed => {
                for d in 0..2 {
                    c.packets[d] += e.packets[d];
                    c.bytes[d] += e.bytes[d];
                }
            }
        }
    }
    (out, stats)
}
