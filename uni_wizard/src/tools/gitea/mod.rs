//! Gitea: one REST API v1 client, [`GiteaClient`], and the three Gitea tools built on it.
//!
//! The client speaks the operations of Gitea's official OpenAPI subset
//! (`shared/data/gitea/openapi-v1.26.3-subset.json`) and nothing else; the tests crate holds a
//! Gitea test server that answers as that spec says and a validator that checks every request
//! this client makes against it. The triage daemon reuses the same client.
//!
//! - [`list_issues`] is `gitea_list_issues`, read-only.
//! - [`update_issue`] is `gitea_update_issue`: labels, assignees, state and a comment.
//! - [`create_pr`] is `gitea_create_pr`.
//!
//! # How it talks to Gitea
//!
//! - Auth is the header `Authorization: token <T>`. The token is never logged, never put in a
//!   URL, and `Debug` of [`GiteaConfig`], [`GiteaToken`] and [`GiteaClient`] redacts it.
//! - `base_url` is operator configuration (the server root, e.g. `https://git.example.com`;
//!   `/api/v1` is appended unless already there). The client is its own `reqwest` client:
//!   rustls, no proxy, **no redirects followed** (a redirect would carry the token elsewhere; it
//!   is reported as a configuration error), a per-request timeout, and bodies capped at
//!   [`MAX_BODY_BYTES`].
//! - Lists are paged the way Gitea pages them: `page` counts from 1 and `limit` is capped at
//!   [`MAX_PAGE_SIZE`] (Gitea caps it silently; the client never asks for more). The next page
//!   is taken from the `Link` header's `rel="next"` (accepted only when it points back at the
//!   same origin and path, and only its `page` number is used, so a server cannot steer the
//!   token elsewhere), else from `X-Total-Count`, else from a full page. Every walk is bounded
//!   by `max_pages`.
//! - Issue lists ask for `type=issues` unless told otherwise: Gitea returns pull requests from
//!   the issues endpoint without it.
//! - Gitea answers `PATCH /repos/{owner}/{repo}/issues/{index}` with **201**; every call accepts
//!   any 2xx with the body the spec declares.
//!
//! # Errors: Gitea's answers mapped to codes
//!
//! Gitea's error body `{"message": ..., "url": ...}` goes into `details` as `gitea_message`
//! and `gitea_url`, with `status`, `method` and `path` (never the token, never the query).
//!
//! | Gitea's answer | code | why |
//! |---|---|---|
//! | 401, 403 | E4001 config invalid (`details.field = "gitea.token"`) | the configured token is wrong, expired, or lacks the permission: a deployment fault, not the caller's |
//! | 3xx | E4001 (`details.field = "gitea.base_url"`) | `base_url` points at a redirect; set it to the final address |
//! | 404 | E3006 not found | repository, issue, pull request, branch or label does not exist |
//! | 400, 409, 412, 422, 423, other 4xx | E3003 tool failed, with Gitea's `message` | Gitea refused the request as given (e.g. 422 for a label id that does not exist, 409 for a duplicate pull request) |
//! | 429, 5xx | E3004 transient | may pass; the executor retries idempotent tools |
//! | connection refused or reset | E3004 transient | may pass |
//! | no answer within `timeout_ms` | E3001 timeout | |
//! | a 2xx whose body does not decode | E3003 | the server does not speak this API version |
//!
//! A tool called while no Gitea is configured (`ToolEnv.gitea` is `None`) fails with E4001
//! "gitea is not configured".

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Value, json};

use super::ToolContext;
use crate::error::{Error, ErrorCode, Result};

pub mod create_pr;
pub mod list_issues;
pub mod update_issue;

/// The most items Gitea returns in one page (`MAX_RESPONSE_ITEMS`); larger `limit`s are cut
/// to this silently, so the client never asks for more.
pub const MAX_PAGE_SIZE: u32 = 50;
/// Largest response body the client reads; a larger one is refused (E3003).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// `timeout_ms` when the config gives none.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// `max_pages` when the config gives none.
pub const DEFAULT_MAX_PAGES: u32 = 40;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// An API token. `Debug`, `Display` and `Serialize` show `[redacted]`; only
/// [`GiteaToken::expose`] gives the value, and only the client calls it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct GiteaToken(String);

