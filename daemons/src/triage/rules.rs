//! Triage rules: what the YAML says ([`RuleConfig`], in the config home with the rest of the
//! `triage:` section), compiled once ([`Rules`]), and what they want for one issue ([`Plan`]).
//!
//! Deciding is kept apart from doing: [`Rules::plan`] is a pure function of the issue (title,
//! body, author, labels) and the config; the engine (`super::engine`) compares the plan with
//! Gitea's current state and applies only the difference.
//!
//! # How rules combine
//!
//! Every rule whose `match` holds contributes its labels and assignees (a union). The first
//! matching rule that names a category sets it, likewise the house and the comment. A rule's
//! house defaults from its category ([`default_house`]). Label conditions see the issue's labels
//! plus the labels the rules themselves want, evaluated to a fixed point: a rule that matches on
//! a label another rule adds gives the same plan before and after the bot applied it, so a
//! re-triage of an issue the bot already labelled wants nothing new.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uni_wizard::House;
use uni_wizard::gitea::Issue;

use crate::config::triage::{Field, RuleConfig, check_rules, default_house};

struct Compiled {
    config: RuleConfig,
    text: Option<Regex>,
    regex: Option<Regex>,
}

/// The rules of one config, compiled.
pub struct Rules {
    rules: Vec<Compiled>,
    house_labels: bool,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules").field("rules", &self.rules.len()).finish_non_exhaustive()
    }
}

/// What the rules want for one issue. Everything is sorted, so equal plans serialise equally.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Names of the rules that matched, in rule order.
    pub rules: Vec<String>,
    /// Labels the issue should carry.
    pub labels: BTreeSet<String>,
    /// Logins the issue should be assigned to.
    pub assignees: BTreeSet<String>,
    /// The category.
    pub category: Option<String>,
    /// The house to route to.
    pub house: Option<House>,
    /// The rendered comment (without the bot's marker).
    pub comment: Option<String>,
}

impl Plan {
    /// Whether no rule matched.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// A short, stable hash of the plan: the same plan always has the same fingerprint, and
    /// any change of what would be applied changes it.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        hex::encode(&Sha256::digest(text.as_bytes())[..8])
    }
}

impl Rules {
    /// Compiles rules: [`check_rules`] checks them and compiles their regexes, the same
    /// function that validated them when the config loaded.
    ///
    /// # Errors
    /// What [`check_rules`] refuses: `(field, problem)` naming the rule by index.
    pub fn compile(rules: &[RuleConfig], house_labels: bool) -> Result<Rules, (String, String)> {
        let compiled = check_rules(rules)?;
        let rules = rules
            .iter()
            .zip(compiled)
            .map(|(r, m)| Compiled { config: r.clone(), text: m.keywords, regex: m.regex })
            .collect();
        Ok(Rules { rules, house_labels })
    }

    /// What the rules want for `issue`.
    pub fn plan(&self, issue: &Issue) -> Plan {
        let current: BTreeSet<String> = issue.labels.iter().map(|l| l.name.clone()).collect();
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        let mut matched: Vec<&Compiled> = Vec::new();
        // Fixed point over label conditions; each round can only add rules (conditions are
        // positive), so it ends within rules.len() + 1 rounds.
        for _ in 0..=self.rules.len() {
            let seen: BTreeSet<String> = current.union(&wanted).cloned().collect();
            matched = self.rules.iter().filter(|r| r.matches(issue, &seen)).collect();
            let next = self.labels_of(&matched);
            if next == wanted {
                break;
            }
            wanted = next;
        }
        let mut plan =
            Plan { rules: matched.iter().map(|r| r.config.name.clone()).collect(), labels: wanted, ..Plan::default() };
        for r in &matched {
            plan.assignees.extend(r.config.assignees.iter().cloned());
            if plan.category.is_none() {
                plan.category.clone_from(&r.config.category);
            }
            if plan.house.is_none() {
                plan.house = r.config.house.or_else(|| r.config.category.as_deref().and_then(default_house));
            }
        }
        if let Some(template) = matched.iter().find_map(|r| r.config.comment.as_ref()) {
            plan.comment = Some(render(template, &plan, issue));
        }
        plan
    }

    fn labels_of(&self, matched: &[&Compiled]) -> BTreeSet<String> {
        let mut labels = BTreeSet::new();
        let mut category = None;
        let mut house = None;
        for r in matched {
            labels.extend(r.config.labels.iter().cloned());
            category = category.or(r.config.category.as_deref());
            house = house.or(r.config.house).or_else(|| r.config.category.as_deref().and_then(default_house));
        }
        if self.house_labels {
            if let Some(c) = category {
                labels.insert(format!("category/{}", c.to_ascii_lowercase()));
            }
            if let Some(h) = house {
                labels.insert(house_label(h));
            }
        }
        labels
    }
}

/// The label that marks an issue routed to `house`, e.g. `house/bezalel`.
pub fn house_label(house: House) -> String {
    format!("house/{house}")
}

