//! `uni-wizard generate-assets --out DIR`: the shell completions and man pages of both binaries,
//! generated from their clap definitions (`clap_complete`, `clap_mangen`), so they cannot drift
//! from the flags the binaries take. `scripts/package` runs it before `cargo deb` packages the
//! result (see `[package.metadata.deb]` in daemons/Cargo.toml).
//!
//! The subcommand is hidden: it is a build step, not something an operator runs, so it has no
//! completion, no man page and no section in docs/API_REFERENCE.md.
//!
//! `DIR` gets the layout the package installs, under short names:
//!
//! | file | installed as |
//! |---|---|
//! | `completions/bash/<bin>` | `/usr/share/bash-completion/completions/<bin>` |
//! | `completions/zsh/_<bin>` | `/usr/share/zsh/vendor-completions/_<bin>` |
//! | `completions/fish/<bin>.fish` | `/usr/share/fish/vendor_completions.d/<bin>.fish` |
//! | `man/man1/<bin>[-<sub>...].1` | `/usr/share/man/man1/...1.gz` (scripts/package gzips them) |
//!
//! One man page per binary and one per visible subcommand at every depth, as `clap_mangen`
//! names them (`uni-wizard-config-check.1`).

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use clap_complete::Shell;
use serde_json::json;
use uni_wizard::Error;

use super::Cli;
use super::files::{self, io_error};
use crate::daemon::DaemonArgs;

/// Flags of `uni-wizard generate-assets` (hidden).
#[derive(Debug, Args)]
pub struct AssetsArgs {
    /// The directory to write into (created if missing; files there are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// One generated file: where it goes under the output directory, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Relative to the output directory, e.g. `man/man1/uni-wizard.1`.
    pub path: PathBuf,
    /// The file's contents.
    pub bytes: Vec<u8>,
}

/// The clap definitions of both binaries: the operator CLI and the daemon.
fn commands() -> [clap::Command; 2] {
    [Cli::command(), DaemonArgs::command()]
}

/// Every completion and man page of both binaries, in a stable order.
///
/// # Errors
/// E4002 if rendering fails (it writes to memory, so only a bug in a generator can fail it).
pub fn render() -> Result<Vec<Asset>, Error> {
    let mut out = Vec::new();
    for cmd in commands() {
        let bin = cmd.get_name().to_owned();
        let mut visible = without_hidden(cmd.clone());
        // Each under its shell's name (`Shell`'s Display): completions/bash/, zsh/, fish/.
        for (shell, file) in
            [(Shell::Bash, bin.clone()), (Shell::Zsh, format!("_{bin}")), (Shell::Fish, format!("{bin}.fish"))]
        {
            let mut bytes = Vec::new();
            clap_complete::generate(shell, &mut visible, &bin, &mut bytes);
            out.push(Asset { path: Path::new("completions").join(shell.to_string()).join(file), bytes });
        }
        man_pages(cmd, &mut out)?;
    }
    Ok(out)
}

/// `cmd` without its hidden subcommands, for the completion generators: unlike `clap_mangen`
/// they offer hidden subcommands too, and `clap::Command` cannot remove one, so the root is
/// assembled again from the same arguments and the visible subcommands (nothing restated, so
/// nothing can drift). Only the root level is filtered; the tests fail if a hidden subcommand
/// deeper down is ever offered.
fn without_hidden(cmd: clap::Command) -> clap::Command {
    if cmd.get_name() != "uni-wizard" || !cmd.get_subcommands().any(clap::Command::is_hide_set) {
        return cmd;
    }
    // `Command::new` takes a `&'static str` name (clap's `string` feature is off): the one
    // binary with hidden subcommands.
    let mut root = clap::Command::new("uni-wizard").version(env!("CARGO_PKG_VERSION"));
    if let Some(about) = cmd.get_about() {
        root = root.about(about.clone());
    }
    root.args(cmd.get_arguments().cloned()).subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// The man page of `cmd` and of each visible subcommand below it (clap's `help` excepted), named
/// and rendered as `clap_mangen::generate_to` does, into memory.
fn man_pages(cmd: clap::Command, out: &mut Vec<Asset>) -> Result<(), Error> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut stack = vec![cmd];
    while let Some(cmd) = stack.pop() {
        stack.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        let man = clap_mangen::Man::new(cmd);
        let path = Path::new("man/man1").join(man.get_filename());
        let mut bytes = Vec::new();
        man.render(&mut bytes).map_err(|e| io_error("cannot render", &path, e))?;
        out.push(Asset { path, bytes });
    }
    Ok(())
}

/// Writes every asset under `out` (mode 0644, directories 0755) and returns the files written.
///
/// # Errors
/// E4002 naming the file or directory that cannot be created or written.
pub fn write(out: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut written = Vec::new();
    for asset in render()? {
        let path = out.join(&asset.path);
        if let Some(dir) = path.parent() {
            files::create_dir(dir, 0o755)?;
        }
        files::replace(&path, &asset.bytes, files::PUBLIC)?;
        written.push(path);
    }
    Ok(written)
}

