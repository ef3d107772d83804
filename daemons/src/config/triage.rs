//! Settings of the `triage` role (`triage:`): the Gitea server and the bot, the webhook secret,
//! the repositories watched, and the rules ([`RuleConfig`]); the role itself is
//! [`crate::triage`], which compiles the rules into `triage::rules::Rules`.
//!
//! Everything is checked when the config loads ([`TriageConfig::validate`]): the Gitea config
//! builds a client, repositories are `owner/name`, and the rules ([`check_rules`]) have unique
//! names, regexes that compile, a house for every category and labels of 1 to 100 characters.
//! [`check_rules`] is also what compiles a rule's regexes for the role, so what loads is what
//! runs.

use std::collections::BTreeSet;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uni_wizard::gitea::{GiteaClient, GiteaConfig, is_valid_name};
use uni_wizard::{Error, ErrorCode, House};

use super::Secret;

/// The `triage:` section of a node's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriageConfig {
    /// The Gitea server and the bot's token (`gitea.base_url`, `gitea.token`, ...).
    pub gitea: GiteaConfig,
    /// The webhook's secret, as configured on the Gitea hook; never logged.
    pub webhook_secret: Secret,
    /// Repositories watched, `owner/name`.
    pub repos: Vec<String>,
    /// Time between polls, milliseconds (a poll also runs at start).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// The bot's Gitea login: webhooks it caused are ignored.
    pub bot_user: String,
    /// Largest webhook body accepted; larger ones get 413 without being read.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The house whose router receives the tasks (default: this node's house).
    #[serde(default)]
    pub router_house: Option<House>,
    /// Issues triaged at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Also set `category/<c>` and `house/<h>` labels (what a house's task lists).
    #[serde(default = "default_true")]
    pub house_labels: bool,
    /// Colour of labels the daemon creates, `rrggbb`.
    #[serde(default = "default_label_color")]
    pub label_color: String,
    /// Attempts at one issue before it is dropped from the queue (polling finds it again).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The rules, in order.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

fn default_poll_interval_ms() -> u64 {
    60_000
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_concurrency() -> usize {
    4
}
fn default_true() -> bool {
    true
}
fn default_label_color() -> String {
    "c5def5".into()
}
fn default_max_attempts() -> u32 {
    8
}

impl TriageConfig {
    /// Checks what the types alone do not.
    ///
    /// # Errors
    /// `(field, problem)`, the field relative to `triage`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, p: &str| Err((f.to_owned(), p.to_owned()));
        if self.webhook_secret.expose().len() < 16 {
            return bad("webhook_secret", "must be at least 16 characters");
        }
        if self.repos.is_empty() {
            return bad("repos", "lists no repository");
        }
        for (i, r) in self.repos.iter().enumerate() {
            if split_repo(r).is_none() {
                return Err((format!("repos.{i}"), format!("`{r}` is not owner/name")));
            }
        }
        if self.bot_user.trim().is_empty() {
            return bad("bot_user", "must name the bot's Gitea login");
        }
        if self.poll_interval_ms < 100 {
            return bad("poll_interval_ms", "must be at least 100");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        if self.concurrency == 0 || self.max_attempts == 0 {
            return bad("concurrency", "concurrency and max_attempts must be positive");
        }
        // The engine holds a tokio semaphore of this many permits (it panics above 2^61).
        if self.concurrency > 1000 {
            return bad("concurrency", "must be at most 1000");
        }
        if self.label_color.len() != 6 || !self.label_color.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("label_color", "must be six hex digits, e.g. c5def5");
        }
        GiteaClient::new(&self.gitea).map_err(|e| {
            let field = e.details["field"].as_str().unwrap_or("gitea").to_owned();
            (field, e.message)
        })?;
        check_rules(&self.rules)?;
        Ok(())
    }
}

/// `(field, problem)` from [`TriageConfig::validate`] as the E4001 that
/// [`super::DaemonConfig::validate`] returns, the field prefixed with `section`.
pub fn field_error(section: &str, (field, problem): (String, String)) -> Error {
    let field = format!("{section}.{field}");
    Error::new(ErrorCode::ConfigInvalid, format!("field `{field}`: {problem}"))
        .with_details(json!({ "field": field, "problem": problem }))
}

