//! End-to-end tests of the `volsnap` binary in files mode: manifests dropped
//! into a watched directory, status files, archives read back with GNU tar,
//! failure handling, and the read-only commands.
//!
//! One test binary (`cargo test --test e2e`); every test works in its own
//! temporary directory and starts its own daemon. Tests that need root
//! (mounts, chown, setpriv) print "SKIPPED ..." and pass when not root.

mod apply;
mod capture;
mod cli;
mod docker;
mod docker_hold;
mod dockerd;
mod examples;
mod faults;
mod fidelity;
mod hardening;
mod hostile;
mod invalid;
mod kube;
mod lifecycle;
mod manifests;
mod metrics;
mod races;
mod restore;
mod rss;
mod schedules;
mod selftest;
mod util;
