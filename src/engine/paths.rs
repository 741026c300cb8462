//! Resolution of `source.paths` under the allowed roots.
//!
//! Every declared path is resolved (symlinks included) BEFORE it is checked,
//! so a symlink cannot smuggle `/etc` or `/` in under an allowed name. Each
//! path ends up either as a volume to capture or as a skipped volume with a
//! reason a person can act on; never silently dropped.

use std::io;
use std::path::{Path, PathBuf};

use crate::api::{PathSource, SkippedVolume};
use crate::engine::beneath::{OpenDir, TrustedRoot};
use crate::engine::capture::CaptureVolume;

/// Directories that are never captured, whatever the allowed roots say.
const ALWAYS_DENIED: [&str; 4] = ["/", "/proc", "/sys", "/dev"];

/// Which host directories may be read (and, later, restored into).
#[derive(Clone, Debug)]
pub struct PathPolicy {
    /// Canonical allowed roots.
    allowed_roots: Vec<PathBuf>,
    /// The same roots, opened once at start-up: every directory volsnap
    /// opens for an object is resolved beneath one of these descriptors, so
    /// a root's parent replaced later (or a symlink swapped into a path
    /// after it was checked) cannot redirect it.
    trusted: Vec<TrustedRoot>,
    /// Canonical directories of volsnap's own (state, archives): never
    /// captured, and never inside a captured directory (the archive would
    /// capture itself).
    own_dirs: Vec<PathBuf>,
}

