//! The kill loop: three nodes produce telemetry as fast as this machine allows while Timmy's
//! sink is SIGKILLed every 2 s for a minute and restarted at once (same config, same
//! `telemetry.db`); afterwards Timmy holds exactly what each node sent, nothing twice.
//!
//! Producers: Allegro, Ezra and Bezalel, each a real `uni-wizardd` with the telemetry role
//! tailing its own Hermes home, where the real `SessionDB` (`tests/py/hermes_burst.py`, which
//! runs `write_session.py`'s own writer) writes ended sessions in a tight loop. Nothing is
//! mocked; every process is stopped by its guard, every wait is bounded.
//!
//! This is the only minute-long test of the suite (about 65 s in all): it is a test, not a
//! bench, because what it proves — stored == sent across 30 sink crashes — is a correctness
//! property CI must keep; the rate it reaches is printed, and the figure of record is in
//! docs/BENCHMARKS.md ("Telemetry kill loop").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::Value;
use uni_wizard_proto::v1::{TelemetryEvent, telemetry_event::Kind};
use uni_wizard_tests::fleet::{Fleet, Node};
use uni_wizard_tests::hermes;

/// The producing houses.
const PRODUCERS: [&str; 3] = ["allegro", "ezra", "bezalel"];
/// How long the producers write and the sink is killed.
const RUN: Duration = Duration::from_secs(60);
/// The time between two kills of the sink.
const KILL_EVERY: Duration = Duration::from_secs(2);
/// Events per second the three producers must reach together.
const MIN_RATE: f64 = 1_000.0;
/// Sessions one writer writes at most (a bound far above what a minute allows here).
const MAX_SESSIONS: usize = 200_000;

/// Hermes writers and the files they report into, killed when dropped (a failing assertion
/// leaves no writer behind).
struct Writers(Vec<(Option<Child>, std::path::PathBuf)>);

impl Writers {
    /// Starts one burst writer per Hermes home, each for `RUN`.
    fn start(homes: &[tempfile::TempDir]) -> Writers {
        let spawn = |home: &Path| {
            let out = home.join("burst.json");
            let child = Command::new(hermes::python())
                .arg(hermes::workspace().join("tests/py/hermes_burst.py"))
                .arg(hermes::shared("write_session.py"))
                .arg(RUN.as_secs().to_string())
                .arg(MAX_SESSIONS.to_string())
                .arg(&out)
                .env("HERMES_HOME", home)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("python starts");
            (Some(child), out)
        };
        Writers(homes.iter().map(|h| spawn(h.path())).collect())
    }

