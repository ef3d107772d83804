//! The one entry point: [`Harness::execute`].
//!
//! A call flows one way:
//!
//! ```text
//! lookup -> validate (contract) -> policy (house + mode) -> approve (when policy asks)
//!        -> execute (Simple: timeout; otherwise limit, breaker, retry, timeout) -> record
//! ```
//!
//! Nothing with a side effect happens before validation and policy have passed. Every call
//! that names a known tool leaves a provenance record, refused or not.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::approval::{self, Approval, ApprovalRequest, Approver, DenyAll};
use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};
use crate::executor::{Call, CallSpec, Executor};
use crate::house::{House, Mode};
use crate::intelligence::{CallNotes, Intelligence};
use crate::policy::{self, CallFacts, HousePolicy};
use crate::provenance::{self, MemoryLog, ProvenanceLog, Record};
use crate::tools::file::Roots;
use crate::tools::{Registry, ToolContext, ToolEnv};

/// One call, with everything beyond the tool name and arguments optional.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Tool name.
    pub tool: String,
    /// Arguments, checked against the tool's input schema.
    pub args: Value,
    /// The mode to run in; the harness's own when absent. One harness serves every mode with
    /// one executor, so a breaker opened in one mode refuses the same (tool, target) in all.
    pub mode: Option<Mode>,
    /// Session the call belongs to; the harness's own session when absent.
    pub session: Option<String>,
    /// Provenance id of a prior successful check (Bezalel's proof).
    pub proof: Option<String>,
    /// Makes a non-idempotent call safe to retry.
    pub idempotency_key: Option<String>,
    /// Report what would change; change nothing.
    pub dry_run: bool,
    /// Per-attempt timeout; the contract's default (or the config override) when absent.
    pub timeout: Option<Duration>,
    /// An approval obtained beforehand; otherwise the approver is asked when needed.
    pub approval: Option<Approval>,
    /// A signed approval token for the approver to check (see `tokens`).
    pub approval_token: Option<String>,
    /// The call this one is made on behalf of (recorded as the provenance parent id).
    pub parent: Option<String>,
    /// The house the call is run for, when another house's harness runs it (a router task's
    /// submitter). Its policy must pass as well as this harness's own, so running a call
    /// elsewhere never widens what the asking house may do.
    pub on_behalf_of: Option<House>,
}

impl Request {
    /// A request for `tool` with `args` and nothing else.
    pub fn new(tool: impl Into<String>, args: Value) -> Request {
        Request { tool: tool.into(), args, ..Request::default() }
    }
}

/// What a successful call returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// This call's id.
    pub request_id: String,
    /// The provenance record's id (cite it as a proof). Locally this is the request id, so a
    /// failed call's record is found from the `request_id` its error carries.
    pub provenance_id: String,
    /// Session of the call (shared with its provenance record, so no copy).
    pub session: Arc<str>,
    /// Tool run (its contract's static name for a local call, so no copy).
    pub tool: Cow<'static, str>,
    /// Calling house.
    pub house: House,
    /// Mode the call ran in.
    pub mode: Mode,
    /// The tool's output, matching its output schema.
    pub output: Value,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Attempts made (more than one when retried).
    pub attempts: u32,
    /// Wall time in microseconds.
    pub duration_us: u64,
    /// Why the call ran in a lesser mode than asked, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// Things the caller should know (never secrets).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One finished call as an [`Observer`] sees it: facts only, never arguments or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// The call's request id.
    pub request_id: String,
    /// The provenance record's id; empty when the call was refused before execution.
    pub provenance_id: String,
    /// The call this one was made on behalf of (a router task), if any.
    pub parent: Option<String>,
    /// Session of the call.
    pub session: String,
    /// Tool called.
    pub tool: String,
    /// Calling house.
    pub house: House,
    /// Mode the call ran in (Simple when it degraded).
    pub mode: Mode,
    /// The argument fingerprint the pattern DB keys on (see [`crate::intelligence::fingerprint`]).
    pub fingerprint: u64,
    /// Whether the call produced an outcome.
    pub success: bool,
    /// The error code when it did not.
    pub error_code: Option<ErrorCode>,
    /// Wall time in microseconds.
    pub duration_us: u64,
    /// Tool attempts made (0 when unknown: the call failed before the executor counted).
    pub attempts: u32,
    /// Why the call ran in a lesser mode, if it did.
    pub degraded: Option<String>,
    /// Whether it was a dry run.
    pub dry_run: bool,
}

