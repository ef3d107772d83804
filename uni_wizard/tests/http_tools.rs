//! `http_get` and `http_post` through the real [`Harness`], against a real HTTP/1.1 server on
//! loopback (hand-written on a tokio listener bound to port 0), with the egress policy set in
//! [`Config`].
//!
//! Network rule: every connection these tests make goes to 127.0.0.1 or [::1]. Targets such as
//! 10.0.0.1 and 169.254.169.254 are only ever named in URLs that the egress check refuses
//! before any connection is attempted (or in dry runs, which send nothing).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uni_wizard::{Config, Error, ErrorCode, Harness, House, Mode, Request};

/// A running test server: its address and how many requests it has answered.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Server {
    /// Starts a server on `bind` (`127.0.0.1:0` or `[::1]:0`) for the rest of the test.
    async fn start(bind: &str) -> Server {
        let listener = TcpListener::bind(bind).await.expect("bind the test server");
        let addr = listener.local_addr().expect("local address");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _ = handle(stream, addr, &counter).await;
                });
            }
        });
        Server { addr, hits }
    }

    /// `http://<addr><path>`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Reads one request, answers it from [`route`], and closes the connection.
async fn handle(mut s: TcpStream, me: SocketAddr, hits: &AtomicUsize) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let (status, extra, payload): (&str, Vec<(&str, String)>, Vec<u8>) = match path.as_str() {
        "/hello" => (
            "200 OK",
            vec![
                ("Content-Type", "text/plain".into()),
                ("X-Test", "yes".into()),
                ("Set-Cookie", "session=abc123; HttpOnly".into()),
            ],
            b"hello, world".to_vec(),
        ),
        "/big" => ("200 OK", vec![("Content-Type", "text/plain".into())], vec![b'x'; 100_000]),
        "/binary" => ("200 OK", vec![("Content-Type", "application/octet-stream".into())], vec![0xff, 0xfe, 0, 1]),
        "/echo" => {
            let echoed = json!({
                "method": method,
                "content_type": header("content-type"),
                "authorization": header("authorization"),
                "x_trace": header("x-trace"),
                "body": String::from_utf8_lossy(&body),
            });
            ("200 OK", vec![("Content-Type", "application/json".into())], echoed.to_string().into_bytes())
        }
        "/to-hello" => ("302 Found", vec![("Location", "/hello".into())], vec![]),
        "/see-other" => ("303 See Other", vec![("Location", "/echo".into())], vec![]),
        "/to-localhost-echo" => {
            ("307 Temporary Redirect", vec![("Location", format!("http://localhost:{}/echo", me.port()))], vec![])
        }
        "/to-metadata" => ("302 Found", vec![("Location", "http://169.254.169.254/latest/meta-data/".into())], vec![]),
        "/loop" => ("302 Found", vec![("Location", "/loop".into())], vec![]),
        p if p.starts_with("/to/") => ("302 Found", vec![("Location", p["/to/".len()..].to_owned())], vec![]),
        "/stall" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            ("200 OK", vec![], vec![])
        }
        _ => ("404 Not Found", vec![], b"no such path".to_vec()),
    };
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", payload.len());
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    s.write_all(out.as_bytes()).await?;
    s.write_all(&payload).await?;
    s.shutdown().await
}

/// A Timmy harness whose config carries this `egress` section.
fn harness(egress: Value) -> Harness {
    let config: Config = serde_json::from_value(json!({ "egress": egress })).expect("the test config parses");
    Harness::builder().house(House::Timmy).mode(Mode::Intelligent).config(config).build().expect("harness builds")
}

/// Timmy may reach the local servers (plain HTTP on `ports`, private allowed); 10.0.0.1 and
/// 169.254.169.254 are listed on port 80 but *without* `allow_private`, so they stay refused.
fn allowlisted(ports: &[u16]) -> Harness {
    harness(json!({ "timmy": { "rules": [
        { "host": "127.0.0.1", "schemes": ["http"], "ports": ports, "allow_private": true },
        { "host": "::1", "schemes": ["http"], "ports": ports, "allow_private": true },
        { "host": "localhost", "schemes": ["http"], "ports": ports, "allow_private": true },
        { "host": "10.0.0.1", "schemes": ["http"], "ports": [80] },
        { "host": "169.254.169.254", "schemes": ["http"], "ports": [80] },
    ] } }))
}

