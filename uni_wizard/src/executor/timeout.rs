//! Timeout: bounds one attempt of a call by `call.timeout` (E3001).

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::{Value, json};
use tower::{Layer, Service};

use super::Call;
use crate::error::{Error, ErrorCode, Result};
use crate::future::BoxFuture;

/// Wraps a service in [`Timeout`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeoutLayer;

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout { inner }
    }
}

/// Fails an attempt that has not finished by its deadline; the attempt is dropped (and with
/// it any child process the tool started, which tools spawn with `kill_on_drop`).
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
}

impl<S> Service<Call> for Timeout<S>
where
    S: Service<Call, Response = Value, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Value;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Value>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let limit = call.timeout;
        let tool = call.tool_name();
        Box::pin(bounded(limit, tool, self.inner.call(call)))
    }
}

/// Runs one attempt of `tool`, failing it with E3001 if it has not finished within `limit`.
/// The layer above and Simple mode's direct path share it, so both fail alike.
///
/// Most attempts finish on their first poll (a cached read, an in-memory answer), so the
/// attempt is polled once before a timer is armed: those pay for one clock read and no
/// timer-wheel entry. The deadline counts from before that first poll either way, so a first
/// poll that runs long still ends the attempt at `limit` (as soon as it yields).
pub async fn bounded<F>(limit: Duration, tool: &'static str, attempt: F) -> Result<Value>
where
    F: Future<Output = Result<Value>>,
{
    let started = tokio::time::Instant::now();
    let mut attempt = std::pin::pin!(attempt);
    if let Poll::Ready(r) = std::future::poll_fn(|cx| Poll::Ready(attempt.as_mut().poll(cx))).await {
        return r;
    }
    let Some(deadline) = started.checked_add(limit) else {
        // A limit past the end of time: no deadline to arm.
        return attempt.await;
    };
    match tokio::time::timeout_at(deadline, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(ErrorCode::Timeout, format!("{tool} did not finish within {} ms", limit.as_millis()))
            .with_details(json!({ "tool": tool, "timeout_ms": limit.as_millis() as u64 }))),
    }
}
