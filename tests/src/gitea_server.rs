//! A Gitea API v1 test server: real HTTP on `127.0.0.1:0`, in-memory state, answering the
//! operations of `shared/data/gitea/openapi-v1.26.3-subset.json` the way Gitea v1.26.3 does.
//!
//! No real Gitea can be installed here, so this stands in for one. Every response it sends is
//! checked against the spec by the tests ([`crate::openapi`]), so it cannot drift from it.
//!
//! ```no_run
//! # async fn demo() {
//! use uni_wizard_tests::gitea_server::GiteaServer;
//! let server = GiteaServer::start().await;
//! let (url, token) = (server.url(), server.token().to_owned());
//! // ... point a client at `url` with `token`; `server.exchanges()` is everything it saw.
//! # }
//! ```
//!
//! # Gitea's behaviours it reproduces
//! - Auth: `Authorization: token <T>` (also `bearer`). No credentials: 401 `token is required`
//!   (only `GET /version` answers anonymously); an unknown token: 401. Repositories are
//!   readable by every user; writing needs the owner or a collaborator, else 403.
//! - Errors are `{"message": ..., "url": "<app>/api/swagger"}` with Gitea's status for each case.
//! - `GET /repos/{o}/{r}/issues`: pull requests are included unless `type=issues`; `state`
//!   defaults to `open`; `labels` keeps issues with **any** of the names (as the spec says),
//!   names that do not exist are discarded, and when none is left the filter is dropped;
//!   `since`/`before` compare the updated time in whole seconds (`since` inclusive);
//!   `created_by`/`assigned_by` name users (unknown: 404); `q` searches title and body;
//!   `milestones` and `mentioned_by` are accepted and ignored (no milestones or mentions here).
//!   Newest created first.
//! - Paging: `page` from 1 (0 or absent means 1), `limit` default 30, capped at 50 silently.
//!   Lists of issues and pulls send `X-Total-Count` and a `Link` header built as Gitea's
//!   `genAPILinks` does (`next`, `last`, `first`, `prev`; query keys re-encoded in sorted order);
//!   labels, comments and hooks send `X-Total-Count` only, as Gitea does.
//! - `PATCH .../issues/{index}` answers **201**; `assignees` replaces the whole set; an unknown
//!   assignee is a 500 with an empty message, as Gitea in production answers (outside the spec).
//! - `POST .../issues/{index}/labels` takes ids or names (not both: 400), ignores ones that do
//!   not exist, and answers 200 with the full set (sorted by name, as Gitea loads them); `PUT`
//!   replaces; `DELETE .../labels/{id}` answers 204, or 422 `label does not exist [label_id: N]`.
//! - Issues and pull requests share one index sequence per repository.
//! - `POST .../pulls`: 422 when head equals base, 404 for a missing branch, 409 when an open
//!   pull request from head into base exists.
//!
//! # Time
//! A logical clock starts at 2026-01-01T00:00:00Z and moves one second before every change, so
//! created and updated times are distinct and ordering is deterministic. [`GiteaServer::advance`]
//! moves it further.
//!
//! # Fixture
//! Users `uni` (owner of `uni/fleet`), `timmy-bot` (collaborator; [`GiteaServer::token`]),
//! `alice`, `bob`, and `reader` (no write access; [`GiteaServer::reader_token`]). Repository
//! `uni/fleet` with branches `main`, `develop`, `feature/triage`, `feature/docs` and no labels
//! or issues: tests seed what they need with the `add_*` methods (not over HTTP, not recorded).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

use crate::openapi::{Exchange, HttpRequest, HttpResponse};

