//! The JSON-schema fragments the HTTP tools share, so `url`, `headers` and the bounds of an
//! exchange mean the same in `http_get` and `http_post`.

use serde_json::{Value, json};

use super::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_REDIRECTS, DEFAULT_TIMEOUT_MS, MAX_BYTES_LIMIT, MAX_REDIRECTS_LIMIT, MAX_TIMEOUT_MS,
};

/// The input properties `http_get` and `http_post` share: `url`, `headers`, `max_bytes`,
/// `max_redirects`, `timeout_ms` (`http_post` adds its body).
pub fn input_properties() -> Value {
    json!({
        "url": {"type": "string", "minLength": 1, "maxLength": 8192, "format": "uri", "description": "Absolute http or https URL on the house's egress allowlist."},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 8192},
            "description": "Extra request headers; Host, Content-Length and hop-by-hop headers are refused."
        },
        "max_bytes": {"type": "integer", "minimum": 0, "maximum": MAX_BYTES_LIMIT, "default": DEFAULT_MAX_BYTES},
        "max_redirects": {"type": "integer", "minimum": 0, "maximum": MAX_REDIRECTS_LIMIT, "default": DEFAULT_MAX_REDIRECTS},
        "timeout_ms": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS, "default": DEFAULT_TIMEOUT_MS}
    })
}

/// The output properties `http_get` and `http_post` share: the final `url`, `status`,
/// `headers`, `body` and how it was cut (`http_post` adds `dry_run` and `request`).
pub fn output_properties() -> Value {
    json!({
        "url": {"type": "string", "minLength": 1},
        "status": {"type": "integer", "minimum": 100, "maximum": 599},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "body": {"type": "string"},
        "encoding": {"enum": ["utf8", "base64"]},
        "bytes": {"type": "integer", "minimum": 0, "maximum": MAX_BYTES_LIMIT},
        "truncated": {"type": "boolean"},
        "redirects": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_REDIRECTS_LIMIT}
    })
}
