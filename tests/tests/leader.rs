//! Router leadership against a real etcd cluster on loopback (tests/src/etcd.rs): the election,
//! its self-fencing, handover, etcd member and quorum loss, etcd down at start, and the
//! workers' leader watch. The library runs in-process; etcd is the real server, started and
//! killed by each test. The tests take turns (one cluster at a time on a 2-core machine).

use std::time::Duration;

use tokio::time::Instant;
use uni_wizard::House;
use uni_wizard_daemons::config::etcd::{EtcdConfig, EtcdTls};
use uni_wizard_daemons::leader::{Election, LeaderInfo, LeaderWatch, Leadership};
use uni_wizard_tests::etcd::EtcdCluster;

/// One etcd cluster at a time: their timing (50 ms heartbeats) must not compete for 2 cores.
/// (tokio's mutex wakes across runtimes, and each test has its own.)
async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// A valid section for `cluster` with a `ttl_ms` lease (defaults otherwise: keep-alive and
/// margin a quarter of the TTL), 500 ms call bounds.
fn config(endpoints: Vec<String>, ttl_ms: u64) -> EtcdConfig {
    let mut c = EtcdConfig::new(endpoints);
    c.prefix = "/uw-test".into();
    c.lease_ttl_ms = ttl_ms;
    c.request_timeout_ms = 500;
    c.connect_timeout_ms = 500;
    c.validate().expect("a valid etcd section");
    c
}

/// Polls `f` every 20 ms until it answers, at most `within`.
async fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn leading(e: &Election) -> Option<u64> {
    match e.state() {
        Leadership::Leader { term, .. } => Some(term),
        _ => None,
    }
}

fn following(e: &Election) -> Option<LeaderInfo> {
    match e.state() {
        Leadership::Follower { leader } => Some(leader),
        _ => None,
    }
}

/// Runs blocking cluster work (process starts, health waits) off the async workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Two routers starting together: waits until one leads and the other follows it.
async fn two(cfg: &EtcdConfig) -> (Election, Election, u64) {
    let timmy = Election::start(cfg.clone(), House::Timmy, "timmy-node", "127.0.0.1:7401");
    let allegro = Election::start(cfg.clone(), House::Allegro, "allegro-node", "127.0.0.1:7402");
    let (leader, follower) = eventually(Duration::from_secs(10), "one leads, the other follows", || {
        match (leading(&timmy), leading(&allegro)) {
            (Some(_), None) if following(&allegro).is_some() => Some((0, 1)),
            (None, Some(_)) if following(&timmy).is_some() => Some((1, 0)),
            _ => None,
        }
    })
    .await;
    let mut pair = [Some(timmy), Some(allegro)];
    let leader = pair[leader].take().expect("leader");
    let follower = pair[follower].take().expect("follower");
    let term = leading(&leader).expect("leads");
    (leader, follower, term)
}

/// Proves two routers on a 3-member cluster settle with exactly one leader, whose term the
/// fence accepts (and no other), and a follower that names the leader's house, node,
/// endpoint and term; and that this holds steadily over several renewals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_the_other_follows() {
    let _turn = turn().await;
    let Some(cluster) = blocking(|| EtcdCluster::start(3)) else { return };
    let cfg = config(cluster.endpoints(), 2_000);
    let (leader, follower, term) = two(&cfg).await;
    let (house, node, endpoint) = match leader.state() {
        Leadership::Leader { .. } if leader.may_dispatch(term) => {
            // Which of the two won is etcd's choice; the follower must name exactly that one.
            let f = following(&follower).expect("follows");
            (f.house, f.node, f.endpoint)
        }
        other => panic!("not leading: {other:?}"),
    };
    assert!(term > 0);
    let expected = if house == House::Timmy {
        (House::Timmy, "timmy-node", "127.0.0.1:7401")
    } else {
        (House::Allegro, "allegro-node", "127.0.0.1:7402")
    };
    assert_eq!((house, node.as_str(), endpoint.as_str()), expected);
    assert!(!leader.may_dispatch(term + 1) && !leader.may_dispatch(term - 1), "only its own term");
    assert!(!follower.may_dispatch(term), "a follower never dispatches");
    // Steady over several keep-alives (2 s TTL: a renewal every 500 ms).
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(leading(&leader), Some(term));
        assert_eq!(following(&follower).map(|l| l.term), Some(term));
        assert_eq!(leading(&follower), None);
    }
    leader.shutdown().await;
    follower.shutdown().await;
}

