//! The HTTP family: `http_get` ([`get`]) and `http_post` ([`post`]), the house's egress policy
//! ([`egress`]), the schema fragments both tools take ([`schema`]), and here the HTTP
//! machinery they share: an egress-enforcing client, requests that follow redirects by hand
//! with every hop re-checked, bodies read under a hard cap, header hygiene, and one mapping
//! from transport failures to error codes.
//!
//! A client from [`client`] has no proxy, follows no redirect, retries nothing itself (the
//! executor owns retries) and resolves names only through the house's
//! [`EgressResolver`](egress::EgressResolver). [`send`] adds the rest: it checks each URL
//! with [`check_url`] before connecting, so IP literals (which skip DNS) are checked too, and
//! a redirect to a refused target fails with E2009 naming the hop.
//!
//! ```no_run
//! # async fn demo(env: &uni_wizard::tools::ToolEnv) -> uni_wizard::Result<()> {
//! use uni_wizard::tools::http::{self, Limits, Outgoing};
//! let url = http::parse_url("https://api.example.org/v1/things", "url")?;
//! let got = http::send(&env.egress, Outgoing::get(url), &Limits::default()).await?;
//! println!("{} ({} bytes)", got.status, got.body.len());
//! # Ok(()) }
//! ```
//!
//! Secrets: header values that look like credentials (see [`is_sensitive`]) are marked
//! sensitive for the HTTP stack, shown as `[redacted]` in outputs, dropped when a redirect
//! leaves the origin, and never logged.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::json;

use crate::error::{Error, ErrorCode, Result};
use egress::{Checked, Egress, EgressRefusal, shown_url};

pub mod egress;
pub mod get;
pub mod post;
pub mod schema;

/// `max_bytes` when none is given.
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;
/// Largest `max_bytes` a caller may ask for.
pub const MAX_BYTES_LIMIT: u64 = 16 * 1024 * 1024;
/// `max_redirects` when none is given.
pub const DEFAULT_MAX_REDIRECTS: u32 = 5;
/// Largest `max_redirects` a caller may ask for.
pub const MAX_REDIRECTS_LIMIT: u32 = 10;
/// `timeout_ms` when none is given: the whole exchange, redirects included.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Largest `timeout_ms` a caller may ask for.
pub const MAX_TIMEOUT_MS: u64 = 300_000;

/// [`DEFAULT_MAX_BYTES`], for `#[serde(default = ...)]`.
pub fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

/// [`DEFAULT_MAX_REDIRECTS`], for `#[serde(default = ...)]`.
pub fn default_max_redirects() -> u32 {
    DEFAULT_MAX_REDIRECTS
}

/// [`DEFAULT_TIMEOUT_MS`], for `#[serde(default = ...)]`.
pub fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
/// The tools' default timeout: the exchange's own default and 5 s to spare for the rest of the
/// call.
pub const TOOL_TIMEOUT: Duration = Duration::from_millis(DEFAULT_TIMEOUT_MS + 5_000);
/// Longest a TCP (and TLS) connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The `User-Agent` sent unless a request sets its own.
pub const USER_AGENT: &str = concat!("uni-wizard/", env!("CARGO_PKG_VERSION"));
/// What a redacted header value is shown as.
pub const REDACTED: &str = "[redacted]";

/// Request headers a caller may not set: hop-by-hop headers, and those the client manages.
pub const REFUSED_REQUEST_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// How a client is built.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest a connect may take.
    pub connect_timeout: Duration,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Deadline of each request, response body included (none: [`send`]'s `Limits::timeout`
    /// bounds the whole exchange instead).
    pub timeout: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions { connect_timeout: CONNECT_TIMEOUT, user_agent: USER_AGENT.to_owned(), timeout: None }
    }
}

