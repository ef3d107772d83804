//! The retry *decision*: which failures to repeat, how often, and how long to wait.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::executor::Call;

/// Settings of retry with backoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 disables retry).
    pub max_retries: usize,
    /// Delay before the first retry.
    pub min_delay_ms: u64,
    /// Largest delay between attempts (before jitter).
    pub max_delay_ms: u64,
    /// Whether to add random jitter (each delay `d` becomes a value in `[d, 2d)`).
    pub jitter: bool,
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig { max_retries: 2, min_delay_ms: 100, max_delay_ms: 5_000, jitter: true }
    }
}

/// Decides whether a failed attempt is repeated.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
}

impl RetryPolicy {
    /// A policy from settings.
    pub fn new(config: RetryConfig) -> RetryPolicy {
        RetryPolicy { config }
    }

    /// The settings.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Whether this call may be repeated at all: the tool is idempotent, or the caller gave
    /// an idempotency key that makes a repeat safe.
    pub fn may_repeat(&self, call: &Call) -> bool {
        self.retries_for(call) > 0
            && (call.tool.contract().spec().annotations.idempotent || call.idempotency_key.is_some())
    }

    /// Retries allowed for this call: the configured budget, lowered by the call's own cap.
    pub fn retries_for(&self, call: &Call) -> usize {
        call.max_retries.map_or(self.config.max_retries, |cap| cap.min(self.config.max_retries))
    }

    /// Whether this error is worth another attempt (transient failures only).
    pub fn is_retryable(&self, err: &Error) -> bool {
        err.is_transient()
    }

    /// The backoff schedule: exponential from `min_delay`, capped at `max_delay`, with jitter,
    /// stopping after `max_retries` delays.
    pub fn backoff(&self) -> ExponentialBuilder {
        let min = Duration::from_millis(self.config.min_delay_ms);
        let max = Duration::from_millis(self.config.max_delay_ms.max(self.config.min_delay_ms));
        let b = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_max_times(self.config.max_retries);
        if self.config.jitter { b.with_jitter() } else { b }
    }

    /// The delays the schedule would produce (for documentation and tests).
    pub fn delays(&self) -> Vec<Duration> {
        self.backoff().build().collect()
    }
}
