//! Exactly once at the worker: the durable store of keyed calls, `<home>/once.db`.
//!
//! A keyed dispatch is named by `(submitter house, key)` (the submitter is `caller_house`, else
//! the dispatching router's house). This worker runs
//! such a call at most once, across restarts and crashes, and answers every repeat with the
//! first answer. A router (or a client through any router) can therefore resubmit a keyed
//! task to the same worker as often as it likes: the call never runs twice here. Which worker
//! a key is bound to fleet-wide is not this module's business (that is etcd's, issue 14).
//! The key is the call's own (`ToolCall.idempotency_key`, the CLI's `--idempotency-key`) when it
//! has one; else the router's task key (`ExecuteRequest.task_key`, every routed task has one)
//! for a tool that is neither read-only nor idempotent, whose repeat would change something
//! again (the worker decides, from the tool's contract). Unlike the call's own key, the task
//! key never lets the executor retry the tool within its one run.
//!
//! # The file
//!
//! SQLite, WAL, `synchronous=FULL` (a committed "running" mark has reached the disk before the
//! tool starts, so it survives a power loss), busy timeout 5 s, created 0600 (the answers hold
//! tool outputs). Schema version in `PRAGMA user_version` ([`SCHEMA_VERSION`]); a newer file
//! is refused at start. One table, `tasks`, keyed `(submitter, key)`, `WITHOUT ROWID`:
//!
//! | column | holds |
//! |---|---|
//! | `submitter`, `key` | the house (lowercase name) and the idempotency key (at most 256 bytes) |
//! | `digest` | [`digest`]: SHA-256 of the tool, the arguments (canonical JSON, as [`uni_wizard::approval::args_sha256`]), the requested mode and `dry_run` |
//! | `state` | 0 running, 1 done |
//! | `answer` | once done: the `ExecuteResponse` as prost bytes, exactly as first answered |
//! | `task_id` | the router's task id of the first dispatch (at most 256 bytes) |
//! | `started_ms`, `finished_ms` | when it was marked running and done (ms since the epoch) |
//!
//! The digest does not cover the session, proof, timeout or the router's task id: a repeat
//! that differs only there is the same call.
//!
//! # The flow ([`OnceStore::begin`], then [`Claim::finish`])
//!
//! | found | answer |
//! |---|---|
//! | no row | `running` is inserted and committed (fsynced) **before** the tool runs; the call runs; `done` and its answer are stored, then the answer goes back. A refusal made before the tool could act (a full pool, an open breaker, a policy or contract refusal: `ran_nothing`) deletes the row instead, so the key is not spent |
//! | `done`, same digest | the stored answer, `replayed` set; nothing runs |
//! | `done` or `running`, another digest | E1005 "idempotency key reused for a different call"; nothing runs, nothing stored |
//! | `running`, the call in flight in this process | wait for that call's answer (bounded by the call's timeout) and reply with it, `replayed` set |
//! | `running`, left by an earlier process (killed mid-call) | E3012 with `details.maybe_ran: true` (the shape the router uses), stored as the row's final answer so every later repeat gets the same; never run |
//!
//! **A store that cannot be written** (disk full, the file removed or read-only) refuses keyed
//! calls with E3015 (retryable: nothing ran, and freeing the disk is the whole fix) rather than
//! run them unrecorded; calls without a key are not affected. It is a state, as for the
//! telemetry outbox: the first failure logs one line and sets [`OnceStore::write_error`]
//! (`/health` says `degraded`), the first write that commits again clears it. When only the
//! `done` write of a call that ran fails, the answer still goes back and stays in memory for
//! repeats in this process; after a restart such a row reads as left running (`maybe_ran`),
//! which is safe: it is never run again.
//!
//! # Retention
//!
//! Done rows are kept `worker.once.retention_ms` after they finished (default 7 days) and at
//! most `worker.once.max_rows` of them (default 100 000), the oldest finished first out; both
//! are live settings. Pruning runs in the inserting transaction every [`PRUNE_EVERY`] inserts
//! (and at start), at most [`PRUNE_BATCH`] rows at a time, so it keeps up with any insert rate
//! without a long transaction. A `running` row is never pruned. **A key resubmitted after its
//! row was pruned runs again.**

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prost::Message;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use uni_wizard::{Error, ErrorCode, House, Mode};
use uni_wizard_proto::v1::{ExecuteResponse, execute_response};

use crate::config::OnceConfig;
use crate::wire;

/// The file under the node's home.
pub const FILE: &str = "once.db";

/// The schema version kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// Inserts between two prunes.
pub const PRUNE_EVERY: u64 = 64;

/// Rows deleted by one prune, at most (per rule: age, then count).
pub const PRUNE_BATCH: i64 = 1_000;

