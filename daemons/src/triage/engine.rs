//! The queue worker: takes issues from `triage.db`, compares what the rules want with what
//! Gitea shows, applies the difference, records it, and submits the issue's task to the router.
//!
//! At most `triage.concurrency` issues are worked on at once, never the same issue twice at
//! once, and never again from a queue read that predates its finishing; the queue rows of one
//! issue are folded, so ten webhooks about it cost one triage.
//! A failure leaves the rows in the queue with a back-off (1 s doubling, at most 5 min) until
//! `max_attempts`; an issue that no longer exists is dropped at once.
//!
//! Applying is one `gitea_update_issue` call through the node's [`Harness`](uni_wizard::Harness)
//! per issue (labels, creating the missing ones; assignees; the comment), as the node's house,
//! with the issue as the call's session (`triage:<owner>/<repo>#<n>`) and target
//! (`<owner>/<repo>#<n>`): the house policy decides whether triage may, the breaker and retry
//! apply, and the call is a record in the node's audit chain whose id is kept with the plan in
//! `triage.db`. A refusal by the policy or the contract is recorded with its code and message
//! and not tried again until the daemon restarts (a changed policy takes effect then); other
//! failures back off as below.
//!
//! Applying is idempotent by construction: labels are added only when missing, assignees only
//! when not all are there, and the comment carries a marker with the plan's fingerprint (the
//! marker check is a read), so a crash between acting and recording repeats nothing visible
//! when the issue is triaged again. A call that posts no comment converges, so it carries an
//! idempotency key and the executor may retry it; one that posts a comment is never repeated
//! by the executor (triage's own back-off re-reads the comments first).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};
use uni_wizard::{Error, ErrorCategory, ErrorCode, House, Request};
use uni_wizard_proto::v1;

use super::rules::{Plan, house_label};
use super::store::{Refused, TaskAnswer, Triaged, Work, now_ms};
use super::{Triage, blocking};
use crate::config::triage::split_repo;
use crate::wire;

/// The tool each routed task runs.
///
/// `gitea_list_issues`, asked for the open issues labelled with the house's own label
/// (`house/<h>`): the house's triage queue, of which the new issue is now part. It is the
/// fitting existing call because it is read-only (so the router may move it to another house
/// on failover, and a resubmission after a router restart, whose task table is in memory, can
/// do no harm), it needs only the Gitea access every house's worker has, and it is exactly
/// what a house does first with newly routed work: read it. The issue itself travels in the
/// call's `session` (`triage:<owner>/<repo>#<n>`), which scopes the worker's provenance
/// records, so the worker's audit names the issue each task served.
pub const TASK_TOOL: &str = "gitea_list_issues";

/// The tool every Gitea write of triage is a call of.
pub const APPLY_TOOL: &str = "gitea_update_issue";

/// How one issue went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The plan was applied (or recorded, when it wanted nothing).
    Triaged,
    /// The plan's fingerprint was already recorded: nothing to do.
    Unchanged,
    /// Not an open issue (a pull request or closed): left alone.
    Skipped,
    /// The harness refused the plan's call (policy or contract): recorded, not retried.
    Refused,
}

/// The marker the bot's comment carries, naming the plan it belongs to.
pub fn comment_marker(fingerprint: &str) -> String {
    format!("<!-- uni-wizard-triage {fingerprint} -->")
}

/// The session (and provenance scope) of every call made for an issue.
pub fn session_of(repo: &str, number: u64) -> String {
    format!("triage:{repo}#{number}")
}

/// The router idempotency key of an issue's task: repository, issue and plan fingerprint.
pub fn task_key(repo: &str, number: u64, fingerprint: &str) -> String {
    let h = Sha256::digest(format!("triage\n{repo}\n{number}\n{fingerprint}").as_bytes());
    format!("triage-{}", hex::encode(&h[..16]))
}

