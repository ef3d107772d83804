//! Intelligent mode through the real `Harness` and a real SQLite pattern DB: degradation when
//! the DB goes away and recovery when it returns, identical predictions after a restart,
//! predictions that follow outcomes, and refusal below policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use uni_wizard::contract::{Contract, ContractSpec};
use uni_wizard::intelligence::{fingerprint, fingerprint_by};
use uni_wizard::{Config, ErrorCode, Harness, House, Intelligence, IntelligenceConfig, Mode};

struct Setup {
    _dir: tempfile::TempDir,
    files: PathBuf,
    db_dir: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = dir.path().join("files");
    std::fs::create_dir(&files).expect("files dir");
    std::fs::write(files.join("present.txt"), "x".repeat(1024)).expect("write");
    let db_dir = dir.path().join("db");
    Setup { files, db_dir, _dir: dir }
}

fn db_path(s: &Setup) -> PathBuf {
    s.db_dir.join("patterns.db")
}

fn harness(s: &Setup, intel: &Arc<Intelligence>) -> Harness {
    let config = Config { file_roots: vec![s.files.clone()], ..Config::default() };
    Harness::builder()
        .house(House::Timmy)
        .mode(Mode::Intelligent)
        .config(config)
        .intelligence(intel.clone())
        .build()
        .expect("harness")
}

fn open(path: &Path, cfg: &IntelligenceConfig) -> Arc<Intelligence> {
    Intelligence::open(cfg, path, "test-node").expect("intelligence")
}

