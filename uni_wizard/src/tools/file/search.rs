//! `file_search`: lines matching a literal or a regular expression in files under the roots.
//!
//! The walk never follows symlinks; binary files (a NUL in the first 8 KiB) and files larger
//! than `max_file_bytes` are skipped and counted; matches and scanned files are bounded.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::confine::{open_beneath, regular_file};
use super::walk::{self, Flow, Kind, Limits};
use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::tools::file::{self, Roots};
use crate::tools::{ToolContext, TypedTool};

/// Longest line text returned for a match, in bytes; longer lines are cut.
pub const MAX_LINE_TEXT: usize = 512;

/// Arguments of `file_search`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// What to look for.
    pub query: String,
    /// Whether `query` is a regular expression (Rust `regex` syntax) rather than a literal.
    #[serde(default)]
    pub regex: bool,
    /// Whether case is ignored.
    #[serde(default)]
    pub case_insensitive: bool,
    /// Directory to search, relative to the first root or absolute under any root.
    #[serde(default = "dot")]
    pub path: String,
    /// Most matches to return.
    #[serde(default = "default_max_matches")]
    pub max_matches: u64,
    /// Files larger than this are skipped.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Whether to search names starting with `.`.
    #[serde(default)]
    pub include_hidden: bool,
}

fn dot() -> String {
    ".".into()
}
fn default_max_matches() -> u64 {
    200
}
fn default_max_file_bytes() -> u64 {
    4 * 1024 * 1024
}

/// One matching line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    /// File path relative to the root.
    pub path: String,
    /// 1-based line number.
    pub line: u64,
    /// 1-based byte column of the first match in the line.
    pub column: u64,
    /// The line (cut at 512 bytes).
    pub text: String,
}

/// Result of `file_search`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The absolute directory searched.
    pub path: String,
    /// Matches in walk order.
    pub matches: Vec<Match>,
    /// Files read.
    pub files_scanned: u64,
    /// Files skipped as binary or too large.
    pub files_skipped: u64,
    /// Whether `max_matches` cut the search short.
    pub truncated: bool,
}

/// The `file_search` tool.
#[derive(Debug)]
pub struct FileSearch;

impl TypedTool for FileSearch {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "file_search",
            category: Category::File,
            description: "Search text files under the configured roots for a literal or regular expression; returns matching lines.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "minLength": 1, "maxLength": 1024},
                    "regex": {"type": "boolean", "default": false},
                    "case_insensitive": {"type": "boolean", "default": false},
                    "path": file::schema::dir_path(),
                    "max_matches": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 200},
                    "max_file_bytes": {"type": "integer", "minimum": 1, "maximum": 67108864, "default": 4194304},
                    "include_hidden": {"type": "boolean", "default": false}
                },
                "required": ["query"],
                "additionalProperties": false
            }),
            output_schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "matches": {"type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "string"},
                            "line": {"type": "integer", "minimum": 1},
                            "column": {"type": "integer", "minimum": 1},
                            "text": {"type": "string"}
                        },
                        "required": ["path", "line", "column", "text"],
                        "additionalProperties": false
                    }},
                    "files_scanned": {"type": "integer", "minimum": 0},
                    "files_skipped": {"type": "integer", "minimum": 0},
                    "truncated": {"type": "boolean"}
                },
                "required": ["path", "matches", "files_scanned", "files_skipped", "truncated"],
                "additionalProperties": false
            }),
            annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: false },
            risk: Risk::Low,
            default_timeout: Duration::from_secs(60),
            dry_run: false,
            content_guard: false,
        }
    }

    fn target(args: &Value) -> String {
        file::dir_target(args)
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        file::blocking(ctx, "file_search", move |roots| search(roots, &input)).await
    }
}

fn matcher(input: &Input) -> Result<Regex> {
    let pattern = if input.regex { input.query.clone() } else { regex::escape(&input.query) };
    RegexBuilder::new(&pattern).case_insensitive(input.case_insensitive).size_limit(1 << 20).build().map_err(|e| {
        Error::new(ErrorCode::InvalidArguments, format!("file_search: `query` is not a valid regular expression: {e}"))
            .with_details(json!({ "field": "query", "problem": e.to_string() }))
    })
}

/// Searches beneath the roots (blocking).
///
/// # Errors
/// E1003 for an invalid regular expression, E2008 outside the roots, E3006 missing.
pub fn search(roots: &Roots, input: &Input) -> Result<Output> {
    let re = matcher(input)?;
    let start = roots.resolve(&input.path)?;
    let limits = Limits { max_depth: 64, include_hidden: input.include_hidden };
    let max = input.max_matches.clamp(1, 10_000) as usize;
    let mut out = Output {
        path: roots.display(&start).display().to_string(),
        matches: Vec::new(),
        files_scanned: 0,
        files_skipped: 0,
        truncated: false,
    };
    let mut buf = Vec::new();
    walk::walk(roots, &start, limits, &mut |e| {
        if e.kind != Kind::File {
            return Ok(Flow::Continue);
        }
        // Non-blocking, so a file swapped for a FIFO after the listing cannot hang the walk;
        // then only regular files with one link (or links allowed) are read.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK;
        let Some(fd) = open_beneath(e.dir, Path::new(e.name), flags, Mode::empty())
            .ok()
            .filter(|fd| regular_file(fd, &e.rel, roots.hard_links_allowed()).is_ok())
        else {
            out.files_skipped += 1;
            return Ok(Flow::Continue);
        };
        buf.clear();
        let read = std::fs::File::from(fd).take(input.max_file_bytes + 1).read_to_end(&mut buf);
        if read.is_err() || buf.len() as u64 > input.max_file_bytes || buf[..buf.len().min(8192)].contains(&0) {
            out.files_skipped += 1;
            return Ok(Flow::Continue);
        }
        out.files_scanned += 1;
        let text = String::from_utf8_lossy(&buf);
        for (i, line) in text.lines().enumerate() {
            if let Some(m) = re.find(line) {
                if out.matches.len() >= max {
                    out.truncated = true;
                    return Ok(Flow::Stop);
                }
                let mut cut = line.len().min(MAX_LINE_TEXT);
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.matches.push(Match {
                    path: e.rel.display().to_string(),
                    line: i as u64 + 1,
                    column: m.start() as u64 + 1,
                    text: line[..cut].to_owned(),
                });
            }
        }
        Ok(Flow::Continue)
    })?;
    Ok(out)
}
