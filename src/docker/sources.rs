//! `source.container` and `source.volume`: what to capture, and what is
//! skipped with a reason a person can act on.
//!
//! A container's mounts are classified one by one:
//!
//! - a bind mount of a directory is captured if its host path passes the
//!   path policy (allowed roots, never `/`, `/proc`, `/sys`, `/dev`, nor
//!   volsnap's own directories), checked after resolving symlinks;
//! - a named volume of the `local` driver is captured from its mountpoint,
//!   which must lie under Docker's volume root (always allowed);
//! - everything else is skipped: tmpfs (no persistent data), volumes of
//!   other drivers (the data is not on this host's file system), binds of
//!   files or sockets (e.g. `/var/run/docker.sock`), missing host paths.
//!
//! Volume names are derived from the mount's target inside the container
//! (`/var/lib/postgresql/data` → `var-lib-postgresql-data`): stable across
//! re-creations of the container and readable in the archive.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use bollard::models::MountPoint;

use super::{DockerClient, DockerError};
use crate::api::SkippedVolume;
use crate::engine::beneath::{OpenDir, TrustedRoot};
use crate::engine::capture::CaptureVolume;
use crate::engine::paths::{PathPolicy, Resolution, dns_label_from, unique_label};

/// What a mount is, for capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountClass {
    /// Capture this host directory.
    Capture(PathBuf),
    /// Skip, for this reason.
    Skip(String),
}

/// The facts about one mount that decide whether it is captured.
#[derive(Clone, Debug, Default)]
pub struct MountFacts {
    /// `bind`, `volume`, `tmpfs`, `npipe`, `cluster`, ...
    pub kind: String,
    /// Host path (binds) or mountpoint (volumes).
    pub source: String,
    /// Path inside the container.
    pub target: String,
    /// Volume name (volumes).
    pub volume_name: Option<String>,
    /// Volume driver (volumes).
    pub driver: Option<String>,
    /// The local driver's mount options (`type`, `o`, `device`: what
    /// `docker volume create -o` and compose `driver_opts` set).
    pub options: HashMap<String, String>,
}

impl From<&MountPoint> for MountFacts {
    fn from(m: &MountPoint) -> Self {
        MountFacts {
            kind: m.typ.clone().unwrap_or_default(),
            source: m.source.clone().unwrap_or_default(),
            target: m.destination.clone().unwrap_or_default(),
            volume_name: m.name.clone(),
            driver: m.driver.clone(),
            options: HashMap::new(),
        }
    }
}

/// Classifies one mount (pure apart from `lstat`/`canonicalize` of the host
/// path).
pub fn classify(m: &MountFacts, policy: &PathPolicy, volume_root: &Path) -> MountClass {
    match m.kind.as_str() {
        "tmpfs" => MountClass::Skip("tmpfs holds no persistent data".into()),
        "volume" => {
            let name = m.volume_name.clone().unwrap_or_default();
            let driver = m.driver.clone().unwrap_or_else(|| "local".into());
            if driver != "local" {
                return MountClass::Skip(format!(
                    "volume {name} uses the {driver:?} driver: its data is not on this host's file system (only local volumes are captured)"
                ));
            }
            match m.options.get("type").map(String::as_str) {
                None | Some("") => local_volume_dir(&name, &m.source, policy, volume_root),
                Some(kind) => mounted_volume(&name, kind, &m.options, policy),
            }
        }
        "bind" => bind_dir(&m.source, policy),
        other => MountClass::Skip(format!("mount type {other:?} is not captured")),
    }
}

/// A local named volume's mountpoint: it must resolve under Docker's volume
/// root (whatever the allowed roots say) and be a directory.
fn local_volume_dir(name: &str, mountpoint: &str, policy: &PathPolicy, volume_root: &Path) -> MountClass {
    let canonical = match Path::new(mountpoint).canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return MountClass::Skip(format!(
                "no data on disk yet: volume {name}'s mountpoint {mountpoint} does not exist"
            ));
        }
        Err(e) => return MountClass::Skip(format!("volume {name}: {mountpoint} cannot be resolved: {e}")),
    };
    if !canonical.starts_with(volume_root) {
        return MountClass::Skip(format!(
            "volume {name}'s mountpoint {} is outside Docker's volume root {}",
            canonical.display(),
            volume_root.display()
        ));
    }
    if let Err(why) = policy.check_denied(&canonical, mountpoint) {
        return MountClass::Skip(why);
    }
    if !canonical.is_dir() {
        return MountClass::Skip(format!("volume {name}'s mountpoint {} is not a directory", canonical.display()));
    }
    MountClass::Capture(canonical)
}

/// File systems whose data lives on another host.
const NETWORK_FS: [&str; 7] = ["nfs", "nfs4", "cifs", "smb3", "smbfs", "glusterfs", "ceph"];

