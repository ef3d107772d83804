//! Settings of router leadership through etcd (`etcd:`); the module that runs it is
//! [`crate::leader`].
//!
//! The section is optional: a fleet without it runs a single router, as a single host needs
//! no etcd. With it, every router campaigns and every worker watches the leader.
//!
//! # Timing
//!
//! - **`lease_ttl_ms`** (default 2000, at least 1000, whole seconds): etcd grants leases in
//!   whole seconds and never below its floor of 1.5 x election timeout (rounded up to a
//!   second). With the cluster settings `../shared/design/DEPENDENCIES.md` measures
//!   (`--election-timeout 500`) the floor is 0.75 s, so 1 s leases are granted; with etcd's
//!   defaults (1000 ms) the floor is 1.5 s and etcd grants 2 s whatever is asked. A TTL below
//!   one second cannot be granted at all. The leader fences itself on the TTL etcd *granted*,
//!   so a floor above the setting only slows a failover, it never makes one unsafe.
//! - **`keepalive_ms`** (default TTL / 4): how often the lease is renewed. At least two
//!   renewals fit in the leader's validity window (`keepalive_ms <= (lease_ttl_ms -
//!   fence_margin_ms) / 2`), so one lost renewal does not step a leader down.
//! - **`fence_margin_ms`** (default TTL / 4, 100 to TTL / 2): how long before its lease can have
//!   expired at etcd a leader stops dispatching. A lease expires at etcd TTL after etcd took
//!   the last renewal, which it can only have taken after the leader sent it; so the lease
//!   lives at least until `send time of the last answered keep-alive + granted TTL`, on the
//!   leader's own clock, and the leader stops at that instant minus the margin. The margin
//!   covers what that reasoning leaves out: a dispatch admitted just before the fence still
//!   has to reach its worker (one loopback or LAN round trip), the two clocks may run at
//!   slightly different rates (parts per million over a few seconds: microseconds), and the
//!   leader's own runtime may be late to notice (a scheduling stall). A quarter of the TTL
//!   (500 ms by default) is orders of magnitude above each of these. A new leader is elected
//!   only after the old key is gone, that is after the lease expired, so the old leader has
//!   stopped at least `fence_margin_ms` before the new one can start.
//! - **`connect_timeout_ms`**, **`request_timeout_ms`** (default 1000 each): every call to
//!   etcd is bounded by the request timeout (a keep-alive unanswered for that long makes the
//!   stream be reopened); a call that outlives the lease decides nothing, so it is at most the TTL.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use uni_wizard::{Error, ErrorCode};

/// The most endpoints one section may list (an etcd cluster has 3, 5 or 7 members).
const MAX_ENDPOINTS: usize = 16;

/// The `etcd:` section: where the cluster is, under which key prefix the fleet's keys live,
/// and the lease timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// The cluster's client URLs, `http://host:port` each (one member is enough to reach the
    /// cluster; list them all so losing one changes nothing).
    pub endpoints: Vec<String>,
    /// The key prefix of every key the fleet writes (`<prefix>/router/leader/...`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The leader lease's time to live, milliseconds (a whole number of seconds, at least 1000).
    #[serde(default = "default_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// How often the lease is renewed, milliseconds (default `lease_ttl_ms / 4`).
    #[serde(default)]
    pub keepalive_ms: Option<u64>,
    /// How long before its lease can have expired the leader stops, milliseconds (default
    /// `lease_ttl_ms / 4`).
    #[serde(default)]
    pub fence_margin_ms: Option<u64>,
    /// Connecting to a member, at most, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Any one call to etcd, at most, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub request_timeout_ms: u64,
    /// TLS to etcd: required for `https://` endpoints, which any endpoint off loopback must be.
    #[serde(default)]
    pub tls: Option<EtcdTls>,
}

/// TLS to etcd (PEM files): the CA that signed the members' server certificates and, where
/// etcd asks for client certificates (`--client-cert-auth`, as it should), this node's
/// certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    /// The CA that verifies the members' certificates.
    pub ca: PathBuf,
    /// This node's client certificate chain (with `key`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// This node's client key (with `cert`).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name to expect in the members' certificates (default: each endpoint's host).
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_prefix() -> String {
    "/uni-wizard".into()
}

