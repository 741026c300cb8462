//! Recovery: the sweep that finishes or rolls back every restore the
//! journal says was interrupted.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use super::execute::{Sites, remove_staging};
use super::plan::{Destination, JournalStep, ObjRef, PreRestoreSnapshot, RestorePlan, record_step};
use super::pre_restore::{finish_after_swap, record_finished};
use super::swap_state::{VolumeState, foreign, same_dir, swap_forward, unswap, volume_state};
use crate::api::RestoredVolume;
use crate::engine::capture::CaptureProgress;
use crate::engine::quiesce::resume_in_order;
use crate::engine::site::Roots;
use crate::engine::workload::{Purpose, StoppedUnit, Workload, WorkloadError};
use crate::store::{JournalRow, Store};

/// What the recovery sweep did with one interrupted restore.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovered {
    /// The restore (it may no longer exist).
    pub restore: ObjRef,
    /// `true`: rolled forward (the data is the snapshot's); `false`: rolled
    /// back (the data is as before the restore).
    pub forward: bool,
    /// The restored volumes (forward only).
    pub volumes: Vec<RestoredVolume>,
    /// The pre-restore snapshot recorded (forward only): the caller creates
    /// its object if it does not exist yet.
    pub pre_restore: Option<PreRestoreSnapshot>,
    /// The restore had finished (journal step `Recorded`) and only the
    /// acknowledgement was missing: its status may already say so.
    pub finished_before: bool,
    /// Problems met (a workload that did not start, ...).
    pub warnings: Vec<String>,
}

/// A journal row recovery could not act on: kept, and retried.
#[derive(Clone, Debug, PartialEq)]
pub struct Stuck {
    /// The restore.
    pub restore: ObjRef,
    /// Its targets: nothing else may touch them until it is resolved.
    pub targets: Vec<PathBuf>,
    /// Why.
    pub error: String,
    /// The runtime (Docker) does not answer: the restore waits for it.
    pub waiting_for_runtime: bool,
}

/// Why the recovery of one restore could not finish now.
#[derive(Debug)]
struct RecoverError {
    message: String,
    waiting_for_runtime: bool,
}

impl RecoverError {
    fn workload(what: &str, e: WorkloadError) -> RecoverError {
        RecoverError { message: format!("{what}: {e}"), waiting_for_runtime: e.unreachable }
    }
}

impl From<String> for RecoverError {
    fn from(message: String) -> RecoverError {
        RecoverError { message, waiting_for_runtime: false }
    }
}

/// Before the recovery of a restore moves a directory or starts a unit:
/// every unit the journal lists, and any unit that uses the targets and is
/// live now, is stopped (journaled first). Stopping a stopped container
/// returns at once; one whose stop Docker still has in flight is waited for.
fn hold_for_recovery(
    store: &Store,
    workload: &dyn Workload,
    plan: &mut RestorePlan,
    step: JournalStep,
) -> Result<(), RecoverError> {
    let targets: Vec<PathBuf> = plan.volumes.iter().map(|v| v.target.clone()).collect();
    let live = workload
        .plan_stop(&targets, Purpose::Restore)
        .map_err(|e| RecoverError::workload("re-checking the workload", e))?;
    let new: Vec<StoppedUnit> = live.into_iter().filter(|u| !plan.stopped.iter().any(|s| s.id == u.id)).collect();
    if !new.is_empty() {
        plan.stopped.extend(new);
        record_step(store, plan, step)?;
    }
    let stoppable: Vec<StoppedUnit> = plan.stopped.iter().filter(|u| !u.paused).cloned().collect();
    workload
        .stop(&stoppable, plan.stop_timeout_seconds)
        .map_err(|e| RecoverError::workload("stopping the workload before recovering", e))?;
    Ok(())
}

