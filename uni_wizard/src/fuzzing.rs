//! Fuzz target bodies for the library's side of the edge: tool arguments and the parsers of
//! what `/proc` and git print. `docs/FUZZING.md` says how to run them.
//!
//! Each `pub fn <target>(data: &[u8])` takes the fuzzer's bytes and only *calls* the code under
//! test; a panic is a finding. The bodies live here, in normal crate code, so they compile in
//! every build and never rot: the afl binaries in `fuzz/` are one line each, and
//! `daemons/tests/fuzz_corpus.rs` replays every seed and every past crash through the same
//! functions on each `cargo test`.
//!
//! Besides "no panic", some targets check what the contract promises:
//!
//! - [`tool_args`]: a call is accepted or refused with a stable code, never half-run; an
//!   accepted call passed its contract's validation; arguments the contract accepts are ones
//!   the tool's `Input` deserialises (else the contract lies about what the tool takes).
//! - [`git_status`], [`git_log`], [`git_diff`]: whatever git prints, a parse that succeeds
//!   gives an output that matches the tool's declared output schema.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::contract::Contract;
use crate::error::{Error, ErrorCode, Result};
use crate::future::BoxFuture;
use crate::harness::{Harness, Request};
use crate::house::{House, Mode};
use crate::tools::git::{diff, log, status};
use crate::tools::{Registry, Tool, ToolContext, Typed, TypedTool, file, git, gitea, http, system};

/// The `details.stage` of the refusal an [`ArgsOnly`] tool gives when the tool's `Input`
/// refuses arguments the contract let through.
const INPUT_REFUSED: &str = "fuzzing: Input refused arguments the contract accepted";

/// A built-in tool with its real contract, target and production rule, whose call only
/// deserialises the arguments into the tool's `Input`: the whole harness path runs, the tool
/// does not.
struct ArgsOnly<T>(Typed<T>);

impl<T: TypedTool> Tool for ArgsOnly<T> {
    fn contract(&self) -> &Contract {
        self.0.contract()
    }

    fn target(&self, args: &Value) -> String {
        self.0.target(args)
    }

    fn changes_production(&self, args: &Value) -> bool {
        self.0.changes_production(args)
    }

    fn call<'a>(&'a self, _ctx: &'a ToolContext, args: &'a Value) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            match T::Input::deserialize(args) {
                Ok(_) => Ok(json!({ "deserialised": true })),
                Err(e) => Err(Error::new(ErrorCode::InvalidArguments, format!("{}: {e}", self.contract().spec().name))
                    .with_details(json!({ "stage": INPUT_REFUSED }))),
            }
        })
    }
}

fn add<T: TypedTool>(r: &mut Registry) -> Result<()> {
    r.add(Arc::new(ArgsOnly(Typed::<T>::new()?)));
    Ok(())
}

/// The 19 built-in tools as [`ArgsOnly`] tools: the same names as [`Registry::builtin`] (a
/// test checks the two lists agree), so byte 0 of a [`tool_args`] input names the tool at that
/// index of the sorted names.
///
/// # Errors
/// E4001 when a contract does not compile (a bug).
pub fn args_only_registry() -> Result<Registry> {
    let mut r = Registry::empty();
    add::<system::info::SystemInfo>(&mut r)?;
    add::<system::process_list::ProcessList>(&mut r)?;
    add::<system::service_status::ServiceStatus>(&mut r)?;
    add::<system::service_restart::ServiceRestart>(&mut r)?;
    add::<git::status::GitStatus>(&mut r)?;
    add::<git::log::GitLog>(&mut r)?;
    add::<git::diff::GitDiff>(&mut r)?;
    add::<git::pull::GitPull>(&mut r)?;
    add::<git::commit::GitCommit>(&mut r)?;
    add::<git::push::GitPush>(&mut r)?;
    add::<file::read::FileRead>(&mut r)?;
    add::<file::write::FileWrite>(&mut r)?;
    add::<file::list::FileList>(&mut r)?;
    add::<file::search::FileSearch>(&mut r)?;
    add::<http::get::HttpGet>(&mut r)?;
    add::<http::post::HttpPost>(&mut r)?;
    add::<gitea::list_issues::GiteaListIssues>(&mut r)?;
    add::<gitea::update_issue::GiteaUpdateIssue>(&mut r)?;
    add::<gitea::create_pr::GiteaCreatePr>(&mut r)?;
    Ok(r)
}

