//! Telemetry across real processes: Hermes (the real `hermes-agent` code) writes sessions,
//! Allegro's `uni-wizardd` tails them and streams them to Timmy's `uni-wizardd` sink.
//! Every loop is bounded in time; nothing is mocked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::metadata::MetadataValue;
use uni_wizard_proto::v1::{
    self, HermesToolCallStatus as Status, TelemetryEvent, TelemetryQuery, telemetry_client::TelemetryClient,
    telemetry_event::Kind,
};
use uni_wizard_tests::fleet::{Fleet, Node};
use uni_wizard_tests::{bin, hermes, json_stdout};

const ALLEGRO_NODE: &str = "allegro-node";

/// Timmy runs the sink (and a worker), Allegro the bridge tailing `hermes_home`.
fn configure(hermes_home: &Path, extra_allegro: &str) -> Fleet {
    let home = hermes_home.display().to_string();
    let extra = move |h: &str| match h {
        "timmy" => "roles: [worker, telemetry]\ntelemetry: {batch: 256}\n".to_owned(),
        _ => format!(
            "roles: [worker, telemetry]\ntelemetry: {{hermes_home: \"{home}\", poll_ms: 50, batch: 256, backoff_min_ms: 20, backoff_max_ms: 200{extra_allegro}}}\n"
        ),
    };
    Fleet::configure(&["timmy", "allegro"], &extra)
}

fn start_all(fleet: &mut Fleet) {
    fleet.node("timmy").start();
    fleet.node("allegro").start();
}

/// Every event Timmy's sink holds for `node`, through `Telemetry/Query` as Timmy, and the
/// node's status row; `None` when the sink does not answer.
fn query(timmy: &Node, node: &str) -> Option<(Vec<TelemetryEvent>, Option<v1::NodeStatus>)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", timmy.grpc))
            .ok()?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?;
        let bearer: MetadataValue<_> = format!("Bearer {}", timmy.token).parse().ok()?;
        let mut client = TelemetryClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            r.metadata_mut().insert("x-uw-house", MetadataValue::from_static("timmy"));
            Ok(r)
        });
        let mut events = Vec::new();
        let mut status = None;
        loop {
            let since = events.last().map_or(0, |e: &TelemetryEvent| e.seq);
            let q = TelemetryQuery { node: node.to_owned(), since_seq: since, limit: 10_000 };
            let r = tokio::time::timeout(Duration::from_secs(10), client.query(q)).await.ok()?.ok()?.into_inner();
            status = r.nodes.into_iter().find(|n| n.node == node).or(status);
            events.extend(r.events);
            if !r.has_more {
                return Some((events, status));
            }
        }
    })
}

/// Polls `f` every 50 ms until it returns `Some`, at most `within`.
fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Allegro's outbox figures from its `/health`.
fn outbox(allegro: &Node) -> Option<Value> {
    allegro.health().map(|h| h["telemetry"].clone()).filter(|t| t.is_object())
}

/// Waits until Allegro has tailed everything Hermes wrote and Timmy acknowledged all of it;
/// returns the events at Timmy.
fn settle(fleet: &Fleet, hermes_home: &Path, within: Duration) -> Vec<TelemetryEvent> {
    let max_id = hermes::max_message_id(hermes_home);
    let (first, last) = wait_for("allegro to tail every Hermes row and drain its outbox", within, || {
        let t = outbox(&fleet.nodes["allegro"])?;
        (t["hermes_message_id"].as_i64() == Some(max_id) && t["buffered"] == 0 && t["hermes_open_sessions"] == 0)
            .then(|| Some((t["first_seq"].as_u64()?, t["next_seq"].as_u64()? - 1)))
            .flatten()
    });
    let (events, status) = wait_for("timmy to hold every event", within, || {
        query(&fleet.nodes["timmy"], ALLEGRO_NODE).filter(|(e, _)| e.len() as u64 > last - first)
    });
    assert_eq!(status.map(|s| s.last_seq), Some(last), "the sink's ack covers every event");
    events
}

fn tool_key(t: &v1::HermesToolCallEvent) -> (String, String, i32) {
    (t.session_id.clone(), t.tool_call_id.clone(), t.status)
}

/// Checks the events at Timmy are N consecutive seqs from the outbox's first, with no gap or
/// duplicate, and [`check_each_once`]. Returns N.
fn check_exactly_once(events: &[TelemetryEvent], sessions: &[String]) -> usize {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let first = seqs.first().copied().unwrap_or(1);
    let expected: Vec<u64> = (first..first + events.len() as u64).collect();
    assert!(seqs == expected, "seqs are not {first}.. +{} without gaps or duplicates", events.len());
    check_each_once(events, sessions)
}

