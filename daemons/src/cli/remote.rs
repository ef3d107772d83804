//! The CLI's wire side: `test --router ADDR[,ADDR...]`, `task`, `health`, and
//! `approve --list / --decide`.
//!
//! Every call authenticates as a house with its token (`--token`, else `UNI_WIZARD_TOKEN`);
//! TLS with `--tls-ca/--tls-cert/--tls-key` (plaintext is refused unless the address is
//! loopback).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use uni_wizard::{Error, ErrorCode, House, Outcome, Request};
use uni_wizard_proto::v1::{
    self, DecideRequest, ListPendingRequest, router_client::RouterClient, sovereign_client::SovereignClient,
};

use crate::auth::{Authed, Credentials};
use crate::config::{DaemonConfig, Secret, TlsConfig, is_loopback_host, parse_endpoint};
use crate::peers::{CLI_PINGS, ClientTls, channel};
use crate::wire;

/// How the CLI reaches a daemon.
#[derive(Debug, Clone, Args)]
pub struct Connect {
    /// The caller's house token (default: `UNI_WIZARD_TOKEN`).
    #[arg(long, env = "UNI_WIZARD_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The fleet CA (PEM), for TLS.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// This client's key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl Connect {
    /// An authenticated channel to `addr` as `house`.
    ///
    /// # Errors
    /// E5001 without a token; E4001 for plaintext off loopback or unusable TLS files.
    pub fn open(&self, addr: &str, house: House) -> Result<Authed, Error> {
        let token = self.token.clone().filter(|t| !t.is_empty()).ok_or_else(|| {
            Error::new(
                ErrorCode::Unauthenticated,
                format!("no token for {house}: pass --token or set UNI_WIZARD_TOKEN"),
            )
        })?;
        let tls = match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(ClientTls::load(&TlsConfig {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
                server_name: None,
            })?),
            _ => None,
        };
        let (host, _) = parse_endpoint(addr).map_err(|e| Error::new(ErrorCode::InvalidInput, e))?;
        if tls.is_none() && !is_loopback_host(&host) {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                format!("{addr} is not loopback: plaintext is refused, pass --tls-ca/--tls-cert/--tls-key"),
            ));
        }
        let ch = channel(addr, tls.as_ref(), Duration::from_secs(5), CLI_PINGS)?;
        Ok(tonic::service::interceptor::InterceptedService::new(ch, Credentials::new(house, &Secret::new(token))?))
    }
}

/// A call the router ran: the task and where it ran, with the worker's outcome.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The router's task id.
    pub task_id: String,
    /// The house that ran it.
    pub assigned_house: Option<House>,
    /// The worker's node.
    pub node: String,
    /// Whether the task key named an earlier task, whose result this is.
    pub deduplicated: bool,
    /// The outcome, as a local run has it.
    pub outcome: Outcome,
}

/// Submits one call as `s` says, to the leading router among `routers` (`host:port`, tried in
/// order): a router that is not the leader answers E3014 naming the leader's endpoint, which is
/// tried next; a router that cannot be reached passes to the next one. Each router is asked at
/// most once a round; when none takes the task, all are asked again every 200 ms for up to 6 s
/// (a takeover takes about the lease TTL). Every attempt carries the same idempotency key, so
/// a router that took the task before it failed cannot have it run twice.
///
/// # Errors
/// The router's refusal or the task's error, with its E-code (the error's details name the
/// task and the house it went to); E3001 when the task is still running after the router's
/// wait; the last router's error (E3014 when none leads, E3012 when none answered) when no
/// router took the task.
pub async fn submit(
    connect: &Connect,
    routers: &[String],
    s: &wire::Submission,
    call: &Request,
) -> Result<Routed, Error> {
    follow_leader(routers, LEADER_PATIENCE, |router| submit_one(connect, router, s, call)).await
}

/// How long the CLI keeps asking when no router it can reach leads (a leader died and its lease
/// has not expired yet, an election under way): a takeover takes about the lease TTL.
const LEADER_PATIENCE: Duration = Duration::from_secs(6);

/// Between two rounds of asking every router.
const LEADER_RETRY: Duration = Duration::from_millis(200);

