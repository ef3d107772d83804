//! Sovereign-mode overhead: `file_read` of a 1 KiB file in Sovereign mode, recorded durably in
//! an [`AuditStore`] (WAL, `synchronous=FULL`: one fsync per call), against Simple mode with the
//! default in-memory log.
//!
//! Run: `cargo bench -p uni_wizard --bench sovereign`. A plain timing loop (warm-up, then
//! `ITERS` sequential calls per variant, three rounds, best round kept) prints the mean per call
//! of each variant and the ratio Sovereign / Simple. The store lives in a temp directory, so the
//! fsync cost is that of the temp filesystem; a third variant puts the store on `/dev/shm`
//! (tmpfs, fsync free) to show the cost without the disk.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use uni_wizard::audit::AuditStore;
use uni_wizard::{Config, Harness, House, Mode};

const ITERS: u32 = 500;

fn harness(dir: &Path, mode: Mode, store: Option<Arc<AuditStore>>) -> Harness {
    let config = Config { file_roots: vec![dir.to_path_buf()], ..Config::default() };
    let mut b = Harness::builder().house(House::Timmy).mode(mode).config(config);
    if let Some(s) = store {
        b = b.provenance(s);
    }
    b.build().expect("harness")
}

fn mean(rt: &tokio::runtime::Runtime, h: &Harness) -> Duration {
    rt.block_on(async {
        for _ in 0..50 {
            h.execute("file_read", json!({"path": "one_kib.txt"})).await.expect("warm-up");
        }
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let start = Instant::now();
            for _ in 0..ITERS {
                h.execute("file_read", json!({"path": "one_kib.txt"})).await.expect("read");
            }
            best = best.min(start.elapsed() / ITERS);
        }
        best
    })
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("one_kib.txt"), "x".repeat(1024)).expect("write");
    let store = Arc::new(AuditStore::open(dir.path().join("audit.db")).expect("store"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let simple = mean(&rt, &harness(dir.path(), Mode::Simple, None));
    let sovereign = mean(&rt, &harness(dir.path(), Mode::Sovereign, Some(store.clone())));
    // The same with the store on tmpfs, where fsync costs nothing: what SQLite, the hashing and
    // the full executor cost without the disk.
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    let in_memory_fs = shm.as_ref().map(|d| {
        let s = Arc::new(AuditStore::open(d.path().join("audit.db")).expect("tmpfs store"));
        mean(&rt, &harness(dir.path(), Mode::Sovereign, Some(s)))
    });
    let ratio = sovereign.as_secs_f64() / simple.as_secs_f64();
    println!("file_read 1 KiB, mean per call over {ITERS} calls (best of 3 rounds):");
    println!("  simple    (in-memory log)        {:>10.1} us", simple.as_secs_f64() * 1e6);
    println!("  sovereign (audit.db, fsync/call) {:>10.1} us", sovereign.as_secs_f64() * 1e6);
    println!("  ratio sovereign / simple         {ratio:>10.2}x");
    if let Some(t) = in_memory_fs {
        println!("  sovereign, audit.db on tmpfs     {:>10.1} us", t.as_secs_f64() * 1e6);
        println!("  ratio (tmpfs) / simple           {:>10.2}x", t.as_secs_f64() / simple.as_secs_f64());
    }
    let v = store.verify().expect("verify");
    assert!(v.ok(), "the chain written by the bench verifies");
    println!("  audit records written and verified: {}", v.records);
}
