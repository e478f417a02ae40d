//! The token store: bearer tokens, each with an id, an identity (what the audit log records as "who"), a role, a
//! creation time, an optional expiry, and its last use. The file (mode 0600, written atomically) holds only the
//! SHA-256 of each secret.
//!
//! Why SHA-256 and not a password hash: every secret control makes is 32 random bytes (256 bits), so there is no
//! dictionary to try and a brute force of the hash is as hopeless as one of the secret itself; a slow password
//! hash (argon2, bcrypt) only helps low-entropy secrets, and would cost every request milliseconds of CPU.
//! (Secrets migrated from the old file format were at least 16 characters of the operator's choosing: rotating
//! them gives them the full entropy.)
//!
//! At first start the file is created with one `admin` token, whose secret is written to
//! [`initial_secret_path`] (mode 0600) so the operator can sign in; that file is removed as soon as the token is
//! rotated or revoked. A file in the old format (`identity secret` per line, secrets in clear) is migrated at
//! start: each line becomes an `admin` token with the same secret (hashed), and the file is replaced.
//!
//! Last use is kept in memory (an atomic per token, so authenticating needs only a read lock) and written with
//! the next change of the file, by [`Tokens::flush_last_use`] (which `main` calls every
//! `auth.last_use_flush_s`), and at shutdown: never a disk write per request.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::role::Role;
use crate::time;

/// The first line of the file's JSON (`format`).
pub const FORMAT: &str = "bulkhead.tokens/v1";
/// Most tokens kept (revoked and expired ones included, so their use is reported as such).
pub const MAX_TOKENS: usize = 1000;
pub const MAX_IDENTITY: usize = 64;
pub const MAX_DESCRIPTION: usize = 200;

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
    #[error("no token {0}")]
    Unknown(String),
    #[error("token {0} is revoked")]
    Revoked(String),
    #[error("token {0} has expired")]
    Expired(String),
    #[error("token {0} is the last active admin token: create another admin token first")]
    LastAdmin(String),
    #[error("{MAX_TOKENS} tokens are kept, none of them revoked or expired: revoke one first")]
    TooMany,
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// The credentials of an `Authorization: Bearer <token>` header value. The scheme is matched in any case, as
/// RFC 7235 says.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Where the first admin secret is left for the operator at first start.
pub fn initial_secret_path(token_file: &Path) -> PathBuf {
    let mut name = token_file.file_name().unwrap_or_default().to_os_string();
    name.push(".initial");
    token_file.with_file_name(name)
}

/// A token as the file and the API list it (never its secret; the file also keeps its hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub id: String,
    pub identity: String,
    pub role: Role,
    /// The tiers the token may edit in the draft (its role's edit rights apply there only); `None`: every
    /// part of the document, as for every token before tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub created_unix_ms: u64,
    #[serde(default)]
    pub expires_unix_ms: Option<u64>,
    #[serde(default)]
    pub rotated_unix_ms: Option<u64>,
    #[serde(default)]
    pub revoked_unix_ms: Option<u64>,
    #[serde(default)]
    pub last_used_unix_ms: Option<u64>,
}

/// Whether a token can be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Active,
    Expired,
    Revoked,
}

impl Record {
    pub fn state(&self, now_ms: u64) -> State {
        if self.revoked_unix_ms.is_some() {
            State::Revoked
        } else if self.expires_unix_ms.is_some_and(|e| now_ms >= e) {
            State::Expired
        } else {
            State::Active
        }
    }

    /// The API's view: times in RFC 3339, and the state.
    pub fn to_json(&self, now_ms: u64) -> serde_json::Value {
        let t = |ms: Option<u64>| ms.map(|ms| time::rfc3339(time::from_unix_ms(ms)));
        serde_json::json!({
            "id": self.id,
            "identity": self.identity,
            "role": self.role,
            "tiers": self.tiers,
            "description": self.description,
            "state": self.state(now_ms),
            "created_at": t(Some(self.created_unix_ms)),
            "expires_at": t(self.expires_unix_ms),
            "rotated_at": t(self.rotated_unix_ms),
            "revoked_at": t(self.revoked_unix_ms),
            "last_used_at": t(self.last_used_unix_ms),
        })
    }
}

