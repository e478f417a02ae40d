//! Bulkhead's dataplane: a transparent bump in the wire between paired DPDK ports, run by poll-mode workers
//! on pinned cores.
//!
//! Layers, bottom up: `dpdk-sys` (raw bindings) → `dpdk` (safe EAL, pools, ports, mbufs, lcores) → `net`
//! (packet views) → this crate (config, workers, counters, gateway lifecycle). Only the first two contain
//! `unsafe`.

#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod conntrack;

pub mod counters;
pub mod events;
pub mod gateway;
pub mod management;
pub mod persist;
pub mod reject;
pub mod remote;
pub mod ruleset;
pub mod segment_index;
pub mod socket;
pub mod worker;
