//! Restores: gathering what the pre-flight needs, running the engine's
//! restore on a thread of its own, its outcome, the pre-restore snapshot
//! object the driver creates, and acknowledging finished journal rows.

use std::path::PathBuf;
use std::sync::Arc;

use super::work::Work;
use super::{Next, Reconciled, Reconciler, StuckRestore, View, terminal, uid_of};
use crate::api::{DeletionPolicy, Phase, Time, VolumeRestore, VolumeRestoreStatus, VolumeSnapshot, VolumeSnapshotSpec};
use crate::core::reasons;
use crate::core::restore::{self as rst, Restored};
use crate::core::snapshot as snap;
use crate::engine::archive::ArchiveManifest;
use crate::engine::locks::KeyGuard;
use crate::engine::restore::{
    self as engine, Destination, Executor, JournalStep, ObjRef, PRE_RESTORE_SUFFIX, PreRestorePlan, PreRestoreSnapshot,
    PreflightInput, Refusal, RestoreFailure, RestoreOutcome, RestorePlan, RestoreProgress,
};
use crate::store::{Store, StoreError};

/// Annotation on a pre-restore snapshot: the restore that made it
/// (`<namespace>/<name>`). Files mode deletes the snapshot object (never its
/// archive) together with that restore.
pub const PRE_RESTORE_OF_ANNOTATION: &str = "volsnap.dev/pre-restore-of";

/// Annotation on a pre-restore snapshot: the id its archive was recorded
/// under before the object existed; its first reconcile binds the record to
/// the object's uid.
pub const ARCHIVE_RECORD_ANNOTATION: &str = "volsnap.dev/archive-record";

/// A restore in flight.
pub(super) struct Running {
    pub work: Work<Result<RestoreOutcome, RestoreFailure>>,
    /// The restore's own counters (extraction, then the pre-restore snapshot).
    pub progress: Arc<RestoreProgress>,
}

impl Reconciler {
    /// Reconciles one restore: runs the pre-flight and, when it passes, the
    /// restore; records its outcome; says when it waits, and why.
    pub fn restore(
        &mut self,
        r: &VolumeRestore,
        view: &dyn View,
    ) -> Result<Reconciled<VolumeRestoreStatus>, StoreError> {
        let uid = uid_of(&r.metadata);
        let generation = r.metadata.generation.unwrap_or(1);
        let now = Time::now();
        let mut st = r.status.clone().unwrap_or_default();
        let mut create = Vec::new();
        if let Some(running) = self.restores.get(&uid) {
            let taken = running.work.take();
            // Read after the take: once the thread has ended, these are final.
            let (bytes_done, bytes_total) = running.progress.bytes();
            rst::progress(&mut st, bytes_done, bytes_total);
            let Some((result, guard)) = taken else {
                return Ok(Reconciled { status: st, create, next: Next::Running });
            };
            self.restores.remove(&uid);
            self.record_restore(r, &mut st, result, guard, &mut create);
        }
        if let Some(rec) = self.recovered.remove(&uid) {
            // A restore whose status already says how it ended only waited
            // for its journal row to be acknowledged.
            if !terminal(st.phase) {
                let restored = Restored {
                    volumes: rec.volumes.clone(),
                    downtime_seconds: None,
                    pre_restore_snapshot: rec.pre_restore.as_ref().map(|p| p.name.clone()),
                    warnings: rec.warnings.clone(),
                };
                rst::recovered(&mut st, generation, now, rec.forward, restored);
                if let Some(pre) = &rec.pre_restore {
                    create.extend(self.pre_restore_object(r, pre, view));
                }
            }
        }
        if let Some(stuck) = self.stuck.get(&uid) {
            let workload = self.runtime.workload();
            if let Some(why) = &stuck.waiting
                && rst::main_reason(&st) != Some(workload.unavailable_reason())
            {
                rst::waiting_for(&mut st, generation, now, workload.unavailable_reason(), workload.runtime_name(), why);
            }
            return Ok(Reconciled { status: st, create, next: Next::Stuck });
        }
        if st.phase.is_none() {
            rst::accepted(&mut st, generation, now);
        }
        if terminal(st.phase) && !self.restore_retries(&st) {
            if create.is_empty() {
                self.acknowledge(r, view, &mut create)?;
            }
            let next = if create.is_empty() { Next::Done } else { Next::Waiting };
            return Ok(Reconciled { status: st, create, next });
        }
        // A journal row means the restore is half done: only the recovery
        // sweep may touch it.
        if self.store.journal_get(&uid)?.is_some() {
            return Ok(Reconciled { status: st, create, next: Next::Stuck });
        }
        if self.stopping || self.restores.len() >= self.settings.max_concurrent.max(1) {
            return Ok(Reconciled { status: st, create, next: Next::Waiting });
        }
        let next = self.start_restore(r, &mut st, view)?;
        Ok(Reconciled { status: st, create, next })
    }

