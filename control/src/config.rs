//! `control.toml`: where control listens, keeps its store, finds the dataplane and its token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::export::ExportConfig;
use crate::flowlog::FlowLogConfig;
use crate::metrics::MetricsConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address. Localhost by default: exposing the API is a deliberate choice.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Policy store: versions, draft, active pointer, audit log.
    pub store_dir: PathBuf,
    /// The dataplane's control socket: the one it reserves for control (`control_socket.reserved_path` in its
    /// config), or else the shared `policy.control_socket`.
    pub dataplane_socket: PathBuf,
    /// Bearer tokens, one `identity secret` pair per line; created (mode 0600) at first start.
    /// Default: `<store_dir>/tokens`.
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
    /// How long to wait for one dataplane answer.
    #[serde(default = "default_dp_timeout")]
    pub dataplane_timeout_ms: u64,
    /// How often control checks that the dataplane runs the active version (and pushes it if not).
    #[serde(default = "default_reconcile")]
    pub reconcile_interval_ms: u64,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub flow_log: FlowLogConfig,
    #[serde(default)]
    pub web: WebConfig,
    /// SIEM export: syslog receivers and IPFIX collectors (docs/export.md).
    #[serde(default)]
    pub export: ExportConfig,
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
        if let Err(e) = self.export.validate() {
            return invalid("export", &e.to_string());
        }
        if self.reconcile_interval_ms < 100 {
            return invalid("reconcile_interval_ms", "must be at least 100");
        }
        if self.store_dir.as_os_str().is_empty() {
            return invalid("store_dir", "must not be empty");
        }
        if self.dataplane_socket.as_os_str().is_empty() {
            return invalid("dataplane_socket", "must not be empty");
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
    }
}
