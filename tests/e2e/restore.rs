//! Restores: round trips, bad input that must leave live data untouched,
//! concurrency, and crashes at every journal step.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::capture::{make_rich_tree, make_small_tree};
use crate::util::*;

/// A VolumeRestore manifest; `extra` lines go under `spec:` (indented by two).
pub fn restore_yaml(name: &str, snapshot: &str, extra: &str) -> String {
    format!(
        "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeRestore\nmetadata:\n  name: {name}\nspec:\n  snapshotName: {snapshot}\n{extra}"
    )
}

/// `cp -a`: a reference copy keeping modes, owners, mtimes and hardlinks.
pub fn copy_tree(from: &Path, to: &Path) {
    let out = Command::new("cp").arg("-a").arg(from).arg(to).output().unwrap();
    assert!(out.status.success(), "cp -a {} {}: {}", from.display(), to.display(), show(&out));
}

/// Entries of `dir` whose names mark volsnap's staging or aside directories.
pub fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".volsnap-"))
        .collect()
}

fn reason(obj: &Value) -> String {
    cond(obj, "Succeeded").1
}

/// Takes snapshot `name` of `vols` with `--once` and returns its status.
pub fn snapshot_once(env: &Env, name: &str, vols: &[(&str, &Path)], extra: &str) -> Value {
    env.write_manifest(&format!("{name}.yaml"), &snapshot_yaml(name, vols, extra));
    let out = env.run_once(&[]);
    let obj = env.status(SNAPSHOTS, name).unwrap_or_else(|| panic!("no status for {name}: {}", show(&out)));
    env.check(phase(&obj) == "Completed", "snapshot Completed", &obj);
    obj
}

/// Replaces a tree's content with something recognisably different.
fn scribble(dir: &Path) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    fs::write(dir.join("scribbled"), b"data written after the snapshot\n").unwrap();
    fs::create_dir(dir.join("new-dir")).unwrap();
    chmod(dir, 0o700);
}

#[test]
fn in_place_restore_gives_back_the_identical_tree_and_keeps_the_replaced_data() {
    let env = Env::new();
    let app = env.data_dir("app");
    make_rich_tree(&app);
    if is_root() {
        std::os::unix::fs::chown(&app, Some(2000), Some(3000)).unwrap();
    }
    chmod(&app, 0o751);
    set_mtime(&app, 1_500_000_000);
    snapshot_once(&env, "base", &[("app", &app)], "");
    let reference = env.root.join("reference");
    copy_tree(&app, &reference);
    scribble(&app);

    let workload = env.root.join("workload");
    fs::create_dir(&workload).unwrap();
    fs::write(workload.join("running"), b"").unwrap();
    env.write_manifest("undo.yaml", &restore_yaml("undo", "base", ""));
    let out = run_bounded(
        Command::new(BIN).args(env.run_args()).arg("--once").env("VOLSNAP_TEST_WORKLOAD_DIR", &workload),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "--once after a successful restore exits 0: {}", show(&out));
    let obj = env.status(RESTORES, "undo").unwrap();
    env.check(phase(&obj) == "Completed", "restore Completed", &obj);
    env.check(reason(&obj) == "Restored", "Succeeded reason Restored", &obj);
    env.check(cond(&obj, "Progressing").0 == "False", "Progressing False", &obj);
    env.check(obj["status"]["downtimeSeconds"].as_f64().is_some_and(|d| d >= 0.0), "downtimeSeconds reported", &obj);
    env.check(obj["status"]["volumes"][0]["path"] == app.to_str().unwrap(), "volume path is the live target", &obj);
    env.check(obj["status"]["preRestoreSnapshot"] == "undo-pre-restore", "preRestoreSnapshot named", &obj);

    // Content, modes, owners, mtimes, symlinks, hardlinks: all as captured,
    // the volume root included.
    assert_same_tree(&reference, &app);
    assert!(leftovers(&env.data).is_empty(), "no staging or aside directory left: {:?}", leftovers(&env.data));

    // The workload was stopped for the swap and started again.
    assert_eq!(fs::read_to_string(workload.join("events")).unwrap(), "stop\nstart\n");
    assert!(workload.join("running").exists(), "the workload runs again");

    // The replaced data is a Completed snapshot whose archive GNU tar reads.
    let pre = env.status(SNAPSHOTS, "undo-pre-restore").expect("pre-restore snapshot status");
    env.check(phase(&pre) == "Completed", "pre-restore snapshot Completed", &pre);
    let archive = PathBuf::from(pre["status"]["archive"]["path"].as_str().unwrap());
    // Written as zstd whatever the restored snapshot's compression (gzip
    // here), and a sound zstd file for the zstd tool itself.
    env.check(pre["status"]["archive"]["format"] == "tar+zstd", "pre-restore archive is tar+zstd", &pre);
    env.check(pre["spec"]["compression"] == "zstd", "pre-restore snapshot says compression: zstd", &pre);
    assert!(archive.to_string_lossy().ends_with(".tar.zst"), "{}", archive.display());
    let t = Command::new("zstd").arg("-t").arg("-q").arg(&archive).output().unwrap();
    assert!(t.status.success(), "zstd -t {}: {}", archive.display(), show(&t));
    let v = Command::new(BIN).args(["archive", "verify"]).arg(&archive).output().unwrap();
    assert!(v.status.success(), "volsnap archive verify {}: {}", archive.display(), show(&v));
    let listing = tar_list(&archive);
    assert!(listing.iter().any(|n| n == "volumes/0/scribbled"), "the replaced data is archived: {listing:?}");
    assert!(!listing.iter().any(|n| n.ends_with("a.txt")), "the restored data is not: {listing:?}");
    let spec_path = pre["spec"]["source"]["paths"][0]["path"].as_str().unwrap();
    assert_eq!(spec_path, app.to_str().unwrap(), "the pre-restore snapshot can itself be restored in place");

    // Undo the undo: restoring the pre-restore snapshot brings the scribbles back.
    env.write_manifest("redo.yaml", &restore_yaml("redo", "undo-pre-restore", "  keepPreRestore: false\n"));
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(fs::read(app.join("scribbled")).unwrap(), b"data written after the snapshot\n");
    assert!(env.status(SNAPSHOTS, "redo-pre-restore").is_none(), "keepPreRestore: false keeps no snapshot");

    // Removing the restore's manifest removes its pre-restore snapshot
    // object, never the archive.
    env.remove_manifest("undo.yaml");
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(env.status(SNAPSHOTS, "undo-pre-restore").is_none(), "pre-restore snapshot deleted with its restore");
    assert!(archive.exists(), "its archive is retained");
}

