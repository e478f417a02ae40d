//! The policy lifecycle over HTTP: submit for approval, commit (now or scheduled), confirm, revert, rollback
//! (the work is done by [`crate::lifecycle`]), the version history and the active version.

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{active_etag, draft_etag, if_match, who, with_etag, ApiResult, Body, Who};
use super::{p, Routes};
use crate::app::{App, Change, Shared};
use crate::auth::{Caller, Right};
use crate::error::ApiError;
use crate::lifecycle::{self, approval, schedule, Commit};
use crate::store::{Pending, ScheduledCommit};
use crate::time;

pub(super) fn routes(r: Routes) -> Routes {
    use Method as M;
    r.add(M::GET, &p("/active"), Right::Read, get_active)
        .add(M::POST, &p("/commit"), Right::Commit, commit)
        .add(M::GET, &p("/draft/submission"), Right::Read, get_submission)
        .add(M::POST, &p("/draft/submission"), Right::Submit, submit)
        .add(M::DELETE, &p("/draft/submission"), Right::Submit, withdraw)
        .add(M::GET, &p("/scheduled-commit"), Right::Read, get_scheduled)
        .add(M::POST, &p("/scheduled-commit"), Right::Commit, schedule)
        .add(
            M::DELETE,
            &p("/scheduled-commit"),
            Right::Confirm,
            cancel_scheduled,
        )
        .add(M::POST, &p("/confirm"), Right::Confirm, confirm)
        .add(M::POST, &p("/revert"), Right::Confirm, revert)
        .add(M::POST, &p("/rollback"), Right::Commit, rollback)
        .add(M::GET, &p("/versions"), Right::Read, list_versions)
        .add(M::GET, &p("/versions/{version}"), Right::Read, get_version)
}

async fn get_active(State(app): State<Shared>) -> ApiResult {
    let store = app.store.lock().await;
    let (Some(active), Some(policy)) = (store.active(), store.active_policy()) else {
        return Err(ApiError::not_found("no version has been committed yet"));
    };
    let meta = store.meta(active.version);
    Ok(with_etag(
        active_etag(&store),
        Json(json!({
            "version": active.version,
            "meta": meta,
            "pending_confirm": pending_json(active.pending.as_ref()),
            "policy": policy.document(),
        })),
    ))
}

fn pending_json(p: Option<&Pending>) -> Value {
    match p {
        None => Value::Null,
        Some(p) => json!({
            "deadline": time::rfc3339(time::from_unix_ms(p.deadline_unix_ms)),
            "deadline_unix_ms": p.deadline_unix_ms,
            "revert_to": p.revert_to,
        }),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    #[serde(default)]
    comment: String,
    /// Revert by itself unless confirmed within this many seconds.
    confirm_within_s: Option<u64>,
    /// Like `confirm_within_s` with the configured `confirm_timeout_s`.
    #[serde(default)]
    confirm: bool,
}

async fn commit(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
    Body(body): Body<Option<CommitBody>>,
) -> ApiResult {
    let started = Instant::now();
    let body = body.unwrap_or_default();
    let window = lifecycle::confirm_window(&app, body.confirm_within_s, body.confirm)?;
    let who = who(w);
    let (mut store, policy, submitted_by) = approved_draft(&app, &headers, &who, When::Now).await?;
    let c = Commit {
        submitted_by,
        who,
        comment: body.comment,
        window,
        draft_revision: store.revision(),
        scheduled: None,
    };
    let done = lifecycle::commit(&app, &mut store, c, policy, started).await?;
    let mut answer = json!({
        "version": done.version,
        "previous": done.previous,
        "dataplane": done.dataplane,
        "gateways": done.gateways.to_json()["gateways"],
        "commit_ms": done.took.as_secs_f64() * 1e3,
        "pending_confirm": pending_json(done.pending.as_ref()),
    });
    with_warning(&mut answer, done.warning);
    Ok(with_etag(active_etag(&store), Json(answer)))
}

/// When an approved draft is to be committed.
#[derive(PartialEq, Eq)]
enum When {
    Now,
    /// Scheduled: a commit awaiting confirmation now does not stand in the way.
    Later,
}

/// The draft revision named by `If-Match`, compiled (off the store lock), with the store locked again and the
/// revision checked again (it may have changed while it compiled: what is committed is exactly the revision the
/// client named), and who submitted it under the two-person rule.
async fn approved_draft<'a>(
    app: &'a App,
    headers: &HeaderMap,
    who: &str,
    when: When,
) -> ApiResult<(Change<'a>, policy::Policy, Option<String>)> {
    let draft = {
        let store = app.store.lock().await;
        if_match(headers, &draft_etag(store.revision()))?;
        if when == When::Now {
            lifecycle::ensure_nothing_pending(&store)?;
        }
        approval::check(app, &store, who)?;
        store.draft().clone()
    };
    let policy = lifecycle::compile(draft)
        .await
        .map_err(lifecycle::LifecycleError::InvalidDraft)?;
    let store = app.lock_for_change().await;
    if_match(headers, &draft_etag(store.revision()))?;
    let submitted_by = approval::check(app, &store, who)?;
    Ok((store, policy, submitted_by))
}

