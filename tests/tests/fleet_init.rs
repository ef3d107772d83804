//! `uni-wizard fleet init` and `fleet cert` end to end: the files they write (modes, the
//! certificates as `openssl` sees them, configs `uni-wizardd --check` accepts), a fleet of four
//! real daemons started from those files with mutual TLS and etcd, and what a re-run and a
//! renewal change (only what they should).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use uni_wizard_tests::etcd::EtcdCluster;
use uni_wizard_tests::fleet::{HOUSES, Node, free_port};
use uni_wizard_tests::{bin, json_stdout};

/// Whether `openssl` runs; under CI=true its absence fails the test.
fn openssl_installed() -> bool {
    Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success())
        || !uni_wizard_tests::missing("`openssl` (Debian package openssl)")
}

/// `uni-wizard fleet ARGS` with a private state directory.
fn fleet(home: &Path, args: &[&str]) -> Output {
    Command::new(bin("uni-wizard")).env("UNI_WIZARD_HOME", home).arg("fleet").args(args).output().expect("runs")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).expect("exists").permissions().mode() & 0o777
}

/// Every file and directory below `dir`, relative, with its mode.
fn tree(dir: &Path) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(dir).expect("below").display().to_string();
            if path.is_dir() {
                out.insert(format!("{rel}/"), mode(&path));
                stack.push(path);
            } else {
                out.insert(rel, mode(&path));
            }
        }
    }
    out
}

/// Every file's bytes below `dir`, by relative path.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(dir)
        .into_keys()
        .filter(|k| !k.ends_with('/'))
        .map(|k| {
            let bytes = std::fs::read(dir.join(&k)).expect("read");
            (k, bytes)
        })
        .collect()
}

