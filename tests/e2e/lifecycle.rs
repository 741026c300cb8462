//! Object lifecycle: restarts, kills, deletion, spec changes, signals, and
//! the manifests directory going away.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::capture::make_small_tree;
use crate::util::*;

#[test]
fn manifests_dir_disappearing_keeps_objects_and_recovers() {
    let env = Env::new();
    let d = env.data_dir("vol");
    make_small_tree(&d, 10);
    env.write_manifest("a.yaml", &snapshot_yaml("a", &[("vol", &d)], ""));
    let mut daemon = env.start(&["--resync-interval", "1"]);
    env.wait_completed("a");
    let status_a = status_path(&env.state, "default", SNAPSHOTS, "a");
    let away = env.root.join("manifests.away");
    fs::rename(&env.manifests, &away).unwrap();
    // Over several resyncs: a missing manifests directory (unmounted, being
    // re-checked-out) is not "every manifest was deleted".
    holds_for("status file of 'a' kept while the manifests dir is missing", Duration::from_secs(3), || {
        if status_a.is_file() { Ok(()) } else { Err(env.logs()) }
    });
    assert!(env.archive_path("a", "tar.gz").is_file(), "archive must stay");
    assert!(daemon.alive(), "daemon must survive a missing manifests dir\n{}", env.logs());
    fs::write(away.join("b.yaml"), snapshot_yaml("b", &[("vol", &d)], "")).unwrap();
    fs::rename(&away, &env.manifests).unwrap();
    let b = env.wait_completed("b");
    assert_eq!(phase(&b), "Completed");
    assert_eq!(phase(&env.status(SNAPSHOTS, "a").expect("a still there")), "Completed");
    assert!(daemon.alive());
}

#[test]
fn restart_does_not_recapture_a_completed_snapshot() {
    let env = Env::new();
    let d = env.data_dir("vol");
    make_small_tree(&d, 11);
    env.write_manifest("a.yaml", &snapshot_yaml("idem", &[("vol", &d)], ""));
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let before = env.status(SNAPSHOTS, "idem").unwrap();
    assert_eq!(phase(&before), "Completed", "{before}");
    let archive = env.archive_path("idem", "tar.gz");
    let (mtime, sha) = (mtime_ns(&archive), sha256_file(&archive));
    // The data changes: a recapture would show in the archive.
    fs::write(d.join("file.txt"), b"changed after the snapshot\n").unwrap();
    let out = env.run_once(&[]);
    assert!(out.status.success(), "second --once: {}", show(&out));
    // And once more as a daemon, until it has certainly looked at it.
    let _daemon = env.start(&[]);
    env.wait_completed("idem");
    let after = env.status(SNAPSHOTS, "idem").unwrap();
    assert_eq!(mtime_ns(&archive), mtime, "archive rewritten on restart");
    assert_eq!(sha256_file(&archive), sha, "archive content changed on restart");
    for field in ["startTime", "completionTime", "archive"] {
        assert_eq!(after["status"][field], before["status"][field], "status.{field} changed on restart");
    }
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"], "uid must survive restarts");
    assert_eq!(after["metadata"]["creationTimestamp"], before["metadata"]["creationTimestamp"]);
}

/// A 20 GiB sparse file: slow enough to catch the capture in progress.
fn big_sparse(dir: &Path) -> PathBuf {
    let f = dir.join("sparse.img");
    let file = fs::File::create(&f).unwrap();
    file.set_len(20 << 30).unwrap();
    f
}

#[test]
fn kill_mid_capture_then_restart_completes_cleanly() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("small.txt"), b"small\n").unwrap();
    let sparse = big_sparse(&d);
    env.write_manifest("big.yaml", &snapshot_yaml("big", &[("vol", &d)], ""));
    let mut daemon = env.start(&[]);
    env.wait_status(SNAPSHOTS, "big", "phase InProgress", |v| phase(v) == "InProgress");
    // Progress is reported while InProgress.
    let p = env.wait_status(SNAPSHOTS, "big", "status.progress with bytesDone > 0", |v| {
        phase(v) == "InProgress" && v["status"]["progress"]["bytesDone"].as_u64().unwrap_or(0) > 0
    });
    assert!(
        p["status"]["progress"]["bytesTotal"].as_u64().unwrap_or(0) >= 20 << 30,
        "progress.bytesTotal must cover the 20 GiB file: {}",
        p["status"]["progress"]
    );
    daemon.kill9();
    let archive = env.archive_path("big", "tar.gz");
    assert!(!archive.exists(), "no final archive may exist after a kill mid-capture");
    // Make the retry quick, then restart on the same state.
    fs::File::options().write(true).open(&sparse).unwrap().set_len(1 << 20).unwrap();
    let _daemon = env.start(&[]);
    let obj = env.wait_settled(SNAPSHOTS, "big");
    env.check(phase(&obj) == "Completed", "capture interrupted by a kill completes after restart", &obj);
    assert!(archive.is_file());
    assert_eq!(obj["status"]["archive"]["sha256"], sha256_file(&archive).as_str());
    let left = partials_under(&env.archives());
    assert!(left.is_empty(), "*.partial left under the archives dir: {left:?}");
    let list = tar_list(&archive);
    assert!(list.iter().any(|l| l == "volumes/0/sparse.img"), "{list:?}");
}

