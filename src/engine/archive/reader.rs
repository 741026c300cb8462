//! Reading archives: listing, and structural verification of untrusted input.
//!
//! Both [`list`] and [`verify`] stream the archive once through the same
//! walker, which enforces every structural rule of the format (SPEC
//! section 3) and the safety rules of the untrusted-archive extractor:
//! safe relative names under `volumes/<index>/`, allowed entry types only,
//! hard links to earlier files of the same volume, no duplicates, no entry
//! below a symlink or a file, size and entry caps, and intact compression
//! (gzip CRC, zstd content checksum) up to the last byte of the file.
//!
//! Memory is bounded: file contents are streamed and discarded, extended
//! headers (pax `x`, GNU `L`/`K`) larger than 1 MiB are refused before the
//! `tar` crate buffers them, and the duplicate check keeps 16 bytes per name.
//!
//! # Two threads
//!
//! A walk runs on two threads. One reads the file, hashes it (sha256) and
//! decompresses it, in one pass; the other, the caller's, follows the tar
//! framing, runs every check and hands the entries to the sink (the
//! extractor writes the files there). Between them is a bounded channel of
//! [`PIPE_DEPTH`] buffers of [`PIPE_CHUNK`] bytes, handed back for reuse, so
//! memory stays fixed whatever the archive. Decompression and file writing
//! then overlap: a restore runs at the speed of the slower of the two rather
//! than their sum. Nothing about the checks changes: the checking thread sees
//! the same decompressed bytes in the same order, and every entry still
//! reaches the sink only after it passed. An error on either side ends both:
//! a decompression or read error travels down the channel in the place of
//! the data, and a checking thread that stops (a refused entry, a sink
//! error, cancellation) drops its end, which stops the decompressing thread
//! at its next buffer. The decompressing thread is scoped to the walk: it
//! has always been joined when the walk returns.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::{ArchiveManifest, FORMAT_VERSION, MANIFEST_ENTRY, VOLUMES_DIR, detect_compression, pax};
use crate::api::Compression;
use crate::api::validate;
use crate::engine::xattr::{self, Xattr};

/// Largest `volsnap.json` accepted.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Largest extended header (pax `x`/`g`, GNU `L`/`K`) accepted.
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;
/// Largest run of zero bytes accepted after the end-of-archive marker.
const MAX_TRAILING_ZEROS: u64 = 1 << 20;
const BLOCK: u64 = 512;
const READ_BUFFER: usize = 256 * 1024;
/// Size of one buffer of decompressed data handed from the decompressing
/// thread to the checking one.
pub const PIPE_CHUNK: usize = 256 * 1024;
/// Buffers in flight between the two threads (the channel's bound): with
/// the one each side holds, at most `PIPE_DEPTH + 2` buffers exist.
pub const PIPE_DEPTH: usize = 4;
/// Longest file name component Linux file systems hold (`NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// Longest symlink target `symlink(2)` accepts (`PATH_MAX` less its NUL).
pub const MAX_SYMLINK_TARGET: usize = 4095;
/// Largest zstd window the decoder accepts, as a power of two (32 MiB).
///
/// The decoder allocates the whole window a frame asks for, so this cap is
/// what keeps a restore's peak RSS well under 64 MiB. Every zstd level up
/// to `--ultra -20` (and so every level volsnap writes, 1 to 19) fits;
/// `zstd --long` (128 MiB at its default, up to 2 GiB with `--long=31`) and
/// `--ultra -21`/`-22` do not, and are refused with a message saying so.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 25;

/// Why an archive is rejected. Messages name the offending entry.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// I/O failure reading the file.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// Not gzip or zstd data at all.
    #[error("not a volsnap archive: {0}")]
    NotAnArchive(String),
    /// The stream ends early.
    #[error("archive is truncated: {0}")]
    Truncated(String),
    /// The compressed data or the tar structure is damaged.
    #[error("archive is corrupt: {0}")]
    Corrupt(String),
    /// The first entry is not `volsnap.json`.
    #[error("not a volsnap archive: {0}")]
    ManifestMissing(String),
    /// `volsnap.json` is present but not acceptable.
    #[error("invalid volsnap.json: {0}")]
    ManifestInvalid(String),
    /// An entry name or symlink that must not be extracted.
    #[error("unsafe entry {entry:?}: {why}")]
    UnsafePath {
        /// Entry name (lossy UTF-8).
        entry: String,
        /// What is wrong with it.
        why: String,
    },
    /// An entry type other than file, directory, symlink or hard link.
    #[error(
        "entry {entry:?} is a {kind}; volsnap archives hold only regular files, directories, symlinks and hard links"
    )]
    UnsupportedEntryType {
        /// Entry name (lossy UTF-8).
        entry: String,
        /// The type found.
        kind: String,
    },
    /// `volumes/<index>/` with an index the manifest does not list.
    #[error("entry {entry:?} belongs to volume index {index}, which volsnap.json does not list")]
    UnknownVolume {
        /// Entry name (lossy UTF-8).
        entry: String,
        /// The index.
        index: u32,
    },
    /// The same name twice.
    #[error("duplicate entry {entry:?}")]
    DuplicateEntry {
        /// Entry name (lossy UTF-8).
        entry: String,
    },
    /// A hard link that does not point to an earlier file of its volume.
    #[error("hard link {entry:?} -> {target:?} rejected: {why}")]
    BadHardlink {
        /// Entry name (lossy UTF-8).
        entry: String,
        /// Link target (lossy UTF-8).
        target: String,
        /// What is wrong with it.
        why: String,
    },
    /// A zstd frame that needs a larger window than the decoder's cap.
    #[error(
        "the zstd stream needs a {needed_mib} MiB window (it was compressed with `zstd --long` or `--ultra -21`/`-22`); volsnap decodes with at most a {cap_mib} MiB window to keep its memory bounded, so it cannot read this archive. The archive is not damaged: recompress it without --long, e.g. `zstd -dc --long=31 FILE | zstd -19 -o NEW`"
    )]
    WindowTooLarge {
        /// Window the frame asks for, MiB (rounded up).
        needed_mib: u64,
        /// The cap, MiB.
        cap_mib: u64,
    },
    /// The expanded content exceeds the cap.
    #[error(
        "archive content expands to more than the limit of {limit} bytes; refused as a possible decompression bomb"
    )]
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// More entries than the cap.
    #[error("archive has more than the limit of {limit} entries")]
    TooManyEntries {
        /// The cap.
        limit: u64,
    },
    /// Writing an extracted entry failed (disk full, permissions, or a path
    /// component that is not the directory the extractor created).
    #[error("extracting into {path}: {source}")]
    Extract {
        /// The destination path.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The file's sha256 is not the expected one.
    #[error("checksum mismatch: expected sha256 {expected}, the file has {actual}")]
    ChecksumMismatch {
        /// Expected (as given).
        expected: String,
        /// Computed.
        actual: String,
    },
}

/// Type of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Hard link to an earlier entry.
    Hardlink,
}

impl EntryKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Hardlink => "hardlink",
        }
    }
}

/// One entry, as listed (after validation).
#[derive(Clone, Debug, PartialEq)]
pub struct EntryInfo {
    /// Normalised entry name (no trailing `/`), lossy UTF-8.
    pub path: String,
    /// Normalised entry name, exact bytes.
    pub path_bytes: Vec<u8>,
    /// Type.
    pub kind: EntryKind,
    /// Content size (0 for everything but files).
    pub size: u64,
    /// Permission bits (0o7777).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Symlink target (as stored) or hard link target (normalised), lossy UTF-8.
    pub link_target: Option<String>,
    /// The same target, exact bytes (for extraction).
    pub link_bytes: Option<Vec<u8>>,
    /// Extended attributes (pax `SCHILY.xattr.*` records), names checked by
    /// [`xattr::check_name`], in archive order.
    pub xattrs: Vec<Xattr>,
}

/// Limits for verification of untrusted archives.
#[derive(Clone, Debug, Default)]
pub struct VerifyLimits {
    /// Cap on the total size of file contents once expanded.
    pub max_expanded_bytes: Option<u64>,
    /// Cap on the number of entries (`volsnap.json` included).
    pub max_entries: Option<u64>,
    /// When set, the sha256 (hex, any case) the file must have.
    pub expected_sha256: Option<String>,
}

/// Counts for one volume of a verified archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeReport {
    /// Index (`volumes/<index>/`).
    pub index: u32,
    /// Name from the manifest.
    pub name: String,
    /// Regular files, hard links included.
    pub files: u64,
    /// Content bytes.
    pub bytes: u64,
    /// Directories, the volume root included.
    pub directories: u64,
    /// Symbolic links.
    pub symlinks: u64,
}

/// What verification found.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// The manifest.
    pub manifest: ArchiveManifest,
    /// Compression.
    pub compression: Compression,
    /// sha256 of the archive file as read, hex.
    pub sha256: String,
    /// Size of the archive file as read.
    pub size_bytes: u64,
    /// Entries, `volsnap.json` included.
    pub entries: u64,
    /// Regular files, hard links included.
    pub files: u64,
    /// Content bytes of all files.
    pub bytes: u64,
    /// Per volume, in manifest order.
    pub volumes: Vec<VolumeReport>,
}

