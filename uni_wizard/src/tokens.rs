//! Signed approval tokens: Timmy's approval of one call, for unattended runs.
//!
//! A token is `base64url(claims JSON) "." base64url(ed25519 signature over those bytes)`. The
//! claims (version 2) bind it to one house, one node (or, explicitly, any node: [`ANY_NODE`]),
//! one tool, one argument hash (canonical, every value: [`approval::args_sha256`]) and an
//! expiry, and carry a random nonce. [`TokenApprover`] accepts a token only when the signature
//! is Timmy's (checked against his public key), it names this house, this node, this tool and
//! these arguments, it has not expired, and its nonce has never been spent in the audit store,
//! where it is then recorded, so a token works once, across processes. The approval it gives
//! carries the nonce into the call's provenance record, so a token used twice after its
//! `used_tokens` row was deleted, or a deleted row, is named by `audit verify`.
//!
//! In a fleet a worker also spends the nonce at Timmy before the call runs (the daemons'
//! `RemoteApprover`, through a [`NonceSpender`]), so a token works once fleet-wide, whichever
//! node's audit store is copied or edited. Version-1 tokens (bound to no house or node) are
//! refused.
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
use crate::future::BoxFuture;
use crate::house::House;
use crate::provenance::now_ms;

/// The claims format this build signs and accepts.
pub const CLAIMS_VERSION: u32 = 2;

/// A token's `node` that lets it be used on any node (it must be asked for explicitly:
/// `uni-wizard approve --sign --any-node`).
pub const ANY_NODE: &str = "*";

/// What a token approves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Format version, [`CLAIMS_VERSION`].
    pub v: u32,
    /// Always Timmy.
    pub approver: House,
    /// The house whose call is approved.
    pub house: House,
    /// The node the call may run on, or [`ANY_NODE`].
    pub node: String,
    /// The tool approved.
    pub tool: String,
    /// [`approval::args_sha256`] of the arguments approved.
    pub args_sha256: String,
    /// Not valid at or after this time (ms since the Unix epoch).
    pub expires_ms: u64,
    /// Random, 32 hex digits; spent on first use.
    pub nonce: String,
}

impl Claims {
    /// Claims for `house` on `node` (or [`ANY_NODE`]) calling `tool` with `args`, valid for
    /// `ttl_ms` from now, with a fresh nonce.
    pub fn new(house: House, node: &str, tool: &str, args: &serde_json::Value, ttl_ms: u64) -> Claims {
        Claims::for_hash(house, node, tool, &approval::args_sha256(args), ttl_ms)
    }