/// The owner of the fixture repository.
pub const OWNER: &str = "uni";
/// The fixture repository.
pub const REPO: &str = "fleet";
/// The user [`GiteaServer::token`] authenticates.
pub const BOT: &str = "timmy-bot";
/// The version `GET /version` reports.
pub const VERSION: &str = "1.26.3";
/// The largest page (Gitea's `MAX_RESPONSE_ITEMS`).
pub const MAX_LIMIT: usize = 50;
/// The page size when `limit` is absent (Gitea's `DEFAULT_PAGING_NUM`).
pub const DEFAULT_LIMIT: usize = 30;
/// The clock's start: 2026-01-01T00:00:00Z.
pub const EPOCH: i64 = 1_767_225_600;

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct UserRec {
    id: i64,
    login: String,
    full_name: String,
    is_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelRec {
    id: i64,
    name: String,
    color: String,
    description: String,
    exclusive: bool,
    is_archived: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CommentRec {
    id: i64,
    user: i64,
    body: String,
    created: i64,
    updated: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PullRec {
    head: String,
    base: String,
    head_sha: String,
    base_sha: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct IssueRec {
    id: i64,
    index: u64,
    poster: i64,
    title: String,
    body: String,
    closed_at: Option<i64>,
    labels: Vec<i64>,
    assignees: Vec<i64>,
    comments: Vec<CommentRec>,
    created: i64,
    updated: i64,
    content_version: i64,
    pull: Option<PullRec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HookRec {
    id: i64,
    kind: String,
    name: String,
    config: BTreeMap<String, String>,
    events: Vec<String>,
    active: bool,
    branch_filter: String,
    authorization_header: String,
    created: i64,
    updated: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RepoRec {
    id: i64,
    owner: i64,
    name: String,
    branches: BTreeMap<String, String>,
    labels: Vec<LabelRec>,
    issues: Vec<IssueRec>,
    hooks: Vec<HookRec>,
    writers: Vec<i64>,
    next_index: u64,
    created: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ids {
    user: i64,
    repo: i64,
    label: i64,
    issue: i64,
    comment: i64,
    hook: i64,
}

/// The server's whole state; compare two snapshots to prove nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    now: i64,
    ids: Ids,
    users: Vec<UserRec>,
    tokens: BTreeMap<String, i64>,
    repos: Vec<RepoRec>,
}

fn next(counter: &mut i64) -> i64 {
    *counter += 1;
    *counter
}

fn fake_sha(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(seed.as_bytes())[..20])
}

fn new_token(label: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    fake_sha(&format!("{label}:{nanos}:{n}:{}", std::process::id()))
}

impl State {
    fn seeded(bot_token: &str, reader_token: &str) -> State {
        let mut s = State { now: EPOCH, ids: Ids::default(), users: vec![], tokens: BTreeMap::new(), repos: vec![] };
        let owner = s.add_user("uni", "Uni Wizard");
        let bot = s.add_user(BOT, "Timmy Bot");
        s.add_user("alice", "Alice");
        s.add_user("bob", "Bob");
        let reader = s.add_user("reader", "Read Only");
        s.tokens.insert(bot_token.to_owned(), bot);
        s.tokens.insert(reader_token.to_owned(), reader);
        let repo = s.add_repo(owner, REPO);
        s.repos[repo].writers.push(bot);
        for b in ["main", "develop", "feature/triage", "feature/docs"] {
            s.repos[repo].branches.insert(b.to_owned(), fake_sha(b));
        }
        s
    }

    fn tick(&mut self) -> i64 {
        self.now += 1;
        self.now
    }

    fn add_user(&mut self, login: &str, full_name: &str) -> i64 {
        let id = next(&mut self.ids.user);
        self.users.push(UserRec { id, login: login.to_owned(), full_name: full_name.to_owned(), is_admin: false });
        id
    }

    fn add_repo(&mut self, owner: i64, name: &str) -> usize {
        let id = next(&mut self.ids.repo);
        let created = self.tick();
        self.repos.push(RepoRec {
            id,
            owner,
            name: name.to_owned(),
            branches: BTreeMap::new(),
            labels: vec![],
            issues: vec![],
            hooks: vec![],
            writers: vec![],
            next_index: 0,
            created,
        });
        self.repos.len() - 1
    }

    fn user(&self, id: i64) -> Option<&UserRec> {
        self.users.iter().find(|u| u.id == id)
    }

    fn user_by_login(&self, login: &str) -> Option<&UserRec> {
        self.users.iter().find(|u| u.login.eq_ignore_ascii_case(login))
    }

    fn repo_index(&self, owner: &str, name: &str) -> Option<usize> {
        let owner = self.user_by_login(owner)?.id;
        self.repos.iter().position(|r| r.owner == owner && r.name.eq_ignore_ascii_case(name))
    }

    fn new_issue(&mut self, repo: usize, poster: i64, title: &str, body: &str, pull: Option<PullRec>) -> usize {
        let now = self.tick();
        let id = next(&mut self.ids.issue);
        let r = &mut self.repos[repo];
        r.next_index += 1;
        r.issues.push(IssueRec {
            id,
            index: r.next_index,
            poster,
            title: title.to_owned(),
            body: body.to_owned(),
            closed_at: None,
            labels: vec![],
            assignees: vec![],
            comments: vec![],
            created: now,
            updated: now,
            content_version: 0,
            pull,
        });
        r.issues.len() - 1
    }
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

struct Shared {
    state: Mutex<State>,
    exchanges: Mutex<Vec<Exchange>>,
    app_url: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running Gitea test server; stops when dropped.
pub struct GiteaServer {
    addr: SocketAddr,
    token: String,
    reader_token: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for GiteaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GiteaServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for GiteaServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GiteaServer {
    /// Binds `127.0.0.1:0` and serves the fixture until dropped.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> GiteaServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let token = new_token("bot");
        let reader_token = new_token("reader");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::seeded(&token, &reader_token)),
            exchanges: Mutex::new(Vec::new()),
            app_url: format!("http://{addr}/"),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the accept loop closes them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let shared = serving.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(serve(&shared, req).await) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        GiteaServer { addr, token, reader_token, shared, task }
    }

    /// The server root, e.g. `http://127.0.0.1:41234` (the API is under `/api/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A token of `timmy-bot`, a collaborator of `uni/fleet`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A token of `reader`, who may read but not write.
    pub fn reader_token(&self) -> &str {
        &self.reader_token
    }

    /// Every request received so far, with the response sent (`authorization` redacted).
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.shared.exchanges).clone()
    }

    /// A copy of the whole state.
    pub fn snapshot(&self) -> State {
        lock(&self.shared.state).clone()
    }

    /// Moves the clock forward.
    pub fn advance(&self, secs: i64) {
        lock(&self.shared.state).now += secs;
    }

    /// The clock now, as RFC 3339.
    pub fn now(&self) -> String {
        rfc3339(lock(&self.shared.state).now)
    }

    fn with_repo<T>(&self, owner: &str, repo: &str, f: impl FnOnce(&mut State, usize) -> T) -> T {
        let mut s = lock(&self.shared.state);
        let r = s.repo_index(owner, repo).unwrap_or_else(|| panic!("no repository {owner}/{repo}"));
        f(&mut s, r)
    }

    /// Adds a user; returns its id.
    pub fn add_user(&self, login: &str) -> i64 {
        lock(&self.shared.state).add_user(login, login)
    }

    /// Adds a branch to a repository.
    pub fn add_branch(&self, owner: &str, repo: &str, branch: &str) {
        self.with_repo(owner, repo, |s, r| {
            s.repos[r].branches.insert(branch.to_owned(), fake_sha(branch));
        });
    }

    /// Adds a label (colour without `#`); returns its id.
    pub fn add_label(&self, owner: &str, repo: &str, name: &str, color: &str) -> i64 {
        self.with_repo(owner, repo, |s, r| {
            let id = next(&mut s.ids.label);
            s.repos[r].labels.push(LabelRec {
                id,
                name: name.to_owned(),
                color: color.trim_start_matches('#').to_lowercase(),
                description: String::new(),
                exclusive: false,
                is_archived: false,
            });
            id
        })
    }

    /// Adds an open issue by `alice`, labelled with existing label names; returns its number.
    pub fn add_issue(&self, owner: &str, repo: &str, title: &str, body: &str, labels: &[&str]) -> u64 {
        self.with_repo(owner, repo, |s, r| {
            let poster = s.user_by_login("alice").map_or(1, |u| u.id);
            let i = s.new_issue(r, poster, title, body, None);
            let ids: Vec<i64> =
                s.repos[r].labels.iter().filter(|l| labels.contains(&l.name.as_str())).map(|l| l.id).collect();
            let issue = &mut s.repos[r].issues[i];
            issue.labels = ids;
            issue.index
        })
    }

    /// Closes an issue (its updated time moves).
    pub fn close_issue(&self, owner: &str, repo: &str, number: u64) {
        self.with_repo(owner, repo, |s, r| {
            let now = s.tick();
            if let Some(i) = s.repos[r].issues.iter_mut().find(|i| i.index == number) {
                i.closed_at = Some(now);
                i.updated = now;
            }
        });
    }

    /// Adds an open pull request by `alice` from `head` into `base` (both added as branches if
    /// missing); returns its number.
    pub fn add_pull(&self, owner: &str, repo: &str, title: &str, head: &str, base: &str) -> u64 {
        self.with_repo(owner, repo, |s, r| {
            for b in [head, base] {
                s.repos[r].branches.entry(b.to_owned()).or_insert_with(|| fake_sha(b));
            }
            let pull = PullRec {
                head: head.to_owned(),
                base: base.to_owned(),
                head_sha: s.repos[r].branches[head].clone(),
                base_sha: s.repos[r].branches[base].clone(),
            };
            let poster = s.user_by_login("alice").map_or(1, |u| u.id);
            let i = s.new_issue(r, poster, title, "", Some(pull));
            s.repos[r].issues[i].index
        })
    }

    /// An issue or pull request as `GET .../issues/{index}` renders it.
    pub fn issue(&self, owner: &str, repo: &str, number: u64) -> Option<Value> {
        let s = lock(&self.shared.state);
        let r = s.repo_index(owner, repo)?;
        let issue = s.repos[r].issues.iter().find(|i| i.index == number)?;
        Some(render_issue(&s, &self.shared.app_url, &s.repos[r], issue))
    }

    /// The label names of an issue, in the order they were added (a cheap look, for polling).
    pub fn labels(&self, owner: &str, repo: &str, number: u64) -> Vec<String> {
        let s = lock(&self.shared.state);
        let Some(r) = s.repo_index(owner, repo) else { return vec![] };
        let repo = &s.repos[r];
        repo.issues
            .iter()
            .find(|i| i.index == number)
            .map(|i| {
                i.labels
                    .iter()
                    .filter_map(|id| repo.labels.iter().find(|l| l.id == *id))
                    .map(|l| l.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The bodies of an issue's comments, oldest first.
    pub fn comments(&self, owner: &str, repo: &str, number: u64) -> Vec<String> {
        let s = lock(&self.shared.state);
        let Some(r) = s.repo_index(owner, repo) else { return vec![] };
        s.repos[r]
            .issues
            .iter()
            .find(|i| i.index == number)
            .map(|i| i.comments.iter().map(|c| c.body.clone()).collect())
            .unwrap_or_default()
    }
}

async fn serve(shared: &Shared, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes().to_vec()).unwrap_or_default();
    let query: Vec<(String, String)> =
        parts.uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let auth = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            let v = if k == "authorization" { redact_auth(&v) } else { v };
            (k.as_str().to_owned(), v)
        })
        .collect();
    let request = HttpRequest {
        method: parts.method.as_str().to_uppercase(),
        path: parts.uri.path().to_owned(),
        raw_query: parts.uri.query().map(str::to_owned),
        query,
        headers,
        body,
    };
    let response = {
        let mut state = lock(&shared.state);
        handle(&mut state, &shared.app_url, &request, auth.as_deref())
    };
    lock(&shared.exchanges).push(Exchange { request, response: response.clone() });
    let mut builder = hyper::Response::builder().status(response.status);
    for (k, v) in &response.headers {
        builder = builder.header(k, v);
    }
    builder.body(Full::new(Bytes::from(response.body))).unwrap_or_else(|_| {
        let mut r = hyper::Response::new(Full::new(Bytes::new()));
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

fn redact_auth(v: &str) -> String {
    match v.split_once(' ') {
        Some((scheme, _)) => format!("{scheme} [redacted]"),
        None => "[redacted]".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn json_response(status: u16, v: &Value) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json;charset=utf-8".into())],
        body: v.to_string().into_bytes(),
    }
}

fn error(app: &str, status: u16, message: impl Into<String>) -> HttpResponse {
    json_response(status, &json!({ "message": message.into(), "url": format!("{app}api/swagger") }))
}

fn not_found(app: &str) -> HttpResponse {
    error(app, 404, "The target couldn't be found.")
}

fn empty(status: u16) -> HttpResponse {
    HttpResponse { status, headers: vec![], body: vec![] }
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let s = unix.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// An RFC 3339 time as Unix seconds, the fraction dropped (Gitea's 1 s resolution).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) { t.parse().ok() } else { None }
    };
    let (y, mo, d, h, mi, sec) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        z if z.len() == 6 && z.as_bytes()[3] == b':' => {
            let sign = match z.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = z[1..3].parse().ok()?;
            let om: i64 = z[4..6].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

// ---------------------------------------------------------------------------------------------
// Rendering, as Gitea's convert package does
// ---------------------------------------------------------------------------------------------

fn render_user(app: &str, u: &UserRec) -> Value {
    json!({
        "id": u.id,
        "login": u.login,
        "login_name": "",
        "source_id": 0,
        "full_name": u.full_name,
        "email": format!("{}@noreply.localhost", u.login),
        "avatar_url": format!("{app}avatars/{}", u.id),
        "html_url": format!("{app}{}", u.login),
        "language": "",
        "is_admin": u.is_admin,
        "last_login": "0001-01-01T00:00:00Z",
        "created": rfc3339(EPOCH),
        "restricted": false,
        "active": true,
        "prohibit_login": false,
        "location": "",
        "website": "",
        "description": "",
        "visibility": "public",
        "followers_count": 0,
        "following_count": 0,
        "starred_repos_count": 0,
        // Gitea's User.MarshalJSON adds this copy of `login` (not in the spec).
        "username": u.login,
    })
}

fn user_json(s: &State, app: &str, id: i64) -> Value {
    s.user(id).map_or(Value::Null, |u| render_user(app, u))
}

fn repo_full_name(s: &State, r: &RepoRec) -> (String, String) {
    let owner = s.user(r.owner).map_or_else(String::new, |u| u.login.clone());
    let full = format!("{owner}/{}", r.name);
    (owner, full)
}

fn render_label(app: &str, full: &str, l: &LabelRec) -> Value {
    json!({
        "id": l.id,
        "name": l.name,
        "exclusive": l.exclusive,
        "is_archived": l.is_archived,
        "color": l.color,
        "description": l.description,
        "url": format!("{app}api/v1/repos/{full}/labels/{}", l.id),
    })
}

fn issue_labels(r: &RepoRec, issue: &IssueRec) -> Vec<LabelRec> {
    let mut labels: Vec<LabelRec> = r.labels.iter().filter(|l| issue.labels.contains(&l.id)).cloned().collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    labels
}

fn render_issue(s: &State, app: &str, r: &RepoRec, i: &IssueRec) -> Value {
    let (owner, full) = repo_full_name(s, r);
    let labels: Vec<Value> = issue_labels(r, i).iter().map(|l| render_label(app, &full, l)).collect();
    let assignees: Vec<Value> = i.assignees.iter().map(|a| user_json(s, app, *a)).collect();
    let kind = if i.pull.is_some() { "pulls" } else { "issues" };
    let html_url = format!("{app}{full}/{kind}/{}", i.index);
    json!({
        "id": i.id,
        "url": format!("{app}api/v1/repos/{full}/issues/{}", i.index),
        "html_url": html_url,
        "number": i.index,
        "user": user_json(s, app, i.poster),
        "original_author": "",
        "original_author_id": 0,
        "title": i.title,
        "body": i.body,
        "ref": "",
        "assets": [],
        "labels": labels,
        "milestone": null,
        "assignee": assignees.first().cloned().unwrap_or(Value::Null),
        "assignees": if assignees.is_empty() { Value::Null } else { Value::Array(assignees) },
        "state": if i.closed_at.is_some() { "closed" } else { "open" },
        "is_locked": false,
        "comments": i.comments.len(),
        "created_at": rfc3339(i.created),
        "updated_at": rfc3339(i.updated),
        "closed_at": i.closed_at.map(rfc3339),
        "due_date": null,
        "time_estimate": 0,
        "pull_request": i.pull.as_ref().map(|_| json!({
            "merged": false,
            "merged_at": null,
            "draft": false,
            "html_url": html_url,
        })),
        "repository": { "id": r.id, "name": r.name, "owner": owner, "full_name": full },
        "pin_order": 0,
        "content_version": i.content_version,
    })
}

fn render_comment(s: &State, app: &str, full: &str, i: &IssueRec, c: &CommentRec) -> Value {
    let kind = if i.pull.is_some() { "pulls" } else { "issues" };
    json!({
        "id": c.id,
        "html_url": format!("{app}{full}/{kind}/{}#issuecomment-{}", i.index, c.id),
        "pull_request_url": if i.pull.is_some() { format!("{app}{full}/pulls/{}", i.index) } else { String::new() },
        "issue_url": if i.pull.is_some() { String::new() } else { format!("{app}{full}/issues/{}", i.index) },
        "user": user_json(s, app, c.user),
        "original_author": "",
        "original_author_id": 0,
        "body": c.body,
        "assets": [],
        "created_at": rfc3339(c.created),
        "updated_at": rfc3339(c.updated),
    })
}

fn render_repo(s: &State, app: &str, r: &RepoRec) -> Value {
    let (_, full) = repo_full_name(s, r);
    let open_issues = r.issues.iter().filter(|i| i.pull.is_none() && i.closed_at.is_none()).count();
    let open_prs = r.issues.iter().filter(|i| i.pull.is_some() && i.closed_at.is_none()).count();
    let host = app.trim_start_matches("http://").trim_end_matches('/');
    let mut v = json!({
        "id": r.id,
        "owner": user_json(s, app, r.owner),
        "name": r.name,
        "full_name": full,
        "description": "",
        "empty": false,
        "private": false,
        "fork": false,
        "template": false,
        "parent": null,
        "mirror": false,
        "size": 0,
        "language": "",
        "languages_url": format!("{app}api/v1/repos/{full}/languages"),
        "html_url": format!("{app}{full}"),
        "url": format!("{app}api/v1/repos/{full}"),
        "link": "",
        "ssh_url": format!("git@{host}:{full}.git"),
        "clone_url": format!("{app}{full}.git"),
        "original_url": "",
        "website": "",
        "stars_count": 0,
        "forks_count": 0,
        "watchers_count": 0,
        "open_issues_count": open_issues,
        "open_pr_counter": open_prs,
        "release_counter": 0,
        "default_branch": "main",
        "archived": false,
        "created_at": rfc3339(r.created),
        "updated_at": rfc3339(r.created),
        "archived_at": rfc3339(0),
    });
    // Two halves: one `json!` this large exceeds the macro recursion limit.
    let more = json!({
        "permissions": { "admin": false, "push": true, "pull": true },
        "has_code": true,
        "has_issues": true,
        "internal_tracker": {
            "enable_time_tracker": true,
            "allow_only_contributors_to_track_time": true,
            "enable_issue_dependencies": true
        },
        "has_wiki": false,
        "has_pull_requests": true,
        "has_projects": false,
        "projects_mode": "all",
        "has_releases": false,
        "has_packages": false,
        "has_actions": false,
        "ignore_whitespace_conflicts": false,
        "allow_merge_commits": true,
        "allow_rebase": true,
        "allow_rebase_explicit": true,
        "allow_squash_merge": true,
        "allow_fast_forward_only_merge": true,
        "allow_rebase_update": true,
        "allow_manual_merge": false,
        "autodetect_manual_merge": false,
        "default_delete_branch_after_merge": false,
        "default_merge_style": "merge",
        "default_allow_maintainer_edit": false,
        "default_target_branch": "",
        "avatar_url": "",
        "internal": false,
        "mirror_interval": "",
        "object_format_name": "sha1",
        "mirror_updated": rfc3339(0),
        "repo_transfer": null,
        "topics": [],
        "licenses": [],
        "branch_count": r.branches.len(),
    });
    if let (Value::Object(m), Value::Object(more)) = (&mut v, more) {
        m.extend(more);
    }
    v
}

fn render_pull(s: &State, app: &str, r: &RepoRec, i: &IssueRec, p: &PullRec) -> Value {
    let (_, full) = repo_full_name(s, r);
    let labels: Vec<Value> = issue_labels(r, i).iter().map(|l| render_label(app, &full, l)).collect();
    let assignees: Vec<Value> = i.assignees.iter().map(|a| user_json(s, app, *a)).collect();
    let html_url = format!("{app}{full}/pulls/{}", i.index);
    let repo = render_repo(s, app, r);
    let branch = |name: &str, sha: &str| json!({ "label": name, "ref": name, "sha": sha, "repo_id": r.id, "repo": repo.clone() });
    json!({
        "id": i.id,
        "url": html_url,
        "number": i.index,
        "user": user_json(s, app, i.poster),
        "title": i.title,
        "body": i.body,
        "labels": labels,
        "milestone": null,
        "assignee": assignees.first().cloned().unwrap_or(Value::Null),
        "assignees": if assignees.is_empty() { Value::Null } else { Value::Array(assignees) },
        "requested_reviewers": [],
        "requested_reviewers_teams": [],
        "state": if i.closed_at.is_some() { "closed" } else { "open" },
        "draft": false,
        "is_locked": false,
        "comments": i.comments.len(),
        "review_comments": 0,
        "additions": 0,
        "deletions": 0,
        "changed_files": 0,
        "html_url": html_url,
        "diff_url": format!("{html_url}.diff"),
        "patch_url": format!("{html_url}.patch"),
        "mergeable": true,
        "merged": false,
        "merged_at": null,
        "merge_commit_sha": null,
        "merged_by": null,
        "allow_maintainer_edit": false,
        "base": branch(&p.base, &p.base_sha),
        "head": branch(&p.head, &p.head_sha),
        "merge_base": p.base_sha,
        "due_date": null,
        "created_at": rfc3339(i.created),
        "updated_at": rfc3339(i.updated),
        "closed_at": i.closed_at.map(rfc3339),
        "pin_order": 0,
        "content_version": i.content_version,
    })
}

fn render_hook(h: &HookRec) -> Value {
    json!({
        "id": h.id,
        "type": h.kind,
        "name": h.name,
        "branch_filter": h.branch_filter,
        "config": h.config,
        "events": h.events,
        "authorization_header": h.authorization_header,
        "active": h.active,
        "updated_at": rfc3339(h.updated),
        "created_at": rfc3339(h.created),
    })
}

// ---------------------------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------------------------

struct Call<'a> {
    app: &'a str,
    req: &'a HttpRequest,
    user: Option<i64>,
}

impl Call<'_> {
    fn q(&self, k: &str) -> Option<&str> {
        self.req.query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str())
    }

    fn q_all(&self, k: &str) -> Vec<&str> {
        self.req.query.iter().filter(|(q, _)| q == k).map(|(_, v)| v.as_str()).collect()
    }

    /// Gitea's `ctx.FormInt`: 0 when absent or not a number.
    fn q_int(&self, k: &str) -> i64 {
        self.q(k).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    /// The JSON body as an object (`{}` when empty), or Gitea's 422 for malformed JSON.
    fn body(&self) -> Result<Map<String, Value>, HttpResponse> {
        if self.req.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(&self.req.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(error(self.app, 422, "[]: json: cannot unmarshal into an object")),
            Err(e) => Err(error(self.app, 422, format!("[]: {e}"))),
        }
    }
}

type Reply = Result<HttpResponse, HttpResponse>;

fn str_field(app: &str, m: &Map<String, Value>, k: &str) -> Result<Option<String>, HttpResponse> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(error(app, 422, format!("[{k}]: json: cannot unmarshal into Go value of type string"))),
    }
}

fn strings_field(app: &str, m: &Map<String, Value>, k: &str) -> Result<Option<Vec<String>>, HttpResponse> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| error(app, 422, format!("[{k}]: json: cannot unmarshal into Go value of type []string"))),
        Some(_) => Err(error(app, 422, format!("[{k}]: json: cannot unmarshal into Go value of type []string"))),
    }
}

fn ids_field(app: &str, m: &Map<String, Value>, k: &str) -> Result<Vec<i64>, HttpResponse> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(Value::as_i64)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| error(app, 422, format!("[{k}]: json: cannot unmarshal into Go value of type []int64"))),
        Some(_) => Err(error(app, 422, format!("[{k}]: json: cannot unmarshal into Go value of type []int64"))),
    }
}

