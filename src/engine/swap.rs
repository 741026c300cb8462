//! File-system primitives of the restore swap: directory identity, the
//! atomic exchange (with its two-step fallback), mount-point detection, free
//! space, and making a freshly written tree durable.

use std::io;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, RenameFlags, StatxFlags};
use serde::{Deserialize, Serialize};

use super::fsutil;

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

/// How a swap was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapMethod {
    /// `renameat2(RENAME_EXCHANGE)`: one atomic step.
    Exchange,
    /// `rename(target, aside)` then `rename(new, target)`: journaled.
    TwoStep,
}

/// Atomically exchanges the directories `a` and `b`. `Unsupported` when the
/// file system has no `RENAME_EXCHANGE`.
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    match rustix::fs::renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP) => {
            Err(io::Error::new(io::ErrorKind::Unsupported, "RENAME_EXCHANGE is not supported here"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Renames `from` to `to`, failing if `to` exists.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // File systems without RENAME_NOREPLACE: check, then rename. The
        // directory is under the restore's lock, so the window is ours.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP) => {
            if dir_id(to)?.is_some() {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", to.display())));
            }
            std::fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
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

/// Makes everything written under `dir` durable with one `syncfs` of its
/// file system (cheaper than an fsync per file), then fsyncs its parent so
/// the directory entry itself is durable.
pub fn sync_tree(dir: &Path) -> io::Result<()> {
    let fd =
        rustix::fs::open(dir, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty())?;
    rustix::fs::syncfs(&fd)?;
    if let Some(parent) = dir.parent() {
        fsutil::fsync_dir(parent)?;
    }
    Ok(())
}

/// Removes a directory tree if present (never following symlinks: std's
/// `remove_dir_all` is safe against symlink races since Rust 1.58.1).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent() {
        fsutil::fsync_dir(parent)?;
    }
    Ok(())
}
