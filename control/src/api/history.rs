//! The flow history (`/api/v1/history/...`): conversations, the segment map with its drill-down, rules' last
//! hits and the hosts outside every segment, over any window up to the whole retention. Every read runs on the
//! blocking pool with its own read-only connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;
use ipnet::IpNet;
use policy::Policy;
use serde_json::{json, Value};

use super::extract::{self, ApiResult, Params, QueryParams};
use super::{p, Routes};
use crate::app::{off_worker, Shared};
use crate::auth::Right;
use crate::error::ApiError;
use crate::history::query::{self, Drill};
use crate::history::{merge, Conversation, ConversationFilter, History, HistoryError, Window};
use crate::history::{Reader, StoreError};
use crate::rulehealth::Which;
use protocol::Verdict;

pub(super) fn routes(r: Routes) -> Routes {
    use Method as M;
    r.add_with::<ConversationsQuery, _, _>(
        M::GET,
        &p("/history/conversations"),
        Right::Read,
        conversations,
    )
    .add_with::<MapQuery, _, _>(M::GET, &p("/history/map"), Right::Read, map)
    .add_with::<PolicyQuery, _, _>(M::GET, &p("/history/rules"), Right::Read, rules)
    .add_with::<PolicyQuery, _, _>(
        M::GET,
        &p("/history/unsegmented"),
        Right::Read,
        unsegmented,
    )
}

/// The longest window a query may name (the retention may be shorter; older buckets are simply absent).
pub const MAX_WINDOW_S: u64 = 3650 * 86_400;
/// Conversations answered per page at most.
pub const MAX_LIMIT: usize = 10_000;

/// The window parameters every history route takes: `from` and `to` (RFC 3339), or `window_s` back from `to`
/// (default now). Neither `from` nor `window_s`: the whole retention.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WindowParams {
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    pub window_s: Option<u64>,
}

impl WindowParams {
    /// Sets a window parameter; `None` when `name` is not one.
    fn set(&mut self, name: &str, v: &str) -> Option<Result<(), &'static str>> {
        let time = |v: &str| {
            humantime::parse_rfc3339(v).map_err(|_| "an RFC 3339 time such as 2026-11-21T17:00:00Z")
        };
        Some(match name {
            "from" => time(v).map(|t| self.from = Some(t)),
            "to" => time(v).map(|t| self.to = Some(t)),
            "window_s" => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=MAX_WINDOW_S).contains(n))
                .map(|n| self.window_s = Some(n))
                .ok_or("a number of seconds, 1 to 315360000"),
            _ => return None,
        })
    }

    /// The window these parameters name, `now` being the default end.
    pub fn resolve(&self, now: SystemTime, retention_s: u64) -> ApiResult<Window> {
        let to = self.to.unwrap_or(now);
        let from = match (self.from, self.window_s) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request("give `from` or `window_s`, not both")
                    .detail("window_s", "not with from"))
            }
            (Some(from), None) => from,
            (None, window_s) => to
                .checked_sub(Duration::from_secs(window_s.unwrap_or(retention_s)))
                .unwrap_or(SystemTime::UNIX_EPOCH),
        };
        if from >= to {
            return Err(
                ApiError::bad_request("`from` must be before `to`").detail("from", "not before to")
            );
        }
        Ok(Window { from, to })
    }
}

fn prefix(v: &str) -> Result<IpNet, &'static str> {
    let parsed = match v.parse::<IpAddr>() {
        Ok(a) => Ok(IpNet::from(a)),
        Err(_) => v.parse::<IpNet>(),
    };
    parsed.map_err(|_| "an IP address or a prefix such as 10.1.2.0/24")
}

fn verdicts(v: &str) -> Result<Vec<Verdict>, &'static str> {
    v.split(',')
        .map(|s| match s {
            "allow" => Ok(Verdict::Allow),
            "deny" => Ok(Verdict::Deny),
            "reject" => Ok(Verdict::Reject),
            "would_deny" => Ok(Verdict::WouldDeny),
            _ => Err("allow, deny, reject, would_deny or a comma-separated list"),
        })
        .collect()
}

/// The conversation filter's parameters.
const FILTER: [&str; 10] = [
    "src", "dst", "addr", "proto", "port", "vlan", "verdict", "rule_id", "gateway", "tier",
];

/// Sets a conversation filter parameter; `None` when `name` is not one.
fn set_filter(f: &mut ConversationFilter, name: &str, v: &str) -> Option<Result<(), &'static str>> {
    if !FILTER.contains(&name) {
        return None;
    }
    Some((|| {
        match name {
            "src" => f.src = Some(prefix(v)?),
            "dst" => f.dst = Some(prefix(v)?),
            "addr" => f.addr = Some(prefix(v)?),
            "proto" => f.proto = Some(extract::proto(v)?),
            "port" => f.service = Some(extract::port(v)?),
            "vlan" => {
                f.vlan = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|n| *n <= 4094)
                        .ok_or("a VLAN id, 0 (untagged) to 4094")?,
                )
            }
            "verdict" => f.verdicts = verdicts(v)?,
            "rule_id" => f.rule_id = Some(extract::rule_id(v)?),
            "gateway" => f.gateway = Some(name_of(v, "a gateway name")?),
            "tier" => {
                f.tier = Some(name_of(
                    v,
                    "a tier name (- for conversations no tier decided)",
                )?)
            }
            _ => extract::not_a_name(name),
        }
        Ok(())
    })())
}

