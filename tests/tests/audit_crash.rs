//! The audit store under a crash (issue 16, Done-means 2): Allegro's `uni-wizardd` worker is
//! SIGKILLed during a burst of audited calls (Timmy's `Worker/Execute` dispatches, on
//! loopback, the default config: every call audited, group commit). Every call that returned
//! success must be in the chain afterwards, and `uni-wizard audit verify` must pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::metadata::MetadataValue;
use uni_wizard_proto::v1::{ExecuteRequest, House, ToolCall, execute_response, worker_client::WorkerClient};
use uni_wizard_tests::bin;
use uni_wizard_tests::fleet::Fleet;

/// Concurrent callers in the burst.
const CALLERS: usize = 16;

/// Calls one worker as Timmy until a call fails (the worker is gone) or 30 s pass; the
/// provenance ids of the calls that returned success.
async fn burst(addr: String, token: String, ok: Arc<AtomicUsize>) -> Vec<String> {
    let mut ids = Vec::new();
    let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else { return ids };
    let Ok(channel) = channel.connect_timeout(Duration::from_secs(2)).connect().await else { return ids };
    let mut worker = WorkerClient::new(channel);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let call = ToolCall {
            tool: "file_read".into(),
            args_json: r#"{"path": "hello.txt"}"#.into(),
            session: "crash".into(),
            ..ToolCall::default()
        };
        let mut r = tonic::Request::new(ExecuteRequest {
            call: Some(call),
            house: House::Allegro.into(),
            ..ExecuteRequest::default()
        });
        r.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).expect("ascii"));
        r.metadata_mut().insert("x-uw-house", MetadataValue::from_static("timmy"));
        match tokio::time::timeout(Duration::from_secs(5), worker.execute(r)).await {
            Ok(Ok(resp)) => match resp.into_inner().result {
                Some(execute_response::Result::Outcome(o)) => {
                    ids.push(o.provenance_id);
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                other => panic!("a call before the kill failed: {other:?}"),
            },
            // The worker was killed: this call did not return success.
            _ => return ids,
        }
    }
    ids
}

/// Proves a SIGKILL during a burst of audited calls loses no acknowledged record: every
/// call that returned success is in Allegro's chain afterwards, and `audit verify` passes.
#[test]
fn a_killed_worker_keeps_every_acknowledged_record_and_its_chain_verifies() {
    let mut fleet = Fleet::start(&["timmy", "allegro"], &|_| "roles: [worker]\n".to_owned());
    let (addr, token) = (fleet.nodes["allegro"].grpc.clone(), fleet.nodes["timmy"].token.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let ok = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS).map(|_| rt.spawn(burst(addr.clone(), token.clone(), ok.clone()))).collect();
    let start = Instant::now();
    while ok.load(Ordering::Relaxed) < 300 {
        assert!(start.elapsed() < Duration::from_secs(30), "the burst never reached 300 calls");
        std::thread::sleep(Duration::from_millis(5));
    }
    fleet.node("allegro").kill();
    let ids: Vec<String> = rt.block_on(async {
        let mut all = Vec::new();
        for c in callers {
            all.extend(c.await.expect("caller"));
        }
        all
    });
    assert!(ids.len() >= 300, "{} calls returned", ids.len());

    let db = fleet.nodes["allegro"].home.join("audit.db");
    let o = std::process::Command::new(bin("uni-wizard"))
        .args(["audit", "verify", "--json", "--db"])
        .arg(&db)
        .output()
        .expect("audit verify runs");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!((o.status.code(), &v["ok"]), (Some(0), &serde_json::json!(true)), "{v}");
    let c = rusqlite::Connection::open(&db).expect("audit.db");
    let mut has = c.prepare("SELECT count(*) FROM records WHERE id = ?1").expect("select");
    let missing: Vec<&String> =
        ids.iter().filter(|id| has.query_row([id], |r| r.get::<_, i64>(0)).expect("query") != 1).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged calls are not in the chain: {missing:?}",
        missing.len(),
        ids.len()
    );
    let records = v["verification"]["records"].as_u64().unwrap_or(0);
    assert!(records >= ids.len() as u64, "{records} records for {} acknowledged calls", ids.len());
}