/// Lists an archive, calling `visit` for every entry (`volsnap.json` first)
/// once it has passed the checks, and returns the manifest.
///
/// # Security
///
/// Safe on untrusted input: the archive goes through every check of
/// [`verify`] (without size caps or checksum), and the entries already
/// visited when an error is returned were valid on their own. Nothing is
/// written to disk.
pub fn list(path: &Path, visit: &mut dyn FnMut(&EntryInfo)) -> Result<ArchiveManifest, ArchiveError> {
    walk(path, &VerifyLimits::default(), &mut VisitOnly(visit)).map(|r| r.manifest)
}

/// Receives the entries of an archive as the walker validates them. Used by
/// [`list`], [`verify`] and the extractor ([`crate::engine::extract`]), so
/// that every consumer sees exactly the entries the checks accepted.
pub(crate) trait EntrySink {
    /// Called once, after `volsnap.json` has been parsed and validated, before
    /// any other entry.
    fn manifest(&mut self, _manifest: &ArchiveManifest) -> Result<(), ArchiveError> {
        Ok(())
    }

    /// Called for every entry (`volsnap.json` first) once its name, type,
    /// parents and link target have passed the checks. `data` yields a
    /// regular file's content (nothing for other kinds); what the sink does
    /// not read is drained and checked by the walker afterwards. Read errors
    /// are reported by the walker, in preference to the sink's own error.
    fn entry(&mut self, info: &EntryInfo, data: &mut dyn Read) -> Result<(), ArchiveError>;
}

/// A sink that only looks at the entry metadata.
struct VisitOnly<'a>(&'a mut dyn FnMut(&EntryInfo));

impl EntrySink for VisitOnly<'_> {
    fn entry(&mut self, info: &EntryInfo, _data: &mut dyn Read) -> Result<(), ArchiveError> {
        (self.0)(info);
        Ok(())
    }
}

/// Reads the whole archive and checks its structure, its compression
/// integrity and, when asked, its sha256.
///
/// # Security
///
/// Meant for untrusted input (adopted archives, archives about to be
/// restored): memory stays bounded whatever the archive claims, content is
/// never written anywhere, and the archive is rejected on path traversal
/// (`..`, absolute or `.` names), names outside `volumes/<index>/`, unknown
/// volume indexes, entry types other than file/directory/symlink/hard link,
/// entries below a symlink or file entry, hard links that do not point to an
/// earlier file of the same volume, duplicates, ambiguous extended headers,
/// truncation, checksum errors, trailing garbage, and expansion or entry
/// counts above `limits`. Symlink targets are data: they are not checked, and
/// an extractor must never write through them.
pub fn verify(path: &Path, limits: &VerifyLimits) -> Result<VerifyReport, ArchiveError> {
    walk_checked(path, limits, &mut VisitOnly(&mut |_| {}))
}

/// Walks the whole archive through `sink`, then checks the sha256 when
/// `limits` asks for one.
pub(crate) fn walk_checked(
    path: &Path,
    limits: &VerifyLimits,
    sink: &mut dyn EntrySink,
) -> Result<VerifyReport, ArchiveError> {
    let report = walk(path, limits, sink)?;
    if let Some(expected) = &limits.expected_sha256
        && !expected.trim().eq_ignore_ascii_case(&report.sha256)
    {
        return Err(ArchiveError::ChecksumMismatch { expected: expected.clone(), actual: report.sha256 });
    }
    Ok(report)
}

/// Checks an entry name and returns it normalised: components joined by a
/// single `/`, no leading, trailing or repeated `/`.
///
/// # Security
///
/// Rejects empty and absolute names, NUL bytes, `.` and `..` components,
/// and components longer than [`NAME_MAX`] bytes, which no Linux file system
/// can hold (an extractor would fail on them half-way). The whole name may be
/// longer than `PATH_MAX`: file systems hold such trees, the capture walks and
/// the extractor writes them one component at a time, and the extended
/// header cap bounds the length.
pub fn normalize_entry_name(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.is_empty() {
        return Err("empty name".into());
    }
    if raw[0] == b'/' {
        return Err("absolute name".into());
    }
    if raw.contains(&0) {
        return Err("name contains a NUL byte".into());
    }
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if comp == b".." {
            return Err("name contains a '..' component".into());
        }
        if comp == b"." {
            return Err("name contains a '.' component".into());
        }
        if comp.len() > NAME_MAX {
            return Err(format!(
                "name has a component of {} bytes; no Linux file system holds names longer than {NAME_MAX} bytes (NAME_MAX)",
                comp.len()
            ));
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(comp);
    }
    if out.is_empty() {
        return Err("empty name".into());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The walker.

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Hashes every byte read from the file; records whether the file itself
/// failed (to tell I/O errors from corruption).
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    failed: Arc<AtomicBool>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed.store(true, Ordering::Release);
                }
                Err(e)
            }
        }
    }
}

type Raw = BufReader<HashingReader<File>>;

// One per walk: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Decoder {
    Gzip(flate2::bufread::GzDecoder<Raw>),
    Zstd(zstd::stream::read::Decoder<'static, Raw>),
}

impl Read for Decoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

impl Decoder {
    fn into_inner(self) -> Raw {
        match self {
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
        }
    }
}

/// What the decompressing thread sends the checking thread.
enum Piece {
    /// The next decompressed bytes (never empty).
    Data(Vec<u8>),
    /// Reading or decompressing failed here; nothing follows.
    Failed(io::Error),
    /// The compressed stream ended cleanly; nothing follows.
    End,
}

/// How the decompressing thread ended, once the compressed stream did.
enum Tail {
    /// The checking thread stopped listening first (it failed): nothing to
    /// report.
    Abandoned,
    /// Stream and file ended; the bytes after the compressed stream were
    /// read: `Ok` with the file's sha256 and size when they were all zeros
    /// (padding), else why not.
    Done(Result<(String, u64), TailError>),
}

enum TailError {
    Io(io::Error),
    Garbage,
}

/// The decompressing thread: fills buffers from `decoder` and sends them,
/// then checks what follows the compressed stream and finishes the hash.
fn decompress(mut decoder: Decoder, tx: SyncSender<Piece>, spare: Receiver<Vec<u8>>) -> Tail {
    loop {
        let mut buf = match spare.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Vec::with_capacity(PIPE_CHUNK),
        };
        buf.resize(PIPE_CHUNK, 0);
        let mut n = 0;
        let mut failed = None;
        let mut ended = false;
        while n < buf.len() {
            match decoder.read(&mut buf[n..]) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if n > 0 {
            buf.truncate(n);
            if tx.send(Piece::Data(buf)).is_err() {
                return Tail::Abandoned;
            }
        }
        if let Some(e) = failed {
            let _ = tx.send(Piece::Failed(e));
            return Tail::Abandoned;
        }
        if ended {
            break;
        }
    }
    if tx.send(Piece::End).is_err() {
        return Tail::Abandoned;
    }
    drop(tx);
    // After the compressed stream: only zero padding, to the end of the file.
    let mut raw = decoder.into_inner();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if buf[..n].iter().any(|&b| b != 0) => return Tail::Done(Err(TailError::Garbage)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Tail::Done(Err(TailError::Io(e))),
        }
    }
    let hashing = raw.into_inner();
    Tail::Done(Ok((hex::encode(hashing.hasher.finalize()), hashing.count)))
}

