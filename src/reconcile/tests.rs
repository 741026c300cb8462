//! The reconciler's decisions, driven as a driver would (one object at a
//! time, the returned status stored back) over real files and a real SQLite
//! store, with an in-memory object view and a fake runtime: a scaled
//! workload that cannot pause, whose runtime can be switched off. No
//! daemon, no file watcher, no Docker; each test takes milliseconds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::api::{
    ArchiveSource, DeletionPolicy, PathSource, QuiesceMode, SnapshotSource, VolumeRestore, VolumeRestoreSpec,
    VolumeSnapshotSpec,
};
use crate::core::{conditions, reasons, types};
use crate::engine::workload::{Purpose, StoppedUnit, Workload, WorkloadError};

/// A Deployment-like workload: "running" while it has replicas; stopping
/// scales it to zero, starting scales it back to the count its unit
/// recorded. It cannot pause.
struct Scaled {
    replicas: Mutex<i32>,
    /// The runtime answers (shared with [`FakeRuntime`]).
    up: Arc<AtomicBool>,
    /// While set, `stop` waits until it is cleared (a slow stop).
    hold_stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    /// The runtime goes away when asked to stop (`Before`: before the
    /// swap), or when asked to start again (`AtStart`: after the swap).
    outage: Mutex<Option<Outage>>,
    events: Mutex<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outage {
    Before,
    AtStart,
}

impl Scaled {
    fn replicas(&self) -> i32 {
        *self.replicas.lock().unwrap()
    }

    fn release_stop(&self) {
        let (held, cv) = &*self.hold_stop;
        *held.lock().unwrap() = false;
        cv.notify_all();
    }

    fn unreachable(&self, op: &'static str) -> Result<(), WorkloadError> {
        if self.up.load(Ordering::SeqCst) { Ok(()) } else { Err(WorkloadError::unreachable(op, "app", "runtime down")) }
    }
}

impl Workload for Scaled {
    fn plan_stop(&self, _: &[PathBuf], _: Purpose) -> Result<Vec<StoppedUnit>, WorkloadError> {
        self.unreachable("planning")?;
        let n = self.replicas();
        Ok(if n > 0 {
            vec![StoppedUnit {
                kind: "fake-deployment".into(),
                id: "app".into(),
                name: "app".into(),
                paused: false,
                replicas: Some(n),
            }]
        } else {
            Vec::new()
        })
    }

    fn stop(&self, units: &[StoppedUnit], _: Option<u32>) -> Result<Vec<String>, WorkloadError> {
        if *self.outage.lock().unwrap() == Some(Outage::Before) {
            self.up.store(false, Ordering::SeqCst);
        }
        self.unreachable("stopping")?;
        let (held, cv) = &*self.hold_stop;
        let _unheld = cv.wait_while(held.lock().unwrap(), |h| *h).unwrap();
        if !units.is_empty() {
            *self.replicas.lock().unwrap() = 0;
            self.events.lock().unwrap().push("scale to 0".into());
        }
        Ok(Vec::new())
    }

    fn can_pause(&self) -> bool {
        false
    }

    fn pause(&self, _: &[StoppedUnit]) -> Result<Vec<StoppedUnit>, WorkloadError> {
        Err(WorkloadError::refused("pausing", "app", "a scaled workload cannot be paused"))
    }

    fn start(&self, units: &[StoppedUnit]) -> Result<Vec<String>, WorkloadError> {
        if *self.outage.lock().unwrap() == Some(Outage::AtStart) {
            self.up.store(false, Ordering::SeqCst);
        }
        self.unreachable("starting")?;
        for u in units {
            let n = u.replicas.expect("a scaled unit records its replica count");
            *self.replicas.lock().unwrap() = n;
            self.events.lock().unwrap().push(format!("scale to {n}"));
        }
        Ok(Vec::new())
    }
}

/// `source.container: app` is the directory `data`; the runtime can be down.
struct FakeRuntime {
    up: Arc<AtomicBool>,
    data: PathBuf,
    workload: Arc<Scaled>,
}

impl Runtime for FakeRuntime {
    fn resolve(&self, _: &str, src: &SnapshotSource, policy: &PathPolicy, _: bool) -> Result<Resolution, Unresolved> {
        if !self.up.load(Ordering::SeqCst) {
            return Err(Unresolved { reason: reasons::DOCKER_UNAVAILABLE, message: "the fake runtime is down".into() });
        }
        match src.container.as_deref() {
            Some("app") => {
                Ok(policy.resolve(&[PathSource { name: Some("data".into()), path: self.data.display().to_string() }]))
            }
            _ => Err(Unresolved { reason: reasons::SOURCE_NOT_FOUND, message: "no such container".into() }),
        }
    }

