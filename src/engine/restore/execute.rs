//! Execution: extract into staging, stop the workload, swap, start it
//! again, then keep the replaced data as the pre-restore snapshot.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::plan::{Destination, JournalStep, PreRestoreSnapshot, Refusal, RestorePlan, record_step};
use super::pre_restore::{finish_after_swap, record_finished};
use super::swap_state::{swap_forward, unswap};
use crate::api::RestoredVolume;
use crate::core::reasons;
use crate::engine::archive::{ArchiveError, VerifyLimits, VerifyReport};
use crate::engine::capture::CaptureProgress;
use crate::engine::extract::{self, ExtractOptions, ExtractVolume, Extracted};
use crate::engine::fault;
use crate::engine::quiesce::resume_in_order;
use crate::engine::site::{Roots, Site};
use crate::engine::workload::{Purpose, Workload, WorkloadError};
use crate::store::Store;

/// What a finished restore reports.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreOutcome {
    /// Per volume: where the data went and how much.
    pub volumes: Vec<RestoredVolume>,
    /// Seconds the workload was stopped (in-place restores).
    pub downtime_seconds: Option<f64>,
    /// The pre-restore snapshot, if one was recorded: the caller creates
    /// its object.
    pub pre_restore: Option<PreRestoreSnapshot>,
    /// Things the operator should know (e.g. the old data could not be
    /// archived and was kept on disk).
    pub warnings: Vec<String>,
}

/// How a restore that did not complete ended.
#[derive(Clone, Debug, PartialEq)]
pub enum RestoreFailure {
    /// Rolled back: the live data is as it was. Reason and message for the
    /// status.
    RolledBack(Refusal),
    /// Shutdown before the swap: rolled back, retried at the next start.
    Interrupted,
    /// Shutdown (or a store failure) after the swap: the journal keeps the
    /// rest for the next start's recovery.
    Unfinished(String),
    /// The runtime (Docker) stopped answering while units were held: the
    /// journal keeps the state and the recovery sweep, at every resync,
    /// brings them back (and finishes or rolls back the swap) once it
    /// answers. Not a failure: the restore waits.
    WaitingForRuntime(String),
}

/// Rounds of "stop whatever uses the targets" before a swap: a unit that
/// keeps coming back after this many (a restart loop nobody can stop) makes
/// the restore roll back rather than swap under it.
const HOLD_ROUNDS: usize = 5;

/// The context of an execution.
pub struct Executor<'a> {
    /// The state store (the restore's own connection).
    pub store: &'a Store,
    /// The workload behind the targets.
    pub workload: &'a dyn Workload,
    /// The trusted directories every target lies beneath.
    pub roots: &'a Roots,
    /// Set on shutdown: extraction stops, later steps finish.
    pub cancel: &'a AtomicBool,
    /// Counters for `status.progress`.
    pub progress: &'a RestoreProgress,
}

/// Live counters of a restore, for `status.progress`: the file content the
/// extraction wrote (of the snapshot's total), then the replaced data read
/// into the pre-restore snapshot (whose total is known once that capture has
/// scanned it, so the total grows once, when that step starts).
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// The extraction into staging.
    pub extracted: CaptureProgress,
    /// The pre-restore snapshot of the replaced data.
    pub archived_replaced: CaptureProgress,
}

impl RestoreProgress {
    /// `(bytes done, bytes total)` over both steps.
    pub fn bytes(&self) -> (u64, u64) {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let (e, r) = (&self.extracted, &self.archived_replaced);
        (load(&e.bytes_done) + load(&r.bytes_done), load(&e.bytes_total) + load(&r.bytes_total))
    }
}

/// The opened parent directories of a plan's entries (see [`Site`]).
pub(super) enum Sites {
    /// Per volume, the parent of its target, staging and aside entries.
    InPlace(Vec<Site>),
    /// The parent of `targetPath` and its staging directory.
    NewDirectory(Site),
}

