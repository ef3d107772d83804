//! Provenance: a record of every execution, and the ids that house policies cite.
//!
//! Bezalel's proof rule looks records up by id and asks for the last write to a target in a
//! session; both go through [`ProvenanceLog`], so the store behind it can change (an in-memory
//! ring here, the hash-chained SQLite [`AuditStore`](crate::audit::AuditStore) for audits)
//! without touching the policy.
//!
//! Appending is fallible: a durable store can fail to write, and Sovereign mode then fails the
//! call closed (E3008) instead of returning a result nobody recorded. [`ProvenanceLog::ready`]
//! lets the harness prove the store writable *before* a Sovereign call runs its tool.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::approval::Approval;
use crate::error::Result;
use crate::hash::FastMap;
use crate::house::{House, Mode};

/// One execution, as the policy and the audit see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Time-ordered id (see [`new_id`]).
    pub id: String,
    /// Monotonic sequence within this log; orders records that share a millisecond.
    pub seq: u64,
    /// The call this one was made on behalf of, if any.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// The session the call belonged to (shared with the call's `Outcome`, so no copy).
    pub session: Arc<str>,
    /// The calling house.
    pub house: House,
    /// The harness mode.
    pub mode: Mode,
    /// The node that ran the call.
    #[serde(default)]
    pub node: String,
    /// The tool run (a contract's static name when the harness writes it, so no copy).
    pub tool: Cow<'static, str>,
    /// The tool's target (path, repository, host).
    pub target: String,
    /// Whether the tool is read-only.
    pub read_only: bool,
    /// Whether the call was a dry run (a dry run is never a write).
    pub dry_run: bool,
    /// Whether it succeeded.
    pub ok: bool,
    /// The error code when it failed.
    pub error_code: Option<String>,
    /// SHA-256 of the canonical arguments, secrets redacted.
    pub args_sha256: String,
    /// SHA-256 of the canonical output JSON when the call succeeded.
    #[serde(default)]
    pub result_sha256: Option<String>,
    /// Timmy's approvals the call ran under.
    #[serde(default)]
    pub approvals: Vec<Approval>,
    /// Start, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// End, milliseconds since the Unix epoch.
    #[serde(default)]
    pub ended_ms: u64,
    /// Duration in microseconds.
    pub duration_us: u64,
}

impl Record {
    /// Whether this record changed its target.
    pub fn is_write(&self) -> bool {
        self.ok && !self.read_only && !self.dry_run
    }
}

/// An append under way: done at once (an in-memory log), or waiting for the group commit
/// that makes it durable ([`crate::audit::AuditStore`]). Awaiting it does not block the
/// runtime's thread, so concurrent calls share one transaction and one fsync.
#[derive(Debug)]
pub enum Appending {
    /// The append is over.
    Done(Result<u64>),
    /// The append is queued; the sender answers after the commit (or its failure).
    Waiting(tokio::sync::oneshot::Receiver<Result<u64>>),
}

impl Appending {
    /// The record's `seq` once it is in the log.
    ///
    /// # Errors
    /// As [`ProvenanceLog::append`]; E3008 when the log's writer went away unanswered.
    pub async fn wait(self) -> Result<u64> {
        match self {
            Appending::Done(r) => r,
            Appending::Waiting(rx) => rx.await.unwrap_or_else(|_| {
                Err(crate::error::Error::new(
                    crate::error::ErrorCode::ProvenanceUnavailable,
                    "the provenance log's writer stopped before answering",
                ))
            }),
        }
    }
}

/// Where execution records go and how policies find them again.
pub trait ProvenanceLog: Send + Sync {
    /// Appends a record. `record.seq` is assigned by the log and returned.
    ///
    /// # Errors
    /// E3008 when a durable log cannot commit the record.
    fn append(&self, record: Record) -> Result<u64>;
    /// Starts an append to be awaited ([`Appending::wait`]); what the harness uses. The default
    /// appends at once; a durable log queues the record for its next group commit.
    fn submit(&self, record: Record) -> Appending {
        Appending::Done(self.append(record))
    }
    /// Proves the log can take a write now; Sovereign mode asks before running a tool.
    ///
    /// # Errors
    /// E3008 when the log cannot be written.
    fn ready(&self) -> Result<()> {
        Ok(())
    }
    /// The record with this id, if the log still holds it.
    fn get(&self, id: &str) -> Option<Record>;
    /// The newest successful write to `target` in `session`.
    fn last_write(&self, session: &str, target: &str) -> Option<Record>;
}

