//! A bounded directory walk beneath a root that never follows a symlink.
//!
//! Directories are opened by descriptor, each child relative to its parent with
//! `RESOLVE_BENEATH` and `O_NOFOLLOW`, so a directory swapped for a symlink mid-walk is not
//! entered. Symlinks are reported as entries of kind `symlink`, never followed.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use serde::Serialize;

use super::Roots;
use super::confine::{Resolved, errno_error, open_beneath};
use crate::error::Result;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// Anything else (socket, device, fifo).
    Other,
}

/// One entry met by the walk.
#[derive(Debug)]
pub struct Entry<'a> {
    /// The directory holding it.
    pub dir: &'a OwnedFd,
    /// Its name in that directory.
    pub name: &'a OsStr,
    /// Its path relative to the root.
    pub rel: PathBuf,
    /// Its kind.
    pub kind: Kind,
    /// Depth below the starting directory (1 for its children).
    pub depth: usize,
}

/// How far to walk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest level to descend to (1 = the directory's own entries).
    pub max_depth: usize,
    /// Whether to list names starting with `.`.
    pub include_hidden: bool,
}

/// What the visitor wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep walking.
    Continue,
    /// Stop the whole walk.
    Stop,
}

/// Walks `start` (a directory beneath its root), calling `visit` for each entry in name order.
///
/// # Errors
/// Errors opening `start` (E2008, E3006, E3003); unreadable subdirectories are skipped.
pub fn walk(
    roots: &Roots,
    start: &Resolved,
    limits: Limits,
    visit: &mut dyn FnMut(&Entry<'_>) -> Result<Flow>,
) -> Result<()> {
    let fd = roots.open(start, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
    let base = if start.rel == Path::new(".") { PathBuf::new() } else { start.rel.clone() };
    walk_dir(&fd, &base, 1, limits, visit).map(|_| ()).map_err(|e| match e {
        WalkError::Open(errno) => errno_error(&roots.display(start), errno),
        WalkError::Visitor(e) => e,
    })
}

enum WalkError {
    Open(rustix::io::Errno),
    Visitor(crate::error::Error),
}

fn walk_dir(
    fd: &OwnedFd,
    rel: &Path,
    depth: usize,
    limits: Limits,
    visit: &mut dyn FnMut(&Entry<'_>) -> Result<Flow>,
) -> std::result::Result<Flow, WalkError> {
    let dir = Dir::read_from(fd.as_fd()).map_err(WalkError::Open)?;
    let mut names: Vec<(Vec<u8>, FileType)> = dir
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_bytes().to_vec(), e.file_type()))
        .filter(|(n, _)| n != b"." && n != b"..")
        .filter(|(n, _)| limits.include_hidden || !n.starts_with(b"."))
        .collect();
    names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (name, ft) in names {
        let name = OsStr::from_bytes(&name);
        let ft = if ft == FileType::Unknown {
            rustix::fs::statat(fd.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)
                .map_or(FileType::Unknown, |st| FileType::from_raw_mode(st.st_mode))
        } else {
            ft
        };
        let kind = match ft {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        };
        let entry = Entry { dir: fd, name, rel: rel.join(name), kind, depth };
        if visit(&entry).map_err(WalkError::Visitor)? == Flow::Stop {
            return Ok(Flow::Stop);
        }
        if kind == Kind::Dir && depth < limits.max_depth {
            let Ok(child) = open_beneath(
                fd.as_fd(),
                Path::new(name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                Mode::empty(),
            ) else {
                continue;
            };
            if walk_dir(&child, &entry.rel, depth + 1, limits, visit)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
    }
    Ok(Flow::Continue)
}
