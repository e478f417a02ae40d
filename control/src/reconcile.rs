//! Keeping every gateway on the active version.
//!
//! At start and then every `reconcile_interval_ms`, for each gateway (all at once): if it already runs the active
//! version (same number and same document), nothing is pushed — running flows are not disturbed. If it runs an
//! older version or none (it was unreachable at a commit, or failed between prepare and publish), the active
//! version is pushed to it. If it runs a *newer* version (a higher number: control was started on an older copy of
//! the store), nothing is pushed: reconciliation refuses, says so in `GET /health`, `GET /gateways`, the
//! `bulkhead_control_reconcile_refused` gauge and the log, until an operator decides (a commit or rollback, whose
//! number is above the gateway's; or moving the store aside so the gateways' policy is adopted). If the store is
//! empty but gateways run a policy (a bootstrap policy, or a store lost on purpose), the policy of the one running
//! the highest version is adopted as the store's first version (and then pushed to the others). An unreachable
//! gateway is retried at the next tick; the API keeps serving meanwhile. Pending confirm deadlines are checked on
//! the same tick.
//!
//! Pushes and adoptions are audited like commits (intent, then outcome; `who` is `reconciler`; a push's `object`
//! is `gateways/<name>`), and every pass that reaches a gateway first resolves the intents left without an
//! outcome (by a crash, a failed append or an unanswered push): `applied` when the store's active version is the
//! intent's and a reached gateway (the intent's own, for a push) runs it, else `not_applied`, marked `recovered`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use policy::Policy;
use serde_json::{json, Map, Value};

use crate::app::{App, Change, Downgrade};
use crate::dataplane::DataplaneError;
use crate::gateway::{Gateway, Gateways};
use crate::lifecycle;
use crate::store::{self, ActiveFile, AuditEntry, Store, VersionKind, VersionMeta};

/// The `who` of the audit entries reconciliation writes.
pub const RECONCILER: &str = "reconciler";

/// What one reconciliation did on one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The gateway runs the active version: nothing pushed.
    InSync(u64),
    /// The active version was pushed (the gateway ran `from`).
    Pushed {
        version: u64,
        from: Option<u64>,
    },
    /// The store was empty; this gateway's running policy became version `0`.
    Adopted(u64),
    /// Neither side has a policy.
    Empty,
    /// The gateway runs a newer version than the active one: nothing pushed.
    Refused(Downgrade),
    Unreachable(String),
    Failed(String),
}

impl Outcome {
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::InSync(v) => json!({"outcome": "in_sync", "version": v}),
            Outcome::Pushed { version, from } => {
                json!({"outcome": "pushed", "version": version, "dataplane_had": from})
            }
            Outcome::Adopted(v) => json!({"outcome": "adopted", "version": v}),
            Outcome::Empty => json!({"outcome": "empty"}),
            Outcome::Refused(d) => json!({
                "outcome": "refused",
                "active_version": d.active_version,
                "dataplane_version": d.dataplane_version,
                "reason": refusal_reason(d),
            }),
            Outcome::Unreachable(e) => json!({"outcome": "dataplane_unreachable", "error": e}),
            Outcome::Failed(e) => json!({"outcome": "failed", "error": e}),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Outcome::InSync(_) => "in_sync",
            Outcome::Pushed { .. } => "pushed",
            Outcome::Adopted(_) => "adopted",
            Outcome::Empty => "empty",
            Outcome::Refused(_) => "refused",
            Outcome::Unreachable(_) => "dataplane_unreachable",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// What one reconciliation did, per gateway (in config order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report(pub Vec<(String, Outcome)>);

impl Report {
    /// `{"outcome": ..., "gateways": {name: {...}}}`: the outcome is the gateways' common one (with its fields,
    /// so a single gateway reads as before), or `mixed`.
    pub fn to_json(&self) -> Value {
        let mut out = match self.0.as_slice() {
            [(_, first), rest @ ..] if rest.iter().all(|(_, o)| o.kind() == first.kind()) => {
                if rest.is_empty() {
                    first.to_json()
                } else {
                    json!({"outcome": first.kind()})
                }
            }
            _ => json!({"outcome": "mixed"}),
        };
        let per: Map<String, Value> = self
            .0
            .iter()
            .map(|(name, o)| (name.clone(), o.to_json()))
            .collect();
        out["gateways"] = Value::Object(per);
        out
    }

