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
//!
//! Extended attributes are set through the descriptor of what was just
//! created (`fsetxattr`), after its owner and mode (a `chown` clears file
//! capabilities): `user.*` and POSIX ACLs always, `trusted.*` and
//! `security.*` only as root. One that cannot be set (not root, not
//! permitted, not supported or too large for the file system) is counted
//! and reported, not fatal. Directory ACLs are applied with the directory's
//! other metadata at the end: a default ACL set earlier would be inherited
//! by everything extracted below it, an access ACL could lock the extractor
//! out. Attributes on symlinks and hard link entries are not applied (Linux
//! keeps no `user.*` on symlinks; a hard link shares its target's inode).
//!
//! An archive made elsewhere (`foreign`, an adopted snapshot) is input from
//! whoever could write a manifest: its regular files lose setuid and setgid
//! bits, and every `security.*` (file capabilities included) and `trusted.*`
//! attribute is dropped; each such file is counted. Archives volsnap
//! captured itself give back what the host had.
//!
//! Regular files are written sparse: a block of zeros becomes a hole (the
//! archive holds holes as zeros), and the length is set at the end.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Gid, Mode, OFlags, Timespec, Timestamps, Uid};

use super::archive::reader::{EntrySink, walk_checked};
use super::archive::{ArchiveError, ArchiveManifest, EntryInfo, EntryKind, VerifyLimits, VerifyReport};
use super::beneath::OpenDir;
use super::xattr::{self, Namespace, Xattr};

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
const NEW_FILE_FLAGS: OFlags =
    OFlags::WRONLY.union(OFlags::CREATE).union(OFlags::EXCL).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
const COPY_BUFFER: usize = 256 * 1024;
/// Granularity of hole detection: runs of zeros this long, aligned in the
/// file, are not written. 4 KiB is the block size of the common file systems.
const HOLE_BLOCK: usize = 4096;
/// Cap on the distinct directory ACL values held until the end of the
/// extraction (equal values are stored once: inherited ACLs repeat).
const MAX_DEFERRED_ACL_BYTES: usize = 8 << 20;

/// What the extractor is told about the archive.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExtractOptions<'a> {
    /// Made elsewhere (adopted): no setuid/setgid bits on files, no
    /// `security.*` or `trusted.*` attributes.
    pub foreign: bool,
    /// Counts the bytes of file content written, for `status.progress`.
    pub progress: Option<&'a AtomicU64>,
}

/// A count of entries, with the first one as an example.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// How many.
    pub count: u64,
    /// The first, as `<volume>/<path>` and, for attributes, why.
    pub example: Option<String>,
}

impl Tally {
    fn add(&mut self, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.example.is_none() {
            self.example = Some(example());
        }
    }
}

/// A finished extraction.
#[derive(Clone, Debug)]
pub struct Extracted {
    /// What the walker verified (counts, sha256).
    pub verified: VerifyReport,
    /// Files of a foreign archive whose setuid/setgid bits or privileged
    /// attributes (capabilities included) were dropped.
    pub stripped: Tally,
    /// Extended attributes that could not be set (and why, in the example).
    pub xattrs_not_restored: Tally,
}

/// One volume to extract: the archive's `volumes/<index>/` goes into `root`.
#[derive(Clone, Debug)]
pub struct ExtractVolume {
    /// Index in the archive.
    pub index: u32,
    /// Name the volume must have in the archive's manifest.
    pub name: String,
    /// An existing, empty directory that receives the volume's content; its
    /// own mode, owner and mtime are set from the volume root entry. Its
    /// path is for messages: everything is written through `dir`.
    pub root: PathBuf,
    /// The same directory, opened by the caller beneath a trusted
    /// descriptor. The extractor never resolves `root` itself.
    pub dir: OpenDir,
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
    extract_with(archive, volumes, limits, &ExtractOptions::default(), cancel).map(|x| x.verified)
}

/// [`extract`], told whether the archive is foreign, reporting what it did
/// not restore.
///
/// # Security
///
/// See the module documentation; with `options.foreign`, privileged
/// metadata is never applied.
pub fn extract_with<'a>(
    archive: &Path,
    volumes: &[ExtractVolume],
    limits: &VerifyLimits,
    options: &ExtractOptions<'a>,
    cancel: &'a dyn Fn() -> bool,
) -> Result<Extracted, ArchiveError> {
    let mut roots = HashMap::new();
    for v in volumes {
        let fd = v.dir.reopen().map_err(|e| write_error(&v.root, e))?;
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
        foreign: options.foreign,
        progress: options.progress,
        stripped: Tally::default(),
        xattrs_not_restored: Tally::default(),
        acl_pool: HashSet::new(),
        acl_pool_bytes: 0,
    };
    let verified = walk_checked(archive, limits, &mut sink)?;
    sink.finish_dirs()?;
    Ok(Extracted { verified, stripped: sink.stripped, xattrs_not_restored: sink.xattrs_not_restored })
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
    /// `system.posix_acl_access` and `_default`, shared between directories.
    acl_access: Option<Rc<[u8]>>,
    acl_default: Option<Rc<[u8]>>,
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
    foreign: bool,
    progress: Option<&'c AtomicU64>,
    stripped: Tally,
    xattrs_not_restored: Tally,
    /// Distinct directory ACL values held for [`Extractor::finish_dirs`].
    acl_pool: HashSet<Rc<[u8]>>,
    acl_pool_bytes: usize,
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

    /// The mode to set: as captured, except that setuid/setgid bits are
    /// dropped when the owner cannot be restored (not running as root): a
    /// file now owned by volsnap's user must not run as that user.
    fn mode_of(&self, m: &Meta) -> Mode {
        let mode = if self.restore_owners { m.mode & 0o7777 } else { m.mode & 0o1777 };
        Mode::from_raw_mode(mode)
    }

    /// `<volume name>/<rel>`, for reports.
    fn shown(&self, index: u32, rel: &[u8]) -> String {
        let name = self.root(index).map(|r| r.name.as_str()).unwrap_or("?");
        if rel.is_empty() { name.to_string() } else { format!("{name}/{}", String::from_utf8_lossy(rel)) }
    }

    /// Whether `x` may be applied: `Ok(())`, or why not. A foreign archive's
    /// privileged attributes are refused here (and counted by the caller).
    fn may_set(&self, x: &Xattr) -> Result<(), &'static str> {
        let ns = xattr::check_name(&x.name).map_err(|_| "not a name volsnap restores")?;
        if ns.privileged() && self.foreign {
            return Err("foreign");
        }
        if ns.privileged() && !self.restore_owners {
            return Err("needs root");
        }
        Ok(())
    }

    /// Applies the attributes of a file, or the non-ACL attributes of a
    /// directory (`skip_acls`), through `fd`. Returns whether a privileged
    /// one was dropped because the archive is foreign.
    fn apply_xattrs(
        &mut self,
        fd: &impl AsFd,
        xattrs: &[Xattr],
        skip_acls: bool,
        index: u32,
        rel: &[u8],
    ) -> io::Result<bool> {
        let mut stripped = false;
        for x in xattrs {
            if skip_acls && xattr::check_name(&x.name) == Ok(Namespace::Acl) {
                continue;
            }
            let why = match self.may_set(x) {
                Ok(()) => match xattr::set(fd, x) {
                    Ok(()) => continue,
                    Err(e) if xattr::is_not_settable(&e) => e.to_string(),
                    Err(e) => return Err(e),
                },
                Err("foreign") => {
                    stripped = true;
                    continue;
                }
                Err(why) => why.to_string(),
            };
            let shown = self.shown(index, rel);
            self.xattrs_not_restored.add(|| format!("{shown}: {}: {why}", String::from_utf8_lossy(&x.name)));
        }
        Ok(stripped)
    }

    /// A directory ACL value, stored once however many directories carry it.
    fn pooled_acl(&mut self, xattrs: &[Xattr], name: &[u8]) -> io::Result<Option<Rc<[u8]>>> {
        let Some(x) = xattrs.iter().find(|x| x.name == name) else { return Ok(None) };
        if let Some(v) = self.acl_pool.get(x.value.as_slice()) {
            return Ok(Some(v.clone()));
        }
        self.acl_pool_bytes += x.value.len();
        if self.acl_pool_bytes > MAX_DEFERRED_ACL_BYTES {
            return Err(io::Error::other(format!(
                "more than {MAX_DEFERRED_ACL_BYTES} bytes of distinct directory ACLs; refused to bound memory"
            )));
        }
        let v: Rc<[u8]> = Rc::from(x.value.as_slice());
        self.acl_pool.insert(v.clone());
        Ok(Some(v))
    }

    fn set_owner(&self, fd: impl AsFd, m: &Meta) -> io::Result<()> {
        if self.restore_owners {
            rustix::fs::fchown(fd, Some(uid(m.uid)?), Some(gid(m.gid)?))?;
        }
        Ok(())
    }

    /// Creates and writes a regular file: content (sparse), owner, mode,
    /// attributes, mtime, in that order (a `chown` clears setuid bits and
    /// capabilities; attributes do not move the mtime).
    fn write_file(
        &mut self,
        dir: &OwnedFd,
        index: u32,
        rel: &[u8],
        name: &[u8],
        info: &EntryInfo,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let m = Meta { mode: info.mode, uid: info.uid, gid: info.gid, mtime: info.mtime };
        // Tests make the creation of one file fail (`VOLSNAP_FAIL=extract:create:<path in the volume>`).
        #[cfg(feature = "fault-injection")]
        super::fault::fail(&format!("extract:create:{}", String::from_utf8_lossy(rel)))?;
        let name = cstr(name)?;
        let fd = rustix::fs::openat(dir, name.as_c_str(), NEW_FILE_FLAGS, Mode::from_raw_mode(0o600))?;
        let file = std::fs::File::from(fd);
        let mut off = 0u64;
        let mut trailing_hole = false;
        loop {
            // Whole buffers, so that blocks stay aligned in the file
            // whatever sizes the decompressor hands out.
            let mut n = 0;
            while n < self.buf.len() {
                match data.read(&mut self.buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // The walker reports read errors (truncation, corruption).
                    Err(e) => return Err(e),
                }
            }
            if n == 0 {
                break;
            }
            trailing_hole = write_sparse(&file, off, &self.buf[..n])?;
            off += n as u64;
            if let Some(p) = self.progress {
                p.fetch_add(n as u64, Ordering::Relaxed);
            }
            if (self.cancel)() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "extraction cancelled"));
            }
        }
        // A trailing hole: the length comes from here, not from a write.
        if trailing_hole {
            file.set_len(off)?;
        }
        // chown before chmod: chown clears setuid/setgid bits.
        self.set_owner(&file, &m)?;
        let mut mode = self.mode_of(&m);
        let mut stripped = false;
        if self.foreign && mode.as_raw_mode() & 0o6000 != 0 {
            mode = Mode::from_raw_mode(mode.as_raw_mode() & !0o6000);
            stripped = true;
        }
        rustix::fs::fchmod(&file, mode)?;
        stripped |= self.apply_xattrs(&file, &info.xattrs, false, index, rel)?;
        if stripped {
            let shown = self.shown(index, rel);
            self.stripped.add(|| shown);
        }
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
                rustix::fs::fchmod(&fd, self.mode_of(&d.info))?;
                // After the mode: setting an access ACL sets the mode's
                // permission bits to match it, as captured.
                let acls = [(xattr::ACL_ACCESS, &d.acl_access), (xattr::ACL_DEFAULT, &d.acl_default)];
                let acls: Vec<Xattr> = acls
                    .into_iter()
                    .filter_map(|(n, v)| v.as_ref().map(|v| Xattr { name: n.to_vec(), value: v.to_vec() }))
                    .collect();
                self.apply_xattrs(&fd, &acls, false, d.index, &d.rel)?;
                rustix::fs::futimens(&fd, &ts(d.info.mtime))?;
                Ok(())
            });
            self.parent = None;
            applied.map_err(|e| self.err(d.index, &d.rel, e))?;
        }
        Ok(())
    }
}

