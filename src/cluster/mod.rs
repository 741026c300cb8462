//! Kubernetes mode (`volsnap controller`): a thin driver over the shared
//! reconciler. One agent runs per node; it watches VolumeSnapshots and
//! VolumeRestores, hands those of its node to the reconciler one at a time,
//! and writes back what the reconciler computes: the status subresource
//! (server-side apply, one field manager), an Event per condition
//! transition, the pre-restore snapshots it asks for (owned by their
//! restore). Snapshots with `deletionPolicy: Delete` carry a finalizer that
//! removes their archive.
//!
//! - `node`: which node's agent reconciles an object.
//! - `runtime`: PVCs as directories, Deployments/StatefulSets as the
//!   workload (scaled to zero and back).
//! - `status`: writing status and Events.

pub mod node;
pub mod runtime;
mod status;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::api::{DeletionPolicy, SCHEDULE_LABEL, VolumeRestore, VolumeSnapshot, VolumeSnapshotSchedule};
use crate::core::snapshot as snap;
use crate::core::{reasons, restore as rst};
use crate::engine::paths::{PathPolicy, PolicyError};
use crate::reconcile::{Next, Reconciler, Settings, Unresolved, View};
use crate::store::{Store, StoreError};

/// The finalizer of snapshots whose archive is deleted with them.
pub const FINALIZER: &str = "volsnap.dev/archive";

/// The field manager of every status volsnap writes.
pub const FIELD_MANAGER: &str = "volsnap";

/// Settings of `volsnap controller`.
#[derive(Clone, Debug)]
pub struct Config {
    /// The node this agent serves.
    pub node_name: String,
    /// Node-local state (archive records, journals).
    pub state: PathBuf,
    /// Archive store.
    pub archives: PathBuf,
    /// Directories sources may be read from.
    pub allowed_roots: Vec<PathBuf>,
    /// How often interrupted work is recovered and deleted objects settled.
    pub resync_interval: Duration,
    /// Captures (and restores) running at once.
    pub max_concurrent: usize,
    /// Where `/healthz` and `/readyz` are served.
    pub http_addr: Option<SocketAddr>,
}

