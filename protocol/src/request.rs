use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a client can ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // Empty struct variants rather than unit variants: serde ignores unknown fields on unit variants of an
    // internally tagged enum, and a typo in a request must be an error.
    /// Process, policy version, workers, uptime ([`crate::Status`]).
    Status {},
    /// Every counter: per worker and totals, drops by reason, per rule, per port ([`crate::CountersReport`]).
    Counters {},
    /// Validate, compile, persist and publish a policy document. `version` is the control process's version
    /// number for it (the dataplane numbers it itself when absent) ([`crate::LoadPolicyResult`]).
    LoadPolicy {
        policy: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    /// The first step of a two-step load: validate, compile and persist a policy document as the pending
    /// version, without publishing it ([`crate::PreparedPolicy`]). It replaces a pending version, if any; a
    /// restart forgets it (the gateway enforces the last published version).
    PreparePolicy { policy: Value, version: u32 },
    /// The second step: publish the pending version `version` (persisted as the enforced state first)
    /// ([`crate::LoadPolicyResult`]). `not_prepared` when the pending version is another or none.
    PublishPolicy { version: u32 },
    /// Forget the pending version `version` ([`crate::DiscardResult`]; `discarded: false` when it was not
    /// pending).
    DiscardPrepared { version: u32 },
    /// The active policy document and its version ([`crate::PolicyState`]).
    GetPolicy {},
    /// Tracked connections matching `filter`, at most `limit` (default 1000) ([`crate::FlowList`]).
    Flows {
        #[serde(default)]
        filter: FlowFilter,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Remove the tracked connections matching `filter`; their next packet is judged as a new flow
    /// ([`crate::KillResult`]).
    KillFlows {
        #[serde(default)]
        filter: FlowFilter,
    },
    /// Flow events (new, denied, closed) queued since the last call, at most `max` (default 10000)
    /// ([`crate::EventBatch`]).
    Events {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<usize>,
    },
    /// Make this member of an HA pair the active one (it forwards) or the standby (it forwards nothing)
    /// ([`crate::RoleChange`]). `not_ha` on a gateway without an `[ha]` section.
    SetRole { role: Role },
    /// Send every flow's state to the HA peer again (a bulk resync) ([`crate::ResyncResult`]). `not_ha`
    /// without connection-state sync (`[ha] sync_peer`).
    Resync {},
}

/// A gateway's part in an HA pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Forwards traffic as its policy allows.
    Active,
    /// Forwards nothing (every packet is dropped as `standby`), so the pair never loops or duplicates frames.
    Standby,
}

impl Role {
    /// The role as it travels (`active`, `standby`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Selects connections; every given field must match (an empty filter selects all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowFilter {
    /// Either endpoint's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpAddr>,
    /// The originator's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    /// The responder's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    /// Either endpoint's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// IP protocol number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<u8>,
    /// The rule that admitted the flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u32>,
}

impl FlowFilter {
    /// Whether the filter selects everything.
    pub fn is_empty(&self) -> bool {
        *self == FlowFilter::default()
    }
}

/// Why a request was refused, for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not JSON.
    BadJson,
    /// `v` is not the version this dataplane speaks.
    UnsupportedVersion,
    /// Not a request: unknown op, unknown or ill-typed field.
    BadRequest,
    /// The policy document does not validate or compile.
    InvalidPolicy,
    /// The request line is longer than the dataplane accepts.
    TooLarge,
    /// The dataplane could not do what was asked (a worker did not answer, the state file is not writable...).
    Internal,
    /// `publish_policy` named a version that is not the pending one (none was prepared, or another was).
    NotPrepared,
    /// An HA request (`set_role`) to a gateway that is not a member of an HA pair (no `[ha]` section).
    NotHa,
    /// A code this build does not know (sent by a newer peer); never sent.
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// The code as it travels (`invalid_policy`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidPolicy => "invalid_policy",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Internal => "internal",
            ErrorCode::NotPrepared => "not_prepared",
            ErrorCode::NotHa => "not_ha",
            ErrorCode::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: a code for programs, a message for people, and details (e.g. every validation error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default)]
    pub details: Vec<String>,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;
    use crate::{EventKind, Role, Verdict};

    #[test]
    fn event_names_are_as_they_travel() {
        for kind in [EventKind::New, EventKind::Denied, EventKind::Closed] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        for verdict in [
            Verdict::Allow,
            Verdict::Deny,
            Verdict::Reject,
            Verdict::WouldDeny,
        ] {
            assert_eq!(serde_json::to_value(verdict).unwrap(), verdict.as_str());
        }
    }

    #[test]
    fn roles_display_as_they_travel() {
        for role in [Role::Active, Role::Standby] {
            assert_eq!(serde_json::to_value(role).unwrap(), role.to_string());
        }
    }

    #[test]
    fn error_codes_display_as_they_travel() {
        for code in [
            ErrorCode::BadJson,
            ErrorCode::UnsupportedVersion,
            ErrorCode::BadRequest,
            ErrorCode::InvalidPolicy,
            ErrorCode::TooLarge,
            ErrorCode::Internal,
            ErrorCode::NotPrepared,
            ErrorCode::NotHa,
            ErrorCode::Other,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.to_string());
        }
    }
}
