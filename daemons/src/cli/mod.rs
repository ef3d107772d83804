//! The `uni-wizard` operator command.
//!
//! Local by default: the harness runs in this process with embedded defaults, state under
//! `$UNI_WIZARD_HOME` (default `~/.local/share/uni-wizard`), and file tools confined to the
//! current directory unless `--root` or `UNI_WIZARD_ROOTS` says otherwise.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | internal error (a bug or an unexpected I/O failure of the CLI itself) |
//! | 2 | usage or contract error (E1xxx): bad flags, unknown tool or house, invalid arguments |
//! | 3 | refused by policy (E2xxx) |
//! | 4 | execution failed (E3xxx) |
//! | 5 | authentication failed (E5xxx) |
//! | 64 | configuration error (E4xxx) |

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};
use uni_wizard::error::Category;
use uni_wizard::tools::Registry;
use uni_wizard::{Config, Error, ErrorCode, Harness, House, Mode, Request};

use crate::wire;

pub mod approve;
pub mod assets;
pub mod audit;
pub mod files;
pub mod fleet;
pub mod predict;
pub mod remote;
pub mod render;
pub mod status;
pub mod telemetry;
pub mod triage;

/// `uni-wizard`: run and inspect uni-wizard tools.
#[derive(Debug, Parser)]
#[command(name = "uni-wizard", version, about = "Run operational tools under house policy", long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one tool as a house, locally.
    Test(Box<TestArgs>),
    /// List the tools and their contracts.
    Tools(ToolsArgs),
    /// What the pattern DB predicts for a tool run by a house.
    Predict(predict::PredictArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check and read the provenance chain (`$UNI_WIZARD_HOME/audit.db`).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Approve: sign a token with Timmy's key (`--sign`), or list and decide the requests
    /// waiting at Timmy's Sovereign service (`--list`, `--decide`).
    Approve(approve::ApproveArgs),
    /// Generate Timmy's ed25519 key pair (`timmy.key`, `timmy.pub`).
    Keygen(approve::KeygenArgs),
    /// Set up a fleet: `init` makes the CA, certificates, tokens, Timmy's key and the four node
    /// configs (and etcd's members' certificates) in one directory; `cert` issues one node's or etcd
    /// member's certificate again.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Probe every house of a fleet: gRPC health and worker capacity.
    Health(remote::HealthArgs),
    /// One screen of the whole fleet: houses, leader, tasks, approvals, telemetry, triage
    /// (`--json` for scripts, `--watch` to refresh in place).
    Status(status::StatusArgs),
    /// Where a task submitted through the router is, and its result once finished.
    Task(remote::TaskArgs),
    /// What the Gitea triage daemon has done (`--status`), from its `triage.db`.
    Triage(triage::TriageArgs),
    /// Telemetry: `--status` shows each node's stream to Timmy (connected, last ack, lag,
    /// buffered, dropped, Hermes cursor).
    Telemetry(telemetry::TelemetryArgs),
    /// A Hermes shell hook: JSON event on stdin, block/allow on stdout, event to telemetry.
    HermesHook(telemetry::HookArgs),
    /// Writes the shell completions and man pages of both binaries from their clap definitions
    /// (a packaging step, run by scripts/package; hidden: see cli/assets.rs).
    #[command(hide = true)]
    GenerateAssets(assets::AssetsArgs),
}

