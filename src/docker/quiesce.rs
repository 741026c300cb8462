//! Quiescing the containers that use a volume, and bringing them back.
//!
//! [`DockerWorkload`] finds every running (or paused) container that mounts
//! any of a set of host directories: all containers are inspected, not just
//! the one a snapshot names, because another container sharing the volume
//! writes to it just the same. Units are listed in start order: a container
//! that shares another's network, PID or IPC namespace (`container:X`)
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
    WorkloadError { op, unit: format!("container {} ({})", unit.name, short(&unit.id)), message: e.to_string() }
}

impl Workload for DockerWorkload {
    fn plan_stop(&self, dirs: &[PathBuf], purpose: Purpose) -> Result<Vec<StoppedUnit>, WorkloadError> {
        let fail = |e: DockerError| WorkloadError { op: "listing", unit: "containers".into(), message: e.to_string() };
        let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.canonicalize().unwrap_or_else(|_| d.clone())).collect();
        let mut units = Vec::new();
        let mut deps: HashMap<String, Vec<String>> = HashMap::new();
        for c in self.docker.list_containers().map_err(fail)? {
            let state = c.state.map(|s| s.to_string()).unwrap_or_default();
            if state != "running" && state != "paused" {
                continue;
            }
            let uses = c.mounts.unwrap_or_default().iter().any(|m| {
                let Some(src) = m.source.as_deref().filter(|s| !s.is_empty()) else { return false };
                let src = Path::new(src).canonicalize().unwrap_or_else(|_| PathBuf::from(src));
                dirs.iter().any(|d| uses(d, &src, m.rw.unwrap_or(true)))
            });
            let Some(id) = c.id.clone() else { continue };
            if !uses {
                continue;
            }
            let inspect = self.docker.inspect_container(&id).map_err(fail)?;
            let name = inspect.name.clone().unwrap_or_default().trim_start_matches('/').to_string();
            if state == "paused" {
                // Paused by someone else: volsnap never resumes it.
                match purpose {
                    Purpose::Capture => {
                        tracing::info!(container = name, "Container already paused by someone else: left as it is");
                        continue;
                    }
                    Purpose::Restore => {
                        return Err(WorkloadError {
                            op: "planning",
                            unit: format!("container {name} ({})", short(&id)),
                            message: "it is paused, and volsnap does not resume containers it did not pause; unpause or stop it, then re-add the restore".into(),
                        });
                    }
                }
            }
            let hc = inspect.host_config.unwrap_or_default();
            let mut needs = Vec::new();
            for mode in [hc.network_mode.as_ref(), hc.pid_mode.as_ref(), hc.ipc_mode.as_ref()] {
                if let Some(owner) = namespace_owner(mode)
                    && let Ok(o) = self.docker.inspect_container(owner)
                    && let Some(oid) = o.id
                {
                    needs.push(oid);
                }
            }
            deps.insert(id.clone(), needs);
            units.push(StoppedUnit { kind: UNIT_KIND.into(), id, name, paused: false });
        }
        Ok(start_order(units, &deps))
    }

    fn stop(&self, units: &[StoppedUnit]) -> Result<(), WorkloadError> {
        for u in units.iter().rev().filter(|u| u.kind == UNIT_KIND) {
            self.docker.stop(&u.id).map_err(|e| werr("stopping", u, e))?;
        }
        Ok(())
    }

    fn pause(&self, units: &[StoppedUnit]) -> Result<Vec<StoppedUnit>, WorkloadError> {
        let mut paused = Vec::new();
        for u in units.iter().rev().filter(|u| u.kind == UNIT_KIND) {
            match self.docker.pause(&u.id) {
                Ok(()) => paused.push(u.clone()),
                // Paused by someone else since the plan: it stays as it is,
                // and resuming it is then not volsnap's business either.
                Err(DockerError::Api { message, .. }) if message.contains("already paused") => {}
                Err(e) => {
                    // Resume what this call paused before failing.
                    let _ = self.start(&paused);
                    return Err(werr("pausing", u, e));
                }
            }
        }
        paused.reverse();
        Ok(paused)
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
        StoppedUnit { kind: UNIT_KIND.into(), id: id.into(), name: id.into(), paused: false }
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
