//! The library's configuration: plain data with defaults, validated before use.
//!
//! The library never reads files: daemons and the CLI load YAML (with `${ENV}` expansion) and
//! hand the result here. Every field has a default, so an empty config is a working one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, ErrorCode, Result};
use crate::executor::ExecutorConfig;

/// The largest `executor.limit.max_concurrency` accepted.
pub const MAX_CONCURRENCY: usize = 1_000_000;

/// Library settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's name in provenance and telemetry; the host name when unset.
    pub node: Option<String>,
    /// State directory; `$UNI_WIZARD_HOME`, else `~/.local/share/uni-wizard`, when unset.
    pub home: Option<PathBuf>,
    /// Directories the file tools are confined to; the first is where relative paths resolve.
    /// Empty means the file tools refuse every path.
    pub file_roots: Vec<PathBuf>,
    /// Whether the file tools may use regular files with more than one hard link. Off by
    /// default: a hard link inside a root can name a file outside it, which no path check can
    /// see (E2008). Turn it on only where every link under the roots is trusted.
    pub allow_hard_links: bool,
    /// The `git` executable.
    pub git_binary: PathBuf,
    /// Executor layers.
    pub executor: ExecutorConfig,
    /// Per-tool timeout overrides in milliseconds.
    pub timeouts_ms: BTreeMap<String, u64>,
    /// Ceiling on any timeout, whether from a contract, an override or a call.
    pub max_timeout_ms: u64,
    /// What the HTTP tools may reach, per house; a house without a list reaches nothing.
    pub egress: crate::tools::http::egress::EgressConfig,
    /// The Gitea server the Gitea tools talk to; without it they refuse with E4001.
    pub gitea: Option<crate::gitea::GiteaConfig>,
    /// Intelligent mode: pattern DB, predictions, adaptive policies.
    pub intelligence: crate::intelligence::IntelligenceConfig,
    /// This node's house policy, narrowing the built-in one of SYSTEM.md §1 (e.g. more
    /// `denied_tools`); `None` keeps the built-in one. A policy that loosens any rule is
    /// refused when a harness is built, and by `uni-wizardd` when it loads the node config
    /// ([`crate::harness::check_policy`]).
    pub policy: Option<crate::policy::HousePolicy>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            node: None,
            home: None,
            file_roots: vec![],
            allow_hard_links: false,
            git_binary: PathBuf::from("git"),
            executor: ExecutorConfig::default(),
            timeouts_ms: BTreeMap::new(),
            max_timeout_ms: 600_000,
            egress: crate::tools::http::egress::EgressConfig::default(),
            gitea: None,
            intelligence: crate::intelligence::IntelligenceConfig::default(),
            policy: None,
        }
    }
}

impl Config {
    /// The state directory this config names.
    pub fn home_dir(&self) -> PathBuf {
        if let Some(h) = &self.home {
            return h.clone();
        }
        default_home()
    }

    /// The node name: configured, else the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| rustix::system::uname().nodename().to_string_lossy().into_owned())
    }

    /// The ceiling on timeouts.
    pub fn max_timeout(&self) -> Duration {
        Duration::from_millis(self.max_timeout_ms)
    }

    /// Checks values that the types alone do not.
    ///
    /// # Errors
    /// E4001 naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| {
            Err(Error::new(ErrorCode::ConfigInvalid, format!("config field `{field}` {why}"))
                .with_details(json!({ "field": field })))
        };
        // The limit is a tokio semaphore, which panics above 2^61 permits; a million calls at
        // once is far past any host, so a larger number is a typo.
        if !(1..=MAX_CONCURRENCY).contains(&self.executor.limit.max_concurrency) {
            return bad("executor.limit.max_concurrency", "must be between 1 and 1000000");
        }
        if self.executor.breaker.failure_threshold == 0 {
            return bad("executor.breaker.failure_threshold", "must be at least 1");
        }
        if self.executor.breaker.cooldown_ms == 0 {
            return bad("executor.breaker.cooldown_ms", "must be at least 1");
        }
        if self.executor.retry.max_delay_ms < self.executor.retry.min_delay_ms {
            return bad("executor.retry.max_delay_ms", "must not be below min_delay_ms");
        }
        if self.max_timeout_ms == 0 {
            return bad("max_timeout_ms", "must be at least 1");
        }
        for (tool, ms) in &self.timeouts_ms {
            if *ms == 0 || *ms > self.max_timeout_ms {
                return bad(&format!("timeouts_ms.{tool}"), "must be between 1 and max_timeout_ms");
            }
        }
        self.egress.validate()?;
        self.intelligence.validate()?;
        Ok(())
    }
}

