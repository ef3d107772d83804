//! The worker daemon: runs dispatched tool calls through the node's [`Harness`].
//!
//! A thin gRPC handler: validate and convert the request (a missing call or tool, a house or
//! mode number that names none: E1xxx, `INVALID_ARGUMENT`, before any decision about the
//! caller, who is authenticated by then), authorize the dispatcher (one of
//! `worker.dispatchers`), check the call is for this worker's house and the fencing token
//! (with etcd: the dispatcher must be the leader etcd shows, under its term, whatever the
//! request claims; without: 0, the single router's), take a slot of the bounded pool, call
//! the library, convert back. A refused or failed call is an `ErrorDetail` in the response
//! (the RPC worked); only a malformed request, auth, fencing and a wrong house are gRPC errors.
//!
//! A call with an idempotency key goes through the exactly-once store ([`once`]) after the
//! fencing check: it runs only when the store has durably marked it running, in a task of its
//! own (so a caller that hangs up or a passed deadline cannot cut it between the mark and the
//! answer), and a repeat is answered from the store without running. Calls without a key
//! never touch the store.

pub mod once;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use uni_wizard::audit::AuditStore;
use uni_wizard::tools::Registry;
use uni_wizard::{Approver, Error, ErrorCode, Harness, House, Mode};
use uni_wizard_proto::v1::worker_server::Worker;
use uni_wizard_proto::v1::{CapacityRequest, CapacityResponse, ExecuteRequest, ExecuteResponse, execute_response};

use crate::auth;
use crate::config::DaemonConfig;
use crate::leader::{LeaderInfo, LeaderWatch};
use crate::live::Live;
use crate::wire;

/// The Worker service of one node.
#[derive(Clone)]
pub struct WorkerService {
    inner: Arc<Inner>,
}

struct Inner {
    live: Live,
    house: House,
    node: String,
    /// One harness for every mode: one executor, one breaker map, one concurrency limit.
    harness: Harness,
    pool: Pool,
    in_flight: AtomicU32,
    queued: AtomicU32,
    fence: Fencing,
    /// Keyed calls: run at most once per (submitter, key), `<home>/once.db`.
    once: Arc<once::OnceStore>,
}

/// How the worker tells the current dispatcher from a deposed or forged one.
enum Fencing {
    /// No etcd: a single router, whose term is always 0; any other token is refused (a router
    /// that thinks it leads through etcd while this worker has no `etcd:` section, or a
    /// forgery), so no token can raise a floor that locks the router out.
    Single,
    /// The leader and term etcd shows; a request's token is checked against them, never
    /// believed.
    Leader(Arc<LeaderWatch>),
}

/// How long a dispatch whose term is ahead of this worker's view of etcd waits for the view
/// to catch up (a leader elected a moment ago) before it is refused.
const CATCH_UP: Duration = Duration::from_secs(1);

impl std::fmt::Debug for WorkerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerService").field("house", &self.inner.house).finish_non_exhaustive()
    }
}

impl WorkerService {
    /// The worker's library config: `worker.library` with the node name filled in.
    pub fn library(config: &DaemonConfig) -> uni_wizard::Config {
        let mut library = config.worker.library.clone();
        if library.node.is_none() {
            library.node = Some(config.node_name());
        }
        library
    }

    /// Opens the node's audit store, `<home>/audit.db` (provenance and spent token nonces).
    ///
    /// # Errors
    /// E4002 when the state directory cannot be created, E3008 when the store cannot open.
    pub fn open_store(config: &DaemonConfig) -> Result<Arc<AuditStore>, Error> {
        let home = config.home();
        std::fs::create_dir_all(&home).map_err(|e| {
            Error::new(ErrorCode::HomeUnavailable, format!("cannot create state directory {}: {e}", home.display()))
        })?;
        Ok(Arc::new(AuditStore::open(home.join("audit.db"))?))
    }

