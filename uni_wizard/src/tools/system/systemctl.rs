//! The one way the service tools talk to systemd: `systemctl`, argv only, after checking that
//! systemd runs this host.
//!
//! `service_status` and `service_restart` both go through [`Systemctl`], so the hardening
//! lives in one place:
//!
//! - **systemd must be PID 1.** Before anything is spawned, [`Systemctl::ensure_booted`]
//!   checks that `/run/systemd/system` is a directory — the canonical test, the one
//!   `sd_booted(3)` makes: systemd creates it early at boot and nothing else does. Checking
//!   `/proc/1/comm` instead would misjudge containers whose init is a renamed systemd and hosts
//!   where a shim runs first. Where the directory is absent (containers, CI) the call fails
//!   with E3007, naming what PID 1 is (from `/proc/1/comm`), rather than with `systemctl`'s
//!   "Failed to connect to bus".
//! - **Unit names are checked** against [`UNIT_NAME_PATTERN`] before they reach argv: no
//!   leading `-` (so a name can never be read as an option), no globs, no spaces, no
//!   backslash escapes. `--` is passed before the name as well.
//! - **The child is tame:** `systemctl` is spawned directly (no shell) with stdin from
//!   `/dev/null`, `--no-pager`, `--no-ask-password` (polkit never waits for a password that no
//!   one will type), `LC_ALL=C` (messages in English) and `SYSTEMD_COLORS=0`; it is killed if
//!   the call's future is dropped (a timeout).
//! - **Output is parsed, not scraped:** `systemctl show --property=…` prints `KEY=VALUE` lines;
//!   [`parse_show`] is a pure function tested on recorded systemd 252 output in
//!   `tests/fixtures/systemctl/`.
//!
//! A restart that times out here may still complete: the job belongs to systemd once queued,
//! and killing `systemctl` only stops waiting for it.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use serde_json::json;
use tokio::process::Command;

use crate::error::{Error, ErrorCode, Result};

/// What a unit name must look like: systemd's unit name characters without the `\` escape,
/// not starting with `-` or `.`, optionally ending in a unit type suffix. At most
/// [`UNIT_NAME_MAX`] bytes (systemd's own limit).
pub const UNIT_NAME_PATTERN: &str = r"^[A-Za-z0-9:_@][A-Za-z0-9:_.@\-]*(\.(service|socket|timer|target|path|mount))?$";

/// Longest unit name systemd accepts, in bytes.
pub const UNIT_NAME_MAX: usize = 255;

/// The properties asked of `systemctl show`, as one `--property=` argument.
pub const SHOW_PROPERTIES: &str = "Id,Description,LoadState,ActiveState,SubState,UnitFileState,MainPID,\
ExecMainStartTimestamp,ActiveEnterTimestamp,NRestarts,MemoryCurrent,Result";

/// Most bytes of `systemctl`'s stderr copied into an error's details.
const STDERR_IN_DETAILS: usize = 4096;

static UNIT_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(UNIT_NAME_PATTERN).unwrap_or_else(|e| unreachable!("UNIT_NAME_PATTERN: {e}")));

/// A unit name that passed [`UNIT_NAME_PATTERN`]; safe to put in argv.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnitName(String);