    pub fn get(&self, gateway: &str) -> Option<&Outcome> {
        self.0.iter().find(|(n, _)| n == gateway).map(|(_, o)| o)
    }
}

pub async fn reconcile(app: &App) -> Report {
    let mut store = app.lock_for_change().await;
    let gateways: Vec<Arc<Gateway>> = app.gateways.iter().cloned().collect();
    let statuses = store
        .unlocked(Gateways::each(&gateways, |g| g.refresh()))
        .await;
    let reached: Vec<(&str, Option<u64>)> = gateways
        .iter()
        .zip(&statuses)
        .filter_map(|(g, s)| {
            let s = s.as_ref().ok()?;
            Some((g.name(), s.policy_version.map(u64::from)))
        })
        .collect();
    if !reached.is_empty() {
        resolve_open_intents(&mut store, &reached);
    }
    let mut outcomes: Vec<Option<Outcome>> = statuses
        .iter()
        .map(|s| {
            s.as_ref()
                .err()
                .map(|e| Outcome::Unreachable(e.to_string()))
        })
        .collect();
    if store.active_version().is_none() {
        // Adopt what the gateway with the highest version enforces rather than leave the store empty and the
        // API unable to explain it.
        let highest = gateways
            .iter()
            .enumerate()
            .filter_map(|(i, g)| Some((statuses[i].as_ref().ok()?.policy_version?, i, g)))
            .max_by_key(|(v, i, _)| (*v, std::cmp::Reverse(*i)));
        match highest {
            None => {
                for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                    *o = Some(Outcome::Empty);
                }
            }
            Some((v, i, g)) => {
                let uptime = statuses[i].as_ref().map_or(0.0, |s| s.uptime_s);
                let adopted = adopt(&mut store, g, u64::from(v), uptime).await;
                outcomes[i] = Some(adopted);
            }
        }
    }
    if let Some(active) = store.active_version() {
        let pending: Vec<usize> = (0..gateways.len())
            .filter(|i| outcomes[*i].is_none())
            .collect();
        let synced = sync(app, &mut store, active, &gateways, &statuses, &pending).await;
        for (i, o) in pending.into_iter().zip(synced) {
            outcomes[i] = Some(o);
        }
    }
    let report = Report(
        gateways
            .iter()
            .zip(outcomes)
            .map(|(g, o)| (g.name().to_string(), o.unwrap_or(Outcome::Empty)))
            .collect(),
    );
    let mut any_refused = false;
    for (g, (_, o)) in gateways.iter().zip(&report.0) {
        let refused = match o {
            Outcome::Refused(d) => Some(*d),
            _ => None,
        };
        any_refused |= refused.is_some();
        g.seen().refused = refused;
    }
    app.metrics.set_reconcile_refused(any_refused);
    report
}

