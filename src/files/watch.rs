//! Watching the manifests directory. File events are a hint to rescan, not
//! the truth (they can be lost, coalesced or never come: a directory that is
//! replaced or remounted), so the daemon also rescans periodically and
//! re-establishes the watch whenever the directory's identity changes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// A watch on one directory that can be re-established.
pub struct DirWatch {
    dir: PathBuf,
    tx: mpsc::Sender<()>,
    current: Option<(RecommendedWatcher, (u64, u64))>,
}

impl DirWatch {
    /// Creates the watch; events arrive on the returned receiver (coalesced:
    /// one pending wake-up at most).
    pub fn new(dir: &Path) -> (DirWatch, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel(1);
        let mut w = DirWatch { dir: dir.to_path_buf(), tx, current: None };
        w.refresh();
        (w, rx)
    }

    /// (Re-)establishes the watch if the directory appeared, vanished or was
    /// replaced since the last call.
    pub fn refresh(&mut self) {
        let identity = std::fs::metadata(&self.dir).ok().filter(|m| m.is_dir()).map(|m| (m.dev(), m.ino()));
        let watched = self.current.as_ref().map(|(_, id)| *id);
        if identity == watched {
            return;
        }
        self.current = None;
        let Some(identity) = identity else {
            return;
        };
        let tx = self.tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Opens and reads (the daemon's own scans included) change
            // nothing: waking on them made every scan trigger the next.
            if res.is_ok_and(|ev| !matches!(ev.kind, notify::EventKind::Access(_))) {
                let _ = tx.try_send(());
            }
        });
        match watcher {
            Ok(mut w) => match w.watch(&self.dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %self.dir.display(), "Watching manifests directory");
                    self.current = Some((w, identity));
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "Could not watch manifests directory; relying on periodic resync")
                }
            },
            Err(e) => tracing::warn!(error = %e, "Could not create a file watcher; relying on periodic resync"),
        }
    }
}
