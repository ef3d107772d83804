//! `uni-wizard fleet init` and `fleet cert`: everything four hosts need to run the fleet, made
//! in one directory on the operator's machine.
//!
//! # What `fleet init --out DIR` writes
//!
//! ```text
//! DIR/fleet.yaml                 the inputs, as given (a re-run reads them; no secret)
//! DIR/NEXT-STEPS.txt             which file goes to which host, and the commands
//! DIR/ca/ca.pem, ca.key          the fleet CA (keep ca.key off the nodes, offline)
//! DIR/secrets/<house>.token      one token per house; metrics.token (the scrape token);
//!                                gitea-webhook.secret and gitea.token with triage
//! DIR/operator/operator.pem,.key a client certificate for the CLI (`--tls-cert/--tls-key`)
//! DIR/<house>/etc/uni-wizard/    what goes to that house's host, as /etc/uni-wizard/:
//!     worker.yaml                  the node's config (its lane's roles, TLS, etcd, the fleet)
//!     env                          the variables it expands (the four tokens; Gitea's on Allegro)
//!     metrics.token                the scrape token, for `http.metrics_token_file`
//!     timmy.pub                    Timmy's public key (approval tokens are checked with it)
//!     timmy.key                    Timmy's signing key (Timmy's directory only)
//!     tls/ca.pem, node.pem, node.key
//! DIR/etcd/<member>/             with https:// etcd endpoints, what goes to that member's host,
//!     ca.pem, member.pem,          as /etc/etcd/: the fleet CA, its server and peer certificate
//!     member.key                   and key (members are `etcd-1`, `etcd-2`, ... in endpoint order)
//! ```
//!
//! Secrets (keys, tokens, `env`) are mode 0600, configs 0640, certificates and public keys
//! 0644, directories 0700 (0750 for the `etc/uni-wizard` trees). Every file is written
//! atomically ([`super::files`]).
//!
//! # Re-running
//!
//! A key or token that exists is never replaced: a re-run reads it and fills in what is
//! missing. A file made from other files (a certificate, a copy of the CA or of Timmy's public
//! key, an `env`) is written when it is missing or when something it is made from was made in
//! this run (a certificate whose key is new is issued again); configs are written only when
//! missing, so edits survive (remove one to have it written again). `NEXT-STEPS.txt` is always
//! rewritten. The inputs are those of `DIR/fleet.yaml` with the flags and `--spec` over them;
//! when they would change what `fleet.yaml` records, init refuses (E1005 naming the field): a
//! directory describes one fleet.
//!
//! # Certificates
//!
//! The daemons check a peer's certificate against the fleet CA both ways (the client side
//! checks the server's name against the endpoint's host, or `tls.server_name`); which house a
//! caller is comes from its token, not its certificate. So a node's certificate carries its
//! endpoint's host as its subject alternative name (an IP address or a DNS name), plus any
//! `sans:` given, the house as its common name, and both server and client authentication.
//! `fleet cert --node N` issues N's certificate again (valid `cert_days` from now, default 825)
//! with the key N has: nothing secret moves, only `node.pem` is copied again. A node whose key
//! was removed gets a new key (key rotation). The CA key must be in `DIR/ca/ca.key`.
//!
//! # etcd
//!
//! With `https://` endpoints (required off loopback, as the `etcd:` section itself insists),
//! each node's `etcd.tls` names the fleet CA and the node's own certificate and key: etcd
//! checks them with `--client-cert-auth` (they carry client authentication), and the nodes check
//! each member's certificate against the same CA and the endpoint's host. Each endpoint is one
//! member, `etcd-<i>`, whose certificate carries the endpoint's host as its SAN and both uses
//! (it serves clients and peers and dials its peers); its peer port is the client port + 1.
//! `fleet cert --etcd-member etcd-2` renews one, as `--node` does a node's.
//!
//! # Paths in the configs
//!
//! By default the configs name the installed paths (`/etc/uni-wizard/...`, state in
//! `/var/lib/uni-wizard`), as the systemd units expect. `--in-place` names the files where init
//! wrote them (`DIR/<house>/etc/uni-wizard/...`, state in `DIR/<house>/var/lib/uni-wizard`), to
//! run the whole fleet from `DIR` on one machine (a trial; the tests).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uni_wizard::tokens;
use uni_wizard::{Error, ErrorCode, House};

use super::files::{self, CONFIG, PUBLIC, SECRET};
use crate::config::etcd::{EtcdConfig, EtcdTls};
use crate::config::{DaemonConfig, parse_endpoint};

/// `uni-wizard fleet ...`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Make a fleet's CA, certificates, tokens, Timmy's key and the four node configs in one
    /// directory; a re-run keeps every key and fills in what is missing.
    Init(Box<InitArgs>),
    /// Issue one node's (or etcd member's) certificate again (new validity, same key) with the
    /// fleet's CA.
    Cert(CertArgs),
}

impl FleetCommand {
    /// Whether JSON was asked for.
    pub fn json(&self) -> bool {
        match self {
            FleetCommand::Init(a) => a.json,
            FleetCommand::Cert(a) => a.json,
        }
    }
}

/// Flags of `uni-wizard fleet init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to write into (created 0700; a re-run fills in what is missing).
    #[arg(long, visible_alias = "dir", value_name = "DIR")]
    pub out: PathBuf,
    /// The inputs as YAML (`houses:`, `etcd:`, `triage:`, as `DIR/fleet.yaml` records them);
    /// the flags below win over it.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Timmy's gRPC endpoint, `host:port` as the other hosts reach it.
    #[arg(long, value_name = "HOST:PORT")]
    pub timmy: Option<String>,
    /// Allegro's gRPC endpoint.
    #[arg(long, value_name = "HOST:PORT")]
    pub allegro: Option<String>,
    /// Ezra's gRPC endpoint.
    #[arg(long, value_name = "HOST:PORT")]
    pub ezra: Option<String>,
    /// Bezalel's gRPC endpoint.
    #[arg(long, value_name = "HOST:PORT")]
    pub bezalel: Option<String>,
    /// The etcd cluster's client URLs, `https://host:2379` (comma-separated or repeated): one
    /// member each, whose certificate init issues; `http://` only on loopback.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Allegro's triage role: the Gitea server's root URL (without it Allegro runs no triage).
    #[arg(long, value_name = "URL")]
    pub gitea_url: Option<String>,
    /// With --gitea-url: a repository triage watches, `owner/name` (repeatable).
    #[arg(long = "gitea-repo", value_name = "OWNER/NAME")]
    pub gitea_repos: Vec<String>,
    /// With --gitea-url: the Gitea login of the triage bot (default `uni-wizard-bot`).
    #[arg(long, value_name = "USER")]
    pub gitea_bot: Option<String>,
    /// With --gitea-url: a file holding the bot's Gitea token (copied to `DIR/secrets/gitea.token`).
    #[arg(long, value_name = "FILE")]
    pub gitea_token_file: Option<PathBuf>,
    /// Name the files where they are written (`DIR/<house>/...`) in the configs, instead of
    /// `/etc/uni-wizard` and `/var/lib/uni-wizard`: to run the fleet from DIR on one machine.
    #[arg(long)]
    pub in_place: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `uni-wizard fleet cert`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("whose").required(true).args(["node", "etcd_member"])))]
pub struct CertArgs {
    /// The fleet directory `fleet init` wrote.
    #[arg(long, visible_alias = "out", value_name = "DIR")]
    pub dir: PathBuf,
    /// Whose certificate: timmy, allegro, ezra, bezalel, or operator (the CLI's).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Or an etcd member's server and peer certificate: its name in `NEXT-STEPS.txt`
    /// (`etcd-1`, `etcd-2`, ...).
    #[arg(long, value_name = "NAME")]
    pub etcd_member: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// The inputs of a fleet: `DIR/fleet.yaml`, `--spec FILE`, and the flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    /// Each house's endpoint and, optionally, where it listens and its node name.
    #[serde(default)]
    pub houses: BTreeMap<House, HouseSpec>,
    /// The `etcd:` section every node gets (router leadership), without `tls`: with `https://`
    /// endpoints init writes each node's `etcd.tls` itself.
    #[serde(default)]
    pub etcd: Option<EtcdConfig>,
    /// Allegro's triage role; none: Allegro runs no triage.
    #[serde(default)]
    pub triage: Option<TriageSpec>,
    /// The configs name the files in the fleet directory (see the module docs).
    #[serde(default)]
    pub in_place: bool,
    /// How long a node certificate is valid, days.
    #[serde(default = "default_cert_days")]
    pub cert_days: u32,
}

impl Default for FleetSpec {
    fn default() -> FleetSpec {
        FleetSpec { houses: BTreeMap::new(), etcd: None, triage: None, in_place: false, cert_days: default_cert_days() }
    }
}

fn default_cert_days() -> u32 {
    825
}

/// One house in the inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HouseSpec {
    /// `host:port` as the other hosts reach its gRPC port; the host goes into its certificate.
    pub endpoint: String,
    /// Where its gRPC port listens (default: the endpoint's address if it is one, else
    /// `0.0.0.0`, on the endpoint's port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Where its HTTP port (`/health`, `/metrics`) listens (default: the gRPC listen address,
    /// port + 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    /// Its node name (default: the house's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// More subject alternative names for its certificate (DNS names or IP addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sans: Vec<String>,
}

/// Allegro's triage role in the inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriageSpec {
    /// The Gitea server's root URL.
    pub gitea_url: String,
    /// The repositories watched, `owner/name`.
    pub repos: Vec<String>,
    /// The bot's Gitea login.
    #[serde(default = "default_bot")]
    pub bot_user: String,
}

fn default_bot() -> String {
    "uni-wizard-bot".into()
}

