//! Connection tracking: one table per poll-mode worker (both directions of a flow always reach the same
//! worker), so it is single-threaded and lock-free by construction, and — like the rest of the poll loop — it
//! allocates, locks, logs and makes system calls only in its constructor: everything is sized from the
//! configuration up front. Time is the caller's millisecond clock (derived from the TSC once per burst).
//!
//! * [`key`]: [`FlowKey`], the canonical direction-independent key (v4 and v6 in one table), [`Side`] and
//!   [`Dir`], and the key of a parsed packet or of the packet quoted by an ICMP error.
//! * [`table`]: [`ConnTable`], a slab of [`Entry`]s (116 bytes) plus a pre-sized, seeded hash index; a hard
//!   cap that only ever evicts unestablished flows; expiry by a cursor advancing a budget of slots per call.
//! * [`tcp`]: the TCP state machine with window tracking (Linux conntrack / Rooij style).
//! * [`sources`]: [`SourceTable`], the per-source flood limits, and [`segments`]: [`SegmentTable`], the
//!   per-segment one; consulted only when a new flow is admitted.
//! * [`Tracker`]: the per-packet entry point.
//! * [`FlowInfo`]: a serializable view for listings and flow logs.
//!
//! How a worker uses it, per packet (after [`net::parse`]):
//!
//! ```text
//! match tracker.process(frame, &parsed, now) {
//!     Track::Known { id, dir, policy_version } => forward (re-check policy if policy_version is stale),
//!     Track::New(new) => match policy.classify(&parsed) {
//!         Allow { rule, version, log } => match tracker.commit_new(&new, Admission { .. }, now) {
//!             Ok(c) => { report c.displaced as closed; forward }
//!             Err(CommitError::Full) => { count table_full; drop }
//!             Err(CommitError::Limit(limit)) => { count Refusal::Limit(limit); report it; drop }
//!         },
//!         Deny => { count; drop }            // no state is kept for denied packets
//!     },
//!     Track::Related { id, dir } => forward (ICMP error about a tracked flow),
//!     Track::Untracked(kind) => stateless policy (ARP, neighbour discovery, fragments, ...),
//!     Track::Drop(reason) => { count reason; drop silently }
//! }
//! // once per poll-loop iteration:
//! tracker.expire(now, budget, |id, entry| report closed flow);
//! ```

pub mod info;
pub mod key;
pub mod segments;
pub mod sources;
pub mod table;
pub mod tcp;
mod tracker;

#[cfg(test)]
mod tests;

pub use info::FlowInfo;
pub use key::{packet_key, quoted_key, Dir, FlowKey, Side};
pub use segments::{SegmentKey, SegmentTable};
pub use sources::{FloodLimit, SourceTable};
pub use table::{ConnTable, Entry, FlowId, Full, Inserted, Lookup, TableStats};
pub use tcp::{
    timeout_ms, track, Strictness, TcpConnState, TcpRefusal, TcpSegment, TcpState, TcpVerdict,
};
pub use tracker::{
    Admission, CommitError, Committed, NewFlow, Prepared, Refusal, Track, Tracker, Untracked,
};

/// Idle timeouts in seconds, by protocol state: the policy's `settings.timeouts`, used as they are. Values above
/// [`table::MAX_TIMEOUT_MS`] are clamped to it.
pub use policy::Timeouts;