    /// A worker for the node `live` describes, with every built-in tool, provenance in
    /// `store` and approvals from `approver`.
    ///
    /// # Errors
    /// E4xxx when the harness cannot be built (roots, state directory, pattern DB).
    pub fn new(live: Live, store: Arc<AuditStore>, approver: Arc<dyn Approver>) -> Result<WorkerService, Error> {
        WorkerService::with_registry(live, store, approver, Registry::builtin()?)
    }

    /// As [`WorkerService::new`] with a chosen set of tools (benches add a no-op tool).
    ///
    /// # Errors
    /// As [`WorkerService::new`].
    pub fn with_registry(
        live: Live,
        store: Arc<AuditStore>,
        approver: Arc<dyn Approver>,
        registry: Registry,
    ) -> Result<WorkerService, Error> {
        WorkerService::observed(live, store, approver, registry, None)
    }

    /// As [`WorkerService::with_registry`], telling `observer` (telemetry) about every call.
    ///
    /// # Errors
    /// As [`WorkerService::new`].
    pub fn observed(
        live: Live,
        store: Arc<AuditStore>,
        approver: Arc<dyn Approver>,
        registry: Registry,
        observer: Option<Arc<dyn uni_wizard::Observer>>,
    ) -> Result<WorkerService, Error> {
        let config: Arc<DaemonConfig> = live.get();
        let library = WorkerService::library(&config);
        let home = library.home_dir();
        let intelligence = if library.intelligence.enabled {
            let path = library.intelligence.db_path.clone().unwrap_or_else(|| home.join("patterns.db"));
            Some(uni_wizard::Intelligence::open(&library.intelligence, path, &library.node_name())?)
        } else {
            None
        };
        // Sovereign calls are always audited; the others too unless `audit_all_modes` is off.
        let mut b = Harness::builder()
            .house(config.house)
            .mode(config.worker.default_mode)
            .config(library)
            .registry(registry)
            .provenance(store)
            .approver(approver);
        if !config.worker.audit_all_modes {
            let memory: Arc<dyn uni_wizard::provenance::ProvenanceLog> =
                Arc::new(uni_wizard::provenance::MemoryLog::default());
            b = b.provenance_for(Mode::Simple, memory.clone()).provenance_for(Mode::Intelligent, memory);
        }
        if let Some(i) = intelligence {
            b = b.intelligence(i);
        }
        if let Some(o) = observer {
            b = b.observer(o);
        }
        let once = Arc::new(once::OnceStore::open(&config.home().join(once::FILE), &config.worker.once)?);
        Ok(WorkerService {
            inner: Arc::new(Inner {
                house: config.house,
                node: config.node_name(),
                harness: b.build()?,
                pool: Pool::new(config.worker.max_concurrency),
                in_flight: AtomicU32::new(0),
                queued: AtomicU32::new(0),
                fence: Fencing::Single,
                once,
                live,
            }),
        })
    }

    /// The same worker, accepting dispatches only from the router `watch` shows leading, under
    /// its term (an `etcd:` section).
    ///
    /// # Panics
    /// When the service is already shared (call it right after it is built).
    #[must_use]
    pub fn fenced_by(mut self, watch: Arc<LeaderWatch>) -> WorkerService {
        Arc::get_mut(&mut self.inner).expect("a new worker service").fence = Fencing::Leader(watch);
        self
    }

