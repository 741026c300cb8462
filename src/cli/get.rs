//! `volsnap get`: list objects as a table driven by the CRD printer columns,
//! or as a kubectl `List` in YAML or JSON.

use std::io::Write;
use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceColumnDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::table::{GET_STYLE, Table};
use super::{CliError, OutputFormat, human_age, jsonpath};
use crate::api::{Kind, VolumeRestore, VolumeSnapshot, VolumeSnapshotSchedule};
use crate::store::{Store, StoredObject};

/// What a cell shows when the column's path leads nowhere.
pub(crate) const NONE: &str = "<none>";

/// `volsnap get <kind>`: lists the stored objects of `kind` in `namespace`
/// (`None`: all namespaces, as `-A`).
///
/// - table / wide: the columns of the kind's CRD (`additionalPrinterColumns`),
///   `NAME` first and `NAMESPACE` before it for all namespaces; the priority
///   columns only with wide. Nothing found prints `No resources found in
///   <ns> namespace.` (or `No resources found`) and succeeds.
/// - yaml / json: a `v1` `List` of the whole stored objects (possibly empty).
///
/// The state is opened read-only; no database at `state_dir` is
/// [`crate::store::StoreError::NoState`].
pub fn get(
    state_dir: &Path,
    archives_dir: &Path,
    kind: Kind,
    namespace: Option<&str>,
    output: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let store = Store::open_read_only(state_dir, archives_dir)?;
    let objects = store.objects(Some(kind), namespace)?;
    write_objects(kind, namespace, &objects, output, jiff::Timestamp::now(), out)
}

