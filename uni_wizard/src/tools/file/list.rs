//! `file_list`: the entries of a directory under the roots, optionally recursive.
//!
//! Symlinks are listed as `symlink` and never followed, so a listing cannot wander out of
//! its root; the walk is bounded by depth and entry count.

use std::os::fd::AsFd;
use std::time::Duration;

use rustix::fs::AtFlags;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::walk::{self, Flow, Kind, Limits};
use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::Result;
use crate::tools::file::{self, Roots};
use crate::tools::{ToolContext, TypedTool};

/// Most entries a caller may ask for.
pub const MAX_ENTRIES_LIMIT: u64 = 100_000;

/// Arguments of `file_list`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Directory, relative to the first root or absolute under any root.
    #[serde(default = "dot")]
    pub path: String,
    /// Whether to descend into subdirectories.
    #[serde(default)]
    pub recursive: bool,
    /// Deepest level when recursive (1 = the directory's own entries).
    #[serde(default = "default_depth")]
    pub max_depth: u64,
    /// Most entries to return.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// Whether to include names starting with `.`.
    #[serde(default = "yes")]
    pub include_hidden: bool,
}

fn dot() -> String {
    ".".into()
}
fn default_depth() -> u64 {
    16
}
fn default_max_entries() -> u64 {
    1000
}
fn yes() -> bool {
    true
}

/// One listed entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListEntry {
    /// Path relative to the listed directory's root.
    pub path: String,
    /// Final name.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: Kind,
    /// Size in bytes (of the link itself for a symlink).
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch.
    pub modified_ms: i64,
}

/// Result of `file_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The absolute directory listed.
    pub path: String,
    /// The root the paths are relative to.
    pub root: String,
    /// Entries in walk order (names sorted within each directory).
    pub entries: Vec<ListEntry>,
    /// Whether `max_entries` cut the listing short.
    pub truncated: bool,
}

/// The `file_list` tool.
#[derive(Debug)]
pub struct FileList;

impl TypedTool for FileList {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "file_list",
            category: Category::File,
            description: "List a directory under the configured roots, optionally recursively; symlinks are shown, never followed.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "path": file::schema::dir_path(),
                    "recursive": {"type": "boolean", "default": false},
                    "max_depth": {"type": "integer", "minimum": 1, "maximum": 64, "default": 16},
                    "max_entries": {"type": "integer", "minimum": 1, "maximum": MAX_ENTRIES_LIMIT, "default": 1000},
                    "include_hidden": {"type": "boolean", "default": true}
                },
                "additionalProperties": false
            }),
            output_schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "root": {"type": "string"},
                    "entries": {"type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "string"},
                            "name": {"type": "string"},
                            "kind": {"enum": ["file", "dir", "symlink", "other"]},
                            "size": {"type": "integer", "minimum": 0},
                            "modified_ms": {"type": "integer"}
                        },
                        "required": ["path", "name", "kind", "size", "modified_ms"],
                        "additionalProperties": false
                    }},
                    "truncated": {"type": "boolean"}
                },
                "required": ["path", "root", "entries", "truncated"],
                "additionalProperties": false
            }),
            annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: false },
            risk: Risk::Low,
            default_timeout: Duration::from_secs(30),
            dry_run: false,
            content_guard: false,
        }
    }

    fn target(args: &Value) -> String {
        file::dir_target(args)
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        file::blocking(ctx, "file_list", move |roots| list(roots, &input)).await
    }
}

/// Lists a directory beneath the roots (blocking).
///
/// # Errors
/// E2008 outside the roots, E3006 missing, E3003 when not a directory.
pub fn list(roots: &Roots, input: &Input) -> Result<Output> {
    let start = roots.resolve(&input.path)?;
    let limits = Limits {
        max_depth: if input.recursive { input.max_depth.clamp(1, 64) as usize } else { 1 },
        include_hidden: input.include_hidden,
    };
    let max = input.max_entries.clamp(1, MAX_ENTRIES_LIMIT) as usize;
    let mut entries = Vec::new();
    let mut truncated = false;
    walk::walk(roots, &start, limits, &mut |e| {
        if entries.len() >= max {
            truncated = true;
            return Ok(Flow::Stop);
        }
        let (size, modified_ms) = rustix::fs::statat(e.dir.as_fd(), e.name, AtFlags::SYMLINK_NOFOLLOW)
            .map_or((0, 0), |st| (st.st_size.max(0) as u64, st.st_mtime * 1000 + st.st_mtime_nsec as i64 / 1_000_000));
        entries.push(ListEntry {
            path: e.rel.display().to_string(),
            name: e.name.to_string_lossy().into_owned(),
            kind: e.kind,
            size,
            modified_ms,
        });
        Ok(Flow::Continue)
    })?;
    Ok(Output {
        path: roots.display(&start).display().to_string(),
        root: roots.root_path(start.root).display().to_string(),
        entries,
        truncated,
    })
}
