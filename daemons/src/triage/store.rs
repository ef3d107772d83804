//! The triage state in SQLite at `<home>/triage.db`: deliveries seen, the work queue, the
//! issues triaged (with the fingerprint of what was applied and the provenance ids of the
//! harness calls that applied it), the plans the harness refused (code, message, provenance
//! id), and the polling cursors.
//!
//! Schema version 2 (`PRAGMA user_version`). A version-1 store (before triage wrote through
//! the harness) is migrated when opened: `triaged` gains its `provenance` column (`NULL` for
//! the rows from before, which no harness call applied) and `refused` is created.
//!
//! WAL with `synchronous=FULL`: a webhook is answered only after its queue row is on disk, so
//! an accepted delivery survives a crash. One `Mutex<Connection>`; every call holds it for a
//! few short statements. The calls are blocking; async callers run them on the blocking pool.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Value, json};
use uni_wizard::{Error, ErrorCode};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
  id TEXT PRIMARY KEY,
  received_ms INTEGER NOT NULL,
  event TEXT NOT NULL,
  outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_received ON deliveries (received_ms);
CREATE TABLE IF NOT EXISTS queue (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  repo TEXT NOT NULL,
  number INTEGER NOT NULL,
  source TEXT NOT NULL,
  received_ms INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  not_before_ms INTEGER NOT NULL DEFAULT 0,
  last_error TEXT
);
CREATE TABLE IF NOT EXISTS triaged (
  repo TEXT NOT NULL,
  number INTEGER NOT NULL,
  fingerprint TEXT NOT NULL,
  plan TEXT NOT NULL,
  house TEXT,
  source TEXT NOT NULL,
  triaged_ms INTEGER NOT NULL,
  latency_ms INTEGER NOT NULL,
  times INTEGER NOT NULL DEFAULT 1,
  task_key TEXT,
  task_id TEXT,
  task_state TEXT,
  task_house TEXT,
  task_error TEXT,
  provenance TEXT,
  PRIMARY KEY (repo, number)
);
CREATE TABLE IF NOT EXISTS refused (
  repo TEXT NOT NULL,
  number INTEGER NOT NULL,
  fingerprint TEXT NOT NULL,
  plan TEXT NOT NULL,
  code TEXT NOT NULL,
  message TEXT NOT NULL,
  provenance_id TEXT,
  refused_ms INTEGER NOT NULL,
  times INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (repo, number)
);
CREATE TABLE IF NOT EXISTS cursors (
  repo TEXT PRIMARY KEY,
  since TEXT,
  polled_ms INTEGER NOT NULL
);
";

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 2;

/// Deliveries are remembered this long for deduplication.
pub const DELIVERY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One issue waiting to be triaged: the queue rows for it, folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    /// `owner/name`.
    pub repo: String,
    /// The issue number.
    pub number: u64,
    /// What queued it first: `webhook` or `poll`.
    pub source: String,
    /// When the first of its rows arrived (ms since the epoch).
    pub received_ms: i64,
    /// The highest row id folded in (rows up to it are done together).
    pub upto: i64,
    /// Attempts made so far.
    pub attempts: u32,
}

/// What `record_triaged` stores.
#[derive(Debug, Clone)]
pub struct Triaged<'a> {
    /// `owner/name`.
    pub repo: &'a str,
    /// The issue number.
    pub number: u64,
    /// The plan's fingerprint.
    pub fingerprint: &'a str,
    /// The plan as JSON.
    pub plan: &'a Value,
    /// The house routed to.
    pub house: Option<&'a str>,
    /// `webhook` or `poll`.
    pub source: &'a str,
    /// Queue to applied, milliseconds.
    pub latency_ms: i64,
    /// The router task's idempotency key, when there is a task.
    pub task_key: Option<&'a str>,
    /// The provenance ids of the harness calls that applied the plan (empty when Gitea
    /// already showed it).
    pub provenance: &'a [String],
}

