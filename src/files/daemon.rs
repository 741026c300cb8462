//! `volsnap run`: the files-mode reconcile loop.
//!
//! Level-triggered: every pass rescans the manifests directory and compares
//! it with the stored objects, whatever woke it (a file event, the periodic
//! resync, a finished capture). Captures run on blocking threads; only this
//! loop touches the store and the status files, so there is one writer.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::manifests::{Declaration, Scanner};
use super::status::StatusFiles;
use super::watch::DirWatch;
use crate::api::{
    ArchiveStatus, ConditionStatus, Kind, MANIFEST_FILE_ANNOTATION, Object, ObjectKey, Phase, SkippedVolume, Time,
    VolumeSnapshot,
};
use crate::core::{conditions, reasons, snapshot as snap, types};
use crate::engine::archive::{ArchiveManifest, FORMAT_VERSION, ManifestVolume, SnapshotRef};
use crate::engine::capture::{self, CaptureError, CaptureJob, CaptureOutcome, CaptureProgress, CaptureVolume};
use crate::engine::locks::{KeyGuard, KeyedLocks};
use crate::engine::paths::{PathPolicy, PolicyError};
use crate::engine::quiesce::Quiesce;
use crate::engine::workload::Workload;
use crate::store::{ArchiveRecord, Store, StoreError, StoredObject};

#[path = "restores.rs"]
mod restores;
#[path = "runtime.rs"]
mod runtime;
#[path = "scanning.rs"]
mod scanning;

/// Settings of `volsnap run`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory of manifests (read only).
    pub manifests: PathBuf,
    /// State directory (SQLite, status files).
    pub state: PathBuf,
    /// Archive store.
    pub archives: PathBuf,
    /// Directories sources may be read from.
    pub allowed_roots: Vec<PathBuf>,
    /// Exit once every snapshot and restore is Completed or Failed.
    pub once: bool,
    /// Full rescan interval (file events get lost).
    pub resync_interval: Duration,
    /// Captures running at once, and restores running at once (counted apart).
    pub max_concurrent: usize,
    /// `--docker auto|off|URL`.
    pub docker: crate::docker::DockerMode,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Shut down on request, or (`--once`) everything succeeded.
    Ok,
    /// `--once`: at least one snapshot or restore Failed.
    SomeFailed,
}

/// Start-up failures (the daemon never fails on a bad object).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad `--allowed-root`.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Another daemon uses the same state directory.
    #[error("another volsnap daemon is using the state directory {0} (lock file volsnap.lock is held)")]
    Locked(PathBuf),
    /// Another daemon uses the same archives directory.
    #[error(
        "another volsnap daemon is using the archives directory {0} (it holds a lock on the directory); give each daemon its own --archives"
    )]
    ArchivesLocked(PathBuf),
    /// The lock file could not be created.
    #[error("cannot create lock file in state directory {path}: {source}")]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` resolves (or, with `once`, until done).
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunOutcome, DaemonError> {
    let store = Store::open(&cfg.state, &cfg.archives)?;
    let _lock = lock_dir(&cfg.state, "volsnap.lock").map_err(|e| e.for_state(&cfg.state))?;
    // Two daemons sharing an archives directory would each quarantine the
    // other's archives as orphans at start-up.
    let _archives_lock =
        lock_directory_itself(store.archives_dir()).map_err(|e| e.for_archives(store.archives_dir()))?;
    let policy = PathPolicy::new(&cfg.allowed_roots, &[cfg.state.clone(), cfg.archives.clone()])?;
    if cfg.allowed_roots.is_empty() {
        tracing::warn!("No --allowed-root configured: every source.paths volume will be skipped");
    }
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let (restore_tx, restore_rx) = mpsc::unbounded_channel();
    let (scan_tx, scan_rx) = mpsc::unbounded_channel();
    let docker = runtime::connect(&cfg.docker);
    let workload = runtime::workload_for(docker.as_ref());
    let mut d = Daemon {
        status: StatusFiles::new(&cfg.state),
        archives_dir: store.archives_dir().to_path_buf(),
        cfg,
        store,
        policy,
        locks: KeyedLocks::default(),
        running: HashMap::new(),
        done_tx,
        restores: HashMap::new(),
        stuck: HashMap::new(),
        restore_tx,
        workload,
        docker,
        docker_attempt: None,
        shutting_down: false,
        warned_dir: None,
        scanner: Some(Scanner::default()),
        scan_tx,
        scan_again: false,
        scanned: false,
        settle_at: None,
        gone_since: HashMap::new(),
        removal_pending: std::collections::HashSet::new(),
    };
    d.startup_sweep()?;
    d.main_loop(done_rx, restore_rx, scan_rx, shutdown).await
}