    fn workload_ready(&self) -> Result<(), String> {
        if self.up.load(Ordering::SeqCst) { Ok(()) } else { Err("the fake runtime is down".into()) }
    }

    fn workload(&self) -> Arc<dyn Workload> {
        self.workload.clone()
    }

    fn trusted_root(&self) -> Option<PathBuf> {
        None
    }
}

use crate::engine::paths::Resolution;

/// The objects a driver would hold: snapshots by namespace/name.
#[derive(Default)]
struct Objects(HashMap<String, VolumeSnapshot>);

impl View for Objects {
    fn snapshot(&self, namespace: &str, name: &str) -> Option<VolumeSnapshot> {
        self.0.get(&format!("{namespace}/{name}")).cloned()
    }
}

impl Objects {
    fn put(&mut self, s: &VolumeSnapshot) {
        let key = format!("{}/{}", s.metadata.namespace.as_deref().unwrap(), s.metadata.name.as_deref().unwrap());
        self.0.insert(key, s.clone());
    }
}

struct Env {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    archives: PathBuf,
    root: PathBuf,
    data: PathBuf,
    up: Arc<AtomicBool>,
    workload: Arc<Scaled>,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let (state, archives, root) = (base.join("state"), base.join("state/archives"), base.join("root"));
        let data = root.join("data");
        std::fs::create_dir_all(&archives).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("file"), b"version 1").unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let workload = Arc::new(Scaled {
            replicas: Mutex::new(3),
            up: up.clone(),
            hold_stop: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
            outage: Mutex::new(None),
            events: Mutex::new(Vec::new()),
        });
        Env { _tmp: tmp, state, archives, root, data, up, workload }
    }

    /// A reconciler over the state directory (a new one is a restart).
    fn reconciler(&self, retry_unavailable: bool) -> Reconciler {
        let store = Store::open(&self.state, &self.archives).unwrap();
        let policy = PathPolicy::new(std::slice::from_ref(&self.root), std::slice::from_ref(&self.state)).unwrap();
        let runtime = FakeRuntime { up: self.up.clone(), data: self.data.clone(), workload: self.workload.clone() };
        let settings = Settings {
            state: self.state.clone(),
            archives: self.archives.clone(),
            max_concurrent: 4,
            retry_unavailable,
        };
        let mut r = Reconciler::new(store, policy, Arc::new(runtime), settings);
        r.start().unwrap();
        r
    }

    fn store(&self) -> Store {
        Store::open(&self.state, &self.archives).unwrap()
    }
}

fn object_meta<T: kube::Resource>(o: &mut T, name: &str) {
    let m = o.meta_mut();
    m.namespace = Some("default".into());
    m.name = Some(name.into());
    m.uid = Some(format!("uid-{name}"));
    m.generation = Some(1);
}

fn snapshot(
    name: &str,
    source: SnapshotSource,
    quiesce: Option<QuiesceMode>,
    policy: DeletionPolicy,
) -> VolumeSnapshot {
    let mut s = VolumeSnapshot::new(
        name,
        VolumeSnapshotSpec {
            source,
            quiesce,
            compression: Default::default(),
            deletion_policy: policy,
            node_name: None,
            stop_timeout_seconds: None,
            level: None,
        },
    );
    object_meta(&mut s, name);
    s
}

fn paths(dir: &Path) -> SnapshotSource {
    SnapshotSource {
        paths: Some(vec![PathSource { name: Some("data".into()), path: dir.display().to_string() }]),
        ..Default::default()
    }
}

fn container() -> SnapshotSource {
    SnapshotSource { container: Some("app".into()), ..Default::default() }
}