/// Asks `ask` of the routers in turn, following E3014's redirect (see [`submit`]); the first
/// answer that is not "not the leader" or "cannot reach the router" is the answer. When every
/// router of a round passed it on, asks them all again after [`LEADER_RETRY`], for up to
/// `patience`.
async fn follow_leader<T, F, Fut>(routers: &[String], patience: Duration, mut ask: F) -> Result<T, Error>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<T, Asked>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut last = Error::new(ErrorCode::InvalidInput, "no router given: pass --router HOST:PORT[,HOST:PORT...]");
    let mut order: Vec<String> = routers.to_vec();
    loop {
        let mut queue: std::collections::VecDeque<String> = order.iter().cloned().collect();
        let mut asked: Vec<String> = Vec::new();
        let mut unreachable: Vec<String> = Vec::new();
        while let Some(router) = queue.pop_front() {
            if asked.contains(&router) {
                continue;
            }
            asked.push(router.clone());
            match ask(router.clone()).await {
                Ok(v) => return Ok(v),
                Err(Asked::Answer(e)) => return Err(e),
                Err(Asked::Elsewhere(e)) => {
                    if let Some(leader) = e.details.get("leader_endpoint").and_then(Value::as_str)
                        && !asked.iter().any(|a| a == leader)
                    {
                        queue.push_front(leader.to_owned());
                    }
                    if e.code != ErrorCode::NotLeader {
                        unreachable.push(router);
                    }
                    last = e;
                }
            }
        }
        if routers.is_empty() || tokio::time::Instant::now() + LEADER_RETRY >= deadline {
            return Err(last);
        }
        // Routers that answered go first next round: one that hangs costs its ping timeout
        // once, not every round.
        order.sort_by_key(|r| unreachable.contains(r));
        tokio::time::sleep(LEADER_RETRY).await;
    }
}

/// How asking one router ended, when it did not give the answer.
#[derive(Debug)]
enum Asked {
    /// The router's answer, final (a refusal, the task's error).
    Answer(Error),
    /// Not the leader (E3014), or not reachable: another router may take it.
    Elsewhere(Error),
}

impl Asked {
    /// An RPC that failed: elsewhere when the router does not lead or cannot be reached.
    fn of_status(st: &tonic::Status) -> Asked {
        let e = wire::error_from_status(st);
        match e.code {
            ErrorCode::NotLeader | ErrorCode::WorkerUnavailable => Asked::Elsewhere(e),
            _ => Asked::Answer(e),
        }
    }
}

async fn submit_one(connect: &Connect, router: String, s: &wire::Submission, call: &Request) -> Result<Routed, Asked> {
    let mut client = RouterClient::new(connect.open(&router, s.caller).map_err(Asked::Answer)?);
    let resp = client.submit(wire::submit_request(s, call)).await.map_err(|st| Asked::of_status(&st))?.into_inner();
    let assigned = wire::house_from_wire(resp.assigned_house);
    match resp.result {
        Some(v1::submit_response::Result::Outcome(o)) => Ok(Routed {
            outcome: wire::outcome_from_wire(&o).map_err(Asked::Answer)?,
            task_id: resp.task_id,
            assigned_house: assigned,
            node: resp.node,
            deduplicated: resp.deduplicated,
        }),
        Some(v1::submit_response::Result::Error(d)) => {
            let mut e = wire::error_from_wire(&d);
            if let Value::Object(m) = &mut e.details {
                m.insert("task_id".into(), json!(resp.task_id));
                m.insert("assigned_house".into(), json!(assigned));
            } else {
                e.details = json!({ "task_id": resp.task_id, "assigned_house": assigned, "details": e.details });
            }
            Err(Asked::Answer(e))
        }
        None => Err(Asked::Answer(
            Error::new(
                ErrorCode::Timeout,
                format!("task {} is still running; ask the router for its status later", resp.task_id),
            )
            .with_details(json!({ "task_id": resp.task_id, "router": router })),
        )),
    }
}

