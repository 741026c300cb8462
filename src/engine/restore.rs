//! Restore: put a snapshot's data back, crash-safely, with downtime
//! independent of the data size.
//!
//! # The sequence
//!
//! 1. **Pre-flight** ([`preflight`], all-or-nothing, touches nothing): the
//!    snapshot is Completed; every target is re-derived from the source's
//!    CURRENT configuration (never from paths in the archive) and checked
//!    against the allowed roots; targets are not mount points; each file
//!    system has room for the expanded data.
//! 2. **Extract** while the workload runs: the untrusted-archive extractor
//!    writes each volume into a sibling staging directory on the target's
//!    file system (`.<name>.volsnap-restore-<uid>-<index>`), checking the whole
//!    archive and its sha256 on the way; then one `syncfs` makes it durable.
//! 3. **Stop** the workload ([`Workload`]), **swap** each staging directory
//!    with its target (`renameat2(RENAME_EXCHANGE)`, or a two-step rename
//!    through `.<name>.volsnap-old-<uid>-<index>` where the file system has no
//!    exchange), fsync the parents, **start** the workload. Downtime is
//!    stop + swap + start.
//! 4. **Pre-restore snapshot**: the replaced data (now in the staging or
//!    aside directory) is archived as the snapshot `<restore>-pre-restore`,
//!    recorded in one transaction with the journal step, then removed.
//!
//! # The journal
//!
//! Every step is written to the `restore_journal` table (SQLite,
//! `synchronous=FULL`) BEFORE it is taken, with the plan. [`recover`] runs at
//! start-up, before any reconcile, and for every row: before the first swap
//! it rolls back (removes staging directories); once any swap has happened
//! it rolls forward (finishes the swaps); in both cases it starts the
//! workload units the journal says were stopped, then finishes the
//! pre-restore snapshot and cleans up. Which data lies where is read from
//! the file system by directory identity (device, inode), which renames
//! keep, so a crash between a rename and its journal write is harmless.
//! Live data is therefore always entirely old or entirely new, never mixed
//! and, once recovery has run, never missing.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::archive::{ArchiveError, ArchiveManifest, ManifestVolume, SnapshotRef, VerifyLimits, VerifyReport};
use super::capture::{self, CaptureJob, CaptureProgress, CaptureVolume};
use super::extract::{self, ExtractOptions, ExtractVolume, Extracted};
use super::fault;
use super::paths::{PathPolicy, volume_names};
use super::quiesce::resume_in_order;
use super::site::{Roots, Site};
use super::swap::{self, DirId};
use super::workload::{Purpose, StoppedUnit, Workload, WorkloadError};
use crate::api::{
    API_VERSION, ArchiveStatus, Compression, DeletionPolicy, Kind, ObjectKey, PathSource, RestoredVolume,
    SnapshotSource, Time, VolumeRestoreSpec, VolumeSnapshot, VolumeSnapshotSpec,
};
use crate::core::{reasons, snapshot as snap};
use crate::store::{ArchiveRecord, JournalRow, Store, StoredObject};

/// Annotation on a pre-restore snapshot: the restore that made it
/// (`<namespace>/<name>`). Files mode deletes the snapshot object (never its
/// archive) together with that restore.
pub const PRE_RESTORE_OF_ANNOTATION: &str = "volsnap.dev/pre-restore-of";

/// Suffix of the snapshot that keeps the replaced data.
pub const PRE_RESTORE_SUFFIX: &str = "-pre-restore";

/// Headroom on the snapshot's recorded byte count before extraction is
/// refused as a decompression bomb: 1/8 more, plus 64 MiB.
const BOMB_HEADROOM_FRACTION: u64 = 8;
const BOMB_HEADROOM_BYTES: u64 = 64 << 20;
/// Space counted per entry on top of its content (inode, last block).
const SPACE_PER_ENTRY: u64 = 4096;

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
    /// Object name (`<restore>-pre-restore`) and the uid it will get.
    pub snapshot: ObjRef,
    /// Archive path relative to the archives directory.
    pub rel_path: String,
    /// The same, absolute (checked to lie inside the archives directory).
    pub abs_path: PathBuf,
    /// Compression (that of the restored snapshot).
    pub compression: Compression,
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
    /// The pre-restore snapshot is recorded; old data is being removed.
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

    fn parse(s: &str) -> Option<JournalStep> {
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
    fn fail(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into(), wait: false }
    }
}

/// What the pre-flight needs to know, gathered by the front-end.
pub struct PreflightInput<'a> {
    /// The restore's identity.
    pub restore: ObjRef,
    /// Its spec.
    pub spec: &'a VolumeRestoreSpec,
    /// The snapshot it names, if it exists.
    pub snapshot: Option<&'a VolumeSnapshot>,
    /// The snapshot's archive: absolute path (containment-checked) and the
    /// manifest recorded when it was written or adopted.
    pub archive: Option<(PathBuf, ArchiveManifest)>,
    /// Allowed roots and denylist.
    pub policy: &'a PathPolicy,
    /// Where the pre-restore snapshot would go, when `keepPreRestore`.
    pub pre_restore: Option<PreRestorePlan>,
    /// Whether an object named `<restore>-pre-restore` exists already.
    pub pre_restore_name_taken: bool,
    /// For container and volume sources: the snapshot's source resolved NOW
    /// by the runtime (volume name -> host directory), or why it cannot be.
    pub runtime_targets: Option<Result<Vec<(String, PathBuf)>, Refusal>>,
}

