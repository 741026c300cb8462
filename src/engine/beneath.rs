//! Opening directories beneath a trusted directory descriptor.
//!
//! # Security
//!
//! Paths named by an object (a manifest, a container's mounts, a restore's
//! `targetPath`) are untrusted: whoever can write beneath an allowed root can
//! replace any directory there with a symlink at any moment, for example
//! between the check "is this under an allowed root?" and the `open` that
//! follows. Checking a path string and then opening the string again is
//! therefore never enough.
//!
//! Everything volsnap reads, writes, renames or deletes on behalf of an
//! object is reached from a [`TrustedRoot`] (an allowed root, Docker's volume
//! root) opened once, downwards, with no symlink followed in any component:
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
//! where the kernel has it (Linux 5.6+), otherwise one component at a time
//! with `openat(O_DIRECTORY | O_NOFOLLOW)`. The resulting [`OpenDir`] is the
//! handle later work acts through (`openat`, `mkdirat`, `renameat2`,
//! `unlinkat`), so a path that changes afterwards cannot redirect it.
//!
//! What remains, and why it is harmless: a directory volsnap holds open can
//! still be renamed by whoever owns its parent. volsnap then keeps working in
//! that same directory (which the renaming user already controlled); it never
//! follows the name to somewhere else.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::swap::DirId;

/// Flags every directory is opened with: never through a final symlink,
/// never blocking, never inherited by children.
const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// A directory volsnap trusts (configured by the operator, or Docker's own),
/// opened once; untrusted paths are resolved beneath it.
#[derive(Clone, Debug)]
pub struct TrustedRoot {
    /// Its canonical path, to tell which paths lie beneath it.
    path: PathBuf,
    /// The descriptor paths are resolved from.
    dir: OpenDir,
}

impl TrustedRoot {
    /// Opens a trusted directory by its canonical path. The path itself is
    /// configuration (an `--allowed-root`, Docker's data root), not input
    /// from an object.
    pub fn open(canonical: &Path) -> io::Result<TrustedRoot> {
        let fd = rustix::fs::open(canonical, DIR_FLAGS, Mode::empty())?;
        Ok(TrustedRoot { path: canonical.to_path_buf(), dir: OpenDir::from_fd(fd) })
    }

    /// The canonical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `path` names this directory or something beneath it.
    pub fn contains(&self, path: &Path) -> bool {
        path.starts_with(&self.path)
    }

    /// Opens the directory `path` (absolute, beneath this root) without
    /// following a symlink in any component below the root.
    pub fn open_dir(&self, path: &Path) -> io::Result<OpenDir> {
        let rel = path.strip_prefix(&self.path).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not beneath {}", path.display(), self.path.display()),
            )
        })?;
        open_dir_beneath(self.dir.fd(), rel).map(OpenDir::from_fd).map_err(|e| explain(path, e))
    }
}

impl TrustedRoot {
    /// Opens a directory that was checked by its path a moment ago, and
    /// verifies that what was opened is what the path named then (device
    /// and inode): a component swapped meanwhile for a symlink fails the
    /// open, one swapped for another directory fails the comparison.
    pub fn open_checked(&self, canonical: &Path) -> io::Result<OpenDir> {
        let before = super::swap::dir_id(canonical)?;
        let dir = self.open_dir(canonical)?;
        if before != Some(dir.id()?) {
            return Err(io::Error::other(format!(
                "{} changed while it was being checked (a directory in its path was replaced)",
                canonical.display()
            )));
        }
        Ok(dir)
    }
}

/// A directory opened through a trusted descriptor; clones share the
/// descriptor. Work on its contents goes through [`OpenDir::fd`].
#[derive(Clone, Debug)]
pub struct OpenDir(Arc<OwnedFd>);

impl OpenDir {
    /// Wraps a directory descriptor.
    pub fn from_fd(fd: OwnedFd) -> OpenDir {
        OpenDir(Arc::new(fd))
    }

    /// Opens a directory volsnap trusts by its path (its own state, a test's
    /// temporary directory), refusing only a final symlink. Never for a
    /// path named by an object: use [`TrustedRoot::open_dir`].
    pub fn open_trusted(path: &Path) -> io::Result<OpenDir> {
        Ok(OpenDir::from_fd(rustix::fs::open(path, DIR_FLAGS, Mode::empty())?))
    }

    /// Opens the sub-directory `name` (one component, not followed if it is
    /// a symlink).
    pub fn open_child(&self, name: &OsStr) -> io::Result<OpenDir> {
        check_component(name)?;
        Ok(OpenDir::from_fd(rustix::fs::openat(self.fd(), name, DIR_FLAGS, Mode::empty())?))
    }

    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// A new descriptor for the same directory, with its own read position
    /// (a directory listing consumes the descriptor it reads).
    pub fn reopen(&self) -> io::Result<OwnedFd> {
        Ok(rustix::fs::openat(self.fd(), ".", DIR_FLAGS, Mode::empty())?)
    }

