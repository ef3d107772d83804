//! How the CLI prints: readable by default, JSON with `--json`. Errors go to stderr in the
//! readable form and to stdout as JSON, so a script reads one document either way.

use std::io::Write;

use serde_json::{Value, json};
use uni_wizard::tools::Registry;
use uni_wizard::{Error, Outcome};

use super::remote::Routed;

/// Prints the outcome of a local run.
pub fn outcome(o: &Outcome, as_json: bool) {
    let mut out = std::io::stdout().lock();
    if as_json {
        let _ = writeln!(out, "{}", json!({ "ok": true, "outcome": o }));
        return;
    }
    let dry = if o.dry_run { "  [dry run]" } else { "" };
    let _ = writeln!(
        out,
        "ok  {}  house={} mode={}  {:.1} ms  attempts={}{dry}",
        o.tool,
        o.house,
        o.mode,
        ms(o),
        o.attempts
    );
    let _ = writeln!(out, "    request {}  provenance {}  session {}", o.request_id, o.provenance_id, o.session);
    if let Some(d) = &o.degraded {
        let _ = writeln!(out, "    degraded: {d}");
    }
    for w in &o.warnings {
        let _ = writeln!(out, "    warning: {w}");
    }
    output(&mut out, o);
}

/// Prints the outcome of a call the router ran: the same outcome, with the task and the
/// house and node that ran it.
pub fn routed(r: &Routed, as_json: bool) {
    let mut out = std::io::stdout().lock();
    let o = &r.outcome;
    if as_json {
        let v = json!({
            "ok": true,
            "task_id": r.task_id,
            "assigned_house": r.assigned_house,
            "node": r.node,
            "deduplicated": r.deduplicated,
            "outcome": o,
        });
        let _ = writeln!(out, "{v}");
        return;
    }
    let dedup = if r.deduplicated { "  [deduplicated]" } else { "" };
    let _ = writeln!(
        out,
        "ok  {}  house={} node={} mode={}  {:.1} ms  attempts={}{dedup}",
        o.tool,
        r.assigned_house.map_or("", uni_wizard::House::as_str),
        r.node,
        o.mode,
        ms(o),
        o.attempts
    );
    let _ = writeln!(out, "    task {}  request {}", r.task_id, o.request_id);
    output(&mut out, o);
}

fn ms(o: &Outcome) -> f64 {
    o.duration_us as f64 / 1000.0
}

/// The tool's output, pretty JSON.
fn output(out: &mut impl Write, o: &Outcome) {
    let _ = writeln!(out, "{}", serde_json::to_string_pretty(&o.output).unwrap_or_default());
}

/// Prints an error.
pub fn error(e: &Error, as_json: bool) {
    if as_json {
        let _ = writeln!(std::io::stdout().lock(), "{}", json!({ "ok": false, "error": e }));
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error {}: {}", e.code, e.message);
    if let Value::Object(map) = &e.details {
        for (k, v) in map {
            let shown = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            let _ = writeln!(err, "  {k}: {shown}");
        }
    }
    if let Some(id) = &e.request_id {
        let _ = writeln!(err, "  request: {id}");
    }
    let _ = writeln!(err, "  fix: see docs/ERRORS.md#{}", e.code.as_str().to_ascii_lowercase());
}

/// Prints the tool list.
pub fn tools(r: &Registry, as_json: bool) {
    let mut out = std::io::stdout().lock();
    if as_json {
        let all: Vec<Value> = r.iter().map(|t| t.contract().to_json()).collect();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({ "count": all.len(), "tools": all })).unwrap_or_default()
        );
        return;
    }
    let _ = writeln!(
        out,
        "{:<20} {:<8} {:<8} {:<9} {:>8}  description",
        "tool", "category", "risk", "read-only", "timeout"
    );
    for t in r.iter() {
        let c = t.contract();
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:<8} {:<9} {:>7}s  {}",
            c.spec().name,
            format!("{:?}", c.spec().category).to_lowercase(),
            format!("{:?}", c.spec().risk).to_lowercase(),
            if c.spec().annotations.read_only { "yes" } else { "no" },
            c.spec().default_timeout.as_secs(),
            c.spec().description
        );
    }
}
