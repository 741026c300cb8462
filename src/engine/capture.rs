//! The capture pipeline: walk the volumes and stream them into one archive.
//!
//! One pass writes the archive: `volsnap.json`, then for each volume its root
//! directory `volumes/<index>/` and everything beneath it, depth-first,
//! directory entries before their contents, names sorted by bytes so the
//! output is deterministic. A lstat-only pre-scan fills `bytes_total` first.
//!
//! The walk never follows a symlink: every directory is opened relative to
//! its parent's descriptor with `O_NOFOLLOW | O_DIRECTORY`, every file with
//! `O_NOFOLLOW`, so a directory swapped for a symlink during the capture
//! cannot lead the walk outside the volume. Symlinks are archived as links.
//! One descriptor is held per directory level.
//!
//! The walk stays on the volume's file system: a directory on another device,
//! or the root of a mount (`STATX_ATTR_MOUNT_ROOT`, which also catches bind
//! mounts of the same file system), is archived as an empty directory (so the
//! mount point exists after a restore) and not entered; a file that is a
//! mount point is left out. Each one is named in the volume's warnings.
//!
//! Extended attributes of files and directories are read through the open
//! descriptors ([`crate::engine::xattr`]) and archived as pax
//! `SCHILY.xattr.*` records; one that cannot be kept is named in the
//! warnings. Holes of sparse files are found with `SEEK_HOLE`/`SEEK_DATA`
//! and archived as zeros without being read.
//!
//! Memory stays flat: one directory listing per level of the current path,
//! fixed copy/output buffers, and a map of the hard-linked files (nlink > 1)
//! of the current volume.
//!
//! The archive is written to `.<name>.partial` next to the destination and
//! renamed only when complete and synced; on any error or cancellation the
//! temporary file is removed. Archives are created with mode 0600: they hold
//! copies of data that belongs to many owners.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};

use crate::api::{CapturedVolume, Compression};
use crate::engine::archive::pax;
use crate::engine::archive::{
    ArchiveManifest, ArchiveWriter, CHECKSUM_SUFFIX, EntryMeta, MANIFEST_ENTRY, ManifestVolume, TEMP_SUFFIX,
};
use crate::engine::beneath::OpenDir;
use crate::engine::xattr::{self, Xattr};
use crate::store::fsutil;

/// Warnings kept per volume before they are summarised.
const MAX_WARNINGS: usize = 20;

/// A resolved volume to capture.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureVolume {
    /// Index in the archive (`volumes/<index>/`), equal to its manifest entry's.
    pub index: u32,
    /// Volume name.
    pub name: String,
    /// Canonical host directory (symlinks resolved, checked against the roots).
    pub path: PathBuf,
    /// Path inside the workload, when there is one.
    pub target: Option<String>,
    /// The directory itself, opened when it was checked (beneath its trusted
    /// root, no symlink followed). The capture reads through this descriptor
    /// and never opens `path` again, so a path changed after the check
    /// (a parent swapped for a symlink to `/`) cannot redirect it.
    pub dir: OpenDir,
}

impl CaptureVolume {
    /// A volume at a directory volsnap trusts by path (its own staging
    /// directories, tests). Object-named paths go through
    /// [`crate::engine::paths::PathPolicy`] instead.
    pub fn open_trusted(index: u32, name: &str, path: &Path, target: Option<&str>) -> io::Result<CaptureVolume> {
        Ok(CaptureVolume {
            index,
            name: name.into(),
            path: path.to_path_buf(),
            target: target.map(str::to_string),
            dir: OpenDir::open_trusted(path)?,
        })
    }
}

impl From<&CaptureVolume> for ManifestVolume {
    /// The `volsnap.json` entry of a volume about to be captured.
    fn from(v: &CaptureVolume) -> Self {
        ManifestVolume {
            index: v.index,
            name: v.name.clone(),
            target: v.target.clone(),
            source: v.path.display().to_string(),
        }
    }
}

/// Live counters a capture updates for `status.progress`.
#[derive(Debug, Default)]
pub struct CaptureProgress {
    /// Bytes of file content read so far.
    pub bytes_done: AtomicU64,
    /// Bytes expected, from the pre-scan.
    pub bytes_total: AtomicU64,
}

/// Everything a capture needs.
pub struct CaptureJob<'a> {
    /// Written first, as `volsnap.json`.
    pub manifest: &'a ArchiveManifest,
    /// The volumes, in manifest order.
    pub volumes: &'a [CaptureVolume],
    /// Compression of the archive.
    pub compression: Compression,
    /// Compression level (`spec.level`, validated); `None`: the default.
    pub level: Option<u32>,
    /// Final archive path. The archive is written to a temporary sibling and
    /// renamed here only when complete and durable.
    pub dest: &'a Path,
    /// Counters for progress reporting.
    pub progress: &'a CaptureProgress,
    /// Set to abandon the capture (shutdown); checked between chunks.
    pub cancel: &'a AtomicBool,
}

/// A finished capture.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureOutcome {
    /// Size of the archive file.
    pub size_bytes: u64,
    /// sha256 of the archive file, hex.
    pub sha256: String,
    /// Per-volume counts and warnings.
    pub volumes: Vec<CapturedVolume>,
}

/// Why a capture failed. The temporary file is always removed first.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// `cancel` was set.
    #[error("capture cancelled")]
    Cancelled,
    /// The workload could not be paused or stopped (nothing was read).
    #[error("{0}")]
    Quiesce(String),
    /// Adoption (`source.archive`): the archive failed the untrusted-archive
    /// checks.
    #[error("{0}")]
    Rejected(String),
    /// The archive could not be written (disk full, read-only, ...).
    #[error("writing archive {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A volume root could not be read at all.
    #[error("reading volume {name} at {path}: {source}")]
    ReadVolume {
        /// Volume name.
        name: String,
        /// Its directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Path of the temporary file an archive is written to: `.<name>.partial`
/// in the destination's directory.
pub fn temp_path(dest: &Path) -> Option<PathBuf> {
    let name = dest.file_name()?;
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(TEMP_SUFFIX);
    Some(parent_dir(dest).join(temp))
}

/// Path of the checksum file of an archive: `<dest>.sha256`.
pub fn checksum_path(dest: &Path) -> PathBuf {
    let mut p = dest.as_os_str().to_owned();
    p.push(CHECKSUM_SUFFIX);
    PathBuf::from(p)
}

fn parent_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Captures the job's volumes into one archive at `job.dest`, plus its
/// checksum file `<dest>.sha256` in `sha256sum` format.
///
/// Problems with single entries (vanished, unreadable, changed while read,
/// special files) do not fail the capture: they are counted per volume,
/// with warnings naming the paths. Only an unreadable volume root, a write
/// error on the archive, or cancellation fail it, and then neither the
/// archive nor its temporary file is left behind.
pub fn capture(job: CaptureJob<'_>) -> Result<CaptureOutcome, CaptureError> {
    // Tests hold a capture here, after its volumes were checked and opened,
    // to change the paths underneath it.
    crate::engine::fault::pause("capture:start");
    let dest = job.dest;
    let write_err = |source: io::Error| CaptureError::Write { path: dest.to_path_buf(), source };
    let temp = temp_path(dest)
        .ok_or_else(|| write_err(io::Error::new(io::ErrorKind::InvalidInput, "destination has no file name")))?;
    let dir = parent_dir(dest);
    create_dirs_durably(dir).map_err(write_err)?;
    let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            write_err(io::Error::new(
                e.kind(),
                format!(
                    "temporary file {} already exists (another capture to the same destination is running, or one was interrupted)",
                    temp.display()
                ),
            ))
        } else {
            write_err(e)
        }
    })?;
    let mut guard = RemoveOnDrop(Some(temp.clone()));
    crate::engine::fault::point("capture:temp-created");

    let (volumes, (file, sha256, size_bytes)) = write_archive(&job, file)?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    fs::rename(&temp, dest).map_err(write_err)?;
    // From here the archive has its final name: on failure, remove it.
    guard.0 = Some(dest.to_path_buf());
    fsutil::fsync_dir(dir).map_err(write_err)?;
    let file_name = dest.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
    let mut line = format!("{sha256}  ").into_bytes();
    line.extend_from_slice(&file_name);
    line.push(b'\n');
    fsutil::atomic_write(&checksum_path(dest), &line).map_err(write_err)?;
    guard.0 = None;
    Ok(CaptureOutcome { size_bytes, sha256, volumes })
}

