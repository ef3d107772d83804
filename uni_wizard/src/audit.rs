//! The audit store: an append-only, SHA-256 hash-chained provenance log in SQLite.
//!
//! Every record stores `prev_hash` (the `hash` of the record before it, 64 zeros for the first)
//! and `hash`, the SHA-256 of a canonical encoding of all its other columns plus `prev_hash`
//! (see [`Row::hash`]). [`AuditStore::verify`] walks the records in `seq` order and names the
//! first one that does not hold up:
//!
//! - a byte of a stored record changed: its hash no longer matches (`hash mismatch`);
//! - a record deleted: the next one's `prev_hash` no longer links, and its `seq` skips;
//! - records reordered: `seq` is hashed too, so the moved records no longer match or link;
//! - records cut off the end: the `head` kept in `meta` (updated in the same transaction as
//!   each append) names a record the chain no longer reaches;
//! - a signed approval token used twice (its `used_tokens` row deleted so it worked again): two
//!   records carry the same token nonce in their approvals;
//! - a `used_tokens` row deleted: a record's approval names a nonce that is not spent.
//!
//! Triggers refuse `UPDATE` and `DELETE` on `records`, which stops accidents; they are not the
//! tamper evidence (anyone with the file can drop them). The chain is. Someone who can rewrite
//! the whole file can also recompute the whole chain: anchor the head hash that `verify`
//! reports somewhere else (a ticket, another host) when that matters.
//!
//! Durability: the database is in WAL mode with `synchronous=FULL`, so a committed append has
//! reached the disk before [`ProvenanceLog::append`] returns; Sovereign mode relies on that.
//!
//! Concurrency: one connection behind a `Mutex`. Each call holds it for a few short statements
//! (an append is one small transaction and one fsync), which is acceptable on the async runtime
//! at the call rates a harness sees; a busy file (another process writing) waits up to
//! `busy_timeout` (5 s) and then fails with E3008.
//!
//! The same file holds `used_tokens`, the nonces of signed approval tokens already spent
//! (see [`crate::tokens`]), so a token is single-use across processes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::approval::Approval;
use crate::error::{Error, ErrorCode, Result};
use crate::provenance::{ProvenanceLog, Record};

/// The schema version kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    parent_id     TEXT,
    session       TEXT NOT NULL,
    house         TEXT NOT NULL,
    mode          TEXT NOT NULL,
    node          TEXT NOT NULL,
    tool          TEXT NOT NULL,
    target        TEXT NOT NULL,
    read_only     INTEGER NOT NULL,
    dry_run       INTEGER NOT NULL,
    ok            INTEGER NOT NULL,
    error_code    TEXT,
    args_sha256   TEXT NOT NULL,
    result_sha256 TEXT,
    started_ms    INTEGER NOT NULL,
    ended_ms      INTEGER NOT NULL,
    duration_us   INTEGER NOT NULL,
    approvals     TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_session_target ON records (session, target, seq);
CREATE TABLE IF NOT EXISTS used_tokens (
    nonce       TEXT PRIMARY KEY,
    tool        TEXT NOT NULL,
    args_sha256 TEXT NOT NULL,
    expires_ms  INTEGER NOT NULL,
    used_ms     INTEGER NOT NULL,
    request_id  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
";

const COLUMNS: &str = "seq, id, parent_id, session, house, mode, node, tool, target, read_only, dry_run, ok, \
     error_code, args_sha256, result_sha256, started_ms, ended_ms, duration_us, approvals, prev_hash, hash";

/// A record as stored: every column, in the order hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Record id.
    pub id: String,
    /// Parent call id.
    pub parent_id: Option<String>,
    /// Session.
    pub session: String,
    /// House, as text.
    pub house: String,
    /// Mode, as text.
    pub mode: String,
    /// Node.
    pub node: String,
    /// Tool.
    pub tool: String,
    /// Target.
    pub target: String,
    /// Read-only tool.
    pub read_only: bool,
    /// Dry run.
    pub dry_run: bool,
    /// Succeeded.
    pub ok: bool,
    /// Error code on failure.
    pub error_code: Option<String>,
    /// Argument hash.
    pub args_sha256: String,
    /// Result hash.
    pub result_sha256: Option<String>,
    /// Start (ms since epoch).
    pub started_ms: i64,
    /// End (ms since epoch).
    pub ended_ms: i64,
    /// Duration in microseconds.
    pub duration_us: i64,
    /// Approvals as canonical JSON text.
    pub approvals: String,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// This record's hash (not part of what is hashed).
    #[serde(skip)]
    pub hash: String,
}

