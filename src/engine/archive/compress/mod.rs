//! Compression of the archive stream on every core.
//!
//! The calling thread frames the tar stream and hands it over in large
//! pieces; compression runs on worker threads (our own for gzip, see
//! [`gzip`]; libzstd's for zstd), and one more thread hashes and writes the
//! compressed bytes ([`output`]). So the walk and the file reads overlap
//! with compression, hashing and writing instead of taking turns with them.
//!
//! The output is the same single gzip member / zstd frame as before: GNU
//! tar, gzip, pigz and zstd read it.

pub(crate) mod gzip;
pub(crate) mod output;

use std::io::{self, BufWriter, Write};
use std::sync::Arc;

use crate::api::Compression;
use crate::engine::archive::HashingWriter;
use output::{BufferPool, OutputThread};

/// Buffer in front of the zstd encoder: the tar framing writes 512-byte
/// headers, which libzstd should see in larger pieces.
const ZSTD_INPUT_BUFFER: usize = 1 << 20;
/// Uncompressed bytes per zstd job. libzstd's default for level 3 is 8 MiB,
/// which with the jobs in flight on every worker costs tens of MiB; 2 MiB
/// keeps the peak RSS flat and both cores busy.
const ZSTD_JOB_SIZE: u32 = 2 << 20;
/// Chunks waiting for the output thread (zstd's output arrives in pieces of
/// about 128 KiB).
const ZSTD_OUTPUT_QUEUE: usize = 16;

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
    Zstd(BufWriter<zstd::stream::write::Encoder<'static, OutputThread<W>>>),
}

impl<W: Write + Send + 'static> Compressor<W> {
    /// Starts compressing to `inner` at `level` (already validated) on
    /// `workers` threads.
    pub fn new(inner: W, compression: Compression, level: u32, workers: usize) -> io::Result<Self> {
        Ok(match compression {
            Compression::Gzip => Compressor::Gzip(gzip::GzipEncoder::new(inner, level, workers)?),
            Compression::Zstd => {
                let out = OutputThread::start(inner, ZSTD_OUTPUT_QUEUE, Arc::new(BufferPool::default()))?;
                let level = i32::try_from(level).map_err(|_| io::Error::other("zstd level out of range"))?;
                let mut enc = zstd::stream::write::Encoder::new(out, level)?;
                enc.include_checksum(true)?;
                if workers > 1 {
                    enc.multithread(u32::try_from(workers).unwrap_or(u32::MAX))?;
                    enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                }
                Compressor::Zstd(BufWriter::with_capacity(ZSTD_INPUT_BUFFER, enc))
            }
        })
    }

    /// Ends the stream, waits until all of it is written and returns the
    /// destination (not flushed).
    pub fn finish(self) -> io::Result<HashingWriter<W>> {
        match self {
            Compressor::Gzip(e) => e.finish(),
            Compressor::Zstd(b) => {
                let enc = b.into_inner().map_err(|e| e.into_error())?;
                Ok(enc.finish()?.finish()?.writer)
            }
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
