//! The executor stack (limit -> breaker -> retry -> timeout -> tool) seen through the real
//! [`Harness`], with a scripted tool and tokio's paused clock: no test sleeps for real.
//!
//! The paused clock fires timers on whole milliseconds (tokio rounds every deadline up to the
//! next millisecond), so a gap that should be `d` is measured as `d` rounded up to a whole
//! millisecond; the assertions allow exactly that and no more.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uni_wizard::contract::{Annotations, Category, Contract, ContractSpec, Risk};
use uni_wizard::executor::{BreakerConfig, BreakerState, LimitConfig, RetryConfig, RetryPolicy};
use uni_wizard::future::BoxFuture;
use uni_wizard::tools::{Registry, Tool, ToolContext, arg_str};
use uni_wizard::{Config, Error, ErrorCode, Harness, House, Mode, Outcome, Request, Result};

const MS: Duration = Duration::from_millis(1);

/// What the scripted tool does on one invocation.
#[derive(Clone)]
enum Behavior {
    /// Returns at once with success.
    Succeed,
    /// Fails at once with E3004.
    FailTransient,
    /// Fails at once with E3003.
    FailPermanent,
    /// Sleeps on tokio's clock, then succeeds.
    Sleep(Duration),
    /// Sleeps for the call's `sleep_ms` argument, then succeeds.
    SleepArg,
    /// Waits until the gate is notified, then succeeds.
    Gate(Arc<Notify>),
}

/// A tool whose invocations follow a script and are recorded with their paused-clock instant.
struct ScriptedTool {
    contract: Contract,
    script: Mutex<VecDeque<Behavior>>,
    otherwise: Behavior,
    calls: Mutex<Vec<(Instant, String)>>,
}

impl ScriptedTool {
    /// A tool named `name`; once the script runs out, every call does `otherwise`.
    fn new(name: &'static str, idempotent: bool, otherwise: Behavior) -> Arc<ScriptedTool> {
        let contract = Contract::new(ContractSpec {
            name,
            category: Category::System,
            description: "A test tool that follows a script.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "target": {"type": "string"},
                    "sleep_ms": {"type": "integer", "minimum": 0},
                    "tag": {"type": "integer"}
                },
                "additionalProperties": false
            }),
            output_schema: json!({"type": "object"}),
            annotations: Annotations { read_only: true, destructive: false, idempotent, open_world: false },
            risk: Risk::Low,
            default_timeout: Duration::from_secs(60),
            dry_run: false,
            content_guard: false,
        })
        .expect("the test contract compiles");
        Arc::new(ScriptedTool { contract, script: Mutex::default(), otherwise, calls: Mutex::default() })
    }

    /// Queues behaviours for the next invocations.
    fn then(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.script.lock().expect("script lock").extend(behaviors);
    }

    /// How many times the tool has been invoked.
    fn count(&self) -> usize {
        self.calls.lock().expect("calls lock").len()
    }

    /// The instant of every invocation, in order.
    fn instants(&self) -> Vec<Instant> {
        self.calls.lock().expect("calls lock").iter().map(|(t, _)| *t).collect()
    }

    /// The gaps between consecutive invocations.
    fn gaps(&self) -> Vec<Duration> {
        self.instants().windows(2).map(|w| w[1] - w[0]).collect()
    }
}

impl Tool for ScriptedTool {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn target(&self, args: &Value) -> String {
        arg_str(args, "target").to_owned()
    }

    fn changes_production(&self, _: &Value) -> bool {
        false
    }

    fn call<'a>(&'a self, _: &'a ToolContext, args: &'a Value) -> BoxFuture<'a, Result<Value>> {
        let behavior = self.script.lock().expect("script lock").pop_front().unwrap_or_else(|| self.otherwise.clone());
        let n = {
            let mut calls = self.calls.lock().expect("calls lock");
            calls.push((Instant::now(), arg_str(args, "target").to_owned()));
            calls.len()
        };
        let name = self.contract.spec().name;
        Box::pin(async move {
            match behavior {
                Behavior::Succeed => {}
                Behavior::FailTransient => {
                    return Err(Error::new(
                        ErrorCode::ToolFailedTransient,
                        format!("{name}: scripted transient failure"),
                    ));
                }
                Behavior::FailPermanent => {
                    return Err(Error::new(ErrorCode::ToolFailed, format!("{name}: scripted permanent failure")));
                }
                Behavior::Sleep(d) => tokio::time::sleep(d).await,
                Behavior::SleepArg => {
                    let ms = args.get("sleep_ms").and_then(Value::as_u64).expect("SleepArg needs sleep_ms");
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Behavior::Gate(gate) => gate.notified().await,
            }
            Ok(json!({ "call": n, "args": args }))
        })
    }
}