impl Row {
    fn from_record(r: &Record, seq: i64, prev_hash: &str) -> Row {
        let mut row = Row {
            seq,
            id: r.id.clone(),
            parent_id: r.parent_id.clone(),
            session: r.session.clone(),
            house: r.house.as_str().to_owned(),
            mode: r.mode.as_str().to_owned(),
            node: r.node.clone(),
            tool: r.tool.clone(),
            target: r.target.clone(),
            read_only: r.read_only,
            dry_run: r.dry_run,
            ok: r.ok,
            error_code: r.error_code.clone(),
            args_sha256: r.args_sha256.clone(),
            result_sha256: r.result_sha256.clone(),
            started_ms: r.started_ms as i64,
            ended_ms: r.ended_ms as i64,
            duration_us: r.duration_us as i64,
            approvals: serde_json::to_string(&r.approvals).unwrap_or_else(|_| "[]".into()),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        row.hash = row.hash();
        row
    }

    /// SHA-256 (hex) of the canonical encoding: the JSON object of every column but `hash`, in
    /// declaration order (serde serialises struct fields in order, so the text is fixed).
    pub fn hash(&self) -> String {
        // A struct of strings, integers and booleans always serialises.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            seq: row.get(0)?,
            id: row.get(1)?,
            parent_id: row.get(2)?,
            session: row.get(3)?,
            house: row.get(4)?,
            mode: row.get(5)?,
            node: row.get(6)?,
            tool: row.get(7)?,
            target: row.get(8)?,
            read_only: row.get(9)?,
            dry_run: row.get(10)?,
            ok: row.get(11)?,
            error_code: row.get(12)?,
            args_sha256: row.get(13)?,
            result_sha256: row.get(14)?,
            started_ms: row.get(15)?,
            ended_ms: row.get(16)?,
            duration_us: row.get(17)?,
            approvals: row.get(18)?,
            prev_hash: row.get(19)?,
            hash: row.get(20)?,
        })
    }

    /// The domain record, or `None` when a stored field does not parse (a tampered row).
    pub fn to_record(&self) -> Option<Record> {
        Some(Record {
            id: self.id.clone(),
            seq: u64::try_from(self.seq).ok()?,
            parent_id: self.parent_id.clone(),
            session: self.session.clone(),
            house: self.house.parse().ok()?,
            mode: self.mode.parse().ok()?,
            node: self.node.clone(),
            tool: self.tool.clone(),
            target: self.target.clone(),
            read_only: self.read_only,
            dry_run: self.dry_run,
            ok: self.ok,
            error_code: self.error_code.clone(),
            args_sha256: self.args_sha256.clone(),
            result_sha256: self.result_sha256.clone(),
            approvals: serde_json::from_str::<Vec<Approval>>(&self.approvals).ok()?,
            started_ms: u64::try_from(self.started_ms).ok()?,
            ended_ms: u64::try_from(self.ended_ms).ok()?,
            duration_us: u64::try_from(self.duration_us).ok()?,
        })
    }
}

/// One entry as `audit show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The record.
    #[serde(flatten)]
    pub record: Record,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// The first record that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// Its `seq`.
    pub seq: i64,
    /// Its id.
    pub id: String,
    /// What is wrong with it.
    pub problem: String,
}

/// What [`AuditStore::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// Hash of the last record (anchor it elsewhere to detect a rewritten file).
    pub head: Option<String>,
    /// The first broken record; `None` when the chain holds.
    pub broken: Option<Broken>,
}