/// The queue worker; returns when `stop` turns true.
pub async fn run(t: Triage, mut stop: watch::Receiver<bool>) {
    requeue_refused(&t).await;
    resubmit_pending(&t).await;
    let settings = t.settings();
    let permits = Arc::new(Semaphore::new(settings.concurrency));
    let inflight: Arc<Mutex<HashSet<(String, u64)>>> = Arc::default();
    // Issues finished since the last look, with the highest row id they covered: the list read
    // below may predate their finishing, and must not start them again.
    let finished: Arc<Mutex<HashMap<(String, u64), i64>>> = Arc::default();
    loop {
        if *stop.borrow() {
            return;
        }
        lock(&finished).clear();
        let store = t.store().clone();
        let now = now_ms();
        let (work, next) = match blocking(move || store.due(now, 64)).await {
            Ok(w) => w,
            Err(e) => {
                error(&t, "store", &e);
                (vec![], Some(now + 1_000))
            }
        };
        metrics::gauge!("uw_triage_queue_issues").set(work.len() as f64);
        for w in work {
            let key = (w.repo.clone(), w.number);
            let mut set = lock(&inflight);
            if set.contains(&key) || lock(&finished).get(&key).is_some_and(|upto| *upto >= w.upto) {
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else { break };
            set.insert(key.clone());
            drop(set);
            let (t, inflight, finished) = (t.clone(), inflight.clone(), finished.clone());
            tokio::spawn(async move {
                let upto = w.upto;
                work_one(&t, w).await;
                drop(permit);
                lock(&finished).insert(key.clone(), upto);
                lock(&inflight).remove(&key);
                t.wake();
            });
        }
        let wait = next.map_or(5_000, |n| (n - now).clamp(5, 5_000));
        tokio::select! {
            () = t.inner.notify.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(5_000))) => {}
            _ = stop.changed() => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn error(t: &Triage, stage: &'static str, e: &Error) {
    t.counters().errors.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("uw_triage_errors_total", "stage" => stage).increment(1);
    tracing::warn!(stage, code = e.code.as_str(), error = %e.message, "triage");
}

async fn work_one(t: &Triage, w: Work) {
    let result = triage_issue(t, &w).await;
    let store = t.store().clone();
    let settings = t.settings();
    let finished = match &result {
        Ok(applied) => {
            let counter = match applied {
                Applied::Triaged => &t.counters().triaged,
                Applied::Unchanged | Applied::Skipped => &t.counters().unchanged,
                Applied::Refused => &t.counters().plans_refused,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let label = match applied {
                Applied::Triaged => "triaged",
                Applied::Unchanged => "unchanged",
                Applied::Skipped => "skipped",
                Applied::Refused => "refused",
            };
            metrics::counter!("uw_triage_issues_total", "result" => label).increment(1);
            let (repo, number, upto) = (w.repo.clone(), w.number, w.upto);
            blocking(move || store.done(&repo, number, upto)).await
        }
        Err(e) if e.code == ErrorCode::NotFound => {
            error(t, "gitea", e);
            let (repo, number, upto) = (w.repo.clone(), w.number, w.upto);
            blocking(move || store.done(&repo, number, upto).and_then(|()| store.forget_refused(&repo, number))).await
        }
        Err(e) => {
            error(t, "gitea", e);
            let backoff = 1_000i64.saturating_mul(1 << w.attempts.min(9)).min(300_000);
            let (w2, msg, max) = (w.clone(), format!("{} {}", e.code, e.message), settings.max_attempts);
            match blocking(move || store.retry_later(&w2, &msg, now_ms() + backoff, max)).await {
                Ok(true) => {
                    tracing::error!(repo = %w.repo, number = w.number, "triage gave up on the issue after max_attempts");
                    Ok(())
                }
                other => other.map(|_| ()),
            }
        }
    };
    if let Err(e) = finished {
        error(t, "store", &e);
    }
}

/// Triages one issue: reads it, plans, applies the difference through the harness, records
/// (with the call's provenance id), routes. A plan the harness refuses by policy or contract
/// is recorded with why, and answers [`Applied::Refused`].
///
/// # Errors
/// Gitea's errors (as the client maps them, reading directly or through the harness), the
/// harness's other failures (an open breaker, a timeout), E4002 from the store.
pub async fn triage_issue(t: &Triage, w: &Work) -> Result<Applied, Error> {
    let (owner, name) = split_repo(&w.repo)
        .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, format!("`{}` is not owner/name", w.repo)))?;
    let gitea = &t.inner.gitea;
    let issue = gitea.get_issue(owner, name, w.number).await?;
    if issue.is_pull() || issue.state != "open" {
        let (store, repo, number) = (t.store().clone(), w.repo.clone(), w.number);
        blocking(move || store.forget_refused(&repo, number)).await?;
        return Ok(Applied::Skipped);
    }
    let plan = t.rules().plan(&issue);
    let fingerprint = plan.fingerprint();
    let store = t.store().clone();
    let (repo, number) = (w.repo.clone(), w.number);
    if blocking(move || store.fingerprint(&repo, number)).await?.as_deref() == Some(fingerprint.as_str()) {
        return Ok(Applied::Unchanged);
    }
    // The same plan refused by policy or contract since this start would be refused again
    // (the harness's policy is fixed until a restart, which queues refusals again): the
    // start-up poll and a webhook for one issue must not both put it to the harness.
    let (store, repo, since) = (t.store().clone(), w.repo.clone(), t.inner.started_ms);
    if let Some((refused_fp, code)) = blocking(move || store.refused_since(&repo, number, since)).await?
        && refused_fp == fingerprint
        && ErrorCode::parse(&code)
            .is_some_and(|c| matches!(c.category(), ErrorCategory::Policy | ErrorCategory::Contract))
    {
        return Ok(Applied::Unchanged);
    }

    let args = apply_args(t, owner, name, &issue, &plan, &fingerprint).await?;
    let provenance = match args {
        None => vec![],
        Some(args) => match apply(t, w, &fingerprint, args).await {
            Ok(id) => vec![id],
            Err(e) => return refused(t, w, &plan, &fingerprint, e).await,
        },
    };
    let latency_ms = (now_ms() - w.received_ms).max(0);
    let source = match w.source.as_str() {
        "poll" => "poll",
        "webhook" => "webhook",
        _ => "retry",
    };
    metrics::histogram!("uw_triage_latency_seconds", "source" => source).record(latency_ms as f64 / 1000.0);

    let key = plan.house.map(|_| task_key(&w.repo, w.number, &fingerprint));
    let plan_json = serde_json::to_value(&plan).unwrap_or_default();
    {
        let store = t.store().clone();
        let (repo, source, fp, key, plan_json, provenance) =
            (w.repo.clone(), w.source.clone(), fingerprint.clone(), key.clone(), plan_json.clone(), provenance.clone());
        let house = plan.house.map(|h| h.as_str());
        blocking(move || {
            store.record_triaged(
                &Triaged {
                    repo: &repo,
                    number,
                    fingerprint: &fp,
                    plan: &plan_json,
                    house,
                    source: &source,
                    latency_ms,
                    task_key: key.as_deref(),
                    provenance: &provenance,
                },
                now_ms(),
            )
        })
        .await?;
    }
    tracing::info!(repo = %w.repo, number, fingerprint = %fingerprint, house = ?plan.house, rules = ?plan.rules, provenance = ?provenance, latency_ms, "triaged");
    if let Some(key) = key {
        let (t, repo) = (t.clone(), w.repo.clone());
        tokio::spawn(async move { route(&t, &repo, number, &key, &plan).await });
    }
    Ok(Applied::Triaged)
}

/// The arguments of the plan's `gitea_update_issue` call: the labels the issue lacks (created
/// when the repository lacks them), the assignees when not all are there (the call replaces
/// the set, so the ones already there are kept), the comment unless its marker is already
/// posted. `None` when Gitea already shows everything the plan wants.
///
/// # Errors
/// Gitea's errors reading the comments.
async fn apply_args(
    t: &Triage,
    owner: &str,
    name: &str,
    issue: &uni_wizard::gitea::Issue,
    plan: &Plan,
    fingerprint: &str,
) -> Result<Option<Value>, Error> {
    let mut args = json!({ "owner": owner, "repo": name, "number": issue.number });
    let have: BTreeSet<String> = issue.label_names().into_iter().collect();
    let missing: Vec<&String> = plan.labels.difference(&have).collect();
    if !missing.is_empty() {
        args["add_labels"] = json!(missing);
        args["create_missing_labels"] = json!({ "color": t.settings().label_color });
    }
    let assigned: BTreeSet<String> = issue.assignee_logins().into_iter().collect();
    if !plan.assignees.iter().all(|a| assigned.iter().any(|b| b.eq_ignore_ascii_case(a))) {
        let all: Vec<&String> = assigned.union(&plan.assignees).collect();
        args["assignees"] = json!(all);
    }
    if let Some(text) = &plan.comment {
        let marker = comment_marker(fingerprint);
        let posted = issue.comments > 0
            && t.inner.gitea.list_comments(owner, name, issue.number).await?.iter().any(|c| c.body.contains(&marker));
        if !posted {
            args["comment"] = json!(format!("{text}\n\n{marker}"));
        }
    }
    let changes = ["add_labels", "assignees", "comment"].iter().any(|k| args.get(k).is_some());
    Ok(changes.then_some(args))
}

/// Runs the plan's call through the harness; returns its provenance id.
///
/// Held meanwhile, when the call may create labels: the set of label names known to exist, so
/// two issues never create the same label at once (Gitea would keep both).
///
/// # Errors
/// Whatever the harness answers: a policy or contract refusal, Gitea's errors, an open breaker.
async fn apply(t: &Triage, w: &Work, fingerprint: &str, args: Value) -> Result<String, Error> {
    let wanted: Vec<String> =
        args["add_labels"].as_array().into_iter().flatten().filter_map(|l| l.as_str().map(str::to_owned)).collect();
    let mut held = Some(t.inner.labels.lock().await);
    let creates =
        held.as_ref().is_some_and(|known| wanted.iter().any(|l| !known.get(&w.repo).is_some_and(|k| k.contains(l))));
    if !creates {
        held = None;
    }
    let mut req = Request::new(APPLY_TOOL, args);
    req.session = Some(session_of(&w.repo, w.number));
    if req.args.get("comment").is_none() {
        // Without a comment the call converges: safe for the executor to repeat.
        req.idempotency_key = Some(format!("{}-apply", task_key(&w.repo, w.number, fingerprint)));
    }
    let outcome = t.inner.harness.execute_request(req).await?;
    let mut known = match held {
        Some(g) => g,
        None => t.inner.labels.lock().await,
    };
    known.entry(w.repo.clone()).or_default().extend(wanted);
    drop(known);
    let changes = &outcome.output["changes"];
    let count = |k: &str| changes[k].as_array().map_or(0, Vec::len) as u64;
    metrics::counter!("uw_triage_actions_total", "action" => "label_create").increment(count("labels_created"));
    metrics::counter!("uw_triage_actions_total", "action" => "label").increment(count("labels_added"));
    if !changes["assignees"].is_null() {
        metrics::counter!("uw_triage_actions_total", "action" => "assign").increment(1);
    }
    if changes["comment"] == json!(true) {
        metrics::counter!("uw_triage_actions_total", "action" => "comment").increment(1);
    }
    Ok(outcome.provenance_id)
}

/// Records why the harness did not apply a plan. A refusal by the policy or the contract will
/// not pass by itself: the issue leaves the queue as [`Applied::Refused`] (a restart queues it
/// again). Anything else is returned, to back off and try again.
///
/// # Errors
/// `e` when it may pass; E4002 from the store.
async fn refused(t: &Triage, w: &Work, plan: &Plan, fingerprint: &str, e: Error) -> Result<Applied, Error> {
    let store = t.store().clone();
    let row = Refused {
        repo: w.repo.clone(),
        number: w.number,
        fingerprint: fingerprint.to_owned(),
        plan: serde_json::to_value(plan).unwrap_or_default(),
        code: e.code.as_str().to_owned(),
        message: e.message.clone(),
        provenance_id: e.request_id.clone(),
    };
    blocking(move || store.record_refused(&row, now_ms())).await?;
    if matches!(e.code.category(), ErrorCategory::Policy | ErrorCategory::Contract) {
        metrics::counter!("uw_triage_errors_total", "stage" => "refused").increment(1);
        tracing::warn!(repo = %w.repo, number = w.number, code = e.code.as_str(), error = %e.message, "the harness refused the triage plan");
        return Ok(Applied::Refused);
    }
    Err(e)
}

/// Queues again every issue whose plan was refused before this start (a policy may have
/// changed since).
async fn requeue_refused(t: &Triage) {
    let store = t.store().clone();
    match blocking(move || store.requeue_refused(now_ms())).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(issues = n, "triage plans refused before this start are queued again"),
        Err(e) => error(t, "store", &e),
    }
}