fn bad_input(field: &str, problem: impl Into<String>) -> Error {
    let problem = problem.into();
    Error::new(ErrorCode::InvalidInput, format!("{field}: {problem}"))
        .with_details(json!({ "field": field, "problem": problem }))
}

impl HouseSpec {
    /// The endpoint's host and port (checked by [`FleetSpec::check`]).
    fn host_port(&self) -> (String, u16) {
        parse_endpoint(&self.endpoint).unwrap_or_default()
    }

    /// Where the gRPC port listens.
    pub fn listen_grpc(&self) -> SocketAddr {
        let (host, port) = self.host_port();
        self.listen.unwrap_or_else(|| {
            let ip = host.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
            SocketAddr::new(ip, port)
        })
    }

    /// Where the HTTP port listens.
    pub fn listen_http(&self) -> SocketAddr {
        self.http.unwrap_or_else(|| {
            let grpc = self.listen_grpc();
            SocketAddr::new(grpc.ip(), grpc.port().saturating_add(80))
        })
    }

    /// The node name.
    pub fn node_name(&self, house: House) -> String {
        self.node.clone().unwrap_or_else(|| house.as_str().to_owned())
    }

    /// The certificate's subject alternative names: the endpoint's host, then `sans`.
    fn san_names(&self) -> Vec<String> {
        let mut names = vec![self.host_port().0];
        for s in &self.sans {
            if !names.contains(s) {
                names.push(s.clone());
            }
        }
        names
    }
}

/// Whether `name` can be a certificate's subject alternative name: an IP address, or a DNS
/// name of letters, digits and hyphens in dot-separated labels.
fn valid_san(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok()
        || (name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

impl FleetSpec {
    /// Lays `other`'s inputs over these (each given house, section and flag replaces this one's).
    fn overlay(&mut self, other: FleetSpec) {
        self.houses.extend(other.houses);
        if other.etcd.is_some() {
            self.etcd = other.etcd;
        }
        if other.triage.is_some() {
            self.triage = other.triage;
        }
        self.in_place |= other.in_place;
        if other.cert_days != default_cert_days() {
            self.cert_days = other.cert_days;
        }
    }

    /// The inputs the flags give (`--spec` aside).
    fn from_flags(a: &InitArgs) -> Result<FleetSpec, Error> {
        let mut spec = FleetSpec { in_place: a.in_place, ..FleetSpec::default() };
        for (house, endpoint) in [
            (House::Timmy, &a.timmy),
            (House::Allegro, &a.allegro),
            (House::Ezra, &a.ezra),
            (House::Bezalel, &a.bezalel),
        ] {
            if let Some(endpoint) = endpoint {
                let entry =
                    HouseSpec { endpoint: endpoint.clone(), listen: None, http: None, node: None, sans: vec![] };
                spec.houses.insert(house, entry);
            }
        }
        if !a.etcd.is_empty() {
            spec.etcd = Some(EtcdConfig::new(a.etcd.clone()));
        }
        match &a.gitea_url {
            Some(url) => {
                let bot_user = a.gitea_bot.clone().unwrap_or_else(default_bot);
                spec.triage = Some(TriageSpec { gitea_url: url.clone(), repos: a.gitea_repos.clone(), bot_user });
            }
            None if !a.gitea_repos.is_empty() || a.gitea_bot.is_some() => {
                return Err(bad_input("--gitea-url", "--gitea-repo and --gitea-bot need --gitea-url"));
            }
            None => {}
        }
        Ok(spec)
    }

    /// Checks the inputs are complete and usable.
    ///
    /// # Errors
    /// E1005 naming the field (`houses.ezra.endpoint`, `etcd.endpoints`, ...).
    pub fn check(&self) -> Result<(), Error> {
        let missing: Vec<&str> =
            House::ALL.iter().filter(|h| !self.houses.contains_key(h)).map(|h| h.as_str()).collect();
        if !missing.is_empty() {
            let flags: Vec<String> = missing.iter().map(|h| format!("--{h} HOST:PORT")).collect();
            return Err(bad_input(
                "houses",
                format!("no endpoint for {}: give {} (or `houses:` in --spec)", missing.join(", "), flags.join(" ")),
            ));
        }
        let mut endpoints = BTreeMap::new();
        for (house, h) in &self.houses {
            let field = |f: &str| format!("houses.{house}.{f}");
            let (host, port) = parse_endpoint(&h.endpoint).map_err(|e| bad_input(&field("endpoint"), e))?;
            if port == 0 {
                return Err(bad_input(&field("endpoint"), format!("`{}` has port 0", h.endpoint)));
            }
            if !valid_san(&host) {
                return Err(bad_input(&field("endpoint"), format!("`{host}` is neither an IP address nor a DNS name")));
            }
            if let Some(other) = endpoints.insert(h.endpoint.clone(), *house) {
                return Err(bad_input(&field("endpoint"), format!("`{}` is {other}'s endpoint too", h.endpoint)));
            }
            if let Some(bad) = h.sans.iter().find(|s| !valid_san(s)) {
                return Err(bad_input(&field("sans"), format!("`{bad}` is neither an IP address nor a DNS name")));
            }
            if h.http.is_none() && h.listen_grpc().port() > u16::MAX - 80 {
                return Err(bad_input(&field("http"), "the gRPC port + 80 is no port: give `http:`"));
            }
            let (grpc, http) = (h.listen_grpc(), h.listen_http());
            if grpc.port() == 0 || http.port() == 0 {
                return Err(bad_input(&field("listen"), "a listen address needs a port"));
            }
            if grpc == http {
                return Err(bad_input(&field("http"), format!("{http} is the gRPC listen address too")));
            }
            let node = h.node_name(*house);
            if node.is_empty() || node.len() > 256 || node.chars().any(char::is_control) {
                return Err(bad_input(&field("node"), "a node name is 1 to 256 characters, none a control character"));
            }
        }
        // Houses on one host (the same endpoint host) must not listen on the same port.
        let houses: Vec<(&House, &HouseSpec)> = self.houses.iter().collect();
        for (i, (house, h)) in houses.iter().enumerate() {
            for (other, o) in &houses[..i] {
                let ports = [o.listen_grpc().port(), o.listen_http().port()];
                let clash = [h.listen_grpc().port(), h.listen_http().port()].into_iter().find(|p| ports.contains(p));
                if let (true, Some(port)) = (same_endpoint_host(h, o), clash) {
                    return Err(bad_input(
                        &format!("houses.{house}.listen"),
                        format!("port {port} is also where {other} listens, on the same host"),
                    ));
                }
            }
        }
        self.check_etcd()?;
        if let Some(t) = &self.triage {
            if !(t.gitea_url.starts_with("https://") || t.gitea_url.starts_with("http://")) {
                return Err(bad_input("triage.gitea_url", format!("`{}` is not an http(s) URL", t.gitea_url)));
            }
            if t.repos.is_empty() {
                return Err(bad_input("triage.repos", "name the repositories triage watches: --gitea-repo OWNER/NAME"));
            }
            let valid = |r: &str| {
                r.split_once('/')
                    .is_some_and(|(o, n)| uni_wizard::gitea::is_valid_name(o) && uni_wizard::gitea::is_valid_name(n))
            };
            if let Some(r) = t.repos.iter().find(|r| !valid(r)) {
                return Err(bad_input("triage.repos", format!("`{r}` is not owner/name")));
            }
            if !uni_wizard::gitea::is_valid_name(&t.bot_user) {
                return Err(bad_input("triage.bot_user", format!("`{}` is not a Gitea login", t.bot_user)));
            }
        }
        if !(1..=3650).contains(&self.cert_days) {
            return Err(bad_input("cert_days", "must be 1 to 3650"));
        }
        Ok(())
    }
}

impl FleetSpec {
    /// Checks the `etcd:` inputs: `https://` endpoints (each a member init issues a
    /// certificate for), or `http://` ones on loopback only; no `tls` (init writes it); the
    /// rest as a node's config checks it.
    fn check_etcd(&self) -> Result<(), Error> {
        let etcd = self.etcd.as_ref().ok_or_else(|| {
            bad_input(
                "etcd",
                "give the etcd cluster's client URLs: --etcd https://HOST:2379,... (or `etcd:` in --spec)",
            )
        })?;
        if etcd.tls.is_some() {
            return Err(bad_input(
                "etcd.tls",
                "fleet init writes `etcd.tls` itself (the fleet CA, each node's certificate and key): remove it \
                 from the inputs",
            ));
        }
        let tls = self.etcd_tls();
        for e in &etcd.endpoints {
            let problem = match etcd_url(e) {
                Some((true, _, _)) if tls => continue,
                Some((false, host, _)) if !tls && crate::config::is_loopback_host(&host) => continue,
                Some((false, host, port)) if !crate::config::is_loopback_host(&host) => format!(
                    "`{e}`: plaintext to etcd is allowed only on loopback (whoever can write to etcd decides who \
                     leads); use https:// (--etcd https://{}:{port}): fleet init then issues the members' \
                     certificates from the fleet CA",
                    url_host(&host),
                ),
                Some(_) => {
                    format!("`{e}`: give every --etcd endpoint the same scheme, https:// (or http:// on loopback)")
                }
                None => format!("`{e}` is not an https://host:port URL (--etcd)"),
            };
            return Err(bad_input("etcd.endpoints", problem));
        }
        // The rest as every node's section is checked (the paths in its `tls` do not matter here).
        self.node_etcd(&Layout { out: PathBuf::from("/"), in_place: false }, House::Timmy).validate().map_err(|e| {
            let field = format!("etcd.{}", e.details["field"].as_str().unwrap_or_default());
            bad_input(&field, e.details["problem"].as_str().unwrap_or(&e.message).to_owned())
        })?;
        let members = self.etcd_members();
        for (i, m) in members.iter().enumerate() {
            if !valid_san(&m.host) {
                return Err(bad_input(
                    "etcd.endpoints",
                    format!("`{}`: `{}` is neither an IP address nor a DNS name", m.endpoint, m.host),
                ));
            }
            let Some(peer) = m.peer_port() else {
                return Err(bad_input(
                    "etcd.endpoints",
                    format!("`{}`: its peer port is the client port + 1, and there is none", m.endpoint),
                ));
            };
            let ports = [m.client_port, peer];
            let house = self.houses.iter().find(|(_, h)| {
                h.host_port().0 == m.host
                    && [h.listen_grpc().port(), h.listen_http().port()].iter().any(|p| ports.contains(p))
            });
            if let Some((house, _)) = house {
                return Err(bad_input(
                    "etcd.endpoints",
                    format!(
                        "`{}`: {house} listens on its host at the member's client or peer port ({} or {peer})",
                        m.endpoint, m.client_port
                    ),
                ));
            }
            for o in &members[..i] {
                let ports = [o.client_port, o.peer_port().unwrap_or_default()];
                if o.host == m.host && (ports.contains(&m.client_port) || ports.contains(&peer)) {
                    return Err(bad_input(
                        "etcd.endpoints",
                        format!(
                            "`{}` and `{}` are on one host and their ports meet (each member takes its client \
                             port and the next, for its peers)",
                            o.endpoint, m.endpoint
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the nodes speak TLS to etcd (its endpoints are `https://`).
    fn etcd_tls(&self) -> bool {
        self.etcd.as_ref().is_some_and(|e| e.endpoints.iter().any(|u| u.starts_with("https://")))
    }

    /// The etcd members init issues certificates for: one per `https://` endpoint, named
    /// `etcd-1`, `etcd-2`, ... in the endpoints' order (none with `http://` endpoints).
    fn etcd_members(&self) -> Vec<EtcdMember> {
        let Some(etcd) = self.etcd.as_ref().filter(|_| self.etcd_tls()) else { return vec![] };
        etcd.endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let (_, host, client_port) = etcd_url(e)?;
                Some(EtcdMember { name: format!("etcd-{}", i + 1), endpoint: e.clone(), host, client_port })
            })
            .collect()
    }

    /// The `etcd:` section of `house`'s config: the inputs', with `tls` (the fleet CA, the
    /// node's own certificate and key) when the endpoints are `https://`.
    fn node_etcd(&self, layout: &Layout, house: House) -> EtcdConfig {
        let mut e = self.etcd.clone().unwrap_or_else(|| EtcdConfig::new(vec![]));
        if self.etcd_tls() {
            let path = |rel: &str| PathBuf::from(layout.etc_named(house, rel));
            e.tls = Some(EtcdTls {
                ca: path("tls/ca.pem"),
                cert: Some(path("tls/node.pem")),
                key: Some(path("tls/node.key")),
                server_name: None,
            });
        }
        e
    }
}

/// An etcd client URL's parts: whether it is `https`, its host and its port (`None`: it is
/// not `http(s)://host:port`, with at most a trailing `/`).
fn etcd_url(url: &str) -> Option<(bool, String, u16)> {
    let (https, rest) = match url.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("http://")?),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = parse_endpoint(authority).ok()?;
    Some((https, host, port))
}

/// A host as a URL names it (an IPv6 address in brackets).
fn url_host(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_owned() }
}

/// One etcd member `fleet init` issues a server and peer certificate for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EtcdMember {
    /// `etcd-1`, ...: its `--name` and its directory, `DIR/etcd/<name>/`.
    name: String,
    /// Its client URL, as given.
    endpoint: String,
    /// The URL's host: its certificate's subject alternative name.
    host: String,
    client_port: u16,
}

impl EtcdMember {
    /// Its peer port: the client port + 1 (2380 for 2379, etcd's own defaults).
    fn peer_port(&self) -> Option<u16> {
        self.client_port.checked_add(1)
    }

    fn client_url(&self) -> String {
        format!("https://{}:{}", url_host(&self.host), self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("https://{}:{}", url_host(&self.host), self.peer_port().unwrap_or_default())
    }

    /// Where it listens: its host if that is an address (etcd binds only to addresses),
    /// 127.0.0.1 for `localhost`, else every address.
    fn listen_host(&self) -> String {
        if self.host.parse::<IpAddr>().is_ok() {
            url_host(&self.host)
        } else if self.host.eq_ignore_ascii_case("localhost") {
            "127.0.0.1".into()
        } else {
            "0.0.0.0".into()
        }
    }
}

/// Whether two houses' endpoints name the same host (then their ports must differ).
fn same_endpoint_host(a: &HouseSpec, b: &HouseSpec) -> bool {
    a.host_port().0 == b.host_port().0
}

/// The first field (dotted path) where two JSON documents differ.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                first_difference(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), &p)
            })
        }
        _ if a == b => None,
        _ => Some(if path.is_empty() { ".".into() } else { path.to_owned() }),
    }
}

