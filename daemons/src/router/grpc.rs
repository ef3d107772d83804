//! The router's gRPC face: `Submit` and `Status` over the routing core ([`crate::routing`]),
//! and the dispatch of a task to its candidates' workers. Every decision is the core's; this
//! file validates, converts (through `wire.rs`), makes the worker RPCs and reads what they did.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uni_wizard::tools::Registry;
use uni_wizard::{Error, ErrorCode, House, Intelligence};
use uni_wizard_proto::v1::router_server::Router;
use uni_wizard_proto::v1::{
    self, ExecuteRequest, StatusRequest, StatusResponse, SubmitRequest, SubmitResponse, execute_response,
};

use crate::auth;
use crate::leader::{Bindings, Fence};
use crate::live::Live;
use crate::membership::{Membership, NodeState};
use crate::peers::Peers;
use crate::routing::{self, Attempt, Candidates, Choice, Passed, State, Verdict};
use crate::wire;

/// What a finished task holds: the worker's answer as it came off the wire (or the router's
/// own error, converted once).
type Answer = Result<v1::Outcome, v1::ErrorDetail>;

type Task = routing::Task<Answer>;

/// The Router service.
#[derive(Clone)]
pub struct RouterService {
    inner: Arc<Inner>,
}

struct Inner {
    live: Live,
    peers: Peers,
    membership: Membership,
    registry: Registry,
    intelligence: Option<Arc<Intelligence>>,
    tasks: routing::Tasks<Answer>,
    /// This router's leadership, with an `etcd:` section; `None`: the single router (term 0).
    fence: Option<Fence>,
    /// With etcd: which worker each task that must not run twice is bound to, fleet-wide.
    bindings: Option<Bindings>,
}

impl std::fmt::Debug for RouterService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterService").finish_non_exhaustive()
    }
}

/// How one dispatch to one house ended: what the core judges, and what the task would hold.
struct Tried {
    attempt: Attempt,
    node: String,
    answer: Reply,
    /// The failed RPC's own message, for the membership view and a lost call's details.
    grpc: String,
}

/// What came back from one house.
enum Reply {
    /// The worker's own answer, passed on untouched.
    Worker(Answer),
    /// The router's reading of an RPC that failed, or of a house it could not reach.
    Router(Error),
}

impl RouterService {
    /// A router over `membership`, dispatching with `peers`, knowing the tools of `registry`.
    pub fn new(
        live: Live,
        peers: Peers,
        membership: Membership,
        registry: Registry,
        intelligence: Option<Arc<Intelligence>>,
    ) -> RouterService {
        RouterService {
            inner: Arc::new(Inner {
                live,
                peers,
                membership,
                registry,
                intelligence,
                tasks: routing::Tasks::default(),
                fence: None,
                bindings: None,
            }),
        }
    }

    /// The same router, admitting and dispatching only while `fence` says it leads, and
    /// binding each task whose repeat would change something to one worker in `bindings`.
    ///
    /// # Panics
    /// When the service is already shared (call it right after [`RouterService::new`]).
    #[must_use]
    pub fn leading_with(mut self, fence: Fence, bindings: Bindings) -> RouterService {
        let inner = Arc::get_mut(&mut self.inner).expect("a new router service");
        inner.fence = Some(fence);
        inner.bindings = Some(bindings);
        self
    }

    /// The term this router may admit under now (0 without etcd), or E3014 (see
    /// [`routing::leading`]).
    fn leading(&self) -> Result<u64, Error> {
        let state = self.inner.fence.as_ref().map(Fence::state);
        routing::leading(state.as_ref()).inspect_err(|_| {
            metrics::counter!("uw_router_forwarded_total").increment(1);
        })
    }

    /// Whether a dispatch under `term` may go out now (always without etcd).
    fn may_dispatch(&self, term: u64) -> bool {
        self.inner.fence.as_ref().is_none_or(|f| f.may_dispatch(term))
    }