/// `uni-wizard config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file (library config, or a node's daemon config with `houses:`)
    /// without starting anything; exits 64 naming file, line and field.
    Check {
        /// The YAML file.
        file: PathBuf,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Flags of `uni-wizard test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The calling house: timmy, allegro, ezra or bezalel.
    #[arg(long)]
    pub house: String,
    /// The tool to run (see `uni-wizard tools`).
    #[arg(long)]
    pub tool: String,
    /// An argument as key=value; the value is typed by the tool's schema (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub args: Vec<String>,
    /// All arguments as one JSON object (merged under any --arg).
    #[arg(long, value_name = "JSON")]
    pub args_json: Option<String>,
    /// simple, intelligent or sovereign (default: intelligent; with --router, the worker's default).
    #[arg(long)]
    pub mode: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// Report what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Session id (groups calls for proofs).
    #[arg(long)]
    pub session: Option<String>,
    /// Provenance id of a prior successful check (Bezalel's proof).
    #[arg(long)]
    pub proof: Option<String>,
    /// Makes a non-idempotent call safe to retry.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Per-attempt timeout in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Library config file (YAML); embedded defaults when absent.
    #[arg(long, env = "UNI_WIZARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A directory the file tools may touch (repeatable; default: the config's `file_roots`,
    /// else `UNI_WIZARD_ROOTS` (colon separated), else the current directory).
    #[arg(long = "root", value_name = "DIR")]
    pub roots: Vec<PathBuf>,
    /// An approval token from `uni-wizard approve --sign` (Sovereign mode, unattended).
    #[arg(long, value_name = "TOKEN")]
    pub approval_token: Option<String>,
    /// Timmy's public key file (default: `$UNI_WIZARD_HOME/timmy.pub`).
    #[arg(long, value_name = "FILE")]
    pub timmy_pubkey: Option<PathBuf>,
    /// The provenance id of the call this one is made on behalf of.
    #[arg(long)]
    pub parent: Option<String>,
    /// Run through the fleet's routers at these addresses (`host:port`, comma-separated or
    /// repeated) instead of locally: the one that leads takes the task (a follower names the
    /// leader, which is asked next). The call authenticates as `--house` with `--token`.
    #[arg(long, value_name = "ADDR", value_delimiter = ',')]
    pub router: Vec<String>,
    /// With --router: the house to prefer for running the task.
    #[arg(long, value_name = "HOUSE", requires = "router")]
    pub on: Option<String>,
    /// With --router: the task's idempotency key (default: the --idempotency-key, else fresh).
    #[arg(long, value_name = "KEY", requires = "router")]
    pub task_key: Option<String>,
    /// How to reach the router.
    #[command(flatten)]
    pub connect: remote::Connect,
}

/// Flags of `uni-wizard tools`.
#[derive(Debug, Args)]
pub struct ToolsArgs {
    /// Print the full contracts as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the CLI and returns the process exit code: the command's own, or the exit code of
/// the error that stopped it, printed here, once (readable on stderr, JSON on stdout with
/// `--json`).
pub async fn run(cli: Cli) -> i32 {
    let as_json = cli.command.json();
    match execute(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            render::error(&e, as_json);
            exit_code(&e)
        }
    }
}

impl Command {
    /// Whether the command was asked for JSON (errors are then printed as JSON too).
    fn json(&self) -> bool {
        match self {
            Command::Test(a) => a.json,
            Command::Tools(a) => a.json,
            Command::Predict(a) => a.json,
            Command::Config(ConfigCommand::Check { json, .. }) => *json,
            Command::Audit(c) => c.json(),
            Command::Approve(a) => a.json,
            Command::Keygen(a) => a.json,
            Command::Fleet(c) => c.json(),
            Command::Health(a) => a.json,
            Command::Status(a) => a.json,
            Command::Task(a) => a.json,
            Command::Triage(a) => a.json,
            Command::Telemetry(a) => a.json,
            Command::HermesHook(_) => false,
            Command::GenerateAssets(a) => a.json,
        }
    }
}

/// Runs one command: its exit code when it ran (a health check may find a house down: 4), or
/// the error that stopped it.
async fn execute(command: Command) -> Result<i32, Error> {
    match command {
        Command::Test(a) => test(*a).await,
        Command::Tools(a) => {
            render::tools(&Registry::builtin()?, a.json);
            Ok(0)
        }
        Command::Predict(a) => predict::run(&a),
        Command::Config(ConfigCommand::Check { file, json }) => config_check(&file, json),
        Command::Audit(c) => audit::run(c).await,
        Command::Approve(a) => approve::approve(&a).await,
        Command::Keygen(a) => approve::keygen(&a),
        Command::Fleet(c) => fleet::run(&c),
        Command::Task(a) => {
            remote::print_task(&remote::task(&a).await?, a.json);
            Ok(0)
        }
        // Prints its own errors (cli/triage.rs).
        Command::Triage(a) => Ok(triage::run(&a)),
        Command::Health(a) => {
            let (v, all_up) = remote::health(&a).await?;
            remote::print_health(&v, a.json);
            Ok(if all_up { 0 } else { 4 })
        }
        // 0 when every house is up and a router leads, else 4 (cli/status.rs).
        Command::Status(a) => status::run(&a).await,
        Command::Telemetry(a) => {
            let v = telemetry::status(&a).await?;
            telemetry::print_status(&v, a.json);
            Ok(if v["ok"] == true { 0 } else { 4 })
        }
        // Always 0: Hermes reads the answer, not the status.
        Command::HermesHook(a) => Ok(telemetry::hermes_hook(&a)),
        Command::GenerateAssets(a) => assets::run(&a),
    }
}

/// The exit code for an error, by its family.
pub fn exit_code(e: &Error) -> i32 {
    match e.category {
        Category::Contract => 2,
        Category::Policy => 3,
        Category::Execution => 4,
        Category::Auth => 5,
        Category::Config => 64,
    }
}

async fn test(a: TestArgs) -> Result<i32, Error> {
    let as_json = a.json;
    if !a.router.is_empty() {
        render::routed(&run_remote(a).await?, as_json);
    } else {
        render::outcome(&run_test(a).await?, as_json);
    }
    Ok(0)
}

async fn run_test(a: TestArgs) -> Result<uni_wizard::Outcome, Error> {
    let house: House = a.house.parse()?;
    let mode: Mode = a.mode.as_deref().unwrap_or("intelligent").parse()?;
    let registry = Registry::builtin()?;
    let tool = registry.require(&a.tool)?;
    let args = parse_args(&a.args, a.args_json.as_deref(), &tool.contract().spec().input_schema)?;
    let mut config = match &a.config {
        Some(path) => crate::config::load_library(path)?,
        None => Config::default(),
    };
    if a.config.is_none() {
        // The CLI records every run in `$UNI_WIZARD_HOME/patterns.db`; a config file decides itself.
        config.intelligence.enabled = true;
    }
    if !a.roots.is_empty() || config.file_roots.is_empty() {
        config.file_roots = roots(&a.roots)?;
    }
    // Every run is recorded in the hash-chained audit store (see `uni-wizard audit`).
    let home = config.home_dir();
    let store = approve::open_store(&home)?;
    let approver = approve::approver(a.approval_token.as_deref(), a.timmy_pubkey.as_deref(), &home, &store)?;
    let mut builder = Harness::builder()
        .house(house)
        .mode(mode)
        .config(config)
        .registry(registry)
        .provenance(store)
        .approver(approver);
    if let Some(s) = &a.session {
        builder = builder.session(s.clone());
    }
    let harness = builder.build()?;
    let request = Request {
        tool: a.tool,
        args,
        mode: None,
        session: a.session,
        proof: a.proof,
        idempotency_key: a.idempotency_key,
        dry_run: a.dry_run,
        timeout: a.timeout_ms.map(Duration::from_millis),
        approval: None,
        approval_token: a.approval_token,
        parent: a.parent,
        on_behalf_of: None,
    };
    harness.execute_request(request).await
}

async fn run_remote(a: TestArgs) -> Result<remote::Routed, Error> {
    let house: House = a.house.parse()?;
    let mode: Option<Mode> = a.mode.as_deref().map(str::parse).transpose()?;
    let on = a.on.as_deref().map(str::parse::<House>).transpose()?;
    let registry = Registry::builtin()?;
    let schema = registry.get(&a.tool).map(|t| t.contract().spec().input_schema.clone()).unwrap_or(Value::Null);
    let args = parse_args(&a.args, a.args_json.as_deref(), &schema)?;
    let mut call = Request::new(a.tool, args);
    call.session = a.session;
    call.proof = a.proof;
    call.idempotency_key = a.idempotency_key;
    call.dry_run = a.dry_run;
    call.timeout = a.timeout_ms.map(Duration::from_millis);
    let submission = wire::Submission {
        caller: house,
        key: a.task_key.or_else(|| call.idempotency_key.clone()).unwrap_or_else(uni_wizard::provenance::new_id),
        preferred: on,
        mode,
    };
    remote::submit(&a.connect, &a.router, &submission, &call).await
}

fn roots(flags: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    if !flags.is_empty() {
        return Ok(flags.to_vec());
    }
    if let Some(v) = std::env::var_os("UNI_WIZARD_ROOTS").filter(|v| !v.is_empty()) {
        return Ok(std::env::split_paths(&v).collect());
    }
    std::env::current_dir().map(|d| vec![d]).map_err(|e| {
        Error::new(ErrorCode::RootUnavailable, format!("current directory is unusable as a file root: {e}"))
    })
}

/// Builds the arguments object from `--args-json` and `--arg key=value` flags. A value is
/// taken as a string when the schema says the field is a string, and parsed as JSON otherwise.
///
/// # Errors
/// E1005 for a flag without `=`, JSON that does not parse, or `--args-json` that is not an object.
pub fn parse_args(pairs: &[String], args_json: Option<&str>, schema: &Value) -> Result<Value, Error> {
    let bad = |msg: String, field: &str| {
        Err(Error::new(ErrorCode::InvalidInput, msg).with_details(json!({ "field": field })))
    };
    let mut map = match args_json {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return bad("--args-json must be a JSON object".into(), "args_json"),
            Err(e) => return bad(format!("--args-json is not valid JSON: {e}"), "args_json"),
        },
    };
    for pair in pairs {
        let Some((key, raw)) = pair.split_once('=') else {
            return bad(format!("--arg `{pair}` must look like key=value"), pair);
        };
        let declared = schema["properties"][key]["type"].clone();
        let is_string =
            declared == "string" || declared.as_array().is_some_and(|t| t.first() == Some(&json!("string")));
        let value = if is_string || declared.is_null() && serde_json::from_str::<Value>(raw).is_err() {
            Value::String(raw.to_owned())
        } else {
            match serde_json::from_str(raw) {
                Ok(v) => v,
                Err(e) => {
                    return bad(format!("--arg {key}: `{raw}` is not valid JSON for a {declared} field: {e}"), key);
                }
            }
        };
        map.insert(key.to_owned(), value);
    }
    Ok(Value::Object(map))
}

fn config_check(file: &std::path::Path, as_json: bool) -> Result<i32, Error> {
    // A node's daemon config has a top-level `houses:`; anything else is a library config.
    let is_daemon = std::fs::read_to_string(file).is_ok_and(|t| t.lines().any(|l| l.starts_with("houses:")));
    if is_daemon {
        crate::config::DaemonConfig::load(file)?;
    } else {
        crate::config::load_library(file)?;
    }
    if as_json {
        println!("{}", json!({ "ok": true, "file": file.display().to_string() }));
    } else {
        println!("ok  {} is valid", file.display());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves `--arg` values follow the schema's types and malformed flags give E1005.
    #[test]
    fn args_are_typed_by_schema() {
        let schema = json!({"properties": {"path": {"type": "string"}, "max_bytes": {"type": "integer"}}});
        let v = parse_args(&["path=123".into(), "max_bytes=10".into()], None, &schema).expect("parses");
        assert_eq!(v, json!({"path": "123", "max_bytes": 10}));
        let e = parse_args(&["oops".into()], None, &schema).expect_err("no =");
        assert_eq!(e.code, ErrorCode::InvalidInput);
        let e = parse_args(&[], Some("[1]"), &schema).expect_err("not an object");
        assert_eq!(e.code, ErrorCode::InvalidInput);
        let v = parse_args(&["path=b".into()], Some(r#"{"path": "a", "x": true}"#), &schema).expect("merges");
        assert_eq!(v, json!({"path": "b", "x": true}));
    }
}
