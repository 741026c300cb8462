//! Compression of the archive stream on every core.
//!
//! The calling thread frames the tar stream and hands it over in large
//! pieces; compression runs on worker threads (our own for gzip, see
//! [`gzip`]; libzstd's for zstd, fed from a thread of its own, see
//! [`zstd_mt`]), and one more thread hashes and writes the compressed bytes
//! ([`output`]). So the walk and the file reads overlap
//! with compression, hashing and writing instead of taking turns with them.
//!
//! The output is the same single gzip member / zstd frame as before: GNU
//! tar, gzip, pigz and zstd read it.

pub(crate) mod gzip;
pub(crate) mod output;
pub(crate) mod zstd_mt;

use std::io::{self, Write};

use crate::api::Compression;
use crate::engine::archive::HashingWriter;

/// Why compression failed, apart from I/O errors on the destination (those
/// keep their own `io::Error`, so a full disk reads as one).
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// deflate refused its input (it never should).
    #[error("gzip compression failed: {0}")]
    Deflate(#[from] flate2::CompressError),
    /// A compression thread ended without handing back its block.
    #[error("a compression thread ended unexpectedly (it panicked)")]
    WorkerLost,
    /// The output thread panicked.
    #[error("the archive output thread ended unexpectedly (it panicked)")]
    OutputPanicked,
    /// The output thread is gone and left no error.
    #[error("the archive output thread is no longer running")]
    OutputLost,
}

impl From<CompressError> for io::Error {
    fn from(e: CompressError) -> Self {
        io::Error::other(e)
    }
}

/// Threads to compress on: one per core the process may use.
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A compressed, hashed stream being written to `W`.
pub(crate) enum Compressor<W: Write + Send + 'static> {
    Gzip(gzip::GzipEncoder<W>),
    Zstd(zstd_mt::ZstdEncoder<W>),
}

impl<W: Write + Send + 'static> Compressor<W> {
    /// Starts compressing to `inner` at `level` (already validated) on
    /// `workers` threads.
    pub fn new(inner: W, compression: Compression, level: u32, workers: usize) -> io::Result<Self> {
        Ok(match compression {
            Compression::Gzip => Compressor::Gzip(gzip::GzipEncoder::new(inner, level, workers)?),
            Compression::Zstd => Compressor::Zstd(zstd_mt::ZstdEncoder::new(inner, level, workers)?),
        })
    }

    /// Ends the stream, waits until all of it is written and returns the
    /// destination (not flushed).
    pub fn finish(self) -> io::Result<HashingWriter<W>> {
        match self {
            Compressor::Gzip(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write + Send + 'static> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Compressor::Gzip(e) => e.write_all(buf),
            Compressor::Zstd(e) => e.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Deterministic test input for the encoders: runs of `run` bytes of text
/// (compresses well) alternating with runs of xorshift noise (does not).
#[cfg(test)]
pub(crate) fn test_bytes(len: usize, run: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (out.len() / run) % 2 == 0 {
            out.extend_from_slice(format!("line {} status={}\n", x % 1000, x % 7).as_bytes());
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// Test destination that fails every write with ENOSPC, as a full disk does.
#[cfg(test)]
pub(crate) struct FullDisk;

#[cfg(test)]
impl Write for FullDisk {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::ENOSPC))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
