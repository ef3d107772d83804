//! `git_log`: the commits reachable from a revision, newest first, with author, times,
//! subject and body.
//!
//! The tool runs `git log -z --format=<LOG_FORMAT>` through the shared [`git`] runner and
//! parses it with the pure [`parse_log`]. Each commit is one record: an RS byte (`0x1e`) that
//! marks its start, then [`FIELDS`] fields separated by NUL, and `-z` ends the record with
//! NUL. Git refuses NUL inside commit messages, so no field can contain the separator, and
//! the RS check catches any record that does not line up.
//!
//! `ref` and `path` are refused when they start with `-`, and are passed after
//! `--end-of-options` and `--` respectively; `path` is literal (no pathspec magic). Signature
//! verification, notes and colour are turned off so a repository's config cannot add
//! anything to the output (or run gpg).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::tools::git;
use crate::tools::{ToolContext, TypedTool};

/// Commits listed when `max_count` is not given.
pub const DEFAULT_MAX_COUNT: u32 = 20;

/// Most commits one call lists.
pub const MAX_COUNT: u32 = 1000;

/// The `--format` of one commit record: RS, then id, parents, author name, author email,
/// author time, committer time, subject and body, separated by NUL.
pub const LOG_FORMAT: &str = "%x1e%H%x00%P%x00%an%x00%ae%x00%at%x00%ct%x00%s%x00%b";

/// Fields per record in [`LOG_FORMAT`].
pub const FIELDS: usize = 8;

/// Arguments of `git_log`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Absolute path of the repository.
    pub repo_path: String,
    /// Most commits to list.
    #[serde(default = "default_max_count")]
    pub max_count: u32,
    /// The revision to start from (branch, tag, commit, range); HEAD when absent.
    #[serde(default, rename = "ref")]
    pub rev: Option<String>,
    /// Only commits touching this path (relative to `repo_path`).
    #[serde(default)]
    pub path: Option<String>,
    /// Only commits newer than this date (any form `git log --since` accepts).
    #[serde(default)]
    pub since: Option<String>,
}

fn default_max_count() -> u32 {
    DEFAULT_MAX_COUNT
}

/// Result of `git_log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The repository path as given.
    pub repo_path: String,
    /// Commits, newest first (git's default order).
    pub commits: Vec<Commit>,
    /// More commits match than `max_count` allowed.
    pub truncated: bool,
}

/// One commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    /// Full commit id.
    pub id: String,
    /// Full ids of the parents (none for a root commit, two or more for a merge).
    pub parents: Vec<String>,
    /// Author name.
    pub author_name: String,
    /// Author email.
    pub author_email: String,
    /// Author time, Unix seconds.
    pub author_time: i64,
    /// Committer time, Unix seconds.
    pub committer_time: i64,
    /// The first paragraph of the message, on one line.
    pub subject: String,
    /// The rest of the message, without trailing newlines (empty when there is none).
    pub body: String,
}

/// The `git_log` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct GitLog;

