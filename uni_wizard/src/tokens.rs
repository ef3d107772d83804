//! Signed approval tokens: Timmy's approval of one call, for unattended runs.
//!
//! A token is `base64url(claims JSON) "." base64url(ed25519 signature over those bytes)`. The
//! claims bind it to one tool, one argument hash (canonical, redacted: [`approval::args_sha256`])
//! and an expiry, and carry a random nonce. [`TokenApprover`] accepts a token only when the
//! signature is Timmy's (checked against his public key), it names this tool and these
//! arguments, it has not expired, and its nonce has never been spent in the audit store, where
//! it is then recorded, so a token works once, across processes.
//!
//! Keys: [`generate_key`] makes a key pair; the CLI writes it with `uni-wizard keygen` as
//! `timmy.key` (hex of the 32-byte secret seed, mode 0600) and `timmy.pub` (hex of the public
//! key), and signs with `uni-wizard approve --sign`.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::approval::{self, Approval, ApprovalRequest, Approver};
use crate::audit::AuditStore;
use crate::error::{Error, ErrorCode, Result};
use crate::houses::House;
use crate::provenance::now_ms;
use crate::tools::BoxFuture;

/// What a token approves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Format version, 1.
    pub v: u32,
    /// Always Timmy.
    pub approver: House,
    /// The tool approved.
    pub tool: String,
    /// SHA-256 of the canonical redacted arguments approved.
    pub args_sha256: String,
    /// Not valid at or after this time (ms since the Unix epoch).
    pub expires_ms: u64,
    /// Random, 32 hex digits; spent on first use.
    pub nonce: String,
}

impl Claims {
    /// Claims for `tool` with `args`, valid for `ttl_ms` from now, with a fresh nonce.
    pub fn new(tool: &str, args: &serde_json::Value, ttl_ms: u64) -> Claims {
        Claims {
            v: 1,
            approver: House::Timmy,
            tool: tool.to_owned(),
            args_sha256: approval::args_sha256(args),
            expires_ms: now_ms().saturating_add(ttl_ms),
            nonce: hex::encode(rand::random::<[u8; 16]>()),
        }
    }
}

/// A new random key pair.
pub fn generate_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

/// The key files' text for `key`: (hex of the secret seed, hex of the public key).
pub fn key_files(key: &SigningKey) -> (String, String) {
    (hex::encode(key.to_bytes()), hex::encode(key.verifying_key().to_bytes()))
}

fn key_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("{what}: {e}")).with_details(json!({ "field": what }))
}

/// Parses a signing key file's text: hex of the 32-byte seed.
///
/// # Errors
/// E4001 when it is not 64 hex digits.
pub fn parse_signing_key(text: &str) -> Result<SigningKey> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .map_err(|e| key_error("signing key", e))?
        .try_into()
        .map_err(|_| key_error("signing key", "expected 32 bytes"))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Parses a public key file's text: hex of the 32-byte key.
///
/// # Errors
/// E4001 when it is not a valid ed25519 public key.
pub fn parse_verifying_key(text: &str) -> Result<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .map_err(|e| key_error("public key", e))?
        .try_into()
        .map_err(|_| key_error("public key", "expected 32 bytes"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| key_error("public key", e))
}

/// Signs claims into a token.
pub fn sign(key: &SigningKey, claims: &Claims) -> String {
    // A struct of strings and integers always serialises.
    let body = serde_json::to_vec(claims).unwrap_or_default();
    let sig = key.sign(&body);
    format!("{}.{}", URL_SAFE_NO_PAD.encode(&body), URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn refused(why: &str) -> Error {
    Error::new(ErrorCode::ApprovalInvalid, format!("approval token refused: {why}"))
        .with_details(json!({ "reason": why }))
}

/// Checks a token's signature against `key` and returns its claims (expiry not checked).
///
/// # Errors
/// E2003 when the token is malformed or not signed by `key`.
pub fn open(key: &VerifyingKey, token: &str) -> Result<Claims> {
    let (body, sig) = token.trim().split_once('.').ok_or_else(|| refused("malformed token"))?;
    let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| refused("malformed token"))?;
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(sig)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| refused("malformed signature"))?;
    key.verify(&body, &Signature::from_bytes(&sig)).map_err(|_| refused("not signed by Timmy's key"))?;
    serde_json::from_slice(&body).map_err(|_| refused("malformed claims"))
}

