//! The files-mode front-end: objects come from YAML files in a watched
//! directory, status goes to status files (and SQLite). A thin driver over
//! [`crate::core`] and [`crate::engine`].

pub mod daemon;
pub mod manifests;
pub mod status;
mod watch;
pub mod yaml;

pub use daemon::{Config, DaemonError, RunOutcome, run};
