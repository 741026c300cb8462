//! The files-mode driver: objects come from YAML files in a watched
//! directory, status goes to status files (and SQLite). Every decision about
//! them is the reconciler's ([`crate::reconcile`]); this module turns files
//! into objects and the reconciler's answers into status files.
//!
//! What the manifests directory holds, and when a declaration counts as
//! gone, is read by [`crate::manifest::dir`].
//!
//! - `scanning`: scans off the main loop, and bringing the objects in line
//!   with a finished scan (deleting only on evidence).
//! - `objects`: declarations into stored objects (files mode is its own API
//!   server), spec edits, deletion.
//! - `pass`: every object through the reconciler, the status written back.
//! - `status`: the status files.
//! - `daemon`: the loop (`volsnap run`).

pub mod daemon;
mod objects;
mod pass;
mod scanning;
pub mod status;
mod watch;

pub use daemon::{Config, DaemonError, RunOutcome, run};
