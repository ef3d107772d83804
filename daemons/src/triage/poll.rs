//! Polling: catches what webhooks missed (a lost delivery, a daemon that was down, a Gitea
//! whose webhook host list blocks delivery).
//!
//! Each round, for every watched repository: `GET /repos/{o}/{r}/issues?state=open&type=issues
//! &since=<cursor>` over every page (`limit` 50, Gitea's cap; next pages from `Link`, else
//! `X-Total-Count`), then every issue whose plan's fingerprint differs from the one recorded is
//! queued, and the cursor moves to the newest `updated_at` seen, in one transaction. `since` is
//! inclusive at whole seconds, so an issue updated in the same second as the cursor is seen
//! again rather than missed; the fingerprint makes seeing it again free. A walk cut short by
//! the page bound keeps the old cursor. The first round runs at start: a cold start catches up
//! from the persisted cursor, and triages nothing twice.
//!
//! The same round submits again any router task recorded but never answered.

use std::time::Duration;

use tokio::sync::watch;
use uni_wizard::Error;
use uni_wizard::gitea::{IssueKind, IssueQuery, MAX_PAGE_SIZE, StateFilter};

use super::store::now_ms;
use super::{Triage, blocking};
use crate::config::triage::split_repo;

/// The polling loop; returns when `stop` turns true.
pub async fn run(t: Triage, mut stop: watch::Receiver<bool>) {
    loop {
        for repo in t.settings().repos {
            match poll_repo(&t, &repo).await {
                Ok(n) if n > 0 => tracing::info!(%repo, queued = n, "poll found issues to triage"),
                Ok(_) => {}
                Err(e) => {
                    t.counters().errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    metrics::counter!("uw_triage_errors_total", "stage" => "poll").increment(1);
                    tracing::warn!(%repo, code = e.code.as_str(), error = %e.message, "poll failed");
                }
            }
        }
        super::engine::resubmit_pending(&t).await;
        let every = Duration::from_millis(t.settings().poll_interval_ms);
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Polls one repository; returns how many issues it queued.
///
/// # Errors
/// Gitea's errors, E4002 from the store.
pub async fn poll_repo(t: &Triage, repo: &str) -> Result<usize, Error> {
    let Some((owner, name)) = split_repo(repo) else { return Ok(0) };
    let store = t.store().clone();
    let r = repo.to_owned();
    let since = blocking(move || store.cursor(&r)).await?;
    let q = IssueQuery {
        state: StateFilter::Open,
        labels: vec![],
        since: since.clone(),
        kind: Some(IssueKind::Issues),
        page_size: MAX_PAGE_SIZE,
        max_items: usize::MAX,
    };
    let page = t.inner.gitea.list_issues(owner, name, &q).await?;
    metrics::counter!("uw_triage_polls_total").increment(1);
    let store = t.store().clone();
    let r = repo.to_owned();
    let known = blocking(move || store.fingerprints(&r)).await?;
    let rules = t.rules();
    let mut newest: Option<i64> = since.as_deref().and_then(parse_rfc3339);
    let mut todo = Vec::new();
    for issue in page.items.iter().filter(|i| !i.is_pull()) {
        if known.get(&issue.number) != Some(&rules.plan(issue).fingerprint()) {
            todo.push(issue.number);
        }
        if let Some(u) = parse_rfc3339(&issue.updated_at) {
            newest = Some(newest.map_or(u, |n| n.max(u)));
        }
    }
    let cursor = if page.truncated { since } else { newest.map(format_rfc3339) };
    let (store, r, n) = (t.store().clone(), repo.to_owned(), todo.len());
    blocking(move || store.enqueue_polled(&r, &todo, cursor.as_deref(), now_ms())).await?;
    if n > 0 {
        t.wake();
    }
    Ok(n)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` to Unix seconds (the fraction dropped: Gitea
/// compares whole seconds). `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && rest.as_bytes()[3] == b':' => {
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if rest.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let s = unix.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves RFC 3339 times with offsets and fractions parse to the same instant, and junk does not.
    #[test]
    fn rfc3339_round_trips_and_offsets_apply() {
        let t = parse_rfc3339("2026-01-01T00:00:05Z").expect("parses");
        assert_eq!(format_rfc3339(t), "2026-01-01T00:00:05Z");
        assert_eq!(parse_rfc3339("2026-01-01T08:00:05.123+08:00"), Some(t));
        assert_eq!(parse_rfc3339("2025-12-31T19:00:05-05:00"), Some(t));
        for bad in ["", "2026-01-01", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T00:00:00+0800"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
