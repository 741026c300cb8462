//! Scanning a directory of manifests: multi-document YAML files into
//! declared objects, invalid objects, and file-level errors, plus, for every
//! file, whether objects it no longer declares count as deleted.
//!
//! The directory is read, never written (it may be a git checkout). Whoever
//! can write to it is not trusted with the host: files are opened without
//! blocking and checked on the descriptor ([`super::read`]), parsed with
//! bounded work ([`super::yaml`]), and parsed again only when their content
//! changed.
//!
//! Deletion needs positive evidence that a declaration is gone: the file's
//! name is gone from a readable directory listing, or the file is readable,
//! parses completely, identifies every document, ends with a line break and
//! has not changed for [`SETTLE`]. Anything less (a half-saved edit, a
//! dangling symlink, a FIFO, a file that cannot be read) keeps what the file
//! declared before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::{Declaration, Decoded, ReadError, decode, read_regular, stat_regular};
use crate::api::ObjectKey;

/// How long a manifest file must stay unchanged before the objects it no
/// longer declares are deleted. A file cut short at a document boundary
/// parses completely and simply declares less; only time tells it from an
/// edit that removed a document. Editors and deploy tools finish a save well
/// within this.
pub const SETTLE: Duration = Duration::from_secs(5);

/// Timestamps this close to now do not prove that content with the same
/// size and timestamps is unchanged (they are coarse): such files are read
/// again and compared by digest.
const RACY: Duration = Duration::from_secs(2);

/// Whether the objects a file declared before, and no longer declares, may
/// be deleted now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removals {
    /// The file is complete and has not changed for [`SETTLE`].
    Allowed,
    /// The file is complete but changed recently: not before this instant.
    After(Instant),
    /// The file may be incomplete: not until that changes.
    Held(Hold),
}

/// Why a file's removals are held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The file is reported in `file_errors` (unreadable, not valid YAML, a
    /// document that cannot be identified).
    Reported,
    /// The file does not end with a line break, as a save cut short in the
    /// middle of a line would not. Reported only where it holds objects.
    NoFinalNewline,
    /// It disappeared between the listing and the read: the next scan,
    /// whose listing shows whether it is gone, decides.
    Vanished,
}

/// The result of one scan.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Whether the directory was missing or unreadable. Callers must then keep
    /// every object as it is: a directory that disappears (unmounted, being
    /// replaced by a deploy) must never delete objects or archives.
    pub dir_unavailable: Option<String>,
    /// Every declaration of every identifiable object, in file-name order.
    pub declared: BTreeMap<ObjectKey, Vec<Declaration>>,
    /// Manifest files that could not be read or parsed as YAML.
    pub unparsable: BTreeSet<String>,
    /// Problems to report per file in `status/_invalid/<file>.yaml`.
    pub file_errors: BTreeMap<String, Vec<String>>,
    /// Every manifest file in the listing, and whether objects it no longer
    /// declares may be deleted. A file that is not here is gone.
    pub files: BTreeMap<String, Removals>,
}

/// Scans `dir` once, without a cache.
pub fn scan(dir: &Path) -> Scan {
    Scanner::default().scan(dir)
}

/// Scans the manifests directory, remembering each file's parse so that a
/// file is parsed again only when its content changed.
#[derive(Default)]
pub struct Scanner {
    cache: HashMap<String, Cached>,
}

/// What one file held when last read.
struct Cached {
    stamp: Stamp,
    /// The stamp was too close to the read to prove later content the same.
    racy: bool,
    digest: [u8; 32],
    /// When this content was first seen.
    since: Instant,
    parsed: Arc<Decoded>,
}

