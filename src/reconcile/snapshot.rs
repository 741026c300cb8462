//! Snapshots: capture (quiesced as the spec says), adoption of an archive
//! made elsewhere, and deletion with `deletionPolicy`.

use std::path::{Path, PathBuf};

use super::work::Work;
use super::{Next, Reconciled, Reconciler, terminal, uid_of};
use crate::api::{
    ArchiveStatus, DeletionPolicy, Kind, ObjectKey, Phase, QuiesceMode, Time, VolumeSnapshot, VolumeSnapshotStatus,
};
use crate::core::snapshot::{self as snap, CaptureEnd};
use crate::core::{conditions, reasons, types};
use crate::engine::adopt;
use crate::engine::archive::{ArchiveManifest, FORMAT_VERSION, ManifestVolume, SnapshotRef, detect_compression};
use crate::engine::capture::{self, CaptureError, CaptureJob, CaptureOutcome, CaptureVolume};
use crate::engine::quiesce::Quiesce;
use crate::store::{ArchiveRecord, Store, StoreError};

/// A capture or adoption in flight.
pub(super) struct Capture {
    pub work: Work<Captured>,
    key: ObjectKey,
    rel_path: String,
    /// The object was deleted meanwhile: its policy applies to whatever the
    /// work produces.
    deleted: Option<DeletionPolicy>,
}

/// What a capture or adoption thread returns.
pub(super) struct Captured {
    result: Result<CaptureOutcome, CaptureError>,
    manifest_json: String,
    /// What the operator should know about holding the workload still.
    quiesce_warnings: Vec<String>,
    /// The runtime did not answer when the held units were to be resumed:
    /// why. The quiesce journal keeps them for the sweep.
    resume_pending: Option<String>,
}

impl Reconciler {
    /// Reconciles one snapshot: starts its capture or adoption when it
    /// needs one, reports progress while it runs, records its outcome.
    pub fn snapshot(&mut self, s: &VolumeSnapshot) -> Result<Reconciled<VolumeSnapshotStatus>, StoreError> {
        let uid = uid_of(&s.metadata);
        let generation = s.metadata.generation.unwrap_or(1);
        let now = Time::now();
        let mut st = s.status.clone().unwrap_or_default();
        let done = |st, next| Ok(Reconciled { status: st, create: Vec::new(), next });
        if let Some(c) = self.captures.get(&uid) {
            let Some((captured, _guard)) = c.work.take() else {
                let (bytes_done, bytes_total) = c.work.progress();
                snap::progress(&mut st, bytes_done, bytes_total);
                return done(st, Next::Running);
            };
            let c = self.captures.remove(&uid).expect("present");
            self.record_capture(s, &mut st, &c, captured)?;
        }
        self.bind_archive(s)?;
        if let Some((path, refused)) = self.missing.remove(&uid) {
            snap::archive_missing(&mut st, generation, now, &path, refused.as_deref());
        }
        if let Some(warnings) = self.resumed.remove(&uid) {
            let waited =
                conditions::get(&st.conditions, types::PROGRESSING).is_some_and(|c| reasons::retried(&c.reason));
            if waited {
                snap::resumed(&mut st, generation, now, &warnings);
            }
        }
        if st.phase.is_none()
            && let Some(id) = s.metadata.annotations.as_ref().and_then(|a| a.get(super::ARCHIVE_RECORD_ANNOTATION))
        {
            // A snapshot created for an archive volsnap already recorded (a
            // restore's pre-restore snapshot, created without status): it is
            // that archive, never a new capture.
            if let Some(known) = self.pre_restore_status.remove(id) {
                st = known;
            } else if let Some((archive, volumes)) = self.recorded_archive(s)? {
                snap::completed(&mut st, generation, now, archive, volumes, Vec::new());
            }
        }
        if st.phase.is_none() {
            snap::accepted(&mut st, generation, now);
        }
        if terminal(st.phase) && !self.retries(&st) {
            return done(st, Next::Done);
        }
        if self.stopping || self.captures.len() >= self.settings.max_concurrent.max(1) {
            return done(st, Next::Waiting);
        }
        let next = self.start_capture(s, &mut st)?;
        done(st, next)
    }

    /// A snapshot that failed only because the runtime did not answer (or
    /// its source is not ready yet) is tried again while the process runs.
    fn retries(&self, st: &VolumeSnapshotStatus) -> bool {
        self.settings.retry_unavailable
            && st.phase == Some(Phase::Failed)
            && snap::main_reason(st).is_some_and(reasons::retried)
    }

