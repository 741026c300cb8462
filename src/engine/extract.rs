//! The untrusted-archive extractor: writes selected volumes of an archive
//! into fresh, empty directories.
//!
//! # Security
//!
//! Every archive is treated as hostile, including volsnap's own (a file on
//! disk can be replaced). The extractor is a sink of the archive walker
//! ([`crate::engine::archive::reader`]), so nothing is written for an entry
//! before the walker has accepted it: safe relative names under
//! `volumes/<index>/` (no `..`, no absolute names), known volume indexes,
//! only files, directories, symlinks and hard links, no entry below a symlink
//! or a file, hard links only to earlier files of the same volume, no
//! duplicates, bounded expansion and entry counts, intact compression.
//!
//! On top of that, the writing itself never follows a path component:
//!
//! - directories are reached one component at a time from the volume root's
//!   descriptor with `openat(O_DIRECTORY | O_NOFOLLOW)`, so a symlink in the
//!   way is an error (`ELOOP`/`ENOTDIR`), never a detour;
//! - files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`: nothing that
//!   exists is ever opened, replaced or written through;
//! - symlinks are created as links (their targets are data, never resolved);
//!   their owner and mtime are set with `AT_SYMLINK_NOFOLLOW`;
//! - hard links use `linkat` without `AT_SYMLINK_FOLLOW`, from an entry the
//!   walker saw as a regular file of the same volume;
//! - mode, owner and mtime of directories are applied at the end, through
//!   descriptors opened with `O_NOFOLLOW` (RUSTSEC-2026-0067: a chmod that
//!   follows a symlink changes a directory outside the destination).
//!
//! Owners (uid/gid) are restored only when running as root; a non-root
//! extraction leaves files owned by the caller. The caller removes the
//! destination directories when extraction fails: whatever was written lies
//! inside them.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Gid, Mode, OFlags, Timespec, Timestamps, Uid};

use super::archive::reader::{EntrySink, walk_checked};
use super::archive::{ArchiveError, ArchiveManifest, EntryInfo, EntryKind, VerifyLimits, VerifyReport};

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
const NEW_FILE_FLAGS: OFlags =
    OFlags::WRONLY.union(OFlags::CREATE).union(OFlags::EXCL).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
const COPY_BUFFER: usize = 256 * 1024;

/// One volume to extract: the archive's `volumes/<index>/` goes into `root`.
#[derive(Clone, Debug)]
pub struct ExtractVolume {
    /// Index in the archive.
    pub index: u32,
    /// Name the volume must have in the archive's manifest.
    pub name: String,
    /// An existing, empty directory that receives the volume's content; its
    /// own mode, owner and mtime are set from the volume root entry.
    pub root: PathBuf,
}

/// Extracts `volumes` of the archive at `archive` into their roots, checking
/// the whole archive (and its sha256, when `limits` names one) on the way.
/// Entries of volumes not listed are checked and skipped.
///
/// # Security
///
/// See the module documentation. On error, the roots may hold part of the
/// data; nothing has been written anywhere else.
pub fn extract(
    archive: &Path,
    volumes: &[ExtractVolume],
    limits: &VerifyLimits,
    cancel: &dyn Fn() -> bool,
) -> Result<VerifyReport, ArchiveError> {
    let mut roots = HashMap::new();
    for v in volumes {
        let fd = rustix::fs::openat(CWD, &v.root, DIR_FLAGS, Mode::empty())
            .map_err(|e| write_error(&v.root, io::Error::from(e)))?;
        roots.insert(v.index, Root { name: v.name.clone(), path: v.root.clone(), fd });
    }
    let mut sink = Extractor {
        roots,
        // SAFETY: geteuid has no preconditions and cannot fail.
        restore_owners: unsafe { libc::geteuid() } == 0,
        parent: None,
        dirs: Vec::new(),
        buf: vec![0u8; COPY_BUFFER],
        cancel,
    };
    let report = walk_checked(archive, limits, &mut sink)?;
    sink.finish_dirs()?;
    Ok(report)
}

fn write_error(path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Extract { path: path.display().to_string(), source }
}

struct Root {
    name: String,
    path: PathBuf,
    fd: OwnedFd,
}

/// Metadata to apply to a directory once everything below it exists.
struct DirMeta {
    index: u32,
    rel: Vec<u8>,
    info: Meta,
}

