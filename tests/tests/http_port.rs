//! The daemons' HTTP port on real processes: who may read `/metrics`, what a slow or silent
//! client gets, and what `/health` says while the node drains. Everything on 127.0.0.1,
//! every wait bounded, every process stopped when its fleet drops.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic::metadata::MetadataValue;
use uni_wizard_proto::v1::{CapacityRequest, worker_client::WorkerClient};
use uni_wizard_tests::fleet::{Fleet, http_get, http_get_bearer};
use uni_wizard_tests::{bin, json_stdout};

fn none(_: &str) -> String {
    String::new()
}

/// A GET with a raw `Authorization` header value; the status.
fn get_with_authorization(addr: &str, path: &str, authorization: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Proves `/metrics` answers only `Authorization: Bearer <token of http.metrics_token_file>`
/// (401 with a `WWW-Authenticate: Bearer` challenge otherwise, wrong token or scheme included)
/// while `/health` stays open, and a rotated token file applies without a restart.
#[test]
fn metrics_wants_the_scrape_token_and_health_stays_open() {
    let fleet = Fleet::start(&["ezra"], &none);
    let ezra = &fleet.nodes["ezra"];
    assert_eq!(http_get(&ezra.http, "/health").map(|(c, _)| c), Some(200), "health needs no token");
    let (code, body) = http_get(&ezra.http, "/metrics").expect("answers");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("E5001") && !body.contains("uw_"), "{body}");
    let mut s = TcpStream::connect(&ezra.http).expect("connect");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(raw.to_ascii_lowercase().contains("www-authenticate: bearer"), "{raw}");
    assert_eq!(http_get_bearer(&ezra.http, "/metrics", Some("metrics-not-the-token-0123")).map(|(c, _)| c), Some(401));
    assert_eq!(get_with_authorization(&ezra.http, "/metrics", &format!("Basic {}", ezra.metrics_token)), 401);
    let (code, page) = ezra.scrape("/metrics").expect("answers");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("uw_auth_refused_total"), "the refusals are counted: {page}");
    assert_eq!(get_with_authorization(&ezra.http, "/metrics", &format!("bearer {}", ezra.metrics_token)), 200);

    let rotated = "metrics-rotated-token-0123456789";
    std::fs::write(fleet.dir.path().join("metrics.token"), format!("{rotated}\n")).expect("rotate");
    assert_eq!(http_get_bearer(&ezra.http, "/metrics", Some(rotated)).map(|(c, _)| c), Some(200));
    assert_eq!(ezra.scrape("/metrics").map(|(c, _)| c), Some(401), "the old token no longer works");
    assert!(!ezra.log().contains(rotated) && !ezra.log().contains(&ezra.metrics_token), "tokens are never logged");
}

/// Proves the port is closed by default: without `http.metrics_token_file` `/metrics`
/// answers 401 to everyone; `metrics_open: true` (loopback only) opens it; and a token file
/// that cannot be read stops the daemon at start with exit 64 naming the field.
#[test]
fn without_a_token_metrics_is_refused_unless_explicitly_open() {
    let mut fleet = Fleet::configure(&["ezra"], &none);
    let config = fleet.nodes["ezra"].config.clone();
    let text = std::fs::read_to_string(&config).expect("config");
    let line = text.lines().find(|l| l.starts_with("http:")).expect("the fleet's http line").to_owned();

    std::fs::write(&config, text.replace(&line, "")).expect("no http section");
    fleet.node("ezra").start();
    let ezra = &fleet.nodes["ezra"];
    assert_eq!(http_get(&ezra.http, "/health").map(|(c, _)| c), Some(200));
    assert_eq!(http_get(&ezra.http, "/metrics").map(|(c, _)| c), Some(401), "closed by default");
    assert_eq!(ezra.scrape("/metrics").map(|(c, _)| c), Some(401), "no token is configured, so none passes");
    assert!(fleet.node("ezra").terminate().success());

    std::fs::write(&config, text.replace(&line, "http: {metrics_open: true}")).expect("open");
    fleet.node("ezra").start();
    assert_eq!(http_get(&fleet.nodes["ezra"].http, "/metrics").map(|(c, _)| c), Some(200), "explicitly open");
    assert!(fleet.node("ezra").terminate().success());

    let missing = fleet.dir.path().join("no-such.token");
    std::fs::write(&config, text.replace(&line, &format!("http: {{metrics_token_file: \"{}\"}}", missing.display())))
        .expect("missing file");
    let mut child = Command::new(bin("uni-wizardd"))
        .arg("--config")
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("uni-wizardd starts");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a daemon with an unreadable token file kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = child.stderr.take().expect("stderr").read_to_string(&mut err);
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(err.contains("E4001") && err.contains("http.metrics_token_file"), "{err}");
}

