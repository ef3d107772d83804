//! The etcd calls of leadership, each bounded by `request_timeout_ms`: connecting, the lease
//! keeper ([`keep_lease`]), registering a candidacy ([`stand`]), reading and watching the
//! election ([`Observer`]), resigning ([`resign`]). Every answer is checked; none panics.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaderKey, PutOptions, ResignOptions, SortOrder,
    SortTarget, Txn, TxnOp, WatchOptions, WatchStream,
};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::LeaderInfo;
use super::decide::{Candidate, Lease, Mine, Seen, candidate_key};
use crate::backoff::Backoff;
use crate::config::etcd::EtcdConfig;

/// The most candidates one read returns (a fleet has two or three routers).
const MAX_CANDIDATES: i64 = 64;

/// The longest etcd message an error repeats.
const MAX_MESSAGE: usize = 300;

/// A failed call: what was being done and why it failed.
#[derive(Debug)]
pub(crate) struct CallError {
    what: &'static str,
    why: Why,
}

#[derive(Debug)]
enum Why {
    /// No answer within the request timeout.
    Timeout(Duration),
    /// etcd (or the connection) answered with an error.
    Etcd(etcd_client::Error),
    /// An answer that does not hold what it must.
    Answer(String),
}

impl CallError {
    fn answer(what: &'static str, problem: impl Into<String>) -> CallError {
        CallError { what, why: Why::Answer(problem.into()) }
    }

    /// Whether etcd says the lease does not exist (expired or revoked).
    pub fn lease_gone(&self) -> bool {
        match &self.why {
            Why::Etcd(etcd_client::Error::LeaseKeepAliveError(m)) => m.contains("not found"),
            Why::Etcd(etcd_client::Error::GRpcStatus(s)) => s.message().contains("lease not found"),
            _ => false,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match &self.why {
            Why::Timeout(d) => format!("no answer within {} ms", d.as_millis()),
            Why::Etcd(etcd_client::Error::GRpcStatus(s)) => format!("{:?}: {}", s.code(), s.message()),
            Why::Etcd(e) => e.to_string(),
            Why::Answer(p) => p.clone(),
        };
        let why: String = why.chars().take(MAX_MESSAGE).collect();
        write!(f, "{}: {why}", self.what)
    }
}

/// Runs one call, bounded by `timeout`.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    what: &'static str,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CallError { what, why: Why::Etcd(e) }),
        Err(_) => Err(CallError { what, why: Why::Timeout(timeout) }),
    }
}

/// A client of the cluster. The connection itself is made lazily, per member, by the client's
/// balanced channel; `require_leader` makes a member cut off from the quorum answer at once
/// ("no leader") instead of leaving a call or a watch waiting.
///
/// # Errors
/// A [`CallError`] when the endpoints cannot be used.
pub(crate) async fn connect(cfg: &EtcdConfig) -> Result<Client, CallError> {
    // HTTP/2 pings no more often than etcd's default enforcement (`--grpc-keepalive-min-time`,
    // 5 s) permits; the bounded calls find a dead member sooner.
    let options = ConnectOptions::new()
        .with_connect_timeout(cfg.connect_timeout())
        .with_keep_alive(Duration::from_secs(5), cfg.request_timeout())
        .with_require_leader(true);
    bounded(cfg.connect_timeout(), "connecting to etcd", Client::connect(cfg.endpoints.as_slice(), Some(options))).await
}

/// What the lease keeper publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaseState {
    /// The lease held, as last renewed; `None` before the first grant and once etcd said it
    /// is gone.
    pub lease: Option<Lease>,
    /// The last failure, if the last call failed.
    pub error: Option<String>,
}

