//! The monitoring files against their tools and against the code: the Prometheus rules of
//! `configs/prometheus` through `promtool check rules` and `promtool test rules`, the Grafana
//! dashboard `configs/grafana/uni-wizard-fleet.json` against the recording rules, and every
//! metric and label any of them names against what the daemons export.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use regex::Regex;
use serde_json::Value;
use uni_wizard_tests::{missing, rust_files};

const ALERTS: &str = "uni-wizard.rules.yml";
const RECORDING: &str = "uni-wizard.recording.yml";
const RULE_TESTS: &str = "uni-wizard.rules.test.yml";

/// Labels Prometheus itself puts on series: the scrape target's, and a histogram bucket's.
const PROMETHEUS_LABELS: [&str; 3] = ["instance", "job", "le"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn prometheus_dir() -> PathBuf {
    repo().join("configs/prometheus")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A YAML file of `configs/prometheus`, as JSON values.
fn yaml(name: &str) -> Value {
    let path = prometheus_dir().join(name);
    serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every rule (alerting and recording) of a rule file.
fn rules(name: &str) -> Vec<Value> {
    let file = yaml(name);
    let groups = file["groups"].as_array().unwrap_or_else(|| panic!("{name} has no groups"));
    groups.iter().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default()).collect()
}

/// Every `expr` of a rule file.
fn exprs(name: &str) -> Vec<String> {
    rules(name)
        .iter()
        .map(|r| r["expr"].as_str().unwrap_or_else(|| panic!("{name}: a rule without expr: {r}")).to_owned())
        .collect()
}

fn dashboard() -> Value {
    let path = repo().join("configs/grafana/uni-wizard-fleet.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (panel title, expr) of every query of the dashboard.
fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    let panels = d["panels"].as_array().expect("the dashboard has panels");
    let mut out = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default().to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((title.clone(), t["expr"].as_str().unwrap_or_default().to_owned()));
        }
    }
    out
}

/// `promtool` with `args`, run in `configs/prometheus` (where the test file names its rule
/// files), or None after [`missing`] (which fails under CI=true).
fn promtool(dir: &Path, args: &[&str]) -> Option<Output> {
    match Command::new("promtool").args(args).current_dir(dir).output() {
        Ok(o) => Some(o),
        Err(_) => {
            missing("promtool (Debian package prometheus)");
            None
        }
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Proves the dashboard loads, has a Prometheus datasource variable, gives every panel a title
/// and that datasource, covers every item of the fleet overview, and that its queries and the
/// recording rules' exprs are the same set.
#[test]
fn every_dashboard_query_is_a_recording_rule_and_every_panel_has_a_source() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion: {}", d["schemaVersion"]);
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()), "the dashboard needs a uid");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let source = vars.iter().find(|v| v["type"] == "datasource").expect("a datasource variable");
    assert_eq!(source["query"], "prometheus", "{source}");
    let uid = format!("${{{}}}", source["name"].as_str().expect("variable name"));

    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "a panel without a title: {p}");
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "{title}: duplicate panel id");
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}: datasource");
        assert_eq!(p["datasource"]["uid"].as_str(), Some(uid.as_str()), "{title}: datasource uid");
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        for t in targets.unwrap_or_else(|| panic!("{title}: no queries")) {
            assert!(t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{title}: a query without expr");
            if !t["datasource"].is_null() {
                assert_eq!(t["datasource"], p["datasource"], "{title}: a query's datasource");
            }
        }
    }

    let recorded: BTreeSet<String> = exprs(RECORDING).into_iter().collect();
    let queried = dashboard_exprs(&d);
    let not_recorded: Vec<&(String, String)> = queried.iter().filter(|(_, e)| !recorded.contains(e)).collect();
    assert!(not_recorded.is_empty(), "dashboard queries missing from {RECORDING}: {not_recorded:#?}");
    let shown: BTreeSet<&str> = queried.iter().map(|(_, e)| e.as_str()).collect();
    let unused: Vec<&String> = recorded.iter().filter(|e| !shown.contains(e.as_str())).collect();
    assert!(unused.is_empty(), "recording rules no panel queries: {unused:#?}");

    // The fleet overview of issue 17: houses up, leader, tasks/s by outcome, errors by code,
    // breakers, telemetry lag and buffered, triage latency.
    for (item, needle) in [
        ("houses up", "uw_peer_up"),
        ("leader", "uw_router_leader"),
        ("tasks/s by outcome", "by (state) (rate(uw_router_tasks_total"),
        ("errors by code", "by (result) (rate(uw_worker_calls_total"),
        ("breakers", "uw_worker_breakers_open"),
        ("telemetry lag", "uw_telemetry_oldest_unacked_seconds"),
        ("telemetry buffered", "uw_telemetry_buffered"),
        ("triage latency", "uw_triage_latency_seconds_bucket"),
    ] {
        assert!(queried.iter().any(|(_, e)| e.contains(needle)), "no panel shows {item} ({needle})");
    }
}

