//! Retry: repeats transient failures of repeatable calls with exponential backoff and jitter.
//!
//! The decision lives in [`policy`]; this module only applies it, through `backon`.

use std::task::{Context, Poll};

use backon::Retryable;
use serde_json::Value;
use tower::{Layer, Service, ServiceExt};

use super::Call;
use crate::error::{Error, Result};
use crate::future::BoxFuture;

pub mod policy;

pub use policy::{RetryConfig, RetryPolicy};

/// Wraps a service in [`Retry`].
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// A layer applying this policy.
    pub fn new(policy: RetryPolicy) -> RetryLayer {
        RetryLayer { policy }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry { inner, policy: self.policy.clone() }
    }
}

/// Calls the inner service again while the policy says so, sleeping on tokio's clock.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S> Service<Call> for Retry<S>
where
    S: Service<Call, Response = Value, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Response = Value;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Value>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let inner = self.inner.clone();
        if !self.policy.may_repeat(&call) {
            return Box::pin(inner.oneshot(call));
        }
        let policy = self.policy.clone();
        Box::pin(async move {
            let attempt = || inner.clone().oneshot(call.clone());
            attempt
                .retry(policy.backoff().with_max_times(policy.retries_for(&call)))
                .sleep(tokio::time::sleep)
                .when(|e| policy.is_retryable(e))
                .notify(|e, d| tracing::debug!(code = %e.code, delay_ms = d.as_millis() as u64, "retrying"))
                .await
        })
    }
}