/// Checks that each of `sessions` arrived once with both its tool calls STARTED and finished
/// exactly once and paired, its final token figures (no figures twice) and its end, and no
/// other session. Returns the number of events.
fn check_each_once(events: &[TelemetryEvent], sessions: &[String]) -> usize {
    let mut figures = BTreeSet::new();
    let mut started = BTreeMap::new();
    let mut finished = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let (mut opened, mut ended) = (BTreeMap::new(), BTreeMap::new());
    let mut usage: BTreeMap<String, v1::HermesTokenUsage> = BTreeMap::new();
    for e in events {
        assert_eq!(e.node, ALLEGRO_NODE);
        match &e.kind {
            Some(Kind::HermesToolCall(t)) => {
                assert!(seen.insert(tool_key(t)), "tool event twice: {t:?}");
                if t.status == Status::Started as i32 {
                    started.insert((t.session_id.clone(), t.tool_call_id.clone()), t.clone());
                } else {
                    finished.insert((t.session_id.clone(), t.tool_call_id.clone()), t.clone());
                }
            }
            Some(Kind::HermesSession(s)) => *opened.entry(s.session_id.clone()).or_insert(0) += 1,
            Some(Kind::HermesSessionEnd(s)) => *ended.entry(s.session_id.clone()).or_insert(0) += 1,
            Some(Kind::HermesTokenUsage(u)) => {
                let total = (u.input_tokens, u.output_tokens, u.api_call_count, u.estimated_cost_usd.map(f64::to_bits));
                assert!(figures.insert((u.session_id.clone(), total)), "the same token figures twice: {u:?}");
                usage.insert(u.session_id.clone(), u.clone());
            }
            _ => {}
        }
    }
    for sid in sessions {
        assert_eq!(opened.get(sid), Some(&1), "session {sid} seen once");
        assert_eq!(ended.get(sid), Some(&1), "session {sid} ended once");
        let calls: Vec<_> = started.iter().filter(|((s, _), _)| s == sid).collect();
        assert_eq!(calls.len(), 2, "session {sid} has its two tool calls");
        for ((s, id), call) in calls {
            let done = finished.get(&(s.clone(), id.clone())).unwrap_or_else(|| panic!("no result for {id}"));
            assert_eq!(done.tool_name, call.tool_name, "result paired with its call");
            assert_eq!(done.arguments_json, call.arguments_json, "result carries its call's arguments");
            match call.tool_name.as_str() {
                "terminal" => {
                    assert_eq!(done.status, Status::Succeeded as i32);
                    assert!(done.result.contains("a1b2c3d") && call.arguments_json.contains("git log"));
                }
                "read_file" => {
                    assert_eq!(done.status, Status::Failed as i32);
                    assert!(done.error_message.contains("File not found"), "{done:?}");
                }
                other => panic!("unexpected tool {other}"),
            }
        }
        let u = &usage[sid];
        assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_tokens, u.api_call_count), (4144, 137, 3000, 2));
        assert_eq!(u.model, "anthropic/claude-sonnet-4");
        assert!((u.estimated_cost_usd.unwrap_or(0.0) - 0.01448).abs() < 1e-9, "{u:?}");
    }
    assert_eq!(opened.len(), sessions.len(), "no session beyond those written");
    assert_eq!(finished.len(), started.len(), "no result without its call");
    events.len()
}

/// `uni-wizard telemetry --status --json` with `node`'s config.
fn status(node: &Node) -> (Option<i32>, Value) {
    let o = Command::new(bin("uni-wizard"))
        .args(["telemetry", "--status", "--json", "--config"])
        .arg(&node.config)
        .output()
        .expect("uni-wizard runs");
    (o.status.code(), json_stdout(&o))
}

fn row<'a>(v: &'a Value, node: &str) -> &'a Value {
    v["nodes"].as_array().and_then(|r| r.iter().find(|r| r["node"] == node)).unwrap_or(&Value::Null)
}

/// Proves every Hermes tool call and its result, written by the real hermes-agent while the
/// bridge runs, reach Timmy exactly once and paired, with session and token fields; that a
/// harness execution on Allegro arrives too; and that `telemetry --status` shows connected,
/// last ack, lag, buffered, dropped and the Hermes cursor, also while Timmy is down.
#[test]
fn hermes_sessions_reach_timmy_exactly_once_paired() {
    let hh = hermes::home();
    let mut fleet = configure(hh.path(), "");
    start_all(&mut fleet);
    let ids = hermes::session_ids(hermes::write_sessions(hh.path(), 3));
    assert_eq!(ids.len(), 3);
    let events = settle(&fleet, hh.path(), Duration::from_secs(30));
    let n = check_exactly_once(&events, &ids);

    let (code, v) = status(&fleet.nodes["allegro"]);
    assert_eq!(code, Some(0), "{v}");
    let r = row(&v, ALLEGRO_NODE);
    assert_eq!(r["connected"], true, "{v}");
    assert_eq!(r["last_ack"].as_u64(), events.last().map(|e| e.seq), "{v}");
    assert_eq!(r["last_ack"].as_u64(), r["first_seq"].as_u64().map(|f| f + n as u64 - 1), "{v}");
    assert_eq!((r["buffered"].as_u64(), r["dropped"].as_u64()), (Some(0), Some(0)), "{v}");
    assert_eq!(r["hermes_cursor"].as_i64(), Some(hermes::max_message_id(hh.path())), "{v}");
    assert!(r["lag_ms"].is_u64(), "{v}");
    let text = Command::new(bin("uni-wizard"))
        .args(["telemetry", "--status", "--config"])
        .arg(&fleet.nodes["allegro"].config)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(ALLEGRO_NODE) && text.contains("hermes cursor"), "{text}");

    // Timmy down: the status says so and Allegro buffers what Hermes writes meanwhile.
    fleet.node("timmy").kill();
    hermes::session_ids(hermes::write_sessions(hh.path(), 1));
    let max_id = hermes::max_message_id(hh.path());
    let buffered = wait_for("allegro to buffer while timmy is down", Duration::from_secs(20), || {
        let t = outbox(&fleet.nodes["allegro"])?;
        (t["hermes_message_id"].as_i64() == Some(max_id)).then(|| t["buffered"].as_u64().unwrap_or(0))
    });
    assert!(buffered >= 7, "one session's events are buffered, got {buffered}");
    let (code, v) = status(&fleet.nodes["allegro"]);
    assert_eq!((code, v["ok"].clone()), (Some(4), Value::Bool(false)), "{v}");
    assert_eq!(row(&v, ALLEGRO_NODE)["buffered"].as_u64(), Some(buffered), "{v}");
}

