//! [`Backoff`]: doubling retry delays, shared by the reconnect loops (telemetry's stream to
//! Timmy, the leadership tasks' etcd calls). It decides only; the caller sleeps. A leaf module:
//! it imports nothing of this crate.

use std::time::Duration;

/// Delays from `min`, doubling per failed attempt up to `max`; back to `min` after a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `min` to `max` (a `max` below `min` is `min`).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), next: min }
    }

    /// The delay before the next attempt (and doubles the one after, up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// A success: start again from `min`.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the delay doubles from its minimum to its bound, starts over after a reset, and
    /// a bound below the minimum is the minimum.
    #[test]
    fn backoff_doubles_to_its_bound_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(50), ms(300));
        let seen: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(seen, vec![ms(50), ms(100), ms(200), ms(300), ms(300)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(50));
        let mut flat = Backoff::new(ms(50), ms(10));
        assert_eq!((flat.next_delay(), flat.next_delay()), (ms(50), ms(50)));
    }
}
