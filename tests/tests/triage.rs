//! The triage daemon as an operator runs it: real `uni-wizardd` processes (Allegro with router,
//! health, worker and triage; Ezra and Bezalel workers) against the spec-checked Gitea test
//! server, webhooks built from the real samples in `shared/data/gitea/webhook-samples/`.
//!
//! Every test ends with [`assert_conformant`]: each request the daemons sent to Gitea (the
//! triage daemon's and the routed tasks') matches the OpenAPI subset, and so does each answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use uni_wizard_proto::v1::{
    House, StatusRequest, StatusResponse, TaskState, router_client::RouterClient, status_response,
};
use uni_wizard_tests::fleet::{Fleet, Node};
use uni_wizard_tests::gitea_server::{BOT, GiteaServer, OWNER, REPO};
use uni_wizard_tests::openapi::Spec;
use uni_wizard_tests::webhooks::{
    Delivery, fresh_id, hmac_hex, sample_secret, start_triage_fleet, start_triage_fleet_with,
};
use uni_wizard_tests::{cli, json_stdout, run};

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| Spec::load().expect("the spec subset loads"))
}

/// Every exchange the Gitea test server saw matches the spec, request and response.
fn assert_conformant(server: &GiteaServer) {
    let exchanges = server.exchanges();
    assert!(!exchanges.is_empty(), "the server saw no request");
    let problems: Vec<String> = exchanges
        .iter()
        .filter_map(|ex| {
            spec().check_exchange(ex).err().map(|errs| {
                format!("{} {} -> {}: {}", ex.request.method, ex.request.path, ex.response.status, errs.join("; "))
            })
        })
        .collect();
    assert!(problems.is_empty(), "{} exchanges break the spec:\n{}", problems.len(), problems.join("\n"));
}

/// POSTs a delivery to the node's webhook; `(status, JSON body)`.
async fn send(http: &str, d: &Delivery) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(format!("http://{http}/webhooks/gitea")).body(d.body.clone());
    for (k, v) in &d.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("webhook answered");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Allegro's HTTP address (it derefs to it) and the scrape token `/triage/status` wants.
#[derive(Clone)]
struct Http {
    addr: String,
    token: String,
}

impl Http {
    fn of(node: &Node) -> Http {
        Http { addr: node.http.clone(), token: node.metrics_token.clone() }
    }
}

impl std::fmt::Display for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addr)
    }
}

impl std::ops::Deref for Http {
    type Target = str;

    fn deref(&self) -> &str {
        &self.addr
    }
}

async fn status(http: &Http) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("http://{}/triage/status", http.addr))
        .bearer_auth(&http.token)
        .send()
        .await
        .expect("status answered");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.expect("status JSON")
}