impl Verification {
    /// Whether the chain holds.
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// The hash-chained SQLite provenance log. See the module docs.
pub struct AuditStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn unavailable(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ProvenanceUnavailable, format!("audit store {}: {what}: {e}", path.display()))
        .with_details(json!({ "path": path.display().to_string(), "reason": e.to_string() }))
}

impl AuditStore {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// E3008 when the file cannot be opened or its schema is newer than this build.
    pub fn open(path: impl AsRef<Path>) -> Result<AuditStore> {
        Self::open_with(path.as_ref(), false)
    }

    /// Opens an existing store for reading only (`audit verify`, `audit show`); every write
    /// through it fails with E3008.
    ///
    /// # Errors
    /// E3008 when the file cannot be opened.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<AuditStore> {
        Self::open_with(path.as_ref(), true)
    }

    fn open_with(path: &Path, read_only: bool) -> Result<AuditStore> {
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(path, flags).map_err(|e| unavailable(path, "cannot open", e))?;
        let setup = |conn: &Connection| -> rusqlite::Result<i64> {
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            if !read_only {
                conn.pragma_update(None, "journal_mode", "WAL")?;
            }
            conn.pragma_update(None, "synchronous", "FULL")?;
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if !read_only && version < SCHEMA_VERSION {
                conn.execute_batch(SCHEMA)?;
                conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            Ok(version.max(if read_only { 0 } else { SCHEMA_VERSION }))
        };
        let version = setup(&conn).map_err(|e| unavailable(path, "cannot set up", e))?;
        if version > SCHEMA_VERSION {
            return Err(unavailable(
                path,
                "schema is newer than this build",
                format!("user_version {version} > {SCHEMA_VERSION}"),
            ));
        }
        Ok(AuditStore { path: path.to_path_buf(), conn: Mutex::new(conn) })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append_row(&self, record: &Record) -> rusqlite::Result<i64> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let last: Option<(i64, String)> = tx
            .query_row("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (seq, prev) = last.map_or((1, GENESIS.to_owned()), |(s, h)| (s + 1, h));
        let row = Row::from_record(record, seq, &prev);
        tx.execute(
            &format!("INSERT INTO records ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21)"),
            params![
                row.seq,
                row.id,
                row.parent_id,
                row.session,
                row.house,
                row.mode,
                row.node,
                row.tool,
                row.target,
                row.read_only,
                row.dry_run,
                row.ok,
                row.error_code,
                row.args_sha256,
                row.result_sha256,
                row.started_ms,
                row.ended_ms,
                row.duration_us,
                row.approvals,
                row.prev_hash,
                row.hash
            ],
        )?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('head', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![format!("{seq} {} {}", row.id, row.hash)],
        )?;
        tx.commit()?;
        Ok(seq)
    }

    fn query_one(&self, sql: &str, p: impl rusqlite::Params) -> Option<Record> {
        let conn = self.lock();
        let row = conn.query_row(sql, p, Row::read).optional();
        match row {
            Ok(r) => r.and_then(|r| r.to_record()),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "audit store read failed");
                None
            }
        }
    }

    /// Marks a signed approval token's nonce as spent.
    ///
    /// # Errors
    /// E2003 when the nonce was already used; E3008 when the store cannot be written.
    pub fn consume_nonce(
        &self,
        nonce: &str,
        tool: &str,
        args_sha256: &str,
        expires_ms: u64,
        request_id: &str,
    ) -> Result<()> {
        let conn = self.lock();
        let n = conn
            .execute(
                "INSERT INTO used_tokens (nonce, tool, args_sha256, expires_ms, used_ms, request_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(nonce) DO NOTHING",
                params![nonce, tool, args_sha256, expires_ms as i64, crate::provenance::now_ms() as i64, request_id],
            )
            .map_err(|e| unavailable(&self.path, "cannot record a used approval token", e))?;
        if n == 0 {
            return Err(Error::new(ErrorCode::ApprovalInvalid, "approval refused: this token was already used")
                .with_details(json!({ "reason": "token already used", "nonce": nonce })));
        }
        Ok(())
    }

    /// Records in `seq` order, optionally of one session, newest `limit` when given.
    ///
    /// # Errors
    /// E3008 when the store cannot be read or holds a record that does not parse.
    pub fn show(&self, session: Option<&str>, limit: Option<usize>) -> Result<Vec<Entry>> {
        let conn = self.lock();
        let limit = limit.map_or(-1, |l| l as i64);
        let sql = format!(
            "SELECT * FROM (SELECT {COLUMNS} FROM records WHERE (?1 IS NULL OR session = ?1)
             ORDER BY seq DESC LIMIT ?2) ORDER BY seq"
        );
        let read = || -> rusqlite::Result<Vec<Row>> {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params![session, limit], Row::read)?;
            rows.collect()
        };
        let rows = read().map_err(|e| unavailable(&self.path, "cannot read", e))?;
        rows.into_iter()
            .map(|row| {
                let record = row.to_record().ok_or_else(|| {
                    unavailable(&self.path, "unreadable record", format!("seq {} id {}", row.seq, row.id))
                })?;
                Ok(Entry { record, prev_hash: row.prev_hash, hash: row.hash })
            })
            .collect()
    }

    /// Walks the chain in `seq` order and returns the first record that breaks it.
    ///
    /// # Errors
    /// E3008 when the store cannot be read at all.
    pub fn verify(&self) -> Result<Verification> {
        let conn = self.lock();
        let walk = || -> rusqlite::Result<Verification> {
            let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM records ORDER BY seq"))?;
            let mut rows = stmt.query([])?;
            let mut prev_hash = GENESIS.to_owned();
            let mut prev_seq = 0i64;
            let mut count = 0u64;
            let mut last: Option<(i64, String, String)> = None;
            let mut nonces: std::collections::HashMap<String, (i64, String)> = std::collections::HashMap::new();
            let broken = |row: &Row, problem: String| Verification {
                records: row.seq.max(0) as u64,
                head: None,
                broken: Some(Broken { seq: row.seq, id: row.id.clone(), problem }),
            };
            while let Some(r) = rows.next()? {
                let row = Row::read(r)?;
                count += 1;
                if row.seq != prev_seq + 1 {
                    return Ok(broken(
                        &row,
                        format!(
                            "sequence gap: expected seq {}, found {} (records removed or moved)",
                            prev_seq + 1,
                            row.seq
                        ),
                    ));
                }
                if row.prev_hash != prev_hash {
                    return Ok(broken(&row, "broken link: prev_hash is not the previous record's hash".into()));
                }
                if row.hash() != row.hash {
                    return Ok(broken(&row, "hash mismatch: the record was changed after it was written".into()));
                }
                let Some(record) = row.to_record() else {
                    return Ok(broken(&row, "a field does not parse".into()));
                };
                for nonce in record.approvals.iter().filter_map(|a| a.nonce.as_deref()) {
                    if let Some((first, _)) = nonces.get(nonce) {
                        return Ok(broken(
                            &row,
                            format!(
                                "approval token {nonce} was already used at seq {first}: a token used twice \
                                 (its spent-token row was removed)"
                            ),
                        ));
                    }
                    nonces.insert(nonce.to_owned(), (row.seq, row.id.clone()));
                }
                prev_seq = row.seq;
                prev_hash = row.hash.clone();
                last = Some((row.seq, row.id, row.hash));
            }
            let head: Option<String> =
                conn.query_row("SELECT value FROM meta WHERE key = 'head'", [], |r| r.get(0)).optional()?;
            if let Some(head) = head {
                let mut parts = head.splitn(3, ' ');
                let (seq, id, hash) =
                    (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let matches = last.as_ref().is_some_and(|(s, i, h)| s.to_string() == seq && i == id && h == hash);
                if !matches {
                    return Ok(Verification {
                        records: count,
                        head: None,
                        broken: Some(Broken {
                            seq: seq.parse().unwrap_or(0),
                            id: id.to_owned(),
                            problem: "missing head: the chain no longer reaches its last written record (records removed from the end)".into(),
                        }),
                    });
                }
            }
            let spent: std::collections::HashSet<String> = {
                let mut stmt = conn.prepare("SELECT nonce FROM used_tokens")?;
                stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
            };
            let unspent = nonces.iter().filter(|(n, _)| !spent.contains(*n)).min_by_key(|(_, (seq, _))| *seq);
            if let Some((nonce, (seq, id))) = unspent {
                return Ok(Verification {
                    records: count,
                    head: None,
                    broken: Some(Broken {
                        seq: *seq,
                        id: id.clone(),
                        problem: format!(
                            "spent-token row removed: approval token {nonce} used by this record is not in used_tokens"
                        ),
                    }),
                });
            }
            Ok(Verification { records: count, head: last.map(|(_, _, h)| h), broken: None })
        };
        walk().map_err(|e| unavailable(&self.path, "cannot read", e))
    }
}

