//! Work in flight: a capture, an adoption or a restore running on a thread
//! of its own, polled by the reconciler (never pushed to one front-end).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::engine::capture::CaptureProgress;
use crate::engine::locks::KeyGuard;

/// One operation running on its own thread.
pub(super) struct Work<T> {
    /// Set on shutdown or deletion: the work stops at its next safe point.
    pub cancel: Arc<AtomicBool>,
    /// Bytes done and total, for `status.progress`.
    pub progress: Arc<CaptureProgress>,
    /// The result and the volume locks, once the thread has ended.
    result: Arc<Mutex<Option<(T, KeyGuard)>>>,
}

impl<T: Send + 'static> Work<T> {
    /// Runs `job` on a new thread holding `guard` (the volume locks) until it
    /// ends; `wake` is called once the result can be taken. A panic becomes
    /// `on_panic()`.
    pub fn spawn(
        name: &str,
        guard: KeyGuard,
        wake: impl Fn() + Send + 'static,
        on_panic: impl FnOnce() -> T + Send + 'static,
        job: impl FnOnce(&AtomicBool, &CaptureProgress) -> T + Send + 'static,
    ) -> std::io::Result<Work<T>> {
        let work = Work {
            cancel: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(CaptureProgress::default()),
            result: Arc::new(Mutex::new(None)),
        };
        let (cancel, progress, slot) = (work.cancel.clone(), work.progress.clone(), work.result.clone());
        std::thread::Builder::new().name(format!("volsnap-{name}")).spawn(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&cancel, &progress)))
                .unwrap_or_else(|_| on_panic());
            // The locks travel with the result: no other operation starts
            // on the volumes before this one's outcome is taken (and a
            // restore the journal keeps holds them on).
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some((out, guard));
            wake();
        })?;
        Ok(work)
    }

    /// The result and the locks, once the thread has ended (taken once).
    pub fn take(&self) -> Option<(T, KeyGuard)> {
        self.result.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Asks the work to stop at its next safe point.
    pub fn stop(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// `(bytes done, bytes total)` so far.
    pub fn progress(&self) -> (u64, u64) {
        (self.progress.bytes_done.load(Ordering::Relaxed), self.progress.bytes_total.load(Ordering::Relaxed))
    }
}
