//! The Debian package `uni-wizard` (`scripts/package`, `[package.metadata.deb]` in
//! daemons/Cargo.toml), as `scripts/test` builds it from the debug binaries
//! (`scripts/package --profile dev --no-build`; built here when missing or older than what goes
//! into it). It is unpacked with the real `dpkg-deb`: the exact file list, owners and modes; the
//! completions and man pages byte for byte against what the clap definitions give now; the
//! units against systemd/ and through `systemd-analyze verify`; the control fields; the
//! maintainer scripts, read and then run for real in a throwaway mount namespace; and
//! `lintian`, whose every tag must be explained in daemons/debian/lintian-notes.md.
//!
//! A missing tool (`dpkg-deb`, `lintian`, `systemd-analyze`, `gzip`) fails the tests, CI or not;
//! running the scripts needs root (`unshare --mount`), which only CI=true insists on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::SystemTime;

use uni_wizard_daemons::cli::assets;
use uni_wizard_tests::{bin, missing};

/// The role units, one per daemon role, and the target that groups them.
const ROLES: [&str; 6] = ["health", "router", "sovereign", "telemetry", "triage", "worker"];

/// The documents and example configs the package ships: (source in the workspace, packaged as).
const DOCS: [(&str, &str); 11] = [
    ("README.md", "usr/share/doc/uni-wizard/README.md"),
    ("systemd/README.md", "usr/share/doc/uni-wizard/README.systemd.md"),
    ("docs/OPERATIONS.md", "usr/share/doc/uni-wizard/OPERATIONS.md"),
    ("docs/ERRORS.md", "usr/share/doc/uni-wizard/ERRORS.md"),
    ("docs/TROUBLESHOOTING.md", "usr/share/doc/uni-wizard/TROUBLESHOOTING.md"),
    ("configs/houses.yaml", "usr/share/doc/uni-wizard/examples/houses.yaml"),
    ("configs/triage.yaml", "usr/share/doc/uni-wizard/examples/triage.yaml"),
    ("configs/uni-wizard.yaml", "usr/share/doc/uni-wizard/examples/uni-wizard.yaml"),
    ("configs/prometheus/uni-wizard.rules.yml", "usr/share/doc/uni-wizard/examples/prometheus/uni-wizard.rules.yml"),
    (
        "configs/prometheus/uni-wizard.recording.yml",
        "usr/share/doc/uni-wizard/examples/prometheus/uni-wizard.recording.yml",
    ),
    ("configs/grafana/uni-wizard-fleet.json", "usr/share/doc/uni-wizard/examples/grafana/uni-wizard-fleet.json"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A command the tests need, or a failure saying which package provides it (never a skip).
fn tool(name: &str, package: &str) -> Command {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| dir.join(name).is_file());
    assert!(
        found,
        "{name} is missing (CI={}): install the `{package}` package (scripts/test does)",
        std::env::var("CI").unwrap_or_default()
    );
    Command::new(name)
}

/// Runs `c`, failing the test with its output unless it exits 0.
fn ok(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?} does not run: {e}"));
    assert!(
        out.status.success(),
        "{c:?} exited {:?}:\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest modification time of the files under `dir` (recursively).
fn newest_under(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                newest = newest.max(mtime(&path));
            }
        }
    }
    newest
}

/// The package the tests check: the one `scripts/test` built for this profile, built again
/// here (once per test process) when missing or older than a binary or file that goes into it.
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let uw = bin("uni-wizard");
        let uwd = bin("uni-wizardd");
        let profile_dir = uw.parent().expect("profile dir").to_path_buf();
        let target = profile_dir.parent().expect("target dir").to_path_buf();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(p) => p.to_owned(),
        };
        let arch = ok(tool("dpkg", "dpkg").arg("--print-architecture"));
        let arch = String::from_utf8_lossy(&arch.stdout).trim().to_owned();
        let mut dir = target.join("debian");
        if profile != "release" {
            dir = dir.join(&profile);
        }
        let deb = dir.join(format!("uni-wizard_{}-1_{arch}.deb", env!("CARGO_PKG_VERSION")));
        let ws = workspace();
        let inputs = [mtime(&uw), mtime(&uwd), mtime(&ws.join("daemons/Cargo.toml"))]
            .into_iter()
            .chain(["systemd", "daemons/debian", "configs", "docs"].map(|d| newest_under(&ws.join(d))))
            .chain([mtime(&ws.join("README.md"))])
            .flatten()
            .max();
        let fresh = mtime(&deb).is_some_and(|built| inputs.is_none_or(|newest| built >= newest));
        if !fresh {
            eprintln!("building {} (scripts/package --profile {profile} --no-build)", deb.display());
            let mut c = Command::new(ws.join("scripts/package"));
            c.args(["--profile", &profile, "--no-build"]).env("CARGO_TARGET_DIR", &target).current_dir(&ws);
            ok(&mut c);
        }
        assert!(deb.exists(), "scripts/package made no {}", deb.display());
        deb
    })
}