const RUNNING: i64 = 0;
const DONE: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    submitter   TEXT NOT NULL,
    key         TEXT NOT NULL,
    digest      TEXT NOT NULL,
    state       INTEGER NOT NULL,
    answer      BLOB,
    task_id     TEXT NOT NULL,
    started_ms  INTEGER NOT NULL,
    finished_ms INTEGER,
    PRIMARY KEY (submitter, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_done ON tasks (finished_ms) WHERE state = 1;
";

/// What names a keyed call: the submitting house and its idempotency key.
pub type Key = (House, String);

/// The digest of what a keyed call asks for: SHA-256 of the canonical JSON of its tool, its
/// arguments (serde_json's map is ordered by key, as for `approval::args_sha256`), the mode it
/// asked for (`None`: the worker's default, whatever that is when it runs) and `dry_run`.
pub fn digest(request: &uni_wizard::Request, mode: Option<Mode>) -> String {
    uni_wizard::hash::sha256_value(&json!({
        "tool": request.tool,
        "args": request.args,
        "mode": mode.map(Mode::as_str),
        "dry_run": request.dry_run,
    }))
}

/// The store's write side failing: since when and why (`/health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteError {
    /// The file and SQLite's error.
    pub reason: String,
    /// When the first write failed, ms since the epoch.
    pub since_ms: i64,
}

/// What [`OnceStore::begin`] decided.
#[derive(Debug)]
pub enum Begin {
    /// Run the call: it is durably marked running. Give its answer to [`Claim::finish`].
    Run(Claim),
    /// Answer with this and run nothing (a replay, a reused key, a call that may have run).
    Answer(Box<ExecuteResponse>),
    /// The same call is in flight in this process: its answer comes on this channel.
    Wait(watch::Receiver<Option<ExecuteResponse>>),
}

/// The right (and duty) to run one keyed call and store its answer. Dropped without
/// [`Claim::finish`] (the run was cancelled), the row stays running, so a later repeat gets
/// `maybe_ran`, and calls waiting for it are told the same.
#[derive(Debug)]
pub struct Claim {
    store: std::sync::Arc<OnceStore>,
    key: Option<Key>,
    house: House,
    node: String,
}

/// A call in flight in this process (or one whose `done` could not be written).
struct Flight {
    digest: String,
    answer: watch::Sender<Option<ExecuteResponse>>,
}

/// The exactly-once store (see the module docs).
pub struct OnceStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    flights: Mutex<HashMap<Key, Flight>>,
    write_error: Mutex<Option<WriteError>>,
    inserts: AtomicU64,
    /// (device, inode) of the file opened: a store whose file was removed or replaced would
    /// go on writing to the unlinked inode and lose every row at the next start.
    identity: (u64, u64),
}

