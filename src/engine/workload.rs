//! The workload behind a volume: what a restore stops before the swap and
//! starts again after it.
//!
//! Restore is written against this trait so the runtimes slot in without
//! touching the restore engine: files mode without Docker has no workload
//! ([`NoWorkload`]); the Docker integration and the Kubernetes front-end
//! implement it for containers and for scaled Deployments/StatefulSets.
//!
//! Stopping is split in two so the journal can record, BEFORE anything is
//! stopped, exactly which units will be: [`Workload::plan_stop`] names them,
//! the journal stores the list, then [`Workload::stop`] acts. After a crash
//! the recovery sweep calls [`Workload::start`] with the recorded list, and
//! never starts a unit it did not stop.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One thing a restore stopped: a container, a scaled workload, ...
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoppedUnit {
    /// Which implementation owns it (`docker`, `test-marker`, ...).
    pub kind: String,
    /// Stable identifier (container ID, object UID, path).
    pub id: String,
    /// Human-readable name, for logs and status messages.
    pub name: String,
    /// Paused (frozen) rather than stopped: resuming means unpausing.
    #[serde(default)]
    pub paused: bool,
    /// A workload stopped by scaling it to zero (a Deployment, a
    /// StatefulSet): the replica count it had, which starting it restores.
    /// Journaled with the unit, so recovery after a crash scales it back to
    /// what it was, not to a guess.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

/// Why stopping or starting failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {unit}: {message}")]
pub struct WorkloadError {
    /// `stopping` or `starting`.
    pub op: &'static str,
    /// The unit's name.
    pub unit: String,
    /// What went wrong.
    pub message: String,
    /// The runtime could not be asked at all (Docker does not answer): the
    /// units are in whatever state they were, so the caller keeps its
    /// journal and waits for the runtime instead of failing for good.
    pub unreachable: bool,
}

impl WorkloadError {
    /// The runtime answered and refused.
    pub fn refused(op: &'static str, unit: impl Into<String>, message: impl Into<String>) -> WorkloadError {
        WorkloadError { op, unit: unit.into(), message: message.into(), unreachable: false }
    }

    /// The runtime could not be reached.
    pub fn unreachable(op: &'static str, unit: impl Into<String>, message: impl Into<String>) -> WorkloadError {
        WorkloadError { op, unit: unit.into(), message: message.into(), unreachable: true }
    }
}

/// Why the workload is being held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A capture reads the directories while they are paused: units already
    /// held still by someone else are consistent as they are and are left
    /// alone.
    Capture,
    /// A capture reads the directories while they are stopped: as
    /// [`Purpose::Capture`], and the units that share a stopped unit's
    /// namespaces are stopped with it (they would be left in a namespace
    /// that is gone when it starts again).
    CaptureStop,
    /// A restore swaps the directories: every unit using them must be
    /// stopped and started by volsnap, or the restore must not happen; the
    /// units sharing their namespaces go with them.
    Restore,
}

impl Purpose {
    /// Whether the units are stopped (and so restarted, with new
    /// namespaces), not paused.
    pub fn stops(self) -> bool {
        self != Purpose::Capture
    }
}

/// Stops and starts whatever uses a set of directories.
pub trait Workload: Send + Sync {
    /// The live units (running, or about to run again: a container in
    /// `restarting`) that use any of `dirs`, in start order (a unit after
    /// the units it depends on); when `purpose` stops them, also the units
    /// that share their namespaces. Units held by someone else (a
    /// container paused by an operator) are never included: volsnap only
    /// ever resumes what it paused or stopped itself. For a restore they
    /// are an error, since they would keep the replaced data in use.
    fn plan_stop(&self, dirs: &[PathBuf], purpose: Purpose) -> Result<Vec<StoppedUnit>, WorkloadError>;
    /// Stops `units` (as planned), in reverse start order, each given its
    /// own stop timeout (or `timeout_seconds` when set). Returns what the
    /// operator should know (a unit that had to be killed).
    fn stop(&self, units: &[StoppedUnit], timeout_seconds: Option<u32>) -> Result<Vec<String>, WorkloadError>;
    /// Whether [`Workload::pause`] can freeze units. A runtime that cannot
    /// (one that only scales workloads) says so: a capture with
    /// `quiesce: Pause` then fails before reading rather than read unfrozen.
    fn can_pause(&self) -> bool {
        true
    }
    /// Freezes `units` without stopping them (capture with `quiesce: Pause`).
    /// Returns the units it paused: one found already paused (by someone
    /// else, since the plan) is not volsnap's to unpause later.
    fn pause(&self, units: &[StoppedUnit]) -> Result<Vec<StoppedUnit>, WorkloadError>;
    /// How messages name a unit (`container app (1f2e3d4c5b6a)`).
    fn describe(&self, unit: &StoppedUnit) -> String {
        format!("{} {}", unit.kind, unit.name)
    }
    /// How messages name the runtime (`Docker`).
    fn runtime_name(&self) -> &'static str {
        "the runtime"
    }
    /// The condition reason when the runtime does not answer (files mode:
    /// `DockerUnavailable`, which scripts match on).
    fn unavailable_reason(&self) -> &'static str {
        crate::core::reasons::DOCKER_UNAVAILABLE
    }
    /// Brings `units` back, in order: unpauses the paused ones, starts the
    /// stopped ones. Returns what the operator should know (a unit removed
    /// or re-created meanwhile is reported, not started; one already resumed
    /// by someone else is reported). `Err` means the runtime could not be
    /// asked at all: the caller keeps its journal and tries again later.
    fn start(&self, units: &[StoppedUnit]) -> Result<Vec<String>, WorkloadError>;
}

