//! The files-mode driver: objects come from YAML files in a watched
//! directory, status goes to status files (and SQLite). Every decision about
//! them is the reconciler's ([`crate::reconcile`]); this module turns files
//! into objects and the reconciler's answers into status files.
//!
//! - `manifests`: reading the manifests directory with bounded work, and
//!   when a declaration counts as gone.
//! - `scanning`: scans off the main loop, and bringing the objects in line
//!   with a finished scan (deleting only on evidence).
//! - `objects`: declarations into stored objects (files mode is its own API
//!   server), spec edits, deletion.
//! - `pass`: every object through the reconciler, the status written back.
//! - `status`: the status files.
//! - `daemon`: the loop (`volsnap run`).

pub mod daemon;
pub mod manifests;
mod objects;
mod pass;
mod scanning;
pub mod status;
mod watch;

pub use daemon::{Config, DaemonError, RunOutcome, run};
