//! The real Hermes agent (`hermes-agent==0.19.0`) for the telemetry tests.
//!
//! `scripts/test` installs it into its own venv (`target/hermes-venv`, or
//! `UNI_WIZARD_HERMES_VENV`); a missing venv fails the test with the command that installs it.
//! Sessions are written only by Hermes' own `SessionDB`, through
//! `../shared/data/hermes/write_session.py`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's python.
///
/// # Panics
/// When the venv is missing: the message says how to install it.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("UNI_WIZARD_HERMES_VENV")
        .map_or_else(|| workspace().join("target/hermes-venv"), PathBuf::from);
    let py = venv.join("bin/python");
    let installed = py.exists()
        && Command::new(&py)
            .args(["-c", "import hermes_state, agent.shell_hooks"])
            .output()
            .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "hermes-agent is not installed at {}: run scripts/test, or `python3 -m venv {0} && {0}/bin/python -m pip install hermes-agent==0.19.0`",
        venv.display()
    );
    py
}

/// A file of `../shared/data/hermes/`.
///
/// # Panics
/// When it is missing (CI keeps `shared/` beside the clone).
pub fn shared(name: &str) -> PathBuf {
    let p = workspace().join("../shared/data/hermes").join(name);
    assert!(p.exists(), "{} is missing: the Hermes reference data lives beside the workspace", p.display());
    p
}

/// A directory for `HERMES_HOME`: on tmpfs when there is one (Hermes fsyncs every message;
/// the daemons' own files stay on disk), else in the system temp dir.
///
/// # Panics
/// When no temp dir can be made.
pub fn home() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let b =
        tempfile::Builder::new().prefix("hermes-home-").tempdir_in(if shm.is_dir() { shm } else { Path::new("/tmp") });
    b.expect("hermes home")
}

/// Starts `write_session.py --sessions n` into `hermes_home` (stdout piped: its JSON), through
/// `tests/py/write_session_unique.py`, which runs the script unchanged with session ids whose
/// random part cannot repeat (the script titles sessions after it, and Hermes refuses a
/// duplicate title: over 1450 sessions that happened in about 6% of runs).
///
/// # Panics
/// When python cannot start.
pub fn write_sessions(hermes_home: &Path, n: usize) -> Child {
    Command::new(python())
        .arg(workspace().join("tests/py/write_session_unique.py"))
        .arg(shared("write_session.py"))
        .args(["--sessions", &n.to_string()])
        .env("HERMES_HOME", hermes_home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts")
}

/// Waits for a writer and returns the session ids it wrote.
///
/// # Panics
/// When it failed; the panic shows its stderr.
pub fn session_ids(child: Child) -> Vec<String> {
    let out = child.wait_with_output().expect("writer ends");
    assert!(out.status.success(), "write_session.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("writer JSON");
    v["session_ids"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
}

/// The largest `messages.id` Hermes has written into `hermes_home`'s state.db (0 when none).
pub fn max_message_id(hermes_home: &Path) -> i64 {
    let c =
        rusqlite::Connection::open_with_flags(hermes_home.join("state.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("state.db");
    c.busy_timeout(std::time::Duration::from_secs(5)).expect("busy");
    c.query_row("SELECT coalesce(max(id), 0) FROM messages", [], |r| r.get(0)).expect("max id")
}
