//! `uni-wizardd`: the daemons of one node in one process, in fixed phases.
//!
//! 1. **Config**: load and validate the file; no port is bound yet. A bad file exits 64
//!    naming file, line and field.
//! 2. **Tracing and metrics**: text or JSON logs; the Prometheus recorder.
//! 3. **Build** the roles this node runs (telemetry, worker, router, health, sovereign,
//!    triage), each in one place in `build`: what it serves on the gRPC port, what it adds
//!    to the HTTP port, and the background tasks it starts once the node serves.
//! 4. **Serve**: gRPC (every service behind [`AuthLayer`], health's serving status excepted;
//!    `grpc.health.v1`, reflection, TLS when configured; what tonic refuses by itself answered
//!    with the conventional codes) and HTTP (`/metrics`, `/health`, the triage webhook); tell
//!    systemd READY; watchdog pings; config hot reload (on a file change and on SIGHUP).
//! 5. **Wait** for SIGTERM or SIGINT.
//! 6. **Drain**: health answers NOT_SERVING (gRPC) and 503 `draining` (HTTP), the gRPC
//!    listener closes and in-flight calls get `shutdown_grace_ms` to finish; the HTTP listener
//!    closes last, so `/health` says `draining` for as long as the drain lasts; then the
//!    process exits 0.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use uni_wizard::approval::{Approver, DenyAll};
use uni_wizard::tokens::TokenApprover;
use uni_wizard::tools::Registry;
use uni_wizard::{Error, ErrorCode};
use uni_wizard_proto::v1::{
    router_server::RouterServer, sovereign_server::SovereignServer, telemetry_server::TelemetryServer,
    worker_server::WorkerServer,
};

use crate::auth::AuthLayer;
use crate::config::{DaemonConfig, LogFormat, Role};
use crate::live::Live;
use crate::membership::Membership;
use crate::peers::Peers;
use crate::router::RouterService;
use crate::serve;
use crate::sovereign::{RemoteApprover, SovereignService};
use crate::triage::Triage;
use crate::worker::WorkerService;

/// `uni-wizardd --config FILE`.
#[derive(Debug, Parser)]
#[command(name = "uni-wizardd", version, about = "uni-wizard daemons: router, health, worker, sovereign, triage")]
pub struct DaemonArgs {
    /// The node's config file (see configs/houses.yaml).
    #[arg(long, env = "UNI_WIZARD_DAEMON_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Validate the config and exit (0 valid, 64 invalid), binding nothing.
    #[arg(long)]
    pub check: bool,
}

/// Runs the daemons; returns the exit code.
pub fn main(args: DaemonArgs) -> i32 {
    // Phase 1: config, before anything else happens.
    let config = match DaemonConfig::load(&args.config).and_then(|c| c.check_files().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("uni-wizardd: {} {}", e.code, e.message);
            return 64;
        }
    };
    if args.check {
        println!("ok  {} is valid", args.config.display());
        return 0;
    }
    // Phase 2: tracing.
    init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("uni-wizardd: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(config, args.config)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(code = e.code.as_str(), error = %e.message, "uni-wizardd stopped");
            eprintln!("uni-wizardd: {} {}", e.code, e.message);
            if e.code.category() == uni_wizard::ErrorCategory::Config { 64 } else { 1 }
        }
    }
}

