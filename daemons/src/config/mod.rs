//! The daemon configuration, the one home of every setting: the fleet (`houses:`), this node's
//! identity, and each role's section.
//!
//! - this module: [`DaemonConfig`], the node's file: house, node name, roles, listeners, TLS,
//!   the HTTP port, the fleet, and validation naming file, line and field; [`DaemonConfig::home`],
//!   the node's state directory every role keeps its files in.
//! - [`reload`]: which fields a hot reload applies and which wait for a restart (one table),
//!   and the diff of two configs by field path.
//! - [`roles`]: the sections of the router, health, worker and sovereign roles.
//! - [`etcd`]: the optional `etcd:` section, router leadership through etcd (endpoints,
//!   prefix, lease timing and why it is what it is).
//! - [`telemetry`]: the `telemetry` role's section, alerts included.
//! - [`triage`]: the `triage` role's section: Gitea, webhook, repositories, the rules, and
//!   their checks (the regexes the role runs are compiled by the same function).
//! - [`yaml`]: loading any YAML file: `${ENV}` expansion, strict fields, errors that name the
//!   place (re-exported here: [`load`], [`parse`], [`expand`], [`load_library`]).
//!
//! The roles import their settings from here; nothing here imports a role.
//!
//! One YAML file per node (`configs/houses.yaml` is the commented example). The `houses:`
//! section is the same on every node: each house's endpoint, its auth token (from the
//! environment, `${TIMMY_TOKEN}`), its role and its priority. The rest says what this node is:
//! which house it serves as, where it listens, whether it speaks TLS, and the settings of the
//! roles it runs. [`DaemonConfig::load`] expands, parses strictly and validates, naming file,
//! line and field for the first problem.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use uni_wizard::{Error, ErrorCode, House};

pub mod etcd;
pub mod reload;
pub mod roles;
pub mod telemetry;
pub mod triage;
pub mod yaml;

pub use roles::{HealthConfig, OnceConfig, RouterConfig, SovereignConfig, WorkerConfig};
pub use yaml::{expand, load, load_library, parse};

/// Everything one node's daemons read from their config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// The house this node serves as.
    pub house: House,
    /// This node's name in logs, provenance and telemetry (default: the host name).
    #[serde(default)]
    pub node: Option<String>,
    /// Which roles run in this process (default: the house's usual ones, see [`Role`]).
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Where this node listens.
    pub listen: Listen,
    /// TLS for every gRPC link (server and client side). Without it, only loopback plaintext.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Allows plaintext gRPC; accepted only when every address involved is loopback.
    #[serde(default)]
    pub plaintext_loopback: bool,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The HTTP port: who may read `/metrics` and `/triage/status`, and connection timeouts.
    #[serde(default)]
    pub http: HttpConfig,
    /// The fleet, the same on every node.
    pub houses: BTreeMap<House, HouseEntry>,
    /// Router settings.
    #[serde(default)]
    pub router: RouterConfig,
    /// Health prober settings.
    #[serde(default)]
    pub health: HealthConfig,
    /// Worker settings.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// Sovereign (approval) service settings; Timmy only.
    #[serde(default)]
    pub sovereign: SovereignConfig,
    /// Gitea triage settings; required when the node runs the `triage` role.
    #[serde(default)]
    pub triage: Option<triage::TriageConfig>,
    /// Telemetry settings (the `telemetry` role).
    #[serde(default)]
    pub telemetry: telemetry::TelemetryConfig,
    /// Router leadership through etcd; none: a single router, as a single host needs no etcd.
    /// An `etcd:` key with nothing under it is refused, not read as none: a node left without
    /// the section by a slip would fence differently from the rest of the fleet.
    #[serde(default, deserialize_with = "etcd::present")]
    pub etcd: Option<etcd::EtcdConfig>,
    /// How long draining may take after SIGTERM before in-flight calls are cut, milliseconds.
    #[serde(default = "default_grace_ms")]
    pub shutdown_grace_ms: u64,
}

fn default_grace_ms() -> u64 {
    10_000
}

