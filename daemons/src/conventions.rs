//! The gRPC status codes of what tonic answers by itself, and the caller's deadline.
//!
//! Some refusals never reach a handler: tonic makes them while decoding the request, or when
//! the `grpc-timeout` the caller sent passes. Their codes were not the ones the gRPC spec
//! names, and they carried no E-code. [`ConventionsLayer`], the outermost layer of the gRPC
//! server, answers them as follows:
//!
//! | what | tonic alone | answered |
//! |---|---|---|
//! | a request message above the decode limit (4 MiB) | `OUT_OF_RANGE` | `RESOURCE_EXHAUSTED`, E1005 |
//! | a message that does not decode (invalid UTF-8 in a string, a bad varint, a cut or missing message, a bad compression flag) | `INTERNAL` | `INVALID_ARGUMENT`, E1005 |
//! | the caller's `grpc-timeout` passes before the handler answers | `CANCELLED` | `DEADLINE_EXCEEDED`, E3001 |
//!
//! The first two are rewritten in the response headers (a trailers-only response: tonic
//! refuses a unary request before any message is sent). Only a status that carries no
//! `ErrorDetail` is touched: every status our own code makes has one ([`wire::status`]),
//! so an `INTERNAL` of ours stays `INTERNAL`. For the deadline, tonic's own timer
//! (`transport::server`'s `GrpcTimeout`) wraps this layer and would answer `CANCELLED`; this
//! layer's deadline is taken from the same header a moment earlier, so it always comes first.
//! A message of a client stream that does not decode reaches the handler instead, as an
//! error item; the handler answers it with the same code through [`replacement`].

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use uni_wizard::{Error, ErrorCode};

use crate::wire;

/// Messages tonic gives the `INTERNAL` status of a request that does not decode.
const UNDECODABLE: [&str; 5] = [
    "failed to decode Protobuf message",
    "protocol error: received message with",
    "Missing request message",
    "Unexpected EOF decoding stream",
    "Error decompressing",
];

/// The layer: answers decode failures and passed deadlines with the conventional codes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConventionsLayer;

impl<S> tower::Layer<S> for ConventionsLayer {
    type Service = Conventions<S>;

    fn layer(&self, inner: S) -> Conventions<S> {
        Conventions { inner }
    }
}

/// The service [`ConventionsLayer`] makes.
#[derive(Debug, Clone)]
pub struct Conventions<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Conventions<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Read before tonic's timer starts (it starts once this returns), so ours ends first.
        let timeout = req.headers().get("grpc-timeout").and_then(|v| grpc_timeout(v.as_bytes()));
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let inner = self.inner.call(req);
        Box::pin(async move {
            let (Some(timeout), Some(deadline)) = (timeout, deadline) else {
                return inner.await.map(rewrite);
            };
            let mut inner = pin!(inner);
            let mut sleep = pin!(tokio::time::sleep_until(deadline));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = inner.as_mut().poll(cx) {
                    return Poll::Ready(r.map(rewrite));
                }
                // The clock, not only the timer: woken by tonic's timer, ours may not have fired.
                if Instant::now() >= deadline || sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(deadline_exceeded(timeout)));
                }
                Poll::Pending
            })
            .await
        })
    }
}

fn deadline_exceeded(timeout: Duration) -> http::Response<tonic::body::Body> {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let e = Error::new(ErrorCode::Timeout, format!("the call's deadline (grpc-timeout {ms} ms) passed"))
        .with_details(serde_json::json!({ "timeout_ms": ms }));
    wire::status(&e).into_http()
}

/// The response with a status tonic made by itself rewritten (see the module docs).
fn rewrite(mut response: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    let headers = response.headers();
    if headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    let Some(code) = headers.get("grpc-status").map(|v| tonic::Code::from_bytes(v.as_bytes())) else {
        return response;
    };
    let message = response.extensions().get::<tonic::Status>().map(|s| s.message().to_owned()).unwrap_or_default();
    let Some(status) = replacement(code, &message) else { return response };
    tracing::debug!(from = ?code, to = ?status.code(), reason = %message, "answered a request tonic refused");
    let headers = response.headers_mut();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if status.add_header(headers).is_err() {
        // Cannot happen (our message is percent-encoded); the original answer stands.
        headers.insert("grpc-status", http::HeaderValue::from(code as i32));
    }
    response.extensions_mut().insert(status);
    response
}

