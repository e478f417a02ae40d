//! `bulkhead-control --config control.toml [--check]`.
//!
//! Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 1 when the store, token file or listen address cannot be
//! used, 2 for a bad command line or config. On stdout, one JSON line when ready:
//! `{"event":"ready","listen":"127.0.0.1:8180","active_version":N,"reconcile":{...}}`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bulkhead_control::api;
use bulkhead_control::app::App;
use bulkhead_control::auth::Tokens;
use bulkhead_control::config::Config;
use bulkhead_control::dataplane::Dataplane;
use bulkhead_control::export::Exporters;
use bulkhead_control::flowlog::FlowLog;
use bulkhead_control::http;
use bulkhead_control::metrics::Metrics;
use bulkhead_control::reconcile;
use bulkhead_control::store::Store;
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "bulkhead-control",
    version,
    about = "Bulkhead control: REST API, policy store, metrics"
)]
struct Cli {
    /// The config file (see config/control.toml).
    #[arg(long, default_value = "/etc/bulkhead/control.toml")]
    config: PathBuf,
    /// Check the config and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bulkhead-control: config error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        if let Err(e) = Exporters::check_files(&config.export) {
            eprintln!("bulkhead-control: config error: {e}");
            return ExitCode::from(2);
        }
        println!("{}: ok (listen {})", cli.config.display(), config.listen);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bulkhead-control: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulkhead-control: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let mut store = Store::open(&config.store_dir)?;
    let tokens = Tokens::load_or_create(&config.token_path())?;
    let dataplane = Dataplane::new(&config.dataplane_socket)
        .with_timeout(Duration::from_millis(config.dataplane_timeout_ms));
    let metrics = Metrics::new(config.metrics.clone());
    let export = Exporters::start(&config.export, metrics.registry())?;
    store.export_audit_to(export.clone());
    let flowlog = FlowLog::with_export(config.flow_log.clone(), export)
        .map_err(|e| format!("flow log {}: {e}", config.flow_log.path.display()))?;
    flowlog
        .register_metrics(metrics.registry())
        .map_err(|e| format!("flow-log metrics: {e}"))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let listen = listener.local_addr()?;
    if !listen.ip().is_loopback() {
        // Plain HTTP: bearer tokens cross the network in clear unless a TLS proxy fronts the API.
        eprintln!(
            "bulkhead-control: warning: listening on {listen}, beyond localhost, in plain HTTP; \
             put a TLS-terminating proxy in front or keep the API on 127.0.0.1"
        );
    }
    let app = Arc::new(App {
        store: tokio::sync::Mutex::new(store),
        tokens: RwLock::new(tokens),
        dataplane: dataplane.clone(),
        metrics: metrics.clone(),
        flowlog: flowlog.clone(),
        shadow_cache: Default::default(),
        config,
        dataplane_seen: Mutex::new(Err("not asked yet".into())),
        verified: Mutex::new(None),
        refused: Mutex::new(None),
    });
    let router = api::app(app.clone(), vec![metrics.router()]);
    let limits = http::Limits::new(&app.config);
    if limits.max_connections < app.config.max_connections {
        eprintln!(
            "bulkhead-control: warning: max_connections lowered to {} (half the open-file limit)",
            limits.max_connections
        );
    }
    let refused = http::refused_counter();
    metrics
        .registry()
        .register(Box::new(refused.clone()))
        .map_err(|e| format!("listener metrics: {e}"))?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // Serve first: the API must answer even when the dataplane is down or slow.
    let mut server = tokio::spawn(http::serve(listener, router, limits, refused, async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));
    let first = reconcile::reconcile(&app).await;
    let active = app.store.lock().await.active_version();
    println!(
        "{}",
        json!({"event": "ready", "listen": listen.to_string(), "active_version": active, "reconcile": first.to_json()})
    );
    tokio::spawn(metrics.clone().run(dataplane.clone()));
    tokio::spawn(flowlog.clone().run(dataplane.clone()));
    tokio::spawn(reconcile::run(app.clone()));
    tokio::select! {
        r = &mut server => return Ok(r?),
        () = shutdown() => {}
    }
    // Requests in flight may finish; open event streams would hold a graceful shutdown forever, so they get a
    // bounded grace period. Every store write is atomic, so cutting a request short never tears the store.
    let _ = stop_tx.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
        .await
        .is_err()
    {
        eprintln!(
            "bulkhead-control: connections still open after {SHUTDOWN_GRACE:?}; closing them"
        );
    }
    Ok(())
}

const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
