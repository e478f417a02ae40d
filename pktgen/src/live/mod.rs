//! Live sending and measuring over DPDK ports (`send`, `rfc2544`).
//!
//! - [`signature`]: the 22-byte stamp (magic, sequence number, TSC) written
//!   into each packet's payload, checksum-neutral, so that a received packet
//!   is matched to the one sent.
//! - the expected-verdict file (`X.pcap.verdicts.jsonl`) is read with
//!   [`crate::verdicts`].
//! - [`plan`]: the packets of a pcap as send templates, each with its
//!   direction (which port sends it) and its flow.
//! - [`recorder`]: what arrived — matching, loss, latency, reordering,
//!   verdict mismatches — and the [`recorder::Report`].
//! - [`engine`]: the DPDK side: EAL, ports, the send/receive loops.
//! - [`rfc2544`]: the RFC 2544 throughput search, independent of DPDK.

pub mod cli;
pub mod engine;
pub mod plan;
pub mod recorder;
pub mod rfc2544;
pub mod signature;

use std::path::PathBuf;
use std::time::Duration;

/// What stops a live run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// DPDK refused something (EAL init, a port, a pool).
    #[error("DPDK: {0}")]
    Dpdk(#[from] dpdk::Error),
    /// The input pcap cannot be read.
    #[error("cannot read pcap '{}': {reason}", path.display())]
    Pcap {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The input pcap holds no packet to send.
    #[error("pcap '{}' holds no packet", .0.display())]
    EmptyPcap(PathBuf),
    /// A record of the input pcap is larger than a packet buffer holds.
    #[error("pcap '{}' record {index} is {len} bytes; at most {max} can be sent", path.display())]
    FrameTooLarge {
        /// The file.
        path: PathBuf,
        /// Record index (0-based).
        index: usize,
        /// Its length.
        len: usize,
        /// The largest sendable frame.
        max: usize,
    },
    /// The verdict sidecar cannot be read or has a bad line.
    #[error("verdict file: {0}")]
    Verdicts(#[from] crate::verdicts::VerdictsError),
    /// A port did not come up (a memif peer that never connected, say).
    #[error("port {port} is still down after {waited:?} (is its peer running?)")]
    LinkDown {
        /// The device name.
        port: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The receive lcore's loop panicked.
    #[error("the receive loop on lcore {0} panicked")]
    RxPanicked(u32),
    /// The run completed, but flows did not get their expected verdict.
    #[error("{0} flow(s) did not get their expected verdict")]
    VerdictMismatches(usize),
    /// A trial of the throughput search failed.
    #[error("trial at {rate:.0} pps: {source}")]
    Trial {
        /// The offered rate.
        rate: f64,
        /// The cause.
        source: Box<Error>,
    },
}

impl Error {
    /// Process exit code: 3 for verdict mismatches (the run itself
    /// worked), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::VerdictMismatches(_) => 3,
            _ => 1,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