/// A client that can only reach what `egress` allows: names resolve through the egress
/// resolver ([`Egress::resolver`] with `private`), no proxy, no automatic redirects or
/// retries, no `Referer`.
///
/// Pair it with [`send`] (or call [`check_url`] before each request yourself, and use a
/// `private` client only for a URL whose check says `allow_private`), because a URL with an
/// IP-literal host never reaches a resolver and the resolver cannot see the port.
///
/// # Errors
/// E3003 when the TLS stack cannot be initialised.
pub fn client(egress: &Egress, opts: &ClientOptions, private: bool) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder();
    if let Some(t) = opts.timeout {
        b = b.timeout(t);
    }
    b.no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .referer(false)
        .connect_timeout(opts.connect_timeout)
        .user_agent(opts.user_agent.clone())
        .dns_resolver(egress.resolver(private))
        .build()
        .map_err(|e| Error::new(ErrorCode::ToolFailed, format!("cannot build the HTTP client: {}", chain(&e))))
}

/// The client with default options for this policy and privacy (see [`client`]), built on
/// first use and then shared (so connections are pooled across calls).
///
/// # Errors
/// As [`client`].
pub fn shared_client(egress: &Egress, private: bool) -> Result<reqwest::Client> {
    let cell = egress.client_cell(private);
    if let Some(c) = cell.get() {
        return Ok(c.clone());
    }
    let built = client(egress, &ClientOptions::default(), private)?;
    Ok(cell.get_or_init(|| built).clone())
}

/// The whole egress check of one URL (see [`Egress::check_url`]).
///
/// # Errors
/// E2009 when refused, E3004 when the name does not resolve.
pub async fn check_url(egress: &Egress, url: &Url) -> Result<Checked> {
    egress.check_url(url).await
}

/// Parses an absolute URL given in argument `field`.
///
/// # Errors
/// E1003 naming the field when it is not an absolute URL.
pub fn parse_url(s: &str, field: &str) -> Result<Url> {
    Url::parse(s).map_err(|e| {
        Error::new(ErrorCode::InvalidArguments, format!("`{field}` is not an absolute URL: {e}"))
            .with_details(json!({ "field": field, "problem": e.to_string() }))
    })
}

/// The target of an HTTP call, keying its breaker and provenance: the host its `url` names.
pub fn target(args: &serde_json::Value) -> String {
    target_host(crate::tools::arg_str(args, "url"))
}

/// The host a URL argument names (lowercase), or `""`: the target that keys breakers.
pub fn target_host(url: &str) -> String {
    Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)).unwrap_or_default()
}

/// Whether a header's value is a credential: shown redacted, dropped across origins.
pub fn is_sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "set-cookie2" | "private-token"
    ) || ["token", "secret", "api-key", "apikey", "password", "session", "signature"].iter().any(|w| n.contains(w))
}

/// Builds request headers from a caller's map.
///
/// # Errors
/// E1003 naming the header when its name or value is invalid or it is one of
/// [`REFUSED_REQUEST_HEADERS`].
pub fn request_headers(map: &BTreeMap<String, String>) -> Result<HeaderMap> {
    let mut out = HeaderMap::with_capacity(map.len());
    for (name, value) in map {
        let field = format!("headers.{name}");
        let bad = |why: String| {
            Err(Error::new(ErrorCode::InvalidArguments, format!("header `{name}` {why}"))
                .with_details(json!({ "field": field, "header": name, "problem": why })))
        };
        let Ok(hn) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
            return bad("is not a valid header name".into());
        };
        if REFUSED_REQUEST_HEADERS.contains(&hn.as_str()) {
            return bad("may not be set: it is hop-by-hop or managed by the client".into());
        }
        let Ok(mut hv) = HeaderValue::from_str(value) else {
            return bad("has a value with control characters or non-ASCII bytes".into());
        };
        hv.set_sensitive(is_sensitive(hn.as_str()));
        out.append(hn, hv);
    }
    Ok(out)
}