/// Told about every finished call that named a known tool (telemetry). Called on the
/// call's own task after its provenance record: it must not block (hand the event to a
/// bounded queue and return).
pub trait Observer: Send + Sync {
    /// One call finished.
    fn executed(&self, execution: &Execution);
}

/// Builds a [`Harness`].
pub struct HarnessBuilder {
    house: House,
    mode: Mode,
    config: Config,
    registry: Option<Registry>,
    log: Option<Arc<dyn ProvenanceLog>>,
    mode_logs: Vec<(Mode, Arc<dyn ProvenanceLog>)>,
    approver: Arc<dyn Approver>,
    policy: Option<HousePolicy>,
    session: Option<String>,
    intelligence: Option<Arc<Intelligence>>,
    observer: Option<Arc<dyn Observer>>,
    gitea: Option<Arc<dyn crate::gitea::Gitea>>,
}

impl std::fmt::Debug for HarnessBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarnessBuilder").field("house", &self.house).field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl HarnessBuilder {
    /// The calling house (default Timmy).
    pub fn house(mut self, house: House) -> Self {
        self.house = house;
        self
    }

    /// The mode (default Intelligent).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The configuration (default: [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The tools (default: every built-in tool).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Where provenance goes (default: a bounded in-memory log).
    pub fn provenance(mut self, log: Arc<dyn ProvenanceLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Where the provenance of calls in `mode` goes, instead of [`HarnessBuilder::provenance`]'s
    /// log (a worker audits Sovereign calls only, when configured so).
    pub fn provenance_for(mut self, mode: Mode, log: Arc<dyn ProvenanceLog>) -> Self {
        self.mode_logs.push((mode, log));
        self
    }

    /// Who approves (default: nobody, so calls needing approval fail closed).
    pub fn approver(mut self, approver: Arc<dyn Approver>) -> Self {
        self.approver = approver;
        self
    }

    /// Narrows the house's built-in policy (default: `config.policy`, else the built-in one).
    /// Only narrowing is accepted: a policy that would loosen a rule of SYSTEM.md §1 is refused.
    pub fn policy(mut self, policy: HousePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The session calls belong to when a request names none (default: a fresh id).
    pub fn session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }

    /// The pattern DB and model behind Intelligent mode, shared if the caller keeps a handle
    /// (default: opened from `config.intelligence` when enabled there, else none).
    pub fn intelligence(mut self, intelligence: Arc<Intelligence>) -> Self {
        self.intelligence = Some(intelligence);
        self
    }

    /// Tells `observer` about every finished call (default: nobody).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The Gitea client the Gitea tools use (default: one built from `config.gitea`, else none).
    pub fn gitea(mut self, gitea: Arc<dyn crate::gitea::Gitea>) -> Self {
        self.gitea = Some(gitea);
        self
    }

    /// Builds the harness.
    ///
    /// # Errors
    /// E4001 for an invalid config or a loosened policy, E4003 for an unusable file root.
    pub fn build(self) -> Result<Harness> {
        self.config.validate()?;
        let base = HousePolicy::default_for(self.house);
        let policy = match self.policy.or_else(|| self.config.policy.clone()) {
            Some(p) => {
                narrows(&base, &p)?;
                p
            }
            None => base,
        };
        let roots = Roots::new(&self.config.file_roots)?.allow_hard_links(self.config.allow_hard_links);
        let mut env = ToolEnv::new(roots);
        env.git = self.config.git_binary.clone();
        env.egress = Arc::new(crate::tools::http::egress::Egress::for_house(&self.config.egress, self.house)?);
        env.gitea = match (self.gitea, &self.config.gitea) {
            (Some(g), _) => Some(g),
            (None, Some(g)) => Some(Arc::new(crate::gitea::GiteaClient::new(g)?)),
            (None, None) => None,
        };
        let registry = match self.registry {
            Some(r) => r,
            None => Registry::builtin()?,
        };
        let intelligence = match self.intelligence {
            Some(i) => Some(i),
            None if self.config.intelligence.enabled => {
                let c = &self.config.intelligence;
                let path = c.db_path.clone().unwrap_or_else(|| self.config.home_dir().join("patterns.db"));
                Some(Intelligence::open(c, path, &self.config.node_name())?)
            }
            None => None,
        };
        Ok(Harness {
            inner: Arc::new(Inner {
                intelligence,
                observer: self.observer,
                house: self.house,
                mode: self.mode,
                node: self.config.node_name(),
                executor: Executor::new(&self.config.executor),
                env: Arc::new(env),
                registry,
                policy,
                logs: {
                    let default = self.log.unwrap_or_else(|| Arc::new(MemoryLog::default()));
                    let mut logs = [default.clone(), default.clone(), default];
                    for (mode, log) in self.mode_logs {
                        logs[slot(mode)] = log;
                    }
                    logs
                },
                approver: self.approver,
                session: self.session.unwrap_or_else(provenance::new_id).into(),
                config: self.config,
            }),
        })
    }
}

