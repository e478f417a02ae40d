//! Roles and rights. A right is one kind of action; a role is a fixed set of rights. Every route of the API
//! declares the one right it needs (`api::Routes::add` takes it), so the table in docs/api.md and the OpenAPI
//! document are generated from, and tested against, the same place.
//!
//! Roles are cumulative: each has the rights of the one before it. Adding a right is one variant here, its
//! name, and the roles that get it in [`Role::rights`].

use serde::{Deserialize, Serialize};

/// One kind of action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Right {
    /// Read everything but secrets: policies, versions, audit, stats, flows, the flow log, metrics; rotate the
    /// caller's own token.
    Read,
    /// Kill tracked connections.
    Kill,
    /// Settle a pending commit: confirm (keep) or revert one on trial, cancel a scheduled one.
    Confirm,
    /// Analyse the draft: validate, diff, explain (CPU on whole documents, and for explain a dataplane request).
    Analyze,
    /// Change the draft: import, reset, its objects and its policy settings.
    Edit,
    /// Submit the draft for approval (the two-person rule), or withdraw the submission.
    Submit,
    /// Change what is enforced: commit the draft (now or scheduled; under the two-person rule, a draft another
    /// identity submitted), roll back to a version.
    Commit,
    /// Create, list, rotate and revoke any token.
    ManageTokens,
}

impl Right {
    pub const ALL: [Right; 8] = [
        Right::Read,
        Right::Kill,
        Right::Confirm,
        Right::Analyze,
        Right::Edit,
        Right::Submit,
        Right::Commit,
        Right::ManageTokens,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Kill => "kill",
            Right::Confirm => "confirm",
            Right::Analyze => "analyze",
            Right::Edit => "edit",
            Right::Submit => "submit",
            Right::Commit => "commit",
            Right::ManageTokens => "manage_tokens",
        }
    }
}

impl std::fmt::Display for Right {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Author,
    Approver,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Operator,
        Role::Author,
        Role::Approver,
        Role::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Author => "author",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The role → rights table.
    pub fn rights(self) -> &'static [Right] {
        use Right::*;
        match self {
            Role::Viewer => &[Read],
            Role::Operator => &[Read, Kill, Confirm],
            Role::Author => &[Read, Kill, Confirm, Analyze, Edit, Submit],
            Role::Approver => &[Read, Kill, Confirm, Analyze, Edit, Submit, Commit],
            // Every right.
            Role::Admin => &Right::ALL,
        }
    }

    pub fn has(self, right: Right) -> bool {
        self.rights().contains(&right)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_cumulative_and_every_right_is_someones() {
        for pair in Role::ALL.windows(2) {
            let (lower, higher) = (pair[0], pair[1]);
            assert!(lower.rights().iter().all(|r| higher.has(*r)), "{higher}");
            assert!(higher.rights().len() > lower.rights().len(), "{higher}");
        }
        assert_eq!(Role::Admin.rights(), &Right::ALL);
        for role in Role::ALL {
            assert_eq!(Role::parse(role.name()), Some(role));
            let json = serde_json::to_value(role).unwrap();
            assert_eq!(json, role.name());
        }
        for right in Right::ALL {
            assert_eq!(serde_json::to_value(right).unwrap(), right.name());
        }
        assert_eq!(Role::parse("root"), None);
    }
}
