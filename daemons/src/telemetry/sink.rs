//! Timmy's sink: the `Telemetry` service and its store, `<home>/telemetry.db`.
//!
//! Each burst of a stream (up to `telemetry.batch` events that are ready) is stored in one
//! transaction: `INSERT OR IGNORE` on the primary key (node, seq), so a resent event is a
//! no-op, and the node's `acked_through` — the highest seq up to which every event is stored
//! — advances in the same transaction.
//!
//! **One row per Hermes event.** A node sends Hermes history again under new seqs when its
//! outbox was lost or its state.db was replaced by an older copy (the tailer starts that file
//! from its beginning). Hermes events are therefore also keyed by what identifies them in
//! Hermes ([`hermes_key`], table `hermes_keys`): an event whose key is already stored under
//! another seq is not stored again; its seq goes to `resent` (pointing at the stored one) so
//! the ack still covers it, and leaves that table once acknowledged.
//!
//! Schema version [`SCHEMA_VERSION`] (`PRAGMA user_version`): 2 adds the Hermes keys to the
//! events and nodes of the stores made before versions were kept (`user_version` 0). Such a
//! store is migrated when opened (`migrate_v2`): the keys are filled from the stored events,
//! and the later copies of a Hermes event stored twice before are removed (counted in the
//! log). A store of a newer version is refused (E4002). The Ack is sent only after the commit. A stream starts
//! with the node's oldest unacknowledged event, so a stream whose first seq lies beyond the
//! stored ones (a recreated outbox numbers on above its old seqs) moves `acked_through` up to
//! just below it: nothing below it is still coming.
//!
//! **Who may stream a node.** A node name belongs to the house the fleet config binds it to
//! ([`DaemonConfig::node_house`](crate::config::DaemonConfig::node_house): `houses.<h>.nodes`,
//! else the house's name as prefix), never to whoever streams it first. Every burst is checked
//! against the live config before anything is stored or the node is shown connected: another
//! house, or a name bound to no house, ends the stream with E5002 at its first message, so a
//! house cannot squat a name and lock the real node out. `Query` gives Timmy every node and
//! another house only the nodes bound to it.
//!
//! **Audit checkpoints.** An `AuditCheckpoint` event (a node's audit heads, see
//! [`super::anchor`]) is also kept in `audit_checkpoints`, in the burst's transaction: every
//! distinct checkpoint, under the node the stream is bound to (the message names no node), so
//! a cut, rewritten or forked chain stays provable however the node's files are edited.
//! `AuditCheckpoints` reads them back: Timmy any node's, another house only its own nodes'
//! (E5003 otherwise).
//!
//! Newly stored execution events of *other* nodes are then fed into the pattern DB (the
//! worker's [`uni_wizard::Intelligence`]), so Timmy's predictions learn from the fleet; this
//! node's own executions are already recorded by its harness. The pattern DB is a model,
//! fed best-effort: a row the recorder cannot take is counted, not retried.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use uni_wizard::{Error, ErrorCode, House, Intelligence};
use uni_wizard_proto::v1::telemetry_server::Telemetry;
use uni_wizard_proto::v1::{
    Ack, AuditCheckpoint, AuditCheckpointsRequest, AuditCheckpointsResponse, NodeStatus, TelemetryEvent,
    TelemetryQuery, TelemetryQueryResponse, telemetry_event::Kind,
};

use super::{TelemetryConfig, now_us};
use crate::auth;
use crate::live::Live;
use crate::wire;

/// Events a `Query` returns when it names no limit, and at most.
pub const QUERY_LIMIT: u32 = 1_000;
/// The most a `Query` may ask for.
pub const QUERY_MAX: u32 = 10_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    node TEXT NOT NULL, seq INTEGER NOT NULL, house TEXT NOT NULL, kind TEXT NOT NULL,
    time_ms INTEGER NOT NULL, stored_us INTEGER NOT NULL, event BLOB NOT NULL,
    PRIMARY KEY (node, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    node TEXT PRIMARY KEY, house TEXT NOT NULL, acked_through INTEGER NOT NULL,
    last_time_ms INTEGER NOT NULL, last_stored_ms INTEGER NOT NULL);
";

/// Every distinct audit checkpoint per node (see the module docs).
const CHECKPOINT_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    id INTEGER PRIMARY KEY, node TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL,
    spent_seq INTEGER NOT NULL, spent_hash TEXT NOT NULL, event_seq INTEGER NOT NULL, time_ms INTEGER NOT NULL,
    UNIQUE (node, seq, hash, spent_seq, spent_hash));
";

/// Checkpoints one `AuditCheckpoints` answer carries at most.
pub const CHECKPOINTS_PAGE: u32 = 10_000;

/// The schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// Version 2: one row per Hermes event (see the module docs and [`hermes_key`]).
const HERMES_KEYS: &str = "
CREATE TABLE IF NOT EXISTS hermes_keys (
    node TEXT NOT NULL, house TEXT NOT NULL, session_id TEXT NOT NULL, item TEXT NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (node, house, session_id, item)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS resent (
    node TEXT NOT NULL, seq INTEGER NOT NULL, of_seq INTEGER NOT NULL,
    PRIMARY KEY (node, seq)) WITHOUT ROWID;
";

/// The name of an event's kind, as stored in the `kind` column.
pub fn kind_name(kind: Option<&Kind>) -> &'static str {
    match kind {
        Some(Kind::Execution(_)) => "execution",
        Some(Kind::HermesSession(_)) => "hermes_session",
        Some(Kind::HermesToolCall(_)) => "hermes_tool_call",
        Some(Kind::HermesTokenUsage(_)) => "hermes_token_usage",
        Some(Kind::HermesSessionEnd(_)) => "hermes_session_end",
        Some(Kind::Hook(_)) => "hook",
        Some(Kind::AuditCheckpoint(_)) => "audit_checkpoint",
        None => "none",
    }
}

