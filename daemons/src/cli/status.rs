//! `uni-wizard status [--json] [--watch [--interval SECS]]`: one screen of the whole fleet.
//!
//! It is `health`, `telemetry --status`, `approve --list` and `triage --status` asked at once,
//! as the node whose config `--config` names (its house, its token, its TLS), plus each
//! house's HTTP port (`houses.<h>.http_endpoint`; this node's own house falls back to its
//! `listen.http`): `/health` (open) and `/metrics` and `/triage/status` (with this node's
//! `http.metrics_token_file`, as Prometheus would send it).
//!
//! Every source is asked concurrently, each within a bounded time (gRPC probes 2 s, HTTP 2 s,
//! Timmy's approvals 3 s, telemetry 6 s, etcd 5 s), so one screen always renders: a source
//! that fails shows as unavailable with its reason, never as a hang.
//!
//! # Figures
//!
//! - **houses**: `uni-wizard health`'s probe (gRPC health, then `Worker/Capacity`): up or down,
//!   the probe's latency, the worker's load; with the HTTP port, its `/health` status
//!   (`serving`, `degraded` and which component, `draining`) and roles.
//! - **leader**: read from etcd itself, as `health` does: house, node, term, lease age; with
//!   no leader, why (`no router leads`, or why etcd could not be read). Without `etcd:` a
//!   single router leads by itself and nothing is elected.
//! - **tasks**: in flight and queued are the sum of the workers' `Capacity`; per second is the
//!   rate of the routers' `uw_router_tasks_total` (tasks finished, any state) between two
//!   samples: one-shot takes the first sample, waits 1 s, then takes the second with
//!   everything else (so one-shot takes about a second); `--watch` rates between refreshes.
//!   A counter that went down (a restarted router) counts from zero.
//! - **approvals**: the requests waiting at Timmy's Sovereign service (Timmy alone may list
//!   them: run status with Timmy's config to see them; other houses see the refusal).
//! - **telemetry**: per node, Timmy's view (stream connected, lag of the newest burst) and the
//!   node's outbox (buffered, dropped) from its `/health`, or from disk for this node.
//! - **triage**: the triage house's `/triage/status` (queue, tasks pending, issues triaged,
//!   refusals), else this node's own `triage.db`.
//!
//! # Output and exit
//!
//! One-shot exits 0 when every house is up and, with `etcd:`, a router leads; 4 otherwise
//! (as `health`); a source that is unavailable (approvals as a house other than Timmy, a
//! house without `http_endpoint`) does not change it. `--json` prints one object (fields in
//! docs/OPERATIONS.md, "The status screen"); `--watch --json` prints one such object per line
//! per refresh. `--watch` on a terminal redraws in place: cursor home, each line cleared to its
//! end, the rest of the screen cleared below the last line (never a whole-screen clear, which
//! terminals and tmux scroll into history), line wrap and the cursor off while it runs and
//! restored on Ctrl-C, SIGTERM or SIGHUP (exit 0). Not on a terminal, each refresh is printed
//! after the last, separated by a blank line.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use tokio::time::Instant;
use uni_wizard::{Error, ErrorCode, House};

use super::remote::{self, Led};
use crate::config::DaemonConfig;
use crate::peers::Peers;

/// Flags of `uni-wizard status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A node's daemon config: the fleet is asked as its house with its token and TLS.
    #[arg(long, env = "UNI_WIZARD_DAEMON_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Print machine-readable JSON (with --watch: one object per line per refresh).
    #[arg(long)]
    pub json: bool,
    /// Refresh until Ctrl-C, redrawing in place on a terminal.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: seconds between refreshes.
    #[arg(long, value_name = "SECS", default_value_t = 2, requires = "watch",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
}

/// How long one gRPC probe, one HTTP request, Timmy's list, and the telemetry view may take.
const PROBE: Duration = Duration::from_secs(2);
const HTTP: Duration = Duration::from_secs(2);
const APPROVALS: Duration = Duration::from_secs(3);
const TELEMETRY: Duration = Duration::from_secs(6);
/// One-shot: between the two samples of the routers' counters.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// What status asks with: the node's config, its peers, an HTTP client, the scrape token.
struct Asker {
    config: DaemonConfig,
    peers: Peers,
    http: reqwest::Client,
    metrics_token: Option<String>,
}

