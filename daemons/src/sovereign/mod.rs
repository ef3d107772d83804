//! Timmy's Sovereign service (approvals over gRPC) and the [`RemoteApprover`] workers use.
//!
//! A worker whose call needs Timmy's approval asks `RequestApproval` and waits (bounded). The
//! request waits in Timmy's pending list until Timmy's operator decides (`uni-wizard approve
//! --list / --decide`, authenticated as Timmy: no other house may decide). An approval is
//! answered with a token signed by Timmy's key, bound to the requesting house, its node, the
//! tool, the argument hash and an expiry. The worker checks every token (from Timmy's answer or
//! brought by the caller) against Timmy's public key, spends its nonce at Timmy
//! (`SpendToken`, recorded in Timmy's `sovereign.db`), then in its own audit store. So a token
//! works once fleet-wide, however a node's audit store is copied or edited, and a worker that
//! cannot reach Timmy to spend a token refuses the call (fail closed, E2002).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::sync::watch;
use uni_wizard::approval::{Approval, ApprovalRequest, Approver};
use uni_wizard::audit::AuditStore;
use uni_wizard::future::BoxFuture;
use uni_wizard::provenance::now_ms;
use uni_wizard::tokens::{self, Claims, TokenApprover};
use uni_wizard::{Error, ErrorCode, House};
use uni_wizard_proto::v1::sovereign_server::Sovereign;
use uni_wizard_proto::v1::{
    self, ApprovalDecision, ApprovalResponse, DecideRequest, DecideResponse, ListPendingRequest, ListPendingResponse,
    PendingApproval,
};

use crate::auth;
use crate::config::SovereignConfig;
use crate::peers::Peers;
use crate::wire;

#[derive(Debug, Clone)]
struct Decision {
    decision: ApprovalDecision,
    token: Vec<u8>,
    note: String,
}

struct Entry {
    id: String,
    request: v1::ApprovalRequest,
    requested_ms: u64,
    expires_ms: u64,
    decision: watch::Sender<Decision>,
}

/// Timmy's approval service.
#[derive(Clone)]
pub struct SovereignService {
    inner: Arc<Inner>,
}

struct Inner {
    key: SigningKey,
    config: SovereignConfig,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// Where tokens are spent fleet-wide: `used_tokens` of `<home>/sovereign.db`.
    spent: Arc<AuditStore>,
}

impl std::fmt::Debug for SovereignService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SovereignService").finish_non_exhaustive()
    }
}

impl SovereignService {
    /// The service, signing with the key in `config.key_file` and spending tokens in
    /// `<home>/sovereign.db`.
    ///
    /// # Errors
    /// E4001 when no key file is configured or it cannot be read; E3008 when the token store
    /// cannot be opened.
    pub fn new(config: &SovereignConfig, home: &std::path::Path) -> Result<SovereignService, Error> {
        let path = config.key_file.as_ref().ok_or_else(|| {
            Error::new(ErrorCode::ConfigInvalid, "the sovereign role needs `sovereign.key_file` (uni-wizard keygen)")
                .with_details(serde_json::json!({ "field": "sovereign.key_file" }))
        })?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorCode::ConfigInvalid, format!("cannot read {}: {e}", path.display()))
                .with_details(serde_json::json!({ "field": "sovereign.key_file" }))
        })?;
        std::fs::create_dir_all(home).map_err(|e| {
            Error::new(ErrorCode::HomeUnavailable, format!("cannot create state directory {}: {e}", home.display()))
        })?;
        let spent = Arc::new(AuditStore::open(home.join("sovereign.db"))?);
        Ok(SovereignService::with_key(tokens::parse_signing_key(&text)?, config.clone(), spent))
    }

    /// The service with a key and a token store in hand.
    pub fn with_key(key: SigningKey, config: SovereignConfig, spent: Arc<AuditStore>) -> SovereignService {
        SovereignService { inner: Arc::new(Inner { key, config, entries: Mutex::new(HashMap::new()), spent }) }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.inner.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Expires undecided entries past their time and forgets decided ones past theirs.
    fn prune(&self, entries: &mut HashMap<String, Arc<Entry>>) {
        let now = now_ms();
        entries.retain(|_, e| {
            let pending = e.decision.borrow().decision == ApprovalDecision::Pending;
            if pending && now >= e.expires_ms {
                e.decision.send_modify(|d| d.decision = ApprovalDecision::Expired);
            }
            now < e.expires_ms.saturating_add(self.inner.config.pending_ttl_ms)
        });
    }
}