/// Keeps a lease: grants one, renews it every `keepalive_ms` over one keep-alive stream
/// (requests pipelined, each answer matched to its request's send time, in order), reopens the
/// stream when it breaks or an answer is overdue by the request timeout, and grants a new
/// lease only when etcd says the old one is gone. Runs until aborted.
pub(crate) async fn keep_lease(client: Client, cfg: EtcdConfig, tx: watch::Sender<LeaseState>) {
    let timeout = cfg.request_timeout();
    let mut backoff = Backoff::new(Duration::from_millis(50), cfg.keepalive());
    let mut held: Option<Lease> = None;
    let mut warned_ttl = false;
    loop {
        let Some(lease) = held else {
            let sent = Instant::now();
            let granted =
                bounded(timeout, "granting a lease", client.lease_client().grant(cfg.lease_ttl_secs(), None)).await;
            let granted = granted.and_then(|r| {
                let ttl = u64::try_from(r.ttl()).ok().filter(|t| *t > 0);
                match ttl {
                    Some(ttl) if r.id() > 0 && r.error().is_empty() => Ok((r.id(), ttl)),
                    _ => Err(CallError::answer("granting a lease", format!("no lease granted ({})", r.error()))),
                }
            });
            match granted {
                Ok((id, ttl)) => {
                    if ttl > cfg.lease_ttl().as_secs() && !warned_ttl {
                        warned_ttl = true;
                        tracing::warn!(
                            granted_s = ttl,
                            asked_ms = cfg.lease_ttl_ms,
                            "etcd granted a longer lease than etcd.lease_ttl_ms (its floor is 1.5 x election timeout): \
                             failovers take that long"
                        );
                    }
                    held = Some(Lease { id, renewed_at: sent, ttl: Duration::from_secs(ttl) });
                    backoff.reset();
                    tx.send_replace(LeaseState { lease: held, error: None });
                }
                Err(e) => {
                    tx.send_replace(LeaseState { lease: None, error: Some(e.to_string()) });
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
            continue;
        };
        match renew(&client, &cfg, lease, &tx, &mut backoff).await {
            Renewal::Gone(why) => {
                tracing::warn!(lease = lease.id, reason = %why, "the leader-election lease is gone at etcd; granting a new one");
                held = None;
                tx.send_replace(LeaseState { lease: None, error: Some(why) });
            }
            Renewal::Broken(why, last) => {
                held = Some(last);
                tx.send_replace(LeaseState { lease: held, error: Some(why) });
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// How a keep-alive stream ended.
enum Renewal {
    /// etcd says the lease does not exist.
    Gone(String),
    /// The stream broke or fell silent; the lease as last renewed.
    Broken(String, Lease),
}

/// Opens a keep-alive stream for `lease` and renews over it until it ends.
async fn renew(
    client: &Client,
    cfg: &EtcdConfig,
    mut lease: Lease,
    tx: &watch::Sender<LeaseState>,
    backoff: &mut Backoff,
) -> Renewal {
    let timeout = cfg.request_timeout();
    let sent = Instant::now();
    // Opening sends the first keep-alive and waits for its answer.
    let opened = bounded(timeout, "renewing the lease", client.lease_client().keep_alive(lease.id)).await;
    let (mut keeper, mut stream) = match opened {
        Ok(pair) => pair,
        Err(e) if e.lease_gone() => return Renewal::Gone(e.to_string()),
        Err(e) => return Renewal::Broken(e.to_string(), lease),
    };
    lease.renewed_at = lease.renewed_at.max(sent);
    backoff.reset();
    tx.send_replace(LeaseState { lease: Some(lease), error: None });
    let mut pending: VecDeque<Instant> = VecDeque::new();
    let mut tick = tokio::time::interval_at(Instant::now() + cfg.keepalive(), cfg.keepalive());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let overdue = pending.front().map(|s| *s + timeout);
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                if keeper.keep_alive().await.is_err() {
                    return Renewal::Broken("renewing the lease: the keep-alive stream closed".into(), lease);
                }
                pending.push_back(now);
            }
            answer = stream.message() => match answer {
                Ok(Some(r)) => {
                    // Answers come in request order; one without a request is ignored.
                    let Some(sent) = pending.pop_front() else { continue };
                    let Some(ttl) = u64::try_from(r.ttl()).ok().filter(|t| *t > 0) else {
                        return Renewal::Gone("renewing the lease: etcd says it expired".into());
                    };
                    lease.renewed_at = lease.renewed_at.max(sent);
                    lease.ttl = Duration::from_secs(ttl);
                    tx.send_replace(LeaseState { lease: Some(lease), error: None });
                }
                Ok(None) => return Renewal::Broken("renewing the lease: etcd closed the keep-alive stream".into(), lease),
                Err(e) => {
                    let e = CallError { what: "renewing the lease", why: Why::Etcd(e) };
                    return if e.lease_gone() { Renewal::Gone(e.to_string()) } else { Renewal::Broken(e.to_string(), lease) };
                }
            },
            _ = tokio::time::sleep_until(overdue.unwrap_or_else(Instant::now)), if overdue.is_some() => {
                let why = format!("renewing the lease: no answer within {} ms", timeout.as_millis());
                return Renewal::Broken(why, lease);
            }
        }
    }
}

/// Registers this node's candidacy under `lease`: puts its key (`<election>/<lease hex>`,
/// value `record`) attached to the lease unless it exists, then reads back its create revision.
pub(crate) async fn stand(
    client: &Client,
    election: &str,
    lease: i64,
    record: &[u8],
    timeout: Duration,
) -> Result<Mine, CallError> {
    const WHAT: &str = "registering the candidacy";
    let key = candidate_key(election, lease);
    let txn = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
        key.clone(),
        record.to_vec(),
        Some(PutOptions::new().with_lease(lease)),
    )]);
    bounded(timeout, WHAT, client.kv_client().txn(txn)).await?;
    let got = bounded(timeout, WHAT, client.kv_client().get(key.clone(), None)).await?;
    let Some(kv) = got.kvs().first() else {
        return Err(CallError::answer(WHAT, "the key vanished at once (the lease expired?)"));
    };
    if kv.lease() != lease || kv.create_revision() <= 0 {
        return Err(CallError::answer(WHAT, "the key is held under another lease"));
    }
    Ok(Mine { key, rev: kv.create_revision(), lease })
}

