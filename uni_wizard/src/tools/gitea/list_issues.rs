//! `gitea_list_issues`: the issues of one repository, newest first, over as many pages as it
//! takes (bounded).
//!
//! Always asks Gitea for `type=issues`, so pull requests are never listed. Label names are
//! checked against the repository's labels first: Gitea silently discards names that do not
//! exist, and when none is left it drops the filter and lists everything, which would answer
//! "issues labelled X" with every issue. The tool lists nothing instead and names the unknown
//! labels in `unknown_labels`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{client, target_of, truncate_chars};
use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::gitea::{IssueKind, IssueQuery, MAX_PAGE_SIZE, StateFilter};
use crate::tools::{ToolContext, TypedTool};

/// Largest `max_issues` a caller may ask for.
pub const MAX_ISSUES_LIMIT: u64 = 5_000;
/// `max_issues` when none is given.
pub const DEFAULT_MAX_ISSUES: u64 = 500;
/// `max_body_chars` when none is given.
pub const DEFAULT_MAX_BODY_CHARS: u64 = 2_000;

/// Arguments of `gitea_list_issues`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Repository owner (else the configured default).
    #[serde(default)]
    pub owner: Option<String>,
    /// Repository name (else the configured default).
    #[serde(default)]
    pub repo: Option<String>,
    /// `open`, `closed` or `all`.
    #[serde(default)]
    pub state: StateFilter,
    /// Issues carrying any of these label names.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Only issues updated at or after this RFC 3339 time (whole seconds).
    #[serde(default)]
    pub since: Option<String>,
    /// Page size asked of Gitea (at most 50).
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Most issues returned overall.
    #[serde(default = "default_max_issues")]
    pub max_issues: u64,
    /// Most characters of each body returned.
    #[serde(default = "default_max_body_chars")]
    pub max_body_chars: u64,
}

fn default_limit() -> u32 {
    MAX_PAGE_SIZE
}

fn default_max_issues() -> u64 {
    DEFAULT_MAX_ISSUES
}

fn default_max_body_chars() -> u64 {
    DEFAULT_MAX_BODY_CHARS
}

/// One issue as the tool reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssueSummary {
    /// Number within the repository.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body, cut to `max_body_chars`.
    pub body: String,
    /// Whether `body` was cut.
    pub body_truncated: bool,
    /// `open` or `closed`.
    pub state: String,
    /// Label names.
    pub labels: Vec<String>,
    /// Assignee logins.
    pub assignees: Vec<String>,
    /// Author's login.
    pub user: String,
    /// Number of comments.
    pub comments: u64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Web page.
    pub html_url: String,
}

/// Result of `gitea_list_issues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Owner listed.
    pub owner: String,
    /// Repository listed.
    pub repo: String,
    /// The issues, newest created first.
    pub issues: Vec<IssueSummary>,
    /// `issues.len()`.
    pub count: usize,
    /// Gitea's `X-Total-Count` for the query, when it sent one.
    pub total: Option<u64>,
    /// Pages requested.
    pub pages: u32,
    /// Whether more issues match than were returned (`max_issues` or the page bound).
    pub truncated: bool,
    /// Requested label names the repository does not have.
    pub unknown_labels: Vec<String>,
}

/// The `gitea_list_issues` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct GiteaListIssues;

