//! The Gitea client and tools against the spec-checked Gitea test server.
//!
//! Every test that talks to the server ends with [`assert_conformant`]: each request it
//! received must match an operation of `openapi-v1.26.3-subset.json` (method, path,
//! parameters, body schema) and each response it sent must validate against that operation.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use uni_wizard::gitea::{
    CreateIssueOption, CreateLabelOption, CreatePullRequestOption, EditIssueOption, GiteaClient, GiteaConfig,
    IssueKind, IssueQuery, LabelRef, PullQuery, StateFilter,
};
use uni_wizard::{Config, ErrorCode, Harness, House, Mode, Request};
use uni_wizard_tests::gitea_server::{BOT, GiteaServer, OWNER, REPO};
use uni_wizard_tests::openapi::{Exchange, HttpResponse, Spec, Strictness};

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| Spec::load().expect("the spec subset loads"))
}

/// Checks every exchange the server saw; returns the operation ids exercised.
fn assert_conformant(server: &GiteaServer) -> BTreeSet<String> {
    let exchanges = server.exchanges();
    assert!(!exchanges.is_empty(), "the server saw no request");
    let mut ops = BTreeSet::new();
    let mut problems = Vec::new();
    for ex in &exchanges {
        match spec().check_exchange(ex) {
            Ok(op) => {
                ops.insert(op.id.clone());
            }
            Err(errs) => problems.push(format!(
                "{} {}{} -> {}:\n    {}",
                ex.request.method,
                ex.request.path,
                ex.request.raw_query.as_deref().map(|q| format!("?{q}")).unwrap_or_default(),
                ex.response.status,
                errs.join("\n    ")
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} exchanges break the spec:\n{}",
        problems.len(),
        exchanges.len(),
        problems.join("\n")
    );
    ops
}

fn config(server: &GiteaServer, token: &str) -> GiteaConfig {
    GiteaConfig { owner: Some(OWNER.to_owned()), repo: Some(REPO.to_owned()), ..GiteaConfig::new(server.url(), token) }
}

fn client(server: &GiteaServer) -> GiteaClient {
    GiteaClient::new(&config(server, server.token())).expect("client")
}

fn harness_with(gitea: Option<GiteaConfig>) -> Harness {
    Harness::builder()
        .house(House::Timmy)
        .mode(Mode::Simple)
        .config(Config { gitea, ..Config::default() })
        .build()
        .expect("harness")
}

fn harness(server: &GiteaServer) -> Harness {
    harness_with(Some(config(server, server.token())))
}

/// Runs a tool and checks its output against the tool's own output schema.
async fn run(h: &Harness, tool: &str, args: Value) -> Value {
    let outcome = h.execute(tool, args).await.unwrap_or_else(|e| panic!("{tool} failed: {e} {}", e.details));
    let contract = h.registry().get(tool).expect("tool registered").contract();
    contract.validate_output(&outcome.output).unwrap_or_else(|v| panic!("{tool} output breaks its schema: {v:?}"));
    outcome.output
}

async fn run_dry(h: &Harness, tool: &str, args: Value) -> Value {
    let outcome = h
        .execute_request(Request { dry_run: true, ..Request::new(tool, args) })
        .await
        .unwrap_or_else(|e| panic!("{tool} dry run failed: {e} {}", e.details));
    assert!(outcome.dry_run);
    outcome.output
}

async fn fails(h: &Harness, tool: &str, args: Value) -> uni_wizard::Error {
    match h.execute(tool, args).await {
        Ok(o) => panic!("{tool} succeeded unexpectedly: {}", o.output),
        Err(e) => e,
    }
}

/// Seeds `n` issues (numbers returned oldest first) with a pull request after every 25th.
fn seed_issues(server: &GiteaServer, n: usize) -> (Vec<u64>, Vec<u64>) {
    let mut issues = Vec::new();
    let mut pulls = Vec::new();
    for k in 1..=n {
        issues.push(server.add_issue(OWNER, REPO, &format!("issue {k}"), &format!("body of issue {k}"), &[]));
        if k % 25 == 0 {
            pulls.push(server.add_pull(OWNER, REPO, &format!("pull after {k}"), &format!("topic/{k}"), "main"));
        }
    }
    (issues, pulls)
}

fn requests_with_method<'a>(exchanges: &'a [Exchange], method: &str) -> Vec<&'a Exchange> {
    exchanges.iter().filter(|e| e.request.method == method).collect()
}

// ---------------------------------------------------------------------------------------------
// The client, method by method
// ---------------------------------------------------------------------------------------------

/// Proves `version` and `current_user` read the server's answers and send the token header.
#[tokio::test]
async fn client_reads_version_and_current_user() {
    let server = GiteaServer::start().await;
    let c = client(&server);
    assert_eq!(c.version().await.expect("version").version, "1.26.3");
    let me = c.current_user().await.expect("user");
    assert_eq!(me.login, BOT);
    let ex = server.exchanges();
    assert!(ex.iter().all(|e| e.request.header("authorization") == Some("token [redacted]")));
    assert_conformant(&server);
}

/// Proves listing walks all pages (50+50+20) via `Link`, sends `type=issues` (no PRs), newest first, with the total.
#[tokio::test]
async fn client_lists_issues_across_pages_without_pulls() {
    let server = GiteaServer::start().await;
    let (issues, pulls) = seed_issues(&server, 120);
    let c = client(&server);
    let page = c.list_issues(OWNER, REPO, &IssueQuery::default()).await.expect("list");
    assert_eq!(page.items.len(), 120);
    assert_eq!(page.pages, 3);
    assert_eq!(page.total, Some(120));
    assert!(!page.truncated);
    let mut want = issues.clone();
    want.reverse();
    assert_eq!(page.items.iter().map(|i| i.number).collect::<Vec<_>>(), want, "newest created first");
    assert!(page.items.iter().all(|i| !i.is_pull()));
    for ex in server.exchanges() {
        assert!(ex.request.query.contains(&("type".into(), "issues".into())));
        assert!(ex.request.query.contains(&("limit".into(), "50".into())));
    }
    // Without the type filter Gitea mixes pull requests in.
    let mixed = c.list_issues(OWNER, REPO, &IssueQuery { kind: None, ..IssueQuery::default() }).await.expect("list");
    assert_eq!(mixed.items.len(), 120 + pulls.len());
    let only_pulls = c
        .list_issues(OWNER, REPO, &IssueQuery { kind: Some(IssueKind::Pulls), ..IssueQuery::default() })
        .await
        .expect("list");
    assert_eq!(only_pulls.items.iter().map(|i| i.number).collect::<BTreeSet<_>>(), pulls.iter().copied().collect());
    assert_conformant(&server);
}

