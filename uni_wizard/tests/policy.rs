//! House policies, contracts and file confinement, through the real `Harness` on real files.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use uni_wizard::approval::{self, Approval};
use uni_wizard::contract::{Annotations, Category, Contract, ContractSpec, Risk};
use uni_wizard::future::BoxFuture;
use uni_wizard::hash::sha256_hex;
use uni_wizard::tools::{Registry, Tool, ToolContext};
use uni_wizard::{Config, ErrorCode, Harness, House, Mode, Request};

fn harness_in(dir: &Path, house: House, mode: Mode) -> Harness {
    let config = Config { file_roots: vec![dir.to_path_buf()], ..Config::default() };
    Harness::builder().house(house).mode(mode).config(config).build().expect("harness builds")
}

fn code<T: std::fmt::Debug>(r: uni_wizard::Result<T>) -> ErrorCode {
    r.expect_err("call must fail").code
}

/// Proves Ezra's write without `expected_sha256` is refused (E2004) and the file is untouched.
#[tokio::test]
async fn ezra_write_without_hash_is_refused_and_file_untouched() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("doc.md"), "v1").expect("seed");
    let ezra = harness_in(d.path(), House::Ezra, Mode::Simple);
    let e = code(ezra.execute("file_write", json!({"path": "doc.md", "content": "v2"})).await);
    assert_eq!(e, ErrorCode::ReadBeforeWriteRequired);
    assert_eq!(std::fs::read_to_string(d.path().join("doc.md")).expect("read"), "v1");
}

/// Proves Ezra writes with the hash it read, and a stale hash is refused (E2005) untouched.
#[tokio::test]
async fn ezra_write_with_current_hash_writes_and_stale_hash_is_refused() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("doc.md"), "v1").expect("seed");
    let ezra = harness_in(d.path(), House::Ezra, Mode::Intelligent);
    let read = ezra.execute("file_read", json!({"path": "doc.md"})).await.expect("read");
    let hash = read.output["sha256"].as_str().expect("sha").to_owned();
    assert_eq!(hash, sha256_hex(b"v1"));
    let w = ezra
        .execute("file_write", json!({"path": "doc.md", "content": "v2", "expected_sha256": hash}))
        .await
        .expect("write with current hash");
    assert_eq!(w.output["previous_sha256"], json!(sha256_hex(b"v1")));
    assert_eq!(std::fs::read_to_string(d.path().join("doc.md")).expect("read"), "v2");
    // `hash` is now stale: the file holds v2.
    let e = ezra.execute("file_write", json!({"path": "doc.md", "content": "v3", "expected_sha256": hash})).await;
    let e = e.expect_err("stale");
    assert_eq!(e.code, ErrorCode::StaleRead);
    assert_eq!(e.details["actual_sha256"], json!(sha256_hex(b"v2")));
    assert_eq!(std::fs::read_to_string(d.path().join("doc.md")).expect("read"), "v2");
}

/// Proves `expected_sha256: absent` creates a new file but refuses when one appeared meanwhile.
#[tokio::test]
async fn ezra_absent_hash_guards_creation() {
    let d = tempfile::tempdir().expect("tempdir");
    let ezra = harness_in(d.path(), House::Ezra, Mode::Simple);
    let args = json!({"path": "new.md", "content": "a", "expected_sha256": "absent"});
    let w = ezra.execute("file_write", args.clone()).await.expect("creates");
    assert_eq!(w.output["created"], true);
    assert_eq!(code(ezra.execute("file_write", args).await), ErrorCode::StaleRead);
}

/// Proves Bezalel must cite a successful check from the same session, newer than the last write.
#[tokio::test]
async fn bezalel_needs_a_fresh_proof_from_its_session() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("src.rs"), "fn a() {}").expect("seed");
    let bez = harness_in(d.path(), House::Bezalel, Mode::Simple);
    let write = |proof: Option<String>, session: Option<&str>| {
        let bez = bez.clone();
        let session = session.map(str::to_owned);
        async move {
            let mut r = Request::new("file_write", json!({"path": "src.rs", "content": "fn b() {}"}));
            r.proof = proof;
            r.session = session;
            bez.execute_request(r).await
        }
    };
    assert_eq!(code(write(None, None).await), ErrorCode::ProofRequired);
    assert_eq!(code(write(Some("no-such-id".into()), None).await), ErrorCode::ProofInvalid);

    let check = bez.execute("file_read", json!({"path": "src.rs"})).await.expect("check");
    assert_eq!(code(write(Some(check.provenance_id.clone()), Some("other-session")).await), ErrorCode::ProofInvalid);
    let first = write(Some(check.provenance_id.clone()), None).await.expect("proof accepted");
    assert_eq!(std::fs::read_to_string(d.path().join("src.rs")).expect("read"), "fn b() {}");

    // The check is now older than the write it allowed: it cannot prove the next one.
    assert_eq!(code(write(Some(check.provenance_id), None).await), ErrorCode::ProofInvalid);
    // A write is not a check.
    assert_eq!(code(write(Some(first.provenance_id), None).await), ErrorCode::ProofInvalid);
    // A failed check proves nothing.
    let failed = bez.execute("file_read", json!({"path": "missing.rs"})).await.expect_err("missing");
    assert_eq!(code(write(failed.request_id, None).await), ErrorCode::ProofInvalid);
    // A fresh check works again.
    let again = bez.execute("file_read", json!({"path": "src.rs"})).await.expect("check");
    write(Some(again.provenance_id), None).await.expect("fresh proof accepted");
}