    /// The restore's object is gone: a finished journal row is forgotten,
    /// and a pre-restore snapshot whose object was never created leaves its
    /// archive retained. Work in flight runs to its end; a row the journal
    /// keeps stays for the recovery sweep.
    pub fn restore_deleted(&mut self, r: &VolumeRestore) -> Result<(), StoreError> {
        let uid = uid_of(&r.metadata);
        self.recovered.remove(&uid);
        if !self.restores.contains_key(&uid) {
            self.forget_finished(&uid)?;
        }
        Ok(())
    }

    /// Acknowledges the finished journal row of a restore whose object is
    /// gone; an unbound pre-restore archive is marked as retained.
    pub(super) fn forget_finished(&mut self, uid: &str) -> Result<(), StoreError> {
        if let Some(row) = self.store.journal_get(uid)?
            && JournalStep::parse(&row.step) == Some(JournalStep::Recorded)
            && let Ok(plan) = serde_json::from_str::<RestorePlan>(&row.plan_json)
            && let Some(pre) = &plan.pre_restore_recorded
        {
            self.store.set_archive_object_present(&pre.record_id, false)?;
        }
        engine::acknowledge(&self.store, uid)?;
        self.awaiting_ack.remove(uid);
        Ok(())
    }

    /// Restores of deleted objects whose work ended: their finished journal
    /// rows are acknowledged; rows the journal keeps stay locked.
    pub(super) fn settle_deleted_restores(&mut self, exists: &dyn Fn(&str) -> bool) -> Result<(), StoreError> {
        let gone: Vec<String> = self.restores.keys().filter(|u| !exists(u)).cloned().collect();
        for uid in gone {
            let Some((result, guard)) = self.restores[&uid].work.take() else { continue };
            self.restores.remove(&uid);
            match result {
                Ok(_) => self.forget_finished(&uid)?,
                Err(RestoreFailure::WaitingForRuntime(_) | RestoreFailure::Unfinished(_)) => {
                    self.stuck.insert(uid.clone(), StuckRestore { _guard: Some(guard), waiting: None });
                }
                Err(_) => {}
            }
            tracing::info!(restore = uid, "A restore finished after its object was deleted");
        }
        Ok(())
    }

    fn restore_retries(&self, st: &VolumeRestoreStatus) -> bool {
        self.settings.retry_unavailable
            && st.phase == Some(Phase::Failed)
            && rst::main_reason(st).is_some_and(reasons::retried)
    }