fn which(v: &str) -> Result<Which, &'static str> {
    match v {
        "active" => Ok(Which::Active),
        "draft" => Ok(Which::Draft),
        _ => Err("active or draft"),
    }
}

/// `GET /history/conversations`.
#[derive(Debug)]
pub struct ConversationsQuery {
    pub window: WindowParams,
    pub filter: ConversationFilter,
    /// One entry per conversation over the window (`group=window`) rather than per bucket (`group=bucket`).
    pub over_window: bool,
    pub limit: usize,
    pub offset: usize,
}

impl Default for ConversationsQuery {
    fn default() -> Self {
        ConversationsQuery {
            window: WindowParams::default(),
            filter: ConversationFilter::default(),
            over_window: false,
            limit: 100,
            offset: 0,
        }
    }
}

impl QueryParams for ConversationsQuery {
    const NAMES: &'static [&'static str] = &[
        "from", "to", "window_s", "src", "dst", "addr", "proto", "port", "vlan", "verdict",
        "rule_id", "gateway", "tier", "group", "limit", "offset",
    ];
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        if let Some(r) = self.window.set(name, v) {
            return r;
        }
        if let Some(r) = set_filter(&mut self.filter, name, v) {
            return r;
        }
        match name {
            "group" => {
                self.over_window = match v {
                    "bucket" => false,
                    "window" => true,
                    _ => return Err("bucket or window"),
                }
            }
            "limit" => {
                self.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or("a number, 1 to 10000")?
            }
            "offset" => self.offset = extract::value(v, "a number, at least 0")?,
            _ => extract::not_a_name(name),
        }
        Ok(())
    }
}

/// `GET /history/map`.
#[derive(Debug, Default)]
pub struct MapQuery {
    pub window: WindowParams,
    /// Only proto, port, vlan, verdict, gateway and tier are ever set.
    pub filter: ConversationFilter,
    pub which: Option<Which>,
    pub src_segment: Option<String>,
    pub dst_segment: Option<String>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
}

impl QueryParams for MapQuery {
    const NAMES: &'static [&'static str] = &[
        "from",
        "to",
        "window_s",
        "policy",
        "proto",
        "port",
        "vlan",
        "verdict",
        "gateway",
        "tier",
        "src_segment",
        "dst_segment",
        "src",
        "dst",
    ];
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        if let Some(r) = self.window.set(name, v) {
            return r;
        }
        match name {
            "proto" | "port" | "vlan" | "verdict" | "gateway" | "tier" => {
                return set_filter(&mut self.filter, name, v).expect("a filter parameter")
            }
            "policy" => self.which = Some(which(v)?),
            "src_segment" => self.src_segment = Some(segment_name(v)?),
            "dst_segment" => self.dst_segment = Some(segment_name(v)?),
            "src" => self.src = Some(extract::ip(v)?),
            "dst" => self.dst = Some(extract::ip(v)?),
            _ => extract::not_a_name(name),
        }
        Ok(())
    }
}

/// A gateway or tier name: not empty, and no longer than a name can be.
fn name_of(v: &str, what: &'static str) -> Result<String, &'static str> {
    if v.is_empty() || v.len() > 256 {
        return Err(what);
    }
    Ok(v.to_string())
}

fn segment_name(v: &str) -> Result<String, &'static str> {
    name_of(v, "a segment name (- for addresses in no segment)")
}

/// `GET /history/rules` and `GET /history/unsegmented`.
#[derive(Debug, Default)]
pub struct PolicyQuery {
    pub window: WindowParams,
    pub which: Option<Which>,
}

impl QueryParams for PolicyQuery {
    const NAMES: &'static [&'static str] = &["from", "to", "window_s", "policy"];
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        if let Some(r) = self.window.set(name, v) {
            return r;
        }
        match name {
            "policy" => self.which = Some(which(v)?),
            _ => extract::not_a_name(name),
        }
        Ok(())
    }
}

/// The history, or 404 when it is disabled.
fn history(app: &Shared) -> ApiResult<Arc<History>> {
    app.history.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "history_disabled",
            "the flow history is disabled ([history] enabled = false)",
        )
    })
}

fn failed(e: HistoryError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "history_failed",
        e.to_string(),
    )
}

fn window(h: &History, w: &WindowParams) -> ApiResult<Window> {
    w.resolve(SystemTime::now(), h.config().retention_days * 86_400)
}