fn default_ttl_ms() -> u64 {
    2_000
}

fn default_timeout_ms() -> u64 {
    1_000
}

/// Reads a present `etcd:` key: a section, never an empty one (see `DaemonConfig::etcd`).
///
/// # Errors
/// When the key holds nothing (`etcd:` alone, `etcd: ~`) or not a valid section.
pub fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<EtcdConfig>, D::Error> {
    match Option::<EtcdConfig>::deserialize(d)? {
        Some(section) => Ok(Some(section)),
        None => Err(serde::de::Error::custom(
            "`etcd:` is empty: give its `endpoints`, or remove the key to run a single router without etcd",
        )),
    }
}

impl EtcdConfig {
    /// A section with the defaults and these endpoints.
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: default_prefix(),
            lease_ttl_ms: default_ttl_ms(),
            keepalive_ms: None,
            fence_margin_ms: None,
            connect_timeout_ms: default_timeout_ms(),
            request_timeout_ms: default_timeout_ms(),
            tls: None,
        }
    }

    /// The TLS settings of the clients, read from their files (`None`: plaintext, loopback
    /// only, which [`EtcdConfig::validate`] has insisted on).
    ///
    /// # Errors
    /// E4001 naming a file that cannot be read.
    pub fn client_tls(&self) -> Result<Option<ClientTlsConfig>, Error> {
        let Some(t) = &self.tls else { return Ok(None) };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(super::read_tls_file(&t.ca)?));
        if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
            tls = tls.identity(Identity::from_pem(super::read_tls_file(cert)?, super::read_tls_file(key)?));
        }
        if let Some(name) = &t.server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(Some(tls))
    }

    /// The lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    /// The lease TTL to ask etcd for, in its unit (whole seconds).
    pub fn lease_ttl_secs(&self) -> i64 {
        i64::try_from(self.lease_ttl_ms / 1_000).unwrap_or(i64::MAX)
    }

    /// The renewal interval.
    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms.unwrap_or(self.lease_ttl_ms / 4))
    }

    /// The fence margin.
    pub fn fence_margin(&self) -> Duration {
        Duration::from_millis(self.fence_margin_ms.unwrap_or(self.lease_ttl_ms / 4))
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The bound of every call.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The election's name: its candidates' keys are `<name>/<lease id in hex>`.
    pub fn election_name(&self) -> String {
        format!("{}/router/leader", self.prefix)
    }

    /// Checks what the types alone do not.
    ///
    /// # Errors
    /// E4001 naming the field (relative to `etcd`).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, problem: String| {
            Err(Error::new(ErrorCode::ConfigInvalid, format!("field `{field}`: {problem}"))
                .with_details(json!({ "field": field, "problem": problem })))
        };
        if self.endpoints.is_empty() {
            return bad("endpoints", "lists no endpoint; list the cluster's client URLs".into());
        }
        if self.endpoints.len() > MAX_ENDPOINTS {
            return bad("endpoints", format!("lists more than {MAX_ENDPOINTS} endpoints"));
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            if let Err(problem) = check_endpoint(e, self.tls.is_some()) {
                return bad("endpoints", problem);
            }
            let same = |o: &String| o.trim_end_matches('/') == e.trim_end_matches('/');
            if self.endpoints[..i].iter().any(same) {
                return bad("endpoints", format!("`{e}` is listed twice (one member counted twice hides a lost one)"));
            }
        }
        if let Some(t) = &self.tls {
            if t.cert.is_some() != t.key.is_some() {
                return bad("tls", "give both `cert` and `key` (a client certificate), or neither".into());
            }
            if t.server_name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 253) {
                return bad("tls.server_name", "must be a host name of 1 to 253 characters".into());
            }
        }
        if let Err(problem) = check_prefix(&self.prefix) {
            return bad("prefix", problem);
        }
        let ttl = self.lease_ttl_ms;
        if !(1_000..=600_000).contains(&ttl) || !ttl.is_multiple_of(1_000) {
            return bad(
                "lease_ttl_ms",
                "must be a whole number of seconds from 1000 to 600000 (etcd grants leases in seconds, \
                 and none below its floor of 1.5 x election timeout)"
                    .into(),
            );
        }
        let margin = self.fence_margin().as_millis();
        if !(100..=u128::from(ttl / 2)).contains(&margin) {
            return bad("fence_margin_ms", format!("must be 100 to lease_ttl_ms / 2 ({})", ttl / 2));
        }
        let window = u128::from(ttl) - margin;
        let keepalive = self.keepalive().as_millis();
        if keepalive < 10 || keepalive > window / 2 {
            return bad(
                "keepalive_ms",
                format!(
                    "must be 10 to (lease_ttl_ms - fence_margin_ms) / 2 = {}, so one lost renewal does not \
                     step a leader down",
                    window / 2
                ),
            );
        }
        if !(10..=60_000).contains(&self.connect_timeout_ms) {
            return bad("connect_timeout_ms", "must be 10 to 60000".into());
        }
        if self.request_timeout_ms < 10 || self.request_timeout_ms > ttl {
            return bad("request_timeout_ms", "must be 10 to lease_ttl_ms".into());
        }
        Ok(())
    }
}

