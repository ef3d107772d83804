//! Router -> worker dispatch of a no-op tool against a raw tonic unary echo, in one run.
//!
//! Run: `cargo bench -p uni_wizard_daemons --bench dispatch`.
//!
//! Everything is real and on loopback: one `uni-wizardd`-shaped gRPC server (the auth layer
//! over the Worker and Router services, exactly as `daemon.rs` assembles them) and, beside it,
//! a bare tonic server whose `Execute` answers at once (no auth, no harness): the baseline.
//! Measured, sequential latency (p50 of 3000 calls) and throughput (64 calls in flight for 3 s):
//!
//! - `echo`: the raw tonic unary call;
//! - `dispatch`: what the router does per task, `Worker/Execute` with credentials, through the
//!   auth layer and the worker's harness (Simple mode) running the no-op tool;
//! - `submit`: a whole task, client -> router -> worker -> router -> client (two gRPC hops,
//!   routing, the task table, idempotency), the figure an operator sees.
//!
//! Two configurations in one run: the default one (`worker.audit_all_modes: true`: every
//! call's record is committed to the hash-chained audit store, with group commit, before the
//! answer), the figure of record; then the audit off, beside it. Each measures its own echo
//! baseline, and the default one also the disk's own 4 KiB write + fdatasync latency (p50), so
//! "1.5x the echo plus one fsync" is computed from this run.
//!
//! Targets (SYSTEM.md §8): dispatch <= 1.5x echo latency (+ one fsync with the audit on),
//! >= 20k tasks/s; a whole task through the router >= 10k tasks/s with the audit on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::transport::Server;
use uni_wizard::contract::{Annotations, Category, ContractSpec, Risk};
use uni_wizard::tools::{Registry, ToolContext, TypedTool};
use uni_wizard::{House, approval::DenyAll};
use uni_wizard_daemons::auth::{AuthLayer, Credentials};
use uni_wizard_daemons::config::{DaemonConfig, Secret};
use uni_wizard_daemons::live::Live;
use uni_wizard_daemons::membership::Membership;
use uni_wizard_daemons::peers::Peers;
use uni_wizard_daemons::router::RouterService;
use uni_wizard_daemons::worker::WorkerService;
use uni_wizard_proto::v1::worker_server::{Worker, WorkerServer};
use uni_wizard_proto::v1::{
    self, CapacityRequest, CapacityResponse, ExecuteRequest, ExecuteResponse, SubmitRequest, ToolCall,
    execute_response, router_client::RouterClient, router_server::RouterServer, worker_client::WorkerClient,
};

/// The no-op tool: validated input, nothing done, an empty object out.
struct Noop;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoopInput {}

#[derive(Serialize)]
struct NoopOutput {}

impl TypedTool for Noop {
    type Input = NoopInput;
    type Output = NoopOutput;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "noop",
            category: Category::System,
            description: "Does nothing (benchmarks).",
            input_schema: json!({"type": "object", "properties": {}, "additionalProperties": false}),
            output_schema: json!({"type": "object", "properties": {}, "additionalProperties": false}),
            annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: false },
            risk: Risk::Low,
            default_timeout: Duration::from_secs(5),
            dry_run: false,
            content_guard: false,
        }
    }

    async fn run(_: &ToolContext, _: NoopInput) -> uni_wizard::Result<NoopOutput> {
        Ok(NoopOutput {})
    }
}

/// The baseline: a tonic service that answers at once.
struct Echo;

#[tonic::async_trait]
impl Worker for Echo {
    async fn execute(
        &self,
        r: tonic::Request<ExecuteRequest>,
    ) -> Result<tonic::Response<ExecuteResponse>, tonic::Status> {
        let call = r.into_inner().call.unwrap_or_default();
        let outcome = v1::Outcome { tool: call.tool, output_json: "{}".into(), attempts: 1, ..Default::default() };
        Ok(tonic::Response::new(ExecuteResponse {
            result: Some(execute_response::Result::Outcome(outcome)),
            replayed: false,
        }))
    }

    async fn capacity(
        &self,
        _: tonic::Request<CapacityRequest>,
    ) -> Result<tonic::Response<CapacityResponse>, tonic::Status> {
        Ok(tonic::Response::new(CapacityResponse::default()))
    }
}

fn call() -> ToolCall {
    ToolCall { tool: "noop".into(), args_json: "{}".into(), ..Default::default() }
}

async fn listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

async fn channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect")
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Sequential latency: p50 over `n` calls after `n / 10` warm-up calls.
async fn latency<F, Fut>(n: usize, mut f: F) -> Duration
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..n / 10 {
        f(i as u64).await;
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f((n + i) as u64).await;
        v.push(t.elapsed());
    }
    p50(v)
}

/// Throughput: `conc` loops for `secs` seconds; calls per second.
async fn throughput<F, Fut>(conc: usize, secs: u64, f: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(1 << 40));
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            let (f, done, seq) = (f.clone(), done.clone(), seq.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    f(seq.fetch_add(1, Ordering::Relaxed)).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(run(true));
    rt.block_on(run(false));
}

/// p50 of 2000 4 KiB write + fdatasync rounds on a file in `dir`.
fn fsync_p50(dir: &std::path::Path) -> Duration {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("fsync.probe")).expect("probe");
    let block = [7u8; 4096];
    let mut times: Vec<Duration> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&block).expect("write");
            f.sync_data().expect("fdatasync");
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

