//! Bad input never stops the daemon: invalid objects fail with InvalidSpec
//! naming the field, unparseable files are reported under `_invalid/`.

use std::fs;

use serde_json::Value;

use crate::util::*;

const HEAD: &str = "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata:\n  name: bad\n";

/// Runs `--once` over one manifest and returns the snapshot `bad`, which
/// must be Failed / Ready False / InvalidSpec with a message containing
/// every needle.
fn expect_invalid_spec(env: &Env, manifest: &str, needles: &[&str]) -> Value {
    env.write_manifest("bad.yaml", manifest);
    let out = env.run_once(&[]);
    let obj = env.status(SNAPSHOTS, "bad").unwrap_or_else(|| {
        let report = fs::read_to_string(invalid_report_path(&env.state, "bad.yaml")).unwrap_or_default();
        panic!(
            "an identifiable object with a bad spec must get its own status file (Failed/InvalidSpec)\n_invalid report: {report}\n{}",
            show(&out)
        )
    });
    env.check(phase(&obj) == "Failed", "phase Failed", &obj);
    let (st, reason, msg) = cond(&obj, "Ready");
    env.check(st == "False" && reason == "InvalidSpec", "Ready False InvalidSpec", &obj);
    for n in needles {
        env.check(msg.contains(n), &format!("Ready message must contain {n:?}"), &obj);
    }
    assert_eq!(out.status.code(), Some(1), "an invalid snapshot is a failure for --once: {}", show(&out));
    assert!(non_dirs_under(&env.archives()).is_empty(), "no archive for an invalid object");
    obj
}

fn data_path(env: &Env) -> String {
    let p = env.data_dir("vol");
    fs::write(p.join("f"), b"f").unwrap();
    q(p.to_str().unwrap())
}

#[test]
fn invalid_unknown_field_is_named() {
    let env = Env::new();
    let p = data_path(&env);
    let m = format!("{HEAD}spec:\n  source:\n    paths:\n      - path: {p}\n  compresion: zstd\n");
    expect_invalid_spec(&env, &m, &["compresion"]);
}

#[test]
fn invalid_unknown_nested_field_is_named() {
    let env = Env::new();
    let p = data_path(&env);
    let m = format!("{HEAD}spec:\n  source:\n    paths:\n      - path: {p}\n        nmae: x\n");
    expect_invalid_spec(&env, &m, &["spec.source.paths[0]", "nmae"]);
}

#[test]
fn invalid_wrong_type_is_named() {
    let env = Env::new();
    let m = format!("{HEAD}spec:\n  source:\n    paths:\n      - path: [1, 2]\n");
    expect_invalid_spec(&env, &m, &["spec.source.paths[0].path"]);
}

#[test]
fn invalid_enum_value_is_named() {
    let env = Env::new();
    let p = data_path(&env);
    let m = format!("{HEAD}spec:\n  source:\n    paths:\n      - path: {p}\n  compression: lz4\n");
    expect_invalid_spec(&env, &m, &["spec.compression", "lz4"]);
}

#[test]
fn invalid_two_sources() {
    let env = Env::new();
    let p = data_path(&env);
    let m = format!("{HEAD}spec:\n  source:\n    paths:\n      - path: {p}\n    volume: pgdata\n");
    expect_invalid_spec(&env, &m, &["spec.source", "exactly one"]);
}

#[test]
fn invalid_no_source() {
    let env = Env::new();
    let m = format!("{HEAD}spec:\n  source: {{}}\n");
    expect_invalid_spec(&env, &m, &["spec.source", "exactly one"]);
}

#[test]
fn invalid_relative_path() {
    let env = Env::new();
    let m = format!("{HEAD}spec:\n  source:\n    paths:\n      - path: srv/app/data\n");
    expect_invalid_spec(&env, &m, &["spec.source.paths[0].path", "absolute"]);
}

