//! Parallel gzip that stays one standard gzip stream, as pigz writes it.
//!
//! The uncompressed stream is cut into blocks of [`BLOCK_SIZE`] bytes. Each
//! block is compressed as raw deflate on one of the worker threads, primed
//! with the last 32 KiB of the block before it as the dictionary (so matches
//! reach back across the cut as in a single-threaded stream), and ended with
//! a sync flush, which ends on a byte boundary; the last block is finished
//! instead. The blocks, written in order behind one gzip header and followed
//! by the trailer (the per-block CRC-32s combined, the total length), form a
//! single gzip member that gzip, pigz, GNU tar and flate2's `GzDecoder` read.
//!
//! Memory is bounded: a block waits in the job queue only while a worker is
//! free to take it soon, and in the output queue up to a fixed count; past
//! that, [`write`](std::io::Write::write) blocks until the output thread has
//! written the oldest one. Dropping the encoder without
//! [`finish`](GzipEncoder::finish) (cancellation, an error elsewhere) stops
//! and joins every thread it started.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress, Status};

use super::CompressError;
use super::output::{Block, BufferPool, Chunk, OutputThread};
use crate::engine::archive::HashingWriter;

/// Uncompressed bytes per block. pigz uses 128 KiB; larger blocks spend
/// less time re-reading the dictionary and on flush markers, and memory is
/// still a few MiB in flight on a small machine.
pub(crate) const BLOCK_SIZE: usize = 256 * 1024;
/// Dictionary carried from one block to the next: deflate's whole window.
const DICT_SIZE: usize = 32 * 1024;
/// The gzip header: no name, no mtime (archives of the same data are
/// identical), OS "Unix" as gzip and pigz write it.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// One block to compress. `input[..dict]` is the dictionary (the end of the
/// previous block), `input[dict..]` the data.
struct Job {
    input: Vec<u8>,
    dict: usize,
    last: bool,
    reply: SyncSender<Result<Block, CompressError>>,
}

/// A gzip encoder compressing on `workers` threads; the output thread hashes
/// and writes. See the module documentation.
pub(crate) struct GzipEncoder<W: Write + Send + 'static> {
    /// The block being filled, dictionary first.
    block: Vec<u8>,
    /// Length of the dictionary at the start of `block`.
    dict: usize,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    output: Option<OutputThread<W>>,
    pool: Arc<BufferPool>,
}