/// Proves page sizes above 50 are never asked for, and `max_items` stops early and says so.
#[tokio::test]
async fn client_caps_page_size_and_bounds_items() {
    let server = GiteaServer::start().await;
    seed_issues(&server, 130);
    let c = client(&server);
    let q = IssueQuery { page_size: 500, max_items: 70, ..IssueQuery::default() };
    let page = c.list_issues(OWNER, REPO, &q).await.expect("list");
    assert_eq!(page.items.len(), 70);
    assert_eq!(page.pages, 2);
    assert!(page.truncated);
    let small = c
        .list_issues(OWNER, REPO, &IssueQuery { page_size: 7, max_items: 20, ..IssueQuery::default() })
        .await
        .expect("list");
    assert_eq!((small.items.len(), small.pages), (20, 3));
    // The configured max_pages bounds every walk.
    let bounded = GiteaClient::new(&GiteaConfig { max_pages: 2, ..config(&server, server.token()) }).expect("client");
    let page = bounded.list_issues(OWNER, REPO, &IssueQuery::default()).await.expect("list");
    assert_eq!((page.items.len(), page.pages, page.truncated), (100, 2, true));
    assert_conformant(&server);
}

/// Proves `since` filters on updated time, inclusive, at whole-second resolution, and `state` selects closed issues.
#[tokio::test]
async fn client_filters_by_since_and_state() {
    let server = GiteaServer::start().await;
    let first = server.add_issue(OWNER, REPO, "old", "", &[]);
    server.advance(100);
    let cutoff = server.now(); // the next change happens one second after this
    server.advance(-1);
    let second = server.add_issue(OWNER, REPO, "at the cutoff", "", &[]);
    let third = server.add_issue(OWNER, REPO, "newer", "", &[]);
    server.close_issue(OWNER, REPO, third);
    let c = client(&server);
    let at = cutoff.replace('Z', ".999Z"); // a fraction is dropped: 1 s resolution
    let q = IssueQuery { since: Some(at), state: StateFilter::All, ..IssueQuery::default() };
    let got: Vec<u64> = c.list_issues(OWNER, REPO, &q).await.expect("list").items.iter().map(|i| i.number).collect();
    assert_eq!(got, vec![third, second], "inclusive of the cutoff second, not before it");
    let closed = c
        .list_issues(OWNER, REPO, &IssueQuery { state: StateFilter::Closed, ..IssueQuery::default() })
        .await
        .expect("list");
    assert_eq!(closed.items.iter().map(|i| i.number).collect::<Vec<_>>(), vec![third]);
    let open = c.list_issues(OWNER, REPO, &IssueQuery::default()).await.expect("list");
    assert_eq!(open.items.iter().map(|i| i.number).collect::<Vec<_>>(), vec![second, first]);
    assert_conformant(&server);
}

/// Proves the label filter keeps issues with any of the names.
#[tokio::test]
async fn client_filters_by_labels() {
    let server = GiteaServer::start().await;
    server.add_label(OWNER, REPO, "kind/bug", "ee0701");
    server.add_label(OWNER, REPO, "kind/docs", "0000ff");
    let bug = server.add_issue(OWNER, REPO, "bug", "", &["kind/bug"]);
    let docs = server.add_issue(OWNER, REPO, "docs", "", &["kind/docs"]);
    server.add_issue(OWNER, REPO, "plain", "", &[]);
    let c = client(&server);
    let q = IssueQuery { labels: vec!["kind/bug".into(), "kind/docs".into()], ..IssueQuery::default() };
    let got: Vec<u64> = c.list_issues(OWNER, REPO, &q).await.expect("list").items.iter().map(|i| i.number).collect();
    assert_eq!(got, vec![docs, bug]);
    assert_conformant(&server);
}

/// Proves create/get/edit: PATCH's 201 is accepted, `assignees` replaces the set, `state` closes, null reads as none.
#[tokio::test]
async fn client_creates_gets_and_edits_issues() {
    let server = GiteaServer::start().await;
    let c = client(&server);
    let created = c
        .create_issue(
            OWNER,
            REPO,
            &CreateIssueOption { title: "T".into(), body: Some("B".into()), ..Default::default() },
        )
        .await
        .expect("create");
    assert_eq!((created.title.as_str(), created.body.as_str(), created.state.as_str()), ("T", "B", "open"));
    assert!(created.assignees.is_empty());
    let n = created.number;
    let edit = EditIssueOption { assignees: Some(vec!["alice".into(), "bob".into()]), ..Default::default() };
    let edited = c.edit_issue(OWNER, REPO, n, &edit).await.expect("edit");
    assert_eq!(edited.assignee_logins(), vec!["alice", "bob"]);
    let edit =
        EditIssueOption { assignees: Some(vec!["bob".into()]), state: Some("closed".into()), ..Default::default() };
    let edited = c.edit_issue(OWNER, REPO, n, &edit).await.expect("edit");
    assert_eq!(edited.assignee_logins(), vec!["bob"], "replaced, not merged");
    assert_eq!(edited.state, "closed");
    assert!(edited.closed_at.is_some());
    let got = c.get_issue(OWNER, REPO, n).await.expect("get");
    assert_eq!(got, edited);
    let patches = server.exchanges();
    let patches = requests_with_method(&patches, "PATCH");
    assert_eq!(patches.len(), 2);
    assert!(patches.iter().all(|e| e.response.status == 201), "Gitea answers PATCH with 201");
    // A title is required: Gitea's 422 maps to E3003 with its message.
    let e = c.create_issue(OWNER, REPO, &CreateIssueOption::default()).await.expect_err("no title");
    assert_eq!(e.code, ErrorCode::ToolFailed);
    assert_eq!(e.details["status"], 422);
    assert_eq!(e.details["gitea_message"], "[Title]: Required");
    assert_conformant(&server);
}

