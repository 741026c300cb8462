//! Keeping the workload still while a capture reads its volumes
//! (`quiesce: Pause | Stop`), whatever the runtime behind [`Workload`].
//!
//! [`Quiesce::begin`] names the units that use the captured directories,
//! records them in the quiesce journal (SQLite, durable) BEFORE acting, then
//! pauses or stops them. [`Quiesce::finish`] brings them back and forgets
//! the record; if it is never called (an error, a panic unwinding through
//! the capture) `Drop` does it. After a crash the start-up sweep
//! ([`recover`]) resumes whatever the journal still lists, so a container is
//! never left frozen. Only recorded units are ever resumed.

use std::path::PathBuf;

use super::fault;
use super::workload::{Purpose, StoppedUnit, Workload, WorkloadError};
use crate::api::QuiesceMode;
use crate::store::{QuiesceRow, Store, StoreError};

/// Units a capture paused or stopped, resumed on `finish` or drop.
pub struct Quiesce<'a> {
    workload: &'a dyn Workload,
    store: &'a Store,
    operation_uid: String,
    namespace: String,
    name: String,
    units: Vec<StoppedUnit>,
    /// The captured directories: re-planned at the end to find units that
    /// came up during the read.
    dirs: Vec<PathBuf>,
    purpose: Purpose,
    /// What the operator should know from the pause or stop itself (a
    /// container that had to be killed).
    warnings: Vec<String>,
    done: bool,
}

impl<'a> Quiesce<'a> {
    /// Pauses (or stops) every unit that uses `dirs`, journaling them first.
    /// `stop_timeout` overrides each container's own grace period. On
    /// failure, whatever was already acted on is resumed before the error
    /// is returned.
    pub fn begin(
        workload: &'a dyn Workload,
        store: &'a Store,
        row: (String, String, String),
        dirs: &[PathBuf],
        mode: QuiesceMode,
        stop_timeout: Option<u32>,
    ) -> Result<Quiesce<'a>, String> {
        let (operation_uid, namespace, name) = row;
        let purpose = if mode == QuiesceMode::Pause { Purpose::Capture } else { Purpose::CaptureStop };
        let mut units = workload.plan_stop(dirs, purpose).map_err(|e| e.to_string())?;
        if mode == QuiesceMode::Pause && !units.is_empty() && !workload.can_pause() {
            return Err(
                "this runtime cannot pause workloads, and reading them unfrozen would not be consistent; use quiesce: Stop"
                    .into(),
            );
        }
        for u in units.iter_mut() {
            u.paused = mode == QuiesceMode::Pause;
        }
        let mut q = Quiesce {
            workload,
            store,
            operation_uid,
            namespace,
            name,
            units,
            dirs: dirs.to_vec(),
            purpose,
            warnings: Vec::new(),
            done: false,
        };
        if q.units.is_empty() {
            q.done = true;
            return Ok(q);
        }
        q.record()?;
        fault::point("capture:quiescing");
        let acted = match mode {
            QuiesceMode::Pause => workload.pause(&q.units).map(Some),
            _ => workload.stop(&q.units, stop_timeout).map(|w| {
                q.warnings = w;
                None
            }),
        };
        if let Ok(Some(held)) = &acted
            && *held != q.units
        {
            // Only what was really held is volsnap's to resume, and as it
            // was held (a restarting container is stopped, not paused).
            q.units = held.clone();
            q.record()?;
        }
        if let Err(e) = acted {
            if mode == QuiesceMode::Pause {
                // `pause` already resumed what it paused; resuming the rest
                // of the plan could unpause what someone else paused.
                q.units.clear();
            }
            let resumed = q.finish();
            let mut msg = e.to_string();
            if let Err(e2) = resumed {
                msg.push_str(&format!("; resuming also failed: {e2}"));
            }
            return Err(msg);
        }
        fault::point("capture:quiesced");
        fault::pause("capture:quiesced");
        Ok(q)
    }

    /// Writes the units to the quiesce journal (before acting on them).
    fn record(&self) -> Result<(), String> {
        let units_json = serde_json::to_string(&self.units).map_err(|e| e.to_string())?;
        self.store
            .quiesce_put(&QuiesceRow {
                operation_uid: self.operation_uid.clone(),
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                units_json,
            })
            .map_err(|e| format!("cannot record the quiesce: {e}"))
    }

    /// The units acted on (for messages).
    pub fn units(&self) -> &[StoppedUnit] {
        &self.units
    }

    /// Brings the units back; returns warnings (a unit that had to be
    /// killed, one that came up during the read, stale IDs, units resumed by
    /// someone else). The journal row is removed only once the runtime
    /// answered for every unit; `Err` with `unreachable` means it did not,
    /// and the row stays for the sweep at every resync.
    pub fn finish(&mut self) -> Result<Vec<String>, WorkloadError> {
        if self.done {
            return Ok(Vec::new());
        }
        self.done = true;
        let mut warnings = std::mem::take(&mut self.warnings);
        warnings.extend(self.came_up_during_read());
        let units = self.units.clone();
        let (resumed, failed) = resume_in_order(self.workload, &units, |left| {
            self.units = left.to_vec();
            if let Err(e) = self.record() {
                tracing::error!(operation = self.operation_uid, error = %e, "Could not update the quiesce journal");
            }
        });
        warnings.extend(resumed);
        if let Some(e) = failed {
            for w in &warnings {
                tracing::warn!(operation = self.operation_uid, "{w}");
            }
            return Err(e);
        }
        self.store.quiesce_delete(&self.operation_uid).map_err(|e| {
            WorkloadError::refused("forgetting", "the quiesce journal row", format!("{e}; the sweep retries"))
        })?;
        Ok(warnings)
    }

    /// Units that use the directories and are live now although they were
    /// not held (a container someone started, or one its restart policy
    /// brought back): the read was not consistent for them.
    fn came_up_during_read(&self) -> Vec<String> {
        let Ok(now) = self.workload.plan_stop(&self.dirs, self.purpose) else { return Vec::new() };
        now.iter()
            .filter(|u| !self.units.iter().any(|h| h.id == u.id))
            .map(|u| {
                format!(
                    "{} came up while volsnap read the data, so it was not held still throughout: the archive may not be consistent",
                    self.workload.describe(u)
                )
            })
            .collect()
    }
}