    /// Device and inode of the directory.
    pub fn id(&self) -> io::Result<DirId> {
        let st = rustix::fs::fstat(self.fd())?;
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Ok(DirId { dev: st.st_dev as u64, ino: st.st_ino as u64 })
    }
}

impl PartialEq for OpenDir {
    /// The same directory: same device and inode.
    fn eq(&self, other: &OpenDir) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || matches!((self.id(), other.id()), (Ok(a), Ok(b)) if a == b)
    }
}

/// Opens the directory `rel` beneath `dir`: every component a real
/// directory, no symlink followed, nothing outside `dir` reachable. An empty
/// `rel` opens `dir` itself.
pub fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} has a component other than a plain name", rel.display()),
                ));
            }
        }
    }
    if parts.is_empty() {
        return Ok(rustix::fs::openat(dir, ".", DIR_FLAGS, Mode::empty())?);
    }
    let joined: PathBuf = parts.iter().collect();
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(dir, &joined, DIR_FLAGS, Mode::empty(), resolve) {
        Ok(fd) => Ok(fd),
        // Kernels before 5.6 (or a seccomp filter that hides openat2): one
        // component at a time, each opened O_NOFOLLOW from its parent.
        Err(rustix::io::Errno::NOSYS) => open_by_components(dir, &parts),
        Err(e) => Err(e.into()),
    }
}

fn open_by_components(dir: BorrowedFd<'_>, parts: &[&OsStr]) -> io::Result<OwnedFd> {
    let mut cur = rustix::fs::openat(dir, ".", DIR_FLAGS, Mode::empty())?;
    for p in parts {
        cur = rustix::fs::openat(&cur, *p, DIR_FLAGS, Mode::empty())?;
    }
    Ok(cur)
}

/// A single, plain path component: not empty, `.`, `..`, and without `/`.
pub fn check_component(name: &OsStr) -> io::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a plain file name")));
    }
    Ok(())
}

/// Says in words what `ELOOP`/`ENOTDIR`/`EXDEV` mean here.
fn explain(path: &Path, e: io::Error) -> io::Error {
    let why = match e.raw_os_error() {
        Some(libc::ELOOP) => "a component of the path is a symbolic link (or was just replaced by one)",
        Some(libc::EXDEV) => "the path leads outside its trusted root",
        Some(libc::ENOTDIR) => "a component of the path is not a directory (or is a symbolic link)",
        _ => return e,
    };
    io::Error::new(e.kind(), format!("{}: {why}; it is not followed", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_in_any_component_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root_path = tmp.path().canonicalize().unwrap().join("root");
        std::fs::create_dir_all(root_path.join("a/b")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside/b")).unwrap();
        symlink(tmp.path().join("outside"), root_path.join("link")).unwrap();
        symlink(root_path.join("a"), root_path.join("inner-link")).unwrap();
        let root = TrustedRoot::open(&root_path).unwrap();
        assert!(root.open_dir(&root_path.join("a/b")).is_ok());
        assert!(root.open_dir(&root_path).is_ok());
        for bad in ["link/b", "link", "inner-link/b", "a/../../outside"] {
            let e = root.open_dir(&root_path.join(bad)).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("is not followed") || e.kind() == io::ErrorKind::InvalidInput, "{bad}: {e}");
        }
        assert!(root.open_dir(&tmp.path().join("outside")).is_err());
    }

    #[test]
    fn component_fallback_refuses_symlinks_too() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        symlink(tmp.path().join("a"), tmp.path().join("l")).unwrap();
        let top = OpenDir::open_trusted(tmp.path()).unwrap();
        assert!(open_by_components(top.fd(), &[OsStr::new("a"), OsStr::new("b")]).is_ok());
        let e = open_by_components(top.fd(), &[OsStr::new("l"), OsStr::new("b")]).unwrap_err();
        assert!(matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)), "{e}");
    }

    #[test]
    fn open_dirs_compare_by_identity() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("a")).unwrap();
        let a1 = OpenDir::open_trusted(&tmp.path().join("a")).unwrap();
        let a2 = OpenDir::open_trusted(&tmp.path().join("a")).unwrap();
        let top = OpenDir::open_trusted(tmp.path()).unwrap();
        assert_eq!(a1, a2);
        assert_ne!(a1, top);
        assert_eq!(top.open_child(OsStr::new("a")).unwrap(), a1);
        assert!(top.open_child(OsStr::new("..")).is_err());
    }
}