/// One line of the file: the record and its secret's hash.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    #[serde(flatten)]
    record: Record,
    sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    format: String,
    tokens: Vec<Stored>,
}

#[derive(Debug)]
struct Entry {
    record: Record,
    hash: [u8; 32],
    /// Unix ms of the last successful use (0: never), newer than `record.last_used_unix_ms` until saved.
    last_used: AtomicU64,
}

impl Clone for Entry {
    fn clone(&self) -> Self {
        Entry {
            record: self.record.clone(),
            hash: self.hash,
            last_used: AtomicU64::new(self.last_used.load(Ordering::Relaxed)),
        }
    }
}

impl Entry {
    fn record(&self) -> Record {
        let mut r = self.record.clone();
        let used = self.last_used.load(Ordering::Relaxed);
        if used > 0 {
            r.last_used_unix_ms = Some(used);
        }
        r
    }
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: String,
    pub identity: String,
    pub role: Role,
    /// The tiers the token may edit (`None`: all of the document).
    pub tiers: Option<Vec<String>>,
    pub expires_unix_ms: Option<u64>,
    /// The hash of the secret presented (to check it again later; the secret itself is not kept).
    pub hash: [u8; 32],
}

/// Why a presented secret was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Expired,
    Revoked,
}

/// A change of the token file, prepared (and checked) but not made yet: the audit log records it first.
pub struct Change {
    entries: Vec<Entry>,
    /// The token concerned, as it is after the change.
    pub record: Record,
    /// The new secret (create, rotate): shown once to the caller.
    pub secret: Option<String>,
}

/// What a new token is.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub identity: String,
    pub role: Role,
    pub tiers: Option<Vec<String>>,
    pub description: String,
    pub expires_unix_ms: Option<u64>,
}

pub struct Tokens {
    path: PathBuf,
    entries: Vec<Entry>,
    /// Told after every change of the file, so what was opened with a token (event streams) can end.
    changes: tokio::sync::watch::Sender<()>,
    /// A last use is newer than the file.
    unsaved_use: AtomicBool,
    /// One writer of the file at a time (a flush runs under the read lock).
    writing: Mutex<()>,
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn random_hex(n: usize) -> Result<String, TokenError> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| TokenError::Io {
            path: PathBuf::from("/dev/urandom"),
            source,
        })?;
    Ok(hex(&bytes))
}

/// A new secret: 32 random bytes from the kernel, hex-encoded.
fn new_secret() -> Result<String, TokenError> {
    random_hex(32)
}

fn now_ms() -> u64 {
    time::unix_ms(SystemTime::now())
}

/// An identity: 1 to 64 printable ASCII characters, no spaces (it is written to logs and the audit log).
pub fn check_identity(identity: &str) -> Result<(), TokenError> {
    let invalid = |message: &str| {
        Err(TokenError::Invalid {
            field: "identity",
            message: message.into(),
        })
    };
    if identity.is_empty() || identity.len() > MAX_IDENTITY {
        return invalid("must be 1 to 64 characters");
    }
    if !identity.bytes().all(|b| b.is_ascii_graphic()) {
        return invalid("must be printable ASCII without spaces");
    }
    Ok(())
}

/// A token's tiers: 1 to 64 distinct tier names (as the policy writes them: 1 to 64 of A-Z a-z 0-9 _ . -). A
/// tier that does not exist (yet) is allowed: the token may create it.
pub fn check_tiers(tiers: &[String]) -> Result<(), TokenError> {
    let invalid = |message: String| {
        Err(TokenError::Invalid {
            field: "tiers",
            message,
        })
    };
    if tiers.is_empty() || tiers.len() > 64 {
        return invalid(
            "must list 1 to 64 tier names (omit it for a token that edits every tier)".into(),
        );
    }
    for (i, t) in tiers.iter().enumerate() {
        let ok = !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return invalid(format!(
                "{:?} is not a tier name: use 1 to 64 characters from A-Z a-z 0-9 _ . -",
                t.chars().take(80).collect::<String>()
            ));
        }
        if tiers[..i].contains(t) {
            return invalid(format!("{t:?} is listed twice"));
        }
    }
    Ok(())
}

