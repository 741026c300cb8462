//! Schedules: when a slot is due, the snapshot to create from the template;
//! which of the schedule's snapshots retention deletes; the status. Time is
//! passed in, so tests run on a controllable clock.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::Reconciler;
use crate::api::{
    DeletionPolicy, Phase, SCHEDULE_LABEL, Time, VolumeSnapshot, VolumeSnapshotSchedule, VolumeSnapshotScheduleStatus,
};
use crate::core::retention::{self, Candidate, Policy, State};
use crate::core::schedule::{CronSchedule, Due, snapshot_name};
use crate::core::schedule_status::{self as sched, Pass};

/// What a schedule's reconcile decided.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleOutcome {
    /// The status the schedule must have.
    pub status: VolumeSnapshotScheduleStatus,
    /// The snapshot to create (at most one per reconcile).
    pub create: Option<VolumeSnapshot>,
    /// Names of the schedule's snapshots retention deletes.
    pub delete: Vec<String>,
    /// When to look again (the next slot, or soon while one is waiting).
    pub wake_at: Option<Time>,
}

impl Reconciler {
    /// Reconciles one schedule at `now`, given the snapshots it created
    /// (those labelled `volsnap.dev/schedule: <name>` in its namespace).
    pub fn schedule(
        &mut self,
        s: &VolumeSnapshotSchedule,
        children: &[VolumeSnapshot],
        now: Timestamp,
    ) -> ScheduleOutcome {
        let generation = s.metadata.generation.unwrap_or(1);
        let mut st = s.status.clone().unwrap_or_default();
        let name = s.metadata.name.clone().unwrap_or_default();
        let cron = match CronSchedule::parse(&s.spec.schedule, s.spec.time_zone.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                sched::invalid(&mut st, generation, Time(now), &format!("spec.schedule: {e}"));
                return ScheduleOutcome { status: st, create: None, delete: Vec::new(), wake_at: None };
            }
        };
        let mut pass = Pass { suspended: s.spec.suspend, zone: cron.time_zone_name().to_string(), ..Pass::default() };
        let mut create = None;
        let mut wake_at = None;
        if !s.spec.suspend {
            let last_run = st.last_schedule_time.map(|t| t.0);
            let created = s.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
            match cron.due(last_run, created, now) {
                Due::RunNow { slot, next } => {
                    pass.next = next.map(Time);
                    let snapshot = snapshot_name(&name, slot);
                    // Never two runs of one schedule at once: the slot
                    // waits (and runs, once) until the previous one ends.
                    let running =
                        children.iter().find(|c| !running_done(c) && c.metadata.name.as_deref() != Some(&snapshot));
                    match running {
                        Some(c) => {
                            pass.waiting_for = c.metadata.name.clone();
                            wake_at = Some(Time(now + jiff::SignedDuration::from_secs(5)));
                        }
                        None => {
                            if !children.iter().any(|c| c.metadata.name.as_deref() == Some(&snapshot)) {
                                create = Some(from_template(s, &snapshot));
                                tracing::info!(schedule = name, snapshot, "Schedule slot due: creating its snapshot");
                            }
                            pass.ran = Some((Time(slot), snapshot));
                            wake_at = pass.next;
                        }
                    }
                }
                Due::WaitUntil(next) => {
                    pass.next = Some(Time(next));
                    wake_at = pass.next;
                }
                Due::Never => {}
            }
        }
        pass.last_success = children
            .iter()
            .filter(|c| phase(c) == Some(Phase::Completed))
            .filter_map(|c| c.status.as_ref().and_then(|st| st.completion_time))
            .max();
        let mut delete = Vec::new();
        if let Some(r) = &s.spec.retention {
            let candidates: Vec<Candidate> = children
                .iter()
                .filter(|c| c.metadata.deletion_timestamp.is_none())
                .map(|c| Candidate {
                    name: c.metadata.name.clone().unwrap_or_default(),
                    created: c.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0),
                    state: match phase(c) {
                        Some(Phase::Completed) => State::Succeeded,
                        Some(Phase::Failed) => State::Failed,
                        _ => State::Running,
                    },
                })
                .collect();
            let plan = retention::plan(&candidates, &Policy::from(r), cron.time_zone(), now);
            match plan.limit() {
                Ok(names) => delete = names.into_iter().map(str::to_string).collect(),
                Err(e) => pass.retention_refused = Some(e.to_string()),
            }
            pass.pruned = delete.clone();
        }
        if let Some(t) = pass.last_success {
            let label = crate::metrics::ScheduleLabel {
                namespace: s.metadata.namespace.clone().unwrap_or_default(),
                schedule: name.clone(),
            };
            self.metrics.schedule_last_success.get_or_create(&label).set(t.0.as_millisecond() as f64 / 1000.0);
        }
        sched::reconciled(&mut st, generation, Time(now), &pass);
        ScheduleOutcome { status: st, create, delete, wake_at }
    }
}

fn phase(s: &VolumeSnapshot) -> Option<Phase> {
    s.status.as_ref().and_then(|st| st.phase)
}

/// Whether a snapshot's capture has ended (Completed or Failed).
fn running_done(s: &VolumeSnapshot) -> bool {
    phase(s).is_some_and(|p| p.is_terminal())
}

/// The snapshot for one slot: the template's spec and metadata, labelled
/// with its schedule, `deletionPolicy: Delete` (retention removes the
/// archives with the objects).
fn from_template(s: &VolumeSnapshotSchedule, name: &str) -> VolumeSnapshot {
    let template = &s.spec.snapshot_template;
    let mut spec = template.spec.clone();
    spec.deletion_policy = DeletionPolicy::Delete;
    let mut snapshot = VolumeSnapshot::new(name, spec);
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = meta.labels;
    labels.insert(SCHEDULE_LABEL.into(), s.metadata.name.clone().unwrap_or_default());
    snapshot.metadata.namespace = s.metadata.namespace.clone();
    snapshot.metadata.labels = Some(labels);
    snapshot.metadata.annotations = Some(meta.annotations).filter(|a| !a.is_empty());
    snapshot
}