async fn run(audit: bool) {
    // Under target/, the project's disk: a tmpfs would make the audit's fsync free.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-dispatch");
    std::fs::create_dir_all(&base).expect("bench dir");
    let home = tempfile::tempdir_in(&base).expect("home");
    let (echo_l, echo_addr) = listener().await;
    let (node_l, node_addr) = listener().await;
    let token = "timmy-bench-token-0123456789";
    let yaml = format!(
        "house: timmy\nnode: bench\nplaintext_loopback: true\nroles: [router, worker]\n\
         listen: {{grpc: \"{node_addr}\", http: \"127.0.0.1:1\"}}\n\
         houses:\n  timmy: {{endpoint: \"{node_addr}\", auth_token: {token}}}\n\
         router: {{routes: {{noop: [timmy]}}}}\n\
         worker:\n  max_concurrency: 256\n  audit_all_modes: {audit}\n  library:\n    home: {}\n    intelligence: {{enabled: false}}\n",
        home.path().display()
    );
    let config = DaemonConfig::parse(&yaml, "bench.yaml", &|_| None).expect("config");
    let live = Live::new(config);
    let mut registry = Registry::empty();
    registry.add_typed::<Noop>().expect("noop");
    let store = WorkerService::open_store(&live.get()).expect("store");
    let worker =
        WorkerService::with_registry(live.clone(), store, Arc::new(DenyAll), registry.clone()).expect("worker");
    let membership = Membership::default();
    membership.report_up(House::Timmy, None);
    let peers = Peers::new(live.clone()).expect("peers");
    let router = RouterService::new(live.clone(), peers, membership, registry, None);

    tokio::spawn(
        Server::builder()
            .tcp_nodelay(true)
            .add_service(WorkerServer::new(Echo))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(echo_l).with_nodelay(Some(true))),
    );
    tokio::spawn(
        Server::builder()
            .tcp_nodelay(true)
            .layer(AuthLayer::new(live.clone()))
            .add_service(WorkerServer::new(worker))
            .add_service(RouterServer::new(router))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(node_l).with_nodelay(Some(true))),
    );

    let creds = Credentials::new(House::Timmy, &Secret::new(token)).expect("credentials");
    let echo = WorkerClient::new(channel(echo_addr).await);
    let node = channel(node_addr).await;
    let dispatch = WorkerClient::with_interceptor(node.clone(), creds.clone());
    let submit = RouterClient::with_interceptor(node, creds);
    let exec = || ExecuteRequest { call: Some(call()), house: 1, mode: v1::Mode::Simple.into(), ..Default::default() };

    let echo_f = move |_: u64| {
        let mut c = echo.clone();
        async move {
            c.execute(exec()).await.expect("echo");
        }
    };
    let dispatch_f = move |_: u64| {
        let mut c = dispatch.clone();
        async move {
            let r = c.execute(exec()).await.expect("dispatch").into_inner();
            assert!(matches!(r.result, Some(execute_response::Result::Outcome(_))), "{r:?}");
        }
    };
    let submit_f = move |i: u64| {
        let mut c = submit.clone();
        async move {
            let req = SubmitRequest {
                call: Some(call()),
                idempotency_key: format!("bench-{i}"),
                mode: v1::Mode::Simple.into(),
                ..Default::default()
            };
            let r = c.submit(req).await.expect("submit").into_inner();
            assert!(matches!(r.result, Some(v1::submit_response::Result::Outcome(_))), "{r:?}");
        }
    };

    let n = 3000;
    let (mut le, mut ld, mut ls) = (Vec::new(), Vec::new(), Vec::new());
    // Interleave rounds so drifting load on the shared cores hits every variant alike.
    for _ in 0..3 {
        le.push(latency(n, echo_f.clone()).await);
        ld.push(latency(n, dispatch_f.clone()).await);
        ls.push(latency(n, submit_f.clone()).await);
    }
    let (le, ld, ls) = (p50(le), p50(ld), p50(ls));
    let te = throughput(64, 3, echo_f).await;
    let td = throughput(64, 3, dispatch_f).await;
    let ts = throughput(64, 3, submit_f).await;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let fsync = if audit { us(fsync_p50(home.path())) } else { 0.0 };
    let config = if audit { "default config, audit on (figure of record)" } else { "audit off" };
    println!("dispatch bench (loopback, 2 runtime threads, Simple mode no-op tool): {config}");
    println!(
        "  latency p50   echo {:>7.1} µs | dispatch {:>7.1} µs ({:.2}x) | submit {:>7.1} µs ({:.2}x)",
        us(le),
        us(ld),
        us(ld) / us(le),
        us(ls),
        us(ls) / us(le)
    );
    println!(
        "  throughput    echo {te:>7.0} /s | dispatch {td:>7.0} /s ({:.2}x) | submit {ts:>7.0} /s ({:.2}x)",
        td / te,
        ts / te
    );
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    let limit = 1.5 * us(le) + fsync;
    println!(
        "  dispatch latency {:.1} µs ({:.2}x echo): {} target <= 1.5x echo{} = {limit:.1} µs",
        us(ld),
        us(ld) / us(le),
        verdict(us(ld) <= limit),
        if audit { format!(" + one fsync ({fsync:.1} µs p50 on this disk)") } else { String::new() }
    );
    println!("  dispatch throughput {td:.0}/s: {} target >= 20000/s", verdict(td >= 20_000.0));
    let whole = if audit { 10_000.0 } else { 20_000.0 };
    println!("  submit (whole task) throughput {ts:.0}/s: {} target >= {whole:.0}/s", verdict(ts >= whole));
}
