//! Hostile and half-written manifests: deletion needs positive evidence that
//! a declaration is gone, reading a manifest never blocks the daemon, and
//! parsing is bounded.
//!
//! The data-loss tests use `deletionPolicy: Delete` snapshots: losing the
//! object would delete its archive.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::*;

/// The daemon's settle period (manifests::SETTLE) and a window beyond it:
/// a negative check must outlast any delayed removal.
const SETTLE: Duration = Duration::from_secs(5);
const BEYOND_SETTLE: Duration = Duration::from_secs(8);

fn delete_policy(name: &str, d: &Path) -> String {
    snapshot_yaml(name, &[("vol", d)], "  deletionPolicy: Delete\n")
}

/// Waits until every named snapshot is Completed; returns their archives.
fn completed(env: &Env, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| {
            env.wait_completed(n);
            let archive = env.archive_path(n, "tar.gz");
            assert!(archive.is_file(), "archive of {n}");
            archive
        })
        .collect()
}

/// Every named snapshot keeps its status file and its archive (and the
/// archive's checksum) for the whole window.
fn kept(env: &Env, names: &[&str], window: Duration) {
    holds_for(&format!("objects {names:?} and their archives kept"), window, || {
        for n in names {
            let archive = env.archive_path(n, "tar.gz");
            let sum = PathBuf::from(format!("{}.sha256", archive.display()));
            if env.status(SNAPSHOTS, n).is_none() || !archive.is_file() || !sum.is_file() {
                return Err(format!("{n}: status or archive gone\n{}", env.logs()));
            }
        }
        Ok(())
    });
}

/// Waits for the `_invalid` report of `file` to contain every needle.
fn reported(env: &Env, file: &str, needles: &[&str]) -> String {
    let path = invalid_report_path(&env.state, file);
    wait_for(&format!("_invalid report of {file} with {needles:?}"), TIMEOUT, || {
        let text = fs::read_to_string(&path).map_err(|e| format!("{e}\n{}", env.logs()))?;
        if needles.iter().all(|n| text.contains(n)) { Ok(text) } else { Err(text) }
    })
}

/// Overwrites a manifest in place (truncate, then write), as an editor or
/// `cp` does: the daemon may see any prefix of the new content.
fn overwrite(env: &Env, file: &str, content: &str) {
    fs::write(env.manifests.join(file), content).unwrap();
}

/// A damage case: the file, the snapshots it declares, how its content is
/// damaged, and what its `_invalid` report must say.
type Damage<'a> = (&'a str, &'a [&'a str], &'a dyn Fn(&str) -> String, &'a str);

/// One file per case, each declaring Delete-policy snapshots; after they
/// are Completed, each file is overwritten with its damaged content. Every
/// object must survive, and every file be reported.
fn damaged_files_delete_nothing(cases: &[Damage]) {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"data").unwrap();
    let mut names = Vec::new();
    for (file, snaps, _, _) in cases {
        let docs: Vec<String> = snaps.iter().map(|n| delete_policy(n, &d)).collect();
        env.write_manifest(file, &docs.join("---\n"));
        names.extend_from_slice(snaps);
    }
    let _daemon = env.start(&[]);
    completed(&env, &names);
    for (file, snaps, damage, _) in cases {
        let docs: Vec<String> = snaps.iter().map(|n| delete_policy(n, &d)).collect();
        overwrite(&env, file, &damage(&docs.join("---\n")));
    }
    for (file, _, _, needle) in cases {
        reported(&env, file, &[needle]);
    }
    kept(&env, &names, BEYOND_SETTLE);
}

/// The text up to (not including) the first line starting with `prefix`.
fn cut_before(text: &str, prefix: &str) -> String {
    let at = text.find(&format!("\n{prefix}")).unwrap_or_else(|| panic!("no line {prefix:?} in {text}"));
    text[..=at].to_string()
}