#[test]
fn restore_into_target_path_touches_nothing_live_and_honours_the_volume_subset() {
    let env = Env::new();
    let a = env.data_dir("a");
    let b = env.data_dir("b");
    make_small_tree(&a, 1);
    make_small_tree(&b, 2);
    snapshot_once(&env, "two", &[("a", &a), ("b", &b)], "  compression: zstd\n");
    let before_a = scan_tree(&a);
    let copy = env.data.join("copy");
    env.write_manifest(
        "r.yaml",
        &restore_yaml(
            "copy-b",
            "two",
            &format!("  volumes: [b]\n  targetPath: {}\n  quiesce: None\n", q(copy.to_str().unwrap())),
        ),
    );
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let obj = env.status(RESTORES, "copy-b").unwrap();
    env.check(phase(&obj) == "Completed", "Completed", &obj);
    env.check(obj["status"]["volumes"].as_array().map(|v| v.len()) == Some(1), "one volume restored", &obj);
    env.check(obj["status"].get("preRestoreSnapshot").is_none(), "nothing replaced, nothing kept", &obj);
    env.check(obj["status"].get("downtimeSeconds").is_none(), "no workload touched", &obj);
    assert_same_tree(&b, &copy.join("b"));
    assert!(!copy.join("a").exists(), "volume a was not selected");
    assert_eq!(scan_tree(&a).entries, before_a.entries, "live data untouched");
    assert!(leftovers(&env.data).is_empty(), "{:?}", leftovers(&env.data));
}

