//! The git family: six tools over one repository each, and the one way they run `git`
//! (argv only, bounded output, errors mapped to codes).
//!
//! - [`status`] is `git_status` (with the `state_sha256` the mutating tools check),
//!   [`log`] is `git_log`, [`diff`] is `git_diff`: read-only.
//! - [`pull`] is `git_pull`, [`commit`] is `git_commit`, [`push`] is `git_push`: they take
//!   `expected_sha256` and refuse when the repository changed since it was read.
//! - [`schema`]: the schema fragments they share (`repo_path`, `remote`, `expected_sha256`,
//!   revisions and object ids), and [`target`], the breaker and provenance target of every git
//!   call (its `repo_path`).
//!
//! Every git tool goes through [`run`] or its siblings, so the hardening lives in one place:
//!
//! - `git -C <repo> <args>` is spawned directly from [`ToolEnv::git`]; there is no shell, so
//!   no argument is ever interpreted as anything but one argv entry;
//! - stdin is `/dev/null` and `GIT_TERMINAL_PROMPT=0`, so git never waits for a password;
//! - `LC_ALL=C`, so git's messages (which [`GitOutput::check`] matches) are in English;
//! - read-only commands also get `GIT_OPTIONAL_LOCKS=0` (no index refresh written behind the
//!   caller's back) and `-c core.fsmonitor=false` (a repository's own config cannot make a
//!   read run an fsmonitor hook program);
//! - `GIT_DIR`, `GIT_WORK_TREE` and the other repository-locating variables are removed from
//!   the child's environment, so the repository is always the one named by the call (a
//!   tool may set some of them again on purpose through [`Extra::env`], as `git_commit`'s dry
//!   run does to stage into a throw-away index);
//! - `GIT_LITERAL_PATHSPECS=1`, so a path argument is always that path: `*`, `:(top)` and
//!   the other pathspec magic are never interpreted;
//! - a caller-supplied ref, remote or path that starts with `-` is refused by
//!   [`refuse_option`] (E1003 naming the field), and the tools put `--end-of-options` before
//!   revisions and `--` before paths, so no argument can become an option;
//! - stdout and stderr are each captured up to [`OUTPUT_CAP`]; the rest is drained and
//!   dropped, and the truncation is reported;
//! - the child is killed when the call's future is dropped (a timeout), never left behind.
//!
//! # Repository paths are not confined
//!
//! Unlike the file tools, git tools are **not** confined to the configured file roots: they
//! act on the repositories named in their arguments or configuration, wherever those live.
//! What a house may do to a repository is decided by policy (house, mode, approvals,
//! `expected_sha256`), not by where the repository sits on disk. [`repo_path`] only checks
//! that the path names an existing directory.
//!
//! Arguments and git's stderr are echoed in error details (with URL credentials redacted),
//! so callers must never put secrets in argv — which is also what keeps them out of `ps`.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::error::{Error, ErrorCode, Result};
use crate::tools::{ToolEnv, arg_str};

pub mod commit;
pub mod diff;
pub mod log;
pub mod pull;
pub mod push;
pub mod schema;
pub mod status;

/// The remote `git_pull` and `git_push` use when none is named.
pub const DEFAULT_REMOTE: &str = "origin";

/// [`DEFAULT_REMOTE`], for `#[serde(default = ...)]`.
pub fn default_remote() -> String {
    DEFAULT_REMOTE.to_owned()
}

/// The thing every git call acts on, keying its breaker and provenance: its `repo_path`.
pub fn target(args: &serde_json::Value) -> String {
    arg_str(args, "repo_path").to_owned()
}

/// Most bytes of stdout, and separately of stderr, kept from one git command (8 MiB).
pub const OUTPUT_CAP: usize = 8 * 1024 * 1024;

/// Most bytes of stderr copied into an error's `details.git_stderr`.
const STDERR_IN_DETAILS: usize = 4096;

/// Environment variables that would make git act on a repository other than `-C <repo>`.
const REPO_LOCATING_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
];

/// Subcommands that talk to a remote: their failures are never blamed on the local
/// repository (a remote path that is not a repository is E3003, not E3006).
const REMOTE_COMMANDS: &[&str] = &["push", "pull", "fetch", "ls-remote"];

/// Whether a git command only reads the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: optional locks and fsmonitor hooks are turned off.
    ReadOnly,
    /// Changes the repository (commit, pull, push): git's own defaults apply.
    Mutating,
}

