use std::time::{Duration, Instant};

use serde::Deserialize;

use super::*;

fn deep(n: usize) -> String {
    format!("a: {}{}\n", "[".repeat(n), "]".repeat(n))
}

fn too_deep(text: &str) -> bool {
    matches!(check_flow_depth(text), Err(YamlError::TooDeep { .. }))
}

/// What libyaml itself does with the text: serde_yaml_ng's recursion limit
/// (128) is hit only when libyaml really nested that deep.
fn libyaml_nests_past_128(text: &str) -> bool {
    // The stream yields an error document again and again after the first.
    let first_error = serde_yaml_ng::Deserializer::from_str(text)
        .take(100)
        .find_map(|de| serde_json::Value::deserialize(de).err().map(|e| e.to_string()));
    first_error.is_some_and(|e| e.contains("recursion limit exceeded"))
}

#[test]
fn a_400_kb_nested_document_is_refused_in_linear_time() {
    let text = format!("a: {}\n", "[".repeat(400 * 1024));
    let start = Instant::now();
    let err = parse_documents(&text).unwrap_err();
    let took = start.elapsed();
    eprintln!("400 KB of nested '[': refused in {took:?}");
    assert_eq!(err, YamlError::TooDeep { line: 1, limit: MAX_DEPTH });
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // The whole 4 MiB a manifest may hold, nested on separate lines.
    let text = "[\n".repeat(2 * 1024 * 1024);
    let start = Instant::now();
    assert_eq!(parse_documents(&text).unwrap_err(), YamlError::TooDeep { line: 65, limit: MAX_DEPTH });
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
}

