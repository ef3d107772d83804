//! Which settings a hot reload applies and which wait for a restart: the one table
//! ([`FIELDS`]), and the diff of two configs by field path ([`changed`]).
//!
//! Every leaf of a [`DaemonConfig`] (a scalar, a list, or a null option; map keys are `*`) is
//! in exactly one class:
//!
//! - [`Reload::Live`]: the running code reads it from the live config each time it is used, so
//!   a valid reload applies it at once (the next call, probe, connection or poll).
//! - [`Reload::RestartOnly`]: read once while the node is built (a listener, a harness, a file
//!   opened, a task's parameters); a reload that changes one is refused, naming it.
//!
//! A live entry names one leaf exactly; a restart-only entry may name a whole subtree
//! (`worker.library.**`), so a field added under it is refused rather than silently ignored.
//! A unit test walks every leaf of a config with every option set and fails on one that no
//! entry classifies, so a new field cannot be forgotten.
//!
//! Secrets serialize as `[redacted]`, so their changes are found by value ([`secrets`]); a test
//! fails on a redacted leaf that [`secrets`] does not list.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::DaemonConfig;

/// When a changed setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// At once, on a valid reload.
    Live,
    /// At the next restart; a reload that changes it is refused.
    RestartOnly,
}

use Reload::{Live, RestartOnly};

/// Every setting's class, with the reason. `*` is one map key; a trailing `**` (restart-only
/// entries only) is a whole subtree.
pub const FIELDS: &[(&str, Reload, &str)] = &[
    ("house", RestartOnly, "tokens, the harness and the roles are built as this house"),
    ("node", RestartOnly, "the harness, the outbox and provenance carry the node name"),
    ("roles", RestartOnly, "each role's services and tasks are built at start"),
    ("listen.grpc", RestartOnly, "the listener is bound at start"),
    ("listen.http", RestartOnly, "the listener is bound at start"),
    ("tls.**", RestartOnly, "the server and client TLS configs are loaded at start"),
    ("plaintext_loopback", RestartOnly, "checked with tls and listen, which are restart-only"),
    ("log.format", RestartOnly, "the log subscriber is installed at start"),
    ("log.level", RestartOnly, "the log filter is installed at start"),
    ("http.metrics_token_file", Live, "read per request (the file itself is re-read when it changes)"),
    ("http.metrics_open", Live, "read per request"),
    ("http.header_timeout_ms", Live, "read per accepted connection"),
    ("http.idle_timeout_ms", Live, "read per accepted connection"),
    ("houses.*.endpoint", Live, "peers reconnect when an endpoint changes"),
    ("houses.*.auth_token", Live, "auth and outgoing credentials read the live houses"),
    ("houses.*.role", Live, "operators' text; nothing decides on it"),
    ("houses.*.priority", Live, "read per routing decision"),
    ("houses.*.nodes", Live, "the sink binds node names per stream message"),
    ("houses.*.http_endpoint", Live, "only `uni-wizard status` reads it, from the file"),
    ("router.routes.*", Live, "read per routing decision"),
    ("router.submitters", Live, "read per Submit and Status"),
    ("router.max_tasks", Live, "read per Submit"),
    ("router.submit_wait_ms", Live, "read per Submit"),
    ("router.dispatch_timeout_ms", Live, "read per dispatch"),
    ("health.interval_ms", Live, "read per probe round"),
    ("health.timeout_ms", Live, "read per probe round"),
    ("health.down_after", Live, "read per probe round"),
    ("worker.max_concurrency", Live, "the pool is resized on the next call or Capacity"),
    ("worker.max_queued", Live, "read per call"),
    ("worker.default_mode", Live, "read per call that names no mode"),
    ("worker.dispatchers", Live, "read per Execute"),
    ("worker.library.**", RestartOnly, "the harnesses (worker, triage) are built at start"),
    ("worker.timmy_pubkey", RestartOnly, "the approver is built with the key at start"),
    ("worker.approval_wait_ms", RestartOnly, "the approver is built with it at start"),
    ("worker.audit_all_modes", RestartOnly, "the harness's provenance logs are chosen at start"),
    ("worker.once.retention_ms", Live, "read per prune of the exactly-once store"),
    ("worker.once.max_rows", Live, "read per prune of the exactly-once store"),
    ("sovereign.**", RestartOnly, "the approval service is built with its key and limits at start"),
    ("triage", Live, "no section: only valid on a node without the triage role, which reads none"),
    ("triage.gitea.**", RestartOnly, "the Gitea client is built at start"),
    ("triage.webhook_secret", Live, "read per webhook delivery"),
    ("triage.repos", Live, "read per poll and webhook delivery"),
    ("triage.poll_interval_ms", Live, "read per poll"),
    ("triage.bot_user", Live, "read per webhook delivery"),
    ("triage.max_body_bytes", Live, "read per webhook delivery"),
    ("triage.router_house", Live, "read per routed issue"),
    ("triage.concurrency", RestartOnly, "the engine's semaphore is sized at start"),
    ("triage.house_labels", Live, "read per issue"),
    ("triage.label_color", Live, "read per label created"),
    ("triage.max_attempts", Live, "read per failed attempt"),
    ("triage.rules", Live, "recompiled when the live config changes"),
    ("telemetry.hermes_home", RestartOnly, "the tailer is started on it at start"),
    ("telemetry.poll_ms", RestartOnly, "the tailer's and the stream's intervals are set at start"),
    ("telemetry.max_buffered", RestartOnly, "the outbox is opened with it at start"),
    ("telemetry.batch", RestartOnly, "the tailer, the ingest queue and the sink are sized at start"),
    ("telemetry.max_in_flight", RestartOnly, "read when a stream session opens, which may never end"),
    ("telemetry.result_max_bytes", RestartOnly, "the tailer is started with it"),
    ("telemetry.backoff_min_ms", RestartOnly, "the stream's backoff is made at start"),
    ("telemetry.backoff_max_ms", RestartOnly, "the stream's backoff is made at start"),
    ("telemetry.durability", RestartOnly, "the outbox and sink set their sync pragma when opened"),
    ("telemetry.hook_deny", Live, "`uni-wizard hermes-hook` reads the file on every call"),
    ("telemetry.hook_timeout_ms", Live, "`uni-wizard hermes-hook` reads the file on every call"),
    ("telemetry.alerts.**", RestartOnly, "the alert rules are copied into their task at start"),
    (
        "telemetry.anchor_period_ms",
        Live,
        "the anchor task reads it for each period; a new value counts from the end of the current wait",
    ),
    (
        "etcd.**",
        RestartOnly,
        "the election and the leader watch are started with the cluster and the lease timing; a live \
         change would re-time a lease in force, or move the election, under a running leader",
    ),
    ("shutdown_grace_ms", Live, "read when the drain starts"),
];

