//! Bearer tokens. The token file holds one `identity secret` pair per line (mode 0600); the identity is what the
//! audit log records as "who". At first start the file is created with one identity, `admin`, and a random
//! secret. Comparison is constant-time so a client cannot learn a secret byte by byte from response times.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {reason}")]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: mode {mode:o} lets others read the tokens; chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The credentials of an `Authorization: Bearer <token>` header value. The scheme is matched in any case, as
/// RFC 7235 says.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[derive(Debug, Clone)]
pub struct Tokens {
    path: PathBuf,
    entries: Vec<(String, String)>,
    /// Told after every change of a secret, so what was opened with the old one (event streams) can end.
    changes: tokio::sync::watch::Sender<()>,
}

/// 32 random bytes from the kernel, hex-encoded.
fn new_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Tokens {
    /// Loads the token file, creating it (with an `admin` token) when absent.
    pub fn load_or_create(path: &Path) -> Result<Tokens, TokenError> {
        let err = |source| TokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mode = std::fs::metadata(path).map_err(err)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(TokenError::Permissions {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                Tokens::parse(path, &text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(err)?;
                }
                let tokens = Tokens {
                    path: path.to_path_buf(),
                    entries: vec![("admin".into(), new_secret().map_err(err)?)],
                    changes: tokio::sync::watch::Sender::new(()),
                };
                tokens.save()?;
                Ok(tokens)
            }
            Err(e) => Err(err(e)),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Tokens, TokenError> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = |reason: &str| TokenError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                reason: reason.into(),
            };
            let (who, secret) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| malformed("expected `identity secret`"))?;
            let secret = secret.trim();
            if secret.len() < 16 {
                return Err(malformed("secret shorter than 16 characters"));
            }
            if entries.iter().any(|(w, _)| w == who) {
                return Err(malformed("identity listed twice"));
            }
            entries.push((who.to_string(), secret.to_string()));
        }
        if entries.is_empty() {
            return Err(TokenError::Malformed {
                path: path.to_path_buf(),
                line: 0,
                reason: "no token in the file".into(),
            });
        }
        Ok(Tokens {
            path: path.to_path_buf(),
            entries,
            changes: tokio::sync::watch::Sender::new(()),
        })
    }

    fn save(&self) -> Result<(), TokenError> {
        let text: String = self
            .entries
            .iter()
            .map(|(w, s)| format!("{w} {s}\n"))
            .collect();
        // Create the temporary file 0600 before any secret is written into it.
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp",
            self.path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let err = |source| TokenError::Io {
            path: tmp.clone(),
            source,
        };
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(text.as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|source| TokenError::Io {
            path: self.path.clone(),
            source,
        })?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| TokenError::Io {
                path: dir.to_path_buf(),
                source,
            })
    }

    /// The identity a presented secret belongs to. Every entry is compared, in constant time each.
    pub fn identify(&self, presented: &str) -> Option<String> {
        let mut found = None;
        for (who, secret) in &self.entries {
            if bool::from(secret.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(who.clone());
            }
        }
        found
    }

    /// Gives `who` a new secret (the old one stops working at once) and returns it.
    pub fn rotate(&mut self, who: &str) -> Result<String, TokenError> {
        let secret = new_secret().map_err(|source| TokenError::Io {
            path: PathBuf::from("/dev/urandom"),
            source,
        })?;
        let mut next = self.clone();
        match next.entries.iter_mut().find(|(w, _)| w == who) {
            Some(e) => e.1 = secret.clone(),
            None => next.entries.push((who.to_string(), secret.clone())),
        }
        next.save()?;
        *self = next;
        self.changes.send_replace(());
        Ok(secret)
    }

    /// Changes after every rotation: whoever holds a secret checks it again then.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for header in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc "] {
            assert_eq!(bearer(header), Some("abc"), "{header}");
        }
        for header in ["Basic abc", "Bearerabc", "Bearer", "abc"] {
            assert_eq!(bearer(header), None, "{header}");
        }
    }

    #[test]
    fn created_private_identified_rotated() {
        let d = std::env::temp_dir().join(format!("bh-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let path = d.join("tokens");
        let mut t = Tokens::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let secret = text.split_whitespace().nth(1).unwrap().to_string();
        assert_eq!(t.identify(&secret).as_deref(), Some("admin"));
        assert_eq!(t.identify("nope"), None);
        let new = t.rotate("admin").unwrap();
        assert_eq!(t.identify(&secret), None);
        let again = Tokens::load_or_create(&path).unwrap();
        assert_eq!(again.identify(&new).as_deref(), Some("admin"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Tokens::load_or_create(&path),
            Err(TokenError::Permissions { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }
}
