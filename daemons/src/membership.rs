//! The membership view: what is known of each house (up, down, not probed yet, its capacity),
//! shared by the health prober ([`crate::health`], which writes it) and the router (which
//! routes by it and reports a dispatch that could not reach a worker,
//! [`Membership::report_unreachable`]). Plain data behind a lock; it imports no module of this
//! crate.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use serde::Serialize;
use uni_wizard::House;

/// What is known of one house.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// `up`, `down` or `unknown` (not probed yet).
    pub state: NodeState,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// Why the last probe failed; empty after a success.
    pub last_error: String,
    /// Node name the worker reported.
    pub node: String,
    /// Most calls the worker runs at once.
    pub max_concurrency: u32,
    /// Calls running now.
    pub in_flight: u32,
    /// Calls waiting for a slot.
    pub queued: u32,
    /// Tools whose breakers are closed.
    pub healthy_tools: usize,
}

/// Up, down or not probed yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Not probed yet: routable, after the houses known to be up.
    #[default]
    Unknown,
    /// Answered its last probe.
    Up,
    /// Failed `down_after` probes in a row, or could not be reached by a dispatch.
    Down,
}

/// The membership view, shared by the prober and the router.
#[derive(Debug, Clone)]
pub struct Membership {
    inner: Arc<RwLock<BTreeMap<House, NodeStatus>>>,
    /// Counts the houses marked down, so a dispatch can wait for its own to be.
    downs: Arc<watch::Sender<u64>>,
}

impl Default for Membership {
    fn default() -> Membership {
        Membership { inner: Arc::default(), downs: Arc::new(watch::channel(0).0) }
    }
}

impl Membership {
    /// Resolves once `house` is marked down (at once if it is): a dispatch in flight to a house
    /// health gave up on (a hung node answers no probe) need not wait out its deadline.
    pub async fn until_down(&self, house: House) {
        let mut downs = self.downs.subscribe();
        while self.status(house).state != NodeState::Down {
            if downs.changed().await.is_err() {
                // The view is gone with the router; nothing will mark it down.
                return std::future::pending().await;
            }
        }
    }

    /// The status of `house` now.
    pub fn status(&self, house: House) -> NodeStatus {
        self.read().get(&house).cloned().unwrap_or_default()
    }

    /// Every house's status.
    pub fn all(&self) -> BTreeMap<House, NodeStatus> {
        self.read().clone()
    }

    /// Records a successful probe.
    pub fn report_up(&self, house: House, capacity: Option<&uni_wizard_proto::v1::CapacityResponse>) {
        let mut map = self.write();
        let s = map.entry(house).or_default();
        if s.state != NodeState::Up {
            tracing::info!(%house, "house is up");
        }
        s.state = NodeState::Up;
        s.consecutive_failures = 0;
        s.last_error.clear();
        if let Some(c) = capacity {
            s.node = c.node.clone();
            s.max_concurrency = c.max_concurrency;
            s.in_flight = c.in_flight;
            s.queued = c.queued;
            s.healthy_tools = c.healthy_tools.len();
        }
        metrics::gauge!("uw_peer_up", "house" => house.as_str()).set(1.0);
    }

    /// Records a failed probe; `down_after` in a row mark the house down.
    pub fn report_failure(&self, house: House, down_after: u32, why: String) {
        let mut map = self.write();
        let s = map.entry(house).or_default();
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        s.last_error = why;
        if s.consecutive_failures >= down_after && s.state != NodeState::Down {
            s.state = NodeState::Down;
            tracing::warn!(%house, error = %s.last_error, "house is down");
            metrics::gauge!("uw_peer_up", "house" => house.as_str()).set(0.0);
            self.downs.send_modify(|n| *n += 1);
        }
    }

    /// A dispatch could not reach `house`: down now, until a probe succeeds.
    pub fn report_unreachable(&self, house: House, why: String) {
        self.report_failure(house, 1, why);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<House, NodeStatus>> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<House, NodeStatus>> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves `down_after` failures in a row mark a house down, an unreachable dispatch does so
    /// at once, and one success brings it back.
    #[test]
    fn failures_mark_down_and_success_marks_up() {
        let m = Membership::default();
        assert_eq!(m.status(House::Ezra).state, NodeState::Unknown);
        m.report_failure(House::Ezra, 2, "refused".into());
        assert_ne!(m.status(House::Ezra).state, NodeState::Down);
        m.report_failure(House::Ezra, 2, "refused".into());
        assert_eq!(m.status(House::Ezra).state, NodeState::Down);
        m.report_up(House::Ezra, None);
        assert_eq!(m.status(House::Ezra).state, NodeState::Up);
        m.report_unreachable(House::Ezra, "connection reset".into());
        assert_eq!(m.status(House::Ezra).state, NodeState::Down);
    }

    /// Proves `until_down` waits while the house is up, through other houses going down, and
    /// resolves when it is marked down (and at once when it already is).
    #[tokio::test]
    async fn until_down_resolves_when_the_house_goes_down() {
        let m = Membership::default();
        m.report_up(House::Ezra, None);
        let waiting = tokio::spawn({
            let m = m.clone();
            async move { m.until_down(House::Ezra).await }
        });
        m.report_unreachable(House::Bezalel, "gone".into());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "another house's fall ended the wait");
        m.report_failure(House::Ezra, 1, "probe timed out".into());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.expect("resolved").expect("joined");
        tokio::time::timeout(std::time::Duration::from_secs(5), m.until_down(House::Ezra)).await.expect("at once");
    }
}
