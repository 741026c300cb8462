//! The reconciler: every decision and all orchestration for snapshots
//! (capture and adoption) and restores, shared by both front-ends.
//!
//! A driver (files mode's daemon, the Kubernetes controller) hands it one
//! object at a time, as observed now, and gets back the status to write,
//! the objects to create, and when to look again ([`Reconciled`]). It is
//! level-triggered: the same object handed in twice gets the same answer,
//! work in flight is polled (a driver may wait on [`Reconciler::wake`] to
//! look sooner), and facts learnt outside a reconcile (the start-up sweep,
//! the recovery of interrupted work) are held until the object they concern
//! is reconciled. Deletion is reported with [`Reconciler::snapshot_deleted`]
//! and [`Reconciler::restore_deleted`]; the driver removes the object.
//!
//! What differs between a Docker host and a cluster is behind
//! [`runtime::Runtime`]; every status is computed by [`crate::core`]; the
//! work itself is [`crate::engine`]'s. State shared by both modes (archive
//! records, journals) is in [`crate::store`]; objects are the driver's.
//!
//! - `snapshot`: capture and adoption, deletion with `deletionPolicy`.
//! - `restore`: the pre-flight's inputs, execution, the pre-restore
//!   snapshot the driver creates, acknowledging finished journals.
//! - `recovery`: the start-up sweep and the recovery of interrupted work.
//! - `work`: operations running on threads of their own.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::api::{Compression, ObjectKey, Phase, VolumeSnapshot};
use crate::engine::locks::{KeyGuard, KeyedLocks};
use crate::engine::paths::PathPolicy;
use crate::engine::restore::Recovered;
use crate::engine::site::Roots;
use crate::store::{ArchiveRecord, Store, StoreError};

mod recovery;
mod restore;
pub mod runtime;
mod schedule;
mod snapshot;
#[cfg(test)]
mod tests;
mod work;

pub use restore::{ARCHIVE_RECORD_ANNOTATION, PRE_RESTORE_OF_ANNOTATION};
pub use runtime::{NoRuntime, Runtime, Unresolved};
pub use schedule::ScheduleOutcome;

/// How the reconciler runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// State directory: work threads open their own store connection.
    pub state: PathBuf,
    /// Archives directory.
    pub archives: PathBuf,
    /// Captures running at once, and restores running at once (counted apart).
    pub max_concurrent: usize,
    /// Objects that failed only because the runtime did not answer are
    /// tried again (a daemon); a one-shot run (`--once`) reports them.
    pub retry_unavailable: bool,
}

/// When the driver should look at an object again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Finished (Completed or Failed): only news (a deletion, a fact from a
    /// sweep) changes it.
    Done,
    /// Work is in flight: look again when woken, or every second for
    /// progress.
    Running,
    /// Waiting on something else (a busy volume, a snapshot not Completed
    /// yet, a worker slot, the runtime): look again at the next pass.
    Waiting,
    /// A journal row only the recovery sweep may resolve (at every resync).
    Stuck,
}

/// The answer to "here is the object as observed now".
#[derive(Clone, Debug, PartialEq)]
pub struct Reconciled<S> {
    /// The status the object must have (write it if it differs).
    pub status: S,
    /// Objects to create (a restore's pre-restore snapshot).
    pub create: Vec<VolumeSnapshot>,
    /// When to look again.
    pub next: Next,
}

/// What the driver's world holds besides the object being reconciled.
pub trait View {
    /// The snapshot `namespace/name`, if it exists.
    fn snapshot(&self, namespace: &str, name: &str) -> Option<VolumeSnapshot>;
}

/// A restore the journal keeps: its targets stay locked until recovery
/// resolves it.
struct StuckRestore {
    _guard: Option<KeyGuard>,
    /// The runtime does not answer: why (the status says it waits).
    waiting: Option<String>,
}

/// The reconciler; see the module documentation.
pub struct Reconciler {
    store: Store,
    policy: PathPolicy,
    runtime: Arc<dyn Runtime>,
    settings: Settings,
    locks: KeyedLocks,
    wake: Arc<Notify>,
    captures: HashMap<String, snapshot::Capture>,
    restores: HashMap<String, restore::Running>,
    stuck: HashMap<String, StuckRestore>,
    /// Facts for the next reconcile of the object (by uid).
    recovered: HashMap<String, Recovered>,
    resumed: HashMap<String, Vec<String>>,
    missing: HashMap<String, (String, Option<String>)>,
    /// Restores whose journal row waits at `Recorded` for their outcome to
    /// be observed.
    awaiting_ack: HashSet<String>,
    /// What ended how (served on `/metrics`).
    metrics: Arc<crate::metrics::Metrics>,
    /// The status of each pre-restore snapshot asked for, by archive record
    /// id, until its object's first reconcile.
    pre_restore_status: HashMap<String, crate::api::VolumeSnapshotStatus>,
    stopping: bool,
}