impl GiteaToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> GiteaToken {
        GiteaToken(token.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GiteaToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for GiteaToken {
    /// Serialises as `[redacted]`: a config written back out never carries the secret.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for GiteaToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(GiteaToken)
    }
}

impl From<&str> for GiteaToken {
    fn from(s: &str) -> GiteaToken {
        GiteaToken(s.to_owned())
    }
}

impl From<String> for GiteaToken {
    fn from(s: String) -> GiteaToken {
        GiteaToken(s)
    }
}

/// Where the Gitea server is and how to talk to it (`gitea:` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GiteaConfig {
    /// The server root, e.g. `https://git.example.com` (`/api/v1` is appended unless present).
    pub base_url: String,
    /// An access token of the bot user; usually `${GITEA_TOKEN}` in the YAML.
    pub token: GiteaToken,
    /// Per-request timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Owner used when a tool call names none.
    #[serde(default)]
    pub owner: Option<String>,
    /// Repository used when a tool call names none.
    #[serde(default)]
    pub repo: Option<String>,
    /// Most pages one list walks (each at most [`MAX_PAGE_SIZE`] items).
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn default_max_pages() -> u32 {
    DEFAULT_MAX_PAGES
}

impl GiteaConfig {
    /// A config for `base_url` with `token` and defaults for the rest.
    pub fn new(base_url: impl Into<String>, token: impl Into<GiteaToken>) -> GiteaConfig {
        GiteaConfig {
            base_url: base_url.into(),
            token: token.into(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            owner: None,
            repo: None,
            max_pages: DEFAULT_MAX_PAGES,
        }
    }
}

fn config_error(field: &str, why: impl fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("config field `{field}` {why}"))
        .with_details(json!({ "field": field }))
}

/// Whether `s` is a Gitea owner or repository name (also keeps path segments plain).
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// JSON Schema pattern of an owner or repository name, matching [`is_valid_name`].
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_.-]{1,100}$";

// ---------------------------------------------------------------------------------------------
// Typed API objects: only the fields uni-wizard uses. Everything the spec leaves optional has a
// default, and JSON `null` (Gitea sends `"assignees": null` for none) reads as the default.
// ---------------------------------------------------------------------------------------------

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

#[derive(Serialize)]
struct IssueLabelsOption<'a> {
    labels: &'a [LabelRef],
}

#[derive(Serialize)]
struct CreateIssueCommentOption<'a> {
    body: &'a str,
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

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// A Gitea API v1 client for one server and one token. Cheap to share behind an `Arc`.
pub struct GiteaClient {
    /// Built on first use: building the TLS stack costs tens of milliseconds, which a harness
    /// that never calls Gitea (a CLI run) should not pay.
    http: OnceLock<std::result::Result<reqwest::Client, String>>,
    timeout: Duration,
    /// `<base>/api/v1`, without a trailing slash.
    api: Url,
    auth: HeaderValue,
    owner: Option<String>,
    repo: Option<String>,
    max_pages: u32,
}

impl fmt::Debug for GiteaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GiteaClient")
            .field("api", &self.api.as_str())
            .field("token", &"[redacted]")
            .field("owner", &self.owner)
            .field("repo", &self.repo)
            .field("max_pages", &self.max_pages)
            .finish()
    }
}

/// A 2xx answer: headers and the raw body.
struct Answer {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl GiteaClient {
    /// Builds a client from configuration. Nothing is sent until the first call.
    ///
    /// # Errors
    /// E4001 naming the field: a `base_url` that is not an `http`/`https` URL (or carries
    /// credentials, a query or a fragment), an empty or malformed token, a zero `timeout_ms`
    /// or `max_pages`, an invalid default owner or repository.
    pub fn new(config: &GiteaConfig) -> Result<GiteaClient> {
        let api = api_url(&config.base_url)?;
        let token = config.token.expose();
        if token.is_empty() || token.len() > 1024 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(config_error("gitea.token", "must be a non-empty token of printable characters"));
        }
        let mut auth = HeaderValue::from_str(&format!("token {token}"))
            .map_err(|_| config_error("gitea.token", "is not a valid header value"))?;
        auth.set_sensitive(true);
        if config.timeout_ms == 0 {
            return Err(config_error("gitea.timeout_ms", "must be at least 1"));
        }
        if config.max_pages == 0 {
            return Err(config_error("gitea.max_pages", "must be at least 1"));
        }
        for (field, v) in [("gitea.owner", &config.owner), ("gitea.repo", &config.repo)] {
            if let Some(v) = v
                && !is_valid_name(v)
            {
                return Err(config_error(field, "is not a valid Gitea name"));
            }
        }
        Ok(GiteaClient {
            http: OnceLock::new(),
            timeout: Duration::from_millis(config.timeout_ms),
            api,
            auth,
            owner: config.owner.clone(),
            repo: config.repo.clone(),
            max_pages: config.max_pages,
        })
    }