impl std::fmt::Debug for OnceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnceStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Creates `path` empty with mode 0600 unless it exists, so SQLite (which gives its `-wal`
/// and `-shm` files the database's mode) never makes a world-readable store.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// An answer holding `e`.
pub fn error_response(e: &Error) -> ExecuteResponse {
    ExecuteResponse { result: Some(execute_response::Result::Error(wire::error_to_wire(e))), replayed: false }
}

fn mismatch(key: &Key) -> Error {
    Error::new(ErrorCode::InvalidInput, "idempotency key reused for a different call")
        .with_details(json!({ "field": "call.idempotency_key", "submitter": key.0, "reason": "another tool, arguments, mode or dry_run than the first call with this key" }))
}

impl OnceStore {
    /// Opens (creating, 0600) the store at `path` and prunes it once with `limits`.
    ///
    /// # Errors
    /// E4002 when the file cannot be created, opened or set up, or its schema is newer than
    /// this build.
    pub fn open(path: &Path, limits: &OnceConfig) -> Result<OnceStore, Error> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            Error::new(ErrorCode::HomeUnavailable, format!("exactly-once store {}: {what}: {e}", path.display()))
                .with_details(json!({ "path": path.display().to_string(), "reason": e.to_string() }))
        };
        create_private(path).map_err(|e| err("cannot create", &e))?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| err("cannot open", &e))?;
        let setup = |conn: &mut Connection| -> rusqlite::Result<i64> {
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version < SCHEMA_VERSION {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute_batch(SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
                tx.commit()?;
            }
            Ok(version)
        };
        let version = setup(&mut conn).map_err(|e| err("cannot set up", &e))?;
        if version > SCHEMA_VERSION {
            return Err(err("schema is newer than this build", &format!("user_version {version} > {SCHEMA_VERSION}")));
        }
        prune(&conn, now_ms(), limits).map_err(|e| err("cannot prune", &e))?;
        let identity = identity(path).map_err(|e| err("cannot stat", &e))?;
        Ok(OnceStore {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            flights: Mutex::new(HashMap::new()),
            write_error: Mutex::new(None),
            inserts: AtomicU64::new(0),
            identity,
        })
    }

    /// E3015 unless the path still names the file opened (one `stat`).
    fn same_file(&self) -> Result<(), Error> {
        match identity(&self.path) {
            Ok(id) if id == self.identity => Ok(()),
            Ok(_) => Err(self.failed_with("the file was replaced since the worker opened it".into())),
            Err(e) => Err(self.failed_with(format!("the file is gone: {e}"))),
        }
    }

    fn failed_with(&self, reason: String) -> Error {
        self.wrote(&Err(rusqlite::Error::ToSqlConversionFailure(reason.clone().into())));
        Error::new(
            ErrorCode::OnceUnavailable,
            format!(
                "exactly-once store {}: {reason}; keyed calls are refused until the worker restarts",
                self.path.display()
            ),
        )
        .with_details(json!({ "path": self.path.display().to_string(), "reason": reason }))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why keyed calls are refused now, while they are (see the module docs).
    pub fn write_error(&self) -> Option<WriteError> {
        lock(&self.write_error).clone()
    }

    fn wrote(&self, result: &rusqlite::Result<()>) {
        let mut state = lock(&self.write_error);
        match (result, state.is_some()) {
            (Ok(()), true) => {
                tracing::info!(file = %self.path.display(), "exactly-once store writes again");
                *state = None;
            }
            (Err(e), false) => {
                let reason = format!("cannot write {}: {e}", self.path.display());
                tracing::error!(file = %self.path.display(), error = %e, "exactly-once store cannot be written: keyed calls are refused (E3015)");
                *state = Some(WriteError { reason, since_ms: now_ms() });
            }
            _ => {}
        }
    }

    fn unavailable(&self, e: &rusqlite::Error) -> Error {
        Error::new(
            ErrorCode::OnceUnavailable,
            format!("exactly-once store {} cannot record the call, so it was not run: {e}", self.path.display()),
        )
        .with_details(json!({ "path": self.path.display().to_string(), "reason": e.to_string() }))
    }

    /// Decides what to do with the keyed call `key` asking for `digest`, dispatched as task
    /// `task_id` to this worker (`house`, `node`): see the module docs. Blocking (SQLite, an
    /// fsync when the call is new): call it off the async threads.
    ///
    /// # Errors
    /// E1005 for a key or task id over 256 bytes; E3015 when a new call cannot be recorded
    /// as running, or a stored answer cannot be read.
    pub fn begin(
        self: &std::sync::Arc<Self>,
        key: &Key,
        digest: &str,
        task_id: &str,
        who: (House, &str),
        limits: &OnceConfig,
    ) -> Result<Begin, Error> {
        wire::id_field("call.idempotency_key", &key.1)?;
        wire::id_field("task_id", task_id)?;
        {
            let mut flights = lock(&self.flights);
            if let Some(f) = flights.get(key) {
                if f.digest != digest {
                    return Err(mismatch(key));
                }
                return Ok(Begin::Wait(f.answer.subscribe()));
            }
            flights.insert(key.clone(), Flight { digest: digest.to_owned(), answer: watch::channel(None).0 });
        }
        // This process owns the key now; whatever the file says is decided once, here.
        let decided = self.decide(key, digest, task_id, who, limits);
        match decided {
            Ok(None) => Ok(Begin::Run(Claim {
                store: self.clone(),
                key: Some(key.clone()),
                house: who.0,
                node: who.1.to_owned(),
            })),
            Ok(Some(answer)) => {
                self.settle(key, answer.clone(), true);
                Ok(Begin::Answer(Box::new(answer)))
            }
            Err(e) => {
                self.settle(key, error_response(&e), true);
                Err(e)
            }
        }
    }

    /// Reads the row and acts on it in one transaction: `None` means "run it" (the running
    /// mark is committed), `Some` is the answer.
    fn decide(
        &self,
        key: &Key,
        digest: &str,
        task_id: &str,
        (house, node): (House, &str),
        limits: &OnceConfig,
    ) -> Result<Option<ExecuteResponse>, Error> {
        self.same_file()?;
        let mut conn = lock(&self.conn);
        let submitter = key.0.as_str();
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                self.wrote(&Err(clone_err(&e)));
                return Err(self.unavailable(&e));
            }
        };
        let row: Option<Row> = tx
            .query_row(
                "SELECT digest, state, answer, task_id, started_ms FROM tasks WHERE submitter = ?1 AND key = ?2",
                params![submitter, key.1],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(|e| self.unavailable(&e))?;
        match row {
            None => {
                let now = now_ms();
                let insert = tx
                    .execute(
                        "INSERT INTO tasks (submitter, key, digest, state, task_id, started_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![submitter, key.1, digest, RUNNING, task_id, now],
                    )
                    .map(|_| ());
                let pruned = insert.and_then(|()| {
                    if self.inserts.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
                        prune(&tx, now, limits)
                    } else {
                        Ok(())
                    }
                });
                let committed = pruned.and_then(|()| tx.commit());
                self.wrote(&committed.as_ref().map(|_| ()).map_err(clone_err));
                committed.map_err(|e| self.unavailable(&e))?;
                Ok(None)
            }
            Some((stored, _, _, _, _)) if stored != digest => Err(mismatch(key)),
            Some((_, DONE, answer, _, _)) => {
                let bytes = answer.unwrap_or_default();
                let mut answer = ExecuteResponse::decode(bytes.as_slice()).map_err(|e| {
                    Error::new(
                        ErrorCode::OnceUnavailable,
                        format!("exactly-once store {}: the stored answer cannot be read: {e}", self.path.display()),
                    )
                    .with_details(json!({ "path": self.path.display().to_string(), "reason": e.to_string() }))
                })?;
                answer.replayed = true;
                Ok(Some(answer))
            }
            Some((_, _, _, first_task, started)) => {
                // Left running by an earlier process: it may have run. Final from now on.
                let e = Error::new(
                    ErrorCode::WorkerUnavailable,
                    format!(
                        "the call with this idempotency key (task `{first_task}`) was cut off while running: the \
                         worker stopped, or its dispatch was cancelled (a router gave it up); it may have run and is \
                         never run again"
                    ),
                )
                .with_details(json!({
                    "house": house, "node": node, "maybe_ran": true, "first_task_id": first_task, "started_ms": started,
                }));
                let answer = error_response(&e);
                let stored = tx
                    .execute(
                        "UPDATE tasks SET state = ?3, answer = ?4, finished_ms = ?5 WHERE submitter = ?1 AND key = ?2",
                        params![submitter, key.1, DONE, answer.encode_to_vec(), now_ms()],
                    )
                    .map(|_| ())
                    .and_then(|()| tx.commit());
                // Unrecorded, the next repeat finds the row running again and answers the same.
                self.wrote(&stored);
                metrics::counter!("uw_worker_maybe_ran_total").increment(1);
                Ok(Some(answer))
            }
        }
    }

    /// Hands `answer` to the calls waiting for `key` and forgets the flight, unless `forget`
    /// is false (its `done` is not on disk: repeats in this process get it from memory).
    fn settle(&self, key: &Key, answer: ExecuteResponse, forget: bool) {
        let mut flights = lock(&self.flights);
        if let Some(f) = flights.get(key) {
            f.answer.send_replace(Some(answer));
        }
        if forget {
            flights.remove(key);
        }
    }

    /// Stores `answer` as the call's final one, or, for a refusal that proves nothing ran
    /// ([`ran_nothing`]), deletes the row so a repeat is decided afresh.
    fn store(&self, key: &Key, answer: &ExecuteResponse) -> rusqlite::Result<()> {
        let conn = lock(&self.conn);
        if ran_nothing(answer) {
            conn.execute(
                "DELETE FROM tasks WHERE submitter = ?1 AND key = ?2 AND state = ?3",
                params![key.0.as_str(), key.1, RUNNING],
            )?;
            return Ok(());
        }
        let n = conn.execute(
            "UPDATE tasks SET state = ?3, answer = ?4, finished_ms = ?5 WHERE submitter = ?1 AND key = ?2 AND state = ?6",
            params![key.0.as_str(), key.1, DONE, answer.encode_to_vec(), now_ms(), RUNNING],
        )?;
        if n == 1 { Ok(()) } else { Err(rusqlite::Error::QueryReturnedNoRows) }
    }

    /// Prunes now with `limits` at time `now` (the inserts prune on their own; tests and
    /// operators' tools call this).
    ///
    /// # Errors
    /// E3015 when the file cannot be written.
    pub fn prune_at(&self, now: i64, limits: &OnceConfig) -> Result<(), Error> {
        let conn = lock(&self.conn);
        prune(&conn, now, limits).map_err(|e| self.unavailable(&e))
    }

    /// Rows by state: (running, done).
    ///
    /// # Errors
    /// E3015 when the file cannot be read.
    pub fn counts(&self) -> Result<(u64, u64), Error> {
        let conn = lock(&self.conn);
        let count = |state: i64| -> rusqlite::Result<u64> {
            conn.query_row("SELECT count(*) FROM tasks WHERE state = ?1", [state], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0))
        };
        (|| Ok((count(RUNNING)?, count(DONE)?)))().map_err(|e: rusqlite::Error| self.unavailable(&e))
    }
}

