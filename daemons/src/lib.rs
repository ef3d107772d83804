//! uni-wizard daemons and the operator CLI.
//!
//! # Layout
//!
//! - [`cli`]: the `uni-wizard` operator command: argument parsing, rendering, exit codes.
//! - [`config`]: the daemon config, every role's settings in one home: `houses:` (endpoints,
//!   tokens, roles), this node, each role's section; YAML loading with `${ENV}` expansion and
//!   errors naming file, line and field.
//! - [`live`]: the live config every service reads, and its hot reload.
//! - [`auth`]: per-house tokens on every RPC, checked in constant time by one tower layer.
//! - [`conventions`]: the gRPC codes of what tonic refuses by itself, and the caller's deadline.
//! - [`wire`]: conversions between library and `uniwizard.v1` types, errors to statuses.
//! - [`peers`]: client channels to the other houses, with credentials and TLS.
//! - [`serve`]: health, reflection, TLS, `/metrics`, `/health`, watchdog.
//! - [`signal`]: SIGTERM and SIGINT, installed before anything is served.
//! - [`daemon`]: `uni-wizardd` main in fixed phases.
//! - [`membership`]: the membership view (each house up, down or not probed yet), which the
//!   health prober writes and the router routes by.
//! - [`leader`]: router leadership through etcd: the election and its fence (routers), the
//!   leader watch (workers); no router or worker types.
//! - [`routing`]: the router's core: routing decisions, the task table, the failover policy;
//!   no gRPC types.
//! - [`router`], [`health`], [`worker`], [`sovereign`], [`triage`]: one folder per daemon.
//! - [`telemetry`]: Hermes tailer, durable outbox, stream to Timmy and Timmy's sink.
//! - `fuzzing`: fuzz target bodies (config, webhook, wire); docs/FUZZING.md.
//!
//! Binaries in `src/bin/` are thin: they call into this library and print errors once.

#![forbid(unsafe_code)]

pub mod auth;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod conventions;
pub mod daemon;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod health;
pub mod leader;
pub mod live;
pub mod membership;
pub mod peers;
pub mod router;
pub mod routing;
pub mod serve;
pub mod signal;
pub mod sovereign;
pub mod telemetry;
pub mod triage;
pub mod wire;
pub mod worker;
