//! `uni-wizardd`: the daemons of one node in one process, in fixed phases.
//!
//! 1. **Config**: load and validate the file; no port is bound yet. A bad file exits 64
//!    naming file, line and field.
//! 2. **Tracing and metrics**: text or JSON logs; the Prometheus recorder.
//! 3. **Build** the roles this node runs (router, health, worker, sovereign, triage).
//! 4. **Serve**: gRPC (every service behind [`AuthLayer`], health's serving status excepted;
//!    `grpc.health.v1`, reflection, TLS when configured; what tonic refuses by itself answered
//!    with the conventional codes) and HTTP (`/metrics`, `/health`, the triage webhook); tell
//!    systemd READY; watchdog pings; config hot reload.
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
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use uni_wizard::approval::{Approver, DenyAll};
use uni_wizard::tokens::TokenApprover;
use uni_wizard::{Error, ErrorCode};
use uni_wizard_proto::v1::{
    router_server::RouterServer, sovereign_server::SovereignServer, telemetry_server::TelemetryServer,
    worker_server::WorkerServer,
};

use crate::auth::AuthLayer;
use crate::fleet::{DaemonConfig, LogFormat, Role};
use crate::health::Membership;
use crate::live::Live;
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
    let config = match DaemonConfig::load(&args.config) {
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

/// The built roles of one node.
struct Built {
    router: Option<RouterService>,
    worker: Option<WorkerService>,
    sovereign: Option<SovereignService>,
    triage: Option<Triage>,
    telemetry: Option<crate::telemetry::Bridge>,
    sink: Option<crate::telemetry::SinkService>,
    membership: Membership,
    peers: Peers,
}

fn build(live: &Live) -> Result<Built, Error> {
    let config = live.get();
    let roles = config.roles();
    let peers = Peers::new(live.clone())?;
    let membership = Membership::default();
    let sovereign = if roles.contains(&Role::Sovereign) {
        Some(SovereignService::new(&config.sovereign, &WorkerService::library(&config).home_dir())?)
    } else {
        None
    };
    let (telemetry, observer) = if roles.contains(&Role::Telemetry) {
        let (bridge, observer) = crate::telemetry::Bridge::new(live.clone(), peers.clone())?;
        (Some(bridge), Some(observer as Arc<dyn uni_wizard::Observer>))
    } else {
        (None, None)
    };
    // One audit chain per node: the worker and triage append to this one store.
    let audit = WorkerService::open_store(&config)?;
    let worker = if roles.contains(&Role::Worker) {
        let store = audit.clone();
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
        Some(WorkerService::observed(live.clone(), store, approver, uni_wizard::tools::Registry::builtin()?, observer)?)
    } else {
        None
    };
    let router = if roles.contains(&Role::Router) {
        let intelligence = worker.as_ref().and_then(WorkerService::intelligence);
        Some(RouterService::new(
            live.clone(),
            peers.clone(),
            membership.clone(),
            uni_wizard::tools::Registry::builtin()?,
            intelligence,
        ))
    } else {
        None
    };
    let triage =
        if roles.contains(&Role::Triage) { Some(Triage::new(live.clone(), peers.clone(), audit)?) } else { None };
    let sink = if roles.contains(&Role::Telemetry) && config.house == uni_wizard::House::Timmy {
        let path = crate::telemetry::home(&config).join(crate::telemetry::SINK_FILE);
        let store = Arc::new(crate::telemetry::SinkStore::open(&path, &config.telemetry)?);
        let intelligence = worker.as_ref().and_then(WorkerService::intelligence);
        Some(crate::telemetry::SinkService::new(store, intelligence, live.clone()))
    } else {
        None
    };
    Ok(Built { router, worker, sovereign, triage, telemetry, sink, membership, peers })
}

async fn run(config: DaemonConfig, path: PathBuf) -> Result<(), Error> {
    // Before anything is served, so an early SIGTERM drains instead of killing.
    let signals = serve::Signals::install();
    let metrics = serve::install_metrics()?;
    let live = Live::new(config);
    let config = live.get();
    let roles = config.roles();

    // Phase 3: build.
    let mut built = build(&live)?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let (stop_tx, stop_rx) = watch::channel(false);
    // The HTTP listener's own stop: it closes after the gRPC drain, not at the signal.
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let http_auth = serve::HttpAuth::new(live.clone())?;

    // Phase 4: serve.
    let grpc_listener = serve::bind(config.listen.grpc, "grpc").await?;
    let http_listener = serve::bind(config.listen.http, "http").await?;
    let grpc_addr = grpc_listener.local_addr().ok();
    let mut server = Server::builder().tcp_nodelay(true);
    if let Some(tls) = &config.tls {
        server = server
            .tls_config(serve::server_tls(tls)?)
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("TLS: {e}")))?;
    }
    if built.worker.is_some() {
        reporter.set_serving::<WorkerServer<WorkerService>>().await;
    }
    if built.router.is_some() {
        reporter.set_serving::<RouterServer<RouterService>>().await;
    }
    if built.sovereign.is_some() {
        reporter.set_serving::<SovereignServer<SovereignService>>().await;
    }
    if built.sink.is_some() {
        reporter.set_serving::<TelemetryServer<crate::telemetry::SinkService>>().await;
    }
    // Reflection advertises exactly the services this node serves.
    let served: Vec<&'static str> = [
        built.worker.is_some().then_some(<WorkerServer<WorkerService> as tonic::server::NamedService>::NAME),
        built.router.is_some().then_some(<RouterServer<RouterService> as tonic::server::NamedService>::NAME),
        built.sovereign.is_some().then_some(<SovereignServer<SovereignService> as tonic::server::NamedService>::NAME),
        built
            .sink
            .is_some()
            .then_some(<TelemetryServer<crate::telemetry::SinkService> as tonic::server::NamedService>::NAME),
    ]
    .into_iter()
    .flatten()
    .collect();
    let (reflection_v1, reflection_v1alpha) = serve::reflection(&served)?;
    let routes = server
        // Outermost: the codes of what tonic refuses by itself, and the caller's deadline.
        .layer(crate::conventions::ConventionsLayer)
        .layer(AuthLayer::new(live.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(built.worker.clone().map(WorkerServer::new))
        .add_optional_service(built.router.clone().map(RouterServer::new))
        .add_optional_service(built.sovereign.clone().map(SovereignServer::new))
        .add_optional_service(built.sink.clone().map(TelemetryServer::new));
    let mut grpc_stop = stop_rx.clone();
    let grpc = tokio::spawn(async move {
        let incoming = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        routes
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            })
            .await
    });

    let outbox = built.telemetry.as_ref().map(crate::telemetry::Bridge::outbox);
    if let Some(bridge) = built.telemetry.take() {
        bridge.spawn(stop_rx.clone());
        if config.telemetry.alerts.any() {
            let sources = crate::telemetry::alerts::Sources {
                sink: built.sink.clone(),
                outbox: outbox.clone(),
                worker: built.worker.clone(),
                node: config.node_name(),
            };
            tokio::spawn(crate::telemetry::alerts::run(config.telemetry.alerts.clone(), sources, stop_rx.clone()));
        }
    }
    let health_view = {
        let (membership, house, node) = (built.membership.clone(), config.house, config.node_name());
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
            v
        }) as serve::HealthFn
    };
    let mut routes = Vec::new();
    if let Some(triage) = &built.triage {
        routes.push(triage.routes());
        triage.spawn(stop_rx.clone());
    }
    let app = serve::http_app(metrics, health_view, stop_rx.clone(), http_auth, routes);
    let http = tokio::spawn(serve::serve_http(http_listener, app, live.clone(), http_stop_rx));
    if roles.contains(&Role::Health) || roles.contains(&Role::Router) {
        tokio::spawn(crate::health::run_prober(
            live.clone(),
            built.peers.clone(),
            built.membership.clone(),
            stop_rx.clone(),
        ));
    }
    let _watcher = match crate::live::watch(live.clone(), path.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, file = %path.display(), "config hot reload is off: cannot watch the file");
            None
        }
    };
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
    reporter.set_service_status("", ServingStatus::NotServing).await;
    // From here `/health` answers 503 "draining" until the HTTP listener closes.
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(config.shutdown_grace_ms);
    let grpc_drained = tokio::time::timeout_at(deadline, grpc).await.is_ok();
    let _ = http_stop_tx.send(true);
    let http_drained = tokio::time::timeout_at(deadline, http).await.is_ok();
    if grpc_drained && http_drained {
        tracing::info!("drained");
    } else {
        tracing::warn!(grace_ms = config.shutdown_grace_ms, "grace period over; stopping with calls in flight");
    }
    Ok(())
}