/// Checks everything that can be checked without touching data and
/// returns the plan, or why the restore cannot (or cannot yet) run.
pub fn preflight(input: PreflightInput<'_>) -> Result<RestorePlan, Refusal> {
    let spec = input.spec;
    let snap_key = format!("{}/{}", input.restore.namespace, spec.snapshot_name);
    let Some(snapshot) = input.snapshot else {
        return Err(Refusal::fail(
            reasons::SNAPSHOT_NOT_FOUND,
            format!(
                "VolumeSnapshot {snap_key} does not exist; nothing was touched. Create it (or fix spec.snapshotName) and re-add this restore"
            ),
        ));
    };
    let st = snapshot.status.clone().unwrap_or_default();
    match st.phase {
        Some(crate::api::Phase::Completed) => {}
        Some(crate::api::Phase::Failed) => {
            return Err(Refusal::fail(
                reasons::SNAPSHOT_NOT_READY,
                format!("VolumeSnapshot {snap_key} is Failed and has no archive to restore from; nothing was touched"),
            ));
        }
        other => {
            return Err(Refusal {
                reason: reasons::SNAPSHOT_NOT_READY,
                message: format!(
                    "Waiting: VolumeSnapshot {snap_key} is {} and not Completed yet; the restore starts when it is",
                    other.map(|p| p.as_str()).unwrap_or("Pending")
                ),
                wait: true,
            });
        }
    }
    let (Some(archive_status), Some((archive_path, manifest))) = (st.archive.clone(), input.archive) else {
        return Err(Refusal::fail(
            reasons::SNAPSHOT_NOT_READY,
            format!("VolumeSnapshot {snap_key} has no recorded archive; nothing was touched"),
        ));
    };

    // Which volumes.
    let available: Vec<&str> = st.volumes.iter().map(|v| v.name.as_str()).collect();
    let selected: Vec<&crate::api::CapturedVolume> = match &spec.volumes {
        None => st.volumes.iter().collect(),
        Some(names) => {
            let mut out = Vec::new();
            for n in names {
                match st.volumes.iter().find(|v| &v.name == n) {
                    Some(v) if !out.iter().any(|o: &&crate::api::CapturedVolume| o.name == v.name) => out.push(v),
                    Some(_) => {}
                    None => {
                        return Err(Refusal::fail(
                            reasons::UNKNOWN_VOLUME,
                            format!(
                                "spec.volumes names {n:?}, but VolumeSnapshot {snap_key} has only: {}; nothing was touched",
                                available.join(", ")
                            ),
                        ));
                    }
                }
            }
            out
        }
    };
    if selected.is_empty() {
        return Err(Refusal::fail(reasons::UNKNOWN_VOLUME, format!("VolumeSnapshot {snap_key} holds no volume")));
    }
    let index_of = |name: &str| manifest.volumes.iter().find(|v| v.name == name).map(|v| v.index);

    let uid8: String = input.restore.uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    let mut volumes = Vec::new();
    let destination = match &spec.target_path {
        Some(target) => {
            let target = new_directory_target(target, input.policy)?;
            let staging = sibling(&target, "volsnap-restore", &uid8);
            let parent_id = parent_identity(&target)?;
            for v in &selected {
                let index = index_of(&v.name).ok_or_else(|| missing_in_archive(&v.name))?;
                volumes.push(VolumePlan {
                    index,
                    name: v.name.clone(),
                    target: target.join(&v.name),
                    staging: staging.join(&v.name),
                    aside: PathBuf::new(),
                    bytes: v.bytes,
                    entries: v.files + v.directories + v.symlinks,
                    old_id: None,
                    new_id: None,
                    parent_id,
                });
            }
            Destination::NewDirectory { target, staging, parent_id }
        }
        None => {
            let paths = match &snapshot.spec.source {
                SnapshotSource { paths: Some(p), .. } => p.clone(),
                SnapshotSource { archive: Some(_), .. } => {
                    return Err(Refusal::fail(
                        reasons::TARGET_REQUIRED,
                        format!(
                            "VolumeSnapshot {snap_key} was adopted from an archive made elsewhere: the paths inside it are information only, so there is no live data to restore over. Set spec.targetPath to restore into a new directory; nothing was touched"
                        ),
                    ));
                }
                SnapshotSource { container: Some(_), .. } | SnapshotSource { volume: Some(_), .. } => Vec::new(),
                _ => {
                    return Err(Refusal::fail(
                        reasons::UNSUPPORTED_SOURCE,
                        format!(
                            "VolumeSnapshot {snap_key} has a PVC source, which files mode cannot restore in place; set spec.targetPath to restore into a new directory. Nothing was touched"
                        ),
                    ));
                }
            };
            let runtime = match (&snapshot.spec.source.paths, input.runtime_targets) {
                (Some(_), _) => None,
                (None, Some(Ok(t))) => Some(t),
                (None, Some(Err(r))) => return Err(r),
                (None, None) => {
                    return Err(Refusal::fail(
                        reasons::DOCKER_UNAVAILABLE,
                        "the snapshot's source needs Docker; nothing was touched",
                    ));
                }
            };
            for v in &selected {
                let index = index_of(&v.name).ok_or_else(|| missing_in_archive(&v.name))?;
                let target = match &runtime {
                    None => live_target(&paths, &v.name, input.policy)?,
                    Some(targets) => runtime_target(targets, &v.name, &snapshot.spec.source)?,
                };
                volumes.push(VolumePlan {
                    index,
                    name: v.name.clone(),
                    staging: sibling(&target, "volsnap-restore", &format!("{uid8}-{index}")),
                    aside: sibling(&target, "volsnap-old", &format!("{uid8}-{index}")),
                    parent_id: parent_identity(&target)?,
                    target,
                    bytes: v.bytes,
                    entries: v.files + v.directories + v.symlinks,
                    old_id: None,
                    new_id: None,
                });
            }
            Destination::InPlace
        }
    };
    for (i, a) in volumes.iter().enumerate() {
        if let Some(b) =
            volumes[..i].iter().find(|b| a.target.starts_with(&b.target) || b.target.starts_with(&a.target))
        {
            return Err(Refusal::fail(
                reasons::TARGET_NOT_ALLOWED,
                format!(
                    "volumes {} and {} now resolve to overlapping directories ({} and {}); restore them one at a time or with spec.targetPath. Nothing was touched",
                    b.name,
                    a.name,
                    b.target.display(),
                    a.target.display()
                ),
            ));
        }
    }
    check_space(&volumes)?;
    let pre_restore = if spec.keep_pre_restore && destination == Destination::InPlace {
        if input.pre_restore_name_taken {
            return Err(Refusal::fail(
                reasons::PRE_RESTORE_NAME_TAKEN,
                format!(
                    "a VolumeSnapshot named {}{PRE_RESTORE_SUFFIX} already exists, so the replaced data would have nowhere to go; rename this restore or set keepPreRestore: false. Nothing was touched",
                    input.restore.name
                ),
            ));
        }
        input.pre_restore
    } else {
        None
    };
    let total_bytes: u64 = st.volumes.iter().map(|v| v.bytes).sum();
    let total_entries: u64 = st.volumes.iter().map(|v| v.files + v.directories + v.symlinks).sum();
    Ok(RestorePlan {
        restore: input.restore,
        snapshot: ObjRef {
            namespace: snapshot.metadata.namespace.clone().unwrap_or_default(),
            name: spec.snapshot_name.clone(),
            uid: snapshot.metadata.uid.clone().unwrap_or_default(),
        },
        archive: archive_path,
        sha256: archive_status.sha256,
        max_bytes: total_bytes + total_bytes / BOMB_HEADROOM_FRACTION + BOMB_HEADROOM_BYTES,
        max_entries: total_entries + total_entries / BOMB_HEADROOM_FRACTION + 1024,
        destination,
        volumes,
        pre_restore,
        stopped: Vec::new(),
        downtime_seconds: None,
        stop_timeout_seconds: spec.stop_timeout_seconds,
        workload_source: snapshot
            .spec
            .source
            .paths
            .is_none()
            .then(|| snapshot.spec.source.clone())
            .filter(|s| s.archive.is_none()),
        foreign: snapshot.spec.source.archive.is_some(),
        extract_notes: Vec::new(),
    })
}

/// The identity of `target`'s parent as the pre-flight sees it: the
/// directory later steps must find there.
fn parent_identity(target: &Path) -> Result<Option<DirId>, Refusal> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    swap::dir_id(parent).map_err(|e| {
        Refusal::fail(
            reasons::TARGET_NOT_ALLOWED,
            format!("cannot examine {}: {e}; nothing was touched", parent.display()),
        )
    })
}

fn missing_in_archive(name: &str) -> Refusal {
    Refusal::fail(
        reasons::ARCHIVE_INVALID,
        format!("the snapshot's archive manifest has no volume {name:?}; nothing was touched"),
    )
}

/// `<parent>/.<basename>.<what>-<tag>`: a sibling on the same file system.
/// `tag` holds the restore's uid prefix and, for volumes, the volume index,
/// so two long names cut to the same prefix never share a staging path.
fn sibling(target: &Path, what: &str, uid8: &str) -> PathBuf {
    let base = target.file_name().map(|b| b.as_bytes()).unwrap_or(b"volume");
    let base = &base[..base.len().min(180)];
    let mut name = OsString::from(".");
    name.push(std::ffi::OsStr::from_bytes(base));
    name.push(format!(".{what}-{uid8}"));
    target.parent().unwrap_or(Path::new("/")).join(name)
}

/// The live directory of volume `name`, re-derived from the snapshot's
/// current source configuration and the allowed roots as they are now.
fn live_target(paths: &[PathSource], name: &str, policy: &PathPolicy) -> Result<PathBuf, Refusal> {
    let names = volume_names(paths);
    let Some(pos) = names.iter().position(|n| n == name) else {
        return Err(Refusal::fail(
            reasons::TARGET_NOT_ALLOWED,
            format!("volume {name:?} is no longer in the snapshot's source configuration; nothing was touched"),
        ));
    };
    let resolution =
        policy.resolve(std::slice::from_ref(&PathSource { name: Some(name.into()), ..paths[pos].clone() }));
    if let Some(v) = resolution.volumes.first() {
        if swap::is_mount_point(&v.path).unwrap_or(false) {
            return Err(Refusal::fail(
                reasons::TARGET_IS_MOUNT_POINT,
                format!(
                    "{} is a mount point, which cannot be swapped atomically by rename; restore into a new directory with spec.targetPath and switch the mount, or restore into its parent. Nothing was touched",
                    v.path.display()
                ),
            ));
        }
        return Ok(v.path.clone());
    }
    let skipped = resolution.skipped.first().map(|s| s.reason.clone()).unwrap_or_default();
    // A target that is gone (deleted by accident) is recreated, if its
    // parent is where the policy allows.
    if skipped.starts_with("no data on disk yet") {
        let declared = Path::new(&paths[pos].path);
        if let (Some(parent), Some(base)) = (declared.parent(), declared.file_name())
            && let Ok(parent) = parent.canonicalize()
        {
            let target = parent.join(base);
            if let Err(why) = policy.check(&target, &paths[pos].path) {
                return Err(Refusal::fail(reasons::TARGET_NOT_ALLOWED, format!("{why}; nothing was touched")));
            }
            return Ok(target);
        }
    }
    Err(Refusal::fail(
        reasons::TARGET_NOT_ALLOWED,
        format!("cannot restore volume {name:?}: {skipped}; nothing was touched"),
    ))
}