    /// The houses to try for `tool`, in order, with the state of each house considered.
    fn candidates(&self, tool: &str, preferred: Option<House>) -> Candidates {
        let config = self.inner.live.get();
        let category = self.inner.registry.get(tool).map(|t| t.contract().spec().category.as_str());
        let route =
            routing::route(&config.router.routes, config.houses.iter().map(|(h, e)| (*h, e.priority)), tool, category);
        let fleet: Vec<House> = config.houses.keys().copied().collect();
        // Asked only when it can matter: the core ignores it beside a preferred house.
        let best = match preferred {
            None => self.inner.intelligence.as_ref().and_then(|i| i.preferred_house(tool)),
            Some(_) => None,
        };
        routing::candidates(Choice { route: &route, fleet: &fleet, preferred, best }, |h| {
            self.inner.membership.status(h).state
        })
    }

    /// Dispatches a task to its candidates in turn, as the core's failover policy says, each
    /// attempt under `term` and only while this router still leads under it.
    async fn dispatch(self, task: Arc<Task>, req: SubmitRequest, candidates: Candidates, term: u64) {
        let started = Instant::now();
        let tool = req.call.as_ref().map_or("", |c| c.tool.as_str()).to_owned();
        let safe_to_repeat =
            self.inner.registry.get(&tool).is_some_and(|t| {
                t.contract().spec().annotations.read_only || t.contract().spec().annotations.idempotent
            });
        let mut passed: Vec<Passed> = Vec::new();
        // With etcd, a task whose repeat would change something goes to one worker only,
        // whichever router takes it: the one its binding names (see `leader::Bindings`).
        let mut order = candidates.order;
        let bound = match (&self.inner.bindings, order.first()) {
            (Some(b), Some(first)) if !safe_to_repeat => match b.bind(task.submitter(), task.key(), *first).await {
                Ok((house, fresh)) => {
                    if !fresh {
                        // An earlier submission bound it and may have run there: there only.
                        order = vec![house];
                    }
                    Some((b, fresh))
                }
                Err(e) => return self.finish(&task, None, String::new(), Reply::Router(e), started),
            },
            _ => None,
        };
        let mut i = 0;
        while let Some(&house) = order.get(i) {
            i += 1;
            if !self.may_dispatch(term) {
                // Deposed (or the lease not renewed in time) before this attempt went out: it
                // did not run here; earlier attempts ran nothing or were safe to repeat.
                let e = Error::new(
                    ErrorCode::NotLeader,
                    format!("this router stopped leading (term {term}) before dispatching; submit again"),
                )
                .with_details(serde_json::json!({ "term": term, "house": house }));
                return self.finish(&task, None, String::new(), Reply::Router(e), started);
            }
            task.start(house);
            let tried = self.dispatch_one(&task, house, &req, term).await;
            if tried.attempt.house_down() {
                self.inner.membership.report_unreachable(house, tried.grpc.clone());
            }
            match routing::failover(tried.attempt, safe_to_repeat) {
                Verdict::Finish => return self.finish(&task, Some(house), tried.node, tried.answer, started),
                Verdict::Next => {
                    // Nothing ran at `house` (or it was safe to repeat): a binding this dispatch
                    // made may move to the next house; one an earlier submission made never does.
                    if let (Some((b, true)), Some(&next)) = (bound, order.get(i)) {
                        match b.rebind(task.submitter(), task.key(), house, next).await {
                            Ok((_, true)) => {}
                            Ok((elsewhere, false)) => {
                                let e = Error::new(
                                    ErrorCode::WorkerUnavailable,
                                    format!("task bound to {elsewhere} meanwhile; not run here"),
                                )
                                .with_details(serde_json::json!({ "bound_house": elsewhere }));
                                return self.finish(&task, None, String::new(), Reply::Router(e), started);
                            }
                            Err(e) => return self.finish(&task, None, String::new(), Reply::Router(e), started),
                        }
                    }
                    let (code, message) = match &tried.answer {
                        Reply::Worker(Err(d)) => (d.code.clone(), d.message.clone()),
                        Reply::Router(e) => (e.code.as_str().to_owned(), e.message.clone()),
                        Reply::Worker(Ok(_)) => (String::new(), String::new()),
                    };
                    tracing::warn!(task = %task.id(), %house, code, error = %message, "dispatch moved on");
                    passed.push(Passed { house, code, message });
                }
                Verdict::Lost => {
                    let e = Error::new(
                        ErrorCode::WorkerUnavailable,
                        format!(
                            "worker {house} was lost while running `{tool}`; not run elsewhere since it may have changed something"
                        ),
                    )
                    .with_details(serde_json::json!({ "house": house, "maybe_ran": true, "grpc": tried.grpc }));
                    return self.finish(&task, Some(house), String::new(), Reply::Router(e), started);
                }
            }
        }
        let e = routing::exhausted(&tool, &candidates.states, &passed);
        self.finish(&task, None, String::new(), Reply::Router(e), started);
    }