/// Polls `f` every 20 ms until it gives `Some`, at most `within`.
async fn until<T>(what: &str, within: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn row(status: &Value, number: u64) -> Option<Value> {
    status["latest"].as_array()?.iter().find(|r| r["number"] == json!(number)).cloned()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// Requests that change something on Gitea.
fn writes(server: &GiteaServer) -> Vec<String> {
    server
        .exchanges()
        .iter()
        .filter(|e| e.request.method != "GET")
        .map(|e| format!("{} {}", e.request.method, e.request.path))
        .collect()
}

/// The router's `Status` of a task, asked as Allegro (a submitter) on Allegro's router.
async fn router_status(allegro: &Node, task_id: &str) -> StatusResponse {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", allegro.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the router");
    let mut req = tonic::Request::new(StatusRequest { task_id: task_id.to_owned() });
    req.metadata_mut().insert("authorization", format!("Bearer {}", allegro.token).parse().expect("ascii token"));
    req.metadata_mut().insert("x-uw-house", "allegro".parse().expect("ascii house"));
    RouterClient::new(channel).status(req).await.expect("Status answers").into_inner()
}

fn start_fleet(server: &GiteaServer, poll_interval_ms: u64) -> Fleet {
    tokio::task::block_in_place(|| start_triage_fleet(server, poll_interval_ms))
}

/// Starts the fleet and waits for the start's poll to have run (its cursor row exists);
/// returns the fleet and Allegro's HTTP address.
async fn start_polled(server: &GiteaServer, poll_interval_ms: u64) -> (Fleet, Http) {
    let mut fleet = start_fleet(server, poll_interval_ms);
    let http = Http::of(fleet.node("allegro"));
    until("first poll", Duration::from_secs(10), async || status(&http).await["cursors"][0]["polled_ms"].as_i64())
        .await;
    (fleet, http)
}

fn labels_of(server: &GiteaServer, number: u64) -> Vec<String> {
    let issue = server.issue(OWNER, REPO, number).expect("issue exists");
    let mut names: Vec<String> = issue["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn assignees_of(server: &GiteaServer, number: u64) -> Vec<String> {
    let issue = server.issue(OWNER, REPO, number).expect("issue exists");
    issue["assignees"].as_array().into_iter().flatten().filter_map(|u| u["login"].as_str().map(str::to_owned)).collect()
}

/// Proves a webhook issue is labelled, assigned, commented and routed to Bezalel; a lost one is caught by the cold-start poll; a restart re-triages nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_issue_is_triaged_and_routed_lost_one_polled_restart_retriages_nothing() {
    let server = GiteaServer::start().await;
    // Polls only at start, so what happens between starts is the webhook's doing.
    let (mut fleet, http) = start_polled(&server, 3_600_000).await;
    let secret = sample_secret();

    let n1 = server.add_issue(OWNER, REPO, "App crashes on start", "panic at main.rs:1", &[]);
    let (code, body) =
        send(&http, &Delivery::from_sample("issues-opened", n1, "App crashes on start", "alice", &secret)).await;
    assert_eq!(code, 202, "{body}");
    let routed = until("issue 1 triaged and its task finished", Duration::from_secs(15), async || {
        let s = status(&http).await;
        row(&s, n1).filter(|r| r["task_state"] == "succeeded")
    })
    .await;
    assert_eq!(labels_of(&server, n1), vec!["category/bug", "house/bezalel", "kind/bug"]);
    assert_eq!(assignees_of(&server, n1), vec!["bob"]);
    let comments = server.comments(OWNER, REPO, n1);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].starts_with("Triage: bug, routed to bezalel."), "{comments:?}");
    assert_eq!(routed["source"], "webhook");
    assert_eq!(routed["task_house"], "bezalel", "{routed}");
    assert!(routed["task_id"].as_str().is_some_and(|id| !id.is_empty()));
    // The task ran on a worker: it listed Bezalel's queue from Gitea.
    let listed = server.exchanges().iter().any(|e| {
        e.request.method == "GET"
            && e.request.path.ends_with("/issues")
            && e.request.query.iter().any(|(k, v)| k == "labels" && v == "house/bezalel")
    });
    assert!(listed, "no task call reached Gitea");
    // And the router knows the task: Bezalel ran it, its output lists the new issue.
    let st = router_status(fleet.node("allegro"), routed["task_id"].as_str().unwrap_or_default()).await;
    assert_eq!((st.state, st.assigned_house), (TaskState::Succeeded as i32, House::Bezalel as i32), "{st:?}");
    let Some(status_response::Result::Outcome(outcome)) = st.result else { panic!("no outcome: {st:?}") };
    assert_eq!(outcome.tool, "gitea_list_issues");
    let output: Value = serde_json::from_str(&outcome.output_json).expect("output JSON");
    assert!(output["issues"].as_array().is_some_and(|a| a.iter().any(|i| i["number"] == json!(n1))), "{output}");
    let triaged_labels = labels_of(&server, n1);

    // A lost webhook: the issue exists, no delivery ever comes. The restart's poll finds it.
    let n2 = server.add_issue(OWNER, REPO, "Write docs for the router", "The documentation is thin.", &[]);
    let writes_before = writes(&server).len();
    tokio::task::block_in_place(|| {
        let node = fleet.node("allegro");
        node.kill();
        node.start();
    });
    let polled = until("issue 2 caught by polling", Duration::from_secs(15), async || {
        let s = status(&http).await;
        row(&s, n2).filter(|r| r["task_state"] == "succeeded")
    })
    .await;
    assert_eq!(polled["source"], "poll");
    assert_eq!(polled["task_house"], "ezra");
    assert_eq!(labels_of(&server, n2), vec!["category/docs", "house/ezra", "kind/docs"]);
    assert_eq!(server.comments(OWNER, REPO, n2).len(), 1);
    // Issue 1 was seen by that poll and left alone.
    assert_eq!(labels_of(&server, n1), triaged_labels);
    assert_eq!(server.comments(OWNER, REPO, n1).len(), 1);
    let s = status(&http).await;
    assert_eq!(row(&s, n1).expect("row 1")["times"], 1);
    let new_writes: Vec<String> = writes(&server).split_off(writes_before);
    assert!(
        new_writes.iter().all(|w| w.contains(&format!("/issues/{n2}/")) || w.ends_with("/labels")),
        "{new_writes:?}"
    );

    // Another restart: its poll sees both issues and changes nothing.
    let writes_before = writes(&server);
    let restarted = now_ms();
    tokio::task::block_in_place(|| {
        let node = fleet.node("allegro");
        node.kill();
        node.start();
    });
    let s = until("the restart's poll", Duration::from_secs(15), async || {
        let s = status(&http).await;
        let polled = s["cursors"][0]["polled_ms"].as_i64().is_some_and(|t| t >= restarted);
        (polled && s["queued"] == 0 && s["tasks_pending"] == 0).then_some(s)
    })
    .await;
    assert_eq!(writes(&server), writes_before, "a restart wrote to Gitea");
    assert_eq!((s["issues_triaged"].clone(), s["applications"].clone()), (json!(2), json!(2)), "{s}");
    assert_eq!(s["process"]["triaged"], 0);

    // The operator's view, from triage.db.
    let mut c = cli(&fleet.node("allegro").home);
    c.args(["triage", "--status", "--json", "--home"]).arg(&fleet.node("allegro").home);
    let o = run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_stdout(&o);
    assert_eq!(v["issues_triaged"], 2);
    assert_eq!(v["cursors"][0]["repo"], format!("{OWNER}/{REPO}"));
    let mut c = cli(&fleet.node("allegro").home);
    c.args(["triage", "--status", "--config"]).arg(&fleet.node("allegro").config);
    let o = run(c);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.starts_with("triage  2 issues triaged"), "{text}");
    assert!(text.contains(&format!("{OWNER}/{REPO}#{n1}  house bezalel  via webhook")), "{text}");
    let mut c = cli(&fleet.node("allegro").home);
    c.args(["triage", "--status", "--json", "--home"]).arg(fleet.dir.path());
    let o = run(c);
    assert_eq!(o.status.code(), Some(64), "no triage.db there");
    assert_eq!(json_stdout(&o)["error"]["code"], "E4002");
    assert_conformant(&server);
}

