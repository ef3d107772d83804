//! The egress policy: which HTTP targets each house may reach.
//!
//! Config gives each house an [`AllowList`] of [`Rule`]s (host pattern, schemes, ports). A house
//! with no list, and every [`ToolEnv`](crate::tools::ToolEnv) until the harness sets one, gets
//! [`Egress::deny_all`]: nothing is reachable.
//!
//! # The check, for every request and every redirect hop ([`Egress::check_url`])
//! 1. the scheme is `http` or `https` and the URL carries no credentials;
//! 2. some rule matches the host, and that rule allows the scheme and the port;
//! 3. the addresses: an IP-literal host is its own address, a name is resolved; **every**
//!    address must be public (see [`refused_range`]) unless the host may be private.
//!
//! Step 3 is repeated at connect time by [`EgressResolver`], the DNS resolver of every client
//! built by [`super::client`]: the connection goes only to addresses that passed the
//! check, even when a second DNS answer differs from the first (DNS rebinding). IP literals
//! never reach a resolver, which is why step 3 also runs before each request.
//!
//! # Private addresses are a property of the rule that allows the request
//! Loopback, private, link-local, unspecified, CGNAT, unique-local, multicast, documentation
//! and reserved addresses are refused unless the request may reach them. Whether it may is
//! decided by the rules that allow this very request (they match its host, scheme **and**
//! port), and among those by the **most specific** patterns (an exact name or IP, then the
//! longest `*.suffix`, then `*`): it may be private only if every such rule sets
//! `allow_private` (or the list does). So a rule's `allow_private` never lends itself to a
//! port or scheme that only another rule allows: `{host: 127.0.0.1, ports: [5801],
//! allow_private: true}` beside `{host: "*", ports: [5802]}` reaches loopback on 5801 only.
//!
//! The connect-time resolver knows the host but not the port, so each [`Egress`] keeps two
//! clients: one whose resolver refuses every special address, and one whose resolver allows
//! them for hosts that some rule lets be private. Every request and redirect hop takes the
//! client its own (host, scheme, port) decision names ([`super::send`]); since a
//! client's connection pool is keyed by scheme, host and port, a connection to a private
//! address is only ever used for a request that may reach it.
//!
//! # Errors
//! A refusal is E2009 with details `{url, host, address, reason, house}`; the URL shown never
//! carries credentials, query or fragment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, ErrorCode, Result};
use crate::house::House;

/// A URL scheme the HTTP tools may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The scheme as written in a URL.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port used when a URL names none.
    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// The scheme of that (lowercase) name, if it is one the tools speak.
    pub fn parse(s: &str) -> Option<Scheme> {
        match s {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

/// The egress section of the config: one allowlist per house. Absent houses may reach nothing.
///
/// ```yaml
/// egress:
///   timmy:
///     rules:
///       - host: "*.example.org"          # sub-domains of example.org (not example.org itself)
///       - host: gitea.internal
///         schemes: [http]
///         ports: [3000]
///         allow_private: true            # it resolves to a private address, and that is fine
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EgressConfig {
    /// Each house's allowlist.
    pub houses: BTreeMap<House, AllowList>,
}

impl EgressConfig {
    /// Checks every house's list as [`Egress::new`] would compile it.
    ///
    /// # Errors
    /// E4001 naming the field, e.g. `egress.timmy.rules[0].host`.
    pub fn validate(&self) -> Result<()> {
        for (house, list) in &self.houses {
            compile(*house, list)?;
        }
        Ok(())
    }
}

/// What one house may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowList {
    /// Lets every rule of the list reach private, loopback and other special addresses.
    #[serde(default)]
    pub allow_private: bool,
    /// The rules; a request is allowed when one of them matches its scheme, host and port.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `api.example.org` (exactly that name), `*.example.org` (any name below it, not the name
    /// itself), an IP literal (`127.0.0.1`, `::1` or `[::1]`; matches only URLs that use it
    /// literally), or `*` (any host; never together with `allow_private`).
    pub host: String,
    /// Ports allowed; empty means the default port of each allowed scheme.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Schemes allowed (default `https` only).
    #[serde(default = "default_schemes")]
    pub schemes: Vec<Scheme>,
    /// Lets this host resolve to private, loopback and other special addresses.
    #[serde(default)]
    pub allow_private: bool,
}

fn default_schemes() -> Vec<Scheme> {
    vec![Scheme::Https]
}

impl Rule {
    /// A rule for `host` over HTTPS on port 443, public addresses only.
    pub fn new(host: impl Into<String>) -> Rule {
        Rule { host: host.into(), ports: vec![], schemes: default_schemes(), allow_private: false }
    }
}

/// A host as a URL names it: a (lowercase, no trailing dot) name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRef {
    Name(String),
    Ip(IpAddr),
}

