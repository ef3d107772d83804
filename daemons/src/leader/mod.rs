//! Router leadership through etcd (issue 14): which router leads, under which term, and until
//! when it may dispatch. Plain Rust over the etcd client; it knows nothing of the router or
//! the worker, which plug it in (see [`crate::routing`]'s "Leadership").
//!
//! # API
//!
//! | item | for | does |
//! |---|---|---|
//! | [`Election`] | a router | campaigns in the background and publishes its [`Leadership`] on a watch channel; [`Election::shutdown`] (or drop) resigns |
//! | [`Fence`] | a router's dispatch path | [`Fence::may_dispatch`]: true only while this node leads under that term and its lease cannot have expired |
//! | [`Bindings`] | the leading router | binds a task whose repeat would change something to one worker, fleet-wide (`<prefix>/tasks/...`), so whichever router takes a resubmission sends it to that worker only |
//! | [`LeaderWatch`] | a worker | watches the election and publishes the current [`LeaderInfo`], `None` when it cannot know (fail closed) |
//! | [`Leadership`], [`LeaderInfo`] | both | the states, and who leads under which term |
//!
//! # The election
//!
//! It is etcd's own election protocol (the one `etcdctl elect` and etcd's `Election` service
//! run), spoken with bounded calls: each router grants a lease of `etcd.lease_ttl_ms`, puts
//! its candidate key `<prefix>/router/leader/<lease id in hex>` (value: the JSON
//! `{house, node, endpoint}`) attached to the lease if it is not there yet, and the candidate
//! whose key has the lowest create revision leads. That create revision is the **term**, the
//! fencing token: a new key always gets a higher revision, so a later leader's term is
//! strictly greater. Everyone learns the leader from a linearizable read of the first key
//! under the election prefix, done again on every change a watch of the prefix reports and
//! every `keepalive_ms` besides (the read, not the watch, proves the view is current: a watch
//! of a member cut off from the quorum only falls silent). etcd's `Campaign` call would be
//! the same protocol in one call, but it waits unbounded and deletes the key when abandoned;
//! here every call is bounded by `request_timeout_ms`, and the wait is the watch.
//!
//! # Self-fencing
//!
//! A lease expires at etcd TTL after etcd took its last renewal, which is after the leader
//! sent it; so the leader's lease lives at least until `send time of the last answered
//! keep-alive + granted TTL`. The leader may dispatch until that instant less
//! `fence_margin_ms` (and while its last read showing it first is younger than the TTL):
//! [`Leadership::Leader`]'s `valid_until`, which [`Fence::may_dispatch`] checks against the
//! clock itself, so a stalled task cannot keep a stale leader dispatching. When the deadline
//! passes, the leader steps down ([`Leadership::Unavailable`], "lease not renewed ...",
//! logged once) and keeps renewing: if etcd still holds the lease (a quorum that came back
//! before it expired, a lost member, a slow moment), its key never went away, nobody else can
//! have led meanwhile, and it leads again under the **same term**; if the lease is gone, it
//! grants a new one and campaigns again: a new key, a **strictly greater term**. A new leader
//! can only start once the old key is gone, so the old one stopped `fence_margin_ms` before.
//!
//! # Failures
//!
//! - etcd down at start, or quorum lost: [`Leadership::Unavailable`] with the reason (the last
//!   error), retried with a bounded back-off; nothing panics on any etcd answer.
//! - One member of three lost: the client reaches the others; renewals keep the same lease,
//!   so the same leader keeps the same term.
//! - A [`LeaderWatch`] whose last successful read is older than the lease TTL publishes
//!   `None` ([`LeaderWatch::current`] checks the age itself), so a worker refuses dispatches.
//! - Graceful shutdown: the fence closes first, then the key is resigned and the lease
//!   revoked, so the next candidate leads at once instead of after the TTL.
//!
//! # Metrics
//!
//! `uw_router_leader` (1 while this node leads, else 0) and `uw_router_leader_changes_total`
//! (leader terms this node has seen, its own included), set by [`Election`] only.
//!
//! # Layout
//!
//! - `decide.rs`: the decisions, plain functions of what etcd last said and the clock.
//! - `etcd.rs`: the etcd calls, each bounded: connect, the lease keeper, the reads and the watch.
//! - `election.rs`: [`Election`] and [`Fence`]; `watch.rs`: [`LeaderWatch`].

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use uni_wizard::House;

