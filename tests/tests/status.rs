//! `uni-wizard status` against real processes: a real etcd on loopback and the four houses as
//! `uni-wizardd` processes (Timmy and Allegro routers, every node streaming telemetry to
//! Timmy). The screen and `--json` show the fleet up with its leader and term, a killed house
//! down (exit 4), and no leader once etcd is gone (exit 4, and why), each within a bounded
//! time; `--watch` in a real terminal (tmux) redraws in place without scrolling and quits
//! cleanly on Ctrl-C.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use uni_wizard_tests::etcd::EtcdCluster;
use uni_wizard_tests::fleet::{Fleet, HOUSES};
use uni_wizard_tests::{bin, json_stdout};

/// Roles, routes and the `etcd:` section of each house: Timmy and Allegro route (Timmy also
/// approves), every house works and streams telemetry.
fn extra(endpoints: &[String]) -> impl Fn(&str) -> String {
    let etcd = format!(
        "etcd: {{endpoints: [{}], lease_ttl_ms: 1000, keepalive_ms: 200, fence_margin_ms: 300}}\n\
         telemetry: {{backoff_min_ms: 20, backoff_max_ms: 200}}\n",
        endpoints.join(", ")
    );
    let routes = "router:\n  routes:\n    file: [ezra, bezalel]\n";
    move |h: &str| match h {
        "timmy" => format!("roles: [router, health, worker, sovereign, telemetry]\n{routes}{etcd}"),
        "allegro" => format!("roles: [router, health, worker, telemetry]\n{routes}{etcd}"),
        _ => format!("roles: [worker, telemetry]\n{etcd}"),
    }
}

/// The router whose `/health` says it leads, and its term.
fn leader(fleet: &Fleet) -> Option<(String, u64)> {
    ["timmy", "allegro"].iter().find_map(|r| {
        let h = fleet.nodes[*r].health()?;
        (h["leadership"]["state"] == "leader").then(|| ((*r).to_owned(), h["leadership"]["term"].as_u64().unwrap_or(0)))
    })
}

/// `uni-wizard status ARGS --config <timmy's config>`, and how long it took.
fn status(fleet: &Fleet, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let o = Command::new(bin("uni-wizard"))
        .env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
        .arg("status")
        .args(args)
        .arg("--config")
        .arg(&fleet.nodes["timmy"].config)
        .output()
        .expect("uni-wizard runs");
    (o, started.elapsed())
}

/// One `file_read` as Ezra through `routers`, which must succeed.
fn read_through(fleet: &Fleet, routers: &str) {
    let ran = Command::new(bin("uni-wizard"))
        .env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
        .env("UNI_WIZARD_TOKEN", &fleet.nodes["ezra"].token)
        .args(["test", "--json", "--router", routers, "--house", "ezra", "--tool", "file_read"])
        .args(["--arg", "path=hello.txt"])
        .output()
        .expect("test runs");
    assert!(ran.status.success(), "{}", text(&ran));
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn house<'a>(v: &'a Value, h: &str) -> &'a Value {
    v["houses"].as_array().and_then(|a| a.iter().find(|r| r["house"] == h)).unwrap_or(&Value::Null)
}