/// A high-risk tool that counts its runs (stands for service_restart / protected pushes).
struct Production {
    contract: Contract,
    runs: Arc<std::sync::atomic::AtomicU32>,
}

impl Production {
    fn new() -> Production {
        let contract = Contract::new(ContractSpec {
            name: "deploy",
            category: Category::System,
            description: "Restarts production (test stand-in).",
            input_schema: json!({"type": "object", "properties": {"unit": {"type": "string"}}, "additionalProperties": false}),
            output_schema: json!({"type": "object"}),
            annotations: Annotations { read_only: false, destructive: true, idempotent: false, open_world: false },
            risk: Risk::High,
            default_timeout: Duration::from_secs(5),
            dry_run: true,
            content_guard: false,
        })
        .expect("contract");
        Production { contract, runs: Arc::default() }
    }
}

impl Tool for Production {
    fn contract(&self) -> &Contract {
        &self.contract
    }
    fn target(&self, _: &Value) -> String {
        "prod".into()
    }
    fn changes_production(&self, _: &Value) -> bool {
        true
    }
    fn call<'a>(&'a self, ctx: &'a ToolContext, _: &'a Value) -> BoxFuture<'a, uni_wizard::Result<Value>> {
        Box::pin(async move {
            if !ctx.dry_run {
                self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(json!({"restarted": !ctx.dry_run}))
        })
    }
}

fn with_production(house: House, mode: Mode) -> (Harness, Arc<std::sync::atomic::AtomicU32>) {
    let tool = Production::new();
    let runs = tool.runs.clone();
    let mut registry = Registry::builtin().expect("builtin");
    registry.add(Arc::new(tool));
    let h = Harness::builder().house(house).mode(mode).registry(registry).build().expect("harness");
    (h, runs)
}

/// Proves Allegro cannot change production without Timmy's approval, and only Timmy's counts.
#[tokio::test]
async fn allegro_needs_timmys_approval_for_production() {
    let (allegro, runs) = with_production(House::Allegro, Mode::Simple);
    let args = json!({"unit": "web"});
    assert_eq!(code(allegro.execute("deploy", args.clone()).await), ErrorCode::ApprovalRequired);
    let approval = |approver| Approval {
        approver,
        tool: "deploy".into(),
        args_sha256: approval::args_sha256(&args),
        note: String::new(),
        nonce: None,
    };
    let mut r = Request::new("deploy", args.clone());
    r.approval = Some(approval(House::Allegro));
    assert_eq!(code(allegro.execute_request(r.clone()).await), ErrorCode::ApprovalInvalid);
    r.approval =
        Some(Approval { args_sha256: approval::args_sha256(&json!({"unit": "db"})), ..approval(House::Timmy) });
    assert_eq!(code(allegro.execute_request(r.clone()).await), ErrorCode::ApprovalInvalid);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing ran without a valid approval");
    r.approval = Some(approval(House::Timmy));
    allegro.execute_request(r).await.expect("approved by Timmy");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A dry run changes nothing, so it needs no approval.
    let mut dry = Request::new("deploy", args);
    dry.dry_run = true;
    allegro.execute_request(dry).await.expect("dry run allowed");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Proves Timmy itself changes production freely outside Sovereign mode.
#[tokio::test]
async fn timmy_runs_production_tools_without_approval_in_intelligent_mode() {
    let (timmy, runs) = with_production(House::Timmy, Mode::Intelligent);
    timmy.execute("deploy", json!({})).await.expect("runs");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Proves Sovereign mode needs approval for a mutating tool and fails closed without one.
#[tokio::test]
async fn sovereign_mode_fails_closed_without_approval() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("f"), "old").expect("seed");
    let timmy = harness_in(d.path(), House::Timmy, Mode::Sovereign);
    let args = json!({"path": "f", "content": "new"});
    assert_eq!(code(timmy.execute("file_write", args.clone()).await), ErrorCode::ApprovalRequired);
    assert_eq!(std::fs::read_to_string(d.path().join("f")).expect("read"), "old");
    timmy.execute("file_read", json!({"path": "f"})).await.expect("read-only needs no approval");
    let mut r = Request::new("file_write", args.clone());
    r.approval = Some(Approval {
        approver: House::Timmy,
        tool: "file_write".into(),
        args_sha256: approval::args_sha256(&args),
        note: "ok".into(),
        nonce: None,
    });
    timmy.execute_request(r).await.expect("approved");
    assert_eq!(std::fs::read_to_string(d.path().join("f")).expect("read"), "new");
}

