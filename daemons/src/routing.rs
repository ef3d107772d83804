//! The router's core: every routing decision and the task table, in plain Rust. No gRPC and
//! no wire types here; the gRPC face ([`crate::router::RouterService`]) converts, dispatches
//! and asks. It imports only the membership states ([`crate::membership::NodeState`]) and the
//! leadership states ([`crate::leader::Leadership`]), so
//! `wire.rs` can convert a task's [`State`] without reaching into the router.
//!
//! # API
//!
//! | item | decides |
//! |---|---|
//! | [`route`] | the houses that fit a tool, in preference order: its own `router.routes` entry, else its category's, else every house by priority |
//! | [`candidates`] | whom to try, in order, from a route, the membership states, the caller's preferred house and the predicted best house |
//! | [`failover`] | after one dispatch attempt ([`Attempt`]): finish, try the next candidate, or fail as lost ([`Verdict`]) |
//! | [`exhausted`] | the error of a task that every candidate passed on (E3005 when the last was saturated, else E3011) |
//! | [`Tasks`] | the task table: [`Tasks::admit`] (one task per `(house, idempotency_key)`, bounded, oldest finished out) and [`Tasks::visible`] (submitter and Timmy only) |
//! | [`leading`] | whether this router may admit a task now, and under which term (E3014 otherwise) |
//! | [`Task`] | one task's life, published on a watch channel: `Pending` -> `Running` per candidate ([`Task::start`]) -> one final [`State`] ([`Task::finish`], once) |
//!
//! The table is generic over what a finished task holds (`R`): the gRPC face keeps the
//! worker's answer as it came off the wire; the tests below use plain values.
//!
//! # Leadership (issue 14)
//!
//! With an `etcd:` section every router campaigns ([`crate::leader::Election`]); [`leading`]
//! turns its state into the decision: the leader admits tasks under its term, which is the
//! fencing token of every dispatch; a follower or a router without a leader admits nothing and
//! answers E3014 (naming the leader when one is known), so clients go to the leader themselves
//! (the submitter's identity stays the one the leader authenticated: no router submits on
//! another house's behalf). A task already in a router's table (admitted while it led) is still
//! answered by it. Without etcd a single router leads under term 0.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use uni_wizard::{Error, ErrorCategory, ErrorCode, House};

use crate::leader::{LeaderInfo, Leadership};
use crate::membership::NodeState;

/// The term a router may admit and dispatch under now: `None` leadership (no etcd: the single
/// router) leads under term 0; a [`Leadership::Leader`] under its term.
///
/// # Errors
/// E3014 for a follower, naming the leader (`leader_house`, `leader_node`, `leader_endpoint`,
/// `term`), and for a router with no leader known, saying why.
pub fn leading(leadership: Option<&Leadership>) -> Result<u64, Error> {
    match leadership {
        None => Ok(0),
        Some(Leadership::Leader { term, .. }) => Ok(*term),
        Some(Leadership::Follower { leader }) => Err(not_leader(leader)),
        Some(Leadership::Unavailable { reason }) => Err(Error::new(
            ErrorCode::NotLeader,
            format!("no router leads the fleet now ({reason}); nothing ran, submit again shortly"),
        )
        .with_details(json!({ "reason": reason }))),
    }
}

/// E3014 for a follower: who leads, where to submit instead.
fn not_leader(leader: &LeaderInfo) -> Error {
    Error::new(
        ErrorCode::NotLeader,
        format!(
            "this router does not lead the fleet: {} ({}) does, under term {}; submit to {}",
            leader.house, leader.node, leader.term, leader.endpoint
        ),
    )
    .with_details(json!({
        "leader_house": leader.house,
        "leader_node": leader.node,
        "leader_endpoint": leader.endpoint,
        "term": leader.term,
    }))
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Admitted, not dispatched yet.
    Pending,
    /// Dispatched to a house (possibly the next one after a failover).
    Running,
    /// Finished with an outcome.
    Succeeded,
    /// Finished with an execution error (the tool failed, no house could take it).
    Failed,
    /// Finished refused: a contract, policy or auth error.
    Rejected,
}

