//! The REST API under `/api/v1` (axum). JSON everywhere; errors per [`crate::error`].
//!
//! Concurrency: every store change and every push to the dataplane happens under one lock (the store's), so
//! commits, rollbacks, reverts and reconciliation are serialized. Writes to the draft carry `If-Match` with the
//! draft's ETag (`"draft-<revision>"`); lifecycle operations on the active policy (confirm, rollback) carry the
//! active ETag (`"active-<version>"`); a commit carries the draft's (it commits exactly what the client saw).
//! A missing `If-Match` is 428, a stale one 409.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use policy::{Document, Policy, Rule, Segment, Service, Settings};
use protocol::FlowFilter;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::Tokens;
use crate::config::{Config, MAX_CONFIRM_S};
use crate::dataplane::Dataplane;
use crate::error::ApiError;
use crate::flowlog::FlowLog;
use crate::metrics::Metrics;
use crate::store::{ActiveFile, AuditEntry, Pending, Store, VersionKind, VersionMeta};
use crate::{diff, explain, rulehealth, stats, time, traffic};

/// Everything the handlers share.
pub struct App {
    pub store: tokio::sync::Mutex<Store>,
    pub tokens: RwLock<Tokens>,
    pub dataplane: Dataplane,
    pub metrics: Arc<Metrics>,
    /// The flow log's memory, for the traffic map (its own routes are served by its router).
    pub flowlog: Arc<FlowLog>,
    /// Shadowed rules of the last policy `rules/health` was asked about.
    pub shadow_cache: rulehealth::ShadowCache,
    pub config: Config,
    /// The last `status` answer of the dataplane (or why there was none), for `health`.
    pub dataplane_seen: Mutex<Result<protocol::Status, String>>,
    /// The last reconciliation that verified the dataplane runs the active version: (version, dataplane uptime).
    pub verified: Mutex<Option<(u64, f64)>>,
}

pub type Shared = Arc<App>;
type ApiResult<T = Response> = Result<T, ApiError>;

/// The token identity of the caller (set by [`authenticate`]).
#[derive(Debug, Clone)]
pub struct Who(pub String);

// ---------------------------------------------------------------------------------------------------------
// Extractors and helpers

/// A JSON request body: size limit (413), syntax and type errors with the JSON path of the offending value.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        "the request body exceeds body_limit_bytes",
                    )
                } else {
                    ApiError::bad_request(format!("cannot read the request body: {r}"))
                }
            })?;
        parse_json(&bytes).map(Body)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null".as_slice()
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_json", "the body is not JSON").detail(
                format!("line {}, column {}", inner.line(), inner.column()),
                inner.to_string(),
            )
        } else {
            let path = e.path().to_string();
            let path = if path == "." { "(body)".into() } else { path };
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "the body does not have the expected shape",
            )
            .detail(path, strip_position(&inner.to_string()))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            "trailing data after JSON",
        )
        .detail("(body)", e.to_string())
    })?;
    Ok(value)
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].replace('`', "\""),
        None => msg.replace('`', "\""),
    }
}

/// A query parameter with a bad value: 400 naming it and what it must be.
pub(crate) fn bad_param(name: &str, value: &str, what: &str) -> ApiError {
    let message = format!("query parameter `{name}`: {value:?} is not {what}");
    ApiError::bad_request(message.clone()).detail(name, message)
}

/// An unknown query parameter: 400 naming it and the known ones (a typo must not widen the answer silently).
pub(crate) fn unknown_param(name: &str, known: &str) -> ApiError {
    ApiError::bad_request(format!("unknown query parameter `{name}`"))
        .detail(name, format!("unknown; known: {known}"))
}

/// A parameter given twice is refused rather than one of them silently winning.
pub(crate) fn check_unique(pairs: &[(String, String)]) -> ApiResult<()> {
    for (i, (k, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(seen, _)| seen == k) {
            return Err(ApiError::bad_request(format!(
                "query parameter `{k}` is given more than once"
            ))
            .detail(k.clone(), "given more than once"));
        }
    }
    Ok(())
}

/// Query parameters in order, repeats kept (so they can be refused).
type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request("invalid query string").detail("(query)", e.body_text()))
}

fn draft_etag(rev: u64) -> String {
    format!("\"draft-{rev}\"")
}

fn active_etag(store: &Store) -> String {
    format!("\"active-{}\"", store.active_version().unwrap_or(0))
}

/// Checks `If-Match` against the current ETag: 428 when absent, 409 when stale.
fn if_match(headers: &HeaderMap, current: &str) -> ApiResult<()> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            format!("this write needs If-Match: {current} (read the current ETag first)"),
        ));
    };
    let given = v.to_str().unwrap_or_default();
    let matches = given
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == current);
    if matches {
        Ok(())
    } else {
        Err(ApiError::conflict(
            "stale_etag",
            format!("If-Match {given} is stale: the current ETag is {current}; re-read and retry"),
        ))
    }
}

