//! Control served in process on a free port with no dataplane (its socket names nothing): for the tests of what
//! control answers by itself, with the same listener as the real process.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bulkhead_control::api;
use bulkhead_control::app::App;
use bulkhead_control::auth::tokens::initial_secret_path;
use bulkhead_control::auth::{Failures, Tokens};
use bulkhead_control::config::Config;
use bulkhead_control::dataplane::Dataplane;
use bulkhead_control::flowlog::FlowLog;
use bulkhead_control::gateway::Gateways;
use bulkhead_control::history::History;
use bulkhead_control::http;
use bulkhead_control::metrics::Metrics;
use bulkhead_control::store::Store;
use bulkhead_control::tls::Tls;

pub struct Local {
    /// `https://127.0.0.1:PORT` (`http://` with `[tls] plain_http`).
    pub url: String,
    pub addr: SocketAddr,
    /// The first `admin` token (empty when the token file existed before: no first-start secret then).
    pub token: String,
    /// Everything of this control: its store, flow log, and `web/` (its console directory, when it exists).
    pub dir: PathBuf,
    /// The listener's counters (connections refused for being over `max_connections`, failed handshakes).
    pub counters: http::Counters,
    /// The certificate served (control's self-signed one unless `extra` names another); `None` on plain HTTP.
    pub cert: Option<PathBuf>,
}

impl Local {
    /// A client that trusts the served certificate.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder();
        match &self.cert {
            Some(cert) => builder.add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(cert).unwrap()).unwrap(),
            ),
            None => builder,
        }
    }

    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    /// A TLS connection (trusting the served certificate) for tests that write raw HTTP.
    pub async fn connect_tls(
        &self,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let cert = self.cert.as_ref().expect("control serves TLS");
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tls_connector(cert)
            .connect(self.addr.ip().into(), tcp)
            .await
    }
}

/// A rustls client trusting `cert` (a PEM file) alone.
pub fn tls_connector(cert: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[allow(deprecated)]
pub fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
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
    let tls = Tls::start(&config).unwrap();
    let cert = tls.as_ref().map(|t| t.cert_path.clone());
    let (tokens, _) = Tokens::load_or_create(&config.token_path()).unwrap();
    let token = std::fs::read_to_string(initial_secret_path(&config.token_path()))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let metrics = Metrics::new(config.metrics.clone());
    let auth_failures = Failures::new(config.auth.clone());
    auth_failures.register(metrics.registry()).unwrap();
    let flowlog = FlowLog::new(config.flow_log.clone()).unwrap();
    flowlog.register_metrics(metrics.registry()).unwrap();
    let app = Arc::new(App {
        store: tokio::sync::Mutex::new(Store::open(&config.store_dir).unwrap()),
        changes: Default::default(),
        tokens: RwLock::new(tokens),
        auth_failures,
        gateways: Gateways::single(
            Dataplane::new(config.dataplane_socket.clone().unwrap())
                .with_timeout(Duration::from_millis(100)),
        ),
        metrics: metrics.clone(),
        flowlog,
        history: config.history.enabled.then(|| {
            let history = History::open(config.history.clone(), &config.store_dir).unwrap();
            history.register_metrics(metrics.registry()).unwrap();
            history
        }),
        shadow_cache: Default::default(),
        config,
    });
    let limits = http::Limits::new(&app.config);
    let router = api::app(app, vec![metrics.router()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = http::Counters::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tokio::spawn(http::serve(
        listener,
        router,
        limits,
        tls.map(|t| t.server),
        counters.clone(),
        std::future::pending(),
    ));
    Local {
        url: format!("{scheme}://{addr}"),
        addr,
        token,
        dir: dir.to_path_buf(),
        counters,
        cert,
    }
}
