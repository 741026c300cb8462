//! Restore status transitions. Pure functions of (status, facts, now).

use super::conditions::set;
use super::{reasons, types};
use crate::api::{ConditionStatus as S, Phase, Progress, RestoredVolume, Time, VolumeRestoreStatus};

/// What the reconciler should do with a restore next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing: Completed or Failed (a restore runs once).
    Nothing,
    /// Run the pre-flight and, if it passes, the restore.
    Restore,
}

/// Decides the next step from the observed status. An InProgress restore
/// found without a worker was interrupted; the journal's recovery sweep has
/// already rolled it back or forward before the reconciler looks at it.
pub fn next_step(status: Option<&VolumeRestoreStatus>) -> Step {
    match status.and_then(|s| s.phase) {
        Some(p) if p.is_terminal() => Step::Nothing,
        _ => Step::Restore,
    }
}

/// Accepted and waiting (for a worker, the snapshot, or a busy volume).
pub fn pending(st: &mut VolumeRestoreStatus, generation: i64, now: Time, reason: &str, message: &str) {
    st.phase = Some(Phase::Pending);
    st.observed_generation = Some(generation);
    set(&mut st.conditions, types::SUCCEEDED, S::Unknown, reason, message, Some(generation), now);
    set(&mut st.conditions, types::PROGRESSING, S::False, reason, message, Some(generation), now);
}

/// The restore started (pre-flight passed).
pub fn started(st: &mut VolumeRestoreStatus, generation: i64, now: Time, message: &str) {
    st.phase = Some(Phase::InProgress);
    st.observed_generation = Some(generation);
    st.start_time = Some(now);
    st.completion_time = None;
    st.progress = Some(Progress::default());
    set(&mut st.conditions, types::SUCCEEDED, S::Unknown, reasons::RESTORING, message, Some(generation), now);
    set(&mut st.conditions, types::PROGRESSING, S::True, reasons::RESTORING, message, Some(generation), now);
}

/// Progress counters of a running restore.
pub fn progress(st: &mut VolumeRestoreStatus, bytes_done: u64, bytes_total: u64) {
    st.progress = Some(Progress { bytes_done, bytes_total });
}

/// The data is in place (and the workload back).
pub fn completed(
    st: &mut VolumeRestoreStatus,
    generation: i64,
    now: Time,
    volumes: Vec<RestoredVolume>,
    downtime_seconds: Option<f64>,
    pre_restore_snapshot: Option<String>,
    message: &str,
) {
    st.phase = Some(Phase::Completed);
    st.observed_generation = Some(generation);
    st.completion_time = Some(now);
    st.volumes = volumes;
    st.downtime_seconds = downtime_seconds;
    st.pre_restore_snapshot = pre_restore_snapshot;
    // Done is done, whatever the last poll saw.
    if let Some(p) = &mut st.progress {
        p.bytes_done = p.bytes_done.max(p.bytes_total);
        p.bytes_total = p.bytes_done;
    }
    set(&mut st.conditions, types::SUCCEEDED, S::True, reasons::RESTORED, message, Some(generation), now);
    set(
        &mut st.conditions,
        types::PROGRESSING,
        S::False,
        reasons::COMPLETED,
        "Restore finished",
        Some(generation),
        now,
    );
}

/// The restore failed; the message says what, why, and that the live data
/// was left as it was. Failing again for the same reason changes nothing.
pub fn failed(st: &mut VolumeRestoreStatus, generation: i64, now: Time, reason: &str, message: &str) {
    if st.phase == Some(Phase::Failed) && main_reason(st) == Some(reason) {
        return;
    }
    st.phase = Some(Phase::Failed);
    st.observed_generation = Some(generation);
    st.completion_time = Some(now);
    set(&mut st.conditions, types::SUCCEEDED, S::False, reason, message, Some(generation), now);
    set(&mut st.conditions, types::PROGRESSING, S::False, reasons::FAILED, message, Some(generation), now);
}

/// The reason of the `Succeeded` condition, if set.
pub fn main_reason(st: &VolumeRestoreStatus) -> Option<&str> {
    super::conditions::get(&st.conditions, types::SUCCEEDED).map(|c| c.reason.as_str())
}

/// A new object: accepted, waiting for a worker.
pub fn accepted(st: &mut VolumeRestoreStatus, generation: i64, now: Time) {
    pending(st, generation, now, reasons::PENDING, "Accepted; waiting for a worker");
}

/// Another operation holds one of the targets: the restore waits.
pub fn volume_busy(st: &mut VolumeRestoreStatus, generation: i64, now: Time, busy: &str) {
    pending(st, generation, now, reasons::VOLUME_BUSY, &format!("Waiting: another operation is using {busy}"));
}

