//! The audit store and Sovereign mode: the hash chain, signed approval tokens, fail-closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use uni_wizard::audit::AuditStore;
use uni_wizard::provenance::ProvenanceLog;
use uni_wizard::tokens::{self, Claims, TokenApprover};
use uni_wizard::{Config, ErrorCode, Harness, House, Mode, Request};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    db: PathBuf,
    store: Arc<AuditStore>,
    key: ed25519_dalek::SigningKey,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("root");
    let db = dir.path().join("audit.db");
    let store = Arc::new(AuditStore::open(&db).expect("store opens"));
    Fixture { root, db, store, key: tokens::generate_key(), _dir: dir }
}

/// The node every harness here runs on.
const NODE: &str = "n1";

fn harness(f: &Fixture, mode: Mode, store: Arc<AuditStore>) -> Harness {
    harness_of(f, House::Timmy, mode, store)
}

fn harness_of(f: &Fixture, house: House, mode: Mode, store: Arc<AuditStore>) -> Harness {
    let config = Config { file_roots: vec![f.root.clone()], node: Some(NODE.into()), ..Config::default() };
    let approver = TokenApprover::new(f.key.verifying_key(), store.clone());
    Harness::builder()
        .house(house)
        .mode(mode)
        .config(config)
        .provenance(store)
        .approver(Arc::new(approver))
        .build()
        .expect("harness builds")
}

/// Appends `n` file_read records through a Simple harness and returns their ids in order.
async fn seed(f: &Fixture, n: usize) -> Vec<String> {
    std::fs::write(f.root.join("a.txt"), "hello").expect("seed file");
    let h = harness(f, Mode::Simple, f.store.clone());
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(h.execute("file_read", json!({"path": "a.txt"})).await.expect("read").provenance_id);
    }
    ids
}

/// A second connection with the append-only triggers dropped: what a tamperer would do.
fn tamper(db: &Path, sql: &str) {
    let c = rusqlite::Connection::open(db).expect("second connection");
    c.execute_batch("DROP TRIGGER records_no_update; DROP TRIGGER records_no_delete;").expect("drop guards");
    c.execute_batch(sql).expect("tamper");
}

fn write_args(content: &str) -> Value {
    json!({"path": "out.txt", "content": content})
}

fn token(f: &Fixture, args: &Value, ttl_ms: u64) -> String {
    tokens::sign(&f.key, &Claims::new(House::Timmy, NODE, "file_write", args, ttl_ms))
}

async fn sovereign_write(h: &Harness, args: Value, token: Option<String>) -> uni_wizard::Result<uni_wizard::Outcome> {
    h.execute_request(Request { approval_token: token, ..Request::new("file_write", args) }).await
}

/// Proves an untouched chain verifies, and the triggers refuse UPDATE and DELETE.
#[tokio::test]
async fn intact_chain_verifies_and_triggers_guard_it() {
    let f = fixture();
    let ids = seed(&f, 3).await;
    let v = f.store.verify().expect("verify");
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.records, 3);
    assert_eq!(f.store.get(&ids[1]).map(|r| r.seq), Some(2));
    let c = rusqlite::Connection::open(&f.db).expect("second connection");
    assert!(c.execute("UPDATE records SET ok = 0", []).is_err());
    assert!(c.execute("DELETE FROM records", []).is_err());
}

/// Proves changing any stored field of a record makes verify fail naming that record.
#[tokio::test]
async fn changing_a_byte_of_any_field_is_named() {
    let columns = [
        ("id", "'x' || id"),
        ("parent_id", "'p'"),
        ("session", "session || 'x'"),
        ("house", "'ezra'"),
        ("mode", "'sovereign'"),
        ("node", "node || 'x'"),
        ("tool", "'file_write'"),
        ("target", "target || 'x'"),
        ("read_only", "0"),
        ("dry_run", "1"),
        ("ok", "0"),
        ("error_code", "'E3003'"),
        // Digests get their first digit flipped between '0' and '1': writing '0' over it
        // changed nothing for the one digest in 16 that already starts with '0'.
        ("args_sha256", "iif(args_sha256 LIKE '0%', '1', '0') || substr(args_sha256, 2)"),
        ("result_sha256", "iif(result_sha256 LIKE '0%', '1', '0') || substr(result_sha256, 2)"),
        ("started_ms", "started_ms + 1"),
        ("ended_ms", "ended_ms + 1"),
        ("duration_us", "duration_us + 1"),
        ("approvals", "'[ ]'"),
        ("hash", "iif(hash LIKE '0%', '1', '0') || substr(hash, 2)"),
    ];
    for (column, expr) in columns {
        let f = fixture();
        let ids = seed(&f, 3).await;
        tamper(&f.db, &format!("UPDATE records SET {column} = {expr} WHERE seq = 2"));
        let broken = f.store.verify().expect("verify").broken.unwrap_or_else(|| panic!("{column}: not detected"));
        assert_eq!(broken.seq, 2, "{column}");
        if column != "id" {
            assert_eq!(broken.id, ids[1], "{column}");
        }
        assert!(broken.problem.contains("hash mismatch"), "{column}: {}", broken.problem);
    }
}

