//! The etcd calls of leadership, each bounded by `request_timeout_ms`: the cluster, a client
//! per member ([`Cluster`]), the lease keeper ([`keep_lease`]), registering a candidacy
//! ([`stand`]), reading and watching the election ([`Observer`]), resigning ([`resign`]).
//! Every answer is checked; none panics.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

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

    /// Whether the call ended "cancelled" with nothing more said.
    fn cancelled(&self) -> bool {
        matches!(&self.why, Why::Etcd(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::Cancelled)
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

/// The cluster as this node reaches it: one client, with its own connection, per member, so a
/// member that hangs (frozen, or cut off without a reset) holds up only what was sent to it.
/// Reads go to every member at once and the first answer counts (each is linearizable, so any
/// is current); changes go to one member at a time, the one that answered last first; the
/// lease is renewed through every member at once ([`keep_lease`]). `require_leader` makes a
/// member cut off from the quorum answer at once ("no leader") instead of leaving a call
/// waiting.
#[derive(Clone)]
pub(crate) struct Cluster {
    members: Arc<[Member]>,
    /// Whether the clients speak TLS (a refused client certificate reads as a bare
    /// "cancelled", which the errors then explain).
    tls: bool,
    /// The member that answered last: changes are sent there first.
    preferred: Arc<AtomicUsize>,
}

struct Member {
    endpoint: String,
    client: Client,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.members.iter().map(|m| &m.endpoint)).finish()
    }
}

impl Cluster {
    /// A client per endpoint of `cfg`. Connections are made lazily and remade by each client,
    /// so this fails only on an endpoint that cannot be used at all.
    ///
    /// # Errors
    /// A [`CallError`] naming the endpoint.
    pub async fn connect(cfg: &EtcdConfig) -> Result<Cluster, CallError> {
        // HTTP/2 pings no more often than etcd's default enforcement
        // (`--grpc-keepalive-min-time`, 5 s) permits; the bounded calls find a dead member sooner.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(cfg.connect_timeout())
            .with_keep_alive(Duration::from_secs(5), cfg.request_timeout())
            .with_require_leader(true);
        match cfg.client_tls() {
            Ok(Some(tls)) => options = options.with_tls(tls),
            Ok(None) => {}
            Err(e) => return Err(CallError::answer("connecting to etcd", e.message)),
        }
        let mut members = Vec::with_capacity(cfg.endpoints.len());
        for endpoint in &cfg.endpoints {
            let what = "connecting to etcd";
            let client =
                bounded(cfg.connect_timeout(), what, Client::connect([endpoint], Some(options.clone()))).await?;
            members.push(Member { endpoint: endpoint.clone(), client });
        }
        if members.is_empty() {
            return Err(CallError::answer("connecting to etcd", "no endpoint"));
        }
        Ok(Cluster { members: members.into(), tls: cfg.tls.is_some(), preferred: Arc::new(AtomicUsize::new(0)) })
    }

    /// How many members there are.
    fn len(&self) -> usize {
        self.members.len()
    }

    /// Sends `call` to every member at once, each bounded by `timeout`: the first answer, and
    /// which member gave it. Slower members' calls are dropped.
    ///
    /// # Errors
    /// Every member failed: the first failure etcd explained, else the first timeout.
    pub async fn any<T, F, Fut>(&self, timeout: Duration, what: &'static str, call: F) -> Result<(usize, T), CallError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut asked: FuturesUnordered<_> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let answer = bounded(timeout, what, call(m.client.clone()));
                async move { (i, answer.await) }
            })
            .collect();
        let mut failed = Failures::default();
        while let Some((i, answer)) = asked.next().await {
            match answer {
                Ok(v) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok((i, v));
                }
                Err(e) => failed.add(e),
            }
        }
        Err(failed.into_error(what, self.tls))
    }

    /// Sends `call` to one member at a time, the one that answered last first, each bounded by
    /// `timeout`, until one answers. For changes: a call that timed out may still take effect
    /// at its member, so only calls that are safe to repeat (conditional transactions, grants,
    /// revocations) are sent this way.
    ///
    /// # Errors
    /// Every member failed: the first failure etcd explained, else the first timeout.
    pub async fn one_by_one<T, F, Fut>(&self, timeout: Duration, what: &'static str, call: F) -> Result<T, CallError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failed = Failures::default();
        for k in 0..self.len() {
            let i = (first + k) % self.len();
            match bounded(timeout, what, call(self.members[i].client.clone())).await {
                Ok(v) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => failed.add(e),
            }
        }
        Err(failed.into_error(what, self.tls))
    }

    /// Member `i`'s client.
    fn client(&self, i: usize) -> Client {
        self.members[i % self.len()].client.clone()
    }
}

