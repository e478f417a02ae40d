//! Scheduled commits: a validated draft committed at a given time (a change window), cancellable until then,
//! kept in the store so that it survives a restart of control. One at a time: a change window is one change.
//!
//! What is committed is the draft as it was when scheduled (its document is kept with the schedule), so edits
//! made to the draft afterwards wait for the next commit. The background task checks every reconciliation
//! interval ([`commit_if_due`]); a schedule whose time passed while control was down fires at the first check
//! after the start.
//!
//! Fired once: the commit is made first and the schedule removed after. A crash between the two leaves a
//! schedule whose document is already active; its next check finds nothing to commit and removes it. A
//! schedule that cannot be committed (a pending confirmation, a dataplane that refuses) is marked failed and
//! stays, with the reason, until cancelled: it is never retried outside its window.

use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use super::{commit, compile, Activated, Commit, LifecycleError, Result};
use crate::app::App;
use crate::store::{AuditEntry, ScheduledCommit, Store};
use crate::time;

/// Furthest ahead a commit may be scheduled (a year): a forgotten schedule must not fire years later.
pub const MAX_AHEAD_MS: u64 = 366 * 86_400_000;

/// What a scheduled commit asks for; `policy` is the draft, compiled (so validated) by the caller.
pub struct Request {
    pub who: String,
    pub at_unix_ms: u64,
    pub comment: String,
    pub window: Option<u64>,
    pub submitted_by: Option<String>,
    pub policy: policy::Policy,
}

/// Schedules the current draft revision for commit at `req.at_unix_ms`. A failed schedule is replaced; a
/// waiting one must be cancelled first.
pub fn schedule(store: &mut Store, req: Request) -> Result<ScheduledCommit> {
    if let Some(s) = store.scheduled().filter(|s| s.failed.is_none()) {
        return Err(LifecycleError::AlreadyScheduled {
            id: s.id,
            at: time::rfc3339(time::from_unix_ms(s.at_unix_ms)),
        });
    }
    let now = time::unix_ms(SystemTime::now());
    if req.at_unix_ms <= now {
        return Err(LifecycleError::ScheduleTime("must be in the future"));
    }
    if req.at_unix_ms - now > MAX_AHEAD_MS {
        return Err(LifecycleError::ScheduleTime(
            "must be within 366 days from now",
        ));
    }
    let mut entry = AuditEntry::new(&req.who, "commit.schedule");
    entry.draft_revision = Some(store.revision());
    entry.details = json!({
        "at": time::rfc3339(time::from_unix_ms(req.at_unix_ms)),
        "comment": req.comment,
        "confirm_within_s": req.window,
        "submitted_by": req.submitted_by,
    });
    let id = store.append_audit(entry)?.seq;
    let scheduled = ScheduledCommit {
        id,
        at_unix_ms: req.at_unix_ms,
        scheduled_by: req.who,
        submitted_by: req.submitted_by,
        comment: req.comment,
        draft_revision: store.revision(),
        confirm_within_s: req.window,
        policy: req.policy.document().clone(),
        failed: None,
    };
    if let Err(e) = store.set_scheduled(Some(scheduled.clone())) {
        let mut undo = AuditEntry::new(&scheduled.scheduled_by, "commit.schedule.cancel");
        undo.details =
            json!({"id": id, "reason": format!("the schedule could not be stored: {e}")});
        let _ = store.append_audit(undo);
        return Err(e.into());
    }
    Ok(scheduled)
}

/// Cancels the scheduled commit (waiting or failed); answers it.
pub fn cancel(store: &mut Store, who: &str) -> Result<ScheduledCommit> {
    let scheduled = store
        .scheduled()
        .cloned()
        .ok_or(LifecycleError::NothingScheduled)?;
    let mut entry = AuditEntry::new(who, "commit.schedule.cancel");
    entry.details = json!({"id": scheduled.id});
    store.append_audit(entry)?;
    store.set_scheduled(None)?;
    Ok(scheduled)
}

/// What a due schedule came to.
#[derive(Debug)]
pub enum Fired {
    Committed {
        id: u64,
        done: Activated,
    },
    /// Its document was already active (it had been committed before a crash): removed.
    AlreadyActive {
        id: u64,
    },
    Failed {
        id: u64,
        error: String,
    },
}

impl Fired {
    /// The log line.
    pub fn to_json(&self) -> Value {
        match self {
            Fired::Committed { id, done } => json!({
                "event": "scheduled_commit", "id": id, "version": done.version, "warning": done.warning,
            }),
            Fired::AlreadyActive { id } => {
                json!({"event": "scheduled_commit", "id": id, "already_active": true})
            }
            Fired::Failed { id, error } => {
                json!({"event": "scheduled_commit_failed", "id": id, "error": error})
            }
        }
    }
}

/// Commits the scheduled draft if its time has come.
pub async fn commit_if_due(app: &App) -> Result<Option<Fired>> {
    let Some(due) = due(&*app.store.lock().await) else {
        return Ok(None);
    };
    let started = Instant::now();
    let compiled = compile(due.policy.clone()).await;
    let mut store = app.lock_for_change().await;
    // Cancelled or replaced while it compiled.
    if due_id(&store) != Some(due.id) {
        return Ok(None);
    }
    let result = match compiled {
        Err(e) => Err(LifecycleError::InvalidStoredVersion(e)),
        Ok(policy) => {
            let c = Commit {
                who: due.scheduled_by.clone(),
                comment: due.comment.clone(),
                window: due.confirm_within_s,
                draft_revision: due.draft_revision,
                submitted_by: due.submitted_by.clone(),
                scheduled: Some(due.id),
            };
            commit(app, &mut store, c, policy, started).await
        }
    };
    let fired = match result {
        Ok(done) => Fired::Committed { id: due.id, done },
        Err(LifecycleError::NoChanges(_))
            if store.active_policy().map(|p| p.document()) == Some(&due.policy) =>
        {
            Fired::AlreadyActive { id: due.id }
        }
        Err(e) => {
            let error = e.to_string();
            let mut entry = AuditEntry::new(&due.scheduled_by, "commit.schedule.failed");
            entry.draft_revision = Some(due.draft_revision);
            entry.details = json!({"id": due.id, "error": error});
            store.append_audit(entry)?;
            store.set_scheduled(Some(ScheduledCommit {
                failed: Some(error.clone()),
                ..due
            }))?;
            return Ok(Some(Fired::Failed { id: due.id, error }));
        }
    };
    store.set_scheduled(None)?;
    Ok(Some(fired))
}

/// The waiting schedule whose time has come.
fn due(store: &Store) -> Option<ScheduledCommit> {
    store
        .scheduled()
        .filter(|s| s.failed.is_none() && s.at_unix_ms <= time::unix_ms(SystemTime::now()))
        .cloned()
}

fn due_id(store: &Store) -> Option<u64> {
    due(store).map(|s| s.id)
}
