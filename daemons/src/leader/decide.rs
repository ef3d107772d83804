//! The decisions of leadership, plain functions of what etcd last said and the clock: who
//! leads ([`decide`], [`watched`]), until when, when the answer can next change by time alone
//! ([`next_change`]), the leader record's encoding, and the back-off. No etcd calls here.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use uni_wizard::House;

use super::{LeaderInfo, Leadership};

/// The reason a leader whose renewals stopped gives when it steps down.
pub(crate) const NOT_RENEWED: &str =
    "lease not renewed in time: stopped dispatching before the lease can have expired at etcd";

/// The longest leader record read (a record is about 100 bytes; anything larger is not ours).
const MAX_RECORD: usize = 4_096;

/// The lease as the keeper last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Its id at etcd.
    pub id: i64,
    /// When the last keep-alive etcd answered (or the grant) was sent.
    pub renewed_at: Instant,
    /// The TTL etcd granted.
    pub ttl: Duration,
}

/// One candidate key under the election prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The key, `<election>/<lease id in hex>`.
    pub key: Vec<u8>,
    /// Its create revision: the term, should it lead.
    pub rev: i64,
    /// The lease it is attached to.
    pub lease: i64,
    /// The leader record (JSON).
    pub value: Vec<u8>,
}

impl Candidate {
    /// Whether it is a candidacy as routers make them: attached to a lease (so it goes when its
    /// router does) and named `<election>/<that lease's id in hex>`; [`Seen::first`] also wants
    /// a leader record in it.
    pub fn valid(&self) -> bool {
        let name = self.key.rsplit(|b| *b == b'/').next().unwrap_or_default();
        self.lease > 0 && name == format!("{:x}", self.lease).as_bytes()
    }
}

/// What the last linearizable read of the election showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The candidates, lowest create revision first (at most the read's limit).
    pub candidates: Vec<Candidate>,
    /// Whether `candidates` is every candidate (the read was not cut by its limit).
    pub complete: bool,
    /// When the read was sent: the view is at least this current.
    pub read_at: Instant,
}

impl Seen {
    /// The leader: the valid candidate (see [`Candidate::valid`]) with the lowest create
    /// revision, with its record. Every router and worker applies the same rule to the same
    /// read, so a key written by hand (no lease, a name that is not its lease's, a value that is
    /// no leader record) is passed over alike by all of them instead of stalling the fleet.
    pub fn first(&self) -> Option<(&Candidate, LeaderInfo)> {
        self.candidates.iter().find_map(|c| c.valid().then(|| record(c)).flatten().map(|l| (c, l)))
    }

    /// Whether `key` is known to be absent (only a complete read can say so).
    pub fn lacks(&self, key: &[u8]) -> bool {
        self.complete && !self.candidates.iter().any(|c| c.key == key)
    }
}

/// This node's candidacy: its key under its current lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mine {
    /// The key.
    pub key: Vec<u8>,
    /// Its create revision.
    pub rev: i64,
    /// The lease it is attached to.
    pub lease: i64,
}

/// The lease timing that decisions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// The configured lease TTL: how long a read stays current.
    pub ttl: Duration,
    /// The fence margin.
    pub margin: Duration,
}

/// The leadership at `now`, from the lease, this node's candidacy and the last read (`error`:
/// the last etcd failure, for the reason when nothing current is known).
///
/// This node leads when the last read, younger than the TTL, shows its key first, and its
/// lease was renewed recently enough: until `min(renewed_at + granted TTL, read_at + TTL) -
/// margin`. Anyone else first is followed; no current read is unavailable.
pub(crate) fn decide(
    now: Instant,
    lease: Option<&Lease>,
    mine: Option<&Mine>,
    seen: Option<&Seen>,
    timing: Timing,
    error: &str,
) -> Leadership {
    let Some(seen) = seen.filter(|s| now < s.read_at + timing.ttl) else {
        return Leadership::Unavailable { reason: stale(error) };
    };
    let Some((first, leader)) = seen.first() else {
        return Leadership::Unavailable { reason: "no leader elected yet".into() };
    };
    let ours =
        mine.is_some_and(|m| m.key == first.key && m.rev == first.rev) || lease.is_some_and(|l| l.id == first.lease);
    if !ours {
        return Leadership::Follower { leader };
    }
    match (lease, mine) {
        (Some(l), Some(m)) if l.id == m.lease && m.key == first.key && m.rev == first.rev => {
            let valid_until = fence_at(l, seen, timing);
            match (valid_until, u64::try_from(m.rev)) {
                (Some(until), Ok(term)) if now < until && term > 0 => Leadership::Leader { term, valid_until: until },
                _ => Leadership::Unavailable { reason: NOT_RENEWED.into() },
            }
        }
        // Our lease's key is first but the candidacy is not registered yet (a moment after
        // a restart of the candidacy): nobody else leads, and we do not yet.
        _ => Leadership::Unavailable { reason: NOT_RENEWED.into() },
    }
}

