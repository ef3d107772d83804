//! `git_commit`: record staged changes (optionally staging named paths, or every tracked
//! change, first) as a new commit on the checked-out branch.
//!
//! The real call runs `git add -- <paths>` when `paths` are given, then
//! `git commit --message=<message> [-a] [--allow-empty]`. The author and committer come
//! from the repository's config unless `author_name` / `author_email` are given, in which
//! case both the author and the committer are that identity (`GIT_AUTHOR_*` and
//! `GIT_COMMITTER_*`). The repository's hooks and signing config apply as they would to a
//! person's commit. If the commit itself then fails (a hook refuses), the paths stay staged.
//!
//! Annotated mutating, not destructive (a commit only adds history), not idempotent (each
//! call makes another commit), not open-world. "Nothing to commit" is E3003 carrying git's
//! own message.
//!
//! # Dry run
//!
//! A dry run stages into a **throw-away index** — a copy of the repository's index in a
//! private temporary directory, with new objects written to a temporary object directory
//! that borrows the repository's objects as an alternate — then asks git itself whether the
//! commit would be refused (`git commit --dry-run`) and lists what it would record
//! (`git diff --cached --name-status`). The repository's index, objects, refs and work tree
//! are never written; the temporary directory is removed when the call ends.
//!
//! # Read before write
//!
//! With `expected_sha256` (the `state_sha256` of `git_status`), the commit is refused with
//! E2005 when the repository — including the content of modified and untracked files —
//! changed since it was read. Ezra must pass it.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::status::check_expected;
use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::tools::git::{self, Access, Extra};
use crate::tools::{ToolContext, ToolEnv, TypedTool};

/// Longest commit message accepted, in characters.
pub const MAX_MESSAGE_CHARS: u64 = 64 * 1024;

/// The `status` of a committed file.
pub const STATUS_KINDS: &[&str] = &["added", "copied", "deleted", "modified", "renamed", "type_changed", "unknown"];

/// Arguments of `git_commit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Absolute path of the repository.
    pub repo_path: String,
    /// The commit message.
    pub message: String,
    /// Literal paths (relative to `repo_path`) to stage with `git add` first, new files included.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Stage every modified and deleted tracked file first (`git commit -a`).
    #[serde(default)]
    pub all: bool,
    /// Commit even when nothing changed.
    #[serde(default)]
    pub allow_empty: bool,
    /// Author and committer name; the repository's `user.name` when absent.
    #[serde(default)]
    pub author_name: Option<String>,
    /// Author and committer email; the repository's `user.email` when absent.
    #[serde(default)]
    pub author_email: Option<String>,
    /// `state_sha256` from `git_status`; the commit is refused if the repository changed since.
    #[serde(default)]
    pub expected_sha256: Option<String>,
}

/// Result of `git_commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The repository path as given.
    pub repo_path: String,
    /// This was a dry run: nothing was staged or committed.
    pub dry_run: bool,
    /// The new commit's id; `null` on a dry run.
    pub commit: Option<String>,
    /// The branch committed to; `null` when HEAD is detached.
    pub branch: Option<String>,
    /// The files the commit records (would record, on a dry run), against its first parent.
    pub files: Vec<Change>,
}

/// One file in a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Path relative to the repository root (the new path of a rename or copy).
    pub path: String,
    /// The path before a rename or copy; `null` otherwise.
    pub old_path: Option<String>,
    /// One of [`STATUS_KINDS`].
    pub status: &'static str,
}

/// The `git_commit` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct GitCommit;

