//! Snapshot status transitions. Pure functions of (status, facts, now).

use super::conditions::set;
use super::{reasons, types};
use crate::api::{
    ArchiveStatus, CapturedVolume, ConditionStatus as S, Phase, Progress, SkippedVolume, Time, VolumeSnapshotStatus,
};

/// What the reconciler should do with a snapshot next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing: the snapshot is Completed or Failed (a snapshot is taken once).
    Nothing,
    /// Capture (again, from scratch, if a previous attempt was interrupted).
    Capture,
}

/// Decides the next step from the observed status. A Completed snapshot is
/// never captured twice; an InProgress one found without a running worker
/// (the daemon restarted) is captured again from scratch.
pub fn next_step(status: Option<&VolumeSnapshotStatus>) -> Step {
    match status.and_then(|s| s.phase) {
        Some(p) if p.is_terminal() => Step::Nothing,
        _ => Step::Capture,
    }
}

/// Accepted and waiting for a worker (or for the volume lock).
pub fn pending(st: &mut VolumeSnapshotStatus, generation: i64, now: Time, reason: &str, message: &str) {
    st.phase = Some(Phase::Pending);
    st.observed_generation = Some(generation);
    set(&mut st.conditions, types::READY, S::False, reason, message, Some(generation), now);
    set(&mut st.conditions, types::PROGRESSING, S::False, reason, message, Some(generation), now);
}

/// A capture started.
pub fn started(st: &mut VolumeSnapshotStatus, generation: i64, now: Time, volumes: &[String]) {
    st.phase = Some(Phase::InProgress);
    st.observed_generation = Some(generation);
    st.start_time = Some(now);
    st.completion_time = None;
    st.archive = None;
    st.progress = Some(Progress::default());
    let msg = format!("Capturing {} volume(s): {}", volumes.len(), volumes.join(", "));
    set(&mut st.conditions, types::READY, S::False, reasons::CAPTURING, &msg, Some(generation), now);
    set(&mut st.conditions, types::PROGRESSING, S::True, reasons::CAPTURING, &msg, Some(generation), now);
}

/// Progress counters of a running capture.
pub fn progress(st: &mut VolumeSnapshotStatus, bytes_done: u64, bytes_total: u64) {
    st.progress = Some(Progress { bytes_done, bytes_total });
}

/// The capture finished and the archive is recorded.
pub fn completed(
    st: &mut VolumeSnapshotStatus,
    generation: i64,
    now: Time,
    archive: ArchiveStatus,
    volumes: Vec<CapturedVolume>,
    skipped: Vec<SkippedVolume>,
) {
    let files: u64 = volumes.iter().map(|v| v.files).sum();
    let bytes: u64 = volumes.iter().map(|v| v.bytes).sum();
    let troubled: Vec<String> = volumes
        .iter()
        .filter(|v| v.changed_during_read + v.vanished + v.unreadable + v.nested_mounts_skipped + v.xattrs_skipped > 0)
        .map(|v| {
            let mut s = format!(
                "{}: {} unreadable, {} changed while read, {} vanished",
                v.name, v.unreadable, v.changed_during_read, v.vanished
            );
            if v.nested_mounts_skipped > 0 {
                s.push_str(&format!(", {} nested mount(s) not entered", v.nested_mounts_skipped));
            }
            if v.xattrs_skipped > 0 {
                s.push_str(&format!(", {} extended attribute(s) not archived", v.xattrs_skipped));
            }
            if let Some(w) = v.warnings.first() {
                s.push_str(&format!(" (first: {w})"));
            }
            s
        })
        .collect();
    let mut msg = format!(
        "Captured {} volume(s), {files} files, {bytes} bytes, into {} ({} bytes)",
        volumes.len(),
        archive.path,
        archive.size_bytes
    );
    if !skipped.is_empty() {
        let names: Vec<&str> = skipped.iter().map(|s| s.name.as_str()).collect();
        msg.push_str(&format!("; skipped {} (see status.skipped)", names.join(", ")));
    }
    let reason = if troubled.is_empty() {
        reasons::CAPTURED
    } else {
        msg.push_str(&format!(
            "; NOT everything was captured as-is: {} (see status.volumes[].warnings)",
            troubled.join("; ")
        ));
        reasons::CAPTURED_WITH_WARNINGS
    };
    st.phase = Some(Phase::Completed);
    st.observed_generation = Some(generation);
    st.completion_time = Some(now);
    st.progress = Some(Progress { bytes_done: bytes, bytes_total: bytes });
    st.volume_count = Some(volumes.len() as u32);
    st.archive = Some(archive);
    st.volumes = volumes;
    st.skipped = skipped;
    set(&mut st.conditions, types::READY, S::True, reason, &msg, Some(generation), now);
    set(
        &mut st.conditions,
        types::PROGRESSING,
        S::False,
        reasons::COMPLETED,
        "Capture finished",
        Some(generation),
        now,
    );
}