/// Identity of a file's content as far as its metadata tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Scanner {
    /// Scans `dir`: top-level `*.yaml` / `*.yml` files, hidden files ignored,
    /// in file-name order.
    pub fn scan(&mut self, dir: &Path) -> Scan {
        let names = match list(dir) {
            Ok(n) => n,
            Err(why) => return Scan { dir_unavailable: Some(why), ..Scan::default() },
        };
        self.cache.retain(|f, _| names.contains(f));
        let mut out = Scan::default();
        for file in names {
            let removals = match self.load(dir, &file) {
                Ok(cached) => {
                    out.add(&file, &cached.parsed);
                    cached.removals()
                }
                Err(ReadError::Vanished) => Removals::Held(Hold::Vanished),
                Err(e) => {
                    self.cache.remove(&file);
                    out.unparsable.insert(file.clone());
                    out.file_errors.entry(file.clone()).or_default().push(format!(
                        "{file} cannot be used: {e}. The objects it declared before are kept until it can be read"
                    ));
                    Removals::Held(Hold::Reported)
                }
            };
            out.files.insert(file, removals);
        }
        out
    }

    /// The file's parse: from the cache when its stamp (or, failing that,
    /// its digest) shows the same content, otherwise parsed now.
    fn load(&mut self, dir: &Path, file: &str) -> Result<&Cached, ReadError> {
        let path = dir.join(file);
        let stamp = Stamp::of(&stat_regular(&path)?);
        let fresh = self.cache.get(file).is_some_and(|c| c.stamp == stamp && !c.racy);
        if !fresh {
            let (bytes, meta) = read_regular(&path)?;
            let stamp = Stamp::of(&meta);
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            let racy = stamp.age() < RACY;
            match self.cache.get_mut(file) {
                Some(c) if c.digest == digest => {
                    c.stamp = stamp;
                    c.racy = racy;
                }
                _ => {
                    let text = String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)?;
                    let parsed = Arc::new(decode(file, &text));
                    let since = Instant::now();
                    self.cache.insert(file.to_string(), Cached { stamp, racy, digest, since, parsed });
                }
            }
        }
        self.cache.get(file).ok_or(ReadError::Vanished)
    }
}

impl Cached {
    /// Removals need a complete file that ends with a line break and has not
    /// changed for [`SETTLE`]: since this daemon first saw the content, or
    /// (after a restart) by its ctime.
    fn removals(&self) -> Removals {
        if !self.parsed.complete {
            return Removals::Held(Hold::Reported);
        }
        if !self.parsed.final_newline {
            return Removals::Held(Hold::NoFinalNewline);
        }
        let left = SETTLE.saturating_sub(self.since.elapsed().max(self.stamp.age()));
        if left.is_zero() { Removals::Allowed } else { Removals::After(Instant::now() + left) }
    }
}

impl Stamp {
    fn of(m: &Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }

    /// Time since the content or metadata last changed (zero if in the future).
    fn age(&self) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        let changed = self.mtime_ns.max(self.ctime_ns);
        Duration::from_nanos(u64::try_from(now - changed).unwrap_or(0))
    }
}

impl Scan {
    fn add(&mut self, file: &str, parsed: &Decoded) {
        for (key, decl) in &parsed.declarations {
            self.declared.entry(key.clone()).or_default().push(decl.clone());
        }
        if !parsed.errors.is_empty() {
            self.file_errors.entry(file.to_string()).or_default().extend(parsed.errors.iter().cloned());
        }
        if !parsed.yaml_ok {
            self.unparsable.insert(file.to_string());
        }
    }
}