    /// One worker RPC, and what it shows.
    async fn dispatch_one(&self, task: &Task, house: House, req: &SubmitRequest, term: u64) -> Tried {
        if self.inner.membership.status(house).state == NodeState::Down {
            // Marked down since the candidates were chosen: nothing was sent, nothing ran.
            let e = Error::new(ErrorCode::WorkerUnavailable, format!("worker {house} is down"));
            return Tried {
                attempt: Attempt::NoChannel,
                node: String::new(),
                answer: Reply::Router(e),
                grpc: String::new(),
            };
        }
        let config = self.inner.live.get();
        let call = req.call.clone().unwrap_or_default();
        let deadline = match call.timeout_ms {
            0 => Duration::from_millis(config.router.dispatch_timeout_ms),
            // The worker's own timeout fires first; leave it room to answer.
            ms => Duration::from_millis(u64::from(ms) + 5_000),
        };
        let mut client = match self.inner.peers.worker(house) {
            Ok(c) => c,
            Err(e) => {
                return Tried {
                    attempt: Attempt::NoChannel,
                    node: String::new(),
                    answer: Reply::Router(e),
                    grpc: String::new(),
                };
            }
        };
        let execute = ExecuteRequest {
            call: Some(call),
            house: wire::house_to_wire(house).into(),
            mode: req.mode,
            task_id: task.id().to_owned(),
            fencing_token: term,
            caller_house: wire::house_to_wire(task.submitter()).into(),
            task_key: task.key().to_owned(),
        };
        let mut rpc = tonic::Request::new(execute);
        rpc.set_timeout(deadline);
        let answered = |answer: Answer| {
            let saturated = answer.as_ref().err().and_then(wire::error_code_of) == Some(ErrorCode::Saturated);
            let attempt = if saturated { Attempt::Saturated } else { Attempt::Answered };
            let node = self.inner.membership.status(house).node;
            Tried { attempt, node, answer: Reply::Worker(answer), grpc: String::new() }
        };
        // A hung worker (frozen, partitioned) answers neither the call nor health's probes:
        // once health marks it down the call is abandoned as lost, so the core moves a
        // read-only or idempotent task on at once and ends any other `maybe_ran`.
        let answered_or_down = tokio::select! {
            r = client.execute(rpc) => Some(r),
            () = self.inner.membership.until_down(house) => None,
        };
        let Some(answer) = answered_or_down else {
            let e = Error::new(
                ErrorCode::WorkerUnavailable,
                format!("worker {house} stopped answering health probes while running the call; abandoned"),
            );
            let grpc = "abandoned: health marked the house down".to_owned();
            return Tried { attempt: Attempt::Lost, node: String::new(), answer: Reply::Router(e), grpc };
        };
        match answer {
            Ok(resp) => match resp.into_inner().result {
                Some(execute_response::Result::Outcome(o)) => answered(Ok(o)),
                Some(execute_response::Result::Error(d)) => answered(Err(d)),
                None => Tried {
                    attempt: Attempt::Answered,
                    node: String::new(),
                    answer: Reply::Router(Error::new(
                        ErrorCode::WorkerUnavailable,
                        format!("worker {house} answered with no result"),
                    )),
                    grpc: String::new(),
                },
            },
            Err(status) => {
                let e = wire::error_from_status(&status);
                let attempt = if e.code == ErrorCode::FencedOut {
                    // The worker refused the dispatch before anything ran (it takes none from
                    // this router under this term, e.g. it has no `etcd:` section): the next
                    // house may; `may_dispatch` stops this router first if it was deposed.
                    Attempt::NoChannel
                } else if e.code != ErrorCode::WorkerUnavailable && e.code != ErrorCode::Timeout {
                    // Our own refusal (auth, fencing, wrong house): the worker is fine.
                    Attempt::Answered
                } else if is_connect_error(&status) {
                    Attempt::NotConnected
                } else {
                    Attempt::Lost
                };
                Tried { attempt, node: String::new(), answer: Reply::Router(e), grpc: status.message().to_owned() }
            }
        }
    }

