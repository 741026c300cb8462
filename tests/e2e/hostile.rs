//! Hostile archives, end to end: every archive is built here byte by byte
//! (raw tar headers, gzip via flate2), then fed to the three places an
//! archive enters volsnap: `volsnap archive verify`, `source.archive`
//! adoption, and restore (a snapshot's archive replaced on disk). Each
//! rejection must name the problem, and nothing outside may change: a
//! sentinel "outside" directory that the hostile links point at is compared
//! byte for byte (listing, content, modes, ctimes), and no `.partial` file
//! or staging directory may be left behind.
//!
//! Cases follow the known extraction bugs of other tools: tar-rs
//! RUSTSEC-2018-0002, -2021-0080, -2026-0067, -2026-0068, node-tar
//! CVE-2021-32803, GNU tar CVE-2025-45582, and Python PEP 706's `data`
//! filter (volsnap deliberately keeps absolute symlinks and setuid bits as
//! data, but never follows a link).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tar::{EntryType, Header};

use crate::util::*;

// ---------------------------------------------------------------------------
// A raw tar builder: writes exactly the headers given, however wrong.

#[derive(Clone)]
struct E {
    name: Vec<u8>,
    kind: u8,
    data: Vec<u8>,
    link: Vec<u8>,
    mode: u32,
    /// Header size field when it must differ from `data.len()`.
    size: Option<u64>,
    /// A GNU header instead of ustar.
    gnu: bool,
}

impl E {
    fn raw(name: &[u8], kind: u8, data: &[u8]) -> E {
        E { name: name.to_vec(), kind, data: data.to_vec(), link: Vec::new(), mode: 0o644, size: None, gnu: false }
    }
    fn mode(mut self, mode: u32) -> E {
        self.mode = mode;
        self
    }
    fn size(mut self, size: u64) -> E {
        self.size = Some(size);
        self
    }
    fn gnu(mut self) -> E {
        self.gnu = true;
        self
    }
    fn header(&self) -> Header {
        let mut h = if self.gnu { Header::new_gnu() } else { Header::new_ustar() };
        assert!(self.name.len() <= 100, "test entry name too long for a raw header");
        h.as_old_mut().name[..self.name.len()].copy_from_slice(&self.name);
        h.set_mode(self.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(self.size.unwrap_or(self.data.len() as u64));
        h.set_entry_type(EntryType::new(self.kind));
        if let Some(g) = h.as_gnu_mut() {
            g.set_real_size(0);
        }
        if !self.link.is_empty() {
            h.set_link_name_literal(&self.link).unwrap();
        }
        h.set_cksum();
        h
    }
}

fn e(name: &str, kind: u8, data: &[u8]) -> E {
    E::raw(name.as_bytes(), kind, data)
}

fn dir(name: &str) -> E {
    e(name, b'5', b"").mode(0o755)
}

fn file(name: &str, data: &[u8]) -> E {
    e(name, b'0', data)
}

fn link(name: &str, kind: u8, target: &str) -> E {
    let mut en = e(name, kind, b"").mode(0o777);
    en.link = target.as_bytes().to_vec();
    en
}

fn symlink_e(name: &str, target: &str) -> E {
    link(name, b'2', target)
}

fn hardlink(name: &str, target: &str) -> E {
    link(name, b'1', target)
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn pax(kind: u8, records: &[(&str, &[u8])]) -> E {
    let mut data = Vec::new();
    for (k, v) in records {
        pax_record(&mut data, k, v);
    }
    E::raw(b"././@PaxHeader", kind, &data)
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for en in entries {
        out.extend_from_slice(en.header().as_bytes());
        out.extend_from_slice(&en.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn zst(data: &[u8]) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn manifest_json(version: u32, volumes: &[(u32, &str)]) -> Vec<u8> {
    let vols: Vec<Value> = volumes
        .iter()
        .map(|(i, n)| serde_json::json!({"index": i, "name": n, "source": format!("/srv/{n}")}))
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "formatVersion": version,
        "snapshot": {"namespace": "default", "name": "elsewhere", "uid": "u1"},
        "creationTimestamp": "2026-01-02T03:04:05Z",
        "volumes": vols,
    }))
    .unwrap()
}

/// A sound archive of volumes `names` (indexes 0, 1, ...), `extra` appended.
fn archive_with(names: &[&str], extra: Vec<E>) -> Vec<E> {
    let vols: Vec<(u32, &str)> = names.iter().enumerate().map(|(i, n)| (i as u32, *n)).collect();
    let mut v = vec![file("volsnap.json", &manifest_json(1, &vols))];
    for (i, _) in &vols {
        v.push(dir(&format!("volumes/{i}/")));
        v.push(file(&format!("volumes/{i}/file"), b"hello"));
    }
    v.extend(extra);
    v
}

/// These tests need no container runtime: keep whatever Docker the host has
/// out of them.
const NO_DOCKER: &[&str] = &["--docker", "off"];

// ---------------------------------------------------------------------------
// The sentinel.

/// A directory the hostile archives aim at. Its fingerprint covers every
/// entry below it (itself included): type, mode, owner, size, mtime, ctime,
/// content or link target. A chmod that was undone still moves the ctime.
struct Outside {
    path: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Outside {
    /// `populated`: a file and a sub-directory inside; otherwise empty.
    fn new(env: &Env, populated: bool) -> Outside {
        let path = env.root.join("outside");
        fs::create_dir(&path).unwrap();
        if populated {
            fs::create_dir(path.join("sub")).unwrap();
            fs::write(path.join("keep"), b"precious\n").unwrap();
            chmod(&path.join("keep"), 0o640);
        }
        chmod(&path, 0o750);
        assert!(path.as_os_str().len() < 90, "outside path too long for ustar link names");
        let before = fingerprint(&path);
        Outside { path, before }
    }

    fn s(&self) -> &str {
        self.path.to_str().unwrap()
    }

    fn assert_unchanged(&self) {
        let after = fingerprint(&self.path);
        let mut diffs = Vec::new();
        for (p, b) in &self.before {
            match after.get(p) {
                None => diffs.push(format!("removed {}", p.display())),
                Some(a) if a != b => diffs.push(format!("changed {}\n    before {b}\n    after  {a}", p.display())),
                _ => {}
            }
        }
        for p in after.keys().filter(|p| !self.before.contains_key(*p)) {
            diffs.push(format!("created {}", p.display()));
        }
        assert!(diffs.is_empty(), "the outside directory changed:\n  {}", diffs.join("\n  "));
    }
}

fn fingerprint(top: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        let content = if md.file_type().is_symlink() {
            format!("-> {:?}", fs::read_link(&p).unwrap())
        } else if md.is_file() {
            sha256_file(&p)
        } else if md.is_dir() {
            for c in fs::read_dir(&p).unwrap() {
                stack.push(c.unwrap().path());
            }
            "dir".into()
        } else {
            "special".into()
        };
        let line = format!(
            "mode {:o} owner {}:{} size {} mtime {}.{} ctime {}.{} {content}",
            md.mode(),
            md.uid(),
            md.gid(),
            md.len(),
            md.mtime(),
            md.mtime_nsec(),
            md.ctime(),
            md.ctime_nsec()
        );
        out.insert(p, line);
    }
    out
}

/// `(mode, owner, size, mtime, ctime)` of a host file (following links).
fn host_file(p: &str) -> Option<String> {
    let md = fs::metadata(p).ok()?;
    Some(format!(
        "{:o} {}:{} {} {} {}.{}",
        md.mode(),
        md.uid(),
        md.gid(),
        md.len(),
        md.mtime(),
        md.ctime(),
        md.ctime_nsec()
    ))
}

/// Nothing temporary may be left: no `.partial` archive, no staging or
/// aside directory of a restore next to any directory under `data`.
fn assert_no_leftovers(env: &Env) {
    let partials = partials_under(&env.state);
    assert!(partials.is_empty(), "partial archives left behind: {partials:?}");
    let mut stack = vec![env.data.clone()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            assert!(
                !name.contains(".volsnap-restore-") && !name.contains(".volsnap-old-"),
                "restore staging left behind: {}",
                entry.path().display()
            );
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(entry.path());
            }
        }
    }
}

