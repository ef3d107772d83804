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
//! Both daemons run with their stage marks on (`uw_telemetry_lag=debug`, see
//! `uni_wizard_daemons::telemetry::LAG_TARGET`); from them the bench prints, per event, where
//! the time went: append end -> tailer read -> outbox commit -> handed to the stream -> sink
//! received -> sink commit -> seen stored. Around the run it measures the disk's own 4 KiB
//! write + fdatasync on the same filesystem, so every figure comes with the disk's.
//!
//! `cargo build --release --bins && cargo bench -p uni_wizard_tests --bench telemetry_lag -- [EVENTS] [full|normal]`

use std::collections::HashMap;
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

/// p50 and p99 (ms) of `rounds` 4 KiB write + fdatasync rounds on a file in `dir`.
fn disk_fsync(dir: &std::path::Path, rounds: usize) -> (f64, f64) {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    let block = [7u8; 4096];
    let mut v: Vec<i64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&block).expect("write");
            f.sync_data().expect("fdatasync");
            t.elapsed().as_micros() as i64
        })
        .collect();
    drop(f);
    let _ = std::fs::remove_file(&path);
    v.sort_unstable();
    (pct(&v, 0.50), pct(&v, 0.99))
}

/// The `key=value` fields of a stage mark line (ANSI colours stripped), or `None`.
fn mark(line: &str) -> Option<HashMap<String, String>> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let (_, rest) = plain.split_once("uw_telemetry_lag:")?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect(),
    )
}

fn field(m: &HashMap<String, String>, k: &str) -> i64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or(-1)
}

/// Per-stage times (µs) of each event: `(after_us, message_id, stored_us)` joined with the
/// stage marks in Allegro's and Timmy's logs. Events missing a mark are left out.
fn stages(events: &[(i64, i64, i64)], allegro: &str, timmy: &str) -> Vec<[i64; 6]> {
    // Hermes message id -> (read, outbox commit, last seq): a commit belongs to the read before it.
    let (mut by_mid, mut sent, mut recv, mut commit) = (HashMap::new(), HashMap::new(), HashMap::new(), HashMap::new());
    let mut last_read = None;
    for m in allegro.lines().filter_map(mark) {
        match m.get("stage").map(String::as_str) {
            Some("read") => last_read = Some((field(&m, "message_id"), field(&m, "t_us"))),
            Some("outbox_commit") => {
                if let Some((mid, t)) = last_read.take() {
                    by_mid.insert(mid, (t, field(&m, "t_us"), field(&m, "last_seq")));
                }
            }
            Some("sent") => {
                sent.insert(field(&m, "seq"), field(&m, "t_us"));
            }
            _ => {}
        }
    }
    for m in timmy.lines().filter_map(mark) {
        let map = match m.get("stage").map(String::as_str) {
            Some("sink_received") => &mut recv,
            Some("sink_commit") => &mut commit,
            _ => continue,
        };
        for seq in field(&m, "first_seq")..=field(&m, "last_seq") {
            map.entry(seq).or_insert(field(&m, "t_us"));
        }
    }
    events
        .iter()
        .filter_map(|&(after, mid, stored)| {
            let &(read, outbox, seq) = by_mid.get(&mid)?;
            let (s, r, c) = (sent.get(&seq)?, recv.get(&seq)?, commit.get(&seq)?);
            Some([read - after, outbox - read, s - outbox, r - s, c - r, stored - c])
        })
        .collect()
}

/// CPU time (user + system, ms) process `pid` has used, from `/proc/<pid>/stat` (USER_HZ 100).
fn cpu_ms(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command (which may hold spaces) start after its closing ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<i64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    f.get(11).zip(f.get(12)).map_or(0, |(u, s)| (u + s) * 10)
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
    for node in fleet.nodes.values_mut() {
        node.rust_log = "info,uw_telemetry_lag=debug".into();
    }
    let disk_before = disk_fsync(hh.path(), 2000);
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
    let (mut from_end, mut from_start, mut joined) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..(warmup + events) {
        writeln!(to, "go").expect("driver stdin");
        line.clear();
        from.read_line(&mut line).expect("driver answer");
        let mut parts = line.split_whitespace().map(|p| p.parse::<i64>().expect("µs"));
        let (before, after) = (parts.next().expect("before"), parts.next().expect("after"));
        let message_id = parts.next().expect("message id");
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
            joined.push((after, message_id, stored));
        }
    }
    drop(to);
    let _ = driver.wait();
    let disk_after = disk_fsync(hh.path(), 2000);
    // `LAG_IDLE_SECS=30`: the CPU both daemons use while Hermes writes nothing.
    let idle_secs: u64 = std::env::var("LAG_IDLE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let idle: Vec<(String, i64)> = if idle_secs > 0 {
        std::thread::sleep(Duration::from_secs(1));
        let pids: Vec<(String, u32)> =
            fleet.nodes.iter().filter_map(|(h, n)| n.pid().map(|p| (h.clone(), p))).collect();
        let before: Vec<i64> = pids.iter().map(|(_, p)| cpu_ms(*p)).collect();
        std::thread::sleep(Duration::from_secs(idle_secs));
        pids.iter().zip(before).map(|((h, p), b)| (h.clone(), cpu_ms(*p) - b)).collect()
    } else {
        Vec::new()
    };
    let per_stage = stages(&joined, &fleet.nodes["allegro"].log(), &fleet.nodes["timmy"].log());
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
    let names = [
        "append end -> tailer read",
        "read -> outbox commit",
        "outbox commit -> sent",
        "sent -> sink received",
        "sink received -> commit",
        "sink commit -> seen",
    ];
    println!("  per stage, {} of {} events joined with the stage marks:", per_stage.len(), joined.len());
    for (i, name) in names.iter().enumerate() {
        let mut v: Vec<i64> = per_stage.iter().map(|s| s[i]).collect();
        if v.is_empty() {
            continue;
        }
        v.sort_unstable();
        println!("    {name:<27} p50 {:>6.2} ms  p99 {:>6.2} ms", pct(&v, 0.50), pct(&v, 0.99));
    }
    for (house, ms) in &idle {
        println!("  idle {idle_secs} s, {house}: {ms} ms CPU ({:.2}% of a core)", *ms as f64 / (idle_secs * 10) as f64);
    }
    for (when, (p50, p99)) in [("before", disk_before), ("after", disk_after)] {
        println!("  disk, {when} the run: 4 KiB write + fdatasync p50 {p50:.2} ms  p99 {p99:.2} ms");
    }
}
