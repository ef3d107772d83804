//! Circuit breaker: per (tool, target), trips after consecutive failures, refuses at once while
//! open (E3002), and admits exactly one probe when half-open.
//!
//! [`state`] holds the machine; this module holds the layer, the service and the registry of
//! breakers. Only failures that say something about the target count (timeouts and tool
//! failures); a missing file or a refused path does not trip a breaker.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;
use tower::util::Oneshot;
use tower::{Layer, Service, ServiceExt};

use super::Call;
use crate::error::{Error, ErrorCode, Result};
use crate::hash::FastMap;

pub mod state;

pub use state::{Breaker, BreakerState, Cooldowns, Permit};

/// Settings of the circuit breakers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open a breaker.
    pub failure_threshold: u32,
    /// First open period.
    pub cooldown_ms: u64,
    /// Longest open period (the period doubles after each failed probe).
    pub max_cooldown_ms: u64,
    /// Most breakers kept; idle ones are dropped first when full.
    pub max_breakers: usize,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig { failure_threshold: 5, cooldown_ms: 10_000, max_cooldown_ms: 300_000, max_breakers: 4096 }
    }
}

/// Whether an error says the target is unhealthy.
pub fn counts_as_failure(err: &Error) -> bool {
    matches!(err.code, ErrorCode::Timeout | ErrorCode::ToolFailed | ErrorCode::ToolFailedTransient)
}

/// Breakers by tool, then target: two lookups by `&str`, so finding a call's breaker copies
/// nothing (a map keyed by the pair would need an owned key to look up).
#[derive(Debug, Default)]
struct BreakerMap {
    by_tool: FastMap<&'static str, FastMap<Box<str>, Arc<Breaker>>>,
    /// Breakers in all, over every tool.
    len: usize,
}

impl BreakerMap {
    fn drop_idle(&mut self) {
        for per in self.by_tool.values_mut() {
            per.retain(|_, b| !b.is_idle());
        }
        self.by_tool.retain(|_, per| !per.is_empty());
        self.len = self.by_tool.values().map(|per| per.len()).sum();
    }
}

/// All breakers, keyed by tool and target. Bounded: when full, idle breakers are dropped; if
/// none is idle, calls share one overflow breaker per tool.
#[derive(Debug, Clone)]
pub struct Breakers {
    config: BreakerConfig,
    map: Arc<Mutex<BreakerMap>>,
}

impl Breakers {
    /// An empty registry.
    pub fn new(config: BreakerConfig) -> Breakers {
        Breakers { config, map: Arc::default() }
    }

    fn make(&self) -> Arc<Breaker> {
        let c = &self.config;
        Arc::new(Breaker::new(
            c.failure_threshold,
            Cooldowns::new(Duration::from_millis(c.cooldown_ms), Duration::from_millis(c.max_cooldown_ms)),
        ))
    }

    /// The breaker for a tool and target, created on first use.
    pub fn get(&self, tool: &'static str, target: &str) -> Arc<Breaker> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.by_tool.get(tool).and_then(|per| per.get(target)) {
            return b.clone();
        }
        let max = self.config.max_breakers.max(1);
        if map.len >= max {
            map.drop_idle();
        }
        let key = if map.len >= max { "*" } else { target };
        let per = map.by_tool.entry(tool).or_default();
        if let Some(b) = per.get(key) {
            return b.clone();
        }
        let b = self.make();
        per.insert(key.into(), b.clone());
        map.len += 1;
        b
    }

    /// The state of every breaker that is not closed, as `(tool, target, state)`.
    pub fn not_closed(&self) -> Vec<(String, String, BreakerState)> {
        let now = Instant::now();
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map
            .by_tool
            .iter()
            .flat_map(|(t, per)| per.iter().map(move |(k, b)| (t.to_string(), k.to_string(), b.state(now))))
            .filter(|(_, _, s)| *s != BreakerState::Closed)
            .collect();
        v.sort();
        v
    }
}

/// Wraps a service in [`BreakerService`].
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    breakers: Breakers,
}

impl BreakerLayer {
    /// A layer over these breakers.
    pub fn new(breakers: Breakers) -> BreakerLayer {
        BreakerLayer { breakers }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> BreakerService<S> {
        BreakerService { inner, breakers: self.breakers.clone() }
    }
}

/// Asks the call's breaker before calling, and tells it the result after.
#[derive(Debug, Clone)]
pub struct BreakerService<S> {
    inner: S,
    breakers: Breakers,
}

/// Tells the breaker the probe ended without a verdict if the call future is dropped.
pub struct Guard {
    breaker: Arc<Breaker>,
    permit: Permit,
    done: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.abandon(self.permit, Instant::now());
        }
    }
}

impl<S> Service<Call> for BreakerService<S>
where
    S: Service<Call, Response = Value, Error = Error> + Clone + Send + Unpin + 'static,
    S::Future: Send + Unpin + 'static,
{
    type Response = Value;
    type Error = Error;
    // Named, not boxed: the layer adds no allocation of its own to a call.
    type Future = Guarded<Oneshot<S, Call>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let tool = call.tool_name();
        let breaker = self.breakers.get(tool, &call.target);
        match breaker.acquire(Instant::now()) {
            Ok(permit) => Guarded::Running {
                attempt: self.inner.clone().oneshot(call),
                guard: Guard { breaker, permit, done: false },
            },
            Err(wait) => Guarded::Refused(std::future::ready(Err(Error::new(
                ErrorCode::BreakerOpen,
                format!("circuit breaker for {tool} on {} is open", call.target),
            )
            .with_details(
                json!({ "tool": tool, "target": &*call.target, "retry_after_ms": wait.as_millis() as u64 }),
            )))),
        }
    }
}

/// The future of [`BreakerService`]: refused at once (E3002), or the call running under its
/// permit, whose result the breaker is told when it arrives.
pub enum Guarded<F> {
    /// The breaker refused the call.
    Refused(std::future::Ready<Result<Value>>),
    /// The call runs; the guard reports its end.
    Running {
        /// The rest of the stack.
        attempt: F,
        /// The breaker and its permit.
        guard: Guard,
    },
}

impl<F> std::future::Future for Guarded<F>
where
    F: std::future::Future<Output = Result<Value>> + Unpin,
{
    type Output = Result<Value>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Value>> {
        match self.get_mut() {
            Guarded::Refused(refusal) => std::pin::Pin::new(refusal).poll(cx),
            Guarded::Running { attempt, guard } => {
                let r = std::task::ready!(std::pin::Pin::new(attempt).poll(cx));
                if !guard.done {
                    let permit = guard.permit;
                    match &r {
                        Ok(_) => guard.breaker.on_success(permit),
                        Err(e) if counts_as_failure(e) => guard.breaker.on_failure(permit, Instant::now()),
                        Err(_) => guard.breaker.abandon(permit, Instant::now()),
                    }
                    guard.done = true;
                }
                Poll::Ready(r)
            }
        }
    }
}