fn verify_cli(file: &Path) -> std::process::Output {
    volsnap(&[OsStr::new("archive"), OsStr::new("verify"), file.as_os_str()])
}

/// `volsnap archive verify` must fail and name the problem.
fn assert_verify_rejects(file: &Path, want: &str, case: &str) {
    let out = verify_cli(file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{case}: archive verify accepted a hostile archive: {}", show(&out));
    assert!(stdout.contains("DAMAGED"), "{case}: {}", show(&out));
    assert!(stdout.contains(want), "{case}: verify output lacks {want:?}: {}", show(&out));
}

fn adoption_yaml(name: &str, path: &Path) -> String {
    format!(
        "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata:\n  name: {name}\nspec:\n  source:\n    archive:\n      path: {}\n",
        q(path.to_str().unwrap())
    )
}

fn restore_yaml(name: &str, snapshot: &str, target: Option<&Path>) -> String {
    let mut y = format!(
        "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeRestore\nmetadata:\n  name: {name}\nspec:\n  snapshotName: {snapshot}\n"
    );
    if let Some(t) = target {
        y.push_str(&format!("  targetPath: {}\n  quiesce: None\n", q(t.to_str().unwrap())));
    }
    y
}

fn message_of(obj: &Value, ty: &str) -> String {
    cond(obj, ty).2
}

// ---------------------------------------------------------------------------
// 1. verify and adoption.

/// A hostile archive and a piece of the message that must name its problem.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    want: String,
}

fn case(name: &'static str, entries: Vec<E>, want: &str) -> Case {
    Case { name, bytes: gz(&tar_of(&entries)), want: want.into() }
}

