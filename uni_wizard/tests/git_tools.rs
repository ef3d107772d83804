//! The six git tools through the real `Harness` against real repositories: a bare remote and
//! two clones built in temporary directories with the real `git`, really pulled, committed
//! and pushed.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use uni_wizard::{Config, ErrorCode, Harness, House, Mode, Outcome, Request};

/// Runs the real git for a fixture, isolated from the machine's git config.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Fixture", "-c", "user.email=fixture@example.invalid"])
        .args(["-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The commit a revision names in `dir`.
fn rev(dir: &Path, rev: &str) -> String {
    git(dir, &["rev-parse", "--verify", rev]).trim().to_owned()
}

/// Writes a file and commits it with the fixture identity.
fn commit_file(dir: &Path, file: &str, content: &str, message: &str) -> String {
    std::fs::write(dir.join(file), content).expect("write");
    git(dir, &["add", "--", file]);
    git(dir, &["commit", "-q", "-m", message]);
    rev(dir, "HEAD")
}

/// A bare remote and two clones, `a` and `b`, sharing one pushed commit of `README.md`.
/// The clones carry their own identity and signing config, so the harness's git (which reads
/// the machine's config) commits the same way everywhere.
struct Fixture {
    _dir: tempfile::TempDir,
    remote: PathBuf,
    a: PathBuf,
    b: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let remote = root.join("remote.git");
        git(root, &["init", "-q", "--bare", "-b", "main", remote.to_str().expect("utf-8")]);
        let clone = |name: &str| {
            let path = root.join(name);
            git(root, &["clone", "-q", remote.to_str().expect("utf-8"), path.to_str().expect("utf-8")]);
            git(&path, &["config", "user.name", "Fixture"]);
            git(&path, &["config", "user.email", "fixture@example.invalid"]);
            git(&path, &["config", "commit.gpgsign", "false"]);
            path
        };
        let a = clone("a");
        commit_file(&a, "README.md", "line 1\nline 2\nline 3\n", "Initial commit");
        git(&a, &["push", "-q", "origin", "main"]);
        let b = clone("b");
        Fixture { _dir: dir, remote, a, b }
    }

    /// Where the remote's `main` points.
    fn remote_main(&self) -> String {
        rev(&self.remote, "refs/heads/main")
    }
}

fn harness(house: House) -> Harness {
    let config = Config { file_roots: vec![], ..Config::default() };
    Harness::builder().house(house).mode(Mode::Simple).config(config).build().expect("harness builds")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

async fn dry_run(h: &Harness, tool: &str, args: Value) -> uni_wizard::Result<Outcome> {
    h.execute_request(Request { dry_run: true, ..Request::new(tool, args) }).await
}

/// Checks an outcome against its tool's output schema.
fn assert_valid(h: &Harness, o: &Outcome) {
    let contract = h.registry().get(&o.tool).expect("tool").contract();
    contract.validate_output(&o.output).unwrap_or_else(|v| panic!("{} output violates its schema: {v:?}", o.tool));
}

fn err(r: uni_wizard::Result<Outcome>) -> uni_wizard::Error {
    r.expect_err("the call must fail")
}

/// Everything a failed call said, for matching git's words.
fn said(e: &uni_wizard::Error) -> String {
    format!("{} {}", e.message, e.details)
}

/// Proves git_log lists real commits newest first with parents, identity, times, subject and
/// body, honours max_count (saying there are more) and a path filter, and matches its schema.
#[tokio::test]
async fn log_lists_commits_newest_first() {
    let f = Fixture::new();
    let first = rev(&f.a, "HEAD");
    let second = commit_file(&f.a, "src.txt", "x\n", "Add src\n\nWith a body\nof two lines.");
    let third = commit_file(&f.a, "README.md", "changed\n", "Change readme");
    let h = harness(House::Timmy);

    let o = h.execute("git_log", json!({"repo_path": path(&f.a), "max_count": 2})).await.expect("log");
    assert_valid(&h, &o);
    let commits = o.output["commits"].as_array().expect("commits");
    let ids: Vec<&str> = commits.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, [third.as_str(), second.as_str()]);
    assert_eq!(o.output["truncated"], true);
    assert_eq!(commits[0]["parents"], json!([second]));
    assert_eq!(commits[1]["subject"], "Add src");
    assert_eq!(commits[1]["body"], "With a body\nof two lines.");
    assert_eq!(commits[1]["author_email"], "fixture@example.invalid");
    let at = git(&f.a, &["log", "-1", "--format=%at", &second]).trim().parse::<i64>().expect("time");
    assert_eq!(commits[1]["author_time"], at);

    let o = h.execute("git_log", json!({"repo_path": path(&f.a), "path": "README.md"})).await.expect("log path");
    let ids: Vec<&str> =
        o.output["commits"].as_array().expect("commits").iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, [third.as_str(), first.as_str()], "only the commits touching README.md");
    assert_eq!(o.output["truncated"], false);
    let o = h
        .execute("git_log", json!({"repo_path": path(&f.a), "ref": format!("{first}..{third}")}))
        .await
        .expect("range");
    assert_eq!(o.output["commits"].as_array().map(Vec::len), Some(2));
}