/// What one git command produced.
#[derive(Debug, Clone)]
pub struct GitOutput {
    /// How git exited.
    pub status: ExitStatus,
    /// Standard output, at most [`OUTPUT_CAP`] bytes.
    pub stdout: Vec<u8>,
    /// Whether stdout was longer than [`OUTPUT_CAP`] and cut.
    pub stdout_truncated: bool,
    /// Standard error, at most [`OUTPUT_CAP`] bytes.
    pub stderr: Vec<u8>,
    /// Whether stderr was longer than [`OUTPUT_CAP`] and cut.
    pub stderr_truncated: bool,
    /// The arguments after `-C <repo>`, as passed (for error details).
    pub args: Vec<String>,
    /// The repository given with `-C`.
    pub repo: PathBuf,
}

impl GitOutput {
    /// Whether git exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, or `None` when git was killed by a signal.
    pub fn exit_code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Stdout as text (invalid UTF-8 replaced).
    pub fn stdout_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// Passes a successful output through and turns a failed one into its [`Error`].
    ///
    /// # Errors
    /// See [`GitOutput::to_error`].
    pub fn check(self) -> Result<GitOutput> {
        if self.success() { Ok(self) } else { Err(self.to_error()) }
    }

    /// The error a failed command maps to:
    /// E3006 when the path is not a repository (or cannot be entered), E3003 otherwise.
    /// `details` carries `git_stderr` (trimmed, at most 4 KiB, URL credentials redacted),
    /// `exit_code` (null when killed by a signal), `signal`, `args` and `repo`; when git said
    /// nothing on stderr (as `git commit` with nothing to commit), also `git_stdout`.
    ///
    /// The message ends with git's own words: the first `fatal:`/`error:` line of stderr (git
    /// often prints progress and hints first), else its first line, else the last line of
    /// stdout (where `git commit` puts "nothing to commit").
    pub fn to_error(&self) -> Error {
        let stderr = self.stderr_str();
        let stdout = self.stdout_str();
        let said = git_says(&stderr, &stdout);
        let shown = redact(&clip(stderr.trim(), STDERR_IN_DETAILS)).into_owned();
        let args: Vec<String> = self.args.iter().map(|a| redact(a).into_owned()).collect();
        let mut details = json!({
            "git_stderr": shown,
            "exit_code": self.exit_code(),
            "signal": self.status.signal(),
            "args": args,
            "repo": self.repo.display().to_string(),
        });
        if stderr.trim().is_empty() {
            details["git_stdout"] = json!(redact(&clip(stdout.trim(), STDERR_IN_DETAILS)));
        }
        let command = self.args.first().map(String::as_str).unwrap_or("");
        // `git diff` outside a repository says "Not a git repository" (capitalised).
        let lower = stderr.to_ascii_lowercase();
        let not_a_repo = !REMOTE_COMMANDS.contains(&command)
            && (lower.contains("not a git repository") || lower.contains("cannot change to"));
        let (code, what) = if not_a_repo {
            (ErrorCode::NotFound, format!("{} is not a git repository", self.repo.display()))
        } else {
            let how = match self.exit_code() {
                Some(c) => format!("exited with {c}"),
                None => "was killed".to_owned(),
            };
            (ErrorCode::ToolFailed, format!("git {command} {how}"))
        };
        let message = if said.is_empty() { what } else { format!("{what}: {}", redact(said)) };
        Error::new(code, message).with_details(details)
    }
}

/// The line of a failed command's output that best says what went wrong.
fn git_says<'a>(stderr: &'a str, stdout: &'a str) -> &'a str {
    let lines = || stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    lines()
        .find(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .or_else(|| lines().next())
        .or_else(|| stdout.lines().map(str::trim).rfind(|l| !l.is_empty()))
        .unwrap_or("")
}

/// Per-command additions to what [`exec`] sets up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra<'a> {
    /// `-c key=value` settings placed before the subcommand.
    pub config: &'a [(&'a str, &'a str)],
    /// Environment variables set for the child, after the repository-locating ones are removed
    /// (so a tool can point `GIT_INDEX_FILE` at a throw-away index on purpose).
    pub env: &'a [(&'a str, &'a OsStr)],
}