/// Allegro's audit records of one session, as `uni-wizard audit show --json` lists them.
fn audit_records(node: &Node, session: &str) -> Vec<Value> {
    let mut c = cli(&node.home);
    c.args(["audit", "show", "--json", "--session", session, "--db"]).arg(node.home.join("audit.db"));
    let o = run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    json_stdout(&o)["records"].as_array().cloned().unwrap_or_default()
}

/// `uni-wizard audit verify --json` of the node's audit chain.
fn audit_verify(node: &Node) -> (Option<i32>, Value) {
    let mut c = cli(&node.home);
    c.args(["audit", "verify", "--json", "--db"]).arg(node.home.join("audit.db"));
    let o = run(c);
    (o.status.code(), json_stdout(&o))
}

/// Proves the Gitea writes triage makes for an issue are one `gitea_update_issue` record in Allegro's audit chain (target and session = the issue), linked from `triage --status`, with `audit verify` passing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_writes_are_allegro_audit_records_on_the_issue() {
    let server = GiteaServer::start().await;
    let (mut fleet, http) = start_polled(&server, 3_600_000).await;
    let n = server.add_issue(OWNER, REPO, "App crashes on start", "panic at main.rs:1", &[]);
    let d = Delivery::from_sample("issues-opened", n, "App crashes on start", "alice", &sample_secret());
    assert_eq!(send(&http, &d).await.0, 202);
    let r = until("triaged and routed", Duration::from_secs(15), async || {
        row(&status(&http).await, n).filter(|r| r["task_state"] == "succeeded")
    })
    .await;
    // What Gitea saw: labels created, added, the assignment and the comment (the routed task only reads).
    let w = writes(&server);
    let issue = format!("/api/v1/repos/{OWNER}/{REPO}/issues/{n}");
    for expected in [
        format!("POST /api/v1/repos/{OWNER}/{REPO}/labels"),
        format!("POST {issue}/labels"),
        format!("PATCH {issue}"),
        format!("POST {issue}/comments"),
    ] {
        assert!(w.contains(&expected), "no {expected} in {w:?}");
    }
    let linked: Vec<String> =
        r["provenance"].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(str::to_owned)).collect();
    assert_eq!(linked.len(), 1, "one call applied the plan: {r}");

    let allegro = fleet.node("allegro");
    let session = format!("triage:{OWNER}/{REPO}#{n}");
    let records = audit_records(allegro, &session);
    assert_eq!(records.len(), 1, "{records:?}");
    let rec = &records[0];
    assert_eq!(rec["id"], json!(linked[0]), "triage.db links the audit record");
    assert_eq!(rec["tool"], "gitea_update_issue");
    assert_eq!(rec["target"], format!("{OWNER}/{REPO}#{n}"));
    assert_eq!(rec["session"], json!(session));
    assert_eq!(rec["house"], "allegro");
    assert_eq!((rec["ok"].clone(), rec["read_only"].clone()), (json!(true), json!(false)), "{rec}");
    let (code, v) = audit_verify(allegro);
    assert_eq!(code, Some(0), "{v}");
    assert!(v["ok"] == json!(true) && v["verification"]["records"].as_u64().is_some_and(|c| c >= 1), "{v}");

    let mut c = cli(&allegro.home);
    c.args(["triage", "--status", "--home"]).arg(&allegro.home);
    let text = String::from_utf8_lossy(&run(c).stdout).into_owned();
    assert!(text.contains(&format!("provenance {}", linked[0])), "{text}");
    assert_conformant(&server);
}