#[test]
fn sigterm_during_capture_exits_zero_promptly_without_leftovers() {
    let env = Env::new();
    let d = env.data_dir("vol");
    big_sparse(&d);
    env.write_manifest("big.yaml", &snapshot_yaml("big", &[("vol", &d)], ""));
    let mut daemon = env.start(&[]);
    // Well into the capture (progress reported), not at start-up: see
    // sigterm_right_after_startup_exits_zero for that window.
    env.wait_status(SNAPSHOTS, "big", "InProgress with progress", |v| {
        phase(v) == "InProgress" && v["status"]["progress"]["bytesDone"].as_u64().unwrap_or(0) > 0
    });
    let t = Instant::now();
    daemon.signal(libc::SIGTERM);
    let st = daemon.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "SIGTERM must exit 0, got {st:?}\n{}", daemon.log_text());
    eprintln!("exit after SIGTERM mid-capture took {:?}", t.elapsed());
    assert!(!env.archive_path("big", "tar.gz").exists(), "an interrupted capture leaves no archive");
    let left = partials_under(&env.archives());
    assert!(left.is_empty(), "*.partial left after SIGTERM: {left:?}");
}

#[test]
fn deleting_manifests_deletes_objects_and_archives_per_policy() {
    let env = Env::new();
    let d = env.data_dir("vol");
    make_small_tree(&d, 12);
    env.write_manifest("keep.yaml", &snapshot_yaml("keep", &[("vol", &d)], "  deletionPolicy: Retain\n"));
    env.write_manifest(
        "gone.yaml",
        &snapshot_yaml("gone", &[("vol", &d)], "  deletionPolicy: Delete\n  compression: zstd\n"),
    );
    let _daemon = env.start(&[]);
    env.wait_completed("keep");
    env.wait_completed("gone");
    let keep_archive = env.archive_path("keep", "tar.gz");
    let gone_archive = env.archive_path("gone", "tar.zst");
    assert!(keep_archive.is_file() && gone_archive.is_file());
    env.remove_manifest("keep.yaml");
    env.remove_manifest("gone.yaml");
    for name in ["keep", "gone"] {
        let p = status_path(&env.state, "default", SNAPSHOTS, name);
        wait_for(&format!("status file of {name} removed"), TIMEOUT, || {
            if p.exists() { Err(format!("{} still exists\n{}", p.display(), env.logs())) } else { Ok(()) }
        });
    }
    let sidecar = |p: &Path| PathBuf::from(format!("{}.sha256", p.display()));
    wait_for("archive of 'gone' (deletionPolicy Delete) removed", TIMEOUT, || {
        if gone_archive.exists() || sidecar(&gone_archive).exists() {
            Err(format!("{:?}", non_dirs_under(&env.archives())))
        } else {
            Ok(())
        }
    });
    assert!(keep_archive.is_file(), "deletionPolicy Retain keeps the archive");
    assert!(sidecar(&keep_archive).is_file(), "deletionPolicy Retain keeps the .sha256");
}

#[test]
fn changed_spec_of_completed_snapshot_sets_spec_changed_and_keeps_archive() {
    let env = Env::new();
    let d = env.data_dir("vol");
    make_small_tree(&d, 13);
    env.write_manifest("s.yaml", &snapshot_yaml("fixed", &[("vol", &d)], ""));
    let _daemon = env.start(&[]);
    let before = env.wait_completed("fixed");
    let archive = env.archive_path("fixed", "tar.gz");
    let (mtime, sha) = (mtime_ns(&archive), sha256_file(&archive));
    env.write_manifest("s.yaml", &snapshot_yaml("fixed", &[("vol", &d)], "  compression: zstd\n"));
    let after =
        env.wait_status(SNAPSHOTS, "fixed", "SpecChanged condition True", |v| cond(v, "SpecChanged").0 == "True");
    let (_, reason, msg) = cond(&after, "SpecChanged");
    env.check(!reason.is_empty() && !msg.is_empty(), "SpecChanged has reason and message", &after);
    env.check(phase(&after) == "Completed", "still Completed", &after);
    env.check(cond(&after, "Ready").0 == "True", "still Ready", &after);
    env.check(after["status"]["archive"] == before["status"]["archive"], "status.archive unchanged", &after);
    assert_eq!(mtime_ns(&archive), mtime, "archive must not be rewritten");
    assert_eq!(sha256_file(&archive), sha);
    assert!(!env.archive_path("fixed", "tar.zst").exists(), "no second archive for a changed spec");
}