/// A container or named volume's directory for volume `name`, as the runtime
/// reports it now.
fn runtime_target(targets: &[(String, PathBuf)], name: &str, source: &SnapshotSource) -> Result<PathBuf, Refusal> {
    let owner = match (&source.container, &source.volume) {
        (Some(c), _) => format!("container {c}"),
        (_, Some(v)) => format!("volume {v}"),
        _ => "the source".into(),
    };
    let Some((_, path)) = targets.iter().find(|(n, _)| n == name) else {
        return Err(Refusal::fail(
            reasons::TARGET_NOT_ALLOWED,
            format!(
                "{owner} no longer has a capturable volume {name:?} (its mounts changed since the snapshot); nothing was touched"
            ),
        ));
    };
    if swap::is_mount_point(path).unwrap_or(false) {
        return Err(Refusal::fail(
            reasons::TARGET_IS_MOUNT_POINT,
            format!(
                "{} is a mount point, which cannot be swapped atomically by rename; nothing was touched",
                path.display()
            ),
        ));
    }
    Ok(path.clone())
}

/// `spec.targetPath`: absolute, under an allowed root (after resolving its
/// parent), and absent or an empty directory.
fn new_directory_target(target: &str, policy: &PathPolicy) -> Result<PathBuf, Refusal> {
    let declared = Path::new(target);
    let refuse =
        |why: String| Refusal::fail(reasons::TARGET_NOT_ALLOWED, format!("spec.targetPath {why}; nothing was touched"));
    if !declared.is_absolute() || declared.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(refuse(format!("{target:?} must be an absolute path without '..'")));
    }
    let (Some(parent), Some(base)) = (declared.parent(), declared.file_name()) else {
        return Err(refuse(format!("{target:?} cannot be /")));
    };
    let parent = parent.canonicalize().map_err(|e| refuse(format!("{target}: its parent cannot be resolved: {e}")))?;
    let resolved = parent.join(base);
    policy.check(&resolved, target).map_err(|why| {
        Refusal::fail(reasons::TARGET_NOT_ALLOWED, format!("spec.targetPath {why}; nothing was touched"))
    })?;
    match std::fs::symlink_metadata(&resolved) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(resolved),
        Err(e) => Err(refuse(format!("{target}: {e}"))),
        Ok(m) if m.is_dir() => {
            let empty = std::fs::read_dir(&resolved).map(|mut d| d.next().is_none()).unwrap_or(false);
            if empty {
                Ok(resolved)
            } else {
                Err(Refusal::fail(
                    reasons::TARGET_NOT_EMPTY,
                    format!(
                        "spec.targetPath {target} exists and is not empty; a restore never writes into existing data. Name a new or empty directory. Nothing was touched"
                    ),
                ))
            }
        }
        Ok(_) => Err(Refusal::fail(
            reasons::TARGET_NOT_EMPTY,
            format!("spec.targetPath {target} exists and is not a directory; nothing was touched"),
        )),
    }
}

