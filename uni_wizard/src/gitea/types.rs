//! The API objects uni-wizard reads and writes: only the fields it uses, named as the
//! definitions of Gitea's OpenAPI subset name them. Everything the spec leaves optional has a
//! default, and JSON `null` (Gitea sends `"assignees": null` for none) reads as the default.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::MAX_PAGE_SIZE;

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `GET /version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerVersion {
    /// E.g. `1.26.3`.
    #[serde(deserialize_with = "null_as_default")]
    pub version: String,
}

/// A Gitea user (definition `User`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    /// Numeric id.
    pub id: i64,
    /// The user name.
    #[serde(deserialize_with = "null_as_default")]
    pub login: String,
    /// Display name.
    #[serde(deserialize_with = "null_as_default")]
    pub full_name: String,
    /// Whether the user is a site administrator.
    #[serde(deserialize_with = "null_as_default")]
    pub is_admin: bool,
}

/// A label (definition `Label`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Label {
    /// Numeric id (what `DELETE .../labels/{id}` takes).
    pub id: i64,
    /// Name, e.g. `kind/bug`.
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// Hex colour without `#`, e.g. `ee0701`.
    #[serde(deserialize_with = "null_as_default")]
    pub color: String,
    /// Description.
    #[serde(deserialize_with = "null_as_default")]
    pub description: String,
    /// Whether the label is exclusive within its scope.
    #[serde(deserialize_with = "null_as_default")]
    pub exclusive: bool,
}

/// Set on an issue that is a pull request (definition `PullRequestMeta`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PullRequestMeta {
    /// Whether it is merged.
    #[serde(deserialize_with = "null_as_default")]
    pub merged: bool,
    /// Web page of the pull request.
    #[serde(deserialize_with = "null_as_default")]
    pub html_url: String,
}

/// An issue or pull request as the issues endpoints return it (definition `Issue`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Issue {
    /// Global id.
    pub id: i64,
    /// Number within the repository (issues and pull requests share the sequence).
    pub number: u64,
    /// Title.
    #[serde(deserialize_with = "null_as_default")]
    pub title: String,
    /// Body (Markdown).
    #[serde(deserialize_with = "null_as_default")]
    pub body: String,
    /// `open` or `closed`.
    #[serde(deserialize_with = "null_as_default")]
    pub state: String,
    /// Labels.
    #[serde(deserialize_with = "null_as_default")]
    pub labels: Vec<Label>,
    /// Assignees (Gitea sends `null` for none).
    #[serde(deserialize_with = "null_as_default")]
    pub assignees: Vec<User>,
    /// Author.
    #[serde(deserialize_with = "null_as_default")]
    pub user: User,
    /// Number of comments.
    #[serde(deserialize_with = "null_as_default")]
    pub comments: u64,
    /// RFC 3339.
    #[serde(deserialize_with = "null_as_default")]
    pub created_at: String,
    /// RFC 3339.
    #[serde(deserialize_with = "null_as_default")]
    pub updated_at: String,
    /// RFC 3339, when closed.
    pub closed_at: Option<String>,
    /// Web page.
    #[serde(deserialize_with = "null_as_default")]
    pub html_url: String,
    /// Present when this issue is a pull request.
    pub pull_request: Option<PullRequestMeta>,
}

impl Issue {
    /// Whether this is a pull request rather than an issue.
    pub fn is_pull(&self) -> bool {
        self.pull_request.is_some()
    }

    /// Label names, in Gitea's order.
    pub fn label_names(&self) -> Vec<String> {
        self.labels.iter().map(|l| l.name.clone()).collect()
    }

    /// Assignee logins, in Gitea's order.
    pub fn assignee_logins(&self) -> Vec<String> {
        self.assignees.iter().map(|u| u.login.clone()).collect()
    }
}

/// A comment (definition `Comment`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Comment {
    /// Global id.
    pub id: i64,
    /// Body (Markdown).
    #[serde(deserialize_with = "null_as_default")]
    pub body: String,
    /// Author.
    #[serde(deserialize_with = "null_as_default")]
    pub user: User,
    /// Web address of the comment.
    #[serde(deserialize_with = "null_as_default")]
    pub html_url: String,
    /// RFC 3339.
    #[serde(deserialize_with = "null_as_default")]
    pub created_at: String,
}

/// One side of a pull request (definition `PRBranchInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BranchInfo {
    /// Branch name.
    #[serde(rename = "ref", deserialize_with = "null_as_default")]
    pub branch: String,
    /// Commit id.
    #[serde(deserialize_with = "null_as_default")]
    pub sha: String,
    /// `owner:branch` or the branch name.
    #[serde(deserialize_with = "null_as_default")]
    pub label: String,
}

