//! uni-wizard: one call, [`Harness::execute`], runs any operational tool under house policy.
//!
//! ```no_run
//! # async fn demo() -> uni_wizard::Result<()> {
//! use uni_wizard::{Config, Harness, House, Mode};
//! let harness = Harness::builder()
//!     .house(House::Timmy)
//!     .mode(Mode::Simple)
//!     .config(Config::default())
//!     .build()?;
//! let outcome = harness.execute("system_info", serde_json::json!({})).await?;
//! println!("{}", outcome.output["hostname"]);
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`harness`]: the one entry point; the path of a call from lookup to record.
//! - [`house`]: the houses and modes, the leaf types every layer names.
//! - [`policy`]: the per-house policy of SYSTEM.md §1.
//! - [`approval`]: the [`Approver`] trait; only Timmy approves; argument hashing and redaction.
//! - [`contract`]: what a caller may know about a tool before calling it, and the JSON-schema
//!   validator that holds each call to it.
//! - [`tools`]: the [`Tool`](tools::Tool) trait, the registry, one folder per family (system,
//!   git, file, http, gitea) holding its tools, its runner and its schema fragments.
//! - [`gitea`]: the Gitea API client behind the [`Gitea`](gitea::Gitea) trait the Gitea tools
//!   and the triage daemon use.
//! - [`executor`]: the tower layers (limit, breaker, retry, timeout) and their order.
//! - [`provenance`]: execution records and the ids policies cite.
//! - [`intelligence`]: Intelligent mode: pattern DB, calibrated predictions, adaptive policies.
//! - [`audit`]: the hash-chained, append-only SQLite provenance store and its verification.
//! - [`tokens`]: approval tokens signed with Timmy's ed25519 key, single-use.
//! - [`config`]: library settings with defaults.
//! - [`hash`], [`future`]: SHA-256 over canonical JSON, the boxed future; leaves.
//! - [`error`]: stable error codes E1xxx–E5xxx.
//! - `fuzzing`: fuzz target bodies (tool arguments, `/proc` and git parsers); docs/FUZZING.md.
//!
//! The library knows nothing of gRPC, YAML files or processes other than the tools' own
//! argv-only children; daemons and the CLI live in the `uni_wizard_daemons` crate.

#![forbid(unsafe_code)]

pub mod approval;
pub mod audit;
pub mod config;
pub mod contract;
pub mod error;
pub mod executor;
pub mod future;
#[doc(hidden)]
pub mod fuzzing;
pub mod gitea;
pub mod harness;
pub mod hash;
pub mod house;
pub mod intelligence;
pub mod policy;
pub mod provenance;
pub mod tokens;
pub mod tools;

pub use approval::{Approval, ApprovalRequest, Approver};
pub use config::Config;
pub use error::{Category as ErrorCategory, Error, ErrorCode, Result};
pub use harness::{Execution, Harness, HarnessBuilder, Observer, Outcome, Request};
pub use house::{House, Mode};
pub use intelligence::{Intelligence, IntelligenceConfig};
pub use policy::HousePolicy;

/// The examples of `docs/API_REFERENCE.md`, compiled and run as doctests: every `rust` block
/// there is a test of this crate (`cargo test -p uni_wizard --doc`), so the reference cannot
/// drift from the API it documents.
#[cfg(doctest)]
#[doc = include_str!("../../docs/API_REFERENCE.md")]
pub struct ApiReferenceDoctests;