#[test]
fn invalid_dotdot_path() {
    let env = Env::new();
    let p = format!("{}/../../etc", env.data.display());
    let m = format!("{HEAD}spec:\n  source:\n    paths:\n      - name: x\n        path: {}\n", q(&p));
    expect_invalid_spec(&env, &m, &["spec.source.paths[0].path", ".."]);
}

#[test]
fn invalid_compression_level_is_named() {
    let env = Env::new();
    let p = data_path(&env);
    // 10 is a zstd level, not a gzip one (gzip is the default).
    let m = format!("{HEAD}spec:\n  source:\n    paths:\n      - path: {p}\n  level: 10\n");
    expect_invalid_spec(&env, &m, &["spec.level", "gzip levels are 1 to 9"]);
}

#[test]
fn invalid_volume_name() {
    let env = Env::new();
    let p = data_path(&env);
    let m = format!("{HEAD}spec:\n  source:\n    paths:\n      - name: Not_A_Label\n        path: {p}\n");
    expect_invalid_spec(&env, &m, &["spec.source.paths[0].name"]);
}

#[test]
fn invalid_schedule_cron_is_named() {
    let env = Env::new();
    let p = data_path(&env);
    let m = format!(
        "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshotSchedule\nmetadata:\n  name: nightly\nspec:\n  schedule: \"0 3 * *\"\n  snapshotTemplate:\n    spec:\n      source:\n        paths:\n          - path: {p}\n"
    );
    env.write_manifest("sched.yaml", &m);
    let _d = env.start(&[]);
    let obj =
        env.wait_status(SCHEDULES, "nightly", "Ready reason InvalidSpec", |v| cond(v, "Ready").1 == "InvalidSpec");
    let msg = cond(&obj, "Ready").2;
    env.check(msg.contains("spec.schedule"), "message names spec.schedule", &obj);
}

#[test]
fn yaml_syntax_error_is_reported_and_daemon_keeps_going() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"f").unwrap();
    let mut daemon = env.start(&[]);
    env.write_manifest("broken.yaml", "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nspec: [unclosed\n");
    let report = invalid_report_path(&env.state, "broken.yaml");
    let text = wait_for("_invalid report of broken.yaml", TIMEOUT, || {
        fs::read_to_string(&report).map_err(|e| format!("{}: {e}\n{}", report.display(), env.logs()))
    });
    assert!(text.contains("broken.yaml"), "report must name the file:\n{text}");
    assert!(text.len() > "broken.yaml".len() + 20, "report must carry the parse error:\n{text}");
    assert!(daemon.alive(), "daemon must keep running after a YAML syntax error\n{}", env.logs());
    // A valid manifest dropped afterwards is still captured.
    env.write_manifest("good.yaml", &snapshot_yaml("good", &[("vol", &d)], ""));
    let obj = env.wait_settled(SNAPSHOTS, "good");
    env.check(phase(&obj) == "Completed", "valid manifest after a broken one is captured", &obj);
    assert!(daemon.alive(), "daemon still running\n{}", env.logs());
}

#[test]
fn duplicate_name_in_two_files_first_keeps_it() {
    let env = Env::new();
    let a = env.data_dir("a");
    fs::write(a.join("f"), b"a").unwrap();
    let b = env.data_dir("b");
    fs::write(b.join("f"), b"b").unwrap();
    env.write_manifest("10-first.yaml", &snapshot_yaml("dup", &[("a", &a)], ""));
    env.write_manifest("20-second.yaml", &snapshot_yaml("dup", &[("b", &b)], ""));
    let out = env.run_once(&[]);
    let obj = env.status(SNAPSHOTS, "dup").unwrap_or_else(|| panic!("no status: {}", show(&out)));
    env.check(
        obj["metadata"]["annotations"]["volsnap.dev/manifest-file"] == "10-first.yaml",
        "the first file (lexical order) keeps the name",
        &obj,
    );
    env.check(obj["spec"]["source"]["paths"][0]["path"] == a.to_str().unwrap(), "spec from the first file", &obj);
    env.check(phase(&obj) == "Completed", "the first file's object is captured", &obj);
    let report = fs::read_to_string(invalid_report_path(&env.state, "20-second.yaml"))
        .unwrap_or_else(|e| panic!("no _invalid report for the second file: {e}\n{}", show(&out)));
    assert!(report.to_lowercase().contains("conflict"), "report must mention the conflict:\n{report}");
    assert!(report.contains("10-first.yaml"), "report should name the file that keeps the name:\n{report}");
    assert!(
        invalid_report_path(&env.state, "10-first.yaml").metadata().is_err(),
        "the first file is fine and has no report"
    );
}

