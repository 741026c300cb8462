//! The start-up sweep, and the recovery of interrupted work at start-up and
//! at every resync. What they learn about an object is held until that
//! object is reconciled.

use super::{Reconciler, StuckRestore};
use crate::store::StoreError;

impl Reconciler {
    /// Before anything is reconciled: removes temporary archives, resumes
    /// what interrupted captures held, finishes or rolls back interrupted
    /// restores, quarantines archives no record knows, and notes snapshots
    /// whose archive is missing.
    pub fn start(&mut self) -> Result<(), StoreError> {
        // Temporary archives go first: recovery may have to write a
        // pre-restore archive where a killed attempt left its temporary
        // file. Recovery may record a pre-restore archive, which the orphan
        // sweep must then know.
        for p in self.store.remove_temporaries()? {
            tracing::info!(path = %p.display(), "Removed temporary archive left by an interrupted capture");
        }
        self.recover()?;
        let report = self.store.sweep_orphans()?;
        for p in &report.removed_temp {
            tracing::info!(path = %p.display(), "Removed temporary archive left by an interrupted capture");
        }
        for p in &report.quarantined {
            tracing::warn!(path = %p.display(), "Moved an archive no snapshot knows into quarantine");
        }
        for rec in report.missing {
            let path = self.store.archives_dir().join(&rec.rel_path).display().to_string();
            let refused = report.refused.iter().find(|(uid, _)| *uid == rec.snapshot_uid).map(|(_, why)| why.clone());
            tracing::error!(snapshot = %format!("{}/{}", rec.namespace, rec.name), path, "Archive of a Completed snapshot is missing from disk");
            self.missing.insert(rec.snapshot_uid, (path, refused));
        }
        Ok(())
    }

    /// Resumes what captures left held (a crash, or the runtime not
    /// answering when they ended) and finishes or rolls back every restore
    /// the journal says was interrupted, except work running here. Rows it
    /// cannot resolve stay, their targets locked, and are tried again at the
    /// next call (every resync).
    pub fn recover(&mut self) -> Result<(), StoreError> {
        if !self.store.quiesce_rows()?.is_empty() || !self.store.journal_rows()?.is_empty() {
            self.runtime.reconnect();
        }
        let workload = self.runtime.workload();
        let captures = &self.captures;
        let resumed = crate::engine::quiesce::recover(&self.store, &*workload, &|uid| captures.contains_key(uid))?;
        for r in resumed {
            for w in &r.warnings {
                tracing::warn!(snapshot = r.snapshot, "{w}");
            }
            self.resumed.insert(r.operation_uid, r.warnings);
        }
        let roots = self.roots();
        let (restores, acked) = (&self.restores, &self.awaiting_ack);
        let (recovered, stuck) = crate::engine::restore::recover(&self.store, &*workload, &roots, &|uid| {
            restores.contains_key(uid) || acked.contains(uid)
        })?;
        for s in stuck {
            let waiting = s.waiting_for_runtime.then(|| s.error.clone());
            match self.stuck.get_mut(&s.restore.uid) {
                Some(known) => known.waiting = waiting,
                None => {
                    let guard = self.locks.try_lock_all(s.targets.clone()).ok();
                    self.stuck.insert(s.restore.uid.clone(), StuckRestore { _guard: guard, waiting });
                }
            }
        }
        for r in recovered {
            self.stuck.remove(&r.restore.uid);
            if r.forward {
                self.awaiting_ack.insert(r.restore.uid.clone());
            }
            self.recovered.insert(r.restore.uid.clone(), r);
        }
        Ok(())
    }

    /// Work of deleted objects that has ended.
    pub(super) fn settle_deleted(&mut self, exists: &dyn Fn(&str) -> bool) -> Result<(), StoreError> {
        self.settle_deleted_captures()?;
        self.settle_deleted_restores(exists)
    }
}
