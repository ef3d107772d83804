//! The Hermes tailer: `$HERMES_HOME/state.db`, read-only, into outbox batches.
//!
//! One pass is one short read transaction (busy timeout 1 s) that reads, in this order:
//!
//! 0. whether the file is still the one the cursor points into ([`replaced`]); when it is
//!    another, nothing else is read: the outbox resets the cursors to the new file's
//!    beginning ([`Outbox::hermes_replaced`]), the log says "state.db replaced" once, and the
//!    next pass reads the new file from its first row;
//! 1. sessions inserted since the `sessions.rowid` cursor (and the one at it, when it is
//!    another than the session read there: a deleted newest session's rowid is given again):
//!    a `HermesSessionEvent` each, and the session is followed from then on;
//! 2. messages since the `messages.id` cursor (`AUTOINCREMENT` ids become visible in order,
//!    so within one file the cursor never skips a row): each call in an assistant row's
//!    `tool_calls` is STARTED; each `role='tool'` row is its call's SUCCEEDED or FAILED,
//!    paired by `tool_call_id`;
//! 3. each followed session's row: a `HermesTokenUsage` when its figures differ from those
//!    last sent, a `HermesSessionEnd` once `ended_at` is set (then it is no longer followed).
//!
//! Every step is bounded by `telemetry.batch` rows. The batch, the new cursors and the
//! followed sessions then commit in one outbox transaction ([`Outbox::commit_hermes`]),
//! which also drops tool events already sent — Hermes' retry, undo and compression delete
//! and re-insert rows, or set `active=0`: rows are taken whatever their `active` flag (a call
//! that ran is telemetry even when the conversation later forgot it), and the dedup key
//! `(session_id, tool_call_id, status)` keeps each call's STARTED and its result once.
//!
//! The tailer wakes on `notify` events for `state.db` and `state.db-wal`, and every
//! `poll_ms` in any case (notifications can be lost or unsupported). An event for the WAL
//! comes when Hermes writes its frames, before the commit is visible (SQLite publishes it in
//! the `-shm` index after the fsync, which raises no event): after each event the tailer
//! reads at once, then for [`WATCH_WINDOW`] asks SQLite every few hundred µs whether anything
//! was committed (`PRAGMA data_version`, a look at the `-shm` header, no read of the tables)
//! and reads the moment it was, see [`watch_wait`]. Another event within that time is taken
//! at once. Idle, it reads every `poll_ms` only.
//!
//! **Another file at the path.** A cursor is a `messages.id` of one file. Hermes' state.db
//! deleted and recreated (ids restart at 1), an older copy restored (a backup: the same or
//! lower ids, other rows above them) or a file renamed over it would otherwise keep the old
//! cursor: the new rows up to it are never read. Before every pass the tailer compares the
//! path's device and inode with those of its open connection and reopens on a change (an
//! open connection would go on reading the old, unlinked file); inside the pass it compares
//! Hermes' own data with what it saw at the cursor ([`HermesFile`]): see [`replaced`]. What
//! an older copy makes it send again is stored once at Timmy (the sink keys Hermes events by
//! what identifies them in Hermes, `sink::hermes_key`).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::watch;
use uni_wizard::Error;
use uni_wizard_proto::v1::{self, HermesToolCallStatus, telemetry_event::Kind};

use super::outbox::{Candidate, HermesBatch, HermesFile, Outbox};
use super::{TelemetryConfig, now_ms};

/// Sessions followed at most; beyond, the oldest (lowest id: Hermes ids start with the start
/// time) is no longer followed, and the log says so.
pub const MAX_OPEN_SESSIONS: usize = 10_000;
/// Longest arguments text kept in a tool event, bytes.
pub const MAX_ARGUMENTS_BYTES: usize = 16 * 1024;

/// Seconds (Hermes' REAL timestamps) to milliseconds.
fn ms(secs: f64) -> i64 {
    if secs.is_finite() { (secs * 1000.0).round() as i64 } else { 0 }
}

/// Cuts `s` to at most `max` bytes on a character boundary; says whether it cut.
pub fn truncate(s: &str, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s.to_owned(), false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_owned(), true)
}

/// The recorded arguments with secret fields redacted (JSON), or cut (not JSON).
pub fn redact_arguments(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => truncate(&uni_wizard::approval::redact(&v).to_string(), MAX_ARGUMENTS_BYTES).0,
        Err(_) => truncate(raw, MAX_ARGUMENTS_BYTES).0,
    }
}