/// A config with these executor settings and defaults elsewhere.
fn config(retry: RetryConfig, breaker: BreakerConfig, limit: LimitConfig) -> Config {
    let mut c = Config { node: Some("test-node".into()), ..Config::default() };
    c.executor.retry = retry;
    c.executor.breaker = breaker;
    c.executor.limit = limit;
    c
}

/// Retry settings: `max_retries` after the first attempt, delays from `min` up to `max` ms.
fn retry(max_retries: usize, min_delay_ms: u64, max_delay_ms: u64, jitter: bool) -> RetryConfig {
    RetryConfig { max_retries, min_delay_ms, max_delay_ms, jitter }
}

/// No retries at all.
fn no_retry() -> RetryConfig {
    retry(0, 100, 1000, false)
}

/// A breaker with this threshold and a 1 s first cool-down.
fn breaker(failure_threshold: u32) -> BreakerConfig {
    BreakerConfig { failure_threshold, cooldown_ms: 1000, max_cooldown_ms: 60_000, ..BreakerConfig::default() }
}

/// A breaker that never trips in these tests.
fn no_breaker() -> BreakerConfig {
    breaker(1_000_000)
}

/// A harness for Timmy in `mode` over the given tools.
fn harness(mode: Mode, config: Config, tools: &[Arc<ScriptedTool>]) -> Harness {
    let mut registry = Registry::empty();
    for t in tools {
        registry.add(t.clone());
    }
    Harness::builder()
        .house(House::Timmy)
        .mode(mode)
        .config(config)
        .registry(registry)
        .build()
        .expect("the test harness builds")
}

/// A request for `tool` on `target` with a per-attempt timeout.
fn request(tool: &str, target: &str, timeout: Option<Duration>) -> Request {
    Request { timeout, ..Request::new(tool, json!({ "target": target })) }
}

/// Runs one request and returns its result with the paused time it took.
async fn timed(h: &Harness, req: Request) -> (Result<Outcome>, Duration) {
    let t0 = Instant::now();
    let r = h.execute_request(req).await;
    (r, t0.elapsed())
}

/// The error of a call that must fail.
fn err(r: Result<Outcome>) -> Error {
    match r {
        Ok(o) => panic!("expected an error, got output {}", o.output),
        Err(e) => e,
    }
}

/// Yields to the other tasks until `done` holds, failing after a bounded number of rounds.
/// Yielding never lets the paused clock advance.
async fn settle(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("gave up waiting until {what}");
}

/// Asserts `got` is `want` up to tokio's millisecond timer granularity (`want <= got <= want + 1 ms`).
#[track_caller]
fn assert_about(got: Duration, want: Duration) {
    assert!(want <= got && got <= want + MS, "expected {want:?} (up to 1 ms later), got {got:?}");
}

/// Timeout: a 10 s tool under a 2 s timeout fails with E3001 at exactly 2 s; a 1.9 s tool passes.
async fn timeout_fires_at_its_deadline_in(mode: Mode) {
    let tool = ScriptedTool::new("scripted", true, Behavior::Succeed);
    tool.then([Behavior::Sleep(Duration::from_secs(10)), Behavior::Sleep(Duration::from_millis(1900))]);
    let h = harness(mode, config(no_retry(), no_breaker(), LimitConfig::default()), std::slice::from_ref(&tool));

    let (r, elapsed) = timed(&h, request("scripted", "t", Some(Duration::from_secs(2)))).await;
    let e = err(r);
    assert_eq!(e.code, ErrorCode::Timeout, "{e}");
    assert_eq!(e.details["timeout_ms"], 2000);
    assert!(e.request_id.is_some(), "the harness names the request");
    assert_about(elapsed, Duration::from_secs(2));

    let (r, elapsed) = timed(&h, request("scripted", "t", Some(Duration::from_secs(2)))).await;
    let o = r.expect("a 1.9 s call fits in a 2 s timeout");
    assert_eq!(o.attempts, 1);
    assert_about(elapsed, Duration::from_millis(1900));
    assert_eq!(tool.count(), 2);
}

