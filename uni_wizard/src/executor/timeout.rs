//! Timeout: bounds one attempt of a call by `call.timeout` (E3001).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::{Value, json};
use tower::{Layer, Service};

use super::Call;
use crate::error::{Error, ErrorCode, Result};

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
    S::Future: Unpin,
{
    type Response = Value;
    type Error = Error;
    // Named, not boxed: the layer adds no allocation of its own to a call.
    type Future = Bounded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let limit = call.timeout;
        let tool = call.tool_name();
        bounded(limit, tool, self.inner.call(call))
    }
}

/// Runs one attempt of `tool`, failing it with E3001 if it has not finished within `limit`.
/// The layer above and Simple mode's direct path share it, so both fail alike.
///
/// Most attempts finish on their first poll (a cached read, an in-memory answer), so the
/// attempt is polled once before a timer is armed: those pay for one clock read and no
/// timer-wheel entry. The deadline counts from when the attempt was bounded, so a first
/// poll that runs long still ends the attempt at `limit` (as soon as it yields).
pub fn bounded<F>(limit: Duration, tool: &'static str, attempt: F) -> Bounded<F>
where
    F: Future<Output = Result<Value>> + Unpin,
{
    Bounded { attempt, limit, tool, started: tokio::time::Instant::now(), timer: None }
}

/// The future of [`bounded`]: the attempt, and its timer once the first poll left it pending.
#[derive(Debug)]
pub struct Bounded<F> {
    attempt: F,
    limit: Duration,
    tool: &'static str,
    started: tokio::time::Instant,
    /// Armed after the first pending poll; `None` also when the deadline is past the end of
    /// time (then the attempt runs unbounded).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F> Future for Bounded<F>
where
    F: Future<Output = Result<Value>> + Unpin,
{
    type Output = Result<Value>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Value>> {
        let this = self.get_mut();
        if let Poll::Ready(r) = Pin::new(&mut this.attempt).poll(cx) {
            return Poll::Ready(r);
        }
        let timer = match &mut this.timer {
            Some(timer) => timer,
            None => match this.started.checked_add(this.limit) {
                Some(deadline) => this.timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
                // A limit past the end of time: no deadline to arm.
                None => return Poll::Pending,
            },
        };
        let (tool, limit) = (this.tool, this.limit);
        timer.as_mut().poll(cx).map(|()| {
            Err(Error::new(ErrorCode::Timeout, format!("{tool} did not finish within {} ms", limit.as_millis()))
                .with_details(json!({ "tool": tool, "timeout_ms": limit.as_millis() as u64 })))
        })
    }
}