/// The policy whose segments apply: the active one (none yet: `None`) or the draft (400 if it does not validate).
async fn policy(app: &Shared, which: Option<Which>) -> ApiResult<Option<Policy>> {
    let store = app.store.lock().await;
    match which.unwrap_or(Which::Active) {
        Which::Active => Ok(store.active_policy().cloned()),
        Which::Draft => {
            let draft = store.draft().clone();
            drop(store);
            off_worker(move || Policy::new(draft))
                .await
                .map(Some)
                .map_err(|e| ApiError::invalid_policy("the draft does not validate", &e))
        }
    }
}

fn conversation_json(c: &Conversation) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    v["first_seen"] = json!(crate::time::rfc3339(crate::time::from_unix_ms(
        c.first_unix_ms
    )));
    v["last_seen"] = json!(crate::time::rfc3339(crate::time::from_unix_ms(
        c.last_unix_ms
    )));
    v
}

/// Makes a `gateway` filter that names an HA pair match either member (the history records each conversation
/// under the member that carried it). A name that is no configured gateway or pair still selects what the
/// history recorded under it (a gateway since removed from the config).
fn pair_members(app: &Shared, filter: &mut ConversationFilter) {
    if let Some(g) = &filter.gateway {
        filter.members = app.gateways.member_names(g);
    }
}

async fn conversations(
    State(app): State<Shared>,
    Params(mut q): Params<ConversationsQuery>,
) -> ApiResult<Json<Value>> {
    pair_members(&app, &mut q.filter);
    let history = history(&app)?;
    let window = window(&history, &q.window)?;
    off_worker(move || {
        let reader = history.reader()?;
        let mut page: Vec<Conversation> = Vec::new();
        let mut matched = 0usize;
        let stats = if q.over_window {
            let mut by_key = std::collections::HashMap::new();
            let stats = reader.scan(window, &q.filter, |c| {
                by_key
                    .entry(c.key.clone())
                    .and_modify(|a| merge(a, c))
                    .or_insert_with(|| c.clone());
            })?;
            let mut all: Vec<Conversation> = by_key.into_values().collect();
            // The busiest first, then a stable order, so pages do not shift between identical requests.
            all.sort_by(|a, b| {
                b.flows.cmp(&a.flows).then_with(|| {
                    crate::history::key_order(&a.key).cmp(&crate::history::key_order(&b.key))
                })
            });
            matched = all.len();
            page = all.into_iter().skip(q.offset).take(q.limit).collect();
            stats
        } else {
            // Counted while scanning: a page never holds more than `limit` rows in memory.
            reader.scan(window, &q.filter, |c| {
                if matched >= q.offset && page.len() < q.limit {
                    page.push(c.clone());
                }
                matched += 1;
            })?
        };
        let more = matched > q.offset + page.len();
        Ok::<_, HistoryError>(json!({
            "from": crate::time::rfc3339(window.from),
            "to": crate::time::rfc3339(window.to),
            "matched": matched,
            "offset": q.offset,
            "more": more,
            "conversations": page.iter().map(conversation_json).collect::<Vec<_>>(),
            "unreadable_rows": stats.unreadable,
        }))
    })
    .await
    .map(Json)
    .map_err(failed)
}

async fn map(State(app): State<Shared>, Params(mut q): Params<MapQuery>) -> ApiResult<Json<Value>> {
    pair_members(&app, &mut q.filter);
    let history = history(&app)?;
    let window = window(&history, &q.window)?;
    let segments = match (q.src_segment, q.dst_segment) {
        (Some(s), Some(d)) => Some((s, d)),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "give both `src_segment` and `dst_segment`, or neither",
            )
            .detail("src_segment", "with dst_segment"))
        }
    };
    let hosts = match (q.src, q.dst) {
        (Some(s), Some(d)) if segments.is_some() => Some((s, d)),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "`src` and `dst` go together, with `src_segment` and `dst_segment`",
            )
            .detail("src", "with dst, src_segment and dst_segment"))
        }
    };
    let policy = policy(&app, q.which).await?;
    let drill = Drill { segments, hosts };
    off_worker(move || {
        let reader = history.reader()?;
        Ok::<_, HistoryError>(query::map(
            &reader,
            window,
            &q.filter,
            policy.as_ref(),
            &drill,
        )?)
    })
    .await
    .map(Json)
    .map_err(failed)
}

async fn rules(
    State(app): State<Shared>,
    Params(q): Params<PolicyQuery>,
) -> ApiResult<Json<Value>> {
    with_policy(&app, &q, query::rules).await
}

async fn unsegmented(
    State(app): State<Shared>,
    Params(q): Params<PolicyQuery>,
) -> ApiResult<Json<Value>> {
    with_policy(&app, &q, query::unsegmented).await
}

/// Answers `report` over the window under the policy `q` names, on the blocking pool.
async fn with_policy(
    app: &Shared,
    q: &PolicyQuery,
    report: fn(&Reader, Window, Option<&Policy>) -> Result<Value, StoreError>,
) -> ApiResult<Json<Value>> {
    let history = history(app)?;
    let window = window(&history, &q.window)?;
    let policy = policy(app, q.which).await?;
    off_worker(move || Ok::<_, HistoryError>(report(&history.reader()?, window, policy.as_ref())?))
        .await
        .map(Json)
        .map_err(failed)
}