    /// The API root, e.g. `https://git.example.com/api/v1`.
    pub fn api_url(&self) -> &str {
        self.api.as_str()
    }

    /// The owner and repository a call acts on: the given ones, else the configured defaults.
    ///
    /// # Errors
    /// E1003 when neither names one, or a name is not a valid Gitea name.
    pub fn repo_of(&self, owner: Option<&str>, repo: Option<&str>) -> Result<(String, String)> {
        let pick = |field: &str, given: Option<&str>, default: &Option<String>| -> Result<String> {
            let v = given.map(str::to_owned).or_else(|| default.clone()).ok_or_else(|| {
                Error::new(
                    ErrorCode::InvalidArguments,
                    format!("`{field}` is required: no default gitea.{field} is configured"),
                )
                .with_details(json!({ "field": field }))
            })?;
            if !is_valid_name(&v) {
                return Err(Error::new(ErrorCode::InvalidArguments, format!("`{field}` is not a valid Gitea name"))
                    .with_details(json!({ "field": field })));
            }
            Ok(v)
        };
        Ok((pick("owner", owner, &self.owner)?, pick("repo", repo, &self.repo)?))
    }

    /// `GET /version` (200).
    ///
    /// # Errors
    /// As in the module docs.
    pub async fn version(&self) -> Result<ServerVersion> {
        self.json(Method::GET, &["version"], &[], None).await
    }

    /// `GET /user` (200): the token's own user.
    ///
    /// # Errors
    /// E4001 for a token Gitea does not accept; otherwise as in the module docs.
    pub async fn current_user(&self) -> Result<User> {
        self.json(Method::GET, &["user"], &[], None).await
    }

    /// `GET /repos/{owner}/{repo}/issues` (200), every page up to the query's and the config's
    /// bounds.
    ///
    /// # Errors
    /// E3006 for an unknown repository; otherwise as in the module docs.
    pub async fn list_issues(&self, owner: &str, repo: &str, q: &IssueQuery) -> Result<Paged<Issue>> {
        let mut query = vec![("state", q.state.as_str().to_owned())];
        if !q.labels.is_empty() {
            query.push(("labels", q.labels.join(",")));
        }
        if let Some(since) = &q.since {
            query.push(("since", since.clone()));
        }
        match q.kind {
            Some(IssueKind::Issues) => query.push(("type", "issues".to_owned())),
            Some(IssueKind::Pulls) => query.push(("type", "pulls".to_owned())),
            None => {}
        }
        self.paginate(&["repos", owner, repo, "issues"], query, q.page_size, q.max_items).await
    }

    /// `GET /repos/{owner}/{repo}/issues/{index}` (200).
    ///
    /// # Errors
    /// E3006 for an unknown repository or issue; otherwise as in the module docs.
    pub async fn get_issue(&self, owner: &str, repo: &str, index: u64) -> Result<Issue> {
        let index = index.to_string();
        self.json(Method::GET, &["repos", owner, repo, "issues", &index], &[], None).await
    }

    /// `POST /repos/{owner}/{repo}/issues` (201).
    ///
    /// # Errors
    /// E3003 when Gitea refuses the fields (422); otherwise as in the module docs.
    pub async fn create_issue(&self, owner: &str, repo: &str, opt: &CreateIssueOption) -> Result<Issue> {
        self.json(Method::POST, &["repos", owner, repo, "issues"], &[], Some(to_json(opt)?)).await
    }

    /// `PATCH /repos/{owner}/{repo}/issues/{index}` (Gitea answers 201). `assignees`, when
    /// given, replaces the whole set.
    ///
    /// # Errors
    /// E3006 for an unknown issue, E4001 without write access; otherwise as in the module docs.
    pub async fn edit_issue(&self, owner: &str, repo: &str, index: u64, opt: &EditIssueOption) -> Result<Issue> {
        let index = index.to_string();
        self.json(Method::PATCH, &["repos", owner, repo, "issues", &index], &[], Some(to_json(opt)?)).await
    }

