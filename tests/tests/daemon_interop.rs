//! The daemons against tools nobody here wrote: Prometheus's `promtool` lints every role's
//! `/metrics`, and the stock Python gRPC client (`grpcio`, `grpcio-health-checking`,
//! `grpcio-reflection`, run through `tests/py/grpc_probe.py`) checks health, reflection and auth.
//!
//! The fleet is Timmy running router, health and worker, and Ezra running a worker.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tonic::Request;
use tonic::transport::Channel;
use uni_wizard_proto::v1::{
    CapacityRequest, ExecuteRequest, House, StatusRequest, SubmitRequest, ToolCall, router_client::RouterClient,
    worker_client::WorkerClient,
};
use uni_wizard_tests::fleet::Fleet;
use uni_wizard_tests::missing;

/// The fleet of these tests: Timmy routes, probes and works; Ezra works.
fn start_fleet() -> Fleet {
    let fleet = Fleet::start(&["timmy", "ezra"], &|h| {
        if h == "timmy" { "roles: [router, health, worker]\n".to_owned() } else { String::new() }
    });
    fleet.wait_peer_state("timmy", "ezra", "up", Duration::from_secs(10));
    fleet
}

/// The uniwizard.v1 services a node of this fleet runs.
fn services_of(house: &str) -> &'static [&'static str] {
    if house == "timmy" { &["uniwizard.v1.Router", "uniwizard.v1.Worker"] } else { &["uniwizard.v1.Worker"] }
}

fn auth<T>(msg: T, house: &str, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.set_timeout(Duration::from_secs(10));
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    r.metadata_mut().insert("x-uw-house", house.parse().expect("ascii house"));
    r
}

fn wire_house(house: &str) -> House {
    match house {
        "timmy" => House::Timmy,
        "ezra" => House::Ezra,
        other => panic!("no wire house for {other}"),
    }
}

/// Real calls through every service of the fleet (successes and refusals), so counters,
/// gauges and histograms exist before `/metrics` is read.
fn make_traffic(fleet: &Fleet) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let timmy = &fleet.nodes["timmy"];
        for node in fleet.nodes.values() {
            let channel = Channel::from_shared(format!("http://{}", node.grpc))
                .expect("uri")
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .unwrap_or_else(|e| panic!("connect {}: {e}", node.grpc));
            let mut worker = WorkerClient::new(channel.clone());
            // Timmy dispatches to every worker (worker.dispatchers), with Timmy's token.
            for i in 0..3 {
                let call = ToolCall {
                    tool: "file_read".into(),
                    args_json: r#"{"path": "hello.txt"}"#.into(),
                    session: format!("interop-{i}"),
                    ..ToolCall::default()
                };
                let req = ExecuteRequest {
                    call: Some(call),
                    house: wire_house(&node.house).into(),
                    task_id: format!("interop-{}-{i}", node.house),
                    ..ExecuteRequest::default()
                };
                let resp = worker.execute(auth(req, "timmy", &timmy.token)).await;
                assert!(resp.is_ok(), "{} Execute: {resp:?}\n{}", node.house, node.log());
            }
            let cap = worker.capacity(auth(CapacityRequest {}, "timmy", &timmy.token)).await;
            assert!(cap.is_ok(), "{} Capacity: {cap:?}", node.house);
            // Refusals: no credentials, and a token for the wrong house.
            let e = worker.capacity(Request::new(CapacityRequest {})).await.expect_err("no token");
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
            let e = worker.capacity(auth(CapacityRequest {}, "ezra", &timmy.token)).await.expect_err("wrong house");
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
            if node.house == "timmy" {
                let mut router = RouterClient::new(channel);
                for i in 0..3 {
                    let call = ToolCall {
                        tool: "file_read".into(),
                        args_json: r#"{"path": "hello.txt"}"#.into(),
                        ..ToolCall::default()
                    };
                    let req = SubmitRequest {
                        call: Some(call),
                        idempotency_key: format!("interop-submit-{i}"),
                        caller_house: House::Timmy.into(),
                        ..SubmitRequest::default()
                    };
                    let resp = router.submit(auth(req, "timmy", &timmy.token)).await;
                    let task = resp.unwrap_or_else(|e| panic!("Submit: {e:?}\n{}", node.log())).into_inner();
                    let status =
                        router.status(auth(StatusRequest { task_id: task.task_id }, "timmy", &timmy.token)).await;
                    assert!(status.is_ok(), "Status: {status:?}");
                }
            }
        }
    });
}