/// Brings the gateways at `pending` (reached, indexes into `gateways`) to the active version: compares, then
/// pushes where needed (each push audited: intents first, pushes all at once, outcomes after).
async fn sync(
    app: &App,
    store: &mut Change<'_>,
    active: u64,
    gateways: &[Arc<Gateway>],
    statuses: &[Result<protocol::Status, DataplaneError>],
    pending: &[usize],
) -> Vec<Outcome> {
    let doc = serde_json::to_value(
        store
            .active_policy()
            .expect("active has a policy")
            .document(),
    )
    .unwrap_or_default();
    let checks = store
        .unlocked(futures_util::future::join_all(pending.iter().map(|&i| {
            let status = statuses[i].as_ref().expect("pending gateways were reached");
            check(&gateways[i], active, &doc, status)
        })))
        .await;
    let mut outcomes = Vec::with_capacity(pending.len());
    let mut pushes = Vec::new();
    for (k, (&i, checked)) in pending.iter().zip(checks).enumerate() {
        let g = &gateways[i];
        outcomes.push(match checked {
            Check::Done(o) => o,
            Check::Push(running) => {
                let mut intent = AuditEntry::new(RECONCILER, "reconcile.push");
                intent.object = Some(format!("gateways/{}", g.name()));
                intent.version_before = running;
                intent.version_after = Some(active);
                // No record, no push: a gateway never enforces a version the audit log does not name.
                match store.append_intent(intent) {
                    Ok(seq) => {
                        pushes.push((k, g.clone(), seq, running));
                        Outcome::Empty
                    }
                    Err(e) => Outcome::Failed(e.to_string()),
                }
            }
        });
    }
    let pushed = store
        .unlocked(futures_util::future::join_all(
            pushes.iter().map(|(_, g, _, _)| app.push(g, &doc, active)),
        ))
        .await;
    for ((k, _, intent, running), pushed) in pushes.into_iter().zip(pushed) {
        let outcome = match &pushed {
            Ok(_) => Some(store::Outcome::Applied),
            Err(DataplaneError::Refused { .. } | DataplaneError::Unreachable { .. }) => {
                Some(store::Outcome::Failed)
            }
            // No answer: the next pass resolves the intent from what the gateway then runs.
            Err(_) => None,
        };
        if let Some(outcome) = outcome {
            if let Err(e) = store.append_outcome(intent, outcome, false) {
                log(
                    &json!({"event": "intent_unresolved", "intent": intent, "error": e.to_string()}),
                );
            }
        }
        outcomes[k] = match pushed {
            Ok(_) => Outcome::Pushed {
                version: active,
                from: running,
            },
            Err(e) => Outcome::Failed(e.to_string()),
        };
    }
    outcomes
}

/// What one reached gateway needs.
enum Check {
    Done(Outcome),
    /// The active version must be pushed (it runs this one).
    Push(Option<u64>),
}

async fn check(g: &Gateway, active: u64, doc: &Value, status: &protocol::Status) -> Check {
    let running = status.policy_version.map(u64::from);
    let uptime = status.uptime_s;
    if running == Some(active) {
        // Same number: compare the documents once per gateway run (uptime resets when it restarts).
        let known = g.seen().verified;
        if matches!(known, Some((v, up)) if v == active && up <= uptime) {
            g.seen().verified = Some((active, uptime));
            return Check::Done(Outcome::InSync(active));
        }
        match g.client.get_policy().await {
            Ok(got) if got.policy.as_ref() == Some(doc) => {
                g.seen().verified = Some((active, uptime));
                return Check::Done(Outcome::InSync(active));
            }
            Ok(_) => {}
            Err(e) => return Check::Done(Outcome::Failed(e.to_string())),
        }
    }
    if let Some(newer) = running.filter(|r| *r > active) {
        return Check::Done(Outcome::Refused(Downgrade {
            active_version: active,
            dataplane_version: newer,
        }));
    }
    Check::Push(running)
}

/// Records the outcome of every intent left open: whether the store holds its version as active and a reached
/// gateway runs it (for a push to one gateway: that gateway; one not reached leaves its intent open).
fn resolve_open_intents(store: &mut Store, reached: &[(&str, Option<u64>)]) {
    let open: Vec<(u64, Option<u64>, Option<String>)> = store
        .open_intents()
        .map(|e| (e.seq, e.version_after, e.object.clone()))
        .collect();
    for (seq, version, object) in open {
        let gateway = object.as_deref().and_then(|o| o.strip_prefix("gateways/"));
        let runs = match gateway {
            Some(name) => match reached.iter().find(|(n, _)| *n == name) {
                Some((_, running)) => *running == version,
                None => continue,
            },
            None => reached.iter().any(|(_, running)| *running == version),
        };
        let applied = version.is_some() && store.active_version() == version && runs;
        let outcome = if applied {
            store::Outcome::Applied
        } else {
            store::Outcome::NotApplied
        };
        match store.append_outcome(seq, outcome, true) {
            Ok(()) => log(
                &json!({"event": "intent_resolved", "intent": seq, "version": version, "outcome": outcome}),
            ),
            Err(e) => {
                log(&json!({"event": "intent_unresolved", "intent": seq, "error": e.to_string()}))
            }
        }
    }
}