/// Where everything lives: in the fleet directory, and as the configs name it.
#[derive(Debug, Clone)]
struct Layout {
    out: PathBuf,
    in_place: bool,
}

impl Layout {
    fn spec(&self) -> PathBuf {
        self.out.join("fleet.yaml")
    }
    fn ca_dir(&self) -> PathBuf {
        self.out.join("ca")
    }
    fn ca_cert(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }
    fn ca_key(&self) -> PathBuf {
        self.ca_dir().join("ca.key")
    }
    fn secrets(&self) -> PathBuf {
        self.out.join("secrets")
    }
    fn token(&self, house: House) -> PathBuf {
        self.secrets().join(format!("{house}.token"))
    }
    fn operator(&self) -> PathBuf {
        self.out.join("operator")
    }
    fn host(&self, house: House) -> PathBuf {
        self.out.join(house.as_str())
    }
    /// The host's `/etc/uni-wizard`, in the fleet directory.
    fn etc(&self, house: House) -> PathBuf {
        self.host(house).join("etc/uni-wizard")
    }
    /// The host's `/var/lib/uni-wizard`, in the fleet directory (`--in-place` only).
    fn state(&self, house: House) -> PathBuf {
        self.host(house).join("var/lib/uni-wizard")
    }
    fn node_cert(&self, house: House) -> PathBuf {
        self.etc(house).join("tls/node.pem")
    }
    fn node_key(&self, house: House) -> PathBuf {
        self.etc(house).join("tls/node.key")
    }
    fn config(&self, house: House) -> PathBuf {
        self.etc(house).join("worker.yaml")
    }
    /// `DIR/etcd`: what goes to the etcd members' hosts.
    fn etcd(&self) -> PathBuf {
        self.out.join("etcd")
    }
    /// `DIR/etcd/<member>`: one member's `ca.pem`, `member.pem`, `member.key`.
    fn etcd_member(&self, name: &str) -> PathBuf {
        self.etcd().join(name)
    }
    /// How the etcd command line in `NEXT-STEPS.txt` names a file of a member's
    /// (`/etc/etcd/<file>` when installed).
    fn etcd_named(&self, name: &str, file: &str) -> String {
        if self.in_place {
            self.etcd_member(name).join(file).display().to_string()
        } else {
            format!("/etc/etcd/{file}")
        }
    }
    /// How the node's config names a file of its `etc` directory.
    fn etc_named(&self, house: House, rel: &str) -> String {
        if self.in_place { self.etc(house).join(rel).display().to_string() } else { format!("/etc/uni-wizard/{rel}") }
    }
    /// How the node's config names its state directory.
    fn state_named(&self, house: House) -> String {
        if self.in_place { self.state(house).display().to_string() } else { "/var/lib/uni-wizard".into() }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    /// It was missing and was written.
    Wrote,
    /// It was there and was left as it was.
    Kept,
    /// It was there and was written again, because something it is made from is new.
    Renewed,
}

/// The files a run touched, in order.
#[derive(Debug, Default)]
struct Report {
    files: Vec<(PathBuf, Action, u32)>,
}

impl Report {
    fn note(&mut self, path: &Path, action: Action, mode: u32) {
        self.files.push((path.to_path_buf(), action, mode));
    }

    fn json(&self, out: &Path) -> Value {
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|(p, a, m)| {
                let rel = p.strip_prefix(out).unwrap_or(p);
                json!({ "path": rel.display().to_string(), "action": a, "mode": format!("{m:04o}") })
            })
            .collect();
        json!({ "ok": true, "dir": out.display().to_string(), "files": files })
    }

    fn print(&self, out: &Path, as_json: bool, footer: &str) {
        if as_json {
            println!("{}", self.json(out));
            return;
        }
        for (p, a, m) in &self.files {
            let word = match a {
                Action::Wrote => "wrote",
                Action::Kept => "kept",
                Action::Renewed => "renewed",
            };
            println!("{word:<8} {m:04o}  {}", p.strip_prefix(out).unwrap_or(p).display());
        }
        println!("{footer}");
    }
}

/// A secret file: read when it exists (never replaced), else made and written 0600. Returns
/// its text and whether it was made now.
fn secret(
    report: &mut Report,
    path: &Path,
    make: impl FnOnce() -> Result<String, Error>,
) -> Result<(String, bool), Error> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| files::io_error("cannot read", p, e));
    if path.symlink_metadata().is_ok() {
        report.note(path, Action::Kept, SECRET);
        return Ok((read(path)?, false));
    }
    let text = make()?;
    if files::write_new(path, text.as_bytes(), SECRET)? {
        report.note(path, Action::Wrote, SECRET);
        Ok((text, true))
    } else {
        // Another run wrote it first: theirs stands.
        report.note(path, Action::Kept, SECRET);
        Ok((read(path)?, false))
    }
}