/// Proves labels: create (422 bad colour), list, add by name/id (full set back), replace, remove 204, 422 unknown id.
#[tokio::test]
async fn client_manages_labels() {
    let server = GiteaServer::start().await;
    let c = client(&server);
    let bug = c
        .create_label(
            OWNER,
            REPO,
            &CreateLabelOption { name: "kind/bug".into(), color: "#EE0701".into(), ..Default::default() },
        )
        .await
        .expect("label");
    assert_eq!(bug.color, "ee0701");
    let high = c
        .create_label(
            OWNER,
            REPO,
            &CreateLabelOption { name: "prio/high".into(), color: "#f00".into(), ..Default::default() },
        )
        .await
        .expect("label");
    let e = c
        .create_label(OWNER, REPO, &CreateLabelOption { name: "x".into(), color: "red".into(), ..Default::default() })
        .await
        .expect_err("bad colour");
    assert_eq!((e.code, e.details["status"].as_u64()), (ErrorCode::ToolFailed, Some(422)));
    let all = c.list_labels(OWNER, REPO).await.expect("labels");
    assert_eq!(all.items.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), vec!["kind/bug", "prio/high"]);
    assert_eq!(all.total, Some(2));

    let n = server.add_issue(OWNER, REPO, "labelled", "", &[]);
    let set = c.add_labels(OWNER, REPO, n, &[LabelRef::Name("kind/bug".into())]).await.expect("add by name");
    assert_eq!(set.iter().map(|l| l.id).collect::<Vec<_>>(), vec![bug.id]);
    let set = c.add_labels(OWNER, REPO, n, &[LabelRef::Id(high.id)]).await.expect("add by id");
    assert_eq!(set.iter().map(|l| l.id).collect::<Vec<_>>(), vec![bug.id, high.id], "the full set comes back");
    assert_eq!(c.issue_labels(OWNER, REPO, n).await.expect("labels").len(), 2);
    let set = c.replace_labels(OWNER, REPO, n, &[LabelRef::Id(high.id)]).await.expect("replace");
    assert_eq!(set.iter().map(|l| l.id).collect::<Vec<_>>(), vec![high.id]);
    c.remove_label(OWNER, REPO, n, high.id).await.expect("remove");
    assert!(c.issue_labels(OWNER, REPO, n).await.expect("labels").is_empty());
    let e = c.remove_label(OWNER, REPO, n, 9_999).await.expect_err("unknown label id");
    assert_eq!(e.code, ErrorCode::ToolFailed);
    assert_eq!(e.details["status"], 422);
    assert_eq!(e.details["gitea_message"], "label does not exist [label_id: 9999]");
    assert!(e.message.contains("label does not exist [label_id: 9999]"), "{}", e.message);
    assert_conformant(&server);
}

/// Proves labels, paged with `X-Total-Count` only (no `Link`), are still read in full.
#[tokio::test]
async fn client_pages_labels_by_total_count() {
    let server = GiteaServer::start().await;
    for k in 0..73 {
        server.add_label(OWNER, REPO, &format!("label-{k:03}"), "aabbcc");
    }
    let all = client(&server).list_labels(OWNER, REPO).await.expect("labels");
    assert_eq!((all.items.len(), all.pages, all.total), (73, 2, Some(73)));
    assert!(server.exchanges().iter().all(|e| e.response.header("link").is_none()));
    assert_conformant(&server);
}

/// Proves comments and pulls: create/list comments, create/get/list pulls, and their 409/404/422 failures.
#[tokio::test]
async fn client_comments_and_pulls() {
    let server = GiteaServer::start().await;
    let c = client(&server);
    let n = server.add_issue(OWNER, REPO, "talk", "", &[]);
    let made = c.create_comment(OWNER, REPO, n, "first").await.expect("comment");
    assert_eq!(made.user.login, BOT);
    c.create_comment(OWNER, REPO, n, "second").await.expect("comment");
    let all = c.list_comments(OWNER, REPO, n).await.expect("comments");
    assert_eq!(all.iter().map(|x| x.body.as_str()).collect::<Vec<_>>(), vec!["first", "second"]);
    assert_eq!(c.get_issue(OWNER, REPO, n).await.expect("issue").comments, 2);

    let opt = CreatePullRequestOption {
        head: "feature/triage".into(),
        base: "main".into(),
        title: "Triage".into(),
        body: Some("adds triage".into()),
    };
    let pr = c.create_pull(OWNER, REPO, &opt).await.expect("pull");
    assert_eq!(pr.number, n + 1, "pull requests share the issue index");
    assert_eq!(
        (pr.head.branch.as_str(), pr.base.branch.as_str(), pr.state.as_str()),
        ("feature/triage", "main", "open")
    );
    assert_eq!(c.get_pull(OWNER, REPO, pr.number).await.expect("get").title, "Triage");
    let open = c.list_pulls(OWNER, REPO, &PullQuery::default()).await.expect("pulls");
    assert_eq!(open.items.iter().map(|p| p.number).collect::<Vec<_>>(), vec![pr.number]);
    let into_develop = c
        .list_pulls(OWNER, REPO, &PullQuery { base_branch: Some("develop".into()), ..PullQuery::default() })
        .await
        .expect("pulls");
    assert!(into_develop.items.is_empty());

    let e = c.create_pull(OWNER, REPO, &opt).await.expect_err("duplicate");
    assert_eq!((e.code, e.details["status"].as_u64()), (ErrorCode::ToolFailed, Some(409)));
    let e = c
        .create_pull(OWNER, REPO, &CreatePullRequestOption { head: "no-such-branch".into(), ..opt.clone() })
        .await
        .expect_err("missing branch");
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = c
        .create_pull(OWNER, REPO, &CreatePullRequestOption { head: "main".into(), ..opt.clone() })
        .await
        .expect_err("same branch");
    assert_eq!((e.code, e.details["status"].as_u64()), (ErrorCode::ToolFailed, Some(422)));
    let e = c.get_pull(OWNER, REPO, n).await.expect_err("an issue is not a pull");
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_conformant(&server);
}

/// Proves error mapping: wrong token E4001 (401), read-only writing E4001 (403), missing issue or repository E3006.
#[tokio::test]
async fn client_maps_gitea_errors() {
    let server = GiteaServer::start().await;
    let n = server.add_issue(OWNER, REPO, "x", "", &[]);
    let wrong = GiteaClient::new(&config(&server, "not-the-token")).expect("client");
    let e = wrong.current_user().await.expect_err("wrong token");
    assert_eq!(e.code, ErrorCode::ConfigInvalid);
    assert_eq!(e.details["field"], "gitea.token");
    assert_eq!(e.details["status"], 401);
    assert!(!format!("{e:?}").contains("not-the-token"), "the token never appears in errors");

    let reader = GiteaClient::new(&config(&server, server.reader_token())).expect("client");
    assert_eq!(reader.get_issue(OWNER, REPO, n).await.expect("may read").number, n);
    let e = reader
        .edit_issue(OWNER, REPO, n, &EditIssueOption { state: Some("closed".into()), ..Default::default() })
        .await;
    let e = e.expect_err("may not write");
    assert_eq!((e.code, e.details["status"].as_u64()), (ErrorCode::ConfigInvalid, Some(403)));

    let c = client(&server);
    let e = c.get_issue(OWNER, REPO, 999).await.expect_err("missing issue");
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(e.details["status"], 404);
    let e = c.list_issues(OWNER, "nope", &IssueQuery::default()).await.expect_err("missing repo");
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_conformant(&server);
}

