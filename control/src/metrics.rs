//! Prometheus metrics: `GET /metrics` in the text exposition format, from the `prometheus` crate.
//!
//! Scrapes never reach the workers: they are answered from the registry, which a poller refreshes from the
//! dataplane's `counters` report (aggregated by its management thread) at a fixed interval.

use std::sync::Arc;
use std::time::Duration;

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use prometheus::{Encoder, Histogram, HistogramOpts, Registry, TextEncoder};
use serde::Deserialize;

use crate::dataplane::Dataplane;

/// `[metrics]` in the control config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// How often the dataplane's counters are read, in milliseconds.
    pub poll_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { poll_ms: 1000 }
    }
}

pub struct Metrics {
    registry: Registry,
    commit_latency: Histogram,
    config: MetricsConfig,
}

impl Metrics {
    pub fn new(config: MetricsConfig) -> Arc<Metrics> {
        let registry = Registry::new();
        let commit_latency = Histogram::with_opts(
            HistogramOpts::new(
                "bulkhead_policy_commit_seconds",
                "Time from a commit request to the dataplane enforcing the new version.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("a valid histogram");
        registry
            .register(Box::new(commit_latency.clone()))
            .expect("registered once");
        Arc::new(Metrics {
            registry,
            commit_latency,
            config,
        })
    }

    /// Records how long a commit took from request to enforcement by the dataplane.
    pub fn observe_commit(&self, took: Duration) {
        self.commit_latency.observe(took.as_secs_f64());
    }

    /// Refreshes the registry from the dataplane until the process ends.
    pub async fn run(self: Arc<Self>, dataplane: Dataplane) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.poll_ms.max(100)));
        loop {
            tick.tick().await;
            let _ = dataplane.counters().await;
        }
    }

    /// `GET /metrics`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .with_state(self.clone())
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

async fn scrape(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            TextEncoder::new().format_type().to_string(),
        )],
        m.render(),
    )
}
