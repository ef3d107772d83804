//! Gitea: one REST API v1 client, [`GiteaClient`], behind the small trait [`Gitea`] that the
//! three Gitea tools (`crate::tools::gitea`) and the triage daemon use.
//!
//! The client speaks the operations of Gitea's official OpenAPI subset
//! (`shared/data/gitea/openapi-v1.26.3-subset.json`) and nothing else; the tests crate holds a
//! Gitea test server that answers as that spec says and a validator that checks every request
//! this client makes against it.
//!
//! # Layout
//!
//! - [`config`]: [`GiteaConfig`] (`gitea:` in a config), [`GiteaToken`], valid names.
//! - [`types`]: the API objects and request bodies ([`Issue`], [`Label`], [`EditIssueOption`],
//!   ...), list queries and [`Paged`].
//! - [`client`]: [`GiteaClient`], the HTTP mechanism and the mapping of answers to codes.
//! - here: the [`Gitea`] trait, the operations the tools and triage need. A harness takes one
//!   (`HarnessBuilder::gitea`), so a caller with its own server and token (triage) or a test
//!   can hand in its client; without one, the harness builds a [`GiteaClient`] from
//!   `Config::gitea`.
//!
//! This module knows nothing of tools, houses or policy: writes made through the harness
//! (`gitea_update_issue`, `gitea_create_pr`) are checked, retried and recorded there; a
//! direct call on the trait is none of those, which is why daemons only read through it.
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
//! A Gitea tool called while no Gitea is configured (`ToolEnv.gitea` is `None`) fails with
//! E4001 "gitea is not configured".

use crate::error::Result;

pub mod client;
pub mod config;
pub mod types;

pub use client::{GiteaClient, parse_link};
pub use config::{GiteaConfig, GiteaToken, NAME_PATTERN, is_valid_name};
pub use types::{
    BranchInfo, Comment, CreateIssueOption, CreateLabelOption, CreatePullRequestOption, EditIssueOption, Issue,
    IssueKind, IssueQuery, Label, LabelRef, Paged, PullQuery, PullRequest, PullRequestMeta, ServerVersion, StateFilter,
    User,
};

/// The most items Gitea returns in one page (`MAX_RESPONSE_ITEMS`); larger `limit`s are cut
/// to this silently, so the client never asks for more.
pub const MAX_PAGE_SIZE: u32 = 50;
/// Largest response body the client reads; a larger one is refused (E3003).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// `timeout_ms` when the config gives none.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// `max_pages` when the config gives none.
pub const DEFAULT_MAX_PAGES: u32 = 40;

/// The future a [`Gitea`] operation returns.
pub type GiteaFuture<'a, T> = crate::future::BoxFuture<'a, Result<T>>;

/// The Gitea operations the tools and the triage daemon use, so a test can hand a harness a
/// client of its own. [`GiteaClient`] is the implementation; each method is the inherent
/// method of the same name, documented there with its errors.
pub trait Gitea: Send + Sync + std::fmt::Debug {
    /// The owner and repository a call acts on: the given ones, else the configured defaults
    /// (E1003 when neither names one, or a name is not valid).
    ///
    /// # Errors
    /// As [`GiteaClient::repo_of`].
    fn repo_of(&self, owner: Option<&str>, repo: Option<&str>) -> Result<(String, String)>;

    /// `GET /repos/{owner}/{repo}/issues`, every page up to the bounds.
    fn list_issues<'a>(&'a self, owner: &'a str, repo: &'a str, q: &'a IssueQuery) -> GiteaFuture<'a, Paged<Issue>>;