/// Flags of `uni-wizard task`.
#[derive(Debug, Args)]
pub struct TaskArgs {
    /// The task id `test --router` printed.
    pub task_id: String,
    /// The routers, `host:port` (comma-separated or repeated): the leader answers.
    #[arg(long, value_name = "ADDR", value_delimiter = ',', required = true)]
    pub router: Vec<String>,
    /// The house to authenticate as.
    #[arg(long)]
    pub house: String,
    /// How to reach the router.
    #[command(flatten)]
    pub connect: Connect,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// `uni-wizard task ID`: where a routed task is, and its result once finished.
///
/// # Errors
/// E5003 unless `--house` submitted the task or is Timmy (also for an unknown or expired id,
/// so ids cannot be probed); E3006 to Timmy for an unknown or expired task; the router's
/// refusal otherwise.
pub async fn task(a: &TaskArgs) -> Result<Value, Error> {
    let house: House = a.house.parse()?;
    let s = follow_leader(&a.router, LEADER_PATIENCE, |router| async move {
        let mut client = RouterClient::new(a.connect.open(&router, house).map_err(Asked::Answer)?);
        let asked = client.status(v1::StatusRequest { task_id: a.task_id.clone() }).await;
        asked.map(tonic::Response::into_inner).map_err(|st| Asked::of_status(&st))
    })
    .await?;
    let state = wire::task_state_name(s.state());
    let mut v = json!({
        "ok": true,
        "task_id": s.task_id,
        "state": state,
        "assigned_house": wire::house_from_wire(s.assigned_house),
        "node": s.node,
    });
    match s.result {
        Some(v1::status_response::Result::Outcome(o)) => {
            v["outcome"] = serde_json::to_value(wire::outcome_from_wire(&o)?).unwrap_or_default();
        }
        Some(v1::status_response::Result::Error(d)) => {
            v["error"] = serde_json::to_value(wire::error_from_wire(&d)).unwrap_or_default()
        }
        None => {}
    }
    Ok(v)
}

/// Prints `task`.
pub fn print_task(v: &Value, as_json: bool) {
    let mut out = std::io::stdout().lock();
    if as_json {
        let _ = writeln!(out, "{v}");
        return;
    }
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    let _ = writeln!(out, "{}  {}  house={} node={}", s("task_id"), s("state"), s("assigned_house"), s("node"));
    if let Some(e) = v.get("error") {
        let _ =
            writeln!(out, "    error {}: {}", e["code"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""));
    }
    if let Some(o) = v.get("outcome") {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&o["output"]).unwrap_or_default());
    }
}

/// Flags of `uni-wizard health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// A node's daemon config: its `houses:` are probed, as its house with its token.
    #[arg(long, env = "UNI_WIZARD_DAEMON_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// `uni-wizard health`: every house's gRPC health and worker capacity. Exit 0 when every
/// house serves, 4 when any does not.
pub async fn health(a: &HealthArgs) -> Result<(Value, bool), Error> {
    let config = DaemonConfig::load(&a.config)?;
    let peers = crate::peers::Peers::new(crate::live::Live::new(config.clone()))?;
    let rows = probe_houses(&config, &peers, Duration::from_secs(2)).await;
    let mut all_up = rows.iter().all(|r| r["state"] == "up");
    let mut v = json!({ "ok": all_up, "houses": rows });
    match leadership(&config).await {
        Led::NoEtcd => {}
        Led::Leader(l) => v["leadership"] = l,
        Led::NoLeader(why) | Led::Unreadable(why) => {
            all_up = false;
            v["leadership"] = json!({ "error": why });
        }
    }
    v["ok"] = json!(all_up);
    Ok((v, all_up))
}

/// Probes every house of `config` at once (gRPC health, then worker capacity), each within
/// `timeout`: one row per house, in the order of `houses:`, `state` `up` (with `latency_ms`,
/// `node`, `max_concurrency`, `in_flight`, `queued`, `healthy_tools`) or `down` (with `error`).
pub async fn probe_houses(config: &DaemonConfig, peers: &crate::peers::Peers, timeout: Duration) -> Vec<Value> {
    let probes = config.houses.iter().map(|(house, entry)| async move {
        let started = std::time::Instant::now();
        let probe = crate::health::probe(peers, *house, timeout).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match probe {
            Ok(c) => json!({
                "house": house, "endpoint": entry.endpoint, "state": "up", "latency_ms": (ms * 10.0).round() / 10.0,
                "node": c.node, "max_concurrency": c.max_concurrency, "in_flight": c.in_flight, "queued": c.queued,
                "healthy_tools": c.healthy_tools.len(),
            }),
            Err(why) => json!({ "house": house, "endpoint": entry.endpoint, "state": "down", "error": why }),
        }
    });
    futures::future::join_all(probes).await
}

/// Who leads, read once from etcd itself (not from any router's word).
#[derive(Debug, Clone, PartialEq)]
pub enum Led {
    /// The config has no `etcd:`: a single router, nothing to elect.
    NoEtcd,
    /// A router leads: `leader_house`, `leader_node`, `leader_endpoint`, `term`,
    /// `lease_granted_s`, `lease_left_s`, `lease_age_s`.
    Leader(Value),
    /// etcd answered and no router leads; why, in one sentence.
    NoLeader(String),
    /// etcd could not be read (unreachable, quorum lost); why, in one line.
    Unreadable(String),
}