    /// Whether `dispatcher`'s token lets it dispatch now.
    ///
    /// # Errors
    /// E3013: without etcd, a token other than 0; with etcd, a dispatcher that is not the
    /// leader etcd shows, or a token that is not its term, or no leader known.
    async fn check_fence(&self, dispatcher: House, token: u64) -> Result<(), Error> {
        let refuse = |message: String, details: serde_json::Value| {
            metrics::counter!("uw_worker_fenced_total").increment(1);
            Err(Error::new(ErrorCode::FencedOut, message).with_details(details))
        };
        let watch = match &self.inner.fence {
            Fencing::Single if token == 0 => return Ok(()),
            Fencing::Single => {
                return refuse(
                    format!(
                        "fencing token {token} from {dispatcher}: this worker has no `etcd:` section, so the fleet's \
                         single router dispatches under term 0 only"
                    ),
                    serde_json::json!({ "token": token, "dispatcher": dispatcher }),
                );
            }
            Fencing::Leader(watch) => watch,
        };
        let leads = |l: &Option<LeaderInfo>| l.as_ref().is_some_and(|l| l.house == dispatcher && l.term == token);
        let mut known = watch.current();
        if leads(&known) {
            return Ok(());
        }
        // A term newer than the one this worker knows may be a leader elected a moment ago:
        // wait, bounded, for etcd to show it. An older term is a deposed leader's: refused.
        if known.as_ref().is_none_or(|l| token > l.term) {
            let mut changes = watch.subscribe();
            let _ = tokio::time::timeout(CATCH_UP, changes.wait_for(leads)).await;
            known = watch.current();
            if leads(&known) {
                return Ok(());
            }
        }
        match known {
            Some(l) => refuse(
                format!(
                    "{dispatcher} may not dispatch under term {token}: {} leads the fleet under term {}",
                    l.house, l.term
                ),
                serde_json::json!({ "token": token, "dispatcher": dispatcher, "leader_house": l.house, "term": l.term }),
            ),
            None => refuse(
                format!("no router leads the fleet that this worker can see in etcd; {dispatcher}'s dispatch refused"),
                serde_json::json!({ "token": token, "dispatcher": dispatcher }),
            ),
        }
    }

    /// The pattern DB and model of this worker's harness, when intelligence is on.
    pub fn intelligence(&self) -> Option<Arc<uni_wizard::Intelligence>> {
        self.inner.harness.intelligence().cloned()
    }

    /// The exactly-once store (`/health` shows its write error).
    pub fn once(&self) -> Arc<once::OnceStore> {
        self.inner.once.clone()
    }

    /// (tool, target) of every open breaker.
    pub fn open_breakers(&self) -> Vec<(String, String)> {
        self.inner
            .harness
            .executor()
            .breakers()
            .not_closed()
            .into_iter()
            .filter(|(_, _, state)| *state == uni_wizard::executor::BreakerState::Open)
            .map(|(tool, target, _)| (tool, target))
            .collect()
    }

    /// Runs one call, waiting for a slot of the pool. The pool's size, the queue bound and the
    /// default mode are the live config's (`worker.max_concurrency`, `max_queued`,
    /// `default_mode`), so a reload applies them to the next call.
    async fn run(&self, call: Call, dispatcher: House) -> Result<uni_wizard::Outcome, Error> {
        let inner = &*self.inner;
        let config = inner.live.get();
        let settings = &config.worker;
        inner.pool.resize(settings.max_concurrency);
        let Call { mode, mut request, caller, .. } = call;
        request.mode = Some(mode.unwrap_or(settings.default_mode));
        request.on_behalf_of = Some(caller.unwrap_or(dispatcher));
        if inner.queued.fetch_add(1, Ordering::AcqRel) >= settings.max_queued {
            inner.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::new(
                ErrorCode::Saturated,
                format!("worker {} has {} calls queued", inner.node, settings.max_queued),
            ));
        }
        drop(config);
        let permit = inner.pool.slots.clone().acquire_owned().await;
        inner.queued.fetch_sub(1, Ordering::AcqRel);
        let permit = permit.map_err(|_| Error::new(ErrorCode::Saturated, "worker is shutting down"))?;
        inner.in_flight.fetch_add(1, Ordering::AcqRel);
        let started = Instant::now();
        let result = inner.harness.execute_request(request).await;
        inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        inner.pool.release(permit);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        metrics::counter!("uw_worker_calls_total", "result" => outcome).increment(1);
        metrics::histogram!("uw_worker_call_seconds").record(started.elapsed().as_secs_f64());
        result
    }
}