/// What identifies a Hermes event in Hermes, within one node: (session id, item), or `None`
/// for an event that is not Hermes' (harness executions, hooks: their seq is their identity).
///
/// Hermes session ids are unique across files: `%Y%m%d_%H%M%S_` and six random hex digits
/// (`agent/agent_init.py`), and a recreated state.db starts new sessions. Message ids are not:
/// they restart at 1 in a recreated file, an older copy reuses the ids of the rows written
/// after it, and Hermes' retry, undo and compression delete and re-insert rows under new
/// ids. So a tool event is keyed by its call's id (given by the model's provider, unique in
/// a session, the key Hermes itself pairs a call with its result by), not by its message id:
///
/// | event | item |
/// |---|---|
/// | `HermesSessionEvent` | `session` |
/// | `HermesToolCallEvent` STARTED | `started:<tool_call_id>` |
/// | `HermesToolCallEvent` SUCCEEDED or FAILED | `result:<tool_call_id>` (one result per call) |
/// | `HermesTokenUsage` | `usage:<every figure>` (cumulative: one row per distinct total) |
/// | `HermesSessionEnd` | `end` |
pub fn hermes_key(kind: Option<&Kind>) -> Option<(&str, String)> {
    use uni_wizard_proto::v1::HermesToolCallStatus;
    match kind? {
        Kind::HermesSession(s) => Some((&s.session_id, "session".to_owned())),
        Kind::HermesToolCall(t) => {
            let phase = if t.status == HermesToolCallStatus::Started as i32 { "started" } else { "result" };
            Some((&t.session_id, format!("{phase}:{}", t.tool_call_id)))
        }
        Kind::HermesTokenUsage(u) => Some((
            &u.session_id,
            format!(
                "usage:{}/{}/{}/{}/{}/{}/{}/{:?}/{:?}/{}",
                u.model,
                u.input_tokens,
                u.output_tokens,
                u.cache_read_tokens,
                u.cache_write_tokens,
                u.reasoning_tokens,
                u.api_call_count,
                u.estimated_cost_usd,
                u.actual_cost_usd,
                u.cost_status
            ),
        )),
        Kind::HermesSessionEnd(e) => Some((&e.session_id, "end".to_owned())),
        _ => None,
    }
}

/// Brings a store to [`SCHEMA_VERSION`]; refuses one newer than this build.
fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), String>> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Err(format!("schema is newer than this build: user_version {version} > {SCHEMA_VERSION}")));
    }
    if version < 2 {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed = migrate_v2(&tx)?;
        tx.pragma_update(None, "user_version", 2)?;
        tx.commit()?;
        if removed > 0 {
            tracing::warn!(removed, "telemetry sink migrated: Hermes events stored twice before are kept once");
        }
    }
    Ok(Ok(()))
}

/// Version 1 to 2: creates the Hermes keys and fills them from the stored events, oldest seq
/// first; a later copy of an event is removed (its seq goes to `resent` while above its
/// node's ack). Returns how many copies went.
fn migrate_v2(tx: &Connection) -> rusqlite::Result<usize> {
    tx.execute_batch(HERMES_KEYS)?;
    let mut copies = Vec::new();
    {
        let mut st =
            tx.prepare("SELECT node, seq, house, event FROM events WHERE kind LIKE 'hermes_%' ORDER BY node, seq")?;
        let mut rows = st.query([])?;
        let mut key = tx.prepare(
            "INSERT OR IGNORE INTO hermes_keys (node, house, session_id, item, seq) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut first =
            tx.prepare("SELECT seq FROM hermes_keys WHERE node = ?1 AND house = ?2 AND session_id = ?3 AND item = ?4")?;
        while let Some(r) = rows.next()? {
            let (node, seq, house): (String, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let Ok(event) = TelemetryEvent::decode(r.get::<_, Vec<u8>>(3)?.as_slice()) else { continue };
            let Some((session, item)) = hermes_key(event.kind.as_ref()) else { continue };
            if key.execute(params![node, house, session, item, seq])? == 0 {
                let of: i64 = first.query_row(params![node, house, session, item], |r| r.get(0))?;
                copies.push((node, seq, of));
            }
        }
    }
    for (node, seq, of) in &copies {
        tx.execute("DELETE FROM events WHERE node = ?1 AND seq = ?2", params![node, seq])?;
        tx.execute(
            "INSERT OR IGNORE INTO resent (node, seq, of_seq)
             SELECT ?1, ?2, ?3 WHERE ?2 > coalesce((SELECT acked_through FROM nodes WHERE node = ?1), 0)",
            params![node, seq, of],
        )?;
    }
    Ok(copies.len())
}

/// Stores the Hermes key of event `seq` of `node`, unless the same Hermes event is stored
/// under another seq: then records `seq` as resent and returns `false` (store nothing).
fn keep_hermes_event(
    tx: &Connection,
    node: &str,
    house: House,
    seq: i64,
    event: &TelemetryEvent,
) -> rusqlite::Result<bool> {
    let Some((session, item)) = hermes_key(event.kind.as_ref()) else { return Ok(true) };
    let added = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO hermes_keys (node, house, session_id, item, seq) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![node, house.as_str(), session, item, seq])?;
    if added > 0 {
        return Ok(true);
    }
    let of: i64 = tx
        .prepare_cached("SELECT seq FROM hermes_keys WHERE node = ?1 AND house = ?2 AND session_id = ?3 AND item = ?4")?
        .query_row(params![node, house.as_str(), session, item], |r| r.get(0))?;
    if of == seq {
        // The same event under the same seq: the (node, seq) key already makes it a no-op.
        return Ok(true);
    }
    tx.prepare_cached("INSERT OR IGNORE INTO resent (node, seq, of_seq) VALUES (?1, ?2, ?3)")?
        .execute(params![node, seq, of])?;
    Ok(false)
}

/// What one stored burst did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Every event of the node up to this seq is stored.
    pub acked_through: u64,
    /// Indexes (into the burst) of the events that were new.
    pub new: Vec<usize>,
    /// Events of the burst that were Hermes events already stored under another seq.
    pub resent: usize,
}