/// Every host of the SSRF list is on Timmy's list, but none may be private.
fn listed_not_private(port: u16) -> Harness {
    harness(json!({ "timmy": { "rules": [
        { "host": "127.0.0.1", "schemes": ["http"], "ports": [port] },
        { "host": "[::1]", "schemes": ["http"], "ports": [port] },
        { "host": "localhost", "schemes": ["http"], "ports": [port] },
        { "host": "10.0.0.1", "schemes": ["http"], "ports": [80] },
        { "host": "169.254.169.254", "schemes": ["http"], "ports": [80] },
    ] } }))
}

/// Checks an output against the tool's contract.
fn assert_contract(h: &Harness, tool: &str, output: &Value) {
    let contract = h.registry().get(tool).expect("tool registered").contract();
    if let Err(v) = contract.validate_output(output) {
        panic!("{tool} output breaks its contract at {}: {}\n{output:#}", v.pointer, v.message);
    }
}

async fn get(h: &Harness, args: Value) -> Result<Value, Error> {
    h.execute("http_get", args).await.map(|o| o.output)
}

/// Asserts an E2009 whose reason mentions `why`, and returns its details.
fn assert_denied(r: Result<Value, Error>, why: &str) -> Value {
    let e = r.expect_err("egress must be refused");
    assert_eq!(e.code, ErrorCode::EgressDenied, "{e}");
    let reason = e.details["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(why), "reason {reason:?} should mention {why:?}");
    e.details
}

/// The direct SSRF targets (the sixth, a redirect, has its own test): loopback v4 and v6, a
/// name resolving to loopback, private, and cloud metadata; with the range each falls in.
fn ssrf_urls(port: u16) -> [(String, &'static str); 5] {
    [
        (format!("http://127.0.0.1:{port}/hello"), "loopback"),
        (format!("http://[::1]:{port}/hello"), "loopback"),
        (format!("http://localhost:{port}/hello"), "loopback"),
        ("http://10.0.0.1/".to_owned(), "private"),
        ("http://169.254.169.254/latest/meta-data/".to_owned(), "link-local"),
    ]
}

/// Proves a GET to an allowlisted server returns status, headers (cookies redacted) and body,
/// matching the contract, and that a cap equal to the body size does not mark it truncated.
#[tokio::test]
async fn get_returns_status_headers_and_body() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    let out = get(&h, json!({ "url": s.url("/hello"), "max_bytes": 12 })).await.expect("GET succeeds");
    assert_contract(&h, "http_get", &out);
    assert_eq!(out["status"], 200);
    assert_eq!(out["url"], s.url("/hello"));
    assert_eq!(out["body"], "hello, world");
    assert_eq!(out["encoding"], "utf8");
    assert_eq!(out["bytes"], 12);
    assert_eq!(out["truncated"], false);
    assert_eq!(out["redirects"], json!([]));
    assert_eq!(out["headers"]["x-test"], "yes");
    assert_eq!(out["headers"]["content-type"], "text/plain");
    assert_eq!(out["headers"]["set-cookie"], "[redacted]");
    assert_eq!(s.hits(), 1);
}

/// Proves request headers reach the server and a body that is not UTF-8 comes back as base64.
#[tokio::test]
async fn get_sends_headers_and_returns_binary_as_base64() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    let out = get(&h, json!({ "url": s.url("/echo"), "headers": { "X-Trace": "t-1" } })).await.expect("GET succeeds");
    assert_contract(&h, "http_get", &out);
    let echoed: Value = serde_json::from_str(out["body"].as_str().unwrap_or_default()).expect("echo is JSON");
    assert_eq!(echoed["method"], "GET");
    assert_eq!(echoed["x_trace"], "t-1");
    let bin = get(&h, json!({ "url": s.url("/binary") })).await.expect("GET succeeds");
    assert_contract(&h, "http_get", &bin);
    assert_eq!(bin["encoding"], "base64");
    assert_eq!(bin["body"], "//4AAQ==");
    assert_eq!(bin["bytes"], 4);
}