/// The manifest file names in `dir`. Any error, including one part-way
/// through the listing, makes the whole directory unavailable: a partial
/// listing must not read as files removed.
fn list(dir: &Path) -> Result<BTreeSet<String>, String> {
    let why = |e: std::io::Error| format!("cannot read manifests directory {}: {e}", dir.display());
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(why)? {
        let Ok(name) = entry.map_err(why)?.file_name().into_string() else { continue };
        if !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")) {
            names.insert(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_objects_invalid_objects_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: one}\nspec: {source: {paths: [{path: /srv/a}]}}\n---\n\
             apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: two}\nspec: {source: {paths: [{pat: /srv/a}]}}\n---\n\
             kind: Nope\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.yml"), "a: [unclosed\n").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "a: [unclosed\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let s = scan(dir.path());
        assert!(s.dir_unavailable.is_none());
        assert_eq!(s.declared.len(), 2);
        let two = s.declared.iter().find(|(k, _)| k.name == "two").unwrap().1;
        let (field, msg) = two[0].parsed.as_ref().unwrap_err();
        assert_eq!(field, "spec.source.paths[0].pat");
        assert!(msg.contains("unknown field `pat`"), "{msg}");
        assert_eq!(s.unparsable.iter().collect::<Vec<_>>(), vec!["b.yml"]);
        assert!(s.file_errors["a.yaml"][0].contains("apiVersion must be"));
        assert!(s.file_errors["b.yml"][0].contains("not valid YAML"));
        assert!(scan(&dir.path().join("missing")).dir_unavailable.is_some());
    }

    fn mkfifo(path: &Path) {
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    }

    #[test]
    fn reading_a_fifo_returns_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("a.yaml");
        mkfifo(&fifo);
        // Opened by path as if the stat had seen a regular file (a FIFO
        // swapped in between): neither the open nor a read may block.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || tx.send(read_regular(&path).map(|_| ())));
        let got = rx.recv_timeout(Duration::from_secs(5)).expect("reading a FIFO blocked");
        assert!(matches!(got, Err(ReadError::NotRegular { what: "a FIFO (named pipe)" })), "{got:?}");
        let s = scan(dir.path());
        assert_eq!(s.files["a.yaml"], Removals::Held(Hold::Reported));
        assert!(s.file_errors["a.yaml"][0].contains("FIFO"), "{:?}", s.file_errors);
    }

    #[test]
    fn files_that_may_be_incomplete_hold_their_removals() {
        let dir = tempfile::tempdir().unwrap();
        let doc = "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: one}\nspec: {source: {paths: [{path: /srv/a}]}}\n";
        let write = |f: &str, text: &str| std::fs::write(dir.path().join(f), text).unwrap();
        write("complete.yaml", doc);
        write("no-newline.yaml", doc.trim_end());
        write("trailing-sep.yaml", &format!("{doc}---\n"));
        write("empty.yaml", "");
        write("dup.yaml", &doc.replace("{name: one}", "{name: one, name: two}"));
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling.yaml")).unwrap();
        let s = scan(dir.path());
        assert!(matches!(s.files["complete.yaml"], Removals::After(_)), "just written: {:?}", s.files);
        assert_eq!(s.files["no-newline.yaml"], Removals::Held(Hold::NoFinalNewline));
        for f in ["trailing-sep.yaml", "empty.yaml", "dup.yaml", "dangling.yaml"] {
            assert_eq!(s.files[f], Removals::Held(Hold::Reported), "{f}");
            assert!(s.file_errors[f].last().unwrap().contains("kept"), "{f}: {:?}", s.file_errors[f]);
        }
        assert!(s.file_errors["trailing-sep.yaml"][0].contains("document 1 is empty"));
        assert!(s.file_errors["dup.yaml"][0].contains("duplicate key \"name\""));
        assert!(s.file_errors["dangling.yaml"][0].contains("symbolic link"));
    }

    #[test]
    fn a_complete_file_unchanged_for_the_settle_period_allows_removals() {
        let cached = |since: Instant, changed_secs_ago: i128| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128;
            let t = now - changed_secs_ago * 1_000_000_000;
            let stamp = Stamp { dev: 1, ino: 1, size: 1, mtime_ns: t, ctime_ns: t };
            let parsed = Arc::new(Decoded { yaml_ok: true, complete: true, final_newline: true, ..Decoded::default() });
            Cached { stamp, racy: false, digest: [0; 32], since, parsed }
        };
        let long_ago = Instant::now().checked_sub(SETTLE * 2).unwrap();
        assert_eq!(cached(long_ago, 0).removals(), Removals::Allowed, "seen unchanged for the settle period");
        assert_eq!(cached(Instant::now(), 3600).removals(), Removals::Allowed, "changed long before start-up");
        assert!(matches!(cached(Instant::now(), 0).removals(), Removals::After(_)), "just changed");
    }

    #[test]
    fn a_file_is_parsed_again_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: one}\n")
            .unwrap();
        let mut scanner = Scanner::default();
        scanner.scan(dir.path());
        let first = scanner.cache["a.yaml"].parsed.clone();
        scanner.scan(dir.path());
        assert!(Arc::ptr_eq(&first, &scanner.cache["a.yaml"].parsed), "unchanged content was parsed again");
        std::fs::write(&path, "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: two}\n")
            .unwrap();
        let s = scanner.scan(dir.path());
        assert!(!Arc::ptr_eq(&first, &scanner.cache["a.yaml"].parsed), "changed content was not parsed again");
        assert!(s.declared.keys().any(|k| k.name == "two"));
    }
}
