//! HTTPS: the self-signed certificate, plain HTTP only where the config allows it, client certificates (mTLS),
//! and the security headers on every kind of answer. Control runs in process (`tests/local/`) or as the real
//! binary; no dataplane is needed.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bulkhead_control::tls::fingerprint_sha256;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use testbed::control::{Control, ControlOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod local;

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bh-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("web")).unwrap();
    std::fs::write(dir.join("web/index.html"), "<title>console</title>").unwrap();
    dir
}

async fn start(name: &str, extra: &str) -> local::Local {
    local::start(&test_dir(name), extra).await
}

/// Everything the server sends on a raw TCP connection after `text`, until it closes (or 10 s pass).
async fn raw_answer(addr: SocketAddr, text: &str) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(text.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "still open after 10 s");
    got
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let s = start("plain-to-tls", "").await;
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let answer = raw_answer(s.addr, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(s.counters.handshake_failures.get(), 1);
    // Over TLS the same request is answered.
    let r = s
        .client()
        .get(format!("{}/api/v1/health", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_handshake_that_never_comes_is_closed_after_the_header_timeout() {
    let s = start("silent", "header_read_timeout_ms = 500").await;
    // Connects and says nothing: closed by the server, counted.
    assert!(raw_answer(s.addr, "").await.is_empty());
    assert_eq!(s.counters.handshake_failures.get(), 1);
}

#[tokio::test]
async fn plain_http_is_served_on_loopback_when_configured() {
    let s = start("plain", "tls = { plain_http = true }").await;
    assert!(s.url.starts_with("http://"), "{}", s.url);
    assert!(s.cert.is_none());
    let answer = raw_answer(
        s.addr,
        "GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // No HSTS over plain HTTP; the other headers are there.
    assert!(!answer
        .to_ascii_lowercase()
        .contains("strict-transport-security"));
    assert!(
        answer.contains("x-content-type-options: nosniff"),
        "{answer}"
    );
    // No certificate was made.
    assert!(!s.dir.join("store/tls").exists());
}

fn control_options(dir: &Path) -> ControlOptions {
    ControlOptions::new(
        env!("CARGO_BIN_EXE_bulkhead-control"),
        dir,
        &dir.join("no-dataplane.sock"),
    )
}

/// What `bulkhead-control --check` and a real start say about `config`, asserting both exit 2 (a config error).
fn config_errors(config: &Path) -> [String; 2] {
    [true, false].map(|check| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulkhead-control"));
        if check {
            cmd.arg("--check");
        }
        let out = cmd.arg("--config").arg(config).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "check={check}: {stderr}");
        stderr
    })
}

#[test]
fn plain_http_beyond_loopback_is_refused_with_the_reason() {
    let dir = test_dir("plain-beyond");
    let config = dir.join("control.toml");
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let mut text = control_options(&dir).config_text().replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{listen}\""),
        );
        text.push_str("\n[tls]\nplain_http = true\n");
        std::fs::write(&config, text).unwrap();
        for stderr in config_errors(&config) {
            assert!(
                stderr.contains("tls.plain_http")
                    && stderr.contains("only on a loopback listen address")
                    && stderr.contains("in clear"),
                "{listen}: {stderr}"
            );
        }
    }
}

/// The DER of the certificate `addr` serves, read with a TLS client that trusts `trusted`.
async fn served_certificate(addr: SocketAddr, trusted: &Path) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = local::tls_connector(trusted)
        .connect(addr.ip().into(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn openssl_fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split_once('=')
        .expect("sha256 Fingerprint=...")
        .1
        .to_string()
}

#[tokio::test]
async fn the_self_signed_certificate_is_created_once_private_and_its_fingerprint_printed() {
    let dir = test_dir("self-signed");
    let opts = control_options(&dir);
    let mut c = Control::start(&opts).unwrap();
    let tls = &c.ready["tls"];
    let printed = tls["fingerprint_sha256"].as_str().unwrap().to_string();
    assert_eq!(tls["self_signed"], true);
    let cert = opts.store_dir().join("tls/cert.pem");
    let key = opts.store_dir().join("tls/key.pem");
    assert_eq!(c.cert.as_deref(), Some(cert.as_path()));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The fingerprint printed is the served certificate's, as openssl reads the file, and on stderr too.
    let addr: SocketAddr = c.ready["listen"].as_str().unwrap().parse().unwrap();
    let served = served_certificate(addr, &cert).await;
    assert_eq!(fingerprint_sha256(&served), printed);
    assert_eq!(openssl_fingerprint(&cert), printed);
    assert_eq!(
        CertificateDer::from_pem_file(&cert).unwrap().to_vec(),
        served
    );
    let stderr = c.stderr();
    assert!(
        stderr.contains(&format!("created now), SHA-256 fingerprint {printed}")),
        "{stderr}"
    );
    // Its names: localhost and the loopback addresses (curl checks the IP against them).
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&text.stdout);
    for name in [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
    ] {
        assert!(names.contains(name), "{name} in {names}");
    }
    let h = c.request("GET", "/api/v1/health", None, &[], None).unwrap();
    assert_eq!(h.status, 200);
    assert!(c.stop().unwrap().success());

    // A restart serves the same certificate, and says it did not create it.
    let key_before = std::fs::read(&key).unwrap();
    let mut c = Control::start(&opts).unwrap();
    assert_eq!(c.ready["tls"]["fingerprint_sha256"], printed.as_str());
    assert_eq!(std::fs::read(&key).unwrap(), key_before);
    let addr: SocketAddr = c.ready["listen"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        fingerprint_sha256(&served_certificate(addr, &cert).await),
        printed
    );
    assert_eq!(c.stderr().matches("created now").count(), 1);
    assert!(c.stop().unwrap().success());
}

