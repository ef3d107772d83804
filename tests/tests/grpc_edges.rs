//! The gRPC edge of real daemons (issue 15, defects 9 to 11): malformed requests are contract
//! errors before any authorization, what tonic refuses by itself gets the conventional codes,
//! errors echo their input bounded, and `grpc.health.v1` answers probes without credentials
//! while everything else stays authenticated.
//!
//! The fleet is Timmy (router, health, worker, sovereign) and Ezra (worker).

use std::time::Duration;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use uni_wizard_proto::v1::{
    ApprovalRequest, CapacityRequest, DecideRequest, ExecuteRequest, StatusRequest, SubmitRequest, ToolCall,
    execute_response, router_client::RouterClient, sovereign_client::SovereignClient, worker_client::WorkerClient,
};
use uni_wizard_tests::fleet::Fleet;

fn start() -> Fleet {
    Fleet::start(&["timmy", "ezra"], &|_| String::new())
}

async fn channel(fleet: &Fleet) -> Channel {
    let timmy = &fleet.nodes["timmy"];
    Channel::from_shared(format!("http://{}", timmy.grpc)).expect("uri").connect().await.expect("connect")
}

/// A request with `house`'s credentials (either may be left out).
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

/// A request with `node`'s own credentials.
fn as_house<T>(m: T, node: &uni_wizard_tests::fleet::Node) -> tonic::Request<T> {
    req(m, Some(&node.house), Some(&node.token))
}

fn assert_status(s: &tonic::Status, code: tonic::Code, e: &str) {
    assert_eq!(s.code(), code, "{s:?}");
    assert!(s.message().starts_with(e), "{e} expected in {:?}", s.message());
}

