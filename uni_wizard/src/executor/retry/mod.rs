//! Retry: repeats transient failures of repeatable calls with exponential backoff and jitter.
//!
//! The decision lives in [`policy`]; this module only applies it, on `backon`'s schedule.

use std::task::{Context, Poll};

use backon::BackoffBuilder;
use serde_json::Value;
use tower::util::Oneshot;
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
    S: Service<Call, Response = Value, Error = Error> + Clone + Send + Sync + Unpin + 'static,
    S::Future: Send + Unpin + 'static,
{
    type Response = Value;
    type Error = Error;
    // Named, not boxed, for the first attempt (most calls have no other): only a call that
    // failed transiently and will be repeated boxes its backoff loop.
    type Future = Retrying<S>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let again = self.policy.may_repeat(&call).then(|| (self.inner.clone(), call.clone(), self.policy.clone()));
        Retrying::First { attempt: self.inner.clone().oneshot(call), again }
    }
}

/// The future of [`Retry`]: the first attempt, then (after a transient failure of a repeatable
/// call) the backoff loop.
pub enum Retrying<S: Service<Call>> {
    /// The first attempt, with what a repeat needs when the call may be repeated.
    First {
        /// The attempt.
        attempt: Oneshot<S, Call>,
        /// The service, the call and the policy, for the repeats.
        again: Option<(S, Call, RetryPolicy)>,
    },
    /// The repeats after a transient failure.
    Repeating(BoxFuture<'static, Result<Value>>),
}

impl<S> std::future::Future for Retrying<S>
where
    S: Service<Call, Response = Value, Error = Error> + Clone + Send + Unpin + 'static,
    S::Future: Send + Unpin + 'static,
{
    type Output = Result<Value>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Value>> {
        let this = self.get_mut();
        if let Retrying::First { attempt, again } = this {
            let r = std::task::ready!(std::pin::Pin::new(attempt).poll(cx));
            match (r, again.take()) {
                (Err(e), Some((inner, call, policy))) if policy.is_retryable(&e) => {
                    *this = Retrying::Repeating(Box::pin(repeat(inner, call, policy, e)));
                }
                (r, _) => return Poll::Ready(r),
            }
        }
        match this {
            Retrying::Repeating(repeats) => repeats.as_mut().poll(cx),
            // Left above only by returning.
            Retrying::First { .. } => Poll::Pending,
        }
    }
}

/// After the first attempt failed with `error` (transient): what `backon` does for the
/// policy's schedule, i.e. while the failure is retryable and the schedule has a delay left,
/// sleep that delay (tokio's clock) and attempt again.
async fn repeat<S>(inner: S, call: Call, policy: RetryPolicy, mut error: Error) -> Result<Value>
where
    S: Service<Call, Response = Value, Error = Error> + Clone,
{
    let mut delays = policy.backoff().with_max_times(policy.retries_for(&call)).build();
    loop {
        if !policy.is_retryable(&error) {
            return Err(error);
        }
        let Some(delay) = delays.next() else { return Err(error) };
        tracing::debug!(code = %error.code, delay_ms = delay.as_millis() as u64, "retrying");
        tokio::time::sleep(delay).await;
        match inner.clone().oneshot(call.clone()).await {
            Ok(v) => return Ok(v),
            Err(e) => error = e,
        }
    }
}
