//! The breaker *mechanism*: a three-state machine on tokio's clock.
//!
//! When to trip and how long to stay open is decided by a `failsafe` failure policy
//! ([`failsafe::failure_policy::ConsecutiveFailures`]); this machine applies it. failsafe's own
//! state machine is not used because its half-open state admits every caller and its clock is
//! not tokio's (so it cannot run under paused time); here half-open admits exactly one probe.

use std::sync::Mutex;
use std::time::Duration;

use failsafe::FailurePolicy;
use failsafe::failure_policy::{ConsecutiveFailures, consecutive_failures};
use tokio::time::Instant;

/// Open-state durations: doubling from `base` up to `max`. An iterator, as failsafe wants.
#[derive(Debug, Clone)]
pub struct Cooldowns {
    next: Duration,
    max: Duration,
}

impl Cooldowns {
    /// A schedule starting at `base`, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Cooldowns {
        Cooldowns { next: base, max: max.max(base) }
    }
}

impl Iterator for Cooldowns {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        Some(d)
    }
}

/// The visible state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// One probe is in flight; everyone else is refused.
    HalfOpen,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// What [`Breaker::acquire`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// An ordinary call while closed.
    Normal,
    /// The one probe of a half-open breaker.
    Probe,
}

/// One breaker (for one tool and target).
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    policy: ConsecutiveFailures<Cooldowns>,
    phase: Phase,
    last_cooldown: Duration,
}

impl Breaker {
    /// Trips after `threshold` consecutive failures; stays open for `cooldowns`.
    pub fn new(threshold: u32, cooldowns: Cooldowns) -> Breaker {
        let first = cooldowns.clone().next().unwrap_or(Duration::from_secs(1));
        Breaker {
            inner: Mutex::new(Inner {
                policy: consecutive_failures(threshold.max(1), cooldowns),
                phase: Phase::Closed,
                last_cooldown: first,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state as of `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.lock().phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// Asks to call. `Err(wait)` means refused; `wait` is how long until a probe may go.
    pub fn acquire(&self, now: Instant) -> Result<Permit, Duration> {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => Ok(Permit::Normal),
            Phase::Open { until } if now < until => Err(until - now),
            Phase::Open { .. } => {
                inner.phase = Phase::HalfOpen;
                Ok(Permit::Probe)
            }
            Phase::HalfOpen => Err(Duration::ZERO),
        }
    }

    /// Records a success.
    pub fn on_success(&self, permit: Permit) {
        let mut inner = self.lock();
        match (permit, &inner.phase) {
            (Permit::Probe, Phase::HalfOpen) => {
                inner.policy.revived();
                inner.phase = Phase::Closed;
            }
            (Permit::Normal, Phase::Closed) => inner.policy.record_success(),
            _ => {}
        }
    }

    /// Records a failure at `now`.
    pub fn on_failure(&self, permit: Permit, now: Instant) {
        let mut inner = self.lock();
        match (permit, &inner.phase) {
            (Permit::Probe, Phase::HalfOpen) => {
                let d = inner.policy.mark_dead_on_failure().unwrap_or(inner.last_cooldown);
                inner.last_cooldown = d;
                inner.phase = Phase::Open { until: now + d };
            }
            (Permit::Normal, Phase::Closed) => {
                if let Some(d) = inner.policy.mark_dead_on_failure() {
                    inner.last_cooldown = d;
                    inner.phase = Phase::Open { until: now + d };
                }
            }
            _ => {}
        }
    }

    /// Releases a probe that ended without a verdict (cancelled, or failed for a reason that
    /// says nothing about the target): the next caller may probe at once.
    pub fn abandon(&self, permit: Permit, now: Instant) {
        let mut inner = self.lock();
        if permit == Permit::Probe && matches!(inner.phase, Phase::HalfOpen) {
            inner.phase = Phase::Open { until: now };
        }
    }

    /// Whether the breaker holds no history worth keeping (closed, no recent failures).
    pub fn is_idle(&self) -> bool {
        matches!(self.lock().phase, Phase::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves cool-downs double from the base and stop at the max.
    #[test]
    fn cooldowns_double_and_cap() {
        let c: Vec<u64> =
            Cooldowns::new(Duration::from_secs(1), Duration::from_secs(5)).take(5).map(|d| d.as_secs()).collect();
        assert_eq!(c, vec![1, 2, 4, 5, 5]);
    }

    /// Proves a probe that is abandoned lets the next caller probe instead of wedging half-open.
    #[test]
    fn abandoned_probe_frees_the_half_open_slot() {
        let b = Breaker::new(1, Cooldowns::new(Duration::from_secs(1), Duration::from_secs(1)));
        let t0 = Instant::now();
        b.on_failure(Permit::Normal, t0);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(b.acquire(later), Ok(Permit::Probe));
        assert_eq!(b.acquire(later), Err(Duration::ZERO));
        b.abandon(Permit::Probe, later);
        assert_eq!(b.acquire(later), Ok(Permit::Probe));
    }
}