impl State {
    /// Whether the task is over.
    pub const fn is_final(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Rejected)
    }

    /// The final state of a task that ended in an error of `category` (`None`: an error code
    /// this build does not know, from a newer peer): refusals are rejected, the rest failed.
    pub fn of_error(category: Option<ErrorCategory>) -> State {
        match category {
            Some(ErrorCategory::Contract | ErrorCategory::Policy | ErrorCategory::Auth) => State::Rejected,
            _ => State::Failed,
        }
    }

    /// The lowercase name (metrics labels).
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Rejected => "rejected",
        }
    }
}

/// What a task looks like at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot<R> {
    /// Where it is in its life.
    pub state: State,
    /// The house it went to.
    pub assigned: Option<House>,
    /// The worker's node name, once it answered.
    pub node: String,
    /// The result, once finished.
    pub result: Option<R>,
}

impl<R> Snapshot<R> {
    /// Whether the task is over (it then holds its result).
    pub fn finished(&self) -> bool {
        self.result.is_some()
    }
}

/// One task: its id, who submitted it under which key, and its published [`Snapshot`].
#[derive(Debug)]
pub struct Task<R> {
    id: String,
    submitter: House,
    key: String,
    /// What the submission asked for (its call's fingerprint): a key names one call.
    call: String,
    state: watch::Sender<Snapshot<R>>,
}

impl<R: Clone> Task<R> {
    /// The task id (what `Status` asks for).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The house that submitted it.
    pub fn submitter(&self) -> House {
        self.submitter
    }

    /// The submission's idempotency key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The task now.
    pub fn snapshot(&self) -> Snapshot<R> {
        self.state.borrow().clone()
    }

    /// The task is dispatched to `house`. Nothing changes once it is finished.
    pub fn start(&self, house: House) {
        self.state.send_if_modified(|s| {
            if s.finished() {
                return false;
            }
            s.state = State::Running;
            s.assigned = Some(house);
            true
        });
    }

    /// The task ends in `state` (a final one) with `result`; `house`, when known, is where it
    /// ran. A task finishes once: later calls change nothing and return `false`.
    pub fn finish(&self, state: State, house: Option<House>, node: String, result: R) -> bool {
        debug_assert!(state.is_final(), "a task finishes in a final state");
        self.state.send_if_modified(|s| {
            if s.finished() {
                return false;
            }
            s.state = state;
            if house.is_some() {
                s.assigned = house;
            }
            s.node = node;
            s.result = Some(result);
            true
        })
    }

    /// The task once it finished, or as it is after `limit`, whichever comes first.
    pub async fn wait(&self, limit: Duration) -> Snapshot<R> {
        let mut rx = self.state.subscribe();
        // Timing out only means "still running": the snapshot then carries no result.
        let _ = tokio::time::timeout(limit, rx.wait_for(Snapshot::finished)).await;
        rx.borrow().clone()
    }
}

/// A submission's task, and whether it existed already (an idempotent resubmission).
#[derive(Debug)]
pub struct Admission<R> {
    /// The task.
    pub task: Arc<Task<R>>,
    /// `true` when the key named an earlier task, which is answered instead.
    pub deduplicated: bool,
    /// The key's earlier task, when its answer did not settle the key (see [`Tasks::admit`]):
    /// the new task replaces it.
    pub replaced: Option<Snapshot<R>>,
}

/// The task table: tasks by id and by `(submitter, idempotency_key)`, oldest first.
#[derive(Debug)]
pub struct Tasks<R> {
    table: Mutex<Table<R>>,
}

#[derive(Debug)]
struct Table<R> {
    by_id: HashMap<String, Arc<Task<R>>>,
    by_key: HashMap<(House, String), Arc<Task<R>>>,
    order: VecDeque<Arc<Task<R>>>,
}