/// Runs a read-only `git -C <repo> <args>` and fails unless it exits 0.
///
/// # Errors
/// E3007 when the git executable is missing; E3006 when `repo` is not a repository;
/// E3003 (with git's stderr, exit code and args in `details`) for any other failure.
pub async fn run(env: &ToolEnv, repo: &Path, args: &[&str]) -> Result<GitOutput> {
    exec(env, repo, args, Access::ReadOnly).await?.check()
}

/// Runs a mutating `git -C <repo> <args>` (commit, pull, push) and fails unless it exits 0.
///
/// # Errors
/// As [`run`].
pub async fn run_mutating(env: &ToolEnv, repo: &Path, args: &[&str]) -> Result<GitOutput> {
    exec(env, repo, args, Access::Mutating).await?.check()
}

/// Runs `git -C <repo> <args>` and returns whatever it produced, whatever its exit status,
/// for commands whose non-zero exit is an answer (`merge-base --is-ancestor`,
/// `diff --exit-code`). Call [`GitOutput::check`] to apply the usual mapping.
///
/// # Errors
/// E3007 when the git executable cannot be found or run; an I/O error while reading
/// the pipes, mapped with [`Error::from_io`].
pub async fn exec(env: &ToolEnv, repo: &Path, args: &[&str], access: Access) -> Result<GitOutput> {
    exec_with(env, repo, args, access, Extra::default()).await
}

/// [`exec`] with `-c` settings and environment variables of the caller's choosing.
///
/// # Errors
/// As [`exec`].
pub async fn exec_with(
    env: &ToolEnv,
    repo: &Path,
    args: &[&str],
    access: Access,
    extra: Extra<'_>,
) -> Result<GitOutput> {
    let mut cmd = Command::new(&env.git);
    cmd.arg("-C").arg(repo);
    if access == Access::ReadOnly {
        cmd.args(["-c", "core.fsmonitor=false"]);
        cmd.env("GIT_OPTIONAL_LOCKS", "0");
    }
    for (key, value) in extra.config {
        cmd.arg("-c").arg(format!("{key}={value}"));
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_LITERAL_PATHSPECS", "1")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in REPO_LOCATING_ENV {
        cmd.env_remove(var);
    }
    for (key, value) in extra.env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().map_err(|e| spawn_error(&env.git, &e))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::new(ErrorCode::ToolFailed, "git: child pipes were not created"));
    };
    let (out, err, status) =
        tokio::try_join!(read_capped(stdout, OUTPUT_CAP), read_capped(stderr, OUTPUT_CAP), child.wait())
            .map_err(|e| Error::from_io("git: reading output", &e))?;
    if out.1 || err.1 {
        tracing::debug!(repo = %repo.display(), args = ?args, "git output truncated at {OUTPUT_CAP} bytes");
    }
    Ok(GitOutput {
        status,
        stdout: out.0,
        stdout_truncated: out.1,
        stderr: err.0,
        stderr_truncated: err.1,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        repo: repo.to_owned(),
    })
}

/// Checks that a repository path names an existing directory and returns it.
///
/// The path is **not** confined to the file roots (see the module docs) and is not required
/// to be a repository here: git itself says so, mapped to E3006, when it runs. It must be
/// absolute, because a relative path would be resolved against the daemon's working
/// directory, which no caller can see.
///
/// # Errors
/// E1003 for an empty or relative path; E3006 when nothing exists there or it is not a
/// directory; other I/O failures (permission) as mapped by [`Error::from_io`].
pub async fn repo_path(raw: &str) -> Result<PathBuf> {
    let path = PathBuf::from(raw);
    if raw.is_empty() || !path.is_absolute() {
        return Err(Error::new(
            ErrorCode::InvalidArguments,
            format!("repo_path must be an absolute path, got {raw:?}"),
        )
        .with_details(json!({ "field": "repo_path", "problem": "must be an absolute path" })));
    }
    let meta = tokio::fs::metadata(&path).await.map_err(|e| Error::from_io(format!("repository {raw}"), &e))?;
    if !meta.is_dir() {
        return Err(Error::new(ErrorCode::NotFound, format!("repository {raw} is not a directory"))
            .with_details(json!({ "repo": raw, "problem": "not a directory" })));
    }
    Ok(path)
}

