//! Contracts: what a caller may know about a tool before calling it, and the JSON-schema
//! validator that holds a call to it.
//!
//! A tool module writes its [`ContractSpec`] (name, family, description, schemas, hints, risk,
//! timeout, dry-run and content-guard flags); [`Contract::new`] compiles its schemas once
//! ([`schema::Compiled`]), and [`Contract::validate_input`] checks every call's arguments
//! against it before the tool runs. Policy reads a contract's risk and family; the CLI prints
//! it ([`Contract::to_json`]).
//!
//! This module knows nothing of tools, houses or the harness: the tools, policy, intelligence
//! and the harness import it, never the other way round.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, ErrorCode, Result};

pub mod schema;

pub use schema::{Compiled, Violation};

/// A tool's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Host facts and services.
    System,
    /// Git repositories.
    Git,
    /// HTTP and Gitea.
    Network,
    /// Files under the configured roots.
    File,
}

impl Category {
    /// The lowercase name used in contracts, config (router routes) and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::System => "system",
            Category::Git => "git",
            Category::Network => "network",
            Category::File => "file",
        }
    }
}

/// The MCP tool hints, stated honestly for each tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotations {
    /// Changes nothing anywhere.
    pub read_only: bool,
    /// May destroy or overwrite something that cannot be recovered from the call itself.
    pub destructive: bool,
    /// Calling twice with the same arguments has the same effect as once.
    pub idempotent: bool,
    /// Talks to something outside this host.
    pub open_world: bool,
}

/// How much harm a call can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Reads only.
    Low,
    /// Changes local state that can be undone.
    Medium,
    /// Changes production or shared state.
    High,
    /// Never allowed.
    Blocked,
}

/// The static parts of a contract, as a tool module writes them.
#[derive(Debug)]
pub struct ContractSpec {
    /// Unique name, e.g. `file_read`.
    pub name: &'static str,
    /// Family.
    pub category: Category,
    /// One sentence.
    pub description: &'static str,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
    /// JSON Schema of the output.
    pub output_schema: Value,
    /// MCP hints.
    pub annotations: Annotations,
    /// Risk level.
    pub risk: Risk,
    /// Timeout when the call and config give none.
    pub default_timeout: Duration,
    /// Whether a `dry_run` call reports what would change and changes nothing.
    pub dry_run: bool,
    /// Whether the tool accepts `expected_sha256` and refuses when the target changed since.
    pub content_guard: bool,
}

/// Everything a caller may know about a tool before calling it: its [`ContractSpec`], with
/// both schemas compiled.
///
/// The spec is read through [`Contract::spec`] and cannot be changed once compiled, so the
/// schemas a caller reads are always the ones calls are checked against.
#[derive(Debug)]
pub struct Contract {
    spec: ContractSpec,
    input: Compiled,
    output: Compiled,
    /// The top-level input properties whose schema has an `enum`, read once from the input
    /// schema for [`Contract::is_enumerated`].
    enumerated: Box<[String]>,
}

impl Contract {
    /// Compiles a spec's schemas. A schema error is a bug in the tool, reported by name.
    ///
    /// # Errors
    /// E4001 naming the tool and the schema fault.
    pub fn new(spec: ContractSpec) -> Result<Contract> {
        let bad = |which: &str, e: String| {
            Error::new(ErrorCode::ConfigInvalid, format!("tool {} has an invalid {which} schema: {e}", spec.name))
        };
        let input = Compiled::compile(&spec.input_schema).map_err(|e| bad("input", e))?;
        let output = Compiled::compile(&spec.output_schema).map_err(|e| bad("output", e))?;
        let enumerated = spec
            .input_schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.iter().filter(|(_, schema)| schema.get("enum").is_some()).map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        Ok(Contract { spec, input, output, enumerated })
    }

    /// The static parts: name, family, schemas, hints, risk, timeout, flags.
    pub fn spec(&self) -> &ContractSpec {
        &self.spec
    }

    /// Whether the input schema gives top-level property `field` an `enum`: its values are a
    /// small closed set, which the pattern DB's fingerprint keeps apart
    /// (`intelligence::fingerprint`).
    pub fn is_enumerated(&self, field: &str) -> bool {
        self.enumerated.iter().any(|f| f == field)
    }

    /// Checks arguments against the input schema.
    ///
    /// # Errors
    /// E1003 naming the field (as a JSON pointer) and what is wrong with it.
    pub fn validate_input(&self, args: &Value) -> Result<()> {
        self.input.validate(args).map_err(|v| {
            let field = v.pointer.trim_start_matches('/').replace('/', ".");
            let shown = if field.is_empty() { "arguments".to_owned() } else { format!("`{field}`") };
            Error::new(ErrorCode::InvalidArguments, format!("{}: {shown} {}", self.spec.name, v.message)).with_details(
                json!({ "tool": self.spec.name, "field": field, "pointer": v.pointer, "problem": v.message }),
            )
        })
    }

    /// Checks an output against the output schema (used by tests and debug builds).
    ///
    /// # Errors
    /// The first violation.
    pub fn validate_output(&self, output: &Value) -> Result<(), Violation> {
        self.output.validate(output)
    }

    /// The contract as JSON, as `uni-wizard tools --json` prints it.
    pub fn to_json(&self) -> Value {
        let s = &self.spec;
        json!({
            "name": s.name,
            "category": s.category,
            "description": s.description,
            "input_schema": s.input_schema,
            "output_schema": s.output_schema,
            "annotations": s.annotations,
            "risk": s.risk,
            "default_timeout_ms": s.default_timeout.as_millis() as u64,
            "dry_run": s.dry_run,
            "content_guard": s.content_guard,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves `Category::as_str` names each category as its serialised form does, so routes keyed
    /// by category name cannot drift from the contracts.
    #[test]
    fn category_names_match_their_json() {
        for c in [Category::System, Category::Git, Category::Network, Category::File] {
            assert_eq!(serde_json::to_value(c).ok(), Some(json!(c.as_str())));
        }
    }
}
