//! The harness's `Observer` hook (telemetry), through the real `Harness` on real files.

use std::sync::{Arc, Mutex};

use serde_json::json;
use uni_wizard::{Config, ErrorCode, Execution, Harness, House, Mode, Observer};

#[derive(Default)]
struct Collect(Mutex<Vec<Execution>>);

impl Observer for Collect {
    fn executed(&self, e: &Execution) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(e.clone());
    }
}

/// Proves the observer sees each finished call once: a success with its provenance id and the
/// pattern DB's fingerprint, a refusal before execution with no provenance id, and no
/// unknown-tool call (those leave no record).
#[tokio::test]
async fn observer_sees_every_finished_call_once() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("a.txt"), "hello").expect("seed");
    let seen = Arc::new(Collect::default());
    let config = Config { file_roots: vec![d.path().to_path_buf()], ..Config::default() };
    let h = Harness::builder()
        .house(House::Ezra)
        .mode(Mode::Intelligent)
        .config(config)
        .observer(seen.clone())
        .build()
        .expect("harness");
    let ok = h.execute("file_read", json!({"path": "a.txt"})).await.expect("read");
    let refused = h.execute("file_write", json!({"path": "a.txt", "content": "x"})).await.expect_err("E2004");
    assert_eq!(refused.code, ErrorCode::ReadBeforeWriteRequired);
    assert!(h.execute("no_such_tool", json!({})).await.is_err());
    let seen = seen.0.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let schema = &h.registry().get("file_read").expect("tool").contract().spec().input_schema;
    assert_eq!(seen[0].request_id, ok.request_id);
    assert_eq!(seen[0].provenance_id, ok.provenance_id);
    assert_eq!(seen[0].fingerprint, uni_wizard::intelligence::fingerprint(&json!({"path": "a.txt"}), schema));
    assert!(seen[0].success && seen[0].attempts >= 1 && seen[0].house == House::Ezra);
    assert_eq!((seen[1].success, seen[1].error_code), (false, Some(ErrorCode::ReadBeforeWriteRequired)));
    assert!(seen[1].provenance_id.is_empty(), "refused before execution");
}
