//! uni-wizard daemons and the operator CLI.
//!
//! # Layout
//!
//! - [`cli`]: the `uni-wizard` operator command: argument parsing, rendering, exit codes.
//! - [`config`]: YAML loading with `${ENV}` expansion and errors naming file, line and field.
//!
//! Binaries in `src/bin/` are thin: they call into this library and print errors once.

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
