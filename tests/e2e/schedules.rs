//! Schedules in files mode, on the real clock: a `* * * * *` schedule takes
//! its snapshot within a minute (these tests may take a little over one), and
//! removing the schedule's manifest removes its snapshot objects but never
//! their archives; a schedule suspended or removed while its snapshot runs.
//! The timing rules, retention and the clock-jump cases are covered on a
//! controllable clock by the reconciler's unit tests.

use std::path::Path;
use std::time::Duration;

use crate::util::*;

#[test]
fn a_minutely_schedule_takes_a_labelled_snapshot_and_its_removal_keeps_the_archives() {
    let env = Env::new();
    let app = env.data_dir("app");
    write_numbered_files(&app, 5);
    let _daemon = env.start(&["--resync-interval", "5"]);
    env.write_manifest("s.yaml", &schedule_yaml("every", &app, ""));
    let schedule = env.wait_status(SCHEDULES, "every", "Scheduled with a next run", |o| {
        cond(o, "Ready").1 == "Scheduled" && o.pointer("/status/nextScheduleTime").is_some()
    });
    env.check(cond(&schedule, "Ready").0 == "True", "an active schedule is Ready", &schedule);
    let ran = wait_for("the first slot to pass and its snapshot to be named", Duration::from_secs(90), || {
        match env.status(SCHEDULES, "every") {
            Some(s) if s.pointer("/status/lastSnapshot").is_some() => Ok(s),
            other => Err(format!("{other:?}\n{}", env.logs())),
        }
    });
    let name = ran.pointer("/status/lastSnapshot").unwrap().as_str().unwrap().to_string();
    assert!(name.starts_with("every-") && name.len() == "every-".len() + 14, "<schedule>-<yyyymmddhhmmss>: {name}");
    let snap = env.wait_completed(&name);
    assert_eq!(snap.pointer("/metadata/labels/volsnap.dev~1schedule"), Some(&"every".into()), "{snap}");
    assert_eq!(snap.pointer("/spec/deletionPolicy"), Some(&"Delete".into()), "retention removes archives with objects");
    let archive = std::path::PathBuf::from(snap.pointer("/status/archive/path").unwrap().as_str().unwrap());
    assert!(tar_list(&archive).iter().any(|e| e.ends_with("volumes/0/f0")));
    env.wait_status(SCHEDULES, "every", "lastSuccessfulTime", |o| o.pointer("/status/lastSuccessfulTime").is_some());
    let table = volsnap(&["get".as_ref(), "schedules".as_ref(), "--state".as_ref(), env.state.as_os_str()]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.lines().any(|l| l.starts_with("every") && l.contains("* * * * *")), "{table}");

    env.remove_manifest("s.yaml");
    wait_for("the schedule and its snapshots to go", Duration::from_secs(30), || {
        if env.status(SCHEDULES, "every").is_none() && env.status(SNAPSHOTS, &name).is_none() {
            Ok(())
        } else {
            Err(env.logs())
        }
    });
    assert!(archive.is_file(), "removing a schedule never deletes its archives");
}

fn schedule_yaml(name: &str, app: &Path, extra: &str) -> String {
    format!(
        "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshotSchedule\nmetadata: {{name: {name}}}\nspec:\n  schedule: \"* * * * *\"\n  snapshotTemplate:\n    spec:\n      source:\n        paths: [{{name: app, path: {}}}]\n  retention: {{keepLast: 3}}\n{extra}",
        q(app.display().to_string())
    )
}