/// Proves transport failures map to codes: nothing listening is E3004, a server that never answers is E3001.
#[tokio::test]
async fn client_maps_transport_failures() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let c = GiteaClient::new(&GiteaConfig::new(format!("http://{closed}"), "t")).expect("client");
    let e = c.version().await.expect_err("refused");
    assert_eq!(e.code, ErrorCode::ToolFailedTransient);

    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let c = GiteaClient::new(&GiteaConfig { timeout_ms: 200, ..GiteaConfig::new(format!("http://{addr}"), "t") })
        .expect("client");
    let e = c.version().await.expect_err("no answer");
    assert_eq!(e.code, ErrorCode::Timeout);
    hold.abort();
}

// ---------------------------------------------------------------------------------------------
// The tools, through the real Harness
// ---------------------------------------------------------------------------------------------

/// Proves `gitea_list_issues` returns all 120 issues over three pages, no pull request, bodies cut to the limit.
#[tokio::test]
async fn tool_list_issues_paginates_and_excludes_pulls() {
    let server = GiteaServer::start().await;
    let (issues, pulls) = seed_issues(&server, 120);
    let h = harness(&server);
    let out = run(&h, "gitea_list_issues", json!({"owner": OWNER, "repo": REPO, "max_body_chars": 4})).await;
    assert_eq!(out["count"], 120);
    assert_eq!(out["total"], 120);
    assert_eq!(out["pages"], 3);
    assert_eq!(out["truncated"], false);
    let numbers: BTreeSet<u64> =
        out["issues"].as_array().expect("issues").iter().filter_map(|i| i["number"].as_u64()).collect();
    assert_eq!(numbers, issues.iter().copied().collect());
    assert!(pulls.iter().all(|p| !numbers.contains(p)), "pull requests are excluded");
    let newest = &out["issues"][0];
    assert_eq!(newest["number"], *issues.last().expect("issues"));
    assert_eq!(newest["body"], "body");
    assert_eq!(newest["body_truncated"], true);
    assert_eq!(newest["user"], "alice");
    // The configured default repository applies when the call names none; max_issues bounds it.
    let out = run(&h, "gitea_list_issues", json!({"max_issues": 60, "limit": 25})).await;
    assert_eq!(
        (out["count"].as_u64(), out["pages"].as_u64(), out["truncated"].as_bool()),
        (Some(60), Some(3), Some(true))
    );
    assert_conformant(&server);
}

/// Proves the tool's label filter, and that an unknown label lists nothing (Gitea would list all) and is named.
#[tokio::test]
async fn tool_list_issues_filters_labels_and_refuses_to_overmatch() {
    let server = GiteaServer::start().await;
    server.add_label(OWNER, REPO, "kind/bug", "ee0701");
    let bug = server.add_issue(OWNER, REPO, "bug", "", &["kind/bug"]);
    server.add_issue(OWNER, REPO, "other", "", &[]);
    let h = harness(&server);
    let out = run(&h, "gitea_list_issues", json!({"labels": ["kind/bug", "nope"]})).await;
    assert_eq!(out["count"], 1);
    assert_eq!(out["issues"][0]["number"], bug);
    assert_eq!(out["issues"][0]["labels"], json!(["kind/bug"]));
    assert_eq!(out["unknown_labels"], json!(["nope"]));
    let out = run(&h, "gitea_list_issues", json!({"labels": ["nope"]})).await;
    assert_eq!(out["count"], 0);
    assert_eq!(out["unknown_labels"], json!(["nope"]));
    assert_conformant(&server);
}

/// Proves `gitea_list_issues` failures: unknown repository E3006, malformed `since` E1003, wrong token E4001.
#[tokio::test]
async fn tool_list_issues_failures() {
    let server = GiteaServer::start().await;
    let h = harness(&server);
    let e = fails(&h, "gitea_list_issues", json!({"owner": OWNER, "repo": "missing"})).await;
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = fails(&h, "gitea_list_issues", json!({"since": "last tuesday"})).await;
    assert_eq!(e.code, ErrorCode::InvalidArguments);
    let wrong = harness_with(Some(config(&server, "wrong-token")));
    let e = fails(&wrong, "gitea_list_issues", json!({})).await;
    assert_eq!(e.code, ErrorCode::ConfigInvalid);
    assert_eq!(e.details["field"], "gitea.token");
    assert_conformant(&server);
}

/// Proves `gitea_update_issue` adds labels by name and id, removes, replaces assignees, closes, comments (PATCH 201).
#[tokio::test]
async fn tool_update_issue_changes_everything_asked() {
    let server = GiteaServer::start().await;
    server.add_label(OWNER, REPO, "kind/bug", "ee0701");
    let high = server.add_label(OWNER, REPO, "prio/high", "ff0000");
    server.add_label(OWNER, REPO, "triage/needed", "cccccc");
    let n = server.add_issue(OWNER, REPO, "crash", "boom", &["triage/needed"]);
    let h = harness(&server);
    // Start from two assignees so the replacement is visible.
    run(&h, "gitea_update_issue", json!({"number": n, "assignees": ["alice", "bob"]})).await;

    let out = run(
        &h,
        "gitea_update_issue",
        json!({
            "number": n,
            "add_labels": ["kind/bug", high],
            "remove_labels": ["triage/needed"],
            "assignees": ["bob"],
            "state": "closed",
            "comment": "Triage: kind/bug, prio/high."
        }),
    )
    .await;
    assert_eq!(out["changed"], true);
    assert_eq!(out["dry_run"], false);
    assert_eq!(out["changes"]["labels_added"], json!(["kind/bug", "prio/high"]));
    assert_eq!(out["changes"]["labels_removed"], json!(["triage/needed"]));
    assert_eq!(out["changes"]["assignees"], json!({"from": ["alice", "bob"], "to": ["bob"]}));
    assert_eq!(out["changes"]["state"], json!({"from": "open", "to": "closed"}));
    assert_eq!(out["issue"]["labels"], json!(["kind/bug", "prio/high"]));
    assert_eq!(out["issue"]["assignees"], json!(["bob"]));
    assert_eq!(out["issue"]["state"], "closed");
    assert!(out["comment_id"].as_i64().is_some());

    let issue = server.issue(OWNER, REPO, n).expect("issue");
    let labels: Vec<&str> =
        issue["labels"].as_array().expect("labels").iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(labels, vec!["kind/bug", "prio/high"]);
    assert_eq!(issue["assignees"].as_array().map(Vec::len), Some(1));
    assert_eq!(issue["state"], "closed");
    assert_eq!(server.comments(OWNER, REPO, n), vec!["Triage: kind/bug, prio/high."]);
    let ex = server.exchanges();
    assert!(requests_with_method(&ex, "PATCH").iter().all(|e| e.response.status == 201));

    // Asking for what is already so changes nothing.
    let again =
        run(&h, "gitea_update_issue", json!({"number": n, "add_labels": ["kind/bug"], "assignees": ["bob"]})).await;
    assert_eq!(again["changed"], false);
    assert_conformant(&server);
}

