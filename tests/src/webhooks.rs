//! Gitea webhook deliveries for the triage tests and bench, built from the real samples in
//! `shared/data/gitea/webhook-samples/` (body + headers + secret), and a fleet that runs the
//! triage role against the Gitea test server.
//!
//! A delivery keeps the sample's headers and body shape; only the issue, repository and sender
//! are retargeted at the test server's fixture, the delivery id is fresh, and every signature
//! header is recomputed over the new body exactly as Gitea computes it (lowercase hex
//! HMAC-SHA256 of the raw body).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::fleet::Fleet;
use crate::gitea_server::{BOT, GiteaServer, OWNER, REPO};

/// The directory of the sample deliveries (`shared/` sits beside the repository root).
pub fn samples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/gitea/webhook-samples"))
}

/// The secret the samples were signed with (their `headers.json` carries it).
///
/// # Panics
/// When the samples are missing.
pub fn sample_secret() -> String {
    let h = read_json(&samples().join("issues-opened.headers.json"));
    h["secret"].as_str().expect("secret in the sample").to_owned()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Lowercase hex HMAC-SHA256 of `body` under `secret`.
///
/// # Panics
/// Never: HMAC takes keys of any length.
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A delivery id not used before in this process.
pub fn fresh_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// One delivery: raw body and headers, as Gitea would send it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The raw body.
    pub body: Vec<u8>,
    /// The headers, in the sample's order.
    pub headers: Vec<(String, String)>,
}

impl Delivery {
    /// The sample `name` (e.g. `issues-opened`) retargeted at issue `number` of `uni/fleet`,
    /// sent by `sender`, with a fresh delivery id, signed with `secret`.
    ///
    /// # Panics
    /// When the sample is missing.
    pub fn from_sample(name: &str, number: u64, title: &str, sender: &str, secret: &str) -> Delivery {
        let mut body = read_json(&samples().join(format!("{name}.body.json")));
        if body.get("number").is_some() {
            body["number"] = json!(number);
        }
        body["issue"]["number"] = json!(number);
        body["issue"]["title"] = json!(title);
        body["issue"]["repository"] =
            json!({ "id": 1, "name": REPO, "owner": OWNER, "full_name": format!("{OWNER}/{REPO}") });
        body["repository"]["name"] = json!(REPO);
        body["repository"]["full_name"] = json!(format!("{OWNER}/{REPO}"));
        body["repository"]["owner"]["login"] = json!(OWNER);
        body["sender"]["login"] = json!(sender);
        // Gitea marshals with two-space indentation, as serde_json's pretty printer does.
        let raw = serde_json::to_vec_pretty(&body).expect("serialise");
        Delivery::signed(name, raw, secret)
    }

    /// `raw` with the headers of sample `name`, a fresh delivery id, and signatures over `raw`.
    ///
    /// # Panics
    /// When the sample is missing.
    pub fn signed(name: &str, raw: Vec<u8>, secret: &str) -> Delivery {
        let sample = read_json(&samples().join(format!("{name}.headers.json")));
        let sig = hmac_hex(secret, &raw);
        let id = fresh_id();
        let headers = sample["headers"]
            .as_object()
            .expect("headers object")
            .iter()
            .map(|(k, v)| {
                let v = match k.as_str() {
                    "X-Gitea-Delivery" | "X-Gogs-Delivery" | "X-GitHub-Delivery" => id.clone(),
                    "X-Gitea-Signature" | "X-Gogs-Signature" => sig.clone(),
                    "X-Hub-Signature-256" => format!("sha256={sig}"),
                    _ => v.as_str().unwrap_or_default().to_owned(),
                };
                (k.clone(), v)
            })
            // The SHA-1 signature would need a second MAC; the daemon reads only X-Gitea-Signature.
            .filter(|(k, _)| k != "X-Hub-Signature")
            .collect();
        Delivery { body: raw, headers }
    }

    /// Sets a header (replacing any of the same name).
    pub fn set(&mut self, name: &str, value: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    /// Removes a header.
    pub fn without(&mut self, name: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
}

/// The rules the triage fleet runs: crash/panic -> bug (Bezalel, assigned to bob), docs ->
/// Ezra; both comment.
pub const RULES: &str = "  rules:
    - {name: bug, match: {keywords: [crash, panic]}, labels: [kind/bug], category: bug, assignees: [bob], comment: 'Triage: {category}, routed to {house}.'}
    - {name: docs, match: {keywords: [docs, documentation]}, labels: [kind/docs], category: docs, comment: 'Docs: routed to {house}.'}
";

/// Starts Allegro (router, health, worker, triage with [`RULES`]), Ezra and Bezalel against
/// `server`; every worker can reach Gitea (the routed tasks call it). Blocking: call it from
/// `tokio::task::block_in_place` inside a runtime.
pub fn start_triage_fleet(server: &GiteaServer, poll_interval_ms: u64) -> Fleet {
    start_triage_fleet_with(server, poll_interval_ms, "")
}

/// As [`start_triage_fleet`], with `allegro_library` (YAML lines indented four spaces, e.g. a
/// `policy:` override) added to Allegro's `worker.library` section.
pub fn start_triage_fleet_with(server: &GiteaServer, poll_interval_ms: u64, allegro_library: &str) -> Fleet {
    let (url, token, secret) = (server.url(), server.token().to_owned(), sample_secret());
    Fleet::start(&["allegro", "ezra", "bezalel"], &|house| {
        let mut extra = format!("    gitea: {{base_url: \"{url}\", token: \"{token}\"}}\n");
        if house == "allegro" {
            extra.push_str(allegro_library);
            extra.push_str(&format!(
                "roles: [router, health, worker, triage]\ntriage:\n  gitea: {{base_url: \"{url}\", token: \"{token}\"}}\n  \
                 webhook_secret: \"{secret}\"\n  bot_user: {BOT}\n  repos: [{OWNER}/{REPO}]\n  \
                 poll_interval_ms: {poll_interval_ms}\n{RULES}"
            ));
        }
        extra
    })
}
