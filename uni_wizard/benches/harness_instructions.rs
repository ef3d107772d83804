//! Instructions per `Harness::execute`, for callgrind: the harness around an in-memory
//! stand-in for `file_read` (same contract and output shape, 1 KiB of content, no I/O, since
//! valgrind does not implement the `openat2` the real tool confines its paths with), on a
//! current-thread runtime. It counts nothing itself; callgrind counts, and the difference of
//! two call counts cancels start-up:
//!
//! ```sh
//! cargo bench -p uni_wizard --bench harness_instructions --no-run
//! B=$(ls -t target/release/deps/harness_instructions-* | grep -v '\.d$' | head -1)
//! for n in 2000 12000; do valgrind --tool=callgrind --callgrind-out-file=/dev/null $B simple $n 2>&1 | grep Collected; done
//! ```
//!
//! Per call: (second total - first total) / 10000. `intelligent` instead of `simple` runs
//! Intelligent mode with the pattern DB (its writer thread's work included). Valgrind hides
//! SHA-NI, so SHA-256 runs in software here (~66k instructions of each call).

use serde_json::json;
use uni_wizard::tools::file_read::{self, FileRead};
use uni_wizard::tools::{ContractSpec, Registry, ToolContext, TypedTool, arg_str};
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let mode = if args.first().map(String::as_str) == Some("intelligent") { Mode::Intelligent } else { Mode::Simple };
    let calls: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut registry = Registry::builtin().expect("registry");
    registry.add_typed::<InMemoryRead>().expect("stand-in contract");
    let mut config = Config { file_roots: vec![dir.path().to_path_buf()], ..Config::default() };
    if mode == Mode::Intelligent {
        config.intelligence.enabled = true;
        config.intelligence.db_path = Some(dir.path().join("patterns.db"));
    }
    let harness =
        Harness::builder().house(House::Timmy).mode(mode).config(config).registry(registry).build().expect("harness");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        for _ in 0..calls {
            std::hint::black_box(
                harness.execute("in_memory_read", json!({"path": "one_kib.txt"})).await.expect("call"),
            );
        }
    });
    println!("harness_instructions: {calls} {mode} calls done (count them with callgrind, see the source)");
}