impl WorkerService {
    /// Runs a keyed call at most once (see [`once`]): asks the store, then runs it in a task
    /// of its own and stores the answer, or answers from the store, or waits for the same
    /// call in flight (bounded by the call's timeout, else the tool's default).
    async fn run_once(&self, call: Call, dispatcher: House, key: String) -> ExecuteResponse {
        let inner = &*self.inner;
        let key: once::Key = (call.caller.unwrap_or(dispatcher), key);
        let digest = once::digest(&call.request, call.mode);
        let task_id = call.request.parent.clone().unwrap_or_default();
        let wait = call.request.timeout.unwrap_or_else(|| {
            inner
                .harness
                .registry()
                .get(&call.request.tool)
                .map_or(Duration::from_secs(60), |t| t.contract().spec().default_timeout)
        });
        let limits = inner.live.get().worker.once.clone();
        let (store, node, house) = (inner.once.clone(), inner.node.clone(), inner.house);
        let begun = tokio::task::spawn_blocking(move || store.begin(&key, &digest, &task_id, (house, &node), &limits))
            .await
            .unwrap_or_else(|e| {
                Err(Error::new(ErrorCode::OnceUnavailable, format!("the exactly-once store task failed: {e}")))
            });
        match begun {
            Err(e) => {
                metrics::counter!("uw_worker_calls_total", "result" => e.code.as_str()).increment(1);
                once::error_response(&e)
            }
            Ok(once::Begin::Answer(a)) => {
                if a.replayed {
                    metrics::counter!("uw_worker_replayed_total").increment(1);
                }
                *a
            }
            Ok(once::Begin::Wait(mut rx)) => match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
                Ok(Ok(a)) => {
                    metrics::counter!("uw_worker_replayed_total").increment(1);
                    ExecuteResponse { replayed: true, ..a.clone().unwrap_or_default() }
                }
                _ => {
                    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    once::error_response(
                        &Error::new(
                            ErrorCode::Timeout,
                            format!(
                                "the first call with this idempotency key is still running after {ms} ms; ask again"
                            ),
                        )
                        .with_details(serde_json::json!({ "timeout_ms": ms, "in_flight": true })),
                    )
                }
            },
            Ok(once::Begin::Run(claim)) => {
                let me = self.clone();
                // Its own task: the running mark is on disk, so the answer must be stored too.
                let ran = tokio::spawn(async move {
                    let a = answer(me.run(call, dispatcher).await);
                    tokio::task::spawn_blocking(move || claim.finish(a)).await
                });
                match ran.await {
                    Ok(Ok(a)) => a,
                    _ => once::error_response(
                        &Error::new(
                            ErrorCode::WorkerUnavailable,
                            "the call with this idempotency key was cut off while it ran; it may have run",
                        )
                        .with_details(
                            serde_json::json!({ "house": inner.house, "node": inner.node, "maybe_ran": true }),
                        ),
                    ),
                }
            }
        }
    }
}

/// The wire answer of a call that ran (or was refused by the harness).
fn answer(result: Result<uni_wizard::Outcome, Error>) -> ExecuteResponse {
    let result = match result {
        Ok(o) => execute_response::Result::Outcome(wire::outcome_to_wire(&o)),
        Err(e) => execute_response::Result::Error(wire::error_to_wire(&e)),
    };
    ExecuteResponse { result: Some(result), replayed: false }
}

/// The bounded pool of call slots, resized to the live `worker.max_concurrency`.
///
/// Growing adds permits at once. Shrinking takes the free permits at once and the rest as
/// calls finish ([`Pool::release`] forgets a permit while the pool owes one), so no call in
/// flight is cut and the pool never holds more than its size after the calls drain.
struct Pool {
    slots: Arc<Semaphore>,
    size: AtomicU32,
    /// Permits still to forget from a shrink that found them held.
    owed: AtomicU32,
    resizing: std::sync::Mutex<()>,
}

impl Pool {
    fn new(size: u32) -> Pool {
        Pool {
            slots: Arc::new(Semaphore::new(size as usize)),
            size: AtomicU32::new(size),
            owed: AtomicU32::new(0),
            resizing: std::sync::Mutex::new(()),
        }
    }

    /// The size it has (or is shrinking to).
    fn size(&self) -> u32 {
        self.size.load(Ordering::Acquire)
    }