/// Resolves at `at` (never, without one).
async fn settle_wait(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Why a directory lock was not taken.
enum LockFailure {
    /// Another process holds it.
    Held,
    /// The lock file could not be created.
    File(PathBuf, std::io::Error),
}

impl LockFailure {
    fn for_state(self, state: &Path) -> DaemonError {
        match self {
            LockFailure::Held => DaemonError::Locked(state.to_path_buf()),
            LockFailure::File(path, source) => DaemonError::LockFile { path, source },
        }
    }

    fn for_archives(self, archives: &Path) -> DaemonError {
        match self {
            LockFailure::Held => DaemonError::ArchivesLocked(archives.to_path_buf()),
            LockFailure::File(path, source) => DaemonError::LockFile { path, source },
        }
    }
}

/// Takes an exclusive `flock` on the directory itself (a descriptor of the
/// directory, so no lock file is added to it), held while it is open.
fn lock_directory_itself(dir: &Path) -> Result<File, LockFailure> {
    let file = File::open(dir).map_err(|e| LockFailure::File(dir.to_path_buf(), e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| LockFailure::Held)?;
    Ok(file)
}

/// Takes an exclusive `flock` on `<dir>/<name>`, held as long as the file
/// is open (released by the kernel when the process dies, even by SIGKILL).
fn lock_dir(dir: &Path, name: &str) -> Result<File, LockFailure> {
    let path = dir.join(name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LockFailure::File(path.clone(), e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| LockFailure::Held)?;
    Ok(file)
}

/// A capture in flight.
struct Running {
    key: ObjectKey,
    cancel: Arc<AtomicBool>,
    progress: Arc<CaptureProgress>,
    /// The object was deleted while capturing: apply its deletion policy to
    /// whatever the capture produces.
    deleted: Option<crate::api::DeletionPolicy>,
    rel_path: String,
    last_reported: (u64, u64),
}

/// A capture that returned.
struct Done {
    uid: String,
    result: Result<CaptureOutcome, CaptureError>,
    manifest_json: String,
    /// What the operator should know about the quiesce (containers removed
    /// or resumed by someone else meanwhile).
    quiesce_warnings: Vec<String>,
    /// Docker did not answer when the held containers were to be resumed:
    /// why. The quiesce journal keeps them for the sweep.
    resume_pending: Option<String>,
    _guard: KeyGuard,
}

struct Daemon {
    cfg: Config,
    store: Store,
    policy: PathPolicy,
    status: StatusFiles,
    archives_dir: PathBuf,
    locks: KeyedLocks,
    running: HashMap<String, Running>,
    done_tx: mpsc::UnboundedSender<Done>,
    /// Restores in flight, by restore uid.
    restores: HashMap<String, restores::RunningRestore>,
    /// Targets of journal rows that could not be finished or rolled back:
    /// locked until recovery resolves them, by restore uid.
    stuck: HashMap<String, KeyGuard>,
    restore_tx: mpsc::UnboundedSender<restores::RestoreDone>,
    /// What restores stop and start, and captures quiesce (no runtime: nothing).
    workload: Arc<dyn Workload>,
    /// The Docker Engine, when connected.
    docker: Option<Arc<crate::docker::DockerClient>>,
    /// Last reconnect attempt while Docker was down.
    docker_attempt: Option<std::time::Instant>,
    shutting_down: bool,
    warned_dir: Option<String>,
    /// The manifest scanner and its cache; `None` while a scan runs.
    scanner: Option<Scanner>,
    scan_tx: mpsc::UnboundedSender<scanning::ScanDone>,
    /// Another scan was asked for while one ran.
    scan_again: bool,
    /// A scan has been applied since start-up.
    scanned: bool,
    /// When a file whose removals wait for it to settle may have settled.
    settle_at: Option<std::time::Instant>,
    /// Manifest files missing from the listing, since when: their objects
    /// are deleted once a file has stayed gone for the settle period, so a
    /// file replaced non-atomically (`git checkout`, `rsync`, a deploy
    /// swapping directories) deletes nothing.
    gone_since: HashMap<String, std::time::Instant>,
    /// Objects whose declaration seems gone but whose removal waits for the
    /// settle period (by uid): no new capture or restore is started for
    /// them meanwhile.
    removal_pending: std::collections::HashSet<String>,
}

type Result2<T> = Result<T, StoreError>;

impl Daemon {
    /// Before any reconcile: remove temporary archives, quarantine unknown
    /// ones, and mark snapshots whose archive vanished.
    fn startup_sweep(&mut self) -> Result<(), DaemonError> {
        // Temporary archives of interrupted captures go first: recovery may
        // have to write a pre-restore archive where a killed attempt left
        // its temporary file. Then containers an interrupted capture left
        // paused or stopped come back, and interrupted restores are finished
        // (recovery may record a pre-restore archive, which the orphan
        // sweep must then know).
        for p in self.store.remove_temporaries()? {
            tracing::info!(path = %p.display(), "Removed temporary archive left by an interrupted capture");
        }
        self.recover_interrupted()?;
        let report = self.store.sweep_orphans()?;
        for p in &report.removed_temp {
            tracing::info!(path = %p.display(), "Removed temporary archive left by an interrupted capture");
        }
        for p in &report.quarantined {
            tracing::warn!(path = %p.display(), "Moved an archive no snapshot knows into quarantine");
        }
        for rec in &report.missing {
            let Some(mut stored) = self.store.object_by_uid(&rec.snapshot_uid)? else { continue };
            let Ok(Object::Snapshot(mut s)) = Object::from_stored(Kind::Snapshot, stored.object.clone()) else {
                continue;
            };
            let generation = s.metadata.generation.unwrap_or(1);
            let path = self.archives_dir.join(&rec.rel_path).display().to_string();
            let refused = report.refused.iter().find(|(uid, _)| *uid == rec.snapshot_uid).map(|(_, why)| why.as_str());
            snap::archive_missing(
                s.status.get_or_insert_with(Default::default),
                generation,
                Time::now(),
                &path,
                refused,
            );
            tracing::error!(snapshot = %stored.key, path, "Archive of a Completed snapshot is missing from disk");
            stored.object = Object::Snapshot(s).to_value();
            self.save(&stored)?;
        }
        Ok(())
    }

    async fn main_loop(
        &mut self,
        mut done_rx: mpsc::UnboundedReceiver<Done>,
        mut restore_rx: mpsc::UnboundedReceiver<restores::RestoreDone>,
        mut scan_rx: mpsc::UnboundedReceiver<scanning::ScanDone>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<RunOutcome, DaemonError> {
        let (mut watch, mut events) = if self.cfg.once {
            (None, mpsc::channel(1).1)
        } else {
            let (w, r) = DirWatch::new(&self.cfg.manifests);
            (Some(w), r)
        };
        let mut resync = tokio::time::interval(self.cfg.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress_tick = tokio::time::interval(Duration::from_secs(1));
        tokio::pin!(shutdown);
        self.request_scan();
        loop {
            if self.cfg.once
                && self.scanned
                && let Some(why) = &self.warned_dir
            {
                // Nothing can be reconciled without the declarations, and
                // `--once` would otherwise wait for a directory nobody creates.
                tracing::error!("{why}; --once ends without reconciling anything");
                return Ok(RunOutcome::SomeFailed);
            }
            if self.cfg.once && self.settled() && self.idle() && !self.has_startable_work()? {
                return Ok(self.once_outcome()?);
            }
            if self.shutting_down && self.idle() {
                tracing::info!("Shut down cleanly");
                return Ok(RunOutcome::Ok);
            }
            tokio::select! {
                _ = &mut shutdown, if !self.shutting_down => {
                    tracing::info!(in_flight = self.running.len(), "Shutdown requested: taking no new work, stopping in-flight captures at a safe point");
                    self.shutting_down = true;
                    for r in self.running.values() {
                        r.cancel.store(true, Ordering::SeqCst);
                    }
                    for r in self.restores.values() {
                        r.cancel.store(true, Ordering::SeqCst);
                    }
                }
                Some(done) = restore_rx.recv() => {
                    self.finish_restore(done)?;
                    if !self.shutting_down {
                        self.request_scan();
                    }
                }
                Some(done) = done_rx.recv() => {
                    self.finish(done)?;
                    if !self.shutting_down {
                        self.request_scan();
                    }
                }
                Some(()) = events.recv() => {
                    // Debounce: editors and deploy scripts write in bursts.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    while events.try_recv().is_ok() {}
                    if !self.shutting_down {
                        self.request_scan();
                    }
                }
                _ = resync.tick() => {
                    if let Some(w) = watch.as_mut() {
                        w.refresh();
                    }
                    if !self.shutting_down {
                        // Journal rows left by operations that could not
                        // finish (a runtime down, a refused target).
                        self.recover_interrupted()?;
                        self.request_scan();
                    }
                }
                Some(done) = scan_rx.recv() => self.scan_done(done)?,
                _ = settle_wait(self.settle_at), if self.settle_at.is_some() => {
                    // A file whose removals waited may have settled.
                    self.settle_at = None;
                    if !self.shutting_down {
                        self.request_scan();
                    }
                }
                _ = progress_tick.tick() => self.report_progress()?,
            }
        }
    }

    /// `--once`: failed if any snapshot or restore Failed, or is left
    /// unfinished (a restore its journal keeps for an operator).
    fn once_outcome(&self) -> Result2<RunOutcome> {
        let failed = self.store.objects(None, None)?.into_iter().any(|o| {
            o.key.kind != Kind::Schedule
                && o.object.pointer("/status/phase").and_then(Value::as_str) != Some("Completed")
        });
        Ok(if failed { RunOutcome::SomeFailed } else { RunOutcome::Ok })
    }

    /// A snapshot or restore that failed only because Docker did not answer
    /// is tried again while the daemon runs (not with `--once`, which ends).
    fn retries_unavailable(&self, stored: &StoredObject) -> bool {
        !self.cfg.once && status_reason(&stored.object, stored.key.kind) == Some(reasons::DOCKER_UNAVAILABLE)
    }

    /// `--once`: the manifests have been scanned, no scan is pending, and no
    /// removal waits for its file to settle.
    fn settled(&self) -> bool {
        self.scanned && self.scan_idle() && self.settle_at.is_none()
    }

    /// No capture or restore is in flight.
    fn idle(&self) -> bool {
        self.running.is_empty() && self.restores.is_empty()
    }

    fn has_startable_work(&self) -> Result2<bool> {
        let snapshots = self.store.objects(Some(Kind::Snapshot), None)?.iter().any(|o| {
            !self.running.contains_key(&o.uid)
                && !self.removal_pending.contains(&o.uid)
                && matches!(Object::from_stored(Kind::Snapshot, o.object.clone()), Ok(Object::Snapshot(s)) if snap::next_step(s.status.as_ref()) == snap::Step::Capture)
        });
        Ok(snapshots || self.has_startable_restores()?)
    }

    /// Stores an object and rewrites its status file.
    fn save(&self, stored: &StoredObject) -> Result2<()> {
        self.store.put_object(stored)?;
        if let Err(e) = self.status.write(&stored.key, &stored.object) {
            tracing::error!(object = %stored.key, error = %e, "Could not write status file");
        }
        Ok(())
    }

    /// Brings one declared object into the store.
    fn apply(&mut self, key: &ObjectKey, decl: &Declaration, existing: Option<StoredObject>) -> Result2<()> {
        let now = Time::now();
        let Some(mut stored) = existing else {
            let uid = uuid::Uuid::new_v4().to_string();
            let object = new_object(decl, &uid, 1, now, now);
            let stored = StoredObject { uid, key: key.clone(), manifest_file: Some(decl.file.clone()), object };
            log_created(key, decl);
            return self.save(&stored);
        };
        let typed = Object::from_stored(key.kind, stored.object.clone()).ok();
        let generation = stored.object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        let created = stored
            .object
            .pointer("/metadata/creationTimestamp")
            .and_then(|v| serde_json::from_value::<Time>(v.clone()).ok())
            .unwrap_or(now);
        let stored_invalid = typed.is_none() || status_reason(&stored.object, key.kind) == Some(reasons::INVALID_SPEC);
        if stored_invalid {
            // An object that never became valid had no effect: a fixed (or
            // further broken) manifest simply replaces it.
            let same = stored.object.get("spec") == decl.raw.get("spec") && decl.parsed.is_err();
            if !same {
                stored.object = new_object(decl, &stored.uid, generation + 1, created, now);
                stored.manifest_file = Some(decl.file.clone());
                log_created(key, decl);
                self.save(&stored)?;
            }
            return Ok(());
        }
        let Some(mut typed) = typed else { return Ok(()) };
        let applied_spec = typed.spec_value();
        let mut changed = false;
        // Metadata (labels, annotations) is mutable; the spec of snapshots and
        // restores is not.
        let (labels, mut annotations) = declared_meta(decl);
        annotations.insert(MANIFEST_FILE_ANNOTATION.into(), decl.file.clone());
        {
            let meta = typed.meta_mut();
            if meta.labels.clone().unwrap_or_default() != labels {
                meta.labels = Some(labels).filter(|l| !l.is_empty());
                changed = true;
            }
            if meta.annotations.clone().unwrap_or_default() != annotations {
                meta.annotations = Some(annotations);
                changed = true;
            }
        }
        let edit: Option<String> = match &decl.parsed {
            Err((field, message)) => Some(format!(
                "The manifest in {} was edited and is now invalid ({field}: {message}); the edit was not applied",
                decl.file
            )),
            Ok(parsed) if parsed.spec_value() != applied_spec => match (parsed, &mut typed) {
                (Object::Schedule(new), Object::Schedule(old)) => {
                    // Schedules are mutable: take the new spec.
                    old.spec = new.spec.clone();
                    old.metadata.generation = Some(generation + 1);
                    changed = true;
                    tracing::info!(object = %key, "Updated VolumeSnapshotSchedule spec");
                    None
                }
                _ => Some(format!(
                    "The spec in {} differs from the spec this object was created with; specs are immutable, so the edit was not applied. Create a new object (new name) to take a new {}",
                    decl.file,
                    if key.kind == Kind::Snapshot { "snapshot" } else { "restore" }
                )),
            },
            Ok(_) => None,
        };
        let before = typed.to_value();
        set_spec_changed(&mut typed, generation, now, edit.as_deref());
        if typed.to_value() != before {
            changed = true;
            if let Some(e) = &edit {
                tracing::warn!(object = %key, "{e}");
            }
        }
        if changed || stored.manifest_file.as_deref() != Some(&decl.file) {
            stored.manifest_file = Some(decl.file.clone());
            stored.object = typed.to_value();
            self.save(&stored)?;
        }
        Ok(())
    }

    /// The object's manifest is gone: delete it, applying the deletion policy.
    fn delete(&mut self, key: &ObjectKey, obj: StoredObject) -> Result2<()> {
        let policy = match Object::from_stored(key.kind, obj.object.clone()) {
            Ok(Object::Snapshot(s)) => Some(s.spec.deletion_policy),
            _ => None,
        };
        if let Some(r) = self.running.get_mut(&obj.uid) {
            r.cancel.store(true, Ordering::SeqCst);
            r.deleted = policy;
        }
        if let Some(rec) = self.store.archive(&obj.uid)? {
            match policy {
                Some(crate::api::DeletionPolicy::Delete) => match self.store.delete_archive_file(&rec) {
                    Ok(()) => {
                        self.store.delete_archive_record(&obj.uid)?;
                        tracing::info!(object = %key, archive = rec.rel_path, "Deleted archive (deletionPolicy: Delete)");
                    }
                    Err(e) => {
                        tracing::error!(object = %key, error = %e, "Could not delete archive; keeping its record");
                        self.store.set_archive_object_present(&obj.uid, false)?;
                    }
                },
                _ => {
                    self.store.set_archive_object_present(&obj.uid, false)?;
                    tracing::info!(object = %key, archive = rec.rel_path, "Retained archive of deleted snapshot");
                }
            }
        }
        self.store.delete_object(&obj.uid)?;
        if let Err(e) = self.status.remove(key) {
            tracing::error!(object = %key, error = %e, "Could not remove status file");
        }
        tracing::info!(object = %key, "Deleted {} (manifest removed)", key.kind);
        Ok(())
    }

    /// Starts captures for snapshots that need one, up to the limit.
    fn start_work(&mut self) -> Result2<()> {
        if self.shutting_down {
            return Ok(());
        }
        self.start_restores()?;
        for stored in self.store.objects(Some(Kind::Snapshot), None)? {
            if self.running.len() >= self.cfg.max_concurrent.max(1) {
                break;
            }
            if self.running.contains_key(&stored.uid) || self.removal_pending.contains(&stored.uid) {
                continue;
            }
            let Ok(Object::Snapshot(s)) = Object::from_stored(Kind::Snapshot, stored.object.clone()) else { continue };
            if snap::next_step(s.status.as_ref()) != snap::Step::Capture && !self.retries_unavailable(&stored) {
                continue;
            }
            self.start_capture(stored, s)?;
        }
        Ok(())
    }

    fn start_capture(&mut self, mut stored: StoredObject, mut s: VolumeSnapshot) -> Result2<()> {
        let key = stored.key.clone();
        let now = Time::now();
        let generation = s.metadata.generation.unwrap_or(1);
        let st = s.status.get_or_insert_with(Default::default);
        let src = s.spec.source.clone();
        let unsupported = if src.persistent_volume_claim.is_some() {
            Some(
                "source.persistentVolumeClaim is served by the Kubernetes controller (volsnap controller), not in files mode",
            )
        } else {
            None
        };
        if let Some(msg) = unsupported {
            snap::failed(st, generation, now, reasons::UNSUPPORTED_SOURCE, msg);
            tracing::warn!(object = %key, "{msg}");
            stored.object = Object::Snapshot(s).to_value();
            return self.save(&stored);
        }
        if let Some(archive) = src.archive.clone() {
            return self.start_adoption(stored, s, &archive.path);
        }
        // A capture that does not stop the containers reads what they use
        // now: their binds must still be the directories they mounted.
        let verify_live = s.spec.effective_quiesce() != crate::api::QuiesceMode::Stop;
        let resolution = match self.resolve_source(&src, verify_live)? {
            Ok(r) => r,
            Err((reason, msg)) => {
                let st = s.status.get_or_insert_with(Default::default);
                if status_reason(&stored.object, Kind::Snapshot) != Some(reason) || st.phase != Some(Phase::Failed) {
                    snap::failed(st, generation, now, reason, &msg);
                    tracing::warn!(object = %key, reason, "Failed VolumeSnapshot: {msg}");
                    stored.object = Object::Snapshot(s).to_value();
                    self.save(&stored)?;
                }
                return Ok(());
            }
        };
        if s.spec.effective_quiesce() != crate::api::QuiesceMode::None
            && let Err(msg) = self.workload_ready()
        {
            let st = s.status.get_or_insert_with(Default::default);
            if status_reason(&stored.object, Kind::Snapshot) != Some(reasons::DOCKER_UNAVAILABLE)
                || st.phase != Some(Phase::Failed)
            {
                snap::failed(st, generation, now, reasons::DOCKER_UNAVAILABLE, &msg);
                tracing::warn!(object = %key, "Failed VolumeSnapshot: {msg}");
                stored.object = Object::Snapshot(s).to_value();
                self.save(&stored)?;
            }
            return Ok(());
        }
        let st = s.status.get_or_insert_with(Default::default);
        st.skipped = resolution.skipped.clone();
        if resolution.volumes.is_empty() {
            let msg = no_data_message(&resolution.skipped);
            snap::failed(st, generation, now, reasons::NO_DATA, &msg);
            tracing::warn!(object = %key, "Failed VolumeSnapshot: {msg}");
            stored.object = Object::Snapshot(s).to_value();
            return self.save(&stored);
        }
        let guard = match self.locks.try_lock_all(resolution.volumes.iter().map(|v| v.path.clone()).collect()) {
            Ok(g) => g,
            Err(busy) => {
                let msg = format!("Waiting: another operation is using {}", busy.display());
                if status_reason(&stored.object, Kind::Snapshot) != Some(reasons::VOLUME_BUSY) {
                    snap::pending(st, generation, now, reasons::VOLUME_BUSY, &msg);
                    stored.object = Object::Snapshot(s).to_value();
                    self.save(&stored)?;
                }
                return Ok(());
            }
        };
        let rel_path = self.archive_rel_path(&key, &stored.uid, s.spec.compression)?;
        let dest = match self.store.archive_abs_path(&rel_path) {
            Ok(p) => p,
            Err(e) => {
                snap::failed(st, generation, now, reasons::ARCHIVE_WRITE_FAILED, &e.to_string());
                stored.object = Object::Snapshot(s).to_value();
                return self.save(&stored);
            }
        };
        let manifest = ArchiveManifest {
            format_version: FORMAT_VERSION,
            snapshot: SnapshotRef { namespace: key.namespace.clone(), name: key.name.clone(), uid: stored.uid.clone() },
            creation_timestamp: now,
            producer: Some(format!("volsnap {}", env!("CARGO_PKG_VERSION"))),
            volumes: resolution.volumes.iter().map(ManifestVolume::from).collect(),
        };
        let names: Vec<String> = resolution.volumes.iter().map(|v| v.name.clone()).collect();
        snap::started(st, generation, now, &names);
        stored.object = Object::Snapshot(s.clone()).to_value();
        self.save(&stored)?;
        tracing::info!(object = %key, volumes = ?names, archive = %dest.display(), "Started capture");

        let cancel = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(CaptureProgress::default());
        self.running.insert(
            stored.uid.clone(),
            Running {
                key,
                cancel: cancel.clone(),
                progress: progress.clone(),
                deleted: None,
                rel_path,
                last_reported: (0, 0),
            },
        );
        let tx = self.done_tx.clone();
        let uid = stored.uid.clone();
        let compression = s.spec.compression;
        let volumes: Vec<CaptureVolume> = resolution.volumes;
        let mode = s.spec.effective_quiesce();
        let stop_timeout = s.spec.stop_timeout_seconds;
        let quiesce_ctx = (mode != crate::api::QuiesceMode::None).then(|| {
            (self.workload.clone(), self.cfg.state.clone(), self.cfg.archives.clone(), key_for_journal(&stored))
        });
        tokio::task::spawn_blocking(move || {
            crate::engine::fault::pause("capture:started");
            let manifest_json = serde_json::to_string(&manifest).unwrap_or_default();
            let mut quiesce_warnings = Vec::new();
            let mut resume_pending = None;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // Quiesce (journaled; resumed by Drop on any exit, and by the
                // start-up sweep after a crash), then read.
                let quiesce_store = match &quiesce_ctx {
                    Some((_, state, archives, _)) => Some(
                        Store::open(state, archives)
                            .map_err(|e| CaptureError::Quiesce(format!("cannot open the state database: {e}")))?,
                    ),
                    None => None,
                };
                let mut quiesced = match (&quiesce_ctx, &quiesce_store) {
                    (Some((workload, _, _, row)), Some(store)) => {
                        let dirs: Vec<PathBuf> = volumes.iter().map(|v| v.path.clone()).collect();
                        Some(
                            Quiesce::begin(&**workload, store, row.clone(), &dirs, mode, stop_timeout)
                                .map_err(CaptureError::Quiesce)?,
                        )
                    }
                    _ => None,
                };
                let captured = capture::capture(CaptureJob {
                    manifest: &manifest,
                    volumes: &volumes,
                    compression,
                    dest: &dest,
                    progress: &progress,
                    cancel: &cancel,
                });
                if let Some(q) = quiesced.as_mut() {
                    match q.finish() {
                        Ok(w) => quiesce_warnings.extend(w),
                        Err(e) if e.unreachable => resume_pending = Some(e.to_string()),
                        Err(e) => quiesce_warnings.push(format!(
                            "resuming the quiesced containers failed ({e}); the daemon retries at every resync"
                        )),
                    }
                }
                captured
            }))
            .unwrap_or_else(|_| {
                Err(CaptureError::Write {
                    path: dest.clone(),
                    source: std::io::Error::other("capture thread panicked"),
                })
            });
            let _ = tx.send(Done { uid, result, manifest_json, quiesce_warnings, resume_pending, _guard: guard });
        });
        Ok(())
    }

    /// `<ns>/<name>.<ext>`, unless a retained archive of an earlier object of
    /// the same name holds it: then `<ns>/<name>-<uid prefix>.<ext>`.
    fn archive_rel_path(&self, key: &ObjectKey, uid: &str, compression: crate::api::Compression) -> Result2<String> {
        let plain = format!("{}/{}.{}", key.namespace, key.name, compression.extension());
        let taken = match self.store.archive_by_rel_path(&plain)? {
            Some(rec) => rec.snapshot_uid != uid,
            None => false,
        };
        if taken {
            Ok(format!("{}/{}-{}.{}", key.namespace, key.name, &uid[..8.min(uid.len())], compression.extension()))
        } else {
            Ok(plain)
        }
    }

    /// Records a finished capture.
    fn finish(&mut self, done: Done) -> Result2<()> {
        let Some(run) = self.running.remove(&done.uid) else { return Ok(()) };
        let now = Time::now();
        let dest = self.archives_dir.join(&run.rel_path);
        if let Some(policy) = run.deleted {
            // Deleted mid-capture.
            if let Ok(outcome) = &done.result {
                if policy == crate::api::DeletionPolicy::Delete {
                    let _ = std::fs::remove_file(&dest);
                    let _ = std::fs::remove_file(capture::checksum_path(&dest));
                } else {
                    self.store.put_archive(&archive_record(&done, &run, outcome, now, false))?;
                }
            }
            return Ok(());
        }
        let Some(mut stored) = self.store.object_by_uid(&done.uid)? else { return Ok(()) };
        let Ok(Object::Snapshot(mut s)) = Object::from_stored(Kind::Snapshot, stored.object.clone()) else {
            return Ok(());
        };
        let generation = s.metadata.generation.unwrap_or(1);
        let st = s.status.get_or_insert_with(Default::default);
        match done.result {
            Ok(ref outcome) => {
                self.store.put_archive(&archive_record(&done, &run, outcome, now, true))?;
                let archive = ArchiveStatus {
                    path: dest.display().to_string(),
                    format: s.spec.compression.format().into(),
                    size_bytes: outcome.size_bytes,
                    sha256: outcome.sha256.clone(),
                };
                let skipped: Vec<SkippedVolume> = std::mem::take(&mut st.skipped);
                snap::completed(st, generation, now, archive, outcome.volumes.clone(), skipped);
                if !done.quiesce_warnings.is_empty() {
                    snap::quiesce_warnings(st, generation, now, &done.quiesce_warnings);
                }
                if let Some(why) = &done.resume_pending {
                    snap::waiting_to_resume(st, generation, now, why);
                    tracing::warn!(object = %run.key, "Captured, but the held containers wait for Docker to be resumed: {why}");
                }
                if let Some(src) = &s.spec.source.archive {
                    let msg = format!(
                        "Adopted {} after verifying it end to end as untrusted input: {} volume(s), stored as {}. The paths recorded inside are information only: restore it with spec.targetPath",
                        src.path,
                        outcome.volumes.len(),
                        dest.display()
                    );
                    conditions::set(
                        &mut st.conditions,
                        types::READY,
                        ConditionStatus::True,
                        reasons::ADOPTED,
                        &msg,
                        Some(generation),
                        now,
                    );
                }
                let msg = conditions::get(&st.conditions, types::READY).map(|c| c.message.clone()).unwrap_or_default();
                tracing::info!(object = %run.key, "Captured VolumeSnapshot: {msg}");
            }
            Err(CaptureError::Cancelled) => {
                snap::pending(
                    st,
                    generation,
                    now,
                    reasons::INTERRUPTED,
                    "The capture was interrupted by a shutdown; it starts again from scratch when volsnap next runs",
                );
                tracing::info!(object = %run.key, "Interrupted capture at shutdown");
            }
            Err(CaptureError::Write { ref path, ref source }) => {
                let msg = format!(
                    "Could not write the archive {}: {source}. Nothing partial was kept. Free space or fix the archives directory, then delete and re-add the manifest to retry",
                    path.display()
                );
                snap::failed(st, generation, now, reasons::ARCHIVE_WRITE_FAILED, &msg);
                tracing::error!(object = %run.key, "Failed VolumeSnapshot: {msg}");
            }
            Err(CaptureError::Quiesce(ref why)) => {
                let msg = format!(
                    "Could not quiesce the workload before reading: {why}. Nothing was captured; containers volsnap paused or stopped were resumed"
                );
                snap::failed(st, generation, now, reasons::QUIESCE_FAILED, &msg);
                tracing::error!(object = %run.key, "Failed VolumeSnapshot: {msg}");
            }
            Err(CaptureError::Rejected(ref why)) => {
                let msg = format!("{why}. Nothing was adopted; the original file was not changed");
                snap::failed(st, generation, now, reasons::ARCHIVE_INVALID, &msg);
                tracing::error!(object = %run.key, "Failed VolumeSnapshot: {msg}");
            }
            Err(ref e @ CaptureError::ReadVolume { .. }) => {
                let msg = format!(
                    "{e}. Nothing was archived; fix the directory, then delete and re-add the manifest to retry"
                );
                snap::failed(st, generation, now, reasons::READ_FAILED, &msg);
                tracing::error!(object = %run.key, "Failed VolumeSnapshot: {msg}");
            }
        }
        stored.object = Object::Snapshot(s).to_value();
        self.save(&stored)
    }

    /// Writes `status.progress` of running captures when it moved.
    fn report_progress(&mut self) -> Result2<()> {
        let mut updates = Vec::new();
        for (uid, r) in self.running.iter_mut() {
            let now = (r.progress.bytes_done.load(Ordering::Relaxed), r.progress.bytes_total.load(Ordering::Relaxed));
            if now != r.last_reported && r.deleted.is_none() {
                r.last_reported = now;
                updates.push((uid.clone(), now));
            }
        }
        for (uid, (done, total)) in updates {
            let Some(mut stored) = self.store.object_by_uid(&uid)? else { continue };
            let Ok(Object::Snapshot(mut s)) = Object::from_stored(Kind::Snapshot, stored.object.clone()) else {
                continue;
            };
            snap::progress(s.status.get_or_insert_with(Default::default), done, total);
            stored.object = Object::Snapshot(s).to_value();
            self.save(&stored)?;
        }
        Ok(())
    }
}

/// The quiesce journal's identification of a capture.
fn key_for_journal(stored: &StoredObject) -> (String, String, String) {
    (stored.uid.clone(), stored.key.namespace.clone(), stored.key.name.clone())
}

fn archive_record(done: &Done, run: &Running, outcome: &CaptureOutcome, now: Time, present: bool) -> ArchiveRecord {
    ArchiveRecord {
        snapshot_uid: done.uid.clone(),
        namespace: run.key.namespace.clone(),
        name: run.key.name.clone(),
        rel_path: run.rel_path.clone(),
        format: if run.rel_path.ends_with(".tar.zst") { "tar+zstd" } else { "tar+gzip" }.into(),
        size_bytes: outcome.size_bytes,
        sha256: outcome.sha256.clone(),
        manifest_json: done.manifest_json.clone(),
        created_at: now,
        object_present: present,
    }
}

fn no_data_message(skipped: &[SkippedVolume]) -> String {
    let reasons: Vec<String> = skipped.iter().map(|s| format!("{}: {}", s.name, s.reason)).collect();
    format!("Nothing to capture: every volume was skipped ({})", reasons.join("; "))
}

/// The reason of the object's main condition (Ready, or Succeeded for restores).
fn status_reason(object: &Value, kind: Kind) -> Option<&str> {
    let main = if kind == Kind::Restore { types::SUCCEEDED } else { types::READY };
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(main))?
        .get("reason")?
        .as_str()
}

fn declared_meta(decl: &Declaration) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let map = |field: &str| -> BTreeMap<String, String> {
        decl.raw
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
            .unwrap_or_default()
    };
    (map("labels"), map("annotations"))
}

