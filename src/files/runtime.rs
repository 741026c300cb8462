//! Files mode's view of the container runtime: connecting to Docker as
//! `--docker` says (and again later, when it was down), resolving
//! `source.container` / `source.volume`, and the workload restores and
//! quiesced captures act on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Daemon, Result2};
use crate::api::SnapshotSource;
use crate::api::{Kind, Object};
use crate::core::{conditions, reasons, snapshot as snap, types};
use crate::docker::quiesce::DockerWorkload;
use crate::docker::{DockerClient, DockerError, DockerMode, sources};
use crate::engine::paths::Resolution;
use crate::engine::workload::{self, Workload};

/// How often an object that needs Docker may trigger a reconnect attempt.
const RECONNECT_EVERY: Duration = Duration::from_secs(10);

/// Connects at start-up; logs once, clearly, when running without Docker.
pub(super) fn connect(mode: &DockerMode) -> Option<Arc<DockerClient>> {
    match DockerClient::connect(mode) {
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
        Err(e) if *mode == DockerMode::Auto => {
            tracing::info!(
                "Running without Docker: {e}. Container and volume sources fail with DockerUnavailable until it answers"
            );
            None
        }
        Err(e) => {
            tracing::error!("{e}. Container and volume sources fail with DockerUnavailable until it answers");
            None
        }
    }
}

/// The workload restores and captures quiesce: the test marker workload
/// when a test asks for it, Docker when connected, otherwise nothing.
pub(super) fn workload_for(docker: Option<&Arc<DockerClient>>) -> Arc<dyn Workload> {
    #[cfg(feature = "fault-injection")]
    if let Some(w) = workload::MarkerWorkload::from_env() {
        return Arc::new(w);
    }
    match docker {
        Some(d) => Arc::new(DockerWorkload::new(d.clone())),
        None => Arc::from(workload::without_runtime()),
    }
}