/// `create_dir_all`, then fsyncs the parent of every directory it created
/// so the archive's directory survives a crash along with the archive.
fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        fsutil::fsync_dir(parent_dir(d))?;
    }
    Ok(())
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(&p);
            if let Some(parent) = p.parent() {
                let _ = fsutil::fsync_dir(parent);
            }
        }
    }
}

type Finished = (File, String, u64);

fn write_archive(job: &CaptureJob<'_>, file: File) -> Result<(Vec<CapturedVolume>, Finished), CaptureError> {
    let write_err = |source: io::Error| CaptureError::Write { path: job.dest.to_path_buf(), source };
    if job.cancel.load(Ordering::Relaxed) {
        return Err(CaptureError::Cancelled);
    }
    job.progress.bytes_done.store(0, Ordering::Relaxed);
    job.progress.bytes_total.store(0, Ordering::Relaxed);
    prescan(job)?;

    let mut writer = ArchiveWriter::with_level(file, job.compression, job.level).map_err(write_err)?;
    let mut json = serde_json::to_vec_pretty(job.manifest)
        .map_err(|e| write_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    json.push(b'\n');
    let meta =
        EntryMeta { mode: 0o644, uid: 0, gid: 0, mtime: job.manifest.creation_timestamp.0.as_second(), xattrs: &[] };
    writer.append_file(MANIFEST_ENTRY.as_bytes(), &meta, json.len() as u64, &mut &json[..]).map_err(write_err)?;

    let mut results = Vec::with_capacity(job.volumes.len());
    for vol in job.volumes {
        let mut walk = VolumeWalk {
            job,
            writer: &mut writer,
            counts: CapturedVolume {
                name: vol.name.clone(),
                path: vol.path.display().to_string(),
                target: vol.target.clone(),
                ..Default::default()
            },
            extra_warnings: 0,
            links: HashMap::new(),
            xattrs: xattr::Reader::default(),
        };
        walk.run(vol)?;
        results.push(walk.into_counts());
    }
    let finished = writer.finish().map_err(write_err)?;
    Ok((results, finished))
}

// ---------------------------------------------------------------------------
// File-system access, all relative to directory descriptors, never following
// symlinks.

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY)
    // A FIFO swapped in after the lstat must not block the open.
    .union(OFlags::NONBLOCK);

/// What the capture needs from a `stat`.
#[derive(Clone, Copy, Debug)]
struct Meta {
    file_type: FileType,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    nlink: u64,
    dev: u64,
    ino: u64,
    /// 512-byte blocks allocated: fewer than the size needs means holes.
    blocks: u64,
    /// The root of a mount (only known from [`fstatx`]; `false` from a stat).
    mount_root: bool,
}

impl Meta {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn from_stat(st: &Stat) -> Meta {
        Meta {
            file_type: FileType::from_raw_mode(st.st_mode as _),
            mode: (st.st_mode as u32) & 0o7777,
            uid: st.st_uid as u64,
            gid: st.st_gid as u64,
            size: (st.st_size as i64).max(0) as u64,
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as i64,
            nlink: st.st_nlink as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            blocks: (st.st_blocks as i64).max(0) as u64,
            mount_root: false,
        }
    }

    fn from_statx(st: &rustix::fs::Statx) -> Meta {
        Meta {
            file_type: FileType::from_raw_mode(st.stx_mode.into()),
            mode: u32::from(st.stx_mode) & 0o7777,
            uid: st.stx_uid.into(),
            gid: st.stx_gid.into(),
            size: st.stx_size,
            mtime: st.stx_mtime.tv_sec,
            mtime_nsec: st.stx_mtime.tv_nsec.into(),
            nlink: st.stx_nlink.into(),
            dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            blocks: st.stx_blocks,
            mount_root: st.stx_attributes.contains(rustix::fs::StatxAttributes::MOUNT_ROOT),
        }
    }

    fn entry<'x>(&self, xattrs: &'x [Xattr]) -> EntryMeta<'x> {
        EntryMeta { mode: self.mode, uid: self.uid, gid: self.gid, mtime: self.mtime, xattrs }
    }

    /// Whether this is another file system, or a mount, inside the volume
    /// whose root is on `root_dev`.
    fn is_nested_mount(&self, root_dev: u64) -> bool {
        self.dev != root_dev || self.mount_root
    }

    /// Whether the file has fewer blocks than its size needs (holes).
    fn may_be_sparse(&self) -> bool {
        self.blocks.saturating_mul(512) < self.size
    }
}

fn os_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

fn is_gone(e: &io::Error) -> bool {
    // ENOENT: removed. ELOOP/ENOTDIR: replaced by a symlink or a file.
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENOTDIR))
}

fn lstat_at(dir: &OwnedFd, name: &CStr) -> io::Result<Meta> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map(|st| Meta::from_stat(&st)).map_err(os_err)
}

fn fstat(fd: impl AsFd) -> io::Result<Meta> {
    rustix::fs::fstat(fd).map(|st| Meta::from_stat(&st)).map_err(os_err)
}

/// `fstat` of an open entry, plus whether it is the root of a mount. Falls
/// back to `fstat` where `statx` is missing (then only a different device
/// tells a mount).
fn fstatx(fd: impl AsFd) -> io::Result<Meta> {
    let fd = fd.as_fd();
    match rustix::fs::statx(fd, c"", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::BASIC_STATS) {
        Ok(st) => Ok(Meta::from_statx(&st)),
        Err(rustix::io::Errno::NOSYS) => fstat(fd),
        Err(e) => Err(os_err(e)),
    }
}

