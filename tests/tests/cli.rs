//! The `uni-wizard` CLI as an operator runs it: the real binary, real files, real `/proc`.

use uni_wizard_tests::{cli, json_stdout, run, sha256_hex};

fn proc_text(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}")).trim().to_owned()
}

fn meminfo_total_bytes() -> u64 {
    let text = proc_text("/proc/meminfo");
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).expect("MemTotal line");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("MemTotal value");
    kb * 1024
}

/// Proves README command 1 (`test --house timmy --tool system_info`) reports this host as /proc does.
#[test]
fn system_info_agrees_with_proc() {
    let home = tempfile::tempdir().expect("home");
    let mut c = cli(home.path());
    c.args(["test", "--house", "timmy", "--tool", "system_info", "--json"]);
    let o = run(c);
    assert!(o.status.success(), "exit {:?}: {}", o.status.code(), String::from_utf8_lossy(&o.stderr));
    let v = json_stdout(&o);
    assert_eq!(v["ok"], true);
    let out = &v["outcome"]["output"];
    assert_eq!(out["hostname"], proc_text("/proc/sys/kernel/hostname"));
    assert_eq!(out["kernel"], proc_text("/proc/sys/kernel/osrelease"));
    let cpus = proc_text("/proc/cpuinfo").lines().filter(|l| l.starts_with("processor")).count();
    assert_eq!(out["cpu"]["count"], cpus);
    assert_eq!(out["memory"]["total_bytes"], meminfo_total_bytes());
    assert_eq!(v["outcome"]["house"], "timmy");

    // The readable form says the same thing.
    let mut c = cli(home.path());
    c.args(["test", "--house", "timmy", "--tool", "system_info"]);
    let o = run(c);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("ok  system_info  house=timmy"), "{text}");
    assert!(text.contains(&proc_text("/proc/sys/kernel/osrelease")), "{text}");
}

/// Proves `tools --json` lists exactly the 19 tools (4 System, 6 Git, 5 Network, 4 File) with full contracts.
#[test]
fn tools_json_lists_full_contracts() {
    let home = tempfile::tempdir().expect("home");
    let mut c = cli(home.path());
    c.args(["tools", "--json"]);
    let o = run(c);
    assert!(o.status.success());
    let v = json_stdout(&o);
    let tools = v["tools"].as_array().expect("tools array");
    assert_eq!(v["count"], tools.len());
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    for want in ["file_read", "file_write", "file_list", "file_search", "system_info", "git_status"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert_eq!(tools.len(), 19, "{names:?}");
    let count = |cat: &str| tools.iter().filter(|t| t["category"] == cat).count();
    assert_eq!([count("system"), count("git"), count("network"), count("file")], [4, 6, 5, 4]);
    for t in tools {
        let name = t["name"].as_str().unwrap_or("?");
        for field in ["category", "description", "risk"] {
            assert!(t[field].is_string(), "{name}.{field}");
        }
        assert_eq!(t["input_schema"]["type"], "object", "{name}");
        assert!(t["output_schema"]["properties"].is_object(), "{name}");
        for hint in ["read_only", "destructive", "idempotent", "open_world"] {
            assert!(t["annotations"][hint].is_boolean(), "{name}.annotations.{hint}");
        }
        assert!(t["default_timeout_ms"].as_u64().is_some_and(|ms| ms > 0), "{name}");
        assert!(t["dry_run"].is_boolean() && t["content_guard"].is_boolean(), "{name}");
    }
}

fn ezra_write(root: &std::path::Path, home: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut c = cli(home);
    c.current_dir(root).args(["test", "--house", "ezra", "--tool", "file_write", "--json", "--arg", "path=notes.md"]);
    c.args(["--arg", "content=rewritten by ezra"]).args(extra);
    run(c)
}

/// Proves Ezra's CLI write is refused without a hash (E2004) and with a stale one (E2005),
/// leaving the file untouched, and succeeds with the current hash.
#[test]
fn ezra_reads_before_it_writes_through_the_cli() {
    let home = tempfile::tempdir().expect("home");
    let root = tempfile::tempdir().expect("root");
    let file = root.path().join("notes.md");
    std::fs::write(&file, "original").expect("seed");

    let o = ezra_write(root.path(), home.path(), &[]);
    assert_eq!(o.status.code(), Some(3), "policy refusal exits 3");
    assert_eq!(json_stdout(&o)["error"]["code"], "E2004");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "original");

    let stale = sha256_hex(b"something else");
    let o = ezra_write(root.path(), home.path(), &["--arg", &format!("expected_sha256={stale}")]);
    assert_eq!(o.status.code(), Some(3));
    let v = json_stdout(&o);
    assert_eq!(v["error"]["code"], "E2005");
    assert_eq!(v["error"]["details"]["actual_sha256"], sha256_hex(b"original"));
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "original");

    let current = sha256_hex(b"original");
    let o = ezra_write(root.path(), home.path(), &["--arg", &format!("expected_sha256={current}")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "rewritten by ezra");
}

