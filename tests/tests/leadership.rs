//! Router leadership with real processes: a real 3-member etcd cluster on loopback and the four
//! houses as `uni-wizardd` processes, Timmy and Allegro both routers. One leads; the other
//! answers E3014 naming it and the CLI follows; workers take a dispatch only from the leader
//! etcd shows, under its term (a forged, stale or follower's term is refused and changes
//! nothing); killing the leader moves leadership; losing one etcd member changes nothing;
//! losing quorum stops every router until it returns; an etcd that is down at start is waited
//! for.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use uni_wizard_proto::v1::{
    self, ExecuteRequest, SubmitRequest, ToolCall, router_client::RouterClient, worker_client::WorkerClient,
};
use uni_wizard_tests::etcd::EtcdCluster;
use uni_wizard_tests::fleet::{Fleet, HOUSES};
use uni_wizard_tests::{bin, json_stdout};

/// Files to Ezra first, then Bezalel; system to either router.
const ROUTES: &str = "router:\n  routes:\n    file: [ezra, bezalel]\n    system: [timmy, allegro]\n";

/// The lease timing of most tests: 1 s leases, renewed every 200 ms, fenced 300 ms early, so
/// takeovers are quick.
const FAST: &str = "lease_ttl_ms: 1000, keepalive_ms: 200, fence_margin_ms: 300";

/// Each node's `etcd:` section with `timing` (empty: the defaults) and, for Timmy and
/// Allegro, the router role with the same routes.
fn extra(endpoints: &[String], timing: &str) -> impl Fn(&str) -> String {
    let timing = if timing.is_empty() { String::new() } else { format!(", {timing}") };
    let etcd = format!("etcd: {{endpoints: [{}]{timing}}}\n", endpoints.join(", "));
    move |h: &str| match h {
        "timmy" | "allegro" => format!("roles: [router, health, worker]\n{ROUTES}{etcd}"),
        _ => etcd.clone(),
    }
}

const ROUTERS: [&str; 2] = ["timmy", "allegro"];

/// The router whose `/health` says it leads, and its term.
fn leader(fleet: &Fleet) -> Option<(String, u64)> {
    ROUTERS.iter().find_map(|r| {
        let h = fleet.nodes[*r].health()?;
        (h["leadership"]["state"] == "leader").then(|| ((*r).to_owned(), h["leadership"]["term"].as_u64().unwrap_or(0)))
    })
}

