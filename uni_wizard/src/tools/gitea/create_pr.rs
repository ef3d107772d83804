//! `gitea_create_pr`: opens a pull request from `head` into `base`.
//!
//! Gitea answers 201 with the new pull request, 404 (E3006) when the repository or a branch
//! does not exist, 409 (E3003) when an open pull request from `head` into `base` already
//! exists, and 422 (E3003) when there is nothing to merge.
//!
//! `dry_run` creates nothing: it checks the arguments, that the repository answers (listing
//! its open pull requests into `base`), and whether one from `head` already exists (Gitea would
//! refuse with 409), then reports the pull request it would open. The spec subset has no
//! branch operation, so a missing branch shows only in the real call.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{client, target_of};
use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::gitea::{CreatePullRequestOption, PullQuery, StateFilter};
use crate::tools::{ToolContext, TypedTool};

/// JSON Schema pattern of a branch (`head` may be `owner:branch` for a fork).
pub const BRANCH_PATTERN: &str = "^([A-Za-z0-9_.-]+:)?[A-Za-z0-9_][A-Za-z0-9_./-]{0,250}$";
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 255;
/// Longest body, in characters.
pub const MAX_BODY_CHARS: usize = 65_536;

/// Arguments of `gitea_create_pr`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Repository owner (else the configured default).
    #[serde(default)]
    pub owner: Option<String>,
    /// Repository name (else the configured default).
    #[serde(default)]
    pub repo: Option<String>,
    /// Source branch, or `owner:branch` from a fork.
    pub head: String,
    /// Target branch.
    pub base: String,
    /// Title.
    pub title: String,
    /// Body (Markdown).
    #[serde(default)]
    pub body: Option<String>,
}

/// Result of `gitea_create_pr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Owner.
    pub owner: String,
    /// Repository.
    pub repo: String,
    /// Whether this was a dry run (nothing created).
    pub dry_run: bool,
    /// The new pull request's number (`null` in a dry run).
    pub number: Option<u64>,
    /// Its web page (`null` in a dry run).
    pub html_url: Option<String>,
    /// `open` (or, in a dry run, `null`).
    pub state: Option<String>,
    /// Source branch.
    pub head: String,
    /// Target branch.
    pub base: String,
    /// Title.
    pub title: String,
    /// Dry run: the number of an open pull request from `head` into `base` that would make
    /// Gitea refuse (409).
    pub conflicting_pr: Option<u64>,
}

/// The `gitea_create_pr` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct GiteaCreatePr;

