//! Confinement of the file tools to their configured roots.
//!
//! Each root is opened once as a directory descriptor. Every path a tool touches is opened
//! *relative to that descriptor* with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so
//! the kernel refuses any resolution that leaves the root — through `..`, an absolute symlink,
//! or a relative one — at the moment of the open. There is no check-then-use window, and a
//! root later replaced by a symlink does not move: the descriptor keeps pointing at the
//! directory that was configured.
//!
//! A clear error is given before the kernel is asked where that is possible: an absolute path
//! outside every root, or a `..` that climbs above the root, is refused by name (E2008).
//!
//! # Files, not FIFOs; one link, not a hard link out
//! Content is read only from regular files, opened with `O_NONBLOCK` so a FIFO or device cannot
//! block the open, then checked with `fstat` on the descriptor itself ([`Roots::open_file`],
//! [`regular_file`]). A hard link inside a root may name an inode outside it, and no path
//! resolution can see that; so a regular file with more than one link is refused (E2008)
//! unless the configuration opts in (`allow_hard_links: true`, for roots where hard links are
//! known and trusted, such as a build tree of `cp -l` copies).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde_json::json;

use crate::error::{Error, ErrorCode, Result};

/// One configured root.
#[derive(Debug)]
struct Root {
    /// The canonical path (symlinks resolved at configuration time).
    path: PathBuf,
    /// The path as configured, when it differs from the canonical one.
    alias: Option<PathBuf>,
    /// A directory descriptor for the root.
    dir: OwnedFd,
}

/// The directories file tools may touch. The first root is where relative paths resolve.
#[derive(Debug, Default)]
pub struct Roots {
    roots: Vec<Root>,
    allow_hard_links: bool,
}

/// A path resolved to a root and a relative path beneath it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Index of the root.
    pub root: usize,
    /// Path relative to the root; `.` for the root itself.
    pub rel: PathBuf,
}

impl Roots {
    /// Opens every root. An empty list confines file tools to nothing: every path is refused.
    ///
    /// # Errors
    /// E4003 naming a root that does not exist or is not a directory.
    pub fn new<P: AsRef<Path>>(paths: &[P]) -> Result<Roots> {
        let mut roots = Vec::with_capacity(paths.len());
        for p in paths {
            let p = p.as_ref();
            let unavailable = |e: &dyn std::fmt::Display| {
                Error::new(ErrorCode::RootUnavailable, format!("file root {} is unusable: {e}", p.display()))
                    .with_details(json!({ "root": p.display().to_string() }))
            };
            let canonical = p.canonicalize().map_err(|e| unavailable(&e))?;
            let dir = rustix::fs::open(&canonical, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| unavailable(&e))?;
            let alias = (canonical != p).then(|| p.to_path_buf());
            roots.push(Root { path: canonical, alias, dir });
        }
        Ok(Roots { roots, allow_hard_links: false })
    }

