//! Docker sources, quiesce and restores against a real Docker Engine.
//!
//! `make test` starts an engine and builds the local image
//! `volsnap-test:busybox` (tests/docker/ensure-docker.sh) and sets
//! VOLSNAP_REQUIRE_DOCKER=1, so these tests fail rather than skip there.
//! Containers run with `--network none --init` (tini: `docker stop` is
//! quick) and are removed by a guard, so a daemon with other containers is
//! fine.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::restore::{leftovers, restore_yaml};
use crate::util::*;

pub(crate) const IMAGE: &str = "volsnap-test:busybox";

/// Whether Docker tests can run; panics when they must.
pub(crate) fn docker_ready(test: &str) -> bool {
    let ok =
        Command::new("docker").args(["image", "inspect", IMAGE]).output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("VOLSNAP_REQUIRE_DOCKER").is_none(),
            "{test}: VOLSNAP_REQUIRE_DOCKER is set but Docker or the image {IMAGE} is not available (run tests/docker/ensure-docker.sh)"
        );
        skip(test, "no Docker Engine with the image volsnap-test:busybox (make test sets one up as root)");
    }
    ok
}

/// `docker ARGS`, asserting success; returns trimmed stdout.
pub(crate) fn docker(args: &[&str]) -> String {
    let out = run_bounded(Command::new("docker").args(args), Duration::from_secs(120));
    assert!(out.status.success(), "docker {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the containers and volumes a test made, whatever happens.
pub(crate) struct Cleanup {
    pub(crate) containers: Vec<String>,
    pub(crate) volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for v in &self.volumes {
            let _ = Command::new("docker").args(["volume", "rm", "-f", v]).output();
        }
    }
}

/// A name unique to this test run.
pub(crate) fn unique(env: &Env, what: &str) -> String {
    let tag = env
        .root
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    format!("vs-{what}-{tag}")
}

/// Starts a container that sleeps, with extra `docker run` arguments.
pub(crate) fn run_container(name: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--pull", "never", "--init", "--network", "none", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "sleep", "100000"]);
    docker(&args)
}

pub(crate) fn state(container: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Status}}", container])
}

pub(crate) fn id_of(container: &str) -> String {
    docker(&["inspect", "-f", "{{.Id}}", container])
}

/// Docker's own record of what happened to a container in a time window.
pub(crate) fn events(container_id: &str, since: i64) -> Vec<String> {
    let until = (now_secs() + 1).to_string();
    let out = docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until,
        "--filter",
        &format!("container={container_id}"),
        "--format",
        "{{.Action}}",
    ]);
    out.lines()
        .map(str::to_string)
        .filter(|a| ["pause", "unpause", "stop", "start", "die"].contains(&a.as_str()))
        .collect()
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub(crate) fn snapshot_of(name: &str, source: &str, extra: &str) -> String {
    format!(
        "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata:\n  name: {name}\nspec:\n  source:\n    {source}\n{extra}"
    )
}