/// A file made from others: written when missing, or again when `fresh` (an input is new).
fn derived(report: &mut Report, path: &Path, bytes: &[u8], mode: u32, fresh: bool) -> Result<bool, Error> {
    if path.symlink_metadata().is_err() {
        files::replace(path, bytes, mode)?;
        report.note(path, Action::Wrote, mode);
        Ok(true)
    } else if fresh {
        files::replace(path, bytes, mode)?;
        report.note(path, Action::Renewed, mode);
        Ok(true)
    } else {
        report.note(path, Action::Kept, mode);
        Ok(false)
    }
}

/// A new house token: 24 random bytes as 48 hex digits.
pub fn new_token() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

fn cert_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("{what}: {e}")).with_details(json!({ "problem": e.to_string() }))
}

/// Now, for certificate validity (a clock before 1970 reads as 1970).
fn now() -> time::OffsetDateTime {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn ymd(t: time::OffsetDateTime) -> String {
    format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// A random positive serial number (a renewed certificate never repeats its predecessor's).
fn serial() -> SerialNumber {
    let mut bytes = rand::random::<[u8; 16]>();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The CA's certificate and key, read or made.
struct Ca {
    cert_pem: String,
    /// Absent when the key is kept offline: nothing can be signed then.
    issuer: Option<Issuer<'static, KeyPair>>,
    made: bool,
}

impl Ca {
    /// Reads `ca.pem` and `ca.key`; with neither there and `may_make`, makes both.
    fn open(report: &mut Report, layout: &Layout, may_make: bool) -> Result<Ca, Error> {
        let (cert_path, key_path) = (layout.ca_cert(), layout.ca_key());
        let (has_cert, has_key) = (cert_path.exists(), key_path.exists());
        if !has_cert && !has_key && may_make {
            let key = KeyPair::generate().map_err(|e| cert_error("cannot make the CA key", e))?;
            let mut p = CertificateParams::default();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, "uni-wizard fleet CA");
            p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            p.key_usages =
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            let start = now();
            p.not_before = start - time::Duration::hours(1);
            p.not_after = start + time::Duration::days(3650);
            p.serial_number = Some(serial());
            let cert = p.self_signed(&key).map_err(|e| cert_error("cannot make the CA certificate", e))?;
            // The key first: a crash between the two leaves a key without a certificate, which
            // the next run refuses to guess about rather than a certificate nothing can sign for.
            let key_pem = key.serialize_pem();
            if !files::write_new(&key_path, key_pem.as_bytes(), SECRET)? {
                return Err(files::io_error(
                    "refusing to replace",
                    &key_path,
                    "another run made a CA at the same time",
                ));
            }
            report.note(&key_path, Action::Wrote, SECRET);
            files::replace(&cert_path, cert.pem().as_bytes(), PUBLIC)?;
            report.note(&cert_path, Action::Wrote, PUBLIC);
            return Ok(Ca { cert_pem: cert.pem(), issuer: Some(Issuer::new(p, key)), made: true });
        }
        if !has_cert {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                format!(
                    "{} is missing{}: certificates cannot be checked or issued without it; put the CA's certificate back",
                    cert_path.display(),
                    if has_key { " beside its key" } else { "" }
                ),
            )
            .with_details(json!({ "file": cert_path.display().to_string() })));
        }
        let cert_pem =
            std::fs::read_to_string(&cert_path).map_err(|e| files::io_error("cannot read", &cert_path, e))?;
        report.note(&cert_path, Action::Kept, PUBLIC);
        if !has_key {
            return Ok(Ca { cert_pem, issuer: None, made: false });
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| files::io_error("cannot read", &key_path, e))?;
        let key =
            KeyPair::from_pem(&key_pem).map_err(|e| cert_error(&format!("{} is no key", key_path.display()), e))?;
        check_pair(&cert_pem, &key, &cert_path, &key_path)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| cert_error(&format!("{} is no CA certificate", cert_path.display()), e))?;
        report.note(&key_path, Action::Kept, SECRET);
        Ok(Ca { cert_pem, issuer: Some(issuer), made: false })
    }

    /// The issuer, or E4001 saying the CA key is needed and missing.
    fn issuer(&self, layout: &Layout, what: &str) -> Result<&Issuer<'static, KeyPair>, Error> {
        self.issuer.as_ref().ok_or_else(|| {
            let key = layout.ca_key();
            Error::new(
                ErrorCode::ConfigInvalid,
                format!(
                    "{what} needs the CA key, and {} is missing: bring the offline CA key back to that path and run again",
                    key.display()
                ),
            )
            .with_details(json!({ "file": key.display().to_string() }))
        })
    }
}

/// E4001 unless `key` is the key of the certificate in `cert_pem`.
fn check_pair(cert_pem: &str, key: &KeyPair, cert_path: &Path, key_path: &Path) -> Result<(), Error> {
    use rcgen::PublicKeyData;
    let unreadable = |e: String| cert_error(&format!("{} is no certificate", cert_path.display()), e);
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| unreadable(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| unreadable(e.to_string()))?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!("{} is not the key of {}: put the CA's own key back", key_path.display(), cert_path.display()),
        )
        .with_details(json!({ "file": key_path.display().to_string() })));
    }
    Ok(())
}

/// Whose certificate: a house's node, the operator's CLI, or an etcd member.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    Node(House),
    Operator,
    Etcd(EtcdMember),
}

impl Subject {
    fn name(&self) -> &str {
        match self {
            Subject::Node(h) => h.as_str(),
            Subject::Operator => "operator",
            Subject::Etcd(m) => &m.name,
        }
    }

    fn paths(&self, layout: &Layout) -> (PathBuf, PathBuf) {
        match self {
            Subject::Node(h) => (layout.node_cert(*h), layout.node_key(*h)),
            Subject::Operator => (layout.operator().join("operator.pem"), layout.operator().join("operator.key")),
            Subject::Etcd(m) => {
                let dir = layout.etcd_member(&m.name);
                (dir.join("member.pem"), dir.join("member.key"))
            }
        }
    }
}

/// A subject alternative name: an IP address, else a DNS name.
fn san(name: &str) -> Result<SanType, Error> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.try_into().map_err(|e| cert_error(&format!("SAN `{name}`"), e))?),
    })
}

/// Signs a certificate for `subject` with `key`, valid `days` from now: a node's carries its
/// SANs and both TLS uses; an etcd member's its endpoint's host and both uses (it serves
/// clients and peers, and dials its peers); the operator's is a client certificate only.
fn issue(
    spec: &FleetSpec,
    subject: &Subject,
    key: &KeyPair,
    issuer: &Issuer<'static, KeyPair>,
) -> Result<(String, String), Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, subject.name());
    let both = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    match subject {
        Subject::Node(h) => {
            for name in spec.houses.get(h).map(HouseSpec::san_names).unwrap_or_default() {
                p.subject_alt_names.push(san(&name)?);
            }
            p.extended_key_usages = both;
        }
        Subject::Etcd(m) => {
            p.subject_alt_names.push(san(&m.host)?);
            p.extended_key_usages = both;
        }
        Subject::Operator => p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    let start = now();
    let until = start + time::Duration::days(i64::from(spec.cert_days));
    p.not_before = start - time::Duration::hours(1);
    p.not_after = until;
    p.serial_number = Some(serial());
    let cert = p
        .signed_by(key, issuer)
        .map_err(|e| cert_error(&format!("cannot sign {}'s certificate", subject.name()), e))?;
    Ok((cert.pem(), ymd(until)))
}

/// The node key of `subject`, read or made (a key is never replaced); and whether it is new.
fn node_key(report: &mut Report, layout: &Layout, subject: &Subject) -> Result<(KeyPair, bool), Error> {
    let (_, key_path) = subject.paths(layout);
    let (pem, made) = secret(report, &key_path, || {
        KeyPair::generate().map(|k| k.serialize_pem()).map_err(|e| cert_error("cannot make a key", e))
    })?;
    let key = KeyPair::from_pem(&pem).map_err(|e| cert_error(&format!("{} is no key", key_path.display()), e))?;
    Ok((key, made))
}

/// Reads the inputs and checks them against what the directory records.
fn resolve(a: &InitArgs, layout: &Layout) -> Result<FleetSpec, Error> {
    let stored: Option<FleetSpec> =
        if layout.spec().exists() { Some(crate::config::load(&layout.spec())?) } else { None };
    let mut spec = stored.clone().unwrap_or_default();
    if let Some(file) = &a.spec {
        spec.overlay(crate::config::load(file)?);
    }
    spec.overlay(FleetSpec::from_flags(a)?);
    spec.check()?;
    if let Some(stored) = stored {
        let (now, was) =
            (serde_json::to_value(&spec).unwrap_or_default(), serde_json::to_value(&stored).unwrap_or_default());
        if let Some(field) = first_difference(&now, &was, "") {
            return Err(bad_input(
                &field,
                format!(
                    "{} records another value: a fleet directory describes one fleet; run with the inputs it records \
                     (or none), or init another directory",
                    layout.spec().display()
                ),
            ));
        }
    }
    Ok(spec)
}

/// The node's roles: its lane's.
fn lane(spec: &FleetSpec, house: House) -> &'static str {
    match house {
        House::Timmy => "[router, health, worker, sovereign, telemetry]",
        House::Allegro if spec.triage.is_some() => "[router, health, worker, triage, telemetry]",
        House::Allegro => "[router, health, worker, telemetry]",
        House::Ezra | House::Bezalel => "[worker, telemetry]",
    }
}

