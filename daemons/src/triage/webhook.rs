//! `POST /webhooks/gitea` and `GET /triage/status`, on the daemon's HTTP port. The status
//! wants the port's bearer token like `/metrics` (`http.metrics_token_file`); the webhook is
//! authenticated by each delivery's HMAC alone, since Gitea sends no bearer token.
//!
//! A delivery is checked in this order, and the first failure answers:
//!
//! | check | answer |
//! |---|---|
//! | `Content-Length` above `max_body_bytes` | 413, nothing read |
//! | body grows past `max_body_bytes` while read | 413, reading stops |
//! | body not read within 10 s | 408 |
//! | `X-Gitea-Signature` missing | 401 |
//! | signature not the lowercase hex HMAC-SHA256 of the raw body with the secret (compared in constant time) | 401 |
//! | `X-Gitea-Delivery` missing | 400 |
//! | body not a JSON object of Gitea's payload shape | 400 |
//! | delivery id seen before (kept 7 days in `triage.db`) | 200 `duplicate` |
//! | sender is the bot, event or action not handled, repository not watched, a pull request | 200 `ignored` with the reason |
//! | otherwise: delivery recorded and the issue queued, in one durable transaction | 202 `queued` |
//!
//! The size check on the headers is [`check_declared_size`]; every check after the read is
//! the pure [`inspect`], which the `webhook` fuzz target drives (docs/FUZZING.md).
//!
//! The answer comes right after the enqueue (Gitea waits 5 s and does not retry); the work
//! happens after, from the queue. Handled: `X-Gitea-Event-Type` (else `X-Gitea-Event`)
//! `issues` (opened, edited, reopened), `issue_label` (label_updated, label_cleared),
//! `issue_assign` (assigned, unassigned) and `issue_comment` (created, edited). Nothing from
//! the request, and never the secret, is logged beyond the delivery id and the event.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::store::now_ms;
use super::{Triage, blocking};
use crate::config::triage::TriageConfig;

/// How long a client may take to send the body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The routes, with the daemon as state: the webhook open (each delivery carries its HMAC),
/// the status behind the HTTP port's scrape token (`serve::HttpAuth`).
pub fn routes(t: Triage) -> crate::serve::HttpRoutes {
    crate::serve::HttpRoutes {
        open: axum::Router::new().route("/webhooks/gitea", axum::routing::post(receive)).with_state(t.clone()),
        guarded: axum::Router::new().route("/triage/status", axum::routing::get(status)).with_state(t),
    }
}

/// Whether `signature` (hex) is the HMAC-SHA256 of `body` under `secret`. Constant time in
/// the signature's content (`Mac::verify_slice`); a signature that is not hex fails.
pub fn verify_signature(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Ok(sig) = hex::decode(signature.trim()) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The lowercase hex HMAC-SHA256 of `body` under `secret`, as Gitea signs deliveries.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never returns the empty string in practice.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else { return String::new() };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(default)]
    action: String,
    #[serde(default)]
    issue: Option<PayloadIssue>,
    #[serde(default)]
    repository: Option<PayloadRepo>,
    #[serde(default)]
    sender: Option<PayloadUser>,
    #[serde(default)]
    is_pull: bool,
}

