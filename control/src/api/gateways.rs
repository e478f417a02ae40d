//! The managed gateways: which version each runs, whether it is in sync, when it last answered and why not; for
//! HA pairs, each member's role and connection-state sync, and an on-demand resync. Control never sets a role:
//! keepalived does, through each dataplane's control socket.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::extract::{who, ApiResult, Who};
use super::{p, Routes};
use crate::app::Shared;
use crate::auth::Right;
use crate::dataplane::DataplaneError;
use crate::error::ApiError;
use crate::store::AuditEntry;

pub(super) fn routes(r: Routes) -> Routes {
    r.add(Method::GET, &p("/gateways"), Right::Read, list_gateways)
        .add(
            Method::POST,
            &p("/gateways/{name}/resync"),
            Right::Kill,
            resync,
        )
}

/// `GET /gateways`: every configured gateway, in config order, and every HA pair, from what control last
/// learned (no request to any gateway, no wait for a commit in progress: a slow gateway cannot delay the
/// answer).
async fn list_gateways(State(app): State<Shared>) -> Json<Value> {
    let active = app.gateways.active_version(&app.store);
    Json(json!({
        "active_version": active,
        "gateways": app.gateways.to_json(active),
        "pairs": app.gateways.pairs_json(),
    }))
}

/// `POST /gateways/{name}/resync`: the gateway sends every flow's state to its HA peer again (a bulk resync).
/// Live state like a kill, so the same right; audited.
async fn resync(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    // A gateway, never a pair: a resync is asked of the member that sends.
    let gateway = match app.gateways.get(&name) {
        Some(g) => g,
        None => {
            let e = app.gateways.select(Some(&name)).err();
            let why = e.map_or_else(
                || format!("{name:?} is an HA pair: resync its active member"),
                |e| e.to_string(),
            );
            return Err(ApiError::not_found(why));
        }
    };
    let answer: protocol::ResyncResult = gateway
        .client
        .request(&protocol::Request::Resync {})
        .await
        .map_err(|e| match e {
            DataplaneError::Refused {
                code: protocol::ErrorCode::NotHa,
                message,
                ..
            } => ApiError::new(
                StatusCode::CONFLICT,
                "not_ha",
                format!("gateway {name} has no connection-state sync to resync: {message}"),
            ),
            other => {
                gateway.failed("resync", &other);
                other.into()
            }
        })?;
    let mut store = app.store.lock().await;
    let mut entry = AuditEntry::new(&who(w), "gateway.resync");
    entry.version_before = store.active_version();
    entry.version_after = store.active_version();
    entry.details = json!({"gateway": name, "workers": answer.workers});
    store.append_audit(entry)?;
    Ok(Json(json!({"gateway": name, "workers": answer.workers})))
}
