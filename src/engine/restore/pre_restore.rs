//! The pre-restore snapshot: after the swap, the replaced data is archived,
//! its archive recorded with the journal step, then removed. The snapshot
//! object itself is the caller's to create (from the returned
//! [`PreRestoreSnapshot`]): the engine writes no API objects.
//!
//! The archive is zstd level [`PRE_RESTORE_ZSTD_LEVEL`] (1) on every core,
//! whatever the restored snapshot's
//! compression, because the restore waits for it (see
//! [`PRE_RESTORE_COMPRESSION`](super::PRE_RESTORE_COMPRESSION)); it is
//! durable (fsynced, renamed, its directory fsynced) and recorded before
//! the replaced data is removed, and the removal unlinks on many threads
//! ([`crate::engine::swap::UNLINK_THREADS`]).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use super::PRE_RESTORE_ZSTD_LEVEL;
use super::execute::{RestoreFailure, Sites};
use super::plan::{JournalStep, PreRestorePlan, PreRestoreRecord, PreRestoreSnapshot, RestorePlan};
use super::swap_state::old_data_dir;
use crate::api::{ArchiveStatus, Compression, PathSource, SnapshotSource, Time};
use crate::engine::archive::{ArchiveManifest, ManifestVolume, SnapshotRef};
use crate::engine::capture::{self, CaptureJob, CaptureProgress, CaptureVolume};
use crate::engine::fault;
use crate::store::{ArchiveRecord, JournalRow, Store};

/// After the swap (and the restart): archive the replaced data as the
/// pre-restore snapshot, record it, remove it. Shared by the normal path
/// and the recovery sweep. Returns the snapshot recorded and warnings; the
/// journal row is left at `Recorded` for the caller to acknowledge.
pub(super) fn finish_after_swap(
    store: &Store,
    plan: &RestorePlan,
    sites: &Sites,
    cancel: &AtomicBool,
    progress: &CaptureProgress,
) -> Result<(Option<PreRestoreSnapshot>, Vec<String>), RestoreFailure> {
    let mut warnings = Vec::new();
    let mut recorded = None;
    let old_dirs: Vec<(usize, PathBuf)> =
        plan.volumes.iter().enumerate().filter_map(|(i, v)| old_data_dir(v, sites.volume(i)).map(|d| (i, d))).collect();
    if let Some(pre) = &plan.pre_restore
        && !old_dirs.is_empty()
    {
        match archive_old_data(store, plan, pre, sites, &old_dirs, cancel, progress) {
            Ok(key) => recorded = Some(key),
            Err(ArchiveOld::Cancelled) => {
                return Err(RestoreFailure::Unfinished(
                    "shutdown while archiving the replaced data; it resumes at the next start".into(),
                ));
            }
            Err(ArchiveOld::Failed(msg)) => {
                // Never delete data that was not archived.
                let kept: Vec<String> = old_dirs.iter().map(|(_, d)| d.display().to_string()).collect();
                warnings.push(format!(
                    "the replaced data could not be archived as {}: {msg}; it is kept on disk at {}",
                    pre.snapshot.name,
                    kept.join(", ")
                ));
                let mut plan = plan.clone();
                plan.pre_restore = None;
                record_finished(store, &plan).map_err(RestoreFailure::Unfinished)?;
                return Ok((None, warnings));
            }
        }
    } else {
        record_finished(store, plan).map_err(RestoreFailure::Unfinished)?;
    }
    for (i, d) in &old_dirs {
        if let Err(e) = sites.volume(*i).remove_tree(d) {
            warnings.push(format!("could not remove the replaced data at {}: {e}", d.display()));
        }
    }
    Ok((recorded, warnings))
}

enum ArchiveOld {
    Cancelled,
    Failed(String),
}

