//! The state every part of control shares: the REST handlers, the reconciler and the policy lifecycle.

use std::sync::{Arc, Mutex, RwLock};

use crate::auth::Tokens;
use crate::config::Config;
use crate::dataplane::Dataplane;
use crate::flowlog::FlowLog;
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
    pub dataplane: Dataplane,
    pub metrics: Arc<Metrics>,
    /// The flow log: its routes and the traffic map read its memory.
    pub flowlog: Arc<FlowLog>,
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
}