/// Free space per file system (statvfs on each target's parent).
fn check_space(volumes: &[VolumePlan]) -> Result<(), Refusal> {
    let mut need: BTreeMap<u64, (u64, PathBuf)> = BTreeMap::new();
    for v in volumes {
        let parent = v.staging.parent().unwrap_or(Path::new("/"));
        let anchor = if parent.exists() {
            parent.to_path_buf()
        } else {
            parent.parent().unwrap_or(Path::new("/")).to_path_buf()
        };
        let dev = swap::dir_id(&anchor).ok().flatten().map(|d| d.dev).unwrap_or(0);
        let e = need.entry(dev).or_insert((0, anchor));
        e.0 += v.bytes + v.entries.saturating_add(1) * SPACE_PER_ENTRY;
    }
    for (needed, anchor) in need.values() {
        let free = swap::free_bytes(anchor).map_err(|e| {
            Refusal::fail(
                reasons::RESTORE_FAILED,
                format!("cannot check free space on {}: {e}; nothing was touched", anchor.display()),
            )
        })?;
        if free < *needed {
            return Err(Refusal::fail(
                reasons::INSUFFICIENT_SPACE,
                format!(
                    "the file system of {} has {free} bytes free, but the restore needs about {needed} bytes while old and new data both exist; free space and re-add the restore. Nothing was touched",
                    anchor.display()
                ),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Execution.

/// What a finished restore reports.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreOutcome {
    /// Per volume: where the data went and how much.
    pub volumes: Vec<RestoredVolume>,
    /// Seconds the workload was stopped (in-place restores).
    pub downtime_seconds: Option<f64>,
    /// The pre-restore snapshot, if one was recorded.
    pub pre_restore_snapshot: Option<ObjectKey>,
    /// Things the operator should know (e.g. the old data could not be
    /// archived and was kept on disk).
    pub warnings: Vec<String>,
}

/// How a restore that did not complete ended.
#[derive(Clone, Debug, PartialEq)]
pub enum RestoreFailure {
    /// Rolled back: the live data is as it was. Reason and message for the
    /// status.
    RolledBack(Refusal),
    /// Shutdown before the swap: rolled back, retried at the next start.
    Interrupted,
    /// Shutdown (or a store failure) after the swap: the journal keeps the
    /// rest for the next start's recovery.
    Unfinished(String),
    /// The runtime (Docker) stopped answering while units were held: the
    /// journal keeps the state and the recovery sweep, at every resync,
    /// brings them back (and finishes or rolls back the swap) once it
    /// answers. Not a failure: the restore waits.
    WaitingForRuntime(String),
}

/// Rounds of "stop whatever uses the targets" before a swap: a unit that
/// keeps coming back after this many (a restart loop nobody can stop) makes
/// the restore roll back rather than swap under it.
const HOLD_ROUNDS: usize = 5;

/// The context of an execution.
pub struct Executor<'a> {
    /// The state store (the restore's own connection).
    pub store: &'a Store,
    /// The workload behind the targets.
    pub workload: &'a dyn Workload,
    /// The trusted directories every target lies beneath.
    pub roots: &'a Roots,
    /// Set on shutdown: extraction stops, later steps finish.
    pub cancel: &'a AtomicBool,
}

/// The opened parent directories of a plan's entries (see [`Site`]).
enum Sites {
    /// Per volume, the parent of its target, staging and aside entries.
    InPlace(Vec<Site>),
    /// The parent of `targetPath` and its staging directory.
    NewDirectory(Site),
}

impl Sites {
    /// Opens every parent beneath the trusted roots, each checked to be the
    /// directory the pre-flight saw.
    fn open(roots: &Roots, plan: &RestorePlan) -> std::io::Result<Sites> {
        let parent = |p: &Path| p.parent().unwrap_or(Path::new("/")).to_path_buf();
        match &plan.destination {
            Destination::NewDirectory { target, parent_id, .. } => {
                Ok(Sites::NewDirectory(Site::open(roots, &parent(target), *parent_id)?))
            }
            Destination::InPlace => Ok(Sites::InPlace(
                plan.volumes
                    .iter()
                    .map(|v| Site::open(roots, &parent(&v.target), v.parent_id))
                    .collect::<Result<_, _>>()?,
            )),
        }
    }

    /// The site of in-place volume `i`.
    fn volume(&self, i: usize) -> &Site {
        match self {
            Sites::InPlace(v) => &v[i],
            Sites::NewDirectory(s) => s,
        }
    }
}

impl Executor<'_> {
    /// Records `step` with the plan, then passes its fault-injection points.
    fn journal(&self, plan: &RestorePlan, step: JournalStep) -> Result<(), String> {
        record_step(self.store, plan, step)?;
        fault::point(&format!("restore:{}", step.as_str()));
        fault::pause(&format!("restore:{}", step.as_str()));
        Ok(())
    }

    /// Runs a planned restore to the end, or rolls it back.
    pub fn execute(&self, mut plan: RestorePlan) -> Result<RestoreOutcome, RestoreFailure> {
        let failed = |reason, message: String| RestoreFailure::RolledBack(Refusal::fail(reason, message));
        let sites = Sites::open(self.roots, &plan)
            .map_err(|e| failed(reasons::TARGET_NOT_ALLOWED, format!("{e}; nothing was touched")))?;
        self.journal(&plan, JournalStep::Extracting).map_err(|e| {
            failed(reasons::RESTORE_FAILED, format!("cannot write the restore journal: {e}; nothing was touched"))
        })?;
        let report = match self.extract(&plan, &sites) {
            Ok(x) => {
                plan.extract_notes = extract_notes(&x);
                x.verified
            }
            Err(f) => {
                let cleanup = remove_staging(&plan, &sites);
                let _ = self.store.journal_delete(&plan.restore.uid);
                if let Err(e) = cleanup {
                    tracing::error!(restore = %plan.restore.name, error = %e, "Could not remove a staging directory");
                }
                return Err(f);
            }
        };
        match (&plan.destination, &sites) {
            (Destination::NewDirectory { staging, .. }, Sites::NewDirectory(site)) => {
                // The directory that is renamed is the staging root.
                let id = site.id(staging).ok().flatten();
                for v in plan.volumes.iter_mut() {
                    v.new_id = id;
                }
            }
            _ => {
                for (i, v) in plan.volumes.iter_mut().enumerate() {
                    let site = sites.volume(i);
                    v.new_id = site.id(&v.staging).ok().flatten();
                    v.old_id = site.id(&v.target).ok().flatten();
                }
            }
        }
        if let Err(e) = self.journal(&plan, JournalStep::Extracted) {
            let _ = remove_staging(&plan, &sites);
            let _ = self.store.journal_delete(&plan.restore.uid);
            return Err(failed(
                reasons::RESTORE_FAILED,
                format!("cannot write the restore journal: {e}; nothing was touched"),
            ));
        }
        let volumes = restored_volumes(&plan, &report);
        match (plan.destination.clone(), &sites) {
            (Destination::NewDirectory { target, staging, .. }, Sites::NewDirectory(site)) => {
                self.journal(&plan, JournalStep::Swapping).map_err(RestoreFailure::Unfinished)?;
                if let Err(e) = move_into_new_directory(site, &staging, &target) {
                    let _ = remove_staging(&plan, &sites);
                    let _ = self.store.journal_delete(&plan.restore.uid);
                    return Err(failed(
                        reasons::RESTORE_FAILED,
                        format!(
                            "cannot move the restored data into {}: {e}; nothing was left behind",
                            target.display()
                        ),
                    ));
                }
                let _ = site.fsync();
                let _ = self.store.journal_delete(&plan.restore.uid);
                Ok(RestoreOutcome {
                    volumes,
                    downtime_seconds: None,
                    pre_restore_snapshot: None,
                    warnings: plan.extract_notes.clone(),
                })
            }
            _ => self.swap_in_place(plan, &sites, volumes),
        }
    }

    fn extract(&self, plan: &RestorePlan, sites: &Sites) -> Result<Extracted, RestoreFailure> {
        let failed = |reason, message: String| RestoreFailure::RolledBack(Refusal::fail(reason, message));
        let io_failed = |what: &str, path: &Path, e: std::io::Error| {
            failed(
                reasons::RESTORE_FAILED,
                format!("cannot {what} {}: {e}; the live data was not touched", path.display()),
            )
        };
        // Staging directories: fresh, private (0700) until their root entry
        // sets the captured mode; created and opened through the parent's
        // descriptor, and handed to the extractor as descriptors.
        let mut roots = Vec::new();
        match (&plan.destination, sites) {
            (Destination::NewDirectory { staging, .. }, Sites::NewDirectory(site)) => {
                site.remove_tree(staging).map_err(|e| io_failed("clear the staging directory", staging, e))?;
                site.mkdir_private(staging).map_err(|e| io_failed("create the staging directory", staging, e))?;
                let staging_root = site.open_dir(staging).map_err(|e| io_failed("open", staging, e))?;
                let inner = Site::from_dir(staging_root, staging);
                for v in &plan.volumes {
                    inner.mkdir_private(&v.staging).map_err(|e| io_failed("create", &v.staging, e))?;
                    let dir = inner.open_dir(&v.staging).map_err(|e| io_failed("open", &v.staging, e))?;
                    roots.push(ExtractVolume { index: v.index, name: v.name.clone(), root: v.staging.clone(), dir });
                }
            }
            _ => {
                for (i, v) in plan.volumes.iter().enumerate() {
                    let site = sites.volume(i);
                    site.remove_tree(&v.staging)
                        .map_err(|e| io_failed("clear the staging directory", &v.staging, e))?;
                    site.mkdir_private(&v.staging)
                        .map_err(|e| io_failed("create the staging directory", &v.staging, e))?;
                    let dir = site.open_dir(&v.staging).map_err(|e| io_failed("open", &v.staging, e))?;
                    roots.push(ExtractVolume { index: v.index, name: v.name.clone(), root: v.staging.clone(), dir });
                }
            }
        }
        let limits = VerifyLimits {
            max_expanded_bytes: Some(plan.max_bytes),
            max_entries: Some(plan.max_entries),
            expected_sha256: Some(plan.sha256.clone()),
        };
        let cancel = || self.cancel.load(Ordering::Relaxed);
        let options = ExtractOptions { foreign: plan.foreign };
        let report = extract::extract_with(&plan.archive, &roots, &limits, &options, &cancel).map_err(|e| {
            if self.cancel.load(Ordering::Relaxed) {
                return RestoreFailure::Interrupted;
            }
            let reason = match &e {
                ArchiveError::ChecksumMismatch { .. } => reasons::CHECKSUM_MISMATCH,
                ArchiveError::Extract { .. } | ArchiveError::Io { .. } => reasons::RESTORE_FAILED,
                _ => reasons::ARCHIVE_INVALID,
            };
            failed(
                reason,
                format!("the archive {} was rejected: {e}; the live data was not touched", plan.archive.display()),
            )
        })?;
        fault::point("restore:extracted-unsynced");
        let mut synced = std::collections::HashSet::new();
        let dirs: Vec<(&Site, &Path)> = match (&plan.destination, sites) {
            (Destination::NewDirectory { staging, .. }, Sites::NewDirectory(site)) => vec![(site, staging.as_path())],
            _ => plan.volumes.iter().enumerate().map(|(i, v)| (sites.volume(i), v.staging.as_path())).collect(),
        };
        for (site, d) in dirs {
            let dev = site.id(d).ok().flatten().map(|i| i.dev);
            if synced.insert(dev) {
                site.sync_tree(d).map_err(|e| io_failed("make durable", d, e))?;
            } else {
                site.fsync().map_err(|e| io_failed("make durable", d, e))?;
            }
        }
        Ok(report)
    }

    fn swap_in_place(
        &self,
        mut plan: RestorePlan,
        sites: &Sites,
        volumes: Vec<RestoredVolume>,
    ) -> Result<RestoreOutcome, RestoreFailure> {
        let rollback = |plan: &RestorePlan, reason, message: String| {
            let _ = remove_staging(plan, sites);
            if let Err(e) = self.store.journal_delete(&plan.restore.uid) {
                tracing::error!(restore = %plan.restore.name, error = %e, "Could not remove the journal row of a rolled-back restore; the recovery sweep finds nothing to undo");
            }
            RestoreFailure::RolledBack(Refusal::fail(reason, message))
        };
        // Before any swap: start the workload again, then roll back. If it
        // cannot be started, the journal row stays and the recovery sweep
        // (every resync) rolls back and starts it.
        let restart_then_rollback = |plan: &RestorePlan, reason, message: String| {
            let (_, failed) = resume_in_order(self.workload, &plan.stopped, |_| {});
            match failed {
                None => rollback(plan, reason, message),
                Some(e) if e.unreachable => RestoreFailure::WaitingForRuntime(format!(
                    "{message}; starting the workload again failed ({e}): the recovery sweep rolls back and starts it when Docker answers"
                )),
                Some(e) => RestoreFailure::Unfinished(format!(
                    "{message}; starting the workload again failed ({e}): the recovery sweep retries"
                )),
            }
        };
        let workload_failed = |e: &WorkloadError| {
            if e.unreachable { reasons::DOCKER_UNAVAILABLE } else { reasons::WORKLOAD_FAILED }
        };
        let targets: Vec<PathBuf> = plan.volumes.iter().map(|v| v.target.clone()).collect();
        plan.stopped = match self.workload.plan_stop(&targets, Purpose::Restore) {
            Ok(u) => u,
            Err(e) => {
                return Err(rollback(&plan, workload_failed(&e), format!("{e}; the live data was not touched")));
            }
        };
        self.journal(&plan, JournalStep::Stopping)
            .map_err(|e| rollback(&plan, reasons::RESTORE_FAILED, format!("cannot write the restore journal: {e}")))?;
        let down = Instant::now();
        let mut warnings = plan.extract_notes.clone();
        let held = self.workload.stop(&plan.stopped, plan.stop_timeout_seconds).and_then(|w| {
            warnings.extend(w);
            fault::pause("restore:stopped");
            // Anything that came up meanwhile (a restart policy, an
            // operator) is stopped too, journaled first, before any swap.
            self.hold_still(&mut plan, &targets)
        });
        match held {
            Ok(w) => warnings.extend(w),
            Err(e) => {
                return Err(restart_then_rollback(
                    &plan,
                    workload_failed(&e),
                    format!("{e}; the live data was not touched"),
                ));
            }
        }
        // A swap that fails undoes the ones before it, so the restore is all
        // or nothing. A crash meanwhile is the recovery sweep's: it finishes
        // the swaps as soon as any volume is swapped.
        if let Err(e) = self.journal(&plan, JournalStep::Swapping) {
            return Err(restart_then_rollback(
                &plan,
                reasons::RESTORE_FAILED,
                format!("cannot write the restore journal: {e}; the live data was not touched"),
            ));
        }
        for (i, v) in plan.volumes.iter().enumerate() {
            if let Err(e) = fault::fail(&format!("restore:swap-{i}")).and_then(|()| swap_forward(v, sites.volume(i))) {
                let undone = (0..=i).rev().try_for_each(|j| unswap(&plan.volumes[j], sites.volume(j)));
                if let Err(e2) = undone {
                    // Cannot go back: leave it to the recovery sweep, which
                    // goes forward. The workload stays stopped until then.
                    return Err(RestoreFailure::Unfinished(format!(
                        "swapping {}: {e}; undoing the earlier swaps also failed: {e2}",
                        v.target.display()
                    )));
                }
                return Err(restart_then_rollback(
                    &plan,
                    reasons::RESTORE_FAILED,
                    format!(
                        "cannot swap {} into place: {e}; any volume already swapped was swapped back, so the live data was not touched",
                        v.target.display()
                    ),
                ));
            }
            if i == 0 {
                fault::point("restore:first-swapped");
            }
        }
        self.journal(&plan, JournalStep::Swapped).map_err(RestoreFailure::Unfinished)?;
        // Whatever came up between the last check and the swap holds the
        // old directory: stop it too, so it starts again on the new data.
        match self.hold_still(&mut plan, &targets) {
            Ok(w) => warnings.extend(w),
            Err(e) if e.unreachable => {
                return Err(RestoreFailure::WaitingForRuntime(format!(
                    "the data was restored, but Docker stopped answering ({e}); the recovery sweep starts the workload when it answers"
                )));
            }
            Err(e) => warnings.push(format!("after the swap: {e}")),
        }
        let (started, failed) = resume_in_order(self.workload, &plan.stopped, |_| {});
        // Only a workload that was stopped had downtime. Microseconds: a
        // swap takes about 1 ms, which millisecond rounding reports as 0.
        plan.downtime_seconds = (!plan.stopped.is_empty()).then(|| (down.elapsed().as_secs_f64() * 1e6).round() / 1e6);
        warnings.extend(started);
        match failed {
            None => {}
            // The journal stays at Swapped: the recovery sweep starts it.
            Some(e) if e.unreachable => {
                return Err(RestoreFailure::WaitingForRuntime(format!(
                    "the data was restored, but starting the workload again failed ({e}); the recovery sweep starts it when Docker answers"
                )));
            }
            Some(e) => {
                return Err(RestoreFailure::Unfinished(format!(
                    "the data was restored, but starting the workload again failed ({e}); the recovery sweep retries"
                )));
            }
        }
        self.journal(&plan, JournalStep::Started).map_err(RestoreFailure::Unfinished)?;
        let (pre, more) = finish_after_swap(self.store, &plan, sites, self.cancel)?;
        warnings.extend(more);
        Ok(RestoreOutcome { volumes, downtime_seconds: plan.downtime_seconds, pre_restore_snapshot: pre, warnings })
    }
}

impl Executor<'_> {
    /// Stops every unit that uses `targets` and is live now, until none is
    /// (at most [`HOLD_ROUNDS`] rounds): units the plan did not know are
    /// journaled before they are stopped, so they are started again too.
    /// Returns what the operator should know.
    fn hold_still(&self, plan: &mut RestorePlan, targets: &[PathBuf]) -> Result<Vec<String>, WorkloadError> {
        let mut warnings = Vec::new();
        for _ in 0..HOLD_ROUNDS {
            let live = self.workload.plan_stop(targets, Purpose::Restore)?;
            if live.is_empty() {
                return Ok(warnings);
            }
            for u in &live {
                warnings.push(format!(
                    "{} came up while volsnap held the workload stopped for the restore; it was stopped again before it could use the replaced data",
                    shown_unit(u)
                ));
                if !plan.stopped.iter().any(|s| s.id == u.id) {
                    plan.stopped.push(u.clone());
                }
            }
            let step =
                self.store.journal_get(&plan.restore.uid).ok().flatten().and_then(|r| JournalStep::parse(&r.step));
            record_step(self.store, plan, step.unwrap_or(JournalStep::Stopping))
                .map_err(|e| WorkloadError::refused("journaling", "the workload", e))?;
            warnings.extend(self.workload.stop(&live, plan.stop_timeout_seconds)?);
        }
        Err(WorkloadError::refused(
            "holding",
            "the workload",
            format!(
                "containers using the targets kept coming back after {HOLD_ROUNDS} rounds of stopping them (a restart policy?); the restore does not swap under them"
            ),
        ))
    }
}

/// Writes the journal row of `plan` at `step` (durably, before the step).
fn record_step(store: &Store, plan: &RestorePlan, step: JournalStep) -> Result<(), String> {
    let row = JournalRow {
        restore_uid: plan.restore.uid.clone(),
        namespace: plan.restore.namespace.clone(),
        name: plan.restore.name.clone(),
        step: step.as_str().into(),
        plan_json: serde_json::to_string(plan).map_err(|e| e.to_string())?,
    };
    store.journal_put(&row).map_err(|e| e.to_string())
}

/// A unit as messages show it.
fn shown_unit(u: &StoppedUnit) -> String {
    if u.kind == "docker" {
        format!("container {} ({})", u.name, &u.id[..u.id.len().min(12)])
    } else {
        format!("{} {}", u.kind, u.name)
    }
}

/// Moves a restored staging root onto `spec.targetPath`. An existing empty
/// directory there is replaced, and the restored directory takes its mode
/// and owner (the operator prepared it); a new one gets mode 0755. Until
/// then the staging root stays private (0700), so nobody reads half a
/// restore.
fn move_into_new_directory(site: &Site, staging: &Path, target: &Path) -> std::io::Result<()> {
    let staged = site.open_dir(staging)?;
    if site.id(target)?.is_none() {
        rustix::fs::fchmod(staged.fd(), rustix::fs::Mode::from_raw_mode(0o755))?;
        return site.rename_noreplace(staging, target);
    }
    let existing = site.open_dir(target)?;
    let st = rustix::fs::fstat(existing.fd())?;
    if rustix::fs::Dir::read_from(existing.reopen()?)?.filter_map(Result::ok).any(|e| {
        let n = e.file_name().to_bytes();
        n != b"." && n != b".."
    }) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} is no longer empty", target.display()),
        ));
    }
    if rustix::process::geteuid().is_root() {
        rustix::fs::fchown(
            staged.fd(),
            Some(rustix::fs::Uid::from_raw(st.st_uid)),
            Some(rustix::fs::Gid::from_raw(st.st_gid)),
        )?;
    }
    rustix::fs::fchmod(staged.fd(), rustix::fs::Mode::from_raw_mode(st.st_mode & 0o7777))?;
    site.rename_replace(staging, target)
}

