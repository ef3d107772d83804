//! [`GiteaClient`]: the one REST API v1 client, over `reqwest` (see the module docs of
//! [`crate::gitea`] for how it talks and how answers map to codes).

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::config::config_error;
use super::{
    Comment, CreateIssueOption, CreateLabelOption, CreatePullRequestOption, EditIssueOption, GiteaConfig, Issue,
    IssueKind, IssueQuery, Label, LabelRef, MAX_BODY_BYTES, MAX_PAGE_SIZE, Paged, PullQuery, PullRequest,
    ServerVersion, User, is_valid_name,
};
use crate::error::{Error, ErrorCode, Result};

#[derive(Serialize)]
struct IssueLabelsOption<'a> {
    labels: &'a [LabelRef],
}

#[derive(Serialize)]
struct CreateIssueCommentOption<'a> {
    body: &'a str,
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitea::DEFAULT_TIMEOUT_MS;

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
}
