//! The system tools through the real `Harness`: `process_list` against this host's `/proc`,
//! `service_status` and `service_restart` against this host's systemd — or, where systemd is
//! not PID 1 (CI, containers), against the E3007 that says so — plus `systemctl show` parsing
//! on recorded output and the house policy on restarts.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use uni_wizard::contract::Compiled;
use uni_wizard::tools::file::Roots;
use uni_wizard::tools::system::systemctl::{UnitStatus, parse_show};
use uni_wizard::tools::{ToolContext, ToolEnv};
use uni_wizard::{ErrorCode, Harness, House, Mode, Request};

fn harness(house: House, mode: Mode) -> Harness {
    Harness::builder().house(house).mode(mode).build().expect("harness builds")
}

fn timmy() -> Harness {
    harness(House::Timmy, Mode::Simple)
}

/// Whether systemd runs this host, by the same test the tools make (`sd_booted`).
fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// What the tools must say where systemd is not PID 1.
fn not_systemd_message() -> String {
    let pid1 = std::fs::read_to_string("/proc/1/comm").expect("/proc/1/comm");
    format!("systemd is not running as PID 1 on this host (PID 1 is `{}`)", pid1.trim())
}

fn assert_valid_output(h: &Harness, tool: &str, output: &Value) {
    let contract = h.registry().get(tool).expect("tool registered").contract();
    contract.validate_output(output).unwrap_or_else(|v| panic!("{tool} output violates its schema: {v:?}\n{output}"));
}

fn processes(output: &Value) -> &Vec<Value> {
    output["processes"].as_array().expect("processes")
}

/// A `sleep 30` child, killed and reaped when dropped, even if the test fails first.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Proves process_list finds the test process itself — its pid, its kernel name (the test
/// binary's name, cut to 15 bytes) and a command line naming the binary — and that the
/// output validates against the contract.
#[tokio::test]
async fn process_list_finds_this_test_process() {
    let exe = std::env::current_exe().expect("current_exe");
    let exe_name = exe.file_name().and_then(|n| n.to_str()).expect("exe name").to_owned();
    let h = timmy();
    let out = h.execute("process_list", json!({"filter": exe_name, "top": 10000})).await.expect("process_list");
    assert_valid_output(&h, "process_list", &out.output);
    let me = processes(&out.output)
        .iter()
        .find(|p| p["pid"] == std::process::id())
        .unwrap_or_else(|| panic!("own pid {} not listed: {}", std::process::id(), out.output));
    assert_eq!(me["name"], exe_name[..exe_name.len().min(15)], "comm is the binary name cut to 15 bytes");
    assert!(me["cmdline"].as_str().expect("cmdline").contains(&exe_name), "{me}");
    assert!(me["rss_bytes"].as_u64().expect("rss") > 0);
    assert!(me["threads"].as_u64().expect("threads") >= 1);
    let boot_to_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let started = me["start_time_unix"].as_u64().expect("start");
    assert!(started <= boot_to_now + 1 && started + 3600 > boot_to_now, "started {started}, now {boot_to_now}");
}