impl HostRef {
    fn parse(host: &str) -> HostRef {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => HostRef::Ip(ip),
            Err(_) => {
                let lower = host.to_ascii_lowercase();
                HostRef::Name(lower.strip_suffix('.').unwrap_or(&lower).to_owned())
            }
        }
    }
}

impl fmt::Display for HostRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostRef::Name(n) => f.write_str(n),
            HostRef::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A compiled host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Exact(String),
    /// `.example.org` for `*.example.org`.
    Suffix(String),
    Ip(IpAddr),
}

impl Pattern {
    fn parse(s: &str) -> std::result::Result<Pattern, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Pattern::Any);
        }
        let bare = s.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(s);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Pattern::Ip(ip));
        }
        let lower = s.to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        match lower.strip_prefix("*.") {
            Some(rest) => {
                domain_ok(rest)?;
                Ok(Pattern::Suffix(format!(".{rest}")))
            }
            None => {
                domain_ok(lower)?;
                Ok(Pattern::Exact(lower.to_owned()))
            }
        }
    }

    fn matches(&self, host: &HostRef) -> bool {
        match (self, host) {
            (Pattern::Any, _) => true,
            (Pattern::Exact(d), HostRef::Name(n)) => d == n,
            (Pattern::Suffix(s), HostRef::Name(n)) => n.len() > s.len() && n.ends_with(s.as_str()),
            (Pattern::Ip(p), HostRef::Ip(ip)) => p == ip,
            _ => false,
        }
    }

    /// Higher is more specific: exact names and IPs, then longer suffixes, then `*`.
    fn specificity(&self) -> (u8, usize) {
        match self {
            Pattern::Any => (0, 0),
            Pattern::Suffix(s) => (1, s.len()),
            Pattern::Exact(_) | Pattern::Ip(_) => (2, 0),
        }
    }
}

/// Checks a DNS name as written in a pattern: letters, digits, `-` and `_` in dot-separated
/// labels, and not something a URL parser would read as an IPv4 address.
fn domain_ok(d: &str) -> std::result::Result<(), String> {
    if d.is_empty() || d.len() > 253 {
        return Err("must be a host name of 1 to 253 characters".into());
    }
    for label in d.split('.') {
        let chars_ok = label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !chars_ok || label.starts_with('-') || label.ends_with('-') {
            return Err(format!("`{d}` is not a host name (use `name.example`, `*.example`, an IP literal or `*`)"));
        }
    }
    if d.rsplit('.').next().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("`{d}` looks like a partial IP address; write the address in full"));
    }
    Ok(())
}

#[derive(Debug)]
struct CompiledRule {
    pattern: Pattern,
    schemes: Vec<Scheme>,
    ports: Vec<u16>,
    allow_private: bool,
}

/// A house's compiled rules; shared by an [`Egress`] and its resolvers.
#[derive(Debug)]
struct Policy {
    house: Option<House>,
    rules: Vec<CompiledRule>,
}

