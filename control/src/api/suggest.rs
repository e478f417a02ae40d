//! Rules suggested from observed conversations, added to the draft on request, and the what-if replay of a
//! window of conversations through the draft (or a posted document, for CI).

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::Json;
use policy::{Policy, Rule, Service};
use serde::Deserialize;
use serde_json::{json, Value};

use super::draft::write_draft;
use super::extract::{editor, ApiResult, Body, Who};
use super::{p, Routes};
use crate::app::{off_worker, App, Shared};
use crate::auth::Right;
use crate::error::ApiError;
use crate::suggest::{
    self, ConversationSource, Grouping, HistorySource, RingSource, Scope, SuggestOptions, Window,
};
use crate::time::{rfc3339, unix_ms};

pub(super) fn routes(r: Routes) -> Routes {
    use Method as M;
    r.add(M::POST, &p("/suggest"), Right::Analyze, suggest_rules)
        .add(M::POST, &p("/suggest/apply"), Right::Edit, apply)
        .add(M::POST, &p("/what-if"), Right::Analyze, what_if)
}

/// Where conversations come from: the flow history, or the flow log's in-memory ring when it is disabled.
fn source(app: &App) -> Box<dyn ConversationSource> {
    match &app.history {
        Some(history) => Box::new(HistorySource(history.clone())),
        None => Box::new(RingSource(app.flowlog.clone())),
    }
}

/// `{"from": RFC 3339, "to": RFC 3339}`, both optional: from the oldest conversation kept to now.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowBody {
    from: Option<String>,
    to: Option<String>,
}

impl WindowBody {
    fn window(&self) -> ApiResult<Window> {
        let at = |field: &str, v: &Option<String>, default: u64| match v {
            None => Ok(default),
            Some(text) => humantime::parse_rfc3339(text).map(unix_ms).map_err(|e| {
                ApiError::bad_request("the window is not two RFC 3339 times")
                    .detail(format!("window.{field}"), e.to_string())
            }),
        };
        let window = Window {
            from_unix_ms: at("from", &self.from, 0)?,
            to_unix_ms: at("to", &self.to, unix_ms(SystemTime::now()) + 1)?,
        };
        if window.from_unix_ms >= window.to_unix_ms {
            return Err(ApiError::bad_request("the window is empty")
                .detail("window.to", "must come after window.from"));
        }
        Ok(window)
    }
}

fn window_json(w: &Window) -> Value {
    let t = crate::time::from_unix_ms;
    json!({"from": rfc3339(t(w.from_unix_ms)), "to": rfc3339(t(w.to_unix_ms))})
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GroupingBody {
    Hosts,
    Segments,
    Labels,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum ScopeBody {
    Segments(Vec<String>),
    Labels(BTreeMap<String, String>),
}

/// `POST /suggest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuggestBody {
    #[serde(default)]
    window: WindowBody,
    /// Absent: every conversation.
    scope: Option<ScopeBody>,
    grouping: Option<GroupingBody>,
    #[serde(default)]
    include_denied: bool,
}

async fn suggest_rules(
    State(app): State<Shared>,
    Body(body): Body<SuggestBody>,
) -> ApiResult<Json<Value>> {
    let window = body.window.window()?;
    let (draft, revision) = {
        let store = app.store.lock().await;
        (store.draft().clone(), store.revision())
    };
    let options = SuggestOptions {
        scope: match body.scope {
            None => Scope::All,
            Some(ScopeBody::Segments(names)) => Scope::Segments(names),
            Some(ScopeBody::Labels(labels)) => Scope::Labels(labels),
        },
        grouping: match body.grouping {
            None | Some(GroupingBody::Hosts) => Grouping::Hosts,
            Some(GroupingBody::Segments) => Grouping::Segments,
            Some(GroupingBody::Labels) => Grouping::Labels,
        },
        include_denied: body.include_denied,
        window,
        now_unix_ms: unix_ms(SystemTime::now()),
    };
    let source = source(&app);
    let suggestion = off_worker(move || -> ApiResult<Value> {
        let draft = Policy::new(draft)
            .map_err(|e| ApiError::invalid_policy("the draft does not validate", &e))?;
        let (conversations, read) = source.conversations(window).map_err(source_error)?;
        let s = suggest::suggest(&conversations, &draft, &options).map_err(|e| match e {
            suggest::SuggestError::UnknownSegment(name) => {
                ApiError::bad_request(format!("unknown segment {name:?} in the scope"))
                    .detail("scope.segments", "not a segment of the draft")
            }
            suggest::SuggestError::Invalid(e) => {
                ApiError::invalid_policy("the draft with the suggestion does not validate", &e)
            }
        })?;
        let mut out = serde_json::to_value(s).unwrap_or_default();
        out["unreadable_rows"] = json!(read.unreadable);
        Ok(out)
    })
    .await?;
    let mut out = suggestion;
    out["window"] = window_json(&window);
    out["draft_revision"] = json!(revision);
    Ok(Json(out))
}

fn source_error(e: suggest::SourceError) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "history_unavailable",
        e.to_string(),
    )
}