impl Reconciler {
    /// A reconciler over `store` (archives and journals), reading sources
    /// beneath `policy`'s roots, with `runtime` for everything else.
    pub fn new(store: Store, policy: PathPolicy, runtime: Arc<dyn Runtime>, settings: Settings) -> Reconciler {
        Reconciler {
            store,
            policy,
            runtime,
            settings,
            locks: KeyedLocks::default(),
            wake: Arc::new(Notify::new()),
            captures: HashMap::new(),
            restores: HashMap::new(),
            stuck: HashMap::new(),
            recovered: HashMap::new(),
            resumed: HashMap::new(),
            missing: HashMap::new(),
            awaiting_ack: HashSet::new(),
            pre_restore_status: HashMap::new(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            stopping: false,
        }
    }

    /// Notified whenever work in flight ends: a driver waits on it to
    /// reconcile that object again without polling.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The metrics the reconciler records into (drivers add theirs).
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.metrics.clone()
    }

    /// Whether any capture, adoption or restore is in flight.
    pub fn busy(&self) -> bool {
        !self.captures.is_empty() || !self.restores.is_empty()
    }

    /// The uids of objects with work in flight.
    pub fn in_flight(&self) -> Vec<String> {
        self.captures.keys().chain(self.restores.keys()).cloned().collect()
    }

    /// Shutdown: no new work starts; work in flight stops at its next safe
    /// point (a swap under way finishes) and is reported as interrupted.
    pub fn shutdown(&mut self) {
        self.stopping = true;
        for c in self.captures.values() {
            c.work.stop();
        }
        for r in self.restores.values() {
            r.work.stop();
        }
    }

    /// Forgets facts about objects that no longer exist (`exists(uid)` is
    /// false), acknowledges their finished restores, and settles work of
    /// deleted objects that has ended. Call it after each full pass.
    pub fn retain(&mut self, exists: &dyn Fn(&str) -> bool) -> Result<(), StoreError> {
        self.settle_deleted(exists)?;
        self.recovered.retain(|uid, _| exists(uid));
        self.resumed.retain(|uid, _| exists(uid));
        self.missing.retain(|uid, _| exists(uid));
        let gone: Vec<String> = self.awaiting_ack.iter().filter(|uid| !exists(uid)).cloned().collect();
        for uid in gone {
            if !self.restores.contains_key(&uid) {
                self.forget_finished(&uid)?;
            }
        }
        Ok(())
    }

    /// The directories restores act beneath: the allowed roots, and the
    /// runtime's own (Docker's volume root).
    fn roots(&self) -> Roots {
        Roots { policy: self.policy.clone(), runtime_root: self.runtime.trusted_root() }
    }

    /// A waker for work threads.
    fn waker(&self) -> impl Fn() + Send + 'static {
        let wake = self.wake.clone();
        move || wake.notify_one()
    }

    /// `<ns>/<name>.<ext>`, unless a retained archive of an earlier object of
    /// the same name holds it: then `<ns>/<name>-<uid prefix>.<ext>`.
    fn archive_rel_path(&self, key: &ObjectKey, uid: &str, compression: Compression) -> Result<String, StoreError> {
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

    /// The archive recorded for a snapshot: by its uid, or (a pre-restore
    /// snapshot not bound yet) by the record id it is annotated with.
    fn archive_of(&self, s: &VolumeSnapshot) -> Result<Option<ArchiveRecord>, StoreError> {
        if let Some(uid) = &s.metadata.uid
            && let Some(rec) = self.store.archive(uid)?
        {
            return Ok(Some(rec));
        }
        match s.metadata.annotations.as_ref().and_then(|a| a.get(ARCHIVE_RECORD_ANNOTATION)) {
            Some(id) => self.store.archive(id),
            None => Ok(None),
        }
    }
}

/// The object's uid (drivers hand in stored objects, which always have one).
fn uid_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.uid.clone().unwrap_or_default()
}

/// Whether a phase is final.
fn terminal(phase: Option<Phase>) -> bool {
    phase.is_some_and(|p| p.is_terminal())
}