/// The directory a local-driver volume created with `type=none`, `o=bind`
/// and `device=DIR` binds (compose `driver_opts`): where its data is.
pub fn bind_device(options: &HashMap<String, String>) -> Option<&str> {
    let binds = options.get("o").is_some_and(|o| o.split(',').any(|x| x == "bind" || x == "rbind"));
    let device = options.get("device").map(String::as_str).filter(|d| !d.is_empty())?;
    (options.get("type").map(String::as_str) == Some("none") && binds).then_some(device)
}

/// A local-driver volume with mount options: Docker mounts `device` on the
/// volume's mountpoint only while a container uses it, so the mountpoint is
/// never where the data is. `type=none` with `o=bind` is a bind of the
/// `device` directory, captured (and restored) there like any bind mount;
/// everything else (tmpfs, network and block file systems) is skipped.
fn mounted_volume(name: &str, kind: &str, options: &HashMap<String, String>, policy: &PathPolicy) -> MountClass {
    let device = options.get("device").map(String::as_str).unwrap_or("");
    if let Some(dir) = bind_device(options) {
        return bind_dir(dir, policy);
    }
    match kind {
        "tmpfs" => MountClass::Skip(format!(
            "volume {name} is a tmpfs mount (local driver, type=tmpfs): it holds no persistent data"
        )),
        k if NETWORK_FS.contains(&k) => MountClass::Skip(format!(
            "volume {name} is mounted from the network file system {device} ({k}): its data lives on that server; capture it there"
        )),
        k => MountClass::Skip(format!(
            "volume {name} is a {k} mount of {device} made by the local driver only while a container uses it: its mountpoint is not where the data is, so volsnap neither captures nor restores it; capture the device's file system where it is mounted"
        )),
    }
}

/// A bind mount: only directories, under the allowed roots.
fn bind_dir(source: &str, policy: &PathPolicy) -> MountClass {
    let meta = match std::fs::metadata(source) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return MountClass::Skip(format!("no data on disk yet: {source} does not exist"));
        }
        Err(e) => return MountClass::Skip(format!("{source} cannot be read: {e}")),
    };
    let ft = meta.file_type();
    if ft.is_socket() {
        return MountClass::Skip(format!(
            "{source} is a socket, not data (binds of sockets such as the Docker socket are never captured)"
        ));
    }
    if !ft.is_dir() {
        return MountClass::Skip(format!(
            "{source} is a single file bind-mounted into the container; volsnap captures directories"
        ));
    }
    let canonical = match Path::new(source).canonicalize() {
        Ok(p) => p,
        Err(e) => return MountClass::Skip(format!("{source} cannot be resolved: {e}")),
    };
    match policy.check(&canonical, source) {
        Ok(()) => MountClass::Capture(canonical),
        Err(why) => MountClass::Skip(why),
    }
}

/// Opens a classified directory beneath its trusted root: Docker's volume
/// root for named volumes, the allowed roots for binds. What is opened is
/// verified to be what was classified; otherwise the reason says why.
fn open_mount_dir(path: &Path, policy: &PathPolicy, volume_root: &Path) -> Result<OpenDir, String> {
    if policy.root_of(path).is_some() {
        return policy.open_checked(path);
    }
    let root = TrustedRoot::open(volume_root)
        .map_err(|e| format!("Docker's volume root {} cannot be opened: {e}", volume_root.display()))?;
    root.open_checked(path).map_err(|e| format!("{} cannot be opened safely: {e}; not captured", path.display()))
}

/// Turns classified mounts into the volumes to capture (named after their
/// targets, unique) and the skipped ones.
pub fn resolution_from(mounts: &[MountFacts], policy: &PathPolicy, volume_root: &Path) -> Resolution {
    let mut out = Resolution::default();
    let mut sorted: Vec<&MountFacts> = mounts.iter().collect();
    sorted.sort_by(|a, b| a.target.cmp(&b.target));
    let mut taken: Vec<String> = Vec::new();
    for m in sorted {
        let name = unique_label(dns_label_from(&m.target), &mut taken);
        let skip = |reason: String| SkippedVolume {
            name: name.clone(),
            path: Some(m.source.clone()).filter(|s| !s.is_empty()),
            target: Some(m.target.clone()),
            reason,
        };
        match classify(m, policy, volume_root) {
            MountClass::Skip(reason) => out.skipped.push(skip(reason)),
            MountClass::Capture(path) => {
                let dir = match open_mount_dir(&path, policy, volume_root) {
                    Ok(d) => d,
                    Err(reason) => {
                        out.skipped.push(skip(reason));
                        continue;
                    }
                };
                if let Some(other) = out.volumes.iter().find(|v| v.path.starts_with(&path) || path.starts_with(&v.path))
                {
                    let reason = format!(
                        "{} overlaps volume {} ({}): it would be captured twice",
                        path.display(),
                        other.name,
                        other.path.display()
                    );
                    out.skipped.push(skip(reason));
                    continue;
                }
                out.volumes.push(CaptureVolume {
                    index: out.volumes.len() as u32,
                    name,
                    path,
                    target: Some(m.target.clone()),
                    dir,
                });
            }
        }
    }
    out
}

