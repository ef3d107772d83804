//! The pattern DB: a SQLite file (WAL) with versioned migrations, behind the small
//! [`PatternStore`] trait, and the writer thread that batches rows into it.
//!
//! The writer owns the connection. It receives rows through a bounded queue (the hot path only
//! ever `try_send`s), writes each batch in one transaction, and reports health through
//! [`Shared::db_ok`]: false after a failed write or when the file it opened is gone or replaced
//! (checked by inode before each batch and every `health_interval` while idle); it then retries
//! opening (creating if needed) the file and sets the flag back once that works. A removed file
//! whose directory is intact is simply recreated, empty; a directory that cannot hold the file
//! keeps the DB down until it can.

use std::borrow::Cow;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::predictions::OutcomeClass;
use crate::house::{House, Mode};

/// Schema migrations; `PRAGMA user_version` says how many have been applied.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE executions (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms    INTEGER NOT NULL,
        tool       TEXT NOT NULL,
        house      TEXT NOT NULL,
        mode       TEXT NOT NULL,
        fingerprint INTEGER NOT NULL,
        outcome    TEXT NOT NULL,
        error_code TEXT,
        latency_us INTEGER NOT NULL,
        node       TEXT NOT NULL
    );
    CREATE INDEX executions_tool_house ON executions (tool, house);",
    // 2: every row cost an index insert and an `sqlite_sequence` update that nothing needs
    // (the model reads the whole table in `seq` order, and rows are never deleted, so plain
    // rowids never repeat). Rebuilt without either: the writer's SQLite work per row halves.
    "CREATE TABLE executions_v2 (
        seq        INTEGER PRIMARY KEY,
        time_ms    INTEGER NOT NULL,
        tool       TEXT NOT NULL,
        house      TEXT NOT NULL,
        mode       TEXT NOT NULL,
        fingerprint INTEGER NOT NULL,
        outcome    TEXT NOT NULL,
        error_code TEXT,
        latency_us INTEGER NOT NULL,
        node       TEXT NOT NULL
    );
    INSERT INTO executions_v2 (seq, time_ms, tool, house, mode, fingerprint, outcome, error_code, latency_us, node)
        SELECT seq, time_ms, tool, house, mode, fingerprint, outcome, error_code, latency_us, node
        FROM executions ORDER BY seq;
    DROP TABLE executions;
    ALTER TABLE executions_v2 RENAME TO executions;
    DELETE FROM sqlite_sequence WHERE name = 'executions';",
    // 3: `mode` and `outcome` as small integers (see `mode_code`, `class_code`): two text
    // bindings fewer per row (each one a copy inside SQLite) and a shorter record. A value
    // this version did not write becomes -1, which reading skips as before. `house` stays
    // text: operators and the cross-process tests query it by name.
    "CREATE TABLE executions_v3 (
        seq        INTEGER PRIMARY KEY,
        time_ms    INTEGER NOT NULL,
        tool       TEXT NOT NULL,
        house      TEXT NOT NULL,
        mode       INTEGER NOT NULL,
        fingerprint INTEGER NOT NULL,
        outcome    INTEGER NOT NULL,
        error_code TEXT,
        latency_us INTEGER NOT NULL,
        node       TEXT NOT NULL
    );
    INSERT INTO executions_v3 (seq, time_ms, tool, house, mode, fingerprint, outcome, error_code, latency_us, node)
        SELECT seq, time_ms, tool, house,
            CASE mode WHEN 'simple' THEN 0 WHEN 'intelligent' THEN 1 WHEN 'sovereign' THEN 2 ELSE -1 END,
            fingerprint,
            CASE outcome WHEN 'ok' THEN 0 WHEN 'transient' THEN 1 WHEN 'permanent' THEN 2 ELSE -1 END,
            error_code, latency_us, node
        FROM executions ORDER BY seq;
    DROP TABLE executions;
    ALTER TABLE executions_v3 RENAME TO executions;",
];

/// How `mode` is stored (schema 3): the numbers migration 3 writes for the names.
const fn mode_code(mode: Mode) -> i64 {
    match mode {
        Mode::Simple => 0,
        Mode::Intelligent => 1,
        Mode::Sovereign => 2,
    }
}

/// The mode stored as `code`, if this version knows it.
const fn mode_of(code: i64) -> Option<Mode> {
    match code {
        0 => Some(Mode::Simple),
        1 => Some(Mode::Intelligent),
        2 => Some(Mode::Sovereign),
        _ => None,
    }
}