/// Why the controller could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The state store could not be opened, or another process owns it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad `--allowed-root`.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// No usable cluster configuration (in-cluster or KUBECONFIG).
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(#[from] kube::config::InferConfigError),
    /// The API client failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Serving `/healthz` failed.
    #[error("cannot serve health checks on {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Why one reconcile failed (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The API server refused or did not answer.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The reconciler's thread failed.
    #[error("reconciler thread: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What every reconcile shares.
pub(crate) struct Ctx {
    client: Client,
    node: String,
    reconciler: Arc<Mutex<Reconciler>>,
    recorder: Recorder,
    snapshots: Cache<VolumeSnapshot>,
    schedules: Cache<VolumeSnapshotSchedule>,
    resync: Duration,
    /// Consecutive failures per object, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    let store = Store::open(&cfg.state, &cfg.archives)?;
    let _owned = store.take_ownership(&cfg.state)?;
    let policy = PathPolicy::new(&cfg.allowed_roots, &[cfg.state.clone(), cfg.archives.clone()])?;
    let kube_config = kube::Config::infer().await?;
    let client = Client::try_from(kube_config.clone())?;
    let node = cfg.node_name.clone();
    let runtime = tokio::task::spawn_blocking(move || runtime::KubeRuntime::new(kube_config, node))
        .await
        .map_err(|e| ControllerError::Kube(kube::Error::Service(Box::new(e))))??;
    let settings = Settings {
        state: cfg.state.clone(),
        archives: cfg.archives.clone(),
        max_concurrent: cfg.max_concurrent,
        retry_unavailable: true,
    };
    let mut reconciler = Reconciler::new(store, policy, Arc::new(runtime), settings);
    let reconciler = tokio::task::spawn_blocking(move || reconciler.start().map(|()| reconciler))
        .await
        .map_err(|e| ControllerError::Kube(kube::Error::Service(Box::new(e))))??;
    let reconciler = Arc::new(Mutex::new(reconciler));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let metrics = lock(&reconciler).metrics();
    if let Some(addr) = cfg.http_addr {
        crate::http::serve(addr, ready.clone(), metrics.clone(), stopped())
            .await
            .map_err(|source| ControllerError::Http { addr, source })?;
    }

    let snapshots = Controller::new(Api::<VolumeSnapshot>::all(client.clone()), watcher::Config::default());
    let restores = Controller::new(Api::<VolumeRestore>::all(client.clone()), watcher::Config::default());
    let schedules = Controller::new(Api::<VolumeSnapshotSchedule>::all(client.clone()), watcher::Config::default());
    let reporter = Reporter { controller: "volsnap".into(), instance: Some(cfg.node_name.clone()) };
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        node: cfg.node_name.clone(),
        reconciler: reconciler.clone(),
        snapshots: snapshots.store(),
        schedules: schedules.store(),
        resync: cfg.resync_interval,
        failures: Mutex::new(HashMap::new()),
    });
    let restore_cache = restores.store();
    tracing::info!(node = cfg.node_name, "Starting volsnap controller {}", env!("CARGO_PKG_VERSION"));
    let snapshot_loop = snapshots
        .graceful_shutdown_on(stopped())
        .run(reconcile_snapshot, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let restore_loop = restores
        .graceful_shutdown_on(stopped())
        .run(reconcile_restore, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let schedule_loop = schedules
        .graceful_shutdown_on(stopped())
        .run(reconcile_schedule, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let resync = resync_loop(ctx.clone(), restore_cache, ready, stopped());
    tokio::join!(snapshot_loop, restore_loop, schedule_loop, resync);

    // Work in flight stops at its next safe point; what it leaves is
    // finished or rolled back at the next start.
    let rec = reconciler.clone();
    let _ = tokio::task::spawn_blocking(move || {
        lock(&rec).shutdown();
        for _ in 0..600 {
            if !lock(&rec).busy() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await;
    tracing::info!("Shut down cleanly");
    Ok(())
}

fn lock(r: &Mutex<Reconciler>) -> std::sync::MutexGuard<'_, Reconciler> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// At every resync: recover journals the reconciler could not resolve, and
/// settle the work and facts of objects that are gone.
async fn resync_loop(
    ctx: Arc<Ctx>,
    restores: Cache<VolumeRestore>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    stopped: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut tick = tokio::time::interval(ctx.resync);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tick.tick() => {}
        }
        if ctx.snapshots.wait_until_ready().await.is_ok() && restores.wait_until_ready().await.is_ok() {
            ready.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        {
            let snaps = ctx.snapshots.state();
            let rests = restores.state();
            let metrics = lock(&ctx.reconciler).metrics();
            metrics.set_objects(
                snaps
                    .iter()
                    .filter_map(|s| s.status.as_ref().and_then(|st| st.phase).map(|p| ("VolumeSnapshot", p.as_str())))
                    .chain(rests.iter().filter_map(|r| {
                        r.status.as_ref().and_then(|st| st.phase).map(|p| ("VolumeRestore", p.as_str()))
                    })),
            );
        }
        let uids: std::collections::HashSet<String> = ctx
            .snapshots
            .state()
            .iter()
            .filter_map(|s| s.metadata.uid.clone())
            .chain(restores.state().iter().filter_map(|r| r.metadata.uid.clone()))
            .collect();
        let rec = ctx.reconciler.clone();
        let settled = tokio::task::spawn_blocking(move || {
            let mut r = lock(&rec);
            r.recover()?;
            r.retain(&|uid| uids.contains(uid))
        })
        .await;
        match settled {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "Resync failed; retrying at the next one"),
            Err(e) => tracing::error!(error = %e, "Resync failed; retrying at the next one"),
        }
    }
}

fn error_policy<K: ResourceExt>(obj: Arc<K>, error: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    lock(&ctx.reconciler).metrics().reconcile_errors.inc();
    let uid = obj.uid().unwrap_or_default();
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(uid).or_insert(0);
        *n = (*n + 1).min(8);
        *n
    };
    let delay = Duration::from_secs(1 << n).min(Duration::from_secs(300));
    tracing::warn!(object = obj.name_any(), error = %error, retry_in = ?delay, "Reconcile failed");
    Action::requeue(delay)
}

/// How long to wait before looking again, from the reconciler's answer.
fn action(ctx: &Ctx, next: Next) -> Action {
    match next {
        Next::Done => Action::await_change(),
        Next::Running => Action::requeue(Duration::from_secs(1)),
        Next::Waiting => Action::requeue(Duration::from_secs(5)),
        Next::Stuck => Action::requeue(ctx.resync),
    }
}

/// The PersistentVolume bound to a snapshot's PVC source, if any.
async fn bound_pv(client: &Client, s: &VolumeSnapshot) -> Result<Option<PersistentVolume>, kube::Error> {
    let Some(claim) = &s.spec.source.persistent_volume_claim else { return Ok(None) };
    if s.status.as_ref().and_then(|st| st.node_name.as_ref()).is_some() || s.spec.node_name.is_some() {
        return Ok(None);
    }
    let ns = s.namespace().unwrap_or_else(|| "default".into());
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns).get_opt(claim).await?;
    let volume = pvc.and_then(|p| p.spec).and_then(|s| s.volume_name);
    match volume {
        Some(v) => Api::<PersistentVolume>::all(client.clone()).get_opt(&v).await,
        None => Ok(None),
    }
}

/// What the API server's schema cannot catch (absolute paths, name
/// lengths that fit the archive files, ...), checked as files mode checks
/// it: `field: message`.
fn invalid(obj: crate::api::Object) -> Option<String> {
    crate::api::validate::object(&obj).err().map(|(field, message)| format!("{field}: {message}"))
}

async fn reconcile_snapshot(obj: Arc<VolumeSnapshot>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if obj.metadata.deletion_timestamp.is_none()
        && let Some(why) = invalid(crate::api::Object::Snapshot((*obj).clone()))
    {
        let u = Unresolved { reason: reasons::INVALID_SPEC, message: why };
        return refuse_snapshot(&obj, &ctx, u).await;
    }
    let pv = bound_pv(&ctx.client, &obj).await?;
    match node::snapshot_node(&obj, pv.as_ref()) {
        Ok(node) if node != ctx.node => return Ok(Action::await_change()),
        Ok(_) => {}
        Err(u) => return refuse_snapshot(&obj, &ctx, u).await,
    }
    let api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let out = if obj.spec.deletion_policy == DeletionPolicy::Delete {
        finalizer(&api, FINALIZER, obj, |event| async {
            match event {
                Finalizer::Apply(s) => apply_snapshot(s, ctx.clone()).await,
                Finalizer::Cleanup(s) => {
                    let mut s = (*s).clone();
                    if orphaned_by_schedule(&ctx, &s) {
                        // Removing a schedule is no evidence that its
                        // backups are unwanted: the objects go (garbage
                        // collection), the archives stay.
                        s.spec.deletion_policy = DeletionPolicy::Retain;
                    }
                    let rec = ctx.reconciler.clone();
                    tokio::task::spawn_blocking(move || lock(&rec).snapshot_deleted(&s)).await??;
                    Ok(Action::await_change())
                }
            }
        })
        .await
        .map_err(|e| ReconcileError::Finalizer(e.to_string()))?
    } else if obj.metadata.deletion_timestamp.is_some() {
        Action::await_change()
    } else {
        apply_snapshot(obj, ctx.clone()).await?
    };
    Ok(out)
}

/// A snapshot no agent can capture as declared: every agent reports why
/// (the same status, so their writes agree).
async fn refuse_snapshot(obj: &VolumeSnapshot, ctx: &Ctx, u: Unresolved) -> Result<Action, ReconcileError> {
    let mut st = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation.unwrap_or(1);
    snap::failed(&mut st, generation, crate::api::Time::now(), u.reason, &u.message);
    status::write_snapshot(ctx, obj, st).await?;
    Ok(if reasons::retried(u.reason) { Action::requeue(Duration::from_secs(5)) } else { Action::await_change() })
}

async fn apply_snapshot(obj: Arc<VolumeSnapshot>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let rec = ctx.reconciler.clone();
    let seen = obj.clone();
    let out = tokio::task::spawn_blocking(move || lock(&rec).snapshot(&seen)).await??;
    let mut st = out.status;
    snap::on_node(&mut st, &ctx.node);
    status::write_snapshot(&ctx, &obj, st).await?;
    ctx.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&obj.uid().unwrap_or_default());
    Ok(action(&ctx, out.next))
}