/// Whether a tool result reports failure: a JSON object whose `error` is set (not null,
/// false or ""), or whose `success` is false. Returns the error text when it does.
pub fn result_error(content: &str) -> Option<String> {
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(content) else { return None };
    match m.get("error") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => return Some(s.clone()),
        Some(other) => return Some(other.to_string()),
    }
    (m.get("success") == Some(&Value::Bool(false))).then(|| "success: false".to_owned())
}

/// The STARTED events of an assistant row's `tool_calls` JSON (malformed entries skipped).
pub fn started_calls(session: &str, message_id: i64, tool_calls: &str) -> Vec<v1::HermesToolCallEvent> {
    let Ok(Value::Array(calls)) = serde_json::from_str::<Value>(tool_calls) else { return Vec::new() };
    calls
        .iter()
        .filter_map(|c| {
            let id = c["id"].as_str().or_else(|| c["call_id"].as_str()).filter(|s| !s.is_empty())?;
            let f = &c["function"];
            let args = match &f["arguments"] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            Some(v1::HermesToolCallEvent {
                session_id: session.to_owned(),
                tool_call_id: id.to_owned(),
                tool_name: f["name"].as_str().unwrap_or("").to_owned(),
                arguments_json: redact_arguments(&args),
                status: HermesToolCallStatus::Started.into(),
                message_id: u64::try_from(message_id).unwrap_or(0),
                ..Default::default()
            })
        })
        .collect()
}

/// The result event of a `role='tool'` row.
pub fn finished_call(
    session: &str,
    message_id: i64,
    tool_call_id: &str,
    tool_name: &str,
    content: &str,
    max: usize,
) -> v1::HermesToolCallEvent {
    let error = result_error(content);
    let (result, cut) = truncate(content, max);
    v1::HermesToolCallEvent {
        session_id: session.to_owned(),
        tool_call_id: tool_call_id.to_owned(),
        tool_name: tool_name.to_owned(),
        result,
        result_truncated: cut,
        status: if error.is_some() { HermesToolCallStatus::Failed } else { HermesToolCallStatus::Succeeded }.into(),
        error_message: error.map(|e| truncate(&e, 1024).0).unwrap_or_default(),
        message_id: u64::try_from(message_id).unwrap_or(0),
        ..Default::default()
    }
}

/// Microseconds of a Hermes timestamp (seconds, REAL), for comparing one row with another.
fn us(secs: f64) -> i64 {
    if secs.is_finite() { (secs * 1e6).round() as i64 } else { 0 }
}

/// What state.db says about a cursor, read at the start of a pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The highest `messages.id` the file ever gave (`sqlite_sequence`, else `max(id)`).
    pub max_id: i64,
    /// `session_id` and timestamp (µs) of the message at the cursor's id, when it is there.
    pub at_cursor: Option<(String, i64)>,
    /// Whether the session of the message last seen at the cursor is in `sessions` (read only
    /// when that message is gone; `false` otherwise).
    pub anchor_session_exists: bool,
}

/// Why state.db at the cursor's path is another file than the one the cursor points into, or
/// `None` when it is the same (decides only; [`step`] acts).
///
/// `known` is what the tailer saw at `cursor`; `moved` says the path's device or inode
/// differ from `known`'s. Within one file `AUTOINCREMENT` never gives an id twice nor goes
/// back, and Hermes never changes a message's `session_id` or `timestamp`, so, whatever the
/// inode says:
/// - a highest id below the cursor is another file (recreated, or an older copy);
/// - another message at the cursor's id (other session or timestamp) is another file.
///
/// A message missing at the cursor is Hermes' own undo, retry or compression in the same
/// file, unless the file also moved and the message's session is gone as well. The inode
/// alone decides nothing: a copy of the same data (`cp -a`, a restore of the newest backup)
/// keeps the cursor, and a file deleted while the daemon was stopped may come back with the
/// same inode number. A cursor of 0, or one from an outbox that recorded no message at it
/// (made before this check), is taken as it is.
pub fn replaced(cursor: i64, known: &HermesFile, moved: bool, seen: &Seen) -> Option<&'static str> {
    if cursor == 0 {
        return None;
    }
    if seen.max_id < cursor {
        return Some("its highest message id is below the cursor");
    }
    if known.anchor_session.is_empty() {
        return None;
    }
    match &seen.at_cursor {
        Some((session, time)) if *session != known.anchor_session || *time != known.anchor_time_us => {
            Some("the message at the cursor is another one")
        }
        Some(_) => None,
        None if moved && !seen.anchor_session_exists => Some("the message at the cursor and its session are gone"),
        None => None,
    }
}