/// A YAML double-quoted scalar (a JSON string is one).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn env_name(house: House) -> String {
    format!("{}_TOKEN", house.as_str().to_ascii_uppercase())
}

/// The node config of `house`.
fn render_config(spec: &FleetSpec, layout: &Layout, house: House) -> String {
    let me = &spec.houses[&house];
    let etc = |rel: &str| q(&layout.etc_named(house, rel));
    let mut y = format!(
        "# uni-wizard node config of {house}, written by `uni-wizard fleet init`. Every field is described\n\
         # in configs/houses.yaml. Install as /etc/uni-wizard/worker.yaml on {house}'s host (NEXT-STEPS.txt);\n\
         # `${{NAME}}` comes from the env file beside it (systemd's EnvironmentFile=).\n\
         house: {house}\n\
         node: {node}\n\
         roles: {roles}\n\
         listen:\n  grpc: {grpc}\n  http: {http}\n\
         tls:\n  ca: {ca}\n  cert: {cert}\n  key: {key}\n\
         http:\n  metrics_token_file: {metrics}\n\
         houses:\n",
        node = q(&me.node_name(house)),
        roles = lane(spec, house),
        grpc = q(&me.listen_grpc().to_string()),
        http = q(&me.listen_http().to_string()),
        ca = etc("tls/ca.pem"),
        cert = etc("tls/node.pem"),
        key = etc("tls/node.key"),
        metrics = etc("metrics.token"),
    );
    for (i, (h, entry)) in spec.houses.iter().enumerate() {
        let role = match h {
            House::Timmy => "sovereign",
            House::Allegro => "dispatch",
            House::Ezra => "archivist",
            House::Bezalel => "artificer",
        };
        // Its HTTP port as the other hosts reach it: the endpoint's host, the port it listens on
        // (`uni-wizard status` reads every house's /health and /metrics there).
        let host = entry.endpoint.rsplit_once(':').map_or(entry.endpoint.as_str(), |(h, _)| h);
        let http_endpoint = format!("{host}:{}", entry.listen_http().port());
        y.push_str(&format!(
            "  {h}: {{endpoint: {}, http_endpoint: {}, auth_token: \"${{{}}}\", role: {role}, priority: {}, nodes: [{}]}}\n",
            q(&entry.endpoint),
            q(&http_endpoint),
            env_name(*h),
            i + 1,
            q(&entry.node_name(*h)),
        ));
    }
    y.push_str(&format!(
        "worker:\n  timmy_pubkey: {}\n  library:\n    home: {}\n    # file_roots: [/srv/work]   # none: the file tools may touch nothing\n",
        etc("timmy.pub"),
        q(&layout.state_named(house)),
    ));
    if house == House::Timmy {
        y.push_str(&format!("sovereign:\n  key_file: {}\n", etc("timmy.key")));
    }
    if let (House::Allegro, Some(t)) = (house, &spec.triage) {
        let repos: Vec<String> = t.repos.iter().map(|r| q(r)).collect();
        y.push_str(&format!(
            "triage:\n  gitea: {{base_url: {}, token: \"${{GITEA_TOKEN}}\"}}\n  webhook_secret: \"${{GITEA_WEBHOOK_SECRET}}\"\n  \
             bot_user: {}\n  repos: [{}]\n  # rules: []   # none yet: see configs/triage.yaml\n",
            q(&t.gitea_url),
            q(&t.bot_user),
            repos.join(", "),
        ));
    }
    if spec.etcd.is_some() {
        let e = spec.node_etcd(layout, house);
        let endpoints: Vec<String> = e.endpoints.iter().map(|u| q(u)).collect();
        y.push_str(&format!(
            "etcd:\n  endpoints: [{}]\n  prefix: {}\n  lease_ttl_ms: {}\n",
            endpoints.join(", "),
            q(&e.prefix),
            e.lease_ttl_ms
        ));
        for (name, v) in [("keepalive_ms", e.keepalive_ms), ("fence_margin_ms", e.fence_margin_ms)] {
            if let Some(v) = v {
                y.push_str(&format!("  {name}: {v}\n"));
            }
        }
        y.push_str(&format!(
            "  connect_timeout_ms: {}\n  request_timeout_ms: {}\n",
            e.connect_timeout_ms, e.request_timeout_ms
        ));
        if let Some(t) = &e.tls {
            let named = |p: &Option<PathBuf>| q(&p.as_ref().map(|p| p.display().to_string()).unwrap_or_default());
            y.push_str(&format!(
                "  # TLS to etcd: the members' certificates are the fleet CA's (DIR/etcd/); etcd asks for this\n  \
                 # node's certificate (--client-cert-auth).\n  tls:\n    ca: {}\n    cert: {}\n    key: {}\n",
                q(&t.ca.display().to_string()),
                named(&t.cert),
                named(&t.key)
            ));
        }
    }
    y
}

/// The env file of `house`: the variables its config expands.
fn render_env(house: House, tokens: &BTreeMap<House, String>, gitea: Option<(&str, &str)>) -> String {
    let mut s = format!(
        "# The variables /etc/uni-wizard/worker.yaml of {house} expands; systemd reads it (EnvironmentFile=).\n\
         # Secret: keep it 0600 root. Every node holds every house's token: each checks its callers with them.\n"
    );
    for (h, t) in tokens {
        s.push_str(&format!("{}={}\n", env_name(*h), t.trim()));
    }
    if let Some((token, secret)) = gitea {
        s.push_str(&format!("GITEA_TOKEN={}\nGITEA_WEBHOOK_SECRET={}\n", token.trim(), secret.trim()));
    }
    s
}

/// Checks each config as `uni-wizardd --check` would, with `vars` for the env file.
fn self_check(spec: &FleetSpec, layout: &Layout, vars: &BTreeMap<String, String>) -> Result<(), Error> {
    for house in House::ALL {
        let text = render_config(spec, layout, house);
        let name = format!("{house}/etc/uni-wizard/worker.yaml");
        DaemonConfig::parse(&text, &name, &|k| vars.get(k).cloned())?;
    }
    Ok(())
}

/// `uni-wizard fleet ...`.
///
/// # Errors
/// E1005 for unusable inputs (naming the field), E4001 for a CA that cannot sign (its key
/// missing, not its certificate's), E4002 when the directory cannot be written.
pub fn run(c: &FleetCommand) -> Result<i32, Error> {
    match c {
        FleetCommand::Init(a) => init(a),
        FleetCommand::Cert(a) => cert(a),
    }
}

fn absolute(dir: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(dir).map_err(|e| files::io_error("cannot resolve", dir, e))
}

