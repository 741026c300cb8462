//! The output thread: hashes (sha256) and writes the compressed archive, in
//! order, while the calling thread walks the volumes and the compression
//! threads compress.
//!
//! Why a thread of its own: hashing and writing the compressed bytes is
//! sequential work (a few hundred MB/s of sha256 and `write`); done on the
//! thread that walks and frames the tar stream, it would add to that
//! thread's time instead of overlapping with it.
//!
//! It receives [`Chunk`]s through a bounded channel, which is what bounds the
//! memory in flight: a chunk is either bytes ready to write (zstd's output) or
//! the promise of a block still being compressed (parallel gzip), which it
//! waits for. Blocks are written in the order they were queued. The first
//! error (a failed write, a failed block) ends the thread; the producer sees
//! its next send fail and collects the error with [`OutputThread::finish`].

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::CompressError;
use crate::engine::archive::HashingWriter;

/// A compressed block of a gzip stream: its deflate bytes, and the CRC-32
/// and length of the uncompressed input they hold.
pub(crate) struct Block {
    /// Raw deflate bytes, ending on a byte boundary.
    pub data: Vec<u8>,
    /// CRC-32 of the block's uncompressed input.
    pub crc: u32,
    /// Length of the block's uncompressed input.
    pub len: u64,
}

/// One piece of the output, in stream order.
pub(crate) enum Chunk {
    /// Bytes to write as they are.
    Ready(Vec<u8>),
    /// A block still being compressed: its result arrives on the receiver.
    Pending(Receiver<Result<Block, CompressError>>),
}

/// What the output thread hands back when it ends without error.
pub(crate) struct Written<W: Write> {
    /// The destination, still to be flushed by the caller.
    pub writer: HashingWriter<W>,
    /// CRC-32 of the uncompressed input of every [`Chunk::Pending`] block,
    /// combined in order (the gzip trailer's CRC).
    pub crc: u32,
    /// Total uncompressed length of those blocks.
    pub len: u64,
}

/// Buffers handed back after use, so the steady state allocates nothing.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A cleared buffer with at least `capacity` bytes of room.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buf = self.free.lock().map(|mut f| f.pop()).ok().flatten().unwrap_or_default();
        buf.clear();
        buf.reserve(capacity);
        buf
    }

    /// Returns a buffer. The pool never holds more buffers than were in
    /// flight at once, which the channels bound.
    pub fn put(&self, buf: Vec<u8>) {
        if let Ok(mut f) = self.free.lock() {
            f.push(buf);
        }
    }
}

/// Handle on the output thread. Dropping it without [`finish`](Self::finish)
/// abandons the output: queued chunks are not written, and the thread is
/// joined before the drop returns.
pub(crate) struct OutputThread<W: Write + Send + 'static> {
    tx: Option<SyncSender<Chunk>>,
    handle: Option<JoinHandle<Result<Written<W>, io::Error>>>,
    abort: Arc<AtomicBool>,
    pool: Arc<BufferPool>,
}

impl<W: Write + Send + 'static> OutputThread<W> {
    /// Starts the thread writing to `inner`, with at most `queue` chunks
    /// waiting. Used buffers go back to `pool`.
    pub fn start(inner: W, queue: usize, pool: Arc<BufferPool>) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Chunk>(queue);
        let abort = Arc::new(AtomicBool::new(false));
        let thread_abort = Arc::clone(&abort);
        let thread_pool = Arc::clone(&pool);
        let handle = std::thread::Builder::new()
            .name("volsnap-output".into())
            .spawn(move || run(HashingWriter::new(inner), rx, &thread_abort, &thread_pool))?;
        Ok(OutputThread { tx: Some(tx), handle: Some(handle), abort, pool })
    }

    /// Queues a chunk; blocks while the queue is full. Fails when the thread
    /// has ended: its error is then what [`finish`](Self::finish) returns.
    pub fn send(&mut self, chunk: Chunk) -> io::Result<()> {
        match &self.tx {
            Some(tx) if tx.send(chunk).is_ok() => Ok(()),
            _ => Err(self.collect_error()),
        }
    }

    /// Waits until every queued chunk is written and returns the destination
    /// with the combined CRC, or the first error.
    pub fn finish(mut self) -> io::Result<Written<W>> {
        self.tx = None;
        self.join()
    }

    /// After a failed send: the error the thread ended with.
    fn collect_error(&mut self) -> io::Error {
        self.tx = None;
        match self.join() {
            Err(e) => e,
            Ok(_) => CompressError::OutputLost.into(),
        }
    }

    fn join(&mut self) -> io::Result<Written<W>> {
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(CompressError::OutputPanicked.into()),
            None => Err(CompressError::OutputLost.into()),
        }
    }
}