/// Proves the status screen and its JSON: with the fleet up, exit 0, the leader etcd shows
/// with its term, every house up with a latency and its /health, the task just run counted,
/// a rate over a window of about a second, Timmy's approvals (none), every node's telemetry
/// row; `--watch --json` prints a line per refresh, counts tasks run between two refreshes
/// in its rate, and exits 0 on SIGTERM; with Bezalel killed, exit 4 and Bezalel DOWN with the reason, the rest up; with etcd
/// gone, exit 4 and `leader NONE` with etcd's error; each run within 15 s.
#[test]
fn status_shows_the_fleet_up_a_house_down_and_no_leader() {
    let Some(mut etcd) = EtcdCluster::start(1) else { return };
    let mut fleet = Fleet::start(&HOUSES, &extra(&etcd.endpoints()));
    let deadline = Instant::now() + Duration::from_secs(15);
    let (lead, term) = loop {
        if let Some(l) = leader(&fleet) {
            break l;
        }
        assert!(Instant::now() < deadline, "no router led within 15 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    // One task through the routers, so the counters have something to count.
    let routers = format!("{},{}", fleet.nodes["timmy"].grpc, fleet.nodes["allegro"].grpc);
    read_through(&fleet, &routers);
    // Every node's stream reaches Timmy (bounded), so each has a telemetry row.
    let deadline = Instant::now() + Duration::from_secs(15);
    let v = loop {
        let (o, took) = status(&fleet, &["--json"]);
        assert!(took < Duration::from_secs(15), "status took {took:?}");
        let v = json_stdout(&o);
        let nodes = v["telemetry"]["nodes"].as_array().map_or(0, Vec::len);
        if o.status.code() == Some(0) && nodes == 4 {
            break v;
        }
        assert!(Instant::now() < deadline, "exit {:?}: {v}", o.status.code());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(v["ok"], true, "{v}");
    let l = &v["leadership"];
    assert_eq!((l["leader_house"].as_str(), l["term"].as_u64()), (Some(lead.as_str()), Some(term)), "{v}");
    for h in HOUSES {
        let r = house(&v, h);
        assert_eq!(r["state"], "up", "{h}: {v}");
        assert!(r["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{h}: {v}");
        assert_eq!((r["http"]["available"].clone(), r["http"]["status"].clone()), (true.into(), "serving".into()));
    }
    let t = &v["tasks"];
    assert!(t["finished_total"].as_f64().is_some_and(|n| n >= 1.0), "{v}");
    assert!(t["per_second"].as_f64().is_some_and(|r| r >= 0.0), "{v}");
    assert!(t["window_s"].as_f64().is_some_and(|w| (0.9..5.0).contains(&w)), "{v}");
    assert_eq!((v["approvals"]["available"].clone(), v["approvals"]["waiting"].clone()), (true.into(), 0.into()));
    assert_eq!(v["telemetry"]["sink"]["available"], true, "{v}");
    for n in v["telemetry"]["nodes"].as_array().into_iter().flatten() {
        assert!(n["buffered"].is_u64(), "every node's outbox is read from its /health: {v}");
    }
    assert_eq!(v["triage"]["available"], false, "no house runs triage: {v}");

    let (o, _) = status(&fleet, &[]);
    let screen = text(&o);
    eprintln!("--- all up (--nocapture shows the screens)\n{screen}--- its JSON\n{v}");
    assert_eq!(o.status.code(), Some(0), "{screen}");
    assert!(screen.contains(&format!("leader    {lead} ({lead}-node) at")), "{screen}");
    assert!(screen.contains(&format!("term {term},")), "{screen}");
    for h in HOUSES {
        assert!(screen.lines().any(|l| l.starts_with(&format!("{h:<8} up "))), "{h}: {screen}");
    }
    assert!(screen.contains("approvals none waiting at Timmy"), "{screen}");

    // `--watch --json`: one object per line per refresh; tasks run between two refreshes show
    // in the rate; SIGTERM ends it with exit 0.
    let mut watch = Command::new(bin("uni-wizard"))
        .env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
        .args(["status", "--watch", "--json", "--interval", "1", "--config"])
        .arg(&fleet.nodes["timmy"].config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("status --watch runs");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().expect("piped")));
    let mut next = || -> Value {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {line}"))
    };
    assert_eq!(next()["ok"], true);
    for _ in 0..3 {
        read_through(&fleet, &routers);
    }
    // Bounded: the tasks fall into the next refresh's window or the one after.
    let rated = (0..3).map(|_| next()).find(|v| v["tasks"]["per_second"].as_f64().is_some_and(|r| r > 0.0));
    let rated = rated.expect("a refresh after the tasks shows a rate above 0");
    assert!(rated["tasks"]["finished_total"].as_f64().is_some_and(|n| n >= 2.0), "{rated}");
    let _ = Command::new("kill").arg("-TERM").arg(watch.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Ok(Some(status)) = watch.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = watch.kill();
            let _ = watch.wait();
            panic!("status --watch did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exited.code(), Some(0), "SIGTERM ends --watch cleanly");

    // One house down: shown down with the reason, exit 4; the rest and the leader stay.
    fleet.node("bezalel").kill();
    let (o, took) = status(&fleet, &["--json"]);
    let v = json_stdout(&o);
    assert_eq!((o.status.code(), v["ok"].clone()), (Some(4), false.into()), "{v}");
    assert!(took < Duration::from_secs(15), "status took {took:?}");
    assert_eq!(house(&v, "bezalel")["state"], "down", "{v}");
    assert!(house(&v, "bezalel")["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    assert_eq!(house(&v, "bezalel")["http"]["available"], false, "{v}");
    for h in ["timmy", "allegro", "ezra"] {
        assert_eq!(house(&v, h)["state"], "up", "{h}: {v}");
    }
    assert_eq!(v["leadership"]["leader_house"], lead.as_str(), "{v}");
    let (o, _) = status(&fleet, &[]);
    let screen = text(&o);
    eprintln!("--- bezalel down\n{screen}");
    assert_eq!(o.status.code(), Some(4), "{screen}");
    assert!(screen.lines().any(|l| l.starts_with("bezalel  DOWN")), "{screen}");

    // No leader: etcd gone. Status says so and why, exit 4, and still renders in bounded time.
    etcd.kill(0);
    let (o, took) = status(&fleet, &["--json"]);
    let v = json_stdout(&o);
    assert_eq!((o.status.code(), v["ok"].clone()), (Some(4), false.into()), "{v}");
    assert!(took < Duration::from_secs(15), "status took {took:?}");
    let l = &v["leadership"];
    assert_eq!((l["leader_house"].clone(), l["available"].clone()), (Value::Null, false.into()), "{v}");
    assert!(l["reason"].as_str().is_some_and(|r| r.starts_with("etcd: ")), "{v}");
    assert_eq!(house(&v, "timmy")["state"], "up", "{v}");
    let (o, _) = status(&fleet, &[]);
    let screen = text(&o);
    eprintln!("--- etcd gone\n{screen}--- its JSON\n{v}");
    assert_eq!(o.status.code(), Some(4), "{screen}");
    assert!(screen.contains("leader    NONE: etcd: "), "{screen}");
}

/// A tmux server of the test's own (`-S`, its socket in the fleet's temp dir, so nothing is
/// left behind), killed on drop.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    fn capture(&self) -> String {
        let o = self.cmd().args(["capture-pane", "-p", "-t", "status"]).output().expect("capture-pane");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn history(&self) -> String {
        let o = self.cmd().args(["display", "-p", "-t", "status", "#{history_size}"]).output().expect("display");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    fn alive(&self) -> bool {
        self.cmd().args(["has-session", "-t", "status"]).output().is_ok_and(|o| o.status.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// Proves `--watch` in a real terminal (tmux, 120x40) redraws in place: after at least two
/// refreshes (the clock in the header moved twice) the screen holds one header, nothing went
/// into the scrollback (history size 0), and Ctrl-C ends it (the session closes within 5 s).
#[test]
fn watch_redraws_in_place_without_scrolling() {
    if Command::new("tmux").arg("-V").output().is_err() {
        uni_wizard_tests::missing("`tmux` (Debian package tmux)");
        return;
    }
    let fleet = Fleet::start(&HOUSES, &|_: &str| String::new());
    let tmux = Tmux { socket: fleet.dir.path().join("tmux.sock") };
    let command = format!(
        "env UNI_WIZARD_HOME={} {} status --watch --interval 1 --config {}",
        fleet.dir.path().join("cli-home").display(),
        bin("uni-wizard").display(),
        fleet.nodes["timmy"].config.display()
    );
    let started = tmux
        .cmd()
        .args(["new-session", "-d", "-s", "status", "-x", "120", "-y", "40"])
        .arg(&command)
        .status()
        .expect("tmux runs");
    assert!(started.success(), "tmux new-session failed");
    // The header's clock: wait (bounded) until it showed three different seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut clocks: Vec<String> = Vec::new();
    let screen = loop {
        let screen = tmux.capture();
        if let Some(h) = screen.lines().find(|l| l.starts_with("uni-wizard status")) {
            let clock = h.split_whitespace().nth(2).unwrap_or("").to_owned();
            if !clocks.contains(&clock) {
                clocks.push(clock);
            }
        }
        if clocks.len() >= 3 {
            break screen;
        }
        assert!(Instant::now() < deadline, "fewer than two refreshes within 30 s: {clocks:?}\n{screen}");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("--- tmux after {} refreshes\n{screen}", clocks.len());
    assert_eq!(screen.matches("uni-wizard status").count(), 1, "one header on the screen:\n{screen}");
    assert!(screen.lines().next().is_some_and(|l| l.starts_with("uni-wizard status")), "{screen}");
    assert!(screen.lines().any(|l| l.starts_with("timmy    up ")), "{screen}");
    assert_eq!(tmux.history(), "0", "nothing scrolled into the history:\n{screen}");
    let sent = tmux.cmd().args(["send-keys", "-t", "status", "C-c"]).status().expect("send-keys");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.alive() {
        assert!(Instant::now() < deadline, "status --watch did not quit on Ctrl-C:\n{}", tmux.capture());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Proves the triage line comes from the triage house's `/triage/status` (Allegro's, with the
/// scrape token), and that a source this house may not read shows as unavailable with the
/// reason without failing the screen: asked as Ezra in a fleet without Timmy, approvals are
/// unavailable and the exit is still 0 (every house up, no etcd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_is_read_from_the_triage_house_and_unreadable_sources_say_why() {
    let server = uni_wizard_tests::gitea_server::GiteaServer::start().await;
    let fleet = tokio::task::block_in_place(|| uni_wizard_tests::webhooks::start_triage_fleet(&server, 3_600_000));
    let o = tokio::task::block_in_place(|| {
        Command::new(bin("uni-wizard"))
            .env("UNI_WIZARD_HOME", fleet.dir.path().join("cli-home"))
            .args(["status", "--json", "--config"])
            .arg(&fleet.nodes["ezra"].config)
            .output()
            .expect("uni-wizard runs")
    });
    let v = json_stdout(&o);
    assert_eq!((o.status.code(), v["ok"].clone()), (Some(0), true.into()), "{v}");
    let t = &v["triage"];
    assert_eq!((t["available"].clone(), t["source"].clone()), (true.into(), "allegro /triage/status".into()), "{v}");
    assert!(t["queued"].is_u64() && t["issues_triaged"].is_u64(), "{v}");
    assert_eq!(v["approvals"]["available"], false, "{v}");
    assert!(v["approvals"]["reason"].as_str().is_some_and(|r| r.starts_with('E')), "{v}");
    assert_eq!(v["leadership"]["etcd"], false, "{v}");
}