/// A completed capture whose quiesce did not go as planned (a container
/// removed, or resumed by someone else, while volsnap held it): the archive
/// is there, but the operator must know it may not be consistent.
pub fn quiesce_warnings(st: &mut VolumeSnapshotStatus, generation: i64, now: Time, warnings: &[String]) {
    let base = super::conditions::get(&st.conditions, types::READY).map(|c| c.message.clone()).unwrap_or_default();
    let msg = format!("{base}; about holding the workload still: {}", warnings.join("; "));
    set(&mut st.conditions, types::READY, S::True, reasons::CAPTURED_WITH_WARNINGS, &msg, Some(generation), now);
}

/// The archive is complete, but the containers held for the read could not
/// be resumed yet: Docker does not answer. The journal keeps them, and the
/// sweep resumes them at a resync once it answers ([`resumed`]).
pub fn waiting_to_resume(st: &mut VolumeSnapshotStatus, generation: i64, now: Time, why: &str) {
    let msg = format!(
        "The archive is complete, but volsnap is waiting for Docker to resume the containers it held for the read ({why}); it retries at every resync"
    );
    set(&mut st.conditions, types::PROGRESSING, S::True, reasons::DOCKER_UNAVAILABLE, &msg, Some(generation), now);
}

/// The containers a capture held are back (after [`waiting_to_resume`]).
pub fn resumed(st: &mut VolumeSnapshotStatus, generation: i64, now: Time, warnings: &[String]) {
    let mut msg =
        "Capture finished; the containers held for the read were resumed once Docker answered again".to_string();
    for w in warnings {
        msg.push_str(&format!("; WARNING: {w}"));
    }
    set(&mut st.conditions, types::PROGRESSING, S::False, reasons::COMPLETED, &msg, Some(generation), now);
}

/// The snapshot failed; `reason` is CamelCase, `message` says what and why.
/// Failing again for the same reason (a retried `DockerUnavailable`)
/// changes nothing, so the status is not rewritten at every pass.
pub fn failed(st: &mut VolumeSnapshotStatus, generation: i64, now: Time, reason: &str, message: &str) {
    if st.phase == Some(Phase::Failed) && main_reason(st) == Some(reason) {
        return;
    }
    st.phase = Some(Phase::Failed);
    st.observed_generation = Some(generation);
    st.completion_time = Some(now);
    st.progress = None;
    st.archive = None;
    set(&mut st.conditions, types::READY, S::False, reason, message, Some(generation), now);
    set(&mut st.conditions, types::PROGRESSING, S::False, reasons::FAILED, message, Some(generation), now);
}

