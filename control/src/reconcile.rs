//! Keeping the dataplane on the active version.
//!
//! At start and then every `reconcile_interval_ms`: if the dataplane already runs the active version (same
//! number and same document), nothing is pushed — running flows are not disturbed. If it runs an older version
//! or none, the active version is pushed. If it runs a *newer* version (a higher number: control was started on
//! an older copy of the store), nothing is pushed: reconciliation refuses, says so in `GET /health`, the
//! `bulkhead_control_reconcile_refused` gauge and the log, until an operator decides (a commit or rollback, whose
//! number is above the dataplane's; or moving the store aside so the dataplane's policy is adopted). If the store
//! is empty but the dataplane runs a policy (a bootstrap policy, or a store lost on purpose), that policy is
//! adopted as the store's first version. An unreachable dataplane is retried at the next tick; the API keeps
//! serving meanwhile. Pending confirm deadlines are checked on the same tick.
//!
//! Pushes and adoptions are audited like commits (intent, then outcome; `who` is `reconciler`), and every pass
//! that reaches the dataplane first resolves the intents left without an outcome (by a crash, a failed append or
//! an unanswered push): `applied` when the store's active version and the dataplane's are the intent's version,
//! else `not_applied`, marked `recovered`.

use std::time::{Duration, SystemTime};

use policy::Policy;
use serde_json::{json, Value};

use crate::app::{App, Downgrade};
use crate::dataplane::DataplaneError;
use crate::lifecycle;
use crate::store::{self, ActiveFile, AuditEntry, Store, VersionKind, VersionMeta};

/// The `who` of the audit entries reconciliation writes.
pub const RECONCILER: &str = "reconciler";

/// What one reconciliation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The dataplane runs the active version: nothing pushed.
    InSync(u64),
    /// The active version was pushed (the dataplane ran `from`).
    Pushed {
        version: u64,
        from: Option<u64>,
    },
    /// The store was empty; the dataplane's running policy became version `0`.
    Adopted(u64),
    /// Neither side has a policy.
    Empty,
    /// The dataplane runs a newer version than the active one: nothing pushed.
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
}

pub async fn reconcile(app: &App) -> Outcome {
    let mut store = app.store.lock().await;
    let status = match app.dataplane.status().await {
        Ok(s) => s,
        Err(e) => {
            *app.dataplane_seen.lock().unwrap_or_else(|p| p.into_inner()) = Err(e.to_string());
            *app.verified.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return Outcome::Unreachable(e.to_string());
        }
    };
    *app.dataplane_seen.lock().unwrap_or_else(|p| p.into_inner()) = Ok(status.clone());
    let running = status.policy_version.map(u64::from);
    let uptime = status.uptime_s;
    resolve_open_intents(&mut store, running);
    let outcome = reconcile_with(app, &mut store, running, uptime).await;
    let refused = match &outcome {
        Outcome::Refused(d) => Some(*d),
        _ => None,
    };
    *app.refused.lock().unwrap_or_else(|p| p.into_inner()) = refused;
    app.metrics.set_reconcile_refused(refused.is_some());
    outcome
}

/// Records the outcome of every intent left open: whether the store and the dataplane both hold its version.
fn resolve_open_intents(store: &mut Store, running: Option<u64>) {
    let open: Vec<(u64, Option<u64>)> = store
        .open_intents()
        .map(|e| (e.seq, e.version_after))
        .collect();
    for (seq, version) in open {
        let applied = version.is_some() && store.active_version() == version && running == version;
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
         to adopt the dataplane's",
        d.dataplane_version, d.active_version, d.dataplane_version
    )
}