fn answer(entry: &Entry, d: &Decision) -> ApprovalResponse {
    ApprovalResponse {
        approval_id: entry.id.clone(),
        decision: d.decision.into(),
        approval_token: d.token.clone(),
        approver: if d.decision == ApprovalDecision::Pending { String::new() } else { House::Timmy.to_string() },
        note: d.note.clone(),
    }
}

fn invalid(field: &str, why: &str) -> tonic::Status {
    wire::status(
        &Error::new(ErrorCode::InvalidInput, format!("`{field}` {why}"))
            .with_details(serde_json::json!({ "field": field })),
    )
}

#[tonic::async_trait]
impl Sovereign for SovereignService {
    async fn request_approval(
        &self,
        request: tonic::Request<v1::ApprovalRequest>,
    ) -> Result<tonic::Response<ApprovalResponse>, tonic::Status> {
        let peer = auth::peer(&request)?;
        let mut req = request.into_inner();
        // Validation before authorization: a malformed request is E1xxx, not impersonation.
        let requesting =
            wire::required_house(req.requesting_house, "requesting_house").map_err(|e| wire::status(&e))?;
        if req.request_id.is_empty() || req.request_id.len() > 128 {
            return Err(invalid("request_id", "must be 1 to 128 characters"));
        }
        if req.tool.is_empty() || req.tool.len() > 64 {
            return Err(invalid("tool", "must be 1 to 64 characters"));
        }
        if req.node.is_empty() || req.node.len() > 255 {
            return Err(invalid("node", "must be 1 to 255 characters"));
        }
        for (field, value) in
            [("request_id", &req.request_id), ("tool", &req.tool), ("node", &req.node), ("reason", &req.reason)]
        {
            // Each is logged and shown on Timmy's terminal by `approve --list`.
            wire::printable(field, value).map_err(|e| wire::status(&e))?;
        }
        if req.node == tokens::ANY_NODE {
            // A request comes from the node the call runs on; an any-node token is only ever
            // signed on purpose, with `approve --sign --any-node`.
            return Err(invalid("node", "must name the node the call runs on, not `*`"));
        }
        if req.args_sha256.len() != 64 || !req.args_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("args_sha256", "must be 64 hex digits"));
        }
        if req.args_json.len() > 64 * 1024 || req.reason.len() > 1024 {
            return Err(invalid("args_json", "or `reason` is too long"));
        }
        if requesting != peer.house {
            return Err(wire::status(&Error::new(
                ErrorCode::Impersonation,
                format!("authenticated as {} but asks for {requesting}", peer.house),
            )));
        }
        // What Timmy is shown is what he signs: the hash is computed here, from the arguments
        // themselves (none: `{}`), and only their redacted form is kept and listed.
        let args: serde_json::Value = if req.args_json.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(&req.args_json).map_err(|_| invalid("args_json", "is not JSON"))?
        };
        if uni_wizard::approval::args_sha256(&args) != req.args_sha256 {
            return Err(invalid("args_sha256", "is not the hash of `args_json`"));
        }
        req.args_json = uni_wizard::approval::redact(&args).to_string();
        let id = format!("{}:{}", peer.house, req.request_id);
        let wait = Duration::from_millis(u64::from(req.wait_timeout_ms));
        let entry = {
            let mut entries = self.entries();
            self.prune(&mut entries);
            match entries.get(&id) {
                Some(e) => e.clone(),
                None => {
                    // Each house has its share of the queue, so one house asking without end
                    // cannot keep Timmy from hearing the others.
                    let max = self.inner.config.max_pending;
                    let share = max.div_ceil(House::ALL.len());
                    let (mut all, mut theirs) = (0, 0);
                    for e in entries.values().filter(|e| e.decision.borrow().decision == ApprovalDecision::Pending) {
                        all += 1;
                        theirs += usize::from(e.request.requesting_house == req.requesting_house);
                    }
                    if theirs >= share || all >= max {
                        return Err(wire::status(
                            &Error::new(
                                ErrorCode::Saturated,
                                format!("too many approvals are pending ({theirs} of {share} from {requesting})"),
                            )
                            .with_details(
                                serde_json::json!({ "house": requesting, "pending": theirs, "share": share }),
                            ),
                        ));
                    }
                    let now = now_ms();
                    let decision =
                        Decision { decision: ApprovalDecision::Pending, token: Vec::new(), note: String::new() };
                    let e = Arc::new(Entry {
                        id: id.clone(),
                        request: req,
                        requested_ms: now,
                        expires_ms: now.saturating_add(self.inner.config.pending_ttl_ms),
                        decision: watch::channel(decision).0,
                    });
                    tracing::info!(approval = %id, tool = %e.request.tool, house = %peer.house, "approval requested");
                    metrics::counter!("uw_sovereign_requests_total").increment(1);
                    entries.insert(id, e.clone());
                    e
                }
            }
        };
        let mut rx = entry.decision.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|d| d.decision != ApprovalDecision::Pending)).await;
        let d = rx.borrow().clone();
        Ok(tonic::Response::new(answer(&entry, &d)))
    }

    async fn list_pending(
        &self,
        request: tonic::Request<ListPendingRequest>,
    ) -> Result<tonic::Response<ListPendingResponse>, tonic::Status> {
        auth::require(auth::peer(&request)?, &[House::Timmy], "list pending approvals")?;
        let mut entries = self.entries();
        self.prune(&mut entries);
        let mut pending: Vec<PendingApproval> = entries
            .values()
            .filter(|e| e.decision.borrow().decision == ApprovalDecision::Pending)
            .map(|e| PendingApproval {
                approval_id: e.id.clone(),
                request: Some(e.request.clone()),
                requested_at_unix_ms: e.requested_ms as i64,
                expires_at_unix_ms: e.expires_ms as i64,
            })
            .collect();
        pending.sort_by_key(|p| (p.requested_at_unix_ms, p.approval_id.clone()));
        Ok(tonic::Response::new(ListPendingResponse { pending }))
    }

    async fn decide(
        &self,
        request: tonic::Request<DecideRequest>,
    ) -> Result<tonic::Response<DecideResponse>, tonic::Status> {
        let peer = auth::peer(&request)?;
        let req = request.into_inner();
        if req.approval_id.is_empty() || req.approval_id.len() > 256 {
            return Err(invalid("approval_id", "must be 1 to 256 characters"));
        }
        auth::require(peer, &[House::Timmy], "decide approvals")?;
        let entry = {
            let mut entries = self.entries();
            self.prune(&mut entries);
            entries.get(&req.approval_id).cloned()
        }
        .ok_or_else(|| wire::status(&Error::new(ErrorCode::NotFound, format!("no approval `{}`", req.approval_id))))?;
        let current = entry.decision.borrow().decision;
        if current == ApprovalDecision::Pending {
            let decision = if req.approve {
                // request_approval admitted only a known house and a node name.
                let house = wire::house_from_wire(entry.request.requesting_house).unwrap_or(House::Timmy);
                let claims = Claims::for_hash(
                    house,
                    &entry.request.node,
                    &entry.request.tool,
                    &entry.request.args_sha256,
                    self.inner.config.token_ttl_ms,
                );
                let token = tokens::sign(&self.inner.key, &claims).into_bytes();
                Decision { decision: ApprovalDecision::Approved, token, note: req.note.clone() }
            } else {
                Decision { decision: ApprovalDecision::Denied, token: Vec::new(), note: req.note.clone() }
            };
            tracing::info!(approval = %entry.id, approved = req.approve, "approval decided");
            let label = if req.approve { "approved" } else { "denied" };
            metrics::counter!("uw_sovereign_decisions_total", "decision" => label).increment(1);
            entry.decision.send_replace(decision);
        }
        let d = entry.decision.borrow().clone();
        Ok(tonic::Response::new(DecideResponse {
            approval_id: entry.id.clone(),
            decision: d.decision.into(),
            approver: House::Timmy.to_string(),
        }))
    }

    async fn spend_token(
        &self,
        request: tonic::Request<v1::SpendTokenRequest>,
    ) -> Result<tonic::Response<v1::SpendTokenResponse>, tonic::Status> {
        let peer = auth::peer(&request)?;
        let req = request.into_inner();
        if req.token.is_empty() || req.token.len() > 4096 {
            return Err(invalid("token", "must be 1 to 4096 characters"));
        }
        if req.request_id.is_empty() || req.request_id.len() > 128 {
            return Err(invalid("request_id", "must be 1 to 128 characters"));
        }
        let claims = self.spend(&req.token, peer.house, &req.request_id).map_err(|e| wire::status(&e))?;
        tracing::info!(nonce = %claims.nonce, house = %peer.house, tool = %claims.tool, "approval token spent");
        metrics::counter!("uw_sovereign_tokens_spent_total").increment(1);
        Ok(tonic::Response::new(v1::SpendTokenResponse { nonce: claims.nonce }))
    }
}

