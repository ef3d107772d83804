//! The connection guard of both ports: a connection that says nothing is closed.
//!
//! tonic's server keeps every accepted connection until its peer goes away, so a client that
//! connects and sends nothing, half of the HTTP/2 preface, or the preface and then nothing,
//! holds a file descriptor for ever; a thousand of them take a node down. [`Guarded`] wraps
//! each accepted socket and fails its reads (so hyper closes the connection) when
//!
//! - the 24 bytes of the HTTP/2 preface (or the first 24 bytes of a TLS handshake) have not
//!   arrived within `http.header_timeout_ms` of the accept, or
//! - no byte has moved either way for `http.idle_timeout_ms`.
//!
//! A live client is never idle that long: the server sends an HTTP/2 PING after a third of the
//! idle timeout without traffic ([`keepalive`]), which every HTTP/2 client answers, and a
//! connection that does not answer within its timeout is closed by hyper. The HTTP port
//! (`serve::serve_http`) guards its sockets with the idle limit only: hyper's own header read
//! timeout covers what the preface limit covers here.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// Bytes a client sends before the server has anything to do: the HTTP/2 preface
/// (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`); any TLS ClientHello is longer.
pub const PREFACE_LEN: usize = 24;

/// The two limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From the accept to the end of the preface; `None`: no preface is awaited.
    pub preface: Option<Duration>,
    /// Longest time without a byte either way.
    pub idle: Duration,
}

/// HTTP/2 keep-alive for `limits`: a PING after a third of the idle time without traffic, and
/// its answer awaited for as long again (at most 20 s), so a live connection is never idle.
pub fn keepalive(limits: Limits) -> (Duration, Duration) {
    let interval = (limits.idle / 3).max(Duration::from_millis(10));
    (interval, interval.min(Duration::from_secs(20)))
}

/// A socket whose reads fail with `TimedOut` once it breaks one of its [`Limits`].
#[derive(Debug)]
pub struct Guarded<T> {
    inner: T,
    limits: Limits,
    accepted: Instant,
    last: Instant,
    read: usize,
    timer: Pin<Box<Sleep>>,
}

impl<T> Guarded<T> {
    /// `inner`, accepted now, held to `limits`.
    pub fn new(inner: T, limits: Limits) -> Guarded<T> {
        let now = Instant::now();
        Guarded {
            inner,
            limits,
            accepted: now,
            last: now,
            read: 0,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle)),
        }
    }

    /// When the connection breaks a limit unless a byte moves first.
    fn deadline(&self) -> Instant {
        let idle = self.last + self.limits.idle;
        match self.limits.preface {
            Some(preface) if self.read < PREFACE_LEN => idle.min(self.accepted + preface),
            _ => idle,
        }
    }

    /// Notes a write that moved bytes; a write the peer does not take (it reads nothing) fails
    /// at the deadline like a read.
    fn wrote(&mut self, r: Poll<std::io::Result<usize>>, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.last = Instant::now();
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out(self))),
            other => other,
        }
    }

    /// `Ready` once the deadline has passed; otherwise the timer wakes the task at it.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.deadline();
        if Instant::now() >= deadline {
            return true;
        }
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

fn timed_out(g: &Guarded<impl Sized>) -> std::io::Error {
    let why =
        if g.limits.preface.is_some() && g.read < PREFACE_LEN { "sent no HTTP/2 preface in time" } else { "idle" };
    tracing::debug!(why, "connection closed");
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connection {why}"))
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    self.read = self.read.saturating_add(n);
                    self.last = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out(&self))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for Guarded<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> T::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const LIMITS: Limits = Limits { preface: Some(Duration::from_secs(1)), idle: Duration::from_secs(10) };

    /// Proves a connection that sends nothing, or less than the preface, fails its read at the
    /// preface limit, one that sent the preface only at the idle limit, and one that keeps
    /// talking never.
    #[tokio::test(start_paused = true)]
    async fn silence_closes_and_talk_keeps_open() {
        for sent in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
            let (mut client, server) = tokio::io::duplex(1024);
            client.write_all(sent).await.expect("write");
            let mut g = Guarded::new(server, LIMITS);
            let mut buf = vec![0u8; 64];
            let started = Instant::now();
            while g.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            assert_eq!(Some(started.elapsed()), LIMITS.preface, "{sent:?}");
        }

        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("write");
        let mut g = Guarded::new(server, LIMITS);
        let mut buf = vec![0u8; 64];
        assert_eq!(g.read(&mut buf).await.expect("preface"), PREFACE_LEN);
        let started = Instant::now();
        let e = g.read(&mut buf).await.expect_err("idle");
        assert_eq!((e.kind(), started.elapsed()), (std::io::ErrorKind::TimedOut, LIMITS.idle));

        let (mut client, server) = tokio::io::duplex(1024);
        let mut g = Guarded::new(server, LIMITS);
        client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("write");
        assert_eq!(g.read(&mut buf).await.expect("preface"), PREFACE_LEN);
        for _ in 0..5 {
            tokio::time::sleep(LIMITS.idle / 2).await;
            client.write_all(b"ping").await.expect("write");
            assert_eq!(g.read(&mut buf).await.expect("talk keeps it open"), 4);
        }
    }

    /// Proves the keep-alive PING comes well inside the idle limit and its wait is bounded.
    #[test]
    fn keepalive_pings_inside_the_idle_limit() {
        assert_eq!(keepalive(LIMITS), (LIMITS.idle / 3, LIMITS.idle / 3));
        let long = Limits { preface: LIMITS.preface, idle: Duration::from_secs(600) };
        assert_eq!(keepalive(long), (Duration::from_secs(200), Duration::from_secs(20)));
    }
}