/// Checks one endpoint: `https://host:port` with `tls`, else `http://host:port` on loopback.
fn check_endpoint(endpoint: &str, tls: bool) -> Result<(), String> {
    let scheme = if tls { "https" } else { "http" };
    let Some(rest) = endpoint.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) else {
        return Err(if tls {
            format!("`{endpoint}` is not an https://host:port URL (with `etcd.tls`, every endpoint is https://)")
        } else if endpoint.starts_with("https://") {
            format!(
                "`{endpoint}` is https:// but the section has no `tls` (give `tls.ca`, and a client `cert` and `key`)"
            )
        } else {
            format!("`{endpoint}` is not an http://host:port URL")
        });
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
        return Err(format!("`{endpoint}`: only {scheme}://host:port, no path, query or user"));
    }
    let (host, port) = super::parse_endpoint(authority).map_err(|e| format!("{e} (in `{endpoint}`)"))?;
    if port == 0 {
        return Err(format!("`{endpoint}` has port 0"));
    }
    if authority.parse::<http::uri::Authority>().is_err() || host.is_empty() {
        return Err(format!("`{endpoint}` is not a valid host:port"));
    }
    if !tls && !super::is_loopback_host(&host) {
        return Err(format!(
            "`{endpoint}`: plaintext to etcd is allowed only on loopback (whoever can write to etcd decides \
             who leads); use https:// endpoints and `etcd.tls`"
        ));
    }
    Ok(())
}