/// When the fence closes: the lease's earliest possible expiry, or the read's age limit,
/// less the margin (`None`: already closed at any time this clock can name).
fn fence_at(lease: &Lease, seen: &Seen, timing: Timing) -> Option<Instant> {
    let expiry = (lease.renewed_at + lease.ttl).min(seen.read_at + timing.ttl);
    expiry.checked_sub(timing.margin)
}

/// A worker's view at `now`: the leader of a read younger than the TTL, if its record is valid.
pub(crate) fn watched(now: Instant, seen: Option<&Seen>, ttl: Duration) -> Option<LeaderInfo> {
    seen.filter(|s| now < s.read_at + ttl).and_then(Seen::first).map(|(_, leader)| leader)
}

/// The next instant at which [`decide`] or [`watched`] can change with no new input.
pub(crate) fn next_change(now: Instant, lease: Option<&Lease>, seen: Option<&Seen>, timing: Timing) -> Option<Instant> {
    let mut at: Vec<Instant> = Vec::with_capacity(3);
    if let Some(s) = seen {
        at.push(s.read_at + timing.ttl);
        if let Some(l) = lease {
            at.extend(fence_at(l, s, timing));
        }
    }
    at.into_iter().filter(|t| *t > now).min()
}

/// The reason when no current read is known.
fn stale(error: &str) -> String {
    if error.is_empty() { "etcd not reached yet".into() } else { format!("etcd not answering: {error}") }
}

/// What a leader key holds.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    house: House,
    node: String,
    endpoint: String,
}

