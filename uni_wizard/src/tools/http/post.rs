//! `http_post`: send a body to one URL the house's egress allowlist permits.
//!
//! The body is either `json` (any JSON value, sent as `application/json`) or `body` (a string,
//! sent as `content_type`, default `text/plain; charset=utf-8`). Egress, redirects, size cap
//! and header redaction work as for [`super::get`]. A POST is not idempotent, so the
//! executor does not retry it unless the call carries an idempotency key.
//!
//! A dry run checks the URL against the egress policy (resolving it) and reports the request
//! that would be sent under `request`, with credentials redacted; it sends nothing.

use std::collections::BTreeMap;

use reqwest::header::{self, HeaderValue};
use reqwest::{Method, Url};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::hash::sha256_hex;
use crate::tools::http::{self, Limits, Outgoing};
use crate::tools::{ToolContext, TypedTool};

/// Arguments of `http_post`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Absolute `http` or `https` URL.
    pub url: String,
    /// Extra request headers (hop-by-hop ones, `Host` and `Content-Type` are refused).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body (any value, `null` included); excludes `body`.
    #[serde(default, deserialize_with = "present")]
    pub json: Option<Value>,
    /// A text body; excludes `json`.
    #[serde(default)]
    pub body: Option<String>,
    /// The `Content-Type` of `body` (`json` is always `application/json`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Most response body bytes to return.
    #[serde(default = "http::default_max_bytes")]
    pub max_bytes: u64,
    /// Most redirects to follow.
    #[serde(default = "http::default_max_redirects")]
    pub max_redirects: u32,
    /// Deadline for the whole exchange in milliseconds (the call's timeout still applies).
    #[serde(default = "http::default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Keeps an explicit `"json": null` apart from an absent `json`.
fn present<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Result of `http_post`. In a dry run nothing is sent: `status` is `null`, the response
/// fields are empty, and `request` says what would have been sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The final URL, after redirects (the URL given, in a dry run).
    pub url: String,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The final HTTP status; `null` in a dry run.
    pub status: Option<u16>,
    /// Response headers, lowercase names, credentials redacted.
    pub headers: BTreeMap<String, String>,
    /// The response body (at most `max_bytes`): UTF-8 text, or base64 when not UTF-8.
    pub body: String,
    /// `utf8` or `base64`.
    pub encoding: &'static str,
    /// Response body bytes returned.
    pub bytes: u64,
    /// Whether the response body went on past `max_bytes`.
    pub truncated: bool,
    /// Each URL a redirect led to, in order.
    pub redirects: Vec<String>,
    /// What would be sent; only in a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Planned>,
}

/// The request a dry run would have sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// Always `POST`.
    pub method: &'static str,
    /// The URL.
    pub url: String,
    /// Request headers, credentials redacted.
    pub headers: BTreeMap<String, String>,
    /// The `Content-Type`, when there is a body.
    pub content_type: Option<String>,
    /// Body size in bytes.
    pub body_bytes: u64,
    /// SHA-256 (hex) of the body.
    pub body_sha256: String,
    /// The addresses the egress check resolved the host to (all allowed).
    pub addresses: Vec<String>,
}

/// The `http_post` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpPost;

impl TypedTool for HttpPost {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        let mut input = http::schema::input_properties();
        input["json"] = json!({"description": "A JSON body (any value), sent as application/json. Excludes `body`."});
        input["body"] = json!({"type": "string", "maxLength": http::MAX_BYTES_LIMIT, "description": "A text body. Excludes `json`."});
        input["content_type"] = json!({"type": "string", "minLength": 1, "maxLength": 256, "description": "Content-Type of `body`; default text/plain; charset=utf-8."});
        let mut output = http::schema::output_properties();
        output["dry_run"] = json!({"type": "boolean"});
        output["status"] = json!({"type": ["integer", "null"], "minimum": 100, "maximum": 599});
        output["request"] = json!({
            "type": "object",
            "properties": {
                "method": {"const": "POST"},
                "url": {"type": "string"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "content_type": {"type": ["string", "null"]},
                "body_bytes": {"type": "integer", "minimum": 0},
                "body_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "addresses": {"type": "array", "items": {"type": "string"}, "minItems": 1}
            },
            "required": ["method", "url", "headers", "content_type", "body_bytes", "body_sha256", "addresses"],
            "additionalProperties": false
        });
        ContractSpec {
            name: "http_post",
            category: Category::Network,
            description: "POST a JSON or text body to a URL on the house's egress allowlist (redirects re-checked, private addresses refused unless allowed); returns status, headers and a size-capped body. Dry run checks egress and reports the request without sending it.",
            input_schema: json!({
                "type": "object",
                "properties": input,
                "required": ["url"],
                "additionalProperties": false
            }),
            output_schema: json!({
                "type": "object",
                "properties": output,
                "required": ["url", "dry_run", "status", "headers", "body", "encoding", "bytes", "truncated", "redirects"],
                "additionalProperties": false
            }),
            annotations: Annotations { read_only: false, destructive: false, idempotent: false, open_world: true },
            risk: Risk::Medium,
            default_timeout: http::TOOL_TIMEOUT,
            dry_run: true,
            content_guard: false,
        }
    }

