//! The node's durable outbox, `<home>/telemetry-outbox.db`.
//!
//! SQLite in WAL mode, `synchronous` per [`super::Durability`], busy timeout 5 s. Tables:
//!
//! - `outbox(seq PRIMARY KEY, time_ms, event)`: the encoded `TelemetryEvent`s not yet
//!   acknowledged, in sequence order.
//! - `meta(key, value)`: `first_seq`, `next_seq` (never reused), `acked_through`,
//!   `acked_at_ms`, `dropped`, and the Hermes cursor (`hermes_message_id`,
//!   `hermes_session_rowid`).
//! - `hermes_sessions(id, usage, ended)`: the sessions the tailer follows and the token
//!   figures last sent for each, so a change is sent once.
//! - `hermes_calls(session_id, tool_call_id, status, ...)`: the tool events already sent
//!   (dedup of Hermes' deleted and re-inserted rows), bounded to [`MAX_SEEN_CALLS`].
//! - `hermes_file`: one row, the state.db the cursor points into ([`HermesFile`]: device,
//!   inode, the session id and timestamp of the message at the cursor, the session at the
//!   `sessions.rowid` cursor) and how often the
//!   tailer found it replaced by another file, and when last.
//!
//! A new outbox numbers from its creation time in microseconds ([`first_seq_for_new`]), not
//! from 1. An outbox that replaces a deleted one then numbers on above every seq the old one
//! used, so Timmy's sink, which deduplicates on (node, seq), never takes the new events for
//! resent old ones. That holds while the old outbox averaged under a million events a second
//! and the clock was not set back. Outboxes made before this rule keep numbering from where
//! they are (their `first_seq` reads 1).
//!
//! Every write is one `BEGIN IMMEDIATE` transaction: numbering, insertion, the cursor and
//! the dedup state commit together or not at all. Several processes may write (the daemon
//! and `uni-wizard hermes-hook`): the sequence is read and advanced inside the transaction.
//!
//! **A write side that fails** (disk full, read-only or failing filesystem: SQLite's
//! `SQLITE_FULL`, `SQLITE_IOERR`, `SQLITE_READONLY`, ...) is a state, not a stream of errors:
//! the first failing write logs one line naming the file and sets [`Outbox::write_error`]
//! (shown by `/health` as `degraded` and by `uni-wizard telemetry --status`, and the stream
//! backs off while it lasts); the first write that commits again clears it with one line.
//! Nothing waits for an operator: the tailer retries from its cursor, the stream resends from
//! the last ack, so freeing space is the whole recovery.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prost::Message;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use uni_wizard::{Error, ErrorCode};
use uni_wizard_proto::v1::{self, telemetry_event::Kind};

use super::{TelemetryConfig, now_ms, now_us};

/// Tool events remembered for deduplication, at most (the oldest are forgotten first).
pub const MAX_SEEN_CALLS: i64 = 200_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, event BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS hermes_sessions (id TEXT PRIMARY KEY, usage TEXT NOT NULL, ended INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS hermes_calls (
    session_id TEXT NOT NULL, tool_call_id TEXT NOT NULL, status INTEGER NOT NULL,
    tool_name TEXT NOT NULL, arguments TEXT NOT NULL,
    PRIMARY KEY (session_id, tool_call_id, status));
CREATE TABLE IF NOT EXISTS hermes_file (
    id INTEGER PRIMARY KEY CHECK (id = 1), dev INTEGER NOT NULL, ino INTEGER NOT NULL,
    anchor_session TEXT NOT NULL, anchor_time_us INTEGER NOT NULL, session_at_cursor TEXT NOT NULL DEFAULT '',
    replaced INTEGER NOT NULL DEFAULT 0, replaced_at_ms INTEGER NOT NULL DEFAULT 0);
";

/// The counters of a new outbox; `?1` is its first seq. `first_seq` is 1 for an outbox that
/// already has a `next_seq` (made before first seqs came from the clock).
const META: [&str; 2] = [
    "INSERT OR IGNORE INTO meta (key, value) VALUES
        ('first_seq', CASE WHEN EXISTS (SELECT 1 FROM meta WHERE key = 'next_seq') THEN 1 ELSE ?1 END)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', ?1), ('acked_through', ?1 - 1),
        ('acked_at_ms', 0), ('dropped', 0), ('hermes_message_id', 0), ('hermes_session_rowid', 0)",
];

/// The first seq of an outbox created now: the time in microseconds (at least 1).
pub fn first_seq_for_new() -> i64 {
    now_us().max(1)
}

/// One event the Hermes tailer wants sent, before deduplication.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidate {
    /// Sent as is (session seen, token usage, session end).
    Plain(i64, Kind),
    /// A tool event: sent only if `(session_id, tool_call_id, status)` was not sent before; a
    /// result takes the name and arguments of its STARTED event when it has none.
    Tool(i64, v1::HermesToolCallEvent),
}

