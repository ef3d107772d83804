//! `git_diff`: what changed between two states of a repository, per file and as a patch.
//!
//! What is compared follows `git diff` itself:
//!
//! | `staged` | `base` | `head` | compares | git |
//! |---|---|---|---|---|
//! | false | — | — | work tree against the index (unstaged changes) | `git diff` |
//! | true | — | — | index against HEAD (what a commit would record) | `git diff --cached` |
//! | false | B | — | work tree against B | `git diff B` |
//! | true | B | — | index against B | `git diff --cached B` |
//! | false | B | H | H against B | `git diff B H` |
//!
//! `head` without `base`, and `staged` with `head`, are refused (E1003). Untracked files are
//! not part of any diff (see `git_status`).
//!
//! Two git runs: `--raw --numstat -z` for the file list, parsed by the pure
//! [`parse_raw_numstat`], and the unified patch, cut at `max_bytes` on a character boundary
//! with `truncated` set. Both run with `--no-ext-diff --no-textconv` (a repository's config
//! cannot make a read run an external program), `--no-color`, `--no-relative` (paths are
//! always relative to the repository root) and `-M` (renames are detected the same way in
//! both). Revisions follow `--end-of-options`, paths follow `--` and are literal; any of
//! them starting with `-` is refused.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::tools::git;
use crate::tools::{ToolContext, TypedTool};

/// Patch bytes returned when `max_bytes` is not given (256 KiB).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024;

/// The `status` of a changed file.
pub const STATUS_KINDS: &[&str] =
    &["added", "copied", "deleted", "modified", "renamed", "type_changed", "unmerged", "unknown"];

/// Arguments of `git_diff`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Absolute path of the repository.
    pub repo_path: String,
    /// Compare the index rather than the work tree.
    #[serde(default)]
    pub staged: bool,
    /// The revision to compare against (HEAD for `staged`, the index otherwise, when absent).
    #[serde(default)]
    pub base: Option<String>,
    /// The revision to compare `base` with, instead of the work tree or index.
    #[serde(default)]
    pub head: Option<String>,
    /// Only these literal paths (relative to `repo_path`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Most bytes of patch returned.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

/// Result of `git_diff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The repository path as given.
    pub repo_path: String,
    /// One entry per changed file, in git's order.
    pub files: Vec<FileChange>,
    /// The unified diff, at most `max_bytes` bytes.
    pub patch: String,
    /// The patch was longer than `max_bytes` (or than the runner's capture limit) and was cut.
    pub truncated: bool,
}

/// One changed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Path relative to the repository root (the new path of a rename or copy).
    pub path: String,
    /// The path before a rename or copy; `null` otherwise.
    pub old_path: Option<String>,
    /// One of [`STATUS_KINDS`].
    pub status: &'static str,
    /// Lines added (0 for binary files).
    pub additions: u64,
    /// Lines deleted (0 for binary files).
    pub deletions: u64,
    /// Git considers the file binary and counts no lines.
    pub binary: bool,
}

/// The `git_diff` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct GitDiff;

impl TypedTool for GitDiff {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "git_diff",
            category: Category::Git,
            description: "Per-file line counts and the unified patch of unstaged changes, staged changes, or the difference between revisions.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "repo_path": git::schema::repo_path(),
                    "staged": {"type": "boolean", "default": false, "description": "Compare the index (what a commit would record) instead of the work tree."},
                    "base": git::schema::not_an_option("Revision to compare against. Must not start with `-`."),
                    "head": git::schema::not_an_option("Revision to compare with base instead of the work tree or index; needs base. Must not start with `-`."),
                    "paths": git::schema::paths("Only these literal paths. None may start with `-` (write ./-name)."),
                    "max_bytes": {"type": "integer", "minimum": 0, "maximum": git::OUTPUT_CAP, "default": DEFAULT_MAX_BYTES}
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
        let tail = comparison(&input)?;
        let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
        let base = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-relative", "-M"];

        let mut args = base.to_vec();
        args.extend(["--raw", "--numstat", "-z"]);
        args.extend(&tail);
        let listed = git::run(&ctx.env, &repo, &args).await?;
        if listed.stdout_truncated {
            return Err(Error::new(
                ErrorCode::OutputTooLarge,
                format!("the file list of this diff is longer than {} bytes; narrow it with paths", git::OUTPUT_CAP),
            )
            .with_details(json!({ "repo": input.repo_path, "limit_bytes": git::OUTPUT_CAP, "field": "paths" })));
        }
        let files = parse_raw_numstat(&listed.stdout).map_err(|problem| {
            Error::new(ErrorCode::ToolFailed, format!("git diff of {}: unexpected output: {problem}", repo.display()))
                .with_details(json!({ "repo": input.repo_path, "problem": problem }))
        })?;

        let mut args = base.to_vec();
        args.extend(&tail);
        let patched = git::run(&ctx.env, &repo, &args).await?;
        let text = String::from_utf8_lossy(&patched.stdout);
        let max = usize::try_from(input.max_bytes).unwrap_or(usize::MAX);
        let (patch, cut) = cut_at(&text, max);
        Ok(Output {
            repo_path: input.repo_path,
            files,
            patch: patch.to_owned(),
            truncated: cut || patched.stdout_truncated,
        })
    }
}

