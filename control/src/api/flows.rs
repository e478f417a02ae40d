//! The dataplane's tracked connections: list them, kill them, and explain a flow under the draft and the active
//! policy (with the connections the draft would cut).

use std::net::IpAddr;

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use policy::Policy;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::extract::{self, who, ApiResult, Body, Params, QueryParams, Who};
use super::{p, Routes};
use crate::app::Shared;
use crate::error::ApiError;
use crate::explain;
use crate::store::AuditEntry;

pub(super) fn routes(r: Routes) -> Routes {
    use Method as M;
    r.add(M::POST, &p("/explain"), explain_flow)
        .add_with::<LiveFlowsQuery, _, _>(M::GET, &p("/flows"), list_flows)
        .add(M::POST, &p("/flows/kill"), kill_flows)
}

async fn explain_flow(
    State(app): State<Shared>,
    Body(req): Body<explain::Request>,
) -> ApiResult<Json<Value>> {
    let flow = req.flow()?;
    let (draft, active) = {
        let store = app.store.lock().await;
        (store.draft().clone(), store.active_policy().cloned())
    };
    let draft = extract::off_worker(move || Policy::new(draft)).await;
    let mut out = json!({"flow": req});
    out["draft"] = match &draft {
        Ok(p) => explain::judge(p, &flow),
        Err(e) => {
            let why = ApiError::invalid_policy("the draft does not validate", e);
            json!({"error": why.message, "details": why.details})
        }
    };
    out["active"] = active
        .as_ref()
        .map_or(Value::Null, |p| explain::judge(p, &flow));
    out["connections"] = match &draft {
        Ok(p) => explain::connections_cut(&app.dataplane, p).await,
        Err(_) => json!({"error": "the draft does not validate"}),
    };
    Ok(Json(out))
}

/// Selects the dataplane's tracked connections (every given field must match): the query of `GET /flows` and
/// the body of `POST /flows/kill`.
#[derive(Deserialize, Serialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct ConnectionFilter {
    /// Either address.
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst: Option<IpAddr>,
    /// Either port.
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proto: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule_id: Option<u32>,
}

/// `GET /flows?addr&src&dst&port&proto&rule_id&limit`.
struct LiveFlowsQuery {
    filter: ConnectionFilter,
    /// At most this many connections (capped at 100 000).
    limit: usize,
}

impl Default for LiveFlowsQuery {
    fn default() -> Self {
        LiveFlowsQuery {
            filter: ConnectionFilter::default(),
            limit: 1000,
        }
    }
}

impl QueryParams for LiveFlowsQuery {
    const NAMES: &'static [&'static str] =
        &["addr", "src", "dst", "port", "proto", "rule_id", "limit"];
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        let f = &mut self.filter;
        match name {
            "addr" => f.addr = Some(extract::ip(v)?),
            "src" => f.src = Some(extract::ip(v)?),
            "dst" => f.dst = Some(extract::ip(v)?),
            "port" => f.port = Some(extract::port(v)?),
            "proto" => f.proto = Some(extract::proto(v)?),
            "rule_id" => f.rule_id = Some(extract::rule_id(v)?),
            "limit" => self.limit = extract::value(v, "a number of connections (0, 1, ...)")?,
            _ => extract::not_a_name(name),
        }
        Ok(())
    }
}

async fn list_flows(
    State(app): State<Shared>,
    Params(q): Params<LiveFlowsQuery>,
) -> ApiResult<Json<Value>> {
    let filter = serde_json::to_value(&q.filter).unwrap_or_default();
    let result = app.dataplane.flows(&filter, q.limit.min(100_000)).await?;
    Ok(Json(result))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillBody {
    #[serde(flatten)]
    filter: ConnectionFilter,
    /// Required (true) to kill every connection with an empty filter.
    #[serde(default)]
    all: bool,
}

async fn kill_flows(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    Body(body): Body<KillBody>,
) -> ApiResult<Json<Value>> {
    let filter = serde_json::to_value(&body.filter).unwrap_or_default();
    if filter.as_object().is_none_or(|o| o.is_empty()) && !body.all {
        return Err(ApiError::bad_request(
            "an empty filter kills every connection: give a filter or \"all\": true",
        )
        .detail("all", "required for an empty filter"));
    }
    let result = app.dataplane.kill_flows(&filter).await?;
    let mut store = app.store.lock().await;
    let mut entry = AuditEntry::new(&who(w), "flows.kill");
    entry.version_before = store.active_version();
    entry.version_after = store.active_version();
    entry.details = json!({"filter": filter, "killed": result["killed"]});
    store.append_audit(entry)?;
    Ok(Json(result))
}