/// The sink's SQLite store.
pub struct SinkStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for SinkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::new(ErrorCode::HomeUnavailable, format!("telemetry sink {}: {e}", path.display()))
}

impl SinkStore {
    /// Opens (creating) the store.
    ///
    /// # Errors
    /// E4002 when the file cannot be opened or set up.
    pub fn open(path: &Path, config: &TelemetryConfig) -> Result<SinkStore, Error> {
        let err = db_err(path);
        let mut conn = Connection::open(path).map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(&err)?;
        conn.pragma_update(None, "synchronous", config.durability.pragma()).map_err(&err)?;
        conn.execute_batch(SCHEMA).map_err(&err)?;
        migrate(&mut conn).map_err(&err)?.map_err(|why| {
            Error::new(ErrorCode::HomeUnavailable, format!("telemetry sink {}: {why}", path.display()))
        })?;
        conn.execute_batch(CHECKPOINT_SCHEMA).map_err(&err)?;
        Ok(SinkStore { conn: Mutex::new(conn), path: path.to_owned() })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores one burst of `node`'s events, sent by `house`, in one transaction.
    ///
    /// `house` must be the house the fleet config binds `node` to (the service checks before
    /// calling). A node stored under another house before (its binding changed, or it was
    /// squatted before bindings were checked) starts over as a node first seen here: its old
    /// acknowledgement, which the other house's seqs made, says nothing about this house's.
    ///
    /// `opening` marks a stream's first burst. A stream starts with the node's oldest
    /// unacknowledged event, so seqs below its first that this store lacks will never come:
    /// the node's outbox was recreated (it numbers on above its old seqs, see
    /// `outbox::first_seq_for_new`), or this store lost them. The ack then moves past them
    /// instead of waiting for them forever.
    ///
    /// # Errors
    /// E4002 when the transaction fails (nothing was stored).
    pub fn store(&self, house: House, node: &str, events: &[TelemetryEvent], opening: bool) -> Result<Stored, Error> {
        let err = db_err(&self.path);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        let known: Option<(String, i64)> = tx
            .query_row("SELECT house, acked_through FROM nodes WHERE node = ?1", [node], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(&err)?;
        let known = match known {
            Some((h, _)) if h != house.as_str() => {
                tracing::warn!(%node, from = %h, to = %house, "node rebound to another house; its stream starts over");
                None
            }
            k => k,
        };
        let mut acked = known.as_ref().map_or(0, |(_, a)| *a);
        // A node first seen here is followed from the first seq it sends; a known node from
        // the first seq of a new stream when that lies beyond what is stored.
        if known.is_none() || opening {
            let below_first = events.iter().map(|e| e.seq).min().map_or(0, |s| s.saturating_sub(1));
            acked = acked.max(i64::try_from(below_first).unwrap_or(i64::MAX));
        }
        let stored_us = now_us();
        let mut new = Vec::new();
        let mut resent = 0;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events (node, seq, house, kind, time_ms, stored_us, event)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(&err)?;
            for (i, e) in events.iter().enumerate() {
                let seq = i64::try_from(e.seq).unwrap_or(i64::MAX);
                if !keep_hermes_event(&tx, node, house, seq, e).map_err(&err)? {
                    resent += 1;
                    continue;
                }
                let added = ins
                    .execute(params![
                        node,
                        seq,
                        house.as_str(),
                        kind_name(e.kind.as_ref()),
                        e.time_unix_ms,
                        stored_us,
                        e.encode_to_vec()
                    ])
                    .map_err(&err)?;
                if added > 0 {
                    new.push(i);
                }
            }
            keep_checkpoints(&tx, node, events).map_err(&err)?;
            let mut has = tx
                .prepare_cached(
                    "SELECT 1 FROM events WHERE node = ?1 AND seq = ?2
                     UNION ALL SELECT 1 FROM resent WHERE node = ?1 AND seq = ?2",
                )
                .map_err(&err)?;
            while has.exists(params![node, acked + 1]).map_err(&err)? {
                acked += 1;
            }
        }
        // A resent seq counts for the ack only until the ack covers it.
        tx.execute("DELETE FROM resent WHERE node = ?1 AND seq <= ?2", params![node, acked]).map_err(&err)?;
        let last_time = events.iter().map(|e| e.time_unix_ms).max().unwrap_or(0);
        tx.execute(
            "INSERT INTO nodes (node, house, acked_through, last_time_ms, last_stored_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (node) DO UPDATE SET house = excluded.house, acked_through = excluded.acked_through,
                 last_time_ms = max(last_time_ms, excluded.last_time_ms), last_stored_ms = excluded.last_stored_ms",
            params![node, house.as_str(), acked, last_time, stored_us / 1000],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(Stored { acked_through: u64::try_from(acked).unwrap_or(0), new, resent })
    }

    /// `node`'s audit checkpoints stored after position `after`, oldest first: at most
    /// [`CHECKPOINTS_PAGE`], the position of the last one, and whether more follow.
    ///
    /// # Errors
    /// E4002 when the store cannot be read.
    pub fn checkpoints(&self, node: &str, after: u64) -> Result<(Vec<AuditCheckpoint>, u64, bool), Error> {
        let err = db_err(&self.path);
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT id, seq, hash, spent_seq, spent_hash FROM audit_checkpoints WHERE node = ?1 AND id > ?2
                 ORDER BY id LIMIT ?3",
            )
            .map_err(&err)?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = st
            .query_map(params![node, after, i64::from(CHECKPOINTS_PAGE) + 1], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    AuditCheckpoint {
                        seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        hash: r.get(2)?,
                        spent_seq: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        spent_hash: r.get(4)?,
                    },
                ))
            })
            .map_err(&err)?;
        let mut out: Vec<(i64, AuditCheckpoint)> = rows.collect::<Result<_, _>>().map_err(&err)?;
        let more = out.len() > CHECKPOINTS_PAGE as usize;
        out.truncate(CHECKPOINTS_PAGE as usize);
        let next = out.last().map_or(after, |(id, _)| *id);
        Ok((out.into_iter().map(|(_, c)| c).collect(), u64::try_from(next).unwrap_or(0), more))
    }

    /// Stored events (of `node`, or all; of nodes streamed by `house` when given) with seq
    /// above `since`, ordered by node then seq; at most `limit`, and whether more matched.
    ///
    /// # Errors
    /// E4002 when the store cannot be read.
    pub fn events(
        &self,
        node: &str,
        house: Option<House>,
        since: u64,
        limit: u32,
    ) -> Result<(Vec<TelemetryEvent>, bool), Error> {
        let err = db_err(&self.path);
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT event FROM events WHERE (?1 = '' OR node = ?1) AND (?2 = '' OR house = ?2) AND seq > ?3
                 ORDER BY node, seq LIMIT ?4",
            )
            .map_err(&err)?;
        let house = house.map_or("", House::as_str);
        let rows = st
            .query_map(params![node, house, i64::try_from(since).unwrap_or(i64::MAX), i64::from(limit) + 1], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .map_err(&err)?;
        let mut out = Vec::new();
        for bytes in rows {
            let bytes = bytes.map_err(&err)?;
            match TelemetryEvent::decode(bytes.as_slice()) {
                Ok(e) => out.push(e),
                Err(e) => tracing::error!(error = %e, "undecodable event in the sink; skipped"),
            }
        }
        let more = out.len() > limit as usize;
        out.truncate(limit as usize);
        Ok((out, more))
    }

    /// Per node: (node, acked_through, lag ms of the newest burst).
    ///
    /// # Errors
    /// E4002 when the store cannot be read.
    pub fn nodes(&self, node: &str) -> Result<Vec<(String, u64, u64)>, Error> {
        let err = db_err(&self.path);
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT node, acked_through, max(0, last_stored_ms - last_time_ms) FROM nodes
                 WHERE ?1 = '' OR node = ?1 ORDER BY node",
            )
            .map_err(&err)?;
        let rows = st
            .query_map([node], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                ))
            })
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }
}