/// `owner/name` split, both valid Gitea names.
pub fn split_repo(repo: &str) -> Option<(&str, &str)> {
    let (owner, name) = repo.split_once('/')?;
    (is_valid_name(owner) && is_valid_name(name)).then_some((owner, name))
}

/// One rule as written under `triage.rules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A short name, unique among the rules (shown in status and fingerprints).
    pub name: String,
    /// When the rule applies; an empty `match` applies to every issue.
    #[serde(default, rename = "match")]
    pub when: MatchConfig,
    /// Labels to set (created in the repository when missing).
    #[serde(default)]
    pub labels: Vec<String>,
    /// The issue's category, e.g. `bug`, `docs`, `critical`.
    #[serde(default)]
    pub category: Option<String>,
    /// Logins to assign (added to the assignees already there).
    #[serde(default)]
    pub assignees: Vec<String>,
    /// The house to route to (default: from the category, see [`default_house`]).
    #[serde(default)]
    pub house: Option<House>,
    /// A comment template; `{house}`, `{category}`, `{labels}`, `{author}`, `{number}` and
    /// `{rules}` are replaced.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The conditions of a rule; all given ones must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Any of these words (case-insensitive, whole words) in the title or body.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// A regular expression (Rust `regex` syntax) matching the title or body.
    #[serde(default)]
    pub regex: Option<String>,
    /// Where `keywords` and `regex` look: `title`, `body` (default both).
    #[serde(default = "both_fields")]
    pub fields: Vec<Field>,
    /// The issue carries every one of these labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The author's login is one of these (case-insensitive).
    #[serde(default)]
    pub authors: Vec<String>,
}

fn both_fields() -> Vec<Field> {
    vec![Field::Title, Field::Body]
}

/// A text field of an issue that keywords and regexes search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    /// The title.
    Title,
    /// The body.
    Body,
}

/// The house a category goes to when the rule names none (SYSTEM.md §1): Ezra archives and
/// analyses, Bezalel builds and tests, Timmy decides.
pub fn default_house(category: &str) -> Option<House> {
    match category.to_ascii_lowercase().as_str() {
        "docs" | "documentation" | "architecture" | "analysis" => Some(House::Ezra),
        "implementation" | "testing" | "test" | "tests" | "bug" | "bugs" => Some(House::Bezalel),
        "critical" | "decision" | "decisions" => Some(House::Timmy),
        _ => None,
    }
}

/// The regexes of one rule's `match`, compiled by [`check_rules`].
#[derive(Debug, Clone)]
pub struct TextMatch {
    /// The `keywords`, as one case-insensitive whole-word alternation; `None` without any.
    pub keywords: Option<Regex>,
    /// The `regex`, as written.
    pub regex: Option<Regex>,
}

/// Checks rules and compiles their regexes, one [`TextMatch`] per rule, in order.
///
/// # Errors
/// `(field, problem)`, the field relative to `triage` and naming the rule by index
/// (`rules.<i>...`): an empty or duplicate name, a regex that does not compile, a category with
/// no default house and no `house`, a label that is empty or longer than 100 characters.
pub fn check_rules(rules: &[RuleConfig]) -> Result<Vec<TextMatch>, (String, String)> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let field = format!("rules.{i}");
        if r.name.trim().is_empty() {
            return Err((format!("{field}.name"), "must not be empty".into()));
        }
        if !names.insert(r.name.clone()) {
            return Err((format!("{field}.name"), format!("`{}` is used by two rules", r.name)));
        }
        let keywords: Vec<String> =
            r.when.keywords.iter().filter(|k| !k.trim().is_empty()).map(|k| regex::escape(k.trim())).collect();
        let text = if keywords.is_empty() {
            None
        } else {
            Some(
                Regex::new(&format!(r"(?i)\b(?:{})\b", keywords.join("|")))
                    .map_err(|e| (format!("{field}.match.keywords"), e.to_string()))?,
            )
        };
        let regex = match &r.when.regex {
            Some(re) => {
                Some(Regex::new(re).map_err(|e| (format!("{field}.match.regex"), format!("does not compile: {e}")))?)
            }
            None => None,
        };
        if let Some(c) = &r.category
            && r.house.is_none()
            && default_house(c).is_none()
        {
            return Err((
                format!("{field}.category"),
                format!("category `{c}` has no default house; set `house` on the rule"),
            ));
        }
        for l in r.labels.iter().chain(&r.when.labels) {
            if l.trim().is_empty() || l.len() > 100 {
                return Err((format!("{field}.labels"), "labels must be 1 to 100 characters".into()));
            }
        }
        out.push(TextMatch { keywords: text, regex });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::{DaemonConfig, Role};

    const NODE: &str = "house: allegro
