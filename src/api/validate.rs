//! Semantic validation that serde and the schema cannot express, shared by
//! both front-ends. Every error names the offending field.

use std::collections::HashSet;
use std::path::{Component, Path};

use super::{Compression, RestoreQuiesce, SnapshotSource};
use super::{Object, VolumeRestoreSpec, VolumeSnapshotScheduleSpec, VolumeSnapshotSpec};
use crate::core::schedule::CronSchedule;

/// A field path and what is wrong with it.
pub type FieldError = (String, String);

/// Longest file name Linux file systems accept (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Longest pid in a temporary file name (`pid_max` is at most 2^22).
const PID_DIGITS: usize = 7;

/// Longest object name volsnap can keep a status file for: the temporary
/// file of its atomic replace is `.<name>.yaml.<pid>.tmp`.
pub const MAX_OBJECT_NAME: usize = NAME_MAX - (".".len() + ".yaml".len() + ".".len() + PID_DIGITS + ".tmp".len());

/// Longest snapshot name volsnap can name archive files after: the longest
/// is the temporary file of the checksum of a zstd archive renamed beside a
/// retained one, `.<name>-<uid8>.tar.zst.sha256.<pid>.tmp` (`.partial` and
/// the status file are shorter).
pub const MAX_SNAPSHOT_NAME: usize =
    NAME_MAX - (".".len() + "-".len() + 8 + ".tar.zst".len() + ".sha256".len() + ".".len() + PID_DIGITS + ".tmp".len());

/// The suffix of a restore's pre-restore snapshot.
const PRE_RESTORE_SUFFIX: &str = "-pre-restore";

/// Longest restore name while `keepPreRestore` is true: the replaced data
/// becomes the snapshot `<restore>-pre-restore`.
pub const MAX_RESTORE_NAME_KEEPING: usize = MAX_SNAPSHOT_NAME - PRE_RESTORE_SUFFIX.len();

/// Longest schedule name: its snapshots are `<schedule>-<yyyymmddhhmmss>`.
pub const MAX_SCHEDULE_NAME: usize = MAX_SNAPSHOT_NAME - "-yyyymmddhhmmss".len();

/// Validates a parsed object.
pub fn object(obj: &Object) -> Result<(), FieldError> {
    let name = obj.meta().name.as_deref().unwrap_or_default();
    match obj {
        Object::Snapshot(s) => {
            name_fits(
                name,
                MAX_SNAPSHOT_NAME,
                "the archive files named after it (<name>-<uid>.tar.zst.sha256 and its temporary file)",
            )?;
            snapshot_spec("spec", &s.spec)
        }
        Object::Restore(r) => {
            if r.spec.keep_pre_restore {
                name_fits(
                    name,
                    MAX_RESTORE_NAME_KEEPING,
                    "with keepPreRestore true, the snapshot <name>-pre-restore and its archive files",
                )?;
            }
            restore_spec("spec", &r.spec)
        }
        Object::Schedule(s) => {
            name_fits(name, MAX_SCHEDULE_NAME, "its snapshots <name>-<yyyymmddhhmmss> and their archive files")?;
            schedule_spec("spec", &s.spec)
        }
    }
}

/// Refuses a name longer than `max`, saying what would not fit.
fn name_fits(name: &str, max: usize, what: &str) -> Result<(), FieldError> {
    if name.len() <= max {
        return Ok(());
    }
    Err((
        "metadata.name".into(),
        format!(
            "must be at most {max} characters, found {}: {what} must fit the {NAME_MAX}-byte file name limit",
            name.len()
        ),
    ))
}

/// Validates a snapshot spec; `at` is the path of the spec itself.
pub fn snapshot_spec(at: &str, spec: &VolumeSnapshotSpec) -> Result<(), FieldError> {
    source(&format!("{at}.source"), &spec.source)?;
    if let Some(node) = &spec.node_name {
        dns_subdomain(node).map_err(|e| (format!("{at}.nodeName"), e))?;
    }
    level(at, spec.compression, spec.level)?;
    stop_timeout(at, spec.stop_timeout_seconds)
}

/// `level`: within the range of the chosen compression.
fn level(at: &str, compression: Compression, level: Option<u32>) -> Result<(), FieldError> {
    let range = compression.levels();
    match level {
        Some(l) if !range.contains(&l) => Err((
            format!("{at}.level"),
            format!(
                "{l} is out of range: {} levels are {} to {} (default {})",
                compression.as_str(),
                range.start(),
                range.end(),
                compression.default_level()
            ),
        )),
        _ => Ok(()),
    }
}

