//! `git_status`: branch, upstream, and every changed path of one repository, with a hash of
//! the whole state.
//!
//! The tool runs `git status --porcelain=v2 --branch -z` (see [`STATUS_ARGS`]) through the
//! shared [`git`] runner and parses it with the pure [`parse_porcelain_v2`].
//!
//! # `state_sha256`: the read Ezra cites before writing
//!
//! `state_sha256` is the SHA-256 (lowercase hex) of, in this order:
//!
//! 1. the **exact bytes** git printed for `git -C <repo> status` with [`STATUS_ARGS`]: branch
//!    headers (commit, branch, upstream, ahead/behind) and every staged, unstaged, untracked
//!    and conflicted entry with its modes and its HEAD and index object ids;
//! 2. for every path whose **work-tree content** is not in the index — each unstaged or
//!    conflicted entry, and every untracked file (untracked directories expanded with
//!    `git ls-files --others --exclude-standard`, so ignored files are left out as git leaves
//!    them out) — sorted by its bytes: the path, a NUL, a tag, a NUL. The tag is
//!    `file <sha256 of the bytes>`, `symlink <sha256 of the link target>`, `directory`
//!    (a submodule or nested repository), `missing`, `other` (fifo, socket, device) or
//!    `unreadable`. Files are opened without following a final symlink and are never read
//!    unless they are regular files.
//!
//! So it changes with any commit, checkout, reset, fetch that moves the upstream, change to
//! what is staged, any path that becomes modified, deleted, untracked or conflicted, **and**
//! any further edit to a file that is already modified or untracked — the status format
//! carries no id for work-tree bytes, which is why part 2 exists. A clean tree has no part 2,
//! so its hash is the SHA-256 of the status output alone. Files git ignores, and the insides
//! of submodules, are not covered.
//!
//! Ezra reads before it writes: it passes this value as `expected_sha256` to the mutating git
//! tools (`git_commit`, `git_pull`, `git_push`), which recompute it with [`check_expected`]
//! just before they act and refuse with E2005 (stale read) when it differs. Both sides must
//! therefore compute it the same way, which is why it lives in one function, [`snapshot`].
//! (A change landing between that check and git's own action is not caught: git has no
//! compare-and-swap for the work tree.)
//!
//! Repository paths are not confined to the file roots (see [`git`]).

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::hash::sha256_hex;
use crate::tools::git;
use crate::tools::{ToolContext, ToolEnv, TypedTool};

/// The `git status` arguments whose output is parsed and hashed into `state_sha256`.
///
/// Untracked files and rename detection are stated explicitly so a user's `status.*` config
/// cannot change what the tool reports or the hash it computes.
pub const STATUS_ARGS: &[&str] =
    &["status", "--porcelain=v2", "--branch", "-z", "--untracked-files=normal", "--find-renames"];

/// Arguments of `git_status`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Absolute path of the repository (its work tree, or any directory inside it).
    pub repo_path: String,
}

/// Result of `git_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The repository path as given.
    pub repo_path: String,
    /// The checked-out branch; `null` when HEAD is detached.
    pub branch: Option<String>,
    /// The commit id HEAD points at; `null` on an unborn branch (no commit yet).
    pub head: Option<String>,
    /// The upstream branch, e.g. `origin/main`; `null` when none is configured.
    pub upstream: Option<String>,
    /// Commits on the branch not on its upstream (0 without an upstream, or when the
    /// upstream ref is gone).
    pub ahead: u64,
    /// Commits on the upstream not on the branch (as of the last fetch; 0 as for `ahead`).
    pub behind: u64,
    /// No staged, unstaged, untracked or conflicted paths.
    pub clean: bool,
    /// Changes in the index relative to HEAD.
    pub staged: Vec<Entry>,
    /// Changes in the work tree relative to the index.
    pub unstaged: Vec<Entry>,
    /// Paths git does not track (directories end in `/`).
    pub untracked: Vec<Entry>,
    /// Paths with unresolved merge conflicts.
    pub conflicted: Vec<Entry>,
    /// SHA-256 of the status output and of the work-tree content of every changed and
    /// untracked path; see the module docs. Ezra's `expected_sha256`.
    pub state_sha256: String,
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The path relative to the repository root.
    pub path: String,
    /// What changed: for staged and unstaged entries one of [`CHANGE_KINDS`]; `untracked`;
    /// for conflicts one of [`CONFLICT_KINDS`].
    pub status: &'static str,
    /// The path before a rename or copy, only for `renamed` and `copied` entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orig_path: Option<String>,
}

/// The `status` of a staged or unstaged entry.
pub const CHANGE_KINDS: &[&str] = &["modified", "type_changed", "added", "deleted", "renamed", "copied", "unmerged"];

