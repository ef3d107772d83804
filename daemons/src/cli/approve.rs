//! Timmy's approvals from the CLI: `keygen`, `approve --sign`, and the CLI's approvers.
//!
//! # Keys
//!
//! `uni-wizard keygen [--out DIR]` (default `$UNI_WIZARD_HOME`) writes `timmy.key`, the hex of
//! Timmy's 32-byte ed25519 secret seed, mode 0600, and `timmy.pub`, the hex of the public key.
//! Keep `timmy.key` with Timmy only; copy `timmy.pub` to every node that runs Sovereign calls
//! (default location `$UNI_WIZARD_HOME/timmy.pub`, or `--timmy-pubkey FILE`).
//!
//! # Approving
//!
//! - Attended: `uni-wizard test --mode sovereign ...` without a token asks at the terminal
//!   ([`PromptApprover`]): the operator at the terminal answers for Timmy. Without a terminal on
//!   stdin it refuses (E2002), so scripts never hang on a prompt.
//! - Unattended: `uni-wizard approve --sign --tool T --arg k=v ... [--ttl-secs N]` prints a token
//!   bound to that tool, those exact arguments (same `--arg` typing as `test`) and an expiry;
//!   `uni-wizard test ... --approval-token TOKEN` spends it, once.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde_json::json;
use uni_wizard::approval::{Approval, ApprovalRequest, Approver};
use uni_wizard::audit::AuditStore;
use uni_wizard::future::BoxFuture;
use uni_wizard::tokens::{self, Claims, TokenApprover};
use uni_wizard::tools::Registry;
use uni_wizard::{Error, ErrorCode, House};

use super::files;

/// Flags of `uni-wizard keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory for `timmy.key` and `timmy.pub` (default: `$UNI_WIZARD_HOME`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace an existing key pair.
    #[arg(long)]
    pub force: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `uni-wizard approve`: `--sign` a token locally, or `--list` and `--decide` the
/// requests waiting at Timmy's Sovereign service (`--sovereign ADDR`, as Timmy).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["sign", "list", "decide"])))]
pub struct ApproveArgs {
    /// Sign a token with Timmy's key for `--tool` and its arguments.
    #[arg(long, requires = "tool")]
    pub sign: bool,
    /// List the approvals waiting at Timmy's Sovereign service.
    #[arg(long, requires = "sovereign")]
    pub list: bool,
    /// Decide one waiting approval (approves unless `--deny`).
    #[arg(long, value_name = "APPROVAL_ID", requires = "sovereign")]
    pub decide: Option<String>,
    /// With --decide: deny instead of approve.
    #[arg(long, requires = "decide")]
    pub deny: bool,
    /// With --decide: a note for the requester and the audit trail.
    #[arg(long, default_value = "")]
    pub note: String,
    /// Timmy's Sovereign service, `host:port`.
    #[arg(long, value_name = "ADDR")]
    pub sovereign: Option<String>,
    /// How to reach it (the token must be Timmy's).
    #[command(flatten)]
    pub connect: super::remote::Connect,
    /// Timmy's secret key file (default: `$UNI_WIZARD_HOME/timmy.key`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// With --sign: the house whose call is approved (a token works for no other).
    #[arg(long, value_name = "HOUSE", requires = "sign")]
    pub house: Option<String>,
    /// With --sign: the node the call may run on (its `node:` config, else its host name).
    #[arg(long, value_name = "NODE", requires = "sign", conflicts_with = "any_node")]
    pub node: Option<String>,
    /// With --sign: let the token be used on any node, instead of naming one with --node.
    #[arg(long, requires = "sign")]
    pub any_node: bool,
    /// The tool approved.
    #[arg(long)]
    pub tool: Option<String>,
    /// An argument as key=value, typed as `uni-wizard test` types it (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub args: Vec<String>,
    /// All arguments as one JSON object (merged under any --arg).
    #[arg(long, value_name = "JSON")]
    pub args_json: Option<String>,
    /// How long the token is valid, in seconds.
    #[arg(long, default_value_t = 600)]
    pub ttl_secs: u64,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

fn home() -> PathBuf {
    uni_wizard::Config::default().home_dir()
}

fn io_error(code: ErrorCode, what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(code, format!("{what} {}: {e}", path.display()))
        .with_details(json!({ "path": path.display().to_string() }))
}

/// Creates the state directory if needed and opens the audit store in it.
///
/// # Errors
/// E4002 when the directory cannot be created; E3008 when the store cannot be opened.
pub fn open_store(home: &Path) -> Result<Arc<AuditStore>, Error> {
    std::fs::create_dir_all(home).map_err(|e| io_error(ErrorCode::HomeUnavailable, "cannot create", home, e))?;
    Ok(Arc::new(AuditStore::open(home.join("audit.db"))?))
}

/// The approver for `uni-wizard test`: a token checked against Timmy's public key when one is
/// given, else the terminal prompt.
///
/// # Errors
/// E4001 when a token is given and Timmy's public key cannot be read.
pub fn approver(
    token: Option<&str>,
    pubkey: Option<&Path>,
    home: &Path,
    store: &Arc<AuditStore>,
) -> Result<Arc<dyn Approver>, Error> {
    if token.is_none() {
        return Ok(Arc::new(PromptApprover));
    }
    let path = pubkey.map_or_else(|| home.join("timmy.pub"), Path::to_path_buf);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io_error(ErrorCode::ConfigInvalid, "cannot read Timmy's public key", &path, e))?;
    let key = tokens::parse_verifying_key(&text)?;
    Ok(Arc::new(TokenApprover::new(key, store.clone())))
}

