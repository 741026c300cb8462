//! Status files: `<state>/status/<namespace>/<plural>/<name>.yaml`, the whole
//! object as `kubectl get -o yaml` prints it, replaced atomically so a script
//! polling it never reads a torn file. Plus `_invalid/<file>.yaml` reports.

use std::io;
use std::path::PathBuf;

use serde_json::Value;

use crate::api::ObjectKey;
use crate::store::fsutil::atomic_write;

/// Directory of the reports about manifest files that could not be used.
pub const INVALID_DIR: &str = "_invalid";

/// Writes and removes status files under one root.
#[derive(Clone, Debug)]
pub struct StatusFiles {
    root: PathBuf,
}

impl StatusFiles {
    /// Status files under `<state>/status`.
    pub fn new(state_dir: &std::path::Path) -> Self {
        StatusFiles { root: state_dir.join("status") }
    }

    /// Path of an object's status file. Namespace and name are validated DNS
    /// names, so they are safe path components.
    pub fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(&key.namespace).join(key.kind.plural()).join(format!("{}.yaml", key.name))
    }

    /// Writes the whole object.
    pub fn write(&self, key: &ObjectKey, object: &Value) -> io::Result<()> {
        let yaml = serde_yaml_ng::to_string(object).map_err(io::Error::other)?;
        atomic_write(&self.path(key), yaml.as_bytes())
    }

    /// Removes an object's status file (a missing file is fine).
    pub fn remove(&self, key: &ObjectKey) -> io::Result<()> {
        match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn invalid_path(&self, file: &str) -> PathBuf {
        // `file` is a plain file name from read_dir: it has no '/'.
        self.root.join(INVALID_DIR).join(format!("{}.yaml", file.replace('/', "_")))
    }

    /// Reports the problems of one manifest file.
    pub fn write_invalid(&self, file: &str, errors: &[String], now: &str) -> io::Result<()> {
        let report = serde_json::json!({"file": file, "errors": errors, "time": now});
        let yaml = serde_yaml_ng::to_string(&report).map_err(io::Error::other)?;
        let path = self.invalid_path(file);
        // Rewrite only when the content changed, so pollers see stable mtimes.
        if std::fs::read_to_string(&path).ok().is_some_and(|old| same_report(&old, &yaml)) {
            return Ok(());
        }
        atomic_write(&path, yaml.as_bytes())
    }

    /// Removes reports of files that are fine (or gone) now.
    pub fn retain_invalid(&self, keep: &dyn Fn(&str) -> bool) -> io::Result<()> {
        let dir = self.root.join(INVALID_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(file) = name.strip_suffix(".yaml") else { continue };
            if !keep(file) {
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }
}

fn same_report(old: &str, new: &str) -> bool {
    let strip = |s: &str| s.lines().filter(|l| !l.starts_with("time:")).collect::<Vec<_>>().join("\n");
    strip(old) == strip(new)
}