/// Proves the body is cut at `max_bytes` and flagged truncated.
#[tokio::test]
async fn get_truncates_at_max_bytes() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    let out = get(&h, json!({ "url": s.url("/big"), "max_bytes": 1000 })).await.expect("GET succeeds");
    assert_contract(&h, "http_get", &out);
    assert_eq!(out["bytes"], 1000);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["body"].as_str().map(str::len), Some(1000));
    assert_eq!(out["headers"]["content-length"], "100000");
}

/// Proves `http_get` to 127.0.0.1, [::1] and `localhost` succeeds against real local servers
/// when the allowlist names them with `allow_private`.
#[tokio::test]
async fn ssrf_targets_succeed_when_allowlisted() {
    let v4 = Server::start("127.0.0.1:0").await;
    let v6 = Server::start("[::1]:0").await;
    let h = allowlisted(&[v4.addr.port(), v6.addr.port()]);
    for url in [
        v4.url("/hello"),
        format!("http://[::1]:{}/hello", v6.addr.port()),
        format!("http://localhost:{}/hello", v4.addr.port()),
    ] {
        let out = get(&h, json!({ "url": url })).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_contract(&h, "http_get", &out);
        assert_eq!(out["body"], "hello, world", "{url}");
    }
    assert_eq!((v4.hits(), v6.hits()), (2, 1));
}

/// Proves 10.0.0.1 and 169.254.169.254 pass the egress check when allowlisted with
/// `allow_private`, shown by a dry run (which sends nothing, so no traffic leaves loopback).
#[tokio::test]
async fn private_and_metadata_pass_the_check_when_allowlisted() {
    let h = harness(json!({ "timmy": { "rules": [
        { "host": "10.0.0.1", "schemes": ["http"], "allow_private": true },
        { "host": "169.254.169.254", "schemes": ["http"], "allow_private": true },
    ] } }));
    for (url, addr) in [("http://10.0.0.1/x", "10.0.0.1:80"), ("http://169.254.169.254/x", "169.254.169.254:80")] {
        let req = Request { dry_run: true, ..Request::new("http_post", json!({ "url": url, "json": {} })) };
        let out = h.execute_request(req).await.unwrap_or_else(|e| panic!("{url}: {e}")).output;
        assert_contract(&h, "http_post", &out);
        assert_eq!(out["request"]["addresses"], json!([addr]));
    }
}

/// Proves each SSRF target is refused with E2009 by a house with no allowlist, before any
/// connection (the local server sees nothing) and quickly.
#[tokio::test]
async fn ssrf_targets_are_refused_without_an_allowlist() {
    let s = Server::start("127.0.0.1:0").await;
    let h = harness(json!({}));
    for (url, _) in ssrf_urls(s.addr.port()) {
        let started = Instant::now();
        let d = assert_denied(get(&h, json!({ "url": url })).await, "not on the allowlist");
        assert!(started.elapsed() < Duration::from_secs(2), "{url} took {:?}", started.elapsed());
        assert_eq!(d["house"], "timmy");
    }
    assert_eq!(s.hits(), 0);
}

/// Proves each SSRF target is refused with E2009 naming its address range when the host is
/// listed without `allow_private` — including `localhost`, refused after it resolves to
/// loopback — before any connection is attempted.
#[tokio::test]
async fn ssrf_targets_are_refused_by_address_range() {
    let s = Server::start("127.0.0.1:0").await;
    let h = listed_not_private(s.addr.port());
    for (url, range) in ssrf_urls(s.addr.port()) {
        let started = Instant::now();
        let d = assert_denied(get(&h, json!({ "url": url })).await, range);
        assert!(started.elapsed() < Duration::from_secs(2), "{url} took {:?}", started.elapsed());
        assert!(d["address"].is_string(), "{url}: the refused address is named");
    }
    let d = assert_denied(get(&h, json!({ "url": format!("http://localhost:{}/", s.addr.port()) })).await, "resolves");
    assert_eq!(d["host"], "localhost");
    assert_eq!(d["address"], "127.0.0.1");
    assert_eq!(s.hits(), 0);
}

