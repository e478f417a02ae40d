//! A version reaches the gateways in two steps, so that a policy one gateway refuses is enforced by none:
//! *prepare* on every gateway at once (validated, compiled and persisted as pending, not published), then, if
//! none refused, *publish* on every gateway that prepared it. A refusal discards the version wherever it was
//! prepared. A gateway that cannot be reached, or fails between prepare and publish, keeps enforcing its
//! persisted policy and is brought to the version by reconciliation when it answers again.

use serde_json::{json, Map, Value};

use protocol::{ErrorCode, LoadPolicyResult};

use crate::app::App;
use crate::dataplane::DataplaneError;
use crate::gateway::{Gateway, Gateways};

/// What one gateway answered to a deployment.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Prepared and published: it enforces the version.
    Applied(LoadPolicyResult),
    /// It refused to prepare the version.
    Refused {
        code: ErrorCode,
        message: String,
        details: Vec<String>,
    },
    /// It prepared the version, which was discarded because another gateway refused it.
    Discarded,
    /// Not reached, or failed between prepare and publish: it keeps its policy and is out of sync.
    OutOfSync(String),
    /// It did not answer the publish: it may enforce the version; reconciliation finds out.
    Unconfirmed(String),
}

impl Answer {
    pub fn to_json(&self) -> Value {
        match self {
            Answer::Applied(r) => json!({"outcome": "applied", "result": r}),
            Answer::Refused {
                code,
                message,
                details,
            } => {
                json!({"outcome": "refused", "code": code, "message": message, "details": details})
            }
            Answer::Discarded => json!({"outcome": "discarded"}),
            Answer::OutOfSync(e) => json!({"outcome": "out_of_sync", "error": e}),
            Answer::Unconfirmed(e) => json!({"outcome": "unconfirmed", "error": e}),
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Answer::Applied(r) => format!("enforces version {}", r.version),
            Answer::Refused { code, message, .. } => format!("refused ({code}): {message}"),
            Answer::Discarded => "prepared it, then discarded it".into(),
            Answer::OutOfSync(e) => format!("out of sync: {e}"),
            Answer::Unconfirmed(e) => format!("did not confirm: {e}"),
        }
    }
}

/// Every gateway's answer to one version, in config order.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub version: u64,
    pub answers: Vec<(String, Answer)>,
}

impl Deployment {
    /// The publish reports of the gateways that enforce the version.
    pub fn applied(&self) -> impl Iterator<Item = &LoadPolicyResult> {
        self.answers.iter().filter_map(|(_, a)| match a {
            Answer::Applied(r) => Some(r),
            _ => None,
        })
    }

    /// Whether some gateway refused to prepare the version.
    pub fn refused(&self) -> bool {
        self.answers
            .iter()
            .any(|(_, a)| matches!(a, Answer::Refused { .. }))
    }

    /// Whether some gateway may enforce the version without having confirmed it.
    pub fn unconfirmed(&self) -> bool {
        self.answers
            .iter()
            .any(|(_, a)| matches!(a, Answer::Unconfirmed(_)))
    }

    /// `{name: answer}`.
    pub fn to_json(&self) -> Value {
        let per: Map<String, Value> = self
            .answers
            .iter()
            .map(|(name, a)| (name.clone(), a.to_json()))
            .collect();
        json!({"version": self.version, "gateways": per})
    }

    /// What happened, for people: the refusals if any, else every answer.
    pub fn summary(&self) -> String {
        let refusals: Vec<String> = self
            .answers
            .iter()
            .filter(|(_, a)| matches!(a, Answer::Refused { .. }))
            .map(|(name, a)| format!("gateway {name} {}", a.describe()))
            .collect();
        if !refusals.is_empty() {
            return format!(
                "version {} was not published on any gateway: {}",
                self.version,
                refusals.join("; ")
            );
        }
        let all: Vec<String> = self
            .answers
            .iter()
            .map(|(name, a)| format!("gateway {name}: {}", a.describe()))
            .collect();
        format!(
            "version {} is enforced by no gateway: {}",
            self.version,
            all.join("; ")
        )
    }
}

/// Prepares `policy` as `version` on every gateway, then publishes it on all that prepared it (or discards it
/// everywhere if one refused). Never fails as a whole: the answer says what each gateway did.
pub async fn deploy(app: &App, policy: &Value, version: u64) -> Deployment {
    let gateways: Vec<_> = app.gateways.iter().cloned().collect();
    let prepared = Gateways::each(&gateways, |g| prepare(g, policy, version)).await;
    crate::crashpoint::step("after prepare");
    let refused = prepared
        .iter()
        .any(|p| matches!(p, Err(DataplaneError::Refused { .. })));
    let mut answers: Vec<Option<Answer>> = vec![None; gateways.len()];
    for (i, p) in prepared.iter().enumerate() {
        if let Err(e) = p {
            answers[i] = Some(match e {
                DataplaneError::Refused {
                    code,
                    message,
                    details,
                } => Answer::Refused {
                    code: *code,
                    message: message.clone(),
                    details: details.clone(),
                },
                e => Answer::OutOfSync(format!("prepare: {e}")),
            });
        }
    }
    let ready: Vec<usize> = (0..gateways.len())
        .filter(|i| answers[*i].is_none())
        .collect();
    if refused {
        let subset: Vec<_> = ready.iter().map(|&i| gateways[i].clone()).collect();
        let discarded = Gateways::each(&subset, |g| g.client.discard_prepared(version)).await;
        for (&i, d) in ready.iter().zip(discarded) {
            answers[i] = Some(match d {
                Ok(_) => Answer::Discarded,
                // Never published: the gateway keeps enforcing its policy whatever became of the pending one.
                Err(e) => Answer::OutOfSync(format!("discard: {e}")),
            });
        }
    } else {
        crate::crashpoint::pause_before_publish().await;
        let subset: Vec<_> = ready.iter().map(|&i| gateways[i].clone()).collect();
        let published = Gateways::each(&subset, |g| publish(g, version)).await;
        crate::crashpoint::step("after a push");
        for (&i, p) in ready.iter().zip(published) {
            answers[i] = Some(match p {
                Ok(r) => Answer::Applied(r),
                Err(e @ (DataplaneError::Refused { .. } | DataplaneError::Unreachable { .. })) => {
                    Answer::OutOfSync(format!("publish: {e}"))
                }
                Err(e) => Answer::Unconfirmed(format!("publish: {e}")),
            });
        }
    }
    Deployment {
        version,
        answers: gateways
            .iter()
            .zip(answers)
            .map(|(g, a)| {
                (
                    g.name().to_string(),
                    a.expect("every gateway has an answer"),
                )
            })
            .collect(),
    }
}

async fn prepare(g: &Gateway, policy: &Value, version: u64) -> Result<(), DataplaneError> {
    g.unverify();
    let prepared = g.client.prepare_policy(policy, version).await;
    if let Err(e) = &prepared {
        g.failed(&format!("prepare of version {version}"), e);
    }
    prepared.map(|_| ())
}

async fn publish(g: &Gateway, version: u64) -> Result<LoadPolicyResult, DataplaneError> {
    let published = g.client.publish_policy(version).await;
    match &published {
        Ok(_) => g.enforces(version),
        Err(e) => g.failed(&format!("publish of version {version}"), e),
    }
    published
}