/// Gives up leadership: deletes the key if it is still the one of that term (etcd's `Resign`),
/// then revokes the lease, each bounded. Failures are logged; the lease then expires by itself.
pub(crate) async fn resign(
    client: &Client,
    election: &str,
    mine: Option<&Mine>,
    lease: Option<i64>,
    timeout: Duration,
) {
    if let Some(m) = mine {
        let leader = LeaderKey::new().with_name(election).with_key(m.key.clone()).with_rev(m.rev).with_lease(m.lease);
        let options = ResignOptions::new().with_leader(leader);
        if let Err(e) = bounded(timeout, "resigning", client.election_client().resign(Some(options))).await {
            tracing::warn!(error = %e, "could not resign; the next router leads when the lease expires");
        }
    }
    if let Some(id) = lease
        && let Err(e) = bounded(timeout, "revoking the lease", client.lease_client().revoke(id)).await
    {
        tracing::warn!(error = %e, "could not revoke the leader-election lease; it expires by itself");
    }
}

/// Reads the election (linearizable) and watches its prefix for changes.
pub(crate) struct Observer {
    client: Client,
    prefix: Vec<u8>,
    timeout: Duration,
    watch: Option<WatchStream>,
    /// No new watch before this (after one ended: a member that keeps cancelling watches is
    /// not asked again at network speed; the periodic reads cover the gap).
    reopen_at: Instant,
    reopen: Backoff,
}

impl Observer {
    /// An observer of `election`'s candidates (`<election>/...`).
    pub fn new(client: Client, election: &str, timeout: Duration) -> Observer {
        Observer {
            client,
            prefix: format!("{election}/").into_bytes(),
            timeout,
            watch: None,
            reopen_at: Instant::now(),
            reopen: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
        }
    }

