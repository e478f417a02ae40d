//! The state every part of control shares (the REST handlers, the reconciler and the policy lifecycle), and
//! [`off_worker`], where they all run CPU-heavy work.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, RwLock};

use tokio::sync::{Mutex, MutexGuard};

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
/// Two locks: `changes` serializes what changes the active version or pushes to gateways (commits, rollbacks,
/// reverts, confirms, scheduled commits, reconciliation) for the whole operation, gateway round trips included;
/// `store` guards the store's data and is never held across a gateway round trip, so reads (the draft, versions,
/// audit) answer while a slow gateway holds up a commit. Always `changes` before `store`, never the other way
/// round ([`App::lock_for_change`]).
pub struct App {
    pub store: tokio::sync::Mutex<Store>,
    pub changes: tokio::sync::Mutex<()>,
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

/// The store, held for a change of the active version: other changes wait for the whole operation, while
/// [`Change::unlocked`] lets readers have the store across a gateway round trip.
pub struct Change<'a> {
    _serial: MutexGuard<'a, ()>,
    /// `None` only within [`Change::unlocked`], which borrows `self` mutably: no deref can see it.
    store: Option<MutexGuard<'a, Store>>,
    lock: &'a Mutex<Store>,
}

impl Change<'_> {
    /// Runs `work` (gateway round trips) with the store lock released, and takes it again after.
    pub async fn unlocked<T>(&mut self, work: impl Future<Output = T>) -> T {
        self.store = None;
        let out = work.await;
        self.store = Some(self.lock.lock().await);
        out
    }
}

impl Deref for Change<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        self.store
            .as_ref()
            .expect("the store is locked outside unlocked()")
    }
}

impl DerefMut for Change<'_> {
    fn deref_mut(&mut self) -> &mut Store {
        self.store
            .as_mut()
            .expect("the store is locked outside unlocked()")
    }
}

impl App {
    /// Waits for any other change of the active version to finish, then locks the store.
    pub async fn lock_for_change(&self) -> Change<'_> {
        let serial = self.changes.lock().await;
        Change {
            _serial: serial,
            store: Some(self.store.lock().await),
            lock: &self.store,
        }
    }

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