/// The names in a directory (without `.` and `..`), sorted by bytes.
fn list_dir(fd: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut dir = Dir::read_from(fd).map_err(os_err)?;
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(os_err)?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        names.push(name.to_owned());
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// One directory being walked: its descriptor, path relative to the volume
/// root (empty for the root) and the names still to visit.
struct Frame {
    fd: OwnedFd,
    rel: Vec<u8>,
    names: std::vec::IntoIter<CString>,
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rel.len() + 1 + name.len());
    out.extend_from_slice(rel);
    if !rel.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

fn open_root(vol: &CaptureVolume) -> Result<(OwnedFd, Meta, Vec<CString>), CaptureError> {
    let fail = |source: io::Error| CaptureError::ReadVolume { name: vol.name.clone(), path: vol.path.clone(), source };
    let fd = vol.dir.reopen().map_err(fail)?;
    // A directory removed after it was checked still reads as empty through
    // its descriptor: that is not a capture of the volume.
    if rustix::fs::fstat(&fd).map_err(|e| fail(os_err(e)))?.st_nlink == 0 {
        return Err(fail(io::Error::new(io::ErrorKind::NotFound, "the directory was removed after it was checked")));
    }
    let meta = fstat(&fd).map_err(fail)?;
    let names = list_dir(&fd).map_err(fail)?;
    Ok((fd, meta, names))
}

// ---------------------------------------------------------------------------
// Pre-scan.

fn prescan(job: &CaptureJob<'_>) -> Result<(), CaptureError> {
    let mut total = 0u64;
    for vol in job.volumes {
        let (fd, root, names) = open_root(vol)?;
        let mut seen_links: HashSet<(u64, u64)> = HashSet::new();
        let mut stack = vec![Frame { fd, rel: Vec::new(), names: names.into_iter() }];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.next() else {
                stack.pop();
                continue;
            };
            if job.cancel.load(Ordering::Relaxed) {
                return Err(CaptureError::Cancelled);
            }
            let Ok(meta) = lstat_at(&frame.fd, &name) else { continue };
            if meta.dev != root.dev {
                continue; // a nested mount: not entered
            }
            match meta.file_type {
                FileType::RegularFile if meta.nlink <= 1 || seen_links.insert((meta.dev, meta.ino)) => {
                    total += meta.size;
                    job.progress.bytes_total.store(total, Ordering::Relaxed);
                }
                FileType::Directory => {
                    let Ok(fd) = rustix::fs::openat(&frame.fd, name.as_c_str(), DIR_FLAGS, Mode::empty()) else {
                        continue;
                    };
                    if fstatx(&fd).is_ok_and(|m| m.is_nested_mount(root.dev)) {
                        continue;
                    }
                    let Ok(names) = list_dir(&fd) else { continue };
                    stack.push(Frame { fd, rel: Vec::new(), names: names.into_iter() });
                }
                _ => {}
            }
        }
    }
    job.progress.bytes_total.store(total, Ordering::Relaxed);
    Ok(())
}

// ---------------------------------------------------------------------------
// The walk of one volume.

struct VolumeWalk<'a, 'j> {
    job: &'a CaptureJob<'j>,
    writer: &'a mut ArchiveWriter<File>,
    counts: CapturedVolume,
    extra_warnings: u64,
    /// Hard-linked files (nlink > 1) already archived: (dev, ino) -> entry name.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Reads extended attributes (buffers reused across entries).
    xattrs: xattr::Reader,
}

impl VolumeWalk<'_, '_> {
    /// The counts, with the warnings beyond [`MAX_WARNINGS`] summarised.
    fn into_counts(self) -> CapturedVolume {
        let mut counts = self.counts;
        if self.extra_warnings > 0 {
            counts.warnings.push(format!("... and {} more", self.extra_warnings));
        }
        counts
    }

    fn warn(&mut self, msg: String) {
        if self.counts.warnings.len() < MAX_WARNINGS {
            self.counts.warnings.push(msg);
        } else {
            self.extra_warnings += 1;
        }
    }

    fn write_err(&self, source: io::Error) -> CaptureError {
        CaptureError::Write { path: self.job.dest.to_path_buf(), source }
    }

    fn check_cancel(&self) -> Result<(), CaptureError> {
        if self.job.cancel.load(Ordering::Relaxed) { Err(CaptureError::Cancelled) } else { Ok(()) }
    }

    fn vanished(&mut self, rel: &[u8], e: &io::Error) {
        self.counts.vanished += 1;
        let what = if e.raw_os_error() == Some(libc::ENOENT) {
            "vanished before it could be read".to_string()
        } else {
            format!("was replaced while being read ({e})")
        };
        self.warn(format!("{}: {what}; not archived", String::from_utf8_lossy(rel)));
    }

    fn unreadable(&mut self, rel: &[u8], e: &io::Error) {
        self.counts.unreadable += 1;
        self.warn(format!("{}: cannot be read: {e}; not archived", String::from_utf8_lossy(rel)));
    }

    /// A nested mount the walk does not enter.
    fn nested_mount(&mut self, rel: &[u8], what: &str) {
        self.counts.nested_mounts_skipped += 1;
        self.warn(format!(
            "{}: another file system is mounted here; not entered ({what})",
            String::from_utf8_lossy(rel)
        ));
    }

    /// The extended attributes of an open entry that can be archived; the
    /// others are counted and named in the warnings.
    fn read_xattrs(&mut self, fd: &impl AsFd, rel: &[u8]) -> Vec<Xattr> {
        let shown = if rel.is_empty() { ".".to_string() } else { String::from_utf8_lossy(rel).into_owned() };
        let (mut kept, mut not_kept) = match self.xattrs.read(fd) {
            Ok(x) => x,
            Err(e) => {
                self.counts.xattrs_skipped += 1;
                self.warn(format!("{shown}: extended attributes cannot be listed: {e}; not archived"));
                return Vec::new();
            }
        };
        kept.retain(|x| {
            let same = pax::reads_the_same_everywhere(&pax::xattr_key(&x.name), &x.value);
            if !same {
                not_kept.push(xattr::NotKept {
                    name: String::from_utf8_lossy(&x.name).into_owned(),
                    why: "its value would read differently in some tar readers".into(),
                });
            }
            same
        });
        for n in not_kept {
            self.counts.xattrs_skipped += 1;
            self.warn(format!("{shown}: extended attribute {} not archived: {}", n.name, n.why));
        }
        kept
    }

    /// Counts an error on an entry as vanished or unreadable.
    fn entry_failed(&mut self, rel: &[u8], e: &io::Error) {
        if is_gone(e) { self.vanished(rel, e) } else { self.unreadable(rel, e) }
    }

