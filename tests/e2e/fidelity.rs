//! What a capture keeps and a restore gives back beyond file content:
//! extended attributes (user, trusted, security, POSIX ACLs, capabilities)
//! in the form GNU tar `--xattrs` reads, setuid files captured from the
//! host, sparse files, and the walk staying on the volume's file system.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::restore::restore_yaml;
use crate::util::*;

const NO_DOCKER: &[&str] = &["--docker", "off"];

/// `security.capability` v2: `cap_net_bind_service+ep`.
const CAP_NET_BIND_SERVICE: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// A POSIX ACL in the kernel's xattr form (version 2, then tag, perm, id):
/// `user::rw-, user:1234:r--, group::r--, mask::r--, other::---`.
fn acl(extra_user: u32, other: u16) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in
        [(1u16, 6u16, u32::MAX), (2, 4, extra_user), (4, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, other, u32::MAX)]
    {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn setx(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {} {name}: {e}", p.display()));
}

/// Extended attributes: (name, value), sorted by name.
type Attrs = Vec<(String, Vec<u8>)>;

/// Every extended attribute of `p` (not following a symlink), sorted.
fn xattrs(p: &Path) -> Attrs {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut names[..]).unwrap();
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8(name.to_vec()).unwrap();
        let mut v = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).unwrap();
        v.truncate(len);
        out.push((name, v));
    }
    out.sort();
    out
}

fn archive_of(obj: &Value) -> PathBuf {
    PathBuf::from(obj["status"]["archive"]["path"].as_str().unwrap())
}

fn reason_message(obj: &Value, ty: &str) -> (String, String) {
    let (_, reason, msg) = cond(obj, ty);
    (reason, msg)
}

/// Attributes of every namespace volsnap keeps, on files and directories,
/// binary values included (a newline, a NUL, a `%` and `=` in a name), come
/// back from a restore exactly, and GNU tar sees the same ones: `tar
/// --xattrs -tvv` lists them and `tar --xattrs --xattrs-include='*' -x`
/// sets them.
#[test]
fn xattrs_round_trip_and_gnu_tar_reads_them() {
    if !is_root() {
        return skip("xattrs_round_trip_and_gnu_tar_reads_them", "needs root for trusted.* and security.*");
    }
    let env = Env::new();
    let live = env.data_dir("live");
    fs::write(live.join("file"), b"content\n").unwrap();
    fs::create_dir(live.join("shared")).unwrap();
    fs::write(live.join("shared/doc"), b"doc\n").unwrap();
    fs::write(live.join("ping"), b"\x7fELF").unwrap();
    chmod(&live.join("ping"), 0o755);
    fs::write(live.join("plain"), b"no attributes\n").unwrap();
    let binary = b"\nline\0nul\n12 path=x\n".to_vec();
    setx(&live.join("file"), "user.mime_type", b"text/plain");
    setx(&live.join("file"), "user.binary", &binary);
    setx(&live.join("file"), "user.odd%name=x", b"percent and equals");
    setx(&live.join("file"), "trusted.md5", b"0123456789abcdef");
    setx(&live.join("file"), "system.posix_acl_access", &acl(1234, 0));
    setx(&live.join("shared"), "user.dir", b"on a directory");
    setx(&live.join("shared"), "system.posix_acl_default", &acl(1234, 0));
    setx(&live.join("shared"), "system.posix_acl_access", &acl(4321, 5));
    setx(&live.join("ping"), "security.capability", &CAP_NET_BIND_SERVICE);
    setx(&live, "user.root", b"the volume root");
    let want: Vec<(&str, Attrs)> =
        ["", "file", "shared", "shared/doc", "ping", "plain"].iter().map(|r| (*r, xattrs(&live.join(r)))).collect();
    assert!(want[1].1.len() == 5 && want[2].1.len() == 3, "the fixture has its attributes: {want:?}");

    env.write_manifest("snap.yaml", &snapshot_yaml("snap", &[("data", &live)], ""));
    let run = env.run_once(NO_DOCKER);
    assert!(run.status.success(), "{}", show(&run));
    let obj = env.status(SNAPSHOTS, "snap").unwrap();
    env.check(reason_message(&obj, "Ready").0 == "Captured", "every attribute was captured: no warnings", &obj);
    let archive = archive_of(&obj);

    // GNU tar lists them (all namespaces with --xattrs-include='*')...
    let out = Command::new("tar").args(["--xattrs", "--xattrs-include=*", "-tvvzf"]).arg(&archive).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", show(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    for line in [
        "x: 10 user.mime_type",
        "x: 20 user.binary",
        "x: 18 user.odd%name=x",
        "x: 16 trusted.md5",
        "x: 44 system.posix_acl_access",
        "x: 20 security.capability",
        "x: 14 user.dir",
    ] {
        assert!(listing.contains(line), "tar --xattrs -tvv lacks {line:?}:\n{listing}");
    }
    // ... and extracts them.
    let x = env.root.join("gnu");
    fs::create_dir(&x).unwrap();
    let out = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-p", "-xzf"])
        .arg(&archive)
        .arg("-C")
        .arg(&x)
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", show(&out));
    for (rel, attrs) in &want {
        assert_eq!(&xattrs(&x.join("volumes/0").join(rel)), attrs, "GNU tar extraction of {rel:?}");
    }

    // volsnap's own restore gives them all back.
    let target = env.data.join("restored");
    env.write_manifest(
        "restore.yaml",
        &restore_yaml("back", "snap", &format!("  targetPath: {}\n  quiesce: None\n", q(target.to_str().unwrap()))),
    );
    let run = env.run_once(NO_DOCKER);
    assert!(run.status.success(), "{}", show(&run));
    let obj = env.status(RESTORES, "back").unwrap();
    let (_, msg) = reason_message(&obj, "Succeeded");
    env.check(!msg.contains("WARNING"), "nothing was left out", &obj);
    for (rel, attrs) in &want {
        assert_eq!(&xattrs(&target.join("data").join(rel)), attrs, "volsnap restore of {rel:?}");
    }
    // The ACL's permission bits are the mode's, as captured.
    assert_eq!(
        fs::metadata(target.join("data/shared")).unwrap().mode() & 0o7777,
        fs::metadata(live.join("shared")).unwrap().mode() & 0o7777
    );
}

