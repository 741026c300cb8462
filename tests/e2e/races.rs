//! Path races: a directory in the path of a volume or a restore target is
//! swapped for a symlink to somewhere outside the allowed roots, in a tight
//! `renameat2(RENAME_EXCHANGE)` loop, while captures and restores run. Each
//! test runs the loop for a bounded time (the daemon's `--once` run) and
//! checks that nothing outside the roots was read or written.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::restore::{restore_yaml, snapshot_once};
use crate::util::*;

/// Exchanges two directory entries as fast as it can, until stopped (or for
/// at most `LIMIT`), then leaves them as they were at the start. Meanwhile
/// it records every name that ever appears in the directory outside the
/// roots, so a write there that is later cleaned up is still caught.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    seen_outside: Arc<Mutex<BTreeSet<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Swapper {
    const LIMIT: Duration = Duration::from_secs(120);

    fn start(a: &Path, b: &Path, outside: &Path) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let seen_outside = Arc::new(Mutex::new(BTreeSet::new()));
        let (a, b, outside) = (a.to_path_buf(), b.to_path_buf(), outside.to_path_buf());
        let (stop2, swaps2, seen2) = (stop.clone(), swaps.clone(), seen_outside.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            while !stop2.load(Ordering::Relaxed) && started.elapsed() < Self::LIMIT {
                exchange(&a, &b);
                let n = swaps2.fetch_add(1, Ordering::Relaxed);
                if n % 8 == 0 {
                    let names =
                        fs::read_dir(&outside).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned());
                    seen2.lock().unwrap().extend(names);
                }
            }
            if swaps2.load(Ordering::Relaxed) % 2 == 1 {
                exchange(&a, &b);
            }
        });
        Swapper { stop, swaps, seen_outside, thread: Some(thread) }
    }

    /// Stops the loop (entries back in place); returns how many swaps ran
    /// and every name seen outside meanwhile.
    fn finish(mut self) -> (u64, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (self.swaps.load(Ordering::Relaxed), self.seen_outside.lock().unwrap().clone())
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn exchange(a: &Path, b: &Path) {
    rustix::fs::renameat_with(rustix::fs::CWD, a, rustix::fs::CWD, b, rustix::fs::RenameFlags::EXCHANGE)
        .unwrap_or_else(|e| panic!("exchanging {} and {}: {e}", a.display(), b.display()));
}

/// Every path beneath `dir` (for "nothing was written here" checks).
fn everything_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

const ROUNDS: usize = 24;

/// Runs `--once` with the daemon held at the fault-injection pause `point`
/// (reached after the operation's checks); the swap loop between `a` and
/// `b` starts once it is reached and runs until the daemon exits.
fn run_held(env: &Env, point: &str, a: &Path, b: &Path, outside: &Path) -> (u64, BTreeSet<String>, String) {
    let pauses = env.root.join(format!("pauses-{}", point.replace(':', "_")));
    fs::create_dir(&pauses).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.env("VOLSNAP_PAUSE", point).env("VOLSNAP_PAUSE_DIR", &pauses);
    let mut args = env.run_args();
    args.extend(["--once".into(), "--docker".into(), "off".into()]);
    let mut daemon = env.start_cmd(cmd, args);
    let file = |suffix: &str| pauses.join(format!("{}.{suffix}", point.replace(':', "_")));
    wait_for(&format!("the daemon to reach {point}"), Duration::from_secs(60), || {
        file("reached").exists().then_some(()).ok_or_else(|| daemon.log_text())
    });
    let swapper = Swapper::start(a, b, outside);
    fs::write(file("release"), b"").unwrap();
    daemon.wait_exit(Duration::from_secs(120));
    let (swaps, seen) = swapper.finish();
    (swaps, seen, daemon.log_text())
}

#[test]
fn capture_never_reads_outside_the_roots_when_a_parent_is_swapped_for_a_symlink() {
    let env = Env::new();
    let data = env.data_dir("app/data");
    write_numbered_files(&data, 300);
    // What a swapped-in symlink would expose: a tree outside the roots with
    // the same layout.
    let outside = env.root.join("outside");
    fs::create_dir_all(outside.join("data")).unwrap();
    fs::write(outside.join("data/shadow"), b"root:secret-hash:19000::::::\n").unwrap();
    symlink(&outside, env.data.join("app-evil")).unwrap();
    for i in 0..ROUNDS {
        env.write_manifest(&format!("s{i}.yaml"), &snapshot_yaml(&format!("s{i}"), &[("data", &data)], ""));
    }
    let swapper = Swapper::start(&env.data.join("app"), &env.data.join("app-evil"), &outside);
    let out = env.run_once(&["--docker", "off"]);
    let (swaps, _) = swapper.finish();
    assert!(swaps > 1000, "the swap loop ran {swaps} times: too few to test anything");
    let mut completed = 0;
    for i in 0..ROUNDS {
        let name = format!("s{i}");
        let obj = env.status(SNAPSHOTS, &name).unwrap_or_else(|| panic!("no status for {name}: {}", show(&out)));
        match phase(&obj) {
            "Completed" => {
                completed += 1;
                let listing = tar_list(&env.archive_path(&name, "tar.gz"));
                env.check(!listing.iter().any(|e| e.contains("shadow")), "nothing outside the roots archived", &obj);
                env.check(listing.iter().any(|e| e == "volumes/0/f299"), "the real volume archived", &obj);
            }
            "Failed" => {
                // Resolved while the symlink was in place: skipped with a
                // reason, never read.
                let msg = cond(&obj, "Ready").2;
                env.check(
                    msg.contains("outside the allowed roots")
                        || msg.contains("not followed")
                        || msg.contains("changed"),
                    "a failure says the path was outside or changed",
                    &obj,
                );
            }
            other => panic!("{name} ended {other}\n{}", show(&out)),
        }
    }
    eprintln!("{completed} of {ROUNDS} snapshots completed while the loop ran the whole time");
    assert_eq!(everything_under(&outside).len(), 2, "nothing was written outside");

    // The same, with the loop started after the checks: this capture must
    // complete, from the directory it checked.
    env.write_manifest("held.yaml", &snapshot_yaml("held", &[("data", &data)], ""));
    let (swaps, _, log) = run_held(&env, "capture:start", &env.data.join("app"), &env.data.join("app-evil"), &outside);
    assert!(swaps > 1000, "the swap loop ran {swaps} times: too few to test anything");
    let obj = env.status(SNAPSHOTS, "held").unwrap_or_else(|| panic!("no status: {log}"));
    env.check(phase(&obj) == "Completed", "the held capture completed", &obj);
    let listing = tar_list(&env.archive_path("held", "tar.gz"));
    env.check(!listing.iter().any(|e| e.contains("shadow")), "nothing outside the roots archived", &obj);
    env.check(listing.iter().any(|e| e == "volumes/0/f299"), "the real volume archived", &obj);
}

#[test]
fn target_path_restore_never_writes_outside_the_roots_when_a_parent_is_swapped_for_a_symlink() {
    let env = Env::new();
    let src = env.data_dir("src");
    write_numbered_files(&src, 200);
    snapshot_once(&env, "snap", &[("data", &src)], "");
    let real = env.data_dir("out");
    let outside = env.root.join("outside");
    fs::create_dir(&outside).unwrap();
    symlink(&outside, env.data.join("out-evil")).unwrap();
    for i in 0..ROUNDS {
        let target = real.join(format!("t{i}"));
        env.write_manifest(
            &format!("r{i}.yaml"),
            &restore_yaml(
                &format!("r{i}"),
                "snap",
                &format!("  targetPath: {}\n  quiesce: None\n", q(target.to_str().unwrap())),
            ),
        );
    }
    let swapper = Swapper::start(&real, &env.data.join("out-evil"), &outside);
    let out = env.run_once(&["--docker", "off"]);
    let (swaps, seen) = swapper.finish();
    assert!(swaps > 1000, "the swap loop ran {swaps} times: too few to test anything");
    assert_eq!(seen, BTreeSet::new(), "nothing was ever written outside the roots\n{}", show(&out));
    assert_eq!(everything_under(&outside), Vec::<PathBuf>::new(), "nothing was left outside the roots");
    let mut completed = 0;
    for i in 0..ROUNDS {
        let name = format!("r{i}");
        let obj = env.status(RESTORES, &name).unwrap_or_else(|| panic!("no status for {name}: {}", show(&out)));
        if phase(&obj) == "Completed" {
            completed += 1;
            let restored = real.join(format!("t{i}/data"));
            env.check(restored.join("f199").is_file(), "the restored data is where the status says", &obj);
        } else {
            env.check(phase(&obj) == "Failed", "settled", &obj);
            env.check(!real.join(format!("t{i}")).exists(), "a failed restore leaves no target", &obj);
        }
    }
    eprintln!("{completed} of {ROUNDS} restores completed while the loop ran the whole time");

    // The same, with the loop started after the pre-flight: this restore
    // must complete, in the directory it checked.
    let target = real.join("held");
    env.write_manifest(
        "held.yaml",
        &restore_yaml("held", "snap", &format!("  targetPath: {}\n  quiesce: None\n", q(target.to_str().unwrap()))),
    );
    let (swaps, seen, log) = run_held(&env, "restore:Extracting", &real, &env.data.join("out-evil"), &outside);
    assert!(swaps > 1000, "the swap loop ran {swaps} times: too few to test anything");
    assert_eq!(seen, BTreeSet::new(), "nothing was ever written outside the roots\n{log}");
    let obj = env.status(RESTORES, "held").unwrap_or_else(|| panic!("no status: {log}"));
    env.check(phase(&obj) == "Completed", "the held restore completed", &obj);
    env.check(target.join("data/f199").is_file(), "the restored data is where the status says", &obj);
    assert!(
        fs::read_dir(&real).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().contains(".volsnap-")),
        "no staging directory is left behind"
    );
}