fn restore(name: &str, snapshot: &str) -> VolumeRestore {
    let mut r = VolumeRestore::new(
        name,
        VolumeRestoreSpec {
            snapshot_name: snapshot.into(),
            volumes: None,
            target_path: None,
            quiesce: Default::default(),
            keep_pre_restore: true,
            stop_timeout_seconds: None,
        },
    );
    object_meta(&mut r, name);
    r
}

/// Waits (bounded) for work in flight to end: the reconciler's wake-up.
fn wait_for_work(rec: &Reconciler) {
    let wake = rec.wake();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), wake.notified()).await })
        .expect("work in flight ended within 30 s");
}

/// Reconciles a snapshot, storing the status back, until it is not running.
fn settle_snapshot(rec: &mut Reconciler, s: &mut VolumeSnapshot) -> Next {
    loop {
        let out = rec.snapshot(s).unwrap();
        assert!(out.create.is_empty());
        s.status = Some(out.status);
        if out.next != Next::Running {
            return out.next;
        }
        wait_for_work(rec);
    }
}

/// Reconciles a restore until it is not running; created objects go into
/// `objects`.
fn settle_restore(rec: &mut Reconciler, r: &mut VolumeRestore, objects: &mut Objects) -> Next {
    loop {
        let out = rec.restore(r, objects).unwrap();
        r.status = Some(out.status);
        for mut c in out.create {
            let name = c.metadata.name.clone().unwrap();
            c.metadata.uid = Some(format!("uid-{name}"));
            let mut c2 = c.clone();
            rec.snapshot(&c2).map(|o| c2.status = Some(o.status)).unwrap();
            objects.put(&c2);
        }
        if out.next != Next::Running {
            return out.next;
        }
        wait_for_work(rec);
    }
}

fn reason(conds: &[crate::api::Condition], type_: &str) -> String {
    conditions::get(conds, type_).map(|c| c.reason.clone()).unwrap_or_default()
}

fn snap_reason(s: &VolumeSnapshot) -> String {
    reason(&s.status.as_ref().unwrap().conditions, types::READY)
}

fn restore_reason(r: &VolumeRestore) -> String {
    reason(&r.status.as_ref().unwrap().conditions, types::SUCCEEDED)
}

#[test]
fn capture_records_its_archive() {
    let env = Env::new();
    let mut rec = env.reconciler(true);
    let mut s = snapshot("s1", paths(&env.data), None, DeletionPolicy::Retain);
    assert_eq!(rec.snapshot(&s).unwrap().next, Next::Running, "a new snapshot starts capturing at once");
    assert_eq!(settle_snapshot(&mut rec, &mut s), Next::Done);
    assert_eq!(snap_reason(&s), reasons::CAPTURED);
    let rec_row = env.store().archive("uid-s1").unwrap().expect("archive recorded under the snapshot's uid");
    assert!(env.archives.join(&rec_row.rel_path).is_file());
    assert_eq!(rec.snapshot(&s).unwrap().status, *s.status.as_ref().unwrap(), "a Completed snapshot is left alone");
}

#[test]
fn busy_volume_waits_until_the_other_operation_is_recorded() {
    let env = Env::new();
    let mut rec = env.reconciler(true);
    let mut a = snapshot("a", paths(&env.data), None, DeletionPolicy::Retain);
    let mut b = snapshot("b", paths(&env.data), None, DeletionPolicy::Retain);
    assert_eq!(rec.snapshot(&a).unwrap().next, Next::Running);
    // Until a's outcome is taken, the volume stays locked, however fast the
    // capture thread is.
    let out = rec.snapshot(&b).unwrap();
    assert_eq!(
        (out.next, reason(&out.status.conditions, types::READY).as_str()),
        (Next::Waiting, reasons::VOLUME_BUSY)
    );
    assert!(out.status.conditions[0].message.contains(&env.data.display().to_string()));
    settle_snapshot(&mut rec, &mut a);
    assert_eq!(settle_snapshot(&mut rec, &mut b), Next::Done);
    assert_eq!(snap_reason(&b), reasons::CAPTURED);
}

