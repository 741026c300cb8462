//! Scanning the manifests directory: multi-document YAML files into declared
//! objects, invalid objects, and file-level errors.
//!
//! The directory is read, never written (it may be a git checkout).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::api::{Object, ObjectKey, ParseError};

/// Manifest files larger than this are rejected unread (untrusted input).
pub const MAX_MANIFEST_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// One declaration of an object in a file.
#[derive(Clone, Debug)]
pub struct Declaration {
    /// File name within the manifests directory.
    pub file: String,
    /// 0-based document index within the file.
    pub doc: usize,
    /// The document as written (metadata.namespace defaulted).
    pub raw: Value,
    /// The parsed object, or why it is invalid (field and message).
    pub parsed: Result<Object, (String, String)>,
}

/// The result of one scan.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Whether the directory was missing or unreadable. Callers must then keep
    /// every object as it is: a directory that disappears (unmounted, being
    /// replaced by a deploy) must never delete objects or archives.
    pub dir_unavailable: Option<String>,
    /// Every declaration of every identifiable object, in file-name order.
    pub declared: BTreeMap<ObjectKey, Vec<Declaration>>,
    /// Manifest files that could not be read or parsed as YAML. Objects that
    /// such a file declared before are kept (a half-saved edit must not
    /// delete them).
    pub unparsable: BTreeSet<String>,
    /// Problems to report per file in `status/_invalid/<file>.yaml`.
    pub file_errors: BTreeMap<String, Vec<String>>,
}

/// Scans `dir`: top-level `*.yaml` / `*.yml` files, hidden files ignored,
/// in file-name order.
pub fn scan(dir: &Path) -> Scan {
    let mut out = Scan::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            out.dir_unavailable = Some(format!("cannot read manifests directory {}: {e}", dir.display()));
            return out;
        }
    };
    let mut files: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && (n.ends_with(".yaml") || n.ends_with(".yml")))
        .collect();
    files.sort();
    for file in files {
        let path = dir.join(&file);
        if !path.is_file() {
            continue;
        }
        let text = match read_capped(&path) {
            Ok(t) => t,
            Err(e) => {
                out.unparsable.insert(file.clone());
                out.file_errors.entry(file).or_default().push(e);
                continue;
            }
        };
        let docs = match parse_documents(&text) {
            Ok(d) => d,
            Err(e) => {
                out.unparsable.insert(file.clone());
                out.file_errors.entry(file).or_default().push(format!("not valid YAML: {e}"));
                continue;
            }
        };
        for (doc, raw) in docs.into_iter().enumerate() {
            if raw.is_null() {
                continue; // an empty document, e.g. a trailing `---`
            }
            match Object::from_value(raw.clone()) {
                Ok(obj) => {
                    let raw = with_default_namespace(raw);
                    out.declared.entry(obj.key()).or_default().push(Declaration {
                        file: file.clone(),
                        doc,
                        raw,
                        parsed: Ok(obj),
                    })
                }
                Err(ParseError::Invalid { key, field, message }) => {
                    let raw = with_default_namespace(raw);
                    out.declared.entry(key).or_default().push(Declaration {
                        file: file.clone(),
                        doc,
                        raw,
                        parsed: Err((field, message)),
                    })
                }
                Err(ParseError::Unidentifiable(msg)) => {
                    out.file_errors.entry(file.clone()).or_default().push(format!("document {doc}: {msg}"))
                }
            }
        }
    }
    out
}

fn read_capped(path: &Path) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_MANIFEST_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e} (manifests must be UTF-8 text)", path.display()))?;
    if text.len() as u64 > MAX_MANIFEST_FILE_BYTES {
        return Err(format!("{} is larger than {MAX_MANIFEST_FILE_BYTES} bytes", path.display()));
    }
    Ok(text)
}

/// Parses a multi-document YAML stream into JSON values.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        docs.push(Value::deserialize(de).map_err(|e| e.to_string())?);
    }
    Ok(docs)
}

fn with_default_namespace(mut raw: Value) -> Value {
    if let Some(meta) = raw.get_mut("metadata").and_then(Value::as_object_mut) {
        if meta.get("namespace").is_none_or(Value::is_null) {
            meta.insert("namespace".into(), Value::String("default".into()));
        }
    }
    if let Some(map) = raw.as_object_mut() {
        map.remove("status");
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_objects_invalid_objects_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: one}\nspec: {source: {paths: [{path: /srv/a}]}}\n---\n\
             apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: two}\nspec: {source: {paths: [{pat: /srv/a}]}}\n---\n\
             kind: Nope\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.yml"), "a: [unclosed\n").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "a: [unclosed\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let s = scan(dir.path());
        assert!(s.dir_unavailable.is_none());
        assert_eq!(s.declared.len(), 2);
        let two = s.declared.iter().find(|(k, _)| k.name == "two").unwrap().1;
        let (field, msg) = two[0].parsed.as_ref().unwrap_err();
        assert_eq!(field, "spec.source.paths[0].pat");
        assert!(msg.contains("unknown field `pat`"), "{msg}");
        assert_eq!(s.unparsable.iter().collect::<Vec<_>>(), vec!["b.yml"]);
        assert!(s.file_errors["a.yaml"][0].contains("apiVersion must be"));
        assert!(s.file_errors["b.yml"][0].contains("not valid YAML"));
        assert!(scan(&dir.path().join("missing")).dir_unavailable.is_some());
    }
}