/// Headers as a JSON-friendly map: lowercase names, repeated values joined with `, `,
/// credentials redacted.
pub fn shown_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let v = if is_sensitive(name.as_str()) || value.is_sensitive() {
            REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        out.entry(name.as_str().to_owned())
            .and_modify(|prev| {
                if prev != REDACTED {
                    prev.push_str(", ");
                    prev.push_str(&v);
                }
            })
            .or_insert(v);
    }
    out
}

/// A body as text when it is UTF-8, else base64: `(body, "utf8" | "base64")`.
pub fn encode_body(bytes: Vec<u8>) -> (String, &'static str) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, "utf8"),
        // A cut at max_bytes may split a character: base64 keeps every byte intact.
        Err(e) => (base64::engine::general_purpose::STANDARD.encode(e.as_bytes()), "base64"),
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The method.
    pub method: Method,
    /// Where to.
    pub url: Url,
    /// Headers (see [`request_headers`]).
    pub headers: HeaderMap,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
}

impl Outgoing {
    /// A `GET` with no headers.
    pub fn get(url: Url) -> Outgoing {
        Outgoing { method: Method::GET, url, headers: HeaderMap::new(), body: None }
    }
}

/// Bounds of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most body bytes kept; the rest is not read.
    pub max_bytes: u64,
    /// Most redirects followed.
    pub max_redirects: u32,
    /// Deadline for the whole exchange, redirects and body included.
    pub timeout: Duration,
}

impl Limits {
    /// The bounds a call asked for (`max_bytes`, `max_redirects`, `timeout_ms`), each held
    /// within its limit.
    pub fn capped(max_bytes: u64, max_redirects: u32, timeout_ms: u64) -> Limits {
        Limits {
            max_bytes: max_bytes.min(MAX_BYTES_LIMIT),
            max_redirects: max_redirects.min(MAX_REDIRECTS_LIMIT),
            timeout: Duration::from_millis(timeout_ms.clamp(1, MAX_TIMEOUT_MS)),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
        }
    }
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The final URL, after redirects.
    pub url: Url,
    /// The final status.
    pub status: u16,
    /// The final response's headers (see [`shown_headers`]).
    pub headers: BTreeMap<String, String>,
    /// The body, at most `max_bytes`.
    pub body: Vec<u8>,
    /// Whether the body went on past `max_bytes`.
    pub truncated: bool,
    /// Each URL a redirect led to, in order.
    pub redirects: Vec<String>,
}

/// Sends a request: checks the URL, sends, and follows up to `max_redirects` redirects,
/// checking each hop again; reads the final body up to `max_bytes`.
///
/// Redirects: 303 (and 301/302 after a `POST`) continue as `GET` without a body; 307/308 keep
/// the method and body. Credentials ([`is_sensitive`] headers) are dropped when a hop leaves
/// the origin (scheme, host, port).
///
/// # Errors
/// E2009 when the URL or a redirect hop is refused (details name the hop); E3001 past
/// `timeout`; E3004 for connection refused/reset and resolution failures; E3003 for TLS and
/// protocol errors, a bad `Location`, or too many redirects.
pub async fn send(egress: &Egress, req: Outgoing, limits: &Limits) -> Result<Fetched> {
    let shown = shown_url(&req.url);
    match tokio::time::timeout(limits.timeout, exchange(egress, req, limits)).await {
        Ok(r) => r,
        Err(_) => {
            let ms = limits.timeout.as_millis() as u64;
            Err(Error::new(ErrorCode::Timeout, format!("{shown} did not answer within {ms} ms"))
                .with_details(json!({ "url": shown, "timeout_ms": ms })))
        }
    }
}

