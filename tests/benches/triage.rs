//! Triage latency (issue #8, SYSTEM.md §7: webhook -> issue labelled ≤ 1 s): from the moment a
//! webhook delivery is sent to the triage node until the issue's labels are on the Gitea test
//! server, for real `uni-wizardd` processes (Allegro: router, health, worker, triage; Ezra and
//! Bezalel workers) on loopback.
//!
//! Two runs of `TRIAGE_BENCH_ISSUES` issues each (default 200):
//! - **sequential**: one webhook at a time, the next sent once the previous issue is labelled
//!   (latency without queueing);
//! - **burst**: every webhook sent back to back as fast as the node answers, while a watcher
//!   notes when each issue's labels appear (latency under load: the queue, four issues at a
//!   time, and the routed tasks' own Gitea calls competing on two cores).
//!
//! Each issue gets the full treatment: labels (created the first time), assignee, comment and
//! a routed `gitea_list_issues` task on Bezalel. The clock starts before the HTTP request is
//! written, so the webhook's own round trip is included. Run:
//!
//! ```text
//! cargo build --release --workspace --bins && cargo bench -p uni_wizard_tests --bench triage
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uni_wizard_tests::gitea_server::{GiteaServer, OWNER, REPO};
use uni_wizard_tests::webhooks::{Delivery, sample_secret, start_triage_fleet};

fn main() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(bench());
}

async fn post(client: &reqwest::Client, http: &str, d: &Delivery) -> u16 {
    let mut req = client.post(format!("http://{http}/webhooks/gitea")).body(d.body.clone());
    for (k, v) in &d.headers {
        req = req.header(k, v);
    }
    req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

fn labelled(server: &GiteaServer, number: u64) -> bool {
    server.labels(OWNER, REPO, number).iter().any(|l| l == "kind/bug")
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(name: &str, mut lat: Vec<Duration>, answers: &mut [Duration], wall: Duration) {
    lat.sort();
    answers.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "triage/{name}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms | webhook answered p50={:.2} ms p99={:.2} ms | {:.0} issues/s",
        lat.len(),
        ms(quantile(&lat, 0.50)),
        ms(quantile(&lat, 0.99)),
        ms(quantile(&lat, 1.0)),
        ms(quantile(answers, 0.50)),
        ms(quantile(answers, 0.99)),
        lat.len() as f64 / wall.as_secs_f64()
    );
    let p99 = quantile(&lat, 0.99);
    if p99 > Duration::from_secs(1) {
        println!("triage/{name}: p99 {:.1} ms is over the 1 s target", ms(p99));
    }
}

async fn bench() {
    let n: usize = std::env::var("TRIAGE_BENCH_ISSUES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let server = GiteaServer::start().await;
    let mut fleet = tokio::task::block_in_place(|| start_triage_fleet(&server, 3_600_000));
    let http = fleet.node("allegro").http.clone();
    let metrics_token = fleet.metrics_token.clone();
    let secret = sample_secret();
    let client = reqwest::Client::new();
    // The start's poll first, so that every issue below is the webhook's.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let polled = match client.get(format!("http://{http}/triage/status")).bearer_auth(&metrics_token).send().await {
            Ok(r) => r.json::<serde_json::Value>().await.ok().is_some_and(|v| v["cursors"][0]["polled_ms"].is_i64()),
            Err(_) => false,
        };
        if polled {
            break;
        }
        assert!(Instant::now() < deadline, "the triage node never polled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wait_labelled = |number: u64, since: Instant| {
        let server = &server;
        async move {
            while !labelled(server, number) {
                assert!(since.elapsed() < Duration::from_secs(30), "issue {number} never labelled");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            since.elapsed()
        }
    };

    // Warm-up: labels get created, connections opened, caches filled.
    for i in 0..10 {
        let title = format!("Crash in warm-up {i}");
        let number = server.add_issue(OWNER, REPO, &title, "", &[]);
        let d = Delivery::from_sample("issues-opened", number, &title, "alice", &secret);
        let t0 = Instant::now();
        assert_eq!(post(&client, &http, &d).await, 202);
        wait_labelled(number, t0).await;
    }

    // Sequential.
    let mut lat = Vec::with_capacity(n);
    let mut answers = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let title = format!("Crash number {i}");
        let number = server.add_issue(OWNER, REPO, &title, "", &[]);
        let d = Delivery::from_sample("issues-opened", number, &title, "alice", &secret);
        let t0 = Instant::now();
        assert_eq!(post(&client, &http, &d).await, 202);
        answers.push(t0.elapsed());
        lat.push(wait_labelled(number, t0).await);
    }
    report("sequential", lat, &mut answers, started.elapsed());

    // Burst.
    let mut deliveries = Vec::with_capacity(n);
    for i in 0..n {
        let title = format!("Crash in burst {i}");
        let number = server.add_issue(OWNER, REPO, &title, "", &[]);
        deliveries.push((number, Delivery::from_sample("issues-opened", number, &title, "alice", &secret)));
    }
    let sent: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let mut answers = Vec::with_capacity(n);
    let started = Instant::now();
    let watcher = {
        let sent = sent.clone();
        let server = &server;
        async move {
            let mut done: BTreeMap<u64, Duration> = BTreeMap::new();
            while done.len() < n {
                let pending: Vec<(u64, Instant)> = sent
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .filter(|(k, _)| !done.contains_key(k))
                    .map(|(k, v)| (*k, *v))
                    .collect();
                for (number, t0) in pending {
                    if labelled(server, number) {
                        done.insert(number, t0.elapsed());
                    }
                }
                assert!(started.elapsed() < Duration::from_secs(120), "burst not labelled within 120 s");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            done.into_values().collect::<Vec<_>>()
        }
    };
    let sender = async {
        for (number, d) in &deliveries {
            let t0 = Instant::now();
            sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(*number, t0);
            assert_eq!(post(&client, &http, d).await, 202);
            answers.push(t0.elapsed());
        }
    };
    let (lat, ()) = tokio::join!(watcher, sender);
    report("burst", lat, &mut answers, started.elapsed());
    let node = fleet.node("allegro");
    assert!(!node.log().contains("panicked"), "{}", node.log());
}