fn init(a: &InitArgs) -> Result<i32, Error> {
    let out = absolute(&a.out)?;
    let mut layout = Layout { out: out.clone(), in_place: false };
    let spec = resolve(a, &layout)?;
    layout.in_place = spec.in_place;
    let gitea_token_file = layout.secrets().join("gitea.token");
    if spec.triage.is_none() && a.gitea_token_file.is_some() {
        return Err(bad_input(
            "--gitea-token-file",
            "is for Allegro's triage: give --gitea-url (or `triage:` in --spec)",
        ));
    }
    if spec.triage.is_some() && a.gitea_token_file.is_none() && !gitea_token_file.exists() {
        return Err(bad_input(
            "--gitea-token-file",
            "Allegro's triage needs the bot's Gitea token: --gitea-token-file FILE (a file holding it)",
        ));
    }
    // Every config checked before anything is written (the tokens' values do not matter here).
    let mut placeholder: BTreeMap<String, String> =
        House::ALL.iter().map(|h| (env_name(*h), format!("{}-placeholder-token", h.as_str()))).collect();
    placeholder.insert("GITEA_TOKEN".into(), "placeholder".into());
    placeholder.insert("GITEA_WEBHOOK_SECRET".into(), "placeholder-webhook-secret".into());
    self_check(&spec, &layout, &placeholder)?;

    let mut report = Report::default();
    for dir in [out.clone(), layout.ca_dir(), layout.secrets(), layout.operator()] {
        files::create_dir(&dir, 0o700)?;
    }
    for h in House::ALL {
        files::create_dir(&layout.host(h), 0o700)?;
        files::create_dir(&layout.etc(h).join("tls"), 0o750)?;
        if spec.in_place {
            files::create_dir(&layout.state(h), 0o700)?;
        }
    }
    let spec_yaml = format!(
        "# The inputs of `uni-wizard fleet init` for this directory (a re-run reads them).\n{}",
        serde_yaml::to_string(&spec).map_err(|e| cert_error("cannot write fleet.yaml", e))?
    );
    derived(&mut report, &layout.spec(), spec_yaml.as_bytes(), PUBLIC, false)?;

    let ca = Ca::open(&mut report, &layout, true)?;
    let mut tokens = BTreeMap::new();
    let mut tokens_made = false;
    for h in House::ALL {
        let (t, made) = secret(&mut report, &layout.token(h), || Ok(format!("{}\n", new_token())))?;
        tokens_made |= made;
        tokens.insert(h, t.trim().to_owned());
    }
    let (metrics, metrics_made) =
        secret(&mut report, &layout.secrets().join("metrics.token"), || Ok(format!("{}\n", new_token())))?;
    let gitea = match &spec.triage {
        Some(_) => {
            let (token, token_made) = secret(&mut report, &gitea_token_file, || {
                let from = a.gitea_token_file.clone().unwrap_or_default();
                let t = std::fs::read_to_string(&from)
                    .map_err(|e| bad_input("--gitea-token-file", format!("cannot read {}: {e}", from.display())))?;
                if t.trim().is_empty() {
                    return Err(bad_input("--gitea-token-file", format!("{} is empty", from.display())));
                }
                Ok(format!("{}\n", t.trim()))
            })?;
            let (hook, hook_made) = secret(&mut report, &layout.secrets().join("gitea-webhook.secret"), || {
                Ok(format!("{}\n", new_token()))
            })?;
            Some((token, hook, token_made || hook_made))
        }
        None => None,
    };
    let timmy_key_path = layout.etc(House::Timmy).join("timmy.key");
    let (timmy_key, timmy_made) =
        secret(&mut report, &timmy_key_path, || Ok(format!("{}\n", tokens::key_files(&tokens::generate_key()).0)))?;
    let timmy_pub = format!("{}\n", tokens::key_files(&tokens::parse_signing_key(&timmy_key)?).1);

    let members = spec.etcd_members();
    for m in &members {
        files::create_dir(&layout.etcd_member(&m.name), 0o700)?;
    }
    let subjects = House::ALL.map(Subject::Node).into_iter().chain([Subject::Operator]);
    for subject in subjects.chain(members.iter().cloned().map(Subject::Etcd)) {
        let (key, key_made) = node_key(&mut report, &layout, &subject)?;
        let (cert_path, _) = subject.paths(&layout);
        if !cert_path.exists() || key_made || ca.made {
            let issuer = ca.issuer(&layout, &format!("{}'s certificate", subject.name()))?;
            let (pem, _) = issue(&spec, &subject, &key, issuer)?;
            derived(&mut report, &cert_path, pem.as_bytes(), PUBLIC, true)?;
        } else {
            report.note(&cert_path, Action::Kept, PUBLIC);
        }
    }
    derived(&mut report, &layout.operator().join("ca.pem"), ca.cert_pem.as_bytes(), PUBLIC, ca.made)?;
    for m in &members {
        derived(&mut report, &layout.etcd_member(&m.name).join("ca.pem"), ca.cert_pem.as_bytes(), PUBLIC, ca.made)?;
    }

    for h in House::ALL {
        let etc = layout.etc(h);
        derived(&mut report, &etc.join("tls/ca.pem"), ca.cert_pem.as_bytes(), PUBLIC, ca.made)?;
        derived(&mut report, &etc.join("timmy.pub"), timmy_pub.as_bytes(), PUBLIC, timmy_made)?;
        derived(&mut report, &etc.join("metrics.token"), metrics.as_bytes(), SECRET, metrics_made)?;
        let g = match (&gitea, h) {
            (Some((token, hook, _)), House::Allegro) => Some((token.as_str(), hook.as_str())),
            _ => None,
        };
        let env = render_env(h, &tokens, g);
        let fresh = tokens_made || (h == House::Allegro && gitea.as_ref().is_some_and(|g| g.2));
        derived(&mut report, &etc.join("env"), env.as_bytes(), SECRET, fresh)?;
    }
    let mut vars: BTreeMap<String, String> = tokens.iter().map(|(h, t)| (env_name(*h), t.clone())).collect();
    if let Some((token, hook, _)) = &gitea {
        vars.insert("GITEA_TOKEN".into(), token.trim().to_owned());
        vars.insert("GITEA_WEBHOOK_SECRET".into(), hook.trim().to_owned());
    }
    self_check(&spec, &layout, &vars)?;
    for h in House::ALL {
        derived(&mut report, &layout.config(h), render_config(&spec, &layout, h).as_bytes(), CONFIG, false)?;
    }
    let steps = layout.out.join("NEXT-STEPS.txt");
    files::replace(&steps, next_steps(&spec, &layout).as_bytes(), PUBLIC)?;
    report.note(&steps, Action::Wrote, PUBLIC);
    let kept = report.files.iter().filter(|f| f.1 == Action::Kept).count();
    let footer = format!(
        "ok  fleet in {} ({} files, {kept} kept as they were); next: read {}",
        out.display(),
        report.files.len(),
        steps.display()
    );
    report.print(&out, a.json, &footer);
    Ok(0)
}

fn cert(a: &CertArgs) -> Result<i32, Error> {
    let out = absolute(&a.dir)?;
    let node = match a.node.as_deref() {
        None => None,
        Some("operator") => Some(Subject::Operator),
        Some(other) => Some(Subject::Node(other.parse::<House>().map_err(|_| {
            bad_input("--node", format!("`{other}` is not one of timmy, allegro, ezra, bezalel, operator"))
        })?)),
    };
    let mut layout = Layout { out: out.clone(), in_place: false };
    if !layout.spec().exists() {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!(
                "{} is missing: {} is not a fleet directory (`uni-wizard fleet init --out DIR` makes one)",
                layout.spec().display(),
                out.display()
            ),
        )
        .with_details(json!({ "file": layout.spec().display().to_string() })));
    }
    let spec: FleetSpec = crate::config::load(&layout.spec())?;
    spec.check()?;
    layout.in_place = spec.in_place;
    let subject = match (node, a.etcd_member.as_deref()) {
        (Some(s), _) => s,
        (None, name) => {
            let members = spec.etcd_members();
            let name = name.unwrap_or_default();
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            let Some(m) = members.iter().find(|m| m.name == name) else {
                return Err(bad_input(
                    "--etcd-member",
                    if names.is_empty() {
                        "this fleet's etcd endpoints are http:// on loopback: it has no member certificates".to_owned()
                    } else {
                        format!("`{name}` is not one of this fleet's etcd members: {}", names.join(", "))
                    },
                ));
            };
            Subject::Etcd(m.clone())
        }
    };
    let mut report = Report::default();
    let ca = Ca::open(&mut report, &layout, false)?;
    let issuer = ca.issuer(&layout, &format!("renewing {}'s certificate", subject.name()))?;
    match &subject {
        Subject::Node(h) => files::create_dir(&layout.etc(*h).join("tls"), 0o750)?,
        Subject::Operator => files::create_dir(&layout.operator(), 0o700)?,
        Subject::Etcd(m) => files::create_dir(&layout.etcd_member(&m.name), 0o700)?,
    }
    let (key, key_made) = node_key(&mut report, &layout, &subject)?;
    let (pem, until) = issue(&spec, &subject, &key, issuer)?;
    let (cert_path, key_path) = subject.paths(&layout);
    derived(&mut report, &cert_path, pem.as_bytes(), PUBLIC, true)?;
    if let Subject::Etcd(m) = &subject {
        derived(&mut report, &layout.etcd_member(&m.name).join("ca.pem"), ca.cert_pem.as_bytes(), PUBLIC, false)?;
    }
    let key_note = if key_made { "a new key: copy the key too" } else { "the same key" };
    let target = match &subject {
        Subject::Node(h) => format!(
            "copy it to {h}'s host as /etc/uni-wizard/tls/node.pem{} and restart its daemon (TLS is read at start)",
            if key_made { " (and node.key)" } else { "" }
        ),
        Subject::Operator => "use it with --tls-cert".into(),
        Subject::Etcd(m) => format!(
            "copy it to the host of {} as /etc/etcd/member.pem{} and restart that member, one member at a time",
            m.endpoint,
            if key_made { " (and member.key)" } else { "" }
        ),
    };
    if a.json {
        let mut v = report.json(&out);
        match &subject {
            Subject::Etcd(m) => v["etcd_member"] = json!(m.name),
            other => v["node"] = json!(other.name()),
        }
        v["valid_until"] = json!(until);
        v["new_key"] = json!(key_made);
        println!("{v}");
    } else {
        report.print(
            &out,
            false,
            &format!(
                "ok  {}'s certificate issued again, valid until {until}, with {key_note} ({}); {target}",
                subject.name(),
                key_path.display()
            ),
        );
    }
    Ok(0)
}

