//! What every daemon serves besides its own services: `grpc.health.v1`, reflection, TLS and
//! auth on the gRPC port; `/metrics` and `/health` on the HTTP port; the systemd watchdog.
//! (Signals are [`crate::signal`]'s.)
//!
//! # The HTTP port
//!
//! | route | who may read it |
//! |---|---|
//! | `GET /health` | anyone (probes carry no secret); 503 `draining` from SIGTERM until the listener closes |
//! | `GET /metrics`, `GET /triage/status` | `Authorization: Bearer <token of http.metrics_token_file>` ([`HttpAuth`]), else 401; or anyone with `http.metrics_open` on loopback |
//! | `POST /webhooks/gitea` | the delivery's HMAC (Gitea sends no bearer token) |
//!
//! [`serve_http`] accepts connections itself (hyper's HTTP/1 connection, not `axum::serve`) so
//! that a client that sends its header slowly, or nothing at all, is cut off:
//! `http.header_timeout_ms` for a request's header (and for a kept-alive connection's next
//! request), `http.idle_timeout_ms` for a connection that moves no byte either way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use uni_wizard::{Error, ErrorCode};

use crate::config::TlsConfig;
use crate::live::Live;
use crate::peers::read;

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
///
/// # Errors
/// When another recorder is already installed in this process.
pub fn install_metrics() -> Result<PrometheusHandle, Error> {
    let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&buckets)
        .and_then(|b| b.install_recorder())
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("cannot install the metrics recorder: {e}")))?;
    describe_metrics();
    Ok(handle)
}

/// Help text for every metric the daemons export (Prometheus' `# HELP` lines).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "uw_auth_refused_total",
        "RPCs, telemetry streams and HTTP requests refused by authentication, by error code"
    );
    describe_counter!("uw_config_reload_total", "Config hot reloads, by result (applied, rejected)");
    describe_gauge!("uw_peer_up", "Whether the health prober sees the house up (1) or down (0)");
    describe_counter!("uw_worker_calls_total", "Calls executed by this worker, by result (ok or the error code)");
    describe_histogram!("uw_worker_call_seconds", Unit::Seconds, "Time a worker call took, queueing excluded");
    describe_counter!("uw_worker_fenced_total", "Dispatches refused for a stale fencing token");
    describe_gauge!(
        "uw_worker_breakers_open",
        "This worker's open circuit breakers (tool and target each), at the scrape"
    );
    describe_counter!(
        "uw_audit_write_failures_total",
        "Writes to this node's audit store that failed (E3008): records, writability probes, spent tokens"
    );
    describe_counter!(
        "uw_worker_replayed_total",
        "Keyed calls answered with the first answer stored for their (submitter, key), nothing run"
    );
    describe_counter!(
        "uw_worker_maybe_ran_total",
        "Keyed calls found left running by an earlier worker process, ended E3012 maybe_ran and never run"
    );
    describe_counter!("uw_router_tasks_total", "Finished router tasks, by state and house");
    describe_histogram!("uw_router_task_seconds", Unit::Seconds, "Time from submission to a finished task");
    describe_counter!("uw_router_deduplicated_total", "Submissions answered from an earlier task with the same key");
    describe_counter!(
        "uw_router_forwarded_total",
        "Submissions and status reads answered with E3014: this router does not lead (redirected to the leader, or none leads)"
    );
    describe_counter!("uw_sovereign_requests_total", "Approval requests received by Timmy's Sovereign service");
    describe_counter!("uw_sovereign_decisions_total", "Approval decisions, by decision");
    describe_counter!(
        "uw_triage_webhooks_total",
        "Gitea webhook deliveries, by result (queued, duplicate, ignored, refusals)"
    );
    describe_histogram!(
        "uw_triage_webhook_seconds",
        Unit::Seconds,
        "Time to answer a webhook delivery, durable enqueue included"
    );
    describe_histogram!(
        "uw_triage_latency_seconds",
        Unit::Seconds,
        "Time from an issue queued to its triage applied on Gitea, by source"
    );
    describe_counter!("uw_triage_actions_total", "Triage actions on Gitea and the router, by action");
    describe_counter!("uw_triage_issues_total", "Issues looked at by triage, by result (triaged, unchanged, skipped)");
    describe_counter!("uw_triage_errors_total", "Triage failures, by stage (gitea, route, poll, store)");
    describe_counter!("uw_triage_polls_total", "Completed polls of a watched repository");
    describe_gauge!("uw_triage_queue_issues", "Issues due in the triage queue at the last look");
    crate::telemetry::describe_metrics();
    crate::leader::describe_metrics();
}

