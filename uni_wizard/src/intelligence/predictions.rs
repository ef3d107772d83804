//! The in-memory model: decayed success/failure counts and latency histograms per key, and
//! the predictions drawn from them.
//!
//! # Recency weighting
//!
//! Decay is a function of the *sequence* of outcomes on a key, never of wall-clock time: the
//! `k`-th most recent outcome of a key weighs `0.5^(k / half_life)`. Replaying the same rows
//! in the same order therefore rebuilds exactly the same numbers after a restart. Weights are
//! kept as growing powers (`g^n`, `g = 2^(1/half_life)`) so an update is O(1); they are
//! renormalised when they grow large, also deterministically.
//!
//! # Credible interval
//!
//! P(success) ~ Beta(alpha + s, beta + f) with `s`, `f` the decayed counts. The 90% interval
//! is the normal approximation `mean ± 1.645·sd` of that Beta, clamped to [0, 1]. It is wide
//! with little history (the prior dominates) and narrows as decayed evidence accumulates.

use serde::Serialize;

use crate::hash::FastMap;
use crate::house::House;

/// Number of log-spaced latency buckets: bucket `i` holds latencies near `2^(i/4)` µs, so 128
/// buckets span 1 µs to about 4.3·10^9 µs (72 minutes) with ±9% resolution.
const BUCKETS: usize = 128;
/// Renormalise weights once they exceed this.
const RENORM: f64 = 1e100;
/// z for a two-sided 90% interval.
const Z90: f64 = 1.644_853_626_951_472_2;

/// Settings the model needs (a subset of [`super::IntelligenceConfig`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelParams {
    /// Beta prior successes.
    pub prior_alpha: f64,
    /// Beta prior failures.
    pub prior_beta: f64,
    /// Half-life in outcomes of the same key.
    pub half_life: f64,
    /// Raw samples a fingerprint needs before it is preferred over the (tool, house) aggregate.
    pub min_fingerprint_samples: u64,
}

/// What one execution taught: the input of [`Model::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeClass {
    /// The call succeeded.
    Ok,
    /// It failed with a transient error (worth retrying).
    Transient,
    /// It failed for good.
    Permanent,
}

impl OutcomeClass {
    /// The name stored in the pattern DB.
    pub const fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Ok => "ok",
            OutcomeClass::Transient => "transient",
            OutcomeClass::Permanent => "permanent",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<OutcomeClass> {
        match s {
            "ok" => Some(OutcomeClass::Ok),
            "transient" => Some(OutcomeClass::Transient),
            "permanent" => Some(OutcomeClass::Permanent),
            _ => None,
        }
    }
}

/// Decayed statistics of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Weight the next outcome gets (grows by `growth` each outcome).
    scale: f64,
    /// The growth the last outcome was added with (see [`ModelParams::growth`]), kept so a
    /// prediction needs no `powf`.
    growth: f64,
    ok: f64,
    failed: f64,
    transient: f64,
    latency: [f64; BUCKETS],
    /// The sum of `latency`, kept as outcomes are added so a prediction does not add up the
    /// buckets.
    latency_total: f64,
    /// Outcomes seen (not decayed).
    pub samples: u64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            scale: 1.0,
            growth: 1.0,
            ok: 0.0,
            failed: 0.0,
            transient: 0.0,
            latency: [0.0; BUCKETS],
            latency_total: 0.0,
            samples: 0,
        }
    }
}

/// The latency bucket of `latency_us`: `floor(4 * log2(latency_us))`, at least 0 and at most
/// `BUCKETS - 1`, in integers: `floor(log2(x^4))` is the position of the highest set bit of
/// `x^4`, exact where the float logarithm would round. Latencies from `u32::MAX` µs up are in
/// the last bucket anyway (4 * 32 = 128), which keeps `x^4` within a `u128`.
fn bucket(latency_us: u64) -> usize {
    let x = u128::from(latency_us.clamp(1, u64::from(u32::MAX)));
    let b = 127 - (x * x * x * x).leading_zeros() as usize;
    b.min(BUCKETS - 1)
}

/// `2^((i + 0.5) / 4)` for every bucket `i`: the value a latency quantile reports. A power of
/// two times one of four constants, so the table is built at compile time; scaling by a power
/// of two is exact, so each entry is what `2f64.powf((i + 0.5) / 4.0)` gives (test
/// `bucket_values_are_the_powers_they_stand_for`).
const BUCKET_VALUES: [f64; BUCKETS] = {
    // 2^(1/8), 2^(3/8), 2^(5/8), 2^(7/8).
    const FRACTION: [f64; 4] =
        [1.090_507_732_665_257_7, 1.296_839_554_651_009_6, 1.542_210_825_407_940_7, 1.834_008_086_409_342_4];
    let mut table = [0.0; BUCKETS];
    let mut i = 0;
    while i < BUCKETS {
        let power_of_two = f64::from_bits((1023 + (i as u64 >> 2)) << 52);
        table[i] = power_of_two * FRACTION[i & 3];
        i += 1;
    }
    table
};