mod bind;
mod decide;
mod election;
mod etcd;
mod watch;

pub use bind::Bindings;
pub use election::{Election, Fence};
pub use watch::LeaderWatch;

/// Who leads: the house, its node, the gRPC endpoint it advertised, and its term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// The leader's house.
    pub house: House,
    /// The leader's node name.
    pub node: String,
    /// The gRPC endpoint the leader advertised (`host:port`), where followers send clients.
    pub endpoint: String,
    /// The term: the create revision of the leader's election key, the fencing token.
    pub term: u64,
}

/// What an [`Election`] knows about leadership at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// Not leading, and no current leader known: etcd unreachable, quorum lost, the lease not
    /// renewed in time, no leader elected yet, or shutting down. The reason says which.
    Unavailable {
        /// Why, in one sentence (the last etcd error, or the state).
        reason: String,
    },
    /// Another node leads.
    Follower {
        /// The leader.
        leader: LeaderInfo,
    },
    /// This node leads under `term` and may dispatch until `valid_until`.
    Leader {
        /// The term (fencing token).
        term: u64,
        /// The instant the fence closes unless a renewal moves it on.
        valid_until: Instant,
    },
}

impl Leadership {
    /// The state at `now`: a leader whose `valid_until` has passed is not one any more.
    pub fn at(&self, now: Instant) -> Leadership {
        match self {
            Leadership::Leader { valid_until, .. } if now >= *valid_until => {
                Leadership::Unavailable { reason: decide::NOT_RENEWED.into() }
            }
            other => other.clone(),
        }
    }

    /// The current term, led or followed.
    pub fn term(&self) -> Option<u64> {
        match self {
            Leadership::Unavailable { .. } => None,
            Leadership::Follower { leader } => Some(leader.term),
            Leadership::Leader { term, .. } => Some(*term),
        }
    }

    /// Whether this node leads (at the moment the state was published).
    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader { .. })
    }
}

/// A router's leadership as its `/health` shows it: `state` (`leader`, `follower`,
/// `unavailable`), the term, the leader followed, how long the fence stays open, or why no
/// router leads.
pub fn health_json(state: &Leadership) -> serde_json::Value {
    match state {
        Leadership::Leader { term, valid_until } => serde_json::json!({
            "state": "leader",
            "term": term,
            "fence_open_ms": valid_until.saturating_duration_since(Instant::now()).as_millis() as u64,
        }),
        Leadership::Follower { leader } => serde_json::json!({
            "state": "follower",
            "term": leader.term,
            "leader_house": leader.house,
            "leader_node": leader.node,
            "leader_endpoint": leader.endpoint,
        }),
        Leadership::Unavailable { reason } => serde_json::json!({ "state": "unavailable", "reason": reason }),
    }
}

/// What one read of the election shows an operator (`uni-wizard health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// Who leads, if anyone (keys no router makes are passed over, as routers do).
    pub leader: Option<LeaderInfo>,
    /// The leader's lease: the TTL etcd granted and what is left of it, whole seconds (its age
    /// is their difference), when etcd answered for the lease.
    pub lease_granted_s: Option<i64>,
    /// See `lease_granted_s`.
    pub lease_left_s: Option<i64>,
}

/// Reads, once and linearizably, who leads the election `config` names, with the leader's
/// lease.
///
/// # Errors
/// Why etcd could not be read (unreachable, quorum lost), in one line.
pub async fn observe_once(config: &crate::config::etcd::EtcdConfig) -> Result<Observed, String> {
    let read = etcd::read_once(config).await.map_err(|e| e.to_string())?;
    Ok(match read {
        None => Observed { leader: None, lease_granted_s: None, lease_left_s: None },
        Some((leader, lease)) => {
            Observed { leader: Some(leader), lease_granted_s: lease.map(|l| l.0), lease_left_s: lease.map(|l| l.1) }
        }
    })
}

/// Registers the help text of the leadership metrics (called from `serve::describe_metrics`).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("uw_router_leader", "Whether this router leads the fleet (1) or not (0)");
    describe_counter!("uw_router_leader_changes_total", "Leader terms this router has seen, its own included");
}
