//! `uni-wizard fleet init` and `fleet cert` end to end: the files they write (modes, the
//! certificates as `openssl` sees them, configs `uni-wizardd --check` accepts), a 3-member etcd
//! and a fleet of four real daemons started from those files, with mutual TLS among the nodes
//! and to etcd, and what a re-run and a renewal change (only what they should).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use uni_wizard_tests::etcd::{EtcdCluster, MemberFiles, free_port_pairs};
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

/// The etcd members `fleet init` makes for three https:// endpoints.
const MEMBERS: [&str; 3] = ["etcd-1", "etcd-2", "etcd-3"];

/// Three https:// etcd endpoints on loopback, each client port's next port free (its peer port).
fn etcd_endpoints() -> Vec<String> {
    free_port_pairs(MEMBERS.len()).into_iter().map(|p| format!("https://127.0.0.1:{p}")).collect()
}

/// The files `fleet init` writes with Allegro's triage and three https:// etcd members, and
/// their modes.
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
    m.insert("etcd/".into(), 0o700);
    for e in MEMBERS {
        m.insert(format!("etcd/{e}/"), 0o700);
        m.insert(format!("etcd/{e}/ca.pem"), 0o644);
        m.insert(format!("etcd/{e}/member.pem"), 0o644);
        m.insert(format!("etcd/{e}/member.key"), 0o600);
    }
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

