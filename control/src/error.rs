//! The API's error answers: `{"error": {"code", "message", "details": [{"path", "message"}]}}` — a code for
//! programs, a sentence for people, and for validation problems every offending field by its JSON path.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use crate::dataplane::DataplaneError;
use crate::lifecycle::LifecycleError;
use crate::store::StoreError;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Detail {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<Detail>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn detail(mut self, path: impl Into<String>, message: impl Into<String>) -> Self {
        self.details.push(Detail {
            path: path.into(),
            message: message.into(),
        });
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer <token>)",
        )
    }

    /// A policy that does not validate: every error with its path.
    pub fn invalid_policy(context: &str, e: &policy::PolicyError) -> Self {
        let mut out = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", "");
        match e {
            policy::PolicyError::Invalid(errors) => {
                out.message = format!("{context}: {} validation error(s)", errors.len());
                out.details = errors
                    .iter()
                    .map(|e| Detail {
                        path: e.path.clone(),
                        message: e.message.clone(),
                    })
                    .collect();
            }
            policy::PolicyError::Syntax { line, col, msg } => {
                out.message = format!("{context}: not JSON");
                out.details.push(Detail {
                    path: format!("line {line}, column {col}"),
                    message: msg.clone(),
                });
            }
        }
        out
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            e.to_string(),
        )
    }
}

impl From<DataplaneError> for ApiError {
    fn from(e: DataplaneError) -> Self {
        match &e {
            DataplaneError::Unreachable { .. } | DataplaneError::Timeout(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "dataplane_unavailable",
                e.to_string(),
            ),
            DataplaneError::Refused {
                code,
                message,
                details,
            } => {
                let mut out = ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "dataplane_refused",
                    format!("the dataplane refused ({code}): {message}"),
                );
                out.details = details
                    .iter()
                    .map(|d| match d.split_once(": ") {
                        Some((p, m)) => Detail {
                            path: p.into(),
                            message: m.into(),
                        },
                        None => Detail {
                            path: String::new(),
                            message: d.clone(),
                        },
                    })
                    .collect();
                out
            }
            _ => ApiError::new(StatusCode::BAD_GATEWAY, "dataplane_error", e.to_string()),
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        let message = e.to_string();
        match e {
            LifecycleError::ConfirmWindow => ApiError::bad_request("invalid confirm window")
                .detail(
                    "confirm_within_s",
                    format!("must be in 1..={}", crate::config::MAX_CONFIRM_S),
                ),
            LifecycleError::InvalidDraft(e) => {
                ApiError::invalid_policy("the draft does not validate", &e)
            }
            LifecycleError::ConfirmPending { .. } => ApiError::conflict("confirm_pending", message),
            LifecycleError::NoChanges(_) => ApiError::conflict("no_changes", message),
            LifecycleError::NothingToRevertTo => {
                ApiError::conflict("nothing_to_revert_to", message)
            }
            LifecycleError::NoActiveVersion | LifecycleError::NotPending(_) => {
                ApiError::conflict("nothing_pending", message)
            }
            LifecycleError::ApprovalRequired { .. } => {
                ApiError::conflict("approval_required", message)
            }
            LifecycleError::SelfApproval(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "two_person_rule", message)
            }
            LifecycleError::NothingSubmitted => ApiError::conflict("nothing_submitted", message),
            LifecycleError::ScheduleTime(why) => {
                ApiError::bad_request("invalid schedule time").detail("at", why)
            }
            LifecycleError::AlreadyScheduled { .. } => {
                ApiError::conflict("already_scheduled", message)
            }
            LifecycleError::NothingScheduled => ApiError::not_found(message),
            LifecycleError::UnknownVersion(_) => {
                ApiError::not_found(message).detail("version", "unknown")
            }
            LifecycleError::InvalidStoredVersion(e) => {
                ApiError::invalid_policy("stored version", &e)
            }
            LifecycleError::Store(e) => e.into(),
            LifecycleError::Dataplane(e) => e.into(),
            LifecycleError::NotDeployed(d) => not_deployed(&d, message),
        }
    }
}

/// A version no gateway enforces: 502 `dataplane_refused` when a gateway refused it (each refusal's details,
/// their paths as the gateway gave them, their messages prefixed with the gateway's name), else 503
/// `dataplane_unavailable`; `details` also carry each gateway's answer at `gateways.<name>`.
fn not_deployed(d: &crate::lifecycle::Deployment, message: String) -> ApiError {
    let mut out = if d.refused() {
        ApiError::new(StatusCode::BAD_GATEWAY, "dataplane_refused", message)
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dataplane_unavailable",
            message,
        )
    };
    for (name, answer) in &d.answers {
        out = out.detail(format!("gateways.{name}"), answer.describe());
        if let crate::lifecycle::Answer::Refused { details, .. } = answer {
            for d in details {
                out.details.push(match d.split_once(": ") {
                    Some((p, m)) => Detail {
                        path: p.into(),
                        message: format!("[{name}] {m}"),
                    },
                    None => Detail {
                        path: String::new(),
                        message: format!("[{name}] {d}"),
                    },
                });
            }
        }
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "details": self.details}});
        (self.status, Json(body)).into_response()
    }
}