/// Proves every alert holds for a while before firing, has a severity, and tells the operator
/// what is wrong and the `uni-wizard` command to run first; and that the alerts of issue 17
/// are all there.
#[test]
fn every_alert_has_a_hold_a_severity_and_a_command_to_run() {
    let command = Regex::new(r"`[^`]*\buni-wizard [^`]+`").expect("regex");
    let mut names = BTreeSet::new();
    for r in rules(ALERTS) {
        let name = r["alert"].as_str().unwrap_or_else(|| panic!("{ALERTS}: not an alerting rule: {r}"));
        assert!(names.insert(name.to_owned()), "{name}: defined twice");
        assert!(r["for"].as_str().is_some_and(|f| !f.is_empty()), "{name}: no `for:`");
        assert!(
            matches!(r["labels"]["severity"].as_str(), Some("critical" | "warning")),
            "{name}: severity {}",
            r["labels"]["severity"]
        );
        assert!(r["annotations"]["summary"].as_str().is_some_and(|s| !s.is_empty()), "{name}: no summary");
        let description = r["annotations"]["description"].as_str().unwrap_or_default();
        assert!(command.is_match(description), "{name}: the description names no `uni-wizard ...` command");
    }
    for wanted in [
        "UniWizardHouseDown",
        "UniWizardNoLeader",
        "UniWizardLeaderFlapping",
        "UniWizardBreakerOpen",
        "UniWizardTelemetryLag",
        "UniWizardTelemetryBuffered",
        "UniWizardTriageBacklog",
        "UniWizardAuditWriteFailures",
    ] {
        assert!(names.contains(wanted), "{ALERTS} has no {wanted}");
    }
}

/// Proves `promtool check rules` accepts both rule files and `promtool test rules` passes, with
/// a case where each alert fires and one where it stays quiet; and that the unit tests bite:
/// the same tests fail against a copy of the rules whose holds are ten times longer.
#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let dir = prometheus_dir();
    let Some(check) = promtool(&dir, &["check", "rules", ALERTS, RECORDING]) else { return };
    assert!(check.status.success(), "promtool check rules:\n{}", text(&check));
    let Some(tested) = promtool(&dir, &["test", "rules", RULE_TESTS]) else { return };
    assert!(tested.status.success(), "promtool test rules:\n{}", text(&tested));

    // Each alert has a firing case and a quiet one.
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for t in yaml(RULE_TESTS)["tests"].as_array().expect("tests") {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let fired = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let entry = cases.entry(name).or_default();
            if fired { entry.0 += 1 } else { entry.1 += 1 }
        }
    }
    for r in rules(ALERTS) {
        let name = r["alert"].as_str().expect("alert");
        let (fired, quiet) = cases.get(name).copied().unwrap_or_default();
        assert!(fired > 0 && quiet > 0, "{RULE_TESTS}: {name} has {fired} firing and {quiet} quiet cases");
    }

    let broken = tempfile::tempdir().expect("tempdir");
    for name in [RECORDING, RULE_TESTS] {
        std::fs::copy(dir.join(name), broken.path().join(name)).expect("copy");
    }
    let slower = read(&dir.join(ALERTS)).replace("for: 1m", "for: 10m").replace("for: 5m", "for: 50m");
    std::fs::write(broken.path().join(ALERTS), slower).expect("write");
    let Some(o) = promtool(broken.path(), &["test", "rules", RULE_TESTS]) else { return };
    assert!(!o.status.success(), "promtool test rules passed against rules that fire ten times later:\n{}", text(&o));
}