/// What the extraction did not restore as the archive records it, in words
/// for the restore's status message.
fn extract_notes(x: &Extracted) -> Vec<String> {
    let mut notes = Vec::new();
    if x.stripped.count > 0 {
        notes.push(format!(
            "the archive was made elsewhere (adopted), so setuid/setgid bits, file capabilities and other security.*/trusted.* attributes were not restored on {} file(s), e.g. {}",
            x.stripped.count,
            x.stripped.example.as_deref().unwrap_or("?")
        ));
    }
    if x.xattrs_not_restored.count > 0 {
        notes.push(format!(
            "{} extended attribute(s) could not be restored, e.g. {}",
            x.xattrs_not_restored.count,
            x.xattrs_not_restored.example.as_deref().unwrap_or("?")
        ));
    }
    notes
}

fn restored_volumes(plan: &RestorePlan, report: &VerifyReport) -> Vec<RestoredVolume> {
    plan.volumes
        .iter()
        .map(|v| {
            let counts = report.volumes.iter().find(|r| r.index == v.index);
            RestoredVolume {
                name: v.name.clone(),
                path: v.target.display().to_string(),
                files: counts.map(|c| c.files).unwrap_or(0),
                bytes: counts.map(|c| c.bytes).unwrap_or(0),
            }
        })
        .collect()
}