/// The server-side TLS config: this node's identity, and client certificates required and
/// verified against the fleet's CA (mutual TLS).
///
/// # Errors
/// E4001 naming an unreadable file.
pub fn server_tls(tls: &TlsConfig) -> Result<ServerTlsConfig, Error> {
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?))
        .client_ca_root(Certificate::from_pem(read(&tls.ca)?))
        .client_auth_optional(false)
        .timeout(Duration::from_secs(5)))
}

/// The reflection services (v1 and v1alpha, which older clients such as grpcurl and
/// grpcio-reflection still ask), knowing `uniwizard.v1` and `grpc.health.v1` and advertising
/// `served` (the node's own `uniwizard.v1` services), health and reflection itself, so a
/// client lists only what this node answers.
///
/// # Errors
/// E4001 when the embedded descriptors do not decode (a build bug).
pub fn reflection(
    served: &[&str],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    Error,
> {
    const ALWAYS: [&str; 3] =
        ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];
    let bad = |e: tonic_reflection::server::Error| Error::new(ErrorCode::ConfigInvalid, format!("reflection: {e}"));
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(uni_wizard_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Both reflection versions' descriptors, so either can be described.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
            .include_reflection_service(false);
        for name in ALWAYS.iter().chain(served) {
            b = b.with_service_name(*name);
        }
        b
    };
    Ok((builder().build_v1().map_err(bad)?, builder().build_v1alpha().map_err(bad)?))
}

/// What `/health` reports, refreshed by the daemon.
pub type HealthFn = Arc<dyn Fn(bool) -> serde_json::Value + Send + Sync>;

/// Sets the metrics read from state at scrape time (open breakers, the outbox's figures, audit
/// write failures), just before `/metrics` renders: values that change with the clock or in a
/// store, not at one place in the code.
pub type ScrapeFn = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone)]
struct HttpState {
    metrics: PrometheusHandle,
    scrape: ScrapeFn,
    health: HealthFn,
    draining: watch::Receiver<bool>,
}

/// Routes a role adds to the HTTP port.
#[derive(Debug, Default)]
pub struct HttpRoutes {
    /// Routes that authenticate each request themselves (the Gitea webhook's HMAC).
    pub open: axum::Router,
    /// Routes behind the scrape token, like `/metrics` ([`HttpAuth`]).
    pub guarded: axum::Router,
}

/// The HTTP side: `GET /metrics` (Prometheus text format, after `scrape`) behind `auth`,
/// `GET /health` (JSON; 503 while `draining`) open, and the roles' `routes`.
pub fn http_app(
    metrics: PrometheusHandle,
    scrape: ScrapeFn,
    health: HealthFn,
    draining: watch::Receiver<bool>,
    auth: HttpAuth,
    routes: Vec<HttpRoutes>,
) -> axum::Router {
    let state = HttpState { metrics, scrape, health, draining };
    let mut guarded = axum::Router::new().route("/metrics", axum::routing::get(metrics_page)).with_state(state.clone());
    let mut open = axum::Router::new().route("/health", axum::routing::get(health_page)).with_state(state);
    for r in routes {
        guarded = guarded.merge(r.guarded);
        open = open.merge(r.open);
    }
    let auth = Arc::new(auth);
    open.merge(guarded.route_layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let auth = auth.clone();
        async move { auth.admit(req, next).await }
    })))
}