/// The checking thread's end of the channel: the decompressed stream as a
/// [`Read`]. Consumed buffers go back to the decompressing thread.
struct Pipe {
    rx: Receiver<Piece>,
    spare: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for Pipe {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Data(b)) => {
                    let old = std::mem::replace(&mut self.cur, b);
                    self.pos = 0;
                    if old.capacity() >= PIPE_CHUNK {
                        let _ = self.spare.try_send(old);
                    }
                }
                Ok(Piece::End) => self.ended = true,
                Ok(Piece::Failed(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::other("the decompressing thread stopped before the end of the stream"));
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Follows the tar framing of the decompressed stream in front of the `tar`
/// crate: refuses oversized extended headers before the crate buffers them
/// whole, and notes whether the end-of-archive marker was reached.
struct TarGuard<R> {
    inner: R,
    pos: u64,
    next_header: u64,
    hdr: [u8; BLOCK as usize],
    hdr_fill: usize,
    pax_range: Option<(u64, u64)>,
    pax_buf: Vec<u8>,
    pending_pax_size: Option<u64>,
    pending_pax: Option<Vec<u8>>,
    /// The pax header (`x`) of the last entry header seen, raw: the walker
    /// reads its records exactly, which the `tar` crate does not.
    current_pax: Rc<RefCell<Option<Vec<u8>>>>,
    /// A zero block was read where a header was due.
    ended: bool,
    /// The framing could not be followed (the `tar` crate reports why).
    lost: bool,
    /// The decompressed stream ended before the end-of-archive marker.
    early_eof: Rc<Cell<bool>>,
}

impl<R: Read> TarGuard<R> {
    fn new(inner: R, early_eof: Rc<Cell<bool>>, current_pax: Rc<RefCell<Option<Vec<u8>>>>) -> Self {
        TarGuard {
            early_eof,
            current_pax,
            pending_pax: None,
            inner,
            pos: 0,
            next_header: 0,
            hdr: [0; BLOCK as usize],
            hdr_fill: 0,
            pax_range: None,
            pax_buf: Vec::new(),
            pending_pax_size: None,
            ended: false,
            lost: false,
        }
    }

    fn observe(&mut self, data: &[u8]) -> io::Result<()> {
        let mut off = 0usize;
        while off < data.len() && !self.ended && !self.lost {
            let abs = self.pos + off as u64;
            let left = data.len() - off;
            if abs < self.next_header {
                let n = (self.next_header - abs).min(left as u64) as usize;
                if let Some((start, end)) = self.pax_range {
                    let s = abs.max(start);
                    let e = (abs + n as u64).min(end);
                    if s < e {
                        let from = off + (s - abs) as usize;
                        self.pax_buf.extend_from_slice(&data[from..from + (e - s) as usize]);
                    }
                }
                off += n;
                continue;
            }
            let n = (BLOCK as usize - self.hdr_fill).min(left);
            self.hdr[self.hdr_fill..self.hdr_fill + n].copy_from_slice(&data[off..off + n]);
            self.hdr_fill += n;
            off += n;
            if self.hdr_fill == BLOCK as usize {
                self.hdr_fill = 0;
                self.on_header()?;
            }
        }
        self.pos += data.len() as u64;
        Ok(())
    }

    fn on_header(&mut self) -> io::Result<()> {
        if self.pax_range.take().is_some() {
            let data = std::mem::take(&mut self.pax_buf);
            self.pending_pax_size = pax_size(&data);
            self.pending_pax = Some(data);
        }
        if self.hdr.iter().all(|&b| b == 0) {
            self.ended = true;
            return Ok(());
        }
        let header = Header::from_byte_slice(&self.hdr);
        let Ok(mut size) = header.entry_size() else {
            self.lost = true;
            return Ok(());
        };
        let data_start = self.next_header + BLOCK;
        match self.hdr[156] {
            flag @ (b'x' | b'g' | b'L' | b'K') => {
                if size > MAX_EXTENSION_BYTES {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "extended header ('{}') of {size} bytes exceeds the limit of {MAX_EXTENSION_BYTES} bytes",
                            flag as char
                        ),
                    ));
                }
                match flag {
                    b'x' => {
                        self.pax_range = Some((data_start, data_start + size));
                        self.pax_buf = Vec::with_capacity(size as usize);
                    }
                    b'g' => {
                        self.pending_pax_size = None;
                        self.pending_pax = None;
                    }
                    _ => {}
                }
            }
            _ => {
                if let Some(s) = self.pending_pax_size.take() {
                    size = s;
                }
                *self.current_pax.borrow_mut() = self.pending_pax.take();
            }
        }
        match size.checked_add(BLOCK - 1).map(|s| s & !(BLOCK - 1)).and_then(|s| data_start.checked_add(s)) {
            Some(next) => self.next_header = next,
            None => self.lost = true,
        }
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.ended {
            self.early_eof.set(true);
        }
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

/// The window a zstd frame needs, from its header (RFC 8878, 3.1.1.1), or
/// `None` when `head` is too short to tell (the decoder then reports it).
fn zstd_window_size(head: &[u8]) -> Option<u64> {
    let descriptor = *head.get(4)?;
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let w = *head.get(5)?;
        let log = 10 + u32::from(w >> 3);
        let base = 1u64 << log;
        return Some(base + (base / 8) * u64::from(w & 7));
    }
    // Single segment: the window is the content size, after the dictionary id.
    let dict_len = [0usize, 1, 2, 4][usize::from(descriptor & 3)];
    let fcs_len = [1usize, 2, 4, 8][usize::from(descriptor >> 6)];
    let start = 5 + dict_len;
    let bytes = head.get(start..start + fcs_len)?;
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    Some(if fcs_len == 2 { v + 256 } else { v })
}

/// The `size` the `tar` crate takes from a pax header (first valid record).
fn pax_size(data: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.ok()?;
        if ext.key_bytes() == b"size" {
            return ext.value().ok()?.parse().ok();
        }
    }
    None
}

/// Kind of a name seen so far, for the duplicate and parent checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    File,
    Dir,
    Symlink,
    Hardlink,
    Manifest,
    /// Parent of an entry, without an entry of its own (yet).
    Implicit,
}

fn name_key(name: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(name);
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

struct Ctx<'a> {
    path: &'a Path,
    file_failed: Arc<AtomicBool>,
    early_eof: Rc<Cell<bool>>,
    current_pax: Rc<RefCell<Option<Vec<u8>>>>,
}

impl Ctx<'_> {
    fn io(&self, e: io::Error) -> ArchiveError {
        ArchiveError::Io { path: self.path.display().to_string(), source: e }
    }

    /// Classifies an error met while decompressing or parsing.
    fn stream(&self, e: io::Error) -> ArchiveError {
        if self.file_failed.load(Ordering::Acquire) {
            self.io(e)
        } else if e.kind() == io::ErrorKind::UnexpectedEof || self.early_eof.get() {
            ArchiveError::Truncated(e.to_string())
        } else {
            ArchiveError::Corrupt(e.to_string())
        }
    }
}

fn walk(path: &Path, limits: &VerifyLimits, sink: &mut dyn EntrySink) -> Result<VerifyReport, ArchiveError> {
    let ctx = Ctx {
        path,
        file_failed: Arc::new(AtomicBool::new(false)),
        early_eof: Rc::new(Cell::new(false)),
        current_pax: Rc::new(RefCell::new(None)),
    };
    let file = open_regular(path).map_err(|e| ctx.io(e))?;
    let hashing = HashingReader { inner: file, hasher: Sha256::new(), count: 0, failed: ctx.file_failed.clone() };
    let mut raw = BufReader::with_capacity(READ_BUFFER, hashing);
    let compression = {
        let head = raw.fill_buf().map_err(|e| ctx.io(e))?;
        detect_compression(head).ok_or_else(|| ArchiveError::NotAnArchive("not gzip or zstd".into()))?
    };
    let decoder = match compression {
        Compression::Gzip => Decoder::Gzip(flate2::bufread::GzDecoder::new(raw)),
        Compression::Zstd => {
            let head = raw.fill_buf().map_err(|e| ctx.io(e))?;
            if let Some(window) = zstd_window_size(head)
                && window > 1u64 << ZSTD_WINDOW_LOG_MAX
            {
                return Err(ArchiveError::WindowTooLarge {
                    needed_mib: window.div_ceil(1 << 20),
                    cap_mib: 1 << (ZSTD_WINDOW_LOG_MAX - 20),
                });
            }
            let mut d = zstd::stream::read::Decoder::with_buffer(raw).map_err(|e| ctx.io(e))?.single_frame();
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| ctx.io(e))?;
            Decoder::Zstd(d)
        }
    };
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel(PIPE_DEPTH);
        let (spare_tx, spare_rx) = sync_channel(PIPE_DEPTH + 2);
        let decompressing = std::thread::Builder::new()
            .name("volsnap-decompress".into())
            .spawn_scoped(scope, move || decompress(decoder, tx, spare_rx))
            .map_err(|e| ctx.io(e))?;
        let pipe = Pipe { rx, spare: spare_tx, cur: Vec::new(), pos: 0, ended: false };
        // `pipe` is dropped when `check_stream` returns, which stops the
        // decompressing thread if it is still going, before it is joined.
        let checked = check_stream(&ctx, pipe, limits, sink);
        let tail = decompressing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let mut report = checked?;
        match tail {
            Tail::Done(Ok((sha256, size))) => {
                report.sha256 = sha256;
                report.size_bytes = size;
                report.compression = compression;
                Ok(report)
            }
            Tail::Done(Err(TailError::Io(e))) => Err(ctx.io(e)),
            Tail::Done(Err(TailError::Garbage)) => Err(ArchiveError::Corrupt(format!(
                "unexpected data after the end of the {} stream",
                compression.as_str()
            ))),
            Tail::Abandoned => Err(ctx.io(io::Error::other("the decompressing thread stopped early"))),
        }
    })
}