fn handle(s: &mut State, app: &str, req: &HttpRequest, auth: Option<&str>) -> HttpResponse {
    let Some(rest) = req.path.strip_prefix("/api/v1/") else { return not_found(app) };
    let segs: Vec<String> =
        rest.split('/').map(|x| percent_encoding::percent_decode_str(x).decode_utf8_lossy().into_owned()).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let method = req.method.as_str();

    // Authentication, as Gitea's API middleware does it.
    let user = match auth {
        None => None,
        Some(a) => {
            let token = a
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim());
            match token.and_then(|t| s.tokens.get(t)) {
                Some(id) => Some(*id),
                None => return error(app, 401, "invalid username, password or token"),
            }
        }
    };
    if user.is_none() && !(method == "GET" && segs == ["version"]) {
        return error(app, 401, "token is required");
    }
    let c = Call { app, req, user };
    let result = match (method, segs.as_slice()) {
        ("GET", ["version"]) => Ok(json_response(200, &json!({ "version": VERSION }))),
        ("GET", ["user"]) => Ok(json_response(200, &user_json(s, app, user.unwrap_or(0)))),
        (_, ["repos", owner, repo, tail @ ..]) => match s.repo_index(owner, repo) {
            None => Err(not_found(app)),
            Some(r) => repo_route(s, &c, r, method, tail),
        },
        _ => Err(not_found(app)),
    };
    result.unwrap_or_else(|e| e)
}