#[test]
fn in_place_restore_never_stages_outside_the_roots_when_a_parent_is_swapped_for_a_symlink() {
    let env = Env::new();
    let live = env.data_dir("app/data");
    write_numbered_files(&live, 200);
    snapshot_once(&env, "snap", &[("data", &live)], "");
    fs::write(live.join("written-later"), b"after the snapshot\n").unwrap();
    let outside = env.root.join("outside");
    fs::create_dir_all(outside.join("data")).unwrap();
    symlink(&outside, env.data.join("app-evil")).unwrap();
    env.write_manifest("r.yaml", &restore_yaml("r", "snap", ""));
    // The restore is held after its pre-flight, then the loop runs while it
    // extracts, swaps, archives the replaced data and cleans up.
    let (swaps, seen, log) =
        run_held(&env, "restore:Extracting", &env.data.join("app"), &env.data.join("app-evil"), &outside);
    assert!(swaps > 1000, "the swap loop ran {swaps} times: too few to test anything");
    assert_eq!(
        seen,
        BTreeSet::from(["data".to_string()]),
        "no staging or aside directory ever appeared outside the roots\n{log}"
    );
    assert_eq!(everything_under(&outside), vec![outside.join("data")]);
    let obj = env.status(RESTORES, "r").unwrap();
    env.check(phase(&obj) == "Completed", "the restore completed in the directory it checked", &obj);
    assert!(live.join("f199").is_file() && !live.join("written-later").exists(), "the live data is the snapshot's");
    assert_eq!(fs::read_dir(&live).unwrap().count(), 200);
    let pre = tar_list(&env.archive_path("r-pre-restore", "tar.zst"));
    assert!(pre.iter().any(|e| e == "volumes/0/written-later"), "the replaced data was archived: {pre:?}");
    assert!(leftovers_in(&env.data.join("app")).is_empty(), "no staging directory is left behind");
}

fn leftovers_in(dir: &Path) -> Vec<String> {
    crate::restore::leftovers(dir)
}