impl TypedTool for GiteaListIssues {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        let mut props = super::schema::repo_properties();
        for (k, v) in [
            ("state", json!({"enum": ["open", "closed", "all"], "default": "open"})),
            (
                "labels",
                json!({"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^,]+$"}, "maxItems": 50,
                       "description": "Issues carrying any of these label names."}),
            ),
            (
                "since",
                json!({"type": "string", "pattern": RFC3339_PATTERN,
                       "description": "RFC 3339; only issues updated at or after it (Gitea compares whole seconds)."}),
            ),
            (
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": MAX_PAGE_SIZE, "description": "Page size asked of Gitea (Gitea caps it at 50)."}),
            ),
            (
                "max_issues",
                json!({"type": "integer", "minimum": 1, "maximum": MAX_ISSUES_LIMIT, "default": DEFAULT_MAX_ISSUES}),
            ),
            (
                "max_body_chars",
                json!({"type": "integer", "minimum": 0, "maximum": 65_536, "default": DEFAULT_MAX_BODY_CHARS}),
            ),
        ] {
            props.insert(k.into(), v);
        }
        ContractSpec {
            name: "gitea_list_issues",
            category: Category::Network,
            description: "List a Gitea repository's issues (never pull requests), newest first, following pages up to max_issues; filter by state, labels and update time.",
            input_schema: json!({ "type": "object", "properties": props, "additionalProperties": false }),
            output_schema: json!({
                "type": "object",
                "properties": {
                    "owner": {"type": "string"},
                    "repo": {"type": "string"},
                    "issues": {"type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "number": {"type": "integer", "minimum": 1},
                            "title": {"type": "string"},
                            "body": {"type": "string"},
                            "body_truncated": {"type": "boolean"},
                            "state": {"enum": ["open", "closed"]},
                            "labels": {"type": "array", "items": {"type": "string"}},
                            "assignees": {"type": "array", "items": {"type": "string"}},
                            "user": {"type": "string"},
                            "comments": {"type": "integer", "minimum": 0},
                            "created_at": {"type": "string"},
                            "updated_at": {"type": "string"},
                            "html_url": {"type": "string"}
                        },
                        "required": ["number", "title", "body", "body_truncated", "state", "labels", "assignees", "user",
                                     "comments", "created_at", "updated_at", "html_url"],
                        "additionalProperties": false
                    }},
                    "count": {"type": "integer", "minimum": 0},
                    "total": {"type": ["integer", "null"], "minimum": 0},
                    "pages": {"type": "integer", "minimum": 0},
                    "truncated": {"type": "boolean"},
                    "unknown_labels": {"type": "array", "items": {"type": "string"}}
                },
                "required": ["owner", "repo", "issues", "count", "total", "pages", "truncated", "unknown_labels"],
                "additionalProperties": false
            }),
            annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: true },
            risk: Risk::Low,
            default_timeout: Duration::from_secs(60),
            dry_run: false,
            content_guard: false,
        }
    }

    fn target(args: &Value) -> String {
        target_of(args)
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        let gitea = client(ctx)?;
        let (owner, repo) = gitea.repo_of(input.owner.as_deref(), input.repo.as_deref())?;
        if let Some(since) = &input.since
            && !is_rfc3339(since)
        {
            return Err(Error::new(ErrorCode::InvalidArguments, "gitea_list_issues: `since` is not an RFC 3339 time")
                .with_details(json!({ "field": "since" })));
        }
        let mut labels = Vec::new();
        let mut unknown_labels = Vec::new();
        if !input.labels.is_empty() {
            let known = gitea.list_labels(&owner, &repo).await?.items;
            for name in input.labels {
                if known.iter().any(|l| l.name == name) {
                    labels.push(name);
                } else {
                    unknown_labels.push(name);
                }
            }
            if labels.is_empty() {
                return Ok(Output {
                    owner,
                    repo,
                    issues: vec![],
                    count: 0,
                    total: Some(0),
                    pages: 0,
                    truncated: false,
                    unknown_labels,
                });
            }
        }
        let query = IssueQuery {
            state: input.state,
            labels,
            since: input.since,
            kind: Some(IssueKind::Issues),
            page_size: input.limit,
            max_items: usize::try_from(input.max_issues).unwrap_or(usize::MAX),
        };
        let page = gitea.list_issues(&owner, &repo, &query).await?;
        let max_body = usize::try_from(input.max_body_chars).unwrap_or(usize::MAX);
        let issues: Vec<IssueSummary> = page
            .items
            .into_iter()
            // `type=issues` already excludes them; a server that ignored it must not leak PRs.
            .filter(|i| !i.is_pull())
            .map(|i| {
                let (body, body_truncated) = truncate_chars(&i.body, max_body);
                IssueSummary {
                    labels: i.label_names(),
                    assignees: i.assignee_logins(),
                    number: i.number,
                    title: i.title,
                    body,
                    body_truncated,
                    state: i.state,
                    user: i.user.login,
                    comments: i.comments,
                    created_at: i.created_at,
                    updated_at: i.updated_at,
                    html_url: i.html_url,
                }
            })
            .collect();
        Ok(Output {
            owner,
            repo,
            count: issues.len(),
            issues,
            total: page.total,
            pages: page.pages,
            truncated: page.truncated,
            unknown_labels,
        })
    }
}

/// JSON Schema pattern of an RFC 3339 date-time (`Z` or a numeric offset).
pub const RFC3339_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$";

/// Whether `s` is an RFC 3339 date-time with in-range fields.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (Some(_y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) =
        (num(0..4), num(5..7), num(8..10), num(11..13), num(14..16), num(17..19))
    else {
        return false;
    };
    let seps = b[4] == b'-' && b[7] == b'-' && matches!(b[10], b'T' | b't' | b' ') && b[13] == b':' && b[16] == b':';
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &frac[digits..];
    }
    let zone = match rest {
        "Z" | "z" => true,
        z if z.len() == 6 && matches!(z.as_bytes()[0], b'+' | b'-') && z.as_bytes()[3] == b':' => {
            z[1..3].parse::<u32>().is_ok_and(|h| h < 24) && z[4..6].parse::<u32>().is_ok_and(|m| m < 60)
        }
        _ => false,
    };
    seps && zone && (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && sec <= 60
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::Typed;

    /// Proves the contract compiles and states what the tool is: read-only, open-world, low risk.
    #[test]
    fn contract_is_read_only_open_world() {
        let t = Typed::<GiteaListIssues>::new().expect("compiles");
        let c = crate::tools::Tool::contract(&t);
        assert!(c.spec().annotations.read_only && c.spec().annotations.open_world && c.spec().annotations.idempotent);
        assert_eq!(c.spec().risk, Risk::Low);
        assert!(c.validate_input(&json!({"owner": "o", "repo": "r", "limit": 51})).is_err(), "limit is capped at 50");
        assert!(c.validate_input(&json!({"owner": "../x"})).is_err(), "names stay one path segment");
        assert!(c.validate_input(&json!({"since": "yesterday"})).is_err());
        assert!(c.validate_input(&json!({"since": "2026-01-01T00:00:00Z", "labels": ["kind/bug"]})).is_ok());
        assert_eq!(GiteaListIssues::target(&json!({"owner": "o", "repo": "r"})), "o/r");
    }

    /// Proves the RFC 3339 check accepts Gitea's forms and refuses out-of-range fields.
    #[test]
    fn rfc3339_check() {
        for ok in ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5+02:00", "2026-12-31t23:59:60z"] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in ["2026-13-01T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T00:00:00", "2026-01-01T00:00:00.Z"] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