/// Writes `data` at `off`, leaving every aligned [`HOLE_BLOCK`] of zeros
/// unwritten (a hole in a new file). Runs of data are written in one call.
/// Returns whether the data ends with such a hole.
fn write_sparse(file: &std::fs::File, off: u64, data: &[u8]) -> io::Result<bool> {
    let mut pos = 0usize;
    let mut run: Option<usize> = None;
    while pos < data.len() {
        let abs = off + pos as u64;
        let to_boundary = HOLE_BLOCK - (abs % HOLE_BLOCK as u64) as usize;
        let end = (pos + to_boundary).min(data.len());
        let block = &data[pos..end];
        let hole = block.len() == HOLE_BLOCK && is_zero(block);
        match (hole, run) {
            (true, Some(start)) => {
                file.write_all_at(&data[start..pos], off + start as u64)?;
                run = None;
            }
            (false, None) => run = Some(pos),
            _ => {}
        }
        pos = end;
    }
    match run {
        Some(start) => {
            file.write_all_at(&data[start..], off + start as u64)?;
            Ok(false)
        }
        None => Ok(!data.is_empty()),
    }
}

/// Whether `b` is all zeros (eight bytes at a time).
fn is_zero(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(8);
    words.all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0) && words.remainder().iter().all(|&x| x == 0)
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
                    if !info.xattrs.is_empty() {
                        let fd = self.open_dir(index, rel)?;
                        if self.apply_xattrs(&fd, &info.xattrs, true, index, rel)? {
                            let shown = self.shown(index, rel);
                            self.stripped.add(|| shown);
                        }
                    }
                    let acl_access = self.pooled_acl(&info.xattrs, xattr::ACL_ACCESS)?;
                    let acl_default = self.pooled_acl(&info.xattrs, xattr::ACL_DEFAULT)?;
                    self.dirs.push(DirMeta { index, rel: rel.to_vec(), info: meta, acl_access, acl_default });
                }
                EntryKind::File => {
                    let dir = self.open_dir(index, parent_rel)?;
                    self.write_file(&dir, index, rel, name, info, data)?;
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

#[cfg(test)]
mod tests {
    //! The extractor against hostile archives, built byte by byte: every case
    //! must fail, and nothing outside the destination roots may change (the
    //! whole sandbox around them is compared, modes and ctimes included).
    //! One round trip checks that a sound archive is restored faithfully, so
    //! these tests cannot pass with an extractor that refuses everything.

    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::io::Write as _;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    use tar::{EntryType, Header};

    use sha2::Digest as _;

    use super::*;
    use crate::engine::archive::writer::pax_record;

    /// One raw tar entry, written exactly as given (no normalisation).
    #[derive(Clone)]
    struct E {
        name: Vec<u8>,
        kind: u8,
        data: Vec<u8>,
        link: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        /// Header size field when it must differ from `data.len()`.
        size: Option<u64>,
        /// A GNU header instead of ustar.
        gnu: bool,
    }

    fn e(name: &str, kind: u8, data: &[u8]) -> E {
        E::raw(name.as_bytes(), kind, data)
    }

    fn dir(name: &str) -> E {
        e(name, b'5', b"").mode(0o755)
    }

    fn file(name: &str, data: &[u8]) -> E {
        e(name, b'0', data)
    }

    fn symlink(name: &str, target: &str) -> E {
        link(name, b'2', target)
    }

    fn hardlink(name: &str, target: &str) -> E {
        link(name, b'1', target)
    }

    fn link(name: &str, kind: u8, target: &str) -> E {
        let mut en = E::raw(name.as_bytes(), kind, b"");
        en.link = target.as_bytes().to_vec();
        en.mode = 0o777;
        en
    }

    /// A pax `x` header for the next entry.
    fn pax(records: &[(&str, &[u8])]) -> E {
        let mut data = Vec::new();
        for (k, v) in records {
            pax_record(&mut data, k, v);
        }
        E::raw(b"././@PaxHeader", b'x', &data)
    }

    impl E {
        fn raw(name: &[u8], kind: u8, data: &[u8]) -> E {
            E {
                name: name.to_vec(),
                kind,
                data: data.to_vec(),
                link: Vec::new(),
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 1_700_000_000,
                size: None,
                gnu: false,
            }
        }
        fn mode(mut self, mode: u32) -> E {
            self.mode = mode;
            self
        }
        fn owner(mut self, uid: u64, gid: u64) -> E {
            self.uid = uid;
            self.gid = gid;
            self
        }
        fn mtime(mut self, mtime: u64) -> E {
            self.mtime = mtime;
            self
        }
        fn size(mut self, size: u64) -> E {
            self.size = Some(size);
            self
        }
        fn gnu(mut self) -> E {
            self.gnu = true;
            self
        }

        fn header(&self) -> Header {
            let mut h = if self.gnu { Header::new_gnu() } else { Header::new_ustar() };
            assert!(self.name.len() <= 100, "test entry name too long for a raw header");
            h.as_old_mut().name[..self.name.len()].copy_from_slice(&self.name);
            h.set_mode(self.mode);
            h.set_uid(self.uid);
            h.set_gid(self.gid);
            h.set_mtime(self.mtime);
            h.set_size(self.size.unwrap_or(self.data.len() as u64));
            h.set_entry_type(EntryType::new(self.kind));
            if let Some(g) = h.as_gnu_mut() {
                // An empty sparse map: the tar crate accepts it, so the
                // entry type itself is what must be refused.
                g.set_real_size(0);
            }
            if !self.link.is_empty() {
                h.set_link_name_literal(&self.link).unwrap();
            }
            h.set_cksum();
            h
        }
    }

    fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut out = Vec::new();
        for en in entries {
            out.extend_from_slice(en.header().as_bytes());
            out.extend_from_slice(&en.data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn manifest_json(version: u32, volumes: &[(u32, &str)]) -> Vec<u8> {
        let vols: Vec<serde_json::Value> = volumes
            .iter()
            .map(|(i, n)| serde_json::json!({"index": i, "name": n, "source": format!("/srv/{n}")}))
            .collect();
        serde_json::to_vec_pretty(&serde_json::json!({
            "formatVersion": version,
            "snapshot": {"namespace": "default", "name": "snap-1", "uid": "u1"},
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "volumes": vols,
        }))
        .unwrap()
    }

    fn manifest() -> E {
        file("volsnap.json", &manifest_json(1, &[(0, "data"), (1, "conf")]))
    }

    /// A sound two-volume archive the hostile entries are appended to.
    fn base() -> Vec<E> {
        vec![
            manifest(),
            dir("volumes/0/"),
            file("volumes/0/file", b"hello"),
            dir("volumes/1/"),
            file("volumes/1/conf", b"k=v"),
        ]
    }

    fn with(extra: Vec<E>) -> Vec<E> {
        let mut v = base();
        v.extend(extra);
        v
    }

    /// What an lstat walk records per path: enough to see any write, chmod,
    /// chown, utime, creation or removal (ctime catches metadata changes
    /// even when they were undone).
    #[derive(Debug, PartialEq)]
    struct Node {
        kind: &'static str,
        mode: u32,
        uid: u32,
        gid: u32,
        size: u64,
        mtime: (i64, i64),
        ctime: (i64, i64),
        /// File content or symlink target.
        content: Vec<u8>,
    }

    fn node(path: &Path) -> Node {
        let md = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let ft = md.file_type();
        let (kind, content) = if ft.is_symlink() {
            ("symlink", std::fs::read_link(path).unwrap().as_os_str().as_bytes().to_vec())
        } else if ft.is_file() {
            ("file", std::fs::read(path).unwrap())
        } else if ft.is_dir() {
            ("dir", Vec::new())
        } else {
            ("other", Vec::new())
        };
        Node {
            kind,
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            content,
        }
    }

    /// Every path under `top` (itself included), never following symlinks,
    /// not descending into `skip`.
    fn listing(top: &Path, skip: &[PathBuf]) -> BTreeMap<PathBuf, Node> {
        let mut out = BTreeMap::new();
        let mut stack = vec![top.to_path_buf()];
        while let Some(p) = stack.pop() {
            if skip.contains(&p) {
                continue;
            }
            let n = node(&p);
            if n.kind == "dir" {
                for c in std::fs::read_dir(&p).unwrap() {
                    stack.push(c.unwrap().path());
                }
            }
            out.insert(p, n);
        }
        out
    }

    fn assert_same(before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>, case: &str) {
        let mut diffs = Vec::new();
        for (p, b) in before {
            match after.get(p) {
                None => diffs.push(format!("removed: {}", p.display())),
                Some(a) if a != b => {
                    diffs.push(format!("changed: {}\n    before {b:?}\n    after  {a:?}", p.display()))
                }
                Some(_) => {}
            }
        }
        for p in after.keys().filter(|p| !before.contains_key(*p)) {
            diffs.push(format!("created: {}", p.display()));
        }
        assert!(diffs.is_empty(), "{case}: something outside the destination changed:\n  {}", diffs.join("\n  "));
    }

    /// A temporary directory holding a sentinel `outside/` (which hostile
    /// symlinks and names point at), the archives, and the destination roots.
    struct Sandbox {
        _tmp: tempfile::TempDir,
        top: PathBuf,
        outside: PathBuf,
        n: usize,
    }

    /// Mode of the sentinel directory: anything that chmods it (0777 is what
    /// the hostile directory entries ask for) shows.
    const OUTSIDE_MODE: u32 = 0o750;

    impl Sandbox {
        fn new() -> Sandbox {
            let tmp = tempfile::tempdir().unwrap();
            let top = tmp.path().canonicalize().unwrap();
            let outside = top.join("outside");
            std::fs::create_dir_all(outside.join("sub")).unwrap();
            std::fs::write(outside.join("keep"), b"precious\n").unwrap();
            std::fs::set_permissions(outside.join("keep"), std::fs::Permissions::from_mode(0o640)).unwrap();
            std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(OUTSIDE_MODE)).unwrap();
            assert!(outside.as_os_str().len() < 80, "sandbox path too long for ustar link names");
            Sandbox { _tmp: tmp, top, outside, n: 0 }
        }

        fn out(&self) -> String {
            self.outside.to_str().unwrap().to_string()
        }

        /// Writes the archive and fresh empty roots for `volumes`, extracts,
        /// and checks that nothing but the roots changed.
        fn extract_bytes(
            &mut self,
            case: &str,
            bytes: &[u8],
            volumes: &[(u32, &str)],
            limits: &VerifyLimits,
        ) -> (Result<VerifyReport, ArchiveError>, Vec<PathBuf>) {
            self.n += 1;
            let archive = self.top.join(format!("a{}.tar.gz", self.n));
            std::fs::write(&archive, bytes).unwrap();
            let mut roots = Vec::new();
            let mut ev = Vec::new();
            for (index, name) in volumes {
                let root = self.top.join(format!("root-{}-{index}", self.n));
                std::fs::create_dir(&root).unwrap();
                roots.push(root.clone());
                ev.push(ExtractVolume {
                    index: *index,
                    name: name.to_string(),
                    dir: OpenDir::open_trusted(&root).unwrap(),
                    root,
                });
            }
            let before = listing(&self.top, &roots);
            let result = extract(&archive, &ev, limits, &|| false);
            assert_same(&before, &listing(&self.top, &roots), case);
            (result, roots)
        }

        fn extract_entries(&mut self, case: &str, entries: &[E]) -> (Result<VerifyReport, ArchiveError>, Vec<PathBuf>) {
            self.extract_bytes(case, &gz(&tar_of(entries)), &[(0, "data"), (1, "conf")], &VerifyLimits::default())
        }
    }

    type Check = fn(&ArchiveError) -> bool;

    /// A hostile archive, the error variant it must produce and a piece of
    /// the message (which must name the problem).
    struct Case {
        name: &'static str,
        entries: Vec<E>,
        variant: Check,
        message: String,
    }

    fn case(name: &'static str, entries: Vec<E>, variant: Check, message: &str) -> Case {
        Case { name, entries, variant, message: message.to_string() }
    }

    fn unsafe_path(e: &ArchiveError) -> bool {
        matches!(e, ArchiveError::UnsafePath { .. })
    }
    fn duplicate(e: &ArchiveError) -> bool {
        matches!(e, ArchiveError::DuplicateEntry { .. })
    }
    fn bad_hardlink(e: &ArchiveError) -> bool {
        matches!(e, ArchiveError::BadHardlink { .. })
    }
    fn unsupported(e: &ArchiveError) -> bool {
        matches!(e, ArchiveError::UnsupportedEntryType { .. })
    }
    fn corrupt(e: &ArchiveError) -> bool {
        matches!(e, ArchiveError::Corrupt(_))
    }
    fn manifest_missing(e: &ArchiveError) -> bool {
        matches!(e, ArchiveError::ManifestMissing(_))
    }
    fn manifest_invalid(e: &ArchiveError) -> bool {
        matches!(e, ArchiveError::ManifestInvalid(_))
    }

    /// The hostile archives; `out` is the sentinel directory's absolute path.
    fn hostile_cases(out: &str) -> Vec<Case> {
        let dotdot = "name contains a '..' component";
        let via_symlink = "is a symlink entry, not a directory";
        // A tar stream whose first member's data hides a header: readers that
        // take the ustar size see one entry, readers that take the pax size
        // (0) see `volumes/0/../../outside/smuggled` (RUSTSEC-2026-0068).
        let hidden = tar_of(&[file("volumes/0/../../outside/smuggled", b"pwned")]);
        let hidden = hidden[..hidden.len() - 1024].to_vec();
        let hidden_len = hidden.len() as u64;
        vec![
            // 1. Traversal and absolute names.
            case("dotdot file", with(vec![file("volumes/0/../../outside/pwned", b"x")]), unsafe_path, dotdot),
            case("dotdot dir", with(vec![dir("volumes/0/../../outside/newdir/")]), unsafe_path, dotdot),
            case("dotdot symlink", with(vec![symlink("volumes/0/../../outside/l", "/")]), unsafe_path, dotdot),
            case("dotdot in the middle", with(vec![file("volumes/0/a/../../1/conf2", b"x")]), unsafe_path, dotdot),
            case(
                "dotdot in a GNU long name",
                with(vec![
                    E::raw(b"././@LongLink", b'L', b"volumes/0/../../../outside/long\0"),
                    file("volumes/0/short", b"x"),
                ]),
                unsafe_path,
                dotdot,
            ),
            case(
                "dotdot in a pax path",
                with(vec![pax(&[("path", b"volumes/0/../../outside/paxed")]), file("volumes/0/short", b"x")]),
                unsafe_path,
                dotdot,
            ),
            case("absolute name", with(vec![file(&format!("{out}/pwned"), b"x")]), unsafe_path, "absolute name"),
            case("absolute /etc name", with(vec![file("/etc/volsnap-hostile-test", b"x")]), unsafe_path, "absolute"),
            case(
                "absolute pax path",
                with(vec![pax(&[("path", format!("{out}/paxed").as_bytes())]), file("volumes/0/short", b"x")]),
                unsafe_path,
                "absolute name",
            ),
            case("dot component", with(vec![file("./volumes/0/x", b"x")]), unsafe_path, "'.' component"),
            case("outside volumes/", with(vec![file("pwned", b"x")]), unsafe_path, "outside volumes/<index>/"),
            case(
                "NUL in a pax path",
                with(vec![pax(&[("path", b"volumes/0/a\0/../../x")]), file("volumes/0/short", b"x")]),
                |e| unsafe_path(e) || corrupt(e),
                "volumes/0/a",
            ),
            // 2. RUSTSEC-2018-0002: write through a symlink.
            case(
                "file through an absolute symlink",
                with(vec![symlink("volumes/0/l", out), file("volumes/0/l/pwned", b"x")]),
                unsafe_path,
                via_symlink,
            ),
            case(
                "file through a relative symlink",
                with(vec![symlink("volumes/0/l", "../outside"), file("volumes/0/l/pwned", b"x")]),
                unsafe_path,
                via_symlink,
            ),
            case(
                "deep file through a nested symlink",
                with(vec![dir("volumes/0/a/"), symlink("volumes/0/a/l", out), file("volumes/0/a/l/b/c", b"x")]),
                unsafe_path,
                via_symlink,
            ),
            case(
                "hard link created through a symlink",
                with(vec![symlink("volumes/0/l", out), hardlink("volumes/0/l/h", "volumes/0/file")]),
                unsafe_path,
                via_symlink,
            ),
            case(
                "symlink created through a symlink",
                with(vec![symlink("volumes/0/l", out), symlink("volumes/0/l/s", "/etc/passwd")]),
                unsafe_path,
                via_symlink,
            ),
            case(
                "file below a file",
                with(vec![file("volumes/0/file/x", b"x")]),
                unsafe_path,
                "is a file entry, not a directory",
            ),
            // 3. RUSTSEC-2021-0080: a directory below a symlink.
            case(
                "directory through a symlink",
                with(vec![symlink("volumes/0/l", out), dir("volumes/0/l/newdir/")]),
                unsafe_path,
                via_symlink,
            ),
            // 4. RUSTSEC-2026-0067: a directory entry naming a symlink (its
            // mode would be applied through the link).
            case(
                "chmod through a symlink",
                with(vec![symlink("volumes/0/d", out), dir("volumes/0/d/").mode(0o777)]),
                duplicate,
                "duplicate entry \"volumes/0/d/\"",
            ),
            case(
                "chmod through a symlink, other spelling",
                with(vec![symlink("volumes/0/d", out), dir("volumes/0//d//").mode(0o777)]),
                duplicate,
                "duplicate entry",
            ),
            case(
                "volume root as a symlink",
                vec![manifest(), symlink("volumes/0", out), dir("volumes/0/").mode(0o777)],
                unsafe_path,
                "the root of volume 0 must be a directory",
            ),
            // 5. RUSTSEC-2026-0068: pax size and ustar size disagree.
            case(
                "pax size smaller than the ustar size",
                with(vec![
                    pax(&[("size", b"0")]),
                    E::raw(b"volumes/0/a", b'0', &hidden).size(hidden_len),
                    file("volumes/0/b", b"x"),
                ]),
                corrupt,
                &format!("pax size 0 disagrees with the header size {hidden_len}"),
            ),
            case(
                "pax size larger than the ustar size",
                with(vec![
                    pax(&[("size", hidden_len.to_string().as_bytes())]),
                    E::raw(b"volumes/0/a", b'0', &hidden).size(5),
                    file("volumes/0/b", b"x"),
                ]),
                corrupt,
                &format!("pax size {hidden_len} disagrees with the header size 5"),
            ),
            case(
                "pax size that is not a number",
                with(vec![pax(&[("size", b"12abc")]), file("volumes/0/a", b"")]),
                corrupt,
                "size",
            ),
            case(
                "two pax path records",
                with(vec![pax(&[("path", b"volumes/0/a"), ("path", b"/etc/x")]), file("volumes/0/a", b"x")]),
                |e| corrupt(e) || unsafe_path(e),
                "volumes/0/a",
            ),
            // 6. node-tar CVE-2021-32803: a directory replaced by a symlink.
            case(
                "directory then symlink then file",
                with(vec![dir("volumes/0/a/"), symlink("volumes/0/a", out), file("volumes/0/a/x", b"x")]),
                duplicate,
                "duplicate entry \"volumes/0/a\"",
            ),
            case(
                "implicit directory then symlink then file",
                with(vec![file("volumes/0/a/y", b"y"), symlink("volumes/0/a", out), file("volumes/0/a/x", b"x")]),
                unsafe_path,
                "earlier entries use it as a directory, but it is a symlink",
            ),
            // 8. Hard links.
            case(
                "hard link into another volume",
                with(vec![hardlink("volumes/0/h", "volumes/1/conf")]),
                bad_hardlink,
                "the target is outside the link's volume",
            ),
            case(
                "hard link to an absolute path",
                with(vec![hardlink("volumes/0/h", &format!("{out}/keep"))]),
                bad_hardlink,
                "unsafe target: absolute name",
            ),
            case(
                "hard link to /etc/passwd",
                with(vec![hardlink("volumes/0/h", "/etc/passwd")]),
                bad_hardlink,
                "unsafe target: absolute name",
            ),
            case(
                "hard link with ..",
                with(vec![hardlink("volumes/0/h", "volumes/0/../../outside/keep")]),
                bad_hardlink,
                "unsafe target: name contains a '..' component",
            ),
            case(
                "hard link before its target",
                with(vec![hardlink("volumes/0/h", "volumes/0/later"), file("volumes/0/later", b"x")]),
                bad_hardlink,
                "the target is not an earlier entry",
            ),
            case(
                "hard link to a symlink",
                with(vec![symlink("volumes/0/s", &format!("{out}/keep")), hardlink("volumes/0/h", "volumes/0/s")]),
                bad_hardlink,
                "the target is a symlink, not a regular file",
            ),
            case(
                "hard link to a directory",
                with(vec![dir("volumes/0/sub/"), hardlink("volumes/0/h", "volumes/0/sub")]),
                bad_hardlink,
                "the target is a directory, not a regular file",
            ),
            case(
                "hard link to the volume root",
                with(vec![hardlink("volumes/0/h", "volumes/0")]),
                bad_hardlink,
                "the target is a directory",
            ),
            case(
                "hard link to the manifest",
                with(vec![hardlink("volumes/0/h", "volsnap.json")]),
                bad_hardlink,
                "outside the link's volume",
            ),
            case(
                "hard link then a file of the same name",
                with(vec![hardlink("volumes/0/h", "volumes/0/file"), file("volumes/0/h", b"overwrite")]),
                duplicate,
                "duplicate entry \"volumes/0/h\"",
            ),
            // 9. Entry types.
            case("character device", with(vec![e("volumes/0/dev", b'3', b"")]), unsupported, "character device"),
            case("block device", with(vec![e("volumes/0/dev", b'4', b"")]), unsupported, "block device"),
            case("FIFO", with(vec![e("volumes/0/fifo", b'6', b"")]), unsupported, "FIFO"),
            case("contiguous file", with(vec![e("volumes/0/c", b'7', b"x")]), unsupported, "contiguous file"),
            case("GNU sparse file", with(vec![e("volumes/0/s", b'S', b"").gnu()]), unsupported, "GNU sparse file"),
            case(
                "pax sparse file",
                with(vec![pax(&[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")]), file("volumes/0/s", b"")]),
                unsupported,
                "GNU sparse file",
            ),
            case("pax global header", with(vec![pax_global()]), unsupported, "pax global header"),
            case("GNU volume label", with(vec![e("volumes/0/v", b'V', b"")]), unsupported, "entry of type 'V'"),
            case(
                "V7 regular file named like a directory",
                with(vec![e("volumes/0/d/", b'\0', b"")]),
                unsafe_path,
                "a regular file entry whose name ends with '/'",
            ),
            // 10. Manifest and volume indexes.
            case(
                "unknown volume index",
                with(vec![file("volumes/7/x", b"x")]),
                |e| matches!(e, ArchiveError::UnknownVolume { index: 7, .. }),
                "volume index 7",
            ),
            case(
                "non-canonical volume index",
                with(vec![file("volumes/00/x", b"x")]),
                unsafe_path,
                "not a volume index",
            ),
            case(
                "no manifest",
                base().into_iter().skip(1).collect(),
                manifest_missing,
                "the first entry must be the file volsnap.json",
            ),
            case(
                "manifest second",
                {
                    let mut v = base();
                    v.swap(0, 1);
                    v
                },
                manifest_missing,
                "volsnap.json",
            ),
            case(
                "manifest as a symlink",
                {
                    let mut v = base();
                    v[0] = symlink("volsnap.json", "/etc/passwd");
                    v
                },
                manifest_missing,
                "found symlink",
            ),
            case(
                "malformed manifest",
                {
                    let mut v = base();
                    v[0] = file("volsnap.json", b"{\"formatVersion\": 1, ");
                    v
                },
                manifest_invalid,
                "invalid volsnap.json",
            ),
            case(
                "wrong formatVersion",
                {
                    let mut v = base();
                    v[0] = file("volsnap.json", &manifest_json(2, &[(0, "data"), (1, "conf")]));
                    v
                },
                manifest_invalid,
                "format version 2 is not supported",
            ),
            case(
                "second manifest",
                with(vec![file("volsnap.json", &manifest_json(1, &[(0, "data"), (1, "conf"), (7, "x")]))]),
                duplicate,
                "volsnap.json",
            ),
            // 12. Duplicates.
            case("same file twice", with(vec![file("volumes/0/file", b"again")]), duplicate, "volumes/0/file"),
            case("file then directory", with(vec![dir("volumes/0/file/")]), duplicate, "volumes/0/file"),
            case(
                "directory then file",
                with(vec![dir("volumes/0/d/"), file("volumes/0/d", b"x")]),
                duplicate,
                "volumes/0/d",
            ),
            case("file then symlink", with(vec![symlink("volumes/0/file", out)]), duplicate, "volumes/0/file"),
            case(
                "symlink then file",
                with(vec![symlink("volumes/0/l", &format!("{out}/keep")), file("volumes/0/l", b"x")]),
                duplicate,
                "volumes/0/l",
            ),
            case("second volume root", with(vec![dir("volumes/0/")]), duplicate, "volumes/0"),
        ]
    }

    fn pax_global() -> E {
        let mut data = Vec::new();
        pax_record(&mut data, "comment", b"hello");
        E::raw(b"pax_global_header", b'g', &data)
    }

    #[test]
    fn hostile_archives_are_refused_and_nothing_outside_changes() {
        let mut sb = Sandbox::new();
        let out = sb.out();
        let cases = hostile_cases(&out);
        assert!(cases.len() >= 50, "the table lost cases: {}", cases.len());
        for c in cases {
            let (result, _) = sb.extract_entries(c.name, &c.entries);
            let err = match result {
                Ok(r) => panic!("{}: a hostile archive was extracted: {r:?}", c.name),
                Err(e) => e,
            };
            assert!((c.variant)(&err), "{}: unexpected error kind: {err:?}", c.name);
            assert!(
                err.to_string().contains(&c.message),
                "{}: message {:?} lacks {:?}",
                c.name,
                err.to_string(),
                c.message
            );
        }
        assert!(!Path::new("/etc/volsnap-hostile-test").exists());
    }

    /// The same cases as plain `verify` sees them: extraction and
    /// verification reject with the same error (one walker), so what
    /// `volsnap archive verify` and adoption report is what restore does.
    #[test]
    fn verify_agrees_with_extract() {
        let mut sb = Sandbox::new();
        let out = sb.out();
        for c in hostile_cases(&out) {
            sb.n += 1;
            let p = sb.top.join(format!("v{}.tar.gz", sb.n));
            std::fs::write(&p, gz(&tar_of(&c.entries))).unwrap();
            let err = crate::engine::archive::verify(&p, &VerifyLimits::default()).unwrap_err();
            assert!((c.variant)(&err), "{}: {err:?}", c.name);
            assert!(err.to_string().contains(&c.message), "{}: {err}", c.name);
        }
    }

    /// A sound archive with a big, incompressible-enough file, for damage.
    fn sound_big() -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..400_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        gz(&tar_of(&with(vec![file("volumes/0/big", &data), file("volumes/0/after", b"after")])))
    }

    #[test]
    fn truncated_and_corrupted_streams_are_refused() {
        let mut sb = Sandbox::new();
        let good = sound_big();
        let vols = [(0, "data"), (1, "conf")];
        let (ok, _) = sb.extract_bytes("sound", &good, &vols, &VerifyLimits::default());
        ok.expect("the undamaged archive extracts");

        let (r, roots) =
            sb.extract_bytes("cut in the middle", &good[..good.len() / 2], &vols, &VerifyLimits::default());
        let err = r.unwrap_err();
        assert!(matches!(err, ArchiveError::Truncated(_)), "{err:?}");
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(!roots[0].join("after").exists(), "nothing after the cut can exist");

        let (r, _) = sb.extract_bytes("cut before the CRC", &good[..good.len() - 4], &vols, &VerifyLimits::default());
        let err = r.unwrap_err();
        assert!(matches!(err, ArchiveError::Truncated(_) | ArchiveError::Corrupt(_)), "{err:?}");

        for at in [good.len() / 3, good.len() / 2, good.len() - 6] {
            let mut bad = good.clone();
            bad[at] ^= 0x55;
            let (r, _) = sb.extract_bytes("corrupted byte", &bad, &vols, &VerifyLimits::default());
            let err = r.unwrap_err();
            assert!(matches!(err, ArchiveError::Corrupt(_) | ArchiveError::Truncated(_)), "byte {at}: {err:?}");
        }

        let (r, _) = sb.extract_bytes("not an archive", b"just some text", &vols, &VerifyLimits::default());
        assert!(matches!(r.unwrap_err(), ArchiveError::NotAnArchive(_)));
    }

    #[test]
    fn expansion_and_entry_caps_are_enforced_before_writing() {
        let mut sb = Sandbox::new();
        // 8 MiB of zeros compresses to a few KiB.
        let bomb = gz(&tar_of(&with(vec![file("volumes/0/zeros", &vec![0u8; 8 << 20])])));
        assert!(bomb.len() < 64 << 10, "the bomb should be small: {}", bomb.len());
        let vols = [(0, "data")];
        let limits = VerifyLimits { max_expanded_bytes: Some(1 << 20), ..Default::default() };
        let (r, roots) = sb.extract_bytes("bomb", &bomb, &vols, &limits);
        let err = r.unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge { limit } if limit == 1 << 20), "{err:?}");
        assert!(err.to_string().contains("decompression bomb"), "{err}");
        assert!(!roots[0].join("zeros").exists(), "the oversized file must not be started");

        // The same archive under a cap it fits in extracts.
        let limits = VerifyLimits { max_expanded_bytes: Some(9 << 20), ..Default::default() };
        let (r, roots) = sb.extract_bytes("fits", &bomb, &vols, &limits);
        r.unwrap();
        assert_eq!(std::fs::metadata(roots[0].join("zeros")).unwrap().len(), 8 << 20);

        let many: Vec<E> = (0..100).map(|i| file(&format!("volumes/0/f{i}"), b"x")).collect();
        let limits = VerifyLimits { max_entries: Some(50), ..Default::default() };
        let (r, roots) = sb.extract_bytes("entries", &gz(&tar_of(&with(many))), &vols, &limits);
        let err = r.unwrap_err();
        assert!(matches!(err, ArchiveError::TooManyEntries { limit: 50 }), "{err:?}");
        assert!(!roots[0].join("f60").exists());
    }

    #[test]
    fn checksum_mismatch_is_reported() {
        let mut sb = Sandbox::new();
        let bytes = gz(&tar_of(&base()));
        let limits = VerifyLimits { expected_sha256: Some("ab".repeat(32)), ..Default::default() };
        let (r, _) = sb.extract_bytes("sha", &bytes, &[(0, "data")], &limits);
        let err = r.unwrap_err();
        assert!(matches!(err, ArchiveError::ChecksumMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains(&"ab".repeat(32)), "{err}");
    }

    #[test]
    fn manifest_must_match_the_requested_volumes() {
        let mut sb = Sandbox::new();
        let bytes = gz(&tar_of(&base()));
        let (r, _) = sb.extract_bytes("renamed", &bytes, &[(0, "other")], &VerifyLimits::default());
        let err = r.unwrap_err();
        assert!(matches!(&err, ArchiveError::ManifestInvalid(m) if m.contains("\"other\"")), "{err:?}");
        let (r, _) = sb.extract_bytes("missing index", &bytes, &[(5, "data")], &VerifyLimits::default());
        let err = r.unwrap_err();
        assert!(matches!(&err, ArchiveError::ManifestInvalid(m) if m.contains("no volume index 5")), "{err:?}");
    }

    /// Defence in depth below the walker: a root that already holds a
    /// symlink (CVE-2025-45582: the first of two archives planted it) must
    /// not be written through, whatever the archive says.
    #[test]
    fn symlinks_already_on_disk_are_never_followed() {
        let mut sb = Sandbox::new();
        let out = sb.out();
        let keep = format!("{out}/keep");
        // Planted in the root before extraction: `l` -> the outside
        // directory, `k` -> a file in it.
        let cases: Vec<(&str, &str, Vec<E>)> = vec![
            ("file below", "l", with(vec![file("volumes/0/l/x", b"pwned")])),
            ("directory below", "l", with(vec![dir("volumes/0/l/newdir/").mode(0o777)])),
            ("directory entry on it", "l", with(vec![dir("volumes/0/l/").mode(0o777)])),
            ("file on a link to a directory", "l", with(vec![file("volumes/0/l", b"pwned")])),
            ("file on a link to a file", "k", with(vec![file("volumes/0/k", b"pwned")])),
            ("hard link on a link to a file", "k", with(vec![hardlink("volumes/0/k", "volumes/0/file")])),
            ("symlink on it", "k", with(vec![symlink("volumes/0/k", "/")])),
            ("directory on a link to a file", "k", with(vec![dir("volumes/0/k/").mode(0o777)])),
        ];
        for (name, planted, entries) in cases {
            sb.n += 1;
            let archive = sb.top.join(format!("pre{}.tar.gz", sb.n));
            std::fs::write(&archive, gz(&tar_of(&entries))).unwrap();
            let root = sb.top.join(format!("pre-root-{}", sb.n));
            std::fs::create_dir(&root).unwrap();
            std::os::unix::fs::symlink(&out, root.join("l")).unwrap();
            std::os::unix::fs::symlink(&keep, root.join("k")).unwrap();
            let before = listing(&sb.top, std::slice::from_ref(&root));
            let vols = [ExtractVolume {
                index: 0,
                name: "data".into(),
                dir: OpenDir::open_trusted(&root).unwrap(),
                root: root.clone(),
            }];
            let err = extract(&archive, &vols, &VerifyLimits::default(), &|| false).unwrap_err();
            assert!(matches!(err, ArchiveError::Extract { .. }), "{name}: {err:?}");
            assert!(err.to_string().contains(root.join(planted).to_str().unwrap()), "{name}: {err}");
            assert_same(&before, &listing(&sb.top, std::slice::from_ref(&root)), name);
            assert_eq!(std::fs::read_link(root.join("l")).unwrap(), sb.outside, "{name}");
            assert_eq!(std::fs::read_link(root.join("k")).unwrap(), Path::new(&keep), "{name}");
        }
    }

    /// A directory swapped for a symlink while the extraction runs (another
    /// process with write access to the staging area): later entries and the
    /// final chmod of directories (RUSTSEC-2026-0067) must not follow it.
    #[test]
    fn directory_swapped_for_a_symlink_mid_extraction_is_not_followed() {
        for tail in [vec![file("volumes/0/d/after", b"pwned")], vec![]] {
            let mut sb = Sandbox::new();
            let entries = with(
                [
                    vec![dir("volumes/0/d/").mode(0o777), file("volumes/0/d/marker", b"m"), file("volumes/0/e", b"e")],
                    tail.clone(),
                ]
                .concat(),
            );
            let archive = sb.top.join("swap.tar.gz");
            std::fs::write(&archive, gz(&tar_of(&entries))).unwrap();
            let root = sb.top.join("root");
            std::fs::create_dir(&root).unwrap();
            let before = listing(&sb.top, std::slice::from_ref(&root));
            let swapped = Cell::new(false);
            let (d, outside) = (root.join("d"), sb.outside.clone());
            let cancel = || {
                if !swapped.get() && d.join("marker").exists() {
                    std::fs::rename(&d, root.join("d-moved")).unwrap();
                    std::os::unix::fs::symlink(&outside, &d).unwrap();
                    swapped.set(true);
                }
                false
            };
            let vols = [ExtractVolume {
                index: 0,
                name: "data".into(),
                dir: OpenDir::open_trusted(&root).unwrap(),
                root: root.clone(),
            }];
            let err = extract(&archive, &vols, &VerifyLimits::default(), &cancel).unwrap_err();
            assert!(swapped.get(), "the swap did not happen");
            assert!(matches!(err, ArchiveError::Extract { .. }), "{err:?}");
            assert!(err.to_string().contains(d.to_str().unwrap()), "{err}");
            assert_same(&before, &listing(&sb.top, std::slice::from_ref(&root)), "swapped directory");
            assert_eq!(std::fs::metadata(&sb.outside).unwrap().mode() & 0o7777, OUTSIDE_MODE);
            sb.n += 1;
        }
    }

    #[test]
    fn root_that_is_a_symlink_is_refused() {
        let sb = Sandbox::new();
        let bytes = gz(&tar_of(&base()));
        let archive = sb.top.join("a.tar.gz");
        std::fs::write(&archive, bytes).unwrap();
        let root = sb.top.join("root-link");
        std::os::unix::fs::symlink(&sb.outside, &root).unwrap();
        // Roots reach the extractor as descriptors; one that is a symlink
        // cannot even be opened as one.
        let err = OpenDir::open_trusted(&root).unwrap_err();
        assert!(matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)), "{err}");
        let _ = archive;
    }

    #[test]
    fn cancel_stops_the_extraction() {
        let mut sb = Sandbox::new();
        let bytes = gz(&tar_of(&base()));
        let archive = sb.top.join("a.tar.gz");
        std::fs::write(&archive, bytes).unwrap();
        let root = sb.top.join("root");
        std::fs::create_dir(&root).unwrap();
        let vols = [ExtractVolume {
            index: 0,
            name: "data".into(),
            dir: OpenDir::open_trusted(&root).unwrap(),
            root: root.clone(),
        }];
        let err = extract(&archive, &vols, &VerifyLimits::default(), &|| true).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Extract { source, .. } if source.kind() == io::ErrorKind::Interrupted),
            "{err:?}"
        );
        assert!(!root.join("file").exists());
        sb.n += 1;
    }

    #[test]
    fn zero_blocks_become_holes_whatever_the_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 1 << 20];
        data[5000] = 1; // block 1 holds data
        data[(1 << 20) - 1] = 2; // the last block too
        for chunk in [1usize << 20, 4096, 1000, 7] {
            let path = dir.path().join(format!("f{chunk}"));
            let f = std::fs::File::create(&path).unwrap();
            let mut trailing = false;
            for (i, c) in data.chunks(chunk).enumerate() {
                trailing = write_sparse(&f, (i * chunk) as u64, c).unwrap();
            }
            assert!(!trailing);
            assert_eq!(std::fs::read(&path).unwrap(), data, "chunks of {chunk}");
            if chunk >= 4096 {
                assert!(f.metadata().unwrap().blocks() * 512 <= 64 * 1024, "chunks of {chunk}: holes");
            }
        }
        let f = std::fs::File::create(dir.path().join("tail")).unwrap();
        assert!(write_sparse(&f, 0, &[0u8; 8192]).unwrap(), "a trailing hole is reported");
        assert!(is_zero(&[0u8; 13]) && !is_zero(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn setuid_and_setgid_are_dropped_when_owners_cannot_be_restored() {
        let never = || false;
        let mut x = Extractor {
            roots: HashMap::new(),
            restore_owners: false,
            parent: None,
            dirs: Vec::new(),
            buf: Vec::new(),
            cancel: &never,
            foreign: false,
            progress: None,
            stripped: Tally::default(),
            xattrs_not_restored: Tally::default(),
            acl_pool: HashSet::new(),
            acl_pool_bytes: 0,
        };
        let m = Meta { mode: 0o6755, uid: 0, gid: 0, mtime: 0 };
        assert_eq!(x.mode_of(&m).as_raw_mode() & 0o7777, 0o755, "not root: no setuid/setgid on our own files");
        let sticky = Meta { mode: 0o1777, ..m };
        assert_eq!(x.mode_of(&sticky).as_raw_mode() & 0o7777, 0o1777, "the sticky bit is harmless and kept");
        x.restore_owners = true;
        assert_eq!(x.mode_of(&m).as_raw_mode() & 0o7777, 0o6755, "as root, with owners restored: as captured");
    }

    fn lstat(p: &Path) -> std::fs::Metadata {
        std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
    }

    /// What `stat` says about a host file that hostile links point at.
    fn host_file(p: &str) -> Option<(u32, u32, u32, u64, i64, i64, i64)> {
        let md = std::fs::metadata(p).ok()?;
        Some((md.mode(), md.uid(), md.gid(), md.len(), md.mtime(), md.ctime(), md.ctime_nsec()))
    }

    /// The positive round trip: everything a volume can hold comes back
    /// exactly, symlinks (absolute, escaping, dangling) as links that are
    /// never followed, setuid bits as data (backup fidelity, unlike PEP 706's
    /// `data` filter), directory metadata applied after their content, and
    /// an unselected volume left unwritten.
    #[test]
    fn sound_archive_round_trips_exactly() {
        let mut sb = Sandbox::new();
        let out = sb.out();
        let root_owner = unsafe { libc::geteuid() } == 0;
        let long = format!("volumes/0/{}", "n".repeat(150));
        let entries = vec![
            manifest(),
            dir("volumes/0/").mode(0o750).owner(1000, 1001).mtime(1_600_000_000),
            // Listed before its content: mode and mtime must still win.
            dir("volumes/0/ro/").mode(0o555).mtime(1_600_000_100),
            file("volumes/0/ro/inner", b"inside a read-only dir").mode(0o640).mtime(1_600_000_200),
            dir("volumes/0/sticky/").mode(0o1777).mtime(1_600_000_300),
            file("volumes/0/suid", b"#!/bin/sh\n").mode(0o4755).owner(1234, 5678).mtime(1_600_000_400),
            file("volumes/0/file", b"hello").mode(0o600).owner(1234, 5678).mtime(1_600_000_500),
            hardlink("volumes/0/sticky/hard", "volumes/0/file"),
            symlink("volumes/0/rel", "file").owner(1234, 5678).mtime(1_500_000_000),
            symlink("volumes/0/abs", "/etc/passwd"),
            symlink("volumes/0/out", &out).mtime(1_500_000_001),
            symlink("volumes/0/up", "../outside/keep"),
            symlink("volumes/0/dangling", "does/not/exist"),
            file("volumes/0/deep/a/b/c.txt", b"implicit parents").mtime(1_600_000_600),
            file("volumes/0/late/x", b"content before its directory entry"),
            dir("volumes/0/late/").mode(0o711).mtime(1_600_000_700),
            pax(&[("path", long.as_bytes()), ("mtime", b"1600000800.5")]),
            file("volumes/0/short-placeholder", b"long name"),
            E::raw(b"volumes/0/caf\xe9", b'0', b"latin-1"),
            file("volumes/0/..\\..\\backslashes", b"a plain name on Linux"),
            file("volumes/0/empty", b""),
            dir("volumes/1/"),
            file("volumes/1/conf", b"k=v"),
        ];
        let passwd = host_file("/etc/passwd");
        let (r, roots) =
            sb.extract_bytes("round trip", &gz(&tar_of(&entries)), &[(0, "data")], &VerifyLimits::default());
        let report = r.expect("a sound archive extracts");
        let root = &roots[0];
        assert_eq!(host_file("/etc/passwd"), passwd, "/etc/passwd was touched through the absolute symlink");
        assert_eq!(report.volumes[0].files, 10, "{report:?}");
        assert_eq!(report.volumes[0].symlinks, 5, "{report:?}");

        let check = |rel: &str, kind: &str, mode: Option<u32>, mtime: Option<i64>, owner: Option<(u32, u32)>| {
            let p = if rel.is_empty() { root.clone() } else { root.join(rel) };
            let md = lstat(&p);
            let ft = md.file_type();
            let got = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "other"
            };
            assert_eq!(got, kind, "{rel}");
            if let Some(m) = mode {
                assert_eq!(md.mode() & 0o7777, m, "{rel}: mode");
            }
            if let Some(t) = mtime {
                assert_eq!(md.mtime(), t, "{rel}: mtime");
            }
            if let Some((u, g)) = owner.filter(|_| root_owner) {
                assert_eq!((md.uid(), md.gid()), (u, g), "{rel}: owner");
            }
        };
        check("", "dir", Some(0o750), Some(1_600_000_000), Some((1000, 1001)));
        check("ro", "dir", Some(0o555), Some(1_600_000_100), Some((0, 0)));
        check("ro/inner", "file", Some(0o640), Some(1_600_000_200), None);
        check("sticky", "dir", Some(0o1777), Some(1_600_000_300), None);
        check("suid", "file", Some(0o4755), Some(1_600_000_400), Some((1234, 5678)));
        check("file", "file", Some(0o600), Some(1_600_000_500), Some((1234, 5678)));
        check("sticky/hard", "file", Some(0o600), Some(1_600_000_500), Some((1234, 5678)));
        check("rel", "symlink", None, Some(1_500_000_000), Some((1234, 5678)));
        check("abs", "symlink", None, None, None);
        check("out", "symlink", None, Some(1_500_000_001), None);
        check("up", "symlink", None, None, None);
        check("dangling", "symlink", None, None, None);
        // Parents without an entry of their own stay private.
        check("deep", "dir", Some(0o700), None, None);
        check("deep/a/b", "dir", Some(0o700), None, None);
        check("deep/a/b/c.txt", "file", Some(0o644), Some(1_600_000_600), None);
        check("late", "dir", Some(0o711), Some(1_600_000_700), None);
        check("late/x", "file", None, None, None);
        check(&"n".repeat(150), "file", None, Some(1_600_000_800), None);
        check("..\\..\\backslashes", "file", None, None, None);
        check("empty", "file", None, None, None);

        let read = |rel: &str| std::fs::read(root.join(rel)).unwrap();
        assert_eq!(read("file"), b"hello");
        assert_eq!(read("ro/inner"), b"inside a read-only dir");
        assert_eq!(read(&"n".repeat(150)), b"long name");
        assert_eq!(std::fs::read(root.join(std::ffi::OsStr::from_bytes(b"caf\xe9"))).unwrap(), b"latin-1");
        assert!(read("empty").is_empty());
        assert!(!root.join("short-placeholder").exists(), "the pax path replaces the header name");
        let (f, h) = (lstat(&root.join("file")), lstat(&root.join("sticky/hard")));
        assert_eq!((f.dev(), f.ino()), (h.dev(), h.ino()), "hard link shares the inode");
        assert_eq!(f.nlink(), 2);
        for (rel, target) in [
            ("rel", "file"),
            ("abs", "/etc/passwd"),
            ("out", out.as_str()),
            ("up", "../outside/keep"),
            ("dangling", "does/not/exist"),
        ] {
            assert_eq!(std::fs::read_link(root.join(rel)).unwrap(), Path::new(target), "{rel}");
        }
        // Exactly what the archive held for volume 0; volume 1 went nowhere
        // (the sandbox comparison in extract_bytes covers the rest).
        let mut names: Vec<String> =
            std::fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names.len(), 15, "{names:?}");
        assert!(!names.iter().any(|n| n == "conf"), "{names:?}");
    }

    /// A volume of `n` files whose sizes straddle the pipe's buffers (a few
    /// bytes to several buffers, never a multiple of one), each with its own
    /// pseudo-random content, in a few directories.
    fn many_buffers(n: usize) -> (Vec<E>, Vec<(String, Vec<u8>)>) {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut entries = vec![manifest(), dir("volumes/0/"), dir("volumes/0/a/"), dir("volumes/0/b/")];
        let mut files = Vec::new();
        for i in 0..n {
            let size = match i % 5 {
                0 => 3 * crate::engine::archive::reader::PIPE_CHUNK + 4097,
                1 => 17,
                2 => (next() % 300_000) as usize,
                3 => 0,
                _ => 4096 * 3,
            };
            // Half compressible text, half noise, so both kinds of deflate
            // block and zstd block go through.
            let data: Vec<u8> = if i % 2 == 0 {
                (0..size).map(|_| next() as u8).collect()
            } else {
                (0..size).map(|k| b"volsnap pipeline text\n"[k % 22]).collect()
            };
            let name = format!("volumes/0/{}/f{i}", if i % 2 == 0 { "a" } else { "b" });
            entries.push(file(&name, &data).mode(0o640).mtime(1_600_000_000 + i as u64));
            files.push((name["volumes/0/".len()..].to_string(), data));
        }
        (entries, files)
    }

    #[test]
    fn the_threaded_pipeline_restores_an_archive_of_many_buffers_exactly() {
        let (entries, files) = many_buffers(40);
        let tar = tar_of(&entries);
        let expanded: usize = files.iter().map(|(_, d)| d.len()).sum();
        let depth = crate::engine::archive::reader::PIPE_DEPTH + 2;
        assert!(
            expanded > 4 * depth * crate::engine::archive::reader::PIPE_CHUNK,
            "the test must cycle every pipe buffer several times: {expanded} bytes"
        );
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for (kind, bytes) in [("gzip", gz(&tar)), ("zstd", zst)] {
            let mut sb = Sandbox::new();
            let (r, roots) = sb.extract_bytes(kind, &bytes, &[(0, "data")], &VerifyLimits::default());
            let report = r.unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(report.sha256, hex::encode(sha2::Sha256::digest(&bytes)), "{kind}: sha256 of the file");
            assert_eq!(report.size_bytes, bytes.len() as u64, "{kind}");
            assert_eq!(report.bytes, expanded as u64, "{kind}");
            for (rel, data) in &files {
                let got = std::fs::read(roots[0].join(rel)).unwrap();
                assert!(got == *data, "{kind}: {rel} differs ({} bytes, expected {})", got.len(), data.len());
                assert_eq!(lstat(&roots[0].join(rel)).mode() & 0o7777, 0o640, "{kind}: {rel}");
            }
            let count = std::fs::read_dir(roots[0].join("a")).unwrap().count()
                + std::fs::read_dir(roots[0].join("b")).unwrap().count();
            assert_eq!(count, files.len(), "{kind}: nothing more, nothing less");
        }
    }

    #[test]
    fn a_write_error_mid_stream_ends_the_extraction_with_that_error() {
        let (entries, files) = many_buffers(40);
        let bytes = gz(&tar_of(&entries));
        let mut sb = Sandbox::new();
        // The writing side fails at the 21st file, megabytes into the
        // stream: its name is taken (files are created O_EXCL).
        let blocked = &files[20].0;
        sb.n += 1;
        let archive = sb.top.join("blocked.tar.gz");
        std::fs::write(&archive, &bytes).unwrap();
        let root = sb.top.join("blocked-root");
        std::fs::create_dir_all(root.join(Path::new(blocked).parent().unwrap())).unwrap();
        std::fs::write(root.join(blocked), b"in the way").unwrap();
        let ev = [ExtractVolume {
            index: 0,
            name: "data".into(),
            dir: OpenDir::open_trusted(&root).unwrap(),
            root: root.clone(),
        }];
        let err = extract(&archive, &ev, &VerifyLimits::default(), &|| false).unwrap_err();
        match &err {
            ArchiveError::Extract { path, source } => {
                assert!(path.ends_with(blocked.as_str()), "{err}");
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists, "{err}");
            }
            other => panic!("expected the writing error, got {other:?}"),
        }
        assert_eq!(std::fs::read(root.join(blocked)).unwrap(), b"in the way", "nothing is written through");
        for (rel, _) in &files[21..] {
            assert!(!root.join(rel).exists(), "{rel}: nothing after the failure is written");
        }
    }

    #[test]
    fn corruption_deep_in_a_long_stream_is_refused() {
        let (entries, files) = many_buffers(40);
        let tar = tar_of(&entries);
        let good = gz(&tar);
        let vols = [(0, "data")];
        let mut sb = Sandbox::new();
        // Bytes well past the first buffers, in both halves of the stream.
        for at in [good.len() / 2, good.len() * 3 / 4, good.len() - 100] {
            let mut bad = good.clone();
            bad[at] ^= 0x55;
            let limits =
                VerifyLimits { expected_sha256: Some(hex::encode(sha2::Sha256::digest(&good))), ..Default::default() };
            let (r, roots) = sb.extract_bytes("corrupt", &bad, &vols, &limits);
            let err = r.expect_err("a corrupt stream must not extract");
            assert!(
                matches!(
                    err,
                    ArchiveError::Corrupt(_) | ArchiveError::Truncated(_) | ArchiveError::ChecksumMismatch { .. }
                ),
                "byte {at}: {err:?}"
            );
            let _ = (&roots, &files);
        }
        // zstd: a damaged block fails its checks too.
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        let mut bad = zst.clone();
        let at = bad.len() / 2;
        bad[at] ^= 0x55;
        let limits =
            VerifyLimits { expected_sha256: Some(hex::encode(sha2::Sha256::digest(&zst))), ..Default::default() };
        let (r, _) = sb.extract_bytes("corrupt zstd", &bad, &vols, &limits);
        assert!(r.is_err(), "a corrupt zstd stream must not extract");
    }
}
