//! Support for the cross-process tests: finding the real binaries and running them.
//!
//! Tests here start the real `uni-wizard` binaries as separate processes. The binaries are
//! built by `cargo test --workspace` (or `scripts/test`); a missing one is a clear failure.
//!
//! - [`etcd`]: a real etcd cluster (1 or 3 members) on loopback, members killed and restarted.
//! - [`fleet`]: real `uni-wizardd` processes for the four houses on loopback.
//! - [`hermes`]: the real Hermes agent's venv and session writer.
//! - [`gitea_server`]: a Gitea API v1 test server that answers as the spec subset says.
//! - [`openapi`]: a validator of requests and responses against that spec subset.
//! - [`target`]: a loopback HTTP target counting the POSTs it receives (effects that must happen once).
//! - [`webhooks`]: Gitea webhook deliveries from the real samples, and a triage fleet.

pub mod etcd;
pub mod fleet;
pub mod gitea_server;
pub mod hermes;
pub mod openapi;
pub mod pki;
pub mod target;
pub mod webhooks;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// The path of a workspace binary next to the running test executable.
///
/// # Panics
/// When the binary has not been built: the message says how to build it.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target profile dir");
    let path = profile_dir.join(name);
    assert!(path.exists(), "{} is not built; run `cargo build --workspace --bins` first", path.display());
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).expect("binary mtime");
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Some(newer) = newest_source(&workspace, built) {
        panic!(
            "{} is older than {}: run `cargo build --workspace --bins` (scripts/test does) so the test runs the code you see",
            path.display(),
            newer.display()
        );
    }
    path
}

/// A Rust source of the library or daemons modified after `than`, if any.
fn newest_source(workspace: &std::path::Path, than: std::time::SystemTime) -> Option<PathBuf> {
    let mut stack = vec![workspace.join("uni_wizard/src"), workspace.join("daemons/src"), workspace.join("proto/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t > than) {
                return Some(path);
            }
        }
    }
    None
}

/// Every `.rs` file below `dir`, sorted.
///
/// # Panics
/// When a directory cannot be read.
pub fn rust_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Whether the tests run under `CI=true`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A component the test needs is missing: under CI=true that fails the test; elsewhere the test
/// says so loudly and returns `true` (scripts/test installs everything).
///
/// # Panics
/// Under CI=true.
pub fn missing(what: &str) -> bool {
    assert!(!in_ci(), "{what} is missing under CI=true: scripts/test installs it");
    eprintln!("SKIPPED: {what} is missing; run scripts/test to install it");
    true
}

/// A `uni-wizard` command with a private, empty state directory.
pub fn cli(home: &std::path::Path) -> Command {
    let mut c = Command::new(bin("uni-wizard"));
    c.env("UNI_WIZARD_HOME", home).env_remove("UNI_WIZARD_ROOTS").env("NO_COLOR", "1");
    c
}

/// Runs a command to completion.
///
/// # Panics
/// When the process cannot be started.
pub fn run(mut c: Command) -> Output {
    c.output().expect("process starts")
}

/// Parses stdout as one JSON document.
///
/// # Panics
/// When stdout is not JSON; the panic shows stdout and stderr.
pub fn json_stdout(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// SHA-256 of bytes as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