fn adoption_cases(out: &str) -> Vec<Case> {
    let with = |extra: Vec<E>| archive_with(&["data", "conf"], extra);
    let via_symlink = "is a symlink entry, not a directory";
    // A pax size of 0 on an entry whose ustar size covers a hidden header.
    let hidden = tar_of(&[file("volumes/0/../../outside/smuggled", b"pwned")]);
    let hidden = hidden[..hidden.len() - 1024].to_vec();
    let hidden_len = hidden.len() as u64;
    let sound = gz(&tar_of(&with(vec![file("volumes/0/big", &random_bytes(300_000, 5))])));
    let mut corrupted = sound.clone();
    corrupted[sound.len() / 2] ^= 0x55;
    let mut manifest_first_missing = with(vec![]);
    manifest_first_missing.remove(0);
    let mut bad_json = with(vec![]);
    bad_json[0] = file("volsnap.json", b"{\"formatVersion\": 1, \"volumes\": [");
    let mut v2 = with(vec![]);
    v2[0] = file("volsnap.json", &manifest_json(2, &[(0, "data"), (1, "conf")]));
    vec![
        // Traversal, absolute names.
        case("dotdot", with(vec![file("volumes/0/../../outside/pwned", b"x")]), "name contains a '..' component"),
        case("absolute", with(vec![file(&format!("{out}/pwned"), b"x")]), "absolute name"),
        case("absolute /etc", with(vec![file("/etc/volsnap-hostile-e2e", b"x")]), "absolute name"),
        // RUSTSEC-2018-0002.
        case(
            "write through a symlink",
            with(vec![symlink_e("volumes/0/l", out), file("volumes/0/l/pwned", b"x")]),
            via_symlink,
        ),
        // RUSTSEC-2021-0080.
        case(
            "directory through a symlink",
            with(vec![symlink_e("volumes/0/l", out), dir("volumes/0/l/newdir/")]),
            via_symlink,
        ),
        // RUSTSEC-2026-0067.
        case(
            "chmod through a symlink",
            with(vec![symlink_e("volumes/0/d", out), dir("volumes/0/d/").mode(0o777)]),
            "duplicate entry \"volumes/0/d/\"",
        ),
        // RUSTSEC-2026-0068.
        case(
            "pax size smuggling",
            with(vec![
                pax(b'x', &[("size", b"0")]),
                E::raw(b"volumes/0/a", b'0', &hidden).size(hidden_len),
                file("volumes/0/b", b"x"),
            ]),
            &format!("pax size 0 disagrees with the header size {hidden_len}"),
        ),
        // node-tar CVE-2021-32803.
        case(
            "directory replaced by a symlink",
            with(vec![dir("volumes/0/a/"), symlink_e("volumes/0/a", out), file("volumes/0/a/x", b"x")]),
            "duplicate entry \"volumes/0/a\"",
        ),
        // Hard links.
        case(
            "hard link into another volume",
            with(vec![hardlink("volumes/0/h", "volumes/1/file")]),
            "the target is outside the link's volume",
        ),
        case(
            "hard link to an absolute path",
            with(vec![hardlink("volumes/0/h", &format!("{out}/keep"))]),
            "unsafe target: absolute name",
        ),
        case(
            "hard link with ..",
            with(vec![hardlink("volumes/0/h", "volumes/0/../../outside/keep")]),
            "unsafe target: name contains a '..' component",
        ),
        case(
            "hard link before its target",
            with(vec![hardlink("volumes/0/h", "volumes/0/later"), file("volumes/0/later", b"x")]),
            "the target is not an earlier entry",
        ),
        case(
            "hard link to a symlink",
            with(vec![symlink_e("volumes/0/s", &format!("{out}/keep")), hardlink("volumes/0/h", "volumes/0/s")]),
            "the target is a symlink, not a regular file",
        ),
        case(
            "hard link to a directory",
            with(vec![dir("volumes/0/sub/"), hardlink("volumes/0/h", "volumes/0/sub")]),
            "the target is a directory, not a regular file",
        ),
        // Entry types.
        case("character device", with(vec![e("volumes/0/dev", b'3', b"")]), "is a character device"),
        case("block device", with(vec![e("volumes/0/dev", b'4', b"")]), "is a block device"),
        case("FIFO", with(vec![e("volumes/0/fifo", b'6', b"")]), "is a FIFO"),
        case("GNU sparse", with(vec![e("volumes/0/sparse", b'S', b"").gnu()]), "is a GNU sparse file"),
        case("contiguous", with(vec![e("volumes/0/c", b'7', b"x")]), "is a contiguous file"),
        case("pax global header", with(vec![pax(b'g', &[("comment", b"hi")])]), "is a pax global header"),
        // Manifest and indexes.
        case("unknown volume index", with(vec![file("volumes/7/x", b"x")]), "volume index 7"),
        case("no manifest", manifest_first_missing, "the first entry must be the file volsnap.json"),
        case("malformed manifest", bad_json, "invalid volsnap.json"),
        case("formatVersion 2", v2, "format version 2 is not supported"),
        // Duplicates.
        case("same file twice", with(vec![file("volumes/0/file", b"again")]), "duplicate entry \"volumes/0/file\""),
        case("file then directory", with(vec![dir("volumes/0/file/")]), "duplicate entry \"volumes/0/file/\""),
        // Damage.
        Case { name: "truncated", bytes: sound[..sound.len() / 2].to_vec(), want: "archive is truncated".into() },
        Case { name: "corrupted byte", bytes: corrupted, want: "archive is corrupt".into() },
        Case { name: "not gzip or zstd", bytes: b"just text, no archive".to_vec(), want: "not gzip or zstd".into() },
        // The zstd path goes through the same walker.
        Case {
            name: "zstd: write through a symlink",
            bytes: zst(&tar_of(&with(vec![symlink_e("volumes/0/l", out), file("volumes/0/l/pwned", b"x")]))),
            want: via_symlink.into(),
        },
    ]
}