/// Proves that with a node policy denying Allegro `gitea_update_issue`, triage applies nothing (Gitea sees no write), puts an unchanged refused plan to the harness once, and `triage --status` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_denying_the_update_tool_applies_nothing_and_status_says_why() {
    let server = GiteaServer::start().await;
    let deny = "    policy: {allowed_categories: [system, git, network, file], denied_tools: [gitea_update_issue], \
                production_needs_approval: true}\n";
    let mut fleet = tokio::task::block_in_place(|| start_triage_fleet_with(&server, 3_600_000, deny));
    let http = Http::of(fleet.node("allegro"));
    let n = server.add_issue(OWNER, REPO, "App crashes on start", "panic at main.rs:1", &[]);
    let d = Delivery::from_sample("issues-opened", n, "App crashes on start", "alice", &sample_secret());
    assert_eq!(send(&http, &d).await.0, 202);
    let s = until("the plan refused", Duration::from_secs(15), async || {
        let s = status(&http).await;
        (s["refused"] == 1 && s["queued"] == 0).then_some(s)
    })
    .await;
    assert_eq!(writes(&server), Vec::<String>::new(), "triage wrote to Gitea");
    assert!(server.comments(OWNER, REPO, n).is_empty() && labels_of(&server, n).is_empty());
    assert_eq!((s["issues_triaged"].clone(), s["process"]["plans_refused"].clone()), (json!(0), json!(1)), "{s}");
    let refusal = &s["refusals"][0];
    assert_eq!((refusal["number"].clone(), refusal["code"].clone()), (json!(n), json!("E2001")), "{refusal}");
    assert!(refusal["message"].as_str().is_some_and(|m| m.contains("may not use gitea_update_issue")), "{refusal}");

    // The same issue again, unchanged (another delivery, or the start-up poll racing the
    // first one): the refused plan is not put to the harness a second time.
    let unchanged = s["process"]["unchanged"].as_u64().expect("unchanged");
    let again = Delivery::from_sample("issues-opened", n, "App crashes on start", "alice", &sample_secret());
    assert_eq!(send(&http, &again).await.0, 202);
    let s = until("the second look", Duration::from_secs(15), async || {
        let s = status(&http).await;
        (s["process"]["unchanged"].as_u64() > Some(unchanged) && s["queued"] == 0).then_some(s)
    })
    .await;
    assert_eq!((s["process"]["plans_refused"].clone(), s["refusals"][0]["times"].clone()), (json!(1), json!(1)), "{s}");

    // The refused call is itself in Allegro's audit chain, and the chain holds.
    let allegro = fleet.node("allegro");
    let records = audit_records(allegro, &format!("triage:{OWNER}/{REPO}#{n}"));
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!((records[0]["ok"].clone(), records[0]["error_code"].clone()), (json!(false), json!("E2001")));
    assert_eq!(records[0]["id"], refusal["provenance_id"]);
    assert_eq!(audit_verify(allegro).0, Some(0));

    // The operator's view says why.
    let mut c = cli(&allegro.home);
    c.args(["triage", "--status", "--config"]).arg(&allegro.config);
    let o = run(c);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("refused 1"), "{text}");
    assert!(
        text.contains(&format!("{OWNER}/{REPO}#{n}  REFUSED E2001 house allegro may not use gitea_update_issue")),
        "{text}"
    );
    assert_conformant(&server);
}

