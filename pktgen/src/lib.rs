//! Bulkhead's traffic generator as a library: frame building, workloads
//! and output, shared by the `bulkhead-pktgen` binary's subcommands.
//!
//! - [`frame`]: the one frame builder, Ethernet [+ 802.1Q] + IPv4/IPv6 +
//!   TCP/UDP/ICMP/raw, fragments, every header written by the `net` crate's
//!   emit side.
//! - [`flows`]: the `flows` workload, N distinct deterministic 5-tuples.
//! - [`pcap`]: the pcap writer every file-producing subcommand uses.
//! - [`prefix`], [`rng`]: address prefixes and the seedable SplitMix64
//!   generator that makes every output reproducible from its seed.
//! - [`verdicts`]: the expected-verdict sidecar (`X.pcap.verdicts.jsonl`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attack;
pub mod classbench_gen;
pub mod conversation;
pub mod error;
pub mod flood;
pub mod flows;
pub mod frame;
#[cfg(feature = "live")]
pub mod live;
pub mod pcap;
pub mod policy_traffic;
pub mod prefix;
pub mod rng;
pub mod verdicts;

pub use error::{Error, Result};