/// What the tool-args target builds once per process.
struct ArgsFixture {
    runtime: tokio::runtime::Runtime,
    names: Vec<&'static str>,
    registry: Registry,
    /// One harness per house and mode: house = index / 3, mode = index % 3.
    harnesses: Vec<Harness>,
}

fn args_fixture() -> &'static ArgsFixture {
    static FIXTURE: OnceLock<ArgsFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let Ok(runtime) = runtime else { panic!("fuzzing: no tokio runtime") };
        let Ok(registry) = args_only_registry() else { panic!("fuzzing: a built-in contract does not compile") };
        let names = registry.iter().map(|t| t.contract().spec().name).collect();
        let mut harnesses = Vec::new();
        let _guard = runtime.enter();
        for house in House::ALL {
            for mode in [Mode::Simple, Mode::Intelligent, Mode::Sovereign] {
                let built = Harness::builder().house(house).mode(mode).registry(registry.clone()).build();
                let Ok(h) = built else { panic!("fuzzing: the default harness does not build") };
                harnesses.push(h);
            }
        }
        drop(_guard);
        ArgsFixture { runtime, names, registry, harnesses }
    })
}

/// Tool arguments: byte 0 picks one of the 19 tools, byte 1 the house and mode (low nibble)
/// and the request flags (dry run, session, proof, idempotency key), the rest is the JSON
/// `args_json` carries. Runs the pure functions the harness applies to every call's arguments
/// (target, production rule, redaction, hashing, fingerprint), then the whole
/// `Harness::execute_request` path down to the tool's `Input` deserialisation — never the
/// tool's `run`.
pub fn tool_args(data: &[u8]) {
    let [tool, flags, json @ ..] = data else { return };
    // `args_json` is parsed as JSON first (the wire target covers that step); not JSON, no call.
    let Ok(args) = serde_json::from_slice::<Value>(json) else { return };
    let fx = args_fixture();
    let name = fx.names[usize::from(*tool) % fx.names.len()];
    let Some(t) = fx.registry.get(name) else { return };
    let contract = t.contract();
    let valid = contract.validate_input(&args);
    let _ = t.target(&args);
    let _ = t.changes_production(&args);
    let _ = crate::approval::redact(&args);
    let _ = crate::approval::args_sha256(&args);
    let _ = crate::intelligence::fingerprint(&args, &contract.spec().input_schema);

    let harness = &fx.harnesses[usize::from(flags & 0x0f) % fx.harnesses.len()];
    let mut req = Request::new(name, args);
    req.dry_run = flags & 0x10 != 0;
    if flags & 0x20 != 0 {
        req.session = Some("fuzz-session".into());
    }
    if flags & 0x40 != 0 {
        req.proof = Some("fuzz-proof".into());
    }
    if flags & 0x80 != 0 {
        req.idempotency_key = Some("fuzz-key".into());
    }
    match fx.runtime.block_on(harness.execute_request(req)) {
        Ok(_) => assert!(valid.is_ok(), "{name}: a call ran that its contract refuses: {valid:?}"),
        Err(e) => {
            assert!(
                e.details.get("stage").and_then(Value::as_str) != Some(INPUT_REFUSED),
                "{name}: the contract accepts arguments its Input refuses: {}",
                e.message
            );
            assert!(e.request_id.is_some(), "{name}: a refusal without a request id: {e:?}");
        }
    }
}

