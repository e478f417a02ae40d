//! The REST API under `/api/v1` (axum): the route table, authentication, the fallback, and health, version and
//! the OpenAPI document. JSON everywhere; errors per [`crate::error`]; query parameters per [`extract`]. One file
//! per resource group: [`draft`] (the draft, its objects, validate, diff, export), [`lifecycle`] (commit, confirm,
//! rollback, versions, the active version), [`flows`] (tracked connections, kill, explain), [`flow_log`] (query and
//! stream), [`console`] (stats, rules health, traffic map), [`suggest`] (rule suggestion, what-if), [`audit`] and
//! [`tokens`]; [`web`] serves the console's
//! static files.
//!
//! Every route declares the [`Right`] it needs ([`Routes::add`] takes it); a caller whose role lacks it gets 403
//! naming the right and the role. Failed authentications are counted and slowed per source ([`refuse`]).
//!
//! Writes to the draft carry `If-Match` with the draft's ETag (`"draft-<revision>"`); lifecycle operations on the
//! active policy (confirm, rollback) carry the active ETag (`"active-<version>"`); a commit carries the draft's (it
//! commits exactly what the client saw). A missing `If-Match` is 428, a stale one 409.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use futures_util::StreamExt;
use policy::{Rule, Segment, Service};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::app::Shared;
use crate::auth::{Caller, Reason, Right};
use crate::error::ApiError;
use extract::{QueryParams, Who};

mod audit;
mod console;
mod draft;
pub mod extract;
pub mod flow_log;
mod flows;
mod gateways;
mod history;
mod lifecycle;
mod suggest;
mod tokens;
mod web;

/// One served operation: its method, path, the query parameters it takes, and the right it needs (`None`: served
/// without a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub path: String,
    pub query: &'static [&'static str],
    pub right: Option<Right>,
}

/// A router plus the table of the operations it serves (for the OpenAPI document and the tests).
pub struct Routes<S = Shared> {
    router: Router<S>,
    pub table: Vec<Route>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    fn new() -> Self {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// An operation that needs `right` and takes no query parameters: any is refused, as [`extract::Params`]
    /// refuses unknown ones.
    fn add<H: Handler<T, S>, T: 'static>(
        self,
        method: Method,
        path: &str,
        right: Right,
        handler: H,
    ) -> Self {
        let route = without_params(&method, handler);
        self.insert(method, path, extract::NoParams::NAMES, Some(right), route)
    }

    /// An operation that needs `right`, whose handler reads `Q` with [`extract::Params`].
    fn add_with<Q: QueryParams, H: Handler<T, S>, T: 'static>(
        self,
        method: Method,
        path: &str,
        right: Right,
        handler: H,
    ) -> Self {
        let route = on(filter(&method), handler);
        self.insert(method, path, Q::NAMES, Some(right), route)
    }

    /// An operation served without a token (health only), taking no query parameters.
    fn add_public<H: Handler<T, S>, T: 'static>(
        self,
        method: Method,
        path: &str,
        handler: H,
    ) -> Self {
        let route = without_params(&method, handler);
        self.insert(method, path, extract::NoParams::NAMES, None, route)
    }

    fn insert(
        mut self,
        method: Method,
        path: &str,
        query: &'static [&'static str],
        right: Option<Right>,
        mut route: axum::routing::MethodRouter<S>,
    ) -> Self {
        if let Some(right) = right {
            // The outermost route layer: a caller without the right learns nothing more (not even about its
            // query parameters).
            route = route.route_layer(axum::middleware::from_fn_with_state(right, require));
        }
        self.table.push(Route {
            method,
            path: path.to_string(),
            query,
            right,
        });
        // Routes on one path with other methods merge into one method router.
        self.router = self.router.route(path, route);
        self
    }
}

/// `handler` for `method`, refusing any query parameter.
fn without_params<S, H, T>(method: &Method, handler: H) -> axum::routing::MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    H: Handler<T, S>,
    T: 'static,
{
    on(filter(method), handler).route_layer(axum::middleware::from_fn(extract::no_params))
}

fn filter(m: &Method) -> MethodFilter {
    MethodFilter::try_from(m.clone()).expect("a method the router can route")
}

const API: &str = "/api/v1";