pub(crate) fn skipped_reason(obj: &Value, target: &str) -> String {
    obj["status"]["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["target"] == target)
        .and_then(|s| s["reason"].as_str())
        .unwrap_or("")
        .to_string()
}

/// The Docker volume root's `_data` directory of a named volume.
pub(crate) fn volume_dir(volume: &str) -> PathBuf {
    PathBuf::from(docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", volume]))
}

#[test]
fn a_paused_snapshot_of_a_running_container_captures_binds_and_volumes_and_skips_the_rest() {
    if !docker_ready("docker_pause_snapshot") {
        return;
    }
    let env = Env::new();
    let (c, vol) = (unique(&env, "app"), unique(&env, "db"));
    let _cleanup = Cleanup { containers: vec![c.clone()], volumes: vec![vol.clone()] };
    let data = env.data_dir("app/data");
    fs::write(data.join("hello.txt"), b"bind mount data\n").unwrap();
    let file = env.data.join("app.ini");
    fs::write(&file, b"k=v\n").unwrap();
    let id = run_container(
        &c,
        &[
            "-v",
            &format!("{}:/data", data.display()),
            "-v",
            &format!("{vol}:/var/lib/db"),
            "--tmpfs",
            "/cache",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            &format!("{}:/etc/app.ini", file.display()),
        ],
    );
    docker(&["exec", &c, "sh", "-c", "echo db-row > /var/lib/db/table"]);
    let since = now_secs() - 1;
    env.write_manifest("s.yaml", &snapshot_of("app", &format!("container: {c}"), ""));
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let obj = env.status(SNAPSHOTS, "app").unwrap();
    env.check(phase(&obj) == "Completed", "Completed", &obj);
    env.check(cond(&obj, "Ready").1 == "Captured", "reason Captured", &obj);
    let vols = obj["status"]["volumes"].as_array().unwrap();
    let names: Vec<&str> = vols.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["data", "var-lib-db"], "names derive from the targets");
    assert_eq!(vols[0]["target"], "/data");
    assert_eq!(vols[1]["target"], "/var/lib/db");
    assert_eq!(vols[1]["path"], volume_dir(&vol).to_str().unwrap(), "the named volume is read from its mountpoint");
    assert!(skipped_reason(&obj, "/cache").contains("tmpfs"), "{obj}");
    assert!(skipped_reason(&obj, "/var/run/docker.sock").contains("socket"), "{obj}");
    assert!(skipped_reason(&obj, "/etc/app.ini").contains("single file"), "{obj}");
    // Docker's own events: paused for the read, then unpaused.
    let ev = events(&id, since);
    assert_eq!(
        ev.iter().filter(|e| *e == "pause" || *e == "unpause").collect::<Vec<_>>(),
        ["pause", "unpause"],
        "{ev:?}"
    );
    assert_eq!(state(&c), "running");
    let archive = PathBuf::from(obj["status"]["archive"]["path"].as_str().unwrap());
    let listing = tar_list(&archive);
    assert!(listing.contains(&"volumes/0/hello.txt".to_string()), "{listing:?}");
    assert!(listing.contains(&"volumes/1/table".to_string()), "{listing:?}");
}

#[test]
fn stop_quiesce_takes_every_container_on_the_volume_in_dependency_order() {
    if !docker_ready("docker_stop_order") {
        return;
    }
    let env = Env::new();
    let (a, b, other) = (unique(&env, "a"), unique(&env, "b"), unique(&env, "other"));
    let _cleanup = Cleanup { containers: vec![b.clone(), a.clone(), other.clone()], volumes: vec![] };
    let data = env.data_dir("shared");
    fs::write(data.join("x"), b"x").unwrap();
    let bind = format!("{}:/data", data.display());
    let id_a = run_container(&a, &["-v", &bind]);
    // b shares a's network namespace: it must stop first and start after a.
    let mut args = vec!["run", "-d", "--pull", "never", "--init", "--name", &b, "--network"];
    let net = format!("container:{a}");
    args.extend_from_slice(&[&net, "-v", &bind, IMAGE, "sleep", "100000"]);
    let id_b = docker(&args);
    // A container not using the volume is never touched.
    let id_other = run_container(&other, &[]);
    let since = now_secs() - 1;
    // The snapshot names only a; b uses the same directory.
    env.write_manifest("s.yaml", &snapshot_of("s", &format!("container: {a}"), "  quiesce: Stop\n"));
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!((state(&a), state(&b), state(&other)), ("running".into(), "running".into(), "running".into()));
    let (ea, eb) = (events(&id_a, since), events(&id_b, since));
    assert!(ea.contains(&"stop".to_string()) && ea.contains(&"start".to_string()), "a: {ea:?}");
    assert!(eb.contains(&"stop".to_string()) && eb.contains(&"start".to_string()), "b: {eb:?}");
    let touched: Vec<String> = events(&id_other, since).into_iter().filter(|e| e != "start").collect();
    assert!(touched.is_empty(), "an unrelated container is not touched: {touched:?}");
    // Order, from the engine's global event stream.
    let all = docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &(now_secs() + 1).to_string(),
        "--filter",
        "event=stop",
        "--filter",
        "event=start",
        "--format",
        "{{.Action}} {{.ID}}",
    ]);
    let seq: Vec<String> = all
        .lines()
        .filter_map(|l| {
            let (act, id) = l.split_once(' ')?;
            let who = if id == id_a {
                "a"
            } else if id == id_b {
                "b"
            } else {
                return None;
            };
            Some(format!("{act}-{who}"))
        })
        .collect();
    // The containers' own first start may fall inside the one-second window.
    let first_stop = seq.iter().position(|e| e.starts_with("stop")).unwrap_or(0);
    assert_eq!(
        seq[first_stop..],
        ["stop-b", "stop-a", "start-a", "start-b"],
        "dependents stop first and start last: {all}"
    );
}

