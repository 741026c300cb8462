//! The pre-flight: everything checked before any data is touched, and the
//! plan it returns.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::plan::{Destination, ObjRef, PreRestorePlan, Refusal, RestorePlan, VolumePlan};
use super::{BOMB_HEADROOM_BYTES, BOMB_HEADROOM_FRACTION, PRE_RESTORE_SUFFIX, SPACE_PER_ENTRY};
use crate::api::{PathSource, SnapshotSource, VolumeRestoreSpec, VolumeSnapshot};
use crate::core::reasons;
use crate::engine::archive::ArchiveManifest;
use crate::engine::paths::{PathPolicy, volume_names};
use crate::engine::swap::{self, DirId};

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
                // A source that names a workload: its targets are the
                // runtime's to resolve (`runtime_targets`).
                _ => Vec::new(),
            };
            let runtime = match (&snapshot.spec.source.paths, input.runtime_targets) {
                (Some(_), _) => None,
                (None, Some(Ok(t))) => Some(t),
                (None, Some(Err(r))) => return Err(r),
                (None, None) => {
                    return Err(Refusal::fail(
                        reasons::UNSUPPORTED_SOURCE,
                        format!(
                            "VolumeSnapshot {snap_key} names a workload no runtime resolved; set spec.targetPath to restore into a new directory. Nothing was touched"
                        ),
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
        content_bytes: total_bytes,
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
        pre_restore_recorded: None,
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
pub(super) fn sibling(target: &Path, what: &str, uid8: &str) -> PathBuf {
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
    let owner = match (&source.container, &source.volume, &source.persistent_volume_claim) {
        (Some(c), _, _) => format!("container {c}"),
        (_, Some(v), _) => format!("volume {v}"),
        (_, _, Some(p)) => format!("PersistentVolumeClaim {p}"),
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
                "{} is a mount point, which cannot be swapped atomically by rename; restore into a new directory with spec.targetPath (then copy the data onto the volume, or point the volume at it). Nothing was touched",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_are_hidden_next_to_the_target() {
        let s = sibling(Path::new("/srv/app/data"), "volsnap-restore", "1234abcd");
        assert_eq!(s, Path::new("/srv/app/.data.volsnap-restore-1234abcd"));
    }
}