fn log_created(key: &ObjectKey, decl: &Declaration) {
    match &decl.parsed {
        Ok(_) => tracing::info!(object = %key, file = decl.file, "Accepted {}", key.kind),
        Err((field, message)) => {
            tracing::warn!(object = %key, file = decl.file, "Rejected {}: {field}: {message}", key.kind)
        }
    }
}

/// A new object from a declaration: metadata filled in, status initialised.
fn new_object(decl: &Declaration, uid: &str, generation: i64, created: Time, now: Time) -> Value {
    let (labels, mut annotations) = declared_meta(decl);
    annotations.insert(MANIFEST_FILE_ANNOTATION.into(), decl.file.clone());
    let mut meta = serde_json::json!({
        "name": decl.raw.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "namespace": decl.raw.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
        "uid": uid,
        "generation": generation,
        "creationTimestamp": created,
        "annotations": annotations,
    });
    if !labels.is_empty() {
        meta["labels"] = serde_json::to_value(labels).unwrap_or(Value::Null);
    }
    match &decl.parsed {
        Ok(parsed) => {
            let mut obj = parsed.clone();
            if let Ok(m) = serde_json::from_value(meta) {
                *obj.meta_mut() = m;
            }
            init_status(&mut obj, generation, now);
            obj.to_value()
        }
        Err((field, message)) => {
            let msg = if field.is_empty() { message.clone() } else { format!("{field}: {message}") };
            let kind = decl.raw.get("kind").and_then(Value::as_str).and_then(Kind::from_name).unwrap_or(Kind::Snapshot);
            let mut status = crate::api::VolumeSnapshotStatus::default();
            let main = if kind == Kind::Restore { types::SUCCEEDED } else { types::READY };
            conditions::set(
                &mut status.conditions,
                main,
                ConditionStatus::False,
                reasons::INVALID_SPEC,
                &msg,
                Some(generation),
                now,
            );
            if kind != Kind::Schedule {
                status.phase = Some(Phase::Failed);
            }
            status.observed_generation = Some(generation);
            serde_json::json!({
                "apiVersion": decl.raw.get("apiVersion").cloned().unwrap_or(Value::Null),
                "kind": kind.name(),
                "metadata": meta,
                "spec": decl.raw.get("spec").cloned().unwrap_or(Value::Null),
                "status": status,
            })
        }
    }
}

