//! The safe face of DPDK for Bulkhead.
//!
//! Every `unsafe` call into `dpdk-sys` lives in this crate (and each block says why it is sound); the crates
//! above it are `#![forbid(unsafe_code)]`. Ownership rules are carried by the types:
//!
//! * [`Eal`] is a once-per-process token; everything else borrows it, so nothing outlives `rte_eal_cleanup`.
//! * [`Mbuf`] and [`Burst`] own their packets: dropping them returns the buffers to their pool, so a packet can
//!   be forwarded, or freed, but never leaked.
//! * A [`Port`] hands out its queues once, on [`Port::start`]; a queue is `Send` but not `Clone`, so exactly one
//!   lcore polls it, as DPDK requires.
//! * [`lcore::scope`] launches closures on pinned worker lcores and waits for all of them before it returns,
//!   which is what lets workers borrow queues and counters owned by the main thread.
//! * [`acl::AclContext`] classifies only inputs at least as long as its field layout reads, so rte_acl never
//!   reads out of bounds; it is `Sync`, since classifying a built context from several lcores is allowed.
//! * [`rcu::RcuCell`] publishes a value to the workers; a [`rcu::Reader`]'s reference cannot outlive its next
//!   quiescent state, so the old value is freed — on the publishing thread — only when no worker can see it.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod acl;
mod eal;
mod error;
pub mod lcore;
mod mbuf;
mod mempool;
mod port;
pub mod prefetch;
pub mod rcu;

pub use eal::{runtime_version, tsc, tsc_hz, Eal};
pub use error::{Error, Result};
pub use mbuf::{Burst, Mbuf, MAX_BURST};
pub use mempool::Mempool;
pub use port::{DevInfo, Port, PortConfig, PortStats, Queues, RxQueue, TxQueue};
pub use prefetch::prefetch;