/// Proves a spawned `sleep 30` child is found by name with its exact argv, parent, user and
/// state, and that a filter matching nothing returns nothing.
#[tokio::test]
async fn process_list_finds_a_spawned_child_by_name() {
    let child = Sleeper(std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep"));
    let pid = child.0.id();
    let h = timmy();
    let out =
        h.execute("process_list", json!({"filter": "sleep", "sort_by": "pid", "top": 10000})).await.expect("list");
    assert_valid_output(&h, "process_list", &out.output);
    let list = processes(&out.output);
    assert!(list.iter().all(|p| {
        p["name"].as_str().is_some_and(|n| n.contains("sleep"))
            || p["cmdline"].as_str().is_some_and(|c| c.contains("sleep"))
    }));
    let found = list.iter().find(|p| p["pid"] == pid).unwrap_or_else(|| panic!("child {pid} not listed: {list:?}"));
    assert_eq!(found["name"], "sleep");
    assert_eq!(found["cmdline"], "sleep 30");
    assert_eq!(found["ppid"], std::process::id());
    let me = h.execute("process_list", json!({"filter": "system_tools", "sample_ms": 0})).await.expect("self");
    let my_user = processes(&me.output).iter().find(|p| p["pid"] == std::process::id()).expect("self")["user"].clone();
    assert_eq!(found["user"], my_user, "the child runs as this user");
    assert!(["S", "R"].contains(&found["state"].as_str().expect("state")), "{found}");

    let none = h.execute("process_list", json!({"filter": "no-process-is-called-this-4f1d"})).await.expect("list");
    assert_eq!((none.output["matched"].clone(), processes(&none.output).len()), (json!(0), 0));
    drop(child);
}

/// Proves sort_by rss is descending, sort_by pid ascending, and top N is honoured while
/// `matched` still counts every match.
#[tokio::test]
async fn process_list_sorts_and_honours_top() {
    let h = timmy();
    let out = h.execute("process_list", json!({"sort_by": "rss", "top": 10000, "sample_ms": 0})).await.expect("list");
    assert_valid_output(&h, "process_list", &out.output);
    let rss: Vec<u64> = processes(&out.output).iter().map(|p| p["rss_bytes"].as_u64().expect("rss")).collect();
    assert!(rss.len() >= 3, "a host runs at least a few processes");
    assert!(rss.windows(2).all(|w| w[0] >= w[1]), "rss descending: {rss:?}");
    assert_eq!(out.output["matched"], rss.len());

    let top = h.execute("process_list", json!({"sort_by": "rss", "top": 3, "sample_ms": 0})).await.expect("top");
    assert_eq!(processes(&top.output).len(), 3);
    assert!(top.output["matched"].as_u64().expect("matched") >= 3);
    assert!(processes(&top.output)[0]["rss_bytes"].as_u64() >= processes(&top.output)[2]["rss_bytes"].as_u64());

    let by_pid = h.execute("process_list", json!({"sort_by": "pid", "top": 50})).await.expect("pid");
    assert_valid_output(&h, "process_list", &by_pid.output);
    let pids: Vec<u64> = processes(&by_pid.output).iter().map(|p| p["pid"].as_u64().expect("pid")).collect();
    assert!(pids.windows(2).all(|w| w[0] < w[1]), "pid ascending: {pids:?}");
    assert_eq!(by_pid.output["sample_ms"], 200, "the default window");
}

/// Proves a CPU-bound thread shows up in the sampled CPU % of this process.
#[tokio::test]
async fn process_list_samples_cpu() {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spin = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        })
    };
    let h = timmy();
    let out = h.execute("process_list", json!({"filter": "system_tools", "sample_ms": 500})).await.expect("list");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    spin.join().expect("spinner");
    let me = processes(&out.output).iter().find(|p| p["pid"] == std::process::id()).expect("self listed");
    let cpu = me["cpu_percent"].as_f64().expect("cpu");
    // One spinning thread is one CPU; on 2 shared cores allow for other load.
    assert!(cpu >= 20.0, "a spinning thread should show, got {cpu}%");
}

/// Proves bad process_list arguments are E1003 naming the field, before anything is read.
#[tokio::test]
async fn process_list_refuses_bad_arguments() {
    let h = timmy();
    for (args, field) in [
        (json!({"sort_by": "memory"}), "sort_by"),
        (json!({"top": 0}), "top"),
        (json!({"top": 10001}), "top"),
        (json!({"sample_ms": 2001}), "sample_ms"),
        (json!({"filter": ""}), "filter"),
        (json!({"pid": 1}), "pid"),
    ] {
        let e = h.execute("process_list", args.clone()).await.expect_err("invalid");
        assert_eq!(e.code, ErrorCode::InvalidArguments, "{args}");
        assert_eq!(e.details["field"], field, "{args}");
    }
}

/// Proves service_status is honest on both kinds of host: where systemd is not PID 1 it is
/// E3007 naming PID 1; where it is, PID 1's own `init.scope` is reported active and an
/// unknown unit is E3006.
#[tokio::test]
async fn service_status_on_this_host() {
    let h = timmy();
    let result = h.execute("service_status", json!({"unit": "init.scope"})).await;
    let missing = h.execute("service_status", json!({"unit": "no-such-unit-4f1d.service"})).await;
    if systemd_booted() {
        let out = result.expect("init.scope exists wherever systemd is PID 1");
        assert_valid_output(&h, "service_status", &out.output);
        assert_eq!(out.output["status"]["id"], "init.scope");
        assert_eq!(out.output["active"], true);
        assert_eq!(missing.expect_err("unknown unit").code, ErrorCode::NotFound);
    } else {
        for r in [result, missing] {
            let e = r.expect_err("no systemd here");
            assert_eq!(e.code, ErrorCode::Unsupported, "{e}");
            assert_eq!(e.message, not_systemd_message());
            assert_eq!(e.details["checked"], "/run/systemd/system");
        }
    }
}

