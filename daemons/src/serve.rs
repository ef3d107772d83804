//! What every daemon serves besides its own services: `grpc.health.v1`, reflection, TLS and
//! auth on the gRPC port; `/metrics` and `/health` on the HTTP port; signals, readiness and
//! the systemd watchdog.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use uni_wizard::{Error, ErrorCode};

use crate::fleet::TlsConfig;
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
    describe_counter!("uw_auth_refused_total", "RPCs refused by authentication, by error code");
    describe_counter!("uw_config_reload_total", "Config hot reloads, by result (applied, rejected)");
    describe_gauge!("uw_peer_up", "Whether the health prober sees the house up (1) or down (0)");
    describe_counter!("uw_worker_calls_total", "Calls executed by this worker, by result (ok or the error code)");
    describe_histogram!("uw_worker_call_seconds", Unit::Seconds, "Time a worker call took, queueing excluded");
    describe_counter!("uw_worker_fenced_total", "Dispatches refused for a stale fencing token");
    describe_counter!("uw_router_tasks_total", "Finished router tasks, by state and house");
    describe_histogram!("uw_router_task_seconds", Unit::Seconds, "Time from submission to a finished task");
    describe_counter!("uw_router_deduplicated_total", "Submissions answered from an earlier task with the same key");
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

#[derive(Clone)]
struct HttpState {
    metrics: PrometheusHandle,
    health: HealthFn,
    draining: watch::Receiver<bool>,
}

/// The HTTP side: `GET /metrics` (Prometheus text format) and `GET /health` (JSON; 503 while
/// draining). The daemon merges the triage role's routes into it.
pub fn http_app(metrics: PrometheusHandle, health: HealthFn, draining: watch::Receiver<bool>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_page))
        .route("/health", axum::routing::get(health_page))
        .with_state(HttpState { metrics, health, draining })
}

async fn metrics_page(State(s): State<HttpState>) -> impl IntoResponse {
    s.metrics.run_upkeep();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

async fn health_page(State(s): State<HttpState>) -> impl IntoResponse {
    let draining = *s.draining.borrow();
    let code = if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = (s.health)(draining).to_string();
    (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
}

/// Serves `app` on `listener` until `stop` turns true, then finishes open requests.
pub async fn serve_http(listener: tokio::net::TcpListener, app: axum::Router, mut stop: watch::Receiver<bool>) {
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
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

/// SIGTERM and SIGINT handlers, installed before anything is served: a signal that arrives
/// the moment the node answers must drain it, not kill it with the default action.
pub struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers now.
    pub fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let (term, int) = (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok());
        if term.is_none() || int.is_none() {
            tracing::warn!("cannot install SIGTERM/SIGINT handlers: stop the daemon with SIGKILL");
        }
        Signals { term, int }
    }

    /// Resolves on SIGTERM or SIGINT.
    pub async fn wait(mut self) {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.term) => tracing::info!("SIGTERM: draining"),
            _ = next(&mut self.int) => tracing::info!("SIGINT: draining"),
        }
    }
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