/// Writes `sessions` Hermes sessions while `kill` SIGKILLs and restarts `victim` 5 times,
/// spread over the flow; then checks Timmy holds exactly the events sent.
fn zero_loss_with(victim: &str) {
    let hh = hermes::home();
    let mut fleet = configure(hh.path(), "");
    start_all(&mut fleet);
    // 7 to 8 events per session (token updates close together coalesce): 1450 sessions
    // are more than 10k events.
    let sessions = 1450;
    let writer = hermes::write_sessions(hh.path(), sessions);
    let writer_pid = writer.id();
    let step = 1700u64;
    let started = Instant::now();
    for k in 1..=5u64 {
        // Kill once the sink has acknowledged another `step` events, so the kills are spread
        // over the stream rather than bunched at its start.
        wait_for(&format!("progress before kill {k}"), Duration::from_secs(60), || {
            let t = outbox(&fleet.nodes["allegro"])?;
            let acked = t["acked_through"].as_u64()? + 1 - t["first_seq"].as_u64()?;
            (acked >= k * step).then_some(())
        });
        let writing = writer_running(&writer_pid);
        fleet.node(victim).kill();
        fleet.node(victim).start();
        eprintln!("kill {k} of {victim} at {:?}, Hermes still writing: {writing}", started.elapsed());
    }
    let ids = hermes::session_ids(writer);
    assert_eq!(ids.len(), sessions);
    let events = settle(&fleet, hh.path(), Duration::from_secs(90));
    let n = check_exactly_once(&events, &ids);
    assert!(n >= 10_000, "at least 10k events flowed, got {n}");
    eprintln!("{n} events, {} sessions, exactly once after 5 kills of {victim}, in {:?}", ids.len(), started.elapsed());
}

/// Whether the writer process is still alive (for the log: kills land while Hermes writes).
fn writer_running(pid: &u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Proves no event is lost or duplicated when Timmy's sink is SIGKILLed and restarted 5
/// times while more than 10k Hermes events flow: seq 1..N contiguous, every session, call and
/// result exactly once.
#[test]
fn zero_loss_across_sink_kills() {
    zero_loss_with("timmy");
}

/// Proves the same when the bridge (Allegro) is SIGKILLed mid-stream and restarted 5 times:
/// its outbox, cursor and dedup state survive, so nothing is lost, re-read or resent twice.
#[test]
fn zero_loss_across_bridge_kills() {
    zero_loss_with("allegro");
}

/// Proves Hermes' real shell-hook runner calling `uni-wizard hermes-hook` for a
/// `pre_tool_call` of a tool Allegro's policy denies gets the call blocked, and the hook
/// event, marked blocked, reaches Timmy.
#[test]
fn hermes_hook_blocks_a_denied_tool_and_reports_it() {
    let hh = hermes::home();
    let mut fleet = configure(hh.path(), ", hook_deny: [read_file]");
    start_all(&mut fleet);
    let command =
        format!("{} hermes-hook --config {}", bin("uni-wizard").display(), fleet.nodes["allegro"].config.display());
    let out = Command::new(hermes::python())
        .arg(hermes::workspace().join("tests/py/hermes_hook_check.py"))
        .args([&command, "read_file"])
        .env("HERMES_HOME", hh.path())
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let result = v["result"].as_str().unwrap_or("");
    assert!(result.contains("does not allow the tool `read_file`"), "the call was blocked: {v}");
    assert!(!result.contains("\"content\""), "the tool did not run: {v}");
    let hook = wait_for("the blocked hook event at timmy", Duration::from_secs(20), || {
        let (events, _) = query(&fleet.nodes["timmy"], ALLEGRO_NODE)?;
        events.into_iter().find_map(|e| match e.kind {
            Some(Kind::Hook(h)) if h.hook == "pre_tool_call" => Some(h),
            _ => None,
        })
    });
    assert!(hook.blocked && hook.tool_name == "read_file" && hook.tool_call_id == "call_hook1", "{hook:?}");
    assert!(hook.block_message.contains("read_file"));
}

/// The execution events Timmy's sink holds for Allegro.
fn executions_at_timmy(fleet: &Fleet) -> Option<Vec<v1::ExecutionEvent>> {
    let (events, _) = query(&fleet.nodes["timmy"], ALLEGRO_NODE)?;
    Some(
        events
            .into_iter()
            .filter_map(|e| match e.kind {
                Some(Kind::Execution(x)) => Some(x),
                _ => None,
            })
            .collect(),
    )
}

/// Runs `file_read` on Allegro's worker through its gRPC `Execute`, as Timmy.
fn execute_on_allegro(fleet: &Fleet) -> v1::ExecuteResponse {
    let (allegro, timmy) = (&fleet.nodes["allegro"], &fleet.nodes["timmy"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", allegro.grpc))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let bearer: MetadataValue<_> = format!("Bearer {}", timmy.token).parse().expect("ascii");
        let mut client = v1::worker_client::WorkerClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            r.metadata_mut().insert("x-uw-house", MetadataValue::from_static("timmy"));
            Ok(r)
        });
        let call = v1::ToolCall {
            tool: "file_read".into(),
            args_json: r#"{"path":"hello.txt"}"#.into(),
            ..Default::default()
        };
        let req = v1::ExecuteRequest { call: Some(call), house: v1::House::Allegro.into(), ..Default::default() };
        client.execute(req).await.expect("execute").into_inner()
    })
}

