//! The triage daemon: watches Gitea repositories, and for each new or changed issue applies
//! what the rules want (labels, category, assignees, a comment) and routes a task for it to a
//! house through the router.
//!
//! # Layout
//!
//! - [`webhook`]: `POST /webhooks/gitea` (HMAC-verified, size-bounded, deduplicated by delivery
//!   id, answered after a durable enqueue) and `GET /triage/status`.
//! - [`poll`]: the polling loop, for deliveries that were lost or never sent: a persisted
//!   `since` cursor per repository, every page, `type=issues`.
//! - [`rules`]: the YAML rules and the pure decision of what an issue should look like.
//! - [`engine`]: the queue worker that compares the plan with Gitea and applies the difference
//!   through the node's harness, and the router submission.
//! - [`store`]: `<home>/triage.db` (SQLite): deliveries, queue, issues triaged (with the
//!   provenance ids of the writes that applied each plan), plans refused, cursors.
//!
//! # Flow
//!
//! ```text
//! webhook ─┐                                    reads (issue, comments): the Gitea client
//!          ├─> queue (triage.db) ─> engine ─> plan vs Gitea ─┬─> Harness::execute_request, as this
//! poll ────┘                                                 │   node's house (Allegro):
//!                                                            │   gitea_update_issue, one call per
//!                                                            │   issue: labels (created when
//!                                                            │   missing), assignees, comment;
//!                                                            │   session and target = the issue;
//!                                                            │   policy, breaker, retry, and a
//!                                                            │   record in <home>/audit.db
//!                                                            └─> Router Submit (idempotency key
//!                                                                from the plan)
//! ```
//!
//! Triage changes Gitea only through the harness, like every other caller: the node's house
//! policy (built-in, narrowed by `worker.library.policy`) decides whether it may, and each write
//! is a record in the node's one audit chain (the same `AuditStore` the worker appends to, so
//! `uni-wizard audit verify` covers both). The provenance id of each applied plan's call is kept
//! in `triage.db`; a plan the harness refuses is kept there too, with the code and message, and
//! `uni-wizard triage --status` shows both.
//!
//! Every issue triaged is recorded with the fingerprint of its plan. The same plan is never
//! applied twice: a redelivery, a poll that sees the issue again, a restart, or the webhooks the
//! bot's own changes cause all find the fingerprint unchanged and do nothing. Webhooks sent by
//! the bot user are ignored before they reach the queue.

pub mod engine;
pub mod poll;
pub mod rules;
pub mod store;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::{Notify, watch};
use uni_wizard::audit::AuditStore;
use uni_wizard::gitea::{Gitea, GiteaClient};
use uni_wizard::{Error, ErrorCode, Harness, Mode};

use crate::config::DaemonConfig;
use crate::config::triage::{TriageConfig, field_error};
use crate::live::Live;
use crate::peers::Peers;
use rules::Rules;
use store::Store;

/// Counters since the process started, for the status document.
#[derive(Debug, Default)]
pub struct Counters {
    /// Webhooks queued.
    pub queued: AtomicU64,
    /// Webhooks with a delivery id seen before.
    pub duplicate: AtomicU64,
    /// Webhooks accepted but not acted on (bot sender, event, repository, pull request).
    pub ignored: AtomicU64,
    /// Webhooks refused (signature, size, malformed).
    pub refused: AtomicU64,
    /// Issues whose plan was applied.
    pub triaged: AtomicU64,
    /// Issues whose plan the harness refused (policy, contract): not tried again until a restart.
    pub plans_refused: AtomicU64,
    /// Issues looked at whose plan was already applied.
    pub unchanged: AtomicU64,
    /// Failures (Gitea, router, store).
    pub errors: AtomicU64,
}

impl Counters {
    fn json(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "webhooks_queued": g(&self.queued),
            "webhooks_duplicate": g(&self.duplicate),
            "webhooks_ignored": g(&self.ignored),
            "webhooks_refused": g(&self.refused),
            "triaged": g(&self.triaged),
            "plans_refused": g(&self.plans_refused),
            "unchanged": g(&self.unchanged),
            "errors": g(&self.errors),
        })
    }
}

/// The triage daemon of one node. Cheap to clone.
#[derive(Clone)]
pub struct Triage {
    inner: Arc<Inner>,
}