/// Finishes or rolls back every restore the journal says was interrupted,
/// except those `skip` names (a restore running in this process, or one
/// whose outcome the caller already holds). Rows of finished restores
/// (`Recorded`) are reported again, and stay until acknowledged. Runs at
/// start-up before any reconcile, and again at every resync for rows that
/// could not be acted on, whether or not the restore objects still exist.
pub fn recover(
    store: &Store,
    workload: &dyn Workload,
    roots: &Roots,
    skip: &dyn Fn(&str) -> bool,
) -> Result<(Vec<Recovered>, Vec<Stuck>), crate::store::StoreError> {
    let mut out = Vec::new();
    let mut stuck = Vec::new();
    for row in store.journal_rows()? {
        if skip(&row.restore_uid) {
            continue;
        }
        let restore = ObjRef { namespace: row.namespace.clone(), name: row.name.clone(), uid: row.restore_uid.clone() };
        let (Some(step), Ok(plan)) =
            (JournalStep::parse(&row.step), serde_json::from_str::<RestorePlan>(&row.plan_json))
        else {
            tracing::error!(restore = %row.name, step = row.step, "Journal row cannot be read; left in place for an operator");
            continue;
        };
        let targets = match &plan.destination {
            Destination::NewDirectory { target, .. } => vec![target.clone()],
            Destination::InPlace => plan.volumes.iter().map(|v| v.target.clone()).collect(),
        };
        match recover_one(store, workload, roots, step, plan) {
            Ok(r) => out.push(r),
            Err(RecoverError { message: error, waiting_for_runtime }) => {
                tracing::error!(restore = %restore.name, error = %error, "Could not recover an interrupted restore; the journal row is kept, its targets stay locked, and it is retried at every resync");
                stuck.push(Stuck { restore, targets, error, waiting_for_runtime });
            }
        }
    }
    Ok((out, stuck))
}