/// Initial status of an accepted object.
fn init_status(obj: &mut Object, generation: i64, now: Time) {
    match obj {
        Object::Snapshot(s) => {
            let st = s.status.get_or_insert_with(Default::default);
            snap::pending(st, generation, now, reasons::PENDING, "Accepted; waiting for a worker");
        }
        Object::Restore(r) => {
            let st = r.status.get_or_insert_with(Default::default);
            crate::core::restore::pending(st, generation, now, reasons::PENDING, "Accepted; waiting for a worker");
        }
        Object::Schedule(s) => {
            let st = s.status.get_or_insert_with(Default::default);
            st.observed_generation = Some(generation);
            let msg = "VolumeSnapshotSchedule is validated but not run by this release of volsnap";
            conditions::set(
                &mut st.conditions,
                types::READY,
                ConditionStatus::False,
                reasons::NOT_IMPLEMENTED,
                msg,
                Some(generation),
                now,
            );
        }
    }
}

fn set_spec_changed(obj: &mut Object, generation: i64, now: Time, edit: Option<&str>) {
    let conds = match obj {
        Object::Snapshot(s) => &mut s.status.get_or_insert_with(Default::default).conditions,
        Object::Restore(r) => &mut r.status.get_or_insert_with(Default::default).conditions,
        Object::Schedule(s) => &mut s.status.get_or_insert_with(Default::default).conditions,
    };
    match edit {
        Some(msg) => conditions::set(
            conds,
            types::SPEC_CHANGED,
            ConditionStatus::True,
            reasons::SPEC_IMMUTABLE,
            msg,
            Some(generation),
            now,
        ),
        None => {
            if conditions::get(conds, types::SPEC_CHANGED).is_some_and(|c| c.status == ConditionStatus::True) {
                conditions::set(
                    conds,
                    types::SPEC_CHANGED,
                    ConditionStatus::False,
                    reasons::SPEC_MATCHES,
                    "The manifest matches the applied spec again",
                    Some(generation),
                    now,
                );
            }
        }
    }
}