#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
}

struct Extractor<'c> {
    roots: HashMap<u32, Root>,
    restore_owners: bool,
    /// The last parent directory opened: (index, relative path, descriptor).
    /// Archives list a directory's entries together, so this saves most walks.
    parent: Option<(u32, Vec<u8>, OwnedFd)>,
    dirs: Vec<DirMeta>,
    buf: Vec<u8>,
    cancel: &'c dyn Fn() -> bool,
}

/// `volumes/<index>[/<rel>]` split into the index and `rel` (empty for the root).
fn split_name(name: &[u8]) -> Option<(u32, &[u8])> {
    let rest = name.strip_prefix(b"volumes/")?;
    let (idx, rel) = match rest.iter().position(|&b| b == b'/') {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &b""[..]),
    };
    let index = std::str::from_utf8(idx).ok()?.parse().ok()?;
    Some((index, rel))
}

/// `rel` split into its parent (possibly empty) and its last component.
fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(p) => (&rel[..p], &rel[p + 1..]),
        None => (&b""[..], rel),
    }
}

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

fn ts(secs: i64) -> Timestamps {
    let t = Timespec { tv_sec: secs, tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}

impl Extractor<'_> {
    fn root(&self, index: u32) -> Option<&Root> {
        self.roots.get(&index)
    }

    fn err(&self, index: u32, rel: &[u8], source: io::Error) -> ArchiveError {
        let root = self.root(index).map(|r| r.path.clone()).unwrap_or_default();
        let path = if rel.is_empty() { root } else { root.join(std::ffi::OsStr::from_bytes(rel)) };
        write_error(&path, source)
    }

    /// Opens the directory `rel` of volume `index`, one component at a time
    /// without following symlinks, creating missing components (0700: their
    /// own entry, when it comes, sets the final mode).
    fn open_dir(&mut self, index: u32, rel: &[u8]) -> io::Result<OwnedFd> {
        if let Some((i, r, fd)) = &self.parent
            && *i == index
            && r == rel
        {
            return fd.try_clone();
        }
        let root = self.roots.get(&index).ok_or_else(|| io::Error::other("volume not selected"))?;
        let mut cur = root.fd.try_clone()?;
        for comp in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let name = cstr(comp)?;
            cur = match rustix::fs::openat(&cur, name.as_c_str(), DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => {
                    rustix::fs::mkdirat(&cur, name.as_c_str(), Mode::from_raw_mode(0o700))?;
                    rustix::fs::openat(&cur, name.as_c_str(), DIR_FLAGS, Mode::empty())?
                }
                Err(e) => return Err(e.into()),
            };
        }
        self.parent = Some((index, rel.to_vec(), cur.try_clone()?));
        Ok(cur)
    }

    fn set_owner(&self, fd: impl AsFd, m: &Meta) -> io::Result<()> {
        if self.restore_owners {
            rustix::fs::fchown(fd, Some(uid(m.uid)?), Some(gid(m.gid)?))?;
        }
        Ok(())
    }

    fn write_file(&mut self, dir: &OwnedFd, name: &[u8], m: &Meta, data: &mut dyn Read) -> io::Result<()> {
        let name = cstr(name)?;
        let fd = rustix::fs::openat(dir, name.as_c_str(), NEW_FILE_FLAGS, Mode::from_raw_mode(0o600))?;
        let mut file = std::fs::File::from(fd);
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The walker reports read errors (truncation, corruption).
                Err(e) => return Err(e),
            };
            file.write_all(&self.buf[..n])?;
            if (self.cancel)() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "extraction cancelled"));
            }
        }
        // chown before chmod: chown clears setuid/setgid bits.
        self.set_owner(&file, m)?;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(m.mode & 0o7777))?;
        rustix::fs::futimens(&file, &ts(m.mtime))?;
        Ok(())
    }

    /// Applies the recorded directory metadata, deepest entries first.
    fn finish_dirs(&mut self) -> Result<(), ArchiveError> {
        self.parent = None;
        let dirs = std::mem::take(&mut self.dirs);
        for d in dirs.iter().rev() {
            let applied = self.open_dir(d.index, &d.rel).and_then(|fd| {
                self.set_owner(&fd, &d.info)?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.info.mode & 0o7777))?;
                rustix::fs::futimens(&fd, &ts(d.info.mtime))?;
                Ok(())
            });
            self.parent = None;
            applied.map_err(|e| self.err(d.index, &d.rel, e))?;
        }
        Ok(())
    }
}

