//! Keeping the dataplane on the active version.
//!
//! At start and then every `reconcile_interval_ms`: if the dataplane already runs the active version (same
//! number and same document), nothing is pushed — running flows are not disturbed. If it runs another version or
//! none, the active version is pushed. If the store is empty but the dataplane runs a policy (a bootstrap policy,
//! or a store lost on purpose), that policy is adopted as the store's first version. An unreachable dataplane is
//! retried at the next tick; the API keeps serving meanwhile. Pending confirm deadlines are checked on the same
//! tick.

use std::time::{Duration, SystemTime};

use policy::Policy;
use serde_json::{json, Value};

use crate::app::App;
use crate::lifecycle;
use crate::store::{ActiveFile, AuditEntry, VersionKind, VersionMeta};

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
            let revision = store.revision();
            let mut entry = AuditEntry::new("system", "adopt");
            entry.version_after = Some(v);
            entry.draft_revision = Some(revision);
            store.append_audit(entry)
        })();
        return match result {
            Ok(_) => {
                *app.verified.lock().unwrap_or_else(|p| p.into_inner()) = Some((v, uptime));
                Outcome::Adopted(v)
            }
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
    match app.dataplane.load_policy(&doc, active).await {
        Ok(_) => {
            *app.verified.lock().unwrap_or_else(|p| p.into_inner()) = None;
            Outcome::Pushed {
                version: active,
                from: running,
            }
        }
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
        let outcome = reconcile(&app).await;
        // Log changes only: an unreachable dataplane must not flood the log every tick.
        let changed = match (&last, &outcome) {
            (Some(Outcome::InSync(a)), Outcome::InSync(b)) => a != b,
            (Some(Outcome::Unreachable(_)), Outcome::Unreachable(_)) => false,
            (Some(Outcome::Empty), Outcome::Empty) => false,
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