/// A bad `--allowed-root`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The root is not usable.
    #[error("--allowed-root {root}: {why}")]
    BadRoot {
        /// As given.
        root: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Resolved `source.paths`: what to capture and what was skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolution {
    /// Volumes to capture, indexed 0.. in declaration order.
    pub volumes: Vec<CaptureVolume>,
    /// Declared paths that will not be captured, each with the reason.
    pub skipped: Vec<SkippedVolume>,
}

impl PathPolicy {
    /// Builds a policy. Roots must be existing absolute directories other than
    /// `/`; they are canonicalised once here. `own_dirs` (state, archives) are
    /// created by the caller beforehand.
    pub fn new(allowed_roots: &[PathBuf], own_dirs: &[PathBuf]) -> Result<PathPolicy, PolicyError> {
        let mut roots = Vec::new();
        let mut trusted = Vec::new();
        for root in allowed_roots {
            let bad = |why: String| PolicyError::BadRoot { root: root.clone(), why };
            if !root.is_absolute() {
                return Err(bad("must be an absolute path".into()));
            }
            let canonical = root.canonicalize().map_err(|e| bad(format!("cannot be resolved: {e}")))?;
            if !canonical.is_dir() {
                return Err(bad("is not a directory".into()));
            }
            if let Some(denied) =
                ALWAYS_DENIED.iter().find(|d| canonical == Path::new(d) || (**d != "/" && canonical.starts_with(d)))
            {
                return Err(bad(format!(
                    "resolves to {} which is never allowed ({denied} is denied): name the directories that hold application data",
                    canonical.display()
                )));
            }
            let opened =
                TrustedRoot::open(&canonical).map_err(|e| bad(format!("cannot be opened as a directory: {e}")))?;
            roots.push(canonical);
            trusted.push(opened);
        }
        let own_dirs = own_dirs.iter().map(|d| d.canonicalize().unwrap_or_else(|_| d.clone())).collect();
        Ok(PathPolicy { allowed_roots: roots, trusted, own_dirs })
    }

    /// The canonical allowed roots.
    pub fn allowed_roots(&self) -> &[PathBuf] {
        &self.allowed_roots
    }

    /// The allowed root `canonical` lies beneath (the deepest, when roots
    /// nest).
    pub fn root_of(&self, canonical: &Path) -> Option<&TrustedRoot> {
        self.trusted.iter().filter(|r| r.contains(canonical)).max_by_key(|r| r.path().as_os_str().len())
    }

    /// Checks a canonical directory against the denylist and the allowed
    /// roots; the error is the reason, for `status.skipped`.
    pub fn check(&self, canonical: &Path, declared: &str) -> Result<(), String> {
        self.check_denied(canonical, declared)?;
        let resolved = resolved_note(canonical, declared);
        if self.allowed_roots.is_empty() {
            return Err(format!(
                "{declared}{resolved} is outside the allowed roots: none are configured (start volsnap with --allowed-root DIR)"
            ));
        }
        if !self.allowed_roots.iter().any(|r| canonical.starts_with(r)) {
            let roots: Vec<String> = self.allowed_roots.iter().map(|r| r.display().to_string()).collect();
            return Err(format!("{declared}{resolved} is outside the allowed roots ({})", roots.join(", ")));
        }
        Ok(())
    }

    /// The part of [`PathPolicy::check`] that no root can lift: the denylist
    /// and volsnap's own directories. Docker's volume root uses only this.
    pub fn check_denied(&self, canonical: &Path, declared: &str) -> Result<(), String> {
        let resolved = resolved_note(canonical, declared);
        if canonical == Path::new("/") {
            return Err(format!("{declared}{resolved}: / is never captured"));
        }
        if let Some(d) = ALWAYS_DENIED[1..].iter().find(|d| canonical.starts_with(d)) {
            return Err(format!("{declared}{resolved}: {d} is never captured"));
        }
        if let Some(own) = self.own_dirs.iter().find(|o| canonical.starts_with(o) || o.starts_with(canonical)) {
            return Err(format!(
                "{declared}{resolved} overlaps volsnap's own state or archives directory {}",
                own.display()
            ));
        }
        Ok(())
    }

    /// Resolves `source.paths` into volumes and skipped entries.
    pub fn resolve(&self, sources: &[PathSource]) -> Resolution {
        let names = volume_names(sources);
        let mut out = Resolution::default();
        for (source, name) in sources.iter().zip(names) {
            let skip = |reason: String| SkippedVolume {
                name: name.clone(),
                path: Some(source.path.clone()),
                target: None,
                reason,
            };
            let canonical = match Path::new(&source.path).canonicalize() {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    out.skipped.push(skip(format!("no data on disk yet: {} does not exist", source.path)));
                    continue;
                }
                Err(e) => {
                    out.skipped.push(skip(format!("{} cannot be resolved: {e}", source.path)));
                    continue;
                }
            };
            if let Err(reason) = self.check(&canonical, &source.path) {
                out.skipped.push(skip(reason));
                continue;
            }
            match std::fs::metadata(&canonical) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    out.skipped.push(skip(format!("not a directory: {} is a file", canonical.display())));
                    continue;
                }
                Err(e) => {
                    out.skipped.push(skip(format!("{} cannot be read: {e}", canonical.display())));
                    continue;
                }
            }
            let dir = match self.open_checked(&canonical) {
                Ok(d) => d,
                Err(reason) => {
                    out.skipped.push(skip(reason));
                    continue;
                }
            };
            if let Some(other) =
                out.volumes.iter().find(|v| v.path.starts_with(&canonical) || canonical.starts_with(&v.path))
            {
                out.skipped.push(skip(format!(
                    "{} overlaps volume {} ({}): it would be captured twice",
                    canonical.display(),
                    other.name,
                    other.path.display()
                )));
                continue;
            }
            out.volumes.push(CaptureVolume {
                index: out.volumes.len() as u32,
                name,
                path: canonical,
                target: None,
                dir,
            });
        }
        out
    }

    /// Opens a directory that [`PathPolicy::check`] accepted, beneath its
    /// allowed root, verifying that what was opened is what was checked
    /// ([`TrustedRoot::open_checked`]). The error is a reason for
    /// `status.skipped`: such a path is never captured.
    pub fn open_checked(&self, canonical: &Path) -> Result<OpenDir, String> {
        let root =
            self.root_of(canonical).ok_or_else(|| format!("{} is outside the allowed roots", canonical.display()))?;
        root.open_checked(canonical).map_err(|e| format!("{} cannot be opened safely: {e}", canonical.display()))
    }
}

