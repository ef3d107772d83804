//! Instructions per `Harness::execute`, for callgrind: the harness around an in-memory
//! stand-in for `file_read` (same contract and output shape, 1 KiB of content, no I/O, since
//! valgrind does not implement the `openat2` the real tool confines its paths with), on a
//! current-thread runtime. It counts nothing itself; callgrind counts, and the difference of
//! two call counts cancels start-up:
//!
//! ```sh
//! cargo bench -p uni_wizard --bench harness_instructions --no-run
//! B=$(ls -t target/release/deps/harness_instructions-* | grep -v '\.d$' | head -1)
//! for m in simple intelligent sha bare; do for n in 2000 12000; do
//!   echo "$m $n: $(valgrind --tool=callgrind --callgrind-out-file=/dev/null $B $m $n 2>&1 | grep Collected)"
//! done; done
//! ```
//!
//! Modes (the first argument; the second is the number of calls, default 1000):
//! - `simple`, `intelligent`: that many `Harness::execute` calls in that mode (`intelligent`
//!   with the pattern DB, its writer thread's work included). `intelligent` waits for the
//!   writer once per `batch_size` calls (valgrind runs one thread at a time, and a writer
//!   starved of turns would fill its queue and degrade calls to Simple), prints the rows
//!   recorded, and fails unless every call was recorded as Intelligent;
//! - `sha`: that many `uni_wizard::hash::sha256_value` of the same output `Value` a call
//!   returns, which is the hash provenance computes once per call for `result_sha256`;
//! - `bare`: that many runs of the stand-in's `run` + `into_value` alone, no harness.
//!
//! The arithmetic, with `T(mode, n)` the callgrind total ("Collected") of `n` calls:
//! - per call of a mode: `c(mode) = (T(mode, 12000) - T(mode, 2000)) / 10000`;
//! - the harness's own work, "minus the SHA-256 of the output": `c(simple) - c(sha)` (and
//!   `c(intelligent) - c(sha)`), which still contains the tool itself, `c(bare)`.
//!
//! Valgrind hides SHA-NI, so SHA-256 runs in software here (~66k instructions of each call).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;
use uni_wizard::contract::ContractSpec;
use uni_wizard::hash::sha256_value;
use uni_wizard::tools::file::Roots;
use uni_wizard::tools::file::read::{self as file_read, FileRead};
use uni_wizard::tools::{Registry, ToolContext, ToolEnv, TypedTool, arg_str};
use uni_wizard::{Config, Harness, House, Mode};

/// `file_read`'s contract and output, without the file.
struct InMemoryRead;

impl TypedTool for InMemoryRead {
    type Input = file_read::Input;
    type Output = file_read::Output;

    fn spec() -> ContractSpec {
        ContractSpec { name: "in_memory_read", ..FileRead::spec() }
    }

    fn target(args: &serde_json::Value) -> String {
        arg_str(args, "path").to_owned()
    }

    async fn run(_ctx: &ToolContext, input: file_read::Input) -> uni_wizard::Result<file_read::Output> {
        Ok(file_read::Output {
            path: format!("/srv/files/{}", input.path),
            content: "x".repeat(1024),
            encoding: "utf8",
            size: 1024,
            sha256: "0".repeat(64),
            truncated: false,
        })
    }

    fn into_value(output: file_read::Output) -> serde_json::Result<serde_json::Value> {
        FileRead::into_value(output)
    }
}

/// The output `Value` one call of the stand-in returns.
fn output_value() -> serde_json::Value {
    let output = file_read::Output {
        path: "/srv/files/one_kib.txt".into(),
        content: "x".repeat(1024),
        encoding: "utf8",
        size: 1024,
        sha256: "0".repeat(64),
        truncated: false,
    };
    InMemoryRead::into_value(output).expect("output converts")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let what = args.first().map_or("simple", String::as_str);
    let calls: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    match what {
        "sha" => {
            let output = output_value();
            for _ in 0..calls {
                std::hint::black_box(sha256_value(std::hint::black_box(&output)));
            }
        }
        "bare" => {
            let roots = Roots::new(&[dir.path().to_path_buf()]).expect("roots");
            let ctx = ToolContext::new(Arc::new(ToolEnv::new(roots)), House::Timmy, false, "bare");
            rt.block_on(async {
                for _ in 0..calls {
                    let input =
                        file_read::Input { path: "one_kib.txt".into(), max_bytes: file_read::DEFAULT_MAX_BYTES };
                    let output = InMemoryRead::run(&ctx, input).await.expect("run");
                    std::hint::black_box(InMemoryRead::into_value(output).expect("convert"));
                }
            });
        }
        _ => {
            let mode = if what == "intelligent" { Mode::Intelligent } else { Mode::Simple };
            let mut registry = Registry::builtin().expect("registry");
            registry.add_typed::<InMemoryRead>().expect("stand-in contract");
            let mut config = Config { file_roots: vec![dir.path().to_path_buf()], ..Config::default() };
            if mode == Mode::Intelligent {
                config.intelligence.enabled = true;
                config.intelligence.db_path = Some(dir.path().join("patterns.db"));
            }
            let harness = Harness::builder()
                .house(House::Timmy)
                .mode(mode)
                .config(config)
                .registry(registry)
                .build()
                .expect("harness");
            // Valgrind runs one thread at a time and the main thread never blocks, so the
            // pattern writer would get too few turns, its queue would fill, and calls would
            // degrade to Simple. Waiting for the writer once per `batch_size` calls gives it a
            // turn: it commits every `batch_size` rows, as it does in a daemon under load.
            let batch = harness.intelligence().map_or(usize::MAX, |i| i.config().batch_size);
            rt.block_on(async {
                for call in 1..=calls {
                    std::hint::black_box(
                        harness.execute("in_memory_read", json!({"path": "one_kib.txt"})).await.expect("call"),
                    );
                    if call % batch == 0
                        && let Some(intelligence) = harness.intelligence()
                    {
                        intelligence.flush();
                    }
                }
            });
            if let Some(intelligence) = harness.intelligence() {
                // A row the writer's queue had no room for is dropped and its call runs as
                // Simple: the count would then be a mix of the two modes. Refuse it.
                let healthy = intelligence.flush();
                let stats = intelligence.stats();
                let recorded = stats.recorded.load(Ordering::Relaxed);
                let dropped = stats.dropped.load(Ordering::Relaxed);
                let degraded = stats.degraded_calls.load(Ordering::Relaxed);
                println!(
                    "harness_instructions: pattern rows recorded {recorded}, dropped {dropped}, degraded calls {degraded}"
                );
                assert!(
                    healthy && dropped == 0 && degraded == 0 && recorded == calls as u64,
                    "the pattern writer fell behind: this count is not an Intelligent one"
                );
            }
        }
    }
    println!("harness_instructions: {calls} {what} calls done (count them with callgrind, see the source)");
}
