//! `uni-wizard telemetry --status` and `uni-wizard hermes-hook`.
//!
//! The status joins two views: Timmy's sink (per node: stream open, last seq acknowledged,
//! lag of the newest burst) asked through `Telemetry/Query` as this node's house, and this
//! node's own outbox, read-only from disk (buffered, dropped, Hermes cursor, last ack time,
//! how often Hermes' state.db was found replaced and when).
//! Buffered, dropped and the cursor are known only on the node itself, so other nodes' rows
//! show them as unknown. Whether the outbox's writes fail is known only to the daemon that
//! writes: the local row takes it from that daemon's `/health` (`write_error`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use uni_wizard::{Error, ErrorCode, House};
use uni_wizard_proto::v1::{TelemetryQuery, telemetry_client::TelemetryClient};

use crate::config::DaemonConfig;
use crate::telemetry::{self, hook, outbox};
use crate::wire;

/// Flags of `uni-wizard telemetry`.
#[derive(Debug, Args)]
pub struct TelemetryArgs {
    /// Show the stream status of every node (the only action so far).
    #[arg(long)]
    pub status: bool,
    /// This node's daemon config: Timmy is asked as its house, its outbox is read.
    #[arg(long, env = "UNI_WIZARD_DAEMON_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `uni-wizard hermes-hook`.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// This node's daemon config (house, `telemetry.hook_deny`, the outbox).
    #[arg(long, env = "UNI_WIZARD_DAEMON_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

/// The status document: `{ok, sink, nodes: [...]}`; `ok` is whether Timmy answered.
///
/// # Errors
/// E4001 for an invalid config.
pub async fn status(a: &TelemetryArgs) -> Result<Value, Error> {
    Ok(status_of(&DaemonConfig::load(&a.config)?).await)
}

/// The status document of [`status`] for the node `config` describes (`uni-wizard status`
/// shares it): Timmy asked within 3 s, this node's outbox read from disk, its daemon's
/// `/health` within 2 s.
pub async fn status_of(config: &DaemonConfig) -> Value {
    let me = config.node_name();
    let path = telemetry::outbox_path(config);
    let local = if path.exists() { outbox::read_stats(&path, &me, config.telemetry.max_buffered).ok() } else { None };
    let sink = query_sink(config).await;
    let mut rows: Vec<Value> = Vec::new();
    let sink_nodes = sink.as_ref().map(|r| r.nodes.clone()).unwrap_or_default();
    for n in &sink_nodes {
        rows.push(json!({
            "node": n.node, "connected": n.connected, "last_ack": n.last_seq, "lag_ms": n.lag_ms,
            "buffered": null, "dropped": null, "hermes_cursor": null,
        }));
    }
    if let Some(s) = &local {
        let idx = rows.iter().position(|r| r["node"] == me.as_str()).unwrap_or_else(|| {
            rows.push(json!({ "node": me, "connected": false, "last_ack": 0, "lag_ms": null }));
            rows.len() - 1
        });
        let r = &mut rows[idx];
        r["local"] = json!(true);
        r["buffered"] = json!(s.buffered);
        r["max_buffered"] = json!(s.max_buffered);
        r["dropped"] = json!(s.dropped);
        r["hermes_cursor"] = json!(s.hermes_message_id);
        r["hermes_replaced"] = json!(s.hermes_replaced);
        r["hermes_replaced_at_ms"] = json!(s.hermes_replaced_at_ms);
        r["acked_through"] = json!(s.acked_through);
        r["last_ack_ms"] = json!(s.acked_at_ms);
        r["first_seq"] = json!(s.first_seq);
        r["next_seq"] = json!(s.next_seq);
        r["oldest_unacked_age_ms"] =
            json!(if s.oldest_ms > 0 { (telemetry::now_ms() - s.oldest_ms).max(0) } else { 0 });
        // Only the daemon that writes knows whether its writes fail: its `/health` says.
        r["write_error"] = local_write_error(config).await;
    }
    let (ok, sink_state) = match &sink {
        Ok(_) => (true, json!("reachable")),
        Err(e) => (false, json!({ "error": e.code.as_str(), "message": e.message })),
    };
    json!({ "ok": ok, "node": me, "sink": sink_state, "nodes": rows })
}

/// The local daemon's outbox write error from its `/health` (`null` when it writes, or when
/// it does not answer within 2 s).
async fn local_write_error(config: &DaemonConfig) -> Value {
    let mut addr = config.listen.http;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(2)).no_proxy().build() else {
        return Value::Null;
    };
    let Ok(reply) = client.get(format!("http://{addr}/health")).send().await else { return Value::Null };
    match reply.json::<Value>().await {
        Ok(h) => h["telemetry"]["write_error"]["reason"].clone(),
        Err(_) => Value::Null,
    }
}

