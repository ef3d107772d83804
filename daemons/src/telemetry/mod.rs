//! The telemetry daemon (role `telemetry`): every node's events, durably, to Timmy.
//!
//! ```text
//! Hermes state.db --(hermes: read-only tail, cursor on messages.id)--\
//! harness calls ---(Observer -> bounded queue)------------------------> outbox.db (seq, WAL)
//! `uni-wizard hermes-hook` (another process) -------------------------/        |
//!                                        stream: client stream, resend from oldest unacked
//!                                                                              v
//!                         Timmy: sink (telemetry.db, dedup on (node, seq) and per Hermes event, ack after commit)
//!                                 -> pattern DB (fleet executions teach the predictions)
//! ```
//!
//! - [`hermes`]: reads new `messages` and changed `sessions` rows and decides which events
//!   they are (pure functions beside the reader).
//! - [`outbox`]: the node's durable queue; sequence numbers, the Hermes cursor and the dedup
//!   state change in one transaction, so a crash neither loses nor repeats an event.
//! - [`stream`]: the client side: sends unacked events in order, drops them when acked,
//!   reconnects with bounded exponential backoff.
//! - [`sink`]: Timmy's `Telemetry` service and its store.
//! - [`hook`]: `uni-wizard hermes-hook`: the block/allow decision and the hook event.
//! - [`alerts`]: rules (node down, breaker open, buffer, lag) firing and resolving into the
//!   log and a webhook.
//! - [`anchor`]: this node's audit heads, queued as checkpoints for Timmy to keep.
//!
//! **Bounds.** The outbox holds at most `telemetry.max_buffered` events. When it is full it
//! refuses new ones rather than dropping old ones: the Hermes tailer then simply stops
//! advancing its cursor (state.db is the buffer, nothing is lost), while harness and hook
//! events that find no room are dropped and counted (`uw_telemetry_dropped_total`, and
//! `dropped` in the status). Every channel is bounded; every read is a bounded batch.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use uni_wizard::{Error, ErrorCode};
use uni_wizard_proto::v1::telemetry_event::Kind;

use crate::config::DaemonConfig;
use crate::live::Live;
use crate::peers::Peers;

pub mod alerts;
pub mod anchor;
pub mod hermes;
pub mod hook;
pub mod outbox;
pub mod sink;
pub mod stream;

pub use crate::config::telemetry::{Durability, TelemetryConfig};
pub use outbox::{Outbox, OutboxStats};
pub use sink::{SinkService, SinkStore};

/// The outbox file name under the node's home.
pub const OUTBOX_FILE: &str = "telemetry-outbox.db";
/// The sink's file name under Timmy's home.
pub const SINK_FILE: &str = "telemetry.db";

/// The outbox path of the node `config` describes.
pub fn outbox_path(config: &DaemonConfig) -> PathBuf {
    config.home().join(OUTBOX_FILE)
}

/// The `tracing` target of the per-event stage marks (debug level): `stage` (`read`,
/// `outbox_commit`, `sent`, `sink_received`, `sink_commit`), the seqs or Hermes message id
/// concerned and `t_us` ([`now_us`]). Off unless a filter enables it
/// (`RUST_LOG=info,uw_telemetry_lag=debug`); `cargo bench --bench telemetry_lag` reads them
/// for its per-stage breakdown.
pub const LAG_TARGET: &str = "uw_telemetry_lag";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    i64::try_from(uni_wizard::provenance::now_ms()).unwrap_or(i64::MAX)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Registers the help text of every telemetry metric (called from `serve::describe_metrics`).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!("uw_telemetry_events_total", "Telemetry events put in this node's outbox, by source");
    describe_counter!(
        "uw_telemetry_dropped_total",
        "Telemetry events dropped because the outbox or its queue was full, by source"
    );
    describe_gauge!("uw_telemetry_buffered", "Telemetry events in this node's outbox, not yet acknowledged");
    describe_gauge!(
        "uw_telemetry_oldest_unacked_seconds",
        "Age of the oldest event in this node's outbox not yet acknowledged by Timmy (0: none), at the scrape"
    );
    describe_counter!("uw_telemetry_acked_total", "Telemetry events acknowledged by Timmy's sink");
    describe_gauge!("uw_telemetry_connected", "Whether this node's stream to Timmy is open (1) or not (0)");
    describe_counter!("uw_telemetry_reconnects_total", "Times this node's stream to Timmy was re-opened");
    describe_gauge!(
        "uw_telemetry_outbox_writable",
        "Whether this node's outbox took its last write (1) or its write side is failing (0)"
    );
    describe_counter!(
        "uw_telemetry_sink_events_total",
        "Events received by Timmy's sink, by result (new, duplicate, resent_hermes)"
    );
    describe_counter!("uw_telemetry_sink_patterns_total", "Fleet executions fed into Timmy's pattern DB, by result");
    describe_counter!("uw_telemetry_alerts_total", "Alert transitions, by state (firing, resolved)");
    describe_counter!(
        "uw_telemetry_alert_deliveries_dropped_total",
        "Alert webhook deliveries dropped because their queue was full"
    );
}