/// A pull request (definition `PullRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PullRequest {
    /// Global id.
    pub id: i64,
    /// Number within the repository.
    pub number: u64,
    /// Title.
    #[serde(deserialize_with = "null_as_default")]
    pub title: String,
    /// Body.
    #[serde(deserialize_with = "null_as_default")]
    pub body: String,
    /// `open` or `closed`.
    #[serde(deserialize_with = "null_as_default")]
    pub state: String,
    /// Web page.
    #[serde(deserialize_with = "null_as_default")]
    pub html_url: String,
    /// Source branch.
    #[serde(deserialize_with = "null_as_default")]
    pub head: BranchInfo,
    /// Target branch.
    #[serde(deserialize_with = "null_as_default")]
    pub base: BranchInfo,
    /// Whether merged.
    #[serde(deserialize_with = "null_as_default")]
    pub merged: bool,
    /// Author.
    #[serde(deserialize_with = "null_as_default")]
    pub user: User,
    /// RFC 3339.
    #[serde(deserialize_with = "null_as_default")]
    pub created_at: String,
}

/// A label named by id or by name, as `POST`/`PUT .../issues/{index}/labels` take them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelRef {
    /// A label id (a JSON integer).
    Id(i64),
    /// A label name (a JSON string).
    Name(String),
}

impl fmt::Display for LabelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelRef::Id(id) => write!(f, "#{id}"),
            LabelRef::Name(n) => f.write_str(n),
        }
    }
}

/// Body of `POST /repos/{owner}/{repo}/issues` (definition `CreateIssueOption`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CreateIssueOption {
    /// Title (required).
    pub title: String,
    /// Body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Label ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<i64>,
    /// Assignee logins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub assignees: Vec<String>,
    /// Create it closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<bool>,
}

/// Body of `PATCH /repos/{owner}/{repo}/issues/{index}` (definition `EditIssueOption`).
/// Absent fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EditIssueOption {
    /// New title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// New body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// `open` or `closed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The whole new set of assignee logins (replaces; empty clears).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignees: Option<Vec<String>>,
}

/// Body of `POST /repos/{owner}/{repo}/labels` (definition `CreateLabelOption`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CreateLabelOption {
    /// Name (required).
    pub name: String,
    /// Colour, `#rrggbb` (required).
    pub color: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Exclusive within its scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<bool>,
}

/// Body of `POST /repos/{owner}/{repo}/pulls` (definition `CreatePullRequestOption`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CreatePullRequestOption {
    /// Source branch (or `owner:branch`).
    pub head: String,
    /// Target branch.
    pub base: String,
    /// Title.
    pub title: String,
    /// Body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// The `state` filter of list calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateFilter {
    /// Open only (Gitea's default).
    #[default]
    Open,
    /// Closed only.
    Closed,
    /// Both.
    All,
}

impl StateFilter {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            StateFilter::Open => "open",
            StateFilter::Closed => "closed",
            StateFilter::All => "all",
        }
    }
}

/// The `type` filter of `GET /repos/{owner}/{repo}/issues`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// Issues only (`type=issues`).
    Issues,
    /// Pull requests only (`type=pulls`).
    Pulls,
}

/// What `GET /repos/{owner}/{repo}/issues` should return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueQuery {
    /// `state`.
    pub state: StateFilter,
    /// `labels`: issues with any of these names (Gitea discards names that do not exist).
    pub labels: Vec<String>,
    /// `since`: updated at or after this RFC 3339 time (Gitea compares whole seconds).
    pub since: Option<String>,
    /// `type`; `None` returns issues and pull requests alike.
    pub kind: Option<IssueKind>,
    /// `limit` per page, 1..=[`MAX_PAGE_SIZE`] (larger values are cut to it).
    pub page_size: u32,
    /// Stop after this many items overall.
    pub max_items: usize,
}

impl Default for IssueQuery {
    fn default() -> IssueQuery {
        IssueQuery {
            state: StateFilter::Open,
            labels: vec![],
            since: None,
            kind: Some(IssueKind::Issues),
            page_size: MAX_PAGE_SIZE,
            max_items: usize::MAX,
        }
    }
}

/// What `GET /repos/{owner}/{repo}/pulls` should return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullQuery {
    /// `state`.
    pub state: StateFilter,
    /// `base_branch`.
    pub base_branch: Option<String>,
    /// `limit` per page.
    pub page_size: u32,
    /// Stop after this many items overall.
    pub max_items: usize,
}

impl Default for PullQuery {
    fn default() -> PullQuery {
        PullQuery { state: StateFilter::Open, base_branch: None, page_size: MAX_PAGE_SIZE, max_items: usize::MAX }
    }
}

/// A list gathered over pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged<T> {
    /// The items, in the server's order.
    pub items: Vec<T>,
    /// `X-Total-Count` of the last page read, when the server sent it.
    pub total: Option<u64>,
    /// Pages requested.
    pub pages: u32,
    /// Whether more items exist than were gathered (`max_items` or `max_pages` was reached).
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Proves `null` where Gitea sends it (assignees, closed_at, pull_request) reads as empty.
    #[test]
    fn issue_tolerates_gitea_nulls() {
        let v = json!({"id": 1, "number": 2, "title": "t", "body": "", "state": "open", "labels": [],
            "assignees": null, "assignee": null, "closed_at": null, "pull_request": null, "milestone": null,
            "user": {"id": 3, "login": "alice", "username": "alice"}, "created_at": "2026-01-01T00:00:00Z"});
        let i: Issue = serde_json::from_value(v).expect("decodes");
        assert!(i.assignees.is_empty());
        assert!(!i.is_pull());
        assert_eq!(i.user.login, "alice");
    }
}
