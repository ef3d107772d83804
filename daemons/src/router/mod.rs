//! The router daemon: accepts tasks, routes each to a house that fits and is up, and keeps the
//! result for `Status` and for idempotent resubmission.
//!
//! - [`crate::routing`]: the core, a top-level module of its own: the decisions and the task
//!   table in plain Rust (candidates, failover policy, admission, visibility, a task's states),
//!   unit-tested without a network; its module doc is the API leader election (issue 14)
//!   plugs into.
//! - [`RouterService`] (`grpc.rs`): the thin gRPC face. `Submit` checks the request (E1xxx
//!   before authorization), authorizes, admits through the core, and spawns the dispatch,
//!   which asks the core whom to try and what to do after each attempt; `Status` asks the
//!   core for a visible task. Conversions go through `wire.rs`; a worker's answer, outcome or
//!   error, is kept as it came off the wire and handed back untouched.
//!
//! # Routing
//!
//! Candidates are the caller's preferred house (if any), then the route for the tool
//! (`router.routes.<tool>`, else `router.routes.<category>`, else every house by priority).
//! Houses the membership view marks down are skipped; houses up go before houses not probed
//! yet; among the houses up, the one the pattern DB predicts best for the tool goes first when
//! the node has intelligence; a preferred house that is not down goes first of all. No
//! candidate left: E3011.
//!
//! # Failover and loss
//!
//! A dispatch runs in its own task, so a client that disconnects does not cancel it. When a
//! worker cannot be reached, it is marked down at once and the task moves to the next
//! candidate if nothing can have run (the connection was never made) or the tool is read-only
//! or idempotent. Otherwise the task fails with E3012 and `maybe_ran: true`: a call that may
//! have changed something is never run twice. A saturated worker (E3005) also passes the task
//! on. Every task ends SUCCEEDED, FAILED or REJECTED with the reason; none is dropped.
//!
//! # Idempotency
//!
//! `(caller house, idempotency_key)` names a task for as long as the router keeps it
//! (`router.max_tasks`, oldest finished first out). A resubmission, concurrent or later, gets
//! the first task's result with `deduplicated` set; the tool runs once.
//!
//! # Who sees a task
//!
//! `Status` shows a task to the house that submitted it and to Timmy, nobody else: a task's
//! result is the output of its tool (a file's content, a diff). Another house gets E5003, the
//! same answer as for a task that does not exist, so ids cannot be probed. `Submit` finds
//! earlier tasks only under the caller's own `(house, idempotency_key)`.

mod grpc;

pub use grpc::RouterService;