impl<W: Write + Send + 'static> GzipEncoder<W> {
    /// Starts the threads and writes the gzip header.
    pub fn new(inner: W, level: u32, workers: usize) -> io::Result<Self> {
        let workers = workers.max(1);
        let pool = Arc::new(BufferPool::default());
        let mut output = OutputThread::start(inner, 2 * workers + 2, Arc::clone(&pool))?;
        output.send(Chunk::Ready(HEADER.to_vec()))?;
        let (tx, rx) = sync_channel::<Job>(workers);
        let rx = Arc::new(Mutex::new(rx));
        let mut encoder = GzipEncoder {
            block: pool.take(BLOCK_SIZE + DICT_SIZE),
            dict: 0,
            jobs: Some(tx),
            workers: Vec::with_capacity(workers),
            output: Some(output),
            pool,
        };
        for i in 0..workers {
            let rx = Arc::clone(&rx);
            let pool = Arc::clone(&encoder.pool);
            let handle = std::thread::Builder::new()
                .name(format!("volsnap-gzip-{i}"))
                .spawn(move || worker(&rx, &pool, flate2::Compression::new(level)))?;
            encoder.workers.push(handle);
        }
        Ok(encoder)
    }

    /// Compresses what is left, waits for every block to be written, writes
    /// the trailer and returns the destination (not flushed).
    pub fn finish(mut self) -> io::Result<HashingWriter<W>> {
        self.submit(true)?;
        self.stop_workers();
        let output = self.output.take().ok_or(CompressError::OutputLost)?;
        let written = output.finish()?;
        let mut out = written.writer;
        out.write_all(&written.crc.to_le_bytes())?;
        // ISIZE is the length modulo 2^32 (RFC 1952).
        out.write_all(&(written.len as u32).to_le_bytes())?;
        Ok(out)
    }

    /// Hands the current block to the workers and starts the next one with
    /// its end as the dictionary.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let output = self.output.as_mut().ok_or(CompressError::OutputLost)?;
        let mut next = self.pool.take(BLOCK_SIZE + DICT_SIZE);
        if !last {
            let data = &self.block[self.dict..];
            next.extend_from_slice(&data[data.len().saturating_sub(DICT_SIZE)..]);
        }
        let dict = std::mem::replace(&mut self.dict, next.len());
        let input = std::mem::replace(&mut self.block, next);
        let (reply, result) = sync_channel(1);
        // Queued for output first: the output queue's bound is what holds
        // the producer back when the disk or the workers are slower.
        output.send(Chunk::Pending(result))?;
        let job = Job { input, dict, last, reply };
        match &self.jobs {
            Some(jobs) if jobs.send(job).is_ok() => Ok(()),
            // Every worker is gone (they only end early by panicking): the
            // output thread reports the block it will never get.
            _ => Err(self.output.take().map_or(CompressError::WorkerLost.into(), |o| match o.finish() {
                Err(e) => e,
                Ok(_) => CompressError::WorkerLost.into(),
            })),
        }
    }

    fn stop_workers(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl<W: Write + Send + 'static> Write for GzipEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.dict + BLOCK_SIZE - self.block.len();
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == self.dict + BLOCK_SIZE {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Does not force a block out: a gzip stream is only complete after
    /// [`finish`](GzipEncoder::finish).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for GzipEncoder<W> {
    fn drop(&mut self) {
        // Workers first: they finish the block in hand and see the queue
        // closed. Then the output thread (its own drop abandons the queue).
        self.stop_workers();
        self.output = None;
    }
}

/// A worker's state.
struct Deflaters {
    /// The archive's level.
    level: flate2::Compression,
    /// The match finder's hash table ([`matched_bytes`]), reused.
    table: Vec<u32>,
}

/// A worker: compresses jobs until the queue is closed.
fn worker(jobs: &Mutex<Receiver<Job>>, pool: &BufferPool, level: flate2::Compression) {
    let mut deflate = Deflaters { level, table: vec![0; 1 << MATCH_HASH_BITS] };
    loop {
        let job = match jobs.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let result = compress_block(&mut deflate, &job, pool);
        pool.put(job.input);
        // The receiver is gone only when the output was abandoned.
        let _ = job.reply.send(result);
    }
}

/// Compresses one block as raw deflate: sync flush, or finish for the last.
/// A block deflate cannot shrink (bytes of near-maximal entropy, and next
/// to no repeats within deflate's window) is written as stored blocks:
/// deflate would search it for matches at length (the better part of the
/// time on a volume of compressed media or encrypted files) and then store
/// it all the same.
fn compress_block(deflate: &mut Deflaters, job: &Job, pool: &BufferPool) -> Result<Block, CompressError> {
    let (dict, data) = job.input.split_at(job.dict);
    let crc = zlib_rs::crc32::crc32(0, data);
    let len = data.len() as u64;
    let mut out = pool.take(data.len() + data.len() / 8 + 1024);
    if looks_random(data) && matched_bytes(&job.input, job.dict, &mut deflate.table) < data.len() / 100 {
        store(data, job.last, &mut out);
    } else {
        // A new deflate state for every block, not one reset: zlib-rs's
        // match finder compares past the end of the input it has (the
        // length is cut to it afterwards, but which of two candidates wins
        // can depend on those bytes), and after a reset they are whatever
        // the worker compressed before. The archive's bytes would then
        // depend on which worker took which block: not reproducible.
        let mut main = Compress::new(deflate.level, false);
        deflate_into(&mut main, dict, data, job.last, &mut out)?;
    }
    Ok(Block { data: out, crc, len })
}

/// Bits per byte (order-0 entropy) above which Huffman coding of the
/// literals cannot save more than 0.6%. Text and typical binaries are far
/// below; compressed and encrypted data is at 7.99 and more.
const RANDOM_ENTROPY: f64 = 7.95;
/// Size of the match finder's hash table, in bits.
const MATCH_HASH_BITS: u32 = 15;

/// How many bytes of `input[start..]` an LZ77 pass (4-byte matches up to
/// deflate's 32 KiB back, `input[..start]` included) covers with matches: a
/// rough, fast stand-in for what deflate could find, a fraction of its cost.
/// `table` is scratch space of `1 << MATCH_HASH_BITS` entries.
fn matched_bytes(input: &[u8], start: usize, table: &mut [u32]) -> usize {
    table.fill(0);
    let mut matched = 0;
    let mut i = 0;
    while i + 4 <= input.len() {
        let word = u32::from_le_bytes([input[i], input[i + 1], input[i + 2], input[i + 3]]);
        let h = (word.wrapping_mul(0x9e37_79b1) >> (32 - MATCH_HASH_BITS)) as usize;
        // Positions are stored plus one: 0 is an empty slot.
        let candidate = std::mem::replace(&mut table[h], i as u32 + 1) as usize;
        if candidate > 0 && i - (candidate - 1) <= DICT_SIZE {
            let c = candidate - 1;
            let len = input[i..].iter().zip(&input[c..]).take(258).take_while(|(a, b)| a == b).count();
            if len >= 4 {
                if i + len > start {
                    matched += i + len - i.max(start);
                }
                i += len;
                continue;
            }
        }
        i += 1;
    }
    matched
}

/// Whether the bytes' order-0 entropy is that of random data. Cheap (one
/// pass, a byte histogram); only a hint, which the level 1 trial confirms.
fn looks_random(data: &[u8]) -> bool {
    if data.len() < 16 * 1024 {
        return false;
    }
    // Four histograms: consecutive equal bytes do not wait on each other.
    let mut counts = [[0u32; 256]; 4];
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        counts[0][c[0] as usize] += 1;
        counts[1][c[1] as usize] += 1;
        counts[2][c[2] as usize] += 1;
        counts[3][c[3] as usize] += 1;
    }
    for &b in chunks.remainder() {
        counts[0][b as usize] += 1;
    }
    let n = data.len() as f64;
    let entropy: f64 = (0..256)
        .map(|i| counts.iter().map(|c| c[i]).sum::<u32>())
        .filter(|&c| c > 0)
        .map(|c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy > RANDOM_ENTROPY
}

/// Raw deflate of `data` after `dict` into `out` (cleared first), ended
/// with a sync flush, or finished when `last`.
fn deflate_into(
    deflate: &mut Compress,
    dict: &[u8],
    data: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> Result<(), CompressError> {
    deflate.reset();
    if !dict.is_empty() {
        deflate.set_dictionary(dict)?;
    }
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    out.clear();
    // Deflate's worst case is a few bytes per 16 KiB over the input (stored
    // blocks); start with room for it so one call does the whole block.
    out.reserve(data.len() + data.len() / 8 + 1024);
    let start = deflate.total_in();
    loop {
        let done = (deflate.total_in() - start) as usize;
        let status = deflate.compress_vec(&data[done..], out, flush)?;
        let consumed = (deflate.total_in() - start) as usize == data.len();
        let finished = if last { status == Status::StreamEnd } else { consumed && out.len() < out.capacity() };
        if finished {
            return Ok(());
        }
        out.reserve(64 * 1024);
    }
}

/// `data` as deflate stored blocks (RFC 1951 3.2.4), the last one final
/// when `last`. The stream is on a byte boundary here: every block before
/// ended with a sync flush or was stored.
fn store(data: &[u8], last: bool, out: &mut Vec<u8>) {
    let mut pieces = data.chunks(usize::from(u16::MAX)).peekable();
    while let Some(piece) = pieces.next() {
        let is_final = last && pieces.peek().is_none();
        // BFINAL in bit 0, BTYPE 00; the rest of the byte is padding.
        out.push(u8::from(is_final));
        let n = piece.len() as u16;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::process::{Command, Stdio};

    use super::*;

    fn mixed(len: usize) -> Vec<u8> {
        super::super::test_bytes(len, 100_000)
    }

    fn gzip(data: &[u8], level: u32, workers: usize) -> Vec<u8> {
        let mut enc = GzipEncoder::new(Vec::new(), level, workers).unwrap();
        // Odd-sized writes, so blocks are cut inside them.
        for piece in data.chunks(70_001) {
            enc.write_all(piece).unwrap();
        }
        let (bytes, _, _) = enc.finish().unwrap().finish();
        bytes
    }

    #[test]
    fn many_blocks_are_one_member_that_gzip_and_flate2_read() {
        let data = mixed(7 * BLOCK_SIZE + 12_345);
        let gz = gzip(&data, 6, 3);
        // flate2's GzDecoder reads one member only: it would stop at the
        // end of the first if the blocks were separate members.
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
        assert!(back == data, "flate2 decoded {} bytes of {}", back.len(), data.len());
        let mut child =
            Command::new("gzip").args(["-t", "-v", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(&gz).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "gzip -t: {}", String::from_utf8_lossy(&out.stderr));
        let mut child =
            Command::new("gzip").args(["-d", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&gz));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success() && out.stdout == data, "gzip -d gave {} bytes", out.stdout.len());
    }

    #[test]
    fn output_does_not_depend_on_the_worker_count() {
        let data = mixed(3 * BLOCK_SIZE + 7);
        assert_eq!(gzip(&data, 6, 1), gzip(&data, 6, 4));
    }

    #[test]
    fn empty_and_block_sized_inputs() {
        for len in [0, 1, BLOCK_SIZE, 2 * BLOCK_SIZE] {
            let data = mixed(len);
            let gz = gzip(&data, 6, 2);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
            assert!(back == data, "length {len}");
        }
    }

    /// Random bytes.
    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut back).unwrap();
        back
    }

    #[test]
    fn repeats_within_the_window_are_found_even_in_random_looking_blocks() {
        // 16 KiB of random bytes, repeated: every block looks random byte by
        // byte (the entropy hint fires), but deflate finds the repeats,
        // across the blocks' cuts too (the dictionary).
        let data: Vec<u8> = random(DICT_SIZE / 2, 5).into_iter().cycle().take(4 * BLOCK_SIZE).collect();
        assert!(looks_random(&data[..BLOCK_SIZE]));
        let gz = gzip(&data, 6, 2);
        // Stored, it would be all of it; compressed, about 1/30.
        assert!(gz.len() < data.len() / 20, "{} bytes for {}", gz.len(), data.len());
        assert!(gunzip(&gz) == data);
    }

    #[test]
    fn random_blocks_are_stored_and_the_rest_compressed() {
        // random, text, random (the last block random and final).
        let mut data = random(2 * BLOCK_SIZE, 9);
        data.extend(std::iter::repeat_n(b"status=200 GET /api/v1/items\n".as_slice(), 20_000).flatten());
        data.extend(random(BLOCK_SIZE + 1000, 11));
        let gz = gzip(&data, 6, 2);
        assert!(gunzip(&gz) == data);
        let random_len = 3 * BLOCK_SIZE + 1000;
        // Stored: 5 bytes per 64 KiB piece over the data, and the text
        // shrinks to almost nothing.
        assert!(gz.len() < random_len + random_len / 1000 + 30_000, "{} bytes", gz.len());
        assert!(!looks_random(b"status=200 GET /api/v1/items\n".repeat(1000).as_slice()));
    }

    #[test]
    fn the_match_finder_sees_repeats_and_not_noise() {
        let mut table = vec![0; 1 << MATCH_HASH_BITS];
        let noise = random(BLOCK_SIZE, 3);
        assert!(matched_bytes(&noise, 0, &mut table) < BLOCK_SIZE / 1000);
        let repeated: Vec<u8> = noise[..DICT_SIZE / 2].iter().copied().cycle().take(BLOCK_SIZE).collect();
        assert!(matched_bytes(&repeated, 0, &mut table) > BLOCK_SIZE * 9 / 10);
        // Only what follows `start` counts, but what precedes it is matched against.
        let mut primed = noise[..DICT_SIZE].to_vec();
        primed.extend_from_slice(&noise[..DICT_SIZE]);
        let matched = matched_bytes(&primed, DICT_SIZE, &mut table);
        assert!(matched > DICT_SIZE * 9 / 10 && matched <= DICT_SIZE, "{matched}");
    }

    #[test]
    fn level_changes_the_output() {
        let data = mixed(2 * BLOCK_SIZE);
        let fast = gzip(&data, 1, 2);
        let best = gzip(&data, 9, 2);
        assert!(best.len() < fast.len(), "level 9: {} bytes, level 1: {}", best.len(), fast.len());
    }

    use super::super::FullDisk as Full;

    #[test]
    fn a_write_error_stops_the_producer_with_that_error() {
        let mut enc = GzipEncoder::new(Full, 6, 2).unwrap();
        let data = mixed(BLOCK_SIZE);
        let err = (0..100).find_map(|_| enc.write_all(&data).err()).expect("a write fails");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        // Dropping it joins every thread (the test would hang otherwise).
        drop(enc);
    }
}
