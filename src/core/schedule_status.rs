//! Schedule status transitions. Pure functions of (status, facts, now).

use super::conditions::set;
use super::{reasons, types};
use crate::api::{ConditionStatus as S, Time, VolumeSnapshotScheduleStatus};

/// Condition reasons of schedules.
pub mod reason {
    /// Active: snapshots are taken on the schedule.
    pub const SCHEDULED: &str = "Scheduled";
    /// `spec.suspend`: no snapshots are taken (retention still applies).
    pub const SUSPENDED: &str = "Suspended";
    /// A slot is due, but the previous snapshot still runs.
    pub const PREVIOUS_RUNNING: &str = "PreviousStillRunning";
    /// Retention would have deleted more than its rules explain: nothing was
    /// deleted.
    pub const RETENTION_REFUSED: &str = "RetentionRefused";
}

/// What one reconcile of a schedule found and did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pass {
    /// A snapshot was created for this slot, with this name.
    pub ran: Option<(Time, String)>,
    /// A slot is due, but this snapshot of the schedule still runs.
    pub waiting_for: Option<String>,
    /// When the next slot is.
    pub next: Option<Time>,
    /// Completion time of the newest Completed snapshot.
    pub last_success: Option<Time>,
    /// Snapshots retention deleted.
    pub pruned: Vec<String>,
    /// Why retention deleted nothing although its plan said to.
    pub retention_refused: Option<String>,
    /// `spec.suspend`.
    pub suspended: bool,
    /// The schedule's clock reading in its zone, for messages.
    pub zone: String,
}

/// The status after one reconcile.
pub fn reconciled(st: &mut VolumeSnapshotScheduleStatus, generation: i64, now: Time, pass: &Pass) {
    st.observed_generation = Some(generation);
    if let Some((slot, name)) = &pass.ran {
        st.last_schedule_time = Some(*slot);
        st.last_snapshot = Some(name.clone());
    }
    st.next_schedule_time = if pass.suspended { None } else { pass.next };
    if pass.last_success.is_some() {
        st.last_successful_time = pass.last_success;
    }
    let (status, why, mut msg) = if pass.suspended {
        (S::False, reason::SUSPENDED, "Suspended: no snapshots are taken; retention still applies".to_string())
    } else if let Some(running) = &pass.waiting_for {
        (
            S::True,
            reason::PREVIOUS_RUNNING,
            format!("A snapshot is due, but {running} still runs: the next one starts when it ends"),
        )
    } else {
        let next = pass.next.map(|t| format!("next at {t} ({})", pass.zone)).unwrap_or_else(|| "no next run".into());
        (S::True, reason::SCHEDULED, format!("Scheduled: {next}"))
    };
    if !pass.pruned.is_empty() {
        msg.push_str(&format!("; retention deleted {}", pass.pruned.join(", ")));
    }
    let why = match &pass.retention_refused {
        Some(refused) => {
            msg.push_str(&format!("; retention deleted nothing: {refused}"));
            reason::RETENTION_REFUSED
        }
        None => why,
    };
    set(&mut st.conditions, types::READY, status, why, &msg, Some(generation), now);
}

/// The schedule's spec cannot be read (a cron expression or time zone that
/// validation let through: a newer or older volsnap wrote it).
pub fn invalid(st: &mut VolumeSnapshotScheduleStatus, generation: i64, now: Time, message: &str) {
    st.observed_generation = Some(generation);
    st.next_schedule_time = None;
    set(&mut st.conditions, types::READY, S::False, reasons::INVALID_SPEC, message, Some(generation), now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conditions::get;
    use crate::core::test_time as t;

    #[test]
    fn status_table() {
        let base = Pass { next: Some(t(600)), zone: "UTC".into(), ..Default::default() };
        let table: Vec<(&str, Pass, S, &str, &str)> = vec![
            ("idle", base.clone(), S::True, reason::SCHEDULED, "next at"),
            ("ran", Pass { ran: Some((t(60), "s-1".into())), ..base.clone() }, S::True, reason::SCHEDULED, "Scheduled"),
            (
                "busy",
                Pass { waiting_for: Some("s-1".into()), ..base.clone() },
                S::True,
                reason::PREVIOUS_RUNNING,
                "s-1 still runs",
            ),
            (
                "suspended",
                Pass { suspended: true, ..base.clone() },
                S::False,
                reason::SUSPENDED,
                "retention still applies",
            ),
            (
                "pruned",
                Pass { pruned: vec!["s-0".into()], ..base.clone() },
                S::True,
                reason::SCHEDULED,
                "retention deleted s-0",
            ),
            (
                "refused",
                Pass { retention_refused: Some("too many".into()), ..base.clone() },
                S::True,
                reason::RETENTION_REFUSED,
                "deleted nothing: too many",
            ),
        ];
        for (name, pass, status, why, words) in table {
            let mut st = VolumeSnapshotScheduleStatus::default();
            reconciled(&mut st, 1, t(100), &pass);
            let c = get(&st.conditions, types::READY).unwrap();
            assert_eq!((c.status, c.reason.as_str()), (status, why), "{name}");
            assert!(c.message.contains(words), "{name}: {}", c.message);
            if name == "ran" {
                assert_eq!((st.last_schedule_time, st.last_snapshot.as_deref()), (Some(t(60)), Some("s-1")));
            }
            if name == "suspended" {
                assert_eq!(st.next_schedule_time, None, "a suspended schedule has no next run");
            }
        }
    }
}