/// Proves git_diff reports per-file counts, statuses and the patch for unstaged, staged and
/// revision-to-revision diffs, cuts the patch at max_bytes, and matches its schema.
#[tokio::test]
async fn diff_shows_numstat_and_patch() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    let before = rev(&f.a, "HEAD");
    std::fs::write(f.a.join("README.md"), "line 1\nline two\nline 3\nline 4\n").expect("edit");
    std::fs::write(f.a.join("new.txt"), "fresh\n").expect("new");
    git(&f.a, &["add", "new.txt"]);

    let o = h.execute("git_diff", json!({"repo_path": path(&f.a)})).await.expect("unstaged");
    assert_valid(&h, &o);
    assert_eq!(
        o.output["files"],
        json!([{"path": "README.md", "old_path": null, "status": "modified", "additions": 2, "deletions": 1, "binary": false}])
    );
    let patch = o.output["patch"].as_str().expect("patch");
    assert!(patch.contains("-line 2\n+line two\n") && patch.contains("+line 4\n"), "{patch}");
    assert_eq!(o.output["truncated"], false);

    let o = h.execute("git_diff", json!({"repo_path": path(&f.a), "staged": true})).await.expect("staged");
    assert_eq!(
        o.output["files"],
        json!([{"path": "new.txt", "old_path": null, "status": "added", "additions": 1, "deletions": 0, "binary": false}])
    );

    git(&f.a, &["commit", "-q", "-am", "second"]);
    git(&f.a, &["mv", "new.txt", "renamed.txt"]);
    git(&f.a, &["commit", "-q", "-m", "rename"]);
    let args = json!({"repo_path": path(&f.a), "base": before, "head": "HEAD", "max_bytes": 40});
    let o = h.execute("git_diff", args).await.expect("revisions");
    assert_valid(&h, &o);
    let files = o.output["files"].as_array().expect("files");
    let statuses: Vec<(&str, &str)> =
        files.iter().map(|f| (f["path"].as_str().unwrap_or(""), f["status"].as_str().unwrap_or(""))).collect();
    assert_eq!(statuses, [("README.md", "modified"), ("renamed.txt", "added")]);
    assert_eq!(o.output["patch"].as_str().map(str::len), Some(40));
    assert_eq!(o.output["truncated"], true);

    let args = json!({"repo_path": path(&f.a), "base": "HEAD~1", "head": "HEAD"});
    let o = h.execute("git_diff", args).await.expect("rename");
    assert_eq!(o.output["files"][0]["status"], "renamed");
    assert_eq!(o.output["files"][0]["old_path"], "new.txt");

    let e = err(h.execute("git_diff", json!({"repo_path": path(&f.a), "head": "HEAD"})).await);
    assert_eq!((e.code, e.details["field"].as_str()), (ErrorCode::InvalidArguments, Some("head")));
}

/// Proves git_commit stages the named paths and creates a real commit on the branch, with
/// the given author, and matches its schema.
#[tokio::test]
async fn commit_creates_a_commit() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    let parent = rev(&f.a, "HEAD");
    std::fs::write(f.a.join("new.txt"), "hello\n").expect("new");
    std::fs::write(f.a.join("README.md"), "edited\n").expect("edit");
    let args = json!({
        "repo_path": path(&f.a), "message": "Add new.txt\n\nand edit the readme",
        "paths": ["new.txt"], "all": true, "author_name": "Ada", "author_email": "ada@example.invalid"
    });
    let o = h.execute("git_commit", args).await.expect("commit");
    assert_valid(&h, &o);
    let head = rev(&f.a, "HEAD");
    assert_eq!(o.output["commit"], json!(head));
    assert_eq!(rev(&f.a, "HEAD~1"), parent);
    assert_eq!(o.output["branch"], "main");
    assert_eq!(o.output["dry_run"], false);
    assert_eq!(
        o.output["files"],
        json!([{"path": "README.md", "old_path": null, "status": "modified"}, {"path": "new.txt", "old_path": null, "status": "added"}])
    );
    assert_eq!(
        git(&f.a, &["log", "-1", "--format=%an <%ae>|%s|%b"]).trim(),
        "Ada <ada@example.invalid>|Add new.txt|and edit the readme"
    );
    assert_eq!(git(&f.a, &["status", "--porcelain"]), "", "everything was committed");
}

