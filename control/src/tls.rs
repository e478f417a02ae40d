//! HTTPS: the rustls server configuration control serves with, from `[tls]`.
//!
//! - `cert` and `key` configured: those files (PEM).
//! - Neither: a self-signed certificate in `<store_dir>/tls/` (`cert.pem`, and `key.pem` with mode 0600), created
//!   at first start and reused afterwards, the way appliances do; clients pin its SHA-256 fingerprint or trust the
//!   certificate file itself. Its names are localhost, 127.0.0.1, ::1, the host's name and the listen address when
//!   it is a specific one.
//! - `client_ca`: client certificates (mTLS) signed by that CA are asked for; with `client_auth = "required"` a
//!   client without one is refused during the handshake.
//!
//! Only HTTP/1.1 is offered (ALPN), as the listener serves no other. [`Tls::reload`] (on SIGHUP) reads the
//! certificate and key files again and serves them to new connections, so a rotated certificate needs no restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use serde_json::{json, Value};

use crate::config::{ClientAuth, Config};
use crate::store::{create_private_dir, write_atomic_uncounted, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{field} {path}: {reason}")]
    Pem {
        field: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("tls.cert and tls.key: {0}")]
    Unusable(rustls::Error),
    #[error("tls.client_ca {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("cannot create a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("self-signed certificate: {0}")]
    Store(#[from] StoreError),
}

impl TlsError {
    /// Whether the error is in a file the config names (exit code 2, like other config errors), rather than in
    /// creating the self-signed certificate.
    pub fn is_config(&self) -> bool {
        !matches!(self, TlsError::Generate(_) | TlsError::Store(_))
    }
}

/// How control serves HTTPS.
pub struct Tls {
    pub server: Arc<ServerConfig>,
    /// The served certificate (the leaf's PEM file).
    pub cert_path: PathBuf,
    key_path: PathBuf,
    /// SHA-256 of the served certificate's DER at start, as `AB:CD:...`.
    pub fingerprint_sha256: String,
    current: Arc<Current>,
    /// Whether it is control's own self-signed certificate, and whether this start created it.
    pub self_signed: Option<Created>,
    pub client_auth: Option<ClientAuth>,
}

/// Whether the self-signed certificate was created by this start or found from an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Now,
    Earlier,
}

impl Tls {
    /// What `config` serves with: `None` for plain HTTP. Creates the self-signed certificate when needed.
    pub fn start(config: &Config) -> Result<Option<Tls>, TlsError> {
        if config.tls.plain_http {
            return Ok(None);
        }
        let (cert_path, key_path, self_signed) = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone(), None),
            _ => {
                let (cert, key) = self_signed_paths(&config.store_dir);
                let created = ensure_self_signed(&cert, &key, config.listen)?;
                (cert, key, Some(created))
            }
        };
        let (certified, fingerprint_sha256) = certified_key(&cert_path, &key_path)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(certified))));
        let server = server_config(config, current.clone())?;
        Ok(Some(Tls {
            server,
            cert_path,
            key_path,
            fingerprint_sha256,
            current,
            self_signed,
            client_auth: config.tls.client_auth(),
        }))
    }

    /// Checks the files `config` names (and an existing self-signed certificate) without creating anything.
    pub fn check(config: &Config) -> Result<(), TlsError> {
        if config.tls.plain_http {
            return Ok(());
        }
        let (cert, key) = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => self_signed_paths(&config.store_dir),
        };
        if config.tls.cert.is_some() || cert.exists() {
            certified_key(&cert, &key)?;
        }
        if let Some(ca) = &config.tls.client_ca {
            client_verifier(ca, config.tls.client_auth())?;
        }
        Ok(())
    }

    /// Reads the certificate and key files again and serves them to new connections (connections open keep
    /// theirs); the new certificate's fingerprint. On an error the served certificate stays as it was.
    pub fn reload(&self) -> Result<String, TlsError> {
        let (certified, fingerprint) = certified_key(&self.cert_path, &self.key_path)?;
        *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
        Ok(fingerprint)
    }

    /// For the `ready` line.
    pub fn to_json(&self) -> Value {
        json!({
            "fingerprint_sha256": self.fingerprint_sha256,
            "cert": self.cert_path,
            "self_signed": self.self_signed.is_some(),
            "client_auth": self.client_auth.map(ClientAuth::as_str),
        })
    }
}

/// Where control keeps its self-signed certificate and key.
pub fn self_signed_paths(store_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = store_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// SHA-256 of `der`, as upper-case hex pairs joined by colons (as `openssl x509 -fingerprint -sha256` shows it).
pub fn fingerprint_sha256(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Creates the self-signed certificate unless both files exist. The key is written first and the certificate last,
/// so a start interrupted in between creates both again.
fn ensure_self_signed(cert: &Path, key: &Path, listen: SocketAddr) -> Result<Created, TlsError> {
    if cert.exists() && key.exists() {
        return Ok(Created::Earlier);
    }
    if let Some(dir) = cert.parent() {
        create_private_dir(dir)?;
    }
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = rustix::system::uname().nodename().to_str() {
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_string());
        }
    }
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bulkhead-control");
    // Valid from yesterday (clocks differ a little) for ten years.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key_pair = rcgen::KeyPair::generate()?;
    let certificate = params.self_signed(&key_pair)?;
    write_atomic_uncounted(key, key_pair.serialize_pem().as_bytes())?;
    write_atomic_uncounted(cert, certificate.pem().as_bytes())?;
    Ok(Created::Now)
}

pub(crate) fn read_certs(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |reason: String| TlsError::Pem {
        field,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The certificate chain and key from their files, checked to belong together, and the leaf's fingerprint.
fn certified_key(cert_path: &Path, key_path: &Path) -> Result<(CertifiedKey, String), TlsError> {
    let certs = read_certs("tls.cert", cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Pem {
        field: "tls.key",
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let fingerprint = fingerprint_sha256(&certs[0]);
    let certified = CertifiedKey::from_der(certs, key, &provider()).map_err(TlsError::Unusable)?;
    Ok((certified, fingerprint))
}

/// The certificate served to new connections.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn server_config(config: &Config, current: Arc<Current>) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Unusable)?;
    let builder = match &config.tls.client_ca {
        Some(ca) => {
            builder.with_client_cert_verifier(client_verifier(ca, config.tls.client_auth())?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_cert_resolver(current);
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

fn client_verifier(
    ca: &Path,
    auth: Option<ClientAuth>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs("tls.client_ca", ca)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    if auth == Some(ClientAuth::Optional) {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|e| TlsError::ClientCa {
        path: ca.to_path_buf(),
        reason: e.to_string(),
    })
}

/// rustls's ring provider (also the syslog exporters' TLS client's). rustls deprecates it for lacking
/// post-quantum key exchange, which only aws-lc-rs offers; that one needs cmake and more of a C toolchain to
/// build, so control keeps ring's classical groups.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_like_openssl() {
        // SHA-256 of the empty string.
        assert_eq!(
            fingerprint_sha256(b""),
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }
}
