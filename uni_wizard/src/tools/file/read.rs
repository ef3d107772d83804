//! `file_read`: the contents of one file under the roots, with its SHA-256.
//!
//! The hash covers the whole file even when the content returned is cut at `max_bytes`, so
//! it is the `expected_sha256` a later `file_write` can cite (Ezra reads before it writes).

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, Result};
use crate::tools::file::{self, Roots};
use crate::tools::{ToolContext, TypedTool, arg_str};

/// Largest `max_bytes` a caller may ask for.
pub const MAX_BYTES_LIMIT: u64 = 16 * 1024 * 1024;
/// `max_bytes` when none is given.
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;

/// Arguments of `file_read`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Path, relative to the first root or absolute under any root.
    pub path: String,
    /// Most bytes of content to return.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

/// Result of `file_read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The absolute path read.
    pub path: String,
    /// The content: UTF-8 text, or base64 when the bytes are not UTF-8.
    pub content: String,
    /// `utf8` or `base64`.
    pub encoding: &'static str,
    /// Size of the whole file in bytes.
    pub size: u64,
    /// SHA-256 (hex) of the whole file.
    pub sha256: String,
    /// Whether `content` stops at `max_bytes` before the end of the file.
    pub truncated: bool,
}

/// The `file_read` tool.
#[derive(Debug)]
pub struct FileRead;

impl TypedTool for FileRead {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "file_read",
            category: Category::File,
            description: "Read one file under the configured roots; returns its content and the SHA-256 of the whole file.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "path": file::schema::path(),
                    "max_bytes": {"type": "integer", "minimum": 0, "maximum": MAX_BYTES_LIMIT, "default": DEFAULT_MAX_BYTES}
                },
                "required": ["path"],
                "additionalProperties": false
            }),
            output_schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "content": {"type": "string"},
                    "encoding": {"enum": ["utf8", "base64"]},
                    "size": {"type": "integer", "minimum": 0},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "truncated": {"type": "boolean"}
                },
                "required": ["path", "content", "encoding", "size", "sha256", "truncated"],
                "additionalProperties": false
            }),
            annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: false },
            risk: Risk::Low,
            default_timeout: Duration::from_secs(10),
            dry_run: false,
            content_guard: false,
        }
    }

    fn target(args: &Value) -> String {
        arg_str(args, "path").to_owned()
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        file::blocking(ctx, "file_read", move |roots| read(roots, &input)).await
    }

    /// Moves the content into the value: up to 16 MiB that `to_value` would copy.
    fn into_value(o: Output) -> serde_json::Result<Value> {
        let mut m = serde_json::Map::new();
        m.insert("path".into(), Value::String(o.path));
        m.insert("content".into(), Value::String(o.content));
        m.insert("encoding".into(), Value::from(o.encoding));
        m.insert("size".into(), Value::from(o.size));
        m.insert("sha256".into(), Value::String(o.sha256));
        m.insert("truncated".into(), Value::Bool(o.truncated));
        Ok(Value::Object(m))
    }
}

/// Reads a file beneath the roots (blocking).
///
/// # Errors
/// E2008 outside the roots, E3006 missing, E3003 for a directory or other I/O failure.
pub fn read(roots: &Roots, input: &Input) -> Result<Output> {
    let r = roots.resolve(&input.path)?;
    let shown = roots.display(&r);
    let (mut file, st) = roots.open_file(&r)?;
    let cap = input.max_bytes.min(MAX_BYTES_LIMIT) as usize;
    let mut content = Vec::with_capacity(cap.min(st.st_size.max(0) as usize));
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from_io(format!("read {}", shown.display()), &e)),
        };
        hasher.update(&buf[..n]);
        let room = cap.saturating_sub(content.len()).min(n);
        content.extend_from_slice(&buf[..room]);
        size += n as u64;
    }
    let truncated = size > content.len() as u64;
    let (content, encoding) = match String::from_utf8(content) {
        Ok(s) => (s, "utf8"),
        // A cut may split a multi-byte character: fall back to base64 so nothing is mangled.
        Err(e) => (base64::engine::general_purpose::STANDARD.encode(e.as_bytes()), "base64"),
    };
    Ok(Output {
        path: shown.display().to_string(),
        content,
        encoding,
        size,
        sha256: hex::encode(hasher.finalize()),
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the moving conversion gives exactly what `serde_json::to_value` gives, field for
    /// field (a field added to `Output` and not to `into_value` fails here).
    #[test]
    fn into_value_is_to_value() {
        for (content, encoding, truncated) in [("héllo \"x\"\n", "utf8", false), ("AAEC/w==", "base64", true)] {
            let o = Output {
                path: "/srv/a b.txt".into(),
                content: content.into(),
                encoding,
                size: 12,
                sha256: "ab".repeat(32),
                truncated,
            };
            let want = serde_json::to_value(&o).expect("serialise");
            assert_eq!(FileRead::into_value(o).expect("convert"), want);
        }
    }
}