/// The `status` of a conflicted entry, from git's two-letter unmerged codes.
pub const CONFLICT_KINDS: &[&str] = &[
    "both_deleted",
    "added_by_us",
    "deleted_by_them",
    "added_by_them",
    "deleted_by_us",
    "both_added",
    "both_modified",
];

/// The `git_status` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct GitStatus;

impl TypedTool for GitStatus {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "git_status",
            category: Category::Git,
            description: "Branch, HEAD, upstream with ahead/behind, and staged, unstaged, untracked and conflicted paths of a repository, with a SHA-256 of the state for read-before-write.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "repo_path": git::schema::repo_path()
                },
                "required": ["repo_path"],
                "additionalProperties": false
            }),
            output_schema: output_schema(),
            annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: false },
            risk: Risk::Low,
            default_timeout: Duration::from_secs(15),
            dry_run: false,
            content_guard: false,
        }
    }

    fn target(args: &Value) -> String {
        git::target(args)
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        let repo = git::repo_path(&input.repo_path).await?;
        let (status, state_sha256) = snapshot(&ctx.env, &repo).await?;
        Ok(Output {
            repo_path: input.repo_path,
            clean: status.is_clean(),
            branch: status.branch,
            head: status.head,
            upstream: status.upstream,
            ahead: status.ahead,
            behind: status.behind,
            staged: status.staged,
            unstaged: status.unstaged,
            untracked: status.untracked,
            conflicted: status.conflicted,
            state_sha256,
        })
    }
}

/// Runs `git status` with [`STATUS_ARGS`] and returns the parsed status and its
/// `state_sha256` (see the module docs for exactly what it covers).
///
/// # Errors
/// As [`git::run`]; E3009 when the status or the untracked-file listing exceeds
/// [`git::OUTPUT_CAP`] (the hash would not cover the whole state); E3003 when git prints
/// something the parser does not understand.
pub async fn snapshot(env: &ToolEnv, repo: &Path) -> Result<(Status, String)> {
    let out = git::run(env, repo, STATUS_ARGS).await?;
    if out.stdout_truncated {
        return Err(too_large(repo, "git status"));
    }
    let status = parse_porcelain_v2(&out.stdout).map_err(|problem| {
        Error::new(ErrorCode::ToolFailed, format!("git status of {}: unexpected output: {problem}", repo.display()))
            .with_details(json!({ "repo": repo.display().to_string(), "problem": problem }))
    })?;
    if status.dirty_paths.is_empty() && status.untracked.is_empty() {
        return Ok((status, sha256_hex(&out.stdout)));
    }
    let top = toplevel(env, repo).await?;
    let mut paths = status.dirty_paths.clone();
    if !status.untracked.is_empty() {
        let listed = git::run(env, &top, &["ls-files", "-z", "--others", "--exclude-standard"]).await?;
        if listed.stdout_truncated {
            return Err(too_large(repo, "git ls-files --others"));
        }
        paths.extend(listed.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()).map(<[u8]>::to_vec));
    }
    paths.sort();
    paths.dedup();
    let status_bytes = out.stdout;
    let hash = tokio::task::spawn_blocking(move || hash_state(&status_bytes, &top, &paths))
        .await
        .map_err(|e| Error::new(ErrorCode::ToolFailed, format!("hashing the work tree ended abnormally: {e}")))?;
    Ok((status, hash))
}

/// The current `state_sha256` of a repository, as a mutating git tool recomputes it to
/// compare with the caller's `expected_sha256`.
///
/// # Errors
/// As [`snapshot`].
pub async fn state_sha256(env: &ToolEnv, repo: &Path) -> Result<String> {
    Ok(snapshot(env, repo).await?.1)
}

/// Refuses to go on when the caller read the repository in another state than it is in now.
/// Without an `expected_sha256` there is nothing to compare and the call proceeds (policy
/// decides whether one was required).
///
/// # Errors
/// E2005 (stale read) with `expected_sha256` and `actual_sha256` in `details`; as
/// [`snapshot`] when the state cannot be read.
pub async fn check_expected(env: &ToolEnv, repo: &Path, expected: Option<&str>) -> Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let actual = state_sha256(env, repo).await?;
    if actual == expected {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::StaleRead,
        format!("repository {} changed since it was read (expected_sha256 no longer matches)", repo.display()),
    )
    .with_details(json!({
        "repo": repo.display().to_string(),
        "expected_sha256": expected,
        "actual_sha256": actual,
        "field": "expected_sha256",
    })))
}

