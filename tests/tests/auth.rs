//! Authentication of every RPC on real daemons: house tokens bound to the claimed house, and
//! mutual TLS with a CA made in the test.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use uni_wizard_proto::v1::{
    ExecuteRequest, SubmitRequest, ToolCall, router_client::RouterClient, worker_client::WorkerClient,
};
use uni_wizard_tests::fleet::Fleet;
use uni_wizard_tests::pki::Pki;
use uni_wizard_tests::{bin, json_stdout};

fn roles(h: &str) -> String {
    if h == "timmy" { "roles: [router, health, worker]\n".into() } else { String::new() }
}

/// A request carrying `house` and `token` as the daemons expect (either may be left out).
fn req<T>(msg: T, house: Option<&str>, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(h) = house {
        r.metadata_mut().insert("x-uw-house", MetadataValue::try_from(h).expect("ascii"));
    }
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {t}")).expect("ascii"));
    }
    r
}

fn submit_request() -> SubmitRequest {
    SubmitRequest {
        call: Some(ToolCall { tool: "system_info".into(), args_json: "{}".into(), ..Default::default() }),
        idempotency_key: "auth-test".into(),
        ..Default::default()
    }
}

fn assert_refused(s: &tonic::Status, code: tonic::Code, e: &str) {
    assert_eq!(s.code(), code, "{s:?}");
    assert!(s.message().starts_with(e), "{e} expected in {:?}", s.message());
}

/// Proves no token, a wrong token, an unknown house and Allegro-style impersonation (Ezra's
/// token claiming Timmy) are refused on the router and the worker with E5001/E5002, while the
/// health service answers its serving status whatever credentials come (standard probes send
/// none); a house outside `worker.dispatchers` gets E5003; the right token works.
#[tokio::test(flavor = "multi_thread")]
async fn missing_wrong_and_impersonating_credentials_are_refused() {
    let fleet = Fleet::start(&["timmy", "ezra"], &roles);
    let (timmy, ezra) = (&fleet.nodes["timmy"], &fleet.nodes["ezra"]);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", timmy.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut router = RouterClient::new(channel.clone());
    let mut health = HealthClient::new(channel.clone());

    let cases: [(Option<&str>, Option<&str>, tonic::Code, &str); 5] = [
        (None, None, tonic::Code::Unauthenticated, "E5001"),
        (Some("timmy"), None, tonic::Code::Unauthenticated, "E5001"),
        (Some("timmy"), Some("not-the-token-of-anyone"), tonic::Code::Unauthenticated, "E5001"),
        (Some("nobody"), Some(&timmy.token), tonic::Code::Unauthenticated, "E5001"),
        (Some("timmy"), Some(&ezra.token), tonic::Code::PermissionDenied, "E5002"),
    ];
    for (house, token, code, e) in cases {
        let s = router.submit(req(submit_request(), house, token)).await.expect_err("refused");
        assert_refused(&s, code, e);
        let ok = health.check(req(HealthCheckRequest { service: String::new() }, house, token)).await;
        assert_eq!(ok.expect("health answers probes").into_inner().status, 1, "SERVING");
    }

    let mut worker = WorkerClient::new(channel.clone());
    let execute = ExecuteRequest { call: submit_request().call, house: 1, ..Default::default() };
    let s = worker.execute(req(execute, Some("ezra"), Some(&ezra.token))).await.expect_err("ezra may not dispatch");
    assert_refused(&s, tonic::Code::PermissionDenied, "E5003");

    let ok = router.submit(req(submit_request(), Some("ezra"), Some(&ezra.token))).await.expect("ezra submits as ezra");
    assert!(ok.into_inner().result.is_some());
    let ok = health.check(req(HealthCheckRequest { service: String::new() }, Some("timmy"), Some(&timmy.token))).await;
    assert_eq!(ok.expect("serving").into_inner().status, 1, "SERVING");

    let o = std::process::Command::new(bin("uni-wizard"))
        .env("UNI_WIZARD_HOME", fleet.dir.path())
        .env("UNI_WIZARD_TOKEN", &ezra.token)
        .args(["test", "--json", "--router", &timmy.grpc, "--house", "timmy", "--tool", "system_info"])
        .output()
        .expect("cli");
    assert_eq!(o.status.code(), Some(5), "the CLI exits 5 on an auth refusal");
    assert_eq!(json_stdout(&o)["error"]["code"], "E5002");
}