async fn exchange(egress: &Egress, req: Outgoing, limits: &Limits) -> Result<Fetched> {
    let Outgoing { mut method, mut url, mut headers, mut body } = req;
    let mut redirects: Vec<String> = Vec::new();
    loop {
        let hop = redirects.len();
        let checked = egress.check_url(&url).await.map_err(|e| at_hop(e, hop, &redirects))?;
        // The client of this hop's own decision: a private-capable connection only for a
        // (scheme, host, port) that may be private (see the egress module's docs).
        let client = shared_client(egress, checked.target.allow_private)?;
        let mut rb = client.request(method.clone(), url.clone()).headers(headers.clone());
        if let Some(b) = &body {
            rb = rb.body(b.clone());
        }
        let mut resp = rb.send().await.map_err(|e| at_hop(transport_error(e, &method, &url), hop, &redirects))?;
        let status = resp.status();
        tracing::debug!(host = url.host_str().unwrap_or(""), %method, status = status.as_u16(), hop, "http exchange");
        let location = resp.headers().get(header::LOCATION).cloned();
        if let (true, Some(location)) = (is_redirect(status), location) {
            if hop as u32 >= limits.max_redirects {
                return Err(Error::new(
                    ErrorCode::ToolFailed,
                    format!("more than {} redirects from {}", limits.max_redirects, shown_url(&url)),
                )
                .with_details(json!({ "max_redirects": limits.max_redirects, "redirects": redirects })));
            }
            let next = location.to_str().ok().and_then(|l| url.join(l).ok()).ok_or_else(|| {
                Error::new(ErrorCode::ToolFailed, format!("{} redirected to an unusable Location", shown_url(&url)))
                    .with_details(json!({ "url": shown_url(&url), "hop": hop + 1 }))
            })?;
            let to_get = status == StatusCode::SEE_OTHER && method != Method::HEAD
                || matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND) && method == Method::POST;
            if to_get {
                method = Method::GET;
                body = None;
                headers.remove(header::CONTENT_TYPE);
            }
            if next.origin() != url.origin() {
                let secret: Vec<HeaderName> = headers.keys().filter(|n| is_sensitive(n.as_str())).cloned().collect();
                for n in secret {
                    headers.remove(n);
                }
            }
            redirects.push(next.to_string());
            url = next;
            continue;
        }
        let shown_h = shown_headers(resp.headers());
        let (data, truncated) = read_capped(&mut resp, limits.max_bytes, &method, &url).await?;
        return Ok(Fetched { url, status: status.as_u16(), headers: shown_h, body: data, truncated, redirects });
    }
}