#[test]
fn hostile_archives_fail_verify_and_adoption() {
    let env = Env::new();
    let outside = Outside::new(&env, true);
    let incoming = env.data_dir("incoming");
    let cases = adoption_cases(outside.s());
    let mut files = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let ext = if c.bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) { "tar.zst" } else { "tar.gz" };
        let p = incoming.join(format!("case-{i}.{ext}"));
        fs::write(&p, &c.bytes).unwrap();
        files.push(p);
    }
    // (a) verify names the problem.
    for (c, p) in cases.iter().zip(&files) {
        assert_verify_rejects(p, &c.want, c.name);
    }
    // A control: the same builder's sound archive passes, so the rejections
    // above are about the hostile entries.
    let control = incoming.join("control.tar.gz");
    fs::write(&control, gz(&tar_of(&archive_with(&["data", "conf"], vec![])))).unwrap();
    let out = verify_cli(&control);
    assert!(out.status.success(), "the control archive must verify: {}", show(&out));

    // (b) adoption of each, all in one daemon run.
    for (i, f) in files.iter().enumerate() {
        env.write_manifest(&format!("adopt-{i}.yaml"), &adoption_yaml(&format!("adopt-{i}"), f));
    }
    env.write_manifest("control.yaml", &adoption_yaml("control", &control));
    let out = env.run_once(NO_DOCKER);
    assert_eq!(out.status.code(), Some(1), "failed adoptions make --once exit 1: {}", show(&out));
    for (i, c) in cases.iter().enumerate() {
        let name = format!("adopt-{i}");
        let obj = env.status(SNAPSHOTS, &name).unwrap_or_else(|| panic!("{}: no status: {}", c.name, show(&out)));
        let (st, reason, msg) = cond(&obj, "Ready");
        env.check(phase(&obj) == "Failed", &format!("{}: adoption must fail", c.name), &obj);
        env.check(
            st == "False" && reason == "ArchiveInvalid",
            &format!("{}: Ready False ArchiveInvalid", c.name),
            &obj,
        );
        env.check(msg.contains(&c.want), &format!("{}: message must contain {:?}", c.name, c.want), &obj);
        env.check(msg.contains("Nothing was adopted"), &format!("{}: message says nothing was adopted", c.name), &obj);
        env.check(obj["status"]["archive"].is_null(), &format!("{}: no status.archive", c.name), &obj);
        // The original is never modified.
        assert_eq!(fs::read(&files[i]).unwrap(), c.bytes, "{}: the original file changed", c.name);
    }
    let obj = env.status(SNAPSHOTS, "control").unwrap();
    env.check(phase(&obj) == "Completed" && cond(&obj, "Ready").1 == "Adopted", "the control is adopted", &obj);

    // (c) nothing written outside, nothing half-written in the store: the
    // only archive is the control's (and its checksum file).
    outside.assert_unchanged();
    assert!(!Path::new("/etc/volsnap-hostile-e2e").exists());
    assert_no_leftovers(&env);
    let mut stored: Vec<PathBuf> = non_dirs_under(&env.archives());
    stored.sort();
    assert_eq!(
        stored,
        vec![PathBuf::from("default/control.tar.gz"), PathBuf::from("default/control.tar.gz.sha256")],
        "only the control may be stored"
    );
}

// ---------------------------------------------------------------------------
// 2. Restore from a snapshot whose archive was replaced on disk.

/// Streams a zstd archive (one frame, content checksum) of volume `data`
/// holding one file of `size` zero bytes: a few KiB on disk. zstd rather
/// than gzip because the debug build's inflate runs at a few MB/s, which
/// would make `archive verify` of the bomb take half a minute.
fn write_bomb(path: &Path, size: u64) {
    let out = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut enc = zstd::stream::write::Encoder::new(out, 3).unwrap();
    enc.include_checksum(true).unwrap();
    let mut head = tar_of(&archive_with(&["data"], vec![]));
    head.truncate(head.len() - 1024);
    head.extend_from_slice(E::raw(b"volumes/0/zeros", b'0', b"").size(size).header().as_bytes());
    enc.write_all(&head).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        enc.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    let pad = (512 - size % 512) % 512;
    enc.write_all(&vec![0u8; pad as usize + 1024]).unwrap();
    enc.finish().unwrap().flush().unwrap();
}

/// What replaces a snapshot's archive.
enum Replacement {
    /// Nothing: the control, which must restore.
    Keep,
    /// These (compressed) bytes.
    Bytes(Vec<u8>),
    /// [`write_bomb`].
    Bomb(u64),
    /// A symlink to an identical copy of the archive (outside the store):
    /// the checksum would match, the store's no-symlink rule must refuse it.
    SymlinkToCopy,
    /// A FIFO: opening it for reading would block forever.
    Fifo,
}

struct Replaced {
    name: &'static str,
    replacement: Replacement,
    /// The snapshot is taken with `compression: zstd`.
    zstd: bool,
    /// Into `targetPath` rather than over the live data.
    new_directory: bool,
    reason: &'static str,
    want: &'static str,
    /// What `archive verify` says (with the snapshot's checksum file).
    verify_want: &'static str,
}