/// Proves the timeout fires exactly at its deadline (E3001 at 2 s) through the full stack.
#[tokio::test(start_paused = true)]
async fn timeout_fires_at_its_deadline_intelligent() {
    timeout_fires_at_its_deadline_in(Mode::Intelligent).await;
}

/// Proves the timeout fires exactly at its deadline (E3001 at 2 s) in Simple mode too.
#[tokio::test(start_paused = true)]
async fn timeout_fires_at_its_deadline_simple() {
    timeout_fires_at_its_deadline_in(Mode::Simple).await;
}

/// Proves the configured ceiling `max_timeout_ms` bounds a longer per-call timeout.
#[tokio::test(start_paused = true)]
async fn max_timeout_caps_the_requested_timeout() {
    let tool = ScriptedTool::new("scripted", true, Behavior::Sleep(Duration::from_secs(10)));
    let mut c = config(no_retry(), no_breaker(), LimitConfig::default());
    c.max_timeout_ms = 3000;
    let h = harness(Mode::Intelligent, c, std::slice::from_ref(&tool));
    let (r, elapsed) = timed(&h, request("scripted", "t", Some(Duration::from_secs(5)))).await;
    assert_eq!(err(r).code, ErrorCode::Timeout);
    assert_about(elapsed, Duration::from_secs(3));
}

/// Runs an always-transiently-failing idempotent tool once and returns the gaps between attempts.
async fn gaps_of_failing_call(retry: RetryConfig) -> Vec<Duration> {
    let tool = ScriptedTool::new("scripted", true, Behavior::FailTransient);
    let max_retries = retry.max_retries;
    let h =
        harness(Mode::Intelligent, config(retry, no_breaker(), LimitConfig::default()), std::slice::from_ref(&tool));
    let (r, elapsed) = timed(&h, request("scripted", "t", None)).await;
    assert_eq!(err(r).code, ErrorCode::ToolFailedTransient);
    assert_eq!(tool.count(), max_retries + 1, "one attempt plus every retry, and no more");
    let gaps = tool.gaps();
    assert_eq!(elapsed, gaps.iter().sum::<Duration>(), "nothing waits after the last attempt");
    gaps
}

/// Proves jittered retry delays stay in [base, 2*base) for bases 100/200/400 ms and stop after
/// 3 retries (4 attempts, E3004), and that the jitter really varies between calls.
#[tokio::test(start_paused = true)]
async fn retry_delays_grow_exponentially_with_jitter_and_stop_at_the_budget() {
    let bases = [100u64, 200, 400].map(Duration::from_millis);
    let mut runs = Vec::new();
    for _ in 0..20 {
        let gaps = gaps_of_failing_call(retry(3, 100, 1000, true)).await;
        assert_eq!(gaps.len(), 3);
        for (gap, base) in gaps.iter().zip(bases) {
            // backon adds up to 100 % of the base (so < 2*base); tokio rounds up to the next ms.
            assert!(base <= *gap && *gap <= 2 * base, "gap {gap:?} outside [{base:?}, 2*{base:?})");
        }
        runs.push(gaps);
    }
    assert!(runs.iter().any(|g| *g != runs[0]), "20 jittered runs all waited the same: {:?}", runs[0]);
}

/// Proves without jitter the retry delays are exactly 100, 200 and 400 ms.
#[tokio::test(start_paused = true)]
async fn retry_delays_without_jitter_are_exact() {
    let gaps = gaps_of_failing_call(retry(3, 100, 1000, false)).await;
    // backon doubles in f32 (200 ms becomes 200.000003 ms) and tokio rounds each sleep up to
    // the next millisecond, so the measured gaps are 100, 201 and 401 ms.
    let want = [100u64, 200, 400].map(Duration::from_millis);
    assert_eq!(gaps.len(), want.len());
    for (gap, want) in gaps.into_iter().zip(want) {
        assert_about(gap, want);
    }
}