/// Proves a leader that shuts down hands over at once (it resigns: the follower leads well
/// within the lease TTL + margin) under a strictly greater term, and that a leader simply
/// dropped hands over the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_hands_over_at_once() {
    let _turn = turn().await;
    let Some(cluster) = blocking(|| EtcdCluster::start(3)) else { return };
    let cfg = config(cluster.endpoints(), 2_000);
    let (leader, follower, term) = two(&cfg).await;
    let fence = leader.fence();
    let stopped = Instant::now();
    leader.shutdown().await;
    assert!(!fence.may_dispatch(term), "the fence closes before the handover");
    let within = cfg.lease_ttl() + cfg.fence_margin();
    let next = eventually(within, "the follower leads after the leader resigned", || leading(&follower)).await;
    let took = stopped.elapsed();
    assert!(next > term, "a new term ({next}) above the old ({term})");
    assert!(took < cfg.lease_ttl(), "resigning hands over before the lease would expire: {took:?}");

    let third = Election::start(cfg.clone(), House::Ezra, "ezra-node", "127.0.0.1:7403");
    eventually(Duration::from_secs(5), "the third router follows", || following(&third).filter(|l| l.term == next))
        .await;
    let dropped = Instant::now();
    drop(follower);
    let last = eventually(within, "the third leads after the leader was dropped", || leading(&third)).await;
    assert!(last > next, "a new term ({last}) above the old ({next})");
    assert!(dropped.elapsed() < cfg.lease_ttl(), "dropping resigns too: {:?}", dropped.elapsed());
    third.shutdown().await;
}

/// Proves self-fencing: with 2 of 3 members killed (no quorum), the leader's `may_dispatch`
/// turns false before the lease TTL has passed since its last answered renewal, and its state
/// says the lease was not renewed; with the members back it leads again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_quorum_fences_the_leader_and_it_recovers_by_itself() {
    let _turn = turn().await;
    let Some(mut cluster) = blocking(|| EtcdCluster::start(3)) else { return };
    let cfg = config(cluster.endpoints(), 2_000);
    let e = Election::start(cfg.clone(), House::Allegro, "allegro-node", "127.0.0.1:7402");
    let term = eventually(Duration::from_secs(10), "it leads", || leading(&e)).await;
    let mut states = e.subscribe();
    // Any two: the survivor alone has no quorum.
    let killed = Instant::now();
    blocking(|| {
        cluster.kill(0);
        cluster.kill(1);
    });
    // Each renewal etcd answers moves `valid_until` on; the test sees the move (at `seen`)
    // after the renewal was sent. So the fence must close by `seen + TTL - margin`: before
    // the lease can have expired (`sent + TTL`), by the margin.
    let mut last: Option<(Instant, Instant)> = None;
    let fenced = eventually(cfg.lease_ttl() * 3, "the fence closes", || {
        if let Leadership::Leader { valid_until, .. } = &*states.borrow_and_update()
            && last.is_none_or(|(v, _)| v != *valid_until)
        {
            last = Some((*valid_until, Instant::now()));
        }
        (!e.may_dispatch(term)).then(Instant::now)
    })
    .await;
    let (_, seen) = last.expect("a leader state was seen");
    let bound = seen + cfg.lease_ttl() - cfg.fence_margin() + Duration::from_millis(50);
    assert!(
        fenced <= bound,
        "fenced {:?} after the last renewal was seen; TTL - margin is {:?}",
        fenced - seen,
        cfg.lease_ttl() - cfg.fence_margin()
    );
    assert!(
        fenced.duration_since(killed) < cfg.lease_ttl() + Duration::from_secs(1),
        "fenced within the TTL of the quorum loss (an isolated etcd leader answers for up to an election timeout): {:?}",
        fenced.duration_since(killed)
    );
    match e.state() {
        Leadership::Unavailable { reason } => assert!(reason.contains("lease not renewed"), "{reason}"),
        other => panic!("not unavailable: {other:?}"),
    }
    // The fence stays closed while there is no quorum.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!e.may_dispatch(term) && leading(&e).is_none());

    blocking(|| {
        cluster.restart(0);
        cluster.restart(1);
    });
    let again = eventually(Duration::from_secs(15), "it leads again once the quorum is back", || leading(&e)).await;
    assert!(again >= term, "the same term when the lease survived, else a greater one: {again} vs {term}");
    assert!(e.may_dispatch(again));
    e.shutdown().await;
}

