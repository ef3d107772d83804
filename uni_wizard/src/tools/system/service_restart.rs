//! `service_restart`: restarts one systemd unit and reports its state before and after.
//!
//! Destructive and high risk: a restart interrupts whatever the unit serves, and calling it
//! twice interrupts twice (not idempotent). Being high risk, it changes production, so every
//! house but Timmy needs Timmy's approval, and Ezra may not use it at all (house policy).
//!
//! A **dry run** reads the unit's current state and reports the command it would run
//! (`would restart <unit>`) without running it. It still needs systemd: the current state is
//! half of what a dry run reports, so on a host where systemd is not PID 1 a dry run fails
//! with the same E3007 as a real run, rather than pretending to know what would happen.
//!
//! A real run is `systemctl restart -- <unit>`, which waits for systemd's job to finish,
//! then `systemctl show` again: the new main PID and active state are the proof it happened.
//! If the call times out while waiting, the restart may still complete (the job is systemd's).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::schema;
use super::systemctl::{Systemctl, UnitName, UnitStatus};
use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::Result;
use crate::tools::{ToolContext, TypedTool};

/// Arguments of `service_restart`. Whether it is a dry run comes from the call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The unit, e.g. `nginx` or `nginx.service`.
    pub unit: String,
}

/// Result of `service_restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The unit as asked.
    pub unit: String,
    /// Whether this was a dry run (nothing was restarted).
    pub dry_run: bool,
    /// Whether the restart ran and systemd reported it done.
    pub restarted: bool,
    /// The command that was run (or, in a dry run, would be), program first.
    pub command: Vec<String>,
    /// One sentence: what happened or would happen.
    pub summary: String,
    /// The unit's state before.
    pub before: UnitStatus,
    /// The unit's state after; `None` in a dry run.
    pub after: Option<UnitStatus>,
    /// Whether the main PID differs after the restart; `None` in a dry run.
    pub main_pid_changed: Option<bool>,
}

/// The `service_restart` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceRestart;

impl TypedTool for ServiceRestart {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        let before = schema::unit_status();
        let mut after = before.clone();
        after["type"] = json!(["object", "null"]);
        ContractSpec {
            name: "service_restart",
            category: Category::System,
            description: "Restarts one systemd unit (`systemctl restart`) and reports its state before and after; dry run reports what would happen.",
            input_schema: schema::unit_input(),
            output_schema: json!({
                "type": "object",
                "properties": {
                    "unit": {"type": "string", "minLength": 1},
                    "dry_run": {"type": "boolean"},
                    "restarted": {"type": "boolean"},
                    "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "summary": {"type": "string", "minLength": 1},
                    "before": before,
                    "after": after,
                    "main_pid_changed": {"type": ["boolean", "null"]}
                },
                "required": ["unit", "dry_run", "restarted", "command", "summary", "before", "after", "main_pid_changed"],
                "additionalProperties": false
            }),
            annotations: Annotations { read_only: false, destructive: true, idempotent: false, open_world: false },
            risk: Risk::High,
            // systemd's default stop and start timeouts are 90 s each; a restart may use both.
            default_timeout: Duration::from_secs(180),
            dry_run: true,
            content_guard: false,
        }
    }

    fn target(args: &Value) -> String {
        super::unit_target(args)
    }

    async fn run(ctx: &ToolContext, input: Input) -> Result<Output> {
        let unit = UnitName::parse(&input.unit)?;
        let systemctl = Systemctl::host();
        let before = systemctl.status(&unit).await?;
        let command = systemctl.restart_command(&unit);
        if ctx.dry_run {
            return Ok(Output {
                summary: dry_run_summary(&unit, &before),
                unit: input.unit,
                dry_run: true,
                restarted: false,
                command,
                before,
                after: None,
                main_pid_changed: None,
            });
        }
        tracing::info!(unit = %unit, house = %ctx.house, request_id = %ctx.request_id, "service_restart: restarting");
        systemctl.restart(&unit).await?;
        let after = systemctl.status(&unit).await?;
        let changed = before.main_pid != after.main_pid;
        Ok(Output {
            summary: format!(
                "restarted {unit}: now {} ({}), main PID {} -> {}",
                after.active_state,
                after.sub_state,
                pid(before.main_pid),
                pid(after.main_pid)
            ),
            unit: input.unit,
            dry_run: false,
            restarted: true,
            command,
            before,
            after: Some(after),
            main_pid_changed: Some(changed),
        })
    }
}

/// What a dry run says, including when systemctl would refuse.
fn dry_run_summary(unit: &UnitName, before: &UnitStatus) -> String {
    let now = format!("{} ({}), main PID {}", before.active_state, before.sub_state, pid(before.main_pid));
    match before.load_state.as_str() {
        "loaded" => format!("would restart {unit}; it is {now}"),
        other => format!(
            "would try to restart {unit}, but its load state is {other}, so systemctl would refuse; it is {now}"
        ),
    }
}

fn pid(p: Option<u32>) -> String {
    p.map_or_else(|| "none".to_owned(), |p| p.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use super::*;
    use crate::contract::Contract;
    use crate::tools::{Tool, Typed};

    /// Proves the annotations are honest: mutating, destructive, not idempotent, high risk,
    /// dry-run capable, and therefore production-changing.
    #[test]
    fn contract_is_destructive_high_risk_and_changes_production() {
        let c = Contract::new(ServiceRestart::spec()).unwrap();
        let a = c.spec().annotations;
        assert!(!a.read_only && a.destructive && !a.idempotent && !a.open_world);
        assert_eq!(c.spec().risk, Risk::High);
        assert!(c.spec().dry_run);
        let t = Typed::<ServiceRestart>::new().unwrap();
        assert!(t.changes_production(&json!({"unit": "ssh"})));
        assert_eq!(t.target(&json!({"unit": "ssh"})), "ssh");
    }

    /// Proves a dry-run summary says what would happen and warns when systemctl would refuse.
    #[test]
    fn dry_run_summary_says_what_would_happen() {
        let text = "Id=a.service\nLoadState=loaded\nActiveState=active\nSubState=running\nMainPID=42\n";
        let mut s = UnitStatus::from_properties(&crate::tools::system::systemctl::parse_show(text)).unwrap();
        let unit = UnitName::parse("a").unwrap();
        assert_eq!(dry_run_summary(&unit, &s), "would restart a; it is active (running), main PID 42");
        s.load_state = "masked".into();
        assert!(dry_run_summary(&unit, &s).contains("masked, so systemctl would refuse"));
    }
}