/// Waits (bounded) until a router other than `not` leads; returns it, its term and how long it took.
fn wait_leader(fleet: &Fleet, not: Option<&str>, within: Duration) -> (String, u64, Duration) {
    let started = Instant::now();
    loop {
        if let Some((house, term)) = leader(fleet).filter(|(h, _)| Some(h.as_str()) != not) {
            return (house, term, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "no router (other than {not:?}) led within {within:?}: {:?}",
            health_of(fleet)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn health_of(fleet: &Fleet) -> Vec<Option<Value>> {
    ROUTERS.iter().map(|r| fleet.nodes[*r].health().map(|h| h["leadership"].clone())).collect()
}

/// `uni-wizard test --router A,B,...` as `house`, the routers in the order given.
fn submit(fleet: &Fleet, house: &str, routers: &[&str], args: &[&str]) -> Output {
    let list: Vec<&str> = routers.iter().map(|r| fleet.nodes[*r].grpc.as_str()).collect();
    let mut c = std::process::Command::new(bin("uni-wizard"));
    c.env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
        .env("UNI_WIZARD_TOKEN", &fleet.nodes[house].token)
        .args(["test", "--json", "--router", &list.join(","), "--house", house])
        .args(args);
    c.output().expect("uni-wizard runs")
}

fn ok(o: &Output) -> Value {
    let v = json_stdout(o);
    assert!(o.status.success(), "exit {:?}: {v}\n{}", o.status.code(), String::from_utf8_lossy(&o.stderr));
    v
}

fn authed<T>(msg: T, node: &uni_wizard_tests::fleet::Node) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("x-uw-house", MetadataValue::try_from(node.house.as_str()).expect("ascii"));
    r.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {}", node.token)).expect("ascii"));
    r
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect")
}

fn read_call() -> Option<ToolCall> {
    Some(ToolCall { tool: "file_read".into(), args_json: r#"{"path":"hello.txt"}"#.into(), ..Default::default() })
}

/// A dispatch to `worker` sent by `from` itself (its own credentials) under `token`.
async fn dispatch(fleet: &Fleet, from: &str, worker: &str, token: u64) -> Result<v1::ExecuteResponse, tonic::Status> {
    let mut client = WorkerClient::new(channel(&fleet.nodes[worker].grpc).await);
    let execute = ExecuteRequest {
        call: read_call(),
        house: uni_wizard_daemons::wire::house_to_wire(worker.parse().expect("a house")).into(),
        fencing_token: token,
        ..Default::default()
    };
    client.execute(authed(execute, &fleet.nodes[from])).await.map(tonic::Response::into_inner)
}

fn code_of(s: &tonic::Status) -> String {
    s.message().split(':').next().unwrap_or("").to_owned()
}

fn start(etcd: &EtcdCluster) -> Fleet {
    Fleet::start(&HOUSES, &extra(&etcd.endpoints(), FAST))
}

/// Proves one router leads and the other redirects: a follower's Submit is E3014 naming the
/// leader, the CLI given the follower first follows it; and a worker refuses with E3013,
/// changing nothing, a dispatch under a forged term (2^64-1, the issue's attack), a stale
/// term, and the follower's dispatch under the leader's term, then still takes the leader's;
/// `uni-wizard health` shows the leader, its term and its lease, read from etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_routes_followers_redirect_and_forged_terms_are_refused() {
    let Some(mut etcd) = EtcdCluster::new(3) else { return };
    etcd.start_all();
    let fleet = tokio::task::block_in_place(|| start(&etcd));
    let (lead, term, _) = tokio::task::block_in_place(|| wait_leader(&fleet, None, Duration::from_secs(15)));
    let follower = ROUTERS.iter().find(|r| **r != lead).expect("two routers").to_string();
    // The follower may still be reaching etcd on a loaded machine: it redirects once it follows.
    let deadline = Instant::now() + Duration::from_secs(15);
    while fleet.nodes[&follower].health().is_none_or(|h| h["leadership"]["state"] != "follower") {
        assert!(Instant::now() < deadline, "the other router never followed: {:?}", health_of(&fleet));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A follower names the leader; nothing is admitted there.
    let mut router = RouterClient::new(channel(&fleet.nodes[&follower].grpc).await);
    let submit_req = SubmitRequest { call: read_call(), idempotency_key: "k-follower".into(), ..Default::default() };
    let refused = router.submit(authed(submit_req, &fleet.nodes["ezra"])).await.expect_err("a follower refuses");
    assert_eq!((refused.code(), code_of(&refused)), (tonic::Code::Unavailable, "E3014".to_owned()), "{refused:?}");
    assert!(refused.message().contains(&fleet.nodes[&lead].grpc), "{refused:?}");

    // The CLI, given the follower first, ends at the leader and the task runs.
    let v = ok(&tokio::task::block_in_place(|| {
        submit(&fleet, "ezra", &[&follower, &lead], &["--tool", "file_read", "--arg", "path=hello.txt"])
    }));
    assert_eq!(v["outcome"]["output"]["content"], "hello from ezra\n", "{v}");

    // Forged, stale and follower's terms: refused, and the worker still takes the leader's.
    for (from, token, why) in [
        ("allegro", u64::MAX, "forged term"),
        (lead.as_str(), term - 1, "stale term"),
        (follower.as_str(), term, "a follower's dispatch"),
    ] {
        let e = dispatch(&fleet, from, "bezalel", token).await.expect_err(why);
        assert_eq!((e.code(), code_of(&e)), (tonic::Code::FailedPrecondition, "E3013".to_owned()), "{why}: {e:?}");
    }
    let v = ok(&tokio::task::block_in_place(|| {
        submit(&fleet, "bezalel", &[&lead], &["--tool", "file_read", "--arg", "path=hello.txt", "--on", "bezalel"])
    }));
    assert_eq!(v["outcome"]["house"], "bezalel", "{v}");
    let answered = dispatch(&fleet, &lead, "bezalel", term).await.expect("the leader's own dispatch");
    assert!(matches!(answered.result, Some(v1::execute_response::Result::Outcome(_))), "{answered:?}");

    // The operator's view, read from etcd: the leader, its term, its lease.
    let o = tokio::task::block_in_place(|| {
        std::process::Command::new(bin("uni-wizard"))
            .args(["health", "--json", "--config"])
            .arg(&fleet.nodes["ezra"].config)
            .output()
            .expect("health")
    });
    let v = ok(&o);
    let l = &v["leadership"];
    assert_eq!((l["leader_house"].as_str(), l["term"].as_u64()), (Some(lead.as_str()), Some(term)), "{v}");
    assert!(l["lease_granted_s"].as_i64().is_some_and(|g| g >= 1) && l["lease_age_s"].as_i64().is_some(), "{v}");
}

/// Proves leadership moves when the leader is SIGKILLed, 20 times in a row under tasks: each
/// time the other router leads within the lease TTL plus a margin (3 s) under a greater term,
/// a task submitted to both routers runs, and the killed router, restarted, follows.
#[test]
fn killing_the_leader_moves_leadership_every_time() {
    let Some(mut etcd) = EtcdCluster::new(3) else { return };
    etcd.start_all();
    let mut fleet = start(&etcd);
    let (mut lead, mut term, _) = wait_leader(&fleet, None, Duration::from_secs(15));
    let mut took = Vec::new();
    for round in 0..20 {
        fleet.node(&lead).kill();
        let (next, next_term, after) = wait_leader(&fleet, Some(&lead), Duration::from_secs(10));
        assert!(next_term > term, "round {round}: term {next_term} after {term}");
        took.push(after);
        let v = ok(&submit(&fleet, "ezra", &ROUTERS, &["--tool", "file_read", "--arg", "path=hello.txt"]));
        assert_eq!(v["outcome"]["output"]["content"], "hello from ezra\n", "round {round}: {v}");
        fleet.node(&lead).start();
        let restarted = lead.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        while fleet.nodes[&restarted].health().is_none_or(|h| h["leadership"]["state"] != "follower") {
            assert!(Instant::now() < deadline, "round {round}: {restarted} did not follow: {:?}", health_of(&fleet));
            std::thread::sleep(Duration::from_millis(20));
        }
        (lead, term) = (next, next_term);
    }
    let worst = took.iter().max().copied().unwrap_or_default();
    assert!(worst < Duration::from_secs(3), "a takeover took {worst:?}: {took:?}");
}

/// Proves, with the default lease timing (2 s; a 1 s lease can lapse while etcd elects a new
/// raft leader), losing one etcd member of three changes nothing (same leader, same term,
/// tasks run); losing quorum makes the leader stop within the lease TTL (its /health says why,
/// Submit is E3014) and routing resumes by itself when quorum returns; a leader frozen
/// (SIGSTOP) past the TTL is replaced, and once thawed it leads nothing and its term is refused.
#[test]
fn etcd_member_loss_quorum_loss_and_a_frozen_leader() {
    let Some(mut etcd) = EtcdCluster::new(3) else { return };
    etcd.start_all();
    let fleet = Fleet::start(&HOUSES, &extra(&etcd.endpoints(), ""));
    let (lead, term, _) = wait_leader(&fleet, None, Duration::from_secs(15));
    let ask = |fleet: &Fleet| submit(fleet, "ezra", &ROUTERS, &["--tool", "file_read", "--arg", "path=hello.txt"]);

    // One member down (etcd's own raft leader, the worst one): nothing changes.
    let raft = etcd.raft_leader().unwrap_or(0);
    etcd.kill(raft);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(leader(&fleet), Some((lead.clone(), term)), "{:?}", health_of(&fleet));
    ok(&ask(&fleet));

    // Quorum lost: within the TTL no router leads, /health says why, submitters get E3014.
    let other = (0..3).find(|i| *i != raft).expect("a member left");
    etcd.kill(other);
    let lost = Instant::now();
    while leader(&fleet).is_some() {
        assert!(lost.elapsed() < Duration::from_millis(2_000), "still leading {:?} after quorum loss", lost.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    let h = fleet.nodes[&lead].health().expect("health");
    assert_eq!(
        (h["status"].clone(), h["leadership"]["state"].clone()),
        ("degraded".into(), "unavailable".into()),
        "{h}"
    );
    let refused = ask(&fleet);
    assert!(!refused.status.success());
    assert_eq!(json_stdout(&refused)["error"]["code"], "E3014", "{}", String::from_utf8_lossy(&refused.stdout));

    // Quorum back: a router leads again by itself and tasks run.
    etcd.restart(raft);
    etcd.restart(other);
    let (lead, term, _) = wait_leader(&fleet, None, Duration::from_secs(20));
    ok(&ask(&fleet));

    // A frozen leader is replaced; thawed, it is a follower and its old term is refused.
    let pid = fleet.nodes[&lead].pid().expect("running");
    let signal = |sig: &str| {
        let s = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill");
        assert!(s.success());
    };
    signal("-STOP");
    let replaced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let next = wait_leader(&fleet, Some(&lead), Duration::from_secs(10));
        // The CLI given the frozen router first leaves it when it stops answering pings and
        // asks the next, which leads now (it used to wait on the frozen one for ever).
        let asked = Instant::now();
        let routers = [lead.as_str(), next.0.as_str()];
        let v = ok(&submit(&fleet, "ezra", &routers, &["--tool", "file_read", "--arg", "path=hello.txt"]));
        assert_eq!(v["outcome"]["output"]["content"], "hello from ezra\n", "{v}");
        assert!(asked.elapsed() < Duration::from_secs(8), "took {:?} past the frozen router", asked.elapsed());
        next
    }));
    signal("-CONT");
    let (next, next_term, _) = replaced.expect("another router led, and took tasks, while the leader was frozen");
    assert!(next_term > term);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.nodes[&lead].health().is_none_or(|h| h["leadership"]["state"] != "follower") {
        assert!(Instant::now() < deadline, "the thawed router did not follow: {:?}", health_of(&fleet));
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let e = rt.block_on(dispatch(&fleet, &lead, "ezra", term)).expect_err("the deposed term");
    assert_eq!(code_of(&e), "E3013", "{e:?}");
    let v = ok(&ask(&fleet));
    assert_eq!(v["outcome"]["output"]["content"], "hello from ezra\n");
    assert_eq!(leader(&fleet).map(|l| l.0), Some(next));
}

/// Proves a hung etcd member changes nothing a submitter sees, on the default 2 s lease: with
/// a member that is not etcd's raft leader frozen (SIGSTOP) for 8 s, every task submitted
/// meanwhile (read-only ones, and non-idempotent ones bound to a worker in etcd) runs, and the
/// same router leads under the same term at every look; with etcd's raft leader frozen,
/// every task still runs and the same router leads under the same term afterwards. (The
/// outside trial saw 13 to 27 % of submissions fail while a member was frozen.)
#[test]
fn a_frozen_etcd_member_fails_no_task() {
    let Some(mut etcd) = EtcdCluster::new(3) else { return };
    etcd.start_all();
    let target = uni_wizard_tests::target::Target::start(Duration::ZERO);
    let (port, endpoints) = (target.port, etcd.endpoints());
    let fleet_extra = move |h: &str| {
        let rule = format!("{{rules: [{{host: 127.0.0.1, schemes: [http], ports: [{port}], allow_private: true}}]}}");
        let egress = format!("    egress:\n      timmy: {rule}\n");
        match h {
            "timmy" | "allegro" => format!("{egress}{}", extra(&endpoints, "")(h)),
            _ => extra(&endpoints, "")(h),
        }
    };
    let fleet = Fleet::start(&HOUSES, &fleet_extra);
    let (lead, term, _) = wait_leader(&fleet, None, Duration::from_secs(15));
    let raft = etcd.raft_leader().expect("etcd has a raft leader");
    let mut posts = 0;
    for (victim, strict) in [((raft + 1) % 3, true), (raft, false)] {
        etcd.freeze(victim);
        let thawed = Instant::now() + Duration::from_secs(8);
        let mut tasks = 0;
        while Instant::now() < thawed {
            ok(&submit(&fleet, "ezra", &ROUTERS, &["--tool", "file_read", "--arg", "path=hello.txt"]));
            posts += 1;
            let args = serde_json::json!({ "url": target.url(&format!("/frozen/{posts}")), "body": "x" }).to_string();
            let key = format!("frozen-{posts}");
            let routed = ["--tool", "http_post", "--args-json", &args, "--task-key", &key, "--on", "timmy"];
            ok(&submit(&fleet, "timmy", &ROUTERS, &routed));
            tasks += 2;
            if strict {
                assert_eq!(
                    leader(&fleet),
                    Some((lead.clone(), term)),
                    "member {victim} frozen: {:?}",
                    health_of(&fleet)
                );
            }
        }
        etcd.thaw(victim);
        assert!(tasks >= 8, "only {tasks} tasks in 8 s with member {victim} frozen");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while leader(&fleet) != Some((lead.clone(), term)) {
        assert!(Instant::now() < deadline, "leadership moved: {:?}", health_of(&fleet));
        std::thread::sleep(Duration::from_millis(50));
    }
    let counted = target.posts_by_path();
    assert_eq!(counted.len(), posts, "{counted:?}");
    assert!(counted.values().all(|n| *n == 1), "{counted:?}");
}

/// Proves an etcd that is down when the fleet starts is no crash: every router says why on
/// /health and refuses tasks with E3014, a worker's /health is degraded (it refuses
/// dispatches), and once etcd starts a router leads, the worker shows it, and tasks run.
#[test]
fn an_etcd_down_at_start_is_waited_for() {
    let Some(mut etcd) = EtcdCluster::new(3) else { return };
    let fleet = start(&etcd);
    std::thread::sleep(Duration::from_millis(1_500));
    for r in ROUTERS {
        let h = fleet.nodes[r].health().expect("serving");
        assert_eq!(h["leadership"]["state"], "unavailable", "{r}: {h}");
        assert!(h["leadership"]["reason"].as_str().is_some_and(|s| !s.is_empty()), "{h}");
    }
    let h = fleet.nodes["ezra"].health().expect("a worker serves");
    assert_eq!(
        (h["status"].clone(), h["leadership"]["state"].clone()),
        ("degraded".into(), "unavailable".into()),
        "{h}"
    );
    let refused = submit(&fleet, "ezra", &ROUTERS, &["--tool", "file_read", "--arg", "path=hello.txt"]);
    assert_eq!(json_stdout(&refused)["error"]["code"], "E3014", "{}", String::from_utf8_lossy(&refused.stdout));
    etcd.start_all();
    let (lead, term, _) = wait_leader(&fleet, None, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.nodes["ezra"].health().is_none_or(|h| h["leadership"]["term"] != term) {
        assert!(Instant::now() < deadline, "ezra's /health never showed the leader");
        std::thread::sleep(Duration::from_millis(20));
    }
    let h = fleet.nodes["ezra"].health().expect("health");
    assert_eq!(
        (h["status"].clone(), h["leadership"]["leader_house"].clone()),
        ("serving".into(), lead.clone().into()),
        "{h}"
    );
    let v = ok(&submit(&fleet, "ezra", &ROUTERS, &["--tool", "file_read", "--arg", "path=hello.txt"]));
    assert_eq!(v["outcome"]["output"]["content"], "hello from ezra\n");
}

/// Proves every task takes effect at most once, and exactly once when it succeeded, across
/// leader kills: a stream of `http_post`s (each with its own task key, each held 300 ms at the
/// target) is submitted to both routers, each resubmitted with its key until it has a final
/// answer, preferring Timmy's worker and Allegro's in turn (so a resubmission that ignored
/// where the task first went would run it on the other), while the leading router is
/// SIGKILLed and restarted again and again; the target counts the POSTs of every task.
#[test]
fn every_task_takes_effect_once_across_leader_kills() {
    const TASKS: usize = 24;
    let Some(mut etcd) = EtcdCluster::new(3) else { return };
    etcd.start_all();
    let target = uni_wizard_tests::target::Target::start(Duration::from_millis(300));
    let (port, endpoints) = (target.port, etcd.endpoints());
    let routers = ["ezra", "bezalel"];
    let fleet_extra = move |h: &str| {
        let etcd = format!(
            "etcd: {{endpoints: [{}], lease_ttl_ms: 1000, keepalive_ms: 200, fence_margin_ms: 300}}\n",
            endpoints.join(", ")
        );
        let rule = format!("{{rules: [{{host: 127.0.0.1, schemes: [http], ports: [{port}], allow_private: true}}]}}");
        match h {
            "ezra" | "bezalel" => {
                format!("roles: [router, health, worker]\nrouter:\n  routes:\n    network: [timmy, allegro]\n{etcd}")
            }
            _ => format!(
                "    egress:\n      timmy: {rule}\n      allegro: {rule}\n  dispatchers: [ezra, bezalel]\nroles: [worker]\n{etcd}"
            ),
        }
    };
    let mut fleet = Fleet::start(&HOUSES, &fleet_extra);
    let leader_of = |fleet: &Fleet| {
        routers
            .iter()
            .find(|r| fleet.nodes[**r].health().is_some_and(|h| h["leadership"]["state"] == "leader"))
            .map(|r| (*r).to_owned())
    };
    let wait_for_leader = |fleet: &Fleet| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(l) = leader_of(fleet) {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader among {routers:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_leader(&fleet);

    // The stream, on its own thread: each task resubmitted until its answer is final.
    let (addrs, token, home) = (
        format!("{},{}", fleet.nodes["ezra"].grpc, fleet.nodes["bezalel"].grpc),
        fleet.nodes["timmy"].token.clone(),
        fleet.dir.path().join("cli-home"),
    );
    let url = target.url("/slow");
    let stream = std::thread::spawn(move || {
        let mut answers = Vec::new();
        let mut submissions = 0;
        for n in 0..TASKS {
            let args = serde_json::json!({ "url": format!("{url}/{n}"), "body": "effect" }).to_string();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                submissions += 1;
                let on = if submissions % 2 == 0 { "timmy" } else { "allegro" };
                let o = std::process::Command::new(bin("uni-wizard"))
                    .env("UNI_WIZARD_HOME", &home)
                    .env("UNI_WIZARD_TOKEN", &token)
                    .args(["test", "--json", "--router", &addrs, "--house", "timmy", "--tool", "http_post"])
                    .args([
                        "--args-json",
                        &args,
                        "--task-key",
                        &format!("effect-{n}"),
                        "--timeout-ms",
                        "5000",
                        "--on",
                        on,
                    ])
                    .output()
                    .expect("uni-wizard runs");
                let v = json_stdout(&o);
                let maybe_ran = v["error"]["code"] == "E3012" && v["error"]["details"]["maybe_ran"] == true;
                if o.status.success() || maybe_ran {
                    answers.push((n, o.status.success()));
                    break;
                }
                assert!(Instant::now() < deadline, "task {n} found no final answer: {v}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        (answers, submissions)
    });

    let mut kills = 0;
    while !stream.is_finished() {
        std::thread::sleep(Duration::from_millis(700));
        let Some(lead) = leader_of(&fleet) else { continue };
        fleet.node(&lead).kill();
        kills += 1;
        wait_for_leader(&fleet);
        fleet.node(&lead).start();
    }
    let (answers, submissions) = stream.join().expect("stream");
    let posts = target.posts_by_path();
    eprintln!("{TASKS} tasks, {submissions} submissions, {kills} leader kills; POSTs per task: {posts:?}");
    assert!(kills >= 3, "the stream outlasted only {kills} kills");
    for (n, succeeded) in answers {
        let count = posts.get(&format!("/slow/{n}")).copied().unwrap_or(0);
        if succeeded {
            assert_eq!(count, 1, "task {n} succeeded with {count} POSTs");
        } else {
            assert!(count <= 1, "task {n} (maybe_ran) reached the target {count} times");
        }
    }
}

/// Proves that without etcd (a single router, term 0) a worker refuses any other fencing token
/// (the attack of 2^64-1 from a permitted dispatcher) without running the call or raising a
/// floor: the router's dispatches under term 0 still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_a_forged_token_is_refused_and_poisons_nothing() {
    let fleet = tokio::task::block_in_place(|| Fleet::start(&HOUSES, &|_: &str| String::new()));
    let e = dispatch(&fleet, "allegro", "bezalel", u64::MAX).await.expect_err("forged token");
    assert_eq!((e.code(), code_of(&e)), (tonic::Code::FailedPrecondition, "E3013".to_owned()), "{e:?}");
    let answered = dispatch(&fleet, "timmy", "bezalel", 0).await.expect("term 0");
    assert!(matches!(answered.result, Some(v1::execute_response::Result::Outcome(_))), "{answered:?}");
}