/// Reads [`Seen`] for `cursor` (inside the pass's read transaction).
fn seen(conn: &Connection, cursor: i64, known: &HermesFile) -> rusqlite::Result<Seen> {
    let max_id: i64 = conn.prepare_cached("SELECT coalesce(max(id), 0) FROM messages")?.query_row([], |r| r.get(0))?;
    // Hermes' schema has `AUTOINCREMENT`: its sequence outlives deleted rows. A file without
    // it (not Hermes' schema) has only max(id).
    let sequence: Option<i64> = conn
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'messages'", [], |r| r.get(0))
        .optional()
        .unwrap_or(None);
    let at_cursor = conn
        .prepare_cached("SELECT session_id, timestamp FROM messages WHERE id = ?1")?
        .query_row([cursor], |r| Ok((r.get::<_, String>(0)?, us(r.get::<_, Option<f64>>(1)?.unwrap_or(0.0)))))
        .optional()?;
    // Asked only when the message is gone (the one case `replaced` looks at it).
    let anchor_session_exists = at_cursor.is_none()
        && !known.anchor_session.is_empty()
        && conn.prepare_cached("SELECT 1 FROM sessions WHERE id = ?1")?.exists([&known.anchor_session])?;
    Ok(Seen { max_id: max_id.max(sequence.unwrap_or(0)), at_cursor, anchor_session_exists })
}

/// The id of the session at `rowid` (the sessions cursor). `sessions` has no `AUTOINCREMENT`:
/// when Hermes deletes the newest session (`delete_session_if_empty`, a CLI session quit
/// unused), the next one takes its rowid, so another id there than the one read there is a
/// session not seen yet. (An id recorded before this check is adopted.)
fn session_at(conn: &Connection, rowid: i64) -> rusqlite::Result<Option<String>> {
    if rowid == 0 {
        return Ok(None);
    }
    conn.prepare_cached("SELECT id FROM sessions WHERE rowid = ?1")?.query_row([rowid], |r| r.get(0)).optional()
}

/// Device and inode of the file at `path`.
fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Reads state.db read-only; reopens after errors and when the path names another file.
struct Reader {
    path: PathBuf,
    conn: Option<Connection>,
    /// Device and inode of the file `conn` has open.
    opened: (u64, u64),
    /// `PRAGMA data_version` of `conn` when last asked (changes with every commit of another
    /// connection); `None` for a new connection.
    version: Option<i64>,
}

impl Reader {
    /// Whether another connection committed since the last call (or whether it cannot be
    /// told: no connection, or the question failed).
    fn changed(&mut self) -> bool {
        let Some(conn) = &self.conn else { return true };
        match conn.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)) {
            Ok(v) => self.version.replace(v) != Some(v),
            Err(_) => true,
        }
    }

    /// The connection to the file now at the path, whose identity is `now`.
    fn conn(&mut self, now: (u64, u64)) -> rusqlite::Result<&Connection> {
        if self.conn.is_some() && self.opened != now {
            // The path names another file; the open connection reads the old one.
            self.conn = None;
        }
        if self.conn.is_none() {
            let c = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            c.busy_timeout(Duration::from_secs(1))?;
            self.conn = Some(c);
            self.version = None;
            // Taken before the open: if the file changed in between, the next pass reopens.
            self.opened = now;
        }
        self.conn.as_ref().ok_or(rusqlite::Error::InvalidQuery)
    }
}

/// The tailer's view: cursors, followed sessions and the file, mirrored from the outbox.
struct Tail {
    message_id: i64,
    session_rowid: i64,
    open: HashMap<String, String>,
    file: HermesFile,
}

