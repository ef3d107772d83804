//! `git_push`: publish one local branch to the same-named branch of a configured remote.
//!
//! The call runs `git push --porcelain [--set-upstream] -- <remote>
//! refs/heads/<branch>:refs/heads/<branch>`: exactly one branch, fully spelled, so a branch
//! name can never be read as another refspec, and never with `+` or `--force`. **Force
//! pushes are not offered**: `force: true` is refused (E1003), so a push can only
//! fast-forward a remote branch or create one, which is why the tool is annotated not
//! destructive. It is idempotent (pushing again is "up to date") and open-world.
//!
//! Failures carry git's own words in the message and `details.git_stderr`, all **E3003**:
//! a rejected push (the message names git's reason, such as `[rejected] (non-fast-forward)`
//! or `(fetch first)`, and `details.push_status` repeats it), and a **missing remote** — E3003
//! rather than E3006, because E3006 means the repository at `repo_path` is not there, and a
//! caller must be able to tell "wrong repository" from "wrong remote". Only a configured
//! remote **name** is accepted (checked with `git remote get-url`, whose "No such remote"
//! message the error carries), so a caller cannot push to a URL or path of its choosing.
//! A branch that does not exist locally is E3006.
//!
//! # Protected branches and production
//!
//! A push to a branch matching [`PROTECTED_BRANCHES`] (`main`, `master`, `release/*`,
//! `production`) changes production: houses whose policy says so (Allegro) need Timmy's
//! approval for it. A call that names no `branch` pushes the checked-out branch, which cannot
//! be known from the arguments alone, so it is treated as protected too (fail closed): name
//! the branch to push a feature branch without approval.
//!
//! # Dry run
//!
//! `git push --dry-run --porcelain`: git works out what would happen, talking to the remote
//! but sending nothing and changing no ref anywhere.
//!
//! # Read before write
//!
//! With `expected_sha256` (the `state_sha256` of `git_status`), the push is refused with E2005
//! when the repository changed since it was read. Ezra must pass it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::status::check_expected;
use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::tools::git::{self, Access, Extra};
use crate::tools::{ToolContext, TypedTool};

/// Branches whose push changes production. A trailing `/*` matches any branch under that
/// prefix (`release/*` matches `release/1.2` and `release/1.2/hotfix`).
pub const PROTECTED_BRANCHES: &[&str] = &["main", "master", "release/*", "production"];

/// The `status` of a push.
pub const PUSH_STATUSES: &[&str] = &["fast_forward", "new_branch", "up_to_date"];

/// Whether pushing to `branch` (a short name, or `refs/heads/<name>`) changes production.
pub fn is_protected(branch: &str) -> bool {
    let branch = short_name(branch);
    PROTECTED_BRANCHES.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => branch.len() > prefix.len() && branch.starts_with(prefix),
        None => branch == *p,
    })
}

fn short_name(branch: &str) -> &str {
    branch.strip_prefix("refs/heads/").unwrap_or(branch)
}

/// Arguments of `git_push`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Absolute path of the repository.
    pub repo_path: String,
    /// A configured remote's name.
    #[serde(default = "git::default_remote")]
    pub remote: String,
    /// The local branch to push (to the same name); the checked-out branch when absent.
    #[serde(default)]
    pub branch: Option<String>,
    /// Record the remote branch as the local branch's upstream.
    #[serde(default)]
    pub set_upstream: bool,
    /// Never honoured: present only so that `true` is refused with a clear message.
    #[serde(default)]
    pub force: bool,
    /// `state_sha256` from `git_status`; the push is refused if the repository changed since.
    #[serde(default)]
    pub expected_sha256: Option<String>,
}

/// Result of `git_push`. On a dry run every field says what the push *would* do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The repository path as given.
    pub repo_path: String,
    /// The remote pushed to.
    pub remote: String,
    /// The branch pushed (short name).
    pub branch: String,
    /// Whether the branch is protected (see [`PROTECTED_BRANCHES`]).
    pub protected: bool,
    /// This was a dry run: nothing was sent.
    pub dry_run: bool,
    /// The remote branch moved or was created (would be, on a dry run).
    pub pushed: bool,
    /// One of [`PUSH_STATUSES`].
    pub status: &'static str,
    /// The remote branch before; `null` when it did not exist.
    pub from: Option<String>,
    /// The commit pushed (the local branch's tip).
    pub to: String,
}

/// The `git_push` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct GitPush;