fn with_etag(etag: String, body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn audit(who: &str, action: &str) -> AuditEntry {
    AuditEntry {
        seq: 0,
        time: String::new(),
        who: who.to_string(),
        action: action.to_string(),
        object: None,
        version_before: None,
        version_after: None,
        draft_revision: None,
        details: Value::Null,
    }
}

fn validation(doc: &Document) -> Value {
    let errors = policy::validate(doc);
    json!({"valid": errors.is_empty(), "errors": errors.iter().map(|e| json!({"path": e.path, "message": e.message})).collect::<Vec<_>>()})
}

// ---------------------------------------------------------------------------------------------------------
// Authentication

pub async fn authenticate(State(app): State<Shared>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let who = presented.and_then(|t| {
        app.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .identify(t)
    });
    match who {
        Some(who) => {
            req.extensions_mut().insert(Who(who));
            next.run(req).await
        }
        None => {
            let mut r = ApiError::unauthorized().into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"bulkhead\""),
            );
            r
        }
    }
}

fn who(req_who: Option<axum::Extension<Who>>) -> String {
    req_who.map_or_else(|| "unknown".into(), |w| w.0 .0)
}

// ---------------------------------------------------------------------------------------------------------
// Router

/// The router plus the (method, path) of every route it serves, for the OpenAPI test.
pub struct Routes {
    router: Router<Shared>,
    pub table: Vec<(Method, String)>,
}

impl Routes {
    fn new() -> Self {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    fn add(mut self, path: &str, methods: &[Method], route: MethodRouter<Shared>) -> Self {
        for m in methods {
            self.table.push((m.clone(), path.to_string()));
        }
        self.router = self.router.route(path, route);
        self
    }
}

const API: &str = "/api/v1";

/// Routes that need a token (everything under /api/v1 except health).
pub fn protected_routes() -> Routes {
    use Method as M;
    let p = |s: &str| format!("{API}{s}");
    let mut r = Routes::new()
        .add(&p("/version"), &[M::GET], get(version))
        .add(&p("/openapi.json"), &[M::GET], get(openapi))
        .add(
            &p("/draft"),
            &[M::GET, M::PUT],
            get(get_draft).put(put_draft),
        )
        .add(&p("/draft/reset"), &[M::POST], post(reset_draft))
        .add(
            &p("/draft/settings"),
            &[M::GET, M::PUT],
            get(get_settings::<false>).put(put_settings),
        )
        .add(&p("/active"), &[M::GET], get(get_active))
        .add(&p("/active/settings"), &[M::GET], get(get_settings::<true>))
        .add(&p("/export/{which}"), &[M::GET], get(export))
        .add(&p("/validate"), &[M::POST], post(validate))
        .add(&p("/diff"), &[M::GET], get(get_diff))
        .add(&p("/commit"), &[M::POST], post(commit))
        .add(&p("/confirm"), &[M::POST], post(confirm))
        .add(&p("/rollback"), &[M::POST], post(rollback))
        .add(&p("/versions"), &[M::GET], get(list_versions))
        .add(&p("/versions/{version}"), &[M::GET], get(get_version))
        .add(&p("/explain"), &[M::POST], post(explain_flow))
        .add(&p("/flows"), &[M::GET], get(list_flows))
        .add(&p("/flows/kill"), &[M::POST], post(kill_flows))
        .add(&p("/stats"), &[M::GET], get(get_stats))
        .add(&p("/rules/health"), &[M::GET], get(rules_health))
        .add(&p("/traffic/map"), &[M::GET], get(traffic_map))
        .add(&p("/audit"), &[M::GET], get(read_audit))
        .add(&p("/token/rotate"), &[M::POST], post(rotate_token));
    r = add_objects::<Segment>(r);
    r = add_objects::<Service>(r);
    r = add_objects::<Rule>(r);
    r
}

fn add_objects<O: Object>(r: Routes) -> Routes {
    use Method as M;
    let coll = format!("{API}/draft/{}", O::KIND);
    let item = format!("{API}/draft/{}/{{key}}", O::KIND);
    r.add(
        &coll,
        &[M::GET, M::POST],
        get(list_objects::<O, false>).post(create_object::<O>),
    )
    .add(
        &item,
        &[M::GET, M::PUT, M::DELETE],
        get(get_object::<O, false>)
            .put(put_object::<O>)
            .delete(delete_object::<O>),
    )
    .add(
        &format!("{API}/active/{}", O::KIND),
        &[M::GET],
        get(list_objects::<O, true>),
    )
    .add(
        &format!("{API}/active/{}/{{key}}", O::KIND),
        &[M::GET],
        get(get_object::<O, true>),
    )
}

/// Routes without authentication.
pub fn public_routes() -> Routes {
    Routes::new().add(&format!("{API}/health"), &[Method::GET], get(health))
}

/// The whole application: API (authenticated), health, `extra` routers (metrics, flow log: authenticated),
/// and the web console's static files at `/` when its directory exists.
pub fn app(state: Shared, extra: Vec<Router>) -> Router {
    let mut protected = protected_routes().router.with_state(state.clone());
    for r in extra {
        protected = protected.merge(r);
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
            .fallback_service(
                tower_http::services::ServeDir::new(web).append_index_html_on_directories(true),
            );
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
    Json(
        json!({"status": "ok", "active_version": active, "dataplane": dataplane, "in_sync": in_sync}),
    )
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

// ---------------------------------------------------------------------------------------------------------
// Draft and active: whole documents

async fn get_draft(State(app): State<Shared>) -> Response {
    let store = app.store.lock().await;
    with_etag(draft_etag(store.revision()), Json(store.draft().clone()))
}

/// Import: replaces the whole draft. The document must be well-typed; semantic problems are reported in the
/// answer (a draft may be invalid while it is being edited; commit refuses it).
async fn put_draft(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
    Body(value): Body<Value>,
) -> ApiResult {
    if let Err(e @ policy::PolicyError::Syntax { .. }) = policy::Policy::from_value(value.clone()) {
        return Err(ApiError::invalid_policy("import", &e));
    }
    let doc = document_from_value(value)?;
    write_draft(&app, &who(w), &headers, "draft.import", None, |d| {
        *d = doc;
        Ok(Value::Null)
    })
    .await
}

/// A document that may not validate yet, but whose types are right.
fn document_from_value(value: Value) -> ApiResult<Document> {
    match value.get("format") {
        Some(Value::String(f)) if f == policy::FORMAT_V1 => {}
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_policy",
                "not a policy document",
            )
            .detail("format", format!("must be \"{}\"", policy::FORMAT_V1)))
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
            "the document has a field of the wrong type or an unknown field",
        )
        .detail(e.path().to_string(), strip_position(&e.inner().to_string()))
    })
}