/// The package's data, unpacked by `dpkg-deb -x` into a temp dir.
fn unpacked() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = tool("dpkg-deb", "dpkg");
    c.arg("-x").arg(package()).arg(dir.path());
    ok(&mut c);
    dir
}

/// Every entry of a tar listing (`tar -tv` / `dpkg-deb -c`): path (no leading `./`) ->
/// (type and mode as `ls` prints them, owner/group).
fn tar_listing(text: &str) -> BTreeMap<String, (String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.get(5)?.trim_start_matches("./").trim_end_matches('/');
            let (perms, owner) = (f.first()?, f.get(1)?);
            (!path.is_empty()).then(|| (path.to_owned(), ((*perms).to_owned(), (*owner).to_owned())))
        })
        .collect()
}

/// `ls`-style permissions of a plain file with `mode`, e.g. `-rw-r--r--` for 0o644.
fn file_perms(mode: u32) -> String {
    let mut s = String::from("-");
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// What the package must hold, exactly: packaged path -> mode.
fn expected_files() -> BTreeMap<String, u32> {
    let mut want = BTreeMap::new();
    for b in ["uni-wizard", "uni-wizardd"] {
        want.insert(format!("usr/bin/{b}"), 0o755);
    }
    for role in ROLES {
        want.insert(format!("usr/lib/systemd/system/uni-wizard-{role}.service"), 0o644);
    }
    want.insert("usr/lib/systemd/system/uni-wizard.target".to_owned(), 0o644);
    for a in assets::render().expect("assets render") {
        want.insert(packaged_path(&a.path), 0o644);
    }
    for (_, dest) in DOCS {
        want.insert(dest.to_owned(), 0o644);
    }
    want.insert("usr/share/doc/uni-wizard/copyright".to_owned(), 0o644);
    want.insert("usr/share/doc/uni-wizard/changelog.Debian.gz".to_owned(), 0o644);
    want
}

/// Where the package installs a file of `uni-wizard generate-assets` (see cli/assets.rs).
fn packaged_path(generated: &Path) -> String {
    let rel = generated.to_string_lossy();
    let name = generated.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if rel.starts_with("man/man1/") {
        format!("usr/share/man/man1/{name}.gz")
    } else if rel.starts_with("completions/bash/") {
        format!("usr/share/bash-completion/completions/{name}")
    } else if rel.starts_with("completions/zsh/") {
        format!("usr/share/zsh/vendor-completions/{name}")
    } else if rel.starts_with("completions/fish/") {
        format!("usr/share/fish/vendor_completions.d/{name}")
    } else {
        panic!("generate-assets wrote {rel}, which the package does not place: add it to daemons/Cargo.toml")
    }
}

/// Proves the package holds exactly the expected files, owned by root, binaries 0755 and
/// everything else 0644, every directory 0755, and nothing else.
#[test]
fn package_holds_exactly_the_expected_files_and_modes() {
    let mut c = tool("dpkg-deb", "dpkg");
    c.arg("-c").arg(package());
    let listing = tar_listing(&String::from_utf8_lossy(&ok(&mut c).stdout));
    let want = expected_files();
    let mut files = BTreeMap::new();
    for (path, (perms, owner)) in &listing {
        assert!(matches!(owner.as_str(), "0/0" | "root/root"), "{path} is owned by {owner}");
        if perms.starts_with('d') {
            assert_eq!(perms, "drwxr-xr-x", "directory {path}");
        } else {
            files.insert(path.clone(), perms.clone());
        }
    }
    let got: BTreeSet<&String> = files.keys().collect();
    let expected: BTreeSet<&String> = want.keys().collect();
    assert_eq!(
        got,
        expected,
        "file list differs: extra {:?}, missing {:?}",
        got.difference(&expected).collect::<Vec<_>>(),
        expected.difference(&got).collect::<Vec<_>>()
    );
    for (path, mode) in &want {
        assert_eq!(files[path], file_perms(*mode), "mode of {path}");
    }

    // And what `dpkg-deb -x` puts on disk is that list, the binaries runnable.
    let dir = unpacked();
    for path in want.keys() {
        assert!(dir.path().join(path).is_file(), "{path} not unpacked");
    }
    for b in ["uni-wizard", "uni-wizardd"] {
        let mut c = Command::new(dir.path().join("usr/bin").join(b));
        let out = ok(c.arg("--version"));
        assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")), "{b} --version");
    }
    for (src, dest) in DOCS {
        let shipped = std::fs::read(dir.path().join(dest)).expect("unpacked");
        assert_eq!(shipped, std::fs::read(workspace().join(src)).expect("source"), "{dest} differs from {src}");
    }
}

/// Proves the packaged completions and man pages are byte for byte what the clap definitions
/// give now (no drift), and each man page is gzipped as Debian wants (`gzip -9n`).
#[test]
fn packaged_completions_and_man_pages_match_the_clap_definitions() {
    let dir = unpacked();
    let rendered = assets::render().expect("assets render");
    assert!(rendered.iter().any(|a| a.path.starts_with("man")), "no man page rendered");
    for a in rendered {
        let dest = packaged_path(&a.path);
        let path = dir.path().join(&dest);
        let shipped = std::fs::read(&path).unwrap_or_else(|e| panic!("{dest}: {e}"));
        let text = if dest.ends_with(".gz") {
            // RFC 1952: magic, deflate, FLG without FNAME (-n), MTIME 0 (-n), XFL 2 (-9).
            assert!(shipped.len() > 10 && shipped[..3] == [0x1f, 0x8b, 8], "{dest} is not gzip");
            assert_eq!(shipped[3] & 0x08, 0, "{dest} carries a file name (gzip -n)");
            assert_eq!(shipped[4..8], [0, 0, 0, 0], "{dest} carries a timestamp (gzip -n)");
            assert_eq!(shipped[8], 2, "{dest} is not gzip -9");
            let mut c = tool("gzip", "gzip");
            ok(c.arg("-dc").arg(&path)).stdout
        } else {
            shipped
        };
        assert!(
            text == a.bytes,
            "{dest} differs from what `uni-wizard generate-assets` gives now (rebuild the package: scripts/package)"
        );
    }
}

/// Proves the packaged units are systemd/'s with ExecStart on /usr/bin/uni-wizardd and
/// nothing else changed, and that `systemd-analyze verify` passes them with no warning, run on
/// the unpacked daemon.
#[test]
fn packaged_units_match_systemd_dir_and_pass_systemd_analyze_verify() {
    let dir = unpacked();
    let units_dir = dir.path().join("usr/lib/systemd/system");
    let staged = tempfile::tempdir().expect("tempdir");
    let daemon = dir.path().join("usr/bin/uni-wizardd");
    let mut names = Vec::new();
    for role in ROLES {
        let name = format!("uni-wizard-{role}.service");
        let source = std::fs::read_to_string(workspace().join("systemd").join(&name)).expect("systemd/ unit");
        let shipped = std::fs::read_to_string(units_dir.join(&name)).expect("packaged unit");
        let exec = format!("ExecStart=/usr/bin/uni-wizardd --config /etc/uni-wizard/{role}.yaml");
        assert!(shipped.lines().any(|l| l == exec), "{name} lacks `{exec}`");
        assert_eq!(
            shipped,
            source.replace("ExecStart=/usr/local/bin/uni-wizardd ", "ExecStart=/usr/bin/uni-wizardd "),
            "{name}: the packaged unit differs from systemd/{name} beyond its ExecStart path"
        );
        let for_verify =
            shipped.replace("ExecStart=/usr/bin/uni-wizardd ", &format!("ExecStart={} ", daemon.display()));
        std::fs::write(staged.path().join(&name), for_verify).expect("stage unit");
        names.push(name);
    }
    let target = std::fs::read_to_string(units_dir.join("uni-wizard.target")).expect("packaged target");
    assert_eq!(target, std::fs::read_to_string(workspace().join("systemd/uni-wizard.target")).expect("source"));
    std::fs::write(staged.path().join("uni-wizard.target"), target).expect("stage target");
    names.push("uni-wizard.target".to_owned());

    let mut c = tool("systemd-analyze", "systemd");
    c.env("SYSTEMD_COLORS", "0").env("SYSTEMD_PAGER", "").env("SYSTEMD_LOG_COLOR", "0");
    c.arg("verify").args(names.iter().map(|n| staged.path().join(n))).current_dir(staged.path());
    let out = c.output().expect("systemd-analyze runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "systemd-analyze verify {names:?} (exit {:?}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status.code()
    );
}

/// The non-comment lines of a shell script.
fn code_lines(script: &str) -> Vec<&str> {
    script.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

/// Proves the control fields (name, version, Depends on adduser) and the maintainer scripts:
/// 0755, `/bin/sh` with `set -e`, postinst makes the user and both directories with their
/// modes, and no script enables or starts a unit: systemctl only reloads, deb-systemd-invoke
/// only stops or try-restarts, and deb-systemd-helper enables only a unit the operator had
/// enabled.
#[test]
fn control_and_maintainer_scripts_make_the_user_and_start_nothing() {
    let deb = package();
    let mut c = tool("dpkg-deb", "dpkg");
    c.arg("--ctrl-tarfile").arg(deb);
    let tarball = ok(&mut c).stdout;
    let mut tar = tool("tar", "tar");
    tar.args(["-tvf", "-"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = tar.spawn().expect("tar runs");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), &tarball).expect("feed tar");
    drop(child.stdin.take());
    let listing = child.wait_with_output().expect("tar listing");
    let listing = tar_listing(&String::from_utf8_lossy(&listing.stdout));
    for script in ["postinst", "prerm", "postrm"] {
        let (perms, owner) = listing.get(script).unwrap_or_else(|| panic!("no {script} in {listing:?}"));
        assert_eq!(perms, "-rwxr-xr-x", "{script}");
        assert!(matches!(owner.as_str(), "0/0" | "root/root"), "{script} is owned by {owner}");
    }
    assert!(!listing.contains_key("preinst"), "an unexpected preinst");

    let control = tempfile::tempdir().expect("tempdir");
    let mut c = tool("dpkg-deb", "dpkg");
    ok(c.arg("-e").arg(deb).arg(control.path()));
    let read = |name: &str| std::fs::read_to_string(control.path().join(name)).expect("control file");

    let fields = read("control");
    let field = |name: &str| {
        fields.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).map(str::to_owned).unwrap_or_default()
    };
    assert_eq!(field("Package"), "uni-wizard");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert!(field("Depends").split(", ").any(|d| d == "adduser"), "Depends: {}", field("Depends"));
    let changelog = std::fs::read_to_string(workspace().join("daemons/debian/changelog")).expect("changelog");
    assert!(
        changelog.starts_with(&format!("uni-wizard ({}-1) ", env!("CARGO_PKG_VERSION"))),
        "daemons/debian/changelog's first entry is not for {}-1",
        env!("CARGO_PKG_VERSION")
    );

    for name in ["postinst", "prerm", "postrm"] {
        // Their syntax is proven by running them (the sandbox test below), as dpkg does: by path.
        let script = read(name);
        assert!(script.starts_with("#!/bin/sh\n"), "{name}: not a /bin/sh script");
        assert!(code_lines(&script).contains(&"set -e"), "{name}: no `set -e`");
        assert!(!script.contains("#DEBHELPER#"), "{name}: the #DEBHELPER# token was not replaced");
        let lines = code_lines(&script);
        for (i, line) in lines.iter().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(at) = words.iter().position(|w| *w == "systemctl") {
                let verb = words[at + 1..].iter().find(|w| !w.starts_with('-')).copied().unwrap_or_default();
                assert_eq!(verb, "daemon-reload", "{name}: `{line}`");
            }
            if let Some(at) = words.iter().position(|w| *w == "deb-systemd-invoke") {
                let verb = words.get(at + 1).copied().unwrap_or_default();
                assert!(matches!(verb, "stop" | "try-restart"), "{name}: `{line}` may start a unit");
            }
            if let Some(at) = words.iter().position(|w| *w == "deb-systemd-helper")
                && words.get(at + 1) == Some(&"enable")
            {
                let guarded = i > 0 && lines[i - 1].contains("deb-systemd-helper --quiet was-enabled");
                assert!(guarded, "{name}: `{line}` enables a unit the operator had not enabled");
            }
        }
    }
    let postinst = read("postinst");
    let code = code_lines(&postinst).join("\n");
    for want in [
        "addgroup --system --quiet uni-wizard",
        "adduser --system --quiet --ingroup uni-wizard --no-create-home",
        "--home /var/lib/uni-wizard --shell /usr/sbin/nologin",
        "mkdir -m 0750 /etc/uni-wizard",
        "chown root:uni-wizard /etc/uni-wizard",
        "mkdir -m 0700 /var/lib/uni-wizard",
        "chown uni-wizard:uni-wizard /var/lib/uni-wizard",
        "if ! getent passwd uni-wizard >/dev/null; then",
        "if ! getent group uni-wizard >/dev/null; then",
    ] {
        assert!(code.contains(want), "postinst lacks `{want}`:\n{postinst}");
    }
}

/// Runs the maintainer scripts for real, in a private mount namespace (`unshare --mount`) where
/// `/etc` is a copy, `/var/lib` an empty directory and `/run` an empty tmpfs (so no systemd of
/// the host is reached): install twice, put a config in, remove, purge. Prints what it saw.
const SANDBOX: &str = r#"#!/bin/sh
set -eu
ctl="$1"; root="$2"
# The mounts end with this process's namespace; the copies are removed as root (under sudo
# the caller could not remove root's files).
trap 'cd /; umount /run /var/lib /etc 2>/dev/null || true; rm -rf "$root/etc" "$root/varlib"' EXIT
mount --make-rprivate /
cp -a /etc "$root/etc"
touch "$root/etc/.uw-sandbox"
mkdir "$root/varlib"
mount --bind "$root/etc" /etc
mount --bind "$root/varlib" /var/lib
mount -t tmpfs tmpfs /run
[ -f /etc/.uw-sandbox ] || { echo "not in the sandbox: refusing to run the scripts" >&2; exit 99; }
"$ctl/postinst" configure
"$ctl/postinst" configure
echo "passwd $(getent passwd uni-wizard)"
echo "group $(getent group uni-wizard)"
stat -c 'dir %n %a %U %G' /etc/uni-wizard /var/lib/uni-wizard
echo "units $(ls /etc/systemd/system | grep -c uni-wizard || true)"
touch /etc/uni-wizard/worker.yaml /var/lib/uni-wizard/audit.db
"$ctl/prerm" remove
"$ctl/postrm" remove
"$ctl/postrm" purge
[ -e /var/lib/uni-wizard ] && echo "state kept" || echo "state purged"
[ -e /etc/uni-wizard/worker.yaml ] && echo "config kept" || echo "config purged"
echo "passwd after purge $(getent passwd uni-wizard)"
"#;

/// Proves the maintainer scripts, run for real in a throwaway mount namespace, create the
/// system user and group once (a second configure changes nothing), /etc/uni-wizard 0750
/// root:uni-wizard and /var/lib/uni-wizard 0700 uni-wizard, enable no unit, and on purge delete
/// the state but keep the operator's config and the user.
#[test]
fn maintainer_scripts_run_in_a_sandbox_make_user_and_dirs_and_purge_state_only() {
    // As root, or through `sudo -n` (scripts/test's apt-get does the same when not root).
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
    let sudo = !is_root && Command::new("sudo").args(["-n", "true"]).output().is_ok_and(|o| o.status.success());
    if !is_root && !sudo && missing("root or `sudo -n`, for `unshare --mount` (the maintainer scripts' sandbox)") {
        return;
    }
    let control = tempfile::tempdir().expect("tempdir");
    let mut c = tool("dpkg-deb", "dpkg");
    ok(c.arg("-e").arg(package()).arg(control.path()));
    let root = tempfile::tempdir().expect("tempdir");
    // Run by path, as dpkg runs the maintainer scripts (no shell spawned from Rust).
    let sandbox = root.path().join("sandbox");
    std::fs::write(&sandbox, SANDBOX).expect("write the sandbox script");
    std::fs::set_permissions(&sandbox, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let unshare = tool("unshare", "util-linux");
    let mut c = if sudo {
        let mut c = Command::new("sudo");
        c.arg("-n").arg(unshare.get_program());
        c
    } else {
        unshare
    };
    c.args(["--mount", "--fork"]).arg(&sandbox).arg(control.path()).arg(root.path());
    let out = String::from_utf8_lossy(&ok(&mut c).stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    let has = |want: &str| lines.iter().any(|l| l.starts_with(want));
    assert!(
        has("passwd uni-wizard:x:") && lines.iter().any(|l| l.ends_with(":/var/lib/uni-wizard:/usr/sbin/nologin")),
        "no uni-wizard system user:\n{out}"
    );
    let uid: u32 = lines
        .iter()
        .find_map(|l| l.strip_prefix("passwd uni-wizard:x:")?.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no uid:\n{out}"));
    assert!(uid < 1000, "uni-wizard is not a system user (uid {uid}):\n{out}");
    assert!(has("group uni-wizard:x:"), "no uni-wizard group:\n{out}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("passwd uni-wizard:")).count(), 1, "{out}");
    assert!(has("dir /etc/uni-wizard 750 root uni-wizard"), "/etc/uni-wizard:\n{out}");
    assert!(has("dir /var/lib/uni-wizard 700 uni-wizard uni-wizard"), "/var/lib/uni-wizard:\n{out}");
    assert!(has("units 0"), "a unit was enabled (/etc/systemd/system):\n{out}");
    assert!(has("state purged"), "purge kept /var/lib/uni-wizard:\n{out}");
    assert!(has("config kept"), "purge deleted the operator's config:\n{out}");
    assert!(has("passwd after purge uni-wizard:x:"), "purge removed the user:\n{out}");
    eprintln!("{out}");
}

/// The tags daemons/debian/lintian-notes.md explains: the first column of its table.
fn explained_tags() -> BTreeSet<String> {
    let notes = std::fs::read_to_string(workspace().join("daemons/debian/lintian-notes.md")).expect("lintian notes");
    notes.lines().filter_map(|l| l.strip_prefix("| `")?.split_once('`').map(|(tag, _)| tag.to_owned())).collect()
}

/// Proves lintian reports no tag (error to info, pedantic and experimental included) that
/// daemons/debian/lintian-notes.md does not explain, and the notes list no tag it no longer
/// reports.
#[test]
fn lintian_reports_only_tags_the_notes_explain() {
    let mut c = tool("lintian", "lintian");
    c.args(["--display-info", "--pedantic", "--display-experimental", "--tag-display-limit", "0", "--fail-on", "none"]);
    let out = c.arg(package()).output().expect("lintian runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // `--fail-on none`: the tags are judged here, so any exit but 0 is lintian failing to run.
    assert!(
        out.status.code() == Some(0),
        "lintian exited {:?}:\n{text}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = regex::Regex::new(r"^[EWIPX]: uni-wizard(?: [a-z]+)?: (\S+)").expect("regex");
    let reported: BTreeSet<String> = text.lines().filter_map(|l| Some(line.captures(l)?[1].to_owned())).collect();
    let explained = explained_tags();
    let unexplained: Vec<&String> = reported.difference(&explained).collect();
    assert!(
        unexplained.is_empty(),
        "lintian tags not explained in daemons/debian/lintian-notes.md: {unexplained:?}\n{text}"
    );
    let stale: Vec<&String> = explained.difference(&reported).collect();
    assert!(stale.is_empty(), "daemons/debian/lintian-notes.md explains tags lintian no longer reports: {stale:?}");
    eprintln!("lintian: {} tags, all explained: {reported:?}", reported.len());
}
