//! The TLS client control presents to a remote gateway: its client certificate, and the check of the gateway's
//! certificate against the configured CA (rustls's WebPKI verifier, with the server name) or against a pinned
//! SHA-256 of the certificate itself.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::{GatewayConfig, GatewayError};
use crate::tls::{provider, read_certs};

/// The connector and the server name to ask for, for a gateway reached over TLS.
pub fn connector(
    gw: &GatewayConfig,
    address: &str,
) -> Result<(TlsConnector, ServerName<'static>), GatewayError> {
    let problem = |field: &str, reason: String| GatewayError::Tls {
        gateway: gw.name.clone(),
        field: field.to_string(),
        reason,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| problem("address", e.to_string()))?;
    let builder = match (&gw.ca, &gw.pin) {
        (Some(ca), _) => {
            let mut roots = RootCertStore::empty();
            for cert in certs("ca", ca).map_err(|r| problem("ca", r))? {
                roots.add(cert).map_err(|e| problem("ca", e.to_string()))?;
            }
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| problem("ca", e.to_string()))?;
            builder.with_webpki_verifier(verifier)
        }
        (None, Some(pin)) => {
            let pin = super::parse_pin(pin).map_err(|r| problem("pin", r.into()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    pin,
                    provider: provider(),
                }))
        }
        (None, None) => return Err(problem("ca", "a remote gateway needs ca or pin".into())),
    };
    let (Some(cert), Some(key)) = (&gw.client_cert, &gw.client_key) else {
        return Err(problem(
            "client_cert",
            "a remote gateway needs client_cert and client_key".into(),
        ));
    };
    let chain = certs("client_cert", cert).map_err(|r| problem("client_cert", r))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| problem("client_key", e.to_string()))?;
    let client = builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| problem("client_key", e.to_string()))?;
    let name = gw
        .server_name
        .clone()
        .unwrap_or_else(|| crate::export::host_of(address).to_string());
    let server_name = ServerName::try_from(name.clone()).map_err(|_| {
        problem(
            "server_name",
            format!("{name:?} is not a valid server name"),
        )
    })?;
    Ok((TlsConnector::from(Arc::new(client)), server_name))
}

fn certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    read_certs(field, path).map_err(|e| e.to_string())
}

/// Accepts exactly the certificate whose SHA-256 is `pin` (no CA, no name: the pin is the identity), and still
/// checks that the gateway holds its key (the handshake signatures). rustls has no pinning verifier of its own;
/// this is the `ServerCertVerifier` it documents for the purpose.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if digest.as_ref() == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the gateway's certificate (SHA-256 {}) is not the pinned one",
                crate::tls::fingerprint_sha256(end_entity.as_ref())
            )))
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