    fn run(&mut self, vol: &CaptureVolume) -> Result<(), CaptureError> {
        self.check_cancel()?;
        let prefix = ArchiveManifest::volume_prefix(vol.index).into_bytes();
        let (fd, meta, names) = open_root(vol)?;
        let root_dev = meta.dev;
        let xattrs = self.read_xattrs(&fd, b"");
        self.writer.append_dir(&prefix, &meta.entry(&xattrs)).map_err(|e| self.write_err(e))?;
        self.counts.directories += 1;

        let mut stack = vec![Frame { fd, rel: Vec::new(), names: names.into_iter() }];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.next() else {
                stack.pop();
                continue;
            };
            self.check_cancel()?;
            let rel = join(&frame.rel, name.as_bytes());
            let archive_name = join(&prefix, &rel);
            let meta = match lstat_at(&frame.fd, &name) {
                Ok(m) => m,
                Err(e) => {
                    self.entry_failed(&rel, &e);
                    continue;
                }
            };
            if meta.dev != root_dev {
                // Another file system: not even opened (it may be slow or hung).
                if meta.file_type == FileType::Directory {
                    self.nested_mount(&rel, "archived as an empty directory");
                    self.writer.append_dir(&archive_name, &meta.entry(&[])).map_err(|e| self.write_err(e))?;
                    self.counts.directories += 1;
                } else {
                    self.nested_mount(&rel, "not archived");
                }
                continue;
            }
            match meta.file_type {
                FileType::Directory => {
                    let opened =
                        rustix::fs::openat(&frame.fd, name.as_c_str(), DIR_FLAGS, Mode::empty()).map_err(os_err);
                    let opened = opened.and_then(|fd| Ok((fstatx(&fd)?, fd)));
                    let (meta, fd) = match opened {
                        Ok(x) => x,
                        Err(e) => {
                            self.entry_failed(&rel, &e);
                            continue;
                        }
                    };
                    if meta.is_nested_mount(root_dev) {
                        self.nested_mount(&rel, "archived as an empty directory");
                        self.writer.append_dir(&archive_name, &meta.entry(&[])).map_err(|e| self.write_err(e))?;
                        self.counts.directories += 1;
                        continue;
                    }
                    let names = match list_dir(&fd) {
                        Ok(n) => n,
                        Err(e) => {
                            self.entry_failed(&rel, &e);
                            continue;
                        }
                    };
                    let xattrs = self.read_xattrs(&fd, &rel);
                    self.writer.append_dir(&archive_name, &meta.entry(&xattrs)).map_err(|e| self.write_err(e))?;
                    self.counts.directories += 1;
                    stack.push(Frame { fd, rel, names: names.into_iter() });
                }
                FileType::RegularFile => {
                    self.file(&frame.fd, &name, &rel, &archive_name, &meta, root_dev)?;
                }
                FileType::Symlink => {
                    let target = match rustix::fs::readlinkat(&frame.fd, name.as_c_str(), Vec::new()) {
                        Ok(t) => t.into_bytes(),
                        Err(e) => {
                            let e = os_err(e);
                            if e.raw_os_error() == Some(libc::EINVAL) {
                                // No longer a symlink.
                                self.vanished(&rel, &e);
                            } else {
                                self.entry_failed(&rel, &e);
                            }
                            continue;
                        }
                    };
                    self.writer
                        .append_symlink(&archive_name, &meta.entry(&[]), &target)
                        .map_err(|e| self.write_err(e))?;
                    self.counts.symlinks += 1;
                }
                _ => self.counts.special_files_skipped += 1,
            }
        }
        Ok(())
    }

    fn file(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        rel: &[u8],
        archive_name: &[u8],
        lmeta: &Meta,
        root_dev: u64,
    ) -> Result<(), CaptureError> {
        if lmeta.nlink > 1
            && let Some(first) = self.links.get(&(lmeta.dev, lmeta.ino))
        {
            let first = first.clone();
            self.writer.append_hardlink(archive_name, &lmeta.entry(&[]), &first).map_err(|e| self.write_err(e))?;
            self.counts.files += 1;
            return Ok(());
        }
        let opened = rustix::fs::openat(dir, name, FILE_FLAGS, Mode::empty()).map_err(os_err).and_then(|fd| {
            let meta = fstatx(&fd)?;
            Ok((File::from(fd), meta))
        });
        let (mut file, meta) = match opened {
            Ok(x) => x,
            Err(e) => {
                self.entry_failed(rel, &e);
                return Ok(());
            }
        };
        if meta.file_type != FileType::RegularFile {
            let e = io::Error::other("no longer a regular file");
            self.vanished(rel, &e);
            return Ok(());
        }
        if meta.is_nested_mount(root_dev) {
            self.nested_mount(rel, "a file mounted here; not archived");
            return Ok(());
        }
        let xattrs = self.read_xattrs(&file, rel);
        let size = meta.size;
        let mut source = SourceReader {
            file: &mut file,
            cancel: self.job.cancel,
            progress: &self.job.progress.bytes_done,
            read: 0,
            shrank: false,
            error: None,
            cancelled: false,
            holes: meta.may_be_sparse().then(Holes::default),
        };
        let result = self.writer.append_file(archive_name, &meta.entry(&xattrs), size, &mut source);
        if source.cancelled {
            return Err(CaptureError::Cancelled);
        }
        result.map_err(|e| self.write_err(e))?;
        let (read, shrank, error) = (source.read, source.shrank, source.error.take());
        let shown = String::from_utf8_lossy(rel).into_owned();
        self.counts.files += 1;
        self.counts.bytes += size;
        if let Some(e) = error {
            self.counts.changed_during_read += 1;
            self.warn(format!(
                "{shown}: read error after {read} of {size} bytes: {e} (archived copy padded with zeros)"
            ));
        } else if shrank {
            self.counts.changed_during_read += 1;
            self.warn(format!("{shown}: changed while being read (file shrank; archived copy padded)"));
        } else {
            match fstat(&file) {
                Ok(after) if after.size == size && after.mtime == meta.mtime && after.mtime_nsec == meta.mtime_nsec => {
                }
                Ok(after) => {
                    self.counts.changed_during_read += 1;
                    let how = if after.size != size {
                        format!("size changed from {size} to {} bytes", after.size)
                    } else {
                        "modification time changed".to_string()
                    };
                    self.warn(format!("{shown}: changed while being read ({how}; archived copy may be inconsistent)"));
                }
                Err(_) => {}
            }
        }
        if meta.nlink > 1 {
            self.links.insert((meta.dev, meta.ino), archive_name.to_vec());
        }
        Ok(())
    }
}

/// Feeds a file to the archive writer: counts progress, checks cancellation
/// on every read, and pads with zeros when the file ends early or fails, so
/// the entry always has the size its header announced. In a file with holes
/// (`holes` set), the holes are found with `SEEK_HOLE`/`SEEK_DATA` and
/// given as zeros without reading them.
struct SourceReader<'a> {
    file: &'a mut File,
    cancel: &'a AtomicBool,
    progress: &'a AtomicU64,
    read: u64,
    shrank: bool,
    error: Option<io::Error>,
    cancelled: bool,
    holes: Option<Holes>,
}

/// Where the reader is in a sparse file: `[read, data_end)` is data to read,
/// `[read, zeros_end)` a hole to give as zeros; both empty means "look".
#[derive(Default)]
struct Holes {
    data_end: u64,
    zeros_end: u64,
}