fn repo_route(s: &mut State, c: &Call<'_>, r: usize, method: &str, tail: &[&str]) -> Reply {
    match (method, tail) {
        ("GET", ["issues"]) => list_issues(s, c, r),
        ("POST", ["issues"]) => create_issue(s, c, r),
        ("GET", ["issues", index]) => {
            let i = issue_at(s, c, r, index)?;
            Ok(json_response(200, &render_issue(s, c.app, &s.repos[r], &s.repos[r].issues[i])))
        }
        ("PATCH", ["issues", index]) => edit_issue(s, c, r, index),
        ("GET", ["issues", index, "labels"]) => {
            let i = issue_at(s, c, r, index)?;
            Ok(json_response(200, &labels_json(s, c.app, r, i)))
        }
        ("POST", ["issues", index, "labels"]) => set_labels(s, c, r, index, false),
        ("PUT", ["issues", index, "labels"]) => set_labels(s, c, r, index, true),
        ("DELETE", ["issues", index, "labels", id]) => remove_label(s, c, r, index, id),
        ("GET", ["issues", index, "comments"]) => list_comments(s, c, r, index),
        ("POST", ["issues", index, "comments"]) => create_comment(s, c, r, index),
        ("GET", ["labels"]) => list_labels(s, c, r),
        ("POST", ["labels"]) => create_label(s, c, r),
        ("GET", ["pulls"]) => list_pulls(s, c, r),
        ("POST", ["pulls"]) => create_pull(s, c, r),
        ("GET", ["pulls", index]) => {
            let i = issue_at(s, c, r, index)?;
            let issue = &s.repos[r].issues[i];
            let pull = issue.pull.as_ref().ok_or_else(|| not_found(c.app))?;
            Ok(json_response(200, &render_pull(s, c.app, &s.repos[r], issue, pull)))
        }
        ("GET", ["hooks"]) => list_hooks(s, c, r),
        ("POST", ["hooks"]) => create_hook(s, c, r),
        (
            _,
            ["issues"]
            | ["issues", _]
            | ["issues", _, "labels"]
            | ["issues", _, "labels", _]
            | ["issues", _, "comments"],
        )
        | (_, ["labels"] | ["pulls"] | ["pulls", _] | ["hooks"]) => Err(empty(405)),
        _ => Err(not_found(c.app)),
    }
}