impl Sites {
    /// Opens every parent beneath the trusted roots, each checked to be the
    /// directory the pre-flight saw.
    pub(super) fn open(roots: &Roots, plan: &RestorePlan) -> std::io::Result<Sites> {
        let parent = |p: &Path| p.parent().unwrap_or(Path::new("/")).to_path_buf();
        match &plan.destination {
            Destination::NewDirectory { target, parent_id, .. } => {
                Ok(Sites::NewDirectory(Site::open(roots, &parent(target), *parent_id)?))
            }
            Destination::InPlace => Ok(Sites::InPlace(
                plan.volumes
                    .iter()
                    .map(|v| Site::open(roots, &parent(&v.target), v.parent_id))
                    .collect::<Result<_, _>>()?,
            )),
        }
    }

    /// The site of in-place volume `i`.
    pub(super) fn volume(&self, i: usize) -> &Site {
        match self {
            Sites::InPlace(v) => &v[i],
            Sites::NewDirectory(s) => s,
        }
    }
}

impl Executor<'_> {
    /// Records `step` with the plan, then passes its fault-injection points.
    fn journal(&self, plan: &RestorePlan, step: JournalStep) -> Result<(), String> {
        record_step(self.store, plan, step)?;
        fault::point(&format!("restore:{}", step.as_str()));
        fault::pause(&format!("restore:{}", step.as_str()));
        Ok(())
    }

    /// Runs a planned restore to the end, or rolls it back. A restore that
    /// finished leaves its journal row at `Recorded` for the caller to
    /// [`acknowledge`](super::acknowledge) once its outcome is written.
    pub fn execute(&self, mut plan: RestorePlan) -> Result<RestoreOutcome, RestoreFailure> {
        let failed = |reason, message: String| RestoreFailure::RolledBack(Refusal::fail(reason, message));
        let sites = Sites::open(self.roots, &plan)
            .map_err(|e| failed(reasons::TARGET_NOT_ALLOWED, format!("{e}; nothing was touched")))?;
        self.journal(&plan, JournalStep::Extracting).map_err(|e| {
            failed(reasons::RESTORE_FAILED, format!("cannot write the restore journal: {e}; nothing was touched"))
        })?;
        let report = match self.extract(&plan, &sites) {
            Ok(x) => {
                plan.extract_notes = extract_notes(&x);
                x.verified
            }
            Err(f) => {
                let cleanup = remove_staging(&plan, &sites);
                let _ = self.store.journal_delete(&plan.restore.uid);
                if let Err(e) = cleanup {
                    tracing::error!(restore = %plan.restore.name, error = %e, "Could not remove a staging directory");
                }
                return Err(f);
            }
        };
        match (&plan.destination, &sites) {
            (Destination::NewDirectory { staging, .. }, Sites::NewDirectory(site)) => {
                // The directory that is renamed is the staging root.
                let id = site.id(staging).ok().flatten();
                for v in plan.volumes.iter_mut() {
                    v.new_id = id;
                }
            }
            _ => {
                for (i, v) in plan.volumes.iter_mut().enumerate() {
                    let site = sites.volume(i);
                    v.new_id = site.id(&v.staging).ok().flatten();
                    v.old_id = site.id(&v.target).ok().flatten();
                }
            }
        }
        if let Err(e) = self.journal(&plan, JournalStep::Extracted) {
            let _ = remove_staging(&plan, &sites);
            let _ = self.store.journal_delete(&plan.restore.uid);
            return Err(failed(
                reasons::RESTORE_FAILED,
                format!("cannot write the restore journal: {e}; nothing was touched"),
            ));
        }
        let volumes = restored_volumes(&plan, &report);
        match (plan.destination.clone(), &sites) {
            (Destination::NewDirectory { target, staging, .. }, Sites::NewDirectory(site)) => {
                self.journal(&plan, JournalStep::Swapping).map_err(RestoreFailure::Unfinished)?;
                if let Err(e) = move_into_new_directory(site, &staging, &target) {
                    let _ = remove_staging(&plan, &sites);
                    let _ = self.store.journal_delete(&plan.restore.uid);
                    return Err(failed(
                        reasons::RESTORE_FAILED,
                        format!(
                            "cannot move the restored data into {}: {e}; nothing was left behind",
                            target.display()
                        ),
                    ));
                }
                let _ = site.fsync();
                record_finished(self.store, &plan).map_err(RestoreFailure::Unfinished)?;
                Ok(RestoreOutcome {
                    volumes,
                    downtime_seconds: None,
                    pre_restore: None,
                    warnings: plan.extract_notes.clone(),
                })
            }
            _ => self.swap_in_place(plan, &sites, volumes),
        }
    }

    fn extract(&self, plan: &RestorePlan, sites: &Sites) -> Result<Extracted, RestoreFailure> {
        let failed = |reason, message: String| RestoreFailure::RolledBack(Refusal::fail(reason, message));
        let io_failed = |what: &str, path: &Path, e: std::io::Error| {
            failed(
                reasons::RESTORE_FAILED,
                format!("cannot {what} {}: {e}; the live data was not touched", path.display()),
            )
        };
        // Staging directories: fresh, private (0700) until their root entry
        // sets the captured mode; created and opened through the parent's
        // descriptor, and handed to the extractor as descriptors.
        let mut roots = Vec::new();
        match (&plan.destination, sites) {
            (Destination::NewDirectory { staging, .. }, Sites::NewDirectory(site)) => {
                site.remove_tree(staging).map_err(|e| io_failed("clear the staging directory", staging, e))?;
                site.mkdir_private(staging).map_err(|e| io_failed("create the staging directory", staging, e))?;
                let staging_root = site.open_dir(staging).map_err(|e| io_failed("open", staging, e))?;
                let inner = Site::from_dir(staging_root, staging);
                for v in &plan.volumes {
                    inner.mkdir_private(&v.staging).map_err(|e| io_failed("create", &v.staging, e))?;
                    let dir = inner.open_dir(&v.staging).map_err(|e| io_failed("open", &v.staging, e))?;
                    roots.push(ExtractVolume { index: v.index, name: v.name.clone(), root: v.staging.clone(), dir });
                }
            }
            _ => {
                for (i, v) in plan.volumes.iter().enumerate() {
                    let site = sites.volume(i);
                    site.remove_tree(&v.staging)
                        .map_err(|e| io_failed("clear the staging directory", &v.staging, e))?;
                    site.mkdir_private(&v.staging)
                        .map_err(|e| io_failed("create the staging directory", &v.staging, e))?;
                    let dir = site.open_dir(&v.staging).map_err(|e| io_failed("open", &v.staging, e))?;
                    roots.push(ExtractVolume { index: v.index, name: v.name.clone(), root: v.staging.clone(), dir });
                }
            }
        }
        let limits = VerifyLimits {
            max_expanded_bytes: Some(plan.max_bytes),
            max_entries: Some(plan.max_entries),
            expected_sha256: Some(plan.sha256.clone()),
        };
        let cancel = || self.cancel.load(Ordering::Relaxed);
        self.progress.extracted.bytes_total.store(plan.content_bytes, Ordering::Relaxed);
        let options = ExtractOptions { foreign: plan.foreign, progress: Some(&self.progress.extracted.bytes_done) };
        let report = extract::extract_with(&plan.archive, &roots, &limits, &options, &cancel).map_err(|e| {
            if self.cancel.load(Ordering::Relaxed) {
                return RestoreFailure::Interrupted;
            }
            let reason = match &e {
                ArchiveError::ChecksumMismatch { .. } => reasons::CHECKSUM_MISMATCH,
                ArchiveError::Extract { .. } | ArchiveError::Io { .. } => reasons::RESTORE_FAILED,
                _ => reasons::ARCHIVE_INVALID,
            };
            failed(
                reason,
                format!("the archive {} was rejected: {e}; the live data was not touched", plan.archive.display()),
            )
        })?;
        fault::point("restore:extracted-unsynced");
        let mut synced = std::collections::HashSet::new();
        let dirs: Vec<(&Site, &Path)> = match (&plan.destination, sites) {
            (Destination::NewDirectory { staging, .. }, Sites::NewDirectory(site)) => vec![(site, staging.as_path())],
            _ => plan.volumes.iter().enumerate().map(|(i, v)| (sites.volume(i), v.staging.as_path())).collect(),
        };
        for (site, d) in dirs {
            let dev = site.id(d).ok().flatten().map(|i| i.dev);
            if synced.insert(dev) {
                site.sync_tree(d).map_err(|e| io_failed("make durable", d, e))?;
            } else {
                site.fsync().map_err(|e| io_failed("make durable", d, e))?;
            }
        }
        Ok(report)
    }

    fn swap_in_place(
        &self,
        mut plan: RestorePlan,
        sites: &Sites,
        volumes: Vec<RestoredVolume>,
    ) -> Result<RestoreOutcome, RestoreFailure> {
        let rollback = |plan: &RestorePlan, reason, message: String| {
            let _ = remove_staging(plan, sites);
            if let Err(e) = self.store.journal_delete(&plan.restore.uid) {
                tracing::error!(restore = %plan.restore.name, error = %e, "Could not remove the journal row of a rolled-back restore; the recovery sweep finds nothing to undo");
            }
            RestoreFailure::RolledBack(Refusal::fail(reason, message))
        };
        // Before any swap: start the workload again, then roll back. If it
        // cannot be started, the journal row stays and the recovery sweep
        // (every resync) rolls back and starts it.
        let restart_then_rollback = |plan: &RestorePlan, reason, message: String| {
            let (_, failed) = resume_in_order(self.workload, &plan.stopped, |_| {});
            match failed {
                None => rollback(plan, reason, message),
                Some(e) if e.unreachable => RestoreFailure::WaitingForRuntime(format!(
                    "{message}; starting the workload again failed ({e}): the recovery sweep rolls back and starts it when {} answers",
                    self.workload.runtime_name()
                )),
                Some(e) => RestoreFailure::Unfinished(format!(
                    "{message}; starting the workload again failed ({e}): the recovery sweep retries"
                )),
            }
        };
        let workload_failed = |e: &WorkloadError| {
            if e.unreachable { self.workload.unavailable_reason() } else { reasons::WORKLOAD_FAILED }
        };
        let targets: Vec<PathBuf> = plan.volumes.iter().map(|v| v.target.clone()).collect();
        plan.stopped = match self.workload.plan_stop(&targets, Purpose::Restore) {
            Ok(u) => u,
            Err(e) => {
                return Err(rollback(&plan, workload_failed(&e), format!("{e}; the live data was not touched")));
            }
        };
        self.journal(&plan, JournalStep::Stopping)
            .map_err(|e| rollback(&plan, reasons::RESTORE_FAILED, format!("cannot write the restore journal: {e}")))?;
        let down = Instant::now();
        let mut warnings = plan.extract_notes.clone();
        let held = self.workload.stop(&plan.stopped, plan.stop_timeout_seconds).and_then(|w| {
            warnings.extend(w);
            fault::pause("restore:stopped");
            // Anything that came up meanwhile (a restart policy, an
            // operator) is stopped too, journaled first, before any swap.
            self.hold_still(&mut plan, &targets)
        });
        match held {
            Ok(w) => warnings.extend(w),
            Err(e) => {
                return Err(restart_then_rollback(
                    &plan,
                    workload_failed(&e),
                    format!("{e}; the live data was not touched"),
                ));
            }
        }
        // A swap that fails undoes the ones before it, so the restore is all
        // or nothing. A crash meanwhile is the recovery sweep's: it finishes
        // the swaps as soon as any volume is swapped.
        if let Err(e) = self.journal(&plan, JournalStep::Swapping) {
            return Err(restart_then_rollback(
                &plan,
                reasons::RESTORE_FAILED,
                format!("cannot write the restore journal: {e}; the live data was not touched"),
            ));
        }
        for (i, v) in plan.volumes.iter().enumerate() {
            if let Err(e) = fault::fail(&format!("restore:swap-{i}")).and_then(|()| swap_forward(v, sites.volume(i))) {
                let undone = (0..=i).rev().try_for_each(|j| unswap(&plan.volumes[j], sites.volume(j)));
                if let Err(e2) = undone {
                    // Cannot go back: leave it to the recovery sweep, which
                    // goes forward. The workload stays stopped until then.
                    return Err(RestoreFailure::Unfinished(format!(
                        "swapping {}: {e}; undoing the earlier swaps also failed: {e2}",
                        v.target.display()
                    )));
                }
                return Err(restart_then_rollback(
                    &plan,
                    reasons::RESTORE_FAILED,
                    format!(
                        "cannot swap {} into place: {e}; any volume already swapped was swapped back, so the live data was not touched",
                        v.target.display()
                    ),
                ));
            }
            if i == 0 {
                fault::point("restore:first-swapped");
            }
        }
        self.journal(&plan, JournalStep::Swapped).map_err(RestoreFailure::Unfinished)?;
        // Whatever came up between the last check and the swap holds the
        // old directory: stop it too, so it starts again on the new data.
        match self.hold_still(&mut plan, &targets) {
            Ok(w) => warnings.extend(w),
            Err(e) if e.unreachable => {
                return Err(RestoreFailure::WaitingForRuntime(format!(
                    "the data was restored, but {} stopped answering ({e}); the recovery sweep starts the workload when it answers",
                    self.workload.runtime_name()
                )));
            }
            Err(e) => warnings.push(format!("after the swap: {e}")),
        }
        let (started, failed) = resume_in_order(self.workload, &plan.stopped, |_| {});
        // Only a workload that was stopped had downtime. Microseconds: a
        // swap takes about 1 ms, which millisecond rounding reports as 0.
        plan.downtime_seconds = (!plan.stopped.is_empty()).then(|| (down.elapsed().as_secs_f64() * 1e6).round() / 1e6);
        warnings.extend(started);
        match failed {
            None => {}
            // The journal stays at Swapped: the recovery sweep starts it.
            Some(e) if e.unreachable => {
                return Err(RestoreFailure::WaitingForRuntime(format!(
                    "the data was restored, but starting the workload again failed ({e}); the recovery sweep starts it when {} answers",
                    self.workload.runtime_name()
                )));
            }
            Some(e) => {
                return Err(RestoreFailure::Unfinished(format!(
                    "the data was restored, but starting the workload again failed ({e}); the recovery sweep retries"
                )));
            }
        }
        self.journal(&plan, JournalStep::Started).map_err(RestoreFailure::Unfinished)?;
        let (pre, more) = finish_after_swap(self.store, &plan, sites, self.cancel, &self.progress.archived_replaced)?;
        warnings.extend(more);
        Ok(RestoreOutcome { volumes, downtime_seconds: plan.downtime_seconds, pre_restore: pre, warnings })
    }
}