#[test]
fn replaced_archives_fail_restore_and_leave_everything_as_it_was() {
    let env = Env::new();
    let outside = Outside::new(&env, true);
    let out = outside.s().to_string();
    let data = |extra: Vec<E>| tar_of(&archive_with(&["data"], extra));
    let via_symlink = "is a symlink entry, not a directory";
    let hostile = |name, tar: Vec<u8>, zstd, new_directory, want| Replaced {
        name,
        replacement: Replacement::Bytes(if zstd { zst(&tar) } else { gz(&tar) }),
        zstd,
        new_directory,
        reason: "ArchiveInvalid",
        want,
        verify_want: want,
    };
    let truncated = gz(&data(vec![file("volumes/0/big", &random_bytes(200_000, 9))]));
    let cases = vec![
        Replaced {
            name: "control",
            replacement: Replacement::Keep,
            zstd: false,
            new_directory: false,
            reason: "Restored",
            want: "Restored 1 volume(s)",
            verify_want: "",
        },
        hostile(
            "write through a symlink",
            data(vec![symlink_e("volumes/0/l", &out), file("volumes/0/l/pwned", b"x")]),
            false,
            false,
            via_symlink,
        ),
        hostile(
            "write through a symlink (zstd)",
            data(vec![symlink_e("volumes/0/l", "../outside"), file("volumes/0/l/pwned", b"x")]),
            true,
            true,
            via_symlink,
        ),
        hostile(
            "directory through a symlink",
            data(vec![symlink_e("volumes/0/l", &out), dir("volumes/0/l/newdir/").mode(0o777)]),
            false,
            true,
            via_symlink,
        ),
        hostile(
            "chmod through a symlink",
            data(vec![symlink_e("volumes/0/d", &out), dir("volumes/0/d/").mode(0o777)]),
            false,
            false,
            "duplicate entry",
        ),
        hostile(
            "directory replaced by a symlink",
            data(vec![dir("volumes/0/a/"), symlink_e("volumes/0/a", &out), file("volumes/0/a/x", b"x")]),
            false,
            true,
            "duplicate entry",
        ),
        hostile("dotdot", data(vec![file("volumes/0/../../outside/pwned", b"x")]), false, true, "'..' component"),
        hostile(
            "hard link to an absolute path",
            data(vec![hardlink("volumes/0/h", &format!("{out}/keep"))]),
            false,
            false,
            "unsafe target",
        ),
        hostile("FIFO", data(vec![e("volumes/0/fifo", b'6', b"")]), false, true, "is a FIFO"),
        Replaced {
            name: "truncated",
            replacement: Replacement::Bytes(truncated[..truncated.len() / 2].to_vec()),
            zstd: false,
            new_directory: false,
            reason: "ArchiveInvalid",
            want: "truncated",
            verify_want: "truncated",
        },
        Replaced {
            name: "decompression bomb",
            // Far above the restore's cap for a tiny snapshot (its bytes + 1/8 + 64 MiB).
            replacement: Replacement::Bomb(200 << 20),
            zstd: true,
            new_directory: false,
            reason: "ArchiveInvalid",
            want: "decompression bomb",
            // verify has no expansion cap (it writes nothing): it reads the
            // 200 MiB through and then finds the checksum wrong.
            verify_want: "checksum mismatch",
        },
        Replaced {
            name: "archive replaced by a symlink to an identical copy",
            replacement: Replacement::SymlinkToCopy,
            zstd: false,
            new_directory: false,
            reason: "ArchiveInvalid",
            want: "is a symbolic link",
            verify_want: "",
        },
        Replaced {
            name: "archive replaced by a FIFO",
            replacement: Replacement::Fifo,
            zstd: false,
            new_directory: true,
            reason: "ArchiveInvalid",
            want: "is not a regular file",
            verify_want: "",
        },
        Replaced {
            name: "different but sound archive",
            replacement: Replacement::Bytes(gz(&data(vec![file("volumes/0/planted", b"not what was captured")]))),
            zstd: false,
            new_directory: true,
            reason: "ChecksumMismatch",
            want: "checksum mismatch",
            verify_want: "checksum mismatch",
        },
    ];

    // One tiny live directory and one Completed snapshot per case.
    let mut lives = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let live = env.data_dir(&format!("live-{i}"));
        fs::write(live.join("current.txt"), format!("live data {i}\n")).unwrap();
        set_mtime(&live.join("current.txt"), 1_500_000_000);
        let extra = if c.zstd { "  compression: zstd\n" } else { "" };
        env.write_manifest(&format!("snap-{i}.yaml"), &snapshot_yaml(&format!("snap-{i}"), &[("data", &live)], extra));
        lives.push(live);
    }
    let run = env.run_once(NO_DOCKER);
    assert!(run.status.success(), "the snapshots must complete: {}", show(&run));

    // Replace the archives (their checksum files stay).
    for (i, c) in cases.iter().enumerate() {
        let obj = env.status(SNAPSHOTS, &format!("snap-{i}")).unwrap();
        env.check(phase(&obj) == "Completed", "snapshot Completed", &obj);
        let archive = PathBuf::from(obj["status"]["archive"]["path"].as_str().unwrap());
        match &c.replacement {
            Replacement::Keep => continue,
            Replacement::Bytes(b) => fs::write(&archive, b).unwrap(),
            Replacement::Bomb(size) => {
                write_bomb(&archive, *size);
                assert!(fs::metadata(&archive).unwrap().len() < 1 << 20, "the bomb must be small on disk");
            }
            Replacement::SymlinkToCopy => {
                let copy = env.root.join(format!("copy-of-snap-{i}"));
                fs::copy(&archive, &copy).unwrap();
                fs::remove_file(&archive).unwrap();
                symlink(&copy, &archive).unwrap();
                continue;
            }
            Replacement::Fifo => {
                fs::remove_file(&archive).unwrap();
                mkfifo(&archive);
                continue;
            }
        }
        // (a) verify, against the snapshot's checksum file.
        assert_verify_rejects(&archive, c.verify_want, c.name);
    }
    let trees: Vec<Tree> = lives.iter().map(|l| scan_tree(l)).collect();
    let targets: Vec<PathBuf> = (0..cases.len()).map(|i| env.data.join(format!("target-{i}"))).collect();

    // (b) one restore per case, all in one daemon run.
    for (i, c) in cases.iter().enumerate() {
        let target = c.new_directory.then_some(targets[i].as_path());
        env.write_manifest(
            &format!("restore-{i}.yaml"),
            &restore_yaml(&format!("restore-{i}"), &format!("snap-{i}"), target),
        );
    }
    let run = env.run_once(NO_DOCKER);
    assert_eq!(run.status.code(), Some(1), "failed restores make --once exit 1: {}", show(&run));

    for (i, c) in cases.iter().enumerate() {
        let obj = env.status(RESTORES, &format!("restore-{i}")).unwrap();
        let (st, reason, msg) = cond(&obj, "Succeeded");
        if matches!(c.replacement, Replacement::Keep) {
            env.check(phase(&obj) == "Completed" && st == "True", "the control restore completes", &obj);
            env.check(msg.contains(c.want), "the control restore says what it did", &obj);
            assert_eq!(scan_tree(&lives[i]).entries, trees[i].entries, "the control restores the same data");
            continue;
        }
        env.check(phase(&obj) == "Failed", &format!("{}: restore must fail", c.name), &obj);
        env.check(st == "False" && reason == c.reason, &format!("{}: Succeeded False {}", c.name, c.reason), &obj);
        env.check(msg.contains(c.want), &format!("{}: message must contain {:?}", c.name, c.want), &obj);
        env.check(
            msg.contains("the live data was not touched") || msg.contains("nothing was touched"),
            &format!("{}: the message says nothing was touched", c.name),
            &obj,
        );
        if matches!(c.replacement, Replacement::SymlinkToCopy | Replacement::Fifo) {
            // The start-up sweep already refused the file as the snapshot's
            // archive (the store never follows a symlink or opens a FIFO).
            let snap = env.status(SNAPSHOTS, &format!("snap-{i}")).unwrap();
            let (_, why, snap_msg) = cond(&snap, "Ready");
            env.check(phase(&snap) == "Failed" && why == "ArchiveMissing", "snapshot Failed ArchiveMissing", &snap);
            env.check(snap_msg.contains("is refused"), "the snapshot says the file is refused, not missing", &snap);
        }
        if c.name == "decompression bomb" {
            env.check(msg.contains("limit of"), "the bomb message names the limit", &obj);
        }
        // The live directory is exactly as it was; nothing new appeared.
        let now = scan_tree(&lives[i]);
        assert_eq!(now.entries, trees[i].entries, "{}: the live data changed", c.name);
        assert!(!targets[i].exists(), "{}: the target directory must not be created", c.name);
        assert!(
            env.status(SNAPSHOTS, &format!("restore-{i}-pre-restore")).is_none(),
            "{}: no pre-restore snapshot for a restore that never swapped",
            c.name
        );
    }
    // (c)
    outside.assert_unchanged();
    assert_no_leftovers(&env);
}

