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
//! - a `used_tokens` row deleted: a record's approval names a nonce that is not spent, and
//!   the spent-token chain (below) skips a `seq`.
//!
//! Triggers refuse `UPDATE` and `DELETE` on `records`, which stops accidents; they are not the
//! tamper evidence (anyone with the file can drop them). The chain is. Someone who can rewrite
//! the whole file can also recompute the whole chain, or cut its end together with `meta`:
//! that is what anchoring is for. [`AuditStore::head`] is the [`Checkpoint`] a node's telemetry
//! sends to Timmy (on a period, and at once after every Sovereign record and every spent token:
//! [`AuditStore::anchor_wanted`]); [`AuditStore::verify_anchored`] checks the file against the
//! checkpoints Timmy kept and names a truncated tail, a rewritten record or a forked chain.
//!
//! Spent tokens have their own hash chain inside `used_tokens` (`seq`, `prev_hash`, `hash`,
//! the head in `meta.spent_head`, all written in the spending transaction), anchored in the
//! same checkpoint: a removed row is a `seq` gap, a removed last row (and `spent_head`) is a
//! checkpoint the local chain no longer reaches, even when the record that used the token is
//! cut or rewritten too.
//!
//! Durability: the database is in WAL mode with `synchronous=FULL`, so a committed append has
//! reached the disk before [`ProvenanceLog::append`] returns; Sovereign mode relies on that.
//!
//! Group commit: appends go to one writer thread through a queue. The writer takes every record
//! waiting (up to [`MAX_BATCH`]), chains them in queue order inside one transaction, commits
//! (one fsync for the whole batch), and only then answers each appender with its `seq`; records
//! that arrive during that fsync form the next batch. So concurrent appenders share an fsync
//! (PostgreSQL's group commit), chain order is commit order, and no append is acknowledged
//! before it is durable: a crash loses no acknowledged record. A record that cannot be inserted
//! (its own savepoint rolls back) fails alone; a failed commit fails the whole batch, and no
//! record of it is acknowledged. [`ProvenanceLog::submit`] queues without blocking the
//! caller's thread; [`ProvenanceLog::append`] waits for the answer.
//!
//! Reads and the nonce table use the same connection behind a `Mutex`; a busy file (another
//! process writing) waits up to `busy_timeout` (5 s) and then fails with E3008.
//!
//! The same file holds `used_tokens`, the nonces of signed approval tokens already spent
//! (see [`crate::tokens`]), so a token is single-use across processes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::approval::Approval;
use crate::error::{Error, ErrorCode, Result};
use crate::provenance::{Appending, ProvenanceLog, Record};

/// The schema version kept in `PRAGMA user_version` (2: the spent-token chain).
pub const SCHEMA_VERSION: i64 = 2;

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

/// Version 2: `used_tokens` becomes a hash chain of its own; rows spent before are chained in
/// the order they were written (`rowid`) when the store is first opened by this build.
const SPENT_CHAIN: &str = "
ALTER TABLE used_tokens ADD COLUMN seq INTEGER;
ALTER TABLE used_tokens ADD COLUMN prev_hash TEXT;
ALTER TABLE used_tokens ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS used_tokens_seq ON used_tokens (seq);
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
            session: r.session.to_string(),
            house: r.house.as_str().to_owned(),
            mode: r.mode.as_str().to_owned(),
            node: r.node.clone(),
            tool: r.tool.to_string(),
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
            session: self.session.as_str().into(),
            house: self.house.parse().ok()?,
            mode: self.mode.parse().ok()?,
            node: self.node.clone(),
            tool: self.tool.clone().into(),
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

/// Which of the store's two chains a [`Broken`] is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Chain {
    /// The provenance records.
    Records,
    /// The spent approval tokens (`used_tokens`).
    SpentTokens,
}

impl Chain {
    /// What one entry of the chain is called in a problem's text.
    fn entry(self) -> &'static str {
        match self {
            Chain::Records => "record",
            Chain::SpentTokens => "spent-token row",
        }
    }
}

