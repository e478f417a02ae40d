//! `bulkhead-control --config control.toml [--check]`. SIGHUP reloads the TLS certificate and key files.
//!
//! Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 1 when the store, token file, listen address or self-signed
//! certificate cannot be used, 2 for a bad command line or config (the TLS files it names included). On stdout,
//! one JSON line when ready: `{"event":"ready","listen":"127.0.0.1:8180","url":"https://127.0.0.1:8180",
//! "tls":{"fingerprint_sha256":"AB:CD:...","cert":"...","self_signed":true,"client_auth":null},
//! "active_version":N,"reconcile":{...}}` (`"tls":null` on plain HTTP).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bulkhead_control::api;
use bulkhead_control::app::App;
use bulkhead_control::auth::{Failures, Tokens};
use bulkhead_control::config::Config;
use bulkhead_control::export::Exporters;
use bulkhead_control::flowlog::FlowLog;
use bulkhead_control::gateway::Gateways;
use bulkhead_control::history::History;
use bulkhead_control::http;
use bulkhead_control::metrics::Metrics;
use bulkhead_control::reconcile;
use bulkhead_control::store::Store;
use bulkhead_control::tls::{Created, Tls};
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
    // The gateways' certificate files are config too (exit code 2).
    let gateways = match Gateways::connect(&config.gateways(), config.dataplane_timeout_ms) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("bulkhead-control: config error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        if let Err(e) = Tls::check(&config) {
            eprintln!("bulkhead-control: config error: {e}");
            return ExitCode::from(2);
        }
        if let Err(e) = Exporters::check_files(&config.export) {
            eprintln!("bulkhead-control: config error: {e}");
            return ExitCode::from(2);
        }
        let scheme = if config.tls.plain_http {
            "http"
        } else {
            "https"
        };
        println!(
            "{}: ok (listen {scheme}://{})",
            cli.config.display(),
            config.listen
        );
        return ExitCode::SUCCESS;
    }
    let tls = match Tls::start(&config) {
        Ok(tls) => tls,
        Err(e) if e.is_config() => {
            eprintln!("bulkhead-control: config error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("bulkhead-control: {e}");
            return ExitCode::from(1);
        }
    };
    match &tls {
        Some(tls) => eprintln!(
            "bulkhead-control: TLS certificate {}{}, SHA-256 fingerprint {}",
            tls.cert_path.display(),
            match tls.self_signed {
                Some(Created::Now) => " (self-signed, created now)",
                Some(Created::Earlier) => " (self-signed)",
                None => "",
            },
            tls.fingerprint_sha256
        ),
        None => eprintln!(
            "bulkhead-control: serving plain HTTP on {} ([tls] plain_http)",
            config.listen
        ),
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
    match runtime.block_on(serve(config, tls, gateways)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulkhead-control: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(
    config: Config,
    tls: Option<Tls>,
    gateways: Gateways,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut store = Store::open(&config.store_dir)?;
    let (tokens, migrated) = Tokens::load_or_create(&config.token_path())?;
    if migrated > 0 {
        eprintln!(
            "bulkhead-control: {}: migrated {migrated} token(s) of the old format to admin tokens stored as hashes",
            config.token_path().display()
        );
    }
    let metrics = Metrics::new(config.metrics.clone());
    metrics.watch(gateways.names());
    let export = Exporters::start(&config.export, metrics.registry())?;
    store.export_audit_to(export.clone());
    let history = if config.history.enabled {
        let history = History::open(config.history.clone(), &config.store_dir)?;
        history
            .register_metrics(metrics.registry())
            .map_err(|e| format!("history metrics: {e}"))?;
        Some(history)
    } else {
        None
    };
    let flowlog = FlowLog::with_outputs(config.flow_log.clone(), export, history.clone())
        .map_err(|e| format!("flow log {}: {e}", config.flow_log.path.display()))?;
    flowlog.know_pairs(gateways.pairs());
    flowlog
        .register_metrics(metrics.registry())
        .map_err(|e| format!("flow-log metrics: {e}"))?;
    let auth_failures = Failures::new(config.auth.clone());
    auth_failures
        .register(metrics.registry())
        .map_err(|e| format!("auth metrics: {e}"))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let listen = listener.local_addr()?;
    let app = Arc::new(App {
        store: tokio::sync::Mutex::new(store),
        changes: Default::default(),
        tokens: RwLock::new(tokens),
        auth_failures,
        gateways: gateways.clone(),
        metrics: metrics.clone(),
        flowlog: flowlog.clone(),
        history,
        shadow_cache: Default::default(),
        config,
    });
    let router = api::app(app.clone(), vec![metrics.router()]);
    let limits = http::Limits::new(&app.config);
    if limits.max_connections < app.config.max_connections {
        eprintln!(
            "bulkhead-control: warning: max_connections lowered to {} (half the open-file limit)",
            limits.max_connections
        );
    }
    let counters = http::Counters::new();
    counters
        .register(metrics.registry())
        .map_err(|e| format!("listener metrics: {e}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let tls_json = tls.as_ref().map(Tls::to_json);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // Serve first: the API must answer even when the dataplane is down or slow.
    let server_config = tls.as_ref().map(|t| t.server.clone());
    if let Some(tls) = tls {
        tokio::spawn(reload_on_sighup(tls));
    }
    let mut server = tokio::spawn(http::serve(
        listener,
        router,
        limits,
        server_config,
        counters,
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        },
    ));
    let first = reconcile::reconcile(&app).await;
    let active = app.store.lock().await.active_version();
    println!(
        "{}",
        json!({
            "event": "ready",
            "listen": listen.to_string(),
            "url": format!("{scheme}://{listen}"),
            "tls": tls_json,
            "active_version": active,
            "reconcile": first.to_json(),
        })
    );
    for gateway in gateways.iter() {
        tokio::spawn(metrics.clone().run(gateway.clone()));
        tokio::spawn(flowlog.clone().run(gateway.client.clone()));
    }
    tokio::spawn(reconcile::run(app.clone()));
    tokio::spawn(flush_last_use(app.clone()));
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
    write_last_use(&app);
    if let Some(history) = app.history.clone() {
        // What the writer holds in memory (up to `flush_ms` of events) goes to the database before exit.
        match tokio::task::spawn_blocking(move || history.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("bulkhead-control: history: {e}"),
            Err(e) => eprintln!("bulkhead-control: history: {e}"),
        }
    }
    Ok(())
}

/// Writes the tokens' last uses to the token file every `auth.last_use_flush_s` when one changed (never a
/// write per request; at shutdown too).
async fn flush_last_use(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(app.config.auth.last_use_flush_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let app = app.clone();
        // A file write with fsync: on the blocking pool.
        let _ = tokio::task::spawn_blocking(move || write_last_use(&app)).await;
    }
}

fn write_last_use(app: &App) {
    let tokens = app.tokens.read().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = tokens.flush_last_use() {
        eprintln!("bulkhead-control: cannot save the tokens' last use: {e}");
    }
}

/// SIGHUP: serve the certificate files again (after a rotation), keeping the old certificate if they are unusable.
async fn reload_on_sighup(tls: Tls) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(fingerprint) => eprintln!(
                "bulkhead-control: SIGHUP: TLS certificate {} reloaded, SHA-256 fingerprint {fingerprint}",
                tls.cert_path.display()
            ),
            Err(e) => eprintln!("bulkhead-control: SIGHUP: kept the served certificate: {e}"),
        }
    }
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
