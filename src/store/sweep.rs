//! The start-up orphan sweep of the archives directory (rules in the module
//! doc of [`crate::store`]).

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{CHECKSUM_SUFFIX, TEMP_SUFFIX, fsutil};
use super::{QUARANTINE_DIR, Store, StoreError, SweepReport, paths};

/// Suffixes of final archive files.
const ARCHIVE_SUFFIXES: &[&str] = &[".tar.gz", ".tar.zst"];

/// A regular file found under the archives directory.
struct Found {
    abs: PathBuf,
    rel: String,
}

impl Store {
    /// Removes the temporary archives (`*.partial`) that interrupted
    /// captures left. Runs at start-up before the restore recovery sweep,
    /// which may have to write a pre-restore archive where an interrupted
    /// attempt left its temporary file. Returns what was removed.
    pub fn remove_temporaries(&self) -> Result<Vec<PathBuf>, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly { op: "sweep the archives directory" });
        }
        let root = self.archives_dir.clone();
        let mut files = Vec::new();
        walk(&root, &root, "", &mut files)?;
        let mut removed = Vec::new();
        let mut touched_dirs: BTreeSet<PathBuf> = BTreeSet::new();
        for f in files.iter().filter(|f| f.rel.ends_with(TEMP_SUFFIX)) {
            remove_if_present(&f.abs, "remove temporary archive")?;
            touch_parent(&mut touched_dirs, &f.abs);
            removed.push(f.abs.clone());
        }
        fsync_dirs(&touched_dirs)?;
        Ok(removed)
    }

    /// Reconciles the archives directory with the `archives` table; run at
    /// daemon start-up before any reconcile. Removes temporary archives,
    /// quarantines unknown archive files (with their checksum files) under
    /// `<archives>/_orphaned/`, removes checksum files whose archive is
    /// gone, and reports records whose file is missing or whose stored path
    /// is refused by the containment check (such paths are never touched).
    /// Symbolic links are not followed and other files are left alone.
    pub fn sweep_orphans(&self) -> Result<SweepReport, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly { op: "sweep the archives directory" });
        }
        // 1. Temporary archives.
        let mut report = SweepReport { removed_temp: self.remove_temporaries()?, ..Default::default() };
        let root = self.archives_dir.clone();
        let records = self.archives()?;
        let known: HashSet<&str> = records.iter().map(|r| r.rel_path.as_str()).collect();

        let mut files = Vec::new();
        walk(&root, &root, "", &mut files)?;
        let mut touched_dirs: BTreeSet<PathBuf> = BTreeSet::new();

        // 2. Archive files no record knows: quarantine.
        for f in files.iter().filter(|f| is_archive_name(&f.rel) && !known.contains(f.rel.as_str())) {
            let dest = quarantine(&root, f, &mut touched_dirs)?;
            tracing::warn!(
                from = %f.abs.display(),
                to = %dest.display(),
                "archive file unknown to the state database moved to quarantine (not deleted); \
                 adopt it with source.archive or delete it by hand"
            );
            report.quarantined.push(dest);
        }

        // 3. Checksum files whose archive is gone.
        for f in files.iter().filter(|f| f.rel.ends_with(CHECKSUM_SUFFIX)) {
            let Some(archive_rel) = f.rel.strip_suffix(CHECKSUM_SUFFIX) else { continue };
            let archive = root.join(archive_rel);
            match fs::symlink_metadata(&archive) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io { op: "inspect archive", path: archive, source: e }),
            }
            if remove_if_present(&f.abs, "remove stale checksum file")? {
                tracing::info!(path = %f.abs.display(), "removed checksum file whose archive is gone");
                touch_parent(&mut touched_dirs, &f.abs);
            }
        }

        fsync_dirs(&touched_dirs)?;

        // 4. Records whose file is missing (or whose path is refused).
        for rec in records {
            match self.archive_abs_path(&rec.rel_path) {
                Ok(path) => match fs::symlink_metadata(&path) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        tracing::warn!(
                            snapshot = %format!("{}/{}", rec.namespace, rec.name),
                            path = %path.display(),
                            "archive file of a recorded snapshot is missing"
                        );
                        report.missing.push(rec);
                    }
                    Err(e) => return Err(StoreError::Io { op: "inspect archive", path, source: e }),
                },
                Err(e @ StoreError::PathEscapes { .. }) => {
                    tracing::error!(
                        snapshot = %format!("{}/{}", rec.namespace, rec.name),
                        error = %e,
                        "archive record refused by the containment check; treating the archive as missing"
                    );
                    report.refused.push((rec.snapshot_uid.clone(), e.to_string()));
                    report.missing.push(rec);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}

/// fsyncs every directory whose entries changed, making the changes durable.
fn fsync_dirs(dirs: &BTreeSet<PathBuf>) -> Result<(), StoreError> {
    for dir in dirs {
        fsutil::fsync_dir(dir).map_err(|e| StoreError::Io { op: "fsync directory", path: dir.clone(), source: e })?;
    }
    Ok(())
}