/// The first record that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// The chain it is in.
    pub chain: Chain,
    /// Its `seq` (in that chain).
    pub seq: i64,
    /// Its id (the token nonce in the spent-token chain; "" for an entry that is gone).
    pub id: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Broken {
    fn record(seq: i64, id: &str, problem: String) -> Broken {
        Broken { chain: Chain::Records, seq, id: id.to_owned(), problem }
    }
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
    /// Checkpoints compared ([`AuditStore::verify_anchored`]); 0 for a local check.
    pub checkpoints: u64,
    /// Problems found beside `broken` (the other chain's, against the checkpoints).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<Broken>,
}

/// A node's audit heads as anchored at Timmy: the newest record and the newest spent token,
/// each by `seq` and hash; seq 0 and hash "" for an empty chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Checkpoint {
    /// `seq` of the newest record.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// `seq` of the newest spent-token row.
    pub spent_seq: u64,
    /// Its hash.
    pub spent_hash: String,
}

/// A spent-token row as chained: every column, in the order hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct SpentRow {
    seq: i64,
    nonce: String,
    tool: String,
    args_sha256: String,
    expires_ms: i64,
    used_ms: i64,
    request_id: String,
    prev_hash: String,
}

impl SpentRow {
    /// SHA-256 (hex) of the canonical encoding, as [`Row::hash`].
    fn hash(&self) -> String {
        hex::encode(Sha256::digest(serde_json::to_vec(self).unwrap_or_default()))
    }

    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<(SpentRow, Option<String>)> {
        Ok((
            SpentRow {
                seq: r.get::<_, Option<i64>>(0)?.unwrap_or(0),
                nonce: r.get(1)?,
                tool: r.get(2)?,
                args_sha256: r.get(3)?,
                expires_ms: r.get(4)?,
                used_ms: r.get(5)?,
                request_id: r.get(6)?,
                prev_hash: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
            },
            r.get(8)?,
        ))
    }
}

const SPENT_COLUMNS: &str = "seq, nonce, tool, args_sha256, expires_ms, used_ms, request_id, prev_hash, hash";

