//! The sections of the router, health, worker and sovereign roles (`router:`, `health:`,
//! `worker:`, `sovereign:`), each with its defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use uni_wizard::{House, Mode};

/// Router settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Houses in order of preference per tool name or category (`file`, `git`, `system`,
    /// `network`); a tool's own entry wins over its category's. Houses not listed are not used;
    /// listed houses without an entry in `houses` are skipped (a partial fleet).
    pub routes: BTreeMap<String, Vec<House>>,
    /// Houses allowed to submit tasks (default: all four).
    pub submitters: Vec<House>,
    /// Finished tasks kept for `Status` and idempotency, at most.
    pub max_tasks: usize,
    /// How long `Submit` waits for the result before answering with the task still running.
    pub submit_wait_ms: u64,
    /// Deadline of one dispatch to a worker when the call gives none.
    pub dispatch_timeout_ms: u64,
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        let mut routes = BTreeMap::new();
        routes.insert("system".into(), vec![House::Timmy, House::Allegro]);
        routes.insert("git".into(), vec![House::Bezalel, House::Timmy]);
        routes.insert("network".into(), vec![House::Allegro, House::Timmy]);
        routes.insert("file".into(), vec![House::Ezra, House::Bezalel, House::Timmy]);
        routes.insert("file_write".into(), vec![House::Bezalel, House::Timmy]);
        routes.insert("service_restart".into(), vec![House::Timmy]);
        RouterConfig {
            routes,
            submitters: House::ALL.to_vec(),
            max_tasks: 100_000,
            submit_wait_ms: 60_000,
            dispatch_timeout_ms: 120_000,
        }
    }
}

/// Health prober settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between probes of each peer.
    pub interval_ms: u64,
    /// Deadline of one probe.
    pub timeout_ms: u64,
    /// Consecutive failed probes that mark a peer down.
    pub down_after: u32,
}

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig { interval_ms: 500, timeout_ms: 400, down_after: 2 }
    }
}

/// Worker settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Calls executed at once; more wait for a slot.
    pub max_concurrency: u32,
    /// Calls waiting for a slot before new ones are refused (E3005).
    pub max_queued: u32,
    /// Mode for calls that name none.
    pub default_mode: Mode,
    /// Houses whose routers may dispatch here (default: Timmy and Allegro).
    pub dispatchers: Vec<House>,
    /// The library config of the embedded harness (file roots, egress, executor, ...).
    pub library: uni_wizard::Config,
    /// Timmy's public key file: Sovereign-mode calls are approved remotely by Timmy's
    /// Sovereign service and the token it signs is checked against this key.
    pub timmy_pubkey: Option<PathBuf>,
    /// How long a worker waits for Timmy's decision on a Sovereign call.
    pub approval_wait_ms: u64,
    /// Record every call in the durable, hash-chained `<home>/audit.db` (one fsync per call),
    /// not only Sovereign ones. Off, Simple and Intelligent calls go to a bounded in-memory log
    /// (proofs then last until a restart) and the worker is limited by the CPU, not the disk.
    pub audit_all_modes: bool,
    /// The exactly-once store of keyed calls, `<home>/once.db` (see `worker::once`).
    pub once: OnceConfig,
}

/// How long the worker's exactly-once store keeps finished keyed calls (`worker.once`).
///
/// A key resubmitted after its row is pruned runs again: keep rows longer than any client
/// resubmits a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnceConfig {
    /// A finished row is kept at least this long after it finished (default 7 days).
    pub retention_ms: u64,
    /// At most this many finished rows are kept; the oldest finished go first. Rows of calls
    /// still running are never pruned and not counted against it.
    pub max_rows: u64,
}

impl Default for OnceConfig {
    fn default() -> OnceConfig {
        OnceConfig { retention_ms: 7 * 24 * 3_600_000, max_rows: 100_000 }
    }
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            max_concurrency: 64,
            max_queued: 1024,
            default_mode: Mode::Intelligent,
            dispatchers: vec![House::Timmy, House::Allegro],
            library: uni_wizard::Config::default(),
            timmy_pubkey: None,
            approval_wait_ms: 300_000,
            audit_all_modes: true,
            once: OnceConfig::default(),
        }
    }
}

/// Timmy's approval service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SovereignConfig {
    /// Timmy's signing key (`uni-wizard keygen`), 0600.
    pub key_file: Option<PathBuf>,
    /// How long an approved token stays valid.
    pub token_ttl_ms: u64,
    /// How long a request waits for a decision before it expires.
    pub pending_ttl_ms: u64,
    /// Pending requests kept at most; more are refused (E3005). Each house may hold a quarter
    /// of them (rounded up), so one house cannot fill the queue for the others.
    pub max_pending: usize,
}

impl Default for SovereignConfig {
    fn default() -> SovereignConfig {
        SovereignConfig { key_file: None, token_ttl_ms: 600_000, pending_ttl_ms: 3_600_000, max_pending: 1024 }
    }
}
