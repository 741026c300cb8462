//! Scanning the manifests directory off the main loop, and bringing the
//! store in line with a finished scan.
//!
//! A scan reads and parses files written by people the daemon does not
//! trust; however long that takes, it must not hold up captures, restores,
//! status updates or a shutdown. So each scan runs on a thread of its own,
//! and the main loop applies its result when it arrives. The thread is not
//! joined: a shutdown never waits for a scan.

use std::collections::BTreeMap;
use std::time::Instant;

use super::daemon::Daemon;
use crate::api::{ObjectKey, Time};
use crate::manifest::dir::{Hold, Removals, SETTLE, Scan, Scanner};
use crate::store::{StoreError, StoredObject};

type Result2<T> = Result<T, StoreError>;

/// A finished scan, and the scanner (with its cache) to use for the next.
pub(super) struct ScanDone {
    scanner: Scanner,
    scan: Scan,
}

impl Daemon {
    /// Starts a scan, or (one is running) asks for another when it ends, so
    /// that a change made during a scan is never missed.
    pub(super) fn request_scan(&mut self) {
        let Some(mut scanner) = self.scanner.take() else {
            self.scan_again = true;
            return;
        };
        let dir = self.cfg.manifests.clone();
        let tx = self.scan_tx.clone();
        let spawned = std::thread::Builder::new().name("volsnap-scan".into()).spawn(move || {
            let scan = scanner.scan(&dir);
            let _ = tx.send(ScanDone { scanner, scan });
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "Could not start a thread to scan the manifests directory; retrying at the next resync");
            self.scanner = Some(Scanner::default());
        }
    }

    /// Whether no scan is running or asked for.
    pub(super) fn scan_idle(&self) -> bool {
        self.scanner.is_some() && !self.scan_again
    }

    /// Applies a finished scan (unless shutting down) and starts the next
    /// one if it was asked for meanwhile.
    pub(super) fn scan_done(&mut self, done: ScanDone) -> Result2<()> {
        self.scanner = Some(done.scanner);
        if self.shutting_down {
            return Ok(());
        }
        self.reconcile(&done.scan)?;
        self.scanned = true;
        if std::mem::take(&mut self.scan_again) {
            self.request_scan();
        }
        Ok(())
    }

    /// One level-triggered pass: brings the store in line with a scan.
    fn reconcile(&mut self, scan: &Scan) -> Result2<()> {
        if let Some(why) = &scan.dir_unavailable {
            if self.warned_dir.as_deref() != Some(why.as_str()) {
                tracing::warn!("{why}; keeping every object as it is until it is back");
                self.warned_dir = Some(why.clone());
            }
            return Ok(());
        }
        if self.warned_dir.take().is_some() {
            tracing::info!(dir = %self.cfg.manifests.display(), "Manifests directory is readable again");
        }
        let mut file_errors = scan.file_errors.clone();
        let mut stored: BTreeMap<ObjectKey, StoredObject> =
            self.store.objects(None, None)?.into_iter().map(|o| (o.key.clone(), o)).collect();
        for (key, decls) in &scan.declared {
            let existing = stored.remove(key);
            let winner = existing
                .as_ref()
                .and_then(|e| decls.iter().find(|d| Some(&d.file) == e.manifest_file.as_ref()))
                .unwrap_or(&decls[0]);
            for other in decls.iter().filter(|d| !std::ptr::eq(*d, winner)) {
                file_errors.entry(other.file.clone()).or_default().push(format!(
                    "document {}: conflict: {key} is already declared in {}; this declaration is ignored",
                    other.doc, winner.file
                ));
            }
            self.apply(key, winner, existing)?;
        }
        // Objects no longer declared anywhere. Objects volsnap made itself
        // (pre-restore snapshots) go last, once their owners' fate is known.
        let (made, declared): (Vec<_>, Vec<_>) = stored.into_iter().partition(|(_, o)| o.manifest_file.is_none());
        self.settle_at = None;
        self.gone_since.retain(|f, _| !scan.files.contains_key(f));
        self.removal_pending.clear();
        for (key, obj) in declared {
            self.remove_undeclared(scan, key, obj, &mut file_errors)?;
        }
        for (key, obj) in made {
            if !self.owner_exists(&obj)? {
                self.orphan(&key, obj)?;
            }
        }
        self.report_files(&file_errors);
        self.pass()
    }

    /// An object its manifest no longer declares: deleted only on positive
    /// evidence that the declaration is gone (see [`Removals`]), otherwise
    /// kept, and looked at again when its file has settled.
    fn remove_undeclared(
        &mut self,
        scan: &Scan,
        key: ObjectKey,
        obj: StoredObject,
        file_errors: &mut BTreeMap<String, Vec<String>>,
    ) -> Result2<()> {
        let file = obj.manifest_file.clone().unwrap_or_default();
        match scan.files.get(&file) {
            // Complete and settled.
            Some(Removals::Allowed) => self.delete(&key, obj)?,
            // Gone from a readable listing: for the settle period, or just now.
            None => {
                let first_seen = !self.gone_since.contains_key(&file);
                let since = *self.gone_since.entry(file.clone()).or_insert_with(Instant::now);
                if since.elapsed() >= SETTLE {
                    self.delete(&key, obj)?;
                } else {
                    if first_seen {
                        tracing::info!(
                        object = %key,
                        file,
                        "{file} is gone; deleting {key} if it stays gone for {}s (a file being replaced comes back)",
                        SETTLE.as_secs()
                    );
                    }
                    self.removal_pending.insert(obj.uid.clone());
                    self.wake_at(since + SETTLE);
                }
            }
            Some(Removals::After(at)) => {
                tracing::info!(
                    object = %key,
                    file,
                    "{file} no longer declares {key}, but changed less than {}s ago (a save may be in progress): keeping it, and deleting it if the file stays unchanged",
                    SETTLE.as_secs()
                );
                self.removal_pending.insert(obj.uid.clone());
                self.wake_at(*at);
            }
            Some(Removals::Held(Hold::NoFinalNewline)) => file_errors.entry(file.clone()).or_default().push(format!(
                "{key} is no longer declared in {file}, but the file does not end with a line break, as a save cut short would not: {key} is kept until the file ends with one (or is removed)"
            )),
            Some(Removals::Held(Hold::Reported | Hold::Vanished)) => {}
        }
        Ok(())
    }

    /// Asks for a scan at `at`, when a held removal may be decided.
    fn wake_at(&mut self, at: Instant) {
        self.settle_at = Some(self.settle_at.map_or(at, |t: Instant| t.min(at)));
    }

    fn report_files(&self, file_errors: &BTreeMap<String, Vec<String>>) {
        let now = Time::now().to_string();
        for (file, errors) in file_errors {
            tracing::warn!(file, errors = ?errors, "Manifest file has problems; see status/_invalid");
            if let Err(e) = self.status.write_invalid(file, errors, &now) {
                tracing::error!(file, error = %e, "Could not write invalid-manifest report");
            }
        }
        if let Err(e) = self.status.retain_invalid(&|f| file_errors.contains_key(f)) {
            tracing::error!(error = %e, "Could not clean up invalid-manifest reports");
        }
    }
}
