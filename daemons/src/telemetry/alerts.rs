//! Alerts: rules over the telemetry figures that fire and resolve into the log and a webhook.
//!
//! Every `telemetry.alerts.interval_ms` the daemon takes an [`Observation`] (the sink's node
//! table where the sink runs, this node's outbox, the worker's open breakers) and hands it to
//! [`Alerts::evaluate`], which decides — pure, with the time passed in — which alerts start
//! and stop firing. A rule holds for its duration before it fires (node down longer than
//! `node_down_ms`, a breaker open longer than `breaker_open_ms`) or fires at once (buffer
//! above `buffered_above`, lag above `lag_above_ms`). Each transition is logged (warn when it
//! fires, info when it resolves) and, when `webhook` is set, POSTed there as JSON by one task
//! behind a bounded queue (a full queue drops the delivery and counts it; the log keeps it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::{Outbox, SinkService};

pub use crate::config::telemetry::AlertsConfig;

/// Reads a worker's open breakers, (tool, target) each.
pub type OpenBreakers = Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

/// The figures the rules look at, taken at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// At the sink: (node, stream open, lag ms).
    pub nodes: Vec<(String, bool, u64)>,
    /// Open breakers of this node's worker, as `tool@target`.
    pub breakers_open: Vec<String>,
    /// Events in this node's outbox.
    pub buffered: Option<u64>,
    /// Age of this node's oldest unacknowledged event, ms.
    pub oldest_unacked_ms: Option<u64>,
}

/// An alert starting or stopping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Started firing.
    Fire {
        /// Which alert, e.g. `node_down:allegro-node`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Stopped firing.
    Resolve {
        /// Which alert.
        key: String,
    },
}

/// The rules' state: since when each condition has held, and which alerts fire.
#[derive(Debug, Clone)]
pub struct Alerts {
    rules: AlertsConfig,
    since: BTreeMap<String, u64>,
    firing: BTreeSet<String>,
}

impl Alerts {
    /// Rules with nothing firing.
    pub fn new(rules: AlertsConfig) -> Alerts {
        Alerts { rules, since: BTreeMap::new(), firing: BTreeSet::new() }
    }

    /// Which alerts fire now.
    pub fn firing(&self) -> impl Iterator<Item = &str> {
        self.firing.iter().map(String::as_str)
    }

    /// The conditions that hold in `o`: key -> (how long it must hold, message).
    fn conditions(&self, o: &Observation) -> BTreeMap<String, (u64, String)> {
        let r = &self.rules;
        let mut bad = BTreeMap::new();
        for (node, connected, lag) in &o.nodes {
            if let Some(t) = r.node_down_ms
                && !connected
            {
                bad.insert(format!("node_down:{node}"), (t, format!("node {node} has no telemetry stream for {t} ms")));
            }
            if let Some(l) = r.lag_above_ms
                && *lag > l
            {
                bad.insert(format!("lag:{node}"), (0, format!("telemetry lag of {node} is {lag} ms (above {l} ms)")));
            }
        }
        if let Some(t) = r.breaker_open_ms {
            for b in &o.breakers_open {
                bad.insert(format!("breaker_open:{b}"), (t, format!("breaker {b} open for {t} ms")));
            }
        }
        if let (Some(n), Some(b)) = (r.buffered_above, o.buffered)
            && b > n
        {
            bad.insert("buffered".into(), (0, format!("{b} telemetry events buffered (above {n})")));
        }
        if let (Some(l), Some(age)) = (r.lag_above_ms, o.oldest_unacked_ms)
            && age > l
        {
            bad.insert("lag:outbox".into(), (0, format!("oldest unacknowledged event is {age} ms old (above {l} ms)")));
        }
        bad
    }

    /// Folds in an observation taken at `now_ms`; returns the alerts that started and stopped.
    pub fn evaluate(&mut self, o: &Observation, now_ms: u64) -> Vec<Transition> {
        let bad = self.conditions(o);
        let mut out = Vec::new();
        for (key, (hold, message)) in &bad {
            let since = *self.since.entry(key.clone()).or_insert(now_ms);
            if now_ms.saturating_sub(since) >= *hold && self.firing.insert(key.clone()) {
                out.push(Transition::Fire { key: key.clone(), message: message.clone() });
            }
        }
        let gone: Vec<String> = self.since.keys().filter(|k| !bad.contains_key(*k)).cloned().collect();
        for key in gone {
            self.since.remove(&key);
            if self.firing.remove(&key) {
                out.push(Transition::Resolve { key });
            }
        }
        out
    }
}

/// Where an observation comes from on this node.
#[derive(Clone)]
pub struct Sources {
    /// Timmy's sink, when it runs here.
    pub sink: Option<SinkService>,
    /// This node's outbox.
    pub outbox: Option<Arc<Outbox>>,
    /// This node's open breakers as (tool, target), when it runs a worker: the role that
    /// owns them passes this in, so telemetry needs no worker.
    pub breakers: Option<OpenBreakers>,
    /// This node's name, for the webhook payload.
    pub node: String,
}