/// The snapshots the reconciler may look at: the watch cache.
struct CacheView(Cache<VolumeSnapshot>);

impl View for CacheView {
    fn snapshot(&self, namespace: &str, name: &str) -> Option<VolumeSnapshot> {
        self.0.get(&ObjectRef::new(name).within(namespace)).map(|s| (*s).clone())
    }
}

async fn reconcile_restore(obj: Arc<VolumeRestore>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if let Some(why) = invalid(crate::api::Object::Restore((*obj).clone())) {
        let mut st = obj.status.clone().unwrap_or_default();
        rst::failed(
            &mut st,
            obj.metadata.generation.unwrap_or(1),
            crate::api::Time::now(),
            reasons::INVALID_SPEC,
            &why,
        );
        status::write_restore(&ctx, &obj, st).await?;
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let view = CacheView(ctx.snapshots.clone());
    // A restore runs where its snapshot's archive is. A snapshot that does
    // not exist is reported by every agent alike.
    if let Some(s) = view.snapshot(&ns, &obj.spec.snapshot_name) {
        match s.status.as_ref().and_then(|st| st.node_name.clone()).or_else(|| s.spec.node_name.clone()) {
            Some(node) if node != ctx.node => return Ok(Action::await_change()),
            Some(_) => {}
            // Not captured yet: its owner sets the node when it starts.
            None => return Ok(Action::requeue(Duration::from_secs(5))),
        }
    }
    let rec = ctx.reconciler.clone();
    let seen = obj.clone();
    let out = tokio::task::spawn_blocking(move || lock(&rec).restore(&seen, &view)).await??;
    for child in out.create {
        status::create_pre_restore(&ctx, &obj, child).await?;
    }
    let next = out.next;
    status::write_restore(&ctx, &obj, out.status).await?;
    ctx.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&obj.uid().unwrap_or_default());
    Ok(action(&ctx, next))
}