fn p(s: &str) -> String {
    format!("{API}{s}")
}

/// Routes that need a token (everything under /api/v1 except health), but the flow log's ([`flow_log::routes`]).
pub fn protected_routes() -> Routes {
    use Method as M;
    let r = Routes::new()
        .add(M::GET, &p("/version"), Right::Read, version)
        .add(M::GET, &p("/openapi.json"), Right::Read, openapi);
    let r = draft::routes(r);
    let r = draft::object_routes::<Segment>(r);
    let r = draft::object_routes::<Service>(r);
    let r = draft::object_routes::<Rule>(r);
    let r = lifecycle::routes(r);
    let r = flows::routes(r);
    let r = gateways::routes(r);
    let r = console::routes(r);
    let r = history::routes(r);
    let r = audit::routes(r);
    let r = suggest::routes(r);
    tokens::routes(r)
}

/// Routes without authentication.
pub fn public_routes() -> Routes {
    Routes::new().add_public(Method::GET, &p("/health"), health)
}

/// Every operation served: the API's, the flow log's, health, and `/metrics` (which needs [`Right::Read`]).
pub fn route_table() -> Vec<Route> {
    let mut all = protected_routes().table;
    all.extend(public_routes().table);
    all.extend(flow_log::routes().table);
    all.push(Route {
        method: Method::GET,
        path: "/metrics".into(),
        query: &[],
        right: Some(METRICS_RIGHT),
    });
    all
}

/// What the `extra` routers of [`app`] (`/metrics`) need.
const METRICS_RIGHT: Right = Right::Read;

/// The whole application: API and flow log (authenticated), health, `extra` routers (metrics: authenticated,
/// [`Right::Read`], no query parameters), and the web console's static files at `/` when its directory exists.
pub fn app(state: Shared, extra: Vec<Router>) -> Router {
    let mut protected = protected_routes()
        .router
        .with_state(state.clone())
        .merge(flow_log::routes().router.with_state(state.flowlog.clone()));
    for r in extra {
        protected = protected.merge(
            r.route_layer(axum::middleware::from_fn(extract::no_params))
                .route_layer(axum::middleware::from_fn_with_state(METRICS_RIGHT, require)),
        );
    }
    let protected = protected.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        authenticate,
    ));
    let mut router = public_routes()
        .router
        .with_state(state.clone())
        .merge(protected)
        .fallback(fallback);
    let web = &state.config.web.dir;
    if web.is_dir() {
        // Unknown API paths keep their JSON 404; everything else may be a console file.
        router = router
            .route("/api/{*rest}", axum::routing::any(fallback))
            .fallback_service(web::files(web));
    }
    router.layer(axum::extract::DefaultBodyLimit::max(
        state.config.body_limit_bytes,
    ))
}

async fn fallback(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {method} {}", uri.path()),
    )
}

/// Finds the caller's token (401 when there is none, or it is unknown, expired or revoked: counted, and the
/// answer slowed per source after a few), and makes the caller known to the handlers ([`Caller`], [`Who`]).
async fn authenticate(State(app): State<Shared>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer);
    let (found, changes) = {
        let tokens = app.tokens.read().unwrap_or_else(|p| p.into_inner());
        let found = match presented {
            None => Err(Reason::Missing),
            Some(secret) => tokens.authenticate(secret).map_err(Reason::from),
        };
        (found, tokens.changes())
    };
    let caller = match found {
        Ok(caller) => caller,
        Err(reason) => return refuse(&app, peer, reason).await,
    };
    app.auth_failures.succeeded(peer);
    req.extensions_mut().insert(Who {
        identity: caller.identity.clone(),
        tiers: caller.tiers.clone(),
    });
    req.extensions_mut().insert(caller.clone());
    let resp = next.run(req).await;
    let streams = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    if !streams {
        return resp;
    }
    // An event stream lives as long as its token: it ends when the token is rotated, revoked or expires.
    let (parts, body) = resp.into_parts();
    let body = body
        .into_data_stream()
        .take_until(token_ended(app, caller, changes));
    Response::from_parts(parts, axum::body::Body::from_stream(body))
}