/// The record this node writes as its candidate key's value.
pub(crate) fn record_value(house: House, node: &str, endpoint: &str) -> Vec<u8> {
    let record = Record { house, node: node.to_owned(), endpoint: endpoint.to_owned() };
    // Three strings and a unit enum: serialising cannot fail.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// The leader a candidate key names, if its record is valid (unknown fields are allowed, so a
/// newer build's record still reads).
pub(crate) fn record(c: &Candidate) -> Option<LeaderInfo> {
    if c.value.len() > MAX_RECORD {
        return None;
    }
    let r: Record = serde_json::from_slice(&c.value).ok()?;
    let term = u64::try_from(c.rev).ok().filter(|t| *t > 0)?;
    Some(LeaderInfo { house: r.house, node: r.node, endpoint: r.endpoint, term })
}

/// The candidate key of a lease: `<election>/<lease id in hex>`, as etcd's own election names it.
pub(crate) fn candidate_key(election: &str, lease: i64) -> Vec<u8> {
    format!("{election}/{lease:x}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing { ttl: Duration::from_secs(2), margin: Duration::from_millis(500) };

    fn candidate(lease: i64, rev: i64, house: House) -> Candidate {
        Candidate {
            key: candidate_key("/uw/router/leader", lease),
            rev,
            lease,
            value: record_value(house, &format!("{house}-node"), "127.0.0.1:7401"),
        }
    }

    fn seen(at: Instant, candidates: Vec<Candidate>) -> Seen {
        Seen { candidates, complete: true, read_at: at }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Proves keys no router makes are passed over by everyone: one without a lease, one whose
    /// name is not its lease's, one holding no leader record; the first real candidacy leads,
    /// a worker sees it, and its own router leads.
    #[tokio::test(start_paused = true)]
    async fn keys_written_by_hand_are_passed_over() {
        let t0 = Instant::now();
        let no_lease = Candidate { lease: 0, ..candidate(0, 10, House::Ezra) };
        let misnamed = Candidate { key: b"/uw/router/leader/junk".to_vec(), ..candidate(5, 11, House::Ezra) };
        let garbage = Candidate { value: b"not json {{{".to_vec(), ..candidate(6, 12, House::Ezra) };
        let real = candidate(7, 42, House::Allegro);
        let s = seen(t0, vec![no_lease, misnamed, garbage, real]);
        assert_eq!(s.first().map(|(c, _)| c.rev), Some(42));
        assert_eq!(watched(t0, Some(&s), TIMING.ttl).map(|l| (l.house, l.term)), Some((House::Allegro, 42)));
        let lease = Lease { id: 7, renewed_at: t0, ttl: Duration::from_secs(2) };
        let mine = Mine { key: candidate_key("/uw/router/leader", 7), rev: 42, lease: 7 };
        assert!(decide(t0, Some(&lease), Some(&mine), Some(&s), TIMING, "").is_leader());
    }

    /// Proves a node whose key is first leads until its last renewal's send time + TTL - margin,
    /// and is unavailable ("lease not renewed") from that instant on, before the lease can expire.
    #[tokio::test(start_paused = true)]
    async fn the_leader_fences_itself_before_its_lease_can_expire() {
        let t0 = Instant::now();
        let lease = Lease { id: 7, renewed_at: t0, ttl: Duration::from_secs(2) };
        let mine = Mine { key: candidate_key("/uw/router/leader", 7), rev: 42, lease: 7 };
        let s = seen(t0 + ms(100), vec![candidate(7, 42, House::Timmy), candidate(9, 50, House::Allegro)]);
        let at = |t: Instant| decide(t, Some(&lease), Some(&mine), Some(&s), TIMING, "");
        assert_eq!(at(t0 + ms(200)), Leadership::Leader { term: 42, valid_until: t0 + ms(1_500) });
        assert!(at(t0 + ms(1_499)).is_leader());
        assert_eq!(at(t0 + ms(1_500)), Leadership::Unavailable { reason: NOT_RENEWED.into() });
        assert_eq!(next_change(t0 + ms(200), Some(&lease), Some(&s), TIMING), Some(t0 + ms(1_500)));
        let renewed = Lease { renewed_at: t0 + ms(1_000), ..lease };
        let later = seen(t0 + ms(1_000), s.candidates.clone());
        assert_eq!(
            decide(t0 + ms(1_600), Some(&renewed), Some(&mine), Some(&later), TIMING, ""),
            Leadership::Leader { term: 42, valid_until: t0 + ms(2_500) },
            "a renewal moves the fence on"
        );
    }

    /// Proves the fence also closes when the read showing this node first grows old, even
    /// with a fresh lease, and that `Leadership::at` turns a stale leader state unavailable.
    #[tokio::test(start_paused = true)]
    async fn an_old_read_closes_the_fence_too() {
        let t0 = Instant::now();
        let lease = Lease { id: 7, renewed_at: t0 + ms(900), ttl: Duration::from_secs(2) };
        let mine = Mine { key: candidate_key("/uw/router/leader", 7), rev: 42, lease: 7 };
        let s = seen(t0, vec![candidate(7, 42, House::Timmy)]);
        let state = decide(t0 + ms(10), Some(&lease), Some(&mine), Some(&s), TIMING, "");
        assert_eq!(state, Leadership::Leader { term: 42, valid_until: t0 + ms(1_500) });
        assert!(state.at(t0 + ms(1_499)).is_leader());
        assert_eq!(state.at(t0 + ms(1_500)), Leadership::Unavailable { reason: NOT_RENEWED.into() });
    }

    /// Proves another node's key first makes a follower of that leader with its term; a read
    /// older than the TTL makes the node unavailable with the last error; an empty election
    /// says no leader; a garbage record is refused rather than followed.
    #[tokio::test(start_paused = true)]
    async fn followers_follow_the_first_key_while_the_read_is_current() {
        let t0 = Instant::now();
        let lease = Lease { id: 9, renewed_at: t0, ttl: Duration::from_secs(2) };
        let mine = Mine { key: candidate_key("/uw/router/leader", 9), rev: 50, lease: 9 };
        let s = seen(t0, vec![candidate(7, 42, House::Timmy), candidate(9, 50, House::Allegro)]);
        let at =
            |t: Instant, s: &Seen| decide(t, Some(&lease), Some(&mine), Some(s), TIMING, "no leader (Unavailable)");
        let Leadership::Follower { leader } = at(t0 + ms(10), &s) else { panic!("a follower") };
        assert_eq!(
            leader,
            LeaderInfo { house: House::Timmy, node: "timmy-node".into(), endpoint: "127.0.0.1:7401".into(), term: 42 }
        );
        let Leadership::Unavailable { reason } = at(t0 + ms(2_000), &s) else { panic!("stale") };
        assert!(reason.contains("no leader (Unavailable)"), "{reason}");
        assert_eq!(at(t0, &seen(t0, vec![])), Leadership::Unavailable { reason: "no leader elected yet".into() });
        let mut garbage = candidate(7, 42, House::Timmy);
        garbage.value = b"{\"house\": \"nobody\"}".to_vec();
        assert!(matches!(at(t0, &seen(t0, vec![garbage])), Leadership::Unavailable { .. }));
        let none = decide(t0, None, None, None, TIMING, "");
        assert_eq!(none, Leadership::Unavailable { reason: "etcd not reached yet".into() });
    }

    /// Proves a worker's view is the first key's leader while the read is younger than the
    /// TTL and `None` from then on (fail closed), and that records bind the term to the revision.
    #[tokio::test(start_paused = true)]
    async fn a_worker_forgets_the_leader_when_its_read_grows_old() {
        let t0 = Instant::now();
        let s = seen(t0, vec![candidate(7, 42, House::Allegro)]);
        assert_eq!(
            watched(t0 + ms(1_999), Some(&s), TIMING.ttl).map(|l| (l.house, l.term)),
            Some((House::Allegro, 42))
        );
        assert_eq!(watched(t0 + ms(2_000), Some(&s), TIMING.ttl), None);
        assert_eq!(next_change(t0, None, Some(&s), TIMING), Some(t0 + ms(2_000)));
        let mut zero = candidate(7, 0, House::Allegro);
        assert_eq!(record(&zero), None, "no term 0: that is the single-router token");
        zero.rev = 1;
        zero.value = vec![b' '; MAX_RECORD + 1];
        assert_eq!(record(&zero), None);
        assert!(!s.lacks(&candidate_key("/uw/router/leader", 7)) && s.lacks(b"/uw/router/leader/8"));
    }
}
