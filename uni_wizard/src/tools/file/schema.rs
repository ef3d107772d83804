//! The JSON-schema fragments the file tools share.

use serde_json::{Value, json};

/// `path`, one file or directory under the roots (`file_read`, `file_write`).
pub fn path() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 4096, "description": "Relative to the first root, or absolute under any root."})
}

/// `path` of the tools that walk a directory (`file_list`, `file_search`): as [`path`], the
/// first root (`.`) when absent.
pub fn dir_path() -> Value {
    let mut p = path();
    p["default"] = json!(".");
    p
}