/// Why a Docker source cannot be resolved: a condition reason and message.
pub(super) type SourceError = (&'static str, String);

impl Daemon {
    /// The Docker client, reconnecting (at most every 10 s) when it was
    /// unreachable. `Err` is the message for `DockerUnavailable`.
    pub(super) fn docker(&mut self) -> Result<Arc<DockerClient>, String> {
        if let Some(d) = &self.docker {
            return Ok(d.clone());
        }
        let endpoint = self.cfg.docker.endpoint();
        if self.cfg.docker == DockerMode::Off {
            return Err("the Docker integration is off (--docker off)".into());
        }
        if self.docker_attempt.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
            return Err(format!("Docker is not reachable at {endpoint}"));
        }
        self.docker_attempt = Some(Instant::now());
        match DockerClient::connect(&self.cfg.docker) {
            Ok(Some(d)) => {
                tracing::info!(endpoint = d.endpoint(), "Connected to Docker Engine");
                let d = Arc::new(d);
                self.docker = Some(d.clone());
                self.workload = workload_for(Some(&d));
                Ok(d)
            }
            Ok(None) => Err("the Docker integration is off (--docker off)".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether the workload behind host directories can be acted on: Docker
    /// is connected, or there is none to ask (`--docker off`, or `auto` on a
    /// host with no `DOCKER_HOST` and no local socket). When Docker is
    /// configured or present but does not answer, containers may be using
    /// the directories: a restore or a quiesced capture must wait for it
    /// rather than proceed without stopping them. `Err` is the message.
    pub(super) fn workload_ready(&mut self) -> Result<(), String> {
        #[cfg(feature = "fault-injection")]
        if workload::MarkerWorkload::from_env().is_some() {
            return Ok(());
        }
        let absent = match &self.cfg.docker {
            DockerMode::Off => true,
            DockerMode::Auto => {
                std::env::var_os("DOCKER_HOST").is_none() && !std::path::Path::new(crate::docker::LOCAL_SOCKET).exists()
            }
            DockerMode::Url(_) => false,
        };
        if self.docker.is_some() || absent {
            return Ok(());
        }
        self.docker().map(|_| ()).map_err(|why| {
            format!(
                "{why}; containers may be using these directories, so volsnap waits for Docker rather than act without stopping them. The daemon retries at every resync"
            )
        })
    }

    /// Forgets a client whose engine stopped answering, so the next use
    /// reconnects.
    pub(super) fn docker_failed(&mut self, e: &DockerError) {
        if matches!(e, DockerError::Unavailable { .. }) && self.docker.take().is_some() {
            tracing::warn!("{e}; running without Docker until it answers again");
            self.workload = workload_for(None);
        }
    }

    /// Journal rows (held containers, interrupted restores) wait for the
    /// runtime that stopped them: reconnect (at most every 10 s) when it was
    /// lost, so the sweep can bring them back as soon as it answers.
    pub(super) fn reconnect_for_journals(&mut self) -> Result2<()> {
        if self.docker.is_none()
            && self.cfg.docker != DockerMode::Off
            && (!self.store.quiesce_rows()?.is_empty() || !self.store.journal_rows()?.is_empty())
        {
            let _ = self.docker();
        }
        Ok(())
    }

    /// Resumes what captures left paused or stopped (a crash, or Docker not
    /// answering when they ended), except captures running here, and says
    /// so in the snapshots that waited for it.
    pub(super) fn recover_quiesced(&mut self) -> Result2<()> {
        let running = &self.running;
        let resumed = crate::engine::quiesce::recover(&self.store, &*self.workload, &|uid| running.contains_key(uid))?;
        for r in resumed {
            for w in &r.warnings {
                tracing::warn!(snapshot = r.snapshot, "{w}");
            }
            let Some(mut stored) = self.store.object_by_uid(&r.operation_uid)? else { continue };
            let Ok(Object::Snapshot(mut s)) = Object::from_stored(Kind::Snapshot, stored.object.clone()) else {
                continue;
            };
            let generation = s.metadata.generation.unwrap_or(1);
            let st = s.status.get_or_insert_with(Default::default);
            let waited = conditions::get(&st.conditions, types::PROGRESSING)
                .is_some_and(|c| c.reason == reasons::DOCKER_UNAVAILABLE);
            if waited {
                snap::resumed(st, generation, crate::api::Time::now(), &r.warnings);
                stored.object = Object::Snapshot(s).to_value();
                self.save(&stored)?;
            }
        }
        Ok(())
    }

    /// Volumes of a snapshot source: paths through the path policy,
    /// containers and named volumes through Docker.
    /// `verify_live`: a capture that reads while the containers run checks
    /// their binds against what they have mounted (see
    /// [`sources::resolve_container`]).
    pub(super) fn resolve_source(
        &mut self,
        src: &SnapshotSource,
        verify_live: bool,
    ) -> Result2<Result<Resolution, SourceError>> {
        if let Some(paths) = &src.paths {
            return Ok(Ok(self.policy.resolve(paths)));
        }
        let docker = match self.docker() {
            Ok(d) => d,
            Err(why) => {
                return Ok(Err((
                    reasons::DOCKER_UNAVAILABLE,
                    format!("{why}; this source needs Docker. The daemon retries at every resync until Docker answers"),
                )));
            }
        };
        let resolved = match (&src.container, &src.volume) {
            (Some(c), _) => sources::resolve_container(&docker, &self.policy, c, verify_live),
            (_, Some(v)) => sources::resolve_volume(&docker, &self.policy, v),
            _ => return Ok(Err((reasons::UNSUPPORTED_SOURCE, "unsupported source".into()))),
        };
        Ok(match resolved {
            Ok(r) => Ok(r),
            Err(e @ DockerError::NotFound { .. }) => {
                Err((reasons::SOURCE_NOT_FOUND, format!("{e} (asked Docker at {})", docker.endpoint())))
            }
            Err(e @ DockerError::Unavailable { .. }) => {
                self.docker_failed(&e);
                Err((reasons::DOCKER_UNAVAILABLE, format!("{e}; the daemon retries at every resync")))
            }
            Err(e) => Err((reasons::DOCKER_ERROR, e.to_string())),
        })
    }
}