#[test]
fn adopted_archive_restores_into_a_new_directory_only() {
    // Host 1 takes a snapshot; host 2 adopts the copied archive.
    let host1 = Env::new();
    let app = host1.data_dir("app");
    make_rich_tree(&app);
    let obj = snapshot_once(&host1, "nightly", &[("app", &app)], "");
    let host2 = Env::new();
    let backup = host2.data.join("offsite/nightly.tar.gz");
    fs::create_dir_all(backup.parent().unwrap()).unwrap();
    fs::copy(obj["status"]["archive"]["path"].as_str().unwrap(), &backup).unwrap();
    let original_bytes = fs::read(&backup).unwrap();
    host2.write_manifest(
        "adopt.yaml",
        &format!(
            "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata:\n  name: imported\nspec:\n  source:\n    archive:\n      path: {}\n",
            q(backup.to_str().unwrap())
        ),
    );
    let target = host2.data.join("restored");
    host2.write_manifest("in-place.yaml", &restore_yaml("in-place", "imported", ""));
    host2.write_manifest(
        "to-dir.yaml",
        &restore_yaml(
            "to-dir",
            "imported",
            &format!("  targetPath: {}\n  quiesce: None\n", q(target.to_str().unwrap())),
        ),
    );
    let out = host2.run_once(&[]);
    let snap = host2.status(SNAPSHOTS, "imported").unwrap_or_else(|| panic!("{}", show(&out)));
    host2.check(phase(&snap) == "Completed", "adopted snapshot Completed", &snap);
    host2.check(cond(&snap, "Ready").1 == "Adopted", "Ready reason Adopted", &snap);
    let stored = PathBuf::from(snap["status"]["archive"]["path"].as_str().unwrap());
    assert!(stored.starts_with(host2.archives()), "the archive is copied into the store: {}", stored.display());
    assert_eq!(fs::read(&backup).unwrap(), original_bytes, "the original is never modified");

    let in_place = host2.status(RESTORES, "in-place").unwrap();
    host2.check(phase(&in_place) == "Failed", "in-place restore of an adopted archive fails", &in_place);
    host2.check(reason(&in_place) == "TargetRequired", "reason TargetRequired", &in_place);
    let to_dir = host2.status(RESTORES, "to-dir").unwrap();
    host2.check(phase(&to_dir) == "Completed", "restore into targetPath Completed", &to_dir);
    assert_same_tree(&app, &target.join("app"));
    assert_eq!(out.status.code(), Some(1), "one restore failed: {}", show(&out));
}

#[test]
fn bad_restores_fail_clearly_and_leave_live_data_byte_for_byte_unchanged() {
    let env = Env::new();
    let app = env.data_dir("app");
    make_small_tree(&app, 3);
    snapshot_once(&env, "good", &[("app", &app)], "");
    // A Failed snapshot: its only path is outside the allowed roots.
    let outside = env.root.join("outside");
    fs::create_dir(&outside).unwrap();
    env.write_manifest("failed.yaml", &snapshot_yaml("failed", &[("x", &outside)], ""));
    // An adopted one, for the in-place case.
    let non_empty = env.data_dir("non-empty");
    fs::write(non_empty.join("keep"), b"mine").unwrap();
    let before = scan_tree(&env.data);

    let target = |p: &Path| format!("  targetPath: {}\n  quiesce: None\n", q(p.to_str().unwrap()));
    let cases: Vec<(&str, String, &str)> = vec![
        ("no-such-snapshot", restore_yaml("no-such-snapshot", "missing", ""), "SnapshotNotFound"),
        ("from-failed", restore_yaml("from-failed", "failed", ""), "SnapshotNotReady"),
        ("unknown-volume", restore_yaml("unknown-volume", "good", "  volumes: [app, nope]\n"), "UnknownVolume"),
        ("not-empty", restore_yaml("not-empty", "good", &target(&non_empty)), "TargetNotEmpty"),
        ("outside-roots", restore_yaml("outside-roots", "good", &target(&outside.join("copy"))), "TargetNotAllowed"),
        ("no-quiesce", restore_yaml("no-quiesce", "good", "  quiesce: None\n"), "InvalidSpec"),
        ("relative", restore_yaml("relative", "good", "  targetPath: rel/dir\n  quiesce: None\n"), "InvalidSpec"),
    ];
    for (name, yaml, _) in &cases {
        env.write_manifest(&format!("{name}.yaml"), yaml);
    }
    let out = env.run_once(&[]);
    assert_eq!(out.status.code(), Some(1), "--once exits 1 when restores failed: {}", show(&out));
    for (name, _, want) in &cases {
        let obj = env.status(RESTORES, name).unwrap_or_else(|| panic!("no status for {name}: {}", show(&out)));
        env.check(phase(&obj) == "Failed", &format!("{name}: Failed"), &obj);
        env.check(reason(&obj) == *want, &format!("{name}: reason {want}"), &obj);
        let msg = cond(&obj, "Succeeded").2;
        env.check(msg.len() > 20, &format!("{name}: a message a person can act on"), &obj);
    }
    assert!(
        cond(&env.status(RESTORES, "unknown-volume").unwrap(), "Succeeded").2.contains("nope"),
        "the message names the unknown volume"
    );
    let after = scan_tree(&env.data);
    assert_eq!(before.entries, after.entries, "live data must be byte-for-byte unchanged");
    assert!(!outside.join("copy").exists());
}