/// A role a daemon process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts tasks and routes them to workers.
    Router,
    /// Probes the fleet and keeps the membership view (runs beside a router).
    Health,
    /// Executes tools through the harness.
    Worker,
    /// Timmy's approval service.
    Sovereign,
    /// Gitea triage: webhooks and polling, rules, routing issues to houses.
    Triage,
    /// The telemetry bridge (Hermes tailer, outbox, stream to Timmy); on Timmy also the sink.
    Telemetry,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 6] =
        [Role::Router, Role::Health, Role::Worker, Role::Sovereign, Role::Triage, Role::Telemetry];

    /// The lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Health => "health",
            Role::Worker => "worker",
            Role::Sovereign => "sovereign",
            Role::Triage => "triage",
            Role::Telemetry => "telemetry",
        }
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Role, Error> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            Error::new(ErrorCode::ConfigInvalid, format!("unknown role `{s}`"))
                .with_details(json!({ "role": s, "known": Role::ALL.map(Role::as_str) }))
        })
    }
}

/// Listening addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// gRPC (every service of the node, health and reflection included).
    pub grpc: SocketAddr,
    /// HTTP: `/metrics` and `/health`.
    pub http: SocketAddr,
}

/// The HTTP port (`listen.http`).
///
/// `/health` answers anyone (probes and load balancers carry no secret). `/metrics` and
/// `/triage/status` want `Authorization: Bearer <token>` with the token in
/// `metrics_token_file`, as Prometheus sends it from `authorization: {credentials_file: F}`;
/// without a token file they answer 401 unless `metrics_open` says otherwise. The Gitea
/// webhook authenticates each delivery by its HMAC instead (Gitea sends no bearer token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// A file holding the bearer token of `/metrics` and `/triage/status` (surrounding
    /// whitespace trimmed, at least 16 characters, never logged). Read at start (unreadable:
    /// exit 64) and again whenever the file changes.
    pub metrics_token_file: Option<PathBuf>,
    /// Serve `/metrics` and `/triage/status` without a token. Accepted only when
    /// `listen.http` is a loopback address, and not together with `metrics_token_file`.
    pub metrics_open: bool,
    /// A client must send a request's whole header within this, milliseconds; it is also the
    /// longest a kept-alive connection waits for its next request.
    pub header_timeout_ms: u64,
    /// A connection on which nothing was read or written for this long is closed, ms.
    pub idle_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig { metrics_token_file: None, metrics_open: false, header_timeout_ms: 10_000, idle_timeout_ms: 60_000 }
    }
}

impl HttpConfig {
    /// The header read timeout.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// One house of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HouseEntry {
    /// Its gRPC endpoint, `host:port`.
    pub endpoint: String,
    /// The secret it authenticates with; compared in constant time, never logged.
    pub auth_token: Secret,
    /// Its role in one word (free text for operators, e.g. `sovereign`, `dispatch`).
    #[serde(default)]
    pub role: String,
    /// Lower goes first when several houses fit a task equally.
    #[serde(default)]
    pub priority: u32,
    /// The node names this house's nodes stream telemetry under: Timmy's sink takes a node's
    /// events only from the house its name is bound to (see [`DaemonConfig::node_house`]).
    /// Unset: the names that start with the house's own (`ezra`, `ezra-…`, `ezra.…`). `[]`:
    /// none, the house streams nothing.
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    /// Its HTTP port, `host:port` (its `listen.http` as others reach it), where
    /// `uni-wizard status` reads its `/health`, `/metrics` and `/triage/status`. Unset: status
    /// shows those figures as unavailable for the house (this node's own house falls back to
    /// its `listen.http`). Nothing else reads it.
    #[serde(default)]
    pub http_endpoint: Option<String>,
}

