//! `uni-wizard hermes-hook`: a Hermes shell hook.
//!
//! Hermes runs the command for each configured hook event with one JSON object on stdin
//! (`hook_event_name`, `tool_name`, `tool_input`, `session_id`, `cwd`, `extra`) and reads an
//! optional JSON answer on stdout; for `pre_tool_call`, `{"action": "block", "message": ...}`
//! vetoes the call. Hooks run inside Hermes' tool dispatch, so this never waits long: the
//! event goes into the node's outbox (the telemetry daemon streams it) with the lock wait
//! bounded by `telemetry.hook_timeout_ms`, and a failure to forward is reported on stderr
//! without changing the answer.
//!
//! The decision ([`decide`]) is separate from the forwarding: a tool is blocked when it is in
//! the node's `telemetry.hook_deny` or in the house's built-in `denied_tools`.

use serde_json::{Value, json};
use uni_wizard::{House, HousePolicy};
use uni_wizard_proto::v1;

use super::hermes::truncate;

/// Largest stdin document read, bytes.
pub const MAX_INPUT: usize = 1024 * 1024;
/// Largest payload kept in a hook event, bytes.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// What the hook answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the call (or event) go on.
    Allow,
    /// Veto a `pre_tool_call`, with the reason.
    Block(String),
}

/// The hook's event name (`hook_event_name`), "" when absent.
pub fn event_name(input: &Value) -> &str {
    input["hook_event_name"].as_str().unwrap_or("")
}

/// Decides a hook event: only `pre_tool_call` can be blocked.
pub fn decide(input: &Value, house: House, deny: &[String]) -> Decision {
    if event_name(input) != "pre_tool_call" {
        return Decision::Allow;
    }
    let tool = input["tool_name"].as_str().unwrap_or("");
    let builtin = HousePolicy::default_for(house).denied_tools;
    if deny.iter().chain(builtin.iter()).any(|d| d == tool) {
        return Decision::Block(format!("uni-wizard: house {house} does not allow the tool `{tool}`"));
    }
    Decision::Allow
}

/// The stdout answer Hermes parses.
pub fn answer(d: &Decision) -> String {
    match d {
        Decision::Allow => "{}".to_owned(),
        Decision::Block(m) => json!({ "action": "block", "message": m }).to_string(),
    }
}

/// The telemetry event of one hook invocation: secrets redacted, large payloads cut.
pub fn hook_event(input: &Value, d: &Decision) -> v1::HookEvent {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let extra = &input["extra"];
    let mut payload = json!({ "tool_input": input["tool_input"], "extra": extra, "cwd": input["cwd"] });
    if let Some(m) = payload["extra"].as_object_mut()
        && let Some(Value::String(r)) = m.get("result")
    {
        let cut = truncate(r, 4096).0;
        m.insert("result".into(), Value::String(cut));
    }
    let payload = truncate(&uni_wizard::approval::redact(&payload).to_string(), MAX_PAYLOAD).0;
    let (blocked, message) = match d {
        Decision::Allow => (false, String::new()),
        Decision::Block(m) => (true, m.clone()),
    };
    v1::HookEvent {
        hook: truncate(event_name(input), 64).0,
        session_id: truncate(&s(&input["session_id"]), 256).0,
        tool_call_id: truncate(&s(&extra["tool_call_id"]), 256).0,
        tool_name: truncate(&s(&input["tool_name"]), 256).0,
        payload_json: payload,
        blocked,
        block_message: message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a denied tool's pre_tool_call is blocked, others and other events allowed.
    #[test]
    fn denied_tools_are_blocked_before_the_call() {
        let pre = |tool: &str| json!({"hook_event_name": "pre_tool_call", "tool_name": tool});
        let deny = vec!["terminal".to_owned()];
        assert!(matches!(decide(&pre("terminal"), House::Allegro, &deny), Decision::Block(_)));
        assert_eq!(decide(&pre("read_file"), House::Allegro, &deny), Decision::Allow);
        assert!(matches!(decide(&pre("service_restart"), House::Ezra, &[]), Decision::Block(_)));
        let post = json!({"hook_event_name": "post_tool_call", "tool_name": "terminal"});
        assert_eq!(decide(&post, House::Allegro, &deny), Decision::Allow);
        assert!(answer(&Decision::Block("no".into())).contains(r#""action":"block""#));
    }

    /// Proves the hook event redacts secrets in the tool input.
    #[test]
    fn hook_events_redact_secrets() {
        let input = json!({"hook_event_name": "pre_tool_call", "tool_name": "terminal",
            "tool_input": {"command": "x", "password": "hunter2"}, "extra": {"tool_call_id": "c1"}});
        let e = hook_event(&input, &Decision::Allow);
        assert!(!e.payload_json.contains("hunter2"));
        assert_eq!((e.tool_call_id.as_str(), e.blocked), ("c1", false));
    }
}
