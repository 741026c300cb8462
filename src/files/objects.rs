//! Files mode as its own API server: declarations become stored objects
//! (uid, generation, creation time, metadata), edits of an immutable spec
//! are reported rather than applied, and objects whose declaration is gone
//! are deleted. What happens to them next is the reconciler's.

use std::collections::BTreeMap;

use serde_json::Value;

use super::daemon::Daemon;
use crate::api::{Kind, MANIFEST_FILE_ANNOTATION, Object, ObjectKey, Time};
use crate::core::object::{self as obj, main_condition};
use crate::core::reasons;
use crate::manifest::Declaration;
use crate::reconcile::PRE_RESTORE_OF_ANNOTATION;
use crate::store::{StoreError, StoredObject};

impl Daemon {
    /// Brings one declared object into the store.
    pub(super) fn apply(
        &mut self,
        key: &ObjectKey,
        decl: &Declaration,
        existing: Option<StoredObject>,
    ) -> Result<(), StoreError> {
        let now = Time::now();
        let Some(mut stored) = existing else {
            let uid = uuid::Uuid::new_v4().to_string();
            let object = new_object(decl, &uid, 1, now, now);
            log_created(key, decl);
            return self.save(&StoredObject { uid, key: key.clone(), manifest_file: Some(decl.file.clone()), object });
        };
        let typed = Object::from_stored(key.kind, stored.object.clone()).ok();
        let generation = stored.object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        let created = stored
            .object
            .pointer("/metadata/creationTimestamp")
            .and_then(|v| serde_json::from_value::<Time>(v.clone()).ok())
            .unwrap_or(now);
        let Some(mut typed) = typed.filter(|_| status_reason(&stored.object, key.kind) != Some(reasons::INVALID_SPEC))
        else {
            // An object that never became valid had no effect: a fixed (or
            // further broken) manifest simply replaces it.
            if stored.object.get("spec") != decl.raw.get("spec") || decl.parsed.is_ok() {
                stored.object = new_object(decl, &stored.uid, generation + 1, created, now);
                stored.manifest_file = Some(decl.file.clone());
                log_created(key, decl);
                self.save(&stored)?;
            }
            return Ok(());
        };
        let before = typed.to_value();
        // Metadata (labels, annotations) is mutable; the spec of snapshots and
        // restores is not.
        let (labels, annotations) = declared_meta(decl);
        let meta = typed.meta_mut();
        meta.labels = Some(labels).filter(|l| !l.is_empty());
        meta.annotations = Some(annotations);
        let edit: Option<String> = match &decl.parsed {
            Err((field, message)) => Some(format!(
                "The manifest in {} was edited and is now invalid ({field}: {message}); the edit was not applied",
                decl.file
            )),
            Ok(parsed) if parsed.spec_value() != typed.spec_value() => match (parsed, &mut typed) {
                (Object::Schedule(new), Object::Schedule(old)) => {
                    // Schedules are mutable: take the new spec.
                    old.spec = new.spec.clone();
                    old.metadata.generation = Some(generation + 1);
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
        obj::spec_changed(typed.conditions_mut(), generation, now, edit.as_deref());
        let after = typed.to_value();
        if after != before || stored.manifest_file.as_deref() != Some(&decl.file) {
            if let Some(e) = edit.filter(|_| after != before) {
                tracing::warn!(object = %key, "{e}");
            }
            stored.manifest_file = Some(decl.file.clone());
            stored.object = after;
            self.save(&stored)?;
        }
        Ok(())
    }

    /// The object's declaration is gone: the reconciler applies its
    /// deletion policy, then the object and its status file go.
    pub(super) fn delete(&mut self, key: &ObjectKey, stored: StoredObject) -> Result<(), StoreError> {
        match Object::from_stored(key.kind, stored.object.clone()) {
            Ok(Object::Snapshot(s)) => self.reconciler.snapshot_deleted(&s)?,
            Ok(Object::Restore(r)) => self.reconciler.restore_deleted(&r)?,
            _ => {}
        }
        self.store.delete_object(&stored.uid)?;
        self.next.remove(&stored.uid);
        if let Err(e) = self.status.remove(key) {
            tracing::error!(object = %key, error = %e, "Could not remove status file");
        }
        tracing::info!(object = %key, "Deleted {} (manifest removed)", key.kind);
        Ok(())
    }

    /// A snapshot whose schedule is gone: the object goes (it has no
    /// manifest of its own), its archive stays, whatever its deletion
    /// policy: removing a schedule is no evidence that its backups are
    /// unwanted. `volsnap archive list` and adoption still reach them.
    pub(super) fn orphan(&mut self, key: &ObjectKey, mut stored: StoredObject) -> Result<(), StoreError> {
        if stored.object.pointer("/spec/deletionPolicy").is_some() {
            stored.object["spec"]["deletionPolicy"] = "Retain".into();
        }
        self.delete(key, stored)
    }

    /// Objects volsnap made itself (no manifest file) live as long as the
    /// object that made them: a pre-restore snapshot as long as its restore,
    /// a scheduled snapshot as long as its schedule (what ownerReferences
    /// do in a cluster).
    pub(super) fn owner_exists(&self, stored: &StoredObject) -> Result<bool, StoreError> {
        let schedule = stored
            .object
            .pointer(&format!("/metadata/labels/{}", crate::api::SCHEDULE_LABEL.replace('/', "~1")))
            .and_then(Value::as_str);
        if let Some(schedule) = schedule {
            let key =
                ObjectKey { kind: Kind::Schedule, namespace: stored.key.namespace.clone(), name: schedule.into() };
            return Ok(self.store.object(&key)?.is_some());
        }
        let owner = stored
            .object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(PRE_RESTORE_OF_ANNOTATION))
            .and_then(Value::as_str)
            .and_then(|v| v.split_once('/'));
        let Some((namespace, name)) = owner else { return Ok(false) };
        let key = ObjectKey { kind: Kind::Restore, namespace: namespace.into(), name: name.into() };
        Ok(self.store.object(&key)?.is_some())
    }
}

/// The reason of the object's main condition.
pub(super) fn status_reason(object: &Value, kind: Kind) -> Option<&str> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(main_condition(kind)))?
        .get("reason")?
        .as_str()
}