    /// The snapshot's object is gone: stop its work, and apply its deletion
    /// policy to its archive (now, or when the work ends).
    pub fn snapshot_deleted(&mut self, s: &VolumeSnapshot) -> Result<(), StoreError> {
        let uid = uid_of(&s.metadata);
        let key = key_of(s);
        let policy = s.spec.deletion_policy;
        if let Some(c) = self.captures.get_mut(&uid) {
            c.work.stop();
            c.deleted = Some(policy);
        }
        self.missing.remove(&uid);
        self.resumed.remove(&uid);
        let Some(rec) = self.archive_of(s)? else { return Ok(()) };
        match policy {
            DeletionPolicy::Delete => match self.store.delete_archive_file(&rec) {
                Ok(()) => {
                    self.store.delete_archive_record(&rec.snapshot_uid)?;
                    tracing::info!(object = %key, archive = rec.rel_path, "Deleted archive (deletionPolicy: Delete)");
                }
                Err(e) => {
                    tracing::error!(object = %key, error = %e, "Could not delete archive; keeping its record");
                    self.store.set_archive_object_present(&rec.snapshot_uid, false)?;
                }
            },
            DeletionPolicy::Retain => {
                self.store.set_archive_object_present(&rec.snapshot_uid, false)?;
                tracing::info!(object = %key, archive = rec.rel_path, "Retained archive of deleted snapshot");
            }
        }
        Ok(())
    }

    /// Work of deleted snapshots that has ended: what it produced follows
    /// the deletion policy.
    pub(super) fn settle_deleted_captures(&mut self) -> Result<(), StoreError> {
        let ended: Vec<String> =
            self.captures.iter().filter(|(_, c)| c.deleted.is_some()).map(|(u, _)| u.clone()).collect();
        for uid in ended {
            let Some((captured, _guard)) = self.captures[&uid].work.take() else { continue };
            let c = self.captures.remove(&uid).expect("present");
            let Ok(outcome) = &captured.result else { continue };
            if c.deleted == Some(DeletionPolicy::Delete) {
                let dest = self.store.archives_dir().join(&c.rel_path);
                let _ = std::fs::remove_file(&dest);
                let _ = std::fs::remove_file(capture::checksum_path(&dest));
            } else {
                self.store.put_archive(&record(&uid, &c, &captured, outcome, false))?;
            }
        }
        Ok(())
    }