/// Proves promtool (Prometheus's own linter) accepts every role's `/metrics` page with no
/// problem and no lint warning, after real traffic has filled counters and histograms.
#[test]
fn every_metrics_page_passes_promtool_check_metrics() {
    if Command::new("promtool").arg("--version").output().is_err() && missing("promtool (Debian package prometheus)") {
        return;
    }
    let fleet = start_fleet();
    make_traffic(&fleet);
    let mut problems = Vec::new();
    for node in fleet.nodes.values() {
        // With the scrape token, as Prometheus' `authorization: {credentials_file: ...}` sends it.
        let (status, page) =
            node.scrape("/metrics").unwrap_or_else(|| panic!("{} /metrics did not answer", node.house));
        assert_eq!(status, 200, "{} /metrics: {page}", node.house);
        // The check is only worth something on a page that has the families traffic makes.
        // The last two are read from state at each scrape (configs/prometheus alerts on them).
        let mut want = vec![
            "uw_worker_calls_total",
            "uw_worker_call_seconds_bucket",
            "uw_auth_refused_total",
            "uw_worker_breakers_open",
            "uw_audit_write_failures_total",
        ];
        if node.house == "timmy" {
            want.extend(["uw_router_tasks_total", "uw_router_task_seconds_bucket", "uw_peer_up"]);
        }
        for family in want {
            assert!(page.contains(family), "{} /metrics has no {family}:\n{page}", node.house);
        }
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool starts");
        child.stdin.take().expect("stdin").write_all(page.as_bytes()).expect("feed promtool");
        let out = child.wait_with_output().expect("promtool finishes");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() || !text.trim().is_empty() {
            problems.push(format!(
                "--- {} ({}): promtool check metrics exit {:?}\n{text}",
                node.house,
                services_of(&node.house).join(", "),
                out.status.code()
            ));
        }
    }
    assert!(problems.is_empty(), "promtool found problems:\n{}", problems.join("\n"));
}

/// The venv's python, or None (after [`missing`]) when the venv or its packages are absent.
fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("UNI_WIZARD_PY_VENV")
        .filter(|v| !v.is_empty())
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv"), PathBuf::from);
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import grpc, grpc_health.v1.health_pb2, grpc_reflection.v1alpha.reflection_pb2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        missing(&format!("the Python venv {} with grpcio, grpcio-health-checking, grpcio-reflection", venv.display()));
        return None;
    }
    Some(python)
}

/// Runs tests/py/grpc_probe.py against `addr`; its JSON report.
fn probe(python: &Path, addr: &str, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/grpc_probe.py");
    let mut c = Command::new(python);
    c.arg(&script).arg(addr).args(["--timeout", "10"]).args(args).stdin(Stdio::null());
    let out = uni_wizard_tests::run(c);
    assert!(out.status.success(), "grpc_probe.py {addr} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    uni_wizard_tests::json_stdout(&out)
}

/// Proves the stock Python gRPC client sees every node SERVING (overall and per service it
/// runs), lists grpc.health.v1.Health, reflection and the node's uniwizard.v1 services through
/// reflection v1 and v1alpha, and, as a standard probe, gets health's SERVING with no
/// credentials or a bare token while reflection answers UNAUTHENTICATED (PERMISSION_DENIED for
/// another house's token).
#[test]
fn python_grpcio_sees_health_reflection_and_auth() {
    let Some(python) = venv_python() else { return };
    let fleet = start_fleet();
    for node in fleet.nodes.values() {
        let own = services_of(&node.house);
        let mut args: Vec<&str> = vec!["--token", &node.token, "--house", &node.house];
        for s in own {
            args.extend(["--service", s]);
        }
        for version in ["auto", "v1", "v1alpha"] {
            let mut a = args.clone();
            a.extend(["--reflection", version]);
            let r = probe(&python, &node.grpc, &a);
            let ctx = format!("{} (--reflection {version}): {r:#}", node.house);
            assert_eq!(r["overall"], "SERVING", "{ctx}");
            if version != "auto" {
                assert_eq!(r["reflection"]["version"], version, "{ctx}");
            }
            let listed: Vec<&str> = r["reflection"]["services"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert!(listed.contains(&"grpc.health.v1.Health"), "{ctx}");
            assert!(listed.iter().any(|s| s.starts_with("grpc.reflection.")), "{ctx}");
            for s in own {
                assert!(listed.contains(s), "{s} not listed: {ctx}");
                assert_eq!(r["services"][*s], "SERVING", "{s}: {ctx}");
            }
            // Reflection advertises only what this node serves: no other uniwizard.v1 service.
            let foreign: Vec<&&str> =
                listed.iter().filter(|s| s.starts_with("uniwizard.v1.") && !own.contains(s)).collect();
            assert!(foreign.is_empty(), "{foreign:?} listed but not run here: {ctx}");
        }
        // As a Kubernetes gRPC probe (nothing) or grpc_health_probe with a token (no house):
        // health answers, reflection refuses.
        for creds in [&[][..], &["--token", node.token.as_str()][..]] {
            let mut a = vec!["--service", own[0]];
            a.extend(creds);
            let r = probe(&python, &node.grpc, &a);
            let ctx = format!("{} with {creds:?}: {r:#}", node.house);
            assert_eq!(r["overall"], "SERVING", "{ctx}");
            assert_eq!(r["services"][own[0]], "SERVING", "{ctx}");
            assert_eq!(r["reflection"]["error"], "UNAUTHENTICATED", "{ctx}");
        }
        // Another house's token for this house: impersonation (health does not look).
        let other = fleet.nodes.values().find(|n| n.house != node.house).expect("two houses");
        let r = probe(&python, &node.grpc, &["--token", &other.token, "--house", &node.house]);
        let ctx = format!("{} with {}'s token: {r:#}", node.house, other.house);
        assert_eq!(r["reflection"]["error"], "PERMISSION_DENIED", "{ctx}");
        assert_eq!(r["overall"], "SERVING", "{ctx}");
    }
}
