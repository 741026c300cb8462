//! `VolumeSnapshot`: capture the data of a source into one archive, once.
// clippy mistakes the repeated `printcolumn(...)` arguments of the derive for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Condition, Phase, Time};

/// What to snapshot and how. Immutable after creation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "volsnap.dev",
    version = "v1alpha1",
    kind = "VolumeSnapshot",
    plural = "volumesnapshots",
    shortname = "vsnap",
    category = "volsnap",
    namespaced,
    status = "VolumeSnapshotStatus",
    derive = "PartialEq",
    doc = "A point-in-time archive of an application's data volumes.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.archive.sizeBytes"),
    printcolumn(name = "Volumes", type_ = "integer", json_path = ".status.volumeCount"),
    printcolumn(name = "Compression", type_ = "string", json_path = ".spec.compression", priority = "1"),
    printcolumn(name = "Archive", type_ = "string", json_path = ".status.archive.path", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // On the root, not on the spec type: schedules embed the spec in their
    // (mutable) snapshotTemplate.
    validation = Rule::new("self.spec == oldSelf.spec").message("spec is immutable: a snapshot is taken once; create a new VolumeSnapshot instead")
)]
#[x_kube(validation = Rule::new("!has(self.level) || self.compression == 'zstd' || self.level <= 9").message("level: gzip levels are 1-9 (zstd: 1-19)"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeSnapshotSpec {
    /// Where the data comes from: exactly one of the fields.
    pub source: SnapshotSource,
    /// How to keep the workload still while reading. Default: `Pause` when
    /// the source names a workload (container, volume, PVC), `None` for paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<QuiesceMode>,
    /// Compression of the archive.
    #[serde(default)]
    pub compression: Compression,
    /// Compression level: gzip 1-9 (default 6), zstd 1-19 (default 3).
    /// Higher is smaller and slower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 19))]
    pub level: Option<u32>,
    /// What happens to the archive when the object is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Kubernetes mode: the node whose agent captures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Seconds each container gets to stop before it is killed, when the
    /// workload is stopped (default: the container's own `StopTimeout`,
    /// compose `stop_grace_period`, else Docker's 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub stop_timeout_seconds: Option<u32>,
}

impl VolumeSnapshotSpec {
    /// The quiesce mode after defaulting.
    pub fn effective_quiesce(&self) -> QuiesceMode {
        self.quiesce.unwrap_or(if self.source.names_workload() { QuiesceMode::Pause } else { QuiesceMode::None })
    }
}

/// The data to capture. Exactly one field is set (CEL rule in the CRD,
/// checked again by [`crate::api::validate`]).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("(has(self.paths) ? 1 : 0) + (has(self.container) ? 1 : 0) + (has(self.volume) ? 1 : 0) + (has(self.persistentVolumeClaim) ? 1 : 0) + (has(self.archive) ? 1 : 0) == 1").message("exactly one of paths, container, volume, persistentVolumeClaim, archive must be set"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotSource {
    /// Host directories, each captured as one volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub paths: Option<Vec<PathSource>>,
    /// A Docker container: its bind mounts and local named volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub container: Option<String>,
    /// One Docker named volume (local driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub volume: Option<String>,
    /// Kubernetes mode: a PVC bound to a hostPath or local PV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub persistent_volume_claim: Option<String>,
    /// Adopt an existing volsnap archive (another host, an offsite copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveSource>,
}

impl SnapshotSource {
    /// Names of the fields that are set, in declaration order.
    pub fn set_fields(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if self.paths.is_some() {
            set.push("paths");
        }
        if self.container.is_some() {
            set.push("container");
        }
        if self.volume.is_some() {
            set.push("volume");
        }
        if self.persistent_volume_claim.is_some() {
            set.push("persistentVolumeClaim");
        }
        if self.archive.is_some() {
            set.push("archive");
        }
        set
    }

    /// Whether the source names a workload that can be quiesced.
    pub fn names_workload(&self) -> bool {
        self.container.is_some() || self.volume.is_some() || self.persistent_volume_claim.is_some()
    }
}

/// One host directory to capture.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathSource {
    /// Volume name in the archive (DNS label). Defaults to one made from the
    /// path's basename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
    /// Absolute path of a directory under an allowed root.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

