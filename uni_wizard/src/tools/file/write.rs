//! `file_write`: replace (or create) one file under the roots, atomically.
//!
//! The new content goes to a temporary file in the same directory, is flushed to disk, and is
//! renamed over the target, so a reader sees the old file or the new one and never half of
//! either. With `expected_sha256` the write happens only if the file still has the content
//! that was read (`absent` when it must not exist yet); otherwise it is refused with E2005 and
//! the file is untouched.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::confine::{errno_error, open_beneath, regular_file, split_name};
use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::hash::sha256_hex;
use crate::tools::file::{self, Roots};
use crate::tools::{ToolContext, TypedTool, arg_str};

/// Largest content accepted, in bytes.
pub const MAX_CONTENT_BYTES: usize = 16 * 1024 * 1024;

/// The `expected_sha256` value meaning "the file must not exist yet".
pub const ABSENT: &str = "absent";

/// Arguments of `file_write`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Path, relative to the first root or absolute under any root.
    pub path: String,
    /// The new content, as UTF-8 text.
    pub content: String,
    /// SHA-256 of the content the caller read, or `absent`; the write is refused if it differs.
    #[serde(default)]
    pub expected_sha256: Option<String>,
    /// Whether a file that does not exist may be created.
    #[serde(default = "yes")]
    pub create: bool,
}

fn yes() -> bool {
    true
}

/// Result of `file_write`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The absolute path written.
    pub path: String,
    /// Bytes written (or that would be written, on a dry run).
    pub bytes: u64,
    /// Whether the file did not exist before.
    pub created: bool,
    /// SHA-256 of the previous content, `null` when there was none.
    pub previous_sha256: Option<String>,
    /// SHA-256 of the new content.
    pub sha256: String,
    /// Whether the content is the same as before (nothing needed changing).
    pub unchanged: bool,
    /// Whether this was a dry run (nothing was written).
    pub dry_run: bool,
}

/// The `file_write` tool.
#[derive(Debug)]
pub struct FileWrite;

impl TypedTool for FileWrite {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "file_write",
            category: Category::File,
            description: "Atomically replace or create one file under the configured roots, optionally only if it still has the content that was read.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "path": file::schema::path(),
                    "content": {"type": "string", "maxLength": MAX_CONTENT_BYTES},
                    "expected_sha256": {"type": "string", "pattern": "^([0-9a-f]{64}|absent)$", "description": "SHA-256 of the content read, or `absent`."},
                    "create": {"type": "boolean", "default": true}
                },
                "required": ["path", "content"],
                "additionalProperties": false
            }),
            output_schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "bytes": {"type": "integer", "minimum": 0},
                    "created": {"type": "boolean"},
                    "previous_sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "unchanged": {"type": "boolean"},
                    "dry_run": {"type": "boolean"}
                },
                "required": ["path", "bytes", "created", "previous_sha256", "sha256", "unchanged", "dry_run"],
                "additionalProperties": false
            }),
            annotations: Annotations { read_only: false, destructive: true, idempotent: true, open_world: false },
            risk: Risk::Medium,
            default_timeout: Duration::from_secs(30),
            dry_run: true,
            content_guard: true,
        }
    }

    fn target(args: &Value) -> String {
        arg_str(args, "path").to_owned()
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        let dry_run = ctx.dry_run;
        file::blocking(ctx, "file_write", move |roots| write(roots, &input, dry_run)).await
    }
}

