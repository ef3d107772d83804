//! The per-house policy of SYSTEM.md §1, enforced here and nowhere else.
//!
//! The rules, in the order [`check`] applies them:
//! 1. the house may use the tool at all (`allowed_categories`, `denied_tools`);
//! 2. Ezra reads before it writes: a mutating call carries `expected_sha256` (the tool itself
//!    compares it with what is there when it writes);
//! 3. Bezalel shows proof: a mutating call cites the provenance id of an earlier successful
//!    read-only check in the same session, newer than the last write to the same target;
//! 4. Allegro may not change production without Timmy's approval;
//! 5. in Sovereign mode anything not read-only needs Timmy's approval.
//!
//! Only Timmy approves: an approval from any other house is refused.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::contract::{Category, Contract};
use crate::error::{Error, ErrorCode, Result};
use crate::house::{House, Mode};
use crate::provenance::ProvenanceLog;

/// What one house may do. Defaults encode SYSTEM.md §1; config may only narrow them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HousePolicy {
    /// Tool categories the house may use at all.
    pub allowed_categories: Vec<Category>,
    /// Tools refused outright, whatever their category.
    #[serde(default)]
    pub denied_tools: Vec<String>,
    /// A mutating call must carry `expected_sha256` of what was read (Ezra).
    #[serde(default)]
    pub read_before_write: bool,
    /// A mutating call must cite a prior successful check (Bezalel).
    #[serde(default)]
    pub proof_required: bool,
    /// Production-changing calls need Timmy's approval (Allegro).
    #[serde(default)]
    pub production_needs_approval: bool,
}

impl HousePolicy {
    /// The built-in policy of a house.
    pub fn default_for(house: House) -> HousePolicy {
        let all = vec![Category::System, Category::Git, Category::Network, Category::File];
        match house {
            House::Timmy => HousePolicy {
                allowed_categories: all,
                denied_tools: vec![],
                read_before_write: false,
                proof_required: false,
                production_needs_approval: false,
            },
            House::Allegro => HousePolicy {
                allowed_categories: all,
                denied_tools: vec![],
                read_before_write: false,
                proof_required: false,
                production_needs_approval: true,
            },
            House::Ezra => HousePolicy {
                allowed_categories: all,
                denied_tools: vec!["service_restart".into()],
                read_before_write: true,
                proof_required: false,
                production_needs_approval: true,
            },
            House::Bezalel => HousePolicy {
                allowed_categories: all,
                denied_tools: vec![],
                read_before_write: false,
                proof_required: true,
                production_needs_approval: true,
            },
        }
    }
}

/// What the policy asks of the call before it may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requirements {
    /// Timmy's approval must be obtained first.
    pub approval: bool,
}

/// The facts about one call that the policy needs.
#[derive(Debug)]
pub struct CallFacts<'a> {
    /// The calling house.
    pub house: House,
    /// The mode of the harness.
    pub mode: Mode,
    /// The tool's contract.
    pub contract: &'a Contract,
    /// The validated arguments.
    pub args: &'a Value,
    /// Whether the call changes nothing (dry run or read-only tool).
    pub changes_nothing: bool,
    /// Whether the tool says this call changes production.
    pub changes_production: bool,
    /// The tool's target (path, repository, host), used to match proofs to writes.
    pub target: &'a str,
    /// The session the call belongs to.
    pub session: &'a str,
    /// The proof cited (Bezalel).
    pub proof: Option<&'a str>,
}

/// Applies the house policy to one call.
///
/// # Errors
/// E2001 when the house may not use the tool; E2004 when Ezra's write lacks `expected_sha256`;
/// E2006 / E2007 when Bezalel's proof is missing or invalid.
pub fn check(policy: &HousePolicy, facts: &CallFacts<'_>, log: &dyn ProvenanceLog) -> Result<Requirements> {
    let c = facts.contract.spec();
    if !policy.allowed_categories.contains(&c.category) || policy.denied_tools.iter().any(|t| t == c.name) {
        return Err(Error::new(ErrorCode::ToolNotAllowed, format!("house {} may not use {}", facts.house, c.name))
            .with_details(json!({ "house": facts.house, "tool": c.name })));
    }
    let mutating = !c.annotations.read_only;
    if mutating && policy.read_before_write {
        if !c.content_guard {
            return Err(Error::new(
                ErrorCode::ToolNotAllowed,
                format!("house {} must read before it writes, and {} cannot check what was read", facts.house, c.name),
            )
            .with_details(json!({ "house": facts.house, "tool": c.name })));
        }
        let has_hash = facts.args.get("expected_sha256").and_then(Value::as_str).is_some();
        if !has_hash {
            return Err(Error::new(
                ErrorCode::ReadBeforeWriteRequired,
                format!("house {} must pass expected_sha256 of what it read before {}", facts.house, c.name),
            )
            .with_details(json!({ "house": facts.house, "tool": c.name, "field": "expected_sha256" })));
        }
    }
    if mutating && policy.proof_required && !facts.changes_nothing {
        check_proof(facts, log)?;
    }
    let approval = !facts.changes_nothing
        && ((mutating && facts.mode == Mode::Sovereign)
            || (facts.changes_production && policy.production_needs_approval));
    Ok(Requirements { approval })
}

fn check_proof(facts: &CallFacts<'_>, log: &dyn ProvenanceLog) -> Result<()> {
    let tool = facts.contract.spec().name;
    let Some(proof) = facts.proof else {
        return Err(Error::new(
            ErrorCode::ProofRequired,
            format!("house {} must cite a prior successful check before {tool}", facts.house),
        )
        .with_details(json!({ "house": facts.house, "tool": tool, "field": "proof" })));
    };
    let invalid = |why: &str| {
        Error::new(ErrorCode::ProofInvalid, format!("proof {proof} is not valid: {why}"))
            .with_details(json!({ "proof": proof, "reason": why }))
    };
    let Some(record) = log.get(proof) else {
        return Err(invalid("no such provenance record"));
    };
    if *record.session != *facts.session {
        return Err(invalid("it belongs to another session"));
    }
    if !record.ok {
        return Err(invalid("that check failed"));
    }
    if !record.read_only {
        return Err(invalid("it is a write, not a check"));
    }
    if let Some(last_write) = log.last_write(facts.session, facts.target)
        && last_write.seq > record.seq
    {
        return Err(invalid("the target was written after that check"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves house and mode names parse case-insensitively and unknown names give E1002/E1004.
    #[test]
    fn names_parse_and_unknown_names_are_contract_errors() {
        assert_eq!("Timmy".parse::<House>().ok(), Some(House::Timmy));
        assert_eq!("SOVEREIGN".parse::<Mode>().ok(), Some(Mode::Sovereign));
        let e = "gandalf".parse::<House>().err().map(|e| e.code);
        assert_eq!(e, Some(ErrorCode::UnknownHouse));
        let e = "turbo".parse::<Mode>().err().map(|e| e.code);
        assert_eq!(e, Some(ErrorCode::UnknownMode));
    }
}