/// name -> (size, mtime ns, mode, inode) of everything under a directory.
fn listing(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, i64, u32, u64)> {
    let mut out = BTreeMap::new();
    let tree = scan_tree(dir);
    for rel in tree.entries.keys() {
        let p = if rel.as_os_str().is_empty() { dir.to_path_buf() } else { dir.join(rel) };
        let m = fs::symlink_metadata(&p).unwrap();
        out.insert(rel.clone(), (m.len(), m.mtime(), m.mtime_nsec(), m.mode(), m.ino()));
    }
    out
}

#[test]
fn daemon_never_writes_into_the_manifests_dir() {
    let env = Env::new();
    let d = env.data_dir("vol");
    make_small_tree(&d, 14);
    env.write_manifest("good.yaml", &snapshot_yaml("good", &[("vol", &d)], ""));
    env.write_manifest("broken.yaml", "kind: [\n");
    env.write_manifest("invalid.yaml", &snapshot_yaml("invalid", &[("vol", Path::new("relative/path"))], ""));
    env.write_manifest("delete-me.yaml", &snapshot_yaml("delete-me", &[("vol", &d)], "  deletionPolicy: Delete\n"));
    fs::create_dir(env.manifests.join("sub")).unwrap();
    fs::write(env.manifests.join("sub/x.yaml"), "x: 1\n").unwrap();
    set_mtime(&env.manifests.join("sub"), 1_600_000_000);
    let mut daemon = env.start(&[]);
    env.wait_completed("good");
    env.wait_completed("delete-me");
    env.wait_settled(SNAPSHOTS, "invalid");
    let report = invalid_report_path(&env.state, "broken.yaml");
    wait_for("report of broken.yaml", TIMEOUT, || if report.exists() { Ok(()) } else { Err(env.logs()) });
    env.remove_manifest("delete-me.yaml");
    let p = status_path(&env.state, "default", SNAPSHOTS, "delete-me");
    wait_for("delete-me removed", TIMEOUT, || if p.exists() { Err(env.logs()) } else { Ok(()) });
    let before = listing(&env.manifests);
    env.write_manifest("late.yaml", &snapshot_yaml("late", &[("vol", &d)], ""));
    let mut expected = before.clone();
    env.wait_completed("late");
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(Duration::from_secs(20));
    let after = listing(&env.manifests);
    // The only change is the file the test itself added (and the directory
    // entry of the manifests dir itself, whose mtime/size the test changed).
    expected.insert(PathBuf::from("late.yaml"), after[Path::new("late.yaml")]);
    expected.insert(PathBuf::new(), after[Path::new("")]);
    assert_eq!(after, expected, "the daemon wrote into the manifests directory");
    let names: Vec<_> = fs::read_dir(&env.manifests).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 5, "unexpected files in the manifests dir: {names:?}");
}

#[test]
fn sigterm_right_after_startup_exits_zero() {
    // The first status write (a capture started) is the earliest sign of
    // life: a service manager may stop the daemon at any time after it.
    let env = Env::new();
    let d = env.data_dir("vol");
    big_sparse(&d);
    env.write_manifest("big.yaml", &snapshot_yaml("big", &[("vol", &d)], ""));
    let mut daemon = env.start(&[]);
    env.wait_status(SNAPSHOTS, "big", "phase InProgress", |v| phase(v) == "InProgress");
    daemon.signal(libc::SIGTERM);
    let st = daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(0), "SIGTERM must exit 0, got {st:?}\n{}", daemon.log_text());
    let left = partials_under(&env.archives());
    assert!(left.is_empty(), "*.partial left after SIGTERM: {left:?}");
}

fn signal_exits_zero(sig: i32) {
    let env = Env::new();
    let d = env.data_dir("vol");
    make_small_tree(&d, 15);
    env.write_manifest("a.yaml", &snapshot_yaml("a", &[("vol", &d)], ""));
    let mut daemon = env.start(&[]);
    env.wait_completed("a");
    daemon.signal(sig);
    let st = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "signal {sig} must exit 0\n{}", daemon.log_text());
}

#[test]
fn sigterm_exits_zero() {
    signal_exits_zero(libc::SIGTERM);
}

#[test]
fn sigint_exits_zero() {
    signal_exits_zero(libc::SIGINT);
}