/// One sample of the routers' `uw_router_tasks_total`, by house (houses whose `/metrics`
/// answered; a house that never finished a task has no series and counts 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    at: Instant,
    finished: BTreeMap<House, f64>,
}

/// What one house's HTTP port said.
#[derive(Debug, Clone, Default)]
struct NodeHttp {
    health: Option<Result<Value, String>>,
    metrics: Option<Result<String, String>>,
    triage: Option<Result<Value, String>>,
}

/// Runs `uni-wizard status`; its exit code.
///
/// # Errors
/// E4001 for an unusable config (exit 64).
pub async fn run(a: &StatusArgs) -> Result<i32, Error> {
    let asker = Asker::new(DaemonConfig::load(&a.config)?)?;
    if !a.watch {
        let prev = asker.counters().await;
        tokio::time::sleep_until(prev.at + RATE_WINDOW).await;
        let (v, _) = asker.gather(&prev).await;
        let mut out = std::io::stdout().lock();
        let _ = if a.json { writeln!(out, "{v}") } else { writeln!(out, "{}", render(&v, None).join("\n")) };
        return Ok(if v["ok"] == true { 0 } else { 4 });
    }
    let redraw = !a.json && std::io::stdout().is_terminal();
    let interval = Duration::from_secs(a.interval);
    // Installed first, kept for the whole run: a signal that comes while the fleet is being
    // asked is held until it is waited for, and ends the run at once.
    let mut stop = Stop::install();
    if redraw {
        print_flush(WATCH_START);
    }
    watch(&asker, a, interval, redraw, &mut stop).await;
    if redraw {
        print_flush(WATCH_END);
    }
    Ok(0)
}

/// The `--watch` loop, until a signal: one refresh every `interval` (at least a second, at
/// most an hour: clap checks), each ended early by a signal.
async fn watch(asker: &Asker, a: &StatusArgs, interval: Duration, redraw: bool, stop: &mut Stop) {
    let mut prev = tokio::select! {
        c = asker.counters() => c,
        () = stop.wait() => return,
    };
    tokio::select! {
        () = tokio::time::sleep_until(prev.at + RATE_WINDOW.min(interval)) => {}
        () = stop.wait() => return,
    }
    let mut first = true;
    loop {
        let started = Instant::now();
        let (v, now) = tokio::select! {
            g = asker.gather(&prev) => g,
            () = stop.wait() => return,
        };
        prev = now;
        if a.json {
            print_flush(&format!("{v}\n"));
        } else if redraw {
            print_flush(&frame(&render(&v, Some(a.interval))));
        } else {
            print_flush(&format!("{}{}\n", if first { "" } else { "\n" }, render(&v, Some(a.interval)).join("\n")));
        }
        first = false;
        tokio::select! {
            () = tokio::time::sleep_until(started + interval) => {}
            () = stop.wait() => return,
        }
    }
}

/// Entering `--watch` on a terminal: line wrap off (a long line is clipped, never wrapped
/// into a scroll), cursor hidden.
const WATCH_START: &str = "\x1b[?7l\x1b[?25l";
/// Leaving it: wrap and cursor back, the prompt on a fresh line.
const WATCH_END: &str = "\x1b[?7h\x1b[?25h\n";

/// One redraw: cursor home, each line followed by clear-to-end-of-line, then clear below. No
/// newline after the last line, so a frame as tall as the screen does not scroll it; and no
/// clear of the whole screen from its top (ED 2, or ED 0 at home), which tmux's
/// `scroll-on-clear` and many terminals push into the scrollback.
pub fn frame(lines: &[String]) -> String {
    let mut s = String::from("\x1b[H");
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(l);
        s.push_str("\x1b[K");
    }
    s.push_str("\x1b[J");
    s
}