/// The bearer token check of the guarded HTTP routes, against the live `http` settings.
///
/// The token is read from `http.metrics_token_file` (trimmed, as Prometheus trims its
/// `credentials_file`), kept as a SHA-256 digest and read again when the file's size or
/// modification time changes, so a rotated token applies without a restart. The presented
/// token is hashed and compared in constant time, so neither the token nor its length leaks
/// through timing; it is never logged.
pub struct HttpAuth {
    live: Live,
    cached: Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuth").finish_non_exhaustive()
    }
}

struct CachedToken {
    path: PathBuf,
    stamp: (u64, Option<SystemTime>),
    digest: [u8; 32],
}

/// The shortest token accepted, as for house tokens.
const MIN_TOKEN_LEN: usize = 16;

impl HttpAuth {
    /// The check over `live`; reads the token file now, so a bad one stops the daemon at start.
    ///
    /// # Errors
    /// E4001 (field `http.metrics_token_file`) when the file cannot be read or holds a token
    /// shorter than 16 characters.
    pub fn new(live: Live) -> Result<HttpAuth, Error> {
        let auth = HttpAuth { live, cached: Mutex::new(None) };
        let http = auth.live.get().http.clone();
        match &http.metrics_token_file {
            Some(path) => {
                auth.digest(path)?;
            }
            None if http.metrics_open => {
                tracing::warn!("http.metrics_open: /metrics and /triage/status answer anyone on loopback");
            }
            None => tracing::info!(
                "http.metrics_token_file is not set: /metrics and /triage/status answer 401 (see docs/OPERATIONS.md)"
            ),
        }
        Ok(auth)
    }

    /// The digest of the token in `path`, from the cache while the file is unchanged.
    fn digest(&self, path: &Path) -> Result<[u8; 32], Error> {
        let bad = |problem: String| {
            Error::new(ErrorCode::ConfigInvalid, format!("field `http.metrics_token_file`: {problem}"))
                .with_details(serde_json::json!({ "field": "http.metrics_token_file" }))
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let stamp = (meta.len(), meta.modified().ok());
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = cached.as_ref().filter(|c| c.path == path && c.stamp == stamp) {
            return Ok(c.digest);
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let token = text.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(bad(format!("{} holds no token of at least {MIN_TOKEN_LEN} characters", path.display())));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        *cached = Some(CachedToken { path: path.to_owned(), stamp, digest });
        Ok(digest)
    }

    /// Whether a request with this `Authorization` header may read a guarded route.
    ///
    /// # Errors
    /// E5001 saying why not (no token configured, none sent, a wrong one).
    pub fn check(&self, authorization: Option<&str>) -> Result<(), Error> {
        let http = self.live.get().http.clone();
        if http.metrics_open {
            return Ok(());
        }
        let Some(path) = &http.metrics_token_file else {
            return Err(Error::new(ErrorCode::Unauthenticated, "no token is configured (http.metrics_token_file)"));
        };
        let expected = self.digest(path).map_err(|e| {
            tracing::error!(error = %e.message, "the metrics token cannot be read; guarded routes refuse everyone");
            Error::new(ErrorCode::Unauthenticated, "the server's token cannot be read")
        })?;
        let presented = authorization
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::new(ErrorCode::Unauthenticated, "send `Authorization: Bearer <token>`"))?;
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(presented.ct_eq(&expected)) {
            Ok(())
        } else {
            Err(Error::new(ErrorCode::Unauthenticated, "bad token"))
        }
    }

    async fn admit(&self, req: Request, next: Next) -> Response {
        let authorization = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match self.check(authorization) {
            Ok(()) => next.run(req).await,
            Err(e) => {
                metrics::counter!("uw_auth_refused_total", "code" => e.code.as_str()).increment(1);
                tracing::warn!(code = e.code.as_str(), path = %req.uri().path(), reason = %e.message, "refused an HTTP request");
                let body = serde_json::json!({ "ok": false, "code": e.code.as_str(), "error": e.message });
                (
                    StatusCode::UNAUTHORIZED,
                    [
                        (axum::http::header::WWW_AUTHENTICATE, "Bearer realm=\"uni-wizard\""),
                        (axum::http::header::CONTENT_TYPE, "application/json"),
                    ],
                    body.to_string(),
                )
                    .into_response()
            }
        }
    }
}

async fn metrics_page(State(s): State<HttpState>) -> impl IntoResponse {
    // It reads SQLite stores: off the runtime's threads.
    let scrape = s.scrape.clone();
    let _ = tokio::task::spawn_blocking(move || scrape()).await;
    s.metrics.run_upkeep();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

async fn health_page(State(s): State<HttpState>) -> impl IntoResponse {
    let draining = *s.draining.borrow();
    let code = if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = (s.health)(draining).to_string();
    (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
}

/// Serves `app` on `listener` until `stop` turns true, then closes the listener and lets
/// open requests finish (kept-alive connections close once idle). Each connection gets the
/// live `http.header_timeout_ms` and `http.idle_timeout_ms` as it is accepted.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    live: Live,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let http = live.get().http.clone();
        // Idle only: hyper's header read timeout is the HTTP/1 preface limit.
        let limits = crate::guard::Limits { preface: None, idle: http.idle_timeout() };
        let stream = crate::guard::Guarded::new(stream, limits);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(http.header_timeout());
        let conn =
            graceful.watch(builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone())));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// After a failed accept: a connection's own failure is nothing; anything else (out of file
/// descriptors) is logged and waited out for a second, as hyper's and axum's servers do.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "HTTP accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Binds a TCP listener, naming the address in the error.
///
/// # Errors
/// E4001 with the address and the OS error (in use, not permitted).
pub async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::new(ErrorCode::ConfigInvalid, format!("cannot listen for {what} on {addr}: {e}"))
            .with_details(serde_json::json!({ "field": format!("listen.{what}"), "addr": addr.to_string() }))
    })
}

