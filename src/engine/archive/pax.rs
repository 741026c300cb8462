//! pax extended header records (POSIX.1-2001 `x` headers): writing them,
//! reading them exactly, and the `SCHILY.xattr.*` keywords GNU tar uses for
//! extended attributes.
//!
//! A record is `"<len> <key>=<value>\n"`, `len` counting the whole record
//! itself included; the value is raw bytes and may hold anything, newlines
//! and NULs included (extended attribute values are binary).
//!
//! The `tar` crate splits records on newlines instead of following their
//! lengths, so a binary value holding a newline reads differently there:
//! its pieces are malformed records, or, if crafted, records of their own.
//! [`records`] is the exact reading; [`crate_view`] is what the crate takes
//! for the keys it acts on, so the walker can refuse a header the two read
//! differently and the writer can avoid ever producing one.

use std::fmt;

/// Prefix of the keywords holding extended attributes, as GNU tar (and star,
/// and libarchive) write them: `SCHILY.xattr.<name>`.
pub const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Appends one record `"<len> <key>=<value>\n"`, `len` counting itself.
pub(crate) fn record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    loop {
        let total = base + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// One record, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Keyword.
    pub key: &'a [u8],
    /// Value, raw.
    pub value: &'a [u8],
}

/// Why a pax header cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads every record of a pax header by its length, as POSIX and GNU tar do.
///
/// # Security
///
/// The data is untrusted: every length is checked against what is left, every
/// record must end with a newline and hold a non-empty keyword followed by
/// `=`, and the records must cover the data exactly. Nothing is allocated
/// beyond the returned slices.
pub fn records(data: &[u8]) -> Result<Vec<Record<'_>>, Malformed> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let bad = |why: &str| Malformed(format!("malformed pax extended header record ({why})"));
        let sp = rest.iter().take(20).position(|&b| b == b' ').ok_or_else(|| bad("no length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("the length is not a number"))?;
        if len <= sp + 1 || len > rest.len() {
            return Err(bad("the length does not fit the header"));
        }
        let (rec, tail) = rest.split_at(len);
        if rec[len - 1] != b'\n' {
            return Err(bad("it does not end with a newline"));
        }
        let kv = &rec[sp + 1..len - 1];
        let eq = kv.iter().position(|&b| b == b'=').ok_or_else(|| bad("no '='"))?;
        if eq == 0 {
            return Err(bad("empty keyword"));
        }
        out.push(Record { key: &kv[..eq], value: &kv[eq + 1..] });
        rest = tail;
    }
    Ok(out)
}

/// What the `tar` crate takes from a pax header for the keys it acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrateView<'a> {
    /// `path` (first well-formed record of that key).
    pub path: Option<&'a [u8]>,
    /// `linkpath` (likewise).
    pub linkpath: Option<&'a [u8]>,
    /// `size`, `uid`, `gid`: the crate stops at the first record it cannot
    /// parse, and takes the first match before it.
    pub size: Option<u64>,
    /// See `size`.
    pub uid: Option<u64>,
    /// See `size`.
    pub gid: Option<u64>,
}

/// The `tar` crate's reading of `data` (newline-split records).
pub fn crate_view(data: &[u8]) -> CrateView<'_> {
    let numeric = |key: &str| {
        for ext in tar::PaxExtensions::new(data) {
            let ext = ext.ok()?;
            if ext.key_bytes() == key.as_bytes() {
                return ext.value().ok()?.parse().ok();
            }
        }
        None
    };
    let text = |key: &[u8]| {
        tar::PaxExtensions::new(data).filter_map(|e| e.ok()).find(|e| e.key_bytes() == key).map(|e| e.value_bytes())
    };
    CrateView {
        path: text(b"path"),
        linkpath: text(b"linkpath"),
        size: numeric("size"),
        uid: numeric("uid"),
        gid: numeric("gid"),
    }
}

/// The same keys, from an exact reading.
pub fn exact_view<'a>(records: &[Record<'a>]) -> CrateView<'a> {
    let first = |key: &[u8]| records.iter().find(|r| r.key == key).map(|r| r.value);
    let number = |key: &[u8]| first(key).and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
    CrateView {
        path: first(b"path"),
        linkpath: first(b"linkpath"),
        size: number(b"size"),
        uid: number(b"uid"),
        gid: number(b"gid"),
    }
}