impl<R> Default for Tasks<R> {
    fn default() -> Tasks<R> {
        Tasks { table: Mutex::new(Table { by_id: HashMap::new(), by_key: HashMap::new(), order: VecDeque::new() }) }
    }
}

impl<R: Clone> Tasks<R> {
    fn table(&self) -> std::sync::MutexGuard<'_, Table<R>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The task `caller` submitted under `key`, if the table holds it.
    pub fn find(&self, caller: House, key: &str) -> Option<Arc<Task<R>>> {
        self.table().by_key.get(&(caller, key.to_owned())).cloned()
    }

    /// The task for `caller`'s submission of `call` (its fingerprint) under `key`: the
    /// existing one (deduplicated), else a new `Pending` task. An existing task whose answer
    /// `released` says did not settle the key (nothing ran, or its fate is the worker's to
    /// tell) is replaced by the new one, and returned as `replaced`. At most `max` tasks are
    /// held; to make room the oldest finished task goes.
    ///
    /// # Errors
    /// E1005 when the key named another call (a key names one call, as on the worker);
    /// E3005 when `max` tasks are held and none of them is finished.
    pub fn admit(
        &self,
        caller: House,
        key: &str,
        call: &str,
        max: usize,
        released: impl Fn(&Snapshot<R>) -> bool,
    ) -> Result<Admission<R>, Error> {
        let mut t = self.table();
        let key = (caller, key.to_owned());
        let mut replaced = None;
        if let Some(task) = t.by_key.get(&key) {
            if task.call != call {
                return Err(Error::new(ErrorCode::InvalidInput, "idempotency key reused for a different call")
                    .with_details(serde_json::json!({ "field": "idempotency_key", "task_id": task.id })));
            }
            let earlier = task.snapshot();
            if !(earlier.finished() && released(&earlier)) {
                return Ok(Admission { task: task.clone(), deduplicated: true, replaced: None });
            }
            replaced = Some(earlier);
            t.by_key.remove(&key);
        }
        while t.order.len() >= max {
            let Some(pos) = t.order.iter().position(|x| x.state.borrow().finished()) else {
                return Err(Error::new(ErrorCode::Saturated, format!("the router holds {max} unfinished tasks")));
            };
            if let Some(old) = t.order.remove(pos) {
                t.by_id.remove(&old.id);
                let k = (old.submitter, old.key.clone());
                // A replaced task's key names its successor now.
                if t.by_key.get(&k).is_some_and(|x| Arc::ptr_eq(x, &old)) {
                    t.by_key.remove(&k);
                }
            }
        }
        let snapshot = Snapshot { state: State::Pending, assigned: None, node: String::new(), result: None };
        let task = Arc::new(Task {
            id: uni_wizard::provenance::new_id(),
            submitter: caller,
            key: key.1.clone(),
            call: call.to_owned(),
            state: watch::channel(snapshot).0,
        });
        t.by_id.insert(task.id.clone(), task.clone());
        t.by_key.insert(key, task.clone());
        t.order.push_back(task.clone());
        Ok(Admission { task, deduplicated: false, replaced })
    }

    /// The task `id` if `caller` may read it: a house sees the tasks it submitted, Timmy sees
    /// every task.
    ///
    /// # Errors
    /// E5003 for anyone else, the same whether the task exists, expired or is another house's,
    /// so task ids cannot be probed; only Timmy is told E3006 for a task the table does not hold.
    pub fn visible(&self, caller: House, id: &str) -> Result<Arc<Task<R>>, Error> {
        match self.table().by_id.get(id).cloned() {
            Some(t) if caller == House::Timmy || t.submitter == caller => Ok(t),
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
            .with_details(json!({ "house": caller, "call": "read task status", "task_id": id }))),
        }
    }

    /// How many tasks the table holds.
    pub fn len(&self) -> usize {
        self.table().order.len()
    }

    /// Whether the table holds no task.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The houses that fit `tool` (of `category`), in preference order: `routes[tool]`, else
