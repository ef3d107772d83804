//! The file family: four tools confined to the configured roots, and what they share.
//!
//! - [`read`] is `file_read` (with the SHA-256 `file_write` checks), [`list`] is `file_list`,
//!   [`search`] is `file_search`: read-only.
//! - [`write`](mod@write) is `file_write`: atomic replace, guarded by `expected_sha256`.
//! - [`confine`]: the [`Roots`] and the `openat2(RESOLVE_BENEATH)` opens every path goes
//!   through; [`walk`]: the bounded directory walk of `file_list` and `file_search`.
//! - [`blocking`]: the one way a file tool runs its blocking body; [`schema`]: the `path`
//!   fragment all four take.

use serde_json::Value;

use crate::error::{Error, ErrorCode, Result};
use crate::tools::{ToolContext, arg_str};

pub mod confine;
pub mod list;
pub mod read;
pub mod schema;
pub mod search;
pub mod walk;
pub mod write;

pub use confine::Roots;

/// Runs a file tool's body on the blocking pool with the call's roots: the file tools open,
/// read and walk with blocking system calls, which must not stall the async workers.
///
/// # Errors
/// What `body` returns; E3003 naming `tool` when the blocking task ends abnormally.
pub async fn blocking<T: Send + 'static>(
    ctx: &ToolContext,
    tool: &'static str,
    body: impl FnOnce(&Roots) -> Result<T> + Send + 'static,
) -> Result<T> {
    let env = ctx.env.clone();
    tokio::task::spawn_blocking(move || body(&env.roots))
        .await
        .map_err(|e| Error::new(ErrorCode::ToolFailed, format!("{tool} worker failed: {e}")))?
}

/// The target of `file_list` and `file_search`, whose `path` may be absent: the path, or `.`
/// (the first root) without one.
pub fn dir_target(args: &Value) -> String {
    match arg_str(args, "path") {
        "" => ".".into(),
        p => p.to_owned(),
    }
}