fn compile(house: House, list: &AllowList) -> Result<Policy> {
    let mut rules = Vec::with_capacity(list.rules.len());
    for (i, rule) in list.rules.iter().enumerate() {
        let at = |field: &str| format!("egress.{house}.rules[{i}].{field}");
        let bad = |field: &str, why: String| {
            let field = at(field);
            Error::new(ErrorCode::ConfigInvalid, format!("config field `{field}` {why}"))
                .with_details(json!({ "field": field }))
        };
        let pattern = Pattern::parse(&rule.host).map_err(|why| bad("host", why))?;
        if rule.schemes.is_empty() {
            return Err(bad("schemes", "must name at least one scheme (http or https)".into()));
        }
        if rule.ports.contains(&0) {
            return Err(bad("ports", "must be between 1 and 65535".into()));
        }
        let allow_private = rule.allow_private || list.allow_private;
        if pattern == Pattern::Any && allow_private {
            return Err(bad("allow_private", "may not be set for host `*`: name the private hosts".into()));
        }
        let mut schemes = rule.schemes.clone();
        schemes.sort();
        schemes.dedup();
        let ports =
            if rule.ports.is_empty() { schemes.iter().map(|s| s.default_port()).collect() } else { rule.ports.clone() };
        rules.push(CompiledRule { pattern, schemes, ports, allow_private });
    }
    Ok(Policy { house: Some(house), rules })
}

impl Policy {
    /// Whether a request that `allowing` (the rules that match its host, scheme and port)
    /// permits may reach special addresses: every most specific rule among them must say so.
    fn private_allowed<'a>(allowing: impl Iterator<Item = &'a CompiledRule> + Clone) -> bool {
        let Some(best) = allowing.clone().map(|r| r.pattern.specificity()).max() else {
            return false;
        };
        allowing.filter(|r| r.pattern.specificity() == best).all(|r| r.allow_private)
    }

    /// Whether some rule lets `host` be private (for some scheme and port); `None` when no
    /// rule names the host. What the resolver of the private client asks.
    fn private_somewhere(&self, host: &HostRef) -> Option<bool> {
        let mut matching = self.rules.iter().filter(|r| r.pattern.matches(host)).peekable();
        matching.peek()?;
        Some(matching.any(|r| r.allow_private))
    }

    fn refusal(&self, host: &HostRef, address: Option<IpAddr>, reason: impl Into<String>) -> EgressRefusal {
        EgressRefusal { house: self.house, host: host.to_string(), address, reason: reason.into() }
    }

    /// Refuses the first address outside public space unless `allow_private`.
    fn check_addresses(
        &self,
        host: &HostRef,
        addrs: &[SocketAddr],
        allow_private: bool,
    ) -> std::result::Result<(), EgressRefusal> {
        if allow_private {
            return Ok(());
        }
        for a in addrs {
            if let Some(range) = refused_range(a.ip()) {
                let what = match host {
                    HostRef::Ip(_) => format!("{host} is {range}"),
                    HostRef::Name(_) => format!("{host} resolves to {} ({range})", a.ip()),
                };
                let why = format!("{what}, and the allowlist does not allow private addresses for it");
                return Err(self.refusal(host, Some(a.ip()), why));
            }
        }
        Ok(())
    }

    /// Resolves a name (or takes an IP literal) and checks every address against the
    /// decision `allow_private`: what both [`Egress::check_url`] and [`EgressResolver`] do.
    async fn resolve_checked(
        &self,
        host: &HostRef,
        port: u16,
        allow_private: bool,
    ) -> std::result::Result<Vec<SocketAddr>, Refused> {
        let addrs = match host {
            HostRef::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            HostRef::Name(name) => {
                let found = tokio::net::lookup_host((name.as_str(), port)).await.map_err(Refused::Resolve)?;
                let mut addrs: Vec<SocketAddr> = found.collect();
                addrs.dedup();
                if addrs.is_empty() {
                    return Err(Refused::Resolve(std::io::Error::other(format!("{name} has no addresses"))));
                }
                addrs
            }
        };
        self.check_addresses(host, &addrs, allow_private).map_err(Refused::Policy)?;
        Ok(addrs)
    }
}