/// The 401 of a failed authentication, answered after the delay its source has earned (an async sleep: no
/// thread waits). A slowed answer says how long it waited, and `Retry-After` when to try again.
async fn refuse(app: &Shared, peer: Option<std::net::IpAddr>, reason: Reason) -> Response {
    let (delay, failures) = app.auth_failures.failed(peer, reason);
    let mut error = ApiError::unauthorized().detail("Authorization", reason.label());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
        error = error.detail(
            "(delay)",
            format!(
                "answered after {} ms: {failures} failed authentications in a row from this address",
                delay.as_millis()
            ),
        );
    }
    let mut r = error.into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"bulkhead\""),
    );
    if !delay.is_zero() {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(delay.as_secs().max(1)),
        );
    }
    r
}

/// Route layer: the caller's role must have `right` (403 naming it and the role otherwise).
async fn require(State(right): State<Right>, req: Request, next: Next) -> Response {
    match req.extensions().get::<Caller>() {
        Some(caller) if caller.role.has(right) => next.run(req).await,
        Some(caller) => forbidden(right, caller).into_response(),
        // Only served behind `authenticate`: a route reached without it is refused, never served.
        None => ApiError::unauthorized().into_response(),
    }
}

/// The 403 of a caller whose role lacks `right`.
pub fn forbidden(right: Right, caller: &Caller) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "this needs the `{right}` right, which the role `{}` of {} does not have",
            caller.role, caller.identity
        ),
    )
    .detail("right", right.name())
    .detail("role", caller.role.name())
}

/// Resolves once the caller's token no longer stands: rotated, revoked, or expired.
async fn token_ended(app: Shared, caller: Caller, mut changes: watch::Receiver<()>) {
    let expires = async {
        match caller.expires_unix_ms {
            Some(at) => {
                let now = crate::time::unix_ms(std::time::SystemTime::now());
                tokio::time::sleep(std::time::Duration::from_millis(at.saturating_sub(now))).await
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expires);
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    // The tokens are never dropped while the server runs.
                    std::future::pending::<()>().await;
                }
                let tokens = app.tokens.read().unwrap_or_else(|p| p.into_inner());
                if !tokens.still_valid(&caller) {
                    return;
                }
            }
            () = &mut expires => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Health, version, OpenAPI

/// Control is up; which version each gateway runs. `dataplane` sums the gateways up (exactly the one gateway's
/// state when there is one): reachable when all are, the version they all run (else null), their connections.
async fn health(State(app): State<Shared>) -> Json<Value> {
    let active = app.gateways.active_version(&app.store);
    let gateways = app.gateways.to_json(active);
    let reachable = gateways.iter().all(|g| g["reachable"] == true);
    let mut dataplane = if reachable {
        let first = gateways.first().map(|g| g["policy_version"].clone());
        let same = gateways
            .iter()
            .all(|g| Some(&g["policy_version"]) == first.as_ref());
        let flows: u64 = gateways
            .iter()
            .filter_map(|g| g["flows_active"].as_u64())
            .sum();
        json!({
            "reachable": true,
            "policy_version": if same { first.unwrap_or(Value::Null) } else { Value::Null },
            "flows_active": flows,
        })
    } else {
        let error = app.gateways.iter().find_map(|g| {
            g.seen()
                .status
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", g.name()))
        });
        json!({"reachable": false, "error": error})
    };
    if app.gateways.len() == 1 {
        if let Some(Err(e)) = app.gateways.iter().next().map(|g| g.seen().status.clone()) {
            dataplane["error"] = json!(e);
        }
    }
    let in_sync = active.is_some() && gateways.iter().all(|g| g["in_sync"] == true);
    let reconcile_refused = gateways
        .iter()
        .find(|g| !g["reconcile_refused"].is_null())
        .map(|g| g["reconcile_refused"].clone());
    Json(json!({
        "status": "ok",
        "active_version": active,
        "dataplane": dataplane,
        "in_sync": in_sync,
        "reconcile_refused": reconcile_refused,
        "gateways": gateways,
    }))
}

async fn version() -> Json<Value> {
    Json(json!({
        "control": env!("CARGO_PKG_VERSION"),
        "api": "v1",
        "policy_formats": [policy::FORMAT_V1, policy::FORMAT_V2],
        "dataplane_protocol": crate::dataplane::PROTOCOL_VERSION,
    }))
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
