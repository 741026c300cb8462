//! Status that is not about capturing or restoring: an object that failed
//! validation, an edit of an immutable spec, a schedule this release does
//! not run, and the condition transitions a driver reports (log lines in
//! files mode, Events in a cluster).

use super::conditions::{get, set};
use super::{reasons, types};
use crate::api::{Condition, ConditionStatus as S, Kind, Phase, Time, VolumeSnapshotScheduleStatus};

/// The condition that says whether an object did its job: `Succeeded` for
/// restores (bounded work), `Ready` otherwise.
pub fn main_condition(kind: Kind) -> &'static str {
    if kind == Kind::Restore { types::SUCCEEDED } else { types::READY }
}

/// The status of an object that failed validation (`message` names the
/// field): `Failed` with `InvalidSpec`, as JSON since the object could not
/// be read into its type. A schedule has no phase.
pub fn invalid_spec(kind: Kind, generation: i64, now: Time, message: &str) -> serde_json::Value {
    let mut conditions = Vec::new();
    set(&mut conditions, main_condition(kind), S::False, reasons::INVALID_SPEC, message, Some(generation), now);
    let mut status = serde_json::json!({ "observedGeneration": generation, "conditions": conditions });
    if kind != Kind::Schedule {
        status["phase"] = serde_json::to_value(Phase::Failed).unwrap_or_default();
    }
    status
}

/// Files mode: an edit of an immutable spec is reported (`edit`: what and
/// why it was not applied), and the report cleared once the manifest
/// matches again. In a cluster the CRD's CEL rule refuses such edits.
pub fn spec_changed(conditions: &mut Vec<Condition>, generation: i64, now: Time, edit: Option<&str>) {
    match edit {
        Some(msg) => set(conditions, types::SPEC_CHANGED, S::True, reasons::SPEC_IMMUTABLE, msg, Some(generation), now),
        None => {
            if get(conditions, types::SPEC_CHANGED).is_some_and(|c| c.status == S::True) {
                let msg = "The manifest matches the applied spec again";
                set(conditions, types::SPEC_CHANGED, S::False, reasons::SPEC_MATCHES, msg, Some(generation), now);
            }
        }
    }
}

/// A schedule is validated but not run by this release.
pub fn schedule_not_run(st: &mut VolumeSnapshotScheduleStatus, generation: i64, now: Time) {
    st.observed_generation = Some(generation);
    let msg = "VolumeSnapshotSchedule is validated but not run by this release of volsnap";
    set(&mut st.conditions, types::READY, S::False, reasons::NOT_IMPLEMENTED, msg, Some(generation), now);
}

/// A condition whose status or reason changed: what a driver tells people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The condition type.
    pub type_: String,
    /// Its new status.
    pub status: S,
    /// Its new reason.
    pub reason: String,
    /// Its message.
    pub message: String,
    /// Whether it reports a failure (an Event of type Warning, a log line
    /// at warning level).
    pub warning: bool,
}

/// The conditions of `after` whose status or reason differ from `before`
/// (progress and message-only updates are not transitions; a message said
/// by two conditions at once is reported once).
pub fn transitions(before: &[Condition], after: &[Condition], phase: Option<Phase>) -> Vec<Transition> {
    let mut said: Vec<&str> = Vec::new();
    after
        .iter()
        .filter(|c| get(before, &c.type_).is_none_or(|b| b.status != c.status || b.reason != c.reason))
        .filter(|c| c.type_ != types::PROGRESSING || c.status == S::True)
        .filter(|c| {
            let new = !said.contains(&c.message.as_str());
            said.push(&c.message);
            new
        })
        .map(|c| Transition {
            type_: c.type_.clone(),
            status: c.status,
            reason: c.reason.clone(),
            message: c.message.clone(),
            warning: phase == Some(Phase::Failed)
                || (c.type_ == types::SPEC_CHANGED && c.status == S::True)
                || reasons::retried(&c.reason),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::core::test_time as t;

    #[test]
    fn invalid_spec_per_kind() {
        let table = [
            (Kind::Snapshot, "Ready", Some("Failed")),
            (Kind::Restore, "Succeeded", Some("Failed")),
            (Kind::Schedule, "Ready", None),
        ];
        for (kind, main, phase) in table {
            let st = invalid_spec(kind, 2, t(1), "spec.source: exactly one of ...");
            assert_eq!(st["phase"].as_str(), phase, "{kind:?}");
            assert_eq!(st["observedGeneration"], 2);
            assert_eq!(st["conditions"][0]["type"], main);
            assert_eq!(st["conditions"][0]["reason"], reasons::INVALID_SPEC);
            assert_eq!(st["conditions"][0]["message"], "spec.source: exactly one of ...");
        }
    }

    #[test]
    fn spec_change_is_reported_then_cleared() {
        let mut cs = Vec::new();
        spec_changed(&mut cs, 1, t(1), None);
        assert!(cs.is_empty(), "no condition until an edit is seen");
        spec_changed(&mut cs, 1, t(2), Some("edited"));
        assert_eq!((cs[0].status, cs[0].reason.as_str()), (S::True, reasons::SPEC_IMMUTABLE));
        spec_changed(&mut cs, 1, t(3), None);
        assert_eq!((cs[0].status, cs[0].reason.as_str()), (S::False, reasons::SPEC_MATCHES));
    }

    #[test]
    fn transitions_are_status_or_reason_changes() {
        let mut before = Vec::new();
        set(&mut before, types::READY, S::False, reasons::PENDING, "a", Some(1), t(1));
        set(&mut before, types::PROGRESSING, S::False, reasons::PENDING, "a", Some(1), t(1));
        let mut same = before.clone();
        set(&mut same, types::READY, S::False, reasons::PENDING, "other words", Some(1), t(2));
        assert!(transitions(&before, &same, Some(Phase::Pending)).is_empty(), "a new message alone is no transition");
        let mut after = before.clone();
        set(&mut after, types::READY, S::False, reasons::NO_DATA, "nothing", Some(1), t(2));
        set(&mut after, types::PROGRESSING, S::False, reasons::FAILED, "nothing", Some(1), t(2));
        let ts = transitions(&before, &after, Some(Phase::Failed));
        assert_eq!(ts.len(), 1, "Progressing going False is not reported on its own: {ts:?}");
        assert_eq!((ts[0].reason.as_str(), ts[0].warning), (reasons::NO_DATA, true));
    }
}