/// Proves an issue whose webhook never came is triaged by the periodic poll, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_webhook_is_caught_by_the_periodic_poll() {
    let server = GiteaServer::start().await;
    let (_fleet, http) = start_polled(&server, 200).await;
    let n = server.add_issue(OWNER, REPO, "Panic in the router", "", &[]);
    let r = until("issue caught by polling", Duration::from_secs(10), async || row(&status(&http).await, n)).await;
    assert_eq!(r["source"], "poll");
    assert!(labels_of(&server, n).contains(&"kind/bug".to_owned()));
    assert_conformant(&server);
}

/// Proves a cold start pages through 120 existing issues (`limit=50`, `type=issues`) and triages each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_pages_through_existing_issues_and_triages_each_once() {
    let server = GiteaServer::start().await;
    let numbers: Vec<u64> =
        (0..120).map(|i| server.add_issue(OWNER, REPO, &format!("Crash number {i}"), "", &[])).collect();
    let mut fleet = start_fleet(&server, 3_600_000);
    let http = Http::of(fleet.node("allegro"));
    let s = until("all 120 triaged", Duration::from_secs(60), async || {
        let s = status(&http).await;
        (s["issues_triaged"] == 120 && s["queued"] == 0 && s["tasks_pending"] == 0).then_some(s)
    })
    .await;
    assert_eq!(s["applications"], 120, "an issue was triaged twice: {s}");
    assert_eq!(s["process"]["unchanged"], 0, "an issue was taken from the queue twice: {s}");
    for n in &numbers {
        assert_eq!(server.comments(OWNER, REPO, *n).len(), 1, "issue {n}");
    }
    // The triage daemon's own list calls (the routed tasks filter by label).
    let pages: Vec<Vec<(String, String)>> = server
        .exchanges()
        .iter()
        .filter(|e| {
            e.request.method == "GET"
                && e.request.path == format!("/api/v1/repos/{OWNER}/{REPO}/issues")
                && !e.request.query.iter().any(|(k, _)| k == "labels")
        })
        .map(|e| e.request.query.clone())
        .collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    for (i, q) in pages.iter().enumerate() {
        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!((get("type"), get("limit"), get("state")), (Some("issues"), Some("50"), Some("open")), "{q:?}");
        assert_eq!(get("page").unwrap_or("1"), (i + 1).to_string(), "{q:?}");
    }
    assert_conformant(&server);
}

/// Sends `head` and then `body_len` bytes of `b'x'` in a thread (ignoring write errors once the
/// server has answered), and returns the status line's code.
fn raw_post(addr: &str, head: &str, body_len: usize, chunked: bool) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(head.as_bytes()).expect("head");
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < body_len {
            let n = chunk.len().min(body_len - sent);
            let ok = if chunked {
                w.write_all(format!("{n:x}\r\n").as_bytes())
                    .and_then(|()| w.write_all(&chunk[..n]))
                    .and_then(|()| w.write_all(b"\r\n"))
            } else {
                w.write_all(&chunk[..n])
            };
            if ok.is_err() {
                return sent;
            }
            sent += n;
        }
        if chunked {
            let _ = w.write_all(b"0\r\n\r\n");
        }
        sent
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&got);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status line: {text:?}"))
}

