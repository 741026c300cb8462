//! Prometheus metrics, shared by both modes: the reconciler records what
//! work ended how; drivers record the objects they hold by phase. Served as
//! OpenMetrics text on `/metrics` (see [`crate::http`]).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `result`: `succeeded`, `failed` or `interrupted`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// How the work ended.
    pub result: String,
}

/// One schedule.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabel {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub schedule: String,
}

/// Objects of one kind in one phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// `VolumeSnapshot`, `VolumeRestore`.
    pub kind: String,
    /// `Pending`, `InProgress`, `Completed`, `Failed`.
    pub phase: String,
}

/// Every metric volsnap exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Captures and adoptions that ended, by result.
    pub captures: Family<ResultLabel, Counter>,
    /// Bytes of file content captured.
    pub captured_bytes: Counter,
    /// Seconds from the start of a capture to its end.
    pub capture_seconds: Histogram,
    /// Sizes of the archives written, in bytes.
    pub archive_bytes: Histogram,
    /// Restores that ended, by result.
    pub restores: Family<ResultLabel, Counter>,
    /// Seconds from the start of a restore to its end.
    pub restore_seconds: Histogram,
    /// Seconds workloads were stopped by restores.
    pub restore_downtime_seconds: Histogram,
    /// When each schedule's newest snapshot completed (Unix seconds): alert
    /// when it is too old.
    pub schedule_last_success: Family<ScheduleLabel, Gauge<f64, AtomicU64>>,
    /// Objects by kind and phase, at the last pass.
    pub objects: Family<PhaseLabel, Gauge>,
    /// Reconciles that failed (and are retried).
    pub reconcile_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The metrics, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("volsnap");
        let m = Metrics {
            captures: Family::default(),
            captured_bytes: Counter::default(),
            capture_seconds: Histogram::new(exponential_buckets(0.5, 2.0, 16)),
            archive_bytes: Histogram::new(exponential_buckets(4096.0, 4.0, 16)),
            restores: Family::default(),
            restore_seconds: Histogram::new(exponential_buckets(0.5, 2.0, 16)),
            restore_downtime_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 12)),
            schedule_last_success: Family::default(),
            objects: Family::default(),
            reconcile_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("captures", "Captures and adoptions that ended, by result", m.captures.clone());
        registry.register("captured_bytes", "Bytes of file content captured", m.captured_bytes.clone());
        registry.register("capture_duration_seconds", "Duration of captures", m.capture_seconds.clone());
        registry.register("archive_size_bytes", "Sizes of the archives written", m.archive_bytes.clone());
        registry.register("restores", "Restores that ended, by result", m.restores.clone());
        registry.register("restore_duration_seconds", "Duration of restores", m.restore_seconds.clone());
        registry.register(
            "restore_downtime_seconds",
            "How long restores kept the workload stopped",
            m.restore_downtime_seconds.clone(),
        );
        registry.register(
            "schedule_last_success_timestamp_seconds",
            "When each schedule's newest snapshot completed",
            m.schedule_last_success.clone(),
        );
        registry.register("objects", "Objects by kind and phase", m.objects.clone());
        registry.register("reconcile_errors", "Reconciles that failed and are retried", m.reconcile_errors.clone());
        Metrics { registry, ..m }
    }

    /// The metrics in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Sets the objects-by-phase gauges from `(kind, phase)` of every
    /// object (phases not seen are set to 0, so a gauge never goes stale).
    pub fn set_objects<'a>(&self, objects: impl Iterator<Item = (&'a str, &'a str)>) {
        let mut counts = std::collections::BTreeMap::new();
        for kind in ["VolumeSnapshot", "VolumeRestore"] {
            for phase in ["Pending", "InProgress", "Completed", "Failed"] {
                counts.insert((kind.to_string(), phase.to_string()), 0i64);
            }
        }
        for (kind, phase) in objects {
            *counts.entry((kind.to_string(), phase.to_string())).or_default() += 1;
        }
        for ((kind, phase), n) in counts {
            self.objects.get_or_create(&PhaseLabel { kind, phase }).set(n);
        }
    }
}

/// The `result` label of one outcome.
pub fn result(label: &str) -> ResultLabel {
    ResultLabel { result: label.into() }
}
