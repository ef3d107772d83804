//! `Harness::execute` against the bare tool function, on `file_read` of a 1 KiB file.
//!
//! Run: `cargo bench -p uni_wizard --bench harness`. Criterion measures each variant; at the
//! end the bench reads criterion's own estimates back and prints each mode's ratio to the bare
//! function (targets, SYSTEM.md §7: Simple <= 1.10x, Intelligent <= 1.30x). The interleaved
//! part also prints four reference floors (see [`interleaved`] and docs/BENCHMARKS.md).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use serde_json::json;
use uni_wizard::executor::{Call, CallSpec, Executor, ExecutorConfig};
use uni_wizard::hash::sha256_json;
use uni_wizard::tools::file::Roots;
use uni_wizard::tools::file::read::{self as file_read, FileRead};
use uni_wizard::tools::{ToolContext, ToolEnv, TypedTool};
use uni_wizard::{Config, Harness, House, Mode};

const GROUP: &str = "file_read_1KiB";

/// A harness on `dir`; Intelligent mode with the pattern DB enabled (`dir/patterns.db`), so the
/// recorder is in the measured path.
fn harness(dir: &Path, mode: Mode) -> Harness {
    let mut config = Config { file_roots: vec![dir.to_path_buf()], ..Config::default() };
    if mode == Mode::Intelligent {
        config.intelligence.enabled = true;
        config.intelligence.db_path = Some(dir.join("patterns.db"));
    }
    Harness::builder().house(House::Timmy).mode(mode).config(config).build().expect("harness")
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("one_kib.txt"), "x".repeat(1024)).expect("write");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let env = Arc::new(ToolEnv::new(Roots::new(&[dir.path()]).expect("roots")));
    let ctx = ToolContext::new(env, House::Timmy, false, "bench");
    let simple = harness(dir.path(), Mode::Simple);
    let intelligent = harness(dir.path(), Mode::Intelligent);

    let mut g = c.benchmark_group(GROUP);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| async {
            let input = file_read::Input { path: "one_kib.txt".into(), max_bytes: file_read::DEFAULT_MAX_BYTES };
            FileRead::run(&ctx, input).await.expect("read")
        })
    });
    g.bench_function("simple", |b| {
        b.to_async(&rt)
            .iter(|| async { simple.execute("file_read", json!({"path": "one_kib.txt"})).await.expect("read") })
    });
    g.bench_function("intelligent", |b| {
        b.to_async(&rt)
            .iter(|| async { intelligent.execute("file_read", json!({"path": "one_kib.txt"})).await.expect("read") })
    });
    g.finish();
}

