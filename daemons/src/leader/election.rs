//! [`Election`]: a router's candidacy, run in a background task, and its [`Fence`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use uni_wizard::House;

use super::Leadership;
use super::decide::{self, Mine, Seen, Timing};
use super::etcd::{self, Cluster, LeaseState, Observer};
use crate::backoff::Backoff;
use crate::config::etcd::EtcdConfig;

/// The longest a quiet task sleeps before looking again.
const IDLE: Duration = Duration::from_secs(3_600);

/// A router's candidacy for leadership. Started with [`Election::start`], it runs in a
/// background task (connect, lease, candidacy, reads and watch of the election; see the
/// module docs) and publishes its [`Leadership`]. Dropping it, or [`Election::shutdown`],
/// closes the fence at once, then resigns and revokes the lease.
#[derive(Debug)]
pub struct Election {
    state: watch::Receiver<Leadership>,
    closed: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Election {
    /// Starts campaigning as `house` / `node`, advertising `endpoint` (the gRPC `host:port`
    /// followers point clients at). Never fails: an etcd that cannot be reached is reported as
    /// [`Leadership::Unavailable`] and retried with a bounded back-off.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(config: EtcdConfig, house: House, node: impl Into<String>, endpoint: impl Into<String>) -> Election {
        let (tx, state) = watch::channel(Leadership::Unavailable { reason: "etcd not reached yet".into() });
        let (stop, stopped) = oneshot::channel();
        let record = decide::record_value(house, &node.into(), &endpoint.into());
        metrics::gauge!("uw_router_leader").set(0.0);
        let task = tokio::spawn(run(config, record, tx, stopped));
        Election { state, closed: Arc::new(AtomicBool::new(false)), stop: Some(stop), task: Some(task) }
    }