impl<W: Write + Send + 'static> Write for OutputThread<W> {
    /// Queues a copy of `buf` as a ready chunk (zstd's output).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut copy = self.pool.take(buf.len());
        copy.extend_from_slice(buf);
        self.send(Chunk::Ready(copy))?;
        Ok(buf.len())
    }

    /// Nothing to do: the thread writes as chunks arrive, and the archive
    /// is flushed (and synced) once, at the end.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for OutputThread<W> {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.abort.store(true, Ordering::Relaxed);
            self.tx = None;
            let _ = self.join();
        }
    }
}

fn run<W: Write>(
    mut out: HashingWriter<W>,
    rx: Receiver<Chunk>,
    abort: &AtomicBool,
    pool: &BufferPool,
) -> io::Result<Written<W>> {
    let mut crc = 0u32;
    let mut len = 0u64;
    for chunk in rx {
        if abort.load(Ordering::Relaxed) {
            return Err(io::Error::other("output abandoned"));
        }
        let data = match chunk {
            Chunk::Ready(data) => data,
            Chunk::Pending(result) => {
                let block = result.recv().map_err(|_| CompressError::WorkerLost)??;
                crc = zlib_rs::crc32::crc32_combine(crc, block.crc, block.len);
                len += block.len;
                block.data
            }
        };
        out.write_all(&data)?;
        pool.put(data);
    }
    Ok(Written { writer: out, crc, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::FullDisk as Full;

    #[test]
    fn write_errors_reach_the_producer_unchanged() {
        let mut out = OutputThread::start(Full, 1, Arc::default()).unwrap();
        // The first chunks may be accepted before the thread fails.
        let err = (0..10).find_map(|_| out.write_all(b"data").err()).expect("a send fails");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    }

    #[test]
    fn a_lost_block_is_an_error() {
        let mut out = OutputThread::start(Vec::new(), 1, Arc::default()).unwrap();
        let (tx, rx) = sync_channel(1);
        out.send(Chunk::Pending(rx)).unwrap();
        drop(tx);
        let err = out.finish().err().expect("fails");
        assert!(err.to_string().contains("compression thread"), "{err}");
    }

    #[test]
    fn chunks_are_written_in_order_and_hashed() {
        let mut out = OutputThread::start(Vec::new(), 2, Arc::default()).unwrap();
        let (tx, rx) = sync_channel(1);
        out.send(Chunk::Ready(b"ab".to_vec())).unwrap();
        out.send(Chunk::Pending(rx)).unwrap();
        out.write_all(b"ef").unwrap();
        tx.send(Ok(Block { data: b"cd".to_vec(), crc: 7, len: 3 })).unwrap();
        let written = out.finish().unwrap();
        assert_eq!((written.crc, written.len), (7, 3));
        let (bytes, sha, n) = written.writer.finish();
        assert_eq!(bytes, b"abcdef");
        assert_eq!(n, 6);
        assert_eq!(sha, "bef57ec7f53a6d40beb640a780a639c83bc29ac8a9816f1fc6c5c6dcd93c4721");
    }
}