/// Whether `answer` is a refusal made before the tool could act, so the key is not spent:
/// the worker's pool or the executor's limit was full (E3005), the breaker was open (E3002),
/// Intelligent mode refused on its prediction (E3010), the input did not validate (E1xxx),
/// or the house's policy or approval said no before the call ran (E2001-E2004, E2006, E2007,
/// E5xxx). Not here: E2005, E2008 and E2009, which tools find while they run (a redirect to a
/// refused host comes after the first request was sent), and every other E3xxx.
fn ran_nothing(answer: &ExecuteResponse) -> bool {
    let Some(execute_response::Result::Error(d)) = &answer.result else { return false };
    let Some(code) = wire::error_code_of(d) else { return false };
    use uni_wizard::ErrorCategory as C;
    matches!(code, ErrorCode::Saturated | ErrorCode::BreakerOpen | ErrorCode::PredictedFailure)
        || matches!(code.category(), C::Contract | C::Auth)
        || matches!(
            code,
            ErrorCode::ToolNotAllowed
                | ErrorCode::ApprovalRequired
                | ErrorCode::ApprovalInvalid
                | ErrorCode::ReadBeforeWriteRequired
                | ErrorCode::ProofRequired
                | ErrorCode::ProofInvalid
        )
}

/// A stored row as `decide` reads it: digest, state, answer, task id, started.
type Row = (String, i64, Option<Vec<u8>>, String, i64);

