//! Quiescing the containers that use a volume, and bringing them back.
//!
//! [`DockerWorkload`] finds every running, paused or restarting container
//! that mounts any of a set of host directories (a bind-type local volume
//! counts by its device directory): all containers are inspected, not just
//! the one a snapshot names, because another container sharing the volume
//! writes to it just the same. When the units are stopped, the containers
//! sharing their network, PID or IPC namespace (`container:X`) go with
//! them, mounts or not. Units are listed in start order: such a container
//! comes after X; stopping goes the other way.
//!
//! Every action is by container ID, never by name: a container removed and
//! re-created meanwhile has a new ID, and is reported rather than started.
//! Only units volsnap itself paused or stopped are ever resumed (the caller
//! journals them before acting).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DockerClient, DockerError, short};
use crate::engine::workload::{Purpose, StoppedUnit, Workload, WorkloadError};

/// The kind of the units this module owns.
pub const UNIT_KIND: &str = "docker";

/// Containers, as a [`Workload`].
#[derive(Clone, Debug)]
pub struct DockerWorkload {
    docker: Arc<DockerClient>,
}

impl DockerWorkload {
    /// Wraps a connected client.
    pub fn new(docker: Arc<DockerClient>) -> Self {
        DockerWorkload { docker }
    }
}

/// Whether a mount of host path `src` (read-write or not) makes a container
/// a user of directory `dir`: it mounts the directory itself or something
/// inside it (it sees, and pins, that directory), or a parent of it
/// read-write (it can write into it). A read-only mount of a parent, such as
/// a monitoring agent's `/:/rootfs:ro`, can neither change the data nor pin
/// the directory a restore swaps, so it is left alone.
pub fn uses(dir: &Path, src: &Path, rw: bool) -> bool {
    src.starts_with(dir) || (rw && dir.starts_with(src))
}

/// `container:<name or id>` in a namespace mode names a dependency.
fn namespace_owner(mode: Option<&String>) -> Option<&str> {
    mode.and_then(|m| m.strip_prefix("container:"))
}

/// Orders units so that every unit comes after the units it depends on
/// (`deps`: unit id -> ids it needs). Unknown dependencies are ignored.
pub fn start_order(units: Vec<StoppedUnit>, deps: &HashMap<String, Vec<String>>) -> Vec<StoppedUnit> {
    let mut placed: Vec<StoppedUnit> = Vec::with_capacity(units.len());
    let mut left = units;
    while !left.is_empty() {
        let ids: Vec<String> = left.iter().map(|u| u.id.clone()).collect();
        let ready = left.iter().position(|u| {
            deps.get(&u.id).is_none_or(|ds| ds.iter().all(|d| !ids.contains(d) || placed.iter().any(|p| &p.id == d)))
        });
        // A cycle cannot be built with Docker; take the first if one shows up.
        let i = ready.unwrap_or(0);
        placed.push(left.remove(i));
    }
    placed
}

fn werr(op: &'static str, unit: &StoppedUnit, e: DockerError) -> WorkloadError {
    let shown = format!("container {} ({})", unit.name, short(&unit.id));
    match e {
        e @ DockerError::Unavailable { .. } => WorkloadError::unreachable(op, shown, e.to_string()),
        e => WorkloadError::refused(op, shown, e.to_string()),
    }
}

fn listing_failed(e: DockerError) -> WorkloadError {
    match e {
        e @ DockerError::Unavailable { .. } => WorkloadError::unreachable("listing", "containers", e.to_string()),
        e => WorkloadError::refused("listing", "containers", e.to_string()),
    }
}

/// The states in which a container can write to (or pin) a directory, or
/// is about to: `restarting` is a container its restart policy brings back
/// at any moment.
const LIVE_STATES: [&str; 3] = ["running", "paused", "restarting"];

/// A live container, as planning sees it.
#[derive(Clone, Debug)]
struct Candidate {
    id: String,
    name: String,
    state: String,
    /// It mounts one of the directories.
    uses: bool,
    /// IDs of the containers whose namespaces it shares (`container:X`).
    owners: Vec<String>,
}

/// The candidates a plan holds: those that use the directories and, when
/// the units are stopped, every container sharing a namespace with one of
/// them (transitively): a sidecar left running keeps the old, dead network
/// namespace of a container that was restarted.
fn select(candidates: &[Candidate], purpose: Purpose) -> Vec<&Candidate> {
    let mut chosen: Vec<&Candidate> = candidates.iter().filter(|c| c.uses).collect();
    while purpose.stops() {
        let more: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| !chosen.iter().any(|x| x.id == c.id))
            .filter(|c| c.owners.iter().any(|o| chosen.iter().any(|x| &x.id == o)))
            .collect();
        if more.is_empty() {
            break;
        }
        chosen.extend(more);
    }
    chosen
}