#[test]
fn truncated_manifest_that_lost_its_name_deletes_nothing() {
    damaged_files_delete_nothing(&[
        ("no-meta.yaml", &["nometa"], &|t| cut_before(t, "  name:"), "metadata must be a mapping"),
        ("no-name.yaml", &["noname"], &|t| cut_before(t, "  name:") + "  labels: {}\n", "metadata.name is required"),
        ("emptied.yaml", &["emptied"], &|_| String::new(), "declares nothing"),
        ("list.yaml", &["list"], &|_| "- apiVersion\n".into(), "must be a mapping"),
    ]);
}

#[test]
fn mistyped_kind_or_api_version_deletes_nothing() {
    damaged_files_delete_nothing(&[
        ("kind.yaml", &["kind"], &|t| t.replace("kind: VolumeSnapshot", "kind: VolumeSnapshots"), "kind must be"),
        ("api.yaml", &["api"], &|t| t.replace("volsnap.dev/v1alpha1", "volsnap.dev/v1alpha"), "apiVersion must be"),
    ]);
}

#[test]
fn multi_document_manifest_that_lost_its_last_documents_deletes_nothing() {
    damaged_files_delete_nothing(&[
        // Cut at a document boundary, after the separator.
        (
            "sep.yaml",
            &["sep-a", "sep-b", "sep-c"],
            &|t| cut_before(t, "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata:\n  name: sep-b"),
            "document 1 is empty",
        ),
        // Cut in the middle of a line: it still parses, but does not end
        // with a line break.
        ("mid.yaml", &["mid-a", "mid-b"], &|t| t[..t.find("\n---\n").unwrap()].to_string(), "line break"),
        // Cut inside the second document's apiVersion.
        (
            "api.yaml",
            &["api-a", "api-b"],
            &|t| {
                let second = t.find("---\n").unwrap() + 4;
                format!("{}apiVersion: volsnap.dev/v1al\n", &t[..second])
            },
            "apiVersion must be",
        ),
    ]);
}

#[test]
fn truncated_then_completed_save_deletes_nothing() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"data").unwrap();
    let full = format!("{}---\n{}", delete_policy("first", &d), delete_policy("second", &d));
    env.write_manifest("pair.yaml", &full);
    let daemon = env.start(&[]);
    let archives = completed(&env, &["first", "second"]);
    // A save cut just before the document separator: complete YAML, ending
    // with a line break, one object less.
    let first_half = &full[..full.find("---\n").unwrap()];
    overwrite(&env, "pair.yaml", first_half);
    wait_for("the daemon to see the half-saved file", TIMEOUT, || {
        if daemon.log_text().contains("pair.yaml no longer declares") || !archives[1].exists() {
            Ok(())
        } else {
            Err(env.logs())
        }
    });
    assert!(archives[1].is_file(), "the half-saved file deleted the archive of 'second'\n{}", env.logs());
    // The save completes.
    overwrite(&env, "pair.yaml", &full);
    kept(&env, &["first", "second"], BEYOND_SETTLE);
}

#[test]
fn removing_a_document_deletes_its_object_once_the_file_has_settled() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"data").unwrap();
    let full = format!("{}---\n{}", delete_policy("stays", &d), delete_policy("goes", &d));
    env.write_manifest("pair.yaml", &full);
    let _daemon = env.start(&[]);
    let archives = completed(&env, &["stays", "goes"]);
    env.write_manifest("pair.yaml", &delete_policy("stays", &d));
    let start = Instant::now();
    wait_for("the removed document's object and archive deleted", TIMEOUT, || {
        if env.status(SNAPSHOTS, "goes").is_none() && !archives[1].exists() { Ok(()) } else { Err(env.logs()) }
    });
    eprintln!("deleted {:?} after the edit (settle period {SETTLE:?})", start.elapsed());
    assert!(archives[0].is_file() && env.status(SNAPSHOTS, "stays").is_some());
}

