//! `POST /token/rotate`: a new secret for the caller's identity.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::extract::{who, ApiResult, Who};
use super::{p, Routes};
use crate::app::Shared;
use crate::error::ApiError;
use crate::store::AuditEntry;

pub(super) fn routes(r: Routes) -> Routes {
    r.add(Method::POST, &p("/token/rotate"), rotate_token)
}

async fn rotate_token(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
) -> ApiResult<Json<Value>> {
    let who = who(w);
    let secret = app
        .tokens
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .rotate(&who)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "token_error",
                e.to_string(),
            )
        })?;
    let mut store = app.store.lock().await;
    let mut entry = AuditEntry::new(&who, "token.rotate");
    entry.version_before = store.active_version();
    entry.version_after = store.active_version();
    store.append_audit(entry)?;
    Ok(Json(json!({"identity": who, "token": secret})))
}
