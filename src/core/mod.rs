//! The sans-IO status core: every status volsnap writes is computed here,
//! as pure functions of (status, facts, now). No file system, no clock
//! reads (time is passed in), no Docker, no Kubernetes. The reconciler
//! ([`crate::reconcile`]) gathers the facts and calls these; drivers only
//! store the result and report its [`object::transitions`].
//!
//! - [`snapshot`]: capture and adoption, from accepted to captured or failed.
//! - [`restore`]: from accepted through the pre-flight to restored, rolled
//!   back, interrupted or waiting for the runtime.
//! - [`schedule`]: the timing of a schedule: its cron expression read in its
//!   time zone (DST included), whether a run is due, the snapshot names.
//! - [`schedule_status`]: a schedule's runs, next slot and retention.
//! - [`retention`]: which of a schedule's snapshots to keep or delete
//!   (restic's `forget` policy, in the schedule's time zone).
//! - [`object`]: invalid objects, spec edits, transitions.
//! - [`conditions`]: `meta.SetStatusCondition` semantics.

pub mod conditions;
pub mod object;

/// Tests: the time `s` seconds after the epoch.
#[cfg(test)]
pub(crate) fn test_time(s: i64) -> crate::api::Time {
    crate::api::Time(jiff::Timestamp::from_second(s).unwrap())
}
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod schedule_status;
pub mod snapshot;

/// Condition types.
pub mod types {
    /// The snapshot's archive can be restored from.
    pub const READY: &str = "Ready";
    /// Work is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// A restore finished successfully.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Files mode: the manifest's spec differs from the one the object was
    /// created with; the edit was not applied.
    pub const SPEC_CHANGED: &str = "SpecChanged";
}

/// Condition reasons (CamelCase, stable: scripts match on them).
pub mod reasons {
    /// Accepted, waiting for a worker.
    pub const PENDING: &str = "Pending";
    /// Capture under way.
    pub const CAPTURING: &str = "Capturing";
    /// Archive written and recorded.
    pub const CAPTURED: &str = "Captured";
    /// Archive written; some files changed, vanished or could not be read.
    pub const CAPTURED_WITH_WARNINGS: &str = "CapturedWithWarnings";
    /// Work finished (Progressing=False).
    pub const COMPLETED: &str = "Completed";
    /// Work failed (Progressing=False).
    pub const FAILED: &str = "Failed";
    /// The object failed validation.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The source had nothing capturable.
    pub const NO_DATA: &str = "NoData";
    /// The archive could not be written.
    pub const ARCHIVE_WRITE_FAILED: &str = "ArchiveWriteFailed";
    /// A volume could not be read.
    pub const READ_FAILED: &str = "ReadFailed";
    /// The archive recorded for the snapshot is gone from disk.
    pub const ARCHIVE_MISSING: &str = "ArchiveMissing";
    /// The source kind is not served in this mode or release.
    pub const UNSUPPORTED_SOURCE: &str = "UnsupportedSource";
    /// The kind is validated but not yet reconciled by this release.
    pub const NOT_IMPLEMENTED: &str = "NotImplemented";
    /// Files mode: the manifest's spec was edited after creation.
    pub const SPEC_IMMUTABLE: &str = "SpecImmutable";
    /// Files mode: the manifest's spec matches again.
    pub const SPEC_MATCHES: &str = "SpecMatches";
    /// Work was interrupted by a shutdown and resumes at the next start.
    pub const INTERRUPTED: &str = "Interrupted";
    /// Another operation holds the volume.
    pub const VOLUME_BUSY: &str = "VolumeBusy";
    /// Restore: the named snapshot does not exist.
    pub const SNAPSHOT_NOT_FOUND: &str = "SnapshotNotFound";
    /// Restore: the snapshot is not Completed (yet, or ever).
    pub const SNAPSHOT_NOT_READY: &str = "SnapshotNotReady";
    /// Restore: `spec.volumes` names a volume the snapshot does not have.
    pub const UNKNOWN_VOLUME: &str = "UnknownVolume";
    /// Restore: a target is outside the allowed roots, denied, or unusable.
    pub const TARGET_NOT_ALLOWED: &str = "TargetNotAllowed";
    /// Restore: `targetPath` exists and is not an empty directory.
    pub const TARGET_NOT_EMPTY: &str = "TargetNotEmpty";
    /// Restore: the snapshot has no live target (adopted archive); `targetPath` is needed.
    pub const TARGET_REQUIRED: &str = "TargetRequired";
    /// Restore: a target is a mount point and cannot be swapped by rename.
    pub const TARGET_IS_MOUNT_POINT: &str = "TargetIsMountPoint";
    /// Restore: not enough free space for the expanded data.
    pub const INSUFFICIENT_SPACE: &str = "InsufficientSpace";
    /// Restore: the name `<restore>-pre-restore` is taken by another snapshot.
    pub const PRE_RESTORE_NAME_TAKEN: &str = "PreRestoreNameTaken";
    /// Restore / adoption: the archive failed the untrusted-archive checks.
    pub const ARCHIVE_INVALID: &str = "ArchiveInvalid";
    /// Restore: the archive's sha256 is not the one recorded for the snapshot.
    pub const CHECKSUM_MISMATCH: &str = "ChecksumMismatch";
    /// Restore: extracting or swapping failed on the file system.
    pub const RESTORE_FAILED: &str = "RestoreFailed";
    /// Restore: stopping or starting the workload failed.
    pub const WORKLOAD_FAILED: &str = "WorkloadFailed";
    /// Restore under way.
    pub const RESTORING: &str = "Restoring";
    /// Restore finished: the data is in place.
    pub const RESTORED: &str = "Restored";
    /// Snapshot: an archive made elsewhere was verified and adopted.
    pub const ADOPTED: &str = "Adopted";
    /// The source needs Docker, which does not answer (retried while the daemon runs).
    pub const DOCKER_UNAVAILABLE: &str = "DockerUnavailable";
    /// Docker answered with an error.
    pub const DOCKER_ERROR: &str = "DockerError";
    /// The container or named volume does not exist.
    pub const SOURCE_NOT_FOUND: &str = "SourceNotFound";
    /// The workload could not be paused or stopped for the capture.
    pub const QUIESCE_FAILED: &str = "QuiesceFailed";
    /// Kubernetes mode: the API server does not answer (retried).
    pub const API_SERVER_UNAVAILABLE: &str = "ApiServerUnavailable";
    /// Kubernetes mode: the source exists but cannot be used yet (a PVC not
    /// bound yet; retried).
    pub const SOURCE_NOT_READY: &str = "SourceNotReady";
    /// Kubernetes mode: which node holds the data cannot be told; the
    /// message says what to set.
    pub const NODE_UNKNOWN: &str = "NodeUnknown";

    /// Whether an object that failed for `reason` is tried again while the
    /// process runs: the runtime did not answer, or the source is not
    /// ready yet. Anything else is final.
    pub fn retried(reason: &str) -> bool {
        [DOCKER_UNAVAILABLE, API_SERVER_UNAVAILABLE, SOURCE_NOT_READY].contains(&reason)
    }
}