/// Proves a redirect from an allowlisted server to 169.254.169.254 is refused with E2009
/// naming the hop, without connecting there.
#[tokio::test]
async fn redirect_to_metadata_is_refused_at_the_hop() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    let started = Instant::now();
    let d = assert_denied(get(&h, json!({ "url": s.url("/to-metadata") })).await, "link-local");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(d["hop"], 1);
    assert_eq!(d["host"], "169.254.169.254");
    assert_eq!(d["redirects"], json!(["http://169.254.169.254/latest/meta-data/"]));
    assert_eq!(s.hits(), 1, "only the first hop reached the server");
    let refused = harness(json!({ "timmy": { "rules": [
        { "host": "127.0.0.1", "schemes": ["http"], "ports": [s.addr.port()], "allow_private": true },
    ] } }));
    let d = assert_denied(get(&refused, json!({ "url": s.url("/to-metadata") })).await, "not on the allowlist");
    assert_eq!(d["hop"], 1);
}

/// Proves a redirect to another allowed path is followed and listed.
#[tokio::test]
async fn redirect_to_an_allowed_path_is_followed() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    let out = get(&h, json!({ "url": s.url("/to-hello") })).await.expect("GET succeeds");
    assert_contract(&h, "http_get", &out);
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], "hello, world");
    assert_eq!(out["url"], s.url("/hello"));
    assert_eq!(out["redirects"], json!([s.url("/hello")]));
}

/// Proves a redirect loop stops at `max_redirects` with E3003.
#[tokio::test]
async fn redirect_loop_stops_at_max_redirects() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    let e = get(&h, json!({ "url": s.url("/loop"), "max_redirects": 2 })).await.expect_err("too many redirects");
    assert_eq!(e.code, ErrorCode::ToolFailed, "{e}");
    assert_eq!(s.hits(), 3);
}

/// Proves a scheme the rule does not allow is refused with E2009: ftp at all, https where
/// only http is listed.
#[tokio::test]
async fn scheme_not_allowed_is_refused() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    let port = s.addr.port();
    assert_denied(get(&h, json!({ "url": format!("ftp://127.0.0.1:{port}/") })).await, "scheme `ftp`");
    assert_denied(get(&h, json!({ "url": format!("https://127.0.0.1:{port}/") })).await, "scheme https");
    assert_eq!(s.hits(), 0);
}

/// Proves a port the rule does not list is refused with E2009.
#[tokio::test]
async fn port_not_allowed_is_refused() {
    let s = Server::start("127.0.0.1:0").await;
    let other = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    let d = assert_denied(get(&h, json!({ "url": other.url("/hello") })).await, "port");
    assert_eq!(d["address"], Value::Null);
    assert_eq!(other.hits(), 0);
}

