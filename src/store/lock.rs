//! One process owns a state directory and an archives directory at a time:
//! exclusive `flock`s, released by the kernel when the process dies (even by
//! SIGKILL). Two processes sharing an archives directory would each
//! quarantine the other's archives as orphans at start-up.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{Store, StoreError};

/// The locks, held while this value lives.
#[derive(Debug)]
pub struct Ownership {
    _state: File,
    _archives: File,
}

/// Why a lock was not taken.
enum LockFailure {
    Held,
    File(PathBuf, std::io::Error),
}

impl Store {
    /// Takes the state directory (`<state>/volsnap.lock`) and the archives
    /// directory (a lock on the directory itself, so no file is added to
    /// it) for this process, or says which one another process holds.
    pub fn take_ownership(&self, state_dir: &Path) -> Result<Ownership, StoreError> {
        let failed = |f: LockFailure, held: StoreError| match f {
            LockFailure::Held => held,
            LockFailure::File(path, source) => StoreError::LockFile { path, source },
        };
        let state = lock_file_in(state_dir, "volsnap.lock")
            .map_err(|f| failed(f, StoreError::StateLocked(state_dir.to_path_buf())))?;
        let archives = lock_directory(&self.archives_dir)
            .map_err(|f| failed(f, StoreError::ArchivesLocked(self.archives_dir.clone())))?;
        Ok(Ownership { _state: state, _archives: archives })
    }
}

fn lock_file_in(dir: &Path, name: &str) -> Result<File, LockFailure> {
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

fn lock_directory(dir: &Path) -> Result<File, LockFailure> {
    let file = File::open(dir).map_err(|e| LockFailure::File(dir.to_path_buf(), e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| LockFailure::Held)?;
    Ok(file)
}

/// Whether a running process (a daemon) owns the state directory now.
pub fn state_owned(state_dir: &Path) -> bool {
    state_dir.join("volsnap.lock").exists() && matches!(lock_file_in(state_dir, "volsnap.lock"), Err(LockFailure::Held))
}
