//! The dataplane's tracked connections: list them, kill them, and explain a flow under the draft and the active
//! policy (with the connections the draft would cut).

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use policy::Policy;
use protocol::FlowFilter;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{self, who, ApiResult, Body, Params, QueryParams, Who};
use super::{p, Routes};
use crate::app::{off_worker, Shared};
use crate::auth::Right;
use crate::error::ApiError;
use crate::explain;
use crate::store::AuditEntry;

pub(super) fn routes(r: Routes) -> Routes {
    use Method as M;
    r.add(M::POST, &p("/explain"), Right::Analyze, explain_flow)
        .add_with::<LiveFlowsQuery, _, _>(M::GET, &p("/flows"), Right::Read, list_flows)
        .add(M::POST, &p("/flows/kill"), Right::Kill, kill_flows)
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
    let draft = off_worker(move || Policy::new(draft)).await;
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

/// `GET /flows?addr&src&dst&port&proto&rule_id&limit`.
struct LiveFlowsQuery {
    filter: FlowFilter,
    /// At most this many connections (capped at 100 000).
    limit: usize,
}

impl Default for LiveFlowsQuery {
    fn default() -> Self {
        LiveFlowsQuery {
            filter: FlowFilter::default(),
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
    let result = app.dataplane.flows(&q.filter, q.limit.min(100_000)).await?;
    Ok(Json(serde_json::to_value(result).unwrap_or_default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillBody {
    #[serde(flatten)]
    filter: FlowFilter,
    /// Required (true) to kill every connection with an empty filter.
    #[serde(default)]
    all: bool,
}

async fn kill_flows(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    Body(body): Body<KillBody>,
) -> ApiResult<Json<Value>> {
    let filter = body.filter;
    if filter.is_empty() && !body.all {
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
    entry.details = json!({"filter": filter, "killed": result.killed});
    store.append_audit(entry)?;
    Ok(Json(serde_json::to_value(result).unwrap_or_default()))
}