/// Labels and annotations as declared, plus the manifest file annotation.
fn declared_meta(decl: &Declaration) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let map = |field: &str| -> BTreeMap<String, String> {
        decl.raw
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
            .unwrap_or_default()
    };
    let mut annotations = map("annotations");
    annotations.insert(MANIFEST_FILE_ANNOTATION.into(), decl.file.clone());
    (map("labels"), annotations)
}

fn log_created(key: &ObjectKey, decl: &Declaration) {
    match &decl.parsed {
        Ok(_) => tracing::info!(object = %key, file = decl.file, "Accepted {}", key.kind),
        Err((field, message)) => {
            tracing::warn!(object = %key, file = decl.file, "Rejected {}: {field}: {message}", key.kind)
        }
    }
}

/// A new object from a declaration, with its metadata filled in; an invalid
/// one gets its `InvalidSpec` status here, a valid one from the reconciler.
fn new_object(decl: &Declaration, uid: &str, generation: i64, created: Time, now: Time) -> Value {
    let (labels, annotations) = declared_meta(decl);
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
            obj.to_value()
        }
        Err((field, message)) => {
            let msg = if field.is_empty() { message.clone() } else { format!("{field}: {message}") };
            let kind = decl.raw.get("kind").and_then(Value::as_str).and_then(Kind::from_name).unwrap_or(Kind::Snapshot);
            serde_json::json!({
                "apiVersion": decl.raw.get("apiVersion").cloned().unwrap_or(Value::Null),
                "kind": kind.name(),
                "metadata": meta,
                "spec": decl.raw.get("spec").cloned().unwrap_or(Value::Null),
                "status": obj::invalid_spec(kind, generation, now, &msg),
            })
        }
    }
}
