//! Where a restore acts: the parent directory of a target, opened beneath a
//! trusted root with no symlink followed, and the entries in it (the target,
//! its staging directory, the aside directory of a two-step swap).
//!
//! # Security
//!
//! A restore runs for minutes (extraction) between its pre-flight checks and
//! its swap, and its journal may be finished by a later process. Every step
//! therefore reaches its entries by name through the parent's descriptor
//! ([`Site`]), never by re-resolving the journaled path strings: a parent
//! replaced by a symlink after the check cannot redirect a `mkdir`, an
//! extraction, a rename or a removal to somewhere outside the allowed roots.
//! When a site is opened again (a later step, the recovery sweep), it must
//! be the directory the pre-flight checked (same inode), or nothing is done.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use super::beneath::{OpenDir, TrustedRoot};
use super::paths::PathPolicy;
use super::swap::{self, DirId};

/// The directories a restore may act beneath: the allowed roots (opened at
/// start-up) and, when a runtime manages volumes, its volume root (Docker's
/// `<data-root>/volumes`).
#[derive(Clone, Debug)]
pub struct Roots {
    /// Allowed roots and denylist.
    pub policy: PathPolicy,
    /// The workload runtime's volume root, if any.
    pub runtime_root: Option<PathBuf>,
}

impl Roots {
    /// Opens the directory `dir` (absolute) beneath the trusted root it lies
    /// in, with no symlink followed.
    pub fn open(&self, dir: &Path) -> io::Result<OpenDir> {
        if let Some(root) = self.policy.root_of(dir) {
            return root.open_dir(dir);
        }
        if let Some(runtime_root) = self.runtime_root.as_deref().filter(|r| dir.starts_with(r)) {
            return TrustedRoot::open(runtime_root)?.open_dir(dir);
        }
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not beneath an allowed root", dir.display()),
        ))
    }
}

/// A parent directory and the entries a restore works on inside it.
#[derive(Debug)]
pub struct Site {
    dir: OpenDir,
    path: PathBuf,
}

impl Site {
    /// Opens `path` beneath `roots`. `expected` is the identity the
    /// pre-flight saw; a different directory there now is refused.
    pub fn open(roots: &Roots, path: &Path, expected: Option<DirId>) -> io::Result<Site> {
        let dir = roots.open(path)?;
        if let Some(expected) = expected
            && dir.id()?.ino != expected.ino
        {
            return Err(io::Error::other(format!(
                "{} is not the directory that was checked when the restore was planned (it was replaced since); nothing was done there",
                path.display()
            )));
        }
        Ok(Site { dir, path: path.to_path_buf() })
    }

    /// A site at a directory opened by the caller (tests, volsnap's own
    /// directories).
    pub fn from_dir(dir: OpenDir, path: &Path) -> Site {
        Site { dir, path: path.to_path_buf() }
    }

    /// The parent directory's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parent directory.
    pub fn dir(&self) -> &OpenDir {
        &self.dir
    }

    /// The name of `entry` in this directory. Journaled plans hold paths;
    /// each must be a direct child of the site.
    fn name<'p>(&self, entry: &'p Path) -> io::Result<&'p OsStr> {
        match (entry.parent(), entry.file_name()) {
            (Some(parent), Some(name)) if parent == self.path => Ok(name),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not an entry of {}", entry.display(), self.path.display()),
            )),
        }
    }

    /// Identity of `entry`, `None` when absent.
    pub fn id(&self, entry: &Path) -> io::Result<Option<DirId>> {
        swap::dir_id_at(self.dir.fd(), self.name(entry)?)
    }

    /// `renameat2(RENAME_EXCHANGE)` of two entries.
    pub fn exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        swap::exchange_at(self.dir.fd(), self.name(a)?, self.name(b)?)
    }

    /// Renames `from` to `to`, failing if `to` exists.
    pub fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        swap::rename_noreplace_at(self.dir.fd(), self.name(from)?, self.name(to)?)
    }

    /// Renames `from` over `to`, which may be an empty directory.
    pub fn rename_replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        swap::rename_replace_at(self.dir.fd(), self.name(from)?, self.name(to)?)
    }

    /// Creates `entry` as a private (0700) directory.
    pub fn mkdir_private(&self, entry: &Path) -> io::Result<()> {
        swap::mkdir_private_at(self.dir.fd(), self.name(entry)?)
    }

    /// Removes the tree at `entry`, if present, durably.
    pub fn remove_tree(&self, entry: &Path) -> io::Result<()> {
        swap::remove_tree_at(self.dir.fd(), self.name(entry)?)
    }

    /// Makes the tree at `entry` durable (one `syncfs`), and its entry.
    pub fn sync_tree(&self, entry: &Path) -> io::Result<()> {
        swap::sync_tree_at(self.dir.fd(), self.name(entry)?)
    }

    /// Opens the directory `entry` (not following a symlink).
    pub fn open_dir(&self, entry: &Path) -> io::Result<OpenDir> {
        self.dir.open_child(self.name(entry)?)
    }

    /// fsyncs the directory, making renames in it durable.
    pub fn fsync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(self.dir.fd())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_reached_through_the_opened_directory_not_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(top.join("root/app")).unwrap();
        std::fs::create_dir_all(top.join("outside")).unwrap();
        let policy = PathPolicy::new(&[top.join("root")], &[]).unwrap();
        let roots = Roots { policy, runtime_root: None };
        let app = top.join("root/app");
        let id = swap::dir_id(&app).unwrap();
        let site = Site::open(&roots, &app, id).unwrap();
        // The parent is swapped for a symlink to a directory outside.
        std::fs::rename(&app, top.join("root/app-moved")).unwrap();
        std::os::unix::fs::symlink(top.join("outside"), &app).unwrap();
        site.mkdir_private(&app.join(".staging")).unwrap();
        assert!(top.join("root/app-moved/.staging").is_dir());
        assert!(!top.join("outside/.staging").exists(), "nothing is written through the swapped-in symlink");
        // Opening it again now fails: a symlink in the path.
        assert!(Site::open(&roots, &app, id).is_err());
        // A different real directory at the path is refused too.
        std::fs::remove_file(&app).unwrap();
        std::fs::create_dir(&app).unwrap();
        let e = Site::open(&roots, &app, id).unwrap_err();
        assert!(e.to_string().contains("replaced since"), "{e}");
        assert!(site.name(&top.join("elsewhere/x")).is_err(), "only direct children");
    }

    #[test]
    fn paths_outside_the_roots_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(top.join("root")).unwrap();
        let roots = Roots { policy: PathPolicy::new(&[top.join("root")], &[]).unwrap(), runtime_root: None };
        assert_eq!(roots.open(&top).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    }
}
