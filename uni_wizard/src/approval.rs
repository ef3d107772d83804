//! Approvals: Timmy decides.
//!
//! A call that policy says needs approval asks an [`Approver`]. Whatever the approver is (a
//! prompt, a signed token, a remote service), the harness itself checks what comes back: the
//! approver must be Timmy, and the approval must name this tool and these exact arguments.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, ErrorCode, Result};
use crate::future::BoxFuture;
use crate::house::{House, Mode};

/// Timmy's approval of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The approving house; only Timmy is accepted.
    pub approver: House,
    /// The tool approved.
    pub tool: String,
    /// [`args_sha256`] of the arguments approved.
    pub args_sha256: String,
    /// Free text recorded in provenance.
    #[serde(default)]
    pub note: String,
    /// The nonce of the signed token behind this approval, when there was one: recorded in the
    /// chain, so `audit verify` sees a token used twice, or a spent-token row removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// What an approver is asked.
#[derive(Clone, Serialize)]
pub struct ApprovalRequest {
    /// The request awaiting approval.
    pub request_id: String,
    /// The house asking.
    pub house: House,
    /// The harness mode.
    pub mode: Mode,
    /// The node the call runs on (a token names the node it may be used on).
    pub node: String,
    /// The tool.
    pub tool: String,
    /// Arguments with secrets redacted: what people and logs see.
    pub args: Value,
    /// The arguments as the call runs them, secrets included, so that Timmy can check
    /// `args_sha256` against what he is shown (sent only to Timmy, over the fleet's TLS).
    /// Never shown, logged, stored or serialised; `Debug` leaves it out.
    #[serde(skip)]
    pub call_args: Value,
    /// [`args_sha256`] of the arguments (every value); an approval must name it.
    pub args_sha256: String,
    /// Why approval is needed.
    pub reason: String,
    /// A signed approval token the caller brought (see [`crate::tokens`]); never serialised.
    #[serde(skip)]
    pub token: Option<String>,
}

impl std::fmt::Debug for ApprovalRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalRequest")
            .field("request_id", &self.request_id)
            .field("house", &self.house)
            .field("mode", &self.mode)
            .field("node", &self.node)
            .field("tool", &self.tool)
            .field("args", &self.args)
            .field("args_sha256", &self.args_sha256)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// Something that can obtain Timmy's decision on a call.
pub trait Approver: Send + Sync + 'static {
    /// Asks for approval.
    ///
    /// # Errors
    /// E2002 when approval is refused or cannot be obtained.
    fn approve<'a>(&'a self, request: &'a ApprovalRequest) -> BoxFuture<'a, Result<Approval>>;
}

/// The default approver: approves nothing, so calls that need approval fail closed.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

impl Approver for DenyAll {
    fn approve<'a>(&'a self, request: &'a ApprovalRequest) -> BoxFuture<'a, Result<Approval>> {
        Box::pin(async move {
            Err(Error::new(
                ErrorCode::ApprovalRequired,
                format!("{} needs Timmy's approval ({}) and no approver is configured", request.tool, request.reason),
            )
            .with_details(
                json!({ "tool": request.tool, "reason": request.reason, "args_sha256": request.args_sha256 }),
            ))
        })
    }
}

/// Checks that an approval really approves this request.
///
/// # Errors
/// E2003 when the approver is not Timmy or the approval names another tool or arguments.
pub fn verify(approval: &Approval, request: &ApprovalRequest) -> Result<()> {
    let invalid = |why: &str| {
        Err(Error::new(ErrorCode::ApprovalInvalid, format!("approval refused: {why}"))
            .with_details(json!({ "reason": why, "approver": approval.approver, "tool": request.tool })))
    };
    if approval.approver != House::Timmy {
        return invalid("only Timmy approves");
    }
    if approval.tool != request.tool {
        return invalid("it approves another tool");
    }
    if approval.args_sha256 != request.args_sha256 {
        return invalid("it approves other arguments");
    }
    Ok(())
}

/// Field names whose values are secrets: redacted before hashing, logging or asking.
pub fn is_secret_field(name: &str) -> bool {
    const SECRET: [&str; 8] =
        ["token", "password", "secret", "authorization", "api_key", "apikey", "private_key", "cookie"];
    let n = name.as_bytes();
    SECRET.iter().any(|s| n.windows(s.len()).any(|w| w.eq_ignore_ascii_case(s.as_bytes())))
}

/// A copy of `args` with secret fields replaced by `"[redacted]"`, at any depth.
pub fn redact(args: &Value) -> Value {
    match args {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_field(k) { Value::String("[redacted]".into()) } else { redact(v) };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// SHA-256 of the canonical JSON of the arguments (object keys sorted), **every value
/// included**: what an approval binds and provenance records.
///
/// Secret-named values are hashed too. A hash reveals nothing of them, and leaving them out
/// would let a token signed for `{"password_reset": {"user": "bob"}}` approve
/// `{"password_reset": {"user": "admin", ...}}`. Redaction ([`redact`]) is for what people
/// and logs read, never for what a signature binds. serde_json's map is ordered by key (no
/// `preserve_order`), so the text is canonical.
pub fn args_sha256(args: &Value) -> String {
    crate::hash::sha256_value(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ApprovalRequest {
        ApprovalRequest {
            request_id: "r".into(),
            house: House::Allegro,
            mode: Mode::Sovereign,
            node: "n1".into(),
            tool: "file_write".into(),
            args: json!({}),
            call_args: json!({"path": "a"}),
            args_sha256: args_sha256(&json!({"path": "a"})),
            reason: "test".into(),
            token: None,
        }
    }

    /// Proves only Timmy's approval of the same tool and arguments passes verification.
    #[test]
    fn only_timmy_approving_these_arguments_passes() {
        let req = request();
        let good = Approval {
            approver: House::Timmy,
            tool: "file_write".into(),
            args_sha256: req.args_sha256.clone(),
            note: String::new(),
            nonce: None,
        };
        assert!(verify(&good, &req).is_ok());
        for bad in [
            Approval { approver: House::Allegro, ..good.clone() },
            Approval { tool: "file_read".into(), ..good.clone() },
            Approval { args_sha256: args_sha256(&json!({"path": "b"})), ..good.clone() },
        ] {
            assert_eq!(verify(&bad, &req).map_err(|e| e.code), Err(ErrorCode::ApprovalInvalid));
        }
    }

    /// Proves the hash is canonical (key order does not change it) and covers every value,
    /// secret-named ones and nested objects under secret-named keys included (issue 15,
    /// defect 6), while [`redact`] still hides secrets from what is shown.
    #[test]
    fn hashing_is_canonical_and_binds_every_value() {
        let a = json!({"b": 1, "a": {"auth_token": "s1", "x": [1, {"password": "p"}]}});
        let reordered = json!({"a": {"x": [1, {"password": "p"}], "auth_token": "s1"}, "b": 1});
        assert_eq!(args_sha256(&a), args_sha256(&reordered));
        let other_secret = json!({"a": {"x": [1, {"password": "other"}], "auth_token": "s1"}, "b": 1});
        assert_ne!(args_sha256(&a), args_sha256(&other_secret));
        let signed = json!({"password_reset": {"user": "bob"}});
        let sent = json!({"password_reset": {"user": "admin", "new_password": "x"}});
        assert_ne!(args_sha256(&signed), args_sha256(&sent));
        assert!(!redact(&a).to_string().contains("s1"));
        assert_eq!(args_sha256(&a), crate::hash::sha256_hex(a.to_string().as_bytes()));
    }
}