/// Proves unknown houses, tools and modes, and malformed flags, exit 2 with an E1xxx naming them.
#[test]
fn bad_names_and_flags_are_contract_errors() {
    let home = tempfile::tempdir().expect("home");
    let cases: [(&[&str], &str, &str); 5] = [
        (&["--house", "gandalf", "--tool", "system_info"], "E1002", "gandalf"),
        (&["--house", "timmy", "--tool", "rm_rf"], "E1001", "rm_rf"),
        (&["--house", "timmy", "--tool", "system_info", "--mode", "turbo"], "E1004", "turbo"),
        (&["--house", "timmy", "--tool", "file_read", "--arg", "path"], "E1005", "key=value"),
        (&["--house", "timmy", "--tool", "file_read", "--arg", "max_bytes=1"], "E1003", "path"),
    ];
    for (args, code, named) in cases {
        let mut c = cli(home.path());
        c.arg("test").args(args).arg("--json");
        let o = run(c);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let v = json_stdout(&o);
        assert_eq!(v["error"]["code"], code, "{args:?}");
        assert!(v["error"]["message"].as_str().unwrap_or("").contains(named), "{args:?}: {v}");
    }
}

/// Proves a human-readable refusal goes to stderr with the code, the field and a pointer to the fix.
#[test]
fn readable_errors_name_code_field_and_fix() {
    let home = tempfile::tempdir().expect("home");
    let root = tempfile::tempdir().expect("root");
    let mut c = cli(home.path());
    c.args(["test", "--house", "timmy", "--tool", "file_read", "--arg", "path=../../etc/passwd"]);
    c.args(["--root", root.path().to_str().expect("utf8 path")]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error E2008:"), "{err}");
    assert!(err.contains("fix: see docs/ERRORS.md#e2008"), "{err}");
    assert!(o.stdout.is_empty());
}

/// Proves `uni-wizardd --check` reads the files a node config names, as the start does: the
/// committed example (whose paths are a host's) is refused naming `http.metrics_token_file`,
/// and exits 64, while `uni-wizard config check` passes it (the file alone).
#[test]
fn the_daemon_check_reads_the_files_the_config_names() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/houses.yaml");
    let o = std::process::Command::new(uni_wizard_tests::bin("uni-wizardd"))
        .arg("--check")
        .arg("--config")
        .arg(&example)
        .envs([("TIMMY_TOKEN", "t".repeat(24)), ("ALLEGRO_TOKEN", "a".repeat(24))])
        .envs([("EZRA_TOKEN", "e".repeat(24)), ("BEZALEL_TOKEN", "b".repeat(24))])
        .output()
        .expect("uni-wizardd runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("E4001") && stderr.contains("metrics_token_file"), "{stderr}");
}

/// Proves every committed example config loads, and a broken one is refused naming file, line and field.
#[test]
fn config_examples_load_and_errors_name_the_place() {
    let home = tempfile::tempdir().expect("home");
    let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&configs).expect("configs dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let mut c = cli(home.path());
            for var in ["TIMMY_TOKEN", "ALLEGRO_TOKEN", "EZRA_TOKEN", "BEZALEL_TOKEN"] {
                c.env(var, format!("{var}-example-0123456789"));
            }
            c.args(["config", "check", "--json"]).arg(&path);
            let o = run(c);
            assert!(o.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&o.stdout));
            checked += 1;
        }
    }
    assert!(checked > 0, "no example configs found");
    let bad = home.path().join("bad.yaml");
    std::fs::write(&bad, "file_roots: []\nexecutor:\n  retry:\n    max_retries: many\n").expect("write");
    let mut c = cli(home.path());
    c.args(["config", "check", "--json"]).arg(&bad);
    let o = run(c);
    assert_eq!(o.status.code(), Some(64));
    let v = json_stdout(&o);
    assert_eq!(v["error"]["code"], "E4001");
    assert_eq!(v["error"]["details"]["line"], 4);
    assert_eq!(v["error"]["details"]["field"], "executor.retry.max_retries");

    // A daemon config (it has `houses:`) is checked as one, with the same precision.
    let bad = home.path().join("node.yaml");
    let text = "house: ezra\nlisten: {grpc: 127.0.0.1:1, http: 127.0.0.1:2}\nplaintext_loopback: true\nhealth:\n  interval_ms: soon\nhouses:\n  ezra: {endpoint: 127.0.0.1:1, auth_token: ezra-token-0123456789}\n";
    std::fs::write(&bad, text).expect("write");
    let mut c = cli(home.path());
    c.args(["config", "check", "--json"]).arg(&bad);
    let o = run(c);
    assert_eq!(o.status.code(), Some(64));
    let v = json_stdout(&o);
    assert_eq!(
        (v["error"]["details"]["line"].as_u64(), v["error"]["details"]["field"].as_str()),
        (Some(5), Some("health.interval_ms")),
        "{v}"
    );
}