/// A description: at most 200 characters, none of them a control character.
pub fn check_description(description: &str) -> Result<(), TokenError> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(TokenError::Invalid {
            field: "description",
            message: "must be at most 200 characters".into(),
        });
    }
    if description.chars().any(char::is_control) {
        return Err(TokenError::Invalid {
            field: "description",
            message: "must not contain control characters".into(),
        });
    }
    Ok(())
}

impl Tokens {
    /// Loads the token file: creates it (with an `admin` token, its secret in [`initial_secret_path`]) when
    /// absent, migrates it when in the old format. Answers how many tokens were migrated (0: none).
    pub fn load_or_create(path: &Path) -> Result<(Tokens, usize), TokenError> {
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
                if text.trim_start().starts_with('{') {
                    Ok((Tokens::parse(path, &text)?, 0))
                } else {
                    let tokens = Tokens::migrate(path, &text)?;
                    tokens.save(&tokens.entries)?;
                    let n = tokens.entries.len();
                    Ok((tokens, n))
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(err)?;
                }
                let mut tokens = Tokens::new(path, Vec::new());
                let change = tokens.prepare_create(NewToken {
                    identity: "admin".into(),
                    role: Role::Admin,
                    tiers: None,
                    description: "created at first start".into(),
                    expires_unix_ms: None,
                })?;
                let secret = change.secret.clone().unwrap_or_default();
                write_private(&initial_secret_path(path), &format!("{secret}\n"))?;
                tokens.apply(change)?;
                Ok((tokens, 0))
            }
            Err(e) => Err(err(e)),
        }
    }

    fn new(path: &Path, entries: Vec<Entry>) -> Tokens {
        Tokens {
            path: path.to_path_buf(),
            entries,
            changes: tokio::sync::watch::Sender::new(()),
            unsaved_use: AtomicBool::new(false),
            writing: Mutex::new(()),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Tokens, TokenError> {
        let malformed = |reason: String| TokenError::Malformed {
            path: path.to_path_buf(),
            line: 0,
            reason,
        };
        let file: TokenFile = serde_json::from_str(text).map_err(|e| TokenError::Malformed {
            path: path.to_path_buf(),
            line: e.line(),
            reason: e.to_string(),
        })?;
        if file.format != FORMAT {
            return Err(malformed(format!(
                "format {:?}: expected {FORMAT:?}",
                file.format
            )));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(file.tokens.len());
        for (i, stored) in file.tokens.into_iter().enumerate() {
            let at = |reason: String| malformed(format!("tokens[{i}]: {reason}"));
            let hash = unhex(&stored.sha256)
                .ok_or_else(|| at("sha256: expected 64 hexadecimal digits".into()))?;
            check_identity(&stored.record.identity).map_err(|e| at(e.to_string()))?;
            if let Some(tiers) = &stored.record.tiers {
                check_tiers(tiers).map_err(|e| at(e.to_string()))?;
            }
            if entries.iter().any(|e| e.record.id == stored.record.id) {
                return Err(at(format!("id {} listed twice", stored.record.id)));
            }
            let used = stored.record.last_used_unix_ms.unwrap_or(0);
            entries.push(Entry {
                record: stored.record,
                hash,
                last_used: AtomicU64::new(used),
            });
        }
        if !entries.iter().any(|e| e.record.role == Role::Admin) {
            return Err(malformed("no admin token in the file".into()));
        }
        Ok(Tokens::new(path, entries))
    }

    /// The old format: `identity secret` per line (`#` comments), every identity all-powerful. Each line becomes
    /// an `admin` token with the same secret.
    fn migrate(path: &Path, text: &str) -> Result<Tokens, TokenError> {
        let now = now_ms();
        let mut entries: Vec<Entry> = Vec::new();
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
            check_identity(who).map_err(|e| malformed(&e.to_string()))?;
            if entries.iter().any(|e| e.record.identity == who) {
                return Err(malformed("identity listed twice"));
            }
            entries.push(Entry {
                record: Record {
                    id: random_hex(8)?,
                    identity: who.to_string(),
                    role: Role::Admin,
                    tiers: None,
                    description: "migrated from the identity-secret token file".into(),
                    created_unix_ms: now,
                    expires_unix_ms: None,
                    rotated_unix_ms: None,
                    revoked_unix_ms: None,
                    last_used_unix_ms: None,
                },
                hash: sha256(secret),
                last_used: AtomicU64::new(0),
            });
        }
        if entries.is_empty() {
            return Err(TokenError::Malformed {
                path: path.to_path_buf(),
                line: 0,
                reason: "no token in the file".into(),
            });
        }
        Ok(Tokens::new(path, entries))
    }

    /// Writes `entries` (with their latest last use) to the file, atomically.
    fn save(&self, entries: &[Entry]) -> Result<(), TokenError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.unsaved_use.store(false, Ordering::Relaxed);
        let file = TokenFile {
            format: FORMAT.into(),
            tokens: entries
                .iter()
                .map(|e| Stored {
                    record: e.record(),
                    sha256: hex(&e.hash),
                })
                .collect(),
        };
        let mut text = serde_json::to_string_pretty(&file).expect("tokens serialize");
        text.push('\n');
        let written = write_private(&self.path, &text);
        if written.is_err() {
            self.unsaved_use.store(true, Ordering::Relaxed);
        }
        written
    }

    /// The token `presented` belongs to, if it can be used now; its use is noted. Every hash is compared, in
    /// constant time each.
    pub fn authenticate(&self, presented: &str) -> Result<Caller, Refusal> {
        let hash = sha256(presented);
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&hash)) {
                found = Some(e);
            }
        }
        let e = found.ok_or(Refusal::Unknown)?;
        let now = now_ms();
        match e.record.state(now) {
            State::Revoked => return Err(Refusal::Revoked),
            State::Expired => return Err(Refusal::Expired),
            State::Active => {}
        }
        e.last_used.store(now, Ordering::Relaxed);
        self.unsaved_use.store(true, Ordering::Relaxed);
        Ok(Caller {
            token_id: e.record.id.clone(),
            identity: e.record.identity.clone(),
            role: e.record.role,
            tiers: e.record.tiers.clone(),
            expires_unix_ms: e.record.expires_unix_ms,
            hash,
        })
    }

    /// Whether the token of `caller` still stands as it did (same secret, not revoked, not expired).
    pub fn still_valid(&self, caller: &Caller) -> bool {
        let now = now_ms();
        self.entries.iter().any(|e| {
            e.record.id == caller.token_id
                && bool::from(e.hash.ct_eq(&caller.hash))
                && e.record.state(now) == State::Active
        })
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Vec<Record> {
        self.entries.iter().map(Entry::record).collect()
    }

    /// Checks a new token and prepares its creation.
    pub fn prepare_create(&self, new: NewToken) -> Result<Change, TokenError> {
        check_identity(&new.identity)?;
        check_description(&new.description)?;
        if let Some(tiers) = &new.tiers {
            check_tiers(tiers)?;
        }
        let now = now_ms();
        if new.expires_unix_ms.is_some_and(|e| e <= now) {
            return Err(TokenError::Invalid {
                field: "expires_at",
                message: "must be in the future".into(),
            });
        }
        let mut entries = self.entries.clone();
        if entries.len() >= MAX_TOKENS {
            // Make room by forgetting the oldest token that can no longer be used.
            let gone = entries
                .iter()
                .position(|e| e.record.state(now) != State::Active)
                .ok_or(TokenError::TooMany)?;
            entries.remove(gone);
        }
        let secret = new_secret()?;
        let record = Record {
            id: random_hex(8)?,
            identity: new.identity,
            role: new.role,
            tiers: new.tiers,
            description: new.description,
            created_unix_ms: now,
            expires_unix_ms: new.expires_unix_ms,
            rotated_unix_ms: None,
            revoked_unix_ms: None,
            last_used_unix_ms: None,
        };
        entries.push(Entry {
            record: record.clone(),
            hash: sha256(&secret),
            last_used: AtomicU64::new(0),
        });
        Ok(Change {
            entries,
            record,
            secret: Some(secret),
        })
    }

    fn position(&self, id: &str) -> Result<usize, TokenError> {
        self.entries
            .iter()
            .position(|e| e.record.id == id)
            .ok_or_else(|| TokenError::Unknown(id.to_string()))
    }

    /// Prepares a new secret for token `id` (the old one stops working when the change is applied).
    pub fn prepare_rotate(&self, id: &str) -> Result<Change, TokenError> {
        let i = self.position(id)?;
        let now = now_ms();
        match self.entries[i].record.state(now) {
            State::Revoked => return Err(TokenError::Revoked(id.into())),
            State::Expired => return Err(TokenError::Expired(id.into())),
            State::Active => {}
        }
        let secret = new_secret()?;
        let mut entries = self.entries.clone();
        entries[i].hash = sha256(&secret);
        entries[i].record.rotated_unix_ms = Some(now);
        Ok(Change {
            record: entries[i].record(),
            entries,
            secret: Some(secret),
        })
    }

    /// Prepares the revocation of token `id`; refused for the last active admin token.
    pub fn prepare_revoke(&self, id: &str) -> Result<Change, TokenError> {
        let i = self.position(id)?;
        let now = now_ms();
        match self.entries[i].record.state(now) {
            State::Revoked => return Err(TokenError::Revoked(id.into())),
            State::Expired | State::Active => {}
        }
        let is_active_admin =
            |e: &Entry| e.record.role == Role::Admin && e.record.state(now) == State::Active;
        if is_active_admin(&self.entries[i])
            && !self
                .entries
                .iter()
                .any(|e| e.record.id != id && is_active_admin(e))
        {
            return Err(TokenError::LastAdmin(id.into()));
        }
        let mut entries = self.entries.clone();
        entries[i].record.revoked_unix_ms = Some(now);
        Ok(Change {
            record: entries[i].record(),
            entries,
            secret: None,
        })
    }

    /// Makes a prepared change: writes the file, then uses the new tokens. Uses noted since it was prepared are
    /// kept.
    pub fn apply(&mut self, mut change: Change) -> Result<(), TokenError> {
        for e in &mut change.entries {
            if let Some(now) = self.entries.iter().find(|o| o.record.id == e.record.id) {
                let used = now.last_used.load(Ordering::Relaxed);
                e.last_used.fetch_max(used, Ordering::Relaxed);
            }
        }
        self.save(&change.entries)?;
        self.entries = change.entries;
        self.changes.send_replace(());
        self.forget_initial_secret();
        Ok(())
    }

    /// Removes the first-start secret file once its token is rotated or revoked.
    fn forget_initial_secret(&self) {
        let path = initial_secret_path(&self.path);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let caller = self.authenticate_quietly(text.trim());
        if !caller {
            if let Err(e) = std::fs::remove_file(&path) {
                eprintln!("bulkhead-control: cannot remove {}: {e}", path.display());
            }
        }
    }

    /// Whether `secret` belongs to an active token (not noted as a use).
    fn authenticate_quietly(&self, secret: &str) -> bool {
        let hash = sha256(secret);
        let now = now_ms();
        self.entries
            .iter()
            .any(|e| bool::from(e.hash.ct_eq(&hash)) && e.record.state(now) == State::Active)
    }

    /// Writes the last uses to the file if any is newer than it; answers whether it wrote.
    pub fn flush_last_use(&self) -> Result<bool, TokenError> {
        if !self.unsaved_use.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.save(&self.entries)?;
        Ok(true)
    }

    /// Changes after every change of the file: whoever holds a token checks it again then.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.changes.subscribe()
    }
}

/// Writes `text` to `path` atomically, mode 0600 from the start (the temporary file is created 0600 before
/// anything is written into it): temp file, fsync, rename, directory fsync.
fn write_private(path: &Path, text: &str) -> Result<(), TokenError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
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
    std::fs::rename(&tmp, path).map_err(|source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| TokenError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests;
