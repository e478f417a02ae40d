//! `control.toml`: where control listens, keeps its store, finds the dataplane and its token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::export::ExportConfig;
use crate::flowlog::FlowLogConfig;
use crate::gateway::GatewayConfig;
use crate::history::HistoryConfig;
use crate::metrics::MetricsConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTPS listen address (plain HTTP only with `[tls] plain_http`, and then only on loopback). Localhost by
    /// default: exposing the API is a deliberate choice.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Policy store: versions, draft, active pointer, audit log.
    pub store_dir: PathBuf,
    /// The dataplane's control socket: the one it reserves for control (`control_socket.reserved_path` in its
    /// config), or else the shared `policy.control_socket`. The one gateway, named `local`; or else give
    /// `[[gateways]]`.
    #[serde(default)]
    pub dataplane_socket: Option<PathBuf>,
    /// The gateways control manages (instead of `dataplane_socket`): local sockets or remote listeners over
    /// mutual TLS.
    #[serde(default)]
    pub gateways: Vec<GatewayConfig>,
    /// Bearer tokens (hashed; see `auth::tokens`); created (mode 0600) at first start, with the first admin
    /// secret beside it in `<token_file>.initial`. Default: `<store_dir>/tokens`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// How long a client may take to send a request's headers, counted from when its connection opens or its
    /// previous answer was sent (so also how long an idle keep-alive connection stays open).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// How long a client may take to send a request's body once its headers are in (408 beyond).
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_ms: u64,
    /// Most HTTP connections open at once; more are closed as soon as accepted. Never more than half the
    /// process's open-file limit, which keeps room for control's own sockets and files.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest request body accepted, in bytes (413 beyond).
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Confirm window for `"confirm": true` commits that give no `confirm_within_s`.
    #[serde(default = "default_confirm")]
    pub confirm_timeout_s: u64,
    /// How long to wait for one dataplane answer (each gateway's default).
    #[serde(default = "default_dp_timeout")]
    pub dataplane_timeout_ms: u64,
    /// How often control checks that the dataplane runs the active version (and pushes it if not).
    #[serde(default = "default_reconcile")]
    pub reconcile_interval_ms: u64,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub flow_log: FlowLogConfig,
    /// The flow history: conversations per time bucket, kept for weeks (docs/api.md).
    #[serde(default)]
    pub history: HistoryConfig,
    #[serde(default)]
    pub web: WebConfig,
    /// SIEM export: syslog receivers and IPFIX collectors (docs/export.md).
    #[serde(default)]
    pub export: ExportConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub approvals: ApprovalsConfig,
}

/// `[tls]`: HTTPS for everything control serves.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Serve plain HTTP instead: allowed only on a loopback listen address, where no token crosses a network.
    pub plain_http: bool,
    /// The certificate chain (PEM, leaf first). Without `cert` and `key`, control serves a self-signed
    /// certificate it creates in `<store_dir>/tls/` at first start.
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that sign the client certificates control accepts (mTLS).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: whether a client must present a certificate (`required`, the default) or may
    /// (`optional`: one it presents must still be signed by `client_ca`).
    pub client_auth: Option<ClientAuth>,
}

/// Whether a client must present a certificate signed by `[tls] client_ca`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Optional,
    Required,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

impl TlsConfig {
    /// Whether a client certificate is asked for, and must be given; `None` without `client_ca`.
    pub fn client_auth(&self) -> Option<ClientAuth> {
        self.client_ca
            .as_ref()
            .map(|_| self.client_auth.unwrap_or(ClientAuth::Required))
    }
}

/// `[approvals]`: how a draft becomes a commit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// The two-person rule: a draft is submitted by its author and committed (or scheduled) by another
    /// identity. Off by default.
    pub two_person: bool,
}

/// `[web]`: the static web console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Served at `/` when it exists (no token needed: static files hold no secrets; the console asks for one).
    pub dir: PathBuf,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            dir: PathBuf::from("/usr/share/bulkhead/web"),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8180))
}
fn default_header_read_timeout() -> u64 {
    10_000
}
fn default_body_read_timeout() -> u64 {
    30_000
}
fn default_max_connections() -> usize {
    256
}
fn default_body_limit() -> usize {
    1 << 20
}
fn default_confirm() -> u64 {
    120
}
fn default_dp_timeout() -> u64 {
    10_000
}
fn default_reconcile() -> u64 {
    2_000
}

