//! File-system primitives of the restore swap: directory identity, the
//! atomic exchange (with its two-step fallback), mount-point detection, free
//! space, and making a freshly written tree durable.
//!
//! Everything that changes the file system acts on names inside a parent
//! directory's descriptor (`renameat2`, `mkdirat`, `unlinkat`, `syncfs` of
//! a descriptor), never on a path string that could be re-resolved through
//! a symlink swapped in meanwhile.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

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
                    format!("{} exists", Path::new(to).display()),
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
///
/// Files are unlinked by [`UNLINK_THREADS`] threads (see there why), then
/// the directories, now empty, are removed depth first.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            let fd = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
            unlink_files(fd.try_clone()?)?;
            empty_dir(fd)?;
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
        }
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty())?,
    }
    Ok(rustix::fs::fsync(dir)?)
}

/// Threads that unlink the files of a tree being removed (the replaced data
/// after a restore, a staging directory). Removal is bound by the device's
/// latency, not the CPU: on a file system mounted with `discard` (ext4
/// `-o discard`, common on cloud disks and SSDs), every unlink of a file
/// with data waits for a synchronous discard of its blocks (about 0.6 ms on
/// a virtio disk), so 20,000 small files take 12 s one after the other and
/// about 1 s with 32 unlinks in flight. The threads mostly sleep in the
/// kernel; each has a small stack.
pub const UNLINK_THREADS: usize = 32;
/// Stack of an unlink thread: it only loops over `unlinkat`.
const UNLINK_STACK: usize = 64 * 1024;
/// Files handed to the unlink threads ahead of them.
const UNLINK_QUEUE: usize = 1024;

type UnlinkJob = (Arc<OwnedFd>, CString);

/// Unlinks every entry that is not a directory anywhere below the directory
/// `fd` (its directories stay, to be removed by [`empty_dir`]), on
/// [`UNLINK_THREADS`] threads. One thread walks the tree (directories opened
/// `O_NOFOLLOW` from their parent's descriptor) and hands out (directory
/// descriptor, name) pairs; nothing is resolved by path. The first error
/// stops the walk and is returned once every thread has stopped.
fn unlink_files(fd: OwnedFd) -> io::Result<()> {
    let failed: Mutex<Option<io::Error>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let (tx, rx) = sync_channel::<UnlinkJob>(UNLINK_QUEUE);
    let rx = Mutex::new(rx);
    let walked = std::thread::scope(|scope| -> io::Result<()> {
        let (rx, stop, failed) = (&rx, &stop, &failed);
        for _ in 0..UNLINK_THREADS {
            let worker = move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((dir, name)) = job else { return };
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    match rustix::fs::unlinkat(&*dir, name.as_c_str(), AtFlags::empty()) {
                        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e.into());
                            }
                        }
                    }
                }
            };
            if let Err(e) = std::thread::Builder::new().stack_size(UNLINK_STACK).spawn_scoped(scope, worker) {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        let walked = send_files(Arc::new(fd), &tx, stop);
        if walked.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        drop(tx);
        walked
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    walked
}

/// The walk of [`unlink_files`]: hands out every non-directory entry of
/// `dir`, then goes into its subdirectories.
fn send_files(dir: Arc<OwnedFd>, tx: &SyncSender<UnlinkJob>, stop: &AtomicBool) -> io::Result<()> {
    let mut subdirs = Vec::new();
    let mut listing = Dir::read_from(&*dir)?;
    while let Some(entry) = listing.read() {
        let entry = entry?;
        let n = entry.file_name();
        if n.to_bytes() == b"." || n.to_bytes() == b".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Unknown => {
                FileType::from_raw_mode(rustix::fs::statat(&*dir, n, AtFlags::SYMLINK_NOFOLLOW)?.st_mode)
                    == FileType::Directory
            }
            other => other == FileType::Directory,
        };
        if is_dir {
            subdirs.push(n.to_owned());
        } else if stop.load(Ordering::Relaxed) || tx.send((dir.clone(), n.to_owned())).is_err() {
            return Ok(());
        }
    }
    drop(listing);
    for n in subdirs {
        let sub = rustix::fs::openat(&*dir, n.as_c_str(), DIR_FLAGS, Mode::empty())?;
        send_files(Arc::new(sub), tx, stop)?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn remove_tree_removes_everything_on_many_threads_and_follows_no_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path();
        let outside = top.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"precious").unwrap();
        let tree = top.join("tree");
        // More files than the threads and the queue hold, in nested
        // directories, with links to the outside at every level.
        for d in 0..6 {
            let dir = tree.join(format!("d{d}")).join("sub").join(format!("e{d}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..(UNLINK_QUEUE / 2) {
                std::fs::write(dir.join(format!("f{f}")), b"x").unwrap();
            }
            symlink(&outside, dir.join("to-outside")).unwrap();
            symlink(outside.join("keep"), tree.join(format!("d{d}")).join("keep-link")).unwrap();
            std::fs::hard_link(dir.join("f0"), tree.join(format!("d{d}/hard"))).unwrap();
        }
        std::fs::create_dir(tree.join("empty")).unwrap();
        let parent = rustix::fs::open(top, DIR_FLAGS, Mode::empty()).unwrap();
        remove_tree_at(parent.as_fd(), OsStr::new("tree")).unwrap();
        assert!(!tree.exists(), "the tree is gone");
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"precious", "nothing behind a symlink is touched");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        // Absent: nothing to do. A plain file: unlinked.
        remove_tree_at(parent.as_fd(), OsStr::new("tree")).unwrap();
        std::fs::write(top.join("file"), b"f").unwrap();
        remove_tree_at(parent.as_fd(), OsStr::new("file")).unwrap();
        assert!(!top.join("file").exists());
    }
}
