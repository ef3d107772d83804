//! The live config: the one every service reads, swapped whole on a valid hot reload.
//!
//! [`watch`] follows the config file with `notify` (its directory, so editors that write a new
//! file and rename it over the old one are seen). Each change is loaded and validated; a valid
//! file replaces the live config at once, an invalid one is refused with file, line and field
//! in the log and in `uw_config_reload_total{result="rejected"}`, and the old config keeps
//! serving. SIGHUP reloads the same way ([`reload_on_hangup`]). Which fields apply live and
//! which are bound at start is one table, [`crate::config::reload::FIELDS`]: an edit of a
//! restart-only field is refused whole, naming the fields ([`Live::apply`] says why); it
//! applies at the next restart, never half-way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::config::{DaemonConfig, reload};

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

    /// Loads `path` and, when valid, makes it live (see [`Live::apply`]).
    pub fn reload(&self, path: &Path) -> Reloaded {
        match DaemonConfig::load(path) {
            Ok(new) => self.apply(new, path),
            Err(e) => {
                metrics::counter!("uw_config_reload_total", "result" => "rejected").increment(1);
                tracing::error!(code = e.code.as_str(), error = %e.message, "config reload rejected; the running config stays");
                Reloaded::Invalid
            }
        }
    }

    /// Makes `new` (loaded from `file`) live unless it changes a restart-only field
    /// ([`reload::FIELDS`]); logs which fields changed either way.
    ///
    /// A change to a restart-only field refuses the whole edit: the running config stays
    /// exactly one file the operator wrote and validated, never a mix of two that nobody
    /// wrote (a mix could also break a rule that spans fields, like `tls` and the endpoints).
    /// Revert the field, or restart, and the rest applies.
    pub fn apply(&self, new: DaemonConfig, file: &Path) -> Reloaded {
        let old = self.get();
        let changed = reload::changed(&old, &new);
        if changed.is_empty() && *old == new {
            tracing::info!(file = %file.display(), "config file read again: no field changed");
            return Reloaded::Unchanged;
        }
        // A difference no field path shows (a field that does not serialize) is unclassified:
        // refused like a restart-only one rather than applied unseen.
        let fixed: Vec<String> = if changed.is_empty() {
            vec!["(a field the reload diff cannot see)".to_owned()]
        } else {
            changed.iter().filter(|p| reload::class(p) != Some(reload::Reload::Live)).cloned().collect()
        };
        if !fixed.is_empty() {
            metrics::counter!("uw_config_reload_total", "result" => "rejected").increment(1);
            tracing::error!(
                file = %file.display(),
                fields = %fixed.join(", "),
                "config reload rejected: these fields apply only at a restart; the running config stays"
            );
            return Reloaded::Refused(fixed);
        }
        self.set(new);
        metrics::counter!("uw_config_reload_total", "result" => "applied").increment(1);
        tracing::info!(file = %file.display(), fields = %changed.join(", "), "config reloaded");
        Reloaded::Applied(changed)
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The file holds the running config.
    Unchanged,
    /// These (live) fields changed and apply now.
    Applied(Vec<String>),
    /// These restart-only fields changed: nothing applied.
    Refused(Vec<String>),
    /// The file is not a valid config: nothing applied.
    Invalid,
}

