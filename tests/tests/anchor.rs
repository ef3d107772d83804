//! Anchored audit chains across real processes (issue 16, item 2): Allegro's `uni-wizardd`
//! anchors its audit heads at Timmy's sink over the telemetry stream; `uni-wizard audit verify
//! --anchor` on Allegro fetches Timmy's checkpoints and names what an edit of `audit.db` that
//! holds together locally did. Every loop is bounded in time; nothing is mocked.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use tonic::metadata::MetadataValue;
use uni_wizard::audit::Row;
use uni_wizard_proto::v1::{AuditCheckpoint, AuditCheckpointsRequest, telemetry_client::TelemetryClient};
use uni_wizard_tests::bin;
use uni_wizard_tests::fleet::Fleet;

const ALLEGRO_NODE: &str = "allegro-node";

/// Timmy runs the router, the sovereign role, a worker and the sink; Allegro a worker. Both
/// anchor every 100 ms.
fn fleet() -> Fleet {
    fleet_anchoring_every(100)
}

/// As [`fleet`], anchoring every `period_ms`.
fn fleet_anchoring_every(period_ms: u64) -> Fleet {
    let telemetry =
        format!("telemetry: {{poll_ms: 50, anchor_period_ms: {period_ms}, backoff_min_ms: 20, backoff_max_ms: 200}}\n");
    let fleet = Fleet::start(&["timmy", "allegro"], &move |h| match h {
        "timmy" => format!("roles: [router, health, worker, sovereign, telemetry]\n{telemetry}"),
        _ => format!("roles: [worker, telemetry]\n{telemetry}"),
    });
    // Until then the router sends a call preferring Allegro to another house.
    fleet.wait_peer_state("timmy", "allegro", "up", Duration::from_secs(10));
    fleet
}

/// `Telemetry/AuditCheckpoints` for `node`, asked as `house` with its own token.
fn checkpoints(fleet: &Fleet, house: &str, node: &str) -> Result<Vec<AuditCheckpoint>, tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", fleet.nodes["timmy"].grpc))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut r = tonic::Request::new(AuditCheckpointsRequest { node: node.to_owned(), after: 0 });
        let bearer = format!("Bearer {}", fleet.nodes[house].token);
        r.metadata_mut().insert("authorization", MetadataValue::try_from(bearer).expect("ascii"));
        r.metadata_mut().insert("x-uw-house", MetadataValue::try_from(house).expect("ascii"));
        TelemetryClient::new(ch).audit_checkpoints(r).await.map(|a| a.into_inner().checkpoints)
    })
}