/// Renders `objects` (already filtered) as `get` prints them, with ages
/// relative to `now`.
pub(crate) fn write_objects(
    kind: Kind,
    namespace: Option<&str>,
    objects: &[StoredObject],
    output: OutputFormat,
    now: jiff::Timestamp,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match output {
        OutputFormat::Table | OutputFormat::Wide => {
            if objects.is_empty() {
                match namespace {
                    Some(ns) => writeln!(out, "No resources found in {ns} namespace.")?,
                    None => writeln!(out, "No resources found")?,
                }
            } else {
                let table = table(kind, namespace.is_none(), output == OutputFormat::Wide, objects, now);
                out.write_all(table.render(GET_STYLE, "").as_bytes())?;
            }
        }
        OutputFormat::Yaml => {
            serde_yaml_ng::to_writer(&mut *out, &list(objects))?;
        }
        OutputFormat::Json => {
            write_pretty_json(&list(objects), out)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Pretty JSON with kubectl's 4-space indentation, and a final newline.
pub(crate) fn write_pretty_json(value: &impl serde::Serialize, out: &mut dyn Write) -> Result<(), CliError> {
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, formatter);
    value.serialize(&mut ser)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// A kubectl `List` of the objects.
fn list(objects: &[StoredObject]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": objects.iter().map(|o| o.object.clone()).collect::<Vec<_>>(),
        "metadata": {"resourceVersion": ""},
    })
}

/// The printer columns of a kind's CRD, in CRD order.
pub(crate) fn printer_columns(kind: Kind) -> Vec<CustomResourceColumnDefinition> {
    let crd = match kind {
        Kind::Snapshot => VolumeSnapshot::crd(),
        Kind::Restore => VolumeRestore::crd(),
        Kind::Schedule => VolumeSnapshotSchedule::crd(),
    };
    crd.spec.versions.into_iter().next().and_then(|v| v.additional_printer_columns).unwrap_or_default()
}

fn table(kind: Kind, all_namespaces: bool, wide: bool, objects: &[StoredObject], now: jiff::Timestamp) -> Table {
    let columns: Vec<_> = printer_columns(kind).into_iter().filter(|c| wide || c.priority.unwrap_or(0) <= 0).collect();
    let mut headers = Vec::new();
    if all_namespaces {
        headers.push("NAMESPACE".to_string());
    }
    headers.push("NAME".to_string());
    headers.extend(columns.iter().map(|c| c.name.to_uppercase()));
    let mut table = Table::new(headers);
    for obj in objects {
        let mut row = Vec::new();
        if all_namespaces {
            row.push(obj.key.namespace.clone());
        }
        row.push(obj.key.name.clone());
        for c in &columns {
            row.push(cell(jsonpath::eval(&obj.object, &c.json_path), &c.type_, now));
        }
        table.push(row);
    }
    table
}

/// Formats a printer-column value by the column's type.
pub(crate) fn cell(value: Option<&Value>, type_: &str, now: jiff::Timestamp) -> String {
    let value = match value {
        None | Some(Value::Null) => return NONE.to_string(),
        Some(v) => v,
    };
    match (type_, value) {
        ("date", Value::String(s)) => match s.parse::<jiff::Timestamp>() {
            Ok(ts) => human_age(ts, now),
            Err(_) => s.clone(),
        },
        ("integer", Value::Number(n)) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        (_, Value::String(s)) => s.clone(),
        (_, Value::Number(n)) => n.to_string(),
        (_, Value::Bool(b)) => b.to_string(),
        (_, other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::api::ObjectKey;

    fn snapshot(ns: &str, name: &str, uid: &str, status: Value) -> StoredObject {
        StoredObject {
            uid: uid.into(),
            key: ObjectKey { kind: Kind::Snapshot, namespace: ns.into(), name: name.into() },
            manifest_file: Some("snaps.yaml".into()),
            object: json!({
                "apiVersion": "volsnap.dev/v1alpha1",
                "kind": "VolumeSnapshot",
                "metadata": {"name": name, "namespace": ns, "uid": uid, "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"source": {"paths": [{"name": "data", "path": "/srv/app/data"}]}, "compression": "gzip"},
                "status": status,
            }),
        }
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        state: std::path::PathBuf,
        archives: std::path::PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let archives = state.join("archives");
        let store = Store::open(&state, &archives).unwrap();
        store
            .put_object(&snapshot(
                "default",
                "a",
                "u1",
                json!({"phase": "Completed", "volumeCount": 1,
                       "archive": {"sizeBytes": 123, "path": "/arch/a.tar.gz", "format": "tar+gzip", "sha256": "00"}}),
            ))
            .unwrap();
        store.put_object(&snapshot("other", "b-longer-name", "u2", json!({"phase": "Pending"}))).unwrap();
        drop(store);
        Fixture { _tmp: tmp, state, archives }
    }

    fn now() -> jiff::Timestamp {
        "2026-01-03T04:00:00Z".parse().unwrap()
    }

    fn run(fx: &Fixture, ns: Option<&str>, output: OutputFormat) -> String {
        let store = Store::open_read_only(&fx.state, &fx.archives).unwrap();
        let objects = store.objects(Some(Kind::Snapshot), ns).unwrap();
        let mut out = Vec::new();
        write_objects(Kind::Snapshot, ns, &objects, output, now(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn columns_come_from_the_crd() {
        let names: Vec<_> = printer_columns(Kind::Snapshot).into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["Phase", "Size", "Volumes", "Compression", "Archive", "Age"]);
        for kind in Kind::ALL {
            assert!(printer_columns(kind).iter().any(|c| c.name == "Age"), "{kind}");
        }
    }

    #[test]
    fn table_in_one_namespace() {
        let fx = fixture();
        let text = run(&fx, Some("default"), OutputFormat::Table);
        assert_eq!(text, "NAME   PHASE       SIZE   VOLUMES   AGE\na      Completed   123    1         2d4h\n");
    }

    #[test]
    fn all_namespaces_adds_namespace_and_missing_values_are_none() {
        let fx = fixture();
        let text = run(&fx, None, OutputFormat::Table);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAMESPACE   NAME            PHASE"), "{text}");
        assert_eq!(lines[1], "default     a               Completed   123      1         2d4h");
        assert_eq!(lines[2], "other       b-longer-name   Pending     <none>   <none>    2d4h");
    }

    #[test]
    fn wide_adds_priority_columns() {
        let fx = fixture();
        let text = run(&fx, Some("default"), OutputFormat::Wide);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "NAME   PHASE       SIZE   VOLUMES   COMPRESSION   ARCHIVE          AGE");
        assert_eq!(lines[1], "a      Completed   123    1         gzip          /arch/a.tar.gz   2d4h");
    }

    #[test]
    fn yaml_and_json_are_lists_of_whole_objects() {
        let fx = fixture();
        let yaml = run(&fx, None, OutputFormat::Yaml);
        let v: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "List");
        assert_eq!(v["items"].as_array().unwrap().len(), 2);
        assert_eq!(v["items"][0]["status"]["archive"]["sizeBytes"], 123);
        assert_eq!(v["items"][1]["metadata"]["name"], "b-longer-name");

        let text = run(&fx, Some("other"), OutputFormat::Json);
        assert!(text.contains("\n    \"items\": ["), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), 1);
        assert_eq!(v["items"][0]["status"]["phase"], "Pending");
    }

    #[test]
    fn nothing_found() {
        let fx = fixture();
        assert_eq!(run(&fx, Some("nowhere"), OutputFormat::Table), "No resources found in nowhere namespace.\n");
        let mut out = Vec::new();
        get(&fx.state, &fx.archives, Kind::Restore, None, OutputFormat::Wide, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "No resources found\n");
        let v: Value = serde_json::from_str(&run(&fx, Some("nowhere"), OutputFormat::Json)).unwrap();
        assert_eq!(v["items"], json!([]));
    }

    #[test]
    fn get_reads_the_store() {
        let fx = fixture();
        let mut out = Vec::new();
        get(&fx.state, &fx.archives, Kind::Snapshot, Some("default"), OutputFormat::Table, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("NAME   PHASE       SIZE   VOLUMES   AGE\na      Completed   123    1 "), "{text}");
    }

    #[test]
    fn missing_state_says_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("empty");
        fs::create_dir(&state).unwrap();
        let mut out = Vec::new();
        let err =
            get(&state, &state.join("archives"), Kind::Snapshot, None, OutputFormat::Table, &mut out).unwrap_err();
        assert!(matches!(err, CliError::Store(crate::store::StoreError::NoState { .. })), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("volsnap run") && msg.contains("--state"), "{msg}");
        assert!(out.is_empty());
    }

    #[test]
    fn cells_by_type() {
        let now = now();
        assert_eq!(cell(None, "string", now), "<none>");
        assert_eq!(cell(Some(&Value::Null), "integer", now), "<none>");
        assert_eq!(cell(Some(&json!(123)), "integer", now), "123");
        assert_eq!(cell(Some(&json!(5.0)), "integer", now), "5");
        assert_eq!(cell(Some(&json!(0.8)), "number", now), "0.8");
        assert_eq!(cell(Some(&json!(true)), "boolean", now), "true");
        assert_eq!(cell(Some(&json!("2026-01-03T03:59:15Z")), "date", now), "45s");
        assert_eq!(cell(Some(&json!("2026-01-03T04:05:00Z")), "date", now), "in 5m");
        assert_eq!(cell(Some(&json!("yesterday")), "date", now), "yesterday");
        assert_eq!(cell(Some(&json!(["a", "b"])), "string", now), "[\"a\",\"b\"]");
    }
}