roles: [router, worker, triage]
listen: {grpc: 127.0.0.1:7402, http: 127.0.0.1:7482}
plaintext_loopback: true
houses:
  allegro: {endpoint: 127.0.0.1:7402, auth_token: allegro-token-0123456789}
";

    const TRIAGE: &str = "triage:
  gitea: {base_url: http://127.0.0.1:3000, token: gitea-token}
  webhook_secret: a-webhook-secret-0123
  bot_user: timmy-bot
  repos: [uni/fleet]
  rules:
    - {name: bug, match: {keywords: [crash]}, category: bug}
";

    fn parse(text: &str) -> Result<DaemonConfig, uni_wizard::Error> {
        DaemonConfig::parse(text, "node.yaml", &|_| None)
    }

    /// Proves a triage node parses with defaults, and its secret never shows in Debug.
    #[test]
    fn triage_section_parses_with_defaults() {
        let c = parse(&format!("{NODE}{TRIAGE}")).expect("valid");
        assert!(c.roles().contains(&Role::Triage));
        let t = c.triage.as_ref().expect("section");
        assert_eq!((t.poll_interval_ms, t.max_body_bytes, t.concurrency), (60_000, 1024 * 1024, 4));
        let shown = format!("{c:?}");
        assert!(!shown.contains("a-webhook-secret") && !shown.contains("gitea-token"), "{shown}");
    }

    /// Proves the triage role without its section, a bad regex, an unknown field and a bad repo are refused, naming the field.
    #[test]
    fn bad_triage_settings_name_the_field() {
        let field = |text: &str| parse(text).expect_err("refused").details["field"].as_str().unwrap_or("").to_owned();
        assert_eq!(field(NODE), "triage");
        let bad_regex = format!("{NODE}{TRIAGE}    - {{name: x, match: {{regex: '('}}}}\n");
        assert_eq!(field(&bad_regex), "triage.rules.1.match.regex");
        let bad_repo = format!("{NODE}{}", TRIAGE.replace("[uni/fleet]", "[fleet]"));
        assert_eq!(field(&bad_repo), "triage.repos.0");
        let short = format!("{NODE}{}", TRIAGE.replace("a-webhook-secret-0123", "short"));
        assert_eq!(field(&short), "triage.webhook_secret");
        assert!(parse(&format!("{NODE}{TRIAGE}  colour: red\n")).is_err(), "unknown field");
    }

    /// Proves a node's `worker.library.policy` loads when it narrows the house's built-in policy
    /// and is refused at load, naming the field, when it loosens it.
    #[test]
    fn policy_override_may_only_narrow() {
        let with = |policy: &str| format!("{NODE}worker:\n  library:\n    policy: {policy}\n{TRIAGE}");
        let narrowed = "{allowed_categories: [system, git, network, file], denied_tools: [gitea_update_issue], \
                        production_needs_approval: true}";
        let c = parse(&with(narrowed)).expect("narrowing is accepted");
        let p = c.worker.library.policy.as_ref().expect("policy");
        assert_eq!(p.denied_tools, vec!["gitea_update_issue"]);
        let loosened = "{allowed_categories: [system, git, network, file], production_needs_approval: false}";
        let e = parse(&with(loosened)).expect_err("loosening is refused");
        assert_eq!(e.details["field"], "worker.library.policy.production_needs_approval", "{e:?}");
        assert!(parse(&with("{allowed_categories: [file], colour: red}")).is_err(), "unknown fields are refused");
    }

    /// Proves a triage concurrency the engine's semaphore cannot hold is refused at load, not
    /// a panic in the engine's task after start.
    #[test]
    fn huge_triage_concurrency_is_refused() {
        let text = format!("{NODE}{TRIAGE}  concurrency: 18446744073709551615\n");
        let e = parse(&text).expect_err("refused");
        assert_eq!(e.details["field"], "triage.concurrency");
    }
}