/// Proves a harness execution on Allegro reaches Timmy as an ExecutionEvent and is fed into
/// Timmy's pattern DB under Allegro's node, so Timmy's predictions learn from the fleet.
#[test]
fn harness_executions_reach_timmy_and_teach_its_pattern_db() {
    let hh = hermes::home();
    let mut fleet = configure(hh.path(), "");
    let timmy = fleet.node("timmy").config.clone();
    let text = std::fs::read_to_string(&timmy).expect("config");
    std::fs::write(
        &timmy,
        text.replace("intelligence: {enabled: false}", "intelligence: {enabled: true, linger_ms: 5}"),
    )
    .expect("config");
    start_all(&mut fleet);
    let r = execute_on_allegro(&fleet);
    assert!(matches!(r.result, Some(v1::execute_response::Result::Outcome(_))), "{r:?}");
    let x = wait_for("the execution event at timmy", Duration::from_secs(20), || {
        executions_at_timmy(&fleet)?.into_iter().next()
    });
    assert_eq!((x.tool.as_str(), x.success, x.house), ("file_read", true, v1::House::Allegro as i32), "{x:?}");
    assert!(!x.provenance_id.is_empty() && x.args_fingerprint != 0, "{x:?}");
    let db = fleet.nodes["timmy"].home.join("patterns.db");
    let rows = wait_for("allegro's execution in timmy's pattern DB", Duration::from_secs(20), || {
        let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM executions WHERE node = ?1 AND tool = 'file_read' AND house = 'allegro'",
                [ALLEGRO_NODE],
                |r| r.get(0),
            )
            .ok()?;
        (n > 0).then_some(n)
    });
    assert_eq!(rows, 1, "fed exactly once");
}

/// Proves a node whose outbox file was deleted loses nothing afterwards: the new outbox
/// numbers above the old one's seqs, Timmy's sink takes the new stream's first seq as its
/// start, and the execution after the deletion reaches Timmy and is acknowledged like the one
/// before it. (Before, the sink took the new seqs for resent ones and acked them unstored.)
#[test]
fn a_deleted_outbox_loses_nothing_after_it() {
    let hh = hermes::home();
    let mut fleet = configure(hh.path(), "");
    start_all(&mut fleet);
    let r = execute_on_allegro(&fleet);
    assert!(matches!(r.result, Some(v1::execute_response::Result::Outcome(_))), "{r:?}");
    wait_for("the first execution at timmy", Duration::from_secs(20), || {
        executions_at_timmy(&fleet).filter(|x| x.len() == 1)
    });
    let old = outbox(&fleet.nodes["allegro"]).expect("outbox figures");
    assert!(fleet.node("allegro").terminate().success(), "allegro stops cleanly");
    let home = fleet.nodes["allegro"].home.clone();
    for f in ["telemetry-outbox.db", "telemetry-outbox.db-wal", "telemetry-outbox.db-shm"] {
        match std::fs::remove_file(home.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove {f}: {e}"),
        }
    }
    fleet.node("allegro").start();
    let new = outbox(&fleet.nodes["allegro"]).expect("outbox figures");
    assert!(
        new["first_seq"].as_u64() > old["next_seq"].as_u64().map(|n| n - 1),
        "the new outbox numbers above the old one: {new} after {old}"
    );
    let r = execute_on_allegro(&fleet);
    assert!(matches!(r.result, Some(v1::execute_response::Result::Outcome(_))), "{r:?}");
    let x = wait_for("the second execution at timmy", Duration::from_secs(20), || {
        executions_at_timmy(&fleet).filter(|x| x.len() == 2)
    });
    assert_ne!(x[0].request_id, x[1].request_id, "two executions, each stored once");
    wait_for("allegro's new outbox to drain", Duration::from_secs(20), || {
        let t = outbox(&fleet.nodes["allegro"])?;
        (t["buffered"] == 0 && t["acked_through"].as_u64()? + 1 == t["next_seq"].as_u64()?).then_some(())
    });
}

/// A webhook receiver on loopback: collects every JSON body POSTed to it.
fn webhook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(&stream);
            let mut len = 0usize;
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice::<Value>(&body)
            {
                sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(v);
            }
            let _ = (&stream).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// Proves a node-down rule at Timmy fires after its hold time when Allegro's bridge is
/// killed and resolves when it is back, both into Timmy's log and to the webhook.
#[test]
fn node_down_alert_fires_and_resolves_to_the_webhook() {
    let (url, got) = webhook();
    let extra = move |h: &str| match h {
        "timmy" => format!(
            "roles: [worker, telemetry]\ntelemetry: {{alerts: {{interval_ms: 50, node_down_ms: 300, webhook: \"{url}\"}}}}\n"
        ),
        _ => "roles: [worker, telemetry]\ntelemetry: {backoff_min_ms: 20, backoff_max_ms: 200}\n".to_owned(),
    };
    let mut fleet = Fleet::configure(&["timmy", "allegro"], &extra);
    start_all(&mut fleet);
    // Allegro's stream opens with its first event: a harness call.
    execute_on_allegro(&fleet);
    wait_for("allegro's stream at timmy", Duration::from_secs(20), || {
        query(&fleet.nodes["timmy"], ALLEGRO_NODE)?.1.filter(|s| s.connected)
    });
    let delivered = |state: &str| {
        let g = got.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        g.iter().filter(|v| v["alert"] == "node_down:allegro-node" && v["state"] == state).count()
    };
    let killed = Instant::now();
    fleet.node("allegro").kill();
    wait_for("the node_down alert at the webhook", Duration::from_secs(10), || {
        (delivered("firing") == 1).then_some(())
    });
    assert!(killed.elapsed() >= Duration::from_millis(300), "fired before its hold time");
    assert!(fleet.nodes["timmy"].log().contains("alert firing"), "logged too");
    assert_eq!(delivered("resolved"), 0);
    fleet.node("allegro").start();
    execute_on_allegro(&fleet);
    wait_for("the alert resolved", Duration::from_secs(20), || (delivered("resolved") == 1).then_some(()));
    assert_eq!(delivered("firing"), 1, "fired once");
    assert!(fleet.nodes["timmy"].log().contains("alert resolved"));
}

/// Streams one hook event of `node` (with `seq`) to Timmy's sink as `house` with `token`; the
/// sink's first answer: the seq it acknowledged through, or its refusal.
fn stream_one(timmy: &Node, house: &str, token: &str, node: &str, seq: u64) -> Result<u64, tonic::Status> {
    stream_kind(
        timmy,
        house,
        token,
        node,
        seq,
        Kind::Hook(v1::HookEvent { hook: "squat-test".into(), ..Default::default() }),
    )
}

