//! Failures of the environment: unreadable files, a full archive disk, a
//! read-only state directory. Most need root (mounts, other uids) and skip
//! themselves otherwise.

use std::ffi::OsString;
use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

const NOBODY: u32 = 65534;

#[test]
fn unreadable_file_is_reported_not_fatal() {
    const NAME: &str = "unreadable_file_is_reported_not_fatal";
    // Root reads everything: as root, run the daemon as uid 65534 instead.
    if is_root() && !have("setpriv") {
        return skip(NAME, "setpriv (util-linux) is not installed");
    }
    let env = Env::new();
    chmod(&env.root, 0o755);
    let d = env.data_dir("vol");
    fs::write(d.join("ok.txt"), b"readable\n").unwrap();
    fs::write(d.join("locked.txt"), b"nobody may read this\n").unwrap();
    fs::create_dir(&env.state).unwrap();
    env.write_manifest("s.yaml", &snapshot_yaml("warn", &[("vol", &d)], ""));
    let mut args = env.run_args();
    args.push("--once".into());
    let out = if is_root() {
        for p in [&env.data, &env.state, &env.manifests] {
            chown_r(p, NOBODY, NOBODY);
        }
        chmod(&d.join("locked.txt"), 0o000);
        let drop = ["--reuid=65534", "--regid=65534", "--clear-groups"];
        // The binary must be reachable for uid 65534.
        let probe = Command::new("setpriv").args(drop).args([BIN, "--version"]).output().unwrap();
        if !probe.status.success() {
            return skip(NAME, &format!("uid 65534 cannot execute {BIN}: {}", show(&probe)));
        }
        let mut full: Vec<OsString> = drop.iter().map(OsString::from).collect();
        full.push(BIN.into());
        full.extend(args);
        run_bounded(Command::new("setpriv").args(&full), Duration::from_secs(300))
    } else {
        chmod(&d.join("locked.txt"), 0o000);
        run_bounded(Command::new(BIN).args(&args), Duration::from_secs(300))
    };
    let obj = env.status(SNAPSHOTS, "warn").unwrap_or_else(|| panic!("no status: {}", show(&out)));
    env.check(phase(&obj) == "Completed", "an unreadable file does not fail the snapshot", &obj);
    let (st, reason, msg) = cond(&obj, "Ready");
    env.check(st == "True" && reason == "CapturedWithWarnings", "Ready True CapturedWithWarnings", &obj);
    env.check(!msg.is_empty(), "Ready message says what to look at", &obj);
    let v0 = &obj["status"]["volumes"][0];
    env.check(v0["unreadable"] == 1, "volumes[0].unreadable == 1", &obj);
    env.check(v0["files"] == 1, "volumes[0].files == 1 (only ok.txt is in the archive)", &obj);
    let warned =
        v0["warnings"].as_array().into_iter().flatten().any(|w| w.as_str().unwrap_or("").contains("locked.txt"));
    env.check(warned, "a warning names locked.txt", &obj);
    assert!(out.status.success(), "Completed with warnings is success for --once: {}", show(&out));
    let list = tar_list(&env.archive_path("warn", "tar.gz"));
    assert!(list.iter().any(|l| l == "volumes/0/ok.txt"), "{list:?}");
    assert!(!list.iter().any(|l| l.contains("locked.txt")), "an unreadable file must not be archived: {list:?}");
}

#[test]
fn full_archive_disk_fails_cleanly() {
    const NAME: &str = "full_archive_disk_fails_cleanly";
    if !is_root() {
        return skip(NAME, "needs root to mount a small tmpfs");
    }
    let env = Env::new();
    let archives = env.root.join("archives");
    let Some(_mount) = Mount::tmpfs(&archives, "size=2m") else {
        return skip(NAME, "cannot mount tmpfs here");
    };
    let d = env.data_dir("big");
    for i in 0..4 {
        write_random_file(&d.join(format!("r{i}.bin")), 2 << 20, 100 + i);
    }
    env.write_manifest("s.yaml", &snapshot_yaml("full", &[("big", &d)], ""));
    let out = env.run_once(&["--archives", archives.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let obj = env.status(SNAPSHOTS, "full").unwrap_or_else(|| panic!("no status: {}", show(&out)));
    env.check(phase(&obj) == "Failed", "phase Failed", &obj);
    let (st, reason, msg) = cond(&obj, "Ready");
    env.check(st == "False" && reason == "ArchiveWriteFailed", "Ready False ArchiveWriteFailed", &obj);
    env.check(msg.contains("No space left"), "message says the disk is full", &obj);
    env.check(obj["status"]["archive"].is_null(), "no status.archive", &obj);
    let left = non_dirs_under(&archives);
    assert!(left.is_empty(), "files left on the full disk (partial archive?): {left:?}");
}

#[test]
fn read_only_state_dir_is_a_startup_error() {
    const NAME: &str = "read_only_state_dir_is_a_startup_error";
    if !is_root() {
        return skip(NAME, "needs root to mount a read-only tmpfs");
    }
    let env = Env::new();
    let Some(_mount) = Mount::tmpfs(&env.state, "ro,size=1m") else {
        return skip(NAME, "cannot mount tmpfs here");
    };
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"f").unwrap();
    env.write_manifest("s.yaml", &snapshot_yaml("s", &[("vol", &d)], ""));
    let out = env.run_once(&[]);
    assert!(!out.status.success(), "a read-only state dir must fail start-up: {}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(env.state.to_str().unwrap()), "stderr must name the state path: {}", show(&out));
}

#[test]
fn uncreatable_state_dir_is_a_startup_error() {
    let env = Env::new();
    let file = env.root.join("a-file");
    fs::write(&file, b"").unwrap();
    let state = file.join("state");
    let out = volsnap(&[
        "run".as_ref(),
        "--once".as_ref(),
        "--manifests".as_ref(),
        env.manifests.as_os_str(),
        "--state".as_ref(),
        state.as_os_str(),
        "--allowed-root".as_ref(),
        env.data.as_os_str(),
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(file.to_str().unwrap()), "stderr must name the path: {}", show(&out));
}

#[test]
fn state_dir_inside_allowed_data_is_never_captured() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"f").unwrap();
    // Capturing the directory that holds the state would archive the archive.
    env.write_manifest("s.yaml", &snapshot_yaml("self", &[("vol", &d), ("state", &env.state)], ""));
    let mut args = env.run_args();
    args.push("--once".into());
    args.push("--allowed-root".into());
    args.push(env.root.clone().into());
    let out = run_bounded(Command::new(BIN).args(&args), Duration::from_secs(300));
    let obj = env.status(SNAPSHOTS, "self").unwrap_or_else(|| panic!("no status: {}", show(&out)));
    let skipped = obj["status"]["skipped"].as_array().cloned().unwrap_or_default();
    env.check(
        skipped.iter().any(|s| s["name"] == "state"),
        "the state directory must be skipped even under an allowed root",
        &obj,
    );
    env.check(
        obj["status"]["volumes"].as_array().is_some_and(|v| v.len() == 1 && v[0]["name"] == "vol"),
        "only vol captured",
        &obj,
    );
}
