//! The four houses as separate `uni-wizardd` processes on loopback, driven by the real CLI:
//! routing, failover, auth, TLS, idempotency and hot reload.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use uni_wizard_tests::fleet::{Fleet, HOUSES, rewrite};
use uni_wizard_tests::{bin, json_stdout};

/// Routes for the tests: files to Ezra first, `file_search` only to Ezra, system to Timmy.
const ROUTES: &str = "router:\n  routes:\n    file: [ezra, bezalel, timmy]\n    file_search: [ezra]\n    system: [timmy]\n    git: [bezalel, timmy]\n    network: [allegro, timmy]\n";

fn timmy_router(h: &str) -> String {
    if h == "timmy" { format!("roles: [router, health, worker]\n{ROUTES}") } else { String::new() }
}

/// `uni-wizard test --router` as `house`, with `house`'s token.
fn submit(fleet: &Fleet, house: &str, args: &[&str]) -> Output {
    let router = &fleet.nodes["timmy"].grpc;
    let mut c = std::process::Command::new(bin("uni-wizard"));
    c.env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
        .env("UNI_WIZARD_TOKEN", &fleet.nodes[house].token)
        .args(["test", "--json", "--router", router, "--house", house])
        .args(args);
    c.output().expect("uni-wizard runs")
}

fn ok(o: &Output) -> Value {
    let v = json_stdout(o);
    assert!(o.status.success(), "exit {:?}: {v}\n{}", o.status.code(), String::from_utf8_lossy(&o.stderr));
    v
}

/// Proves tasks submitted with the CLI land on the right house's worker (each house's file root
/// holds its own `hello.txt`), a killed worker is marked down within 3 s, its tasks go to the
/// next house, and a task only it could run fails with E3011 instead of vanishing.
#[test]
fn tasks_land_on_the_right_house_and_fail_over() {
    let mut fleet = Fleet::start(&HOUSES, &timmy_router);
    for h in HOUSES {
        fleet.wait_peer_state("timmy", h, "up", Duration::from_secs(10));
    }

    let v = ok(&submit(&fleet, "timmy", &["--tool", "file_read", "--arg", "path=hello.txt"]));
    assert_eq!(v["assigned_house"], "ezra", "{v}");
    assert_eq!(v["outcome"]["output"]["content"], "hello from ezra\n");
    assert_eq!(v["node"], "ezra-node");

    let v = ok(&submit(&fleet, "allegro", &["--tool", "system_info"]));
    assert_eq!((v["assigned_house"].as_str(), v["outcome"]["house"].as_str()), (Some("timmy"), Some("timmy")));

    for h in ["allegro", "bezalel", "timmy"] {
        let v = ok(&submit(&fleet, "ezra", &["--on", h, "--tool", "file_read", "--arg", "path=hello.txt"]));
        assert_eq!(v["assigned_house"], h, "{v}");
        assert_eq!(v["outcome"]["output"]["content"], format!("hello from {h}\n"));
    }

    fleet.node("ezra").kill();
    let took = fleet.wait_peer_state("timmy", "ezra", "down", Duration::from_secs(3));
    eprintln!("ezra marked down {} ms after SIGKILL", took.as_millis());

    let v = ok(&submit(&fleet, "timmy", &["--tool", "file_read", "--arg", "path=hello.txt"]));
    assert_eq!(v["assigned_house"], "bezalel", "failover to the next house of the route: {v}");
    assert_eq!(v["outcome"]["output"]["content"], "hello from bezalel\n");

    let o = submit(&fleet, "timmy", &["--tool", "file_search", "--arg", "query=hello"]);
    let v = json_stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{v}");
    assert_eq!(v["error"]["code"], "E3011", "{v}");
    assert!(v["error"]["details"]["task_id"].is_string(), "the failed task is named: {v}");

    fleet.node("ezra").start();
    fleet.wait_peer_state("timmy", "ezra", "up", Duration::from_secs(5));
    let v = ok(&submit(&fleet, "timmy", &["--tool", "file_search", "--arg", "query=hello"]));
    assert_eq!(v["assigned_house"], "ezra", "ezra routes again once it is back: {v}");
}