/// Removes every staging directory of the plan (not the old data).
fn remove_staging(plan: &RestorePlan, sites: &Sites) -> std::io::Result<()> {
    if let (Destination::NewDirectory { staging, .. }, Sites::NewDirectory(site)) = (&plan.destination, sites) {
        return site.remove_tree(staging);
    }
    for (i, v) in plan.volumes.iter().enumerate() {
        sites.volume(i).remove_tree(&v.staging)?;
    }
    Ok(())
}

/// Where a volume's data is, read from the file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VolumeState {
    /// The target still holds the old data (or nothing, when it is created).
    NotSwapped,
    /// Two-step swap half done: the old data is aside, the target missing.
    Half,
    /// The target holds the restored data.
    Swapped,
    /// The target holds neither: something else changed it since the plan
    /// (another restore, an operator). Never swapped over; left for a person.
    Foreign,
}

/// Whether two identities name the same directory. Only the inode number is
/// compared: staging, target and aside are siblings on one file system (a
/// target that is a mount point is refused), and `st_dev` is not stable
/// across reboots on btrfs, ZFS, NVMe or device-mapper, which is exactly when
/// recovery runs.
fn same_dir(a: Option<DirId>, b: Option<DirId>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.ino == b.ino,
        _ => false,
    }
}

fn volume_state(v: &VolumePlan, site: &Site) -> std::io::Result<VolumeState> {
    let target = site.id(&v.target)?;
    if same_dir(target, v.new_id) {
        return Ok(VolumeState::Swapped);
    }
    match (target, v.old_id) {
        (None, None) => Ok(VolumeState::NotSwapped),
        (None, Some(_)) if same_dir(site.id(&v.aside)?, v.old_id) => Ok(VolumeState::Half),
        (Some(_), Some(_)) if same_dir(target, v.old_id) => Ok(VolumeState::NotSwapped),
        _ => Ok(VolumeState::Foreign),
    }
}

fn foreign(v: &VolumePlan) -> std::io::Error {
    std::io::Error::other(format!(
        "{} holds neither the data it had when the restore was planned nor the restored data (it was changed by something else); not touched, left for an operator",
        v.target.display()
    ))
}

/// Brings one volume to the Swapped state, from whatever state it is in.
fn swap_forward(v: &VolumePlan, site: &Site) -> std::io::Result<()> {
    match volume_state(v, site)? {
        VolumeState::Swapped => return Ok(()),
        VolumeState::Foreign => return Err(foreign(v)),
        VolumeState::Half => site.rename_noreplace(&v.staging, &v.target)?,
        VolumeState::NotSwapped if v.old_id.is_none() => site.rename_noreplace(&v.staging, &v.target)?,
        VolumeState::NotSwapped => {
            let exchanged = if fault::force_two_step_rename() {
                Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "forced"))
            } else {
                site.exchange(&v.staging, &v.target)
            };
            match exchanged {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    site.rename_noreplace(&v.target, &v.aside)?;
                    fault::point("restore:two-step-half");
                    site.rename_noreplace(&v.staging, &v.target)?;
                }
                Err(e) => return Err(e),
            }
        }
    }
    site.fsync()
}

/// Brings one volume back to the NotSwapped state, from whatever state it
/// is in: the old data at the target, the extracted data in staging.
fn unswap(v: &VolumePlan, site: &Site) -> std::io::Result<()> {
    match volume_state(v, site)? {
        VolumeState::NotSwapped => return Ok(()),
        VolumeState::Foreign => return Err(foreign(v)),
        VolumeState::Half => site.rename_noreplace(&v.aside, &v.target)?,
        VolumeState::Swapped => {
            let at = |p: &Path| site.id(p).ok().flatten();
            if v.old_id.is_none() {
                // The target was created by the restore.
                site.rename_noreplace(&v.target, &v.staging)?;
            } else if same_dir(at(&v.staging), v.old_id) {
                site.exchange(&v.staging, &v.target)?;
            } else if same_dir(at(&v.aside), v.old_id) {
                site.rename_noreplace(&v.target, &v.staging)?;
                site.rename_noreplace(&v.aside, &v.target)?;
            } else {
                return Err(std::io::Error::other("the replaced data is not where the journal says it went"));
            }
        }
    }
    site.fsync()
}

/// Where a volume's replaced data lies after its swap, if it had any.
fn old_data_dir(v: &VolumePlan, site: &Site) -> Option<PathBuf> {
    v.old_id?;
    [&v.staging, &v.aside].into_iter().find(|p| same_dir(site.id(p).ok().flatten(), v.old_id)).cloned()
}

/// After the swap (and the restart): archive the replaced data as the
/// pre-restore snapshot, record it, remove it. Shared by the normal path
/// and the recovery sweep. Returns the snapshot recorded and warnings.
fn finish_after_swap(
    store: &Store,
    plan: &RestorePlan,
    sites: &Sites,
    cancel: &AtomicBool,
) -> Result<(Option<ObjectKey>, Vec<String>), RestoreFailure> {
    let mut warnings = Vec::new();
    let mut recorded = None;
    let old_dirs: Vec<(usize, PathBuf)> =
        plan.volumes.iter().enumerate().filter_map(|(i, v)| old_data_dir(v, sites.volume(i)).map(|d| (i, d))).collect();
    if let Some(pre) = &plan.pre_restore
        && !old_dirs.is_empty()
    {
        match archive_old_data(store, plan, pre, sites, &old_dirs, cancel) {
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
                let _ = store.journal_delete(&plan.restore.uid);
                return Ok((None, warnings));
            }
        }
    } else {
        let _ = store.journal_put(&JournalRow {
            restore_uid: plan.restore.uid.clone(),
            namespace: plan.restore.namespace.clone(),
            name: plan.restore.name.clone(),
            step: JournalStep::Recorded.as_str().into(),
            plan_json: serde_json::to_string(plan).unwrap_or_default(),
        });
        fault::point("restore:Recorded");
    }
    for (i, d) in &old_dirs {
        if let Err(e) = sites.volume(*i).remove_tree(d) {
            warnings.push(format!("could not remove the replaced data at {}: {e}", d.display()));
        }
    }
    store.journal_delete(&plan.restore.uid).map_err(|e| RestoreFailure::Unfinished(e.to_string()))?;
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
) -> Result<ObjectKey, ArchiveOld> {
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
        format_version: super::archive::FORMAT_VERSION,
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
    let progress = CaptureProgress::default();
    let outcome = capture::capture(CaptureJob {
        manifest: &manifest,
        volumes: &volumes,
        compression: pre.compression,
        dest: &pre.abs_path,
        progress: &progress,
        cancel,
    })
    .map_err(|e| match e {
        capture::CaptureError::Cancelled => ArchiveOld::Cancelled,
        other => ArchiveOld::Failed(other.to_string()),
    })?;
    let mut captured = outcome.volumes.clone();
    for (c, (vi, _)) in captured.iter_mut().zip(old_dirs) {
        c.path = plan.volumes[*vi].target.display().to_string();
    }
    let key =
        ObjectKey { kind: Kind::Snapshot, namespace: pre.snapshot.namespace.clone(), name: pre.snapshot.name.clone() };
    let mut snapshot = VolumeSnapshot::new(
        &pre.snapshot.name,
        VolumeSnapshotSpec {
            source: plan.workload_source.clone().unwrap_or_else(|| SnapshotSource {
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
            }),
            quiesce: None,
            compression: pre.compression,
            deletion_policy: DeletionPolicy::Retain,
            node_name: None,
            stop_timeout_seconds: None,
        },
    );
    snapshot.metadata.namespace = Some(pre.snapshot.namespace.clone());
    snapshot.metadata.uid = Some(pre.snapshot.uid.clone());
    snapshot.metadata.generation = Some(1);
    snapshot.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now.0));
    snapshot.metadata.annotations = Some(
        [(PRE_RESTORE_OF_ANNOTATION.to_string(), format!("{}/{}", plan.restore.namespace, plan.restore.name))]
            .into_iter()
            .collect(),
    );
    let status = snapshot.status.get_or_insert_with(Default::default);
    let archive = ArchiveStatus {
        path: pre.abs_path.display().to_string(),
        format: pre.compression.format().into(),
        size_bytes: outcome.size_bytes,
        sha256: outcome.sha256.clone(),
    };
    status.start_time = Some(now);
    snap::completed(status, 1, Time::now(), archive, captured, Vec::new());
    let mut value = serde_json::to_value(&snapshot).map_err(|e| ArchiveOld::Failed(e.to_string()))?;
    value["apiVersion"] = API_VERSION.into();
    value["kind"] = "VolumeSnapshot".into();
    let object = StoredObject { uid: pre.snapshot.uid.clone(), key: key.clone(), manifest_file: None, object: value };
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
    let row = JournalRow {
        restore_uid: plan.restore.uid.clone(),
        namespace: plan.restore.namespace.clone(),
        name: plan.restore.name.clone(),
        step: JournalStep::Recorded.as_str().into(),
        plan_json: serde_json::to_string(plan).unwrap_or_default(),
    };
    store.commit_pre_restore(&record, &object, &row).map_err(|e| ArchiveOld::Failed(e.to_string()))?;
    fault::point("restore:Recorded");
    Ok(key)
}