/// Whether a record holding `value` reads the same in the `tar` crate as by
/// its length: no newline-separated piece of it (after the first) parses as
/// a record of its own. Values without a newline always do.
pub fn reads_the_same_everywhere(key: &[u8], value: &[u8]) -> bool {
    if !value.contains(&b'\n') {
        return true;
    }
    let mut rec = Vec::new();
    record(&mut rec, key, value);
    tar::PaxExtensions::new(&rec).skip(1).all(|e| e.is_err())
}

/// The keyword for extended attribute `name`: `SCHILY.xattr.` and the name
/// with `%` and `=` percent-encoded (`%25`, `%3D`), as GNU tar does, since
/// `=` ends a keyword.
pub fn xattr_key(name: &[u8]) -> Vec<u8> {
    let mut out = XATTR_PREFIX.to_vec();
    for &b in name {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b'=' => out.extend_from_slice(b"%3D"),
            _ => out.push(b),
        }
    }
    out
}

/// The attribute name of a `SCHILY.xattr.*` keyword, decoded as GNU tar
/// decodes it (only `%25` and `%3D`; any other `%` stays), or `None` for
/// other keywords.
pub fn xattr_name(key: &[u8]) -> Option<Vec<u8>> {
    let enc = key.strip_prefix(XATTR_PREFIX)?;
    let mut out = Vec::with_capacity(enc.len());
    let mut i = 0;
    while i < enc.len() {
        match &enc[i..] {
            [b'%', b'2', b'5', ..] => {
                out.push(b'%');
                i += 3;
            }
            [b'%', b'3', b'D', ..] => {
                out.push(b'=');
                i += 3;
            }
            _ => {
                out.push(enc[i]);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_length_counts_itself() {
        for vlen in [0usize, 1, 5, 6, 7, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 989, 990, 995, 996, 1000] {
            let mut out = Vec::new();
            let value = vec![b'a'; vlen];
            record(&mut out, b"path", &value);
            let sp = out.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value length {vlen}");
        }
    }

    #[test]
    fn binary_values_read_back_exactly() {
        let mut data = Vec::new();
        record(&mut data, b"path", b"volumes/0/a");
        record(&mut data, b"SCHILY.xattr.user.bin", b"\n\0\xff=\n 12 x=y\n");
        record(&mut data, b"SCHILY.xattr.user.empty", b"");
        let recs = records(&data).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].value, b"\n\0\xff=\n 12 x=y\n");
        assert_eq!(recs[2].value, b"");
        for bad in [&b"5 a=b"[..], b"99 a=b\n", b"x a=b\n", b"6 =bc\n", b"6 abcd", b"6 abc\n", b"3 \n"] {
            assert!(records(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_crate_misreads_newlines_and_we_notice() {
        // A value whose second line is itself a well-formed `path` record.
        let value = b"x\n13 path=v/ev";
        assert!(!reads_the_same_everywhere(b"SCHILY.xattr.user.a", value));
        let mut data = Vec::new();
        record(&mut data, b"SCHILY.xattr.user.a", value);
        assert_eq!(crate_view(&data).path, Some(&b"v/ev"[..]));
        assert_eq!(exact_view(&records(&data).unwrap()).path, None);
        // A malformed piece before `size` hides it from the crate.
        let mut data = Vec::new();
        record(&mut data, b"SCHILY.xattr.user.a", b"\n");
        record(&mut data, b"size", b"5");
        assert_eq!(crate_view(&data).size, None);
        assert_eq!(exact_view(&records(&data).unwrap()).size, Some(5));
        // Newlines alone are harmless.
        assert!(reads_the_same_everywhere(b"SCHILY.xattr.user.a", b"\n\n\x0a\x00\x00\x00"));
        assert!(reads_the_same_everywhere(b"SCHILY.xattr.user.a", b"no newline"));
    }

    #[test]
    fn xattr_keys_are_percent_encoded_like_gnu_tar() {
        assert_eq!(xattr_key(b"user.a=b%c"), b"SCHILY.xattr.user.a%3Db%25c");
        assert_eq!(xattr_name(b"SCHILY.xattr.user.a%3Db%25c").unwrap(), b"user.a=b%c");
        assert_eq!(xattr_name(b"SCHILY.xattr.user.%41%3d%").unwrap(), b"user.%41%3d%");
        assert_eq!(xattr_name(b"SCHILY.acl.access"), None);
    }
}
