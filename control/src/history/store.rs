//! The history's SQLite database: schema (versioned by `PRAGMA user_version`), batched UPSERTs, retention, and
//! the read side.
//!
//! One row per conversation-bucket, in a `WITHOUT ROWID` table whose primary key starts with the bucket, so a
//! window is a range scan and retention deletes a key prefix. The encoding is compact: addresses as 4- or
//! 16-byte blobs, the verdict as a small integer, first and last seen as milliseconds into the bucket.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use prometheus::IntCounter;
use rusqlite::{params, Connection, OpenFlags};

use super::{Conversation, ConversationFilter, ConversationKey, Window};
use crate::store::{PRIVATE_DIR, PRIVATE_FILE};
use crate::time::unix_ms;
use protocol::Verdict;

/// How long a connection waits for another's lock (a checkpoint, a second writer such as a test's) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema this code writes and reads: 1 had no gateway and no tier; 2 adds both (as ids into `names`).
const SCHEMA_VERSION: i64 = 2;

/// The conversations table of [`SCHEMA_VERSION`]; new columns go last, so a migration copies an older table's
/// rows with `SELECT *` and the new columns' values.
const CONVERSATIONS: &str = "
CREATE TABLE conversations (
    bucket INTEGER NOT NULL,          -- bucket start, Unix seconds
    src BLOB NOT NULL,                -- 4 bytes (IPv4) or 16 (IPv6)
    dst BLOB NOT NULL,
    proto INTEGER NOT NULL,
    service INTEGER NOT NULL,
    vlan INTEGER NOT NULL,
    verdict INTEGER NOT NULL,         -- verdict_code
    rule_id INTEGER NOT NULL,
    policy_version INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,        -- milliseconds after the bucket start
    last_ms INTEGER NOT NULL,
    flows INTEGER NOT NULL,
    packets_orig INTEGER NOT NULL,
    packets_reply INTEGER NOT NULL,
    bytes_orig INTEGER NOT NULL,
    bytes_reply INTEGER NOT NULL,
    gateway INTEGER NOT NULL,         -- names.id; 0: none
    tier INTEGER NOT NULL,            -- names.id; 0: none
    PRIMARY KEY (bucket, src, dst, proto, service, vlan, verdict, rule_id, policy_version, gateway, tier)
) WITHOUT ROWID;
";

/// Gateway and tier names, stored once each (a handful of them) rather than in every row.
const NAMES: &str = "
CREATE TABLE names (
    id INTEGER PRIMARY KEY,           -- from 1
    name TEXT NOT NULL UNIQUE
);
";