/// What one pass found.
enum Pass {
    /// State.db is another file than the cursor's (why); nothing else was read.
    Replaced(&'static str),
    /// What changed since the cursor.
    Batch(HermesBatch),
}

fn usage_event(id: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<v1::HermesTokenUsage> {
    let n = |i: usize| -> rusqlite::Result<u64> {
        Ok(u64::try_from(r.get::<_, Option<i64>>(i)?.unwrap_or(0)).unwrap_or(0))
    };
    Ok(v1::HermesTokenUsage {
        session_id: id.to_owned(),
        model: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
        input_tokens: n(1)?,
        output_tokens: n(2)?,
        cache_read_tokens: n(3)?,
        cache_write_tokens: n(4)?,
        reasoning_tokens: n(5)?,
        api_call_count: n(6)?,
        estimated_cost_usd: r.get(7)?,
        actual_cost_usd: r.get(8)?,
        cost_status: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
    })
}

/// One pass over the file with identity `now`: whether it is another file than the cursor's,
/// else what changed in it since `tail`, as a batch (not yet committed).
fn pass(conn: &Connection, tail: &Tail, now: (u64, u64), cfg: &TelemetryConfig) -> rusqlite::Result<Pass> {
    let limit = cfg.batch as i64;
    let mut batch =
        HermesBatch { message_id: tail.message_id, session_rowid: tail.session_rowid, ..Default::default() };
    let mut file = HermesFile { dev: now.0, ino: now.1, ..tail.file.clone() };
    let mut other = None;
    conn.execute_batch("BEGIN")?;
    let read = (|| -> rusqlite::Result<()> {
        // 0. The same file?
        let moved = (tail.file.dev, tail.file.ino) != now;
        let seen = seen(conn, tail.message_id, &tail.file)?;
        other = replaced(tail.message_id, &tail.file, moved, &seen);
        if other.is_some() {
            return Ok(());
        }
        if file.anchor_session.is_empty()
            && let Some((session, time)) = seen.at_cursor
        {
            // A cursor recorded before the anchor was: adopt the message it points at.
            (file.anchor_session, file.anchor_time_us) = (session, time);
        }
        // 1. New sessions, from the row at the cursor when it holds another session than the
        // one seen there (see `session_at`).
        let mut new_sessions = Vec::new();
        {
            let mut after = tail.session_rowid;
            match session_at(conn, tail.session_rowid)? {
                Some(id) if file.session_at_cursor.is_empty() => file.session_at_cursor = id,
                Some(id) if id != file.session_at_cursor => after -= 1,
                _ => {}
            }
            let mut st = conn.prepare_cached(
                "SELECT rowid, id, source, model, parent_session_id, started_at, cwd, git_branch
                 FROM sessions WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )?;
            let mut rows = st.query(params![after, limit])?;
            while let Some(r) = rows.next()? {
                let id: String = r.get(1)?;
                file.session_at_cursor.clone_from(&id);
                let started = ms(r.get::<_, Option<f64>>(5)?.unwrap_or(0.0));
                batch.session_rowid = r.get(0)?;
                batch.candidates.push(Candidate::Plain(
                    started,
                    Kind::HermesSession(v1::HermesSessionEvent {
                        session_id: id.clone(),
                        source: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                        model: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                        parent_session_id: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                        started_at_unix_ms: started,
                        cwd: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                        git_branch: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                    }),
                ));
                new_sessions.push(id);
            }
        }
        if new_sessions.len() as i64 >= limit {
            // More sessions wait: their messages come in a later pass, after them.
            batch.sessions = new_sessions.into_iter().map(|id| (id, String::new())).collect();
            return Ok(());
        }
        // 2. New messages.
        let mut messages = 0;
        {
            let mut st = conn.prepare_cached(
                "SELECT id, session_id, role, content, tool_call_id, tool_calls, tool_name, timestamp
                 FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let mut rows = st.query(params![tail.message_id, limit])?;
            while let Some(r) = rows.next()? {
                messages += 1;
                let id: i64 = r.get(0)?;
                batch.message_id = id;
                let session: String = r.get(1)?;
                let role: String = r.get(2)?;
                let stamp = r.get::<_, Option<f64>>(7)?.unwrap_or(0.0);
                let t = ms(stamp);
                (file.anchor_session, file.anchor_time_us) = (session.clone(), us(stamp));
                if role == "assistant"
                    && let Some(calls) = r.get::<_, Option<String>>(5)?
                {
                    for ev in started_calls(&session, id, &calls) {
                        batch.candidates.push(Candidate::Tool(t, ev));
                    }
                } else if role == "tool"
                    && let Some(call) = r.get::<_, Option<String>>(4)?.filter(|c| !c.is_empty())
                {
                    let content = r.get::<_, Option<String>>(3)?.unwrap_or_default();
                    let name = r.get::<_, Option<String>>(6)?.unwrap_or_default();
                    let ev = finished_call(&session, id, &call, &name, &content, cfg.result_max_bytes);
                    batch.candidates.push(Candidate::Tool(t, ev));
                }
            }
        }
        let mut follow: Vec<(String, String)> = tail.open.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        follow.extend(new_sessions.iter().map(|id| (id.clone(), String::new())));
        if messages >= limit {
            // More messages wait: session figures and ends come after them.
            batch.sessions = new_sessions.into_iter().map(|id| (id, String::new())).collect();
            return Ok(());
        }
        // 3. Followed sessions: token figures and ends.
        let mut st = conn.prepare_cached(
            "SELECT model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
                    api_call_count, estimated_cost_usd, actual_cost_usd, cost_status,
                    ended_at, end_reason, message_count, tool_call_count
             FROM sessions WHERE id = ?1",
        )?;
        let now = now_ms();
        follow.sort();
        for (id, sent) in follow {
            let row = st
                .query_row([&id], |r| {
                    let usage = usage_event(&id, r)?;
                    let ended: Option<f64> = r.get(10)?;
                    let end = ended.map(|e| -> rusqlite::Result<v1::HermesSessionEnd> {
                        Ok(v1::HermesSessionEnd {
                            session_id: id.clone(),
                            ended_at_unix_ms: ms(e),
                            end_reason: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
                            message_count: u64::try_from(r.get::<_, Option<i64>>(12)?.unwrap_or(0)).unwrap_or(0),
                            tool_call_count: u64::try_from(r.get::<_, Option<i64>>(13)?.unwrap_or(0)).unwrap_or(0),
                        })
                    });
                    Ok((usage, end.transpose()?))
                })
                .optional()?;
            let Some((usage, end)) = row else {
                tracing::warn!(session = %id, "a followed Hermes session row is gone; no longer followed");
                batch.ended.push(id);
                continue;
            };
            let sig = format!(
                "{}/{}/{}/{}/{}/{}/{:?}/{:?}/{}",
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                usage.reasoning_tokens,
                usage.api_call_count,
                usage.estimated_cost_usd,
                usage.actual_cost_usd,
                usage.cost_status
            );
            let spent = usage.input_tokens + usage.output_tokens + usage.api_call_count > 0
                || usage.estimated_cost_usd.is_some()
                || usage.actual_cost_usd.is_some();
            if sig != sent && spent {
                batch.candidates.push(Candidate::Plain(now, Kind::HermesTokenUsage(usage)));
                batch.sessions.push((id.clone(), sig));
            } else if sent.is_empty() && !tail.open.contains_key(&id) {
                batch.sessions.push((id.clone(), String::new()));
            }
            if let Some(end) = end {
                batch.candidates.push(Candidate::Plain(end.ended_at_unix_ms, Kind::HermesSessionEnd(end)));
                batch.ended.push(id);
            }
        }
        Ok(())
    })();
    let done = conn.execute_batch("COMMIT");
    read?;
    done?;
    if let Some(why) = other {
        return Ok(Pass::Replaced(why));
    }
    if file != tail.file {
        batch.file = Some(file);
    }
    Ok(Pass::Batch(batch))
}

/// Runs the tailer on its own thread until `stop` turns true.
pub fn spawn_tailer(db: PathBuf, outbox: Arc<Outbox>, cfg: TelemetryConfig, stop: watch::Receiver<bool>) {
    let spawned =
        std::thread::Builder::new().name("uw-hermes-tail".into()).spawn(move || tail_loop(&db, &outbox, &cfg, &stop));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the Hermes tailer");
    }
}

fn watch_db(db: &Path, wake: std::sync::mpsc::SyncSender<()>) -> Option<notify::RecommendedWatcher> {
    let dir = db.parent()?.to_owned();
    let name = db.file_name()?.to_string_lossy().into_owned();
    let wal = format!("{name}-wal");
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && !ev.kind.is_access()
            && ev.paths.iter().any(|p| p.file_name().is_some_and(|n| n == name.as_str() || n == wal.as_str()))
        {
            let _ = wake.try_send(());
        }
    })
    .ok()?;
    match w.watch(&dir, RecursiveMode::NonRecursive) {
        Ok(()) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch Hermes' directory; polling only");
            None
        }
    }
}