fn is_redirect(s: StatusCode) -> bool {
    matches!(
        s,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// Names the redirect hop in an error raised after the first request.
fn at_hop(mut e: Error, hop: usize, redirects: &[String]) -> Error {
    if hop == 0 {
        return e;
    }
    e.message = format!("redirect {hop}: {}", e.message);
    if let Some(d) = e.details.as_object_mut() {
        d.insert("hop".into(), json!(hop));
        d.insert("redirects".into(), json!(redirects));
    }
    e
}

/// Reads at most `cap` bytes of the body, chunk by chunk; reports whether more followed.
async fn read_capped(resp: &mut reqwest::Response, cap: u64, method: &Method, url: &Url) -> Result<(Vec<u8>, bool)> {
    let cap = usize::try_from(cap.min(MAX_BYTES_LIMIT)).unwrap_or(usize::MAX);
    let hint = resp.content_length().map_or(64 * 1024, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut body = Vec::with_capacity(hint.min(cap));
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(e, method, url))? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// Every message in an error's source chain, joined with `: `.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        src = s.source();
    }
    out
}

fn find<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// Maps a transport failure to a code: E2009 (refused by the egress resolver), E3001
/// (timeout), E3004 (refused, reset, unreachable, resolution failed), E3003 (TLS, protocol).
///
/// The message and details show `url` without credentials, query or fragment; the URL that
/// `reqwest` keeps in its error is dropped.
pub fn transport_error(e: reqwest::Error, method: &Method, url: &Url) -> Error {
    let e = e.without_url();
    let e = &e;
    if let Some(r) = find::<EgressRefusal>(e) {
        return r.clone().into_error(Some(url));
    }
    let shown = shown_url(url);
    let detail = chain(e);
    use std::io::ErrorKind as K;
    let io_kind = find::<std::io::Error>(e).map(std::io::Error::kind);
    let (code, kind) = if e.is_timeout() || io_kind == Some(K::TimedOut) {
        (ErrorCode::Timeout, "timeout")
    } else if e.is_dns() {
        (ErrorCode::ToolFailedTransient, "dns")
    } else {
        match io_kind {
            Some(
                K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::AddrNotAvailable
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::Interrupted,
            ) => (ErrorCode::ToolFailedTransient, "connection"),
            Some(K::InvalidData) if e.is_connect() => (ErrorCode::ToolFailed, "tls"),
            _ if e.is_connect() => (ErrorCode::ToolFailed, "connect"),
            _ => (ErrorCode::ToolFailed, "protocol"),
        }
    };
    Error::new(code, format!("{method} {shown}: {detail}"))
        .with_details(json!({ "url": shown, "kind": kind, "error": detail }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves hop-by-hop and client-managed headers are refused by name, and credentials are
    /// marked sensitive and shown redacted.
    #[test]
    fn headers_are_screened_and_credentials_redacted() {
        for name in ["Host", "connection", "Transfer-Encoding", "content-length"] {
            let e = request_headers(&BTreeMap::from([(name.to_owned(), "x".to_owned())])).expect_err("refused");
            assert_eq!(e.code, ErrorCode::InvalidArguments, "{name}");
        }
        let bad = request_headers(&BTreeMap::from([("x-a".to_owned(), "a\r\nb".to_owned())]));
        assert!(bad.is_err());
        let h = request_headers(&BTreeMap::from([
            ("Authorization".to_owned(), "Bearer s3cret".to_owned()),
            ("X-Trace".to_owned(), "1".to_owned()),
        ]))
        .expect("valid");
        assert!(h["authorization"].is_sensitive());
        let shown = shown_headers(&h);
        assert_eq!(shown["authorization"], REDACTED);
        assert_eq!(shown["x-trace"], "1");
    }

    /// Proves the client's resolver enforces the policy at connect time by itself — what stops
    /// a DNS answer that changes between the check and the connect: a request sent without
    /// [`check_url`] to a name resolving to loopback, or to a name off the list, is E2009.
    #[tokio::test]
    async fn client_resolver_refuses_at_connect_time() {
        use crate::house::House;
        use crate::tools::http::egress::{AllowList, Rule, Scheme};
        let rules = ["localhost", "not-listed.invalid"].map(|host| Rule {
            host: host.into(),
            ports: vec![9],
            schemes: vec![Scheme::Http],
            allow_private: false,
        });
        let egress = Egress::new(House::Timmy, &AllowList { allow_private: false, rules: rules[..1].to_vec() })
            .expect("rules compile");
        for private in [false, true] {
            let c = client(&egress, &ClientOptions::default(), private).expect("client builds");
            for (u, why) in
                [("http://localhost:9/", "loopback"), ("http://not-listed.invalid:9/", "not on the allowlist")]
            {
                let url = Url::parse(u).expect("test URL parses");
                let e = c.get(url.clone()).send().await.expect_err("refused by the resolver");
                let mapped = transport_error(e, &Method::GET, &url);
                assert_eq!(mapped.code, ErrorCode::EgressDenied, "{u} (private client {private}): {mapped}");
                assert!(mapped.details["reason"].as_str().unwrap_or_default().contains(why), "{u}: {mapped}");
            }
        }
    }

    /// Proves bodies come back as UTF-8 text when they are text and as base64 otherwise.
    #[test]
    fn bodies_are_text_or_base64() {
        assert_eq!(encode_body(b"hi".to_vec()), ("hi".to_owned(), "utf8"));
        assert_eq!(encode_body(vec![0xff, 0x00]), ("/wA=".to_owned(), "base64"));
    }
}
