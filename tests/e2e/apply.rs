//! `volsnap apply -f FILE --wait`: hands a manifest over and exits 0 only
//! when every object in it Completed; refuses an invalid file before writing
//! anything.

use std::process::Command;

use crate::util::*;

fn apply(env: &Env, file: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("apply").arg("-f").arg(file).args(["--manifests", env.manifests.to_str().unwrap()]);
    cmd.args(["--state", env.state.to_str().unwrap(), "--allowed-root", env.data.to_str().unwrap()]);
    cmd.args(extra);
    run_bounded(&mut cmd, TIMEOUT)
}

#[test]
fn apply_wait_runs_in_the_foreground_and_exits_by_the_outcome() {
    let env = Env::new();
    let app = env.data_dir("app");
    write_numbered_files(&app, 10);
    let good = env.root.join("pre-deploy.yaml");
    std::fs::write(&good, snapshot_yaml("pre-deploy", &[("app", &app)], "")).unwrap();
    let out = apply(&env, &good, &["--wait", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(show(&out).contains("Completed"), "it reports the outcome: {}", show(&out));
    assert!(env.manifests.join("pre-deploy.yaml").is_file(), "the manifest now lives in the watched directory");
    assert_eq!(phase(&env.status(SNAPSHOTS, "pre-deploy").unwrap()), "Completed");

    let failing = env.root.join("broken.yaml");
    std::fs::write(&failing, snapshot_yaml("broken", &[("gone", &env.data.join("missing"))], "")).unwrap();
    let out = apply(&env, &failing, &["--wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(1), "a Failed object makes it exit 1: {}", show(&out));
    assert!(show(&out).contains("Failed"), "{}", show(&out));
}

#[test]
fn apply_refuses_an_invalid_file_and_writes_nothing() {
    let env = Env::new();
    let bad = env.root.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: x}\nspec:\n  source: {paths: [{path: relative}]}\n").unwrap();
    let out = apply(&env, &bad, &["--wait"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains("spec.source.paths[0].path"), "names the field: {}", show(&out));
    assert!(!env.manifests.join("bad.yaml").exists(), "nothing was handed over");
}

#[test]
fn apply_hands_the_file_to_a_running_daemon_and_waits() {
    let env = Env::new();
    let app = env.data_dir("app");
    write_numbered_files(&app, 3);
    let daemon = env.start(&[]);
    wait_for("the daemon to own its state", TIMEOUT, || {
        if env.state.join("volsnap.lock").exists() { Ok(()) } else { Err(daemon.log_text()) }
    });
    let file = env.root.join("s.yaml");
    std::fs::write(&file, snapshot_yaml("s", &[("app", &app)], "")).unwrap();
    let out = apply(&env, &file, &["--wait", "--timeout", "60s"]);
    assert!(out.status.success(), "{}\n{}", show(&out), daemon.log_text());
    assert!(show(&out).contains("handed"), "{}", show(&out));
}
