//! The files-mode driver of restores and adoptions: gathers what the
//! pre-flight needs from the store, runs [`crate::engine::restore`] on a
//! blocking thread, and writes the outcome back. Also the start-up recovery
//! of interrupted restores, and `source.archive` adoption.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{Daemon, Done, Result2, Running, status_reason};
use crate::api::{ConditionStatus, Kind, Object, ObjectKey, Phase, VolumeRestore, VolumeSnapshot};
use crate::core::{conditions, reasons, restore as rst, snapshot as snap, types};
use crate::engine::adopt;
use crate::engine::archive::{ArchiveManifest, detect_compression};
use crate::engine::capture::{CaptureError, CaptureProgress};
use crate::engine::locks::KeyGuard;
use crate::engine::restore::{
    self as engine, Destination, Executor, ObjRef, PRE_RESTORE_OF_ANNOTATION, PRE_RESTORE_SUFFIX, PreRestorePlan,
    PreflightInput, RestoreFailure, RestoreOutcome,
};
use crate::engine::site::Roots;
use crate::store::{Store, StoredObject};

/// A restore in flight.
pub(super) struct RunningRestore {
    /// Set on shutdown: extraction stops; a swap in progress finishes.
    pub(super) cancel: Arc<AtomicBool>,
}

/// A restore that returned.
pub(super) struct RestoreDone {
    uid: String,
    key: ObjectKey,
    result: Result<RestoreOutcome, RestoreFailure>,
    _guard: KeyGuard,
}

impl Daemon {
    /// The directories restores act beneath: the allowed roots, and
    /// Docker's volume root when Docker is connected.
    fn trusted_roots(&self) -> Roots {
        Roots { policy: self.policy.clone(), runtime_root: self.docker.as_ref().map(|d| d.volume_root().to_path_buf()) }
    }

    /// Resumes what interrupted captures left quiesced, and finishes or
    /// rolls back every restore the journal says was interrupted (except
    /// those running here), writing the outcome into the restore objects
    /// that still exist. At start-up before anything is reconciled, then at
    /// every resync for whatever could not be resolved.
    pub(super) fn recover_interrupted(&mut self) -> Result2<()> {
        self.reconnect_for_journals()?;
        self.recover_quiesced()?;
        let roots = self.trusted_roots();
        let running = &self.restores;
        let (recovered, stuck) =
            engine::recover(&self.store, &*self.workload, &roots, &|uid| running.contains_key(uid))?;
        for s in stuck {
            if !self.stuck.contains_key(&s.restore.uid)
                && let Ok(guard) = self.locks.try_lock_all(s.targets.clone())
            {
                self.stuck.insert(s.restore.uid.clone(), guard);
            }
            if s.waiting_for_runtime {
                self.mark_waiting_for_runtime(&s.restore.uid, &s.error)?;
            }
        }
        for r in recovered {
            self.stuck.remove(&r.restore.uid);
            if let Some(pre) = &r.pre_restore_snapshot
                && let Some(obj) = self.store.object(pre)?
                && let Err(e) = self.status.write(&obj.key, &obj.object)
            {
                tracing::error!(object = %obj.key, error = %e, "Could not write status file");
            }
            let Some(mut stored) = self.store.object_by_uid(&r.restore.uid)? else {
                tracing::info!(restore = %r.restore.name, forward = r.forward, "Recovered a restore whose object is gone");
                continue;
            };
            let Ok(Object::Restore(mut obj)) = Object::from_stored(Kind::Restore, stored.object.clone()) else {
                continue;
            };
            let generation = obj.metadata.generation.unwrap_or(1);
            let st = obj.status.get_or_insert_with(Default::default);
            let now = crate::api::Time::now();
            if r.forward {
                let mut msg = format!(
                    "volsnap was interrupted after the swap had begun; the recovery sweep finished it at start-up: {} now hold the snapshot's data",
                    r.volumes.iter().map(|v| v.path.as_str()).collect::<Vec<_>>().join(", ")
                );
                for w in &r.warnings {
                    msg.push_str(&format!("; WARNING: {w}"));
                }
                let pre = r.pre_restore_snapshot.as_ref().map(|k| k.name.clone());
                rst::completed(st, generation, now, r.volumes.clone(), None, pre, &msg);
            } else {
                let mut msg = "volsnap was interrupted before the swap; the recovery sweep rolled the restore back (the live data is as it was) and it starts again from scratch".to_string();
                for w in &r.warnings {
                    msg.push_str(&format!("; WARNING: {w}"));
                }
                rst::pending(st, generation, now, reasons::INTERRUPTED, &msg);
            }
            stored.object = Object::Restore(obj).to_value();
            self.save(&stored)?;
        }
        Ok(())
    }