/// Proves that when the DB's directory is replaced by a regular file mid-run (which makes the
/// DB unusable even as root, unlike chmod), calls keep succeeding but run as Simple with the
/// outcome flagged and counted, and return to Intelligent once the directory is back.
#[tokio::test]
async fn db_loss_degrades_to_simple_and_recovers() {
    let s = setup();
    let intel = open(&db_path(&s), &IntelligenceConfig::default());
    let h = harness(&s, &intel);
    let read = || h.execute("file_read", json!({"path": "present.txt"}));
    let first = read().await.expect("read");
    assert!(first.degraded.is_none(), "{first:?}");
    assert!(intel.flush(), "DB healthy at start");

    let away = s.db_dir.with_extension("away");
    std::fs::rename(&s.db_dir, &away).expect("move the DB directory away");
    std::fs::write(&s.db_dir, "not a directory").expect("a file where the directory was");
    let deadline = Instant::now() + Duration::from_secs(10);
    let degraded = loop {
        let o = read().await.expect("no execution fails because the DB is gone");
        if let Some(why) = o.degraded.clone() {
            break why;
        }
        assert!(Instant::now() < deadline, "never degraded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(degraded.contains("pattern DB unavailable"), "{degraded}");
    assert!(intel.stats().degraded_calls.load(Ordering::Relaxed) >= 1);
    assert!(intel.stats().db_errors.load(Ordering::Relaxed) >= 1);
    assert!(!intel.db_ok());

    std::fs::remove_file(&s.db_dir).expect("remove the file");
    std::fs::rename(&away, &s.db_dir).expect("directory back");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = read().await.expect("read");
        if o.degraded.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "never returned to Intelligent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(intel.flush(), "DB healthy again");
}

/// Proves that after 10k executions, a flush and a restart on the same DB, the rebuilt model
/// and its predictions are identical to those before.
#[tokio::test]
async fn predictions_survive_a_restart_identically() {
    let s = setup();
    let cfg = IntelligenceConfig { refuse_below: 0.0, ..IntelligenceConfig::default() };
    let intel = open(&db_path(&s), &cfg);
    let h = harness(&s, &intel);
    for i in 0..10_000u32 {
        let path = if i % 3 == 0 { "missing.txt" } else { "present.txt" };
        let _ = h.execute("file_read", json!({"path": path})).await;
        if i % 7 == 0 {
            let _ = h.execute("file_read", json!({"path": "present.txt", "max_bytes": 10})).await;
        }
    }
    assert!(intel.flush(), "all rows written");
    let before = intel.snapshot();
    let p_before = intel.predict_tool("file_read", House::Timmy);
    assert!(p_before.samples >= 10_000);
    assert_eq!(intel.stats().dropped.load(Ordering::Relaxed), 0);
    drop(h);
    drop(intel);

    let again = open(&db_path(&s), &cfg);
    assert_eq!(again.snapshot(), before, "model rebuilt from the DB equals the live one");
    assert_eq!(again.predict_tool("file_read", House::Timmy), p_before);
}

/// Proves the prediction for a real tool starts at the prior with n=0, rises after successes
/// (`file_read` of an existing file) and falls after failures (a missing file).
#[tokio::test]
async fn prediction_moves_with_outcomes() {
    let s = setup();
    let cfg = IntelligenceConfig { refuse_below: 0.0, half_life: 20.0, ..IntelligenceConfig::default() };
    let intel = open(&db_path(&s), &cfg);
    let h = harness(&s, &intel);
    let prior = intel.predict_tool("file_read", House::Timmy);
    assert_eq!(prior.samples, 0);
    assert!((prior.p_success - 0.5).abs() < 1e-9);
    for _ in 0..30 {
        h.execute("file_read", json!({"path": "present.txt"})).await.expect("read");
    }
    let good = intel.predict_tool("file_read", House::Timmy);
    assert_eq!(good.samples, 30);
    assert!(good.p_success > 0.9 && good.upper - good.lower < prior.upper - prior.lower, "{good:?}");
    assert!(good.latency_p50_us.is_some());
    for _ in 0..30 {
        let e = h.execute("file_read", json!({"path": "missing.txt"})).await.expect_err("missing");
        assert_ne!(e.code, ErrorCode::PredictedFailure);
    }
    let bad = intel.predict_tool("file_read", House::Timmy);
    assert!(bad.p_success < 0.3, "{bad:?}");
    assert_eq!(intel.preferred_house("file_read"), Some(House::Timmy));
}

/// Proves a call whose predicted success is below the refuse threshold, with enough history,
/// is refused with E3010 carrying the prediction, and one just above it only warns.
#[tokio::test]
async fn refuses_below_policy_with_the_prediction() {
    let s = setup();
    let cfg = IntelligenceConfig { min_samples: 5, refuse_below: 0.3, probe_every: 0, ..IntelligenceConfig::default() };
    let intel = open(&db_path(&s), &cfg);
    let h = harness(&s, &intel);
    let mut warned = false;
    let mut refused = None;
    for _ in 0..40 {
        match h.execute("file_read", json!({"path": "missing.txt"})).await {
            Err(e) if e.code == ErrorCode::PredictedFailure => {
                refused = Some(e);
                break;
            }
            Err(_) => {}
            Ok(o) => warned |= !o.warnings.is_empty(),
        }
    }
    let e = refused.expect("refused before 40 failures");
    assert!(!warned);
    let p = &e.details["prediction"];
    assert!(p["samples"].as_u64().expect("samples") >= 5, "{}", e.details);
    assert!(p["upper"].as_f64().expect("upper") < 0.3);
    assert!(e.request_id.is_some());
    // A different tool with no history is not refused.
    h.execute("file_list", json!({"path": "."})).await.expect("list");
}

/// Proves the fingerprint ignores free values and secrets but not booleans or enum values.
#[test]
fn fingerprint_rule() {
    let schema = json!({"properties": {"mode": {"type": "string", "enum": ["a", "b"]}}});
    let fp = |v| fingerprint(&v, &schema);
    assert_eq!(fp(json!({"path": "a"})), fp(json!({"path": "b"})));
    assert_eq!(fp(json!({"token": "s1"})), fp(json!({"token": "s2"})));
    assert_ne!(fp(json!({"r": true})), fp(json!({"r": false})));
    assert_ne!(fp(json!({"mode": "a"})), fp(json!({"mode": "b"})));
    assert_ne!(fp(json!({"path": "a"})), fp(json!({"path": 1})));
}

/// Proves the fingerprint a compiled contract gives (its enum fields read once) is the one its
/// schema gives, for every built-in tool and for a schema with enums of strings and numbers
/// and an enumerated secret.
#[test]
fn contract_fingerprint_is_the_schema_fingerprint() {
    let registry = uni_wizard::tools::Registry::builtin().expect("registry");
    let extra = Contract::new(ContractSpec {
        name: "enums",
        input_schema: json!({"type": "object", "properties": {
            "mode": {"type": "string", "enum": ["a", "b"]}, "level": {"enum": [1, 2]}, "free": {"type": "string"},
            "api_key": {"enum": ["x"]}
        }}),
        ..<uni_wizard::tools::file::read::FileRead as uni_wizard::tools::TypedTool>::spec()
    })
    .expect("contract");
    assert!(extra.is_enumerated("mode") && extra.is_enumerated("level") && !extra.is_enumerated("free"));
    let contracts: Vec<&Contract> = registry.iter().map(|t| t.contract()).chain([&extra]).collect();
    for contract in contracts {
        let schema = &contract.spec().input_schema;
        let mut names: Vec<String> =
            schema["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default();
        names.extend(["unknown".to_owned(), "mode".to_owned(), "level".to_owned()]);
        for value in [json!("a"), json!("b"), json!(1), json!(true), json!(null), json!({"k": [1]})] {
            let args: serde_json::Map<String, serde_json::Value> =
                names.iter().map(|n| (n.clone(), value.clone())).collect();
            let args = serde_json::Value::Object(args);
            assert_eq!(
                fingerprint_by(&args, |k| contract.is_enumerated(k)),
                fingerprint(&args, schema),
                "{} with {args}",
                contract.spec().name
            );
        }
    }
}

/// Proves a saturated writer queue (capacity 1, a writer lingering 300 ms) degrades calls to
/// Simple with the outcome flagged, fails none, and that calls are Intelligent again once the
/// queue drains.
#[tokio::test]
async fn saturated_queue_degrades_without_failing() {
    let s = setup();
    let cfg = IntelligenceConfig { queue_capacity: 1, linger_ms: 300, ..IntelligenceConfig::default() };
    let intel = open(&db_path(&s), &cfg);
    let h = harness(&s, &intel);
    let mut reasons = Vec::new();
    for _ in 0..5 {
        let o = h.execute("file_read", json!({"path": "present.txt"})).await.expect("never fails");
        reasons.extend(o.degraded);
    }
    assert!(!reasons.is_empty(), "some call degraded");
    assert!(reasons.iter().all(|r| r.contains("queue")), "{reasons:?}");
    assert!(intel.stats().degraded_calls.load(Ordering::Relaxed) >= 1);
    assert!(intel.flush());
    let o = h.execute("file_read", json!({"path": "present.txt"})).await.expect("read");
    assert!(o.degraded.is_none(), "{o:?}");
    assert!(intel.flush());
    assert_eq!(intel.snapshot(), open_again(&s, &cfg).snapshot(), "dropped rows never entered the model");
}

fn open_again(s: &Setup, cfg: &IntelligenceConfig) -> Arc<Intelligence> {
    open(&db_path(s), cfg)
}

/// Runs `f` on its own thread and returns whether it finished within `bound`.
fn finishes_within(bound: Duration, f: impl FnOnce() + Send + 'static) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(bound).is_ok()
}

/// Proves a flush and a shutdown do not wait out the writer's linger: with a 10-minute linger,
/// `flush()` commits the row and dropping the `Intelligence` ends the writer, each well inside
/// a minute (a CLI run that records one row exits when it is written).
#[tokio::test]
async fn flush_and_shutdown_cut_the_linger_short() {
    let s = setup();
    let cfg = IntelligenceConfig { linger_ms: 600_000, ..IntelligenceConfig::default() };
    let intel = open(&db_path(&s), &cfg);
    let h = harness(&s, &intel);
    h.execute("file_read", json!({"path": "present.txt"})).await.expect("read");
    let i = intel.clone();
    assert!(finishes_within(Duration::from_secs(60), move || assert!(i.flush())), "flush waited out the linger");
    let stored = Intelligence::load_model(&cfg, &db_path(&s)).expect("model");
    assert_eq!(stored, intel.snapshot(), "the flushed row is in the DB");

    h.execute("file_read", json!({"path": "present.txt"})).await.expect("read");
    drop(h);
    assert!(finishes_within(Duration::from_secs(60), move || drop(intel)), "shutdown waited out the linger");
    let db = rusqlite::Connection::open(db_path(&s)).expect("db");
    let rows: i64 = db.query_row("SELECT count(*) FROM executions", [], |r| r.get(0)).expect("count");
    assert_eq!(rows, 2, "the row recorded before shutdown was written");
}
