//! Tools: the [`Tool`] trait, the [`TypedTool`] shape and its [`Typed`] adapter, what a tool
//! may use ([`ToolEnv`], [`ToolContext`]), and the [`Registry`] of all of them. Each tool's
//! contract is a [`crate::contract::Contract`].
//!
//! The tools live by family, one folder each, holding the family's tools, its shared runner
//! and its shared schema fragments (`<family>::schema`):
//!
//! - [`system`]: `system_info`, `process_list`, `service_status`, `service_restart`; the
//!   `systemctl` runner.
//! - [`git`]: `git_status`, `git_log`, `git_diff`, `git_pull`, `git_commit`, `git_push`; the
//!   argv-only `git` runner.
//! - [`file`](mod@file): `file_read`, `file_write`, `file_list`, `file_search`; confinement to the roots
//!   (`confine`) and the bounded directory walk (`walk`).
//! - [`http`]: `http_get`, `http_post`; the egress policy (`egress`) and the one HTTP client.
//! - [`gitea`]: `gitea_list_issues`, `gitea_update_issue`, `gitea_create_pr`, thin tools over
//!   the [`crate::gitea::Gitea`] client.
//!
//! Every tool is one module with the same shape: `Input` and `Output` types, a `spec()` with
//! its JSON Schemas, and an async `run(ctx, input)`, the bare tool function. The [`Typed`]
//! adapter turns that shape into a `dyn Tool` that takes and returns JSON, so the harness
//! never knows how a tool works and a tool never knows about houses or modes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::contract::{Contract, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::future::BoxFuture;
use crate::house::House;

pub mod file;
pub mod git;
pub mod gitea;
pub mod http;
pub mod system;

/// What a tool may use while it runs. Shared by every call; cheap to clone.
#[derive(Debug, Clone)]
pub struct ToolEnv {
    /// Directories the file tools are confined to.
    pub roots: Arc<file::Roots>,
    /// The `git` executable (argv only, never a shell).
    pub git: PathBuf,
    /// What the HTTP tools may reach: the calling house's egress policy.
    pub egress: Arc<http::egress::Egress>,
    /// The Gitea client: the one handed to the harness, else one built from `gitea` when it is
    /// configured (the Gitea tools refuse with E4001 without one).
    pub gitea: Option<Arc<dyn crate::gitea::Gitea>>,
}

impl ToolEnv {
    /// An environment with these roots and `git` from `PATH`.
    pub fn new(roots: file::Roots) -> ToolEnv {
        ToolEnv {
            roots: Arc::new(roots),
            git: PathBuf::from("git"),
            egress: Arc::new(http::egress::Egress::deny_all()),
            gitea: None,
        }
    }
}

/// The per-call context handed to a tool.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// Shared resources.
    pub env: Arc<ToolEnv>,
    /// The calling house (for messages and provenance; tools do not decide policy).
    pub house: House,
    /// Report what would change; change nothing.
    pub dry_run: bool,
    /// The request this call serves.
    pub request_id: Arc<str>,
}

impl ToolContext {
    /// A context for one call.
    pub fn new(env: Arc<ToolEnv>, house: House, dry_run: bool, request_id: impl Into<Arc<str>>) -> ToolContext {
        ToolContext { env, house, dry_run, request_id: request_id.into() }
    }
}

/// A tool as the harness sees it: JSON in, JSON out.
pub trait Tool: Send + Sync + 'static {
    /// The tool's contract.
    fn contract(&self) -> &Contract;

    /// The thing the call acts on (path, repository, host): keys breakers and proofs.
    fn target(&self, args: &Value) -> String;

    /// Whether this call changes production (service restarts, pushes to protected branches).
    fn changes_production(&self, args: &Value) -> bool;

    /// Runs the tool on validated arguments.
    fn call<'a>(&'a self, ctx: &'a ToolContext, args: &'a Value) -> BoxFuture<'a, Result<Value>>;
}

/// The shape every tool module implements; [`Typed`] adapts it to [`Tool`].
pub trait TypedTool: Send + Sync + 'static {
    /// Arguments, deserialised after schema validation.
    type Input: DeserializeOwned + Send;
    /// Result, serialised into the outcome.
    type Output: Serialize + Send;

    /// The contract's static parts.
    fn spec() -> ContractSpec;

    /// See [`Tool::target`]; by default the tool's name (one breaker per tool).
    fn target(args: &Value) -> String {
        let _ = args;
        String::new()
    }

    /// Whether this call changes production *in addition to* what the risk level says: a
    /// high-risk tool always counts (the adapter checks that), so a tool overrides this only
    /// when some of its calls count, e.g. pushes to protected branches. Runs on every call.
    fn changes_production(args: &Value) -> bool {
        let _ = args;
        false
    }

    /// The bare tool function.
    fn run(ctx: &ToolContext, input: Self::Input) -> impl Future<Output = Result<Self::Output>> + Send;

    /// The output as the JSON the outcome carries. The default serialises it, which copies
    /// every string; a tool whose output holds large strings (file contents) overrides this to
    /// move them instead. An override must give exactly the value `serde_json::to_value` gives,
    /// and its tool's tests check that.
    ///
    /// # Errors
    /// When the output does not serialise (a bug in the tool).
    fn into_value(output: Self::Output) -> serde_json::Result<Value> {
        serde_json::to_value(output)
    }
}

/// Adapts a [`TypedTool`] to the JSON-level [`Tool`] trait.
pub struct Typed<T> {
    contract: Contract,
    _tool: std::marker::PhantomData<fn() -> T>,
}