/// Proves a dry-run commit reports what would be committed and changes nothing: HEAD, the
/// index, the status and the object store are as before.
#[tokio::test]
async fn dry_run_commit_changes_nothing() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    std::fs::write(f.a.join("new.txt"), "never stored\n").expect("new");
    std::fs::write(f.a.join("README.md"), "edited\n").expect("edit");
    std::fs::write(f.a.join("staged.txt"), "staged\n").expect("staged");
    git(&f.a, &["add", "staged.txt"]);
    let head = rev(&f.a, "HEAD");
    let index = std::fs::read(f.a.join(".git/index")).expect("index");
    let status = git(&f.a, &["status", "--porcelain=v2", "-z"]);
    let blob = git(&f.a, &["hash-object", "new.txt"]).trim().to_owned();

    let args = json!({"repo_path": path(&f.a), "message": "m", "paths": ["new.txt"], "all": true});
    let o = dry_run(&h, "git_commit", args).await.expect("dry run");
    assert_valid(&h, &o);
    assert_eq!((&o.output["dry_run"], &o.output["commit"]), (&json!(true), &Value::Null));
    let files: Vec<(&str, &str)> = o.output["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| (f["path"].as_str().unwrap_or(""), f["status"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(files, [("README.md", "modified"), ("new.txt", "added"), ("staged.txt", "added")]);

    assert_eq!(rev(&f.a, "HEAD"), head);
    assert_eq!(std::fs::read(f.a.join(".git/index")).expect("index"), index, "the index is byte for byte the same");
    assert_eq!(git(&f.a, &["status", "--porcelain=v2", "-z"]), status);
    let stored = std::process::Command::new("git")
        .arg("-C")
        .arg(&f.a)
        .args(["cat-file", "-e", &blob])
        .status()
        .expect("git cat-file");
    assert!(!stored.success(), "the dry run wrote no object into the repository");
}

/// Proves a commit with nothing to commit is E3003 carrying git's own words, dry run or not.
#[tokio::test]
async fn nothing_to_commit_is_e3003() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    let args = json!({"repo_path": path(&f.a), "message": "empty"});
    for e in [err(h.execute("git_commit", args.clone()).await), err(dry_run(&h, "git_commit", args.clone()).await)] {
        assert_eq!(e.code, ErrorCode::ToolFailed, "{e}");
        assert!(e.message.contains("nothing to commit"), "{}", e.message);
    }
    let o = h.execute("git_commit", json!({"repo_path": path(&f.a), "message": "empty", "allow_empty": true})).await;
    assert_eq!(o.expect("allow_empty commits").output["files"], json!([]));
}

/// Proves a commit citing a stale state_sha256 is refused with E2005 and commits nothing —
/// including when the only change is a second edit to an already-modified file.
#[tokio::test]
async fn commit_with_stale_hash_is_refused() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    std::fs::write(f.a.join("README.md"), "first edit\n").expect("edit");
    let read = h.execute("git_status", json!({"repo_path": path(&f.a)})).await.expect("status");
    let hash = read.output["state_sha256"].as_str().expect("hash").to_owned();
    std::fs::write(f.a.join("README.md"), "second edit, unseen\n").expect("edit again");
    let head = rev(&f.a, "HEAD");

    let args = json!({"repo_path": path(&f.a), "message": "m", "all": true, "expected_sha256": hash});
    let e = err(h.execute("git_commit", args).await);
    assert_eq!(e.code, ErrorCode::StaleRead, "{e}");
    assert_eq!(e.details["expected_sha256"], json!(hash));
    assert_eq!(rev(&f.a, "HEAD"), head, "nothing was committed");

    let fresh = h.execute("git_status", json!({"repo_path": path(&f.a)})).await.expect("status");
    let args =
        json!({"repo_path": path(&f.a), "message": "m", "all": true, "expected_sha256": fresh.output["state_sha256"]});
    h.execute("git_commit", args).await.expect("a fresh hash commits");
    assert_ne!(rev(&f.a, "HEAD"), head);
}

