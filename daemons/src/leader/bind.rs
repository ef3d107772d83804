//! [`Bindings`]: which worker a task is bound to, fleet-wide, in etcd, so a task whose repeat
//! would change something again runs on one worker only, whichever router takes it.
//!
//! A router (the leader) binds `(submitter, task key)` to the house it dispatches the task to
//! before the first dispatch: `<prefix>/tasks/<submitter>/<sha256(key) hex>` holding
//! `{"house": ...}`, created only if absent (one etcd transaction). A later submission of the same key,
//! through any router, after a leader change or a restart, finds the binding and goes to that
//! house only, where the worker's exactly-once store (`worker/once.rs`) answers from the first
//! run, or says `maybe_ran` when its process died mid-call. A binding moves only when the
//! attempt at its house ran nothing (it could not be reached before the call was sent, or it
//! was saturated), and only if it still names that house (compare and swap).
//!
//! Bindings live on a lease of [`RETENTION`] (a fresh lease every [`LEASE_EVERY`], so each
//! binding lasts between 6 and 7 days), matching the worker store's default retention:
//! resubmitted after that, a key is new.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;
use uni_wizard::{Error, ErrorCode, House};

use super::etcd::{CallError, Cluster};
use crate::config::etcd::EtcdConfig;

/// How long a binding lasts, at most.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long one lease takes new bindings before a fresh one is granted.
pub const LEASE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The longest value a binding read back may hold (a house name and a task id fit in far less).
const MAX_VALUE: usize = 1024;

/// What a binding key holds: the house alone, so a compare and swap matches whichever router
/// (and task id) made it.
#[derive(Debug, Serialize, Deserialize)]
struct Bound {
    house: House,
}

/// The bindings of one router.
pub struct Bindings {
    config: EtcdConfig,
    state: Mutex<Option<Conn>>,
}

impl std::fmt::Debug for Bindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bindings").field("prefix", &self.config.prefix).finish_non_exhaustive()
    }
}

struct Conn {
    cluster: Cluster,
    /// The lease new bindings go on, and when it was granted.
    lease: Option<(i64, Instant)>,
}

impl Bindings {
    /// The bindings under `config`'s prefix; connects on first use.
    pub fn new(config: EtcdConfig) -> Bindings {
        Bindings { config, state: Mutex::new(None) }
    }

    /// Binds `(submitter, key)` to `house` unless it is bound already: the house it is bound
    /// to, and whether this call made the binding (`false`: an earlier submission did, and may
    /// have run there).
    ///
    /// # Errors
    /// E3014 when etcd cannot be asked (nothing may be dispatched without the binding: this
    /// router cannot tell whether another ran the task).
    pub async fn bind(&self, submitter: House, key: &str, house: House) -> Result<(House, bool), Error> {
        let k = self.key(submitter, key);
        let value = serde_json::to_vec(&Bound { house }).unwrap_or_default();
        let (cluster, lease) = self.cluster_and_lease().await?;
        let txn = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k.clone(), value, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(k, None)]);
        self.commit(&cluster, txn, house).await
    }

    /// Moves the binding of `(submitter, key)` from `from` to `to`, if it still names `from`
    /// (the attempt at `from` ran nothing): the house it is bound to afterwards, and whether
    /// this call moved it.
    ///
    /// # Errors
    /// E3014 when etcd cannot be asked.
    pub async fn rebind(&self, submitter: House, key: &str, from: House, to: House) -> Result<(House, bool), Error> {
        let k = self.key(submitter, key);
        let old = serde_json::to_vec(&Bound { house: from }).unwrap_or_default();
        let new = serde_json::to_vec(&Bound { house: to }).unwrap_or_default();
        let (cluster, lease) = self.cluster_and_lease().await?;
        let txn = Txn::new()
            .when([Compare::value(k.clone(), CompareOp::Equal, old)])
            .and_then([TxnOp::put(k.clone(), new, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(k, None)]);
        self.commit(&cluster, txn, to).await
    }

    /// Runs `txn`: `(house, true)` when its condition held, else the house the key holds and
    /// `false`. Sent to one member at a time: a send that timed out may still have taken
    /// effect, and then the next finds the binding made and answers `false`, which is the safe
    /// reading (the task may have run there).
    async fn commit(&self, cluster: &Cluster, txn: Txn, house: House) -> Result<(House, bool), Error> {
        let timeout = self.config.request_timeout();
        let answer = cluster
            .one_by_one(timeout, "binding a task to a worker", |c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await
            .map_err(|e| unavailable(&e))?;
        if answer.succeeded() {
            return Ok((house, true));
        }
        let held = answer.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        match held.filter(|v| v.len() <= MAX_VALUE).and_then(|v| serde_json::from_slice::<Bound>(&v).ok()) {
            Some(b) => Ok((b.house, false)),
            // Gone between the compare and the read (expired), or not ours to read: do not
            // guess where it ran.
            None => Err(Error::new(
                ErrorCode::NotLeader,
                "the task's binding to a worker could not be read back from etcd; nothing ran, submit again",
            )),
        }
    }

    /// The binding key: the key hashed, so any text makes one path segment.
    fn key(&self, submitter: House, key: &str) -> Vec<u8> {
        let digest = uni_wizard::hash::sha256_hex(key.as_bytes());
        format!("{}/tasks/{submitter}/{digest}", self.config.prefix).into_bytes()
    }

    /// The cluster, and a lease granted less than [`LEASE_EVERY`] ago (granted now otherwise).
    async fn cluster_and_lease(&self) -> Result<(Cluster, i64), Error> {
        let mut state = self.state.lock().await;
        let conn = match state.take() {
            Some(conn) => state.insert(conn),
            None => {
                let cluster = Cluster::connect(&self.config).await.map_err(|e| unavailable(&e))?;
                state.insert(Conn { cluster, lease: None })
            }
        };
        match conn.lease {
            Some((id, at)) if at.elapsed() < LEASE_EVERY => Ok((conn.cluster.clone(), id)),
            _ => {
                let ttl = i64::try_from(RETENTION.as_secs()).unwrap_or(i64::MAX);
                let timeout = self.config.request_timeout();
                let granted = conn
                    .cluster
                    .one_by_one(timeout, "granting a binding lease", |c| async move {
                        c.lease_client().grant(ttl, None).await
                    })
                    .await
                    .map_err(|e| unavailable(&e))?;
                if granted.id() <= 0 {
                    return Err(Error::new(ErrorCode::NotLeader, "etcd granted no lease for task bindings"));
                }
                conn.lease = Some((granted.id(), Instant::now()));
                Ok((conn.cluster.clone(), granted.id()))
            }
        }
    }
}

fn unavailable(e: &CallError) -> Error {
    Error::new(
        ErrorCode::NotLeader,
        format!("cannot bind the task to a worker in etcd ({e}); nothing ran, submit again"),
    )
}