#[test]
fn the_pre_scan_of_a_large_ordinary_file_is_linear() {
    let doc = "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: a, labels: {x: \"[y]\"}}\n# a comment [\nspec:\n  source: {paths: [{path: /srv/a}]}\n  note: |\n    text [[[\n---\n";
    let text = doc.repeat(4 * 1024 * 1024 / doc.len());
    let start = Instant::now();
    check_flow_depth(&text).unwrap();
    eprintln!("pre-scan of {} bytes: {:?}", text.len(), start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn flow_nesting_up_to_the_limit_parses() {
    let ok = deep(MAX_DEPTH as usize);
    assert!(!too_deep(&ok));
    let top = format!("{}{}\n", "[".repeat(MAX_DEPTH as usize), "]".repeat(MAX_DEPTH as usize));
    assert_eq!(parse_documents(&top).unwrap().len(), 1);
    assert!(too_deep(&deep(MAX_DEPTH as usize + 1)));
    assert!(too_deep(&format!("{}\n", "{a: ".repeat(MAX_DEPTH as usize + 1))));
}

#[test]
fn brackets_libyaml_does_not_read_as_flow_do_not_count() {
    let many = "[".repeat(200);
    let closers = "]".repeat(200);
    for text in [
        format!("a: \"{many}\"\n"),
        format!("a: '{many}'\n"),
        format!("a: 'it''s {many}'\n"),
        format!("a: \"x\\\" {many}\"\n"),
        format!("# {many}\na: 1\n"),
        format!("a: 1 # {many}\n"),
        format!("a: b {many}\n"),
        format!("a: b\n  c {many}\n"),
        // A block scalar's text: brackets there are counted only on the
        // path where its first line ended it (the enclosing indentation is
        // not tracked), so at most 64 of them unclosed.
        format!("a: |\n  text\n  {few}\n  {few}]]\nb: 2\n", few = "[".repeat(32)),
        format!("a: !<tag:x,{many}> b\n"),
        format!("a: [x, \"{closers}\", '{many}']\n"),
        format!("%TAG !e! tag:e.com,2000:{many}\n--- a\n"),
    ] {
        check_flow_depth(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    }
}

#[test]
fn brackets_a_naive_scan_would_miss_are_counted() {
    let deep = || format!("{}{}", "[".repeat(130), "]".repeat(130));
    for text in [
        // A quote inside a flow plain scalar is text, not a quoted scalar.
        format!("a: [b 'c, {}]\n", deep()),
        format!("a: [b \"c, {}]\n", deep()),
        // Escaped and doubled quotes do not end a quoted scalar early...
        format!("a: [\"x\\\"\", {}]\n", deep()),
        format!("a: ['it''s', {}]\n", deep()),
        // ...and closers inside one never close anything.
        format!("a: [{}\"{}\" {}]\n", "[".repeat(60), "]".repeat(60), "[".repeat(10)),
        format!("a: [{}# {}\n  {}]\n", "[".repeat(60), "]".repeat(60), "[".repeat(10)),
        // libyaml ends comments at NEL and LINE SEPARATOR too.
        format!("# c\u{85}a: {}\n", deep()),
        format!("# c\u{2028}a: {}\n", deep()),
        // A document marker is a token, not the start of a plain scalar.
        format!("--- {}\n", deep()),
        format!("a: 1\n--- {}\n", deep()),
        // A plain or block scalar ends where the indentation drops.
        format!("a: b\nc: {}\n", deep()),
        format!("a: |\n  text\nb: {}\n", deep()),
        // A byte order mark at the start is skipped.
        format!("\u{FEFF}{}\n", deep()),
        format!("a: !t {}\n", deep()),
        format!("a: &x {}\n", deep()),
    ] {
        assert!(too_deep(&text), "not refused: {text:?}");
    }
}

#[test]
fn the_pre_scan_never_misses_what_libyaml_nests() {
    // Random YAML-ish prefixes, then 130 nested flow sequences: whenever
    // libyaml nests past 128 levels, the pre-scan must have refused it.
    const PIECES: &[&str] = &[
        "'", "\"", "\\", "#", " ", "\n", "a", ":", ": ", "- ", "|", ">", "!", "!<", ">", "&a ", "*a", ",", "]", "}",
        "[", "{", "---\n", "...\n", "%", "\u{85}", "''", "\t", "?", "  ", "\n  ", "b c", "x:y", "\r\n",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let nest = format!("{}{}", "[".repeat(130), "]".repeat(130));
    let mut witnessed = 0;
    for _ in 0..20_000 {
        let mut text = String::new();
        for _ in 0..rand(12) {
            text.push_str(PIECES[rand(PIECES.len())]);
        }
        text.push_str(&nest);
        for _ in 0..rand(4) {
            text.push_str(PIECES[rand(PIECES.len())]);
        }
        if libyaml_nests_past_128(&text) {
            witnessed += 1;
            assert!(too_deep(&text), "libyaml nested past 128 levels but the pre-scan let it through: {text:?}");
        }
    }
    eprintln!("{witnessed} random texts nested past 128 levels in libyaml; all refused");
    assert!(witnessed > 500, "too few informative cases: {witnessed}");
}

#[test]
fn duplicate_keys_are_rejected_with_path_and_line() {
    let top = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err().to_string();
    assert!(top.contains("(document 0): duplicate key \"a\" at the top level"), "{top}");
    let meta = "apiVersion: v\nkind: K\nmetadata:\n  name: x\n  labels: {}\n  name: y\n";
    let err = parse_documents(meta).unwrap_err().to_string();
    assert!(err.contains("metadata: duplicate key \"name\"") && err.contains("line 4"), "{err}");
    let deep = "spec:\n  source:\n    paths:\n      - {path: /a, name: b, path: /c}\n";
    let err = parse_documents(deep).unwrap_err().to_string();
    assert!(err.contains("duplicate key \"path\"") && err.contains("spec.source.paths"), "{err}");
    // In a later document of the stream too.
    let err = parse_documents("a: 1\n---\nb: 1\nb: 1\n").unwrap_err().to_string();
    assert!(err.contains("(document 1): duplicate key \"b\""), "{err}");
}

#[test]
fn block_nesting_past_the_limit_is_rejected_while_parsing() {
    let mut text = String::new();
    for i in 0..(MAX_DEPTH as usize + 1) {
        text.push_str(&format!("{}k:\n", " ".repeat(i)));
    }
    text.push_str(&format!("{}v\n", " ".repeat(MAX_DEPTH as usize + 1)));
    let err = parse_documents(&text).unwrap_err().to_string();
    assert!(err.contains("nested deeper than 64 levels"), "{err}");
    let ok: String = (0..MAX_DEPTH as usize).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    parse_documents(&ok).unwrap();
}

#[test]
fn values_are_what_serde_json_would_build() {
    let text = "a: 1\nb: -2\nc: 1.5\nd: true\ne: null\nf: ~\ng: [x, 'y', \"z\"]\nh: {i: {j: []}}\n1: one\nbig: 18446744073709551615\n---\n---\nlast\n";
    let ours = parse_documents(text).unwrap();
    let theirs: Vec<Value> =
        serde_yaml_ng::Deserializer::from_str(text).map(|d| Value::deserialize(d).unwrap()).collect();
    assert_eq!(ours, theirs);
    assert_eq!(parse_documents("").unwrap(), vec![Value::Null]);
    assert_eq!(parse_documents("# only a comment\n").unwrap(), vec![Value::Null]);
}

#[test]
fn too_many_documents_are_refused() {
    let text = "a: 1\n---\n".repeat(MAX_DOCUMENTS + 1);
    assert_eq!(parse_documents(&text).unwrap_err(), YamlError::TooManyDocuments { limit: MAX_DOCUMENTS });
}