/// Whether `path` (on the host) is the directory a running container's
/// process `pid` has mounted at `target`, compared by device and inode
/// through the container's mount namespace (`/proc/<pid>/root`; only
/// `stat`ed, never opened) against the directory volsnap opened for it.
/// `Some` is why not. A path whose symlinks were re-pointed after the
/// container started names other data than it uses.
fn live_mismatch(pid: i64, target: &str, path: &Path, dir: &OpenDir, container: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let inside = PathBuf::from(format!("/proc/{pid}/root")).join(target.trim_start_matches('/'));
    // The host side is the directory the capture will read: the descriptor
    // opened when the volume was checked, not the path looked up again.
    let (Ok(seen), Ok(host)) = (std::fs::metadata(&inside), dir.id()) else {
        // Cannot look (the process just exited, no permission): the path is
        // all there is to go by.
        return None;
    };
    ((seen.dev(), seen.ino()) != (host.dev, host.ino)).then(|| {
        format!(
            "{} is no longer the directory container {container} has mounted at {target} (a symlink on the way was re-pointed, or the directory replaced, after the container started): capturing it would read other data than the container uses. Restart the container so it mounts what the path names now, or capture with quiesce: Stop",
            path.display()
        )
    })
}

/// Local-driver volumes with mount options: read from the volume itself
/// (a container's mount lists only the mountpoint).
fn with_volume_options(docker: &DockerClient, mut m: MountFacts) -> Result<MountFacts, DockerError> {
    if m.kind == "volume"
        && m.driver.as_deref().unwrap_or("local") == "local"
        && let Some(name) = m.volume_name.clone()
    {
        match docker.inspect_volume(&name) {
            Ok(v) => m.options = v.options,
            Err(DockerError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(m)
}

/// `source.container`: the container's mounts, classified. With
/// `verify_live`, the binds of a running container are checked against
/// what it actually has mounted (a capture that reads while it runs).
pub fn resolve_container(
    docker: &DockerClient,
    policy: &PathPolicy,
    name: &str,
    verify_live: bool,
) -> Result<Resolution, DockerError> {
    let c = docker.inspect_container(name)?;
    let shown = c.name.clone().unwrap_or_else(|| name.into()).trim_start_matches('/').to_string();
    let pid = c.state.as_ref().filter(|s| s.running == Some(true)).and_then(|s| s.pid).filter(|p| *p > 0);
    let mut mounts: Vec<MountFacts> = c
        .mounts
        .unwrap_or_default()
        .iter()
        .map(|m| with_volume_options(docker, MountFacts::from(m)))
        .collect::<Result<_, _>>()?;
    // `--tmpfs` mounts are listed in the host config, not among the mounts.
    for target in c.host_config.and_then(|h| h.tmpfs).unwrap_or_default().into_keys() {
        if !mounts.iter().any(|m| m.target == target) {
            mounts.push(MountFacts { kind: "tmpfs".into(), target, ..Default::default() });
        }
    }
    let mut out = resolution_from(&mounts, policy, docker.volume_root());
    if let (true, Some(pid)) = (verify_live, pid) {
        let (mut kept, mut moved) = (Vec::new(), Vec::new());
        for v in out.volumes {
            let target = v.target.clone().unwrap_or_default();
            match live_mismatch(pid, &target, &v.path, &v.dir, &shown) {
                None => kept.push(v),
                Some(reason) => moved.push(SkippedVolume {
                    name: v.name,
                    path: Some(v.path.display().to_string()),
                    target: v.target,
                    reason,
                }),
            }
        }
        for (i, v) in kept.iter_mut().enumerate() {
            v.index = i as u32;
        }
        out.volumes = kept;
        out.skipped.extend(moved);
    }
    Ok(out)
}

/// `source.volume`: one named volume, by its mountpoint.
pub fn resolve_volume(docker: &DockerClient, policy: &PathPolicy, name: &str) -> Result<Resolution, DockerError> {
    let v = docker.inspect_volume(name)?;
    let facts = MountFacts {
        kind: "volume".into(),
        source: v.mountpoint.clone(),
        target: String::new(),
        volume_name: Some(v.name.clone()),
        driver: Some(v.driver.clone()),
        options: v.options.clone(),
    };
    let mut out = Resolution::default();
    let label = dns_label_from(name);
    match classify(&facts, policy, docker.volume_root()) {
        MountClass::Capture(path) => match open_mount_dir(&path, policy, docker.volume_root()) {
            Ok(dir) => out.volumes.push(CaptureVolume { index: 0, name: label, path, target: None, dir }),
            Err(reason) => out.skipped.push(SkippedVolume {
                name: label,
                path: Some(v.mountpoint).filter(|s| !s.is_empty()),
                target: None,
                reason,
            }),
        },
        MountClass::Skip(reason) => out.skipped.push(SkippedVolume {
            name: label,
            path: Some(v.mountpoint).filter(|s| !s.is_empty()),
            target: None,
            reason,
        }),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kind: &str, source: &str, target: &str) -> MountFacts {
        MountFacts { kind: kind.into(), source: source.into(), target: target.into(), ..Default::default() }
    }

    #[test]
    fn mounts_are_captured_or_skipped_with_reasons() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let allowed = root.join("srv");
        let vroot = root.join("docker/volumes");
        std::fs::create_dir_all(allowed.join("app/data")).unwrap();
        std::fs::create_dir_all(vroot.join("pg/_data")).unwrap();
        std::fs::write(allowed.join("app/config.ini"), b"x").unwrap();
        let sock = allowed.join("app.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let policy = PathPolicy::new(std::slice::from_ref(&allowed), &[]).unwrap();
        let mut pg = facts("volume", vroot.join("pg/_data").to_str().unwrap(), "/var/lib/postgresql/data");
        pg.volume_name = Some("pg".into());
        pg.driver = Some("local".into());
        let mut nfs = facts("volume", "/nowhere", "/nfs");
        nfs.volume_name = Some("shared".into());
        nfs.driver = Some("rexray/ebs".into());
        let mounts = vec![
            facts("bind", allowed.join("app/data").to_str().unwrap(), "/data"),
            pg,
            facts("tmpfs", "", "/cache"),
            nfs,
            facts("bind", sock.to_str().unwrap(), "/var/run/app.sock"),
            facts("bind", allowed.join("app/config.ini").to_str().unwrap(), "/etc/app.ini"),
            facts("bind", "/", "/host"),
            facts("bind", root.to_str().unwrap(), "/outside"),
        ];
        let r = resolution_from(&mounts, &policy, &vroot);
        let names: Vec<&str> = r.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["data", "var-lib-postgresql-data"]);
        assert_eq!(r.volumes[1].target.as_deref(), Some("/var/lib/postgresql/data"));
        let reason =
            |target: &str| r.skipped.iter().find(|s| s.target.as_deref() == Some(target)).unwrap().reason.clone();
        assert!(reason("/cache").contains("tmpfs"));
        assert!(reason("/nfs").contains("rexray/ebs"));
        assert!(reason("/var/run/app.sock").contains("socket"));
        assert!(reason("/etc/app.ini").contains("single file"));
        assert!(reason("/host").contains("/ is never captured"));
        assert!(reason("/outside").contains("outside the allowed roots"));
    }

    #[test]
    fn local_volumes_with_mount_options_are_read_where_the_data_is_or_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let allowed = root.join("srv");
        let device = allowed.join("device");
        std::fs::create_dir_all(&device).unwrap();
        let policy = PathPolicy::new(std::slice::from_ref(&allowed), &[]).unwrap();
        let vol = |opts: &[(&str, &str)]| MountFacts {
            kind: "volume".into(),
            source: root.join("docker/volumes/v/_data").display().to_string(),
            target: "/data".into(),
            volume_name: Some("v".into()),
            driver: Some("local".into()),
            options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let vroot = root.join("docker/volumes");
        let dev = device.display().to_string();
        let class = |opts: &[(&str, &str)]| classify(&vol(opts), &policy, &vroot);
        assert_eq!(class(&[("type", "none"), ("o", "bind"), ("device", &dev)]), MountClass::Capture(device.clone()));
        assert_eq!(
            class(&[("type", "none"), ("o", "rbind,ro"), ("device", &dev)]),
            MountClass::Capture(device.clone())
        );
        let skipped = |opts: &[(&str, &str)]| match class(opts) {
            MountClass::Skip(why) => why,
            other => panic!("{opts:?}: {other:?}"),
        };
        assert!(skipped(&[("type", "tmpfs"), ("device", "tmpfs")]).contains("tmpfs"));
        assert!(
            skipped(&[("type", "nfs"), ("o", "addr=10.0.0.1"), ("device", ":/export")]).contains("network file system")
        );
        assert!(skipped(&[("type", "ext4"), ("device", "/dev/sdb1")]).contains("mountpoint is not where the data is"));
        let outside = root.display().to_string();
        assert!(
            skipped(&[("type", "none"), ("o", "bind"), ("device", &outside)]).contains("outside the allowed roots"),
            "a bind-type volume's device is checked like any bind"
        );
    }
}