impl UnitName {
    /// Checks a unit name.
    ///
    /// # Errors
    /// E1003 naming the field `unit` when the name is empty, too long, or has characters or a
    /// shape systemd unit names do not (a leading `-`, spaces, globs, `/`, `\`).
    pub fn parse(raw: &str) -> Result<UnitName> {
        if raw.len() <= UNIT_NAME_MAX && UNIT_NAME.is_match(raw) {
            return Ok(UnitName(raw.to_owned()));
        }
        let problem = if raw.is_empty() {
            "must not be empty".to_owned()
        } else if raw.len() > UNIT_NAME_MAX {
            format!("is longer than {UNIT_NAME_MAX} bytes")
        } else {
            format!("is not a valid unit name (expected {UNIT_NAME_PATTERN})")
        };
        Err(Error::new(ErrorCode::InvalidArguments, format!("`unit` {problem}: {raw:?}"))
            .with_details(json!({ "field": "unit", "problem": problem, "value": raw })))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UnitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A unit's state as `systemctl show` reports it.
///
/// Service-only properties (`MainPID`, `NRestarts`) are `None` for other unit types, and
/// every optional field is `None` when systemd reports it empty, `0` (PID) or `[not set]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitStatus {
    /// The unit's primary name (`Id`), e.g. `ssh.service` for `ssh` or `sshd.service`.
    pub id: String,
    /// `Description`.
    pub description: String,
    /// `LoadState`: `loaded`, `not-found`, `masked`, `bad-setting`, `error`, …
    pub load_state: String,
    /// `ActiveState`: `active`, `inactive`, `failed`, `activating`, `deactivating`, `reloading`.
    pub active_state: String,
    /// `SubState`, type-specific: `running`, `exited`, `dead`, `failed`, `listening`, …
    pub sub_state: String,
    /// `UnitFileState`: `enabled`, `disabled`, `static`, `masked`, …; `None` when no unit file.
    pub unit_file_state: Option<String>,
    /// `MainPID`; `None` when there is no main process.
    pub main_pid: Option<u32>,
    /// `Result` of the last run: `success`, `exit-code`, `signal`, `timeout`, …
    pub result: Option<String>,
    /// `NRestarts`: automatic restarts since the unit was last started by hand.
    pub restarts: Option<u64>,
    /// `MemoryCurrent` in bytes; `None` when memory accounting has nothing to say.
    pub memory_bytes: Option<u64>,
    /// `ExecMainStartTimestamp`, as systemd prints it (`Mon 2024-05-13 09:12:04 UTC`).
    pub main_started_at: Option<String>,
    /// `ActiveEnterTimestamp`: when the unit last became active.
    pub active_since: Option<String>,
}

impl UnitStatus {
    /// Builds a status from parsed `systemctl show` properties.
    ///
    /// # Errors
    /// The name of the first required property (`Id`, `LoadState`, `ActiveState`, `SubState`)
    /// that is missing, or of an optional one whose value is not a number where one is due.
    pub fn from_properties(props: &BTreeMap<String, String>) -> Result<UnitStatus, String> {
        let required = |k: &str| props.get(k).filter(|v| !v.is_empty()).cloned().ok_or_else(|| k.to_owned());
        let optional =
            |k: &str| props.get(k).map(|v| v.trim()).filter(|v| !v.is_empty() && *v != "n/a" && *v != "[not set]");
        let number = |k: &str| optional(k).map(|v| v.parse::<u64>().map_err(|_| k.to_owned())).transpose();
        let id = required("Id")?;
        let main_pid = number("MainPID")?.filter(|&p| p != 0).map(|p| u32::try_from(p).map_err(|_| "MainPID"));
        Ok(UnitStatus {
            description: props.get("Description").cloned().unwrap_or_else(|| id.clone()),
            id,
            load_state: required("LoadState")?,
            active_state: required("ActiveState")?,
            sub_state: required("SubState")?,
            unit_file_state: optional("UnitFileState").map(str::to_owned),
            main_pid: main_pid.transpose().map_err(str::to_owned)?,
            result: optional("Result").map(str::to_owned),
            restarts: number("NRestarts")?,
            memory_bytes: number("MemoryCurrent")?,
            main_started_at: optional("ExecMainStartTimestamp").map(str::to_owned),
            active_since: optional("ActiveEnterTimestamp").map(str::to_owned),
        })
    }