#[test]
fn dangling_symlink_manifest_keeps_its_objects() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"data").unwrap();
    // A deploy links manifests from a release directory, then swaps it.
    let release = env.root.join("release-1");
    fs::create_dir(&release).unwrap();
    fs::write(release.join("app.yaml"), delete_policy("linked", &d)).unwrap();
    symlink(release.join("app.yaml"), env.manifests.join("app.yaml")).unwrap();
    let _daemon = env.start(&[]);
    completed(&env, &["linked"]);
    fs::rename(&release, env.root.join("release-1.old")).unwrap();
    reported(&env, "app.yaml", &["symbolic link", "does not exist"]);
    kept(&env, &["linked"], BEYOND_SETTLE);
    // The target comes back: the report goes, the object stays.
    fs::rename(env.root.join("release-1.old"), &release).unwrap();
    let report = invalid_report_path(&env.state, "app.yaml");
    wait_for("report cleared", TIMEOUT, || if report.exists() { Err(env.logs()) } else { Ok(()) });
    kept(&env, &["linked"], Duration::from_secs(1));
}

#[test]
fn fifo_manifest_does_not_block_the_daemon() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"data").unwrap();
    env.write_manifest("a.yaml", &delete_policy("a", &d));
    let mut daemon = env.start(&[]);
    completed(&env, &["a"]);
    // A FIFO swapped in for the manifest, and a symlink to another.
    fs::remove_file(env.manifests.join("a.yaml")).unwrap();
    mkfifo(&env.manifests.join("a.yaml"));
    mkfifo(&env.root.join("outside.fifo"));
    symlink(env.root.join("outside.fifo"), env.manifests.join("link.yaml")).unwrap();
    reported(&env, "a.yaml", &["FIFO", "kept"]);
    reported(&env, "link.yaml", &["FIFO"]);
    // Nobody writes to the FIFOs, and the daemon goes on working.
    env.write_manifest("b.yaml", &delete_policy("b", &d));
    completed(&env, &["b"]);
    kept(&env, &["a", "b"], BEYOND_SETTLE);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).code(), Some(0), "{}", daemon.log_text());
}

#[test]
fn deeply_nested_manifest_does_not_stall_other_objects() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"data").unwrap();
    let mut daemon = env.start(&[]);
    // 400 KB of nested flow sequences: minutes of parsing for libyaml.
    env.write_manifest("deep.yaml", &format!("a: {}\n", "[".repeat(400 * 1024)));
    env.write_manifest("good.yaml", &delete_policy("good", &d));
    let start = Instant::now();
    completed(&env, &["good"]);
    eprintln!("a manifest beside the nested one completed after {:?}", start.elapsed());
    reported(&env, "deep.yaml", &["nested at most 64 levels deep", "line 1"]);
    let t = Instant::now();
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).code(), Some(0), "{}", daemon.log_text());
    eprintln!("SIGTERM exit took {:?}", t.elapsed());
}

#[test]
fn duplicate_yaml_keys_are_rejected() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"data").unwrap();
    let dup = delete_policy("first", &d).replace("  name: first\n", "  name: first\n  name: second\n");
    env.write_manifest("dup.yaml", &dup);
    let out = env.run_once(&[]);
    let report = fs::read_to_string(invalid_report_path(&env.state, "dup.yaml"))
        .unwrap_or_else(|e| panic!("no _invalid report: {e}\n{}", show(&out)));
    for needle in ["duplicate key \"name\"", "metadata", "document 0", "line"] {
        assert!(report.contains(needle), "report must contain {needle:?}:\n{report}");
    }
    for name in ["first", "second"] {
        assert!(env.status(SNAPSHOTS, name).is_none(), "no object from a file with duplicate keys: {name}");
    }
    assert!(non_dirs_under(&env.archives()).is_empty());
}

/// A DNS subdomain of exactly `len` characters, starting with `c`.
fn long_name(c: char, len: usize) -> String {
    let mut name = String::new();
    while name.len() < len {
        if !name.is_empty() {
            name.push('.');
        }
        let n = (len - name.len()).min(63);
        name.push_str(&c.to_string().repeat(n));
    }
    assert!(!name.ends_with('.') && name.len() == len);
    name
}