    fn target(args: &Value) -> String {
        http::target(args)
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        let url = http::parse_url(&input.url, "url")?;
        let mut headers = http::request_headers(&input.headers)?;
        if headers.contains_key(header::CONTENT_TYPE) {
            return Err(invalid("content_type", "set the Content-Type with `content_type`, not in `headers`"));
        }
        let (body, content_type) = body_of(&input)?;
        if let Some(ct) = &content_type {
            let v = HeaderValue::from_str(ct)
                .map_err(|_| invalid("content_type", "has control characters or non-ASCII bytes"))?;
            headers.insert(header::CONTENT_TYPE, v);
        }
        let egress = &*ctx.env.egress;
        if ctx.dry_run {
            let checked = http::check_url(egress, &url).await?;
            return Ok(planned(url, &headers, content_type, &body, &checked.addrs));
        }
        let limits = Limits::capped(input.max_bytes, input.max_redirects, input.timeout_ms);
        let req = Outgoing { method: Method::POST, url, headers, body: Some(body) };
        let got = http::send(egress, req, &limits).await?;
        let bytes = got.body.len() as u64;
        let (body, encoding) = http::encode_body(got.body);
        Ok(Output {
            url: got.url.to_string(),
            dry_run: false,
            status: Some(got.status),
            headers: got.headers,
            body,
            encoding,
            bytes,
            truncated: got.truncated,
            redirects: got.redirects,
            request: None,
        })
    }
}

fn invalid(field: &str, why: &str) -> Error {
    Error::new(ErrorCode::InvalidArguments, format!("http_post: `{field}` {why}"))
        .with_details(json!({ "tool": "http_post", "field": field, "problem": why }))
}

/// The body bytes and their Content-Type.
fn body_of(input: &Input) -> Result<(Vec<u8>, Option<String>)> {
    match (&input.json, &input.body) {
        (Some(_), Some(_)) => Err(invalid("json", "and `body` exclude each other: send one")),
        (Some(v), None) => {
            if input.content_type.is_some() {
                return Err(invalid("content_type", "applies to `body`; `json` is always application/json"));
            }
            let bytes = serde_json::to_vec(v).map_err(|e| invalid("json", &e.to_string()))?;
            Ok((bytes, Some("application/json".to_owned())))
        }
        (None, Some(b)) => {
            let ct = input.content_type.clone().unwrap_or_else(|| "text/plain; charset=utf-8".to_owned());
            Ok((b.clone().into_bytes(), Some(ct)))
        }
        (None, None) => Ok((Vec::new(), input.content_type.clone())),
    }
}

fn planned(
    url: Url,
    headers: &reqwest::header::HeaderMap,
    content_type: Option<String>,
    body: &[u8],
    addrs: &[std::net::SocketAddr],
) -> Output {
    let request = Planned {
        method: "POST",
        url: url.to_string(),
        headers: http::shown_headers(headers),
        content_type,
        body_bytes: body.len() as u64,
        body_sha256: sha256_hex(body),
        addresses: addrs.iter().map(ToString::to_string).collect(),
    };
    Output {
        url: url.to_string(),
        dry_run: true,
        status: None,
        headers: BTreeMap::new(),
        body: String::new(),
        encoding: "utf8",
        bytes: 0,
        truncated: false,
        redirects: Vec::new(),
        request: Some(request),
    }
}