    /// The archive a snapshot annotated with a record id stands for, as
    /// status: the archive and the volumes its manifest lists.
    fn recorded_archive(
        &self,
        s: &VolumeSnapshot,
    ) -> Result<Option<(ArchiveStatus, Vec<crate::api::CapturedVolume>)>, StoreError> {
        if s.metadata.annotations.as_ref().and_then(|a| a.get(super::ARCHIVE_RECORD_ANNOTATION)).is_none() {
            return Ok(None);
        }
        let Some(rec) = self.archive_of(s)? else { return Ok(None) };
        let volumes = serde_json::from_str::<ArchiveManifest>(&rec.manifest_json)
            .map(|m| {
                m.volumes
                    .into_iter()
                    .map(|v| crate::api::CapturedVolume {
                        name: v.name,
                        path: v.source,
                        target: v.target,
                        ..Default::default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let archive = ArchiveStatus {
            path: self.store.archives_dir().join(&rec.rel_path).display().to_string(),
            format: rec.format,
            size_bytes: rec.size_bytes,
            sha256: rec.sha256,
        };
        Ok(Some((archive, volumes)))
    }

    /// A pre-restore snapshot created by a driver binds the archive record
    /// the restore made (kept under a record id until now) to its own uid.
    fn bind_archive(&self, s: &VolumeSnapshot) -> Result<(), StoreError> {
        let uid = uid_of(&s.metadata);
        let Some(id) = s.metadata.annotations.as_ref().and_then(|a| a.get(super::ARCHIVE_RECORD_ANNOTATION)) else {
            return Ok(());
        };
        if *id != uid && self.store.archive(&uid)?.is_none() && self.store.archive(id)?.is_some() {
            self.store.rebind_archive(id, &uid)?;
        }
        Ok(())
    }

    fn start_capture(&mut self, s: &VolumeSnapshot, st: &mut VolumeSnapshotStatus) -> Result<Next, StoreError> {
        let key = key_of(s);
        let uid = uid_of(&s.metadata);
        let generation = s.metadata.generation.unwrap_or(1);
        let now = Time::now();
        let src = &s.spec.source;
        if let Some(archive) = &src.archive {
            return self.start_adoption(s, st, &archive.path);
        }
        let mode = s.spec.effective_quiesce();
        // A capture that does not stop the workload reads what it uses now:
        // its mounts must still be the directories opened.
        let resolution = match &src.paths {
            Some(paths) => Ok(self.policy.resolve(paths)),
            None => self.runtime.resolve(&key.namespace, src, &self.policy, mode != QuiesceMode::Stop),
        };
        let resolution = match resolution {
            Ok(r) => r,
            Err(u) => {
                snap::failed(st, generation, now, u.reason, &u.message);
                return Ok(self.after_failure(st));
            }
        };
        if mode != QuiesceMode::None
            && let Err(msg) = self.runtime.workload_ready()
        {
            snap::failed(st, generation, now, self.runtime.workload().unavailable_reason(), &msg);
            return Ok(self.after_failure(st));
        }
        if resolution.volumes.is_empty() {
            snap::no_data(st, generation, now, &resolution.skipped);
            return Ok(Next::Done);
        }
        snap::skipped(st, &resolution.skipped);
        let guard = match self.locks.try_lock_all(resolution.volumes.iter().map(|v| v.path.clone()).collect()) {
            Ok(g) => g,
            Err(busy) => {
                snap::volume_busy(st, generation, now, &busy.display().to_string());
                return Ok(Next::Waiting);
            }
        };
        let rel_path = self.archive_rel_path(&key, &uid, s.spec.compression)?;
        let dest = match self.store.archive_abs_path(&rel_path) {
            Ok(p) => p,
            Err(e) => {
                snap::failed(st, generation, now, reasons::ARCHIVE_WRITE_FAILED, &e.to_string());
                return Ok(Next::Done);
            }
        };
        let manifest = ArchiveManifest {
            format_version: FORMAT_VERSION,
            snapshot: SnapshotRef { namespace: key.namespace.clone(), name: key.name.clone(), uid: uid.clone() },
            creation_timestamp: now,
            producer: Some(format!("volsnap {}", env!("CARGO_PKG_VERSION"))),
            volumes: resolution.volumes.iter().map(ManifestVolume::from).collect(),
        };
        let names: Vec<String> = resolution.volumes.iter().map(|v| v.name.clone()).collect();
        snap::started(st, generation, now, &names);
        tracing::info!(object = %key, volumes = ?names, archive = %dest.display(), "Started capture");
        let job = CaptureThread {
            manifest,
            volumes: resolution.volumes,
            compression: s.spec.compression,
            level: s.spec.level,
            dest: dest.clone(),
            quiesce: (mode != QuiesceMode::None).then(|| QuiesceJob {
                workload: self.runtime.workload(),
                state: self.settings.state.clone(),
                archives: self.settings.archives.clone(),
                row: (uid.clone(), key.namespace.clone(), key.name.clone()),
                mode,
                stop_timeout: s.spec.stop_timeout_seconds,
            }),
        };
        let panicked = move || Captured {
            result: Err(CaptureError::Write { path: dest, source: std::io::Error::other("capture thread panicked") }),
            manifest_json: String::new(),
            quiesce_warnings: Vec::new(),
            resume_pending: None,
        };
        self.spawn_capture(key, uid, rel_path, guard, panicked, move |cancel, progress| job.run(cancel, progress))
    }

    /// `source.archive`: checks the path, then copies and verifies the
    /// archive on a thread of its own.
    fn start_adoption(
        &mut self,
        s: &VolumeSnapshot,
        st: &mut VolumeSnapshotStatus,
        path: &str,
    ) -> Result<Next, StoreError> {
        let key = key_of(s);
        let uid = uid_of(&s.metadata);
        let generation = s.metadata.generation.unwrap_or(1);
        let now = Time::now();
        let (source, compression) = match check_adoptable(&self.policy, path) {
            Ok(x) => x,
            Err((reason, msg)) => {
                snap::failed(st, generation, now, reason, &format!("{msg}. Nothing was adopted"));
                return Ok(Next::Done);
            }
        };
        let Ok(guard) = self.locks.try_lock_all(vec![source.clone()]) else {
            return Ok(Next::Waiting); // another snapshot adopts the same file
        };
        let rel_path = self.archive_rel_path(&key, &uid, compression)?;
        let dest = match self.store.archive_abs_path(&rel_path) {
            Ok(p) => p,
            Err(e) => {
                snap::failed(st, generation, now, reasons::ARCHIVE_WRITE_FAILED, &e.to_string());
                return Ok(Next::Done);
            }
        };
        snap::adopting(st, generation, now, &source.display().to_string());
        tracing::info!(object = %key, archive = %source.display(), "Started adoption");
        let panicked = || Captured {
            result: Err(CaptureError::Rejected("the adoption thread panicked".into())),
            manifest_json: String::new(),
            quiesce_warnings: Vec::new(),
            resume_pending: None,
        };
        self.spawn_capture(key, uid, rel_path, guard, panicked, move |cancel, _| {
            let (result, manifest_json) = match adopt::adopt(&source, &dest, cancel) {
                Ok((outcome, manifest)) => (Ok(outcome), serde_json::to_string(&manifest).unwrap_or_default()),
                Err(e) => (Err(e), String::new()),
            };
            Captured { result, manifest_json, quiesce_warnings: Vec::new(), resume_pending: None }
        })
    }

    fn spawn_capture(
        &mut self,
        key: ObjectKey,
        uid: String,
        rel_path: String,
        guard: crate::engine::locks::KeyGuard,
        panicked: impl FnOnce() -> Captured + Send + 'static,
        job: impl FnOnce(&std::sync::atomic::AtomicBool, &capture::CaptureProgress) -> Captured + Send + 'static,
    ) -> Result<Next, StoreError> {
        match Work::spawn("capture", guard, self.waker(), panicked, job) {
            Ok(work) => {
                self.captures.insert(uid, Capture { work, key, rel_path, deleted: None });
                Ok(Next::Running)
            }
            Err(e) => {
                tracing::error!(object = %key, error = %e, "Could not start a capture thread; retrying at the next pass");
                Ok(Next::Waiting)
            }
        }
    }

    /// A failure that is retried (the runtime did not answer, in a daemon)
    /// is looked at again; any other is final.
    fn after_failure(&self, st: &VolumeSnapshotStatus) -> Next {
        if self.retries(st) { Next::Waiting } else { Next::Done }
    }

    /// Records what a capture or adoption produced, and its status.
    fn record_capture(
        &mut self,
        s: &VolumeSnapshot,
        st: &mut VolumeSnapshotStatus,
        c: &Capture,
        captured: Captured,
    ) -> Result<(), StoreError> {
        let uid = uid_of(&s.metadata);
        let generation = s.metadata.generation.unwrap_or(1);
        let now = Time::now();
        let dest = self.store.archives_dir().join(&c.rel_path);
        let outcome = match &captured.result {
            Ok(outcome) => outcome,
            Err(e) => {
                let (write_path, write_error);
                let end = match e {
                    CaptureError::Cancelled => CaptureEnd::Interrupted,
                    CaptureError::Write { path: p, source } => {
                        write_path = p.display().to_string();
                        write_error = source.to_string();
                        CaptureEnd::WriteFailed { path: &write_path, error: &write_error }
                    }
                    CaptureError::Quiesce(why) => CaptureEnd::QuiesceFailed(why),
                    CaptureError::Rejected(why) => CaptureEnd::Rejected(why),
                    CaptureError::ReadVolume { .. } => {
                        write_error = e.to_string();
                        CaptureEnd::ReadFailed(&write_error)
                    }
                };
                let result = if matches!(e, CaptureError::Cancelled) { "interrupted" } else { "failed" };
                self.metrics.captures.get_or_create(&crate::metrics::result(result)).inc();
                snap::capture_ended(st, generation, now, end);
                return Ok(());
            }
        };
        self.metrics.captures.get_or_create(&crate::metrics::result("succeeded")).inc();
        self.metrics.captured_bytes.inc_by(outcome.volumes.iter().map(|v| v.bytes).sum());
        self.metrics.archive_bytes.observe(outcome.size_bytes as f64);
        if let Some(started) = st.start_time {
            self.metrics.capture_seconds.observe(now.0.duration_since(started.0).as_secs_f64().max(0.0));
        }
        self.store.put_archive(&record(&uid, c, &captured, outcome, true))?;
        let archive = ArchiveStatus {
            path: dest.display().to_string(),
            format: s.spec.compression.format().into(),
            size_bytes: outcome.size_bytes,
            sha256: outcome.sha256.clone(),
        };
        let skipped = st.skipped.clone();
        snap::completed(st, generation, now, archive, outcome.volumes.clone(), skipped);
        if !captured.quiesce_warnings.is_empty() {
            snap::quiesce_warnings(st, generation, now, &captured.quiesce_warnings);
        }
        if let Some(why) = &captured.resume_pending {
            snap::waiting_to_resume(st, generation, now, why);
        }
        if let Some(src) = &s.spec.source.archive {
            snap::adopted(st, generation, now, &src.path);
        }
        Ok(())
    }
}

/// What a capture thread does: hold the workload still (journaled; resumed
/// on any exit, and by the recovery sweep after a crash), then read.
struct CaptureThread {
    manifest: ArchiveManifest,
    volumes: Vec<CaptureVolume>,
    compression: crate::api::Compression,
    level: Option<u32>,
    dest: PathBuf,
    quiesce: Option<QuiesceJob>,
}

struct QuiesceJob {
    workload: std::sync::Arc<dyn crate::engine::workload::Workload>,
    state: PathBuf,
    archives: PathBuf,
    row: (String, String, String),
    mode: QuiesceMode,
    stop_timeout: Option<u32>,
}

impl CaptureThread {
    fn run(self, cancel: &std::sync::atomic::AtomicBool, progress: &capture::CaptureProgress) -> Captured {
        crate::engine::fault::pause("capture:started");
        let manifest_json = serde_json::to_string(&self.manifest).unwrap_or_default();
        let mut quiesce_warnings = Vec::new();
        let mut resume_pending = None;
        let result = (|| {
            let store = match &self.quiesce {
                Some(q) => Some(
                    Store::open(&q.state, &q.archives)
                        .map_err(|e| CaptureError::Quiesce(format!("cannot open the state database: {e}")))?,
                ),
                None => None,
            };
            let mut held = match (&self.quiesce, &store) {
                (Some(q), Some(store)) => {
                    let dirs: Vec<PathBuf> = self.volumes.iter().map(|v| v.path.clone()).collect();
                    Some(
                        Quiesce::begin(&*q.workload, store, q.row.clone(), &dirs, q.mode, q.stop_timeout)
                            .map_err(CaptureError::Quiesce)?,
                    )
                }
                _ => None,
            };
            let captured = capture::capture(CaptureJob {
                manifest: &self.manifest,
                volumes: &self.volumes,
                compression: self.compression,
                level: self.level,
                dest: &self.dest,
                progress,
                cancel,
            });
            if let Some(q) = held.as_mut() {
                match q.finish() {
                    Ok(w) => quiesce_warnings.extend(w),
                    Err(e) if e.unreachable => resume_pending = Some(e.to_string()),
                    Err(e) => quiesce_warnings.push(format!(
                        "resuming the quiesced containers failed ({e}); the daemon retries at every resync"
                    )),
                }
            }
            captured
        })();
        Captured { result, manifest_json, quiesce_warnings, resume_pending }
    }
}

/// Checks an archive to adopt: under an allowed root, a regular file, gzip
/// or zstd. `Err` is a reason and a message.
fn check_adoptable(
    policy: &crate::engine::paths::PathPolicy,
    path: &str,
) -> Result<(PathBuf, crate::api::Compression), (&'static str, String)> {
    let no_data = |msg: String| (reasons::NO_DATA, msg);
    let canonical = Path::new(path)
        .canonicalize()
        .map_err(|e| no_data(format!("source.archive.path {path} cannot be resolved: {e}")))?;
    policy.check(&canonical, path).map_err(|why| no_data(format!("source.archive.path {why}")))?;
    if !canonical.is_file() {
        return Err(no_data(format!("source.archive.path {path} is not a regular file")));
    }
    let mut head = [0u8; 4];
    let n = std::io::Read::read(
        &mut std::fs::File::open(&canonical).map_err(|e| no_data(format!("{path}: {e}")))?,
        &mut head,
    )
    .map_err(|e| no_data(format!("{path}: {e}")))?;
    let compression = detect_compression(&head[..n])
        .ok_or_else(|| (reasons::ARCHIVE_INVALID, format!("{path} is not a volsnap archive: not gzip or zstd")))?;
    Ok((canonical, compression))
}

fn key_of(s: &VolumeSnapshot) -> ObjectKey {
    ObjectKey {
        kind: Kind::Snapshot,
        namespace: s.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        name: s.metadata.name.clone().unwrap_or_default(),
    }
}

fn record(uid: &str, c: &Capture, captured: &Captured, outcome: &CaptureOutcome, present: bool) -> ArchiveRecord {
    ArchiveRecord {
        snapshot_uid: uid.to_string(),
        namespace: c.key.namespace.clone(),
        name: c.key.name.clone(),
        rel_path: c.rel_path.clone(),
        format: if c.rel_path.ends_with(".tar.zst") { "tar+zstd" } else { "tar+gzip" }.into(),
        size_bytes: outcome.size_bytes,
        sha256: outcome.sha256.clone(),
        manifest_json: captured.manifest_json.clone(),
        created_at: Time::now(),
        object_present: present,
    }
}
