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
}