async fn reset_draft(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
) -> ApiResult {
    let active = {
        let store = app.store.lock().await;
        store.active_policy().map(|p| p.document().clone())
    };
    write_draft(&app, &who(w), &headers, "draft.reset", None, |d| {
        *d = active.unwrap_or_default();
        Ok(Value::Null)
    })
    .await
}

async fn get_active(State(app): State<Shared>) -> ApiResult {
    let store = app.store.lock().await;
    let (Some(active), Some(policy)) = (store.active(), store.active_policy()) else {
        return Err(ApiError::not_found("no version has been committed yet"));
    };
    let meta = store.meta(active.version);
    Ok(with_etag(
        active_etag(&store),
        Json(json!({
            "version": active.version,
            "meta": meta,
            "pending_confirm": pending_json(active.pending.as_ref()),
            "policy": policy.document(),
        })),
    ))
}

fn pending_json(p: Option<&Pending>) -> Value {
    match p {
        None => Value::Null,
        Some(p) => json!({
            "deadline": time::rfc3339(time::from_unix_ms(p.deadline_unix_ms)),
            "deadline_unix_ms": p.deadline_unix_ms,
            "revert_to": p.revert_to,
        }),
    }
}

async fn export(State(app): State<Shared>, Path(which): Path<String>) -> ApiResult {
    let store = app.store.lock().await;
    let doc = match which.as_str() {
        "draft" => store.draft().clone(),
        "active" => store
            .active_policy()
            .map(|p| p.document().clone())
            .ok_or_else(|| ApiError::not_found("no version has been committed yet"))?,
        n => {
            let v: u64 = n.parse().map_err(|_| {
                ApiError::bad_request("unknown export source")
                    .detail("which", "expected draft, active or a version number")
            })?;
            store
                .version_document(v)?
                .ok_or_else(|| ApiError::not_found(format!("no version {v}")))?
        }
    };
    let name = format!("attachment; filename=\"bulkhead-policy-{which}.json\"");
    let mut r = Json(doc).into_response();
    if let Ok(v) = HeaderValue::from_str(&name) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------------------------
// Draft objects

/// A kind of named object in the document (segments, services, rules).
pub trait Object: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: &'static str;
    const KEY: &'static str;
    fn key(&self) -> String;
    fn list(doc: &Document) -> &Vec<Self>;
    fn list_mut(doc: &mut Document) -> &mut Vec<Self>;
}

