//! Concurrency limit: at most `max_concurrency` calls run at once; a call that cannot get a
//! slot within `queue_timeout_ms` is refused with E3005 rather than queued without bound.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::util::Oneshot;
use tower::{Layer, Service, ServiceExt};

use super::Call;
use crate::error::{Error, ErrorCode, Result};
use crate::future::BoxFuture;

/// Settings of the concurrency limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitConfig {
    /// Calls running at once.
    pub max_concurrency: usize,
    /// How long a call may wait for a slot.
    pub queue_timeout_ms: u64,
}

impl Default for LimitConfig {
    fn default() -> LimitConfig {
        LimitConfig { max_concurrency: 64, queue_timeout_ms: 5_000 }
    }
}

/// Wraps a service in [`Limit`]; every service it makes shares one semaphore.
#[derive(Debug, Clone)]
pub struct LimitLayer {
    slots: Arc<Semaphore>,
    max: usize,
    wait: Duration,
}

impl LimitLayer {
    /// A layer with the configured number of slots (at least one).
    pub fn new(config: &LimitConfig) -> LimitLayer {
        let max = config.max_concurrency.max(1);
        LimitLayer { slots: Arc::new(Semaphore::new(max)), max, wait: Duration::from_millis(config.queue_timeout_ms) }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Limit<S> {
        Limit { inner, slots: self.slots.clone(), max: self.max, wait: self.wait }
    }
}

/// Holds a slot for the whole life of the inner call.
#[derive(Debug, Clone)]
pub struct Limit<S> {
    inner: S,
    slots: Arc<Semaphore>,
    max: usize,
    wait: Duration,
}

impl<S> Service<Call> for Limit<S>
where
    S: Service<Call, Response = Value, Error = Error> + Clone + Send + Unpin + 'static,
    S::Future: Send + Unpin + 'static,
{
    type Response = Value;
    type Error = Error;
    // Named, not boxed, when a slot is free at once (the usual case): the layer then adds no
    // allocation of its own to a call. Only a call that has to queue for a slot is boxed.
    type Future = Limited<Oneshot<S, Call>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Limited::Running { attempt: self.inner.clone().oneshot(call), permit: Some(permit) };
        }
        let slots = self.slots.clone();
        let (max, wait) = (self.max, self.wait);
        let inner = self.inner.clone();
        Limited::Queued(Box::pin(async move {
            let permit = match tokio::time::timeout(wait, slots.acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    return Err(Error::new(
                        ErrorCode::Saturated,
                        format!(
                            "executor saturated: {max} calls running, no slot freed within {} ms",
                            wait.as_millis()
                        ),
                    )
                    .with_details(json!({ "max_concurrency": max, "queue_timeout_ms": wait.as_millis() as u64 })));
                }
            };
            let r = inner.oneshot(call).await;
            drop(permit);
            r
        }))
    }
}

/// The future of [`Limit`]: the call running under the slot it got at once, or waiting for
/// one (boxed: the rare path).
pub enum Limited<F> {
    /// A slot was free: the call runs; the slot is given back when it ends.
    Running {
        /// The rest of the stack.
        attempt: F,
        /// The slot, until the call ends.
        permit: Option<OwnedSemaphorePermit>,
    },
    /// No slot was free: waits up to the queue timeout for one, then runs.
    Queued(BoxFuture<'static, Result<Value>>),
}

impl<F> std::future::Future for Limited<F>
where
    F: std::future::Future<Output = Result<Value>> + Unpin,
{
    type Output = Result<Value>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Value>> {
        match self.get_mut() {
            Limited::Running { attempt, permit } => {
                let r = std::task::ready!(std::pin::Pin::new(attempt).poll(cx));
                drop(permit.take());
                Poll::Ready(r)
            }
            Limited::Queued(queued) => queued.as_mut().poll(cx),
        }
    }
}