/// Pings the systemd watchdog at half its interval, when the unit has one, until `stop`.
pub async fn watchdog(mut stop: watch::Receiver<bool>) {
    let Some(every) = sd_notify::watchdog_enabled() else { return };
    let every = every / 2;
    loop {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(http: &str) -> Result<HttpAuth, Error> {
        let yaml = format!(
            "house: ezra\nplaintext_loopback: true\nlisten: {{grpc: 127.0.0.1:1, http: 127.0.0.1:2}}\nhttp: {http}\n\
             houses:\n  ezra: {{endpoint: 127.0.0.1:1, auth_token: ezra-token-0123456789}}\n"
        );
        let config = crate::config::DaemonConfig::parse(&yaml, "t.yaml", &|_| None).expect("config");
        HttpAuth::new(Live::new(config))
    }

    /// Proves only `Bearer <the file's token>` passes (scheme in any case, the file's newline
    /// trimmed), no token file refuses everyone, `metrics_open` admits anyone, and a token
    /// file that is missing or too short is E4001 naming the field.
    #[test]
    fn the_scrape_token_decides() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("t");
        std::fs::write(&file, "scrape-token-0123456789\n").expect("token");
        let a = auth(&format!("{{metrics_token_file: {}}}", file.display())).expect("auth");
        assert!(a.check(Some("Bearer scrape-token-0123456789")).is_ok());
        assert!(a.check(Some("bearer scrape-token-0123456789")).is_ok());
        for bad in [None, Some("Bearer "), Some("Bearer scrape-token-012345678"), Some("Basic scrape-token-0123456789")]
        {
            assert_eq!(a.check(bad).map_err(|e| e.code), Err(ErrorCode::Unauthenticated), "{bad:?}");
        }
        let closed = auth("{}").expect("auth");
        assert!(closed.check(Some("Bearer scrape-token-0123456789")).is_err(), "no token file: closed");
        assert!(auth("{metrics_open: true}").expect("auth").check(None).is_ok());
        std::fs::write(&file, "short\n").expect("token");
        let e = auth(&format!("{{metrics_token_file: {}}}", file.display())).expect_err("too short");
        assert_eq!((e.code, e.details["field"].as_str()), (ErrorCode::ConfigInvalid, Some("http.metrics_token_file")));
        let e = auth(&format!("{{metrics_token_file: {}}}", dir.path().join("none").display())).expect_err("missing");
        assert_eq!(e.code, ErrorCode::ConfigInvalid);
    }
}
