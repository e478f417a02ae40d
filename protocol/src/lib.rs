//! The dataplane's control protocol: every request a client may send, every reply the dataplane gives, and
//! how one message is written as one line. This crate is the API boundary between the dataplane and the
//! processes that drive it (`bulkhead-control`, the testbed, `xtask`); it knows nothing of the transport
//! (a local Unix socket, or TLS with client certificates to a remote gateway), of DPDK or of an async runtime.
//!
//! # Messages
//!
//! One JSON object per line each way. A request carries the protocol version `v`, an optional `id` (any JSON
//! value, echoed in the answer) and an `op` with its arguments ([`Request`]):
//!
//! ```text
//! → {"id":7,"op":"status","v":1}
//! ← {"id":7,"ok":true,"result":{...},"v":1}
//! ← {"error":{"code":"invalid_policy","details":[...],"message":"..."},"id":7,"ok":false,"v":1}
//! ```
//!
//! The result of each op is its own type: [`Status`], [`CountersReport`], [`LoadPolicyResult`] (also the
//! result of `publish_policy`), [`PreparedPolicy`], [`DiscardResult`], [`PolicyState`], [`FlowList`],
//! [`KillResult`], [`EventBatch`], [`RoleChange`]; a refusal is an [`ErrorReply`].
//!
//! # HA pairs
//!
//! A gateway with an `[ha]` section is a member of an active/standby pair: it starts as standby (forwarding
//! nothing, every packet counted as the drop reason `standby`) and `set_role` makes it active or standby again
//! (keepalived's notify scripts send it). `status` then carries `ha` (the role). The op, the `ha` field, the
//! drop reason and the error code `not_ha` were added without a version change (see the rule below: a new
//! drop reason is a new key of a map every reader already iterates). So were the split-brain guard's
//! additions: `ha`'s optional `desired`, `held`, `instance`, `peer` and `heartbeats`, `set_role`'s optional
//! `effective` and `held` (a member may be held in a role other than the one it was told), and the drop
//! reason `ha_heartbeat`.
//!
//! # Two-step loading
//!
//! `load_policy` validates, compiles, persists and publishes in one request. A client that drives several
//! gateways splits it: `prepare_policy` (version N: validated, compiled, persisted as pending, not enforced) on
//! every gateway, then `publish_policy` (N) on every gateway, or `discard_prepared` (N) if any refused. A
//! gateway holds at most one pending version (a new prepare, or a `load_policy`, replaces it) and forgets it
//! when it restarts: it then enforces the last published version, never a pending one. `publish_policy` of a
//! version that is not pending is `not_prepared`. These ops were added without a version change (an older
//! dataplane answers them `bad_request`; see the rule below). Lines are
//! written with the keys of every object in sorted order (see [`line`]), as the dataplane always has.
//!
//! # Version rule
//!
//! [`PROTOCOL_VERSION`] changes when a peer that speaks the old version could misread the new one:
//! - removing or renaming an op, a field or an error code;
//! - changing a field's type, unit or meaning, or making a field optional (`null`) that was always present;
//! - a new value of an enumerated field other than the error code (an event `kind`, a `verdict`): a peer
//!   cannot read an event it has no variant for;
//! - making an absent request field mean something other than it meant before.
//!
//! It does not change for additions that an older peer handles safely:
//! - a new field in a result: clients ignore fields they do not know (result types do not deny unknown
//!   fields);
//! - a new optional request field or a new op: the dataplane denies unknown fields and ops, so an older
//!   dataplane answers `bad_request` instead of silently ignoring it; an absent optional field keeps its old
//!   meaning;
//! - a new error code: clients read codes they do not know as [`ErrorCode::Other`].
//!
//! The golden files in `tests/fixtures/` hold one message of each type exactly as it travels; a change to
//! them in review is a change to the wire.

mod line;
mod reply;
mod request;

pub use line::{decode_reply, decode_request, encode_reply, encode_request, DecodeError};
pub use reply::{
    CountersReport, DiscardResult, EventBatch, EventKind, FlatRules, FlowEvent, FlowInfo, FlowList,
    HaPeer, HaStatus, HeartbeatCounts, Hold, KillResult, LoadPolicyResult, PolicyState,
    PortCounters, PortLink, PreparedPolicy, RemoteControlStatus, Reply, ResyncResult, RoleChange,
    RuleCounters, Status, SwapTimes, SyncState, SyncStatus, Verdict, WorkerSnapshot,
};
pub use request::{ErrorCode, ErrorReply, FlowFilter, Request, Role};

/// The version of the protocol this build speaks (see the version rule above).
pub const PROTOCOL_VERSION: u64 = 1;