impl Executor<'_> {
    /// Stops every unit that uses `targets` and is live now, until none is
    /// (at most [`HOLD_ROUNDS`] rounds): units the plan did not know are
    /// journaled before they are stopped, so they are started again too.
    /// Returns what the operator should know.
    fn hold_still(&self, plan: &mut RestorePlan, targets: &[PathBuf]) -> Result<Vec<String>, WorkloadError> {
        let mut warnings = Vec::new();
        for _ in 0..HOLD_ROUNDS {
            let live = self.workload.plan_stop(targets, Purpose::Restore)?;
            if live.is_empty() {
                return Ok(warnings);
            }
            for u in &live {
                warnings.push(format!(
                    "{} came up while volsnap held the workload stopped for the restore; it was stopped again before it could use the replaced data",
                    self.workload.describe(u)
                ));
                if !plan.stopped.iter().any(|s| s.id == u.id) {
                    plan.stopped.push(u.clone());
                }
            }
            let step =
                self.store.journal_get(&plan.restore.uid).ok().flatten().and_then(|r| JournalStep::parse(&r.step));
            record_step(self.store, plan, step.unwrap_or(JournalStep::Stopping))
                .map_err(|e| WorkloadError::refused("journaling", "the workload", e))?;
            warnings.extend(self.workload.stop(&live, plan.stop_timeout_seconds)?);
        }
        Err(WorkloadError::refused(
            "holding",
            "the workload",
            format!(
                "containers using the targets kept coming back after {HOLD_ROUNDS} rounds of stopping them (a restart policy?); the restore does not swap under them"
            ),
        ))
    }
}

