//! The runtime seam: everything that differs between a single Docker host
//! and a cluster, behind one trait.
//!
//! The reconciler resolves `source.paths` itself (the allowed roots are the
//! same everywhere) and adopts `source.archive` itself; every source that
//! names a workload (a container, a named volume, a PVC) is the runtime's.
//! Files mode plugs in Docker ([`crate::docker::runtime::DockerRuntime`]) or
//! [`NoRuntime`]; the Kubernetes controller plugs in PVCs and scaled
//! Deployments/StatefulSets.

use std::path::PathBuf;
use std::sync::Arc;

use crate::api::SnapshotSource;
use crate::core::reasons;
use crate::engine::paths::{PathPolicy, Resolution};
use crate::engine::workload::{self, Workload};

/// Why a source cannot be resolved now: a condition reason and a message a
/// person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// CamelCase reason (`DockerUnavailable`, `SourceNotFound`, ...).
    pub reason: &'static str,
    /// What and why.
    pub message: String,
}

/// What a runtime provides to the reconciler.
pub trait Runtime: Send + Sync {
    /// The host directories of a source that names a workload (not
    /// `paths`, not `archive`) in `namespace`, each checked against
    /// `policy`, and every volume that will not be captured with the
    /// reason. `verify_live`: a capture that reads while the workload runs
    /// checks that what it opened is what the workload has mounted.
    fn resolve(
        &self,
        namespace: &str,
        source: &SnapshotSource,
        policy: &PathPolicy,
        verify_live: bool,
    ) -> Result<Resolution, Unresolved>;

    /// Whether the workload behind host directories can be acted on now.
    /// A runtime that is configured but does not answer says why: a restore
    /// or a quiesced capture then waits rather than act without stopping
    /// what may be using the directories.
    fn workload_ready(&self) -> Result<(), String>;

    /// The workload captures quiesce and restores stop (the runtime's
    /// current view: it changes when the runtime reconnects).
    fn workload(&self) -> Arc<dyn Workload>;

    /// A directory, besides the allowed roots, that restore targets may lie
    /// beneath (Docker's volume root).
    fn trusted_root(&self) -> Option<PathBuf>;

    /// Journals name units of this runtime: if it was lost, try to
    /// reconnect (rate-limited), so recovery can bring them back.
    fn reconnect(&self) {}
}

/// No container runtime: only `source.paths` (and adoption) are served, and
/// nothing is stopped or paused.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRuntime;

impl Runtime for NoRuntime {
    fn resolve(&self, _: &str, source: &SnapshotSource, _: &PathPolicy, _: bool) -> Result<Resolution, Unresolved> {
        Err(unsupported(source).unwrap_or_else(|| Unresolved {
            reason: reasons::DOCKER_UNAVAILABLE,
            message: "this source needs Docker, and volsnap runs without it".into(),
        }))
    }

    fn workload_ready(&self) -> Result<(), String> {
        Ok(())
    }

    fn workload(&self) -> Arc<dyn Workload> {
        Arc::from(workload::without_runtime())
    }

    fn trusted_root(&self) -> Option<PathBuf> {
        None
    }
}

/// Sources a host runtime never serves: a PVC is the Kubernetes
/// controller's.
pub fn unsupported(source: &SnapshotSource) -> Option<Unresolved> {
    source.persistent_volume_claim.is_some().then(|| Unresolved {
        reason: reasons::UNSUPPORTED_SOURCE,
        message: "source.persistentVolumeClaim is served by the Kubernetes controller (volsnap controller), not in files mode".into(),
    })
}
