//! The client side: this node's outbox, streamed to Timmy's sink.
//!
//! One session is one `Telemetry/Stream` call. A sender task sends the events after the last
//! acknowledged seq in order, at most `max_in_flight` beyond it, and waits for more (outbox
//! commits wake it; a `poll_ms` tick picks up other processes' appends). The session itself
//! reads Acks and drops acknowledged events from the outbox. When the stream fails the
//! session ends and the next one starts from the oldest unacknowledged event again, after a
//! [`Backoff`] delay: the sink's dedup on (node, seq) makes the resend harmless.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use uni_wizard::House;
use uni_wizard_proto::v1::{TelemetryEvent, telemetry_client::TelemetryClient};

use super::outbox::Outbox;
use crate::backoff::Backoff;
use crate::live::Live;
use crate::peers::Peers;

/// The reconnect delay after a session that ended: from `min` again when it made progress,
/// unless the outbox cannot be written. Then no ack can be taken, and a quick new session would
/// only resend the same events to be acked again: it waits as after a failure.
fn after_session(backoff: &mut Backoff, progressed: bool, writes_failing: bool) -> Duration {
    if progressed && !writes_failing {
        backoff.reset();
    }
    backoff.next_delay()
}

/// Streams until `stop` turns true, reconnecting as needed.
pub async fn run(outbox: Arc<Outbox>, peers: Peers, live: Live, mut stop: watch::Receiver<bool>) {
    let cfg = live.get().telemetry.clone();
    let mut backoff =
        Backoff::new(Duration::from_millis(cfg.backoff_min_ms), Duration::from_millis(cfg.backoff_max_ms));
    let mut failures = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        let result = session(&outbox, &peers, &live, &mut stop).await;
        metrics::gauge!("uw_telemetry_connected").set(0.0);
        let delay = match result {
            Ended::Stopped => return,
            Ended::Failed { progressed, why } => {
                // The outbox logged its own failure once, naming its file.
                let local = outbox.write_error().is_some();
                if progressed && !local {
                    failures = 0;
                }
                failures += 1;
                if failures == 1 && !local {
                    tracing::warn!(error = %why, "telemetry stream to timmy lost; buffering and retrying");
                } else {
                    tracing::debug!(error = %why, failures, "telemetry stream to timmy still down");
                }
                after_session(&mut backoff, progressed, local)
            }
        };
        metrics::counter!("uw_telemetry_reconnects_total").increment(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once `stop` is true (the guard `wait_for` returns is not held across awaits).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

enum Ended {
    Stopped,
    Failed { progressed: bool, why: String },
}

/// Aborts the sender task when the session ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("outbox task failed: {e}"))
}

async fn session(outbox: &Arc<Outbox>, peers: &Peers, live: &Live, stop: &mut watch::Receiver<bool>) -> Ended {
    let failed = |progressed: bool, why: String| Ended::Failed { progressed, why };
    let cfg = live.get().telemetry.clone();
    let channel = match peers.authed(House::Timmy) {
        Ok(c) => c,
        Err(e) => return failed(false, e.message),
    };
    let ob = outbox.clone();
    let start = match blocking(move || ob.stats()).await {
        Ok(Ok(s)) => s.acked_through,
        Ok(Err(e)) => return failed(false, e.message),
        Err(e) => return failed(false, e),
    };
    let (tx, rx) = mpsc::channel::<TelemetryEvent>(cfg.batch);
    let (acked_tx, acked_rx) = watch::channel(start);
    let mut client = TelemetryClient::new(channel);
    let sender = AbortOnDrop(tokio::spawn(send_loop(outbox.clone(), tx, acked_rx, start, cfg.clone())));
    let opened = tokio::time::timeout(Duration::from_secs(5), client.stream(ReceiverStream::new(rx))).await;
    let mut acks = match opened {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return failed(false, format!("{:?}: {}", s.code(), s.message())),
        Err(_) => return failed(false, "timmy did not answer the stream within 5 s".into()),
    };
    metrics::gauge!("uw_telemetry_connected").set(1.0);
    tracing::info!(from_seq = start + 1, "telemetry stream to timmy open");
    let mut acked = start;
    loop {
        tokio::select! {
            msg = acks.message() => match msg {
                Ok(Some(ack)) => {
                    let through = ack.acked_through_seq;
                    if through <= acked {
                        continue;
                    }
                    let ob = outbox.clone();
                    match blocking(move || ob.ack(through)).await {
                        Ok(Ok(n)) => {
                            metrics::counter!("uw_telemetry_acked_total").increment(n as u64);
                            acked = through;
                            let _ = acked_tx.send(through);
                        }
                        Ok(Err(e)) => return failed(true, e.message),
                        Err(e) => return failed(true, e),
                    }
                }
                Ok(None) => return failed(acked > start, "the sink closed the stream".into()),
                Err(s) => return failed(acked > start, format!("{:?}: {}", s.code(), s.message())),
            },
            _ = stopped(stop) => {
                drop(sender);
                return Ended::Stopped;
            }
        }
    }
}

/// Sends events in seq order, keeping at most `max_in_flight` unacknowledged.
async fn send_loop(
    outbox: Arc<Outbox>,
    tx: mpsc::Sender<TelemetryEvent>,
    mut acked: watch::Receiver<u64>,
    start: u64,
    cfg: super::TelemetryConfig,
) {
    let mut sent = start;
    loop {
        let through = *acked.borrow();
        let room =
            cfg.max_in_flight.saturating_sub(usize::try_from(sent.saturating_sub(through)).unwrap_or(usize::MAX));
        let mut got = 0;
        if room > 0 {
            let ob = outbox.clone();
            let limit = room.min(cfg.batch);
            let batch = match blocking(move || ob.pending(sent, limit)).await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    tracing::error!(code = e.code.as_str(), error = %e.message, "cannot read the telemetry outbox");
                    Vec::new()
                }
                Err(_) => return,
            };
            got = batch.len();
            for (seq, bytes) in batch {
                match TelemetryEvent::decode(bytes.as_slice()) {
                    Ok(ev) => {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                        tracing::debug!(target: super::LAG_TARGET, stage = "sent", seq, t_us = super::now_us());
                    }
                    // Written by this code, so never expected; skipping keeps the stream going and
                    // the sink's seq check will show the gap.
                    Err(e) => tracing::error!(seq, error = %e, "undecodable telemetry event in the outbox; skipped"),
                }
                sent = seq;
            }
        }
        if got == 0 || room == 0 {
            tokio::select! {
                _ = outbox.added.notified() => {}
                r = acked.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(cfg.poll()) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves an event committed to the outbox is handed to the stream at once, woken by the
    /// commit, not by the `poll_ms` tick (paused time: no tick passes before it arrives).
    #[tokio::test(start_paused = true)]
    async fn a_committed_event_is_sent_without_waiting_for_a_poll() {
        let dir = tempfile::tempdir().expect("dir");
        let cfg = crate::telemetry::TelemetryConfig { poll_ms: 5_000, ..Default::default() };
        let outbox = Arc::new(Outbox::open(&dir.path().join("outbox.db"), "n", &cfg).expect("outbox"));
        let (tx, mut rx) = mpsc::channel(8);
        let (_acked_tx, acked_rx) = watch::channel(0);
        let _sender = AbortOnDrop(tokio::spawn(send_loop(outbox.clone(), tx, acked_rx, 0, cfg.clone())));
        // Let the sender find the outbox empty and wait.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let started = tokio::time::Instant::now();
        let ob = outbox.clone();
        let event = (
            1,
            uni_wizard_proto::v1::telemetry_event::Kind::Hook(uni_wizard_proto::v1::HookEvent {
                hook: "h".into(),
                ..Default::default()
            }),
        );
        tokio::task::spawn_blocking(move || ob.append(vec![event], "harness")).await.expect("task").expect("append");
        let got = rx.recv().await.expect("the event is sent");
        assert_eq!(got.seq, outbox.stats().expect("stats").next_seq - 1);
        assert!(started.elapsed() < cfg.poll(), "sent after {:?}: waited for the poll tick", started.elapsed());
    }

    /// Proves a session that got acks it could not store (the outbox cannot be written) does
    /// not reset the backoff: the delays keep doubling to the bound, and reset once writes
    /// work again (before, each such session reconnected after `min`: 481 times in 33 s).
    #[test]
    fn a_failing_outbox_keeps_the_backoff_growing() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let failing: Vec<u64> = (0..5).map(|_| after_session(&mut b, true, true).as_millis() as u64).collect();
        assert_eq!(failing, vec![50, 100, 200, 300, 300]);
        assert_eq!(after_session(&mut b, true, false), Duration::from_millis(50));
        assert_eq!(after_session(&mut b, false, false), Duration::from_millis(100));
    }
}