impl Drop for Quiesce<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::error!(operation = self.operation_uid, error = %e, "Could not resume the quiesced workload; the start-up sweep retries");
        }
    }
}

/// Brings `units` back one at a time, in order, calling `left` with the
/// units not yet confirmed back after each one that is (so a journal can
/// shrink as it goes, and a retry never touches a unit twice). Stops at the
/// first unit the runtime cannot be asked about: returns the warnings so
/// far and that error.
pub fn resume_in_order(
    workload: &dyn Workload,
    units: &[StoppedUnit],
    mut left: impl FnMut(&[StoppedUnit]),
) -> (Vec<String>, Option<WorkloadError>) {
    let mut warnings = Vec::new();
    for (i, u) in units.iter().enumerate() {
        match workload.start(std::slice::from_ref(u)) {
            Ok(w) => warnings.extend(w),
            Err(e) => return (warnings, Some(e)),
        }
        if i + 1 < units.len() {
            left(&units[i + 1..]);
        }
    }
    (warnings, None)
}

/// A capture's held units, confirmed back by the sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Resumed {
    /// The capture (the snapshot's uid).
    pub operation_uid: String,
    /// The snapshot's namespace and name, for logs.
    pub snapshot: String,
    /// What the operator should know.
    pub warnings: Vec<String>,
}

/// Resumes what interrupted captures left paused or stopped, except rows
/// `skip` names (a capture running in this process). Runs at start-up and at
/// every resync; rows whose runtime cannot be reached are kept.
pub fn recover(
    store: &Store,
    workload: &dyn Workload,
    skip: &dyn Fn(&str) -> bool,
) -> Result<Vec<Resumed>, StoreError> {
    let mut report = Vec::new();
    for row in store.quiesce_rows()? {
        if skip(&row.operation_uid) {
            continue;
        }
        let units: Vec<StoppedUnit> = match serde_json::from_str(&row.units_json) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(snapshot = row.name, error = %e, "Quiesce journal row cannot be read; left for an operator");
                continue;
            }
        };
        let snapshot = format!("{}/{}", row.namespace, row.name);
        let (warnings, failed) = resume_in_order(workload, &units, |left| {
            let shrunk = QuiesceRow { units_json: serde_json::to_string(left).unwrap_or_default(), ..row.clone() };
            if let Err(e) = store.quiesce_put(&shrunk) {
                tracing::error!(snapshot, error = %e, "Could not update the quiesce journal");
            }
        });
        match failed {
            None => {
                store.quiesce_delete(&row.operation_uid)?;
                let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
                tracing::info!(snapshot, units = ?names, "Resumed the workload a capture had quiesced");
                report.push(Resumed { operation_uid: row.operation_uid.clone(), snapshot, warnings });
            }
            Some(e) => {
                tracing::error!(snapshot, error = %e, "Could not resume the workload a capture quiesced; retried at every resync");
            }
        }
    }
    Ok(report)
}
