//! The policy lifecycle: commit the draft, confirm a commit, roll back to an earlier version, and revert an
//! unconfirmed commit whose deadline passed (or at once, on request). [`approval`] holds the two-person rule
//! (submit, then another identity commits) and [`schedule`] commits at a given time. Every activation creates a
//! new version number, is deployed to every gateway ([`deploy`]: prepared on all, then published on all) and is
//! audited. The REST handlers and the reconciler's background task both come here; nothing here
//! knows of HTTP (the handlers map [`LifecycleError`] to status codes and check ETags before calling).
//!
//! Callers hold the store for a change ([`App::lock_for_change`]) for the whole operation, so lifecycle operations
//! and reconciliation are serialized; the store lock itself is released across gateway round trips
//! ([`Change::unlocked`]), so reads answer while a gateway is slow. The policy to activate is compiled before,
//! outside the locks ([`compile`]).
//!
//! An activation and its audit record are one durable unit: an intent entry is appended before anything is
//! written or pushed (if it cannot be, nothing happens), and an outcome entry after. An intent whose outcome could
//! not be written (a crash, a failed append) is resolved by the next reconciliation against what the store and the
//! dataplane hold ([`crate::reconcile`]).

use std::time::{Duration, Instant, SystemTime};

use policy::{Policy, PolicyError};
use protocol::LoadPolicyResult;
use serde_json::json;

use crate::app::{off_worker, App, Change};
use crate::config::MAX_CONFIRM_S;
use crate::dataplane::DataplaneError;
use crate::store::{
    ActiveFile, AuditEntry, Outcome, Pending, Store, StoreError, VersionKind, VersionMeta,
};
use crate::time;

pub mod approval;
pub mod deploy;
pub mod schedule;

pub use deploy::{Answer, Deployment};

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
    #[error("the two-person rule is on: the draft (revision {revision}) must be submitted for approval, then committed by another identity")]
    ApprovalRequired { revision: u64 },
    #[error("{0} submitted this draft: under the two-person rule another identity must commit it")]
    SelfApproval(String),
    #[error("no draft is submitted for approval")]
    NothingSubmitted,
    #[error("{0}")]
    ScheduleTime(&'static str),
    #[error("commit {id} is already scheduled for {at}; cancel it first")]
    AlreadyScheduled { id: u64, at: String },
    #[error("no commit is scheduled")]
    NothingScheduled,
    #[error("no version {0}")]
    UnknownVersion(u64),
    #[error("stored version: {0}")]
    InvalidStoredVersion(PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// No gateway enforces the version: one refused to prepare it (the others discarded it), or none could be
    /// reached. What each answered is in the deployment.
    #[error("{}", .0.summary())]
    NotDeployed(Deployment),
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
    /// The first gateway's publish report; `None` when none confirmed (the version stays active and
    /// reconciliation pushes it: see `warning`).
    pub dataplane: Option<LoadPolicyResult>,
    /// What every gateway answered.
    pub gateways: Deployment,
    /// From the request's start to enforcement (also observed in the commit histogram).
    pub took: Duration,
    pub pending: Option<Pending>,
    /// The version is active, but the dataplane did not confirm it or its audit outcome could not be written.
    pub warning: Option<String>,
}

/// Validates and compiles a document on the blocking pool: never under the store lock, never on the async
/// workers (a big policy takes long to compile).
pub async fn compile(doc: policy::Document) -> std::result::Result<Policy, PolicyError> {
    off_worker(move || Policy::new(doc)).await
}

/// Refuses a new commit while the active version awaits confirmation.
pub fn ensure_nothing_pending(store: &Store) -> Result<()> {
    match store.active().and_then(|a| a.pending.clone()) {
        Some(pending) => Err(LifecycleError::ConfirmPending {
            version: store.active_version().unwrap_or(0),
            pending,
        }),
        None => Ok(()),
    }
}

/// A commit of the draft: who asks, what it says, and how it came to be approved or scheduled.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub who: String,
    pub comment: String,
    /// Revert by itself unless confirmed within this many seconds.
    pub window: Option<u64>,
    /// The draft revision committed.
    pub draft_revision: u64,
    /// Under the two-person rule: who submitted it (checked by [`approval::check`]).
    pub submitted_by: Option<String>,
    /// The scheduled commit this is, if any.
    pub scheduled: Option<u64>,
}