    /// Whether systemd knows no unit of this name (`LoadState=not-found`).
    pub fn not_found(&self) -> bool {
        self.load_state == "not-found"
    }
}

/// Parses `systemctl show` output: one `KEY=VALUE` per line, split at the first `=` (values
/// may contain `=`), empty values kept. Property names are ASCII letters and digits, so any
/// other line (blank, a `#` comment in a fixture, a stray message) is ignored; a repeated key
/// keeps its last value.
pub fn parse_show(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (k, v) = line.trim_end_matches('\r').split_once('=')?;
            let is_property = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric());
            is_property.then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// How the service tools reach systemd. [`Systemctl::host`] is the real one; the paths can be
/// pointed elsewhere to test the wiring.
#[derive(Debug, Clone)]
pub struct Systemctl {
    /// The `systemctl` executable.
    pub program: PathBuf,
    /// The directory whose existence means systemd is PID 1 (`/run/systemd/system`).
    pub booted_marker: PathBuf,
    /// Where PID 1's name is read for the error message (`/proc/1/comm`).
    pub pid1_comm: PathBuf,
}

impl Default for Systemctl {
    fn default() -> Systemctl {
        Systemctl::host()
    }
}

impl Systemctl {
    /// This host's systemd: `systemctl` from `PATH`, `/run/systemd/system`, `/proc/1/comm`.
    pub fn host() -> Systemctl {
        Systemctl {
            program: PathBuf::from("systemctl"),
            booted_marker: PathBuf::from("/run/systemd/system"),
            pid1_comm: PathBuf::from("/proc/1/comm"),
        }
    }

    /// Checks that systemd runs this host, as `sd_booted(3)` does.
    ///
    /// # Errors
    /// E3007 "systemd is not running as PID 1 on this host (PID 1 is `<comm>`)" when
    /// `/run/systemd/system` is not a directory.
    pub async fn ensure_booted(&self) -> Result<()> {
        if tokio::fs::metadata(&self.booted_marker).await.is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        let pid1 = tokio::fs::read_to_string(&self.pid1_comm)
            .await
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_owned());
        Err(Error::new(
            ErrorCode::Unsupported,
            format!("systemd is not running as PID 1 on this host (PID 1 is `{pid1}`)"),
        )
        .with_details(json!({
            "pid1": pid1,
            "checked": self.booted_marker.display().to_string(),
            "problem": "not a directory: systemd creates it at boot when it is PID 1",
        })))
    }

    /// The argv (after the program) that [`Systemctl::status`] runs.
    pub fn show_args(unit: &UnitName) -> Vec<String> {
        let mut args = common_args();
        args.extend(["show".to_owned(), format!("--property={SHOW_PROPERTIES}"), "--".to_owned()]);
        args.push(unit.as_str().to_owned());
        args
    }

    /// The argv (after the program) that [`Systemctl::restart`] runs.
    pub fn restart_args(unit: &UnitName) -> Vec<String> {
        let mut args = common_args();
        args.extend(["restart".to_owned(), "--".to_owned(), unit.as_str().to_owned()]);
        args
    }

    /// The full command line [`Systemctl::restart`] runs, program first (for dry runs).
    pub fn restart_command(&self, unit: &UnitName) -> Vec<String> {
        let mut argv = vec![self.program.display().to_string()];
        argv.extend(Systemctl::restart_args(unit));
        argv
    }

    /// The unit's current state.
    ///
    /// # Errors
    /// E3007 when systemd is not PID 1 (see [`Systemctl::ensure_booted`]) or `systemctl` is
    /// missing; E3006 when systemd knows no such unit; E3003 when `systemctl` fails or prints
    /// something other than the expected properties.
    pub async fn status(&self, unit: &UnitName) -> Result<UnitStatus> {
        self.ensure_booted().await?;
        let out = self.run(&Systemctl::show_args(unit), unit).await?;
        let props = parse_show(&String::from_utf8_lossy(&out.stdout));
        let status = UnitStatus::from_properties(&props).map_err(|prop| {
            Error::new(ErrorCode::ToolFailed, format!("systemctl show {unit}: property {prop} is missing or malformed"))
                .with_details(json!({ "unit": unit.as_str(), "property": prop }))
        })?;
        if status.not_found() {
            return Err(Error::new(ErrorCode::NotFound, format!("unit {unit} not found"))
                .with_details(json!({ "unit": unit.as_str(), "load_state": status.load_state })));
        }
        Ok(status)
    }

