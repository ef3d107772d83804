//! `uni-wizard test` cold start: a new process per call, on the embedded defaults (no config,
//! no daemon), as README command 1 runs it. SYSTEM.md §7 target: <= 20 ms.
//!
//! Each round runs, in turn, `uni-wizard --version` (the baseline: the same binary starting
//! and exiting, nothing else), `test --house timmy --tool system_info` with a home already
//! set up (audit and pattern DBs exist), and the same with a fresh home (both DBs created).
//! Reports medians and p90s of wall time from spawn to exit, and the ratio to the baseline.
//!
//! `cargo build --release --bins && cargo bench -p uni_wizard_tests --bench cli_start -- [ROUNDS]`

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use uni_wizard_tests::bin;

/// Wall time of one run of `uni-wizard args` under `home`, in ms; panics if it fails.
fn run(exe: &Path, home: &Path, args: &[&str]) -> f64 {
    let t = Instant::now();
    let status = Command::new(exe)
        .args(args)
        .env("UNI_WIZARD_HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn uni-wizard");
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(status.success(), "uni-wizard {args:?} failed: {status}");
    ms
}

fn summary(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[(v.len() - 1) * 9 / 10])
}

fn main() {
    let rounds: usize =
        std::env::args().skip(1).find(|a| !a.starts_with("--")).and_then(|a| a.parse().ok()).unwrap_or(100);
    let exe = bin("uni-wizard");
    let warm = tempfile::tempdir().expect("home");
    let test = ["test", "--house", "timmy", "--tool", "system_info"];
    run(&exe, warm.path(), &test);
    let (mut base, mut warm_ms, mut fresh_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        base.push(run(&exe, warm.path(), &["--version"]));
        warm_ms.push(run(&exe, warm.path(), &test));
        let fresh = tempfile::tempdir().expect("home");
        fresh_ms.push(run(&exe, fresh.path(), &test));
    }
    let (b50, b90) = summary(&mut base);
    println!("cli_start ({rounds} rounds): baseline `uni-wizard --version` median {b50:.2} ms, p90 {b90:.2} ms");
    for (name, v) in [("test, home set up", &mut warm_ms), ("test, fresh home", &mut fresh_ms)] {
        let (m, p90) = summary(v);
        let verdict = if m <= 20.0 { "meets" } else { "MISSES" };
        println!(
            "cli_start: {name:<17} median {m:6.2} ms, p90 {p90:6.2} ms, {:.1}x the baseline ({verdict} target <= 20 ms)",
            m / b50
        );
    }
}
