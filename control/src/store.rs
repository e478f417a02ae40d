//! The policy store: committed versions, the draft, the active pointer and the audit log, in one directory.
//!
//! ```text
//! <store_dir>/
//!   versions/0000000007.json   one immutable file per committed version: metadata + policy document
//!   draft.json                 the draft document and its revision (the ETag's number)
//!   active.json                the active version and a pending confirm deadline, if any
//!   audit.jsonl                append-only audit log, one JSON object per line
//! ```
//!
//! Every file write is atomic and durable: a temporary file is written and fsynced, renamed over the target,
//! and the directory is fsynced. A commit writes the version file first and the active pointer second, so a crash
//! between the two leaves a version newer than the active one: such an orphan is removed at load (the commit
//! never completed and was never acknowledged). Every version activation — commit, rollback, automatic revert —
//! creates a new version number, so the active version is always the newest one and version numbers the
//! dataplane sees only grow.
//!
//! Files that exist but cannot be read or parsed are errors at load, never a silent reset.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use policy::{Document, Policy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crashpoint;
use crate::export::Exporters;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt store file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content. The file is private (0600).
/// On any error the temporary file is removed, so a failed write on a full disk does not keep the disk full.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomic_with(path, bytes, crashpoint::step)
}

/// [`write_atomic`] for files outside the policy store's life (the TLS certificate): no crash points, so the
/// crash test's enumeration of durable steps does not depend on them.
pub fn write_atomic_uncounted(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomic_with(path, bytes, |_| {})
}

fn write_atomic_with(path: &Path, bytes: &[u8], step: fn(&str)) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE_FILE)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        step("before a rename");
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    step("after a rename");
    sync_dir(dir)
}