    /// `GET /repos/{owner}/{repo}/labels` (200), every page (Gitea pages labels with
    /// `X-Total-Count` only).
    ///
    /// # Errors
    /// E3006 for an unknown repository; otherwise as in the module docs.
    pub async fn list_labels(&self, owner: &str, repo: &str) -> Result<Paged<Label>> {
        self.paginate(&["repos", owner, repo, "labels"], vec![], MAX_PAGE_SIZE, usize::MAX).await
    }

    /// `POST /repos/{owner}/{repo}/labels` (201).
    ///
    /// # Errors
    /// E3003 for a bad colour or name (422); otherwise as in the module docs.
    pub async fn create_label(&self, owner: &str, repo: &str, opt: &CreateLabelOption) -> Result<Label> {
        self.json(Method::POST, &["repos", owner, repo, "labels"], &[], Some(to_json(opt)?)).await
    }

    /// `GET /repos/{owner}/{repo}/issues/{index}/labels` (200).
    ///
    /// # Errors
    /// E3006 for an unknown issue; otherwise as in the module docs.
    pub async fn issue_labels(&self, owner: &str, repo: &str, index: u64) -> Result<Vec<Label>> {
        let index = index.to_string();
        self.json(Method::GET, &["repos", owner, repo, "issues", &index, "labels"], &[], None).await
    }

    /// `POST /repos/{owner}/{repo}/issues/{index}/labels` (200): adds labels by id or name and
    /// returns the issue's full label set. Gitea ignores names and ids that do not exist, and
    /// refuses a list that mixes ids and names (400): name them one way per call.
    ///
    /// # Errors
    /// E3006 for an unknown issue; otherwise as in the module docs.
    pub async fn add_labels(&self, owner: &str, repo: &str, index: u64, labels: &[LabelRef]) -> Result<Vec<Label>> {
        let index = index.to_string();
        let body = to_json(&IssueLabelsOption { labels })?;
        self.json(Method::POST, &["repos", owner, repo, "issues", &index, "labels"], &[], Some(body)).await
    }

    /// `PUT /repos/{owner}/{repo}/issues/{index}/labels` (200): replaces the label set.
    ///
    /// # Errors
    /// E3006 for an unknown issue; otherwise as in the module docs.
    pub async fn replace_labels(&self, owner: &str, repo: &str, index: u64, labels: &[LabelRef]) -> Result<Vec<Label>> {
        let index = index.to_string();
        let body = to_json(&IssueLabelsOption { labels })?;
        self.json(Method::PUT, &["repos", owner, repo, "issues", &index, "labels"], &[], Some(body)).await
    }

    /// `DELETE /repos/{owner}/{repo}/issues/{index}/labels/{id}` (204). Removing a label the
    /// issue does not carry succeeds.
    ///
    /// # Errors
    /// E3003 with Gitea's message when no label has that id (422); E3006 for an unknown issue.
    pub async fn remove_label(&self, owner: &str, repo: &str, index: u64, label_id: i64) -> Result<()> {
        let index = index.to_string();
        let id = label_id.to_string();
        self.send(Method::DELETE, &["repos", owner, repo, "issues", &index, "labels", &id], &[], None).await?;
        Ok(())
    }

    /// `GET /repos/{owner}/{repo}/issues/{index}/comments` (200).
    ///
    /// # Errors
    /// E3006 for an unknown issue; otherwise as in the module docs.
    pub async fn list_comments(&self, owner: &str, repo: &str, index: u64) -> Result<Vec<Comment>> {
        let index = index.to_string();
        self.json(Method::GET, &["repos", owner, repo, "issues", &index, "comments"], &[], None).await
    }

    /// `POST /repos/{owner}/{repo}/issues/{index}/comments` (201).
    ///
    /// # Errors
    /// E3006 for an unknown issue; otherwise as in the module docs.
    pub async fn create_comment(&self, owner: &str, repo: &str, index: u64, body: &str) -> Result<Comment> {
        let index = index.to_string();
        let body = to_json(&CreateIssueCommentOption { body })?;
        self.json(Method::POST, &["repos", owner, repo, "issues", &index, "comments"], &[], Some(body)).await
    }

