//! Anchoring: this node's audit heads, to Timmy, as telemetry events.
//!
//! The node's audit store ([`AuditStore`]) can be cut or rewritten by whoever holds the file;
//! a copy of its heads kept elsewhere cannot. [`run`] puts an `AuditCheckpoint` (the seq and
//! hash of the newest record and of the newest spent token) into the outbox when the heads
//! changed: once at start, every `telemetry.anchor_period_ms` (read live), and at once when
//! the store asks ([`AuditStore::anchor_wanted`]: after every Sovereign record and every spent
//! token). The outbox makes it durable and the stream delivers it like any event; Timmy's
//! sink keeps every distinct checkpoint under the node the stream is bound to
//! ([`super::sink`]). `uni-wizard audit verify --anchor` compares the file with them.

use std::sync::Arc;

use tokio::sync::watch;
use uni_wizard::audit::{AuditStore, Checkpoint};
use uni_wizard_proto::v1::{AuditCheckpoint, telemetry_event::Kind};

use super::outbox::Outbox;
use super::stream::stopped;
use crate::live::Live;

/// The wire form of a checkpoint.
pub fn to_wire(c: &Checkpoint) -> AuditCheckpoint {
    AuditCheckpoint { seq: c.seq, hash: c.hash.clone(), spent_seq: c.spent_seq, spent_hash: c.spent_hash.clone() }
}

/// The checkpoint a wire message carries.
pub fn from_wire(c: &AuditCheckpoint) -> Checkpoint {
    Checkpoint { seq: c.seq, hash: c.hash.clone(), spent_seq: c.spent_seq, spent_hash: c.spent_hash.clone() }
}

/// Queues `store`'s heads into `outbox` whenever they changed, until `stop` turns true.
pub async fn run(store: Arc<AuditStore>, outbox: Arc<Outbox>, live: Live, mut stop: watch::Receiver<bool>) {
    let wanted = store.anchor_wanted();
    let mut sent: Option<Checkpoint> = None;
    loop {
        let st = store.clone();
        let head = match tokio::task::spawn_blocking(move || st.head()).await {
            Ok(Ok(h)) => Some(h),
            Ok(Err(e)) => {
                tracing::error!(code = e.code.as_str(), error = %e.message, "cannot read the audit head to anchor it");
                None
            }
            Err(_) => return,
        };
        if let Some(head) = head.filter(|h| sent.as_ref() != Some(h) && (h.seq > 0 || h.spent_seq > 0)) {
            let ob = outbox.clone();
            let event = vec![(super::now_ms(), Kind::AuditCheckpoint(to_wire(&head)))];
            match tokio::task::spawn_blocking(move || ob.append(event, "audit")).await {
                Ok(Ok(n)) if n > 0 => {
                    tracing::debug!(seq = head.seq, spent_seq = head.spent_seq, "audit head queued for timmy");
                    sent = Some(head);
                }
                Ok(Ok(_)) => tracing::warn!("telemetry outbox full: audit head not anchored yet; retrying"),
                Ok(Err(e)) => {
                    tracing::error!(code = e.code.as_str(), error = %e.message, "cannot queue the audit head");
                }
                Err(_) => return,
            }
        }
        let period = live.get().telemetry.anchor_period();
        tokio::select! {
            () = wanted.notified() => {}
            () = tokio::time::sleep(period) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use uni_wizard::House;
    use uni_wizard::house::Mode;
    use uni_wizard::provenance::{ProvenanceLog, Record};
    use uni_wizard_proto::v1::TelemetryEvent;

    fn record(id: &str, mode: Mode) -> Record {
        Record {
            id: id.into(),
            seq: 0,
            parent_id: None,
            session: "s".into(),
            house: House::Allegro,
            mode,
            node: "n".into(),
            tool: "file_read".into(),
            target: "a".into(),
            read_only: true,
            dry_run: false,
            ok: true,
            error_code: None,
            args_sha256: "00".into(),
            result_sha256: None,
            approvals: Vec::new(),
            started_ms: 1,
            ended_ms: 2,
            duration_us: 3,
        }
    }

    /// The checkpoints in the outbox, oldest first.
    fn queued(outbox: &Outbox) -> Vec<Checkpoint> {
        let pending = outbox.pending(0, 100).expect("pending");
        pending
            .iter()
            .filter_map(|(_, bytes)| match TelemetryEvent::decode(bytes.as_slice()).ok()?.kind {
                Some(Kind::AuditCheckpoint(c)) => Some(from_wire(&c)),
                _ => None,
            })
            .collect()
    }

    /// Polls (bounded, in paused time) until `outbox` holds `n` checkpoints; the virtual time
    /// it took.
    async fn until_queued(outbox: &Outbox, n: usize) -> Option<std::time::Duration> {
        let start = tokio::time::Instant::now();
        for _ in 0..20_000 {
            if queued(outbox).len() >= n {
                return Some(start.elapsed());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        None
    }

    /// Proves a Sovereign record is anchored at once, without waiting for the (one hour)
    /// period (paused time).
    #[tokio::test(start_paused = true)]
    async fn a_sovereign_record_is_anchored_without_waiting_for_the_period() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(AuditStore::open(dir.path().join("audit.db")).expect("store"));
        let yaml = "house: timmy\nplaintext_loopback: true\nlisten: {grpc: 127.0.0.1:1, http: 127.0.0.1:2}\n\
                    telemetry: {anchor_period_ms: 3600000}\n\
                    houses:\n  timmy: {endpoint: 127.0.0.1:1, auth_token: timmy-token-0123456789}\n";
        let config = crate::config::DaemonConfig::parse(yaml, "t.yaml", &|_| None).expect("config");
        let outbox = Arc::new(Outbox::open(&dir.path().join("outbox.db"), "n", &config.telemetry).expect("outbox"));
        let (stop_tx, stop) = watch::channel(false);
        store.append(record("simple", Mode::Simple)).expect("append");
        let task = tokio::spawn(run(store.clone(), outbox.clone(), Live::new(config), stop));
        until_queued(&outbox, 1).await.expect("the head is anchored at start");

        store.append(record("simple-2", Mode::Simple)).expect("append");
        store.append(record("sovereign", Mode::Sovereign)).expect("append");
        let took = until_queued(&outbox, 2).await.expect("the sovereign record is anchored");
        assert!(took < std::time::Duration::from_secs(3_600), "anchored after {took:?}: it waited for the period");
        let newest = queued(&outbox).pop().expect("a checkpoint");
        assert_eq!((newest.seq, newest.hash), (3, store.head().expect("head").hash));

        stop_tx.send(true).expect("stop");
        task.await.expect("stops");
    }
}