/// (device, inode) of `path`.
fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// rusqlite errors are not `Clone`; the write-error state keeps the text.
fn clone_err(e: &rusqlite::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(e.to_string().into())
}

/// Deletes done rows finished before `now - retention_ms`, then the oldest done rows beyond
/// `max_rows`, at most [`PRUNE_BATCH`] each. Running rows are never touched.
fn prune(conn: &Connection, now: i64, limits: &OnceConfig) -> rusqlite::Result<()> {
    let cutoff = now.saturating_sub(i64::try_from(limits.retention_ms).unwrap_or(i64::MAX));
    conn.execute(
        "DELETE FROM tasks WHERE (submitter, key) IN
            (SELECT submitter, key FROM tasks WHERE state = 1 AND finished_ms < ?1 ORDER BY finished_ms LIMIT ?2)",
        params![cutoff, PRUNE_BATCH],
    )?;
    let done: i64 = conn.query_row("SELECT count(*) FROM tasks WHERE state = 1", [], |r| r.get(0))?;
    let excess = done.saturating_sub(i64::try_from(limits.max_rows).unwrap_or(i64::MAX));
    if excess > 0 {
        conn.execute(
            "DELETE FROM tasks WHERE (submitter, key) IN
                (SELECT submitter, key FROM tasks WHERE state = 1 ORDER BY finished_ms LIMIT ?1)",
            [excess.min(PRUNE_BATCH)],
        )?;
    }
    Ok(())
}