/// Commits `policy` (the draft, compiled by [`compile`]) as the next version and pushes it; with a `window`
/// (seconds) it reverts by itself unless confirmed in time. `started` is when the request began (the commit time
/// counts from there). The caller checked that the draft did not change since it was compiled, and the
/// approval.
pub async fn commit(
    app: &App,
    store: &mut Change<'_>,
    c: Commit,
    policy: Policy,
    started: Instant,
) -> Result<Activated> {
    ensure_nothing_pending(store)?;
    if store.active_policy().map(|p| p.document()) == Some(policy.document()) {
        return Err(LifecycleError::NoChanges(
            store.active_version().unwrap_or(0),
        ));
    }
    let previous = store.active_version();
    let pending = match (c.window, previous) {
        (Some(s), Some(prev)) => Some(Pending {
            deadline_unix_ms: time::unix_ms(SystemTime::now()) + s * 1000,
            revert_to: prev,
        }),
        (Some(_), None) => return Err(LifecycleError::NothingToRevertTo),
        _ => None,
    };
    let mut meta = version_meta(app, store, &c.who, c.comment, VersionKind::Commit, None);
    meta.submitted_by = c.submitted_by.clone();
    meta.scheduled = c.scheduled;
    let mut entry = AuditEntry::new(&c.who, "commit");
    entry.draft_revision = Some(c.draft_revision);
    entry.details = json!({"confirm_within_s": c.window});
    if let Some(by) = &c.submitted_by {
        entry.details["submitted_by"] = json!(by);
    }
    if let Some(id) = c.scheduled {
        entry.details["scheduled"] = json!(id);
    }
    let done = activate(app, store, policy, meta, pending, entry, started).await?;
    if store
        .submission()
        .is_some_and(|s| s.revision == c.draft_revision)
    {
        // Approved and committed: the submission is used up. Were this write to fail, the submission would
        // only name a revision already committed (a second commit of it finds no changes).
        let _ = store.set_submission(None);
    }
    Ok(done)
}

/// Keeps the active version, which awaits confirmation; answers its number. It changes the store only, so it
/// is one audit entry, written after the active pointer.
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

/// The document of version `source`, to be compiled (outside the store lock) for a rollback.
pub fn rollback_source(store: &Store, source: u64) -> Result<policy::Document> {
    store
        .version_document(source)?
        .ok_or(LifecycleError::UnknownVersion(source))
}

/// Activates `policy` (version `source`'s document, compiled by [`compile`]) as the next version and pushes it.
pub async fn rollback(
    app: &App,
    store: &mut Change<'_>,
    who: &str,
    source: u64,
    policy: Policy,
    comment: String,
    started: Instant,
) -> Result<Activated> {
    let comment = if comment.is_empty() {
        format!("rollback to version {source}")
    } else {
        comment
    };
    let meta = version_meta(
        app,
        store,
        who,
        comment,
        VersionKind::Rollback,
        Some(source),
    );
    let mut entry = AuditEntry::new(who, "rollback");
    entry.details = json!({"source": source});
    activate(app, store, policy, meta, None, entry, started).await
}

/// Reverts an unconfirmed commit whose deadline has passed (called by the background task); answers the new
/// version, if any. The store changes first; if the dataplane cannot take the push now, the revert's intent stays
/// open and reconciliation pushes the version when it can (and resolves the intent).
pub async fn revert_if_due(app: &App) -> Result<Option<u64>> {
    revert(app, SYSTEM, Revert::IfDue).await
}

/// Reverts the version awaiting confirmation now, as if its deadline had passed (an operator cancelling a
/// commit that went wrong, without waiting for the window to close); answers the new version.
pub async fn revert_now(app: &App, who: &str) -> Result<u64> {
    revert(app, who, Revert::Now)
        .await?
        .ok_or(LifecycleError::NotPending(0))
}

