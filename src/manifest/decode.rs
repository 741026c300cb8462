//! Decoding one manifest file's text into declarations: each document an
//! object (or the field that makes it invalid), and whatever makes the file
//! possibly incomplete, which holds back deletions.

use serde_json::Value;

use super::yaml;
use crate::api::{Object, ObjectKey, ParseError};

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

/// What a file's content declares.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The objects it declares, valid or not.
    pub declarations: Vec<(ObjectKey, Declaration)>,
    /// Problems to report.
    pub errors: Vec<String>,
    /// The YAML parsed (the file is not `unparsable`).
    pub yaml_ok: bool,
    /// Parsed, and every document is an identifiable object.
    pub complete: bool,
    /// Ends with a line break.
    pub final_newline: bool,
}

/// Parses one file's text into declarations and problems.
pub fn decode(file: &str, text: &str) -> Decoded {
    let mut out = Decoded { final_newline: text.ends_with(['\n', '\r']), ..Decoded::default() };
    let docs = match yaml::parse_documents(text) {
        Ok(d) => d,
        Err(e) => {
            out.errors.push(e.to_string());
            out.errors.push(KEPT.into());
            return out;
        }
    };
    out.yaml_ok = true;
    out.complete = true;
    let only = docs.len() == 1;
    for (doc, raw) in docs.into_iter().enumerate() {
        if let Err(problem) = out.declare(file, doc, raw, only) {
            out.complete = false;
            out.errors.push(problem);
        }
    }
    if !out.complete {
        out.errors.push(KEPT.into());
    }
    out
}

/// Appended to the report of a file that may be incomplete.
const KEPT: &str =
    "objects this file declared before are kept (never deleted) until every document in it can be identified again";

impl Decoded {
    /// Adds one document's declaration; `Err` is why it is not identifiable.
    fn declare(&mut self, file: &str, doc: usize, raw: Value, only: bool) -> Result<(), String> {
        if raw.is_null() {
            return Err(if only {
                "the file declares nothing (it is empty or holds only comments); to delete the objects it declared, remove the file".into()
            } else {
                format!("document {doc} is empty (a stray `---`, or a file cut short)")
            });
        }
        let (key, parsed) = match Object::from_value(raw.clone()) {
            Ok(obj) => (obj.key(), Ok(obj)),
            Err(ParseError::Invalid { key, field, message }) => (key, Err((field, message))),
            Err(ParseError::Unidentifiable(msg)) => return Err(format!("document {doc}: {msg}")),
        };
        let raw = with_default_namespace(raw);
        self.declarations.push((key, Declaration { file: file.to_string(), doc, raw, parsed }));
        Ok(())
    }
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
