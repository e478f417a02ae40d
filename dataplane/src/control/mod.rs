//! The dataplane's local control socket: how `bulkhead-control` (or an operator with `socat`) loads a policy,
//! reads counters, lists and kills flows, and drains flow events.
//!
//! Transport: a Unix stream socket (mode 0600), one JSON object per line each way. Every request carries the
//! protocol version `v` (currently 1), an optional `id` echoed in the response, and an `op`:
//!
//! ```text
//! → {"v":1,"id":7,"op":"status"}
//! ← {"v":1,"id":7,"ok":true,"result":{...}}
//! ← {"v":1,"id":7,"ok":false,"error":{"code":"invalid_policy","message":"...","details":[...]}}
//! ```
//!
//! A malformed request gets an error response on the same connection; it never takes the dataplane down.

mod protocol;
mod server;

pub use protocol::{ApiError, ErrorCode, FlowFilter, Request, PROTOCOL_VERSION};
pub use server::{bind, serve, Handler, Listener};
