//! The volsnap API: `VolumeSnapshot`, `VolumeRestore` and `VolumeSnapshotSchedule`
//! in group `volsnap.dev`, version `v1alpha1`.
//!
//! The same Rust types serve both front-ends: the Kubernetes controller reads
//! them as custom resources, files mode deserialises them from YAML manifests.
//! The CRDs in `crds/` are generated from these types (`volsnap crds`).

mod common;
pub mod crd;
mod object;
mod restore;
mod schedule;
mod snapshot;
pub mod validate;

pub use common::{Condition, ConditionStatus, Phase, Time};
pub use object::{Kind, Object, ObjectKey, ParseError};
pub use restore::{RestoreQuiesce, RestoredVolume, VolumeRestore, VolumeRestoreSpec, VolumeRestoreStatus};
pub use schedule::{
    Retention, SnapshotTemplate, SnapshotTemplateMeta, VolumeSnapshotSchedule, VolumeSnapshotScheduleSpec,
    VolumeSnapshotScheduleStatus,
};
pub use snapshot::{
    ArchiveSource, ArchiveStatus, CapturedVolume, Compression, DeletionPolicy, PathSource, Progress, QuiesceMode,
    SkippedVolume, SnapshotSource, VolumeSnapshot, VolumeSnapshotSpec, VolumeSnapshotStatus,
};

/// API group of every volsnap kind.
pub const GROUP: &str = "volsnap.dev";
/// API version served by this release.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "volsnap.dev/v1alpha1";
/// Label a schedule puts on the snapshots it creates.
pub const SCHEDULE_LABEL: &str = "volsnap.dev/schedule";
/// Annotation files mode puts on objects: the manifest file that declares them.
pub const MANIFEST_FILE_ANNOTATION: &str = "volsnap.dev/manifest-file";