/// From schema 1: the rows are kept, with no gateway and no tier (the primary key changes, so the table is
/// copied; one transaction with the version bump).
const FROM_V1: &str = "
ALTER TABLE conversations RENAME TO conversations_v1;
CREATE TABLE names (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
";
const FROM_V1_COPY: &str = "
INSERT INTO conversations SELECT *, 0, 0 FROM conversations_v1;
DROP TABLE conversations_v1;
";

const UPSERT: &str = "
INSERT INTO conversations VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
ON CONFLICT DO UPDATE SET
    first_ms = min(first_ms, excluded.first_ms),
    last_ms = max(last_ms, excluded.last_ms),
    flows = flows + excluded.flows,
    packets_orig = packets_orig + excluded.packets_orig,
    packets_reply = packets_reply + excluded.packets_reply,
    bytes_orig = bytes_orig + excluded.bytes_orig,
    bytes_reply = bytes_reply + excluded.bytes_reply
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("history database {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("history database {path}: schema version {found} is newer than this control's ({SCHEMA_VERSION})")]
    NewerSchema { path: PathBuf, found: i64 },
}

/// The verdict as stored.
pub const fn verdict_code(v: Verdict) -> u8 {
    match v {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
        Verdict::Reject => 2,
        Verdict::WouldDeny => 3,
    }
}

fn verdict_of(code: u8) -> Option<Verdict> {
    Some(match code {
        0 => Verdict::Allow,
        1 => Verdict::Deny,
        2 => Verdict::Reject,
        3 => Verdict::WouldDeny,
        _ => return None,
    })
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn addr_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

/// The writer's connection (owned by the writer thread).
pub(crate) struct Db {
    path: PathBuf,
    conn: Connection,
    /// `names`' ids, as committed.
    names: HashMap<Arc<str>, i64>,
}

impl Db {
    /// Opens or creates the database (mode 0600, in a 0700 directory when it creates one) and brings its schema
    /// to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(PRIVATE_DIR)
                .create(dir)
                .map_err(io)?;
        }
        // Created here with its mode, so SQLite (which gives its -wal and -shm files the database's mode) never
        // creates it with the umask's.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(PRIVATE_FILE)
            .open(path)
            .map_err(io)?;
        let conn = Connection::open(path).map_err(|e| sqlite(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sqlite(path, e))?;
        let mut db = Db {
            path: path.to_path_buf(),
            conn,
            names: HashMap::new(),
        };
        db.migrate()?;
        db.names = read_names(&db.conn)
            .map_err(|e| db.err(e))?
            .into_iter()
            .map(|(id, name)| (name, id))
            .collect();
        Ok(db)
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        sqlite(&self.path, e)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let c = &self.conn;
        let version: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found: version,
            });
        }
        match version {
            // auto_vacuum must be chosen before the first table exists.
            0 => c.execute_batch(&format!(
                "PRAGMA auto_vacuum = INCREMENTAL; BEGIN; {CONVERSATIONS} {NAMES} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )),
            1 => c.execute_batch(&format!(
                "BEGIN; {FROM_V1} {CONVERSATIONS} {FROM_V1_COPY} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )),
            _ => Ok(()),
        }
        .map_err(|e| self.err(e))?;
        // WAL: readers on other connections never wait for the writer; NORMAL: a power loss may lose the last
        // transactions, never corrupt the file (the flow log file is the durable record).
        c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Adds `rows` (conversation-buckets aggregated in memory) in one transaction.
    pub fn upsert<'a>(
        &mut self,
        rows: impl Iterator<Item = &'a Conversation>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |e| sqlite(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        // Names first seen in this transaction: remembered once it commits.
        let mut added: HashMap<Arc<str>, i64> = HashMap::new();
        {
            let mut stmt = tx.prepare_cached(UPSERT).map_err(e)?;
            let mut id_of = |name: &Option<Arc<str>>| -> rusqlite::Result<i64> {
                let Some(name) = name else { return Ok(0) };
                if let Some(id) = self.names.get(name).or_else(|| added.get(name)) {
                    return Ok(*id);
                }
                let id = tx.query_row(
                    "INSERT INTO names (name) VALUES (?1)
                     ON CONFLICT (name) DO UPDATE SET name = name RETURNING id",
                    [name.as_ref()],
                    |r| r.get(0),
                )?;
                added.insert(name.clone(), id);
                Ok(id)
            };
            for c in rows {
                let k = &c.key;
                let (gateway, tier) = (id_of(&k.gateway).map_err(e)?, id_of(&k.tier).map_err(e)?);
                let bucket_ms = c.bucket_unix_ms;
                stmt.execute(params![
                    (bucket_ms / 1000) as i64,
                    addr_bytes(k.src),
                    addr_bytes(k.dst),
                    k.proto,
                    k.service,
                    k.vlan,
                    verdict_code(k.verdict),
                    k.rule_id,
                    k.policy_version,
                    c.first_unix_ms.saturating_sub(bucket_ms) as i64,
                    c.last_unix_ms.saturating_sub(bucket_ms) as i64,
                    saturate(c.flows),
                    saturate(c.packets[0]),
                    saturate(c.packets[1]),
                    saturate(c.bytes[0]),
                    saturate(c.bytes[1]),
                    gateway,
                    tier,
                ])
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        self.names.extend(added);
        Ok(())
    }

    /// Drops the buckets that start `retention_ms` or more before the newest one, then the oldest buckets while
    /// the live pages exceed `max_bytes` (the newest bucket is always kept). Returns how many buckets went.
    pub fn expire(&mut self, retention_ms: u64, max_bytes: u64) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let e = |e| sqlite(&path, e);
        let Some((oldest, newest)) = extent(&self.conn).map_err(e)? else {
            return Ok(0);
        };
        let mut dropped = 0u64;
        let cutoff_s = (newest / 1000).saturating_sub(retention_ms / 1000) as i64;
        if (oldest / 1000) as i64 <= cutoff_s {
            dropped += self
                .conn
                .query_row(
                    "SELECT count(DISTINCT bucket) FROM conversations WHERE bucket <= ?1",
                    [cutoff_s],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(e)? as u64;
            self.conn
                .execute("DELETE FROM conversations WHERE bucket <= ?1", [cutoff_s])
                .map_err(e)?;
        }
        while self.live_bytes()? > max_bytes {
            let Some((oldest, newest)) = extent(&self.conn).map_err(e)? else {
                break;
            };
            if oldest == newest {
                break;
            }
            self.conn
                .execute(
                    "DELETE FROM conversations WHERE bucket = ?1",
                    [(oldest / 1000) as i64],
                )
                .map_err(e)?;
            dropped += 1;
        }
        if dropped > 0 {
            // Give the freed pages back to the file system.
            self.conn
                .execute_batch("PRAGMA incremental_vacuum")
                .map_err(e)?;
        }
        Ok(dropped)
    }

    /// Bytes of the database's pages in use (not counting free pages).
    pub fn live_bytes(&self) -> Result<u64, StoreError> {
        let q = |p: &str| -> Result<i64, StoreError> {
            self.conn
                .query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
                .map_err(|e| self.err(e))
        };
        let pages = q("page_count")? - q("freelist_count")?;
        Ok((pages.max(0) as u64) * q("page_size")? as u64)
    }

    /// Conversation-buckets stored.
    pub fn rows(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM conversations", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }
}

/// SQLite integers are signed: counts beyond `i64::MAX` are kept at it.
fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn sqlite(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// The oldest and newest bucket starts (Unix ms).
fn extent(c: &Connection) -> rusqlite::Result<Option<(u64, u64)>> {
    let (lo, hi): (Option<i64>, Option<i64>) = c.query_row(
        "SELECT min(bucket), max(bucket) FROM conversations",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(lo.zip(hi).map(|(l, h)| (l as u64 * 1000, h as u64 * 1000)))
}

/// Every stored name by id.
fn read_names(c: &Connection) -> rusqlite::Result<HashMap<i64, Arc<str>>> {
    let mut stmt = c.prepare("SELECT id, name FROM names")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, Arc::from(r.get::<_, String>(1)?)))
    })?;
    rows.collect()
}

/// Per rule id: the flows it decided and its last hit (Unix ms).
pub type RuleHits = HashMap<u32, (u64, u64)>;

/// What a [`Reader::scan`] met besides the conversations it passed on.
#[must_use]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanStats {
    /// Rows of the window skipped because this code cannot read them (written by hand, or damaged).
    pub unreadable: u64,
}

/// A read-only connection: every query of the history goes through one.
pub struct Reader {
    path: PathBuf,
    conn: Connection,
    bucket_s: u64,
    /// `bulkhead_history_unreadable_rows_total`: every scan adds the rows it skipped.
    unreadable_rows: IntCounter,
}

impl Reader {
    pub(crate) fn open(
        path: &Path,
        bucket_s: u64,
        unreadable_rows: IntCounter,
    ) -> Result<Reader, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sqlite(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sqlite(path, e))?;
        Ok(Reader {
            path: path.to_path_buf(),
            conn,
            bucket_s: bucket_s.max(1),
            unreadable_rows,
        })
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        sqlite(&self.path, e)
    }

    /// The oldest and newest bucket starts stored (Unix ms).
    pub fn extent(&self) -> Result<Option<(u64, u64)>, StoreError> {
        extent(&self.conn).map_err(|e| self.err(e))
    }

    /// The bucket starts (Unix seconds) a window covers, `[from, to)`: from the bucket `from` falls in, to the
    /// last that starts before `to`.
    fn bucket_range(&self, window: Window) -> (i64, i64) {
        let from_s = unix_ms(window.from) / 1000;
        let from_s = (from_s - from_s % self.bucket_s) as i64;
        let to_s = unix_ms(window.to).div_ceil(1000).min(i64::MAX as u64) as i64;
        (from_s, to_s)
    }

    /// Per deciding rule id: the flows it decided within `window` and its last hit (Unix ms). Reads only the
    /// columns it needs.
    pub fn rule_hits(&self, window: Window) -> Result<(RuleHits, ScanStats), StoreError> {
        let (from_s, to_s) = self.bucket_range(window);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT bucket, rule_id, last_ms, flows FROM conversations
                 WHERE bucket >= ?1 AND bucket < ?2 AND flows > 0",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params![from_s, to_s]).map_err(|e| self.err(e))?;
        let mut hits = RuleHits::new();
        let mut stats = ScanStats::default();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            // As in `scan`: a value of the wrong type or out of range makes the row unreadable, not the query.
            let decode = || -> rusqlite::Result<Option<(u32, u64, u64)>> {
                let (bucket, rule_id, last_ms, flows): (u64, u32, u64, u64) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                let last = bucket
                    .checked_mul(1000)
                    .and_then(|b| b.checked_add(last_ms));
                Ok(last.map(|last| (rule_id, flows, last)))
            };
            match decode() {
                Ok(Some((rule_id, flows, last))) => {
                    let h = hits.entry(rule_id).or_default();
                    h.0 = h.0.saturating_add(flows);
                    h.1 = h.1.max(last);
                }
                Ok(None) | Err(_) => stats.unreadable += 1,
            }
        }
        self.unreadable_rows.inc_by(stats.unreadable);
        Ok((hits, stats))
    }

    /// Calls `f` with every conversation-bucket of `window` that matches `filter`, by bucket then key. A row this
    /// code cannot read (written by hand, or damaged: an address neither 4 nor 16 bytes long, an unknown verdict,
    /// a value of the wrong type or out of range) is skipped and counted, never a failed query.
    pub fn scan(
        &self,
        window: Window,
        filter: &ConversationFilter,
        mut f: impl FnMut(&Conversation),
    ) -> Result<ScanStats, StoreError> {
        let (from_s, to_s) = self.bucket_range(window);
        // The filter's conditions go to SQLite too, so rows it rules out are never decoded here; `matches`
        // below stays the reference.
        let mut sql = String::from(
            "SELECT bucket, src, dst, proto, service, vlan, verdict, rule_id, policy_version,
                    first_ms, last_ms, flows, packets_orig, packets_reply, bytes_orig, bytes_reply, gateway, tier
             FROM conversations WHERE bucket >= ? AND bucket < ?",
        );
        let mut values: Vec<rusqlite::types::Value> = vec![from_s.into(), to_s.into()];
        let mut range = |column: &str, net: &IpNet, sql: &mut String| {
            let (lo, hi) = (addr_bytes(net.network()), addr_bytes(net.broadcast()));
            *sql += &format!("(length({column}) = ? AND {column} BETWEEN ? AND ?)");
            values.extend([(lo.len() as i64).into(), lo.into(), hi.into()]);
        };
        if let Some(n) = &filter.src {
            sql += " AND ";
            range("src", n, &mut sql);
        }
        if let Some(n) = &filter.dst {
            sql += " AND ";
            range("dst", n, &mut sql);
        }
        if let Some(n) = &filter.addr {
            sql += " AND (";
            range("src", n, &mut sql);
            sql += " OR ";
            range("dst", n, &mut sql);
            sql += ")";
        }
        for (column, value) in [
            ("proto", filter.proto.map(i64::from)),
            ("service", filter.service.map(i64::from)),
            ("vlan", filter.vlan.map(i64::from)),
            ("rule_id", filter.rule_id.map(i64::from)),
            ("policy_version", filter.policy_version.map(i64::from)),
        ] {
            if let Some(v) = value {
                sql += &format!(" AND {column} = ?");
                values.push(v.into());
            }
        }
        // A name never stored matches no row (the subquery is NULL).
        const ID_OF_NAME: &str = "(SELECT id FROM names WHERE name = ?)";
        if let Some(g) = &filter.gateway {
            // The gateway, or any member of the pair it names.
            let names: Vec<&String> = std::iter::once(g).chain(&filter.members).collect();
            let marks = vec!["?"; names.len()].join(", ");
            sql += &format!(" AND gateway IN (SELECT id FROM names WHERE name IN ({marks}))");
            values.extend(names.into_iter().map(|n| n.clone().into()));
        }
        match filter.tier.as_deref() {
            None => {}
            Some(crate::flowlog::NO_TIER) => sql += " AND tier = 0",
            Some(t) => {
                sql += &format!(" AND tier = {ID_OF_NAME}");
                values.push(t.to_string().into());
            }
        }
        if !filter.verdicts.is_empty() {
            let codes: Vec<String> = filter
                .verdicts
                .iter()
                .map(|v| verdict_code(*v).to_string())
                .collect();
            sql += &format!(" AND verdict IN ({})", codes.join(","));
        }
        let names = read_names(&self.conn).map_err(|e| self.err(e))?;
        // An id with no name (a damaged file) reads as none, like a row written before names were kept.
        let name = |id: u64| names.get(&(id as i64)).cloned();
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(values))
            .map_err(|e| self.err(e))?;
        let mut stats = ScanStats::default();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let get = |i| r.get::<_, u64>(i);
            let decode = || -> rusqlite::Result<Option<Conversation>> {
                let (Some(src), Some(dst)) = (
                    addr_of(r.get_ref(1)?.as_blob()?),
                    addr_of(r.get_ref(2)?.as_blob()?),
                ) else {
                    return Ok(None);
                };
                let Some(verdict) = verdict_of(r.get(6)?) else {
                    return Ok(None);
                };
                let Some(bucket_ms) = get(0)?.checked_mul(1000) else {
                    return Ok(None);
                };
                let (Some(first_unix_ms), Some(last_unix_ms)) = (
                    bucket_ms.checked_add(get(9)?),
                    bucket_ms.checked_add(get(10)?),
                ) else {
                    return Ok(None);
                };
                Ok(Some(Conversation {
                    key: ConversationKey {
                        src,
                        dst,
                        proto: r.get(3)?,
                        service: r.get(4)?,
                        vlan: r.get(5)?,
                        verdict,
                        rule_id: r.get(7)?,
                        policy_version: r.get(8)?,
                        gateway: name(get(16)?),
                        tier: name(get(17)?),
                    },
                    bucket_unix_ms: bucket_ms,
                    first_unix_ms,
                    last_unix_ms,
                    flows: get(11)?,
                    packets: [get(12)?, get(13)?],
                    bytes: [get(14)?, get(15)?],
                }))
            };
            // Reading a value fails only for that row's value (its type or range), so it is the row that is
            // unreadable; a failure of the query itself comes from `rows.next()` above.
            match decode() {
                Ok(Some(c)) => {
                    if filter.matches(&c.key) {
                        f(&c);
                    }
                }
                Ok(None) | Err(_) => stats.unreadable += 1,
            }
        }
        self.unreadable_rows.inc_by(stats.unreadable);
        Ok(stats)
    }
}