/// What one pass of the Hermes tailer commits, atomically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HermesBatch {
    /// Events, in order.
    pub candidates: Vec<Candidate>,
    /// The new `messages.id` cursor.
    pub message_id: i64,
    /// The new `sessions.rowid` cursor.
    pub session_rowid: i64,
    /// Sessions to follow from now on, or whose sent token figures changed: (id, usage).
    pub sessions: Vec<(String, String)>,
    /// Sessions that ended (no longer followed).
    pub ended: Vec<String>,
    /// The state.db this pass read and the message at its new cursor (`None`: unchanged).
    pub file: Option<HermesFile>,
}

/// The state.db a Hermes cursor points into, as the tailer last read it: how it tells that
/// file from another one put at the same path (see `hermes::replaced`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HermesFile {
    /// Device of state.db (0 with `ino` 0: not known yet).
    pub dev: u64,
    /// Inode of state.db.
    pub ino: u64,
    /// `session_id` of the message at the cursor ("" when none was read from this file).
    pub anchor_session: String,
    /// `timestamp` of that message, in microseconds.
    pub anchor_time_us: i64,
    /// `id` of the session at the `sessions.rowid` cursor ("" when none was read).
    pub session_at_cursor: String,
}

/// What the outbox holds, for `/health` and `uni-wizard telemetry --status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxStats {
    /// The node.
    pub node: String,
    /// Events waiting for an ack.
    pub buffered: u64,
    /// The bound on `buffered`.
    pub max_buffered: u64,
    /// The seq this outbox started at: `next_seq - first_seq` events were ever numbered.
    pub first_seq: u64,
    /// The seq the next event gets.
    pub next_seq: u64,
    /// Every event up to this seq is acknowledged by the sink.
    pub acked_through: u64,
    /// When the last ack came, ms since the epoch (0: never).
    pub acked_at_ms: i64,
    /// Events dropped because the outbox or its queue was full, ever.
    pub dropped: u64,
    /// The Hermes `messages.id` cursor.
    pub hermes_message_id: i64,
    /// Hermes sessions followed (not ended yet).
    pub hermes_open_sessions: u64,
    /// Time of the oldest buffered event, ms since the epoch (0: none).
    pub oldest_ms: i64,
    /// Times the tailer found Hermes' state.db replaced by another file and started it from
    /// its beginning, ever.
    pub hermes_replaced: u64,
    /// When it last did, ms since the epoch (0: never).
    pub hermes_replaced_at_ms: i64,
    /// Why the outbox cannot be written, while it cannot (known to the process that writes:
    /// the daemon's `/health`; a read-only reader sees `None`).
    pub write_error: Option<WriteError>,
}

/// The outbox's write side failing: since when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteError {
    /// The file and the error, e.g. `cannot write /var/lib/uni-wizard/telemetry-outbox.db:
    /// database or disk is full`.
    pub reason: String,
    /// When the first write failed, ms since the epoch.
    pub since_ms: i64,
}

/// SQLite's codes for a write side that cannot write (space, permissions, the device), as
/// opposed to a busy lock or bad data.
fn is_write_side(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        e.sqlite_error_code(),
        Some(C::DiskFull | C::SystemIoFailure | C::ReadOnly | C::CannotOpen | C::PermissionDenied)
    )
}

/// The outbox.
pub struct Outbox {
    conn: Mutex<Connection>,
    path: PathBuf,
    node: String,
    max_buffered: u64,
    /// Set while writes fail on the write side (see the module docs).
    write_error: Mutex<Option<WriteError>>,
    /// Events dropped since the last commit that could count them (lost in the queue before
    /// the outbox, or with a failed write): in [`OutboxStats::dropped`] at once, and into the
    /// file with the next commit.
    unsaved_drops: AtomicU64,
    /// Woken after every commit that added events (the streamer waits on it).
    pub added: tokio::sync::Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("path", &self.path).finish_non_exhaustive()
    }
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| {
        Error::new(ErrorCode::HomeUnavailable, format!("telemetry outbox {}: {e}", path.display()))
            .with_details(serde_json::json!({ "path": path.display().to_string(), "write_side": is_write_side(&e) }))
    }
}

fn meta(tx: &Connection, key: &str) -> rusqlite::Result<i64> {
    tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
}

/// Events not yet acknowledged: seqs are contiguous and acks remove a prefix, so this is
/// `next_seq - 1 - acked_through` without counting rows.
fn buffered(tx: &Connection) -> rusqlite::Result<i64> {
    Ok((meta(tx, "next_seq")? - 1 - meta(tx, "acked_through")?).max(0))
}

fn set_meta(tx: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    tx.execute("UPDATE meta SET value = ?2 WHERE key = ?1", params![key, value]).map(|_| ())
}