    /// Restarts the unit and waits for systemd to finish the job.
    ///
    /// # Errors
    /// E3007 when systemd is not PID 1 or `systemctl` is missing; E3006 when the unit does
    /// not exist; E3003 (stderr, exit code in details) when the restart job fails or is refused.
    pub async fn restart(&self, unit: &UnitName) -> Result<()> {
        self.ensure_booted().await?;
        self.run(&Systemctl::restart_args(unit), unit).await.map(|_| ())
    }

    /// Runs `systemctl <args>` and fails unless it exits 0.
    async fn run(&self, args: &[String], unit: &UnitName) -> Result<std::process::Output> {
        let out = Command::new(&self.program)
            .args(args)
            .env("LC_ALL", "C")
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| self.spawn_error(&e))?;
        if out.status.success() {
            return Ok(out);
        }
        Err(failure(args, unit, &out))
    }

    fn spawn_error(&self, e: &std::io::Error) -> Error {
        use std::io::ErrorKind as K;
        let program = self.program.display().to_string();
        match e.kind() {
            K::NotFound | K::PermissionDenied => {
                Error::new(ErrorCode::Unsupported, format!("systemctl executable {program} cannot be run: {e}"))
                    .with_details(json!({ "systemctl": program, "io_error": e.to_string() }))
            }
            _ => Error::from_io(format!("spawning {program}"), e),
        }
    }
}

/// Options every `systemctl` call carries.
fn common_args() -> Vec<String> {
    ["--no-pager", "--no-ask-password"].map(str::to_owned).to_vec()
}