#[test]
fn a_restore_brings_the_same_container_back_on_the_restored_data() {
    if !docker_ready("docker_restore") {
        return;
    }
    let env = Env::new();
    let (c, stopped, vol) = (unique(&env, "app"), unique(&env, "stopped"), unique(&env, "db"));
    let _cleanup = Cleanup { containers: vec![c.clone(), stopped.clone()], volumes: vec![vol.clone()] };
    let data = env.data_dir("app");
    fs::write(data.join("f"), b"v1\n").unwrap();
    let bind = format!("{}:/data", data.display());
    let vmount = format!("{vol}:/var/lib/db");
    let id = run_container(&c, &["-v", &bind, "-v", &vmount]);
    docker(&["exec", &c, "sh", "-c", "echo v1 > /var/lib/db/row"]);
    // Another container on the same volume, already stopped: stays stopped.
    run_container(&stopped, &["-v", &bind]);
    docker(&["stop", &stopped]);
    env.write_manifest("s.yaml", &snapshot_of("v1", &format!("container: {c}"), ""));
    assert!(env.run_once(&[]).status.success());
    docker(&["exec", &c, "sh", "-c", "echo v2 > /data/f; echo v2 > /var/lib/db/row; echo junk > /var/lib/db/new"]);

    let since = now_secs() - 1;
    env.write_manifest("r.yaml", &restore_yaml("back", "v1", ""));
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let obj = env.status(RESTORES, "back").unwrap();
    env.check(phase(&obj) == "Completed", "Completed", &obj);
    env.check(obj["status"]["downtimeSeconds"].as_f64().is_some_and(|d| d > 0.0), "downtime measured", &obj);
    assert_eq!(id_of(&c), id, "the same container, not a new one");
    assert_eq!(state(&c), "running");
    assert_eq!(docker(&["exec", &c, "cat", "/data/f"]), "v1");
    assert_eq!(docker(&["exec", &c, "cat", "/var/lib/db/row"]), "v1");
    assert_eq!(
        docker(&["exec", &c, "sh", "-c", "ls /var/lib/db"]),
        "row",
        "the restored volume holds exactly the snapshot"
    );
    let ev = events(&id, since);
    assert!(ev.contains(&"stop".into()) && ev.contains(&"start".into()), "{ev:?}");
    assert_eq!(state(&stopped), "exited", "a container that was stopped stays stopped");
    // The replaced data is a snapshot with the same source, restorable in place.
    let pre = env.status(SNAPSHOTS, "back-pre-restore").unwrap();
    env.check(pre["spec"]["source"]["container"] == c.as_str(), "pre-restore snapshot names the container", &pre);
    assert!(leftovers(data.parent().unwrap()).is_empty());
    assert!(leftovers(volume_dir(&vol).parent().unwrap()).is_empty(), "no staging left beside the volume's _data");
}

/// Runs `--once` with a fault point; asserts the process was killed there.
fn killed_at(env: &Env, point: &str) {
    let mut cmd = Command::new(BIN);
    cmd.args(env.run_args()).arg("--once").env("VOLSNAP_FAULT", point);
    let out = run_bounded(&mut cmd, Duration::from_secs(300));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{point}: killed there: {}", show(&out));
}

#[test]
fn kill_9_while_a_container_is_paused_or_stopped_is_undone_at_the_next_start() {
    if !docker_ready("docker_kill9") {
        return;
    }
    let env = Env::new();
    let c = unique(&env, "app");
    let _cleanup = Cleanup { containers: vec![c.clone()], volumes: vec![] };
    let data = env.data_dir("app");
    fs::write(data.join("f"), b"v1\n").unwrap();
    run_container(&c, &["-v", &format!("{}:/data", data.display())]);

    // Killed while the container is frozen for a capture.
    env.write_manifest("s.yaml", &snapshot_of("paused", &format!("container: {c}"), ""));
    killed_at(&env, "capture:quiesced");
    assert_eq!(state(&c), "paused", "volsnap died holding the container paused");
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(state(&c), "running", "the start-up sweep unpaused it");
    env.check(
        phase(&env.status(SNAPSHOTS, "paused").unwrap()) == "Completed",
        "the capture was redone",
        &env.status(SNAPSHOTS, "paused").unwrap(),
    );

    // Killed while the container is stopped for a capture.
    env.write_manifest("s2.yaml", &snapshot_of("stopped", &format!("container: {c}"), "  quiesce: Stop\n"));
    killed_at(&env, "capture:quiesced");
    assert_eq!(state(&c), "exited");
    assert!(env.run_once(&[]).status.success());
    assert_eq!(state(&c), "running", "the start-up sweep started it again");

    // Killed in the middle of a restore, after the swap: the data is new and
    // the container runs again.
    fs::write(data.join("f"), b"v2\n").unwrap();
    env.write_manifest("r.yaml", &restore_yaml("r", "paused", ""));
    killed_at(&env, "restore:Swapped");
    assert_eq!(state(&c), "exited");
    assert!(env.run_once(&[]).status.success());
    assert_eq!(state(&c), "running");
    assert_eq!(docker(&["exec", &c, "cat", "/data/f"]), "v1");
    env.check(
        phase(&env.status(RESTORES, "r").unwrap()) == "Completed",
        "restore finished by recovery",
        &env.status(RESTORES, "r").unwrap(),
    );
}