impl Claim {
    /// Stores `answer` as the call's final answer (an fsync), hands it to the calls waiting
    /// for it and gives it back. When the store cannot be written the answer still goes back
    /// (the call ran) and is kept in memory for repeats in this process (see the module docs).
    /// Blocking: call it off the async threads.
    pub fn finish(mut self, answer: ExecuteResponse) -> ExecuteResponse {
        let Some(key) = self.key.take() else { return answer };
        let stored = self.store.store(&key, &answer);
        if let Err(e) = &stored {
            tracing::error!(file = %self.store.path.display(), error = %e, submitter = %key.0, "the answer of a keyed call that ran could not be stored; a repeat after a restart gets maybe_ran");
        }
        self.store.wrote(&stored);
        self.store.settle(&key, answer.clone(), stored.is_ok());
        answer
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let e = Error::new(
                ErrorCode::WorkerUnavailable,
                "the call with this idempotency key was cut off while it ran; it may have run",
            )
            .with_details(json!({ "house": self.house, "node": self.node, "maybe_ran": true }));
            self.store.settle(&key, error_response(&e), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uni_wizard_proto::v1;

    use super::*;

    const WHO: (House, &str) = (House::Ezra, "ezra-node");

    fn limits() -> OnceConfig {
        OnceConfig::default()
    }

    fn key(k: &str) -> Key {
        (House::Allegro, k.to_owned())
    }

    fn ok(text: &str) -> ExecuteResponse {
        let o = v1::Outcome { tool: "http_post".into(), output_json: text.into(), ..Default::default() };
        ExecuteResponse { result: Some(execute_response::Result::Outcome(o)), replayed: false }
    }

    fn open(dir: &Path) -> Arc<OnceStore> {
        Arc::new(OnceStore::open(&dir.join(FILE), &limits()).expect("opens"))
    }

    fn code(a: &ExecuteResponse) -> Option<String> {
        match &a.result {
            Some(execute_response::Result::Error(d)) => Some(d.code.clone()),
            _ => None,
        }
    }

    fn details(a: &ExecuteResponse) -> serde_json::Value {
        match &a.result {
            Some(execute_response::Result::Error(d)) => serde_json::from_str(&d.details_json).expect("json"),
            _ => serde_json::Value::Null,
        }
    }

    fn run(store: &Arc<OnceStore>, k: &Key, digest: &str) -> Claim {
        match store.begin(k, digest, "t-1", WHO, &limits()).expect("begins") {
            Begin::Run(c) => c,
            other => panic!("expected to run, got {other:?}"),
        }
    }

    fn answered(store: &Arc<OnceStore>, k: &Key, digest: &str) -> ExecuteResponse {
        match store.begin(k, digest, "t-2", WHO, &limits()).expect("begins") {
            Begin::Answer(a) => *a,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    /// Proves a new key is marked running on disk before it runs (a second handle on the file
    /// sees the row), and done with its answer after `finish`; the file is 0600 and versioned.
    #[test]
    fn a_new_key_is_marked_running_durably_then_done() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        let claim = run(&store, &key("k"), "d1");
        let other = Connection::open(dir.path().join(FILE)).expect("second handle");
        let state: i64 = other.query_row("SELECT state FROM tasks WHERE key = 'k'", [], |r| r.get(0)).expect("row");
        assert_eq!(state, RUNNING, "the running mark is committed before the call runs");
        let back = claim.finish(ok("first"));
        assert!(!back.replayed);
        let (state, answer): (i64, Vec<u8>) = other
            .query_row("SELECT state, answer FROM tasks WHERE key = 'k'", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("row");
        assert_eq!((state, ExecuteResponse::decode(answer.as_slice()).expect("decodes")), (DONE, ok("first")));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(FILE)).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "answers hold tool outputs");
        let version: i64 = other.pragma_query_value(None, "user_version", |r| r.get(0)).expect("version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    /// Proves a done key with the same digest is answered from the file, `replayed` set, also
    /// by a new process (a reopened store), and nothing is claimed to run.
    #[test]
    fn a_done_key_with_the_same_call_replays_the_stored_answer() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        run(&store, &key("k"), "d1").finish(ok("first"));
        let again = answered(&store, &key("k"), "d1");
        assert_eq!(again, ExecuteResponse { replayed: true, ..ok("first") });
        drop(store);
        let reopened = open(dir.path());
        assert_eq!(answered(&reopened, &key("k"), "d1"), ExecuteResponse { replayed: true, ..ok("first") });
        // Another submitter's same key is another call.
        let theirs = (House::Timmy, "k".to_owned());
        run(&reopened, &theirs, "d2").finish(ok("theirs"));
    }

    /// Proves a key reused for another call (done or running) is refused with E1005 and
    /// changes nothing.
    #[test]
    fn a_key_reused_for_a_different_call_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        run(&store, &key("done"), "d1").finish(ok("first"));
        let e = store.begin(&key("done"), "d2", "t", WHO, &limits()).expect_err("refused");
        assert_eq!(e.code, ErrorCode::InvalidInput, "{e}");
        assert!(e.message.contains("idempotency key reused for a different call"), "{e}");
        let running = run(&store, &key("running"), "d1");
        let e = store.begin(&key("running"), "d2", "t", WHO, &limits()).expect_err("refused");
        assert_eq!(e.code, ErrorCode::InvalidInput, "{e}");
        drop(running);
        // After a restart the running row is still the first call's: another digest is refused.
        let reopened = open(dir.path());
        let e = reopened.begin(&key("running"), "d2", "t", WHO, &limits()).expect_err("refused");
        assert_eq!(e.code, ErrorCode::InvalidInput, "{e}");
        assert_eq!(answered(&reopened, &key("done"), "d1"), ExecuteResponse { replayed: true, ..ok("first") });
    }

    /// Proves a row left running by an earlier process is answered E3012 `maybe_ran`, that
    /// answer is stored as final (a third asking gets the same, from the file), and it is
    /// never claimed to run.
    #[test]
    fn a_row_left_running_by_an_earlier_process_ends_maybe_ran() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let store = open(dir.path());
            let claim = run(&store, &key("k"), "d1");
            // The process dies mid-call: neither finish nor drop runs.
            std::mem::forget(claim);
        }
        let store = open(dir.path());
        let first = answered(&store, &key("k"), "d1");
        assert_eq!(code(&first).as_deref(), Some("E3012"));
        assert_eq!(details(&first)["maybe_ran"], true);
        assert_eq!(details(&first)["first_task_id"], "t-1", "names the first dispatch");
        drop(store);
        let store = open(dir.path());
        let again = answered(&store, &key("k"), "d1");
        assert!(again.replayed);
        assert_eq!(ExecuteResponse { replayed: false, ..again }, first, "every later repeat gets the same");
        assert_eq!(store.counts().expect("counts"), (0, 1));
    }