/// Proves Ezra's commit without expected_sha256 is refused (E2004) before anything runs,
/// and goes through with the hash it read.
#[tokio::test]
async fn ezra_commit_without_hash_is_refused() {
    let f = Fixture::new();
    let ezra = harness(House::Ezra);
    std::fs::write(f.a.join("README.md"), "edit\n").expect("edit");
    let head = rev(&f.a, "HEAD");
    let args = json!({"repo_path": path(&f.a), "message": "m", "all": true});
    let e = err(ezra.execute("git_commit", args).await);
    assert_eq!(e.code, ErrorCode::ReadBeforeWriteRequired, "{e}");
    assert_eq!(rev(&f.a, "HEAD"), head);

    let read = ezra.execute("git_status", json!({"repo_path": path(&f.a)})).await.expect("status");
    let args =
        json!({"repo_path": path(&f.a), "message": "m", "all": true, "expected_sha256": read.output["state_sha256"]});
    ezra.execute("git_commit", args).await.expect("Ezra commits what it read");
    assert_ne!(rev(&f.a, "HEAD"), head);
}

/// Proves git_push moves the remote branch by fast-forward and reports from/to, creates a new
/// branch, says "up to date" the second time, and matches its schema.
#[tokio::test]
async fn push_moves_the_remote_branch() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    let old = f.remote_main();
    let new = commit_file(&f.a, "x.txt", "x\n", "x");
    let o = h.execute("git_push", json!({"repo_path": path(&f.a), "branch": "main"})).await.expect("push");
    assert_valid(&h, &o);
    assert_eq!(f.remote_main(), new, "the remote ref moved");
    assert_eq!(o.output["status"], "fast_forward");
    assert_eq!((&o.output["from"], &o.output["to"]), (&json!(old), &json!(new)));
    assert_eq!((&o.output["pushed"], &o.output["protected"]), (&json!(true), &json!(true)));

    let again = h.execute("git_push", json!({"repo_path": path(&f.a)})).await.expect("push again");
    assert_eq!((&again.output["status"], &again.output["pushed"]), (&json!("up_to_date"), &json!(false)));

    git(&f.a, &["checkout", "-q", "-b", "feature/y"]);
    let args = json!({"repo_path": path(&f.a), "branch": "feature/y", "set_upstream": true});
    let o = h.execute("git_push", args).await.expect("new branch");
    assert_valid(&h, &o);
    assert_eq!((&o.output["status"], &o.output["from"]), (&json!("new_branch"), &Value::Null));
    assert_eq!(rev(&f.remote, "refs/heads/feature/y"), new);
    assert_eq!(git(&f.a, &["rev-parse", "--abbrev-ref", "@{upstream}"]).trim(), "origin/feature/y");
}

/// Proves a dry-run push reports what it would do and leaves the remote ref where it was.
#[tokio::test]
async fn push_dry_run_leaves_the_remote_unchanged() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    let old = f.remote_main();
    let new = commit_file(&f.a, "x.txt", "x\n", "x");
    let o = dry_run(&h, "git_push", json!({"repo_path": path(&f.a), "branch": "main"})).await.expect("dry run");
    assert_valid(&h, &o);
    assert_eq!((&o.output["dry_run"], &o.output["pushed"]), (&json!(true), &json!(true)));
    assert_eq!((&o.output["from"], &o.output["to"]), (&json!(old), &json!(new)));
    assert_eq!(f.remote_main(), old, "nothing was sent");
}

/// Proves a non-fast-forward push is E3003 carrying git's "rejected" / "non-fast-forward"
/// words, and the remote keeps the other clone's commit.
#[tokio::test]
async fn non_fast_forward_push_is_rejected() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    let theirs = commit_file(&f.a, "a.txt", "a\n", "from a");
    git(&f.a, &["push", "-q", "origin", "main"]);
    commit_file(&f.b, "b.txt", "b\n", "from b");
    git(&f.b, &["fetch", "-q"]);
    let e = err(h.execute("git_push", json!({"repo_path": path(&f.b), "branch": "main"})).await);
    assert_eq!(e.code, ErrorCode::ToolFailed, "{e}");
    assert!(e.message.contains("[rejected] (non-fast-forward)"), "{}", e.message);
    assert!(e.details["git_stderr"].as_str().expect("stderr").contains("rejected"), "{}", e.details);
    assert_eq!(e.details["push_status"], "[rejected] (non-fast-forward)");
    assert_eq!(f.remote_main(), theirs);
}

