//! The docs stay true to the command line and to the error codes.
//!
//! Every `uni-wizard` and `uni-wizardd` command line written in README.md, ARCHITECTURE.md and
//! docs/*.md (in a code block, or in an inline code span) is resolved against the clap
//! definitions: its subcommands must exist, and every `--flag` it passes must be one that
//! subcommand takes. README's `uw` alias counts as `uni-wizard`. Placeholders (`ID`, `FILE`,
//! `...`) are fine: only names are checked, not values. And docs/TROUBLESHOOTING.md's table has
//! a row for every code docs/ERRORS.md documents.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use uni_wizard_daemons::cli::Cli;
use uni_wizard_daemons::daemon::DaemonArgs;

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The docs whose commands are checked: README.md, ARCHITECTURE.md and docs/*.md, sorted.
fn docs() -> Vec<PathBuf> {
    let root = workspace();
    let mut out = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    let dir = root.join("docs");
    let mut more: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    more.sort();
    out.extend(more);
    out
}

/// The texts of a Markdown file that may hold a command: each line of a fenced block (a line
/// ending in `\` joined with the next), and each inline code span elsewhere, with its line.
fn snippets(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            let (start, mut joined) = pending.take().unwrap_or((n, String::new()));
            joined.push_str(line.trim_end().trim_end_matches('\\'));
            joined.push(' ');
            if line.trim_end().ends_with('\\') {
                pending = Some((start, joined));
            } else {
                out.push((start, joined));
            }
        } else {
            // Inline spans: the text between odd and even backticks (double backticks are rare
            // here and hold no commands).
            out.extend(line.split('`').skip(1).step_by(2).map(|span| (n, span.to_owned())));
        }
    }
    out
}

/// A word that can be a subcommand name.
fn is_word(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && s.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}

/// Tokens that end a command line (a pipe, a list, a comment).
fn ends_command(token: &str) -> bool {
    matches!(token, "|" | "||" | "&&" | ";" | "&") || token.starts_with('#')
}

/// The long flags `cmd` takes, `help` (and at the root `version`) included.
fn long_flags(cmd: &clap::Command, root: bool) -> BTreeSet<String> {
    let mut flags: BTreeSet<String> = cmd.get_arguments().filter_map(|a| a.get_long()).map(str::to_owned).collect();
    flags.insert("help".into());
    if root {
        flags.insert("version".into());
    }
    flags
}

/// The problems of the command lines in `snippet`: an unknown subcommand, a flag the
/// subcommand does not take.
fn check_snippet(snippet: &str, cli: &clap::Command, daemon: &clap::Command) -> Vec<String> {
    // A shell comment is prose, not a command.
    let tokens: Vec<&str> = snippet.split_whitespace().take_while(|t| !t.starts_with('#')).collect();
    let mut problems = Vec::new();
    for (at, raw) in tokens.iter().enumerate() {
        // `T=$(uni-wizard approve ...)` and `$(uni-wizard ...)` invoke it too.
        let word = raw.rsplit("$(").next().unwrap_or(raw);
        let before = if word.len() < raw.len() { None } else { at.checked_sub(1).map(|b| tokens[b]) };
        if matches!(before, Some("-u" | "-g" | "--user" | "--group" | "--shell" | "useradd")) {
            continue;
        }
        // `cargo run --bin uni-wizard -- test ...`: cargo's `--` comes before the subcommand.
        let skip = usize::from(tokens.get(at + 1) == Some(&"--"));
        let next = tokens.get(at + 1 + skip).copied().unwrap_or("");
        let mut cmd = match word {
            "uni-wizard" | "uw" if is_word(next) || next.starts_with("--") => cli,
            "uni-wizardd" if next.starts_with("--") => daemon,
            _ => continue,
        };
        let mut path = word.to_owned();
        let mut i = at + 1 + skip;
        let mut at_root = true;
        while let Some(sub) = tokens.get(i).and_then(|t| cmd.find_subcommand(t)) {
            path = format!("{path} {}", sub.get_name());
            cmd = sub;
            at_root = false;
            i += 1;
        }
        if let Some(t) = tokens.get(i)
            && cmd.has_subcommands()
            && is_word(t)
        {
            problems.push(format!("`{path} {t}`: no such subcommand"));
            continue;
        }
        let flags = long_flags(cmd, at_root);
        for token in &tokens[i..] {
            if ends_command(token) {
                break;
            }
            let last = token.ends_with(')') || token.ends_with("`");
            for part in token.trim_start_matches(['[', '(']).split('/') {
                let Some(name) = part.strip_prefix("--") else { continue };
                let name: String = name.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
                if !name.is_empty() && !flags.contains(&name) {
                    problems.push(format!("`{path}` takes no `--{name}`"));
                }
            }
            if last {
                break;
            }
        }
    }
    problems
}

/// Proves the checker finds a subcommand or a flag that does not exist, and passes real ones.
#[test]
fn the_checker_tells_real_commands_from_made_up_ones() {
    let (cli, daemon) = (Cli::command(), DaemonArgs::command());
    let ok = [
        "uni-wizard config check configs/houses.yaml --json",
        "T=$(uni-wizard approve --sign --house allegro --any-node --tool file_write --arg path=a)",
        "uni-wizard approve --decide ID [--deny] [--note why] --sovereign ADDR | jq .",
        "sudo -u uni-wizard UNI_WIZARD_HOME=/var/lib/uni-wizard uni-wizard keygen",
        "uni-wizardd --check --config F",
        "uw test --house timmy --tool system_info  # a comment --not-a-flag",
        "cargo run --release -p uni_wizard_daemons --bin uni-wizard -- test --house timmy --tool t",
        "grep '^uw_'  # every uni-wizard metric",
        "install -m 0640 -g uni-wizard /dev/stdin /etc/uni-wizard/metrics.token",
    ];
    for line in ok {
        assert_eq!(check_snippet(line, &cli, &daemon), Vec::<String>::new(), "{line}");
    }
    let bad = [
        ("uni-wizard statuz --json", "no such subcommand"),
        ("uni-wizard config chek F", "no such subcommand"),
        ("uni-wizard audit verify --anchors", "takes no `--anchors`"),
        ("uni-wizard audit --db F", "takes no `--db`"),
        ("uni-wizardd --config F --dry-run", "takes no `--dry-run`"),
    ];
    for (line, why) in bad {
        let found = check_snippet(line, &cli, &daemon);
        assert!(found.iter().any(|p| p.contains(why)), "{line}: {found:?}");
    }
}

/// Proves every `uni-wizard`/`uni-wizardd` command line in README, ARCHITECTURE and docs/ uses real subcommands and flags.
#[test]
fn every_command_line_in_the_docs_exists() {
    let (cli, daemon) = (Cli::command(), DaemonArgs::command());
    let mut problems = Vec::new();
    let mut checked = 0usize;
    for file in docs() {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let name = file.strip_prefix(workspace()).unwrap_or(&file).display().to_string();
        for (line, snippet) in snippets(&text) {
            if snippet.contains("uni-wizard") || snippet.contains("uw ") {
                checked += 1;
            }
            problems.extend(check_snippet(&snippet, &cli, &daemon).into_iter().map(|p| format!("{name}:{line}: {p}")));
        }
    }
    assert!(checked > 100, "the docs' command lines were found ({checked})");
    assert!(problems.is_empty(), "command lines that do not exist:\n{}", problems.join("\n"));
}

/// Proves docs/TROUBLESHOOTING.md's table has a row for every code docs/ERRORS.md documents.
#[test]
fn the_troubleshooting_table_covers_every_error_code() {
    let read = |p: &str| std::fs::read_to_string(workspace().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let (errors, troubleshooting) = (read("docs/ERRORS.md"), read("docs/TROUBLESHOOTING.md"));
    let codes: Vec<&str> =
        errors.lines().filter_map(|l| l.strip_prefix("## ")).filter(|c| c.starts_with('E')).collect();
    assert!(codes.len() > 30, "ERRORS.md's codes were found: {codes:?}");
    let missing: Vec<&&str> =
        codes.iter().filter(|c| !troubleshooting.lines().any(|l| l.starts_with(&format!("| {c} |")))).collect();
    assert!(missing.is_empty(), "docs/TROUBLESHOOTING.md has no `| CODE |` row for {missing:?}");
}
