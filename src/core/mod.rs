//! The sans-IO reconcile core: given what is observed, decide the next step
//! and compute the status. No file system, no clock reads (time is passed
//! in), no Docker, no Kubernetes: both front-ends drive this the same way.

pub mod conditions;
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
}