/// Waits (at most 20 s) until Timmy holds a checkpoint of `node` matching `f`.
fn wait_anchored(fleet: &Fleet, node: &str, what: &str, f: impl Fn(&AuditCheckpoint) -> bool) {
    let start = Instant::now();
    loop {
        if checkpoints(fleet, "timmy", node).is_ok_and(|cs| cs.iter().any(&f)) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "timmy never held a checkpoint of {node} with {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One audited Simple call through Timmy's router, as Timmy, run by `on`'s worker.
fn call(fleet: &Fleet, on: &str) {
    let o = std::process::Command::new(bin("uni-wizard"))
        .env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
        .env("UNI_WIZARD_TOKEN", &fleet.nodes["timmy"].token)
        .args(["test", "--json", "--router", &fleet.nodes["timmy"].grpc, "--house", "timmy", "--on", on])
        .args(["--tool", "file_read", "--arg", "path=hello.txt"])
        .output()
        .expect("uni-wizard test runs");
    let v = uni_wizard_tests::json_stdout(&o);
    assert!(o.status.success() && v["assigned_house"] == on, "{v}\n{}", String::from_utf8_lossy(&o.stderr));
}

/// [`call`], then waits until Timmy holds the checkpoint of record `seq` of `node`, so each
/// record is anchored on its own.
fn call_and_anchor(fleet: &Fleet, on: &str, node: &str, seq: u64) {
    call(fleet, on);
    wait_anchored(fleet, node, &format!("seq {seq}"), |c| c.seq == seq);
}

/// `uni-wizard audit verify` on `house`'s node: against Timmy's checkpoints when `anchored`.
fn verify(fleet: &Fleet, house: &str, anchored: bool) -> (Option<i32>, String) {
    let node = &fleet.nodes[house];
    let mut c = std::process::Command::new(bin("uni-wizard"));
    c.env("UNI_WIZARD_HOME", &node.home).args(["audit", "verify"]);
    if anchored {
        c.arg("--anchor").arg("--config").arg(&node.config);
    }
    let o: Output = c.output().expect("uni-wizard audit verify runs");
    (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// Allegro's audit store, for the attacker, with the append-only triggers dropped.
fn tamper(home: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(home.join("audit.db")).expect("audit.db");
    c.execute_batch("DROP TRIGGER records_no_update; DROP TRIGGER records_no_delete;").expect("drop triggers");
    c
}

/// Cuts the chain after `keep` records, `meta.head` moved to the new end, as an attacker who
/// knows the format would: the local chain holds.
fn cut_after(c: &rusqlite::Connection, keep: i64) {
    c.execute("DELETE FROM records WHERE seq > ?1", [keep]).expect("delete the tail");
    let head: String = c
        .query_row("SELECT seq || ' ' || id || ' ' || hash FROM records WHERE seq = ?1", [keep], |r| r.get(0))
        .expect("new end");
    c.execute("UPDATE meta SET value = ?1 WHERE key = 'head'", [head]).expect("move head");
}

/// Every record in `seq` order.
fn rows(c: &rusqlite::Connection) -> Vec<Row> {
    let mut st = c
        .prepare(
            "SELECT seq, id, parent_id, session, house, mode, node, tool, target, read_only, dry_run, ok, error_code, \
             args_sha256, result_sha256, started_ms, ended_ms, duration_us, approvals, prev_hash, hash \
             FROM records ORDER BY seq",
        )
        .expect("select");
    st.query_map([], |r| {
        Ok(Row {
            seq: r.get(0)?,
            id: r.get(1)?,
            parent_id: r.get(2)?,
            session: r.get(3)?,
            house: r.get(4)?,
            mode: r.get(5)?,
            node: r.get(6)?,
            tool: r.get(7)?,
            target: r.get(8)?,
            read_only: r.get(9)?,
            dry_run: r.get(10)?,
            ok: r.get(11)?,
            error_code: r.get(12)?,
            args_sha256: r.get(13)?,
            result_sha256: r.get(14)?,
            started_ms: r.get(15)?,
            ended_ms: r.get(16)?,
            duration_us: r.get(17)?,
            approvals: r.get(18)?,
            prev_hash: r.get(19)?,
            hash: r.get(20)?,
        })
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

fn assert_broken(out: &(Option<i32>, String), what: &str, seq_line: &str) {
    assert_eq!(out.0, Some(4), "verify must fail: {}", out.1);
    assert!(out.1.contains(what) && out.1.contains(seq_line), "expected {what:?} at {seq_line:?}: {}", out.1);
}

/// Proves a tail cut off Allegro's chain (with `meta.head` moved, so the file holds together
/// and a local `audit verify` passes) is named by `audit verify --anchor` as a truncated tail
/// from the first removed seq; and that Timmy's own chain is anchored at his own sink and
/// verifies against it.
#[test]
fn a_deleted_tail_is_named_by_verify_against_timmys_checkpoints() {
    let mut fleet = fleet();
    for seq in 1..=3 {
        call_and_anchor(&fleet, "allegro", ALLEGRO_NODE, seq);
    }
    let intact = verify(&fleet, "allegro", true);
    assert_eq!(intact.0, Some(0), "{}", intact.1);
    assert!(intact.1.contains("matches Timmy's"), "{}", intact.1);

    fleet.node("allegro").terminate();
    cut_after(&tamper(&fleet.nodes["allegro"].home), 1);
    let local = verify(&fleet, "allegro", false);
    assert_eq!(local.0, Some(0), "the cut holds together locally: {}", local.1);
    assert_broken(
        &verify(&fleet, "allegro", true),
        "truncated tail: Timmy's checkpoints reach record seq 3",
        "record seq 2:",
    );

    call_and_anchor(&fleet, "timmy", "timmy-node", 1);
    let timmy = verify(&fleet, "timmy", true);
    assert_eq!(timmy.0, Some(0), "{}", timmy.1);
    assert!(timmy.1.contains("matches Timmy's"), "{}", timmy.1);
}

/// Proves a record rewritten with the chain recomputed after it (a local `audit verify`
/// passes) is named at its seq by `audit verify --anchor`.
#[test]
fn a_rewritten_record_is_named_by_verify_against_timmys_checkpoints() {
    let mut fleet = fleet();
    for seq in 1..=3 {
        call_and_anchor(&fleet, "allegro", ALLEGRO_NODE, seq);
    }
    fleet.node("allegro").terminate();
    let c = tamper(&fleet.nodes["allegro"].home);
    let mut chain = rows(&c);
    chain[1].target = "nothing-to-see.txt".into();
    for i in 1..chain.len() {
        chain[i].prev_hash = chain[i - 1].hash.clone();
        chain[i].hash = chain[i].hash();
        c.execute(
            "UPDATE records SET target = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![chain[i].target, chain[i].prev_hash, chain[i].hash, chain[i].seq],
        )
        .expect("rewrite");
    }
    cut_after(&c, 3);
    let local = verify(&fleet, "allegro", false);
    assert_eq!(local.0, Some(0), "the rewrite holds together locally: {}", local.1);
    assert_broken(&verify(&fleet, "allegro", true), "rewritten record", "record seq 2 id ");
}

/// Proves a chain replaced by another (`audit.db` deleted, the daemon restarted, new calls
/// anchored) is named as a fork at the first seq Timmy holds two checkpoints for.
#[test]
fn a_forked_chain_is_named_by_verify_against_timmys_checkpoints() {
    let mut fleet = fleet();
    for seq in 1..=2 {
        call_and_anchor(&fleet, "allegro", ALLEGRO_NODE, seq);
    }
    fleet.node("allegro").terminate();
    for f in ["audit.db", "audit.db-wal", "audit.db-shm"] {
        let _ = std::fs::remove_file(fleet.nodes["allegro"].home.join(f));
    }
    fleet.node("allegro").start();
    fleet.wait_peer_state("timmy", "allegro", "up", Duration::from_secs(10));
    let before = checkpoints(&fleet, "timmy", ALLEGRO_NODE).expect("checkpoints").len();
    call(&fleet, "allegro");
    let start = Instant::now();
    while checkpoints(&fleet, "timmy", ALLEGRO_NODE).expect("checkpoints").len() <= before {
        assert!(start.elapsed() < Duration::from_secs(20), "the new chain was never anchored");
        std::thread::sleep(Duration::from_millis(50));
    }
    let local = verify(&fleet, "allegro", false);
    assert_eq!(local.0, Some(0), "the new chain holds locally: {}", local.1);
    assert_broken(&verify(&fleet, "allegro", true), "forked chain", "record seq 1 id ");
}

/// Proves a spent-token row deleted together with the local evidence of its use (the
/// `spent_head`, and the records from the call that used it on, `meta.head` moved) is named
/// by `audit verify --anchor` from the spent-token chain's checkpoint, though a local verify
/// passes; and that the Sovereign call and its spent token reach Timmy at once, with the
/// anchoring period an hour.
#[test]
fn a_deleted_spent_token_row_is_named_by_verify_against_timmys_checkpoints() {
    let mut fleet = fleet_anchoring_every(3_600_000);
    call(&fleet, "allegro");
    // A Sovereign write routed to Allegro waits for Timmy's operator, who approves it: the
    // worker spends Timmy's token at Timmy, then in its own audit store, then writes.
    let waiting = std::process::Command::new(bin("uni-wizard"))
        .env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
        .env("UNI_WIZARD_TOKEN", &fleet.nodes["timmy"].token)
        .args(["test", "--json", "--router", &fleet.nodes["timmy"].grpc, "--house", "timmy", "--on", "allegro"])
        .args(["--mode", "sovereign", "--tool", "file_write", "--arg", "path=x.txt", "--arg", "content=once"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("uni-wizard test starts");
    let id = fleet.pending_approval("allegro", "file_write")["approval_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(fleet.approve(&["--decide", &id])["decision"], "approved");
    let o = waiting.wait_with_output().expect("the call ends");
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    wait_anchored(&fleet, ALLEGRO_NODE, "spent_seq 1 and seq 2", |c| c.spent_seq == 1 && c.seq >= 2);

    fleet.node("allegro").terminate();
    let c = tamper(&fleet.nodes["allegro"].home);
    c.execute_batch("DELETE FROM used_tokens; DELETE FROM meta WHERE key = 'spent_head';").expect("delete the row");
    cut_after(&c, 1);
    let local = verify(&fleet, "allegro", false);
    assert_eq!(local.0, Some(0), "the deletion holds together locally: {}", local.1);
    assert_broken(&verify(&fleet, "allegro", true), "spent-token row removed", "spent token seq 1:");
}

/// Proves `AuditCheckpoints` gives a house only its own nodes' checkpoints: Allegro reads
/// Allegro's node and is refused Timmy's (E5003, also through `audit verify --anchor --node`),
/// while Timmy reads both and checks Allegro's file against Allegro's checkpoints.
#[test]
fn the_checkpoint_rpc_refuses_another_houses_node() {
    let fleet = fleet();
    call_and_anchor(&fleet, "allegro", ALLEGRO_NODE, 1);
    call_and_anchor(&fleet, "timmy", "timmy-node", 1);
    assert!(!checkpoints(&fleet, "allegro", ALLEGRO_NODE).expect("its own").is_empty());
    let mut c = std::process::Command::new(bin("uni-wizard"));
    c.args(["audit", "verify", "--anchor", "--config"]).arg(&fleet.nodes["allegro"].config);
    let o = c.args(["--node", "timmy-node"]).output().expect("audit verify runs");
    assert_eq!(o.status.code(), Some(5), "E5003 from the CLI too: {}", String::from_utf8_lossy(&o.stderr));
    let mut c = std::process::Command::new(bin("uni-wizard"));
    c.args(["audit", "verify", "--anchor", "--config"]).arg(&fleet.nodes["timmy"].config);
    c.args(["--node", ALLEGRO_NODE, "--db"]).arg(fleet.nodes["allegro"].home.join("audit.db"));
    let o = c.output().expect("audit verify runs");
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && shown.contains("matches Timmy's"), "Timmy checks Allegro's file: {shown}");
    let refused = checkpoints(&fleet, "allegro", "timmy-node").expect_err("not Allegro's node");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().starts_with("E5003"), "{refused:?}");
    let unbound = checkpoints(&fleet, "allegro", "someone-else").expect_err("bound to no house");
    assert!(unbound.message().starts_with("E5003"), "{unbound:?}");
    assert!(!checkpoints(&fleet, "timmy", "timmy-node").expect("timmy reads his own").is_empty());
}