/// Proves `max_delay_ms` caps the base delay: min 100, max 150 gives 100, 150, 150 ms.
#[tokio::test(start_paused = true)]
async fn retry_max_delay_caps_the_base() {
    let gaps = gaps_of_failing_call(retry(3, 100, 150, false)).await;
    assert_eq!(gaps, [100u64, 150, 150].map(Duration::from_millis));
    for gap in gaps_of_failing_call(retry(3, 100, 150, true)).await.into_iter().skip(1) {
        assert!(Duration::from_millis(150) <= gap && gap <= Duration::from_millis(300), "capped gap {gap:?}");
    }
}

/// Proves the policy's own schedule (what the executor sleeps) is 100/200/400 ms without jitter.
#[test]
fn retry_policy_schedule_is_exponential() {
    let delays = RetryPolicy::new(retry(3, 100, 1000, false)).delays();
    let want = [100u64, 200, 400].map(Duration::from_millis);
    assert_eq!(delays.len(), 3);
    for (d, w) in delays.into_iter().zip(want) {
        // backon multiplies in f32, so a few nanoseconds of drift are expected.
        assert!(d.abs_diff(w) < Duration::from_micros(1), "delay {d:?}, want {w:?}");
    }
}

/// Proves a call that fails transiently and then succeeds reports every attempt in the outcome.
#[tokio::test(start_paused = true)]
async fn retried_success_reports_its_attempts() {
    let tool = ScriptedTool::new("scripted", true, Behavior::Succeed);
    tool.then([Behavior::FailTransient, Behavior::FailTransient]);
    let h = harness(
        Mode::Intelligent,
        config(retry(3, 100, 1000, false), no_breaker(), LimitConfig::default()),
        std::slice::from_ref(&tool),
    );
    let o = h.execute("scripted", json!({ "target": "t" })).await.expect("the third attempt succeeds");
    assert_eq!(o.attempts, 3);
    assert_eq!(o.output["call"], 3);
}

/// Proves a permanent failure (E3003) is not retried: exactly one attempt.
#[tokio::test(start_paused = true)]
async fn permanent_failure_is_not_retried() {
    let tool = ScriptedTool::new("scripted", true, Behavior::FailPermanent);
    let h = harness(
        Mode::Intelligent,
        config(retry(3, 100, 1000, true), no_breaker(), LimitConfig::default()),
        std::slice::from_ref(&tool),
    );
    let (r, elapsed) = timed(&h, request("scripted", "t", None)).await;
    assert_eq!(err(r).code, ErrorCode::ToolFailed);
    assert_eq!(tool.count(), 1);
    assert_eq!(elapsed, Duration::ZERO, "no backoff was slept");
}

/// Proves a transient timeout (E3001) of an idempotent tool is retried, each attempt bounded.
#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_per_attempt() {
    let tool = ScriptedTool::new("scripted", true, Behavior::Succeed);
    tool.then([Behavior::Sleep(Duration::from_secs(10))]);
    let h = harness(
        Mode::Intelligent,
        config(retry(3, 100, 1000, false), no_breaker(), LimitConfig::default()),
        std::slice::from_ref(&tool),
    );
    let (r, elapsed) = timed(&h, request("scripted", "t", Some(Duration::from_secs(2)))).await;
    assert_eq!(r.expect("the second attempt succeeds").attempts, 2);
    assert_about(elapsed, Duration::from_millis(2100));
}

/// Proves a non-idempotent tool is not retried (1 attempt, E3004) unless the call carries an
/// idempotency key (then 4 attempts).
#[tokio::test(start_paused = true)]
async fn non_idempotent_tool_is_retried_only_with_an_idempotency_key() {
    let tool = ScriptedTool::new("scripted_once", false, Behavior::FailTransient);
    let h = harness(
        Mode::Intelligent,
        config(retry(3, 100, 1000, true), no_breaker(), LimitConfig::default()),
        std::slice::from_ref(&tool),
    );

    let e = err(h.execute_request(request("scripted_once", "t", None)).await);
    assert_eq!(e.code, ErrorCode::ToolFailedTransient);
    assert_eq!(tool.count(), 1, "not idempotent, no key: no retry");

    let keyed = Request { idempotency_key: Some("op-42".into()), ..request("scripted_once", "t", None) };
    let e = err(h.execute_request(keyed).await);
    assert_eq!(e.code, ErrorCode::ToolFailedTransient);
    assert_eq!(tool.count(), 1 + 4, "with a key: one attempt plus three retries");
}