/// How `outcome` is stored (schema 3): the numbers migration 3 writes for the names.
const fn class_code(class: OutcomeClass) -> i64 {
    match class {
        OutcomeClass::Ok => 0,
        OutcomeClass::Transient => 1,
        OutcomeClass::Permanent => 2,
    }
}

/// The outcome class stored as `code`, if this version knows it.
const fn class_of(code: i64) -> Option<OutcomeClass> {
    match code {
        0 => Some(OutcomeClass::Ok),
        1 => Some(OutcomeClass::Transient),
        2 => Some(OutcomeClass::Permanent),
        _ => None,
    }
}

/// One execution as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Wall-clock start, ms since the epoch (informational; the model ignores it).
    pub time_ms: u64,
    /// Tool name.
    pub tool: Cow<'static, str>,
    /// Calling house.
    pub house: House,
    /// Mode the call ran in.
    pub mode: Mode,
    /// Argument fingerprint (see [`super::fingerprint`]).
    pub fingerprint: u64,
    /// Outcome class.
    pub class: OutcomeClass,
    /// Error code when it failed.
    pub error_code: Option<&'static str>,
    /// Wall time in µs.
    pub latency_us: u64,
    /// Node that ran it.
    pub node: std::sync::Arc<str>,
}

/// Where rows go. The writer thread is generic over it so tests can swap the store.
pub trait PatternStore: Send {
    /// Appends rows in one transaction.
    ///
    /// # Errors
    /// A description of the failure; nothing of the batch was written.
    fn append(&mut self, rows: &[Row]) -> Result<(), String>;
    /// Whether the store is still the one it opened (for a file: same path, same inode).
    fn intact(&self) -> bool;
}

/// The SQLite pattern store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    ino: u64,
}

impl SqliteStore {
    /// Opens or creates the DB at `path` (creating its directory), in WAL mode, migrated.
    ///
    /// # Errors
    /// A description when the file cannot be opened, created or migrated.
    pub fn open(path: &Path) -> Result<SqliteStore, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let conn = Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| e.to_string())?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| e.to_string())?;
        // No checkpoint (and its fsyncs) when the connection closes: a CLI run that recorded one
        // row exits sooner; the WAL is checkpointed as it grows and read on the next open.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_secs(2)).map_err(|e| e.to_string())?;
        migrate(&conn)?;
        let ino = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.ino();
        Ok(SqliteStore { conn, path: path.to_owned(), ino })
    }

    /// Every stored row, in the order written.
    ///
    /// # Errors
    /// A description when the table cannot be read.
    pub fn rows(&self) -> Result<Vec<Row>, String> {
        read_rows(&self.conn)
    }
}

fn migrate(conn: &Connection) -> Result<(), String> {
    let version: usize =
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).map_err(|e| e.to_string())? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction().map_err(|e| e.to_string())?;
        tx.execute_batch(sql).map_err(|e| format!("migration {}: {e}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn read_rows(conn: &Connection) -> Result<Vec<Row>, String> {
    let mut stmt = conn
        .prepare(
            "SELECT time_ms, tool, house, mode, fingerprint, outcome, error_code, latency_us, node
             FROM executions ORDER BY seq",
        )
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, String>(8)?,
            ))
        })
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for r in rows {
        let (time_ms, tool, house, mode, fp, outcome, code, latency, node) = r.map_err(|e| e.to_string())?;
        // Rows this version cannot read (an unknown house or class) are skipped, not fatal.
        let (Ok(house), Some(mode), Some(class)) = (house.parse(), mode_of(mode), class_of(outcome)) else {
            continue;
        };
        out.push(Row {
            time_ms: time_ms as u64,
            tool: Cow::Owned(tool),
            house,
            mode,
            fingerprint: fp as u64,
            class,
            error_code: code.as_deref().and_then(crate::error::ErrorCode::parse).map(|c| c.as_str()),
            latency_us: latency as u64,
            node: node.into(),
        });
    }
    Ok(out)
}

/// Reads the rows of the DB at `path` without creating or changing anything; no rows when
/// the file does not exist.
///
/// # Errors
/// A description when the file exists but cannot be read.
pub fn load(path: &Path) -> Result<Vec<Row>, String> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let has_table: bool = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'executions'", [], |r| r.get::<_, i64>(0))
        .map_err(|e| e.to_string())?
        > 0;
    if !has_table {
        return Ok(Vec::new());
    }
    read_rows(&conn)
}

/// Rows one multi-row `INSERT` carries. A statement's execution has a fixed cost (reset,
/// the VDBE's set-up and halt, the transaction check) that a batch pays once per chunk instead
/// of once per row; 32 rows bind 288 parameters, far under SQLite's limit of 32,766.
const INSERT_CHUNK: usize = 32;