fn source(at: &str, src: &SnapshotSource) -> Result<(), FieldError> {
    let set = src.set_fields();
    if set.len() != 1 {
        let found = if set.is_empty() { "none".to_string() } else { set.join(", ") };
        return Err((
            at.into(),
            format!(
                "exactly one of paths, container, volume, persistentVolumeClaim, archive must be set; found {found}"
            ),
        ));
    }
    if let Some(paths) = &src.paths {
        if paths.is_empty() {
            return Err((format!("{at}.paths"), "must list at least one directory".into()));
        }
        if paths.len() > 64 {
            return Err((format!("{at}.paths"), "at most 64 directories per snapshot".into()));
        }
        let mut names = HashSet::new();
        for (i, p) in paths.iter().enumerate() {
            host_path(&p.path).map_err(|e| (format!("{at}.paths[{i}].path"), e))?;
            if let Some(name) = &p.name {
                dns_label(name).map_err(|e| (format!("{at}.paths[{i}].name"), e))?;
                if !names.insert(name.as_str()) {
                    return Err((format!("{at}.paths[{i}].name"), format!("duplicate volume name {name:?}")));
                }
            }
        }
    }
    if let Some(c) = &src.container {
        docker_name(c).map_err(|e| (format!("{at}.container"), e))?;
    }
    if let Some(v) = &src.volume {
        docker_name(v).map_err(|e| (format!("{at}.volume"), e))?;
    }
    if let Some(pvc) = &src.persistent_volume_claim {
        dns_subdomain(pvc).map_err(|e| (format!("{at}.persistentVolumeClaim"), e))?;
    }
    if let Some(a) = &src.archive {
        host_path(&a.path).map_err(|e| (format!("{at}.archive.path"), e))?;
    }
    Ok(())
}

/// Validates a restore spec.
pub fn restore_spec(at: &str, spec: &VolumeRestoreSpec) -> Result<(), FieldError> {
    dns_subdomain(&spec.snapshot_name).map_err(|e| (format!("{at}.snapshotName"), e))?;
    if let Some(volumes) = &spec.volumes {
        if volumes.is_empty() {
            return Err((
                format!("{at}.volumes"),
                "must name at least one volume, or be left out to restore all".into(),
            ));
        }
        let mut seen = HashSet::new();
        for (i, v) in volumes.iter().enumerate() {
            dns_label(v).map_err(|e| (format!("{at}.volumes[{i}]"), e))?;
            if !seen.insert(v.as_str()) {
                return Err((format!("{at}.volumes[{i}]"), format!("duplicate volume name {v:?}")));
            }
        }
    }
    if let Some(t) = &spec.target_path {
        host_path(t).map_err(|e| (format!("{at}.targetPath"), e))?;
    }
    if spec.quiesce == RestoreQuiesce::None && spec.target_path.is_none() {
        return Err((
            format!("{at}.quiesce"),
            "None is only allowed with targetPath: live data is never replaced under a running workload".into(),
        ));
    }
    stop_timeout(at, spec.stop_timeout_seconds)
}

/// `stopTimeoutSeconds`: 1 to 3600 (as the CRD's schema says).
fn stop_timeout(at: &str, t: Option<u32>) -> Result<(), FieldError> {
    match t {
        Some(t) if !(1..=3600).contains(&t) => Err((
            format!("{at}.stopTimeoutSeconds"),
            format!("{t} is out of range: give each container 1 to 3600 seconds to stop"),
        )),
        _ => Ok(()),
    }
}

/// Validates a schedule spec.
pub fn schedule_spec(at: &str, spec: &VolumeSnapshotScheduleSpec) -> Result<(), FieldError> {
    // Parsed as the scheduler will read it, so that what is accepted runs.
    if let Err(e) = CronSchedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        let field = if e.is_time_zone() { "timeZone" } else { "schedule" };
        return Err((format!("{at}.{field}"), e.to_string()));
    }
    if let Some(r) = &spec.retention {
        let keeps = [r.keep_last, r.keep_hourly, r.keep_daily, r.keep_weekly, r.keep_monthly, r.keep_yearly];
        if keeps.iter().all(|k| k.unwrap_or(0) == 0) {
            return Err((
                format!("{at}.retention"),
                "every keep rule is 0, which would delete every snapshot but the newest; set at least one (keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepYearly), or leave retention out to keep them all".into(),
            ));
        }
    }
    snapshot_spec(&format!("{at}.snapshotTemplate.spec"), &spec.snapshot_template.spec)
}

