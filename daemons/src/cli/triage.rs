//! `uni-wizard triage --status [--json]`: what the triage daemon has done, read from its
//! `triage.db` (`--home DIR`, else the `worker.library.home` of the node config `--config
//! FILE`, else `$UNI_WIZARD_HOME`). Read-only: the store is opened read-only and never created,
//! so it works beside the running daemon (WAL readers do not block its writer).
//!
//! Each issue triaged shows the provenance ids of the harness calls that applied its plan
//! (look them up with `uni-wizard audit show --session triage:<owner>/<repo>#<n>`); each plan
//! the harness did not apply shows why: `REFUSED` (policy or contract: tried again after a
//! restart) or `FAILED` (being retried), the code and message, and the call's provenance id.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde_json::Value;
use uni_wizard::{Config, Error, ErrorCategory, ErrorCode};

use super::{exit_code, render};
use crate::triage::store::Store;

/// Flags of `uni-wizard triage`.
#[derive(Debug, Args)]
pub struct TriageArgs {
    /// Show what triage has done: issues triaged, queue, cursors, the latest issues.
    #[arg(long)]
    pub status: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// The state directory holding `triage.db` (default: `$UNI_WIZARD_HOME`).
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub home: Option<PathBuf>,
    /// The node's daemon config; `triage.db` is in its `worker.library.home`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How many of the latest issues to show.
    #[arg(long, default_value_t = 20)]
    pub latest: usize,
}

/// Runs `triage` and returns the exit code.
pub fn run(a: &TriageArgs) -> i32 {
    match status(a) {
        Ok(v) => {
            print(&v, a.json);
            0
        }
        Err(e) => {
            render::error(&e, a.json);
            exit_code(&e)
        }
    }
}

/// The status document `--json` prints.
///
/// # Errors
/// E1005 without `--status`; E4001 for a bad node config; E4002 when there is no `triage.db`.
pub fn status(a: &TriageArgs) -> Result<Value, Error> {
    if !a.status {
        return Err(Error::new(ErrorCode::InvalidInput, "nothing to do: pass --status"));
    }
    let home = match (&a.home, &a.config) {
        (Some(h), _) => h.clone(),
        (None, Some(file)) => crate::config::DaemonConfig::load(file)?.home(),
        (None, None) => Config::default().home_dir(),
    };
    status_at(&home, a.latest)
}

/// The status document of the `triage.db` in `home` (`uni-wizard status` shares it), with
/// the `latest` issues.
///
/// # Errors
/// E4002 when there is no `triage.db` or it cannot be read.
pub fn status_at(home: &std::path::Path, latest: usize) -> Result<Value, Error> {
    let path = home.join("triage.db");
    if !path.exists() {
        return Err(Error::new(
            ErrorCode::HomeUnavailable,
            format!("no triage state at {}: the triage role has not run with this home", path.display()),
        ));
    }
    let mut v = Store::open_read_only(&path)?.status(latest)?;
    v["ok"] = Value::Bool(true);
    v["db"] = Value::String(path.display().to_string());
    Ok(v)
}

fn print(v: &Value, as_json: bool) {
    let mut out = std::io::stdout().lock();
    if as_json {
        let _ = writeln!(out, "{v}");
        return;
    }
    let n = |k: &str| v[k].as_i64().unwrap_or(0);
    let _ = writeln!(
        out,
        "triage  {} issues triaged ({} applications)  queue {}  tasks pending {}  deliveries {}  refused {}",
        n("issues_triaged"),
        n("applications"),
        n("queued"),
        n("tasks_pending"),
        n("deliveries"),
        n("refused")
    );
    for c in v["cursors"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {}  polled since {}",
            c["repo"].as_str().unwrap_or(""),
            c["since"].as_str().unwrap_or("(the beginning)")
        );
    }
    for r in v["latest"].as_array().into_iter().flatten() {
        let provenance: Vec<&str> =
            r["provenance"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let _ = writeln!(
            out,
            "  {}#{}  house {}  via {}  {} ms  task {} {}  provenance {}",
            r["repo"].as_str().unwrap_or(""),
            r["number"],
            r["house"].as_str().unwrap_or("-"),
            r["source"].as_str().unwrap_or(""),
            r["latency_ms"],
            r["task_state"].as_str().unwrap_or("-"),
            r["task_id"].as_str().unwrap_or(""),
            if provenance.is_empty() { "-".to_owned() } else { provenance.join(",") }
        );
    }
    for r in v["refusals"].as_array().into_iter().flatten() {
        let code = r["code"].as_str().unwrap_or("");
        // A policy or contract refusal waits for a restart; anything else is being retried.
        let final_refusal = ErrorCode::parse(code)
            .is_some_and(|c| matches!(c.category(), ErrorCategory::Policy | ErrorCategory::Contract));
        let _ = writeln!(
            out,
            "  {}#{}  {} {code} {}  ({} times, provenance {})",
            r["repo"].as_str().unwrap_or(""),
            r["number"],
            if final_refusal { "REFUSED" } else { "FAILED" },
            r["message"].as_str().unwrap_or(""),
            r["times"],
            r["provenance_id"].as_str().unwrap_or("-")
        );
    }
}