impl SovereignService {
    /// Spends `token` for a call of `house`: Timmy's signature, the claims version, the house
    /// and the expiry are checked, then the nonce is recorded once in `sovereign.db`.
    fn spend(&self, token: &str, house: House, request_id: &str) -> Result<Claims, Error> {
        let claims = tokens::open(&self.inner.key.verifying_key(), token)?;
        tokens::check_house(&claims, house)?;
        self.inner.spent.consume_nonce(
            &claims.nonce,
            &claims.tool,
            &claims.args_sha256,
            claims.expires_ms,
            request_id,
        )?;
        Ok(claims)
    }
}

/// Asks Timmy's Sovereign service, then checks the signed token it sends like any other, and
/// spends every token at Timmy before the call runs.
pub struct RemoteApprover {
    peers: Peers,
    house: House,
    wait: Duration,
    tokens: TokenApprover,
}

impl RemoteApprover {
    /// An approver for calls of `house`, asking through `peers`, checking tokens with `tokens`.
    pub fn new(peers: Peers, house: House, wait: Duration, tokens: TokenApprover) -> RemoteApprover {
        RemoteApprover { peers, house, wait, tokens }
    }

    /// Verifies `token`, spends it at Timmy, then locally.
    async fn redeem(&self, token: &str, request: &ApprovalRequest) -> Result<Approval, Error> {
        let claims = self.tokens.verify(token, request)?;
        let mut client = self.peers.sovereign()?;
        let spend = v1::SpendTokenRequest { token: token.to_owned(), request_id: request.request_id.clone() };
        let mut rpc = tonic::Request::new(spend);
        rpc.set_timeout(Duration::from_secs(10));
        client.spend_token(rpc).await.map_err(|s| {
            let e = wire::error_from_status(&s);
            if e.code == ErrorCode::ApprovalInvalid {
                return e;
            }
            Error::new(
                ErrorCode::ApprovalRequired,
                format!("the approval token for {} could not be spent at Timmy: {}", request.tool, e.message),
            )
            .with_details(serde_json::json!({ "cause": e.code.as_str() }))
        })?;
        self.tokens.spend(claims, request)
    }

