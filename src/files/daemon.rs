//! `volsnap run`: the files-mode driver loop.
//!
//! Level-triggered: a scan of the manifests directory brings the stored
//! objects in line with the declarations ([`super::scanning`],
//! [`super::objects`]); a pass hands every stored object to the reconciler
//! and writes back the status it computes ([`super::pass`]). Whatever wakes
//! the loop (a file event, the periodic resync, work that ended), the same
//! pass runs. Only this loop touches the objects table and the status
//! files, so there is one writer.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::status::StatusFiles;
use super::watch::DirWatch;
use crate::api::Kind;
use crate::docker::runtime::DockerRuntime;
use crate::engine::paths::{PathPolicy, PolicyError};
use crate::manifest::dir::Scanner;
use crate::reconcile::{Next, Reconciler, Settings};
use crate::store::{Store, StoreError};

/// Settings of `volsnap run`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory of manifests (read only).
    pub manifests: PathBuf,
    /// State directory (SQLite, status files).
    pub state: PathBuf,
    /// Archive store.
    pub archives: PathBuf,
    /// Directories sources may be read from.
    pub allowed_roots: Vec<PathBuf>,
    /// Exit once every snapshot and restore is Completed or Failed.
    pub once: bool,
    /// Full rescan interval (file events get lost).
    pub resync_interval: Duration,
    /// Captures running at once, and restores running at once (counted apart).
    pub max_concurrent: usize,
    /// `--docker auto|off|URL`.
    pub docker: crate::docker::DockerMode,
    /// Serve `/healthz`, `/readyz` and `/metrics` here (off when `None`).
    pub http_addr: Option<std::net::SocketAddr>,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Shut down on request, or (`--once`) everything succeeded.
    Ok,
    /// `--once`: at least one snapshot or restore Failed.
    SomeFailed,
}

/// Start-up failures (the daemon never fails on a bad object).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state store could not be opened, or another daemon owns it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad `--allowed-root`.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// `--http-addr` cannot be served.
    #[error("cannot serve --http-addr {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` resolves (or, with `once`, until done).
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunOutcome, DaemonError> {
    let store = Store::open(&cfg.state, &cfg.archives)?;
    let _owned = store.take_ownership(&cfg.state)?;
    let policy = PathPolicy::new(&cfg.allowed_roots, &[cfg.state.clone(), cfg.archives.clone()])?;
    if cfg.allowed_roots.is_empty() {
        tracing::warn!("No --allowed-root configured: every source.paths volume will be skipped");
    }
    let settings = Settings {
        state: cfg.state.clone(),
        archives: cfg.archives.clone(),
        max_concurrent: cfg.max_concurrent,
        retry_unavailable: !cfg.once,
    };
    let runtime = Arc::new(DockerRuntime::connect(cfg.docker.clone()));
    let reconciler = Reconciler::new(Store::open(&cfg.state, &cfg.archives)?, policy, runtime, settings);
    let (scan_tx, scan_rx) = mpsc::unbounded_channel();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = cfg.http_addr {
        let stopped = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        crate::http::serve(addr, ready.clone(), reconciler.metrics(), stopped)
            .await
            .map_err(|source| DaemonError::Http { addr, source })?;
    }
    let mut d = Daemon {
        ready,
        _stop_http: stop_tx,
        status: StatusFiles::new(&cfg.state),
        cfg,
        store,
        reconciler,
        next: HashMap::new(),
        created: false,
        schedule_at: None,
        shutting_down: false,
        warned_dir: None,
        scanner: Some(Scanner::default()),
        scan_tx,
        scan_again: false,
        scanned: false,
        settle_at: None,
        gone_since: HashMap::new(),
        removal_pending: HashSet::new(),
    };
    d.reconciler.start()?;
    d.main_loop(scan_rx, shutdown).await
}

