//! Containment of stored archive paths inside the archives directory.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::CHECKSUM_SUFFIX;
use super::StoreError;

fn refuse(rel: &str, why: impl Into<String>) -> StoreError {
    StoreError::PathEscapes { path: rel.to_string(), why: why.into() }
}

/// The lexical rules: non-empty, relative, no NUL, every `/`-separated
/// segment a plain name (no empty, `.` or `..` segment).
pub(crate) fn check_rel_path(rel: &str) -> Result<(), StoreError> {
    if rel.is_empty() {
        return Err(refuse(rel, "the path is empty"));
    }
    if rel.contains('\0') {
        return Err(refuse(rel, "the path contains a NUL byte"));
    }
    if rel.starts_with('/') || Path::new(rel).is_absolute() {
        return Err(refuse(rel, "the path is absolute; archive paths are relative to the archives directory"));
    }
    for segment in rel.split('/') {
        match segment {
            "" => return Err(refuse(rel, "the path has an empty component (`//` or a trailing `/`)")),
            "." => return Err(refuse(rel, "the path has a `.` component")),
            ".." => return Err(refuse(rel, "the path has a `..` component")),
            _ => {}
        }
    }
    // Belt and braces: the standard library's view must agree.
    if !Path::new(rel).components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(refuse(rel, "the path has a component that is not a plain name"));
    }
    Ok(())
}

/// Resolves `rel` under `root` (which must be canonical); see
/// [`super::Store::archive_abs_path`].
pub(crate) fn resolve(root: &Path, rel: &str) -> Result<PathBuf, StoreError> {
    check_rel_path(rel)?;
    let joined = root.join(rel);
    let (Some(parent), Some(file_name)) = (joined.parent(), joined.file_name()) else {
        return Err(refuse(rel, "the path names no file"));
    };
    // Canonicalise the parent, or its nearest existing ancestor when the
    // directories are yet to be created (an archive about to be written).
    let mut existing = parent;
    let mut missing: Vec<&std::ffi::OsStr> = Vec::new();
    let canonical = loop {
        match fs::canonicalize(existing) {
            Ok(c) => break c,
            Err(e) if e.kind() == io::ErrorKind::NotFound && existing != root => {
                let Some(name) = existing.file_name() else {
                    return Err(refuse(rel, "the path has no parent inside the archives directory"));
                };
                missing.push(name);
                existing = existing.parent().unwrap_or(root);
            }
            Err(e) => {
                return Err(StoreError::Io {
                    op: "resolve the directory of archive",
                    path: existing.to_path_buf(),
                    source: e,
                });
            }
        }
    };
    if !canonical.starts_with(root) {
        return Err(refuse(
            rel,
            format!(
                "its directory resolves to {} (through a symbolic link), outside the archives directory {}",
                canonical.display(),
                root.display()
            ),
        ));
    }
    let mut resolved = canonical;
    for name in missing.iter().rev() {
        resolved.push(name);
    }
    resolved.push(file_name);
    match fs::symlink_metadata(&resolved) {
        Ok(meta) if meta.file_type().is_symlink() => {
            Err(refuse(rel, format!("{} is a symbolic link", resolved.display())))
        }
        Ok(meta) if !meta.file_type().is_file() => {
            Err(refuse(rel, format!("{} is not a regular file", resolved.display())))
        }
        Ok(_) => Ok(resolved),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(resolved),
        Err(e) => Err(StoreError::Io { op: "inspect archive", path: resolved, source: e }),
    }
}

/// `<archive>.sha256`.
pub(crate) fn checksum_path(archive: &Path) -> PathBuf {
    let mut s: OsString = archive.as_os_str().to_owned();
    s.push(CHECKSUM_SUFFIX);
    PathBuf::from(s)
}
