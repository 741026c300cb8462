//! `volsnap describe`: one object as `kubectl describe` shows custom
//! resources.

use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value};

use super::CliError;
use super::table::{DESCRIBE_STYLE, Table};
use crate::api::{Kind, ObjectKey};
use crate::store::Store;

/// `volsnap describe <kind> <name> -n <namespace>`: prints the object as
/// `kubectl describe` prints a custom resource: name, namespace, labels,
/// annotations, API version and kind, then `Metadata`, `Spec` and `Status`
/// rendered from the stored JSON with Title-Cased keys, and the status
/// conditions as a table. A missing object is [`CliError::NotFound`].
pub fn describe(
    state_dir: &Path,
    archives_dir: &Path,
    kind: Kind,
    namespace: &str,
    name: &str,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let store = Store::open_read_only(state_dir, archives_dir)?;
    let key = ObjectKey { kind, namespace: namespace.to_string(), name: name.to_string() };
    let Some(obj) = store.object(&key)? else {
        return Err(CliError::NotFound {
            what: format!("{} {name:?} not found in namespace {namespace:?}", kind.plural()),
        });
    };
    out.write_all(render(&key, &obj.object).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Metadata fields shown at the top, or not at all, rather than under `Metadata:`.
const METADATA_SHOWN_ABOVE: [&str; 5] = ["name", "namespace", "labels", "annotations", "managedFields"];

/// The describe text of one object.
pub(crate) fn render(key: &ObjectKey, object: &Value) -> String {
    let empty = Map::new();
    let root = object.as_object().unwrap_or(&empty);
    let meta = root.get("metadata").and_then(Value::as_object).unwrap_or(&empty);
    let text = |v: Option<&Value>, default: &str| v.and_then(Value::as_str).unwrap_or(default).to_string();

    let mut doc = Doc::default();
    doc.field(0, "Name", &text(meta.get("name"), &key.name));
    doc.field(0, "Namespace", &text(meta.get("namespace"), &key.namespace));
    doc.string_map(0, "Labels", meta.get("labels"), "=");
    doc.string_map(0, "Annotations", meta.get("annotations"), ": ");
    doc.field(0, "API Version", &text(root.get("apiVersion"), crate::api::API_VERSION));
    doc.field(0, "Kind", &text(root.get("kind"), key.kind.name()));

    let rest: Map<String, Value> = meta
        .iter()
        .filter(|(k, _)| !METADATA_SHOWN_ABOVE.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    doc.value(0, "metadata", &Value::Object(rest));
    let mut others: Vec<_> =
        root.iter().filter(|(k, _)| !["apiVersion", "kind", "metadata"].contains(&k.as_str())).collect();
    // spec before status, then anything else alphabetically.
    others.sort_by_key(|(k, _)| (!matches!(k.as_str(), "spec"), !matches!(k.as_str(), "status"), k.as_str()));
    for (k, v) in others {
        doc.value(0, k, v);
    }
    doc.render()
}

/// One line of describe output.
#[derive(Clone, Debug)]
enum Line {
    /// `<label>` then the value, aligned with the neighbouring fields.
    Field { label: String, value: String },
    /// A line printed as it is; it ends a run of aligned fields.
    Text(String),
}

/// Describe output under construction.
#[derive(Debug, Default)]
struct Doc {
    lines: Vec<Line>,
}

impl Doc {
    /// `Key:  value` at `indent`. A multi-line value continues in the value
    /// column.
    fn field(&mut self, indent: usize, key: &str, value: &str) {
        let mut label = format!("{}{key}:", spaces(indent));
        let mut lines = value.split('\n');
        let first = lines.next().unwrap_or_default();
        self.lines.push(Line::Field { label: label.clone(), value: first.to_string() });
        for more in lines {
            label.clear();
            self.lines.push(Line::Field { label: label.clone(), value: more.to_string() });
        }
    }

    fn text(&mut self, line: String) {
        self.lines.push(Line::Text(line));
    }

    /// Labels or annotations: one `k<sep>v` per line, `<none>` when empty.
    fn string_map(&mut self, indent: usize, key: &str, map: Option<&Value>, sep: &str) {
        let entries: Vec<String> = match map.and_then(Value::as_object) {
            Some(m) => {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                keys.into_iter().map(|k| format!("{k}{sep}{}", scalar(&m[k]))).collect()
            }
            None => Vec::new(),
        };
        if entries.is_empty() {
            self.field(indent, key, "<none>");
        } else {
            self.field(indent, key, &entries.join("\n"));
        }
    }

    /// A JSON value under its (camelCase) key.
    fn value(&mut self, indent: usize, key: &str, value: &Value) {
        let label = title_case(key);
        match value {
            Value::Object(m) if m.is_empty() => self.field(indent, &label, ""),
            Value::Object(m) => {
                self.text(format!("{}{label}:", spaces(indent)));
                self.map(indent + 2, m);
            }
            Value::Array(a) if a.is_empty() => self.field(indent, &label, ""),
            Value::Array(a) if key == "conditions" && a.iter().all(Value::is_object) => {
                self.text(format!("{}{label}:", spaces(indent)));
                self.conditions(indent + 2, a);
            }
            Value::Array(a) => {
                self.text(format!("{}{label}:", spaces(indent)));
                self.list(indent + 2, a);
            }
            scalar_value => self.field(indent, &label, &scalar(scalar_value)),
        }
    }

    /// The fields of a map, keys sorted.
    fn map(&mut self, indent: usize, map: &Map<String, Value>) {
        let mut keys: Vec<_> = map.keys().collect();
        keys.sort();
        for k in keys {
            self.value(indent, k, &map[k]);
        }
    }

    /// List items at `indent` (at least 2): a map per block, its first line
    /// marked `- `; scalars one per line.
    fn list(&mut self, indent: usize, items: &[Value]) {
        for item in items {
            match item {
                Value::Object(m) if !m.is_empty() => {
                    // The fields at the list's indentation, the marker in
                    // the two columns before it (as YAML block sequences).
                    let start = self.lines.len();
                    self.map(indent, m);
                    if let Some(first) = self.lines.get_mut(start) {
                        let line = match first {
                            Line::Field { label, .. } => label,
                            Line::Text(text) => text,
                        };
                        let at = indent.saturating_sub(2);
                        line.replace_range(at..at + 2, "- ");
                    }
                }
                Value::Array(inner) if !inner.is_empty() => {
                    self.text(format!("{}-", spaces(indent)));
                    self.list(indent + 2, inner);
                }
                other => {
                    for (i, line) in scalar(other).split('\n').enumerate() {
                        let lead = if i == 0 { "" } else { "  " };
                        self.text(format!("{}{lead}{line}", spaces(indent)));
                    }
                }
            }
        }
    }

    /// `status.conditions` as a table.
    fn conditions(&mut self, indent: usize, conditions: &[Value]) {
        let headers = ["Type", "Status", "Reason", "Last Transition", "Message"];
        let mut table = Table::new(headers);
        table.push(headers.iter().map(|h| "-".repeat(h.len())).collect());
        for c in conditions {
            let field = |k: &str| match c.get(k) {
                None | Some(Value::Null) => String::new(),
                Some(v) => scalar(v).replace('\n', " "),
            };
            table.push(vec![
                field("type"),
                field("status"),
                field("reason"),
                field("lastTransitionTime"),
                field("message"),
            ]);
        }
        for line in table.render(DESCRIBE_STYLE, &spaces(indent)).lines() {
            self.text(line.to_string());
        }
    }

    /// The text, runs of consecutive fields aligned 2 spaces after the
    /// longest label of the run (as kubectl's tabwriter does).
    fn render(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.lines.len() {
            match &self.lines[i] {
                Line::Text(text) => {
                    out.push_str(text);
                    out.push('\n');
                    i += 1;
                }
                Line::Field { .. } => {
                    let end = self.lines[i..]
                        .iter()
                        .position(|l| matches!(l, Line::Text(_)))
                        .map_or(self.lines.len(), |n| i + n);
                    let width = self.lines[i..end]
                        .iter()
                        .map(|l| match l {
                            Line::Field { label, .. } => super::table::width(label),
                            Line::Text(_) => 0,
                        })
                        .max()
                        .unwrap_or(0)
                        + DESCRIBE_STYLE.padding;
                    for line in &self.lines[i..end] {
                        if let Line::Field { label, value } = line {
                            let fill = width - super::table::width(label);
                            let full = format!("{label}{}{value}", spaces(fill));
                            out.push_str(full.trim_end());
                            out.push('\n');
                        }
                    }
                    i = end;
                }
            }
        }
        out
    }
}

fn spaces(n: usize) -> String {
    " ".repeat(n)
}

/// A scalar as describe prints it; nested values (only in odd places) as
/// compact JSON.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "<none>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// A camelCase field name as kubectl describe labels it (`smartLabelFor`):
/// `snapshotName` → `Snapshot Name`, `uid` → `UID`, `apiVersion` →
/// `API Version`. Names with characters other than letters and `-` (such
/// as `sha256`) are left as they are.
pub(crate) fn title_case(field: &str) -> String {
    if field.is_empty() || field.chars().any(|c| !c.is_alphabetic() && c != '-') {
        return field.to_string();
    }
    const ACRONYMS: [&str; 5] = ["API", "URL", "UID", "OSB", "GUID"];
    camelcase_split(field)
        .into_iter()
        .map(|part| {
            let upper = part.to_uppercase();
            if ACRONYMS.contains(&upper.as_str()) {
                upper
            } else {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_uppercase().chain(chars).collect(),
                    None => String::new(),
                }
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits at lower→upper case changes and before the last capital of a
/// capital run followed by lower case (`HTMLParser` → `HTML`, `Parser`), as
/// github.com/fatih/camelcase does; `-` is a part of its own.
fn camelcase_split(s: &str) -> Vec<String> {
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Lower,
        Upper,
        Other,
    }
    let class = |c: char| {
        if c.is_lowercase() {
            Class::Lower
        } else if c.is_uppercase() {
            Class::Upper
        } else {
            Class::Other
        }
    };
    let mut runs: Vec<(Class, Vec<char>)> = Vec::new();
    for c in s.chars() {
        let cl = class(c);
        match runs.last_mut() {
            Some((last, chars)) if *last == cl => chars.push(c),
            _ => runs.push((cl, vec![c])),
        }
    }
    for i in 0..runs.len().saturating_sub(1) {
        if runs[i].0 == Class::Upper
            && runs[i + 1].0 == Class::Lower
            && let Some(c) = runs[i].1.pop()
        {
            runs[i + 1].1.insert(0, c);
        }
    }
    runs.into_iter().filter(|(_, chars)| !chars.is_empty()).map(|(_, chars)| chars.into_iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::StoredObject;

    #[test]
    fn title_casing_like_kubectl() {
        let cases = [
            ("snapshotName", "Snapshot Name"),
            ("uid", "UID"),
            ("apiVersion", "API Version"),
            ("creationTimestamp", "Creation Timestamp"),
            ("persistentVolumeClaim", "Persistent Volume Claim"),
            ("sizeBytes", "Size Bytes"),
            ("HTMLParser", "HTML Parser"),
            ("keepPreRestore", "Keep Pre Restore"),
            ("phase", "Phase"),
            ("sha256", "sha256"),
            ("some_field", "some_field"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(title_case(input), want, "{input}");
        }
    }

    fn object() -> Value {
        json!({
            "apiVersion": "volsnap.dev/v1alpha1",
            "kind": "VolumeSnapshot",
            "metadata": {
                "name": "a", "namespace": "default", "uid": "u1", "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"volsnap.dev/schedule": "nightly", "app": "db"},
                "annotations": {"volsnap.dev/manifest-file": "snaps.yaml"}
            },
            "spec": {
                "source": {"paths": [{"name": "data", "path": "/srv/app/data"}, {"name": "conf", "path": "/etc/app"}]},
                "compression": "gzip"
            },
            "status": {
                "phase": "Completed",
                "observedGeneration": 1,
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Captured", "message": "archive written: 1 volume",
                     "lastTransitionTime": "2026-01-01T00:00:04Z", "observedGeneration": 1},
                    {"type": "Progressing", "status": "False", "reason": "Done", "message": "",
                     "lastTransitionTime": "2026-01-01T00:00:04Z"}
                ],
                "archive": {"path": "/arch/a.tar.gz", "format": "tar+gzip", "sizeBytes": 123, "sha256": "ab12"},
                "volumes": [{"name": "data", "path": "/srv/app/data", "files": 10, "bytes": 4096,
                             "warnings": ["a\nb", "c"]}]
            }
        })
    }

    fn key() -> ObjectKey {
        ObjectKey { kind: Kind::Snapshot, namespace: "default".into(), name: "a".into() }
    }

    #[test]
    fn renders_like_kubectl_describe() {
        let text = render(&key(), &object());
        let want = "\
Name:         a
Namespace:    default
Labels:       app=db
              volsnap.dev/schedule=nightly
Annotations:  volsnap.dev/manifest-file: snaps.yaml
API Version:  volsnap.dev/v1alpha1
Kind:         VolumeSnapshot
Metadata:
  Creation Timestamp:  2026-01-01T00:00:00Z
  Generation:          1
  UID:                 u1
Spec:
  Compression:  gzip
  Source:
    Paths:
    - Name:  data
      Path:  /srv/app/data
    - Name:  conf
      Path:  /etc/app
Status:
  Archive:
    Format:      tar+gzip
    Path:        /arch/a.tar.gz
    sha256:      ab12
    Size Bytes:  123
  Conditions:
    Type         Status  Reason    Last Transition       Message
    ----         ------  ------    ---------------       -------
    Ready        True    Captured  2026-01-01T00:00:04Z  archive written: 1 volume
    Progressing  False   Done      2026-01-01T00:00:04Z
  Observed Generation:  1
  Phase:                Completed
  Volumes:
  - Bytes:  4096
    Files:  10
    Name:   data
    Path:   /srv/app/data
    Warnings:
      a
        b
      c
";
        assert_eq!(text, want, "\n{text}");
    }

    #[test]
    fn sparse_objects_render() {
        let text = render(&key(), &json!({"metadata": {"name": "a"}, "spec": {}}));
        assert!(text.starts_with("Name:         a\nNamespace:    default\nLabels:       <none>\n"), "{text}");
        assert!(text.contains("Kind:         VolumeSnapshot\n"), "{text}");
        assert!(text.contains("\nSpec:\n"), "{text}");
        assert!(!text.contains("Status"), "{text}");
    }

    #[test]
    fn describe_reads_the_store_and_reports_missing_objects() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let archives = tmp.path().join("archives");
        let store = Store::open(&state, &archives).unwrap();
        store
            .put_object(&StoredObject { uid: "u1".into(), key: key(), manifest_file: None, object: object() })
            .unwrap();
        drop(store);

        let mut out = Vec::new();
        describe(&state, &archives, Kind::Snapshot, "default", "a", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("    Ready        True    Captured  2026-01-01T00:00:04Z  archive written"), "{text}");

        let err = describe(&state, &archives, Kind::Snapshot, "default", "x", &mut Vec::new()).unwrap_err();
        assert!(matches!(err, CliError::NotFound { .. }));
        assert_eq!(err.to_string(), "volumesnapshots \"x\" not found in namespace \"default\"");
        let err = describe(&state, &archives, Kind::Restore, "default", "a", &mut Vec::new()).unwrap_err();
        assert!(matches!(err, CliError::NotFound { .. }));
    }
}