/// A plan the harness did not apply, and why: refused (policy, contract) or failed (kept until
/// a plan for the issue applies, or the issue is closed or gone).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// `owner/name`.
    pub repo: String,
    /// The issue number.
    pub number: u64,
    /// The plan's fingerprint.
    pub fingerprint: String,
    /// The plan as JSON.
    pub plan: Value,
    /// The error code, e.g. `E2001`.
    pub code: String,
    /// The error's message.
    pub message: String,
    /// The provenance id of the refused call (its record in the audit chain), when it has one.
    pub provenance_id: Option<String>,
}

/// What the router answered for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskAnswer {
    /// The router's task id.
    pub task_id: String,
    /// `succeeded`, `failed` or `running`.
    pub state: &'static str,
    /// The house it was assigned to.
    pub house: Option<String>,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// A task still to be submitted (after a restart, or a failed submission).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTask {
    /// `owner/name`.
    pub repo: String,
    /// The issue number.
    pub number: u64,
    /// The task key.
    pub key: String,
    /// The plan as JSON.
    pub plan: Value,
}

/// The store.
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Brings a store of an older schema to [`SCHEMA_VERSION`] (the tables `SCHEMA` creates exist
/// by now; only columns added to existing tables are left).
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_provenance =
        conn.prepare("SELECT 1 FROM pragma_table_info('triaged') WHERE name = 'provenance'")?.exists([])?;
    if !has_provenance {
        conn.execute_batch("ALTER TABLE triaged ADD COLUMN provenance TEXT")?;
    }
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
}