fn can_write(s: &State, c: &Call<'_>, r: usize) -> Result<(), HttpResponse> {
    let repo = &s.repos[r];
    let user = c.user.unwrap_or(0);
    if repo.owner == user || repo.writers.contains(&user) || s.user(user).is_some_and(|u| u.is_admin) {
        Ok(())
    } else {
        Err(error(c.app, 403, "user should have a permission to write to the repository"))
    }
}

fn issue_at(s: &State, c: &Call<'_>, r: usize, index: &str) -> Result<usize, HttpResponse> {
    let index: u64 = index.parse().unwrap_or(0);
    s.repos[r].issues.iter().position(|i| i.index == index).ok_or_else(|| not_found(c.app))
}

fn labels_json(s: &State, app: &str, r: usize, i: usize) -> Value {
    let repo = &s.repos[r];
    let (_, full) = repo_full_name(s, repo);
    Value::Array(issue_labels(repo, &repo.issues[i]).iter().map(|l| render_label(app, &full, l)).collect())
}

/// Gitea's paging: `(page, limit)` with page from 1 and limit defaulted and capped.
fn paging(c: &Call<'_>) -> (usize, usize) {
    let limit = match c.q_int("limit") {
        l if l <= 0 => DEFAULT_LIMIT,
        l => usize::try_from(l).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
    };
    let page = usize::try_from(c.q_int("page")).unwrap_or(0).max(1);
    (page, limit)
}

fn page_of<T: Clone>(items: &[T], page: usize, limit: usize) -> Vec<T> {
    items.iter().skip((page - 1).saturating_mul(limit)).take(limit).cloned().collect()
}