/// `routes[category]`, else every house of the fleet by `priority` (lower first).
pub fn route(
    routes: &BTreeMap<String, Vec<House>>,
    fleet: impl IntoIterator<Item = (House, u32)>,
    tool: &str,
    category: Option<&str>,
) -> Vec<House> {
    if let Some(r) = routes.get(tool).or_else(|| category.and_then(|c| routes.get(c))) {
        return r.clone();
    }
    let mut all: Vec<(u32, House)> = fleet.into_iter().map(|(h, p)| (p, h)).collect();
    all.sort();
    all.into_iter().map(|(_, h)| h).collect()
}

/// What [`candidates`] chooses from.
#[derive(Debug, Clone, Copy)]
pub struct Choice<'a> {
    /// The route for the tool ([`route`]).
    pub route: &'a [House],
    /// The houses the fleet has; route entries outside it are skipped (a partial fleet).
    pub fleet: &'a [House],
    /// The caller's preferred house.
    pub preferred: Option<House>,
    /// The house the pattern DB predicts best for the tool; used only without `preferred`.
    pub best: Option<House>,
}

/// The houses to try, in order, and the state each house of the choice was in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    /// Whom to try, first first.
    pub order: Vec<House>,
    /// Every house considered (preferred, then the route) with its membership state.
    pub states: Vec<(House, NodeState)>,
}

/// The candidates of a choice, given each house's membership `state`.
///
/// Houses down are skipped; houses up keep the route's order and go before houses not probed
/// yet; the predicted best house leads the houses up when there is no preferred house; a
/// preferred house goes first of all unless it is down (not probed yet is no reason to pass it
/// over: if it cannot be reached, nothing ran there and the next candidate is tried).
pub fn candidates(c: Choice<'_>, state: impl Fn(House) -> NodeState) -> Candidates {
    let mut considered: Vec<House> = Vec::new();
    for h in c.preferred.iter().chain(c.route) {
        if !considered.contains(h) && c.fleet.contains(h) {
            considered.push(*h);
        }
    }
    let states: Vec<(House, NodeState)> = considered.iter().map(|h| (*h, state(*h))).collect();
    let mut order: Vec<House> = states.iter().filter(|(_, s)| *s == NodeState::Up).map(|(h, _)| *h).collect();
    let to_front = |order: &mut Vec<House>, h: House| {
        if let Some(pos) = order.iter().position(|x| *x == h) {
            let h = order.remove(pos);
            order.insert(0, h);
        }
    };
    if c.preferred.is_none()
        && let Some(best) = c.best
    {
        to_front(&mut order, best);
    }
    order.extend(states.iter().filter(|(_, s)| *s == NodeState::Unknown).map(|(h, _)| *h));
    if let Some(p) = c.preferred {
        to_front(&mut order, p);
    }
    Candidates { order, states }
}

/// How one dispatch attempt to one house ended, as far as the router can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The worker answered (an outcome or the tool's error), or refused the dispatch itself
    /// (auth, fencing, wrong house: the worker is fine). The task is done.
    Answered,
    /// The worker answered that it is saturated (E3005): nothing ran there.
    Saturated,
    /// No channel to the house could be built (its endpoint): nothing ran there.
    NoChannel,
    /// The connection was never made: nothing ran there, and the house is down.
    NotConnected,
    /// The connection broke or the deadline passed after the call was sent: the tool may have
    /// run, and the house is down.
    Lost,
}

