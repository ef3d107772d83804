//! SIGTERM and SIGINT: the signals that start a daemon's drain.
//!
//! [`Signals::install`] runs before anything is served, so a signal that arrives the moment
//! the node answers drains it instead of killing it with the default action;
//! [`Signals::wait`] is phase 5 of `uni-wizardd` (see [`crate::daemon`]).

/// SIGTERM and SIGINT handlers, installed before anything is served: a signal that arrives
/// the moment the node answers must drain it, not kill it with the default action.
pub struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers now.
    pub fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let (term, int) = (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok());
        if term.is_none() || int.is_none() {
            tracing::warn!("cannot install SIGTERM/SIGINT handlers: stop the daemon with SIGKILL");
        }
        Signals { term, int }
    }

    /// Resolves on SIGTERM or SIGINT.
    pub async fn wait(mut self) {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.term) => tracing::info!("SIGTERM: draining"),
            _ = next(&mut self.int) => tracing::info!("SIGINT: draining"),
        }
    }
}