fn predict(home: &std::path::Path, tool: &str, house: &str) -> serde_json::Value {
    let mut c = cli(home);
    c.args(["predict", "--tool", tool, "--house", house, "--json"]);
    let o = run(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    json_stdout(&o)
}

/// Proves `predict --tool deploy --house bezalel` answers with the prior and n=0, and that
/// after recorded `test` runs of `file_read` the prediction moves the way the outcomes went.
#[test]
fn predict_starts_at_the_prior_and_follows_recorded_runs() {
    let home = tempfile::tempdir().expect("home");
    let root = tempfile::tempdir().expect("root");
    std::fs::write(root.path().join("present.txt"), "hello").expect("seed");

    let v = predict(home.path(), "deploy", "bezalel");
    assert_eq!(v["samples"], 0);
    assert_eq!(v["p_success"], 0.5);
    assert_eq!(v["timeout_ms"], serde_json::Value::Null, "deploy is not a tool of this build");
    let mut c = cli(home.path());
    c.args(["predict", "--tool", "deploy", "--house", "bezalel"]);
    let o = run(c);
    assert!(String::from_utf8_lossy(&o.stdout).contains("n=0"), "{}", String::from_utf8_lossy(&o.stdout));

    let read = |path: &str| {
        let mut c = cli(home.path());
        c.current_dir(root.path()).args(["test", "--house", "timmy", "--tool", "file_read", "--json"]);
        c.args(["--arg", &format!("path={path}")]);
        run(c)
    };
    for _ in 0..4 {
        assert!(read("present.txt").status.success());
    }
    let up = predict(home.path(), "file_read", "timmy");
    assert_eq!(up["samples"], 4);
    assert!(up["p_success"].as_f64().expect("p") > 0.8, "{up}");
    assert!(up["latency_p50_ms"].as_f64().is_some());
    for _ in 0..6 {
        assert_eq!(read("missing.txt").status.code(), Some(4));
    }
    let down = predict(home.path(), "file_read", "timmy");
    assert_eq!(down["samples"], 10);
    assert!(down["p_success"].as_f64().expect("p") < 0.5, "{down}");
    assert_eq!(predict(home.path(), "file_read", "ezra")["samples"], 0, "per house");
}

fn ok_or_show(o: &std::process::Output) {
    assert!(
        o.status.success(),
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Proves every CLI run lands in `$UNI_WIZARD_HOME/audit.db`, `audit verify` passes on it, and
/// changing one byte of a stored record in the file makes it exit 4 naming that record.
#[test]
fn audit_verify_names_a_record_changed_in_the_file() {
    let home = tempfile::tempdir().expect("home");
    for session in ["sess-mark-1", "sess-mark-2", "sess-mark-3"] {
        let mut c = cli(home.path());
        c.args(["test", "--house", "timmy", "--tool", "system_info", "--json", "--session", session]);
        ok_or_show(&run(c));
    }
    let mut c = cli(home.path());
    c.args(["audit", "show", "--json"]);
    let o = run(c);
    ok_or_show(&o);
    let shown = json_stdout(&o);
    assert_eq!(shown["count"], 3);
    let second = shown["records"][1]["id"].as_str().expect("id").to_owned();
    let mut c = cli(home.path());
    c.args(["audit", "show", "--json", "--session", "sess-mark-2"]);
    assert_eq!(json_stdout(&run(c))["records"][0]["id"], second.as_str());

    let mut c = cli(home.path());
    c.args(["audit", "verify", "--json"]);
    let o = run(c);
    ok_or_show(&o);
    assert_eq!(json_stdout(&o)["verification"]["records"], 3);

    // The CLI's connection closed, so the WAL is checkpointed into audit.db: edit the bytes.
    let db = home.path().join("audit.db");
    let mut bytes = std::fs::read(&db).expect("read db");
    let (from, to) = (b"sess-mark-2", b"sess-mark-7");
    let mut hits = 0;
    for i in 0..bytes.len().saturating_sub(from.len()) {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            hits += 1;
        }
    }
    assert!(hits > 0, "the session text is in the file");
    std::fs::write(&db, bytes).expect("write db");

    let mut c = cli(home.path());
    c.args(["audit", "verify", "--json"]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stdout));
    let broken = &json_stdout(&o)["verification"]["broken"];
    assert_eq!(broken["seq"], 2);
    assert_eq!(broken["id"], second.as_str());
    let mut c = cli(home.path());
    c.args(["audit", "verify"]);
    let text = String::from_utf8_lossy(&run(c).stdout).into_owned();
    assert!(text.contains(&second) && text.contains("hash mismatch"), "{text}");
}

fn sovereign_write(
    root: &std::path::Path,
    home: &std::path::Path,
    content: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut c = cli(home);
    c.current_dir(root).args(["test", "--house", "allegro", "--tool", "file_write", "--mode", "sovereign", "--json"]);
    c.args(["--arg", "path=out.txt", "--arg", &format!("content={content}")]).args(extra);
    run(c)
}

/// Proves `keygen` + `approve --sign` + `test --mode sovereign --approval-token` runs a write once:
/// without a token it is refused (no terminal), a token for other content or reused is refused,
/// and the approval is in the audit record.
#[test]
fn signed_token_approves_one_sovereign_write_end_to_end() {
    let home = tempfile::tempdir().expect("home");
    let root = tempfile::tempdir().expect("root");
    let out = root.path().join("out.txt");
    let mut c = cli(home.path());
    c.args(["keygen"]);
    ok_or_show(&run(c));
    assert!(home.path().join("timmy.key").exists() && home.path().join("timmy.pub").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.path().join("timmy.key")).expect("key file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the secret key is private");

    let o = sovereign_write(root.path(), home.path(), "hello", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(json_stdout(&o)["error"]["code"], "E2002");
    assert!(!out.exists());

    let sign = |content: &str| {
        let mut c = cli(home.path());
        c.args(["approve", "--sign", "--house", "allegro", "--any-node", "--tool", "file_write"]);
        c.args(["--arg", "path=out.txt", "--arg", &format!("content={content}"), "--ttl-secs", "60"]);
        let o = run(c);
        ok_or_show(&o);
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    for unbound in [&["--any-node"][..], &["--house", "allegro"][..]] {
        let mut c = cli(home.path());
        c.args(["approve", "--sign", "--tool", "file_write", "--arg", "path=out.txt", "--json"]).args(unbound);
        let o = run(c);
        assert_eq!(o.status.code(), Some(2), "a token must name its house and node: {unbound:?}");
    }
    let other = sign("goodbye");
    let o = sovereign_write(root.path(), home.path(), "hello", &["--approval-token", &other]);
    assert_eq!(json_stdout(&o)["error"]["code"], "E2003");
    assert!(!out.exists());

    let token = sign("hello");
    let o = sovereign_write(root.path(), home.path(), "hello", &["--approval-token", &token]);
    ok_or_show(&o);
    assert_eq!(std::fs::read_to_string(&out).expect("written"), "hello");
    let id = json_stdout(&o)["outcome"]["provenance_id"].as_str().expect("id").to_owned();

    std::fs::remove_file(&out).expect("remove");
    let o = sovereign_write(root.path(), home.path(), "hello", &["--approval-token", &token]);
    assert_eq!(json_stdout(&o)["error"]["code"], "E2003", "a token works once");
    assert!(!out.exists());

    let mut c = cli(home.path());
    c.args(["audit", "show", "--json"]);
    let shown = json_stdout(&run(c));
    let record = shown["records"].as_array().expect("records").iter().find(|r| r["id"] == id.as_str()).cloned();
    let record = record.expect("the approved write is recorded");
    assert_eq!(record["approvals"][0]["approver"], "timmy");
    let mut c = cli(home.path());
    c.args(["audit", "verify"]);
    ok_or_show(&run(c));
}

/// Proves a Sovereign `file_write` fails closed (E3008, exit 4) when the audit DB cannot be
/// written, and the file is unchanged. `audit.db` is made a directory: SQLite cannot open it
/// even as root, where a chmod would not stop writes.
#[test]
fn sovereign_write_fails_closed_without_an_audit_db() {
    let home = tempfile::tempdir().expect("home");
    let root = tempfile::tempdir().expect("root");
    std::fs::create_dir(home.path().join("audit.db")).expect("block the db path");
    std::fs::write(root.path().join("out.txt"), "before").expect("seed");
    let o = sovereign_write(root.path(), home.path(), "after", &[]);
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(json_stdout(&o)["error"]["code"], "E3008");
    assert_eq!(std::fs::read_to_string(root.path().join("out.txt")).expect("read"), "before");
}