/// Criterion's point estimate of the mean, in nanoseconds, for one benchmark of this group.
fn mean_ns(name: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), Into::into);
    let text = std::fs::read_to_string(dir.join("criterion").join(GROUP).join(name).join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn report() {
    let Some(bare) = mean_ns("bare") else {
        eprintln!("no estimates found for {GROUP}/bare (run without a filter)");
        return;
    };
    println!("\n{GROUP}: bare {:.2} µs", bare / 1000.0);
    for (name, target) in [("simple", 1.10), ("intelligent", 1.30)] {
        if let Some(t) = mean_ns(name) {
            let ratio = t / bare;
            let verdict = if ratio <= target { "meets" } else { "MISSES" };
            println!("{GROUP}: {name:<11} {:.2} µs  ratio {ratio:.3}x  ({verdict} target <= {target:.2}x)", t / 1000.0);
        }
    }
}

/// Busy-waits `us` microseconds without touching memory or the scheduler.
fn spin(us: u64) {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
}

/// Interleaved rounds: `batch` calls of each variant in turn, so load that drifts during the
/// run (other builds on a 2-core machine) hits every variant alike. Reports the median of the
/// per-round ratios to the bare call, the figure the targets are judged on.
///
/// Four reference variants show what this machine charges for work any implementation must
/// do, and for *any* work between two blocking-pool hand-offs, so the harness's figures can be
/// read against a floor:
/// * `floor_adapter`: the tool through its JSON adapter only (arguments deserialised, the output
///   turned into a `Value`), which any JSON-level harness call has to pay;
/// * `floor_exec`: what SYSTEM.md's Simple row names and nothing more (contract validation,
///   the timeout, the tool through its JSON adapter); no policy, no provenance record;
/// * `floor_hash`: the bare call followed by the SHA-256 of its output, the result hash every
///   provenance record carries (SYSTEM.md §2), and nothing else;
/// * `bare_spin2`: the bare call followed by a 2 µs busy-wait (no memory, no syscalls).
fn interleaved() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("one_kib.txt"), "x".repeat(1024)).expect("write");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let env = Arc::new(ToolEnv::new(Roots::new(&[dir.path()]).expect("roots")));
    let ctx = ToolContext::new(env.clone(), House::Timmy, false, "bench");
    let simple = harness(dir.path(), Mode::Simple);
    let intelligent = harness(dir.path(), Mode::Intelligent);
    let tool = simple.registry().get("file_read").expect("file_read").clone();
    let executor = Executor::new(&ExecutorConfig::default());
    let floor = || async {
        let args = json!({"path": "one_kib.txt"});
        tool.contract().validate_input(&args).expect("valid");
        let call = Call::new(CallSpec {
            tool: tool.clone(),
            ctx: ToolContext::new(env.clone(), House::Timmy, false, "bench"),
            args,
            target: "one_kib.txt".to_owned(),
            timeout: Duration::from_secs(10),
            idempotency_key: None,
            max_retries: None,
        });
        executor.run_simple(call).await.expect("read")
    };
    let bare = || async {
        let input = file_read::Input { path: "one_kib.txt".into(), max_bytes: file_read::DEFAULT_MAX_BYTES };
        FileRead::run(&ctx, input).await.expect("read")
    };
    let (rounds, batch) = (200, 200);
    let names = ["simple", "intelligent", "floor_adapter", "floor_exec", "floor_hash", "bare_spin2"];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut bare_ns = Vec::new();
    rt.block_on(async {
        for _ in 0..rounds {
            let t = std::time::Instant::now();
            for _ in 0..batch {
                std::hint::black_box(bare().await);
            }
            let bare_round = t.elapsed().as_nanos() as f64;
            bare_ns.push(bare_round / batch as f64);
            for (i, ratio) in ratios.iter_mut().enumerate() {
                let t = std::time::Instant::now();
                for _ in 0..batch {
                    match i {
                        0 => drop(std::hint::black_box(
                            simple.execute("file_read", json!({"path": "one_kib.txt"})).await.expect("read"),
                        )),
                        1 => drop(std::hint::black_box(
                            intelligent.execute("file_read", json!({"path": "one_kib.txt"})).await.expect("read"),
                        )),
                        2 => drop(std::hint::black_box(
                            tool.call(&ctx, &json!({"path": "one_kib.txt"})).await.expect("read"),
                        )),
                        3 => drop(std::hint::black_box(floor().await)),
                        4 => {
                            let out = bare().await;
                            std::hint::black_box(sha256_json(&out));
                            drop(std::hint::black_box(out));
                        }
                        _ => {
                            std::hint::black_box(bare().await);
                            spin(2);
                        }
                    }
                }
                ratio.push(t.elapsed().as_nanos() as f64 / bare_round);
            }
        }
    });
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\n{GROUP} interleaved ({rounds} rounds x {batch} calls): bare median {:.2} µs",
        median(&mut bare_ns) / 1000.0
    );
    for (name, v) in names.iter().zip(ratios.iter_mut()) {
        let r = median(v);
        match *name {
            "simple" | "intelligent" => {
                let target = if *name == "simple" { 1.10 } else { 1.30 };
                let verdict = if r <= target { "meets" } else { "MISSES" };
                println!("{GROUP} interleaved: {name:<11} median ratio {r:.3}x  ({verdict} target <= {target:.2}x)");
            }
            _ => println!(
                "{GROUP} interleaved: {name:<11} median ratio {r:.3}x  (reference floor, see docs/BENCHMARKS.md)"
            ),
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
    interleaved();
}