async fn query_sink(config: &DaemonConfig) -> Result<uni_wizard_proto::v1::TelemetryQueryResponse, Error> {
    let peers = crate::peers::Peers::new(crate::live::Live::new(config.clone()))?;
    let mut client = TelemetryClient::new(peers.authed(House::Timmy)?);
    // No events wanted: a since_seq above every seq returns the node table only.
    let q = TelemetryQuery { node: String::new(), since_seq: u64::MAX, limit: 1 };
    match tokio::time::timeout(Duration::from_secs(3), client.query(q)).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(wire::error_from_status(&s)),
        Err(_) => Err(Error::new(ErrorCode::Timeout, "timmy's sink did not answer within 3 s")),
    }
}

/// Prints the status.
pub fn print_status(v: &Value, as_json: bool) {
    let mut out = std::io::stdout().lock();
    if as_json {
        let _ = writeln!(out, "{v}");
        return;
    }
    if v["ok"] != true {
        let _ = writeln!(out, "sink: UNREACHABLE ({})", v["sink"]["message"].as_str().unwrap_or(""));
    }
    let _ = writeln!(
        out,
        "{:<20} {:<9} {:>10} {:>8} {:>9} {:>8} {:>13}",
        "node", "connected", "last ack", "lag", "buffered", "dropped", "hermes cursor"
    );
    let shown = |x: &Value| if x.is_null() { "-".to_owned() } else { x.to_string() };
    for r in v["nodes"].as_array().into_iter().flatten() {
        let lag = if r["lag_ms"].is_null() { "-".to_owned() } else { format!("{}ms", r["lag_ms"]) };
        let _ = writeln!(
            out,
            "{:<20} {:<9} {:>10} {:>8} {:>9} {:>8} {:>13}",
            r["node"].as_str().unwrap_or(""),
            if r["connected"] == true { "yes" } else { "no" },
            shown(&r["last_ack"]),
            lag,
            shown(&r["buffered"]),
            shown(&r["dropped"]),
            shown(&r["hermes_cursor"]),
        );
    }
    for r in v["nodes"].as_array().into_iter().flatten() {
        if let Some(why) = r["write_error"].as_str() {
            let _ = writeln!(out, "{}: OUTBOX CANNOT WRITE ({why})", r["node"].as_str().unwrap_or(""));
        }
        if let Some(n) = r["hermes_replaced"].as_u64().filter(|n| *n > 0) {
            let ago = (telemetry::now_ms() - r["hermes_replaced_at_ms"].as_i64().unwrap_or(0)).max(0) / 1000;
            let _ = writeln!(
                out,
                "{}: Hermes state.db replaced {n} time(s), last {ago} s ago (read again from its beginning)",
                r["node"].as_str().unwrap_or("")
            );
        }
    }
}

/// Runs the hook: reads the event, answers on stdout, forwards the event. Always exits 0
/// (Hermes reads the answer, not the status); problems go to stderr.
pub fn hermes_hook(a: &HookArgs) -> i32 {
    let mut raw = Vec::new();
    let read = std::io::stdin().lock().take(hook::MAX_INPUT as u64 + 1).read_to_end(&mut raw);
    let input: Value = match read.map(|_| serde_json::from_slice(&raw)) {
        Ok(Ok(v)) if raw.len() <= hook::MAX_INPUT => v,
        _ => {
            eprintln!("uni-wizard hermes-hook: stdin is not one JSON object of at most 1 MiB; allowing");
            println!("{{}}");
            return 0;
        }
    };
    let config = match DaemonConfig::load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            // Fail closed for a call we cannot judge.
            eprintln!("uni-wizard hermes-hook: {} {}", e.code, e.message);
            let d = if hook::event_name(&input) == "pre_tool_call" {
                hook::Decision::Block(format!("uni-wizard: node config unusable ({})", e.code))
            } else {
                hook::Decision::Allow
            };
            println!("{}", hook::answer(&d));
            return 0;
        }
    };
    let decision = hook::decide(&input, config.house, &config.telemetry.hook_deny);
    println!("{}", hook::answer(&decision));
    let _ = std::io::stdout().flush();
    let event = hook::hook_event(&input, &decision);
    let busy = Duration::from_millis(config.telemetry.hook_timeout_ms);
    let forwarded =
        outbox::Outbox::open_existing(&telemetry::outbox_path(&config), &config.node_name(), &config.telemetry, busy)
            .and_then(|ob| {
                ob.append(vec![(telemetry::now_ms(), uni_wizard_proto::v1::telemetry_event::Kind::Hook(event))], "hook")
            });
    if let Err(e) = forwarded {
        eprintln!("uni-wizard hermes-hook: event not forwarded: {} {}", e.code, e.message);
    }
    0
}