// ---------------------------------------------------------------------------
// Recovery.

/// What the recovery sweep did with one interrupted restore.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovered {
    /// The restore (it may no longer exist).
    pub restore: ObjRef,
    /// `true`: rolled forward (the data is the snapshot's); `false`: rolled
    /// back (the data is as before the restore).
    pub forward: bool,
    /// The restored volumes (forward only).
    pub volumes: Vec<RestoredVolume>,
    /// The pre-restore snapshot recorded (forward only).
    pub pre_restore_snapshot: Option<ObjectKey>,
    /// Problems met (a workload that did not start, ...).
    pub warnings: Vec<String>,
}

/// A journal row recovery could not act on: kept, and retried.
#[derive(Clone, Debug, PartialEq)]
pub struct Stuck {
    /// The restore.
    pub restore: ObjRef,
    /// Its targets: nothing else may touch them until it is resolved.
    pub targets: Vec<PathBuf>,
    /// Why.
    pub error: String,
    /// The runtime (Docker) does not answer: the restore waits for it.
    pub waiting_for_runtime: bool,
}

/// Why the recovery of one restore could not finish now.
#[derive(Debug)]
struct RecoverError {
    message: String,
    waiting_for_runtime: bool,
}

impl RecoverError {
    fn workload(what: &str, e: WorkloadError) -> RecoverError {
        RecoverError { message: format!("{what}: {e}"), waiting_for_runtime: e.unreachable }
    }
}

impl From<String> for RecoverError {
    fn from(message: String) -> RecoverError {
        RecoverError { message, waiting_for_runtime: false }
    }
}

/// Before the recovery of a restore moves a directory or starts a unit:
/// every unit the journal lists, and any unit that uses the targets and is
/// live now, is stopped (journaled first). Stopping a stopped container
/// returns at once; one whose stop Docker still has in flight is waited for.
fn hold_for_recovery(
    store: &Store,
    workload: &dyn Workload,
    plan: &mut RestorePlan,
    step: JournalStep,
) -> Result<(), RecoverError> {
    let targets: Vec<PathBuf> = plan.volumes.iter().map(|v| v.target.clone()).collect();
    let live = workload
        .plan_stop(&targets, Purpose::Restore)
        .map_err(|e| RecoverError::workload("re-checking the workload", e))?;
    let new: Vec<StoppedUnit> = live.into_iter().filter(|u| !plan.stopped.iter().any(|s| s.id == u.id)).collect();
    if !new.is_empty() {
        plan.stopped.extend(new);
        record_step(store, plan, step)?;
    }
    let stoppable: Vec<StoppedUnit> = plan.stopped.iter().filter(|u| !u.paused).cloned().collect();
    workload
        .stop(&stoppable, plan.stop_timeout_seconds)
        .map_err(|e| RecoverError::workload("stopping the workload before recovering", e))?;
    Ok(())
}

/// Finishes or rolls back every restore the journal says was interrupted,
/// except those `skip` names (a restore running in this process). Runs at
/// start-up before any reconcile, and again at every resync for rows that
/// could not be acted on, whether or not the restore objects still exist.
pub fn recover(
    store: &Store,
    workload: &dyn Workload,
    roots: &Roots,
    skip: &dyn Fn(&str) -> bool,
) -> Result<(Vec<Recovered>, Vec<Stuck>), crate::store::StoreError> {
    let mut out = Vec::new();
    let mut stuck = Vec::new();
    for row in store.journal_rows()? {
        if skip(&row.restore_uid) {
            continue;
        }
        let restore = ObjRef { namespace: row.namespace.clone(), name: row.name.clone(), uid: row.restore_uid.clone() };
        let (Some(step), Ok(plan)) =
            (JournalStep::parse(&row.step), serde_json::from_str::<RestorePlan>(&row.plan_json))
        else {
            tracing::error!(restore = %row.name, step = row.step, "Journal row cannot be read; left in place for an operator");
            continue;
        };
        let targets = match &plan.destination {
            Destination::NewDirectory { target, .. } => vec![target.clone()],
            Destination::InPlace => plan.volumes.iter().map(|v| v.target.clone()).collect(),
        };
        match recover_one(store, workload, roots, step, plan) {
            Ok(r) => out.push(r),
            Err(RecoverError { message: error, waiting_for_runtime }) => {
                tracing::error!(restore = %restore.name, error = %error, "Could not recover an interrupted restore; the journal row is kept, its targets stay locked, and it is retried at every resync");
                stuck.push(Stuck { restore, targets, error, waiting_for_runtime });
            }
        }
    }
    Ok((out, stuck))
}