/// Proves every `uw_` metric a rule or the dashboard queries is one the daemons set (not only
/// describe), with only labels the code gives it (or Prometheus' own), and is documented in
/// docs/OPERATIONS.md: the files cannot drift from the code.
#[test]
fn every_metric_the_monitoring_files_query_is_exported_with_its_labels() {
    // name -> label keys, from every metrics::counter!/gauge!/histogram! call that sets one.
    let call = Regex::new(r#"\b(counter|gauge|histogram)!\(\s*"(uw_[a-z0-9_]+)"([^;]*?)\)\s*\."#).expect("regex");
    let key = Regex::new(r#""([a-z_]+)"\s*=>"#).expect("regex");
    let mut exported: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for dir in ["daemons/src", "uni_wizard/src"] {
        for file in rust_files(&repo().join(dir)) {
            let source = read(&file);
            for c in call.captures_iter(&source) {
                let entry = exported.entry(c[2].to_owned()).or_insert_with(|| (c[1].to_owned(), BTreeSet::new()));
                entry.1.extend(key.captures_iter(&c[3]).map(|k| k[1].to_owned()));
            }
        }
    }
    assert!(exported.contains_key("uw_peer_up"), "the scan found no metrics: {exported:?}");
    // What a query names: a family, or a histogram's series.
    let series_of = |name: &str| -> Option<BTreeSet<String>> {
        if let Some((_, labels)) = exported.get(name) {
            return Some(labels.clone());
        }
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s))?;
        exported.get(base).filter(|(kind, _)| kind == "histogram").map(|(_, labels)| labels.clone())
    };

    let operations = read(&repo().join("docs/OPERATIONS.md"));
    let metric = Regex::new(r"\buw_[a-z0-9_]+").expect("regex");
    let by = Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").expect("regex");
    let matcher = Regex::new(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)").expect("regex");
    let selector = Regex::new(r"\{([^}]*)\}").expect("regex");
    let mut queries: Vec<(String, String)> = Vec::new();
    for name in [ALERTS, RECORDING] {
        queries.extend(exprs(name).into_iter().map(|e| (name.to_owned(), e)));
    }
    queries.extend(dashboard_exprs(&dashboard()).into_iter().map(|(t, e)| (format!("panel {t:?}"), e)));
    let mut problems = BTreeSet::new();
    for (from, expr) in &queries {
        let mut allowed: BTreeSet<String> = PROMETHEUS_LABELS.iter().map(|l| (*l).to_owned()).collect();
        for m in metric.find_iter(expr) {
            match series_of(m.as_str()) {
                Some(labels) => allowed.extend(labels),
                None => {
                    problems.insert(format!("{from}: `{}` is not set anywhere in the code ({expr})", m.as_str()));
                }
            }
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| m.as_str().strip_suffix(s));
            let family = family.filter(|f| exported.contains_key(*f)).unwrap_or(m.as_str());
            if !operations.contains(family) {
                problems.insert(format!("{from}: `{family}` is not documented in docs/OPERATIONS.md"));
            }
        }
        let mut used: Vec<String> = Vec::new();
        for c in by.captures_iter(expr) {
            used.extend(c[1].split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
        }
        for s in selector.captures_iter(expr) {
            used.extend(matcher.captures_iter(&s[1]).map(|m| m[1].to_owned()));
        }
        for label in used {
            if !allowed.contains(&label) {
                problems.insert(format!("{from}: label `{label}` is not one the code sets on its metrics ({expr})"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the monitoring files drifted from the code:\n{}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
}