// ---------------------------------------------------------------------------
// 3. GNU tar CVE-2025-45582: the first archive plants a symlink, the second
// writes through it.

#[test]
fn two_archive_symlink_attack_does_not_write_through() {
    let env = Env::new();
    let outside = Outside::new(&env, false);
    let live = env.data_dir("app");
    fs::write(live.join("file"), b"v1\n").unwrap();

    // Snapshot B: `l/` is a real directory holding `x`.
    fs::create_dir(live.join("l")).unwrap();
    fs::write(live.join("l/x"), b"from snapshot B\n").unwrap();
    env.write_manifest("b.yaml", &snapshot_yaml("snap-b", &[("app", &live)], ""));
    let run = env.run_once(NO_DOCKER);
    assert!(run.status.success(), "{}", show(&run));

    // Snapshot A: `l` is a symlink to the outside directory (legitimate data).
    fs::remove_dir_all(live.join("l")).unwrap();
    symlink(&outside.path, live.join("l")).unwrap();
    env.write_manifest("a.yaml", &snapshot_yaml("snap-a", &[("app", &live)], ""));
    let run = env.run_once(NO_DOCKER);
    assert!(run.status.success(), "{}", show(&run));
    let listed = tar_list(&env.archive_path("snap-a", "tar.gz"));
    assert!(listed.iter().any(|l| l == "volumes/0/l"), "snapshot A holds the symlink: {listed:?}");

    // Restore A in place (after some change), so the live `l` is the symlink
    // restored from the archive.
    fs::remove_file(live.join("l")).unwrap();
    fs::write(live.join("file"), b"changed\n").unwrap();
    env.write_manifest("ra.yaml", &restore_yaml("restore-a", "snap-a", None));
    let run = env.run_once(NO_DOCKER);
    assert!(run.status.success(), "{}", show(&run));
    let obj = env.status(RESTORES, "restore-a").unwrap();
    env.check(phase(&obj) == "Completed", "restore A completes", &obj);
    assert_eq!(fs::read_link(live.join("l")).unwrap(), outside.path, "restore A brought the symlink back");
    assert_eq!(fs::read(live.join("file")).unwrap(), b"v1\n");
    outside.assert_unchanged();

    // Restore B over it: `volumes/0/l/x` must land in a real directory `l`,
    // never through the symlink into the outside directory.
    env.write_manifest("rb.yaml", &restore_yaml("restore-b", "snap-b", None));
    let run = env.run_once(NO_DOCKER);
    assert!(run.status.success(), "{}", show(&run));
    let obj = env.status(RESTORES, "restore-b").unwrap();
    env.check(phase(&obj) == "Completed", "restore B completes", &obj);
    let md = fs::symlink_metadata(live.join("l")).unwrap();
    assert!(md.is_dir(), "l must now be a real directory, not {:?}", md.file_type());
    assert_eq!(fs::read(live.join("l/x")).unwrap(), b"from snapshot B\n");
    assert_eq!(fs::read_dir(&outside.path).unwrap().count(), 0, "the outside directory must stay empty");
    outside.assert_unchanged();
    assert_no_leftovers(&env);
}

// ---------------------------------------------------------------------------
// 4. PEP 706 `data` filter cases volsnap keeps as data (links; not setuid bits
// from foreign archives).