fn recover_one(
    store: &Store,
    workload: &dyn Workload,
    roots: &Roots,
    step: JournalStep,
    plan: RestorePlan,
) -> Result<Recovered, RecoverError> {
    let mut warnings = Vec::new();
    // The parents are opened beneath the trusted roots and must be the
    // directories the pre-flight checked; otherwise nothing is done and the
    // row stays for an operator.
    let sites = Sites::open(roots, &plan).map_err(|e| e.to_string())?;
    let volumes: Vec<RestoredVolume> = plan
        .volumes
        .iter()
        .map(|v| RestoredVolume { name: v.name.clone(), path: v.target.display().to_string(), files: 0, bytes: 0 })
        .collect();
    let restore_ref = plan.restore.clone();
    let back = |warnings: Vec<String>| Recovered {
        restore: restore_ref.clone(),
        forward: false,
        volumes: Vec::new(),
        pre_restore_snapshot: None,
        warnings,
    };
    if let (Destination::NewDirectory { target, staging, .. }, Sites::NewDirectory(site)) = (&plan.destination, &sites)
    {
        let new_id = plan.volumes.first().and_then(|v| v.new_id);
        let forward = step >= JournalStep::Swapping && same_dir(site.id(target).map_err(|e| e.to_string())?, new_id);
        if !forward {
            site.remove_tree(staging).map_err(|e| format!("removing {}: {e}", staging.display()))?;
        }
        store.journal_delete(&plan.restore.uid).map_err(|e| e.to_string())?;
        tracing::info!(restore = %plan.restore.name, forward, "Recovered an interrupted restore into a new directory");
        return Ok(if forward {
            warnings.extend(plan.extract_notes.iter().cloned());
            Recovered { restore: plan.restore.clone(), forward, volumes, pre_restore_snapshot: None, warnings }
        } else {
            back(warnings)
        });
    }
    let mut plan = plan;
    let states: Vec<VolumeState> = plan
        .volumes
        .iter()
        .enumerate()
        .map(|(i, v)| volume_state(v, sites.volume(i)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if (JournalStep::Stopping..=JournalStep::Swapped).contains(&step)
        && let Some(i) = states.iter().position(|s| *s == VolumeState::Foreign)
    {
        // Another restore or a person changed the target since: going either
        // way would swap over data this restore knows nothing about.
        return Err(foreign(&plan.volumes[i]).to_string().into());
    }
    let forward = match step {
        JournalStep::Extracting | JournalStep::Extracted => false,
        JournalStep::Stopping | JournalStep::Swapping => states.contains(&VolumeState::Swapped),
        JournalStep::Swapped | JournalStep::Started | JournalStep::Recorded => true,
    };
    // From the stop until the workload is started again, the units the
    // journal lists must be down before any directory under them moves and
    // before they are started: a stop Docker still had in flight when
    // volsnap died is waited for (bounded by each unit's grace period), and
    // anything that came up meanwhile (a restart policy, an operator) is
    // journaled and stopped too, so it starts again on the right data.
    if (JournalStep::Stopping..=JournalStep::Swapped).contains(&step) {
        hold_for_recovery(store, workload, &mut plan, step)?;
    }
    if forward {
        if step < JournalStep::Started {
            for (i, v) in plan.volumes.iter().enumerate() {
                swap_forward(v, sites.volume(i))
                    .map_err(|e| format!("finishing the swap of {}: {e}", v.target.display()))?;
            }
        }
    } else {
        // Before `Stopping` nothing can have moved (and the identities may
        // not even be recorded yet): only staging directories are removed.
        if step >= JournalStep::Stopping {
            for (i, v) in plan.volumes.iter().enumerate() {
                unswap(v, sites.volume(i)).map_err(|e| format!("rolling back {}: {e}", v.target.display()))?;
            }
        }
        remove_staging(&plan, &sites).map_err(|e| format!("removing staging directories: {e}"))?;
    }
    // What the journal says is stopped is started again, in both
    // directions; from `Started` on it already runs and is left alone. If
    // the runtime cannot be asked, the row stays and is retried.
    if (JournalStep::Stopping..=JournalStep::Swapped).contains(&step) {
        let (w, failed) = resume_in_order(workload, &plan.stopped, |_| {});
        warnings.extend(w);
        if let Some(e) = failed {
            return Err(RecoverError::workload("starting the workload again", e));
        }
    }
    if !forward {
        store.journal_delete(&plan.restore.uid).map_err(|e| e.to_string())?;
        tracing::info!(restore = %plan.restore.name, step = step.as_str(), "Rolled back an interrupted restore: the live data is as it was");
        return Ok(back(warnings));
    }
    if step < JournalStep::Started {
        let row = JournalRow {
            restore_uid: plan.restore.uid.clone(),
            namespace: plan.restore.namespace.clone(),
            name: plan.restore.name.clone(),
            step: JournalStep::Started.as_str().into(),
            plan_json: serde_json::to_string(&plan).map_err(|e| e.to_string())?,
        };
        store.journal_put(&row).map_err(|e| e.to_string())?;
    }
    let mut recorded = None;
    if step >= JournalStep::Recorded {
        // The pre-restore snapshot is recorded: only the removal was left.
        recorded = plan.pre_restore.take().map(|p| ObjectKey {
            kind: Kind::Snapshot,
            namespace: p.snapshot.namespace,
            name: p.snapshot.name,
        });
    }
    let never = AtomicBool::new(false);
    let (pre, more) = finish_after_swap(store, &plan, &sites, &never).map_err(|f| format!("{f:?}"))?;
    warnings.extend(more);
    warnings.extend(plan.extract_notes.iter().cloned());
    tracing::info!(restore = %plan.restore.name, step = step.as_str(), "Rolled forward an interrupted restore: the live data is the snapshot's");
    Ok(Recovered {
        restore: plan.restore.clone(),
        forward: true,
        volumes,
        pre_restore_snapshot: pre.or(recorded),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::beneath::OpenDir;

    /// The site of the volumes `vol` makes under `root`.
    fn site(root: &Path) -> Site {
        Site::from_dir(OpenDir::open_trusted(root).unwrap(), root)
    }

    fn vol(root: &Path) -> VolumePlan {
        let target = root.join("data");
        VolumePlan {
            index: 0,
            name: "data".into(),
            staging: sibling(&target, "volsnap-restore", "abcd1234"),
            aside: sibling(&target, "volsnap-old", "abcd1234"),
            target,
            bytes: 0,
            entries: 0,
            old_id: None,
            new_id: None,
            parent_id: None,
        }
    }

    /// A target holding "old" and a staging directory holding "new".
    fn staged(root: &Path) -> VolumePlan {
        let mut v = vol(root);
        std::fs::create_dir(&v.target).unwrap();
        std::fs::write(v.target.join("f"), b"old").unwrap();
        std::fs::create_dir(&v.staging).unwrap();
        std::fs::write(v.staging.join("f"), b"new").unwrap();
        v.old_id = swap::dir_id(&v.target).unwrap();
        v.new_id = swap::dir_id(&v.staging).unwrap();
        v
    }

    fn content(v: &VolumePlan) -> String {
        String::from_utf8(std::fs::read(v.target.join("f")).unwrap()).unwrap()
    }

    #[test]
    fn siblings_are_hidden_next_to_the_target() {
        let s = sibling(Path::new("/srv/app/data"), "volsnap-restore", "1234abcd");
        assert_eq!(s, Path::new("/srv/app/.data.volsnap-restore-1234abcd"));
    }

    #[test]
    fn exchange_then_state_is_swapped_and_old_data_is_in_staging() {
        let tmp = tempfile::tempdir().unwrap();
        let v = staged(tmp.path());
        assert_eq!(volume_state(&v, &site(tmp.path())).unwrap(), VolumeState::NotSwapped);
        swap_forward(&v, &site(tmp.path())).unwrap();
        assert_eq!(volume_state(&v, &site(tmp.path())).unwrap(), VolumeState::Swapped);
        assert_eq!(content(&v), "new");
        assert_eq!(old_data_dir(&v, &site(tmp.path())), Some(v.staging.clone()));
        // Idempotent: a second forward (recovery after a crash) changes nothing.
        swap_forward(&v, &site(tmp.path())).unwrap();
        assert_eq!(content(&v), "new");
    }

    #[test]
    fn a_half_done_two_step_swap_goes_forward_or_back() {
        for forward in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let v = staged(tmp.path());
            // The crash: the target was moved aside, the staging not yet in.
            std::fs::rename(&v.target, &v.aside).unwrap();
            assert_eq!(volume_state(&v, &site(tmp.path())).unwrap(), VolumeState::Half);
            if forward {
                swap_forward(&v, &site(tmp.path())).unwrap();
                assert_eq!(content(&v), "new");
                assert_eq!(old_data_dir(&v, &site(tmp.path())), Some(v.aside.clone()));
            } else {
                unswap(&v, &site(tmp.path())).unwrap();
                assert_eq!(content(&v), "old");
                assert_eq!(volume_state(&v, &site(tmp.path())).unwrap(), VolumeState::NotSwapped);
            }
        }
    }

    #[test]
    fn a_completed_swap_can_be_undone_whichever_way_it_was_done() {
        // Exchanged.
        let tmp = tempfile::tempdir().unwrap();
        let v = staged(tmp.path());
        swap_forward(&v, &site(tmp.path())).unwrap();
        unswap(&v, &site(tmp.path())).unwrap();
        assert_eq!(content(&v), "old");
        assert_eq!(std::fs::read(v.staging.join("f")).unwrap(), b"new", "the extracted data is back in staging");
        // Two-step.
        let tmp = tempfile::tempdir().unwrap();
        let v = staged(tmp.path());
        std::fs::rename(&v.target, &v.aside).unwrap();
        std::fs::rename(&v.staging, &v.target).unwrap();
        assert_eq!(volume_state(&v, &site(tmp.path())).unwrap(), VolumeState::Swapped);
        unswap(&v, &site(tmp.path())).unwrap();
        assert_eq!(content(&v), "old");
        assert!(!v.aside.exists());
        // Created.
        let tmp = tempfile::tempdir().unwrap();
        let mut v = vol(tmp.path());
        std::fs::create_dir(&v.staging).unwrap();
        v.new_id = swap::dir_id(&v.staging).unwrap();
        swap_forward(&v, &site(tmp.path())).unwrap();
        unswap(&v, &site(tmp.path())).unwrap();
        assert!(!v.target.exists() && v.staging.exists());
    }

    #[test]
    fn identities_survive_a_device_number_change_and_strangers_are_foreign() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = staged(tmp.path());
        // After a reboot st_dev may differ (btrfs, NVMe, device-mapper).
        v.old_id = v.old_id.map(|d| DirId { dev: d.dev + 1, ..d });
        v.new_id = v.new_id.map(|d| DirId { dev: d.dev + 1, ..d });
        assert_eq!(volume_state(&v, &site(tmp.path())).unwrap(), VolumeState::NotSwapped);
        swap_forward(&v, &site(tmp.path())).unwrap();
        assert_eq!(volume_state(&v, &site(tmp.path())).unwrap(), VolumeState::Swapped);
        // Someone replaces the target: neither old nor new.
        std::fs::rename(&v.target, tmp.path().join("elsewhere")).unwrap();
        std::fs::create_dir(&v.target).unwrap();
        assert_eq!(volume_state(&v, &site(tmp.path())).unwrap(), VolumeState::Foreign);
        assert!(
            swap_forward(&v, &site(tmp.path())).is_err() && unswap(&v, &site(tmp.path())).is_err(),
            "a stranger's directory is never swapped over"
        );
    }

    #[test]
    fn a_missing_target_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = vol(tmp.path());
        std::fs::create_dir(&v.staging).unwrap();
        std::fs::write(v.staging.join("f"), b"new").unwrap();
        v.new_id = swap::dir_id(&v.staging).unwrap();
        swap_forward(&v, &site(tmp.path())).unwrap();
        assert_eq!(content(&v), "new");
        assert_eq!(old_data_dir(&v, &site(tmp.path())), None, "nothing was replaced");
        assert!(!v.staging.exists());
    }

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