/// An issue number as SQLite stores it.
fn sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An issue number read back.
fn num(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn db_error(e: rusqlite::Error) -> Error {
    Error::new(ErrorCode::HomeUnavailable, format!("triage.db: {e}"))
}

impl Store {
    /// Opens (creating) the store.
    ///
    /// # Errors
    /// E4002 when the file cannot be opened or its schema created.
    pub fn open(path: &Path) -> Result<Store, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::new(ErrorCode::HomeUnavailable, format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(db_error)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db_error)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db_error)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db_error)?;
        conn.execute_batch(SCHEMA).map_err(db_error)?;
        migrate(&conn).map_err(db_error)?;
        let cutoff = now_ms() - i64::try_from(DELIVERY_RETENTION.as_millis()).unwrap_or(i64::MAX);
        conn.execute("DELETE FROM deliveries WHERE received_ms < ?1", params![cutoff]).map_err(db_error)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    /// Opens an existing store read-only (the CLI).
    ///
    /// # Errors
    /// E4002 when there is no store at `path`.
    pub fn open_read_only(path: &Path) -> Result<Store, Error> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db_error)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db_error)?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a delivery and, when `work` names an issue, queues it, in one transaction.
    /// Returns `false` (and changes nothing) when the delivery id was seen before.
    ///
    /// # Errors
    /// E4002 when the write fails.
    pub fn accept_delivery(
        &self,
        id: &str,
        event: &str,
        outcome: &str,
        work: Option<(&str, u64)>,
        now: i64,
    ) -> Result<bool, Error> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_error)?;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO deliveries (id, received_ms, event, outcome) VALUES (?1, ?2, ?3, ?4)",
                params![id, now, event, outcome],
            )
            .map_err(db_error)?;
        if inserted == 0 {
            return Ok(false);
        }
        if let Some((repo, number)) = work {
            tx.execute(
                "INSERT INTO queue (repo, number, source, received_ms) VALUES (?1, ?2, 'webhook', ?3)",
                params![repo, sql(number), now],
            )
            .map_err(db_error)?;
        }
        tx.commit().map_err(db_error)?;
        Ok(true)
    }

    /// Queues issues found by polling and moves the repository's cursor, in one transaction.
    ///
    /// # Errors
    /// E4002 when the write fails.
    pub fn enqueue_polled(&self, repo: &str, numbers: &[u64], since: Option<&str>, now: i64) -> Result<(), Error> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_error)?;
        for n in numbers {
            tx.execute(
                "INSERT INTO queue (repo, number, source, received_ms) VALUES (?1, ?2, 'poll', ?3)",
                params![repo, sql(*n), now],
            )
            .map_err(db_error)?;
        }
        tx.execute(
            "INSERT INTO cursors (repo, since, polled_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (repo) DO UPDATE SET since = COALESCE(excluded.since, cursors.since), polled_ms = excluded.polled_ms",
            params![repo, since, now],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)
    }

    /// The polling cursor of a repository (an RFC 3339 time), if it was polled before.
    ///
    /// # Errors
    /// E4002 when the read fails.
    pub fn cursor(&self, repo: &str) -> Result<Option<String>, Error> {
        self.conn()
            .query_row("SELECT since FROM cursors WHERE repo = ?1", params![repo], |r| r.get::<_, Option<String>>(0))
            .optional()
            .map(Option::flatten)
            .map_err(db_error)
    }

    /// The fingerprint last applied to an issue.
    ///
    /// # Errors
    /// E4002 when the read fails.
    pub fn fingerprint(&self, repo: &str, number: u64) -> Result<Option<String>, Error> {
        self.conn()
            .query_row(
                "SELECT fingerprint FROM triaged WHERE repo = ?1 AND number = ?2",
                params![repo, sql(number)],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_error)
    }

    /// The fingerprint and error code of the refused plan, if it was refused at
    /// `since` (ms) or later: a plan this process already put to its harness.
    ///
    /// # Errors
    /// E4002 when the read fails.
    pub fn refused_since(&self, repo: &str, number: u64, since: i64) -> Result<Option<(String, String)>, Error> {
        self.conn()
            .query_row(
                "SELECT fingerprint, code FROM refused WHERE repo = ?1 AND number = ?2 AND refused_ms >= ?3",
                params![repo, sql(number), since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_error)
    }

    /// Fingerprints of many issues of one repository at once (polling).
    ///
    /// # Errors
    /// E4002 when the read fails.
    pub fn fingerprints(&self, repo: &str) -> Result<BTreeMap<u64, String>, Error> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT number, fingerprint FROM triaged WHERE repo = ?1").map_err(db_error)?;
        let rows = stmt.query_map(params![repo], |r| Ok((num(r.get(0)?), r.get::<_, String>(1)?))).map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)
    }

    /// Up to `limit` issues due now, oldest first, each with its rows folded.
    ///
    /// # Errors
    /// E4002 when the read fails.
    pub fn due(&self, now: i64, limit: usize) -> Result<(Vec<Work>, Option<i64>), Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT repo, number,
                   (SELECT q.source FROM queue q WHERE q.repo = queue.repo AND q.number = queue.number ORDER BY q.id LIMIT 1),
                   MIN(received_ms), MAX(id), MAX(attempts)
                 FROM queue WHERE not_before_ms <= ?1 GROUP BY repo, number ORDER BY MIN(id) LIMIT ?2",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(params![now, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok(Work {
                    repo: r.get(0)?,
                    number: num(r.get(1)?),
                    source: r.get(2)?,
                    received_ms: r.get(3)?,
                    upto: r.get(4)?,
                    attempts: r.get(5)?,
                })
            })
            .map_err(db_error)?;
        let work: Vec<Work> = rows.collect::<Result<_, _>>().map_err(db_error)?;
        let next: Option<i64> = conn
            .query_row("SELECT MIN(not_before_ms) FROM queue WHERE not_before_ms > ?1", params![now], |r| r.get(0))
            .map_err(db_error)?;
        Ok((work, next))
    }

    /// Removes the rows of an issue up to `upto`: the work is done.
    ///
    /// # Errors
    /// E4002 when the write fails.
    pub fn done(&self, repo: &str, number: u64, upto: i64) -> Result<(), Error> {
        self.conn()
            .execute("DELETE FROM queue WHERE repo = ?1 AND number = ?2 AND id <= ?3", params![repo, sql(number), upto])
            .map(|_| ())
            .map_err(db_error)
    }

    /// Puts an issue back for a later attempt, or drops it after `max_attempts`. Returns
    /// whether it was dropped.
    ///
    /// # Errors
    /// E4002 when the write fails.
    pub fn retry_later(&self, w: &Work, error: &str, not_before: i64, max_attempts: u32) -> Result<bool, Error> {
        let conn = self.conn();
        if w.attempts + 1 >= max_attempts {
            conn.execute(
                "DELETE FROM queue WHERE repo = ?1 AND number = ?2 AND id <= ?3",
                params![w.repo, sql(w.number), w.upto],
            )
            .map_err(db_error)?;
            return Ok(true);
        }
        conn.execute(
            "UPDATE queue SET attempts = attempts + 1, not_before_ms = ?4, last_error = ?5
             WHERE repo = ?1 AND number = ?2 AND id <= ?3",
            params![w.repo, sql(w.number), w.upto, not_before, error],
        )
        .map_err(db_error)?;
        Ok(false)
    }

    /// Records what was applied to an issue (its task still to be submitted when it has a key).
    ///
    /// # Errors
    /// E4002 when the write fails.
    /// A refusal recorded for the issue before is cleared: its plan (or a newer one) applied.
    ///
    /// # Errors
    /// E4002 when the write fails.
    pub fn record_triaged(&self, t: &Triaged<'_>, now: i64) -> Result<(), Error> {
        let state = t.task_key.map(|_| "pending");
        let provenance = serde_json::to_string(t.provenance).unwrap_or_else(|_| "[]".into());
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_error)?;
        tx.execute(
            "INSERT INTO triaged (repo, number, fingerprint, plan, house, source, triaged_ms, latency_ms, task_key, task_id, task_state, task_error, provenance)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10, NULL, ?11)
             ON CONFLICT (repo, number) DO UPDATE SET fingerprint = excluded.fingerprint, plan = excluded.plan,
               house = excluded.house, source = excluded.source, triaged_ms = excluded.triaged_ms,
               latency_ms = excluded.latency_ms, times = triaged.times + 1, task_key = excluded.task_key,
               task_id = NULL, task_state = excluded.task_state, task_house = NULL, task_error = NULL,
               provenance = excluded.provenance",
            params![
                t.repo,
                sql(t.number),
                t.fingerprint,
                t.plan.to_string(),
                t.house,
                t.source,
                now,
                t.latency_ms,
                t.task_key,
                state,
                provenance
            ],
        )
        .map_err(db_error)?;
        tx.execute("DELETE FROM refused WHERE repo = ?1 AND number = ?2", params![t.repo, sql(t.number)])
            .map_err(db_error)?;
        tx.commit().map_err(db_error)
    }

    /// Records that the harness refused an issue's plan (replacing an earlier refusal of it,
    /// counting the times).
    ///
    /// # Errors
    /// E4002 when the write fails.
    pub fn record_refused(&self, r: &Refused, now: i64) -> Result<(), Error> {
        self.conn()
            .execute(
                "INSERT INTO refused (repo, number, fingerprint, plan, code, message, provenance_id, refused_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (repo, number) DO UPDATE SET fingerprint = excluded.fingerprint, plan = excluded.plan,
                   code = excluded.code, message = excluded.message, provenance_id = excluded.provenance_id,
                   refused_ms = excluded.refused_ms, times = refused.times + 1",
                params![
                    r.repo,
                    sql(r.number),
                    r.fingerprint,
                    r.plan.to_string(),
                    r.code,
                    r.message,
                    r.provenance_id,
                    now
                ],
            )
            .map(|_| ())
            .map_err(db_error)
    }

    /// Forgets the refusal of an issue that is gone or no longer open: there is nothing left
    /// to apply, so a restart should not queue it again.
    ///
    /// # Errors
    /// E4002 when the write fails.
    pub fn forget_refused(&self, repo: &str, number: u64) -> Result<(), Error> {
        self.conn()
            .execute("DELETE FROM refused WHERE repo = ?1 AND number = ?2", params![repo, sql(number)])
            .map(|_| ())
            .map_err(db_error)
    }

    /// Queues every issue with a refused plan again (at start: the policy may have changed);
    /// returns how many. The refusals stay until a plan applies.
    ///
    /// # Errors
    /// E4002 when the write fails.
    pub fn requeue_refused(&self, now: i64) -> Result<usize, Error> {
        self.conn()
            .execute(
                "INSERT INTO queue (repo, number, source, received_ms) SELECT repo, number, 'retry', ?1 FROM refused",
                params![now],
            )
            .map_err(db_error)
    }

    /// Records the router's answer for an issue's task: its id, state, the house it was
    /// assigned to, and the error when it failed.
    ///
    /// # Errors
    /// E4002 when the write fails.
    pub fn record_task(&self, repo: &str, number: u64, key: &str, answer: &TaskAnswer) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE triaged SET task_id = ?4, task_state = ?5, task_house = ?6, task_error = ?7
                 WHERE repo = ?1 AND number = ?2 AND task_key = ?3",
                params![repo, sql(number), key, answer.task_id, answer.state, answer.house, answer.error],
            )
            .map(|_| ())
            .map_err(db_error)
    }

    /// Tasks recorded but never answered by the router (a restart, a router that was down).
    ///
    /// # Errors
    /// E4002 when the read fails.
    pub fn pending_tasks(&self) -> Result<Vec<PendingTask>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT repo, number, task_key, plan FROM triaged WHERE task_state = 'pending'")
            .map_err(db_error)?;
        let rows = stmt
            .query_map([], |r| {
                let plan: String = r.get(3)?;
                Ok(PendingTask {
                    repo: r.get(0)?,
                    number: num(r.get(1)?),
                    key: r.get(2)?,
                    plan: serde_json::from_str(&plan).unwrap_or(Value::Null),
                })
            })
            .map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)
    }

    /// The status document (`uni-wizard triage --status`, `GET /triage/status`): counts, the
    /// cursors and the latest issues triaged.
    ///
    /// # Errors
    /// E4002 when the read fails.
    pub fn status(&self, latest: usize) -> Result<Value, Error> {
        #[derive(Serialize)]
        struct Row {
            repo: String,
            number: u64,
            fingerprint: String,
            house: Option<String>,
            source: String,
            triaged_ms: i64,
            latency_ms: i64,
            times: i64,
            task_id: Option<String>,
            task_state: Option<String>,
            task_house: Option<String>,
            task_error: Option<String>,
            provenance: Option<Vec<String>>,
            plan: Value,
        }
        #[derive(Serialize)]
        struct RefusedRow {
            repo: String,
            number: u64,
            fingerprint: String,
            code: String,
            message: String,
            provenance_id: Option<String>,
            refused_ms: i64,
            times: i64,
            plan: Value,
        }
        let conn = self.conn();
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map_err(db_error);
        let triaged = count("SELECT COUNT(*) FROM triaged")?;
        let applications = count("SELECT COALESCE(SUM(times), 0) FROM triaged")?;
        let queued = count("SELECT COUNT(DISTINCT repo || '#' || number) FROM queue")?;
        let deliveries = count("SELECT COUNT(*) FROM deliveries")?;
        let tasks_pending = count("SELECT COUNT(*) FROM triaged WHERE task_state = 'pending'")?;
        let refused = count("SELECT COUNT(*) FROM refused")?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT repo, number, fingerprint, house, source, triaged_ms, latency_ms, times, task_id, task_state, task_house, task_error, plan, provenance
                 FROM triaged ORDER BY triaged_ms DESC, number DESC LIMIT ?1",
            )
            .map_err(db_error)?;
        let rows: Vec<Row> = stmt
            .query_map(params![i64::try_from(latest).unwrap_or(i64::MAX)], |r| {
                let plan: String = r.get(12)?;
                Ok(Row {
                    repo: r.get(0)?,
                    number: num(r.get(1)?),
                    fingerprint: r.get(2)?,
                    house: r.get(3)?,
                    source: r.get(4)?,
                    triaged_ms: r.get(5)?,
                    latency_ms: r.get(6)?,
                    times: r.get(7)?,
                    task_id: r.get(8)?,
                    task_state: r.get(9)?,
                    task_house: r.get(10)?,
                    task_error: r.get(11)?,
                    provenance: r.get::<_, Option<String>>(13)?.and_then(|p| serde_json::from_str(&p).ok()),
                    plan: serde_json::from_str(&plan).unwrap_or(Value::Null),
                })
            })
            .map_err(db_error)?
            .collect::<Result<_, _>>()
            .map_err(db_error)?;
        let mut rstmt = conn
            .prepare_cached(
                "SELECT repo, number, fingerprint, code, message, provenance_id, refused_ms, times, plan
                 FROM refused ORDER BY refused_ms DESC, number DESC LIMIT ?1",
            )
            .map_err(db_error)?;
        let refusals: Vec<RefusedRow> = rstmt
            .query_map(params![i64::try_from(latest).unwrap_or(i64::MAX)], |r| {
                let plan: String = r.get(8)?;
                Ok(RefusedRow {
                    repo: r.get(0)?,
                    number: num(r.get(1)?),
                    fingerprint: r.get(2)?,
                    code: r.get(3)?,
                    message: r.get(4)?,
                    provenance_id: r.get(5)?,
                    refused_ms: r.get(6)?,
                    times: r.get(7)?,
                    plan: serde_json::from_str(&plan).unwrap_or(Value::Null),
                })
            })
            .map_err(db_error)?
            .collect::<Result<_, _>>()
            .map_err(db_error)?;
        let mut cstmt =
            conn.prepare_cached("SELECT repo, since, polled_ms FROM cursors ORDER BY repo").map_err(db_error)?;
        let cursors: Vec<Value> = cstmt
            .query_map([], |r| {
                Ok(json!({ "repo": r.get::<_, String>(0)?, "since": r.get::<_, Option<String>>(1)?, "polled_ms": r.get::<_, i64>(2)? }))
            })
            .map_err(db_error)?
            .collect::<Result<_, _>>()
            .map_err(db_error)?;
        Ok(json!({
            "issues_triaged": triaged,
            "applications": applications,
            "queued": queued,
            "deliveries": deliveries,
            "tasks_pending": tasks_pending,
            "refused": refused,
            "cursors": cursors,
            "latest": rows,
            "refusals": refusals,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a delivery id is accepted once, its work queued, folded per issue and removed when done.
    #[test]
    fn deliveries_dedupe_and_queue_folds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("triage.db")).expect("open");
        assert!(s.accept_delivery("d1", "issues", "queued", Some(("uni/fleet", 3)), 10).expect("accept"));
        assert!(!s.accept_delivery("d1", "issues", "queued", Some(("uni/fleet", 3)), 11).expect("replay"));
        assert!(s.accept_delivery("d2", "issues", "queued", Some(("uni/fleet", 3)), 12).expect("accept"));
        s.enqueue_polled("uni/fleet", &[4], Some("2026-01-01T00:00:05Z"), 13).expect("poll");
        let (due, _) = s.due(100, 10).expect("due");
        assert_eq!(due.len(), 2, "{due:?}");
        assert_eq!((due[0].number, due[0].received_ms, due[0].source.as_str()), (3, 10, "webhook"));
        s.done("uni/fleet", 3, due[0].upto).expect("done");
        assert_eq!(s.due(100, 10).expect("due").0.len(), 1);
        assert_eq!(s.cursor("uni/fleet").expect("cursor").as_deref(), Some("2026-01-01T00:00:05Z"));
        let w = &s.due(100, 10).expect("due").0[0];
        assert!(!s.retry_later(w, "boom", 500, 3).expect("retry"));
        assert!(s.due(100, 10).expect("due").0.is_empty(), "not before 500");
        assert_eq!(s.due(100, 10).expect("due").1, Some(500));
    }

    /// Proves a version-1 store (no `provenance` column, no `refused` table) opens as version 2
    /// with its rows intact, and then takes provenance ids.
    #[test]
    fn version_1_store_is_migrated_keeping_its_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("triage.db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE triaged (repo TEXT NOT NULL, number INTEGER NOT NULL, fingerprint TEXT NOT NULL,
                   plan TEXT NOT NULL, house TEXT, source TEXT NOT NULL, triaged_ms INTEGER NOT NULL,
                   latency_ms INTEGER NOT NULL, times INTEGER NOT NULL DEFAULT 1, task_key TEXT, task_id TEXT,
                   task_state TEXT, task_house TEXT, task_error TEXT, PRIMARY KEY (repo, number));
                 INSERT INTO triaged (repo, number, fingerprint, plan, source, triaged_ms, latency_ms)
                   VALUES ('uni/fleet', 1, 'fp-old', '{}', 'poll', 5, 1);
                 PRAGMA user_version = 1;",
            )
            .expect("a version-1 store");
        }
        let s = Store::open(&path).expect("migrates");
        let version: i64 = s.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(s.fingerprint("uni/fleet", 1).expect("read").as_deref(), Some("fp-old"));
        let v = s.status(10).expect("status");
        assert_eq!(v["latest"][0]["provenance"], Value::Null, "a row from before has no provenance");
        let ids = vec!["prov-1".to_owned()];
        let t = Triaged {
            repo: "uni/fleet",
            number: 2,
            fingerprint: "fp",
            plan: &json!({}),
            house: None,
            source: "webhook",
            latency_ms: 3,
            task_key: None,
            provenance: &ids,
        };
        s.record_triaged(&t, 10).expect("record");
        assert_eq!(s.status(10).expect("status")["latest"][0]["provenance"], json!(["prov-1"]));
        drop(s);
        Store::open(&path).expect("opens again, already migrated");
    }

    /// Proves a refusal is shown with its code, message and provenance id, counted per attempt,
    /// queued again on request, and cleared when a plan for the issue applies.
    #[test]
    fn refusals_are_shown_requeued_and_cleared_when_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("triage.db")).expect("open");
        let r = Refused {
            repo: "uni/fleet".into(),
            number: 4,
            fingerprint: "fp".into(),
            plan: json!({"labels": ["kind/bug"]}),
            code: "E2001".into(),
            message: "house allegro may not use gitea_update_issue".into(),
            provenance_id: Some("prov-9".into()),
        };
        s.record_refused(&r, 10).expect("record");
        s.record_refused(&r, 11).expect("again");
        let v = s.status(10).expect("status");
        assert_eq!(v["refused"], 1);
        let row = &v["refusals"][0];
        assert_eq!(
            (row["code"].clone(), row["provenance_id"].clone(), row["times"].clone()),
            (json!("E2001"), json!("prov-9"), json!(2))
        );
        assert!(row["message"].as_str().is_some_and(|m| m.contains("may not use")), "{row}");
        s.record_refused(&Refused { number: 5, ..r.clone() }, 12).expect("another");
        s.forget_refused("uni/fleet", 5).expect("closed since");
        assert_eq!(s.requeue_refused(20).expect("requeue"), 1, "only the issue still refused");
        let (due, _) = s.due(30, 10).expect("due");
        assert_eq!((due[0].number, due[0].source.as_str()), (4, "retry"));
        let t = Triaged {
            repo: "uni/fleet",
            number: 4,
            fingerprint: "fp",
            plan: &json!({}),
            house: None,
            source: "retry",
            latency_ms: 1,
            task_key: None,
            provenance: &[],
        };
        s.record_triaged(&t, 40).expect("applied");
        assert_eq!(s.status(10).expect("status")["refused"], 0);
    }
}
