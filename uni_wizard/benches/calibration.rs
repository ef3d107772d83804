//! Calibration of the success predictor on a synthetic workload with known, drifting rates.
//!
//! Run: `cargo bench -p uni_wizard --bench calibration`.
//!
//! Workload (deterministic, seeded): 6 tools × 4 houses = 24 keys. Base success rates are
//! bimodal, as in operations: two thirds of the keys reliable (0.85..0.98), one third flaky or
//! broken (0.05..0.40). Every key drifts smoothly (a sinusoid of amplitude 0.10, per-key phase,
//! one period over the run) and a quarter of the keys change regime once (±0.6 at a random
//! point: an outage or a fix). Rates are clamped to 0.02..0.98. 50,000 events; each picks a
//! key uniformly, the predictor predicts, then the outcome is drawn from the true rate and fed
//! back. Brier scores (mean squared error of the predicted probability against the 0/1
//! outcome) are reported for:
//!
//! - the predictor: [`Model`] with the default [`IntelligenceConfig`] (Beta(1,1) prior,
//!   half-life 100 outcomes per key);
//! - the oracle: the true rate at that moment (the floor no predictor beats on average);
//! - the baseline: the running global success rate (no learning per key).
//!
//! Targets (issue #4): predictor ≤ 1.10 × oracle, and predictor ≤ 0.70 × baseline.

use uni_wizard::House;
use uni_wizard::intelligence::predictions::AGGREGATE;
use uni_wizard::intelligence::{IntelligenceConfig, Model, OutcomeClass};

const TOOLS: [&str; 6] = ["deploy", "git_pull", "file_read", "http_get", "service_restart", "backup"];
const EVENTS: usize = 50_000;

/// splitmix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Key {
    tool: &'static str,
    house: House,
    base: f64,
    phase: f64,
    step: Option<(usize, f64)>,
}

impl Key {
    fn rate(&self, t: usize) -> f64 {
        let drift = 0.10 * (std::f64::consts::TAU * t as f64 / EVENTS as f64 + self.phase).sin();
        let step = self.step.filter(|(at, _)| t >= *at).map_or(0.0, |(_, d)| d);
        (self.base + drift + step).clamp(0.02, 0.98)
    }
}

struct Scores {
    pred: f64,
    oracle: f64,
    base: f64,
}

fn run(cfg: &IntelligenceConfig, seed: u64) -> Scores {
    let mut rng = Rng(seed);
    let keys: Vec<Key> = (0..TOOLS.len() * House::ALL.len())
        .map(|i| {
            // Bimodal, as operations are: two thirds of the keys are reliable (0.85..0.98),
            // one third are flaky or broken (0.05..0.40).
            let base =
                if i % 3 == 0 { 0.05 + 0.35 * (i / 3) as f64 / 7.0 } else { 0.85 + 0.13 * (i % 16) as f64 / 15.0 };
            // A quarter of the keys change regime once: an outage or a fix.
            let step = (i % 4 == 1).then(|| {
                let at = (rng.unit() * EVENTS as f64) as usize;
                (at, if base > 0.5 { -0.6 } else { 0.6 })
            });
            Key {
                tool: TOOLS[i % TOOLS.len()],
                house: House::ALL[i / TOOLS.len()],
                base,
                phase: rng.unit() * std::f64::consts::TAU,
                step,
            }
        })
        .collect();
    let params = cfg.params();
    let growth = params.growth();
    let mut model = Model::default();
    let (mut ok_total, mut seen) = (0.0, 0.0);
    let mut s = Scores { pred: 0.0, oracle: 0.0, base: 0.0 };
    for t in 0..EVENTS {
        let k = &keys[(rng.next_u64() % keys.len() as u64) as usize];
        let p_true = k.rate(t);
        let p_pred = model.predict(k.tool, k.house, AGGREGATE, &params).p_success;
        let p_base = if seen > 0.0 { ok_total / seen } else { 0.5 };
        let y = if rng.unit() < p_true { 1.0 } else { 0.0 };
        s.pred += (p_pred - y) * (p_pred - y);
        s.oracle += (p_true - y) * (p_true - y);
        s.base += (p_base - y) * (p_base - y);
        let class = if y > 0.5 { OutcomeClass::Ok } else { OutcomeClass::Permanent };
        model.observe(k.tool, k.house, AGGREGATE, class, 1000, growth);
        ok_total += y;
        seen += 1.0;
    }
    let n = EVENTS as f64;
    Scores { pred: s.pred / n, oracle: s.oracle / n, base: s.base / n }
}

fn main() {
    let default = IntelligenceConfig::default();
    let seeds = [1u64, 2, 3, 4, 5];
    println!("calibration: {} keys, {EVENTS} events, drifting rates; Brier score (lower is better)", 24);
    let mut all = Scores { pred: 0.0, oracle: 0.0, base: 0.0 };
    for seed in seeds {
        let s = run(&default, seed);
        println!(
            "  seed {seed}: predictor {:.5}  oracle {:.5}  baseline {:.5}  pred/oracle {:.3}  pred/baseline {:.3}",
            s.pred,
            s.oracle,
            s.base,
            s.pred / s.oracle,
            s.pred / s.base
        );
        all.pred += s.pred;
        all.oracle += s.oracle;
        all.base += s.base;
    }
    let (vo, vb) = (all.pred / all.oracle, all.pred / all.base);
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    println!(
        "calibration (mean of {} seeds, half-life {}): predictor {:.5}  oracle {:.5}  baseline {:.5}",
        seeds.len(),
        default.half_life,
        all.pred / seeds.len() as f64,
        all.oracle / seeds.len() as f64,
        all.base / seeds.len() as f64
    );
    println!("  predictor / oracle   {vo:.3}  ({} target <= 1.10)", verdict(vo <= 1.10));
    println!("  predictor / baseline {vb:.3}  ({} target <= 0.70)", verdict(vb <= 0.70));
    println!("half-life sensitivity (seed 1):");
    for hl in [10.0, 25.0, 50.0, 100.0, 200.0, 400.0] {
        let s = run(&IntelligenceConfig { half_life: hl, ..default.clone() }, 1);
        println!("  half-life {hl:>5}: pred/oracle {:.3}  pred/baseline {:.3}", s.pred / s.oracle, s.pred / s.base);
    }
}