impl TypedTool for GitLog {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "git_log",
            category: Category::Git,
            description: "List the commits reachable from a revision (HEAD by default), newest first, optionally only those touching a path or newer than a date.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "repo_path": git::schema::repo_path(),
                    "max_count": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT, "default": DEFAULT_MAX_COUNT},
                    "ref": git::schema::not_an_option("Revision or range to list; HEAD when absent. Must not start with `-`."),
                    "path": git::schema::not_an_option("Only commits touching this literal path. Must not start with `-` (write ./-name)."),
                    "since": {"type": "string", "minLength": 1, "description": "Only commits newer than this date, as `git log --since` reads it."}
                },
                "required": ["repo_path"],
                "additionalProperties": false
            }),
            output_schema: output_schema(),
            annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: false },
            risk: Risk::Low,
            default_timeout: Duration::from_secs(30),
            dry_run: false,
            content_guard: false,
        }
    }

    fn target(args: &Value) -> String {
        git::target(args)
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        let repo = git::repo_path(&input.repo_path).await?;
        if let Some(rev) = &input.rev {
            git::refuse_option("ref", rev)?;
        }
        if let Some(path) = &input.path {
            git::refuse_option("path", path)?;
        }
        let max = input.max_count.clamp(1, MAX_COUNT);
        let format = format!("--format={LOG_FORMAT}");
        // One more than asked, to know whether there are more.
        let count = format!("--max-count={}", max + 1);
        let since = input.since.as_ref().map(|s| format!("--since={s}"));
        let mut args =
            vec!["log", "-z", "--no-color", "--no-show-signature", "--no-notes", format.as_str(), count.as_str()];
        args.extend(since.as_deref());
        args.push("--end-of-options");
        args.extend(input.rev.as_deref());
        args.push("--");
        args.extend(input.path.as_deref());

        let out = git::exec(&ctx.env, &repo, &args, git::Access::ReadOnly).await?;
        if !out.success() {
            // `git log` on a branch with no commits yet is an empty history, not a failure.
            if input.rev.is_none() && out.stderr_str().contains("does not have any commits yet") {
                return Ok(Output { repo_path: input.repo_path, commits: vec![], truncated: false });
            }
            return Err(out.to_error());
        }
        if out.stdout_truncated {
            return Err(Error::new(
                ErrorCode::OutputTooLarge,
                format!(
                    "git log of {} is longer than {} bytes; ask for fewer commits",
                    repo.display(),
                    git::OUTPUT_CAP
                ),
            )
            .with_details(json!({ "repo": input.repo_path, "limit_bytes": git::OUTPUT_CAP, "field": "max_count" })));
        }
        let mut commits = parse_log(&out.stdout).map_err(|problem| {
            Error::new(ErrorCode::ToolFailed, format!("git log of {}: unexpected output: {problem}", repo.display()))
                .with_details(json!({ "repo": input.repo_path, "problem": problem }))
        })?;
        let truncated = commits.len() > max as usize;
        commits.truncate(max as usize);
        Ok(Output { repo_path: input.repo_path, commits, truncated })
    }
}

/// Parses `git log -z --format=`[`LOG_FORMAT`] output.
///
/// # Errors
/// A description of the first record that does not have [`FIELDS`] fields, does not start
/// with RS, or has an id or time that is not one.
pub fn parse_log(raw: &[u8]) -> Result<Vec<Commit>, String> {
    let mut fields: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    // Every record, the last included, ends with NUL: the final piece is empty.
    match fields.pop() {
        Some([]) => {}
        Some(rest) => return Err(format!("output does not end with NUL: {:?}", clip(rest))),
        None => {}
    }
    if !fields.len().is_multiple_of(FIELDS) {
        return Err(format!("{} fields is not a whole number of {FIELDS}-field records", fields.len()));
    }
    fields.chunks_exact(FIELDS).enumerate().map(|(i, f)| parse_record(i, f)).collect()
}

fn parse_record(i: usize, f: &[&[u8]]) -> Result<Commit, String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let id = f[0].strip_prefix(b"\x1e").ok_or_else(|| format!("record {i} does not start with RS"))?;
    let id = text(id);
    if !is_object_id(&id) {
        return Err(format!("record {i}: {:?} is not a commit id", clip(id.as_bytes())));
    }
    let parents: Vec<String> = text(f[1]).split_whitespace().map(str::to_owned).collect();
    if let Some(bad) = parents.iter().find(|p| !is_object_id(p)) {
        return Err(format!("record {i}: parent {bad:?} is not a commit id"));
    }
    let time = |b: &[u8], what: &str| {
        text(b).parse::<i64>().map_err(|_| format!("record {i}: {what} {:?} is not a Unix time", clip(b)))
    };
    Ok(Commit {
        id,
        parents,
        author_name: text(f[2]),
        author_email: text(f[3]),
        author_time: time(f[4], "author time")?,
        committer_time: time(f[5], "committer time")?,
        subject: text(f[6]),
        body: text(f[7]).trim_end_matches('\n').to_owned(),
    })
}

/// A full object id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub(crate) fn is_object_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn clip(b: &[u8]) -> String {
    String::from_utf8_lossy(b).chars().take(80).collect()
}

