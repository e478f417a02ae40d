//! The remote control listener's TLS side (`[remote_control]`): the server configuration built from the
//! certificate, key, client CA and client pins files, the handshake of each connection under a deadline, and
//! the counters of what happened. The connections themselves are served by [`crate::socket`], exactly as the
//! local sockets' are.
//!
//! Every client must present a certificate: one issued by `client_ca` (checked by rustls' WebPKI verifier,
//! expiry included) or one whose SHA-256 fingerprint is in `client_pins`. [`RemoteTls::reload`] (on SIGHUP)
//! reads the config file's `client_pins` and every file it names again and serves the result to new
//! connections; if anything is unusable the previous configuration stays. Nothing here runs on a worker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme, StreamOwned,
};

use crate::config::{Config, RemoteControlCfg};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote_control.{field} {path}: {reason}")]
    File {
        field: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("remote_control.cert and remote_control.key: {0}")]
    Unusable(rustls::Error),
    #[error("remote_control.client_ca {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("{0}")]
    Config(String),
}

/// A SHA-256 fingerprint in hex (`AB:CD:...` as openssl prints it, or without colons, any case).
pub fn parse_pin(text: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut pin = [0u8; 32];
    for (byte, pair) in pin.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(pin)
}

/// SHA-256 of `der`, as upper-case hex pairs joined by colons (as `openssl x509 -fingerprint -sha256` shows it).
pub fn fingerprint_sha256(der: &[u8]) -> String {
    sha256(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// What the listener has done since start (read by `status`).
#[derive(Debug, Default)]
pub struct RemoteCounters {
    /// Handshakes completed: clients authenticated.
    pub sessions: AtomicU64,
    /// Handshakes that failed (no certificate, an unknown, expired or unpinned one, not TLS, ...).
    pub handshake_failures: AtomicU64,
    /// Handshakes not completed within `handshake_timeout_ms`.
    pub handshake_timeouts: AtomicU64,
    /// Connections closed at once because `max_connections` were being served.
    pub over_limit: AtomicU64,
    /// SIGHUP reloads that took effect, and those that kept the previous files.
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

/// The server side of the remote listener's TLS: the current configuration and the counters.
pub struct RemoteTls {
    cfg: RemoteControlCfg,
    /// The config file read again on reload (`None`: the files `cfg` names are).
    config_path: Option<PathBuf>,
    current: RwLock<Current>,
    pub counters: RemoteCounters,
}

struct Current {
    server: Arc<ServerConfig>,
    fingerprint: String,
}

impl RemoteTls {
    /// Reads and checks every file `cfg` names (also what `--check` does). A reload reads `config_path`'s
    /// `[remote_control]` again (its `listen`, `max_connections` and `handshake_timeout_ms` take effect only
    /// at a restart).
    pub fn load(
        cfg: &RemoteControlCfg,
        config_path: Option<&Path>,
    ) -> Result<RemoteTls, RemoteError> {
        Ok(RemoteTls {
            cfg: cfg.clone(),
            config_path: config_path.map(Path::to_path_buf),
            current: RwLock::new(server_config(cfg)?),
            counters: RemoteCounters::default(),
        })
    }

    /// Reads every file again; new connections get the result. On an error the previous configuration stays
    /// and the error is returned (and counted).
    pub fn reload(&self) -> Result<String, RemoteError> {
        match self.reread().and_then(|cfg| server_config(&cfg)) {
            Ok(next) => {
                let fingerprint = next.fingerprint.clone();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
                self.counters.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(fingerprint)
            }
            Err(e) => {
                self.counters
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The `[remote_control]` section as the config file says now.
    fn reread(&self) -> Result<RemoteControlCfg, RemoteError> {
        let Some(path) = &self.config_path else {
            return Ok(self.cfg.clone());
        };
        let cfg = Config::load(path).map_err(|e| RemoteError::Config(e.to_string()))?;
        cfg.remote_control.ok_or_else(|| {
            RemoteError::Config(format!(
                "{}: [remote_control] is gone; the listener stops only at a restart",
                path.display()
            ))
        })
    }

    /// SHA-256 of the served certificate.
    pub fn fingerprint(&self) -> String {
        self.read().fingerprint.clone()
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.handshake_timeout_ms)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// `status`'s view of the listener.
    pub fn status(&self, listen: std::net::SocketAddr) -> protocol::RemoteControlStatus {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        protocol::RemoteControlStatus {
            listen: listen.to_string(),
            cert_sha256: self.fingerprint(),
            sessions: n(&c.sessions),
            handshake_failures: n(&c.handshake_failures),
            handshake_timeouts: n(&c.handshake_timeouts),
            over_limit: n(&c.over_limit),
            reloads: n(&c.reloads),
            reload_failures: n(&c.reload_failures),
        }
    }

    /// Completes the TLS handshake on `tcp` within the handshake deadline, polling every `poll` (the socket's
    /// read timeout) so a stopping dataplane (`stop`) is not held up. `None` (counted, unless stopping) when it
    /// fails or times out.
    pub fn handshake(
        &self,
        mut tcp: TcpStream,
        poll: Duration,
        stop: &AtomicBool,
    ) -> Option<TlsStream> {
        let server = self.read().server.clone();
        let mut conn = ServerConnection::new(server).ok()?;
        tcp.set_nonblocking(false).ok()?;
        tcp.set_read_timeout(Some(poll)).ok()?;
        tcp.set_write_timeout(Some(poll)).ok()?;
        let deadline = Instant::now() + self.handshake_timeout();
        while conn.is_handshaking() {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if Instant::now() >= deadline {
                self.counters
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match conn.complete_io(&mut tcp) {
                Ok((0, 0)) if conn.is_handshaking() && !conn.wants_write() => {
                    // The client hung up during the handshake.
                    self.counters
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Ok(_) => {}
                Err(e) if crate::socket::timed_out(&e) => {}
                Err(_) => {
                    // rustls has queued its alert; let the client know why, best effort.
                    let _ = conn.write_tls(&mut tcp);
                    self.counters
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        Some(TlsStream(StreamOwned::new(conn, tcp)))
    }
}

/// An authenticated TLS connection of the remote listener.
pub struct TlsStream(StreamOwned<ServerConnection, TcpStream>);

impl TlsStream {
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.0.sock.set_write_timeout(timeout)
    }

    /// Ends the session with a close_notify, best effort.
    pub fn close(mut self) {
        self.0.conn.send_close_notify();
        let _ = self.0.flush();
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn read_certs(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, RemoteError> {
    let bad = |reason: String| RemoteError::File {
        field,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn server_config(cfg: &RemoteControlCfg) -> Result<Current, RemoteError> {
    let certs = read_certs("cert", &cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| RemoteError::File {
        field: "key",
        path: cfg.key.clone(),
        reason: e.to_string(),
    })?;
    let fingerprint = fingerprint_sha256(&certs[0]);
    let verifier = ClientVerifier::new(cfg)?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(RemoteError::Unusable)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(certs, key)
        .map_err(RemoteError::Unusable)?;
    Ok(Current {
        server: Arc::new(server),
        fingerprint,
    })
}

/// Accepts a client certificate that is pinned or that the CA's WebPKI verifier accepts. rustls offers the
/// second only; pinning by fingerprint has no verifier of its own there, so this one adds it (the handshake
/// signatures are still checked by rustls' functions against the certificate's key).
#[derive(Debug)]
struct ClientVerifier {
    ca: Option<Arc<dyn ClientCertVerifier>>,
    pins: Vec<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ClientVerifier {
    fn new(cfg: &RemoteControlCfg) -> Result<ClientVerifier, RemoteError> {
        let ca = match &cfg.client_ca {
            Some(path) => {
                let bad = |reason: String| RemoteError::ClientCa {
                    path: path.clone(),
                    reason,
                };
                let mut roots = RootCertStore::empty();
                for cert in read_certs("client_ca", path)? {
                    roots.add(cert).map_err(|e| bad(e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| bad(e.to_string()))?;
                Some(verifier)
            }
            None => None,
        };
        Ok(ClientVerifier {
            ca,
            // Validated with the config.
            pins: cfg
                .client_pins
                .iter()
                .filter_map(|p| parse_pin(p))
                .collect(),
            provider: provider(),
        })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.ca.as_ref().map_or(&[], |ca| ca.root_hint_subjects())
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.pins.contains(&sha256(end_entity)) {
            return Ok(ClientCertVerified::assertion());
        }
        match &self.ca {
            Some(ca) => ca.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// rustls's ring provider, as control uses (aws-lc-rs needs cmake and more of a C toolchain to build).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::{fingerprint_sha256, parse_pin};

    #[test]
    fn pins_read_as_openssl_prints_them() {
        let fp = fingerprint_sha256(b"");
        assert_eq!(
            fp,
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
        let pin = parse_pin(&fp).unwrap();
        assert_eq!(parse_pin(&fp.replace(':', "").to_lowercase()), Some(pin));
        assert_eq!(pin[0], 0xe3);
        assert_eq!(parse_pin("E3:B0"), None);
        assert_eq!(parse_pin(&"zz".repeat(32)), None);
    }
}