    /// `GET /repos/{owner}/{repo}/issues/{index}`.
    fn get_issue<'a>(&'a self, owner: &'a str, repo: &'a str, index: u64) -> GiteaFuture<'a, Issue>;

    /// `PATCH /repos/{owner}/{repo}/issues/{index}`.
    fn edit_issue<'a>(
        &'a self,
        owner: &'a str,
        repo: &'a str,
        index: u64,
        opt: &'a EditIssueOption,
    ) -> GiteaFuture<'a, Issue>;

    /// `GET /repos/{owner}/{repo}/labels`, every page.
    fn list_labels<'a>(&'a self, owner: &'a str, repo: &'a str) -> GiteaFuture<'a, Paged<Label>>;

    /// `POST /repos/{owner}/{repo}/labels`.
    fn create_label<'a>(&'a self, owner: &'a str, repo: &'a str, opt: &'a CreateLabelOption) -> GiteaFuture<'a, Label>;

    /// `POST /repos/{owner}/{repo}/issues/{index}/labels`.
    fn add_labels<'a>(
        &'a self,
        owner: &'a str,
        repo: &'a str,
        index: u64,
        labels: &'a [LabelRef],
    ) -> GiteaFuture<'a, Vec<Label>>;

    /// `DELETE /repos/{owner}/{repo}/issues/{index}/labels/{id}`.
    fn remove_label<'a>(&'a self, owner: &'a str, repo: &'a str, index: u64, label_id: i64) -> GiteaFuture<'a, ()>;

    /// `GET /repos/{owner}/{repo}/issues/{index}/comments`.
    fn list_comments<'a>(&'a self, owner: &'a str, repo: &'a str, index: u64) -> GiteaFuture<'a, Vec<Comment>>;

    /// `POST /repos/{owner}/{repo}/issues/{index}/comments`.
    fn create_comment<'a>(
        &'a self,
        owner: &'a str,
        repo: &'a str,
        index: u64,
        body: &'a str,
    ) -> GiteaFuture<'a, Comment>;

    /// `GET /repos/{owner}/{repo}/pulls`, every page up to the bounds.
    fn list_pulls<'a>(&'a self, owner: &'a str, repo: &'a str, q: &'a PullQuery)
    -> GiteaFuture<'a, Paged<PullRequest>>;

    /// `POST /repos/{owner}/{repo}/pulls`.
    fn create_pull<'a>(
        &'a self,
        owner: &'a str,
        repo: &'a str,
        opt: &'a CreatePullRequestOption,
    ) -> GiteaFuture<'a, PullRequest>;
}

impl Gitea for GiteaClient {
    fn repo_of(&self, owner: Option<&str>, repo: Option<&str>) -> Result<(String, String)> {
        GiteaClient::repo_of(self, owner, repo)
    }

    fn list_issues<'a>(&'a self, owner: &'a str, repo: &'a str, q: &'a IssueQuery) -> GiteaFuture<'a, Paged<Issue>> {
        Box::pin(GiteaClient::list_issues(self, owner, repo, q))
    }

    fn get_issue<'a>(&'a self, owner: &'a str, repo: &'a str, index: u64) -> GiteaFuture<'a, Issue> {
        Box::pin(GiteaClient::get_issue(self, owner, repo, index))
    }

    fn edit_issue<'a>(
        &'a self,
        owner: &'a str,
        repo: &'a str,
        index: u64,
        opt: &'a EditIssueOption,
    ) -> GiteaFuture<'a, Issue> {
        Box::pin(GiteaClient::edit_issue(self, owner, repo, index, opt))
    }

    fn list_labels<'a>(&'a self, owner: &'a str, repo: &'a str) -> GiteaFuture<'a, Paged<Label>> {
        Box::pin(GiteaClient::list_labels(self, owner, repo))
    }

    fn create_label<'a>(&'a self, owner: &'a str, repo: &'a str, opt: &'a CreateLabelOption) -> GiteaFuture<'a, Label> {
        Box::pin(GiteaClient::create_label(self, owner, repo, opt))
    }

    fn add_labels<'a>(
        &'a self,
        owner: &'a str,
        repo: &'a str,
        index: u64,
        labels: &'a [LabelRef],
    ) -> GiteaFuture<'a, Vec<Label>> {
        Box::pin(GiteaClient::add_labels(self, owner, repo, index, labels))
    }

    fn remove_label<'a>(&'a self, owner: &'a str, repo: &'a str, index: u64, label_id: i64) -> GiteaFuture<'a, ()> {
        Box::pin(GiteaClient::remove_label(self, owner, repo, index, label_id))
    }

    fn list_comments<'a>(&'a self, owner: &'a str, repo: &'a str, index: u64) -> GiteaFuture<'a, Vec<Comment>> {
        Box::pin(GiteaClient::list_comments(self, owner, repo, index))
    }

    fn create_comment<'a>(
        &'a self,
        owner: &'a str,
        repo: &'a str,
        index: u64,
        body: &'a str,
    ) -> GiteaFuture<'a, Comment> {
        Box::pin(GiteaClient::create_comment(self, owner, repo, index, body))
    }

    fn list_pulls<'a>(
        &'a self,
        owner: &'a str,
        repo: &'a str,
        q: &'a PullQuery,
    ) -> GiteaFuture<'a, Paged<PullRequest>> {
        Box::pin(GiteaClient::list_pulls(self, owner, repo, q))
    }

    fn create_pull<'a>(
        &'a self,
        owner: &'a str,
        repo: &'a str,
        opt: &'a CreatePullRequestOption,
    ) -> GiteaFuture<'a, PullRequest> {
        Box::pin(GiteaClient::create_pull(self, owner, repo, opt))
    }
}