    /// Says in a restore's status that it waits for Docker (once).
    fn mark_waiting_for_runtime(&mut self, uid: &str, why: &str) -> Result2<()> {
        let Some(mut stored) = self.store.object_by_uid(uid)? else { return Ok(()) };
        if status_reason(&stored.object, Kind::Restore) == Some(reasons::DOCKER_UNAVAILABLE) {
            return Ok(());
        }
        let Ok(Object::Restore(mut r)) = Object::from_stored(Kind::Restore, stored.object.clone()) else {
            return Ok(());
        };
        let generation = r.metadata.generation.unwrap_or(1);
        let msg = waiting_message(why);
        rst::waiting_for_runtime(
            r.status.get_or_insert_with(Default::default),
            generation,
            crate::api::Time::now(),
            &msg,
        );
        stored.object = Object::Restore(r).to_value();
        self.save(&stored)
    }

    /// Whether a restore could still start (for `--once`).
    pub(super) fn has_startable_restores(&self) -> Result2<bool> {
        for o in self.store.objects(Some(Kind::Restore), None)? {
            let startable = !self.restores.contains_key(&o.uid)
                && !self.removal_pending.contains(&o.uid)
                && matches!(Object::from_stored(Kind::Restore, o.object.clone()), Ok(Object::Restore(r)) if rst::next_step(r.status.as_ref()) == rst::Step::Restore);
            // One whose journal row recovery could not resolve is not work
            // this run can do: `--once` ends and reports it as failed.
            if startable && self.store.journal_get(&o.uid)?.is_none() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Objects volsnap made itself (no manifest file) live as long as the
    /// object that made them: a pre-restore snapshot as long as its restore.
    pub(super) fn owner_exists(&self, obj: &StoredObject) -> Result2<bool> {
        let owner = obj
            .object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(PRE_RESTORE_OF_ANNOTATION))
            .and_then(|v| v.as_str())
            .and_then(|v| v.split_once('/'));
        let Some((namespace, name)) = owner else { return Ok(false) };
        let key = ObjectKey { kind: Kind::Restore, namespace: namespace.into(), name: name.into() };
        Ok(self.store.object(&key)?.is_some())
    }

    /// Starts every restore that can start, up to `--max-concurrent`
    /// running at once (restores are counted apart from captures).
    pub(super) fn start_restores(&mut self) -> Result2<()> {
        for stored in self.store.objects(Some(Kind::Restore), None)? {
            if self.restores.len() >= self.cfg.max_concurrent.max(1) {
                break;
            }
            if self.restores.contains_key(&stored.uid) || self.removal_pending.contains(&stored.uid) {
                continue;
            }
            let Ok(Object::Restore(r)) = Object::from_stored(Kind::Restore, stored.object.clone()) else { continue };
            if rst::next_step(r.status.as_ref()) != rst::Step::Restore && !self.retries_unavailable(&stored) {
                continue;
            }
            // A journal row means the restore is half done: only the
            // recovery sweep may touch it.
            if self.store.journal_get(&stored.uid)?.is_some() {
                continue;
            }
            self.start_restore(stored, r)?;
        }
        Ok(())
    }

    fn start_restore(&mut self, mut stored: StoredObject, mut r: VolumeRestore) -> Result2<()> {
        let key = stored.key.clone();
        let generation = r.metadata.generation.unwrap_or(1);
        let now = crate::api::Time::now();
        let snap_key =
            ObjectKey { kind: Kind::Snapshot, namespace: key.namespace.clone(), name: r.spec.snapshot_name.clone() };
        let snapshot: Option<VolumeSnapshot> = match self.store.object(&snap_key)? {
            Some(o) => match Object::from_stored(Kind::Snapshot, o.object) {
                Ok(Object::Snapshot(s)) => Some(s),
                _ => None,
            },
            None => None,
        };
        let mut archive = None;
        if let Some(s) = &snapshot
            && let Some(uid) = &s.metadata.uid
            && let Some(rec) = self.store.archive(uid)?
        {
            match self.store.archive_abs_path(&rec.rel_path) {
                Ok(abs) => {
                    if let Ok(manifest) = serde_json::from_str::<ArchiveManifest>(&rec.manifest_json) {
                        archive = Some((abs, manifest));
                    }
                }
                Err(e) => {
                    // The snapshot's archive is there but refused (a symlink,
                    // not a regular file): say so, rather than "no archive".
                    let st = r.status.get_or_insert_with(Default::default);
                    let msg =
                        format!("the archive of VolumeSnapshot {} is refused: {e}; nothing was touched", snap_key.name);
                    rst::failed(st, generation, now, reasons::ARCHIVE_INVALID, &msg);
                    tracing::warn!(object = %key, "Failed VolumeRestore: {msg}");
                    stored.object = Object::Restore(r).to_value();
                    return self.save(&stored);
                }
            }
        }
        let mut pre_restore = None;
        let mut pre_restore_name_taken = false;
        if r.spec.keep_pre_restore && r.spec.target_path.is_none() {
            let name = format!("{}{PRE_RESTORE_SUFFIX}", key.name);
            let pre_key = ObjectKey { kind: Kind::Snapshot, namespace: key.namespace.clone(), name: name.clone() };
            pre_restore_name_taken = self.store.object(&pre_key)?.is_some();
            let uid = uuid::Uuid::new_v4().to_string();
            let compression = snapshot.as_ref().map(|s| s.spec.compression).unwrap_or_default();
            let rel_path = self.archive_rel_path(&pre_key, &uid, compression)?;
            if let Ok(abs_path) = self.store.archive_abs_path(&rel_path) {
                pre_restore = Some(PreRestorePlan {
                    snapshot: ObjRef { namespace: key.namespace.clone(), name, uid },
                    rel_path,
                    abs_path,
                    compression,
                });
            }
        }
        let mut runtime_targets = None;
        if let Some(snap) = &snapshot
            && snap.spec.source.paths.is_none()
            && snap.spec.source.archive.is_none()
            && r.spec.target_path.is_none()
        {
            runtime_targets = Some(match self.resolve_source(&snap.spec.source, false)? {
                Ok(res) => Ok(res.volumes.into_iter().map(|v| (v.name, v.path)).collect()),
                Err((reason, message)) => {
                    Err(engine::Refusal { reason, message: format!("{message}; nothing was touched"), wait: false })
                }
            });
        }
        let restore_ref = ObjRef { namespace: key.namespace.clone(), name: key.name.clone(), uid: stored.uid.clone() };
        let planned = engine::preflight(PreflightInput {
            restore: restore_ref,
            spec: &r.spec,
            snapshot: snapshot.as_ref(),
            archive,
            policy: &self.policy,
            pre_restore,
            pre_restore_name_taken,
            runtime_targets,
        });
        let st = r.status.get_or_insert_with(Default::default);
        let plan = match planned {
            Ok(p) => p,
            Err(refusal) if refusal.wait => {
                if status_reason(&stored.object, Kind::Restore) != Some(refusal.reason) {
                    rst::pending(st, generation, now, refusal.reason, &refusal.message);
                    stored.object = Object::Restore(r).to_value();
                    self.save(&stored)?;
                }
                return Ok(());
            }
            Err(refusal) => {
                rst::failed(st, generation, now, refusal.reason, &refusal.message);
                tracing::warn!(object = %key, reason = refusal.reason, "Failed VolumeRestore: {}", refusal.message);
                stored.object = Object::Restore(r).to_value();
                return self.save(&stored);
            }
        };
        if plan.destination == Destination::InPlace
            && let Err(msg) = self.workload_ready()
        {
            if status_reason(&stored.object, Kind::Restore) != Some(reasons::DOCKER_UNAVAILABLE) {
                rst::failed(st, generation, now, reasons::DOCKER_UNAVAILABLE, &format!("{msg}; nothing was touched"));
                tracing::warn!(object = %key, "Failed VolumeRestore: {msg}");
                stored.object = Object::Restore(r).to_value();
                self.save(&stored)?;
            }
            return Ok(());
        }
        let lock_keys: Vec<PathBuf> = match &plan.destination {
            Destination::NewDirectory { target, .. } => vec![target.clone()],
            Destination::InPlace => plan.volumes.iter().map(|v| v.target.clone()).collect(),
        };
        let guard = match self.locks.try_lock_all(lock_keys) {
            Ok(g) => g,
            Err(busy) => {
                let msg = format!("Waiting: another operation is using {}", busy.display());
                if status_reason(&stored.object, Kind::Restore) != Some(reasons::VOLUME_BUSY) {
                    rst::pending(st, generation, now, reasons::VOLUME_BUSY, &msg);
                    stored.object = Object::Restore(r).to_value();
                    self.save(&stored)?;
                }
                return Ok(());
            }
        };
        let targets: Vec<String> =
            plan.volumes.iter().map(|v| format!("{} -> {}", v.name, v.target.display())).collect();
        let msg = format!(
            "Restoring {} volume(s) from VolumeSnapshot {}: {}",
            plan.volumes.len(),
            plan.snapshot.name,
            targets.join(", ")
        );
        rst::started(st, generation, now, &msg);
        stored.object = Object::Restore(r).to_value();
        self.save(&stored)?;
        tracing::info!(object = %key, "Started restore: {msg}");

        let cancel = Arc::new(AtomicBool::new(false));
        self.restores.insert(stored.uid.clone(), RunningRestore { cancel: cancel.clone() });
        let tx = self.restore_tx.clone();
        let workload = self.workload.clone();
        let roots = self.trusted_roots();
        let (state, archives) = (self.cfg.state.clone(), self.cfg.archives.clone());
        let uid = stored.uid.clone();
        tokio::task::spawn_blocking(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // The worker has its own connection: the journal is written
                // from this thread, step by step.
                let store = Store::open(&state, &archives).map_err(|e| {
                    RestoreFailure::RolledBack(engine::Refusal {
                        reason: reasons::RESTORE_FAILED,
                        message: format!("cannot open the state database: {e}; nothing was touched"),
                        wait: false,
                    })
                })?;
                Executor { store: &store, workload: &*workload, roots: &roots, cancel: &cancel }.execute(plan)
            }))
            .unwrap_or_else(|_| {
                Err(RestoreFailure::Unfinished(
                    "the restore thread panicked; the journal is recovered at the next start".into(),
                ))
            });
            let _ = tx.send(RestoreDone { uid, key, result, _guard: guard });
        });
        Ok(())
    }

    /// Records a finished restore.
    pub(super) fn finish_restore(&mut self, done: RestoreDone) -> Result2<()> {
        self.restores.remove(&done.uid);
        if let Ok(outcome) = &done.result
            && let Some(pre) = &outcome.pre_restore_snapshot
            && let Some(obj) = self.store.object(pre)?
            && let Err(e) = self.status.write(&obj.key, &obj.object)
        {
            tracing::error!(object = %obj.key, error = %e, "Could not write status file");
        }
        let Some(mut stored) = self.store.object_by_uid(&done.uid)? else {
            tracing::info!(object = %done.key, "Restore finished after its object was deleted");
            return Ok(());
        };
        let Ok(Object::Restore(mut r)) = Object::from_stored(Kind::Restore, stored.object.clone()) else {
            return Ok(());
        };
        let generation = r.metadata.generation.unwrap_or(1);
        let snapshot = r.spec.snapshot_name.clone();
        let st = r.status.get_or_insert_with(Default::default);
        let now = crate::api::Time::now();
        match done.result {
            Ok(outcome) => {
                let files: u64 = outcome.volumes.iter().map(|v| v.files).sum();
                let bytes: u64 = outcome.volumes.iter().map(|v| v.bytes).sum();
                let paths: Vec<&str> = outcome.volumes.iter().map(|v| v.path.as_str()).collect();
                let mut msg = format!(
                    "Restored {} volume(s), {files} files, {bytes} bytes, from VolumeSnapshot {snapshot} into {}",
                    outcome.volumes.len(),
                    paths.join(", ")
                );
                if let Some(d) = outcome.downtime_seconds {
                    msg.push_str(&format!("; the workload was stopped for {d:.6} s"));
                }
                if let Some(pre) = &outcome.pre_restore_snapshot {
                    msg.push_str(&format!("; the replaced data is VolumeSnapshot {}", pre.name));
                }
                for w in &outcome.warnings {
                    msg.push_str(&format!("; WARNING: {w}"));
                }
                let pre = outcome.pre_restore_snapshot.map(|k| k.name);
                rst::completed(st, generation, now, outcome.volumes, outcome.downtime_seconds, pre, &msg);
                tracing::info!(object = %done.key, "Completed VolumeRestore: {msg}");
            }
            Err(RestoreFailure::RolledBack(refusal)) => {
                rst::failed(st, generation, now, refusal.reason, &refusal.message);
                tracing::error!(object = %done.key, reason = refusal.reason, "Failed VolumeRestore: {}", refusal.message);
            }
            Err(RestoreFailure::Interrupted) => {
                rst::pending(
                    st,
                    generation,
                    now,
                    reasons::INTERRUPTED,
                    "The restore was interrupted by a shutdown before anything live was touched; it starts again from scratch when volsnap next runs",
                );
                tracing::info!(object = %done.key, "Interrupted restore at shutdown (nothing live touched)");
            }
            Err(RestoreFailure::WaitingForRuntime(why)) => {
                self.stuck.insert(done.uid.clone(), done._guard);
                let msg = waiting_message(&why);
                rst::waiting_for_runtime(st, generation, now, &msg);
                tracing::warn!(object = %done.key, "{msg}");
            }
            Err(RestoreFailure::Unfinished(why)) => {
                // The journal keeps the state: the targets stay locked until
                // the recovery sweep (every resync) resolves it.
                self.stuck.insert(done.uid.clone(), done._guard);
                let msg = format!(
                    "The data is being swapped or was swapped, but the restore could not finish ({why}); the journal keeps its state and the recovery sweep finishes it when volsnap next starts"
                );
                conditions::set(
                    &mut st.conditions,
                    types::PROGRESSING,
                    ConditionStatus::True,
                    reasons::INTERRUPTED,
                    &msg,
                    Some(generation),
                    now,
                );
                st.phase = Some(Phase::InProgress);
                tracing::warn!(object = %done.key, "{msg}");
            }
        }
        stored.object = Object::Restore(r).to_value();
        self.save(&stored)
    }

    /// `source.archive`: checks the path, then copies and verifies the
    /// archive on a blocking thread; [`Daemon::finish`] records it.
    pub(super) fn start_adoption(
        &mut self,
        mut stored: StoredObject,
        mut s: VolumeSnapshot,
        path: &str,
    ) -> Result2<()> {
        let key = stored.key.clone();
        let generation = s.metadata.generation.unwrap_or(1);
        let now = crate::api::Time::now();
        let st = s.status.get_or_insert_with(Default::default);
        let checked = (|| -> Result<(PathBuf, crate::api::Compression), String> {
            let canonical = Path::new(path)
                .canonicalize()
                .map_err(|e| format!("source.archive.path {path} cannot be resolved: {e}"))?;
            self.policy.check(&canonical, path).map_err(|why| format!("source.archive.path {why}"))?;
            if !canonical.is_file() {
                return Err(format!("source.archive.path {path} is not a regular file"));
            }
            let mut head = [0u8; 4];
            let n = std::io::Read::read(
                &mut std::fs::File::open(&canonical).map_err(|e| format!("{path}: {e}"))?,
                &mut head,
            )
            .map_err(|e| format!("{path}: {e}"))?;
            let compression = detect_compression(&head[..n])
                .ok_or_else(|| format!("{path} is not a volsnap archive: not gzip or zstd"))?;
            Ok((canonical, compression))
        })();
        let (source, compression) = match checked {
            Ok(x) => x,
            Err(msg) => {
                let reason =
                    if msg.contains("not a volsnap archive") { reasons::ARCHIVE_INVALID } else { reasons::NO_DATA };
                let msg = format!("{msg}. Nothing was adopted");
                snap::failed(st, generation, now, reason, &msg);
                tracing::warn!(object = %key, "Failed VolumeSnapshot: {msg}");
                stored.object = Object::Snapshot(s).to_value();
                return self.save(&stored);
            }
        };
        let Ok(guard) = self.locks.try_lock_all(vec![source.clone()]) else {
            return Ok(()); // the same file is being adopted by another snapshot: next pass
        };
        let rel_path = self.archive_rel_path(&key, &stored.uid, compression)?;
        let dest = match self.store.archive_abs_path(&rel_path) {
            Ok(p) => p,
            Err(e) => {
                snap::failed(st, generation, now, reasons::ARCHIVE_WRITE_FAILED, &e.to_string());
                stored.object = Object::Snapshot(s).to_value();
                return self.save(&stored);
            }
        };
        snap::started(st, generation, now, &[]);
        let msg = format!("Adopting and verifying the archive {}", source.display());
        conditions::set(
            &mut st.conditions,
            types::READY,
            ConditionStatus::False,
            reasons::CAPTURING,
            &msg,
            Some(generation),
            now,
        );
        conditions::set(
            &mut st.conditions,
            types::PROGRESSING,
            ConditionStatus::True,
            reasons::CAPTURING,
            &msg,
            Some(generation),
            now,
        );
        stored.object = Object::Snapshot(s).to_value();
        self.save(&stored)?;
        tracing::info!(object = %key, archive = %source.display(), "Started adoption");
        let cancel = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(CaptureProgress::default());
        self.running.insert(
            stored.uid.clone(),
            Running { key, cancel: cancel.clone(), progress, deleted: None, rel_path, last_reported: (0, 0) },
        );
        let tx = self.done_tx.clone();
        let uid = stored.uid.clone();
        tokio::task::spawn_blocking(move || {
            let adopted =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| adopt::adopt(&source, &dest, &cancel)))
                    .unwrap_or_else(|_| Err(CaptureError::Rejected("the adoption thread panicked".into())));
            let (result, manifest_json) = match adopted {
                Ok((outcome, manifest)) => (Ok(outcome), serde_json::to_string(&manifest).unwrap_or_default()),
                Err(e) => (Err(e), String::new()),
            };
            let _ = tx.send(Done {
                uid,
                result,
                manifest_json,
                quiesce_warnings: Vec::new(),
                resume_pending: None,
                _guard: guard,
            });
        });
        Ok(())
    }
}

/// The status message of a restore that waits for Docker.
fn waiting_message(why: &str) -> String {
    format!(
        "Waiting for Docker: {why}. The journal keeps the restore's state and the containers it stopped; at every resync the recovery sweep tries again and, once Docker answers, finishes (or rolls back) the swap and starts them"
    )
}