    /// Ends the task with `reply`: a worker's answer as it is (its request id filled with the
    /// task's when it has none), the router's own error converted once.
    fn finish(&self, task: &Task, house: Option<House>, node: String, reply: Reply, started: Instant) {
        let (state, answer) = match reply {
            Reply::Worker(Ok(o)) => (State::Succeeded, Ok(o)),
            Reply::Worker(Err(mut d)) => {
                if d.request_id.is_empty() {
                    d.request_id = task.id().to_owned();
                }
                (State::of_error(wire::error_code_of(&d).map(|c| c.category())), Err(d))
            }
            Reply::Router(e) => {
                let state = State::of_error(Some(e.code.category()));
                let e = if e.request_id.is_none() { e.with_request_id(task.id().to_owned()) } else { e };
                (state, Err(wire::error_to_wire(&e)))
            }
        };
        let house_label = house.map_or("none", House::as_str);
        metrics::counter!("uw_router_tasks_total", "state" => state.as_str(), "house" => house_label).increment(1);
        metrics::histogram!("uw_router_task_seconds").record(started.elapsed().as_secs_f64());
        task.finish(state, house, node, answer);
    }

    /// Checks a submission's fields before anything is decided about its caller (E1xxx).
    /// Returns the house it claims to submit as, if any. The call's arguments are scanned,
    /// not parsed: the worker parses them.
    fn check(&self, req: &SubmitRequest) -> Result<Option<House>, Error> {
        if req.idempotency_key.trim().is_empty() {
            return Err(Error::new(ErrorCode::InvalidInput, "`idempotency_key` is required")
                .with_details(serde_json::json!({ "field": "idempotency_key" })));
        }
        wire::id_field("idempotency_key", &req.idempotency_key)?;
        let claimed = wire::house_field(req.caller_house, "caller_house")?;
        wire::house_field(req.preferred_house, "preferred_house")?;
        wire::mode_from_wire(req.mode)?;
        let call = wire::check_call(req.call.as_ref())?;
        self.inner.registry.require(&call.tool)?;
        Ok(claimed)
    }
}

fn is_connect_error(status: &tonic::Status) -> bool {
    let mut text = status.message().to_ascii_lowercase();
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        text.push(' ');
        text.push_str(&s.to_string().to_ascii_lowercase());
        source = s.source();
    }
    text.contains("tcp connect error")
        || text.contains("connection refused")
        || text.contains("error trying to connect")
}

fn response(task: &Task, snapshot: &routing::Snapshot<Answer>, deduplicated: bool) -> SubmitResponse {
    use v1::submit_response::Result as R;
    SubmitResponse {
        task_id: task.id().to_owned(),
        assigned_house: snapshot.assigned.map_or(v1::House::Unspecified, wire::house_to_wire).into(),
        node: snapshot.node.clone(),
        result: snapshot.result.clone().map(|r| match r {
            Ok(o) => R::Outcome(o),
            Err(e) => R::Error(e),
        }),
        deduplicated,
    }
}

/// What a submission asks for, as a key's task remembers it: the tool, the arguments as sent,
/// the house and mode asked for. A key names one call.
fn call_fingerprint(req: &SubmitRequest) -> String {
    let (tool, args) = req.call.as_ref().map_or(("", ""), |c| (c.tool.as_str(), c.args_json.as_str()));
    let text = format!("{tool}\0{args}\0{}\0{}", req.preferred_house, req.mode);
    uni_wizard::hash::sha256_hex(text.as_bytes())
}

/// Whether a finished task's answer leaves its key unsettled, so a resubmission dispatches
/// again rather than repeating it: a refusal that ran nothing (policy, contract, auth; no
/// worker to take it, E3011; this router not leading, E3014; saturated, E3005), or a call
/// whose fate the router could not see (E3012: its worker's store tells).
fn unsettled(s: &routing::Snapshot<Answer>) -> bool {
    let Some(Err(d)) = &s.result else { return false };
    s.state == State::Rejected
        || matches!(
            wire::error_code_of(d),
            Some(
                ErrorCode::NoHealthyHouse | ErrorCode::NotLeader | ErrorCode::Saturated | ErrorCode::WorkerUnavailable
            )
        )
}

