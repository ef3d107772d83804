//! Exactly once at the worker, across processes: a keyed `http_post` routed by Timmy to
//! Allegro's worker reaches its target once, whatever restarts and kills happen between
//! resubmissions. The target is a loopback HTTP server in this test that counts the POSTs it
//! receives; every resubmission goes through a freshly started router, so the router's memory
//! of keys cannot be what answers.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use uni_wizard_tests::fleet::Fleet;
use uni_wizard_tests::target::Target;
use uni_wizard_tests::{bin, json_stdout};

/// Timmy routes (router and health only), Allegro is the one worker for network tools and
/// may post to the target (for itself and on Timmy's behalf).
fn fleet(target: &Target) -> Fleet {
    let port = target.port;
    let fleet = Fleet::start(&["timmy", "allegro"], &move |h| {
        if h == "timmy" {
            "roles: [router, health]\nrouter:\n  routes:\n    network: [allegro]\n".into()
        } else {
            let rule =
                format!("{{rules: [{{host: 127.0.0.1, schemes: [http], ports: [{port}], allow_private: true}}]}}");
            format!("    egress:\n      timmy: {rule}\n      allegro: {rule}\nroles: [worker]\n")
        }
    });
    fleet.wait_peer_state("timmy", "allegro", "up", Duration::from_secs(10));
    fleet
}

/// `uni-wizard test --router` as Timmy: an `http_post` of `body` to `url` under task and call
/// key `key`.
fn submit(fleet: &Fleet, url: &str, key: &str) -> Output {
    submit_keyed(fleet, url, "--idempotency-key", key)
}

/// As [`submit`], the key given with `flag` (`--idempotency-key`: task and call key;
/// `--task-key`: the router's task key alone).
fn submit_keyed(fleet: &Fleet, url: &str, flag: &str, key: &str) -> Output {
    let args = serde_json::json!({ "url": url, "body": "effect" }).to_string();
    std::process::Command::new(bin("uni-wizard"))
        .env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
        .env("UNI_WIZARD_TOKEN", &fleet.nodes["timmy"].token)
        .args(["test", "--json", "--router", &fleet.nodes["timmy"].grpc, "--house", "timmy"])
        .args(["--tool", "http_post", "--args-json", &args, flag, key, "--timeout-ms", "20000"])
        .output()
        .expect("uni-wizard runs")
}

/// Restarts Timmy's router (a fresh process: no memory of any key) and waits until it sees
/// Allegro up again.
fn fresh_router(fleet: &mut Fleet) {
    fleet.node("timmy").kill();
    fleet.node("timmy").start();
    fleet.wait_peer_state("timmy", "allegro", "up", Duration::from_secs(10));
}

