//! Reading a manifest file someone else controls: never blocking on a FIFO
//! or device swapped in, checked on the descriptor, bounded in size.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// Manifest files larger than this are rejected unread (untrusted input).
pub const MAX_MANIFEST_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a manifest file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A symlink whose target does not exist (a deploy swapping directories).
    #[error("it is a symbolic link to {target}, which does not exist")]
    Dangling {
        /// Where it points.
        target: String,
    },
    /// A FIFO, socket, device or directory.
    #[error("it is {what}, not a regular file")]
    NotRegular {
        /// What it is.
        what: &'static str,
    },
    /// Over [`MAX_MANIFEST_FILE_BYTES`].
    #[error("it is larger than {MAX_MANIFEST_FILE_BYTES} bytes")]
    TooLarge,
    /// Not UTF-8.
    #[error("it is not UTF-8 text (manifests must be UTF-8)")]
    NotUtf8,
    /// Any other failure to open or read it.
    #[error("it cannot be read: {0}")]
    Io(#[source] std::io::Error),
    /// Gone between the listing and the read.
    #[error("it disappeared while being read")]
    Vanished,
}

/// `stat` (following symlinks: the operator may link manifests in), and
/// what is wrong if it is not a regular file. Nothing is opened yet, so a
/// FIFO or device is never opened in the common case.
pub fn stat_regular(path: &Path) -> Result<Metadata, ReadError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(m),
        Ok(m) => Err(ReadError::NotRegular { what: what_it_is(&m) }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::symlink_metadata(path) {
            Ok(l) if l.file_type().is_symlink() => {
                let target = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
                Err(ReadError::Dangling { target })
            }
            Ok(_) => Err(ReadError::Io(e)),
            Err(_) => Err(ReadError::Vanished),
        },
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// Reads a manifest: opened with `O_NONBLOCK` (a FIFO swapped in after the
/// `stat` must not block the open or the read), checked on the descriptor,
/// read up to the cap.
pub fn read_regular(path: &Path) -> Result<(Vec<u8>, Metadata), ReadError> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::NOENT => ReadError::Vanished,
        e => ReadError::Io(e.into()),
    })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular { what: what_it_is(&meta) });
    }
    if meta.len() > MAX_MANIFEST_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_MANIFEST_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_MANIFEST_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok((bytes, meta))
}

fn what_it_is(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}
