//! Schedules in files mode, on the real clock: a `* * * * *` schedule takes
//! its snapshot within a minute (this test may take a little over one), and
//! removing the schedule's manifest removes its snapshot objects but never
//! their archives. The timing rules, retention and the clock-jump cases are
//! covered on a controllable clock by the reconciler's unit tests.

use std::time::Duration;

use crate::util::*;

#[test]
fn a_minutely_schedule_takes_a_labelled_snapshot_and_its_removal_keeps_the_archives() {
    let env = Env::new();
    let app = env.data_dir("app");
    write_numbered_files(&app, 5);
    let _daemon = env.start(&["--resync-interval", "5"]);
    env.write_manifest(
        "s.yaml",
        &format!(
            "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshotSchedule\nmetadata: {{name: every}}\nspec:\n  schedule: \"* * * * *\"\n  snapshotTemplate:\n    spec:\n      source:\n        paths: [{{name: app, path: {}}}]\n  retention: {{keepLast: 3}}\n",
            q(app.display().to_string())
        ),
    );
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