#[test]
fn names_too_long_to_store_are_refused() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"data").unwrap();
    let fits = long_name('a', 218);
    let snap = long_name('b', 219);
    let unstorable = long_name('c', 240);
    let restore = long_name('r', 207);
    let schedule = long_name('s', 204);
    env.write_manifest("fits.yaml", &snapshot_yaml(&fits, &[("vol", &d)], ""));
    env.write_manifest("snap.yaml", &snapshot_yaml(&snap, &[("vol", &d)], ""));
    env.write_manifest("unstorable.yaml", &snapshot_yaml(&unstorable, &[("vol", &d)], ""));
    env.write_manifest(
        "restore.yaml",
        &format!(
            "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeRestore\nmetadata:\n  name: {restore}\nspec:\n  snapshotName: {fits}\n"
        ),
    );
    env.write_manifest(
        "schedule.yaml",
        &format!(
            "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshotSchedule\nmetadata:\n  name: {schedule}\nspec:\n  schedule: \"0 3 * * *\"\n  snapshotTemplate:\n    spec:\n      source:\n        paths:\n          - path: {}\n",
            q(d.to_str().unwrap())
        ),
    );
    let out = env.run_once(&[]);
    let ok = env.status(SNAPSHOTS, &fits).unwrap_or_else(|| panic!("{}", show(&out)));
    env.check(phase(&ok) == "Completed", "a 218-character snapshot name is stored", &ok);
    assert!(env.archive_path(&fits, "tar.gz").is_file());
    for (plural, name, limit) in [(SNAPSHOTS, &snap, "218"), (RESTORES, &restore, "206"), (SCHEDULES, &schedule, "203")]
    {
        let obj =
            env.status(plural, name).unwrap_or_else(|| panic!("no status for {plural} {}\n{}", name.len(), show(&out)));
        let main = if plural == RESTORES { "Succeeded" } else { "Ready" };
        let (_, reason, msg) = cond(&obj, main);
        env.check(reason == "InvalidSpec", "InvalidSpec", &obj);
        env.check(
            msg.contains("metadata.name") && msg.contains(limit),
            &format!("message names metadata.name and {limit}"),
            &obj,
        );
    }
    let report = fs::read_to_string(invalid_report_path(&env.state, "unstorable.yaml"))
        .unwrap_or_else(|e| panic!("no _invalid report for a 240-character name: {e}\n{}", show(&out)));
    assert!(report.contains("metadata.name") && report.contains("237"), "{report}");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}

#[test]
fn a_manifest_replaced_non_atomically_deletes_nothing() {
    // `git checkout`, `rsync` and deploys that swap directories remove a
    // file and write it again: a scan in between sees it gone.
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"data").unwrap();
    env.write_manifest("app.yaml", &delete_policy("app", &d));
    let daemon = env.start(&[]);
    let archives = completed(&env, &["app"]);
    let uid = env.status(SNAPSHOTS, "app").unwrap()["metadata"]["uid"].clone();
    env.remove_manifest("app.yaml");
    wait_for("the daemon to see the file gone", TIMEOUT, || {
        if daemon.log_text().contains("app.yaml is gone") || !archives[0].exists() { Ok(()) } else { Err(env.logs()) }
    });
    assert!(archives[0].is_file(), "a file gone for a moment deleted the archive\n{}", env.logs());
    env.write_manifest("app.yaml", &delete_policy("app", &d));
    kept(&env, &["app"], BEYOND_SETTLE);
    assert_eq!(env.status(SNAPSHOTS, "app").unwrap()["metadata"]["uid"], uid, "the same object, not a new one");
}

#[test]
fn a_manifest_gone_for_the_settle_period_deletes_its_object() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"data").unwrap();
    env.write_manifest("app.yaml", &delete_policy("app", &d));
    let _daemon = env.start(&[]);
    let archives = completed(&env, &["app"]);
    env.remove_manifest("app.yaml");
    let start = Instant::now();
    wait_for("the object and its archive deleted", TIMEOUT, || {
        if env.status(SNAPSHOTS, "app").is_none() && !archives[0].exists() { Ok(()) } else { Err(env.logs()) }
    });
    assert!(start.elapsed() >= SETTLE - Duration::from_millis(500), "deleted after {:?}", start.elapsed());
}