#[test]
fn runtime_unavailable_fails_and_is_retried_when_it_answers() {
    let env = Env::new();
    env.up.store(false, Ordering::SeqCst);
    let mut rec = env.reconciler(true);
    let mut s = snapshot("s", container(), Some(QuiesceMode::Stop), DeletionPolicy::Retain);
    let out = rec.snapshot(&s).unwrap();
    assert_eq!(out.next, Next::Waiting, "a daemon looks again");
    assert_eq!(reason(&out.status.conditions, types::READY), reasons::DOCKER_UNAVAILABLE);
    s.status = Some(out.status);
    assert_eq!(rec.snapshot(&s).unwrap().status, *s.status.as_ref().unwrap(), "failing again rewrites nothing");
    env.up.store(true, Ordering::SeqCst);
    assert_eq!(settle_snapshot(&mut rec, &mut s), Next::Done);
    assert_eq!(snap_reason(&s), reasons::CAPTURED);
    assert_eq!(*env.workload.events.lock().unwrap(), ["scale to 0", "scale to 3"], "stopped for the read, then back");
    assert_eq!(env.workload.replicas(), 3);

    // A one-shot run reports it instead.
    env.up.store(false, Ordering::SeqCst);
    let mut once = env.reconciler(false);
    let t = snapshot("t", container(), Some(QuiesceMode::Stop), DeletionPolicy::Retain);
    assert_eq!(once.snapshot(&t).unwrap().next, Next::Done);
}

#[test]
fn pause_on_a_runtime_that_cannot_pause_fails_before_reading() {
    let env = Env::new();
    let mut rec = env.reconciler(true);
    let mut s = snapshot("s", container(), Some(QuiesceMode::Pause), DeletionPolicy::Retain);
    assert_eq!(settle_snapshot(&mut rec, &mut s), Next::Done);
    assert_eq!(snap_reason(&s), reasons::QUIESCE_FAILED);
    let msg = &s.status.as_ref().unwrap().conditions[0].message;
    assert!(msg.contains("cannot pause"), "{msg}");
    assert!(env.store().archive("uid-s").unwrap().is_none(), "nothing was captured");
    assert_eq!(env.workload.replicas(), 3, "nothing was stopped");
}

#[test]
fn deletion_during_a_capture_stops_it_and_brings_the_workload_back() {
    let env = Env::new();
    let mut rec = env.reconciler(true);
    let s = snapshot("s", container(), Some(QuiesceMode::Stop), DeletionPolicy::Retain);
    *env.workload.hold_stop.0.lock().unwrap() = true;
    assert_eq!(rec.snapshot(&s).unwrap().next, Next::Running);
    rec.snapshot_deleted(&s).unwrap();
    env.workload.release_stop();
    wait_for_work(&rec);
    rec.retain(&|_| false).unwrap();
    assert!(!rec.busy(), "the deleted snapshot's work was settled");
    assert!(env.store().archive("uid-s").unwrap().is_none(), "a cancelled capture records nothing");
    assert_eq!(env.workload.replicas(), 3, "the workload is back at its replica count");
}

#[test]
fn deletion_after_the_capture_ended_applies_the_deletion_policy() {
    for policy in [DeletionPolicy::Delete, DeletionPolicy::Retain] {
        let env = Env::new();
        let mut rec = env.reconciler(true);
        let s = snapshot("s", paths(&env.data), None, policy);
        assert_eq!(rec.snapshot(&s).unwrap().next, Next::Running);
        wait_for_work(&rec); // ended, its outcome not taken yet
        rec.snapshot_deleted(&s).unwrap();
        rec.retain(&|_| false).unwrap();
        let file = env.archives.join("default/s.tar.gz");
        let record = env.store().archive("uid-s").unwrap();
        match policy {
            DeletionPolicy::Delete => assert!(!file.exists() && record.is_none(), "Delete removes archive and record"),
            DeletionPolicy::Retain => {
                assert!(file.is_file(), "Retain keeps the archive");
                assert!(!record.expect("Retain keeps the record").object_present);
            }
        }
    }
}