/// Streams one event of `kind` as `house` from `node`; the sink's acknowledgement or refusal.
fn stream_kind(timmy: &Node, house: &str, token: &str, node: &str, seq: u64, kind: Kind) -> Result<u64, tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", timmy.grpc))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .expect("connect to timmy");
        let bearer: MetadataValue<_> = format!("Bearer {token}").parse().expect("ascii token");
        let house: MetadataValue<_> = house.parse().expect("ascii house");
        let mut client = TelemetryClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            r.metadata_mut().insert("x-uw-house", house.clone());
            Ok(r)
        });
        let event = TelemetryEvent { node: node.to_owned(), seq, time_unix_ms: 1, kind: Some(kind) };
        let events = tonic::codegen::tokio_stream::iter(vec![event]);
        let answer = async {
            let mut acks = client.stream(events).await?.into_inner();
            match acks.message().await? {
                Some(ack) => Ok(ack.acked_through_seq),
                None => Err(tonic::Status::unknown("the sink closed the stream without an answer")),
            }
        };
        tokio::time::timeout(Duration::from_secs(10), answer).await.expect("the sink answers within 10 s")
    })
}

/// Proves node names are bound to houses by the fleet config, not by who streams first: Ezra
/// streaming as `bezalel-node` is refused (E5002) at its first message and stores nothing, the
/// real Bezalel then streams it; after a hot reload declaring `houses.bezalel.nodes`, only the
/// declared names are Bezalel's.
#[test]
fn node_names_cannot_be_squatted() {
    let extra = |h: &str| if h == "timmy" { "roles: [worker, telemetry]\n".to_owned() } else { String::new() };
    let mut fleet = Fleet::configure(&["timmy", "ezra", "bezalel"], &extra);
    fleet.node("timmy").start();
    let (timmy, ezra, bezalel) = (&fleet.nodes["timmy"], &fleet.nodes["ezra"], &fleet.nodes["bezalel"]);
    let refused = |r: Result<u64, tonic::Status>| {
        let s = r.expect_err("refused");
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
        assert!(s.message().starts_with("E5002"), "{s:?}");
    };

    refused(stream_one(timmy, "ezra", &ezra.token, "bezalel-node", 1));
    let (events, status) = query(timmy, "bezalel-node").expect("query");
    assert!(events.is_empty() && status.is_none(), "the squatter stored nothing: {events:?} {status:?}");
    assert_eq!(stream_one(timmy, "bezalel", &bezalel.token, "bezalel-node", 1).expect("the real node"), 1);
    assert_eq!(stream_one(timmy, "ezra", &ezra.token, "ezra-node", 1).expect("Ezra's own node"), 1);
    refused(stream_one(timmy, "ezra", &ezra.token, "bezalel-node", 2));
    refused(stream_one(timmy, "ezra", &ezra.token, "some-host", 1));

    let config = std::fs::read_to_string(&timmy.config).expect("timmy's config");
    let declared = config.replace("role: bezalel, priority: 3}", "role: bezalel, priority: 3, nodes: [build-box]}");
    assert_ne!(config, declared, "the bezalel entry was found");
    uni_wizard_tests::fleet::rewrite(&timmy.config, &declared);
    wait_for("timmy's config reload", Duration::from_secs(10), || {
        timmy.log().contains("config reloaded").then_some(())
    });
    refused(stream_one(timmy, "ezra", &ezra.token, "build-box", 1));
    assert_eq!(stream_one(timmy, "bezalel", &bezalel.token, "build-box", 5).expect("declared"), 5);
    refused(stream_one(timmy, "bezalel", &bezalel.token, "bezalel-node", 2));
}

/// Proves a node reports only its own house's calls: Ezra streaming, from its own node,
/// executions that claim Timmy's house (or no house) is refused with E5002 and stores nothing,
/// so they never reach Timmy's pattern DB; its own executions are stored.
#[test]
fn executions_count_only_for_the_house_that_streams_them() {
    let extra = |h: &str| if h == "timmy" { "roles: [worker, telemetry]\n".to_owned() } else { String::new() };
    let mut fleet = Fleet::configure(&["timmy", "ezra"], &extra);
    fleet.node("timmy").start();
    let (timmy, ezra) = (&fleet.nodes["timmy"], &fleet.nodes["ezra"]);
    let execution = |house: v1::House| {
        Kind::Execution(v1::ExecutionEvent {
            tool: "system_info".into(),
            house: house.into(),
            success: false,
            ..Default::default()
        })
    };
    for claimed in [v1::House::Timmy, v1::House::Unspecified] {
        let s = stream_kind(timmy, "ezra", &ezra.token, "ezra-node", 1, execution(claimed)).expect_err("refused");
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
        assert!(s.message().starts_with("E5002"), "{s:?}");
    }
    let (events, _) = query(timmy, "ezra-node").expect("query");
    assert!(events.is_empty(), "nothing of the poisoned bursts is stored: {events:?}");
    assert_eq!(stream_kind(timmy, "ezra", &ezra.token, "ezra-node", 1, execution(v1::House::Ezra)).expect("own"), 1);
}

/// Proves a node name cannot forge a line in Timmy's log: a name holding a newline (or NUL)
/// is refused with E1005 and never written to the log.
#[test]
fn a_node_name_cannot_forge_a_log_line() {
    let extra = |h: &str| if h == "timmy" { "roles: [worker, telemetry]\n".to_owned() } else { String::new() };
    let mut fleet = Fleet::configure(&["timmy", "ezra"], &extra);
    fleet.node("timmy").start();
    let (timmy, ezra) = (&fleet.nodes["timmy"], &fleet.nodes["ezra"]);
    for node in ["x\n2026-12-02T17:13:00Z  INFO approval granted FORGED-LINE", "ezra\0"] {
        let s = stream_one(timmy, "ezra", &ezra.token, node, 1).expect_err("refused");
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
        assert!(s.message().starts_with("E1005"), "{s:?}");
    }
    let log = timmy.log();
    assert!(!log.contains("FORGED-LINE") && !log.contains('\0'), "the log holds the forged name");
}

