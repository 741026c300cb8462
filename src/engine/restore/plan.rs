//! The journaled plan: what a restore does, decided by the pre-flight and
//! written to the journal before each step.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::api::{ArchiveStatus, CapturedVolume, Compression, SnapshotSource, Time};
use crate::engine::swap::DirId;
use crate::engine::workload::StoppedUnit;
use crate::store::{JournalRow, Store};

/// Identity of an object in a plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

/// Where the restored data goes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Destination {
    /// Over the live data: each volume's target is swapped.
    InPlace,
    /// Into a new directory (`spec.targetPath`); no workload is touched.
    NewDirectory {
        /// The directory to create (or an existing empty one).
        target: PathBuf,
        /// Its sibling staging directory, renamed onto `target` at the end.
        staging: PathBuf,
        /// Identity of their parent directory when the pre-flight checked
        /// it: execution and recovery act only in that directory.
        #[serde(default)]
        parent_id: Option<DirId>,
    },
}

/// One volume of a plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumePlan {
    /// Index in the archive.
    pub index: u32,
    /// Volume name.
    pub name: String,
    /// Where the data ends up.
    pub target: PathBuf,
    /// Where it is extracted first.
    pub staging: PathBuf,
    /// Where the old data goes in a two-step swap.
    pub aside: PathBuf,
    /// Bytes recorded for the volume in the snapshot.
    pub bytes: u64,
    /// Entries recorded (files, directories, symlinks).
    pub entries: u64,
    /// Identity of the live target when extraction finished (`None`: the
    /// target did not exist and is created).
    #[serde(default)]
    pub old_id: Option<DirId>,
    /// Identity of the extracted staging directory.
    #[serde(default)]
    pub new_id: Option<DirId>,
    /// Identity of the parent of target, staging and aside when the
    /// pre-flight checked it: execution and recovery act only in that
    /// directory (`None` in journals written before it was recorded).
    #[serde(default)]
    pub parent_id: Option<DirId>,
}

/// The snapshot that will keep the replaced data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreRestorePlan {
    /// Object name (`<restore>-pre-restore`); `uid` is the id its archive
    /// record is kept under until a snapshot object binds it (journals of
    /// earlier releases used it as the object's uid too).
    pub snapshot: ObjRef,
    /// Archive path relative to the archives directory.
    pub rel_path: String,
    /// The same, absolute (checked to lie inside the archives directory).
    pub abs_path: PathBuf,
    /// Compression: zstd ([`PRE_RESTORE_COMPRESSION`](super::PRE_RESTORE_COMPRESSION));
    /// journals of releases before it say that of the restored snapshot.
    pub compression: Compression,
}

/// The pre-restore snapshot a restore recorded: the caller creates the
/// `VolumeSnapshot` object from it (the engine writes no API objects).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreRestoreSnapshot {
    /// Namespace (the restore's).
    pub namespace: String,
    /// Name (`<restore>-pre-restore`).
    pub name: String,
    /// The id its archive record is kept under until the snapshot object
    /// that is created for it binds the record to its own uid.
    pub record_id: String,
    /// What the object is built from; `None` when an earlier release wrote
    /// the object itself.
    #[serde(default)]
    pub recorded: Option<PreRestoreRecord>,
}

/// What the pre-restore snapshot holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreRestoreRecord {
    /// The source it is restorable to (the restored snapshot's workload
    /// source, or the replaced paths).
    pub source: SnapshotSource,
    /// Its compression.
    pub compression: Compression,
    /// Its archive.
    pub archive: ArchiveStatus,
    /// What was captured, with the live paths the data was replaced at.
    pub volumes: Vec<CapturedVolume>,
    /// When it was captured.
    pub created: Time,
}

