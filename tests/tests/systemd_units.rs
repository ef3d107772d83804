//! The systemd units in `systemd/`: verified and scored by the real `systemd-analyze`, and the
//! `Type=notify` protocol they rely on checked against the real `uni-wizardd` (READY, watchdog
//! pings, STOPPING on SIGTERM, exit 0).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uni_wizard_tests::bin;
use uni_wizard_tests::fleet::{Fleet, http_get};

/// Where the units say the daemon is installed; the tests point it at the built binary.
const INSTALLED_BIN: &str = "/usr/local/bin/uni-wizardd";

/// The highest `systemd-analyze security` exposure any unit may have. Measured with systemd
/// 252: router, health and sovereign 1.1, worker 1.4 (it keeps /proc and users visible).
const MAX_EXPOSURE: f64 = 2.0;

/// The role units (one per daemon role) and the target grouping them.
const ROLES: [&str; 6] = ["router", "health", "worker", "sovereign", "triage", "telemetry"];

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// `systemd-analyze`, or a failure saying how to get it: the units are untested without it,
/// so a missing tool fails the test everywhere (CI or not), never skips it.
fn systemd_analyze() -> Command {
    let found = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "systemd-analyze is missing (CI={}): install the `systemd` package (scripts/test does)",
        std::env::var("CI").unwrap_or_default()
    );
    let mut c = Command::new("systemd-analyze");
    c.env("SYSTEMD_COLORS", "0").env("SYSTEMD_PAGER", "").env("SYSTEMD_LOG_COLOR", "0");
    c
}

/// Copies every unit of `systemd/` to a temp dir with ExecStart pointing at the built binary.
fn staged_units() -> (tempfile::TempDir, Vec<PathBuf>) {
    let daemon = bin("uni-wizardd");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(units_dir()).expect("systemd/ exists") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !(name.ends_with(".service") || name.ends_with(".target")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("unit readable");
        let staged = dir.path().join(&name);
        std::fs::write(&staged, text.replace(INSTALLED_BIN, &daemon.display().to_string())).expect("stage unit");
        units.push(staged);
    }
    units.sort();
    (dir, units)
}

fn unit_text(name: &str) -> String {
    std::fs::read_to_string(units_dir().join(name)).unwrap_or_else(|e| panic!("systemd/{name}: {e}"))
}

/// Proves every unit in systemd/ passes `systemd-analyze verify` with no warning at all.
#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let (dir, units) = staged_units();
    let names: Vec<String> = units.iter().filter_map(|u| u.file_name()?.to_str().map(str::to_owned)).collect();
    for role in ROLES {
        assert!(names.contains(&format!("uni-wizard-{role}.service")), "no unit for {role} in {names:?}");
    }
    assert!(names.contains(&"uni-wizard.target".to_owned()), "no uni-wizard.target in {names:?}");
    let out =
        systemd_analyze().arg("verify").args(&units).current_dir(dir.path()).output().expect("systemd-analyze runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "systemd-analyze verify {names:?} (exit {:?}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status.code()
    );
}

/// Proves each role unit carries the settings the daemon relies on (notify, watchdog, restart,
/// stop timeout above the drain grace, state/config dirs, the target) and no ExecReload.
#[test]
fn role_units_declare_notify_watchdog_drain_and_sandbox() {
    let required = [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        "User=uni-wizard",
        "StateDirectory=uni-wizard",
        "ConfigurationDirectory=uni-wizard",
        "PartOf=uni-wizard.target",
        "WantedBy=uni-wizard.target",
        "After=network-online.target",
        "Wants=network-online.target",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "RestrictRealtime=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
    ];
    for role in ROLES {
        let name = format!("uni-wizard-{role}.service");
        let text = unit_text(&name);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for want in required {
            assert!(lines.contains(&want), "{name} lacks `{want}`");
        }
        let exec = format!("ExecStart={INSTALLED_BIN} --config /etc/uni-wizard/{role}.yaml");
        assert!(lines.contains(&exec.as_str()), "{name} lacks `{exec}`");
        assert!(!lines.iter().any(|l| l.starts_with("ExecReload=")), "{name}: the config hot-reloads; no ExecReload");
        // The daemon's default drain grace is 10 s (shutdown_grace_ms); systemd must wait longer.
        let stop = lines
            .iter()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} lacks a TimeoutStopSec= in seconds"));
        assert!(stop > 10, "{name}: TimeoutStopSec={stop} is not above the 10 s drain grace");
    }
}