/// Moves a restored staging root onto `spec.targetPath`. An existing empty
/// directory there is replaced, and the restored directory takes its mode
/// and owner (the operator prepared it); a new one gets mode 0755. Until
/// then the staging root stays private (0700), so nobody reads half a
/// restore.
fn move_into_new_directory(site: &Site, staging: &Path, target: &Path) -> std::io::Result<()> {
    let staged = site.open_dir(staging)?;
    if site.id(target)?.is_none() {
        rustix::fs::fchmod(staged.fd(), rustix::fs::Mode::from_raw_mode(0o755))?;
        return site.rename_noreplace(staging, target);
    }
    let existing = site.open_dir(target)?;
    let st = rustix::fs::fstat(existing.fd())?;
    if rustix::fs::Dir::read_from(existing.reopen()?)?.filter_map(Result::ok).any(|e| {
        let n = e.file_name().to_bytes();
        n != b"." && n != b".."
    }) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} is no longer empty", target.display()),
        ));
    }
    if rustix::process::geteuid().is_root() {
        rustix::fs::fchown(
            staged.fd(),
            Some(rustix::fs::Uid::from_raw(st.st_uid)),
            Some(rustix::fs::Gid::from_raw(st.st_gid)),
        )?;
    }
    rustix::fs::fchmod(staged.fd(), rustix::fs::Mode::from_raw_mode(st.st_mode & 0o7777))?;
    site.rename_replace(staging, target)
}

