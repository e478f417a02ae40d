//! The two-person rule (`[approvals] two_person = true`; off by default): the draft's author submits a revision
//! for approval, and a different identity with the right to commit commits it. Both identities are recorded: in
//! the commit's audit entries (`who` commits, `details.submitted_by`) and in the version's metadata.
//!
//! A submission is of one draft revision: any later edit of the draft withdraws it (so what the approver saw
//! is what is committed, which the commit's `If-Match` also ensures).

use std::time::SystemTime;

use serde_json::json;

use super::{LifecycleError, Result};
use crate::app::App;
use crate::store::{AuditEntry, Store, Submission};
use crate::time;

/// Submits the current draft revision for approval (replacing an earlier submission of it).
pub fn submit(store: &mut Store, who: &str, comment: String) -> Result<Submission> {
    let submission = Submission {
        revision: store.revision(),
        submitted_by: who.to_string(),
        submitted_at: time::rfc3339(SystemTime::now()),
        comment,
    };
    let mut entry = AuditEntry::new(who, "draft.submit");
    entry.draft_revision = Some(submission.revision);
    entry.details = json!({"comment": submission.comment});
    store.append_audit(entry)?;
    store.set_submission(Some(submission.clone()))?;
    Ok(submission)
}

/// Withdraws the submission: by its author (`draft.withdraw`) or, refusing it, by an approver
/// (`draft.reject`; the caller checked the right). Answers the submission withdrawn.
pub fn withdraw(store: &mut Store, who: &str, reason: String) -> Result<Submission> {
    let submission = store
        .submission()
        .cloned()
        .ok_or(LifecycleError::NothingSubmitted)?;
    let action = if submission.submitted_by == who {
        "draft.withdraw"
    } else {
        "draft.reject"
    };
    let mut entry = AuditEntry::new(who, action);
    entry.draft_revision = Some(submission.revision);
    entry.details = json!({"submitted_by": submission.submitted_by, "reason": reason});
    store.append_audit(entry)?;
    store.set_submission(None)?;
    Ok(submission)
}

/// May `who` commit (or schedule) the current draft revision? With the two-person rule on, only if it was
/// submitted by someone else; answers that someone.
pub fn check(app: &App, store: &Store, who: &str) -> Result<Option<String>> {
    if !app.config.approvals.two_person {
        return Ok(None);
    }
    match store.submission() {
        None => Err(LifecycleError::ApprovalRequired {
            revision: store.revision(),
        }),
        Some(s) if s.submitted_by == who => Err(LifecycleError::SelfApproval(who.to_string())),
        Some(s) => Ok(Some(s.submitted_by.clone())),
    }
}
