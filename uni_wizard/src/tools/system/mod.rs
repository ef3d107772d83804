//! The system family: facts about this host and its systemd services.
//!
//! - [`info`] is `system_info` and [`process_list`] is `process_list`: read from `/proc` and
//!   the kernel, no child process.
//! - [`service_status`] is `service_status`, [`service_restart`] is `service_restart`: both
//!   go through [`systemctl`], the one way the tools run `systemctl` (unit names checked,
//!   argv only, systemd required as PID 1), and share their schema fragments ([`schema`])
//!   and their target ([`unit_target`]).

use serde_json::Value;

use crate::tools::arg_str;

pub mod info;
pub mod process_list;
pub mod schema;
pub mod service_restart;
pub mod service_status;
pub mod systemctl;

/// The target of a service call, keying its breaker and provenance: its unit (one breaker per
/// unit).
pub fn unit_target(args: &Value) -> String {
    arg_str(args, "unit").to_owned()
}