/// The checking side of a walk: the tar stream in `pipe`, through every
/// check, to `sink`, up to the end of the decompressed stream. The sha256,
/// size and compression of the report are the caller's to fill in.
fn check_stream(
    ctx: &Ctx<'_>,
    pipe: Pipe,
    limits: &VerifyLimits,
    sink: &mut dyn EntrySink,
) -> Result<VerifyReport, ArchiveError> {
    let mut archive = tar::Archive::new(TarGuard::new(pipe, ctx.early_eof.clone(), ctx.current_pax.clone()));

    let mut w = Walker {
        ctx,
        limits,
        seen: HashMap::new(),
        volume_pos: HashMap::new(),
        volumes: Vec::new(),
        manifest: None,
        entries: 0,
        files: 0,
        bytes: 0,
        buf: vec![0u8; 64 * 1024],
    };
    {
        let mut entries = archive.entries().map_err(|e| ctx.stream(e))?;
        loop {
            let entry = match entries.next() {
                None => break,
                Some(Ok(e)) => e,
                Some(Err(e)) => return Err(ctx.stream(e)),
            };
            w.entry(entry, sink)?;
        }
    }
    let manifest =
        w.manifest.take().ok_or_else(|| ArchiveError::ManifestMissing("the archive holds no entries".into()))?;

    // The end of the tar stream, then of the compressed stream (the end of
    // the file is the decompressing thread's to check).
    let mut guard = archive.into_inner();
    if !guard.ended {
        return Err(ArchiveError::Truncated("the tar stream ends without an end-of-archive marker".into()));
    }
    let mut trailing = 0u64;
    loop {
        let n = guard.read(&mut w.buf).map_err(|e| ctx.stream(e))?;
        if n == 0 {
            break;
        }
        if w.buf[..n].iter().any(|&b| b != 0) {
            return Err(ArchiveError::Corrupt("non-zero data after the tar end-of-archive marker".into()));
        }
        trailing += n as u64;
        if trailing > MAX_TRAILING_ZEROS {
            return Err(ArchiveError::Corrupt(format!(
                "more than {MAX_TRAILING_ZEROS} bytes of padding after the tar end-of-archive marker"
            )));
        }
    }
    if trailing < BLOCK {
        return Err(ArchiveError::Truncated("the second block of the tar end-of-archive marker is missing".into()));
    }
    Ok(VerifyReport {
        manifest,
        compression: Compression::Gzip,
        sha256: String::new(),
        size_bytes: 0,
        entries: w.entries,
        files: w.files,
        bytes: w.bytes,
        volumes: w.volumes,
    })
}

/// Opens an archive for reading, refusing anything but a regular file. The
/// open is non-blocking, so a FIFO put where an archive should be fails
/// here instead of waiting forever for a writer.
fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

struct Walker<'a> {
    ctx: &'a Ctx<'a>,
    limits: &'a VerifyLimits,
    seen: HashMap<[u8; 16], Seen>,
    volume_pos: HashMap<u32, usize>,
    volumes: Vec<VolumeReport>,
    manifest: Option<ArchiveManifest>,
    entries: u64,
    files: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl Walker<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>, sink: &mut dyn EntrySink) -> Result<(), ArchiveError> {
        self.entries += 1;
        if let Some(limit) = self.limits.max_entries
            && self.entries > limit
        {
            return Err(ArchiveError::TooManyEntries { limit });
        }
        let raw_name = entry.path_bytes().into_owned();
        let shown = lossy(&raw_name);
        let pax_data = ctx_pax(self.ctx);
        let ext = PaxInfo::read(&entry, pax_data.as_deref(), &raw_name).map_err(ArchiveError::Corrupt)?;
        let header = entry.header();
        let entry_type = header.entry_type();
        let kind = match entry_type {
            EntryType::Regular => EntryKind::File,
            EntryType::Directory => EntryKind::Dir,
            EntryType::Symlink => EntryKind::Symlink,
            EntryType::Link => EntryKind::Hardlink,
            other => {
                return Err(ArchiveError::UnsupportedEntryType { entry: shown, kind: type_name(other) });
            }
        };
        if ext.sparse {
            return Err(ArchiveError::UnsupportedEntryType { entry: shown, kind: "GNU sparse file".into() });
        }
        let corrupt = |e: io::Error| ArchiveError::Corrupt(format!("entry {shown:?}: {e}"));
        let mode = header.mode().map_err(corrupt)? & 0o7777;
        let uid = header.uid().map_err(corrupt)?;
        let gid = header.gid().map_err(corrupt)?;
        let mtime = match ext.mtime {
            Some(m) => m,
            None => header.mtime().map_err(corrupt)? as i64,
        };
        let size = entry.size();
        let link_raw = entry.link_name_bytes().map(|l| l.into_owned());

        let name =
            normalize_entry_name(&raw_name).map_err(|why| ArchiveError::UnsafePath { entry: shown.clone(), why })?;
        if kind == EntryKind::File && raw_name.ends_with(b"/") {
            return Err(ArchiveError::UnsafePath {
                entry: shown,
                why: "a regular file entry whose name ends with '/'".into(),
            });
        }
        if kind != EntryKind::File && size != 0 {
            return Err(ArchiveError::Corrupt(format!(
                "entry {shown:?} is a {} but carries {size} bytes of data",
                kind.as_str()
            )));
        }

        // The manifest: first, and only first.
        if self.manifest.is_none() {
            if name != MANIFEST_ENTRY.as_bytes() || kind != EntryKind::File {
                return Err(ArchiveError::ManifestMissing(format!(
                    "the first entry must be the file {MANIFEST_ENTRY}, found {} {shown:?}",
                    kind.as_str()
                )));
            }
            if size > MAX_MANIFEST_BYTES {
                return Err(ArchiveError::ManifestInvalid(format!(
                    "it is {size} bytes; the limit is {MAX_MANIFEST_BYTES}"
                )));
            }
            let mut data = Vec::with_capacity(size as usize);
            (&mut entry).take(size).read_to_end(&mut data).map_err(|e| self.ctx.stream(e))?;
            if (data.len() as u64) < size {
                return Err(ArchiveError::Truncated(format!("the archive ends inside {MANIFEST_ENTRY}")));
            }
            let manifest = parse_manifest(&data)?;
            for (pos, v) in manifest.volumes.iter().enumerate() {
                self.volume_pos.insert(v.index, pos);
                self.volumes.push(VolumeReport {
                    index: v.index,
                    name: v.name.clone(),
                    files: 0,
                    bytes: 0,
                    directories: 0,
                    symlinks: 0,
                });
            }
            sink.manifest(&manifest)?;
            self.manifest = Some(manifest);
            self.seen.insert(name_key(&name), Seen::Manifest);
            let info = EntryInfo {
                path: MANIFEST_ENTRY.into(),
                path_bytes: name,
                kind,
                size,
                mode,
                uid,
                gid,
                mtime,
                link_target: None,
                link_bytes: None,
                xattrs: Vec::new(),
            };
            sink.entry(&info, &mut io::empty())?;
            return Ok(());
        }

        if name == MANIFEST_ENTRY.as_bytes() {
            return Err(ArchiveError::DuplicateEntry { entry: shown });
        }
        let (index, depth) = self.volume_of(&name, &shown)?;
        let vpos = self.volume_pos[&index];
        if depth == 2 && kind != EntryKind::Dir {
            return Err(ArchiveError::UnsafePath {
                entry: shown,
                why: format!("the root of volume {index} must be a directory, found a {}", kind.as_str()),
            });
        }

        // Parents: none may be a file or symlink entry.
        for (i, _) in name.iter().enumerate().filter(|&(_, &b)| b == b'/') {
            let parent = &name[..i];
            match self.seen.entry(name_key(parent)) {
                MapEntry::Vacant(v) => {
                    v.insert(Seen::Implicit);
                }
                MapEntry::Occupied(o) => match o.get() {
                    Seen::Dir | Seen::Implicit => {}
                    other => {
                        return Err(ArchiveError::UnsafePath {
                            entry: shown,
                            why: format!(
                                "its parent {:?} is a {} entry, not a directory",
                                lossy(parent),
                                seen_name(*other)
                            ),
                        });
                    }
                },
            }
        }

        let mut link_target = None;
        let mut link_bytes = None;
        match kind {
            EntryKind::Symlink => {
                let target = link_raw.unwrap_or_default();
                if target.is_empty() {
                    return Err(ArchiveError::UnsafePath { entry: shown, why: "symlink with an empty target".into() });
                }
                if target.len() > MAX_SYMLINK_TARGET {
                    return Err(ArchiveError::UnsafePath {
                        entry: shown,
                        why: format!(
                            "symlink target of {} bytes; Linux holds at most {MAX_SYMLINK_TARGET} (PATH_MAX)",
                            target.len()
                        ),
                    });
                }
                link_target = Some(lossy(&target));
                link_bytes = Some(target);
            }
            EntryKind::Hardlink => {
                let target_raw = link_raw.unwrap_or_default();
                let bad =
                    |why: String| ArchiveError::BadHardlink { entry: shown.clone(), target: lossy(&target_raw), why };
                let target = normalize_entry_name(&target_raw).map_err(|w| bad(format!("unsafe target: {w}")))?;
                let own_volume = &name[..volume_prefix_len(&name)];
                if !(target.starts_with(own_volume) && matches!(target.get(own_volume.len()), None | Some(&b'/'))) {
                    return Err(bad("the target is outside the link's volume".into()));
                }
                match self.seen.get(&name_key(&target)) {
                    Some(Seen::File) => {}
                    Some(other) => {
                        return Err(bad(format!("the target is a {}, not a regular file", seen_name(*other))));
                    }
                    None => return Err(bad("the target is not an earlier entry of the archive".into())),
                }
                link_target = Some(lossy(&target));
                link_bytes = Some(target);
            }
            EntryKind::File | EntryKind::Dir => {}
        }

        // The name itself.
        let seen_kind = match kind {
            EntryKind::File => Seen::File,
            EntryKind::Dir => Seen::Dir,
            EntryKind::Symlink => Seen::Symlink,
            EntryKind::Hardlink => Seen::Hardlink,
        };
        match self.seen.entry(name_key(&name)) {
            MapEntry::Vacant(v) => {
                v.insert(seen_kind);
            }
            MapEntry::Occupied(mut o) => {
                if *o.get() == Seen::Implicit && kind == EntryKind::Dir {
                    o.insert(Seen::Dir);
                } else if *o.get() == Seen::Implicit {
                    return Err(ArchiveError::UnsafePath {
                        entry: shown,
                        why: format!("earlier entries use it as a directory, but it is a {}", kind.as_str()),
                    });
                } else {
                    return Err(ArchiveError::DuplicateEntry { entry: shown });
                }
            }
        }

        if kind == EntryKind::File
            && let Some(limit) = self.limits.max_expanded_bytes
            && self.bytes.saturating_add(size) > limit
        {
            return Err(ArchiveError::TooLarge { limit });
        }
        let info = EntryInfo {
            path: lossy(&name),
            path_bytes: name,
            kind,
            size,
            mode,
            uid,
            gid,
            mtime,
            link_target,
            link_bytes,
            xattrs: ext.xattrs,
        };
        let mut content = Content { entry: &mut entry, left: size, failed: None };
        let sunk = sink.entry(&info, &mut content);
        if let Some(e) = content.failed.take() {
            return Err(self.content_error(e, &shown));
        }
        sunk?;
        // Whatever the sink did not read is drained, so truncation and
        // corruption inside the data are found all the same.
        while content.left > 0 {
            let want = content.left.min(self.buf.len() as u64) as usize;
            if let Err(e) = content.read(&mut self.buf[..want]) {
                return Err(self.content_error(e, &shown));
            }
        }
        if kind == EntryKind::File {
            self.bytes += size;
        }
        let v = &mut self.volumes[vpos];
        match kind {
            EntryKind::File | EntryKind::Hardlink => {
                self.files += 1;
                v.files += 1;
                v.bytes += size;
            }
            EntryKind::Dir => v.directories += 1,
            EntryKind::Symlink => v.symlinks += 1,
        }
        Ok(())
    }

    fn content_error(&self, e: io::Error, shown: &str) -> ArchiveError {
        if e.kind() == io::ErrorKind::UnexpectedEof && !self.ctx.file_failed.load(Ordering::Acquire) {
            ArchiveError::Truncated(format!("the archive ends inside the data of {shown:?}"))
        } else {
            self.ctx.stream(e)
        }
    }

    /// The volume index of `volumes/<index>/...` and the component count.
    fn volume_of(&self, name: &[u8], shown: &str) -> Result<(u32, usize), ArchiveError> {
        let mut comps = name.split(|&b| b == b'/');
        let depth = name.split(|&b| b == b'/').count();
        let unsafe_path = |why: &str| ArchiveError::UnsafePath { entry: shown.to_string(), why: why.into() };
        if comps.next() != Some(VOLUMES_DIR.as_bytes()) {
            return Err(unsafe_path("outside volumes/<index>/"));
        }
        let Some(idx) = comps.next() else {
            return Err(unsafe_path("outside volumes/<index>/"));
        };
        let canonical = !idx.is_empty() && idx.iter().all(u8::is_ascii_digit) && (idx == b"0" || idx[0] != b'0');
        let index = std::str::from_utf8(idx).ok().filter(|_| canonical).and_then(|s| s.parse::<u32>().ok());
        let Some(index) = index else {
            return Err(unsafe_path("the directory under volumes/ is not a volume index"));
        };
        if !self.volume_pos.contains_key(&index) {
            return Err(ArchiveError::UnknownVolume { entry: shown.to_string(), index });
        }
        Ok((index, depth))
    }
}