impl Object for Segment {
    const KIND: &'static str = "segments";
    const KEY: &'static str = "name";
    fn key(&self) -> String {
        self.name.clone()
    }
    fn list(doc: &Document) -> &Vec<Self> {
        &doc.segments
    }
    fn list_mut(doc: &mut Document) -> &mut Vec<Self> {
        &mut doc.segments
    }
}

impl Object for Service {
    const KIND: &'static str = "services";
    const KEY: &'static str = "name";
    fn key(&self) -> String {
        self.name.clone()
    }
    fn list(doc: &Document) -> &Vec<Self> {
        &doc.services
    }
    fn list_mut(doc: &mut Document) -> &mut Vec<Self> {
        &mut doc.services
    }
}

impl Object for Rule {
    const KIND: &'static str = "rules";
    const KEY: &'static str = "id";
    fn key(&self) -> String {
        self.id.to_string()
    }
    fn list(doc: &Document) -> &Vec<Self> {
        &doc.rules
    }
    fn list_mut(doc: &mut Document) -> &mut Vec<Self> {
        &mut doc.rules
    }
}

/// Reads a document under the store lock: the draft, or the active policy.
async fn read_doc<T>(
    app: &App,
    active: bool,
    f: impl FnOnce(&Document) -> T,
) -> ApiResult<(T, String)> {
    let store = app.store.lock().await;
    if active {
        let p = store
            .active_policy()
            .ok_or_else(|| ApiError::not_found("no version has been committed yet"))?;
        Ok((f(p.document()), active_etag(&store)))
    } else {
        Ok((f(store.draft()), draft_etag(store.revision())))
    }
}

async fn list_objects<O: Object, const ACTIVE: bool>(State(app): State<Shared>) -> ApiResult {
    let (list, etag) = read_doc(&app, ACTIVE, |d| O::list(d).clone()).await?;
    Ok(with_etag(etag, Json(list)))
}