/// The pre-flight passed and the restore started: says what goes where.
pub fn restoring(st: &mut VolumeRestoreStatus, generation: i64, now: Time, snapshot: &str, targets: &[String]) {
    let msg = format!("Restoring {} volume(s) from VolumeSnapshot {snapshot}: {}", targets.len(), targets.join(", "));
    started(st, generation, now, &msg);
}

/// What a restore that put the data in place reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restored {
    /// Per volume: where the data went and how much.
    pub volumes: Vec<RestoredVolume>,
    /// How long the workload was stopped (in-place restores).
    pub downtime_seconds: Option<f64>,
    /// The snapshot that keeps the replaced data.
    pub pre_restore_snapshot: Option<String>,
    /// What the operator should know.
    pub warnings: Vec<String>,
}

/// The restore put the data in place and the workload runs again.
pub fn restored(st: &mut VolumeRestoreStatus, generation: i64, now: Time, snapshot: &str, r: Restored) {
    let files: u64 = r.volumes.iter().map(|v| v.files).sum();
    let bytes: u64 = r.volumes.iter().map(|v| v.bytes).sum();
    let paths: Vec<&str> = r.volumes.iter().map(|v| v.path.as_str()).collect();
    let mut msg = format!(
        "Restored {} volume(s), {files} files, {bytes} bytes, from VolumeSnapshot {snapshot} into {}",
        r.volumes.len(),
        paths.join(", ")
    );
    if let Some(d) = r.downtime_seconds {
        msg.push_str(&format!("; the workload was stopped for {d:.6} s"));
    }
    if let Some(pre) = &r.pre_restore_snapshot {
        msg.push_str(&format!("; the replaced data is VolumeSnapshot {pre}"));
    }
    for w in &r.warnings {
        msg.push_str(&format!("; WARNING: {w}"));
    }
    completed(st, generation, now, r.volumes, r.downtime_seconds, r.pre_restore_snapshot, &msg);
}

/// A shutdown stopped the restore before anything live was touched.
pub fn interrupted(st: &mut VolumeRestoreStatus, generation: i64, now: Time) {
    pending(
        st,
        generation,
        now,
        reasons::INTERRUPTED,
        "The restore was interrupted by a shutdown before anything live was touched; it starts again from scratch when volsnap next runs",
    );
}

/// The restore holds the workload and waits for the runtime (`runtime`,
/// which does not answer: `why`) before it can finish or roll back.
pub fn waiting_for(st: &mut VolumeRestoreStatus, generation: i64, now: Time, reason: &str, runtime: &str, why: &str) {
    let msg = format!(
        "Waiting for {runtime}: {why}. The journal keeps the restore's state and the workload it stopped; at every resync the recovery sweep tries again and, once {runtime} answers, finishes (or rolls back) the swap and starts it again"
    );
    st.phase = Some(Phase::InProgress);
    st.observed_generation = Some(generation);
    set(&mut st.conditions, types::SUCCEEDED, S::Unknown, reason, &msg, Some(generation), now);
    set(&mut st.conditions, types::PROGRESSING, S::True, reason, &msg, Some(generation), now);
}

/// The restore could not finish (`why`) after the swap may have begun: the
/// journal keeps the state for the recovery sweep.
pub fn unfinished(st: &mut VolumeRestoreStatus, generation: i64, now: Time, why: &str) {
    let msg = format!(
        "The data is being swapped or was swapped, but the restore could not finish ({why}); the journal keeps its state and the recovery sweep finishes it when volsnap next starts"
    );
    set(&mut st.conditions, types::PROGRESSING, S::True, reasons::INTERRUPTED, &msg, Some(generation), now);
    st.phase = Some(Phase::InProgress);
}