/// Timmy's `Telemetry` service.
#[derive(Clone)]
pub struct SinkService {
    store: Arc<SinkStore>,
    intelligence: Option<Arc<Intelligence>>,
    live: Live,
    own_node: Arc<str>,
    batch: usize,
    connected: Arc<Mutex<HashMap<String, usize>>>,
}

impl std::fmt::Debug for SinkService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkService").field("store", &self.store).finish_non_exhaustive()
    }
}

/// Counts a node's open streams while alive.
struct Connected {
    map: Arc<Mutex<HashMap<String, usize>>>,
    node: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.node);
            }
        }
    }
}

impl SinkService {
    /// The sink over `store`, checking who may stream which node against `live`'s fleet;
    /// executions of other nodes than this one teach `intelligence`.
    pub fn new(store: Arc<SinkStore>, intelligence: Option<Arc<Intelligence>>, live: Live) -> SinkService {
        let config = live.get();
        SinkService {
            store,
            intelligence,
            own_node: config.node_name().into(),
            batch: config.telemetry.batch,
            live,
            connected: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Refuses unless the live config binds `node` to `house` (E5002).
    fn check_binding(&self, house: House, node: &str) -> Result<(), Error> {
        match self.live.get().node_house(node) {
            Some(h) if h == house => Ok(()),
            Some(h) => Err(Error::new(
                ErrorCode::Impersonation,
                format!("node `{node}` is bound to {h}; {house} may not stream its events"),
            )
            .with_details(serde_json::json!({ "node": node, "house": house, "bound_to": h }))),
            None => Err(Error::new(
                ErrorCode::Impersonation,
                format!("node `{node}` is bound to no house; list it in houses.{house}.nodes of Timmy's config"),
            )
            .with_details(serde_json::json!({ "node": node, "house": house }))),
        }
    }

    fn connect(&self, node: &str) -> Connected {
        *self.connected.lock().unwrap_or_else(PoisonError::into_inner).entry(node.to_owned()).or_default() += 1;
        Connected { map: self.connected.clone(), node: node.to_owned() }
    }

    /// Every node's stream status (blocking: reads the store).
    ///
    /// # Errors
    /// E4002 when the store cannot be read.
    pub fn node_status(&self) -> Result<Vec<NodeStatus>, Error> {
        Ok(self
            .store
            .nodes("")?
            .into_iter()
            .map(|(node, last_seq, lag_ms)| NodeStatus { connected: self.is_connected(&node), node, last_seq, lag_ms })
            .collect())
    }

    fn is_connected(&self, node: &str) -> bool {
        self.connected.lock().unwrap_or_else(PoisonError::into_inner).contains_key(node)
    }

    /// Feeds newly stored executions of other nodes into the pattern DB.
    fn learn(&self, node: &str, events: &[TelemetryEvent], new: &[usize]) {
        let Some(intel) = &self.intelligence else { return };
        if node == &*self.own_node {
            return;
        }
        let node: Arc<str> = node.into();
        for &i in new {
            let Some(Kind::Execution(x)) = &events[i].kind else { continue };
            let Some(row) = wire::execution_row(x, events[i].time_unix_ms, &node) else { continue };
            let result = if intel.record(row).is_ok() { "recorded" } else { "dropped" };
            metrics::counter!("uw_telemetry_sink_patterns_total", "result" => result).increment(1);
        }
    }
}

/// Keeps the audit checkpoints of a burst of `node`'s (the node the stream is bound to), once
/// each: a resent event, or a head sent again after a restart, adds nothing.
fn keep_checkpoints(tx: &rusqlite::Transaction<'_>, node: &str, events: &[TelemetryEvent]) -> rusqlite::Result<()> {
    let mut ins = tx.prepare_cached(
        "INSERT OR IGNORE INTO audit_checkpoints (node, seq, hash, spent_seq, spent_hash, event_seq, time_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for e in events {
        let Some(Kind::AuditCheckpoint(c)) = &e.kind else { continue };
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        ins.execute(params![node, int(c.seq), c.hash, int(c.spent_seq), c.spent_hash, int(e.seq), e.time_unix_ms])?;
    }
    Ok(())
}

/// Refuses a checkpoint whose hashes are not 64 lowercase hex digits ("" with seq 0), or whose
/// seqs do not fit SQLite's integers (E1005).
fn valid_checkpoints(events: &[TelemetryEvent]) -> Result<(), tonic::Status> {
    let hash_ok = |seq: u64, h: &str| {
        i64::try_from(seq).is_ok()
            && if seq == 0 {
                h.is_empty()
            } else {
                h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            }
    };
    for e in events {
        let Some(Kind::AuditCheckpoint(c)) = &e.kind else { continue };
        if !hash_ok(c.seq, &c.hash) || !hash_ok(c.spent_seq, &c.spent_hash) {
            return Err(invalid(format!(
                "event {} of `{}`: an audit checkpoint's hashes are 64 lowercase hex digits (\"\" at seq 0)",
                e.seq, e.node
            )));
        }
    }
    Ok(())
}

fn invalid(why: String) -> tonic::Status {
    wire::status(&Error::new(ErrorCode::InvalidInput, why))
}

/// Checks one burst: one node throughout, positive seqs, a kind set.
fn check_burst(node: &mut Option<String>, events: &[TelemetryEvent]) -> Result<(), tonic::Status> {
    for e in events {
        if e.node.is_empty() || e.node.len() > 256 {
            return Err(invalid("an event's `node` must be 1 to 256 characters".into()));
        }
        // Before the name is logged or echoed anywhere.
        wire::printable("node", &e.node).map_err(|e| wire::status(&e))?;
        match node {
            Some(n) if *n != e.node => {
                return Err(invalid(format!("one stream carries one node (`{n}`), not `{}`", e.node)));
            }
            Some(_) => {}
            None => *node = Some(e.node.clone()),
        }
        if e.seq == 0 || e.kind.is_none() {
            return Err(invalid(format!("event {} of `{}` needs a positive seq and a kind", e.seq, e.node)));
        }
    }
    Ok(())
}

/// Refuses a burst holding an execution of another house than the one streaming (E5002): a
/// node reports its own house's calls, and the pattern DB learns them for that house only.
fn own_executions(house: House, events: &[TelemetryEvent]) -> Result<(), Error> {
    for e in events {
        let Some(Kind::Execution(x)) = &e.kind else { continue };
        let claimed = wire::house_from_wire(x.house);
        if claimed != Some(house) {
            let shown = claimed.map_or_else(|| format!("house number {}", x.house), |h| h.to_string());
            return Err(Error::new(
                ErrorCode::Impersonation,
                format!("event {} of `{}` is an execution of {shown}; {house} reports only its own", e.seq, e.node),
            )
            .with_details(serde_json::json!({ "house": house, "claimed": x.house, "seq": e.seq })));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Telemetry for SinkService {
    type StreamStream = ReceiverStream<Result<Ack, tonic::Status>>;

    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<TelemetryEvent>>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        let peer = auth::peer(&request)?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let sink = self.clone();
        tokio::spawn(async move {
            let mut bursts = inbound.ready_chunks(sink.batch);
            let mut node: Option<String> = None;
            let mut _connected: Option<Connected> = None;
            // The first stored burst of this stream (see `SinkStore::store`).
            let mut opening = true;
            while let Some(burst) = bursts.next().await {
                let mut events = Vec::with_capacity(burst.len());
                for item in burst {
                    match item {
                        Ok(e) => events.push(e),
                        Err(s) => {
                            // A message that does not decode is answered as a unary one would
                            // be (E1005); anything else means the client went away.
                            if let Some(answer) = crate::conventions::replacement(s.code(), s.message()) {
                                tracing::warn!(house = %peer.house, reason = %s.message(), "telemetry stream refused");
                                let _ = tx.send(Err(answer)).await;
                            }
                            return;
                        }
                    }
                }
                if let Err(s) = check_burst(&mut node, &events).and_then(|()| valid_checkpoints(&events)) {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
                let Some(n) = node.clone() else { continue };
                let seqs = (events.first().map_or(0, |e| e.seq), events.last().map_or(0, |e| e.seq));
                tracing::debug!(target: super::LAG_TARGET, stage = "sink_received", node = %n, first_seq = seqs.0, last_seq = seqs.1, t_us = super::now_us());
                // Every burst, so a binding withdrawn by a hot reload ends the stream too; before
                // the node is shown connected or anything is stored.
                if let Err(e) = sink.check_binding(peer.house, &n).and_then(|()| own_executions(peer.house, &events)) {
                    metrics::counter!("uw_auth_refused_total", "code" => e.code.as_str()).increment(1);
                    tracing::warn!(code = e.code.as_str(), node = %n, house = %peer.house, reason = %e.message, "telemetry stream refused");
                    let _ = tx.send(Err(wire::status(&e))).await;
                    return;
                }
                if _connected.is_none() {
                    _connected = Some(sink.connect(&n));
                    tracing::info!(node = %n, house = %peer.house, "telemetry stream open");
                }
                let store = sink.store.clone();
                let (house, name) = (peer.house, n.clone());
                let events = Arc::new(events);
                let evs = events.clone();
                let stored = tokio::task::spawn_blocking(move || store.store(house, &name, &evs, opening)).await;
                let stored = match stored {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::error!(code = e.code.as_str(), error = %e.message, node = %n, "telemetry burst not stored");
                        let _ = tx.send(Err(wire::status(&e))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(tonic::Status::internal(format!("store task failed: {e}")))).await;
                        return;
                    }
                };
                opening = false;
                tracing::debug!(target: super::LAG_TARGET, stage = "sink_commit", node = %n, first_seq = seqs.0, last_seq = seqs.1, t_us = super::now_us());
                let dup = (events.len() - stored.new.len() - stored.resent) as u64;
                metrics::counter!("uw_telemetry_sink_events_total", "result" => "new")
                    .increment(stored.new.len() as u64);
                metrics::counter!("uw_telemetry_sink_events_total", "result" => "duplicate").increment(dup);
                metrics::counter!("uw_telemetry_sink_events_total", "result" => "resent_hermes")
                    .increment(stored.resent as u64);
                if tx.send(Ok(Ack { node: n.clone(), acked_through_seq: stored.acked_through })).await.is_err() {
                    return;
                }
                sink.learn(&n, &events, &stored.new);
            }
            if let Some(n) = node {
                tracing::info!(node = %n, "telemetry stream closed");
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }

    async fn query(
        &self,
        request: tonic::Request<TelemetryQuery>,
    ) -> Result<tonic::Response<TelemetryQueryResponse>, tonic::Status> {
        let peer = auth::peer(&request)?;
        let q = request.into_inner();
        let limit = if q.limit == 0 { QUERY_LIMIT } else { q.limit.min(QUERY_MAX) };
        // Timmy reads everything; another house reads the events of the nodes it streamed.
        let house = (peer.house != House::Timmy).then_some(peer.house);
        let store = self.store.clone();
        let node = q.node.clone();
        let read = tokio::task::spawn_blocking(move || {
            let (events, more) = store.events(&node, house, q.since_seq, limit)?;
            Ok::<_, Error>((events, more, store.nodes(&node)?))
        })
        .await
        .map_err(|e| tonic::Status::internal(format!("query task failed: {e}")))?
        .map_err(|e| wire::status(&e))?;
        let (events, has_more, mut nodes) = read;
        if let Some(h) = house {
            let config = self.live.get();
            nodes.retain(|(n, _, _)| config.node_house(n) == Some(h));
        }
        let nodes = nodes
            .into_iter()
            .map(|(node, last_seq, lag_ms)| NodeStatus { connected: self.is_connected(&node), node, last_seq, lag_ms })
            .collect();
        Ok(tonic::Response::new(TelemetryQueryResponse { events, nodes, has_more }))
    }

    async fn audit_checkpoints(
        &self,
        request: tonic::Request<AuditCheckpointsRequest>,
    ) -> Result<tonic::Response<AuditCheckpointsResponse>, tonic::Status> {
        let peer = auth::peer(&request)?;
        let q = request.into_inner();
        wire::printable("node", &q.node).map_err(|e| wire::status(&e))?;
        if q.node.is_empty() || q.node.len() > 256 {
            return Err(invalid("`node` must be 1 to 256 characters".into()));
        }
        // Timmy reads every node's checkpoints; another house only those of its own nodes.
        if peer.house != House::Timmy && self.live.get().node_house(&q.node) != Some(peer.house) {
            let e = Error::new(
                ErrorCode::Forbidden,
                format!("{} may read only the audit checkpoints of its own nodes, not `{}`'s", peer.house, q.node),
            )
            .with_details(serde_json::json!({ "node": q.node, "house": peer.house }));
            metrics::counter!("uw_auth_refused_total", "code" => e.code.as_str()).increment(1);
            tracing::warn!(code = e.code.as_str(), node = %q.node, house = %peer.house, "audit checkpoints refused");
            return Err(wire::status(&e));
        }
        let store = self.store.clone();
        let (checkpoints, next_after, has_more) =
            tokio::task::spawn_blocking(move || store.checkpoints(&q.node, q.after))
                .await
                .map_err(|e| tonic::Status::internal(format!("checkpoint task failed: {e}")))?
                .map_err(|e| wire::status(&e))?;
        Ok(tonic::Response::new(AuditCheckpointsResponse { checkpoints, next_after, has_more }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uni_wizard_proto::v1;

    fn ev(node: &str, seq: u64) -> TelemetryEvent {
        TelemetryEvent {
            node: node.into(),
            seq,
            time_unix_ms: 1,
            kind: Some(Kind::Hook(v1::HookEvent { hook: "x".into(), ..Default::default() })),
        }
    }

    /// Proves resent events are stored once and the ack covers only a contiguous prefix.
    #[test]
    fn store_dedups_and_acks_contiguous_prefix() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = SinkStore::open(&dir.path().join("t.db"), &TelemetryConfig::default()).expect("open");
        let a = s.store(House::Allegro, "n", &[ev("n", 1), ev("n", 2), ev("n", 4)], true).expect("store");
        assert_eq!((a.acked_through, a.new.len()), (2, 3));
        let b = s.store(House::Allegro, "n", &[ev("n", 2), ev("n", 3)], false).expect("store");
        assert_eq!((b.acked_through, b.new), (4, vec![1]));
        let (events, more) = s.events("n", None, 0, 10).expect("events");
        assert_eq!((events.len(), more), (4, false));
    }

    /// Proves a node stored under one house and then streamed by the house the config binds
    /// it to starts over from that stream's first seq: the old house's ack is not taken over.
    #[test]
    fn a_rebound_node_starts_over() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = SinkStore::open(&dir.path().join("t.db"), &TelemetryConfig::default()).expect("open");
        let squat = s.store(House::Ezra, "n", &[ev("n", 100), ev("n", 101)], true).expect("store");
        assert_eq!(squat.acked_through, 101);
        let real = s.store(House::Bezalel, "n", &[ev("n", 7), ev("n", 8)], true).expect("store");
        assert_eq!((real.acked_through, real.new.len()), (8, 2), "acked from its own first seq, not the squatter's");
    }

    /// Proves a new stream whose first seq lies beyond the stored ones (a recreated outbox)
    /// moves the ack past the gap, while a gap inside a stream still holds the ack back.
    #[test]
    fn a_stream_opening_beyond_the_store_moves_the_ack() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = SinkStore::open(&dir.path().join("t.db"), &TelemetryConfig::default()).expect("open");
        let a = s.store(House::Allegro, "n", &[ev("n", 1), ev("n", 2)], true).expect("store");
        assert_eq!(a.acked_through, 2);
        let b = s.store(House::Allegro, "n", &[ev("n", 5)], false).expect("store");
        assert_eq!((b.acked_through, b.new.len()), (2, 1), "a gap inside a stream holds the ack");
        let big = 1_800_000_000_000_000;
        let c = s.store(House::Allegro, "n", &[ev("n", big), ev("n", big + 1)], true).expect("store");
        assert_eq!((c.acked_through, c.new.len()), (big + 1, 2), "a new outbox's first seq opens a stream");
        let d = s.store(House::Allegro, "n", &[ev("n", 1)], true).expect("store");
        assert_eq!((d.acked_through, d.new.len()), (big + 1, 0), "an old seq is still a duplicate");
        let (events, _) = s.events("n", None, 0, 10).expect("events");
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 5, big, big + 1]);
    }

    /// Proves an audit checkpoint is kept once per node, whichever event carries it again (a
    /// resend, or the same head sent after a restart), apart from another node's equal one;
    /// and one whose hash is not 64 lowercase hex digits is refused before anything is stored.
    #[test]
    fn audit_checkpoints_are_kept_once_per_node_and_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = SinkStore::open(&dir.path().join("t.db"), &TelemetryConfig::default()).expect("open");
        let checkpoint = |node: &str, seq: u64, hash: &str| TelemetryEvent {
            node: node.into(),
            seq,
            time_unix_ms: 1,
            kind: Some(Kind::AuditCheckpoint(v1::AuditCheckpoint {
                seq: 7,
                hash: hash.into(),
                spent_seq: 0,
                spent_hash: String::new(),
            })),
        };
        let h = "a".repeat(64);
        s.store(House::Allegro, "n", &[checkpoint("n", 1, &h), ev("n", 2)], true).expect("store");
        s.store(House::Allegro, "n", &[checkpoint("n", 1, &h), checkpoint("n", 3, &h)], false).expect("store");
        s.store(House::Ezra, "m", &[checkpoint("m", 1, &h)], true).expect("store");
        let (kept, _, more) = s.checkpoints("n", 0).expect("checkpoints");
        assert_eq!((kept.len(), kept[0].seq, kept[0].hash.as_str(), more), (1, 7, h.as_str(), false));
        assert_eq!(s.checkpoints("m", 0).expect("checkpoints").0.len(), 1);
        for bad in ["A".repeat(64), "a".repeat(63), String::new()] {
            assert!(valid_checkpoints(&[checkpoint("n", 4, &bad)]).is_err(), "{bad:?} was taken");
        }
        assert!(valid_checkpoints(&[checkpoint("n", 4, &h)]).is_ok());
    }

    fn hermes(seq: u64, kind: Kind) -> TelemetryEvent {
        TelemetryEvent { node: "n".into(), seq, time_unix_ms: 1, kind: Some(kind) }
    }

    fn call(session: &str, id: &str, status: v1::HermesToolCallStatus, message_id: u64) -> Kind {
        Kind::HermesToolCall(v1::HermesToolCallEvent {
            session_id: session.into(),
            tool_call_id: id.into(),
            status: status as i32,
            message_id,
            ..Default::default()
        })
    }

    fn session(id: &str) -> Kind {
        Kind::HermesSession(v1::HermesSessionEvent { session_id: id.into(), ..Default::default() })
    }

    /// Proves Hermes history sent again under new seqs (a lost outbox, an older state.db read
    /// again) is stored once and still acknowledged, while a new event of the same session, or
    /// the same message id in another session (a recreated state.db), is stored.
    #[test]
    fn a_hermes_event_resent_under_a_new_seq_is_stored_once_and_acked() {
        use v1::HermesToolCallStatus::{Started, Succeeded};
        let dir = tempfile::tempdir().expect("tmp");
        let s = SinkStore::open(&dir.path().join("t.db"), &TelemetryConfig::default()).expect("open");
        let first = [
            hermes(1, session("s1")),
            hermes(2, call("s1", "c1", Started, 2)),
            hermes(3, call("s1", "c1", Succeeded, 3)),
        ];
        assert_eq!(s.store(House::Allegro, "n", &first, true).expect("store").new.len(), 3);
        // The same history under a new outbox's seqs, a re-inserted result row (another
        // message id) among it, then a new call and a recreated file's session.
        let again = [
            hermes(100, session("s1")),
            hermes(101, call("s1", "c1", Started, 2)),
            hermes(102, call("s1", "c1", Succeeded, 9)),
            hermes(103, call("s1", "c2", Started, 10)),
            hermes(104, session("s2")),
            hermes(105, call("s2", "c9", Started, 2)),
        ];
        let b = s.store(House::Allegro, "n", &again, true).expect("store");
        assert_eq!((b.acked_through, b.new, b.resent), (105, vec![3, 4, 5], 3));
        let c = s.store(House::Allegro, "n", &again, false).expect("store");
        assert_eq!((c.acked_through, c.new.len(), c.resent), (105, 0, 3), "sent a third time: still acked");
        let (events, _) = s.events("n", None, 0, 100).expect("events");
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 103, 104, 105]);
    }

    /// Proves Hermes keys stored for a node name by another house (a squatter before the name
    /// was bound) suppress nothing of the house it is bound to.
    #[test]
    fn hermes_keys_of_another_house_suppress_nothing() {
        use v1::HermesToolCallStatus::Started;
        let dir = tempfile::tempdir().expect("tmp");
        let s = SinkStore::open(&dir.path().join("t.db"), &TelemetryConfig::default()).expect("open");
        let evs = [hermes(1, session("s")), hermes(2, call("s", "c", Started, 2))];
        s.store(House::Ezra, "n", &evs, true).expect("squat");
        let real = [hermes(7, session("s")), hermes(8, call("s", "c", Started, 2))];
        let b = s.store(House::Bezalel, "n", &real, true).expect("store");
        assert_eq!((b.acked_through, b.new.len(), b.resent), (8, 2, 0));
    }

    /// Proves a resent Hermes event beyond a gap holds its place in the ack until the gap fills.
    #[test]
    fn a_resent_event_beyond_a_gap_is_acked_once_the_gap_fills() {
        use v1::HermesToolCallStatus::Started;
        let dir = tempfile::tempdir().expect("tmp");
        let s = SinkStore::open(&dir.path().join("t.db"), &TelemetryConfig::default()).expect("open");
        s.store(House::Allegro, "n", &[hermes(1, call("s", "c1", Started, 1))], true).expect("store");
        let b = s.store(House::Allegro, "n", &[hermes(3, call("s", "c1", Started, 1))], false).expect("store");
        assert_eq!((b.acked_through, b.resent), (1, 1));
        let c = s.store(House::Allegro, "n", &[hermes(2, session("s"))], false).expect("store");
        assert_eq!(c.acked_through, 3);
    }

    /// Proves a store made before versions were kept is migrated to one row per Hermes event:
    /// the later copy of an event stored twice goes, the rest stays, the ack holds.
    #[test]
    fn an_old_sink_is_migrated_to_one_row_per_hermes_event() {
        use v1::HermesToolCallStatus::Started;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t.db");
        {
            let c = Connection::open(&path).expect("db");
            c.execute_batch(SCHEMA).expect("v1 schema");
            let evs = [
                hermes(1, session("s")),
                hermes(2, call("s", "c", Started, 2)),
                ev("n", 3),
                hermes(4, session("s")),
                hermes(5, call("s", "c", Started, 2)),
            ];
            for e in evs {
                c.execute(
                    "INSERT INTO events (node, seq, house, kind, time_ms, stored_us, event) VALUES ('n', ?1, 'allegro', ?2, 1, 1, ?3)",
                    params![e.seq as i64, kind_name(e.kind.as_ref()), e.encode_to_vec()],
                )
                .expect("insert");
            }
            c.execute("INSERT INTO nodes VALUES ('n', 'allegro', 5, 1, 1)", []).expect("node");
        }
        let s = SinkStore::open(&path, &TelemetryConfig::default()).expect("migrate");
        let (events, _) = s.events("n", None, 0, 100).expect("events");
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        let again = s.store(House::Allegro, "n", &[hermes(6, session("s"))], false).expect("store");
        assert_eq!((again.acked_through, again.resent), (6, 1));
        drop(s);
        let c = Connection::open(&path).expect("db");
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1).expect("newer");
        drop(c);
        let e = SinkStore::open(&path, &TelemetryConfig::default()).expect_err("a newer store is refused");
        assert_eq!(e.code, ErrorCode::HomeUnavailable);
    }

    /// Proves a burst mixing nodes or carrying seq 0 is refused.
    #[test]
    fn bursts_are_checked() {
        let mut node = None;
        assert!(check_burst(&mut node, &[ev("a", 1), ev("b", 2)]).is_err());
        let mut node = None;
        assert!(check_burst(&mut node, &[ev("a", 0)]).is_err());
        let mut node = None;
        assert!(check_burst(&mut node, &[ev("a", 1), ev("a", 2)]).is_ok());
    }
}