    /// As [`Claims::new`], for arguments known by their hash (what Timmy's service is asked).
    pub fn for_hash(house: House, node: &str, tool: &str, args_sha256: &str, ttl_ms: u64) -> Claims {
        Claims {
            v: CLAIMS_VERSION,
            approver: House::Timmy,
            house,
            node: node.to_owned(),
            tool: tool.to_owned(),
            args_sha256: args_sha256.to_owned(),
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
/// E2003 when the token is malformed, not signed by `key`, or of another claims version.
pub fn open(key: &VerifyingKey, token: &str) -> Result<Claims> {
    let (body, sig) = token.trim().split_once('.').ok_or_else(|| refused("malformed token"))?;
    let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| refused("malformed token"))?;
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(sig)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| refused("malformed signature"))?;
    key.verify(&body, &Signature::from_bytes(&sig)).map_err(|_| refused("not signed by Timmy's key"))?;
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    let version = serde_json::from_slice::<Version>(&body).map_err(|_| refused("malformed claims"))?;
    if version.v != CLAIMS_VERSION {
        return Err(refused("a token of another format (version 1 binds no house or node): sign a new one"));
    }
    serde_json::from_slice(&body).map_err(|_| refused("malformed claims"))
}

/// Checks opened claims for a call of `house`: approved by Timmy, for that house, not expired.
/// What every spender checks, Timmy's Sovereign service included.
///
/// # Errors
/// E2003 naming what does not hold.
pub fn check_house(claims: &Claims, house: House) -> Result<()> {
    if claims.approver != House::Timmy {
        return Err(refused("not an approval by Timmy"));
    }
    if claims.house != house {
        return Err(refused("it approves a call of another house"));
    }
    if now_ms() >= claims.expires_ms {
        return Err(refused("expired"));
    }
    Ok(())
}

/// Spends a token's nonce where it counts fleet-wide (Timmy's Sovereign service), before the
/// call runs. Implemented by the daemons; [`TokenApprover`] alone spends only locally.
pub trait NonceSpender: Send + Sync + 'static {
    /// Spends `token` (already checked by [`TokenApprover::verify`]) for `request`.
    ///
    /// # Errors
    /// E2003 when it was spent before; E2002 when the spend cannot be made (fail closed).
    fn spend<'a>(&'a self, token: &'a str, request: &'a ApprovalRequest) -> BoxFuture<'a, Result<()>>;
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

    /// Checks `token` for `request` without spending it: Timmy's signature, the claims
    /// version, the house, the node, the tool, the arguments and the expiry.
    ///
    /// # Errors
    /// E2003 naming the first thing that does not hold.
    pub fn verify(&self, token: &str, request: &ApprovalRequest) -> Result<Claims> {
        let claims = open(&self.timmy, token)?;
        check_house(&claims, request.house)?;
        if claims.node != ANY_NODE && claims.node != request.node {
            return Err(refused("it approves a call on another node"));
        }
        if claims.tool != request.tool {
            return Err(refused("it approves another tool"));
        }
        if claims.args_sha256 != request.args_sha256 {
            return Err(refused("it approves other arguments"));
        }
        Ok(claims)
    }

    /// Spends verified `claims` in the local audit store and returns the approval, which
    /// carries the nonce into the call's record.
    ///
    /// # Errors
    /// E2003 when already spent here; E3008 when the nonce cannot be recorded.
    pub fn spend(&self, claims: Claims, request: &ApprovalRequest) -> Result<Approval> {
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
            nonce: Some(claims.nonce),
        })
    }

    /// Checks `token` for `request` and spends it locally ([`TokenApprover::verify`], then
    /// [`TokenApprover::spend`]).
    ///
    /// # Errors
    /// As those two.
    pub fn check(&self, token: &str, request: &ApprovalRequest) -> Result<Approval> {
        let claims = self.verify(token, request)?;
        self.spend(claims, request)
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
        let claims = Claims::new(House::Ezra, "n1", "file_write", &json!({"path": "a"}), 60_000);
        let token = sign(&key, &claims);
        assert_eq!(open(&key.verifying_key(), &token).ok(), Some(claims.clone()));
        assert!(open(&generate_key().verifying_key(), &token).is_err());
        let forged = Claims { tool: "git_push".into(), ..claims };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json"));
        let sig = token.split_once('.').map(|(_, s)| s).unwrap_or_default();
        let e = open(&key.verifying_key(), &format!("{body}.{sig}")).expect_err("forged");
        assert_eq!(e.code, ErrorCode::ApprovalInvalid);
    }

    /// Proves a version-1 token (bound to no house or node), even one signed by Timmy's key,
    /// is refused with a message saying to sign a new one.
    #[test]
    fn version_one_tokens_are_refused() {
        let key = generate_key();
        let v1 = json!({"v": 1, "approver": "timmy", "tool": "file_write", "args_sha256": "00",
                        "expires_ms": u64::MAX, "nonce": "ab"});
        let body = serde_json::to_vec(&v1).expect("json");
        let token = format!("{}.{}", URL_SAFE_NO_PAD.encode(&body), URL_SAFE_NO_PAD.encode(key.sign(&body).to_bytes()));
        let e = open(&key.verifying_key(), &token).expect_err("v1 refused");
        assert_eq!(e.code, ErrorCode::ApprovalInvalid);
        assert!(e.message.contains("sign a new one"), "{e}");
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
