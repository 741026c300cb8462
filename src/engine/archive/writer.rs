//! Streaming tar writer with pax headers, compression and hashing.
//!
//! The stream is POSIX pax (ustar headers, with a pax extended header `x`
//! before an entry when one of its fields does not fit ustar). Plain GNU tar
//! 1.34 and the `tar` crate read it.
//!
//! Choices, each made for the readers that matter:
//! - Names are bytes and never converted. A name that is ASCII and fits the
//!   ustar name/prefix split goes in the header; any other name goes in a pax
//!   `path` record as raw bytes, as GNU tar itself does in `--format=posix`.
//!   No `hdrcharset=BINARY` record is written: GNU tar 1.34 does not know the
//!   keyword and prints "Ignoring unknown extended header keyword" for it,
//!   while it reads raw bytes in `path` correctly.
//! - A name (or link target) that needs an extension AND contains a newline
//!   goes in a GNU long-name entry (`L`/`K`) instead: the `tar` crate splits
//!   pax records on newlines and would misread such a record. GNU tar reads
//!   `L`/`K` entries in any header format.
//! - Sizes of 8 GiB and more, uid/gid above 0o7777777 and mtimes outside the
//!   11-digit octal range go in pax `size`/`uid`/`gid`/`mtime` records, with
//!   0 in the header field.
//! - Numeric owners only (no uname/gname), whole-second mtimes.
//! - Extended attributes go in pax `SCHILY.xattr.<name>` records, as GNU tar
//!   `--xattrs` writes them (name with `%` and `=` percent-encoded, value as
//!   raw bytes), after every other record: the `tar` crate splits records on
//!   newlines, and a binary value read that way must not hide a `size` or
//!   `path` record it would otherwise find first.

use std::borrow::Cow;
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::compress::{self, Compressor};
use super::pax;
use crate::api::Compression;
use crate::engine::xattr::Xattr;

const BLOCK: usize = 512;
/// Largest value of an 11-digit octal field (size, mtime).
const MAX_OCTAL_11: u64 = 0o77777777777;
/// Largest value of a 7-digit octal field (uid, gid).
const MAX_OCTAL_7: u64 = 0o7777777;
/// Copy buffer for file contents.
const COPY_BUFFER: usize = 256 * 1024;

/// Counts and hashes (sha256) every byte written through it.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), count: 0 }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.count
    }

    /// Returns the inner writer, the sha256 (lower-case hex) and the number
    /// of bytes written. Does not flush.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Metadata recorded for an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EntryMeta<'a> {
    /// Permission bits, setuid/setgid/sticky included (masked to 0o7777).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Modification time, whole seconds since the epoch (may be negative).
    pub mtime: i64,
    /// Extended attributes, in the order they are written. The caller keeps
    /// only values that read the same in every pax reader
    /// ([`super::pax::reads_the_same_everywhere`]).
    pub xattrs: &'a [Xattr],
}

/// Writes a compressed tar stream entry by entry, hashing the compressed
/// bytes. The calling thread frames the tar stream; compression runs on one
/// thread per core and hashing and writing on one more
/// ([`super::compress`]). Memory use is fixed (a 256 KiB copy buffer and a
/// bounded number of blocks in flight per compression thread), whatever the
/// data size.
pub struct ArchiveWriter<W: Write + Send + 'static> {
    out: Compressor<W>,
    buf: Box<[u8]>,
}