    /// Brings the pool to `want` slots (validation keeps `want` positive).
    fn resize(&self, want: u32) {
        if self.size() == want {
            return;
        }
        let _one = self.resizing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let have = self.size();
        if want > have {
            // Cancel what a shrink still owes before adding permits.
            let mut add = want - have;
            let cancelled = self
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| Some(o - o.min(add)))
                .map_or(0, |o| o.min(add));
            add -= cancelled;
            self.slots.add_permits(add as usize);
        } else {
            let take = have - want;
            let gone = u32::try_from(self.slots.forget_permits(take as usize)).unwrap_or(take);
            self.owed.fetch_add(take - gone.min(take), Ordering::AcqRel);
        }
        self.size.store(want, Ordering::Release);
    }

    /// Gives a finished call's slot back, or forgets it while a shrink is owed.
    fn release(&self, permit: tokio::sync::OwnedSemaphorePermit) {
        if self.owed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| o.checked_sub(1)).is_ok() {
            permit.forget();
        }
    }
}

/// A dispatched call, parsed once off the wire.
struct Call {
    /// The house to execute as (must be this worker's).
    house: House,
    /// `None` for the house's default.
    mode: Option<Mode>,
    /// The library request, its parent the router's task id.
    request: uni_wizard::Request,
    /// The submitting house; `None` means the dispatcher's own.
    caller: Option<House>,
    fencing_token: u64,
    /// The router's task key, if it sent one.
    task_key: Option<String>,
}