    /// Records how a restore's work ended.
    fn record_restore(
        &mut self,
        r: &VolumeRestore,
        st: &mut VolumeRestoreStatus,
        result: Result<RestoreOutcome, RestoreFailure>,
        guard: KeyGuard,
        create: &mut Vec<VolumeSnapshot>,
    ) {
        let uid = uid_of(&r.metadata);
        let generation = r.metadata.generation.unwrap_or(1);
        let now = Time::now();
        let ended = match &result {
            Ok(_) => Some("succeeded"),
            Err(RestoreFailure::RolledBack(_)) => Some("failed"),
            Err(RestoreFailure::Interrupted) => Some("interrupted"),
            Err(_) => None,
        };
        if let Some(label) = ended {
            self.metrics.restores.get_or_create(&crate::metrics::result(label)).inc();
            if let Some(started) = st.start_time {
                self.metrics.restore_seconds.observe(now.0.duration_since(started.0).as_secs_f64().max(0.0));
            }
        }
        if let Ok(RestoreOutcome { downtime_seconds: Some(d), .. }) = &result {
            self.metrics.restore_downtime_seconds.observe(*d);
        }
        match result {
            Ok(outcome) => {
                let restored = Restored {
                    volumes: outcome.volumes,
                    downtime_seconds: outcome.downtime_seconds,
                    pre_restore_snapshot: outcome.pre_restore.as_ref().map(|p| p.name.clone()),
                    warnings: outcome.warnings,
                };
                rst::restored(st, generation, now, &r.spec.snapshot_name, restored);
                if let Some(pre) = &outcome.pre_restore {
                    create.extend(self.pre_restore_object(r, pre, &NoView));
                }
                self.awaiting_ack.insert(uid);
            }
            Err(RestoreFailure::RolledBack(refusal)) => {
                rst::failed(st, generation, now, refusal.reason, &refusal.message)
            }
            Err(RestoreFailure::Interrupted) => rst::interrupted(st, generation, now),
            Err(RestoreFailure::WaitingForRuntime(why)) => {
                let workload = self.runtime.workload();
                rst::waiting_for(st, generation, now, workload.unavailable_reason(), workload.runtime_name(), &why);
                self.stuck.insert(uid, StuckRestore { _guard: Some(guard), waiting: Some(why) });
            }
            Err(RestoreFailure::Unfinished(why)) => {
                rst::unfinished(st, generation, now, &why);
                self.stuck.insert(uid, StuckRestore { _guard: Some(guard), waiting: None });
            }
        }
    }

    /// A finished restore whose outcome is observed in its status: once its
    /// pre-restore snapshot exists too, its journal row is forgotten. Until
    /// then the object is asked for (again: a crash may have lost it).
    fn acknowledge(
        &mut self,
        r: &VolumeRestore,
        view: &dyn View,
        create: &mut Vec<VolumeSnapshot>,
    ) -> Result<(), StoreError> {
        let uid = uid_of(&r.metadata);
        if !self.awaiting_ack.contains(&uid) {
            return Ok(());
        }
        if let Some(row) = self.store.journal_get(&uid)?
            && JournalStep::parse(&row.step) == Some(JournalStep::Recorded)
            && let Ok(plan) = serde_json::from_str::<RestorePlan>(&row.plan_json)
            && let Some(pre) = &plan.pre_restore_recorded
        {
            if let Some(wanted) = self.pre_restore_object(r, pre, view) {
                create.push(wanted);
                return Ok(());
            }
        }
        engine::acknowledge(&self.store, &uid)?;
        self.awaiting_ack.remove(&uid);
        Ok(())
    }