/// How long after an event for state.db the tailer keeps asking whether its commit is visible.
pub const WATCH_WINDOW: Duration = Duration::from_millis(40);

/// How the tailer waits after a pass (decides only; `tail_loop` waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Wait up to this long for an event, then ask `PRAGMA data_version` and read if it moved.
    Look(Duration),
    /// Wait up to this long (`poll_ms`) for an event, then read in any case.
    Poll(Duration),
}

/// The wait after a pass, `since_event` after the last event for state.db (`None`: none seen
/// yet). Every 100 µs for the first 4 ms after an event — a commit is visible one fsync after
/// its frames were written —, every 400 µs up to [`WATCH_WINDOW`] (a slow disk's fsync), then
/// `poll`.
pub fn watch_wait(since_event: Option<Duration>, poll: Duration) -> Wait {
    match since_event {
        Some(d) if d < Duration::from_millis(4) => Wait::Look(Duration::from_micros(100)),
        Some(d) if d < WATCH_WINDOW => Wait::Look(Duration::from_micros(400)),
        _ => Wait::Poll(poll),
    }
}

fn tail_loop(db: &Path, outbox: &Outbox, cfg: &TelemetryConfig, stop: &watch::Receiver<bool>) {
    use std::sync::mpsc::RecvTimeoutError;
    let (wake_tx, wake) = std::sync::mpsc::sync_channel::<()>(1);
    let _watcher = watch_db(db, wake_tx);
    let mut reader = Reader { path: db.to_owned(), conn: None, opened: (0, 0), version: None };
    let mut tail = match (outbox.hermes_cursor(), outbox.hermes_sessions(), outbox.hermes_file()) {
        (Ok((message_id, session_rowid)), Ok(open), Ok(file)) => {
            Tail { message_id, session_rowid, open: open.into_iter().collect(), file }
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            tracing::error!(code = e.code.as_str(), error = %e.message, "cannot read the Hermes cursor; tailer stopped");
            return;
        }
    };
    tracing::info!(db = %db.display(), cursor = tail.message_id, "tailing Hermes");
    let mut warned = false;
    let mut last_event: Option<std::time::Instant> = None;
    let mut read = true;
    while !*stop.borrow() {
        if read {
            // Asked before the pass: a commit after this shows at the next look.
            reader.changed();
            match step(&mut reader, &mut tail, outbox, cfg) {
                Ok(true) => continue,
                Ok(false) => warned = false,
                Err(why) => {
                    if !warned {
                        tracing::warn!(db = %db.display(), error = %why, "Hermes state.db not readable yet; retrying");
                        warned = true;
                    }
                    reader.conn = None;
                    // Not readable: the next try waits for an event or `poll_ms`, not a look.
                    last_event = None;
                }
            }
        }
        let (timeout, look) = match watch_wait(last_event.map(|t| t.elapsed()), cfg.poll()) {
            Wait::Look(d) => (d, true),
            Wait::Poll(d) => (d, false),
        };
        read = match wake.recv_timeout(timeout) {
            Ok(()) => {
                last_event = Some(std::time::Instant::now());
                true
            }
            Err(RecvTimeoutError::Timeout) => !look || reader.changed(),
            // No watcher (it could not be set up): poll only.
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                !look || reader.changed()
            }
        };
    }
}