/// Reads the election of `config`'s `etcd:` once (bounded by the etcd section's request
/// timeout, and by 5 s here besides).
pub async fn leadership(config: &DaemonConfig) -> Led {
    let Some(etcd) = &config.etcd else { return Led::NoEtcd };
    let read = tokio::time::timeout(Duration::from_secs(5), crate::leader::observe_once(etcd)).await;
    match read {
        Err(_) => Led::Unreadable("etcd: no answer within 5 s".into()),
        Ok(Err(why)) => Led::Unreadable(format!("etcd: {why}")),
        Ok(Ok(seen)) => match seen.leader {
            Some(l) => Led::Leader(json!({
                "leader_house": l.house, "leader_node": l.node, "leader_endpoint": l.endpoint, "term": l.term,
                "lease_granted_s": seen.lease_granted_s, "lease_left_s": seen.lease_left_s,
                "lease_age_s": seen.lease_granted_s.zip(seen.lease_left_s).map(|(g, left)| g - left),
            })),
            None => Led::NoLeader("no router leads: no candidate in etcd (is any router running with `etcd:`?)".into()),
        },
    }
}

/// Prints `health`.
pub fn print_health(v: &Value, as_json: bool) {
    let mut out = std::io::stdout().lock();
    if as_json {
        let _ = writeln!(out, "{v}");
        return;
    }
    let _ = writeln!(out, "{:<8} {:<22} {:<5} {:>8}  {:<14} load", "house", "endpoint", "state", "latency", "node");
    for r in v["houses"].as_array().into_iter().flatten() {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
        if r["state"] == "up" {
            let _ = writeln!(
                out,
                "{:<8} {:<22} {:<5} {:>6.1}ms  {:<14} {}/{} running, {} queued, {} tools healthy",
                s("house"),
                s("endpoint"),
                "up",
                r["latency_ms"].as_f64().unwrap_or(0.0),
                s("node"),
                r["in_flight"],
                r["max_concurrency"],
                r["queued"],
                r["healthy_tools"]
            );
        } else {
            let _ = writeln!(out, "{:<8} {:<22} {:<5} {:>8}  {}", s("house"), s("endpoint"), "DOWN", "-", s("error"));
        }
    }
    let l = &v["leadership"];
    if let Some(why) = l["error"].as_str() {
        let _ = writeln!(out, "leader   NONE: {why}; routers refuse new tasks (E3014) until one leads");
    } else if let Some(house) = l["leader_house"].as_str() {
        let secs = |k: &str| l[k].as_i64().map_or_else(|| "?".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "leader   {house} ({}) at {}, term {}, lease renewed {} s ago ({} of {} s left)",
            l["leader_node"].as_str().unwrap_or(""),
            l["leader_endpoint"].as_str().unwrap_or(""),
            l["term"],
            secs("lease_age_s"),
            secs("lease_left_s"),
            secs("lease_granted_s")
        );
    }
}

/// `approve --list`: the pending approvals at Timmy's Sovereign service.
///
/// # Errors
/// The service's refusal (E5003 unless authenticated as Timmy).
pub async fn pending(connect: &Connect, addr: &str) -> Result<Value, Error> {
    pending_at(SovereignClient::new(connect.open(addr, House::Timmy)?)).await
}

/// The pending approvals `client` (authenticated as Timmy) lists: `{ok, pending: [...]}`.
///
/// # Errors
/// The service's refusal (E5003 unless authenticated as Timmy).
pub async fn pending_at(mut client: SovereignClient<Authed>) -> Result<Value, Error> {
    let list = client.list_pending(ListPendingRequest {}).await.map_err(|s| wire::error_from_status(&s))?.into_inner();
    let rows: Vec<Value> = list
        .pending
        .iter()
        .map(|p| {
            let r = p.request.clone().unwrap_or_default();
            json!({
                "approval_id": p.approval_id,
                "house": wire::house_from_wire(r.requesting_house),
                "node": r.node,
                "tool": r.tool,
                "args": serde_json::from_str::<Value>(&r.args_json).unwrap_or(Value::Null),
                "args_sha256": r.args_sha256,
                "reason": r.reason,
                "requested_at_ms": p.requested_at_unix_ms,
                "expires_at_ms": p.expires_at_unix_ms,
            })
        })
        .collect();
    Ok(json!({ "ok": true, "pending": rows }))
}