/// Longest confirm window accepted (a day): a forgotten pending commit must not revert weeks later.
pub const MAX_CONFIRM_S: u64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            let at = inner
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigError::Parse {
                path: path.to_path_buf(),
                message: if field == "." {
                    format!("{message}{at}")
                } else {
                    format!("{field}: {message}{at}")
                },
            }
        })?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field,
                message: message.to_string(),
            })
        };
        if self.body_limit_bytes < 1024 {
            return invalid(
                "body_limit_bytes",
                "must be at least 1024 (a policy document is larger)",
            );
        }
        if self.header_read_timeout_ms == 0 {
            return invalid("header_read_timeout_ms", "must be at least 1");
        }
        if self.body_read_timeout_ms == 0 {
            return invalid("body_read_timeout_ms", "must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.confirm_timeout_s == 0 || self.confirm_timeout_s > MAX_CONFIRM_S {
            return invalid("confirm_timeout_s", "must be in 1..=86400");
        }
        if self.dataplane_timeout_ms == 0 {
            return invalid("dataplane_timeout_ms", "must be at least 1");
        }
        if let Err((field, message)) = self.history.check() {
            return invalid(field, message);
        }
        if let Err(e) = self.export.validate() {
            return invalid("export", &e.to_string());
        }
        if self.reconcile_interval_ms < 100 {
            return invalid("reconcile_interval_ms", "must be at least 100");
        }
        if self.store_dir.as_os_str().is_empty() {
            return invalid("store_dir", "must not be empty");
        }
        self.check_gateways(path)?;
        if let Err((field, message)) = self.auth.check() {
            return invalid(field, message);
        }
        self.check_tls(path)
    }

    fn check_gateways(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| {
            Err(ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("{field}: {message}"),
            })
        };
        match (&self.dataplane_socket, self.gateways.is_empty()) {
            (Some(_), false) => {
                return invalid(
                    "dataplane_socket".into(),
                    "cannot be combined with [[gateways]]: give dataplane_socket (one local dataplane) or                      [[gateways]] (one or more, local or remote)"
                        .into(),
                )
            }
            (None, true) => {
                return invalid(
                    "dataplane_socket".into(),
                    "missing: give dataplane_socket (one local dataplane) or [[gateways]]".into(),
                )
            }
            (Some(s), true) if s.as_os_str().is_empty() => {
                return invalid("dataplane_socket".into(), "must not be empty".into())
            }
            _ => {}
        }
        for (i, gw) in self.gateways.iter().enumerate() {
            if let Err((field, message)) = gw.check() {
                return invalid(format!("gateways[{i}].{field}"), message);
            }
            if self.gateways[..i].iter().any(|g| g.name == gw.name) {
                return invalid(
                    format!("gateways[{i}].name"),
                    format!("{:?} is the name of an earlier gateway", gw.name),
                );
            }
            let Some(pair) = &gw.pair else { continue };
            let members = self
                .gateways
                .iter()
                .filter(|g| g.pair.as_ref() == Some(pair))
                .count();
            if members != 2 {
                return invalid(
                    format!("gateways[{i}].pair"),
                    format!(
                        "an HA pair has exactly two members; {members} gateway(s) name {pair:?}"
                    ),
                );
            }
            if self.gateways.iter().any(|g| &g.name == pair) {
                return invalid(
                    format!("gateways[{i}].pair"),
                    format!("{pair:?} is the name of a gateway: a pair needs a name of its own"),
                );
            }
        }
        Ok(())
    }

    /// The gateways to manage: `[[gateways]]`, or the one `local` gateway of `dataplane_socket`.
    pub fn gateways(&self) -> Vec<GatewayConfig> {
        match &self.dataplane_socket {
            Some(socket) => vec![GatewayConfig::local(socket.clone())],
            None => self.gateways.clone(),
        }
    }

    fn check_tls(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field, message: String| {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field,
                message,
            })
        };
        let tls = &self.tls;
        if tls.plain_http {
            if !self.listen.ip().is_loopback() {
                return invalid(
                    "tls.plain_http",
                    format!(
                        "plain HTTP is allowed only on a loopback listen address, and listen is {}: bearer \
                         tokens and the policy would cross the network in clear; remove plain_http (control then \
                         serves HTTPS) or listen on 127.0.0.1 or [::1]",
                        self.listen
                    ),
                );
            }
            if tls.cert.is_some() || tls.key.is_some() || tls.client_ca.is_some() {
                return invalid(
                    "tls.plain_http",
                    "cannot be combined with cert, key or client_ca (they need TLS)".into(),
                );
            }
        }
        if tls.cert.is_some() != tls.key.is_some() {
            return invalid(
                if tls.cert.is_some() { "tls.key" } else { "tls.cert" },
                "cert and key are given together (or neither: a self-signed certificate is created)".into(),
            );
        }
        if tls.client_auth.is_some() && tls.client_ca.is_none() {
            return invalid(
                "tls.client_auth",
                "needs client_ca, the CA that signs the accepted client certificates".into(),
            );
        }
        Ok(())
    }

    pub fn token_path(&self) -> PathBuf {
        self.token_file
            .clone()
            .unwrap_or_else(|| self.store_dir.join("tokens"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("c.toml"))
    }

    #[test]
    fn defaults_and_errors_name_the_field() {
        let c = parse("store_dir = \"/s\"\ndataplane_socket = \"/d.sock\"\n").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8180");
        assert_eq!(c.token_path(), Path::new("/s/tokens"));
        let e = parse("store_dir = \"/s\"\ndataplane_socket = \"/d\"\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") && e.contains("line 3"), "{e}");
        let e = parse("store_dir = \"/s\"\ndataplane_socket = \"/d\"\n[metrics]\npol_ms = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pol_ms"), "{e}");
        let e = parse("dataplane_socket = \"/d\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store_dir"), "{e}");
        let e = parse("store_dir = \"/s\"\n").unwrap_err().to_string();
        assert!(
            e.contains("dataplane_socket") && e.contains("[[gateways]]"),
            "{e}"
        );
        let e = parse("store_dir = \"/s\"\ndataplane_socket = \"/d\"\nconfirm_timeout_s = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("confirm_timeout_s"), "{e}");
        assert_eq!(
            (
                c.header_read_timeout_ms,
                c.body_read_timeout_ms,
                c.max_connections
            ),
            (10_000, 30_000, 256)
        );
        let e = parse("store_dir = \"/s\"\ndataplane_socket = \"/d\"\nmax_connections = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_connections"), "{e}");
        assert_eq!(c.auth.free_failures, 5);
        let e = parse("store_dir = \"/s\"\ndataplane_socket = \"/d\"\n[auth]\nfailure_delay_ms = 10\nmax_failure_delay_ms = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.max_failure_delay_ms"), "{e}");
    }

    #[test]
    fn gateways_local_and_remote() {
        let c = parse("store_dir = \"/s\"\ndataplane_socket = \"/d.sock\"\n").unwrap();
        assert_eq!(c.gateways(), [GatewayConfig::local("/d.sock".into())]);
        let pin = "ab".repeat(32);
        let two = format!(
            "store_dir = \"/s\"\n[[gateways]]\nname = \"edge-1\"\nsocket = \"/a.sock\"\n\
             [[gateways]]\nname = \"plant.b\"\naddress = \"192.0.2.7:7443\"\npin = \"{pin}\"\n\
             client_cert = \"/c.pem\"\nclient_key = \"/k.pem\"\n"
        );
        let c = parse(&two).unwrap();
        let names: Vec<String> = c.gateways().into_iter().map(|g| g.name).collect();
        assert_eq!(names, ["edge-1", "plant.b"]);
        // Both ways at once: an error naming both.
        let e = parse(&format!("dataplane_socket = \"/d\"\n{two}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dataplane_socket") && e.contains("[[gateways]]"),
            "{e}"
        );
        let bad = [
            ("name = \"\"\nsocket = \"/a\"", "gateways[0].name"),
            ("name = \"a b\"\nsocket = \"/a\"", "gateways[0].name"),
            ("name = \"a\"", "gateways[0].socket"),
            ("name = \"a\"\nsocket = \"/a\"\naddress = \"h:1\"", "gateways[0].address"),
            ("name = \"a\"\nsocket = \"/a\"\nca = \"/ca\"", "gateways[0].socket"),
            ("name = \"a\"\naddress = \"h\"\nca = \"/ca\"", "gateways[0].address"),
            ("name = \"a\"\naddress = \"h:1\"\nclient_cert = \"/c\"\nclient_key = \"/k\"", "gateways[0].ca"),
            ("name = \"a\"\naddress = \"h:1\"\npin = \"12\"\nclient_cert = \"/c\"\nclient_key = \"/k\"", "gateways[0].pin"),
            ("name = \"a\"\naddress = \"h:1\"\nca = \"/ca\"\nclient_key = \"/k\"", "gateways[0].client_cert"),
            ("name = \"a\"\naddress = \"h:1\"\nca = \"/ca\"\nclient_cert = \"/c\"\nclient_key = \"/k\"\nhost = \"x\"", "host"),
        ];
        for (entry, field) in bad {
            let e = parse(&format!("store_dir = \"/s\"\n[[gateways]]\n{entry}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{entry}: {e}");
        }
        let pairs = |p: [&str; 3]| {
            parse(&format!(
                "store_dir = \"/s\"\n[[gateways]]\nname = \"a\"\nsocket = \"/a\"\npair = \"{}\"\n\
                 [[gateways]]\nname = \"b\"\nsocket = \"/b\"\npair = \"{}\"\n\
                 [[gateways]]\nname = \"c\"\nsocket = \"/c\"\npair = \"{}\"\n",
                p[0], p[1], p[2]
            ))
        };
        let c = pairs(["ab", "ab", "c2"]).unwrap_err().to_string();
        assert!(
            c.contains("gateways[2].pair") && c.contains("exactly two"),
            "{c}"
        );
        let c = pairs(["ab", "ab", "ab"]).unwrap_err().to_string();
        assert!(c.contains("gateways[0].pair"), "{c}");
        let c = pairs(["c", "c", "x"]).unwrap_err().to_string();
        assert!(
            c.contains("gateways[0].pair") && c.contains("name of a gateway"),
            "{c}"
        );
        let c = pairs(["a b", "a b", "x"]).unwrap_err().to_string();
        assert!(c.contains("gateways[0].pair"), "{c}");
        let ok = parse(
            "store_dir = \"/s\"\n[[gateways]]\nname = \"a\"\nsocket = \"/a\"\npair = \"ab\"\n\
             [[gateways]]\nname = \"b\"\nsocket = \"/b\"\npair = \"ab\"\n",
        )
        .unwrap();
        assert!(ok
            .gateways()
            .iter()
            .all(|g| g.pair.as_deref() == Some("ab")));
        let e = parse("store_dir = \"/s\"\n[[gateways]]\nname = \"a\"\nsocket = \"/a\"\n[[gateways]]\nname = \"a\"\nsocket = \"/b\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gateways[1].name") && e.contains("earlier"),
            "{e}"
        );
    }

    #[test]
    fn plain_http_only_on_loopback_and_tls_fields_together() {
        let base = "store_dir = \"/s\"\ndataplane_socket = \"/d\"\n";
        let c = parse(base).unwrap();
        assert!(!c.tls.plain_http);
        for listen in ["127.0.0.1:1", "[::1]:1", "127.0.0.2:1"] {
            let c = parse(&format!(
                "{base}listen = \"{listen}\"\n[tls]\nplain_http = true\n"
            ))
            .unwrap();
            assert!(c.tls.plain_http, "{listen}");
        }
        for listen in ["0.0.0.0:1", "[::]:1", "192.0.2.1:1"] {
            let e = parse(&format!(
                "{base}listen = \"{listen}\"\n[tls]\nplain_http = true\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("tls.plain_http") && e.contains("loopback") && e.contains(listen),
                "{e}"
            );
        }
        let e = parse(&format!(
            "{base}[tls]\nplain_http = true\ncert = \"/c\"\nkey = \"/k\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("tls.plain_http"), "{e}");
        let e = parse(&format!("{base}[tls]\ncert = \"/c\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.key"), "{e}");
        let e = parse(&format!("{base}[tls]\nclient_auth = \"optional\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.client_auth"), "{e}");
        let e = parse(&format!(
            "{base}[tls]\nclient_ca = \"/ca\"\nclient_auth = \"sometimes\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("client_auth"), "{e}");
        let c = parse(&format!("{base}[tls]\nclient_ca = \"/ca\"\n")).unwrap();
        assert_eq!(c.tls.client_auth(), Some(ClientAuth::Required));
    }
}
