//! Policies derived from predictions: timeouts, retry budgets, and refuse/warn decisions.
//!
//! Each is a pure function of a [`Prediction`] and settings, kept apart from the harness that
//! applies it (decide apart from do).

use std::time::Duration;

use serde::Serialize;

use super::IntelligenceConfig;
use super::predictions::Prediction;

/// What a prediction means for a call under policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Run it.
    Proceed,
    /// Run it, and tell the caller success looks unlikely.
    Warn,
    /// Do not run it (E3010): with enough history, even the optimistic end of the interval is
    /// below the refuse threshold.
    Refuse,
}

/// The policy verdict: refuse when `samples >= min_samples` and the interval's upper end is
/// below `refuse_below`; warn when the mean is below `warn_below`.
pub fn verdict(p: &Prediction, cfg: &IntelligenceConfig) -> Verdict {
    if p.samples >= cfg.min_samples && p.upper < cfg.refuse_below {
        Verdict::Refuse
    } else if p.samples >= cfg.min_samples && p.p_success < cfg.warn_below {
        Verdict::Warn
    } else {
        Verdict::Proceed
    }
}

/// The adapted per-attempt timeout: `p95 × timeout_factor`, clamped to
/// `[contract / 4, min(contract × 4, max_timeout)]`; the contract's own when history is short.
pub fn timeout(p: &Prediction, contract: Duration, max_timeout: Duration, cfg: &IntelligenceConfig) -> Duration {
    match p.latency_p95_us {
        Some(p95) if p.samples >= cfg.min_samples => {
            let want = Duration::from_secs_f64(p95 * cfg.timeout_factor / 1e6);
            let lo = (contract / 4).min(max_timeout);
            let hi = (contract * 4).min(max_timeout).max(lo);
            want.clamp(lo, hi)
        }
        _ => contract.min(max_timeout),
    }
}

/// The adapted retry budget: none when history shows failures are essentially never
/// transient (retrying would only repeat a permanent failure), the configured budget otherwise.
pub fn retries(p: &Prediction, configured: usize, cfg: &IntelligenceConfig) -> usize {
    retry_cap(p, cfg).map_or(configured, |cap| cap.min(configured))
}

/// The cap [`retries`] puts on the configured budget: `Some(0)` when failures are essentially
/// never transient, `None` (the configured budget stands) otherwise.
pub fn retry_cap(p: &Prediction, cfg: &IntelligenceConfig) -> Option<usize> {
    (p.samples >= cfg.min_samples && p.transient_rate < 0.01 && p.failure_transient_share < 0.05).then_some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(samples: u64, mean: f64, upper: f64, p95: Option<f64>) -> Prediction {
        Prediction {
            p_success: mean,
            lower: 0.0,
            upper,
            samples,
            effective_samples: samples as f64,
            transient_rate: 0.0,
            failure_transient_share: 0.0,
            latency_p50_us: p95,
            latency_p95_us: p95,
        }
    }

    /// Proves the verdict refuses only with enough samples and warns below the warn line.
    #[test]
    fn verdicts() {
        let cfg = IntelligenceConfig::default();
        assert_eq!(verdict(&pred(0, 0.0, 0.0, None), &cfg), Verdict::Proceed);
        assert_eq!(verdict(&pred(cfg.min_samples, 0.01, 0.02, None), &cfg), Verdict::Refuse);
        assert_eq!(verdict(&pred(cfg.min_samples, 0.3, 0.5, None), &cfg), Verdict::Warn);
        assert_eq!(verdict(&pred(cfg.min_samples, 0.9, 0.95, None), &cfg), Verdict::Proceed);
    }

    /// Proves the adapted timeout stays within the contract's bounds.
    #[test]
    fn timeout_is_clamped() {
        let cfg = IntelligenceConfig::default();
        let c = Duration::from_secs(8);
        let max = Duration::from_secs(600);
        assert_eq!(timeout(&pred(0, 1.0, 1.0, Some(1.0)), c, max, &cfg), c);
        assert_eq!(timeout(&pred(100, 1.0, 1.0, Some(1.0)), c, max, &cfg), Duration::from_secs(2));
        assert_eq!(timeout(&pred(100, 1.0, 1.0, Some(1e9)), c, max, &cfg), Duration::from_secs(32));
    }

    /// Proves retries are cut to zero only with enough history of non-transient failures.
    #[test]
    fn retries_follow_the_failure_mix() {
        let cfg = IntelligenceConfig::default();
        assert_eq!(retries(&pred(0, 0.1, 0.2, None), 2, &cfg), 2, "little history: configured");
        assert_eq!(retries(&pred(cfg.min_samples, 0.1, 0.2, None), 2, &cfg), 0, "permanent failures");
        let mut flaky = pred(cfg.min_samples, 0.7, 0.8, None);
        flaky.transient_rate = 0.3;
        flaky.failure_transient_share = 1.0;
        assert_eq!(retries(&flaky, 2, &cfg), 2, "transient failures keep the budget");
    }
}
