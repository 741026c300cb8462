//! `source.archive`: adopting an archive made elsewhere (another host, an
//! offsite copy) as a Completed snapshot.
//!
//! # Security
//!
//! The file is copied into the archive store first (to `.<name>.partial`,
//! mode 0600, fsynced), and the COPY is verified end to end by the
//! untrusted-archive checks before it is renamed into place: what is
//! recorded is exactly what was checked, whatever happens to the original
//! afterwards. The original is only read, never modified or deleted. The
//! paths inside the archive are information only: a restore from an adopted
//! snapshot needs `targetPath`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::archive::reader::{EntrySink, walk_checked};
use super::archive::{ArchiveError, ArchiveManifest, EntryInfo, VerifyLimits};
use super::capture::{CaptureError, CaptureOutcome, checksum_path, temp_path};
use crate::api::CapturedVolume;
use crate::store::fsutil;

/// Largest number of entries an adopted archive may hold.
const MAX_ADOPTED_ENTRIES: u64 = 50_000_000;

/// Copies `source` to `dest` (through a temporary file), verifies the copy,
/// and writes `<dest>.sha256`. Returns the counts and the manifest.
pub fn adopt(
    source: &Path,
    dest: &Path,
    cancel: &AtomicBool,
) -> Result<(CaptureOutcome, ArchiveManifest), CaptureError> {
    let write_err = |e: io::Error| CaptureError::Write { path: dest.to_path_buf(), source: e };
    let temp = temp_path(dest).ok_or_else(|| write_err(io::Error::other("destination has no file name")))?;
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).map_err(write_err)?;
    }
    let mut input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(source)
        .map_err(|e| CaptureError::Rejected(format!("cannot open the archive {}: {e}", source.display())))?;
    if !input.metadata().is_ok_and(|m| m.is_file()) {
        return Err(CaptureError::Rejected(format!("{} is not a regular file", source.display())));
    }
    // The path was checked against the allowed roots before this thread
    // ran; a directory swapped for a symlink meanwhile would lead elsewhere.
    // What was opened must be what was checked.
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&input)));
    if opened.as_deref().is_ok_and(|p| p != source) {
        return Err(CaptureError::Rejected(format!(
            "{} changed while it was being adopted (it now leads to {}); nothing was adopted",
            source.display(),
            opened.map(|p| p.display().to_string()).unwrap_or_default()
        )));
    }
    let result = (|| {
        let mut out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp).map_err(write_err)?;
        copy_cancellable(&mut input, &mut out, cancel).map_err(|e| match e {
            Copy::Cancelled => CaptureError::Cancelled,
            Copy::Read(e) => CaptureError::Rejected(format!("reading {}: {e}", source.display())),
            Copy::Write(e) => write_err(e),
        })?;
        out.sync_all().map_err(write_err)?;
        drop(out);
        let limits = VerifyLimits { max_entries: Some(MAX_ADOPTED_ENTRIES), ..Default::default() };
        let report =
            walk_checked(&temp, &limits, &mut Cancellable { cancel, buf: vec![0u8; 64 * 1024] }).map_err(|e| {
                if cancel.load(Ordering::Relaxed) {
                    CaptureError::Cancelled
                } else {
                    CaptureError::Rejected(format!("the archive {} failed verification: {e}", source.display()))
                }
            })?;
        fs::rename(&temp, dest).map_err(write_err)?;
        if let Some(dir) = dest.parent() {
            fsutil::fsync_dir(dir).map_err(write_err)?;
        }
        let mut line = format!("{}  ", report.sha256);
        line.push_str(&dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        line.push('\n');
        fsutil::atomic_write(&checksum_path(dest), line.as_bytes()).map_err(write_err)?;
        let volumes = report
            .volumes
            .iter()
            .map(|v| {
                let m = report.manifest.volumes.iter().find(|m| m.index == v.index);
                CapturedVolume {
                    name: v.name.clone(),
                    path: m.map(|m| m.source.clone()).unwrap_or_default(),
                    target: m.and_then(|m| m.target.clone()),
                    files: v.files,
                    bytes: v.bytes,
                    directories: v.directories,
                    symlinks: v.symlinks,
                    ..Default::default()
                }
            })
            .collect();
        Ok((CaptureOutcome { size_bytes: report.size_bytes, sha256: report.sha256, volumes }, report.manifest))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Verification that stops between chunks when the daemon shuts down (an
/// adopted archive may be large: nothing bounds its expansion, since nothing
/// is written).
struct Cancellable<'a> {
    cancel: &'a AtomicBool,
    buf: Vec<u8>,
}

impl EntrySink for Cancellable<'_> {
    fn entry(&mut self, _info: &EntryInfo, data: &mut dyn std::io::Read) -> Result<(), ArchiveError> {
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(ArchiveError::Extract {
                    path: String::new(),
                    source: io::Error::new(io::ErrorKind::Interrupted, "adoption cancelled"),
                });
            }
            match data.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // The walker reports read errors itself.
                Err(_) => return Ok(()),
            }
        }
    }
}

enum Copy {
    Cancelled,
    Read(io::Error),
    Write(io::Error),
}

fn copy_cancellable(input: &mut File, out: &mut File, cancel: &AtomicBool) -> Result<(), Copy> {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Copy::Cancelled);
        }
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(Copy::Write)?;
    }
}