    async fn ask(&self, request: &ApprovalRequest) -> Result<Approval, Error> {
        if let Some(token) = &request.token {
            return self.redeem(token, request).await;
        }
        let mut client = self.peers.sovereign()?;
        let ask = wire::approval_request_to_wire(request, self.house, self.wait);
        let mut rpc = tonic::Request::new(ask);
        rpc.set_timeout(self.wait + Duration::from_secs(5));
        let answer = client.request_approval(rpc).await.map_err(|s| {
            let e = wire::error_from_status(&s);
            Error::new(
                ErrorCode::ApprovalRequired,
                format!("{} needs Timmy's approval and Timmy could not be asked: {}", request.tool, e.message),
            )
            .with_details(serde_json::json!({ "cause": e.code.as_str() }))
        })?;
        let answer = answer.into_inner();
        match answer.decision() {
            ApprovalDecision::Approved => {
                let token = String::from_utf8(answer.approval_token)
                    .map_err(|_| Error::new(ErrorCode::ApprovalInvalid, "Timmy's token is not text"))?;
                self.redeem(&token, request).await
            }
            ApprovalDecision::Denied => Err(Error::new(
                ErrorCode::ApprovalRequired,
                format!(
                    "Timmy denied {} ({})",
                    request.tool,
                    if answer.note.is_empty() { "no note" } else { &answer.note }
                ),
            )
            .with_details(serde_json::json!({ "approval_id": answer.approval_id, "decision": "denied" }))),
            other => Err(Error::new(
                ErrorCode::ApprovalRequired,
                format!("Timmy did not decide on {} in time ({other:?})", request.tool),
            )
            .with_details(serde_json::json!({ "approval_id": answer.approval_id, "decision": format!("{other:?}") }))),
        }
    }
}

