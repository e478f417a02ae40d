//! The managed gateways: which version each runs, whether it is in sync, when it last answered and why not.

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use serde_json::{json, Value};

use super::{p, Routes};
use crate::app::Shared;
use crate::auth::Right;

pub(super) fn routes(r: Routes) -> Routes {
    r.add(Method::GET, &p("/gateways"), Right::Read, list_gateways)
}

/// `GET /gateways`: every configured gateway, in config order, from what control last learned (no request to
/// any gateway, no wait for a commit in progress: a slow gateway cannot delay the answer).
async fn list_gateways(State(app): State<Shared>) -> Json<Value> {
    let active = app.gateways.active_version(&app.store);
    Json(json!({
        "active_version": active,
        "gateways": app.gateways.to_json(active),
    }))
}