/// Proves a dry run reads but changes nothing on the server, and reports what would change.
#[tokio::test]
async fn tool_update_issue_dry_run_changes_nothing() {
    let server = GiteaServer::start().await;
    server.add_label(OWNER, REPO, "kind/bug", "ee0701");
    let n = server.add_issue(OWNER, REPO, "crash", "", &[]);
    let h = harness(&server);
    let before = server.snapshot();
    let out = run_dry(
        &h,
        "gitea_update_issue",
        json!({"number": n, "add_labels": ["kind/bug"], "assignees": ["alice"], "state": "closed", "comment": "hi"}),
    )
    .await;
    assert_eq!(out["dry_run"], true);
    assert_eq!(out["changed"], true);
    assert_eq!(out["changes"]["labels_added"], json!(["kind/bug"]));
    assert_eq!(out["changes"]["comment"], true);
    assert_eq!(out["issue"]["labels"], json!(["kind/bug"]));
    assert_eq!(out["issue"]["state"], "closed");
    assert_eq!(out["comment_id"], Value::Null);
    assert_eq!(server.snapshot(), before, "nothing changed on the server");
    let ex = server.exchanges();
    assert!(ex.iter().all(|e| e.request.method == "GET"), "a dry run only reads");
    assert_conformant(&server);
}

/// Proves `gitea_update_issue` failures: missing issue E3006, unknown label E3003 before any change, E1003, E4001.
#[tokio::test]
async fn tool_update_issue_failures() {
    let server = GiteaServer::start().await;
    server.add_label(OWNER, REPO, "kind/bug", "ee0701");
    let n = server.add_issue(OWNER, REPO, "crash", "", &[]);
    let h = harness(&server);
    let e = fails(&h, "gitea_update_issue", json!({"number": 4242, "state": "closed"})).await;
    assert_eq!(e.code, ErrorCode::NotFound);

    let before = server.snapshot();
    let e = fails(
        &h,
        "gitea_update_issue",
        json!({"number": n, "add_labels": ["kind/bug", "no-such-label"], "comment": "x"}),
    )
    .await;
    assert_eq!(e.code, ErrorCode::ToolFailed);
    assert!(e.message.contains("label does not exist [name: no-such-label]"), "{}", e.message);
    let e = fails(&h, "gitea_update_issue", json!({"number": n, "remove_labels": [9999]})).await;
    assert_eq!(e.code, ErrorCode::ToolFailed);
    assert!(e.message.contains("label does not exist [label_id: 9999]"), "{}", e.message);
    assert_eq!(server.snapshot(), before, "refused before any change");

    let e = fails(
        &h,
        "gitea_update_issue",
        json!({"number": n, "add_labels": ["kind/bug"], "remove_labels": ["kind/bug"]}),
    )
    .await;
    assert_eq!(e.code, ErrorCode::InvalidArguments);
    let reader = harness_with(Some(config(&server, server.reader_token())));
    let e = fails(&reader, "gitea_update_issue", json!({"number": n, "state": "closed"})).await;
    assert_eq!(e.code, ErrorCode::ConfigInvalid);
    assert_eq!(e.details["step"], "edit_issue");
    assert_conformant(&server);
}

/// Proves `create_missing_labels` creates the added names the repository lacks (a dry run only reports them), and a repeat creates nothing.
#[tokio::test]
async fn tool_update_issue_creates_missing_labels_when_asked() {
    let server = GiteaServer::start().await;
    server.add_label(OWNER, REPO, "kind/bug", "ee0701");
    let n = server.add_issue(OWNER, REPO, "crash", "", &[]);
    let h = harness(&server);
    let args = json!({
        "number": n,
        "add_labels": ["kind/bug", "house/ezra", "house/ezra"],
        "create_missing_labels": {"color": "#C5DEF5", "description": "made by triage"}
    });
    let before = server.snapshot();
    let dry = run_dry(&h, "gitea_update_issue", args.clone()).await;
    assert_eq!(dry["changes"]["labels_created"], json!(["house/ezra"]));
    assert_eq!(dry["changes"]["labels_added"], json!(["kind/bug", "house/ezra"]));
    assert_eq!(dry["issue"]["labels"], json!(["kind/bug", "house/ezra"]));
    assert_eq!(server.snapshot(), before, "a dry run creates no label");

    let out = run(&h, "gitea_update_issue", args.clone()).await;
    assert_eq!(out["changes"]["labels_created"], json!(["house/ezra"]));
    let mut on_issue = server.labels(OWNER, REPO, n);
    on_issue.sort();
    assert_eq!(on_issue, vec!["house/ezra", "kind/bug"]);
    let repo_labels = client(&server).list_labels(OWNER, REPO).await.expect("labels").items;
    let made: Vec<&uni_wizard::gitea::Label> = repo_labels.iter().filter(|l| l.name == "house/ezra").collect();
    assert_eq!(made.len(), 1, "{repo_labels:?}");
    assert_eq!((made[0].color.as_str(), made[0].description.as_str()), ("c5def5", "made by triage"));

    let again = run(&h, "gitea_update_issue", args).await;
    assert_eq!((again["changed"].clone(), again["changes"]["labels_created"].clone()), (json!(false), json!([])));
    let created = server
        .exchanges()
        .iter()
        .filter(|e| e.request.method == "POST" && e.request.path.ends_with(&format!("/repos/{OWNER}/{REPO}/labels")))
        .count();
    assert_eq!(created, 1, "the label was created once");
    assert_conformant(&server);
}