    /// The canonical root paths, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.roots.iter().map(|r| r.path.as_path())
    }

    /// The canonical path of root `i`.
    pub fn root_path(&self, i: usize) -> &Path {
        &self.roots[i].path
    }

    /// The absolute path a resolved path names (for display; never opened by path).
    pub fn display(&self, r: &Resolved) -> PathBuf {
        if r.rel == Path::new(".") { self.roots[r.root].path.clone() } else { self.roots[r.root].path.join(&r.rel) }
    }

    /// Maps a user-supplied path to a root and a relative path, refusing what is plainly out.
    ///
    /// # Errors
    /// E2008 when the path is absolute and under no root, climbs above its root with `..`, or
    /// no roots are configured.
    pub fn resolve(&self, path: &str) -> Result<Resolved> {
        let outside = |why: &str| {
            Error::new(ErrorCode::PathOutsideRoots, format!("path {path} is outside the file roots: {why}"))
                .with_details(json!({ "path": path, "reason": why, "roots": self.paths().map(|p| p.display().to_string()).collect::<Vec<_>>() }))
        };
        if self.roots.is_empty() {
            return Err(outside("no file roots are configured"));
        }
        if path.contains('\0') {
            return Err(Error::new(ErrorCode::InvalidArguments, "path contains a NUL byte")
                .with_details(json!({ "field": "path" })));
        }
        let p = Path::new(path);
        let (root, rel) = if p.is_absolute() {
            self.roots
                .iter()
                .enumerate()
                .find_map(|(i, r)| {
                    let rel = p
                        .strip_prefix(&r.path)
                        .ok()
                        .or_else(|| r.alias.as_ref().and_then(|a| p.strip_prefix(a).ok()))?;
                    Some((i, rel))
                })
                .ok_or_else(|| outside("absolute path under no root"))?
        } else {
            (0, p)
        };
        let mut depth = 0usize;
        let mut clean = PathBuf::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => {
                    depth += 1;
                    clean.push(s);
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    depth = depth.checked_sub(1).ok_or_else(|| outside("`..` climbs above the root"))?;
                    clean.push("..");
                }
                Component::RootDir | Component::Prefix(_) => return Err(outside("absolute path under no root")),
            }
        }
        if clean.as_os_str().is_empty() {
            clean.push(".");
        }
        Ok(Resolved { root, rel: clean })
    }

    /// Opens `rel` beneath its root. Symlinks inside the root are followed; any resolution
    /// that would leave the root fails with E2008.
    ///
    /// # Errors
    /// E2008 on escape, E3006 when missing, E3003/E3004 for other I/O failures.
    pub fn open(&self, r: &Resolved, flags: OFlags, mode: Mode) -> Result<OwnedFd> {
        open_beneath(self.roots[r.root].dir.as_fd(), &r.rel, flags, mode).map_err(|e| self.map_errno(r, e))
    }

    /// Maps an errno from an operation on `r` to an error naming the path.
    pub fn map_errno(&self, r: &Resolved, e: Errno) -> Error {
        errno_error(&self.display(r), e)
    }

    /// Lets the file tools use regular files with more than one hard link (off by default:
    /// see the module docs).
    #[must_use]
    pub fn allow_hard_links(mut self, allow: bool) -> Roots {
        self.allow_hard_links = allow;
        self
    }

    /// Whether files with more than one hard link are used.
    pub fn hard_links_allowed(&self) -> bool {
        self.allow_hard_links
    }

    /// Opens the regular file `r` for reading: never blocks in `open` (a FIFO or device is
    /// opened non-blocking, then refused), and refuses what [`regular_file`] refuses.
    ///
    /// # Errors
    /// As [`Roots::open`]; E3003 for anything but a regular file; E2008 for a hard link.
    pub fn open_file(&self, r: &Resolved) -> Result<(std::fs::File, rustix::fs::Stat)> {
        let fd = self.open(r, OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK, Mode::empty())?;
        let st = regular_file(&fd, &self.display(r), self.allow_hard_links)?;
        Ok((std::fs::File::from(fd), st))
    }
}

/// Checks that `fd` (opened with `O_NONBLOCK`) is a regular file with one link (or any number
/// when `allow_hard_links`), and clears `O_NONBLOCK` for the reads that follow.
///
/// # Errors
/// E3003 when it is not a regular file or `fstat` fails; E2008 for a file with more than one
/// hard link, which may be an inode outside every root.
pub fn regular_file(fd: impl AsFd, shown: &Path, allow_hard_links: bool) -> Result<rustix::fs::Stat> {
    let st = rustix::fs::fstat(fd.as_fd()).map_err(|e| errno_error(shown, e))?;
    let shown_s = shown.display().to_string();
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(Error::new(ErrorCode::ToolFailed, format!("{shown_s} is not a regular file"))
            .with_details(json!({ "path": shown_s })));
    }
    if st.st_nlink > 1 && !allow_hard_links {
        return Err(hard_link_refused(shown, st.st_nlink as u64));
    }
    rustix::fs::fcntl_setfl(fd.as_fd(), OFlags::empty()).map_err(|e| errno_error(shown, e))?;
    Ok(st)
}

/// E2008 for a regular file with `links` hard links.
pub fn hard_link_refused(shown: &Path, links: u64) -> Error {
    let shown_s = shown.display().to_string();
    Error::new(
        ErrorCode::PathOutsideRoots,
        format!(
            "{shown_s} has {links} hard links, and a hard link may name a file outside the roots; \
             set allow_hard_links in the config if this root's links are trusted"
        ),
    )
    .with_details(json!({ "path": shown_s, "reason": "hard link", "links": links }))
}

/// `openat2` beneath `dir`, retrying the `EAGAIN` the kernel returns on a concurrent rename.
///
/// # Errors
/// The raw errno; `EXDEV` means the path would leave `dir`.
pub fn open_beneath(dir: impl AsFd, rel: &Path, flags: OFlags, mode: Mode) -> std::result::Result<OwnedFd, Errno> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir.as_fd(), rel, flags | OFlags::CLOEXEC, mode, resolve) {
            Err(Errno::AGAIN | Errno::INTR) if tries < 8 => tries += 1,
            other => return other,
        }
    }
}