fn recover_one(
    store: &Store,
    workload: &dyn Workload,
    roots: &Roots,
    step: JournalStep,
    plan: RestorePlan,
) -> Result<Recovered, RecoverError> {
    let mut warnings = Vec::new();
    // The parents are opened beneath the trusted roots and must be the
    // directories the pre-flight checked; otherwise nothing is done and the
    // row stays for an operator.
    let sites = Sites::open(roots, &plan).map_err(|e| e.to_string())?;
    let volumes: Vec<RestoredVolume> = plan
        .volumes
        .iter()
        .map(|v| RestoredVolume { name: v.name.clone(), path: v.target.display().to_string(), files: 0, bytes: 0 })
        .collect();
    let restore_ref = plan.restore.clone();
    let back = |warnings: Vec<String>| Recovered {
        restore: restore_ref.clone(),
        forward: false,
        volumes: Vec::new(),
        pre_restore: None,
        finished_before: false,
        warnings,
    };
    if let (Destination::NewDirectory { target, staging, .. }, Sites::NewDirectory(site)) = (&plan.destination, &sites)
    {
        let new_id = plan.volumes.first().and_then(|v| v.new_id);
        let forward = step >= JournalStep::Swapping && same_dir(site.id(target).map_err(|e| e.to_string())?, new_id);
        if !forward {
            site.remove_tree(staging).map_err(|e| format!("removing {}: {e}", staging.display()))?;
            store.journal_delete(&plan.restore.uid).map_err(|e| e.to_string())?;
        } else if step < JournalStep::Recorded {
            record_finished(store, &plan)?;
        }
        tracing::info!(restore = %plan.restore.name, forward, "Recovered an interrupted restore into a new directory");
        return Ok(if forward {
            warnings.extend(plan.extract_notes.iter().cloned());
            Recovered {
                restore: plan.restore.clone(),
                forward,
                volumes,
                pre_restore: None,
                finished_before: step == JournalStep::Recorded,
                warnings,
            }
        } else {
            back(warnings)
        });
    }
    let mut plan = plan;
    let states: Vec<VolumeState> = plan
        .volumes
        .iter()
        .enumerate()
        .map(|(i, v)| volume_state(v, sites.volume(i)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if (JournalStep::Stopping..=JournalStep::Swapped).contains(&step)
        && let Some(i) = states.iter().position(|s| *s == VolumeState::Foreign)
    {
        // Another restore or a person changed the target since: going either
        // way would swap over data this restore knows nothing about.
        return Err(foreign(&plan.volumes[i]).to_string().into());
    }
    let forward = match step {
        JournalStep::Extracting | JournalStep::Extracted => false,
        JournalStep::Stopping | JournalStep::Swapping => states.contains(&VolumeState::Swapped),
        JournalStep::Swapped | JournalStep::Started | JournalStep::Recorded => true,
    };
    // From the stop until the workload is started again, the units the
    // journal lists must be down before any directory under them moves and
    // before they are started: a stop Docker still had in flight when
    // volsnap died is waited for (bounded by each unit's grace period), and
    // anything that came up meanwhile (a restart policy, an operator) is
    // journaled and stopped too, so it starts again on the right data.
    if (JournalStep::Stopping..=JournalStep::Swapped).contains(&step) {
        hold_for_recovery(store, workload, &mut plan, step)?;
    }
    if forward {
        if step < JournalStep::Started {
            for (i, v) in plan.volumes.iter().enumerate() {
                swap_forward(v, sites.volume(i))
                    .map_err(|e| format!("finishing the swap of {}: {e}", v.target.display()))?;
            }
        }
    } else {
        // Before `Stopping` nothing can have moved (and the identities may
        // not even be recorded yet): only staging directories are removed.
        if step >= JournalStep::Stopping {
            for (i, v) in plan.volumes.iter().enumerate() {
                unswap(v, sites.volume(i)).map_err(|e| format!("rolling back {}: {e}", v.target.display()))?;
            }
        }
        remove_staging(&plan, &sites).map_err(|e| format!("removing staging directories: {e}"))?;
    }
    // What the journal says is stopped is started again, in both
    // directions; from `Started` on it already runs and is left alone. If
    // the runtime cannot be asked, the row stays and is retried.
    if (JournalStep::Stopping..=JournalStep::Swapped).contains(&step) {
        let (w, failed) = resume_in_order(workload, &plan.stopped, |_| {});
        warnings.extend(w);
        if let Some(e) = failed {
            return Err(RecoverError::workload("starting the workload again", e));
        }
    }
    if !forward {
        store.journal_delete(&plan.restore.uid).map_err(|e| e.to_string())?;
        tracing::info!(restore = %plan.restore.name, step = step.as_str(), "Rolled back an interrupted restore: the live data is as it was");
        return Ok(back(warnings));
    }
    if step < JournalStep::Started {
        let row = JournalRow {
            restore_uid: plan.restore.uid.clone(),
            namespace: plan.restore.namespace.clone(),
            name: plan.restore.name.clone(),
            step: JournalStep::Started.as_str().into(),
            plan_json: serde_json::to_string(&plan).map_err(|e| e.to_string())?,
        };
        store.journal_put(&row).map_err(|e| e.to_string())?;
    }
    let mut recorded = None;
    if step >= JournalStep::Recorded {
        // The pre-restore snapshot is recorded: only the removal (and the
        // acknowledgement) was left.
        recorded = plan.pre_restore_recorded.clone().or_else(|| {
            plan.pre_restore.as_ref().map(|p| PreRestoreSnapshot {
                namespace: p.snapshot.namespace.clone(),
                name: p.snapshot.name.clone(),
                record_id: p.snapshot.uid.clone(),
                recorded: None,
            })
        });
        plan.pre_restore = None;
    }
    let never = AtomicBool::new(false);
    let (pre, more) =
        finish_after_swap(store, &plan, &sites, &never, &CaptureProgress::default()).map_err(|f| format!("{f:?}"))?;
    warnings.extend(more);
    warnings.extend(plan.extract_notes.iter().cloned());
    if step == JournalStep::Recorded {
        tracing::info!(restore = %plan.restore.name, "Found a finished restore whose outcome was not acknowledged yet");
    } else {
        tracing::info!(restore = %plan.restore.name, step = step.as_str(), "Rolled forward an interrupted restore: the live data is the snapshot's");
    }
    Ok(Recovered {
        restore: plan.restore.clone(),
        forward: true,
        volumes,
        pre_restore: pre.or(recorded),
        finished_before: step == JournalStep::Recorded,
        warnings,
    })
}
