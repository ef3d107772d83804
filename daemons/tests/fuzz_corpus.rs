//! Replays the fuzz corpora without afl: every seed in `fuzz/corpus/<target>/` and every past
//! crash in `fuzz/regressions/<target>/` goes through the same `fuzzing::<target>` body the
//! afl binary runs, so a normal `cargo test` keeps each of them honest (docs/FUZZING.md).
//!
//! `cargo test -p uni_wizard_daemons --test fuzz_corpus -- --ignored write_seeds` writes the
//! seed corpora again from their sources (the example configs, Gitea's webhook samples, this
//! host's `/proc`, git's output on this repository, encoded messages, one call per tool).

use std::path::{Path, PathBuf};

use prost::Message;
use serde_json::{Value, json};
use uni_wizard_daemons::fuzzing as daemons;
use uni_wizard_proto::v1;

/// A fuzz target's body.
type Body = fn(&[u8]);

/// Every target, by the name of its afl binary and folders.
const TARGETS: &[(&str, Body)] = &[
    ("config", daemons::config),
    ("webhook", daemons::webhook),
    ("wire", daemons::wire),
    ("tool_args", uni_wizard::fuzzing::tool_args),
    ("proc", uni_wizard::fuzzing::proc_files),
    ("git_status", uni_wizard::fuzzing::git_status),
    ("git_log", uni_wizard::fuzzing::git_log),
    ("git_diff", uni_wizard::fuzzing::git_diff),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut out: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

/// Runs every corpus and regression file of `target`; returns how many seeds there were.
fn replay(target: &str) -> usize {
    let Some((_, body)) = TARGETS.iter().find(|(t, _)| *t == target) else { panic!("no target {target}") };
    let seeds = files(&fuzz_dir().join("corpus").join(target));
    for path in seeds.iter().chain(&files(&fuzz_dir().join("regressions").join(target))) {
        let Ok(data) = std::fs::read(path) else { panic!("cannot read {}", path.display()) };
        eprintln!("{target}: {}", path.display());
        body(&data);
    }
    seeds.len()
}

/// Proves every seed and past crash of the config target loads or is refused with E4001.
#[test]
fn config_corpus() {
    assert!(replay("config") > 0, "the config corpus is empty");
}

/// Proves every seed and past crash of the webhook target is decided or refused, no panic.
#[test]
fn webhook_corpus() {
    assert!(replay("webhook") > 0, "the webhook corpus is empty");
}

/// Proves every seed and past crash of the wire target converts, errors keeping their codes.
#[test]
fn wire_corpus() {
    assert!(replay("wire") > 0, "the wire corpus is empty");
}

/// Proves every seed and past crash of the tool-args target is accepted or refused cleanly.
#[test]
fn tool_args_corpus() {
    assert!(replay("tool_args") >= 19, "the tool_args corpus lacks a call per tool");
}

/// Proves every seed and past crash of the /proc target parses or is refused, no panic.
#[test]
fn proc_corpus() {
    assert!(replay("proc") > 0, "the proc corpus is empty");
}

/// Proves every seed and past crash of the git_status target parses to schema-valid output or is refused.
#[test]
fn git_status_corpus() {
    assert!(replay("git_status") > 0, "the git_status corpus is empty");
}

/// Proves every seed and past crash of the git_log target parses to schema-valid output or is refused.
#[test]
fn git_log_corpus() {
    assert!(replay("git_log") > 0, "the git_log corpus is empty");
}

/// Proves every seed and past crash of the git_diff target parses to schema-valid output or is refused.
#[test]
fn git_diff_corpus() {
    assert!(replay("git_diff") > 0, "the git_diff corpus is empty");
}

/// Proves every folder under fuzz/corpus and fuzz/regressions names a target, and every
/// target has an afl binary.
#[test]
fn folders_name_targets() {
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind)) else { continue };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(TARGETS.iter().any(|(t, _)| *t == name), "fuzz/{kind}/{name} is no target");
        }
    }
    for (t, _) in TARGETS {
        assert!(fuzz_dir().join("fuzz_targets").join(format!("{t}.rs")).is_file(), "no afl binary for {t}");
    }
}