/// Asks the operator at the terminal; refuses (E2002) when stdin is not a terminal.
#[derive(Debug, Clone, Copy, Default)]
pub struct PromptApprover;

impl Approver for PromptApprover {
    fn approve<'a>(&'a self, request: &'a ApprovalRequest) -> BoxFuture<'a, uni_wizard::Result<Approval>> {
        Box::pin(async move {
            let refuse = |why: &str| {
                Error::new(
                    ErrorCode::ApprovalRequired,
                    format!("{} needs Timmy's approval ({}): {why}", request.tool, request.reason),
                )
                .with_details(
                    json!({ "tool": request.tool, "reason": request.reason, "args_sha256": request.args_sha256 }),
                )
            };
            if !std::io::stdin().is_terminal() {
                return Err(refuse("no terminal to ask; pass --approval-token from `uni-wizard approve --sign`"));
            }
            let question = format!(
                "Approve as Timmy: {} by {} ({})\n  args: {}\n  args sha256: {}\nApprove? [y/N] ",
                request.tool, request.house, request.reason, request.args, request.args_sha256
            );
            let answer = tokio::task::spawn_blocking(move || {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(question.as_bytes());
                let _ = err.flush();
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).map(|_| line)
            })
            .await;
            match answer {
                Ok(Ok(line)) if matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes") => Ok(Approval {
                    approver: House::Timmy,
                    tool: request.tool.clone(),
                    args_sha256: request.args_sha256.clone(),
                    note: "approved at the terminal".into(),
                    nonce: None,
                }),
                _ => Err(refuse("refused at the terminal")),
            }
        })
    }
}