/// Opens `n` connections that each send half a request header and then nothing; returns how
/// long each took to be closed by the server (`None`: still open after `within`).
fn slow_header_connections(addr: &str, n: usize, within: Duration) -> Vec<Option<Duration>> {
    connections_sending(addr, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", n, within)
}

/// Opens `n` connections that each send `first` and nothing more, reading what comes back
/// without answering it; when each was closed by the server (`None`: still open at `within`).
fn connections_sending(addr: &str, first: &[u8], n: usize, within: Duration) -> Vec<Option<Duration>> {
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(first).expect("first bytes");
            s
        })
        .collect();
    conns
        .iter_mut()
        .map(|s| {
            let left = within.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
            s.set_read_timeout(Some(left)).expect("timeout");
            let mut buf = [0u8; 512];
            loop {
                match s.read(&mut buf) {
                    // Closed (hyper may first answer 408), or reset: the server let go.
                    Ok(0) => return Some(started.elapsed()),
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
                    Err(_) => return Some(started.elapsed()),
                }
            }
        })
        .collect()
}

/// Proves slow header senders are cut off: 20 connections that send half a header are all
/// closed within `http.header_timeout_ms` (300 ms here) plus a margin, while whole requests
/// are still served.
#[test]
fn slow_header_senders_are_closed_after_the_header_timeout() {
    let fleet = Fleet::start_with_http(&["ezra"], &none, "header_timeout_ms: 300, idle_timeout_ms: 600000");
    let addr = fleet.nodes["ezra"].http.clone();
    let closed = slow_header_connections(&addr, 20, Duration::from_secs(5));
    assert!(closed.iter().all(Option::is_some), "some slow connections stayed open: {closed:?}");
    let slowest = closed.iter().flatten().max().copied().unwrap_or_default();
    assert!(slowest < Duration::from_millis(300 + 2_000), "closed only after {slowest:?}");
    assert!(slowest >= Duration::from_millis(250), "closed before the timeout ran out: {slowest:?}");
    assert_eq!(http_get(&addr, "/health").map(|(c, _)| c), Some(200), "whole requests are served");
}

/// Proves a connection that moves no byte either way is closed after `http.idle_timeout_ms`
/// (400 ms here) even when the header timeout is far away (60 s), both for half a header and
/// for a connection that never sends anything.
#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let fleet = Fleet::start_with_http(&["ezra"], &none, "header_timeout_ms: 60000, idle_timeout_ms: 400");
    let addr = fleet.nodes["ezra"].http.clone();
    let closed = slow_header_connections(&addr, 5, Duration::from_secs(5));
    assert!(closed.iter().all(Option::is_some), "some idle connections stayed open: {closed:?}");
    let slowest = closed.iter().flatten().max().copied().unwrap_or_default();
    assert!(slowest < Duration::from_millis(400 + 2_000), "closed only after {slowest:?}");

    let started = Instant::now();
    let mut silent = TcpStream::connect(&addr).expect("connect");
    silent.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf);
    assert!(matches!(n, Ok(0)) || matches!(&n, Err(e) if e.kind() == ErrorKind::ConnectionReset), "{n:?}");
    assert!(started.elapsed() < Duration::from_millis(400 + 2_000), "closed only after {:?}", started.elapsed());
    assert_eq!(http_get(&addr, "/health").map(|(c, _)| c), Some(200));
}

/// The in-flight count of Timmy's worker (`Worker/Capacity`, as Timmy).
fn in_flight(grpc: &str, token: &str) -> Option<u32> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).ok()?.connect().await.ok()?;
        let mut r = tonic::Request::new(CapacityRequest {});
        r.metadata_mut().insert("x-uw-house", MetadataValue::from_static("timmy"));
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().ok()?);
        Some(WorkerClient::new(ch).capacity(r).await.ok()?.into_inner().in_flight)
    })
}

