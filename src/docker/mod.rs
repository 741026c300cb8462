//! The Docker Engine integration of files mode (single host): container and
//! named-volume sources, quiescing the containers that use a volume
//! (`Pause`/`Stop`), and restarting them after a restore.
//!
//! Everything goes through the Engine API (`bollard`). The engine in Debian
//! (20.10, API 1.41) is older than bollard's default API version, so the
//! client negotiates the version when it connects.
//!
//! The capture and restore engines are synchronous (they run on blocking
//! threads), so [`DockerClient`] is a small synchronous facade: it owns a
//! single-threaded Tokio runtime and runs each API call to completion on it.
//!
//! - [`sources`]: `source.container` / `source.volume` → volumes to capture
//!   and volumes skipped with a reason.
//! - [`quiesce`]: which containers use a set of directories, and the
//!   [`crate::engine::workload::Workload`] implementation that pauses, stops
//!   and starts them in dependency order, never acting on a stale ID.
//! - [`runtime`]: all of it as the reconciler's
//!   [`Runtime`](crate::reconcile::Runtime), reconnecting when Docker was lost.

pub mod quiesce;
pub mod runtime;
pub mod sources;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, ContainerSummary, Volume};
use bollard::query_parameters::{ListContainersOptions, StopContainerOptions};

/// How long connecting (and negotiating the API version) may take before
/// Docker counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Seconds a container gets to stop before Docker kills it when neither the
/// container (`StopTimeout`, compose `stop_grace_period`) nor the object
/// says otherwise: Docker's own default.
pub const DEFAULT_STOP_TIMEOUT_SECS: u32 = 10;
/// Per-request timeout of the client. A stop gets its grace period on top.
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Exit code of a process killed by SIGKILL (128 + 9).
const KILLED_EXIT_CODE: i64 = 137;
/// The local socket `auto` tries when `DOCKER_HOST` is not set.
pub const LOCAL_SOCKET: &str = "/var/run/docker.sock";

/// `--docker auto|off|URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerMode {
    /// `DOCKER_HOST`, or the local socket; running without Docker when
    /// neither answers.
    Auto,
    /// Never talk to Docker.
    Off,
    /// This endpoint (`unix:///path`, `tcp://host:port`, `http://...`).
    Url(String),
}

impl DockerMode {
    /// Parses the flag's value.
    pub fn parse(s: &str) -> DockerMode {
        match s {
            "auto" | "" => DockerMode::Auto,
            "off" => DockerMode::Off,
            url => DockerMode::Url(url.to_string()),
        }
    }

    /// The endpoint this mode would use (for messages).
    pub fn endpoint(&self) -> String {
        match self {
            DockerMode::Auto => std::env::var("DOCKER_HOST").unwrap_or_else(|_| format!("unix://{LOCAL_SOCKET}")),
            DockerMode::Off => "off".into(),
            DockerMode::Url(u) => u.clone(),
        }
    }
}

/// Errors talking to Docker.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine does not answer (or `--docker off`).
    #[error("Docker is not reachable at {endpoint}: {message}")]
    Unavailable {
        /// Where it was looked for.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// A container or volume does not exist.
    #[error("{what} {name:?} does not exist")]
    NotFound {
        /// `container` or `volume`.
        what: &'static str,
        /// The name or ID asked for.
        name: String,
    },
    /// Any other API error.
    #[error("Docker API: {op}: {message}")]
    Api {
        /// The call.
        op: String,
        /// The engine's message.
        message: String,
    },
}

/// A connected Docker Engine, with a synchronous API.
pub struct DockerClient {
    client: bollard::Docker,
    rt: BackgroundRuntime,
    endpoint: String,
    version: String,
    api_version: String,
    volume_root: PathBuf,
}

impl std::fmt::Debug for DockerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerClient").field("endpoint", &self.endpoint).field("version", &self.version).finish()
    }
}