impl<W: Write + Send + 'static> ArchiveWriter<W> {
    /// Starts an archive written to `inner` with the given compression at
    /// its default level.
    pub fn new(inner: W, compression: Compression) -> io::Result<Self> {
        Self::with_level(inner, compression, None)
    }

    /// Starts an archive written to `inner` with the given compression at
    /// `level` (validated by the caller: gzip 1-9, zstd 1-19; `None` for the
    /// default), compressing on every core.
    pub fn with_level(inner: W, compression: Compression, level: Option<u32>) -> io::Result<Self> {
        let level = level.unwrap_or(compression.default_level());
        let range = compression.levels();
        if !range.contains(&level) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} level {level} is outside {}-{}", compression.as_str(), range.start(), range.end()),
            ));
        }
        Ok(ArchiveWriter {
            out: Compressor::new(inner, compression, level, compress::workers())?,
            buf: vec![0u8; COPY_BUFFER].into_boxed_slice(),
        })
    }

    /// Appends a directory entry. A trailing `/` is added to `name` if missing.
    pub fn append_dir(&mut self, name: &[u8], meta: &EntryMeta) -> io::Result<()> {
        let name: Cow<'_, [u8]> = if name.ends_with(b"/") {
            Cow::Borrowed(name)
        } else {
            let mut n = name.to_vec();
            n.push(b'/');
            Cow::Owned(n)
        };
        self.write_header(&name, EntryType::Directory, meta, 0, None)
    }

    /// Appends a regular file of `size` bytes, read from `data`. `data` must
    /// yield at least `size` bytes (only `size` are read); an early end is an
    /// `UnexpectedEof` error and leaves the stream unusable.
    pub fn append_file(&mut self, name: &[u8], meta: &EntryMeta, size: u64, data: &mut dyn Read) -> io::Result<()> {
        self.write_header(name, EntryType::Regular, meta, size, None)?;
        let mut remaining = size;
        while remaining > 0 {
            let want = remaining.min(self.buf.len() as u64) as usize;
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "entry {}: data ended {remaining} bytes before the size in its header",
                            String::from_utf8_lossy(name)
                        ),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(&self.buf[..n])?;
            remaining -= n as u64;
        }
        self.pad(size)
    }

    /// Appends a symbolic link whose target is `target` (bytes, kept as is).
    pub fn append_symlink(&mut self, name: &[u8], meta: &EntryMeta, target: &[u8]) -> io::Result<()> {
        self.write_header(name, EntryType::Symlink, meta, 0, Some(target))
    }

    /// Appends a hard link to `target`, the full name of an earlier entry.
    pub fn append_hardlink(&mut self, name: &[u8], meta: &EntryMeta, target: &[u8]) -> io::Result<()> {
        self.write_header(name, EntryType::Link, meta, 0, Some(target))
    }

    /// Writes the end-of-archive marker (two zero blocks), finishes the
    /// compressor and returns the inner writer (flushed, not synced), the
    /// sha256 of the compressed stream (hex) and its size.
    pub fn finish(self) -> io::Result<(W, String, u64)> {
        let mut out = self.out;
        out.write_all(&[0u8; 2 * BLOCK])?;
        let mut hashing = out.finish()?;
        hashing.flush()?;
        Ok(hashing.finish())
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn write_header(
        &mut self,
        name: &[u8],
        kind: EntryType,
        meta: &EntryMeta,
        size: u64,
        link: Option<&[u8]>,
    ) -> io::Result<()> {
        check_name("entry name", name)?;
        if let Some(link) = link {
            check_name("link target", link)?;
        }
        let mut header = Header::new_ustar();
        let mut pax: Vec<PaxRecord<'_>> = Vec::new();
        let mut long_path_records: Vec<(&'static str, &[u8])> = Vec::new();

        {
            let ustar = header.as_ustar_mut().expect("ustar header");
            match ustar_split(name) {
                Some(split) => {
                    let (prefix, rest) = match split {
                        Some(i) => (&name[..i], &name[i + 1..]),
                        None => (&name[..0], name),
                    };
                    ustar.prefix[..prefix.len()].copy_from_slice(prefix);
                    ustar.name[..rest.len()].copy_from_slice(rest);
                }
                None => {
                    // Best-effort stand-in for readers without pax support.
                    let n = name.len().min(100);
                    ustar.name[..n].copy_from_slice(&name[..n]);
                    if name.contains(&b'\n') {
                        self.write_gnu_long(b'L', name)?;
                    } else {
                        long_path_records.push(("path", name));
                    }
                }
            }
            if let Some(link) = link {
                let n = link.len().min(100);
                ustar.linkname[..n].copy_from_slice(&link[..n]);
                if link.len() > 100 || !link.is_ascii() {
                    if link.contains(&b'\n') {
                        self.write_gnu_long(b'K', link)?;
                    } else {
                        long_path_records.push(("linkpath", link));
                    }
                }
            }
        }

        header.set_mode(meta.mode & 0o7777);
        if meta.uid <= MAX_OCTAL_7 {
            header.set_uid(meta.uid);
        } else {
            header.set_uid(0);
            pax.push((Cow::Borrowed(b"uid"), Cow::Owned(meta.uid.to_string().into_bytes())));
        }
        if meta.gid <= MAX_OCTAL_7 {
            header.set_gid(meta.gid);
        } else {
            header.set_gid(0);
            pax.push((Cow::Borrowed(b"gid"), Cow::Owned(meta.gid.to_string().into_bytes())));
        }
        if size <= MAX_OCTAL_11 {
            header.set_size(size);
        } else {
            header.set_size(0);
            pax.push((Cow::Borrowed(b"size"), Cow::Owned(size.to_string().into_bytes())));
        }
        match u64::try_from(meta.mtime) {
            Ok(m) if m <= MAX_OCTAL_11 => header.set_mtime(m),
            _ => {
                header.set_mtime(0);
                pax.push((Cow::Borrowed(b"mtime"), Cow::Owned(meta.mtime.to_string().into_bytes())));
            }
        }
        header.set_entry_type(kind);
        header.set_cksum();

        // path/linkpath last: the `tar` crate stops looking for numeric
        // records at the first record it cannot parse.
        for (k, v) in long_path_records {
            pax.push((Cow::Borrowed(k.as_bytes()), Cow::Borrowed(v)));
        }
        for x in meta.xattrs {
            pax.push((Cow::Owned(pax::xattr_key(&x.name)), Cow::Borrowed(&x.value)));
        }
        if !pax.is_empty() {
            let mut data = Vec::new();
            for (k, v) in &pax {
                pax::record(&mut data, k, v);
            }
            let mut xh = Header::new_ustar();
            xh.as_ustar_mut().expect("ustar header").name[..14].copy_from_slice(b"././@PaxHeader");
            xh.set_mode(0o644);
            xh.set_uid(0);
            xh.set_gid(0);
            xh.set_mtime(meta.mtime.clamp(0, MAX_OCTAL_11 as i64) as u64);
            xh.set_size(data.len() as u64);
            xh.set_entry_type(EntryType::XHeader);
            xh.set_cksum();
            self.out.write_all(xh.as_bytes())?;
            self.out.write_all(&data)?;
            self.pad(data.len() as u64)?;
        }
        self.out.write_all(header.as_bytes())
    }

    /// A GNU long name (`L`) or long link (`K`) entry holding `value`.
    fn write_gnu_long(&mut self, flag: u8, value: &[u8]) -> io::Result<()> {
        let mut h = Header::new_gnu();
        h.as_gnu_mut().expect("gnu header").name[..13].copy_from_slice(b"././@LongLink");
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let len = value.len() as u64 + 1;
        h.set_size(len);
        h.set_entry_type(EntryType::new(flag));
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(value)?;
        self.out.write_all(&[0])?;
        self.pad(len)
    }
}

/// A pax record to write: keyword and value.
type PaxRecord<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

fn check_name(what: &str, name: &[u8]) -> io::Result<()> {
    if name.is_empty() || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {:?} is empty or contains a NUL byte", String::from_utf8_lossy(name)),
        ));
    }
    Ok(())
}

