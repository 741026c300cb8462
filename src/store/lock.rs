//! One process owns a state directory and an archives directory at a time:
//! exclusive `flock`s, released by the kernel when the process dies (even by
//! SIGKILL).

use std::fs::File;
use std::path::{Path, PathBuf};

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockFailure {
    /// Another process holds it.
    Held,
    /// The lock file could not be created (or the directory opened).
    File(PathBuf, std::io::Error),
}

/// Takes an exclusive lock on `<dir>/<name>`, held as long as the returned
/// file is open.
pub fn lock_file_in(dir: &Path, name: &str) -> Result<File, LockFailure> {
    let path = dir.join(name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LockFailure::File(path.clone(), e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| LockFailure::Held)?;
    Ok(file)
}

/// Takes an exclusive lock on the directory itself (a descriptor of the
/// directory, so no lock file is added to it), held while it is open.
pub fn lock_directory(dir: &Path) -> Result<File, LockFailure> {
    let file = File::open(dir).map_err(|e| LockFailure::File(dir.to_path_buf(), e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| LockFailure::Held)?;
    Ok(file)
}