    /// The pre-restore snapshot object to create, unless it exists (or an
    /// earlier release created it itself).
    fn pre_restore_object(
        &mut self,
        r: &VolumeRestore,
        pre: &PreRestoreSnapshot,
        view: &dyn View,
    ) -> Option<VolumeSnapshot> {
        let recorded = pre.recorded.as_ref()?;
        if view.snapshot(&pre.namespace, &pre.name).is_some() {
            return None;
        }
        let mut s = VolumeSnapshot::new(
            &pre.name,
            VolumeSnapshotSpec {
                source: recorded.source.clone(),
                quiesce: None,
                compression: recorded.compression,
                deletion_policy: DeletionPolicy::Retain,
                node_name: None,
                stop_timeout_seconds: None,
                // What the archive was written with (zstd at the pre-restore
                // level; journals of earlier releases: gzip at its default).
                level: (recorded.compression == crate::api::Compression::Zstd)
                    .then_some(engine::PRE_RESTORE_ZSTD_LEVEL),
            },
        );
        s.metadata.namespace = Some(pre.namespace.clone());
        s.metadata.generation = Some(1);
        s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(recorded.created.0));
        let owner = format!(
            "{}/{}",
            r.metadata.namespace.as_deref().unwrap_or("default"),
            r.metadata.name.as_deref().unwrap_or_default()
        );
        s.metadata.annotations = Some(
            [
                (PRE_RESTORE_OF_ANNOTATION.to_string(), owner),
                (ARCHIVE_RECORD_ANNOTATION.to_string(), pre.record_id.clone()),
            ]
            .into_iter()
            .collect(),
        );
        let st = s.status.get_or_insert_with(Default::default);
        st.start_time = Some(recorded.created);
        snap::completed(st, 1, recorded.created, recorded.archive.clone(), recorded.volumes.clone(), Vec::new());
        // Its first reconcile gives it this status, whoever writes first
        // (a cluster creates the object without status).
        self.pre_restore_status.insert(pre.record_id.clone(), st.clone());
        Some(s)
    }

    fn start_restore(
        &mut self,
        r: &VolumeRestore,
        st: &mut VolumeRestoreStatus,
        view: &dyn View,
    ) -> Result<Next, StoreError> {
        let uid = uid_of(&r.metadata);
        let namespace = r.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = r.metadata.name.clone().unwrap_or_default();
        let generation = r.metadata.generation.unwrap_or(1);
        let now = Time::now();
        let snapshot = view.snapshot(&namespace, &r.spec.snapshot_name);
        let mut archive = None;
        if let Some(s) = &snapshot
            && let Some(rec) = self.archive_of(s)?
        {
            match self.store.archive_abs_path(&rec.rel_path) {
                Ok(abs) => {
                    if let Ok(manifest) = serde_json::from_str::<ArchiveManifest>(&rec.manifest_json) {
                        archive = Some((abs, manifest));
                    }
                }
                Err(e) => {
                    // The archive is there but refused (a symlink, not a
                    // regular file): say so, rather than "no archive".
                    let msg = format!(
                        "the archive of VolumeSnapshot {} is refused: {e}; nothing was touched",
                        r.spec.snapshot_name
                    );
                    rst::failed(st, generation, now, reasons::ARCHIVE_INVALID, &msg);
                    return Ok(Next::Done);
                }
            }
        }
        let mut pre_restore = None;
        let mut pre_restore_name_taken = false;
        if r.spec.keep_pre_restore && r.spec.target_path.is_none() {
            let pre_name = format!("{name}{PRE_RESTORE_SUFFIX}");
            pre_restore_name_taken = view.snapshot(&namespace, &pre_name).is_some();
            // The id the pre-restore archive is recorded under until its
            // snapshot object exists (and binds it).
            let record_id = uuid::Uuid::new_v4().to_string();
            // Not the restored snapshot's compression: the pre-restore
            // snapshot is always fast zstd (see PRE_RESTORE_COMPRESSION).
            let compression = crate::engine::restore::PRE_RESTORE_COMPRESSION;
            let pre_key = crate::api::ObjectKey {
                kind: crate::api::Kind::Snapshot,
                namespace: namespace.clone(),
                name: pre_name.clone(),
            };
            let rel_path = self.archive_rel_path(&pre_key, &record_id, compression)?;
            if let Ok(abs_path) = self.store.archive_abs_path(&rel_path) {
                pre_restore = Some(PreRestorePlan {
                    snapshot: ObjRef { namespace: namespace.clone(), name: pre_name, uid: record_id },
                    rel_path,
                    abs_path,
                    compression,
                });
            }
        }
        let runtime_targets = match &snapshot {
            Some(s)
                if s.spec.source.paths.is_none() && s.spec.source.archive.is_none() && r.spec.target_path.is_none() =>
            {
                Some(match self.runtime.resolve(&namespace, &s.spec.source, &self.policy, false) {
                    Ok(res) => Ok(res.volumes.into_iter().map(|v| (v.name, v.path)).collect()),
                    Err(u) => Err(Refusal {
                        reason: u.reason,
                        message: format!("{}; nothing was touched", u.message),
                        wait: false,
                    }),
                })
            }
            _ => None,
        };
        let planned = engine::preflight(PreflightInput {
            restore: ObjRef { namespace, name: name.clone(), uid: uid.clone() },
            spec: &r.spec,
            snapshot: snapshot.as_ref(),
            archive,
            policy: &self.policy,
            pre_restore,
            pre_restore_name_taken,
            runtime_targets,
        });
        let plan = match planned {
            Ok(p) => p,
            Err(refusal) if refusal.wait => {
                rst::pending(st, generation, now, refusal.reason, &refusal.message);
                return Ok(Next::Waiting);
            }
            Err(refusal) => {
                rst::failed(st, generation, now, refusal.reason, &refusal.message);
                return Ok(if self.restore_retries(st) { Next::Waiting } else { Next::Done });
            }
        };
        if plan.destination == Destination::InPlace
            && let Err(msg) = self.runtime.workload_ready()
        {
            let reason = self.runtime.workload().unavailable_reason();
            rst::failed(st, generation, now, reason, &format!("{msg}; nothing was touched"));
            return Ok(if self.restore_retries(st) { Next::Waiting } else { Next::Done });
        }
        let lock_keys: Vec<PathBuf> = match &plan.destination {
            Destination::NewDirectory { target, .. } => vec![target.clone()],
            Destination::InPlace => plan.volumes.iter().map(|v| v.target.clone()).collect(),
        };
        let guard = match self.locks.try_lock_all(lock_keys) {
            Ok(g) => g,
            Err(busy) => {
                rst::volume_busy(st, generation, now, &busy.display().to_string());
                return Ok(Next::Waiting);
            }
        };
        let targets: Vec<String> =
            plan.volumes.iter().map(|v| format!("{} -> {}", v.name, v.target.display())).collect();
        rst::restoring(st, generation, now, &plan.snapshot.name, &targets);
        tracing::info!(restore = name, targets = ?targets, "Started restore");
        let (workload, roots) = (self.runtime.workload(), self.roots());
        let (state, archives) = (self.settings.state.clone(), self.settings.archives.clone());
        let progress = Arc::new(RestoreProgress::default());
        let counters = progress.clone();
        let spawned = Work::spawn(
            "restore",
            guard,
            self.waker(),
            || {
                Err(RestoreFailure::Unfinished(
                    "the restore thread panicked; the journal is recovered at the next start".into(),
                ))
            },
            move |cancel, _| {
                // The worker has its own connection: the journal is written
                // from this thread, step by step.
                let store = Store::open(&state, &archives).map_err(|e| {
                    RestoreFailure::RolledBack(Refusal::fail(
                        reasons::RESTORE_FAILED,
                        format!("cannot open the state database: {e}; nothing was touched"),
                    ))
                })?;
                Executor { store: &store, workload: &*workload, roots: &roots, cancel, progress: &counters }
                    .execute(plan)
            },
        );
        match spawned {
            Ok(work) => {
                self.restores.insert(uid, Running { work, progress });
                Ok(Next::Running)
            }
            Err(e) => {
                tracing::error!(restore = name, error = %e, "Could not start a restore thread; retrying at the next pass");
                rst::accepted(st, generation, now);
                Ok(Next::Waiting)
            }
        }
    }
}

/// A view in which nothing exists (the outcome just arrived: the
/// pre-restore snapshot cannot have been created yet).
struct NoView;

impl View for NoView {
    fn snapshot(&self, _: &str, _: &str) -> Option<VolumeSnapshot> {
        None
    }
}