/// Proves `fleet init` with https:// etcd endpoints writes exactly the expected files with
/// their modes; that each node's, the operator's and each etcd member's certificate verifies
/// against the fleet CA with `openssl verify` and carries the endpoint's address as its SAN
/// (the operator's: a client certificate); that NEXT-STEPS.txt gives each member its command
/// line; that `uni-wizardd --check` accepts every config; and that a 3-member etcd started from
/// the member files (TLS for clients and peers, client certificates required) and the four
/// nodes started from theirs (mutual TLS on loopback, TLS to etcd with their own certificates)
/// elect a leader and run a task submitted through the routers, while a client without TLS is
/// refused.
#[test]
fn a_fleet_made_by_init_runs_a_task_over_mutual_tls() {
    if !openssl_installed() {
        return;
    }
    let work = tempfile::tempdir().expect("work dir");
    let out = work.path().join("fleet");
    let endpoints = etcd_endpoints();
    let (spec, addrs) = loopback_spec(&endpoints);
    let report = init_in_place(work.path(), &out, &spec);
    let files = report["files"].as_array().expect("files");
    assert!(files.iter().all(|f| f["action"] == "wrote"), "a first run writes everything: {report}");

    let mut found = tree(&out);
    found.retain(|k, _| k.as_str() != "");
    assert_eq!(found, expected_files(), "every file, and only those, with its mode");

    let ca = out.join("ca/ca.pem");
    let certs = HOUSES
        .iter()
        .map(|h| (*h, out.join(format!("{h}/etc/uni-wizard/tls/node.pem"))))
        .chain([("operator", out.join("operator/operator.pem"))])
        .chain(MEMBERS.iter().map(|e| (*e, out.join(format!("etcd/{e}/member.pem")))));
    for (name, cert) in certs {
        let (ok, text) = openssl(&["verify", "-CAfile", &ca.display().to_string()], &[&cert]);
        assert!(ok, "{name}: {text}");
        let (ok, ext) = openssl(&["x509", "-noout", "-ext", "subjectAltName,extendedKeyUsage", "-in"], &[&cert]);
        assert!(ok, "{name}: {ext}");
        if name == "operator" {
            assert!(ext.contains("TLS Web Client Authentication"), "{ext}");
            assert!(!ext.contains("Server Authentication") && !ext.contains("IP Address"), "client only: {ext}");
        } else {
            assert!(ext.contains("IP Address:127.0.0.1"), "{name}'s endpoint host is its SAN: {ext}");
            assert!(!ext.contains("DNS:"), "{name}: only the endpoint's host: {ext}");
            // etcd asks nodes for ClientAuth (--client-cert-auth), and members for both (peers).
            assert!(ext.contains("TLS Web Server Authentication, TLS Web Client Authentication"), "{ext}");
        }
        let (_, subject) = openssl(&["x509", "-noout", "-subject", "-in"], &[&cert]);
        assert!(subject.contains(&format!("CN = {name}")), "{subject}");
    }
    let copies = HOUSES
        .map(|h| out.join(format!("{h}/etc/uni-wizard/tls/ca.pem")))
        .into_iter()
        .chain(MEMBERS.map(|e| out.join(format!("etcd/{e}/ca.pem"))));
    for copy in copies {
        assert_eq!(std::fs::read(&copy).expect("copy"), std::fs::read(&ca).expect("ca"), "{}", copy.display());
    }

    // NEXT-STEPS.txt: each member's command line, naming its files (in place) and the cluster.
    let steps = std::fs::read_to_string(out.join("NEXT-STEPS.txt")).expect("NEXT-STEPS.txt");
    let port = |url: &str| url.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).expect("port");
    let cluster: Vec<String> =
        MEMBERS.iter().zip(&endpoints).map(|(e, url)| format!("{e}=https://127.0.0.1:{}", port(url) + 1)).collect();
    for (e, url) in MEMBERS.iter().zip(&endpoints) {
        let dir = out.join("etcd").join(e).display().to_string();
        for flag in [
            format!("etcd --name {e} "),
            format!("--advertise-client-urls {url} "),
            format!("--cert-file {dir}/member.pem --key-file {dir}/member.key"),
            format!("--trusted-ca-file {dir}/ca.pem --client-cert-auth"),
            format!("--peer-cert-file {dir}/member.pem --peer-key-file {dir}/member.key"),
            format!("--peer-trusted-ca-file {dir}/ca.pem --peer-client-cert-auth"),
            format!("--initial-cluster {} ", cluster.join(",")),
        ] {
            assert!(steps.contains(&flag), "NEXT-STEPS.txt lacks `{flag}`:\n{steps}");
        }
    }

    // The members as NEXT-STEPS.txt says: the names, ports (peer = client + 1) and files init made.
    let members = MEMBERS
        .iter()
        .zip(&endpoints)
        .map(|(e, url)| MemberFiles {
            name: (*e).to_owned(),
            client_port: port(url),
            peer_port: port(url) + 1,
            cert: out.join(format!("etcd/{e}/member.pem")),
            key: out.join(format!("etcd/{e}/member.key")),
        })
        .collect();
    let op = out.join("operator");
    let Some(mut etcd) = EtcdCluster::from_files(
        out.join("etcd/etcd-1/ca.pem"),
        op.join("operator.pem"),
        op.join("operator.key"),
        members,
    ) else {
        return;
    };
    etcd.start_all();

    let mut nodes: Vec<Node> = Vec::new();
    for h in HOUSES {
        let etc = out.join(format!("{h}/etc/uni-wizard"));
        let text = std::fs::read_to_string(etc.join("worker.yaml")).expect("config");
        assert!(text.contains(&format!("    cert: \"{}\"", etc.join("tls/node.pem").display())), "{h}: {text}");
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
    let logs = |nodes: &[Node]| {
        nodes.iter().map(|n| format!("--- {}\n{}", n.house, n.log())).collect::<String>() + &etcd.logs()
    };

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
    // One router leads, through etcd over TLS, and the other follows it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let states: Vec<serde_json::Value> =
            nodes[..2].iter().map(|n| n.health().unwrap_or_default()["leadership"].clone()).collect();
        if let Some(i) = states.iter().position(|l| l["state"] == "leader")
            && states[1 - i]["state"] == "follower"
        {
            break nodes[i].house.clone();
        }
        assert!(Instant::now() < deadline, "no router leads over TLS to etcd: {states:?}\n{}", logs(&nodes));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(["timmy", "allegro"].contains(&leader.as_str()), "{leader}");

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

    // `uni-wizard status` on Timmy's generated config reaches every house's HTTP port at the
    // `http_endpoint` init wrote: every house up, a leader, no HTTP source unavailable.
    let timmy = &nodes[0];
    let o = Command::new(bin("uni-wizard"))
        .envs(timmy.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("UNI_WIZARD_HOME", work.path().join("cli-home"))
        .args(["status", "--json", "--config"])
        .arg(&timmy.config)
        .output()
        .expect("status runs");
    let v = json_stdout(&o);
    assert!(o.status.success(), "status on a fresh fleet: {v}\n{}", String::from_utf8_lossy(&o.stderr));
    let houses = v["houses"].as_array().cloned().unwrap_or_default();
    assert_eq!(houses.len(), 4, "{v}");
    for h in &houses {
        assert_eq!(h["http"]["available"], true, "{}'s HTTP port, at the http_endpoint init wrote: {v}", h["house"]);
    }
    let counted = v["tasks"]["counters_unavailable"].as_object().map_or(0, serde_json::Map::len);
    assert_eq!(counted, 0, "every router's counters read: {v}");

    for n in &mut nodes {
        let status = n.terminate();
        assert!(status.success(), "{} exits cleanly on SIGTERM: {status}\n{}", n.house, n.log());
    }
    for i in 0..MEMBERS.len() {
        etcd.stop(i);
    }
}

/// Proves a re-run of `fleet init` keeps every file byte for byte and says it kept them (only
/// NEXT-STEPS.txt is written again), the etcd members' keys and certificates too; `fleet cert
/// --node ezra` changes ezra's certificate only (a new serial, verifying against the same CA,
/// with the same key), and `fleet cert --etcd-member etcd-2` that member's only (its SAN kept);
/// an unknown member is E1005; without the CA key renewal is refused with E4001 (exit 64); and
/// a re-run whose inputs contradict fleet.yaml is refused with E1005 (exit 2) naming the
/// field, changing nothing.
#[test]
fn a_rerun_keeps_every_key_and_cert_renews_one_node() {
    if !openssl_installed() {
        return;
    }
    let work = tempfile::tempdir().expect("work dir");
    let out = work.path().join("fleet");
    let (spec, _) = loopback_spec(&etcd_endpoints());
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

    let member = out.join("etcd/etcd-2/member.pem");
    let old_serial = serial(&member);
    let o = fleet(&home, &["cert", "--json", "--dir", &dir, "--etcd-member", "etcd-2"]);
    let v = json_stdout(&o);
    assert!(o.status.success(), "{v}");
    assert_eq!((v["etcd_member"].as_str(), &v["new_key"]), (Some("etcd-2"), &serde_json::json!(false)), "{v}");
    let renewed = contents(&out);
    let changed: Vec<&String> = renewed.keys().filter(|k| renewed.get(*k) != after.get(*k)).collect();
    assert_eq!(changed, vec!["etcd/etcd-2/member.pem"], "only etcd-2's certificate changed");
    assert_ne!(serial(&member), old_serial, "a new serial");
    let (ok, text) = openssl(&["verify", "-CAfile", &out.join("ca/ca.pem").display().to_string()], &[&member]);
    assert!(ok, "the renewed member certificate verifies: {text}");
    let (_, ext) = openssl(&["x509", "-noout", "-ext", "subjectAltName", "-in"], &[&member]);
    assert!(ext.contains("IP Address:127.0.0.1"), "{ext}");
    let o = fleet(&home, &["cert", "--json", "--dir", &dir, "--etcd-member", "etcd-9"]);
    assert_eq!(o.status.code(), Some(2), "an unknown member: exit 2");
    let v = json_stdout(&o);
    assert_eq!(v["error"]["details"]["field"], "--etcd-member", "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("etcd-1, etcd-2, etcd-3"), "{v}");

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
/// anything is written; so is a plaintext etcd endpoint off loopback, the message naming the
/// flag and https://.
#[test]
fn incomplete_inputs_are_refused_before_writing() {
    let work = tempfile::tempdir().expect("work dir");
    let out: PathBuf = work.path().join("fleet");
    let dir = out.display().to_string();
    let cases: [(&[&str], &str); 4] = [
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
                "https://10.0.0.1:2379,http://10.0.0.2:2379",
            ],
            "etcd.endpoints",
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
                "http://10.0.0.1:2379",
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
        if field == "etcd.endpoints" {
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("http://10.0.0.") && message.contains("only on loopback"), "{message}");
            assert!(message.contains("use https:// (--etcd https://10.0.0."), "{message}");
        }
        assert!(!out.exists(), "nothing written for {args:?}");
    }
}