#[test]
fn restore_waits_for_its_snapshot_then_creates_the_pre_restore_snapshot() {
    let env = Env::new();
    let mut rec = env.reconciler(true);
    let mut objects = Objects::default();
    let mut s = snapshot("s", paths(&env.data), None, DeletionPolicy::Retain);
    let early = rec.restore(&restore("early", "s"), &objects).unwrap();
    assert_eq!(early.next, Next::Done, "a restore of a snapshot that does not exist fails");
    assert_eq!(reason(&early.status.conditions, types::SUCCEEDED), reasons::SNAPSHOT_NOT_FOUND);
    let mut r = restore("r", "s");
    let started = rec.snapshot(&s).unwrap();
    s.status = Some(started.status);
    objects.put(&s);
    let out = rec.restore(&r, &objects).unwrap();
    assert_eq!(
        (out.next, reason(&out.status.conditions, types::SUCCEEDED).as_str()),
        (Next::Waiting, reasons::SNAPSHOT_NOT_READY)
    );
    settle_snapshot(&mut rec, &mut s);
    objects.put(&s);
    std::fs::write(env.data.join("file"), b"version 2").unwrap();
    assert_eq!(settle_restore(&mut rec, &mut r, &mut objects), Next::Waiting, "its pre-restore snapshot is asked for");
    assert_eq!(restore_reason(&r), reasons::RESTORED);
    assert_eq!(std::fs::read(env.data.join("file")).unwrap(), b"version 1");
    let pre = objects.snapshot("default", "r-pre-restore").expect("the pre-restore snapshot was created");
    assert_eq!(snap_reason(&pre), reasons::CAPTURED);
    assert_eq!(
        (pre.spec.compression, pre.spec.level),
        (crate::api::Compression::Zstd, Some(crate::engine::restore::PRE_RESTORE_ZSTD_LEVEL)),
        "the pre-restore snapshot says how its archive was written"
    );
    let bound = env.store().archive("uid-r-pre-restore").unwrap().expect("its archive record is bound to its uid");
    assert_eq!(bound.name, "r-pre-restore");
    assert!(env.store().journal_get("uid-r").unwrap().is_some(), "the journal waits for the outcome to be seen");
    assert_eq!(rec.restore(&r, &objects).unwrap().next, Next::Done);
    assert!(env.store().journal_get("uid-r").unwrap().is_none(), "acknowledged once status and snapshot exist");
}

#[test]
fn a_finished_restore_is_reported_after_a_crash_not_run_again() {
    let env = Env::new();
    let mut objects = Objects::default();
    let mut rec = env.reconciler(true);
    let mut s = snapshot("s", paths(&env.data), None, DeletionPolicy::Retain);
    settle_snapshot(&mut rec, &mut s);
    objects.put(&s);
    std::fs::write(env.data.join("file"), b"version 2").unwrap();
    let r = restore("r", "s");
    let started = rec.restore(&r, &objects).unwrap();
    assert_eq!(started.next, Next::Running);
    wait_for_work(&rec);
    // The process dies before the outcome is stored: the restore's stored
    // status still says InProgress.
    drop(rec);
    let mut r = VolumeRestore { status: Some(started.status), ..r };
    let mut rec = env.reconciler(true);
    assert_eq!(settle_restore(&mut rec, &mut r, &mut objects), Next::Waiting);
    assert_eq!(restore_reason(&r), reasons::RESTORED, "reported from the journal");
    let msg = &conditions::get(&r.status.as_ref().unwrap().conditions, types::SUCCEEDED).unwrap().message;
    // Run a second time, it would have archived the restored data as the
    // "replaced" data: version 2 would be lost.
    assert!(msg.contains("the recovery sweep finished it"), "not run a second time: {msg}");
    assert!(objects.snapshot("default", "r-pre-restore").is_some(), "the pre-restore snapshot is created after all");
    assert_eq!(rec.restore(&r, &objects).unwrap().next, Next::Done);
}