/// Proves a rule's `allow_private` covers only what that rule allows (issue 15, defect 1):
/// `{127.0.0.1 and localhost, port A, allow_private}` beside `{*, port B}` reaches loopback on A,
/// but not on B — neither directly (an IP literal, a name resolving to loopback) nor through a
/// redirect from A — and B's server sees no request.
#[tokio::test]
async fn allow_private_does_not_lend_itself_to_another_rules_port() {
    let a = Server::start("127.0.0.1:0").await;
    let b = Server::start("127.0.0.1:0").await;
    let (pa, pb) = (a.addr.port(), b.addr.port());
    let h = harness(json!({ "timmy": { "rules": [
        { "host": "127.0.0.1", "schemes": ["http"], "ports": [pa], "allow_private": true },
        { "host": "localhost", "schemes": ["http"], "ports": [pa], "allow_private": true },
        { "host": "*", "schemes": ["http"], "ports": [pb] },
    ] } }));
    let ok = get(&h, json!({ "url": a.url("/hello") })).await.expect("port A may be loopback");
    assert_eq!(ok["status"], 200);
    let ok = get(&h, json!({ "url": format!("http://localhost:{pa}/hello") })).await.expect("localhost on A");
    assert_eq!(ok["status"], 200);
    for url in [b.url("/hello"), format!("http://localhost:{pb}/hello")] {
        assert_denied(get(&h, json!({ "url": url })).await, "loopback");
    }
    for to in [format!("http://127.0.0.1:{pb}/hello"), format!("http://localhost:{pb}/hello")] {
        let d = assert_denied(get(&h, json!({ "url": a.url(&format!("/to/{to}")) })).await, "loopback");
        assert_eq!(d["hop"], 1, "{to}");
    }
    assert_eq!(b.hits(), 0, "nothing reached loopback on port B");
    // And after A's private connections were pooled, B still gets none of them.
    assert_denied(get(&h, json!({ "url": format!("http://localhost:{pb}/hello") })).await, "loopback");
    assert_eq!(b.hits(), 0);
}

/// Proves a connection refused by a closed local port is E3004 (transient), and the error
/// does not repeat the URL's query (where tokens often travel).
#[tokio::test]
async fn connection_refused_is_transient() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
    let h = allowlisted(&[closed.port()]);
    let e = get(&h, json!({ "url": format!("http://{closed}/x?token=s3cret") })).await.expect_err("nothing listens");
    assert_eq!(e.code, ErrorCode::ToolFailedTransient, "{e}");
    assert_eq!(e.details["kind"], "connection");
    assert_eq!(e.details["url"], format!("http://{closed}/x"));
    assert!(!e.to_string().contains("s3cret") && !e.details.to_string().contains("s3cret"), "{e} {}", e.details);
}

/// Proves a server that does not answer within `timeout_ms` gives E3001.
#[tokio::test]
async fn slow_server_times_out() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    let e = get(&h, json!({ "url": s.url("/stall"), "timeout_ms": 200 })).await.expect_err("stalls");
    assert_eq!(e.code, ErrorCode::Timeout, "{e}");
}

/// Proves `Host` and hop-by-hop request headers are refused with E1003 before anything is sent.
#[tokio::test]
async fn forbidden_request_headers_are_refused() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    for name in ["Host", "Transfer-Encoding", "Connection"] {
        let e = get(&h, json!({ "url": s.url("/hello"), "headers": { name: "x" } })).await.expect_err("refused");
        assert_eq!(e.code, ErrorCode::InvalidArguments, "{name}: {e}");
    }
    assert_eq!(s.hits(), 0);
}

/// Proves a POST sends a JSON body as application/json and returns the server's answer.
#[tokio::test]
async fn post_echoes_a_json_body() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    let args = json!({ "url": s.url("/echo"), "json": { "a": 1, "b": [true, null] } });
    let out = h.execute("http_post", args).await.expect("POST succeeds").output;
    assert_contract(&h, "http_post", &out);
    assert_eq!(out["status"], 200);
    assert_eq!(out["dry_run"], false);
    let echoed: Value = serde_json::from_str(out["body"].as_str().unwrap_or_default()).expect("echo is JSON");
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["content_type"], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(echoed["body"].as_str().unwrap_or_default()).ok(),
        Some(json!({ "a": 1, "b": [true, null] }))
    );
    assert_eq!(s.hits(), 1);
}