/// Proves the breaker opens after 3 consecutive failures and then refuses at once (E3002, no
/// tool call, no time spent, `retry_after_ms` in the details).
#[tokio::test(start_paused = true)]
async fn breaker_opens_after_threshold_and_refuses_without_calling_the_tool() {
    let tool = ScriptedTool::new("scripted", true, Behavior::FailPermanent);
    let h =
        harness(Mode::Intelligent, config(no_retry(), breaker(3), LimitConfig::default()), std::slice::from_ref(&tool));

    for i in 1..=3 {
        let e = err(h.execute_request(request("scripted", "a", None)).await);
        assert_eq!(e.code, ErrorCode::ToolFailed, "failure {i} reaches the tool");
        assert_eq!(tool.count(), i);
    }
    let (r, elapsed) = timed(&h, request("scripted", "a", None)).await;
    let e = err(r);
    assert_eq!(e.code, ErrorCode::BreakerOpen, "{e}");
    assert_eq!(tool.count(), 3, "the open breaker did not call the tool");
    assert_eq!(elapsed, Duration::ZERO, "refused at once");
    assert_eq!(e.details["retry_after_ms"], 1000);
    assert_eq!(e.details["target"], "a");
    assert_eq!(e.details["tool"], "scripted");
    assert_eq!(h.executor().breakers().not_closed(), vec![("scripted".to_owned(), "a".to_owned(), BreakerState::Open)]);

    tokio::time::advance(Duration::from_millis(400)).await;
    let e = err(h.execute_request(request("scripted", "a", None)).await);
    assert_eq!(e.code, ErrorCode::BreakerOpen);
    assert_eq!(e.details["retry_after_ms"], 600, "the wait shrinks as the cool-down passes");
}

/// Proves failures on one target never open another target's breaker.
#[tokio::test(start_paused = true)]
async fn breaker_is_per_target() {
    let tool = ScriptedTool::new("scripted", true, Behavior::Succeed);
    let h =
        harness(Mode::Intelligent, config(no_retry(), breaker(3), LimitConfig::default()), std::slice::from_ref(&tool));

    tool.then(std::iter::repeat_n(Behavior::FailPermanent, 2));
    for _ in 0..2 {
        assert_eq!(err(h.execute_request(request("scripted", "a", None)).await).code, ErrorCode::ToolFailed);
    }
    tool.then(std::iter::repeat_n(Behavior::FailPermanent, 3));
    for _ in 0..3 {
        assert_eq!(err(h.execute_request(request("scripted", "b", None)).await).code, ErrorCode::ToolFailed);
    }
    assert_eq!(err(h.execute_request(request("scripted", "b", None)).await).code, ErrorCode::BreakerOpen);

    // Two failures on `a`, then three on `b`: `a` is still closed and reaches the tool.
    let before = tool.count();
    h.execute_request(request("scripted", "a", None)).await.expect("a's breaker is closed");
    assert_eq!(tool.count(), before + 1);
    assert_eq!(h.executor().breakers().not_closed(), vec![("scripted".to_owned(), "b".to_owned(), BreakerState::Open)]);
}

/// Opens the breaker of `scripted` on `a` with 3 failures (threshold 3, cool-down 1 s).
async fn trip(h: &Harness, tool: &ScriptedTool) {
    tool.then(std::iter::repeat_n(Behavior::FailPermanent, 3));
    for _ in 0..3 {
        assert_eq!(err(h.execute_request(request("scripted", "a", None)).await).code, ErrorCode::ToolFailed);
    }
    assert_eq!(err(h.execute_request(request("scripted", "a", None)).await).code, ErrorCode::BreakerOpen);
}

