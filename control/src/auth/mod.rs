//! Who may do what: bearer tokens ([`tokens`]), roles and their rights ([`role`]), tokens scoped to tiers
//! ([`scope`]), and failed authentications ([`failures`]). The HTTP side (the middleware that authenticates and checks rights) is in `api`.

pub mod failures;
pub mod role;
pub mod scope;
pub mod tokens;

pub use failures::{AuthConfig, Failures, Reason};
pub use role::{Right, Role};
pub use tokens::{bearer, Caller, TokenError, Tokens};