/// Chains `row` after the newest spent-token row and writes it with `spent_head`, inside `tx`.
fn chain_spent(tx: &rusqlite::Transaction<'_>, mut row: SpentRow) -> rusqlite::Result<()> {
    let last: Option<(i64, String)> = tx
        .query_row("SELECT seq, hash FROM used_tokens WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let (seq, prev) = last.unwrap_or((0, GENESIS.to_owned()));
    row.seq = seq + 1;
    row.prev_hash = prev;
    let hash = row.hash();
    tx.execute(
        &format!("INSERT OR REPLACE INTO used_tokens ({SPENT_COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)"),
        params![
            row.seq,
            row.nonce,
            row.tool,
            row.args_sha256,
            row.expires_ms,
            row.used_ms,
            row.request_id,
            row.prev_hash,
            hash
        ],
    )?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('spent_head', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![format!("{} {} {hash}", row.seq, row.nonce)],
    )?;
    Ok(())
}

/// Chains the rows of a version-1 store in the order they were written.
fn migrate_spent_chain(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(SPENT_CHAIN)?;
    let rows: Vec<SpentRow> = {
        let mut st = tx.prepare(&format!("SELECT {SPENT_COLUMNS} FROM used_tokens ORDER BY rowid"))?;
        st.query_map([], |r| SpentRow::read(r).map(|(row, _)| row))?.collect::<rusqlite::Result<_>>()?
    };
    for row in rows {
        chain_spent(&tx, row)?;
    }
    tx.commit()
}

/// Compares one chain with the checkpoints Timmy holds for it: `anchors` as (seq, hash), the
/// local chain (already verified on its own) ending at `head`, `at` the local (id, hash) at a
/// seq. Names the lowest seq that disagrees: a fork (two hashes anchored at one seq, or a
/// checkpoint on another chain than a later one the local chain agrees with), a truncated
/// tail (a checkpoint beyond the local head) or a rewritten entry.
fn against_anchors(
    chain: Chain,
    head: u64,
    anchors: &[(u64, &str)],
    mut at: impl FnMut(u64) -> rusqlite::Result<Option<(String, String)>>,
) -> rusqlite::Result<Option<Broken>> {
    let mut by_seq: std::collections::BTreeMap<u64, std::collections::BTreeSet<&str>> = Default::default();
    for &(seq, hash) in anchors.iter().filter(|(seq, _)| *seq > 0) {
        by_seq.entry(seq).or_default().insert(hash);
    }
    let what = chain.entry();
    let short = |h: &str| h.chars().take(16).collect::<String>();
    let mut local = std::collections::BTreeMap::new();
    for &seq in by_seq.keys().filter(|s| **s <= head) {
        local.insert(seq, at(seq)?.unwrap_or_default());
    }
    let agrees = |seq: u64, hashes: &std::collections::BTreeSet<&str>| {
        local.get(&seq).is_some_and(|(_, h)| hashes.len() == 1 && hashes.contains(h.as_str()))
    };
    let mut agreed = 0u64;
    for (&seq, hashes) in &by_seq {
        let signed = i64::try_from(seq).unwrap_or(i64::MAX);
        let id = local.get(&seq).map_or("", |(id, _)| id.as_str());
        if hashes.len() > 1 {
            let shown: Vec<String> = hashes.iter().map(|h| short(h)).collect();
            return Ok(Some(Broken {
                chain,
                seq: signed,
                id: id.to_owned(),
                problem: format!(
                    "forked chain: Timmy holds {} different checkpoints at {what} seq {seq} ({}): they cannot all be \
                     on one chain (the chain was replaced or rewritten after seq {agreed})",
                    hashes.len(),
                    shown.join(", ")
                ),
            }));
        }
        let anchored = hashes.iter().next().copied().unwrap_or("");
        if seq > head {
            // Named by the newest checkpoint: everything from the local end up to it is gone.
            let (&top, tops) = by_seq.last_key_value().unwrap_or((&seq, hashes));
            let top_hash = tops.iter().next().copied().unwrap_or(anchored);
            let cut = format!(
                "Timmy's checkpoints reach {what} seq {top} (hash {}) but the local chain ends at seq {head}: {what}s \
                 {} to {top} were removed",
                short(top_hash),
                head + 1
            );
            let problem = match chain {
                Chain::Records => format!("truncated tail: {cut}"),
                Chain::SpentTokens => format!("spent-token row removed: {cut} (their tokens would work again)"),
            };
            return Ok(Some(Broken {
                chain,
                seq: i64::try_from(head + 1).unwrap_or(i64::MAX),
                id: String::new(),
                problem,
            }));
        }
        if !agrees(seq, hashes) {
            // Past the local head there is nothing to agree with (and a range from above its end
            // is a panic, not an empty one).
            let later = if seq < head {
                by_seq.range(seq + 1..=head).find(|(s, hs)| agrees(**s, hs)).map(|(s, _)| *s)
            } else {
                None
            };
            let local_hash = local.get(&seq).map_or(String::new(), |(_, h)| short(h));
            let problem = match later {
                Some(l) => format!(
                    "forked chain: Timmy's checkpoint at {what} seq {seq} (hash {}) is on another chain than his \
                     checkpoint at seq {l}, which the local chain matches",
                    short(anchored)
                ),
                None => format!(
                    "rewritten {what}: the local {what} at seq {seq} has hash {local_hash} but Timmy's checkpoint says \
                     {}; the chain matches Timmy's through seq {agreed}",
                    short(anchored)
                ),
            };
            return Ok(Some(Broken { chain, seq: signed, id: id.to_owned(), problem }));
        }
        agreed = seq;
    }
    Ok(None)
}

impl Verification {
    /// Whether the chain holds.
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// Records one group commit takes at most.
pub const MAX_BATCH: usize = 1024;

/// Where a queued append's answer goes.
enum Reply {
    Blocking(mpsc::SyncSender<Result<u64>>),
    Async(tokio::sync::oneshot::Sender<Result<u64>>),
}

impl Reply {
    fn send(self, r: Result<u64>) {
        // An appender that stopped waiting (a dropped future) needs no answer.
        let _ = match self {
            Reply::Blocking(tx) => tx.send(r).map_err(drop),
            Reply::Async(tx) => tx.send(r).map_err(drop),
        };
    }
}

struct Queued {
    record: Record,
    reply: Reply,
}

/// The group-commit writer: its queue and its thread (joined on drop, after the queue drains).
struct Writer {
    queue: Option<mpsc::Sender<Queued>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The hash-chained SQLite provenance log. See the module docs.
pub struct AuditStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// Whether the file has the spent-token chain (schema 2; a read-only v1 file has not).
    spent_chain: bool,
    /// Woken after a committed Sovereign record or a spent token: anchor the head now.
    anchor: Arc<tokio::sync::Notify>,
    /// Group commits made by this handle's writer.
    commits: Arc<std::sync::atomic::AtomicU64>,
    /// Writes through this handle that failed (see [`AuditStore::write_failures`]).
    failures: Arc<std::sync::atomic::AtomicU64>,
    /// `None` for a read-only store: its appends fail in the caller's thread.
    writer: Option<Mutex<Writer>>,
}

impl Drop for AuditStore {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            let mut w = w.into_inner().unwrap_or_else(|p| p.into_inner());
            drop(w.queue.take());
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
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
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| unavailable(path, "cannot open", e))?;
        let setup = |conn: &mut Connection| -> rusqlite::Result<i64> {
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            if !read_only {
                conn.pragma_update(None, "journal_mode", "WAL")?;
            }
            conn.pragma_update(None, "synchronous", "FULL")?;
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if !read_only && version < SCHEMA_VERSION {
                conn.execute_batch(SCHEMA)?;
                if version < 2 {
                    migrate_spent_chain(conn)?;
                }
                conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            Ok(if read_only { version } else { version.max(SCHEMA_VERSION) })
        };
        let version = setup(&mut conn).map_err(|e| unavailable(path, "cannot set up", e))?;
        if version > SCHEMA_VERSION {
            return Err(unavailable(
                path,
                "schema is newer than this build",
                format!("user_version {version} > {SCHEMA_VERSION}"),
            ));
        }
        let conn = Arc::new(Mutex::new(conn));
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let anchor = Arc::new(tokio::sync::Notify::new());
        let writer = if read_only {
            None
        } else {
            let (queue, rx) = mpsc::channel::<Queued>();
            let (conn, at, counted, wake) = (conn.clone(), path.to_path_buf(), commits.clone(), anchor.clone());
            let failed = failures.clone();
            let thread = std::thread::Builder::new()
                .name("uw-audit-writer".into())
                .spawn(move || write_batches(&at, &conn, &rx, (&counted, &failed), &wake))
                .map_err(|e| unavailable(path, "cannot start the writer thread", e))?;
            Some(Mutex::new(Writer { queue: Some(queue), thread: Some(thread) }))
        };
        Ok(AuditStore { path: path.to_path_buf(), conn, spent_chain: version >= 2, anchor, commits, failures, writer })
    }

    /// Notified after every committed Sovereign record and every spent token: whoever anchors
    /// this store's head (the telemetry role) sends it then, not only on its period. A
    /// notification given while nobody waits is kept for the next wait.
    pub fn anchor_wanted(&self) -> Arc<tokio::sync::Notify> {
        self.anchor.clone()
    }

    /// The heads of both chains, as anchored at Timmy.
    ///
    /// # Errors
    /// E3008 when the store cannot be read.
    pub fn head(&self) -> Result<Checkpoint> {
        let conn = self.lock();
        let last = |sql: &str| -> rusqlite::Result<(u64, String)> {
            let row: Option<(i64, String)> = conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
            Ok(row.map_or((0, String::new()), |(s, h)| (u64::try_from(s).unwrap_or(0), h)))
        };
        let read = || -> rusqlite::Result<Checkpoint> {
            let (seq, hash) = last("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1")?;
            let (spent_seq, spent_hash) = if self.spent_chain {
                last("SELECT seq, hash FROM used_tokens WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1")?
            } else {
                (0, String::new())
            };
            Ok(Checkpoint { seq, hash, spent_seq, spent_hash })
        };
        read().map_err(|e| unavailable(&self.path, "cannot read", e))
    }

    /// [`verify`](Self::verify), then the file against `anchors`, the checkpoints Timmy kept
    /// for this node: names the first seq of either chain that a checkpoint contradicts (a
    /// truncated tail, a rewritten entry, a fork); each chain's finding is reported, the
    /// records' first. Records written after the newest checkpoint are vouched for by the
    /// local chain only.
    ///
    /// # Errors
    /// E3008 when the store cannot be read.
    pub fn verify_anchored(&self, anchors: &[Checkpoint]) -> Result<Verification> {
        let mut v = self.verify()?;
        v.checkpoints = anchors.len() as u64;
        if !v.ok() {
            return Ok(v);
        }
        let local = self.head()?;
        let conn = self.lock();
        let lookup = |sql: &str, seq: u64| -> rusqlite::Result<Option<(String, String)>> {
            conn.query_row(sql, params![i64::try_from(seq).unwrap_or(i64::MAX)], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        };
        let compare = || -> rusqlite::Result<Vec<Broken>> {
            let records: Vec<(u64, &str)> = anchors.iter().map(|c| (c.seq, c.hash.as_str())).collect();
            let mut found: Vec<Broken> = against_anchors(Chain::Records, local.seq, &records, |seq| {
                lookup("SELECT id, hash FROM records WHERE seq = ?1", seq)
            })?
            .into_iter()
            .collect();
            let spent: Vec<(u64, &str)> = anchors.iter().map(|c| (c.spent_seq, c.spent_hash.as_str())).collect();
            found.extend(against_anchors(Chain::SpentTokens, local.spent_seq, &spent, |seq| {
                lookup("SELECT nonce, hash FROM used_tokens WHERE seq = ?1", seq)
            })?);
            Ok(found)
        };
        let mut found = compare().map_err(|e| unavailable(&self.path, "cannot read", e))?.into_iter();
        v.broken = found.next();
        v.more = found.collect();
        if v.broken.is_some() {
            v.head = None;
        }
        Ok(v)
    }

    /// Group commits this handle has made (each one transaction and one fsync).
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes through this handle that failed with E3008: records not appended, failed
    /// writability probes ([`ProvenanceLog::ready`]), spent tokens not recorded. The daemons
    /// export it as `uw_audit_write_failures_total`.
    pub fn write_failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a failed write (see [`AuditStore::write_failures`]) and passes its result on.
    fn counted<T>(&self, r: Result<T>) -> Result<T> {
        if matches!(&r, Err(e) if e.code == ErrorCode::ProvenanceUnavailable) {
            self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `record` for the writer, or (read-only store) tries it here.
    fn enqueue(&self, record: Record, reply: Reply) {
        let Some(writer) = &self.writer else {
            let r = commit_batch(&self.path, &mut self.lock(), std::slice::from_ref(&record)).pop();
            reply.send(self.counted(r.unwrap_or_else(|| Err(unavailable(&self.path, "cannot append", "no result")))));
            return;
        };
        let sent = {
            let w = writer.lock().unwrap_or_else(|p| p.into_inner());
            match &w.queue {
                Some(q) => q.send(Queued { record, reply }).map_err(|e| e.0.reply),
                None => Err(reply),
            }
        };
        if let Err(reply) = sent {
            reply.send(self.counted(Err(unavailable(&self.path, "cannot append", "the writer thread has stopped"))));
        }
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
        let mut conn = self.lock();
        let spend = |conn: &mut Connection| -> rusqlite::Result<bool> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if tx.query_row("SELECT 1 FROM used_tokens WHERE nonce = ?1", [nonce], |_| Ok(())).optional()?.is_some() {
                return Ok(false);
            }
            let row = SpentRow {
                seq: 0,
                nonce: nonce.to_owned(),
                tool: tool.to_owned(),
                args_sha256: args_sha256.to_owned(),
                expires_ms: i64::try_from(expires_ms).unwrap_or(i64::MAX),
                used_ms: i64::try_from(crate::provenance::now_ms()).unwrap_or(i64::MAX),
                request_id: request_id.to_owned(),
                prev_hash: String::new(),
            };
            chain_spent(&tx, row)?;
            tx.commit()?;
            Ok(true)
        };
        let spent = self.counted(
            if self.spent_chain { spend(&mut conn) } else { Err(rusqlite::Error::InvalidQuery) }
                .map_err(|e| unavailable(&self.path, "cannot record a used approval token", e)),
        )?;
        drop(conn);
        if !spent {
            return Err(Error::new(ErrorCode::ApprovalInvalid, "approval refused: this token was already used")
                .with_details(json!({ "reason": "token already used", "nonce": nonce })));
        }
        self.anchor.notify_one();
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
                broken: Some(Broken::record(row.seq, &row.id, problem)),
                checkpoints: 0,
                more: Vec::new(),
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
                        broken: Some(Broken::record(
                            seq.parse().unwrap_or(0),
                            id,
                            "missing head: the chain no longer reaches its last written record (records removed from the end)".into(),
                        )),
                        checkpoints: 0,
                        more: Vec::new(),
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
                    broken: Some(Broken::record(
                        *seq,
                        id,
                        format!(
                            "spent-token row removed: approval token {nonce} used by this record is not in used_tokens"
                        ),
                    )),
                    checkpoints: 0,
                    more: Vec::new(),
                });
            }
            let spent = if self.spent_chain { walk_spent(&conn)? } else { None };
            Ok(Verification {
                records: count,
                head: if spent.is_none() { last.map(|(_, _, h)| h) } else { None },
                broken: spent,
                checkpoints: 0,
                more: Vec::new(),
            })
        };
        walk().map_err(|e| unavailable(&self.path, "cannot read", e))
    }
}

