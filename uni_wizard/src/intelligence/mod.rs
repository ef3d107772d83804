//! Intelligent mode: the pattern DB, calibrated predictions and the policies adapted from them.
//!
//! - [`patterns`]: the SQLite store (WAL, versioned migrations) and the writer thread that
//!   batches rows into it off the hot path; [`PatternStats`] counters.
//! - [`predictions`]: the in-memory [`Model`]: recency-weighted Beta posteriors and latency
//!   histograms per (tool, house, fingerprint) and per (tool, house).
//! - [`adaptation`]: timeouts, retry budgets and refuse/warn verdicts from a [`Prediction`].
//!
//! # The hot path
//!
//! Before an Intelligent call: fingerprint the arguments, read the model (a read lock, no
//! I/O), decide. After any executed call: under the model's write lock, `try_send` the row to
//! the bounded queue and, only if it was accepted, fold it into the model — so the model is
//! always exactly the replay of the rows handed to the DB, in the same order, and a restart
//! (which replays the DB) gives identical predictions. Nothing on this path blocks on the DB.
//!
//! # Degradation
//!
//! When the DB is down or the queue is full, an Intelligent call runs as Simple, its
//! [`Outcome::degraded`](crate::Outcome::degraded) says why, it is not recorded, and
//! [`PatternStats::degraded_calls`] counts it. Once the writer can write again the next call is
//! Intelligent. Simple and Sovereign calls never change mode; they are recorded when the DB is up.
//!
//! # Fingerprint
//!
//! The argument shape, hashed (FNV-1a 64, [`crate::hash::Fnv64`]: stable across releases, and a
//! tenth of SHA-256's cost on every Intelligent call; the shapes of one tool are a handful, not
//! an attacker's choice, so a cryptographic hash buys nothing here): for each top-level field, in key order,
//! its name and JSON type; the value too when it is a boolean, null, or a field whose schema
//! declares an `enum` (low cardinality). Secret fields (see
//! [`approval::is_secret_field`](crate::approval::is_secret_field)) contribute their name only.
//! Paths, bodies and other free values never enter, so `file_read` of any path shares one
//! fingerprint while `file_list` with `recursive: true` and `false` do not.
//!
//! Fingerprints were the first 8 bytes of a SHA-256 of the same text before 2026-12-03: rows
//! stored before then keep those, so their shapes' own statistics start again, while they still
//! count toward the (tool, house) statistics every call falls back to.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::contract::Contract;
use crate::error::{Error, ErrorCode, Result};
use crate::house::{House, Mode};

pub mod adaptation;
pub mod patterns;
pub mod predictions;

pub use adaptation::Verdict;
pub use patterns::{PatternStats, Row};
pub use predictions::{Model, ModelParams, OutcomeClass, Prediction};

/// Settings of Intelligent mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntelligenceConfig {
    /// Whether a harness built from this config opens the pattern DB (the library default is
    /// off so that embedding code and unit tests stay hermetic; the CLI turns it on).
    pub enabled: bool,
    /// The DB file; `<home>/patterns.db` when unset.
    pub db_path: Option<PathBuf>,
    /// Rows the writer queue holds; a full queue drops the row and degrades the call.
    pub queue_capacity: usize,
    /// Rows per write transaction at most.
    pub batch_size: usize,
    /// How long the writer gathers rows before a commit (fewer commits and wake-ups, at the
    /// price of rows reaching the file that much later; the model is updated at once anyway).
    pub linger_ms: u64,
    /// Beta prior: pseudo-successes.
    pub prior_alpha: f64,
    /// Beta prior: pseudo-failures.
    pub prior_beta: f64,
    /// Recency weighting: an outcome's weight halves after this many newer outcomes of the
    /// same key (a count of executions, not time, so replay is exact).
    pub half_life: f64,
    /// Outcomes a fingerprint needs before its own statistics replace the (tool, house) ones.
    pub min_fingerprint_samples: u64,
    /// Outcomes needed before predictions may refuse, warn, or adapt timeouts and retries.
    pub min_samples: u64,
    /// Refuse (E3010) when the upper end of the 90% interval is below this.
    pub refuse_below: f64,
    /// Warn when the predicted success is below this.
    pub warn_below: f64,
    /// One refused call in this many runs anyway, as a probe, so a recovered tool is noticed.
    pub probe_every: u64,
    /// Adapted timeout = p95 latency × this (then clamped to the contract's bounds).
    pub timeout_factor: f64,
}

