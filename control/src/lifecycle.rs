//! The policy lifecycle: commit the draft, confirm a commit, roll back to an earlier version, and revert an
//! unconfirmed commit whose deadline passed. Every activation creates a new version number, is pushed to the
//! dataplane and is audited. The REST handlers and the reconciler's background task both come here; nothing here
//! knows of HTTP (the handlers map [`LifecycleError`] to status codes and check ETags before calling).
//!
//! Callers hold the store lock for the whole operation, so lifecycle operations and reconciliation are serialized.

use std::time::{Duration, Instant, SystemTime};

use policy::{Policy, PolicyError};
use protocol::LoadPolicyResult;
use serde_json::json;

use crate::app::App;
use crate::config::MAX_CONFIRM_S;
use crate::dataplane::DataplaneError;
use crate::store::{ActiveFile, AuditEntry, Pending, Store, StoreError, VersionKind, VersionMeta};
use crate::time;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("confirm_within_s must be in 1..={MAX_CONFIRM_S}")]
    ConfirmWindow,
    #[error("the draft does not validate: {0}")]
    InvalidDraft(PolicyError),
    #[error("version {version} awaits confirmation (it reverts to {} at {}); confirm or roll back first",
        .pending.revert_to, time::rfc3339(time::from_unix_ms(.pending.deadline_unix_ms)))]
    ConfirmPending { version: u64, pending: Pending },
    #[error("the draft equals the active version {0}: nothing to commit")]
    NoChanges(u64),
    #[error("the first commit cannot be confirm-within: there is no earlier version to revert to")]
    NothingToRevertTo,
    #[error("no version is active")]
    NoActiveVersion,
    #[error("version {0} is not awaiting confirmation")]
    NotPending(u64),
    #[error("no version {0}")]
    UnknownVersion(u64),
    #[error("stored version: {0}")]
    InvalidStoredVersion(PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

type Result<T> = std::result::Result<T, LifecycleError>;

/// The confirm window of a commit: `within_s` seconds (1..=[`MAX_CONFIRM_S`]), or the configured
/// `confirm_timeout_s` when only `confirm` is asked, or none.
pub fn confirm_window(app: &App, within_s: Option<u64>, confirm: bool) -> Result<Option<u64>> {
    match (within_s, confirm) {
        (Some(s), _) if s == 0 || s > MAX_CONFIRM_S => Err(LifecycleError::ConfirmWindow),
        (Some(s), _) => Ok(Some(s)),
        (None, true) => Ok(Some(app.config.confirm_timeout_s)),
        (None, false) => Ok(None),
    }
}

/// A version made active by a commit or a rollback.
#[derive(Debug)]
pub struct Activated {
    pub version: u64,
    /// The version active before.
    pub previous: Option<u64>,
    /// The dataplane's `load_policy` report.
    pub dataplane: LoadPolicyResult,
    /// From the request's start to enforcement (also observed in the commit histogram).
    pub took: Duration,
    pub pending: Option<Pending>,
}

/// Commits the draft as the next version and pushes it; with a `window` (seconds) it reverts by itself unless
/// confirmed in time. `started` is when the request began (the commit time counts from there).
pub async fn commit(
    app: &App,
    store: &mut Store,
    who: &str,
    comment: String,
    window: Option<u64>,
    started: Instant,
) -> Result<Activated> {
    if let Some(pending) = store.active().and_then(|a| a.pending.clone()) {
        return Err(LifecycleError::ConfirmPending {
            version: store.active_version().unwrap_or(0),
            pending,
        });
    }
    let policy = Policy::new(store.draft().clone()).map_err(LifecycleError::InvalidDraft)?;
    if store.active_policy().map(|p| p.document()) == Some(policy.document()) {
        return Err(LifecycleError::NoChanges(
            store.active_version().unwrap_or(0),
        ));
    }
    let previous = store.active_version();
    let pending = match (window, previous) {
        (Some(s), Some(prev)) => Some(Pending {
            deadline_unix_ms: time::unix_ms(SystemTime::now()) + s * 1000,
            revert_to: prev,
        }),
        (Some(_), None) => return Err(LifecycleError::NothingToRevertTo),
        _ => None,
    };
    let meta = version_meta(store, who, comment, VersionKind::Commit, None);
    let mut entry = AuditEntry::new(who, "commit");
    entry.draft_revision = Some(store.revision());
    entry.details = json!({"confirm_within_s": window});
    activate(app, store, policy, meta, pending, entry, started).await
}

/// Keeps the active version, which awaits confirmation; answers its number.
pub fn confirm(store: &mut Store, who: &str) -> Result<u64> {
    let active = store
        .active()
        .cloned()
        .ok_or(LifecycleError::NoActiveVersion)?;
    let pending = active
        .pending
        .ok_or(LifecycleError::NotPending(active.version))?;
    let policy = store.active_policy().cloned().expect("active has a policy");
    store.set_active(
        ActiveFile {
            version: active.version,
            pending: None,
        },
        policy,
    )?;
    let mut entry = AuditEntry::new(who, "confirm");
    entry.version_before = Some(active.version);
    entry.version_after = Some(active.version);
    entry.details = json!({"revert_to_cancelled": pending.revert_to});
    store.append_audit(entry)?;
    Ok(active.version)
}

/// Activates a copy of version `source` as the next version and pushes it.
pub async fn rollback(
    app: &App,
    store: &mut Store,
    who: &str,
    source: u64,
    comment: String,
    started: Instant,
) -> Result<Activated> {
    let policy = stored_policy(store, source)?;
    let comment = if comment.is_empty() {
        format!("rollback to version {source}")
    } else {
        comment
    };
    let meta = version_meta(store, who, comment, VersionKind::Rollback, Some(source));
    let mut entry = AuditEntry::new(who, "rollback");
    entry.details = json!({"source": source});
    activate(app, store, policy, meta, None, entry, started).await
}

/// Reverts an unconfirmed commit whose deadline has passed (called by the background task); answers the new
/// version, if any. The store changes first; if the dataplane cannot take the push now, reconciliation pushes it
/// when it can.
pub async fn revert_if_due(app: &App) -> Result<Option<u64>> {
    let mut store = app.store.lock().await;
    let Some(active) = store.active().cloned() else {
        return Ok(None);
    };
    let Some(p) = active.pending else {
        return Ok(None);
    };
    if time::unix_ms(SystemTime::now()) < p.deadline_unix_ms {
        return Ok(None);
    }
    let policy = stored_policy(&store, p.revert_to)?;
    let meta = version_meta(
        &store,
        "system",
        format!(
            "automatic revert: version {} was not confirmed in time",
            active.version
        ),
        VersionKind::Revert,
        Some(p.revert_to),
    );
    let version = meta.version;
    store.add_version(meta, &policy)?;
    store.set_active(
        ActiveFile {
            version,
            pending: None,
        },
        policy.clone(),
    )?;
    let mut entry = AuditEntry::new("system", "revert");
    entry.version_before = Some(active.version);
    entry.version_after = Some(version);
    entry.details = json!({"source": p.revert_to, "reason": "not confirmed before the deadline"});
    store.append_audit(entry)?;
    let doc = serde_json::to_value(policy.document()).unwrap_or_default();
    if let Err(e) = app.dataplane.load_policy(&doc, version).await {
        eprintln!("bulkhead-control: revert to version {version} not pushed yet: {e}");
    }
    app.unverify();
    Ok(Some(version))
}

/// The policy of a stored version.
fn stored_policy(store: &Store, version: u64) -> Result<Policy> {
    let doc = store
        .version_document(version)?
        .ok_or(LifecycleError::UnknownVersion(version))?;
    Policy::new(doc).map_err(LifecycleError::InvalidStoredVersion)
}

/// Activates `policy` as a new version, pushes it to the dataplane, observes the time since `started` and
/// appends `audit` (with the versions before and after). If the push fails the store goes back to what it was
/// and nothing is audited (the dataplane keeps its version; reconciliation fixes any disagreement a timeout left).
async fn activate(
    app: &App,
    store: &mut Store,
    policy: Policy,
    meta: VersionMeta,
    pending: Option<Pending>,
    mut audit: AuditEntry,
    started: Instant,
) -> Result<Activated> {
    let before = store.active().cloned();
    let before_policy = store.active_policy().cloned();
    let previous = before.as_ref().map(|a| a.version);
    let version = meta.version;
    store.add_version(meta, &policy)?;
    store.set_active(
        ActiveFile {
            version,
            pending: pending.clone(),
        },
        policy.clone(),
    )?;
    let doc = serde_json::to_value(policy.document()).unwrap_or_default();
    let dataplane = match app.dataplane.load_policy(&doc, version).await {
        Ok(result) => {
            app.unverify();
            result
        }
        Err(e) => {
            match (before, before_policy) {
                (Some(a), Some(p)) => store.set_active(a, p)?,
                _ => store.clear_active()?,
            }
            store.discard_version(version)?;
            return Err(e.into());
        }
    };
    let took = started.elapsed();
    app.metrics.observe_commit(took);
    audit.version_before = previous;
    audit.version_after = Some(version);
    store.append_audit(audit)?;
    Ok(Activated {
        version,
        previous,
        dataplane,
        took,
        pending,
    })
}

fn version_meta(
    store: &Store,
    who: &str,
    comment: String,
    kind: VersionKind,
    source: Option<u64>,
) -> VersionMeta {
    VersionMeta {
        version: store.next_version(),
        created: time::rfc3339(SystemTime::now()),
        author: who.to_string(),
        comment,
        parent: store.active_version(),
        kind,
        source,
    }
}