/// The recovery sweep finished an interrupted restore (the data is the
/// snapshot's) or rolled it back (the data is as it was; it runs again).
pub fn recovered(st: &mut VolumeRestoreStatus, generation: i64, now: Time, forward: bool, r: Restored) {
    if forward {
        let mut msg = format!(
            "volsnap was interrupted after the swap had begun; the recovery sweep finished it at start-up: {} now hold the snapshot's data",
            r.volumes.iter().map(|v| v.path.as_str()).collect::<Vec<_>>().join(", ")
        );
        for w in &r.warnings {
            msg.push_str(&format!("; WARNING: {w}"));
        }
        completed(st, generation, now, r.volumes, None, r.pre_restore_snapshot, &msg);
    } else {
        let mut msg = "volsnap was interrupted before the swap; the recovery sweep rolled the restore back (the live data is as it was) and it starts again from scratch".to_string();
        for w in &r.warnings {
            msg.push_str(&format!("; WARNING: {w}"));
        }
        pending(st, generation, now, reasons::INTERRUPTED, &msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conditions::{get, is_true};

    use crate::core::test_time as t;

    #[test]
    fn lifecycle() {
        let mut st = VolumeRestoreStatus::default();
        assert_eq!(next_step(None), Step::Restore);
        pending(&mut st, 1, t(1), reasons::PENDING, "waiting");
        assert_eq!(get(&st.conditions, types::SUCCEEDED).unwrap().status, S::Unknown);
        started(&mut st, 1, t(2), "restoring");
        assert!(is_true(&st.conditions, types::PROGRESSING));
        assert_eq!(st.progress, Some(Progress::default()), "a started restore shows progress from zero");
        progress(&mut st, 40, 100);
        assert_eq!(st.progress, Some(Progress { bytes_done: 40, bytes_total: 100 }));
        assert_eq!(next_step(Some(&st)), Step::Restore, "an InProgress restore without a worker is looked at again");
        completed(&mut st, 1, t(3), vec![], Some(0.5), Some("r-pre-restore".into()), "done");
        assert!(is_true(&st.conditions, types::SUCCEEDED));
        assert!(!is_true(&st.conditions, types::PROGRESSING));
        assert_eq!(st.downtime_seconds, Some(0.5));
        assert_eq!(st.progress, Some(Progress { bytes_done: 100, bytes_total: 100 }), "completed is all done");
        assert_eq!(next_step(Some(&st)), Step::Nothing, "a restore runs once");
        let mut st = VolumeRestoreStatus::default();
        failed(&mut st, 1, t(4), reasons::SNAPSHOT_NOT_FOUND, "no such snapshot");
        assert_eq!(st.phase, Some(Phase::Failed));
        assert_eq!(get(&st.conditions, types::SUCCEEDED).unwrap().reason, reasons::SNAPSHOT_NOT_FOUND);
        assert_eq!(next_step(Some(&st)), Step::Nothing);
        let before = st.clone();
        failed(&mut st, 1, t(5), reasons::SNAPSHOT_NOT_FOUND, "still no such snapshot");
        assert_eq!(st, before, "failing again for the same reason rewrites nothing");
    }

    /// Every way a restore's work ends, and the phase, reason and words.
    #[test]
    fn outcome_table() {
        let vol = RestoredVolume { name: "data".into(), path: "/srv/data".into(), files: 3, bytes: 7 };
        let done = Restored {
            volumes: vec![vol],
            downtime_seconds: Some(0.25),
            pre_restore_snapshot: Some("r-pre-restore".into()),
            warnings: vec!["w1".into()],
        };
        type Apply = Box<dyn Fn(&mut VolumeRestoreStatus)>;
        let d1 = done.clone();
        let d2 = done.clone();
        let d3 = done.clone();
        let table: Vec<(&str, Apply, Phase, &str, &str, &str)> = vec![
            (
                "restored",
                Box::new(move |st| restored(st, 1, t(2), "snap", d1.clone())),
                Phase::Completed,
                types::SUCCEEDED,
                reasons::RESTORED,
                "Restored 1 volume(s), 3 files, 7 bytes, from VolumeSnapshot snap into /srv/data; the workload was stopped for 0.250000 s; the replaced data is VolumeSnapshot r-pre-restore; WARNING: w1",
            ),
            (
                "interrupted",
                Box::new(|st| interrupted(st, 1, t(2))),
                Phase::Pending,
                types::SUCCEEDED,
                reasons::INTERRUPTED,
                "before anything live was touched",
            ),
            (
                "waiting",
                Box::new(|st| waiting_for(st, 1, t(2), reasons::DOCKER_UNAVAILABLE, "Docker", "connection refused")),
                Phase::InProgress,
                types::PROGRESSING,
                reasons::DOCKER_UNAVAILABLE,
                "Waiting for Docker: connection refused.",
            ),
            (
                "unfinished",
                Box::new(|st| unfinished(st, 1, t(2), "disk gone")),
                Phase::InProgress,
                types::PROGRESSING,
                reasons::INTERRUPTED,
                "could not finish (disk gone)",
            ),
            (
                "forward",
                Box::new(move |st| recovered(st, 1, t(2), true, d2.clone())),
                Phase::Completed,
                types::SUCCEEDED,
                reasons::RESTORED,
                "the recovery sweep finished it at start-up: /srv/data now hold the snapshot's data; WARNING: w1",
            ),
            (
                "back",
                Box::new(move |st| recovered(st, 1, t(2), false, d3.clone())),
                Phase::Pending,
                types::SUCCEEDED,
                reasons::INTERRUPTED,
                "rolled the restore back (the live data is as it was) and it starts again from scratch; WARNING: w1",
            ),
        ];
        for (name, apply, phase, type_, reason, words) in table {
            let mut st = VolumeRestoreStatus::default();
            restoring(&mut st, 1, t(1), "snap", &["data -> /srv/data".into()]);
            apply(&mut st);
            assert_eq!(st.phase, Some(phase), "{name}");
            let c = get(&st.conditions, type_).unwrap();
            assert_eq!(c.reason, reason, "{name}");
            assert!(c.message.contains(words), "{name}: {}", c.message);
        }
    }
}