/// The arguments after the common ones: `--cached`, revisions and paths.
///
/// # Errors
/// E1003 for `head` without `base`, `staged` with `head`, or a value starting with `-`.
fn comparison(input: &Input) -> Result<Vec<String>> {
    let refuse = |field: &str, problem: &str| {
        Err(Error::new(ErrorCode::InvalidArguments, format!("git_diff: `{field}` {problem}"))
            .with_details(json!({ "field": field, "problem": problem })))
    };
    if input.head.is_some() && input.base.is_none() {
        return refuse("head", "needs `base`: a diff of one revision compares it with `base`");
    }
    if input.head.is_some() && input.staged {
        return refuse("staged", "compares the index, so it cannot be combined with `head`");
    }
    let mut tail = Vec::new();
    if input.staged {
        tail.push("--cached".to_owned());
    }
    tail.push("--end-of-options".to_owned());
    for (field, rev) in [("base", &input.base), ("head", &input.head)] {
        if let Some(rev) = rev {
            git::refuse_option(field, rev)?;
            tail.push(rev.clone());
        }
    }
    tail.push("--".to_owned());
    for (i, path) in input.paths.iter().enumerate() {
        git::refuse_option(&format!("paths.{i}"), path)?;
        tail.push(path.clone());
    }
    Ok(tail)
}

/// At most `max` bytes of `s`, cut on a character boundary, and whether anything was cut.
pub(crate) fn cut_at(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// Parses `git diff --raw --numstat -z` output: first one raw record per file pair
/// (`:<modes> <ids> <status>` NUL path NUL, with a second path for renames and copies), then
/// one numstat record per pair in the same order (`<added> TAB <deleted> TAB path` NUL, or
/// `... TAB` NUL old NUL new NUL for renames; `-` counts for binary files).
///
/// An unmerged path comes out of git as two pairs, the `U` entry and the diff against our
/// side; they are folded into one `unmerged` entry with the second pair's counts.
///
/// # Errors
/// A description of the first record that does not fit, or of raw and numstat disagreeing.
pub fn parse_raw_numstat(raw: &[u8]) -> Result<Vec<FileChange>, String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut tokens = raw.split(|b| *b == 0).peekable();
    let mut files: Vec<FileChange> = Vec::new();
    let mut counts: Vec<(u64, u64, bool, String)> = Vec::new();
    while let Some(token) = tokens.next() {
        if token.is_empty() && tokens.peek().is_none() {
            break;
        }
        let mut next_path = |what: &str| {
            tokens.next().filter(|t| !t.is_empty()).map(text).ok_or_else(|| format!("record without {what}"))
        };
        if let Some(meta) = token.strip_prefix(b":") {
            let meta = text(meta);
            let letters = meta.rsplit(' ').next().unwrap_or("");
            let status = status_kind(letters.chars().next().unwrap_or(' '))
                .ok_or_else(|| format!("unknown status {letters:?} in raw record {meta:?}"))?;
            let (path, old_path) = if matches!(status, "renamed" | "copied") {
                let old = next_path("an original path")?;
                (next_path("a new path")?, Some(old))
            } else {
                (next_path("a path")?, None)
            };
            files.push(FileChange { path, old_path, status, additions: 0, deletions: 0, binary: false });
        } else {
            let line = text(token);
            let mut f = line.splitn(3, '\t');
            let (Some(a), Some(d), Some(path)) = (f.next(), f.next(), f.next()) else {
                return Err(format!("malformed numstat record {line:?}"));
            };
            let path = if path.is_empty() {
                next_path("an original path")?;
                next_path("a new path")?
            } else {
                path.to_owned()
            };
            let count = |n: &str| n.parse::<u64>().map_err(|_| format!("numstat count {n:?} is not a number"));
            counts.push(match (a, d) {
                ("-", "-") => (0, 0, true, path),
                _ => (count(a)?, count(d)?, false, path),
            });
        }
    }
    if counts.len() != files.len() {
        return Err(format!("{} raw records but {} numstat records", files.len(), counts.len()));
    }
    for (file, (additions, deletions, binary, path)) in files.iter_mut().zip(counts) {
        if file.path != path {
            return Err(format!("raw record for {:?} paired with numstat record for {path:?}", file.path));
        }
        (file.additions, file.deletions, file.binary) = (additions, deletions, binary);
    }
    let mut folded: Vec<FileChange> = Vec::with_capacity(files.len());
    for file in files {
        match folded.last_mut() {
            Some(prev) if prev.status == "unmerged" && prev.path == file.path => {
                (prev.additions, prev.deletions, prev.binary) = (file.additions, file.deletions, file.binary);
            }
            _ => folded.push(file),
        }
    }
    Ok(folded)
}

fn status_kind(letter: char) -> Option<&'static str> {
    Some(match letter {
        'A' => "added",
        'C' => "copied",
        'D' => "deleted",
        'M' => "modified",
        'R' => "renamed",
        'T' => "type_changed",
        'U' => "unmerged",
        'X' => "unknown",
        _ => return None,
    })
}

fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "repo_path": {"type": "string"},
            "files": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "minLength": 1},
                        "old_path": {"type": ["string", "null"], "description": "Only for renamed and copied files."},
                        "status": {"type": "string", "enum": STATUS_KINDS},
                        "additions": {"type": "integer", "minimum": 0},
                        "deletions": {"type": "integer", "minimum": 0},
                        "binary": {"type": "boolean"}
                    },
                    "required": ["path", "old_path", "status", "additions", "deletions", "binary"],
                    "additionalProperties": false
                }
            },
            "patch": {"type": "string"},
            "truncated": {"type": "boolean"}
        },
        "required": ["repo_path", "files", "patch", "truncated"],
        "additionalProperties": false
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use super::*;

    fn change(path: &str, old: Option<&str>, status: &'static str, counts: (u64, u64, bool)) -> FileChange {
        let (additions, deletions, binary) = counts;
        FileChange { path: path.into(), old_path: old.map(Into::into), status, additions, deletions, binary }
    }

    /// Recorded from git 2.47: a modify, an add, a rename into a directory, a binary add and
    /// a path with a space and a tab.
    const RECORDED: &[u8] = b":100644 100644 7898192 422c2b7 M\0a\0\
:000000 100644 0000000 8ba3a16 A\0new\0\
:100644 100644 b478595 b478595 R100\0sub/s\0sub/t\0\
:000000 100644 0000000 6a8a5e1 A\0bin\0\
:000000 100644 0000000 4ae8ef0 A\0odd name\tx\0\
1\t0\ta\0\
1\t0\tnew\0\
0\t0\t\0sub/s\0sub/t\0\
-\t-\tbin\0\
2\t0\todd name\tx\0";

    /// Proves raw and numstat records pair up: statuses, rename paths, counts, binary files,
    /// and paths holding spaces and tabs.
    #[test]
    fn parses_recorded_output() {
        let files = parse_raw_numstat(RECORDED).unwrap();
        assert_eq!(
            files,
            vec![
                change("a", None, "modified", (1, 0, false)),
                change("new", None, "added", (1, 0, false)),
                change("sub/t", Some("sub/s"), "renamed", (0, 0, false)),
                change("bin", None, "added", (0, 0, true)),
                change("odd name\tx", None, "added", (2, 0, false)),
            ]
        );
        assert!(parse_raw_numstat(b"").unwrap().is_empty());
    }

    /// Proves an unmerged path's two pairs fold into one `unmerged` entry with real counts.
    #[test]
    fn unmerged_pairs_fold() {
        let raw = b":000000 100644 0000000 0000000 U\0a\0:100644 100644 ba2906d 0000000 M\0a\x000\t0\ta\x004\t0\ta\0";
        assert_eq!(parse_raw_numstat(raw).unwrap(), vec![change("a", None, "unmerged", (4, 0, false))]);
    }

    /// Proves disagreeing or malformed records are refused.
    #[test]
    fn malformed_output_is_refused() {
        for bad in [
            &b":100644 100644 a b M\0a\0"[..],
            b"1\t0\ta\0",
            b":100644 100644 a b M\0a\x001\t0\tb\0",
            b":100644 100644 a b Z\0a\x001\t0\ta\0",
            b":100644 100644 a b M\0a\0x\t0\ta\0",
            b":100644 100644 a b R100\0a\0",
        ] {
            assert!(parse_raw_numstat(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Proves the patch is cut on a character boundary and the cut is reported.
    #[test]
    fn patch_cut_respects_char_boundaries() {
        assert_eq!(cut_at("abc", 3), ("abc", false));
        assert_eq!(cut_at("abc", 2), ("ab", true));
        assert_eq!(cut_at("aé", 2), ("a", true));
        assert_eq!(cut_at("abc", 0), ("", true));
    }

    fn input(staged: bool, base: Option<&str>, head: Option<&str>, paths: &[&str]) -> Input {
        Input {
            repo_path: "/r".into(),
            staged,
            base: base.map(Into::into),
            head: head.map(Into::into),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// Proves each comparison maps to git's arguments and the impossible ones, and values
    /// that look like options, are refused naming the field.
    #[test]
    fn comparisons_map_to_git_arguments() {
        let args = |i: Input| comparison(&i).unwrap().join(" ");
        assert_eq!(args(input(false, None, None, &[])), "--end-of-options --");
        assert_eq!(args(input(true, Some("v1"), None, &["a b"])), "--cached --end-of-options v1 -- a b");
        assert_eq!(args(input(false, Some("v1"), Some("v2"), &[])), "--end-of-options v1 v2 --");
        let field = |i: Input| comparison(&i).unwrap_err().details["field"].as_str().unwrap().to_owned();
        assert_eq!(field(input(false, None, Some("v2"), &[])), "head");
        assert_eq!(field(input(true, Some("v1"), Some("v2"), &[])), "staged");
        assert_eq!(field(input(false, Some("--output=/tmp/x"), None, &[])), "base");
        assert_eq!(field(input(false, None, None, &["ok", "-x"])), "paths.1");
    }
}
