//! Control served in process on a free port with no dataplane (its socket names nothing): for the tests of what
//! control answers by itself, with the same listener as the real process.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bulkhead_control::api;
use bulkhead_control::app::App;
use bulkhead_control::auth::tokens::initial_secret_path;
use bulkhead_control::auth::{Failures, Tokens};
use bulkhead_control::config::Config;
use bulkhead_control::dataplane::Dataplane;
use bulkhead_control::flowlog::FlowLog;
use bulkhead_control::http;
use bulkhead_control::metrics::Metrics;
use bulkhead_control::store::Store;

pub struct Local {
    pub url: String,
    pub addr: SocketAddr,
    /// The first `admin` token (empty when the token file existed before: no first-start secret then).
    pub token: String,
    /// Everything of this control: its store, flow log, and `web/` (its console directory, when it exists).
    pub dir: PathBuf,
    /// Connections refused for being over `max_connections`.
    pub refused: prometheus::IntCounter,
    /// A client that follows no redirect.
    pub client: reqwest::Client,
}

/// Control keeping its files in `dir`; `extra` goes at the top of its control.toml.
pub async fn start(dir: &Path, extra: &str) -> Local {
    let text = format!(
        "{extra}\nstore_dir = {:?}\ndataplane_socket = {:?}\n[flow_log]\npath = {:?}\n[web]\ndir = {:?}\n",
        dir.join("store"),
        dir.join("absent.sock"),
        dir.join("flows.jsonl"),
        dir.join("web"),
    );
    let config = Config::parse(&text, &dir.join("control.toml")).unwrap();
    let (tokens, _) = Tokens::load_or_create(&config.token_path()).unwrap();
    let token = std::fs::read_to_string(initial_secret_path(&config.token_path()))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let metrics = Metrics::new(config.metrics.clone());
    let auth_failures = Failures::new(config.auth.clone());
    auth_failures.register(metrics.registry()).unwrap();
    let app = Arc::new(App {
        store: tokio::sync::Mutex::new(Store::open(&config.store_dir).unwrap()),
        tokens: RwLock::new(tokens),
        auth_failures,
        dataplane: Dataplane::new(&config.dataplane_socket)
            .with_timeout(Duration::from_millis(100)),
        metrics: metrics.clone(),
        flowlog: FlowLog::new(config.flow_log.clone()).unwrap(),
        shadow_cache: Default::default(),
        config,
        dataplane_seen: Mutex::new(Err("not asked".into())),
        verified: Mutex::new(None),
        refused: Mutex::new(None),
    });
    let limits = http::Limits::new(&app.config);
    let router = api::app(app, vec![metrics.router()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = http::refused_counter();
    let counted = refused.clone();
    tokio::spawn(async move {
        http::serve(listener, router, limits, counted, std::future::pending()).await
    });
    Local {
        url: format!("http://{addr}"),
        addr,
        token,
        dir: dir.to_path_buf(),
        refused,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}
