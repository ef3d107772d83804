//! SIGTERM and SIGINT, the signals that start a daemon's drain, and SIGHUP, which reloads the
//! config.
//!
//! [`Signals::install`] runs before anything is served, so a signal that arrives the moment
//! the node answers drains it (or reloads) instead of killing it with the default action;
//! [`Signals::wait`] is phase 5 of `uni-wizardd` (see [`crate::daemon`]);
//! [`Signals::take_hangup`] goes to [`crate::live::reload_on_hangup`].

/// SIGTERM, SIGINT and SIGHUP handlers, installed before anything is served: a signal that
/// arrives the moment the node answers must drain it (or reload), not kill it with the default
/// action.
pub struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers now.
    pub fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let (term, int) = (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok());
        if term.is_none() || int.is_none() {
            tracing::warn!("cannot install SIGTERM/SIGINT handlers: stop the daemon with SIGKILL");
        }
        let hup = signal(SignalKind::hangup()).ok();
        if hup.is_none() {
            tracing::warn!("cannot install a SIGHUP handler: the config reloads only when its file changes");
        }
        Signals { term, int, hup }
    }

    /// The SIGHUP stream (once), for the config reload.
    pub fn take_hangup(&mut self) -> Option<tokio::signal::unix::Signal> {
        self.hup.take()
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
