//! The boxed future object-safe async methods return (tools, approvers, the executor's
//! layers). A leaf: it imports nothing of the crate.

use std::future::Future;
use std::pin::Pin;

/// A boxed future, as returned by object-safe async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