/// Walks the spent-token chain in `seq` order (gaps, links, hashes, `meta.spent_head`) and
/// returns the first row that breaks it.
fn walk_spent(conn: &Connection) -> rusqlite::Result<Option<Broken>> {
    let mut st = conn.prepare(&format!("SELECT {SPENT_COLUMNS} FROM used_tokens ORDER BY seq"))?;
    let mut rows = st.query([])?;
    let (mut prev_seq, mut prev_hash) = (0i64, GENESIS.to_owned());
    let mut last: Option<(i64, String, String)> = None;
    let broken = |row: &SpentRow, problem: String| {
        Some(Broken { chain: Chain::SpentTokens, seq: row.seq, id: row.nonce.clone(), problem })
    };
    while let Some(r) = rows.next()? {
        let (row, hash) = SpentRow::read(r)?;
        if row.seq != prev_seq + 1 {
            return Ok(broken(
                &row,
                format!(
                    "spent-token row removed: expected spent-token seq {}, found {} (a token whose row is gone \
                     would work again)",
                    prev_seq + 1,
                    row.seq
                ),
            ));
        }
        if row.prev_hash != prev_hash {
            return Ok(broken(&row, "broken link: prev_hash is not the previous spent-token row's hash".into()));
        }
        let hash = hash.unwrap_or_default();
        if row.hash() != hash {
            return Ok(broken(&row, "hash mismatch: the spent-token row was changed after it was written".into()));
        }
        prev_seq = row.seq;
        prev_hash = hash.clone();
        last = Some((row.seq, row.nonce, hash));
    }
    let head: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = 'spent_head'", [], |r| r.get(0)).optional()?;
    if let Some(head) = head {
        let mut parts = head.splitn(3, ' ');
        let (seq, nonce, hash) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if !last.as_ref().is_some_and(|(s, n, h)| s.to_string() == seq && n == nonce && h == hash) {
            return Ok(Some(Broken {
                chain: Chain::SpentTokens,
                seq: seq.parse().unwrap_or(0),
                id: nonce.to_owned(),
                problem: "spent-token row removed: the spent-token chain no longer reaches its last written row".into(),
            }));
        }
    }
    Ok(None)
}

