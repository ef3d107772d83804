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
    let task = std::process::Command::new(bin("uni-wizard"))
        .env("UNI_WIZARD_TOKEN", &fleet.nodes["timmy"].token)
        .args(["task", "--json", "--router", &fleet.nodes["timmy"].grpc, "--house", "timmy"])
        .arg(v["task_id"].as_str().unwrap_or_default())
        .output()
        .expect("task");
    let t = ok(&task);
    assert_eq!((t["state"].as_str(), t["assigned_house"].as_str()), (Some("succeeded"), Some("ezra")), "{t}");
    assert_eq!(t["outcome"]["output"]["content"], "hello from ezra\n");

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

/// Proves a hung worker (SIGSTOP) does not hold a read-only task to its timeout: once health
/// marks it down the dispatch is abandoned and the next house of the route answers, in well
/// under the call's 10 s timeout.
#[test]
fn a_hung_worker_is_abandoned_once_health_marks_it_down() {
    let mut fleet = Fleet::start(&HOUSES, &timmy_router);
    for h in HOUSES {
        fleet.wait_peer_state("timmy", h, "up", Duration::from_secs(10));
    }
    let pid = fleet.node("ezra").pid().expect("running").to_string();
    let signal =
        |sig: &str| assert!(std::process::Command::new("kill").args([sig, &pid]).status().expect("kill").success());
    signal("-STOP");
    let started = std::time::Instant::now();
    let o = submit(&fleet, "timmy", &["--tool", "file_read", "--arg", "path=hello.txt"]);
    let took = started.elapsed();
    signal("-CONT");
    let v = ok(&o);
    assert_eq!(
        (v["assigned_house"].as_str(), v["outcome"]["output"]["content"].as_str()),
        (Some("bezalel"), Some("hello from bezalel\n")),
        "{v}"
    );
    assert!(took < Duration::from_secs(5), "the read waited {took:?} for a hung worker");
    eprintln!("read-only task answered by the next house {} ms after it went to a hung one", took.as_millis());
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

    // A valid file that changes a start-only field (here `node`) is refused whole, by name.
    let renamed = text
        .replace("    system: [timmy]", "    system: [timmy, allegro]")
        .replace("node: timmy-node", "node: renamed");
    rewrite(&path, &renamed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !fleet.nodes["timmy"].log().contains("apply only at a restart") {
        assert!(std::time::Instant::now() < deadline, "no refusal logged:\n{}", fleet.nodes["timmy"].log());
        std::thread::sleep(Duration::from_millis(25));
    }
    let v = ok(&submit(&fleet, "timmy", &["--tool", "system_info"]));
    assert_eq!(v["assigned_house"], "allegro", "none of the refused edit applied");
    assert_eq!(fleet.nodes["timmy"].health().map(|h| h["node"].clone()), Some(serde_json::json!("timmy-node")));
}

/// `Worker/Capacity` of `node`'s worker, asked as its own house; `None` when it does not answer.
fn capacity(node: &uni_wizard_tests::fleet::Node) -> Option<u32> {
    use tonic::metadata::MetadataValue;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", node.grpc)).ok()?.connect().await.ok()?;
        let bearer: MetadataValue<_> = format!("Bearer {}", node.token).parse().ok()?;
        let house: MetadataValue<_> = node.house.parse().ok()?;
        let mut client =
            uni_wizard_proto::v1::worker_client::WorkerClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
                r.metadata_mut().insert("authorization", bearer.clone());
                r.metadata_mut().insert("x-uw-house", house.clone());
                Ok(r)
            });
        let r = client.capacity(uni_wizard_proto::v1::CapacityRequest {}).await.ok()?;
        Some(r.into_inner().max_concurrency)
    })
}