/// Proves losing one member of three changes nothing: with a member that is not etcd's raft
/// leader killed, the leader keeps dispatching under the same term all along and the follower
/// keeps following it; with etcd's raft leader killed (etcd elects another within about an
/// election timeout), the same router leads under the same term afterwards, its fence closed
/// for at most a moment (observed: never on this machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_member_of_three_changes_nothing() {
    let _turn = turn().await;
    let Some(mut cluster) = blocking(|| EtcdCluster::start(3)) else { return };
    let cfg = config(cluster.endpoints(), 2_000);
    let (leader, follower, term) = two(&cfg).await;
    let raft_leader = blocking(|| cluster.raft_leader()).expect("etcd has a raft leader");
    // A member that is not etcd's own leader: a raft election is a different event.
    let victim = (raft_leader + 1) % 3;
    blocking(|| cluster.kill(victim));
    let until = Instant::now() + cfg.lease_ttl() * 2;
    while Instant::now() < until {
        assert!(leader.may_dispatch(term), "the leader stays fenced-open: {:?}", leader.state());
        assert_eq!(following(&follower).map(|l| l.term), Some(term), "{:?}", follower.state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    blocking(|| cluster.restart(victim));
    for _ in 0..25 {
        assert!(leader.may_dispatch(term));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let raft_leader = blocking(|| cluster.raft_leader()).expect("etcd has a raft leader");
    blocking(|| cluster.kill(raft_leader));
    let mut closed = 0;
    let until = Instant::now() + cfg.lease_ttl() * 2;
    while Instant::now() < until {
        if !leader.may_dispatch(term) {
            closed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed * 20 <= 1_000, "the fence was closed for about {} ms", closed * 20);
    assert_eq!(leading(&leader), Some(term), "the same leader, the same term");
    assert_eq!(following(&follower).map(|l| l.term), Some(term));
    leader.shutdown().await;
    follower.shutdown().await;
}

/// Proves a member that hangs (SIGSTOP: its sockets stay open and it answers nothing) changes
/// nothing: with each member that is not etcd's raft leader frozen in turn for twice the TTL,
/// the leader keeps dispatching under the same term all along, the follower follows it and a
/// worker's leader watch shows it; with etcd's raft leader frozen, the same router leads under
/// the same term afterwards, its fence closed for at most a moment. (Before the lease was
/// renewed through every member, a frozen member holding the one keep-alive stream made the
/// leader step down.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_changes_nothing() {
    let _turn = turn().await;
    let Some(cluster) = blocking(|| EtcdCluster::start(3)) else { return };
    let cfg = config(cluster.endpoints(), 2_000);
    let (leader, follower, term) = two(&cfg).await;
    let watch = LeaderWatch::start(cfg.clone());
    eventually(Duration::from_secs(5), "the watch sees the leader", || watch.current().filter(|l| l.term == term))
        .await;
    let raft_leader = blocking(|| cluster.raft_leader()).expect("etcd has a raft leader");
    for victim in (0..3).filter(|i| *i != raft_leader) {
        blocking(|| cluster.freeze(victim));
        let until = Instant::now() + cfg.lease_ttl() * 2;
        while Instant::now() < until {
            assert!(leader.may_dispatch(term), "member {victim} frozen: {:?}", leader.state());
            assert_eq!(following(&follower).map(|l| l.term), Some(term), "{:?}", follower.state());
            assert_eq!(watch.current().map(|l| l.term), Some(term), "the worker's view, member {victim} frozen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        blocking(|| cluster.thaw(victim));
    }

    blocking(|| cluster.freeze(raft_leader));
    let mut closed = 0;
    let until = Instant::now() + cfg.lease_ttl() * 2;
    while Instant::now() < until {
        if !leader.may_dispatch(term) {
            closed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    blocking(|| cluster.thaw(raft_leader));
    assert!(closed * 20 <= 1_000, "the fence was closed for about {} ms", closed * 20);
    assert_eq!(leading(&leader), Some(term), "the same leader, the same term");
    assert_eq!(following(&follower).map(|l| l.term), Some(term));
    watch.shutdown().await;
    leader.shutdown().await;
    follower.shutdown().await;
}

/// Proves leadership over TLS to etcd (a member that serves only TLS and asks for client
/// certificates): with the cluster's CA and a client certificate, a router leads and a
/// worker's watch sees it; with no client certificate, or another CA, nothing leads and the
/// reason says the connection failed (fail closed, no crash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_over_tls_needs_the_right_ca_and_a_client_certificate() {
    let _turn = turn().await;
    let Some(mut cluster) = EtcdCluster::new_tls(1) else { return };
    blocking(|| cluster.start_all());
    let tls = cluster.tls().expect("a TLS cluster");
    let with = |cert: bool, ca: &std::path::Path| {
        let mut c = EtcdConfig::new(cluster.endpoints());
        (c.prefix, c.request_timeout_ms, c.connect_timeout_ms) = ("/uw-test".into(), 500, 500);
        c.tls = Some(EtcdTls {
            ca: ca.to_owned(),
            cert: cert.then(|| tls.client_cert.clone()),
            key: cert.then(|| tls.client_key.clone()),
            server_name: None,
        });
        c.validate().expect("valid");
        c
    };
    assert!(cluster.endpoints().iter().all(|e| e.starts_with("https://")));
    let leader = Election::start(with(true, &tls.ca), House::Timmy, "timmy-node", "127.0.0.1:7401");
    let term = eventually(Duration::from_secs(10), "a router leads over TLS", || leading(&leader)).await;
    let watch = LeaderWatch::start(with(true, &tls.ca));
    eventually(Duration::from_secs(5), "the watch sees it over TLS", || watch.current().filter(|l| l.term == term))
        .await;

    let other = uni_wizard_tests::pki::Pki::new();
    let foreign = other.write_ca(&uni_wizard_tests::pki::Pki::ca("not etcd's CA"), "foreign");
    for (what, cfg) in [("no client certificate", with(false, &tls.ca)), ("another CA", with(true, &foreign))] {
        let refused = Election::start(cfg.clone(), House::Allegro, "allegro-node", "127.0.0.1:7402");
        let watch = LeaderWatch::start(cfg);
        tokio::time::sleep(Duration::from_secs(3)).await;
        match refused.state() {
            Leadership::Unavailable { reason } => assert!(reason.contains("etcd"), "{what}: {reason}"),
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(watch.current(), None, "{what}: the watch must not see a leader");
        refused.shutdown().await;
        watch.shutdown().await;
    }
    assert_eq!(leading(&leader), Some(term), "the router with the right files still leads");
    watch.shutdown().await;
    leader.shutdown().await;
}

/// Proves an etcd that is down at start is reported (unavailable, with the etcd error as the
/// reason, nothing dispatches, no panic), and the router leads by itself once etcd starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_at_start_is_reported_then_led() {
    let _turn = turn().await;
    let Some(mut cluster) = EtcdCluster::new(1) else { return };
    let cfg = config(cluster.endpoints(), 1_000);
    let e = Election::start(cfg.clone(), House::Timmy, "timmy-node", "127.0.0.1:7401");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    match e.state() {
        Leadership::Unavailable { reason } => assert!(reason.contains("etcd"), "{reason}"),
        other => panic!("not unavailable: {other:?}"),
    }
    assert!(!e.may_dispatch(0) && !e.may_dispatch(1));
    blocking(|| cluster.start_all());
    let term = eventually(Duration::from_secs(10), "it leads once etcd is up", || leading(&e)).await;
    assert!(e.may_dispatch(term));
    e.shutdown().await;
}

/// Proves a worker's leader watch sees the leader and its term, sees a new leader with a
/// greater term after a handover, and goes `None` within the lease TTL once the quorum is
/// lost (fail closed), then sees the leader again when the quorum is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_watch_follows_and_fails_closed() {
    let _turn = turn().await;
    let Some(mut cluster) = blocking(|| EtcdCluster::start(3)) else { return };
    let cfg = config(cluster.endpoints(), 2_000);
    let watch = LeaderWatch::start(cfg.clone());
    let timmy = Election::start(cfg.clone(), House::Timmy, "timmy-node", "127.0.0.1:7401");
    let t1 = eventually(Duration::from_secs(10), "timmy leads", || leading(&timmy)).await;
    let seen =
        eventually(Duration::from_secs(5), "the watch sees timmy", || watch.current().filter(|l| l.term == t1)).await;
    assert_eq!(
        seen,
        LeaderInfo { house: House::Timmy, node: "timmy-node".into(), endpoint: "127.0.0.1:7401".into(), term: t1 }
    );
    let allegro = Election::start(cfg.clone(), House::Allegro, "allegro-node", "127.0.0.1:7402");
    eventually(Duration::from_secs(5), "allegro follows", || following(&allegro)).await;
    let mut changes = watch.subscribe();
    timmy.shutdown().await;
    let t2 = eventually(Duration::from_secs(5), "allegro leads", || leading(&allegro)).await;
    let next = eventually(Duration::from_secs(2), "the watch sees allegro", || {
        watch.current().filter(|l| l.house == House::Allegro)
    })
    .await;
    assert_eq!(next.term, t2);
    assert!(t2 > t1);
    assert!(changes.has_changed().unwrap_or(false), "subscribers are told");
    assert_eq!(changes.borrow_and_update().as_ref().map(|l| l.term), Some(t2));

    blocking(|| {
        cluster.kill(1);
        cluster.kill(2);
    });
    // Its last read was at most one refresh before the loss; TTL after it, it knows nothing.
    let within = cfg.lease_ttl() + cfg.keepalive() + Duration::from_millis(500);
    eventually(within, "the watch forgets the leader", || watch.current().is_none().then_some(())).await;
    eventually(Duration::from_millis(500), "subscribers see None too", || changes.borrow().is_none().then_some(()))
        .await;
    blocking(|| {
        cluster.restart(1);
        cluster.restart(2);
    });
    eventually(Duration::from_secs(15), "the watch sees a leader again", || watch.current()).await;
    allegro.shutdown().await;
    watch.shutdown().await;
}