/// The `INSERT` of `rows` rows, `?` parameters numbered row by row, nine per row.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO executions (time_ms, tool, house, mode, fingerprint, outcome, error_code, latency_us, node) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?)");
    }
    sql
}

/// Binds `rows` to `stmt` (an [`insert_sql`] of `rows.len()` rows) and runs it.
fn insert(stmt: &mut rusqlite::CachedStatement<'_>, rows: &[Row]) -> Result<(), String> {
    let bind = |stmt: &mut rusqlite::CachedStatement<'_>, i: usize, r: &Row| -> rusqlite::Result<()> {
        let at = i * 9;
        stmt.raw_bind_parameter(at + 1, r.time_ms as i64)?;
        stmt.raw_bind_parameter(at + 2, r.tool.as_ref())?;
        stmt.raw_bind_parameter(at + 3, r.house.as_str())?;
        stmt.raw_bind_parameter(at + 4, mode_code(r.mode))?;
        stmt.raw_bind_parameter(at + 5, r.fingerprint as i64)?;
        stmt.raw_bind_parameter(at + 6, class_code(r.class))?;
        stmt.raw_bind_parameter(at + 7, r.error_code)?;
        stmt.raw_bind_parameter(at + 8, r.latency_us as i64)?;
        stmt.raw_bind_parameter(at + 9, r.node.as_ref())
    };
    for (i, r) in rows.iter().enumerate() {
        bind(stmt, i, r).map_err(|e| e.to_string())?;
    }
    stmt.raw_execute().map(drop).map_err(|e| e.to_string())
}

impl PatternStore for SqliteStore {
    fn append(&mut self, rows: &[Row]) -> Result<(), String> {
        if !self.intact() {
            return Err(format!("{} was removed or replaced", self.path.display()));
        }
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        let mut chunks = rows.chunks_exact(INSERT_CHUNK);
        if chunks.len() > 0 {
            let mut stmt = tx.prepare_cached(&insert_sql(INSERT_CHUNK)).map_err(|e| e.to_string())?;
            for chunk in chunks.by_ref() {
                insert(&mut stmt, chunk)?;
            }
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut stmt = tx.prepare_cached(&insert_sql(1)).map_err(|e| e.to_string())?;
            for row in rest {
                insert(&mut stmt, std::slice::from_ref(row))?;
            }
        }
        tx.commit().map_err(|e| e.to_string())
    }

    fn intact(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino)
    }
}

/// Counters of the recorder, for a daemon to export as metrics. All are monotonic totals.
#[derive(Debug, Default)]
pub struct PatternStats {
    /// Rows committed to the DB.
    pub recorded: AtomicU64,
    /// Rows lost: the queue was full, or a failed batch outgrew the retry buffer.
    pub dropped: AtomicU64,
    /// Intelligent calls that ran as Simple because the DB was down or the queue saturated.
    pub degraded_calls: AtomicU64,
    /// Failed writes or (re)opens of the DB.
    pub db_errors: AtomicU64,
}

/// State shared by the hot path and the writer.
#[derive(Debug, Default)]
pub struct Shared {
    /// Whether the DB is usable; Intelligent calls degrade while it is false.
    pub db_ok: AtomicBool,
    /// Rows sent and not yet taken by the writer.
    pub queued: AtomicUsize,
    /// Counters.
    pub stats: PatternStats,
    /// Set by a flush or a shutdown to cut the writer's linger short; rows never touch it, so
    /// the hot path still wakes the writer at most once per batch.
    hurry: Mutex<bool>,
    hurried: Condvar,
}

impl Shared {
    /// Ends the writer's current (or next) linger at once: someone is waiting for the write.
    pub fn hurry(&self) {
        *self.hurry.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.hurried.notify_one();
    }

    /// Sleeps up to `linger`, less if [`Shared::hurry`] was called (since the last linger).
    fn linger(&self, linger: Duration) {
        let flag = self.hurry.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut flag, _) =
            self.hurried.wait_timeout_while(flag, linger, |hurry| !*hurry).unwrap_or_else(PoisonError::into_inner);
        *flag = false;
    }
}

