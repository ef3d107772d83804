//! One table over every tool: a real successful call of each, its output checked against the
//! output schema the tool declares. Also: the registry holds exactly the 19 tools of SYSTEM.md
//! §2, and no code spawns a shell.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uni_wizard::tools::Registry;
use uni_wizard::{Config, Harness, House, Mode, Request};
use uni_wizard_tests::gitea_server::{GiteaServer, OWNER, REPO};

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Table", "-c", "user.email=table@example.invalid", "-c", "init.defaultBranch=main"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A bare remote and a clone with one pushed commit and one local change.
fn repos(base: &Path) -> std::path::PathBuf {
    let remote = base.join("remote.git");
    let work = base.join("work");
    std::fs::create_dir_all(&work).expect("dirs");
    git(base, &["init", "-q", "--bare", "-b", "main", remote.to_str().expect("utf8")]);
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["remote", "add", "origin", remote.to_str().expect("utf8")]);
    std::fs::write(work.join("README.md"), "one\n").expect("write");
    git(&work, &["add", "README.md"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", "-u", "origin", "main"]);
    std::fs::write(work.join("README.md"), "one\ntwo\n").expect("write");
    work
}

/// A loopback HTTP/1.1 server answering every request with a small JSON body; stops on drop.
struct Server {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = 0;
                // Read until the end of the headers and any Content-Length body (bounded).
                loop {
                    let Ok(n) = sock.read(&mut buf[seen..]).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen += n;
                    let text = String::from_utf8_lossy(&buf[..seen]);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if seen >= end + 4 + len || seen == buf.len() {
                            break;
                        }
                    }
                }
                let body = r#"{"ok":true}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Server { port, task }
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../uni_wizard/tests/fixtures/systemctl").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Proves every tool's real successful output validates against the output schema it declares.
#[tokio::test]
async fn every_tool_output_matches_its_declared_schema() {
    let base = tempfile::tempdir().expect("tempdir");
    let files = base.path().join("files");
    std::fs::create_dir_all(files.join("sub")).expect("dirs");
    std::fs::write(files.join("sub/a.txt"), "needle in a haystack\n").expect("write");
    let work = repos(base.path());
    let repo = work.to_str().expect("utf8").to_owned();
    let http = server().await;
    let gitea = GiteaServer::start().await;
    gitea.add_label(OWNER, REPO, "bug", "ee0701");
    let issue = gitea.add_issue(OWNER, REPO, "Crash on start", "It crashes.", &[]);
    gitea.add_branch(OWNER, REPO, "feature");
    let config: Config = serde_json::from_value(json!({
        "file_roots": [files],
        "gitea": { "base_url": gitea.url(), "token": gitea.token() },
        "egress": { "timmy": { "rules": [
            { "host": "127.0.0.1", "schemes": ["http"], "ports": [http.port], "allow_private": true }
        ] } }
    }))
    .expect("config");
    let h = Harness::builder().house(House::Timmy).mode(Mode::Simple).config(config).build().expect("harness");
    let url = format!("http://127.0.0.1:{}/x", http.port);

    // (tool, arguments, dry run): run in this order, since git_commit consumes the change
    // that git_diff shows and git_push sends the commit.
    let table: Vec<(&str, Value, bool)> = vec![
        ("system_info", json!({}), false),
        ("process_list", json!({"top": 5, "sample_ms": 0}), false),
        ("file_write", json!({"path": "b.txt", "content": "hello"}), false),
        ("file_read", json!({"path": "b.txt"}), false),
        ("file_list", json!({"recursive": true}), false),
        ("file_search", json!({"query": "needle"}), false),
        ("git_status", json!({"repo_path": repo}), false),
        ("git_log", json!({"repo_path": repo}), false),
        ("git_diff", json!({"repo_path": repo}), false),
        ("git_commit", json!({"repo_path": repo, "message": "second", "all": true}), false),
        ("git_push", json!({"repo_path": repo, "branch": "main"}), false),
        ("git_pull", json!({"repo_path": repo}), false),
        ("http_get", json!({"url": url}), false),
        ("http_post", json!({"url": url, "json": {"a": 1}}), false),
        ("gitea_list_issues", json!({"owner": OWNER, "repo": REPO}), false),
        ("gitea_update_issue", json!({"owner": OWNER, "repo": REPO, "number": issue, "add_labels": ["bug"]}), false),
        (
            "gitea_create_pr",
            json!({"owner": OWNER, "repo": REPO, "head": "feature", "base": "main", "title": "Fix the crash"}),
            false,
        ),
    ];
    let mut seen = BTreeMap::new();
    for (tool, args, dry_run) in table {
        let mut r = Request::new(tool, args);
        r.dry_run = dry_run;
        let o = h.execute_request(r).await.unwrap_or_else(|e| panic!("{tool} failed: {e} {}", e.details));
        let contract = h.registry().get(tool).expect("registered").contract();
        contract.validate_output(&o.output).unwrap_or_else(|v| panic!("{tool}: {} {}", v.pointer, v.message));
        seen.insert(tool, ());
    }

    // systemd is not PID 1 here, so the service tools' outputs are built from recorded
    // `systemctl show` text through the tools' own parser, then checked the same way.
    use uni_wizard::tools::system::systemctl::{UnitStatus, parse_show};
    let status = UnitStatus::from_properties(&parse_show(&fixture("ssh-active.txt"))).expect("parses");
    let outputs = [
        (
            "service_status",
            serde_json::to_value(uni_wizard::tools::system::service_status::Output {
                unit: "ssh.service".into(),
                active: true,
                status: status.clone(),
            }),
        ),
        (
            "service_restart",
            serde_json::to_value(uni_wizard::tools::system::service_restart::Output {
                unit: "ssh.service".into(),
                dry_run: false,
                restarted: true,
                command: vec!["systemctl".into(), "restart".into(), "--".into(), "ssh.service".into()],
                summary: "restarted ssh.service".into(),
                before: status.clone(),
                after: Some(status),
                main_pid_changed: Some(true),
            }),
        ),
    ];
    for (tool, out) in outputs {
        let contract = h.registry().get(tool).expect("registered").contract();
        contract
            .validate_output(&out.expect("serialises"))
            .unwrap_or_else(|v| panic!("{tool}: {} {}", v.pointer, v.message));
        seen.insert(tool, ());
    }
    let missing: Vec<&str> = h
        .registry()
        .iter()
        .map(|t| t.contract().spec().name)
        .filter(|n| !seen.contains_key(n) && !n.starts_with("gitea_"))
        .collect();
    assert!(missing.is_empty(), "tools without a row in this table: {missing:?}");
}

/// Proves the registry holds exactly the 19 tools of SYSTEM.md §2: 4 System, 6 Git, 5 Network, 4 File.
#[test]
fn registry_has_exactly_the_nineteen_tools() {
    let r = Registry::builtin().expect("builtin");
    let mut by_category: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for t in r.iter() {
        let c = t.contract();
        by_category.entry(format!("{:?}", c.spec().category)).or_default().push(c.spec().name);
    }
    let want: BTreeMap<String, Vec<&str>> = [
        ("File", vec!["file_list", "file_read", "file_search", "file_write"]),
        ("Git", vec!["git_commit", "git_diff", "git_log", "git_pull", "git_push", "git_status"]),
        ("Network", vec!["gitea_create_pr", "gitea_list_issues", "gitea_update_issue", "http_get", "http_post"]),
        ("System", vec!["process_list", "service_restart", "service_status", "system_info"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(by_category, want);
    assert_eq!(r.len(), 19);
}

/// Proves no code spawns a shell: no `Command` runs `sh`/`bash`/`dash`/`zsh`/`ksh`, and no string
/// literal names one (which would catch a shell smuggled in through a constant), anywhere in the
/// source tree (library, daemons, proto, tests). Without a shell program, `-c` cannot run a
/// command line (git's own `-c key=value` is configuration, and is allowed).
#[test]
fn no_code_spawns_a_shell() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shell = regex::Regex::new(r#"Command::new\(\s*"(/usr)?(/bin/)?(ba|da|z|k)?sh""#).expect("regex");
    let literal = regex::Regex::new(r#""(/usr)?(/bin/)?(ba|da|z|k)?sh""#).expect("regex");
    let mut offenders = Vec::new();
    let mut scanned = 0;
    for dir in ["uni_wizard", "daemons", "proto", "tests"] {
        for path in uni_wizard_tests::rust_files(&root.join(dir)) {
            let text = std::fs::read_to_string(&path).expect("read");
            scanned += 1;
            // This file names the patterns it looks for.
            if path.ends_with("tests/tests/contracts.rs") {
                continue;
            }
            for (i, line) in text.lines().enumerate() {
                if shell.is_match(line) || literal.is_match(line) {
                    offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(scanned > 20, "scanned only {scanned} files");
    assert!(offenders.is_empty(), "shell spawning found:\n{}", offenders.join("\n"));
    // The detector itself works.
    assert!(shell.is_match(r#"Command::new("/bin/sh")"#) && literal.is_match(r#"const SH: &str = "bash";"#));
    assert!(!literal.is_match(r##""#!/bin/sh\nexit 0""##) && !literal.is_match(r#""shell""#));
}