struct Inner {
    live: Live,
    peers: Peers,
    store: Arc<Store>,
    /// Reads (the issue, its comments, polling). Writes go through `harness`.
    gitea: Arc<dyn Gitea>,
    /// The node's house, full executor stack, provenance in the node's audit store.
    harness: Harness,
    /// The config the daemon started with; used when a reload drops the section.
    initial: TriageConfig,
    /// Rules compiled from the config they came from (recompiled after a reload).
    rules: Mutex<(Arc<DaemonConfig>, Arc<Rules>)>,
    /// When this process built its triage (ms): refusals from before it are tried again.
    started_ms: i64,
    /// Wakes the queue worker.
    notify: Notify,
    /// Label names known to exist, per repository; held while a call may create labels, so
    /// two issues never create the same label twice.
    labels: tokio::sync::Mutex<HashMap<String, HashSet<String>>>,
    counters: Counters,
}

impl std::fmt::Debug for Triage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triage").finish_non_exhaustive()
    }
}

impl Triage {
    /// Builds the daemon for the node `live` describes: opens `<home>/triage.db`, builds the
    /// Gitea client, the harness its writes go through, and compiles the rules. Nothing is sent
    /// until [`Triage::spawn`].
    ///
    /// The harness runs as the node's house in Intelligent mode (the whole executor stack:
    /// limit, breaker, retry, timeout; no predictions, the pattern DB is the worker's) under
    /// the node's house policy (`worker.library.policy` narrows it), with the triage Gitea
    /// client, and records every call in `audit`: the node's one audit store, shared with the
    /// worker (a second `AuditStore` on the same file would fork the chain).
    ///
    /// # Errors
    /// E4001 without a `triage:` section, with an unusable Gitea config or a loosened policy;
    /// E4002 when the store cannot be opened.
    pub fn new(live: Live, peers: Peers, audit: Arc<AuditStore>) -> Result<Triage, Error> {
        let config = live.get();
        let t = config
            .triage
            .clone()
            .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, "the triage role needs a `triage:` section"))?;
        let store = Arc::new(Store::open(&config.home().join("triage.db"))?);
        let gitea: Arc<dyn Gitea> = Arc::new(GiteaClient::new(&t.gitea)?);
        let rules = Rules::compile(&t.rules, t.house_labels).map_err(|e| field_error("triage", e))?;
        let mut library = config.worker.library.clone();
        library.node = Some(config.node_name());
        library.intelligence.enabled = false;
        let harness = Harness::builder()
            .house(config.house)
            .mode(Mode::Intelligent)
            .config(library)
            .provenance(audit)
            .gitea(gitea.clone())
            .build()?;
        Ok(Triage {
            inner: Arc::new(Inner {
                live,
                peers,
                store,
                gitea,
                harness,
                initial: t,
                rules: Mutex::new((config, Arc::new(rules))),
                started_ms: store::now_ms(),
                notify: Notify::new(),
                labels: tokio::sync::Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        })
    }

    /// The live `triage:` settings (the start-up ones if a reload removed the section).
    pub fn settings(&self) -> TriageConfig {
        self.inner.live.get().triage.clone().unwrap_or_else(|| self.inner.initial.clone())
    }

    /// The rules of the live config, recompiled when the config changed.
    pub fn rules(&self) -> Arc<Rules> {
        let config = self.inner.live.get();
        let mut cached = self.inner.rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !Arc::ptr_eq(&cached.0, &config) {
            if let Some(t) = &config.triage {
                match Rules::compile(&t.rules, t.house_labels) {
                    Ok(r) => cached.1 = Arc::new(r),
                    // Validation compiled them already; keep the old ones if not.
                    Err((field, problem)) => tracing::warn!(%field, %problem, "triage rules not reloaded"),
                }
            }
            cached.0 = config;
        }
        cached.1.clone()
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The counters since start.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The HTTP routes: `POST /webhooks/gitea` (open: HMAC), `GET /triage/status` (guarded).
    pub fn routes(&self) -> crate::serve::HttpRoutes {
        webhook::routes(self.clone())
    }

    /// Starts the queue worker and the polling loop; both stop when `stop` turns true. Work
    /// left in the queue is taken up again by the next start.
    pub fn spawn(&self, stop: watch::Receiver<bool>) {
        tokio::spawn(engine::run(self.clone(), stop.clone()));
        tokio::spawn(poll::run(self.clone(), stop));
    }

    /// The status document: the store's view plus this process's counters.
    ///
    /// # Errors
    /// E4002 when the store cannot be read.
    pub async fn status(&self) -> Result<serde_json::Value, Error> {
        let store = self.inner.store.clone();
        let mut v = tokio::task::spawn_blocking(move || store.status(20))
            .await
            .map_err(|e| Error::new(ErrorCode::HomeUnavailable, format!("status: {e}")))??;
        v["process"] = self.inner.counters.json();
        v["repos"] = json!(self.settings().repos);
        Ok(v)
    }

    fn wake(&self) {
        self.inner.notify.notify_one();
    }
}

/// Runs a blocking store call on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorCode::HomeUnavailable, format!("triage.db call stopped: {e}")))?
}
