//! volsnap: a declarative reconciler for application data volumes.
//!
//! Crate map (one reconciler behind two thin drivers):
//!
//! - [`api`]: the `VolumeSnapshot`, `VolumeRestore` and `VolumeSnapshotSchedule`
//!   types, their validation, and the generated CRDs. Shared by both modes.
//! - [`reconcile`]: every decision and all orchestration: a driver hands it
//!   one object as observed now and gets back the status to write, the
//!   objects to create and when to look again. Behind [`reconcile::Runtime`]
//!   is what differs between a Docker host and a cluster.
//! - [`core`]: every status, computed by pure functions of (status, facts,
//!   now), and the condition transitions drivers report.
//! - [`engine`]: the I/O that does the work: resolving sources under the
//!   allowed roots and opening them beneath trusted descriptors, the capture
//!   pipeline, the archive format (writer, reader, verifier), the
//!   untrusted-archive extractor, restore with its journal and recovery,
//!   keyed per-volume locks, durable file helpers. Writes no API objects.
//! - [`docker`]: the Docker Engine as a runtime: a source of volumes and the
//!   workload that is paused, stopped and started (files mode).
//! - [`store`]: SQLite state: archives and journals (both modes), objects
//!   (files mode), versioned migrations, the start-up orphan sweep, the
//!   archives-directory containment check, directory locks.
//! - [`manifest`]: manifests as untrusted input: bounded YAML parsing, safe
//!   reading, decoding documents into declarations.
//! - [`files`]: the files-mode driver: scanning the manifests directory
//!   (deleting only on evidence), stored objects, passes through the
//!   reconciler, status files, the daemon loop (`volsnap run`).
//! - [`cluster`]: the Kubernetes driver (`volsnap controller`): node
//!   ownership, PVCs and scaled workloads as the runtime, status by
//!   server-side apply, Events, finalizers.
//! - [`metrics`], [`http`]: Prometheus metrics, and `/healthz`, `/readyz`,
//!   `/metrics` on `--http-addr`, for both modes.
//! - [`cli`]: the read-only commands (`get`, `describe`, `archive ...`) and
//!   their kubectl-style output.
#![deny(missing_docs)]

pub mod api;
pub mod cli;
pub mod cluster;
pub mod core;
pub mod docker;
pub mod engine;
pub mod files;
pub mod http;
pub mod manifest;
pub mod metrics;
pub mod reconcile;
pub mod store;