/// Files under `<state>/status`, relative.
fn status_files(env: &Env) -> Vec<String> {
    non_dirs_under(&env.state.join("status")).iter().map(|p| p.to_string_lossy().into_owned()).collect()
}

#[test]
fn invalid_object_name_is_reported_against_the_file() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"f").unwrap();
    env.write_manifest("name.yaml", &snapshot_yaml("Bad_Name", &[("vol", &d)], ""));
    let out = env.run_once(&[]);
    let report = fs::read_to_string(invalid_report_path(&env.state, "name.yaml"))
        .unwrap_or_else(|e| panic!("no _invalid report: {e}\n{}", show(&out)));
    assert!(report.contains("metadata.name"), "report must name metadata.name:\n{report}");
    assert_eq!(status_files(&env), vec!["_invalid/name.yaml.yaml".to_string()], "only the report is written");
    assert!(non_dirs_under(&env.archives()).is_empty());
}

#[test]
fn invalid_namespace_never_reaches_a_path() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"f").unwrap();
    let m = snapshot_yaml("ok-name", &[("vol", &d)], "")
        .replace("  name: ok-name\n", "  name: ok-name\n  namespace: ../../escape\n");
    env.write_manifest("ns.yaml", &m);
    let out = env.run_once(&[]);
    let report = fs::read_to_string(invalid_report_path(&env.state, "ns.yaml"))
        .unwrap_or_else(|e| panic!("no _invalid report: {e}\n{}", show(&out)));
    assert!(report.contains("metadata.namespace"), "report must name metadata.namespace:\n{report}");
    assert_eq!(status_files(&env), vec!["_invalid/ns.yaml.yaml".to_string()], "only the report is written");
    assert!(!env.root.join("escape").exists() && !env.state.join("escape").exists(), "path traversal via namespace");
}

#[test]
fn non_manifest_files_are_ignored() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"f").unwrap();
    // Not *.yaml / *.yml, hidden, or in a subdirectory: none of these is read.
    let m = snapshot_yaml("ignored", &[("vol", &d)], "");
    env.write_manifest("notes.txt", &m);
    env.write_manifest(".hidden.yaml", &m);
    fs::create_dir(env.manifests.join("sub")).unwrap();
    fs::write(env.manifests.join("sub/nested.yaml"), &m).unwrap();
    env.write_manifest("real.yaml", &snapshot_yaml("real", &[("vol", &d)], ""));
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(env.status(SNAPSHOTS, "real").is_some());
    assert!(env.status(SNAPSHOTS, "ignored").is_none(), "hidden/non-yaml/nested files must be ignored");
    assert_eq!(status_files(&env), vec!["default/volumesnapshots/real.yaml".to_string()]);
}

#[test]
fn multi_document_file_declares_several_objects() {
    let env = Env::new();
    let d = env.data_dir("vol");
    fs::write(d.join("f"), b"f").unwrap();
    let m = format!(
        "{}---\n{}",
        snapshot_yaml("one", &[("vol", &d)], ""),
        snapshot_yaml("two", &[("vol", &d)], "  compression: zstd\n")
    );
    env.write_manifest("multi.yaml", &m);
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    for n in ["one", "two"] {
        let obj = env.status(SNAPSHOTS, n).unwrap_or_else(|| panic!("no status for {n}"));
        assert_eq!(phase(&obj), "Completed", "{obj}");
        assert_eq!(obj["metadata"]["annotations"]["volsnap.dev/manifest-file"], "multi.yaml");
    }
}