/// Writes a file beneath the roots (blocking).
///
/// # Errors
/// E2008 outside the roots, E2005 when `expected_sha256` no longer matches, E3006 when the
/// directory is missing or the file is missing and `create` is false, E3003 for I/O failures.
pub fn write(roots: &Roots, input: &Input, dry_run: bool) -> Result<Output> {
    if input.content.len() > MAX_CONTENT_BYTES {
        return Err(Error::new(
            ErrorCode::InvalidArguments,
            format!("content is larger than {MAX_CONTENT_BYTES} bytes"),
        )
        .with_details(json!({ "field": "content", "limit": MAX_CONTENT_BYTES })));
    }
    let r = roots.resolve(&input.path)?;
    let shown = roots.display(&r);
    let shown_s = shown.display().to_string();
    let (parent, name) = split_name(&r.rel)?;
    let parent_r = super::confine::Resolved { root: r.root, rel: parent };
    let dir = roots.open(&parent_r, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;

    // What is there now: a regular file, nothing, or something we refuse to replace.
    let existing = match rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Some(st),
        Err(rustix::io::Errno::NOENT) => None,
        Err(e) => return Err(errno_error(&shown, e)),
    };
    let (previous, mode) = match existing {
        None => (None, Mode::from_raw_mode(0o644)),
        Some(st) => {
            let ft = FileType::from_raw_mode(st.st_mode);
            if ft == FileType::Symlink {
                // Find out whether it leads out (E2008) before refusing to replace a link. O_PATH
                // resolves without opening what is there, so a FIFO or device never blocks it.
                roots.open(&r, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
                return Err(Error::new(
                    ErrorCode::ToolFailed,
                    format!("{shown_s} is a symlink; write to its target instead"),
                )
                .with_details(json!({ "path": shown_s })));
            }
            if ft != FileType::RegularFile {
                return Err(Error::new(ErrorCode::ToolFailed, format!("{shown_s} is not a regular file"))
                    .with_details(json!({ "path": shown_s })));
            }
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK;
            let fd =
                open_beneath(dir.as_fd(), name.as_ref(), flags, Mode::empty()).map_err(|e| errno_error(&shown, e))?;
            let st = regular_file(&fd, &shown, roots.hard_links_allowed())?;
            let mut old = Vec::new();
            std::fs::File::from(fd).read_to_end(&mut old).map_err(|e| Error::from_io(format!("read {shown_s}"), &e))?;
            // The permission bits only: a replacement never inherits setuid, setgid or sticky
            // (a setuid file of another user would otherwise become ours, setuid, with new content).
            (Some(sha256_hex(&old)), Mode::from_raw_mode(st.st_mode & 0o777))
        }
    };

    if let Some(expected) = &input.expected_sha256 {
        let actual = previous.as_deref().unwrap_or(ABSENT);
        if expected != actual {
            return Err(Error::new(
                ErrorCode::StaleRead,
                format!("{shown_s} changed since it was read; read it again and retry"),
            )
            .with_details(json!({ "path": shown_s, "expected_sha256": expected, "actual_sha256": actual })));
        }
    }
    if previous.is_none() && !input.create {
        return Err(Error::new(ErrorCode::NotFound, format!("{shown_s} does not exist and create is false"))
            .with_details(json!({ "path": shown_s })));
    }

    let sha256 = sha256_hex(input.content.as_bytes());
    let unchanged = previous.as_deref() == Some(sha256.as_str());
    let output = Output {
        path: shown_s.clone(),
        bytes: input.content.len() as u64,
        created: previous.is_none(),
        previous_sha256: previous,
        sha256,
        unchanged,
        dry_run,
    };
    if dry_run || unchanged {
        return Ok(output);
    }

    let tmp_name = format!(".{}.uw-{:08x}.tmp", name.to_string_lossy(), rand::random::<u32>());
    let tmp = rustix::fs::openat(
        dir.as_fd(),
        tmp_name.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        mode,
    )
    .map_err(|e| errno_error(&shown, e))?;
    let result = (|| {
        let mut f = std::fs::File::from(tmp);
        f.write_all(input.content.as_bytes())?;
        f.sync_all()?;
        rustix::fs::renameat(dir.as_fd(), tmp_name.as_str(), dir.as_fd(), name)?;
        rustix::fs::fsync(dir.as_fd())?;
        Ok::<(), std::io::Error>(())
    })();
    if let Err(e) = result {
        let _ = rustix::fs::unlinkat(dir.as_fd(), tmp_name.as_str(), AtFlags::empty());
        return Err(Error::from_io(format!("write {shown_s}"), &e));
    }
    Ok(output)
}