/// `$UNI_WIZARD_HOME`, else `$HOME/.local/share/uni-wizard`, else `./.uni-wizard`.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("UNI_WIZARD_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/uni-wizard"),
        None => PathBuf::from(".uni-wizard"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves `policy` narrows the house policy of every harness built from the config (a
    /// denied tool is E2001), and one that loosens the house's rules fails the build naming the field.
    #[tokio::test]
    async fn policy_narrows_every_harness_built_from_it() {
        use crate::house::House;
        use crate::policy::HousePolicy;
        let mut narrowed = HousePolicy::default_for(House::Allegro);
        narrowed.denied_tools.push("system_info".into());
        let c = Config { policy: Some(narrowed), ..Config::default() };
        let h = crate::Harness::builder().house(House::Allegro).config(c.clone()).build().expect("narrowing builds");
        let e = h.execute("system_info", json!({})).await.expect_err("denied");
        assert_eq!(e.code, ErrorCode::ToolNotAllowed);
        assert!(crate::harness::check_policy(House::Allegro, c.policy.as_ref().expect("set")).is_ok());

        let loose = HousePolicy { production_needs_approval: false, ..HousePolicy::default_for(House::Allegro) };
        let c = Config { policy: Some(loose.clone()), ..Config::default() };
        let e = crate::Harness::builder().house(House::Allegro).config(c).build().expect_err("loosening is refused");
        assert_eq!(
            (e.code, e.details["field"].clone()),
            (ErrorCode::ConfigInvalid, json!("production_needs_approval"))
        );
        assert!(crate::harness::check_policy(House::Allegro, &loose).is_err());
    }

    /// Proves the default config is valid and a zero concurrency limit is refused by field name.
    #[test]
    fn default_is_valid_and_bad_values_name_the_field() {
        assert!(Config::default().validate().is_ok());
        let mut c = Config::default();
        c.executor.limit.max_concurrency = 0;
        let e = c.validate().expect_err("invalid");
        assert_eq!(e.code, ErrorCode::ConfigInvalid);
        assert_eq!(e.details["field"], "executor.limit.max_concurrency");
    }

    /// Proves a concurrency limit above what the executor's semaphore can hold is refused by
    /// name instead of panicking when the harness is built (fuzz/regressions/config).
    #[test]
    fn concurrency_beyond_the_semaphore_is_refused() {
        let mut c = Config::default();
        c.executor.limit.max_concurrency = usize::MAX;
        let e = c.validate().expect_err("invalid");
        assert_eq!(e.details["field"], "executor.limit.max_concurrency");
        c.executor.limit.max_concurrency = MAX_CONCURRENCY;
        assert!(c.validate().is_ok());
        let _ = crate::executor::Executor::new(&c.executor);
    }

    /// Proves pattern-DB queue and batch sizes that would be allocated up front are bounded.
    #[test]
    fn huge_intelligence_buffers_are_refused() {
        let mut c = Config::default();
        c.intelligence.batch_size = usize::MAX;
        assert_eq!(c.validate().expect_err("invalid").details["field"], "intelligence.queue_capacity");
        c.intelligence.batch_size = 512;
        c.intelligence.queue_capacity = usize::MAX;
        assert!(c.validate().is_err());
    }

    /// Proves unknown fields are refused rather than ignored.
    #[test]
    fn unknown_fields_are_refused() {
        let r: std::result::Result<Config, _> = serde_json::from_value(json!({ "file_root": ["/tmp"] }));
        assert!(r.is_err());
    }
}