/// Why reconciliation does not push, and the operator's ways out.
pub fn refusal_reason(d: &Downgrade) -> String {
    format!(
        "the dataplane runs version {}, newer than the store's active version {}: not pushed; commit or roll \
         back to enforce the store's policy (as a version above {}), or move the store aside and restart control \
         to adopt the gateways'",
        d.dataplane_version, d.active_version, d.dataplane_version
    )
}

/// Adopts the policy gateway `g` runs (version `v`) as the store's first version.
async fn adopt(store: &mut Change<'_>, g: &Gateway, v: u64, uptime: f64) -> Outcome {
    let got = match store.unlocked(g.client.get_policy()).await {
        Ok(got) => got,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let policy = match Policy::from_value(got.policy.unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => {
            return Outcome::Failed(format!(
                "the policy gateway {} runs does not validate: {e}",
                g.name()
            ))
        }
    };
    let meta = VersionMeta {
        version: v,
        created: crate::time::rfc3339(SystemTime::now()),
        author: "system".into(),
        comment: format!("adopted: the policy gateway {} was running", g.name()),
        parent: None,
        kind: VersionKind::Adopted,
        source: None,
        submitted_by: None,
        scheduled: None,
    };
    let mut intent = AuditEntry::new(RECONCILER, "adopt");
    intent.version_after = Some(v);
    intent.details = json!({"gateway": g.name()});
    let intent = match store.append_intent(intent) {
        Ok(seq) => seq,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let result = (|| {
        store.add_version(meta, &policy)?;
        store.set_active(
            ActiveFile {
                version: v,
                pending: None,
            },
            policy.clone(),
        )?;
        if store.draft() == &policy::Document::default() {
            store.set_draft(policy.document().clone())?;
        }
        store.append_outcome(intent, store::Outcome::Applied, false)
    })();
    match result {
        Ok(()) => {
            g.seen().verified = Some((v, uptime));
            Outcome::Adopted(v)
        }
        // An intent still open is resolved by the next pass, from what the store then holds.
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// The background task: confirm deadlines and reconciliation, forever.
pub async fn run(app: std::sync::Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(app.config.reconcile_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Report> = None;
    loop {
        tick.tick().await;
        match lifecycle::revert_if_due(&app).await {
            Ok(Some(v)) => log(&json!({"event": "reverted", "version": v})),
            Ok(None) => {}
            Err(e) => log(&json!({"event": "revert_failed", "error": e.to_string()})),
        }
        match lifecycle::schedule::commit_if_due(&app).await {
            Ok(Some(done)) => log(&done.to_json()),
            Ok(None) => {}
            Err(e) => log(&json!({"event": "scheduled_commit_failed", "error": e.to_string()})),
        }
        let report = reconcile(&app).await;
        // Log changes only: an unreachable gateway must not flood the log every tick.
        let changed = |name: &str, outcome: &Outcome| match (
            last.as_ref().and_then(|l| l.get(name)),
            outcome,
        ) {
            (Some(Outcome::InSync(a)), Outcome::InSync(b)) => a != b,
            (Some(Outcome::Unreachable(_)), Outcome::Unreachable(_)) => false,
            (Some(Outcome::Empty), Outcome::Empty) => false,
            (Some(Outcome::Refused(a)), Outcome::Refused(b)) => a != b,
            _ => true,
        };
        for (name, outcome) in &report.0 {
            if changed(name, outcome) {
                log(&json!({"event": "reconcile", "gateway": name, "result": outcome.to_json()}));
            }
        }
        last = Some(report);
    }
}

pub fn log(v: &Value) {
    eprintln!("bulkhead-control: {v}");
}