/// Proves wrong types, missing and unknown fields, and unknown tools give E1xxx naming the
/// field or name, before any side effect.
#[tokio::test]
async fn contract_errors_name_the_field_and_touch_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let h = harness_in(d.path(), House::Timmy, Mode::Intelligent);
    let cases = [
        ("file_write", json!({"path": "x", "content": 5}), "content", "expected string, got integer"),
        ("file_write", json!({"content": "c"}), "path", "is required"),
        ("file_write", json!({"path": "x", "content": "c", "colour": 1}), "colour", "is not a known field"),
        ("file_read", json!({"path": "x", "max_bytes": -1}), "max_bytes", "must be at least 0"),
        ("file_read", json!("x"), "", "expected object, got string"),
    ];
    for (tool, args, field, problem) in cases {
        let e = h.execute(tool, args.clone()).await.expect_err("invalid");
        assert_eq!(e.code, ErrorCode::InvalidArguments, "{args}");
        assert_eq!(e.details["field"], field, "{args}");
        assert_eq!(e.details["problem"], problem, "{args}");
        assert!(e.request_id.is_some());
    }
    let e = h.execute("rm_rf", json!({})).await.expect_err("unknown");
    assert_eq!(e.code, ErrorCode::UnknownTool);
    assert!(e.message.contains("rm_rf"));
    assert_eq!(std::fs::read_dir(d.path()).expect("ls").count(), 0, "nothing was written");
}

/// Proves an unknown tool's name is echoed into E1001 bounded (128 characters, `…`), not
/// whole, however long the caller made it.
#[tokio::test]
async fn an_unknown_tool_name_is_echoed_bounded() {
    let d = tempfile::tempdir().expect("tempdir");
    let h = harness_in(d.path(), House::Timmy, Mode::Simple);
    let name = "x".repeat(10_000);
    let e = h.execute(&name, json!({})).await.expect_err("unknown");
    assert_eq!(e.code, ErrorCode::UnknownTool);
    let echoed = e.details["tool"].as_str().unwrap_or_default();
    assert_eq!(echoed.chars().count(), uni_wizard::error::ECHO_LIMIT, "{echoed}");
    assert!(echoed.ends_with('…') && e.message.len() < 200, "{}", e.message);
}

/// Proves a dry-run write reports what would change and changes nothing.
#[tokio::test]
async fn dry_run_write_changes_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("f"), "old").expect("seed");
    let h = harness_in(d.path(), House::Timmy, Mode::Simple);
    let mut r = Request::new("file_write", json!({"path": "f", "content": "new"}));
    r.dry_run = true;
    let o = h.execute_request(r).await.expect("dry run");
    assert_eq!(o.output["dry_run"], true);
    assert_eq!(o.output["sha256"], json!(sha256_hex(b"new")));
    assert_eq!(o.output["previous_sha256"], json!(sha256_hex(b"old")));
    assert_eq!(std::fs::read_to_string(d.path().join("f")).expect("read"), "old");
}

/// Proves every file tool refuses a `../` escape with E2008.
#[tokio::test]
async fn file_tools_refuse_dotdot_escape() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("root");
    std::fs::create_dir(&root).expect("root");
    std::fs::write(parent.path().join("secret"), "s").expect("secret");
    let h = harness_in(&root, House::Timmy, Mode::Simple);
    for (tool, args) in [
        ("file_read", json!({"path": "../secret"})),
        ("file_write", json!({"path": "../secret", "content": "x"})),
        ("file_list", json!({"path": ".."})),
        ("file_search", json!({"query": "s", "path": "sub/../../"})),
    ] {
        assert_eq!(code(h.execute(tool, args).await), ErrorCode::PathOutsideRoots, "{tool}");
    }
    assert_eq!(std::fs::read_to_string(parent.path().join("secret")).expect("read"), "s");
}