#[test]
fn absolute_and_escaping_symlinks_and_setuid_are_restored_as_data() {
    let env = Env::new();
    let outside = Outside::new(&env, true);
    let incoming = env.data_dir("incoming");
    let archive = incoming.join("elsewhere.tar.gz");
    let entries = archive_with(
        &["data"],
        vec![
            symlink_e("volumes/0/abs", "/etc/passwd"),
            symlink_e("volumes/0/out", outside.s()),
            symlink_e("volumes/0/up", "../../../outside/keep"),
            symlink_e("volumes/0/outdir", "../../outside/sub"),
            file("volumes/0/suid", b"#!/bin/sh\n").mode(0o4755),
            dir("volumes/0/open/").mode(0o1777),
            hardlink("volumes/0/open/hard", "volumes/0/file"),
        ],
    );
    fs::write(&archive, gz(&tar_of(&entries))).unwrap();
    let out = verify_cli(&archive);
    assert!(out.status.success(), "a sound archive with outward symlinks verifies: {}", show(&out));
    let passwd = host_file("/etc/passwd");

    let target = env.data.join("restored");
    env.write_manifest("adopt.yaml", &adoption_yaml("adopted", &archive));
    env.write_manifest("restore.yaml", &restore_yaml("back", "adopted", Some(&target)));
    let run = env.run_once(NO_DOCKER);
    assert!(run.status.success(), "{}", show(&run));
    let obj = env.status(SNAPSHOTS, "adopted").unwrap();
    env.check(phase(&obj) == "Completed" && cond(&obj, "Ready").1 == "Adopted", "adopted", &obj);
    let obj = env.status(RESTORES, "back").unwrap();
    env.check(phase(&obj) == "Completed", &format!("restore completes: {}", message_of(&obj, "Succeeded")), &obj);

    let root = target.join("data");
    for (rel, want) in [
        ("abs", PathBuf::from("/etc/passwd")),
        ("out", outside.path.clone()),
        ("up", PathBuf::from("../../../outside/keep")),
        ("outdir", PathBuf::from("../../outside/sub")),
    ] {
        let md = fs::symlink_metadata(root.join(rel)).unwrap();
        assert!(md.file_type().is_symlink(), "{rel} must be restored as a symlink");
        assert_eq!(fs::read_link(root.join(rel)).unwrap(), want, "{rel}");
    }
    // Unlike the links, a setuid bit from an archive made elsewhere is not
    // restored (see adopted_archive_cannot_plant_setuid_root_file).
    let md = fs::symlink_metadata(root.join("suid")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o755, "no setuid from a foreign archive");
    assert_eq!(fs::symlink_metadata(root.join("open")).unwrap().mode() & 0o7777, 0o1777);
    let (f, h) = (fs::metadata(root.join("file")).unwrap(), fs::metadata(root.join("open/hard")).unwrap());
    assert_eq!(f.ino(), h.ino(), "the hard link is restored inside the volume");
    assert_eq!(host_file("/etc/passwd"), passwd, "nothing was read or written through the absolute link");
    outside.assert_unchanged();
    assert_no_leftovers(&env);
    // The adopted copy is the original, byte for byte.
    let stored =
        PathBuf::from(env.status(SNAPSHOTS, "adopted").unwrap()["status"]["archive"]["path"].as_str().unwrap());
    assert_eq!(sha256_file(&stored), sha256_file(&archive));
}