fn print_flush(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// Ctrl-C (SIGINT), SIGTERM or SIGHUP (a closed terminal, `tmux kill-session`), each caught
/// from [`Stop::install`] on and held until [`Stop::wait`] sees it.
struct Stop {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Stop {
    fn install() -> Stop {
        use tokio::signal::unix::{SignalKind, signal};
        Stop {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    async fn wait(&mut self) {
        async fn on(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = on(&mut self.int) => {}
            () = on(&mut self.term) => {}
            () = on(&mut self.hup) => {}
        }
    }
}

impl Asker {
    fn new(config: DaemonConfig) -> Result<Asker, Error> {
        let peers = Peers::new(crate::live::Live::new(config.clone()))?;
        let http = reqwest::Client::builder()
            .timeout(HTTP)
            .connect_timeout(HTTP)
            .no_proxy()
            .build()
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("cannot build the HTTP client: {e}")))?;
        // Unreadable or unset: the guarded routes are asked without it and say 401.
        let metrics_token = config
            .http
            .metrics_token_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        Ok(Asker { config, peers, http, metrics_token })
    }

    /// The HTTP address of `house`: its `http_endpoint`, else for this node's own house its
    /// `listen.http` (an unspecified address asked on loopback).
    fn http_addr(&self, house: House) -> Option<String> {
        if let Some(ep) = self.config.houses.get(&house).and_then(|e| e.http_endpoint.clone()) {
            return Some(ep);
        }
        (house == self.config.house).then(|| {
            let mut addr = self.config.listen.http;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            addr.to_string()
        })
    }

    async fn get(&self, addr: &str, path: &str, guarded: bool) -> Result<String, String> {
        let mut req = self.http.get(format!("http://{addr}{path}"));
        if guarded && let Some(t) = &self.metrics_token {
            req = req.bearer_auth(t);
        }
        let reply = req.send().await.map_err(|e| format!("GET {path}: {}", reqwest_reason(&e)))?;
        let status = reply.status();
        let body = reply.text().await.map_err(|e| format!("GET {path}: {}", reqwest_reason(&e)))?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(format!(
                "GET {path}: 401 (this node's http.metrics_token_file {} the house's scrape token)",
                if self.metrics_token.is_some() { "is not" } else { "is unset, so it cannot send" }
            ));
        }
        // `/health` answers 503 with its JSON while draining: still an answer.
        let draining = path == "/health" && status == reqwest::StatusCode::SERVICE_UNAVAILABLE;
        if !(status.is_success() || draining) {
            return Err(format!("GET {path}: HTTP {}", status.as_u16()));
        }
        Ok(body)
    }

    /// One house's `/health`, `/metrics`, and `/triage/status` when it runs triage.
    async fn node_http(&self, house: House, with_triage: bool) -> NodeHttp {
        let Some(addr) = self.http_addr(house) else { return NodeHttp::default() };
        let (health, metrics) = tokio::join!(self.get(&addr, "/health", false), self.get(&addr, "/metrics", true));
        let health = health.and_then(|b| serde_json::from_str::<Value>(&b).map_err(|e| format!("/health: {e}")));
        let runs_triage = health.as_ref().is_ok_and(|h| roles_of(h).contains(&"triage"));
        let triage = if with_triage && runs_triage {
            let t = self.get(&addr, "/triage/status", true).await;
            Some(t.and_then(|b| serde_json::from_str::<Value>(&b).map_err(|e| format!("/triage/status: {e}"))))
        } else {
            None
        };
        NodeHttp { health: Some(health), metrics: Some(metrics), triage }
    }

    /// Every house's HTTP port at once.
    async fn all_http(&self, with_triage: bool) -> BTreeMap<House, NodeHttp> {
        let asks = self.config.houses.keys().map(|&h| async move { (h, self.node_http(h, with_triage).await) });
        futures::future::join_all(asks).await.into_iter().collect()
    }

    /// A sample of the routers' counters alone (one-shot's first sample).
    async fn counters(&self) -> Counters {
        let http = self.all_http(false).await;
        counters_of(&http, Instant::now())
    }

    /// Every source at once: the status document, and the counters sampled for the next rate.
    async fn gather(&self, prev: &Counters) -> (Value, Counters) {
        let approvals = async {
            let ask = async { remote::pending_at(self.peers.sovereign()?).await };
            match tokio::time::timeout(APPROVALS, ask).await {
                Ok(r) => r,
                Err(_) => Err(Error::new(ErrorCode::Timeout, "Timmy's Sovereign service did not answer within 3 s")),
            }
        };
        let telemetry = tokio::time::timeout(TELEMETRY, super::telemetry::status_of(&self.config));
        let (houses, led, http, approvals, telemetry) = tokio::join!(
            remote::probe_houses(&self.config, &self.peers, PROBE),
            remote::leadership(&self.config),
            self.all_http(true),
            approvals,
            telemetry,
        );
        let now = counters_of(&http, Instant::now());
        let telemetry = telemetry.unwrap_or_else(
            |_| json!({ "ok": false, "sink": { "error": "E3001", "message": "no answer within 6 s" }, "nodes": [] }),
        );
        let home = self.config.home();
        let local_triage = (!http.values().any(|n| n.triage.is_some()) && home.join("triage.db").exists())
            .then(|| super::triage::status_at(&home, 0));
        let v = document(&Sources {
            me: (self.config.house, self.config.node_name()),
            houses,
            led,
            http: &http,
            approvals,
            telemetry,
            local_triage,
            rate: rate(prev, &now),
            at_ms: crate::telemetry::now_ms(),
        });
        (v, now)
    }
}

/// A reqwest error in a few words: its root cause (`Connection refused (os error 111)`).
fn reqwest_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", HTTP.as_secs());
    }
    let mut root: &dyn std::error::Error = e;
    while let Some(c) = root.source() {
        root = c;
    }
    if e.is_connect() { format!("cannot connect: {root}") } else { root.to_string() }
}