/// Captures `container: app` (stopping it), changes the live data, and
/// runs a restore of it during which the runtime goes away as `outage`
/// says: the restore holds its journal and waits. Then the runtime answers
/// again and the process restarts: recovery resolves the row.
fn restore_through_an_outage(outage: Outage) -> (Env, VolumeRestore, Objects) {
    let env = Env::new();
    let mut objects = Objects::default();
    let mut rec = env.reconciler(true);
    let mut s = snapshot("s", container(), Some(QuiesceMode::Stop), DeletionPolicy::Retain);
    settle_snapshot(&mut rec, &mut s);
    objects.put(&s);
    std::fs::write(env.data.join("file"), b"version 2").unwrap();
    let mut r = restore("r", "s");
    *env.workload.outage.lock().unwrap() = Some(outage);
    assert_eq!(settle_restore(&mut rec, &mut r, &mut objects), Next::Stuck);
    let st = r.status.as_ref().unwrap();
    assert_eq!(reason(&st.conditions, types::PROGRESSING), reasons::DOCKER_UNAVAILABLE, "{st:?}");
    assert_eq!(st.phase, Some(Phase::InProgress), "waiting is not failing");
    assert!(env.store().journal_get("uid-r").unwrap().is_some(), "the journal keeps the restore");
    drop(rec);
    *env.workload.outage.lock().unwrap() = None;
    env.up.store(true, Ordering::SeqCst);
    let mut rec = env.reconciler(true);
    settle_restore(&mut rec, &mut r, &mut objects);
    (env, r, objects)
}

#[test]
fn recovery_rolls_forward_after_the_swap_and_restores_the_replica_count() {
    let (env, r, objects) = restore_through_an_outage(Outage::AtStart);
    assert_eq!(restore_reason(&r), reasons::RESTORED);
    let msg = &conditions::get(&r.status.as_ref().unwrap().conditions, types::SUCCEEDED).unwrap().message;
    assert!(msg.contains("the recovery sweep finished it"), "{msg}");
    assert_eq!(std::fs::read(env.data.join("file")).unwrap(), b"version 1", "the snapshot's data is live");
    assert_eq!(env.workload.replicas(), 3, "scaled back to the journaled replica count");
    assert!(objects.snapshot("default", "r-pre-restore").is_some(), "the replaced data became a snapshot");
}

#[test]
fn recovery_rolls_back_before_the_swap_and_the_restore_runs_again() {
    let (env, r, _) = restore_through_an_outage(Outage::Before);
    // Rolled back (the live data as it was), then run again from scratch.
    assert_eq!(restore_reason(&r), reasons::RESTORED);
    assert_eq!(std::fs::read(env.data.join("file")).unwrap(), b"version 1");
    assert_eq!(env.workload.replicas(), 3);
    let events = env.workload.events.lock().unwrap().clone();
    assert_eq!(
        events.iter().filter(|e| *e == "scale to 3").count(),
        3,
        "capture, roll-back and restore each brought it back: {events:?}"
    );
}

#[test]
fn adoption_verifies_the_archive_and_refuses_garbage() {
    let env = Env::new();
    let mut rec = env.reconciler(true);
    let mut s = snapshot("s", paths(&env.data), None, DeletionPolicy::Retain);
    settle_snapshot(&mut rec, &mut s);
    let copy = env.root.join("offsite.tar.gz");
    std::fs::copy(env.archives.join("default/s.tar.gz"), &copy).unwrap();
    let garbage = env.root.join("garbage.tar.gz");
    std::fs::write(&garbage, b"\x1f\x8b\x08\x00 not really gzip").unwrap();
    let adopt = |name: &str, path: &Path| {
        snapshot(
            name,
            SnapshotSource { archive: Some(ArchiveSource { path: path.display().to_string() }), ..Default::default() },
            None,
            DeletionPolicy::Retain,
        )
    };
    let mut good = adopt("good", &copy);
    settle_snapshot(&mut rec, &mut good);
    assert_eq!(snap_reason(&good), reasons::ADOPTED);
    let mut bad = adopt("bad", &garbage);
    settle_snapshot(&mut rec, &mut bad);
    assert_eq!(snap_reason(&bad), reasons::ARCHIVE_INVALID);
    assert!(garbage.exists() && copy.exists(), "the originals are never touched");
}