impl Compiled {
    fn matches(&self, issue: &Issue, labels: &BTreeSet<String>) -> bool {
        let w = &self.config.when;
        let texts = || {
            w.fields.iter().map(move |f| match f {
                Field::Title => issue.title.as_str(),
                Field::Body => issue.body.as_str(),
            })
        };
        if let Some(re) = &self.text
            && !texts().any(|t| re.is_match(t))
        {
            return false;
        }
        if let Some(re) = &self.regex
            && !texts().any(|t| re.is_match(t))
        {
            return false;
        }
        if !w.labels.iter().all(|l| labels.contains(l)) {
            return false;
        }
        if !w.authors.is_empty() && !w.authors.iter().any(|a| a.eq_ignore_ascii_case(&issue.user.login)) {
            return false;
        }
        true
    }
}

fn render(template: &str, plan: &Plan, issue: &Issue) -> String {
    let labels: Vec<&str> = plan.labels.iter().map(String::as_str).collect();
    let vars: BTreeMap<&str, String> = [
        ("house", plan.house.map(|h| h.to_string()).unwrap_or_else(|| "-".into())),
        ("category", plan.category.clone().unwrap_or_else(|| "-".into())),
        ("labels", labels.join(", ")),
        ("author", issue.user.login.clone()),
        ("number", issue.number.to_string()),
        ("rules", plan.rules.join(", ")),
    ]
    .into_iter()
    .collect();
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}').map(|end| (&after[..end], end)) {
            Some((name, end)) if vars.contains_key(name) => {
                out.push_str(&vars[name]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use uni_wizard::gitea::{Label, User};

    fn issue(title: &str, body: &str, labels: &[&str]) -> Issue {
        Issue {
            number: 7,
            title: title.into(),
            body: body.into(),
            state: "open".into(),
            labels: labels.iter().map(|l| Label { name: (*l).into(), ..Label::default() }).collect(),
            user: User { login: "alice".into(), ..User::default() },
            ..Issue::default()
        }
    }

    fn rules(yaml: &str) -> Rules {
        let configs: Vec<RuleConfig> = serde_yaml::from_str(yaml).expect("rules parse");
        Rules::compile(&configs, true).expect("rules compile")
    }

    const YAML: &str = "
- name: bug
  match: {keywords: [crash, panic]}
  labels: [kind/bug]
  category: bug
  comment: 'Triage: {category} for {house} ({labels}), by {author} #{number} {unknown}'
- name: docs
  match: {regex: '(?i)\\bdocs?\\b', fields: [title]}
  category: docs
- name: follow-bug
  match: {labels: [kind/bug]}
  assignees: [bob]
";

    /// Proves keywords match whole words only, case-insensitively, and pick house and labels.
    #[test]
    fn keywords_pick_category_house_and_labels() {
        let r = rules(YAML);
        let p = r.plan(&issue("App CRASHES?", "it crash-ed", &[]));
        assert_eq!(p.rules, vec!["bug", "follow-bug"], "`crash-ed` holds the word crash");
        assert_eq!(p.house, Some(House::Bezalel));
        assert!(
            p.labels.contains("kind/bug") && p.labels.contains("house/bezalel") && p.labels.contains("category/bug")
        );
        assert_eq!(p.assignees.iter().collect::<Vec<_>>(), vec!["bob"]);
        let none = r.plan(&issue("crashes", "crashing", &[]));
        assert!(none.is_empty(), "no whole word: {none:?}");
    }

    /// Proves the plan of an issue already carrying its labels equals the first plan (fixed point).
    #[test]
    fn plan_is_stable_after_its_labels_are_applied() {
        let r = rules(YAML);
        let first = r.plan(&issue("panic on start", "", &[]));
        let labels: Vec<&str> = first.labels.iter().map(String::as_str).collect();
        let again = r.plan(&issue("panic on start", "", &labels));
        assert_eq!(first, again);
        assert_eq!(first.fingerprint(), again.fingerprint());
    }

    /// Proves the comment template fills known placeholders and leaves unknown ones.
    #[test]
    fn comment_template_renders() {
        let p = rules(YAML).plan(&issue("panic", "", &[]));
        assert_eq!(
            p.comment.as_deref(),
            Some("Triage: bug for bezalel (category/bug, house/bezalel, kind/bug), by alice #7 {unknown}")
        );
    }

    /// Proves regex fields, authors and an unknown category without a house are handled.
    #[test]
    fn regex_fields_authors_and_bad_rules() {
        let r = rules(YAML);
        assert_eq!(r.plan(&issue("Update docs", "", &[])).house, Some(House::Ezra));
        assert!(r.plan(&issue("other", "the docs", &[])).is_empty(), "regex only on the title");
        let by: Vec<RuleConfig> =
            serde_yaml::from_str("- {name: a, match: {authors: [BOB]}, category: critical}").expect("parse");
        let by = Rules::compile(&by, true).expect("compile");
        assert!(by.plan(&issue("x", "", &[])).is_empty());
        let mut bob = issue("x", "", &[]);
        bob.user.login = "bob".into();
        assert_eq!(by.plan(&bob).house, Some(House::Timmy));
        let bad: Vec<RuleConfig> = serde_yaml::from_str("- {name: a, category: misc}").expect("parse");
        assert!(Rules::compile(&bad, true).is_err());
        let bad: Vec<RuleConfig> = serde_yaml::from_str("- {name: a, match: {regex: '('}}").expect("parse");
        assert_eq!(Rules::compile(&bad, true).err().map(|e| e.0).as_deref(), Some("rules.0.match.regex"));
        assert!(serde_yaml::from_str::<Vec<RuleConfig>>("- {name: a, colour: red}").is_err(), "unknown field");
    }
}