/// One pass and its commit; returns whether to go again at once (a full batch was read).
fn step(reader: &mut Reader, tail: &mut Tail, outbox: &Outbox, cfg: &TelemetryConfig) -> Result<bool, String> {
    let now = identity(&reader.path).map_err(|e| e.to_string())?;
    let conn = reader.conn(now).map_err(|e| e.to_string())?;
    let batch = match pass(conn, tail, now, cfg).map_err(|e| e.to_string())? {
        Pass::Batch(b) => b,
        Pass::Replaced(why) => {
            let file = HermesFile { dev: now.0, ino: now.1, ..HermesFile::default() };
            let count = outbox.hermes_replaced(&file).map_err(|e| describe(&e))?;
            tracing::warn!(
                db = %reader.path.display(),
                old_dev = tail.file.dev,
                old_inode = tail.file.ino,
                new_dev = now.0,
                new_inode = now.1,
                cursor = tail.message_id,
                reason = why,
                replaced = count,
                "Hermes state.db replaced by another file: reading the new one from its beginning"
            );
            *tail = Tail { message_id: 0, session_rowid: 0, open: HashMap::new(), file };
            return Ok(true);
        }
    };
    if batch.message_id == tail.message_id
        && batch.session_rowid == tail.session_rowid
        && batch.candidates.is_empty()
        && batch.sessions.is_empty()
        && batch.ended.is_empty()
        && batch.file.is_none()
    {
        return Ok(false);
    }
    let full = batch.candidates.len() >= cfg.batch
        || batch.message_id - tail.message_id >= cfg.batch as i64
        || batch.session_rowid - tail.session_rowid >= cfg.batch as i64;
    let (mid, srow, sessions, ended, file) =
        (batch.message_id, batch.session_rowid, batch.sessions.clone(), batch.ended.clone(), batch.file.clone());
    tracing::debug!(target: super::LAG_TARGET, stage = "read", message_id = mid, t_us = super::now_us());
    match outbox.commit_hermes(batch) {
        Ok(Some(_)) => {
            tail.message_id = mid;
            tail.session_rowid = srow;
            if let Some(f) = file {
                tail.file = f;
            }
            for (id, usage) in sessions {
                tail.open.insert(id, usage);
            }
            for id in ended {
                tail.open.remove(&id);
            }
            evict(tail, outbox);
            Ok(full)
        }
        Ok(None) => Ok(false),
        // The outbox, not state.db, failed, and said so once naming its file; the cursor did
        // not move, so the next pass retries from it.
        Err(_) if outbox.write_error().is_some() => Ok(false),
        Err(e) => Err(describe(&e)),
    }
}