/// Flips a byte in the middle of the snapshot's archive, or cuts it.
fn damage(archive: &Path, cut: bool) {
    let mut bytes = fs::read(archive).unwrap();
    if cut {
        bytes.truncate(bytes.len() / 2);
    } else {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
    }
    fs::write(archive, bytes).unwrap();
}

#[test]
fn tampered_or_truncated_archives_are_refused_before_anything_live_changes() {
    for (cut, name) in [(false, "tampered"), (true, "truncated")] {
        let env = Env::new();
        let app = env.data_dir("app");
        make_rich_tree(&app);
        let snap = snapshot_once(&env, "s", &[("app", &app)], "");
        damage(Path::new(snap["status"]["archive"]["path"].as_str().unwrap()), cut);
        scribble(&app);
        let before = scan_tree(&app);
        env.write_manifest("r.yaml", &restore_yaml(name, "s", ""));
        let out = env.run_once(&[]);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let obj = env.status(RESTORES, name).unwrap();
        env.check(phase(&obj) == "Failed", &format!("{name}: Failed"), &obj);
        let why = reason(&obj);
        env.check(
            why == "ArchiveInvalid" || why == "ChecksumMismatch",
            &format!("{name}: reason ArchiveInvalid or ChecksumMismatch"),
            &obj,
        );
        env.check(cond(&obj, "Succeeded").2.contains("not touched"), "the message says nothing live was touched", &obj);
        assert_eq!(before.entries, scan_tree(&app).entries, "{name}: live data unchanged");
        assert!(leftovers(&env.data).is_empty(), "{name}: staging removed: {:?}", leftovers(&env.data));
    }
}

