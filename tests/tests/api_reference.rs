//! docs/API_REFERENCE.md covers the whole public surface, and only what exists.
//!
//! The surface is read from its sources, never listed by hand: every `rpc` of every `service`
//! in `proto/proto/**/*.proto` (as `package.Service/Method`), and every subcommand of the
//! `uni-wizard` CLI at every depth, walked from its clap definition (`Cli`, as
//! `uni-wizard config check`), plus the daemon `uni-wizardd`. Each must have a section headed
//! `` ### `<name>` `` whose body shows it used: the RPC's full name in a `grpcurl` command, the
//! command line with the subcommand in it. A heading of either form that names nothing real is
//! an error too, so a removed or renamed RPC or subcommand cannot stay documented.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use uni_wizard_daemons::cli::Cli;
use uni_wizard_daemons::daemon::DaemonArgs;
use uni_wizard_proto::v1::{router_server, sovereign_server, telemetry_server, worker_server};

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The reference, as committed.
fn reference() -> String {
    let path = workspace().join("docs/API_REFERENCE.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every `.proto` file under `dir`, sorted.
fn proto_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "proto") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The `package.Service/Method` of every rpc in one `.proto` file's text. Comments are
/// dropped first; a service's block ends at its matching `}` (an rpc with an options block
/// `{ ... }` nests inside it).
fn rpcs_of(text: &str) -> Vec<String> {
    let code: String = text.lines().map(|l| l.find("//").map_or(l, |at| &l[..at])).collect::<Vec<_>>().join("\n");
    let tokens: Vec<String> = code
        .replace('{', " { ")
        .replace('}', " } ")
        .replace('(', " ( ")
        .replace(';', " ; ")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let package = tokens.windows(2).find(|w| w[0] == "package").map(|w| w[1].clone()).unwrap_or_default();
    let mut out = Vec::new();
    let mut service: Option<(String, usize)> = None;
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate() {
        match t.as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if service.as_ref().is_some_and(|(_, at)| *at == depth) {
                    service = None;
                }
            }
            "service" if depth == 0 => {
                if let Some(name) = tokens.get(i + 1) {
                    service = Some((name.clone(), depth));
                }
            }
            "rpc" => {
                if let (Some((s, _)), Some(method)) = (&service, tokens.get(i + 1)) {
                    out.push(format!("{package}.{s}/{method}"));
                }
            }
            _ => {}
        }
    }
    out
}

/// Every public RPC of the protos, as `package.Service/Method`.
fn public_rpcs() -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for file in proto_files(&workspace().join("proto/proto")) {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        all.extend(rpcs_of(&text));
    }
    all
}

/// Every subcommand path of `cmd` below `prefix` (parents included), without clap's `help` and
/// hidden subcommands (`generate-assets`, a packaging step: no operator runs it).
fn command_paths(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help" && !s.is_hide_set()) {
        let path = format!("{prefix} {}", sub.get_name());
        out.insert(path.clone());
        command_paths(sub, &path, out);
    }
}

/// Every CLI command an operator types: each `uni-wizard` subcommand at every depth, and the
/// daemon.
fn cli_commands() -> BTreeSet<String> {
    let cli = Cli::command();
    let mut all = BTreeSet::new();
    command_paths(&cli, cli.get_name(), &mut all);
    all.insert(DaemonArgs::command().get_name().to_owned());
    all
}

/// The reference's `### ` sections: heading text -> body up to the next heading.
fn sections(doc: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            out.push((h.trim().to_owned(), String::new()));
        } else if line.starts_with("## ") {
            out.push((String::new(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out.retain(|(h, _)| !h.is_empty());
    out
}

/// The body of the section headed `` `name` ``, if there is one.
fn section<'a>(all: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let heading = format!("`{name}`");
    all.iter().find(|(h, _)| *h == heading).map(|(_, b)| b.as_str())
}

/// Proves the proto reader finds every service tonic generates, streaming rpcs and nested braces included.
#[test]
fn the_proto_reader_finds_every_service_and_rpc() {
    let rpcs = public_rpcs();
    let services: BTreeSet<&str> = rpcs.iter().filter_map(|r| r.split('/').next()).collect();
    let generated: BTreeSet<&str> = [
        router_server::SERVICE_NAME,
        worker_server::SERVICE_NAME,
        sovereign_server::SERVICE_NAME,
        telemetry_server::SERVICE_NAME,
    ]
    .into();
    assert_eq!(services, generated);
    assert!(rpcs.contains("uniwizard.v1.Telemetry/Stream"), "a streaming rpc is read: {rpcs:?}");
    let nested = "package p.v1;\n// service Ghost { rpc Boo(A) returns (B); }\nservice S {\n  rpc A(X) returns (Y) { option deprecated = true; }\n  rpc B(stream X) returns (stream Y);\n}\nmessage M { string s = 1; }\n";
    assert_eq!(rpcs_of(nested), vec!["p.v1.S/A".to_owned(), "p.v1.S/B".to_owned()]);
}

/// Proves every public RPC of proto/ has a section in docs/API_REFERENCE.md with a grpcurl example calling it.
#[test]
fn every_public_rpc_has_a_section_with_a_grpcurl_example() {
    let doc = reference();
    let all = sections(&doc);
    let mut missing = Vec::new();
    for rpc in public_rpcs() {
        match section(&all, &rpc) {
            None => missing.push(format!("{rpc}: no section headed ### `{rpc}`")),
            Some(body) => {
                let example = body.lines().any(|l| l.contains(&rpc)) && body.contains("grpcurl ");
                if !example {
                    missing.push(format!("{rpc}: its section has no grpcurl example calling {rpc}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "docs/API_REFERENCE.md lacks:\n{}", missing.join("\n"));
}

/// Proves every CLI subcommand at every depth, and the daemon, has a section with an example in docs/API_REFERENCE.md.
#[test]
fn every_cli_subcommand_has_a_section_with_an_example() {
    let commands = cli_commands();
    assert!(commands.contains("uni-wizard config check"), "nested subcommands are walked: {commands:?}");
    let doc = reference();
    let all = sections(&doc);
    let mut missing = Vec::new();
    for command in commands {
        match section(&all, &command) {
            None => missing.push(format!("{command}: no section headed ### `{command}`")),
            Some(body) if !body.contains(&format!("{command} ")) => {
                missing.push(format!("{command}: its section has no example command line"));
            }
            Some(_) => {}
        }
    }
    assert!(missing.is_empty(), "docs/API_REFERENCE.md lacks:\n{}", missing.join("\n"));
}

/// Proves docs/API_REFERENCE.md documents no RPC and no command that does not exist.
#[test]
fn the_reference_documents_nothing_that_does_not_exist() {
    let (rpcs, commands) = (public_rpcs(), cli_commands());
    let doc = reference();
    let mut stale = Vec::new();
    for (heading, _) in sections(&doc) {
        let Some(name) = heading.strip_prefix('`').and_then(|h| h.strip_suffix('`')) else { continue };
        let is_rpc = name.starts_with("uniwizard.") && name.contains('/');
        let is_command = name == "uni-wizardd" || name.starts_with("uni-wizard ");
        if (is_rpc && !rpcs.contains(name)) || (is_command && !commands.contains(name)) {
            stale.push(name.to_owned());
        }
    }
    assert!(stale.is_empty(), "docs/API_REFERENCE.md documents what does not exist: {stale:?}");
}
