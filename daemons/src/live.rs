//! The live config: the one every service reads, swapped whole on a valid hot reload.
//!
//! [`watch`] follows the config file with `notify` (its directory, so editors that write a new
//! file and rename it over the old one are seen). Each change is loaded and validated; a valid
//! file replaces the live config at once, an invalid one is refused with file, line and field
//! in the log and in `uw_config_reload_total{result="rejected"}`, and the old config keeps
//! serving. An edit of a setting bound at start (house, node, listen addresses, TLS, roles,
//! the embedded harness's library config) is refused the same way, naming the fields: it
//! applies at the next restart, never half-way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::config::DaemonConfig;

/// A shared, hot-swappable config.
#[derive(Clone)]
pub struct Live {
    current: Arc<RwLock<Arc<DaemonConfig>>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("house", &self.get().house).finish_non_exhaustive()
    }
}

impl Live {
    /// A live config starting at `config`.
    pub fn new(config: DaemonConfig) -> Live {
        Live { current: Arc::new(RwLock::new(Arc::new(config))) }
    }

    /// The config now (cheap: one reference count).
    pub fn get(&self) -> Arc<DaemonConfig> {
        match self.current.read() {
            Ok(g) => g.clone(),
            // A writer never panics while holding the lock (it only swaps an Arc).
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the config.
    pub fn set(&self, config: DaemonConfig) {
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *g = Arc::new(config);
    }

    /// Loads `path` and, when valid, makes it live. Returns whether it was taken.
    pub fn reload(&self, path: &Path) -> bool {
        match DaemonConfig::load(path) {
            Ok(new) => {
                let old = self.get();
                if *old == new {
                    return true;
                }
                let fixed: Vec<&str> = [
                    ("house", old.house != new.house),
                    ("node", old.node != new.node),
                    ("listen", old.listen != new.listen),
                    ("tls", old.tls != new.tls),
                    ("plaintext_loopback", old.plaintext_loopback != new.plaintext_loopback),
                    ("roles", old.roles() != new.roles()),
                    ("worker.library", old.worker.library != new.worker.library),
                ]
                .into_iter()
                .filter_map(|(name, changed)| changed.then_some(name))
                .collect();
                if !fixed.is_empty() {
                    // Half-applying these would leave the node inconsistent (e.g. tokens of
                    // one house, a harness of another): the whole edit waits for a restart.
                    metrics::counter!("uw_config_reload_total", "result" => "rejected").increment(1);
                    tracing::error!(
                        file = %path.display(),
                        fields = %fixed.join(", "),
                        "config reload rejected: these fields apply only at a restart; the running config stays"
                    );
                    return false;
                }
                self.set(new);
                metrics::counter!("uw_config_reload_total", "result" => "applied").increment(1);
                tracing::info!(file = %path.display(), "config reloaded");
                true
            }
            Err(e) => {
                metrics::counter!("uw_config_reload_total", "result" => "rejected").increment(1);
                tracing::error!(code = e.code.as_str(), error = %e.message, "config reload rejected; the running config stays");
                false
            }
        }
    }
}

/// Watches `path` and reloads `live` on every change, until the returned watcher is dropped.
///
/// # Errors
/// When the file's directory cannot be watched.
pub fn watch(live: Live, path: PathBuf) -> notify::Result<notify::RecommendedWatcher> {
    let dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = path.file_name().map(|n| n.to_os_string());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let ours = event.paths.iter().any(|p| p.file_name().map(|n| n.to_os_string()) == name);
            if ours && !event.kind.is_access() {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Editors write in bursts (truncate, write, rename): settle, then read once.
            tokio::time::sleep(Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            live.reload(&path);
        }
    });
    Ok(watcher)
}