    /// Proves a concurrent repeat of a call in flight waits for that call's answer instead of
    /// running, and a different call under the same key is refused at once.
    #[tokio::test]
    async fn a_concurrent_duplicate_waits_for_the_first_answer() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        let claim = run(&store, &key("k"), "d1");
        let Begin::Wait(mut rx) = store.begin(&key("k"), "d1", "t-2", WHO, &limits()).expect("begins") else {
            panic!("the duplicate must wait");
        };
        assert!(store.begin(&key("k"), "d2", "t-3", WHO, &limits()).is_err(), "another call: E1005");
        let waiter = tokio::spawn(async move { rx.wait_for(Option::is_some).await.map(|a| a.clone()).ok().flatten() });
        tokio::task::yield_now().await;
        claim.finish(ok("first"));
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("in time").expect("joined");
        assert_eq!(got, Some(ok("first")));
        assert_eq!(answered(&store, &key("k"), "d1"), ExecuteResponse { replayed: true, ..ok("first") });
    }

    /// Proves a store that cannot be written refuses new keyed calls with E3015 and shows the
    /// write error, a call whose `done` could not be written is still answered from memory in
    /// this process, and the state clears when the store writes again.
    #[test]
    fn an_unwritable_store_refuses_keyed_calls_with_e3014() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        let claim = run(&store, &key("ran"), "d1");
        // The disk fills up: SQLite may not grow the file past the pages it has, and a row
        // larger than a page needs new ones.
        {
            let conn = lock(&store.conn);
            let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0)).expect("pages");
            conn.pragma_update(None, "max_page_count", pages).expect("cap");
        }
        let big = "d".repeat(6_000);
        let e = store.begin(&key("new"), &big, "t", WHO, &limits()).expect_err("refused");
        assert_eq!(e.code, ErrorCode::OnceUnavailable, "{e}");
        assert!(e.code.is_transient(), "nothing ran: retryable");
        assert!(store.write_error().is_some_and(|w| w.reason.contains(FILE)), "{:?}", store.write_error());
        // The call that ran keeps its answer for repeats in this process.
        let output = "r".repeat(6_000);
        assert_eq!(claim.finish(ok(&output)), ok(&output));
        let Begin::Wait(rx) = store.begin(&key("ran"), "d1", "t", WHO, &limits()).expect("begins") else {
            panic!("answered from memory");
        };
        assert_eq!(rx.borrow().clone(), Some(ok(&output)));
        // Space comes back: the next keyed call records, and the state clears.
        lock(&store.conn).pragma_update(None, "max_page_count", 1_073_741_823).expect("uncap");
        run(&store, &key("later"), &big).finish(ok("later"));
        assert_eq!(store.write_error(), None);
    }

    /// Proves a store whose file was removed (SQLite would go on writing to the unlinked inode
    /// and lose every row at the next start) or replaced refuses keyed calls, replays included.
    #[test]
    fn a_removed_store_refuses_keyed_calls() {
        let dir = tempfile::tempdir().expect("dir");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("home");
        let store = open(&home);
        run(&store, &key("done"), "d1").finish(ok("x"));
        std::fs::remove_dir_all(&home).expect("removed");
        let e = store.begin(&key("k"), "d1", "t", WHO, &limits()).expect_err("refused");
        assert_eq!(e.code, ErrorCode::OnceUnavailable, "{e}");
        let e = store.begin(&key("done"), "d1", "t", WHO, &limits()).expect_err("refused");
        assert_eq!(e.code, ErrorCode::OnceUnavailable, "a replay from a file that is gone: {e}");
        assert!(store.write_error().is_some_and(|w| w.reason.contains("gone")), "{:?}", store.write_error());
        // A new empty file at the path is not the store either.
        std::fs::create_dir(&home).expect("home again");
        std::fs::write(home.join(FILE), b"").expect("new file");
        let e = store.begin(&key("k"), "d1", "t", WHO, &limits()).expect_err("refused");
        assert!(e.message.contains("replaced"), "{e}");
    }

    /// Proves retention drops done rows older than `retention_ms` and the oldest done rows
    /// beyond `max_rows`, never a running row, and a pruned key runs again.
    #[test]
    fn retention_prunes_old_and_excess_done_rows_never_running_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        let running = run(&store, &key("running"), "d");
        for i in 0..5 {
            run(&store, &key(&format!("done-{i}")), "d").finish(ok("x"));
        }
        {
            let conn = lock(&store.conn);
            for i in 0..5 {
                conn.execute(
                    "UPDATE tasks SET finished_ms = ?1 WHERE key = ?2",
                    params![1_000 + i, format!("done-{i}")],
                )
                .expect("age");
            }
            conn.execute("UPDATE tasks SET started_ms = 0 WHERE key = 'running'", []).expect("old");
        }
        // By age: rows finished before 1002 go (done-0, done-1).
        store.prune_at(1_002 + 500, &OnceConfig { retention_ms: 500, max_rows: 100 }).expect("pruned");
        assert_eq!(store.counts().expect("counts"), (1, 3));
        // By count: the oldest beyond 2 go (done-2).
        store.prune_at(0, &OnceConfig { retention_ms: 1, max_rows: 2 }).expect("pruned");
        assert_eq!(store.counts().expect("counts"), (1, 2));
        // Even with nothing allowed, the running row stays.
        store.prune_at(i64::MAX, &OnceConfig { retention_ms: 1, max_rows: 1 }).expect("pruned");
        assert_eq!(store.counts().expect("counts"), (1, 0));
        assert!(
            matches!(store.begin(&key("done-4"), "d", "t", WHO, &limits()), Ok(Begin::Run(_))),
            "pruned: runs again"
        );
        running.finish(ok("late"));
    }

    /// Proves inserts prune on their own every `PRUNE_EVERY` inserts.
    #[test]
    fn inserts_prune_in_batches() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Arc::new(OnceStore::open(&dir.path().join(FILE), &limits()).expect("opens"));
        let tight = OnceConfig { retention_ms: limits().retention_ms, max_rows: 10 };
        for i in 0..PRUNE_EVERY {
            match store.begin(&key(&format!("k{i}")), "d", "t", WHO, &tight).expect("begins") {
                Begin::Run(c) => {
                    c.finish(ok("x"));
                }
                other => panic!("{other:?}"),
            }
        }
        let (_, done) = store.counts().expect("counts");
        assert!(done <= 10 + 1, "pruned to the bound on the {PRUNE_EVERY}th insert, {done} left");
    }

    /// Proves a refusal made before the tool could act (a full pool: E3005) does not spend the
    /// key: the row goes, waiters get the refusal, and a repeat runs; a failure after the
    /// tool acted (E3003) is stored as final.
    #[test]
    fn a_refusal_before_running_does_not_spend_the_key() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        let saturated = error_response(&Error::new(ErrorCode::Saturated, "full"));
        let claim = run(&store, &key("k"), "d1");
        let Begin::Wait(rx) = store.begin(&key("k"), "d1", "t", WHO, &limits()).expect("begins") else {
            panic!("waits");
        };
        claim.finish(saturated.clone());
        assert_eq!(rx.borrow().clone(), Some(saturated));
        assert_eq!(store.counts().expect("counts"), (0, 0), "the row is gone");
        let failed = error_response(&Error::new(ErrorCode::ToolFailed, "the target said 500"));
        run(&store, &key("k"), "d1").finish(failed.clone());
        assert_eq!(answered(&store, &key("k"), "d1"), ExecuteResponse { replayed: true, ..failed });
    }

    /// Proves over-long keys and task ids are refused (any permitted dispatcher can call).
    #[test]
    fn over_long_fields_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        let long = "x".repeat(wire::MAX_ID_LEN + 1);
        assert_eq!(
            store.begin(&key(&long), "d", "t", WHO, &limits()).err().map(|e| e.code),
            Some(ErrorCode::InvalidInput)
        );
        assert_eq!(
            store.begin(&key("k"), "d", &long, WHO, &limits()).err().map(|e| e.code),
            Some(ErrorCode::InvalidInput)
        );
    }

    /// Proves the digest covers tool, arguments (key order aside), mode and dry_run only.
    #[test]
    fn the_digest_covers_the_call_not_its_envelope() {
        let a = uni_wizard::Request::new("http_post", json!({"url": "u", "body": "b"}));
        let mut b =
            uni_wizard::Request::new("http_post", serde_json::from_str(r#"{"body":"b","url":"u"}"#).expect("json"));
        b.session = Some("other".into());
        b.timeout = Some(Duration::from_secs(1));
        assert_eq!(digest(&a, None), digest(&b, None));
        assert_ne!(digest(&a, None), digest(&a, Some(Mode::Simple)));
        let mut dry = a.clone();
        dry.dry_run = true;
        assert_ne!(digest(&a, None), digest(&dry, None));
        assert_ne!(digest(&a, None), digest(&uni_wizard::Request::new("http_get", a.args.clone()), None));
    }
}
