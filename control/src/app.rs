//! The state every part of control shares (the REST handlers, the reconciler and the policy lifecycle), and
//! [`off_worker`], where they all run CPU-heavy work.

use std::sync::{Arc, Mutex, RwLock};

use crate::auth::{Failures, Tokens};
use crate::config::Config;
use crate::dataplane::{Dataplane, DataplaneError};
use crate::flowlog::FlowLog;
use crate::history::History;
use crate::metrics::Metrics;
use crate::rulehealth::ShadowCache;
use crate::store::Store;

/// Everything the handlers and the background tasks share.
///
/// Every store change and every push to the dataplane happens under one lock (the store's), so commits,
/// rollbacks, reverts and reconciliation are serialized.
pub struct App {
    pub store: tokio::sync::Mutex<Store>,
    pub tokens: RwLock<Tokens>,
    /// Failed authentications: counted, and slowed per source.
    pub auth_failures: Failures,
    pub dataplane: Dataplane,
    pub metrics: Arc<Metrics>,
    /// The flow log: its routes and the traffic map read its memory.
    pub flowlog: Arc<FlowLog>,
    /// The flow history (`None`: `[history] enabled = false`).
    pub history: Option<Arc<History>>,
    /// Shadowed rules of the last policy `rules/health` was asked about.
    pub shadow_cache: ShadowCache,
    pub config: Config,
    /// The last `status` answer of the dataplane (or why there was none), for `health`.
    pub dataplane_seen: Mutex<Result<protocol::Status, String>>,
    /// The last reconciliation that verified the dataplane runs the active version: (version, dataplane uptime).
    pub verified: Mutex<Option<(u64, f64)>>,
    /// Set while reconciliation refuses to move the dataplane to an older version than it runs (for `health`).
    pub refused: Mutex<Option<Downgrade>>,
}

/// The dataplane runs a newer version than the store's active one: pushing would move it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downgrade {
    pub active_version: u64,
    pub dataplane_version: u64,
}

pub type Shared = Arc<App>;

impl App {
    /// Forgets the last verification: the next reconciliation compares documents again.
    pub fn unverify(&self) {
        *self.verified.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Pushes `policy` to the dataplane as `version` (one durable step for the crash test); whatever the answer,
    /// the next reconciliation compares documents again.
    pub async fn push(
        &self,
        policy: &serde_json::Value,
        version: u64,
    ) -> Result<protocol::LoadPolicyResult, DataplaneError> {
        let pushed = self.dataplane.load_policy(policy, version).await;
        crate::crashpoint::step("after a push");
        self.unverify();
        pushed
    }
}

/// Runs CPU-heavy work (parsing, validating, compiling or comparing big documents) on the blocking pool, so
/// the async workers keep answering other requests (`GET /health` among them) meanwhile.
pub async fn off_worker<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(out) => out,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("blocking work did not finish: {e}"),
        },
    }
}
