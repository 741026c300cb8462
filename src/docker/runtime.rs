//! The Docker Engine as the reconciler's runtime (files mode): connecting as
//! `--docker` says (and again later, when it was down), resolving
//! `source.container` / `source.volume`, and the workload restores and
//! quiesced captures act on.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::quiesce::DockerWorkload;
use super::{DockerClient, DockerError, DockerMode, sources};
use crate::api::SnapshotSource;
use crate::core::reasons;
use crate::engine::paths::{PathPolicy, Resolution};
use crate::engine::workload::{self, Workload};
use crate::reconcile::runtime::{Runtime, Unresolved, unsupported};

/// How often a source that needs Docker may trigger a reconnect attempt.
const RECONNECT_EVERY: Duration = Duration::from_secs(10);

/// Docker as the runtime, reconnecting when it was lost.
pub struct DockerRuntime {
    mode: DockerMode,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The engine, while connected.
    client: Option<Arc<DockerClient>>,
    /// Last reconnect attempt while it was down.
    attempt: Option<Instant>,
    /// What restores stop and captures quiesce.
    workload: Arc<dyn Workload>,
}

impl DockerRuntime {
    /// Connects at start-up; logs once, clearly, when running without Docker.
    pub fn connect(mode: DockerMode) -> DockerRuntime {
        let client = match DockerClient::connect(&mode) {
            Ok(Some(d)) => {
                let (version, api) = d.version();
                tracing::info!(endpoint = d.endpoint(), version, api_version = api, "Connected to Docker Engine");
                Some(Arc::new(d))
            }
            Ok(None) => {
                tracing::info!(
                    "Docker integration is off (--docker off): container and volume sources fail with DockerUnavailable"
                );
                None
            }
            Err(e) if mode == DockerMode::Auto => {
                tracing::info!(
                    "Running without Docker: {e}. Container and volume sources fail with DockerUnavailable until it answers"
                );
                None
            }
            Err(e) => {
                tracing::error!("{e}. Container and volume sources fail with DockerUnavailable until it answers");
                None
            }
        };
        let workload = workload_for(client.as_ref());
        DockerRuntime { mode, inner: Mutex::new(Inner { client, attempt: None, workload }) }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client, reconnecting (at most every 10 s) when it was
    /// unreachable. `Err` is the message for `DockerUnavailable`.
    fn client(&self) -> Result<Arc<DockerClient>, String> {
        let mut inner = self.inner();
        if let Some(d) = &inner.client {
            return Ok(d.clone());
        }
        if self.mode == DockerMode::Off {
            return Err("the Docker integration is off (--docker off)".into());
        }
        if inner.attempt.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
            return Err(format!("Docker is not reachable at {}", self.mode.endpoint()));
        }
        inner.attempt = Some(Instant::now());
        match DockerClient::connect(&self.mode) {
            Ok(Some(d)) => {
                tracing::info!(endpoint = d.endpoint(), "Connected to Docker Engine");
                let d = Arc::new(d);
                inner.client = Some(d.clone());
                inner.workload = workload_for(Some(&d));
                Ok(d)
            }
            Ok(None) => Err("the Docker integration is off (--docker off)".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Forgets a client whose engine stopped answering, so the next use
    /// reconnects.
    fn failed(&self, e: &DockerError) {
        let mut inner = self.inner();
        if matches!(e, DockerError::Unavailable { .. }) && inner.client.take().is_some() {
            tracing::warn!("{e}; running without Docker until it answers again");
            inner.workload = workload_for(None);
        }
    }
}

impl Runtime for DockerRuntime {
    fn resolve(
        &self,
        _namespace: &str,
        src: &SnapshotSource,
        policy: &PathPolicy,
        verify_live: bool,
    ) -> Result<Resolution, Unresolved> {
        if let Some(u) = unsupported(src) {
            return Err(u);
        }
        let docker = self.client().map_err(|why| Unresolved {
            reason: reasons::DOCKER_UNAVAILABLE,
            message: format!(
                "{why}; this source needs Docker. The daemon retries at every resync until Docker answers"
            ),
        })?;
        let resolved = match (&src.container, &src.volume) {
            (Some(c), _) => sources::resolve_container(&docker, policy, c, verify_live),
            (_, Some(v)) => sources::resolve_volume(&docker, policy, v),
            _ => return Err(Unresolved { reason: reasons::UNSUPPORTED_SOURCE, message: "unsupported source".into() }),
        };
        resolved.map_err(|e| match e {
            DockerError::NotFound { .. } => Unresolved {
                reason: reasons::SOURCE_NOT_FOUND,
                message: format!("{e} (asked Docker at {})", docker.endpoint()),
            },
            DockerError::Unavailable { .. } => {
                self.failed(&e);
                Unresolved {
                    reason: reasons::DOCKER_UNAVAILABLE,
                    message: format!("{e}; the daemon retries at every resync"),
                }
            }
            e => Unresolved { reason: reasons::DOCKER_ERROR, message: e.to_string() },
        })
    }

    /// Ready when Docker is connected, or there is none to ask (`--docker
    /// off`, or `auto` on a host with no `DOCKER_HOST` and no local socket).
    /// When Docker is configured or present but does not answer, containers
    /// may be using the directories.
    fn workload_ready(&self) -> Result<(), String> {
        #[cfg(feature = "fault-injection")]
        if workload::MarkerWorkload::from_env().is_some() {
            return Ok(());
        }
        let absent = match &self.mode {
            DockerMode::Off => true,
            DockerMode::Auto => {
                std::env::var_os("DOCKER_HOST").is_none() && !std::path::Path::new(super::LOCAL_SOCKET).exists()
            }
            DockerMode::Url(_) => false,
        };
        if absent || self.inner().client.is_some() {
            return Ok(());
        }
        self.client().map(|_| ()).map_err(|why| {
            format!(
                "{why}; containers may be using these directories, so volsnap waits for Docker rather than act without stopping them. The daemon retries at every resync"
            )
        })
    }

    fn workload(&self) -> Arc<dyn Workload> {
        self.inner().workload.clone()
    }

    fn trusted_root(&self) -> Option<PathBuf> {
        self.inner().client.as_ref().map(|d| d.volume_root().to_path_buf())
    }

    fn reconnect(&self) {
        if self.mode != DockerMode::Off && self.inner().client.is_none() {
            let _ = self.client();
        }
    }
}

/// The workload restores and captures quiesce: the test marker workload
/// when a test asks for it, Docker when connected, otherwise nothing.
fn workload_for(docker: Option<&Arc<DockerClient>>) -> Arc<dyn Workload> {
    #[cfg(feature = "fault-injection")]
    if let Some(w) = workload::MarkerWorkload::from_env() {
        return Arc::new(w);
    }
    match docker {
        Some(d) => Arc::new(DockerWorkload::new(d.clone())),
        None => Arc::from(workload::without_runtime()),
    }
}
