//! A bed's dataplane reached over its remote listener (TLS, client certificates), as a control process on
//! another machine reaches it.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::pki::{Identity, Pki};
use crate::{Error, Result};

/// Where a bed's dataplane listens for remote control: always loopback, on a port the kernel picks.
pub const LISTEN_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The `[remote_control]` of a bed's dataplane.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Issues the dataplane's server certificate (and the clients').
    pub pki: Pki,
    /// Client certificates issued by this CA are accepted (default: `pki`'s CA); `None`: only pins.
    pub client_ca: Option<PathBuf>,
    /// SHA-256 fingerprints of client certificates accepted besides.
    pub client_pins: Vec<String>,
    /// Time for a client's TLS handshake.
    pub handshake_timeout_ms: u64,
    /// Connections served at once.
    pub max_connections: u32,
}

impl RemoteOptions {
    /// Server certificate from `pki`, clients accepted when `pki` issued their certificate.
    pub fn new(pki: Pki) -> Self {
        RemoteOptions {
            client_ca: Some(pki.ca()),
            pki,
            client_pins: Vec::new(),
            handshake_timeout_ms: 5000,
            max_connections: 16,
        }
    }
}

/// The `[remote_control]` section for a bed whose server certificate is `server`.
pub(crate) fn config_section(opts: &RemoteOptions, server: &Identity) -> String {
    let mut text = format!(
        "\n[remote_control]\nlisten = \"{}\"\ncert = {:?}\nkey = {:?}\nclient_pins = {:?}\nhandshake_timeout_ms = {}\nmax_connections = {}\n",
        SocketAddr::new(LISTEN_ADDR, 0),
        server.cert.display().to_string(),
        server.key.display().to_string(),
        opts.client_pins,
        opts.handshake_timeout_ms,
        opts.max_connections,
    );
    if let Some(ca) = &opts.client_ca {
        text += &format!("client_ca = {:?}\n", ca.display().to_string());
    }
    text
}

/// Sends `line` over TLS to `addr`, checking the dataplane's certificate against `ca` (for the IP address it
/// is reached at) and presenting `identity` (`None`: no client certificate); returns the answer line. A
/// refused handshake is an [`Error::Tls`] or an I/O error, as the client sees it.
pub fn exchange(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<&Identity>,
    line: &str,
) -> Result<String> {
    let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| tls(&e))? {
        roots.add(cert.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => {
            let certs = CertificateDer::pem_file_iter(&id.cert)
                .map_err(|e| tls(&e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls(&e))?;
            let key = PrivateKeyDer::from_pem_file(&id.key).map_err(|e| tls(&e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls(&e))?
        }
        None => builder.with_no_client_auth(),
    };
    let conn = ClientConnection::new(Arc::new(config), ServerName::IpAddress(addr.ip().into()))
        .map_err(|e| tls(&e))?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut stream = StreamOwned::new(conn, tcp);
    let mut request = line.to_string();
    request.push('\n');
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let mut reply = String::new();
    BufReader::new(&mut stream).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(Error::Tls("the dataplane closed the connection".into()));
    }
    Ok(reply)
}

/// rustls's ring provider (the dataplane's and control's).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