/// Approves a call that carries a valid token signed by Timmy's key (see the module docs).
#[derive(Debug, Clone)]
pub struct TokenApprover {
    timmy: VerifyingKey,
    store: Arc<AuditStore>,
}

impl TokenApprover {
    /// An approver trusting `timmy`'s key and spending nonces in `store`.
    pub fn new(timmy: VerifyingKey, store: Arc<AuditStore>) -> TokenApprover {
        TokenApprover { timmy, store }
    }

    /// Checks `token` for `request` and spends it.
    ///
    /// # Errors
    /// E2003 when it is forged, for another tool or arguments, expired or already used;
    /// E3008 when the nonce cannot be recorded.
    pub fn check(&self, token: &str, request: &ApprovalRequest) -> Result<Approval> {
        let claims = open(&self.timmy, token)?;
        if claims.v != 1 || claims.approver != House::Timmy {
            return Err(refused("not an approval by Timmy"));
        }
        if claims.tool != request.tool {
            return Err(refused("it approves another tool"));
        }
        if claims.args_sha256 != request.args_sha256 {
            return Err(refused("it approves other arguments"));
        }
        if now_ms() >= claims.expires_ms {
            return Err(refused("expired"));
        }
        self.store.consume_nonce(
            &claims.nonce,
            &claims.tool,
            &claims.args_sha256,
            claims.expires_ms,
            &request.request_id,
        )?;
        Ok(Approval {
            approver: House::Timmy,
            tool: claims.tool,
            args_sha256: claims.args_sha256,
            note: format!("signed token {}", claims.nonce),
        })
    }
}

impl Approver for TokenApprover {
    fn approve<'a>(&'a self, request: &'a ApprovalRequest) -> BoxFuture<'a, Result<Approval>> {
        Box::pin(async move {
            match &request.token {
                Some(token) => self.check(token, request),
                None => Err(Error::new(
                    ErrorCode::ApprovalRequired,
                    format!(
                        "{} needs Timmy's approval ({}): pass a signed approval token",
                        request.tool, request.reason
                    ),
                )
                .with_details(
                    json!({ "tool": request.tool, "reason": request.reason, "args_sha256": request.args_sha256 }),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a token opens only with the signing key's public half, and any edit breaks it.
    #[test]
    fn tokens_open_only_with_the_right_key_and_unaltered() {
        let key = generate_key();
        let claims = Claims::new("file_write", &json!({"path": "a"}), 60_000);
        let token = sign(&key, &claims);
        assert_eq!(open(&key.verifying_key(), &token).ok(), Some(claims.clone()));
        assert!(open(&generate_key().verifying_key(), &token).is_err());
        let forged = Claims { tool: "git_push".into(), ..claims };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json"));
        let sig = token.split_once('.').map(|(_, s)| s).unwrap_or_default();
        let e = open(&key.verifying_key(), &format!("{body}.{sig}")).expect_err("forged");
        assert_eq!(e.code, ErrorCode::ApprovalInvalid);
    }

    /// Proves key files round-trip through their hex text.
    #[test]
    fn key_files_round_trip() {
        let key = generate_key();
        let (secret, public) = key_files(&key);
        assert_eq!(parse_signing_key(&secret).map(|k| k.to_bytes()).ok(), Some(key.to_bytes()));
        assert_eq!(parse_verifying_key(&public).ok(), Some(key.verifying_key()));
        assert_eq!(parse_verifying_key("abcd").map_err(|e| e.code).err(), Some(ErrorCode::ConfigInvalid));
    }
}