async fn get_object<O: Object, const ACTIVE: bool>(
    State(app): State<Shared>,
    Path(key): Path<String>,
) -> ApiResult {
    let (found, etag) = read_doc(&app, ACTIVE, |d| {
        O::list(d).iter().find(|o| o.key() == key).cloned()
    })
    .await?;
    let found = found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no {} {key:?} in the {}",
            O::KIND.trim_end_matches('s'),
            if ACTIVE { "active policy" } else { "draft" }
        ))
    })?;
    Ok(with_etag(etag, Json(found)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Position {
    /// Where the object goes in its list (0-based); rule order decides which rule matches first.
    position: Option<usize>,
}

fn place<O>(list: &mut Vec<O>, at: Option<usize>, obj: O) -> ApiResult<()> {
    match at {
        None => list.push(obj),
        Some(i) if i <= list.len() => list.insert(i, obj),
        Some(i) => {
            return Err(ApiError::bad_request("position out of range").detail(
                "position",
                format!("{i} is past the end of the list ({} entries)", list.len()),
            ))
        }
    }
    Ok(())
}

async fn create_object<O: Object>(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
    pos: Result<Query<Position>, QueryRejection>,
    Body(obj): Body<O>,
) -> ApiResult {
    let pos = query(pos)?;
    let key = obj.key();
    let object = format!("{}/{key}", O::KIND);
    let resp = write_draft(
        &app,
        &who(w),
        &headers,
        &format!("draft.{}.create", O::KIND),
        Some(object),
        move |d| {
            let list = O::list_mut(d);
            if list.iter().any(|o| o.key() == key) {
                return Err(ApiError::conflict(
                    "exists",
                    format!(
                        "the draft already has {} {key:?}; PUT it to replace it",
                        O::KIND
                    ),
                )
                .detail(O::KEY, "already used"));
            }
            let value = serde_json::to_value(&obj).unwrap_or_default();
            place(list, pos.position, obj)?;
            Ok(value)
        },
    )
    .await?;
    let mut resp = resp;
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

async fn put_object<O: Object>(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
    Path(key): Path<String>,
    pos: Result<Query<Position>, QueryRejection>,
    Body(obj): Body<O>,
) -> ApiResult {
    let pos = query(pos)?;
    if obj.key() != key {
        return Err(
            ApiError::bad_request("the object's key differs from the URL").detail(
                O::KEY,
                format!("is {:?} but the URL names {key:?}", obj.key()),
            ),
        );
    }
    let object = format!("{}/{key}", O::KIND);
    write_draft(
        &app,
        &who(w),
        &headers,
        &format!("draft.{}.put", O::KIND),
        Some(object),
        move |d| {
            let list = O::list_mut(d);
            let value = serde_json::to_value(&obj).unwrap_or_default();
            match list.iter().position(|o| o.key() == key) {
                Some(i) if pos.position.is_none() => list[i] = obj,
                Some(i) => {
                    list.remove(i);
                    place(list, pos.position, obj)?;
                }
                None => place(list, pos.position, obj)?,
            }
            Ok(value)
        },
    )
    .await
}

async fn delete_object<O: Object>(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> ApiResult {
    let object = format!("{}/{key}", O::KIND);
    write_draft(
        &app,
        &who(w),
        &headers,
        &format!("draft.{}.delete", O::KIND),
        Some(object),
        move |d| {
            let list = O::list_mut(d);
            let i = list.iter().position(|o| o.key() == key).ok_or_else(|| {
                ApiError::not_found(format!("no {} {key:?} in the draft", O::KIND))
            })?;
            list.remove(i);
            Ok(Value::Null)
        },
    )
    .await
}

async fn get_settings<const ACTIVE: bool>(State(app): State<Shared>) -> ApiResult {
    let (s, etag) = read_doc(&app, ACTIVE, |d| d.settings.clone()).await?;
    Ok(with_etag(etag, Json(s)))
}

async fn put_settings(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
    Body(settings): Body<Settings>,
) -> ApiResult {
    write_draft(
        &app,
        &who(w),
        &headers,
        "draft.settings.put",
        Some("settings".into()),
        move |d| {
            d.settings = settings;
            Ok(serde_json::to_value(&d.settings).unwrap_or_default())
        },
    )
    .await
}

/// The common path of every draft write: If-Match, edit a copy, persist, audit, answer with the new ETag,
/// the object written (if any) and whether the draft now validates.
async fn write_draft(
    app: &App,
    who: &str,
    headers: &HeaderMap,
    action: &str,
    object: Option<String>,
    edit: impl FnOnce(&mut Document) -> ApiResult<Value>,
) -> ApiResult {
    let mut store = app.store.lock().await;
    if_match(headers, &draft_etag(store.revision()))?;
    let mut doc = store.draft().clone();
    let written = edit(&mut doc)?;
    let check = validation(&doc);
    let rev = store.set_draft(doc)?;
    let mut entry = audit(who, action);
    entry.object = object;
    entry.version_before = store.active_version();
    entry.version_after = store.active_version();
    entry.draft_revision = Some(rev);
    store.append_audit(entry)?;
    let mut body = json!({"revision": rev, "validation": check});
    if !written.is_null() {
        body["object"] = written;
    }
    Ok(with_etag(draft_etag(rev), Json(body)))
}

// ---------------------------------------------------------------------------------------------------------
// Validate, diff

async fn validate(State(app): State<Shared>, Body(value): Body<Value>) -> ApiResult<Json<Value>> {
    if value.is_null() {
        let store = app.store.lock().await;
        let mut v = validation(store.draft());
        v["revision"] = json!(store.revision());
        return Ok(Json(v));
    }
    match Policy::from_value(value) {
        Ok(_) => Ok(Json(json!({"valid": true, "errors": []}))),
        Err(policy::PolicyError::Invalid(errors)) => Ok(Json(
            json!({"valid": false, "errors": errors.iter().map(|e| json!({"path": e.path, "message": e.message})).collect::<Vec<_>>()}),
        )),
        Err(e) => Err(ApiError::invalid_policy("document", &e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn get_diff(
    State(app): State<Shared>,
    q: Result<Query<DiffQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let store = app.store.lock().await;
    let resolve = |which: &str, field: &str| -> ApiResult<Document> {
        match which {
            "draft" => Ok(store.draft().clone()),
            "active" => Ok(store
                .active_policy()
                .map(|p| p.document().clone())
                .unwrap_or_default()),
            n => {
                let v: u64 = n.parse().map_err(|_| {
                    ApiError::bad_request("unknown diff side")
                        .detail(field, "expected draft, active or a version number")
                })?;
                store
                    .version_document(v)?
                    .ok_or_else(|| ApiError::not_found(format!("no version {v}")))
            }
        }
    };
    let from = q.from.unwrap_or_else(|| "active".into());
    let to = q.to.unwrap_or_else(|| "draft".into());
    let a = resolve(&from, "from")?;
    let b = resolve(&to, "to")?;
    let mut d = diff::diff(&a, &b);
    d["from"] = json!(from);
    d["to"] = json!(to);
    Ok(Json(d))
}

// ---------------------------------------------------------------------------------------------------------
// Lifecycle: commit, confirm, rollback, history

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    #[serde(default)]
    comment: String,
    /// Revert by itself unless confirmed within this many seconds.
    confirm_within_s: Option<u64>,
    /// Like `confirm_within_s` with the configured `confirm_timeout_s`.
    #[serde(default)]
    confirm: bool,
}

/// Activates `policy` as a new version and pushes it to the dataplane. If the push fails the store goes back to
/// what it was (the dataplane keeps its version; reconciliation fixes any disagreement a timeout left).
async fn activate(
    app: &App,
    store: &mut Store,
    policy: Policy,
    meta: VersionMeta,
    pending: Option<Pending>,
) -> ApiResult<Value> {
    let before = store.active().cloned();
    let before_policy = store.active_policy().cloned();
    let version = meta.version;
    store.add_version(meta, &policy)?;
    store.set_active(ActiveFile { version, pending }, policy.clone())?;
    let doc = serde_json::to_value(policy.document()).unwrap_or_default();
    match app.dataplane.load_policy(&doc, version).await {
        Ok(result) => {
            *app.verified.lock().unwrap_or_else(|p| p.into_inner()) = None;
            Ok(serde_json::to_value(result).unwrap_or_default())
        }
        Err(e) => {
            match (before, before_policy) {
                (Some(a), Some(p)) => store.set_active(a, p)?,
                _ => store.clear_active()?,
            }
            store.discard_version(version)?;
            Err(e.into())
        }
    }
}

fn version_meta(
    store: &Store,
    who: &str,
    comment: String,
    kind: VersionKind,
    source: Option<u64>,
) -> VersionMeta {
    VersionMeta {
        version: store.next_version(),
        created: time::rfc3339(SystemTime::now()),
        author: who.to_string(),
        comment,
        parent: store.active_version(),
        kind,
        source,
    }
}

async fn commit(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
    Body(body): Body<Option<CommitBody>>,
) -> ApiResult {
    let started = Instant::now();
    let body = body.unwrap_or_default();
    let who = who(w);
    let window = match (body.confirm_within_s, body.confirm) {
        (Some(s), _) if s == 0 || s > MAX_CONFIRM_S => {
            return Err(ApiError::bad_request("invalid confirm window").detail(
                "confirm_within_s",
                format!("must be in 1..={MAX_CONFIRM_S}"),
            ))
        }
        (Some(s), _) => Some(s),
        (None, true) => Some(app.config.confirm_timeout_s),
        (None, false) => None,
    };
    let mut store = app.store.lock().await;
    if_match(&headers, &draft_etag(store.revision()))?;
    if let Some(p) = store.active().and_then(|a| a.pending.clone()) {
        return Err(ApiError::conflict(
            "confirm_pending",
            format!(
                "version {} awaits confirmation (it reverts to {} at {}); confirm or roll back first",
                store.active_version().unwrap_or(0),
                p.revert_to,
                time::rfc3339(time::from_unix_ms(p.deadline_unix_ms))
            ),
        ));
    }
    let policy = Policy::new(store.draft().clone())
        .map_err(|e| ApiError::invalid_policy("the draft does not validate", &e))?;
    if store.active_policy().map(|p| p.document()) == Some(policy.document()) {
        return Err(ApiError::conflict(
            "no_changes",
            format!(
                "the draft equals the active version {}: nothing to commit",
                store.active_version().unwrap_or(0)
            ),
        ));
    }
    let before = store.active_version();
    let pending = match (window, before) {
        (Some(s), Some(prev)) => Some(Pending {
            deadline_unix_ms: time::unix_ms(SystemTime::now()) + s * 1000,
            revert_to: prev,
        }),
        (Some(_), None) => return Err(ApiError::conflict(
            "nothing_to_revert_to",
            "the first commit cannot be confirm-within: there is no earlier version to revert to",
        )),
        _ => None,
    };
    let meta = version_meta(&store, &who, body.comment, VersionKind::Commit, None);
    let version = meta.version;
    let pushed = activate(&app, &mut store, policy, meta, pending.clone()).await?;
    let took = started.elapsed();
    app.metrics.observe_commit(took);
    let mut entry = audit(&who, "commit");
    entry.version_before = before;
    entry.version_after = Some(version);
    entry.draft_revision = Some(store.revision());
    entry.details = json!({"confirm_within_s": window});
    store.append_audit(entry)?;
    Ok(with_etag(
        active_etag(&store),
        Json(json!({
            "version": version,
            "previous": before,
            "dataplane": pushed,
            "commit_ms": took.as_secs_f64() * 1e3,
            "pending_confirm": pending_json(pending.as_ref()),
        })),
    ))
}

async fn confirm(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
) -> ApiResult {
    let mut store = app.store.lock().await;
    if_match(&headers, &active_etag(&store))?;
    let Some(active) = store.active().cloned() else {
        return Err(ApiError::conflict(
            "nothing_pending",
            "no version is active",
        ));
    };
    let Some(p) = active.pending else {
        return Err(ApiError::conflict(
            "nothing_pending",
            format!("version {} is not awaiting confirmation", active.version),
        ));
    };
    let policy = store.active_policy().cloned().expect("active has a policy");
    store.set_active(
        ActiveFile {
            version: active.version,
            pending: None,
        },
        policy,
    )?;
    let mut entry = audit(&who(w), "confirm");
    entry.version_before = Some(active.version);
    entry.version_after = Some(active.version);
    entry.details = json!({"revert_to_cancelled": p.revert_to});
    store.append_audit(entry)?;
    Ok(with_etag(
        active_etag(&store),
        Json(json!({"version": active.version, "confirmed": true})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: u64,
    #[serde(default)]
    comment: String,
}

async fn rollback(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
    Body(body): Body<RollbackBody>,
) -> ApiResult {
    let started = Instant::now();
    let who = who(w);
    let mut store = app.store.lock().await;
    if_match(&headers, &active_etag(&store))?;
    let doc = store.version_document(body.version)?.ok_or_else(|| {
        ApiError::not_found(format!("no version {}", body.version)).detail("version", "unknown")
    })?;
    let policy = Policy::new(doc).map_err(|e| ApiError::invalid_policy("stored version", &e))?;
    let before = store.active_version();
    let comment = if body.comment.is_empty() {
        format!("rollback to version {}", body.version)
    } else {
        body.comment
    };
    let meta = version_meta(
        &store,
        &who,
        comment,
        VersionKind::Rollback,
        Some(body.version),
    );
    let version = meta.version;
    let pushed = activate(&app, &mut store, policy, meta, None).await?;
    app.metrics.observe_commit(started.elapsed());
    let mut entry = audit(&who, "rollback");
    entry.version_before = before;
    entry.version_after = Some(version);
    entry.details = json!({"source": body.version});
    store.append_audit(entry)?;
    Ok(with_etag(
        active_etag(&store),
        Json(
            json!({"version": version, "source": body.version, "previous": before, "dataplane": pushed}),
        ),
    ))
}

/// Reverts an unconfirmed commit whose deadline has passed (called by the background task). The store changes
/// first; if the dataplane cannot take the push now, reconciliation pushes it when it can.
pub async fn revert_if_due(app: &App) -> Result<Option<u64>, ApiError> {
    let mut store = app.store.lock().await;
    let Some(active) = store.active().cloned() else {
        return Ok(None);
    };
    let Some(p) = active.pending else {
        return Ok(None);
    };
    if time::unix_ms(SystemTime::now()) < p.deadline_unix_ms {
        return Ok(None);
    }
    let doc = store
        .version_document(p.revert_to)?
        .ok_or_else(|| ApiError::not_found(format!("no version {}", p.revert_to)))?;
    let policy = Policy::new(doc).map_err(|e| ApiError::invalid_policy("stored version", &e))?;
    let meta = version_meta(
        &store,
        "system",
        format!(
            "automatic revert: version {} was not confirmed in time",
            active.version
        ),
        VersionKind::Revert,
        Some(p.revert_to),
    );
    let version = meta.version;
    store.add_version(meta, &policy)?;
    store.set_active(
        ActiveFile {
            version,
            pending: None,
        },
        policy.clone(),
    )?;
    let mut entry = audit("system", "revert");
    entry.version_before = Some(active.version);
    entry.version_after = Some(version);
    entry.details = json!({"source": p.revert_to, "reason": "not confirmed before the deadline"});
    store.append_audit(entry)?;
    let doc = serde_json::to_value(policy.document()).unwrap_or_default();
    if let Err(e) = app.dataplane.load_policy(&doc, version).await {
        eprintln!("bulkhead-control: revert to version {version} not pushed yet: {e}");
    }
    *app.verified.lock().unwrap_or_else(|p| p.into_inner()) = None;
    Ok(Some(version))
}

async fn list_versions(State(app): State<Shared>) -> Json<Value> {
    let store = app.store.lock().await;
    let active = store.active_version();
    let list: Vec<Value> = store
        .versions()
        .rev()
        .map(|m| {
            let mut v = serde_json::to_value(m).unwrap_or_default();
            v["active"] = json!(Some(m.version) == active);
            v
        })
        .collect();
    Json(json!({"active": active, "versions": list}))
}

async fn get_version(State(app): State<Shared>, Path(v): Path<String>) -> ApiResult<Json<Value>> {
    let v: u64 = v.parse().map_err(|_| {
        ApiError::bad_request("not a version number")
            .detail("version", "expected a positive integer")
    })?;
    let store = app.store.lock().await;
    let meta = store
        .meta(v)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no version {v}")))?;
    let doc = store.version_document(v)?;
    Ok(Json(
        json!({"meta": meta, "active": store.active_version() == Some(v), "policy": doc}),
    ))
}

// ---------------------------------------------------------------------------------------------------------
// Explain, flows

async fn explain_flow(
    State(app): State<Shared>,
    Body(req): Body<explain::Request>,
) -> ApiResult<Json<Value>> {
    let flow = req.flow()?;
    let (draft, active) = {
        let store = app.store.lock().await;
        (store.draft().clone(), store.active_policy().cloned())
    };
    let draft = Policy::new(draft);
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

async fn list_flows(
    State(app): State<Shared>,
    q: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    // Parsed field by field (serde's flatten cannot deny unknown fields) so a typo is an error, not "all flows".
    let raw = query(q)?;
    let mut filter = FlowFilter::default();
    let mut limit = 1000usize;
    for (k, v) in &raw {
        let bad = |what: &str| {
            ApiError::bad_request("invalid flow filter")
                .detail(k.clone(), format!("{v:?} is not {what}"))
        };
        match k.as_str() {
            "addr" => filter.addr = Some(v.parse().map_err(|_| bad("an IP address"))?),
            "src" => filter.src = Some(v.parse().map_err(|_| bad("an IP address"))?),
            "dst" => filter.dst = Some(v.parse().map_err(|_| bad("an IP address"))?),
            "port" => filter.port = Some(v.parse().map_err(|_| bad("a port"))?),
            "proto" => {
                filter.proto = Some(explain::parse_proto(v).ok_or_else(|| bad("a protocol"))?)
            }
            "rule_id" => filter.rule_id = Some(v.parse().map_err(|_| bad("a rule id"))?),
            "limit" => limit = v.parse().map_err(|_| bad("a count"))?,
            _ => {
                return Err(ApiError::bad_request("unknown query parameter").detail(
                    k.clone(),
                    "expected addr, src, dst, port, proto, rule_id or limit",
                ))
            }
        }
    }
    let result = app.dataplane.flows(&filter, limit.min(100_000)).await?;
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
    let mut entry = audit(&who(w), "flows.kill");
    entry.version_before = store.active_version();
    entry.version_after = store.active_version();
    entry.details = json!({"filter": filter, "killed": result.killed});
    store.append_audit(entry)?;
    Ok(Json(serde_json::to_value(result).unwrap_or_default()))
}

// ---------------------------------------------------------------------------------------------------------
// Stats, rules health, traffic map (for the console; from the pollers' memory, never a dataplane request)

async fn get_stats(State(app): State<Shared>, q: Pairs) -> ApiResult<Json<Value>> {
    if let Some((k, _)) = query(q)?.first() {
        return Err(unknown_param(k, "none (this endpoint takes no parameters)"));
    }
    Ok(Json(app.metrics.with_reading(stats::stats)))
}

async fn rules_health(State(app): State<Shared>, q: Pairs) -> ApiResult<Json<Value>> {
    let q = rulehealth::parse_query(&query(q)?)?;
    let (version, key, policy) = {
        let store = app.store.lock().await;
        match q.which {
            rulehealth::Which::Active => {
                let v = store.active_version();
                let key = rulehealth::CacheKey::Active(v.unwrap_or(0));
                (v, key, store.active_policy().cloned())
            }
            rulehealth::Which::Draft => {
                let p = Policy::new(store.draft().clone())
                    .map_err(|e| ApiError::invalid_policy("the draft does not validate", &e))?;
                (None, rulehealth::CacheKey::Draft(store.revision()), Some(p))
            }
        }
    };
    let counters = app.metrics.with_reading(rulehealth::rule_counters);
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

async fn traffic_map(State(app): State<Shared>, q: Pairs) -> ApiResult<Json<Value>> {
    let q = traffic::parse_query(&query(q)?)?;
    let active = app.store.lock().await.active_policy().cloned();
    Ok(Json(traffic::map(
        &app.flowlog,
        active.as_ref(),
        &q,
        SystemTime::now(),
    )))
}

// ---------------------------------------------------------------------------------------------------------
// Audit, tokens

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

async fn read_audit(
    State(app): State<Shared>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let store = app.store.lock().await;
    let entries = store.audit(q.since.unwrap_or(0), q.limit.unwrap_or(1000))?;
    Ok(Json(json!({"entries": entries})))
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
    let mut entry = audit(&who, "token.rotate");
    entry.version_before = store.active_version();
    entry.version_after = store.active_version();
    store.append_audit(entry)?;
    Ok(Json(json!({"identity": who, "token": secret})))
}

/// Keeps the reconcile interval in one place for main and tests.
pub fn reconcile_interval(config: &Config) -> Duration {
    Duration::from_millis(config.reconcile_interval_ms)
}