/// Proves a text POST carries its content type, a 303 continues as GET, and a 307 to another
/// origin keeps method and body but drops the Authorization header.
#[tokio::test]
async fn post_text_body_and_redirect_semantics() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    let auth = json!({ "Authorization": "Bearer t0ken" });
    let args = json!({ "url": s.url("/echo"), "body": "k=v", "content_type": "application/x-www-form-urlencoded", "headers": auth });
    let out = h.execute("http_post", args).await.expect("POST succeeds").output;
    assert_contract(&h, "http_post", &out);
    let echoed: Value = serde_json::from_str(out["body"].as_str().unwrap_or_default()).expect("echo is JSON");
    assert_eq!(
        (&echoed["content_type"], &echoed["body"]),
        (&json!("application/x-www-form-urlencoded"), &json!("k=v"))
    );
    assert_eq!(echoed["authorization"], "Bearer t0ken");

    let out = h.execute("http_post", json!({ "url": s.url("/see-other"), "body": "x" })).await.expect("POST").output;
    let echoed: Value = serde_json::from_str(out["body"].as_str().unwrap_or_default()).expect("echo is JSON");
    assert_eq!((&echoed["method"], &echoed["body"]), (&json!("GET"), &json!("")));

    let args = json!({ "url": s.url("/to-localhost-echo"), "body": "keep", "headers": auth });
    let out = h.execute("http_post", args).await.expect("POST").output;
    assert_contract(&h, "http_post", &out);
    let echoed: Value = serde_json::from_str(out["body"].as_str().unwrap_or_default()).expect("echo is JSON");
    assert_eq!((&echoed["method"], &echoed["body"]), (&json!("POST"), &json!("keep")));
    assert_eq!(echoed["authorization"], Value::Null, "credentials do not follow a redirect to another origin");
    assert_eq!(out["redirects"], json!([format!("http://localhost:{}/echo", s.addr.port())]));
}

/// Proves a dry-run POST checks egress, reports the request (credentials redacted) and sends
/// nothing; and a dry run to a refused target is still E2009.
#[tokio::test]
async fn post_dry_run_sends_nothing() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    let args = json!({ "url": s.url("/echo"), "json": { "a": 1 }, "headers": { "Authorization": "Bearer t0ken" } });
    let out = h.execute_request(Request { dry_run: true, ..Request::new("http_post", args) }).await.expect("dry run");
    assert!(out.dry_run);
    let out = out.output;
    assert_contract(&h, "http_post", &out);
    assert_eq!(out["dry_run"], true);
    assert_eq!(out["status"], Value::Null);
    assert_eq!(out["request"]["method"], "POST");
    assert_eq!(out["request"]["content_type"], "application/json");
    assert_eq!(out["request"]["body_bytes"], 7);
    assert_eq!(out["request"]["headers"]["authorization"], "[redacted]");
    assert_eq!(out["request"]["addresses"], json!([s.addr.to_string()]));
    assert_eq!(s.hits(), 0, "a dry run sends nothing");
    let refused =
        Request { dry_run: true, ..Request::new("http_post", json!({ "url": "http://10.0.0.1/", "body": "x" })) };
    let r = h.execute_request(refused).await.map(|o| o.output);
    assert_denied(r, "private");
}

/// Proves `json` and `body` together, or a Content-Type in `headers`, are refused with E1003.
#[tokio::test]
async fn post_with_ambiguous_body_is_refused() {
    let s = Server::start("127.0.0.1:0").await;
    let h = allowlisted(&[s.addr.port()]);
    for args in [
        json!({ "url": s.url("/echo"), "json": 1, "body": "1" }),
        json!({ "url": s.url("/echo"), "body": "1", "headers": { "Content-Type": "text/plain" } }),
        json!({ "url": s.url("/echo"), "json": 1, "content_type": "text/plain" }),
    ] {
        let e = h.execute("http_post", args).await.expect_err("refused");
        assert_eq!(e.code, ErrorCode::InvalidArguments, "{e}");
    }
    assert_eq!(s.hits(), 0);
}

/// Proves the contracts state the hints the design gives: GET read-only and idempotent, POST
/// neither, both open-world, POST dry-runnable.
#[test]
fn contracts_state_their_hints() {
    let h = harness(json!({}));
    let get = h.registry().get("http_get").expect("registered").contract();
    let post = h.registry().get("http_post").expect("registered").contract();
    assert!(get.spec().annotations.read_only && get.spec().annotations.idempotent && get.spec().annotations.open_world);
    assert!(
        !post.spec().annotations.read_only && !post.spec().annotations.idempotent && post.spec().annotations.open_world
    );
    assert!(post.spec().dry_run);
}