/// A tmpfs of `size` mounted on `dir` for one test, lazily unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts it; `None` (after [`uni_wizard_tests::missing`]) where mounting is not allowed.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_owned())),
            other => {
                uni_wizard_tests::missing(&format!("permission to mount a tmpfs (root, CAP_SYS_ADMIN): {other:?}"));
                None
            }
        }
    }

    /// Fills it with `filler` until the filesystem refuses another page (ENOSPC).
    fn fill(&self, filler: &Path) {
        use std::io::Write;
        let mut f = std::fs::File::create(filler).expect("filler");
        for chunk in [64 * 1024, 4096] {
            let block = vec![0u8; chunk];
            for _ in 0..100_000 {
                match f.write_all(&block) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => panic!("filler: {e}"),
                }
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `uw_telemetry_reconnects_total` on `node`'s `/metrics`.
fn reconnects(node: &Node) -> u64 {
    let (_, text) = node.scrape("/metrics").expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("uw_telemetry_reconnects_total ")?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Proves a full disk under the outbox is visible and recovers by itself: the first failing
/// write logs one line naming the outbox file (not one per retry, and not "Hermes state.db not
/// readable"), `/health` turns `degraded` with that file and "disk is full" as the reason,
/// `telemetry --status` prints it; while the acks cannot be stored the stream backs off
/// instead of reconnecting every 50 ms (at most 10 reconnects in 5 s; before, 481 in 33 s);
/// freeing space brings writes, the acks, `serving` and one "writable again" line back with no
/// restart, and every Hermes session written meanwhile reaches Timmy exactly once.
#[test]
fn a_full_disk_under_the_outbox_is_seen_and_recovers() {
    let hh = hermes::home();
    let hermes_home = hh.path().display().to_string();
    let extra = move |h: &str| match h {
        "timmy" => "roles: [worker, telemetry]\n".to_owned(),
        _ => format!(
            "roles: [worker, telemetry]\ntelemetry: {{hermes_home: \"{hermes_home}\", poll_ms: 50, backoff_min_ms: 50, backoff_max_ms: 1000}}\n"
        ),
    };
    let mut fleet = Fleet::configure(&["timmy", "allegro"], &extra);
    // Simple and Intelligent calls off the audit store, which shares the full disk.
    let allegro_cfg = fleet.nodes["allegro"].config.clone();
    let text = std::fs::read_to_string(&allegro_cfg).expect("config");
    let text = text.replace("  approval_wait_ms: 20000\n", "  approval_wait_ms: 20000\n  audit_all_modes: false\n");
    std::fs::write(&allegro_cfg, text).expect("config");
    let home = fleet.nodes["allegro"].home.clone();
    let Some(disk) = Tmpfs::mount(&home, "16m") else { return };
    let outbox_file = home.join("telemetry-outbox.db").display().to_string();

    // Timmy is down: a Hermes session and fifty executions wait in Allegro's outbox (its WAL,
    // not yet checkpointed).
    let mut sessions = hermes::session_ids(hermes::write_sessions(hh.path(), 1));
    fleet.node("allegro").start();
    for _ in 0..50 {
        let r = execute_on_allegro(&fleet);
        assert!(matches!(r.result, Some(v1::execute_response::Result::Outcome(_))), "{r:?}");
    }
    let tailed = hermes::max_message_id(hh.path());
    wait_for("the session and 50 executions buffered", Duration::from_secs(20), || {
        let t = outbox(&fleet.nodes["allegro"])?;
        (t["hermes_message_id"] == tailed && t["buffered"].as_u64()? > 50).then_some(())
    });

    // The disk fills; the next events cannot be written.
    let filler = home.join("filler");
    disk.fill(&filler);
    for _ in 0..5 {
        execute_on_allegro(&fleet);
    }
    sessions.extend(hermes::session_ids(hermes::write_sessions(hh.path(), 2)));
    let health = wait_for("/health degraded", Duration::from_secs(20), || {
        fleet.nodes["allegro"].health().filter(|h| h["status"] == "degraded")
    });
    let reason = health["degraded"][0]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains(&outbox_file) && reason.contains("disk is full"), "{health}");
    assert_eq!(health["telemetry"]["write_error"]["reason"], reason.as_str(), "{health}");

    let mut status = uni_wizard_tests::cli(&fleet.dir.path().join("cli-home"));
    status.args(["telemetry", "--status", "--config"]).arg(&allegro_cfg);
    let out = uni_wizard_tests::run(status);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("OUTBOX CANNOT WRITE") && text.contains(&outbox_file), "{text}");

    // Timmy comes up: it acks, and Allegro cannot store the acks.
    fleet.node("timmy").start();
    wait_for("the stream to open", Duration::from_secs(20), || {
        fleet.nodes["allegro"].log().contains("telemetry stream to timmy open").then_some(())
    });
    let before = reconnects(&fleet.nodes["allegro"]);
    std::thread::sleep(Duration::from_secs(5));
    let during = reconnects(&fleet.nodes["allegro"]) - before;
    assert!(during <= 10, "{during} reconnects in 5 s while the outbox cannot take acks");
    let log = fleet.nodes["allegro"].log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&outbox_file)).collect();
    assert_eq!(lines.len(), 1, "one line names the file: {lines:#?}");
    assert!(lines[0].contains("telemetry outbox cannot be written"), "{}", lines[0]);
    assert!(!log.contains("state.db not readable"), "the message names the outbox, not Hermes");
    let held = outbox(&fleet.nodes["allegro"]).expect("figures")["hermes_message_id"].clone();
    assert_eq!(held, tailed, "the tailer holds its cursor: state.db is the buffer");

    // Space is freed: writes, acks and health come back without a restart.
    std::fs::remove_file(&filler).expect("free the space");
    let events = settle(&fleet, hh.path(), Duration::from_secs(30));
    check_exactly_once(&events, &sessions);
    let executions = events.iter().filter(|e| matches!(e.kind, Some(Kind::Execution(_)))).count();
    assert_eq!(executions, 50, "the five executions the full disk refused are dropped (and counted)");
    let health = fleet.nodes["allegro"].health().expect("health");
    assert_eq!((health["status"].as_str(), health["telemetry"]["write_error"].is_null()), (Some("serving"), true));
    let r = execute_on_allegro(&fleet);
    assert!(matches!(r.result, Some(v1::execute_response::Result::Outcome(_))), "{r:?}");
    wait_for("the new execution at timmy", Duration::from_secs(20), || {
        executions_at_timmy(&fleet).filter(|x| x.len() > 50)
    });
    let log = fleet.nodes["allegro"].log();
    let back: Vec<&str> = log.lines().filter(|l| l.contains("telemetry outbox writable again")).collect();
    assert_eq!(back.len(), 1, "{back:#?}");
    assert!(back[0].contains(&outbox_file), "{}", back[0]);
    fleet.node("allegro").kill();
    drop(disk);
}