/// Files mode without a container runtime: nothing runs on the volumes as
/// far as volsnap can tell, so nothing is stopped.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoWorkload;

impl Workload for NoWorkload {
    fn plan_stop(&self, _dirs: &[PathBuf], _purpose: Purpose) -> Result<Vec<StoppedUnit>, WorkloadError> {
        Ok(Vec::new())
    }

    /// Units recorded by a runtime this process cannot reach (a journal
    /// written while Docker answered) cannot be confirmed down: an error,
    /// so recovery moves no directory under them until it can.
    fn stop(&self, units: &[StoppedUnit], _timeout: Option<u32>) -> Result<Vec<String>, WorkloadError> {
        match units.first() {
            None => Ok(Vec::new()),
            Some(u) => Err(WorkloadError::unreachable(
                "stopping",
                format!("{} {}", u.kind, u.name),
                "the runtime that runs it is not reachable now",
            )),
        }
    }

    fn pause(&self, _units: &[StoppedUnit]) -> Result<Vec<StoppedUnit>, WorkloadError> {
        Ok(Vec::new())
    }

    /// Units recorded by a runtime this process cannot reach (Docker down
    /// at start-up) are an error, so the journal keeps them for later.
    fn start(&self, units: &[StoppedUnit]) -> Result<Vec<String>, WorkloadError> {
        match units.first() {
            None => Ok(Vec::new()),
            Some(u) => Err(WorkloadError::unreachable(
                "starting",
                format!("{} {}", u.kind, u.name),
                "the runtime that stopped it is not reachable now",
            )),
        }
    }
}

/// Test builds only (`--features fault-injection`): a workload made of
/// marker files, so the crash tests can check that a restore stops the
/// workload and that recovery starts it again. With
/// `VOLSNAP_TEST_WORKLOAD_DIR=D`, a unit is "running" while `D/running`
/// exists; stopping renames it to `D/stopped`, starting renames it back, and
/// each action is appended to `D/events` (`stop` / `start`).
#[cfg(feature = "fault-injection")]
#[derive(Clone, Debug)]
pub struct MarkerWorkload {
    /// The directory holding the marker.
    pub dir: PathBuf,
}

#[cfg(feature = "fault-injection")]
impl MarkerWorkload {
    /// From `VOLSNAP_TEST_WORKLOAD_DIR`, if set.
    pub fn from_env() -> Option<MarkerWorkload> {
        std::env::var_os("VOLSNAP_TEST_WORKLOAD_DIR").map(|d| MarkerWorkload { dir: d.into() })
    }

    fn err(op: &'static str, e: std::io::Error) -> WorkloadError {
        WorkloadError::refused(op, "test-marker", e.to_string())
    }

    fn event(&self, what: &str) -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("events"))?;
        writeln!(f, "{what}")?;
        f.sync_all()
    }
}

#[cfg(feature = "fault-injection")]
impl Workload for MarkerWorkload {
    fn plan_stop(&self, _dirs: &[PathBuf], _purpose: Purpose) -> Result<Vec<StoppedUnit>, WorkloadError> {
        Ok(if self.dir.join("running").exists() {
            vec![StoppedUnit {
                kind: "test-marker".into(),
                id: self.dir.display().to_string(),
                name: "marker".into(),
                paused: false,
                replicas: None,
            }]
        } else {
            Vec::new()
        })
    }

    fn stop(&self, units: &[StoppedUnit], _timeout: Option<u32>) -> Result<Vec<String>, WorkloadError> {
        if units.iter().any(|u| u.kind == "test-marker") && self.dir.join("running").exists() {
            self.event("stop").map_err(|e| Self::err("stopping", e))?;
            std::fs::rename(self.dir.join("running"), self.dir.join("stopped"))
                .map_err(|e| Self::err("stopping", e))?;
        }
        Ok(Vec::new())
    }

    fn pause(&self, units: &[StoppedUnit]) -> Result<Vec<StoppedUnit>, WorkloadError> {
        self.stop(units, None)?;
        Ok(units.to_vec())
    }

    fn start(&self, units: &[StoppedUnit]) -> Result<Vec<String>, WorkloadError> {
        if units.iter().any(|u| u.kind == "test-marker") && self.dir.join("stopped").exists() {
            std::fs::rename(self.dir.join("stopped"), self.dir.join("running"))
                .map_err(|e| Self::err("starting", e))?;
            self.event("start").map_err(|e| Self::err("starting", e))?;
        }
        Ok(Vec::new())
    }
}

/// The workload files mode uses without a container runtime: the test
/// marker workload when a test asks for it, otherwise none.
pub fn without_runtime() -> Box<dyn Workload> {
    #[cfg(feature = "fault-injection")]
    if let Some(w) = MarkerWorkload::from_env() {
        return Box::new(w);
    }
    Box::new(NoWorkload)
}