/// A CA made for a test, and certificates it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A client certificate and its key, as one PEM (the form `reqwest::Identity::from_pem` reads).
    fn client_identity(&self, name: &str) -> reqwest::Identity {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let pem = format!("{}{}", key.serialize_pem(), cert.pem());
        reqwest::Identity::from_pem(pem.as_bytes()).unwrap()
    }
}

/// Whether a request with `identity` (none: no client certificate) gets an answer.
async fn answered(s: &local::Local, identity: Option<reqwest::Identity>) -> bool {
    let mut builder = s.client_builder();
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    let client = builder.build().unwrap();
    client
        .get(format!("{}/api/v1/health", s.url))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// Control asking for client certificates of a test CA (`client_auth` as given), that CA and another one.
async fn with_client_ca(name: &str, client_auth: &str) -> (local::Local, Ca, Ca) {
    let ours = Ca::new("automation CA");
    let theirs = Ca::new("some other CA");
    let dir = test_dir(name);
    let ca = dir.join("client-ca.pem");
    std::fs::write(&ca, ours.cert.pem()).unwrap();
    let s = local::start(
        &dir,
        &format!("tls = {{ client_ca = {ca:?}, client_auth = {client_auth:?} }}"),
    )
    .await;
    (s, ours, theirs)
}

#[tokio::test]
async fn mtls_required_refuses_clients_without_a_certificate_of_the_ca() {
    let (s, ours, theirs) = with_client_ca("mtls-required", "required").await;
    assert!(!answered(&s, None).await, "no client certificate");
    assert!(
        !answered(&s, Some(theirs.client_identity("intruder"))).await,
        "a certificate of another CA"
    );
    assert!(answered(&s, Some(ours.client_identity("ansible"))).await);
    // Refused in the handshake, and counted there.
    assert_eq!(s.counters.handshake_failures.get(), 2);
}

#[tokio::test]
async fn mtls_optional_admits_clients_without_one_but_not_with_a_foreign_one() {
    let (s, ours, theirs) = with_client_ca("mtls-optional", "optional").await;
    assert!(answered(&s, None).await);
    assert!(answered(&s, Some(ours.client_identity("ansible"))).await);
    assert!(!answered(&s, Some(theirs.client_identity("intruder"))).await);
}

#[tokio::test]
async fn a_configured_certificate_from_our_own_ca_is_served() {
    let ca = Ca::new("site CA");
    let dir = test_dir("own-ca");
    ca.server_files(&dir.join("cert.pem"), &dir.join("key.pem"));
    let s = local::start(
        &dir,
        &format!(
            "tls = {{ cert = {:?}, key = {:?} }}",
            dir.join("cert.pem"),
            dir.join("key.pem")
        ),
    )
    .await;
    // A client that trusts only the CA.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/api/v1/health", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !dir.join("store/tls").exists(),
        "no self-signed certificate made"
    );
}

impl Ca {
    /// A server certificate for 127.0.0.1 and its key, written as `cert` (leaf, then the CA) and `key`.
    fn server_files(&self, cert: &Path, key: &Path) -> String {
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "control.example");
        let pair = rcgen::KeyPair::generate().unwrap();
        let leaf = params.signed_by(&pair, &self.cert, &self.key).unwrap();
        std::fs::write(cert, format!("{}{}", leaf.pem(), self.cert.pem())).unwrap();
        std::fs::write(key, pair.serialize_pem()).unwrap();
        fingerprint_sha256(leaf.der())
    }
}