impl Default for IntelligenceConfig {
    fn default() -> IntelligenceConfig {
        IntelligenceConfig {
            enabled: false,
            db_path: None,
            queue_capacity: 8192,
            batch_size: 512,
            linger_ms: 20,
            prior_alpha: 1.0,
            prior_beta: 1.0,
            half_life: 100.0,
            min_fingerprint_samples: 10,
            min_samples: 20,
            refuse_below: 0.05,
            warn_below: 0.5,
            probe_every: 20,
            timeout_factor: 4.0,
        }
    }
}

impl IntelligenceConfig {
    /// The model's parameters.
    pub fn params(&self) -> ModelParams {
        ModelParams {
            prior_alpha: self.prior_alpha,
            prior_beta: self.prior_beta,
            half_life: self.half_life,
            min_fingerprint_samples: self.min_fingerprint_samples,
        }
    }

    /// Checks values the types do not.
    ///
    /// # Errors
    /// E4001 naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| {
            Err(Error::new(ErrorCode::ConfigInvalid, format!("config field `intelligence.{field}` {why}"))
                .with_details(json!({ "field": format!("intelligence.{field}") })))
        };
        if self.queue_capacity == 0 || self.batch_size == 0 {
            return bad("queue_capacity", "and batch_size must be at least 1");
        }
        // Both are allocated up front (the writer's channel and batch buffer): a huge number
        // would abort the process at start instead of being refused here.
        if self.queue_capacity > 1_000_000 || self.batch_size > 100_000 {
            return bad("queue_capacity", "must be at most 1000000 and batch_size at most 100000");
        }
        if self.prior_alpha.is_nan() || self.prior_beta.is_nan() || self.prior_alpha <= 0.0 || self.prior_beta <= 0.0 {
            return bad("prior_alpha", "and prior_beta must be positive");
        }
        if self.half_life.is_nan() || self.half_life < 1.0 {
            return bad("half_life", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.refuse_below) || !(0.0..=1.0).contains(&self.warn_below) {
            return bad("refuse_below", "and warn_below must be within [0, 1]");
        }
        if self.timeout_factor.is_nan() || self.timeout_factor <= 0.0 {
            return bad("timeout_factor", "must be positive");
        }
        Ok(())
    }
}

/// The fingerprint of `args` under `schema` (see the module docs for the rule). Never
/// [`predictions::AGGREGATE`].
pub fn fingerprint(args: &Value, schema: &Value) -> u64 {
    let properties = schema.get("properties");
    fingerprint_by(args, |k| properties.and_then(|p| p.get(k)).is_some_and(|p| p.get("enum").is_some()))
}

