//! The JSON-schema fragments the git tools share, so a field every git tool takes is stated
//! once and means the same in each contract.

use serde_json::{Value, json};

use super::DEFAULT_REMOTE;

/// The pattern of a full commit id: SHA-1 (40 hex digits) or SHA-256 (64).
pub const OBJECT_ID: &str = "^[0-9a-f]{40}([0-9a-f]{24})?$";

/// `repo_path`, the repository every git tool acts on (all six).
pub fn repo_path() -> Value {
    json!({"type": "string", "minLength": 1, "description": "Absolute path of the repository. Not confined to the file roots."})
}

/// `remote`, a configured remote's name, [`DEFAULT_REMOTE`] when absent (`git_pull`,
/// `git_push`).
pub fn remote() -> Value {
    json!({"type": "string", "minLength": 1, "pattern": "^[^-]", "default": DEFAULT_REMOTE, "description": "Name of a configured remote (not a URL). Must not start with `-`."})
}

/// `expected_sha256`, the read-before-write guard of the mutating git tools (`git_pull`,
/// `git_commit`, `git_push`): `git_status`'s `state_sha256`.
pub fn expected_sha256() -> Value {
    json!({"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "state_sha256 from git_status; refused (E2005) if the repository changed since."})
}

/// A revision, branch or path git must never read as an option: non-empty, not starting
/// with `-` (`git_log`'s `ref` and `path`, `git_diff`'s `base` and `head`, the `branch` of
/// `git_pull` and `git_push`). The tools refuse such a value again at run time
/// ([`super::refuse_option`]) and put `--end-of-options` or `--` before it.
pub fn not_an_option(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "pattern": "^[^-]", "description": description})
}

/// `paths`, literal paths none of which may start with `-` (`git_diff`, `git_commit`).
pub fn paths(description: &str) -> Value {
    json!({
        "type": "array",
        "maxItems": 1000,
        "items": {"type": "string", "minLength": 1, "pattern": "^[^-]"},
        "description": description
    })
}
