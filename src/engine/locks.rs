//! Keyed locks: one operation per volume at a time, shared by capture and
//! restore.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A set of held keys (canonical volume paths). `try_lock_all` takes every
/// key of an operation or none, so two operations never deadlock on each
/// other's half.
#[derive(Clone, Default, Debug)]
pub struct KeyedLocks {
    held: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Releases its keys when dropped (also on panic).
#[derive(Debug)]
pub struct KeyGuard {
    locks: KeyedLocks,
    keys: Vec<PathBuf>,
}

impl KeyedLocks {
    /// Takes all `keys`, or returns the first one that is busy.
    pub fn try_lock_all(&self, keys: Vec<PathBuf>) -> Result<KeyGuard, PathBuf> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(busy) = keys.iter().find(|k| held.iter().any(|h| overlaps(h, k))) {
            return Err(busy.clone());
        }
        held.extend(keys.iter().cloned());
        Ok(KeyGuard { locks: self.clone(), keys })
    }
}

/// Two volume paths conflict when one contains the other.
fn overlaps(a: &std::path::Path, b: &std::path::Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        for k in &self.keys {
            held.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_paths_conflict_and_guards_release() {
        let locks = KeyedLocks::default();
        let g = locks.try_lock_all(vec!["/srv/a".into()]).unwrap();
        assert_eq!(locks.try_lock_all(vec!["/srv/a/b".into()]).unwrap_err(), PathBuf::from("/srv/a/b"));
        assert!(locks.try_lock_all(vec!["/srv/ab".into()]).is_ok());
        drop(g);
        assert!(locks.try_lock_all(vec!["/srv/a/b".into()]).is_ok());
    }
}
