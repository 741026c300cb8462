//! Start-up order, ownership of the archives directory, and `targetPath`
//! details found by a hostile tester.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

use crate::restore::{leftovers, restore_yaml, snapshot_once};
use crate::util::*;

#[test]
fn kill_while_the_pre_restore_archive_is_written_still_keeps_the_undo_snapshot() {
    let env = Env::new();
    let live = env.data_dir("app/data");
    write_numbered_files(&live, 50);
    snapshot_once(&env, "snap", &[("data", &live)], "");
    fs::write(live.join("written-later"), b"the data the restore replaces\n").unwrap();
    env.write_manifest("r.yaml", &restore_yaml("r", "snap", ""));
    // Killed right after the pre-restore archive's temporary file exists.
    let mut cmd = Command::new(BIN);
    cmd.env("VOLSNAP_FAULT", "capture:temp-created");
    let mut args = env.run_args();
    args.extend(["--once".into(), "--docker".into(), "off".into()]);
    let mut daemon = env.start_cmd(cmd, args);
    let st = daemon.wait_exit(Duration::from_secs(120));
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL), "{}", daemon.log_text());
    assert!(!partials_under(&env.archives()).is_empty(), "the kill left a temporary archive behind");

    let out = env.run_once(&["--docker", "off"]);
    let obj = env.status(RESTORES, "r").unwrap_or_else(|| panic!("{}", show(&out)));
    env.check(phase(&obj) == "Completed", "the restore was finished by recovery", &obj);
    env.check(!live.join("written-later").exists(), "the live data is the snapshot's", &obj);
    let pre = env.status(SNAPSHOTS, "r-pre-restore").unwrap_or_else(|| panic!("no undo snapshot\n{}", show(&out)));
    env.check(phase(&pre) == "Completed", "the undo snapshot was recorded", &pre);
    let listing = tar_list(&env.archive_path("r-pre-restore", "tar.zst"));
    env.check(listing.iter().any(|e| e == "volumes/0/written-later"), "it holds the replaced data", &pre);
    assert!(
        leftovers(&env.data.join("app")).is_empty(),
        "no untracked hidden copy is left: {:?}",
        leftovers(&env.data.join("app"))
    );
    assert!(partials_under(&env.archives()).is_empty(), "no temporary archive is left");
}

#[test]
fn a_second_daemon_on_the_same_archives_directory_is_refused_and_quarantines_nothing() {
    let env = Env::new();
    let data = env.data_dir("a");
    fs::write(data.join("f"), b"x").unwrap();
    let archives = env.root.join("shared-archives");
    let first_args = |state: &str| {
        let mut a = env.run_args();
        // The second daemon gets its own state directory but the same archives.
        let pos = a.iter().position(|x| x == "--state").unwrap();
        a[pos + 1] = env.root.join(state).into();
        a.extend(["--archives".into(), archives.clone().into(), "--docker".into(), "off".into()]);
        a
    };
    let mut one = env.start_cmd(Command::new(BIN), first_args("state-1"));
    env.write_manifest("s.yaml", &snapshot_yaml("s", &[("data", &data)], ""));
    let s = wait_for("the snapshot to complete", Duration::from_secs(60), || {
        status(&env.root.join("state-1"), "default", SNAPSHOTS, "s")
            .filter(|o| phase(o) == "Completed")
            .ok_or_else(|| one.log_text())
    });
    let archive = archives.join("default/s.tar.gz");
    assert!(archive.is_file(), "{s}");
    let second = run_bounded(Command::new(BIN).args(first_args("state-2")).arg("--once"), Duration::from_secs(60));
    assert!(!second.status.success(), "the second daemon must not start\n{}", show(&second));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("archives directory") && err.contains(archives.to_str().unwrap()), "{err}");
    assert!(archive.is_file(), "the first daemon's archive was not quarantined");
    assert!(!archives.join("_orphaned").exists(), "nothing was quarantined");
    assert!(one.alive());
    one.signal(libc::SIGTERM);
    one.wait_exit(Duration::from_secs(30));
}

#[test]
fn an_existing_empty_target_path_keeps_its_mode_and_owner() {
    let env = Env::new();
    let src = env.data_dir("src");
    fs::write(src.join("f"), b"x").unwrap();
    env.write_manifest("snap.yaml", &snapshot_yaml("snap", &[("data", &src)], ""));
    let target = env.data_dir("prepared");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o2751)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&target, Some(1234), Some(5678)).unwrap();
    }
    let fresh = env.data.join("fresh");
    for (name, t) in [("r1", &target), ("r2", &fresh)] {
        env.write_manifest(
            &format!("{name}.yaml"),
            &restore_yaml(name, "snap", &format!("  targetPath: {}\n  quiesce: None\n", q(t.to_str().unwrap()))),
        );
    }
    let out = env.run_once(&["--docker", "off"]);
    for name in ["r1", "r2"] {
        let obj = env.status(RESTORES, name).unwrap_or_else(|| panic!("{}", show(&out)));
        env.check(phase(&obj) == "Completed", "restored", &obj);
    }
    let m = fs::metadata(&target).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o2751, "the prepared directory's mode is kept");
    if is_root() {
        assert_eq!((m.uid(), m.gid()), (1234, 5678), "and its owner");
    }
    assert!(target.join("data/f").is_file());
    assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o7777, 0o755, "a new directory is 0755, not the private 0700");
}