/// Proves a harness uses the Gitea client it is handed (no `gitea` config at all), and that an update's provenance record targets the issue.
#[tokio::test]
async fn harness_takes_a_gitea_client_and_update_targets_the_issue() {
    let server = GiteaServer::start().await;
    let n = server.add_issue(OWNER, REPO, "crash", "", &[]);
    let gitea: Arc<dyn uni_wizard::gitea::Gitea> = Arc::new(client(&server));
    let h = Harness::builder().house(House::Timmy).mode(Mode::Simple).gitea(gitea).build().expect("harness");
    let listed = run(&h, "gitea_list_issues", json!({})).await;
    assert_eq!(listed["count"], 1);
    let outcome = h
        .execute("gitea_update_issue", json!({"owner": OWNER, "repo": REPO, "number": n, "comment": "hi"}))
        .await
        .expect("update");
    let record = h.provenance().get(&outcome.provenance_id).expect("recorded");
    assert_eq!(record.target, format!("{OWNER}/{REPO}#{n}"));
    assert_eq!(server.comments(OWNER, REPO, n), vec!["hi"]);
    assert!(harness_with(None).execute("gitea_list_issues", json!({})).await.is_err(), "without a client: E4001");
    assert_conformant(&server);
}

/// Proves `gitea_create_pr` opens a pull request, and its dry run creates nothing but finds the one that now exists.
#[tokio::test]
async fn tool_create_pr_and_dry_run() {
    let server = GiteaServer::start().await;
    let h = harness(&server);
    let args = json!({"head": "feature/docs", "base": "main", "title": "Docs", "body": "More docs."});
    let before = server.snapshot();
    let dry = run_dry(&h, "gitea_create_pr", args.clone()).await;
    assert_eq!(
        (dry["dry_run"].as_bool(), dry["number"].as_u64(), dry["conflicting_pr"].as_u64()),
        (Some(true), None, None)
    );
    assert_eq!(server.snapshot(), before, "a dry run creates nothing");

    let out = run(&h, "gitea_create_pr", args.clone()).await;
    let number = out["number"].as_u64().expect("number");
    assert_eq!(out["state"], "open");
    assert!(out["html_url"].as_str().is_some_and(|u| u.ends_with(&format!("/uni/fleet/pulls/{number}"))));
    let pr = server.issue(OWNER, REPO, number).expect("created");
    assert_eq!(pr["title"], "Docs");
    assert!(!pr["pull_request"].is_null());

    let dry = run_dry(&h, "gitea_create_pr", args.clone()).await;
    assert_eq!(dry["conflicting_pr"], number);
    assert_conformant(&server);
}

/// Proves `gitea_create_pr` failures: duplicate E3003 (409), missing branch E3006, head = base E1003, dry-run E3006.
#[tokio::test]
async fn tool_create_pr_failures() {
    let server = GiteaServer::start().await;
    server.add_pull(OWNER, REPO, "existing", "feature/triage", "main");
    let h = harness(&server);
    let e = fails(&h, "gitea_create_pr", json!({"head": "feature/triage", "base": "main", "title": "again"})).await;
    assert_eq!(e.code, ErrorCode::ToolFailed);
    assert_eq!(e.details["status"], 409);
    assert!(e.message.contains("pull request already exists"), "{}", e.message);
    let e = fails(&h, "gitea_create_pr", json!({"head": "ghost", "base": "main", "title": "t"})).await;
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = fails(&h, "gitea_create_pr", json!({"head": "main", "base": "main", "title": "t"})).await;
    assert_eq!(e.code, ErrorCode::InvalidArguments);
    let e = h
        .execute_request(Request {
            dry_run: true,
            ..Request::new("gitea_create_pr", json!({"repo": "missing", "head": "a", "base": "main", "title": "t"}))
        })
        .await
        .expect_err("unknown repository");
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_conformant(&server);
}

/// Proves every Gitea tool refuses with E4001 "gitea is not configured" when no Gitea is.
#[tokio::test]
async fn tools_without_gitea_config_are_config_invalid() {
    let h = harness_with(None);
    for (tool, args) in [
        ("gitea_list_issues", json!({"owner": "o", "repo": "r"})),
        ("gitea_update_issue", json!({"owner": "o", "repo": "r", "number": 1, "state": "closed"})),
        ("gitea_create_pr", json!({"owner": "o", "repo": "r", "head": "a", "base": "b", "title": "t"})),
    ] {
        let e = fails(&h, tool, args).await;
        assert_eq!(e.code, ErrorCode::ConfigInvalid, "{tool}");
        assert_eq!(e.message, "gitea is not configured", "{tool}");
    }
    // A bad gitea config is refused when the harness is built, naming the field.
    let e = Harness::builder()
        .config(Config { gitea: Some(GiteaConfig::new("ftp://x", "t")), ..Config::default() })
        .build()
        .expect_err("bad base_url");
    assert_eq!(e.details["field"], "gitea.base_url");
}

// ---------------------------------------------------------------------------------------------
// The server's own behaviour, seen on the wire
// ---------------------------------------------------------------------------------------------

async fn raw_get(server: &GiteaServer, path_and_query: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("{}/api/v1{path_and_query}", server.url()));
    if let Some(t) = token {
        req = req.header("authorization", format!("token {t}"));
    }
    req.send().await.expect("request")
}

/// Proves the server caps `limit` at 50 silently, counts pages from 1, and sends Gitea's `X-Total-Count` and `Link`.
#[tokio::test]
async fn server_pages_like_gitea() {
    let server = GiteaServer::start().await;
    seed_issues(&server, 120);
    let token = server.token().to_owned();
    let resp = raw_get(&server, "/repos/uni/fleet/issues?type=issues&limit=100", Some(&token)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-total-count"], "120");
    let link = resp.headers()["link"].to_str().expect("ascii").to_owned();
    let base = format!("{}/api/v1/repos/uni/fleet/issues", server.url());
    assert_eq!(
        link,
        format!(
            "<{base}?limit=100&page=2&type=issues>; rel=\"next\",<{base}?limit=100&page=3&type=issues>; rel=\"last\""
        )
    );
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body.as_array().map(Vec::len), Some(50), "limit capped at 50");

    let resp = raw_get(&server, "/repos/uni/fleet/issues?type=issues&page=0", Some(&token)).await;
    let page0: Value = resp.json().await.expect("json");
    let resp = raw_get(&server, "/repos/uni/fleet/issues?type=issues&page=1", Some(&token)).await;
    let page1: Value = resp.json().await.expect("json");
    assert_eq!(page0, page1, "page 0 is page 1");
    assert_eq!(page1.as_array().map(Vec::len), Some(30), "default limit 30");

    let resp = raw_get(&server, "/repos/uni/fleet/issues?type=issues&limit=50&page=3", Some(&token)).await;
    let link = resp.headers()["link"].to_str().expect("ascii").to_owned();
    assert!(
        link.contains("rel=\"first\"") && link.contains("rel=\"prev\"") && !link.contains("rel=\"next\""),
        "{link}"
    );
    let last: Value = resp.json().await.expect("json");
    assert_eq!(last.as_array().map(Vec::len), Some(20));
    assert_conformant(&server);
}