fn bucket_value_us(i: usize) -> f64 {
    BUCKET_VALUES[i.min(BUCKETS - 1)]
}

impl Stats {
    /// Adds one outcome.
    pub fn observe(&mut self, class: OutcomeClass, latency_us: u64, growth: f64) {
        let w = self.scale;
        match class {
            OutcomeClass::Ok => self.ok += w,
            OutcomeClass::Transient => {
                self.failed += w;
                self.transient += w;
            }
            OutcomeClass::Permanent => self.failed += w,
        }
        self.latency[bucket(latency_us)] += w;
        self.latency_total += w;
        self.samples += 1;
        self.growth = growth;
        self.scale *= growth;
        if self.scale > RENORM {
            let s = self.scale;
            self.ok /= s;
            self.failed /= s;
            self.transient /= s;
            self.latency.iter_mut().for_each(|x| *x /= s);
            self.latency_total /= s;
            self.scale = 1.0;
        }
    }

    /// Decayed counts `(successes, failures, transient failures)`; the latest outcome weighs 1.
    fn decayed(&self, growth: f64) -> (f64, f64, f64) {
        let k = growth / self.scale;
        (self.ok * k, self.failed * k, self.transient * k)
    }

    /// The `q` quantile of latency.
    fn latency_quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.latency_total;
        if total <= 0.0 {
            return None;
        }
        let mut acc = 0.0;
        for (i, w) in self.latency.iter().enumerate() {
            acc += w;
            if acc >= q * total {
                return Some(bucket_value_us(i));
            }
        }
        Some(bucket_value_us(BUCKETS - 1))
    }

    /// The prediction these statistics give under `params` (its priors; the decay is the growth
    /// the outcomes were added with).
    pub fn predict(&self, params: &ModelParams) -> Prediction {
        let (s, f, t) = if self.samples == 0 { (0.0, 0.0, 0.0) } else { self.decayed(self.growth) };
        let a = params.prior_alpha + s;
        let b = params.prior_beta + f;
        let mean = a / (a + b);
        let sd = (a * b / ((a + b) * (a + b) * (a + b + 1.0))).sqrt();
        Prediction {
            p_success: mean,
            lower: (mean - Z90 * sd).max(0.0),
            upper: (mean + Z90 * sd).min(1.0),
            samples: self.samples,
            effective_samples: s + f,
            transient_rate: if f > 0.0 { t / (s + f) } else { 0.0 },
            failure_transient_share: if f > 0.0 { t / f } else { 0.0 },
            latency_p50_us: self.latency_quantile_us(0.50),
            latency_p95_us: self.latency_quantile_us(0.95),
        }
    }
}

impl ModelParams {
    /// Per-outcome growth of weights, `2^(1/half_life)`.
    pub fn growth(&self) -> f64 {
        2f64.powf(1.0 / self.half_life.max(1e-9))
    }
}

/// What history says about a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Posterior mean of P(success).
    pub p_success: f64,
    /// Lower end of the 90% credible interval.
    pub lower: f64,
    /// Upper end of the 90% credible interval.
    pub upper: f64,
    /// Outcomes seen for the key (not decayed); 0 means the prior alone speaks.
    pub samples: u64,
    /// Decayed weight of the evidence.
    pub effective_samples: f64,
    /// Share of all (decayed) outcomes that were transient failures.
    pub transient_rate: f64,
    /// Share of (decayed) failures that were transient.
    pub failure_transient_share: f64,
    /// Median latency in µs, when any outcome was seen.
    pub latency_p50_us: Option<f64>,
    /// 95th percentile latency in µs, when any outcome was seen.
    pub latency_p95_us: Option<f64>,
}

/// Fingerprint value of the (tool, house) aggregate key.
pub const AGGREGATE: u64 = 0;

/// Statistics per tool, then per (house, fingerprint); fingerprint [`AGGREGATE`] is the
/// (tool, house) aggregate every outcome also feeds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    tools: FastMap<String, FastMap<(House, u64), Stats>>,
}