/// A success whose record or enforcement is not complete says so in a `warning` field (never as a failure:
/// the version is active).
fn with_warning(answer: &mut Value, warning: Option<String>) {
    if let Some(w) = warning {
        answer["warning"] = json!(w);
    }
}

async fn confirm(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
) -> ApiResult {
    let mut store = app.lock_for_change().await;
    if_match(&headers, &active_etag(&store))?;
    let version = lifecycle::confirm(&mut store, &who(w))?;
    Ok(with_etag(
        active_etag(&store),
        Json(json!({"version": version, "confirmed": true})),
    ))
}

/// Reverts the version awaiting confirmation now (an operator cancelling a commit before its window closes).
async fn revert(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
) -> ApiResult {
    if_match(&headers, &active_etag(&*app.store.lock().await))?;
    let version = lifecycle::revert_now(&app, &who(w)).await?;
    let store = app.store.lock().await;
    Ok(with_etag(
        active_etag(&store),
        Json(json!({"version": version, "reverted": true})),
    ))
}

// ---- the two-person rule ----

fn submission_json(app: &Shared, store: &crate::store::Store) -> Value {
    json!({
        "two_person_rule": app.config.approvals.two_person,
        "draft_revision": store.revision(),
        "submission": store.submission(),
    })
}

async fn get_submission(State(app): State<Shared>) -> Json<Value> {
    let store = app.store.lock().await;
    Json(submission_json(&app, &store))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Comment {
    #[serde(default)]
    comment: String,
}

/// Submits the draft revision named by `If-Match` for approval.
async fn submit(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
    Body(body): Body<Option<Comment>>,
) -> ApiResult {
    let mut store = app.store.lock().await;
    if_match(&headers, &draft_etag(store.revision()))?;
    approval::submit(&mut store, &who(w), body.unwrap_or_default().comment)?;
    Ok(with_etag(
        draft_etag(store.revision()),
        Json(submission_json(&app, &store)),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Reason {
    #[serde(default)]
    reason: String,
}

/// Withdraws the submission (its author) or rejects it (someone with the right to commit: refusing a change
/// is the approver's decision, not another author's).
async fn withdraw(
    State(app): State<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    Body(body): Body<Option<Reason>>,
) -> ApiResult<Json<Value>> {
    let mut store = app.store.lock().await;
    let theirs = store
        .submission()
        .is_some_and(|s| s.submitted_by != caller.identity);
    if theirs && !caller.role.has(Right::Commit) {
        return Err(super::forbidden(Right::Commit, &caller));
    }
    let withdrawn = approval::withdraw(
        &mut store,
        &caller.identity,
        body.unwrap_or_default().reason,
    )?;
    Ok(Json(json!({"withdrawn": withdrawn})))
}

// ---- scheduled commits ----

fn scheduled_json(s: &ScheduledCommit) -> Value {
    json!({
        "id": s.id,
        "at": time::rfc3339(time::from_unix_ms(s.at_unix_ms)),
        "at_unix_ms": s.at_unix_ms,
        "scheduled_by": s.scheduled_by,
        "submitted_by": s.submitted_by,
        "comment": s.comment,
        "draft_revision": s.draft_revision,
        "confirm_within_s": s.confirm_within_s,
        "state": if s.failed.is_some() { "failed" } else { "waiting" },
        "error": s.failed,
    })
}

async fn get_scheduled(State(app): State<Shared>) -> Json<Value> {
    let store = app.store.lock().await;
    Json(json!({"scheduled": store.scheduled().map(scheduled_json)}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleBody {
    /// RFC 3339.
    at: String,
    #[serde(default)]
    comment: String,
    confirm_within_s: Option<u64>,
    #[serde(default)]
    confirm: bool,
}

/// Schedules the draft revision named by `If-Match` (validated now) for commit at `at`.
async fn schedule(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
    Body(body): Body<ScheduleBody>,
) -> ApiResult {
    let at = humantime::parse_rfc3339(&body.at).map_err(|e| {
        ApiError::bad_request("invalid schedule time").detail(
            "at",
            format!("expected an RFC 3339 time such as 2027-01-31T22:00:00Z: {e}"),
        )
    })?;
    let window = lifecycle::confirm_window(&app, body.confirm_within_s, body.confirm)?;
    let who = who(w);
    let (mut store, policy, submitted_by) =
        approved_draft(&app, &headers, &who, When::Later).await?;
    let req = schedule::Request {
        submitted_by,
        who,
        at_unix_ms: time::unix_ms(at),
        comment: body.comment,
        window,
        policy,
    };
    let scheduled = schedule::schedule(&mut store, req)?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({"scheduled": scheduled_json(&scheduled)})),
    )
        .into_response())
}

async fn cancel_scheduled(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
) -> ApiResult<Json<Value>> {
    let mut store = app.store.lock().await;
    let cancelled = schedule::cancel(&mut store, &who(w))?;
    Ok(Json(json!({"cancelled": scheduled_json(&cancelled)})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: u64,
    #[serde(default)]
    comment: String,
}

async fn rollback(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
    Body(body): Body<RollbackBody>,
) -> ApiResult {
    let started = Instant::now();
    let doc = {
        let store = app.store.lock().await;
        if_match(&headers, &active_etag(&store))?;
        lifecycle::rollback_source(&store, body.version)?
    };
    let policy = lifecycle::compile(doc)
        .await
        .map_err(lifecycle::LifecycleError::InvalidStoredVersion)?;
    let mut store = app.lock_for_change().await;
    // Another change may have come first while the policy compiled.
    if_match(&headers, &active_etag(&store))?;
    let done = lifecycle::rollback(
        &app,
        &mut store,
        &who(w),
        body.version,
        policy,
        body.comment,
        started,
    )
    .await?;
    let mut answer = json!({"version": done.version, "source": body.version, "previous": done.previous, "dataplane": done.dataplane, "gateways": done.gateways.to_json()["gateways"]});
    with_warning(&mut answer, done.warning);
    Ok(with_etag(active_etag(&store), Json(answer)))
}

async fn list_versions(State(app): State<Shared>) -> Json<Value> {
    let store = app.store.lock().await;
    let active = store.active_version();
    let list: Vec<Value> = store
        .versions()
        .rev()
        .map(|m| {
            let mut v = serde_json::to_value(m).unwrap_or_default();
            v["active"] = json!(Some(m.version) == active);
            v
        })
        .collect();
    Json(json!({"active": active, "versions": list}))
}

async fn get_version(State(app): State<Shared>, Path(v): Path<String>) -> ApiResult<Json<Value>> {
    let v: u64 = v.parse().map_err(|_| {
        ApiError::bad_request("not a version number")
            .detail("version", "expected a positive integer")
    })?;
    let store = app.store.lock().await;
    let meta = store
        .meta(v)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no version {v}")))?;
    let doc = store.version_document(v)?;
    Ok(Json(
        json!({"meta": meta, "active": store.active_version() == Some(v), "policy": doc}),
    ))
}