/// `archive verify` takes any path; a FIFO must be reported, not block the
/// command forever in open(2) waiting for a writer.
#[test]
fn verify_of_a_fifo_fails_instead_of_hanging() {
    let env = Env::new();
    let fifo = env.root.join("archive.tar.gz");
    mkfifo(&fifo);
    let out = run_bounded(
        std::process::Command::new(BIN).arg("archive").arg("verify").arg(&fifo),
        std::time::Duration::from_secs(20),
    );
    assert!(!out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DAMAGED"), "{}", show(&out));
}

// ---------------------------------------------------------------------------
// 5. Names no file system can hold, and archives volsnap cannot decode.

/// A component of 256 bytes (NAME_MAX is 255) or a symlink target of 4096
/// bytes (PATH_MAX) cannot be created on any Linux file system: verify (and
/// so adoption and restore, which share its walker) must refuse the archive
/// with a message naming the limit, rather than accept it and have an
/// extraction fail half-way. 255 bytes is fine.
#[test]
fn verify_refuses_names_no_file_system_can_hold() {
    let env = Env::new();
    let long_name = |n: usize| format!("volumes/0/{}", "n".repeat(n));
    let cases: Vec<(&str, Vec<E>, &str)> = vec![
        (
            "256-byte component",
            vec![pax(b'x', &[("path", long_name(256).as_bytes())]), file("volumes/0/short", b"x")],
            "name has a component of 256 bytes; no Linux file system holds names longer than 255 bytes (NAME_MAX)",
        ),
        (
            "256-byte directory component",
            vec![pax(b'x', &[("path", format!("{}/inner", long_name(300)).as_bytes())]), file("volumes/0/short", b"x")],
            "component of 300 bytes",
        ),
        (
            "4096-byte symlink target",
            vec![pax(b'x', &[("linkpath", "t".repeat(4096).as_bytes())]), symlink_e("volumes/0/l", "t")],
            "symlink target of 4096 bytes; Linux holds at most 4095 (PATH_MAX)",
        ),
    ];
    for (i, (name, extra, want)) in cases.into_iter().enumerate() {
        let p = env.root.join(format!("case-{i}.tar.gz"));
        fs::write(&p, gz(&tar_of(&archive_with(&["data"], extra)))).unwrap();
        assert_verify_rejects(&p, want, name);
    }
    // The limits themselves are accepted.
    let ok = env.root.join("ok.tar.gz");
    let extra = vec![
        pax(b'x', &[("path", long_name(255).as_bytes())]),
        file("volumes/0/short", b"x"),
        pax(b'x', &[("linkpath", "t".repeat(4095).as_bytes())]),
        symlink_e("volumes/0/l", "t"),
    ];
    fs::write(&ok, gz(&tar_of(&archive_with(&["data"], extra)))).unwrap();
    let out = verify_cli(&ok);
    assert!(out.status.success(), "255-byte names and 4095-byte targets are valid: {}", show(&out));
}

/// `zstd --long=31` archives need a 2 GiB decoder window. volsnap keeps its
/// window cap (memory stays bounded) but must say that, not "corrupt".
#[test]
fn zstd_long_window_archive_is_explained_not_called_corrupt() {
    if !have("zstd") {
        return skip("zstd_long_window_archive_is_explained_not_called_corrupt", "no zstd command");
    }
    let env = Env::new();
    let tar = env.root.join("a.tar");
    fs::write(&tar, tar_of(&archive_with(&["data"], vec![file("volumes/0/big", &random_bytes(100_000, 3))]))).unwrap();
    let archive = env.root.join("a.tar.zst");
    // From stdin: the size is unknown, so zstd keeps the whole 2 GiB window.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -q --long=31 -c < {} > {}", tar.display(), archive.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let out = verify_cli(&archive);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(!text.contains("corrupt"), "a sound archive must not be called corrupt: {}", show(&out));
    assert!(text.contains("needs a 2048 MiB window"), "{}", show(&out));
    assert!(text.contains("at most a 32 MiB window"), "{}", show(&out));
    assert!(text.contains("--long"), "the message says how it was made and what to do: {}", show(&out));
    // The same data with a normal window verifies.
    let plain = env.root.join("b.tar.zst");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -q -19 -c < {} > {}", tar.display(), plain.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let out = verify_cli(&plain);
    assert!(out.status.success(), "{}", show(&out));
}

// ---------------------------------------------------------------------------
// 6. Privileges in archives made elsewhere.

/// `security.capability` v2 with `cap_net_bind_service` permitted and
/// effective: what `setcap cap_net_bind_service+ep` writes.
const CAP_NET_BIND_SERVICE: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn lgetxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::lgetxattr(p, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Adopts `entries` as snapshot `adopted`, restores it into a new directory
/// and returns (the restore's status, the restored volume root).
fn adopt_and_restore(env: &Env, entries: Vec<E>) -> (Value, PathBuf) {
    let incoming = env.data_dir("incoming");
    let archive = incoming.join("elsewhere.tar.gz");
    fs::write(&archive, gz(&tar_of(&archive_with(&["data"], entries)))).unwrap();
    let out = verify_cli(&archive);
    assert!(out.status.success(), "the archive is sound: {}", show(&out));
    let target = env.data.join("restored");
    env.write_manifest("adopt.yaml", &adoption_yaml("adopted", &archive));
    env.write_manifest("restore.yaml", &restore_yaml("back", "adopted", Some(&target)));
    let run = env.run_once(NO_DOCKER);
    assert!(run.status.success(), "{}", show(&run));
    let obj = env.status(RESTORES, "back").unwrap();
    env.check(phase(&obj) == "Completed", "the restore completes", &obj);
    (obj, target.join("data"))
}

/// An archive made elsewhere saying `uid 0, mode 4755` (and a setgid file,
/// and a setuid file in a sub-directory) passes verification, but must not
/// come back as a setuid-root program: the bits are dropped, and the
/// restore's message says so with a count and an example. The sticky bit
/// and ordinary modes stay.
#[test]
fn adopted_archive_cannot_plant_setuid_root_file() {
    if !is_root() {
        return skip("adopted_archive_cannot_plant_setuid_root_file", "needs root (owners are only restored as root)");
    }
    let env = Env::new();
    let (obj, root) = adopt_and_restore(
        &env,
        vec![
            file("volumes/0/rootshell", b"#!/bin/sh\n").mode(0o4755),
            file("volumes/0/groupshell", b"#!/bin/sh\n").mode(0o2755),
            dir("volumes/0/bin/").mode(0o1777),
            file("volumes/0/bin/su", b"#!/bin/sh\n").mode(0o6711),
            file("volumes/0/plain", b"x").mode(0o640),
        ],
    );
    for (rel, want) in
        [("rootshell", 0o755), ("groupshell", 0o755), ("bin/su", 0o711), ("plain", 0o640), ("bin", 0o1777)]
    {
        let md = fs::symlink_metadata(root.join(rel)).unwrap();
        assert_eq!(md.mode() & 0o7777, want, "{rel}");
    }
    assert_eq!(fs::metadata(root.join("rootshell")).unwrap().uid(), 0, "owners are still restored");
    let msg = message_of(&obj, "Succeeded");
    env.check(
        msg.contains("setuid/setgid bits") && msg.contains("not restored on 3 file(s), e.g. data/"),
        "the message counts what was dropped and names an example",
        &obj,
    );
}

/// File capabilities are privileges too: `security.capability` (and every
/// other `security.*` / `trusted.*` attribute) from an archive made
/// elsewhere is not restored; `user.*` attributes are.
#[test]
fn adopted_archive_file_capabilities_are_dropped() {
    if !is_root() {
        return skip("adopted_archive_file_capabilities_are_dropped", "needs root to set capabilities");
    }
    let env = Env::new();
    let (obj, root) = adopt_and_restore(
        &env,
        vec![
            pax(b'x', &[("SCHILY.xattr.security.capability", &CAP_NET_BIND_SERVICE[..])]),
            file("volumes/0/ping", b"\x7fELF").mode(0o755),
            pax(b'x', &[("SCHILY.xattr.trusted.overlay.opaque", b"y"), ("SCHILY.xattr.user.note", b"kept")]),
            dir("volumes/0/layer/"),
        ],
    );
    assert_eq!(lgetxattr(&root.join("ping"), "security.capability"), None, "no capability from a foreign archive");
    assert_eq!(lgetxattr(&root.join("layer"), "trusted.overlay.opaque"), None);
    assert_eq!(lgetxattr(&root.join("layer"), "user.note").as_deref(), Some(&b"kept"[..]), "user.* is data");
    let msg = message_of(&obj, "Succeeded");
    env.check(
        msg.contains("file capabilities") && msg.contains("on 2 file(s)") && msg.contains("e.g. data/"),
        "the message counts the dropped capabilities",
        &obj,
    );
}