/// The content of one entry, exactly `left` bytes: an early end of the
/// stream is an `UnexpectedEof` error, never a short file. The first error is
/// kept for the walker, which reports it rather than the sink's.
struct Content<'e, 'a, R: Read> {
    entry: &'e mut tar::Entry<'a, R>,
    left: u64,
    failed: Option<io::Error>,
}

impl<R: Read> Read for Content<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        if self.failed.is_some() {
            return Err(io::Error::other("the archive could not be read further"));
        }
        let want = self.left.min(buf.len() as u64) as usize;
        loop {
            match self.entry.read(&mut buf[..want]) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside a file's data");
                    self.failed = Some(io::Error::new(e.kind(), e.to_string()));
                    return Err(e);
                }
                Ok(n) => {
                    self.left -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.failed = Some(io::Error::new(e.kind(), e.to_string()));
                    return Err(e);
                }
            }
        }
    }
}

/// Length of the `volumes/<index>` prefix of a validated name.
fn volume_prefix_len(name: &[u8]) -> usize {
    let mut slashes = name.iter().enumerate().filter(|&(_, &b)| b == b'/').map(|(i, _)| i);
    slashes.next();
    slashes.next().unwrap_or(name.len())
}

fn seen_name(s: Seen) -> &'static str {
    match s {
        Seen::File => "file",
        Seen::Dir | Seen::Implicit => "directory",
        Seen::Symlink => "symlink",
        Seen::Hardlink => "hardlink",
        Seen::Manifest => "manifest",
    }
}

fn type_name(t: EntryType) -> String {
    match t {
        EntryType::Char => "character device".into(),
        EntryType::Block => "block device".into(),
        EntryType::Fifo => "FIFO".into(),
        EntryType::Continuous => "contiguous file".into(),
        EntryType::GNUSparse => "GNU sparse file".into(),
        EntryType::XGlobalHeader => "pax global header".into(),
        EntryType::XHeader => "pax extended header without an entry".into(),
        EntryType::GNULongName | EntryType::GNULongLink => "GNU long name without an entry".into(),
        other => format!("entry of type {:?}", other.as_byte() as char),
    }
}

/// The raw pax header of the entry the walker is at.
fn ctx_pax(ctx: &Ctx<'_>) -> Option<Vec<u8>> {
    ctx.current_pax.borrow_mut().take()
}

/// What the pax records of an entry say, after consistency checks.
struct PaxInfo {
    mtime: Option<i64>,
    sparse: bool,
    xattrs: Vec<Xattr>,
}

impl PaxInfo {
    /// Reads the entry's pax header (`data`, raw) record by record.
    ///
    /// # Security
    ///
    /// The records are read by their lengths ([`pax::records`]), as GNU tar
    /// reads them, and the `tar` crate's own (newline-split) reading of the
    /// keys it acts on (`path`, `linkpath`, `size`, `uid`, `gid`) must agree,
    /// so no reader sees another entry than the walker checked. Keywords may
    /// not repeat; numeric values must parse; extended attributes are
    /// bounded in number ([`xattr::MAX_PER_ENTRY`]) and size
    /// ([`xattr::MAX_VALUE`] each), their names checked by
    /// [`xattr::check_name`] after decoding, and not repeated once decoded.
    fn read<R: Read>(entry: &tar::Entry<'_, R>, data: Option<&[u8]>, name: &[u8]) -> Result<PaxInfo, String> {
        let mut info = PaxInfo { mtime: None, sparse: false, xattrs: Vec::new() };
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let header_size = entry.header().entry_size().unwrap_or(0);
        let shown = lossy(name);
        let Some(data) = data else {
            return Ok(info);
        };
        let records = pax::records(data).map_err(|e| format!("entry {shown:?}: {e}"))?;
        if pax::crate_view(data) != pax::exact_view(&records) {
            return Err(format!(
                "entry {shown:?}: its pax extended header reads differently depending on the reader (a record value holds a newline followed by what looks like another record)"
            ));
        }
        let mut keys: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        let mut xattr_names: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
        for rec in &records {
            let (key, value) = (rec.key, rec.value);
            if !keys.insert(key) {
                return Err(format!("entry {shown:?}: pax record {:?} appears twice", lossy(key)));
            }
            let bad = || format!("entry {shown:?}: invalid pax {} value {:?}", lossy(key), lossy(value));
            match key {
                b"path" if value != name => {
                    return Err(format!("entry {shown:?}: pax path and GNU long name disagree"));
                }
                b"linkpath" if Some(value) != link.as_deref() => {
                    return Err(format!("entry {shown:?}: pax linkpath and GNU long link disagree"));
                }
                b"size" => {
                    let size = std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad)?;
                    // RUSTSEC-2026-0068: readers that take the header's size
                    // over the pax one see different entries. volsnap writes
                    // a zero header size whenever it writes a pax size.
                    if header_size != 0 && header_size != size {
                        return Err(format!(
                            "entry {shown:?}: pax size {size} disagrees with the header size {header_size}"
                        ));
                    }
                }
                b"uid" | b"gid" => {
                    std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad)?;
                }
                b"mtime" => info.mtime = Some(parse_pax_time(value).ok_or_else(bad)?),
                _ if key.starts_with(b"GNU.sparse.") => info.sparse = true,
                _ => {
                    let Some(xname) = pax::xattr_name(key) else { continue };
                    xattr::check_name(&xname).map_err(|why| format!("entry {shown:?}: {why}"))?;
                    if value.len() > xattr::MAX_VALUE {
                        return Err(format!(
                            "entry {shown:?}: extended attribute {} has a value of {} bytes (the limit is {})",
                            lossy(&xname),
                            value.len(),
                            xattr::MAX_VALUE
                        ));
                    }
                    if info.xattrs.len() == xattr::MAX_PER_ENTRY {
                        return Err(format!("entry {shown:?}: more than {} extended attributes", xattr::MAX_PER_ENTRY));
                    }
                    if !xattr_names.insert(xname.clone()) {
                        return Err(format!("entry {shown:?}: extended attribute {} appears twice", lossy(&xname)));
                    }
                    info.xattrs.push(Xattr { name: xname, value: value.to_vec() });
                }
            }
        }
        Ok(info)
    }
}