/// The writer thread: one group commit per wake-up, until every sender is gone; counts the
/// commits and the records that failed (`counters`); wakes `anchor` after a commit that holds
/// a Sovereign record.
fn write_batches(
    path: &Path,
    conn: &Mutex<Connection>,
    rx: &mpsc::Receiver<Queued>,
    counters: (&std::sync::atomic::AtomicU64, &std::sync::atomic::AtomicU64),
    anchor: &tokio::sync::Notify,
) {
    let (commits, failures) = counters;
    while let Ok(first) = rx.recv() {
        // The batch is taken once the connection is ours: whatever queued while it was busy
        // (a read, the previous commit's fsync) joins this commit.
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        let (records, replies): (Vec<Record>, Vec<Reply>) = batch.into_iter().map(|q| (q.record, q.reply)).unzip();
        let results = commit_batch(path, &mut conn, &records);
        drop(conn);
        commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let failed = results.iter().filter(|r| r.is_err()).count() as u64;
        failures.fetch_add(failed, std::sync::atomic::Ordering::Relaxed);
        if records.iter().zip(&results).any(|(r, res)| r.mode == crate::house::Mode::Sovereign && res.is_ok()) {
            anchor.notify_one();
        }
        for (reply, r) in replies.into_iter().zip(results) {
            reply.send(r);
        }
    }
}

