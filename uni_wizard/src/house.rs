//! The houses of the fleet and the modes a call runs in: the leaf types every layer names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, ErrorCode, Result};

/// One host of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum House {
    /// The sovereign local node: final decisions, approvals, long-term memory.
    Timmy,
    /// Tempo and dispatch: routing, triage, telemetry, failover.
    Allegro,
    /// The archivist: analysis, architecture, docs. Reads before it writes.
    Ezra,
    /// The artificer: implementation, testing, forge work. Shows proof.
    Bezalel,
}

impl House {
    /// All houses, Timmy first.
    pub const ALL: [House; 4] = [House::Timmy, House::Allegro, House::Ezra, House::Bezalel];

    /// The lowercase name used in config, CLI and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            House::Timmy => "timmy",
            House::Allegro => "allegro",
            House::Ezra => "ezra",
            House::Bezalel => "bezalel",
        }
    }

    /// The house's role in one line.
    pub const fn role(self) -> &'static str {
        match self {
            House::Timmy => "sovereign: final decisions, approvals, policy",
            House::Allegro => "tempo-and-dispatch: routing, triage, telemetry, failover",
            House::Ezra => "archivist: analysis, architecture, docs",
            House::Bezalel => "artificer: implementation, testing, forge work",
        }
    }
}

impl fmt::Display for House {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for House {
    type Err = Error;

    fn from_str(s: &str) -> Result<House> {
        House::ALL.into_iter().find(|h| h.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            Error::new(ErrorCode::UnknownHouse, format!("unknown house `{s}`"))
                .with_details(json!({ "house": s, "known": ["timmy", "allegro", "ezra", "bezalel"] }))
        })
    }
}

/// How much machinery wraps a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Contract validation, timeout, direct execution.
    Simple,
    /// Adds the full executor (concurrency limit, breaker, retry) and learning.
    #[default]
    Intelligent,
    /// Adds Timmy's approval for anything not read-only; fails closed.
    Sovereign,
}

impl Mode {
    /// The lowercase name used in config, CLI and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Simple => "simple",
            Mode::Intelligent => "intelligent",
            Mode::Sovereign => "sovereign",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Mode> {
        [Mode::Simple, Mode::Intelligent, Mode::Sovereign]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::new(ErrorCode::UnknownMode, format!("unknown mode `{s}`"))
                    .with_details(json!({ "mode": s, "known": ["simple", "intelligent", "sovereign"] }))
            })
    }
}