/// Runs `uni-wizard generate-assets`: writes the files and lists them; exit 0.
///
/// # Errors
/// E4002 as [`write`].
pub fn run(a: &AssetsArgs) -> Result<i32, Error> {
    let written = write(&a.out)?;
    if a.json {
        let list: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        println!("{}", json!({ "ok": true, "out": a.out.display().to_string(), "files": list }));
    } else {
        for p in &written {
            println!("wrote  {}", p.display());
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every visible subcommand path of `cmd`, joined with `-` as man page names are.
    fn paths(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
        out.insert(prefix.to_owned());
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            paths(sub, &format!("{prefix}-{}", sub.get_name()), out);
        }
    }

    fn names(assets: &[Asset], under: &str) -> BTreeSet<String> {
        assets
            .iter()
            .filter(|a| a.path.starts_with(under))
            .filter_map(|a| a.path.file_name()?.to_str().map(str::to_owned))
            .collect()
    }

    /// Proves there is exactly one man page per binary and per visible subcommand at every depth,
    /// none for the hidden `generate-assets`, and each names its command in its NAME section.
    #[test]
    fn one_man_page_per_command_and_subcommand() {
        let assets = render().expect("renders");
        let mut want = BTreeSet::new();
        for cmd in commands() {
            paths(&cmd, cmd.get_name(), &mut want);
        }
        for sub in ["uni-wizard-config-check", "uni-wizard-fleet-init", "uni-wizard-audit", "uni-wizardd"] {
            assert!(want.contains(sub), "{sub} missing from the clap tree: {want:?}");
        }
        let want: BTreeSet<String> = want.into_iter().map(|p| format!("{p}.1")).collect();
        assert_eq!(names(&assets, "man/man1"), want);
        for a in assets.iter().filter(|a| a.path.starts_with("man")) {
            let text = String::from_utf8_lossy(&a.bytes);
            let stem = a.path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            assert!(text.contains(".SH NAME") && text.contains(stem), "{}: no NAME naming {stem}", a.path.display());
        }
    }

    /// Proves each binary has a bash, zsh and fish completion, and the bash one offers every
    /// visible subcommand and long flag of the clap tree, but not the hidden `generate-assets`.
    #[test]
    fn completions_cover_every_subcommand_and_flag() {
        let assets = render().expect("renders");
        let want: BTreeSet<String> = ["uni-wizard", "uni-wizardd", "_uni-wizard", "_uni-wizardd"]
            .into_iter()
            .map(str::to_owned)
            .chain(["uni-wizard.fish", "uni-wizardd.fish"].map(str::to_owned))
            .collect();
        assert_eq!(names(&assets, "completions"), want);
        for a in assets.iter().filter(|a| a.path.starts_with("completions")) {
            let text = String::from_utf8_lossy(&a.bytes);
            assert!(!text.contains("generate-assets"), "{} offers the hidden generate-assets", a.path.display());
        }
        for cmd in commands() {
            let bin = cmd.get_name().to_owned();
            let bash = assets
                .iter()
                .find(|a| a.path == Path::new("completions/bash").join(&bin))
                .map(|a| String::from_utf8_lossy(&a.bytes).into_owned())
                .unwrap_or_else(|| panic!("no bash completion for {bin}"));
            let words: BTreeSet<&str> = bash.split(|c: char| c.is_whitespace() || c == '"').collect();
            let mut stack = vec![cmd];
            while let Some(c) = stack.pop() {
                for flag in c.get_arguments().filter(|a| !a.is_hide_set()).filter_map(|a| a.get_long()) {
                    assert!(
                        words.contains(format!("--{flag}").as_str()),
                        "{bin}: --{flag} of {} missing",
                        c.get_name()
                    );
                }
                for sub in c.get_subcommands() {
                    if sub.is_hide_set() {
                        assert!(!words.contains(sub.get_name()), "{bin}: hidden {} is offered", sub.get_name());
                    } else {
                        assert!(words.contains(sub.get_name()), "{bin}: subcommand {} missing", sub.get_name());
                        stack.push(sub.clone());
                    }
                }
            }
        }
    }

    /// Proves `write` puts every rendered file under the directory, byte for byte, mode 0644.
    #[test]
    fn write_puts_every_asset_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("assets");
        let written = write(&out).expect("writes");
        let assets = render().expect("renders");
        assert_eq!(written.len(), assets.len());
        for a in &assets {
            let path = out.join(&a.path);
            assert_eq!(std::fs::read(&path).expect("written"), a.bytes, "{}", path.display());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
                assert_eq!(mode, 0o644, "{}", path.display());
            }
        }
    }
}