#[test]
fn a_file_that_cannot_be_written_mid_extraction_fails_the_restore_and_touches_nothing_live() {
    let env = Env::new();
    let app = env.data_dir("app");
    make_rich_tree(&app);
    // Several MiB ahead of and behind the failing file, so both threads of
    // the extraction are busy when the writing side fails.
    for i in 0..3 {
        fs::write(app.join(format!("big-{i}.bin")), random_bytes(3 << 20, i + 1)).unwrap();
    }
    snapshot_once(&env, "s", &[("app", &app)], "");
    scribble(&app);
    let before = scan_tree(&app);
    env.write_manifest("r.yaml", &restore_yaml("blocked", "s", ""));
    let out = run_bounded(
        Command::new(BIN).args(env.run_args()).arg("--once").env("VOLSNAP_FAIL", "extract:create:private/secret"),
        Duration::from_secs(300),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let obj = env.status(RESTORES, "blocked").unwrap();
    env.check(phase(&obj) == "Failed", "Failed", &obj);
    env.check(reason(&obj) == "RestoreFailed", "reason RestoreFailed", &obj);
    let message = cond(&obj, "Succeeded").2;
    env.check(message.contains("private/secret"), "the message names the file", &obj);
    env.check(message.contains("injected failure"), "the message says why", &obj);
    env.check(message.contains("not touched"), "the message says nothing live was touched", &obj);
    assert_eq!(before.entries, scan_tree(&app).entries, "live data unchanged");
    assert!(leftovers(&env.data).is_empty(), "staging removed: {:?}", leftovers(&env.data));
    assert!(env.status(SNAPSHOTS, "blocked-pre-restore").is_none(), "no pre-restore snapshot");
}

#[test]
fn a_disk_too_small_for_old_and_new_data_is_refused_up_front() {
    if !is_root() {
        return skip("a_disk_too_small_for_old_and_new_data_is_refused_up_front", "needs root for a tmpfs mount");
    }
    let env = Env::new();
    let small = env.data_dir("small");
    let Some(_mount) = Mount::tmpfs(&small, "size=4m") else {
        return skip("a_disk_too_small_for_old_and_new_data_is_refused_up_front", "tmpfs mount failed");
    };
    let app = small.join("app");
    fs::create_dir(&app).unwrap();
    write_random_file(&app.join("big"), 2_500_000, 9);
    snapshot_once(&env, "s", &[("app", &app)], "");
    // The live data changed but is as big: old and new do not fit together.
    write_random_file(&app.join("big"), 2_500_000, 10);
    let before = scan_tree(&app);
    env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
    let out = env.run_once(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let obj = env.status(RESTORES, "r").unwrap();
    env.check(reason(&obj) == "InsufficientSpace", "reason InsufficientSpace", &obj);
    env.check(cond(&obj, "Succeeded").2.contains("bytes free"), "the message gives the numbers", &obj);
    assert_eq!(before.entries, scan_tree(&app).entries, "live data unchanged");
    assert!(leftovers(&small).is_empty(), "{:?}", leftovers(&small));
}

#[test]
fn a_second_restore_of_the_same_target_waits_and_an_edit_mid_restore_is_not_applied() {
    let env = Env::new();
    let app = env.data_dir("app");
    make_small_tree(&app, 4);
    snapshot_once(&env, "v1", &[("app", &app)], "");
    let v1 = env.root.join("v1-ref");
    copy_tree(&app, &v1);
    scribble(&app);
    snapshot_once(&env, "v2", &[("app", &app)], "");
    let v2 = env.root.join("v2-ref");
    copy_tree(&app, &v2);

    let pause = Pause::new(&env, "restore:Extracted");
    let daemon = pause.start(&env, &[]);
    env.write_manifest("first.yaml", &restore_yaml("first", "v1", "  keepPreRestore: false\n"));
    pause.wait_reached(&env, TIMEOUT);
    // While the first holds the target: a second restore waits...
    env.write_manifest("second.yaml", &restore_yaml("second", "v2", "  keepPreRestore: false\n"));
    let second = env.wait_status(RESTORES, "second", "Pending/VolumeBusy", |o| {
        phase(o) == "Pending" && cond(o, "Succeeded").1 == "VolumeBusy"
    });
    env.check(
        cond(&second, "Succeeded").2.contains(app.to_str().unwrap()),
        "the message names the busy target",
        &second,
    );
    // ... and editing the first's spec is reported, not applied.
    env.write_manifest("first.yaml", &restore_yaml("first", "v2", "  keepPreRestore: false\n"));
    env.wait_status(RESTORES, "first", "SpecChanged=True", |o| cond(o, "SpecChanged").0 == "True");
    assert_same_tree(&v2, &app); // nothing live has changed yet
    pause.release();

    let first = env.wait_status(RESTORES, "first", "Completed", |o| phase(o) == "Completed");
    env.check(first["spec"]["snapshotName"] == "v1", "the applied spec is the original one", &first);
    env.wait_status(RESTORES, "second", "Completed", |o| phase(o) == "Completed");
    // The second ran after the first: the data is v2's.
    assert_same_tree(&v2, &app);
    drop(daemon);
}

/// `status.progress` of a restore: held after the extraction, it counts the
/// snapshot's file content as done; once the pre-restore snapshot is taken,
/// its total also covers the replaced data, and a Completed restore shows
/// everything done.
#[test]
fn restore_progress_counts_the_extraction_then_the_replaced_data() {
    let env = Env::new();
    let app = env.data_dir("app");
    write_random_file(&app.join("a.bin"), 3_000_000, 1);
    write_random_file(&app.join("b.bin"), 1_000_000, 2);
    let snap = snapshot_once(&env, "s", &[("app", &app)], "");
    let captured: u64 =
        snap["status"]["volumes"].as_array().unwrap().iter().map(|v| v["bytes"].as_u64().unwrap()).sum();
    assert_eq!(captured, 4_000_000, "{snap}");
    // The live data grows before the restore: the replaced data is bigger.
    write_random_file(&app.join("c.bin"), 2_000_000, 3);

    let pause = Pause::new(&env, "restore:Extracted");
    let daemon = pause.start(&env, &[]);
    env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
    pause.wait_reached(&env, TIMEOUT);
    let held = env.wait_status(RESTORES, "r", "progress of the finished extraction", |o| {
        phase(o) == "InProgress" && o["status"]["progress"]["bytesDone"].as_u64() == Some(captured)
    });
    assert_eq!(held["status"]["progress"]["bytesTotal"].as_u64(), Some(captured), "{held}");
    pause.release();

    let done = env.wait_status(RESTORES, "r", "Completed", |o| phase(o) == "Completed");
    let p = &done["status"]["progress"];
    assert_eq!(p["bytesDone"], p["bytesTotal"], "a Completed restore shows all done: {done}");
    assert_eq!(
        p["bytesTotal"].as_u64(),
        Some(captured + 6_000_000),
        "the total covers the extraction and the 6 MB of replaced data archived: {done}"
    );
    drop(daemon);
}

// ---------------------------------------------------------------------------
// Crashes.

/// Two volumes with "new" content captured in snapshot `s`, then rewritten
/// to "old" content; reference copies of both states; a marker workload.
struct CrashSetup {
    env: Env,
    vols: Vec<PathBuf>,
    new_refs: Vec<PathBuf>,
    old_refs: Vec<PathBuf>,
    workload: PathBuf,
}

fn crash_setup(files_per_volume: usize) -> CrashSetup {
    let env = Env::new();
    let mut vols = Vec::new();
    let (mut new_refs, mut old_refs) = (Vec::new(), Vec::new());
    for (i, name) in ["one", "two"].iter().enumerate() {
        let dir = env.data_dir(name);
        make_small_tree(&dir, 10 + i as u64);
        for k in 0..files_per_volume {
            let sub = dir.join(format!("d{}", k % 20));
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join(format!("f{k}")), format!("new {name} {k}\n")).unwrap();
        }
        vols.push(dir);
    }
    let pairs: Vec<(&str, &Path)> = vec![("one", &vols[0]), ("two", &vols[1])];
    snapshot_once(&env, "s", &pairs, "");
    for (i, dir) in vols.iter().enumerate() {
        let r = env.root.join(format!("new-{i}"));
        copy_tree(dir, &r);
        new_refs.push(r);
        scribble(dir);
        let r = env.root.join(format!("old-{i}"));
        copy_tree(dir, &r);
        old_refs.push(r);
    }
    let workload = env.root.join("workload");
    fs::create_dir(&workload).unwrap();
    fs::write(workload.join("running"), b"").unwrap();
    CrashSetup { env, vols, new_refs, old_refs, workload }
}

impl CrashSetup {
    /// Which reference every volume matches: Some(true) new, Some(false) old.
    /// Panics on anything else (a mix inside a volume, a missing volume).
    fn state(&self) -> Vec<bool> {
        self.vols
            .iter()
            .enumerate()
            .map(|(i, v)| {
                assert!(v.is_dir(), "volume {} is missing", v.display());
                let now = scan_tree(v).entries;
                if now == scan_tree(&self.new_refs[i]).entries {
                    true
                } else if now == scan_tree(&self.old_refs[i]).entries {
                    false
                } else {
                    panic!("volume {} is neither entirely old nor entirely new", v.display())
                }
            })
            .collect()
    }

    fn daemon_cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env("VOLSNAP_TEST_WORKLOAD_DIR", &self.workload);
        cmd
    }

    /// `--once` without faults: recovery, then whatever is declared.
    fn recover_once(&self) {
        let mut cmd = self.daemon_cmd();
        cmd.args(self.env.run_args()).arg("--once");
        let out = run_bounded(&mut cmd, Duration::from_secs(300));
        assert!(out.status.code().is_some(), "the recovery run must not crash: {}", show(&out));
    }

    fn assert_clean(&self) {
        assert!(self.workload.join("running").exists(), "the workload runs again after recovery");
        assert!(leftovers(&self.env.data).is_empty(), "leftovers: {:?}", leftovers(&self.env.data));
        assert!(partials_under(&self.env.archives()).is_empty(), "{:?}", partials_under(&self.env.archives()));
    }
}