/// The house a finished task may have run at (its answer says `maybe_ran`).
fn maybe_ran_at(s: &routing::Snapshot<Answer>) -> Option<House> {
    let Some(Err(d)) = &s.result else { return None };
    let details: serde_json::Value = serde_json::from_str(&d.details_json).unwrap_or_default();
    (details["maybe_ran"] == true).then_some(s.assigned).flatten()
}

#[tonic::async_trait]
impl Router for RouterService {
    async fn submit(
        &self,
        request: tonic::Request<SubmitRequest>,
    ) -> Result<tonic::Response<SubmitResponse>, tonic::Status> {
        let peer = auth::peer(&request)?;
        let config = self.inner.live.get();
        let req = request.into_inner();
        let claimed = self.check(&req).map_err(|e| wire::status(&e))?;
        auth::require(peer, &config.router.submitters, "submit tasks")?;
        if let Some(claimed) = claimed
            && claimed != peer.house
        {
            let e = Error::new(
                ErrorCode::Impersonation,
                format!("authenticated as {} but claims to be {claimed}", peer.house),
            );
            return Err(wire::status(&e));
        }
        let term = match self.leading() {
            Ok(term) => term,
            // Not the leader: a task this router admitted while it led is still its to answer.
            Err(e) => match self.inner.tasks.find(peer.house, &req.idempotency_key) {
                Some(task) => {
                    let snapshot = task.wait(Duration::from_millis(config.router.submit_wait_ms)).await;
                    return Ok(tonic::Response::new(response(&task, &snapshot, true)));
                }
                None => return Err(wire::status(&e)),
            },
        };
        let admitted = self
            .inner
            .tasks
            .admit(peer.house, &req.idempotency_key, &call_fingerprint(&req), config.router.max_tasks, unsettled)
            .map_err(|e| wire::status(&e))?;
        let task = admitted.task;
        if admitted.deduplicated {
            metrics::counter!("uw_router_deduplicated_total").increment(1);
        } else {
            let tool = req.call.as_ref().map(|c| c.tool.as_str()).unwrap_or_default();
            let mut candidates = self.candidates(tool, wire::house_from_wire(req.preferred_house));
            // An earlier dispatch that may have run: to that house only, whose exactly-once
            // store knows what became of it (it replays, waits for it, or says `maybe_ran`).
            if let Some(house) = admitted.replaced.as_ref().and_then(maybe_ran_at) {
                candidates.order = vec![house];
            }
            // Its own task, so a client that disconnects does not cancel the dispatch.
            tokio::spawn(self.clone().dispatch(task.clone(), req, candidates, term));
        }
        let snapshot = task.wait(Duration::from_millis(config.router.submit_wait_ms)).await;
        Ok(tonic::Response::new(response(&task, &snapshot, admitted.deduplicated)))
    }