/// Submits the issue's task to the router and records the answer. A router that cannot be
/// reached leaves the task pending; the polling loop submits it again (same key).
pub async fn route(t: &Triage, repo: &str, number: u64, key: &str, plan: &Plan) {
    let started = Instant::now();
    let config = t.inner.live.get();
    let settings = t.settings();
    let Some((owner, name)) = split_repo(repo) else { return };
    let router = settings.router_house.unwrap_or(config.house);
    let mut args = json!({ "owner": owner, "repo": name, "state": "open", "max_issues": 50, "max_body_chars": 500 });
    if let (Some(h), true) = (plan.house, settings.house_labels) {
        args["labels"] = json!([house_label(h)]);
    }
    let mut call = uni_wizard::Request::new(TASK_TOOL, args);
    call.session = Some(format!("triage:{repo}#{number}"));
    call.idempotency_key = Some(key.to_owned());
    let submission = wire::Submission { caller: config.house, key: key.to_owned(), preferred: plan.house, mode: None };
    let req = wire::submit_request(&submission, &call);
    // With etcd, a router that does not lead names the one that does (E3014): asked next,
    // a few hops at most (leadership can move while we ask). The key makes repeats safe.
    let mut target = router;
    let mut answer = Err(Error::new(ErrorCode::NotLeader, "no router asked"));
    for _ in 0..3 {
        answer = match t.inner.peers.router(target) {
            Ok(mut client) => client.submit(req.clone()).await.map_err(|s| wire::error_from_status(&s)),
            Err(e) => Err(e),
        };
        let leader = match &answer {
            Err(e) if e.code == ErrorCode::NotLeader => {
                e.details.get("leader_house").and_then(Value::as_str).and_then(|h| h.parse::<House>().ok())
            }
            _ => None,
        };
        match leader {
            Some(h) if h != target => target = h,
            _ => break,
        }
    }
    let answer = match answer {
        Ok(resp) => {
            let resp = resp.into_inner();
            let house = wire::house_from_wire(resp.assigned_house).map(|h: House| h.to_string());
            let (state, error) = match resp.result {
                Some(v1::submit_response::Result::Outcome(_)) => ("succeeded", None),
                Some(v1::submit_response::Result::Error(d)) => ("failed", Some(format!("{} {}", d.code, d.message))),
                None => ("running", None),
            };
            TaskAnswer { task_id: resp.task_id, state, house, error }
        }
        Err(e) => {
            error(t, "route", &e);
            return;
        }
    };
    metrics::counter!("uw_triage_actions_total", "action" => "route").increment(1);
    tracing::info!(
        repo,
        number,
        task = %answer.task_id,
        state = answer.state,
        house = ?answer.house,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "task routed"
    );
    let store = t.store().clone();
    let (repo, key) = (repo.to_owned(), key.to_owned());
    if let Err(e) = blocking(move || store.record_task(&repo, number, &key, &answer)).await {
        error(t, "store", &e);
    }
}

/// Submits again every task recorded but never answered (idempotent: same keys).
pub async fn resubmit_pending(t: &Triage) {
    let store = t.store().clone();
    let pending = match blocking(move || store.pending_tasks()).await {
        Ok(p) => p,
        Err(e) => return error(t, "store", &e),
    };
    for p in pending {
        let Ok(plan) = serde_json::from_value::<Plan>(p.plan.clone()) else { continue };
        route(t, &p.repo, p.number, &p.key, &plan).await;
    }
}