impl Approver for RemoteApprover {
    fn approve<'a>(&'a self, request: &'a ApprovalRequest) -> BoxFuture<'a, Result<Approval, Error>> {
        Box::pin(self.ask(request))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uni_wizard::approval::args_sha256;

    use super::*;

    fn service(max_pending: usize) -> (SovereignService, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spent = Arc::new(AuditStore::open(dir.path().join("sovereign.db")).expect("store"));
        let config = SovereignConfig { max_pending, ..SovereignConfig::default() };
        (SovereignService::with_key(tokens::generate_key(), config, spent), dir)
    }

    /// An approval request from `house`, authenticated as the auth layer would.
    fn ask(
        house: House,
        id: &str,
        args_json: &str,
        args_sha256: &str,
        node: &str,
    ) -> tonic::Request<v1::ApprovalRequest> {
        let mut r = tonic::Request::new(v1::ApprovalRequest {
            request_id: id.into(),
            requesting_house: wire::house_to_wire(house).into(),
            tool: "file_write".into(),
            args_sha256: args_sha256.into(),
            args_json: args_json.into(),
            reason: "test".into(),
            wait_timeout_ms: 0,
            node: node.into(),
        });
        r.extensions_mut().insert(auth::Peer { house });
        r
    }

    fn assert_invalid(s: &tonic::Status, field: &str) {
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
        assert!(s.message().starts_with("E1005") && s.message().contains(field), "{s:?}");
    }

    /// Proves Timmy is asked to sign only what he is shown: arguments whose hash is not
    /// `args_sha256`, or a request for "any node", are refused (E1005) before they are queued,
    /// and a secret among honest arguments is queued and listed redacted, never in clear.
    #[tokio::test]
    async fn what_timmy_is_shown_is_what_he_signs() {
        let (s, _dir) = service(64);
        let shown = json!({"path": "notes.txt", "content": "harmless"}).to_string();
        let meant = args_sha256(&json!({"path": "evil.txt", "content": "pwn"}));
        let e =
            s.request_approval(ask(House::Allegro, "r1", &shown, &meant, "allegro-node")).await.expect_err("refused");
        assert_invalid(&e, "args_sha256");
        let honest = args_sha256(&json!({"path": "notes.txt", "content": "harmless"}));
        let e = s.request_approval(ask(House::Allegro, "r2", &shown, &honest, "*")).await.expect_err("refused");
        assert_invalid(&e, "node");
        assert!(s.entries().is_empty(), "nothing refused is queued");

        let secret = json!({"path": "x", "password_reset": {"user": "bob", "new_password": "hunter2"}});
        let r = ask(House::Allegro, "r3", &secret.to_string(), &args_sha256(&secret), "allegro-node");
        s.request_approval(r).await.expect("queued");
        let mut list = tonic::Request::new(ListPendingRequest {});
        list.extensions_mut().insert(auth::Peer { house: House::Timmy });
        let pending = s.list_pending(list).await.expect("listed").into_inner().pending;
        let listed = &pending[0].request.as_ref().expect("request").args_json;
        assert!(!listed.contains("hunter2") && listed.contains("[redacted]") && listed.contains("\"x\""), "{listed}");
    }

    /// Proves what Timmy reads on his terminal cannot be forged: a request id, node, tool or
    /// reason holding a newline, an escape or NUL is refused (E1005) before it is logged or queued.
    #[tokio::test]
    async fn control_characters_never_reach_timmys_screen() {
        let (s, _dir) = service(64);
        let args = json!({"path": "a"});
        let (text, hash) = (args.to_string(), args_sha256(&args));
        let forged = [
            ask(House::Ezra, "inj\n2", &text, &hash, "ezra-node"),
            ask(House::Ezra, "r1", &text, &hash, "ezra-node\u{1b}[2K"),
            ask(House::Ezra, "r2", &text, &hash, "ezra\0"),
            {
                let mut r = ask(House::Ezra, "r3", &text, &hash, "ezra-node");
                r.get_mut().reason = "line1\nbezalel:x  bezalel on bezalel-node wants system_info".into();
                r
            },
        ];
        for r in forged {
            let e = s.request_approval(r).await.expect_err("refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(e.message().starts_with("E1005") && e.message().contains("control character"), "{e:?}");
        }
        assert!(s.entries().is_empty(), "nothing refused is queued");
    }

    /// Proves one house cannot fill Timmy's queue for the others: with room for 8, Ezra's third
    /// pending request is refused (E3005) while Allegro's first is still queued.
    #[tokio::test]
    async fn each_house_has_its_share_of_the_queue() {
        let (s, _dir) = service(8);
        let args = json!({"path": "a"});
        let (text, hash) = (args.to_string(), args_sha256(&args));
        for i in 0..2 {
            s.request_approval(ask(House::Ezra, &format!("e{i}"), &text, &hash, "ezra-node")).await.expect("queued");
        }
        let e = s.request_approval(ask(House::Ezra, "e2", &text, &hash, "ezra-node")).await.expect_err("share used");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        assert!(e.message().starts_with("E3005"), "{e:?}");
        s.request_approval(ask(House::Allegro, "a0", &text, &hash, "allegro-node")).await.expect("Allegro still heard");
    }
}
