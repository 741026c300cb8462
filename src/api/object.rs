//! One enum over the three kinds, and parsing of untrusted manifests into it.

use std::fmt;

use kube::core::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{API_VERSION, VolumeRestore, VolumeSnapshot, VolumeSnapshotSchedule};

/// The kinds volsnap serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `VolumeSnapshot`
    Snapshot,
    /// `VolumeRestore`
    Restore,
    /// `VolumeSnapshotSchedule`
    Schedule,
}

impl Kind {
    /// Every kind, in reconcile order (snapshots before the restores that need them).
    pub const ALL: [Kind; 3] = [Kind::Snapshot, Kind::Restore, Kind::Schedule];

    /// The `kind` field value.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Snapshot => "VolumeSnapshot",
            Kind::Restore => "VolumeRestore",
            Kind::Schedule => "VolumeSnapshotSchedule",
        }
    }

    /// Lower-case plural, as in the CRD name and the status-file layout.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Snapshot => "volumesnapshots",
            Kind::Restore => "volumerestores",
            Kind::Schedule => "volumesnapshotschedules",
        }
    }

    /// Parses a `kind` field value.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Parses what a user types on the command line: plural, singular,
    /// short name or kind, in any case (`snapshots`, `vsnap`, `VolumeSnapshot`).
    pub fn from_cli(word: &str) -> Option<Kind> {
        match word.to_ascii_lowercase().as_str() {
            "snapshot" | "snapshots" | "vsnap" | "volumesnapshot" | "volumesnapshots" => Some(Kind::Snapshot),
            "restore" | "restores" | "vrestore" | "volumerestore" | "volumerestores" => Some(Kind::Restore),
            "schedule" | "schedules" | "vsched" | "volumesnapshotschedule" | "volumesnapshotschedules" => {
                Some(Kind::Schedule)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identity of an object: kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The kind.
    pub kind: Kind,
    /// The namespace (files mode defaults it to `default`).
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A parsed object of any kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A snapshot.
    Snapshot(VolumeSnapshot),
    /// A restore.
    Restore(VolumeRestore),
    /// A schedule.
    Schedule(VolumeSnapshotSchedule),
}

/// Why a manifest document is not a usable object.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ParseError {
    /// Not even identifiable: no usable apiVersion/kind/metadata.name.
    /// Reported against the file.
    #[error("{0}")]
    Unidentifiable(String),
    /// Identifiable (kind, namespace, name known) but invalid. Reported on
    /// the object as `InvalidSpec`.
    #[error("{field}: {message}")]
    Invalid {
        /// Who it is.
        key: ObjectKey,
        /// The offending field, as a JSON path (`spec.source.paths[0].path`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Object {
    /// Parses one manifest document. Unknown fields, wrong types and missing
    /// required fields are errors naming the field. `status` in a manifest is
    /// ignored, as the apiserver ignores it on a resource with a status
    /// subresource. The namespace defaults to `default`.
    pub fn from_value(mut doc: Value) -> Result<Object, ParseError> {
        let Some(map) = doc.as_object_mut() else {
            return Err(ParseError::Unidentifiable(format!(
                "a manifest document must be a mapping with apiVersion, kind, metadata and spec; found {}",
                type_name(&doc)
            )));
        };
        let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
        let kind_name = map.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
        if api_version != API_VERSION {
            return Err(ParseError::Unidentifiable(format!(
                "apiVersion must be {API_VERSION:?}, found {api_version:?}"
            )));
        }
        let Some(kind) = Kind::from_name(&kind_name) else {
            return Err(ParseError::Unidentifiable(format!(
                "kind must be one of VolumeSnapshot, VolumeRestore, VolumeSnapshotSchedule; found {kind_name:?}"
            )));
        };
        let meta = map.entry("metadata").or_insert_with(|| Value::Object(Default::default()));
        let Some(meta) = meta.as_object_mut() else {
            return Err(ParseError::Unidentifiable("metadata must be a mapping".into()));
        };
        let Some(name) = meta.get("name").and_then(Value::as_str).map(str::to_string) else {
            return Err(ParseError::Unidentifiable(format!("{kind_name}: metadata.name is required")));
        };
        if meta.get("namespace").is_none_or(Value::is_null) {
            meta.insert("namespace".into(), Value::String("default".into()));
        }
        let Some(namespace) = meta.get("namespace").and_then(Value::as_str).map(str::to_string) else {
            return Err(ParseError::Unidentifiable(format!("{kind_name} {name}: metadata.namespace must be a string")));
        };
        // A name or namespace that is not a DNS name would end up in file
        // paths: never let it reach them, not even in an error report.
        if let Err(e) = super::validate::dns_subdomain(&name) {
            return Err(ParseError::Unidentifiable(format!("{kind_name}: metadata.name {name:?}: {e}")));
        }
        // Nor a name too long for the status file named after it.
        if name.len() > super::validate::MAX_OBJECT_NAME {
            return Err(ParseError::Unidentifiable(format!(
                "{kind_name}: metadata.name must be at most {} characters, found {}: volsnap keeps each object's status in a file named after it, and file names are limited to {} bytes",
                super::validate::MAX_OBJECT_NAME,
                name.len(),
                super::validate::NAME_MAX
            )));
        }
        if let Err(e) = super::validate::dns_label(&namespace) {
            return Err(ParseError::Unidentifiable(format!(
                "{kind_name} {name}: metadata.namespace {namespace:?}: {e}"
            )));
        }
        map.remove("status");
        let key = ObjectKey { kind, namespace, name };
        let object = match kind {
            Kind::Snapshot => Object::Snapshot(typed(&key, doc)?),
            Kind::Restore => Object::Restore(typed(&key, doc)?),
            Kind::Schedule => Object::Schedule(typed(&key, doc)?),
        };
        if let Err((field, message)) = super::validate::object(&object) {
            return Err(ParseError::Invalid { key, field, message });
        }
        Ok(object)
    }

    /// The object's identity.
    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        ObjectKey {
            kind: self.kind(),
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Snapshot(_) => Kind::Snapshot,
            Object::Restore(_) => Kind::Restore,
            Object::Schedule(_) => Kind::Schedule,
        }
    }

    /// The metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Snapshot(o) => &o.metadata,
            Object::Restore(o) => &o.metadata,
            Object::Schedule(o) => &o.metadata,
        }
    }

    /// The metadata, mutably.
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Snapshot(o) => &mut o.metadata,
            Object::Restore(o) => &mut o.metadata,
            Object::Schedule(o) => &mut o.metadata,
        }
    }

    /// The spec as JSON, for change detection and storage.
    pub fn spec_value(&self) -> Value {
        let spec = match self {
            Object::Snapshot(o) => serde_json::to_value(&o.spec),
            Object::Restore(o) => serde_json::to_value(&o.spec),
            Object::Schedule(o) => serde_json::to_value(&o.spec),
        };
        spec.unwrap_or(Value::Null)
    }

    /// The whole object as JSON (apiVersion, kind, metadata, spec, status).
    pub fn to_value(&self) -> Value {
        let v = match self {
            Object::Snapshot(o) => serde_json::to_value(o),
            Object::Restore(o) => serde_json::to_value(o),
            Object::Schedule(o) => serde_json::to_value(o),
        };
        v.unwrap_or(Value::Null)
    }

    /// The status conditions, created empty if there is no status yet.
    pub fn conditions_mut(&mut self) -> &mut Vec<crate::api::Condition> {
        match self {
            Object::Snapshot(s) => &mut s.status.get_or_insert_with(Default::default).conditions,
            Object::Restore(r) => &mut r.status.get_or_insert_with(Default::default).conditions,
            Object::Schedule(s) => &mut s.status.get_or_insert_with(Default::default).conditions,
        }
    }

    /// Reads back an object this program stored (trusted, already validated).
    pub fn from_stored(kind: Kind, value: Value) -> Result<Object, serde_json::Error> {
        Ok(match kind {
            Kind::Snapshot => Object::Snapshot(serde_json::from_value(value)?),
            Kind::Restore => Object::Restore(serde_json::from_value(value)?),
            Kind::Schedule => Object::Schedule(serde_json::from_value(value)?),
        })
    }
}

fn typed<T: DeserializeOwned>(key: &ObjectKey, doc: Value) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        ParseError::Invalid { key: key.clone(), field, message: e.into_inner().to_string() }
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "an empty document",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