/// The failures of one call sent to several members, the most telling kept: a member's own
/// answer ("etcdserver: no leader") says more than a connection that failed, which says more
/// than a timeout.
#[derive(Default)]
struct Failures {
    answered: Option<CallError>,
    connection: Option<CallError>,
    timeout: Option<CallError>,
}

impl Failures {
    fn add(&mut self, e: CallError) {
        let slot = match &e.why {
            Why::Timeout(_) => &mut self.timeout,
            Why::Etcd(etcd_client::Error::GRpcStatus(s))
                if !matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown) =>
            {
                &mut self.answered
            }
            Why::Answer(_) => &mut self.answered,
            Why::Etcd(_) => &mut self.connection,
        };
        slot.get_or_insert(e);
    }

    fn into_error(self, what: &'static str, tls: bool) -> CallError {
        let e = self.answered.or(self.connection).or(self.timeout);
        let Some(mut e) = e else { return CallError::answer(what, "no member to ask") };
        if tls && e.cancelled() {
            // What etcd's refusal of a client certificate looks like from here (TLS 1.3 sends
            // it after the handshake); etcd's own log names it.
            e.why = Why::Answer(format!(
                "{e} (over TLS this is how etcd refusing the client certificate looks: check `etcd.tls.cert` \
                 is signed by etcd's --trusted-ca-file; etcd's log says `failed to verify client certificate`)"
            ));
        }
        e
    }
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

/// Keeps a lease: grants one (one member at a time), then renews it through every member at
/// once, each over a keep-alive stream of its own (requests pipelined, each answer matched to
/// its request's send time, in order; a stream reopened when it breaks or an answer is overdue
/// by the request timeout). The lease counts as renewed at the send time of the latest
/// answered keep-alive, whichever member answered it, so a member that dies or hangs changes
/// nothing while another answers. A new lease is granted only when etcd says the old one is
/// gone. Runs until aborted.
pub(crate) async fn keep_lease(cluster: Cluster, cfg: EtcdConfig, tx: watch::Sender<LeaseState>) {
    let timeout = cfg.request_timeout();
    let mut backoff = Backoff::new(Duration::from_millis(50), cfg.keepalive());
    let mut warned_ttl = false;
    loop {
        let sent = Instant::now();
        let asked = cfg.lease_ttl_secs();
        let granted = cluster
            .one_by_one(timeout, "granting a lease", |c| async move { c.lease_client().grant(asked, None).await })
            .await;
        let granted = granted.and_then(|r| {
            let ttl = u64::try_from(r.ttl()).ok().filter(|t| *t > 0);
            match ttl {
                Some(ttl) if r.id() > 0 && r.error().is_empty() => Ok((r.id(), ttl)),
                _ => Err(CallError::answer("granting a lease", format!("no lease granted ({})", r.error()))),
            }
        });
        let (id, ttl) = match granted {
            Ok(pair) => pair,
            Err(e) => {
                tx.send_replace(LeaseState { lease: None, error: Some(e.to_string()) });
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if ttl > cfg.lease_ttl().as_secs() && !warned_ttl {
            warned_ttl = true;
            tracing::warn!(
                granted_s = ttl,
                asked_ms = cfg.lease_ttl_ms,
                "etcd granted a longer lease than etcd.lease_ttl_ms (its floor is 1.5 x election timeout): \
                 failovers take that long"
            );
        }
        backoff.reset();
        tx.send_replace(LeaseState {
            lease: Some(Lease { id, renewed_at: sent, ttl: Duration::from_secs(ttl) }),
            error: None,
        });
        let why = renew_everywhere(&cluster, &cfg, id, &tx).await;
        tracing::warn!(lease = id, reason = %why, "the leader-election lease is gone at etcd; granting a new one");
        tx.send_replace(LeaseState { lease: None, error: Some(why) });
    }
}

/// What the renewals through every member share: where the lease is published, and which
/// members cannot renew it now.
struct Renewals<'a> {
    tx: &'a watch::Sender<LeaseState>,
    id: i64,
    /// Each member's last failure, while it cannot renew (logged once when it starts failing
    /// and once when it answers again).
    failing: std::sync::Mutex<Vec<Option<String>>>,
}

impl Renewals<'_> {
    /// Member `i` (at `endpoint`) answered a keep-alive sent at `sent` with `ttl`.
    fn renewed(&self, i: usize, endpoint: &str, sent: Instant, ttl: Option<Duration>) {
        let recovered = self.failing.lock().unwrap_or_else(PoisonError::into_inner)[i].take().is_some();
        if recovered {
            tracing::info!(member = endpoint, "renewing the leader-election lease through this etcd member again");
        }
        self.tx.send_modify(|s| {
            if let Some(l) = s.lease.as_mut().filter(|l| l.id == self.id) {
                l.renewed_at = l.renewed_at.max(sent);
                l.ttl = ttl.unwrap_or(l.ttl);
            }
            s.error = None;
        });
    }

    /// Member `i` (at `endpoint`) cannot renew: `why`. Published as the lease's error only
    /// while no member can.
    fn failed(&self, i: usize, endpoint: &str, why: String) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if failing[i].is_none() {
            tracing::warn!(
                member = endpoint,
                reason = %why,
                "cannot renew the leader-election lease through this etcd member; renewing through the others"
            );
        }
        failing[i] = Some(format!("{endpoint}: {why}"));
        if failing.iter().all(Option::is_some) {
            let all = failing.iter().flatten().map(String::as_str).collect::<Vec<_>>().join("; ");
            drop(failing);
            let none = self.tx.borrow().error.is_none();
            if none {
                tracing::warn!(reason = %all, "cannot renew the leader-election lease through any etcd member");
            }
            self.tx.send_modify(|s| s.error = Some(all));
        }
    }
}