fn uid(v: u64) -> io::Result<Uid> {
    let raw = u32::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("uid {v} too large")))?;
    Ok(Uid::from_raw(raw))
}

fn gid(v: u64) -> io::Result<Gid> {
    let raw = u32::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("gid {v} too large")))?;
    Ok(Gid::from_raw(raw))
}

impl EntrySink for Extractor<'_> {
    fn manifest(&mut self, manifest: &ArchiveManifest) -> Result<(), ArchiveError> {
        for (index, root) in &self.roots {
            match manifest.volumes.iter().find(|v| v.index == *index) {
                Some(v) if v.name == root.name => {}
                Some(v) => {
                    return Err(ArchiveError::ManifestInvalid(format!(
                        "volume index {index} is named {:?} in the archive, but the snapshot records {:?}",
                        v.name, root.name
                    )));
                }
                None => {
                    return Err(ArchiveError::ManifestInvalid(format!(
                        "the archive has no volume index {index} ({:?})",
                        root.name
                    )));
                }
            }
        }
        Ok(())
    }

    fn entry(&mut self, info: &EntryInfo, data: &mut dyn Read) -> Result<(), ArchiveError> {
        let Some((index, rel)) = split_name(&info.path_bytes) else {
            return Ok(()); // volsnap.json
        };
        if !self.roots.contains_key(&index) {
            return Ok(()); // a volume that is not restored: checked, not written
        }
        if (self.cancel)() {
            return Err(self.err(index, rel, io::Error::new(io::ErrorKind::Interrupted, "extraction cancelled")));
        }
        let meta = Meta { mode: info.mode, uid: info.uid, gid: info.gid, mtime: info.mtime };
        let (parent_rel, name) = split_last(rel);
        let result = (|| -> io::Result<()> {
            match info.kind {
                EntryKind::Dir => {
                    if !rel.is_empty() {
                        let dir = self.open_dir(index, parent_rel)?;
                        let c = cstr(name)?;
                        match rustix::fs::mkdirat(&dir, c.as_c_str(), Mode::from_raw_mode(0o700)) {
                            Ok(()) => {}
                            // Created earlier as the parent of an entry: it
                            // must still be a real directory.
                            Err(rustix::io::Errno::EXIST) => {
                                let st = rustix::fs::statat(&dir, c.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
                                if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
                                    return Err(io::Error::new(
                                        io::ErrorKind::AlreadyExists,
                                        "exists and is not a directory",
                                    ));
                                }
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    self.dirs.push(DirMeta { index, rel: rel.to_vec(), info: meta });
                }
                EntryKind::File => {
                    let dir = self.open_dir(index, parent_rel)?;
                    self.write_file(&dir, name, &meta, data)?;
                }
                EntryKind::Symlink => {
                    let dir = self.open_dir(index, parent_rel)?;
                    let target = cstr(info.link_bytes.as_deref().unwrap_or_default())?;
                    let c = cstr(name)?;
                    rustix::fs::symlinkat(target.as_c_str(), &dir, c.as_c_str())?;
                    if self.restore_owners {
                        rustix::fs::chownat(
                            &dir,
                            c.as_c_str(),
                            Some(uid(meta.uid)?),
                            Some(gid(meta.gid)?),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )?;
                    }
                    rustix::fs::utimensat(&dir, c.as_c_str(), &ts(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)?;
                }
                EntryKind::Hardlink => {
                    let target = info.link_bytes.clone().unwrap_or_default();
                    let Some((tindex, trel)) = split_name(&target) else {
                        return Err(io::Error::other("hard link target outside the volume"));
                    };
                    if tindex != index || trel.is_empty() {
                        return Err(io::Error::other("hard link target outside the volume"));
                    }
                    let (tparent, tname) = split_last(trel);
                    let tdir = self.open_dir(index, tparent)?;
                    let dir = self.open_dir(index, parent_rel)?;
                    let (tc, c) = (cstr(tname)?, cstr(name)?);
                    rustix::fs::linkat(&tdir, tc.as_c_str(), &dir, c.as_c_str(), AtFlags::empty())?;
                }
            }
            Ok(())
        })();
        result.map_err(|e| self.err(index, rel, e))
    }
}