/// The status to answer instead of `code` (with tonic's `message`), if any: also what a
/// streaming handler ends its stream with when an inbound message does not decode.
pub fn replacement(code: tonic::Code, message: &str) -> Option<tonic::Status> {
    match code {
        tonic::Code::OutOfRange => Some(wire::status_with(
            tonic::Code::ResourceExhausted,
            &Error::new(ErrorCode::InvalidInput, format!("the request is larger than this server accepts: {message}"))
                .with_details(serde_json::json!({ "reason": "message too large" })),
        )),
        tonic::Code::Internal if UNDECODABLE.iter().any(|p| message.starts_with(p)) => Some(wire::status(
            &Error::new(ErrorCode::InvalidInput, format!("the request does not decode: {message}"))
                .with_details(serde_json::json!({ "reason": "undecodable message" })),
        )),
        _ => None,
    }
}

/// A `grpc-timeout` value (`TimeoutValue TimeoutUnit`: at most 8 digits, then H, M, S, m, u
/// or n), as tonic reads it; `None` when it is not one.
fn grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    fn grpc_code(r: &http::Response<tonic::body::Body>) -> Option<tonic::Code> {
        r.headers().get("grpc-status").map(|v| tonic::Code::from_bytes(v.as_bytes()))
    }

    /// Proves `grpc-timeout` is read as the gRPC spec writes it, and nonsense is no deadline.
    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout(b"99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in [&b""[..], b"m", b"123456789m", b"10x", b"-1S", b"1.5S"] {
            assert_eq!(grpc_timeout(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Proves tonic's OUT_OF_RANGE (decode limit) becomes RESOURCE_EXHAUSTED, its INTERNAL for
    /// an undecodable message INVALID_ARGUMENT, both with E1005, while an INTERNAL of ours (it
    /// carries an ErrorDetail) and any other INTERNAL stay as they are.
    #[test]
    fn tonic_refusals_get_the_conventional_codes() {
        let ours = |s: tonic::Status| rewrite(s.into_http());
        let big = ours(tonic::Status::out_of_range("Error, decoded message length too large: found 10485760 bytes"));
        assert_eq!(grpc_code(&big), Some(tonic::Code::ResourceExhausted));
        let e = big.extensions().get::<tonic::Status>().map(wire::error_from_status).map(|e| e.code);
        assert_eq!(e, Some(ErrorCode::InvalidInput));
        let utf8 = ours(tonic::Status::internal(
            "failed to decode Protobuf message: ToolCall.tool: invalid string value: data is not UTF-8 encoded",
        ));
        assert_eq!(grpc_code(&utf8), Some(tonic::Code::InvalidArgument));
        let e = utf8.extensions().get::<tonic::Status>().map(wire::error_from_status);
        assert!(e.is_some_and(|e| e.code == ErrorCode::InvalidInput && e.message.contains("UTF-8")));
        let mine = ours(wire::status(&Error::new(ErrorCode::ToolFailed, "failed to decode Protobuf message")));
        assert_eq!(grpc_code(&mine), Some(tonic::Code::Internal), "an ErrorDetail marks our own status");
        let other = ours(tonic::Status::internal("Error encoding: something"));
        assert_eq!(grpc_code(&other), Some(tonic::Code::Internal));
    }

    /// Proves a handler still running when the caller's grpc-timeout passes is answered
    /// DEADLINE_EXCEEDED with E3001 when the deadline passes, and a fast one is left alone.
    #[tokio::test]
    async fn a_passed_deadline_is_deadline_exceeded() {
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut svc = ConventionsLayer.layer(slow);
        let req = http::Request::builder().header("grpc-timeout", "300m").body(()).expect("request");
        let started = Instant::now();
        let r = svc.ready().await.expect("ready").call(req).await.expect("answered");
        assert_eq!(grpc_code(&r), Some(tonic::Code::DeadlineExceeded));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(10), "{took:?}");
        let e = r.extensions().get::<tonic::Status>().map(wire::error_from_status);
        assert_eq!(e.map(|e| (e.code, e.details["timeout_ms"].as_u64())), Some((ErrorCode::Timeout, Some(300))));

        let fast = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let req = http::Request::builder().header("grpc-timeout", "300m").body(()).expect("request");
        let r = ConventionsLayer.layer(fast).oneshot(req).await.expect("answered");
        assert_eq!(grpc_code(&r), None, "no status added to a normal answer");
    }
}