    /// The published state, as it changes (a leader's `valid_until` moves on every renewal).
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.state.clone()
    }

    /// The state now (a leader state whose `valid_until` passed reads as unavailable).
    pub fn state(&self) -> Leadership {
        self.fence().state()
    }

    /// Whether this node may dispatch under `term` now: see [`Fence::may_dispatch`].
    pub fn may_dispatch(&self, term: u64) -> bool {
        self.fence().may_dispatch(term)
    }

    /// A cheap handle for the dispatch path.
    pub fn fence(&self) -> Fence {
        Fence { state: self.state.clone(), closed: self.closed.clone() }
    }

    /// Closes the fence, resigns (so the next candidate leads at once), revokes the lease and
    /// waits for the task to end (each etcd call bounded by the request timeout).
    pub async fn shutdown(mut self) {
        self.close();
        if let Some(task) = self.task.take() {
            // The task never panics by design; a cancelled runtime ends it too.
            let _ = task.await;
        }
    }

    fn close(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Election {
    /// Closes the fence and tells the task to resign; the task finishes that by itself.
    fn drop(&mut self) {
        self.close();
    }
}

/// The dispatch path's view of an [`Election`]: cheap to clone and to ask.
#[derive(Debug, Clone)]
pub struct Fence {
    state: watch::Receiver<Leadership>,
    closed: Arc<AtomicBool>,
}

impl Fence {
    /// True only while this node leads under `term` and now is before the leader's
    /// `valid_until` (checked against the clock here, so a stalled election task cannot keep
    /// it true), and the election has not been shut down.
    pub fn may_dispatch(&self, term: u64) -> bool {
        if self.closed.load(Ordering::SeqCst) {
            return false;
        }
        matches!(&*self.state.borrow(), Leadership::Leader { term: t, valid_until } if *t == term && Instant::now() < *valid_until)
    }

    /// The term this node leads under now, if it does.
    pub fn term(&self) -> Option<u64> {
        match self.state() {
            Leadership::Leader { term, .. } => Some(term),
            _ => None,
        }
    }

    /// The state now (a leader state whose `valid_until` passed reads as unavailable).
    pub fn state(&self) -> Leadership {
        if self.closed.load(Ordering::SeqCst) {
            return Leadership::Unavailable { reason: "shut down".into() };
        }
        self.state.borrow().at(Instant::now())
    }
}

/// What was last published, for the log and the metrics.
#[derive(Debug, Default)]
struct Shown {
    /// The last term seen (led or followed); 0 before any.
    term: u64,
    /// The term led, while leading.
    leading: Option<u64>,
    /// Whether the last state was unavailable.
    unavailable: bool,
    /// When the first state was published (a start that never reaches etcd is logged once
    /// [`QUIET_START`] has passed).
    first: Option<Instant>,
    /// Whether that start was logged.
    start_logged: bool,
}

/// How long a router may be unavailable at start before the log says why (a normal start
/// needs a lease and a read: well under a second).
const QUIET_START: Duration = Duration::from_secs(3);

/// Publishes `state`, logging and counting what changed.
fn publish(tx: &watch::Sender<Leadership>, state: Leadership, shown: &mut Shown) {
    shown.first.get_or_insert_with(Instant::now);
    match &state {
        Leadership::Leader { term, .. } => {
            if shown.leading != Some(*term) {
                tracing::info!(term, "leading the routers");
            }
            shown.leading = Some(*term);
        }
        other => {
            if let Some(term) = shown.leading.take() {
                let reason = match other {
                    Leadership::Unavailable { reason } => reason.as_str(),
                    _ => "another router leads",
                };
                tracing::warn!(term, reason, "stepped down: no longer dispatching");
            }
        }
    }
    match &state {
        Leadership::Follower { leader } if leader.term != shown.term => {
            tracing::info!(leader = %leader.house, node = %leader.node, term = leader.term, "following");
        }
        Leadership::Unavailable { reason } if !shown.unavailable && shown.term != 0 => {
            tracing::warn!(reason = %reason, "leadership unavailable");
        }
        Leadership::Unavailable { reason }
            if shown.term == 0 && !shown.start_logged && shown.first.is_some_and(|f| f.elapsed() >= QUIET_START) =>
        {
            shown.start_logged = true;
            tracing::warn!(reason = %reason, "leadership unavailable since start: not leading, not following");
        }
        _ => {}
    }
    shown.unavailable = matches!(state, Leadership::Unavailable { .. });
    if let Some(term) = state.term()
        && term != shown.term
    {
        shown.term = term;
        metrics::counter!("uw_router_leader_changes_total").increment(1);
    }
    metrics::gauge!("uw_router_leader").set(if state.is_leader() { 1.0 } else { 0.0 });
    tx.send_if_modified(|current| {
        if *current == state {
            return false;
        }
        *current = state;
        true
    });
}

/// Aborts the lease keeper when the election ends, however it ends.
struct Keeper(JoinHandle<()>);

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn spawn_keeper(cluster: &Cluster, cfg: &EtcdConfig) -> (Keeper, watch::Receiver<LeaseState>) {
    let (tx, rx) = watch::channel(LeaseState::default());
    (Keeper(tokio::spawn(etcd::keep_lease(cluster.clone(), cfg.clone(), tx))), rx)
}

/// The election task: see the module docs for the protocol.
async fn run(cfg: EtcdConfig, record: Vec<u8>, tx: watch::Sender<Leadership>, mut stop: oneshot::Receiver<()>) {
    let timeout = cfg.request_timeout();
    let timing = Timing { ttl: cfg.lease_ttl(), margin: cfg.fence_margin() };
    let name = cfg.election_name();
    let mut shown = Shown::default();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let cluster = loop {
        match Cluster::connect(&cfg).await {
            Ok(c) => break c,
            Err(e) => {
                publish(&tx, Leadership::Unavailable { reason: format!("etcd not answering: {e}") }, &mut shown);
                tokio::select! {
                    _ = &mut stop => return,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    };
    let (mut keeper, mut lease_rx) = spawn_keeper(&cluster, &cfg);
    let mut observer = Observer::new(cluster.clone(), &name, timeout);
    let mut mine: Option<Mine> = None;
    let mut seen: Option<Seen> = None;
    let mut error = String::new();
    let mut refresh = tokio::time::interval(cfg.keepalive());
    refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut read_now = true;
    let mut stand_backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let mut stand_at = Instant::now();
    loop {
        let state = lease_rx.borrow_and_update().clone();
        if let Some(e) = state.error {
            error = e;
        }
        let lease = state.lease;
        // The candidacy: our key under the lease we hold.
        let standing = lease.is_some_and(|l| mine.as_ref().is_none_or(|m| m.lease != l.id));
        if let Some(l) = lease
            && standing
            && Instant::now() >= stand_at
        {
            match etcd::stand(&cluster, &name, l.id, &record, timeout).await {
                Ok(m) => {
                    mine = Some(m);
                    stand_backoff.reset();
                    read_now = true;
                }
                Err(e) => {
                    error = e.to_string();
                    stand_at = Instant::now() + stand_backoff.next_delay();
                }
            }
        }
        if read_now {
            read_now = false;
            match observer.read().await {
                Ok(s) => {
                    // Our key gone while the lease lives (deleted by hand): stand again.
                    if mine.as_ref().is_some_and(|m| s.lacks(&m.key)) {
                        mine = None;
                    }
                    seen = Some(s);
                }
                Err(e) => error = e.to_string(),
            }
        }
        let now = Instant::now();
        publish(&tx, decide::decide(now, lease.as_ref(), mine.as_ref(), seen.as_ref(), timing, &error), &mut shown);
        let wake = decide::next_change(now, lease.as_ref(), seen.as_ref(), timing).unwrap_or(now + IDLE);
        let standing = lease.is_some_and(|l| mine.as_ref().is_none_or(|m| m.lease != l.id));
        tokio::select! {
            _ = &mut stop => break,
            changed = lease_rx.changed() => {
                if changed.is_err() {
                    // The keeper ended (it never returns; a panic would end it): start another.
                    error = "the lease keeper stopped; restarted".into();
                    (keeper, lease_rx) = spawn_keeper(&cluster, &cfg);
                }
            }
            _ = refresh.tick() => read_now = true,
            changed = observer.changed() => {
                if let Err(e) = changed {
                    error = e.to_string();
                }
                read_now = true;
            }
            () = tokio::time::sleep_until(wake) => {}
            () = tokio::time::sleep_until(stand_at), if standing => {}
        }
    }
    // Shutdown: the fence closed already (Election::close); stop renewing, hand over.
    drop(keeper);
    let lease = lease_rx.borrow().lease.map(|l| l.id);
    let leading = shown.leading.take();
    if let Some(term) = leading {
        tracing::info!(term, "shutting down: resigning the leadership");
    }
    publish(&tx, Leadership::Unavailable { reason: "shut down: resigned".into() }, &mut shown);
    etcd::resign(&cluster, &name, mine.as_ref().filter(|_| leading.is_some()), lease, timeout).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the fence checks the clock itself: a leader state nobody replaced stops
    /// admitting at its `valid_until`, only its own term is admitted, and a closed election
    /// admits nothing at once.
    #[tokio::test(start_paused = true)]
    async fn the_fence_closes_by_the_clock_and_on_shutdown() {
        let until = Instant::now() + Duration::from_millis(100);
        let (_tx, state) = watch::channel(Leadership::Leader { term: 9, valid_until: until });
        let fence = Fence { state, closed: Arc::new(AtomicBool::new(false)) };
        assert!(fence.may_dispatch(9) && !fence.may_dispatch(8) && !fence.may_dispatch(10));
        assert_eq!(fence.term(), Some(9));
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(fence.may_dispatch(9));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!fence.may_dispatch(9), "closed at valid_until with no new state");
        assert_eq!(fence.term(), None);
        assert!(matches!(fence.state(), Leadership::Unavailable { .. }));

        let (_tx, state) =
            watch::channel(Leadership::Leader { term: 9, valid_until: Instant::now() + Duration::from_secs(5) });
        let closed = Fence { state, closed: Arc::new(AtomicBool::new(false)) };
        assert!(closed.may_dispatch(9));
        closed.closed.store(true, Ordering::SeqCst);
        assert!(!closed.may_dispatch(9), "shut down: closed before the task resigns");
    }
}