fn is_archive_name(rel: &str) -> bool {
    ARCHIVE_SUFFIXES.iter().any(|s| rel.ends_with(s))
}

fn touch_parent(dirs: &mut BTreeSet<PathBuf>, file: &Path) {
    if let Some(p) = file.parent() {
        dirs.insert(p.to_path_buf());
    }
}

/// Removes a file; `Ok(false)` if it was already gone.
fn remove_if_present(path: &Path, op: &'static str) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::Io { op, path: path.to_path_buf(), source: e }),
    }
}

/// Collects the regular files under `dir`, without following symbolic links
/// and skipping the quarantine directory. Names that are not UTF-8 cannot be
/// recorded paths and are left alone.
fn walk(root: &Path, dir: &Path, rel_prefix: &str, out: &mut Vec<Found>) -> Result<(), StoreError> {
    let entries = fs::read_dir(dir).map_err(|e| StoreError::Io {
        op: "list archives directory",
        path: dir.to_path_buf(),
        source: e,
    })?;
    for entry in entries {
        let entry =
            entry.map_err(|e| StoreError::Io { op: "list archives directory", path: dir.to_path_buf(), source: e })?;
        let abs = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::warn!(path = %abs.display(), "leaving alone a file whose name is not UTF-8");
            continue;
        };
        let file_type =
            entry.file_type().map_err(|e| StoreError::Io { op: "inspect", path: abs.clone(), source: e })?;
        let rel = if rel_prefix.is_empty() { name.clone() } else { format!("{rel_prefix}/{name}") };
        if file_type.is_dir() {
            if dir == root && name == QUARANTINE_DIR {
                continue;
            }
            walk(root, &abs, &rel, out)?;
        } else if file_type.is_file() {
            out.push(Found { abs, rel });
        }
        // Symlinks, sockets, devices…: left alone.
    }
    Ok(())
}

/// Moves an unknown archive (and its checksum file) to
/// `<root>/_orphaned/<rel>`, appending `.1`, `.2`… if the name is taken.
/// Returns the new path.
fn quarantine(root: &Path, f: &Found, touched: &mut BTreeSet<PathBuf>) -> Result<PathBuf, StoreError> {
    // `rel` came from our own walk, so it is a plain relative path; the
    // check keeps it that way should the walk ever change.
    paths::check_rel_path(&f.rel)?;
    let qroot = root.join(QUARANTINE_DIR);
    let dest = qroot.join(&f.rel);
    let Some(dest_dir) = dest.parent() else {
        return Err(StoreError::PathEscapes { path: f.rel.clone(), why: "no parent directory".into() });
    };
    // The quarantine directory must be a real directory inside the archives
    // directory: a planted symlink must not carry data elsewhere.
    match fs::symlink_metadata(&qroot) {
        Ok(m) if !m.file_type().is_dir() => {
            return Err(StoreError::PathEscapes {
                path: QUARANTINE_DIR.into(),
                why: format!("{} exists and is not a directory (a symbolic link?); move it away", qroot.display()),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::Io { op: "inspect quarantine directory", path: qroot, source: e }),
    }
    fs::create_dir_all(dest_dir).map_err(|e| StoreError::Io {
        op: "create quarantine directory",
        path: dest_dir.to_path_buf(),
        source: e,
    })?;
    let canonical = fs::canonicalize(dest_dir).map_err(|e| StoreError::Io {
        op: "resolve quarantine directory",
        path: dest_dir.to_path_buf(),
        source: e,
    })?;
    if canonical != dest_dir {
        return Err(StoreError::PathEscapes {
            path: f.rel.clone(),
            why: format!(
                "quarantine directory {} resolves to {} through a symbolic link",
                dest_dir.display(),
                canonical.display()
            ),
        });
    }
    let mut target = dest.clone();
    let mut n = 0u32;
    while exists(&target)? || exists(&paths::checksum_path(&target))? {
        n += 1;
        let mut s = dest.clone().into_os_string();
        s.push(format!(".{n}"));
        target = PathBuf::from(s);
    }
    fs::rename(&f.abs, &target).map_err(|e| StoreError::Io {
        op: "move unknown archive to quarantine",
        path: f.abs.clone(),
        source: e,
    })?;
    touch_parent(touched, &f.abs);
    touch_parent(touched, &target);
    touched.insert(root.to_path_buf());
    touched.insert(qroot.clone());

    let checksum = paths::checksum_path(&f.abs);
    match fs::symlink_metadata(&checksum) {
        Ok(m) if m.file_type().is_file() => {
            let dest_sum = paths::checksum_path(&target);
            fs::rename(&checksum, &dest_sum).map_err(|e| StoreError::Io {
                op: "move checksum file to quarantine",
                path: checksum.clone(),
                source: e,
            })?;
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::Io { op: "inspect checksum file", path: checksum, source: e }),
    }
    Ok(target)
}

fn exists(p: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::Io { op: "inspect", path: p.to_path_buf(), source: e }),
    }
}