/// Proves a push to a remote that is not configured is E3003 (not E3006, which means the
/// repository itself is missing) with git's "No such remote" message, and `force` is refused.
#[tokio::test]
async fn push_to_missing_remote_is_e3003_and_force_is_refused() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    let e = err(h.execute("git_push", json!({"repo_path": path(&f.a), "remote": "nosuch", "branch": "main"})).await);
    assert_eq!(e.code, ErrorCode::ToolFailed, "{e}");
    assert!(said(&e).contains("No such remote 'nosuch'"), "{}", said(&e));
    let e = err(h.execute("git_push", json!({"repo_path": path(&f.a), "branch": "main", "force": true})).await);
    assert_eq!((e.code, e.details["field"].as_str()), (ErrorCode::InvalidArguments, Some("force")));
}

/// Proves Allegro cannot push to a protected branch (or an unnamed one) without Timmy's
/// approval (E2002), but pushes a feature branch freely.
#[tokio::test]
async fn allegro_needs_approval_for_protected_pushes() {
    let f = Fixture::new();
    let allegro = harness(House::Allegro);
    let old = f.remote_main();
    let new = commit_file(&f.a, "x.txt", "x\n", "x");
    for args in [json!({"repo_path": path(&f.a), "branch": "main"}), json!({"repo_path": path(&f.a)})] {
        let e = err(allegro.execute("git_push", args.clone()).await);
        assert_eq!(e.code, ErrorCode::ApprovalRequired, "{args}: {e}");
    }
    assert_eq!(f.remote_main(), old, "nothing reached main");
    git(&f.a, &["branch", "feature/z"]);
    let o = allegro.execute("git_push", json!({"repo_path": path(&f.a), "branch": "feature/z"})).await;
    assert_eq!(o.expect("a feature branch needs no approval").output["protected"], false);
    assert_eq!(rev(&f.remote, "refs/heads/feature/z"), new);
}

/// Proves git_pull fast-forwards to the other clone's pushed commit, reports the move, and
/// matches its schema; a second pull changes nothing.
#[tokio::test]
async fn pull_fast_forwards() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    let from = rev(&f.b, "HEAD");
    let theirs = commit_file(&f.a, "a.txt", "a\n", "from a");
    git(&f.a, &["push", "-q", "origin", "main"]);
    let o = h.execute("git_pull", json!({"repo_path": path(&f.b)})).await.expect("pull");
    assert_valid(&h, &o);
    assert_eq!(rev(&f.b, "HEAD"), theirs);
    assert_eq!(std::fs::read_to_string(f.b.join("a.txt")).expect("pulled file"), "a\n");
    assert_eq!((&o.output["updated"], &o.output["commits_pulled"]), (&json!(true), &json!(1)));
    assert_eq!((&o.output["from"], &o.output["to"]), (&json!(from), &json!(theirs)));
    let again = h.execute("git_pull", json!({"repo_path": path(&f.b), "branch": "main"})).await.expect("again");
    assert_eq!((&again.output["updated"], &again.output["commits_pulled"]), (&json!(false), &json!(0)));
}

/// Proves a pull blocked by a conflicting uncommitted change, a diverged branch, or a missing
/// remote is E3003 carrying git's message, and leaves HEAD and the local edit alone.
#[tokio::test]
async fn pull_failures_are_e3003_with_gits_message() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    commit_file(&f.a, "README.md", "theirs\n", "their readme");
    git(&f.a, &["push", "-q", "origin", "main"]);
    let head = rev(&f.b, "HEAD");
    std::fs::write(f.b.join("README.md"), "my uncommitted edit\n").expect("edit");
    let e = err(h.execute("git_pull", json!({"repo_path": path(&f.b)})).await);
    assert_eq!(e.code, ErrorCode::ToolFailed, "{e}");
    assert!(said(&e).contains("would be overwritten"), "{}", said(&e));
    assert_eq!(rev(&f.b, "HEAD"), head);
    assert_eq!(std::fs::read_to_string(f.b.join("README.md")).expect("read"), "my uncommitted edit\n");

    git(&f.b, &["commit", "-q", "-am", "my readme"]);
    let e = err(h.execute("git_pull", json!({"repo_path": path(&f.b)})).await);
    assert_eq!(e.code, ErrorCode::ToolFailed, "{e}");
    assert!(e.message.contains("Not possible to fast-forward"), "{}", e.message);

    let e = err(h.execute("git_pull", json!({"repo_path": path(&f.b), "remote": "upstream"})).await);
    assert_eq!(e.code, ErrorCode::ToolFailed, "{e}");
    assert!(e.message.contains("No such remote 'upstream'"), "{}", e.message);
}