/// Proves a half-open breaker admits exactly one probe among 100 concurrent callers (the other
/// 99 get E3002), and that the probe's success closes the breaker.
#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_one_probe_among_100_callers() {
    let tool = ScriptedTool::new("scripted", true, Behavior::Succeed);
    let limit = LimitConfig { max_concurrency: 256, ..LimitConfig::default() };
    let h = harness(Mode::Intelligent, config(no_retry(), breaker(3), limit), std::slice::from_ref(&tool));
    trip(&h, &tool).await;

    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        h.executor().breakers().not_closed(),
        vec![("scripted".to_owned(), "a".to_owned(), BreakerState::HalfOpen)]
    );
    let gate = Arc::new(Notify::new());
    tool.then([Behavior::Gate(gate.clone())]);
    let before = tool.count();
    let t0 = Instant::now();
    let calls: Vec<JoinHandle<Result<Outcome>>> = (0..100)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.execute_request(request("scripted", "a", None)).await })
        })
        .collect();
    settle("99 callers are refused", || calls.iter().filter(|c| c.is_finished()).count() == 99).await;
    assert_eq!(tool.count(), before + 1, "exactly one probe reached the tool");
    assert_eq!(Instant::now(), t0, "everything so far took no time");

    gate.notify_one();
    let mut ok = 0;
    for c in calls {
        match c.await.expect("call task") {
            Ok(o) => {
                ok += 1;
                assert_eq!(o.attempts, 1);
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::BreakerOpen, "{e}");
                assert_eq!(e.details["retry_after_ms"], 0, "half-open: a probe is already in flight");
            }
        }
    }
    assert_eq!(ok, 1, "only the probe succeeded");
    assert!(h.executor().breakers().not_closed().is_empty(), "the probe's success closed the breaker");

    for i in 1..=3 {
        h.execute_request(request("scripted", "a", None)).await.expect("closed breaker lets calls through");
        assert_eq!(tool.count(), before + 1 + i);
    }
}

/// Proves a failed probe reopens the breaker for a doubled cool-down (2 s after a 1 s one).
#[tokio::test(start_paused = true)]
async fn failed_probe_reopens_for_a_doubled_cooldown() {
    let tool = ScriptedTool::new("scripted", true, Behavior::Succeed);
    let h =
        harness(Mode::Intelligent, config(no_retry(), breaker(3), LimitConfig::default()), std::slice::from_ref(&tool));
    trip(&h, &tool).await;

    tokio::time::sleep(Duration::from_millis(1000)).await;
    tool.then([Behavior::FailPermanent]);
    let before = tool.count();
    assert_eq!(err(h.execute_request(request("scripted", "a", None)).await).code, ErrorCode::ToolFailed);
    assert_eq!(tool.count(), before + 1, "the probe ran");

    let e = err(h.execute_request(request("scripted", "a", None)).await);
    assert_eq!(e.code, ErrorCode::BreakerOpen);
    assert_eq!(e.details["retry_after_ms"], 2000, "the cool-down doubled");
    tokio::time::sleep(Duration::from_millis(1999)).await;
    assert_eq!(err(h.execute_request(request("scripted", "a", None)).await).code, ErrorCode::BreakerOpen);
    assert_eq!(tool.count(), before + 1, "still open: no call reached the tool");

    tokio::time::sleep(MS).await;
    h.execute_request(request("scripted", "a", None)).await.expect("the second probe succeeds");
    assert!(h.executor().breakers().not_closed().is_empty());

    // Revived: the next trip starts again from the first cool-down.
    trip(&h, &tool).await;
    let e = err(h.execute_request(request("scripted", "a", None)).await);
    assert_eq!(e.details["retry_after_ms"], 1000, "a closed breaker forgets the doubled cool-down");
}

/// Proves a probe cancelled mid-flight does not wedge the breaker half-open: the next caller probes.
#[tokio::test(start_paused = true)]
async fn cancelled_probe_lets_the_next_caller_probe() {
    let tool = ScriptedTool::new("scripted", true, Behavior::Succeed);
    let h =
        harness(Mode::Intelligent, config(no_retry(), breaker(3), LimitConfig::default()), std::slice::from_ref(&tool));
    trip(&h, &tool).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let gate = Arc::new(Notify::new());
    tool.then([Behavior::Gate(gate)]);
    let before = tool.count();
    let probe = {
        let h = h.clone();
        tokio::spawn(async move { h.execute_request(request("scripted", "a", None)).await })
    };
    settle("the probe reaches the tool", || tool.count() == before + 1).await;
    assert_eq!(err(h.execute_request(request("scripted", "a", None)).await).code, ErrorCode::BreakerOpen);
    probe.abort();
    settle("the probe task ends", || probe.is_finished()).await;

    h.execute_request(request("scripted", "a", None)).await.expect("a new probe is admitted and succeeds");
    assert!(h.executor().breakers().not_closed().is_empty());
}

