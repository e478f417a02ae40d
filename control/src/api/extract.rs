//! What every handler shares: the JSON body extractor, the one query-parameter parser, the caller's identity, and
//! ETags with `If-Match`.
//!
//! Query parameters follow one policy on every endpoint: a parameter the endpoint does not know, or one given
//! twice, is a 400 naming it (a typo must not silently widen an answer, and no repeat silently wins); then every
//! value is parsed, and a bad one is a 400 naming the parameter and what it must be.

use std::net::IpAddr;
use std::str::FromStr;

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::app::off_worker;
use crate::error::ApiError;
use crate::store::Store;

pub type ApiResult<T = Response> = Result<T, ApiError>;

// ---------------------------------------------------------------------------------------------------------
// JSON bodies

/// A JSON request body: size limit (413), syntax and type errors with the JSON path of the offending value.
pub struct Body<T>(pub T);

/// Bodies larger than this are parsed off the async workers ([`off_worker`]).
const PARSE_OFF_WORKER_BYTES: usize = 64 << 10;

impl<T: DeserializeOwned + Send + 'static, S: Send + Sync> FromRequest<S> for Body<T> {
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
                } else if timed_out(&r) {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        crate::http::BodyTimedOut.to_string(),
                    )
                } else {
                    ApiError::bad_request(format!("cannot read the request body: {r}"))
                }
            })?;
        if bytes.len() > PARSE_OFF_WORKER_BYTES {
            off_worker(move || parse_json(&bytes)).await.map(Body)
        } else {
            parse_json(&bytes).map(Body)
        }
    }
}

/// Whether reading the body failed because it did not arrive in time ([`crate::http`]).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<crate::http::BodyTimedOut>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Parses a body: first to a tree that refuses repeated keys (serde keeps the last of `"action": "deny",
/// "action": "allow"` while a reviewer reads deny), then to `T`.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null".as_slice()
    } else {
        bytes
    };
    let value = match policy::json::parse_value(text) {
        Ok(value) => value,
        Err(policy::PolicyError::Invalid(errors)) => {
            let mut e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "the body repeats a key",
            );
            for repeated in errors {
                e = e.detail(repeated.path, repeated.message);
            }
            return Err(e);
        }
        Err(policy::PolicyError::Syntax { .. }) => return Err(syntax_error(text)),
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "(body)".into() } else { path };
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the body does not have the expected shape",
        )
        .detail(path, strip_position(&e.inner().to_string()))
    })
}

/// The error for a body that is not JSON: where serde_json stops reading it, and why.
fn syntax_error(text: &[u8]) -> ApiError {
    use serde::Deserialize;
    let not_json = || ApiError::new(StatusCode::BAD_REQUEST, "bad_json", "the body is not JSON");
    let mut de = serde_json::Deserializer::from_slice(text);
    match serde::de::IgnoredAny::deserialize(&mut de).map(|_| de.end()) {
        Err(e) => not_json().detail(
            format!("line {}, column {}", e.line(), e.column()),
            e.to_string(),
        ),
        Ok(Err(e)) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            "trailing data after JSON",
        )
        .detail("(body)", e.to_string()),
        Ok(Ok(())) => not_json(),
    }
}

/// A serde message without its position (the path says where) and with plain quotes.
pub fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].replace('`', "\""),
        None => msg.replace('`', "\""),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Query parameters

/// The query parameters of one endpoint, parsed by [`Params`].
pub trait QueryParams: Default {
    /// Every parameter the endpoint takes, in the order error messages list them.
    const NAMES: &'static [&'static str];
    /// Sets parameter `name` (one of [`Self::NAMES`]) from `value`; on a bad value, what it must be.
    fn set(&mut self, name: &str, value: &str) -> Result<(), &'static str>;
}

/// The parameters of an endpoint that takes none.
#[derive(Debug, Default)]
pub struct NoParams;

impl QueryParams for NoParams {
    const NAMES: &'static [&'static str] = &[];
    fn set(&mut self, name: &str, _: &str) -> Result<(), &'static str> {
        not_a_name(name)
    }
}

/// The arm of [`QueryParams::set`] for a name not in `NAMES`: never taken, since [`parse_query`] refuses those
/// before it sets any value.
pub fn not_a_name(name: &str) -> ! {
    unreachable!("`{name}` is not in NAMES, which parse_query checks first")
}

