//! `uni-wizard predict --tool T --house H [--json]`: what the pattern DB under
//! `$UNI_WIZARD_HOME` says about a tool run by a house.
//!
//! A question about history, so any tool name is accepted: one never run answers with the
//! prior and `samples: 0`. The DB is read, never created or written. Timeout and retries are
//! what Intelligent mode would adapt them to (the contract's and the configured ones while
//! history is short); a tool unknown to this build has no contract timeout to adapt.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};
use uni_wizard::intelligence::adaptation;
use uni_wizard::tools::Registry;
use uni_wizard::{Config, Error, House, Intelligence};

/// Flags of `uni-wizard predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The tool (need not be known: the answer is the prior then).
    #[arg(long)]
    pub tool: String,
    /// The house: timmy, allegro, ezra or bezalel.
    #[arg(long)]
    pub house: String,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// Library config file (YAML); embedded defaults when absent.
    #[arg(long, env = "UNI_WIZARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `predict` and prints the prediction.
///
/// # Errors
/// As [`prediction`].
pub fn run(a: &PredictArgs) -> Result<i32, Error> {
    print(&prediction(a)?, a.json);
    Ok(0)
}

/// The prediction as the JSON document `--json` prints.
///
/// # Errors
/// E1xxx for an unknown house, E4xxx for a bad config or an unreadable DB.
pub fn prediction(a: &PredictArgs) -> Result<Value, Error> {
    let house: House = a.house.parse()?;
    let config = match &a.config {
        Some(path) => crate::config::load_library(path)?,
        None => Config::default(),
    };
    let ic = &config.intelligence;
    let path = ic.db_path.clone().unwrap_or_else(|| config.home_dir().join("patterns.db"));
    let model = Intelligence::load_model(ic, &path)?;
    let params = ic.params();
    let p = model.predict(&a.tool, house, uni_wizard::intelligence::predictions::AGGREGATE, &params);
    let registry = Registry::builtin()?;
    let timeout_ms = registry.get(&a.tool).map(|t| {
        let c = t.contract();
        let base = config
            .timeouts_ms
            .get(&a.tool)
            .map_or(c.spec().default_timeout, |ms| std::time::Duration::from_millis(*ms));
        adaptation::timeout(&p, base, config.max_timeout(), ic).as_millis() as u64
    });
    let retries = adaptation::retries(&p, config.executor.retry.max_retries, ic);
    Ok(json!({
        "tool": a.tool,
        "house": house,
        "p_success": p.p_success,
        "interval": { "level": 0.9, "lower": p.lower, "upper": p.upper },
        "samples": p.samples,
        "effective_samples": p.effective_samples,
        "prior": { "alpha": ic.prior_alpha, "beta": ic.prior_beta },
        "latency_p50_ms": p.latency_p50_us.map(|u| u / 1000.0),
        "latency_p95_ms": p.latency_p95_us.map(|u| u / 1000.0),
        "transient_rate": p.transient_rate,
        "timeout_ms": timeout_ms,
        "retries": retries,
        "verdict": adaptation::verdict(&p, ic),
        "preferred_house": model.preferred_house(&a.tool, &params),
        "db": path.display().to_string(),
    }))
}

fn print(v: &Value, as_json: bool) {
    let mut out = std::io::stdout().lock();
    if as_json {
        let _ = writeln!(out, "{v}");
        return;
    }
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let ms = |k: &str| v[k].as_f64().map_or_else(|| "-".to_owned(), |x| format!("{x:.2} ms"));
    let _ = writeln!(
        out,
        "{} as {}: P(success) {:.3}  90% interval {:.3}..{:.3}  n={}{}",
        v["tool"].as_str().unwrap_or_default(),
        v["house"].as_str().unwrap_or_default(),
        f("p_success"),
        v["interval"]["lower"].as_f64().unwrap_or(f64::NAN),
        v["interval"]["upper"].as_f64().unwrap_or(f64::NAN),
        v["samples"],
        if v["samples"] == 0 { "  (no history: the prior)" } else { "" }
    );
    let _ = writeln!(out, "    latency p50 {}  p95 {}", ms("latency_p50_ms"), ms("latency_p95_ms"));
    let timeout = v["timeout_ms"].as_u64().map_or_else(|| "- (unknown tool)".to_owned(), |t| format!("{t} ms"));
    let _ = writeln!(
        out,
        "    adapted timeout {timeout}  retries {}  verdict {}",
        v["retries"],
        v["verdict"].as_str().unwrap_or_default()
    );
    if let Some(h) = v["preferred_house"].as_str() {
        let _ = writeln!(out, "    preferred house {h}");
    }
}
