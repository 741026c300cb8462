//! A pass: every stored object goes to the reconciler, and what it computes
//! is written back (the objects table and the status file), its condition
//! transitions logged, the objects it asks for created.

use std::collections::HashSet;

use serde_json::Value;

use super::daemon::Daemon;
use super::objects::status_reason;
use crate::api::{API_VERSION, Kind, Object, ObjectKey, SCHEDULE_LABEL, VolumeSnapshot};
use crate::core::object::transitions;
use crate::core::reasons;
use crate::reconcile::{Next, View};
use crate::store::{Store, StoreError, StoredObject};

impl Daemon {
    /// Reconciles every stored object, again while a pass creates objects
    /// (what the reconciler asked for is then seen by it).
    pub(super) fn pass(&mut self) -> Result<(), StoreError> {
        for _ in 0..3 {
            if !self.pass_once()? {
                break;
            }
        }
        Ok(())
    }

    /// One pass; whether it created objects.
    fn pass_once(&mut self) -> Result<bool, StoreError> {
        self.created = false;
        self.next.clear();
        let objects = self.store.objects(None, None)?;
        let uids: HashSet<String> = objects.iter().map(|o| o.uid.clone()).collect();
        let in_flight: HashSet<String> = self.reconciler.in_flight().into_iter().collect();
        // Restores last: a snapshot that just completed lets them start.
        let (restores, others): (Vec<_>, Vec<_>) = objects.into_iter().partition(|o| o.key.kind == Kind::Restore);
        for stored in others.into_iter().chain(restores) {
            // An object whose declaration seems gone starts no new work.
            if self.removal_pending.contains(&stored.uid) && !in_flight.contains(&stored.uid) {
                continue;
            }
            let uid = stored.uid.clone();
            let next = self.reconcile_one(stored)?;
            self.next.insert(uid, next);
        }
        self.reconciler.retain(&|uid| uids.contains(uid))?;
        self.count_objects()?;
        if self.scanned {
            self.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(self.created)
    }

    /// The objects-by-phase gauges.
    fn count_objects(&self) -> Result<(), StoreError> {
        let objects = self.store.objects(None, None)?;
        let phases: Vec<(&str, String)> = objects
            .iter()
            .filter(|o| o.key.kind != Kind::Schedule)
            .filter_map(|o| Some((o.key.kind.name(), o.object.pointer("/status/phase")?.as_str()?.to_string())))
            .collect();
        self.reconciler.metrics().set_objects(phases.iter().map(|(k, p)| (*k, p.as_str())));
        Ok(())
    }

    /// Reconciles the objects with work in flight (progress, or an end).
    pub(super) fn pass_in_flight(&mut self) -> Result<(), StoreError> {
        for uid in self.reconciler.in_flight() {
            if let Some(stored) = self.store.object_by_uid(&uid)? {
                let next = self.reconcile_one(stored)?;
                self.next.insert(uid, next);
            }
        }
        Ok(())
    }

    /// Hands one object to the reconciler and stores what comes back.
    fn reconcile_one(&mut self, mut stored: StoredObject) -> Result<Next, StoreError> {
        if status_reason(&stored.object, stored.key.kind) == Some(reasons::INVALID_SPEC) {
            return Ok(Next::Done);
        }
        let Ok(mut object) = Object::from_stored(stored.key.kind, stored.object.clone()) else {
            return Ok(Next::Done);
        };
        let (next, create) = match &mut object {
            Object::Snapshot(s) => {
                let out = self.reconciler.snapshot(s)?;
                s.status = Some(out.status);
                (out.next, out.create)
            }
            Object::Restore(r) => {
                let out = self.reconciler.restore(r, &StoreView(&self.store))?;
                r.status = Some(out.status);
                (out.next, out.create)
            }
            Object::Schedule(s) => {
                let children = self.children_of(&stored.key)?;
                let out = self.reconciler.schedule(s, &children, jiff::Timestamp::now());
                s.status = Some(out.status);
                if let Some(at) = out.wake_at {
                    self.wake_schedules_at(at);
                }
                for name in out.delete {
                    let key = ObjectKey { kind: Kind::Snapshot, namespace: stored.key.namespace.clone(), name };
                    if let Some(child) = self.store.object(&key)? {
                        tracing::info!(object = %key, schedule = %stored.key, "Retention deletes this snapshot and its archive");
                        self.delete(&key, child)?;
                    }
                }
                (Next::Done, out.create.into_iter().collect())
            }
        };
        let value = object.to_value();
        if value != stored.object {
            log_transitions(&stored.key, &stored.object, &value);
            stored.object = value;
            self.save(&stored)?;
        }
        for s in create {
            self.create(s)?;
        }
        Ok(next)
    }

    /// Creates an object the reconciler asked for (a pre-restore snapshot),
    /// unless one of that name exists.
    fn create(&mut self, mut s: VolumeSnapshot) -> Result<(), StoreError> {
        let key = ObjectKey {
            kind: Kind::Snapshot,
            namespace: s.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: s.metadata.name.clone().unwrap_or_default(),
        };
        if self.store.object(&key)?.is_some() {
            return Ok(());
        }
        let uid = uuid::Uuid::new_v4().to_string();
        s.metadata.uid = Some(uid.clone());
        let mut object = Object::Snapshot(s).to_value();
        object["apiVersion"] = API_VERSION.into();
        object["kind"] = Kind::Snapshot.name().into();
        tracing::info!(object = %key, "Created VolumeSnapshot (it keeps the data a restore replaced)");
        self.created = true;
        self.save(&StoredObject { uid, key, manifest_file: None, object })
    }

    /// The snapshots a schedule created (labelled with its name).
    fn children_of(&self, schedule: &ObjectKey) -> Result<Vec<VolumeSnapshot>, StoreError> {
        Ok(self
            .store
            .objects(Some(Kind::Snapshot), Some(&schedule.namespace))?
            .into_iter()
            // Only what the schedule made: a declared snapshot that merely
            // carries the label is its manifest's, never retention's.
            .filter(|o| o.manifest_file.is_none())
            .filter(|o| {
                o.object
                    .pointer(&format!("/metadata/labels/{}", SCHEDULE_LABEL.replace('/', "~1")))
                    .and_then(Value::as_str)
                    == Some(schedule.name.as_str())
            })
            .filter_map(|o| match Object::from_stored(Kind::Snapshot, o.object) {
                Ok(Object::Snapshot(s)) => Some(s),
                _ => None,
            })
            .collect())
    }

    /// Asks for a pass when the next schedule slot comes.
    fn wake_schedules_at(&mut self, at: crate::api::Time) {
        // At most an hour ahead: a pass then (whatever wakes it) looks again,
        // so a clock that jumps is caught up with within the hour.
        let secs = at.0.duration_since(jiff::Timestamp::now()).as_secs_f64().clamp(0.0, 3600.0);
        let wait = std::time::Duration::from_secs_f64(secs);
        let when = std::time::Instant::now() + wait;
        self.schedule_at = Some(self.schedule_at.map_or(when, |t| t.min(when)));
    }

    /// Stores an object and rewrites its status file.
    pub(super) fn save(&self, stored: &StoredObject) -> Result<(), StoreError> {
        self.store.put_object(stored)?;
        if let Err(e) = self.status.write(&stored.key, &stored.object) {
            tracing::error!(object = %stored.key, error = %e, "Could not write status file");
        }
        Ok(())
    }
}

/// Logs each condition transition between two versions of an object.
fn log_transitions(key: &ObjectKey, before: &Value, after: &Value) {
    let conditions = |v: &Value| -> Vec<crate::api::Condition> {
        v.pointer("/status/conditions").and_then(|c| serde_json::from_value(c.clone()).ok()).unwrap_or_default()
    };
    let phase = after.pointer("/status/phase").and_then(|p| serde_json::from_value(p.clone()).ok());
    for t in transitions(&conditions(before), &conditions(after), phase) {
        if t.warning {
            tracing::warn!(object = %key, condition = t.type_, reason = t.reason, "{}", t.message);
        } else {
            tracing::info!(object = %key, condition = t.type_, reason = t.reason, "{}", t.message);
        }
    }
}

/// The reconciler's view of the other objects: the objects table.
struct StoreView<'a>(&'a Store);

impl View for StoreView<'_> {
    fn snapshot(&self, namespace: &str, name: &str) -> Option<VolumeSnapshot> {
        let key = ObjectKey { kind: Kind::Snapshot, namespace: namespace.into(), name: name.into() };
        match Object::from_stored(Kind::Snapshot, self.0.object(&key).ok()??.object) {
            Ok(Object::Snapshot(s)) => Some(s),
            _ => None,
        }
    }
}
