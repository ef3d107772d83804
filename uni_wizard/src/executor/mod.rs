//! The async executor: a stack of tower layers around the tool call.
//!
//! # Layer order
//!
//! This is the one place the order is written down. From the outside in:
//!
//! ```text
//! concurrency limit -> circuit breaker -> retry -> timeout -> tool
//! ```
//!
//! * the **limit** bounds how many calls run at once and refuses (E3005) a call that cannot get
//!   a slot within `queue_timeout`, so saturation is visible instead of piling up;
//! * the **breaker** (per tool and target) sees one result per call, after retries, and refuses
//!   at once (E3002) while open, admitting exactly one probe when half-open;
//! * **retry** repeats transient failures with exponential backoff and jitter, and never
//!   repeats a non-idempotent tool unless the call carries an idempotency key;
//! * the **timeout** bounds each attempt (E3001).
//!
//! Simple mode uses only `timeout -> tool`; Intelligent and Sovereign use the whole stack.
//! Each concern is a module with its layer, its service and (where it decides anything) a small
//! policy type kept apart from the mechanism.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower::{Service, ServiceExt};

use crate::error::{Error, Result};
use crate::future::BoxFuture;
use crate::tools::{Tool, ToolContext};

pub mod breaker;
pub mod limit;
pub mod retry;
pub mod timeout;

pub use breaker::{BreakerConfig, BreakerLayer, BreakerState, Breakers};
pub use limit::{LimitConfig, LimitLayer};
pub use retry::{RetryConfig, RetryLayer, RetryPolicy};
pub use timeout::TimeoutLayer;

use breaker::BreakerService;
use limit::Limit;
use retry::Retry;
use timeout::Timeout;

/// What one call is: built once by the harness, shared by every attempt (see [`Call`]).
pub struct CallSpec {
    /// The tool.
    pub tool: Arc<dyn Tool>,
    /// Its context.
    pub ctx: ToolContext,
    /// Validated arguments.
    pub args: Value,
    /// What the call acts on (keys the breaker).
    pub target: String,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Present when the caller made the call safe to repeat.
    pub idempotency_key: Option<String>,
    /// A per-call cap on retries (Intelligent mode's adapted budget); never raises the policy's.
    pub max_retries: Option<usize>,
}

/// One call travelling down the stack: its [`CallSpec`] (read through `Deref`) and the count
/// of attempts made, in one allocation, so the clones retry makes cost a reference count each.
#[derive(Clone)]
pub struct Call(Arc<Shared>);

struct Shared {
    spec: CallSpec,
    /// Attempts made so far, by every clone.
    attempts: AtomicU32,
}

impl Call {
    /// A call of `spec`, no attempt made yet.
    pub fn new(spec: CallSpec) -> Call {
        Call(Arc::new(Shared { spec, attempts: AtomicU32::new(0) }))
    }

    /// The tool's name.
    pub fn tool_name(&self) -> &'static str {
        self.tool.contract().spec().name
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.0.attempts.load(Ordering::Relaxed)
    }

    fn count_attempt(&self) {
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::ops::Deref for Call {
    type Target = CallSpec;

    fn deref(&self) -> &CallSpec {
        &self.0.spec
    }
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("tool", &self.tool_name())
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The innermost service: runs the tool once.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToolService;

impl Service<Call> for ToolService {
    type Response = Value;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Value>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        call.count_attempt();
        Box::pin(async move { call.tool.call(&call.ctx, &call.args).await })
    }
}

/// Settings of the whole executor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// Concurrency limit.
    pub limit: LimitConfig,
    /// Retry with backoff.
    pub retry: RetryConfig,
    /// Circuit breakers.
    pub breaker: BreakerConfig,
}

/// The whole stack's type, outside in, as [`Executor::new`] builds it. Named rather than boxed:
/// every Intelligent and Sovereign call clones the stack, and a boxed one costs an allocation
/// and a virtual call per clone, a named one a few reference-count increments.
type Full = Limit<BreakerService<Retry<Timeout<ToolService>>>>;

/// The executor: the full stack, built once and shared by every call, and Simple mode's
/// direct `timeout -> tool` path.
#[derive(Clone)]
pub struct Executor {
    full: Full,
    breakers: Breakers,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl Executor {
    /// Builds the full stack from the config.
    pub fn new(config: &ExecutorConfig) -> Executor {
        let breakers = Breakers::new(config.breaker.clone());
        let full = tower::ServiceBuilder::new()
            .layer(LimitLayer::new(&config.limit))
            .layer(BreakerLayer::new(breakers.clone()))
            .layer(RetryLayer::new(RetryPolicy::new(config.retry.clone())))
            .layer(TimeoutLayer)
            .service(ToolService);
        Executor { full, breakers }
    }

    /// Runs a call through `timeout -> tool` only: the same timeout as the layer's, applied
    /// directly, so Simple mode pays for no service clone and no boxed futures.
    pub async fn run_simple(&self, call: Call) -> Result<Value> {
        call.count_attempt();
        self.run_once(&*call.tool, &call.ctx, &call.args, call.timeout).await
    }

    /// Runs `tool` once under `timeout`: [`Executor::run_simple`] without a [`Call`], so a
    /// Simple-mode call borrows its context and arguments instead of sharing them.
    pub async fn run_once(&self, tool: &dyn Tool, ctx: &ToolContext, args: &Value, timeout: Duration) -> Result<Value> {
        timeout::bounded(timeout, tool.contract().spec().name, tool.call(ctx, args)).await
    }

    /// Runs a call through the whole stack.
    pub async fn run_full(&self, call: Call) -> Result<Value> {
        self.full.clone().oneshot(call).await
    }

    /// The breakers, for status and tests.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }
}
