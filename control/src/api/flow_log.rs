//! The flow log over HTTP: `GET /flow-log` (recent events, filtered and paged) and `GET /flow-log/stream`
//! (server-sent events). Their state is the flow log alone, so they can be served without the rest of the API.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Router;
use futures_util::Stream;
use serde_json::json;

use super::extract::{self, ApiResult, Params, QueryParams};
use super::{p, Routes};
use crate::auth::{Caller, Right};
use crate::error::ApiError;
use crate::flowlog::{parse_kind, Delivery, FlowLog, FlowLogQuery, StoredEvent};

/// The flow-log routes, with their table.
pub fn routes() -> Routes<Arc<FlowLog>> {
    Routes::new()
        .add_with::<FlowLogQuery, _, _>(Method::GET, &p("/flow-log"), Right::Read, list)
        .add_with::<StreamQuery, _, _>(Method::GET, &p("/flow-log/stream"), Right::Read, stream)
}

/// The flow-log routes serving `log` to `caller` alone, with no authentication (for the flow log's own tests; the
/// application serves these routes behind its authentication, [`super::app`]).
pub fn router(log: &Arc<FlowLog>, caller: Caller) -> Router {
    routes()
        .router
        .with_state(log.clone())
        .layer(axum::Extension(caller))
}

impl QueryParams for FlowLogQuery {
    const NAMES: &'static [&'static str] = &[
        "kind",
        "src",
        "dst",
        "addr",
        "port",
        "proto",
        "rule_id",
        "src_segment",
        "dst_segment",
        "gateway",
        "tier",
        "since",
        "limit",
    ];
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        let f = &mut self.filter;
        match name {
            "kind" => {
                for part in v.split(',') {
                    let kind = parse_kind(part)
                        .ok_or("new, denied or closed (or a comma-separated list of them)")?;
                    f.kinds.push(kind);
                }
            }
            "gateway" => f.gateway = Some(v.to_string()),
            "tier" => {
                if v.is_empty() {
                    return Err("a tier name (or - for events no tier decided)");
                }
                f.tier = Some(v.to_string());
            }
            "src" => f.src = Some(extract::ip(v)?),
            "dst" => f.dst = Some(extract::ip(v)?),
            "addr" => f.addr = Some(extract::ip(v)?),
            "port" => f.port = Some(extract::port(v)?),
            "proto" => f.proto = Some(extract::proto(v)?),
            "rule_id" => f.rule_id = Some(extract::rule_id(v)?),
            "src_segment" | "dst_segment" => {
                if v.is_empty() {
                    return Err("a segment name (or - for addresses in no segment)");
                }
                let slot = if name == "src_segment" {
                    &mut f.src_segment
                } else {
                    &mut f.dst_segment
                };
                *slot = Some(v.to_string());
            }
            "since" => {
                self.since = Some(extract::value(
                    v,
                    "an event sequence number (a non-negative integer)",
                )?)
            }
            "limit" => {
                self.limit = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or("a positive integer")?,
                )
            }
            _ => extract::not_a_name(name),
        }
        Ok(())
    }
}

/// `GET /flow-log?kind=&src=&dst=&addr=&port=&proto=&rule_id=&src_segment=&dst_segment=&gateway=&tier=&since=&limit=`.
async fn list(State(log): State<Arc<FlowLog>>, Params(q): Params<FlowLogQuery>) -> ApiResult {
    if let Some(limit) = q.limit.filter(|l| *l > log.capacity()) {
        let message = format!(
            "query parameter `limit`: {limit} is more than the {} events kept in memory",
            log.capacity()
        );
        return Err(ApiError::bad_request(message.clone()).detail("limit", message));
    }
    let (events, truncated) = log.query(&q);
    let (oldest, newest) = log.bounds();
    let next_since = events.last().map(|e| e.seq).or(q.since);
    // The events are JSON text already: splice them in rather than parse them again.
    let mut body = String::from("{\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&e.json);
    }
    let tail = json!({
        "count": events.len(),
        "truncated": truncated,
        "next_since": next_since,
        "oldest_seq": oldest,
        "newest_seq": newest,
    });
    let tail = tail.to_string();
    body.push_str("],");
    body.push_str(&tail[1..]);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The stream's parameters: the flow log's, without `limit` (a stream has no end to page to).
#[derive(Default)]
struct StreamQuery(FlowLogQuery);

impl QueryParams for StreamQuery {
    const NAMES: &'static [&'static str] = {
        let all = FlowLogQuery::NAMES;
        let (without_limit, _) = all.split_at(all.len() - 1);
        without_limit
    };
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        self.0.set(name, v)
    }
}

/// `GET /flow-log/stream?kind=&src=&dst=&addr=&port=&proto=&rule_id=&src_segment=&dst_segment=&gateway=&tier=&since=`:
/// server-sent events `flow` (id: the event's `seq`, data: the event) and `lagged` (data: `{"missed": n}`, events
/// this stream skipped because it fell behind, counted before filtering). `since` or a `Last-Event-ID` header
/// first replays what memory still holds after that sequence number.
async fn stream(
    State(log): State<Arc<FlowLog>>,
    headers: HeaderMap,
    Params(StreamQuery(q)): Params<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut since = q.since;
    if let Some(h) = headers.get("last-event-id") {
        let id = h
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                let message =
                    format!("header Last-Event-ID: {h:?} is not an event sequence number");
                ApiError::bad_request(message.clone()).detail("Last-Event-ID", message)
            })?;
        since = Some(since.map_or(id, |s| s.max(id)));
    }
    let subscription = log.subscribe(q.filter, since);
    let events = futures_util::stream::unfold(subscription, |mut sub| async move {
        let event = match sub.next().await? {
            Delivery::Event(e) => sse_event(&e),
            Delivery::Lagged(n) => Event::default()
                .event("lagged")
                .data(json!({"missed": n}).to_string()),
        };
        Some((Ok(event), sub))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn sse_event(e: &StoredEvent) -> Event {
    Event::default()
        .id(e.seq.to_string())
        .event("flow")
        .data(&e.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_takes_the_flow_log_parameters_but_limit() {
        assert_eq!(FlowLogQuery::NAMES.last(), Some(&"limit"));
        assert_eq!(StreamQuery::NAMES, &FlowLogQuery::NAMES[..12]);
    }
}