/// Proves deleting a middle record, or the last one, makes verify fail naming the record.
#[tokio::test]
async fn deleting_a_record_is_named() {
    let f = fixture();
    let ids = seed(&f, 4).await;
    tamper(&f.db, "DELETE FROM records WHERE seq = 2");
    let broken = f.store.verify().expect("verify").broken.expect("detected");
    assert_eq!((broken.seq, broken.id.as_str()), (3, ids[2].as_str()), "{broken:?}");

    let f = fixture();
    let ids = seed(&f, 3).await;
    tamper(&f.db, "DELETE FROM records WHERE seq = 3");
    let broken = f.store.verify().expect("verify").broken.expect("detected");
    assert_eq!((broken.seq, broken.id.as_str()), (3, ids[2].as_str()), "{broken:?}");
    assert!(broken.problem.contains("missing head"), "{broken:?}");
}

/// Proves swapping two records' places in the chain makes verify fail naming the first moved one.
#[tokio::test]
async fn reordering_records_is_named() {
    let f = fixture();
    let ids = seed(&f, 4).await;
    tamper(
        &f.db,
        "UPDATE records SET seq = 100 WHERE seq = 2; UPDATE records SET seq = 2 WHERE seq = 3; UPDATE records SET seq = 3 WHERE seq = 100;",
    );
    let broken = f.store.verify().expect("verify").broken.expect("detected");
    assert_eq!((broken.seq, broken.id.as_str()), (2, ids[2].as_str()), "{broken:?}");
}

/// Proves a Sovereign mutating call without approval is E2002 and the tool does not run.
#[tokio::test]
async fn sovereign_write_without_approval_is_refused_and_nothing_runs() {
    let f = fixture();
    let h = harness(&f, Mode::Sovereign, f.store.clone());
    let e = sovereign_write(&h, write_args("x"), None).await.expect_err("refused");
    assert_eq!(e.code, ErrorCode::ApprovalRequired);
    assert!(!f.root.join("out.txt").exists());
    let last = f.store.show(None, Some(1)).expect("show");
    assert_eq!(last[0].record.error_code.as_deref(), Some("E2002"), "the refusal is recorded");
}

/// Proves a valid token runs the write and its approval is in the record; a token for other
/// arguments, an expired one, or one signed by another key is refused (E2003) and nothing runs.
#[tokio::test]
async fn sovereign_tokens_are_bound_to_arguments_expiry_and_timmys_key() {
    let f = fixture();
    let h = harness(&f, Mode::Sovereign, f.store.clone());
    let other_key = tokens::generate_key();
    let refused = [
        ("other arguments", token(&f, &write_args("something else"), 60_000)),
        ("expired", token(&f, &write_args("x"), 0)),
        (
            "not Timmy's key",
            tokens::sign(&other_key, &Claims::new(House::Timmy, NODE, "file_write", &write_args("x"), 60_000)),
        ),
        ("another tool", tokens::sign(&f.key, &Claims::new(House::Timmy, NODE, "file_read", &write_args("x"), 60_000))),
        ("garbage", "not-a-token".to_owned()),
    ];
    for (why, t) in refused {
        let e = sovereign_write(&h, write_args("x"), Some(t)).await.expect_err(why);
        assert_eq!(e.code, ErrorCode::ApprovalInvalid, "{why}: {e:?}");
        assert!(!f.root.join("out.txt").exists(), "{why}");
    }
    let ok = sovereign_write(&h, write_args("x"), Some(token(&f, &write_args("x"), 60_000))).await.expect("runs");
    assert_eq!(std::fs::read_to_string(f.root.join("out.txt")).expect("written"), "x");
    let record = f.store.get(&ok.provenance_id).expect("recorded");
    assert_eq!(record.approvals.len(), 1);
    assert_eq!(record.approvals[0].approver, House::Timmy);
    assert!(record.result_sha256.is_some() && record.ended_ms >= record.started_ms);
    assert!(f.store.verify().expect("verify").ok());
}

