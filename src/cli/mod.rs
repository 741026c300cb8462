//! The commands besides the daemons: `get`, `describe`, `crds`,
//! `archive list` and `archive verify` (read-only, kubectl-style output),
//! and `apply` (hands a manifest to files mode and waits for it).
//!
//! Every command writes to the `out` it is given and never to the terminal
//! directly, so `main` decides where output goes and tests can capture it.
//! The state database is opened read-only ([`crate::store::Store::open_read_only`]), so the
//! commands are safe to run while a daemon is working on the same state.
//!
//! Output conventions follow kubectl:
//!
//! - `get` tables take their columns from the CRDs' `additionalPrinterColumns`
//!   (the same columns `kubectl get` shows in Kubernetes mode): `NAME` first,
//!   `NAMESPACE` before it with `-A`, priority columns only with `-o wide`,
//!   `date` columns as ages (`45s`, `3h5m`, `2d4h`), missing values `<none>`,
//!   columns separated by at least three spaces. A date in the future (such
//!   as a schedule's next run) is shown as `in 5m` where kubectl would print
//!   `<invalid>`.
//! - `-o yaml` / `-o json` print a `List` of the full stored objects, as
//!   `kubectl get -o yaml` does; an empty result is an empty list.
//! - `describe` renders the object like `kubectl describe` renders custom
//!   resources, with status conditions as a table.

pub mod apply;
mod archive;
mod describe;
mod get;
mod jsonpath;
mod table;

use std::io::Write;

use crate::api::Kind;
use crate::engine::archive::ArchiveError;
use crate::store::StoreError;

pub use archive::{archive_list, archive_verify};
pub use describe::describe;
pub use get::get;

/// Output format for get / archive list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns (the default).
    #[default]
    Table,
    /// The table with the extra (priority) columns.
    Wide,
    /// YAML.
    Yaml,
    /// Pretty-printed JSON.
    Json,
}

/// Errors of the read-only commands. Messages are meant for the user as they
/// are (`main` prints them after `error: `).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The state store could not be opened or read (no state at `--state`,
    /// schema too old or too new, SQLite failure).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An archive could not be read.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The requested object does not exist.
    #[error("{what}")]
    NotFound {
        /// What was looked for, e.g. `volumesnapshots "x" not found in namespace "default"`.
        what: String,
    },
    /// A resource type the command line does not know.
    #[error(
        "unknown resource type {0:?}: use snapshots (vsnap), restores (vrestore) or schedules (vsched); \
         singular and kind names work too"
    )]
    UnknownKind(String),
    /// A command-line argument is not acceptable (the message says why).
    #[error("{0}")]
    InvalidArgument(String),
    /// Writing the output failed (a closed pipe, a full disk).
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    /// YAML rendering failed.
    #[error("rendering YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// JSON rendering failed.
    #[error("rendering JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl CliError {
    /// Whether this is a write to a closed pipe (`volsnap get ... | head`),
    /// which a command-line program should end on quietly.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Parses the resource type word of `get` / `describe` (`snapshots`, `vsnap`,
/// `restore`, `VolumeSnapshotSchedule`, ...).
pub fn kind_from_cli(word: &str) -> Result<Kind, CliError> {
    Kind::from_cli(word).ok_or_else(|| CliError::UnknownKind(word.to_string()))
}

/// `volsnap crds`: the three CustomResourceDefinitions as one YAML stream.
pub fn crds(out: &mut dyn Write) -> Result<(), CliError> {
    out.write_all(crate::api::crd::all_yaml()?.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// A byte count for people: `123 B`, `4.2 MiB` (binary units, one decimal).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    // Switch up before rounding would print "1024.0 KiB".
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in whole seconds as kubectl prints ages (`HumanDuration` of
/// k8s.io/apimachinery): `45s`, `5m30s`, `12m`, `3h5m`, `20h`, `2d4h`,
/// `400d`, `2y10d`, `9y`. Negative durations print as `0s`.
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = hours / 24;
        let dy = days % 365;
        return if dy == 0 { format!("{}y", days / 365) } else { format!("{}y{dy}d", days / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of `then` at `now`, as `kubectl get` prints it. A time more than
/// a second in the future (clock skew aside: a schedule's next run) prints
/// as `in 5m`.
pub(crate) fn human_age(then: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let seconds = now.as_second() - then.as_second();
    if seconds < -1 { format!("in {}", human_duration(-seconds)) } else { human_duration(seconds) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_like_kubectl() {
        let cases = [
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (600, "10m"),
            (12 * 60 + 59, "12m"),
            (179 * 60, "179m"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (5 * 3600, "5h"),
            (8 * 3600 + 59 * 60, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400 + 4 * 3600, "2d4h"),
            (3 * 86400, "3d"),
            (8 * 86400, "8d"),
            (400 * 86400, "400d"),
            (2 * 365 * 86400 + 10 * 86400, "2y10d"),
            (3 * 365 * 86400, "3y"),
            (9 * 365 * 86400 + 5 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn future_ages() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let in_5m = jiff::Timestamp::from_second(1_800_000_300).unwrap();
        let almost_now = jiff::Timestamp::from_second(1_800_000_001).unwrap();
        assert_eq!(human_age(in_5m, now), "in 5m");
        assert_eq!(human_age(almost_now, now), "0s");
        assert_eq!(human_age(now, in_5m), "5m");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(4_404_019), "4.2 MiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn kinds_from_the_command_line() {
        assert_eq!(kind_from_cli("vsnap").unwrap(), Kind::Snapshot);
        let err = kind_from_cli("pods").unwrap_err();
        assert!(matches!(err, CliError::UnknownKind(_)));
        assert!(err.to_string().contains("\"pods\""), "{err}");
    }

    #[test]
    fn crds_print_all_three() {
        let mut out = Vec::new();
        crds(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for plural in ["volumesnapshots", "volumerestores", "volumesnapshotschedules"] {
            assert!(text.contains(&format!("name: {plural}.volsnap.dev")), "{plural}");
        }
    }
}