/// The top of the work tree, where status paths are relative to.
async fn toplevel(env: &ToolEnv, repo: &Path) -> Result<PathBuf> {
    let out = git::run(env, repo, &["rev-parse", "--show-toplevel"]).await?;
    let raw = out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout);
    Ok(PathBuf::from(OsStr::from_bytes(raw)))
}

fn too_large(repo: &Path, what: &str) -> Error {
    Error::new(
        ErrorCode::OutputTooLarge,
        format!("{what} of {} is longer than {} bytes", repo.display(), git::OUTPUT_CAP),
    )
    .with_details(json!({ "repo": repo.display().to_string(), "limit_bytes": git::OUTPUT_CAP }))
}

/// SHA-256 of the status bytes followed by `path NUL tag NUL` for each path (see the module
/// docs), as lowercase hex.
fn hash_state(status: &[u8], top: &Path, paths: &[Vec<u8>]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(status);
    for path in paths {
        h.update(path);
        h.update([0]);
        h.update(content_tag(&top.join(OsStr::from_bytes(path))).as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// What is at one work-tree path, as hashed into `state_sha256`.
fn content_tag(path: &Path) -> String {
    use std::io::ErrorKind;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return "missing".into(),
        Err(_) => return "unreadable".into(),
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        return match std::fs::read_link(path) {
            Ok(target) => format!("symlink {}", sha256_hex(target.as_os_str().as_bytes())),
            Err(_) => "unreadable".into(),
        };
    }
    if ft.is_dir() {
        return "directory".into();
    }
    if !ft.is_file() {
        return "other".into();
    }
    match file_sha256(path) {
        Ok(hex) => format!("file {hex}"),
        Err(_) => "unreadable".into(),
    }
}

/// SHA-256 of a regular file's bytes, read without following a final symlink and without
/// blocking on anything that turned out not to be a regular file.
fn file_sha256(path: &Path) -> std::io::Result<String> {
    use rustix::fs::OFlags;
    use sha2::{Digest, Sha256};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// What `git status --porcelain=v2 --branch -z` says, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// See [`Output::branch`].
    pub branch: Option<String>,
    /// See [`Output::head`].
    pub head: Option<String>,
    /// See [`Output::upstream`].
    pub upstream: Option<String>,
    /// See [`Output::ahead`].
    pub ahead: u64,
    /// See [`Output::behind`].
    pub behind: u64,
    /// See [`Output::staged`].
    pub staged: Vec<Entry>,
    /// See [`Output::unstaged`].
    pub unstaged: Vec<Entry>,
    /// See [`Output::untracked`].
    pub untracked: Vec<Entry>,
    /// See [`Output::conflicted`].
    pub conflicted: Vec<Entry>,
    /// The paths, as git printed them (bytes, not lossily decoded), of the tracked entries
    /// whose work-tree content differs from the index: every unstaged and conflicted entry.
    /// Their content is hashed into `state_sha256`.
    pub dirty_paths: Vec<Vec<u8>>,
}

impl Status {
    /// Whether no path is staged, unstaged, untracked or conflicted.
    pub fn is_clean(&self) -> bool {
        self.staged.is_empty() && self.unstaged.is_empty() && self.untracked.is_empty() && self.conflicted.is_empty()
    }
}

/// Parses `git status --porcelain=v2 --branch -z` output.
///
/// Records are NUL-terminated: `# branch.*` headers, ordinary `1` and rename/copy `2`
/// entries (whose original path is the following record), unmerged `u` entries, untracked
/// `?` and ignored `!` entries (the latter dropped). Paths are taken verbatim (`-z` does not
/// quote them); bytes that are not UTF-8 are replaced.
///
/// # Errors
/// A description of the first record that does not fit the format.
pub fn parse_porcelain_v2(raw: &[u8]) -> Result<Status, String> {
    let mut s = Status::default();
    let mut records = raw.split(|b| *b == 0).filter(|r| !r.is_empty());
    while let Some(record) = records.next() {
        let line = String::from_utf8_lossy(record);
        let bad = || format!("malformed record {:?}", clip(&line));
        let (kind, rest) = line.split_once(' ').ok_or_else(bad)?;
        match kind {
            "#" => parse_header(&mut s, rest)?,
            "1" => {
                // 1 XY sub mH mI mW hH hI path
                let f: Vec<&str> = rest.splitn(8, ' ').collect();
                let [xy, .., path] = f[..] else {
                    return Err(bad());
                };
                if f.len() != 8 {
                    return Err(bad());
                }
                push_changes(&mut s, xy, path, None).ok_or_else(bad)?;
                note_dirty(&mut s, xy, record, 8);
            }
            "2" => {
                // 2 XY sub mH mI mW hH hI Xscore path NUL origPath
                let f: Vec<&str> = rest.splitn(9, ' ').collect();
                let [xy, .., path] = f[..] else {
                    return Err(bad());
                };
                if f.len() != 9 {
                    return Err(bad());
                }
                let orig = records.next().ok_or_else(|| format!("rename of {path:?} has no original path"))?;
                push_changes(&mut s, xy, path, Some(String::from_utf8_lossy(orig).into_owned())).ok_or_else(bad)?;
                note_dirty(&mut s, xy, record, 9);
            }
            "u" => {
                // u XY sub m1 m2 m3 mW h1 h2 h3 path
                let f: Vec<&str> = rest.splitn(10, ' ').collect();
                let [xy, .., path] = f[..] else {
                    return Err(bad());
                };
                if f.len() != 10 {
                    return Err(bad());
                }
                let status = conflict_kind(xy).filter(|_| !path.is_empty()).ok_or_else(bad)?;
                s.conflicted.push(Entry { path: path.to_owned(), status, orig_path: None });
                s.dirty_paths.extend(after_spaces(record, 10).map(<[u8]>::to_vec));
            }
            "?" if !rest.is_empty() => {
                s.untracked.push(Entry { path: rest.to_owned(), status: "untracked", orig_path: None });
            }
            "!" => {}
            _ => return Err(bad()),
        }
    }
    Ok(s)
}

/// Records the raw path of an ordinary or rename entry whose work tree differs from the index
/// (`Y` is not `.`); the path follows the `fields`-th space of the record.
fn note_dirty(s: &mut Status, xy: &str, record: &[u8], fields: usize) {
    if xy.as_bytes().get(1).is_some_and(|y| *y != b'.') {
        s.dirty_paths.extend(after_spaces(record, fields).map(<[u8]>::to_vec));
    }
}

/// The bytes of a record after its `n`-th space (the path, which may itself hold spaces).
fn after_spaces(record: &[u8], n: usize) -> Option<&[u8]> {
    let (i, _) = record.iter().enumerate().filter(|(_, b)| **b == b' ').nth(n - 1)?;
    record.get(i + 1..)
}

/// Applies one `# branch.*` header; other headers (e.g. `# stash`) are ignored.
fn parse_header(s: &mut Status, rest: &str) -> Result<(), String> {
    let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
    match key {
        "branch.oid" if value == "(initial)" => s.head = None,
        "branch.oid" if super::log::is_object_id(value) => s.head = Some(value.to_owned()),
        "branch.oid" => return Err(format!("malformed branch.oid header {:?}", clip(value))),
        "branch.head" => s.branch = (value != "(detached)").then(|| value.to_owned()),
        "branch.upstream" => s.upstream = Some(value.to_owned()),
        "branch.ab" => {
            let bad = || format!("malformed branch.ab header {value:?}");
            let (a, b) = value.split_once(' ').ok_or_else(bad)?;
            s.ahead = a.strip_prefix('+').and_then(|n| n.parse().ok()).ok_or_else(bad)?;
            s.behind = b.strip_prefix('-').and_then(|n| n.parse().ok()).ok_or_else(bad)?;
        }
        _ => {}
    }
    Ok(())
}

/// Files an ordinary or rename entry under staged (X) and unstaged (Y). `None` when XY is
/// not two known status letters or the path is empty.
fn push_changes(s: &mut Status, xy: &str, path: &str, orig: Option<String>) -> Option<()> {
    let mut letters = xy.chars();
    let (x, y) = (letters.next()?, letters.next()?);
    if letters.next().is_some() || path.is_empty() {
        return None;
    }
    let (x, y) = (change_kind(x)?, change_kind(y)?);
    for (kind, list) in [(x, &mut s.staged), (y, &mut s.unstaged)] {
        if let Some(status) = kind {
            let orig_path = if matches!(status, "renamed" | "copied") { orig.clone() } else { None };
            list.push(Entry { path: path.to_owned(), status, orig_path });
        }
    }
    Some(())
}

/// One porcelain status letter: `Some(None)` for unchanged (`.`), `None` for an unknown letter.
fn change_kind(c: char) -> Option<Option<&'static str>> {
    Some(Some(match c {
        '.' => return Some(None),
        'M' => "modified",
        'T' => "type_changed",
        'A' => "added",
        'D' => "deleted",
        'R' => "renamed",
        'C' => "copied",
        'U' => "unmerged",
        _ => return None,
    }))
}

/// An unmerged entry's two letters, named as `git status` names them in long form.
fn conflict_kind(xy: &str) -> Option<&'static str> {
    Some(match xy {
        "DD" => "both_deleted",
        "AU" => "added_by_us",
        "UD" => "deleted_by_them",
        "UA" => "added_by_them",
        "DU" => "deleted_by_us",
        "AA" => "both_added",
        "UU" => "both_modified",
        _ => return None,
    })
}