/// `[-]seconds[.fraction]` to whole seconds (rounded towards minus infinity).
fn parse_pax_time(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let secs: i64 = int.parse().ok()?;
    match frac {
        None => Some(secs),
        Some(f) => {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let nonzero = f.bytes().any(|b| b != b'0');
            if int.starts_with('-') && nonzero { secs.checked_sub(1) } else { Some(secs) }
        }
    }
}

fn parse_manifest(data: &[u8]) -> Result<ArchiveManifest, ArchiveError> {
    let invalid = ArchiveError::ManifestInvalid;
    let manifest: ArchiveManifest = serde_json::from_slice(data).map_err(|e| invalid(e.to_string()))?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(invalid(format!(
            "format version {} is not supported (this volsnap reads version {FORMAT_VERSION})",
            manifest.format_version
        )));
    }
    validate::dns_label(&manifest.snapshot.namespace).map_err(|e| invalid(format!("snapshot.namespace {e}")))?;
    validate::dns_subdomain(&manifest.snapshot.name).map_err(|e| invalid(format!("snapshot.name {e}")))?;
    if manifest.volumes.is_empty() {
        return Err(invalid("it lists no volumes".into()));
    }
    let mut indexes = std::collections::HashSet::new();
    let mut names = std::collections::HashSet::new();
    for v in &manifest.volumes {
        validate::dns_label(&v.name).map_err(|e| invalid(format!("volume name {:?}: {e}", v.name)))?;
        if !indexes.insert(v.index) {
            return Err(invalid(format!("volume index {} appears twice", v.index)));
        }
        if !names.insert(v.name.as_str()) {
            return Err(invalid(format!("volume name {:?} appears twice", v.name)));
        }
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use super::*;
    use crate::engine::archive::{ArchiveWriter, EntryMeta};

    struct E {
        name: Vec<u8>,
        kind: u8,
        data: Vec<u8>,
        link: Vec<u8>,
    }

    fn e(name: &str, kind: u8, data: &[u8]) -> E {
        E { name: name.as_bytes().to_vec(), kind, data: data.to_vec(), link: Vec::new() }
    }

    fn link(name: &str, kind: u8, target: &str) -> E {
        E { name: name.as_bytes().to_vec(), kind, data: Vec::new(), link: target.as_bytes().to_vec() }
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
        e("volsnap.json", b'0', &manifest_json(1, &[(0, "data"), (1, "conf")]))
    }

    fn good() -> Vec<E> {
        vec![
            manifest(),
            e("volumes/0/", b'5', b""),
            e("volumes/0/file", b'0', b"hello"),
            link("volumes/0/link", b'2', "../../../etc/passwd"),
            link("volumes/0/hard", b'1', "volumes/0/file"),
            e("volumes/1/", b'5', b""),
            e("volumes/1/conf", b'0', b"k=v"),
        ]
    }

    fn raw_header(name: &[u8], kind: u8, size: u64, link: &[u8]) -> Header {
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(size);
        h.set_entry_type(EntryType::new(kind));
        if !link.is_empty() {
            h.set_link_name_literal(link).unwrap();
        }
        h.set_cksum();
        h
    }

    fn tar_of(entries: &[E], end: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for en in entries {
            out.extend_from_slice(raw_header(&en.name, en.kind, en.data.len() as u64, &en.link).as_bytes());
            out.extend_from_slice(&en.data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        if end {
            out.extend_from_slice(&[0u8; 1024]);
        }
        out
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    struct Files(tempfile::TempDir, usize);

    impl Files {
        fn new() -> Self {
            Files(tempfile::tempdir().unwrap(), 0)
        }
        fn put(&mut self, bytes: &[u8]) -> PathBuf {
            self.1 += 1;
            let p = self.0.path().join(format!("a{}.tar.gz", self.1));
            std::fs::write(&p, bytes).unwrap();
            p
        }
        fn entries(&mut self, entries: &[E]) -> PathBuf {
            self.put(&gz(&tar_of(entries, true)))
        }
    }

    fn check(entries: Vec<E>) -> Result<VerifyReport, ArchiveError> {
        let mut f = Files::new();
        let p = f.entries(&entries);
        verify(&p, &VerifyLimits::default())
    }

    #[test]
    fn good_archive_verifies_and_lists() {
        let r = check(good()).unwrap();
        assert_eq!((r.entries, r.files, r.bytes), (7, 3, 8));
        assert_eq!(
            (r.volumes[0].index, r.volumes[0].name.as_str(), r.volumes[0].files, r.volumes[0].bytes),
            (0, "data", 2, 5)
        );
        assert_eq!(
            (r.volumes[1].index, r.volumes[1].name.as_str(), r.volumes[1].files, r.volumes[1].bytes),
            (1, "conf", 1, 3)
        );
        let mut f = Files::new();
        let p = f.entries(&good());
        let mut seen = Vec::new();
        list(&p, &mut |e| seen.push((e.path.clone(), e.kind, e.link_target.clone()))).unwrap();
        assert_eq!(seen[0], ("volsnap.json".into(), EntryKind::File, None));
        assert_eq!(seen[1], ("volumes/0".into(), EntryKind::Dir, None));
        assert_eq!(seen[3], ("volumes/0/link".into(), EntryKind::Symlink, Some("../../../etc/passwd".into())));
        assert_eq!(seen[4], ("volumes/0/hard".into(), EntryKind::Hardlink, Some("volumes/0/file".into())));
        // sha256 and size are those of the file.
        let bytes = std::fs::read(&p).unwrap();
        let r = verify(&p, &VerifyLimits::default()).unwrap();
        assert_eq!(r.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(r.size_bytes, bytes.len() as u64);
    }

    fn with(extra: Vec<E>) -> Vec<E> {
        let mut v = good();
        v.extend(extra);
        v
    }

    #[test]
    fn rejects_dotdot() {
        let err = check(with(vec![e("volumes/0/../../etc/cron.d/x", b'0', b"x")])).unwrap_err();
        assert!(matches!(&err, ArchiveError::UnsafePath { why, .. } if why.contains("..")), "{err}");
        assert!(err.to_string().contains("volumes/0/../../etc/cron.d/x"), "{err}");
        let err = check(with(vec![e("volumes/0/./x", b'0', b"x")])).unwrap_err();
        assert!(matches!(err, ArchiveError::UnsafePath { .. }), "{err}");
    }

    #[test]
    fn rejects_absolute() {
        let err = check(with(vec![e("/etc/passwd", b'0', b"x")])).unwrap_err();
        assert!(matches!(&err, ArchiveError::UnsafePath { why, .. } if why.contains("absolute")), "{err}");
    }

    #[test]
    fn rejects_outside_volumes() {
        for name in ["other/file", "volumes", "volumes/x/file", "volumes/00/file", "file"] {
            let err = check(with(vec![e(name, b'0', b"x")])).unwrap_err();
            assert!(matches!(err, ArchiveError::UnsafePath { .. }), "{name}: {err}");
        }
    }

    #[test]
    fn rejects_unknown_volume() {
        let err = check(with(vec![e("volumes/7/file", b'0', b"x")])).unwrap_err();
        assert!(matches!(err, ArchiveError::UnknownVolume { index: 7, .. }), "{err}");
    }

    #[test]
    fn rejects_devices_fifos_and_global_headers() {
        for (kind, what) in [(b'3', "character device"), (b'4', "block device"), (b'6', "FIFO"), (b'g', "global")] {
            let err = check(with(vec![e("volumes/0/dev", kind, b"")])).unwrap_err();
            assert!(
                matches!(&err, ArchiveError::UnsupportedEntryType { kind, .. } if kind.contains(what)),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn rejects_bad_hardlinks() {
        let cases = [
            (vec![link("volumes/0/h", b'1', "volumes/0/later"), e("volumes/0/later", b'0', b"x")], "earlier"),
            (vec![link("volumes/0/h", b'1', "volumes/0/nope")], "earlier"),
            (vec![link("volumes/0/h", b'1', "volumes/1/conf")], "outside"),
            (vec![link("volumes/0/h", b'1', "volumes/0/link")], "symlink"),
            (vec![link("volumes/0/h", b'1', "volumes/0")], "directory"),
            (vec![link("volumes/0/h", b'1', "/etc/shadow")], "unsafe"),
            (vec![link("volumes/0/h", b'1', "volumes/0/../../etc/shadow")], "unsafe"),
            (vec![link("volumes/0/h", b'1', "volsnap.json")], "outside"),
        ];
        for (extra, why_part) in cases {
            let err = check(with(extra)).unwrap_err();
            assert!(
                matches!(&err, ArchiveError::BadHardlink { why, .. } if why.contains(why_part)),
                "{why_part}: {err}"
            );
        }
    }

    #[test]
    fn rejects_duplicates_and_conflicts() {
        let err = check(with(vec![e("volumes/0/file", b'0', b"again")])).unwrap_err();
        assert!(matches!(err, ArchiveError::DuplicateEntry { .. }), "{err}");
        let err = check(with(vec![e("volumes/0//file", b'0', b"again")])).unwrap_err();
        assert!(matches!(err, ArchiveError::DuplicateEntry { .. }), "{err}");
        let err = check(with(vec![e("volsnap.json", b'0', b"{}")])).unwrap_err();
        assert!(matches!(err, ArchiveError::DuplicateEntry { .. }), "{err}");
        // Writing through a symlink, or below a file.
        let err = check(with(vec![e("volumes/0/link/passwd", b'0', b"x")])).unwrap_err();
        assert!(matches!(&err, ArchiveError::UnsafePath { why, .. } if why.contains("symlink")), "{err}");
        let err = check(with(vec![e("volumes/0/file/x", b'0', b"x")])).unwrap_err();
        assert!(matches!(err, ArchiveError::UnsafePath { .. }), "{err}");
        // A symlink where earlier entries made a directory.
        let err = check(with(vec![e("volumes/0/d/x", b'0', b"x"), link("volumes/0/d", b'2', "/etc")])).unwrap_err();
        assert!(matches!(err, ArchiveError::UnsafePath { .. }), "{err}");
        // A directory entry after its contents is fine.
        check(with(vec![e("volumes/0/d/x", b'0', b"x"), e("volumes/0/d/", b'5', b"")])).unwrap();
        // The volume root must be a directory.
        let mut v = good();
        v[5] = e("volumes/1", b'0', b"x");
        v.truncate(6);
        let err = check(v).unwrap_err();
        assert!(matches!(err, ArchiveError::UnsafePath { .. }), "{err}");
    }

    #[test]
    fn rejects_missing_or_misplaced_manifest() {
        let mut v = good();
        v.remove(0);
        let err = check(v).unwrap_err();
        assert!(matches!(err, ArchiveError::ManifestMissing(_)), "{err}");
        assert!(err.to_string().contains("volsnap.json"), "{err}");

        let mut v = good();
        v.swap(0, 1);
        let err = check(v).unwrap_err();
        assert!(matches!(err, ArchiveError::ManifestMissing(_)), "{err}");

        let err = check(Vec::new()).unwrap_err();
        assert!(matches!(err, ArchiveError::ManifestMissing(_)), "{err}");
    }

    #[test]
    fn rejects_malformed_manifest() {
        let bad = [
            b"{not json".to_vec(),
            manifest_json(2, &[(0, "data")]),
            manifest_json(1, &[]),
            manifest_json(1, &[(0, "data"), (0, "other")]),
            manifest_json(1, &[(0, "data"), (1, "data")]),
            manifest_json(1, &[(0, "Not_A_Label")]),
        ];
        for json in bad {
            let mut v = good();
            v[0] = E { name: b"volsnap.json".to_vec(), kind: b'0', data: json.clone(), link: Vec::new() };
            let err = check(v).unwrap_err();
            assert!(matches!(err, ArchiveError::ManifestInvalid(_)), "{}: {err}", String::from_utf8_lossy(&json));
        }
        let mut v = good();
        v[0].data = vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize];
        let err = check(v).unwrap_err();
        assert!(matches!(err, ArchiveError::ManifestInvalid(_)), "{err}");
    }

    /// A real archive, as written by [`ArchiveWriter`], with some volume.
    fn written(compression: Compression) -> Vec<u8> {
        let mut w = ArchiveWriter::new(Vec::new(), compression).unwrap();
        let json = manifest_json(1, &[(0, "data")]);
        let m = EntryMeta { mode: 0o644, uid: 0, gid: 0, mtime: 1, xattrs: &[] };
        w.append_file(b"volsnap.json", &m, json.len() as u64, &mut &json[..]).unwrap();
        w.append_dir(b"volumes/0", &m).unwrap();
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        w.append_file(b"volumes/0/data", &m, data.len() as u64, &mut &data[..]).unwrap();
        w.finish().unwrap().0
    }

    #[test]
    fn rejects_truncated_archives() {
        for c in [Compression::Gzip, Compression::Zstd] {
            let bytes = written(c);
            let mut f = Files::new();
            verify(&f.put(&bytes), &VerifyLimits::default()).unwrap();
            let err = verify(&f.put(&bytes[..bytes.len() / 2]), &VerifyLimits::default()).unwrap_err();
            assert!(matches!(err, ArchiveError::Truncated(_)), "{c:?}: {err}");
            let err = verify(&f.put(&bytes[..bytes.len() - 3]), &VerifyLimits::default()).unwrap_err();
            assert!(matches!(err, ArchiveError::Truncated(_) | ArchiveError::Corrupt(_)), "{c:?}: {err}");
        }
        // A complete gzip stream around a tar stream without end marker.
        let mut f = Files::new();
        let p = f.put(&gz(&tar_of(&good(), false)));
        let err = verify(&p, &VerifyLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Truncated(_)), "{err}");
        // A tar stream cut inside a file's data.
        let t = tar_of(&good(), true);
        let p = f.put(&gz(&t[..512 * 5 + 100]));
        let err = verify(&p, &VerifyLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Truncated(_)), "{err}");
    }

    #[test]
    fn rejects_corruption() {
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut bytes = written(c);
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x55;
            let mut f = Files::new();
            let err = verify(&f.put(&bytes), &VerifyLimits::default()).unwrap_err();
            assert!(matches!(err, ArchiveError::Corrupt(_) | ArchiveError::Truncated(_)), "{c:?}: {err}");
        }
        // gzip CRC: flip a byte of the stored CRC itself.
        let mut bytes = written(Compression::Gzip);
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        let mut f = Files::new();
        let err = verify(&f.put(&bytes), &VerifyLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt(_)), "{err}");
        // zstd content checksum: the last 4 bytes of the frame.
        let mut bytes = written(Compression::Zstd);
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        let err = verify(&f.put(&bytes), &VerifyLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt(_)), "{err}");
    }

    #[test]
    fn trailing_data() {
        let mut f = Files::new();
        // Zero padding after the tar end, and after the gzip stream, is fine.
        let mut t = tar_of(&good(), true);
        t.extend_from_slice(&[0u8; 9216]);
        let mut bytes = gz(&t);
        bytes.extend_from_slice(&[0u8; 100]);
        verify(&f.put(&bytes), &VerifyLimits::default()).unwrap();
        // Anything else is not.
        let mut t = tar_of(&good(), true);
        t.extend_from_slice(b"garbage");
        let err = verify(&f.put(&gz(&t)), &VerifyLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt(_)), "{err}");
        let mut bytes = gz(&tar_of(&good(), true));
        bytes.extend_from_slice(&gz(&tar_of(&[e("volumes/0/sneaky", b'0', b"x")], true)));
        let err = verify(&f.put(&bytes), &VerifyLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt(_)), "{err}");
    }

    #[test]
    fn not_an_archive() {
        let mut f = Files::new();
        let err = verify(&f.put(b"hello, world"), &VerifyLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::NotAnArchive(_)), "{err}");
        assert_eq!(err.to_string(), "not a volsnap archive: not gzip or zstd");
        let err = verify(&f.put(b""), &VerifyLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::NotAnArchive(_)), "{err}");
        let err = verify(Path::new("/nonexistent/x.tar.gz"), &VerifyLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Io { .. }), "{err}");
    }

    #[test]
    fn limits() {
        let mut f = Files::new();
        let p = f.entries(&with(vec![e("volumes/0/big", b'0', &[7u8; 5000])]));
        verify(&p, &VerifyLimits { max_expanded_bytes: Some(5008), ..Default::default() }).unwrap();
        let err = verify(&p, &VerifyLimits { max_expanded_bytes: Some(5007), ..Default::default() }).unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge { limit: 5007 }), "{err}");
        verify(&p, &VerifyLimits { max_entries: Some(8), ..Default::default() }).unwrap();
        let err = verify(&p, &VerifyLimits { max_entries: Some(7), ..Default::default() }).unwrap_err();
        assert!(matches!(err, ArchiveError::TooManyEntries { limit: 7 }), "{err}");

        let sha = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
        verify(&p, &VerifyLimits { expected_sha256: Some(sha.to_uppercase()), ..Default::default() }).unwrap();
        let wrong = "0".repeat(64);
        let err = verify(&p, &VerifyLimits { expected_sha256: Some(wrong.clone()), ..Default::default() }).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::ChecksumMismatch { expected, actual } if *expected == wrong && *actual == sha),
            "{err}"
        );
    }

    fn pax_entry(records: &[u8]) -> E {
        E { name: b"././@PaxHeader".to_vec(), kind: b'x', data: records.to_vec(), link: Vec::new() }
    }

    fn pax(records: &[(&str, &str)]) -> E {
        let mut data = Vec::new();
        for (k, v) in records {
            crate::engine::archive::writer::pax_record(&mut data, k, v.as_bytes());
        }
        pax_entry(&data)
    }

    #[test]
    fn extended_headers() {
        // A pax path is honoured and checked like any name.
        let ok = check(with(vec![pax(&[("path", "volumes/0/pax-name")]), e("short", b'0', b"x")])).unwrap();
        assert_eq!(ok.entries, 8);
        let err =
            check(with(vec![pax(&[("path", "volumes/0/../../../x")]), e("volumes/0/ok", b'0', b"x")])).unwrap_err();
        assert!(matches!(err, ArchiveError::UnsafePath { .. }), "{err}");
        // Two path records: readers disagree on which wins.
        let err =
            check(with(vec![pax(&[("path", "volumes/0/a"), ("path", "volumes/0/b")]), e("volumes/0/ok", b'0', b"x")]))
                .unwrap_err();
        assert!(matches!(&err, ArchiveError::Corrupt(m) if m.contains("twice")), "{err}");
        // Malformed record.
        let err = check(with(vec![pax_entry(b"99 path=volumes/0/a\n"), e("volumes/0/ok", b'0', b"x")])).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt(_)), "{err}");
        // pax sparse files.
        let err = check(with(vec![pax(&[("GNU.sparse.major", "1")]), e("volumes/0/ok", b'0', b"x")])).unwrap_err();
        assert!(matches!(err, ArchiveError::UnsupportedEntryType { .. }), "{err}");
        // An oversized extended header is refused before it is buffered.
        let big = vec![b'a'; (MAX_EXTENSION_BYTES + 1) as usize];
        let err = check(with(vec![pax_entry(&big), e("volumes/0/ok", b'0', b"x")])).unwrap_err();
        assert!(matches!(&err, ArchiveError::Corrupt(m) if m.contains("limit")), "{err}");
        let err = check(with(vec![
            E { name: b"././@LongLink".to_vec(), kind: b'L', data: big, link: Vec::new() },
            e("volumes/0/ok", b'0', b"x"),
        ]))
        .unwrap_err();
        assert!(matches!(&err, ArchiveError::Corrupt(m) if m.contains("limit")), "{err}");
        // pax size is followed by the guard: a file after a pax-sized file is still checked.
        let err = check(with(vec![
            pax(&[("size", "600")]),
            e("volumes/0/sized", b'0', &[1u8; 600]),
            pax_entry(&[b'b'; (MAX_EXTENSION_BYTES + 1) as usize]),
            e("volumes/0/ok", b'0', b"x"),
        ]))
        .unwrap_err();
        assert!(matches!(&err, ArchiveError::Corrupt(m) if m.contains("limit")), "{err}");
    }

    #[test]
    fn names_longer_than_name_max_are_refused() {
        let n = |len: usize| format!("volumes/0/{}", "a".repeat(len));
        check(with(vec![pax(&[("path", &n(255))]), e("x", b'0', b"x")])).unwrap();
        let err = check(with(vec![pax(&[("path", &n(256))]), e("x", b'0', b"x")])).unwrap_err();
        assert!(matches!(&err, ArchiveError::UnsafePath { why, .. } if why.contains("NAME_MAX")), "{err}");
        // Hard link targets go through the same check.
        let long_target = format!("volumes/0/{}", "b".repeat(256));
        let err = check(with(vec![pax(&[("linkpath", &long_target)]), link("volumes/0/h", b'1', "x")])).unwrap_err();
        assert!(matches!(&err, ArchiveError::BadHardlink { why, .. } if why.contains("NAME_MAX")), "{err}");
        let target = "t".repeat(MAX_SYMLINK_TARGET + 1);
        let err = check(with(vec![pax(&[("linkpath", &target)]), link("volumes/0/s", b'2', "t")])).unwrap_err();
        assert!(matches!(&err, ArchiveError::UnsafePath { why, .. } if why.contains("PATH_MAX")), "{err}");
    }

    #[test]
    fn zstd_window_is_read_from_the_frame_header() {
        // Window descriptor: exponent 21 - 10 = 11, mantissa 0 -> 2 MiB.
        assert_eq!(zstd_window_size(&[0x28, 0xb5, 0x2f, 0xfd, 0x04, 11 << 3]), Some(2 << 20));
        // Mantissa 4: 1.5 times the base.
        assert_eq!(zstd_window_size(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, (21 << 3) | 4]), Some(3 << 30));
        // Single segment, 2-byte content size: value + 256.
        assert_eq!(zstd_window_size(&[0x28, 0xb5, 0x2f, 0xfd, 0x60, 0x10, 0x00]), Some(0x10 + 256));
        assert_eq!(zstd_window_size(&[0x28, 0xb5, 0x2f, 0xfd]), None);
        // volsnap's own archives fit the cap at every level it writes.
        let mut f = Files::new();
        for level in [1, 3, 19] {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level).unwrap();
            enc.include_checksum(true).unwrap();
            std::io::Write::write_all(&mut enc, &zstd::decode_all(&written(Compression::Zstd)[..]).unwrap()).unwrap();
            verify(&f.put(&enc.finish().unwrap()), &VerifyLimits::default()).unwrap();
        }
        // A frame asking for 64 MiB is refused with the window named.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.window_log(26).unwrap();
        enc.long_distance_matching(true).unwrap();
        std::io::Write::write_all(&mut enc, &zstd::decode_all(&written(Compression::Zstd)[..]).unwrap()).unwrap();
        let err = verify(&f.put(&enc.finish().unwrap()), &VerifyLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::WindowTooLarge { needed_mib: 64, cap_mib: 32 }), "{err}");
    }

    fn pax_bytes(records: &[(&str, &[u8])]) -> E {
        let mut data = Vec::new();
        for (k, v) in records {
            crate::engine::archive::writer::pax_record(&mut data, k, v);
        }
        pax_entry(&data)
    }

    /// Extended attribute records are untrusted input like names: checked
    /// names, bounded values and counts, no repeats once decoded, and no
    /// header that the tar crate would read differently.
    #[test]
    fn hostile_xattr_records_are_refused() {
        check(with(vec![
            pax_bytes(&[("SCHILY.xattr.user.a", b"\n\0binary\n"), ("SCHILY.xattr.security.capability", b"x")]),
            e("volumes/0/x", b'0', b"x"),
        ]))
        .unwrap();
        let big = vec![1u8; crate::engine::xattr::MAX_VALUE + 1];
        let many: Vec<(String, Vec<u8>)> =
            (0..=crate::engine::xattr::MAX_PER_ENTRY).map(|i| (format!("SCHILY.xattr.user.{i}"), Vec::new())).collect();
        let many: Vec<(&str, &[u8])> = many.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        let cases: Vec<(E, &str)> = vec![
            (pax_bytes(&[("SCHILY.xattr.system.nfs4_acl", b"x")]), "outside the namespaces"),
            (pax_bytes(&[("SCHILY.xattr.user.", b"x")]), "only a namespace"),
            (pax_bytes(&[("SCHILY.xattr.", b"x")]), "outside the namespaces"),
            (pax_bytes(&[("SCHILY.xattr.user.a\0b", b"x")]), "NUL"),
            (pax_bytes(&[("SCHILY.xattr.user.big", &big)]), "65537 bytes"),
            (pax_bytes(&many), "more than 1024 extended attributes"),
            (pax_bytes(&[("SCHILY.xattr.user.a%", b"1"), ("SCHILY.xattr.user.a%25", b"2")]), "appears twice"),
            // A value whose second line is a `path` record for the tar crate.
            (pax_bytes(&[("SCHILY.xattr.user.a", b"x\n23 path=volumes/0/evil")]), "reads differently"),
        ];
        for (hdr, want) in cases {
            let err = check(with(vec![hdr, e("volumes/0/x", b'0', b"x")])).expect_err(want);
            assert!(matches!(&err, ArchiveError::Corrupt(m) if m.contains(want)), "{want}: {err}");
        }
    }

    #[test]
    fn data_on_non_files_is_rejected() {
        let err = check(with(vec![e("volumes/0/dir/", b'5', b"data")])).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt(_)), "{err}");
    }

    #[test]
    fn normalize_names() {
        assert_eq!(normalize_entry_name(b"volumes//0/a/").unwrap(), b"volumes/0/a");
        assert!(normalize_entry_name(b"").is_err());
        assert!(normalize_entry_name(b"/").is_err());
        assert!(normalize_entry_name(b"//").is_err());
        assert!(normalize_entry_name(b"a/..").is_err());
        assert!(normalize_entry_name(b"./a").is_err());
        assert_eq!(parse_pax_time(b"-1.5"), Some(-2));
        assert_eq!(parse_pax_time(b"12.000"), Some(12));
        assert_eq!(parse_pax_time(b"1e3"), None);
    }
}