/// Events of the node's own harness, queued (bounded) towards the outbox.
#[derive(Debug)]
pub struct HarnessObserver {
    tx: mpsc::Sender<(i64, Kind)>,
    outbox: Arc<Outbox>,
}

impl uni_wizard::Observer for HarnessObserver {
    fn executed(&self, e: &uni_wizard::Execution) {
        let event = Kind::Execution(crate::wire::execution_to_wire(e));
        if self.tx.try_send((now_ms(), event)).is_err() {
            self.outbox.count_dropped(1);
            metrics::counter!("uw_telemetry_dropped_total", "source" => "harness").increment(1);
        }
    }
}

/// What the telemetry role of one node runs.
pub struct Bridge {
    outbox: Arc<Outbox>,
    rx: mpsc::Receiver<(i64, Kind)>,
    live: Live,
    peers: Peers,
    /// The node's audit store, whose heads are anchored at Timmy.
    audit: Option<Arc<uni_wizard::audit::AuditStore>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").finish_non_exhaustive()
    }
}

/// Capacity of the harness-event queue (events, not bytes; each is a few hundred bytes).
const HARNESS_QUEUE: usize = 4096;

impl Bridge {
    /// Opens the outbox; returns the bridge and the observer to give the harnesses.
    ///
    /// # Errors
    /// E4002 when the state directory or the outbox cannot be opened.
    pub fn new(live: Live, peers: Peers) -> Result<(Bridge, Arc<HarnessObserver>), Error> {
        let config = live.get();
        let dir = config.home();
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::new(ErrorCode::HomeUnavailable, format!("cannot create state directory {}: {e}", dir.display()))
        })?;
        let node = config.node_name();
        if config.node_house(&node) != Some(config.house) {
            tracing::warn!(
                %node,
                house = %config.house,
                "this node's name is not bound to its house: Timmy's sink will refuse its telemetry (E5002); \
                 set `node` or list the name in houses.{}.nodes",
                config.house
            );
        }
        let outbox = Arc::new(Outbox::open(&outbox_path(&config), &node, &config.telemetry)?);
        let (tx, rx) = mpsc::channel(HARNESS_QUEUE);
        let observer = Arc::new(HarnessObserver { tx, outbox: outbox.clone() });
        Ok((Bridge { outbox, rx, live, peers, audit: None }, observer))
    }

    /// The outbox (for `/health`).
    pub fn outbox(&self) -> Arc<Outbox> {
        self.outbox.clone()
    }

    /// Anchors `store`'s heads at Timmy once spawned ([`anchor`]).
    pub fn anchor_audit(&mut self, store: Arc<uni_wizard::audit::AuditStore>) {
        self.audit = Some(store);
    }

    /// Starts the tailer thread, the harness-event writer and the streamer; they stop when
    /// `stop` turns true.
    pub fn spawn(self, stop: watch::Receiver<bool>) {
        let config = self.live.get();
        if let Some(hermes_home) = &config.telemetry.hermes_home {
            hermes::spawn_tailer(
                hermes_home.join("state.db"),
                self.outbox.clone(),
                config.telemetry.clone(),
                stop.clone(),
            );
        }
        tokio::spawn(ingest(self.outbox.clone(), self.rx, config.telemetry.batch));
        if let Some(store) = self.audit {
            tokio::spawn(anchor::run(store, self.outbox.clone(), self.live.clone(), stop.clone()));
        }
        tokio::spawn(stream::run(self.outbox, self.peers, self.live, stop));
    }
}

/// Moves queued harness events into the outbox in batches.
async fn ingest(outbox: Arc<Outbox>, mut rx: mpsc::Receiver<(i64, Kind)>, batch: usize) {
    let mut buf = Vec::with_capacity(batch);
    while rx.recv_many(&mut buf, batch).await > 0 {
        let events = std::mem::take(&mut buf);
        let ob = outbox.clone();
        let n = events.len() as u64;
        let result = tokio::task::spawn_blocking(move || ob.append(events, "harness")).await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                metrics::counter!("uw_telemetry_dropped_total", "source" => "harness").increment(n);
                // A failing write side is logged once by the outbox, not once per batch.
                if outbox.write_error().is_some() {
                    tracing::debug!(error = %e.message, events = n, "telemetry outbox write failed; events dropped");
                } else {
                    tracing::error!(code = e.code.as_str(), error = %e.message, events = n, "telemetry outbox write failed; events dropped");
                }
            }
            Err(e) => tracing::error!(error = %e, "telemetry outbox task failed"),
        }
    }
}