/// An archive file to adopt as this snapshot.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchiveSource {
    /// Absolute path of the archive, under an allowed root. Never modified.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

/// How the workload is kept still while its data is read.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum QuiesceMode {
    /// Read while the workload runs.
    None,
    /// Freeze the containers that mount the data for the duration of the read.
    Pause,
    /// Stop them, and start them again afterwards (also on failure).
    Stop,
}

impl QuiesceMode {
    /// The mode as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            QuiesceMode::None => "None",
            QuiesceMode::Pause => "Pause",
            QuiesceMode::Stop => "Stop",
        }
    }
}

/// Archive compression.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (`.tar.gz`), readable everywhere.
    #[default]
    Gzip,
    /// Zstandard (`.tar.zst`), faster and smaller.
    Zstd,
}

impl Compression {
    /// File extension of archives with this compression.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => "tar.gz",
            Compression::Zstd => "tar.zst",
        }
    }

    /// The `status.archive.format` string.
    pub fn format(self) -> &'static str {
        match self {
            Compression::Gzip => "tar+gzip",
            Compression::Zstd => "tar+zstd",
        }
    }

    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The levels `spec.level` may ask for. zstd's "ultra" levels 20-22 are
    /// not offered: they need far more memory to write and to read.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Compression::Gzip => 1..=9,
            Compression::Zstd => 1..=19,
        }
    }

    /// The level when `spec.level` is not given: what `gzip` and `zstd`
    /// use by default.
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
        }
    }
}

/// What happens to the archive when the snapshot object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the archive (the default: deleting an object never loses data by accident).
    #[default]
    Retain,
    /// Delete the archive with the object.
    Delete,
}

/// Observed state of a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// Coarse phase, for printer columns and scripts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and, in files mode, `SpecChanged`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the capture started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the capture finished (successfully or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The archive, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveStatus>,
    /// Number of captured volumes (for the printer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_count: Option<u32>,
    /// Captured volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<CapturedVolume>,
    /// Volumes of the source that were not captured, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedVolume>,
    /// Bytes read so far while InProgress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Kubernetes mode: the node whose agent captured it and holds the
    /// archive (restores of it run there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

/// Where the archive lives and how to check it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStatus {
    /// Absolute path of the archive file.
    pub path: String,
    /// `tar+gzip` or `tar+zstd`.
    pub format: String,
    /// Size of the archive file.
    pub size_bytes: u64,
    /// sha256 of the archive file, hex.
    pub sha256: String,
}

/// One captured volume and what the walk found in it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapturedVolume {
    /// Volume name (unique in the snapshot).
    pub name: String,
    /// Host path the data was read from (after resolving symlinks).
    pub path: String,
    /// Path inside the workload (container mounts), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Regular files captured (hardlinked names included).
    pub files: u64,
    /// Bytes of file content captured.
    pub bytes: u64,
    /// Directories captured, the volume root included.
    #[serde(default)]
    pub directories: u64,
    /// Symlinks captured (as links, never followed).
    #[serde(default)]
    pub symlinks: u64,
    /// Sockets, FIFOs and device nodes left out: they hold no data.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub special_files_skipped: u64,
    /// Files that changed while being read (their archived copy may be torn).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub changed_during_read: u64,
    /// Entries that vanished between listing and reading.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vanished: u64,
    /// Entries that could not be read and are NOT in the archive.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreadable: u64,
    /// Other file systems mounted inside the volume, not entered (a mounted
    /// directory is archived empty, a mounted file not at all).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nested_mounts_skipped: u64,
    /// Extended attributes that could not be archived (unreadable, outside
    /// the namespaces volsnap keeps, or too large).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub xattrs_skipped: u64,
    /// The first few problems, each naming the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A volume of the source that was not captured.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkippedVolume {
    /// Volume name.
    pub name: String,
    /// Host path, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path inside the workload, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why it was not captured, in words a person can act on.
    pub reason: String,
}

/// Progress of a running capture or restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Bytes of file content read so far.
    pub bytes_done: u64,
    /// Bytes expected (from a pre-scan; files may change meanwhile).
    pub bytes_total: u64,
}