fn read_call() -> Option<ToolCall> {
    Some(ToolCall { tool: "file_read".into(), args_json: r#"{"path":"hello.txt"}"#.into(), ..Default::default() })
}

/// Sends bytes as they are, so a test can put on the wire what no well-behaved client would.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// One unary call of `path` carrying `body` as the message, as Timmy.
async fn raw_call(channel: &Channel, path: &'static str, body: Vec<u8>, token: Option<&str>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let r = req(body, token.map(|_| "timmy"), token);
    grpc.unary(r, tonic::codegen::http::uri::PathAndQuery::from_static(path), Raw).await.expect_err("refused")
}

/// Proves malformed requests are E1xxx with INVALID_ARGUMENT before any authorization: an
/// empty `Execute` (was E5003), one with `caller_house = 99` (was accepted and ran) or an
/// empty tool name, an empty `RequestApproval` (was E5002, "impersonation"), a `Submit` naming
/// house 99, an empty `Decide` from a house that may not decide, a `Status` with an empty or
/// 10,000-character task id; an unauthenticated caller
/// still hears only E5001, and a well-formed call from a house not allowed still E5003.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_contract_errors_before_authorization() {
    let fleet = start();
    let (timmy, ezra) = (&fleet.nodes["timmy"], &fleet.nodes["ezra"]);
    let channel = channel(&fleet).await;
    let mut worker = WorkerClient::new(channel.clone());

    let s = worker.execute(as_house(ExecuteRequest::default(), timmy)).await.expect_err("empty");
    assert_status(&s, tonic::Code::InvalidArgument, "E1005");
    let s = worker.execute(req(ExecuteRequest::default(), Some("ezra"), Some(&ezra.token))).await.expect_err("empty");
    assert_status(&s, tonic::Code::InvalidArgument, "E1005");
    let s = worker.execute(req(ExecuteRequest::default(), None, None)).await.expect_err("no credentials");
    assert_status(&s, tonic::Code::Unauthenticated, "E5001");

    let forged = ExecuteRequest { call: read_call(), house: 1, caller_house: 99, ..Default::default() };
    let s = worker.execute(as_house(forged, timmy)).await.expect_err("house 99");
    assert_status(&s, tonic::Code::InvalidArgument, "E1002");
    assert!(s.message().contains("caller_house"), "{s:?}");
    let unnamed = ExecuteRequest {
        call: Some(ToolCall { args_json: "{}".into(), ..Default::default() }),
        house: 1,
        ..Default::default()
    };
    let s = worker.execute(as_house(unnamed, timmy)).await.expect_err("no tool");
    assert_status(&s, tonic::Code::InvalidArgument, "E1005");
    let no_house = ExecuteRequest { call: read_call(), ..Default::default() };
    let s = worker.execute(as_house(no_house, timmy)).await.expect_err("no house");
    assert_status(&s, tonic::Code::InvalidArgument, "E1002");

    let well_formed = ExecuteRequest { call: read_call(), house: 1, ..Default::default() };
    let s = worker.execute(req(well_formed.clone(), Some("ezra"), Some(&ezra.token))).await.expect_err("not Ezra");
    assert_status(&s, tonic::Code::PermissionDenied, "E5003");
    let ok = worker.execute(as_house(well_formed, timmy)).await.expect("Timmy dispatches").into_inner();
    assert!(matches!(ok.result, Some(execute_response::Result::Outcome(_))), "{ok:?}");

    let mut sovereign = SovereignClient::new(channel.clone());
    let s = sovereign.request_approval(as_house(ApprovalRequest::default(), timmy)).await.expect_err("empty");
    assert_status(&s, tonic::Code::InvalidArgument, "E1002");
    let s = sovereign.request_approval(req(ApprovalRequest::default(), Some("ezra"), Some(&ezra.token))).await;
    assert_status(&s.expect_err("empty"), tonic::Code::InvalidArgument, "E1002");
    let s = sovereign.decide(req(DecideRequest::default(), Some("ezra"), Some(&ezra.token))).await;
    assert_status(&s.expect_err("empty"), tonic::Code::InvalidArgument, "E1005");
    let not_ezras = ApprovalRequest {
        request_id: "r-1".into(),
        requesting_house: 1,
        tool: "file_write".into(),
        args_sha256: "0".repeat(64),
        node: "ezra-node".into(),
        ..Default::default()
    };
    let s = sovereign.request_approval(req(not_ezras, Some("ezra"), Some(&ezra.token))).await;
    assert_status(&s.expect_err("for Timmy"), tonic::Code::PermissionDenied, "E5002");

    let mut router = RouterClient::new(channel);
    for (caller_house, preferred_house) in [(99, 0), (0, 99)] {
        let submit = SubmitRequest {
            call: read_call(),
            idempotency_key: "k".into(),
            caller_house,
            preferred_house,
            ..Default::default()
        };
        let s = router.submit(as_house(submit, timmy)).await.expect_err("house 99");
        assert_status(&s, tonic::Code::InvalidArgument, "E1002");
    }
    for task_id in [String::new(), "t".repeat(10_000)] {
        let status = StatusRequest { task_id };
        let s = router.status(req(status, Some("ezra"), Some(&ezra.token))).await.expect_err("malformed id");
        assert_status(&s, tonic::Code::InvalidArgument, "E1005");
    }
}

/// Proves what tonic refuses by itself gets the conventional code and an E-code: a 10 MB
/// message RESOURCE_EXHAUSTED (was OUT_OF_RANGE), invalid UTF-8 in a string INVALID_ARGUMENT
/// (was INTERNAL), and an unknown 10,000-character tool name E1001 with the name echoed
/// bounded (was echoed whole, and the client saw RESOURCE_EXHAUSTED).
#[tokio::test(flavor = "multi_thread")]
async fn tonic_refusals_get_conventional_codes_and_errors_echo_bounded() {
    let fleet = start();
    let timmy = &fleet.nodes["timmy"];
    let channel = channel(&fleet).await;

    let big = ExecuteRequest {
        call: Some(ToolCall { tool: "file_read".into(), args_json: "x".repeat(10 << 20), ..Default::default() }),
        house: 1,
        ..Default::default()
    };
    let s = raw_call(&channel, "/uniwizard.v1.Worker/Execute", big.encode_to_vec(), Some(&timmy.token)).await;
    assert_status(&s, tonic::Code::ResourceExhausted, "E1005");
    // ExecuteRequest { call: ToolCall { tool: b"\xff\xfe" } }
    let not_utf8 = vec![0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
    let s = raw_call(&channel, "/uniwizard.v1.Worker/Execute", not_utf8.clone(), Some(&timmy.token)).await;
    assert_status(&s, tonic::Code::InvalidArgument, "E1005");
    assert!(s.message().contains("UTF-8"), "{s:?}");
    let s = raw_call(&channel, "/uniwizard.v1.Worker/Execute", not_utf8, None).await;
    assert_status(&s, tonic::Code::Unauthenticated, "E5001");

    let name = "y".repeat(10_000);
    let submit = SubmitRequest {
        call: Some(ToolCall { tool: name.clone(), args_json: "{}".into(), ..Default::default() }),
        idempotency_key: "long-name".into(),
        ..Default::default()
    };
    let mut router = RouterClient::new(channel.clone());
    let s = router.submit(req(submit, Some("timmy"), Some(&timmy.token))).await.expect_err("unknown tool");
    assert_status(&s, tonic::Code::InvalidArgument, "E1001");
    assert!(s.message().len() < 400 && s.message().contains("yyy…"), "{}", s.message().len());

    let execute = ExecuteRequest {
        call: Some(ToolCall { tool: name, args_json: "{}".into(), ..Default::default() }),
        house: 1,
        ..Default::default()
    };
    let mut worker = WorkerClient::new(channel);
    let r = worker.execute(req(execute, Some("timmy"), Some(&timmy.token))).await.expect("answered").into_inner();
    match r.result {
        Some(execute_response::Result::Error(d)) => {
            assert_eq!(d.code, "E1001");
            // Within the wire's bounds for a response body (wire::Bounds::BODY), whatever the
            // library echoed.
            assert!(d.message.len() <= 1024 && d.details_json.len() <= 16 * 1024, "{d:?}");
        }
        other => panic!("not E1001: {other:?}"),
    }
}

/// Proves a call whose `grpc-timeout` passes on the server is answered DEADLINE_EXCEEDED
/// with E3001 (was CANCELLED). Sent with hyper's own HTTP/2 client, which keeps no deadline
/// of its own, so the answer seen is the server's.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_side_deadline_is_deadline_exceeded() {
    use http_body_util::{BodyExt, Full};
    let fleet = start();
    let timmy = &fleet.nodes["timmy"];
    // Waits (up to 10 s) for Timmy to decide: longer than the deadline.
    let ask = ApprovalRequest {
        request_id: "deadline-1".into(),
        requesting_house: 1,
        tool: "file_write".into(),
        // The hash of its (empty) arguments: Timmy refuses a request whose hash is not.
        args_sha256: uni_wizard::approval::args_sha256(&serde_json::json!({})),
        node: "timmy-node".into(),
        wait_timeout_ms: 10_000,
        ..Default::default()
    };
    let message = ask.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend(u32::try_from(message.len()).expect("small").to_be_bytes());
    framed.extend(message);

    let tcp = tokio::net::TcpStream::connect(&timmy.grpc).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let request = hyper::Request::post(format!("http://{}/uniwizard.v1.Sovereign/RequestApproval", timmy.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .header("x-uw-house", "timmy")
        .header("authorization", format!("Bearer {}", timmy.token))
        .body(Full::new(bytes::Bytes::from(framed)))
        .expect("request");
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(8), sender.send_request(request))
        .await
        .expect("answered before the approval wait")
        .expect("response");
    let mut headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body");
    if let Some(trailers) = body.trailers() {
        headers.extend(trailers.clone());
    }
    let status = tonic::Status::from_header_map(&headers).expect("a grpc-status");
    assert_status(&status, tonic::Code::DeadlineExceeded, "E3001");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// Proves `grpc.health.v1` answers probes without credentials (nothing at all, as a
/// Kubernetes gRPC probe; a bearer token without `x-uw-house`, as `grpc_health_probe
/// -rpc-header`): Check per service and overall, and Watch; while reflection, another health
/// method and every uniwizard.v1 service still refuse with E5001 (was: health refused too).
#[tokio::test(flavor = "multi_thread")]
async fn health_answers_probes_without_credentials() {
    let fleet = start();
    let timmy = &fleet.nodes["timmy"];
    let channel = channel(&fleet).await;
    let mut health = HealthClient::new(channel.clone());
    let check = |service: &str| HealthCheckRequest { service: service.to_owned() };
    for service in ["", "uniwizard.v1.Worker", "uniwizard.v1.Router", "uniwizard.v1.Sovereign"] {
        let r = health.check(req(check(service), None, None)).await.expect("no credentials").into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
        let r = health.check(req(check(service), None, Some(&timmy.token))).await.expect("token only");
        assert_eq!(r.into_inner().status(), ServingStatus::Serving, "{service:?}");
    }
    let mut watch = health.watch(req(check(""), None, None)).await.expect("watch").into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.expect("in time");
    assert_eq!(first.expect("ok").map(|r| r.status()), Some(ServingStatus::Serving));

    let mut worker = WorkerClient::new(channel.clone());
    let s = worker.capacity(req(CapacityRequest {}, None, Some(&timmy.token))).await.expect_err("no house");
    assert_status(&s, tonic::Code::Unauthenticated, "E5001");
    for path in [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.health.v1.Health/List",
        "/grpc.health.v1.Health/Check/",
    ] {
        let s = raw_call(&channel, path, Vec::new(), None).await;
        assert_status(&s, tonic::Code::Unauthenticated, "E5001");
    }
}

/// Proves a telemetry stream whose message does not decode (invalid UTF-8 in `node`) is
/// answered INVALID_ARGUMENT with E1005, as a unary request is, instead of ending with OK.
#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_telemetry_message_is_invalid_argument() {
    let fleet = Fleet::start(&["timmy"], &|_| "roles: [worker, telemetry]\n".to_owned());
    let timmy = &fleet.nodes["timmy"];
    let channel = channel(&fleet).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    // TelemetryEvent { node: b"\xff" }
    let events = tonic::codegen::tokio_stream::iter(vec![vec![0x0a, 0x01, 0xff]]);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/uniwizard.v1.Telemetry/Stream");
    let answer = async {
        let mut acks = grpc.streaming(as_house(events, timmy), path, Raw).await?.into_inner();
        acks.message().await
    };
    let s = tokio::time::timeout(Duration::from_secs(10), answer).await.expect("answered").expect_err("refused");
    assert_status(&s, tonic::Code::InvalidArgument, "E1005");
}

/// Proves the id-like fields a request carries are bounded (E1005, INVALID_ARGUMENT, nothing
/// stored): a 1 MB `session`, `proof`, `idempotency_key` or `task_id` of an `Execute`, and a
/// 2 MB `idempotency_key` of a `Submit`, were accepted and kept with the task and the record.
#[tokio::test(flavor = "multi_thread")]
async fn ids_keys_sessions_and_proofs_are_bounded() {
    let fleet = start();
    let timmy = &fleet.nodes["timmy"];
    let channel = channel(&fleet).await;
    let mut worker = WorkerClient::new(channel.clone());
    let huge = "s".repeat(1 << 20);
    let calls = [
        ToolCall { session: huge.clone(), ..read_call().expect("call") },
        ToolCall { proof: huge.clone(), ..read_call().expect("call") },
        ToolCall { idempotency_key: huge.clone(), ..read_call().expect("call") },
    ];
    for call in calls {
        let r = ExecuteRequest { call: Some(call), house: 1, ..Default::default() };
        let s = worker.execute(as_house(r, timmy)).await.expect_err("bounded");
        assert_status(&s, tonic::Code::InvalidArgument, "E1005");
        assert!(s.message().len() < 400, "the error echoes no megabyte: {}", s.message().len());
    }
    let r = ExecuteRequest { call: read_call(), house: 1, task_id: huge.clone(), ..Default::default() };
    let s = worker.execute(as_house(r, timmy)).await.expect_err("bounded");
    assert_status(&s, tonic::Code::InvalidArgument, "E1005");
    let submit = SubmitRequest { call: read_call(), idempotency_key: huge.repeat(2), ..Default::default() };
    let s = RouterClient::new(channel).submit(as_house(submit, timmy)).await.expect_err("bounded");
    assert_status(&s, tonic::Code::InvalidArgument, "E1005");
    let db = rusqlite::Connection::open(timmy.home.join("audit.db")).expect("audit store");
    let longest: Option<i64> =
        db.query_row("SELECT max(length(session)) FROM records", [], |r| r.get(0)).expect("query");
    assert!(longest.unwrap_or(0) <= 256, "no long session stored: {longest:?}");
}
