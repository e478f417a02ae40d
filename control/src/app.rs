//! The state every part of control shares (the REST handlers, the reconciler and the policy lifecycle), and
//! [`off_worker`], where they all run CPU-heavy work.

use std::sync::{Arc, RwLock};

use crate::auth::{Failures, Tokens};
use crate::config::Config;
use crate::dataplane::DataplaneError;
use crate::flowlog::FlowLog;
use crate::gateway::{Gateway, Gateways};
use crate::history::History;
use crate::metrics::Metrics;
use crate::rulehealth::ShadowCache;
use crate::store::Store;

/// Everything the handlers and the background tasks share.
///
/// Every store change and every push to a gateway happens under one lock (the store's), so commits,
/// rollbacks, reverts and reconciliation are serialized.
pub struct App {
    pub store: tokio::sync::Mutex<Store>,
    pub tokens: RwLock<Tokens>,
    /// Failed authentications: counted, and slowed per source.
    pub auth_failures: Failures,
    /// The managed gateways, and what control last learned of each.
    pub gateways: Gateways,
    pub metrics: Arc<Metrics>,
    /// The flow log: its routes and the traffic map read its memory.
    pub flowlog: Arc<FlowLog>,
    /// The flow history (`None`: `[history] enabled = false`).
    pub history: Option<Arc<History>>,
    /// Shadowed rules of the last policy `rules/health` was asked about.
    pub shadow_cache: ShadowCache,
    pub config: Config,
}

/// A gateway runs a newer version than the store's active one: pushing would move it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downgrade {
    pub active_version: u64,
    pub dataplane_version: u64,
}

pub type Shared = Arc<App>;

impl App {
    /// Loads `policy` on one gateway as `version` in one step (reconciliation; one durable step for the crash
    /// test); whatever the answer, the next reconciliation compares documents again.
    pub async fn push(
        &self,
        gateway: &Gateway,
        policy: &serde_json::Value,
        version: u64,
    ) -> Result<protocol::LoadPolicyResult, DataplaneError> {
        let pushed = gateway.client.load_policy(policy, version).await;
        crate::crashpoint::step("after a push");
        gateway.unverify();
        match &pushed {
            Ok(_) => gateway.enforces(version),
            Err(e) => gateway.failed(&format!("push of version {version}"), e),
        }
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