impl TypedTool for GitPush {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "git_push",
            category: Category::Git,
            description: "Push one local branch to the same-named branch of a configured remote; fast-forward or new branch only, never forced. Pushing a protected branch changes production.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "repo_path": git::schema::repo_path(),
                    "remote": git::schema::remote(),
                    "branch": git::schema::not_an_option("Local branch to push to the same name; the checked-out branch when absent (then treated as protected). Must not start with `-`."),
                    "set_upstream": {"type": "boolean", "default": false},
                    "force": {"const": false, "description": "Force pushes are not offered; only false is accepted."},
                    "expected_sha256": git::schema::expected_sha256()
                },
                "required": ["repo_path"],
                "additionalProperties": false
            }),
            output_schema: output_schema(),
            annotations: Annotations { read_only: false, destructive: false, idempotent: true, open_world: true },
            // Medium, not High: only pushes to protected branches change production, and
            // `changes_production` says which (High would make every push production).
            risk: Risk::Medium,
            default_timeout: Duration::from_secs(120),
            dry_run: true,
            content_guard: true,
        }
    }

    fn target(args: &Value) -> String {
        git::target(args)
    }

    /// A push to a protected branch, or to the unnamed checked-out branch (fail closed).
    fn changes_production(args: &Value) -> bool {
        match args.get("branch").and_then(Value::as_str) {
            Some(branch) => is_protected(branch),
            None => true,
        }
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        let env = &*ctx.env;
        let repo = git::repo_path(&input.repo_path).await?;
        if input.force {
            let problem = "force pushes are not offered";
            return Err(Error::new(ErrorCode::InvalidArguments, format!("git_push: `force` {problem}"))
                .with_details(json!({ "field": "force", "problem": problem })));
        }
        git::refuse_option("remote", &input.remote)?;
        if let Some(branch) = &input.branch {
            git::refuse_option("branch", branch)?;
        }
        git::require_remote(env, &repo, &input.remote).await?;
        check_expected(env, &repo, input.expected_sha256.as_deref()).await?;
        let branch = match &input.branch {
            Some(b) => short_name(b).to_owned(),
            None => git::current_branch(env, &repo).await?.ok_or_else(|| {
                Error::new(
                    ErrorCode::ToolFailed,
                    format!("HEAD of {} is detached: name the branch to push", repo.display()),
                )
                .with_details(json!({ "repo": input.repo_path, "field": "branch" }))
            })?,
        };
        let local = format!("refs/heads/{branch}");
        let to = git::resolve(env, &repo, &local).await?.ok_or_else(|| {
            Error::new(ErrorCode::NotFound, format!("{} has no local branch `{branch}`", repo.display()))
                .with_details(json!({ "repo": input.repo_path, "field": "branch", "branch": branch }))
        })?;

        let refspec = format!("{local}:{local}");
        let mut args = vec!["push", "--porcelain"];
        if ctx.dry_run {
            args.push("--dry-run");
        }
        if input.set_upstream {
            args.push("--set-upstream");
        }
        args.extend(["--", input.remote.as_str(), refspec.as_str()]);
        // Full ids in the porcelain summary (`old..new`), so `from` needs no second lookup.
        let extra = Extra { config: &[("core.abbrev", "no")], ..Extra::default() };
        let access = if ctx.dry_run { Access::ReadOnly } else { Access::Mutating };
        let out = git::exec_with(env, &repo, &args, access, extra).await?;
        let line = find_ref_line(&out.stdout_str(), &local);
        if !out.success() {
            let mut e = out.to_error();
            if let Some(line) = line.filter(|l| l.flag == '!') {
                e.message = format!("git push to {} rejected {branch}: {} ({})", input.remote, line.summary, e.message);
                e.details["push_status"] = json!(line.summary);
            }
            return Err(e);
        }
        let line = line.ok_or_else(|| {
            Error::new(ErrorCode::ToolFailed, format!("git push printed no status for {local}"))
                .with_details(json!({ "repo": input.repo_path, "git_stdout": git::redact(&out.stdout_str()) }))
        })?;
        let (status, from) = match line.flag {
            ' ' => ("fast_forward", line.summary.split_once("..").map(|(old, _)| old.to_owned())),
            '*' => ("new_branch", None),
            '=' => ("up_to_date", Some(to.clone())),
            other => {
                return Err(Error::new(
                    ErrorCode::ToolFailed,
                    format!("git push reported {other:?} for {local}: {}", line.summary),
                )
                .with_details(json!({ "repo": input.repo_path, "push_status": line.summary })));
            }
        };
        Ok(Output {
            repo_path: input.repo_path,
            remote: input.remote,
            protected: is_protected(&branch),
            branch,
            dry_run: ctx.dry_run,
            pushed: status != "up_to_date",
            status,
            from,
            to,
        })
    }
}