/// `approve --decide ID --yes|--deny`.
///
/// # Errors
/// The service's refusal.
pub async fn decide(connect: &Connect, addr: &str, id: &str, approve: bool, note: &str) -> Result<Value, Error> {
    let mut client = SovereignClient::new(connect.open(addr, House::Timmy)?);
    let req = DecideRequest { approval_id: id.to_owned(), approve, note: note.to_owned() };
    let d = client.decide(req).await.map_err(|s| wire::error_from_status(&s))?.into_inner();
    let decision = wire::decision_name(d.decision());
    Ok(json!({ "ok": true, "approval_id": d.approval_id, "decision": decision, "approver": d.approver }))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn not_leader(leader: Option<&str>) -> Asked {
        let e = Error::new(ErrorCode::NotLeader, "not the leader");
        Asked::Elsewhere(match leader {
            Some(l) => e.with_details(json!({ "leader_house": "allegro", "leader_endpoint": l })),
            None => e,
        })
    }

    /// Runs `follow_leader` over routers that answer as `answers` says; returns the result and
    /// the routers asked, in order.
    fn follow(
        routers: &[&str],
        answers: impl Fn(&str) -> Result<&'static str, Asked>,
    ) -> (Result<&'static str, Error>, Vec<String>) {
        let asked = Mutex::new(Vec::new());
        let routers: Vec<String> = routers.iter().map(|r| (*r).to_owned()).collect();
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let result = rt.block_on(follow_leader(&routers, Duration::ZERO, |r| {
            asked.lock().expect("lock").push(r.clone());
            let answer = answers(&r);
            async move { answer }
        }));
        (result, asked.into_inner().expect("lock"))
    }

    /// Proves a follower's redirect is followed at once (before the other routers given), and
    /// the leader's answer is the result.
    #[test]
    fn a_followers_redirect_is_followed() {
        let (result, asked) = follow(&["a:1", "b:1"], |r| match r {
            "a:1" => Err(not_leader(Some("c:1"))),
            "c:1" => Ok("ran at c"),
            _ => Ok("ran at b"),
        });
        assert_eq!((result.expect("answer"), asked), ("ran at c", vec!["a:1".to_owned(), "c:1".to_owned()]));
    }

    /// Proves that while no router leads (a takeover under way) the routers are asked again,
    /// round after round, until one leads, and that the asking ends with E3014 once the patience
    /// is spent.
    #[tokio::test(start_paused = true)]
    async fn a_takeover_is_waited_for_within_the_patience() {
        let rounds = std::sync::atomic::AtomicUsize::new(0);
        let routers = vec!["a:1".to_owned(), "b:1".to_owned()];
        let ask = |r: String| {
            let n = if r == "a:1" { rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 } else { 0 };
            async move { if n >= 4 && r == "a:1" { Ok("ran at a") } else { Err(not_leader(None)) } }
        };
        let started = tokio::time::Instant::now();
        assert_eq!(follow_leader(&routers, LEADER_PATIENCE, ask).await.expect("led"), "ran at a");
        assert_eq!(started.elapsed(), LEADER_RETRY * 3, "three waits between four rounds");
        let never = |_: String| async { Err::<&str, _>(not_leader(None)) };
        let e = follow_leader(&routers, Duration::from_secs(1), never).await.expect_err("none led");
        assert_eq!(e.code, ErrorCode::NotLeader);
    }

    /// Proves an unreachable router passes to the next, a final answer (a refusal) stops the
    /// search, and routers redirecting to each other are each asked once, ending in E3014.
    #[test]
    fn unreachable_routers_pass_refusals_stop_and_loops_end() {
        let unreachable = || Asked::Elsewhere(Error::new(ErrorCode::WorkerUnavailable, "connection refused"));
        let (result, asked) = follow(&["a:1", "b:1", "c:1"], |r| match r {
            "a:1" => Err(unreachable()),
            "b:1" => Err(Asked::Answer(Error::new(ErrorCode::Forbidden, "not a submitter"))),
            _ => Ok("never"),
        });
        assert_eq!(result.expect_err("refused").code, ErrorCode::Forbidden);
        assert_eq!(asked, vec!["a:1".to_owned(), "b:1".to_owned()]);

        let (result, asked) = follow(&["a:1"], |r| match r {
            "a:1" => Err(not_leader(Some("b:1"))),
            _ => Err(not_leader(Some("a:1"))),
        });
        assert_eq!(result.expect_err("no leader").code, ErrorCode::NotLeader);
        assert_eq!(asked, vec!["a:1".to_owned(), "b:1".to_owned()]);

        let (result, _) = follow(&["a:1", "b:1"], |_| Err(not_leader(None)));
        assert_eq!(result.expect_err("none leads").code, ErrorCode::NotLeader);
        assert_eq!(follow(&[], |_| Ok("never")).0.expect_err("no router").code, ErrorCode::InvalidInput);
    }
}