/// The recorded archive vanished from disk: the snapshot can no longer be
/// restored from. Kept as Failed with the archive path in the message,
/// never silently dropped.
pub fn archive_missing(st: &mut VolumeSnapshotStatus, generation: i64, now: Time, path: &str, refused: Option<&str>) {
    let msg = match refused {
        None => format!(
            "The archive {path} recorded for this snapshot is missing from disk; it cannot be restored from. Delete the object, or put the file back and recreate the object"
        ),
        Some(why) => format!(
            "The archive {path} recorded for this snapshot is refused ({why}); it cannot be restored from. Put the regular file back in place and recreate the object"
        ),
    };
    failed(st, generation, now, reasons::ARCHIVE_MISSING, &msg);
}

/// The reason of the `Ready` condition, if set.
pub fn main_reason(st: &VolumeSnapshotStatus) -> Option<&str> {
    super::conditions::get(&st.conditions, types::READY).map(|c| c.reason.as_str())
}

/// Kubernetes mode: the node whose agent captures it (and holds the archive).
pub fn on_node(st: &mut VolumeSnapshotStatus, node: &str) {
    st.node_name = Some(node.to_string());
}

/// A new object: accepted, waiting for a worker.
pub fn accepted(st: &mut VolumeSnapshotStatus, generation: i64, now: Time) {
    pending(st, generation, now, reasons::PENDING, "Accepted; waiting for a worker");
}

/// The volumes of the source that will not be captured, with the reasons
/// (known before the capture starts).
pub fn skipped(st: &mut VolumeSnapshotStatus, skipped: &[SkippedVolume]) {
    st.skipped = skipped.to_vec();
}

/// Another operation holds one of the volumes: the capture waits.
pub fn volume_busy(st: &mut VolumeSnapshotStatus, generation: i64, now: Time, busy: &str) {
    pending(st, generation, now, reasons::VOLUME_BUSY, &format!("Waiting: another operation is using {busy}"));
}

/// Every volume of the source was skipped: nothing to capture.
pub fn no_data(st: &mut VolumeSnapshotStatus, generation: i64, now: Time, skipped: &[SkippedVolume]) {
    let why: Vec<String> = skipped.iter().map(|s| format!("{}: {}", s.name, s.reason)).collect();
    let msg = format!("Nothing to capture: every volume was skipped ({})", why.join("; "));
    st.skipped = skipped.to_vec();
    failed(st, generation, now, reasons::NO_DATA, &msg);
}

/// An adoption (`source.archive`) started: the archive is copied and verified.
pub fn adopting(st: &mut VolumeSnapshotStatus, generation: i64, now: Time, source: &str) {
    started(st, generation, now, &[]);
    let msg = format!("Adopting and verifying the archive {source}");
    set(&mut st.conditions, types::READY, S::False, reasons::CAPTURING, &msg, Some(generation), now);
    set(&mut st.conditions, types::PROGRESSING, S::True, reasons::CAPTURING, &msg, Some(generation), now);
}

