//! `git_pull`: bring the checked-out branch up to date with its remote, fast-forward only.
//!
//! The pull is always `git pull --ff-only --no-rebase --no-autostash <remote> [<branch>]`:
//! HEAD moves forward to the fetched commit or nothing happens. No merge commit is made, no
//! local commit is rewritten, and git refuses to overwrite uncommitted changes, so the tool is
//! annotated not destructive, and idempotent (a second pull of the same remote state changes
//! nothing). It is open-world: it talks to the remote.
//!
//! Failures carry git's own words in the message and `details.git_stderr`, all E3003:
//! a diverged branch ("Not possible to fast-forward"), local changes the update would
//! overwrite ("Your local changes ... would be overwritten"), no upstream, and a missing
//! remote ("No such remote"). Only a configured remote **name** is accepted (checked with
//! `git remote get-url`), so a caller cannot point git at a URL or path of its choosing.
//!
//! # Dry run
//!
//! A dry run **fetches** — `git fetch <remote> [<branch>]`, which updates remote-tracking refs
//! (`refs/remotes/<remote>/*`) and `FETCH_HEAD` only — and then reports what the pull would
//! do without merging: the incoming commit, how many commits would arrive, and whether HEAD
//! can fast-forward to it. HEAD, the index and the work tree are untouched; the output's
//! `note` says so. (Because the remote-tracking ref moves, `git_status`'s `state_sha256` can
//! change after a dry run: read it again before the real pull.)
//!
//! # Read before write
//!
//! With `expected_sha256` (the `state_sha256` of `git_status`), the pull is refused with
//! E2005 when the repository changed since it was read. Ezra must pass it.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::status::check_expected;
use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::Result;
use crate::tools::git;
use crate::tools::{ToolContext, ToolEnv, TypedTool};

/// Arguments of `git_pull`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Absolute path of the repository.
    pub repo_path: String,
    /// A configured remote's name.
    #[serde(default = "git::default_remote")]
    pub remote: String,
    /// The remote branch to pull; the branch's upstream when absent.
    #[serde(default)]
    pub branch: Option<String>,
    /// `state_sha256` from `git_status`; the pull is refused if the repository changed since.
    #[serde(default)]
    pub expected_sha256: Option<String>,
}

/// Result of `git_pull`. On a dry run every field says what the pull *would* do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The repository path as given.
    pub repo_path: String,
    /// The remote pulled from.
    pub remote: String,
    /// The remote branch named in the call; `null` when the upstream was used.
    pub branch: Option<String>,
    /// This was a dry run: fetched, not merged.
    pub dry_run: bool,
    /// HEAD moved (would move, on a dry run).
    pub updated: bool,
    /// HEAD before; `null` on a branch with no commits yet.
    pub from: Option<String>,
    /// HEAD after (would be after, on a dry run).
    pub to: Option<String>,
    /// Commits new to the branch (that would be, on a dry run).
    pub commits_pulled: u64,
    /// HEAD can fast-forward to the fetched commit (or already contains it). Always true
    /// after a real pull; false on a dry run means the pull would be refused.
    pub fast_forward: bool,
    /// What a dry run touched; `null` after a real pull.
    pub note: Option<String>,
}

/// The `git_pull` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct GitPull;

impl TypedTool for GitPull {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "git_pull",
            category: Category::Git,
            description: "Fast-forward the checked-out branch to its remote (git pull --ff-only); never merges, rebases or overwrites local changes. Dry run fetches and reports what would come in.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "repo_path": git::schema::repo_path(),
                    "remote": git::schema::remote(),
                    "branch": git::schema::not_an_option("Remote branch to pull; the upstream when absent. Must not start with `-`."),
                    "expected_sha256": git::schema::expected_sha256()
                },
                "required": ["repo_path"],
                "additionalProperties": false
            }),
            output_schema: output_schema(),
            annotations: Annotations { read_only: false, destructive: false, idempotent: true, open_world: true },
            risk: Risk::Medium,
            default_timeout: Duration::from_secs(120),
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
        git::refuse_option("remote", &input.remote)?;
        if let Some(branch) = &input.branch {
            git::refuse_option("branch", branch)?;
        }
        git::require_remote(env, &repo, &input.remote).await?;
        check_expected(env, &repo, input.expected_sha256.as_deref()).await?;
        let from = git::head(env, &repo).await?;
        let mut out = Output {
            repo_path: input.repo_path.clone(),
            remote: input.remote.clone(),
            branch: input.branch.clone(),
            dry_run: ctx.dry_run,
            updated: false,
            from: from.clone(),
            to: from.clone(),
            commits_pulled: 0,
            fast_forward: true,
            note: None,
        };
        if ctx.dry_run {
            return preview(env, &repo, &input, out).await;
        }

        let mut args = vec!["pull", "--ff-only", "--no-rebase", "--no-autostash", "--", &input.remote];
        args.extend(input.branch.as_deref());
        git::run_mutating(env, &repo, &args).await?;
        let to = git::head(env, &repo).await?;
        out.commits_pulled = new_commits(env, &repo, from.as_deref(), to.as_deref()).await?;
        out.updated = to != from;
        out.to = to;
        Ok(out)
    }
}