/// Chains `records` in order inside one transaction and commits it: one result per record,
/// each `Ok` only once the commit is durable.
fn commit_batch(path: &Path, conn: &mut Connection, records: &[Record]) -> Vec<Result<u64>> {
    let fail = |e: &dyn std::fmt::Display| unavailable(path, "cannot append", e);
    let mut results: Vec<Result<u64>> = Vec::with_capacity(records.len());
    let outcome = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let last: Option<(i64, String)> = tx
            .query_row("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (mut seq, mut prev) = last.unwrap_or((0, GENESIS.to_owned()));
        let mut head = None;
        {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO records ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21)"
            ))?;
            for record in records {
                let row = Row::from_record(record, seq + 1, &prev);
                tx.execute_batch("SAVEPOINT one")?;
                let inserted = insert.execute(params![
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
                ]);
                match inserted {
                    Ok(_) => {
                        tx.execute_batch("RELEASE one")?;
                        seq = row.seq;
                        head = Some(format!("{seq} {} {}", row.id, row.hash));
                        prev = row.hash;
                        results.push(Ok(seq as u64));
                    }
                    Err(e) => {
                        tx.execute_batch("ROLLBACK TO one; RELEASE one")?;
                        results.push(Err(fail(&e)));
                    }
                }
            }
        }
        if let Some(head) = head {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('head', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![head],
            )?;
        }
        tx.commit()
    })();
    match outcome {
        Ok(()) => results,
        // Nothing of the batch is durable: every record fails, none is acknowledged.
        Err(e) => records.iter().map(|_| Err(fail(&e))).collect(),
    }
}

