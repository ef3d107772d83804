//! The JSON-schema fragments the Gitea tools share.

use serde_json::{Value, json};

use crate::gitea::NAME_PATTERN;

/// The `owner` and `repo` input properties every Gitea tool shares.
pub fn repo_properties() -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "owner".into(),
        json!({"type": "string", "pattern": NAME_PATTERN, "description": "Repository owner; the configured gitea.owner when absent."}),
    );
    m.insert(
        "repo".into(),
        json!({"type": "string", "pattern": NAME_PATTERN, "description": "Repository name; the configured gitea.repo when absent."}),
    );
    m
}
