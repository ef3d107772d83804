//! [`LeaderWatch`]: a worker's view of who leads, from etcd, never from a request.

use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::LeaderInfo;
use super::decide::{self, Seen};
use super::etcd::{Cluster, Observer};
use crate::backoff::Backoff;
use crate::config::etcd::EtcdConfig;

/// The longest a quiet task sleeps before looking again.
const IDLE: Duration = Duration::from_secs(3_600);

/// What the task last established: the leader, and until when that is current.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct View {
    leader: Option<LeaderInfo>,
    until: Option<Instant>,
}

/// Watches the routers' election without campaigning (for workers): the current leader and
/// its term, `None` while no read younger than the lease TTL shows one (etcd unreachable,
/// quorum lost, no leader), so a dispatch is refused rather than trusted (fail closed).
#[derive(Debug)]
pub struct LeaderWatch {
    view: watch::Receiver<View>,
    leader: watch::Receiver<Option<LeaderInfo>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl LeaderWatch {
    /// Starts watching. Never fails: an unreachable etcd reads as `None` and is retried.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(config: EtcdConfig) -> LeaderWatch {
        let (view_tx, view) = watch::channel(View::default());
        let (leader_tx, leader) = watch::channel(None);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(config, view_tx, leader_tx, stopped));
        LeaderWatch { view, leader, stop: Some(stop), task: Some(task) }
    }

    /// The leader now: the last read's, while that read is younger than the lease TTL (checked
    /// against the clock here, so a stalled task cannot keep a stale leader), else `None`.
    pub fn current(&self) -> Option<LeaderInfo> {
        let view = self.view.borrow();
        let current = view.until.is_some_and(|u| Instant::now() < u);
        if current { view.leader.clone() } else { None }
    }

    /// The leader as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Option<LeaderInfo>> {
        self.leader.clone()
    }

    /// Stops watching and waits for the task to end.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LeaderWatch {
    fn drop(&mut self) {
        // Dropping the sender wakes the task, which ends.
        self.stop.take();
    }
}

/// The watch task.
async fn run(
    cfg: EtcdConfig,
    view_tx: watch::Sender<View>,
    leader_tx: watch::Sender<Option<LeaderInfo>>,
    mut stop: oneshot::Receiver<()>,
) {
    let ttl = cfg.lease_ttl();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let cluster = loop {
        match Cluster::connect(&cfg).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "leader watch: etcd not answering; retrying");
                tokio::select! {
                    _ = &mut stop => return,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    };
    let mut observer = Observer::new(cluster, &cfg.election_name(), cfg.request_timeout());
    let mut seen: Option<Seen> = None;
    let mut error = String::new();
    let mut refresh = tokio::time::interval(cfg.keepalive());
    refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut read_now = true;
    loop {
        if read_now {
            read_now = false;
            match observer.read().await {
                Ok(s) => seen = Some(s),
                Err(e) => error = e.to_string(),
            }
        }
        let now = Instant::now();
        let leader = decide::watched(now, seen.as_ref(), ttl);
        let until = seen.as_ref().map(|s| s.read_at + ttl);
        let before = leader_tx.borrow().clone();
        if before != leader {
            match (&before, &leader) {
                (_, Some(l)) => {
                    tracing::info!(leader = %l.house, node = %l.node, term = l.term, "leader watch: leader")
                }
                (Some(_), None) => {
                    tracing::warn!(reason = %error, "leader watch: no current leader; refusing dispatches")
                }
                (None, None) => {}
            }
        }
        view_tx.send_if_modified(|v| {
            let new = View { leader: leader.clone(), until };
            let changed = *v != new;
            *v = new;
            changed
        });
        leader_tx.send_if_modified(|l| {
            let changed = *l != leader;
            *l = leader;
            changed
        });
        let wake = decide::next_change(now, None, seen.as_ref(), decide::Timing { ttl, margin: Duration::ZERO })
            .unwrap_or(now + IDLE);
        tokio::select! {
            _ = &mut stop => break,
            _ = refresh.tick() => read_now = true,
            changed = observer.changed() => {
                if let Err(e) = changed {
                    error = e.to_string();
                }
                read_now = true;
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}