/// Gitea's `genAPILinks` and `SetTotalCountHeader` for a list of `total` items.
fn list_headers(c: &Call<'_>, total: usize, limit: usize, with_link: bool) -> Vec<(String, String)> {
    let mut headers = vec![("x-total-count".to_owned(), total.to_string())];
    let mut expose = vec!["X-Total-Count"];
    if with_link {
        let total_pages = if total == 0 { 1 } else { total.div_ceil(limit) };
        let current = usize::try_from(c.q_int("page")).unwrap_or(0).max(1).min(total_pages);
        let has_next = total > current * limit;
        let is_last = total == 0 || (total > (current - 1) * limit && !has_next);
        let mut links = Vec::new();
        let mut link = |page: usize, rel: &str| {
            let mut grouped: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (k, v) in &c.req.query {
                grouped.entry(k.as_str()).or_default().push(v.as_str());
            }
            let page_text = page.to_string();
            grouped.insert("page", vec![page_text.as_str()]);
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, vs) in &grouped {
                for v in vs {
                    ser.append_pair(k, v);
                }
            }
            links.push(format!("<{}{}?{}>; rel=\"{rel}\"", c.app, c.req.path.trim_start_matches('/'), ser.finish()));
        };
        if has_next {
            link(current + 1, "next");
        }
        if !is_last {
            link(total_pages, "last");
        }
        if current != 1 {
            link(1, "first");
        }
        if current > 1 {
            link(current - 1, "prev");
        }
        if !links.is_empty() {
            headers.push(("link".to_owned(), links.join(",")));
            expose.push("Link");
        }
    }
    headers.push(("access-control-expose-headers".to_owned(), expose.join(", ")));
    headers
}

fn list_response(c: &Call<'_>, all: Vec<Value>, with_link: bool) -> HttpResponse {
    let (page, limit) = paging(c);
    let mut resp = json_response(200, &Value::Array(page_of(&all, page, limit)));
    resp.headers.extend(list_headers(c, all.len(), limit, with_link));
    resp
}

fn time_param(c: &Call<'_>, k: &str) -> Result<Option<i64>, HttpResponse> {
    match c.q(k).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse_rfc3339(v).map(Some).ok_or_else(|| {
            error(c.app, 422, format!("parsing time \"{v}\" as \"2006-01-02T15:04:05Z07:00\": cannot parse"))
        }),
    }
}

fn user_filter(s: &State, c: &Call<'_>, k: &str) -> Result<Option<i64>, HttpResponse> {
    match c.q(k).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(login) => s.user_by_login(login).map(|u| Some(u.id)).ok_or_else(|| not_found(c.app)),
    }
}

fn list_issues(s: &State, c: &Call<'_>, r: usize) -> Reply {
    let repo = &s.repos[r];
    let state = c.q("state").unwrap_or("open");
    let kind = match c.q("type") {
        Some("issues") => Some(false),
        Some("pulls") => Some(true),
        _ => None,
    };
    let label_ids: Vec<i64> = c
        .q("labels")
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .flat_map(|n| repo.labels.iter().filter(move |x| x.name == n).map(|x| x.id))
                .collect()
        })
        .unwrap_or_default();
    let since = time_param(c, "since")?;
    let before = time_param(c, "before")?;
    let created_by = user_filter(s, c, "created_by")?;
    let assigned_by = user_filter(s, c, "assigned_by")?;
    let keyword = c.q("q").filter(|q| !q.is_empty()).map(str::to_lowercase);
    let mut hits: Vec<&IssueRec> = repo
        .issues
        .iter()
        .filter(|i| match state {
            "closed" => i.closed_at.is_some(),
            "all" => true,
            _ => i.closed_at.is_none(),
        })
        .filter(|i| kind.is_none_or(|pulls| i.pull.is_some() == pulls))
        .filter(|i| label_ids.is_empty() || i.labels.iter().any(|l| label_ids.contains(l)))
        .filter(|i| since.is_none_or(|t| i.updated >= t))
        .filter(|i| before.is_none_or(|t| i.updated <= t))
        .filter(|i| created_by.is_none_or(|u| i.poster == u))
        .filter(|i| assigned_by.is_none_or(|u| i.assignees.contains(&u)))
        .filter(|i| {
            keyword.as_ref().is_none_or(|k| i.title.to_lowercase().contains(k) || i.body.to_lowercase().contains(k))
        })
        .collect();
    hits.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    let all: Vec<Value> = hits.iter().map(|i| render_issue(s, c.app, repo, i)).collect();
    Ok(list_response(c, all, true))
}

fn resolve_assignees(s: &State, app: &str, logins: &[String]) -> Result<Vec<i64>, String> {
    let mut ids = Vec::new();
    for login in logins {
        let id = s.user_by_login(login).map(|u| u.id).ok_or_else(|| format!("user does not exist [name: {login}]"))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let _ = app;
    Ok(ids)
}

fn create_issue(s: &mut State, c: &Call<'_>, r: usize) -> Reply {
    let m = c.body()?;
    can_write(s, c, r)?;
    let title = str_field(c.app, &m, "title")?.unwrap_or_default();
    if title.trim().is_empty() {
        return Err(error(c.app, 422, "[Title]: Required"));
    }
    let body = str_field(c.app, &m, "body")?.unwrap_or_default();
    let labels = ids_field(c.app, &m, "labels")?;
    let mut logins = strings_field(c.app, &m, "assignees")?.unwrap_or_default();
    if let Some(a) = str_field(c.app, &m, "assignee")?.filter(|a| !a.is_empty()) {
        logins.insert(0, a);
    }
    let assignees = resolve_assignees(s, c.app, &logins).map_err(|e| error(c.app, 422, e))?;
    let closed = m.get("closed").and_then(Value::as_bool).unwrap_or(false);
    let poster = c.user.unwrap_or(0);
    let i = s.new_issue(r, poster, &title, &body, None);
    let repo_labels: Vec<i64> = s.repos[r].labels.iter().map(|l| l.id).collect();
    let issue = &mut s.repos[r].issues[i];
    issue.labels = labels.into_iter().filter(|l| repo_labels.contains(l)).collect();
    issue.assignees = assignees;
    if closed {
        issue.closed_at = Some(issue.created);
    }
    Ok(json_response(201, &render_issue(s, c.app, &s.repos[r], &s.repos[r].issues[i])))
}

fn edit_issue(s: &mut State, c: &Call<'_>, r: usize, index: &str) -> Reply {
    let i = issue_at(s, c, r, index)?;
    let m = c.body()?;
    can_write(s, c, r)?;
    if let Some(v) = m.get("content_version").and_then(Value::as_i64)
        && v != s.repos[r].issues[i].content_version
    {
        return Err(error(c.app, 409, "The issue was modified by someone else (content_version mismatch)"));
    }
    let title = str_field(c.app, &m, "title")?;
    let body = str_field(c.app, &m, "body")?;
    let state = str_field(c.app, &m, "state")?;
    let assignees = match strings_field(c.app, &m, "assignees")? {
        Some(logins) => Some(resolve_assignees(s, c.app, &logins).map_err(|_| error(c.app, 500, ""))?),
        None => None,
    };
    let now = s.tick();
    let issue = &mut s.repos[r].issues[i];
    if let Some(t) = title.filter(|t| !t.is_empty()) {
        issue.title = t;
    }
    if let Some(b) = body {
        issue.body = b;
        issue.content_version += 1;
    }
    if let Some(a) = assignees {
        issue.assignees = a;
    }
    match state.as_deref() {
        Some("closed") if issue.closed_at.is_none() => issue.closed_at = Some(now),
        Some("open") => issue.closed_at = None,
        _ => {}
    }
    issue.updated = now;
    Ok(json_response(201, &render_issue(s, c.app, &s.repos[r], &s.repos[r].issues[i])))
}

fn set_labels(s: &mut State, c: &Call<'_>, r: usize, index: &str, replace: bool) -> Reply {
    let i = issue_at(s, c, r, index)?;
    let m = c.body()?;
    let refs = match m.get("labels") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(error(c.app, 422, "[labels]: json: cannot unmarshal into Go value of type []interface {}"));
        }
    };
    let mut ids = Vec::new();
    let mut names = Vec::new();
    for x in &refs {
        match x {
            Value::Number(n) => ids.push(n.as_f64().unwrap_or(0.0) as i64),
            Value::String(n) => names.push(n.clone()),
            _ => return Err(error(c.app, 400, "a label must be an integer or a string")),
        }
    }
    if !ids.is_empty() && !names.is_empty() {
        return Err(error(c.app, 400, "labels should be an array of strings or integers"));
    }
    let repo = &s.repos[r];
    let mut wanted: Vec<i64> = repo.labels.iter().filter(|l| names.contains(&l.name)).map(|l| l.id).collect();
    wanted.extend(ids.into_iter().filter(|id| repo.labels.iter().any(|l| l.id == *id)));
    can_write(s, c, r)?;
    let now = s.tick();
    let issue = &mut s.repos[r].issues[i];
    if replace {
        issue.labels.clear();
    }
    for id in wanted {
        if !issue.labels.contains(&id) {
            issue.labels.push(id);
        }
    }
    issue.updated = now;
    Ok(json_response(200, &labels_json(s, c.app, r, i)))
}

