//! zstd on libzstd's worker threads, fed from a thread of its own.
//!
//! Why the extra thread: libzstd's multithreaded mode blocks the thread
//! that feeds it whenever every worker is busy. If that were the thread
//! that walks the volumes, no file would be read while it waits, and the
//! workers would then wait for input: the two would take turns. Fed through
//! a short queue of 1 MiB buffers instead (as `tar | zstd -T0` is fed
//! through a pipe), the walk keeps reading while libzstd waits.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::CompressError;
use super::output::{BufferPool, OutputThread};
use crate::engine::archive::HashingWriter;

/// Size of the buffers handed to the feeding thread.
const BUFFER: usize = 512 << 10;
/// Buffers waiting for the feeding thread.
const QUEUE: usize = 2;
/// Uncompressed bytes per zstd job. libzstd's default for level 3 is 8 MiB;
/// its input and output buffers for the jobs in flight then cost tens of
/// MiB (a 2 GiB capture peaked at 69 MiB with 2 MiB jobs, over the 64 MiB
/// the README promises). 1 MiB keeps the peak RSS flat and the cores busy.
const JOB_SIZE: u32 = 1 << 20;
/// Chunks waiting for the output thread (zstd's output arrives in pieces of
/// about 128 KiB).
const OUTPUT_QUEUE: usize = 16;

/// A zstd encoder (one frame, with its checksum) compressing on `workers`
/// threads; the output thread hashes and writes.
pub(crate) struct ZstdEncoder<W: Write + Send + 'static> {
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    pool: Arc<BufferPool>,
    abort: Arc<AtomicBool>,
    handle: Option<JoinHandle<io::Result<HashingWriter<W>>>>,
}

impl<W: Write + Send + 'static> ZstdEncoder<W> {
    /// Sets up libzstd and starts the feeding and output threads.
    pub fn new(inner: W, level: u32, workers: usize) -> io::Result<Self> {
        let pool = Arc::new(BufferPool::default());
        let out = OutputThread::start(inner, OUTPUT_QUEUE, Arc::new(BufferPool::default()))?;
        let level = i32::try_from(level).map_err(|_| io::Error::other("zstd level out of range"))?;
        let mut enc = zstd::stream::write::Encoder::new(out, level)?;
        enc.include_checksum(true)?;
        // Multithreaded even with one worker: libzstd's output is then the
        // same for any number of workers (single-threaded mode cuts the
        // stream differently), so the archive does not depend on the host.
        enc.multithread(u32::try_from(workers.max(1)).unwrap_or(u32::MAX))?;
        enc.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let abort = Arc::new(AtomicBool::new(false));
        let (thread_pool, thread_abort) = (Arc::clone(&pool), Arc::clone(&abort));
        let handle = std::thread::Builder::new()
            .name("volsnap-zstd".into())
            .spawn(move || feed(enc, &rx, &thread_pool, &thread_abort))?;
        Ok(ZstdEncoder { buf: pool.take(BUFFER), tx: Some(tx), pool, abort, handle: Some(handle) })
    }

    /// Ends the frame, waits until all of it is written and returns the
    /// destination (not flushed).
    pub fn finish(mut self) -> io::Result<HashingWriter<W>> {
        self.send()?;
        self.tx = None;
        self.join()
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, self.pool.take(BUFFER));
        match &self.tx {
            Some(tx) if tx.send(full).is_ok() => Ok(()),
            // The thread ended: its error says why.
            _ => {
                self.tx = None;
                Err(self.join().err().unwrap_or_else(|| CompressError::WorkerLost.into()))
            }
        }
    }

    fn join(&mut self) -> io::Result<HashingWriter<W>> {
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(CompressError::WorkerLost.into()),
            None => Err(CompressError::WorkerLost.into()),
        }
    }
}

impl<W: Write + Send + 'static> Write for ZstdEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (BUFFER - self.buf.len()).min(buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == BUFFER {
            self.send()?;
        }
        Ok(n)
    }

    /// Does not force anything out: the frame is only complete after
    /// [`finish`](ZstdEncoder::finish).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ZstdEncoder<W> {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.abort.store(true, Ordering::Relaxed);
            self.tx = None;
            let _ = self.join();
        }
    }
}

/// The feeding thread: hands each buffer to libzstd, then ends the frame
/// when the queue closes, unless the encoder was dropped (then the frame is
/// abandoned, and dropping the encoder stops libzstd's workers and the
/// output thread).
fn feed<W: Write + Send + 'static>(
    mut enc: zstd::stream::write::Encoder<'static, OutputThread<W>>,
    rx: &Receiver<Vec<u8>>,
    pool: &BufferPool,
    abort: &AtomicBool,
) -> io::Result<HashingWriter<W>> {
    for buf in rx {
        if abort.load(Ordering::Relaxed) {
            return Err(io::Error::other("compression abandoned"));
        }
        enc.write_all(&buf)?;
        pool.put(buf);
    }
    if abort.load(Ordering::Relaxed) {
        return Err(io::Error::other("compression abandoned"));
    }
    Ok(enc.finish()?.finish()?.writer)
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    fn data(len: usize) -> Vec<u8> {
        super::super::test_bytes(len, 300_000)
    }

    #[test]
    fn many_jobs_make_one_frame_that_zstd_reads() {
        let input = data(3 * JOB_SIZE as usize + 12_345);
        let mut enc = ZstdEncoder::new(Vec::new(), 3, 2).unwrap();
        for piece in input.chunks(100_003) {
            enc.write_all(piece).unwrap();
        }
        let (zst, _, _) = enc.finish().unwrap().finish();
        assert!(zstd::decode_all(&zst[..]).unwrap() == input);
        let mut child = Command::new("zstd").args(["-t", "-q", "-"]).stdin(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(&zst).unwrap();
        assert!(child.wait().unwrap().success(), "zstd -t");
    }

    use super::super::FullDisk as Full;

    #[test]
    fn a_write_error_reaches_the_producer() {
        let mut enc = ZstdEncoder::new(Full, 3, 2).unwrap();
        let input = data(BUFFER);
        let err = (0..200).find_map(|_| enc.write_all(&input).err()).expect("a write fails");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        drop(enc);
    }

    #[test]
    fn output_does_not_depend_on_the_worker_count() {
        let input = data(2 * JOB_SIZE as usize + 7);
        let compress = |workers| {
            let mut enc = ZstdEncoder::new(Vec::new(), 3, workers).unwrap();
            enc.write_all(&input).unwrap();
            enc.finish().unwrap().finish().0
        };
        assert!(compress(1) == compress(3));
    }

    #[test]
    fn dropping_it_unfinished_stops_every_thread() {
        let mut enc = ZstdEncoder::new(Vec::new(), 3, 2).unwrap();
        enc.write_all(&data(3 * BUFFER)).unwrap();
        // Joins the feeding thread, libzstd's workers and the output thread.
        drop(enc);
    }
}