/// Proves `/health` answers 503 `draining` from SIGTERM until the HTTP listener closes: with
/// a call in flight (a 2 s `process_list` sample) the node keeps its HTTP port open while it
/// drains, says so, lets the call finish, then closes and exits 0.
#[test]
fn health_says_draining_until_the_listener_closes() {
    let mut fleet = Fleet::start(&["timmy"], &|_| "roles: [router, health, worker]\n".to_owned());
    let (grpc, http, token) =
        (fleet.nodes["timmy"].grpc.clone(), fleet.nodes["timmy"].http.clone(), fleet.nodes["timmy"].token.clone());
    let call = Command::new(bin("uni-wizard"))
        .env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
        .env("UNI_WIZARD_TOKEN", &token)
        .args(["test", "--json", "--router", &grpc, "--house", "timmy", "--tool", "process_list"])
        .args(["--args-json", r#"{"sample_ms": 2000, "top": 1}"#])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the CLI starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_flight(&grpc, &token).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the call never reached the worker:\n{}", fleet.nodes["timmy"].log());
        std::thread::sleep(Duration::from_millis(20));
    }

    let pid = fleet.nodes["timmy"].pid().expect("running");
    let term = Instant::now();
    assert!(Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("kill").success());
    let mut seen: Vec<(u16, String, Duration)> = Vec::new();
    let status = loop {
        assert!(term.elapsed() < Duration::from_secs(15), "no exit within 15 s of SIGTERM: {seen:?}");
        if let Some(status) = fleet.node("timmy").try_exit() {
            break status;
        }
        match http_get(&http, "/health") {
            Some((code, body)) => {
                let state = serde_json::from_str::<serde_json::Value>(&body).map(|v| v["status"].clone());
                seen.push((code, state.map(|s| s.to_string()).unwrap_or(body), term.elapsed()));
            }
            None => seen.push((0, "closed".into(), term.elapsed())),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}:\n{}", fleet.nodes["timmy"].log());
    // The call in flight keeps the drain going for most of its 2 s: `/health` must still say
    // so a second after the signal (before, the listener closed at the signal).
    let late = seen.iter().filter(|(c, s, at)| *c == 503 && s == "\"draining\"" && *at >= Duration::from_secs(1));
    assert!(late.count() > 0, "no 503 draining a second into the drain: {seen:?}");
    // 200 until the signal is handled, then 503 draining, then closed: never back.
    let first_503 = seen.iter().position(|(c, _, _)| *c == 503).unwrap_or(seen.len());
    let first_closed = seen.iter().position(|(c, _, _)| *c == 0).unwrap_or(seen.len());
    assert!(first_503 < first_closed, "closed before saying draining: {seen:?}");
    let draining = &seen[first_503..first_closed];
    assert!(draining.iter().all(|(c, s, _)| *c == 503 && s == "\"draining\""), "not draining throughout: {seen:?}");
    assert!(seen[first_closed..].iter().all(|(c, _, _)| *c == 0), "answered again after closing: {seen:?}");
    let out = call.wait_with_output().expect("the CLI finishes");
    let v = json_stdout(&out);
    assert!(out.status.success(), "the call in flight finished during the drain: {v}");
    assert!(fleet.nodes["timmy"].log().contains("drained"), "{}", fleet.nodes["timmy"].log());
}

/// Proves the gRPC port lets go of connections that say nothing: silent ones and ones with
/// half the HTTP/2 preface are closed at `http.header_timeout_ms` (300 ms here), ones that send
/// the preface and then never answer the server's PING by the idle limit (1.2 s here), while a
/// client that stays connected but quiet for longer is still served.
#[test]
fn grpc_connections_that_say_nothing_are_closed() {
    let fleet = Fleet::start_with_http(&["ezra"], &none, "header_timeout_ms: 300, idle_timeout_ms: 1200");
    let ezra = &fleet.nodes["ezra"];
    // A worker thread drives the client's connection (and answers the server's PINGs) while
    // this thread holds the raw connections.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("http://{}", ezra.grpc))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    });
    for (first, limit) in [
        (&b""[..], Duration::from_millis(300)),
        (b"PRI * HTTP/2.0\r\n", Duration::from_millis(300)),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Duration::from_millis(1200)),
    ] {
        let closed = connections_sending(&ezra.grpc, first, 10, Duration::from_secs(8));
        assert!(closed.iter().all(Option::is_some), "{first:?}: some stayed open: {closed:?}");
        let slowest = closed.iter().flatten().max().copied().unwrap_or_default();
        assert!(slowest < limit + Duration::from_secs(2), "{first:?}: closed only after {slowest:?}");
    }
    // The channel has been quiet for far longer than the idle limit: the server's PINGs kept it.
    let served = rt.block_on(async {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await
    });
    assert!(served.is_ok(), "{served:?}");
}