impl ProvenanceLog for AuditStore {
    fn append(&self, record: Record) -> Result<u64> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.enqueue(record, Reply::Blocking(tx));
        rx.recv().unwrap_or_else(|_| Err(unavailable(&self.path, "cannot append", "the writer thread has stopped")))
    }

    fn submit(&self, record: Record) -> Appending {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(record, Reply::Async(tx));
        Appending::Waiting(rx)
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
        self.counted(probe(&mut conn).map_err(|e| unavailable(&self.path, "not writable", e)))
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
    use crate::house::{House, Mode};

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

    /// Proves group commit: 64 concurrent appends all land, with distinct seqs 1..=64 in one
    /// verified chain, in fewer commits than records (appends queued behind a commit share the
    /// next one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_commits_and_chain_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(AuditStore::open(dir.path().join("a.db")).expect("open"));
        // Hold the connection so the first appends queue up behind it, as behind an fsync.
        let held = store.conn.lock().unwrap_or_else(|p| p.into_inner());
        let waits: Vec<_> = (0..64).map(|i| store.submit(record(&format!("r{i}")))).collect();
        drop(held);
        let mut seqs = Vec::new();
        for w in waits {
            seqs.push(w.wait().await.expect("appended"));
        }
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=64).collect::<Vec<u64>>());
        assert_eq!(seqs, sorted, "chain order is queue order");
        assert!(store.commits() < 64, "{} commits for 64 records", store.commits());
        assert!(store.verify().expect("verify").ok());
    }

    /// Proves a checkpoint that disagrees with the newest record itself (that record rewritten
    /// and the head moved to match) is named as a rewritten record at its seq; it panicked
    /// (a map range starting past its end) when the outside trial tried it.
    #[test]
    fn a_rewritten_newest_record_is_named_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AuditStore::open(dir.path().join("a.db")).expect("open");
        for id in ["a", "b", "c"] {
            store.append(record(id)).expect("append");
        }
        let head = store.head().expect("head");
        assert_eq!(head.seq, 3);
        let elsewhere = Checkpoint { hash: "f".repeat(64), ..head.clone() };
        let v = store.verify_anchored(&[elsewhere]).expect("verify");
        let broken = v.broken.expect("the rewrite is named");
        assert_eq!(broken.seq, 3, "{}", broken.problem);
        assert!(broken.problem.starts_with("rewritten record"), "{}", broken.problem);
        assert!(store.verify_anchored(&[head]).expect("verify").ok(), "its own head agrees");
    }

    /// Proves a record that cannot be inserted (a duplicate id) fails alone in its batch: the
    /// records before and after it in the same commit are chained, with no gap in `seq`, and
    /// only the failed one counts as a write failure.
    #[tokio::test]
    async fn a_bad_record_fails_alone_in_its_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AuditStore::open(dir.path().join("a.db")).expect("open");
        store.append(record("dup")).expect("first");
        let held = store.conn.lock().unwrap_or_else(|p| p.into_inner());
        let waits: Vec<_> = ["a", "dup", "b"].into_iter().map(|id| store.submit(record(id))).collect();
        drop(held);
        let mut results = Vec::new();
        for w in waits {
            results.push(w.wait().await.map_err(|e| e.code));
        }
        assert_eq!(results, vec![Ok(2), Err(ErrorCode::ProvenanceUnavailable), Ok(3)]);
        assert_eq!(store.commits(), 2, "the three queued records went in one commit");
        assert_eq!(store.write_failures(), 1, "one record failed");
        assert!(store.verify().expect("verify").ok());
    }

    /// Proves a version-1 store (no spent-token chain) is migrated when first opened: its spent
    /// rows are chained in the order written, `verify` holds and the head names them, and a
    /// row removed afterwards is named as a `seq` gap in the spent-token chain.
    #[test]
    fn a_version_1_store_gets_its_spent_token_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        {
            let c = Connection::open(&path).expect("v1 file");
            c.execute_batch(SCHEMA).expect("v1 schema");
            c.pragma_update(None, "user_version", 1).expect("version");
            for n in ["n1", "n2", "n3"] {
                c.execute(
                    "INSERT INTO used_tokens (nonce, tool, args_sha256, expires_ms, used_ms, request_id)
                     VALUES (?1, 'file_write', '00', 9, 1, 'r')",
                    [n],
                )
                .expect("v1 row");
            }
        }
        let store = AuditStore::open(&path).expect("migrates");
        let head = store.head().expect("head");
        assert_eq!(head.spent_seq, 3, "{head:?}");
        assert!(store.verify().expect("verify").ok());
        store.consume_nonce("n4", "file_write", "00", 9, "r").expect("spends on the chain");
        assert_eq!(store.head().expect("head").spent_seq, 4);
        let c = Connection::open(&path).expect("second connection");
        c.execute("DELETE FROM used_tokens WHERE nonce = 'n2'", []).expect("delete");
        let broken = store.verify().expect("verify").broken.expect("a removed row is named");
        assert_eq!((broken.chain, broken.seq, broken.id.as_str()), (Chain::SpentTokens, 3, "n3"), "{broken:?}");
        assert!(broken.problem.contains("spent-token row removed"), "{}", broken.problem);
    }

    /// Proves appends chain, survive a reopen, and a read-only handle refuses writes (E3008),
    /// each refusal counted as a write failure.
    #[test]
    fn appends_chain_and_read_only_refuses_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let store = AuditStore::open(&path).expect("open");
        assert_eq!(store.append(record("a")).ok(), Some(1));
        assert_eq!(store.append(record("b")).ok(), Some(2));
        assert_eq!(store.write_failures(), 0);
        drop(store);
        let ro = AuditStore::open_read_only(&path).expect("open read-only");
        let v = ro.verify().expect("verify");
        assert!(v.ok() && v.records == 2, "{v:?}");
        assert_eq!(ro.ready().map_err(|e| e.code), Err(ErrorCode::ProvenanceUnavailable));
        assert_eq!(ro.append(record("c")).map_err(|e| e.code), Err(ErrorCode::ProvenanceUnavailable));
        assert_eq!(ro.write_failures(), 2, "the failed probe and the failed append");
        assert_eq!(ro.get("b").map(|r| r.seq), Some(2));
    }
}