/// Proves `Router/Status` shows a task to the house that submitted it and to Timmy only:
/// Ezra asking for Timmy's `file_read` gets E5003, worded as for a task that does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_is_visible_to_its_submitter_and_timmy_only() {
    use uni_wizard_proto::v1::{StatusRequest, status_response};
    let fleet = Fleet::start(&["timmy", "ezra", "bezalel"], &roles);
    let (timmy, ezra, bezalel) = (&fleet.nodes["timmy"], &fleet.nodes["ezra"], &fleet.nodes["bezalel"]);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", timmy.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut router = RouterClient::new(channel);
    let read = |key: &str| SubmitRequest {
        call: Some(ToolCall {
            tool: "file_read".into(),
            args_json: r#"{"path":"hello.txt"}"#.into(),
            ..Default::default()
        }),
        idempotency_key: key.into(),
        ..Default::default()
    };
    let submitted = router.submit(req(read("timmys"), Some("timmy"), Some(&timmy.token))).await.expect("submitted");
    let timmys = submitted.into_inner();
    assert!(timmys.result.is_some(), "finished: {timmys:?}");
    let status = |id: &str, house: &str, token: &str| {
        let mut router = router.clone();
        let r = req(StatusRequest { task_id: id.to_owned() }, Some(house), Some(token));
        async move { router.status(r).await }
    };

    let theirs = status(&timmys.task_id, "ezra", &ezra.token).await.expect_err("not Ezra's task");
    assert_refused(&theirs, tonic::Code::PermissionDenied, "E5003");
    assert!(!theirs.message().contains("hello from"), "no output leaks: {theirs:?}");
    let missing = status("no-such-task", "ezra", &ezra.token).await.expect_err("no such task");
    assert_eq!(
        (missing.code(), missing.message().replace("no-such-task", "ID")),
        (theirs.code(), theirs.message().replace(&timmys.task_id, "ID")),
        "the same answer whether the task exists or not"
    );
    let own = status(&timmys.task_id, "timmy", &timmy.token).await.expect("Timmy reads his own task").into_inner();
    match own.result {
        Some(status_response::Result::Outcome(o)) => assert!(o.output_json.contains("hello from"), "{o:?}"),
        other => panic!("Timmy's task has no outcome: {other:?}"),
    }

    let ezras = router.clone().submit(req(read("ezras"), Some("ezra"), Some(&ezra.token))).await.expect("ezra submits");
    let ezras = ezras.into_inner().task_id;
    assert!(status(&ezras, "ezra", &ezra.token).await.is_ok(), "Ezra reads her own task");
    assert!(status(&ezras, "timmy", &timmy.token).await.is_ok(), "Timmy reads every task");
    let s = status(&ezras, "bezalel", &bezalel.token).await.expect_err("not Bezalel's task");
    assert_refused(&s, tonic::Code::PermissionDenied, "E5003");
    let s = status("no-such-task", "timmy", &timmy.token).await.expect_err("Timmy is told it does not exist");
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
}

/// Proves mutual TLS with a CA generated here works end to end (CLI -> router -> worker, all
/// TLS), and that a client certificate from another CA, or no TLS at all, is refused.
#[test]
fn tls_with_the_fleet_ca_works_and_a_foreign_client_certificate_is_refused() {
    let pki = Pki::new();
    let ca = Pki::ca("uni-wizard fleet CA");
    let ca_pem = pki.write_ca(&ca, "ca");
    let (node_cert, node_key) = pki.leaf(&ca, "timmy");
    let (cli_cert, cli_key) = pki.leaf(&ca, "operator");
    let (bad_cert, bad_key) = pki.leaf(&Pki::ca("someone else"), "intruder");
    let tls = format!(
        "tls: {{ca: {}, cert: {}, key: {}}}\nroles: [router, health, worker]\n",
        ca_pem.display(),
        node_cert.display(),
        node_key.display()
    );
    let fleet = Fleet::start(&["timmy"], &|_| tls.clone());
    fleet.wait_peer_state("timmy", "timmy", "up", Duration::from_secs(10));
    let timmy = &fleet.nodes["timmy"];
    let run = |cert: Option<(&std::path::Path, &std::path::Path)>| {
        let mut c = std::process::Command::new(bin("uni-wizard"));
        c.env("UNI_WIZARD_HOME", fleet.dir.path()).env("UNI_WIZARD_TOKEN", &timmy.token).args([
            "test",
            "--json",
            "--router",
            &timmy.grpc,
            "--house",
            "timmy",
            "--tool",
            "system_info",
        ]);
        if let Some((cert, key)) = cert {
            c.arg("--tls-ca").arg(&ca_pem).arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        c.output().expect("cli")
    };
    let o = run(Some((&cli_cert, &cli_key)));
    let v = json_stdout(&o);
    assert!(o.status.success(), "{v}\n{}", timmy.log());
    assert_eq!(v["assigned_house"], "timmy", "router -> worker over TLS too: {v}");

    let o = run(Some((&bad_cert, &bad_key)));
    assert!(!o.status.success(), "a client certificate from another CA is refused: {}", json_stdout(&o));
    let o = run(None);
    assert!(!o.status.success(), "plaintext to a TLS node is refused: {}", json_stdout(&o));
}