impl DockerClient {
    /// Connects as `mode` says and negotiates the API version. `Ok(None)`
    /// for `--docker off`; `Unavailable` when nothing answers.
    pub fn connect(mode: &DockerMode) -> Result<Option<DockerClient>, DockerError> {
        if *mode == DockerMode::Off {
            return Ok(None);
        }
        let endpoint = mode.endpoint();
        let unavailable = |message: String| DockerError::Unavailable { endpoint: endpoint.clone(), message };
        let rt = BackgroundRuntime(Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| unavailable(format!("cannot start a runtime: {e}")))?,
        ));
        let client = if let Some(path) = endpoint.strip_prefix("unix://") {
            bollard::Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else {
            bollard::Docker::connect_with_host(&endpoint)
        }
        .map_err(|e| unavailable(e.to_string()))?;
        let connected = run_on(rt.get(), async {
            let client = tokio::time::timeout(CONNECT_TIMEOUT, client.negotiate_version())
                .await
                .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))?
                .map_err(|e| e.to_string())?;
            let version = tokio::time::timeout(CONNECT_TIMEOUT, client.version())
                .await
                .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))?
                .map_err(|e| e.to_string())?;
            let info = tokio::time::timeout(CONNECT_TIMEOUT, client.info())
                .await
                .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))?
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((client, version, info))
        });
        let (client, version, info) = connected.map_err(unavailable)?;
        let root = PathBuf::from(info.docker_root_dir.unwrap_or_else(|| "/var/lib/docker".into()));
        let volume_root = root.join("volumes");
        let volume_root = volume_root.canonicalize().unwrap_or(volume_root);
        Ok(Some(DockerClient {
            client,
            rt,
            endpoint,
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            volume_root,
        }))
    }

    /// Where the engine answers.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Engine version and API version, for logs.
    pub fn version(&self) -> (&str, &str) {
        (&self.version, &self.api_version)
    }

    /// `<docker root>/volumes`: where local named volumes live. Always
    /// allowed for `source.volume` and named volumes of containers.
    pub fn volume_root(&self) -> &Path {
        &self.volume_root
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.get()
    }

    fn call<T>(&self, op: &str, f: impl Future<Output = Result<T, bollard::errors::Error>>) -> Result<T, DockerError> {
        run_on(self.rt(), f).map_err(|e| self.error(op, e))
    }

    fn error(&self, op: &str, e: bollard::errors::Error) -> DockerError {
        match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => {
                DockerError::Api { op: op.into(), message }
            }
            e if is_transport_failure(&e) => {
                DockerError::Unavailable { endpoint: self.endpoint.clone(), message: format!("{op}: {e}") }
            }
            other => DockerError::Api { op: op.into(), message: other.to_string() },
        }
    }

    fn not_found(e: &bollard::errors::Error) -> bool {
        matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
    }

    /// Inspects a container by name or ID.
    pub fn inspect_container(&self, name: &str) -> Result<ContainerInspectResponse, DockerError> {
        match run_on(self.rt(), self.client.inspect_container(name, None)) {
            Ok(c) => Ok(c),
            Err(e) if Self::not_found(&e) => Err(DockerError::NotFound { what: "container", name: name.into() }),
            Err(e) => Err(self.error(&format!("inspect container {name}"), e)),
        }
    }

    /// Inspects a named volume.
    pub fn inspect_volume(&self, name: &str) -> Result<Volume, DockerError> {
        match run_on(self.rt(), self.client.inspect_volume(name)) {
            Ok(v) => Ok(v),
            Err(e) if Self::not_found(&e) => Err(DockerError::NotFound { what: "volume", name: name.into() }),
            Err(e) => Err(self.error(&format!("inspect volume {name}"), e)),
        }
    }

    /// Every container, running or not, with its mounts.
    pub fn list_containers(&self) -> Result<Vec<ContainerSummary>, DockerError> {
        let opts = ListContainersOptions { all: true, ..Default::default() };
        self.call("list containers", self.client.list_containers(Some(opts)))
    }

    /// Freezes a container's processes (cgroup freezer).
    pub fn pause(&self, id: &str) -> Result<(), DockerError> {
        self.call(&format!("pause {}", short(id)), self.client.pause_container(id))
    }

    /// Thaws a paused container.
    pub fn unpause(&self, id: &str) -> Result<(), DockerError> {
        self.call(&format!("unpause {}", short(id)), self.client.unpause_container(id))
    }

    /// Stops a container (its stop signal, then SIGKILL after the grace
    /// period): `timeout` when the object sets one, otherwise the
    /// container's own `StopTimeout` (compose `stop_grace_period`), otherwise
    /// Docker's default. `Some` says the container had to be killed.
    pub fn stop(&self, id: &str, timeout: Option<u32>) -> Result<Option<String>, DockerError> {
        let before = self.inspect_container(id)?;
        let was_up = before.state.as_ref().is_some_and(|s| s.running == Some(true) || s.restarting == Some(true));
        let grace = timeout.unwrap_or_else(|| own_stop_timeout(&before));
        let op = format!("stop {}", short(id));
        let opts = StopContainerOptions { t: Some(i32::try_from(grace).unwrap_or(i32::MAX)), ..Default::default() };
        // The request must outlive the grace period, or a slow database
        // would count as an unreachable engine.
        let client = self.client.clone().with_timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS + u64::from(grace)));
        self.call(&op, client.stop_container(id, Some(opts)))?;
        let state = self.inspect_container(id)?.state.unwrap_or_default();
        let killed = was_up && state.exit_code == Some(KILLED_EXIT_CODE) && state.oom_killed != Some(true);
        Ok(killed.then(|| format!("did not stop within its {grace} s stop timeout and was killed (SIGKILL); raise its StopTimeout (compose stop_grace_period) or the object's stopTimeoutSeconds if it needs longer to shut down cleanly")))
    }

    /// Starts a stopped container (the same container: same ID, image and
    /// configuration).
    pub fn start(&self, id: &str) -> Result<(), DockerError> {
        self.call(&format!("start {}", short(id)), self.client.start_container(id, None))
    }
}

/// The client's private runtime. It may be dropped from async code (the
/// daemon ends, or a connect fails inside it), where a blocking runtime
/// shutdown panics: shut it down in the background instead.
struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

impl BackgroundRuntime {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime lives until dropped")
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether an error means the engine could not be talked to at all (the
/// socket is gone, the connection broke, no answer in time), as opposed to
/// an answer. bollard reports connection failures of its hyper client as
/// `HyperLegacyError` ("client error (Connect)", "(SendRequest)"): those
/// are as much "unreachable" as an I/O error.
fn is_transport_failure(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    matches!(
        e,
        E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::HttpClientError { .. }
            | E::RequestTimeoutError
            | E::SocketNotFoundError(_)
    )
}

/// The grace period Docker gives a container on `docker stop`: its own
/// `StopTimeout`, or Docker's default.
pub fn own_stop_timeout(c: &ContainerInspectResponse) -> u32 {
    c.config
        .as_ref()
        .and_then(|cfg| cfg.stop_timeout)
        .and_then(|t| u32::try_from(t).ok())
        .unwrap_or(DEFAULT_STOP_TIMEOUT_SECS)
}

/// The first 12 characters of an ID, as `docker ps` shows it.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Runs a future to completion on the client's own runtime, from any
/// thread: the daemon's async loop (through `block_in_place`), a blocking
/// worker, or plain synchronous code.
fn run_on<F: Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| rt.block_on(f))
        }
        _ => rt.block_on(f),
    }
}
