//! Where the Gitea server is and how to authenticate (`gitea:` in a config), and the names
//! Gitea accepts for owners and repositories.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use super::{DEFAULT_MAX_PAGES, DEFAULT_TIMEOUT_MS};
use crate::error::{Error, ErrorCode};

/// An API token. `Debug`, `Display` and `Serialize` show `[redacted]`; only
/// [`GiteaToken::expose`] gives the value, and only the client calls it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct GiteaToken(String);

impl GiteaToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> GiteaToken {
        GiteaToken(token.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GiteaToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for GiteaToken {
    /// Serialises as `[redacted]`: a config written back out never carries the secret.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for GiteaToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(GiteaToken)
    }
}

impl From<&str> for GiteaToken {
    fn from(s: &str) -> GiteaToken {
        GiteaToken(s.to_owned())
    }
}

impl From<String> for GiteaToken {
    fn from(s: String) -> GiteaToken {
        GiteaToken(s)
    }
}

/// Where the Gitea server is and how to talk to it (`gitea:` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GiteaConfig {
    /// The server root, e.g. `https://git.example.com` (`/api/v1` is appended unless present).
    pub base_url: String,
    /// An access token of the bot user; usually `${GITEA_TOKEN}` in the YAML.
    pub token: GiteaToken,
    /// Per-request timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Owner used when a tool call names none.
    #[serde(default)]
    pub owner: Option<String>,
    /// Repository used when a tool call names none.
    #[serde(default)]
    pub repo: Option<String>,
    /// Most pages one list walks (each at most [`MAX_PAGE_SIZE`] items).
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn default_max_pages() -> u32 {
    DEFAULT_MAX_PAGES
}

impl GiteaConfig {
    /// A config for `base_url` with `token` and defaults for the rest.
    pub fn new(base_url: impl Into<String>, token: impl Into<GiteaToken>) -> GiteaConfig {
        GiteaConfig {
            base_url: base_url.into(),
            token: token.into(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            owner: None,
            repo: None,
            max_pages: DEFAULT_MAX_PAGES,
        }
    }
}

pub(super) fn config_error(field: &str, why: impl fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("config field `{field}` {why}"))
        .with_details(json!({ "field": field }))
}

/// Whether `s` is a Gitea owner or repository name (also keeps path segments plain).
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// JSON Schema pattern of an owner or repository name, matching [`is_valid_name`].
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_.-]{1,100}$";