/// What the writer receives.
#[derive(Debug)]
pub enum Msg {
    /// A row to write.
    Row(Row),
    /// Write everything pending, then answer whether the DB is healthy and nothing is pending.
    Flush(Sender<bool>),
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The DB file.
    pub path: PathBuf,
    /// Rows per transaction at most.
    pub batch_size: usize,
    /// Rows kept for retry after a failed write; beyond it they are dropped and counted.
    pub retry_buffer: usize,
    /// How often an idle writer checks the file and retries a down DB.
    pub health_interval: Duration,
    /// How long the writer gathers rows after the first of a batch before committing.
    pub linger: Duration,
}

/// The writer thread's body: runs until every sender is gone, then writes what is left.
///
/// It blocks only for the first row of a batch; then it sleeps `linger` and drains whatever
/// arrived meanwhile without blocking. While it sleeps, senders never wake it, so the hot path
/// pays a futex wake at most once per batch and SQLite commits at most once per `linger`. A
/// flush or a shutdown cuts the sleep short ([`Shared::hurry`]): a CLI run that recorded one
/// row exits as soon as the row is written, not a `linger` later.
pub fn writer(mut store: Option<SqliteStore>, rx: Receiver<Msg>, shared: &Shared, cfg: &WriterConfig) {
    let mut pending: Vec<Row> = Vec::with_capacity(cfg.batch_size);
    let mut acks: Vec<Sender<bool>> = Vec::new();
    loop {
        let first = rx.recv_timeout(cfg.health_interval);
        let mut disconnected = false;
        match first {
            Ok(Msg::Row(r)) => {
                shared.queued.fetch_sub(1, Ordering::Relaxed);
                pending.push(r);
                shared.linger(cfg.linger);
            }
            Ok(Msg::Flush(ack)) => acks.push(ack),
            Err(RecvTimeoutError::Timeout) => {
                if store.as_ref().is_none_or(|s| !s.intact()) || !pending.is_empty() {
                    write(&mut store, &mut pending, shared, cfg);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => disconnected = true,
        }
        loop {
            match rx.try_recv() {
                Ok(Msg::Row(r)) => {
                    shared.queued.fetch_sub(1, Ordering::Relaxed);
                    pending.push(r);
                    if pending.len() >= cfg.batch_size {
                        write(&mut store, &mut pending, shared, cfg);
                    }
                }
                Ok(Msg::Flush(ack)) => acks.push(ack),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        write(&mut store, &mut pending, shared, cfg);
        let healthy = shared.db_ok.load(Ordering::Acquire) && pending.is_empty();
        for ack in acks.drain(..) {
            let _ = ack.send(healthy);
        }
        if disconnected {
            return;
        }
    }
}

/// Writes `pending` (reopening the store if needed); on failure keeps up to `retry_buffer`
/// rows for the next attempt and marks the DB down.
fn write(store: &mut Option<SqliteStore>, pending: &mut Vec<Row>, shared: &Shared, cfg: &WriterConfig) {
    if store.as_ref().is_none_or(|s| !s.intact()) {
        *store = None;
        match SqliteStore::open(&cfg.path) {
            Ok(s) => *store = Some(s),
            Err(e) => return fail(pending, shared, cfg, &e),
        }
    }
    let Some(s) = store.as_mut() else { return };
    if !pending.is_empty() {
        if let Err(e) = s.append(pending) {
            *store = None;
            return fail(pending, shared, cfg, &e);
        }
        shared.stats.recorded.fetch_add(pending.len() as u64, Ordering::Relaxed);
        pending.clear();
    }
    if !shared.db_ok.swap(true, Ordering::AcqRel) {
        tracing::info!(path = %cfg.path.display(), "pattern DB available");
    }
}

fn fail(pending: &mut Vec<Row>, shared: &Shared, cfg: &WriterConfig, why: &str) {
    shared.stats.db_errors.fetch_add(1, Ordering::Relaxed);
    if shared.db_ok.swap(false, Ordering::AcqRel) {
        tracing::warn!(path = %cfg.path.display(), error = why, "pattern DB unavailable; Intelligent calls degrade to Simple");
    }
    if pending.len() > cfg.retry_buffer {
        let extra = pending.len() - cfg.retry_buffer;
        pending.drain(..extra);
        shared.stats.dropped.fetch_add(extra as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;

    fn row(i: u64) -> Row {
        Row {
            time_ms: 1_700_000_000_000 + i,
            tool: Cow::Borrowed(if i.is_multiple_of(2) { "file_read" } else { "git_pull" }),
            house: House::Ezra,
            mode: Mode::Intelligent,
            fingerprint: 7 + i,
            class: if i.is_multiple_of(3) { OutcomeClass::Transient } else { OutcomeClass::Ok },
            error_code: i.is_multiple_of(3).then_some("E3004"),
            latency_us: 100 + i,
            node: "n".into(),
        }
    }

    /// Proves a batch written as multi-row inserts (two full chunks and a rest) reads back row
    /// for row, in order, every field kept, and a second batch goes after it.
    #[test]
    fn chunked_batches_read_back_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = SqliteStore::open(&dir.path().join("patterns.db")).expect("open");
        let first: Vec<Row> = (0..2 * INSERT_CHUNK as u64 + 5).map(row).collect();
        let second: Vec<Row> = (1000..1000 + INSERT_CHUNK as u64).map(row).collect();
        store.append(&first).expect("first batch");
        store.append(&second).expect("second batch");
        let every: Vec<Row> = first.into_iter().chain(second).collect();
        assert_eq!(store.rows().expect("rows"), every);
    }

    /// Proves a schema-2 DB (mode and outcome as names) migrates to integer codes with every
    /// mode and outcome class kept and a row of a name this version does not know still
    /// skipped on reading, and that every (mode, class) written now reads back the same.
    #[test]
    fn version_2_names_migrate_to_codes_and_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("patterns.db");
        let modes = [Mode::Simple, Mode::Intelligent, Mode::Sovereign];
        let classes = [OutcomeClass::Ok, OutcomeClass::Transient, OutcomeClass::Permanent];
        let every: Vec<Row> = (0..9u64)
            .map(|i| Row { mode: modes[(i / 3) as usize], class: classes[(i % 3) as usize], ..row(i) })
            .collect();
        {
            let c = Connection::open(&path).expect("db");
            c.execute_batch(MIGRATIONS[0]).expect("v1 schema");
            c.execute_batch(MIGRATIONS[1]).expect("v2 schema");
            c.pragma_update(None, "user_version", 2).expect("v2");
            let insert = |r: &Row, mode: &str, outcome: &str| {
                c.execute(
                    "INSERT INTO executions (time_ms, tool, house, mode, fingerprint, outcome, error_code, latency_us, node)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        r.time_ms as i64,
                        r.tool.as_ref(),
                        r.house.as_str(),
                        mode,
                        r.fingerprint as i64,
                        outcome,
                        r.error_code,
                        r.latency_us as i64,
                        r.node.as_ref()
                    ],
                )
                .expect("v2 row");
            };
            for r in &every {
                insert(r, r.mode.as_str(), r.class.as_str());
            }
            insert(&row(100), "warp", "ok");
            insert(&row(101), "simple", "maybe");
        }
        let mut store = SqliteStore::open(&path).expect("migrate");
        assert_eq!(store.rows().expect("rows"), every, "known rows kept, unknown ones skipped");
        store.append(&every).expect("append");
        assert_eq!(store.rows().expect("rows"), [every.clone(), every].concat());
        let unknown: i64 = store
            .conn
            .query_row("SELECT count(*) FROM executions WHERE mode = -1 OR outcome = -1", [], |r| r.get(0))
            .expect("count");
        assert_eq!(unknown, 2);
    }

    /// Proves a DB written at schema version 1 (AUTOINCREMENT and the (tool, house) index) is
    /// migrated to version 2 with every row kept, in order, and that rows written after the
    /// migration follow them.
    #[test]
    fn version_1_db_migrates_with_its_rows() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("patterns.db");
        let old: Vec<Row> = (0..50).map(row).collect();
        {
            let c = Connection::open(&path).expect("db");
            c.execute_batch(MIGRATIONS[0]).expect("v1 schema");
            c.pragma_update(None, "user_version", 1).expect("v1");
            for r in &old {
                c.execute(
                    "INSERT INTO executions (time_ms, tool, house, mode, fingerprint, outcome, error_code, latency_us, node)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        r.time_ms as i64,
                        r.tool.as_ref(),
                        r.house.as_str(),
                        r.mode.as_str(),
                        r.fingerprint as i64,
                        r.class.as_str(),
                        r.error_code,
                        r.latency_us as i64,
                        r.node.as_ref()
                    ],
                )
                .expect("v1 row");
            }
        }
        let mut store = SqliteStore::open(&path).expect("migrate");
        assert_eq!(store.rows().expect("rows"), old, "every row kept, in order");
        let new: Vec<Row> = (50..60).map(row).collect();
        store.append(&new).expect("append");
        assert_eq!(store.rows().expect("rows"), [old, new].concat());
        let c = &store.conn;
        let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).expect("version");
        let indexes: i64 = c
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'executions'", [], |r| {
                r.get(0)
            })
            .expect("indexes");
        assert_eq!((version, indexes), (MIGRATIONS.len() as i64, 0));
    }
}