/// Maps a failed `systemctl` run to an error: E3006 for an unknown unit (systemctl's exit 5
/// or its "not found" message), E3007 when systemctl itself says systemd is not running,
/// E3003 otherwise.
fn failure(args: &[String], unit: &UnitName, out: &std::process::Output) -> Error {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let code = out.status.code();
    let (kind, what) = if code == Some(5) || (stderr.contains("Unit ") && stderr.contains("not found")) {
        (ErrorCode::NotFound, format!("unit {unit} not found"))
    } else if stderr.contains("has not been booted with systemd") {
        (ErrorCode::Unsupported, "systemd is not running as PID 1 on this host".to_owned())
    } else {
        let verb = args.iter().find(|a| !a.starts_with('-')).map_or("", String::as_str);
        let how = code.map_or_else(|| "was killed".to_owned(), |c| format!("exited with {c}"));
        (ErrorCode::ToolFailed, format!("systemctl {verb} {unit} {how}"))
    };
    let message = if first.is_empty() { what } else { format!("{what}: {first}") };
    let mut shown: String = stderr.trim().chars().take(STDERR_IN_DETAILS).collect();
    if shown.len() < stderr.trim().len() {
        shown.push_str("…[truncated]");
    }
    Error::new(kind, message).with_details(json!({
        "unit": unit.as_str(),
        "args": args,
        "exit_code": code,
        "signal": out.status.signal(),
        "systemctl_stderr": shown,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use super::*;

    /// Proves fixture comments are not properties, `=` inside values survives, and output
    /// lacking `LoadState` or with a non-numeric PID is refused by name.
    #[test]
    fn parser_edges() {
        let props = parse_show("# comment: --property=Id\nId=a.service\nDescription=x=y\r\n\nnoequals\n=v\n");
        assert_eq!(props.len(), 2);
        assert_eq!(props["Description"], "x=y");
        assert_eq!(UnitStatus::from_properties(&props).unwrap_err(), "LoadState");
        let bad = parse_show("Id=a\nLoadState=loaded\nActiveState=active\nSubState=running\nMainPID=abc\n");
        assert_eq!(UnitStatus::from_properties(&bad).unwrap_err(), "MainPID");
    }

    /// Proves unit names that could be options, globs, paths or escapes are refused with E1003.
    #[test]
    fn unit_names_are_strict() {
        for ok in ["ssh", "ssh.service", "getty@tty1.service", "dbus-broker.service", "a:b_c.timer", "nginx.socket"] {
            assert_eq!(UnitName::parse(ok).unwrap().as_str(), ok);
        }
        let long = "a".repeat(UNIT_NAME_MAX + 1);
        for bad in ["", "-evil", "--help", ".hidden", "a b", "ssh*", "x/../y", "foo\\x2d", "a;b", "ü.service", &long] {
            let e = UnitName::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArguments, "{bad:?}");
            assert_eq!(e.details["field"], "unit");
        }
    }

    /// Proves the argv puts the options first and `--` before the unit name.
    #[test]
    fn argv_is_fixed_and_ends_with_the_unit() {
        let u = UnitName::parse("ssh.service").unwrap();
        assert_eq!(
            Systemctl::restart_args(&u),
            ["--no-pager", "--no-ask-password", "restart", "--", "ssh.service"].map(str::to_owned)
        );
        let show = Systemctl::show_args(&u);
        assert_eq!(show[2], "show");
        assert_eq!(show[3], format!("--property={SHOW_PROPERTIES}"));
        assert_eq!(&show[4..], ["--", "ssh.service"]);
        assert!(!SHOW_PROPERTIES.contains(' '));
    }

    /// Proves a host without `/run/systemd/system` is E3007 naming PID 1, and nothing is spawned.
    #[tokio::test]
    async fn not_booted_is_unsupported_and_names_pid1() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("comm"), "tini\n").unwrap();
        let sc = Systemctl {
            program: dir.path().join("must-not-run"),
            booted_marker: dir.path().join("run/systemd/system"),
            pid1_comm: dir.path().join("comm"),
        };
        let e = sc.status(&UnitName::parse("ssh").unwrap()).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unsupported);
        assert_eq!(e.message, "systemd is not running as PID 1 on this host (PID 1 is `tini`)");
        assert_eq!(e.details["pid1"], "tini");
    }

    /// Builds a stand-in `systemctl` that logs its argv and answers `show` from a fixture.
    fn fake(dir: &std::path::Path, show_fixture: &str, restart_exit: i32) -> Systemctl {
        std::fs::create_dir_all(dir.join("run/systemd/system")).unwrap();
        let fixture =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/systemctl").join(show_fixture);
        let log = dir.join("argv.log");
        let script = format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nfor a in \"$@\"; do\n  case \"$a\" in\n    show) cat '{}'; exit 0;;\n    restart) echo 'Job for x failed.' >&2; exit {restart_exit};;\n  esac\ndone\nexit 3\n",
            log.display(),
            fixture.display()
        );
        let program = dir.join("systemctl");
        std::fs::write(&program, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        Systemctl { program, booted_marker: dir.join("run/systemd/system"), pid1_comm: dir.join("comm") }
    }

    /// Proves the wiring on a booted host: `show` output becomes a status, a `not-found`
    /// unit is E3006, a failed restart is E3003 with stderr in details, and argv is as built.
    #[tokio::test]
    async fn wiring_through_a_stand_in_systemctl() {
        let dir = tempfile::tempdir().unwrap();
        let unit = UnitName::parse("ssh").unwrap();
        let sc = fake(dir.path(), "ssh-active.txt", 1);
        assert_eq!(sc.status(&unit).await.unwrap().main_pid, Some(612));
        let e = sc.restart(&unit).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::ToolFailed, "{e}");
        assert_eq!(e.details["exit_code"], 1);
        assert_eq!(e.details["systemctl_stderr"], "Job for x failed.");
        let log = std::fs::read_to_string(dir.path().join("argv.log")).unwrap();
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            [Systemctl::show_args(&unit).join(" "), Systemctl::restart_args(&unit).join(" ")]
        );

        let dir = tempfile::tempdir().unwrap();
        let sc = fake(dir.path(), "not-found.txt", 5);
        assert_eq!(sc.status(&unit).await.unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(sc.restart(&unit).await.unwrap_err().code, ErrorCode::NotFound);
    }

    /// Proves a missing `systemctl` executable on a booted host is E3007.
    #[tokio::test]
    async fn missing_systemctl_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("run/systemd/system")).unwrap();
        let sc = Systemctl {
            program: dir.path().join("no-systemctl"),
            booted_marker: dir.path().join("run/systemd/system"),
            pid1_comm: dir.path().join("comm"),
        };
        let e = sc.status(&UnitName::parse("ssh").unwrap()).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unsupported, "{e}");
    }
}
