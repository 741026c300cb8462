//! `volsnap archive list` and `volsnap archive verify`: look into an archive
//! file without extracting it. Both are safe on untrusted files (they go
//! through the engine's untrusted-archive reader).

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use serde::Serialize;

use super::get::write_pretty_json;
use super::table::{Align, GET_STYLE, Table};
use super::{CliError, OutputFormat, human_bytes};
use crate::engine::archive::{
    self, ArchiveError, ArchiveManifest, EntryInfo, EntryKind, VerifyLimits, VerifyReport, detect_compression,
};
use crate::engine::capture::checksum_path;

/// Cap on the number of entries `archive verify` accepts: far above any real
/// volume, low enough that a hostile archive cannot make the check run forever.
const VERIFY_MAX_ENTRIES: u64 = 10_000_000;

/// `volsnap archive list FILE`: the archive's manifest (`volsnap.json`) and
/// its entries, like `tar -tv`: mode (`drwxr-xr-x`, `-rw-r--r--`,
/// `lrwxrwxrwx`, `h...` for hard links), numeric owner, size, mtime
/// (RFC 3339) and name (`-> target` for links). Control characters in names
/// are escaped (`\n`, `\x1b`), as is `\` itself.
///
/// With yaml / json: `{"manifest": ..., "entries": [...]}`.
///
/// The archive is checked while it is read; a damaged archive is
/// [`CliError::Archive`], after the table has printed the entries read
/// before the error.
pub fn archive_list(file: &Path, output: OutputFormat, out: &mut dyn Write) -> Result<(), CliError> {
    let mut entries = Vec::new();
    let result = archive::list(file, &mut |e| entries.push(e.clone()));
    match output {
        OutputFormat::Table | OutputFormat::Wide => {
            match &result {
                Ok(manifest) => {
                    out.write_all(header(file, manifest).as_bytes())?;
                    writeln!(out)?;
                }
                Err(_) if entries.is_empty() => {}
                Err(_) => writeln!(out, "Entries read before the error:")?,
            }
            if !entries.is_empty() {
                out.write_all(entry_table(&entries).render(GET_STYLE, "").as_bytes())?;
            }
            out.flush()?;
            result?;
        }
        OutputFormat::Yaml | OutputFormat::Json => {
            let manifest = result?;
            let listing = Listing { manifest, entries: entries.iter().map(EntryJson::from).collect() };
            if output == OutputFormat::Yaml {
                serde_yaml_ng::to_writer(&mut *out, &listing)?;
            } else {
                write_pretty_json(&listing, out)?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

/// What `archive list -o json|yaml` prints.
#[derive(Serialize)]
struct Listing {
    manifest: ArchiveManifest,
    entries: Vec<EntryJson>,
}

/// One entry in `archive list -o json|yaml`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryJson {
    path: String,
    kind: &'static str,
    /// Permission bits in octal, e.g. `0644`.
    mode: String,
    uid: u64,
    gid: u64,
    size: u64,
    /// RFC 3339.
    mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_target: Option<String>,
}

impl From<&EntryInfo> for EntryJson {
    fn from(e: &EntryInfo) -> EntryJson {
        EntryJson {
            path: e.path.clone(),
            kind: e.kind.as_str(),
            mode: format!("{:04o}", e.mode & 0o7777),
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            mtime: rfc3339(e.mtime),
            link_target: e.link_target.clone(),
        }
    }
}

/// The manifest block above the entry table.
fn header(file: &Path, m: &ArchiveManifest) -> String {
    let format = match sniff_compression(file) {
        Some(c) => format!("{}, volsnap archive format {}", c.format(), m.format_version),
        None => format!("volsnap archive format {}", m.format_version),
    };
    let mut s = String::new();
    let mut field = |label: &str, value: &str| s.push_str(&format!("{:<11}{value}\n", format!("{label}:")));
    field("Archive", &file.display().to_string());
    field("Format", &format);
    field("Snapshot", &format!("{}/{} (uid {})", m.snapshot.namespace, m.snapshot.name, m.snapshot.uid));
    field("Created", &m.creation_timestamp.to_string());
    if let Some(p) = &m.producer {
        field("Producer", p);
    }
    s.push_str("Volumes:\n");
    let mut t = Table::new(["INDEX", "NAME", "TARGET", "SOURCE"]);
    for v in &m.volumes {
        t.push(vec![
            v.index.to_string(),
            escape(&v.name),
            v.target.as_deref().map_or_else(|| super::get::NONE.to_string(), escape),
            escape(&v.source),
        ]);
    }
    s.push_str(&t.render(GET_STYLE, "  "));
    s
}

fn entry_table(entries: &[EntryInfo]) -> Table {
    let mut t = Table::new(["MODE", "UID/GID", "SIZE", "MTIME", "NAME"]).align(2, Align::Right);
    for e in entries {
        let mut name = escape(&e.path);
        if let Some(target) = &e.link_target {
            name.push_str(" -> ");
            name.push_str(&escape(target));
        }
        t.push(vec![
            mode_string(e.kind, e.mode),
            format!("{}/{}", e.uid, e.gid),
            e.size.to_string(),
            rfc3339(e.mtime),
            name,
        ]);
    }
    t
}

/// `ls -l` style type and permissions: `drwxr-xr-x`, `-rwsr-xr-x`,
/// `lrwxrwxrwx`, and `h` as the type of hard links.
pub(crate) fn mode_string(kind: EntryKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Hardlink => 'h',
    });
    // (shift of the rwx triplet, special bit, letter when also executable)
    for (shift, special, letter) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 0o7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        s.push(match (mode & special != 0, exec) {
            (true, true) => letter,
            (true, false) => letter.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Seconds since the epoch as RFC 3339 (the number itself when out of range).
fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

/// Escapes control characters and `\` so that one entry stays on one line
/// and cannot drive the terminal.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

fn sniff_compression(file: &Path) -> Option<crate::api::Compression> {
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(file).ok()?;
    f.read_exact(&mut magic).ok()?;
    detect_compression(&magic)
}

/// `volsnap archive verify FILE [--sha256 HEX]`: reads the whole archive
/// and checks its structure, compression integrity and sha256, without
/// writing anything.
///
/// The sha256 to compare with is `expected_sha256` when given, otherwise the
/// one in the checksum file `<FILE>.sha256` next to the archive when there
/// is one; the output says which. Prints `OK: ...` with counts and returns
/// `Ok(true)` when the archive is sound; prints `DAMAGED: <file>: <why>` and
/// returns `Ok(false)` when it is not, also when the file is missing or
/// unreadable, or its checksum file is not in `sha256sum` format. `Err` is
/// left for failures to write the output and for an `expected_sha256` that
/// is not 64 hex digits.
pub fn archive_verify(file: &Path, expected_sha256: Option<&str>, out: &mut dyn Write) -> Result<bool, CliError> {
    let shown = file.display().to_string();
    let damaged = |out: &mut dyn Write, why: &str| -> Result<bool, CliError> {
        writeln!(out, "DAMAGED: {shown}: {why}")?;
        out.flush()?;
        Ok(false)
    };
    match fs::metadata(file) {
        Ok(m) if m.is_dir() => return damaged(out, "is a directory, not an archive file"),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return damaged(out, "no such file"),
        Err(e) => return damaged(out, &format!("cannot read the file: {e}")),
    }

    let sidecar = checksum_path(file);
    let sidecar_shown = sidecar.display().to_string();
    let (expected, source) = match expected_sha256 {
        Some(given) => {
            let hex = given.trim();
            if !is_sha256_hex(hex) {
                return Err(CliError::InvalidArgument(format!(
                    "--sha256 {given:?} is not a sha256: expected 64 hexadecimal digits"
                )));
            }
            (Some(hex.to_ascii_lowercase()), "the given sha256".to_string())
        }
        None => match fs::read(&sidecar) {
            Ok(bytes) => match parse_checksum_file(&bytes) {
                Some(hex) => (Some(hex), sidecar_shown.clone()),
                None => {
                    return damaged(
                        out,
                        &format!(
                            "checksum file {sidecar_shown} is not in sha256sum format (\"<64 hex digits>  <file name>\")"
                        ),
                    );
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, String::new()),
            Err(e) => return damaged(out, &format!("cannot read checksum file {sidecar_shown}: {e}")),
        },
    };

    let limits = VerifyLimits {
        max_expanded_bytes: None,
        max_entries: Some(VERIFY_MAX_ENTRIES),
        expected_sha256: expected.clone(),
    };
    match archive::verify(file, &limits) {
        Ok(report) => {
            let checked = match &expected {
                Some(_) => format!("matches {source}"),
                None => format!("not compared: no {sidecar_shown} and no sha256 given"),
            };
            out.write_all(ok_report(&shown, &report, &checked).as_bytes())?;
            out.flush()?;
            Ok(true)
        }
        Err(e @ ArchiveError::ChecksumMismatch { .. }) => damaged(out, &format!("{e} (expected value from {source})")),
        Err(e) => damaged(out, &e.to_string()),
    }
}

fn ok_report(shown: &str, r: &VerifyReport, checked: &str) -> String {
    let m = &r.manifest;
    let mut s = format!(
        "OK: {shown}: {}, {} volume(s), {} files, {} content, sha256 {} ({checked})\n",
        r.compression.format(),
        r.volumes.len(),
        r.files,
        human_bytes(r.bytes),
        r.sha256,
    );
    s.push_str(&format!(
        "  snapshot {}/{} (uid {}), created {}, archive {} ({} bytes), {} entries\n",
        m.snapshot.namespace,
        m.snapshot.name,
        m.snapshot.uid,
        m.creation_timestamp,
        human_bytes(r.size_bytes),
        r.size_bytes,
        r.entries,
    ));
    for v in &r.volumes {
        let mut line = format!("  volume {} {}: {} files, {}", v.index, escape(&v.name), v.files, human_bytes(v.bytes));
        if let Some(mv) = m.volumes.iter().find(|mv| mv.index == v.index) {
            line.push_str(&format!(" (from {}", escape(&mv.source)));
            if let Some(t) = &mv.target {
                line.push_str(&format!(", mounted at {}", escape(t)));
            }
            line.push(')');
        }
        s.push_str(&line);
        s.push('\n');
    }
    s
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The sha256 of a `sha256sum` line (`<hex>  <name>`, or `\<hex>  <name>`
/// for an escaped name), lower-cased.
fn parse_checksum_file(bytes: &[u8]) -> Option<String> {
    // Only the first token matters; the file name after it may be any bytes.
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &bytes[start..];
    let end = rest.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(rest.len());
    let token = std::str::from_utf8(&rest[..end]).ok()?;
    let token = token.strip_prefix('\\').unwrap_or(token);
    is_sha256_hex(token).then(|| token.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::AtomicBool;

    use serde_json::Value;

    use super::*;
    use crate::api::{Compression, Time};
    use crate::engine::archive::{FORMAT_VERSION, ManifestVolume, SnapshotRef};
    use crate::engine::capture::{CaptureJob, CaptureProgress, CaptureVolume, capture};

    struct Fixture {
        _tmp: tempfile::TempDir,
        archive: PathBuf,
        sha256: String,
    }

    fn fixture(compression: Compression) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("src/data");
        let conf = tmp.path().join("src/conf");
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::create_dir_all(&conf).unwrap();
        fs::write(data.join("sub/file.txt"), b"hello\n").unwrap();
        let big: Vec<u8> = (0..300_000u32).flat_map(|i| (i.wrapping_mul(2_654_435_761)).to_le_bytes()).collect();
        fs::write(data.join("big.bin"), &big).unwrap();
        fs::hard_link(data.join("big.bin"), data.join("sub/big-link")).unwrap();
        std::os::unix::fs::symlink("sub/file.txt", data.join("link")).unwrap();
        fs::write(data.join("odd\nname"), b"x").unwrap();
        fs::write(conf.join("app.conf"), b"key=value\n").unwrap();
        let volumes = vec![
            CaptureVolume::open_trusted(0, "data", &data.clone(), Some("/var/lib/app")).unwrap(),
            CaptureVolume::open_trusted(1, "conf", &conf.clone(), None).unwrap(),
        ];
        let manifest = ArchiveManifest {
            format_version: FORMAT_VERSION,
            snapshot: SnapshotRef { namespace: "default".into(), name: "snap-1".into(), uid: "u-1".into() },
            creation_timestamp: Time(jiff::Timestamp::from_second(1_750_000_000).unwrap()),
            producer: Some("volsnap test".into()),
            volumes: volumes.iter().map(ManifestVolume::from).collect(),
        };
        let archive = tmp.path().join(format!("archives/snap-1.{}", compression.extension()));
        let outcome = capture(CaptureJob {
            manifest: &manifest,
            volumes: &volumes,
            compression,
            level: None,
            dest: &archive,
            progress: &CaptureProgress::default(),
            cancel: &AtomicBool::new(false),
        })
        .unwrap();
        Fixture { _tmp: tmp, archive, sha256: outcome.sha256 }
    }

    fn verify_text(file: &Path, expected: Option<&str>) -> (bool, String) {
        let mut out = Vec::new();
        let ok = archive_verify(file, expected, &mut out).unwrap();
        (ok, String::from_utf8(out).unwrap())
    }

    fn flip_middle_byte(file: &Path) {
        let mut bytes = fs::read(file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        fs::write(file, bytes).unwrap();
    }

    #[test]
    fn verify_sound_archive_against_the_checksum_file() {
        let fx = fixture(Compression::Gzip);
        let (ok, text) = verify_text(&fx.archive, None);
        assert!(ok, "{text}");
        let first = text.lines().next().unwrap();
        let shown = fx.archive.display();
        assert!(first.starts_with(&format!("OK: {shown}: tar+gzip, 2 volume(s), ")), "{text}");
        assert!(first.contains(&format!("sha256 {} (matches {shown}.sha256)", fx.sha256)), "{text}");
        assert!(text.contains("  volume 0 data: "), "{text}");
        assert!(text.contains(", mounted at /var/lib/app)"), "{text}");
        assert!(text.contains("  volume 1 conf: 1 files, 10 B"), "{text}");
        assert!(text.contains("  snapshot default/snap-1 (uid u-1)"), "{text}");
    }

    #[test]
    fn verify_with_a_given_checksum_and_without_any() {
        let fx = fixture(Compression::Zstd);
        let (ok, text) = verify_text(&fx.archive, Some(&fx.sha256.to_uppercase()));
        assert!(ok, "{text}");
        assert!(text.contains("tar+zstd") && text.contains("(matches the given sha256)"), "{text}");

        let (ok, text) = verify_text(&fx.archive, Some(&"0".repeat(64)));
        assert!(!ok);
        assert!(text.starts_with("DAMAGED: ") && text.contains("checksum mismatch"), "{text}");
        assert!(text.contains("(expected value from the given sha256)"), "{text}");

        let err = archive_verify(&fx.archive, Some("abc"), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, CliError::InvalidArgument(_)), "{err}");

        fs::remove_file(checksum_path(&fx.archive)).unwrap();
        let (ok, text) = verify_text(&fx.archive, None);
        assert!(ok, "{text}");
        assert!(text.contains("not compared: no "), "{text}");
    }

    #[test]
    fn verify_detects_a_flipped_byte() {
        for compression in [Compression::Gzip, Compression::Zstd] {
            let fx = fixture(compression);
            flip_middle_byte(&fx.archive);
            let (ok, text) = verify_text(&fx.archive, None);
            assert!(!ok, "{text}");
            assert!(text.starts_with(&format!("DAMAGED: {}: ", fx.archive.display())), "{text}");
            assert_eq!(text.lines().count(), 1, "{text}");
            // Without the checksum file the damage is still found by the
            // compression checksums.
            fs::remove_file(checksum_path(&fx.archive)).unwrap();
            let (ok, text) = verify_text(&fx.archive, None);
            assert!(!ok, "{compression:?}: {text}");
        }
    }

    #[test]
    fn verify_missing_file_and_bad_checksum_file() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope.tar.gz");
        let (ok, text) = verify_text(&missing, None);
        assert!(!ok);
        assert_eq!(text, format!("DAMAGED: {}: no such file\n", missing.display()));
        let (ok, text) = verify_text(tmp.path(), None);
        assert!(!ok && text.contains("is a directory"), "{text}");

        let fx = fixture(Compression::Gzip);
        fs::write(checksum_path(&fx.archive), b"not a checksum\n").unwrap();
        let (ok, text) = verify_text(&fx.archive, None);
        assert!(!ok && text.contains("not in sha256sum format"), "{text}");

        let garbage = tmp.path().join("garbage.tar.gz");
        fs::write(&garbage, b"this is not an archive at all").unwrap();
        let (ok, text) = verify_text(&garbage, None);
        assert!(!ok && text.contains("not a volsnap archive"), "{text}");
    }

    #[test]
    fn checksum_file_parsing() {
        let hex = "a".repeat(64);
        assert_eq!(parse_checksum_file(format!("{hex}  x.tar.gz\n").as_bytes()), Some(hex.clone()));
        assert_eq!(parse_checksum_file(format!("\\{}  x\\nname\n", hex.to_uppercase()).as_bytes()), Some(hex.clone()));
        let mut non_utf8 = format!("{hex}  ").into_bytes();
        non_utf8.extend_from_slice(b"caf\xe9\n");
        assert_eq!(parse_checksum_file(&non_utf8), Some(hex));
        assert_eq!(parse_checksum_file(b""), None);
        assert_eq!(parse_checksum_file(b"abc  x\n"), None);
    }

    #[test]
    fn list_table() {
        let fx = fixture(Compression::Gzip);
        let mut out = Vec::new();
        archive_list(&fx.archive, OutputFormat::Table, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("Archive:   {}\n", fx.archive.display())), "{text}");
        assert!(text.contains("Format:    tar+gzip, volsnap archive format 1\n"), "{text}");
        assert!(text.contains("Snapshot:  default/snap-1 (uid u-1)\n"), "{text}");
        assert!(text.contains("Created:   2025-06-15T15:06:40Z\n"), "{text}");
        assert!(text.contains("  INDEX   NAME   TARGET         SOURCE\n"), "{text}");
        assert!(text.contains("  1       conf   <none>         "), "{text}");
        let lines: Vec<_> = text.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("MODE")).unwrap();
        assert!(lines[header].contains("UID/GID") && lines[header].ends_with("NAME"), "{text}");
        let entries = &lines[header + 1..];
        assert!(entries[0].starts_with("-rw-r--r--") && entries[0].ends_with(" volsnap.json"), "{text}");
        let find = |suffix: &str| entries.iter().find(|l| l.ends_with(suffix)).copied();
        assert!(find(" volumes/0").unwrap().starts_with('d'), "{text}");
        assert!(find(" volumes/0/link -> sub/file.txt").unwrap().starts_with("lrwxrwxrwx"), "{text}");
        assert!(find(" volumes/0/odd\\nname").is_some(), "{text}");
        let hard = entries.iter().find(|l| l.starts_with('h')).unwrap();
        assert!(hard.contains(" -> volumes/0/"), "{text}");
        let big = find(" volumes/0/big.bin").or_else(|| find(" volumes/0/sub/big-link")).unwrap();
        assert!(big.contains(" 1200000 "), "{text}");
        // 5 files + hard link + link + 3 dirs (2 roots + sub) + volsnap.json
        assert_eq!(entries.len(), 10, "{text}");
    }

    #[test]
    fn list_json_and_yaml() {
        let fx = fixture(Compression::Zstd);
        let mut out = Vec::new();
        archive_list(&fx.archive, OutputFormat::Json, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["manifest"]["snapshot"]["name"], "snap-1");
        assert_eq!(v["manifest"]["volumes"][0]["target"], "/var/lib/app");
        let entries = v["entries"].as_array().unwrap();
        assert_eq!(entries[0]["path"], "volsnap.json");
        assert_eq!(entries[0]["mode"], "0644");
        let link = entries.iter().find(|e| e["kind"] == "symlink").unwrap();
        assert_eq!(link["linkTarget"], "sub/file.txt");
        assert!(entries.iter().all(|e| e["mtime"].as_str().unwrap().ends_with('Z')));

        let mut out = Vec::new();
        archive_list(&fx.archive, OutputFormat::Yaml, &mut out).unwrap();
        let y: Value = serde_yaml_ng::from_slice(&out).unwrap();
        assert_eq!(y, v);
    }

    #[test]
    fn list_damaged_archive_is_an_error() {
        let fx = fixture(Compression::Gzip);
        flip_middle_byte(&fx.archive);
        let mut out = Vec::new();
        let err = archive_list(&fx.archive, OutputFormat::Table, &mut out).unwrap_err();
        assert!(matches!(err, CliError::Archive(_)), "{err}");
        let err = archive_list(&fx.archive, OutputFormat::Json, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, CliError::Archive(_)), "{err}");
        let err = archive_list(Path::new("/nonexistent/x.tar.gz"), OutputFormat::Table, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.tar.gz"), "{err}");
    }

    #[test]
    fn modes() {
        assert_eq!(mode_string(EntryKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(EntryKind::File, 0o644), "-rw-r--r--");
        assert_eq!(mode_string(EntryKind::Symlink, 0o777), "lrwxrwxrwx");
        assert_eq!(mode_string(EntryKind::Hardlink, 0o644), "hrw-r--r--");
        assert_eq!(mode_string(EntryKind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(EntryKind::File, 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string(EntryKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(EntryKind::Dir, 0o1770), "drwxrwx--T");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("plain/name"), "plain/name");
        assert_eq!(escape("a\nb\tc\\d\u{1b}[31m"), "a\\nb\\tc\\\\d\\u{1b}[31m");
    }
}