/// Proves an option-like unit name is E1003 from both service tools, whether it comes through
/// the harness (contract) or straight to the tool (its own check), and nothing runs.
#[tokio::test]
async fn invalid_unit_name_is_refused() {
    let h = timmy();
    for name in ["service_status", "service_restart"] {
        for unit in ["-evil", "--help", "a b", "x;reboot", "*"] {
            let e = h.execute(name, json!({"unit": unit})).await.expect_err("invalid");
            assert_eq!(
                (e.code, e.details["field"].as_str()),
                (ErrorCode::InvalidArguments, Some("unit")),
                "{name} {unit}"
            );
        }
        let env = Arc::new(ToolEnv::new(Roots::new::<&str>(&[]).expect("roots")));
        let ctx = ToolContext::new(env, House::Timmy, true, "direct");
        let tool = h.registry().get(name).expect("registered");
        let e = tool.call(&ctx, &json!({"unit": "-evil"})).await.expect_err("invalid");
        assert_eq!((e.code, e.details["field"].as_str()), (ErrorCode::InvalidArguments, Some("unit")), "{name}");
    }
}

/// Proves house policy on service_restart: Allegro and Bezalel need Timmy's approval (E2002)
/// and Ezra may not restart at all (E2001), before anything runs.
#[tokio::test]
async fn service_restart_is_gated_by_house_policy() {
    let args = json!({"unit": "ssh.service"});
    let allegro = harness(House::Allegro, Mode::Simple);
    let e = allegro.execute("service_restart", args.clone()).await.expect_err("needs approval");
    assert_eq!(e.code, ErrorCode::ApprovalRequired, "{e}");
    let ezra = harness(House::Ezra, Mode::Intelligent);
    let e = ezra.execute("service_restart", args.clone()).await.expect_err("denied");
    assert_eq!(e.code, ErrorCode::ToolNotAllowed, "{e}");
    let mut dry = Request::new("service_restart", args.clone());
    dry.dry_run = true;
    let e = ezra.execute_request(dry).await.expect_err("denied even as a dry run");
    assert_eq!(e.code, ErrorCode::ToolNotAllowed, "{e}");
    // Ezra may still look.
    let status = ezra.execute("service_status", args.clone()).await;
    assert_ne!(status.err().map(|e| e.code), Some(ErrorCode::ToolNotAllowed));
    let bezalel = harness(House::Bezalel, Mode::Simple);
    let e = bezalel.execute("service_restart", args).await.expect_err("needs proof");
    assert_eq!(e.code, ErrorCode::ProofRequired, "{e}");
}

/// Proves a dry run needs no approval but does need systemd: on a host without it, Timmy's
/// and Allegro's dry runs are E3007; with it, the dry run reports the current state and the
/// command it would run, and restarts nothing.
#[tokio::test]
async fn service_restart_dry_run_on_this_host() {
    for house in [House::Timmy, House::Allegro] {
        let mut dry = Request::new("service_restart", json!({"unit": "init.scope"}));
        dry.dry_run = true;
        let h = harness(house, Mode::Simple);
        let result = h.execute_request(dry).await;
        if systemd_booted() {
            let out = result.expect("dry run");
            assert_valid_output(&h, "service_restart", &out.output);
            assert_eq!((out.output["dry_run"].clone(), out.output["restarted"].clone()), (json!(true), json!(false)));
            assert_eq!(out.output["after"], Value::Null);
            assert!(out.output["summary"].as_str().expect("summary").starts_with("would restart init.scope"));
            let command = out.output["command"].as_array().expect("command");
            assert_eq!(command.last(), Some(&json!("init.scope")));
        } else {
            let e = result.expect_err("no systemd here");
            assert_eq!(e.code, ErrorCode::Unsupported, "{house}: {e}");
            assert_eq!(e.message, not_systemd_message());
        }
    }
}