impl TypedTool for GiteaCreatePr {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        let mut props = super::schema::repo_properties();
        for (k, v) in [
            (
                "head",
                json!({"type": "string", "pattern": BRANCH_PATTERN, "description": "Source branch, or owner:branch from a fork."}),
            ),
            ("base", json!({"type": "string", "pattern": BRANCH_PATTERN, "description": "Target branch."})),
            ("title", json!({"type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS})),
            ("body", json!({"type": "string", "maxLength": MAX_BODY_CHARS})),
        ] {
            props.insert(k.into(), v);
        }
        let opt_str = json!({"type": ["string", "null"]});
        ContractSpec {
            name: "gitea_create_pr",
            category: Category::Network,
            description: "Open a Gitea pull request from head into base; dry_run checks the repository and an existing open pull request without creating one.",
            input_schema: json!({ "type": "object", "properties": props, "required": ["head", "base", "title"], "additionalProperties": false }),
            output_schema: json!({
                "type": "object",
                "properties": {
                    "owner": {"type": "string"},
                    "repo": {"type": "string"},
                    "dry_run": {"type": "boolean"},
                    "number": {"type": ["integer", "null"], "minimum": 1},
                    "html_url": opt_str,
                    "state": opt_str,
                    "head": {"type": "string"},
                    "base": {"type": "string"},
                    "title": {"type": "string"},
                    "conflicting_pr": {"type": ["integer", "null"], "minimum": 1}
                },
                "required": ["owner", "repo", "dry_run", "number", "html_url", "state", "head", "base", "title", "conflicting_pr"],
                "additionalProperties": false
            }),
            annotations: Annotations { read_only: false, destructive: false, idempotent: false, open_world: true },
            risk: Risk::Medium,
            default_timeout: Duration::from_secs(30),
            dry_run: true,
            content_guard: false,
        }
    }

    fn target(args: &Value) -> String {
        target_of(args)
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        let gitea = client(ctx)?;
        let (owner, repo) = gitea.repo_of(input.owner.as_deref(), input.repo.as_deref())?;
        check_branch("head", &input.head)?;
        check_branch("base", &input.base)?;
        if input.head == input.base {
            return Err(Error::new(
                ErrorCode::InvalidArguments,
                "gitea_create_pr: `head` and `base` are the same branch",
            )
            .with_details(json!({ "field": "head" })));
        }
        if ctx.dry_run {
            let open = gitea
                .list_pulls(
                    &owner,
                    &repo,
                    &PullQuery {
                        state: StateFilter::Open,
                        base_branch: Some(input.base.clone()),
                        ..PullQuery::default()
                    },
                )
                .await?;
            let head_branch = input.head.rsplit_once(':').map_or(input.head.as_str(), |(_, b)| b);
            let conflicting_pr = open
                .items
                .iter()
                .find(|p| p.base.branch == input.base && (p.head.branch == head_branch || p.head.label == input.head))
                .map(|p| p.number);
            return Ok(Output {
                owner,
                repo,
                dry_run: true,
                number: None,
                html_url: None,
                state: None,
                head: input.head,
                base: input.base,
                title: input.title,
                conflicting_pr,
            });
        }
        let opt = CreatePullRequestOption {
            head: input.head.clone(),
            base: input.base.clone(),
            title: input.title.clone(),
            body: input.body,
        };
        let pr = gitea.create_pull(&owner, &repo, &opt).await?;
        Ok(Output {
            owner,
            repo,
            dry_run: false,
            number: Some(pr.number),
            html_url: Some(pr.html_url),
            state: Some(pr.state),
            head: input.head,
            base: input.base,
            title: pr.title,
            conflicting_pr: None,
        })
    }
}

/// Refuses what git itself refuses in a branch name beyond the schema's pattern.
fn check_branch(field: &str, name: &str) -> Result<()> {
    let branch = name.rsplit_once(':').map_or(name, |(_, b)| b);
    let bad = branch.contains("..")
        || branch.contains("//")
        || branch.ends_with('/')
        || branch.ends_with('.')
        || branch.ends_with(".lock")
        || branch.split('/').any(|c| c.starts_with('.'));
    if bad {
        return Err(Error::new(
            ErrorCode::InvalidArguments,
            format!("gitea_create_pr: `{field}` is not a valid branch name"),
        )
        .with_details(json!({ "field": field })));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::Typed;

    /// Proves the contract: mutating, not idempotent, medium risk, dry-run capable, and branch
    /// names are checked.
    #[test]
    fn contract_and_branch_checks() {
        let t = Typed::<GiteaCreatePr>::new().expect("compiles");
        let c = crate::tools::Tool::contract(&t);
        assert!(!c.spec().annotations.read_only && !c.spec().annotations.idempotent && c.spec().annotations.open_world);
        assert_eq!(c.spec().risk, Risk::Medium);
        assert!(c.spec().dry_run);
        let ok = json!({"head": "feature/x", "base": "main", "title": "T"});
        assert!(c.validate_input(&ok).is_ok());
        assert!(c.validate_input(&json!({"head": "a b", "base": "main", "title": "T"})).is_err());
        assert!(c.validate_input(&json!({"head": "x", "base": "main", "title": ""})).is_err());
        assert!(check_branch("head", "alice:feature/x").is_ok());
        for bad in ["a..b", "a/", "x.lock", "a/.hidden", "a//b"] {
            assert!(check_branch("head", bad).is_err(), "{bad}");
        }
    }
}
