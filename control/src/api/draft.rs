//! The draft and the documents: the whole draft (read, import, reset), its objects (segments, services, rules)
//! and settings, their read-only counterparts under `/active`, validate, diff and export.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use policy::{Document, Policy, Rule, Segment, Service, Settings};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::extract::{
    active_etag, draft_etag, editor, if_match, strip_position, with_etag, ApiResult, Body, Params,
    QueryParams, Who,
};
use super::{p, Routes};
use crate::app::{off_worker, App, Shared};
use crate::auth::Right;
use crate::diff;
use crate::error::ApiError;
use crate::store::AuditEntry;

pub(super) fn routes(r: Routes) -> Routes {
    use Method as M;
    r.add(M::GET, &p("/draft"), Right::Read, get_draft)
        .add(M::PUT, &p("/draft"), Right::Edit, put_draft)
        .add(M::POST, &p("/draft/reset"), Right::Edit, reset_draft)
        .add(
            M::GET,
            &p("/draft/settings"),
            Right::Read,
            get_settings::<false>,
        )
        .add(M::PUT, &p("/draft/settings"), Right::Edit, put_settings)
        .add(
            M::GET,
            &p("/active/settings"),
            Right::Read,
            get_settings::<true>,
        )
        .add(M::GET, &p("/export/{which}"), Right::Read, export)
        .add(M::POST, &p("/validate"), Right::Analyze, validate)
        .add_with::<DiffQuery, _, _>(M::GET, &p("/diff"), Right::Analyze, get_diff)
}

/// The routes of one kind of object: the draft's (read and write) and the active policy's (read-only).
pub(super) fn object_routes<O: Object>(r: Routes) -> Routes {
    use Method as M;
    let coll = p(&format!("/draft/{}", O::KIND));
    let item = format!("{coll}/{{key}}");
    let active = p(&format!("/active/{}", O::KIND));
    r.add(M::GET, &coll, Right::Read, list_objects::<O, false>)
        .add_with::<Position, _, _>(M::POST, &coll, Right::Edit, create_object::<O>)
        .add(M::GET, &item, Right::Read, get_object::<O, false>)
        .add_with::<Position, _, _>(M::PUT, &item, Right::Edit, put_object::<O>)
        .add(M::DELETE, &item, Right::Edit, delete_object::<O>)
        .add(M::GET, &active, Right::Read, list_objects::<O, true>)
        .add(
            M::GET,
            &format!("{active}/{{key}}"),
            Right::Read,
            get_object::<O, true>,
        )
}

fn validation(doc: &Document) -> Value {
    let errors = policy::validate(doc);
    json!({"valid": errors.is_empty(), "errors": errors.iter().map(|e| json!({"path": e.path, "message": e.message})).collect::<Vec<_>>()})
}

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
    let doc = off_worker(move || document_from_value(value)).await?;
    write_draft(&app, &editor(w), &headers, "draft.import", None, |d| {
        *d = doc;
        Ok(Value::Null)
    })
    .await
}

/// A document that may not validate yet, but whose types are right.
fn document_from_value(value: Value) -> ApiResult<Document> {
    match value.get("format") {
        Some(Value::String(f)) if f == policy::FORMAT_V1 || f == policy::FORMAT_V2 => {}
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_policy",
                "not a policy document",
            )
            .detail(
                "format",
                format!(
                    "must be \"{}\" or \"{}\"",
                    policy::FORMAT_V1,
                    policy::FORMAT_V2
                ),
            ))
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
    write_draft(&app, &editor(w), &headers, "draft.reset", None, |d| {
        *d = active.unwrap_or_default();
        Ok(Value::Null)
    })
    .await
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
    /// Every object, in document order.
    fn all(doc: &Document) -> Vec<Self> {
        Self::list(doc).clone()
    }
    /// The list a write goes to: the one holding `key` (when given and present), or the one `tier` names. Only
    /// rules live in tiers; other kinds refuse a tier.
    fn list_for<'d>(
        doc: &'d mut Document,
        _key: Option<&str>,
        tier: Option<&str>,
    ) -> ApiResult<&'d mut Vec<Self>> {
        match tier {
            None => Ok(Self::list_mut(doc)),
            Some(_) => Err(ApiError::bad_request("only rules belong to tiers")
                .detail("tier", format!("{} are document-wide", Self::KIND))),
        }
    }
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

/// A v1 draft's rules are its `rules`; a v2 draft's are in its tiers: listed all together, in evaluation order,
/// and written in the tier that holds the rule or the one `?tier=` names.
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
    fn all(doc: &Document) -> Vec<Self> {
        doc.all_rules().cloned().collect()
    }
    fn list_for<'d>(
        doc: &'d mut Document,
        key: Option<&str>,
        tier: Option<&str>,
    ) -> ApiResult<&'d mut Vec<Self>> {
        if doc.format == policy::Format::V1 {
            return match tier {
                None => Ok(&mut doc.rules),
                Some(t) if t == policy::V1_TIER => Ok(&mut doc.rules),
                Some(_) => Err(ApiError::bad_request("the draft has no tiers").detail(
                    "tier",
                    format!(
                        "a bulkhead.policy/v1 draft is the one tier {:?}",
                        policy::V1_TIER
                    ),
                )),
            };
        }
        let holding = key.and_then(|k| {
            doc.tiers
                .iter()
                .position(|t| t.rules.iter().any(|r| r.id.to_string() == k))
        });
        let named = match tier {
            Some(t) => Some(doc.tiers.iter().position(|x| x.name == t).ok_or_else(|| {
                ApiError::not_found(format!("no tier {t:?} in the draft")).detail("tier", "unknown")
            })?),
            None => None,
        };
        let i = match (named, holding, doc.tiers.len()) {
            (Some(i), _, _) | (None, Some(i), _) => i,
            (None, None, 1) => 0,
            (None, None, _) => {
                return Err(ApiError::bad_request("which tier?").detail(
                    "tier",
                    "the draft has several tiers: name the rule's with ?tier=NAME",
                ))
            }
        };
        Ok(&mut doc.tiers[i].rules)
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
    let (list, etag) = read_doc(&app, ACTIVE, O::all).await?;
    Ok(with_etag(etag, Json(list)))
}