/// A proposal as `POST /suggest` answered it; only its rules and services are read.
#[derive(Debug, Deserialize)]
struct Proposal {
    rules: Vec<ProposedRule>,
    services: Vec<Service>,
}

#[derive(Debug, Deserialize)]
struct ProposedRule {
    rule: Rule,
}

/// `POST /suggest/apply`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    proposal: Proposal,
    /// Only these of the proposal's rules (absent: all).
    rule_ids: Option<Vec<u32>>,
}

async fn apply(
    State(app): State<Shared>,
    w: Option<axum::Extension<Who>>,
    headers: HeaderMap,
    Body(body): Body<ApplyBody>,
) -> ApiResult {
    let mut rules: Vec<Rule> = body.proposal.rules.into_iter().map(|r| r.rule).collect();
    if let Some(ids) = &body.rule_ids {
        let offered: HashSet<u32> = rules.iter().map(|r| r.id).collect();
        if let Some(missing) = ids.iter().find(|id| !offered.contains(id)) {
            return Err(
                ApiError::bad_request("a selected rule is not in the proposal")
                    .detail("rule_ids", format!("no rule {missing} in the proposal")),
            );
        }
        rules.retain(|r| ids.contains(&r.id));
    }
    let used: HashSet<&str> = rules.iter().map(|r| r.service.as_str()).collect();
    let services: Vec<Service> = body
        .proposal
        .services
        .into_iter()
        .filter(|s| used.contains(s.name.as_str()))
        .collect();
    let added: Vec<u32> = rules.iter().map(|r| r.id).collect();
    write_draft(
        &app,
        &editor(w),
        &headers,
        "draft.suggestion.apply",
        None,
        move |d| {
            for s in &services {
                match d.services.iter().find(|o| o.name == s.name) {
                    Some(o) if o == s => {}
                    Some(_) => return Err(exists("service", &s.name)),
                    None => d.services.push(s.clone()),
                }
            }
            for r in &rules {
                if d.all_rules().any(|o| o.id == r.id || o.name == r.name) {
                    return Err(exists("rule", &format!("{} ({})", r.id, r.name)));
                }
            }
            // A tiered draft takes them in its last tier (the most specific one; a token scoped to tiers
            // must be granted it).
            match d.tiers.last_mut() {
                Some(tier) if d.format == policy::Format::V2 => tier.rules.extend(rules),
                _ => d.rules.extend(rules),
            }
            Ok(json!({"rules_added": added, "services_added": services.iter().map(|s| &s.name).collect::<Vec<_>>()}))
        },
    )
    .await
}

fn exists(kind: &str, key: &str) -> ApiError {
    ApiError::conflict(
        "exists",
        format!("the draft already has another {kind} {key}: suggest again from the current draft"),
    )
}

/// `POST /what-if`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhatIfBody {
    #[serde(default)]
    window: WindowBody,
    /// A policy document to judge instead of the draft.
    policy: Option<Value>,
    /// Changes listed per direction (totals always count all); default 100, at most 10 000.
    limit: Option<usize>,
}

const WHAT_IF_LIMIT: usize = 10_000;

async fn what_if(
    State(app): State<Shared>,
    Body(body): Body<WhatIfBody>,
) -> ApiResult<Json<Value>> {
    let window = body.window.window()?;
    let limit = body.limit.unwrap_or(100);
    if limit > WHAT_IF_LIMIT {
        return Err(ApiError::bad_request("limit is too large")
            .detail("limit", format!("at most {WHAT_IF_LIMIT}")));
    }
    let (judged, document) = match body.policy {
        Some(doc) => ("posted", doc),
        None => {
            let store = app.store.lock().await;
            (
                "draft",
                serde_json::to_value(store.draft()).unwrap_or_default(),
            )
        }
    };
    let source = source(&app);
    let report = off_worker(move || -> ApiResult<Value> {
        let policy = Policy::from_value(document).map_err(|e| {
            ApiError::invalid_policy(&format!("the {judged} policy does not validate"), &e)
        })?;
        let (conversations, read) = source.conversations(window).map_err(source_error)?;
        let report = suggest::what_if(&conversations, &policy, limit);
        let mut out = serde_json::to_value(report).unwrap_or_default();
        out["unreadable_rows"] = json!(read.unreadable);
        Ok(out)
    })
    .await?;
    let mut out = report;
    out["judged"] = json!(judged);
    out["window"] = window_json(&window);
    Ok(Json(out))
}
