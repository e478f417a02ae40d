//! `bulkhead-control`: the process network teams and their automation talk to. It is never in the packet path:
//! it reaches the dataplane only through the dataplane's local control socket ([`dataplane`]), and the
//! dataplane keeps enforcing its last committed policy when control is down.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod crashpoint;
pub mod dataplane;
pub mod diff;
pub mod error;
pub mod explain;
pub mod export;
pub mod flowlog;
pub mod gateway;
pub mod history;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod openapi;
pub mod reconcile;
pub mod rulehealth;
pub mod stats;
pub mod store;
pub mod suggest;
pub mod time;
pub mod tls;
pub mod traffic;