#[test]
fn docker_bad_input_fails_clearly_and_never_crashes_the_daemon() {
    if !docker_ready("docker_bad_input") {
        return;
    }
    let env = Env::new();
    let (root_bind, outside) = (unique(&env, "root"), unique(&env, "outside"));
    let _cleanup = Cleanup { containers: vec![root_bind.clone(), outside.clone()], volumes: vec![] };
    run_container(&root_bind, &["-v", "/:/host:ro"]);
    let out_dir = env.root.join("not-allowed");
    fs::create_dir(&out_dir).unwrap();
    run_container(&outside, &["-v", &format!("{}:/data", out_dir.display())]);
    for (name, source) in [
        ("no-container", "container: vs-no-such-container-xyz".to_string()),
        ("no-volume", "volume: vs-no-such-volume-xyz".to_string()),
        ("binds-root", format!("container: {root_bind}")),
        ("outside-roots", format!("container: {outside}")),
    ] {
        env.write_manifest(&format!("{name}.yaml"), &snapshot_of(name, &source, ""));
    }
    let out = env.run_once(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let reason = |n: &str| cond(&env.status(SNAPSHOTS, n).unwrap(), "Ready").1;
    assert_eq!(reason("no-container"), "SourceNotFound");
    assert_eq!(reason("no-volume"), "SourceNotFound");
    let root = env.status(SNAPSHOTS, "binds-root").unwrap();
    assert_eq!(cond(&root, "Ready").1, "NoData");
    assert!(skipped_reason(&root, "/host").contains("/ is never captured"), "{root}");
    let o = env.status(SNAPSHOTS, "outside-roots").unwrap();
    assert!(skipped_reason(&o, "/data").contains("outside the allowed roots"), "{o}");
    assert_eq!(state(&root_bind), "running", "nothing was quiesced for a snapshot that captured nothing");

    // Docker unreachable: Failed with DockerUnavailable, exit 1, no crash.
    let env2 = Env::new();
    env2.write_manifest("s.yaml", &snapshot_of("s", "container: whatever", ""));
    let out = env2.run_once(&["--docker", "unix:///nonexistent/docker.sock"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = env2.status(SNAPSHOTS, "s").unwrap();
    env2.check(cond(&s, "Ready").1 == "DockerUnavailable", "reason DockerUnavailable", &s);
    env2.check(cond(&s, "Ready").2.contains("/nonexistent/docker.sock"), "the message names the endpoint", &s);
}

pub(crate) fn pause_at(cmd: &mut Command, dir: &Path, point: &str) {
    cmd.env("VOLSNAP_PAUSE", point).env("VOLSNAP_PAUSE_DIR", dir);
}

pub(crate) fn wait_reached(env: &Env, dir: &Path, point: &str) {
    let f = dir.join(format!("{}.reached", point.replace(':', "_")));
    wait_for(&format!("{point} reached"), TIMEOUT, || if f.exists() { Ok(()) } else { Err(env.logs()) });
}

pub(crate) fn release(dir: &Path, point: &str) {
    fs::write(dir.join(format!("{}.release", point.replace(':', "_"))), b"").unwrap();
}

#[test]
fn containers_removed_or_restarted_by_someone_else_mid_quiesce_are_reported_not_acted_on_blindly() {
    if !docker_ready("docker_interference") {
        return;
    }
    let env = Env::new();
    let (gone, restarted, recreated) = (unique(&env, "gone"), unique(&env, "restarted"), unique(&env, "recreated"));
    let _cleanup = Cleanup { containers: vec![gone.clone(), restarted.clone(), recreated.clone()], volumes: vec![] };
    let pauses = env.root.join("pauses");
    fs::create_dir(&pauses).unwrap();
    let dir = |n: &str| {
        let d = env.data_dir(n);
        fs::write(d.join("f"), n.as_bytes()).unwrap();
        format!("{}:/data", d.display())
    };
    run_container(&gone, &["-v", &dir("gone")]);
    run_container(&restarted, &["-v", &dir("restarted")]);
    let mut cmd = Command::new(BIN);
    pause_at(&mut cmd, &pauses, "capture:quiesced");
    let daemon = env.start_cmd(cmd, env.run_args());

    // Removed while paused for the capture.
    env.write_manifest("a.yaml", &snapshot_of("a", &format!("container: {gone}"), ""));
    wait_reached(&env, &pauses, "capture:quiesced");
    assert_eq!(state(&gone), "paused");
    docker(&["rm", "-f", &gone]);
    release(&pauses, "capture:quiesced");
    let a = env.wait_status(SNAPSHOTS, "a", "settled", settled);
    env.check(phase(&a) == "Completed", "the capture itself completes", &a);
    env.check(cond(&a, "Ready").1 == "CapturedWithWarnings", "but it is not a silent Captured", &a);
    env.check(cond(&a, "Ready").2.contains("no longer exists"), "the message says the container is gone", &a);
    let _ = fs::remove_file(pauses.join("capture_quiesced.reached"));
    let _ = fs::remove_file(pauses.join("capture_quiesced.release"));

    // Started by someone else while stopped for the capture.
    env.write_manifest("b.yaml", &snapshot_of("b", &format!("container: {restarted}"), "  quiesce: Stop\n"));
    wait_reached(&env, &pauses, "capture:quiesced");
    assert_eq!(state(&restarted), "exited");
    docker(&["start", &restarted]);
    release(&pauses, "capture:quiesced");
    let b = env.wait_status(SNAPSHOTS, "b", "settled", settled);
    env.check(cond(&b, "Ready").1 == "CapturedWithWarnings", "reported", &b);
    env.check(cond(&b, "Ready").2.contains("started by someone else"), "the message says so", &b);
    assert_eq!(state(&restarted), "running");
    drop(daemon);

    // Re-created (new ID, same name) while stopped for a restore: the new
    // container is reported and left alone, never started blindly.
    let bind = dir("recreated");
    run_container(&recreated, &["-v", &bind]);
    env.write_manifest("c.yaml", &snapshot_of("c", &format!("container: {recreated}"), ""));
    let mut cmd = Command::new(BIN);
    pause_at(&mut cmd, &pauses, "restore:Swapped");
    let daemon = env.start_cmd(cmd, env.run_args());
    env.wait_status(SNAPSHOTS, "c", "Completed", |o| phase(o) == "Completed");
    env.write_manifest("r.yaml", &restore_yaml("r", "c", ""));
    wait_reached(&env, &pauses, "restore:Swapped");
    let old_id = id_of(&recreated);
    docker(&["rm", "-f", &recreated]);
    docker(&[
        "create",
        "--pull",
        "never",
        "--init",
        "--network",
        "none",
        "--name",
        &recreated,
        "-v",
        &bind,
        IMAGE,
        "sleep",
        "100000",
    ]);
    assert_ne!(id_of(&recreated), old_id);
    release(&pauses, "restore:Swapped");
    let r = env.wait_status(RESTORES, "r", "settled", settled);
    env.check(phase(&r) == "Completed", "the data was restored", &r);
    env.check(cond(&r, "Succeeded").2.contains("no longer exists"), "the stale ID is reported", &r);
    assert_eq!(state(&recreated), "created", "the new container was not started by volsnap");
    drop(daemon);
}

#[test]
fn a_container_paused_by_someone_else_is_never_resumed_by_volsnap() {
    if !docker_ready("docker_paused_by_others") {
        return;
    }
    let env = Env::new();
    let c = unique(&env, "frozen");
    let _cleanup = Cleanup { containers: vec![c.clone()], volumes: vec![] };
    let data = env.data_dir("app");
    fs::write(data.join("f"), b"v1\n").unwrap();
    run_container(&c, &["-v", &format!("{}:/data", data.display())]);
    docker(&["pause", &c]);
    // A capture reads it as it is (already still) and leaves it paused.
    env.write_manifest("s.yaml", &snapshot_of("s", &format!("container: {c}"), ""));
    assert!(env.run_once(&[]).status.success());
    assert_eq!(state(&c), "paused", "volsnap must not unpause what it did not pause");
    // A restore would leave it on the replaced data: refused, nothing touched.
    fs::write(data.join("f"), b"v2\n").unwrap();
    env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
    let out = env.run_once(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = env.status(RESTORES, "r").unwrap();
    env.check(cond(&r, "Succeeded").1 == "WorkloadFailed", "reason WorkloadFailed", &r);
    env.check(cond(&r, "Succeeded").2.contains("is paused"), "the message says why", &r);
    assert_eq!(fs::read(data.join("f")).unwrap(), b"v2\n", "live data unchanged");
    assert_eq!(state(&c), "paused");
    assert!(leftovers(&env.data).is_empty());
}

#[test]
fn a_snapshot_that_failed_because_docker_was_down_is_retried_when_it_answers() {
    if !docker_ready("docker_retry") {
        return;
    }
    let env = Env::new();
    let c = unique(&env, "later");
    let _cleanup = Cleanup { containers: vec![c.clone()], volumes: vec![] };
    let data = env.data_dir("app");
    fs::write(data.join("f"), b"x").unwrap();
    run_container(&c, &["-v", &format!("{}:/data", data.display())]);
    // The daemon is pointed at a socket path where nothing answers yet.
    let sock = env.root.join("docker.sock");
    let url = format!("unix://{}", sock.display());
    let daemon = env.start(&["--docker", &url, "--resync-interval", "1"]);
    env.write_manifest("s.yaml", &snapshot_of("s", &format!("container: {c}"), ""));
    let failed = env.wait_status(SNAPSHOTS, "s", "Failed/DockerUnavailable", |o| {
        phase(o) == "Failed" && cond(o, "Ready").1 == "DockerUnavailable"
    });
    env.check(cond(&failed, "Ready").2.contains("retries"), "the message says it is retried", &failed);
    // Docker "comes back" at that path.
    std::os::unix::fs::symlink("/var/run/docker.sock", &sock).unwrap();
    env.wait_status(SNAPSHOTS, "s", "Completed after Docker answered", |o| phase(o) == "Completed");
    drop(daemon);
}

#[test]
fn a_path_restore_waits_for_docker_rather_than_swap_under_a_running_container() {
    if !docker_ready("docker_restore_waits") {
        return;
    }
    let env = Env::new();
    let c = unique(&env, "user");
    let _cleanup = Cleanup { containers: vec![c.clone()], volumes: vec![] };
    let data = env.data_dir("app");
    fs::write(data.join("f"), b"v1\n").unwrap();
    let id = run_container(&c, &["-v", &format!("{}:/data", data.display())]);
    // Docker is configured, but nothing answers at that path yet.
    let sock = env.root.join("docker.sock");
    let url = format!("unix://{}", sock.display());
    let daemon = env.start(&["--docker", &url, "--resync-interval", "1"]);
    env.write_manifest("s.yaml", &snapshot_yaml("s", &[("app", &data)], ""));
    env.wait_status(SNAPSHOTS, "s", "Completed (paths need no Docker)", |o| phase(o) == "Completed");
    docker(&["exec", &c, "sh", "-c", "echo v2 > /data/f"]);
    env.write_manifest("r.yaml", &restore_yaml("r", "s", "  keepPreRestore: false\n"));
    let waiting =
        env.wait_status(RESTORES, "r", "Failed/DockerUnavailable", |o| cond(o, "Succeeded").1 == "DockerUnavailable");
    env.check(cond(&waiting, "Succeeded").2.contains("waits for Docker"), "the message says why", &waiting);
    assert_eq!(fs::read(data.join("f")).unwrap(), b"v2\n", "nothing swapped under the running container");
    let since = now_secs() - 1;
    std::os::unix::fs::symlink("/var/run/docker.sock", &sock).unwrap();
    env.wait_status(RESTORES, "r", "Completed once Docker answers", |o| phase(o) == "Completed");
    let ev = events(&id, since);
    assert!(
        ev.contains(&"stop".into()) && ev.contains(&"start".into()),
        "the container was stopped and started: {ev:?}"
    );
    assert_eq!(docker(&["exec", &c, "cat", "/data/f"]), "v1", "the container sees the restored data");
    drop(daemon);
}