    /// `GET /repos/{owner}/{repo}/pulls` (200), every page up to the bounds.
    ///
    /// # Errors
    /// E3006 for an unknown repository; otherwise as in the module docs.
    pub async fn list_pulls(&self, owner: &str, repo: &str, q: &PullQuery) -> Result<Paged<PullRequest>> {
        let mut query = vec![("state", q.state.as_str().to_owned())];
        if let Some(b) = &q.base_branch {
            query.push(("base_branch", b.clone()));
        }
        self.paginate(&["repos", owner, repo, "pulls"], query, q.page_size, q.max_items).await
    }

    /// `POST /repos/{owner}/{repo}/pulls` (201).
    ///
    /// # Errors
    /// E3006 when a branch does not exist, E3003 for a duplicate (409) or an empty change
    /// (422); otherwise as in the module docs.
    pub async fn create_pull(&self, owner: &str, repo: &str, opt: &CreatePullRequestOption) -> Result<PullRequest> {
        self.json(Method::POST, &["repos", owner, repo, "pulls"], &[], Some(to_json(opt)?)).await
    }

    /// `GET /repos/{owner}/{repo}/pulls/{index}` (200).
    ///
    /// # Errors
    /// E3006 when no pull request has that number; otherwise as in the module docs.
    pub async fn get_pull(&self, owner: &str, repo: &str, index: u64) -> Result<PullRequest> {
        let index = index.to_string();
        self.json(Method::GET, &["repos", owner, repo, "pulls", &index], &[], None).await
    }

    // -- mechanism --------------------------------------------------------------------------

    /// The HTTP client: rustls, no proxy, no redirects, no retries of its own (the executor
    /// owns retries), no `Referer`, the configured timeout.
    fn http(&self) -> Result<&reqwest::Client> {
        let built = self.http.get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .retry(reqwest::retry::never())
                .referer(false)
                .no_proxy()
                .timeout(self.timeout)
                .connect_timeout(self.timeout.min(Duration::from_secs(5)))
                .user_agent(concat!("uni-wizard/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| error_chain(&e))
        });
        built
            .as_ref()
            .map_err(|e| Error::new(ErrorCode::ToolFailed, format!("cannot build the Gitea HTTP client: {e}")))
    }

    fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.api.clone();
        url.path_segments_mut()
            .map_err(|()| config_error("gitea.base_url", "cannot carry a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<T> {
        let path = format!("/{}", segments.join("/"));
        let answer = self.send(method.clone(), segments, query, body).await?;
        decode(&method, &path, &answer.body)
    }

    /// Walks the pages of a list operation.
    async fn paginate<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: Vec<(&str, String)>,
        page_size: u32,
        max_items: usize,
    ) -> Result<Paged<T>> {
        let limit = page_size.clamp(1, MAX_PAGE_SIZE);
        let path = format!("/{}", segments.join("/"));
        let own = self.url(segments)?;
        let mut out = Paged { items: Vec::new(), total: None, pages: 0, truncated: false };
        let mut page: u32 = 1;
        loop {
            let mut q = query.clone();
            q.push(("page", page.to_string()));
            q.push(("limit", limit.to_string()));
            let answer = self.send(Method::GET, segments, &q, None).await?;
            out.pages += 1;
            let items: Vec<T> = decode(&Method::GET, &path, &answer.body)?;
            let got = items.len();
            let total = header_u64(&answer.headers, "x-total-count");
            if total.is_some() {
                out.total = total;
            }
            let room = max_items.saturating_sub(out.items.len());
            let cut = got > room;
            out.items.extend(items.into_iter().take(room));
            let next = next_page(&answer.headers, &own, page)
                .or_else(|| {
                    // No usable `Link`: fall back to the total count, then to a full page.
                    let seen = u64::from(page - 1) * u64::from(limit) + got as u64;
                    match (answer.headers.contains_key("link"), total) {
                        (true, _) => None,
                        (false, Some(t)) => (seen < t && got > 0).then_some(page + 1),
                        (false, None) => (got as u64 >= u64::from(limit)).then_some(page + 1),
                    }
                })
                .filter(|n| *n > page);
            match next {
                None => {
                    out.truncated = cut;
                    return Ok(out);
                }
                Some(_) if out.items.len() >= max_items || out.pages >= self.max_pages => {
                    out.truncated = true;
                    return Ok(out);
                }
                Some(n) => page = n,
            }
        }
    }