impl SourceReader<'_> {
    /// With `holes`: how many zeros to give before reading again (0: read).
    /// Seeking is an optimisation only: any error gives up on it.
    fn hole_ahead(&mut self) -> u64 {
        let Some(h) = &mut self.holes else { return 0 };
        let pos = self.read;
        if pos < h.zeros_end {
            return h.zeros_end - pos;
        }
        if pos < h.data_end {
            return 0;
        }
        use std::io::{Seek, SeekFrom};
        let fd = self.file.as_fd();
        let found = match rustix::fs::seek(fd, rustix::fs::SeekFrom::Hole(pos)) {
            Ok(hole) if hole > pos => {
                // Data first: read it from where we are.
                h.data_end = hole;
                self.file.seek(SeekFrom::Start(pos)).map(|_| 0)
            }
            Ok(_) => match rustix::fs::seek(fd, rustix::fs::SeekFrom::Data(pos)) {
                Ok(data) => {
                    h.zeros_end = data;
                    Ok(data - pos)
                }
                // No data after `pos`: the rest of the file is a hole; its
                // end is the size, which the writer asks no further than.
                Err(rustix::io::Errno::NXIO) => {
                    h.zeros_end = u64::MAX;
                    Ok(u64::MAX)
                }
                Err(e) => Err(os_err(e)),
            },
            Err(e) => Err(os_err(e)),
        };
        match found {
            Ok(n) => n,
            Err(_) => {
                self.holes = None;
                let _ = self.file.seek(SeekFrom::Start(pos));
                0
            }
        }
    }
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            self.cancelled = true;
            return Err(io::Error::other("capture cancelled"));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.shrank && self.error.is_none() {
            let zeros = self.hole_ahead();
            if zeros > 0 {
                let n = zeros.min(buf.len() as u64) as usize;
                buf[..n].fill(0);
                self.read += n as u64;
                self.progress.fetch_add(n as u64, Ordering::Relaxed);
                return Ok(n);
            }
            let len = match &self.holes {
                Some(h) => (h.data_end - self.read).min(buf.len() as u64) as usize,
                None => buf.len(),
            };
            let buf = &mut buf[..len];
            loop {
                match self.file.read(buf) {
                    Ok(0) => {
                        self.shrank = true;
                        break;
                    }
                    Ok(n) => {
                        self.read += n as u64;
                        self.progress.fetch_add(n as u64, Ordering::Relaxed);
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.error = Some(e);
                        break;
                    }
                }
            }
        }
        buf.fill(0);
        Ok(buf.len())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::process::Command;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::api::Time;
    use crate::engine::archive::{self, EntryKind, FORMAT_VERSION, SnapshotRef, VerifyLimits};

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// Runs one uncancelled capture of `vols` into `dest`.
    fn capture_once(
        vols: &[CaptureVolume],
        dest: &Path,
        compression: Compression,
    ) -> Result<CaptureOutcome, CaptureError> {
        let m = manifest(vols);
        let progress = CaptureProgress::default();
        let cancel = AtomicBool::new(false);
        capture(CaptureJob {
            manifest: &m,
            volumes: vols,
            compression,
            level: None,
            dest,
            progress: &progress,
            cancel: &cancel,
        })
    }

    fn manifest(volumes: &[CaptureVolume]) -> ArchiveManifest {
        ArchiveManifest {
            format_version: FORMAT_VERSION,
            snapshot: SnapshotRef { namespace: "default".into(), name: "snap-1".into(), uid: "u-1".into() },
            creation_timestamp: Time(jiff::Timestamp::from_second(1_750_000_000).unwrap()),
            producer: Some("volsnap test".into()),
            volumes: volumes.iter().map(ManifestVolume::from).collect(),
        }
    }

    /// Deterministic pseudo-random bytes.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    /// Deterministic log-like text (compresses about 5x).
    fn log_text(len: usize) -> Vec<u8> {
        let noise = noise(len / 8, 3);
        let mut out = Vec::with_capacity(len + 100);
        for (i, chunk) in noise.chunks(4).enumerate() {
            if out.len() >= len {
                break;
            }
            let n = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], *chunk.get(3).unwrap_or(&0)]);
            let line = format!(
                "2026-11-23T10:{:02}:{:02}Z INFO GET /api/v1/items/{} status={} ms={}\n",
                i / 60 % 60,
                i % 60,
                n % 100_000,
                [200, 404, 500][n as usize % 3],
                n % 2000
            );
            out.extend_from_slice(line.as_bytes());
        }
        out.truncate(len);
        out
    }

    fn os(b: &[u8]) -> &std::ffi::OsStr {
        std::ffi::OsStr::from_bytes(b)
    }

    fn set_mtime(p: &Path, secs: u64) {
        let f = File::options().write(true).open(p).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
    }

    /// Builds the test tree; returns the long path (relative) for checks.
    fn build_tree(root: &Path) -> Vec<u8> {
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::create_dir(root.join("empty")).unwrap();
        fs::write(root.join("a/empty.txt"), b"").unwrap();
        fs::write(root.join("a/b/c/deep.txt"), b"deep\n").unwrap();
        fs::write(root.join("big.bin"), noise(3 << 20, 7)).unwrap();
        fs::write(root.join("suid"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::write(root.join("secret"), b"s3cr3t").unwrap();
        fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(root.join("owned"), b"owned by someone else").unwrap();
        if is_root() {
            std::os::unix::fs::chown(root.join("owned"), Some(1234), Some(5678)).unwrap();
        }
        set_mtime(&root.join("secret"), 1_000_000_000);
        symlink("a/b", root.join("rel-link")).unwrap();
        symlink("/etc/passwd", root.join("abs-link")).unwrap();
        symlink("nowhere/at/all", root.join("dangling")).unwrap();
        fs::write(root.join("hl1"), b"linked content").unwrap();
        fs::hard_link(root.join("hl1"), root.join("a/hl2")).unwrap();
        let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        // A path of more than 300 bytes, and a 255-byte name.
        let long_dir = [vec![b'd'; 100], b"/".to_vec(), vec![b'e'; 100]].concat();
        fs::create_dir_all(root.join(os(&long_dir))).unwrap();
        let long_file = [long_dir.clone(), b"/".to_vec(), vec![b'f'; 120]].concat();
        fs::write(root.join(os(&long_file)), b"long").unwrap();
        fs::write(root.join(os(&[b'n'; 255])), b"max name").unwrap();
        fs::write(root.join(os(b"caf\xe9")), b"latin-1 name").unwrap();
        fs::write(root.join("with space\nand newline"), b"odd name").unwrap();
        fs::write(root.join(os("café-ünïcode".as_bytes())), b"utf-8 name").unwrap();
        set_mtime(&root.join("a/b/c/deep.txt"), 1_234_567_890);
        long_file
    }

    /// Compares an extracted tree with its source.
    fn compare_trees(src: &Path, dst: &Path, owners: bool) {
        let sm = fs::symlink_metadata(src).unwrap();
        let dm = fs::symlink_metadata(dst).unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
        let what = src.display().to_string();
        assert_eq!(sm.file_type().is_dir(), dm.file_type().is_dir(), "{what}");
        assert_eq!(sm.file_type().is_symlink(), dm.file_type().is_symlink(), "{what}");
        assert_eq!(sm.file_type().is_file(), dm.file_type().is_file(), "{what}");
        if owners {
            assert_eq!((sm.uid(), sm.gid()), (dm.uid(), dm.gid()), "{what}");
        }
        if sm.file_type().is_symlink() {
            assert_eq!(fs::read_link(src).unwrap(), fs::read_link(dst).unwrap(), "{what}");
            return;
        }
        assert_eq!(sm.mode() & 0o7777, dm.mode() & 0o7777, "{what}");
        assert_eq!(sm.mtime(), dm.mtime(), "{what}");
        if sm.file_type().is_file() {
            assert_eq!(fs::read(src).unwrap(), fs::read(dst).unwrap(), "{what}");
            return;
        }
        let mut src_names = Vec::new();
        for e in fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_fifo_like() {
                assert!(fs::symlink_metadata(dst.join(e.file_name())).is_err(), "special file was archived");
                continue;
            }
            src_names.push(e.file_name());
        }
        let mut dst_names: Vec<_> = fs::read_dir(dst).unwrap().map(|e| e.unwrap().file_name()).collect();
        src_names.sort();
        dst_names.sort();
        assert_eq!(src_names, dst_names, "{what}");
        for n in src_names {
            compare_trees(&src.join(&n), &dst.join(&n), owners);
        }
    }

    trait FifoLike {
        fn is_fifo_like(&self) -> bool;
    }
    impl FifoLike for fs::FileType {
        fn is_fifo_like(&self) -> bool {
            use std::os::unix::fs::FileTypeExt;
            self.is_fifo() || self.is_socket() || self.is_char_device() || self.is_block_device()
        }
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        vols: Vec<CaptureVolume>,
        out: PathBuf,
        long_file: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let v0 = tmp.path().join("src/data");
        let v1 = tmp.path().join("src/conf");
        fs::create_dir_all(&v0).unwrap();
        fs::create_dir_all(&v1).unwrap();
        let long_file = build_tree(&v0);
        // Compressible data spanning many compression blocks, next to the
        // incompressible big.bin (the parallel compressors cut both).
        fs::write(v0.join("app.log"), log_text(5 << 20)).unwrap();
        fs::write(v1.join("app.conf"), b"key=value\n").unwrap();
        // A hard link between volumes must not become a cross-volume link.
        fs::hard_link(v0.join("hl1"), v1.join("hl3")).unwrap();
        fs::set_permissions(&v1, fs::Permissions::from_mode(0o750)).unwrap();
        let vols = vec![
            CaptureVolume::open_trusted(0, "data", &v0, Some("/var/lib/app")).unwrap(),
            CaptureVolume::open_trusted(1, "conf", &v1, None).unwrap(),
        ];
        let out = tmp.path().join("out/archives/default");
        Fixture { _tmp: tmp, vols, out, long_file }
    }

    fn run(fx: &Fixture, compression: Compression, dest: &Path) -> Result<CaptureOutcome, CaptureError> {
        let m = manifest(&fx.vols);
        let progress = CaptureProgress::default();
        let cancel = AtomicBool::new(false);
        let r = capture(CaptureJob {
            manifest: &m,
            volumes: &fx.vols,
            compression,
            level: None,
            dest,
            progress: &progress,
            cancel: &cancel,
        });
        if r.is_ok() {
            let total = progress.bytes_total.load(Ordering::Relaxed);
            assert_eq!(progress.bytes_done.load(Ordering::Relaxed), total);
            assert!(total > 3 << 20);
        }
        r
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    fn full_round_trip(compression: Compression) {
        let fx = fixture();
        let dest = fx.out.join(format!("snap-1.{}", compression.extension()));
        let outcome = run(&fx, compression, &dest).unwrap();

        // Files on disk: the archive and its checksum, nothing else.
        let name = dest.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(dir_names(&fx.out), vec![name.clone(), format!("{name}.sha256")]);
        assert_eq!(fs::metadata(&dest).unwrap().len(), outcome.size_bytes);
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o600);
        let sum = fs::read_to_string(checksum_path(&dest)).unwrap();
        assert_eq!(sum, format!("{}  {name}\n", outcome.sha256));
        let st = Command::new("sha256sum").arg("-c").arg(format!("{name}.sha256")).current_dir(&fx.out).output();
        assert!(st.unwrap().status.success(), "sha256sum -c");

        // Counts.
        let v0 = &outcome.volumes[0];
        assert_eq!(v0.name, "data");
        assert_eq!(v0.target.as_deref(), Some("/var/lib/app"));
        assert_eq!(v0.special_files_skipped, 1);
        assert_eq!(v0.symlinks, 3);
        // root, a, a/b, a/b/c, empty, dd.., dd../ee..
        assert_eq!(v0.directories, 7);
        // a/empty.txt deep big suid secret owned hl1 a/hl2 long 255 café latin newline app.log
        assert_eq!(v0.files, 14);
        assert_eq!(v0.changed_during_read + v0.vanished + v0.unreadable, 0, "{:?}", v0.warnings);
        assert!(v0.warnings.is_empty(), "{:?}", v0.warnings);
        let v1 = &outcome.volumes[1];
        assert_eq!((v1.files, v1.directories, v1.bytes), (2, 1, 10 + 14));

        // verify and list.
        let report = archive::verify(
            &dest,
            &VerifyLimits { expected_sha256: Some(outcome.sha256.to_uppercase()), ..Default::default() },
        )
        .unwrap();
        assert_eq!(report.sha256, outcome.sha256);
        assert_eq!(report.size_bytes, outcome.size_bytes);
        assert_eq!(report.compression, compression);
        assert_eq!(report.files, v0.files + v1.files);
        assert_eq!(report.bytes, v0.bytes + v1.bytes);
        assert_eq!((report.volumes[0].files, report.volumes[0].bytes), (v0.files, v0.bytes));
        assert_eq!(report.manifest, manifest(&fx.vols));
        let mut listed = Vec::new();
        let m = archive::list(&dest, &mut |e| listed.push(e.clone())).unwrap();
        assert_eq!(m, report.manifest);
        assert_eq!(listed.len() as u64, report.entries);
        assert_eq!(listed[0].path, "volsnap.json");
        assert_eq!(listed[0].mtime, 1_750_000_000);
        assert_eq!(listed[1].path, "volumes/0");
        assert_eq!(listed[1].kind, EntryKind::Dir);
        let find = |p: &[u8]| listed.iter().find(|e| e.path_bytes == p).unwrap_or_else(|| panic!("{p:?} not listed"));
        // Depth-first: a/hl2 is met before hl1, so hl1 is the link.
        assert_eq!(find(b"volumes/0/a/hl2").kind, EntryKind::File);
        let hl1 = find(b"volumes/0/hl1");
        assert_eq!(hl1.kind, EntryKind::Hardlink);
        assert_eq!(hl1.link_target.as_deref(), Some("volumes/0/a/hl2"));
        // Directory entries come first: a/ before a/b before a/b/c.
        let pos = |p: &[u8]| listed.iter().position(|e| e.path_bytes == p).unwrap();
        assert!(pos(b"volumes/0/a") < pos(b"volumes/0/a/b"));
        assert!(pos(b"volumes/0/a/b") < pos(b"volumes/0/a/b/c/deep.txt"));
        assert!(pos(b"volumes/0/a") < pos(b"volumes/0/abs-link"));
        assert_eq!(find(b"volumes/1/hl3").kind, EntryKind::File, "no cross-volume hard link");
        assert_eq!(find(b"volumes/0/abs-link").link_target.as_deref(), Some("/etc/passwd"));
        assert_eq!(find(b"volumes/0/caf\xe9").size, 12);
        assert_eq!(find(&[b"volumes/0/".as_slice(), &fx.long_file].concat()).size, 4);
        assert_eq!(find(b"volumes/0/with space\nand newline").size, 8);
        assert_eq!(find(b"volumes/0/suid").mode, 0o4755);
        if is_root() {
            let owned = find(b"volumes/0/owned");
            assert_eq!((owned.uid, owned.gid), (1234, 5678));
        }

        // The compressors' own tests accept it: one gzip member / zstd frame
        // over many blocks, with its checksums.
        let tester = match compression {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        };
        let out = Command::new(tester).arg("-t").arg(&dest).output().unwrap();
        assert!(out.status.success(), "{tester} -t: {}", String::from_utf8_lossy(&out.stderr));

        // GNU tar extracts it identically.
        let x = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("tar");
        match compression {
            Compression::Gzip => cmd.arg("-xzf"),
            Compression::Zstd => cmd.arg("--zstd").arg("-xf"),
        };
        cmd.arg(&dest).arg("-C").arg(x.path());
        if is_root() {
            cmd.args(["--numeric-owner", "--same-owner", "-p"]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "tar warnings: {}", String::from_utf8_lossy(&out.stderr));
        let json = fs::read(x.path().join("volsnap.json")).unwrap();
        let parsed: ArchiveManifest = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed, manifest(&fx.vols));
        compare_trees(&fx.vols[0].path, &x.path().join("volumes/0"), is_root());
        compare_trees(&fx.vols[1].path, &x.path().join("volumes/1"), is_root());
        let a = fs::metadata(x.path().join("volumes/0/hl1")).unwrap();
        let b = fs::metadata(x.path().join("volumes/0/a/hl2")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hard link pair shares an inode");
        let c = fs::metadata(x.path().join("volumes/1/hl3")).unwrap();
        assert_ne!(a.ino(), c.ino());

        // GNU tar lists it without complaint too.
        let mut cmd = Command::new("tar");
        match compression {
            Compression::Gzip => cmd.arg("-tzvf"),
            Compression::Zstd => cmd.args(["--zstd", "-tvf"]),
        };
        let out = cmd.arg(&dest).output().unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

        // And the tar crate reads the same names.
        let mut n = 0;
        let raw = fs::read(&dest).unwrap();
        let mut tar_bytes = Vec::new();
        match compression {
            Compression::Gzip => {
                flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut tar_bytes).unwrap();
            }
            Compression::Zstd => {
                tar_bytes = zstd::decode_all(&raw[..]).unwrap();
            }
        }
        let mut ar = tar::Archive::new(&tar_bytes[..]);
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let p = e.path_bytes();
            let norm = archive::normalize_entry_name(&p).unwrap();
            assert_eq!(norm, listed[n].path_bytes);
            n += 1;
        }
        assert_eq!(n, listed.len());

        // A second capture to the same destination is deterministic in content.
        let dest2 = fx.out.join(format!("again.{}", compression.extension()));
        let again = run(&fx, compression, &dest2).unwrap();
        assert_eq!(again.sha256, outcome.sha256);
    }

    #[test]
    fn capture_gzip_round_trips_through_gnu_tar() {
        full_round_trip(Compression::Gzip);
    }

    #[test]
    fn capture_zstd_round_trips_through_gnu_tar() {
        full_round_trip(Compression::Zstd);
    }

    /// `spec.level` reaches the compressor: the highest level writes a
    /// smaller archive than the lowest, and both read back the same.
    #[test]
    fn level_changes_the_archive() {
        let fx = fixture();
        for compression in [Compression::Gzip, Compression::Zstd] {
            let range = compression.levels();
            let mut sizes = Vec::new();
            for level in [*range.start(), *range.end()] {
                let dest = fx.out.join(format!("level-{level}.{}", compression.extension()));
                let m = manifest(&fx.vols);
                let progress = CaptureProgress::default();
                let cancel = AtomicBool::new(false);
                let outcome = capture(CaptureJob {
                    manifest: &m,
                    volumes: &fx.vols,
                    compression,
                    level: Some(level),
                    dest: &dest,
                    progress: &progress,
                    cancel: &cancel,
                })
                .unwrap();
                archive::verify(&dest, &VerifyLimits::default()).unwrap();
                sizes.push(outcome.size_bytes);
            }
            assert!(sizes[1] < sizes[0], "{compression:?}: sizes at the lowest and highest level: {sizes:?}");
        }
    }

    #[test]
    fn a_level_outside_the_range_is_refused() {
        let fx = fixture();
        let dest = fx.out.join("x.tar.gz");
        let m = manifest(&fx.vols);
        let progress = CaptureProgress::default();
        let cancel = AtomicBool::new(false);
        let err = capture(CaptureJob {
            manifest: &m,
            volumes: &fx.vols,
            compression: Compression::Gzip,
            level: Some(12),
            dest: &dest,
            progress: &progress,
            cancel: &cancel,
        })
        .unwrap_err();
        assert!(err.to_string().contains("gzip level 12 is outside 1-9"), "{err}");
        assert!(dir_names(&fx.out).is_empty());
    }

    /// A user can put any bytes in a `user.*` value of their own file. One
    /// that the tar crate would read as a record of its own (a newline, then
    /// a well-formed `path` record) would make the archive unrestorable: it
    /// is left out and named, and the rest of the file is captured.
    #[test]
    fn xattr_values_that_tar_readers_would_misread_are_left_out_and_named() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let f = File::create(src.join("f")).unwrap();
        let evil = Xattr { name: b"user.evil".to_vec(), value: b"x\n23 path=volumes/0/evil".to_vec() };
        let fine = Xattr { name: b"user.fine".to_vec(), value: b"\n\0ok\n".to_vec() };
        if let Err(e) = xattr::set(&f, &evil) {
            eprintln!("skipped: no user xattrs here ({e})");
            return;
        }
        xattr::set(&f, &fine).unwrap();
        let vols = vec![CaptureVolume::open_trusted(0, "data", &src, None).unwrap()];
        let dest = tmp.path().join("out/snap.tar.gz");
        let outcome = capture_once(&vols, &dest, Compression::Gzip).unwrap();
        assert_eq!(outcome.volumes[0].xattrs_skipped, 1);
        assert!(outcome.volumes[0].warnings[0].contains("f: extended attribute user.evil not archived"));
        let mut listed = Vec::new();
        archive::verify(&dest, &VerifyLimits::default()).unwrap();
        archive::list(&dest, &mut |e| listed.push(e.clone())).unwrap();
        let f = listed.iter().find(|e| e.path == "volumes/0/f").unwrap();
        assert_eq!(f.xattrs, vec![fine]);
    }

    #[test]
    fn cancel_leaves_nothing() {
        let fx = fixture();
        let dest = fx.out.join("snap.tar.gz");
        let m = manifest(&fx.vols);
        let progress = CaptureProgress::default();
        let cancel = AtomicBool::new(true);
        let job = CaptureJob {
            manifest: &m,
            volumes: &fx.vols,
            compression: Compression::Gzip,
            level: None,
            dest: &dest,
            progress: &progress,
            cancel: &cancel,
        };
        assert!(matches!(capture(job), Err(CaptureError::Cancelled)));
        assert!(dir_names(&fx.out).is_empty());
    }

    #[test]
    fn cancel_during_a_file_read_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        // Large and sparse: cheap to create, takes a while to compress.
        File::create(src.join("huge")).unwrap().set_len(4 << 30).unwrap();
        let vols = vec![CaptureVolume::open_trusted(0, "data", &src, None).unwrap()];
        let m = manifest(&vols);
        let dest = tmp.path().join("out/snap.tar.zst");
        let progress = CaptureProgress::default();
        let cancel = AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                while progress.bytes_done.load(Ordering::Relaxed) == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                cancel.store(true, Ordering::Relaxed);
            });
            capture(CaptureJob {
                manifest: &m,
                volumes: &vols,
                compression: Compression::Zstd,
                level: None,
                dest: &dest,
                progress: &progress,
                cancel: &cancel,
            })
        });
        assert!(matches!(result, Err(CaptureError::Cancelled)), "{result:?}");
        assert!(progress.bytes_done.load(Ordering::Relaxed) < 4 << 30);
        assert!(dir_names(&tmp.path().join("out")).is_empty());
    }

    #[test]
    fn unreadable_volume_root_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("gone");
        fs::create_dir(&gone).unwrap();
        let vols = vec![CaptureVolume::open_trusted(0, "gone", &gone, None).unwrap()];
        // Removed after it was checked and opened: the descriptor is stale.
        fs::remove_dir(&gone).unwrap();
        let dest = tmp.path().join("out/snap.tar.gz");
        let err = capture_once(&vols, &dest, Compression::Gzip).unwrap_err();
        assert!(matches!(err, CaptureError::ReadVolume { .. }), "{err}");
        assert!(err.to_string().contains("gone"), "{err}");
        assert!(dir_names(&tmp.path().join("out")).is_empty());
    }

    #[test]
    fn volume_root_that_is_a_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("real")).unwrap();
        symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
        let err = CaptureVolume::open_trusted(0, "data", &tmp.path().join("link"), None).unwrap_err();
        assert!(matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)), "{err}");
    }

    #[test]
    fn capture_reads_the_directory_it_opened_not_the_path() {
        // The path is re-pointed after the check (the parent swapped for
        // another tree): the capture still reads what was opened.
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("app");
        fs::create_dir_all(parent.join("data")).unwrap();
        fs::write(parent.join("data/mine"), b"mine").unwrap();
        fs::create_dir_all(tmp.path().join("other/data")).unwrap();
        fs::write(tmp.path().join("other/data/secret"), b"secret").unwrap();
        let vols = vec![CaptureVolume::open_trusted(0, "data", &parent.join("data"), None).unwrap()];
        fs::rename(&parent, tmp.path().join("app-moved")).unwrap();
        symlink(tmp.path().join("other"), &parent).unwrap();
        let dest = tmp.path().join("out/snap.tar.gz");
        capture_once(&vols, &dest, Compression::Gzip).unwrap();
        let listing = Command::new("tar").arg("-tzf").arg(&dest).output().unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.contains("volumes/0/mine"), "{listing}");
        assert!(!listing.contains("secret"), "{listing}");
    }

    #[test]
    fn existing_temp_file_is_reported() {
        let fx = fixture();
        fs::create_dir_all(&fx.out).unwrap();
        let dest = fx.out.join("snap.tar.gz");
        fs::write(temp_path(&dest).unwrap(), b"other capture").unwrap();
        let err = run(&fx, Compression::Gzip, &dest).unwrap_err();
        assert!(matches!(err, CaptureError::Write { .. }), "{err}");
        assert!(err.to_string().contains("already exists"), "{err}");
        // The other capture's file is left alone.
        assert_eq!(fs::read(temp_path(&dest).unwrap()).unwrap(), b"other capture");
        assert!(!dest.exists());
    }

    #[test]
    fn shrinking_file_is_padded_and_flagged() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("f"), b"12345").unwrap();
        let mut file = File::open(tmp.path().join("f")).unwrap();
        let cancel = AtomicBool::new(false);
        let progress = AtomicU64::new(0);
        let mut src = SourceReader {
            file: &mut file,
            cancel: &cancel,
            progress: &progress,
            read: 0,
            shrank: false,
            error: None,
            cancelled: false,
            holes: None,
        };
        // The header announced 10 bytes; the file now has 5.
        let mut w = ArchiveWriter::new(Vec::new(), Compression::Gzip).unwrap();
        w.append_file(b"volumes/0/f", &EntryMeta::default(), 10, &mut src).unwrap();
        assert!(src.shrank && src.error.is_none() && !src.cancelled);
        assert_eq!((src.read, progress.load(Ordering::Relaxed)), (5, 5));
        let (gz, _, _) = w.finish().unwrap();
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut tar_bytes).unwrap();
        let mut ar = tar::Archive::new(&tar_bytes[..]);
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"12345\0\0\0\0\0");
    }

    #[test]
    fn warnings_are_capped() {
        let fx = fixture();
        let m = manifest(&fx.vols);
        let progress = CaptureProgress::default();
        let cancel = AtomicBool::new(false);
        let dest = fx.out.join("x.tar.gz");
        let job = CaptureJob {
            manifest: &m,
            volumes: &fx.vols,
            compression: Compression::Gzip,
            level: None,
            dest: &dest,
            progress: &progress,
            cancel: &cancel,
        };
        let tmp = tempfile::tempfile().unwrap();
        let mut writer = ArchiveWriter::new(tmp, Compression::Gzip).unwrap();
        let mut walk = VolumeWalk {
            job: &job,
            writer: &mut writer,
            counts: CapturedVolume::default(),
            extra_warnings: 0,
            links: HashMap::new(),
            xattrs: xattr::Reader::default(),
        };
        for i in 0..25 {
            walk.vanished(format!("f{i}").as_bytes(), &io::Error::from_raw_os_error(libc::ENOENT));
        }
        let counts = walk.into_counts();
        assert_eq!(counts.vanished, 25);
        assert_eq!(counts.warnings.len(), 21);
        assert_eq!(counts.warnings[0], "f0: vanished before it could be read; not archived");
        assert_eq!(counts.warnings[20], "... and 5 more");
    }

    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    fn disk_full_is_a_write_error_and_leaves_nothing() {
        if !is_root() {
            eprintln!("skipped: needs root to mount a tmpfs");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("random"), noise(4 << 20, 99)).unwrap();
        let mnt = tmp.path().join("small");
        fs::create_dir(&mnt).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&mnt).status().unwrap();
        if !st.success() {
            eprintln!("skipped: cannot mount a tmpfs here");
            return;
        }
        let _guard = Unmount(mnt.clone());
        let vols = vec![CaptureVolume::open_trusted(0, "data", &src, None).unwrap()];
        let dest = mnt.join("snap.tar.gz");
        let err = capture_once(&vols, &dest, Compression::Gzip).unwrap_err();
        assert!(matches!(err, CaptureError::Write { .. }), "{err}");
        assert!(err.to_string().contains("No space left"), "{err}");
        assert!(dir_names(&mnt).is_empty(), "{:?}", dir_names(&mnt));
    }
}