async fn get_object<O: Object, const ACTIVE: bool>(
    State(app): State<Shared>,
    Path(key): Path<String>,
) -> ApiResult {
    let (found, etag) = read_doc(&app, ACTIVE, |d| {
        O::all(d).into_iter().find(|o| o.key() == key)
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

#[derive(Default)]
struct Position {
    /// Where the object goes in its list (0-based); rule order decides which rule matches first.
    position: Option<usize>,
    /// The tier a rule goes in (a v2 draft; the position is within the tier).
    tier: Option<String>,
}

impl QueryParams for Position {
    const NAMES: &'static [&'static str] = &["position", "tier"];
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        if name == "tier" {
            self.tier = Some(v.to_string());
            return Ok(());
        }
        self.position = Some(super::extract::value(v, "a position (0, 1, ...)")?);
        Ok(())
    }
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
    Params(pos): Params<Position>,
    Body(obj): Body<O>,
) -> ApiResult {
    let key = obj.key();
    let object = format!("{}/{key}", O::KIND);
    let resp = write_draft(
        &app,
        &editor(w),
        &headers,
        &format!("draft.{}.create", O::KIND),
        Some(object),
        move |d| {
            if O::all(d).iter().any(|o| o.key() == key) {
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
            let list = O::list_for(d, None, pos.tier.as_deref())?;
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
    Params(pos): Params<Position>,
    Body(obj): Body<O>,
) -> ApiResult {
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
        &editor(w),
        &headers,
        &format!("draft.{}.put", O::KIND),
        Some(object),
        move |d| {
            let value = serde_json::to_value(&obj).unwrap_or_default();
            // A rule named into another tier than the one holding it moves there.
            if let Some(tier) = pos.tier.as_deref() {
                let there = O::list_for(d, None, Some(tier))?
                    .iter()
                    .any(|o| o.key() == key);
                if !there && O::all(d).iter().any(|o| o.key() == key) {
                    O::list_for(d, Some(&key), None)?.retain(|o| o.key() != key);
                }
            }
            let list = O::list_for(d, Some(&key), pos.tier.as_deref())?;
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
        &editor(w),
        &headers,
        &format!("draft.{}.delete", O::KIND),
        Some(object),
        move |d| {
            let list = O::list_for(d, Some(&key), None)?;
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
        &editor(w),
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
/// A token scoped to tiers may change only those (see [`crate::auth::scope`]): 403 naming what it touched.
pub(super) async fn write_draft(
    app: &App,
    who: &Who,
    headers: &HeaderMap,
    action: &str,
    object: Option<String>,
    edit: impl FnOnce(&mut Document) -> ApiResult<Value>,
) -> ApiResult {
    let (rev, doc, written) = {
        let mut store = app.store.lock().await;
        if_match(headers, &draft_etag(store.revision()))?;
        let mut doc = store.draft().clone();
        let written = edit(&mut doc)?;
        if let Some(granted) = &who.tiers {
            crate::auth::scope::check(store.draft(), &doc, granted).map_err(|e| {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden_tier", e.to_string())
                    .detail("tier", e.part())
            })?;
        }
        let rev = store.set_draft(doc.clone())?;
        let mut entry = AuditEntry::new(&who.identity, action);
        entry.object = object;
        entry.version_before = store.active_version();
        entry.version_after = store.active_version();
        entry.draft_revision = Some(rev);
        store.append_audit(entry)?;
        (rev, doc, written)
    };
    // Validated once, after the lock is released: other writes and health need not wait for it.
    let check = off_worker(move || validation(&doc)).await;
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
        let (draft, revision) = {
            let store = app.store.lock().await;
            (store.draft().clone(), store.revision())
        };
        let mut v = off_worker(move || validation(&draft)).await;
        v["revision"] = json!(revision);
        return Ok(Json(v));
    }
    match off_worker(move || Policy::from_value(value)).await {
        Ok(_) => Ok(Json(json!({"valid": true, "errors": []}))),
        Err(policy::PolicyError::Invalid(errors)) => Ok(Json(
            json!({"valid": false, "errors": errors.iter().map(|e| json!({"path": e.path, "message": e.message})).collect::<Vec<_>>()}),
        )),
        Err(e) => Err(ApiError::invalid_policy("document", &e)),
    }
}

/// The two sides: `draft`, `active` or a version number (resolved under the store lock).
#[derive(Default)]
struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

impl QueryParams for DiffQuery {
    const NAMES: &'static [&'static str] = &["from", "to"];
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        let side = if name == "from" {
            &mut self.from
        } else {
            &mut self.to
        };
        *side = Some(v.to_string());
        Ok(())
    }
}

async fn get_diff(
    State(app): State<Shared>,
    Params(q): Params<DiffQuery>,
) -> ApiResult<Json<Value>> {
    let from = q.from.unwrap_or_else(|| "active".into());
    let to = q.to.unwrap_or_else(|| "draft".into());
    let (a, b) = {
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
        (resolve(&from, "from")?, resolve(&to, "to")?)
    };
    let mut d = off_worker(move || diff::diff(&a, &b)).await;
    d["from"] = json!(from);
    d["to"] = json!(to);
    Ok(Json(d))
}