/// One ref's line of `git push --porcelain` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefLine {
    /// ` ` fast-forward, `+` forced, `-` deleted, `*` new, `!` rejected, `=` up to date.
    pub flag: char,
    /// `old..new`, `[new branch]`, `[up to date]`, `[rejected] (reason)`...
    pub summary: String,
}

/// Finds the line for the remote ref `dst` in `git push --porcelain` output
/// (`<flag> TAB <src>:<dst> TAB <summary>`).
pub fn find_ref_line(porcelain: &str, dst: &str) -> Option<RefLine> {
    porcelain.lines().find_map(|line| {
        let mut fields = line.splitn(3, '\t');
        let (flag, refs, summary) = (fields.next()?, fields.next()?, fields.next()?);
        let mut flag_chars = flag.chars();
        let flag = flag_chars.next()?;
        if flag_chars.next().is_some() || refs.rsplit_once(':').map(|(_, d)| d) != Some(dst) {
            return None;
        }
        Some(RefLine { flag, summary: summary.trim().to_owned() })
    })
}

fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "repo_path": {"type": "string"},
            "remote": {"type": "string"},
            "branch": {"type": "string", "minLength": 1},
            "protected": {"type": "boolean"},
            "dry_run": {"type": "boolean"},
            "pushed": {"type": "boolean", "description": "The remote branch moved or was created (would be, on a dry run)."},
            "status": {"type": "string", "enum": PUSH_STATUSES},
            "from": {"type": ["string", "null"], "pattern": git::schema::OBJECT_ID, "description": "null when the remote branch did not exist"},
            "to": {"type": "string", "pattern": git::schema::OBJECT_ID}
        },
        "required": ["repo_path", "remote", "branch", "protected", "dry_run", "pushed", "status", "from", "to"],
        "additionalProperties": false
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use super::*;
    use crate::tools::Contract;

    /// Proves the protected list matches exactly its names and anything under `release/`.
    #[test]
    fn protected_branches() {
        for b in ["main", "master", "production", "release/1.2", "release/1.2/hotfix", "refs/heads/main"] {
            assert!(is_protected(b), "{b}");
        }
        for b in ["feature/x", "mainline", "release", "release/", "Main", "prod", "my/main"] {
            assert!(!is_protected(b), "{b}");
        }
    }

    /// Proves an unnamed branch counts as production (fail closed) and a named one by the list.
    #[test]
    fn changes_production_fails_closed() {
        assert!(GitPush::changes_production(&json!({"repo_path": "/r"})));
        assert!(GitPush::changes_production(&json!({"repo_path": "/r", "branch": "release/2"})));
        assert!(!GitPush::changes_production(&json!({"repo_path": "/r", "branch": "feature/x"})));
    }

    /// Proves the porcelain line for our ref is found and its flag and summary read, recorded
    /// from git 2.47 with `core.abbrev=no`.
    #[test]
    fn porcelain_lines_are_read() {
        let out = "To /tmp/remote.git\n \trefs/heads/main:refs/heads/main\t7d57add4e632925fda52f0fca3cdee7276e3e7d5..3ad4f397e51280af9fe67523c5d6e178d8aaa402\n*\trefs/heads/f:refs/heads/f\t[new branch]\n!\trefs/heads/x:refs/heads/x\t[rejected] (non-fast-forward)\nDone\n";
        let main = find_ref_line(out, "refs/heads/main").unwrap();
        assert_eq!(main.flag, ' ');
        assert!(main.summary.starts_with("7d57add4e632925fda52f0fca3cdee7276e3e7d5.."));
        assert_eq!(find_ref_line(out, "refs/heads/f").unwrap().flag, '*');
        assert_eq!(
            find_ref_line(out, "refs/heads/x").unwrap(),
            RefLine { flag: '!', summary: "[rejected] (non-fast-forward)".into() }
        );
        assert_eq!(find_ref_line(out, "refs/heads/other"), None);
    }

    /// Proves the contract refuses `force: true` and options in remote and branch, and is
    /// honest: mutating, not destructive, idempotent, open-world, guarded, dry-run capable.
    #[test]
    fn contract_refuses_force_and_options() {
        let c = Contract::new(GitPush::spec()).unwrap();
        let a = c.spec().annotations;
        assert!(!a.read_only && !a.destructive && a.idempotent && a.open_world);
        assert!(c.spec().dry_run && c.spec().content_guard);
        c.validate_input(&json!({"repo_path": "/r", "force": false, "branch": "f"})).unwrap();
        for (field, value) in [("force", json!(true)), ("remote", json!("--receive-pack=x")), ("branch", json!("-f"))] {
            let e = c.validate_input(&json!({"repo_path": "/r", field: value})).unwrap_err();
            assert_eq!((e.code, e.details["field"].as_str()), (ErrorCode::InvalidArguments, Some(field)));
        }
    }
}
