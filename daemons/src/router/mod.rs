//! The router daemon: accepts tasks, routes each to a house that fits and is up, and keeps the
//! result for `Status` and for idempotent resubmission.
//!
//! # Routing
//!
//! Candidates are the caller's preferred house (if any), then the route for the tool
//! (`router.routes.<tool>`, else `router.routes.<category>`, else every house by priority).
//! Houses the membership view marks down are skipped; houses up go before houses not probed
//! yet; among the houses up, the one the pattern DB predicts best for the tool goes first when
//! the node has intelligence; a preferred house that is not down goes first of all. No
//! candidate left: E3011.
//!
//! # Failover and loss
//!
//! A dispatch runs in its own task, so a client that disconnects does not cancel it. When a
//! worker cannot be reached, it is marked down at once and the task moves to the next
//! candidate if nothing can have run (the connection was never made) or the tool is read-only
//! or idempotent. Otherwise the task fails with E3012 and `maybe_ran: true`: a call that may
//! have changed something is never run twice. A saturated worker (E3005) also passes the task
//! on. Every task ends SUCCEEDED, FAILED or REJECTED with the reason; none is dropped.
//!
//! # Idempotency
//!
//! `(caller house, idempotency_key)` names a task for as long as the router keeps it
//! (`router.max_tasks`, oldest finished first out). A resubmission, concurrent or later, gets
//! the first task's result with `deduplicated` set; the tool runs once.
//!
//! # Who sees a task
//!
//! `Status` shows a task to the house that submitted it and to Timmy, nobody else: a task's
//! result is the output of its tool (a file's content, a diff). Another house gets E5003, the
//! same answer as for a task that does not exist, so ids cannot be probed. `Submit` finds
//! earlier tasks only under the caller's own `(house, idempotency_key)`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use uni_wizard::tools::Registry;
use uni_wizard::{Error, ErrorCategory, ErrorCode, House, Intelligence};
use uni_wizard_proto::v1::router_server::Router;
use uni_wizard_proto::v1::{
    self, ExecuteRequest, StatusRequest, StatusResponse, SubmitRequest, SubmitResponse, TaskState, execute_response,
};

use crate::auth;
use crate::health::{Membership, NodeState};
use crate::live::Live;
use crate::peers::Peers;
use crate::wire;

/// What a task looks like at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Where it is in its life.
    pub state: TaskState,
    /// The house it went to.
    pub assigned: Option<House>,
    /// The worker's node name, once it answered.
    pub node: String,
    /// The result, once finished.
    pub result: Option<Result<v1::Outcome, v1::ErrorDetail>>,
}

impl Snapshot {
    fn finished(&self) -> bool {
        self.result.is_some()
    }
}

struct Task {
    id: String,
    key: (House, String),
    state: watch::Sender<Snapshot>,
}

#[derive(Default)]
struct Tasks {
    by_id: HashMap<String, Arc<Task>>,
    by_key: HashMap<(House, String), Arc<Task>>,
    order: VecDeque<Arc<Task>>,
}

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
    tasks: Mutex<Tasks>,
}

impl std::fmt::Debug for RouterService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterService").finish_non_exhaustive()
    }
}