enum Refused {
    Policy(EgressRefusal),
    Resolve(std::io::Error),
}

/// Why egress to a host was refused; what [`EgressResolver`] fails with, so it can be found
/// in a `reqwest::Error`'s source chain and reported as E2009.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRefusal {
    /// The house whose policy refused (`None` for [`Egress::deny_all`]).
    pub house: Option<House>,
    /// The host as the URL names it.
    pub host: String,
    /// The address that was refused, when an address was the reason.
    pub address: Option<IpAddr>,
    /// One sentence.
    pub reason: String,
}

impl fmt::Display for EgressRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "egress refused: {}", self.reason)
    }
}

impl std::error::Error for EgressRefusal {}

impl EgressRefusal {
    /// The E2009 error for this refusal, showing `url` without credentials, query or fragment.
    pub fn into_error(self, url: Option<&Url>) -> Error {
        let shown = url.map(shown_url);
        let house = self.house.map_or_else(|| "this harness".to_owned(), |h| format!("house {h}"));
        let to = shown.clone().unwrap_or_else(|| self.host.clone());
        Error::new(ErrorCode::EgressDenied, format!("egress to {to} refused for {house}: {}", self.reason))
            .with_details(json!({
                "url": shown,
                "host": self.host,
                "address": self.address.map(|a| a.to_string()),
                "reason": self.reason,
                "house": self.house,
            }))
    }
}

/// A URL as shown in errors and logs: no credentials, query or fragment.
pub fn shown_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The parts of a URL that passed steps 1 and 2 of the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The scheme.
    pub scheme: Scheme,
    /// The host (lowercase, no brackets or trailing dot).
    pub host: String,
    /// The port, explicit or the scheme's default.
    pub port: u16,
    /// The address, when the host is an IP literal.
    pub ip: Option<IpAddr>,
    /// Whether the host may resolve to special addresses.
    pub allow_private: bool,
}

/// A URL that passed the whole check, with the addresses it may be reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Scheme, host and port.
    pub target: Target,
    /// Every address the host resolved to; all passed the check.
    pub addrs: Vec<SocketAddr>,
}

/// A house's compiled egress policy, and the two HTTP clients that enforce it (each built
/// once, on first use, by [`super::shared_client`]): index 0 reaches public addresses
/// only, index 1 may reach the special addresses of hosts some rule lets be private.
pub struct Egress {
    policy: Arc<Policy>,
    clients: [OnceLock<reqwest::Client>; 2],
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("house", &self.policy.house)
            .field("rules", &self.policy.rules.len())
            .finish_non_exhaustive()
    }
}

impl Egress {
    /// The policy that refuses everything: what a [`ToolEnv`](crate::tools::ToolEnv) starts with.
    pub fn deny_all() -> Egress {
        Egress::from_policy(Policy { house: None, rules: vec![] })
    }

    /// Compiles one house's allowlist.
    ///
    /// # Errors
    /// E4001 naming the field of a bad rule.
    pub fn new(house: House, list: &AllowList) -> Result<Egress> {
        Ok(Egress::from_policy(compile(house, list)?))
    }

    /// The policy of `house` in `config`: its list, or nothing allowed when it has none.
    ///
    /// # Errors
    /// As [`Egress::new`].
    pub fn for_house(config: &EgressConfig, house: House) -> Result<Egress> {
        match config.houses.get(&house) {
            Some(list) => Egress::new(house, list),
            None => Ok(Egress::from_policy(Policy { house: Some(house), rules: vec![] })),
        }
    }

    fn from_policy(policy: Policy) -> Egress {
        Egress { policy: Arc::new(policy), clients: [OnceLock::new(), OnceLock::new()] }
    }

    /// The house this policy belongs to (`None` for [`Egress::deny_all`]).
    pub fn house(&self) -> Option<House> {
        self.policy.house
    }

    /// Whether nothing at all is allowed.
    pub fn is_deny_all(&self) -> bool {
        self.policy.rules.is_empty()
    }