/// The files `fleet init` writes with Allegro's triage, and their modes.
fn expected_files() -> BTreeMap<String, u32> {
    let mut m: BTreeMap<String, u32> = [
        ("fleet.yaml", 0o644),
        ("NEXT-STEPS.txt", 0o644),
        ("ca/", 0o700),
        ("ca/ca.pem", 0o644),
        ("ca/ca.key", 0o600),
        ("secrets/", 0o700),
        ("secrets/metrics.token", 0o600),
        ("secrets/gitea.token", 0o600),
        ("secrets/gitea-webhook.secret", 0o600),
        ("operator/", 0o700),
        ("operator/ca.pem", 0o644),
        ("operator/operator.pem", 0o644),
        ("operator/operator.key", 0o600),
        ("timmy/etc/uni-wizard/timmy.key", 0o600),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for h in HOUSES {
        m.insert(format!("secrets/{h}.token"), 0o600);
        m.insert(format!("{h}/"), 0o700);
        m.insert(format!("{h}/var/"), 0o700);
        m.insert(format!("{h}/var/lib/"), 0o700);
        m.insert(format!("{h}/var/lib/uni-wizard/"), 0o700);
        m.insert(format!("{h}/etc/"), 0o750);
        m.insert(format!("{h}/etc/uni-wizard/"), 0o750);
        m.insert(format!("{h}/etc/uni-wizard/tls/"), 0o750);
        for (f, mode) in [
            ("worker.yaml", 0o640),
            ("env", 0o600),
            ("metrics.token", 0o600),
            ("timmy.pub", 0o644),
            ("tls/ca.pem", 0o644),
            ("tls/node.pem", 0o644),
            ("tls/node.key", 0o600),
        ] {
            m.insert(format!("{h}/etc/uni-wizard/{f}"), mode);
        }
    }
    m
}

/// The variables of an env file (`NAME=value` lines).
fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .expect("env file")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// `openssl ARGS` (stdout, and whether it succeeded).
fn openssl(args: &[&str], files: &[&Path]) -> (bool, String) {
    let o = Command::new("openssl").args(args).args(files).output().expect("openssl runs");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// A fleet spec for loopback: every house on 127.0.0.1 with free ports, etcd at `etcd`,
/// triage at a Gitea nobody answers (triage's polls fail and are retried; the node serves).
fn loopback_spec(etcd: &[String]) -> (String, BTreeMap<&'static str, (String, String)>) {
    let mut addrs = BTreeMap::new();
    let mut yaml = String::from("houses:\n");
    for h in HOUSES {
        let (grpc, http) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
        yaml.push_str(&format!("  {h}: {{endpoint: \"{grpc}\", http: \"{http}\"}}\n"));
        addrs.insert(h, (grpc, http));
    }
    let endpoints: Vec<String> = etcd.iter().map(|e| format!("\"{e}\"")).collect();
    yaml.push_str(&format!("etcd: {{endpoints: [{}], lease_ttl_ms: 2000}}\n", endpoints.join(", ")));
    yaml.push_str(&format!(
        "triage: {{gitea_url: \"http://127.0.0.1:{}\", repos: [uni/fleet], bot_user: fleet-bot}}\n",
        free_port()
    ));
    (yaml, addrs)
}

/// Runs `fleet init --spec --in-place` into `out`; its JSON.
fn init_in_place(work: &Path, out: &Path, spec: &str) -> serde_json::Value {
    let spec_file = work.join("spec.yaml");
    std::fs::write(&spec_file, spec).expect("spec");
    let gitea_token = work.join("gitea-token");
    std::fs::write(&gitea_token, "gitea-bot-token-0123456789\n").expect("token");
    let o = fleet(
        &work.join("home"),
        &[
            "init",
            "--json",
            "--in-place",
            "--out",
            &out.display().to_string(),
            "--spec",
            &spec_file.display().to_string(),
            "--gitea-token-file",
            &gitea_token.display().to_string(),
        ],
    );
    let v = json_stdout(&o);
    assert!(o.status.success(), "fleet init: {v}\n{}", String::from_utf8_lossy(&o.stderr));
    v
}

/// Proves `fleet init` writes exactly the expected files with their modes; that each node's
/// and the operator's certificate verifies against the fleet CA with `openssl verify` and
/// carries the endpoint's address as its SAN (the operator's: a client certificate); that
/// `uni-wizardd --check` accepts every config; and that the four nodes started from those files
/// (mutual TLS on loopback, leadership through a real etcd) see each other up and run a task
/// submitted through the routers, while a client without TLS is refused.
#[test]
fn a_fleet_made_by_init_runs_a_task_over_mutual_tls() {
    if !openssl_installed() {
        return;
    }
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let work = tempfile::tempdir().expect("work dir");
    let out = work.path().join("fleet");
    let (spec, addrs) = loopback_spec(&etcd.endpoints());
    let report = init_in_place(work.path(), &out, &spec);
    let files = report["files"].as_array().expect("files");
    assert!(files.iter().all(|f| f["action"] == "wrote"), "a first run writes everything: {report}");

    let mut found = tree(&out);
    found.retain(|k, _| k.as_str() != "");
    assert_eq!(found, expected_files(), "every file, and only those, with its mode");

    let ca = out.join("ca/ca.pem");
    for (name, cert) in HOUSES
        .iter()
        .map(|h| (*h, out.join(format!("{h}/etc/uni-wizard/tls/node.pem"))))
        .chain([("operator", out.join("operator/operator.pem"))])
    {
        let (ok, text) = openssl(&["verify", "-CAfile", &ca.display().to_string()], &[&cert]);
        assert!(ok, "{name}: {text}");
        let (ok, ext) = openssl(&["x509", "-noout", "-ext", "subjectAltName,extendedKeyUsage", "-in"], &[&cert]);
        assert!(ok, "{name}: {ext}");
        if name == "operator" {
            assert!(ext.contains("TLS Web Client Authentication"), "{ext}");
            assert!(!ext.contains("Server Authentication") && !ext.contains("IP Address"), "client only: {ext}");
        } else {
            assert!(ext.contains("IP Address:127.0.0.1"), "{name}'s endpoint host is its SAN: {ext}");
            assert!(ext.contains("TLS Web Server Authentication, TLS Web Client Authentication"), "{ext}");
        }
        let (_, subject) = openssl(&["x509", "-noout", "-subject", "-in"], &[&cert]);
        assert!(subject.contains(&format!("CN = {name}")), "{subject}");
    }
    for copy in HOUSES.map(|h| out.join(format!("{h}/etc/uni-wizard/tls/ca.pem"))) {
        assert_eq!(std::fs::read(&copy).expect("copy"), std::fs::read(&ca).expect("ca"), "{}", copy.display());
    }

    let mut nodes: Vec<Node> = Vec::new();
    for h in HOUSES {
        let etc = out.join(format!("{h}/etc/uni-wizard"));
        let env = env_file(&etc.join("env"));
        let o = Command::new(bin("uni-wizardd"))
            .arg("--check")
            .arg("--config")
            .arg(etc.join("worker.yaml"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("check runs");
        assert!(
            o.status.success(),
            "{h}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let token = std::fs::read_to_string(out.join(format!("secrets/{h}.token"))).expect("token").trim().to_owned();
        let metrics = std::fs::read_to_string(out.join("secrets/metrics.token")).expect("token").trim().to_owned();
        let (grpc, http) = addrs[h].clone();
        let home = out.join(format!("{h}/var/lib/uni-wizard"));
        nodes.push(Node::from_files(h, etc.join("worker.yaml"), grpc, http, home, token, metrics, env));
    }
    for n in &mut nodes {
        n.start();
    }
    let logs = |nodes: &[Node]| nodes.iter().map(|n| format!("--- {}\n{}", n.house, n.log())).collect::<String>();

    // Timmy's health prober reaches every node over mutual TLS.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = nodes[0].health().unwrap_or_default();
        if HOUSES.iter().all(|h| health["peers"][h]["state"] == "up") {
            break;
        }
        assert!(Instant::now() < deadline, "Timmy never saw every house up: {health}\n{}", logs(&nodes));
        std::thread::sleep(Duration::from_millis(100));
    }

    let routers = format!("{},{}", addrs["timmy"].0, addrs["allegro"].0);
    let ezra_token = nodes[2].token.clone();
    let submit = |tls: bool| {
        let mut c = Command::new(bin("uni-wizard"));
        c.env("UNI_WIZARD_HOME", work.path().join("cli-home")).env("UNI_WIZARD_TOKEN", &ezra_token).args([
            "test",
            "--json",
            "--router",
            &routers,
            "--house",
            "ezra",
            "--tool",
            "system_info",
        ]);
        if tls {
            let op = out.join("operator");
            c.arg("--tls-ca").arg(op.join("ca.pem"));
            c.arg("--tls-cert").arg(op.join("operator.pem")).arg("--tls-key").arg(op.join("operator.key"));
        }
        c.output().expect("cli")
    };
    // The CLI waits out an election itself (6 s); a fresh fleet may need a round more.
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let o = submit(true);
        let v = json_stdout(&o);
        if o.status.success() {
            break v;
        }
        assert!(Instant::now() < deadline, "no task ran through the routers: {v}\n{}", logs(&nodes));
        std::thread::sleep(Duration::from_millis(200));
    };
    let ran_on = v["assigned_house"].as_str().unwrap_or_default().to_owned();
    assert!(["timmy", "allegro"].contains(&ran_on.as_str()), "system tools go to timmy or allegro: {v}");
    assert_eq!(v["node"], ran_on.as_str(), "the node named by its config: {v}");
    let o = submit(false);
    assert!(!o.status.success(), "plaintext to a TLS node is refused: {}", json_stdout(&o));

    for n in &mut nodes {
        let status = n.terminate();
        assert!(status.success(), "{} exits cleanly on SIGTERM: {status}\n{}", n.house, n.log());
    }
    drop(etcd);
}

/// Proves a re-run of `fleet init` keeps every file byte for byte and says it kept them (only
/// NEXT-STEPS.txt is written again); `fleet cert --node ezra` changes ezra's certificate only
/// (a new serial, verifying against the same CA, with the same key); without the CA key it is
/// refused with E4001 (exit 64); and a re-run whose inputs contradict fleet.yaml is refused
/// with E1005 (exit 2) naming the field, changing nothing.
#[test]
fn a_rerun_keeps_every_key_and_cert_renews_one_node() {
    if !openssl_installed() {
        return;
    }
    let work = tempfile::tempdir().expect("work dir");
    let out = work.path().join("fleet");
    let (spec, _) = loopback_spec(&["http://127.0.0.1:2379".to_owned()]);
    init_in_place(work.path(), &out, &spec);
    let before = contents(&out);
    let home = work.path().join("home");
    let dir = out.display().to_string();

    let o = fleet(&home, &["init", "--json", "--out", &dir]);
    let v = json_stdout(&o);
    assert!(o.status.success(), "a re-run with no inputs reads fleet.yaml: {v}");
    for f in v["files"].as_array().expect("files") {
        let expected = if f["path"] == "NEXT-STEPS.txt" { "wrote" } else { "kept" };
        assert_eq!(f["action"], expected, "{f}");
    }
    assert_eq!(contents(&out), before, "nothing changed");

    let serial = |p: &Path| openssl(&["x509", "-noout", "-serial", "-in"], &[p]).1;
    let ezra = out.join("ezra/etc/uni-wizard/tls/node.pem");
    let old_serial = serial(&ezra);
    let o = fleet(&home, &["cert", "--json", "--dir", &dir, "--node", "ezra"]);
    let v = json_stdout(&o);
    assert!(o.status.success(), "{v}");
    assert_eq!(v["new_key"], false, "renewal keeps the key: {v}");
    let after = contents(&out);
    let changed: Vec<&String> = after.keys().filter(|k| after.get(*k) != before.get(*k)).collect();
    assert_eq!(changed, vec!["ezra/etc/uni-wizard/tls/node.pem"], "only ezra's certificate changed");
    assert_ne!(serial(&ezra), old_serial, "a new serial");
    let (ok, text) = openssl(&["verify", "-CAfile", &out.join("ca/ca.pem").display().to_string()], &[&ezra]);
    assert!(ok, "the renewed certificate verifies: {text}");
    let cert_key = openssl(&["x509", "-noout", "-pubkey", "-in"], &[&ezra]).1;
    let own_key = openssl(&["pkey", "-pubout", "-in"], &[&out.join("ezra/etc/uni-wizard/tls/node.key")]).1;
    assert!(cert_key.contains("BEGIN PUBLIC KEY"), "{cert_key}");
    assert_eq!(cert_key, own_key, "the renewed certificate is for the same key");

    std::fs::rename(out.join("ca/ca.key"), work.path().join("ca.key.offline")).expect("move the CA key away");
    let o = fleet(&home, &["cert", "--json", "--dir", &dir, "--node", "ezra"]);
    assert_eq!(o.status.code(), Some(64), "no CA key: exit 64");
    let v = json_stdout(&o);
    assert_eq!(v["error"]["code"], "E4001", "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("ca.key"), "{v}");
    let o = fleet(&home, &["init", "--json", "--out", &dir]);
    assert!(o.status.success(), "with the CA offline, a re-run that signs nothing works: {}", json_stdout(&o));

    let o = fleet(&home, &["init", "--json", "--out", &dir, "--ezra", "127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(2), "contradicting fleet.yaml: exit 2");
    let v = json_stdout(&o);
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["details"]["field"].as_str()),
        (Some("E1005"), Some("houses.ezra.endpoint"))
    );
    assert_eq!(contents(&out).get("fleet.yaml"), before.get("fleet.yaml"), "fleet.yaml unchanged");
}

/// Proves incomplete inputs are refused with E1005 (exit 2) naming what is missing, before
/// anything is written.
#[test]
fn incomplete_inputs_are_refused_before_writing() {
    let work = tempfile::tempdir().expect("work dir");
    let out: PathBuf = work.path().join("fleet");
    let dir = out.display().to_string();
    let cases: [(&[&str], &str); 3] = [
        (&["--timmy", "127.0.0.1:7401", "--etcd", "http://127.0.0.1:2379"], "houses"),
        (
            &[
                "--timmy",
                "10.0.0.1:7401",
                "--allegro",
                "10.0.0.2:7402",
                "--ezra",
                "10.0.0.3:7403",
                "--bezalel",
                "10.0.0.4:7404",
            ],
            "etcd",
        ),
        (
            &[
                "--timmy",
                "10.0.0.1:7401",
                "--allegro",
                "10.0.0.2:7402",
                "--ezra",
                "10.0.0.3:7403",
                "--bezalel",
                "10.0.0.4:7404",
                "--etcd",
                "https://e:2379",
            ],
            "etcd.endpoints",
        ),
    ];
    for (args, field) in cases {
        let mut all = vec!["init", "--json", "--out", &dir];
        all.extend_from_slice(args);
        let o = fleet(&work.path().join("home"), &all);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let v = json_stdout(&o);
        assert_eq!(
            (v["error"]["code"].as_str(), v["error"]["details"]["field"].as_str()),
            (Some("E1005"), Some(field)),
            "{v}"
        );
        assert!(!out.exists(), "nothing written for {args:?}");
    }
}
