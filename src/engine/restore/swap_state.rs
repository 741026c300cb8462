//! Where one volume's data lies, read from the file system by directory
//! identity, and the moves between those states: the per-volume state
//! machine shared by execution and recovery.

use std::path::{Path, PathBuf};

use super::plan::VolumePlan;
use crate::engine::fault;
use crate::engine::site::Site;
use crate::engine::swap::DirId;

/// Where a volume's data is, read from the file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum VolumeState {
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
pub(super) fn same_dir(a: Option<DirId>, b: Option<DirId>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.ino == b.ino,
        _ => false,
    }
}

pub(super) fn volume_state(v: &VolumePlan, site: &Site) -> std::io::Result<VolumeState> {
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

pub(super) fn foreign(v: &VolumePlan) -> std::io::Error {
    std::io::Error::other(format!(
        "{} holds neither the data it had when the restore was planned nor the restored data (it was changed by something else); not touched, left for an operator",
        v.target.display()
    ))
}

/// Brings one volume to the Swapped state, from whatever state it is in.
pub(super) fn swap_forward(v: &VolumePlan, site: &Site) -> std::io::Result<()> {
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
pub(super) fn unswap(v: &VolumePlan, site: &Site) -> std::io::Result<()> {
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
pub(super) fn old_data_dir(v: &VolumePlan, site: &Site) -> Option<PathBuf> {
    v.old_id?;
    [&v.staging, &v.aside].into_iter().find(|p| same_dir(site.id(p).ok().flatten(), v.old_id)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::beneath::OpenDir;
    use crate::engine::restore::preflight::sibling;
    use crate::engine::swap;

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
}