impl TypedTool for GitCommit {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "git_commit",
            category: Category::Git,
            description: "Commit staged changes on the checked-out branch, optionally staging named paths or all tracked changes first; refuses when there is nothing to commit.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "repo_path": git::schema::repo_path(),
                    "message": {"type": "string", "minLength": 1, "maxLength": MAX_MESSAGE_CHARS},
                    "paths": git::schema::paths("Literal paths to `git add` first (new files included). None may start with `-` (write ./-name)."),
                    "all": {"type": "boolean", "default": false, "description": "Stage every modified and deleted tracked file first (git commit -a)."},
                    "allow_empty": {"type": "boolean", "default": false},
                    "author_name": {"type": "string", "minLength": 1, "maxLength": 256, "description": "Author and committer name; repository config when absent."},
                    "author_email": {"type": "string", "minLength": 1, "maxLength": 256, "description": "Author and committer email; repository config when absent."},
                    "expected_sha256": git::schema::expected_sha256()
                },
                "required": ["repo_path", "message"],
                "additionalProperties": false
            }),
            output_schema: output_schema(),
            annotations: Annotations { read_only: false, destructive: false, idempotent: false, open_world: false },
            risk: Risk::Medium,
            default_timeout: Duration::from_secs(60),
            dry_run: true,
            content_guard: true,
        }
    }

    fn target(args: &Value) -> String {
        git::target(args)
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        let env = &*ctx.env;
        let repo = git::repo_path(&input.repo_path).await?;
        for (i, path) in input.paths.iter().enumerate() {
            git::refuse_option(&format!("paths.{i}"), path)?;
        }
        check_expected(env, &repo, input.expected_sha256.as_deref()).await?;
        let branch = git::current_branch(env, &repo).await?;
        if ctx.dry_run {
            let files = preview(env, &repo, &input).await?;
            return Ok(Output { repo_path: input.repo_path, dry_run: true, commit: None, branch, files });
        }

        if !input.paths.is_empty() {
            let mut args = vec!["add", "--"];
            args.extend(input.paths.iter().map(String::as_str));
            git::run_mutating(env, &repo, &args).await?;
        }
        let mut identity: Vec<(&str, &OsStr)> = Vec::new();
        if let Some(name) = &input.author_name {
            identity.extend([("GIT_AUTHOR_NAME", OsStr::new(name)), ("GIT_COMMITTER_NAME", OsStr::new(name))]);
        }
        if let Some(email) = &input.author_email {
            identity.extend([("GIT_AUTHOR_EMAIL", OsStr::new(email)), ("GIT_COMMITTER_EMAIL", OsStr::new(email))]);
        }
        let message = format!("--message={}", input.message);
        let mut args = vec!["commit", message.as_str()];
        if input.all {
            args.push("--all");
        }
        if input.allow_empty {
            args.push("--allow-empty");
        }
        git::exec_with(env, &repo, &args, Access::Mutating, Extra { env: &identity, ..Extra::default() })
            .await?
            .check()?;

        let commit = git::head(env, &repo)
            .await?
            .ok_or_else(|| Error::new(ErrorCode::ToolFailed, "git commit succeeded but HEAD names no commit"))?;
        let args = ["diff-tree", "-r", "-z", "-M", "--name-status", "--root", "--no-commit-id", "-m", "--first-parent"];
        let mut args = args.to_vec();
        args.extend(["--end-of-options", commit.as_str()]);
        let listed = git::run(env, &repo, &args).await?;
        let files = parse_name_status(&listed.stdout).map_err(|p| unexpected(&repo, &p))?;
        Ok(Output { repo_path: input.repo_path, dry_run: false, commit: Some(commit), branch, files })
    }
}

/// Stages into a throw-away index (see the module docs) and lists what the commit would record.
///
/// # Errors
/// E3003 with git's message when the commit would be refused (nothing to commit) or a path
/// cannot be added; I/O errors creating the temporary directory.
async fn preview(env: &ToolEnv, repo: &Path, input: &Input) -> Result<Vec<Change>> {
    let located =
        git::run(env, repo, &["rev-parse", "--path-format=absolute", "--git-path", "index", "--git-path", "objects"])
            .await?;
    let mut lines = located.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let (Some(index), Some(objects)) = (lines.next(), lines.next()) else {
        return Err(unexpected(repo, "git rev-parse --git-path printed less than two paths"));
    };
    let (index, objects) = (Path::new(OsStr::from_bytes(index)), OsStr::from_bytes(objects));

    let scratch = Scratch::create().await?;
    match tokio::fs::copy(index, scratch.path.join("index")).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // no index yet: nothing staged
        Err(e) => return Err(Error::from_io("copying the index for a dry run", &e)),
    }
    tokio::fs::create_dir(scratch.path.join("objects"))
        .await
        .map_err(|e| Error::from_io("creating a scratch object directory", &e))?;
    let index_file = scratch.path.join("index");
    let object_dir = scratch.path.join("objects");
    let alternate = quote_alternate(objects);
    let vars: [(&str, &OsStr); 3] = [
        ("GIT_INDEX_FILE", index_file.as_os_str()),
        ("GIT_OBJECT_DIRECTORY", object_dir.as_os_str()),
        ("GIT_ALTERNATE_OBJECT_DIRECTORIES", &alternate),
    ];
    let extra = Extra { env: &vars, ..Extra::default() };

    if !input.paths.is_empty() {
        let mut args = vec!["add", "--"];
        args.extend(input.paths.iter().map(String::as_str));
        git::exec_with(env, repo, &args, Access::ReadOnly, extra).await?.check()?;
    }
    if input.all {
        git::exec_with(env, repo, &["add", "--update"], Access::ReadOnly, extra).await?.check()?;
    }
    if !input.allow_empty {
        // git's own verdict (and words) on whether there is anything to commit.
        let message = format!("--message={}", input.message);
        let args = ["commit", "--dry-run", message.as_str()];
        git::exec_with(env, repo, &args, Access::ReadOnly, extra).await?.check()?;
    }
    let args = ["diff", "--cached", "--name-status", "-z", "-M", "--no-relative", "--no-ext-diff"];
    let listed = git::exec_with(env, repo, &args, Access::ReadOnly, extra).await?.check()?;
    let files = parse_name_status(&listed.stdout).map_err(|p| unexpected(repo, &p))?;
    drop(scratch); // removes the throw-away index and objects now, before returning
    Ok(files)
}

