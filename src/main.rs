//! The `volsnap` command line. anyhow lives here, at the edge; the library
//! has typed errors.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use volsnap::api::Kind;
use volsnap::cli::{self, OutputFormat};
use volsnap::files;

/// volsnap: declare snapshots, restores and snapshot schedules of application
/// data volumes as YAML objects; a controller loop makes them true.
///
/// Quick start: put a VolumeSnapshot manifest in ./volsnap.d, run
/// `volsnap run --allowed-root /srv`, and read its status in
/// ./.volsnap/status/default/volumesnapshots/<name>.yaml.
#[derive(Parser, Debug)]
#[command(
    name = "volsnap",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_long_help = OBJECTS_HELP
)]
struct Cli {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "VOLSNAP_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The object kinds, schedules and retention, metrics: what `--help` adds
/// after the commands (the README has the full reference).
const OBJECTS_HELP: &str = "\
Objects (apiVersion volsnap.dev/v1alpha1):
  VolumeSnapshot          capture volumes (paths, a container, a Docker volume, a PVC) into a
                          tar.gz or tar.zst archive
  VolumeRestore           put a snapshot back: in place (the workload is stopped around an
                          atomic swap; the replaced data is kept as <name>-pre-restore), or
                          into a new directory (spec.targetPath)
  VolumeSnapshotSchedule  take a snapshot from spec.snapshotTemplate at each slot of a
                          5-field cron (spec.schedule, spec.timeZone: an IANA name, DST-correct)

Schedules:
  Snapshots are named <schedule>-<yyyymmddhhmmss> (UTC), labelled volsnap.dev/schedule, with
  deletionPolicy: Delete. Slots missed while volsnap was down run once at start-up; never two
  runs of one schedule at once; spec.suspend: true pauses it (retention still applies).
  Retention (spec.retention) keepLast/keepHourly/keepDaily/keepWeekly/keepMonthly/keepYearly,
  as restic's `forget`: a snapshot kept by any rule is kept. Failed snapshots never count and
  go once a later one succeeds; the newest successful snapshot is never deleted; all-zero
  rules are refused. Removing a schedule keeps every archive it made.

Monitoring:
  --http-addr (run, controller) serves /healthz, /readyz and /metrics (Prometheus), e.g.
  volsnap_schedule_last_success_timestamp_seconds for a \"no backup in 26 h\" alert.
  `volsnap apply -f FILE --wait` waits until every object in FILE is Completed (exit 0).

Example:
  apiVersion: volsnap.dev/v1alpha1
  kind: VolumeSnapshotSchedule
  metadata: {name: nightly}
  spec:
    schedule: \"30 2 * * *\"
    timeZone: Europe/Berlin
    snapshotTemplate:
      spec: {source: {paths: [{path: /srv/app/data}]}, compression: zstd}
    retention: {keepLast: 3, keepDaily: 7, keepWeekly: 4, keepMonthly: 6}";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the files-mode daemon: watch a manifests directory and reconcile
    /// every object in it.
    ///
    /// Objects are read from *.yaml / *.yml files at the top of --manifests
    /// (multi-document files allowed). Status of each object goes to
    /// <state>/status/<namespace>/<plural>/<name>.yaml; files that cannot be
    /// used are reported in <state>/status/_invalid/. The manifests directory
    /// is never written to.
    Run(RunArgs),
    /// List objects in a kubectl-like table (or YAML/JSON).
    ///
    /// KIND is snapshots, restores or schedules (or a short name: vsnap,
    /// vrestore, vsched).
    Get {
        /// snapshots | restores | schedules
        kind: String,
        /// Namespace to list.
        #[arg(short = 'n', long, default_value = "default", conflicts_with = "all_namespaces")]
        namespace: String,
        /// List every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Show one object in detail, with its conditions.
    Describe {
        /// snapshot | restore | schedule
        kind: String,
        /// Object name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Run the Kubernetes-mode agent of one node: reconcile the
    /// VolumeSnapshots, VolumeRestores and VolumeSnapshotSchedules of this
    /// node.
    ///
    /// Uses the in-cluster configuration, or KUBECONFIG. Status goes to each
    /// object's status subresource, with an Event per transition.
    Controller(ControllerArgs),
    /// Hand a manifest file to files mode and, with --wait, report until
    /// every object in it is Completed (exit 0) or one Failed (exit 1).
    ///
    /// The file is checked first; it is then written into the manifests
    /// directory (atomically). If no daemon owns --state, the daemon runs in
    /// the foreground with --once over that directory.
    ///
    /// `volsnap apply -f pre-deploy.yaml --wait && ./deploy`
    Apply(ApplyArgs),
    /// Print the CustomResourceDefinitions as YAML (crds/ is generated from this).
    Crds,
    /// Inspect archive files.
    #[command(subcommand)]
    Archive(ArchiveCommand),
}

#[derive(Subcommand, Debug)]
enum ArchiveCommand {
    /// Print an archive's manifest (volsnap.json) and entries.
    List {
        /// Archive file (.tar.gz or .tar.zst).
        file: PathBuf,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Check an archive end to end (compression checksums, tar structure,
    /// manifest, entry names and types, sha256). Exits non-zero on damage.
    Verify {
        /// Archive file (.tar.gz or .tar.zst).
        file: PathBuf,
        /// Expected sha256 (default: the FILE.sha256 checksum file, if present).
        #[arg(long)]
        sha256: Option<String>,
    },
}

#[derive(Args, Debug, Clone)]
struct StateArgs {
    /// State directory (SQLite database, status files).
    #[arg(long, default_value = "./.volsnap", env = "VOLSNAP_STATE")]
    state: PathBuf,
    /// Archives directory [default: <state>/archives].
    #[arg(long, env = "VOLSNAP_ARCHIVES")]
    archives: Option<PathBuf>,
}

impl StateArgs {
    fn archives(&self) -> PathBuf {
        self.archives.clone().unwrap_or_else(|| self.state.join("archives"))
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Directory of manifests to watch.
    #[arg(long, default_value = "./volsnap.d", env = "VOLSNAP_MANIFESTS")]
    manifests: PathBuf,
    #[command(flatten)]
    state: StateArgs,
    /// A directory sources may be read from (repeatable). Paths are resolved,
    /// symlinks included, before they are checked. Without any, every
    /// source.paths volume is skipped.
    #[arg(long = "allowed-root", value_name = "PATH")]
    allowed_roots: Vec<PathBuf>,
    /// Docker Engine: auto (DOCKER_HOST, else the local socket, else run
    /// without Docker), off, or a URL (unix:///var/run/docker.sock,
    /// tcp://host:2375). Needed by container and volume sources, by quiesce,
    /// and to stop and restart containers around a restore.
    #[arg(long, default_value = "auto")]
    docker: String,
    /// Reconcile until every snapshot and restore is Completed or Failed,
    /// then exit: 0 if none failed, 1 otherwise.
    #[arg(long)]
    once: bool,
    /// Full rescan of the manifests directory every N seconds (file events
    /// can be lost).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    resync_interval: u64,
    /// Captures running at the same time, and restores running at the same
    /// time (counted apart).
    #[arg(long, default_value_t = 2)]
    max_concurrent: usize,
    /// Serve /healthz, /readyz and /metrics (Prometheus) on this address
    /// (e.g. 127.0.0.1:9464); off by default.
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
}

#[derive(Args, Debug)]
struct ApplyArgs {
    /// The manifest file (one or more documents).
    #[arg(short = 'f', long)]
    file: PathBuf,
    /// Wait until every object in the file is Completed or Failed, showing
    /// progress.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long (e.g. 90s, 10m, 1h): exit 1.
    #[arg(long, default_value = "30m")]
    timeout: String,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct ControllerArgs {
    /// The node this agent serves (the DaemonSet passes spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    #[command(flatten)]
    state: StateArgs,
    /// A directory sources may be read from (repeatable); PersistentVolume
    /// paths must lie under one.
    #[arg(long = "allowed-root", value_name = "PATH")]
    allowed_roots: Vec<PathBuf>,
    /// Recover interrupted work and settle deleted objects every N seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    resync_interval: u64,
    /// Captures running at the same time, and restores running at the same
    /// time (counted apart).
    #[arg(long, default_value_t = 2)]
    max_concurrent: usize,
    /// Serve /healthz, /readyz and /metrics (Prometheus) on this address
    /// (e.g. 0.0.0.0:8080).
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOLSNAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn parse_kind(word: &str) -> anyhow::Result<Kind> {
    Kind::from_cli(word).with_context(|| {
        format!("unknown kind {word:?}: use snapshots, restores or schedules (or vsnap, vrestore, vsched)")
    })
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Run(args) => return run_daemon(args),
        Command::Controller(args) => return run_controller(args),
        Command::Apply(args) => return apply(args),
        Command::Get { kind, namespace, all_namespaces, output, state } => {
            let ns = (!all_namespaces).then_some(namespace.as_str());
            cli::get(&state.state, &state.archives(), parse_kind(&kind)?, ns, output, &mut stdout)?;
        }
        Command::Describe { kind, name, namespace, state } => {
            cli::describe(&state.state, &state.archives(), parse_kind(&kind)?, &namespace, &name, &mut stdout)?;
        }
        Command::Crds => cli::crds(&mut stdout)?,
        Command::Archive(ArchiveCommand::List { file, output }) => cli::archive_list(&file, output, &mut stdout)?,
        Command::Archive(ArchiveCommand::Verify { file, sha256 }) => {
            let sound = cli::archive_verify(&file, sha256.as_deref(), &mut stdout)?;
            stdout.flush()?;
            return Ok(if sound { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn run_daemon(args: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = files::Config {
        archives: args.state.archives(),
        manifests: args.manifests,
        state: args.state.state,
        allowed_roots: args.allowed_roots,
        once: args.once,
        resync_interval: Duration::from_secs(args.resync_interval.max(1)),
        max_concurrent: args.max_concurrent,
        docker: volsnap::docker::DockerMode::parse(&args.docker),
        http_addr: args.http_addr,
    };
    if cfg.state.starts_with(&cfg.manifests) && cfg.state != cfg.manifests {
        bail!(
            "the state directory {} must not be inside the manifests directory {}",
            cfg.state.display(),
            cfg.manifests.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let outcome = runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        tracing::info!(
            manifests = %cfg.manifests.display(),
            state = %cfg.state.display(),
            archives = %cfg.archives.display(),
            allowed_roots = ?cfg.allowed_roots,
            once = cfg.once,
            "Starting volsnap {}", env!("CARGO_PKG_VERSION")
        );
        files::run(cfg, shutdown).await.context("volsnap run could not start")
    });
    match outcome? {
        files::RunOutcome::Ok => Ok(ExitCode::SUCCESS),
        files::RunOutcome::SomeFailed => Ok(ExitCode::FAILURE),
    }
}

fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    use volsnap::cli::apply::{self, Waited};
    let timeout: jiff::SignedDuration =
        args.timeout.parse().with_context(|| format!("--timeout {:?}: use e.g. 90s, 10m or 1h", args.timeout))?;
    let timeout = timeout.unsigned_abs();
    let keys = apply::check(&args.file)?;
    let state = args.run.state.state.clone();
    let target = apply::hand_over(&args.file, &args.run.manifests)?;
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Not locked for the whole run: a foreground daemon logs to stderr too.
    let mut err = std::io::stderr();
    let foreground = !volsnap::store::state_owned(&state);
    let daemon = if foreground {
        writeln!(err, "no daemon owns {}: running it in the foreground (--once)", state.display())?;
        let mut run = args.run;
        run.once = true;
        Some(std::thread::spawn(move || run_daemon(run).map_err(|e| e.to_string())))
    } else {
        writeln!(err, "handed {} to the running daemon as {}", args.file.display(), target.display())?;
        None
    };
    if !args.wait && !foreground {
        return Ok(ExitCode::SUCCESS);
    }
    let waited = apply::wait(&state, &keys, timeout, interactive, &mut err)?;
    // A foreground daemon ends once everything is settled; after a timeout
    // it is left to the process exit.
    if let Some(d) = daemon.filter(|_| waited != Waited::TimedOut) {
        match d.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("the foreground daemon failed: {e}"),
            Err(_) => anyhow::bail!("the foreground daemon panicked"),
        }
    }
    Ok(match waited {
        Waited::AllCompleted => ExitCode::SUCCESS,
        Waited::SomeFailed => ExitCode::FAILURE,
        Waited::TimedOut => {
            writeln!(err, "timed out after {}", args.timeout)?;
            ExitCode::FAILURE
        }
    })
}

fn run_controller(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    let cfg = volsnap::cluster::Config {
        node_name: args.node_name,
        archives: args.state.archives(),
        state: args.state.state,
        allowed_roots: args.allowed_roots,
        resync_interval: Duration::from_secs(args.resync_interval.max(1)),
        max_concurrent: args.max_concurrent,
        http_addr: args.http_addr,
    };
    std::fs::create_dir_all(&cfg.archives)
        .with_context(|| format!("creating the archives directory {}", cfg.archives.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        volsnap::cluster::run(cfg, shutdown).await.context("volsnap controller")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Installs the SIGTERM and SIGINT handlers now (before any work starts,
/// so an early signal is never taken with the default action) and returns a
/// future that resolves when either arrives.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("Received SIGTERM"),
            _ = int.recv() => tracing::info!("Received SIGINT"),
        }
    })
}