/// Proves one task key submitted twice in a row and eight times at once runs the tool once:
/// the worker's audit store holds exactly one `file_write` record, every answer names the same
/// task, and all but the first say `deduplicated`.
#[test]
fn one_task_key_runs_the_tool_once() {
    let fleet = Fleet::start(&["timmy"], &timmy_router);
    fleet.wait_peer_state("timmy", "timmy", "up", Duration::from_secs(10));
    let args = [
        "--on",
        "timmy",
        "--tool",
        "file_write",
        "--arg",
        "path=out.txt",
        "--arg",
        "content=once",
        "--arg",
        "expected_sha256=absent",
        "--task-key",
        "k-1",
    ];
    let first = ok(&submit(&fleet, "timmy", &args));
    assert_eq!(first["deduplicated"], false);
    let again = ok(&submit(&fleet, "timmy", &args));
    assert_eq!((again["deduplicated"].as_bool(), &again["task_id"]), (Some(true), &first["task_id"]));

    let concurrent: Vec<_> = (0..8)
        .map(|_| {
            let mut c = std::process::Command::new(bin("uni-wizard"));
            c.env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
                .env("UNI_WIZARD_TOKEN", &fleet.nodes["timmy"].token)
                .args(["test", "--json", "--router", &fleet.nodes["timmy"].grpc, "--house", "timmy"])
                .args(args.iter().map(|a| match *a {
                    "k-1" => "k-2",
                    "path=out.txt" => "path=out2.txt",
                    other => other,
                }))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().expect("spawn")
        })
        .collect();
    let answers: Vec<Value> = concurrent.into_iter().map(|c| ok(&c.wait_with_output().expect("wait"))).collect();
    let fresh = answers.iter().filter(|v| v["deduplicated"] == false).count();
    assert_eq!(fresh, 1, "exactly one submission ran: {answers:?}");
    assert!(answers.iter().all(|v| v["task_id"] == answers[0]["task_id"]));

    let mut c = std::process::Command::new(bin("uni-wizard"));
    c.env("UNI_WIZARD_HOME", &fleet.nodes["timmy"].home).args(["audit", "show", "--json"]);
    let shown = json_stdout(&c.output().expect("audit show"));
    let writes = shown["records"]
        .as_array()
        .or_else(|| shown.as_array())
        .map_or(0, |r| r.iter().filter(|r| r["tool"] == "file_write").count());
    assert_eq!(writes, 2, "one write per task key (k-1, k-2): {shown}");
}

/// Proves a valid edit of the live config takes effect without a restart (system tasks move
/// from Timmy to Allegro), and an invalid one is rejected naming file and line while the old
/// config keeps serving.
#[test]
fn config_hot_reload_applies_valid_edits_and_keeps_the_old_on_invalid_ones() {
    let mut fleet = Fleet::start(&["timmy", "allegro"], &timmy_router);
    fleet.wait_peer_state("timmy", "allegro", "up", Duration::from_secs(10));
    let v = ok(&submit(&fleet, "timmy", &["--tool", "system_info"]));
    assert_eq!(v["assigned_house"], "timmy");

    let path = fleet.node("timmy").config.clone();
    let text = std::fs::read_to_string(&path).expect("config");
    rewrite(&path, &text.replace("    system: [timmy]", "    system: [allegro]"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = ok(&submit(&fleet, "timmy", &["--tool", "system_info"]));
        if v["assigned_house"] == "allegro" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the edit never took effect:\n{}", fleet.nodes["timmy"].log());
        std::thread::sleep(Duration::from_millis(50));
    }

    let broken = text
        .replace("    system: [timmy]", "    system: [allegro]")
        .replace("shutdown_grace_ms: 5000", "shutdown_grace_ms: [");
    rewrite(&path, &broken);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !fleet.nodes["timmy"].log().contains("config reload rejected") {
        assert!(std::time::Instant::now() < deadline, "no rejection logged:\n{}", fleet.nodes["timmy"].log());
        std::thread::sleep(Duration::from_millis(25));
    }
    let log = fleet.nodes["timmy"].log();
    let line = log.lines().find(|l| l.contains("config reload rejected")).unwrap_or_default();
    assert!(line.contains(&format!("{}:", path.display())), "names the file and line: {line}");
    let v = ok(&submit(&fleet, "timmy", &["--tool", "system_info"]));
    assert_eq!(v["assigned_house"], "allegro", "the last valid config keeps serving");
    assert!(fleet.nodes["timmy"].health().is_some());
}

/// Proves SIGTERM drains: the daemon exits 0 and stops serving.
#[test]
fn sigterm_drains_and_exits_zero() {
    let mut fleet = Fleet::start(&["ezra"], &|_| String::new());
    let status = fleet.node("ezra").terminate();
    assert!(status.success(), "{status}:\n{}", fleet.nodes["ezra"].log());
    assert!(fleet.nodes["ezra"].log().contains("drained"), "{}", fleet.nodes["ezra"].log());
}
