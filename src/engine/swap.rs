//! File-system primitives of the restore swap: directory identity, the
//! atomic exchange (with its two-step fallback), mount-point detection, free
//! space, and making a freshly written tree durable.
//!
//! Everything that changes the file system acts on names inside a parent
//! directory's descriptor (`renameat2`, `mkdirat`, `unlinkat`, `syncfs` of
//! a descriptor), never on a path string that could be re-resolved through
//! a symlink swapped in meanwhile.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, RenameFlags, StatxFlags};
use serde::{Deserialize, Serialize};

/// Identity of a directory: (device, inode). A rename keeps it, so the
/// recovery sweep can tell from the file system which data lies where.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// The identity of `path` (not following a final symlink), or `None` when
/// nothing is there.
pub fn dir_id(path: &Path) -> io::Result<Option<DirId>> {
    match rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Ok(st) => Ok(Some(DirId { dev: st.st_dev as u64, ino: st.st_ino as u64 })),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The identity of the entry `name` in `dir` (not following a symlink), or
/// `None` when nothing is there.
pub fn dir_id_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<DirId>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Ok(st) => Ok(Some(DirId { dev: st.st_dev as u64, ino: st.st_ino as u64 })),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// How a swap was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapMethod {
    /// `renameat2(RENAME_EXCHANGE)`: one atomic step.
    Exchange,
    /// `rename(target, aside)` then `rename(new, target)`: journaled.
    TwoStep,
}

/// Atomically exchanges the entries `a` and `b` of `dir`. `Unsupported`
/// when the file system has no `RENAME_EXCHANGE`.
pub fn exchange_at(dir: BorrowedFd<'_>, a: &OsStr, b: &OsStr) -> io::Result<()> {
    match rustix::fs::renameat_with(dir, a, dir, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP) => {
            Err(io::Error::new(io::ErrorKind::Unsupported, "RENAME_EXCHANGE is not supported here"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Renames the entry `from` of `dir` to `to`, failing if `to` exists.
pub fn rename_noreplace_at(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> io::Result<()> {
    match rustix::fs::renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // File systems without RENAME_NOREPLACE: check, then rename. The
        // directory is under the restore's lock, so the window is ours.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP) => {
            if dir_id_at(dir, to)?.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", std::path::Path::new(to).display()),
                ));
            }
            Ok(rustix::fs::renameat(dir, from, dir, to)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Renames the entry `from` of `dir` over `to`, which may be an empty
/// directory (`rename(2)` replaces it).
pub fn rename_replace_at(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::renameat(dir, from, dir, to)?)
}

/// Creates the directory `name` in `dir`, private (0700) until its content
/// sets the final mode.
pub fn mkdir_private_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?)
}

/// Whether `path` is the root of a mount (it then cannot be renamed).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let stx = rustix::fs::statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BASIC_STATS)?;
    let attr = rustix::fs::StatxAttributes::MOUNT_ROOT;
    if stx.stx_attributes_mask.contains(attr) {
        return Ok(stx.stx_attributes.contains(attr));
    }
    // Older kernels: a different device than the parent's is a mount root
    // (bind mounts of the same device are not detected this way).
    let parent = path.parent().unwrap_or(Path::new("/"));
    let pst = rustix::fs::statx(CWD, parent, AtFlags::empty(), StatxFlags::BASIC_STATS)?;
    Ok((stx.stx_dev_major, stx.stx_dev_minor) != (pst.stx_dev_major, pst.stx_dev_minor))
}

/// Bytes available to an unprivileged writer on the file system of `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Makes everything written under the directory `name` of `dir` durable
/// with one `syncfs` of its file system (cheaper than an fsync per file),
/// then fsyncs `dir` so the entry itself is durable.
pub fn sync_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let fd = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
    rustix::fs::syncfs(&fd)?;
    Ok(rustix::fs::fsync(dir)?)
}

/// Removes the tree at the entry `name` of `dir`, if present, then fsyncs
/// `dir`. Never follows a symlink: a symlink is unlinked as a link, and
/// every directory is opened `O_NOFOLLOW` from its parent's descriptor.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            let fd = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
            empty_dir(fd)?;
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
        }
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty())?,
    }
    Ok(rustix::fs::fsync(dir)?)
}

/// Removes everything inside the directory `fd`, depth first, through
/// descriptors (one per level of the tree, like std's `remove_dir_all`).
fn empty_dir(fd: OwnedFd) -> io::Result<()> {
    let mut names = Vec::new();
    let mut listing = Dir::read_from(&fd)?;
    while let Some(entry) = listing.read() {
        let entry = entry?;
        let n = entry.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push((n.to_owned(), entry.file_type()));
        }
    }
    for (n, ft) in names {
        remove_entry(fd.as_fd(), &n, ft)?;
    }
    Ok(())
}

fn remove_entry(dir: BorrowedFd<'_>, name: &CStr, ft: FileType) -> io::Result<()> {
    let is_dir = match ft {
        FileType::Unknown => {
            FileType::from_raw_mode(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?.st_mode)
                == FileType::Directory
        }
        other => other == FileType::Directory,
    };
    if is_dir {
        empty_dir(rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?)?;
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(())
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