/// The index of `mode`'s provenance log in `Inner::logs`.
const fn slot(mode: Mode) -> usize {
    match mode {
        Mode::Simple => 0,
        Mode::Intelligent => 1,
        Mode::Sovereign => 2,
    }
}

/// Whether a call that ended with `error` reached the executor (what the pattern DB records):
/// contract, policy, auth and config refusals and a predicted failure did not.
fn executed(error: Option<ErrorCode>) -> bool {
    use crate::error::Category;
    error.is_none_or(|c| {
        matches!(c.category(), Category::Execution)
            && !matches!(c, ErrorCode::PredictedFailure | ErrorCode::ProvenanceUnavailable)
    })
}

/// Checks that `policy` only narrows `house`'s built-in policy: what
/// [`HarnessBuilder::policy`] and `Config::policy` accept.
///
/// # Errors
/// E4001 naming the field (`denied_tools`, ...) that `policy` loosens.
pub fn check_policy(house: House, policy: &HousePolicy) -> Result<()> {
    narrows(&HousePolicy::default_for(house), policy)
}

fn narrows(base: &HousePolicy, p: &HousePolicy) -> Result<()> {
    let loosened = |field: &str| {
        Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!("house policy may only narrow the built-in one: `{field}` loosens it"),
        )
        .with_details(json!({ "field": field })))
    };
    if p.allowed_categories.iter().any(|c| !base.allowed_categories.contains(c)) {
        return loosened("allowed_categories");
    }
    if base.denied_tools.iter().any(|t| !p.denied_tools.contains(t)) {
        return loosened("denied_tools");
    }
    if base.read_before_write && !p.read_before_write {
        return loosened("read_before_write");
    }
    if base.proof_required && !p.proof_required {
        return loosened("proof_required");
    }
    if base.production_needs_approval && !p.production_needs_approval {
        return loosened("production_needs_approval");
    }
    Ok(())
}

/// Runs tools for one house, in its own mode or the one a request names. Cheap to clone;
/// share it.
#[derive(Clone)]
pub struct Harness {
    inner: Arc<Inner>,
}

