//! Hermes append -> stored at Timmy, on loopback, with real processes.
//!
//! Timmy runs the sink, Allegro the bridge tailing a Hermes home; the real `SessionDB`
//! (`tests/py/hermes_lag_driver.py`) appends one tool-result row at a time. After each append
//! returns, this bench polls Timmy's `telemetry.db` read-only (every 100 µs) until the event's
//! row is visible — committed — and takes that instant as "stored". One event in flight at a
//! time, so each latency is one event's own. Lag is measured from the end of Hermes' append
//! (when a reader can first see the row) and, separately, from its start (Hermes' own commit
//! and fsync included).
//!
//! `cargo build --release --bins && cargo bench -p uni_wizard_tests --bench telemetry_lag -- [EVENTS] [full|normal]`

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use uni_wizard_tests::fleet::Fleet;
use uni_wizard_tests::hermes;

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn pct(sorted: &[i64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let events: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let durability = args.get(1).cloned().unwrap_or_else(|| "full".into());
    let hh = tempfile::tempdir().expect("hermes home");
    let home = hh.path().display().to_string();
    let extra = move |h: &str| match h {
        "timmy" => format!("roles: [worker, telemetry]\ntelemetry: {{durability: {durability}}}\n"),
        _ => format!("roles: [worker, telemetry]\ntelemetry: {{hermes_home: \"{home}\", durability: {durability}}}\n"),
    };
    let mut fleet = Fleet::configure(&["timmy", "allegro"], &extra);
    fleet.node("timmy").start();
    fleet.node("allegro").start();
    let sink_db = fleet.nodes["timmy"].home.join("telemetry.db");

    let mut driver = Command::new(hermes::python())
        .arg(hermes::workspace().join("tests/py/hermes_lag_driver.py"))
        .env("HERMES_HOME", hh.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("driver starts");
    let mut to = driver.stdin.take().expect("stdin");
    let mut from = BufReader::new(driver.stdout.take().expect("stdout"));
    let mut line = String::new();
    from.read_line(&mut line).expect("ready");
    assert_eq!(line.trim(), "ready");

    // The session event comes first; wait for it so that every later event is one append.
    let deadline = Instant::now() + Duration::from_secs(20);
    let conn = loop {
        if let Ok(c) = rusqlite::Connection::open_with_flags(&sink_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            && c.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0)).is_ok_and(|n| n >= 1)
        {
            break c;
        }
        assert!(Instant::now() < deadline, "the session event never reached timmy");
        std::thread::sleep(Duration::from_millis(10));
    };
    let count =
        |c: &rusqlite::Connection| c.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0)).unwrap_or(0);
    let base = count(&conn);
    let warmup = 50;
    let (mut from_end, mut from_start) = (Vec::new(), Vec::new());
    for i in 0..(warmup + events) {
        writeln!(to, "go").expect("driver stdin");
        line.clear();
        from.read_line(&mut line).expect("driver answer");
        let mut parts = line.split_whitespace().map(|p| p.parse::<i64>().expect("µs"));
        let (before, after) = (parts.next().expect("before"), parts.next().expect("after"));
        let want = base + i as i64 + 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        while count(&conn) < want {
            assert!(Instant::now() < deadline, "event {i} did not reach timmy within 10 s");
            std::thread::sleep(Duration::from_micros(100));
        }
        let stored = now_us();
        if i >= warmup {
            from_end.push(stored - after);
            from_start.push(stored - before);
        }
    }
    drop(to);
    let _ = driver.wait();
    from_end.sort_unstable();
    from_start.sort_unstable();
    let durability = args.get(1).map_or("full", String::as_str);
    println!("telemetry lag, {events} events (after {warmup} warm-up), durability {durability}");
    for (name, v) in [("append end -> stored", &from_end), ("append start -> stored", &from_start)] {
        println!(
            "  {name:<24} p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
            pct(v, 0.50),
            pct(v, 0.90),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
}