// --- A replaced state.db, a lost outbox: Hermes history read again is stored once ---------

/// Waits until Allegro has tailed everything in the state.db now at its path (its cursor at
/// the file's highest id), follows no open session and Timmy acknowledged every event it
/// numbered; returns the events at Timmy (resent Hermes events are acked, not stored).
fn settle_acked(fleet: &Fleet, hermes_home: &Path, within: Duration) -> (Vec<TelemetryEvent>, Value) {
    let max_id = hermes::max_message_id(hermes_home);
    let t = wait_for("allegro to tail the state.db now there and Timmy to ack everything", within, || {
        let t = outbox(&fleet.nodes["allegro"])?;
        let drained = t["buffered"] == 0 && t["acked_through"].as_u64()? + 1 == t["next_seq"].as_u64()?;
        (t["hermes_message_id"].as_i64() == Some(max_id) && t["hermes_open_sessions"] == 0 && drained).then_some(t)
    });
    let (events, status) = query(&fleet.nodes["timmy"], ALLEGRO_NODE).expect("timmy answers");
    assert_eq!(status.map(|s| s.last_seq), t["acked_through"].as_u64(), "the sink's ack covers every event");
    (events, t)
}

/// Deletes `files` of `dir` that exist.
fn remove_files(dir: &Path, files: &[&str]) {
    for f in files {
        match std::fs::remove_file(dir.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove {f}: {e}"),
        }
    }
}

