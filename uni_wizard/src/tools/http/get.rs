//! `http_get`: fetch one URL the house's egress allowlist permits.
//!
//! The URL and every redirect hop pass the egress check (see [`http::egress`](super::egress)); the body is
//! read up to `max_bytes` and returned as text, or base64 when it is not UTF-8. Response
//! headers come back with credentials (`set-cookie` and the like) redacted.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::Result;
use crate::tools::http::{self, Limits, Outgoing};
use crate::tools::{ToolContext, TypedTool};

/// Arguments of `http_get`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Absolute `http` or `https` URL.
    pub url: String,
    /// Extra request headers (hop-by-hop ones and `Host` are refused).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Most body bytes to return.
    #[serde(default = "http::default_max_bytes")]
    pub max_bytes: u64,
    /// Most redirects to follow.
    #[serde(default = "http::default_max_redirects")]
    pub max_redirects: u32,
    /// Deadline for the whole exchange in milliseconds (the call's timeout still applies).
    #[serde(default = "http::default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Result of `http_get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The final URL, after redirects.
    pub url: String,
    /// The final HTTP status.
    pub status: u16,
    /// Response headers, lowercase names, credentials redacted.
    pub headers: BTreeMap<String, String>,
    /// The body (at most `max_bytes`): UTF-8 text, or base64 when not UTF-8.
    pub body: String,
    /// `utf8` or `base64`.
    pub encoding: &'static str,
    /// Body bytes returned.
    pub bytes: u64,
    /// Whether the body went on past `max_bytes`.
    pub truncated: bool,
    /// Each URL a redirect led to, in order.
    pub redirects: Vec<String>,
}

/// The `http_get` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpGet;

impl TypedTool for HttpGet {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "http_get",
            category: Category::Network,
            description: "GET a URL on the house's egress allowlist (redirects re-checked, private addresses refused unless allowed); returns status, headers and a size-capped body.",
            input_schema: json!({
                "type": "object",
                "properties": http::schema::input_properties(),
                "required": ["url"],
                "additionalProperties": false
            }),
            output_schema: json!({
                "type": "object",
                "properties": http::schema::output_properties(),
                "required": ["url", "status", "headers", "body", "encoding", "bytes", "truncated", "redirects"],
                "additionalProperties": false
            }),
            annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: true },
            risk: Risk::Low,
            default_timeout: http::TOOL_TIMEOUT,
            dry_run: false,
            content_guard: false,
        }
    }

    fn target(args: &Value) -> String {
        http::target(args)
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        let url = http::parse_url(&input.url, "url")?;
        let headers = http::request_headers(&input.headers)?;
        let egress = &*ctx.env.egress;
        let limits = Limits::capped(input.max_bytes, input.max_redirects, input.timeout_ms);
        let req = Outgoing { method: Method::GET, url, headers, body: None };
        let got = http::send(egress, req, &limits).await?;
        let bytes = got.body.len() as u64;
        let (body, encoding) = http::encode_body(got.body);
        Ok(Output {
            url: got.url.to_string(),
            status: got.status,
            headers: got.headers,
            body,
            encoding,
            bytes,
            truncated: got.truncated,
            redirects: got.redirects,
        })
    }
}