/// Every fault point of the restore, and whether the data must come out
/// new (rolled forward) after recovery.
const FAULT_POINTS: &[(&str, bool, bool)] = &[
    // (point, forward, two-step rename)
    ("restore:Extracting", false, false),
    ("restore:extracted-unsynced", false, false),
    ("restore:Extracted", false, false),
    ("restore:Stopping", false, false),
    ("restore:Swapping", false, false),
    ("restore:two-step-half", false, true),
    ("restore:first-swapped", true, false),
    ("restore:first-swapped", true, true),
    ("restore:Swapped", true, false),
    ("restore:Started", true, false),
    ("restore:Recorded", true, false),
];

#[test]
fn a_kill_at_every_journal_step_leaves_each_volume_entirely_old_or_new_after_recovery() {
    for &(point, forward, two_step) in FAULT_POINTS {
        let s = crash_setup(50);
        s.env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
        let mut cmd = s.daemon_cmd();
        cmd.args(s.env.run_args()).arg("--once").env("VOLSNAP_FAULT", point);
        if two_step {
            cmd.env("VOLSNAP_FORCE_TWO_STEP_RENAME", "1");
        }
        let out = run_bounded(&mut cmd, Duration::from_secs(300));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "{point}: the fault point must be reached: {}", show(&out));

        // Recovery alone: the manifest is gone, so nothing is retried.
        s.env.remove_manifest("r.yaml");
        s.recover_once();
        let state = s.state();
        assert!(
            state.iter().all(|&n| n == forward),
            "{point} (two-step {two_step}): expected all {} got {state:?}",
            if forward { "new" } else { "old" }
        );
        s.assert_clean();
        if forward {
            // The replaced data was archived (the snapshot object went with
            // its restore; the archive is retained).
            let pre = s.env.archive_path("r-pre-restore", "tar.zst");
            assert!(pre.exists(), "{point}: pre-restore archive {} retained", pre.display());
            let listing = tar_list(&pre);
            assert!(listing.iter().any(|n| n == "volumes/0/scribbled"), "{point}: old data archived: {listing:?}");
        }
    }
}