/// A host path in a manifest: absolute, normalised enough that what the user
/// sees is what is checked (no `..`, no NUL).
pub fn host_path(p: &str) -> Result<(), String> {
    if p.contains('\0') {
        return Err("must not contain NUL bytes".into());
    }
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(format!("must be an absolute path, found {p:?}"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("must not contain '..' components, found {p:?}"));
    }
    Ok(())
}

/// RFC 1123 label: what Kubernetes requires of namespaces and volume names.
pub fn dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("must be 1 to 63 characters, found {}", s.len()));
    }
    if !label_chars_ok(s) {
        return Err(format!(
            "must consist of lower-case letters, digits and '-', and start and end with a letter or digit; found {s:?}"
        ));
    }
    Ok(())
}

/// RFC 1123 subdomain: what Kubernetes requires of object names.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("must be 1 to 253 characters, found {}", s.len()));
    }
    if !s.split('.').all(label_chars_ok) {
        return Err(format!(
            "must consist of lower-case letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit; found {s:?}"
        ));
    }
    Ok(())
}

fn label_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A Docker container or volume name (or ID): `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn docker_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(format!("must match [a-zA-Z0-9][a-zA-Z0-9_.-]*, found {s:?}")) }
}

/// A 5-field cron expression, read as [`CronSchedule::parse`] reads it.
pub fn cron(expr: &str) -> Result<(), String> {
    CronSchedule::parse(expr, None).map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_that_keeps_nothing_is_refused() {
        let doc = |retention: &str| {
            format!(
                "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshotSchedule\nmetadata: {{name: s}}\nspec:\n  schedule: \"0 3 * * *\"\n  snapshotTemplate: {{spec: {{source: {{paths: [{{path: /srv/a}}]}}}}}}\n{retention}"
            )
        };
        let parse = |text: String| {
            let value: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
            crate::api::Object::from_value(value)
        };
        match parse(doc("  retention: {keepLast: 0, keepDaily: 0}\n")) {
            Err(crate::api::ParseError::Invalid { field, message, .. }) => {
                assert_eq!(field, "spec.retention");
                assert!(message.contains("would delete every snapshot"), "{message}");
            }
            other => panic!("refused with the field named: {other:?}"),
        }
        assert!(parse(doc("  retention: {keepYearly: 1}\n")).is_ok());
        assert!(parse(doc("")).is_ok(), "no retention keeps everything");
    }

    #[test]
    fn dns_names() {
        assert!(dns_label("app-data-1").is_ok());
        assert!(dns_label("App").is_err());
        assert!(dns_label("-a").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_subdomain("a.b-c.d").is_ok());
        assert!(dns_subdomain("a..b").is_err());
        assert!(dns_subdomain("../etc").is_err());
    }

    #[test]
    fn host_paths() {
        assert!(host_path("/srv/app").is_ok());
        assert!(host_path("srv/app").unwrap_err().contains("absolute"));
        assert!(host_path("/srv/../etc").unwrap_err().contains(".."));
        assert!(host_path("/srv/a\0b").is_err());
    }

    #[test]
    fn name_limits_match_the_names_volsnap_derives() {
        assert_eq!((MAX_OBJECT_NAME, MAX_SNAPSHOT_NAME), (237, 218));
        assert_eq!((MAX_RESTORE_NAME_KEEPING, MAX_SCHEDULE_NAME), (206, 203));
        assert_eq!(PRE_RESTORE_SUFFIX, crate::engine::restore::PRE_RESTORE_SUFFIX);
        // The longest names volsnap derives at these limits can be created.
        let dir = tempfile::tempdir().unwrap();
        let pid = "4194304";
        let snap = "s".repeat(MAX_SNAPSHOT_NAME);
        let restore_snap = format!("{}{PRE_RESTORE_SUFFIX}", "r".repeat(MAX_RESTORE_NAME_KEEPING));
        let scheduled = format!("{}-20261123100000", "c".repeat(MAX_SCHEDULE_NAME));
        for name in [&snap, &restore_snap, &scheduled] {
            assert_eq!(name.len(), MAX_SNAPSHOT_NAME);
            for file in [
                format!(".{name}-0123abcd.tar.zst.sha256.{pid}.tmp"),
                format!(".{name}-0123abcd.tar.zst.partial"),
                format!(".{name}.yaml.{pid}.tmp"),
            ] {
                std::fs::write(dir.path().join(&file), b"").unwrap_or_else(|e| panic!("{file}: {e}"));
            }
        }
        let status = format!(".{}.yaml.{pid}.tmp", "o".repeat(MAX_OBJECT_NAME));
        std::fs::write(dir.path().join(status), b"").unwrap();
        // One more character would not fit.
        let over = format!(".{}-0123abcd.tar.zst.sha256.{pid}.tmp", "s".repeat(MAX_SNAPSHOT_NAME + 1));
        assert!(std::fs::write(dir.path().join(over), b"").is_err());
    }

    #[test]
    fn cron_expressions() {
        assert!(cron("0 3 * * *").is_ok());
        assert!(cron("*/15 0-6 1,15 jan-mar mon-fri").is_ok());
        assert!(cron("0 3 * *").unwrap_err().contains("5 fields"));
        assert!(cron("60 3 * * *").unwrap_err().contains("outside"));
        assert!(cron("*/0 3 * * *").unwrap_err().contains("step"));
        assert!(cron("0 0 30 2 *").unwrap_err().contains("never runs"));
    }

    #[test]
    fn schedule_errors_name_the_field() {
        let spec = |schedule: &str, tz: Option<&str>| -> VolumeSnapshotScheduleSpec {
            serde_json::from_value(serde_json::json!({
                "schedule": schedule,
                "timeZone": tz,
                "snapshotTemplate": {"spec": {"source": {"paths": [{"path": "/srv/app"}]}}},
            }))
            .unwrap()
        };
        assert_eq!(schedule_spec("spec", &spec("30 2 * * MON-FRI", Some("Europe/Berlin"))), Ok(()));
        assert_eq!(schedule_spec("spec", &spec("0 3 * * *", None)), Ok(()));
        let (at, msg) = schedule_spec("spec", &spec("0 3 * * *", Some("Europe/Berlim"))).unwrap_err();
        assert_eq!(at, "spec.timeZone");
        assert!(msg.contains("unknown IANA time zone \"Europe/Berlim\""), "{msg}");
        let (at, msg) = schedule_spec("spec", &spec("0 3 * * 8", Some("Europe/Berlin"))).unwrap_err();
        assert_eq!(at, "spec.schedule");
        assert!(msg.contains("day-of-week field \"8\""), "{msg}");
    }

    #[test]
    fn compression_levels_are_checked_per_compression() {
        let snapshot = |compression: Option<&str>, level: Option<u32>| -> VolumeSnapshotSpec {
            serde_json::from_value(serde_json::json!({
                "source": {"paths": [{"path": "/srv/app"}]},
                "compression": compression.unwrap_or("gzip"),
                "level": level,
            }))
            .unwrap()
        };
        // (compression, level, accepted)
        let table: &[(Option<&str>, Option<u32>, bool)] = &[
            (None, None, true),
            (None, Some(1), true),
            (None, Some(9), true),
            (None, Some(0), false),
            (None, Some(10), false),
            (None, Some(19), false),
            (Some("zstd"), None, true),
            (Some("zstd"), Some(1), true),
            (Some("zstd"), Some(10), true),
            (Some("zstd"), Some(19), true),
            (Some("zstd"), Some(0), false),
            (Some("zstd"), Some(20), false),
            (Some("zstd"), Some(22), false),
        ];
        for &(compression, level, accepted) in table {
            let got = snapshot_spec("spec", &snapshot(compression, level));
            assert_eq!(got.is_ok(), accepted, "{compression:?} level {level:?}: {got:?}");
            if let Err((at, msg)) = got {
                assert_eq!(at, "spec.level");
                let name = compression.unwrap_or("gzip");
                assert!(msg.contains(&format!("{name} levels are")), "{msg}");
            }
        }
        // A schedule's template is the same spec, checked the same way.
        let schedule: VolumeSnapshotScheduleSpec = serde_json::from_value(serde_json::json!({
            "schedule": "0 3 * * *",
            "snapshotTemplate": {"spec": {"source": {"paths": [{"path": "/srv/app"}]}, "level": 12}},
        }))
        .unwrap();
        let (at, msg) = schedule_spec("spec", &schedule).unwrap_err();
        assert_eq!(at, "spec.snapshotTemplate.spec.level");
        assert_eq!(msg, "12 is out of range: gzip levels are 1 to 9 (default 6)");
    }
}
