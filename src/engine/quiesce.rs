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
use super::workload::{Purpose, StoppedUnit, Workload};
use crate::api::QuiesceMode;
use crate::store::{QuiesceRow, Store, StoreError};

/// Units a capture paused or stopped, resumed on `finish` or drop.
pub struct Quiesce<'a> {
    workload: &'a dyn Workload,
    store: &'a Store,
    operation_uid: String,
    units: Vec<StoppedUnit>,
    done: bool,
}

impl<'a> Quiesce<'a> {
    /// Pauses (or stops) every unit that uses `dirs`, journaling them first.
    /// On failure, whatever was already acted on is resumed before the
    /// error is returned.
    pub fn begin(
        workload: &'a dyn Workload,
        store: &'a Store,
        row: (String, String, String),
        dirs: &[PathBuf],
        mode: QuiesceMode,
    ) -> Result<Quiesce<'a>, String> {
        let (operation_uid, namespace, name) = row;
        let mut units = workload.plan_stop(dirs, Purpose::Capture).map_err(|e| e.to_string())?;
        for u in units.iter_mut() {
            u.paused = mode == QuiesceMode::Pause;
        }
        let mut q = Quiesce { workload, store, operation_uid, units, done: false };
        if q.units.is_empty() {
            q.done = true;
            return Ok(q);
        }
        q.record(&namespace, &name)?;
        fault::point("capture:quiescing");
        let acted = match mode {
            QuiesceMode::Pause => workload.pause(&q.units).map(Some),
            _ => workload.stop(&q.units).map(|()| None),
        };
        if let Ok(Some(paused)) = &acted
            && paused.len() != q.units.len()
        {
            // Only what was really paused is volsnap's to resume.
            q.units = paused.clone();
            q.record(&namespace, &name)?;
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
    fn record(&self, namespace: &str, name: &str) -> Result<(), String> {
        let units_json = serde_json::to_string(&self.units).map_err(|e| e.to_string())?;
        self.store
            .quiesce_put(&QuiesceRow {
                operation_uid: self.operation_uid.clone(),
                namespace: namespace.into(),
                name: name.into(),
                units_json,
            })
            .map_err(|e| format!("cannot record the quiesce: {e}"))
    }

    /// The units acted on (for messages).
    pub fn units(&self) -> &[StoppedUnit] {
        &self.units
    }

    /// Brings the units back; returns warnings (stale IDs, units resumed by
    /// someone else). The journal row is removed only once the runtime
    /// answered.
    pub fn finish(&mut self) -> Result<Vec<String>, String> {
        if self.done {
            return Ok(Vec::new());
        }
        self.done = true;
        let warnings = self.workload.start(&self.units).map_err(|e| e.to_string())?;
        self.store.quiesce_delete(&self.operation_uid).map_err(|e| e.to_string())?;
        Ok(warnings)
    }
}

impl Drop for Quiesce<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::error!(operation = self.operation_uid, error = %e, "Could not resume the quiesced workload; the start-up sweep retries");
        }
    }
}

/// Resumes what interrupted captures left paused or stopped, except rows
/// `skip` names (a capture running in this process). Runs at start-up and at
/// every resync; rows whose runtime cannot be reached are kept.
pub fn recover(store: &Store, workload: &dyn Workload, skip: &dyn Fn(&str) -> bool) -> Result<Vec<String>, StoreError> {
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
        match workload.start(&units) {
            Ok(warnings) => {
                store.quiesce_delete(&row.operation_uid)?;
                let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
                tracing::info!(snapshot = %format!("{}/{}", row.namespace, row.name), units = ?names, "Resumed the workload an interrupted capture had quiesced");
                report.extend(warnings);
            }
            Err(e) => {
                tracing::error!(snapshot = row.name, error = %e, "Could not resume the workload an interrupted capture quiesced; retried later");
            }
        }
    }
    Ok(report)
}