/// The first 200 characters of a record, for error messages.
fn clip(line: &str) -> String {
    line.chars().take(200).collect()
}

fn output_schema() -> Value {
    let entry = |kinds: Value| {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1},
                "status": {"type": "string", "enum": kinds},
                "orig_path": {"type": "string", "description": "Only for renamed and copied entries."}
            },
            "required": ["path", "status"],
            "additionalProperties": false
        })
    };
    let list = |kinds: Value| json!({"type": "array", "items": entry(kinds)});
    let nullable = |description: &str| json!({"type": ["string", "null"], "description": description});
    json!({
        "type": "object",
        "properties": {
            "repo_path": {"type": "string"},
            "branch": nullable("null when HEAD is detached"),
            "head": {"type": ["string", "null"], "pattern": "^[0-9a-f]{40,64}$", "description": "null on an unborn branch"},
            "upstream": nullable("null when no upstream is configured"),
            "ahead": {"type": "integer", "minimum": 0},
            "behind": {"type": "integer", "minimum": 0},
            "clean": {"type": "boolean"},
            "staged": list(json!(CHANGE_KINDS)),
            "unstaged": list(json!(CHANGE_KINDS)),
            "untracked": list(json!(["untracked"])),
            "conflicted": list(json!(CONFLICT_KINDS)),
            "state_sha256": {
                "type": "string",
                "pattern": "^[0-9a-f]{64}$",
                "description": "SHA-256 of the raw `git status --porcelain=v2 --branch -z` output and of the work-tree content of every changed and untracked path; pass as expected_sha256 to git_commit, git_pull and git_push."
            }
        },
        "required": [
            "repo_path", "branch", "head", "upstream", "ahead", "behind", "clean",
            "staged", "unstaged", "untracked", "conflicted", "state_sha256"
        ],
        "additionalProperties": false
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::contract::Contract;
    use crate::house::House;
    use crate::tools::file::Roots;

    fn ctx() -> ToolContext {
        ToolContext::new(Arc::new(ToolEnv::new(Roots::new::<&str>(&[]).unwrap())), House::Timmy, false, "t")
    }

    fn entry(path: &str, status: &'static str) -> Entry {
        Entry { path: path.into(), status, orig_path: None }
    }

    /// Recorded from git 2.47 mid-merge on a branch one ahead and one behind its upstream:
    /// an unstaged edit, a staged rename of a path with spaces, a staged add, a conflict,
    /// an untracked directory and an untracked file with spaces.
    const RECORDED: &[u8] = b"# branch.oid 960dce81bc9ce891b7441eec8a0251269445d7dc\0# branch.head main\0\
# branch.upstream origin/main\0# branch.ab +1 -1\0\
1 .M N... 100644 100644 100644 78981922613b2afb6025042ff6bd878ac1994e85 78981922613b2afb6025042ff6bd878ac1994e85 a.txt\0\
2 R. N... 100644 100644 100644 f2ad6c76f0115a6ba5b00456a849810e7ec0af20 f2ad6c76f0115a6ba5b00456a849810e7ec0af20 R100 e f.txt\0c d.txt\0\
1 A. N... 000000 100644 100644 0000000000000000000000000000000000000000 3e757656cf36eca53338e520d134963a44f793f8 new.txt\0\
u UU N... 100644 100644 100644 100644 587be6b4c3f93f93c489c0111bba5596147a26cb ba2906d0666cf726c7eaadd2cd3db615dedfdf3a 2299c37978265a95cbe835a4b0f0bbf15aad5549 conflict.txt\0\
? dir/\0? u v.txt\0";

    /// Proves every record kind of recorded porcelain v2 output lands in the right list:
    /// headers, ordinary `1`, rename `2` with its original path, unmerged `u`, untracked `?`.
    #[test]
    fn parses_recorded_output() {
        let s = parse_porcelain_v2(RECORDED).unwrap();
        assert_eq!(s.head.as_deref(), Some("960dce81bc9ce891b7441eec8a0251269445d7dc"));
        assert_eq!(s.branch.as_deref(), Some("main"));
        assert_eq!(s.upstream.as_deref(), Some("origin/main"));
        assert_eq!((s.ahead, s.behind), (1, 1));
        let renamed = Entry { path: "e f.txt".into(), status: "renamed", orig_path: Some("c d.txt".into()) };
        assert_eq!(s.staged, vec![renamed, entry("new.txt", "added")]);
        assert_eq!(s.unstaged, vec![entry("a.txt", "modified")]);
        assert_eq!(s.conflicted, vec![entry("conflict.txt", "both_modified")]);
        assert_eq!(s.untracked, vec![entry("dir/", "untracked"), entry("u v.txt", "untracked")]);
        assert_eq!(s.dirty_paths, vec![b"a.txt".to_vec(), b"conflict.txt".to_vec()], "unstaged and conflicted");
        assert!(!s.is_clean());
    }

    /// Proves an initial commit (unborn branch) gives a null head, and a detached HEAD a null
    /// branch, with an entry both staged and unstaged (`MM`) listed in both.
    #[test]
    fn parses_initial_and_detached() {
        let initial = b"# branch.oid (initial)\0# branch.head main\0\
1 A. N... 000000 100644 100644 0000000000000000000000000000000000000000 587be6b4c3f93f93c489c0111bba5596147a26cb x\0? y\0";
        let s = parse_porcelain_v2(initial).unwrap();
        assert_eq!((s.head, s.branch.as_deref(), s.upstream), (None, Some("main"), None));
        assert_eq!(s.staged, vec![entry("x", "added")]);
        assert_eq!(s.untracked, vec![entry("y", "untracked")]);

        let detached = b"# branch.oid a84fa51f737423147c2333e6fad561f1e9b1e405\0# branch.head (detached)\0\
1 MM N... 100644 100644 100644 61780798228d17af2d34fce4cfbdf35556832472 63d7d705891b78daf172fb11da13d666fd5062cd b.txt\0";
        let s = parse_porcelain_v2(detached).unwrap();
        assert_eq!(s.branch, None);
        assert_eq!(s.head.as_deref(), Some("a84fa51f737423147c2333e6fad561f1e9b1e405"));
        assert_eq!(s.staged, vec![entry("b.txt", "modified")]);
        assert_eq!(s.unstaged, vec![entry("b.txt", "modified")]);
    }

    /// Proves clean output parses to a clean status and malformed records are refused.
    #[test]
    fn clean_output_and_malformed_records() {
        let s =
            parse_porcelain_v2(b"# branch.oid 960dce81bc9ce891b7441eec8a0251269445d7dc\0# branch.head main\0").unwrap();
        assert!(s.is_clean());
        assert!(parse_porcelain_v2(b"").unwrap().is_clean());
        for bad in [
            &b"1 .M short\0"[..],
            b"x what\0",
            b"1 ZZ N... 1 2 3 a b p\0",
            b"# branch.ab 1 2\0",
            b"2 R. N... 1 2 3 a b R100 p\0",
        ] {
            assert!(parse_porcelain_v2(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Proves a `branch.oid` that is no object id and entries with empty paths are refused, so
    /// a parse always fits the output schema (fuzz/regressions/git_status: an empty id became `head`).
    #[test]
    fn malformed_oid_and_empty_paths_are_refused() {
        for bad in [
            &b"# branch.oid 0\0"[..],
            b"# branch.oid 960DCE81BC9CE891B7441EEC8A0251269445D7DC\0",
            b"? \0",
            b"1 .M N... 100644 100644 100644 7898192261 7898192261 \0",
            b"u UU N... 1 2 3 4 a b c \0",
        ] {
            assert!(parse_porcelain_v2(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Runs the real git on a fixture, isolated from the machine's git config.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.invalid"])
            .args(["-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"])
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A fresh repository with one commit of `a.txt`, `b.txt` and `c.txt`.
    fn repo_with_commit(dir: &Path) {
        git(dir, &["init", "-q"]);
        for f in ["a.txt", "b.txt", "c.txt"] {
            std::fs::write(dir.join(f), format!("{f}\n")).unwrap();
        }
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "init"]);
    }

    async fn status(dir: &Path) -> Result<Output> {
        GitStatus::run(&ctx(), Input { repo_path: dir.to_str().unwrap().to_owned() }).await
    }

    /// Proves a fresh repository with a commit is clean, on `main`, at the real HEAD, with no
    /// upstream, and that its output validates against the contract.
    #[tokio::test]
    async fn fresh_repository_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        repo_with_commit(dir.path());
        let out = status(dir.path()).await.unwrap();
        assert!(out.clean);
        assert_eq!(out.branch.as_deref(), Some("main"));
        assert_eq!(out.head.as_deref(), Some(git(dir.path(), &["rev-parse", "HEAD"]).trim()));
        assert_eq!((out.upstream.as_deref(), out.ahead, out.behind), (None, 0, 0));
        let raw = std::process::Command::new("git").arg("-C").arg(dir.path()).args(STATUS_ARGS).output().unwrap();
        assert_eq!(out.state_sha256, sha256_hex(&raw.stdout), "a clean tree hashes the status output alone");
        let contract = Contract::new(GitStatus::spec()).unwrap();
        contract.validate_output(&serde_json::to_value(&out).unwrap()).unwrap();
    }

    /// Proves edits, staged edits, adds, deletes, renames and untracked files are each reported
    /// where they belong, that the hash is of git's exact output, and exactly when it moves.
    #[tokio::test]
    async fn changes_are_classified_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        repo_with_commit(d);
        let clean_hash = status(d).await.unwrap().state_sha256;

        std::fs::write(d.join("a.txt"), "edited\n").unwrap(); // unstaged modify
        std::fs::write(d.join("b.txt"), "staged\n").unwrap(); // staged modify
        git(d, &["add", "b.txt"]);
        git(d, &["mv", "c.txt", "renamed.txt"]); // staged rename
        std::fs::write(d.join("new.txt"), "new\n").unwrap(); // staged add
        git(d, &["add", "new.txt"]);
        std::fs::remove_file(d.join("new.txt")).unwrap(); // ...then deleted in the work tree
        std::fs::write(d.join("loose file.txt"), "?\n").unwrap(); // untracked

        let out = status(d).await.unwrap();
        assert!(!out.clean);
        let renamed = Entry { path: "renamed.txt".into(), status: "renamed", orig_path: Some("c.txt".into()) };
        assert_eq!(out.staged, vec![entry("b.txt", "modified"), entry("new.txt", "added"), renamed]);
        assert_eq!(out.unstaged, vec![entry("a.txt", "modified"), entry("new.txt", "deleted")]);
        assert_eq!(out.untracked, vec![entry("loose file.txt", "untracked")]);
        assert!(out.conflicted.is_empty());

        assert_ne!(out.state_sha256, clean_hash);
        assert_eq!(state_sha256(&ctx().env, d).await.unwrap(), out.state_sha256, "unchanged state, same hash");
        std::fs::write(d.join("a.txt"), "edited again\n").unwrap();
        let re_edited = state_sha256(&ctx().env, d).await.unwrap();
        assert_ne!(re_edited, out.state_sha256, "re-editing an already-modified file moves the hash");
        git(d, &["add", "a.txt"]);
        let staged = state_sha256(&ctx().env, d).await.unwrap();
        assert_ne!(staged, re_edited, "staging moves the hash");
        std::fs::write(d.join("a.txt"), "edited once more\n").unwrap();
        assert_ne!(
            state_sha256(&ctx().env, d).await.unwrap(),
            staged,
            "editing a path with no unstaged change moves the hash"
        );
        Contract::new(GitStatus::spec()).unwrap().validate_output(&serde_json::to_value(&out).unwrap()).unwrap();
    }

    /// Proves edits inside untracked files and untracked directories, and to a dirty file's
    /// content seen from a subdirectory, move the hash, while ignored files do not.
    #[tokio::test]
    async fn hash_covers_untracked_and_dirty_content() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        repo_with_commit(d);
        std::fs::write(d.join(".gitignore"), "*.log\n").unwrap();
        std::fs::create_dir_all(d.join("newdir/deep")).unwrap();
        std::fs::write(d.join("newdir/deep/x.txt"), "1").unwrap();
        std::fs::write(d.join("loose.txt"), "1").unwrap();
        std::fs::write(d.join("a.txt"), "dirty 1").unwrap();
        let env = ctx().env;
        let mut seen = vec![state_sha256(&env, d).await.unwrap()];
        let sub = d.join("newdir");
        assert_eq!(state_sha256(&env, &sub).await.unwrap(), seen[0], "the same state from a subdirectory");
        for (file, content) in [("newdir/deep/x.txt", "2"), ("loose.txt", "2"), ("a.txt", "dirty 2")] {
            std::fs::write(d.join(file), content).unwrap();
            let now = state_sha256(&env, d).await.unwrap();
            assert!(!seen.contains(&now), "editing {file} must move the hash");
            assert_eq!(state_sha256(&env, &sub).await.unwrap(), now, "{file}: same from a subdirectory");
            seen.push(now);
        }
        std::fs::write(d.join("ignored.log"), "1").unwrap();
        assert_eq!(state_sha256(&env, d).await.unwrap(), *seen.last().unwrap(), "ignored files are not covered");
        std::os::unix::fs::symlink("a.txt", d.join("link")).unwrap();
        assert!(!seen.contains(&state_sha256(&env, d).await.unwrap()), "a new symlink moves the hash");
    }

    /// Proves check_expected passes the current hash and refuses an old one with E2005
    /// carrying both hashes.
    #[tokio::test]
    async fn check_expected_refuses_a_stale_hash() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        repo_with_commit(d);
        let env = ctx().env;
        let read = state_sha256(&env, d).await.unwrap();
        check_expected(&env, d, Some(&read)).await.unwrap();
        check_expected(&env, d, None).await.unwrap();
        std::fs::write(d.join("b.txt"), "changed\n").unwrap();
        let err = check_expected(&env, d, Some(&read)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::StaleRead);
        assert_eq!(err.details["expected_sha256"], json!(read));
        assert_eq!(err.details["actual_sha256"], json!(state_sha256(&env, d).await.unwrap()));
    }

    /// Proves an unborn branch reports a null head and a detached HEAD a null branch.
    #[tokio::test]
    async fn unborn_and_detached_heads() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        std::fs::write(dir.path().join("x"), "x\n").unwrap();
        let out = status(dir.path()).await.unwrap();
        assert_eq!((out.branch.as_deref(), out.head.as_deref()), (Some("main"), None));
        assert_eq!(out.untracked, vec![entry("x", "untracked")]);
        Contract::new(GitStatus::spec()).unwrap().validate_output(&serde_json::to_value(&out).unwrap()).unwrap();

        let dir = tempfile::tempdir().unwrap();
        repo_with_commit(dir.path());
        git(dir.path(), &["checkout", "-q", "--detach"]);
        let out = status(dir.path()).await.unwrap();
        assert_eq!(out.branch, None);
        assert_eq!(out.head.as_deref(), Some(git(dir.path(), &["rev-parse", "HEAD"]).trim()));
        assert!(out.clean);
    }

    /// Proves a clone reports its upstream, and counts ahead after a local commit and behind
    /// after fetching a commit made upstream.
    #[tokio::test]
    async fn upstream_ahead_and_behind() {
        let origin = tempfile::tempdir().unwrap();
        repo_with_commit(origin.path());
        let parent = tempfile::tempdir().unwrap();
        let clone: PathBuf = parent.path().join("clone");
        git(parent.path(), &["clone", "-q", origin.path().to_str().unwrap(), clone.to_str().unwrap()]);

        std::fs::write(clone.join("a.txt"), "local\n").unwrap();
        git(&clone, &["commit", "-q", "-am", "local"]);
        std::fs::write(origin.path().join("b.txt"), "remote\n").unwrap();
        git(origin.path(), &["commit", "-q", "-am", "remote"]);
        let before_fetch = status(&clone).await.unwrap();
        assert_eq!(before_fetch.upstream.as_deref(), Some("origin/main"));
        assert_eq!((before_fetch.ahead, before_fetch.behind), (1, 0));

        git(&clone, &["fetch", "-q"]);
        let out = status(&clone).await.unwrap();
        assert_eq!((out.ahead, out.behind), (1, 1));
        assert!(out.clean);
        assert_ne!(out.state_sha256, before_fetch.state_sha256, "a fetch that moves the upstream moves the hash");
    }

    /// Proves a merge conflict is reported under `conflicted` and not as a staged change.
    #[tokio::test]
    async fn merge_conflicts_are_conflicted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        repo_with_commit(d);
        git(d, &["checkout", "-q", "-b", "side"]);
        std::fs::write(d.join("a.txt"), "side\n").unwrap();
        git(d, &["commit", "-q", "-am", "side"]);
        git(d, &["checkout", "-q", "main"]);
        std::fs::write(d.join("a.txt"), "main\n").unwrap();
        git(d, &["commit", "-q", "-am", "main"]);
        let merge = std::process::Command::new("git").arg("-C").arg(d).args(["merge", "-q", "side"]).output().unwrap();
        assert!(!merge.status.success(), "the merge must conflict");

        let out = status(d).await.unwrap();
        assert_eq!(out.conflicted, vec![entry("a.txt", "both_modified")]);
        assert!(out.staged.is_empty() && out.unstaged.is_empty());
        assert!(!out.clean);
        Contract::new(GitStatus::spec()).unwrap().validate_output(&serde_json::to_value(&out).unwrap()).unwrap();
    }

    /// Proves a directory that is not a repository, and a path that does not exist, are E3006.
    #[tokio::test]
    async fn non_repository_and_missing_path_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(status(dir.path()).await.unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(status(&dir.path().join("missing")).await.unwrap_err().code, ErrorCode::NotFound);
    }

    /// Proves the breaker/proof target is the repository path and the input schema is closed.
    #[test]
    fn target_is_the_repository_and_input_is_closed() {
        assert_eq!(GitStatus::target(&json!({"repo_path": "/srv/repo"})), "/srv/repo");
        let c = Contract::new(GitStatus::spec()).unwrap();
        c.validate_input(&json!({"repo_path": "/srv/repo"})).unwrap();
        assert!(c.validate_input(&json!({})).is_err());
        assert!(c.validate_input(&json!({"repo_path": "/srv/repo", "branch": "x"})).is_err());
    }
}