/// An endpoint's query parameters, parsed by [`parse_query`].
pub struct Params<T>(pub T);

impl<T: QueryParams, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(&parts.uri).map(Params)
    }
}

/// The one query parser: names first (unknown or repeated: 400), then values in order (bad: 400).
pub fn parse_query<T: QueryParams>(uri: &Uri) -> ApiResult<T> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|e| {
        ApiError::bad_request(format!("malformed query string: {}", e.body_text()))
            .detail("(query)", e.body_text())
    })?;
    for (i, (name, _)) in pairs.iter().enumerate() {
        if !T::NAMES.contains(&name.as_str()) {
            let known = if T::NAMES.is_empty() {
                "this endpoint takes none".to_string()
            } else {
                format!("known: {}", T::NAMES.join(", "))
            };
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{name}`; {known}"
            ))
            .detail(name.clone(), format!("unknown; {known}")));
        }
        if pairs[..i].iter().any(|(seen, _)| seen == name) {
            return Err(ApiError::bad_request(format!(
                "query parameter `{name}` is given more than once"
            ))
            .detail(name.clone(), "given more than once"));
        }
    }
    let mut out = T::default();
    for (name, value) in &pairs {
        out.set(name, value).map_err(|what| {
            let message = format!("query parameter `{name}`: {value:?} is not {what}");
            ApiError::bad_request(message.clone()).detail(name.clone(), message)
        })?;
    }
    Ok(out)
}

/// The route layer of endpoints that take no query parameters: the same check as [`Params`].
pub async fn no_params(req: Request, next: Next) -> Response {
    match parse_query::<NoParams>(req.uri()) {
        Ok(NoParams) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// A value of type `T`, or `what` it must be.
pub fn value<T: FromStr>(v: &str, what: &'static str) -> Result<T, &'static str> {
    v.parse().map_err(|_| what)
}

pub fn ip(v: &str) -> Result<IpAddr, &'static str> {
    value(v, "an IPv4 or IPv6 address")
}

pub fn port(v: &str) -> Result<u16, &'static str> {
    value(v, "a port (0-65535)")
}

/// A protocol by name (any case) or number.
pub fn proto(v: &str) -> Result<u8, &'static str> {
    match v.to_ascii_lowercase().as_str() {
        "tcp" => Ok(policy::proto::TCP),
        "udp" => Ok(policy::proto::UDP),
        "icmp" => Ok(policy::proto::ICMP),
        "icmpv6" | "ipv6-icmp" => Ok(policy::proto::ICMPV6),
        _ => value(v, "a protocol: tcp, udp, icmp, icmpv6 or a number 0-255"),
    }
}

pub fn rule_id(v: &str) -> Result<u32, &'static str> {
    value(v, "a rule id (0-4294967295; 0 is the default action)")
}

// ---------------------------------------------------------------------------------------------------------
// The caller

/// The token identity of the caller and the tiers its token may edit (set by the authentication middleware).
#[derive(Debug, Clone)]
pub struct Who {
    pub identity: String,
    /// `None`: the whole document.
    pub tiers: Option<Vec<String>>,
}

/// The caller's identity, for the audit log.
pub fn who(w: Option<axum::Extension<Who>>) -> String {
    w.map_or_else(|| "unknown".into(), |w| w.0.identity)
}

/// The caller, for a draft write (identity and tier scope).
pub fn editor(w: Option<axum::Extension<Who>>) -> Who {
    w.map_or_else(
        || Who {
            identity: "unknown".into(),
            tiers: None,
        },
        |w| w.0,
    )
}

// ---------------------------------------------------------------------------------------------------------
// ETags

pub fn draft_etag(rev: u64) -> String {
    format!("\"draft-{rev}\"")
}

pub fn active_etag(store: &Store) -> String {
    format!("\"active-{}\"", store.active_version().unwrap_or(0))
}

/// Checks `If-Match` against the current ETag: 428 when absent, 409 when stale.
pub fn if_match(headers: &HeaderMap, current: &str) -> ApiResult<()> {
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

pub fn with_etag(etag: String, body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}