async fn reconcile_with(
    app: &App,
    store: &mut Store,
    running: Option<u64>,
    uptime: f64,
) -> Outcome {
    let Some(active) = store.active_version() else {
        let Some(v) = running else {
            return Outcome::Empty;
        };
        // Adopt what the dataplane enforces rather than leave the store empty and the API unable to explain it.
        let got = match app.dataplane.get_policy().await {
            Ok(g) => g,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let policy = match Policy::from_value(got.policy.unwrap_or_default()) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Failed(format!("the dataplane's policy does not validate: {e}"))
            }
        };
        let meta = VersionMeta {
            version: v,
            created: crate::time::rfc3339(SystemTime::now()),
            author: "system".into(),
            comment: "adopted: the policy the dataplane was running".into(),
            parent: None,
            kind: VersionKind::Adopted,
            source: None,
            submitted_by: None,
            scheduled: None,
        };
        let mut intent = AuditEntry::new(RECONCILER, "adopt");
        intent.version_after = Some(v);
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
        return match result {
            Ok(()) => {
                *app.verified.lock().unwrap_or_else(|p| p.into_inner()) = Some((v, uptime));
                Outcome::Adopted(v)
            }
            // An intent still open is resolved by the next pass, from what the store then holds.
            Err(e) => Outcome::Failed(e.to_string()),
        };
    };
    let doc = serde_json::to_value(
        store
            .active_policy()
            .expect("active has a policy")
            .document(),
    )
    .unwrap_or_default();
    if running == Some(active) {
        // Same number: compare the documents once per dataplane run (uptime resets when it restarts).
        let known = *app.verified.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(known, Some((v, up)) if v == active && up <= uptime) {
            *app.verified.lock().unwrap_or_else(|p| p.into_inner()) = Some((active, uptime));
            return Outcome::InSync(active);
        }
        match app.dataplane.get_policy().await {
            Ok(g) if g.policy.as_ref() == Some(&doc) => {
                *app.verified.lock().unwrap_or_else(|p| p.into_inner()) = Some((active, uptime));
                return Outcome::InSync(active);
            }
            Ok(_) => {}
            Err(e) => return Outcome::Failed(e.to_string()),
        }
    }
    if let Some(newer) = running.filter(|r| *r > active) {
        return Outcome::Refused(Downgrade {
            active_version: active,
            dataplane_version: newer,
        });
    }
    let mut intent = AuditEntry::new(RECONCILER, "reconcile.push");
    intent.version_before = running;
    intent.version_after = Some(active);
    // No record, no push: the dataplane never enforces a version the audit log does not name.
    let intent = match store.append_intent(intent) {
        Ok(seq) => seq,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let pushed = app.push(&doc, active).await;
    let outcome = match &pushed {
        Ok(_) => Some(store::Outcome::Applied),
        Err(DataplaneError::Refused { .. } | DataplaneError::Unreachable { .. }) => {
            Some(store::Outcome::Failed)
        }
        // No answer: the next pass resolves the intent from what the dataplane then runs.
        Err(_) => None,
    };
    if let Some(outcome) = outcome {
        if let Err(e) = store.append_outcome(intent, outcome, false) {
            log(&json!({"event": "intent_unresolved", "intent": intent, "error": e.to_string()}));
        }
    }
    match pushed {
        Ok(_) => Outcome::Pushed {
            version: active,
            from: running,
        },
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// The background task: confirm deadlines and reconciliation, forever.
pub async fn run(app: std::sync::Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(app.config.reconcile_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Outcome> = None;
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
        let outcome = reconcile(&app).await;
        // Log changes only: an unreachable dataplane must not flood the log every tick.
        let changed = match (&last, &outcome) {
            (Some(Outcome::InSync(a)), Outcome::InSync(b)) => a != b,
            (Some(Outcome::Unreachable(_)), Outcome::Unreachable(_)) => false,
            (Some(Outcome::Empty), Outcome::Empty) => false,
            (Some(Outcome::Refused(a)), Outcome::Refused(b)) => a != b,
            _ => true,
        };
        if changed {
            log(&json!({"event": "reconcile", "result": outcome.to_json()}));
        }
        last = Some(outcome);
    }
}

pub fn log(v: &Value) {
    eprintln!("bulkhead-control: {v}");
}