/// Everything a restore does, decided by the pre-flight and journaled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    /// The restore.
    pub restore: ObjRef,
    /// The snapshot restored from.
    pub snapshot: ObjRef,
    /// The archive file.
    pub archive: PathBuf,
    /// Its sha256 as recorded in the snapshot's status.
    pub sha256: String,
    /// Decompression-bomb cap on expanded bytes.
    pub max_bytes: u64,
    /// Bytes of file content in the restored volumes (the snapshot's
    /// count): the total of `status.progress` while extracting.
    #[serde(default)]
    pub content_bytes: u64,
    /// Cap on entries.
    pub max_entries: u64,
    /// Over the live data, or into a new directory.
    pub destination: Destination,
    /// The volumes, in archive order.
    pub volumes: Vec<VolumePlan>,
    /// Keep the replaced data as a snapshot.
    pub pre_restore: Option<PreRestorePlan>,
    /// Workload units stopped (recorded before they are stopped).
    #[serde(default)]
    pub stopped: Vec<StoppedUnit>,
    /// Seconds the workload was down, once known (`None` when nothing was
    /// stopped).
    #[serde(default)]
    pub downtime_seconds: Option<f64>,
    /// Grace period each unit gets to stop (`spec.stopTimeoutSeconds`);
    /// `None`: each container's own `StopTimeout`, or Docker's default.
    #[serde(default)]
    pub stop_timeout_seconds: Option<u32>,
    /// The source of the snapshot restored from, when it names a workload
    /// (container, volume): the pre-restore snapshot gets the same, so it
    /// can be restored in place in turn.
    #[serde(default)]
    pub workload_source: Option<SnapshotSource>,
    /// The snapshot adopted an archive made elsewhere (`source.archive`):
    /// its content is foreign input, restored without setuid/setgid bits,
    /// file capabilities or other privileged attributes. Snapshots volsnap
    /// captured (pre-restore snapshots included: they hold host data) are not.
    #[serde(default)]
    pub foreign: bool,
    /// What the extraction did not restore as recorded, for the status
    /// message (journaled, so the recovery sweep can still report it).
    #[serde(default)]
    pub extract_notes: Vec<String>,
    /// Once recorded (step `Recorded`): the pre-restore snapshot, so the
    /// caller can still create its object after a crash.
    #[serde(default)]
    pub pre_restore_recorded: Option<PreRestoreSnapshot>,
}

/// The steps, in order, as recorded in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum JournalStep {
    /// Staging directories are being created and filled.
    Extracting,
    /// Staging is complete and durable; nothing live was touched.
    Extracted,
    /// The workload units in the plan are being stopped.
    Stopping,
    /// Swaps are under way (some may be done).
    Swapping,
    /// Every swap is done and durable.
    Swapped,
    /// The workload is running again; the restore's effect is complete.
    Started,
    /// Finished: the pre-restore snapshot (if any) is recorded and the old
    /// data is being removed. The row stays until the caller has written
    /// the outcome where users see it and [`acknowledge`](super::acknowledge)s it.
    Recorded,
}

impl JournalStep {
    const ALL: [JournalStep; 7] = [
        JournalStep::Extracting,
        JournalStep::Extracted,
        JournalStep::Stopping,
        JournalStep::Swapping,
        JournalStep::Swapped,
        JournalStep::Started,
        JournalStep::Recorded,
    ];

    /// The word stored in the journal (and used in fault-injection names,
    /// `restore:<word>`).
    pub fn as_str(self) -> &'static str {
        match self {
            JournalStep::Extracting => "Extracting",
            JournalStep::Extracted => "Extracted",
            JournalStep::Stopping => "Stopping",
            JournalStep::Swapping => "Swapping",
            JournalStep::Swapped => "Swapped",
            JournalStep::Started => "Started",
            JournalStep::Recorded => "Recorded",
        }
    }

    /// The step a journal word names.
    pub fn parse(s: &str) -> Option<JournalStep> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A refused or failed restore: a CamelCase reason and a message a person
/// can act on.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// Condition reason.
    pub reason: &'static str,
    /// What failed and why, and what to do.
    pub message: String,
    /// Not a failure yet: the restore should wait and be retried (the
    /// snapshot is still being taken, a volume is busy).
    pub wait: bool,
}

impl Refusal {
    /// A refusal that is final (not waited out).
    pub fn fail(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into(), wait: false }
    }
}

/// Writes the journal row of `plan` at `step` (durably, before the step).
pub(super) fn record_step(store: &Store, plan: &RestorePlan, step: JournalStep) -> Result<(), String> {
    let row = JournalRow {
        restore_uid: plan.restore.uid.clone(),
        namespace: plan.restore.namespace.clone(),
        name: plan.restore.name.clone(),
        step: step.as_str().into(),
        plan_json: serde_json::to_string(plan).map_err(|e| e.to_string())?,
    };
    store.journal_put(&row).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_steps_round_trip_and_are_ordered() {
        for w in JournalStep::ALL.windows(2) {
            assert!(w[0] < w[1]);
        }
        for s in JournalStep::ALL {
            assert_eq!(JournalStep::parse(s.as_str()), Some(s));
        }
        assert_eq!(JournalStep::parse("Nope"), None);
    }
}
