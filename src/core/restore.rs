//! Restore status transitions. Pure functions of (status, facts, now).

use super::conditions::set;
use super::{reasons, types};
use crate::api::{ConditionStatus as S, Phase, RestoredVolume, Time, VolumeRestoreStatus};

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
    set(&mut st.conditions, types::SUCCEEDED, S::Unknown, reasons::RESTORING, message, Some(generation), now);
    set(&mut st.conditions, types::PROGRESSING, S::True, reasons::RESTORING, message, Some(generation), now);
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

/// The restore holds (or held) the workload and waits for the runtime to
/// answer: its journal keeps the state, and the recovery sweep finishes it
/// at a resync once Docker is back. Not a failure.
pub fn waiting_for_runtime(st: &mut VolumeRestoreStatus, generation: i64, now: Time, message: &str) {
    st.phase = Some(Phase::InProgress);
    st.observed_generation = Some(generation);
    set(&mut st.conditions, types::SUCCEEDED, S::Unknown, reasons::DOCKER_UNAVAILABLE, message, Some(generation), now);
    set(&mut st.conditions, types::PROGRESSING, S::True, reasons::DOCKER_UNAVAILABLE, message, Some(generation), now);
}

/// The restore failed; the message says what, why, and that the live data
/// was left as it was.
pub fn failed(st: &mut VolumeRestoreStatus, generation: i64, now: Time, reason: &str, message: &str) {
    st.phase = Some(Phase::Failed);
    st.observed_generation = Some(generation);
    st.completion_time = Some(now);
    set(&mut st.conditions, types::SUCCEEDED, S::False, reason, message, Some(generation), now);
    set(&mut st.conditions, types::PROGRESSING, S::False, reasons::FAILED, message, Some(generation), now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conditions::{get, is_true};

    fn t(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn lifecycle() {
        let mut st = VolumeRestoreStatus::default();
        assert_eq!(next_step(None), Step::Restore);
        pending(&mut st, 1, t(1), reasons::PENDING, "waiting");
        assert_eq!(get(&st.conditions, types::SUCCEEDED).unwrap().status, S::Unknown);
        started(&mut st, 1, t(2), "restoring");
        assert!(is_true(&st.conditions, types::PROGRESSING));
        assert_eq!(next_step(Some(&st)), Step::Restore, "an InProgress restore without a worker is looked at again");
        completed(&mut st, 1, t(3), vec![], Some(0.5), Some("r-pre-restore".into()), "done");
        assert!(is_true(&st.conditions, types::SUCCEEDED));
        assert!(!is_true(&st.conditions, types::PROGRESSING));
        assert_eq!(st.downtime_seconds, Some(0.5));
        assert_eq!(next_step(Some(&st)), Step::Nothing, "a restore runs once");
        let mut st = VolumeRestoreStatus::default();
        failed(&mut st, 1, t(4), reasons::SNAPSHOT_NOT_FOUND, "no such snapshot");
        assert_eq!(st.phase, Some(Phase::Failed));
        assert_eq!(get(&st.conditions, types::SUCCEEDED).unwrap().reason, reasons::SNAPSHOT_NOT_FOUND);
        assert_eq!(next_step(Some(&st)), Step::Nothing);
    }
}