/// Proves a real restart by Timmy on a host without systemd is E3007 and spawns nothing.
/// (On a systemd host it is not run: a test must not restart a real unit.)
#[tokio::test]
async fn service_restart_without_systemd_is_unsupported() {
    if systemd_booted() {
        return;
    }
    let e = timmy().execute("service_restart", json!({"unit": "ssh"})).await.expect_err("no systemd");
    assert_eq!(e.code, ErrorCode::Unsupported);
    assert_eq!(e.message, not_systemd_message());
}

fn fixture(name: &str) -> UnitStatus {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/systemctl").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let status = UnitStatus::from_properties(&parse_show(&text)).unwrap_or_else(|p| panic!("{name}: {p}"));
    let schema = Compiled::compile(&uni_wizard::tools::system::schema::unit_status()).expect("status schema");
    let json = serde_json::to_value(&status).expect("serialises");
    schema.validate(&json).unwrap_or_else(|v| panic!("{name} violates the status schema: {v:?}"));
    status
}

/// Proves recorded-format output of an active, running ssh.service parses to every field.
#[test]
fn parses_show_of_an_active_service() {
    let s = fixture("ssh-active.txt");
    assert_eq!(s.id, "ssh.service");
    assert_eq!(s.description, "OpenBSD Secure Shell server");
    assert_eq!((s.load_state.as_str(), s.active_state.as_str(), s.sub_state.as_str()), ("loaded", "active", "running"));
    assert_eq!(s.unit_file_state.as_deref(), Some("enabled"));
    assert_eq!(s.main_pid, Some(612));
    assert_eq!(s.result.as_deref(), Some("success"));
    assert_eq!((s.restarts, s.memory_bytes), (Some(0), Some(6_815_744)));
    assert_eq!(s.main_started_at.as_deref(), Some("Tue 2024-05-14 08:01:17 UTC"));
    assert_eq!(s.active_since.as_deref(), Some("Tue 2024-05-14 08:01:17 UTC"));
    assert!(!s.not_found());
}

/// Proves a failed unit parses with no main PID, `[not set]` memory as none, its restart
/// count, the failing result and an empty (never active) ActiveEnterTimestamp.
#[test]
fn parses_show_of_a_failed_service() {
    let s = fixture("failed.txt");
    assert_eq!(s.id, "nginx.service");
    assert_eq!((s.active_state.as_str(), s.sub_state.as_str()), ("failed", "failed"));
    assert_eq!(s.result.as_deref(), Some("exit-code"));
    assert_eq!((s.main_pid, s.memory_bytes, s.restarts), (None, None, Some(5)));
    assert_eq!(s.main_started_at.as_deref(), Some("Tue 2024-05-14 09:30:02 UTC"));
    assert_eq!(s.active_since, None);
}

/// Proves a unit systemd does not know parses as `not-found` with its optional fields empty.
#[test]
fn parses_show_of_a_unit_that_is_not_found() {
    let s = fixture("not-found.txt");
    assert!(s.not_found());
    assert_eq!((s.id.as_str(), s.description.as_str()), ("no-such-thing.service", "no-such-thing.service"));
    assert_eq!((s.active_state.as_str(), s.sub_state.as_str()), ("inactive", "dead"));
    assert_eq!((s.unit_file_state, s.main_pid, s.memory_bytes), (None, None, None));
    assert_eq!((s.main_started_at, s.active_since), (None, None));
}

/// Proves the three system tools are registered with honest annotations.
#[test]
fn system_tools_are_registered_with_honest_annotations() {
    let h = timmy();
    let get = |name| h.registry().get(name).unwrap_or_else(|| panic!("{name} registered")).contract();
    for name in ["process_list", "service_status"] {
        let c = get(name);
        assert!(
            c.spec().annotations.read_only && !c.spec().annotations.destructive && c.spec().annotations.idempotent,
            "{name}"
        );
        assert_eq!(c.spec().risk, uni_wizard::contract::Risk::Low, "{name}");
    }
    let c = get("service_restart");
    assert!(!c.spec().annotations.read_only && c.spec().annotations.destructive && !c.spec().annotations.idempotent);
    assert_eq!(c.spec().risk, uni_wizard::contract::Risk::High);
    assert!(c.spec().dry_run);
    assert!(h.registry().get("service_restart").expect("registered").changes_production(&json!({"unit": "ssh"})));
}