/// Proves `systemd-analyze security --offline=yes` scores every role unit at or below
/// MAX_EXPOSURE (systemd 252 supports `--offline`, added in 250).
#[test]
fn every_role_unit_scores_ok_in_systemd_analyze_security() {
    let (dir, units) = staged_units();
    let overall = regex::Regex::new(r"Overall exposure level for (\S+): ([0-9]+(?:\.[0-9]+)?)").expect("regex");
    let mut scores = Vec::new();
    for unit in units.iter().filter(|u| u.extension().is_some_and(|e| e == "service")) {
        let out = systemd_analyze()
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(unit)
            .current_dir(dir.path())
            .output()
            .expect("systemd-analyze runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let score: f64 = overall.captures(&text).and_then(|c| c[2].parse().ok()).unwrap_or_else(|| {
            panic!("no exposure level for {} (exit {:?}):\n{text}", unit.display(), out.status.code())
        });
        assert!(score <= MAX_EXPOSURE, "{}: exposure {score} > {MAX_EXPOSURE}:\n{text}", unit.display());
        scores.push(format!("{}={score}", unit.file_name().and_then(|n| n.to_str()).unwrap_or("?")));
    }
    assert_eq!(scores.len(), ROLES.len(), "one score per role unit: {scores:?}");
    eprintln!("exposure: {}", scores.join(" "));
}

/// A started daemon, killed (and reaped) when dropped so no test leaves one behind.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The notify socket and every line the daemon sent to it, in order.
struct Notify {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl Notify {
    /// Reads datagrams until `done` holds or `within` passes; whether `done` held.
    fn wait_until(&mut self, within: Duration, done: impl Fn(&Notify) -> bool) -> bool {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // The socket's read timeout (50 ms) bounds each wait.
            if let Ok(n) = self.sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
            }
        }
    }

    /// Waits (bounded) until `line` has been received.
    fn wait_for(&mut self, line: &str, within: Duration) -> bool {
        self.wait_until(within, |n| n.count(line) > 0)
    }

    fn count(&self, line: &str) -> usize {
        self.seen.iter().filter(|l| *l == line).count()
    }

    fn lines(&self) -> &[String] {
        &self.seen
    }
}

/// Proves the Type=notify protocol with all four roles in one process (Timmy on a single host):
/// READY=1 once /health answers, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM,
/// then exit 0 within 15 s.
#[test]
fn daemon_speaks_sd_notify_ready_watchdog_stopping() {
    // Timmy's usual roles include sovereign; the fleet support writes his key pair.
    let fleet = Fleet::configure(&["timmy"], &|_| String::new());
    let node = &fleet.nodes["timmy"];

    let sock_path = fleet.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
    let mut notify = Notify { sock, seen: Vec::new() };
    let log = fleet.dir.path().join("timmy.log");
    let spawned = Instant::now();
    let mut daemon = Daemon(
        Command::new(bin("uni-wizardd"))
            .arg("--config")
            .arg(&node.config)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("uni-wizardd starts"),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    assert!(
        notify.wait_for("READY=1", Duration::from_secs(20)),
        "no READY=1 within 20 s ({:?}):\n{}",
        notify.lines(),
        log_text()
    );
    let ready_after = spawned.elapsed();
    // READY means serving: /health answers at once, without waiting.
    let health = http_get(&node.http, "/health");
    assert!(
        matches!(&health, Some((200, body)) if body.contains("\"serving\"")),
        "READY=1 was sent but /health answered {health:?}:\n{}",
        log_text()
    );
    let roles = health.map(|(_, b)| b).unwrap_or_default();
    // Triage and telemetry are no house's default roles: a node's config opts in to them.
    for role in ROLES.into_iter().filter(|r| !matches!(*r, "triage" | "telemetry")) {
        assert!(roles.contains(&format!("\"{role}\"")), "timmy does not run {role}: {roles}");
    }

    // WATCHDOG_USEC=200000: a ping every 100 ms; three more within 2 s of READY leaves slack.
    let before = notify.count("WATCHDOG=1");
    let pinged = notify.wait_until(Duration::from_secs(2), |n| n.count("WATCHDOG=1") >= before + 3);
    assert!(pinged, "fewer than 3 WATCHDOG=1 in 2 s after READY: {:?}\n{}", notify.lines(), log_text());

    let term = Command::new("kill").arg("-TERM").arg(daemon.0.id().to_string()).status().expect("kill runs");
    assert!(term.success(), "kill -TERM failed");
    let termed = Instant::now();
    assert!(
        notify.wait_for("STOPPING=1", Duration::from_secs(5)),
        "no STOPPING=1 within 5 s of SIGTERM: {:?}\n{}",
        notify.lines(),
        log_text()
    );
    let exit_deadline = termed + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = daemon.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < exit_deadline, "no exit within 15 s of SIGTERM:\n{}", log_text());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}:\n{}", log_text());
    eprintln!(
        "READY after {ready_after:?}, {} watchdog pings, exit {:?} after SIGTERM",
        notify.count("WATCHDOG=1"),
        termed.elapsed()
    );
}
