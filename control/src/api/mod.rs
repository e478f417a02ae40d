//! The REST API under `/api/v1` (axum): the route table, authentication, the fallback, and health, version and
//! the OpenAPI document. JSON everywhere; errors per [`crate::error`]; query parameters per [`extract`]. One file
//! per resource group: [`draft`] (the draft, its objects, validate, diff, export), [`lifecycle`] (commit, confirm,
//! rollback, versions, the active version), [`flows`] (tracked connections, kill, explain), [`flow_log`] (query and
//! stream), [`console`] (stats, rules health, traffic map), [`audit`] and [`tokens`]; [`web`] serves the console's
//! static files.
//!
//! Writes to the draft carry `If-Match` with the draft's ETag (`"draft-<revision>"`); lifecycle operations on the
//! active policy (confirm, rollback) carry the active ETag (`"active-<version>"`); a commit carries the draft's (it
//! commits exactly what the client saw). A missing `If-Match` is 428, a stale one 409.

use axum::extract::{Request, State};
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
use crate::error::ApiError;
use extract::{QueryParams, Who};

mod audit;
mod console;
mod draft;
pub mod extract;
pub mod flow_log;
mod flows;
mod lifecycle;
mod tokens;
mod web;

/// One served operation: its method, path, and the query parameters it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub path: String,
    pub query: &'static [&'static str],
}

/// A router plus the table of the operations it serves (for the OpenAPI test).
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

    /// An operation that takes no query parameters: any is refused, as [`extract::Params`] refuses unknown ones.
    fn add<H: Handler<T, S>, T: 'static>(self, method: Method, path: &str, handler: H) -> Self {
        let route =
            on(filter(&method), handler).route_layer(axum::middleware::from_fn(extract::no_params));
        self.insert(method, path, extract::NoParams::NAMES, route)
    }

    /// An operation whose handler reads `Q` with [`extract::Params`].
    fn add_with<Q: QueryParams, H: Handler<T, S>, T: 'static>(
        self,
        method: Method,
        path: &str,
        handler: H,
    ) -> Self {
        let route = on(filter(&method), handler);
        self.insert(method, path, Q::NAMES, route)
    }

    fn insert(
        mut self,
        method: Method,
        path: &str,
        query: &'static [&'static str],
        route: axum::routing::MethodRouter<S>,
    ) -> Self {
        self.table.push(Route {
            method,
            path: path.to_string(),
            query,
        });
        // Routes on one path with other methods merge into one method router.
        self.router = self.router.route(path, route);
        self
    }
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
    let r = Routes::new().add(M::GET, &p("/version"), version).add(
        M::GET,
        &p("/openapi.json"),
        openapi,
    );
    let r = draft::routes(r);
    let r = draft::object_routes::<Segment>(r);
    let r = draft::object_routes::<Service>(r);
    let r = draft::object_routes::<Rule>(r);
    let r = lifecycle::routes(r);
    let r = flows::routes(r);
    let r = console::routes(r);
    let r = audit::routes(r);
    tokens::routes(r)
}

/// Routes without authentication.
pub fn public_routes() -> Routes {
    Routes::new().add(Method::GET, &p("/health"), health)
}

/// The whole application: API and flow log (authenticated), health, `extra` routers (metrics: authenticated, no
/// query parameters), and the web console's static files at `/` when its directory exists.
pub fn app(state: Shared, extra: Vec<Router>) -> Router {
    let mut protected = protected_routes()
        .router
        .with_state(state.clone())
        .merge(flow_log::routes().router.with_state(state.flowlog.clone()));
    for r in extra {
        protected = protected.merge(r.route_layer(axum::middleware::from_fn(extract::no_params)));
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

async fn authenticate(State(app): State<Shared>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer)
        .map(str::to_owned);
    let (who, changes) = {
        let tokens = app.tokens.read().unwrap_or_else(|p| p.into_inner());
        let who = presented.as_deref().and_then(|t| tokens.identify(t));
        (who, tokens.changes())
    };
    let (Some(who), Some(secret)) = (who, presented) else {
        let mut r = ApiError::unauthorized().into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"bulkhead\""),
        );
        return r;
    };
    req.extensions_mut().insert(Who(who));
    let resp = next.run(req).await;
    let streams = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    if !streams {
        return resp;
    }
    // An event stream lives as long as its token: it ends when the token is rotated.
    let (parts, body) = resp.into_parts();
    let body = body
        .into_data_stream()
        .take_until(token_changed(app, secret, changes));
    Response::from_parts(parts, axum::body::Body::from_stream(body))
}

/// Resolves once `secret` no longer identifies anyone.
async fn token_changed(app: Shared, secret: String, mut changes: watch::Receiver<()>) {
    while changes.changed().await.is_ok() {
        let tokens = app.tokens.read().unwrap_or_else(|p| p.into_inner());
        if tokens.identify(&secret).is_none() {
            return;
        }
    }
    // The tokens are never dropped while the server runs.
    std::future::pending().await
}

// ---------------------------------------------------------------------------------------------------------
// Health, version, OpenAPI

async fn health(State(app): State<Shared>) -> Json<Value> {
    let active = app.store.lock().await.active_version();
    let seen = app
        .dataplane_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let dataplane = match seen {
        Ok(s) => {
            json!({"reachable": true, "policy_version": s.policy_version, "flows_active": s.flows_active})
        }
        Err(e) => json!({"reachable": false, "error": e}),
    };
    let in_sync = active.is_some() && dataplane["policy_version"].as_u64() == active;
    let refused = *app.refused.lock().unwrap_or_else(|p| p.into_inner());
    let reconcile_refused = refused.map(|d| {
        json!({
            "active_version": d.active_version,
            "dataplane_version": d.dataplane_version,
            "reason": crate::reconcile::refusal_reason(&d),
        })
    });
    Json(json!({
        "status": "ok",
        "active_version": active,
        "dataplane": dataplane,
        "in_sync": in_sync,
        "reconcile_refused": reconcile_refused,
    }))
}

async fn version() -> Json<Value> {
    Json(json!({
        "control": env!("CARGO_PKG_VERSION"),
        "api": "v1",
        "policy_format": policy::FORMAT_V1,
        "dataplane_protocol": crate::dataplane::PROTOCOL_VERSION,
    }))
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