#[test]
fn an_interrupted_restore_is_finished_or_redone_when_its_object_remains() {
    for &(point, forward) in &[("restore:Extracted", false), ("restore:Swapped", true)] {
        let s = crash_setup(20);
        s.env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
        let mut cmd = s.daemon_cmd();
        cmd.args(s.env.run_args()).arg("--once").env("VOLSNAP_FAULT", point);
        let out = run_bounded(&mut cmd, Duration::from_secs(300));
        assert!(out.status.code().is_none(), "{point}: killed: {}", show(&out));
        let stuck = s.env.status(RESTORES, "r").unwrap();
        s.env.check(phase(&stuck) == "InProgress", &format!("{point}: InProgress when killed"), &stuck);
        s.recover_once();
        let obj = s.env.status(RESTORES, "r").unwrap();
        s.env.check(phase(&obj) == "Completed", &format!("{point}: Completed after restart"), &obj);
        if forward {
            s.env.check(
                cond(&obj, "Succeeded").2.contains("recovery sweep"),
                "the message says recovery finished it",
                &obj,
            );
        }
        assert_eq!(s.state(), vec![true, true], "{point}: the data is the snapshot's");
        s.assert_clean();
        let pre = s.env.status(SNAPSHOTS, "r-pre-restore").expect("pre-restore snapshot");
        s.env.check(phase(&pre) == "Completed", "pre-restore snapshot Completed", &pre);
    }
}

/// A tiny deterministic PRNG (splitmix64), seeded from the clock and printed
/// so a failure can be replayed with VOLSNAP_TEST_SEED.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn random_kill_9_during_restores_of_thousands_of_files_never_mixes_data() {
    let mut seed: u64 = std::env::var("VOLSNAP_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("random kill test: VOLSNAP_TEST_SEED={seed}");
    let s = crash_setup(2500);
    // One undisturbed run of the same restore (daemon start-up included)
    // measures the window in which to kill; kills are drawn from twice that
    // (the machine's load varies), so they land before, during and after the
    // swap, and sometimes after the end.
    s.env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
    let start = std::time::Instant::now();
    s.recover_once();
    let full = start.elapsed() * 2;
    assert_eq!(s.state(), vec![true, true]);
    s.env.remove_manifest("r.yaml");
    s.recover_once();

    let mut outcomes = (0, 0);
    for round in 0..8 {
        // Back to the old data.
        for (i, v) in s.vols.iter().enumerate() {
            fs::remove_dir_all(v).unwrap();
            copy_tree(&s.old_refs[i], v);
        }
        let name = format!("r{round}");
        s.env.write_manifest(&format!("{name}.yaml"), &restore_yaml(&name, "s", ""));
        let mut daemon = s.env.start_cmd(s.daemon_cmd(), s.env.run_args());
        let delay = Duration::from_micros(splitmix(&mut seed) % (full.as_micros() as u64 + 1));
        std::thread::sleep(delay); // the kill moment itself is what is random here
        daemon.kill9();
        s.env.remove_manifest(&format!("{name}.yaml"));
        s.recover_once();
        let state = s.state();
        assert!(state[0] == state[1], "round {round} (kill after {delay:?}): volumes disagree: {state:?}");
        if state[0] {
            outcomes.1 += 1
        } else {
            outcomes.0 += 1
        }
        s.assert_clean();
    }
    eprintln!("random kill test: {} rounds rolled back, {} rolled forward", outcomes.0, outcomes.1);
}