fn roles_of(health: &Value) -> Vec<&str> {
    health["roles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

/// The counters of every house whose `/metrics` answered.
fn counters_of(http: &BTreeMap<House, NodeHttp>, at: Instant) -> Counters {
    let finished = http
        .iter()
        .filter_map(|(h, n)| match &n.metrics {
            Some(Ok(text)) => Some((*h, metric_sum(text, "uw_router_tasks_total").unwrap_or(0.0))),
            _ => None,
        })
        .collect();
    Counters { at, finished }
}

/// The sum of every sample of the metric `name` in a Prometheus text page; `None` without one.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        // The value follows the labels (which may hold spaces inside quotes): the last field
        // but an optional timestamp; Prometheus' own exporter writes none.
        let after_labels = if rest.starts_with('{') { rest.rsplit_once('}').map_or("", |(_, v)| v) } else { rest };
        if let Some(v) = after_labels.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

/// Tasks finished per second between two samples, over the houses in both, and the window
/// in seconds; `None` when no house is in both or no time passed. A counter lower than
/// before (the router restarted) counts from zero, as Prometheus' `rate` does.
pub fn rate(prev: &Counters, now: &Counters) -> Option<(f64, f64)> {
    let window = now.at.saturating_duration_since(prev.at).as_secs_f64();
    let mut any = false;
    let mut delta = 0.0;
    for (h, n) in &now.finished {
        if let Some(p) = prev.finished.get(h) {
            any = true;
            delta += if n >= p { n - p } else { *n };
        }
    }
    (any && window > 0.0).then_some((delta / window, window))
}

/// Everything one refresh gathered, before it is put into the document.
struct Sources<'a> {
    me: (House, String),
    houses: Vec<Value>,
    led: Led,
    http: &'a BTreeMap<House, NodeHttp>,
    approvals: Result<Value, Error>,
    telemetry: Value,
    local_triage: Option<Result<Value, Error>>,
    rate: Option<(f64, f64)>,
    at_ms: i64,
}

fn unavailable(reason: impl Into<String>) -> Value {
    json!({ "available": false, "reason": reason.into() })
}

fn error_reason(e: &Error) -> String {
    format!("{} {}", e.code, e.message)
}

/// The status document (see docs/OPERATIONS.md, "The status screen", for every field).
fn document(s: &Sources<'_>) -> Value {
    let mut all_up = true;
    let mut houses = Vec::new();
    for row in &s.houses {
        let mut row = row.clone();
        all_up &= row["state"] == "up";
        let house: Option<House> = row["house"].as_str().and_then(|h| h.parse().ok());
        let http = house.and_then(|h| s.http.get(&h));
        row["http"] = match http.and_then(|n| n.health.as_ref()) {
            None => unavailable("no http_endpoint for this house in houses:"),
            Some(Err(why)) => unavailable(why.clone()),
            Some(Ok(h)) => json!({
                "available": true,
                "status": h["status"],
                "roles": h["roles"],
                "degraded": h.get("degraded").cloned().unwrap_or_else(|| json!([])),
            }),
        };
        houses.push(row);
    }

    let leadership = match &s.led {
        Led::NoEtcd => json!({ "available": true, "etcd": false, "leader_house": null,
            "reason": "no etcd: configured: a single router, nothing elected" }),
        Led::Leader(l) => {
            let mut l = l.clone();
            l["available"] = json!(true);
            l["etcd"] = json!(true);
            l
        }
        Led::NoLeader(why) => {
            all_up = false;
            json!({ "available": true, "etcd": true, "leader_house": null, "reason": why })
        }
        Led::Unreadable(why) => {
            all_up = false;
            json!({ "available": false, "etcd": true, "leader_house": null, "reason": why })
        }
    };

    let up = s.houses.iter().filter(|r| r["state"] == "up");
    let (in_flight, queued) =
        up.fold((0, 0), |(f, q), r| (f + r["in_flight"].as_u64().unwrap_or(0), q + r["queued"].as_u64().unwrap_or(0)));
    let routers: Vec<House> = s
        .http
        .iter()
        .filter(|(_, n)| matches!(&n.health, Some(Ok(h)) if roles_of(h).contains(&"router")))
        .map(|(h, _)| *h)
        .collect();
    let mut finished = serde_json::Map::new();
    let mut counters_unavailable = serde_json::Map::new();
    for (h, n) in s.http {
        let is_router = routers.contains(h);
        match &n.metrics {
            Some(Ok(text)) if is_router => {
                finished.insert(h.to_string(), json!(metric_sum(text, "uw_router_tasks_total").unwrap_or(0.0)));
            }
            // A house whose /health failed too is shown down or unavailable in its own row.
            Some(Err(why)) if is_router => {
                counters_unavailable.insert(h.to_string(), json!(why));
            }
            _ => {}
        }
    }
    let tasks = json!({
        "in_flight": in_flight,
        "queued": queued,
        "per_second": s.rate.map(|(r, _)| (r * 100.0).round() / 100.0),
        "window_s": s.rate.map(|(_, w)| (w * 100.0).round() / 100.0),
        "finished_total": finished.values().filter_map(Value::as_f64).sum::<f64>(),
        "finished_by_router": finished,
        "counters_unavailable": counters_unavailable,
    });

    let approvals = match &s.approvals {
        Ok(v) => {
            let list = v["pending"].as_array().cloned().unwrap_or_default();
            let oldest = list.iter().filter_map(|p| p["requested_at_ms"].as_i64()).min();
            json!({
                "available": true,
                "waiting": list.len(),
                "oldest_age_s": oldest.map(|t| (s.at_ms - t).max(0) / 1000),
                "pending": list,
            })
        }
        Err(e) => unavailable(error_reason(e)),
    };

    let telemetry = telemetry_section(&s.telemetry, s.http);
    let triage = triage_section(s.http, s.local_triage.as_ref());
    json!({
        "ok": all_up,
        "at_ms": s.at_ms,
        "asked_as": { "house": s.me.0, "node": s.me.1 },
        "houses": houses,
        "leadership": leadership,
        "tasks": tasks,
        "approvals": approvals,
        "telemetry": telemetry,
        "triage": triage,
    })
}

/// Timmy's per-node rows, with buffered and dropped from each node's `/health` where the row
/// does not have them from disk, and a row for a node Timmy has never seen.
fn telemetry_section(t: &Value, http: &BTreeMap<House, NodeHttp>) -> Value {
    let mut nodes: Vec<Value> = t["nodes"].as_array().cloned().unwrap_or_default();
    for n in http.values() {
        let Some(Ok(h)) = &n.health else { continue };
        let Some(stats) = h.get("telemetry").filter(|s| s.is_object()) else { continue };
        let name = h["node"].as_str().unwrap_or("");
        let i = nodes.iter().position(|r| r["node"] == name).unwrap_or_else(|| {
            nodes.push(json!({ "node": name, "connected": null, "last_ack": null, "lag_ms": null }));
            nodes.len() - 1
        });
        let r = &mut nodes[i];
        // Timmy lists a node once it sent something; until then the node's own gauge says.
        if r["connected"] != true
            && let Some(Ok(text)) = &n.metrics
            && let Some(c) = metric_sum(text, "uw_telemetry_connected")
        {
            r["connected"] = json!(c >= 1.0);
        }
        for (k, from) in [("buffered", "buffered"), ("dropped", "dropped"), ("max_buffered", "max_buffered")] {
            if r[k].is_null() {
                r[k] = stats[from].clone();
            }
        }
        if r["write_error"].is_null() {
            r["write_error"] = stats["write_error"]["reason"].clone();
        }
    }
    let nodes: Vec<Value> = nodes
        .into_iter()
        .map(|r| {
            json!({
                "node": r["node"], "connected": r["connected"].as_bool(), "lag_ms": r["lag_ms"],
                "last_ack": r["last_ack"], "buffered": r["buffered"], "dropped": r["dropped"],
                "write_error": r["write_error"],
            })
        })
        .collect();
    let sink = if t["ok"] == true {
        json!({ "available": true })
    } else {
        let e = &t["sink"];
        unavailable(format!("{} {}", e["error"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")))
    };
    json!({ "sink": sink, "nodes": nodes })
}

/// The triage house's `/triage/status`, else this node's `triage.db`.
fn triage_section(http: &BTreeMap<House, NodeHttp>, local: Option<&Result<Value, Error>>) -> Value {
    let summary = |v: &Value, source: String| {
        json!({
            "available": true, "source": source,
            "queued": v["queued"], "tasks_pending": v["tasks_pending"],
            "issues_triaged": v["issues_triaged"], "refused": v["refused"],
        })
    };
    let mut why = Vec::new();
    for (h, n) in http {
        match &n.triage {
            Some(Ok(v)) => return summary(v, format!("{h} /triage/status")),
            Some(Err(e)) => why.push(format!("{h}: {e}")),
            None => {}
        }
    }
    match local {
        Some(Ok(v)) => return summary(v, "this node's triage.db".into()),
        Some(Err(e)) => why.push(format!("this node's triage.db: {}", error_reason(e))),
        None => {}
    }
    if why.is_empty() {
        why.push("no house whose /health answered runs the triage role".into());
    }
    unavailable(why.join("; "))
}

/// The screen: a few lines of at most about 100 columns (a longer one is clipped by the
/// terminal in `--watch`). `every` is the refresh period under `--watch`.
pub fn render(v: &Value, every: Option<u64>) -> Vec<String> {
    let mut out = Vec::new();
    let s = |x: &Value| x.as_str().unwrap_or("").to_owned();
    let at = v["at_ms"].as_i64().unwrap_or(0) / 1000;
    let refresh = every.map_or_else(String::new, |e| format!("  every {e}s (Ctrl-C quits)"));
    out.push(format!(
        "uni-wizard status  {:02}:{:02}:{:02} UTC  as {} ({}){refresh}",
        at / 3600 % 24,
        at / 60 % 60,
        at % 60,
        s(&v["asked_as"]["house"]),
        s(&v["asked_as"]["node"])
    ));

    let l = &v["leadership"];
    out.push(if let Some(house) = l["leader_house"].as_str() {
        let secs = |k: &str| l[k].as_i64().map_or_else(|| "?".to_owned(), |n| n.to_string());
        format!(
            "leader    {house} ({}) at {}, term {}, lease renewed {} s ago ({} of {} s left)",
            s(&l["leader_node"]),
            s(&l["leader_endpoint"]),
            l["term"],
            secs("lease_age_s"),
            secs("lease_left_s"),
            secs("lease_granted_s")
        )
    } else if l["etcd"] == false {
        "leader    - (no etcd: configured; a single router needs no election)".to_owned()
    } else {
        format!("leader    NONE: {}; routers refuse new tasks (E3014) until one leads", s(&l["reason"]))
    });

    let t = &v["tasks"];
    let rate = match (t["per_second"].as_f64(), t["window_s"].as_f64()) {
        (Some(r), Some(w)) => format!("{r:.2}/s finished (over {w:.1} s)"),
        _ => "-/s finished (no router's /metrics in both samples)".to_owned(),
    };
    out.push(format!(
        "tasks     {} in flight, {} queued; {rate}, {:.0} finished since the routers started",
        t["in_flight"],
        t["queued"],
        t["finished_total"].as_f64().unwrap_or(0.0)
    ));
    if let Some(m) = t["counters_unavailable"].as_object().filter(|m| !m.is_empty()) {
        let list: Vec<String> = m.iter().map(|(h, why)| format!("{h}: {}", why.as_str().unwrap_or(""))).collect();
        out.push(format!("          counters unavailable: {}", list.join("; ")));
    }

    let a = &v["approvals"];
    out.push(if a["available"] == true {
        match a["oldest_age_s"].as_i64() {
            Some(age) => format!("approvals {} waiting at Timmy, oldest {age} s", a["waiting"]),
            None => "approvals none waiting at Timmy".to_owned(),
        }
    } else {
        format!("approvals unavailable: {}", s(&a["reason"]))
    });

    let tr = &v["triage"];
    out.push(if tr["available"] == true {
        format!(
            "triage    queue {}, tasks pending {}, {} issues triaged, {} refused  ({})",
            tr["queued"],
            tr["tasks_pending"],
            tr["issues_triaged"],
            tr["refused"],
            s(&tr["source"])
        )
    } else {
        format!("triage    unavailable: {}", s(&tr["reason"]))
    });

    out.push(String::new());
    out.push(format!(
        "{:<8} {:<5} {:>8}  {:<14} {:>9} {:>6} {:>4}  {}",
        "HOUSE", "STATE", "LATENCY", "NODE", "IN FLIGHT", "QUEUED", "MAX", "HTTP /health"
    ));
    for r in v["houses"].as_array().into_iter().flatten() {
        let http = &r["http"];
        let http = if http["available"] == true {
            let degraded: Vec<String> = http["degraded"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| d["component"].as_str().unwrap_or("").to_owned())
                .collect();
            if degraded.is_empty() {
                s(&http["status"])
            } else {
                format!("{} ({})", s(&http["status"]), degraded.join(", "))
            }
        } else {
            format!("unavailable: {}", s(&http["reason"]))
        };
        if r["state"] == "up" {
            let n = |k: &str| r[k].as_u64().unwrap_or(0);
            out.push(format!(
                "{:<8} {:<5} {:>6.1}ms  {:<14} {:>9} {:>6} {:>4}  {http}",
                s(&r["house"]),
                "up",
                r["latency_ms"].as_f64().unwrap_or(0.0),
                s(&r["node"]),
                n("in_flight"),
                n("queued"),
                n("max_concurrency")
            ));
        } else {
            out.push(format!("{:<8} {:<5} {:>8}  {}", s(&r["house"]), "DOWN", "-", s(&r["error"])));
        }
    }

    out.push(String::new());
    let tel = &v["telemetry"];
    if tel["sink"]["available"] != true {
        out.push(format!("telemetry sink unavailable: {}", s(&tel["sink"]["reason"])));
    }
    out.push(format!("{:<20} {:<9} {:>8} {:>9} {:>8}", "TELEMETRY NODE", "CONNECTED", "LAG", "BUFFERED", "DROPPED"));
    let shown = |x: &Value| if x.is_null() { "-".to_owned() } else { x.to_string() };
    for r in tel["nodes"].as_array().into_iter().flatten() {
        let lag = if r["lag_ms"].is_null() { "-".to_owned() } else { format!("{}ms", r["lag_ms"]) };
        let mut line = format!(
            "{:<20} {:<9} {:>8} {:>9} {:>8}",
            s(&r["node"]),
            match r["connected"].as_bool() {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            },
            lag,
            shown(&r["buffered"]),
            shown(&r["dropped"])
        );
        if let Some(why) = r["write_error"].as_str() {
            line.push_str(&format!("  OUTBOX CANNOT WRITE ({why})"));
        }
        out.push(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, finished: &[(House, f64)]) -> Counters {
        Counters { at, finished: finished.iter().copied().collect() }
    }

    /// Proves the counter sum adds every labelled sample of the one metric, ignores metrics
    /// whose name only starts the same, and is `None` when the metric is absent.
    #[test]
    fn metric_sums_add_every_series_of_the_name() {
        let page = "# HELP uw_router_tasks_total Finished router tasks\n\
                    # TYPE uw_router_tasks_total counter\n\
                    uw_router_tasks_total{state=\"succeeded\",house=\"ezra\"} 3\n\
                    uw_router_tasks_total{state=\"failed\",house=\"a b\"} 2\n\
                    uw_router_tasks_total_other 100\n\
                    uw_triage_queue_issues 4\n";
        assert_eq!(metric_sum(page, "uw_router_tasks_total"), Some(5.0));
        assert_eq!(metric_sum(page, "uw_triage_queue_issues"), Some(4.0));
        assert_eq!(metric_sum(page, "uw_worker_calls_total"), None);
    }

    /// Proves the rate is the counters' growth over the window, a router whose counter went
    /// down (restarted) counts from zero, and houses not in both samples are left out.
    #[tokio::test(start_paused = true)]
    async fn the_rate_is_growth_over_the_window_and_survives_restarts() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        let prev = sample(t0, &[(House::Timmy, 10.0), (House::Allegro, 50.0)]);
        let now = sample(t1, &[(House::Timmy, 16.0), (House::Allegro, 4.0), (House::Ezra, 9.0)]);
        assert_eq!(rate(&prev, &now), Some((5.0, 2.0)));
        assert_eq!(rate(&sample(t0, &[]), &now), None, "no house in both samples");
        assert_eq!(rate(&now, &now), None, "no time passed");
    }

    /// Proves a node Timmy has not listed gets a row from its own `/health` (buffered, dropped,
    /// a write error) with `connected` from its own gauge, and a node Timmy lists keeps Timmy's
    /// view with its buffered filled in.
    #[test]
    fn telemetry_rows_join_timmys_view_and_each_nodes_own() {
        let health = |node: &str, buffered: u64| {
            json!({"node": node, "roles": ["worker", "telemetry"],
                   "telemetry": {"buffered": buffered, "dropped": 1, "max_buffered": 9, "write_error": {"reason": "disk full"}}})
        };
        let http: BTreeMap<House, NodeHttp> = [
            (
                House::Ezra,
                NodeHttp {
                    health: Some(Ok(health("ezra-node", 3))),
                    metrics: Some(Ok("uw_telemetry_connected 1\n".into())),
                    triage: None,
                },
            ),
            (
                House::Bezalel,
                NodeHttp {
                    health: Some(Ok(health("bezalel-node", 7))),
                    metrics: Some(Ok("uw_telemetry_connected 0\n".into())),
                    triage: None,
                },
            ),
        ]
        .into_iter()
        .collect();
        let sink = json!({"ok": true, "nodes": [
            {"node": "ezra-node", "connected": true, "lag_ms": 12, "last_ack": 5, "buffered": null, "dropped": null}]});
        let t = telemetry_section(&sink, &http);
        let row = |n: &str| t["nodes"].as_array().and_then(|a| a.iter().find(|r| r["node"] == n)).cloned();
        let ezra = row("ezra-node").expect("ezra");
        assert_eq!(
            (ezra["connected"].clone(), ezra["lag_ms"].clone(), ezra["buffered"].clone()),
            (json!(true), json!(12), json!(3))
        );
        let bezalel = row("bezalel-node").expect("bezalel from its /health");
        assert_eq!((bezalel["connected"].clone(), bezalel["buffered"].clone()), (json!(false), json!(7)));
        assert_eq!(bezalel["write_error"], "disk full");
        let down =
            telemetry_section(&json!({"ok": false, "sink": {"error": "E3001", "message": "late"}}), &BTreeMap::new());
        assert_eq!(down["sink"], json!({"available": false, "reason": "E3001 late"}));
    }

    /// Proves a redraw goes home, clears each line's rest and what is below the last line,
    /// and never clears the whole screen or ends in a newline (either would scroll).
    #[test]
    fn a_frame_redraws_in_place_without_scrolling() {
        let f = frame(&["one".into(), "two".into()]);
        assert_eq!(f, "\x1b[Hone\x1b[K\ntwo\x1b[K\x1b[J");
        assert!(!f.contains("\x1b[2J") && !f.contains("\x1b[H\x1b[J") && !f.ends_with('\n'));
    }

    /// Proves the screen says NONE and why when no router leads, marks a down house DOWN with
    /// its reason, and shows an unavailable source with its reason.
    #[test]
    fn the_screen_shows_no_leader_down_houses_and_unavailable_sources() {
        let v = json!({
            "at_ms": 3_723_000, "asked_as": {"house": "ezra", "node": "ezra-node"},
            "leadership": {"available": false, "etcd": true, "leader_house": null, "reason": "etcd: connection refused"},
            "tasks": {"in_flight": 1, "queued": 0, "per_second": null, "window_s": null, "finished_total": 0.0},
            "approvals": {"available": false, "reason": "E5003 only Timmy"},
            "triage": {"available": false, "reason": "no triage"},
            "houses": [{"house": "bezalel", "state": "down", "error": "no answer within 2000 ms"}],
            "telemetry": {"sink": {"available": true}, "nodes": []},
        });
        let text = render(&v, Some(2)).join("\n");
        assert!(text.starts_with("uni-wizard status  01:02:03 UTC  as ezra (ezra-node)  every 2s"), "{text}");
        assert!(text.contains("leader    NONE: etcd: connection refused"), "{text}");
        assert!(text.contains("bezalel  DOWN") && text.contains("no answer within 2000 ms"), "{text}");
        assert!(text.contains("approvals unavailable: E5003 only Timmy"), "{text}");
    }
}
