//! Captures: a manifest dropped into the watched directory becomes an archive
//! that plain GNU tar reads back into an identical tree.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::*;

/// What [`make_rich_tree`] put into a directory.
pub struct Expected {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub specials: u64,
    /// Bytes of distinct file contents (each hardlinked inode once).
    pub unique_bytes: u64,
    /// Bytes over all file names (hardlinked inodes once per name).
    pub all_bytes: u64,
}

/// A source tree with everything an archive must carry: nested directories,
/// modes, ownership (when root), symlinks (relative, absolute, dangling),
/// hardlinks, a long name, a long path, a non-UTF-8 name, an empty
/// directory, and a FIFO (which volsnap skips). Mtimes are set to fixed
/// past values, directories last.
pub fn make_rich_tree(root: &Path) -> Expected {
    let w = |rel: &str, content: &[u8], mode: u32| {
        let p = root.join(rel);
        fs::write(&p, content).unwrap();
        chmod(&p, mode);
    };
    for d in ["nested/deeper/deepest", "empty-dir", "private", &format!("{}/{}", "d".repeat(60), "e".repeat(60))] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    chmod(&root.join("private"), 0o750);
    w("a.txt", b"hello volsnap\n", 0o644);
    w("run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    w("private/secret", b"s3cr3t", 0o600);
    w("empty-file", b"", 0o644);
    fs::write(root.join("nested/deeper/deepest/blob.bin"), random_bytes(300_000, 7)).unwrap();
    fs::write(root.join("nested/zeros.bin"), vec![0u8; 100_000]).unwrap();
    // Name of 150 bytes (> 100: needs a pax/GNU long name), and a path > 100 bytes.
    w(&"l".repeat(150), b"long name\n", 0o644);
    w(&format!("{}/{}/{}", "d".repeat(60), "e".repeat(60), "f".repeat(40)), b"long path\n", 0o644);
    // A name that is not UTF-8.
    fs::write(root.join(OsStr::from_bytes(b"caf\xe9.txt")), b"latin-1 name\n").unwrap();
    // Hardlinks: three names, one inode.
    fs::write(root.join("hard1"), b"one inode, three names\n").unwrap();
    fs::hard_link(root.join("hard1"), root.join("nested/hard2")).unwrap();
    fs::hard_link(root.join("hard1"), root.join("private/hard3")).unwrap();
    // Symlinks are archived as links, never followed.
    symlink("a.txt", root.join("link-rel")).unwrap();
    symlink("/etc/hostname", root.join("nested/link-abs")).unwrap();
    symlink("does/not/exist", root.join("link-dangling")).unwrap();
    symlink("../nested", root.join("private/link-dir")).unwrap();
    mkfifo(&root.join("fifo"));
    if is_root() {
        std::os::unix::fs::chown(root.join("a.txt"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(root.join("private"), Some(4321), Some(8765)).unwrap();
        std::os::unix::fs::lchown(root.join("link-rel"), Some(1234), Some(5678)).unwrap();
    }
    // Distinct fixed mtimes, deepest entries first so directories keep theirs.
    let tree = scan_tree(root);
    let mut paths: Vec<&PathBuf> = tree.entries.keys().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, rel) in paths.iter().enumerate() {
        if matches!(tree.entries[*rel].kind, EntryKind::Symlink(_)) {
            continue;
        }
        let abs = if rel.as_os_str().is_empty() { root.to_path_buf() } else { root.join(rel) };
        set_mtime(&abs, 1_600_000_000 + i as i64 * 3_601);
    }
    let tree = scan_tree(root);
    let mut seen = std::collections::HashSet::new();
    let mut unique_bytes = 0;
    let mut all_bytes = 0;
    for (rel, e) in &tree.entries {
        if let EntryKind::File { size, .. } = e.kind {
            all_bytes += size;
            let ino = fs::symlink_metadata(root.join(rel)).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
            if seen.insert(ino) {
                unique_bytes += size;
            }
        }
    }
    Expected {
        files: tree.count(|k| matches!(k, EntryKind::File { .. })) as u64,
        directories: tree.count(|k| *k == EntryKind::Dir) as u64,
        symlinks: tree.count(|k| matches!(k, EntryKind::Symlink(_))) as u64,
        specials: tree.count(|k| *k == EntryKind::Special) as u64,
        unique_bytes,
        all_bytes,
    }
}

/// A small tree: a few files, a symlink, a hardlink.
pub fn make_small_tree(root: &Path, seed: u64) {
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("file.txt"), format!("small tree {seed}\n")).unwrap();
    fs::write(root.join("sub/data.bin"), random_bytes(20_000, seed)).unwrap();
    fs::hard_link(root.join("file.txt"), root.join("sub/file-link.txt")).unwrap();
    symlink("sub/data.bin", root.join("data-link")).unwrap();
    set_mtime(&root.join("file.txt"), 1_500_000_000);
    set_mtime(&root.join("sub/data.bin"), 1_500_003_600);
    set_mtime(&root.join("sub"), 1_500_007_200);
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

/// Checks status.archive against the file and its .sha256 sidecar.
pub fn check_archive(env: &Env, obj: &Value, expected_path: &Path, format: &str) {
    let archive = &obj["status"]["archive"];
    env.check(archive["path"] == expected_path.to_str().unwrap(), "status.archive.path", obj);
    env.check(archive["format"] == format, "status.archive.format", obj);
    assert!(expected_path.is_file(), "archive {} missing", expected_path.display());
    let sha = sha256_file(expected_path);
    env.check(archive["sha256"] == sha.as_str(), &format!("status.archive.sha256 != sha256 of the file ({sha})"), obj);
    env.check(u(&archive["sizeBytes"]) == fs::metadata(expected_path).unwrap().len(), "status.archive.sizeBytes", obj);
    let mut sidecar = expected_path.as_os_str().to_owned();
    sidecar.push(".sha256");
    let sidecar = PathBuf::from(sidecar);
    let text = fs::read_to_string(&sidecar).unwrap_or_else(|e| panic!("sidecar {}: {e}", sidecar.display()));
    let mut fields = text.split_whitespace();
    assert_eq!(fields.next(), Some(sha.as_str()), "sidecar hash, file:\n{text}");
    let name = fields.next().unwrap_or("").trim_start_matches('*');
    assert_eq!(
        name,
        expected_path.file_name().unwrap().to_str().unwrap(),
        "sidecar must name the archive (sha256sum format):\n{text}"
    );
    // And sha256sum itself agrees.
    let out = std::process::Command::new("sha256sum")
        .arg("-c")
        .arg(sidecar.file_name().unwrap())
        .current_dir(expected_path.parent().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "sha256sum -c on the sidecar failed: {}", show(&out));
}

#[test]
fn file_drop_captures_rich_tree_readable_by_gnu_tar() {
    let env = Env::new();
    let app = env.data_dir("app");
    let expected = make_rich_tree(&app);
    let cfg = env.data_dir("cfg");
    make_small_tree(&cfg, 1);
    let _d = env.start(&[]);
    env.write_manifest("rich.yaml", &snapshot_yaml("rich", &[("app", &app), ("cfg", &cfg)], ""));
    let obj = env.wait_settled(SNAPSHOTS, "rich");
    env.check(phase(&obj) == "Completed", "phase must be Completed", &obj);
    let (st, reason, _) = cond(&obj, "Ready");
    env.check(st == "True", "Ready must be True", &obj);
    env.check(reason == "Captured" || reason == "CapturedWithWarnings", "Ready reason Captured*", &obj);
    let ready = condition(&obj, "Ready").unwrap();
    env.check(ready["lastTransitionTime"].is_string(), "Ready.lastTransitionTime", &obj);
    env.check(ready["observedGeneration"] == 1, "Ready.observedGeneration", &obj);

    // The whole object, as kubectl would print it.
    env.check(obj["apiVersion"] == "volsnap.dev/v1alpha1", "apiVersion", &obj);
    env.check(obj["kind"] == "VolumeSnapshot", "kind", &obj);
    env.check(obj["metadata"]["name"] == "rich", "metadata.name", &obj);
    env.check(obj["metadata"]["namespace"] == "default", "metadata.namespace defaults to default", &obj);
    env.check(obj["metadata"]["uid"].as_str().is_some_and(|s| !s.is_empty()), "metadata.uid", &obj);
    env.check(obj["metadata"]["generation"] == 1, "metadata.generation", &obj);
    env.check(obj["metadata"]["creationTimestamp"].is_string(), "metadata.creationTimestamp", &obj);
    env.check(
        obj["metadata"]["annotations"]["volsnap.dev/manifest-file"] == "rich.yaml",
        "annotation volsnap.dev/manifest-file",
        &obj,
    );
    env.check(obj["spec"]["source"]["paths"][0]["path"] == app.to_str().unwrap(), "spec echoed", &obj);
    env.check(obj["status"]["startTime"].is_string(), "status.startTime", &obj);
    env.check(obj["status"]["completionTime"].is_string(), "status.completionTime", &obj);
    env.check(obj["status"]["observedGeneration"] == 1, "status.observedGeneration", &obj);

    let archive = env.archive_path("rich", "tar.gz");
    check_archive(&env, &obj, &archive, "tar+gzip");

    // Counts of the first volume.
    let v0 = &obj["status"]["volumes"][0];
    env.check(v0["name"] == "app" && v0["path"] == app.to_str().unwrap(), "volumes[0] name/path", &obj);
    env.check(u(&v0["files"]) == expected.files, &format!("volumes[0].files == {}", expected.files), &obj);
    env.check(
        u(&v0["directories"]) == expected.directories,
        &format!("volumes[0].directories == {} (root included)", expected.directories),
        &obj,
    );
    env.check(u(&v0["symlinks"]) == expected.symlinks, &format!("volumes[0].symlinks == {}", expected.symlinks), &obj);
    env.check(
        u(&v0["specialFilesSkipped"]) == expected.specials,
        &format!("volumes[0].specialFilesSkipped == {} (the FIFO)", expected.specials),
        &obj,
    );
    let bytes = u(&v0["bytes"]);
    env.check(
        (expected.unique_bytes..=expected.all_bytes).contains(&bytes),
        &format!("volumes[0].bytes in {}..={}", expected.unique_bytes, expected.all_bytes),
        &obj,
    );
    env.check(obj["status"]["volumes"][1]["name"] == "cfg", "volumes[1] is cfg (declaration order)", &obj);
    env.check(obj["status"]["skipped"].as_array().is_none_or(|s| s.is_empty()), "nothing skipped", &obj);

    // GNU tar reads it: volsnap.json first, then volumes/<index>/.
    let list = tar_list(&archive);
    assert_eq!(list.first().map(String::as_str), Some("volsnap.json"), "first entry, listing: {list:?}");
    assert!(list.iter().any(|l| l == "volumes/0/"), "volumes/0/ root entry missing: {list:?}");
    assert!(list.iter().any(|l| l == "volumes/1/"), "volumes/1/ root entry missing: {list:?}");
    let out = extract(&archive, &env.root);
    let manifest: Value = serde_json::from_slice(&fs::read(out.join("volsnap.json")).unwrap()).unwrap();
    assert_eq!(manifest["snapshot"]["name"], "rich", "volsnap.json: {manifest}");
    assert_eq!(manifest["snapshot"]["namespace"], "default", "volsnap.json: {manifest}");
    assert_eq!(manifest["snapshot"]["uid"], obj["metadata"]["uid"], "volsnap.json uid: {manifest}");
    assert_eq!(manifest["volumes"][0]["index"], 0, "volsnap.json: {manifest}");
    assert_eq!(manifest["volumes"][0]["name"], "app", "volsnap.json: {manifest}");
    assert_eq!(manifest["volumes"][0]["source"], app.to_str().unwrap(), "volsnap.json: {manifest}");
    assert_eq!(manifest["volumes"][1]["index"], 1, "volsnap.json: {manifest}");
    assert_eq!(manifest["volumes"][1]["name"], "cfg", "volsnap.json: {manifest}");
    assert_same_tree(&app, &out.join("volumes/0"));
    assert_same_tree(&cfg, &out.join("volumes/1"));
}

#[test]
fn zstd_snapshot_is_extracted_by_gnu_tar() {
    let env = Env::new();
    let src = env.data_dir("vol");
    make_small_tree(&src, 2);
    let _d = env.start(&[]);
    env.write_manifest("z.yaml", &snapshot_yaml("zsnap", &[("vol", &src)], "  compression: zstd\n"));
    let obj = env.wait_settled(SNAPSHOTS, "zsnap");
    env.check(phase(&obj) == "Completed", "phase must be Completed", &obj);
    let archive = env.archive_path("zsnap", "tar.zst");
    check_archive(&env, &obj, &archive, "tar+zstd");
    let magic = fs::read(&archive).unwrap();
    assert_eq!(&magic[..4], &[0x28, 0xb5, 0x2f, 0xfd], "not a zstd frame");
    assert!(!env.archive_path("zsnap", "tar.gz").exists(), "no gzip archive expected");
    let list = tar_list(&archive);
    assert_eq!(list.first().map(String::as_str), Some("volsnap.json"), "listing: {list:?}");
    let out = extract(&archive, &env.root);
    assert_same_tree(&src, &out.join("volumes/0"));
}

#[test]
fn once_exits_zero_when_all_completed() {
    let env = Env::new();
    let a = env.data_dir("a");
    make_small_tree(&a, 3);
    env.write_manifest("a.yaml", &snapshot_yaml("a", &[("a", &a)], ""));
    env.write_manifest("b.yml", &snapshot_yaml("b", &[("a", &a)], "  compression: zstd\n"));
    let out = env.run_once(&[]);
    assert!(out.status.success(), "run --once must exit 0: {}", show(&out));
    for name in ["a", "b"] {
        let obj = env.status(SNAPSHOTS, name).unwrap_or_else(|| panic!("no status for {name}: {}", show(&out)));
        assert_eq!(phase(&obj), "Completed", "{name}: {obj}");
    }
    assert!(env.archive_path("a", "tar.gz").is_file());
    assert!(env.archive_path("b", "tar.zst").is_file(), "*.yml files are read too");
}

#[test]
fn once_exits_one_when_a_snapshot_fails() {
    let env = Env::new();
    let a = env.data_dir("a");
    make_small_tree(&a, 4);
    env.write_manifest("good.yaml", &snapshot_yaml("good", &[("a", &a)], ""));
    env.write_manifest("empty.yaml", &snapshot_yaml("empty", &[("gone", &env.data.join("not-there"))], ""));
    let out = env.run_once(&[]);
    assert_eq!(out.status.code(), Some(1), "run --once must exit 1 when a snapshot failed: {}", show(&out));
    let good = env.status(SNAPSHOTS, "good").expect("status of good");
    assert_eq!(phase(&good), "Completed", "{good}");
    let bad = env.status(SNAPSHOTS, "empty").expect("status of empty");
    assert_eq!(phase(&bad), "Failed", "{bad}");
    assert_eq!(cond(&bad, "Ready").1, "NoData", "{bad}");
}

#[test]
fn unusable_volumes_are_skipped_with_reasons() {
    let env = Env::new();
    let good = env.data_dir("good");
    make_small_tree(&good, 5);
    let file = env.data.join("plain-file");
    fs::write(&file, b"not a dir").unwrap();
    let outside = env.root.join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("x"), b"x").unwrap();
    let to_root = env.data.join("to-root");
    symlink("/", &to_root).unwrap();
    let missing = env.data.join("missing");
    let vols: Vec<(&str, &Path)> = vec![
        ("missing", &missing),
        ("good", &good),
        ("file", &file),
        ("outside", &outside),
        ("to-root", &to_root),
        ("proc", Path::new("/proc")),
    ];
    env.write_manifest("s.yaml", &snapshot_yaml("partial", &vols, ""));
    let out = env.run_once(&[]);
    let obj = env.status(SNAPSHOTS, "partial").unwrap_or_else(|| panic!("no status: {}", show(&out)));
    env.check(phase(&obj) == "Completed", "phase Completed: one volume is capturable", &obj);
    env.check(cond(&obj, "Ready").0 == "True", "Ready True", &obj);
    let volumes = obj["status"]["volumes"].as_array().cloned().unwrap_or_default();
    env.check(volumes.len() == 1 && volumes[0]["name"] == "good", "only 'good' captured", &obj);
    let skipped = obj["status"]["skipped"].as_array().cloned().unwrap_or_default();
    let reason = |name: &str| -> String {
        let s = skipped.iter().find(|s| s["name"] == name);
        env.check(s.is_some(), &format!("volume {name} must be listed in status.skipped"), &obj);
        let s = s.unwrap();
        env.check(s["path"].is_string(), &format!("skipped {name}: path"), &obj);
        s["reason"].as_str().unwrap_or("").to_string()
    };
    let expect = |name: &str, needle: &str| {
        let r = reason(name);
        env.check(r.contains(needle), &format!("skipped {name}: reason must contain {needle:?}, is {r:?}"), &obj);
    };
    expect("missing", "no data on disk yet");
    expect("file", "not a directory");
    expect("outside", "outside the allowed roots");
    expect("to-root", "/ is never captured");
    let proc_reason = reason("proc");
    env.check(
        proc_reason.contains("/proc is never captured") || proc_reason.contains("outside the allowed roots"),
        "skipped proc: reason",
        &obj,
    );
    env.check(skipped.len() == 5, "exactly 5 skipped", &obj);
    // The archive holds only the captured volume, as index 0.
    let archive = env.archive_path("partial", "tar.gz");
    let list = tar_list(&archive);
    assert!(list.iter().any(|l| l == "volumes/0/"), "{list:?}");
    assert!(!list.iter().any(|l| l.starts_with("volumes/1")), "only one volume expected: {list:?}");
    let out_dir = extract(&archive, &env.root);
    assert_same_tree(&good, &out_dir.join("volumes/0"));
}

#[test]
fn all_volumes_skipped_fails_with_no_data() {
    let env = Env::new();
    let outside = env.root.join("outside");
    fs::create_dir(&outside).unwrap();
    let missing = env.data.join("missing");
    let vols: Vec<(&str, &Path)> = vec![("missing", &missing), ("outside", &outside)];
    env.write_manifest("s.yaml", &snapshot_yaml("nothing", &vols, ""));
    let out = env.run_once(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let obj = env.status(SNAPSHOTS, "nothing").unwrap_or_else(|| panic!("no status: {}", show(&out)));
    env.check(phase(&obj) == "Failed", "phase Failed", &obj);
    let (st, reason, msg) = cond(&obj, "Ready");
    env.check(st == "False" && reason == "NoData", "Ready False NoData", &obj);
    env.check(!msg.is_empty(), "NoData message must say why", &obj);
    env.check(obj["status"]["skipped"].as_array().is_some_and(|s| s.len() == 2), "both listed as skipped", &obj);
    env.check(obj["status"]["archive"].is_null(), "no status.archive", &obj);
    assert!(
        non_dirs_under(&env.archives()).is_empty(),
        "no archive may be written: {:?}",
        non_dirs_under(&env.archives())
    );
}

#[test]
fn default_manifests_and_state_dirs_are_relative_to_the_working_dir() {
    let env = Env::new();
    let d = env.data_dir("vol");
    make_small_tree(&d, 7);
    let manifests = env.root.join("volsnap.d");
    fs::create_dir(&manifests).unwrap();
    fs::write(manifests.join("a.yaml"), snapshot_yaml("dflt", &[("vol", &d)], "")).unwrap();
    let out = run_bounded(
        std::process::Command::new(BIN).args(["run", "--once", "--allowed-root"]).arg(&env.data).current_dir(&env.root),
        std::time::Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", show(&out));
    let state = env.root.join(".volsnap");
    let obj = status(&state, "default", SNAPSHOTS, "dflt").unwrap_or_else(|| panic!("no status in ./.volsnap"));
    assert_eq!(phase(&obj), "Completed", "{obj}");
    let archive = state.join("archives/default/dflt.tar.gz");
    assert!(archive.is_file(), "archive in ./.volsnap/archives");
    assert_eq!(obj["status"]["archive"]["path"], archive.to_str().unwrap(), "status.archive.path is absolute");
}