#[test]
fn a_restore_deleted_before_its_pre_restore_snapshot_exists_retains_the_archive() {
    let env = Env::new();
    let mut objects = Objects::default();
    let mut rec = env.reconciler(true);
    let mut s = snapshot("s", paths(&env.data), None, DeletionPolicy::Retain);
    settle_snapshot(&mut rec, &mut s);
    objects.put(&s);
    let r = restore("r", "s");
    assert_eq!(rec.restore(&r, &objects).unwrap().next, Next::Running);
    wait_for_work(&rec);
    let out = rec.restore(&r, &objects).unwrap();
    assert_eq!(out.create.len(), 1, "the pre-restore snapshot is asked for");
    let record_id = out.create[0].metadata.annotations.as_ref().unwrap()[ARCHIVE_RECORD_ANNOTATION].clone();
    // The driver never creates it: the restore's object is deleted first.
    rec.restore_deleted(&r).unwrap();
    assert!(env.store().journal_get("uid-r").unwrap().is_none(), "the finished row is forgotten");
    let kept = env.store().archive(&record_id).unwrap().expect("the replaced data's archive is kept");
    assert!(!kept.object_present, "and shown as retained, with no snapshot object");
    assert!(env.archives.join(&kept.rel_path).is_file());
}

mod schedules {
    use super::*;
    use crate::api::{
        Retention, SCHEDULE_LABEL, SnapshotTemplate, VolumeSnapshotSchedule, VolumeSnapshotScheduleSpec,
        VolumeSnapshotScheduleStatus,
    };
    use jiff::Timestamp;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn schedule(cron: &str, retention: Option<Retention>, suspend: bool) -> VolumeSnapshotSchedule {
        let mut s = VolumeSnapshotSchedule::new(
            "nightly",
            VolumeSnapshotScheduleSpec {
                schedule: cron.into(),
                time_zone: Some("Europe/Berlin".into()),
                suspend,
                snapshot_template: SnapshotTemplate {
                    metadata: None,
                    spec: VolumeSnapshotSpec {
                        source: SnapshotSource {
                            paths: Some(vec![PathSource { name: None, path: "/srv/a".into() }]),
                            ..Default::default()
                        },
                        quiesce: None,
                        compression: Default::default(),
                        deletion_policy: DeletionPolicy::Retain,
                        node_name: None,
                        stop_timeout_seconds: None,
                        level: None,
                    },
                },
                retention,
            },
        );
        object_meta(&mut s, "nightly");
        s.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at("2026-11-01T00:00:00Z")));
        s
    }

    /// Records that the schedule last ran for the slot at `slot`.
    fn last_run(s: &mut VolumeSnapshotSchedule, slot: &str) {
        s.status = Some(VolumeSnapshotScheduleStatus {
            last_schedule_time: Some(crate::api::Time(at(slot))),
            ..Default::default()
        });
    }

    fn child(name: &str, created: &str, phase: Option<Phase>) -> VolumeSnapshot {
        let mut c = snapshot(name, SnapshotSource::default(), None, DeletionPolicy::Delete);
        c.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(created)));
        c.status = phase.map(|p| crate::api::VolumeSnapshotStatus {
            phase: Some(p),
            completion_time: Some(crate::api::Time(at(created))),
            ..Default::default()
        });
        c
    }

    #[test]
    fn a_due_slot_creates_one_snapshot_named_after_it_and_labelled() {
        let env = Env::new();
        let mut rec = env.reconciler(true);
        let mut s = schedule("0 3 * * *", None, false);
        // 03:00 in Berlin (CET, UTC+1) is 02:00 UTC.
        let out = rec.schedule(&s, &[], at("2026-11-02T02:00:30Z"));
        let created = out.create.expect("the slot is due");
        assert_eq!(created.metadata.name.as_deref(), Some("nightly-20261102020000"));
        assert_eq!(created.metadata.labels.as_ref().unwrap()[SCHEDULE_LABEL], "nightly");
        assert_eq!(created.spec.deletion_policy, DeletionPolicy::Delete, "retention removes archives with objects");
        assert_eq!(out.status.last_schedule_time.map(|t| t.0), Some(at("2026-11-02T02:00:00Z")));
        assert_eq!(out.wake_at.map(|t| t.0), Some(at("2026-11-03T02:00:00Z")), "next: tomorrow 03:00 Berlin");
        s.status = Some(out.status);
        let pending = child("nightly-20261102020000", "2026-11-02T02:00:30Z", None);
        let again = rec.schedule(&s, &[pending], at("2026-11-02T02:01:00Z"));
        assert!(again.create.is_none(), "one snapshot per slot, however often it is reconciled");
    }

    #[test]
    fn missed_slots_run_once_at_start_up() {
        let env = Env::new();
        let mut rec = env.reconciler(true);
        let mut s = schedule("0 * * * *", None, false);
        last_run(&mut s, "2026-11-02T00:00:00Z");
        // Down for ten hours: one run, for the latest slot.
        let out = rec.schedule(&s, &[], at("2026-11-02T10:20:00Z"));
        assert_eq!(out.create.unwrap().metadata.name.as_deref(), Some("nightly-20261102100000"));
    }

    #[test]
    fn never_two_runs_of_one_schedule_at_once() {
        let env = Env::new();
        let mut rec = env.reconciler(true);
        let s = schedule("* * * * *", None, false);
        let running = child("nightly-20261102095900", "2026-11-02T09:59:00Z", Some(Phase::InProgress));
        let out = rec.schedule(&s, &[running], at("2026-11-02T10:00:10Z"));
        assert!(out.create.is_none());
        let ready = conditions::get(&out.status.conditions, types::READY).unwrap();
        assert!(ready.message.contains("nightly-20261102095900 still runs"), "{}", ready.message);
    }

    #[test]
    fn suspended_takes_nothing_but_retention_still_prunes() {
        let env = Env::new();
        let mut rec = env.reconciler(true);
        let s = schedule("0 3 * * *", Some(Retention { keep_last: Some(2), ..Default::default() }), true);
        let children: Vec<VolumeSnapshot> = (1..=4)
            .map(|d| {
                child(&format!("nightly-2026110{d}020000"), &format!("2026-11-0{d}T02:00:00Z"), Some(Phase::Completed))
            })
            .collect();
        let out = rec.schedule(&s, &children, at("2026-11-05T02:00:30Z"));
        assert!(out.create.is_none(), "suspended");
        let mut deleted = out.delete.clone();
        deleted.sort();
        assert_eq!(deleted, ["nightly-20261101020000", "nightly-20261102020000"], "the two oldest go");
        assert_eq!(out.status.last_successful_time.map(|t| t.0), Some(at("2026-11-04T02:00:00Z")));
    }

    #[test]
    fn retention_keeps_a_failure_until_a_later_success_and_never_the_newest_success() {
        let env = Env::new();
        let mut rec = env.reconciler(true);
        let s = schedule("0 3 * * *", Some(Retention { keep_last: Some(1), ..Default::default() }), true);
        let children = vec![
            child("nightly-a", "2026-11-01T02:00:00Z", Some(Phase::Completed)),
            child("nightly-b", "2026-11-02T02:00:00Z", Some(Phase::Failed)),
        ];
        let out = rec.schedule(&s, &children, at("2026-11-03T00:00:00Z"));
        assert!(
            out.delete.is_empty(),
            "the only success stays, and the newest failure stays visible: {:?}",
            out.delete
        );
    }

    #[test]
    fn a_clock_jump_backwards_takes_no_second_snapshot() {
        let env = Env::new();
        let mut rec = env.reconciler(true);
        let mut s = schedule("* * * * *", None, false);
        last_run(&mut s, "2026-11-02T10:05:00Z");
        let out = rec.schedule(&s, &[], at("2026-11-02T10:00:30Z"));
        assert!(out.create.is_none(), "slots up to the last run were taken");
    }

    #[test]
    fn a_schedule_that_cannot_be_read_says_so() {
        let env = Env::new();
        let mut rec = env.reconciler(true);
        let s = schedule("61 * * * *", None, false);
        let out = rec.schedule(&s, &[], at("2026-11-02T10:00:30Z"));
        assert!(out.create.is_none());
        assert_eq!(reason(&out.status.conditions, types::READY), reasons::INVALID_SPEC);
    }
}
