//! `uni-wizard audit`: check and read the provenance chain at `$UNI_WIZARD_HOME/audit.db`.
//!
//! `audit verify` exits 0 when the chain holds and 4 naming the first broken record (seq, id,
//! what is wrong) when it does not; `audit show` lists records, oldest first. Both open the
//! store read-only.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;
use uni_wizard::Error;
use uni_wizard::audit::{AuditStore, Entry};

/// `uni-wizard audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exit 4 naming the first broken record.
    Verify {
        /// The store (default: `$UNI_WIZARD_HOME/audit.db`).
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// List records, oldest first.
    Show {
        /// Only this session's records.
        #[arg(long)]
        session: Option<String>,
        /// Only the newest N.
        #[arg(long)]
        limit: Option<usize>,
        /// The store (default: `$UNI_WIZARD_HOME/audit.db`).
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

fn open(db: Option<PathBuf>) -> Result<AuditStore, Error> {
    let path = db.unwrap_or_else(|| uni_wizard::Config::default().home_dir().join("audit.db"));
    AuditStore::open_read_only(path)
}

impl AuditCommand {
    /// Whether `--json` was asked for.
    pub fn json(&self) -> bool {
        match self {
            AuditCommand::Verify { json, .. } | AuditCommand::Show { json, .. } => *json,
        }
    }
}

/// Runs an `audit` subcommand.
///
/// # Errors
/// E3008 when the store cannot be opened or read.
pub fn run(cmd: AuditCommand) -> Result<i32, Error> {
    match cmd {
        AuditCommand::Verify { db, json } => verify(db, json),
        AuditCommand::Show { session, limit, db, json } => show(db, session.as_deref(), limit, json),
    }
}

fn verify(db: Option<PathBuf>, as_json: bool) -> Result<i32, Error> {
    let v = open(db)?.verify()?;
    let mut out = std::io::stdout().lock();
    if as_json {
        let _ = writeln!(out, "{}", json!({ "ok": v.ok(), "verification": v }));
    } else if let Some(b) = &v.broken {
        let _ = writeln!(out, "BROKEN  record seq {} id {}: {}", b.seq, b.id, b.problem);
    } else {
        let head = v.head.as_deref().unwrap_or("(empty)");
        let _ = writeln!(out, "ok  {} records, chain intact, head {head}", v.records);
    }
    Ok(if v.ok() { 0 } else { 4 })
}

fn show(db: Option<PathBuf>, session: Option<&str>, limit: Option<usize>, as_json: bool) -> Result<i32, Error> {
    let entries: Vec<Entry> = open(db)?.show(session, limit)?;
    let mut out = std::io::stdout().lock();
    if as_json {
        let _ = writeln!(out, "{}", json!({ "count": entries.len(), "records": entries }));
        return Ok(0);
    }
    for e in &entries {
        let r = &e.record;
        let status = if r.ok { "ok".to_owned() } else { r.error_code.clone().unwrap_or_else(|| "failed".into()) };
        let approved = if r.approvals.is_empty() { "" } else { "  approved" };
        let _ = writeln!(
            out,
            "{:>6}  {}  {:<8} {:<10} {:<18} {:<6} {}  session {}{approved}",
            r.seq,
            r.id,
            r.house.as_str(),
            r.mode.as_str(),
            r.tool,
            status,
            r.target,
            r.session
        );
    }
    Ok(0)
}