/// Proves bad and missing signatures, a 10 MB body (declared or chunked), malformed JSON and a replayed delivery are refused or ignored with the right status, triaging nothing and logging no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_oversized_malformed_and_replayed_deliveries_triage_nothing() {
    let server = GiteaServer::start().await;
    let (mut fleet, http) = start_polled(&server, 3_600_000).await;
    let secret = sample_secret();
    let n = server.add_issue(OWNER, REPO, "Crash on start", "", &[]);
    let good = Delivery::from_sample("issues-opened", n, "Crash on start", "alice", &secret);
    let requests_before = server.exchanges().len();

    let mut forged = Delivery::from_sample("issues-opened", n, "Crash on start", "alice", "not-the-secret-at-all");
    forged.set("X-Gitea-Delivery", "forged-1");
    assert_eq!(send(&http, &forged).await.0, 401, "bad signature");
    let mut flipped = good.clone();
    flipped.set("X-Gitea-Delivery", &fresh_id());
    flipped.body.push(b' ');
    assert_eq!(send(&http, &flipped).await.0, 401, "body changed after signing");
    let mut unsigned = good.clone();
    unsigned.without("X-Gitea-Signature");
    unsigned.set("X-Gitea-Delivery", &fresh_id());
    assert_eq!(send(&http, &unsigned).await.0, 401, "missing signature");
    let malformed = Delivery::signed("issues-opened", b"{\"action\": \"opened\", \"issue\": ".to_vec(), &secret);
    assert_eq!(send(&http, &malformed).await.0, 400, "malformed JSON");
    let not_object = Delivery::signed("issues-opened", b"[1, 2, 3]".to_vec(), &secret);
    assert_eq!(send(&http, &not_object).await.0, 400, "JSON of the wrong shape");

    let ten_mb = 10 * 1024 * 1024;
    let sig = hmac_hex(&secret, &vec![b'x'; ten_mb]);
    let head = |framing: &str| {
        format!(
            "POST /webhooks/gitea HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\nX-Gitea-Event: issues\r\n\
             X-Gitea-Event-Type: issues\r\nX-Gitea-Delivery: {}\r\nX-Gitea-Signature: {sig}\r\n{framing}\r\n",
            fresh_id()
        )
    };
    let declared =
        tokio::task::block_in_place(|| raw_post(&http, &head(&format!("Content-Length: {ten_mb}\r\n")), ten_mb, false));
    assert_eq!(declared, 413, "10 MB declared");
    let chunked =
        tokio::task::block_in_place(|| raw_post(&http, &head("Transfer-Encoding: chunked\r\n"), ten_mb, true));
    assert_eq!(chunked, 413, "10 MB chunked");

    let s = status(&http).await;
    assert_eq!(
        (s["deliveries"].clone(), s["queued"].clone(), s["issues_triaged"].clone()),
        (json!(0), json!(0), json!(0)),
        "{s}"
    );
    assert_eq!(s["process"]["webhooks_refused"], 7);
    assert_eq!(server.exchanges().len(), requests_before, "a refused delivery reached Gitea");

    // The genuine delivery once, then replayed byte for byte.
    assert_eq!(send(&http, &good).await.0, 202);
    until("triaged", Duration::from_secs(10), async || row(&status(&http).await, n)).await;
    let (code, body) = send(&http, &good).await;
    assert_eq!((code, body["duplicate"].clone()), (200, json!(true)), "{body}");
    let s = status(&http).await;
    assert_eq!((s["deliveries"].clone(), s["queued"].clone()), (json!(1), json!(0)), "the replay queued nothing: {s}");
    assert_eq!(row(&s, n).expect("row")["times"], 1);
    assert_eq!(server.comments(OWNER, REPO, n).len(), 1, "{s}\n{:?}", writes(&server));
    let node = fleet.node("allegro");
    assert_eq!(node.health().expect("still serving")["status"], "serving", "{}", node.log());
    assert!(!node.log().contains("panicked"), "{}", node.log());
    assert!(!node.log().contains(&secret) && !node.log().contains(server.token()), "a secret was logged");
    assert_conformant(&server);
}