/// A private temporary directory, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    async fn create() -> Result<Scratch> {
        let path = std::env::temp_dir().join(format!("uni-wizard-commit-{:016x}", rand::random::<u64>()));
        let mut builder = tokio::fs::DirBuilder::new();
        builder.mode(0o700);
        builder.create(&path).await.map_err(|e| Error::from_io("creating a scratch directory for a dry run", &e))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), "could not remove a dry run's scratch directory: {e}");
        }
    }
}

/// One entry of `GIT_ALTERNATE_OBJECT_DIRECTORIES`, C-quoted so a path holding `:` (the
/// list separator) or `"` stays one path.
fn quote_alternate(path: &OsStr) -> OsString {
    let mut out = vec![b'"'];
    for &b in path.as_bytes() {
        if matches!(b, b'"' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    OsString::from_vec(out)
}

/// Parses `--name-status -z` output: a status token (`M`, `A`, `D`, `T`, `R100`, `C75`...)
/// NUL path NUL, with a second path for renames and copies.
///
/// # Errors
/// A description of the first record that does not fit.
pub fn parse_name_status(raw: &[u8]) -> Result<Vec<Change>, String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut tokens = raw.split(|b| *b == 0);
    let mut out = Vec::new();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            if tokens.next().is_none() {
                break;
            }
            return Err("empty status token".to_owned());
        }
        let status = match token.first() {
            Some(b'A') => "added",
            Some(b'C') => "copied",
            Some(b'D') => "deleted",
            Some(b'M') => "modified",
            Some(b'R') => "renamed",
            Some(b'T') => "type_changed",
            Some(b'X') => "unknown",
            _ => return Err(format!("unknown status {:?}", text(token))),
        };
        let mut path = || tokens.next().filter(|p| !p.is_empty()).map(text).ok_or("status without a path");
        let (path, old_path) = if matches!(status, "renamed" | "copied") {
            let old = path()?;
            (path()?, Some(old))
        } else {
            (path()?, None)
        };
        out.push(Change { path, old_path, status });
    }
    Ok(out)
}

fn unexpected(repo: &Path, problem: &str) -> Error {
    Error::new(ErrorCode::ToolFailed, format!("git in {}: unexpected output: {problem}", repo.display()))
        .with_details(json!({ "repo": repo.display().to_string(), "problem": problem }))
}

fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "repo_path": {"type": "string"},
            "dry_run": {"type": "boolean"},
            "commit": {"type": ["string", "null"], "pattern": git::schema::OBJECT_ID, "description": "null on a dry run"},
            "branch": {"type": ["string", "null"], "description": "null when HEAD is detached"},
            "files": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "minLength": 1},
                        "old_path": {"type": ["string", "null"]},
                        "status": {"type": "string", "enum": STATUS_KINDS}
                    },
                    "required": ["path", "old_path", "status"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["repo_path", "dry_run", "commit", "branch", "files"],
        "additionalProperties": false
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use super::*;

    fn change(path: &str, old: Option<&str>, status: &'static str) -> Change {
        Change { path: path.into(), old_path: old.map(Into::into), status }
    }

    /// Proves name-status records parse, renames with both paths, and bad records are refused.
    #[test]
    fn parses_name_status() {
        let raw = b"M\0a b\0A\0new\0R087\0old\0new name\0D\0gone\0";
        assert_eq!(
            parse_name_status(raw).unwrap(),
            vec![
                change("a b", None, "modified"),
                change("new", None, "added"),
                change("new name", Some("old"), "renamed"),
                change("gone", None, "deleted"),
            ]
        );
        assert!(parse_name_status(b"").unwrap().is_empty());
        for bad in [&b"Q\0a\0"[..], b"M\0", b"R100\0only\0", b"\0\0M\0a\0"] {
            assert!(parse_name_status(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Proves an alternate object directory is quoted so `:` and `"` cannot split it.
    #[test]
    fn alternates_are_quoted() {
        assert_eq!(quote_alternate(OsStr::new("/a:b/\"c\\")), OsString::from("\"/a:b/\\\"c\\\\\""));
    }
}