/// Proves a token used once is refused the second time (E2003), also by another store handle.
#[tokio::test]
async fn a_token_is_single_use() {
    let f = fixture();
    let h = harness(&f, Mode::Sovereign, f.store.clone());
    let t = token(&f, &write_args("once"), 60_000);
    sovereign_write(&h, write_args("once"), Some(t.clone())).await.expect("first use runs");
    std::fs::remove_file(f.root.join("out.txt")).expect("remove");
    let e = sovereign_write(&h, write_args("once"), Some(t.clone())).await.expect_err("reuse");
    assert_eq!(e.code, ErrorCode::ApprovalInvalid);
    assert!(e.message.contains("already used"), "{}", e.message);
    let again = Arc::new(AuditStore::open(&f.db).expect("reopen"));
    let h2 = harness(&f, Mode::Sovereign, again);
    let e = sovereign_write(&h2, write_args("once"), Some(t)).await.expect_err("reuse from another process");
    assert_eq!(e.code, ErrorCode::ApprovalInvalid);
    assert!(!f.root.join("out.txt").exists());
}

/// Proves a token is bound to the house and the node it was signed for (issue 15, defect 5): a
/// token for Ezra does not approve Allegro's call, one for node `n2` not a call on `n1`, and
/// one signed for any node (`*`, asked for explicitly) approves the call on `n1`.
#[tokio::test]
async fn a_token_is_bound_to_its_house_and_node() {
    let f = fixture();
    let allegro = harness_of(&f, House::Allegro, Mode::Sovereign, f.store.clone());
    let args = write_args("bound");
    let sign = |house, node: &str| tokens::sign(&f.key, &Claims::new(house, node, "file_write", &args, 60_000));
    for (why, t) in [("another house", sign(House::Ezra, NODE)), ("another node", sign(House::Allegro, "n2"))] {
        let e = sovereign_write(&allegro, args.clone(), Some(t)).await.expect_err(why);
        assert_eq!(e.code, ErrorCode::ApprovalInvalid, "{why}: {e:?}");
        assert!(e.message.contains(why), "{why}: {}", e.message);
        assert!(!f.root.join("out.txt").exists(), "{why}");
    }
    sovereign_write(&allegro, args.clone(), Some(sign(House::Allegro, tokens::ANY_NODE))).await.expect("any node");
    assert_eq!(std::fs::read_to_string(f.root.join("out.txt")).expect("written"), "bound");
}

/// Proves the approval hash binds secret-named values too (issue 15, defect 6): a token signed
/// for `http_post` with `{"password_reset": {"user": "bob"}}` is refused (E2003, other
/// arguments) for `{"password_reset": {"user": "admin", "new_password": ...}}`, and nothing is
/// sent; the same token approves the call it was signed for (which then meets the egress
/// policy: E2009, since this harness may reach nothing).
#[tokio::test]
async fn a_token_binds_values_under_secret_named_keys() {
    let f = fixture();
    let h = harness(&f, Mode::Sovereign, f.store.clone());
    let call = |user: Value| json!({"url": "https://api.example.org/reset", "json": {"password_reset": user}});
    let signed = call(json!({"user": "bob"}));
    let sent = call(json!({"user": "admin", "new_password": "hunter2"}));
    let t = tokens::sign(&f.key, &Claims::new(House::Timmy, NODE, "http_post", &signed, 60_000));
    let post = |args: Value, t: String| {
        h.execute_request(Request { approval_token: Some(t), ..Request::new("http_post", args) })
    };
    let e = post(sent, t.clone()).await.expect_err("other arguments");
    assert_eq!(e.code, ErrorCode::ApprovalInvalid, "{e:?}");
    assert!(e.message.contains("other arguments"), "{}", e.message);
    let e = post(signed, t).await.expect_err("approved, then refused by egress");
    assert_eq!(e.code, ErrorCode::EgressDenied, "{e:?}");
}