/// Maps an errno to the library's codes, naming the path.
pub fn errno_error(path: &Path, e: Errno) -> Error {
    let shown = path.display();
    let code = match e {
        Errno::XDEV => {
            return Error::new(
                ErrorCode::PathOutsideRoots,
                format!("path {shown} resolves outside the file roots (through `..` or a symlink)"),
            )
            .with_details(json!({ "path": shown.to_string(), "reason": "resolution leaves the root" }));
        }
        Errno::NOENT => ErrorCode::NotFound,
        Errno::INTR | Errno::AGAIN | Errno::BUSY => ErrorCode::ToolFailedTransient,
        _ => ErrorCode::ToolFailed,
    };
    let io = std::io::Error::from(e);
    Error::new(code, format!("{shown}: {io}"))
        .with_details(json!({ "path": shown.to_string(), "io_error": io.to_string() }))
}

/// Splits a relative path into its parent and final name, refusing `.`/`..` as the name.
///
/// # Errors
/// E1003 when the path has no file name (the root itself, or ending in `..`).
pub fn split_name(rel: &Path) -> Result<(PathBuf, &OsStr)> {
    match rel.components().next_back() {
        Some(Component::Normal(name)) => {
            let parent = rel.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            Ok((parent.to_path_buf(), name))
        }
        _ => Err(Error::new(ErrorCode::InvalidArguments, format!("path {} names no file", rel.display()))
            .with_details(json!({ "field": "path" }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> (tempfile::TempDir, Roots) {
        let d = tempfile::tempdir().expect("tempdir");
        let r = Roots::new(&[d.path()]).expect("roots");
        (d, r)
    }

    /// Proves relative, absolute-inside and `a/../b` paths resolve beneath the first root.
    #[test]
    fn resolve_accepts_paths_inside() {
        let (d, r) = roots();
        let canon = d.path().canonicalize().expect("canon");
        assert_eq!(r.resolve("a/b").map(|x| x.rel), Ok(PathBuf::from("a/b")));
        assert_eq!(r.resolve(&canon.join("x").display().to_string()).map(|x| x.rel), Ok(PathBuf::from("x")));
        assert_eq!(r.resolve(&canon.display().to_string()).map(|x| x.rel), Ok(PathBuf::from(".")));
        assert_eq!(r.resolve("a/../b").map(|x| x.rel), Ok(PathBuf::from("a/../b")));
    }

    /// Proves `..` escapes, absolute paths elsewhere, and an empty root list give E2008.
    #[test]
    fn resolve_refuses_plain_escapes() {
        let (_d, r) = roots();
        for p in ["../etc/passwd", "a/../../x", "/etc/passwd"] {
            assert_eq!(r.resolve(p).map_err(|e| e.code), Err(ErrorCode::PathOutsideRoots), "{p}");
        }
        let none = Roots::new::<&Path>(&[]).expect("empty");
        assert_eq!(none.resolve("x").map_err(|e| e.code), Err(ErrorCode::PathOutsideRoots));
    }

    /// Proves the kernel refuses a symlink that leads out of the root, while one inside works.
    #[test]
    fn open_refuses_symlink_escape() {
        let (d, r) = roots();
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "s").expect("write");
        std::fs::write(d.path().join("inside"), "i").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), d.path().join("out")).expect("symlink");
        std::os::unix::fs::symlink("inside", d.path().join("in")).expect("symlink");
        let out = r.resolve("out").expect("resolves lexically");
        assert_eq!(
            r.open(&out, OFlags::RDONLY, Mode::empty()).map(|_| ()).map_err(|e| e.code),
            Err(ErrorCode::PathOutsideRoots)
        );
        let inside = r.resolve("in").expect("resolves");
        assert!(r.open(&inside, OFlags::RDONLY, Mode::empty()).is_ok());
    }

    /// Proves a missing root is a config error naming it.
    #[test]
    fn missing_root_is_e4003() {
        let e = Roots::new(&["/definitely/not/here"]).expect_err("missing");
        assert_eq!(e.code, ErrorCode::RootUnavailable);
        assert!(e.message.contains("/definitely/not/here"));
    }
}