/// What the extraction did not restore as the archive records it, in words
/// for the restore's status message.
fn extract_notes(x: &Extracted) -> Vec<String> {
    let mut notes = Vec::new();
    if x.stripped.count > 0 {
        notes.push(format!(
            "the archive was made elsewhere (adopted), so setuid/setgid bits, file capabilities and other security.*/trusted.* attributes were not restored on {} file(s), e.g. {}",
            x.stripped.count,
            x.stripped.example.as_deref().unwrap_or("?")
        ));
    }
    if x.xattrs_not_restored.count > 0 {
        notes.push(format!(
            "{} extended attribute(s) could not be restored, e.g. {}",
            x.xattrs_not_restored.count,
            x.xattrs_not_restored.example.as_deref().unwrap_or("?")
        ));
    }
    notes
}

fn restored_volumes(plan: &RestorePlan, report: &VerifyReport) -> Vec<RestoredVolume> {
    plan.volumes
        .iter()
        .map(|v| {
            let counts = report.volumes.iter().find(|r| r.index == v.index);
            RestoredVolume {
                name: v.name.clone(),
                path: v.target.display().to_string(),
                files: counts.map(|c| c.files).unwrap_or(0),
                bytes: counts.map(|c| c.bytes).unwrap_or(0),
            }
        })
        .collect()
}

/// Removes every staging directory of the plan (not the old data).
pub(super) fn remove_staging(plan: &RestorePlan, sites: &Sites) -> std::io::Result<()> {
    if let (Destination::NewDirectory { staging, .. }, Sites::NewDirectory(site)) = (&plan.destination, sites) {
        return site.remove_tree(staging);
    }
    for (i, v) in plan.volumes.iter().enumerate() {
        sites.volume(i).remove_tree(&v.staging)?;
    }
    Ok(())
}