/// A bounded in-memory log: the newest `capacity` records, indexed by id.
///
/// Records sit in a ring in `seq` order, so a record's place is its `seq` minus the oldest
/// one's; the indexes map to a `seq` rather than own a record, which keeps their entries small
/// (an append that grows or tidies a table moves 32-byte entries, not whole records).
#[derive(Debug)]
pub struct MemoryLog {
    capacity: usize,
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    next_seq: u64,
    /// Oldest first; `records[i].seq == records[0].seq + i`.
    records: VecDeque<Record>,
    /// Record id -> seq.
    by_id: FastMap<IdKey, u64>,
    /// (session, target) -> seq of the newest successful write.
    last_write: FastMap<(String, String), u64>,
}

/// A record id as [`MemoryLog`]'s index keys it: an id of up to 24 bytes (every id of
/// [`new_id`]) inline, so indexing a harness's record copies no string onto the heap; a longer
/// one as its text. One-to-one: two ids have the same key only if they are the same text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum IdKey {
    Inline { len: u8, bytes: [u8; 24] },
    Text(String),
}

impl IdKey {
    /// The key of `id`, copying it to the heap only when it is longer than 24 bytes.
    fn of(id: &str) -> IdKey {
        IdKey::inline(id).unwrap_or_else(|| IdKey::Text(id.to_owned()))
    }

    /// The key of an owned `id`, which it keeps when it is too long to inline.
    fn of_owned(id: String) -> IdKey {
        IdKey::inline(&id).unwrap_or(IdKey::Text(id))
    }

    fn inline(id: &str) -> Option<IdKey> {
        let len = id.len();
        let mut bytes = [0u8; 24];
        bytes.get_mut(..len)?.copy_from_slice(id.as_bytes());
        Some(IdKey::Inline { len: len as u8, bytes })
    }
}

impl MemoryInner {
    fn by_seq(&self, seq: u64) -> Option<&Record> {
        let first = self.records.front()?.seq;
        self.records.get(usize::try_from(seq.checked_sub(first)?).ok()?)
    }
}

impl MemoryLog {
    /// A log that keeps the newest `capacity` records (at least one).
    pub fn new(capacity: usize) -> MemoryLog {
        MemoryLog { capacity: capacity.max(1), inner: Mutex::new(MemoryInner::default()) }
    }
}

impl Default for MemoryLog {
    fn default() -> MemoryLog {
        MemoryLog::new(10_000)
    }
}

impl ProvenanceLog for MemoryLog {
    fn append(&self, mut record: Record) -> Result<u64> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.next_seq += 1;
        let seq = inner.next_seq;
        record.seq = seq;
        if record.is_write() {
            inner.last_write.insert((record.session.to_string(), record.target.clone()), seq);
        }
        inner.by_id.insert(IdKey::of(&record.id), seq);
        inner.records.push_back(record);
        while inner.records.len() > self.capacity {
            let Some(old) = inner.records.pop_front() else { break };
            // Only a write was indexed by target (see above); asked before the fields move.
            let was_write = old.is_write();
            // An id appended twice points at its newest record; only that one unindexes it.
            // One lookup per index: the entry API takes the evicted record's own strings.
            if let Entry::Occupied(e) = inner.by_id.entry(IdKey::of_owned(old.id))
                && *e.get() == old.seq
            {
                e.remove();
            }
            if was_write
                && let Entry::Occupied(e) = inner.last_write.entry((old.session.to_string(), old.target))
                && *e.get() == old.seq
            {
                e.remove();
            }
        }
        Ok(seq)
    }

    fn get(&self, id: &str) -> Option<Record> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.by_seq(*inner.by_id.get(&IdKey::of(id))?).cloned()
    }

    fn last_write(&self, session: &str, target: &str) -> Option<Record> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let seq = *inner.last_write.get(&(session.to_owned(), target.to_owned()))?;
        inner.by_seq(seq).cloned()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A new time-ordered id: 12 hex digits of milliseconds, 6 of a process counter, 6 random.
///
/// Ids sort by creation time within a process and are unique across processes with high
/// probability; 24 characters, safe in paths and URLs.
pub fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r = u64::from(rand::random::<u32>());
    // Every call makes one; hex digits pushed directly cost a tenth of `format!`.
    let mut id = String::with_capacity(24);
    push_hex(&mut id, now_ms(), 12);
    push_hex(&mut id, n, 6);
    push_hex(&mut id, r, 6);
    id
}