/// Whether `pattern` (of [`FIELDS`]) covers the field `path`.
fn covers(pattern: &str, path: &str) -> bool {
    let (mut p, mut s) = (pattern.split('.'), path.split('.'));
    loop {
        match (p.next(), s.next()) {
            (Some("**"), _) | (None, None) => return true,
            // An empty map is one leaf: the map itself.
            (Some("*"), None) => return p.next().is_none(),
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The class of the field `path` (dotted, map keys included); `None` for a path no entry
/// covers (the tests keep that from happening; a reload treats it as restart-only).
pub fn class(path: &str) -> Option<Reload> {
    FIELDS.iter().find(|(pattern, _, _)| covers(pattern, path)).map(|(_, class, _)| *class)
}

/// Every leaf of `config` by path: scalars, lists, nulls and empty maps.
pub fn leaves(config: &DaemonConfig) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&path, x, out);
                }
            }
            _ => {
                out.insert(prefix.to_owned(), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    // Plain data with string keys: serialising it cannot fail.
    walk("", &serde_json::to_value(config).unwrap_or_default(), &mut out);
    out
}

/// The secrets of `config` by path, exposed, for comparison only (never logged).
pub fn secrets(config: &DaemonConfig) -> BTreeMap<String, &str> {
    let mut out: BTreeMap<String, &str> =
        config.houses.iter().map(|(h, e)| (format!("houses.{h}.auth_token"), e.auth_token.expose())).collect();
    if let Some(t) = &config.triage {
        out.insert("triage.webhook_secret".into(), t.webhook_secret.expose());
        out.insert("triage.gitea.token".into(), t.gitea.token.expose());
    }
    if let Some(g) = &config.worker.library.gitea {
        out.insert("worker.library.gitea.token".into(), g.token.expose());
    }
    out
}

/// The fields whose values differ between `old` and `new`, by path, in order.
pub fn changed(old: &DaemonConfig, new: &DaemonConfig) -> Vec<String> {
    let (a, b) = (leaves(old), leaves(new));
    let (sa, sb) = (secrets(old), secrets(new));
    let by_value = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k));
    let secret = sa.keys().chain(sb.keys()).filter(|k| sa.get(*k) != sb.get(*k));
    let all: BTreeSet<&String> = by_value.chain(secret).collect();
    all.into_iter().cloned().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A config with every option set and every map non-empty, so every field has a leaf.
    pub(crate) const FULL: &str = "house: timmy
node: timmy-node
roles: [worker, router, health, sovereign, triage, telemetry]
listen: {grpc: 127.0.0.1:7401, http: 127.0.0.1:7481}
tls: {ca: /ca.pem, cert: /cert.pem, key: /key.pem, server_name: fleet}
plaintext_loopback: true
log: {format: json, level: info}
http: {metrics_token_file: /metrics.token, header_timeout_ms: 1000, idle_timeout_ms: 2000}
houses:
  timmy: {endpoint: 127.0.0.1:7401, auth_token: timmy-token-0123456789, role: sovereign, priority: 1, nodes: [timmy-node], http_endpoint: 127.0.0.1:7481}
  ezra: {endpoint: 127.0.0.1:7403, auth_token: ezra-token-0123456789, role: archivist, priority: 3}
