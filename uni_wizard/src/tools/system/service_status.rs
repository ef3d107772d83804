//! `service_status`: one systemd unit's state — load, active and sub state, unit file state,
//! main PID, last result, restarts, memory, and when it started.
//!
//! Runs `systemctl show --property=…` through [`Systemctl`](super::systemctl::Systemctl),
//! which checks first that systemd is PID 1 (E3007 otherwise, naming what PID 1 is) and
//! validates the unit name (E1003). A unit systemd does not know is E3006.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::schema;
use super::systemctl::{Systemctl, UnitName, UnitStatus};
use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::Result;
use crate::tools::{ToolContext, TypedTool};

/// Arguments of `service_status`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The unit, e.g. `ssh` or `ssh.service` (`.service` is implied, as systemctl implies it).
    pub unit: String,
}

/// Result of `service_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The unit as asked.
    pub unit: String,
    /// Whether `ActiveState` is `active`.
    pub active: bool,
    /// Everything `systemctl show` reported.
    pub status: UnitStatus,
}

/// The `service_status` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceStatus;

impl TypedTool for ServiceStatus {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "service_status",
            category: Category::System,
            description: "State of one systemd unit (load/active/sub state, main PID, result, restarts, memory) via `systemctl show`.",
            input_schema: schema::unit_input(),
            output_schema: json!({
                "type": "object",
                "properties": {
                    "unit": {"type": "string", "minLength": 1},
                    "active": {"type": "boolean"},
                    "status": schema::unit_status()
                },
                "required": ["unit", "active", "status"],
                "additionalProperties": false
            }),
            annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: false },
            risk: Risk::Low,
            default_timeout: Duration::from_secs(15),
            dry_run: false,
            content_guard: false,
        }
    }

    fn target(args: &Value) -> String {
        super::unit_target(args)
    }

    async fn run(_ctx: &ToolContext, input: Input) -> Result<Output> {
        let unit = UnitName::parse(&input.unit)?;
        let status = Systemctl::host().status(&unit).await?;
        Ok(Output { unit: input.unit, active: status.active_state == "active", status })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use super::*;
    use crate::tools::Contract;

    /// Proves the contract compiles, is read-only and low risk, and its schema refuses an
    /// option-like unit name before anything runs.
    #[test]
    fn contract_is_read_only_and_strict() {
        let c = Contract::new(ServiceStatus::spec()).unwrap();
        assert!(c.spec().annotations.read_only && !c.spec().annotations.destructive);
        assert_eq!(c.spec().risk, Risk::Low);
        c.validate_input(&json!({"unit": "ssh.service"})).unwrap();
        let e = c.validate_input(&json!({"unit": "-evil"})).unwrap_err();
        assert_eq!(e.details["field"], "unit");
        assert!(c.validate_input(&json!({})).is_err());
    }
}
