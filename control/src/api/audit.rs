//! `GET /audit`: the audit log.

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use serde_json::{json, Value};

use super::extract::{self, ApiResult, Params, QueryParams};
use super::{p, Routes};
use crate::app::Shared;
use crate::auth::Right;

pub(super) fn routes(r: Routes) -> Routes {
    r.add_with::<AuditQuery, _, _>(Method::GET, &p("/audit"), Right::Read, read_audit)
}

/// `?since=SEQ&limit=N`: entries after `since`, the newest `limit`.
#[derive(Default)]
struct AuditQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

impl QueryParams for AuditQuery {
    const NAMES: &'static [&'static str] = &["since", "limit"];
    fn set(&mut self, name: &str, v: &str) -> Result<(), &'static str> {
        match name {
            "since" => {
                self.since = Some(extract::value(v, "an audit sequence number (0, 1, ...)")?)
            }
            "limit" => self.limit = Some(extract::value(v, "a number of entries (0, 1, ...)")?),
            _ => extract::not_a_name(name),
        }
        Ok(())
    }
}

async fn read_audit(
    State(app): State<Shared>,
    Params(q): Params<AuditQuery>,
) -> ApiResult<Json<Value>> {
    let store = app.store.lock().await;
    let entries = store.audit(q.since.unwrap_or(0), q.limit.unwrap_or(1000))?;
    Ok(Json(json!({"entries": entries})))
}
