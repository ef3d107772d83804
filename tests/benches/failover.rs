//! Router failover (issue 14, SYSTEM.md §4): the time from SIGKILL of the leading router to the
//! first task a new leader routes, under a steady stream of tasks, over `FAILOVER_KILLS` kills
//! (default 20). Real processes on loopback: a 3-member etcd cluster (`--heartbeat-interval 50
//! --election-timeout 500`, as DEPENDENCIES.md measured) and the four houses as `uni-wizardd`,
//! Timmy and Allegro both routers, every node with the **default** `etcd:` timing (only the
//! endpoints set: lease TTL 2 s, renewed every 500 ms, fenced 500 ms early).
//!
//! The stream: one client thread submitting `file_read` tasks back to back with the CLI's own
//! leader-following submit (`cli::remote::submit`, both routers listed), each with a fresh
//! key, noting when each was sent and answered. After a kill, the first answer to a task sent
//! once the old leader was reaped is the new leader's. The CLI's own patience applies: while no
//! router leads, a submission keeps asking every 200 ms. The killed router is restarted and must follow before the
//! next kill. Baseline in the same run: the lease TTL the leader held, so the ratio says how
//! much of a takeover is waiting for the dead leader's lease to expire. Run:
//!
//! ```text
//! cargo build --release --workspace --bins && cargo bench -p uni_wizard_tests --bench failover
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uni_wizard::{House, Request};
use uni_wizard_daemons::cli::remote::{Connect, submit};
use uni_wizard_daemons::wire::Submission;
use uni_wizard_tests::etcd::EtcdCluster;
use uni_wizard_tests::fleet::{Fleet, HOUSES};

const ROUTERS: [&str; 2] = ["timmy", "allegro"];
const TTL: Duration = Duration::from_millis(2_000);

fn leader(fleet: &Fleet) -> Option<String> {
    ROUTERS
        .iter()
        .find(|r| fleet.nodes[**r].health().is_some_and(|h| h["leadership"]["state"] == "leader"))
        .map(|r| (*r).to_owned())
}

fn wait(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() {
    let kills: usize = std::env::var("FAILOVER_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
    let Some(mut etcd) = EtcdCluster::new(3) else { return };
    etcd.start_all();
    let endpoints = etcd.endpoints().join(", ");
    let extra = move |h: &str| {
        let etcd = format!("etcd: {{endpoints: [{endpoints}]}}\n");
        match h {
            "timmy" | "allegro" => {
                format!("roles: [router, health, worker]\nrouter: {{routes: {{file: [ezra, bezalel]}}}}\n{etcd}")
            }
            _ => etcd,
        }
    };
    let mut fleet = Fleet::start(&HOUSES, &extra);
    wait("a first leader", Duration::from_secs(20), || leader(&fleet).is_some());

    // The stream of tasks, on its own thread and runtime.
    // Each answered task: when it was submitted (its first try) and when the answer came.
    let answers: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let routers: Vec<String> = ROUTERS.iter().map(|r| fleet.nodes[*r].grpc.clone()).collect();
    let connect =
        Connect { token: Some(fleet.nodes["ezra"].token.clone()), tls_ca: None, tls_cert: None, tls_key: None };
    let stream = {
        let (answers, stop) = (answers.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let call = Request::new("file_read", serde_json::json!({ "path": "hello.txt" }));
                    let s =
                        Submission { caller: House::Ezra, key: format!("failover-{n}"), preferred: None, mode: None };
                    let sent = Instant::now();
                    match submit(&connect, &routers, &s, &call).await {
                        Ok(_) => answers.lock().expect("answers").push((sent, Instant::now())),
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                n
            })
        })
    };

    let mut took = Vec::with_capacity(kills);
    for round in 0..kills {
        let mut lead = String::new();
        wait("a leader before the kill", Duration::from_secs(10), || {
            lead = leader(&fleet).unwrap_or_default();
            !lead.is_empty()
        });
        let before = answers.lock().expect("answers").len();
        wait("tasks flowing before the kill", Duration::from_secs(10), || {
            answers.lock().expect("answers").len() > before
        });
        // SIGKILL, reaped: from here the old leader answers nothing. The clock starts at the
        // signal; the first task counted is one first sent after the old leader was gone.
        let killed_at = Instant::now();
        fleet.node(&lead).kill();
        let gone = Instant::now();
        let mut first = None;
        wait("a task routed by the new leader", Duration::from_secs(30), || {
            first = answers.lock().expect("answers").iter().find(|(sent, _)| *sent > gone).map(|(_, done)| *done);
            first.is_some()
        });
        let dt = first.map(|t| t - killed_at).unwrap_or_default();
        eprintln!("kill {round:>2}: {lead} killed, first task routed by the new leader after {} ms", dt.as_millis());
        took.push(dt);
        fleet.node(&lead).start();
        wait("the restarted router follows", Duration::from_secs(20), || {
            fleet.nodes[&lead].health().is_some_and(|h| h["leadership"]["state"] == "follower")
        });
    }
    stop.store(true, Ordering::Relaxed);
    let submitted = stream.join().expect("stream");
    let answered = answers.lock().expect("answers").len();

    took.sort();
    let p50 = took[took.len() / 2];
    let max = took[took.len() - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "failover: {kills} SIGKILLs of the leader under a stream of tasks ({answered} of {submitted} submissions answered)"
    );
    println!(
        "  kill -> first task routed by the new leader: p50 {:.0} ms, max {:.0} ms (target: max <= 3000 ms)",
        ms(p50),
        ms(max)
    );
    println!(
        "  baseline, the lease TTL held: {:.0} ms; ratio p50 {:.2}x, max {:.2}x",
        ms(TTL),
        ms(p50) / ms(TTL),
        ms(max) / ms(TTL)
    );
    println!("  beside: Patroni's default TTL 30 s and the seed's 30 s target: max is {:.1}% of it", ms(max) / 300.0);
}
