//! Tokens over HTTP: who the caller is (`GET /whoami`), a new secret for the caller's own token
//! (`POST /token/rotate`), and, with the `manage_tokens` right, every token: list, create, rotate, revoke. A secret
//! is answered once, when it is made, and never again; the audit log records every change (who, what, which
//! token id), before it takes effect.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{ApiResult, Body};
use super::{p, Routes};
use crate::app::{App, Shared};
use crate::auth::tokens::{Change, NewToken};
use crate::auth::{Caller, Right, Role, TokenError, Tokens};
use crate::error::ApiError;
use crate::store::AuditEntry;
use crate::time;

pub(super) fn routes(r: Routes) -> Routes {
    use Method as M;
    r.add(M::GET, &p("/whoami"), Right::Read, whoami)
        .add(M::POST, &p("/token/rotate"), Right::Read, rotate_own)
        .add(M::GET, &p("/tokens"), Right::ManageTokens, list)
        .add(M::POST, &p("/tokens"), Right::ManageTokens, create)
        .add(
            M::POST,
            &p("/tokens/{id}/rotate"),
            Right::ManageTokens,
            rotate,
        )
        .add(M::DELETE, &p("/tokens/{id}"), Right::ManageTokens, revoke)
}

fn now_ms() -> u64 {
    time::unix_ms(std::time::SystemTime::now())
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        let message = e.to_string();
        match e {
            TokenError::Unknown(_) => ApiError::not_found(message),
            TokenError::Revoked(_) => ApiError::conflict("token_revoked", message),
            TokenError::Expired(_) => ApiError::conflict("token_expired", message),
            TokenError::LastAdmin(_) => ApiError::conflict("last_admin", message),
            TokenError::TooMany => ApiError::conflict("too_many_tokens", message),
            TokenError::Invalid { field, message } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("{field}: {message}"),
            )
            .detail(field, message),
            TokenError::Io { .. }
            | TokenError::Malformed { .. }
            | TokenError::Permissions { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "token_error", message)
            }
        }
    }
}

async fn whoami(Extension(caller): Extension<Caller>) -> Json<Value> {
    let rights: Vec<&str> = caller.role.rights().iter().map(|r| r.name()).collect();
    Json(json!({
        "identity": caller.identity,
        "role": caller.role,
        "tiers": caller.tiers,
        "rights": rights,
        "token_id": caller.token_id,
        "expires_at": caller.expires_unix_ms.map(|ms| time::rfc3339(time::from_unix_ms(ms))),
    }))
}

/// Makes a token change: prepared and checked, recorded in the audit log (if it cannot be, nothing changes),
/// then written. Token changes are serialized by the store's lock.
async fn change(
    app: &App,
    caller: &Caller,
    action: &str,
    prepare: impl FnOnce(&Tokens) -> Result<Change, TokenError>,
) -> ApiResult<Value> {
    let mut store = app.store.lock().await;
    let change = prepare(&app.tokens.read().unwrap_or_else(|p| p.into_inner()))?;
    let record = change.record.clone();
    let secret = change.secret.clone();
    let mut entry = AuditEntry::new(&caller.identity, action);
    entry.object = Some(format!("tokens/{}", record.id));
    entry.details = json!({
        "token_id": record.id,
        "identity": record.identity,
        "role": record.role,
        "tiers": record.tiers,
        "expires_at": record.expires_unix_ms.map(|ms| time::rfc3339(time::from_unix_ms(ms))),
        "by_token_id": caller.token_id,
    });
    store.append_audit(entry.clone())?;
    let applied = app
        .tokens
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .apply(change);
    if let Err(e) = applied {
        entry.details["failed"] = json!(e.to_string());
        let _ = store.append_audit(entry);
        return Err(e.into());
    }
    let mut answer = record.to_json(now_ms());
    if let Some(secret) = secret {
        answer["token"] = json!(secret);
    }
    Ok(answer)
}

/// `POST /token/rotate`: a new secret for the caller's own token (any role).
async fn rotate_own(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let id = caller.token_id.clone();
    change(&app, &caller, "token.rotate", |t| t.prepare_rotate(&id))
        .await
        .map(Json)
}

async fn list(State(app): State<Shared>) -> Json<Value> {
    let now = now_ms();
    let tokens = app.tokens.read().unwrap_or_else(|p| p.into_inner()).list();
    Json(json!({"tokens": tokens.iter().map(|t| t.to_json(now)).collect::<Vec<_>>()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    identity: String,
    role: Role,
    /// The tiers the token may edit; absent: all of the document.
    #[serde(default)]
    tiers: Option<Vec<String>>,
    #[serde(default)]
    description: String,
    /// RFC 3339 UTC.
    expires_at: Option<String>,
    expires_in_s: Option<u64>,
}

fn expiry(body: &CreateBody) -> ApiResult<Option<u64>> {
    let invalid = |field: &str, message: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("{field}: {message}"),
        )
        .detail(field, message)
    };
    match (&body.expires_at, body.expires_in_s) {
        (Some(_), Some(_)) => Err(invalid(
            "expires_in_s",
            "give expires_at or expires_in_s, not both",
        )),
        (Some(at), None) => humantime::parse_rfc3339(at)
            .map(|t| Some(time::unix_ms(t)))
            .map_err(|_| {
                invalid(
                    "expires_at",
                    "must be an RFC 3339 UTC time, e.g. 2030-01-31T12:00:00Z",
                )
            }),
        (None, Some(0)) => Err(invalid("expires_in_s", "must be at least 1")),
        (None, Some(s)) => Ok(Some(now_ms().saturating_add(s.saturating_mul(1000)))),
        (None, None) => Ok(None),
    }
}

/// `POST /tokens`: 201 with the token and its secret (shown this once).
async fn create(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<CreateBody>,
) -> ApiResult {
    let new = NewToken {
        expires_unix_ms: expiry(&body)?,
        identity: body.identity,
        role: body.role,
        tiers: body.tiers,
        description: body.description,
    };
    let answer = change(&app, &caller, "token.create", |t| t.prepare_create(new)).await?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `POST /tokens/{id}/rotate`: a new secret (shown this once); the old one stops working at once.
async fn rotate(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    change(&app, &caller, "token.rotate", |t| t.prepare_rotate(&id))
        .await
        .map(Json)
}

/// `DELETE /tokens/{id}`: the token is refused from now on (kept, so its use is reported as revoked).
async fn revoke(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    change(&app, &caller, "token.revoke", |t| t.prepare_revoke(&id))
        .await
        .map(Json)
}