impl ProvenanceLog for AuditStore {
    fn append(&self, record: Record) -> Result<u64> {
        let seq = self.append_row(&record).map_err(|e| unavailable(&self.path, "cannot append", e))?;
        Ok(seq as u64)
    }

    /// Takes the write lock and writes (then rolls back) one row: fails if the file, its
    /// directory or the connection cannot be written now.
    fn ready(&self) -> Result<()> {
        let mut conn = self.lock();
        let probe = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', '1')", [])?;
            tx.rollback()
        };
        probe(&mut conn).map_err(|e| unavailable(&self.path, "not writable", e))
    }

    fn get(&self, id: &str) -> Option<Record> {
        self.query_one(&format!("SELECT {COLUMNS} FROM records WHERE id = ?1"), params![id])
    }

    fn last_write(&self, session: &str, target: &str) -> Option<Record> {
        self.query_one(
            &format!(
                "SELECT {COLUMNS} FROM records WHERE session = ?1 AND target = ?2
                 AND ok = 1 AND read_only = 0 AND dry_run = 0 ORDER BY seq DESC LIMIT 1"
            ),
            params![session, target],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::houses::{House, Mode};

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            seq: 0,
            parent_id: None,
            session: "s".into(),
            house: House::Timmy,
            mode: Mode::Sovereign,
            node: "n".into(),
            tool: "file_read".into(),
            target: "a".into(),
            read_only: true,
            dry_run: false,
            ok: true,
            error_code: None,
            args_sha256: "00".into(),
            result_sha256: Some("11".into()),
            approvals: Vec::new(),
            started_ms: 1,
            ended_ms: 2,
            duration_us: 3,
        }
    }

    /// Proves the hash covers `seq` and `prev_hash`, so moving or relinking a row changes it.
    #[test]
    fn hash_covers_position_and_link() {
        let r = record("a");
        let base = Row::from_record(&r, 1, GENESIS);
        assert_eq!(base.hash, base.hash());
        assert_ne!(Row::from_record(&r, 2, GENESIS).hash, base.hash);
        assert_ne!(Row::from_record(&r, 1, &"1".repeat(64)).hash, base.hash);
    }

    /// Proves appends chain, survive a reopen, and a read-only handle refuses writes (E3008).
    #[test]
    fn appends_chain_and_read_only_refuses_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let store = AuditStore::open(&path).expect("open");
        assert_eq!(store.append(record("a")).ok(), Some(1));
        assert_eq!(store.append(record("b")).ok(), Some(2));
        drop(store);
        let ro = AuditStore::open_read_only(&path).expect("open read-only");
        let v = ro.verify().expect("verify");
        assert!(v.ok() && v.records == 2, "{v:?}");
        assert_eq!(ro.ready().map_err(|e| e.code), Err(ErrorCode::ProvenanceUnavailable));
        assert_eq!(ro.append(record("c")).map_err(|e| e.code), Err(ErrorCode::ProvenanceUnavailable));
        assert_eq!(ro.get("b").map(|r| r.seq), Some(2));
    }
}