fn remove_label(s: &mut State, c: &Call<'_>, r: usize, index: &str, id: &str) -> Reply {
    let i = issue_at(s, c, r, index)?;
    can_write(s, c, r)?;
    let id: i64 = id.parse().unwrap_or(0);
    if !s.repos[r].labels.iter().any(|l| l.id == id) {
        return Err(error(c.app, 422, format!("label does not exist [label_id: {id}]")));
    }
    let now = s.tick();
    let issue = &mut s.repos[r].issues[i];
    if issue.labels.contains(&id) {
        issue.labels.retain(|l| *l != id);
        issue.updated = now;
    }
    Ok(empty(204))
}

fn list_comments(s: &State, c: &Call<'_>, r: usize, index: &str) -> Reply {
    let i = issue_at(s, c, r, index)?;
    let since = time_param(c, "since")?;
    let before = time_param(c, "before")?;
    let repo = &s.repos[r];
    let (_, full) = repo_full_name(s, repo);
    let issue = &repo.issues[i];
    let all: Vec<Value> = issue
        .comments
        .iter()
        .filter(|x| since.is_none_or(|t| x.updated >= t) && before.is_none_or(|t| x.updated <= t))
        .map(|x| render_comment(s, c.app, &full, issue, x))
        .collect();
    let mut resp = json_response(200, &Value::Array(all.clone()));
    resp.headers.push(("x-total-count".into(), all.len().to_string()));
    resp.headers.push(("access-control-expose-headers".into(), "X-Total-Count".into()));
    Ok(resp)
}

fn create_comment(s: &mut State, c: &Call<'_>, r: usize, index: &str) -> Reply {
    let i = issue_at(s, c, r, index)?;
    let m = c.body()?;
    let body = str_field(c.app, &m, "body")?.unwrap_or_default();
    if body.is_empty() {
        return Err(error(c.app, 422, "[Body]: Required"));
    }
    can_write(s, c, r)?;
    let now = s.tick();
    let id = next(&mut s.ids.comment);
    let comment = CommentRec { id, user: c.user.unwrap_or(0), body, created: now, updated: now };
    let issue = &mut s.repos[r].issues[i];
    issue.comments.push(comment.clone());
    issue.updated = now;
    let repo = &s.repos[r];
    let (_, full) = repo_full_name(s, repo);
    Ok(json_response(201, &render_comment(s, c.app, &full, &repo.issues[i], &comment)))
}

fn list_labels(s: &State, c: &Call<'_>, r: usize) -> Reply {
    let repo = &s.repos[r];
    let (_, full) = repo_full_name(s, repo);
    let mut labels = repo.labels.clone();
    labels.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let all: Vec<Value> = labels.iter().map(|l| render_label(c.app, &full, l)).collect();
    Ok(list_response(c, all, false))
}

/// Gitea's `label.NormalizeColor`: `#rgb` or `#rrggbb` (the `#` optional), lower-cased.
fn normalize_color(color: &str) -> Option<String> {
    let hex = color.trim().trim_start_matches('#');
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        6 => Some(hex.to_lowercase()),
        3 => Some(hex.chars().flat_map(|ch| [ch, ch]).collect::<String>().to_lowercase()),
        _ => None,
    }
}

fn create_label(s: &mut State, c: &Call<'_>, r: usize) -> Reply {
    let m = c.body()?;
    let name = str_field(c.app, &m, "name")?.unwrap_or_default();
    let color = str_field(c.app, &m, "color")?.unwrap_or_default();
    if name.trim().is_empty() {
        return Err(error(c.app, 422, "[Name]: Required"));
    }
    if color.is_empty() {
        return Err(error(c.app, 422, "[Color]: Required"));
    }
    let color = normalize_color(&color).ok_or_else(|| error(c.app, 422, format!("bad color code: {color}")))?;
    can_write(s, c, r)?;
    let id = next(&mut s.ids.label);
    let label = LabelRec {
        id,
        name,
        color,
        description: str_field(c.app, &m, "description")?.unwrap_or_default(),
        exclusive: m.get("exclusive").and_then(Value::as_bool).unwrap_or(false),
        is_archived: m.get("is_archived").and_then(Value::as_bool).unwrap_or(false),
    };
    s.repos[r].labels.push(label.clone());
    let (_, full) = repo_full_name(s, &s.repos[r]);
    Ok(json_response(201, &render_label(c.app, &full, &label)))
}