fn archive_old_data(
    store: &Store,
    plan: &RestorePlan,
    pre: &PreRestorePlan,
    sites: &Sites,
    old_dirs: &[(usize, PathBuf)],
    cancel: &AtomicBool,
    progress: &CaptureProgress,
) -> Result<PreRestoreSnapshot, ArchiveOld> {
    let now = Time::now();
    let volumes: Vec<CaptureVolume> = old_dirs
        .iter()
        .enumerate()
        .map(|(i, (vi, dir))| {
            Ok(CaptureVolume {
                index: i as u32,
                name: plan.volumes[*vi].name.clone(),
                path: dir.clone(),
                target: None,
                dir: sites
                    .volume(*vi)
                    .open_dir(dir)
                    .map_err(|e| ArchiveOld::Failed(format!("cannot open {}: {e}", dir.display())))?,
            })
        })
        .collect::<Result<_, ArchiveOld>>()?;
    let manifest = ArchiveManifest {
        format_version: crate::engine::archive::FORMAT_VERSION,
        snapshot: SnapshotRef {
            namespace: pre.snapshot.namespace.clone(),
            name: pre.snapshot.name.clone(),
            uid: pre.snapshot.uid.clone(),
        },
        creation_timestamp: now,
        producer: Some(format!("volsnap {}", env!("CARGO_PKG_VERSION"))),
        // The source recorded is the live path the data was replaced at.
        volumes: volumes
            .iter()
            .zip(old_dirs)
            .map(|(c, (vi, _))| ManifestVolume {
                source: plan.volumes[*vi].target.display().to_string(),
                ..ManifestVolume::from(c)
            })
            .collect(),
    };
    // A complete archive of an earlier, interrupted attempt is replaced, and
    // the temporary file of one killed while writing is removed (otherwise
    // the new capture could not create it, and the undo snapshot is lost).
    let _ = std::fs::remove_file(&pre.abs_path);
    if let Some(temp) = capture::temp_path(&pre.abs_path) {
        let _ = std::fs::remove_file(temp);
    }
    // The compression was chosen when the restore was planned (zstd, see
    // `PRE_RESTORE_COMPRESSION`; journals of earlier releases say gzip, and
    // their archive path ends in .tar.gz): zstd is written at the
    // pre-restore level, on every core like any capture.
    let job = CaptureJob {
        manifest: &manifest,
        volumes: &volumes,
        compression: pre.compression,
        level: (pre.compression == Compression::Zstd).then_some(PRE_RESTORE_ZSTD_LEVEL),
        dest: &pre.abs_path,
        progress,
        cancel,
    };
    let outcome = capture::capture(job).map_err(|e| match e {
        capture::CaptureError::Cancelled => ArchiveOld::Cancelled,
        other => ArchiveOld::Failed(other.to_string()),
    })?;
    let mut captured = outcome.volumes.clone();
    for (c, (vi, _)) in captured.iter_mut().zip(old_dirs) {
        c.path = plan.volumes[*vi].target.display().to_string();
    }
    let archive = ArchiveStatus {
        path: pre.abs_path.display().to_string(),
        format: pre.compression.format().into(),
        size_bytes: outcome.size_bytes,
        sha256: outcome.sha256.clone(),
    };
    let source = plan.workload_source.clone().unwrap_or_else(|| SnapshotSource {
        paths: Some(
            old_dirs
                .iter()
                .map(|(vi, _)| PathSource {
                    name: Some(plan.volumes[*vi].name.clone()),
                    path: plan.volumes[*vi].target.display().to_string(),
                })
                .collect(),
        ),
        ..Default::default()
    });
    let snapshot = PreRestoreSnapshot {
        namespace: pre.snapshot.namespace.clone(),
        name: pre.snapshot.name.clone(),
        record_id: pre.snapshot.uid.clone(),
        recorded: Some(PreRestoreRecord {
            source,
            compression: pre.compression,
            archive,
            volumes: captured,
            created: now,
        }),
    };
    let record = ArchiveRecord {
        snapshot_uid: pre.snapshot.uid.clone(),
        namespace: pre.snapshot.namespace.clone(),
        name: pre.snapshot.name.clone(),
        rel_path: pre.rel_path.clone(),
        format: pre.compression.format().into(),
        size_bytes: outcome.size_bytes,
        sha256: outcome.sha256,
        manifest_json: serde_json::to_string(&manifest).unwrap_or_default(),
        created_at: now,
        object_present: true,
    };
    let mut plan = plan.clone();
    plan.pre_restore_recorded = Some(snapshot.clone());
    store.commit_pre_restore(&record, &recorded_row(&plan)).map_err(|e| ArchiveOld::Failed(e.to_string()))?;
    fault::point("restore:Recorded");
    Ok(snapshot)
}

/// The journal row of a finished restore: step `Recorded`, which stays until
/// the caller has written the outcome where users see it
/// ([`acknowledge`](super::acknowledge)).
fn recorded_row(plan: &RestorePlan) -> JournalRow {
    JournalRow {
        restore_uid: plan.restore.uid.clone(),
        namespace: plan.restore.namespace.clone(),
        name: plan.restore.name.clone(),
        step: JournalStep::Recorded.as_str().into(),
        plan_json: serde_json::to_string(plan).unwrap_or_default(),
    }
}

/// Marks a restore finished in the journal (step `Recorded`).
pub(super) fn record_finished(store: &Store, plan: &RestorePlan) -> Result<(), String> {
    store.journal_put(&recorded_row(plan)).map_err(|e| e.to_string())?;
    fault::point("restore:Recorded");
    Ok(())
}