impl Outbox {
    /// Opens (creating) the outbox at `path` for node `node`.
    ///
    /// # Errors
    /// E4002 when the file cannot be opened or set up.
    pub fn open(path: &Path, node: &str, config: &TelemetryConfig) -> Result<Outbox, Error> {
        Outbox::open_with(path, node, config, Duration::from_secs(5))
    }

    fn open_with(path: &Path, node: &str, config: &TelemetryConfig, busy: Duration) -> Result<Outbox, Error> {
        let err = db_err(path);
        let mut conn = Connection::open(path).map_err(&err)?;
        conn.busy_timeout(busy).map_err(&err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(&err)?;
        conn.pragma_update(None, "synchronous", config.durability.pragma()).map_err(&err)?;
        conn.execute_batch(SCHEMA).map_err(&err)?;
        // Set up once: a hook opening the daemon's outbox on every call takes no write lock.
        let set_up: bool = conn
            .query_row("SELECT EXISTS (SELECT 1 FROM meta WHERE key = 'first_seq')", [], |r| r.get(0))
            .map_err(&err)?;
        if !set_up {
            // One transaction, so a daemon and a hook opening a new outbox together agree.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
            let first = first_seq_for_new();
            for sql in META {
                tx.execute(sql, [first]).map_err(&err)?;
            }
            tx.commit().map_err(&err)?;
        }
        Ok(Outbox {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            node: node.to_owned(),
            max_buffered: config.max_buffered,
            write_error: Mutex::new(None),
            unsaved_drops: AtomicU64::new(0),
            added: tokio::sync::Notify::new(),
        })
    }

    /// Opens an existing outbox for another process (the hook), waiting at most `busy` for
    /// the daemon's write lock.
    ///
    /// # Errors
    /// As [`Outbox::open`]; also when the file does not exist (no telemetry role here).
    pub fn open_existing(path: &Path, node: &str, config: &TelemetryConfig, busy: Duration) -> Result<Outbox, Error> {
        if !path.exists() {
            return Err(Error::new(
                ErrorCode::HomeUnavailable,
                format!("no telemetry outbox at {}: is the telemetry role running here?", path.display()),
            ));
        }
        Outbox::open_with(path, node, config, busy)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why writes fail, while they do (see the module docs).
    pub fn write_error(&self) -> Option<WriteError> {
        self.write_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records what a write did: `Ok(true)` committed, `Ok(false)` wrote nothing, `Err` failed.
    /// Logs only the transitions into and out of the failing state, each naming the file.
    fn note(&self, outcome: Result<bool, &Error>) {
        let mut state = self.write_error.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(true) => {
                if let Some(was) = state.take() {
                    metrics::gauge!("uw_telemetry_outbox_writable").set(1.0);
                    tracing::info!(
                        file = %self.path.display(),
                        failed_for_ms = (now_ms() - was.since_ms).max(0),
                        "telemetry outbox writable again; buffering and streaming resume"
                    );
                }
            }
            Err(e) if e.details["write_side"] == true && state.is_none() => {
                let prefix = format!("telemetry outbox {}: ", self.path.display());
                let why = e.message.strip_prefix(&prefix).unwrap_or(&e.message);
                let reason = format!("cannot write {}: {why}", self.path.display());
                metrics::gauge!("uw_telemetry_outbox_writable").set(0.0);
                tracing::error!(
                    file = %self.path.display(),
                    reason = %reason,
                    "telemetry outbox cannot be written: Hermes events wait in state.db, harness events are dropped \
                     and counted, the stream backs off; it recovers by itself once the file can be written"
                );
                *state = Some(WriteError { reason, since_ms: now_ms() });
            }
            Ok(false) | Err(_) => {}
        }
    }

    /// The node whose events these are.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn event(&self, seq: i64, time_ms: i64, kind: Kind) -> v1::TelemetryEvent {
        v1::TelemetryEvent {
            node: self.node.clone(),
            seq: u64::try_from(seq).unwrap_or(0),
            time_unix_ms: time_ms,
            kind: Some(kind),
        }
    }

    /// Counts `n` events lost before they reached the outbox (a full queue): in
    /// [`OutboxStats::dropped`] at once, written with the next commit.
    pub fn count_dropped(&self, n: u64) {
        self.unsaved_drops.fetch_add(n, Ordering::Relaxed);
    }

    /// Numbers and stores events from a source with no cursor of its own (harness, hook).
    /// Events that find the outbox full are dropped and counted, as are those
    /// [`Outbox::count_dropped`] counted since the last commit. Returns how many were stored.
    ///
    /// # Errors
    /// E4002 when the transaction fails (nothing was stored).
    pub fn append(&self, events: Vec<(i64, Kind)>, source: &'static str) -> Result<usize, Error> {
        let n = events.len() as u64;
        let queue_drops = self.unsaved_drops.swap(0, Ordering::Relaxed);
        let r = self.append_tx(events, queue_drops, source);
        if r.is_err() {
            // Nothing of the batch was stored: its events, and the drops it was to record, are
            // counted in memory until a commit can write them.
            self.unsaved_drops.fetch_add(n + queue_drops, Ordering::Relaxed);
        }
        self.note(r.as_ref().map(|_| true));
        r
    }

    fn append_tx(&self, events: Vec<(i64, Kind)>, queue_drops: u64, source: &'static str) -> Result<usize, Error> {
        let err = db_err(&self.path);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        let mut seq = meta(&tx, "next_seq").map_err(&err)?;
        let buffered = buffered(&tx).map_err(&err)?;
        let room = usize::try_from((self.max_buffered as i64 - buffered).max(0)).unwrap_or(0);
        let total = events.len();
        let mut stored = 0;
        for (time_ms, kind) in events.into_iter().take(room) {
            let bytes = self.event(seq, time_ms, kind).encode_to_vec();
            tx.execute("INSERT INTO outbox (seq, time_ms, event) VALUES (?1, ?2, ?3)", params![seq, time_ms, bytes])
                .map_err(&err)?;
            seq += 1;
            stored += 1;
        }
        let dropped = (total - stored) as u64;
        set_meta(&tx, "next_seq", seq).map_err(&err)?;
        if dropped + queue_drops > 0 {
            let d = meta(&tx, "dropped").map_err(&err)?;
            set_meta(&tx, "dropped", d.saturating_add(i64::try_from(dropped + queue_drops).unwrap_or(i64::MAX)))
                .map_err(&err)?;
        }
        tx.commit().map_err(&err)?;
        drop(conn);
        if dropped > 0 {
            metrics::counter!("uw_telemetry_dropped_total", "source" => source).increment(dropped);
            tracing::warn!(dropped, max_buffered = self.max_buffered, source, "telemetry outbox full: events dropped");
        }
        metrics::counter!("uw_telemetry_events_total", "source" => source).increment(stored as u64);
        if stored > 0 {
            self.added.notify_one();
        }
        Ok(stored)
    }

    /// Commits one pass of the Hermes tailer: deduplicated events, the cursor and the
    /// session state, in one transaction. Returns `Ok(None)` without committing anything
    /// when the events do not fit (the tailer retries later from the same cursor), else the
    /// number of events stored. An empty outbox always takes the pass, so a `max_buffered`
    /// smaller than one pass cannot stall the tailer: the bound is exceeded by at most one
    /// pass (`telemetry.batch` rows' events).
    ///
    /// # Errors
    /// E4002 when the transaction fails (nothing was committed).
    pub fn commit_hermes(&self, batch: HermesBatch) -> Result<Option<usize>, Error> {
        let r = self.commit_hermes_tx(batch);
        self.note(r.as_ref().map(Option::is_some));
        r
    }

    fn commit_hermes_tx(&self, batch: HermesBatch) -> Result<Option<usize>, Error> {
        let err = db_err(&self.path);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        let buffered = buffered(&tx).map_err(&err)?;
        let n = batch.candidates.len() as i64;
        if buffered > 0 && buffered + n > self.max_buffered as i64 {
            return Ok(None);
        }
        let mut seq = meta(&tx, "next_seq").map_err(&err)?;
        let mut stored = 0;
        for c in batch.candidates {
            let (time_ms, kind) = match c {
                Candidate::Plain(t, k) => (t, k),
                Candidate::Tool(t, mut ev) => {
                    let added = tx
                        .execute(
                            "INSERT OR IGNORE INTO hermes_calls (session_id, tool_call_id, status, tool_name, arguments)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![ev.session_id, ev.tool_call_id, ev.status, ev.tool_name, ev.arguments_json],
                        )
                        .map_err(&err)?;
                    if added == 0 {
                        continue;
                    }
                    if ev.status != v1::HermesToolCallStatus::Started as i32 {
                        let started: Option<(String, String)> = tx
                            .query_row(
                                "SELECT tool_name, arguments FROM hermes_calls
                                 WHERE session_id = ?1 AND tool_call_id = ?2 AND status = ?3",
                                params![ev.session_id, ev.tool_call_id, v1::HermesToolCallStatus::Started as i32],
                                |r| Ok((r.get(0)?, r.get(1)?)),
                            )
                            .optional()
                            .map_err(&err)?;
                        if let Some((name, args)) = started {
                            if ev.tool_name.is_empty() {
                                ev.tool_name = name;
                            }
                            if ev.arguments_json.is_empty() {
                                ev.arguments_json = args;
                            }
                        }
                    }
                    (t, Kind::HermesToolCall(ev))
                }
            };
            let bytes = self.event(seq, time_ms, kind).encode_to_vec();
            tx.execute("INSERT INTO outbox (seq, time_ms, event) VALUES (?1, ?2, ?3)", params![seq, time_ms, bytes])
                .map_err(&err)?;
            seq += 1;
            stored += 1;
        }
        set_meta(&tx, "next_seq", seq).map_err(&err)?;
        set_meta(&tx, "hermes_message_id", batch.message_id).map_err(&err)?;
        set_meta(&tx, "hermes_session_rowid", batch.session_rowid).map_err(&err)?;
        for (id, usage) in &batch.sessions {
            tx.execute(
                "INSERT INTO hermes_sessions (id, usage, ended) VALUES (?1, ?2, 0)
                 ON CONFLICT (id) DO UPDATE SET usage = excluded.usage",
                params![id, usage],
            )
            .map_err(&err)?;
        }
        for id in &batch.ended {
            tx.execute("DELETE FROM hermes_sessions WHERE id = ?1", [id]).map_err(&err)?;
        }
        if let Some(file) = &batch.file {
            save_hermes_file(&tx, file).map_err(&err)?;
        }
        tx.execute(
            "DELETE FROM hermes_calls WHERE rowid <= (SELECT max(rowid) FROM hermes_calls) - ?1",
            [MAX_SEEN_CALLS],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        drop(conn);
        tracing::debug!(target: super::LAG_TARGET, stage = "outbox_commit", first_seq = seq - i64::try_from(stored).unwrap_or(0), last_seq = seq - 1, t_us = super::now_us());
        metrics::counter!("uw_telemetry_events_total", "source" => "hermes").increment(stored as u64);
        if stored > 0 {
            self.added.notify_one();
        }
        Ok(Some(stored))
    }

    /// The Hermes cursor: (`messages.id`, `sessions.rowid`).
    ///
    /// # Errors
    /// E4002 when the outbox cannot be read.
    pub fn hermes_cursor(&self) -> Result<(i64, i64), Error> {
        let err = db_err(&self.path);
        let conn = self.lock();
        Ok((meta(&conn, "hermes_message_id").map_err(&err)?, meta(&conn, "hermes_session_rowid").map_err(&err)?))
    }

    /// The sessions followed and the token figures last sent for each.
    ///
    /// # Errors
    /// E4002 when the outbox cannot be read.
    pub fn hermes_sessions(&self) -> Result<Vec<(String, String)>, Error> {
        let err = db_err(&self.path);
        let conn = self.lock();
        let mut st = conn.prepare("SELECT id, usage FROM hermes_sessions ORDER BY id").map_err(&err)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    /// The state.db the cursor points into, as last read (all zero and empty before the
    /// first pass).
    ///
    /// # Errors
    /// E4002 when the outbox cannot be read.
    pub fn hermes_file(&self) -> Result<HermesFile, Error> {
        let err = db_err(&self.path);
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT dev, ino, anchor_session, anchor_time_us, session_at_cursor FROM hermes_file WHERE id = 1",
                [],
                |r| {
                    Ok(HermesFile {
                        dev: r.get::<_, i64>(0)? as u64,
                        ino: r.get::<_, i64>(1)? as u64,
                        anchor_session: r.get(2)?,
                        anchor_time_us: r.get(3)?,
                        session_at_cursor: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(&err)?;
        Ok(row.unwrap_or_default())
    }

    /// State.db was replaced by `file`, another file: the cursors go back to its beginning,
    /// the sessions of the old file are no longer followed, and the replacement is counted,
    /// in one transaction. The tool-event dedup keys stay: they name sessions, which a new
    /// file does not share and an older copy does. Returns how often it was replaced, ever.
    ///
    /// # Errors
    /// E4002 when the transaction fails (nothing changed).
    pub fn hermes_replaced(&self, file: &HermesFile) -> Result<u64, Error> {
        let err = db_err(&self.path);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        set_meta(&tx, "hermes_message_id", 0).map_err(&err)?;
        set_meta(&tx, "hermes_session_rowid", 0).map_err(&err)?;
        tx.execute("DELETE FROM hermes_sessions", []).map_err(&err)?;
        save_hermes_file(&tx, file).map_err(&err)?;
        let count: i64 = tx
            .query_row(
                "UPDATE hermes_file SET replaced = replaced + 1, replaced_at_ms = ?1 WHERE id = 1 RETURNING replaced",
                [now_ms()],
                |r| r.get(0),
            )
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Up to `limit` encoded events with seq greater than `after`, in order.
    ///
    /// # Errors
    /// E4002 when the outbox cannot be read.
    pub fn pending(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let err = db_err(&self.path);
        let conn = self.lock();
        let mut st =
            conn.prepare_cached("SELECT seq, event FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2").map_err(&err)?;
        let rows = st
            .query_map(params![i64::try_from(after).unwrap_or(i64::MAX), limit as i64], |r| {
                Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?))
            })
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    /// The sink holds every event up to `through`: forget them. Returns how many went.
    ///
    /// # Errors
    /// E4002 when the transaction fails.
    pub fn ack(&self, through: u64) -> Result<usize, Error> {
        let r = self.ack_tx(through);
        self.note(r.as_ref().map(|_| true));
        r
    }

    fn ack_tx(&self, through: u64) -> Result<usize, Error> {
        let err = db_err(&self.path);
        let through = i64::try_from(through).unwrap_or(i64::MAX);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        let gone = tx.execute("DELETE FROM outbox WHERE seq <= ?1", [through]).map_err(&err)?;
        let before = meta(&tx, "acked_through").map_err(&err)?;
        let last = meta(&tx, "next_seq").map_err(&err)? - 1;
        set_meta(&tx, "acked_through", before.max(through.min(last))).map_err(&err)?;
        set_meta(&tx, "acked_at_ms", now_ms()).map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(gone)
    }

    /// What the outbox holds now.
    ///
    /// # Errors
    /// E4002 when the outbox cannot be read.
    pub fn stats(&self) -> Result<OutboxStats, Error> {
        let err = db_err(&self.path);
        let conn = self.lock();
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        let buffered = buffered(&conn).map_err(&err)?;
        let oldest: Option<i64> = conn
            .query_row("SELECT time_ms FROM outbox ORDER BY seq LIMIT 1", [], |r| r.get(0))
            .optional()
            .map_err(&err)?;
        let open: i64 = conn.query_row("SELECT count(*) FROM hermes_sessions", [], |r| r.get(0)).map_err(&err)?;
        let (replaced, replaced_at_ms) = hermes_replacements(&conn).map_err(&err)?;
        Ok(OutboxStats {
            node: self.node.clone(),
            buffered: u(buffered),
            max_buffered: self.max_buffered,
            // Read-only readers may meet an outbox older than this key.
            first_seq: u(meta(&conn, "first_seq").optional().map_err(&err)?.unwrap_or(1)),
            next_seq: u(meta(&conn, "next_seq").map_err(&err)?),
            acked_through: u(meta(&conn, "acked_through").map_err(&err)?),
            acked_at_ms: meta(&conn, "acked_at_ms").map_err(&err)?,
            dropped: u(meta(&conn, "dropped").map_err(&err)?)
                .saturating_add(self.unsaved_drops.load(Ordering::Relaxed)),
            hermes_message_id: meta(&conn, "hermes_message_id").map_err(&err)?,
            hermes_open_sessions: u(open),
            oldest_ms: oldest.unwrap_or(0),
            write_error: self.write_error(),
            hermes_replaced: u(replaced),
            hermes_replaced_at_ms: replaced_at_ms,
        })
    }
}

/// Records the state.db the cursor points into (the one row of `hermes_file`).
fn save_hermes_file(tx: &Connection, file: &HermesFile) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO hermes_file (id, dev, ino, anchor_session, anchor_time_us, session_at_cursor)
         VALUES (1, ?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET dev = excluded.dev, ino = excluded.ino,
             anchor_session = excluded.anchor_session, anchor_time_us = excluded.anchor_time_us,
             session_at_cursor = excluded.session_at_cursor",
        params![file.dev as i64, file.ino as i64, file.anchor_session, file.anchor_time_us, file.session_at_cursor],
    )
    .map(|_| ())
}

/// (times replaced, when last): zero for an outbox without the table (a read-only reader may
/// meet one written by an older build).
fn hermes_replacements(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let has: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'hermes_file')", [], |r| r.get(0))?;
    if !has {
        return Ok((0, 0));
    }
    let row = conn
        .query_row("SELECT replaced, replaced_at_ms FROM hermes_file WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.unwrap_or((0, 0)))
}

/// Reads an outbox's figures without opening it for writing (the CLI, on the same host).
///
/// # Errors
/// E4002 when the file is missing or unreadable.
pub fn read_stats(path: &Path, node: &str, max_buffered: u64) -> Result<OutboxStats, Error> {
    let err = db_err(path);
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(&err)?;
    conn.busy_timeout(Duration::from_secs(2)).map_err(&err)?;
    let ob = Outbox {
        conn: Mutex::new(conn),
        path: path.to_owned(),
        node: node.to_owned(),
        max_buffered,
        write_error: Mutex::new(None),
        unsaved_drops: AtomicU64::new(0),
        added: Default::default(),
    };
    ob.stats()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(n: u64) -> (i64, Kind) {
        (n as i64, Kind::Hook(v1::HookEvent { hook: format!("h{n}"), ..Default::default() }))
    }

    fn tool(call: &str, status: v1::HermesToolCallStatus, name: &str) -> Candidate {
        Candidate::Tool(
            1,
            v1::HermesToolCallEvent {
                session_id: "s".into(),
                tool_call_id: call.into(),
                tool_name: name.into(),
                arguments_json: if name.is_empty() { String::new() } else { "{}".into() },
                status: status as i32,
                ..Default::default()
            },
        )
    }

    /// Proves a write-side failure (SQLITE_FULL) makes the outbox's write error, naming the
    /// file, a state: set by the first failure, kept (with its first time) by the next, untouched
    /// by a busy lock, shown in the stats, and cleared by the next write that commits.
    #[test]
    fn a_failing_write_side_is_a_state_until_a_write_commits() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("outbox.db");
        let ob = Outbox::open(&path, "n", &TelemetryConfig::default()).expect("open");
        let fail = |code: i32| db_err(&path)(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None));
        ob.note(Err(&fail(rusqlite::ffi::SQLITE_BUSY)));
        assert_eq!(ob.write_error(), None, "a busy lock is not the write side failing");
        ob.note(Err(&fail(rusqlite::ffi::SQLITE_FULL)));
        let first = ob.write_error().expect("failing");
        assert!(first.reason.starts_with(&format!("cannot write {}: ", path.display())), "{}", first.reason);
        ob.note(Err(&fail(rusqlite::ffi::SQLITE_IOERR)));
        assert_eq!(ob.write_error(), Some(first.clone()), "the first failure is the one shown");
        assert_eq!(ob.stats().expect("stats").write_error, Some(first));
        ob.append(vec![hook(1)], "hook").expect("writes");
        assert_eq!(ob.write_error(), None, "a committed write clears it");
    }

    /// Proves events lost to a failed write are in `dropped` at once, and in the file with the
    /// next commit; they were only in the metric, never in `/health` or `telemetry --status`
    /// (found in the outside trial with a full disk).
    #[test]
    fn events_a_failed_write_loses_are_counted_as_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("outbox.db");
        let cfg = TelemetryConfig::default();
        let ob = Outbox::open(&path, "n", &cfg).expect("open");
        let side = Connection::open(&path).expect("second connection");
        side.execute_batch("ALTER TABLE outbox RENAME TO hidden").expect("hide the table");
        ob.count_dropped(1);
        assert!(ob.append(vec![hook(1), hook(2)], "hook").is_err(), "the write fails");
        side.execute_batch("ALTER TABLE hidden RENAME TO outbox").expect("restore the table");
        assert_eq!(ob.stats().expect("stats").dropped, 3, "two events and one queue drop, before any commit");
        ob.append(vec![hook(3)], "hook").expect("writes again");
        assert_eq!(ob.stats().expect("stats").dropped, 3);
        drop(ob);
        let again = Outbox::open(&path, "n", &cfg).expect("reopen");
        assert_eq!(again.stats().expect("stats").dropped, 3, "the count reached the file");
    }

    /// Proves seqs start at the outbox's first seq, continue across a reopen, and are
    /// forgotten only once acked.
    #[test]
    fn seqs_survive_reopen_and_acks_remove() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("o.db");
        let cfg = TelemetryConfig::default();
        let before = first_seq_for_new() as u64;
        let ob = Outbox::open(&path, "n", &cfg).expect("open");
        let f = ob.stats().expect("stats").first_seq;
        assert!(f >= before, "first seq {f} comes from the clock (>= {before})");
        assert_eq!(ob.append(vec![hook(1), hook(2)], "test").expect("append"), 2);
        drop(ob);
        let ob = Outbox::open(&path, "n", &cfg).expect("reopen");
        ob.append(vec![hook(3)], "test").expect("append");
        let seqs: Vec<u64> = ob.pending(0, 10).expect("pending").into_iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, vec![f, f + 1, f + 2]);
        assert_eq!(ob.ack(f + 1).expect("ack"), 2);
        let s = ob.stats().expect("stats");
        assert_eq!((s.first_seq, s.buffered, s.next_seq, s.acked_through), (f, 1, f + 3, f + 1));
    }

