//! `VolumeRestore`: put a snapshot's data back, atomically.
// clippy mistakes the repeated `printcolumn(...)` arguments of the derive for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Condition, Phase, Time};
use super::snapshot::Progress;

/// Which snapshot to restore, where, and how. Immutable after creation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "volsnap.dev",
    version = "v1alpha1",
    kind = "VolumeRestore",
    plural = "volumerestores",
    shortname = "vrestore",
    category = "volsnap",
    namespaced,
    status = "VolumeRestoreStatus",
    derive = "PartialEq",
    doc = "Restores a VolumeSnapshot over the live data, or into a new directory.",
    printcolumn(name = "Snapshot", type_ = "string", json_path = ".spec.snapshotName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Downtime", type_ = "number", json_path = ".status.downtimeSeconds"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetPath", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: create a new VolumeRestore instead"))]
#[x_kube(validation = Rule::new("self.quiesce != 'None' || has(self.targetPath)").message("quiesce: None is only allowed with targetPath: live data is never replaced under a running workload"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeRestoreSpec {
    /// A Completed VolumeSnapshot in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub snapshot_name: String,
    /// Restore only these volumes of the snapshot (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub volumes: Option<Vec<String>>,
    /// Restore into this NEW, empty directory instead of over the live data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub target_path: Option<String>,
    /// `Stop` (default) stops the workload for the swap; `None` only with `targetPath`.
    #[serde(default)]
    pub quiesce: RestoreQuiesce,
    /// Keep the replaced data as the snapshot `<restore-name>-pre-restore`.
    #[serde(default = "default_true")]
    pub keep_pre_restore: bool,
    /// Seconds each container gets to stop before it is killed, when the
    /// workload is stopped (default: the container's own `StopTimeout`,
    /// compose `stop_grace_period`, else Docker's 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub stop_timeout_seconds: Option<u32>,
}

fn default_true() -> bool {
    true
}

/// How the workload is handled during a restore.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum RestoreQuiesce {
    /// Stop the workload for the swap and start it again.
    #[default]
    Stop,
    /// Touch no workload (only with `targetPath`).
    None,
}

/// Observed state of a restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRestoreStatus {
    /// Coarse phase, for printer columns and scripts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Succeeded` and `Progressing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the restore started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Restored volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<RestoredVolume>,
    /// Name of the snapshot holding the replaced data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_restore_snapshot: Option<String>,
    /// How long the workload was stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<f64>,
    /// While running: bytes of file content extracted, then of the replaced
    /// data archived into the pre-restore snapshot (the total grows once,
    /// when that step starts and its size is known). Updated about once a
    /// second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// One restored volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoredVolume {
    /// Volume name from the snapshot.
    pub name: String,
    /// Directory the data was restored into.
    pub path: String,
    /// Regular files restored.
    pub files: u64,
    /// Bytes restored.
    pub bytes: u64,
}