/// How a dispatch to one house ended.
enum Dispatch {
    /// Finished (either way): the task is done.
    Done(Result<v1::Outcome, Error>, String),
    /// Nothing ran there; try the next candidate.
    Next(Error),
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
                tasks: Mutex::new(Tasks::default()),
            }),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Tasks> {
        self.inner.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The houses to try for `tool`, in order, with why each was skipped.
    fn candidates(&self, tool: &str, preferred: Option<House>) -> (Vec<House>, Vec<(House, NodeState)>) {
        let config = self.inner.live.get();
        let category = self.inner.registry.get(tool).map(|t| t.contract().category.as_str());
        let route: Vec<House> = config
            .router
            .routes
            .get(tool)
            .or_else(|| category.and_then(|c| config.router.routes.get(c)))
            .cloned()
            .unwrap_or_else(|| {
                let mut all: Vec<(u32, House)> = config.houses.iter().map(|(h, e)| (e.priority, *h)).collect();
                all.sort();
                all.into_iter().map(|(_, h)| h).collect()
            });
        let mut order: Vec<House> = Vec::new();
        for h in preferred.into_iter().chain(route) {
            if !order.contains(&h) && config.houses.contains_key(&h) {
                order.push(h);
            }
        }
        let states: Vec<(House, NodeState)> =
            order.iter().map(|h| (*h, self.inner.membership.status(*h).state)).collect();
        let mut up: Vec<House> = states.iter().filter(|(_, s)| *s == NodeState::Up).map(|(h, _)| *h).collect();
        let unknown = states.iter().filter(|(_, s)| *s == NodeState::Unknown).map(|(h, _)| *h);
        if preferred.is_none()
            && let Some(best) = self.inner.intelligence.as_ref().and_then(|i| i.preferred_house(tool))
            && let Some(pos) = up.iter().position(|h| *h == best)
        {
            let h = up.remove(pos);
            up.insert(0, h);
        }
        up.extend(unknown);
        // The caller's preferred house goes first unless it is known to be down: not probed yet
        // (a router just started) is no reason to pass it over. If it cannot be reached, nothing
        // ran there and the next candidate is tried.
        if let Some(p) = preferred
            && let Some(pos) = up.iter().position(|h| *h == p)
        {
            let h = up.remove(pos);
            up.insert(0, h);
        }
        (up, states)
    }

    /// Dispatches a task to its candidates in turn and publishes every step.
    async fn dispatch(
        self,
        task: Arc<Task>,
        req: SubmitRequest,
        candidates: Vec<House>,
        states: Vec<(House, NodeState)>,
    ) {
        let started = Instant::now();
        let call = req.call.clone().unwrap_or_default();
        let safe_to_repeat = self
            .inner
            .registry
            .get(&call.tool)
            .is_some_and(|t| t.contract().annotations.read_only || t.contract().annotations.idempotent);
        let mut tried: Vec<serde_json::Value> = Vec::new();
        let mut last: Option<Error> = None;
        for house in candidates {
            task.state.send_modify(|s| {
                s.state = TaskState::Running;
                s.assigned = Some(house);
            });
            match self.dispatch_one(&task, house, &req, safe_to_repeat).await {
                Dispatch::Done(result, node) => {
                    self.finish(&task, Some(house), node, result, started);
                    return;
                }
                Dispatch::Next(e) => {
                    tracing::warn!(task = %task.id, %house, code = e.code.as_str(), error = %e.message, "dispatch moved on");
                    tried.push(serde_json::json!({ "house": house, "code": e.code.as_str(), "error": e.message }));
                    last = Some(e);
                }
            }
        }
        let states: Vec<serde_json::Value> =
            states.iter().map(|(h, s)| serde_json::json!({ "house": h, "state": s })).collect();
        let e = match last {
            Some(e) if e.code == ErrorCode::Saturated => e,
            _ => Error::new(ErrorCode::NoHealthyHouse, format!("no house that fits `{}` is up", call.tool)),
        }
        .with_details(serde_json::json!({ "tool": call.tool, "candidates": states, "tried": tried }));
        self.finish(&task, None, String::new(), Err(e), started);
    }

    async fn dispatch_one(&self, task: &Task, house: House, req: &SubmitRequest, safe_to_repeat: bool) -> Dispatch {
        let config = self.inner.live.get();
        let call = req.call.clone().unwrap_or_default();
        let deadline = match call.timeout_ms {
            0 => Duration::from_millis(config.router.dispatch_timeout_ms),
            // The worker's own timeout fires first; leave it room to answer.
            ms => Duration::from_millis(u64::from(ms) + 5_000),
        };
        let mut client = match self.inner.peers.worker(house) {
            Ok(c) => c,
            Err(e) => return Dispatch::Next(e),
        };
        let execute = ExecuteRequest {
            call: Some(call),
            house: wire::house_to_wire(house).into(),
            mode: req.mode,
            task_id: task.id.clone(),
            fencing_token: 0,
            caller_house: wire::house_to_wire(task.key.0).into(),
        };
        let mut rpc = tonic::Request::new(execute);
        rpc.set_timeout(deadline);
        match client.execute(rpc).await {
            Ok(resp) => match resp.into_inner().result {
                Some(execute_response::Result::Outcome(o)) => {
                    let node = self.inner.membership.status(house).node;
                    Dispatch::Done(Ok(o), node)
                }
                Some(execute_response::Result::Error(d)) => {
                    let e = wire::error_from_wire(&d);
                    if e.code == ErrorCode::Saturated {
                        return Dispatch::Next(e);
                    }
                    Dispatch::Done(Err(e), self.inner.membership.status(house).node)
                }
                None => Dispatch::Done(
                    Err(Error::new(ErrorCode::WorkerUnavailable, format!("worker {house} answered with no result"))),
                    String::new(),
                ),
            },
            Err(status) => {
                let e = wire::error_from_status(&status);
                if e.code != ErrorCode::WorkerUnavailable && e.code != ErrorCode::Timeout {
                    // Our own refusal (auth, fencing, wrong house): the worker is fine.
                    return Dispatch::Done(Err(e), String::new());
                }
                self.inner.membership.report_unreachable(house, status.message().to_owned());
                let never_connected = is_connect_error(&status);
                if never_connected || safe_to_repeat {
                    return Dispatch::Next(e);
                }
                let e = Error::new(
                    ErrorCode::WorkerUnavailable,
                    format!(
                        "worker {house} was lost while running `{}`; not run elsewhere since it may have changed something",
                        req.call.as_ref().map_or("", |c| c.tool.as_str())
                    ),
                )
                .with_details(serde_json::json!({ "house": house, "maybe_ran": true, "grpc": status.message() }));
                Dispatch::Done(Err(e), String::new())
            }
        }
    }

    fn finish(
        &self,
        task: &Task,
        house: Option<House>,
        node: String,
        result: Result<v1::Outcome, Error>,
        started: Instant,
    ) {
        let (state, result) = match result {
            Ok(o) => (TaskState::Succeeded, Ok(o)),
            Err(e) => {
                let rejected =
                    matches!(e.code.category(), ErrorCategory::Contract | ErrorCategory::Policy | ErrorCategory::Auth);
                let e = if e.request_id.is_none() { e.with_request_id(task.id.clone()) } else { e };
                (if rejected { TaskState::Rejected } else { TaskState::Failed }, Err(wire::error_to_wire(&e)))
            }
        };
        let label = match state {
            TaskState::Succeeded => "succeeded",
            TaskState::Rejected => "rejected",
            _ => "failed",
        };
        let house_label = house.map_or("none", House::as_str);
        metrics::counter!("uw_router_tasks_total", "state" => label, "house" => house_label).increment(1);
        metrics::histogram!("uw_router_task_seconds").record(started.elapsed().as_secs_f64());
        task.state.send_modify(|s| {
            s.state = state;
            if house.is_some() {
                s.assigned = house;
            }
            s.node = node;
            s.result = Some(result);
        });
    }

    /// Finds or creates the task for a submission. `Err` is a refusal before any task exists.
    fn admit(&self, caller: House, req: &SubmitRequest) -> Result<(Arc<Task>, bool), Error> {
        let key = (caller, req.idempotency_key.clone());
        let mut tasks = self.tasks();
        if let Some(t) = tasks.by_key.get(&key) {
            return Ok((t.clone(), true));
        }
        let max = self.inner.live.get().router.max_tasks;
        while tasks.order.len() >= max {
            let Some(pos) = tasks.order.iter().position(|t| t.state.borrow().finished()) else {
                return Err(Error::new(ErrorCode::Saturated, format!("the router holds {max} unfinished tasks")));
            };
            if let Some(old) = tasks.order.remove(pos) {
                tasks.by_id.remove(&old.id);
                tasks.by_key.remove(&old.key);
            }
        }
        let snapshot = Snapshot { state: TaskState::Pending, assigned: None, node: String::new(), result: None };
        let task = Arc::new(Task {
            id: uni_wizard::provenance::new_id(),
            key: key.clone(),
            state: watch::channel(snapshot).0,
        });
        tasks.by_id.insert(task.id.clone(), task.clone());
        tasks.by_key.insert(key, task.clone());
        tasks.order.push_back(task.clone());
        Ok((task, false))
    }

    /// The task `id` if `caller` may read it: a house sees the tasks it submitted, Timmy sees
    /// every task. Anyone else gets the same E5003 whether the task exists, expired or is
    /// another house's, so task ids cannot be probed; only Timmy is told E3006 for a task
    /// the router does not hold.
    fn visible(&self, caller: House, id: &str) -> Result<Arc<Task>, Error> {
        match self.tasks().by_id.get(id).cloned() {
            Some(t) if caller == House::Timmy || t.key.0 == caller => Ok(t),
            None if caller == House::Timmy => {
                Err(Error::new(ErrorCode::NotFound, format!("no task `{id}` (unknown or expired)")))
            }
            _ => Err(Error::new(
                ErrorCode::Forbidden,
                format!(
                    "{caller} may not read task `{id}`: a task is visible to the house that submitted it and \
                     to Timmy (unknown, expired and other houses' tasks answer alike)"
                ),
            )
            .with_details(serde_json::json!({ "house": caller, "call": "read task status", "task_id": id }))),
        }
    }

    /// Checks a submission's fields before anything is decided about its caller (E1xxx).
    /// Returns the house it claims to submit as, if any.
    fn check(&self, req: &SubmitRequest) -> Result<Option<House>, Error> {
        if req.idempotency_key.trim().is_empty() {
            return Err(Error::new(ErrorCode::InvalidInput, "`idempotency_key` is required")
                .with_details(serde_json::json!({ "field": "idempotency_key" })));
        }
        let claimed = wire::house_field(req.caller_house, "caller_house")?;
        wire::house_field(req.preferred_house, "preferred_house")?;
        wire::mode_from_wire(req.mode)?;
        let request = wire::request_from_wire(req.call.as_ref())?;
        if self.inner.registry.get(&request.tool).is_none() {
            let tool = uni_wizard::error::echo(&request.tool);
            return Err(Error::new(ErrorCode::UnknownTool, format!("unknown tool `{tool}`"))
                .with_details(serde_json::json!({ "tool": tool })));
        }
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

fn response(task: &Task, snapshot: &Snapshot, deduplicated: bool) -> SubmitResponse {
    use v1::submit_response::Result as R;
    SubmitResponse {
        task_id: task.id.clone(),
        assigned_house: snapshot.assigned.map_or(v1::House::Unspecified, wire::house_to_wire).into(),
        node: snapshot.node.clone(),
        result: snapshot.result.clone().map(|r| match r {
            Ok(o) => R::Outcome(o),
            Err(e) => R::Error(e),
        }),
        deduplicated,
    }
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
        let (task, deduplicated) = self.admit(peer.house, &req).map_err(|e| wire::status(&e))?;
        if deduplicated {
            metrics::counter!("uw_router_deduplicated_total").increment(1);
        } else {
            let call = req.call.as_ref().map(|c| c.tool.clone()).unwrap_or_default();
            let (candidates, states) = self.candidates(&call, wire::house_from_wire(req.preferred_house));
            tokio::spawn(self.clone().dispatch(task.clone(), req, candidates, states));
        }
        let mut rx = task.state.subscribe();
        let wait = Duration::from_millis(config.router.submit_wait_ms);
        // Timing out only means "still running": the response then carries no result.
        let _ = tokio::time::timeout(wait, rx.wait_for(Snapshot::finished)).await;
        let snapshot = rx.borrow().clone();
        Ok(tonic::Response::new(response(&task, &snapshot, deduplicated)))
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
        let task = self.visible(peer.house, &id).map_err(|e| wire::status(&e))?;
        let s = task.state.borrow().clone();
        let r = response(&task, &s, false);
        Ok(tonic::Response::new(StatusResponse {
            task_id: r.task_id,
            state: s.state.into(),
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
        let live = Live::new(crate::fleet::DaemonConfig::parse(yaml, "t.yaml", &|_| None).expect("config"));
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
        assert_eq!(r.candidates("file_read", None).0, vec![House::Ezra, House::Bezalel, House::Timmy]);
        m.report_up(House::Timmy, None);
        m.report_unreachable(House::Ezra, "gone".into());
        assert_eq!(r.candidates("file_read", None).0, vec![House::Timmy, House::Bezalel]);
        assert_eq!(r.candidates("file_read", Some(House::Bezalel)).0, vec![House::Bezalel, House::Timmy]);
        m.report_unreachable(House::Bezalel, "gone".into());
        assert_eq!(r.candidates("file_read", Some(House::Bezalel)).0, vec![House::Timmy]);
        m.report_up(House::Bezalel, None);
        assert_eq!(r.candidates("file_read", Some(House::Bezalel)).0, vec![House::Bezalel, House::Timmy]);
    }

    /// Proves a task is visible to its submitter and Timmy only, and another house gets the
    /// same E5003 for someone else's task as for one that does not exist.
    #[test]
    fn a_task_is_visible_to_its_submitter_and_timmy_only() {
        let (r, _) = router(None);
        let req = SubmitRequest { idempotency_key: "k".into(), ..Default::default() };
        let (task, _) = r.admit(House::Ezra, &req).expect("admitted");
        assert!(r.visible(House::Ezra, &task.id).is_ok());
        assert!(r.visible(House::Timmy, &task.id).is_ok());
        let theirs = r.visible(House::Bezalel, &task.id).err().expect("refused");
        let missing = r.visible(House::Bezalel, "no-such-task").err().expect("refused");
        assert_eq!((theirs.code, missing.code), (ErrorCode::Forbidden, ErrorCode::Forbidden));
        assert_eq!(theirs.message.replace(&task.id, "ID"), missing.message.replace("no-such-task", "ID"));
        assert_eq!(r.visible(House::Timmy, "no-such-task").err().map(|e| e.code), Some(ErrorCode::NotFound));
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
        assert_eq!(r.candidates("file_read", None).0, vec![House::Bezalel, House::Ezra, House::Timmy]);
    }
}
