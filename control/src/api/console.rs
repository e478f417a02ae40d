//! What the web console polls: stats, rules health and the traffic map. Each answers from the pollers' memory
//! (metrics, flow log), never with a dataplane request, so any number of consoles cost the dataplane nothing.

use std::time::SystemTime;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;
use policy::Policy;
use serde_json::Value;

use super::extract::{self, ApiResult, Params, QueryParams};
use super::{p, Routes};
use crate::app::Shared;
use crate::auth::Right;
use crate::error::ApiError;
use crate::rulehealth::{self, RulesHealthQuery, Which};
use crate::stats;
use crate::traffic::{self, TrafficMapQuery, MAX_WINDOW_S};

pub(super) fn routes(r: Routes) -> Routes {
    use Method as M;
    r.add_with::<StatsQuery, _, _>(M::GET, &p("/stats"), Right::Read, get_stats)
        .add_with::<RulesHealthQuery, _, _>(M::GET, &p("/rules/health"), Right::Read, rules_health)
        .add_with::<TrafficMapQuery, _, _>(M::GET, &p("/traffic/map"), Right::Read, traffic_map)
}

/// `GET /stats?gateway`: one gateway's counters (default: the first configured), or an HA pair's.
#[derive(Default)]
struct StatsQuery {
    gateway: Option<String>,
}

impl QueryParams for StatsQuery {
    const NAMES: &'static [&'static str] = &["gateway"];
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        match name {
            "gateway" => self.gateway = Some(v.to_string()),
            _ => extract::not_a_name(name),
        }
        Ok(())
    }
}

/// What a `gateway` parameter of the console's endpoints names: `None` for one gateway (its readings are read
/// by [`crate::metrics::Metrics::with_reading`]), or the members of an HA pair. A name that is neither is a 400.
fn pair_members(app: &Shared, name: Option<&str>) -> Result<Option<Vec<String>>, ApiError> {
    let selected = app
        .gateways
        .select(name)
        .map_err(|e| ApiError::bad_request(e.to_string()).detail("gateway", "unknown gateway"))?;
    let is_pair = name.is_some_and(|n| app.gateways.get(n).is_none());
    Ok(is_pair.then(|| selected.iter().map(|g| g.name().to_string()).collect()))
}

async fn get_stats(
    State(app): State<Shared>,
    Params(q): Params<StatsQuery>,
) -> ApiResult<Json<Value>> {
    let stats = match pair_members(&app, q.gateway.as_deref())? {
        Some(members) => {
            let names: Vec<&str> = members.iter().map(String::as_str).collect();
            app.metrics.with_readings(&names, stats::pair_stats)
        }
        None => app
            .metrics
            .with_reading(q.gateway.as_deref(), stats::stats)
            .unwrap_or_else(|| stats::stats(&Default::default())),
    };
    Ok(Json(stats))
}

impl QueryParams for RulesHealthQuery {
    const NAMES: &'static [&'static str] = &["policy", "stale_after_s", "gateway"];
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        match name {
            "gateway" => self.gateway = Some(v.to_string()),
            "policy" => {
                self.which = match v {
                    "active" => Which::Active,
                    "draft" => Which::Draft,
                    _ => return Err("active or draft"),
                }
            }
            "stale_after_s" => {
                self.stale_after_s = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or("a number of seconds, at least 1")?
            }
            _ => extract::not_a_name(name),
        }
        Ok(())
    }
}

async fn rules_health(
    State(app): State<Shared>,
    Params(q): Params<RulesHealthQuery>,
) -> ApiResult<Json<Value>> {
    let (version, key, policy) = {
        let store = app.store.lock().await;
        match q.which {
            Which::Active => {
                let v = store.active_version();
                let key = rulehealth::CacheKey::Active(v.unwrap_or(0));
                (v, key, store.active_policy().cloned())
            }
            Which::Draft => {
                let p = Policy::new(store.draft().clone())
                    .map_err(|e| ApiError::invalid_policy("the draft does not validate", &e))?;
                (None, rulehealth::CacheKey::Draft(store.revision()), Some(p))
            }
        }
    };
    let counters = match pair_members(&app, q.gateway.as_deref())? {
        // An HA pair: the sum of its members' counters.
        Some(members) => {
            let names: Vec<&str> = members.iter().map(String::as_str).collect();
            app.metrics
                .with_readings(&names, rulehealth::pair_rule_counters)
        }
        None => app
            .metrics
            .with_reading(q.gateway.as_deref(), rulehealth::rule_counters)
            .flatten(),
    };
    // Shadowing compiles the policy (once per version or draft revision): CPU work, off the async workers.
    let cache = app.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let shadowed = policy.as_ref().map(|p| cache.shadow_cache.get(key, p));
        let with = policy.as_ref().zip(shadowed.as_deref());
        rulehealth::report(&q, version, with, counters.as_ref(), SystemTime::now())
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("rules health: {e}"),
        )
    })?;
    Ok(Json(answer))
}

impl QueryParams for TrafficMapQuery {
    const NAMES: &'static [&'static str] = &["window_s", "proto", "port"];
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        match name {
            "window_s" => {
                self.window_s = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=MAX_WINDOW_S).contains(n))
                    .ok_or("a number of seconds, 1 to 86400")?
            }
            // As the flow log takes them, so the map and the flow log select the same events.
            "proto" => self.filter.proto = Some(extract::proto(v)?),
            "port" => self.filter.port = Some(extract::port(v)?),
            _ => extract::not_a_name(name),
        }
        Ok(())
    }
}

async fn traffic_map(State(app): State<Shared>, Params(q): Params<TrafficMapQuery>) -> Json<Value> {
    let active = app.store.lock().await.active_policy().cloned();
    Json(traffic::map(
        &app.flowlog,
        active.as_ref(),
        &q,
        SystemTime::now(),
    ))
}