/// Refuses a caller-supplied ref, remote or path that git would read as an option.
///
/// # Errors
/// E1003 naming `field` when `value` starts with `-`.
pub fn refuse_option(field: &str, value: &str) -> Result<()> {
    if !value.starts_with('-') {
        return Ok(());
    }
    let problem = "must not start with `-` (git would read it as an option; write a path as ./-name)";
    Err(Error::new(ErrorCode::InvalidArguments, format!("`{field}` {problem}: {value:?}"))
        .with_details(json!({ "field": field, "problem": problem })))
}

/// The commit HEAD points at, `None` on an unborn branch (no commit yet).
///
/// # Errors
/// As [`run`] (E3006 when `repo` is not a repository).
pub async fn head(env: &ToolEnv, repo: &Path) -> Result<Option<String>> {
    resolve(env, repo, "HEAD").await
}

/// The commit a revision names, `None` when it names none.
///
/// # Errors
/// As [`run`] (E3006 when `repo` is not a repository).
pub async fn resolve(env: &ToolEnv, repo: &Path, rev: &str) -> Result<Option<String>> {
    let rev = format!("{rev}^{{commit}}");
    let out =
        exec(env, repo, &["rev-parse", "--verify", "--quiet", "--end-of-options", &rev], Access::ReadOnly).await?;
    if out.exit_code() == Some(1) && out.stderr.is_empty() {
        return Ok(None);
    }
    Ok(Some(out.check()?.stdout_str().trim().to_owned()))
}

/// The checked-out branch's short name, `None` when HEAD is detached.
///
/// # Errors
/// As [`run`].
pub async fn current_branch(env: &ToolEnv, repo: &Path) -> Result<Option<String>> {
    let out = exec(env, repo, &["symbolic-ref", "--quiet", "--short", "HEAD"], Access::ReadOnly).await?;
    if out.exit_code() == Some(1) && out.stderr.is_empty() {
        return Ok(None);
    }
    Ok(Some(out.check()?.stdout_str().trim().to_owned()))
}

/// How many commits `rev-list` counts for these revisions (e.g. `["^old", "new"]`).
///
/// # Errors
/// As [`run`]; E3003 when git's answer is not a number.
pub async fn count(env: &ToolEnv, repo: &Path, revs: &[&str]) -> Result<u64> {
    let mut args = vec!["rev-list", "--count", "--end-of-options"];
    args.extend_from_slice(revs);
    let out = run(env, repo, &args).await?;
    out.stdout_str().trim().parse().map_err(|_| {
        Error::new(ErrorCode::ToolFailed, format!("git rev-list --count printed {:?}", out.stdout_str().trim()))
    })
}

/// Checks that `remote` names a remote configured in the repository (a URL or path given as
/// a remote is refused the same way, so a caller cannot make git talk to a place the
/// repository's own configuration does not name).
///
/// # Errors
/// E3003 carrying git's own "No such remote" message; E3006 when `repo` is not a repository.
pub async fn require_remote(env: &ToolEnv, repo: &Path, remote: &str) -> Result<()> {
    run(env, repo, &["remote", "get-url", "--", remote]).await.map(drop)
}

/// A failed spawn: a missing or unusable git executable means this host cannot run git tools.
fn spawn_error(git: &Path, e: &std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound | K::PermissionDenied => {
            Error::new(ErrorCode::Unsupported, format!("git executable {} cannot be run: {e}", git.display()))
                .with_details(json!({ "git": git.display().to_string(), "io_error": e.to_string() }))
        }
        _ => Error::from_io(format!("spawning {}", git.display()), e),
    }
}

/// Reads a pipe to its end, keeping at most `cap` bytes; the rest is read and dropped so the
/// child never blocks on a full pipe. Returns the bytes and whether any were dropped.
async fn read_capped<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        truncated |= n > room;
    }
}

/// At most `max` bytes of `s`, cut on a character boundary, marked when cut.
fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…[truncated]", &s[..end]))
}