impl Model {
    /// Adds one outcome to its fingerprint key and to the (tool, house) aggregate.
    pub fn observe(&mut self, tool: &str, house: House, fp: u64, class: OutcomeClass, latency_us: u64, growth: f64) {
        let per = match self.tools.get_mut(tool) {
            Some(p) => p,
            None => self.tools.entry(tool.to_owned()).or_default(),
        };
        per.entry((house, AGGREGATE)).or_default().observe(class, latency_us, growth);
        if fp != AGGREGATE {
            per.entry((house, fp)).or_default().observe(class, latency_us, growth);
        }
    }

    /// The prediction for a call: the fingerprint's own statistics once it has
    /// `min_fingerprint_samples`, else the (tool, house) aggregate, else the prior.
    pub fn predict(&self, tool: &str, house: House, fp: u64, params: &ModelParams) -> Prediction {
        let per = self.tools.get(tool);
        let own = per.and_then(|p| p.get(&(house, fp))).filter(|s| s.samples >= params.min_fingerprint_samples);
        let stats = own.or_else(|| per.and_then(|p| p.get(&(house, AGGREGATE))));
        match stats {
            Some(s) => s.predict(params),
            None => Stats::default().predict(params),
        }
    }

    /// The house with the best predicted success for `tool` (posterior mean, ties to the
    /// first in [`House::ALL`]), if any house has history.
    pub fn preferred_house(&self, tool: &str, params: &ModelParams) -> Option<House> {
        let per = self.tools.get(tool)?;
        let mut best: Option<(House, f64)> = None;
        for h in House::ALL {
            if let Some(s) = per.get(&(h, AGGREGATE)) {
                let p = s.predict(params).p_success;
                if best.is_none_or(|(_, b)| p > b) {
                    best = Some((h, p));
                }
            }
        }
        best.map(|(h, _)| h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ModelParams {
        ModelParams { prior_alpha: 1.0, prior_beta: 1.0, half_life: 50.0, min_fingerprint_samples: 5 }
    }

    /// Proves the compile-time bucket values are exactly the powers of two they stand for.
    #[test]
    fn bucket_values_are_the_powers_they_stand_for() {
        for i in 0..BUCKETS {
            assert_eq!(bucket_value_us(i), 2f64.powf((i as f64 + 0.5) / 4.0), "bucket {i}");
        }
    }

    /// Proves the integer bucket is `floor(4 * log2(latency))` clamped to the table, as the
    /// float formula it replaced computed it, over every latency up to 2^20 µs, around every
    /// power of two and at the extremes.
    #[test]
    fn integer_buckets_match_the_logarithm() {
        let float = |us: u64| ((4.0 * (us.max(1) as f64).log2()).floor().max(0.0) as usize).min(BUCKETS - 1);
        let powers = (0..64).flat_map(|k| {
            let p = 1u64 << k;
            [p - 1, p, p + 1]
        });
        for us in (0..=1 << 20).chain(powers).chain([u64::from(u32::MAX), u64::MAX - 1, u64::MAX]) {
            assert_eq!(bucket(us), float(us), "latency {us} µs");
        }
    }

    /// Proves an empty key gives the prior with n=0 and a wide interval.
    #[test]
    fn no_history_is_the_prior() {
        let p = Model::default().predict("deploy", House::Bezalel, 1, &params());
        assert_eq!(p.samples, 0);
        assert!((p.p_success - 0.5).abs() < 1e-12);
        assert!(p.upper - p.lower > 0.5);
        assert!(p.latency_p50_us.is_none());
    }

    /// Proves predictions follow drift: after failures then successes the mean rises.
    #[test]
    fn follows_drift() {
        let mut m = Model::default();
        let g = params().growth();
        for _ in 0..300 {
            m.observe("t", House::Timmy, 7, OutcomeClass::Permanent, 100, g);
        }
        let low = m.predict("t", House::Timmy, 7, &params()).p_success;
        for _ in 0..300 {
            m.observe("t", House::Timmy, 7, OutcomeClass::Ok, 100, g);
        }
        let high = m.predict("t", House::Timmy, 7, &params()).p_success;
        assert!(low < 0.05 && high > 0.95, "{low} {high}");
    }

    /// Proves latency quantiles land within a bucket's resolution of the truth.
    #[test]
    fn latency_quantiles() {
        let mut s = Stats::default();
        for i in 0..100u64 {
            s.observe(OutcomeClass::Ok, if i < 90 { 1000 } else { 100_000 }, 1.0);
        }
        let p = s.predict(&params());
        let p50 = p.latency_p50_us.expect("p50");
        assert!((900.0..1200.0).contains(&p50), "{p50}");
        assert!(p.latency_p95_us.expect("p95") > 80_000.0);
    }
}