/// [`fingerprint`], told by `enumerated` which top-level fields have an `enum` in their schema
/// (a compiled contract knows: [`crate::contract::Contract::is_enumerated`]), so the schema is
/// not searched on every call.
pub fn fingerprint_by(args: &Value, enumerated: impl Fn(&str) -> bool) -> u64 {
    fn type_tag(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
    let mut h = crate::hash::Fnv64::new();
    match args {
        Value::Object(map) => {
            for (k, v) in map {
                h.update(k.as_bytes());
                h.update(&[0]);
                if crate::approval::is_secret_field(k) {
                    h.update(b"secret");
                } else {
                    h.update(type_tag(v).as_bytes());
                    if matches!(v, Value::Bool(_) | Value::Null) || enumerated(k) {
                        h.update(b"=");
                        // The value's compact JSON text, streamed (writing to a hasher cannot fail).
                        let _ = serde_json::to_writer(&mut h, v);
                    }
                }
                h.update(&[1]);
            }
        }
        other => h.update(type_tag(other).as_bytes()),
    }
    match h.finish() {
        predictions::AGGREGATE => 1,
        fp => fp,
    }
}

/// What Intelligent mode decided for one call, and what the harness reports back.
#[derive(Debug, Default)]
pub struct CallNotes {
    /// Set once the call reaches execution and should be recorded: its fingerprint.
    pub(crate) record: Option<u64>,
    /// The mode the call ran in.
    pub(crate) mode: Mode,
    /// The adapted cap on retries (see [`adaptation::retry_cap`]); none means the configured.
    pub(crate) max_retries: Option<usize>,
    /// Why the call ran in a lesser mode, if it did.
    pub degraded: Option<String>,
    /// Warnings for the caller.
    pub warnings: Vec<String>,
}

/// The intelligence of one harness (or several sharing it): model, recorder, policy.
pub struct Intelligence {
    config: IntelligenceConfig,
    params: ModelParams,
    growth: f64,
    node: Arc<str>,
    path: PathBuf,
    model: RwLock<Model>,
    shared: Arc<patterns::Shared>,
    tx: Option<SyncSender<patterns::Msg>>,
    writer: Option<JoinHandle<()>>,
    refusals: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Intelligence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intelligence").field("path", &self.path).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Intelligence {
    /// Opens the pattern DB at `path` (creating it), rebuilds the model by replaying every
    /// row in order, and starts the writer thread. Never fails: an unusable DB starts the
    /// handle degraded, and the writer keeps trying to open it.
    ///
    /// # Errors
    /// E4001 for invalid settings.
    pub fn open(config: &IntelligenceConfig, path: impl Into<PathBuf>, node: &str) -> Result<Arc<Intelligence>> {
        config.validate()?;
        let path = path.into();
        let params = config.params();
        let growth = params.growth();
        let shared = Arc::new(patterns::Shared::default());
        let mut model = Model::default();
        let store = match patterns::SqliteStore::open(&path).and_then(|s| s.rows().map(|rows| (s, rows))) {
            Ok((s, rows)) => {
                for r in &rows {
                    model.observe(&r.tool, r.house, r.fingerprint, r.class, r.latency_us, growth);
                }
                shared.db_ok.store(true, Ordering::Release);
                Some(s)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "pattern DB unavailable at start");
                shared.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue_capacity);
        let wcfg = patterns::WriterConfig {
            path: path.clone(),
            batch_size: config.batch_size,
            retry_buffer: config.queue_capacity,
            health_interval: Duration::from_millis(50),
            linger: Duration::from_millis(config.linger_ms),
        };
        let wshared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("uw-patterns".into())
            .spawn(move || patterns::writer(store, rx, &wshared, &wcfg))
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("cannot start the pattern writer: {e}")))?;
        Ok(Arc::new(Intelligence {
            config: config.clone(),
            params,
            growth,
            node: node.into(),
            path,
            model: RwLock::new(model),
            shared,
            tx: Some(tx),
            writer: Some(writer),
            refusals: Default::default(),
        }))
    }

    /// The model rebuilt from the DB at `path` without opening it for writing (no file is
    /// created): what `uni-wizard predict` reads.
    ///
    /// # Errors
    /// E4001 for invalid settings or a DB file that exists but cannot be read.
    pub fn load_model(config: &IntelligenceConfig, path: &std::path::Path) -> Result<Model> {
        config.validate()?;
        let rows = patterns::load(path).map_err(|e| {
            Error::new(ErrorCode::ConfigInvalid, format!("cannot read the pattern DB: {e}"))
                .with_details(json!({ "path": path.display().to_string() }))
        })?;
        let growth = config.params().growth();
        let mut model = Model::default();
        for r in &rows {
            model.observe(&r.tool, r.house, r.fingerprint, r.class, r.latency_us, growth);
        }
        Ok(model)
    }

    /// The settings.
    pub fn config(&self) -> &IntelligenceConfig {
        &self.config
    }

    /// The DB file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Recorder counters (export them as metrics).
    pub fn stats(&self) -> &PatternStats {
        &self.shared.stats
    }

    /// Whether the DB is usable right now.
    pub fn db_ok(&self) -> bool {
        self.shared.db_ok.load(Ordering::Acquire)
    }

    /// The prediction for a call of `tool` by `house` with fingerprint `fp`.
    pub fn predict(&self, tool: &str, house: House, fp: u64) -> Prediction {
        self.model.read().unwrap_or_else(PoisonError::into_inner).predict(tool, house, fp, &self.params)
    }

    /// The prediction for `tool` by `house` over all arguments.
    pub fn predict_tool(&self, tool: &str, house: House) -> Prediction {
        self.predict(tool, house, predictions::AGGREGATE)
    }

    /// The house most likely to succeed with `tool`, for a router.
    pub fn preferred_house(&self, tool: &str) -> Option<House> {
        self.model.read().unwrap_or_else(PoisonError::into_inner).preferred_house(tool, &self.params)
    }

    /// A copy of the model (for comparing before and after a restart).
    pub fn snapshot(&self) -> Model {
        self.model.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until every row sent so far has been written; returns whether the DB is healthy
    /// with nothing left pending. Not for the hot path.
    pub fn flush(&self) -> bool {
        let Some(tx) = &self.tx else { return false };
        let (ack, done) = std::sync::mpsc::channel();
        if tx.send(patterns::Msg::Flush(ack)).is_err() {
            return false;
        }
        self.shared.hurry();
        done.recv().unwrap_or(false)
    }

    /// Hands one row to the writer and, if accepted, folds it into the model.
    ///
    /// # Errors
    /// Why the row was dropped (queue full or writer gone); counted in `dropped`.
    pub fn record(&self, row: Row) -> std::result::Result<(), &'static str> {
        let Some(tx) = &self.tx else { return Err("pattern writer stopped") };
        let (tool, house, fp, class, latency) =
            (row.tool.clone(), row.house, row.fingerprint, row.class, row.latency_us);
        let mut model = self.model.write().unwrap_or_else(PoisonError::into_inner);
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(patterns::Msg::Row(row)) {
            Ok(()) => {
                model.observe(&tool, house, fp, class, latency, self.growth);
                Ok(())
            }
            Err(e) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => "pattern queue full",
                    TrySendError::Disconnected(_) => "pattern writer stopped",
                })
            }
        }
    }

    /// Decides how a validated, permitted call runs, given its argument fingerprint `fp`:
    /// returns the mode and per-attempt timeout and fills `notes` (including the adapted retry
    /// cap). `timeout` is the harness's choice; `asked` says the caller chose it, in which case
    /// it is kept.
    ///
    /// # Errors
    /// E3010 when history predicts failure below policy; the prediction is in the details.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn plan(
        &self,
        notes: &mut CallNotes,
        contract: &Contract,
        house: House,
        mode: Mode,
        fp: u64,
        timeout: Duration,
        asked: bool,
        max_timeout: Duration,
    ) -> Result<(Mode, Duration)> {
        notes.mode = mode;
        if mode != Mode::Intelligent {
            notes.record = self.db_ok().then_some(fp);
            return Ok((mode, timeout));
        }
        let down = if !self.db_ok() {
            Some("pattern DB unavailable")
        } else if self.shared.queued.load(Ordering::Relaxed) >= self.config.queue_capacity {
            Some("pattern queue saturated")
        } else {
            None
        };
        if let Some(why) = down {
            self.shared.stats.degraded_calls.fetch_add(1, Ordering::Relaxed);
            notes.degraded = Some(format!("{why}: ran in Simple mode"));
            notes.mode = Mode::Simple;
            return Ok((Mode::Simple, timeout));
        }
        let p = self.predict(contract.spec().name, house, fp);
        match adaptation::verdict(&p, &self.config) {
            Verdict::Refuse => {
                let n = self.refusals.fetch_add(1, Ordering::Relaxed) + 1;
                if self.config.probe_every == 0 || !n.is_multiple_of(self.config.probe_every) {
                    return Err(Error::new(
                        ErrorCode::PredictedFailure,
                        format!(
                            "{} is predicted to fail for {house}: P(success) {:.3} (90% interval {:.3}..{:.3}, n={})",
                            contract.spec().name,
                            p.p_success,
                            p.lower,
                            p.upper,
                            p.samples
                        ),
                    )
                    .with_details(json!({ "tool": contract.spec().name, "house": house, "prediction": p })));
                }
                notes.warnings.push(format!(
                    "predicted to fail (P(success) {:.3}, n={}); run as a probe",
                    p.p_success, p.samples
                ));
            }
            Verdict::Warn => notes.warnings.push(format!(
                "success unlikely: P(success) {:.3} (90% interval {:.3}..{:.3}, n={})",
                p.p_success, p.lower, p.upper, p.samples
            )),
            Verdict::Proceed => {}
        }
        notes.record = Some(fp);
        notes.max_retries = adaptation::retry_cap(&p, &self.config);
        let timeout = if asked { timeout } else { adaptation::timeout(&p, timeout, max_timeout, &self.config) };
        Ok((mode, timeout))
    }

    /// Records an executed call planned by [`Intelligence::plan`], which started at
    /// `started_ms` (wall clock) and took `latency_us`; a dropped row marks an Intelligent call
    /// degraded.
    pub(crate) fn finish(
        &self,
        notes: &mut CallNotes,
        tool: &'static str,
        house: House,
        error: Option<&Error>,
        started_ms: u64,
        latency_us: u64,
    ) {
        let Some(fp) = notes.record else { return };
        let class = match error {
            None => OutcomeClass::Ok,
            Some(e) if e.is_transient() => OutcomeClass::Transient,
            Some(_) => OutcomeClass::Permanent,
        };
        let row = Row {
            time_ms: started_ms,
            tool: Cow::Borrowed(tool),
            house,
            mode: notes.mode,
            fingerprint: fp,
            class,
            error_code: error.map(|e| e.code.as_str()),
            latency_us,
            node: self.node.clone(),
        };
        if let Err(why) = self.record(row)
            && notes.mode == Mode::Intelligent
        {
            self.shared.stats.degraded_calls.fetch_add(1, Ordering::Relaxed);
            notes.degraded = Some(format!("{why}: outcome not recorded"));
        }
    }
}

impl Drop for Intelligence {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.shared.hurry();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}
