//! volsnap: a declarative reconciler for application data volumes.
//!
//! Crate map (front-ends are thin drivers over one core and one engine):
//!
//! - [`api`]: the `VolumeSnapshot`, `VolumeRestore` and `VolumeSnapshotSchedule`
//!   types, their validation, and the generated CRDs. Shared by both modes.
//! - [`core`]: the sans-IO reconcile core: conditions, and the decision of
//!   what to do next for an object given what is observed.
//! - [`engine`]: the I/O that does the work: resolving sources under the
//!   allowed roots, the capture pipeline, the archive format (writer, reader,
//!   verifier), keyed per-volume locks, durable file helpers.
//! - [`store`]: SQLite state (objects, archives), versioned migrations, the
//!   start-up orphan sweep, and the archives-directory containment check.
//! - [`files`]: the files-mode front-end: manifests directory scanning and
//!   watching, status files, and the daemon loop (`volsnap run`).
//! - [`cli`]: the read-only commands (`get`, `describe`, `archive ...`) and
//!   their kubectl-style output.
#![deny(missing_docs)]

pub mod api;
pub mod cli;
pub mod core;
pub mod docker;
pub mod engine;
pub mod files;
pub mod store;