#[tokio::test]
async fn sighup_serves_a_rotated_certificate_and_keeps_the_old_one_if_the_new_is_unusable() {
    let ca = Ca::new("site CA");
    let dir = test_dir("rotate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let first = ca.server_files(&cert, &key);
    std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
    let mut opts = control_options(&dir);
    opts.extra = format!("tls = {{ cert = {cert:?}, key = {key:?} }}");
    let c = Control::start(&opts).unwrap();
    assert_eq!(c.ready["tls"]["fingerprint_sha256"], first.as_str());
    assert_eq!(c.ready["tls"]["self_signed"], false);
    let addr: SocketAddr = c.ready["listen"].as_str().unwrap().parse().unwrap();
    let ca_file = dir.join("ca.pem");
    let served = || served_certificate(addr, &ca_file);
    assert_eq!(fingerprint_sha256(&served().await), first);
    let hup = || {
        let pid = c.pid().unwrap().to_string();
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    let wait_stderr = |what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !c.stderr().contains(what) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} not in {}",
                c.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let second = ca.server_files(&cert, &key);
    hup();
    wait_stderr(&format!("reloaded, SHA-256 fingerprint {second}"));
    assert_eq!(fingerprint_sha256(&served().await), second);

    // A key that does not go with the certificate: refused, the second certificate is still served.
    let _third = ca.server_files(&cert, &dir.join("other-key.pem"));
    hup();
    wait_stderr("kept the served certificate");
    assert_eq!(fingerprint_sha256(&served().await), second);
}

#[test]
fn unreadable_certificate_files_are_config_errors() {
    let dir = test_dir("bad-files");
    std::fs::write(dir.join("garbage.pem"), "not a certificate").unwrap();
    let opts = control_options(&dir);
    for (tls, expected) in [
        (
            format!(
                "tls = {{ cert = {:?}, key = {:?} }}",
                dir.join("missing.pem"),
                dir.join("key.pem")
            ),
            "tls.cert",
        ),
        (
            format!(
                "tls = {{ cert = {:?}, key = {:?} }}",
                dir.join("garbage.pem"),
                dir.join("key.pem")
            ),
            "no PEM certificate",
        ),
        (
            format!("tls = {{ client_ca = {:?} }}", dir.join("garbage.pem")),
            "tls.client_ca",
        ),
    ] {
        let mut opts = opts.clone();
        opts.extra = tls;
        let config = dir.join("control.toml");
        std::fs::write(&config, opts.config_text()).unwrap();
        for stderr in config_errors(&config) {
            assert!(stderr.contains(expected), "{expected} in {stderr}");
        }
    }
}

const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        bulkhead_control::http::CONTENT_SECURITY_POLICY,
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

#[tokio::test]
async fn every_kind_of_answer_carries_the_security_headers() {
    let s = start("headers", "").await;
    let plain = start("headers-plain", "tls = { plain_http = true }").await;
    assert!(!bulkhead_control::http::CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
    for (server, on_tls) in [(&s, true), (&plain, false)] {
        let client = server.client();
        for (path, token, status) in [
            ("/api/v1/version", true, 200),
            ("/api/v1/health", false, 200),
            ("/api/v1/version", false, 401),
            ("/api/v1/nonsense", true, 404),
            ("/index.html", false, 200),
            ("/missing.css", false, 404),
            ("/metrics", true, 200),
            ("/api/v1/flow-log/stream", true, 200),
        ] {
            let mut req = client.get(format!("{}{path}", server.url));
            if token {
                req = req.bearer_auth(&server.token);
            }
            // For the endless event stream, the headers are all this reads.
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), status, "{path}");
            for (name, value) in SECURITY_HEADERS {
                assert_eq!(
                    r.headers().get(name).map(|v| v.to_str().unwrap()),
                    Some(value),
                    "{name} on {path}"
                );
            }
            assert_eq!(
                r.headers()
                    .get("strict-transport-security")
                    .map(|v| v.to_str().unwrap()),
                on_tls.then_some(bulkhead_control::http::STRICT_TRANSPORT_SECURITY),
                "HSTS on {path}, TLS {on_tls}"
            );
        }
    }
}

#[tokio::test]
async fn handlers_see_the_client_address() {
    use axum::extract::ConnectInfo;
    let router = axum::Router::new().route(
        "/peer",
        axum::routing::get(
            |ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = bulkhead_control::http::Limits {
        header_read_timeout: Duration::from_secs(5),
        body_read_timeout: Duration::from_secs(5),
        max_connections: 4,
    };
    tokio::spawn(bulkhead_control::http::serve(
        listener,
        router,
        limits,
        None,
        Default::default(),
        std::future::pending(),
    ));
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mine = c.local_addr().unwrap();
    c.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).await.unwrap();
    assert!(answer.ends_with(&mine.to_string()), "{answer}");
}