/// Proves `/triage/status` answers only the scrape token (401 without it or with another),
/// while the Gitea webhook, which sends no bearer token, is still taken on its HMAC alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_status_wants_the_scrape_token_and_the_webhook_only_its_hmac() {
    let server = GiteaServer::start().await;
    let (_fleet, http) = start_polled(&server, 3_600_000).await;
    let url = format!("http://{}/triage/status", http.addr);
    let anonymous = reqwest::get(&url).await.expect("answered");
    assert_eq!(anonymous.status().as_u16(), 401);
    let body = anonymous.text().await.unwrap_or_default();
    assert!(body.contains("E5001") && !body.contains("cursors"), "{body}");
    let wrong = reqwest::Client::new().get(&url).bearer_auth("metrics-not-the-token-0123").send().await;
    assert_eq!(wrong.expect("answered").status().as_u16(), 401);
    assert!(status(&http).await["cursors"].is_array(), "the token reads it");

    let n = server.add_issue(OWNER, REPO, "Crash on start", "", &[]);
    let d = Delivery::from_sample("issues-opened", n, "Crash on start", "alice", &sample_secret());
    assert!(!d.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")), "Gitea sends no token");
    let (code, body) = send(&http, &d).await;
    assert_eq!(code, 202, "the webhook needs no bearer token: {body}");
    assert_conformant(&server);
}

/// Proves the webhooks the bot's own labels, assignment and comment cause are ignored, a human's label change re-triages to no change, and the metrics pass promtool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_caused_webhooks_trigger_no_further_action() {
    let server = GiteaServer::start().await;
    let (mut fleet, http) = start_polled(&server, 3_600_000).await;
    let secret = sample_secret();
    let n = server.add_issue(OWNER, REPO, "Crash when widget count is zero", "", &[]);
    let title = "Crash when widget count is zero";
    assert_eq!(send(&http, &Delivery::from_sample("issues-opened", n, title, "alice", &secret)).await.0, 202);
    until("triaged and routed", Duration::from_secs(15), async || {
        row(&status(&http).await, n).filter(|r| r["task_state"] == "succeeded")
    })
    .await;
    let exchanges_before = server.exchanges().len();
    let state_before = server.snapshot();

    // What Gitea sends after the bot's own actions: sender = the bot.
    for sample in ["issue_label-label_updated", "issue_assign-assigned", "issue_comment-created"] {
        let (code, body) = send(&http, &Delivery::from_sample(sample, n, title, BOT, &secret)).await;
        assert_eq!(code, 200, "{sample}: {body}");
        assert_eq!(body["ignored"], "sender is the bot", "{sample}: {body}");
    }
    let s = status(&http).await;
    assert_eq!(s["queued"], 0, "{s}");
    assert_eq!(server.exchanges().len(), exchanges_before, "a bot-caused webhook made Gitea calls");

    // A human touching the labels re-triages; the plan is already applied, so nothing changes.
    let (code, _) = send(&http, &Delivery::from_sample("issue_label-label_updated", n, title, "alice", &secret)).await;
    assert_eq!(code, 202);
    until("re-triage looked", Duration::from_secs(10), async || {
        let s = status(&http).await;
        (s["process"]["unchanged"] == 1 && s["queued"] == 0).then_some(())
    })
    .await;
    assert_eq!(server.snapshot(), state_before, "re-triage changed Gitea");
    let s = status(&http).await;
    assert_eq!(row(&s, n).expect("row")["times"], 1);
    assert_eq!(server.comments(OWNER, REPO, n).len(), 1);
    assert_conformant(&server);
    promtool_accepts_metrics(fleet.node("allegro"));
}

/// The triage node's `/metrics` (scraped with the token, as Prometheus does) has the triage
/// families and passes `promtool check metrics`.
fn promtool_accepts_metrics(node: &Node) {
    use std::process::{Command, Stdio};
    let (code, page) = node.scrape("/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    for family in [
        "uw_triage_webhooks_total",
        "uw_triage_webhook_seconds_bucket",
        "uw_triage_latency_seconds_bucket",
        "uw_triage_actions_total",
        "uw_triage_issues_total",
        "uw_triage_polls_total",
    ] {
        assert!(page.contains(family), "/metrics has no {family}:\n{page}");
    }
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "promtool is missing under CI=true: scripts/test installs it"
        );
        eprintln!("SKIPPED: promtool (Debian package prometheus) is missing");
        return;
    };
    child.stdin.take().expect("stdin").write_all(page.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "promtool check metrics:\n{text}");
}