/// Checks Allegro says, once per replacement (`times`), in its log, its `/health` and
/// `telemetry --status`, that it found state.db replaced.
fn check_replaced(fleet: &Fleet, health: &Value, times: u64) {
    assert_eq!(health["hermes_replaced"].as_u64(), Some(times), "{health}");
    assert!(health["hermes_replaced_at_ms"].as_i64() > Some(0), "{health}");
    let log = fleet.nodes["allegro"].log();
    assert_eq!(log.matches("state.db replaced").count() as u64, times, "logged once each:\n{log}");
    let line = log.lines().find(|l| l.contains("state.db replaced")).unwrap_or("");
    assert!(line.contains("state.db") && line.contains("old_inode") && line.contains("new_inode"), "{line}");
    let (code, v) = status(&fleet.nodes["allegro"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(row(&v, ALLEGRO_NODE)["hermes_replaced"].as_u64(), Some(times), "{v}");
}

/// Proves a state.db deleted (with its -wal and -shm) and recreated, while the bridge runs and
/// again while it is stopped (the inode number may come back), is read from its beginning:
/// every event the real Hermes writes into the new file (its message ids restart at 1, below
/// the old cursor) reaches Timmy once, nothing is stored twice, and the log, `/health` and
/// `telemetry --status` say "replaced". (Before: none of them arrived.)
#[test]
fn a_recreated_state_db_is_read_from_its_beginning() {
    let hh = hermes::home();
    let mut fleet = configure(hh.path(), "");
    start_all(&mut fleet);
    let mut ids = hermes::session_ids(hermes::write_sessions(hh.path(), 3));
    settle_acked(&fleet, hh.path(), Duration::from_secs(30));
    remove_files(hh.path(), &["state.db", "state.db-wal", "state.db-shm"]);
    let new = hermes::session_ids(hermes::write_sessions(hh.path(), 2));
    assert!(hermes::max_message_id(hh.path()) < 15, "the new file's ids are below the old cursor");
    ids.extend(new);
    let (events, health) = settle_acked(&fleet, hh.path(), Duration::from_secs(30));
    check_each_once(&events, &ids);
    check_replaced(&fleet, &health, 1);

    assert!(fleet.node("allegro").terminate().success(), "allegro stops cleanly");
    remove_files(hh.path(), &["state.db", "state.db-wal", "state.db-shm"]);
    ids.extend(hermes::session_ids(hermes::write_sessions(hh.path(), 1)));
    fleet.node("allegro").start();
    let (events, health) = settle_acked(&fleet, hh.path(), Duration::from_secs(30));
    check_each_once(&events, &ids);
    check_replaced(&fleet, &health, 2);
}

/// Proves a state.db replaced by an older copy of itself (a backup renamed over it; its ids
/// go on from the backup's, reusing those of rows written after it) while the bridge runs is
/// read again from its beginning: the sessions the real Hermes writes into it reach Timmy
/// once, the history it shares with Timmy's store is resent but stored once, and Allegro says
/// "replaced". (Before: the new sessions never arrived, their ids being at or below the
/// cursor.)
#[test]
fn an_older_copy_of_state_db_is_read_again_and_stored_once() {
    let hh = hermes::home();
    let mut fleet = configure(hh.path(), "");
    start_all(&mut fleet);
    let mut ids = hermes::session_ids(hermes::write_sessions(hh.path(), 2));
    settle_acked(&fleet, hh.path(), Duration::from_secs(30));
    let backup = fleet.dir.path().join("state-backup.db");
    {
        let c = rusqlite::Connection::open(hh.path().join("state.db")).expect("state.db");
        c.busy_timeout(Duration::from_secs(5)).expect("busy");
        c.execute("VACUUM INTO ?1", [backup.display().to_string()]).expect("backup");
    }
    ids.extend(hermes::session_ids(hermes::write_sessions(hh.path(), 2)));
    let (before, _) = settle_acked(&fleet, hh.path(), Duration::from_secs(30));
    // Restore the backup as an operator would: copy it beside, drop the live WAL, rename over.
    let copy = hh.path().join("state.db.restoring");
    std::fs::copy(&backup, &copy).expect("copy the backup");
    remove_files(hh.path(), &["state.db-wal", "state.db-shm"]);
    std::fs::rename(&copy, hh.path().join("state.db")).expect("rename over state.db");
    ids.extend(hermes::session_ids(hermes::write_sessions(hh.path(), 2)));
    let (events, health) = settle_acked(&fleet, hh.path(), Duration::from_secs(30));
    check_each_once(&events, &ids);
    check_replaced(&fleet, &health, 1);
    let numbered = health["next_seq"].as_u64().unwrap_or(0) - health["first_seq"].as_u64().unwrap_or(0);
    let (sent_after, stored_after) = (numbered - before.len() as u64, (events.len() - before.len()) as u64);
    assert!(
        sent_after > stored_after,
        "the older copy's history was sent again ({sent_after}) and stored once ({stored_after})"
    );
}

/// Proves the Hermes history a node sends again after its outbox was deleted while it was
/// stopped (cursor and dedup state lost with it) is acknowledged and stored once at Timmy.
/// (Before: every event of it was stored a second time.)
#[test]
fn hermes_history_resent_after_a_lost_outbox_is_stored_once() {
    let hh = hermes::home();
    let mut fleet = configure(hh.path(), "");
    start_all(&mut fleet);
    let ids = hermes::session_ids(hermes::write_sessions(hh.path(), 3));
    let (before, _) = settle_acked(&fleet, hh.path(), Duration::from_secs(30));
    check_each_once(&before, &ids);
    assert!(fleet.node("allegro").terminate().success(), "allegro stops cleanly");
    let home = fleet.nodes["allegro"].home.clone();
    remove_files(&home, &["telemetry-outbox.db", "telemetry-outbox.db-wal", "telemetry-outbox.db-shm"]);
    fleet.node("allegro").start();
    let (events, health) = settle_acked(&fleet, hh.path(), Duration::from_secs(30));
    // Each session's start, two calls, two results, its end and at least one token figure.
    let resent = health["next_seq"].as_u64().unwrap_or(0) - health["first_seq"].as_u64().unwrap_or(0);
    assert!(resent >= 7 * ids.len() as u64, "the new outbox sent the history again: {health}");
    check_each_once(&events, &ids);
    assert_eq!(events.len(), before.len(), "nothing stored twice");
}

/// Runs `tests/py/hermes_empty_session.py ACTION ID` (the real SessionDB) in `hermes_home`.
fn empty_session(hermes_home: &Path, action: &str, id: &str) -> Value {
    let out = Command::new(hermes::python())
        .arg(hermes::workspace().join("tests/py/hermes_empty_session.py"))
        .args([action, id])
        .env("HERMES_HOME", hermes_home)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["ok"], true, "{action} {id}: {v}");
    v
}

/// Proves a session Hermes starts after the newest session was discarded unused (the CLI
/// quit at once: its `sessions` rowid is given again, there is no AUTOINCREMENT) is still seen
/// as started, followed and ended at Timmy. (Before: it was never seen as started, so neither
/// its token figures nor its end were sent.)
#[test]
fn a_session_taking_a_discarded_sessions_rowid_is_seen() {
    let hh = hermes::home();
    let mut fleet = configure(hh.path(), "");
    start_all(&mut fleet);
    let ids = hermes::session_ids(hermes::write_sessions(hh.path(), 1));
    settle_acked(&fleet, hh.path(), Duration::from_secs(30));
    let quit = "20261203_120000_0a0b0c";
    let rowid = empty_session(hh.path(), "start", quit)["max_rowid"].as_i64();
    wait_for("allegro to follow the empty session", Duration::from_secs(20), || {
        let t = outbox(&fleet.nodes["allegro"])?;
        (t["hermes_open_sessions"] == 1).then_some(())
    });
    empty_session(hh.path(), "discard", quit);
    let mut all = ids.clone();
    all.extend(hermes::session_ids(hermes::write_sessions(hh.path(), 1)));
    let (events, _) = settle_acked(&fleet, hh.path(), Duration::from_secs(30));
    let c =
        rusqlite::Connection::open_with_flags(hh.path().join("state.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("state.db");
    let reused: i64 = c.query_row("SELECT rowid FROM sessions WHERE id = ?1", [&all[1]], |r| r.get(0)).expect("rowid");
    assert_eq!(Some(reused), rowid, "the new session took the discarded session's rowid");
    let quit_seen = events.iter().any(|e| matches!(&e.kind, Some(Kind::HermesSession(s)) if s.session_id == quit));
    assert!(quit_seen, "the discarded session was seen while it lived");
    let others: Vec<TelemetryEvent> = events
        .into_iter()
        .filter(|e| !matches!(&e.kind, Some(Kind::HermesSession(s)) if s.session_id == quit))
        .collect();
    check_each_once(&others, &all);
}