/// A secret string: `Debug` and `Serialize` never show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// TLS files (PEM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The fleet's CA: verifies peers' certificates, both ways.
    pub ca: PathBuf,
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The name to expect in peers' server certificates (default: the endpoint's host).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Log format and level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `uni_wizard=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl DaemonConfig {
    /// Reads, expands, parses and validates a config file.
    ///
    /// # Errors
    /// E4001 naming the file, the line and the field.
    pub fn load(path: &Path) -> Result<DaemonConfig, Error> {
        let config: DaemonConfig = load(path)?;
        config.validate().map_err(|e| in_file(path, e))?;
        Ok(config)
    }

    /// Checks that the files the config names for TLS (its own, and to etcd) and the metrics
    /// token can be read, so `uni-wizardd --check` on the host refuses what the start would
    /// (`uni-wizard config check` checks the file alone: an example names paths of the host).
    ///
    /// # Errors
    /// E4001 naming the field and the file.
    pub fn check_files(&self) -> Result<(), Error> {
        // Opened, not read: the start reads them (the PEMs are parsed only when used).
        let readable = |field: &str, path: &Path| {
            std::fs::File::open(path).map(drop).map_err(|e| {
                let problem = format!("cannot read {}: {e}", path.display());
                Error::new(ErrorCode::ConfigInvalid, format!("field `{field}`: {problem}"))
                    .with_details(json!({ "field": field, "problem": problem }))
            })
        };
        if let Some(t) = &self.tls {
            readable("tls.ca", &t.ca)?;
            readable("tls.cert", &t.cert)?;
            readable("tls.key", &t.key)?;
        }
        if let Some(t) = self.etcd.as_ref().and_then(|e| e.tls.as_ref()) {
            readable("etcd.tls.ca", &t.ca)?;
            if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
                readable("etcd.tls.cert", cert)?;
                readable("etcd.tls.key", key)?;
            }
        }
        if let Some(f) = &self.http.metrics_token_file {
            readable("http.metrics_token_file", f)?;
        }
        Ok(())
    }

    /// Parses and validates text already read (`file` names it in errors).
    ///
    /// # Errors
    /// As [`DaemonConfig::load`].
    pub fn parse(text: &str, file: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<DaemonConfig, Error> {
        let expanded = expand(text, file, lookup)?;
        let config: DaemonConfig = parse(&expanded, file)?;
        config.validate().map_err(|e| in_file(Path::new(file), e))?;
        Ok(config)
    }

    /// The roles this process runs: configured, else the house's usual set.
    pub fn roles(&self) -> Vec<Role> {
        if !self.roles.is_empty() {
            return self.roles.clone();
        }
        match self.house {
            House::Timmy => vec![Role::Router, Role::Health, Role::Worker, Role::Sovereign],
            House::Allegro => vec![Role::Router, Role::Health, Role::Worker],
            House::Ezra | House::Bezalel => vec![Role::Worker],
        }
    }

    /// The node's state directory (`worker.library.home`, else `$UNI_WIZARD_HOME`, else
    /// `~/.local/share/uni-wizard`): the audit store, the pattern DB, the telemetry outbox and
    /// sink, `sovereign.db` and `triage.db` live here, whichever roles the node runs.
    pub fn home(&self) -> PathBuf {
        self.worker.library.home_dir()
    }

    /// The node name: configured, else the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| self.worker.library.node_name())
    }

    /// The house a node name is bound to, which alone may stream telemetry under it:
    ///
    /// 1. the house whose `houses.<house>.nodes` lists the name;
    /// 2. else a house without `nodes` whose name the node name is or starts with, followed by
    ///    `-` or `.` (`bezalel`, `bezalel-node`, `bezalel.fleet.internal`);
    /// 3. else, on Timmy when Timmy has no `nodes`, Timmy's own [`node_name`] (so the sink
    ///    takes its own node's events under the host name, as before).
    ///
    /// No binding is first come: a house can never take another's name, and a name no rule
    /// binds is refused to every house.
    ///
    /// [`node_name`]: DaemonConfig::node_name
    pub fn node_house(&self, node: &str) -> Option<House> {
        if let Some(house) = self.declared_house(node) {
            return Some(house);
        }
        let by_name = self.houses.iter().find(|(h, e)| {
            e.nodes.is_none()
                && node
                    .strip_prefix(h.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('-') || rest.starts_with('.'))
        });
        if let Some((house, _)) = by_name {
            return Some(*house);
        }
        (self.house == House::Timmy && self.me().nodes.is_none() && node == self.node_name()).then_some(House::Timmy)
    }

    /// The house whose `houses.<house>.nodes` lists `node`, if any.
    fn declared_house(&self, node: &str) -> Option<House> {
        self.houses.iter().find(|(_, e)| e.nodes.as_ref().is_some_and(|n| n.iter().any(|x| x == node))).map(|(h, _)| *h)
    }

    /// This node's own entry in `houses:`.
    pub fn me(&self) -> &HouseEntry {
        // validate() insists the entry exists; a config is never used unvalidated.
        &self.houses[&self.house]
    }

    /// Checks what the types alone do not.
    ///
    /// # Errors
    /// E4001 naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, problem: String| {
            Err(Error::new(ErrorCode::ConfigInvalid, format!("field `{field}`: {problem}"))
                .with_details(json!({ "field": field, "problem": problem })))
        };
        if !self.houses.contains_key(&self.house) {
            return bad("houses", format!("this node's house `{}` has no entry", self.house));
        }
        for (house, entry) in &self.houses {
            let field = format!("houses.{house}");
            if entry.auth_token.expose().len() < 16 {
                return bad(&format!("{field}.auth_token"), "must be at least 16 characters".into());
            }
            if let Err(e) = parse_endpoint(&entry.endpoint) {
                return bad(&format!("{field}.endpoint"), e);
            }
            if let Some(Err(e)) = entry.http_endpoint.as_deref().map(parse_endpoint) {
                return bad(&format!("{field}.http_endpoint"), e);
            }
            for node in entry.nodes.iter().flatten() {
                if node.is_empty() || node.len() > 256 {
                    return bad(&format!("{field}.nodes"), "a node name is 1 to 256 characters".into());
                }
                let other =
                    self.houses.iter().find(|(h, e)| *h != house && e.nodes.as_ref().is_some_and(|n| n.contains(node)));
                if let Some((other, _)) = other {
                    return bad(&format!("{field}.nodes"), format!("node `{node}` is bound to {other} too"));
                }
            }
        }
        let mut tokens: Vec<&str> = self.houses.values().map(|e| e.auth_token.expose()).collect();
        tokens.sort_unstable();
        if tokens.windows(2).any(|w| w[0] == w[1]) {
            return bad("houses", "two houses share an auth_token; each house needs its own".into());
        }
        if self.tls.is_none() {
            if !self.plaintext_loopback {
                return bad("tls", "no TLS configured: set `tls` (or `plaintext_loopback: true` on loopback)".into());
            }
            if !self.listen.grpc.ip().is_loopback() {
                return bad("listen.grpc", "plaintext is allowed only on a loopback address".into());
            }
            for (house, entry) in &self.houses {
                let host = parse_endpoint(&entry.endpoint).map(|(h, _)| h).unwrap_or_default();
                if !is_loopback_host(&host) {
                    return bad(
                        &format!("houses.{house}.endpoint"),
                        "plaintext is allowed only to loopback endpoints; configure `tls`".into(),
                    );
                }
            }
        }
        if self.http.metrics_open && self.http.metrics_token_file.is_some() {
            return bad("http.metrics_open", "set either `metrics_token_file` or `metrics_open`, not both".into());
        }
        if self.http.metrics_open && !self.listen.http.ip().is_loopback() {
            return bad(
                "http.metrics_open",
                "an open /metrics is allowed only on a loopback `listen.http`; use `metrics_token_file`".into(),
            );
        }
        if !(10..=600_000).contains(&self.http.header_timeout_ms) {
            return bad("http.header_timeout_ms", "must be 10 to 600000".into());
        }
        if !(10..=3_600_000).contains(&self.http.idle_timeout_ms) {
            return bad("http.idle_timeout_ms", "must be 10 to 3600000".into());
        }
        if self.roles().contains(&Role::Sovereign) && self.house != House::Timmy {
            return bad("roles", "only Timmy runs the sovereign role".into());
        }
        for (key, houses) in &self.router.routes {
            if houses.is_empty() {
                return bad(&format!("router.routes.{key}"), "lists no house".into());
            }
        }
        if self.health.interval_ms == 0 || self.health.timeout_ms == 0 || self.health.down_after == 0 {
            return bad("health", "interval_ms, timeout_ms and down_after must be positive".into());
        }
        if self.worker.max_concurrency == 0 {
            return bad("worker.max_concurrency", "must be positive".into());
        }
        if self.worker.once.retention_ms == 0 {
            return bad("worker.once.retention_ms", "must be positive".into());
        }
        if self.worker.once.max_rows == 0 || self.worker.once.max_rows > i64::MAX as u64 {
            return bad("worker.once.max_rows", "must be positive".into());
        }
        if self.router.max_tasks == 0 {
            return bad("router.max_tasks", "must be positive".into());
        }
        match &self.triage {
            Some(t) => t.validate().map_err(|e| triage::field_error("triage", e))?,
            None if self.roles().contains(&Role::Triage) => {
                return bad("triage", "the node runs the triage role but has no `triage:` section".into());
            }
            None => {}
        }
        self.telemetry.validate().map_err(|e| in_field("telemetry", e))?;
        if let Some(etcd) = &self.etcd {
            etcd.validate().map_err(|e| in_field("etcd", e))?;
        }
        // A node that streams must not contradict the declared bindings. (An undeclared name
        // that no default binds is only warned about when the bridge starts: configs from
        // before `nodes` existed still load.)
        if self.roles().contains(&Role::Telemetry) {
            let name = self.node_name();
            match (self.declared_house(&name), self.me().nodes.is_some()) {
                (Some(h), _) if h != self.house => {
                    return bad("node", format!("node `{name}` is bound to {h} (houses.{h}.nodes)"));
                }
                (None, true) => {
                    return bad(
                        "node",
                        format!("node `{name}` is not among houses.{}.nodes: Timmy's sink would refuse it", self.house),
                    );
                }
                _ => {}
            }
        }
        self.worker.library.validate().map_err(|e| {
            let field = format!("worker.library.{}", e.details["field"].as_str().unwrap_or(""));
            Error::new(ErrorCode::ConfigInvalid, format!("field `{field}`: {}", e.message))
                .with_details(json!({ "field": field }))
        })?;
        if let Some(p) = &self.worker.library.policy {
            uni_wizard::harness::check_policy(self.house, p).map_err(|e| in_field("worker.library.policy", e))?;
        }
        Ok(())
    }

    /// The health prober's interval.
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.health.interval_ms)
    }
}

/// Prefixes the `field` detail of a section's error with the section's name.
/// Reads a PEM file for TLS (the node's, or etcd's).
///
/// # Errors
/// E4001 naming the file.
pub fn read_tls_file(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        Error::new(ErrorCode::ConfigInvalid, format!("cannot read TLS file {}: {e}", path.display()))
            .with_details(json!({ "file": path.display().to_string() }))
    })
}

fn in_field(section: &str, e: Error) -> Error {
    let field = format!("{section}.{}", e.details["field"].as_str().unwrap_or(""));
    Error::new(ErrorCode::ConfigInvalid, format!("field `{field}`: {}", e.message))
        .with_details(json!({ "field": field }))
}

fn in_file(path: &Path, e: Error) -> Error {
    let file = path.display().to_string();
    let field = e.details["field"].as_str().unwrap_or("").to_owned();
    let line = find_line(path, &field);
    let place = match line {
        Some(l) => format!("{file}:{l}"),
        None => file.clone(),
    };
    Error::new(ErrorCode::ConfigInvalid, format!("{place}: {}", e.message))
        .with_details(json!({ "file": file, "line": line, "field": field }))
}

/// The line of the last key of a dotted field path, found by scanning the file's keys in order.
fn find_line(path: &Path, field: &str) -> Option<usize> {
    let text = yaml::read_bounded(path).ok()?;
    let mut line_no = 0;
    let mut lines = text.lines().enumerate();
    for key in field.split('.').filter(|k| !k.is_empty()) {
        let (i, _) = lines.find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.strip_prefix(key).is_some_and(|rest| rest.starts_with(':'))
        })?;
        line_no = i + 1;
    }
    (line_no > 0).then_some(line_no)
}

/// Splits `host:port` (`[v6]:port` for IPv6).
///
/// # Errors
/// A sentence saying what is wrong.
pub fn parse_endpoint(endpoint: &str) -> Result<(String, u16), String> {
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(|| format!("`{endpoint}` is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{endpoint}` has no host"));
    }
    let port: u16 = port.parse().map_err(|_| format!("`{endpoint}` has no valid port"))?;
    Ok((host.to_owned(), port))
}