/// Proves the server's auth: no token 401 (`/version` is public), a wrong token 401, with Gitea's error body.
#[tokio::test]
async fn server_requires_a_token() {
    let server = GiteaServer::start().await;
    assert_eq!(raw_get(&server, "/version", None).await.status(), 200);
    let resp = raw_get(&server, "/user", None).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["message"], "token is required");
    assert!(body["url"].as_str().is_some());
    assert_eq!(raw_get(&server, "/user", Some("bogus")).await.status(), 401);
    // Conformance of the responses (the requests without a token are ours, not the client's).
    for ex in server.exchanges() {
        let (op, _) = spec().find(&ex.request.method, &ex.request.path).expect("operation");
        spec().check_response(op, &ex.response).unwrap_or_else(|e| panic!("{e:?}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Conformance
// ---------------------------------------------------------------------------------------------

/// Proves conformance: every client call (successes and failures) matches the spec, covering all of its operations.
#[tokio::test]
async fn conformance_of_every_client_operation() {
    let server = GiteaServer::start().await;
    let c = client(&server);
    seed_issues(&server, 60);
    c.version().await.expect("version");
    c.current_user().await.expect("user");
    c.list_issues(
        OWNER,
        REPO,
        &IssueQuery { labels: vec!["x".into()], since: Some(server.now()), ..IssueQuery::default() },
    )
    .await
    .expect("list");
    c.list_issues(OWNER, REPO, &IssueQuery::default()).await.expect("list");
    let issue = c
        .create_issue(OWNER, REPO, &CreateIssueOption { title: "t".into(), ..Default::default() })
        .await
        .expect("create");
    let n = issue.number;
    c.get_issue(OWNER, REPO, n).await.expect("get");
    c.get_issue(OWNER, REPO, 10_000).await.expect_err("404");
    c.edit_issue(OWNER, REPO, n, &EditIssueOption { assignees: Some(vec!["alice".into()]), ..Default::default() })
        .await
        .expect("edit");
    let label = c
        .create_label(
            OWNER,
            REPO,
            &CreateLabelOption { name: "a".into(), color: "#123456".into(), ..Default::default() },
        )
        .await
        .expect("label");
    c.create_label(OWNER, REPO, &CreateLabelOption { name: "b".into(), color: "nope".into(), ..Default::default() })
        .await
        .expect_err("422");
    c.list_labels(OWNER, REPO).await.expect("labels");
    c.add_labels(OWNER, REPO, n, &[LabelRef::Name("a".into())]).await.expect("add");
    c.replace_labels(OWNER, REPO, n, &[LabelRef::Id(label.id)]).await.expect("replace");
    c.issue_labels(OWNER, REPO, n).await.expect("issue labels");
    c.remove_label(OWNER, REPO, n, label.id).await.expect("remove");
    c.remove_label(OWNER, REPO, n, 777).await.expect_err("422");
    c.create_comment(OWNER, REPO, n, "c").await.expect("comment");
    c.list_comments(OWNER, REPO, n).await.expect("comments");
    let opt = CreatePullRequestOption { head: "develop".into(), base: "main".into(), title: "p".into(), body: None };
    let pr = c.create_pull(OWNER, REPO, &opt).await.expect("pull");
    c.create_pull(OWNER, REPO, &opt).await.expect_err("409");
    c.get_pull(OWNER, REPO, pr.number).await.expect("get pull");
    c.list_pulls(OWNER, REPO, &PullQuery { state: StateFilter::All, ..PullQuery::default() }).await.expect("pulls");
    GiteaClient::new(&config(&server, "wrong")).expect("client").current_user().await.expect_err("401");

    // The webhook operations the triage daemon may use, through raw requests.
    let http = reqwest::Client::new();
    let hooks = format!("{}/api/v1/repos/uni/fleet/hooks", server.url());
    let auth = format!("token {}", server.token());
    let made = http
        .post(&hooks)
        .header("authorization", &auth)
        .json(&json!({
            "type": "gitea",
            "config": {"url": "http://127.0.0.1:9/hook", "content_type": "json"},
            "events": ["issues"],
            "active": true
        }))
        .send()
        .await
        .expect("create hook");
    assert_eq!(made.status(), 201);
    let listed: Value =
        http.get(&hooks).header("authorization", &auth).send().await.expect("list").json().await.expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));

    let covered = assert_conformant(&server);
    let client_ops: BTreeSet<String> = [
        "getVersion",
        "userGetCurrent",
        "issueListIssues",
        "issueCreateIssue",
        "issueGetIssue",
        "issueEditIssue",
        "issueListLabels",
        "issueCreateLabel",
        "issueGetLabels",
        "issueAddLabel",
        "issueReplaceLabels",
        "issueRemoveLabel",
        "issueGetComments",
        "issueCreateComment",
        "repoListPullRequests",
        "repoCreatePullRequest",
        "repoGetPullRequest",
        "repoListHooks",
        "repoCreateHook",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let all_ops: BTreeSet<String> = spec().operations().iter().map(|o| o.id.clone()).collect();
    assert_eq!(client_ops, all_ops, "the list above is the whole spec subset");
    assert_eq!(covered, all_ops, "every operation of the subset was exercised");
    // Failure answers were among them, and validated too.
    let statuses: BTreeSet<u16> = server.exchanges().iter().map(|e| e.response.status).collect();
    for s in [200, 201, 204, 401, 404, 409, 422] {
        assert!(statuses.contains(&s), "no {s} answer was checked");
    }
}

/// Proves the validator is not vacuous: wrong types, undeclared statuses/members, bad error bodies and requests fail.
#[tokio::test]
async fn validator_catches_wrong_responses_and_requests() {
    let server = GiteaServer::start().await;
    let n = server.add_issue(OWNER, REPO, "x", "", &[]);
    let c = client(&server);
    c.get_issue(OWNER, REPO, n).await.expect("get");
    c.remove_label(OWNER, REPO, n, 4242).await.expect_err("422");
    let good = server.exchanges();
    assert_conformant(&server);
    let get = good[0].clone();
    let (op, _) = spec().find(&get.request.method, &get.request.path).expect("operation");
    assert_eq!(op.id, "issueGetIssue");
    let with_body =
        |v: &Value, status: u16| HttpResponse { status, body: v.to_string().into_bytes(), ..get.response.clone() };
    let body = get.response.json().expect("json");
    let refused = |resp: HttpResponse, why: &str| {
        let errs = spec().check_response(op, &resp).expect_err(why);
        assert!(!errs.is_empty(), "{why}");
        errs.join("; ")
    };

    let mut wrong_type = body.clone();
    wrong_type["number"] = json!("7");
    assert!(refused(with_body(&wrong_type, 200), "number as a string").contains("/number: expected integer"));
    let mut wrong_nested = body.clone();
    wrong_nested["user"]["id"] = json!(true);
    assert!(refused(with_body(&wrong_nested, 200), "nested wrong type").contains("/user/id"));
    let mut bad_enum = body.clone();
    bad_enum["state"] = json!("merged");
    assert!(refused(with_body(&bad_enum, 200), "state outside its enum").contains("/state"));
    let mut extra = body.clone();
    extra["labels"] = json!([{"id": 1, "name": "a", "colour": "x"}]);
    assert!(refused(with_body(&extra, 200), "undeclared member").contains("/labels/0/colour: undeclared property"));
    let mut null_required_shape = body.clone();
    null_required_shape["labels"] = json!([null]);
    refused(with_body(&null_required_shape, 200), "null array item");
    assert!(refused(with_body(&body, 418), "undeclared status").contains("status 418 is not declared"));
    assert!(refused(with_body(&json!([body.clone()]), 200), "array for an object").contains("expected object"));
    let not_json = HttpResponse { body: b"<html>".to_vec(), ..get.response.clone() };
    refused(not_json, "not JSON");
    let mut wrong_ct = get.response.clone();
    wrong_ct.headers = vec![("content-type".into(), "text/html".into())];
    refused(wrong_ct, "wrong content type");
    // Error bodies must be Gitea's {message, url}.
    refused(with_body(&json!({"message": "gone"}), 404), "error without url");
    refused(with_body(&json!({"message": "gone", "url": "u", "trace": "..."}), 404), "error with extra member");
    let del = spec().operation("issueRemoveLabel").expect("op");
    let no_content = HttpResponse { status: 204, headers: vec![], body: b"{}".to_vec() };
    assert!(spec().check_response(del, &no_content).is_err(), "204 must be empty");
    assert!(spec().check_response(del, &HttpResponse { status: 204, headers: vec![], body: vec![] }).is_ok());
    // A schema with a required member, checked as a request body.
    assert!(!spec().check_definition("CreateIssueOption", &json!({"body": "no title"})).is_empty());
    assert!(spec().check_definition("CreateIssueOption", &json!({"title": "t"})).is_empty());
    // Open strictness accepts the undeclared member the closed default refuses.
    let open = spec().clone().with_strictness(Strictness::Open);
    assert!(open.check_response(op, &with_body(&extra, 200)).is_ok());

    // Requests.
    let req = get.request.clone();
    let bad = |f: &dyn Fn(&mut uni_wizard_tests::openapi::HttpRequest), why: &str| {
        let mut r = req.clone();
        f(&mut r);
        let errs = spec().check_request(&r).expect_err(why);
        assert!(!errs.is_empty(), "{why}");
    };
    bad(&|r| r.query.push(("foo".into(), "1".into())), "undeclared query parameter");
    bad(&|r| r.path = "/api/v1/repos/uni/fleet/issues/abc".into(), "index not an integer");
    bad(&|r| r.path = "/api/v1/repos/uni/fleet/nothing".into(), "no such path");
    bad(&|r| r.path = "/repos/uni/fleet/issues/1".into(), "outside basePath");
    bad(&|r| r.method = "PUT".into(), "undeclared method");
    bad(&|r| r.headers.retain(|(k, _)| k != "authorization"), "no token");
    bad(&|r| r.body = b"{}".to_vec(), "a body where none is declared");
    let mut list = req.clone();
    list.path = "/api/v1/repos/uni/fleet/issues".into();
    assert!(spec().check_request(&list).is_ok());
    for (k, v) in [("state", "merged"), ("limit", "ten"), ("access_token", "t"), ("page", "1")] {
        let mut r = list.clone();
        r.query = vec![(k.into(), v.into())];
        if k == "page" {
            r.query.push((k.into(), v.into()));
        }
        assert!(spec().check_request(&r).is_err(), "{k}={v}");
    }
    let mut post = list.clone();
    post.method = "POST".into();
    post.headers.push(("content-type".into(), "application/json".into()));
    post.body = br#"{"title": "t", "labels": ["not-an-id"]}"#.to_vec();
    assert!(spec().check_request(&post).is_err(), "label names where ids are declared");
    post.body = br#"{"title": "t", "labels": [1]}"#.to_vec();
    assert!(spec().check_request(&post).is_ok());
    post.body = br#"{"title": "t", "milestone_name": "x"}"#.to_vec();
    assert!(spec().check_request(&post).is_err(), "undeclared body member");
}

/// Proves the validator's strict rules fit real Gitea shapes: the webhook samples validate against the definitions.
#[test]
fn validator_accepts_real_gitea_shapes() {
    let dir = uni_wizard_tests::openapi::spec_path().parent().expect("dir").join("webhook-samples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("samples") {
        let path = entry.expect("entry").path();
        if !path.to_string_lossy().ends_with(".body.json") {
            continue;
        }
        let body: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        for (member, def) in
            [("issue", "Issue"), ("comment", "Comment"), ("repository", "Repository"), ("sender", "User")]
        {
            if let Some(v) = body.get(member) {
                let errs = spec().check_definition(def, v);
                assert!(errs.is_empty(), "{}: {member} as {def}: {errs:?}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 13, "checked {checked} objects");
}

/// Proves the client shared behind an `Arc` serves concurrent callers (the triage daemon's use).
#[tokio::test]
async fn client_is_shareable() {
    let server = GiteaServer::start().await;
    seed_issues(&server, 10);
    let c = Arc::new(client(&server));
    let tasks: Vec<_> = (1..=10u64)
        .map(|n| {
            let c = c.clone();
            tokio::spawn(async move { c.get_issue(OWNER, REPO, n).await.map(|i| i.number) })
        })
        .collect();
    let mut got = BTreeSet::new();
    for t in tasks {
        got.insert(t.await.expect("task").expect("issue"));
    }
    assert_eq!(got, (1..=10).collect());
    assert_conformant(&server);
}