/// Proves the concurrency limit: with 2 slots held, a third call fails with E3005 after exactly
/// the 500 ms queue timeout, and a call succeeds once a slot frees.
#[tokio::test(start_paused = true)]
async fn concurrency_limit_refuses_after_queue_timeout_and_recovers() {
    let tool = ScriptedTool::new("scripted", true, Behavior::Succeed);
    let limit = LimitConfig { max_concurrency: 2, queue_timeout_ms: 500 };
    let h = harness(Mode::Intelligent, config(no_retry(), no_breaker(), limit), std::slice::from_ref(&tool));

    let (g1, g2) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    tool.then([Behavior::Gate(g1.clone()), Behavior::Gate(g2.clone())]);
    let spawn = |h: &Harness| {
        let h = h.clone();
        tokio::spawn(async move { h.execute_request(request("scripted", "t", None)).await })
    };
    let (first, second) = (spawn(&h), spawn(&h));
    settle("both slots are taken", || tool.count() == 2).await;

    let (r, elapsed) = timed(&h, request("scripted", "t", None)).await;
    let e = err(r);
    assert_eq!(e.code, ErrorCode::Saturated, "{e}");
    assert_eq!(e.details["max_concurrency"], 2);
    assert_eq!(e.details["queue_timeout_ms"], 500);
    assert_eq!(elapsed, Duration::from_millis(500), "refused exactly at the queue timeout");
    assert_eq!(tool.count(), 2, "the refused call never reached the tool");

    g1.notify_one();
    first.await.expect("call task").expect("released call succeeds");
    let (r, elapsed) = timed(&h, request("scripted", "t", None)).await;
    r.expect("a freed slot admits the next call");
    assert_eq!(elapsed, Duration::ZERO);

    // A queued call gets the slot as soon as it frees, without waiting out the queue timeout.
    let g3 = Arc::new(Notify::new());
    tool.then([Behavior::Gate(g3.clone())]);
    let third = spawn(&h);
    settle("the third call holds a slot", || tool.count() == 4).await;
    let t0 = Instant::now();
    let queued = spawn(&h);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!queued.is_finished() && tool.count() == 4, "the fourth call waits for a slot");
    g2.notify_one();
    queued.await.expect("call task").expect("the queued call got the freed slot");
    assert_about(t0.elapsed(), Duration::from_millis(200));
    second.await.expect("call task").expect("released call succeeds");
    g3.notify_one();
    third.await.expect("call task").expect("released call succeeds");
}

/// Proves `execute_many` runs calls in parallel (10 calls of ~1 s take 1 s, not 10 s) and
/// returns results in request order even when they finish in reverse.
#[tokio::test(start_paused = true)]
async fn execute_many_runs_in_parallel_and_keeps_request_order() {
    let tool = ScriptedTool::new("scripted", true, Behavior::SleepArg);
    let h = harness(
        Mode::Intelligent,
        config(no_retry(), no_breaker(), LimitConfig::default()),
        std::slice::from_ref(&tool),
    );
    // Request i sleeps 1000 - 10*i ms, so the last request finishes first.
    let requests: Vec<Request> = (0..10u64)
        .map(|i| Request::new("scripted", json!({ "target": format!("t{i}"), "sleep_ms": 1000 - 10 * i, "tag": i })))
        .collect();
    let t0 = Instant::now();
    let results = h.execute_many(requests).await;
    assert_eq!(t0.elapsed(), Duration::from_secs(1), "parallel: the longest call, not the sum");
    assert_eq!(results.len(), 10);
    for (i, r) in results.into_iter().enumerate() {
        let o = r.expect("every call succeeds");
        assert_eq!(o.output["args"]["tag"], i, "result {i} answers request {i}");
    }
    assert_eq!(tool.count(), 10);
}
