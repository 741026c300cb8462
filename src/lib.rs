//! volsnap: a declarative reconciler for application data volumes.
//!
//! Crate map (front-ends are thin drivers over one core and one engine):
//!
//! - [`api`]: the `VolumeSnapshot`, `VolumeRestore` and `VolumeSnapshotSchedule`
//!   types, their validation, and the generated CRDs. Shared by both modes.
//! - [`core`]: the sans-IO reconcile core: conditions, and the decision of
//!   what to do next for an object given what is observed.
//! - [`engine`]: the I/O that does the work: resolving sources under the
//!   allowed roots and opening them beneath trusted descriptors, the capture
//!   pipeline, the archive format (writer, reader, verifier), the
//!   untrusted-archive extractor, restore with its journal and recovery,
//!   keyed per-volume locks, durable file helpers.
//! - [`docker`]: the Docker Engine as a source of volumes and as the
//!   workload that is paused, stopped and started (files mode).
//! - [`store`]: SQLite state (objects, archives), versioned migrations, the
//!   start-up orphan sweep, and the archives-directory containment check.
//! - [`files`]: the files-mode front-end: bounded parsing and scanning of the
//!   manifests directory (deleting only on evidence), watching, status
//!   files, and the daemon loop (`volsnap run`).
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