    /// Steps 1 and 2 of the check, and step 3 for an IP-literal host (no I/O).
    ///
    /// # Errors
    /// E2009 naming what was refused: scheme, credentials, host, port or address.
    pub fn check_target(&self, url: &Url) -> Result<Target> {
        let policy = &*self.policy;
        let host_str = url.host_str().unwrap_or("");
        let host = HostRef::parse(host_str);
        let deny =
            |address: Option<IpAddr>, why: String| Err(policy.refusal(&host, address, why).into_error(Some(url)));
        let Some(scheme) = Scheme::parse(url.scheme()) else {
            return deny(None, format!("scheme `{}` is not allowed (only http and https)", url.scheme()));
        };
        if !url.username().is_empty() || url.password().is_some() {
            return deny(None, "credentials in the URL are refused; send an Authorization header".into());
        }
        if host_str.is_empty() {
            return deny(None, "the URL has no host".into());
        }
        let port = url.port_or_known_default().unwrap_or(scheme.default_port());
        let on_host = || policy.rules.iter().filter(|r| r.pattern.matches(&host));
        if on_host().next().is_none() {
            return deny(None, format!("host {host} is not on the allowlist"));
        }
        let with_scheme = || on_host().filter(|r| r.schemes.contains(&scheme));
        if with_scheme().next().is_none() {
            return deny(None, format!("scheme {} is not allowed for {host}", scheme.as_str()));
        }
        let allowing = with_scheme().filter(|r| r.ports.contains(&port));
        if allowing.clone().next().is_none() {
            return deny(None, format!("port {port} is not allowed for {host}"));
        }
        let allow_private = Policy::private_allowed(allowing);
        let ip = match host {
            HostRef::Ip(ip) => Some(ip),
            HostRef::Name(_) => None,
        };
        if let Some(ip) = ip {
            let addr = [SocketAddr::new(ip, port)];
            policy.check_addresses(&host, &addr, allow_private).map_err(|r| r.into_error(Some(url)))?;
        }
        Ok(Target { scheme, host: host.to_string(), port, ip, allow_private })
    }

    /// The whole check: [`Egress::check_target`], then every resolved address.
    ///
    /// # Errors
    /// E2009 as [`Egress::check_target`] or for a refused address; E3004 when the name does not
    /// resolve.
    pub async fn check_url(&self, url: &Url) -> Result<Checked> {
        let target = self.check_target(url)?;
        let host = match target.ip {
            Some(ip) => HostRef::Ip(ip),
            None => HostRef::Name(target.host.clone()),
        };
        match self.policy.resolve_checked(&host, target.port, target.allow_private).await {
            Ok(addrs) => Ok(Checked { target, addrs }),
            Err(Refused::Policy(r)) => Err(r.into_error(Some(url))),
            Err(Refused::Resolve(e)) => {
                Err(Error::new(ErrorCode::ToolFailedTransient, format!("could not resolve {}: {e}", target.host))
                    .with_details(json!({ "url": shown_url(url), "host": target.host, "error": e.to_string() })))
            }
        }
    }

    /// A DNS resolver that applies this policy to every name a client connects to: with
    /// `private` false it refuses every special address; with `private` true it allows them
    /// for hosts that some rule lets be private. Use the second only for requests whose own
    /// [`Target::allow_private`] is true (what [`super::send`] does).
    pub fn resolver(&self, private: bool) -> EgressResolver {
        EgressResolver { policy: self.policy.clone(), private }
    }

    /// The client cache used by [`super::shared_client`].
    pub(crate) fn client_cell(&self, private: bool) -> &OnceLock<reqwest::Client> {
        &self.clients[usize::from(private)]
    }
}

/// A `reqwest` DNS resolver that refuses names off the allowlist and names resolving to
/// refused addresses, and otherwise returns exactly the addresses it checked.
#[derive(Debug, Clone)]
pub struct EgressResolver {
    policy: Arc<Policy>,
    private: bool,
}