/// Allegro's `uw_worker_<name>_total`, 0 when not exported yet.
fn counter(fleet: &Fleet, name: &str) -> u64 {
    let (_, body) = fleet.nodes["allegro"].scrape("/metrics").expect("metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("uw_worker_{name}_total ")).and_then(|v| v.trim().parse::<f64>().ok()))
        .map_or(0, |v| v as u64)
}

/// Waits (bounded) until `f` holds.
fn wait_until(what: &str, within: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Proves a keyed call that finished is answered, after the worker and the router both
/// restarted, with the very same outcome from the worker's store (`replayed` counted there),
/// and its target saw exactly one POST.
#[test]
fn a_finished_keyed_call_is_replayed_after_restarts_not_run_again() {
    let target = Target::start(Duration::ZERO);
    let mut fleet = fleet(&target);
    let first = submit(&fleet, &target.url("/effect"), "once-a");
    let v = json_stdout(&first);
    assert!(first.status.success(), "{v}\n{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(v["assigned_house"], "allegro", "{v}");
    assert_eq!(target.posts(), 1);

    // SIGTERM and restart the worker; a fresh router too.
    fleet.node("allegro").terminate();
    fleet.node("allegro").start();
    fresh_router(&mut fleet);
    let again = submit(&fleet, &target.url("/effect"), "once-a");
    let w = json_stdout(&again);
    assert!(again.status.success(), "{w}\n{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(w["deduplicated"], false, "the router is fresh: it did not know the key");
    assert_eq!(w["outcome"], v["outcome"], "the stored outcome, request and provenance ids included");
    assert_eq!(counter(&fleet, "replayed"), 1, "answered from the worker's store");
    assert_eq!(target.posts(), 1, "the target saw one POST");
}

/// Proves the router's task key alone (`--task-key`, no call key) binds a non-idempotent call
/// on its worker too: resubmitted through a fresh router after the worker restarted, the same
/// outcome comes back from the worker's store and the target saw one POST.
#[test]
fn a_task_key_alone_binds_a_non_idempotent_call_on_its_worker() {
    let target = Target::start(Duration::ZERO);
    let mut fleet = fleet(&target);
    let first = submit_keyed(&fleet, &target.url("/effect"), "--task-key", "task-only");
    let v = json_stdout(&first);
    assert!(first.status.success(), "{v}\n{}", String::from_utf8_lossy(&first.stderr));
    fleet.node("allegro").terminate();
    fleet.node("allegro").start();
    fresh_router(&mut fleet);
    let again = submit_keyed(&fleet, &target.url("/effect"), "--task-key", "task-only");
    let w = json_stdout(&again);
    assert!(again.status.success(), "{w}\n{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(w["outcome"], v["outcome"], "the stored outcome");
    assert_eq!(target.posts(), 1, "the target saw one POST");
}

/// Proves the router holds a task key to one call and only to an answer that settled it: the
/// same key for another call is E1005 and runs nothing, the same call again is answered from
/// the first run; a key whose task found no worker (nothing ran) runs once the worker is back,
/// instead of repeating "no worker" for as long as the router lives.
#[test]
fn the_router_holds_a_key_to_one_call_and_only_to_a_settled_answer() {
    let target = Target::start(Duration::ZERO);
    let mut fleet = fleet(&target);
    let key = ["--task-key", "one-call"];
    let first = submit_keyed(&fleet, &target.url("/a"), key[0], key[1]);
    let v = json_stdout(&first);
    assert!(first.status.success(), "{v}");
    let other = submit_keyed(&fleet, &target.url("/b"), key[0], key[1]);
    assert_eq!(json_stdout(&other)["error"]["code"], "E1005", "{}", json_stdout(&other));
    let again = submit_keyed(&fleet, &target.url("/a"), key[0], key[1]);
    assert_eq!(json_stdout(&again)["outcome"], v["outcome"], "{}", json_stdout(&again));
    assert_eq!(target.posts_by_path().get("/b"), None, "the other call ran nothing");

    fleet.node("allegro").kill();
    wait_until("Timmy marks Allegro down", Duration::from_secs(10), || {
        fleet.nodes["timmy"].health().is_some_and(|h| h.to_string().contains("\"down\""))
    });
    let refused = submit_keyed(&fleet, &target.url("/later"), "--task-key", "no-worker-yet");
    assert!(!refused.status.success(), "{}", json_stdout(&refused));
    fleet.node("allegro").start();
    fleet.wait_peer_state("timmy", "allegro", "up", Duration::from_secs(10));
    let ran = submit_keyed(&fleet, &target.url("/later"), "--task-key", "no-worker-yet");
    assert!(ran.status.success(), "the same key runs once a worker is back: {}", json_stdout(&ran));
    assert_eq!(target.posts_by_path().get("/later"), Some(&1));
    assert_eq!(target.posts(), 2);
}

/// Proves a keyed call whose worker was SIGKILLed while the target held its request ends
/// E3012 `maybe_ran` when resubmitted to the restarted worker (through a fresh router), is not
/// run again, and a third resubmission gets the same answer; the target saw one POST.
#[test]
fn a_keyed_call_cut_by_a_worker_kill_ends_maybe_ran_and_never_runs_again() {
    let target = Target::start(Duration::from_secs(4));
    let mut fleet = fleet(&target);
    let url = target.url("/slow");
    let first = {
        let (router, token, home) =
            (fleet.nodes["timmy"].grpc.clone(), fleet.nodes["timmy"].token.clone(), fleet.dir.path().join("cli-home"));
        let args = serde_json::json!({ "url": url, "body": "effect" }).to_string();
        std::process::Command::new(bin("uni-wizard"))
            .env("UNI_WIZARD_HOME", home)
            .env("UNI_WIZARD_TOKEN", token)
            .args(["test", "--json", "--router", &router, "--house", "timmy"])
            .args(["--tool", "http_post", "--args-json", &args, "--idempotency-key", "once-b", "--timeout-ms", "20000"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("uni-wizard runs")
    };
    wait_until("the POST reaching the target", Duration::from_secs(15), || target.posts() == 1);
    fleet.node("allegro").kill();
    let first = first.wait_with_output().expect("the first submission ends");
    assert!(!first.status.success(), "the worker was killed mid-call");

    fleet.node("allegro").start();
    fresh_router(&mut fleet);
    let second = submit(&fleet, &url, "once-b");
    let v = json_stdout(&second);
    assert_eq!(v["error"]["code"], "E3012", "{v}");
    assert_eq!(v["error"]["details"]["maybe_ran"], true, "{v}");
    assert!(v["error"]["details"]["started_ms"].is_i64(), "the worker's store answered, not the router: {v}");
    assert_eq!(counter(&fleet, "maybe_ran"), 1);

    fresh_router(&mut fleet);
    let third = submit(&fleet, &url, "once-b");
    let w = json_stdout(&third);
    assert_eq!(w["error"]["code"], "E3012", "{w}");
    let strip = |x: &Value| {
        let mut d = x["error"]["details"].clone();
        // The router adds its own task id; the worker's part must be the same.
        if let Value::Object(m) = &mut d {
            m.remove("task_id");
            m.remove("assigned_house");
        }
        (d, x["error"]["message"].clone())
    };
    assert_eq!(strip(&w), strip(&v), "the stored maybe_ran answer, not a new decision");
    assert_eq!(counter(&fleet, "replayed"), 1, "the third answer came from the store");
    // The held request is long over: still one POST.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(target.posts(), 1, "the target saw one POST");
}

/// Proves a worker whose exactly-once store was removed under it refuses keyed calls with
/// E3015 (the target sees nothing), says `degraded` on `/health` naming the store, and still
/// runs a call it does not bind (a read-only tool under a task key).
#[test]
fn a_removed_store_refuses_keyed_calls_and_shows_on_health() {
    let target = Target::start(Duration::ZERO);
    let fleet = fleet(&target);
    let ran = submit(&fleet, &target.url("/effect"), "once-c");
    assert!(ran.status.success(), "{}", json_stdout(&ran));
    std::fs::remove_file(fleet.nodes["allegro"].home.join("once.db")).expect("removed");

    let refused = submit(&fleet, &target.url("/effect"), "once-d");
    let v = json_stdout(&refused);
    assert_eq!(v["error"]["code"], "E3015", "{v}");
    assert_eq!(target.posts(), 1, "nothing ran unrecorded");
    let health = fleet.nodes["allegro"].health().expect("health");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["degraded"][0]["component"], "exactly-once store", "{health}");

    // A call the store does not bind: no call key, and a task key on a read-only tool (its
    // repeat changes nothing), runs as before.
    let args = serde_json::json!({ "url": target.url("/effect") }).to_string();
    let unkeyed = std::process::Command::new(bin("uni-wizard"))
        .env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
        .env("UNI_WIZARD_TOKEN", &fleet.nodes["timmy"].token)
        .args(["test", "--json", "--router", &fleet.nodes["timmy"].grpc, "--house", "timmy"])
        .args(["--tool", "http_get", "--args-json", &args, "--task-key", "unkeyed-1"])
        .output()
        .expect("uni-wizard runs");
    assert!(unkeyed.status.success(), "{}", json_stdout(&unkeyed));
    assert_eq!(target.posts(), 1, "nothing was posted again");
}