/// Whether a host name or address is loopback (`localhost`, 127.0.0.0/8, ::1).
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves loading a node config checks the files it names can be read (the daemon's TLS,
    /// etcd's TLS, the metrics token), naming the field: `--check` refuses what the start would.
    #[test]
    fn loading_refuses_files_that_cannot_be_read() {
        let dir = tempfile::tempdir().expect("dir");
        let base = "house: timmy\nplaintext_loopback: true\nlisten: {grpc: 127.0.0.1:1, http: 127.0.0.1:2}\nhouses:\n  timmy: {endpoint: 127.0.0.1:1, auth_token: timmy-token-0123456789}\n";
        let load = |extra: &str| {
            let path = dir.path().join("node.yaml");
            std::fs::write(&path, format!("{base}{extra}")).expect("write");
            DaemonConfig::load(&path).and_then(|c| c.check_files().map(|()| c))
        };
        assert!(load("").is_ok());
        let token = dir.path().join("metrics.token");
        std::fs::write(&token, "t0k3n-for-scrapes").expect("token");
        assert!(load(&format!("http: {{metrics_token_file: {}}}\n", token.display())).is_ok());
        for (extra, field) in [
            ("http: {metrics_token_file: /nonexistent/metrics.token}\n", "http.metrics_token_file"),
            ("etcd: {endpoints: ['https://127.0.0.1:2379'], tls: {ca: /nonexistent/etcd-ca.pem}}\n", "etcd.tls.ca"),
        ] {
            let e = load(extra).expect_err(field);
            assert_eq!(e.code, ErrorCode::ConfigInvalid, "{}", e.message);
            assert_eq!(e.details["field"], field, "{}", e.message);
            assert!(e.message.contains("/nonexistent/"), "{}", e.message);
        }
    }

    const GOOD: &str = "house: ezra
listen: {grpc: 127.0.0.1:7403, http: 127.0.0.1:7483}
plaintext_loopback: true
houses:
  timmy: {endpoint: 127.0.0.1:7401, auth_token: ${TIMMY_TOKEN}, role: sovereign, priority: 1}
  ezra: {endpoint: 127.0.0.1:7403, auth_token: ezra-token-0123456789, role: archivist, priority: 3}
";

    fn env(name: &str) -> Option<String> {
        (name == "TIMMY_TOKEN").then(|| "timmy-token-0123456789".to_owned())
    }

    /// Proves a minimal config parses, expands its secrets and picks the house's usual roles.
    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = DaemonConfig::parse(GOOD, "houses.yaml", &env).expect("valid");
        assert_eq!(c.house, House::Ezra);
        assert_eq!(c.roles(), vec![Role::Worker]);
        assert_eq!(c.houses[&House::Timmy].auth_token.expose(), "timmy-token-0123456789");
        assert!(!format!("{c:?}").contains("timmy-token"), "secrets never shown by Debug");
    }

    /// Proves plaintext to a non-loopback endpoint is refused, naming the field.
    #[test]
    fn plaintext_off_loopback_is_refused() {
        let text = GOOD.replace("127.0.0.1:7401", "10.1.2.3:7401");
        let e = DaemonConfig::parse(&text, "houses.yaml", &env).expect_err("refused");
        assert_eq!(e.code, ErrorCode::ConfigInvalid);
        assert!(e.message.contains("houses.timmy.endpoint"), "{}", e.message);
    }

    /// Proves a shared token, a short token and a sovereign role off Timmy are each refused.
    #[test]
    fn weak_or_wrong_settings_are_refused() {
        let shared = GOOD.replace("ezra-token-0123456789", "timmy-token-0123456789");
        assert!(DaemonConfig::parse(&shared, "f", &env).is_err());
        let short = GOOD.replace("ezra-token-0123456789", "short");
        let e = DaemonConfig::parse(&short, "f", &env).expect_err("short");
        assert!(e.message.contains("auth_token"), "{}", e.message);
        let sovereign = format!("{GOOD}roles: [sovereign]\n");
        assert!(DaemonConfig::parse(&sovereign, "f", &env).is_err());
    }

    /// Proves node names bind to houses by declaration first, then by the house's name, Timmy's
    /// own name on Timmy, and never to whoever asks: a declared name belongs to its house only.
    #[test]
    fn node_names_bind_to_houses_by_config() {
        let text = GOOD.replace("priority: 3}", "priority: 3, nodes: [archive-box]}");
        let c = DaemonConfig::parse(&text, "houses.yaml", &env).expect("valid");
        assert_eq!(c.node_house("archive-box"), Some(House::Ezra));
        assert_eq!(c.node_house("timmy-local"), Some(House::Timmy), "an undeclared house: its name's prefix");
        assert_eq!(c.node_house("timmy"), Some(House::Timmy));
        assert_eq!(c.node_house("ezra-node"), None, "ezra declares its nodes, so no prefix default");
        assert_eq!(c.node_house("timmyish"), None, "a prefix ends at `-` or `.`");
        assert_eq!(c.node_house("bezalel-node"), None, "bezalel is not in this fleet");
        let timmy = format!("{}\nnode: workstation\n", GOOD.replace("house: ezra", "house: timmy"));
        let c = DaemonConfig::parse(&timmy, "houses.yaml", &env).expect("valid");
        assert_eq!(c.node_house("workstation"), Some(House::Timmy), "Timmy's own name on Timmy");
    }

    /// Proves a node name bound to two houses, an empty one, and a streaming node whose name
    /// its house's `nodes` do not list are each refused with E4001 naming the field.
    #[test]
    fn contradictory_node_bindings_are_refused() {
        let field = |text: &str| {
            let e = DaemonConfig::parse(text, "houses.yaml", &env).expect_err("refused");
            assert_eq!(e.code, ErrorCode::ConfigInvalid);
            e.details["field"].as_str().unwrap_or_default().to_owned()
        };
        let twice = GOOD
            .replace("priority: 1}", "priority: 1, nodes: [shared]}")
            .replace("priority: 3}", "priority: 3, nodes: [shared]}");
        assert_eq!(field(&twice), "houses.timmy.nodes");
        assert_eq!(field(&GOOD.replace("priority: 3}", "priority: 3, nodes: ['']}")), "houses.ezra.nodes");
        let unlisted = format!(
            "{}roles: [worker, telemetry]\nnode: ezra-2\n",
            GOOD.replace("priority: 3}", "priority: 3, nodes: [ezra-1]}")
        );
        assert_eq!(field(&unlisted), "node");
        let theirs = format!(
            "{}roles: [worker, telemetry]\nnode: t1\n",
            GOOD.replace("priority: 1}", "priority: 1, nodes: [t1]}")
        );
        assert_eq!(field(&theirs), "node");
        let listed = unlisted.replace("node: ezra-2", "node: ezra-1");
        assert!(DaemonConfig::parse(&listed, "houses.yaml", &env).is_ok());
    }

    /// Proves `http.metrics_open` is refused off loopback and beside a token file, and the
    /// timeouts are bounded, each naming its field.
    #[test]
    fn http_settings_are_checked() {
        let field = |http: &str, listen: &str| {
            let text = format!("{}http: {http}\n", GOOD.replace("127.0.0.1:7483", listen));
            DaemonConfig::parse(&text, "f", &env)
                .err()
                .map(|e| e.details["field"].as_str().unwrap_or_default().to_owned())
        };
        assert_eq!(field("{metrics_open: true}", "127.0.0.1:7483"), None);
        assert_eq!(field("{metrics_open: true}", "0.0.0.0:7483").as_deref(), Some("http.metrics_open"));
        let both = "{metrics_open: true, metrics_token_file: /t}";
        assert_eq!(field(both, "127.0.0.1:7483").as_deref(), Some("http.metrics_open"));
        assert_eq!(field("{metrics_token_file: /t}", "0.0.0.0:7483"), None);
        assert_eq!(field("{header_timeout_ms: 0}", "127.0.0.1:7483").as_deref(), Some("http.header_timeout_ms"));
        assert_eq!(field("{idle_timeout_ms: 0}", "127.0.0.1:7483").as_deref(), Some("http.idle_timeout_ms"));
    }

    /// Proves endpoints split into host and port, IPv6 included, and loopback is recognised.
    #[test]
    fn endpoints_split_and_loopback_is_known() {
        assert_eq!(parse_endpoint("[::1]:80"), Ok(("::1".into(), 80)));
        assert!(parse_endpoint("nohost").is_err());
        assert!(is_loopback_host("127.0.0.2") && is_loopback_host("localhost") && !is_loopback_host("10.0.0.1"));
    }
}