router: {routes: {file: [ezra, timmy]}, submitters: [timmy], max_tasks: 10, submit_wait_ms: 10, dispatch_timeout_ms: 10}
health: {interval_ms: 100, timeout_ms: 100, down_after: 2}
worker:
  max_concurrency: 8
  max_queued: 16
  default_mode: simple
  dispatchers: [timmy]
  timmy_pubkey: /timmy.pub
  approval_wait_ms: 1000
  audit_all_modes: false
  once: {retention_ms: 1000, max_rows: 10}
  library:
    node: timmy-node
    home: /home
    file_roots: [/srv]
    timeouts_ms: {file_read: 100}
    gitea: {base_url: 'http://127.0.0.1:3000', token: gitea-token-0123456789, owner: o, repo: r}
sovereign: {key_file: /timmy.key, token_ttl_ms: 10, pending_ttl_ms: 10, max_pending: 4}
triage:
  gitea: {base_url: 'http://127.0.0.1:3000', token: gitea-token-0123456789}
  webhook_secret: webhook-secret-0123456789
  repos: [o/r]
  bot_user: bot
  router_house: timmy
  rules: [{name: bug, match: {keywords: [bug]}, category: bug, house: timmy}]
telemetry:
  hermes_home: /hermes
  hook_deny: [terminal]
  alerts: {webhook: 'http://127.0.0.1:9/', node_down_ms: 1, breaker_open_ms: 1, buffered_above: 1, lag_above_ms: 1}
etcd:
  endpoints: ['http://127.0.0.1:2379', 'http://127.0.0.1:2380']
  prefix: /uni-wizard-test
  lease_ttl_ms: 3000
  keepalive_ms: 500
  fence_margin_ms: 600
  connect_timeout_ms: 500
  request_timeout_ms: 800
shutdown_grace_ms: 100
";

    pub(crate) fn full() -> DaemonConfig {
        DaemonConfig::parse(FULL, "full.yaml", &|_| None).expect("the full config is valid")
    }

    /// Proves every field of the config (every leaf of a config with every option set) is
    /// either live or restart-only, so a new field cannot be added without choosing.
    #[test]
    fn every_field_is_live_or_restart_only() {
        let unclassified: Vec<String> = leaves(&full()).into_keys().filter(|p| class(p).is_none()).collect();
        assert!(unclassified.is_empty(), "fields in neither class (add them to reload::FIELDS): {unclassified:?}");
        let minimal = DaemonConfig::parse(
            "house: ezra\nplaintext_loopback: true\nlisten: {grpc: 127.0.0.1:1, http: 127.0.0.1:2}\n\
             houses:\n  ezra: {endpoint: 127.0.0.1:1, auth_token: ezra-token-0123456789}\n",
            "min.yaml",
            &|_| None,
        )
        .expect("valid");
        let unclassified: Vec<String> = leaves(&minimal).into_keys().filter(|p| class(p).is_none()).collect();
        assert!(unclassified.is_empty(), "unset options and empty maps too: {unclassified:?}");
    }

    /// Proves every entry of the table names a field that exists (no stale entries), and only
    /// restart-only entries cover a subtree.
    #[test]
    fn every_entry_names_a_field() {
        let all = leaves(&full());
        for (pattern, class, _) in FIELDS {
            assert!(all.keys().any(|p| covers(pattern, p)) || *pattern == "triage", "no field `{pattern}`");
            assert!(!pattern.ends_with("**") || *class == RestartOnly, "a live entry names one leaf: {pattern}");
        }
    }

    /// Proves every redacted leaf is compared by value, so a changed secret is seen.
    #[test]
    fn every_secret_is_compared_by_value() {
        let c = full();
        let redacted: Vec<String> = leaves(&c).into_iter().filter(|(_, v)| v == "[redacted]").map(|(k, _)| k).collect();
        let known = secrets(&c);
        assert!(!redacted.is_empty());
        for path in redacted {
            assert!(known.contains_key(&path), "secret `{path}` is not in reload::secrets");
        }
        let mut new = c.clone();
        new.houses.get_mut(&uni_wizard::House::Ezra).expect("ezra").auth_token =
            crate::config::Secret::new("ezra-token-9876543210");
        assert_eq!(changed(&c, &new), vec!["houses.ezra.auth_token".to_owned()]);
    }

    /// Proves patterns match map keys with `*` (an empty map too) and subtrees with `**`.
    #[test]
    fn patterns_cover_keys_and_subtrees() {
        assert!(covers("houses.*.endpoint", "houses.ezra.endpoint"));
        assert!(!covers("houses.*.endpoint", "houses.ezra.role"));
        assert!(covers("router.routes.*", "router.routes.file") && covers("router.routes.*", "router.routes"));
        assert!(covers("worker.library.**", "worker.library.executor.retry.max_attempts"));
        assert!(!covers("worker.max_queued", "worker.max_queued_x") && !covers("log", "log.level"));
        assert_eq!(class("worker.library.file_roots"), Some(RestartOnly));
        assert_eq!(class("worker.max_concurrency"), Some(Live));
    }
}