/// Whether a snapshot is being deleted because the schedule that owns it
/// is gone (or going), rather than by retention or a person.
fn orphaned_by_schedule(ctx: &Ctx, s: &VolumeSnapshot) -> bool {
    let ns = s.namespace().unwrap_or_default();
    s.owner_references().iter().filter(|o| o.kind == "VolumeSnapshotSchedule").any(|o| {
        match ctx.schedules.get(&ObjectRef::new(&o.name).within(&ns)) {
            Some(schedule) => {
                schedule.uid().as_deref() != Some(o.uid.as_str()) || schedule.metadata.deletion_timestamp.is_some()
            }
            None => true,
        }
    })
}

/// The snapshots a schedule made: labelled with it and owned by it.
fn children_of(ctx: &Ctx, schedule: &VolumeSnapshotSchedule) -> Vec<VolumeSnapshot> {
    let (ns, name, uid) = (schedule.namespace(), schedule.name_any(), schedule.uid());
    ctx.snapshots
        .state()
        .into_iter()
        .filter(|s| s.namespace() == ns && s.labels().get(SCHEDULE_LABEL) == Some(&name))
        .filter(|s| s.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
        .map(|s| (*s).clone())
        .collect()
}

async fn reconcile_schedule(obj: Arc<VolumeSnapshotSchedule>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let generation = obj.metadata.generation.unwrap_or(1);
    let now = crate::api::Time::now();
    if let Some(why) = invalid(crate::api::Object::Schedule((*obj).clone())) {
        let mut st = obj.status.clone().unwrap_or_default();
        crate::core::schedule_status::invalid(&mut st, generation, now, &why);
        status::write_schedule(&ctx, &obj, st).await?;
        return Ok(Action::await_change());
    }
    // A schedule belongs to the node its snapshots would be taken on.
    let mut probe = VolumeSnapshot::new(&obj.name_any(), obj.spec.snapshot_template.spec.clone());
    probe.metadata.namespace = obj.namespace();
    let pv = bound_pv(&ctx.client, &probe).await?;
    match node::snapshot_node(&probe, pv.as_ref()) {
        Ok(node) if node != ctx.node => return Ok(Action::await_change()),
        Ok(_) => {}
        Err(u) => {
            let mut st = obj.status.clone().unwrap_or_default();
            crate::core::schedule_status::invalid(
                &mut st,
                generation,
                now,
                &format!("snapshotTemplate: {}", u.message),
            );
            status::write_schedule(&ctx, &obj, st).await?;
            return Ok(if reasons::retried(u.reason) {
                Action::requeue(Duration::from_secs(10))
            } else {
                Action::await_change()
            });
        }
    }
    let children = children_of(&ctx, &obj);
    let rec = ctx.reconciler.clone();
    let seen = obj.clone();
    let out =
        tokio::task::spawn_blocking(move || lock(&rec).schedule(&seen, &children, jiff::Timestamp::now())).await?;
    if let Some(child) = out.create {
        status::create_scheduled(&ctx, &obj, child).await?;
    }
    let api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    for name in &out.delete {
        tracing::info!(schedule = obj.name_any(), snapshot = name, "Retention deletes this snapshot and its archive");
        match api.delete(name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    status::write_schedule(&ctx, &obj, out.status).await?;
    let wait = out
        .wake_at
        .map(|t| t.0.duration_since(jiff::Timestamp::now()).as_secs_f64().clamp(1.0, 3600.0))
        .unwrap_or(3600.0);
    Ok(Action::requeue(Duration::from_secs_f64(wait)))
}