/// Checks the key prefix: `/` then printable non-space characters, not ending in `/`.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
        return Err(format!("`{prefix}` must start with `/`, name something, and not end with `/`"));
    }
    if prefix.len() > 256 || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be at most 256 characters without spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(extra: &str) -> Result<EtcdConfig, Error> {
        let text = format!("endpoints: ['http://127.0.0.1:2379']\n{extra}");
        let c: EtcdConfig = crate::config::parse(&text, "etcd.yaml")?;
        c.validate()?;
        Ok(c)
    }

    fn field(extra: &str) -> String {
        let e = section(extra).expect_err("refused");
        assert_eq!(e.code, ErrorCode::ConfigInvalid, "{}", e.message);
        e.details["field"].as_str().unwrap_or_default().to_owned()
    }

    /// Proves a node config without `etcd:` runs without etcd, and one whose `etcd:` holds
    /// nothing (`etcd:` alone, `etcd: ~`) is refused naming the key, not read as "no etcd".
    #[test]
    fn an_empty_section_is_refused_not_ignored() {
        let base = "house: timmy\nplaintext_loopback: true\nlisten: {grpc: 127.0.0.1:1, http: 127.0.0.1:2}\nhouses:\n  timmy: {endpoint: 127.0.0.1:1, auth_token: timmy-token-0123456789}\n";
        let parse = |extra: &str| crate::config::DaemonConfig::parse(&format!("{base}{extra}"), "n.yaml", &|_| None);
        assert_eq!(parse("").expect("no section").etcd, None);
        for empty in ["etcd:\n", "etcd: ~\n"] {
            let e = parse(empty).expect_err("refused");
            assert_eq!(e.code, ErrorCode::ConfigInvalid, "{}", e.message);
            assert!(e.message.contains("`etcd:` is empty"), "{}", e.message);
        }
        assert!(parse("etcd: {endpoints: ['http://127.0.0.1:2379']}\n").expect("a section").etcd.is_some());
    }

    /// Proves the defaults: prefix `/uni-wizard`, a 2 s lease renewed every 500 ms, a 500 ms
    /// fence margin, 1 s timeouts, and the election's name under the prefix.
    #[test]
    fn defaults_are_filled_in() {
        let c = section("").expect("valid");
        assert_eq!(c.prefix, "/uni-wizard");
        assert_eq!(c.lease_ttl(), Duration::from_secs(2));
        assert_eq!(c.lease_ttl_secs(), 2);
        assert_eq!(c.keepalive(), Duration::from_millis(500));
        assert_eq!(c.fence_margin(), Duration::from_millis(500));
        assert_eq!(c.request_timeout(), Duration::from_secs(1));
        assert_eq!(c.connect_timeout(), Duration::from_secs(1));
        assert_eq!(c.election_name(), "/uni-wizard/router/leader");
        assert_eq!(EtcdConfig::new(vec!["http://127.0.0.1:2379".into()]), c);
    }

    /// Proves endpoints must be non-empty URLs of one scheme: without `tls`, `http://host:port`
    /// on loopback only (https, another host, no scheme, no port, a path are each refused naming
    /// `endpoints`); with `tls`, `https://` only, a client certificate needing its key.
    #[test]
    fn endpoints_are_checked() {
        let e = crate::config::parse::<EtcdConfig>("endpoints: []\n", "f").expect("parses");
        assert_eq!(e.validate().expect_err("empty").details["field"], "endpoints");
        let bad = [
            "https://127.0.0.1:2379",
            "http://10.0.0.1:2379",
            "http://etcd.example:2379",
            "127.0.0.1:2379",
            "http://127.0.0.1",
            "http://localhost:1/v3",
            "http://:1",
        ];
        for bad in bad {
            let c = EtcdConfig::new(vec!["http://127.0.0.1:2379".into(), bad.into()]);
            let e = c.validate().expect_err(bad);
            assert_eq!(e.details["field"], "endpoints", "{bad}");
            assert!(e.message.contains(bad), "{bad}: {}", e.message);
        }
        let twice = EtcdConfig::new(vec!["http://127.0.0.1:2379".into(), "http://127.0.0.1:2379/".into()]);
        assert!(twice.validate().expect_err("twice").message.contains("listed twice"));
        let https = EtcdConfig::new(vec!["https://etcd:2379".into()]).validate().expect_err("https");
        assert!(https.message.contains("tls"), "{}", https.message);
        let plain = EtcdConfig::new(vec!["http://10.0.0.1:2379".into()]).validate().expect_err("off loopback");
        assert!(plain.message.contains("only on loopback"), "{}", plain.message);
        let many = EtcdConfig::new(vec![
            "http://127.0.0.1:2379".into(),
            "http://[::1]:2379/".into(),
            "http://localhost:1".into(),
        ]);
        assert!(many.validate().is_ok());

        let with_tls = |endpoints: &[&str], tls: &str| {
            let text = format!("endpoints: [{}]\ntls: {tls}\n", endpoints.join(", "));
            crate::config::parse::<EtcdConfig>(&text, "f").and_then(|c| c.validate().map(|()| c))
        };
        let ok = with_tls(&["https://10.0.0.1:2379", "https://etcd-2:2379"], "{ca: ca.pem, cert: c.pem, key: c.key}");
        assert!(ok.is_ok(), "{ok:?}");
        assert!(with_tls(&["https://10.0.0.1:2379"], "{ca: ca.pem}").is_ok(), "a CA alone: no client certificate");
        let mixed = with_tls(&["https://10.0.0.1:2379", "http://127.0.0.1:2379"], "{ca: ca.pem}").expect_err("mixed");
        assert_eq!(mixed.details["field"], "endpoints");
        let half = with_tls(&["https://10.0.0.1:2379"], "{ca: ca.pem, cert: c.pem}").expect_err("no key");
        assert_eq!(half.details["field"], "tls");
        assert!(with_tls(&["https://10.0.0.1:2379"], "{ca: ca.pem, pass: x}").is_err(), "unknown fields refused");
    }

    /// Proves the TLS files are read when asked for (a missing one is E4001 naming it), and a
    /// section without `tls` has none.
    #[test]
    fn tls_files_are_read_and_named() {
        assert!(EtcdConfig::new(vec!["http://127.0.0.1:2379".into()]).client_tls().expect("no files").is_none());
        let mut c = EtcdConfig::new(vec!["https://127.0.0.1:2379".into()]);
        c.tls = Some(EtcdTls { ca: "/nonexistent/etcd-ca.pem".into(), cert: None, key: None, server_name: None });
        c.validate().expect("valid: files are read when used");
        let e = c.client_tls().expect_err("missing CA");
        assert_eq!(e.code, ErrorCode::ConfigInvalid);
        assert!(e.message.contains("/nonexistent/etcd-ca.pem"), "{}", e.message);
    }

    /// Proves the commented `etcd:` example in configs/houses.yaml, uncommented, is a valid section.
    #[test]
    fn the_documented_example_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/houses.yaml");
        let text = std::fs::read_to_string(path).expect("configs/houses.yaml");
        let block: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# etcd:"))
            .skip(1)
            .take_while(|l| l.starts_with("#   "))
            .map(|l| format!("{}\n", &l[4..]))
            .collect();
        assert!(block.contains("endpoints:") && block.contains("lease_ttl_ms:"), "example not found:\n{block}");
        let c: EtcdConfig = crate::config::parse(&block, "houses.yaml").expect("parses");
        c.validate().expect("valid");
        assert_eq!(
            (c.lease_ttl_ms, c.keepalive(), c.fence_margin()),
            (2_000, Duration::from_millis(500), Duration::from_millis(500))
        );
    }

    /// Proves the lease timing is bounded: TTL in whole seconds from 1 s, margin 100 ms to
    /// TTL / 2, renewal leaving room for one lost keep-alive, timeouts bounded, each naming
    /// its field; and that unknown fields are refused.
    #[test]
    fn timing_is_checked() {
        assert_eq!(field("lease_ttl_ms: 500\n"), "lease_ttl_ms");
        assert_eq!(field("lease_ttl_ms: 1500\n"), "lease_ttl_ms");
        assert!(section("lease_ttl_ms: 1000\n").is_ok(), "1 s, the floor with --election-timeout 500");
        assert_eq!(field("fence_margin_ms: 50\n"), "fence_margin_ms");
        assert_eq!(field("fence_margin_ms: 1001\n"), "fence_margin_ms");
        assert_eq!(field("keepalive_ms: 800\n"), "keepalive_ms");
        assert_eq!(field("keepalive_ms: 5\n"), "keepalive_ms");
        assert!(section("keepalive_ms: 750\n").is_ok());
        assert_eq!(field("request_timeout_ms: 2001\n"), "request_timeout_ms");
        assert_eq!(field("connect_timeout_ms: 0\n"), "connect_timeout_ms");
        assert_eq!(field("prefix: uni-wizard\n"), "prefix");
        assert_eq!(field("prefix: /uni-wizard/\n"), "prefix");
        assert_eq!(field("prefix: '/a b'\n"), "prefix");
        assert!(section("lease_ttl: 2000\n").is_err(), "unknown fields are refused");
    }
}