fn output_schema() -> Value {
    let id = json!({"type": "string", "pattern": git::schema::OBJECT_ID});
    json!({
        "type": "object",
        "properties": {
            "repo_path": {"type": "string"},
            "commits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": id,
                        "parents": {"type": "array", "items": id},
                        "author_name": {"type": "string"},
                        "author_email": {"type": "string"},
                        "author_time": {"type": "integer", "description": "Unix seconds"},
                        "committer_time": {"type": "integer", "description": "Unix seconds"},
                        "subject": {"type": "string"},
                        "body": {"type": "string"}
                    },
                    "required": ["id", "parents", "author_name", "author_email", "author_time", "committer_time", "subject", "body"],
                    "additionalProperties": false
                }
            },
            "truncated": {"type": "boolean", "description": "More commits match than max_count allowed."}
        },
        "required": ["repo_path", "commits", "truncated"],
        "additionalProperties": false
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const C: &str = "3333333333333333333333333333333333333333";

    fn record(id: &str, parents: &str, subject: &str, body: &str) -> Vec<u8> {
        format!("\x1e{id}\0{parents}\0Ann Author\0ann@example.invalid\01700000000\01700000100\0{subject}\0{body}\0")
            .into_bytes()
    }

    /// Proves records parse into commits in order, with merge parents, multi-line bodies
    /// (trailing newlines dropped) and empty bodies.
    #[test]
    fn parses_records_in_order() {
        let mut raw = record(C, &format!("{A} {B}"), "Merge side", "");
        raw.extend(record(B, A, "Second: with spaces", "line one\n\nline two\n\n"));
        raw.extend(record(A, "", "Root", ""));
        let commits = parse_log(&raw).unwrap();
        let ids: Vec<&str> = commits.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, [C, B, A]);
        assert_eq!(commits[0].parents, [A, B]);
        assert!(commits[2].parents.is_empty());
        assert_eq!(commits[1].subject, "Second: with spaces");
        assert_eq!(commits[1].body, "line one\n\nline two");
        assert_eq!((commits[1].author_time, commits[1].committer_time), (1_700_000_000, 1_700_000_100));
        assert_eq!(
            (commits[1].author_name.as_str(), commits[1].author_email.as_str()),
            ("Ann Author", "ann@example.invalid")
        );
        assert!(parse_log(b"").unwrap().is_empty());
    }

    /// Proves a branch with no commits yet lists an empty history rather than failing, while
    /// a named revision that does not exist is still E3003.
    #[tokio::test]
    async fn unborn_branch_is_an_empty_history() {
        use std::sync::Arc;

        use crate::house::House;
        use crate::tools::ToolEnv;
        use crate::tools::file::Roots;
        let dir = tempfile::tempdir().unwrap();
        let init = std::process::Command::new("git").arg("-C").arg(dir.path()).args(["init", "-q"]).status().unwrap();
        assert!(init.success());
        let ctx = ToolContext::new(Arc::new(ToolEnv::new(Roots::new::<&str>(&[]).unwrap())), House::Timmy, false, "t");
        let input = |rev: Option<&str>| Input {
            repo_path: dir.path().to_str().unwrap().to_owned(),
            max_count: DEFAULT_MAX_COUNT,
            rev: rev.map(Into::into),
            path: None,
            since: None,
        };
        let out = GitLog::run(&ctx, input(None)).await.unwrap();
        assert!(out.commits.is_empty() && !out.truncated);
        let err = GitLog::run(&ctx, input(Some("no-such-branch"))).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ToolFailed);
    }

    /// Proves misaligned or malformed output is refused rather than misread.
    #[test]
    fn malformed_output_is_refused() {
        let good = record(A, "", "s", "b");
        let mut missing_rs = good.clone();
        missing_rs.remove(0);
        let no_terminator = &good[..good.len() - 1];
        let short = b"\x1eabc\0\0\0\0\0\0\0\0";
        let bad_time = record(A, "", "s", "b").iter().map(|b| if *b == b'7' { b'x' } else { *b }).collect::<Vec<_>>();
        let mut extra_field = good.clone();
        extra_field.extend(b"stray\0");
        for bad in [&missing_rs[..], no_terminator, short, &bad_time, &extra_field] {
            assert!(parse_log(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