impl Call {
    /// # Errors
    /// E1002 for a `house` unset or no house, or a `caller_house` that is no house; E1004 for
    /// a mode number that is no mode; E1005 for a missing call, tool name or bad `args_json`.
    fn from_wire(req: ExecuteRequest) -> Result<Call, Error> {
        let mut request = wire::request_from_wire(req.call.as_ref())?;
        wire::id_field("task_id", &req.task_id)?;
        if !req.task_id.is_empty() {
            request.parent = Some(req.task_id);
        }
        Ok(Call {
            house: wire::required_house(req.house, "house")?,
            mode: wire::mode_from_wire(req.mode)?,
            caller: wire::house_field(req.caller_house, "caller_house")?,
            request,
            fencing_token: req.fencing_token,
            task_key: {
                wire::id_field("task_key", &req.task_key)?;
                Some(req.task_key).filter(|k| !k.is_empty())
            },
        })
    }
}

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn execute(
        &self,
        request: tonic::Request<ExecuteRequest>,
    ) -> Result<tonic::Response<ExecuteResponse>, tonic::Status> {
        let peer = auth::peer(&request)?;
        // Validation before authorization: a malformed request is E1xxx whoever sent it.
        let call = Call::from_wire(request.into_inner()).map_err(|e| wire::status(&e))?;
        auth::require(peer, &self.inner.live.get().worker.dispatchers, "dispatch to a worker")?;
        let inner = &*self.inner;
        if call.house != inner.house {
            return Err(wire::status(
                &Error::new(
                    ErrorCode::Forbidden,
                    format!("this worker executes as {}, not as {}", inner.house, call.house),
                )
                .with_details(serde_json::json!({ "worker_house": inner.house, "asked": call.house })),
            ));
        }
        self.check_fence(peer.house, call.fencing_token).await.map_err(|e| wire::status(&e))?;
        // The call's own key binds it; else the task key does, for a tool whose repeat would
        // change something again (a read-only or idempotent tool may run again harmlessly).
        let key = call.request.idempotency_key.clone().or_else(|| {
            call.task_key.clone().filter(|_| {
                let spec = inner.harness.registry().get(&call.request.tool).map(|t| t.contract().spec().annotations);
                spec.is_some_and(|a| !a.read_only && !a.idempotent)
            })
        });
        let answer = match key {
            Some(key) => self.run_once(call, peer.house, key).await,
            None => answer(self.run(call, peer.house).await),
        };
        Ok(tonic::Response::new(answer))
    }

    async fn capacity(
        &self,
        request: tonic::Request<CapacityRequest>,
    ) -> Result<tonic::Response<CapacityResponse>, tonic::Status> {
        auth::peer(&request)?;
        let inner = &*self.inner;
        // The live size, also when no call came since a reload changed it.
        inner.pool.resize(inner.live.get().worker.max_concurrency);
        // A tool with any open breaker (for some target) is reported unhealthy.
        let open: Vec<String> = self.open_breakers().into_iter().map(|(tool, _)| tool).collect();
        let healthy_tools = inner
            .harness
            .registry()
            .iter()
            .map(|t| t.contract().spec().name.to_owned())
            .filter(|name| !open.contains(name))
            .collect();
        Ok(tonic::Response::new(CapacityResponse {
            max_concurrency: inner.pool.size(),
            in_flight: inner.in_flight.load(Ordering::Acquire),
            queued: inner.queued.load(Ordering::Acquire),
            node: inner.node.clone(),
            house: wire::house_to_wire(inner.house).into(),
            healthy_tools,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use serde_json::{Value, json};
    use uni_wizard::approval::DenyAll;
    use uni_wizard::contract::{Annotations, Category, ContractSpec, Risk};
    use uni_wizard::tools::{ToolContext, TypedTool};

    use super::*;

    /// Times the failing tool ran.
    static RUNS: AtomicUsize = AtomicUsize::new(0);

    /// A read-only tool whose target always fails (E3003, which counts for the breaker and is
    /// not retried).
    struct Failing;

    impl TypedTool for Failing {
        type Input = Value;
        type Output = Value;

        fn spec() -> ContractSpec {
            ContractSpec {
                name: "failing",
                category: Category::System,
                description: "Always fails (tests).",
                input_schema: json!({"type": "object", "properties": {}, "additionalProperties": false}),
                output_schema: json!({"type": "object"}),
                annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: false },
                risk: Risk::Low,
                default_timeout: Duration::from_secs(5),
                dry_run: false,
                content_guard: false,
            }
        }

        fn target(_: &Value) -> String {
            "the-target".into()
        }

        async fn run(_: &ToolContext, _: Value) -> uni_wizard::Result<Value> {
            RUNS.fetch_add(1, Ordering::SeqCst);
            Err(Error::new(ErrorCode::ToolFailed, "the target is broken"))
        }
    }

    /// A read-only tool that always succeeds (tests).
    struct Fine;

    impl TypedTool for Fine {
        type Input = Value;
        type Output = Value;

        fn spec() -> ContractSpec {
            ContractSpec { name: "fine", description: "Always succeeds (tests).", ..Failing::spec() }
        }

        fn target(_: &Value) -> String {
            "fine".into()
        }

        async fn run(_: &ToolContext, _: Value) -> uni_wizard::Result<Value> {
            Ok(json!({}))
        }
    }

    /// Times the slow tool ran.
    static SLOW_RUNS: AtomicUsize = AtomicUsize::new(0);

    /// A tool that takes 300 ms and counts its runs (tests).
    struct Slow;

    impl TypedTool for Slow {
        type Input = Value;
        type Output = Value;

        fn spec() -> ContractSpec {
            ContractSpec { name: "slow", description: "Takes 300 ms (tests).", ..Failing::spec() }
        }

        fn target(_: &Value) -> String {
            "slow".into()
        }

        async fn run(_: &ToolContext, _: Value) -> uni_wizard::Result<Value> {
            let n = SLOW_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(json!({ "run": n }))
        }
    }

    fn call(mode: Mode) -> Call {
        Call {
            house: House::Ezra,
            mode: Some(mode),
            request: uni_wizard::Request::new("failing", json!({})),
            caller: None,
            fencing_token: 1,
            task_key: None,
        }
    }

    /// Proves the pool grows at once and shrinks without cutting a call: free slots go at
    /// once, held ones as their calls finish, and a grow first cancels what a shrink owes.
    #[tokio::test]
    async fn the_pool_resizes_around_calls_in_flight() {
        let pool = Pool::new(4);
        let held: Vec<_> = (0..3).map(|_| pool.slots.clone().try_acquire_owned().expect("free")).collect();
        pool.resize(1);
        assert_eq!((pool.size(), pool.slots.available_permits()), (1, 0));
        let mut held = held.into_iter();
        pool.release(held.next().expect("held"));
        pool.release(held.next().expect("held"));
        assert_eq!(pool.slots.available_permits(), 0, "two calls finished: both slots were owed");
        pool.resize(3);
        assert_eq!(pool.slots.available_permits(), 2);
        pool.release(held.next().expect("held"));
        assert_eq!((pool.size(), pool.slots.available_permits()), (3, 3));
    }

    /// Proves a reload of `worker.max_concurrency`, `max_queued` and `default_mode` takes
    /// effect on the running worker: Capacity reports the new size, a queue bound of 0 refuses
    /// the next call with E3005, and a call naming no mode runs in the new default mode.
    #[tokio::test]
    async fn a_reload_of_the_worker_section_takes_effect() {
        let home = tempfile::tempdir().expect("home");
        let yaml = format!(
            "house: ezra\nplaintext_loopback: true\nroles: [worker]\nlisten: {{grpc: 127.0.0.1:1, http: 127.0.0.1:2}}\n\
             houses:\n  ezra: {{endpoint: 127.0.0.1:1, auth_token: ezra-token-0123456789}}\n\
             worker:\n  default_mode: simple\n  audit_all_modes: false\n  library:\n    home: {}\n    intelligence: {{enabled: false}}\n",
            home.path().display()
        );
        let live = Live::new(DaemonConfig::parse(&yaml, "t.yaml", &|_| None).expect("config"));
        let mut registry = Registry::empty();
        registry.add_typed::<Fine>().expect("tool");
        let store = WorkerService::open_store(&live.get()).expect("store");
        let worker = WorkerService::with_registry(live.clone(), store, Arc::new(DenyAll), registry).expect("worker");
        let capacity = || async {
            let mut req = tonic::Request::new(CapacityRequest {});
            req.extensions_mut().insert(auth::Peer { house: House::Timmy });
            worker.capacity(req).await.expect("capacity").into_inner().max_concurrency
        };
        let fine = || Call { mode: None, request: uni_wizard::Request::new("fine", json!({})), ..call(Mode::Simple) };
        assert_eq!(capacity().await, 64);
        assert_eq!(worker.run(fine(), House::Timmy).await.expect("runs").mode, Mode::Simple);

        let mut new = (*live.get()).clone();
        new.worker.max_concurrency = 3;
        new.worker.default_mode = Mode::Intelligent;
        assert!(matches!(live.apply(new.clone(), std::path::Path::new("t.yaml")), crate::live::Reloaded::Applied(_)));
        assert_eq!(capacity().await, 3, "Capacity reports the reloaded size");
        assert_eq!(worker.inner.pool.slots.available_permits(), 3);
        assert_eq!(worker.run(fine(), House::Timmy).await.expect("runs").mode, Mode::Intelligent);

        new.worker.max_queued = 0;
        live.apply(new, std::path::Path::new("t.yaml"));
        let e = worker.run(fine(), House::Timmy).await.expect_err("no queue");
        assert_eq!(e.code, ErrorCode::Saturated, "{e}");
    }

    /// Proves a keyed call runs once through `Execute` however it is repeated: two concurrent
    /// dispatches with one key run the tool once and get the same answer (one `replayed`); a
    /// dispatch whose caller hung up mid-call still finishes and stores its answer, which a
    /// repeat then gets without running; an unkeyed call runs every time.
    #[tokio::test]
    async fn a_keyed_call_runs_once_for_concurrent_cut_and_later_repeats() {
        let home = tempfile::tempdir().expect("home");
        let yaml = format!(
            "house: ezra\nplaintext_loopback: true\nroles: [worker]\nlisten: {{grpc: 127.0.0.1:1, http: 127.0.0.1:2}}\n\
             houses:\n  ezra: {{endpoint: 127.0.0.1:1, auth_token: ezra-token-0123456789}}\n\
             worker:\n  library:\n    home: {}\n    intelligence: {{enabled: false}}\n",
            home.path().display()
        );
        let live = Live::new(DaemonConfig::parse(&yaml, "t.yaml", &|_| None).expect("config"));
        let mut registry = Registry::empty();
        registry.add_typed::<Slow>().expect("tool");
        let store = WorkerService::open_store(&live.get()).expect("store");
        let worker = WorkerService::with_registry(live, store, Arc::new(DenyAll), registry).expect("worker");
        let exec = |key: &str| {
            let call = uni_wizard_proto::v1::ToolCall {
                tool: "slow".into(),
                args_json: "{}".into(),
                idempotency_key: key.into(),
                ..Default::default()
            };
            let mut req = tonic::Request::new(ExecuteRequest {
                call: Some(call),
                house: wire::house_to_wire(House::Ezra).into(),
                ..Default::default()
            });
            req.extensions_mut().insert(auth::Peer { house: House::Timmy });
            let w = worker.clone();
            async move { w.execute(req).await.expect("answered").into_inner() }
        };
        let before = SLOW_RUNS.load(Ordering::SeqCst);
        let (a, b) = tokio::join!(exec("k1"), exec("k1"));
        assert_eq!(SLOW_RUNS.load(Ordering::SeqCst), before + 1, "one run for two concurrent dispatches");
        assert!(matches!(a.result, Some(execute_response::Result::Outcome(_))), "{a:?}");
        assert_eq!((a.result.clone(), a.replayed ^ b.replayed), (b.result.clone(), true), "{a:?} {b:?}");

        // The caller hangs up 50 ms into the call: the run goes on and stores its answer.
        assert!(tokio::time::timeout(Duration::from_millis(50), exec("k2")).await.is_err());
        let again = exec("k2").await;
        assert!(again.replayed, "the repeat waited for the cut call's answer: {again:?}");
        let third = exec("k2").await;
        assert_eq!((third.replayed, third.result), (true, again.result), "from the store");
        assert_eq!(SLOW_RUNS.load(Ordering::SeqCst), before + 2);

        for _ in 0..2 {
            assert!(!exec("").await.replayed);
        }
        assert_eq!(SLOW_RUNS.load(Ordering::SeqCst), before + 4, "unkeyed calls run every time");
        assert_eq!(worker.once().counts().expect("counts"), (0, 2), "unkeyed calls are not stored");
    }

    /// Proves one breaker serves every mode: failures in Intelligent mode open it, and a
    /// Sovereign call to the same (tool, target) is then refused with E3002 without running.
    #[tokio::test]
    async fn a_breaker_opened_in_intelligent_mode_refuses_sovereign_calls() {
        let home = tempfile::tempdir().expect("home");
        let yaml = format!(
            "house: ezra\nplaintext_loopback: true\nroles: [worker]\nlisten: {{grpc: 127.0.0.1:1, http: 127.0.0.1:2}}\n\
             houses:\n  ezra: {{endpoint: 127.0.0.1:1, auth_token: ezra-token-0123456789}}\n\
             worker:\n  library:\n    home: {}\n    intelligence: {{enabled: false}}\n    executor: {{breaker: {{failure_threshold: 3}}}}\n",
            home.path().display()
        );
        let live = Live::new(DaemonConfig::parse(&yaml, "t.yaml", &|_| None).expect("config"));
        let mut registry = Registry::empty();
        registry.add_typed::<Failing>().expect("tool");
        let store = WorkerService::open_store(&live.get()).expect("store");
        let worker = WorkerService::with_registry(live, store, Arc::new(DenyAll), registry).expect("worker");

        for _ in 0..3 {
            let e = worker.run(call(Mode::Intelligent), House::Timmy).await.expect_err("fails");
            assert_eq!(e.code, ErrorCode::ToolFailed, "{e}");
        }
        assert_eq!(worker.open_breakers(), vec![("failing".to_owned(), "the-target".to_owned())]);
        let ran = RUNS.load(Ordering::SeqCst);
        let e = worker.run(call(Mode::Sovereign), House::Timmy).await.expect_err("refused");
        assert_eq!(e.code, ErrorCode::BreakerOpen, "{e}");
        assert_eq!(RUNS.load(Ordering::SeqCst), ran, "the tool must not run behind an open breaker");
    }
}