    /// Reads every candidate, lowest create revision first; then, if no watch is open, opens
    /// one from the read's revision on (a failure to open leaves the periodic reads to cover).
    ///
    /// # Errors
    /// The failed read.
    pub async fn read(&mut self) -> Result<Seen, CallError> {
        let (seen, revision) = self.candidates().await?;
        if self.watch.is_none()
            && let Some(rev) = revision
        {
            let options = WatchOptions::new().with_prefix().with_start_revision(rev + 1);
            let opened = bounded(
                self.timeout,
                "watching the election",
                self.client.watch_client().watch(self.prefix.clone(), Some(options)),
            )
            .await;
            self.watch = opened.ok();
        }
        Ok(seen)
    }

    /// Reads every candidate, lowest create revision first, and the revision of the read.
    async fn candidates(&self) -> Result<(Seen, Option<i64>), CallError> {
        const WHAT: &str = "reading the election";
        let sent = Instant::now();
        let options =
            GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(MAX_CANDIDATES);
        let got = bounded(self.timeout, WHAT, self.client.kv_client().get(self.prefix.clone(), Some(options))).await?;
        let revision = got.header().map(|h| h.revision()).filter(|r| *r > 0);
        let mut candidates: Vec<Candidate> = got
            .kvs()
            .iter()
            .map(|kv| Candidate {
                key: kv.key().to_vec(),
                rev: kv.create_revision(),
                lease: kv.lease(),
                value: kv.value().to_vec(),
            })
            .collect();
        // etcd sorts already; sorting again costs nothing and does not trust it to.
        candidates.sort_by_key(|c| c.rev);
        let complete = !got.more() && got.count() <= MAX_CANDIDATES;
        Ok((Seen { candidates, complete, read_at: sent }, revision))
    }

    /// Waits until the watch reports a change (`Ok`) or ends (`Err`, and the next
    /// [`read`](Observer::read) opens a new one). Pending forever while no watch is open.
    /// Cancel-safe.
    ///
    /// # Errors
    /// Why the watch ended.
    pub async fn changed(&mut self) -> Result<(), CallError> {
        const WHAT: &str = "watching the election";
        let Some(stream) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            match stream.message().await {
                Ok(Some(r)) if r.canceled() => {
                    self.ended();
                    let reason: String = r.cancel_reason().chars().take(MAX_MESSAGE).collect();
                    return Err(CallError::answer(WHAT, format!("etcd cancelled the watch ({reason})")));
                }
                Ok(Some(r)) if !r.events().is_empty() => {
                    self.reopen.reset();
                    return Ok(());
                }
                // Created, or a progress notification: nothing changed.
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.ended();
                    return Err(CallError::answer(WHAT, "etcd closed the watch"));
                }
                Err(e) => {
                    self.ended();
                    return Err(CallError { what: WHAT, why: Why::Etcd(e) });
                }
            }
        }
    }

    /// The watch ended or could not be opened: the next one waits a doubling delay.
    fn ended(&mut self) {
        self.watch = None;
        self.reopen_at = Instant::now() + self.reopen.next_delay();
    }
}

/// What one read of the election shows an operator: the leader, if any, and its lease's
/// granted and remaining TTL (whole seconds, as etcd keeps them).
pub(crate) async fn read_once(cfg: &EtcdConfig) -> Result<Option<(LeaderInfo, Option<(i64, i64)>)>, CallError> {
    // A member that is down can take one attempt's connection; the next goes to another.
    let mut tries = 0;
    loop {
        tries += 1;
        match read_once_from(cfg).await {
            Err(_) if tries < 3 => tokio::time::sleep(Duration::from_millis(100)).await,
            done => return done,
        }
    }
}

async fn read_once_from(cfg: &EtcdConfig) -> Result<Option<(LeaderInfo, Option<(i64, i64)>)>, CallError> {
    let client = connect(cfg).await?;
    let observer = Observer::new(client.clone(), &cfg.election_name(), cfg.request_timeout());
    let (seen, _) = observer.candidates().await?;
    let Some((first, leader)) = seen.first() else { return Ok(None) };
    let ttl = bounded(
        cfg.request_timeout(),
        "reading the leader's lease",
        client.lease_client().time_to_live(first.lease, None),
    )
    .await
    .ok()
    .map(|t| (t.granted_ttl(), t.ttl()));
    Ok(Some((leader, ttl)))
}