/// `NEXT-STEPS.txt`: which file goes to which host, and the commands.
fn next_steps(spec: &FleetSpec, layout: &Layout) -> String {
    let dir = layout.out.display();
    let mut s = format!(
        "uni-wizard fleet: what goes where (written by `uni-wizard fleet init`; docs/OPERATIONS.md)\n\n\
         Stays on this machine, never on a node:\n  \
         {dir}/ca/ca.key       the fleet CA's key: move it offline; `uni-wizard fleet cert --dir {dir} --node N`\n                        \
         (renewing a certificate) wants it back in place\n  \
         {dir}/secrets/        the tokens (each node's env holds the four house tokens)\n  \
         {dir}/operator/       your client certificate for the CLI\n\n\
         On every host first, as root (once):\n  \
         useradd --system --home-dir /var/lib/uni-wizard --shell /usr/sbin/nologin uni-wizard\n  \
         install -d -m 0750 -g uni-wizard /etc/uni-wizard /etc/uni-wizard/tls\n  \
         install -m 0644 systemd/*.service systemd/uni-wizard.target /etc/systemd/system/\n\n"
    );
    for (h, entry) in &spec.houses {
        let (host, _) = entry.host_port();
        let mut files = vec![
            "install -m 0600 env /etc/uni-wizard/env".to_owned(),
            "install -m 0640 -g uni-wizard worker.yaml metrics.token /etc/uni-wizard/".to_owned(),
            "install -m 0644 timmy.pub /etc/uni-wizard/".to_owned(),
            "install -m 0644 tls/ca.pem tls/node.pem /etc/uni-wizard/tls/".to_owned(),
            "install -m 0600 -o uni-wizard tls/node.key /etc/uni-wizard/tls/".to_owned(),
        ];
        if *h == House::Timmy {
            files.push(
                "install -m 0600 -o uni-wizard timmy.key /etc/uni-wizard/   # Timmy's signing key: Timmy only".into(),
            );
        }
        s.push_str(&format!(
            "{h} (endpoint {}; roles {}):\n  \
             scp -r {dir}/{h}/etc/uni-wizard root@{host}:uw-{h}    # then on that host, as root:\n  \
             cd uw-{h}\n  {}\n  \
             sh -c 'set -a; . /etc/uni-wizard/env; exec uni-wizardd --check --config /etc/uni-wizard/worker.yaml'\n  \
             systemctl daemon-reload && systemctl enable --now uni-wizard-worker.service\n\n",
            entry.endpoint,
            lane(spec, *h),
            files.join("\n  "),
        ));
    }
    s.push_str(&etcd_steps(spec, layout));
    if let Some(t) = &spec.triage {
        let http = spec.houses.get(&House::Allegro).map(HouseSpec::listen_http).map(|a| a.port()).unwrap_or_default();
        let host = spec.houses.get(&House::Allegro).map(|e| e.host_port().0).unwrap_or_default();
        s.push_str(&format!(
            "Gitea ({}): add a webhook to {} posting issue events to http://{host}:{http}/webhooks/gitea\n\
             with the secret in {dir}/secrets/gitea-webhook.secret; the bot `{}` needs write access.\n\n",
            t.gitea_url,
            t.repos.join(", "),
            t.bot_user
        ));
    }
    let routers: Vec<&str> =
        [House::Timmy, House::Allegro].iter().filter_map(|h| spec.houses.get(h)).map(|e| e.endpoint.as_str()).collect();
    s.push_str(&format!(
        "Prometheus: scrape each node's /metrics with `authorization: {{credentials_file: ...}}` holding\n\
         {dir}/secrets/metrics.token.\n\n\
         From this machine, a first task through the router:\n  \
         UNI_WIZARD_TOKEN=$(cat {dir}/secrets/timmy.token) uni-wizard test --router {} \\\n    \
         --house timmy --tool system_info --tls-ca {dir}/operator/ca.pem \\\n    \
         --tls-cert {dir}/operator/operator.pem --tls-key {dir}/operator/operator.key\n\n\
         Renew a certificate (before {} days pass): uni-wizard fleet cert --dir {dir} --node ezra\n{}",
        routers.join(","),
        spec.cert_days,
        match spec.etcd_members().first() {
            Some(m) => format!("  and an etcd member's: uni-wizard fleet cert --dir {dir} --etcd-member {}\n", m.name),
            None => String::new(),
        },
    ));
    if spec.in_place {
        s.push_str(&format!(
            "\nThese configs name the files in {dir} (--in-place): to run the fleet on this machine instead,\n\
             start each node with\n  \
             sh -c 'set -a; . {dir}/<house>/etc/uni-wizard/env; exec uni-wizardd --config {dir}/<house>/etc/uni-wizard/worker.yaml'\n"
        ));
    }
    s
}