/// Store and flow-log files describe the network's weak spots: only control's own user may read them.
pub const PRIVATE_FILE: u32 = 0o600;
pub const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` (and missing parents) private, and makes an existing one private too (a store created by an
/// older version may be world-readable).
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR)).map_err(io(dir))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// How a version came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionKind {
    /// The draft, committed.
    Commit,
    /// A copy of an earlier version, activated on request.
    Rollback,
    /// A copy of the previous version, activated because a commit was not confirmed in time.
    Revert,
    /// The policy the dataplane already ran when the store was empty.
    Adopted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionMeta {
    pub version: u64,
    /// RFC 3339, UTC.
    pub created: String,
    pub author: String,
    pub comment: String,
    /// The version that was active when this one was created.
    pub parent: Option<u64>,
    pub kind: VersionKind,
    /// For rollbacks and reverts: the version whose document this one copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<u64>,
    /// Under the two-person rule: who submitted the draft that `author` approved by committing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    /// A scheduled commit: the `id` of the schedule that committed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<u64>,
}

// No deny_unknown_fields here: serde does not support it together with flatten (VersionMeta denies).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionFile {
    #[serde(flatten)]
    meta: VersionMeta,
    policy: Document,
}

/// A commit awaiting confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// Unix time in milliseconds after which the commit is reverted.
    pub deadline_unix_ms: u64,
    /// The version reinstated (as a new version) if the deadline passes.
    pub revert_to: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveFile {
    pub version: u64,
    pub pending: Option<Pending>,
}

/// A draft revision its author submitted for approval (the two-person rule): only another identity may commit
/// it, and only while the draft is still that revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// The draft revision submitted; any later edit of the draft withdraws the submission.
    pub revision: u64,
    pub submitted_by: String,
    /// RFC 3339, UTC.
    pub submitted_at: String,
    pub comment: String,
}

/// A validated draft to be committed at a given time (a change window).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledCommit {
    /// The `seq` of the audit entry that scheduled it: names it in the audit log and in the API.
    pub id: u64,
    /// Unix time in milliseconds at which it is committed.
    pub at_unix_ms: u64,
    pub scheduled_by: String,
    /// With the two-person rule: who submitted the draft revision scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    pub comment: String,
    /// The draft revision scheduled; its document is kept here, so later edits of the draft do not change what
    /// is committed.
    pub draft_revision: u64,
    pub confirm_within_s: Option<u64>,
    pub policy: Document,
    /// Set when it came due but could not be committed; it then stays, for everyone to see, until cancelled
    /// or replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftFile {
    revision: u64,
    policy: Document,
}

/// Which half of an action that changes what is (or will be) enforced an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Written before the effect: what is about to be attempted.
    Intent,
    /// Written after it: what happened (`outcome`), naming the intent by its `seq`.
    Outcome,
}

/// What became of an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The version is active in the store and the dataplane enforces it.
    Applied,
    /// Nothing took effect: the store is as it was before.
    Failed,
    /// Found unresolved after a crash or a failed append: the store or the dataplane does not have the version.
    NotApplied,
}

/// One audit entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub time: String,
    /// The token identity that made the change (`system` for automatic actions).
    pub who: String,
    /// What was done, e.g. `draft.rules.put`, `commit`, `rollback`, `revert`, `flows.kill`.
    pub action: String,
    /// The object concerned, if any (e.g. `rules/10`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub version_before: Option<u64>,
    pub version_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
    /// Set on the two entries of an action recorded as intent and outcome (commit, rollback, revert,
    /// reconcile.push, adopt); absent on single-entry actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// On an outcome entry: the `seq` of its intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// On an outcome entry: written at the next reconciliation, from what the store and the dataplane hold,
    /// because the action's own outcome entry was never written (a crash, a failed append).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}

impl AuditEntry {
    /// An entry of `who` doing `action`; `seq` and `time` are set when it is appended.
    pub fn new(who: &str, action: &str) -> AuditEntry {
        AuditEntry {
            seq: 0,
            time: String::new(),
            who: who.to_string(),
            action: action.to_string(),
            object: None,
            version_before: None,
            version_after: None,
            draft_revision: None,
            details: Value::Null,
            phase: None,
            intent: None,
            outcome: None,
            recovered: false,
        }
    }

    /// Whether this entry records the intent of an action whose outcome follows.
    pub fn is_intent(&self) -> bool {
        self.phase == Some(Phase::Intent)
    }
}

pub struct Store {
    dir: PathBuf,
    versions: BTreeMap<u64, VersionMeta>,
    active: Option<ActiveFile>,
    active_policy: Option<Policy>,
    draft: Document,
    revision: u64,
    audit_seq: u64,
    /// Intents with no outcome entry yet, by `seq`: an action in progress, or one a crash or a failed append
    /// left unresolved (reconciliation resolves those).
    open_intents: BTreeMap<u64, AuditEntry>,
    /// The last append failed: the file may end in a partial line, to be dropped before the next append.
    audit_torn: bool,
    submission: Option<Submission>,
    scheduled: Option<ScheduledCommit>,
    /// SIEM exporters of the audit stream: every appended entry is offered to them, without waiting.
    export: Arc<Exporters>,
}

impl Store {
    /// Opens (or, when the directory holds nothing yet, initialises) the store.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(dir)?;
        create_private_dir(&dir.join("versions"))?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            versions: BTreeMap::new(),
            active: None,
            active_policy: None,
            draft: Document::default(),
            revision: 0,
            audit_seq: 0,
            open_intents: BTreeMap::new(),
            audit_torn: false,
            submission: None,
            scheduled: None,
            export: Exporters::none(),
        };
        store.load()?;
        Ok(store)
    }

    /// Offers every audit entry appended from now on to `export`.
    pub fn export_audit_to(&mut self, export: Arc<Exporters>) {
        self.export = export;
    }

    fn versions_dir(&self) -> PathBuf {
        self.dir.join("versions")
    }
    fn version_path(&self, v: u64) -> PathBuf {
        self.versions_dir().join(format!("{v:010}.json"))
    }
    fn draft_path(&self) -> PathBuf {
        self.dir.join("draft.json")
    }
    fn active_path(&self) -> PathBuf {
        self.dir.join("active.json")
    }
    fn audit_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }
    fn submission_path(&self) -> PathBuf {
        self.dir.join("submission.json")
    }
    fn scheduled_path(&self) -> PathBuf {
        self.dir.join("scheduled-commit.json")
    }

    fn load(&mut self) -> Result<(), StoreError> {
        let vdir = self.versions_dir();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&vdir).map_err(io(&vdir))? {
            let entry = entry.map_err(io(&vdir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A write interrupted before its rename: never part of the store.
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            let number = name
                .strip_suffix(".json")
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| StoreError::Corrupt {
                    path: path.clone(),
                    reason: "unexpected file in versions/ (expected NNNNNNNNNN.json)".into(),
                })?;
            files.push((number, path));
        }
        for tmp in [
            ".draft.json.tmp",
            ".active.json.tmp",
            ".submission.json.tmp",
            ".scheduled-commit.json.tmp",
        ] {
            let p = self.dir.join(tmp);
            if p.exists() {
                std::fs::remove_file(&p).map_err(io(&p))?;
            }
        }
        let active: Option<ActiveFile> = read_json(&self.active_path())?;
        let active_v = active.as_ref().map_or(0, |a| a.version);
        for (number, path) in files {
            if number > active_v {
                // Written by a commit that crashed before it moved the active pointer.
                std::fs::remove_file(&path).map_err(io(&path))?;
                sync_dir(&vdir)?;
                continue;
            }
            let file: VersionFile = read_json(&path)?.ok_or_else(|| StoreError::Corrupt {
                path: path.clone(),
                reason: "vanished while loading".into(),
            })?;
            if file.meta.version != number {
                return Err(StoreError::Corrupt {
                    path,
                    reason: format!("holds version {}", file.meta.version),
                });
            }
            let policy = Policy::new(file.policy).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: format!("the policy does not validate: {e}"),
            })?;
            if number == active_v {
                self.active_policy = Some(policy);
            }
            self.versions.insert(number, file.meta);
        }
        if let Some(a) = &active {
            if self.active_policy.is_none() {
                return Err(StoreError::Corrupt {
                    path: self.active_path(),
                    reason: format!("active version {} has no file in versions/", a.version),
                });
            }
            if let Some(p) = &a.pending {
                if !self.versions.contains_key(&p.revert_to) {
                    return Err(StoreError::Corrupt {
                        path: self.active_path(),
                        reason: format!("pending revert_to {} does not exist", p.revert_to),
                    });
                }
            }
        }
        self.active = active;
        match read_json::<DraftFile>(&self.draft_path())? {
            Some(d) => {
                self.draft = d.policy;
                self.revision = d.revision;
            }
            None if self.active.is_none() => {
                self.revision = 1;
                self.write_draft()?;
            }
            None => {
                return Err(StoreError::Corrupt {
                    path: self.draft_path(),
                    reason: "missing, but the store has an active version".into(),
                })
            }
        }
        self.submission = read_json(&self.submission_path())?;
        self.scheduled = read_json(&self.scheduled_path())?;
        self.audit_seq = self.repair_audit()?;
        self.open_intents =
            self.audit(0, usize::MAX)?
                .into_iter()
                .fold(BTreeMap::new(), |mut open, e| {
                    match (e.phase, e.intent) {
                        (Some(Phase::Intent), _) => {
                            open.insert(e.seq, e);
                        }
                        (Some(Phase::Outcome), Some(i)) => {
                            open.remove(&i);
                        }
                        _ => {}
                    }
                    open
                });
        Ok(())
    }

    /// Drops a torn last line (a crash during an append) and returns the last sequence number.
    fn repair_audit(&self) -> Result<u64, StoreError> {
        let path = self.audit_path();
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(0);
        };
        let keep = match bytes.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        if keep < bytes.len() {
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            f.set_len(keep as u64).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
        }
        let text = String::from_utf8_lossy(&bytes[..keep]);
        let mut last = 0;
        for (i, line) in text.lines().enumerate() {
            let e: AuditEntry = serde_json::from_str(line).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: format!("line {}: {e}", i + 1),
            })?;
            last = e.seq;
        }
        Ok(last)
    }

    // ---- reading ----

    pub fn draft(&self) -> &Document {
        &self.draft
    }
    pub fn revision(&self) -> u64 {
        self.revision
    }
    pub fn active(&self) -> Option<&ActiveFile> {
        self.active.as_ref()
    }
    pub fn active_version(&self) -> Option<u64> {
        self.active.as_ref().map(|a| a.version)
    }
    pub fn active_policy(&self) -> Option<&Policy> {
        self.active_policy.as_ref()
    }
    pub fn versions(&self) -> impl DoubleEndedIterator<Item = &VersionMeta> {
        self.versions.values()
    }
    pub fn meta(&self, v: u64) -> Option<&VersionMeta> {
        self.versions.get(&v)
    }
    pub fn next_version(&self) -> u64 {
        self.versions.keys().next_back().map_or(1, |v| v + 1)
    }

    /// The submission awaiting approval, if it is still of the current draft revision.
    pub fn submission(&self) -> Option<&Submission> {
        self.submission
            .as_ref()
            .filter(|s| s.revision == self.revision)
    }
    pub fn scheduled(&self) -> Option<&ScheduledCommit> {
        self.scheduled.as_ref()
    }

    /// Intents with no outcome yet, oldest first.
    pub fn open_intents(&self) -> impl Iterator<Item = &AuditEntry> {
        self.open_intents.values()
    }

    /// The document of a committed version.
    pub fn version_document(&self, v: u64) -> Result<Option<Document>, StoreError> {
        if !self.versions.contains_key(&v) {
            return Ok(None);
        }
        let path = self.version_path(v);
        let file: Option<VersionFile> = read_json(&path)?;
        Ok(file.map(|f| f.policy))
    }

    pub fn audit(&self, since: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let path = self.audit_path();
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
            let e: AuditEntry = serde_json::from_str(line).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: format!("line {}: {e}", i + 1),
            })?;
            if e.seq > since {
                out.push(e);
            }
        }
        // The newest `limit` entries, oldest first.
        let skip = out.len().saturating_sub(limit);
        Ok(out.split_off(skip))
    }

    // ---- writing ----

    fn write_draft(&self) -> Result<(), StoreError> {
        let file = DraftFile {
            revision: self.revision,
            policy: self.draft.clone(),
        };
        write_atomic(&self.draft_path(), &to_bytes(&file))
    }

    /// Replaces the draft; returns the new revision.
    pub fn set_draft(&mut self, doc: Document) -> Result<u64, StoreError> {
        let before = (std::mem::replace(&mut self.draft, doc), self.revision);
        self.revision += 1;
        if let Err(e) = self.write_draft() {
            (self.draft, self.revision) = before;
            return Err(e);
        }
        // A submission is of one revision: the edit withdraws it. Were its removal to fail, its revision no
        // longer matches and it is ignored all the same.
        let _ = self.set_submission(None);
        Ok(self.revision)
    }

    /// Records (or, with `None`, withdraws) the submission awaiting approval.
    pub fn set_submission(&mut self, s: Option<Submission>) -> Result<(), StoreError> {
        write_or_remove(&self.submission_path(), s.as_ref())?;
        self.submission = s;
        Ok(())
    }

    /// Records (or, with `None`, removes) the scheduled commit.
    pub fn set_scheduled(&mut self, s: Option<ScheduledCommit>) -> Result<(), StoreError> {
        write_or_remove(&self.scheduled_path(), s.as_ref())?;
        self.scheduled = s;
        Ok(())
    }

    /// Writes a new version file (not yet active).
    pub fn add_version(&mut self, meta: VersionMeta, policy: &Policy) -> Result<(), StoreError> {
        let v = meta.version;
        let file = VersionFile {
            meta: meta.clone(),
            policy: policy.document().clone(),
        };
        write_atomic(&self.version_path(v), &to_bytes(&file))?;
        self.versions.insert(v, meta);
        Ok(())
    }

    /// Removes a version that never became active (its push failed).
    pub fn discard_version(&mut self, v: u64) -> Result<(), StoreError> {
        if self.active_version() == Some(v) {
            return Ok(());
        }
        let path = self.version_path(v);
        crashpoint::step("before removing a version");
        std::fs::remove_file(&path).map_err(io(&path))?;
        sync_dir(&self.versions_dir())?;
        self.versions.remove(&v);
        Ok(())
    }

    /// Moves the active pointer (the version file must exist).
    pub fn set_active(&mut self, active: ActiveFile, policy: Policy) -> Result<(), StoreError> {
        write_atomic(&self.active_path(), &to_bytes(&active))?;
        self.active = Some(active);
        self.active_policy = Some(policy);
        Ok(())
    }

    /// Back to "nothing committed" (undoing a first commit whose push failed).
    pub fn clear_active(&mut self) -> Result<(), StoreError> {
        let path = self.active_path();
        crashpoint::step("before removing the active pointer");
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io { path, source: e }),
        }
        self.active = None;
        self.active_policy = None;
        Ok(())
    }

    /// Appends one audit entry durably (the caller fills everything but `seq` and `time`).
    pub fn append_audit(&mut self, mut entry: AuditEntry) -> Result<AuditEntry, StoreError> {
        entry.seq = self.audit_seq + 1;
        entry.time = crate::time::rfc3339(std::time::SystemTime::now());
        if self.audit_torn {
            self.repair_audit()?;
            self.audit_torn = false;
        }
        let path = self.audit_path();
        let mut line = serde_json::to_vec(&entry).expect("an audit entry serializes");
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(PRIVATE_FILE)
            .open(&path)
            .map_err(io(&path))?;
        let before = f.metadata().map_err(io(&path))?.len();
        if crashpoint::reached() {
            let _ = f
                .write_all(&line[..line.len() / 2])
                .and_then(|()| f.sync_all());
            crashpoint::crash("in the middle of an audit line");
        }
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_all()) {
            // A partial line (a full disk) must not stay: the next append would be glued onto it and the log
            // would no longer load. If even the truncation fails, the repair at the next start drops it.
            self.audit_torn = f.set_len(before).and_then(|()| f.sync_all()).is_err();
            return Err(io(&path)(e));
        }
        if self.audit_seq == 0 {
            sync_dir(&self.dir)?;
        }
        self.audit_seq = entry.seq;
        crashpoint::step("after an audit line");
        self.export.offer_audit(&entry);
        Ok(entry)
    }

    /// Records durably what is about to be attempted, before any of it is done; answers the intent's `seq`.
    /// If this fails nothing may be done.
    pub fn append_intent(&mut self, mut entry: AuditEntry) -> Result<u64, StoreError> {
        entry.phase = Some(Phase::Intent);
        let entry = self.append_audit(entry)?;
        let seq = entry.seq;
        self.open_intents.insert(seq, entry);
        Ok(seq)
    }

    /// Records what became of the intent `intent` (its who, action, object and versions are repeated, so the
    /// entry reads alone). An intent whose outcome cannot be written stays open and is resolved later.
    pub fn append_outcome(
        &mut self,
        intent: u64,
        outcome: Outcome,
        recovered: bool,
    ) -> Result<(), StoreError> {
        self.append_outcome_with(intent, outcome, recovered, Value::Null)
    }

    /// [`append_outcome`](Self::append_outcome) with `details` (e.g. what each gateway answered).
    pub fn append_outcome_with(
        &mut self,
        intent: u64,
        outcome: Outcome,
        recovered: bool,
        details: Value,
    ) -> Result<(), StoreError> {
        let Some(open) = self.open_intents.get(&intent) else {
            return Ok(());
        };
        let mut entry = AuditEntry::new(&open.who, &open.action);
        entry.object = open.object.clone();
        entry.version_before = open.version_before;
        entry.version_after = open.version_after;
        entry.phase = Some(Phase::Outcome);
        entry.intent = Some(intent);
        entry.outcome = Some(outcome);
        entry.recovered = recovered;
        entry.details = details;
        self.append_audit(entry)?;
        self.open_intents.remove(&intent);
        Ok(())
    }
}

/// Writes `v` to `path` atomically, or removes `path` (durably) when `v` is `None`.
fn write_or_remove<T: Serialize>(path: &Path, v: Option<&T>) -> Result<(), StoreError> {
    match v {
        Some(v) => write_atomic(path, &to_bytes(v)),
        None => match std::fs::remove_file(path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(path)(e)),
        },
    }
}

fn to_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("store files serialize");
    b.push(b'\n');
    b
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StoreError> {
    let Some(bytes) = read_if_exists(path)? else {
        return Ok(None);
    };
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("at {}: {}", e.path(), e.inner()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bh-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn meta(v: u64) -> VersionMeta {
        VersionMeta {
            version: v,
            created: "t".into(),
            author: "a".into(),
            comment: String::new(),
            parent: v.checked_sub(1).filter(|p| *p > 0),
            kind: VersionKind::Commit,
            source: None,
            submitted_by: None,
            scheduled: None,
        }
    }

    #[test]
    fn orphans_are_dropped_and_corruption_is_an_error() {
        let d = dir("orphan");
        let mut s = Store::open(&d).unwrap();
        assert_eq!(s.revision(), 1);
        let p = Policy::new(Document::default()).unwrap();
        s.add_version(meta(1), &p).unwrap();
        s.set_active(
            ActiveFile {
                version: 1,
                pending: None,
            },
            p.clone(),
        )
        .unwrap();
        s.add_version(meta(2), &p).unwrap();
        drop(s);
        let s = Store::open(&d).unwrap();
        assert_eq!(s.active_version(), Some(1));
        assert_eq!(s.next_version(), 2);
        assert!(!d.join("versions/0000000002.json").exists());
        std::fs::write(d.join("draft.json"), "{\"revision\": 3, \"policy\": {").unwrap();
        let e = Store::open(&d).err().unwrap().to_string();
        assert!(e.contains("draft.json") && e.contains("corrupt"), "{e}");
        std::fs::remove_file(d.join("draft.json")).unwrap();
        let e = Store::open(&d).err().unwrap().to_string();
        assert!(e.contains("missing"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn torn_audit_line_is_dropped() {
        let d = dir("audit");
        let mut s = Store::open(&d).unwrap();
        let e = AuditEntry::new("admin", "x");
        s.append_audit(e.clone()).unwrap();
        drop(s);
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join("audit.jsonl"))
            .unwrap();
        f.write_all(b"{\"seq\":2,\"ti").unwrap();
        let mut s = Store::open(&d).unwrap();
        assert_eq!(s.append_audit(e).unwrap().seq, 2);
        assert_eq!(s.audit(0, 10).unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A tmpfs of `kib` KiB mounted for one test and unmounted on drop: a disk that really fills up. Mounting needs
    /// root, as the whole suite does; a failed mount fails the test.
    struct SmallDisk(PathBuf);

    impl SmallDisk {
        fn new(name: &str, kib: u32) -> SmallDisk {
            let d = dir(name);
            std::fs::create_dir_all(&d).unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
                .arg(&d)
                .status()
                .unwrap()
                .success();
            assert!(ok, "cannot mount a tmpfs on {} (run as root)", d.display());
            SmallDisk(d)
        }

        /// Fills the disk with one file (whose removal frees the space again).
        fn fill(&self) -> PathBuf {
            let filler = self.0.join("filler");
            let mut f = File::create(&filler).unwrap();
            let block = [0u8; 4096];
            while f.write_all(&block).is_ok() {}
            filler
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn entry(action: &str) -> AuditEntry {
        AuditEntry::new("admin", action)
    }

    #[test]
    fn a_failed_audit_append_leaves_no_partial_line() {
        let disk = SmallDisk::new("audit-full", 64);
        let d = disk.0.join("store");
        let mut s = Store::open(&d).unwrap();
        // Grow the log until the next line would cross a page boundary: tmpfs then writes the part that fits in
        // the last page and fails on the rest.
        let path = d.join("audit.jsonl");
        loop {
            s.append_audit(entry("kill_flows")).unwrap();
            let size = std::fs::metadata(&path).unwrap().len();
            let line = size / s.audit_seq;
            if size % 4096 + line > 4096 && size % 4096 < 4096 - 16 {
                break;
            }
        }
        let before = std::fs::read(&path).unwrap();
        let filler = disk.fill();
        let err = s.append_audit(entry("kill_flows")).unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "a partial line stayed"
        );
        std::fs::remove_file(filler).unwrap();
        let seq = s.audit_seq;
        assert_eq!(s.append_audit(entry("commit")).unwrap().seq, seq + 1);
        drop(s);
        let s = Store::open(&d).unwrap();
        let all = s.audit(0, 1000).unwrap();
        assert_eq!(all.len() as u64, seq + 1);
        assert_eq!(all.last().unwrap().action, "commit");
    }

    #[test]
    fn failed_atomic_writes_leave_no_temporary_file() {
        let disk = SmallDisk::new("draft-full", 64);
        let target = disk.0.join("draft.json");
        let err = write_atomic(&target, &vec![b' '; 1 << 20]).unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        assert!(!disk.0.join(".draft.json.tmp").exists());
        // The space is free again for the next write.
        write_atomic(&target, &vec![b' '; 32 << 10]).unwrap();
        // A rename that fails (the target is a non-empty directory) also cleans up.
        let blocked = disk.0.join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomic(&blocked, b"{}").is_err());
        assert!(!disk.0.join(".blocked.tmp").exists());
    }

    #[test]
    fn store_files_are_private() {
        let d = dir("modes");
        std::fs::create_dir_all(&d).unwrap();
        // A store directory made world-readable by an older version is tightened.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = Store::open(&d).unwrap();
        let p = Policy::new(Document::default()).unwrap();
        s.add_version(meta(1), &p).unwrap();
        s.set_active(
            ActiveFile {
                version: 1,
                pending: None,
            },
            p,
        )
        .unwrap();
        s.set_draft(Document::default()).unwrap();
        s.append_audit(entry("commit")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join("versions")), 0o700);
        for f in [
            "draft.json",
            "active.json",
            "audit.jsonl",
            "versions/0000000001.json",
        ] {
            assert_eq!(mode(&d.join(f)), 0o600, "{f}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
