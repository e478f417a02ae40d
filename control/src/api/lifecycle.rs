//! The policy lifecycle over HTTP: commit, confirm, rollback (the work is done by [`crate::lifecycle`]), the
//! version history and the active version.

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{active_etag, draft_etag, if_match, who, with_etag, ApiResult, Body, Who};
use super::{p, Routes};
use crate::app::Shared;
use crate::auth::Right;
use crate::error::ApiError;
use crate::lifecycle;
use crate::store::Pending;
use crate::time;

pub(super) fn routes(r: Routes) -> Routes {
    use Method as M;
    r.add(M::GET, &p("/active"), Right::Read, get_active)
        .add(M::POST, &p("/commit"), Right::Commit, commit)
        .add(M::POST, &p("/confirm"), Right::Confirm, confirm)
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
    let draft = {
        let store = app.store.lock().await;
        if_match(&headers, &draft_etag(store.revision()))?;
        lifecycle::ensure_nothing_pending(&store)?;
        store.draft().clone()
    };
    let policy = lifecycle::compile(draft)
        .await
        .map_err(lifecycle::LifecycleError::InvalidDraft)?;
    let mut store = app.store.lock().await;
    // The draft may have changed while it compiled: the commit is of exactly the revision the client named.
    if_match(&headers, &draft_etag(store.revision()))?;
    let done = lifecycle::commit(
        &app,
        &mut store,
        &who(w),
        policy,
        body.comment,
        window,
        started,
    )
    .await?;
    let mut answer = json!({
        "version": done.version,
        "previous": done.previous,
        "dataplane": done.dataplane,
        "commit_ms": done.took.as_secs_f64() * 1e3,
        "pending_confirm": pending_json(done.pending.as_ref()),
    });
    with_warning(&mut answer, done.warning);
    Ok(with_etag(active_etag(&store), Json(answer)))
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
    let mut store = app.store.lock().await;
    if_match(&headers, &active_etag(&store))?;
    let version = lifecycle::confirm(&mut store, &who(w))?;
    Ok(with_etag(
        active_etag(&store),
        Json(json!({"version": version, "confirmed": true})),
    ))
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
    let mut store = app.store.lock().await;
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
    let mut answer = json!({"version": done.version, "source": body.version, "previous": done.previous, "dataplane": done.dataplane});
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