fn init_tracing(config: &DaemonConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// What the roles of one node add to it: gRPC services, HTTP routes, background tasks.
struct Node {
    /// The gRPC services, each also advertised by reflection and reported serving.
    grpc: RoutesBuilder,
    /// Their names (`uniwizard.v1.Worker`, ...).
    names: Vec<&'static str>,
    /// Routes on the HTTP port.
    http: Vec<serve::HttpRoutes>,
    /// Started once both ports serve; each stops when its receiver turns true.
    tasks: Vec<Box<dyn FnOnce(watch::Receiver<bool>) + Send>>,
    /// The membership view (`/health` shows it where the node probes).
    membership: Membership,
    /// The telemetry outbox (`/health` shows its figures).
    outbox: Option<Arc<crate::telemetry::Outbox>>,
    /// A router's candidacy (with `etcd:`): resigned when the node drains.
    election: Option<crate::leader::Election>,
    /// A worker's view of who leads (with `etcd:`; `/health` shows it).
    leader_watch: Option<Arc<crate::leader::LeaderWatch>>,
    /// The worker's exactly-once store (`/health` shows when it cannot be written).
    once: Option<Arc<crate::worker::once::OnceStore>>,
    /// Each sets metrics read from a role's state, before every `/metrics` render.
    scraped: Vec<Box<dyn Fn() + Send + Sync>>,
}

impl Node {
    /// Serves `svc` on the gRPC port.
    fn grpc<S>(&mut self, svc: S)
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.grpc.add_service(svc);
    }

    /// Runs `task` once the node serves.
    fn task(&mut self, task: impl FnOnce(watch::Receiver<bool>) + Send + 'static) {
        self.tasks.push(Box::new(task));
    }
}