    /// Sends one request and returns a 2xx answer, or the mapped error.
    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Answer> {
        let url = self.url(segments)?;
        let path = format!("/{}", segments.join("/"));
        let mut req = self
            .http()?
            .request(method.clone(), url)
            .header(reqwest::header::AUTHORIZATION, self.auth.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(body) = &body {
            req = req.json(body);
        }
        let started = std::time::Instant::now();
        let mut resp = req.send().await.map_err(|e| transport_error(&method, &path, &e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(&method, &path, &e))? {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(Error::new(
                    ErrorCode::ToolFailed,
                    format!("gitea {method} {path}: response larger than {MAX_BODY_BYTES} bytes"),
                )
                .with_details(json!({ "method": method.as_str(), "path": path, "limit_bytes": MAX_BODY_BYTES })));
            }
            bytes.extend_from_slice(&chunk);
        }
        tracing::debug!(
            method = %method, path = %path, status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64, "gitea request"
        );
        if status.is_success() {
            return Ok(Answer { headers, body: bytes });
        }
        Err(status_error(&method, &path, status, &headers, &bytes))
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v)
        .map_err(|e| Error::new(ErrorCode::ToolFailed, format!("gitea request not serialisable: {e}")))
}

fn decode<T: DeserializeOwned>(method: &Method, path: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        Error::new(ErrorCode::ToolFailed, format!("gitea {method} {path}: unexpected response body: {e}"))
            .with_details(json!({ "method": method.as_str(), "path": path, "problem": e.to_string() }))
    })
}