/// What volsnap captured from the host it gives back: a root-owned setuid
/// program with a file capability comes back as it was (only archives made
/// elsewhere are stripped).
#[test]
fn captured_setuid_file_is_restored_as_captured() {
    if !is_root() {
        return skip("captured_setuid_file_is_restored_as_captured", "needs root to own files as root");
    }
    let env = Env::new();
    let live = env.data_dir("live");
    fs::write(live.join("helper"), b"#!/bin/sh\n").unwrap();
    chmod(&live.join("helper"), 0o4755);
    setx(&live.join("helper"), "security.capability", &CAP_NET_BIND_SERVICE);
    fs::write(live.join("grouped"), b"#!/bin/sh\n").unwrap();
    chmod(&live.join("grouped"), 0o2750);
    env.write_manifest("snap.yaml", &snapshot_yaml("snap", &[("data", &live)], ""));
    assert!(env.run_once(NO_DOCKER).status.success());

    fs::remove_file(live.join("helper")).unwrap();
    fs::remove_file(live.join("grouped")).unwrap();
    env.write_manifest("restore.yaml", &restore_yaml("back", "snap", "  keepPreRestore: false\n"));
    let run = env.run_once(NO_DOCKER);
    assert!(run.status.success(), "{}", show(&run));
    let obj = env.status(RESTORES, "back").unwrap();
    env.check(!reason_message(&obj, "Succeeded").1.contains("setuid"), "nothing is reported stripped", &obj);
    let md = fs::metadata(live.join("helper")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o4755, 0), "setuid root, as captured");
    assert_eq!(fs::metadata(live.join("grouped")).unwrap().mode() & 0o7777, 0o2750);
    assert_eq!(
        xattrs(&live.join("helper")),
        vec![("security.capability".to_string(), CAP_NET_BIND_SERVICE.to_vec())],
        "the capability survives the chown and chmod of the restore"
    );
}