/// Where to split `name` to store it in a ustar header: `Some(None)` when it
/// fits the 100-byte name field, `Some(Some(i))` to store `name[..i]` in the
/// prefix and `name[i+1..]` in the name field, `None` when it does not fit
/// (or is not ASCII) and needs an extended header.
fn ustar_split(name: &[u8]) -> Option<Option<usize>> {
    if !name.is_ascii() {
        return None;
    }
    if name.len() <= 100 {
        return Some(None);
    }
    if name.len() > 155 + 1 + 100 {
        return None;
    }
    name.iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && i > 0 && i <= 155)
        .map(|(i, _)| i)
        .find(|&i| {
            let rest = name.len() - i - 1;
            rest > 0 && rest <= 100
        })
        .map(Some)
}

/// Appends one pax record `"<len> <key>=<value>\n"` (tests build raw headers with it).
#[cfg(test)]
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    pax::record(out, key.as_bytes(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EntryMeta<'static> {
        EntryMeta { mode: 0o644, uid: 1000, gid: 1000, mtime: 1_700_000_000, xattrs: &[] }
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn ustar_split_rules() {
        assert_eq!(ustar_split(b"a/b"), Some(None));
        assert_eq!(ustar_split(&[b'a'; 100]), Some(None));
        assert_eq!(ustar_split(&[b'a'; 101]), None);
        let mut n = vec![b'a'; 150];
        n.push(b'/');
        n.extend(vec![b'b'; 100]);
        assert_eq!(ustar_split(&n), Some(Some(150)));
        assert_eq!(ustar_split("café".as_bytes()), None);
    }

    #[test]
    fn hashing_writer_matches_sha256() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello").unwrap();
        let (inner, hex, n) = w.finish();
        assert_eq!(inner, b"hello");
        assert_eq!(n, 5);
        assert_eq!(hex, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    }

    #[test]
    fn round_trip_through_tar_crate() {
        let mut w = ArchiveWriter::new(Vec::new(), Compression::Gzip).unwrap();
        let long: Vec<u8> = [b"volumes/0/".as_slice(), &[b'x'; 200], b"/", &[b'y'; 200]].concat();
        let newline_long: Vec<u8> = [b"volumes/0/".as_slice(), &[b'n'; 120], b"\nz"].concat();
        let binary = b"volumes/0/caf\xe9".to_vec();
        let big = EntryMeta { mode: 0o4755, uid: 4_000_000_000, gid: 3_000_000, mtime: -5, xattrs: &[] };
        w.append_dir(b"volumes/0", &meta()).unwrap();
        w.append_file(&long, &meta(), 3, &mut &b"abc"[..]).unwrap();
        w.append_file(&newline_long, &big, 0, &mut io::empty()).unwrap();
        w.append_file(&binary, &meta(), 1, &mut &b"z"[..]).unwrap();
        w.append_symlink(b"volumes/0/link", &meta(), &[b't'; 300]).unwrap();
        w.append_hardlink(b"volumes/0/hl", &meta(), &long).unwrap();
        let (bytes, hex, n) = w.finish().unwrap();
        assert_eq!(n, bytes.len() as u64);
        assert_eq!(hex, hex::encode(Sha256::digest(&bytes)));

        let tar_bytes = gunzip(&bytes);
        let mut ar = tar::Archive::new(&tar_bytes[..]);
        type Row = (Vec<u8>, EntryType, u64, Option<Vec<u8>>);
        let got: Vec<Row> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path_bytes().into_owned(),
                    h.entry_type(),
                    h.uid().unwrap(),
                    e.link_name_bytes().map(|l| l.into_owned()),
                )
            })
            .collect();
        assert_eq!(got.len(), 6);
        assert_eq!(got[0].0, b"volumes/0/");
        assert_eq!(got[1].0, long);
        assert_eq!(got[2].0, newline_long);
        assert_eq!(got[2].2, 4_000_000_000);
        assert_eq!(got[3].0, binary);
        assert_eq!(got[4].3.as_deref(), Some(&[b't'; 300][..]));
        assert_eq!(got[5].1, EntryType::Link);
        assert_eq!(got[5].3.as_deref(), Some(&long[..]));
    }

    #[test]
    fn short_data_is_an_error() {
        let mut w = ArchiveWriter::new(Vec::new(), Compression::Zstd).unwrap();
        let err = w.append_file(b"volumes/0/f", &meta(), 10, &mut &b"abc"[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