/// Renews lease `id` through every member at once until one says it is gone: why.
async fn renew_everywhere(cluster: &Cluster, cfg: &EtcdConfig, id: i64, tx: &watch::Sender<LeaseState>) -> String {
    let renewals = Renewals { tx, id, failing: std::sync::Mutex::new(vec![None; cluster.len()]) };
    let mut members: FuturesUnordered<_> =
        (0..cluster.len()).map(|i| renew_through(cluster, i, cfg, &renewals)).collect();
    members.next().await.unwrap_or_else(|| "no etcd member to renew through".into())
}

/// Renews through member `i`, reopening its stream with a back-off, until it says the lease
/// is gone: why.
async fn renew_through(cluster: &Cluster, i: usize, cfg: &EtcdConfig, renewals: &Renewals<'_>) -> String {
    let endpoint = cluster.members[i].endpoint.as_str();
    let mut backoff = Backoff::new(Duration::from_millis(50), cfg.keepalive());
    loop {
        match renew(cluster.client(i), endpoint, i, cfg, renewals, &mut backoff).await {
            Renewal::Gone(why) => return why,
            Renewal::Broken(why) => {
                renewals.failed(i, endpoint, why);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// How a keep-alive stream ended.
enum Renewal {
    /// etcd says the lease does not exist.
    Gone(String),
    /// The stream broke or fell silent.
    Broken(String),
}

/// Opens a keep-alive stream to one member and renews over it until it ends.
async fn renew(
    client: Client,
    endpoint: &str,
    i: usize,
    cfg: &EtcdConfig,
    renewals: &Renewals<'_>,
    backoff: &mut Backoff,
) -> Renewal {
    let timeout = cfg.request_timeout();
    let sent = Instant::now();
    // Opening sends the first keep-alive and waits for its answer.
    let opened = bounded(timeout, "renewing the lease", client.lease_client().keep_alive(renewals.id)).await;
    let (mut keeper, mut stream) = match opened {
        Ok(pair) => pair,
        Err(e) if e.lease_gone() => return Renewal::Gone(e.to_string()),
        Err(e) => return Renewal::Broken(e.to_string()),
    };
    backoff.reset();
    renewals.renewed(i, endpoint, sent, None);
    let mut pending: VecDeque<Instant> = VecDeque::new();
    let mut tick = tokio::time::interval_at(Instant::now() + cfg.keepalive(), cfg.keepalive());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let overdue = pending.front().map(|s| *s + timeout);
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                if keeper.keep_alive().await.is_err() {
                    return Renewal::Broken("renewing the lease: the keep-alive stream closed".into());
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
                    renewals.renewed(i, endpoint, sent, Some(Duration::from_secs(ttl)));
                }
                Ok(None) => return Renewal::Broken("renewing the lease: etcd closed the keep-alive stream".into()),
                Err(e) => {
                    let e = CallError { what: "renewing the lease", why: Why::Etcd(e) };
                    return if e.lease_gone() { Renewal::Gone(e.to_string()) } else { Renewal::Broken(e.to_string()) };
                }
            },
            _ = tokio::time::sleep_until(overdue.unwrap_or_else(Instant::now)), if overdue.is_some() => {
                let why = format!("renewing the lease: no answer within {} ms", timeout.as_millis());
                return Renewal::Broken(why);
            }
        }
    }
}

/// Registers this node's candidacy under `lease`: puts its key (`<election>/<lease hex>`,
/// value `record`) attached to the lease unless it exists, then reads back its create revision.
pub(crate) async fn stand(
    cluster: &Cluster,
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
    // Safe to send again after a timeout: it puts only if the key does not exist.
    cluster
        .one_by_one(timeout, WHAT, |c| {
            let txn = txn.clone();
            async move { c.kv_client().txn(txn).await }
        })
        .await?;
    let (_, got) = cluster
        .any(timeout, WHAT, |c| {
            let key = key.clone();
            async move { c.kv_client().get(key, None).await }
        })
        .await?;
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
    cluster: &Cluster,
    election: &str,
    mine: Option<&Mine>,
    lease: Option<i64>,
    timeout: Duration,
) {
    if let Some(m) = mine {
        let leader = LeaderKey::new().with_name(election).with_key(m.key.clone()).with_rev(m.rev).with_lease(m.lease);
        let options = ResignOptions::new().with_leader(leader);
        let resigned = cluster
            .one_by_one(timeout, "resigning", |c| {
                let options = options.clone();
                async move { c.election_client().resign(Some(options)).await }
            })
            .await;
        if let Err(e) = resigned {
            tracing::warn!(error = %e, "could not resign; the next router leads when the lease expires");
        }
    }
    if let Some(id) = lease
        && let Err(e) = cluster
            .one_by_one(timeout, "revoking the lease", |c| async move { c.lease_client().revoke(id).await })
            .await
    {
        tracing::warn!(error = %e, "could not revoke the leader-election lease; it expires by itself");
    }
}

/// Reads the election (linearizable) and watches its prefix for changes.
pub(crate) struct Observer {
    cluster: Cluster,
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
    pub fn new(cluster: Cluster, election: &str, timeout: Duration) -> Observer {
        Observer {
            cluster,
            prefix: format!("{election}/").into_bytes(),
            timeout,
            watch: None,
            reopen_at: Instant::now(),
            reopen: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
        }
    }

    /// Reads every candidate, lowest create revision first (from every member at once, the
    /// first answer counting); then, if no watch is open, opens one on the member that
    /// answered, from the read's revision on (a failure to open leaves the periodic reads to
    /// cover, as they cover a watch on a member that hangs).
    ///
    /// # Errors
    /// The failed read.
    pub async fn read(&mut self) -> Result<Seen, CallError> {
        let (seen, revision, member) = self.candidates().await?;
        if self.watch.is_none()
            && Instant::now() >= self.reopen_at
            && let Some(rev) = revision
        {
            let options = WatchOptions::new().with_prefix().with_start_revision(rev + 1);
            let opened = bounded(
                self.timeout,
                "watching the election",
                self.cluster.client(member).watch_client().watch(self.prefix.clone(), Some(options)),
            )
            .await;
            match opened {
                Ok(stream) => self.watch = Some(stream),
                Err(_) => self.ended(),
            }
        }
        Ok(seen)
    }

    /// Reads every candidate, lowest create revision first: what was seen, the revision of the
    /// read and the member that answered.
    async fn candidates(&self) -> Result<(Seen, Option<i64>, usize), CallError> {
        const WHAT: &str = "reading the election";
        let sent = Instant::now();
        let options =
            GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(MAX_CANDIDATES);
        let (member, got) = self
            .cluster
            .any(self.timeout, WHAT, |c| {
                let (prefix, options) = (self.prefix.clone(), options.clone());
                async move { c.kv_client().get(prefix, Some(options)).await }
            })
            .await?;
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
        Ok((Seen { candidates, complete, read_at: sent }, revision, member))
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
    let cluster = Cluster::connect(cfg).await?;
    let observer = Observer::new(cluster.clone(), &cfg.election_name(), cfg.request_timeout());
    let (seen, _, _) = observer.candidates().await?;
    let Some((first, leader)) = seen.first() else { return Ok(None) };
    let lease = first.lease;
    let ttl = cluster
        .any(cfg.request_timeout(), "reading the leader's lease", |c| async move {
            c.lease_client().time_to_live(lease, None).await
        })
        .await
        .ok()
        .map(|(_, t)| (t.granted_ttl(), t.ttl()));
    Ok(Some((leader, ttl)))
}