impl DockerWorkload {
    /// Every live container, with whether it uses `dirs` and whose
    /// namespaces it shares.
    fn candidates(&self, dirs: &[PathBuf]) -> Result<Vec<Candidate>, DockerError> {
        let mut out = Vec::new();
        let mut devices: HashMap<String, Option<PathBuf>> = HashMap::new();
        for c in self.docker.list_containers()? {
            let state = c.state.map(|s| s.to_string()).unwrap_or_default();
            let Some(id) = c.id.clone() else { continue };
            if !LIVE_STATES.contains(&state.as_str()) {
                continue;
            }
            let mut sources = Vec::new();
            for m in c.mounts.unwrap_or_default() {
                let Some(src) = m.source.as_deref().filter(|s| !s.is_empty()) else { continue };
                // A bind-type volume's data is its device directory, not
                // the mountpoint the container's mount lists.
                let device = match m.name.as_ref().filter(|_| m.typ.as_deref() == Some("volume")) {
                    Some(name) => self.volume_device(name, &mut devices)?,
                    None => None,
                };
                let src = device.unwrap_or_else(|| PathBuf::from(src));
                sources.push((src.canonicalize().unwrap_or(src), m.rw.unwrap_or(true)));
            }
            let uses = sources.iter().any(|(src, rw)| dirs.iter().any(|d| uses(d, src, *rw)));
            let inspect = match self.docker.inspect_container(&id) {
                Ok(i) => i,
                // Removed since the listing: nothing to hold.
                Err(DockerError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let name = inspect.name.clone().unwrap_or_default().trim_start_matches('/').to_string();
            let hc = inspect.host_config.unwrap_or_default();
            let mut owners = Vec::new();
            for mode in [hc.network_mode.as_ref(), hc.pid_mode.as_ref(), hc.ipc_mode.as_ref()] {
                if let Some(owner) = namespace_owner(mode)
                    && let Ok(o) = self.docker.inspect_container(owner)
                    && let Some(oid) = o.id
                {
                    owners.push(oid);
                }
            }
            out.push(Candidate { id, name, state, uses, owners });
        }
        Ok(out)
    }

    /// The device directory of a bind-type local volume (cached per plan).
    fn volume_device(
        &self,
        name: &str,
        cache: &mut HashMap<String, Option<PathBuf>>,
    ) -> Result<Option<PathBuf>, DockerError> {
        if let Some(d) = cache.get(name) {
            return Ok(d.clone());
        }
        let device = match self.docker.inspect_volume(name) {
            Ok(v) => super::sources::bind_device(&v.options).map(PathBuf::from),
            Err(DockerError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        cache.insert(name.to_string(), device.clone());
        Ok(device)
    }

    /// Holds one unit still for a `Pause` capture: pauses it, or stops it if
    /// it is restarting (a restarting container cannot be frozen, and would
    /// come up during the read). `None`: it is no longer live, or someone
    /// else paused it; either way it is not volsnap's to resume.
    fn hold(&self, u: &StoppedUnit) -> Result<Option<StoppedUnit>, DockerError> {
        match self.docker.pause(&u.id) {
            Ok(()) => Ok(Some(StoppedUnit { paused: true, ..u.clone() })),
            Err(DockerError::Api { message, .. }) if message.contains("already paused") => Ok(None),
            Err(DockerError::Api { message, .. }) if message.contains("is restarting") => {
                self.docker.stop(&u.id, None)?;
                Ok(Some(StoppedUnit { paused: false, ..u.clone() }))
            }
            Err(DockerError::Api { message, .. }) if message.contains("is not running") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Workload for DockerWorkload {
    fn describe(&self, u: &StoppedUnit) -> String {
        format!("container {} ({})", u.name, &u.id[..u.id.len().min(12)])
    }

    fn runtime_name(&self) -> &'static str {
        "Docker"
    }

    fn plan_stop(&self, dirs: &[PathBuf], purpose: Purpose) -> Result<Vec<StoppedUnit>, WorkloadError> {
        let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.canonicalize().unwrap_or_else(|_| d.clone())).collect();
        let candidates = self.candidates(&dirs).map_err(listing_failed)?;
        let mut units = Vec::new();
        let mut deps: HashMap<String, Vec<String>> = HashMap::new();
        for c in select(&candidates, purpose) {
            if c.state == "paused" {
                // Paused by someone else: volsnap never resumes it.
                if purpose != Purpose::Restore {
                    tracing::debug!(
                        container = c.name,
                        "Container already paused (by someone else, or by this capture): left as it is"
                    );
                    continue;
                }
                return Err(WorkloadError::refused(
                    "planning",
                    format!("container {} ({})", c.name, short(&c.id)),
                    "it is paused, and volsnap does not resume containers it did not pause; unpause or stop it, then re-add the restore",
                ));
            }
            deps.insert(c.id.clone(), c.owners.clone());
            units.push(StoppedUnit {
                kind: UNIT_KIND.into(),
                id: c.id.clone(),
                name: c.name.clone(),
                paused: false,
                replicas: None,
            });
        }
        Ok(start_order(units, &deps))
    }

    fn stop(&self, units: &[StoppedUnit], timeout: Option<u32>) -> Result<Vec<String>, WorkloadError> {
        let mut warnings = Vec::new();
        for u in units.iter().rev().filter(|u| u.kind == UNIT_KIND) {
            if let Some(w) = self.docker.stop(&u.id, timeout).map_err(|e| werr("stopping", u, e))? {
                warnings.push(format!("container {} ({}) {w}", u.name, short(&u.id)));
            }
        }
        Ok(warnings)
    }

    fn pause(&self, units: &[StoppedUnit]) -> Result<Vec<StoppedUnit>, WorkloadError> {
        let mut held = Vec::new();
        for u in units.iter().rev().filter(|u| u.kind == UNIT_KIND) {
            match self.hold(u) {
                Ok(Some(h)) => held.push(h),
                Ok(None) => {}
                Err(e) => {
                    // Resume what this call held before failing.
                    let _ = self.start(&held);
                    return Err(werr("pausing", u, e));
                }
            }
        }
        held.reverse();
        Ok(held)
    }

    /// Every unit is tried, in order: one container that cannot start
    /// (its namespace owner is gone, say) does not keep the others down. An
    /// engine that does not answer is the only error (the caller keeps its
    /// journal and retries); what the engine refuses is reported.
    fn start(&self, units: &[StoppedUnit]) -> Result<Vec<String>, WorkloadError> {
        let mut warnings = Vec::new();
        let mut unreachable = None;
        for u in units.iter().filter(|u| u.kind == UNIT_KIND) {
            match self.resume(u) {
                Ok(Some(w)) => warnings.push(w),
                Ok(None) => {}
                Err(e @ DockerError::Unavailable { .. }) => unreachable = Some(werr("starting", u, e)),
                Err(e) => warnings.push(format!("could not resume container {} ({}): {e}", u.name, short(&u.id))),
            }
        }
        match unreachable {
            Some(e) => Err(e),
            None => Ok(warnings),
        }
    }
}

impl DockerWorkload {
    /// Brings one unit back; `Some` is something to report instead.
    fn resume(&self, u: &StoppedUnit) -> Result<Option<String>, DockerError> {
        let shown = format!("container {} ({})", u.name, short(&u.id));
        let c = match self.docker.inspect_container(&u.id) {
            Ok(c) => c,
            Err(DockerError::NotFound { .. }) => {
                return Ok(Some(format!(
                    "{shown} no longer exists (removed or re-created while volsnap had it {}); it was not started",
                    if u.paused { "paused" } else { "stopped" }
                )));
            }
            Err(e) => return Err(e),
        };
        let state = c.state.unwrap_or_default();
        let (running, paused) = (state.running.unwrap_or(false), state.paused.unwrap_or(false));
        if u.paused {
            if !paused {
                return Ok(Some(format!("{shown} was unpaused by someone else while volsnap had it paused")));
            }
            self.docker.unpause(&u.id)?;
        } else {
            if running {
                return Ok(Some(format!("{shown} was started by someone else while volsnap had it stopped")));
            }
            self.docker.start(&u.id)?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(id: &str) -> StoppedUnit {
        StoppedUnit { kind: UNIT_KIND.into(), id: id.into(), name: id.into(), paused: false, replicas: None }
    }

    #[test]
    fn who_uses_a_directory() {
        let d = Path::new("/srv/app/data");
        assert!(uses(d, Path::new("/srv/app/data"), false), "the directory itself, even read-only");
        assert!(uses(d, Path::new("/srv/app/data/sub"), false), "something inside it");
        assert!(uses(d, Path::new("/srv"), true), "a parent, read-write");
        assert!(!uses(d, Path::new("/"), false), "a parent, read-only: left alone");
        assert!(!uses(d, Path::new("/srv/app/database"), true), "a sibling with a common prefix");
    }

    fn candidate(id: &str, uses: bool, owners: &[&str]) -> Candidate {
        Candidate {
            id: id.into(),
            name: id.into(),
            state: "running".into(),
            uses,
            owners: owners.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn namespace_sidecars_go_with_a_stopped_unit_but_not_with_a_paused_one() {
        // side shares app's network, side2 shares side's PID namespace,
        // other is unrelated; only app mounts the data.
        let all = vec![
            candidate("app", true, &[]),
            candidate("side", false, &["app"]),
            candidate("side2", false, &["side"]),
            candidate("other", false, &[]),
        ];
        let ids = |p: Purpose| select(&all, p).into_iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(Purpose::Restore), ["app", "side", "side2"]);
        assert_eq!(ids(Purpose::CaptureStop), ["app", "side", "side2"]);
        assert_eq!(ids(Purpose::Capture), ["app"], "pausing app leaves its namespaces alive");
    }

    #[test]
    fn dependencies_start_first() {
        // b shares a's network, c shares b's PID namespace; d is independent.
        let deps: HashMap<String, Vec<String>> =
            [("b".into(), vec!["a".into()]), ("c".into(), vec!["b".into(), "zz".into()])].into_iter().collect();
        let order: Vec<String> =
            start_order(vec![unit("c"), unit("d"), unit("b"), unit("a")], &deps).into_iter().map(|u| u.id).collect();
        let pos = |x: &str| order.iter().position(|o| o == x).unwrap();
        assert!(pos("a") < pos("b") && pos("b") < pos("c"), "{order:?}");
        assert_eq!(order.len(), 4);
    }
}