/// How a capture or adoption that did not produce an archive ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureEnd<'a> {
    /// Stopped by a shutdown at a safe point: captured again from scratch.
    Interrupted,
    /// The archive could not be written (`path`, `error`).
    WriteFailed {
        /// The archive path.
        path: &'a str,
        /// What went wrong.
        error: &'a str,
    },
    /// The workload could not be held still before reading.
    QuiesceFailed(&'a str),
    /// An adopted archive failed the untrusted-archive checks.
    Rejected(&'a str),
    /// A volume could not be read (the whole error).
    ReadFailed(&'a str),
}

/// A capture (or adoption) ended without an archive: the status says what
/// happened, what was kept, and what the user can do.
pub fn capture_ended(st: &mut VolumeSnapshotStatus, generation: i64, now: Time, end: CaptureEnd<'_>) {
    let (reason, msg) = match end {
        CaptureEnd::Interrupted => {
            pending(
                st,
                generation,
                now,
                reasons::INTERRUPTED,
                "The capture was interrupted by a shutdown; it starts again from scratch when volsnap next runs",
            );
            return;
        }
        CaptureEnd::WriteFailed { path, error } => (
            reasons::ARCHIVE_WRITE_FAILED,
            format!(
                "Could not write the archive {path}: {error}. Nothing partial was kept. Free space or fix the archives directory, then delete and re-add the manifest to retry"
            ),
        ),
        CaptureEnd::QuiesceFailed(why) => (
            reasons::QUIESCE_FAILED,
            format!(
                "Could not quiesce the workload before reading: {why}. Nothing was captured; containers volsnap paused or stopped were resumed"
            ),
        ),
        CaptureEnd::Rejected(why) => {
            (reasons::ARCHIVE_INVALID, format!("{why}. Nothing was adopted; the original file was not changed"))
        }
        CaptureEnd::ReadFailed(error) => (
            reasons::READ_FAILED,
            format!("{error}. Nothing was archived; fix the directory, then delete and re-add the manifest to retry"),
        ),
    };
    failed(st, generation, now, reason, &msg);
}

/// An adopted archive was verified and stored.
pub fn adopted(st: &mut VolumeSnapshotStatus, generation: i64, now: Time, source: &str) {
    let archive = st.archive.as_ref().map(|a| a.path.clone()).unwrap_or_default();
    let msg = format!(
        "Adopted {source} after verifying it end to end as untrusted input: {} volume(s), stored as {archive}. The paths recorded inside are information only: restore it with spec.targetPath",
        st.volumes.len()
    );
    set(&mut st.conditions, types::READY, S::True, reasons::ADOPTED, &msg, Some(generation), now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conditions::{get, is_true};

    use crate::core::test_time as t;

    #[test]
    fn lifecycle() {
        let mut st = VolumeSnapshotStatus::default();
        assert_eq!(next_step(None), Step::Capture);
        pending(&mut st, 1, t(1), reasons::PENDING, "waiting");
        assert_eq!(next_step(Some(&st)), Step::Capture);
        started(&mut st, 1, t(2), &["data".into()]);
        assert!(is_true(&st.conditions, types::PROGRESSING));
        assert_eq!(next_step(Some(&st)), Step::Capture, "an InProgress capture without a worker is redone");
        let archive =
            ArchiveStatus { path: "/a.tar.gz".into(), format: "tar+gzip".into(), size_bytes: 10, sha256: "x".into() };
        let vol = CapturedVolume { name: "data".into(), files: 2, bytes: 5, ..Default::default() };
        completed(&mut st, 1, t(3), archive, vec![vol], vec![]);
        assert_eq!(st.phase, Some(Phase::Completed));
        assert!(is_true(&st.conditions, types::READY));
        assert!(!is_true(&st.conditions, types::PROGRESSING));
        assert_eq!(get(&st.conditions, types::READY).unwrap().reason, reasons::CAPTURED);
        assert_eq!(next_step(Some(&st)), Step::Nothing, "a Completed snapshot is never captured twice");
    }

    #[test]
    fn warnings_are_not_hidden() {
        let mut st = VolumeSnapshotStatus::default();
        let archive = ArchiveStatus { path: "/a".into(), format: "tar+gzip".into(), size_bytes: 1, sha256: "x".into() };
        let vol = CapturedVolume { name: "data".into(), unreadable: 1, ..Default::default() };
        completed(&mut st, 1, t(3), archive, vec![vol], vec![]);
        let ready = get(&st.conditions, types::READY).unwrap();
        assert_eq!(ready.reason, reasons::CAPTURED_WITH_WARNINGS);
        assert!(ready.message.contains("1 unreadable"));
    }

    #[test]
    fn failure_and_spec_change() {
        let mut st = VolumeSnapshotStatus::default();
        failed(&mut st, 1, t(1), reasons::NO_DATA, "nothing to capture");
        assert_eq!(st.phase, Some(Phase::Failed));
        assert_eq!(next_step(Some(&st)), Step::Nothing);
        let before = st.clone();
        failed(&mut st, 1, t(9), reasons::NO_DATA, "nothing to capture, again");
        assert_eq!(st, before, "failing again for the same reason rewrites nothing");
    }

    /// Every way a capture ends without an archive, and the reason and the
    /// words the status then carries.
    #[test]
    fn capture_end_table() {
        let table: [(CaptureEnd, Phase, &str, &str); 5] = [
            (CaptureEnd::Interrupted, Phase::Pending, reasons::INTERRUPTED, "starts again from scratch"),
            (
                CaptureEnd::WriteFailed { path: "/a/x.tar.gz", error: "No space left on device" },
                Phase::Failed,
                reasons::ARCHIVE_WRITE_FAILED,
                "Could not write the archive /a/x.tar.gz: No space left on device. Nothing partial was kept",
            ),
            (
                CaptureEnd::QuiesceFailed("no such container"),
                Phase::Failed,
                reasons::QUIESCE_FAILED,
                "before reading: no such container",
            ),
            (
                CaptureEnd::Rejected("entry escapes"),
                Phase::Failed,
                reasons::ARCHIVE_INVALID,
                "entry escapes. Nothing was adopted",
            ),
            (
                CaptureEnd::ReadFailed("reading /srv/x: EIO"),
                Phase::Failed,
                reasons::READ_FAILED,
                "reading /srv/x: EIO. Nothing was archived",
            ),
        ];
        for (end, phase, reason, words) in table {
            let mut st = VolumeSnapshotStatus::default();
            started(&mut st, 1, t(1), &["data".into()]);
            capture_ended(&mut st, 1, t(2), end);
            assert_eq!(st.phase, Some(phase), "{end:?}");
            let ready = get(&st.conditions, types::READY).unwrap();
            assert_eq!(ready.reason, reason, "{end:?}");
            assert!(ready.message.contains(words), "{end:?}: {}", ready.message);
            assert!(!is_true(&st.conditions, types::PROGRESSING), "{end:?}: no work in flight after it ended");
        }
    }

    #[test]
    fn no_data_lists_every_skipped_volume() {
        let mut st = VolumeSnapshotStatus::default();
        let skipped = vec![
            SkippedVolume {
                name: "cache".into(),
                path: None,
                target: None,
                reason: "tmpfs holds no persistent data".into(),
            },
            SkippedVolume { name: "etc".into(), path: None, target: None, reason: "outside the allowed roots".into() },
        ];
        no_data(&mut st, 1, t(1), &skipped);
        let ready = get(&st.conditions, types::READY).unwrap();
        assert_eq!(ready.reason, reasons::NO_DATA);
        assert!(ready.message.contains("cache: tmpfs holds no persistent data; etc: outside the allowed roots"));
        assert_eq!(st.skipped, skipped);
    }

    #[test]
    fn adoption_says_where_it_came_from() {
        let mut st = VolumeSnapshotStatus::default();
        adopting(&mut st, 1, t(1), "/backups/a.tar.gz");
        assert_eq!(get(&st.conditions, types::READY).unwrap().reason, reasons::CAPTURING);
        let archive = ArchiveStatus {
            path: "/arch/a.tar.gz".into(),
            format: "tar+gzip".into(),
            size_bytes: 1,
            sha256: "x".into(),
        };
        completed(
            &mut st,
            1,
            t(2),
            archive,
            vec![CapturedVolume { name: "data".into(), ..Default::default() }],
            vec![],
        );
        adopted(&mut st, 1, t(2), "/backups/a.tar.gz");
        let ready = get(&st.conditions, types::READY).unwrap();
        assert_eq!((ready.reason.as_str(), ready.status), (reasons::ADOPTED, S::True));
        assert!(
            ready.message.contains("Adopted /backups/a.tar.gz") && ready.message.contains("stored as /arch/a.tar.gz")
        );
    }
}