/// Polls `f` every 50 ms until it holds, at most 10 s; the panic shows `node`'s log.
fn eventually(node: &uni_wizard_tests::fleet::Node, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Proves SIGHUP reloads a running `uni-wizardd` instead of killing it (the default action),
/// that a reloaded `worker.max_concurrency` is what `Capacity` reports next (it reported the
/// start value before), and that an edit also changing the restart-only
/// `worker.audit_all_modes` is refused naming that field, the running value kept.
#[test]
fn sighup_reloads_live_fields_and_names_restart_only_ones() {
    let mut fleet = Fleet::start(&["timmy"], &|_| String::new());
    let (path, pid) = (fleet.nodes["timmy"].config.clone(), fleet.node("timmy").pid().expect("running"));
    let hup = || {
        let sent = std::process::Command::new("kill").arg("-HUP").arg(pid.to_string()).status().expect("kill");
        assert!(sent.success());
    };
    let node = &fleet.nodes["timmy"];
    assert_eq!(capacity(node), Some(64), "the default");

    hup();
    eventually(node, "the SIGHUP reload", || node.log().contains("SIGHUP: reloading the config"));
    eventually(node, "the unchanged file to be read", || node.log().contains("no field changed"));
    assert!(node.health().is_some(), "still serving after SIGHUP:\n{}", node.log());

    let text = std::fs::read_to_string(&path).expect("config");
    assert!(text.contains("\nworker:\n"), "{text}");
    rewrite(&path, &text.replace("\nworker:\n", "\nworker:\n  max_concurrency: 3\n"));
    hup();
    eventually(node, "Capacity to report the reloaded max_concurrency", || capacity(node) == Some(3));
    let line = node.log().lines().find(|l| l.contains("config reloaded")).unwrap_or_default().to_owned();
    assert!(line.contains("worker.max_concurrency"), "the applied field is named: {line}");

    rewrite(&path, &text.replace("\nworker:\n", "\nworker:\n  max_concurrency: 5\n  audit_all_modes: false\n"));
    hup();
    eventually(node, "the refusal", || {
        node.log().contains("config reload rejected: these fields apply only at a restart")
    });
    let log = node.log();
    let line = log.lines().find(|l| l.contains("config reload rejected")).unwrap_or_default();
    assert!(line.contains("worker.audit_all_modes") && !line.contains("max_concurrency"), "names the field: {line}");
    assert_eq!(capacity(node), Some(3), "nothing of the refused edit applied");
    assert!(fleet.node("timmy").try_exit().is_none(), "alive");
}

/// Proves SIGTERM drains: the daemon exits 0 and stops serving.
#[test]
fn sigterm_drains_and_exits_zero() {
    let mut fleet = Fleet::start(&["ezra"], &|_| String::new());
    let status = fleet.node("ezra").terminate();
    assert!(status.success(), "{status}:\n{}", fleet.nodes["ezra"].log());
    assert!(fleet.nodes["ezra"].log().contains("drained"), "{}", fleet.nodes["ezra"].log());
}

/// Proves remote Sovereign approvals: a Sovereign `file_write` routed to Allegro waits at
/// Timmy's Sovereign service, Timmy's operator lists it and approves it with the CLI, and the
/// write happens with Timmy's signed token; a denied one fails with E2002 and writes nothing;
/// and no house but Timmy may list or decide (E5003).
#[test]
fn sovereign_calls_wait_for_timmys_remote_decision() {
    let fleet = Fleet::start(&["timmy", "allegro"], &|h| {
        if h == "timmy" { format!("roles: [router, health, worker, sovereign]\n{ROUTES}") } else { String::new() }
    });
    fleet.wait_peer_state("timmy", "allegro", "up", Duration::from_secs(10));
    let write = |path: &str| {
        let mut c = std::process::Command::new(bin("uni-wizard"));
        c.env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
            .env("UNI_WIZARD_TOKEN", &fleet.nodes["timmy"].token)
            .args(["test", "--json", "--router", &fleet.nodes["timmy"].grpc, "--house", "timmy", "--on", "allegro"])
            .args(["--mode", "sovereign", "--tool", "file_write", "--arg", &format!("path={path}")])
            .args(["--arg", "content=approved?", "--arg", "expected_sha256=absent"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().expect("spawn")
    };

    let waiting = write("approved.txt");
    let pending = fleet.pending_approval("allegro", "file_write");
    assert_eq!(pending["args"]["content"], "approved?", "Timmy sees the (redacted) arguments: {pending}");
    let id = pending["approval_id"].as_str().unwrap_or_default().to_owned();
    assert!(!fleet.nodes["allegro"].root.join("approved.txt").exists(), "nothing runs before Timmy decides");
    let d = fleet.approve(&["--decide", &id, "--note", "looks right"]);
    assert_eq!(d["decision"], "approved", "{d}");
    let v = ok(&waiting.wait_with_output().expect("wait"));
    assert_eq!(v["assigned_house"], "allegro", "{v}");
    let written = std::fs::read_to_string(fleet.nodes["allegro"].root.join("approved.txt")).expect("written");
    assert_eq!(written, "approved?");
    // The worker spent Timmy's token at Timmy before writing: once fleet-wide.
    let db = rusqlite::Connection::open(fleet.nodes["timmy"].home.join("sovereign.db")).expect("Timmy's token store");
    let spent: i64 = db.query_row("SELECT count(*) FROM used_tokens", [], |r| r.get(0)).expect("query");
    assert_eq!(spent, 1, "the approved write spent its token at Timmy");

    let waiting = write("denied.txt");
    let id = fleet.pending_approval("allegro", "file_write")["approval_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(fleet.approve(&["--decide", &id, "--deny", "--note", "not today"])["decision"], "denied");
    let o = waiting.wait_with_output().expect("wait");
    let v = json_stdout(&o);
    assert_eq!((o.status.code(), v["error"]["code"].as_str()), (Some(3), Some("E2002")), "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("not today")), "{v}");
    assert!(!fleet.nodes["allegro"].root.join("denied.txt").exists());

    let o = std::process::Command::new(bin("uni-wizard"))
        .env("UNI_WIZARD_TOKEN", &fleet.nodes["allegro"].token)
        .args(["approve", "--json", "--list", "--sovereign", &fleet.nodes["timmy"].grpc])
        .output()
        .expect("approve");
    assert_eq!(o.status.code(), Some(5), "{}", String::from_utf8_lossy(&o.stdout));
}

/// Proves `uni-wizard health` shows every house up with its node, and a killed one as down
/// (exit 4).
#[test]
fn health_command_shows_the_fleet() {
    let mut fleet = Fleet::start(&["timmy", "ezra"], &|h| {
        if h == "timmy" { "roles: [router, health, worker]\n".into() } else { String::new() }
    });
    let health = |fleet: &Fleet| {
        std::process::Command::new(bin("uni-wizard"))
            .args(["health", "--json", "--config"])
            .arg(&fleet.nodes["timmy"].config)
            .output()
            .expect("health")
    };
    let o = health(&fleet);
    let v = ok(&o);
    let houses = v["houses"].as_array().cloned().unwrap_or_default();
    assert_eq!(houses.len(), 2, "{v}");
    assert!(houses.iter().all(|h| h["state"] == "up"), "{v}");
    assert!(houses.iter().any(|h| h["house"] == "ezra" && h["node"] == "ezra-node"), "{v}");
    fleet.node("ezra").kill();
    let o = health(&fleet);
    let v = json_stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{v}");
    assert!(v["houses"].as_array().into_iter().flatten().any(|h| h["house"] == "ezra" && h["state"] == "down"), "{v}");
}

/// Proves routing never widens what a caller may do: Ezra's `file_write` without the hash it
/// read is refused with E2004 even when routed to Timmy, whose own policy would allow it, and
/// nothing is written; with the hash it goes through.
#[test]
fn a_task_runs_under_its_submitters_policy_too() {
    let fleet = Fleet::start(&["timmy", "ezra"], &timmy_router);
    fleet.wait_peer_state("timmy", "timmy", "up", Duration::from_secs(10));
    let root = &fleet.nodes["timmy"].root;
    let write = |extra: &[&str]| {
        let mut args =
            vec!["--on", "timmy", "--tool", "file_write", "--arg", "path=hello.txt", "--arg", "content=ezra was here"];
        args.extend_from_slice(extra);
        submit(&fleet, "ezra", &args)
    };
    let o = write(&[]);
    let v = json_stdout(&o);
    assert_eq!((o.status.code(), v["error"]["code"].as_str()), (Some(3), Some("E2004")), "{v}");
    assert_eq!(std::fs::read_to_string(root.join("hello.txt")).expect("read"), "hello from timmy\n");

    let sha = uni_wizard_tests::sha256_hex(b"hello from timmy\n");
    let v = ok(&write(&["--arg", &format!("expected_sha256={sha}")]));
    assert_eq!(v["assigned_house"], "timmy");
    assert_eq!(std::fs::read_to_string(root.join("hello.txt")).expect("read"), "ezra was here");
}