/// A sparse file comes back sparse: its holes take no disk space, its size
/// and data are exact, the data around the holes included.
#[test]
fn sparse_file_is_restored_sparse() {
    let env = Env::new();
    let live = env.data_dir("live");
    let size: u64 = 64 << 20;
    let f = fs::File::create(live.join("disk.img")).unwrap();
    f.set_len(size).unwrap();
    let islands: [(u64, &[u8]); 4] = [
        (0, b"header"),
        (size / 4, b"middle island"),
        (size / 2 + 4095, b"across a block boundary"),
        (size - 3, b"end"),
    ];
    for (off, data) in islands {
        std::os::unix::fs::FileExt::write_all_at(&f, data, off).unwrap();
    }
    drop(f);
    let allocated = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
    assert!(allocated(&live.join("disk.img")) < 1 << 20, "the fixture is sparse");
    env.write_manifest("snap.yaml", &snapshot_yaml("snap", &[("data", &live)], "  compression: zstd\n"));
    assert!(env.run_once(NO_DOCKER).status.success());

    let target = env.data.join("restored");
    env.write_manifest(
        "restore.yaml",
        &restore_yaml("back", "snap", &format!("  targetPath: {}\n  quiesce: None\n", q(target.to_str().unwrap()))),
    );
    let run = env.run_once(NO_DOCKER);
    assert!(run.status.success(), "{}", show(&run));
    let restored = target.join("data/disk.img");
    assert_eq!(fs::metadata(&restored).unwrap().len(), size);
    assert!(
        allocated(&restored) < 1 << 20,
        "restored dense: {} bytes allocated for {} bytes of data",
        allocated(&restored),
        islands.iter().map(|(_, d)| d.len()).sum::<usize>()
    );
    assert_eq!(sha256_file(&restored), sha256_file(&live.join("disk.img")));
}

/// Unmounts on drop (lazily if busy).
struct Mounted(PathBuf);

impl Mounted {
    fn new(args: &[&str], at: &Path) -> Option<Mounted> {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount").args(args).arg(at).output().ok()?;
        if !out.status.success() {
            eprintln!("mount {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(Mounted(at.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A procfs, a tmpfs and a bind mount (same file system, so only the mount
/// root attribute tells) inside a volume are not walked: each is archived
/// as an empty directory, named in the volume's warnings, and the snapshot
/// is CapturedWithWarnings with a message naming a path, never silently
/// Captured. What is not a mount is captured as usual.
#[test]
fn walk_does_not_enter_nested_mounts() {
    if !is_root() {
        return skip("walk_does_not_enter_nested_mounts", "needs root to mount");
    }
    let env = Env::new();
    let live = env.data_dir("live");
    fs::create_dir(live.join("real")).unwrap();
    fs::write(live.join("real/kept"), b"on the volume\n").unwrap();
    let Some(_proc) = Mounted::new(&["-t", "proc", "proc"], &live.join("proc")) else {
        return skip("walk_does_not_enter_nested_mounts", "cannot mount proc here");
    };
    let Some(_tmp) = Mounted::new(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"], &live.join("cache")) else {
        return skip("walk_does_not_enter_nested_mounts", "cannot mount a tmpfs here");
    };
    fs::write(live.join("cache/tmp-file"), b"on the tmpfs\n").unwrap();
    let elsewhere = env.data_dir("elsewhere");
    fs::write(elsewhere.join("bound-file"), b"reached through a bind mount\n").unwrap();
    let Some(_bind) = Mounted::new(&["--bind", elsewhere.to_str().unwrap()], &live.join("bound")) else {
        return skip("walk_does_not_enter_nested_mounts", "cannot bind mount here");
    };

    env.write_manifest("snap.yaml", &snapshot_yaml("snap", &[("data", &live)], ""));
    let run = env.run_once(NO_DOCKER);
    assert!(run.status.success(), "{}", show(&run));
    let obj = env.status(SNAPSHOTS, "snap").unwrap();
    let (reason, msg) = reason_message(&obj, "Ready");
    env.check(reason == "CapturedWithWarnings", "nested mounts are never skipped silently", &obj);
    env.check(
        msg.contains("3 nested mount(s) not entered") && msg.contains("bound"),
        "the message counts and names them",
        &obj,
    );
    let warnings = obj["status"]["volumes"][0]["warnings"].to_string();
    for p in ["bound", "cache", "proc"] {
        assert!(warnings.contains(&format!("{p}: another file system is mounted here")), "{p}: {warnings}");
    }
    assert_eq!(obj["status"]["volumes"][0]["nestedMountsSkipped"], 3, "{obj}");
    let listed = tar_list(&archive_of(&obj));
    for dir in ["volumes/0/proc/", "volumes/0/cache/", "volumes/0/bound/", "volumes/0/real/", "volumes/0/real/kept"] {
        assert!(listed.iter().any(|l| l == dir), "{dir} missing: {listed:?}");
    }
    for inside in ["volumes/0/proc/", "volumes/0/cache/", "volumes/0/bound/"] {
        let below: Vec<&String> = listed.iter().filter(|l| l.starts_with(inside) && l.len() > inside.len()).collect();
        assert!(below.is_empty(), "the walk entered {inside}: {below:?}");
    }
}