/// The `who` of the entries the background task writes.
const SYSTEM: &str = "system";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Revert {
    IfDue,
    Now,
}

async fn revert(app: &App, who: &str, when: Revert) -> Result<Option<u64>> {
    let Some((due, doc)) = due_revert(&*app.store.lock().await, when)? else {
        return match (when, app.store.lock().await.active_version()) {
            (Revert::Now, Some(v)) => Err(LifecycleError::NotPending(v)),
            (Revert::Now, None) => Err(LifecycleError::NoActiveVersion),
            (Revert::IfDue, _) => Ok(None),
        };
    };
    let policy = compile(doc)
        .await
        .map_err(LifecycleError::InvalidStoredVersion)?;
    let mut store = app.lock_for_change().await;
    // Confirmed, rolled back or reverted while the policy compiled: nothing is due any more.
    if due_revert(&store, when)?.map(|(d, _)| d) != Some(due.clone()) {
        return match when {
            Revert::Now => Err(LifecycleError::NotPending(due.version)),
            Revert::IfDue => Ok(None),
        };
    }
    let (version, p) = (due.version, due.pending.expect("due has a deadline"));
    let (comment, reason) = match when {
        Revert::IfDue => (
            format!("automatic revert: version {version} was not confirmed in time"),
            "not confirmed before the deadline".to_string(),
        ),
        Revert::Now => (
            format!("version {version} reverted before its confirm deadline by {who}"),
            "reverted on request before the deadline".to_string(),
        ),
    };
    let meta = version_meta(
        app,
        &store,
        who,
        comment,
        VersionKind::Revert,
        Some(p.revert_to),
    );
    let mut entry = AuditEntry::new(who, "revert");
    entry.details = json!({"source": p.revert_to, "reason": reason});
    let (intent, version, _) = make_active(&mut store, policy.clone(), meta, None, entry)?;
    let doc = serde_json::to_value(policy.document()).unwrap_or_default();
    let deployed = store.unlocked(deploy::deploy(app, &doc, version)).await;
    if deployed.applied().next().is_some() {
        if let Err(e) =
            store.append_outcome_with(intent, Outcome::Applied, false, deployed.to_json())
        {
            eprintln!("bulkhead-control: revert to version {version} enforced; its outcome is not recorded yet: {e}");
        }
    } else {
        eprintln!(
            "bulkhead-control: revert to version {version} not deployed yet: {}",
            deployed.summary()
        );
    }
    Ok(Some(version))
}

/// The active version if it awaits confirmation and its deadline has passed (or, with [`Revert::Now`], at
/// all), with the document it reverts to.
fn due_revert(store: &Store, when: Revert) -> Result<Option<(ActiveFile, policy::Document)>> {
    let Some(active) = store.active().cloned() else {
        return Ok(None);
    };
    let Some(p) = &active.pending else {
        return Ok(None);
    };
    if when == Revert::IfDue && time::unix_ms(SystemTime::now()) < p.deadline_unix_ms {
        return Ok(None);
    }
    let doc = store
        .version_document(p.revert_to)?
        .ok_or(LifecycleError::UnknownVersion(p.revert_to))?;
    Ok(Some((active, doc)))
}

