//! Certificates for the dataplane's remote listener, made by running the `openssl` commands of
//! `docs/remote-gateways.md` exactly as they stand there (each block after a `<!-- certs: NAME -->` marker),
//! so the tests that use them also test the documentation. Needs `openssl`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{check, Error, Result};

/// A certificate and its key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA in a directory of its own, and the certificates it issued there.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// Makes a new CA in `dir` (created if needed).
    pub fn new(dir: impl Into<PathBuf>) -> Result<Pki> {
        let pki = Pki { dir: dir.into() };
        std::fs::create_dir_all(&pki.dir)?;
        pki.run("ca", &[])?;
        Ok(pki)
    }

    /// The CA certificate: a dataplane's `client_ca`, and what a client checks a dataplane's certificate with.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA's own certificate and key, used as a client identity: a self-signed certificate.
    pub fn self_signed(&self) -> Identity {
        Identity {
            cert: self.ca(),
            key: self.dir.join("ca.key"),
        }
    }

    /// A server certificate for a dataplane named `name` reached at `addr`, valid `days` from now.
    pub fn server(&self, name: &str, addr: std::net::IpAddr, days: i32) -> Result<Identity> {
        self.issue("server", name, &[("ADDR", addr.to_string())], days)
    }

    /// A client certificate named `name`, valid `days` from now (negative: expired already).
    pub fn client(&self, name: &str, days: i32) -> Result<Identity> {
        self.issue("client", name, &[], days)
    }

    /// The SHA-256 fingerprint of `name`'s certificate as openssl prints it (`AB:CD:...`), for `client_pins`.
    pub fn fingerprint(&self, name: &str) -> Result<String> {
        let out = self.run("fingerprint", &[("NAME", name.to_string())])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .split_once('=')
            .map(|(_, fp)| fp.to_string())
            .ok_or_else(|| Error::Protocol(format!("openssl fingerprint output: {text:?}")))
    }

    fn issue(
        &self,
        block: &str,
        name: &str,
        vars: &[(&str, String)],
        days: i32,
    ) -> Result<Identity> {
        let mut all = vec![("NAME", name.to_string()), ("DAYS", days.to_string())];
        all.extend(vars.iter().cloned());
        self.run(block, &all)?;
        Ok(Identity {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        })
    }

    /// Runs the documentation's block `name` with `sh -e` in the CA's directory.
    fn run(&self, name: &str, vars: &[(&str, String)]) -> Result<std::process::Output> {
        let script = doc_block(name)?;
        let out = Command::new("sh")
            .args(["-ec", &script])
            .current_dir(&self.dir)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .map_err(|source| Error::Spawn {
                cmd: format!("sh (docs/remote-gateways.md, {name})"),
                source,
            })?;
        check(&format!("docs/remote-gateways.md block {name:?}"), out)
    }
}

/// The documentation whose commands make the certificates.
pub fn doc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/remote-gateways.md")
}

/// The shell block after `<!-- certs: NAME -->` in [`doc`].
fn doc_block(name: &str) -> Result<String> {
    let text = std::fs::read_to_string(doc())?;
    let marker = format!("<!-- certs: {name} -->\n```sh\n");
    let start = text
        .find(&marker)
        .map(|i| i + marker.len())
        .ok_or_else(|| Error::Protocol(format!("no block {name:?} in {}", doc().display())))?;
    let len = text[start..]
        .find("```")
        .ok_or_else(|| Error::Protocol(format!("block {name:?} is not closed")))?;
    Ok(text[start..start + len].to_string())
}