impl Attempt {
    /// Whether the attempt shows the house is down (the membership view should hear of it).
    pub const fn house_down(self) -> bool {
        matches!(self, Attempt::NotConnected | Attempt::Lost)
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The attempt's answer is the task's result.
    Finish,
    /// Try the next candidate.
    Next,
    /// Fail the task as lost (E3012 with `maybe_ran`): a call that may have changed something
    /// is never run twice.
    Lost,
}

/// The failover policy: move on when nothing can have run there, or when the tool is
/// `safe_to_repeat` (read-only or idempotent); a lost call that may have changed something
/// fails instead.
pub const fn failover(attempt: Attempt, safe_to_repeat: bool) -> Verdict {
    match attempt {
        Attempt::Answered => Verdict::Finish,
        Attempt::Saturated | Attempt::NoChannel | Attempt::NotConnected => Verdict::Next,
        Attempt::Lost if safe_to_repeat => Verdict::Next,
        Attempt::Lost => Verdict::Lost,
    }
}

/// One candidate that passed the task on: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    /// The house.
    pub house: House,
    /// The E-code of why (E3005 saturated, E3012 unreachable, ...), as its text.
    pub code: String,
    /// The reason.
    pub message: String,
}

/// The error of a task every candidate passed on: the last saturation (E3005) with its message
/// when the last candidate was saturated, else E3011; the details name the tool, every house
/// considered with its state, and every house tried.
pub fn exhausted(tool: &str, states: &[(House, NodeState)], passed: &[Passed]) -> Error {
    let tried: Vec<Value> =
        passed.iter().map(|p| json!({ "house": p.house, "code": p.code, "error": p.message })).collect();
    let states: Vec<Value> = states.iter().map(|(h, s)| json!({ "house": h, "state": s })).collect();
    let e = match passed.last() {
        Some(p) if p.code == ErrorCode::Saturated.as_str() => Error::new(ErrorCode::Saturated, p.message.clone()),
        _ => Error::new(ErrorCode::NoHealthyHouse, format!("no house that fits `{tool}` is up")),
    };
    e.with_details(json!({ "tool": tool, "candidates": states, "tried": tried }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the single router leads under term 0, a leader under its term, and a follower
    /// and a router with no leader refuse with E3014, the follower naming the leader.
    #[test]
    fn only_the_leader_admits() {
        assert_eq!(leading(None).expect("single router"), 0);
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        assert_eq!(leading(Some(&Leadership::Leader { term: 42, valid_until: until })).expect("leader"), 42);
        let leader =
            LeaderInfo { house: House::Allegro, node: "a1".into(), endpoint: "10.0.0.2:7443".into(), term: 43 };
        let e = leading(Some(&Leadership::Follower { leader })).expect_err("follower");
        assert_eq!(e.code, ErrorCode::NotLeader);
        assert_eq!(
            (e.details["leader_house"].clone(), e.details["leader_endpoint"].clone()),
            (json!("allegro"), json!("10.0.0.2:7443"))
        );
        assert_eq!(e.details["term"], 43);
        let e = leading(Some(&Leadership::Unavailable { reason: "etcd unreachable".into() })).expect_err("none");
        assert_eq!(e.code, ErrorCode::NotLeader);
        assert!(e.details.get("leader_house").is_none() && e.message.contains("etcd unreachable"), "{e:?}");
    }
    use House::{Allegro, Bezalel, Ezra, Timmy};
    use NodeState::{Down, Unknown, Up};

    const FLEET: [House; 4] = [Timmy, Allegro, Ezra, Bezalel];

    fn states(list: &[(House, NodeState)]) -> impl Fn(House) -> NodeState + '_ {
        move |h| list.iter().find(|(x, _)| *x == h).map_or(Unknown, |(_, s)| *s)
    }

    fn order(route: &[House], preferred: Option<House>, best: Option<House>, s: &[(House, NodeState)]) -> Vec<House> {
        candidates(Choice { route, fleet: &FLEET, preferred, best }, states(s)).order
    }

    /// Proves a tool's own route wins over its category's, which wins over every house by
    /// priority (lower first, ties by house).
    #[test]
    fn the_route_is_the_tools_then_the_categorys_then_every_house_by_priority() {
        let mut routes = BTreeMap::new();
        routes.insert("file".to_owned(), vec![Ezra, Bezalel]);
        routes.insert("file_write".to_owned(), vec![Bezalel]);
        let fleet = [(Timmy, 1), (Allegro, 0), (Ezra, 2), (Bezalel, 1)];
        assert_eq!(route(&routes, fleet, "file_write", Some("file")), vec![Bezalel]);
        assert_eq!(route(&routes, fleet, "file_read", Some("file")), vec![Ezra, Bezalel]);
        assert_eq!(route(&routes, fleet, "git_status", Some("git")), vec![Allegro, Timmy, Bezalel, Ezra]);
        assert_eq!(route(&routes, fleet, "unknown", None), vec![Allegro, Timmy, Bezalel, Ezra]);
    }

    /// Proves houses down are skipped, houses up keep the route's order ahead of houses not
    /// probed yet, houses outside the fleet are skipped, and each considered house's state is
    /// reported.
    #[test]
    fn candidates_skip_down_houses_and_put_up_before_unprobed() {
        let route = [Ezra, Bezalel, Timmy, Allegro];
        assert_eq!(order(&route, None, None, &[]), vec![Ezra, Bezalel, Timmy, Allegro]);
        let s = [(Ezra, Down), (Timmy, Up), (Allegro, Up)];
        assert_eq!(order(&route, None, None, &s), vec![Timmy, Allegro, Bezalel]);
        let partial =
            candidates(Choice { route: &route, fleet: &[Ezra, Timmy], preferred: None, best: None }, states(&s));
        assert_eq!(partial.order, vec![Timmy]);
        assert_eq!(partial.states, vec![(Ezra, Down), (Timmy, Up)]);
    }

    /// Proves a preferred house goes first whether up or not probed yet, is skipped when down,
    /// and is tried even when the route does not list it.
    #[test]
    fn a_preferred_house_goes_first_unless_it_is_down() {
        let route = [Ezra, Bezalel];
        assert_eq!(order(&route, Some(Bezalel), None, &[(Ezra, Up), (Bezalel, Up)]), vec![Bezalel, Ezra]);
        assert_eq!(order(&route, Some(Bezalel), None, &[(Ezra, Up)]), vec![Bezalel, Ezra], "not probed yet");
        assert_eq!(order(&route, Some(Bezalel), None, &[(Ezra, Up), (Bezalel, Down)]), vec![Ezra]);
        let timmy_off_route = order(&route, Some(Timmy), None, &[(Ezra, Up)]);
        assert_eq!(timmy_off_route, vec![Timmy, Ezra, Bezalel], "off the route");
    }

    /// Proves the predicted best house leads the houses up without a preference, is ignored
    /// when the caller prefers a house, and cannot lift a house that is not up.
    #[test]
    fn the_predicted_best_house_leads_only_without_a_preference() {
        let route = [Ezra, Bezalel, Timmy];
        let all_up = [(Ezra, Up), (Bezalel, Up), (Timmy, Up)];
        assert_eq!(order(&route, None, Some(Timmy), &all_up), vec![Timmy, Ezra, Bezalel]);
        assert_eq!(order(&route, Some(Bezalel), Some(Timmy), &all_up), vec![Bezalel, Ezra, Timmy]);
        let timmy_unprobed = [(Ezra, Up), (Bezalel, Up)];
        assert_eq!(order(&route, None, Some(Timmy), &timmy_unprobed), vec![Ezra, Bezalel, Timmy]);
    }

    /// Proves the failover order: nothing-ran failures move on, a lost call moves on only when
    /// safe to repeat and otherwise fails as lost, an answer finishes; and only unreachable
    /// houses are reported down.
    #[test]
    fn failover_never_runs_a_call_that_may_have_run_twice() {
        for safe in [false, true] {
            assert_eq!(failover(Attempt::Answered, safe), Verdict::Finish);
            assert_eq!(failover(Attempt::Saturated, safe), Verdict::Next);
            assert_eq!(failover(Attempt::NoChannel, safe), Verdict::Next);
            assert_eq!(failover(Attempt::NotConnected, safe), Verdict::Next);
        }
        assert_eq!(failover(Attempt::Lost, true), Verdict::Next);
        assert_eq!(failover(Attempt::Lost, false), Verdict::Lost);
        let down: Vec<bool> =
            [Attempt::Answered, Attempt::Saturated, Attempt::NoChannel, Attempt::NotConnected, Attempt::Lost]
                .map(Attempt::house_down)
                .to_vec();
        assert_eq!(down, vec![false, false, false, true, true]);
    }

    /// Proves a task whose candidates all passed it on is E3005 with the last saturation's
    /// message when the last was saturated, else E3011, naming the tool, states and houses tried.
    #[test]
    fn an_exhausted_task_says_why_and_where_it_was_tried() {
        let passed = |code: &str| Passed { house: Ezra, code: code.into(), message: "full".into() };
        let states = [(Ezra, Up), (Bezalel, Down)];
        let e = exhausted("file_read", &states, &[passed("E3012"), passed("E3005")]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::Saturated, "full"));
        let e = exhausted("file_read", &states, &[passed("E3005"), passed("E3012")]);
        assert_eq!(e.code, ErrorCode::NoHealthyHouse);
        assert_eq!(e.details["tried"].as_array().map(Vec::len), Some(2));
        assert_eq!(e.details["candidates"][1], json!({ "house": "bezalel", "state": "down" }));
        assert_eq!(exhausted("x", &[], &[]).code, ErrorCode::NoHealthyHouse);
    }

    /// Proves a task goes Pending -> Running (the house of the latest attempt) -> final, and
    /// finishes once: a second finish and a late start change nothing.
    #[test]
    fn a_task_moves_pending_running_final_and_finishes_once() {
        let tasks: Tasks<&str> = Tasks::default();
        let task = tasks.admit(Ezra, "k", "", 10, |_| false).expect("admitted").task;
        assert_eq!((task.snapshot().state, task.snapshot().assigned), (State::Pending, None));
        task.start(Ezra);
        task.start(Bezalel);
        assert_eq!((task.snapshot().state, task.snapshot().assigned), (State::Running, Some(Bezalel)));
        assert!(task.finish(State::Succeeded, Some(Bezalel), "b-1".into(), "done"));
        assert!(!task.finish(State::Failed, None, String::new(), "again"));
        task.start(Timmy);
        let s = task.snapshot();
        assert_eq!(
            (s.state, s.assigned, s.node.as_str(), s.result),
            (State::Succeeded, Some(Bezalel), "b-1", Some("done"))
        );
        assert_eq!(State::of_error(Some(ErrorCategory::Policy)), State::Rejected);
        assert_eq!(State::of_error(Some(ErrorCategory::Execution)), State::Failed);
        assert_eq!(State::of_error(None), State::Failed);
    }

    /// Proves a key names one task per house (the same key from another house is another
    /// task), a full table drops its oldest finished task, and a table of unfinished tasks
    /// refuses with E3005.
    #[test]
    fn admission_deduplicates_per_house_and_evicts_the_oldest_finished() {
        let tasks: Tasks<u32> = Tasks::default();
        let first = tasks.admit(Ezra, "k", "", 2, |_| false).expect("admitted");
        let again = tasks.admit(Ezra, "k", "", 2, |_| false).expect("admitted");
        assert!(!first.deduplicated && again.deduplicated && Arc::ptr_eq(&first.task, &again.task));
        let theirs = tasks.admit(Bezalel, "k", "", 2, |_| false).expect("admitted");
        assert!(!theirs.deduplicated && theirs.task.id() != first.task.id());
        assert_eq!(tasks.admit(Timmy, "other", "", 2, |_| false).err().map(|e| e.code), Some(ErrorCode::Saturated));
        theirs.task.finish(State::Failed, None, String::new(), 1);
        let fresh = tasks.admit(Timmy, "other", "", 2, |_| false).expect("room made");
        assert_eq!(tasks.len(), 2);
        assert!(tasks.visible(Timmy, theirs.task.id()).is_err(), "the finished task went");
        fresh.task.finish(State::Succeeded, None, String::new(), 2);
        let again = tasks.admit(Bezalel, "k", "", 2, |_| false).expect("room made again");
        assert!(!again.deduplicated, "its key went with its task");
        assert!(tasks.visible(Timmy, fresh.task.id()).is_err(), "the oldest finished went, not the unfinished");
        assert!(tasks.visible(Timmy, first.task.id()).is_ok());
    }

    /// Proves a key names one call: the same key for another call is E1005 and changes
    /// nothing; a finished task whose answer did not settle the key is replaced by the
    /// resubmission (and handed back), one that settled it is answered again, and a
    /// replaced task stays readable by id while its key names the new one.
    #[test]
    fn a_key_names_one_call_and_an_unsettled_answer_is_replaced() {
        let tasks: Tasks<u32> = Tasks::default();
        let unsettled = |s: &Snapshot<u32>| s.result == Some(0);
        let first = tasks.admit(Ezra, "k", "read a", 10, unsettled).expect("admitted");
        let e = tasks.admit(Ezra, "k", "read b", 10, unsettled).expect_err("another call");
        assert_eq!(e.code, ErrorCode::InvalidInput);
        assert!(e.message.contains("different call"), "{e}");
        let running = tasks.admit(Ezra, "k", "read a", 10, unsettled).expect("the same call");
        assert!(running.deduplicated && running.replaced.is_none(), "unfinished: the same task");
        first.task.finish(State::Failed, None, String::new(), 0);
        let again = tasks.admit(Ezra, "k", "read a", 10, unsettled).expect("resubmitted");
        assert!(!again.deduplicated && again.task.id() != first.task.id());
        assert_eq!(again.replaced.map(|s| s.result), Some(Some(0)));
        assert!(tasks.visible(Ezra, first.task.id()).is_ok(), "the replaced task is still readable");
        again.task.finish(State::Succeeded, None, String::new(), 7);
        let settled = tasks.admit(Ezra, "k", "read a", 10, unsettled).expect("resubmitted");
        assert!(settled.deduplicated && Arc::ptr_eq(&settled.task, &again.task), "a settled answer is kept");
    }

    /// Proves a task is visible to its submitter and Timmy only, and another house gets the
    /// same E5003 for someone else's task as for one that does not exist; Timmy gets E3006.
    #[test]
    fn a_task_is_visible_to_its_submitter_and_timmy_only() {
        let tasks: Tasks<()> = Tasks::default();
        let task = tasks.admit(Ezra, "k", "", 10, |_| false).expect("admitted").task;
        assert_eq!(task.submitter(), Ezra);
        assert!(tasks.visible(Ezra, task.id()).is_ok());
        assert!(tasks.visible(Timmy, task.id()).is_ok());
        let theirs = tasks.visible(Bezalel, task.id()).expect_err("refused");
        let missing = tasks.visible(Bezalel, "no-such-task").expect_err("refused");
        assert_eq!((theirs.code, missing.code), (ErrorCode::Forbidden, ErrorCode::Forbidden));
        assert_eq!(theirs.message.replace(task.id(), "ID"), missing.message.replace("no-such-task", "ID"));
        assert_eq!(tasks.visible(Timmy, "no-such-task").err().map(|e| e.code), Some(ErrorCode::NotFound));
    }

    /// Proves `wait` returns the unfinished task once the limit passes, and the finished one
    /// as soon as it finishes.
    #[tokio::test]
    async fn waiting_ends_at_the_finish_or_the_limit() {
        let tasks: Tasks<u8> = Tasks::default();
        let task = tasks.admit(Ezra, "k", "", 10, |_| false).expect("admitted").task;
        assert_eq!(task.wait(Duration::from_millis(20)).await.result, None);
        let t = task.clone();
        tokio::spawn(async move { t.finish(State::Succeeded, Some(Ezra), String::new(), 7) });
        let started = std::time::Instant::now();
        assert_eq!(task.wait(Duration::from_secs(60)).await.result, Some(7));
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