/// A schedule suspended while its snapshot runs leaves that snapshot
/// running and takes no other; removed while it still runs, the snapshot is
/// stopped (it is not a backup yet): no archive, no partial file, the live
/// data untouched, and the daemon goes on with other work.
#[test]
fn a_schedule_suspended_then_removed_while_its_snapshot_runs_loses_nothing() {
    let env = Env::new();
    let app = env.data_dir("app");
    write_numbered_files(&app, 5);
    let before = scan_tree(&app);
    let pause = Pause::new(&env, "capture:started");
    let daemon = pause.start(&env, &["--resync-interval", "5"]);
    env.write_manifest("s.yaml", &schedule_yaml("held", &app, ""));
    // The first slot comes within a minute.
    pause.wait_reached(&env, Duration::from_secs(90));
    let ran = env.wait_status(SCHEDULES, "held", "lastSnapshot", |o| o.pointer("/status/lastSnapshot").is_some());
    let child = ran.pointer("/status/lastSnapshot").unwrap().as_str().unwrap().to_string();
    env.wait_status(SNAPSHOTS, &child, "InProgress", |o| phase(o) == "InProgress");

    // Suspended mid-run: reported, and the running snapshot is left alone.
    env.write_manifest("s.yaml", &schedule_yaml("held", &app, "  suspend: true\n"));
    let suspended = env.wait_status(SCHEDULES, "held", "Suspended", |o| cond(o, "Ready").1 == "Suspended");
    env.check(cond(&suspended, "Ready").0 == "False", "a suspended schedule is not Ready", &suspended);
    let running = env.status(SNAPSHOTS, &child).expect("suspending keeps the running snapshot");
    env.check(phase(&running) == "InProgress", "the running snapshot goes on", &running);

    // Removed mid-run: the schedule and its snapshot go, the capture stops.
    env.remove_manifest("s.yaml");
    wait_for("the schedule and its running snapshot to go", Duration::from_secs(30), || {
        if env.status(SCHEDULES, "held").is_none() && env.status(SNAPSHOTS, &child).is_none() {
            Ok(())
        } else {
            Err(env.logs())
        }
    });
    pause.release();
    // The daemon is still at work: a plain snapshot declared now completes.
    env.write_manifest("after.yaml", &snapshot_yaml("after", &[("app", &app)], ""));
    env.wait_completed("after");
    assert!(!env.archive_path(&child, "tar.gz").exists(), "a stopped capture leaves no archive");
    let left = partials_under(&env.archives());
    assert!(left.is_empty(), "partial files left: {left:?}");
    assert_eq!(before.entries, scan_tree(&app).entries, "the live data is untouched");
    drop(daemon);
}

/// A template that fails validation fails its schedule (InvalidSpec naming
/// the template's field), takes nothing, and the rest of the directory runs.
#[test]
fn a_schedule_with_an_invalid_template_fails_alone_and_takes_nothing() {
    let env = Env::new();
    let app = env.data_dir("app");
    write_numbered_files(&app, 2);
    let _daemon = env.start(&["--resync-interval", "5"]);
    env.write_manifest(
        "bad.yaml",
        "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshotSchedule\nmetadata: {name: bad}\nspec:\n  schedule: \"* * * * *\"\n  snapshotTemplate:\n    spec:\n      source:\n        paths: [{path: relative/dir}]\n",
    );
    env.write_manifest("good.yaml", &snapshot_yaml("good", &[("app", &app)], ""));
    let bad = env.wait_status(SCHEDULES, "bad", "InvalidSpec", |o| cond(o, "Ready").1 == "InvalidSpec");
    let msg = cond(&bad, "Ready").2;
    env.check(
        msg.contains("spec.snapshotTemplate.spec.source") && msg.contains("absolute"),
        "the message names the template's field and what is wrong",
        &bad,
    );
    env.check(bad.pointer("/status/nextScheduleTime").is_none(), "an invalid schedule has no next run", &bad);
    env.wait_completed("good");
    let snapshots = volsnap(&["get".as_ref(), "snapshots".as_ref(), "--state".as_ref(), env.state.as_os_str()]);
    let table = String::from_utf8_lossy(&snapshots.stdout).into_owned();
    assert!(!table.contains("bad-"), "an invalid schedule takes nothing: {table}");
}
