//! The dataplane's tracked connections: list them, kill them, and explain a flow under the draft and the active
//! policy (with the connections the draft would cut).

use std::sync::Arc;

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
use crate::gateway::{Gateway, Gateways};
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
    // Of an HA pair, the active member's connections: the standby's are copies of them.
    let gateways = Gateways::active_members(select(&app, req.gateway.as_deref(), "gateway")?);
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
        Ok(p) => explain::connections_cut(&gateways, p).await,
        Err(_) => json!({"error": "the draft does not validate"}),
    };
    Ok(Json(out))
}

/// The gateways a request names (`None`: all; an HA pair: both members), or a 400 naming `field`.
fn select(app: &Shared, name: Option<&str>, field: &str) -> Result<Vec<Arc<Gateway>>, ApiError> {
    app.gateways
        .select(name)
        .map_err(|e| ApiError::bad_request(e.to_string()).detail(field, "unknown gateway"))
}

/// `GET /flows?gateway&addr&src&dst&port&proto&rule_id&limit`.
struct LiveFlowsQuery {
    /// Only this gateway's connections, or both members' of this HA pair (default: every gateway's).
    gateway: Option<String>,
    filter: FlowFilter,
    /// At most this many connections (capped at 100 000).
    limit: usize,
}

impl Default for LiveFlowsQuery {
    fn default() -> Self {
        LiveFlowsQuery {
            gateway: None,
            filter: FlowFilter::default(),
            limit: 1000,
        }
    }
}

impl QueryParams for LiveFlowsQuery {
    const NAMES: &'static [&'static str] = &[
        "gateway", "addr", "src", "dst", "port", "proto", "rule_id", "limit",
    ];
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        let f = &mut self.filter;
        match name {
            "gateway" => self.gateway = Some(v.to_string()),
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

/// Every selected gateway's connections (asked of all at once), each naming its gateway (and its HA pair: a
/// pair's standby lists the copies it holds of the active's); `errors` names the gateways that did not answer.
/// When none answers, its error (503 for an unreachable one).
async fn list_flows(
    State(app): State<Shared>,
    Params(q): Params<LiveFlowsQuery>,
) -> ApiResult<Json<Value>> {
    let gateways = select(&app, q.gateway.as_deref(), "gateway")?;
    let limit = q.limit.min(100_000);
    let answers = Gateways::each(&gateways, |g| g.client.flows(&q.filter, limit)).await;
    let mut flows = Vec::new();
    let mut truncated = false;
    let mut errors = serde_json::Map::new();
    let mut failure = None;
    for (g, answer) in gateways.iter().zip(answers) {
        match answer {
            Ok(list) => {
                truncated |= list.truncated;
                for f in list.flows {
                    let mut v = serde_json::to_value(f).unwrap_or_default();
                    v["gateway"] = json!(g.name());
                    if let Some(pair) = &g.pair {
                        v["pair"] = json!(pair);
                    }
                    flows.push(v);
                }
            }
            Err(e) => {
                errors.insert(g.name().into(), json!(e.to_string()));
                failure = Some(e);
            }
        }
    }
    if let (Some(e), true) = (failure, errors.len() == gateways.len()) {
        return Err(e.into());
    }
    if flows.len() > limit {
        flows.truncate(limit);
        truncated = true;
    }
    let mut out = json!({"flows": flows, "truncated": truncated});
    if !errors.is_empty() {
        out["errors"] = Value::Object(errors);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillBody {
    #[serde(flatten)]
    filter: FlowFilter,
    /// Only on this gateway, or on both members of this HA pair (default: every gateway).
    #[serde(default)]
    gateway: Option<String>,
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
    let gateways = select(&app, body.gateway.as_deref(), "gateway")?;
    let answers = Gateways::each(&gateways, |g| g.client.kill_flows(&filter)).await;
    let mut counts = Vec::new();
    let mut per = serde_json::Map::new();
    let mut failure = None;
    for (g, answer) in gateways.iter().zip(answers) {
        match answer {
            Ok(r) => {
                counts.push((g.pair.as_deref(), r.killed));
                per.insert(g.name().into(), json!({"killed": r.killed}));
            }
            Err(e) => {
                per.insert(g.name().into(), json!({"error": e.to_string()}));
                failure = Some(e);
            }
        }
    }
    if per.values().all(|v| v.get("error").is_some()) {
        if let Some(e) = failure {
            return Err(e.into());
        }
    }
    let killed = connections_killed(&counts);
    let mut store = app.store.lock().await;
    let mut entry = AuditEntry::new(&who(w), "flows.kill");
    entry.version_before = store.active_version();
    entry.version_after = store.active_version();
    entry.details =
        json!({"filter": filter, "gateway": body.gateway, "killed": killed, "gateways": per});
    store.append_audit(entry)?;
    Ok(Json(json!({"killed": killed, "gateways": per})))
}

/// Connections killed, from each gateway's count (with its HA pair): a pair's standby holds copies of the
/// active's connections, so a pair counts the larger of its members' counts, not their sum.
fn connections_killed(counts: &[(Option<&str>, usize)]) -> usize {
    let mut pairs: Vec<(&str, usize)> = Vec::new();
    let mut total = 0;
    for &(pair, n) in counts {
        match pair {
            None => total += n,
            Some(p) => match pairs.iter_mut().find(|(q, _)| *q == p) {
                Some((_, most)) => *most = (*most).max(n),
                None => pairs.push((p, n)),
            },
        }
    }
    total + pairs.iter().map(|(_, n)| n).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::connections_killed;

    #[test]
    fn a_pairs_connection_killed_on_both_members_counts_once() {
        assert_eq!(connections_killed(&[]), 0);
        assert_eq!(connections_killed(&[(None, 2), (None, 3)]), 5);
        // The active killed 4; the standby 3 copies (one had not reached it yet) and 4.
        assert_eq!(
            connections_killed(&[(Some("p"), 4), (Some("p"), 3), (None, 1)]),
            5
        );
        assert_eq!(
            connections_killed(&[(Some("p"), 2), (Some("q"), 1), (Some("p"), 2)]),
            3
        );
    }
}