struct Inner {
    house: House,
    mode: Mode,
    node: String,
    executor: Executor,
    env: Arc<ToolEnv>,
    registry: Registry,
    policy: HousePolicy,
    /// Provenance per mode, by [`slot`].
    logs: [Arc<dyn ProvenanceLog>; 3],
    approver: Arc<dyn Approver>,
    session: Arc<str>,
    config: Config,
    intelligence: Option<Arc<Intelligence>>,
    observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("house", &self.inner.house)
            .field("mode", &self.inner.mode)
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// Starts building a harness.
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            house: House::Timmy,
            mode: Mode::default(),
            config: Config::default(),
            registry: None,
            log: None,
            mode_logs: Vec::new(),
            approver: Arc::new(DenyAll),
            policy: None,
            session: None,
            intelligence: None,
            observer: None,
            gitea: None,
        }
    }

    /// The calling house.
    pub fn house(&self) -> House {
        self.inner.house
    }

    /// The mode a request that names none runs in.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The default session.
    pub fn session(&self) -> &str {
        &self.inner.session
    }

    /// The tools.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The executor (breaker state, for status pages and tests).
    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// Intelligent mode's pattern DB and model, when the harness has them.
    pub fn intelligence(&self) -> Option<&Arc<Intelligence>> {
        self.inner.intelligence.as_ref()
    }

    /// The provenance log of calls in the harness's own mode.
    pub fn provenance(&self) -> &Arc<dyn ProvenanceLog> {
        self.provenance_of(self.inner.mode)
    }

    /// The provenance log of calls in `mode`.
    pub fn provenance_of(&self, mode: Mode) -> &Arc<dyn ProvenanceLog> {
        &self.inner.logs[slot(mode)]
    }

    /// Runs `tool` with `args` in the harness's session.
    ///
    /// # Errors
    /// E1xxx for bad input, E2xxx when policy refuses, E3xxx when execution fails; the error
    /// carries the request id.
    pub async fn execute(&self, tool: &str, args: Value) -> Result<Outcome> {
        // The name is borrowed, not copied into a `Request`: this is every local call's path.
        self.execute_named(tool, Request { args, ..Request::default() }).await
    }

    /// Runs one request.
    ///
    /// # Errors
    /// As [`Harness::execute`].
    pub async fn execute_request(&self, mut req: Request) -> Result<Outcome> {
        let tool = std::mem::take(&mut req.tool);
        self.execute_named(&tool, req).await
    }

    /// Runs `req` as a call of `tool` (`req.tool` is not read).
    async fn execute_named(&self, tool: &str, req: Request) -> Result<Outcome> {
        let request_id = provenance::new_id();
        match self.run(&request_id, tool, req).await {
            // `run` leaves the outcome's request id empty, so the id moves in here uncopied.
            Ok(outcome) => Ok(Outcome { request_id, ..outcome }),
            Err(e) => Err(e.with_request_id(request_id)),
        }
    }

    /// Runs requests in parallel (bounded by the executor's concurrency limit outside Simple
    /// mode); results come back in the order of the requests.
    pub async fn execute_many(&self, requests: Vec<Request>) -> Vec<Result<Outcome>> {
        let handles: Vec<_> = requests
            .into_iter()
            .map(|r| {
                let h = self.clone();
                tokio::spawn(async move { h.execute_request(r).await })
            })
            .collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.unwrap_or_else(|e| {
                Err(Error::new(ErrorCode::ToolFailed, format!("call task ended abnormally: {e}")))
            }));
        }
        out
    }

    async fn run(&self, request_id: &str, tool: &str, mut req: Request) -> Result<Outcome> {
        let inner = &*self.inner;
        let started = Instant::now();
        let started_ms = provenance::now_ms();
        let tool = inner.registry.require(tool)?;
        let contract = tool.contract().spec();
        let mode = req.mode.unwrap_or(inner.mode);
        let log = &inner.logs[slot(mode)];
        let session: Arc<str> = req.session.take().map_or_else(|| inner.session.clone(), Arc::from);
        let target = tool.target(&req.args);
        let args_sha256 = approval::args_sha256(&req.args);

        let dry_run = req.dry_run;
        let parent_id = req.parent.take();
        // Computed once for whoever needs it: the observer's event and the pattern DB's row.
        let fingerprint = (inner.observer.is_some() || inner.intelligence.is_some())
            .then(|| crate::intelligence::fingerprint_by(&req.args, |k| tool.contract().is_enumerated(k)));
        let mut approvals = Vec::new();
        let mut notes = CallNotes::default();
        let result = self
            .checked_call(
                request_id,
                req,
                mode,
                tool,
                &session,
                &target,
                &args_sha256,
                fingerprint.unwrap_or_default(),
                &mut approvals,
                &mut notes,
            )
            .await;

        let duration_us = started.elapsed().as_micros() as u64;
        if let Some(intel) = &inner.intelligence {
            intel.finish(&mut notes, contract.name, inner.house, result.as_ref().err(), started_ms, duration_us);
        }
        let record = Record {
            id: request_id.to_owned(),
            seq: 0,
            parent_id,
            session: session.clone(),
            house: inner.house,
            mode,
            node: inner.node.clone(),
            tool: Cow::Borrowed(contract.name),
            target,
            read_only: contract.annotations.read_only,
            dry_run,
            ok: result.is_ok(),
            error_code: result.as_ref().err().map(|e| e.code.as_str().to_owned()),
            args_sha256,
            result_sha256: result.as_ref().ok().map(|(out, _)| crate::hash::sha256_value(out)),
            approvals,
            started_ms,
            // From the monotonic duration: one clock read fewer, and never before the start.
            ended_ms: started_ms + duration_us / 1000,
            duration_us,
        };
        let provenance_id = record.id.clone();
        let observed = inner.observer.as_ref().zip(fingerprint).map(|(o, fp)| {
            let error_code = result.as_ref().err().map(|e| e.code);
            (
                o.clone(),
                Execution {
                    request_id: request_id.to_owned(),
                    provenance_id: if executed(error_code) { provenance_id.clone() } else { String::new() },
                    parent: record.parent_id.clone(),
                    session: session.to_string(),
                    tool: contract.name.to_owned(),
                    house: inner.house,
                    mode: if notes.degraded.is_some() { Mode::Simple } else { mode },
                    fingerprint: fp,
                    success: result.is_ok(),
                    error_code,
                    duration_us,
                    attempts: result.as_ref().map_or(0, |(_, a)| *a),
                    degraded: notes.degraded.clone(),
                    dry_run,
                },
            )
        });
        let mut warnings = std::mem::take(&mut notes.warnings);
        if let Err(e) = log.submit(record).wait().await {
            // Sovereign: a result nobody recorded is not returned (fail closed).
            if mode == Mode::Sovereign {
                return Err(e);
            }
            tracing::warn!(error = %e, "provenance record not written");
            warnings.push(format!("provenance record not written: {}", e.message));
        }
        if let Some((observer, execution)) = observed {
            observer.executed(&execution);
        }
        let (output, attempts) = result?;
        Ok(Outcome {
            // Filled in by `execute_request`, which owns the id.
            request_id: String::new(),
            provenance_id,
            session,
            tool: Cow::Borrowed(contract.name),
            house: inner.house,
            mode,
            output,
            dry_run,
            attempts,
            duration_us,
            degraded: notes.degraded,
            warnings,
        })
    }

    #[allow(clippy::too_many_arguments)] // the call's facts, computed once in `run`
    async fn checked_call(
        &self,
        request_id: &str,
        req: Request,
        mode: Mode,
        tool: &Arc<dyn crate::tools::Tool>,
        session: &str,
        target: &str,
        args_sha256: &str,
        fingerprint: u64,
        approvals: &mut Vec<Approval>,
        notes: &mut CallNotes,
    ) -> Result<(Value, u32)> {
        let inner = &*self.inner;
        let log = &*inner.logs[slot(mode)];
        let contract = tool.contract();
        contract.validate_input(&req.args)?;
        let read_only = contract.spec().annotations.read_only;
        if req.dry_run && !read_only && !contract.spec().dry_run {
            return Err(Error::new(
                ErrorCode::DryRunUnsupported,
                format!("{} cannot do a dry run", contract.spec().name),
            )
            .with_details(json!({ "tool": contract.spec().name })));
        }
        let facts = CallFacts {
            house: inner.house,
            mode,
            contract,
            args: &req.args,
            changes_nothing: read_only || req.dry_run,
            changes_production: tool.changes_production(&req.args),
            target,
            session,
            proof: req.proof.as_deref(),
        };
        let mut needs = policy::check(&inner.policy, &facts, log)?;
        if let Some(caller) = req.on_behalf_of.filter(|c| *c != inner.house) {
            let theirs = HousePolicy::default_for(caller);
            needs.approval |= policy::check(&theirs, &CallFacts { house: caller, ..facts }, log)?.approval;
        }
        if needs.approval {
            let ask = ApprovalRequest {
                request_id: request_id.to_owned(),
                house: inner.house,
                mode,
                node: inner.node.clone(),
                tool: contract.spec().name.to_owned(),
                args: approval::redact(&req.args),
                call_args: req.args.clone(),
                args_sha256: args_sha256.to_owned(),
                reason: if mode == Mode::Sovereign && !read_only {
                    "Sovereign mode: not read-only".into()
                } else {
                    "changes production".into()
                },
                token: req.approval_token.clone(),
            };
            let granted = match &req.approval {
                Some(a) => a.clone(),
                None => inner.approver.approve(&ask).await?,
            };
            approval::verify(&granted, &ask)?;
            approvals.push(granted);
        }
        if mode == Mode::Sovereign {
            // Fail closed: no tool runs in Sovereign mode unless its record can be written.
            log.ready()?;
        }

        let timeout = self.timeout_for(contract.spec().name, contract.spec().default_timeout, req.timeout);
        let (mode, timeout) = match &inner.intelligence {
            Some(intel) => {
                let max = inner.config.max_timeout();
                intel.plan(notes, contract, inner.house, mode, fingerprint, timeout, req.timeout.is_some(), max)?
            }
            None => (mode, timeout),
        };
        let ctx = ToolContext::new(inner.env.clone(), inner.house, req.dry_run, request_id);
        if mode == Mode::Simple {
            // One attempt under the timeout, nothing shared: no `Call` to build.
            let output = inner.executor.run_once(&**tool, &ctx, &req.args, timeout).await?;
            return Ok((output, 1));
        }
        let call = Call::new(CallSpec {
            tool: tool.clone(),
            ctx,
            args: req.args,
            target: target.to_owned(),
            timeout,
            idempotency_key: req.idempotency_key,
            max_retries: notes.max_retries,
        });
        let counted = call.clone();
        let output = inner.executor.run_full(call).await?;
        Ok((output, counted.attempts()))
    }

    fn timeout_for(&self, tool: &str, default: Duration, asked: Option<Duration>) -> Duration {
        let config = &self.inner.config;
        let base = config.timeouts_ms.get(tool).map_or(default, |ms| Duration::from_millis(*ms));
        asked.unwrap_or(base).min(config.max_timeout())
    }
}
