//! The JSON-schema fragments the service tools share.

use serde_json::{Value, json};

use super::systemctl::{UNIT_NAME_MAX, UNIT_NAME_PATTERN};

/// The input schema both service tools take (`service_status`, `service_restart`): one
/// strictly named unit.
pub fn unit_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "unit": {
                "type": "string",
                "minLength": 1,
                "maxLength": UNIT_NAME_MAX,
                "pattern": UNIT_NAME_PATTERN,
                "description": "Unit name, e.g. `ssh` or `nginx.service`; letters, digits and `:_.@-`, not starting with `-` or `.`."
            }
        },
        "required": ["unit"],
        "additionalProperties": false
    })
}

/// The JSON Schema of a [`UnitStatus`](super::systemctl::UnitStatus): `status` of
/// `service_status`, `before` and `after` of `service_restart`.
pub fn unit_status() -> Value {
    let text = json!({"type": "string", "minLength": 1});
    let opt_text = json!({"type": ["string", "null"]});
    let opt_count = json!({"type": ["integer", "null"], "minimum": 0});
    json!({
        "type": "object",
        "properties": {
            "id": text,
            "description": {"type": "string"},
            "load_state": {"type": "string", "minLength": 1, "description": "loaded, not-found, masked, bad-setting, error"},
            "active_state": {"type": "string", "minLength": 1, "description": "active, inactive, failed, activating, deactivating, reloading"},
            "sub_state": text,
            "unit_file_state": opt_text,
            "main_pid": {"type": ["integer", "null"], "minimum": 1},
            "result": opt_text,
            "restarts": opt_count,
            "memory_bytes": opt_count,
            "main_started_at": opt_text,
            "active_since": opt_text
        },
        "required": [
            "id", "description", "load_state", "active_state", "sub_state", "unit_file_state", "main_pid",
            "result", "restarts", "memory_bytes", "main_started_at", "active_since"
        ],
        "additionalProperties": false
    })
}