// --- seed corpora ------------------------------------------------------------------------

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), data).expect("seed written");
}

fn read(path: impl AsRef<Path>) -> Vec<u8> {
    let path = path.as_ref();
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn git(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Writes the seed corpora from their sources (run by hand; see the module docs).
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");

    // config: the committed examples (every `${NAME}` gets a value), one with an unset
    // variable, one minimal node, one library config.
    for name in ["houses.yaml", "triage.yaml", "uni-wizard.yaml"] {
        write("config", name, &read(root.join("configs").join(name)));
    }
    let mut unset = b"TIMMY_TOKEN=timmy-token-0123456789\nEZRA_TOKEN\n\0".to_vec();
    unset.extend(read(root.join("configs/houses.yaml")));
    write("config", "unset-variable.yaml", &unset);
    write(
        "config",
        "minimal.yaml",
        b"house: ezra\nlisten: {grpc: 127.0.0.1:7403, http: 127.0.0.1:7483}\nplaintext_loopback: true\nhouses:\n  \
          ezra: {endpoint: 127.0.0.1:7403, auth_token: ${EZRA_TOKEN:-ezra-token-0123456789}}\n",
    );

    // webhook: Gitea's samples, signed by the target (flag 1) and with their own signature.
    let samples = root.join("../shared/data/gitea/webhook-samples");
    for event in ["issues-opened", "issue_comment-created", "issue_label-label_updated", "issue_assign-assigned"] {
        let body = read(samples.join(format!("{event}.body.json")));
        let headers: Value =
            serde_json::from_slice(&read(samples.join(format!("{event}.headers.json")))).expect("JSON");
        let mut lines = String::new();
        for (k, v) in headers["headers"].as_object().expect("headers") {
            if k.starts_with("X-Gitea") || k == "Content-Type" {
                lines.push_str(&format!("{k}: {}\n", v.as_str().unwrap_or("")));
            }
        }
        for (flag, suffix) in [(1u8, "signed"), (0, "sample-signature")] {
            let mut seed = vec![flag];
            seed.extend(lines.as_bytes());
            seed.push(b'\n');
            seed.extend(&body);
            write("webhook", &format!("{event}-{suffix}"), &seed);
        }
    }

    // wire: one message of each kind the target reads.
    let call = v1::ToolCall {
        tool: "file_read".into(),
        args_json: r#"{"path":"notes.txt","max_bytes":1024}"#.into(),
        session: "s-1".into(),
        proof: "p-1".into(),
        idempotency_key: "k-1".into(),
        dry_run: true,
        timeout_ms: 5000,
    };
    let detail = v1::ErrorDetail {
        code: "E1003".into(),
        category: v1::ErrorCategory::Contract.into(),
        message: "file_read: `path` is required".into(),
        details_json: r#"{"field":"path","tool":"file_read"}"#.into(),
        request_id: "r-1".into(),
    };
    let outcome = v1::Outcome {
        request_id: "r-2".into(),
        provenance_id: "r-2".into(),
        tool: "system_info".into(),
        house: v1::House::Ezra.into(),
        mode: v1::Mode::Intelligent.into(),
        output_json: r#"{"hostname":"h","cpu":{"count":2}}"#.into(),
        duration_us: 1200,
        attempts: 1,
        degraded_reason: Some("pattern DB unavailable".into()),
        warnings: vec!["low predicted success".into()],
        dry_run: false,
        session: "s-1".into(),
    };
    let seed = |which: u8, m: &dyn Fn() -> Vec<u8>| [vec![which], m()].concat();
    let execute = v1::ExecuteRequest {
        call: Some(call.clone()),
        house: v1::House::Ezra.into(),
        caller_house: v1::House::Timmy.into(),
        mode: v1::Mode::Sovereign.into(),
        ..Default::default()
    };
    write("wire", "execute-request", &seed(0, &|| execute.encode_to_vec()));
    let submit = v1::SubmitRequest {
        call: Some(call.clone()),
        preferred_house: v1::House::Bezalel.into(),
        caller_house: v1::House::Allegro.into(),
        mode: v1::Mode::Simple.into(),
        ..Default::default()
    };
    write("wire", "submit-request", &seed(1, &|| submit.encode_to_vec()));
    let ok =
        v1::ExecuteResponse { result: Some(v1::execute_response::Result::Outcome(outcome.clone())), replayed: false };
    write("wire", "execute-response-outcome", &seed(2, &|| ok.encode_to_vec()));
    let failed =
        v1::ExecuteResponse { result: Some(v1::execute_response::Result::Error(detail.clone())), replayed: false };
    write("wire", "execute-response-error", &seed(2, &|| failed.encode_to_vec()));
    write("wire", "error-detail", &seed(3, &|| detail.encode_to_vec()));
    let unknown = v1::ErrorDetail { code: "E9999".into(), details_json: "not json".into(), ..detail.clone() };
    write("wire", "error-detail-unknown-code", &seed(3, &|| unknown.encode_to_vec()));
    write("wire", "status-with-detail", &[&[4u8, 7][..], &detail.encode_to_vec()].concat());
    write("wire", "status-plain", &[4, 14, b'x']);
    write("wire", "outcome", &seed(5, &|| outcome.encode_to_vec()));
    let event = v1::TelemetryEvent {
        time_unix_ms: 1_795_318_126_000,
        kind: Some(v1::telemetry_event::Kind::Execution(v1::ExecutionEvent {
            provenance_id: "r-3".into(),
            tool: "git_status".into(),
            house: v1::House::Bezalel.into(),
            mode: v1::Mode::Intelligent.into(),
            args_fingerprint: 0x00ff_00ff_00ff_00ff,
            success: false,
            error_code: "E3001".into(),
            duration_us: 30_000,
            ..Default::default()
        })),
        ..Default::default()
    };
    write("wire", "telemetry-execution", &seed(6, &|| event.encode_to_vec()));

    // tool_args: one valid call per tool as Timmy in Simple mode (flags 0), byte 0 the index
    // of the tool's name among the sorted names.
    let calls: [(&str, Value); 19] = [
        (
            "file_list",
            json!({"path": ".", "recursive": true, "max_depth": 2, "max_entries": 100, "include_hidden": false}),
        ),
        ("file_read", json!({"path": "notes.txt", "max_bytes": 4096})),
        (
            "file_search",
            json!({"query": "TODO", "path": "src", "regex": false, "case_insensitive": true, "max_matches": 10}),
        ),
        ("file_write", json!({"path": "notes.txt", "content": "hello\n", "create": true})),
        ("git_commit", json!({"repo_path": "/srv/repo", "message": "Fix the thing", "paths": ["a.txt"], "all": false})),
        (
            "git_diff",
            json!({"repo_path": "/srv/repo", "base": "main", "head": "feature", "paths": ["src"], "max_bytes": 65536}),
        ),
        (
            "git_log",
            json!({"repo_path": "/srv/repo", "max_count": 20, "ref": "main", "path": "src", "since": "2 weeks ago"}),
        ),
        ("git_pull", json!({"repo_path": "/srv/repo", "remote": "origin", "branch": "main"})),
        ("git_push", json!({"repo_path": "/srv/repo", "remote": "origin", "branch": "feature", "set_upstream": true})),
        ("git_status", json!({"repo_path": "/srv/repo"})),
        (
            "gitea_create_pr",
            json!({"owner": "acme", "repo": "widgets", "head": "feature", "base": "main", "title": "Add X", "body": "Why"}),
        ),
        (
            "gitea_list_issues",
            json!({"owner": "acme", "repo": "widgets", "state": "open", "labels": ["bug"], "limit": 10}),
        ),
        (
            "gitea_update_issue",
            json!({"owner": "acme", "repo": "widgets", "number": 7, "add_labels": ["bug"], "comment": "seen"}),
        ),
        (
            "http_get",
            json!({"url": "https://example.com/status", "headers": {"accept": "application/json"}, "max_bytes": 4096}),
        ),
        ("http_post", json!({"url": "https://example.com/hook", "json": {"a": 1}, "timeout_ms": 2000})),
        ("process_list", json!({"filter": "cargo", "sort_by": "rss", "top": 5, "sample_ms": 0})),
        ("service_restart", json!({"unit": "nginx.service"})),
        ("service_status", json!({"unit": "nginx.service"})),
        ("system_info", json!({"include_disks": false})),
    ];
    for (i, (name, args)) in calls.iter().enumerate() {
        let mut seed = vec![u8::try_from(i).expect("19 tools"), 0];
        seed.extend(serde_json::to_vec(args).expect("JSON"));
        write("tool_args", name, &seed);
    }

    // proc: this host's files, each behind its parser's selector byte.
    let host = [
        (0u8, "os-release", "/etc/os-release"),
        (1, "uptime", "/proc/uptime"),
        (2, "loadavg", "/proc/loadavg"),
        (3, "cpuinfo", "/proc/cpuinfo"),
        (4, "meminfo", "/proc/meminfo"),
        (5, "mounts", "/proc/self/mounts"),
        (6, "stat", "/proc/self/stat"),
        (7, "status", "/proc/self/status"),
        (9, "proc-stat", "/proc/stat"),
        (10, "auxv", "/proc/self/auxv"),
        (11, "cmdline", "/proc/self/cmdline"),
    ];
    for (which, name, path) in host {
        let text = std::fs::read(path).unwrap_or_default();
        write("proc", name, &[&[which][..], &text[..text.len().min(8192)]].concat());
    }
    write(
        "proc",
        "passwd",
        b"\x08root:x:0:0:root:/root:/bin/bash\n# comment\nnobody:x:65534:65534::/:/usr/sbin/nologin\n",
    );
    write(
        "proc",
        "stat-odd-name",
        b"\x065096 (a) b) (c d) R 5094 5094 27536 0 -1 4194304 98 0 0 0 7 3 0 0 20 0 1 0 419667 3133440",
    );
    write(
        "proc",
        "mounts-escaped",
        b"\x05/dev/sda1 /mnt/with\\040space ext4 rw 0 0\n/dev/sda1 /b ext4 rw 0 0\noverlay / overlay rw 0 0\n",
    );

    // git: this repository's own output, and the unit tests' recorded shapes.
    write("git_status", "repo", &git(uni_wizard::tools::git::status::STATUS_ARGS));
    write(
        "git_status",
        "recorded",
        b"# branch.oid 960dce81bc9ce891b7441eec8a0251269445d7dc\0# branch.head main\0# branch.upstream origin/main\0\
          # branch.ab +1 -1\0\
          1 .M N... 100644 100644 100644 78981922613b2afb6025042ff6bd878ac1994e85 78981922613b2afb6025042ff6bd878ac1994e85 a.txt\0\
          2 R. N... 100644 100644 100644 f2ad6c76f0115a6ba5b00456a849810e7ec0af20 f2ad6c76f0115a6ba5b00456a849810e7ec0af20 R100 e f.txt\0c d.txt\0\
          u UU N... 100644 100644 100644 100644 587be6b4c3f93f93c489c0111bba5596147a26cb ba2906d0666cf726c7eaadd2cd3db615dedfdf3a 2299c37978265a95cbe835a4b0f0bbf15aad5549 conflict.txt\0\
          ? dir/\0? u v.txt\0! ignored\0",
    );
    write("git_status", "initial", b"# branch.oid (initial)\0# branch.head (detached)\0");
    let format = format!("--format={}", uni_wizard::tools::git::log::LOG_FORMAT);
    write("git_log", "repo", &git(&["log", "-z", "--no-color", "--no-notes", &format, "--max-count=4"]));
    let mut diff = vec![64u8];
    diff.extend(git(&["diff", "--no-color", "--no-ext-diff", "-M", "--raw", "--numstat", "-z", "HEAD~3", "HEAD"]));
    write("git_diff", "repo", &diff);
    write(
        "git_diff",
        "recorded",
        b"\x10:100644 100644 7898192 422c2b7 M\0a\0:100644 100644 b478595 b478595 R100\0sub/s\0sub/t\0\
          :000000 100644 0000000 6a8a5e1 A\0bin\0:000000 100644 0000000 0000000 U\0u\0:100644 100644 ba2906d 0000000 M\0u\0\
          1\t0\ta\x000\t0\t\0sub/s\0sub/t\0-\t-\tbin\x000\t0\tu\x004\t0\tu\0",
    );
}