/// The dry run: fetch, then compare HEAD with what the pull would merge.
async fn preview(env: &ToolEnv, repo: &Path, input: &Input, mut out: Output) -> Result<Output> {
    let mut args = vec!["fetch", "--", &input.remote];
    args.extend(input.branch.as_deref());
    git::run_mutating(env, repo, &args).await?;
    // What the pull would merge: the fetched branch, or the upstream (git's own
    // "no upstream configured" error when there is none, as the pull would fail).
    let incoming_rev = if input.branch.is_some() { "FETCH_HEAD^{commit}" } else { "@{upstream}^{commit}" };
    let resolved = git::run(env, repo, &["rev-parse", "--verify", "--end-of-options", incoming_rev]).await?;
    let incoming = resolved.stdout_str().trim().to_owned();
    let from = out.from.clone();
    let fast_forward = match &from {
        None => true,
        Some(head) => is_ancestor(env, repo, head, &incoming).await?,
    };
    out.fast_forward = fast_forward;
    out.commits_pulled = new_commits(env, repo, from.as_deref(), Some(&incoming)).await?;
    if fast_forward {
        out.updated = from.as_deref() != Some(incoming.as_str());
        out.to = Some(incoming);
    }
    let mut note = format!(
        "dry run: fetched from {}, which updated only remote-tracking refs and FETCH_HEAD; HEAD, the index and the work tree are unchanged",
        input.remote
    );
    if !fast_forward {
        note.push_str("; HEAD has commits the remote lacks, so `git pull --ff-only` would refuse (not a fast-forward)");
    }
    out.note = Some(note);
    Ok(out)
}

/// Whether `ancestor` is reachable from `descendant`.
async fn is_ancestor(env: &ToolEnv, repo: &Path, ancestor: &str, descendant: &str) -> Result<bool> {
    let args = ["merge-base", "--is-ancestor", "--end-of-options", ancestor, descendant];
    let out = git::exec(env, repo, &args, git::Access::ReadOnly).await?;
    match out.exit_code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(out.to_error()),
    }
}

/// Commits reachable from `to` and not from `from`.
async fn new_commits(env: &ToolEnv, repo: &Path, from: Option<&str>, to: Option<&str>) -> Result<u64> {
    match (from, to) {
        (_, None) => Ok(0),
        (Some(from), Some(to)) if from == to => Ok(0),
        (None, Some(to)) => git::count(env, repo, &[to]).await,
        (Some(from), Some(to)) => git::count(env, repo, &[&format!("^{from}"), to]).await,
    }
}

fn output_schema() -> Value {
    let id = json!({"type": ["string", "null"], "pattern": git::schema::OBJECT_ID});
    json!({
        "type": "object",
        "properties": {
            "repo_path": {"type": "string"},
            "remote": {"type": "string"},
            "branch": {"type": ["string", "null"]},
            "dry_run": {"type": "boolean"},
            "updated": {"type": "boolean", "description": "HEAD moved (would move, on a dry run)."},
            "from": id,
            "to": id,
            "commits_pulled": {"type": "integer", "minimum": 0},
            "fast_forward": {"type": "boolean"},
            "note": {"type": ["string", "null"]}
        },
        "required": ["repo_path", "remote", "branch", "dry_run", "updated", "from", "to", "commits_pulled", "fast_forward", "note"],
        "additionalProperties": false
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use super::*;
    use crate::tools::Contract;

    /// Proves the contract is honest: mutating, not destructive, idempotent, open-world,
    /// dry-run capable and content-guarded; options are refused in remote and branch.
    #[test]
    fn contract_is_honest_and_refuses_options() {
        let c = Contract::new(GitPull::spec()).unwrap();
        let a = c.spec().annotations;
        assert!(!a.read_only && !a.destructive && a.idempotent && a.open_world);
        assert!(c.spec().dry_run && c.spec().content_guard);
        c.validate_input(&json!({"repo_path": "/r", "remote": "origin", "branch": "main"})).unwrap();
        for (field, bad) in [("remote", "--upload-pack=evil"), ("branch", "-x")] {
            let e = c.validate_input(&json!({"repo_path": "/r", field: bad})).unwrap_err();
            assert_eq!(e.details["field"], field);
        }
        assert!(c.validate_input(&json!({"repo_path": "/r", "rebase": true})).is_err());
    }
}
