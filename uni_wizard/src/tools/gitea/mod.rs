//! The Gitea tools: three thin tools over the [`Gitea`](crate::gitea::Gitea) client of
//! [`crate::gitea`], which holds the client, its API types, its config and how Gitea's answers
//! map to error codes.
//!
//! - [`list_issues`] is `gitea_list_issues`, read-only.
//! - [`update_issue`] is `gitea_update_issue`: labels (creating missing ones when asked),
//!   assignees, state and a comment on one issue; the triage daemon's one write.
//! - [`create_pr`] is `gitea_create_pr`.
//!
//! Shared here: the configured client ([`client`]), the targets breakers and provenance use
//! (`owner/repo`, or `owner/repo#N` for one issue), and in [`schema`] the `owner`/`repo`
//! fragment every Gitea tool takes.
//!
//! A tool called while no Gitea is configured (`ToolEnv.gitea` is `None`) fails with E4001
//! "gitea is not configured".

use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::{Error, ErrorCode, Result};
use crate::gitea::Gitea;
use crate::tools::ToolContext;

pub mod create_pr;
pub mod list_issues;
pub mod schema;
pub mod update_issue;

/// The configured client, or E4001 "gitea is not configured".
///
/// # Errors
/// E4001 when the harness was built without a Gitea client or a `gitea` config.
pub fn client(ctx: &ToolContext) -> Result<&Arc<dyn Gitea>> {
    ctx.env.gitea.as_ref().ok_or_else(|| {
        Error::new(ErrorCode::ConfigInvalid, "gitea is not configured").with_details(json!({ "field": "gitea" }))
    })
}

/// `owner/repo` from a call's arguments, for breakers and provenance; `(default)` stands for a
/// part left to the configured default.
pub fn target_of(args: &Value) -> String {
    let part = |k: &str| args.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("(default)");
    format!("{}/{}", part("owner"), part("repo"))
}

/// `owner/repo#N` from a call on one issue: the issue is what it changes, so its breaker and
/// its provenance name the issue, not the whole repository.
pub fn issue_target(args: &Value) -> String {
    match args.get("number").and_then(Value::as_u64) {
        Some(n) => format!("{}#{n}", target_of(args)),
        None => target_of(args),
    }
}

/// `s` cut to at most `max` characters, and whether it was cut.
pub fn truncate_chars(s: &str, max: usize) -> (String, bool) {
    match s.char_indices().nth(max) {
        Some((i, _)) => (s[..i].to_owned(), true),
        None => (s.to_owned(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves bodies are cut on a character boundary.
    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_chars("héllo", 2), ("hé".to_owned(), true));
        assert_eq!(truncate_chars("hi", 5), ("hi".to_owned(), false));
    }

    /// Proves a call on one issue targets `owner/repo#N`, and one without a number the repository.
    #[test]
    fn issue_calls_target_the_issue() {
        assert_eq!(issue_target(&json!({"owner": "uni", "repo": "fleet", "number": 7})), "uni/fleet#7");
        assert_eq!(issue_target(&json!({"number": 7})), "(default)/(default)#7");
        assert_eq!(issue_target(&json!({"owner": "uni", "repo": "fleet"})), "uni/fleet");
    }
}