/// The etcd part of `NEXT-STEPS.txt`: with `https://` endpoints, which files go to which
/// member's host and each member's command line; with loopback `http://`, a pointer to the docs.
fn etcd_steps(spec: &FleetSpec, layout: &Layout) -> String {
    let Some(e) = &spec.etcd else { return String::new() };
    let members = spec.etcd_members();
    if members.is_empty() {
        return format!(
            "etcd: every node's config points at {} (plaintext, loopback only); run it as\n\
             docs/OPERATIONS.md (\"Leadership through etcd\") shows, before the nodes (they wait for it if not).\n\n",
            e.endpoints.join(", ")
        );
    }
    let dir = layout.out.display();
    let cluster: Vec<String> = members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect();
    let mut s = format!(
        "etcd: {} members, each serving clients and peers over TLS with a certificate from the fleet CA\n\
         and asking for one back (--client-cert-auth, --peer-client-cert-auth): the nodes show theirs\n\
         (etcd.tls in each worker.yaml). A member's peer port is its client port + 1. Start them before the\n\
         nodes (they wait for etcd if not). With Debian's etcd-server, stop the instance the package started\n\
         (systemctl stop etcd) and put the flags after `etcd` below into DAEMON_ARGS=\"...\" in /etc/default/etcd.\n\n",
        members.len()
    );
    for m in &members {
        let f = |file: &str| layout.etcd_named(&m.name, file);
        let data = if layout.in_place {
            layout.etcd_member(&m.name).join("data").display().to_string()
        } else {
            "/var/lib/etcd/uni-wizard".into()
        };
        s.push_str(&format!("{} (client {}, peer {}):\n", m.name, m.client_url(), m.peer_url()));
        if !layout.in_place {
            s.push_str(&format!(
                "  scp -r {dir}/etcd/{name} root@{host}:uw-{name}    # then on that host, as root:\n  \
                 cd uw-{name}\n  \
                 install -d -m 0755 /etc/etcd && install -d -m 0700 -o etcd /var/lib/etcd/uni-wizard\n  \
                 install -m 0644 ca.pem member.pem /etc/etcd/\n  \
                 install -m 0600 -o etcd member.key /etc/etcd/\n",
                name = m.name,
                host = m.host,
            ));
        }
        let listen = m.listen_host();
        s.push_str(&format!(
            "  etcd --name {name} --data-dir {data} \\\n    \
             --listen-client-urls https://{listen}:{client} --advertise-client-urls {client_url} \\\n    \
             --cert-file {cert} --key-file {key} \\\n    \
             --trusted-ca-file {ca} --client-cert-auth \\\n    \
             --listen-peer-urls https://{listen}:{peer} --initial-advertise-peer-urls {peer_url} \\\n    \
             --peer-cert-file {cert} --peer-key-file {key} \\\n    \
             --peer-trusted-ca-file {ca} --peer-client-cert-auth \\\n    \
             --initial-cluster {cluster} \\\n    \
             --initial-cluster-state new --initial-cluster-token uni-wizard-etcd \\\n    \
             --heartbeat-interval 50 --election-timeout 500\n\n",
            name = m.name,
            client = m.client_port,
            client_url = m.client_url(),
            peer = m.peer_port().unwrap_or_default(),
            peer_url = m.peer_url(),
            cert = f("member.pem"),
            key = f("member.key"),
            ca = f("ca.pem"),
            cluster = cluster.join(","),
        ));
    }
    let urls: Vec<String> = members.iter().map(EtcdMember::client_url).collect();
    s.push_str(&format!(
        "Then, from this machine (the operator's certificate is a client certificate of the fleet CA):\n  \
         etcdctl --endpoints {} \\\n    \
         --cacert {dir}/operator/ca.pem --cert {dir}/operator/operator.pem --key {dir}/operator/operator.key \\\n    \
         endpoint health\n\n",
        urls.join(",")
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FleetSpec {
        let mut s = FleetSpec::default();
        for (i, h) in House::ALL.iter().enumerate() {
            let entry = HouseSpec {
                endpoint: format!("10.0.0.{}:7401", i + 1),
                listen: None,
                http: None,
                node: None,
                sans: vec![],
            };
            s.houses.insert(*h, entry);
        }
        s.etcd = Some(EtcdConfig::new(vec!["https://10.0.0.1:2379".into()]));
        s
    }

    fn etcd(endpoints: &[&str]) -> Option<EtcdConfig> {
        Some(EtcdConfig::new(endpoints.iter().map(|e| (*e).to_owned()).collect()))
    }

    /// Proves the etcd endpoints are checked before anything is written: `https://` anywhere,
    /// `http://` on loopback only (off loopback: E1005 naming `etcd.endpoints`, the flag and
    /// https://), one scheme for all, no `tls` in the inputs, members' ports apart on one host.
    #[test]
    fn etcd_endpoints_are_https_or_loopback() {
        let check = |endpoints: &[&str]| {
            let mut s = spec();
            s.etcd = etcd(endpoints);
            s.check()
        };
        assert!(check(&["https://10.0.0.1:2379", "https://etcd-2.fleet:2379", "https://[fd00::3]:2379"]).is_ok());
        assert!(check(&["http://127.0.0.1:2379", "http://localhost:2381"]).is_ok(), "plaintext on loopback");
        let e = check(&["https://10.0.0.1:2379", "http://10.0.0.2:2379"]).expect_err("plaintext off loopback");
        assert_eq!(field(&e), "etcd.endpoints");
        for part in ["http://10.0.0.2:2379", "only on loopback", "--etcd https://10.0.0.2:2379"] {
            assert!(e.message.contains(part), "{part}: {}", e.message);
        }
        let e = check(&["https://10.0.0.1:2379", "http://127.0.0.1:2379"]).expect_err("mixed");
        assert!(e.message.contains("same scheme"), "{}", e.message);
        for bad in ["10.0.0.1:2379", "https://10.0.0.1:2379/v3", "https://a_b:2379", "https://10.0.0.1:65535"] {
            assert_eq!(field(&check(&[bad]).expect_err(bad)), "etcd.endpoints", "{bad}");
        }
        let e = check(&["https://10.0.0.1:2379", "https://10.0.0.1:2380"]).expect_err("ports meet");
        assert!(e.message.contains("ports meet"), "{}", e.message);
        assert!(check(&["https://10.0.0.1:2379", "https://10.0.0.2:2379", "https://10.0.0.1:2381"]).is_ok());
        let e = check(&["https://10.0.0.2:7400"]).expect_err("its peer port is allegro's gRPC port, 7401");
        assert!(e.message.contains("allegro listens"), "{}", e.message);
        let mut s = spec();
        if let Some(e) = s.etcd.as_mut() {
            e.tls = Some(EtcdTls { ca: "ca.pem".into(), cert: None, key: None, server_name: None });
        }
        assert_eq!(field(&s.check().expect_err("tls given")), "etcd.tls");
    }

    /// Proves one member per https:// endpoint, named in order, with its host as SAN, its peer
    /// port next to its client port, and etcd's listen address (an IP, else every address).
    #[test]
    fn etcd_members_follow_the_endpoints() {
        let mut s = spec();
        s.etcd = etcd(&["https://10.0.0.1:2379", "https://etcd-2.fleet:2479", "https://[::1]:2379"]);
        let m = s.etcd_members();
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["etcd-1", "etcd-2", "etcd-3"]);
        assert_eq!((m[1].host.as_str(), m[1].client_port, m[1].peer_port()), ("etcd-2.fleet", 2479, Some(2480)));
        assert_eq!(m[1].peer_url(), "https://etcd-2.fleet:2480");
        assert_eq!(m[1].listen_host(), "0.0.0.0", "etcd binds only to addresses");
        assert_eq!((m[2].client_url(), m[2].listen_host()), ("https://[::1]:2379".to_owned(), "[::1]".to_owned()));
        let installed = next_steps(&s, &Layout { out: PathBuf::from("/tmp/fleet"), in_place: false });
        for part in [
            "scp -r /tmp/fleet/etcd/etcd-2 root@etcd-2.fleet:uw-etcd-2",
            "install -m 0600 -o etcd member.key /etc/etcd/",
            "--listen-client-urls https://0.0.0.0:2479 --advertise-client-urls https://etcd-2.fleet:2479",
            "--cert-file /etc/etcd/member.pem --key-file /etc/etcd/member.key",
            "--peer-trusted-ca-file /etc/etcd/ca.pem --peer-client-cert-auth",
            "--initial-cluster etcd-1=https://10.0.0.1:2380,etcd-2=https://etcd-2.fleet:2480,etcd-3=https://[::1]:2380",
            "fleet cert --dir /tmp/fleet --etcd-member etcd-1",
        ] {
            assert!(installed.contains(part), "NEXT-STEPS.txt lacks `{part}`:\n{installed}");
        }
        s.etcd = etcd(&["http://127.0.0.1:2379"]);
        assert!(s.etcd_members().is_empty(), "plaintext loopback: no certificates");
        let steps = next_steps(&s, &Layout { out: PathBuf::from("/tmp/fleet"), in_place: false });
        assert!(!steps.contains("etcd-1") && steps.contains("plaintext, loopback only"), "{steps}");
    }

    fn field(e: &Error) -> String {
        assert_eq!(e.code, ErrorCode::InvalidInput, "{e:?}");
        e.details["field"].as_str().unwrap_or_default().to_owned()
    }

    /// Proves the inputs are checked with E1005 naming the field: a missing house, a bad
    /// endpoint, a shared endpoint, a bad SAN, no etcd, plaintext etcd off loopback, triage
    /// without repos.
    #[test]
    fn bad_inputs_name_their_field() {
        assert!(spec().check().is_ok());
        let mut s = spec();
        s.houses.remove(&House::Ezra);
        let e = s.check().expect_err("ezra missing");
        assert_eq!(field(&e), "houses");
        assert!(e.message.contains("--ezra HOST:PORT"), "{}", e.message);
        let with = |f: &dyn Fn(&mut FleetSpec)| {
            let mut s = spec();
            f(&mut s);
            field(&s.check().expect_err("refused"))
        };
        assert_eq!(
            with(&|s| s.houses.get_mut(&House::Ezra).expect("ezra").endpoint = "nohost".into()),
            "houses.ezra.endpoint"
        );
        assert_eq!(
            with(&|s| s.houses.get_mut(&House::Ezra).expect("ezra").endpoint = "a_b:1".into()),
            "houses.ezra.endpoint"
        );
        assert_eq!(
            with(&|s| s.houses.get_mut(&House::Ezra).expect("ezra").endpoint = "10.0.0.1:7401".into()),
            "houses.ezra.endpoint",
            "the second house with timmy's endpoint"
        );
        assert_eq!(
            with(&|s| s.houses.get_mut(&House::Ezra).expect("ezra").sans = vec!["-x".into()]),
            "houses.ezra.sans"
        );
        assert_eq!(with(&|s| s.etcd = None), "etcd");
        assert_eq!(with(&|s| s.etcd = Some(EtcdConfig::new(vec!["http://e:2379".into()]))), "etcd.endpoints");
        let triage = TriageSpec { gitea_url: "https://git".into(), repos: vec![], bot_user: default_bot() };
        assert_eq!(with(&|s| s.triage = Some(triage.clone())), "triage.repos");
        let shared = |s: &mut FleetSpec| {
            for (i, h) in s.houses.values_mut().enumerate() {
                h.endpoint = format!("127.0.0.1:{}", 7401 + i);
            }
            s.houses.get_mut(&House::Ezra).expect("ezra").http = Some("127.0.0.1:7401".parse().expect("addr"));
        };
        assert_eq!(with(&shared), "houses.ezra.listen");
    }

    /// Proves each lane's config, rendered for every house, is valid as `uni-wizardd --check`
    /// sees it, with the roles of its lane, TLS, the etcd section and installed paths.
    #[test]
    fn rendered_configs_are_valid_and_carry_their_lane() {
        let mut s = spec();
        s.triage = Some(TriageSpec {
            gitea_url: "https://git.example".into(),
            repos: vec!["uni/fleet".into()],
            bot_user: default_bot(),
        });
        let layout = Layout { out: PathBuf::from("/tmp/fleet"), in_place: false };
        let vars: BTreeMap<String, String> = House::ALL
            .iter()
            .map(|h| (env_name(*h), format!("{h}-0123456789abcdef")))
            .chain([("GITEA_TOKEN".to_owned(), "t".to_owned()), ("GITEA_WEBHOOK_SECRET".to_owned(), "s".repeat(20))])
            .collect();
        use crate::config::Role::*;
        let lanes = [
            (House::Timmy, vec![Router, Health, Worker, Sovereign, Telemetry]),
            (House::Allegro, vec![Router, Health, Worker, Triage, Telemetry]),
            (House::Ezra, vec![Worker, Telemetry]),
            (House::Bezalel, vec![Worker, Telemetry]),
        ];
        for (house, roles) in lanes {
            let text = render_config(&s, &layout, house);
            let c = DaemonConfig::parse(&text, "worker.yaml", &|k| vars.get(k).cloned()).expect("valid");
            assert_eq!(c.roles(), roles, "{house}");
            let tls = c.tls.as_ref().expect("tls");
            assert_eq!(tls.key, PathBuf::from("/etc/uni-wizard/tls/node.key"));
            assert_eq!(c.home(), PathBuf::from("/var/lib/uni-wizard"));
            let etcd = c.etcd.as_ref().expect("etcd");
            assert_eq!(etcd.endpoints, vec!["https://10.0.0.1:2379".to_owned()]);
            let etcd_tls = etcd.tls.as_ref().expect("etcd.tls with https://");
            assert_eq!(
                (etcd_tls.ca.as_path(), etcd_tls.cert.as_deref(), etcd_tls.key.as_deref(), &etcd_tls.server_name),
                (tls.ca.as_path(), Some(tls.cert.as_path()), Some(tls.key.as_path()), &None),
                "the fleet CA and the node's own certificate and key"
            );
            assert_eq!(c.node_house(house.as_str()), Some(house), "its node name is bound to it");
        }
        let in_place = Layout { out: PathBuf::from("/tmp/fleet"), in_place: true };
        let c = DaemonConfig::parse(&render_config(&s, &in_place, House::Ezra), "w", &|k| vars.get(k).cloned())
            .expect("valid");
        assert_eq!(c.tls.expect("tls").ca, PathBuf::from("/tmp/fleet/ezra/etc/uni-wizard/tls/ca.pem"));
        let etcd_tls = c.etcd.and_then(|e| e.tls).expect("etcd.tls");
        assert_eq!(etcd_tls.key, Some(PathBuf::from("/tmp/fleet/ezra/etc/uni-wizard/tls/node.key")));
        let mut plain = s.clone();
        plain.etcd = etcd(&["http://127.0.0.1:2379"]);
        let c = DaemonConfig::parse(&render_config(&plain, &layout, House::Ezra), "w", &|k| vars.get(k).cloned())
            .expect("valid");
        assert_eq!(c.etcd.expect("etcd").tls, None, "loopback plaintext: no etcd.tls");
        assert!(render_config(&s, &layout, House::Allegro).contains("triage:"), "Allegro's lane has triage");
        assert!(!render_config(&s, &layout, House::Ezra).contains("triage:"), "Ezra's has none");
    }

    /// Proves a node's certificate names its endpoint's host (IP or DNS) and its extra SANs once.
    #[test]
    fn sans_are_the_endpoint_host_and_the_extras() {
        let h = HouseSpec {
            endpoint: "ezra.fleet:7403".into(),
            listen: None,
            http: None,
            node: None,
            sans: vec!["10.0.0.3".into(), "ezra.fleet".into()],
        };
        assert_eq!(h.san_names(), vec!["ezra.fleet".to_owned(), "10.0.0.3".to_owned()]);
        assert_eq!(h.listen_grpc(), "0.0.0.0:7403".parse().expect("addr"), "a DNS endpoint listens on every address");
        assert_eq!(h.listen_http(), "0.0.0.0:7483".parse().expect("addr"));
        assert!(valid_san("::1") && valid_san("a-b.c") && !valid_san("a..b") && !valid_san("under_score"));
    }

    /// Proves the first differing field of two specs is named, and equal specs differ nowhere.
    #[test]
    fn differences_are_named() {
        let (a, mut b) = (spec(), spec());
        assert_eq!(
            first_difference(&serde_json::to_value(&a).expect("json"), &serde_json::to_value(&b).expect("json"), ""),
            None
        );
        b.houses.get_mut(&House::Ezra).expect("ezra").endpoint = "10.9.9.9:1".into();
        let d =
            first_difference(&serde_json::to_value(&a).expect("json"), &serde_json::to_value(&b).expect("json"), "");
        assert_eq!(d.as_deref(), Some("houses.ezra.endpoint"));
    }
}
