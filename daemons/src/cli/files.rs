//! Writing the files the CLI makes (`keygen`, `fleet init`, `fleet cert`): each atomically
//! (a temp file beside it, fsynced, then moved into place), with its mode set exactly whatever
//! the umask says, and a secret never replaced by accident.
//!
//! [`write_new`] puts a file in place only if none is there (a hard link, which fails when the
//! name exists, so two runs at once cannot both "create" a key); [`replace`] swaps a file for a
//! new version in one rename. A reader sees the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use uni_wizard::{Error, ErrorCode};

/// Mode of a secret (a key, a token, a file holding tokens): the owner reads it, no one else.
pub const SECRET: u32 = 0o600;
/// Mode of a config holding no secret itself but naming where they are (group: the daemon's).
pub const CONFIG: u32 = 0o640;
/// Mode of public material (certificates, public keys, notes).
pub const PUBLIC: u32 = 0o644;

/// E4002 naming `path` and what went wrong.
pub fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::HomeUnavailable, format!("{what} {}: {e}", path.display()))
        .with_details(json!({ "path": path.display().to_string() }))
}

/// Creates `dir` and its missing parents with exactly `mode`, whatever the umask says
/// (directories that exist are left as they are).
///
/// # Errors
/// E4002 when one cannot be created.
pub fn create_dir(dir: &Path, mode: u32) -> Result<(), Error> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {
                #[cfg(unix)]
                std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .map_err(|e| io_error("cannot set the mode of", d, e))?;
            }
            // Made meanwhile by another run: theirs stands.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("cannot create", d, e)),
        }
    }
    Ok(())
}

/// Writes `bytes` to a fresh temp file beside `path` with `mode`, fsynced; returns its path.
fn temp(path: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf, Error> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.uw-{:08x}.tmp", rand::random::<u32>()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        // The mode asked for, not what the umask left of it (a certificate must stay readable).
        #[cfg(unix)]
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error("cannot write", path, e));
    }
    Ok(tmp)
}

/// Flushes the directory entry of `path` (a rename or link is durable only then).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
}

/// Puts `bytes` at `path` with `mode` unless a file is there; `Ok(false)` when one was (it is
/// left untouched).
///
/// # Errors
/// E4002 when the file cannot be written.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, Error> {
    if path.symlink_metadata().is_ok() {
        return Ok(false);
    }
    let tmp = temp(path, bytes, mode)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(path);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_error("cannot write", path, e)),
    }
}

/// Puts `bytes` at `path` with `mode`, replacing what is there in one rename.
///
/// # Errors
/// E4002 when the file cannot be written.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let tmp = temp(path, bytes, mode)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error("cannot write", path, e));
    }
    sync_dir(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).expect("exists").permissions().mode() & 0o777
    }

    /// Proves `write_new` never replaces a file, `replace` does, both set the exact mode and
    /// leave no temp file behind.
    #[cfg(unix)]
    #[test]
    fn new_files_are_never_replaced_and_modes_are_exact() {
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("a.key");
        assert!(write_new(&key, b"first", SECRET).expect("written"));
        assert!(!write_new(&key, b"second", SECRET).expect("kept"));
        assert_eq!(std::fs::read(&key).expect("read"), b"first");
        assert_eq!(mode(&key), 0o600);
        let cert = dir.path().join("a.pem");
        replace(&cert, b"one", PUBLIC).expect("written");
        replace(&cert, b"two", PUBLIC).expect("replaced");
        assert_eq!(std::fs::read(&cert).expect("read"), b"two");
        assert_eq!(mode(&cert), 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("list").flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 2, "no temp files left: {names:?}");
        let e = write_new(&dir.path().join("missing/dir/x"), b"x", SECRET).expect_err("no such dir");
        assert_eq!(e.code, ErrorCode::HomeUnavailable);
    }
}