/// Reloads `live` from `path` on every SIGHUP (as on every change the watcher sees).
pub fn reload_on_hangup(live: Live, path: PathBuf, mut hangup: tokio::signal::unix::Signal) {
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!(file = %path.display(), "SIGHUP: reloading the config");
            live.reload(&path);
        }
    });
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use uni_wizard::{House, Mode};

    use super::*;
    use crate::config::reload::{FIELDS, Reload, class, tests::full};
    use crate::config::telemetry::Durability;
    use crate::config::{LogFormat, Secret};

    type Mutation = (&'static str, fn(&mut DaemonConfig));

    fn ezra(c: &mut DaemonConfig) -> &mut crate::config::HouseEntry {
        c.houses.get_mut(&House::Ezra).expect("ezra")
    }

    fn triage(c: &mut DaemonConfig) -> &mut crate::config::triage::TriageConfig {
        c.triage.as_mut().expect("triage")
    }

    /// One change of each field of [`FIELDS`], by its pattern.
    const MUTATIONS: &[Mutation] = &[
        ("house", |c| c.house = House::Ezra),
        ("node", |c| c.node = Some("renamed".into())),
        ("roles", |c| c.roles.truncate(1)),
        ("listen.grpc", |c| c.listen.grpc.set_port(1)),
        ("listen.http", |c| c.listen.http.set_port(2)),
        ("tls.**", |c| c.tls = None),
        ("plaintext_loopback", |c| c.plaintext_loopback = false),
        ("log.format", |c| c.log.format = LogFormat::Text),
        ("log.level", |c| c.log.level = "debug".into()),
        ("http.metrics_token_file", |c| c.http.metrics_token_file = Some("/other.token".into())),
        ("http.metrics_open", |c| c.http.metrics_open = true),
        ("http.header_timeout_ms", |c| c.http.header_timeout_ms += 1),
        ("http.idle_timeout_ms", |c| c.http.idle_timeout_ms += 1),
        ("houses.*.endpoint", |c| ezra(c).endpoint = "127.0.0.1:7999".into()),
        ("houses.*.auth_token", |c| ezra(c).auth_token = Secret::new("ezra-token-9876543210")),
        ("houses.*.role", |c| ezra(c).role = "scribe".into()),
        ("houses.*.priority", |c| ezra(c).priority += 1),
        ("houses.*.nodes", |c| ezra(c).nodes = Some(vec!["ezra-2".into()])),
        ("houses.*.http_endpoint", |c| ezra(c).http_endpoint = Some("127.0.0.1:7999".into())),
        ("router.routes.*", |c| {
            c.router.routes.insert("git".into(), vec![House::Timmy]);
        }),
        ("router.submitters", |c| c.router.submitters.push(House::Ezra)),
        ("router.max_tasks", |c| c.router.max_tasks += 1),
        ("router.submit_wait_ms", |c| c.router.submit_wait_ms += 1),
        ("router.dispatch_timeout_ms", |c| c.router.dispatch_timeout_ms += 1),
        ("health.interval_ms", |c| c.health.interval_ms += 1),
        ("health.timeout_ms", |c| c.health.timeout_ms += 1),
        ("health.down_after", |c| c.health.down_after += 1),
        ("worker.max_concurrency", |c| c.worker.max_concurrency += 1),
        ("worker.max_queued", |c| c.worker.max_queued += 1),
        ("worker.default_mode", |c| c.worker.default_mode = Mode::Intelligent),
        ("worker.dispatchers", |c| c.worker.dispatchers.push(House::Ezra)),
        ("worker.library.**", |c| c.worker.library.max_timeout_ms += 1),
        ("worker.timmy_pubkey", |c| c.worker.timmy_pubkey = None),
        ("worker.approval_wait_ms", |c| c.worker.approval_wait_ms += 1),
        ("worker.audit_all_modes", |c| c.worker.audit_all_modes = true),
        ("worker.once.retention_ms", |c| c.worker.once.retention_ms += 1),
        ("worker.once.max_rows", |c| c.worker.once.max_rows += 1),
        ("sovereign.**", |c| c.sovereign.max_pending += 1),
        ("triage.gitea.**", |c| triage(c).gitea.timeout_ms += 1),
        ("triage.webhook_secret", |c| triage(c).webhook_secret = Secret::new("webhook-secret-9876543210")),
        ("triage.repos", |c| triage(c).repos.push("o/s".into())),
        ("triage.poll_interval_ms", |c| triage(c).poll_interval_ms += 1),
        ("triage.bot_user", |c| triage(c).bot_user = "robot".into()),
        ("triage.max_body_bytes", |c| triage(c).max_body_bytes += 1),
        ("triage.router_house", |c| triage(c).router_house = Some(House::Ezra)),
        ("triage.concurrency", |c| triage(c).concurrency += 1),
        ("triage.house_labels", |c| triage(c).house_labels = !triage(c).house_labels),
        ("triage.label_color", |c| triage(c).label_color = "000000".into()),
        ("triage.max_attempts", |c| triage(c).max_attempts += 1),
        ("triage.rules", |c| triage(c).rules.clear()),
        ("telemetry.hermes_home", |c| c.telemetry.hermes_home = None),
        ("telemetry.poll_ms", |c| c.telemetry.poll_ms += 1),
        ("telemetry.max_buffered", |c| c.telemetry.max_buffered += 1),
        ("telemetry.batch", |c| c.telemetry.batch += 1),
        ("telemetry.max_in_flight", |c| c.telemetry.max_in_flight += 1),
        ("telemetry.result_max_bytes", |c| c.telemetry.result_max_bytes += 1),
        ("telemetry.backoff_min_ms", |c| c.telemetry.backoff_min_ms += 1),
        ("telemetry.backoff_max_ms", |c| c.telemetry.backoff_max_ms += 1),
        ("telemetry.durability", |c| c.telemetry.durability = Durability::Normal),
        ("telemetry.hook_deny", |c| c.telemetry.hook_deny.push("browser".into())),
        ("telemetry.hook_timeout_ms", |c| c.telemetry.hook_timeout_ms += 1),
        ("telemetry.anchor_period_ms", |c| c.telemetry.anchor_period_ms += 1),
        ("telemetry.alerts.**", |c| c.telemetry.alerts.interval_ms += 1),
        ("etcd.**", |c| c.etcd.iter_mut().for_each(|e| e.lease_ttl_ms += 1_000)),
        ("shutdown_grace_ms", |c| c.shutdown_grace_ms += 1),
    ];

    /// Proves every field of the table has a change in [`MUTATIONS`], so each is tested below.
    /// (`triage` alone, the absent section, cannot change without its fields changing too.)
    #[test]
    fn every_field_has_a_reload_test() {
        let table: BTreeSet<&str> = FIELDS.iter().map(|(p, _, _)| *p).filter(|p| *p != "triage").collect();
        let tested: BTreeSet<&str> = MUTATIONS.iter().map(|(p, _)| *p).collect();
        assert_eq!(table, tested, "reload::FIELDS and the reload tests disagree");
    }

    /// Proves, for every field, that a reload changing it applies it when it is live (the live
    /// config holds the new value) and, when it is restart-only, refuses the edit naming the
    /// field and keeps the running value.
    #[test]
    fn each_live_field_applies_and_each_restart_only_field_is_named_and_kept() {
        for (pattern, mutate) in MUTATIONS {
            let old = full();
            let mut new = old.clone();
            mutate(&mut new);
            let changed = reload::changed(&old, &new);
            assert!(!changed.is_empty(), "{pattern}: the mutation changes nothing");
            let live = Live::new(old.clone());
            let result = live.apply(new.clone(), Path::new("node.yaml"));
            match class(&changed[0]) {
                Some(Reload::Live) => {
                    assert_eq!(result, Reloaded::Applied(changed.clone()), "{pattern}");
                    assert_eq!(*live.get(), new, "{pattern}: the live config holds the new value");
                }
                _ => {
                    let Reloaded::Refused(named) = &result else { panic!("{pattern}: not refused: {result:?}") };
                    assert!(!named.is_empty() && named.iter().all(|p| changed.contains(p)), "{pattern}: {named:?}");
                    assert_eq!(*live.get(), old, "{pattern}: the running value stays");
                }
            }
        }
    }

    /// Proves an edit that changes a live and a restart-only field is refused whole, naming
    /// only the restart-only one, and a file that holds the running config is `Unchanged`.
    #[test]
    fn a_mixed_edit_is_refused_naming_the_restart_only_field() {
        let old = full();
        let mut new = old.clone();
        new.worker.max_concurrency = 3;
        new.worker.audit_all_modes = true;
        let live = Live::new(old.clone());
        assert_eq!(live.apply(new, Path::new("node.yaml")), Reloaded::Refused(vec!["worker.audit_all_modes".into()]));
        assert_eq!(live.get().worker.max_concurrency, old.worker.max_concurrency);
        assert_eq!(live.apply(old, Path::new("node.yaml")), Reloaded::Unchanged);
    }
}