    /// Waits (at most `within`) for writer `i`; its session ids and the seconds it spent
    /// writing.
    fn finish(&mut self, i: usize, within: Duration) -> (Vec<String>, f64) {
        let (slot, out) = &mut self.0[i];
        let start = Instant::now();
        let status = loop {
            if let Some(s) = slot.as_mut().and_then(|c| c.try_wait().expect("writer status")) {
                break s;
            }
            assert!(start.elapsed() < within, "writer {i} did not end within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        if let Some(mut e) = slot.take().and_then(|mut c| c.stderr.take()) {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        assert!(status.success(), "hermes_burst.py failed ({status}):\n{stderr}");
        let v: Value = serde_json::from_slice(&std::fs::read(&*out).expect("writer report")).expect("writer JSON");
        let ids = v["session_ids"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned));
        (ids.collect(), v["seconds"].as_f64().unwrap_or(0.0))
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        for mut c in self.0.iter_mut().filter_map(|(c, _)| c.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A node's outbox figures from its `/health`.
fn outbox(node: &Node) -> Option<Value> {
    node.health().map(|h| h["telemetry"].clone()).filter(|t| t.is_object())
}

/// The 1-minute load average.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map_or_else(|_| "?".into(), |l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
}

/// What one node's outbox numbered, `(first_seq, last_seq)`, once it has tailed every row
/// Hermes wrote, follows no open session and holds nothing unacknowledged; Timmy's ack must
/// then be the last seq, no further.
fn drained(node: &Node, hermes_home: &Path, within: Duration) -> (u64, u64) {
    let max_id = hermes::max_message_id(hermes_home);
    let start = Instant::now();
    loop {
        if let Some(t) = outbox(node) {
            let done =
                t["hermes_message_id"].as_i64() == Some(max_id) && t["buffered"] == 0 && t["hermes_open_sessions"] == 0;
            if done {
                let (first, next) =
                    (t["first_seq"].as_u64().expect("first_seq"), t["next_seq"].as_u64().expect("next_seq"));
                assert_eq!(t["dropped"], 0, "{} dropped events: {t}", node.house);
                assert_eq!(
                    t["acked_through"].as_u64(),
                    Some(next - 1),
                    "{}: the sink acked exactly what was sent: {t}",
                    node.house
                );
                return (first, next - 1);
            }
            assert!(start.elapsed() < within, "{} did not drain within {within:?}: {t}", node.house);
        } else {
            assert!(start.elapsed() < within, "{} does not answer /health", node.house);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One node's events in Timmy's `telemetry.db`, by seq.
fn stored(sink_db: &Path, node: &str) -> BTreeMap<u64, TelemetryEvent> {
    let c =
        rusqlite::Connection::open_with_flags(sink_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("sink db");
    c.busy_timeout(Duration::from_secs(5)).expect("busy");
    let mut q = c.prepare("SELECT seq, event FROM events WHERE node = ?1").expect("query");
    let rows = q
        .query_map([node], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .expect("rows")
        .map(|r| r.expect("row"));
    rows.map(|(seq, blob)| (u64::try_from(seq).expect("seq"), TelemetryEvent::decode(&blob[..]).expect("event")))
        .collect()
}

/// Checks one node's stored events against what it sent: every seq of `first..=last` once and
/// no other, no event content twice (a resend under a new seq), and every session the writer
/// wrote opened, ended and with its four tool events, once each. Returns the event count.
fn check_node(
    node: &str,
    events: &BTreeMap<u64, TelemetryEvent>,
    (first, last): (u64, u64),
    sessions: &[String],
) -> usize {
    let sent = last + 1 - first;
    let seqs: Vec<u64> = events.keys().copied().collect();
    assert_eq!(seqs.first().copied(), Some(first), "{node}: the first seq sent is stored");
    assert_eq!(seqs.last().copied(), Some(last), "{node}: the last seq sent is stored, none beyond");
    assert_eq!(events.len() as u64, sent, "{node}: stored == sent ({} stored, {sent} sent)", events.len());
    let mut contents = BTreeSet::new();
    let (mut opened, mut ended, mut tools) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for e in events.values() {
        assert_eq!(e.node, node);
        let kind = e.kind.clone().expect("a kind");
        let copy = TelemetryEvent { kind: Some(kind.clone()), ..Default::default() };
        assert!(contents.insert(copy.encode_to_vec()), "{node}: seq {} repeats an earlier event: {kind:?}", e.seq);
        match kind {
            Kind::HermesSession(s) => *opened.entry(s.session_id).or_insert(0) += 1,
            Kind::HermesSessionEnd(s) => *ended.entry(s.session_id).or_insert(0) += 1,
            Kind::HermesToolCall(t) => *tools.entry(t.session_id).or_insert(0) += 1,
            _ => {}
        }
    }
    let written: BTreeSet<&String> = sessions.iter().collect();
    assert_eq!(written.len(), sessions.len(), "{node}: the writer's session ids are distinct");
    assert!(opened.keys().eq(written.iter().copied()), "{node}: the sessions stored are the sessions written");
    assert!(opened.values().all(|n| *n == 1), "{node}: every session seen once");
    assert!(
        ended.keys().eq(written.iter().copied()) && ended.values().all(|n| *n == 1),
        "{node}: every session ended once"
    );
    assert!(tools.keys().eq(written.iter().copied()), "{node}: every session has its tool events");
    assert!(tools.values().all(|n| *n == 4), "{node}: two calls and two results per session");
    events.len()
}

/// Proves no event is lost or stored twice when Timmy's sink is SIGKILLed every 2 s for a
/// minute while three nodes' real Hermes writers produce ≥ 1,000 events/s together: per node,
/// Timmy stores every seq its outbox numbered, once, no content twice, every session whole.
#[test]
fn the_sink_killed_every_2_s_for_a_minute_stores_exactly_what_three_nodes_sent() {
    let homes: Vec<tempfile::TempDir> = PRODUCERS.iter().map(|_| hermes::home()).collect();
    let paths: BTreeMap<&str, String> =
        PRODUCERS.iter().zip(&homes).map(|(h, d)| (*h, d.path().display().to_string())).collect();
    let extra = move |h: &str| match paths.get(h) {
        None => "roles: [worker, telemetry]\n".to_owned(),
        Some(home) => format!(
            "roles: [worker, telemetry]\ntelemetry: {{hermes_home: \"{home}\", poll_ms: 50, backoff_min_ms: 20, backoff_max_ms: 200}}\n"
        ),
    };
    let mut houses = vec!["timmy"];
    houses.extend(PRODUCERS);
    let mut fleet = Fleet::configure(&houses, &extra);
    for h in &houses {
        fleet.node(h).start();
    }
    let sink_db = fleet.nodes["timmy"].home.join("telemetry.db");
    let load_before = load();

    let started = Instant::now();
    let mut writers = Writers::start(&homes);
    let mut kills = 0u32;
    let mut restart_ms = Vec::new();
    for k in 1..=(RUN.as_millis() / KILL_EVERY.as_millis()) as u32 {
        let at = KILL_EVERY * k;
        std::thread::sleep(at.saturating_sub(started.elapsed()));
        let t = Instant::now();
        fleet.node("timmy").kill();
        fleet.node("timmy").start();
        kills += 1;
        restart_ms.push(t.elapsed().as_millis());
    }
    let load_during = load();
    let mut sessions = BTreeMap::new();
    let mut write_secs = 0f64;
    for (i, h) in PRODUCERS.iter().enumerate() {
        let (ids, secs) = writers.finish(i, Duration::from_secs(60));
        write_secs = write_secs.max(secs);
        sessions.insert(*h, ids);
    }
    let produced_in = started.elapsed();

    let mut total = 0usize;
    let mut figures = Vec::new();
    for (i, h) in PRODUCERS.iter().enumerate() {
        let span = drained(&fleet.nodes[*h], homes[i].path(), Duration::from_secs(120));
        let node = format!("{h}-node");
        let n = check_node(&node, &stored(&sink_db, &node), span, &sessions[h]);
        figures.push(format!("{node}: {} sessions, {n} events sent = stored", sessions[h].len()));
        total += n;
    }
    let drained_in = started.elapsed();
    // Each kill ends the producers' live streams; each opens a new one when the sink is back
    // (three at the start, at most three per kill; a producer still backing off when the next
    // kill comes skips one).
    let opens = fleet.nodes["timmy"].log().matches("telemetry stream open").count();
    let rate = total as f64 / write_secs;
    eprintln!(
        "kill loop: {kills} SIGKILLs of timmy's sink in {produced_in:?} (restart to /health: max {} ms); \
         {total} events, {rate:.0} events/s produced over {write_secs:.1} s, all stored once after {drained_in:?} \
         ({:.0} events/s end to end); \
         {opens} streams opened at the sink; load before {load_before}, during {load_during}\n  {}",
        restart_ms.iter().max().copied().unwrap_or(0),
        total as f64 / drained_in.as_secs_f64(),
        figures.join("\n  ")
    );
    assert!(opens as u32 >= 2 * kills, "the kills cut live streams: only {opens} opened in {kills} restarts");
    assert!(rate >= MIN_RATE, "the producers reached {rate:.0} events/s, below {MIN_RATE}");
}