/// `uni-wizard keygen`.
///
/// # Errors
/// E4001 when a key pair exists (without `--force`), E4002 when the files cannot be written.
pub fn keygen(a: &KeygenArgs) -> Result<i32, Error> {
    let dir = a.out.clone().unwrap_or_else(home);
    let (key_path, pub_path) = (dir.join("timmy.key"), dir.join("timmy.pub"));
    std::fs::create_dir_all(&dir).map_err(|e| io_error(ErrorCode::HomeUnavailable, "cannot create", &dir, e))?;
    if key_path.exists() && !a.force {
        return Err(io_error(ErrorCode::ConfigInvalid, "refusing to replace", &key_path, "it exists (use --force)"));
    }
    let (secret, public) = tokens::key_files(&tokens::generate_key());
    let secret = format!("{secret}\n");
    if a.force {
        files::replace(&key_path, secret.as_bytes(), files::SECRET)?;
    } else if !files::write_new(&key_path, secret.as_bytes(), files::SECRET)? {
        return Err(io_error(ErrorCode::ConfigInvalid, "refusing to replace", &key_path, "it exists (use --force)"));
    }
    files::replace(&pub_path, format!("{public}\n").as_bytes(), files::PUBLIC)?;
    if a.json {
        println!(
            "{}",
            json!({ "ok": true, "key": key_path.display().to_string(), "pub": pub_path.display().to_string() })
        );
    } else {
        println!("ok  wrote {} (secret, 0600) and {}", key_path.display(), pub_path.display());
    }
    Ok(0)
}

/// `uni-wizard approve`.
///
/// # Errors
/// The Sovereign service's refusal (`--list`, `--decide`); for `--sign`, an unknown tool or
/// house, bad arguments, an unreadable key.
pub async fn approve(a: &ApproveArgs) -> Result<i32, Error> {
    if a.list || a.decide.is_some() {
        let addr = a.sovereign.clone().unwrap_or_default();
        let v = match &a.decide {
            Some(id) => super::remote::decide(&a.connect, &addr, id, !a.deny, &a.note).await?,
            None => super::remote::pending(&a.connect, &addr).await?,
        };
        print_remote(&v, a.json);
        return Ok(0);
    }
    sign(a)
}

fn print_remote(v: &serde_json::Value, as_json: bool) {
    if as_json {
        println!("{v}");
        return;
    }
    if let Some(list) = v["pending"].as_array() {
        if list.is_empty() {
            println!("no approvals pending");
        }
        for p in list {
            // Escaped: what another house wrote never moves Timmy's cursor or forges a line.
            let text = |k: &str| p[k].as_str().unwrap_or("?").escape_debug().to_string();
            println!(
                "{}  {} on {} wants {}  {}  ({})",
                text("approval_id"),
                text("house"),
                text("node"),
                text("tool"),
                p["args"],
                text("reason")
            );
        }
    } else {
        println!("{}  {}", v["decision"].as_str().unwrap_or(""), v["approval_id"].as_str().unwrap_or(""));
    }
}

fn sign(a: &ApproveArgs) -> Result<i32, Error> {
    let (token, claims) = {
        let registry = Registry::builtin()?;
        let name = a.tool.clone().unwrap_or_default();
        let tool = registry.require(&name)?;
        let args = super::parse_args(&a.args, a.args_json.as_deref(), &tool.contract().spec().input_schema)?;
        let path = a.key.clone().unwrap_or_else(|| home().join("timmy.key"));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| io_error(ErrorCode::ConfigInvalid, "cannot read Timmy's key", &path, e))?;
        let key = tokens::parse_signing_key(&text)?;
        let house: House = a
            .house
            .as_deref()
            .ok_or_else(|| {
                Error::new(ErrorCode::InvalidArguments, "--sign needs --house: the house whose call is approved")
                    .with_details(json!({ "field": "house" }))
            })?
            .parse()?;
        let node = match (&a.node, a.any_node) {
            // `*` is spelt --any-node, so a token for every node is never signed by accident.
            (Some(n), false) if !n.is_empty() && n != tokens::ANY_NODE => n.clone(),
            (None, true) => tokens::ANY_NODE.to_owned(),
            _ => {
                return Err(Error::new(
                    ErrorCode::InvalidArguments,
                    "--sign needs --node NODE (the node the call runs on; `*` is not a node) or --any-node",
                )
                .with_details(json!({ "field": "node" })));
            }
        };
        let claims = Claims::new(house, &node, &name, &args, a.ttl_secs.saturating_mul(1000));
        (tokens::sign(&key, &claims), claims)
    };
    if a.json {
        println!("{}", json!({ "ok": true, "token": token, "claims": claims }));
    } else {
        println!("{token}");
    }
    Ok(0)
}