/// Proves every file tool refuses an absolute path outside the roots with E2008.
#[tokio::test]
async fn file_tools_refuse_absolute_paths_outside() {
    let root = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::write(other.path().join("secret"), "s").expect("secret");
    let secret = other.path().join("secret").display().to_string();
    let h = harness_in(root.path(), House::Timmy, Mode::Simple);
    for (tool, args) in [
        ("file_read", json!({"path": secret})),
        ("file_write", json!({"path": secret, "content": "x"})),
        ("file_list", json!({"path": other.path()})),
        ("file_search", json!({"query": "s", "path": other.path()})),
    ] {
        assert_eq!(code(h.execute(tool, args).await), ErrorCode::PathOutsideRoots, "{tool}");
    }
    assert_eq!(std::fs::read_to_string(other.path().join("secret")).expect("read"), "s");
}

/// Proves every file tool refuses to follow a symlink out of its root with E2008, while
/// listing and searching never follow one.
#[tokio::test]
async fn file_tools_refuse_symlink_escape() {
    let root = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::write(other.path().join("secret"), "needle").expect("secret");
    std::os::unix::fs::symlink(other.path().join("secret"), root.path().join("file_link")).expect("link");
    std::os::unix::fs::symlink(other.path(), root.path().join("dir_link")).expect("link");
    let h = harness_in(root.path(), House::Timmy, Mode::Simple);
    for (tool, args) in [
        ("file_read", json!({"path": "file_link"})),
        ("file_read", json!({"path": "dir_link/secret"})),
        ("file_write", json!({"path": "file_link", "content": "x"})),
        ("file_write", json!({"path": "dir_link/secret", "content": "x"})),
        ("file_list", json!({"path": "dir_link"})),
        ("file_search", json!({"query": "needle", "path": "dir_link"})),
    ] {
        assert_eq!(code(h.execute(tool, args.clone()).await), ErrorCode::PathOutsideRoots, "{tool} {args}");
    }
    assert_eq!(std::fs::read_to_string(other.path().join("secret")).expect("read"), "needle");
    let listed = h.execute("file_list", json!({"recursive": true})).await.expect("list root");
    let kinds: Vec<(&str, &str)> = listed.output["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| (e["path"].as_str().unwrap_or(""), e["kind"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(kinds, vec![("dir_link", "symlink"), ("file_link", "symlink")]);
    let found = h.execute("file_search", json!({"query": "needle"})).await.expect("search root");
    assert_eq!(found.output["matches"], json!([]), "search does not follow links out");
}

/// Proves file_list and file_search find what is there, and their outputs match their schemas.
#[tokio::test]
async fn list_and_search_work_and_match_their_schemas() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(d.path().join("src/deep")).expect("dirs");
    std::fs::write(d.path().join("src/a.rs"), "fn main() {\n    println!(\"Hello\");\n}\n").expect("a");
    std::fs::write(d.path().join("src/deep/b.rs"), "// hello again\n").expect("b");
    std::fs::write(d.path().join("blob.bin"), [0u8, 1, 2, b'h']).expect("bin");
    let h = harness_in(d.path(), House::Timmy, Mode::Simple);
    let listed = h.execute("file_list", json!({"recursive": true})).await.expect("list");
    let paths: Vec<&str> =
        listed.output["entries"].as_array().expect("entries").iter().filter_map(|e| e["path"].as_str()).collect();
    assert_eq!(paths, vec!["blob.bin", "src", "src/a.rs", "src/deep", "src/deep/b.rs"]);
    let flat = h.execute("file_list", json!({})).await.expect("list");
    assert_eq!(flat.output["entries"].as_array().map(Vec::len), Some(2));
    let found = h.execute("file_search", json!({"query": "hello", "case_insensitive": true})).await.expect("search");
    assert_eq!(
        found.output["matches"],
        json!([
            {"path": "src/a.rs", "line": 2, "column": 15, "text": "    println!(\"Hello\");"},
            {"path": "src/deep/b.rs", "line": 1, "column": 4, "text": "// hello again"},
        ])
    );
    assert_eq!(found.output["files_skipped"], 1, "the binary file is skipped");
    let regex = h.execute("file_search", json!({"query": "^fn \\w+", "regex": true})).await.expect("regex");
    assert_eq!(regex.output["matches"][0]["path"], "src/a.rs");
    let bad = h.execute("file_search", json!({"query": "(", "regex": true})).await.expect_err("bad regex");
    assert_eq!((bad.code, bad.details["field"].as_str()), (ErrorCode::InvalidArguments, Some("query")));
    for (tool, out) in [("file_list", &listed.output), ("file_search", &found.output)] {
        let contract = h.registry().get(tool).expect("tool").contract();
        contract.validate_output(out).unwrap_or_else(|v| panic!("{tool} output violates its schema: {v:?}"));
    }
}