impl Resolve for EgressResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let private = self.private;
        let host = HostRef::parse(name.as_str());
        Box::pin(async move {
            let checked = match policy.private_somewhere(&host) {
                None => {
                    Err(Refused::Policy(policy.refusal(&host, None, format!("host {host} is not on the allowlist"))))
                }
                Some(somewhere) => policy.resolve_checked(&host, 0, private && somewhere).await,
            };
            match checked {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(Refused::Policy(r)) => Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>),
                Err(Refused::Resolve(e)) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

/// Why an address is refused unless allowed, or `None` for a public unicast address.
///
/// IPv4: this network (0/8), loopback, private (RFC 1918), link-local (incl. `169.254.169.254`),
/// CGNAT, IETF assignments, documentation, benchmarking, multicast, reserved and broadcast.
/// IPv6: unspecified, loopback, unique-local, link-local, site-local, multicast,
/// documentation, discard, IETF assignments (incl. Teredo), everything outside `2000::/3`;
/// IPv4-mapped, NAT64 and 6to4 addresses are judged by the IPv4 address inside.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared address space (CGNAT)",
        (192, 0, 0) => "IETF protocol assignments",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "reserved (6to4 relay)",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    Some(match s[0] {
        0 if s[1..6].iter().all(|x| *x == 0) => "reserved (IPv4-compatible)",
        0x64 if s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) => return refused_v4(embedded(s[6], s[7])),
        0x64 if s[1] == 0xff9b && s[2] == 1 => "private (local-use NAT64)",
        0x100 if s[1..4].iter().all(|x| *x == 0) => "discard-only",
        0x2001 if s[1] < 0x200 => "IETF protocol assignments",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x2002 => return refused_v4(embedded(s[1], s[2])),
        0x3fff if s[1] < 0x1000 => "documentation",
        x if x & 0xfe00 == 0xfc00 => "unique local",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        x if x & 0xe000 != 0x2000 => "reserved",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL parses")
    }

    fn rule(host: &str, schemes: &[Scheme], ports: &[u16], allow_private: bool) -> Rule {
        Rule { host: host.into(), ports: ports.to_vec(), schemes: schemes.to_vec(), allow_private }
    }

    fn egress(rules: Vec<Rule>) -> Egress {
        Egress::new(House::Timmy, &AllowList { allow_private: false, rules }).expect("rules compile")
    }

    fn reason(r: Result<Target>) -> String {
        let e = r.expect_err("refused");
        assert_eq!(e.code, ErrorCode::EgressDenied, "{e}");
        e.details["reason"].as_str().unwrap_or_default().to_owned()
    }

    /// Proves every special-purpose range the SSRF rules name is refused and ordinary public
    /// addresses are not, including IPv4 hidden inside IPv6 forms.
    #[test]
    fn special_ranges_are_refused_and_public_ones_are_not() {
        let refused = [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("192.0.2.1", "documentation"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a00:1", "private"),
            ("2002:a9fe:a9fe::1", "link-local"),
            ("fd00::2", "unique local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "IETF protocol assignments"),
        ];
        for (ip, why) in refused {
            let ip: IpAddr = ip.parse().expect("test IP parses");
            assert_eq!(refused_range(ip), Some(why), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "64:ff9b::808:808"] {
            let ip: IpAddr = ip.parse().expect("test IP parses");
            assert_eq!(refused_range(ip), None, "{ip}");
        }
    }

    /// Proves the deny-all policy refuses every URL, naming the host as not on the allowlist.
    #[test]
    fn deny_all_refuses_everything() {
        let e = Egress::deny_all();
        assert!(e.is_deny_all());
        for u in ["https://example.org/", "http://127.0.0.1/", "http://[::1]:8080/"] {
            assert!(reason(e.check_target(&url(u))).contains("not on the allowlist"), "{u}");
        }
    }

    /// Proves the check order: scheme, credentials, host, then scheme and port per host.
    #[test]
    fn scheme_host_and_port_are_checked_in_order() {
        let e = egress(vec![rule("api.example.org", &[Scheme::Https], &[], false)]);
        assert!(e.check_target(&url("https://api.example.org/x")).is_ok());
        assert!(e.check_target(&url("https://API.Example.org./x")).is_ok(), "case and trailing dot");
        assert!(reason(e.check_target(&url("ftp://api.example.org/"))).contains("scheme `ftp`"));
        assert!(reason(e.check_target(&url("https://u:p@api.example.org/"))).contains("credentials"));
        assert!(reason(e.check_target(&url("https://other.example.org/"))).contains("not on the allowlist"));
        assert!(reason(e.check_target(&url("http://api.example.org/"))).contains("scheme http"));
        assert!(reason(e.check_target(&url("https://api.example.org:8443/"))).contains("port 8443"));
    }

    /// Proves `*.suffix` matches names below the suffix only, and `*` matches any public host.
    #[test]
    fn wildcards_match_as_documented() {
        let e = egress(vec![rule("*.example.org", &[Scheme::Https], &[], false)]);
        assert!(e.check_target(&url("https://a.example.org/")).is_ok());
        assert!(e.check_target(&url("https://a.b.example.org/")).is_ok());
        assert!(e.check_target(&url("https://example.org/")).is_err());
        assert!(e.check_target(&url("https://badexample.org/")).is_err());
        let any = egress(vec![rule("*", &[Scheme::Https], &[], false)]);
        assert!(any.check_target(&url("https://93.184.216.34/")).is_ok());
        assert!(reason(any.check_target(&url("https://169.254.169.254/"))).contains("link-local"));
        assert!(reason(any.check_target(&url("https://[::1]/"))).contains("loopback"));
    }

    /// Proves IP-literal rules match only that literal, and private addresses need the rule
    /// (or the list) to allow them — in any spelling the URL parser normalises.
    #[test]
    fn ip_literals_need_allow_private() {
        let http = &[Scheme::Http];
        let strict = egress(vec![rule("127.0.0.1", http, &[8080], false), rule("[::1]", http, &[8080], false)]);
        assert!(reason(strict.check_target(&url("http://127.0.0.1:8080/"))).contains("loopback"));
        assert!(reason(strict.check_target(&url("http://2130706433:8080/"))).contains("loopback"));
        assert!(reason(strict.check_target(&url("http://[::1]:8080/"))).contains("loopback"));
        let open = egress(vec![rule("127.0.0.1", http, &[8080], true), rule("::1", http, &[8080], true)]);
        assert!(open.check_target(&url("http://127.0.0.1:8080/")).is_ok());
        assert!(open.check_target(&url("http://[::1]:8080/")).is_ok());
        let list = AllowList { allow_private: true, rules: vec![rule("10.0.0.1", http, &[80], false)] };
        let by_list = Egress::new(House::Ezra, &list).expect("compiles");
        let t = by_list.check_target(&url("http://10.0.0.1/")).expect("allowed by the list");
        assert!(t.allow_private);
    }

    /// Proves the most specific pattern among the rules that allow the request decides about
    /// private addresses, and when such rules for the same pattern disagree the stricter one
    /// wins.
    #[test]
    fn most_specific_pattern_decides_private() {
        let https = &[Scheme::Https];
        let e = egress(vec![rule("*", https, &[], false), rule("gitea.internal", https, &[], true)]);
        assert!(e.check_target(&url("https://gitea.internal/")).expect("allowed").allow_private);
        assert!(!e.check_target(&url("https://example.org/")).expect("allowed").allow_private);
        let same = egress(vec![rule("db.internal", https, &[443], true), rule("db.internal", https, &[443], false)]);
        assert!(!same.check_target(&url("https://db.internal/")).expect("allowed").allow_private);
    }

    /// Proves a rule's `allow_private` applies only to the host, scheme and port that rule
    /// allows (issue 15, defect 1): a private rule for port 5801 lends nothing to port 5802
    /// allowed by `*`, nor to a scheme or port of another rule for the same host.
    #[test]
    fn allow_private_applies_only_to_what_its_rule_allows() {
        let (http, https) = (&[Scheme::Http][..], &[Scheme::Https][..]);
        let e = egress(vec![rule("127.0.0.1", http, &[5801], true), rule("*", http, &[5802], false)]);
        assert!(e.check_target(&url("http://127.0.0.1:5801/")).expect("allowed").allow_private);
        assert!(reason(e.check_target(&url("http://127.0.0.1:5802/"))).contains("loopback"));
        let split = egress(vec![rule("db.internal", https, &[443], true), rule("db.internal", https, &[8443], false)]);
        assert!(split.check_target(&url("https://db.internal/")).expect("allowed").allow_private);
        assert!(!split.check_target(&url("https://db.internal:8443/")).expect("allowed").allow_private);
        let schemes =
            egress(vec![rule("db.internal", https, &[8080], true), rule("db.internal", http, &[8080], false)]);
        assert!(schemes.check_target(&url("https://db.internal:8080/")).expect("allowed").allow_private);
        assert!(!schemes.check_target(&url("http://db.internal:8080/")).expect("allowed").allow_private);
    }

    /// Proves a name that resolves to loopback is refused after resolution unless allowed,
    /// and allowed with the resolved addresses when the rule says so.
    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let strict = egress(vec![rule("localhost", &[Scheme::Http], &[8080], false)]);
        let e = strict.check_url(&url("http://localhost:8080/")).await.expect_err("refused");
        assert_eq!(e.code, ErrorCode::EgressDenied);
        assert!(e.details["reason"].as_str().unwrap_or_default().contains("loopback"), "{e}");
        assert!(e.details["address"].is_string());
        let open = egress(vec![rule("localhost", &[Scheme::Http], &[8080], true)]);
        let ok = open.check_url(&url("http://localhost:8080/")).await.expect("allowed");
        assert!(ok.addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 8080));
    }

    /// Proves bad rules are refused by field name and unknown fields or schemes do not parse.
    #[test]
    fn config_errors_name_the_field() {
        let cases = [
            (rule("bad host!", &[Scheme::Https], &[], false), "egress.timmy.rules[0].host"),
            (rule("10.1", &[Scheme::Https], &[], false), "egress.timmy.rules[0].host"),
            (rule("*", &[Scheme::Https], &[], true), "egress.timmy.rules[0].allow_private"),
            (rule("a.example", &[], &[], false), "egress.timmy.rules[0].schemes"),
            (rule("a.example", &[Scheme::Https], &[0], false), "egress.timmy.rules[0].ports"),
        ];
        for (r, field) in cases {
            let cfg = EgressConfig {
                houses: BTreeMap::from([(House::Timmy, AllowList { allow_private: false, rules: vec![r] })]),
            };
            let e = cfg.validate().expect_err("invalid");
            assert_eq!(e.code, ErrorCode::ConfigInvalid);
            assert_eq!(e.details["field"], field);
        }
        let parsed: std::result::Result<EgressConfig, _> =
            serde_json::from_value(json!({ "timmy": { "rules": [{ "host": "a.example", "schemes": ["ftp"] }] } }));
        assert!(parsed.is_err());
        let parsed: std::result::Result<EgressConfig, _> =
            serde_json::from_value(json!({ "timmy": { "rules": [{ "host": "a.example", "port": 80 }] } }));
        assert!(parsed.is_err());
        let parsed: std::result::Result<EgressConfig, _> = serde_json::from_value(json!({ "gandalf": {} }));
        assert!(parsed.is_err());
        let ok: EgressConfig = serde_json::from_value(json!({ "ezra": { "rules": [{ "host": "a.example" }] } }))
            .expect("a minimal rule parses");
        assert_eq!(ok.houses[&House::Ezra].rules[0].schemes, vec![Scheme::Https]);
        assert!(Egress::for_house(&ok, House::Timmy).expect("compiles").is_deny_all());
    }
}