async fn observe(s: &Sources) -> Observation {
    let mut o = Observation::default();
    if let Some(sink) = &s.sink {
        let sink = sink.clone();
        if let Ok(Ok(nodes)) = tokio::task::spawn_blocking(move || sink.node_status()).await {
            o.nodes = nodes.into_iter().map(|n| (n.node, n.connected, n.lag_ms)).collect();
        }
    }
    if let Some(ob) = &s.outbox {
        let ob = ob.clone();
        if let Ok(Ok(st)) = tokio::task::spawn_blocking(move || ob.stats()).await {
            o.buffered = Some(st.buffered);
            o.oldest_unacked_ms =
                Some(if st.oldest_ms > 0 { u64::try_from(super::now_ms() - st.oldest_ms).unwrap_or(0) } else { 0 });
        }
    }
    if let Some(open) = &s.breakers {
        o.breakers_open = open().into_iter().map(|(t, target)| format!("{t}@{target}")).collect();
    }
    o
}

/// Evaluates the rules every `interval_ms` until `stop`; logs and delivers transitions.
pub async fn run(rules: AlertsConfig, sources: Sources, mut stop: watch::Receiver<bool>) {
    let (tx, rx) = mpsc::channel::<serde_json::Value>(64);
    if let Some(url) = rules.webhook.clone() {
        tokio::spawn(deliver(url, rx));
    }
    let mut alerts = Alerts::new(rules.clone());
    let every = Duration::from_millis(rules.interval_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = super::stream::stopped(&mut stop) => return,
        }
        let now = u64::try_from(super::now_ms()).unwrap_or(0);
        for t in alerts.evaluate(&observe(&sources).await, now) {
            let (state, key, message) = match &t {
                Transition::Fire { key, message } => {
                    tracing::warn!(alert = %key, %message, "alert firing");
                    ("firing", key.clone(), message.clone())
                }
                Transition::Resolve { key } => {
                    tracing::info!(alert = %key, "alert resolved");
                    ("resolved", key.clone(), String::new())
                }
            };
            metrics::counter!("uw_telemetry_alerts_total", "state" => state).increment(1);
            if rules.webhook.is_some() {
                let body =
                    json!({ "alert": key, "state": state, "message": message, "node": sources.node, "time_ms": now });
                if tx.try_send(body).is_err() {
                    metrics::counter!("uw_telemetry_alert_deliveries_dropped_total").increment(1);
                    tracing::warn!(alert = %key, "alert webhook queue full; delivery dropped (logged above)");
                }
            }
        }
    }
}

/// POSTs each transition to `url`, one at a time, 2 s per attempt, no retry.
async fn deliver(url: String, mut rx: mpsc::Receiver<serde_json::Value>) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(2)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the alert webhook client");
            return;
        }
    };
    while let Some(body) = rx.recv().await {
        match client.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = %r.status(), "alert webhook refused a delivery"),
            Err(e) => tracing::warn!(error = %e, "alert webhook unreachable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AlertsConfig {
        AlertsConfig {
            node_down_ms: Some(1_000),
            breaker_open_ms: Some(500),
            buffered_above: Some(10),
            lag_above_ms: Some(100),
            ..AlertsConfig::default()
        }
    }

    /// Proves a node-down alert fires only after its hold time and resolves when the node is back.
    #[test]
    fn node_down_fires_after_its_hold_and_resolves() {
        let mut a = Alerts::new(rules());
        let down = Observation { nodes: vec![("n".into(), false, 0)], ..Observation::default() };
        let up = Observation { nodes: vec![("n".into(), true, 0)], ..Observation::default() };
        assert!(a.evaluate(&down, 0).is_empty());
        assert!(a.evaluate(&down, 999).is_empty());
        assert!(matches!(&a.evaluate(&down, 1_000)[..], [Transition::Fire { key, .. }] if key == "node_down:n"));
        assert!(a.evaluate(&down, 2_000).is_empty(), "fires once");
        assert_eq!(a.evaluate(&up, 2_100), vec![Transition::Resolve { key: "node_down:n".into() }]);
        assert!(a.evaluate(&down, 2_200).is_empty(), "the hold starts over");
    }

    /// Proves buffer and lag alerts fire at once, a breaker after its hold, and each resolves.
    #[test]
    fn thresholds_and_breakers() {
        let mut a = Alerts::new(rules());
        let bad = Observation {
            buffered: Some(11),
            oldest_unacked_ms: Some(101),
            breakers_open: vec!["git_pull@/srv".into()],
            ..Observation::default()
        };
        let fired = a.evaluate(&bad, 0);
        assert_eq!(fired.len(), 2, "{fired:?}");
        assert_eq!(a.evaluate(&bad, 500).len(), 1, "breaker after 500 ms");
        assert_eq!(a.firing().count(), 3);
        let fine = Observation { buffered: Some(10), oldest_unacked_ms: Some(0), ..Observation::default() };
        assert_eq!(a.evaluate(&fine, 600).len(), 3);
        assert_eq!(a.firing().count(), 0);
    }
}