fn resolved_note(canonical: &Path, declared: &str) -> String {
    if canonical == Path::new(declared) { String::new() } else { format!(" (resolves to {})", canonical.display()) }
}

/// Names for every declared path: explicit names kept, the others made from
/// the basename as a DNS label, made unique with `-2`, `-3`, ...
pub fn volume_names(sources: &[PathSource]) -> Vec<String> {
    let mut taken: Vec<String> = sources.iter().filter_map(|s| s.name.clone()).collect();
    sources
        .iter()
        .map(|s| {
            if let Some(n) = &s.name {
                return n.clone();
            }
            let base =
                dns_label_from(Path::new(&s.path).file_name().map(|f| f.to_string_lossy()).as_deref().unwrap_or(""));
            unique_label(base, &mut taken)
        })
        .collect()
}

/// `base`, or `base-2`, `base-3`, ... (kept within 63 characters): the first
/// not in `taken`, which it is then added to.
pub fn unique_label(base: String, taken: &mut Vec<String>) -> String {
    let mut candidate = base.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        let suffix = format!("-{n}");
        candidate = format!("{}{suffix}", &base[..base.len().min(63 - suffix.len())]);
        n += 1;
    }
    taken.push(candidate.clone());
    candidate
}

/// Turns any string into a DNS label: lower-case, other characters become
/// `-`, trimmed, at most 63 characters, `volume` when nothing is left.
pub fn dns_label_from(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-').to_string();
    if trimmed.is_empty() { "volume".into() } else { trimmed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn src(path: &Path) -> PathSource {
        PathSource { name: None, path: path.display().to_string() }
    }

    #[test]
    fn names_are_dns_labels_and_unique() {
        assert_eq!(dns_label_from("App_Data.2"), "app-data-2");
        assert_eq!(dns_label_from("..."), "volume");
        let sources = vec![
            PathSource { name: None, path: "/a/data".into() },
            PathSource { name: Some("data".into()), path: "/b/x".into() },
            PathSource { name: None, path: "/c/Data".into() },
        ];
        assert_eq!(volume_names(&sources), vec!["data-2", "data", "data-3"]);
    }

    #[test]
    fn resolves_checks_and_explains_every_skip() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        let state = tmp.path().join("root/state");
        for d in [&root, &outside, &state, &root.join("data")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(root.join("file"), b"x").unwrap();
        symlink("/", root.join("to-slash")).unwrap();
        symlink(&outside, root.join("to-outside")).unwrap();
        symlink(root.join("data"), root.join("to-data")).unwrap();
        let policy = PathPolicy::new(std::slice::from_ref(&root), std::slice::from_ref(&state)).unwrap();
        let r = policy.resolve(&[
            src(&root.join("data")),
            src(&root.join("missing")),
            src(&root.join("file")),
            src(&root.join("to-slash")),
            src(&root.join("to-outside")),
            src(&state),
            src(&root.join("to-data")),
        ]);
        assert_eq!(r.volumes.len(), 1);
        assert_eq!(r.volumes[0].path, root.join("data").canonicalize().unwrap());
        let reasons: Vec<&str> = r.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert!(reasons[0].starts_with("no data on disk yet"), "{reasons:?}");
        assert!(reasons[1].starts_with("not a directory"), "{reasons:?}");
        assert!(reasons[2].contains("/ is never captured"), "{reasons:?}");
        assert!(reasons[3].contains("outside the allowed roots"), "{reasons:?}");
        assert!(reasons[4].contains("state or archives"), "{reasons:?}");
        assert!(reasons[5].contains("captured twice"), "{reasons:?}");
    }

    #[test]
    fn roots_are_checked() {
        assert!(PathPolicy::new(&["/".into()], &[]).is_err());
        assert!(PathPolicy::new(&["relative".into()], &[]).is_err());
        assert!(PathPolicy::new(&["/proc/self".into()], &[]).is_err());
        let none = PathPolicy::new(&[], &[]).unwrap();
        assert!(none.check(Path::new("/srv"), "/srv").unwrap_err().contains("none are configured"));
    }
}