/// The files-mode driver's state.
pub(super) struct Daemon {
    pub(super) cfg: Config,
    /// The objects table (and the archives records `volsnap get` reads).
    pub(super) store: Store,
    pub(super) status: StatusFiles,
    pub(super) reconciler: Reconciler,
    /// What the last pass said of each object (by uid).
    pub(super) next: HashMap<String, Next>,
    /// `/readyz`: start-up recovery and the first pass are done.
    pub(super) ready: Arc<std::sync::atomic::AtomicBool>,
    /// Dropped with the daemon: stops the HTTP server.
    _stop_http: tokio::sync::watch::Sender<bool>,
    /// The current pass created an object.
    pub(super) created: bool,
    /// When the next schedule slot is due.
    pub(super) schedule_at: Option<std::time::Instant>,
    pub(super) shutting_down: bool,
    /// Why the manifests directory cannot be read, once reported.
    pub(super) warned_dir: Option<String>,
    /// The manifest scanner and its cache; `None` while a scan runs.
    pub(super) scanner: Option<Scanner>,
    pub(super) scan_tx: mpsc::UnboundedSender<super::scanning::ScanDone>,
    /// Another scan was asked for while one ran.
    pub(super) scan_again: bool,
    /// A scan has been applied since start-up.
    pub(super) scanned: bool,
    /// When a file whose removals wait for it to settle may have settled.
    pub(super) settle_at: Option<std::time::Instant>,
    /// Manifest files missing from the listing, since when: their objects
    /// are deleted once a file has stayed gone for the settle period, so a
    /// file replaced non-atomically (`git checkout`, `rsync`, a deploy
    /// swapping directories) deletes nothing.
    pub(super) gone_since: HashMap<String, std::time::Instant>,
    /// Objects whose declaration seems gone but whose removal waits for the
    /// settle period (by uid): no new work is started for them meanwhile.
    pub(super) removal_pending: HashSet<String>,
}

/// Resolves at `at` (never, without one).
async fn settle_wait(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    async fn main_loop(
        &mut self,
        mut scan_rx: mpsc::UnboundedReceiver<super::scanning::ScanDone>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<RunOutcome, DaemonError> {
        let (mut watch, mut events) = if self.cfg.once {
            (None, mpsc::channel(1).1)
        } else {
            let (w, r) = DirWatch::new(&self.cfg.manifests);
            (Some(w), r)
        };
        let mut resync = tokio::time::interval(self.cfg.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress_tick = tokio::time::interval(Duration::from_secs(1));
        let wake = self.reconciler.wake();
        tokio::pin!(shutdown);
        self.request_scan();
        loop {
            if self.cfg.once
                && self.scanned
                && let Some(why) = &self.warned_dir
            {
                // Nothing can be reconciled without the declarations, and
                // `--once` would otherwise wait for a directory nobody creates.
                tracing::error!("{why}; --once ends without reconciling anything");
                return Ok(RunOutcome::SomeFailed);
            }
            if self.cfg.once && self.settled() && !self.reconciler.busy() && !self.waiting() {
                return Ok(self.once_outcome()?);
            }
            if self.shutting_down && !self.reconciler.busy() {
                tracing::info!("Shut down cleanly");
                return Ok(RunOutcome::Ok);
            }
            tokio::select! {
                _ = &mut shutdown, if !self.shutting_down => {
                    tracing::info!(in_flight = self.reconciler.in_flight().len(), "Shutdown requested: taking no new work, stopping in-flight work at a safe point");
                    self.shutting_down = true;
                    self.reconciler.shutdown();
                }
                _ = wake.notified() => self.pass()?,
                Some(()) = events.recv() => {
                    // Debounce: editors and deploy scripts write in bursts.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    while events.try_recv().is_ok() {}
                    if !self.shutting_down {
                        self.request_scan();
                    }
                }
                _ = resync.tick() => {
                    if let Some(w) = watch.as_mut() {
                        w.refresh();
                    }
                    if !self.shutting_down {
                        // Journal rows left by work that could not finish
                        // (a runtime down, a refused target).
                        self.reconciler.recover()?;
                        self.request_scan();
                    }
                }
                Some(done) = scan_rx.recv() => self.scan_done(done)?,
                _ = settle_wait(self.settle_at), if self.settle_at.is_some() => {
                    // A file whose removals waited may have settled.
                    self.settle_at = None;
                    if !self.shutting_down {
                        self.request_scan();
                    }
                }
                _ = progress_tick.tick(), if self.reconciler.busy() => self.pass_in_flight()?,
                _ = settle_wait(self.schedule_at), if self.schedule_at.is_some() && !self.shutting_down => {
                    self.schedule_at = None;
                    self.pass()?;
                }
            }
        }
    }

    /// `--once`: failed if any snapshot or restore Failed, or is left
    /// unfinished (a restore its journal keeps for an operator).
    fn once_outcome(&self) -> Result<RunOutcome, StoreError> {
        let failed = self.store.objects(None, None)?.into_iter().any(|o| {
            o.key.kind != Kind::Schedule
                && o.object.pointer("/status/phase").and_then(Value::as_str) != Some("Completed")
        });
        Ok(if failed { RunOutcome::SomeFailed } else { RunOutcome::Ok })
    }

    /// `--once`: the manifests have been scanned, no scan is pending, and no
    /// removal waits for its file to settle.
    fn settled(&self) -> bool {
        self.scanned && self.scan_idle() && self.settle_at.is_none()
    }

    /// Some object waits for work that this run can still do.
    fn waiting(&self) -> bool {
        self.next.values().any(|n| matches!(n, Next::Running | Next::Waiting))
    }
}
