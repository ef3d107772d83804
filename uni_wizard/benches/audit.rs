//! Durable audit records per second with 1, 8 and 64 concurrent appenders, against this disk's
//! own fsync rate measured in the same run.
//!
//! Run: `cargo bench -p uni_wizard --bench audit [-- SECONDS_PER_CASE]` (default 3 s).
//!
//! Each appender is an OS thread calling the blocking `AuditStore::append` in a loop, so the
//! same bench runs unchanged on the store before group commit (one transaction and one fsync
//! per record under a mutex) and after it. The store is a real SQLite file (WAL,
//! `synchronous=FULL`) in a temporary directory under `target/` (the project's disk, not a
//! tmpfs). The baseline is a 4 KiB `write` + `fdatasync` loop on a file beside it: the ceiling
//! of one-fsync-per-record logging. `ratio` is records/s over fsyncs/s; above 1 means records
//! share fsyncs. Target (SYSTEM.md §8): at least 5,000 durable records/s with 64 appenders.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uni_wizard::audit::AuditStore;
use uni_wizard::provenance::{ProvenanceLog, Record};
use uni_wizard::{House, Mode};

fn record(id: String) -> Record {
    Record {
        id,
        seq: 0,
        parent_id: None,
        session: "bench".into(),
        house: House::Allegro,
        mode: Mode::Sovereign,
        node: "bench-node".into(),
        tool: "file_read".into(),
        target: "notes.md".into(),
        read_only: true,
        dry_run: false,
        ok: true,
        error_code: None,
        args_sha256: "ab".repeat(32),
        result_sha256: Some("cd".repeat(32)),
        approvals: Vec::new(),
        started_ms: 1_700_000_000_000,
        ended_ms: 1_700_000_000_001,
        duration_us: 420,
    }
}

/// 4 KiB write + fdatasync per iteration for `secs`: fsyncs per second.
fn fsync_rate(dir: &std::path::Path, secs: f64) -> f64 {
    let mut f = std::fs::File::create(dir.join("fsync.probe")).expect("probe file");
    let block = [7u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        f.write_all(&block).expect("write");
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `appenders` threads appending for `secs`: durable records per second and commits used.
fn append_rate(dir: &std::path::Path, appenders: usize, secs: f64) -> (f64, u64, Option<u64>) {
    let db = dir.join(format!("audit-{appenders}.db"));
    let store = Arc::new(AuditStore::open(&db).expect("store"));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..appenders)
        .map(|t| {
            let (store, stop, done) = (store.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    store.append(record(format!("t{t}-{i}"))).expect("append");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("appender");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    assert!(store.verify().expect("verify").ok(), "the chain holds");
    (n as f64 / elapsed, n, Some(store.commits()))
}

fn main() {
    let secs: f64 = std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-audit");
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("tempdir");
    println!("audit store, {secs} s per case, in {}", dir.path().display());
    // Interleaved: the disk baseline before and after each case, so drift shows.
    for appenders in [1usize, 8, 64] {
        let before = fsync_rate(dir.path(), secs / 2.0);
        let (rate, records, commits) = append_rate(dir.path(), appenders, secs);
        let after = fsync_rate(dir.path(), secs / 2.0);
        let fsyncs = (before + after) / 2.0;
        let per_commit =
            commits.map_or(String::new(), |c| format!(", {:.1} records/commit", records as f64 / c as f64));
        println!(
            "appenders {appenders:>2}: {rate:>8.0} records/s  | disk {fsyncs:>6.0} fsyncs/s (4 KiB write + fdatasync)  | ratio {:.2}x{per_commit}",
            rate / fsyncs
        );
    }
}