/// Activates `policy` as a new version and deploys it to every gateway ([`deploy`]), observes the time since
/// `started`, and audits it as `intent` (with the versions before and after) and its outcome (with each gateway's
/// answer in its details):
/// - published on at least one gateway: outcome `applied`; gateways that missed it keep enforcing their policy and
///   are named in a warning (reconciliation brings them to the version); if the outcome cannot be written the
///   answer is still a success, with a warning;
/// - refused by a gateway (the others discarded it), or no gateway reached: the store goes back to what it was,
///   outcome `failed`, an error with every gateway's answer;
/// - no confirmation from any gateway, but some may have published (no answer): the version stays active
///   (reconciliation pushes it where needed) and the intent stays open for reconciliation to resolve.
async fn activate(
    app: &App,
    store: &mut Change<'_>,
    policy: Policy,
    meta: VersionMeta,
    pending: Option<Pending>,
    intent: AuditEntry,
    started: Instant,
) -> Result<Activated> {
    let before = store.active().cloned().zip(store.active_policy().cloned());
    let (intent, version, previous) =
        make_active(store, policy.clone(), meta, pending.clone(), intent)?;
    let doc = serde_json::to_value(policy.document()).unwrap_or_default();
    let deployed = store.unlocked(deploy::deploy(app, &doc, version)).await;
    let first = deployed.applied().next().cloned();
    if first.is_none() && !deployed.unconfirmed() {
        restore(store, before, version)?;
        // If this cannot be written either, reconciliation records the intent as not applied.
        let _ = store.append_outcome_with(intent, Outcome::Failed, false, deployed.to_json());
        return Err(LifecycleError::NotDeployed(deployed));
    }
    let took = started.elapsed();
    let mut warnings = Vec::new();
    if first.is_some() {
        app.metrics.observe_commit(took);
        if let Err(e) =
            store.append_outcome_with(intent, Outcome::Applied, false, deployed.to_json())
        {
            warnings.push(format!(
                "version {version} is enforced, but its audit outcome could not be written ({e}); the next \
                 reconciliation records it"
            ));
        }
    }
    let missed: Vec<String> = deployed
        .answers
        .iter()
        .filter(|(_, a)| !matches!(a, Answer::Applied(_)))
        .map(|(name, a)| format!("{name}: {}", a.describe()))
        .collect();
    if !missed.is_empty() {
        warnings.push(format!(
            "version {version} is not confirmed on every gateway ({}); those keep enforcing their policy and \
             reconciliation brings them to version {version} when they answer",
            missed.join("; ")
        ));
    }
    Ok(Activated {
        version,
        previous,
        dataplane: first,
        gateways: deployed,
        took,
        pending,
        warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
    })
}

/// Records `intent` and only then writes the version and moves the active pointer; answers the intent's `seq`,
/// the new version and the one before. Nothing is written if the intent cannot be; a failed store write puts the
/// store back and records the outcome `failed`.
fn make_active(
    store: &mut Store,
    policy: Policy,
    meta: VersionMeta,
    pending: Option<Pending>,
    mut intent: AuditEntry,
) -> Result<(u64, u64, Option<u64>)> {
    let before = store.active().cloned().zip(store.active_policy().cloned());
    let previous = store.active_version();
    let version = meta.version;
    intent.version_before = previous;
    intent.version_after = Some(version);
    let seq = store.append_intent(intent)?;
    let written = store
        .add_version(meta, &policy)
        .and_then(|()| store.set_active(ActiveFile { version, pending }, policy));
    if let Err(e) = written {
        restore(store, before, version)?;
        let _ = store.append_outcome(seq, Outcome::Failed, false);
        return Err(e.into());
    }
    Ok((seq, version, previous))
}

/// Puts the active pointer back to `before` and removes `version`, which never took effect.
fn restore(store: &mut Store, before: Option<(ActiveFile, Policy)>, version: u64) -> Result<()> {
    match before {
        Some((a, p)) => store.set_active(a, p)?,
        None => store.clear_active()?,
    }
    if store.meta(version).is_some() {
        store.discard_version(version)?;
    }
    Ok(())
}

/// The number of the next version: above every stored one and above the highest a gateway last reported, so
/// that version numbers the gateways see only grow (a store restored from an older copy included).
fn next_version(app: &App, store: &Store) -> u64 {
    let running = app.gateways.highest_running().unwrap_or(0);
    store.next_version().max(running + 1)
}

fn version_meta(
    app: &App,
    store: &Store,
    who: &str,
    comment: String,
    kind: VersionKind,
    source: Option<u64>,
) -> VersionMeta {
    VersionMeta {
        version: next_version(app, store),
        created: time::rfc3339(SystemTime::now()),
        author: who.to_string(),
        comment,
        parent: store.active_version(),
        kind,
        source,
        submitted_by: None,
        scheduled: None,
    }
}
