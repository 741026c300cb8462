//! The read-only commands: get, describe, archive list/verify, crds.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::capture::make_small_tree;
use crate::util::*;

/// An environment with snapshot `web` (default namespace, Completed) and
/// `other` in namespace `team-b`, captured by `--once`.
fn captured() -> Env {
    let env = Env::new();
    let d = env.data_dir("vol");
    make_small_tree(&d, 20);
    env.write_manifest("web.yaml", &snapshot_yaml("web", &[("vol", &d)], ""));
    let other = snapshot_yaml("other", &[("vol", &d)], "  compression: zstd\n")
        .replace("  name: other\n", "  name: other\n  namespace: team-b\n");
    env.write_manifest("other.yaml", &other);
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    env
}

fn run(args: &[&str], state: &Path) -> std::process::Output {
    let mut a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    a.push(OsStr::new("--state"));
    a.push(state.as_os_str());
    volsnap(&a)
}

fn stdout_ok(args: &[&str], state: &Path) -> String {
    let out = run(args, state);
    assert!(out.status.success(), "volsnap {args:?}: {}", show(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn get_snapshots_table() {
    let env = captured();
    let table = stdout_ok(&["get", "snapshots"], &env.state);
    let header = table.lines().next().unwrap_or("");
    assert!(header.contains("NAME") && header.contains("PHASE"), "table header:\n{table}");
    let row = table.lines().find(|l| l.starts_with("web")).unwrap_or_else(|| panic!("no row for web:\n{table}"));
    assert!(row.contains("Completed"), "{table}");
    assert!(!table.contains("other"), "default namespace only without -n/-A:\n{table}");
    let ns = stdout_ok(&["get", "snapshots", "-n", "team-b"], &env.state);
    assert!(ns.contains("other") && !ns.contains("web"), "-n team-b:\n{ns}");
    let all = stdout_ok(&["get", "snapshots", "-A"], &env.state);
    assert!(all.lines().next().unwrap_or("").contains("NAMESPACE"), "-A shows a NAMESPACE column:\n{all}");
    assert!(all.contains("web") && all.contains("other") && all.contains("team-b"), "-A:\n{all}");
    let wide = stdout_ok(&["get", "snapshots", "-o", "wide"], &env.state);
    assert!(wide.contains(env.archive_path("web", "tar.gz").to_str().unwrap()), "-o wide shows the archive:\n{wide}");
    for alias in ["vsnap", "snapshot"] {
        let t = stdout_ok(&["get", alias], &env.state);
        assert!(t.contains("web"), "get {alias}:\n{t}");
    }
    let empty = stdout_ok(&["get", "restores"], &env.state);
    assert!(!empty.contains("web"), "{empty}");
}

#[test]
fn get_snapshots_json_and_yaml_parse() {
    let env = captured();
    let json: Value = serde_json::from_str(&stdout_ok(&["get", "snapshots", "-o", "json"], &env.state))
        .expect("get -o json must print JSON");
    let text = json.to_string();
    assert!(text.contains("\"web\"") && text.contains("Completed"), "{json}");
    let items = json["items"].as_array().cloned().unwrap_or_else(|| vec![json.clone()]);
    assert!(items.iter().any(|i| i["metadata"]["name"] == "web" && i["status"]["phase"] == "Completed"), "{json}");
    let yaml: Value = serde_yaml_ng::from_str(&stdout_ok(&["get", "snapshots", "-o", "yaml"], &env.state))
        .expect("get -o yaml must print YAML");
    assert!(yaml.to_string().contains("\"web\""), "{yaml}");
}

#[test]
fn describe_snapshot_shows_conditions() {
    let env = captured();
    let text = stdout_ok(&["describe", "snapshot", "web"], &env.state);
    assert!(text.contains("web"), "{text}");
    assert!(text.contains("Conditions"), "describe must show Conditions:\n{text}");
    assert!(text.contains("Ready") && text.contains("Captured"), "{text}");
    let other = stdout_ok(&["describe", "snapshot", "other", "-n", "team-b"], &env.state);
    assert!(other.contains("other") && other.contains("Conditions"), "{other}");
    let missing = run(&["describe", "snapshot", "nope"], &env.state);
    assert!(!missing.status.success(), "describe of a missing object fails: {}", show(&missing));
}

fn copy_with(archive: &Path, dir: &Path, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = fs::read(archive).unwrap();
    f(&mut bytes);
    let p = dir.join(archive.file_name().unwrap());
    fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn archive_verify_and_list() {
    let env = captured();
    let archive = env.archive_path("web", "tar.gz");
    let a = archive.as_os_str();
    let ok = volsnap(&["archive".as_ref(), "verify".as_ref(), a]);
    assert!(ok.status.success(), "verify of a sound archive: {}", show(&ok));
    let sha = sha256_file(&archive);
    let ok = volsnap(&["archive".as_ref(), "verify".as_ref(), a, "--sha256".as_ref(), sha.as_ref()]);
    assert!(ok.status.success(), "verify with the right --sha256: {}", show(&ok));
    let wrong = "0".repeat(64);
    let bad = volsnap(&["archive".as_ref(), "verify".as_ref(), a, "--sha256".as_ref(), wrong.as_ref()]);
    assert!(!bad.status.success(), "verify with a wrong --sha256 must fail: {}", show(&bad));

    let zst = env.archives().join("team-b/other.tar.zst");
    let ok = volsnap(&["archive".as_ref(), "verify".as_ref(), zst.as_os_str()]);
    assert!(ok.status.success(), "verify of a zstd archive: {}", show(&ok));

    let flipped_dir = env.root.join("flipped");
    fs::create_dir(&flipped_dir).unwrap();
    let flipped = copy_with(&archive, &flipped_dir, |b| {
        let i = b.len() / 2;
        b[i] ^= 0xff;
    });
    let bad = volsnap(&["archive".as_ref(), "verify".as_ref(), flipped.as_os_str()]);
    assert!(!bad.status.success(), "verify must fail on a flipped byte: {}", show(&bad));
    let cut_dir = env.root.join("cut");
    fs::create_dir(&cut_dir).unwrap();
    let cut = copy_with(&archive, &cut_dir, |b| b.truncate(b.len() * 2 / 3));
    let bad = volsnap(&["archive".as_ref(), "verify".as_ref(), cut.as_os_str()]);
    assert!(!bad.status.success(), "verify must fail on a truncated archive: {}", show(&bad));

    let list = volsnap(&["archive".as_ref(), "list".as_ref(), a]);
    assert!(list.status.success(), "{}", show(&list));
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("volumes/0"), "archive list shows the entries:\n{text}");
    assert!(text.contains("file.txt"), "archive list shows the entries:\n{text}");
    assert!(text.contains("web"), "archive list shows the manifest (snapshot name):\n{text}");
}

#[test]
fn crds_output_matches_the_committed_file() {
    let out = volsnap(&["crds".as_ref()]);
    assert!(out.status.success(), "{}", show(&out));
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/volsnap.dev.yaml");
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == committed,
        "{} is missing or stale: run `make crds` and commit the result ({} bytes generated, {} bytes committed)",
        path.display(),
        generated.len(),
        committed.len()
    );
    for short in ["vsnap", "vrestore", "vsched"] {
        assert!(generated.contains(&format!("- {short}\n")), "shortName {short} missing");
    }
    assert!(!generated.contains("- vs\n"), "must never claim the CSI shortName `vs`");
    for kind in ["VolumeSnapshot", "VolumeRestore", "VolumeSnapshotSchedule"] {
        assert!(generated.contains(&format!("kind: {kind}\n")), "CRD for {kind} missing");
    }
    assert!(generated.contains("volumesnapshots.volsnap.dev"), "CRD name volumesnapshots.volsnap.dev");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&generated)
        .map(|d| serde::Deserialize::deserialize(d).expect("crds output is YAML"))
        .collect();
    assert_eq!(docs.len(), 3, "three CRDs");
}

#[test]
fn help_and_version() {
    let out = volsnap(&["--help".as_ref()]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "get", "describe", "crds", "archive"] {
        assert!(text.contains(cmd), "--help lists {cmd}:\n{text}");
    }
    let out = volsnap(&["run".as_ref(), "--help".as_ref()]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--manifests", "--state", "--archives", "--allowed-root", "--once", "--http-addr"] {
        assert!(text.contains(flag), "run --help lists {flag}:\n{text}");
    }
}

/// `--help` covers schedules, retention, metrics and `apply --wait`, and
/// the schedule it shows is a valid object.
#[test]
fn help_covers_schedules_retention_and_metrics_with_a_valid_example() {
    let out = volsnap(&["--help".as_ref()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in ["VolumeSnapshotSchedule", "timeZone", "keepDaily", "keepLast", "/metrics", "apply -f FILE --wait"] {
        assert!(text.contains(want), "--help mentions {want}:\n{text}");
    }
    let example = text.split_once("Example:\n").expect("--help has an example").1;
    let yaml: String = example.lines().map(|l| l.strip_prefix("  ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
    let doc: Value = serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("the example is YAML: {e}\n{yaml}"));
    let obj = volsnap::api::Object::from_value(doc).unwrap_or_else(|e| panic!("the example is an object: {e}"));
    assert_eq!(obj.kind(), volsnap::api::Kind::Schedule);
    volsnap::api::validate::object(&obj).unwrap_or_else(|e| panic!("the example is valid: {e:?}"));
}

#[test]
fn json_logs_are_one_json_object_per_line() {
    let env = Env::new();
    let d = env.data_dir("vol");
    make_small_tree(&d, 21);
    env.write_manifest("a.yaml", &snapshot_yaml("a", &[("vol", &d)], ""));
    let out = env.run_once(&["--log-format", "json"]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log output at all");
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
        assert!(v.is_object(), "{l}");
    }
}
