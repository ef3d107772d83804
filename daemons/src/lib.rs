//! uni-wizard daemons and the operator CLI.
//!
//! # Layout
//!
//! - [`cli`]: the `uni-wizard` operator command: argument parsing, rendering, exit codes.
//!
//! Binaries in `src/bin/` are thin: they call into this library and print errors once.

#![forbid(unsafe_code)]

pub mod cli;