/// `<base>/api/v1` from the configured base URL.
fn api_url(base: &str) -> Result<Url> {
    let field = "gitea.base_url";
    let mut url = Url::parse(base.trim()).map_err(|e| config_error(field, format_args!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(config_error(field, "must be an http or https URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config_error(field, "must not carry credentials (use gitea.token)"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(config_error(field, "must not have a query or fragment"));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let path = if path.ends_with("/api/v1") { path } else { format!("{path}/api/v1") };
    url.set_path(&path);
    Ok(url)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The page number of the `Link` header's `rel="next"`, when it points at the same origin and
/// path as the request (anything else is ignored: a server must not steer the token away).
fn next_page(headers: &HeaderMap, own: &Url, current: u32) -> Option<u32> {
    for value in headers.get_all("link") {
        let Ok(text) = value.to_str() else { continue };
        for (target, rels) in parse_link(text) {
            if !rels.iter().any(|r| r.eq_ignore_ascii_case("next")) {
                continue;
            }
            let Ok(url) = own.join(&target) else { continue };
            if url.origin() != own.origin() || url.path().trim_end_matches('/') != own.path().trim_end_matches('/') {
                tracing::debug!("gitea: ignoring a Link rel=next that points elsewhere");
                continue;
            }
            let page = url.query_pairs().find(|(k, _)| k == "page").and_then(|(_, v)| v.parse::<u32>().ok());
            if let Some(p) = page.filter(|p| *p > current) {
                return Some(p);
            }
        }
    }
    None
}

/// Parses an RFC 8288 `Link` header into (target, rel values).
pub fn parse_link(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else { break };
        let target = rest[open + 1..open + close].trim().to_owned();
        rest = &rest[open + close + 1..];
        // Parameters run up to the next link (a comma before `<`) or the end.
        let end = next_link_start(rest);
        let params = &rest[..end];
        rest = &rest[end..];
        let mut rels = Vec::new();
        for p in params.split(';') {
            let Some((k, v)) = p.split_once('=') else { continue };
            if k.trim().eq_ignore_ascii_case("rel") {
                rels.extend(v.trim().trim_matches('"').split_whitespace().map(str::to_owned));
            }
        }
        out.push((target, rels));
    }
    out
}

fn next_link_start(s: &str) -> usize {
    let mut in_quotes = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes && s[i + 1..].trim_start().starts_with('<') => return i,
            _ => {}
        }
    }
    s.len()
}

fn transport_error(method: &Method, path: &str, e: &reqwest::Error) -> Error {
    let details = json!({ "method": method.as_str(), "path": path });
    // reqwest's Display may name the URL; ours carries no secret (the token is a header).
    if e.is_timeout() {
        Error::new(ErrorCode::Timeout, format!("gitea {method} {path}: no answer in time")).with_details(details)
    } else if e.is_connect() || e.is_request() || e.is_body() {
        Error::new(ErrorCode::ToolFailedTransient, format!("gitea {method} {path}: {}", error_chain(e)))
            .with_details(details)
    } else {
        Error::new(ErrorCode::ToolFailed, format!("gitea {method} {path}: {}", error_chain(e))).with_details(details)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Maps a non-2xx answer to an error code (see the module docs).
fn status_error(method: &Method, path: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| parsed.as_ref().and_then(|v| v.get(k)).and_then(Value::as_str).map(str::to_owned);
    let gitea_message = field("message").filter(|m| !m.is_empty());
    let mut details = json!({
        "status": status.as_u16(),
        "method": method.as_str(),
        "path": path,
        "gitea_message": gitea_message,
        "gitea_url": field("url"),
    });
    let said = gitea_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
    let code = status.as_u16();
    let (code, message) = match code {
        300..=399 => {
            details["field"] = json!("gitea.base_url");
            let to = headers.get("location").and_then(|l| l.to_str().ok()).unwrap_or("elsewhere").to_owned();
            details["location"] = json!(to);
            (
                ErrorCode::ConfigInvalid,
                format!("gitea {method} {path} was redirected ({code}); set gitea.base_url to the final address"),
            )
        }
        401 | 403 => {
            details["field"] = json!("gitea.token");
            (ErrorCode::ConfigInvalid, format!("gitea refused the configured token for {method} {path} ({code}){said}"))
        }
        404 => (ErrorCode::NotFound, format!("gitea {method} {path}: not found{said}")),
        429 | 500..=599 => (ErrorCode::ToolFailedTransient, format!("gitea {method} {path} failed ({code}){said}")),
        _ => (ErrorCode::ToolFailed, format!("gitea {method} {path} refused ({code}){said}")),
    };
    Error::new(code, message).with_details(details)
}

// ---------------------------------------------------------------------------------------------
// Shared by the tool modules
// ---------------------------------------------------------------------------------------------

/// The configured client, or E4001 "gitea is not configured".
///
/// # Errors
/// E4001 when the harness was built without a `gitea` config.
pub fn client(ctx: &ToolContext) -> Result<&std::sync::Arc<GiteaClient>> {
    ctx.env.gitea.as_ref().ok_or_else(|| {
        Error::new(ErrorCode::ConfigInvalid, "gitea is not configured").with_details(json!({ "field": "gitea" }))
    })
}

/// `owner/repo` from a call's arguments, for breakers and provenance; `(default)` stands for a
/// part left to the configured default.
pub fn target_of(args: &Value) -> String {
    let part = |k: &str| args.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("(default)");
    format!("{}/{}", part("owner"), part("repo"))
}

/// The `owner` and `repo` input properties every Gitea tool shares.
pub fn repo_properties() -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "owner".into(),
        json!({"type": "string", "pattern": NAME_PATTERN, "description": "Repository owner; the configured gitea.owner when absent."}),
    );
    m.insert(
        "repo".into(),
        json!({"type": "string", "pattern": NAME_PATTERN, "description": "Repository name; the configured gitea.repo when absent."}),
    );
    m
}

/// `s` cut to at most `max` characters, and whether it was cut.
pub fn truncate_chars(s: &str, max: usize) -> (String, bool) {
    match s.char_indices().nth(max) {
        Some((i, _)) => (s[..i].to_owned(), true),
        None => (s.to_owned(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves `base_url` gains `/api/v1` once, and bad URLs are refused naming the field.
    #[test]
    fn base_url_is_normalised_and_checked() {
        assert_eq!(api_url("http://127.0.0.1:3000").expect("ok").as_str(), "http://127.0.0.1:3000/api/v1");
        assert_eq!(
            api_url("https://git.example.com/gitea/").expect("ok").as_str(),
            "https://git.example.com/gitea/api/v1"
        );
        assert_eq!(api_url("https://git.example.com/api/v1/").expect("ok").as_str(), "https://git.example.com/api/v1");
        for bad in ["ftp://x", "not a url", "https://u:p@git.example.com", "https://git.example.com/?a=1", "unix:/x"] {
            let e = api_url(bad).expect_err(bad);
            assert_eq!(e.code, ErrorCode::ConfigInvalid, "{bad}");
            assert_eq!(e.details["field"], "gitea.base_url");
        }
    }

    /// Proves the token never appears in `Debug` or serialised config, and a bad token is refused.
    #[test]
    fn token_is_redacted_everywhere() {
        let cfg = GiteaConfig::new("http://127.0.0.1:1", "s3cr3t-token-value");
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
        assert!(!serde_json::to_string(&cfg).expect("json").contains("s3cr3t"));
        let client = GiteaClient::new(&cfg).expect("client");
        assert!(!format!("{client:?}").contains("s3cr3t"));
        let parsed: GiteaConfig =
            serde_json::from_value(json!({"base_url": "http://x", "token": "abc"})).expect("parses");
        assert_eq!(parsed.token.expose(), "abc");
        assert_eq!(parsed.timeout_ms, DEFAULT_TIMEOUT_MS);
        let e = GiteaClient::new(&GiteaConfig::new("http://x", "has space")).expect_err("bad token");
        assert_eq!(e.details["field"], "gitea.token");
        let bad: std::result::Result<GiteaConfig, _> =
            serde_json::from_value(json!({"base_url": "http://x", "token": "a", "tokn": "b"}));
        assert!(bad.is_err(), "unknown fields are refused");
    }

    /// Proves Link headers parse as Gitea writes them, and only same-origin, same-path next
    /// links are followed.
    #[test]
    fn link_next_is_parsed_and_confined() {
        let own = Url::parse("http://127.0.0.1:3000/api/v1/repos/o/r/issues").expect("url");
        let text = "<http://127.0.0.1:3000/api/v1/repos/o/r/issues?labels=a%2Cb&limit=50&page=2&type=issues>; rel=\"next\",<http://127.0.0.1:3000/api/v1/repos/o/r/issues?limit=50&page=3>; rel=\"last\"";
        let links = parse_link(text);
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].1, vec!["next"]);
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static("<http://127.0.0.1:3000/api/v1/repos/o/r/issues?page=2>; rel=\"next\""),
        );
        assert_eq!(next_page(&h, &own, 1), Some(2));
        assert_eq!(next_page(&h, &own, 2), None, "never goes backwards");
        h.insert(
            "link",
            HeaderValue::from_static("<http://evil.example/api/v1/repos/o/r/issues?page=2>; rel=\"next\""),
        );
        assert_eq!(next_page(&h, &own, 1), None);
        h.insert("link", HeaderValue::from_static("<http://127.0.0.1:3000/api/v1/user?page=2>; rel=\"next\""));
        assert_eq!(next_page(&h, &own, 1), None);
    }

    /// Proves each class of Gitea answer maps to its documented code, with Gitea's message.
    #[test]
    fn statuses_map_to_codes() {
        let body = br#"{"message":"label does not exist [label_id: 9]","url":"http://g/api/swagger"}"#;
        let h = HeaderMap::new();
        let m = Method::DELETE;
        let cases = [
            (401, ErrorCode::ConfigInvalid),
            (403, ErrorCode::ConfigInvalid),
            (404, ErrorCode::NotFound),
            (409, ErrorCode::ToolFailed),
            (422, ErrorCode::ToolFailed),
            (429, ErrorCode::ToolFailedTransient),
            (500, ErrorCode::ToolFailedTransient),
            (503, ErrorCode::ToolFailedTransient),
            (302, ErrorCode::ConfigInvalid),
        ];
        for (status, code) in cases {
            let e = status_error(&m, "/x", StatusCode::from_u16(status).expect("status"), &h, body);
            assert_eq!(e.code, code, "{status}");
            assert_eq!(e.details["status"], status);
        }
        let e = status_error(&m, "/x", StatusCode::UNPROCESSABLE_ENTITY, &h, body);
        assert!(e.message.contains("label does not exist [label_id: 9]"), "{}", e.message);
        assert_eq!(e.details["gitea_message"], "label does not exist [label_id: 9]");
    }

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

    /// Proves bodies are cut on a character boundary.
    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_chars("héllo", 2), ("hé".to_owned(), true));
        assert_eq!(truncate_chars("hi", 5), ("hi".to_owned(), false));
    }
}