#[test]
fn a_restore_waits_while_its_snapshot_is_still_being_taken() {
    let env = Env::new();
    let app = env.data_dir("app");
    make_small_tree(&app, 5);
    let pause = Pause::new(&env, "capture:started");
    let daemon = pause.start(&env, &[]);
    env.write_manifest("s.yaml", &snapshot_yaml("s", &[("app", &app)], ""));
    pause.wait_reached(&env, TIMEOUT);
    let reference = env.root.join("ref");
    copy_tree(&app, &reference);
    env.write_manifest("r.yaml", &restore_yaml("r", "s", "  keepPreRestore: false\n"));
    let waiting = env.wait_status(RESTORES, "r", "Pending/SnapshotNotReady", |o| {
        phase(o) == "Pending" && cond(o, "Succeeded").1 == "SnapshotNotReady"
    });
    env.check(cond(&waiting, "Succeeded").2.starts_with("Waiting"), "the message says it waits", &waiting);
    assert_eq!(scan_tree(&app).entries, scan_tree(&reference).entries, "nothing live changes while it waits");
    pause.release();
    env.wait_status(RESTORES, "r", "Completed", |o| phase(o) == "Completed");
    assert_same_tree(&reference, &app);
    drop(daemon);
}

#[test]
fn a_target_that_is_a_mount_point_is_refused() {
    if !is_root() {
        return skip("a_target_that_is_a_mount_point_is_refused", "needs root for a tmpfs mount");
    }
    let env = Env::new();
    let app = env.data_dir("app");
    let Some(_mount) = Mount::tmpfs(&app, "size=8m") else {
        return skip("a_target_that_is_a_mount_point_is_refused", "tmpfs mount failed");
    };
    make_small_tree(&app, 6);
    snapshot_once(&env, "s", &[("app", &app)], "");
    fs::write(app.join("after"), b"x").unwrap();
    let before = scan_tree(&app);
    env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
    let out = env.run_once(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let obj = env.status(RESTORES, "r").unwrap();
    env.check(reason(&obj) == "TargetIsMountPoint", "reason TargetIsMountPoint", &obj);
    env.check(cond(&obj, "Succeeded").2.contains("targetPath"), "the message says what to do instead", &obj);
    assert_eq!(before.entries, scan_tree(&app).entries, "live data unchanged");
}

#[test]
fn a_failed_second_swap_swaps_the_first_back_and_restarts_the_workload() {
    let s = crash_setup(20);
    s.env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
    let mut cmd = s.daemon_cmd();
    cmd.args(s.env.run_args()).arg("--once").env("VOLSNAP_FAIL", "restore:swap-1");
    let out = run_bounded(&mut cmd, Duration::from_secs(300));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let obj = s.env.status(RESTORES, "r").unwrap();
    s.env.check(reason(&obj) == "RestoreFailed", "reason RestoreFailed", &obj);
    s.env.check(cond(&obj, "Succeeded").2.contains("swapped back"), "the message says the first swap was undone", &obj);
    assert_eq!(s.state(), vec![false, false], "both volumes hold the old data");
    assert_eq!(fs::read_to_string(s.workload.join("events")).unwrap(), "stop\nstart\n");
    s.assert_clean();
    assert!(s.env.status(SNAPSHOTS, "r-pre-restore").is_none(), "nothing was replaced, nothing kept");
}

#[test]
fn recovery_never_swaps_over_a_target_someone_else_replaced() {
    let s = crash_setup(10);
    s.env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
    let mut cmd = s.daemon_cmd();
    cmd.args(s.env.run_args()).arg("--once").env("VOLSNAP_FAULT", "restore:first-swapped");
    let out = run_bounded(&mut cmd, Duration::from_secs(300));
    assert!(out.status.code().is_none(), "killed: {}", show(&out));
    // While volsnap is down, an operator puts other data in place of volume two.
    let two = &s.vols[1];
    fs::rename(two, s.env.root.join("two-moved")).unwrap();
    fs::create_dir(two).unwrap();
    fs::write(two.join("operator"), b"mine").unwrap();
    let out = run_bounded(s.daemon_cmd().args(s.env.run_args()).arg("--once"), Duration::from_secs(300));
    assert_eq!(out.status.code(), Some(1), "an unrecoverable restore makes --once fail: {}", show(&out));
    assert_eq!(fs::read(two.join("operator")).unwrap(), b"mine", "the operator's data is untouched");
    let obj = s.env.status(RESTORES, "r").unwrap();
    s.env.check(phase(&obj) == "InProgress", "left for an operator, not reported done", &obj);
    assert!(show(&out).contains("holds neither"), "the log says why: {}", show(&out));
}
