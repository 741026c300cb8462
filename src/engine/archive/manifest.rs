//! `volsnap.json`, the first entry of every archive.

use serde::{Deserialize, Serialize};

use crate::api::Time;

/// Name of the manifest entry.
pub const MANIFEST_ENTRY: &str = "volsnap.json";

/// Format version this release writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What an archive holds. Paths recorded here are information only: restore
/// re-derives its targets from the current configuration, never from these.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveManifest {
    /// Archive format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The snapshot this archive belongs to.
    pub snapshot: SnapshotRef,
    /// When the capture started.
    pub creation_timestamp: Time,
    /// Program and version that wrote the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    /// The volumes, in archive order.
    pub volumes: Vec<ManifestVolume>,
}

/// Identity of the snapshot an archive was taken for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID of the object at capture time.
    pub uid: String,
}

/// One volume in the archive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestVolume {
    /// Index: the volume's files are under `volumes/<index>/`.
    pub index: u32,
    /// Volume name (a DNS label, unique in the archive).
    pub name: String,
    /// Path inside the workload, when there is one (container mounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Host path it was read from. Information only.
    pub source: String,
}

impl ArchiveManifest {
    /// The entry prefix of a volume: `volumes/<index>`.
    pub fn volume_prefix(index: u32) -> String {
        format!("{}/{index}", super::VOLUMES_DIR)
    }
}