/// Builds the roles this node runs, each in one place below, in dependency order: telemetry's
/// observer before the worker, the worker's pattern DB before the router and the sink.
fn build(live: &Live) -> Result<Node, Error> {
    let config = live.get();
    let roles = config.roles();
    let on = |role: Role| roles.contains(&role);
    let peers = Peers::new(live.clone())?;
    let mut node = Node {
        grpc: RoutesBuilder::default(),
        names: Vec::new(),
        http: Vec::new(),
        tasks: Vec::new(),
        membership: Membership::default(),
        outbox: None,
        election: None,
        leader_watch: None,
        once: None,
        scraped: Vec::new(),
    };

    // Telemetry, first half: the outbox and the observer the worker's harness reports to.
    let bridge =
        if on(Role::Telemetry) { Some(crate::telemetry::Bridge::new(live.clone(), peers.clone())?) } else { None };
    let observer = bridge.as_ref().map(|(_, o)| o.clone() as Arc<dyn uni_wizard::Observer>);
    node.outbox = bridge.as_ref().map(|(b, _)| b.outbox());
    if let Some(outbox) = node.outbox.clone() {
        node.scraped.push(Box::new(move || {
            if let Ok(st) = outbox.stats() {
                metrics::gauge!("uw_telemetry_buffered").set(st.buffered as f64);
                let age_ms = if st.oldest_ms > 0 { (crate::telemetry::now_ms() - st.oldest_ms).max(0) } else { 0 };
                metrics::gauge!("uw_telemetry_oldest_unacked_seconds").set(age_ms as f64 / 1000.0);
            }
        }));
    }

    // One audit chain per node: the worker and triage append to this one store.
    let audit = if on(Role::Worker) || on(Role::Triage) { Some(WorkerService::open_store(&config)?) } else { None };
    if let Some(store) = audit.clone() {
        node.scraped.push(Box::new(move || {
            metrics::counter!("uw_audit_write_failures_total").absolute(store.write_failures());
        }));
    }
    // Its heads are anchored at Timmy by the telemetry role (Timmy's own at his own sink).
    let anchored = audit.clone();
    let worker = if let (true, Some(store)) = (on(Role::Worker), audit.clone()) {
        let approver: Arc<dyn Approver> = match &config.worker.timmy_pubkey {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::new(ErrorCode::ConfigInvalid, format!("cannot read {}: {e}", path.display()))
                        .with_details(serde_json::json!({ "field": "worker.timmy_pubkey" }))
                })?;
                let tokens = TokenApprover::new(uni_wizard::tokens::parse_verifying_key(&text)?, store.clone());
                let wait = Duration::from_millis(config.worker.approval_wait_ms);
                Arc::new(RemoteApprover::new(peers.clone(), config.house, wait, tokens))
            }
            None => {
                tracing::warn!("worker.timmy_pubkey is not set: calls that need Timmy's approval are refused");
                Arc::new(DenyAll)
            }
        };
        let mut w = WorkerService::observed(live.clone(), store, approver, Registry::builtin()?, observer)?;
        // With etcd, a dispatch is taken only from the leader etcd shows, under its term.
        if let Some(etcd) = &config.etcd {
            let watch = Arc::new(crate::leader::LeaderWatch::start(etcd.clone()));
            node.leader_watch = Some(watch.clone());
            w = w.fenced_by(watch);
        }
        node.grpc(WorkerServer::new(w.clone()));
        node.once = Some(w.once());
        let breakers = w.clone();
        node.scraped.push(Box::new(move || {
            metrics::gauge!("uw_worker_breakers_open").set(breakers.open_breakers().len() as f64);
        }));
        Some(w)
    } else {
        None
    };
    let intelligence = worker.as_ref().and_then(WorkerService::intelligence);

    if on(Role::Router) {
        let mut router = RouterService::new(
            live.clone(),
            peers.clone(),
            node.membership.clone(),
            Registry::builtin()?,
            intelligence.clone(),
        );
        // With etcd, every router campaigns; only the leader admits tasks.
        if let Some(etcd) = &config.etcd {
            let endpoint = config.houses.get(&config.house).map(|h| h.endpoint.clone()).unwrap_or_default();
            let election = crate::leader::Election::start(etcd.clone(), config.house, config.node_name(), endpoint);
            router = router.leading_with(election.fence(), crate::leader::Bindings::new(etcd.clone()));
            node.election = Some(election);
        }
        node.grpc(RouterServer::new(router));
    }

    if on(Role::Health) || on(Role::Router) {
        let (live, peers, membership) = (live.clone(), peers.clone(), node.membership.clone());
        node.task(move |stop| {
            tokio::spawn(crate::health::run_prober(live, peers, membership, stop));
        });
    }

    if on(Role::Sovereign) {
        node.grpc(SovereignServer::new(SovereignService::new(&config.sovereign, &config.home())?));
    }

    if let (true, Some(audit)) = (on(Role::Triage), audit) {
        let triage = Triage::new(live.clone(), peers.clone(), audit)?;
        node.http.push(triage.routes());
        node.task(move |stop| triage.spawn(stop));
    }

    // Telemetry, second half: Timmy's sink, the stream to it, the alerts.
    if let Some((mut bridge, _)) = bridge {
        if let Some(store) = anchored {
            bridge.anchor_audit(store);
        }
        let sink = if config.house == uni_wizard::House::Timmy {
            let path = config.home().join(crate::telemetry::SINK_FILE);
            let store = Arc::new(crate::telemetry::SinkStore::open(&path, &config.telemetry)?);
            let sink = crate::telemetry::SinkService::new(store, intelligence, live.clone());
            node.grpc(TelemetryServer::new(sink.clone()));
            Some(sink)
        } else {
            None
        };
        let alerts = config.telemetry.alerts.any().then(|| crate::telemetry::alerts::Sources {
            sink,
            outbox: node.outbox.clone(),
            breakers: worker.map(|w| Arc::new(move || w.open_breakers()) as crate::telemetry::alerts::OpenBreakers),
            node: config.node_name(),
        });
        let rules = config.telemetry.alerts.clone();
        node.task(move |stop| {
            if let Some(sources) = alerts {
                tokio::spawn(crate::telemetry::alerts::run(rules, sources, stop.clone()));
            }
            bridge.spawn(stop);
        });
    }
    Ok(node)
}