/// Proves a dry-run pull fetches and reports what would come in while HEAD, the index and the
/// work tree stay as they were (only the remote-tracking ref moves, as the note says).
#[tokio::test]
async fn pull_dry_run_leaves_head_unchanged() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    let head = rev(&f.b, "HEAD");
    let theirs = commit_file(&f.a, "a.txt", "a\n", "from a");
    git(&f.a, &["push", "-q", "origin", "main"]);
    let o = dry_run(&h, "git_pull", json!({"repo_path": path(&f.b)})).await.expect("dry run");
    assert_valid(&h, &o);
    assert_eq!((&o.output["updated"], &o.output["fast_forward"]), (&json!(true), &json!(true)));
    assert_eq!((&o.output["to"], &o.output["commits_pulled"]), (&json!(theirs), &json!(1)));
    assert!(o.output["note"].as_str().expect("note").contains("remote-tracking"), "{}", o.output["note"]);
    assert_eq!(rev(&f.b, "HEAD"), head);
    assert!(!f.b.join("a.txt").exists(), "the work tree is untouched");
    assert_eq!(rev(&f.b, "refs/remotes/origin/main"), theirs, "the fetch moved the remote-tracking ref");

    commit_file(&f.b, "b.txt", "b\n", "local");
    let o = dry_run(&h, "git_pull", json!({"repo_path": path(&f.b), "branch": "main"})).await.expect("diverged");
    assert_eq!((&o.output["updated"], &o.output["fast_forward"]), (&json!(false), &json!(false)));
    assert!(o.output["note"].as_str().expect("note").contains("would refuse"), "{}", o.output["note"]);
}

/// Proves every git tool answers E3006 for a directory that is not a repository.
#[tokio::test]
async fn non_repository_is_e3006() {
    let plain = tempfile::tempdir().expect("tempdir");
    let repo = path(plain.path());
    let h = harness(House::Timmy);
    for (tool, args) in [
        ("git_status", json!({"repo_path": repo})),
        ("git_log", json!({"repo_path": repo})),
        ("git_diff", json!({"repo_path": repo})),
        ("git_commit", json!({"repo_path": repo, "message": "m"})),
        ("git_pull", json!({"repo_path": repo})),
        ("git_push", json!({"repo_path": repo, "branch": "feature"})),
    ] {
        let e = err(h.execute(tool, args).await);
        assert_eq!(e.code, ErrorCode::NotFound, "{tool}: {e}");
    }
}

/// Proves refs, remotes and paths that git would read as options are refused with E1003
/// naming the field, before git runs.
#[tokio::test]
async fn option_like_arguments_are_refused() {
    let f = Fixture::new();
    let h = harness(House::Timmy);
    let repo = path(&f.a);
    let marker = f.a.join("injected");
    let out = format!("--output={}", marker.display());
    for (tool, args, field) in [
        ("git_log", json!({"repo_path": repo, "ref": out}), "ref"),
        ("git_log", json!({"repo_path": repo, "path": "-p"}), "path"),
        ("git_diff", json!({"repo_path": repo, "base": out}), "base"),
        ("git_diff", json!({"repo_path": repo, "paths": ["ok", "--output=x"]}), "paths.1"),
        ("git_commit", json!({"repo_path": repo, "message": "m", "paths": ["-A"]}), "paths.0"),
        ("git_pull", json!({"repo_path": repo, "remote": "--upload-pack=touch /tmp/x"}), "remote"),
        ("git_push", json!({"repo_path": repo, "branch": "--mirror"}), "branch"),
    ] {
        let e = err(h.execute(tool, args).await);
        assert_eq!((e.code, e.details["field"].as_str()), (ErrorCode::InvalidArguments, Some(field)), "{tool}: {e}");
    }
    assert!(!marker.exists());
}