/// Replaces the user-info of `scheme://user:secret@host` URLs with `***`, so a token given
/// in a remote URL never reaches error details or logs.
pub fn redact(s: &str) -> Cow<'_, str> {
    if !s.contains("://") || !s.contains('@') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end =
            tail.find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"').unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&tail[at..authority_end]);
            }
            None => out.push_str(&tail[..authority_end]),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use super::*;
    use crate::tools::file::Roots;

    fn env() -> ToolEnv {
        ToolEnv::new(Roots::new::<&str>(&[]).unwrap())
    }

    /// Runs the real git to set up a fixture, isolated from the machine's git config.
    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"])
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Proves a successful command returns its stdout and exit status 0.
    #[tokio::test]
    async fn run_captures_stdout() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        let out = run(&env(), dir.path(), &["rev-parse", "--is-inside-work-tree"]).await.unwrap();
        assert!(out.success());
        assert_eq!(out.stdout_str().trim(), "true");
        assert!(!out.stdout_truncated && !out.stderr_truncated);
    }

    /// Proves a directory that is not a repository maps to E3006 with git's message in details.
    #[tokio::test]
    async fn not_a_repository_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(&env(), dir.path(), &["status"]).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::NotFound, "{err}");
        assert!(err.details["git_stderr"].as_str().unwrap().contains("not a git repository"), "{}", err.details);
    }

    /// Proves any other non-zero exit maps to E3003 with stderr, exit code and args in details.
    #[tokio::test]
    async fn other_failures_are_tool_failed_with_details() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        let err = run(&env(), dir.path(), &["rev-parse", "--verify", "no-such-ref"]).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ToolFailed, "{err}");
        assert_eq!(err.details["exit_code"], 128);
        assert_eq!(err.details["args"], json!(["rev-parse", "--verify", "no-such-ref"]));
        assert!(!err.details["git_stderr"].as_str().unwrap().is_empty());
    }

    /// Proves `exec` hands back a non-zero exit as an answer rather than an error.
    #[tokio::test]
    async fn exec_returns_non_zero_exits() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        let out = exec(&env(), dir.path(), &["rev-parse", "--verify", "-q", "HEAD"], Access::ReadOnly).await.unwrap();
        assert_eq!(out.exit_code(), Some(1));
        assert_eq!(out.check().unwrap_err().code, ErrorCode::ToolFailed);
    }

    /// Proves a missing git executable is E3007 (the host cannot run git tools).
    #[tokio::test]
    async fn missing_git_binary_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let env = ToolEnv { git: dir.path().join("no-git-here"), ..env() };
        let err = run(&env, dir.path(), &["status"]).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Unsupported, "{err}");
    }

    /// Proves an argument is one argv entry, never interpreted by a shell.
    #[tokio::test]
    async fn arguments_are_not_shell_interpreted() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        let marker = dir.path().join("pwned");
        let evil = format!("$(touch {})", marker.display());
        let out = run(&env(), dir.path(), &["rev-parse", "--sq-quote", &evil]).await.unwrap();
        assert!(out.stdout_str().contains("$(touch"));
        assert!(!marker.exists());
    }

    /// Proves output past the cap is dropped, flagged, and the pipe still drained to its end.
    #[tokio::test]
    async fn capture_is_bounded_and_reports_truncation() {
        let data = vec![7u8; 200_000];
        let (kept, truncated) = read_capped(&data[..], 1000).await.unwrap();
        assert_eq!((kept.len(), truncated), (1000, true));
        let (kept, truncated) = read_capped(&data[..10], 1000).await.unwrap();
        assert_eq!((kept.len(), truncated), (10, false));
        let (kept, truncated) = read_capped(&data[..1000], 1000).await.unwrap();
        assert_eq!((kept.len(), truncated), (1000, false));
    }

    /// Proves repo_path accepts a directory and refuses missing paths, files and relative paths.
    #[tokio::test]
    async fn repo_path_checks_for_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        assert_eq!(repo_path(root).await.unwrap(), dir.path());
        let missing = format!("{root}/missing");
        assert_eq!(repo_path(&missing).await.unwrap_err().code, ErrorCode::NotFound);
        std::fs::write(dir.path().join("f"), "x").unwrap();
        assert_eq!(repo_path(&format!("{root}/f")).await.unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(repo_path("relative/repo").await.unwrap_err().code, ErrorCode::InvalidArguments);
        assert_eq!(repo_path("").await.unwrap_err().code, ErrorCode::InvalidArguments);
    }

    /// Proves the error message quotes git's `fatal:`/`error:` line over progress and hints,
    /// and falls back to stdout's last line when stderr is empty (`nothing to commit`).
    #[test]
    fn error_message_quotes_the_line_that_matters() {
        let stderr = "From /tmp/remote\n * branch main -> FETCH_HEAD\nerror: Your local changes would be overwritten\n";
        assert_eq!(git_says(stderr, ""), "error: Your local changes would be overwritten");
        assert_eq!(git_says("hint: one\nhint: two\n", ""), "hint: one");
        assert_eq!(
            git_says("  \n", "On branch main\n\nnothing to commit, working tree clean\n\n"),
            "nothing to commit, working tree clean"
        );
        assert_eq!(git_says("", ""), "");
    }

    /// Proves a failure with nothing on stderr carries stdout in details and its last line in
    /// the message.
    #[tokio::test]
    async fn stdout_explains_a_silent_failure() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        git(dir.path(), &["commit", "-q", "--allow-empty", "-m", "first"]);
        let err = run(&env(), dir.path(), &["commit", "-m", "nothing"]).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ToolFailed);
        assert!(err.message.contains("nothing to commit"), "{}", err.message);
        assert!(err.details["git_stdout"].as_str().unwrap().contains("nothing to commit"), "{}", err.details);
    }

    /// Proves values that git would read as options are refused naming the field, and others pass.
    #[test]
    fn option_like_values_are_refused() {
        let e = refuse_option("ref", "--output=/tmp/x").unwrap_err();
        assert_eq!((e.code, e.details["field"].as_str()), (ErrorCode::InvalidArguments, Some("ref")));
        refuse_option("path", "./-x").unwrap();
        refuse_option("ref", "main~1").unwrap();
    }

    /// Proves head, resolve, current_branch and count answer from a real repository, with
    /// `None` for an unborn branch, a detached HEAD and a missing revision.
    #[tokio::test]
    async fn small_queries_answer_from_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q", "-b", "trunk"]);
        let env = env();
        assert_eq!(head(&env, d).await.unwrap(), None);
        assert_eq!(current_branch(&env, d).await.unwrap().as_deref(), Some("trunk"));
        git(d, &["commit", "-q", "--allow-empty", "-m", "one"]);
        git(d, &["commit", "-q", "--allow-empty", "-m", "two"]);
        let tip = head(&env, d).await.unwrap().unwrap();
        assert_eq!(tip.len(), 40);
        assert_eq!(resolve(&env, d, "trunk").await.unwrap().as_deref(), Some(tip.as_str()));
        assert_eq!(resolve(&env, d, "no-such-branch").await.unwrap(), None);
        assert_eq!(count(&env, d, &[&tip]).await.unwrap(), 2);
        assert_eq!(count(&env, d, &["^trunk~1", "trunk"]).await.unwrap(), 1);
        git(d, &["checkout", "-q", "--detach"]);
        assert_eq!(current_branch(&env, d).await.unwrap(), None);
    }

    /// Proves require_remote accepts a configured remote and refuses a missing one, or a URL,
    /// with git's own message (E3003), and a non-repository with E3006.
    #[tokio::test]
    async fn remotes_must_be_configured_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q"]);
        git(d, &["remote", "add", "origin", "https://git.example.invalid/x.git"]);
        let env = env();
        require_remote(&env, d, "origin").await.unwrap();
        for bad in ["nosuch", "https://git.example.invalid/x.git", "/tmp"] {
            let e = require_remote(&env, d, bad).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::ToolFailed, "{bad}");
            assert!(e.message.contains("No such remote"), "{}", e.message);
        }
        let plain = tempfile::tempdir().unwrap();
        assert_eq!(require_remote(&env, plain.path(), "origin").await.unwrap_err().code, ErrorCode::NotFound);
    }

    /// Proves a remote command's "not a git repository" (about the remote) is E3003, not E3006.
    #[tokio::test]
    async fn remote_failures_are_not_blamed_on_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let plain = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        let err = run(&env(), dir.path(), &["fetch", "--", plain.path().to_str().unwrap()]).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ToolFailed, "{err}");
    }

    /// Proves credentials in URLs are redacted and text without them is untouched.
    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact("fatal: unable to access 'https://bob:s3cret@git.example/x.git/': 403"),
            "fatal: unable to access 'https://***@git.example/x.git/': 403"
        );
        assert_eq!(redact("https://token@h/a and ssh://git@h:22/b"), "https://***@h/a and ssh://***@h:22/b");
        assert_eq!(redact("git@github.com:o/r.git"), "git@github.com:o/r.git");
        assert_eq!(redact("https://h/a@b"), "https://h/a@b");
    }

    /// Proves long stderr is clipped on a character boundary for error details.
    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("short", 10), "short");
        let s = "é".repeat(10);
        let c = clip(&s, 5);
        assert!(c.starts_with("éé") && c.ends_with("[truncated]"), "{c}");
    }
}