async fn run(config: DaemonConfig, path: PathBuf) -> Result<(), Error> {
    // Before anything is served, so an early SIGTERM drains instead of killing.
    let mut signals = crate::signal::Signals::install();
    let metrics = serve::install_metrics()?;
    let live = Live::new(config);
    let config = live.get();
    let roles = config.roles();

    // Phase 3: build.
    let mut node = build(&live)?;
    let election = node.election.take();
    let leadership = election.as_ref().map(crate::leader::Election::fence);
    let leader_watch = node.leader_watch.take();
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let (stop_tx, stop_rx) = watch::channel(false);
    // The HTTP listener's own stop: it closes after the gRPC drain, not at the signal.
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let http_auth = serve::HttpAuth::new(live.clone())?;

    // Phase 4: serve.
    let grpc_listener = serve::bind(config.listen.grpc, "grpc").await?;
    let http_listener = serve::bind(config.listen.http, "http").await?;
    let grpc_addr = grpc_listener.local_addr().ok();
    let limits =
        |c: &DaemonConfig| crate::guard::Limits { preface: Some(c.http.header_timeout()), idle: c.http.idle_timeout() };
    let (ping, ping_timeout) = crate::guard::keepalive(limits(&config));
    let mut server = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(ping))
        .http2_keepalive_timeout(Some(ping_timeout));
    if let Some(tls) = &config.tls {
        server = server
            .tls_config(serve::server_tls(tls)?)
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("TLS: {e}")))?;
    }
    for name in &node.names {
        reporter.set_service_status(*name, ServingStatus::Serving).await;
    }
    // Reflection advertises exactly the services this node serves.
    let (reflection_v1, reflection_v1alpha) = serve::reflection(&node.names)?;
    let routes = server
        // Outermost: the codes of what tonic refuses by itself, and the caller's deadline.
        .layer(crate::conventions::ConventionsLayer)
        .layer(AuthLayer::new(live.clone()))
        .add_routes(node.grpc.routes())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let mut grpc_stop = stop_rx.clone();
    let grpc_live = live.clone();
    let grpc = tokio::spawn(async move {
        // Each connection is held to the live header and idle timeouts (see guard.rs).
        let incoming = TcpIncoming::from(grpc_listener)
            .with_nodelay(Some(true))
            .map(move |s| s.map(|s| crate::guard::Guarded::new(s, limits(&grpc_live.get()))));
        routes
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            })
            .await
    });

    let health_view = {
        let (membership, outbox, once, house, node) =
            (node.membership.clone(), node.outbox.clone(), node.once.clone(), config.house, config.node_name());
        let role_names: Vec<&'static str> = roles.iter().map(|r| r.as_str()).collect();
        let probes = roles.contains(&Role::Health) || roles.contains(&Role::Router);
        Arc::new(move |draining: bool| {
            let mut v = serde_json::json!({
                "status": if draining { "draining" } else { "serving" },
                "house": house,
                "node": node,
                "roles": role_names,
            });
            if probes {
                v["peers"] = serde_json::to_value(membership.all()).unwrap_or_default();
            }
            if let Some(stats) = outbox.as_ref().and_then(|o| o.stats().ok()) {
                v["telemetry"] = serde_json::to_value(stats).unwrap_or_default();
            }
            // Still serving calls (200), but a part of the node cannot do its job.
            let mut degraded = Vec::new();
            if let Some(w) = outbox.as_ref().and_then(|o| o.write_error()) {
                degraded.push(serde_json::json!({ "component": "telemetry outbox", "reason": w.reason }));
            }
            if let Some(w) = once.as_ref().and_then(|o| o.write_error()) {
                // Keyed calls are refused (E3015) while it lasts; unkeyed ones run.
                degraded.push(serde_json::json!({ "component": "exactly-once store", "reason": w.reason, "since_ms": w.since_ms }));
            }
            if let Some(fence) = &leadership {
                let state = fence.state();
                if let crate::leader::Leadership::Unavailable { reason } = &state {
                    degraded.push(serde_json::json!({ "component": "router leadership", "reason": reason }));
                }
                v["leadership"] = crate::leader::health_json(&state);
            } else if let Some(watch) = &leader_watch {
                // A worker (not a router): whom it takes dispatches from.
                v["leadership"] = match watch.current() {
                    Some(l) => serde_json::json!({ "state": "watching", "leader_house": l.house, "term": l.term }),
                    None => {
                        let reason = "no leader known from etcd: dispatches are refused (E3013)";
                        degraded.push(serde_json::json!({ "component": "leader watch", "reason": reason }));
                        serde_json::json!({ "state": "unavailable", "reason": reason })
                    }
                };
            }
            if !draining && !degraded.is_empty() {
                v["status"] = "degraded".into();
                v["degraded"] = degraded.into();
            }
            v
        }) as serve::HealthFn
    };
    let scraped = std::mem::take(&mut node.scraped);
    let scrape: serve::ScrapeFn = Arc::new(move || scraped.iter().for_each(|set| set()));
    let app = serve::http_app(metrics, scrape, health_view, stop_rx.clone(), http_auth, node.http);
    let http = tokio::spawn(serve::serve_http(http_listener, app, live.clone(), http_stop_rx));
    for task in node.tasks {
        task(stop_rx.clone());
    }
    let _watcher = match crate::live::watch(live.clone(), path.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, file = %path.display(), "config hot reload is off: cannot watch the file");
            None
        }
    };
    if let Some(hangup) = signals.take_hangup() {
        crate::live::reload_on_hangup(live.clone(), path.clone(), hangup);
    }
    tokio::spawn(serve::watchdog(stop_rx.clone()));
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    tracing::info!(
        house = %config.house,
        node = %config.node_name(),
        grpc = ?grpc_addr,
        http = %config.listen.http,
        roles = %names.join(","),
        tls = config.tls.is_some(),
        "serving"
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("serving")]);

    // Phase 5: wait.
    signals.wait().await;

    // Phase 6: drain.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // A leader resigns first, so another router leads while this one drains.
    if let Some(election) = election {
        election.shutdown().await;
    }
    reporter.set_service_status("", ServingStatus::NotServing).await;
    // From here `/health` answers 503 "draining" until the HTTP listener closes.
    let _ = stop_tx.send(true);
    // The live value: `shutdown_grace_ms` reloads.
    let grace_ms = live.get().shutdown_grace_ms;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(grace_ms);
    let grpc_drained = tokio::time::timeout_at(deadline, grpc).await.is_ok();
    let _ = http_stop_tx.send(true);
    let http_drained = tokio::time::timeout_at(deadline, http).await.is_ok();
    if grpc_drained && http_drained {
        tracing::info!("drained");
    } else {
        tracing::warn!(grace_ms, "grace period over; stopping with calls in flight");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(roles: &str, home: &std::path::Path) -> Result<Node, Error> {
        let yaml = format!(
            "house: timmy\nplaintext_loopback: true\nroles: {roles}\nlisten: {{grpc: 127.0.0.1:1, http: 127.0.0.1:2}}\n\
             houses:\n  timmy: {{endpoint: 127.0.0.1:1, auth_token: timmy-token-0123456789}}\n\
             worker:\n  library:\n    home: {}\n    intelligence: {{enabled: false}}\n",
            home.display()
        );
        build(&Live::new(DaemonConfig::parse(&yaml, "t.yaml", &|_| None)?))
    }

    /// Proves each role adds what it serves and runs from its one place in `build`: a worker
    /// and router node serves exactly those two services and runs the prober, a health-only
    /// node serves nothing and runs the prober, a worker-only node runs no task.
    #[tokio::test]
    async fn each_role_adds_its_own_services_and_tasks() {
        let dir = tempfile::tempdir().expect("dir");
        let both = node("[worker, router]", dir.path()).expect("built");
        assert_eq!(both.names, vec!["uniwizard.v1.Worker", "uniwizard.v1.Router"]);
        assert_eq!((both.tasks.len(), both.http.len(), both.outbox.is_none()), (1, 0, true));
        let health = node("[health]", dir.path()).expect("built");
        assert!(health.names.is_empty());
        assert_eq!(health.tasks.len(), 1);
        let worker = node("[worker]", dir.path()).expect("built");
        assert_eq!((worker.names.len(), worker.tasks.len()), (1, 0));
    }
}