impl<T: TypedTool> Typed<T> {
    /// Compiles the tool's contract.
    ///
    /// # Errors
    /// E4001 when the tool's own schemas are invalid (a bug in the tool).
    pub fn new() -> Result<Typed<T>> {
        Ok(Typed { contract: Contract::new(T::spec())?, _tool: std::marker::PhantomData })
    }
}

impl<T: TypedTool> Tool for Typed<T> {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn target(&self, args: &Value) -> String {
        T::target(args)
    }

    fn changes_production(&self, args: &Value) -> bool {
        self.contract.spec().risk >= Risk::High || T::changes_production(args)
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, args: &'a Value) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            let input = T::Input::deserialize(args).map_err(|e| {
                Error::new(ErrorCode::InvalidArguments, format!("{}: {e}", self.contract.spec().name))
                    .with_details(json!({ "tool": self.contract.spec().name, "problem": e.to_string() }))
            })?;
            let output = T::run(ctx, input).await?;
            T::into_value(output).map_err(|e| {
                Error::new(
                    ErrorCode::ToolFailed,
                    format!("{}: output not serialisable: {e}", self.contract.spec().name),
                )
            })
        })
    }
}

/// All tools by name.
#[derive(Clone, Default)]
pub struct Registry {
    tools: BTreeMap<&'static str, Arc<dyn Tool>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// Every built-in tool.
    ///
    /// # Errors
    /// E4001 when a built-in contract fails to compile (a bug, caught by the tests).
    pub fn builtin() -> Result<Registry> {
        let mut r = Registry::empty();
        r.add_typed::<system::info::SystemInfo>()?;
        r.add_typed::<system::process_list::ProcessList>()?;
        r.add_typed::<system::service_status::ServiceStatus>()?;
        r.add_typed::<system::service_restart::ServiceRestart>()?;
        r.add_typed::<git::status::GitStatus>()?;
        r.add_typed::<git::log::GitLog>()?;
        r.add_typed::<git::diff::GitDiff>()?;
        r.add_typed::<git::pull::GitPull>()?;
        r.add_typed::<git::commit::GitCommit>()?;
        r.add_typed::<git::push::GitPush>()?;
        r.add_typed::<file::read::FileRead>()?;
        r.add_typed::<file::write::FileWrite>()?;
        r.add_typed::<file::list::FileList>()?;
        r.add_typed::<file::search::FileSearch>()?;
        r.add_typed::<http::get::HttpGet>()?;
        r.add_typed::<http::post::HttpPost>()?;
        r.add_typed::<gitea::list_issues::GiteaListIssues>()?;
        r.add_typed::<gitea::update_issue::GiteaUpdateIssue>()?;
        r.add_typed::<gitea::create_pr::GiteaCreatePr>()?;
        Ok(r)
    }

    /// Adds a typed tool.
    ///
    /// # Errors
    /// E4001 when its contract fails to compile.
    pub fn add_typed<T: TypedTool>(&mut self) -> Result<&mut Registry> {
        Ok(self.add(Arc::new(Typed::<T>::new()?)))
    }

    /// Adds (or replaces) a tool.
    pub fn add(&mut self, tool: Arc<dyn Tool>) -> &mut Registry {
        self.tools.insert(tool.contract().spec().name, tool);
        self
    }

    /// The tool of that name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    /// All tools, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.tools.values()
    }

    /// How many tools there are.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// The tool named `name`, or the one unknown-tool error (E1001): the name echoed bounded
    /// ([`crate::error::echo`]) with the tools known.
    ///
    /// # Errors
    /// E1001 when no tool has that name.
    pub fn require(&self, name: &str) -> Result<&Arc<dyn Tool>> {
        self.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.iter().map(|t| t.contract().spec().name).collect();
            let tool = crate::error::echo(name);
            Error::new(ErrorCode::UnknownTool, format!("unknown tool `{tool}`"))
                .with_details(json!({ "tool": tool, "known": known }))
        })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

/// Reads a string field from validated arguments (empty when absent).
pub fn arg_str<'a>(args: &'a Value, field: &str) -> &'a str {
    args.get(field).and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves `Registry::require` finds a tool by name and answers an unknown one with E1001,
    /// its name cut to the echo bound and the known tools listed.
    #[test]
    fn require_is_the_one_unknown_tool_error() {
        let r = Registry::builtin().expect("builtin");
        assert_eq!(r.require("file_read").map(|t| t.contract().spec().name).ok(), Some("file_read"));
        let e = r.require(&"x".repeat(10_000)).err().expect("unknown");
        assert_eq!(e.code, ErrorCode::UnknownTool);
        assert!(e.message.len() < 200, "{}", e.message.len());
        assert_eq!(e.details["known"].as_array().map(Vec::len), Some(r.len()));
    }

    /// Proves every built-in contract compiles and every schema is an object schema that
    /// refuses unknown fields, so typos in arguments are caught.
    #[test]
    fn builtin_contracts_compile_and_are_closed() {
        let r = Registry::builtin().expect("builtin contracts compile");
        assert!(!r.is_empty());
        for t in r.iter() {
            let c = t.contract().spec();
            assert_eq!(c.input_schema["type"], "object", "{}", c.name);
            assert_eq!(c.input_schema["additionalProperties"], false, "{}", c.name);
            assert!(!c.description.is_empty());
            if c.annotations.read_only {
                assert!(!c.annotations.destructive, "{} is read-only and destructive", c.name);
                assert_eq!(c.risk, Risk::Low, "{} is read-only so low risk", c.name);
            }
        }
    }
}