fn list_pulls(s: &State, c: &Call<'_>, r: usize) -> Reply {
    let repo = &s.repos[r];
    let state = c.q("state").unwrap_or("open");
    let base = c.q("base_branch").filter(|b| !b.is_empty());
    let poster = c.q("poster").filter(|p| !p.is_empty()).map(|p| s.user_by_login(p).map_or(-1, |u| u.id));
    let labels: Vec<i64> = c.q_all("labels").iter().filter_map(|l| l.parse().ok()).collect();
    let mut hits: Vec<(&IssueRec, &PullRec)> = repo
        .issues
        .iter()
        .filter_map(|i| i.pull.as_ref().map(|p| (i, p)))
        .filter(|(i, _)| match state {
            "closed" => i.closed_at.is_some(),
            "all" => true,
            _ => i.closed_at.is_none(),
        })
        .filter(|(_, p)| base.is_none_or(|b| p.base == b))
        .filter(|(i, _)| poster.is_none_or(|u| i.poster == u))
        .filter(|(i, _)| labels.is_empty() || labels.iter().all(|l| i.labels.contains(l)))
        .collect();
    match c.q("sort").unwrap_or("") {
        "oldest" => hits.sort_by(|a, b| a.0.created.cmp(&b.0.created).then(a.0.id.cmp(&b.0.id))),
        "recentupdate" => hits.sort_by(|a, b| b.0.updated.cmp(&a.0.updated).then(b.0.id.cmp(&a.0.id))),
        "leastupdate" => hits.sort_by(|a, b| a.0.updated.cmp(&b.0.updated).then(a.0.id.cmp(&b.0.id))),
        "mostcomment" => hits.sort_by(|a, b| b.0.comments.len().cmp(&a.0.comments.len()).then(b.0.id.cmp(&a.0.id))),
        "leastcomment" => hits.sort_by(|a, b| a.0.comments.len().cmp(&b.0.comments.len()).then(a.0.id.cmp(&b.0.id))),
        "recentclose" => hits.sort_by(|a, b| b.0.closed_at.cmp(&a.0.closed_at).then(b.0.id.cmp(&a.0.id))),
        _ => hits.sort_by(|a, b| b.0.created.cmp(&a.0.created).then(b.0.id.cmp(&a.0.id))),
    }
    let all: Vec<Value> = hits.iter().map(|(i, p)| render_pull(s, c.app, repo, i, p)).collect();
    Ok(list_response(c, all, true))
}

fn create_pull(s: &mut State, c: &Call<'_>, r: usize) -> Reply {
    let m = c.body()?;
    let head = str_field(c.app, &m, "head")?.unwrap_or_default();
    let base = str_field(c.app, &m, "base")?.unwrap_or_default();
    let title = str_field(c.app, &m, "title")?.unwrap_or_default();
    let body = str_field(c.app, &m, "body")?.unwrap_or_default();
    let labels = ids_field(c.app, &m, "labels")?;
    let logins = strings_field(c.app, &m, "assignees")?.unwrap_or_default();
    if head == base {
        return Err(error(c.app, 422, "Invalid PullRequest: There are no changes between the head and the base"));
    }
    // `owner:branch` names a fork; only same-repository heads exist here.
    let (_, full) = repo_full_name(s, &s.repos[r]);
    let owner = full.split('/').next().unwrap_or("").to_owned();
    let head_branch = match head.split_once(':') {
        Some((o, b)) if o.eq_ignore_ascii_case(&owner) => b.to_owned(),
        Some(_) => return Err(not_found(c.app)),
        None => head.clone(),
    };
    let repo = &s.repos[r];
    let (Some(base_sha), Some(head_sha)) =
        (repo.branches.get(&base).cloned(), repo.branches.get(&head_branch).cloned())
    else {
        return Err(not_found(c.app));
    };
    if let Some(existing) = repo
        .issues
        .iter()
        .find(|i| i.closed_at.is_none() && i.pull.as_ref().is_some_and(|p| p.head == head_branch && p.base == base))
    {
        return Err(error(
            c.app,
            409,
            format!(
                "pull request already exists for these targets [id: {}, issue_id: {}, head_repo_id: {}, base_repo_id: {}, head_branch: {head_branch}, base_branch: {base}]",
                existing.id, existing.id, repo.id, repo.id
            ),
        ));
    }
    let assignees = resolve_assignees(s, c.app, &logins).map_err(|e| error(c.app, 422, e))?;
    can_write(s, c, r)?;
    let pull = PullRec { head: head_branch, base, head_sha, base_sha };
    let i = s.new_issue(r, c.user.unwrap_or(0), &title, &body, Some(pull));
    let repo_labels: Vec<i64> = s.repos[r].labels.iter().map(|l| l.id).collect();
    let issue = &mut s.repos[r].issues[i];
    issue.labels = labels.into_iter().filter(|l| repo_labels.contains(l)).collect();
    issue.assignees = assignees;
    let repo = &s.repos[r];
    let issue = &repo.issues[i];
    let pull = issue.pull.as_ref().ok_or_else(|| error(c.app, 500, ""))?;
    Ok(json_response(201, &render_pull(s, c.app, repo, issue, pull)))
}

fn list_hooks(s: &State, c: &Call<'_>, r: usize) -> Reply {
    let all: Vec<Value> = s.repos[r].hooks.iter().map(render_hook).collect();
    Ok(list_response(c, all, false))
}

const HOOK_TYPES: &[&str] =
    &["dingtalk", "discord", "gitea", "gogs", "msteams", "slack", "telegram", "feishu", "wechatwork", "packagist"];

fn create_hook(s: &mut State, c: &Call<'_>, r: usize) -> Reply {
    let m = c.body()?;
    let kind = str_field(c.app, &m, "type")?.unwrap_or_default();
    if !HOOK_TYPES.contains(&kind.as_str()) {
        return Err(error(c.app, 422, "Invalid hook type"));
    }
    let config: BTreeMap<String, String> = match m.get("config") {
        Some(Value::Object(o)) => o.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect(),
        _ => return Err(error(c.app, 422, "[Config]: Required")),
    };
    if config.get("url").is_none_or(String::is_empty) {
        return Err(error(c.app, 422, "Missing config option: url"));
    }
    if !matches!(config.get("content_type").map(String::as_str), Some("json" | "form")) {
        return Err(error(c.app, 422, "Invalid content type"));
    }
    can_write(s, c, r)?;
    let now = s.tick();
    let id = next(&mut s.ids.hook);
    let mut shown = BTreeMap::new();
    for k in ["url", "content_type", "http_method"] {
        if let Some(v) = config.get(k) {
            shown.insert(k.to_owned(), v.clone());
        }
    }
    let hook = HookRec {
        id,
        kind,
        name: str_field(c.app, &m, "name")?.unwrap_or_default(),
        config: shown,
        events: strings_field(c.app, &m, "events")?.unwrap_or_else(|| vec!["push".into()]),
        active: m.get("active").and_then(Value::as_bool).unwrap_or(false),
        branch_filter: str_field(c.app, &m, "branch_filter")?.unwrap_or_default(),
        authorization_header: String::new(),
        created: now,
        updated: now,
    };
    s.repos[r].hooks.push(hook.clone());
    Ok(json_response(201, &render_hook(&hook)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves RFC 3339 formatting and parsing agree, offsets apply and fractions are dropped.
    #[test]
    fn time_round_trips() {
        assert_eq!(rfc3339(EPOCH), "2026-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00Z"), Some(EPOCH));
        assert_eq!(parse_rfc3339("2026-01-01T01:00:00.999+01:00"), Some(EPOCH));
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56Z").map(rfc3339).as_deref(), Some("2024-02-29T12:34:56Z"));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert!(parse_rfc3339("2026-01-01").is_none());
    }

    /// Proves Gitea's colour normalisation.
    #[test]
    fn colors_normalise() {
        assert_eq!(normalize_color("#00AABB").as_deref(), Some("00aabb"));
        assert_eq!(normalize_color("abc").as_deref(), Some("aabbcc"));
        assert!(normalize_color("#12345").is_none());
        assert!(normalize_color("red").is_none());
    }
}
