//! `uni-wizard audit`: check and read the provenance chain at `$UNI_WIZARD_HOME/audit.db`.
//!
//! `audit verify` exits 0 when the chain holds and 4 naming the first broken record (seq, id,
//! what is wrong) when it does not; `audit show` lists records, oldest first. Both open the
//! store read-only.
//!
//! `audit verify --anchor --config NODE.yaml` also fetches the checkpoints Timmy's sink keeps
//! for this node (`Telemetry/AuditCheckpoints`, as the config's house with its token and TLS)
//! and checks the store against them: a truncated tail, a rewritten record, a forked chain, a
//! removed spent-token row are named with the first bad seq, even when the file was edited
//! to hold together on its own. The store defaults to the config's home's `audit.db`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use uni_wizard::audit::{AuditStore, Checkpoint, Entry, Verification};
use uni_wizard::{Error, ErrorCode, House};
use uni_wizard_proto::v1::{AuditCheckpointsRequest, telemetry_client::TelemetryClient};

use crate::config::DaemonConfig;
use crate::wire;

/// `uni-wizard audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exit 4 naming the first broken record.
    Verify {
        /// The store (default: `$UNI_WIZARD_HOME/audit.db`, with `--anchor` the config's home's).
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
        /// Also check the store against the checkpoints Timmy keeps for this node.
        #[arg(long, requires = "config")]
        anchor: bool,
        /// This node's daemon config (Timmy's address, this house's token and TLS, the node name).
        #[arg(long, env = "UNI_WIZARD_DAEMON_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// The node whose checkpoints to compare (default: the config's node; another node's
        /// only as Timmy).
        #[arg(long, requires = "anchor")]
        node: Option<String>,
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
/// E3008 when the store cannot be opened or read; with `--anchor`, E4001 for an invalid
/// config and the sink's error (E5003 for another house's node) when Timmy does not answer.
pub async fn run(cmd: AuditCommand) -> Result<i32, Error> {
    match cmd {
        AuditCommand::Verify { db, anchor: false, json, .. } => print_verification(&open(db)?.verify()?, json),
        AuditCommand::Verify { db, config, node, json, .. } => {
            let config = DaemonConfig::load(&config.unwrap_or_default())?;
            let node = node.unwrap_or_else(|| config.node_name());
            let store = AuditStore::open_read_only(db.unwrap_or_else(|| config.home().join("audit.db")))?;
            let anchors = checkpoints(&config, &node).await?;
            let v = store.verify_anchored(&anchors)?;
            if anchors.is_empty() && v.ok() && v.records > 0 {
                // Nothing to compare with is no proof: a wrong node name, or a node that never
                // reached Timmy.
                let e = Error::new(
                    ErrorCode::NotFound,
                    format!("timmy holds no audit checkpoint for node `{node}`: this chain is not anchored"),
                )
                .with_details(json!({ "node": node, "records": v.records }));
                return Err(e);
            }
            print_verification(&v, json)
        }
        AuditCommand::Show { session, limit, db, json } => show(db, session.as_deref(), limit, json),
    }
}

/// Every checkpoint Timmy's sink holds for `node`, asked as `config`'s house.
async fn checkpoints(config: &DaemonConfig, node: &str) -> Result<Vec<Checkpoint>, Error> {
    let peers = crate::peers::Peers::new(crate::live::Live::new(config.clone()))?;
    let mut client = TelemetryClient::new(peers.authed(House::Timmy)?);
    let mut out = Vec::new();
    let mut after = 0;
    // Bounded: a page holds up to `CHECKPOINTS_PAGE`, and a node anchors at most a few per
    // second, so 10,000 pages cover far more than any node's history.
    for _ in 0..10_000 {
        let q = AuditCheckpointsRequest { node: node.to_owned(), after };
        let page = match tokio::time::timeout(Duration::from_secs(10), client.audit_checkpoints(q)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => return Err(wire::error_from_status(&s)),
            Err(_) => return Err(Error::new(ErrorCode::Timeout, "timmy's sink did not answer within 10 s")),
        };
        out.extend(page.checkpoints.iter().map(crate::telemetry::anchor::from_wire));
        if !page.has_more || page.next_after <= after {
            return Ok(out);
        }
        after = page.next_after;
    }
    Err(Error::new(ErrorCode::Timeout, "timmy's sink kept paging checkpoints beyond 10,000 pages"))
}

fn print_verification(v: &Verification, as_json: bool) -> Result<i32, Error> {
    let mut out = std::io::stdout().lock();
    if as_json {
        let _ = writeln!(out, "{}", json!({ "ok": v.ok(), "verification": v }));
    } else if let Some(b) = &v.broken {
        for b in std::iter::once(b).chain(&v.more) {
            let chain = match b.chain {
                uni_wizard::audit::Chain::Records => "record",
                uni_wizard::audit::Chain::SpentTokens => "spent token",
            };
            let id = if b.id.is_empty() { String::new() } else { format!(" id {}", b.id) };
            let _ = writeln!(out, "BROKEN  {chain} seq {}{id}: {}", b.seq, b.problem);
        }
    } else {
        let head = v.head.as_deref().unwrap_or("(empty)");
        let anchored =
            if v.checkpoints > 0 { format!(", matches Timmy's {} checkpoints", v.checkpoints) } else { String::new() };
        let _ = writeln!(out, "ok  {} records, chain intact{anchored}, head {head}", v.records);
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
