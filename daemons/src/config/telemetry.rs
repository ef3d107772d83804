//! Settings of the `telemetry` role (`telemetry:`), alerts included; the role itself is
//! [`crate::telemetry`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use uni_wizard::{Error, ErrorCode};

/// How hard each telemetry database syncs a commit to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives power loss (one fsync per batch). The default:
    /// an outbox commit that a power cut rolled back would reuse sequence numbers already
    /// acknowledged, and a sink commit is what an ack promises.
    Full,
    /// `synchronous=NORMAL` (WAL): a commit survives a process crash (SIGKILL), not a power
    /// cut. Faster by one fsync per batch; for hosts where that trade is acceptable.
    Normal,
}

impl Durability {
    /// The pragma value.
    pub const fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// Settings of the `telemetry` role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Hermes' home (`$HERMES_HOME`); its `state.db` is tailed. None: no Hermes on this node.
    pub hermes_home: Option<PathBuf>,
    /// Polling fallback beside file notifications, milliseconds (bounded 10..=5000).
    pub poll_ms: u64,
    /// Events the outbox holds at most; beyond, new events are refused (see the module docs).
    pub max_buffered: u64,
    /// Events per outbox read, stream message burst and sink transaction.
    pub batch: usize,
    /// Events sent but not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// Hermes tool results longer than this many bytes are cut (and flagged).
    pub result_max_bytes: usize,
    /// First reconnect delay to Timmy, milliseconds; doubles up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    /// Longest reconnect delay, milliseconds.
    pub backoff_max_ms: u64,
    /// Disk sync of the outbox and the sink.
    pub durability: Durability,
    /// Hermes tools this house refuses in `pre_tool_call` (besides the house's built-in
    /// `denied_tools`), by Hermes tool name.
    pub hook_deny: Vec<String>,
    /// Longest time `uni-wizard hermes-hook` spends on the outbox before answering, ms.
    pub hook_timeout_ms: u64,
    /// Alert rules.
    pub alerts: AlertsConfig,
    /// How often this node's audit heads are anchored at Timmy, milliseconds (bounded
    /// 10..=3600000); a Sovereign record or a spent token is anchored at once besides.
    pub anchor_period_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> TelemetryConfig {
        TelemetryConfig {
            hermes_home: None,
            poll_ms: 250,
            max_buffered: 1_000_000,
            batch: 512,
            max_in_flight: 4096,
            result_max_bytes: 4096,
            backoff_min_ms: 50,
            backoff_max_ms: 5_000,
            durability: Durability::Full,
            hook_deny: Vec::new(),
            hook_timeout_ms: 500,
            alerts: AlertsConfig::default(),
            anchor_period_ms: 10_000,
        }
    }
}

impl TelemetryConfig {
    /// Checks the bounds.
    ///
    /// # Errors
    /// E4001 naming the field (relative to `telemetry`).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, problem: &str| {
            Err(Error::new(ErrorCode::ConfigInvalid, format!("field `{field}`: {problem}"))
                .with_details(json!({ "field": field })))
        };
        if !(10..=5_000).contains(&self.poll_ms) {
            return bad("poll_ms", "must be 10 to 5000");
        }
        if self.max_buffered == 0 {
            return bad("max_buffered", "must be positive");
        }
        if !(1..=10_000).contains(&self.batch) {
            return bad("batch", "must be 1 to 10000");
        }
        if self.max_in_flight < self.batch {
            return bad("max_in_flight", "must be at least `batch`");
        }
        if self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            return bad("backoff_max_ms", "backoff_min_ms must be positive and at most backoff_max_ms");
        }
        if self.hook_timeout_ms == 0 || self.hook_timeout_ms > 10_000 {
            return bad("hook_timeout_ms", "must be 1 to 10000");
        }
        if !(10..=3_600_000).contains(&self.alerts.interval_ms) {
            return bad("alerts.interval_ms", "must be 10 to 3600000");
        }
        if !(10..=3_600_000).contains(&self.anchor_period_ms) {
            return bad("anchor_period_ms", "must be 10 to 3600000");
        }
        if let Some(url) = &self.alerts.webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad("alerts.webhook", "must be an http:// or https:// URL");
        }
        Ok(())
    }

    /// The polling interval.
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    /// The anchoring period.
    pub fn anchor_period(&self) -> Duration {
        Duration::from_millis(self.anchor_period_ms)
    }
}

/// Alert rules; a rule left unset is off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How often the rules are evaluated, ms.
    pub interval_ms: u64,
    /// Where transitions are POSTed (`http://host:port/path`); unset: log only.
    pub webhook: Option<String>,
    /// A node the sink knows has had no open stream for this long, ms (Timmy only).
    pub node_down_ms: Option<u64>,
    /// A breaker of this node's worker has been open this long, ms.
    pub breaker_open_ms: Option<u64>,
    /// This node's outbox holds more events than this.
    pub buffered_above: Option<u64>,
    /// Lag above this, ms: at the sink, per node; on a bridge, the age of its oldest
    /// unacknowledged event.
    pub lag_above_ms: Option<u64>,
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        AlertsConfig {
            interval_ms: 1_000,
            webhook: None,
            node_down_ms: None,
            breaker_open_ms: None,
            buffered_above: None,
            lag_above_ms: None,
        }
    }
}

impl AlertsConfig {
    /// Whether any rule is on.
    pub fn any(&self) -> bool {
        self.node_down_ms.is_some()
            || self.breaker_open_ms.is_some()
            || self.buffered_above.is_some()
            || self.lag_above_ms.is_some()
    }
}