    /// Proves an outbox made after its predecessor was deleted numbers above every seq the old
    /// one used, starting empty and with nothing acknowledged.
    #[test]
    fn a_recreated_outbox_numbers_above_the_old_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("o.db");
        let cfg = TelemetryConfig::default();
        let ob = Outbox::open(&path, "n", &cfg).expect("open");
        ob.append((1..=100).map(hook).collect(), "test").expect("append");
        let last = ob.stats().expect("stats").next_seq - 1;
        drop(ob);
        for f in ["o.db", "o.db-wal", "o.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let ob = Outbox::open(&path, "n", &cfg).expect("recreate");
        let s = ob.stats().expect("stats");
        assert!(s.first_seq > last, "new first seq {} above the old last {last}", s.first_seq);
        assert_eq!((s.next_seq, s.acked_through, s.buffered), (s.first_seq, s.first_seq - 1, 0));
    }

    /// Proves an outbox made before first seqs came from the clock keeps its numbering.
    #[test]
    fn an_old_outbox_keeps_its_numbering() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("o.db");
        let c = Connection::open(&path).expect("db");
        c.execute_batch(SCHEMA).expect("schema");
        c.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('next_seq', 5), ('acked_through', 4), ('acked_at_ms', 0),
                 ('dropped', 0), ('hermes_message_id', 0), ('hermes_session_rowid', 0)",
        )
        .expect("old meta");
        drop(c);
        let ob = Outbox::open(&path, "n", &TelemetryConfig::default()).expect("open");
        ob.append(vec![hook(1)], "test").expect("append");
        let s = ob.stats().expect("stats");
        assert_eq!((s.first_seq, s.next_seq, s.acked_through, s.buffered), (1, 6, 4, 1));
    }

    /// Proves a full outbox refuses new events and counts them as dropped.
    #[test]
    fn full_outbox_refuses_and_counts() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = TelemetryConfig { max_buffered: 2, ..TelemetryConfig::default() };
        let ob = Outbox::open(&dir.path().join("o.db"), "n", &cfg).expect("open");
        ob.count_dropped(4);
        assert_eq!(ob.append(vec![hook(1), hook(2), hook(3)], "test").expect("append"), 2);
        let s = ob.stats().expect("stats");
        assert_eq!((s.buffered, s.dropped), (2, 5));
        let batch =
            HermesBatch { candidates: vec![Candidate::Plain(1, hook(9).1)], message_id: 7, ..Default::default() };
        assert_eq!(ob.commit_hermes(batch).expect("commit"), None, "no room: nothing committed");
        assert_eq!(ob.hermes_cursor().expect("cursor"), (0, 0), "cursor did not move");
    }

    /// Proves a replaced state.db resets both cursors and the followed sessions in one step,
    /// keeps the tool-event dedup keys, records the new file and counts the replacement.
    #[test]
    fn a_replaced_state_db_starts_over_and_is_counted() {
        let dir = tempfile::tempdir().expect("tmp");
        let ob = Outbox::open(&dir.path().join("o.db"), "n", &TelemetryConfig::default()).expect("open");
        use v1::HermesToolCallStatus::Started;
        let file = HermesFile {
            dev: 3,
            ino: 11,
            anchor_session: "s".into(),
            anchor_time_us: 5,
            session_at_cursor: "s".into(),
        };
        let batch = HermesBatch {
            candidates: vec![tool("c1", Started, "terminal")],
            message_id: 9,
            session_rowid: 2,
            sessions: vec![("s".into(), String::new())],
            file: Some(file.clone()),
            ..Default::default()
        };
        assert_eq!(ob.commit_hermes(batch).expect("commit"), Some(1));
        assert_eq!(ob.hermes_file().expect("file"), file);
        let new = HermesFile { dev: 3, ino: 12, ..HermesFile::default() };
        assert_eq!(ob.hermes_replaced(&new).expect("replaced"), 1);
        assert_eq!(ob.hermes_cursor().expect("cursor"), (0, 0));
        assert!(ob.hermes_sessions().expect("sessions").is_empty());
        assert_eq!(ob.hermes_file().expect("file"), new);
        let s = ob.stats().expect("stats");
        assert_eq!((s.hermes_replaced, s.hermes_open_sessions), (1, 0));
        assert!(s.hermes_replaced_at_ms > 0);
        let again =
            HermesBatch { candidates: vec![tool("c1", Started, "terminal")], message_id: 1, ..Default::default() };
        assert_eq!(ob.commit_hermes(again).expect("commit"), Some(0), "a call already sent stays sent");
        assert_eq!(ob.hermes_replaced(&new).expect("replaced"), 2);
    }

    /// Proves a re-inserted tool row is sent once and a result takes its call's name and arguments.
    #[test]
    fn tool_events_are_deduplicated_and_paired() {
        let dir = tempfile::tempdir().expect("tmp");
        let ob = Outbox::open(&dir.path().join("o.db"), "n", &TelemetryConfig::default()).expect("open");
        use v1::HermesToolCallStatus::{Started, Succeeded};
        let first = HermesBatch {
            candidates: vec![tool("c1", Started, "terminal"), tool("c1", Started, "terminal")],
            message_id: 2,
            ..Default::default()
        };
        assert_eq!(ob.commit_hermes(first).expect("commit"), Some(1));
        let second = HermesBatch { candidates: vec![tool("c1", Succeeded, "")], message_id: 3, ..Default::default() };
        assert_eq!(ob.commit_hermes(second).expect("commit"), Some(1));
        let again = HermesBatch { candidates: vec![tool("c1", Succeeded, "")], message_id: 4, ..Default::default() };
        assert_eq!(ob.commit_hermes(again).expect("commit"), Some(0));
        let events = ob.pending(0, 10).expect("pending");
        let last = v1::TelemetryEvent::decode(events[1].1.as_slice()).expect("decode");
        let Some(Kind::HermesToolCall(t)) = last.kind else { panic!("tool event") };
        assert_eq!((t.tool_name.as_str(), t.arguments_json.as_str()), ("terminal", "{}"));
        assert_eq!(ob.hermes_cursor().expect("cursor").0, 4);
    }
}
