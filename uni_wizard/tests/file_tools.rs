//! File tools against hostile files (issue 15, defects 2-4), through the real `Harness` on
//! real files: setuid bits, FIFOs and hard links out of a root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use uni_wizard::{Config, Error, ErrorCode, Harness, House, Mode};

fn timmy_in(dir: &Path, allow_hard_links: bool) -> Harness {
    let config = Config { file_roots: vec![dir.to_path_buf()], allow_hard_links, ..Config::default() };
    Harness::builder().house(House::Timmy).mode(Mode::Simple).config(config).build().expect("harness builds")
}

/// Runs a call, bounded so that a tool that blocks fails the test instead of hanging it.
async fn run(h: &Harness, tool: &str, args: Value) -> Result<Value, Error> {
    tokio::time::timeout(Duration::from_secs(20), h.execute(tool, args))
        .await
        .unwrap_or_else(|_| panic!("{tool} blocked for 20 s"))
        .map(|o| o.output)
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo").arg(path).status().expect("run mkfifo").success();
    assert!(ok, "mkfifo {}", path.display());
}

/// Proves `file_write` never carries setuid, setgid or sticky bits onto the replacement: a
/// 06755 file (owned by another user when the test runs as root) comes back 0755 with the new
/// content, and its permission bits are kept.
#[tokio::test]
async fn file_write_clears_setuid_setgid_and_sticky() {
    let d = tempfile::tempdir().expect("tempdir");
    let f = d.path().join("tool");
    std::fs::write(&f, "#!old").expect("seed");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o7755)).expect("chmod");
    if rustix::process::geteuid().is_root() {
        // Another user's setuid file, as in the report.
        std::os::unix::fs::chown(&f, Some(65534), Some(65534)).expect("chown to nobody");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o7755)).expect("chmod again");
    }
    assert_eq!(std::fs::metadata(&f).expect("stat").mode() & 0o7777, 0o7755, "the seed has the bits");
    let h = timmy_in(d.path(), false);
    run(&h, "file_write", json!({"path": "tool", "content": "new"})).await.expect("write");
    let meta = std::fs::metadata(&f).expect("stat");
    assert_eq!(meta.mode() & 0o7777, 0o755, "mode after the write: {:o}", meta.mode());
    assert_eq!(std::fs::read_to_string(&f).expect("read"), "new");
}

/// Proves `file_read` of a FIFO is refused at once (E3003, "not a regular file") instead of
/// blocking in `open()` until its timeout, and `file_search` over a tree holding one finishes.
#[tokio::test]
async fn a_fifo_is_refused_without_blocking() {
    let d = tempfile::tempdir().expect("tempdir");
    mkfifo(&d.path().join("pipe"));
    std::fs::write(d.path().join("notes.txt"), "needle\n").expect("seed");
    let h = timmy_in(d.path(), false);
    let e = run(&h, "file_read", json!({"path": "pipe"})).await.expect_err("refused");
    assert_eq!(e.code, ErrorCode::ToolFailed, "{e}");
    assert!(e.message.contains("not a regular file"), "{e}");
    let found = run(&h, "file_search", json!({"query": "needle"})).await.expect("search");
    assert_eq!(found["matches"].as_array().map(Vec::len), Some(1), "{found}");
}

/// Proves `file_write` onto a symlink that leads to a FIFO (beside it or up a directory) is
/// refused at once as a symlink, dry run or not, instead of blocking in `open()` on the FIFO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_write_through_a_symlink_to_a_fifo_does_not_block() {
    let d = tempfile::tempdir().expect("tempdir");
    let pipe = d.path().join("pipe");
    mkfifo(&pipe);
    std::fs::create_dir(d.path().join("sub")).expect("mkdir");
    std::os::unix::fs::symlink("pipe", d.path().join("link")).expect("symlink");
    std::os::unix::fs::symlink("../pipe", d.path().join("sub/rel")).expect("symlink");
    let h = timmy_in(d.path(), false);
    for path in ["link", "sub/rel"] {
        for dry_run in [false, true] {
            let mut req = uni_wizard::Request::new("file_write", json!({"path": path, "content": "NEW"}));
            req.dry_run = dry_run;
            // On its own task: a tool blocked in open() must not also block this timer.
            let call = tokio::spawn({
                let h = h.clone();
                async move { h.execute_request(req).await }
            });
            let Ok(done) = tokio::time::timeout(Duration::from_secs(10), call).await else {
                // Release the blocked open (a writer arrives), then fail.
                let _writer = std::fs::OpenOptions::new().write(true).open(&pipe);
                panic!("file_write of {path} (dry run {dry_run}) blocked on the FIFO");
            };
            let e = done.expect("task").expect_err("refused");
            assert_eq!(e.code, ErrorCode::ToolFailed, "{path} (dry run {dry_run}): {e}");
            assert!(e.message.contains("is a symlink"), "{path}: {e}");
        }
    }
}

/// Proves a hard link inside a root to a file outside it is neither read, nor searched, nor
/// replaced (E2008, reason "hard link"; the outside file untouched), and that
/// `allow_hard_links: true` opts a root in.
#[tokio::test]
async fn hard_links_are_refused_unless_allowed() {
    let root = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("secret");
    std::fs::write(&secret, "password=hunter2\n").expect("seed");
    std::fs::hard_link(&secret, root.path().join("link")).expect("hard link (same filesystem)");
    let h = timmy_in(root.path(), false);

    let e = run(&h, "file_read", json!({"path": "link"})).await.expect_err("read refused");
    assert_eq!(e.code, ErrorCode::PathOutsideRoots, "{e}");
    assert_eq!(e.details["reason"], "hard link", "{e}");
    assert_eq!(e.details["links"], 2);

    let found = run(&h, "file_search", json!({"query": "hunter2"})).await.expect("search runs");
    assert_eq!(found["matches"], json!([]), "{found}");
    assert_eq!(found["files_skipped"], 1, "{found}");

    let e = run(&h, "file_write", json!({"path": "link", "content": "x"})).await.expect_err("write refused");
    assert_eq!(e.code, ErrorCode::PathOutsideRoots, "{e}");
    assert_eq!(std::fs::read_to_string(&secret).expect("read"), "password=hunter2\n");

    let allowed = timmy_in(root.path(), true);
    let read = run(&allowed, "file_read", json!({"path": "link"})).await.expect("opted in");
    assert_eq!(read["content"], "password=hunter2\n");
}