/// The `/proc` and `/etc` parsers of `system_info` and `process_list`: byte 0 picks the
/// parser, the rest is the file's text (bytes that are not UTF-8 replaced; `auxv` is binary).
pub fn proc_files(data: &[u8]) {
    use system::info as si;
    use system::process_list as pl;
    let Some((&which, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let shown = match which % 12 {
        0 => format!("{:?}", si::parse_os_release(&text)),
        1 => format!("{:?}", si::parse_uptime(&text)),
        2 => format!("{:?}", si::parse_loadavg(&text)),
        3 => format!("{:?}", si::parse_cpuinfo(&text)),
        4 => format!("{:?}", si::parse_meminfo(&text)),
        5 => format!("{:?}", si::parse_mounts(&text)),
        6 => format!("{:?}", pl::parse_stat(&text)),
        7 => format!("{:?}", pl::parse_status(&text)),
        8 => format!("{:?}", pl::parse_passwd(&text)),
        9 => format!("{:?}", pl::parse_btime(&text)),
        10 => format!("{:?}", pl::parse_auxv_clk_tck(rest)),
        _ => pl::join_cmdline(rest),
    };
    std::hint::black_box(shown);
}

fn contract_of<T: TypedTool>(cell: &'static OnceLock<Contract>) -> &'static Contract {
    cell.get_or_init(|| match Contract::new(T::spec()) {
        Ok(c) => c,
        Err(e) => panic!("fuzzing: contract does not compile: {e}"),
    })
}

fn assert_output<T: serde::Serialize>(contract: &Contract, output: &T) {
    let value = serde_json::to_value(output).unwrap_or(Value::Null);
    if let Err(v) = contract.validate_output(&value) {
        panic!("{}: parsed output breaks the output schema at {}: {}", contract.spec().name, v.pointer, v.message);
    }
}

/// `git status --porcelain=v2 --branch -z` output, as [`status::parse_porcelain_v2`] reads
/// it; a successful parse must make an output that matches `git_status`'s schema.
pub fn git_status(data: &[u8]) {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    let Ok(s) = status::parse_porcelain_v2(data) else { return };
    let output = status::Output {
        repo_path: "/fuzz".into(),
        clean: s.is_clean(),
        branch: s.branch,
        head: s.head,
        upstream: s.upstream,
        ahead: s.ahead,
        behind: s.behind,
        staged: s.staged,
        unstaged: s.unstaged,
        untracked: s.untracked,
        conflicted: s.conflicted,
        state_sha256: crate::hash::sha256_hex(data),
    };
    assert_output(contract_of::<status::GitStatus>(&CONTRACT), &output);
}

/// `git log -z` output in the tool's format, as [`log::parse_log`] reads it; a successful
/// parse must make an output that matches `git_log`'s schema.
pub fn git_log(data: &[u8]) {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    let Ok(commits) = log::parse_log(data) else { return };
    let output = log::Output { repo_path: "/fuzz".into(), commits, truncated: false };
    assert_output(contract_of::<log::GitLog>(&CONTRACT), &output);
}

/// `git diff --raw --numstat -z` output, as [`diff::parse_raw_numstat`] reads it, and the
/// patch cut (byte 0 is the cut in bytes); a successful parse must make an output that
/// matches `git_diff`'s schema.
pub fn git_diff(data: &[u8]) {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    let Some((&max, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (patch, truncated) = diff::cut_at(&text, usize::from(max));
    let Ok(files) = diff::parse_raw_numstat(rest) else { return };
    let output = diff::Output { repo_path: "/fuzz".into(), files, patch: patch.to_owned(), truncated };
    assert_output(contract_of::<diff::GitDiff>(&CONTRACT), &output);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the args-only registry lists exactly the built-in tools.
    #[test]
    fn args_only_registry_matches_the_builtin_one() {
        let names = |r: &Registry| r.iter().map(|t| t.contract().spec().name).collect::<Vec<_>>();
        let (Ok(ours), Ok(builtin)) = (args_only_registry(), Registry::builtin()) else { panic!("registries build") };
        assert_eq!(names(&ours), names(&builtin));
        assert_eq!(ours.len(), 19);
    }

    /// Proves a valid call goes the whole way to the Input and an invalid one is refused.
    #[test]
    fn tool_args_runs_valid_and_invalid_calls() {
        tool_args(b"\x00\x00{\"include_disks\": false}");
        tool_args(b"\x00\x00{\"include_disks\": 3}");
        tool_args(b"\x00\x00[]");
    }
}