#[derive(Debug, Deserialize)]
struct PayloadIssue {
    number: u64,
    #[serde(default)]
    pull_request: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct PayloadRepo {
    full_name: String,
}

#[derive(Debug, Deserialize)]
struct PayloadUser {
    login: String,
}

fn reply(code: StatusCode, body: Value) -> Response {
    (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Why a delivery was refused: the answer's status, the `result` label of
/// `uw_triage_webhooks_total` and the reason sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status answered.
    pub status: StatusCode,
    /// The metric label: `too_large`, `slow`, `malformed`, `unsigned` or `bad_signature`.
    pub result: &'static str,
    /// The reason, in the answer's `error`.
    pub why: &'static str,
}

const TOO_LARGE: Refusal =
    Refusal { status: StatusCode::PAYLOAD_TOO_LARGE, result: "too_large", why: "body too large" };

/// An authenticated, well-formed delivery and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `X-Gitea-Delivery`, at most 200 bytes.
    pub id: String,
    /// `X-Gitea-Event-Type` (else `X-Gitea-Event`), at most 64 characters; may be empty.
    pub event: String,
    /// The repository and issue number to queue, or why the delivery is ignored.
    pub decision: Result<(String, u64), String>,
}

fn refuse(t: &Triage, r: Refusal) -> Response {
    t.counters().refused.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("uw_triage_webhooks_total", "result" => r.result).increment(1);
    tracing::info!(result = r.result, status = r.status.as_u16(), "webhook refused");
    reply(r.status, json!({ "ok": false, "error": r.why }))
}

enum Read {
    TooLarge,
    Broken,
    Slow,
}

async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, Read> {
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| Read::Broken)?;
            if buf.len() + chunk.len() > limit {
                return Err(Read::TooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.unwrap_or(Err(Read::Slow))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// The check made before the body is read: a `Content-Length` above `max_body_bytes`.
///
/// # Errors
/// 413, nothing read.
pub fn check_declared_size(settings: &TriageConfig, headers: &HeaderMap) -> Result<(), Refusal> {
    let declared = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > settings.max_body_bytes as u64) {
        return Err(TOO_LARGE);
    }
    Ok(())
}

/// Everything checked once the body is read, in the order of the module's table: signature,
/// delivery id, JSON, then what to do with it. Pure: nothing is stored or logged.
///
/// # Errors
/// The first check that fails: 401 for a missing or wrong signature, 400 for a missing
/// delivery id or a body that is not a Gitea payload.
pub fn inspect(settings: &TriageConfig, headers: &HeaderMap, raw: &[u8]) -> Result<Delivery, Refusal> {
    let refused = |status, result, why| Err(Refusal { status, result, why });
    let Some(signature) = header(headers, "x-gitea-signature") else {
        return refused(StatusCode::UNAUTHORIZED, "unsigned", "X-Gitea-Signature is missing");
    };
    if !verify_signature(settings.webhook_secret.expose().as_bytes(), raw, signature) {
        return refused(StatusCode::UNAUTHORIZED, "bad_signature", "X-Gitea-Signature does not match");
    }
    let Some(id) = header(headers, "x-gitea-delivery").filter(|d| d.len() <= 200).map(str::to_owned) else {
        return refused(StatusCode::BAD_REQUEST, "malformed", "X-Gitea-Delivery is missing");
    };
    let event = header(headers, "x-gitea-event-type").or_else(|| header(headers, "x-gitea-event")).unwrap_or("");
    let event: String = event.chars().take(64).collect();
    // An object first: serde would also read a struct from a JSON array.
    let payload: Payload = match serde_json::from_slice::<Value>(raw) {
        Ok(v) if v.is_object() => match Payload::deserialize(v) {
            Ok(p) => p,
            Err(_) => return refused(StatusCode::BAD_REQUEST, "malformed", "body is not a Gitea webhook payload"),
        },
        _ => return refused(StatusCode::BAD_REQUEST, "malformed", "body is not a JSON object"),
    };
    let decision = decide(settings, &event, &payload);
    Ok(Delivery { id, event, decision })
}

/// What to do with an authenticated, well-formed delivery.
fn decide(settings: &TriageConfig, event: &str, p: &Payload) -> Result<(String, u64), String> {
    if let Some(s) = &p.sender
        && s.login.eq_ignore_ascii_case(&settings.bot_user)
    {
        return Err("sender is the bot".into());
    }
    // The action names are distinct across the three issue event types, so a delivery that
    // carries only `X-Gitea-Event: issues` (no `-Type`) is still read right.
    let handled = match event {
        "issues" | "issue_label" | "issue_assign" => matches!(
            p.action.as_str(),
            "opened" | "edited" | "reopened" | "label_updated" | "label_cleared" | "assigned" | "unassigned"
        ),
        "issue_comment" => matches!(p.action.as_str(), "created" | "edited"),
        _ => return Err(format!("event `{event}` is not handled")),
    };
    if !handled {
        return Err(format!("action `{}` of `{event}` is not handled", p.action));
    }
    let Some(full) = p.repository.as_ref().map(|r| r.full_name.as_str()) else {
        return Err("no repository".into());
    };
    let Some(repo) = settings.repos.iter().find(|r| r.eq_ignore_ascii_case(full)) else {
        return Err("repository is not watched".into());
    };
    let Some(issue) = &p.issue else { return Err("no issue".into()) };
    if p.is_pull || issue.pull_request.is_some() {
        return Err("a pull request".into());
    }
    Ok((repo.clone(), issue.number))
}

async fn receive(State(t): State<Triage>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let settings = t.settings();
    if let Err(r) = check_declared_size(&settings, &headers) {
        return refuse(&t, r);
    }
    let raw = match read_limited(body, settings.max_body_bytes).await {
        Ok(b) => b,
        Err(Read::TooLarge) => return refuse(&t, TOO_LARGE),
        Err(Read::Slow) => {
            let slow =
                Refusal { status: StatusCode::REQUEST_TIMEOUT, result: "slow", why: "body not received in time" };
            return refuse(&t, slow);
        }
        Err(Read::Broken) => {
            let broken =
                Refusal { status: StatusCode::BAD_REQUEST, result: "malformed", why: "body could not be read" };
            return refuse(&t, broken);
        }
    };
    let Delivery { id: delivery, event, decision } = match inspect(&settings, &headers, &raw) {
        Ok(d) => d,
        Err(r) => return refuse(&t, r),
    };
    let outcome = match &decision {
        Ok(_) => "queued".to_owned(),
        Err(why) => format!("ignored: {why}"),
    };
    let work = decision.as_ref().ok().cloned();
    let store = t.store().clone();
    let (id, ev) = (delivery.clone(), event.clone());
    let accepted = blocking(move || {
        store.accept_delivery(&id, &ev, &outcome, work.as_ref().map(|(r, n)| (r.as_str(), *n)), now_ms())
    })
    .await;
    let (code, result, body) = match (accepted, decision) {
        (Err(e), _) => {
            t.counters().errors.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("uw_triage_errors_total", "stage" => "store").increment(1);
            tracing::error!(delivery = %delivery, code = e.code.as_str(), error = %e.message, "webhook not recorded");
            (StatusCode::SERVICE_UNAVAILABLE, "error", json!({ "ok": false, "error": "cannot record the delivery" }))
        }
        (Ok(false), _) => {
            t.counters().duplicate.fetch_add(1, Ordering::Relaxed);
            (StatusCode::OK, "duplicate", json!({ "ok": true, "duplicate": true, "delivery": delivery }))
        }
        (Ok(true), Err(why)) => {
            t.counters().ignored.fetch_add(1, Ordering::Relaxed);
            (StatusCode::OK, "ignored", json!({ "ok": true, "ignored": why, "delivery": delivery }))
        }
        (Ok(true), Ok((repo, number))) => {
            t.counters().queued.fetch_add(1, Ordering::Relaxed);
            t.wake();
            (
                StatusCode::ACCEPTED,
                "queued",
                json!({ "ok": true, "queued": { "repo": repo, "number": number }, "delivery": delivery }),
            )
        }
    };
    metrics::counter!("uw_triage_webhooks_total", "result" => result).increment(1);
    metrics::histogram!("uw_triage_webhook_seconds").record(started.elapsed().as_secs_f64());
    tracing::debug!(delivery = %delivery, event = %event, result, "webhook");
    reply(code, body)
}

async fn status(State(t): State<Triage>) -> Response {
    match t.status().await {
        Ok(v) => reply(StatusCode::OK, v),
        Err(e) => {
            reply(StatusCode::SERVICE_UNAVAILABLE, json!({ "ok": false, "error": e.message, "code": e.code.as_str() }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the signature of Gitea's own sample delivery verifies, and a changed byte or key does not.
    #[test]
    fn sample_signature_verifies() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/gitea/webhook-samples");
        let Ok(body) = std::fs::read(dir.join("issues-opened.body.json")) else {
            panic!("the webhook samples are missing at {}", dir.display());
        };
        let headers: Value =
            serde_json::from_slice(&std::fs::read(dir.join("issues-opened.headers.json")).expect("headers"))
                .expect("headers JSON");
        let secret = headers["secret"].as_str().expect("secret");
        let sig = headers["headers"]["X-Gitea-Signature"].as_str().expect("signature");
        assert!(verify_signature(secret.as_bytes(), &body, sig));
        assert_eq!(sign(secret.as_bytes(), &body), sig);
        let mut changed = body.clone();
        changed[10] ^= 1;
        assert!(!verify_signature(secret.as_bytes(), &changed, sig));
        assert!(!verify_signature(b"another-secret-123", &body, sig));
        assert!(!verify_signature(secret.as_bytes(), &body, "not hex"));
        assert!(!verify_signature(secret.as_bytes(), &body, ""));
    }

    /// Proves inspect answers each refusal of the table with its status, and decides a signed delivery.
    #[test]
    fn inspect_refuses_in_order_and_decides() {
        let settings: TriageConfig = crate::config::parse(
            "gitea: {base_url: 'http://127.0.0.1:3000', token: t}\nwebhook_secret: a-webhook-secret-0123\n\
             bot_user: bot\nrepos: [acme/widgets]\n",
            "t.yaml",
        )
        .expect("settings");
        let body = br#"{"action":"opened","issue":{"number":7},"repository":{"full_name":"Acme/Widgets"}}"#;
        let signed = |body: &[u8], id: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert("x-gitea-signature", sign(b"a-webhook-secret-0123", body).parse().expect("value"));
            h.insert("x-gitea-event", "issues".parse().expect("value"));
            if let Some(id) = id {
                h.insert("x-gitea-delivery", id.parse().expect("value"));
            }
            h
        };
        let status = |h: &HeaderMap, b: &[u8]| inspect(&settings, h, b).map(|_| ()).map_err(|r| (r.status, r.result));
        assert_eq!(status(&HeaderMap::new(), body), Err((StatusCode::UNAUTHORIZED, "unsigned")));
        assert_eq!(status(&signed(b"other", Some("d")), body), Err((StatusCode::UNAUTHORIZED, "bad_signature")));
        assert_eq!(status(&signed(body, None), body), Err((StatusCode::BAD_REQUEST, "malformed")));
        assert_eq!(status(&signed(b"[1]", Some("d")), b"[1]"), Err((StatusCode::BAD_REQUEST, "malformed")));
        let d = inspect(&settings, &signed(body, Some("d-1")), body).expect("accepted");
        assert_eq!((d.id.as_str(), d.event.as_str(), d.decision), ("d-1", "issues", Ok(("acme/widgets".into(), 7))));
        let mut big = HeaderMap::new();
        big.insert("content-length", "2000000".parse().expect("value"));
        assert_eq!(check_declared_size(&settings, &big).map_err(|r| r.status), Err(StatusCode::PAYLOAD_TOO_LARGE));
    }
}