/// Proves a local re-use after tampering is named by `audit verify` (issue 15, defect 5):
/// deleting a spent token's `used_tokens` row is named at the record that used it, and the
/// token that then works a second time is named at the second use.
#[tokio::test]
async fn a_removed_spent_token_row_and_its_reuse_are_named_by_verify() {
    let f = fixture();
    let h = harness(&f, Mode::Sovereign, f.store.clone());
    seed(&f, 1).await;
    let t = token(&f, &write_args("once"), 60_000);
    let first = sovereign_write(&h, write_args("once"), Some(t.clone())).await.expect("first use runs");
    assert!(f.store.verify().expect("verify").ok());
    let nonce = tokens::open(&f.key.verifying_key(), &t).expect("opens").nonce;
    let record = f.store.get(&first.provenance_id).expect("recorded");
    assert_eq!(record.approvals[0].nonce.as_deref(), Some(nonce.as_str()), "the nonce is in the chain");

    let c = rusqlite::Connection::open(&f.db).expect("second connection");
    c.execute("DELETE FROM used_tokens WHERE nonce = ?1", [&nonce]).expect("delete the row");
    let broken = f.store.verify().expect("verify").broken.expect("a removed row is seen");
    assert_eq!((broken.seq, broken.id.as_str()), (2, first.provenance_id.as_str()), "{broken:?}");
    assert!(broken.problem.contains("spent-token row removed"), "{}", broken.problem);

    std::fs::remove_file(f.root.join("out.txt")).expect("remove");
    let second = sovereign_write(&h, write_args("once"), Some(t)).await.expect("works again locally");
    let broken = f.store.verify().expect("verify").broken.expect("a second use is seen");
    assert_eq!(broken.id, second.provenance_id, "{broken:?}");
    assert!(broken.problem.contains("already used at seq 2"), "{}", broken.problem);
}

/// Proves a Sovereign `file_write` with an unwritable audit DB fails closed (E3008), the file
/// unchanged. The store is opened with SQLITE_OPEN_READ_ONLY: unlike a chmod (ignored by root,
/// which these tests run as), SQLite itself refuses every write through that connection.
#[tokio::test]
async fn sovereign_write_fails_closed_when_the_audit_db_is_unwritable() {
    let f = fixture();
    std::fs::write(f.root.join("out.txt"), "before").expect("seed");
    seed(&f, 1).await;
    let read_only = Arc::new(AuditStore::open_read_only(&f.db).expect("opens read-only"));
    let h = harness(&f, Mode::Sovereign, read_only.clone());
    let args = write_args("after");
    let e = sovereign_write(&h, args.clone(), Some(token(&f, &args, 60_000))).await.expect_err("fails closed");
    assert_eq!(e.code, ErrorCode::ProvenanceUnavailable, "{e:?}");
    assert_eq!(std::fs::read_to_string(f.root.join("out.txt")).expect("read"), "before");
    // Read-only tools are refused too: nothing runs unrecorded in Sovereign mode.
    let e = h.execute("file_read", json!({"path": "out.txt"})).await.expect_err("fails closed");
    assert_eq!(e.code, ErrorCode::ProvenanceUnavailable);
}

/// Proves Bezalel's proof is looked up in the audit store, across store handles (processes).
#[tokio::test]
async fn bezalel_cites_a_proof_from_the_audit_store() {
    let f = fixture();
    std::fs::write(f.root.join("a.txt"), "hello").expect("seed");
    let config = Config { file_roots: vec![f.root.clone()], ..Config::default() };
    let bezalel = |store: Arc<AuditStore>| {
        Harness::builder()
            .house(House::Bezalel)
            .mode(Mode::Simple)
            .config(config.clone())
            .provenance(store)
            .session("s1")
            .build()
            .expect("harness")
    };
    let check = bezalel(f.store.clone()).execute("file_read", json!({"path": "a.txt"})).await.expect("check");
    let reopened = Arc::new(AuditStore::open(&f.db).expect("reopen"));
    let req = Request { proof: Some(check.provenance_id), ..Request::new("file_write", write_args("built")) };
    bezalel(reopened).execute_request(req).await.expect("write with proof");
    assert_eq!(std::fs::read_to_string(f.root.join("out.txt")).expect("read"), "built");
}