    async fn status(
        &self,
        request: tonic::Request<StatusRequest>,
    ) -> Result<tonic::Response<StatusResponse>, tonic::Status> {
        let peer = auth::peer(&request)?;
        let id = request.into_inner().task_id;
        // Malformed before authorization, as for every request: E1005, INVALID_ARGUMENT.
        if id.is_empty() || id.len() > 128 {
            return Err(wire::status(
                &Error::new(ErrorCode::InvalidInput, "`task_id` must be 1 to 128 characters")
                    .with_details(serde_json::json!({ "field": "task_id" })),
            ));
        }
        auth::require(peer, &self.inner.live.get().router.submitters, "read task status")?;
        // A follower holds only the tasks it admitted while it led: for another, it names the
        // leader, which holds the tasks admitted since.
        let task = match self.inner.tasks.visible(peer.house, &id) {
            Ok(task) => task,
            Err(e) => return Err(wire::status(&self.leading().err().unwrap_or(e))),
        };
        let s = task.snapshot();
        let r = response(&task, &s, false);
        Ok(tonic::Response::new(StatusResponse {
            task_id: r.task_id,
            state: wire::task_state_to_wire(s.state).into(),
            assigned_house: r.assigned_house,
            node: r.node,
            result: r.result.map(|x| match x {
                v1::submit_response::Result::Outcome(o) => v1::status_response::Result::Outcome(o),
                v1::submit_response::Result::Error(e) => v1::status_response::Result::Error(e),
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uni_wizard::intelligence::{OutcomeClass, Row};

    fn router(intelligence: Option<Arc<Intelligence>>) -> (RouterService, Membership) {
        let yaml = "house: timmy\nplaintext_loopback: true\nlisten: {grpc: 127.0.0.1:1, http: 127.0.0.1:2}\nhouses:\n  timmy: {endpoint: 127.0.0.1:1, auth_token: timmy-token-0123456789}\n  ezra: {endpoint: 127.0.0.1:3, auth_token: ezra-token-0123456789}\n  bezalel: {endpoint: 127.0.0.1:4, auth_token: bezalel-token-0123456789}\nrouter: {routes: {file: [ezra, bezalel, timmy]}}\n";
        let live = Live::new(crate::config::DaemonConfig::parse(yaml, "t.yaml", &|_| None).expect("config"));
        let membership = Membership::default();
        let peers = Peers::new(live.clone()).expect("peers");
        let registry = Registry::builtin().expect("registry");
        (RouterService::new(live, peers, membership.clone(), registry, intelligence), membership)
    }

    /// Proves the route's order holds among houses that are up, down houses are skipped, houses
    /// not probed yet come after the ones up, and a preferred house goes first unless it is down.
    #[test]
    fn candidates_follow_the_route_and_membership() {
        let (r, m) = router(None);
        assert_eq!(r.candidates("file_read", None).order, vec![House::Ezra, House::Bezalel, House::Timmy]);
        m.report_up(House::Timmy, None);
        m.report_unreachable(House::Ezra, "gone".into());
        assert_eq!(r.candidates("file_read", None).order, vec![House::Timmy, House::Bezalel]);
        assert_eq!(r.candidates("file_read", Some(House::Bezalel)).order, vec![House::Bezalel, House::Timmy]);
        m.report_unreachable(House::Bezalel, "gone".into());
        assert_eq!(r.candidates("file_read", Some(House::Bezalel)).order, vec![House::Timmy]);
        m.report_up(House::Bezalel, None);
        assert_eq!(r.candidates("file_read", Some(House::Bezalel)).order, vec![House::Bezalel, House::Timmy]);
    }

    /// Proves a task is visible to its submitter and Timmy only, and another house gets the
    /// same E5003 for someone else's task as for one that does not exist.
    #[test]
    fn a_task_is_visible_to_its_submitter_and_timmy_only() {
        let (r, _) = router(None);
        let tasks = &r.inner.tasks;
        let task =
            tasks.admit(House::Ezra, "k", "", r.inner.live.get().router.max_tasks, unsettled).expect("admitted").task;
        assert!(tasks.visible(House::Ezra, task.id()).is_ok());
        assert!(tasks.visible(House::Timmy, task.id()).is_ok());
        let theirs = tasks.visible(House::Bezalel, task.id()).expect_err("refused");
        let missing = tasks.visible(House::Bezalel, "no-such-task").expect_err("refused");
        assert_eq!((theirs.code, missing.code), (ErrorCode::Forbidden, ErrorCode::Forbidden));
        assert_eq!(theirs.message.replace(task.id(), "ID"), missing.message.replace("no-such-task", "ID"));
        assert_eq!(tasks.visible(House::Timmy, "no-such-task").err().map(|e| e.code), Some(ErrorCode::NotFound));
    }

    /// Proves that with a pattern DB, the house predicted most likely to succeed at a tool goes
    /// first among the houses up, whatever the route's order.
    #[test]
    fn the_best_predicted_house_goes_first() {
        let dir = tempfile::tempdir().expect("dir");
        let intel = Intelligence::open(&uni_wizard::IntelligenceConfig::default(), dir.path().join("p.db"), "t")
            .expect("intelligence");
        for i in 0..60 {
            for (house, class) in [(House::Ezra, OutcomeClass::Permanent), (House::Bezalel, OutcomeClass::Ok)] {
                let row = Row {
                    time_ms: i,
                    tool: "file_read".into(),
                    house,
                    mode: uni_wizard::Mode::Intelligent,
                    fingerprint: 0,
                    class,
                    error_code: None,
                    latency_us: 100,
                    node: Arc::from("t"),
                };
                intel.record(row).expect("recorded");
            }
        }
        let (r, m) = router(Some(intel));
        for h in [House::Timmy, House::Ezra, House::Bezalel] {
            m.report_up(h, None);
        }
        assert_eq!(r.candidates("file_read", None).order, vec![House::Bezalel, House::Ezra, House::Timmy]);
    }
}