/// Appends the low `digits` hex digits of `v`, lowercase, zero-padded.
fn push_hex(out: &mut String, v: u64, digits: u32) {
    for i in (0..digits).rev() {
        out.push(char::from(b"0123456789abcdef"[((v >> (4 * i)) & 0xf) as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, session: &str, target: &str, read_only: bool) -> Record {
        Record {
            id: id.into(),
            seq: 0,
            parent_id: None,
            session: session.into(),
            house: House::Bezalel,
            mode: Mode::Simple,
            node: String::new(),
            tool: "t".into(),
            target: target.into(),
            read_only,
            dry_run: false,
            ok: true,
            error_code: None,
            args_sha256: String::new(),
            result_sha256: None,
            approvals: Vec::new(),
            started_ms: 0,
            ended_ms: 0,
            duration_us: 0,
        }
    }

    /// Proves the log keeps only its capacity and forgets the last write of an evicted record.
    #[test]
    fn memory_log_is_bounded_and_tracks_last_write() {
        let log = MemoryLog::new(2);
        log.append(record("a", "s", "x", false)).expect("append");
        assert_eq!(log.last_write("s", "x").map(|r| r.id), Some("a".into()));
        log.append(record("b", "s", "y", true)).expect("append");
        log.append(record("c", "s", "y", true)).expect("append");
        assert!(log.get("a").is_none());
        assert!(log.last_write("s", "x").is_none());
        assert_eq!(log.get("c").map(|r| r.seq), Some(3));
    }

    /// Proves a record is found by id after older ones were evicted, and an id appended twice
    /// stays found until its newest record leaves.
    #[test]
    fn memory_log_finds_records_across_eviction() {
        let log = MemoryLog::new(2);
        log.append(record("a", "s", "x", true)).expect("append");
        log.append(record("a", "s", "x", false)).expect("append");
        log.append(record("b", "s", "y", true)).expect("append");
        assert_eq!(log.get("a").map(|r| (r.seq, r.read_only)), Some((2, false)));
        assert_eq!(log.last_write("s", "x").map(|r| r.seq), Some(2));
        assert_eq!(log.get("b").map(|r| r.seq), Some(3));
        log.append(record("c", "s", "y", true)).expect("append");
        assert!(log.get("a").is_none());
        assert!(log.last_write("s", "x").is_none());
        assert_eq!(log.get("c").map(|r| r.target), Some("y".into()));
    }

    /// Proves the id index tells apart ids that differ only in case, length or trailing zero
    /// bytes, and finds both forms of id (inline and longer text) after evictions.
    #[test]
    fn memory_log_keys_every_id_form_apart() {
        let canonical = "0123456789abcdef01234567";
        let ids = [
            canonical,
            "0123456789ABCDEF01234567",
            "0123456789abcdef0123456",
            "0123456789abcdef012345678",
            "x",
            "x\0",
            "",
        ];
        let keys: Vec<IdKey> = ids.iter().map(|id| IdKey::of(id)).collect();
        assert!(matches!(keys[0], IdKey::Inline { len: 24, .. }) && matches!(keys[3], IdKey::Text(_)));
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(IdKey::of(canonical), IdKey::of_owned(canonical.to_owned()));
        assert_eq!(IdKey::of(ids[3]), IdKey::of_owned(ids[3].to_owned()));
        let log = MemoryLog::new(ids.len());
        for id in ["old", canonical] {
            log.append(record(id, "s", "t", true)).expect("append");
        }
        for id in &ids[1..] {
            log.append(record(id, "s", "t", true)).expect("append");
        }
        assert!(log.get("old").is_none());
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(log.get(id).map(|r| (r.id, r.seq)), Some(((*id).to_owned(), i as u64 + 2)), "{id}");
        }
        assert!(matches!(IdKey::of(&new_id()), IdKey::Inline { len: 24, .. }));
    }

    /// Proves ids are unique and sort in creation order.
    #[test]
    fn ids_are_unique_and_time_ordered() {
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert!(ids.windows(2).all(|w| w[0][..12] <= w[1][..12]));
        assert!(
            ids.iter().all(|id| id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        );
        let mut s = String::new();
        push_hex(&mut s, 0xabc_0123_4567_89de, 12);
        push_hex(&mut s, 0x1ff_ffff, 6);
        push_hex(&mut s, 0x2a, 6);
        assert_eq!(s, format!("{:012x}{:06x}{:06x}", 0x0123_4567_89de_u64, 0xff_ffff, 0x2a));
    }
}