/// Stops following the oldest sessions beyond [`MAX_OPEN_SESSIONS`].
fn evict(tail: &mut Tail, outbox: &Outbox) {
    if tail.open.len() <= MAX_OPEN_SESSIONS {
        return;
    }
    let mut ids: Vec<String> = tail.open.keys().cloned().collect();
    ids.sort();
    let gone: Vec<String> = ids.into_iter().take(tail.open.len() - MAX_OPEN_SESSIONS).collect();
    tracing::warn!(count = gone.len(), "too many open Hermes sessions: the oldest are no longer followed");
    let batch = HermesBatch {
        message_id: tail.message_id,
        session_rowid: tail.session_rowid,
        ended: gone.clone(),
        ..Default::default()
    };
    if let Ok(Some(_)) = outbox.commit_hermes(batch) {
        for id in gone {
            tail.open.remove(&id);
        }
    }
}

fn describe(e: &Error) -> String {
    format!("{} {}", e.code, e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves Hermes' tool_calls JSON becomes STARTED events with secrets redacted, malformed skipped.
    #[test]
    fn tool_calls_become_started_events() {
        let calls = r#"[{"id":"call_1","call_id":"call_1","type":"function",
            "function":{"name":"terminal","arguments":"{\"command\":\"ls\",\"api_key\":\"sk-123\"}"}},
            {"type":"function"}]"#;
        let evs = started_calls("s1", 7, calls);
        assert_eq!(evs.len(), 1);
        assert_eq!((evs[0].tool_call_id.as_str(), evs[0].tool_name.as_str()), ("call_1", "terminal"));
        assert!(!evs[0].arguments_json.contains("sk-123") && evs[0].arguments_json.contains("[redacted]"));
        assert!(started_calls("s", 1, "not json").is_empty());
    }

    /// Proves another file is told from the cursor's own by Hermes' data, not by the inode alone.
    #[test]
    fn a_replaced_state_db_is_told_by_its_data() {
        let known =
            HermesFile { dev: 1, ino: 7, anchor_session: "s1".into(), anchor_time_us: 42, ..Default::default() };
        let at = |s: &str, t: i64| Some((s.to_owned(), t));
        let seen = |max_id, at_cursor, exists| Seen { max_id, at_cursor, anchor_session_exists: exists };
        // The same file, also after a copy to another inode (cp -a).
        assert_eq!(replaced(10, &known, false, &seen(12, at("s1", 42), true)), None);
        assert_eq!(replaced(10, &known, true, &seen(10, at("s1", 42), true)), None);
        // Recreated or an older copy: fewer ids than the cursor, whatever the inode.
        assert!(replaced(10, &known, true, &seen(3, None, false)).is_some());
        assert!(replaced(10, &known, false, &seen(0, None, false)).is_some(), "same inode number reused");
        // Grown past the cursor, or an older copy written on: another row at the cursor's id.
        assert!(replaced(10, &known, true, &seen(40, at("s9", 42), false)).is_some());
        assert!(replaced(10, &known, true, &seen(40, at("s1", 43), true)).is_some(), "same session, other row");
        // The row at the cursor deleted by Hermes (undo) in the same file is not a new file...
        assert_eq!(replaced(10, &known, false, &seen(10, None, false)), None);
        assert_eq!(replaced(10, &known, true, &seen(10, None, true)), None);
        // ...but gone with its session from a file at another inode is.
        assert!(replaced(10, &known, true, &seen(10, None, false)).is_some());
        // Nothing read yet, or no anchor recorded (an older outbox): taken as it is.
        assert_eq!(replaced(0, &known, true, &seen(0, None, false)), None);
        assert_eq!(replaced(10, &HermesFile::default(), true, &seen(40, at("s9", 1), false)), None);
    }

    /// Proves after an event the tailer looks for the commit every 100 µs, then every 400 µs
    /// up to the window's end, and only then waits `poll_ms`.
    #[test]
    fn after_an_event_the_tailer_looks_often_then_polls() {
        let poll = Duration::from_millis(250);
        let ms = Duration::from_millis;
        assert_eq!(watch_wait(None, poll), Wait::Poll(poll));
        assert_eq!(watch_wait(Some(ms(0)), poll), Wait::Look(Duration::from_micros(100)));
        assert_eq!(watch_wait(Some(ms(3)), poll), Wait::Look(Duration::from_micros(100)));
        assert_eq!(watch_wait(Some(ms(4)), poll), Wait::Look(Duration::from_micros(400)));
        assert_eq!(watch_wait(Some(WATCH_WINDOW - ms(1)), poll), Wait::Look(Duration::from_micros(400)));
        assert_eq!(watch_wait(Some(WATCH_WINDOW), poll), Wait::Poll(poll));
    }

    /// Proves the tailer reads a row committed to a real WAL-mode state.db long before its
    /// `poll_ms` (5 s) comes round: the WAL change wakes it and `data_version` shows the commit.
    #[test]
    fn a_wal_commit_is_read_without_waiting_for_the_poll() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("state.db");
        let hermes = Connection::open(&db).expect("state.db");
        hermes
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
                 CREATE TABLE sessions (id TEXT PRIMARY KEY, source TEXT NOT NULL, model TEXT,
                   parent_session_id TEXT, started_at REAL NOT NULL, ended_at REAL, end_reason TEXT,
                   message_count INTEGER DEFAULT 0, tool_call_count INTEGER DEFAULT 0,
                   input_tokens INTEGER DEFAULT 0, output_tokens INTEGER DEFAULT 0,
                   cache_read_tokens INTEGER DEFAULT 0, cache_write_tokens INTEGER DEFAULT 0,
                   reasoning_tokens INTEGER DEFAULT 0, cwd TEXT, git_branch TEXT,
                   estimated_cost_usd REAL, actual_cost_usd REAL, cost_status TEXT,
                   api_call_count INTEGER DEFAULT 0);
                 CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL,
                   role TEXT NOT NULL, content TEXT, tool_call_id TEXT, tool_calls TEXT, tool_name TEXT,
                   timestamp REAL NOT NULL);
                 INSERT INTO sessions (id, source, started_at) VALUES ('s1', 'cli', 1.0);",
            )
            .expect("schema");
        let cfg = TelemetryConfig { poll_ms: 5_000, ..Default::default() };
        let outbox = Arc::new(Outbox::open(&dir.path().join("outbox.db"), "n", &cfg).expect("outbox"));
        let (stop_tx, stop) = watch::channel(false);
        spawn_tailer(db.clone(), outbox.clone(), cfg.clone(), stop);
        let events = |n: u64| {
            let deadline = std::time::Instant::now() + Duration::from_secs(4);
            while outbox.stats().expect("stats").buffered < n {
                assert!(std::time::Instant::now() < deadline, "no event {n} within 4 s (poll_ms is 5 s)");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        // The first pass, at start, reads the session.
        events(1);
        // Past the window of that pass's own events, so only the new commit can wake the tailer.
        std::thread::sleep(WATCH_WINDOW * 2);
        hermes
            .execute(
                "INSERT INTO messages (session_id, role, content, tool_call_id, tool_name, timestamp)
                 VALUES ('s1', 'tool', '{\"output\":\"ok\"}', 'call_1', 'terminal', 2.0)",
                [],
            )
            .expect("append");
        events(2);
        let _ = stop_tx.send(true);
    }

    /// Proves results are classified by their `error`/`success` fields and cut on a char boundary.
    #[test]
    fn results_are_classified_and_truncated() {
        assert_eq!(result_error(r#"{"output":"x","error":null}"#), None);
        assert_eq!(result_error(r#"{"error":"File not found"}"#).as_deref(), Some("File not found"));
        assert!(result_error(r#"{"success":false}"#).is_some());
        assert_eq!(result_error("plain text"), None);
        let ev = finished_call("s", 1, "c", "t", "ééé", 3);
        assert_eq!((ev.result.as_str(), ev.result_truncated), ("é", true));
        assert_eq!(ev.status, HermesToolCallStatus::Succeeded as i32);
    }
}
