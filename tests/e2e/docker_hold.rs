//! The Docker integration never leaves a workload down and never swaps data
//! under a running container: Docker going away mid-operation (a test-owned
//! second engine, stopped and started again), containers that come back on
//! their own, slow or quick stop timeouts, kill -9 during a stop, namespace
//! sidecars, and volumes or binds that are not where their path says.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::docker::*;
use crate::dockerd::TestDockerd;
use crate::restore::restore_yaml;
use crate::util::*;

/// A `--resync-interval 1` daemon talking to `url`, optionally held at a
/// fault-injection pause point.
fn daemon_on(env: &Env, url: &str, pause: Option<(&Path, &str)>) -> Daemon {
    let mut cmd = Command::new(BIN);
    if let Some((dir, point)) = pause {
        pause_at(&mut cmd, dir, point);
    }
    let mut args = env.run_args();
    args.extend(["--docker", url, "--resync-interval", "1"].map(Into::into));
    env.start_cmd(cmd, args)
}

fn pauses(env: &Env) -> std::path::PathBuf {
    let p = env.root.join("pauses");
    fs::create_dir_all(&p).unwrap();
    p
}

/// `data/app` holding `f` = "v1", and the `-v` argument that binds it at
/// `/data`.
fn app_data(env: &Env) -> (std::path::PathBuf, String) {
    let data = env.data_dir("app");
    fs::write(data.join("f"), b"v1\n").unwrap();
    let bind = format!("{}:/data", data.display());
    (data, bind)
}

fn progressing_reason(o: &serde_json::Value) -> String {
    cond(o, "Progressing").1
}

#[test]
fn docker_unreachable_while_containers_are_held_keeps_the_journal_and_brings_them_back_when_it_answers() {
    if !docker_ready("docker_unreachable_held") {
        return;
    }
    let mut d = TestDockerd::start(IMAGE);
    let env = Env::new();
    let (_, bind) = app_data(&env);
    d.docker(&["run", "-d", "--init", "--network", "none", "--name", "held", "-v", &bind, IMAGE, "sleep", "100000"]);
    let state_of = |d: &TestDockerd| d.docker(&["inspect", "-f", "{{.State.Status}}", "held"]);

    // A capture holds the container paused; Docker goes away before the
    // resume. The archive is good; the container waits for Docker.
    let dir = pauses(&env);
    let daemon = daemon_on(&env, &d.url(), Some((&dir, "capture:quiesced")));
    env.write_manifest("s.yaml", &snapshot_of("s", "container: held", ""));
    wait_reached(&env, &dir, "capture:quiesced");
    assert_eq!(state_of(&d), "paused");
    d.stop();
    release(&dir, "capture:quiesced");
    let s = env.wait_status(SNAPSHOTS, "s", "Completed, waiting for Docker", |o| {
        phase(o) == "Completed" && progressing_reason(o) == "DockerUnavailable"
    });
    env.check(cond(&s, "Ready").1 == "Captured", "it was held still throughout: Captured, no warning", &s);
    env.check(cond(&s, "Progressing").2.contains("waiting for Docker"), "the status says it waits", &s);
    d.restart();
    let s = env.wait_status(SNAPSHOTS, "s", "resumed once Docker answered", |o| progressing_reason(o) == "Completed");
    env.check(cond(&s, "Progressing").2.contains("resumed"), "the status says it was resumed", &s);
    assert_eq!(state_of(&d), "running", "the container volsnap paused was unpaused");
    drop(daemon);

    // A restore has the container stopped and swapped; Docker goes away
    // before the start. It waits as DockerUnavailable, then finishes.
    d.docker(&["exec", "held", "sh", "-c", "echo v2 > /data/f"]);
    let daemon = daemon_on(&env, &d.url(), Some((&dir, "restore:Swapping")));
    env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
    wait_reached(&env, &dir, "restore:Swapping");
    assert_eq!(state_of(&d), "exited");
    d.stop();
    release(&dir, "restore:Swapping");
    let r = env.wait_status(RESTORES, "r", "waiting for Docker", |o| cond(o, "Succeeded").1 == "DockerUnavailable");
    env.check(phase(&r) == "InProgress", "not Failed: it waits", &r);
    d.restart();
    let r = env.wait_status(RESTORES, "r", "Completed once Docker answered", |o| phase(o) == "Completed");
    env.check(cond(&r, "Succeeded").2.contains("recovery sweep"), "finished by the sweep", &r);
    assert_eq!(state_of(&d), "running", "the container volsnap stopped was started again");
    assert_eq!(d.docker(&["exec", "held", "cat", "/data/f"]), "v1", "on the restored data");
    drop(daemon);
}

#[test]
fn containers_that_come_up_mid_restore_are_stopped_before_they_can_use_the_replaced_data() {
    if !docker_ready("docker_came_up_mid_restore") {
        return;
    }
    let env = Env::new();
    let (c, looping) = (unique(&env, "app"), unique(&env, "loop"));
    let _cleanup = Cleanup { containers: vec![c.clone(), looping.clone()], volumes: vec![] };
    let (data, bind) = app_data(&env);
    run_container(&c, &["-v", &bind]);
    env.write_manifest("s.yaml", &snapshot_of("s", &format!("container: {c}"), ""));
    assert!(env.run_once(&[]).status.success());
    fs::write(data.join("f"), b"v2\n").unwrap();
    // A crash-looping container on the same data: mostly `restarting`.
    docker(&[
        "run",
        "-d",
        "--pull",
        "never",
        "--network",
        "none",
        "--restart",
        "always",
        "--name",
        &looping,
        "-v",
        &bind,
        IMAGE,
        "sh",
        "-c",
        "exit 1",
    ]);
    wait_for("the loop to back off", TIMEOUT, || {
        let n: u32 = docker(&["inspect", "-f", "{{.RestartCount}}", &looping]).parse().unwrap_or(0);
        if n >= 4 && state(&looping) == "restarting" { Ok(()) } else { Err(format!("{n} restarts")) }
    });

    let dir = pauses(&env);
    let daemon = daemon_on(&env, "unix:///var/run/docker.sock", Some((&dir, "restore:Swapping")));
    env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
    wait_reached(&env, &dir, "restore:Swapping");
    assert_eq!(state(&looping), "exited", "a restarting container is held (stopped) like a running one");
    // An operator starts the app while volsnap holds it stopped.
    docker(&["start", &c]);
    release(&dir, "restore:Swapping");
    let r = env.wait_status(RESTORES, "r", "settled", settled);
    env.check(phase(&r) == "Completed", "Completed", &r);
    env.check(cond(&r, "Succeeded").2.contains("came up"), "the status says something came up", &r);
    assert_eq!(state(&c), "running");
    assert_eq!(docker(&["exec", &c, "cat", "/data/f"]), "v1", "it runs on the restored data, not a deleted directory");
    drop(daemon);
}

#[test]
fn a_capture_says_so_when_a_container_on_the_data_came_up_during_the_read() {
    if !docker_ready("docker_came_up_mid_read") {
        return;
    }
    let env = Env::new();
    let (c, late) = (unique(&env, "app"), unique(&env, "late"));
    let _cleanup = Cleanup { containers: vec![c.clone(), late.clone()], volumes: vec![] };
    let (_, bind) = app_data(&env);
    run_container(&c, &["-v", &bind]);
    run_container(&late, &["-v", &bind]);
    docker(&["stop", &late]);
    let dir = pauses(&env);
    let daemon = daemon_on(&env, "unix:///var/run/docker.sock", Some((&dir, "capture:quiesced")));
    env.write_manifest("s.yaml", &snapshot_of("s", &format!("container: {c}"), ""));
    wait_reached(&env, &dir, "capture:quiesced");
    // Not held (it was stopped), and started by someone while volsnap reads.
    docker(&["start", &late]);
    release(&dir, "capture:quiesced");
    let s = env.wait_status(SNAPSHOTS, "s", "settled", settled);
    env.check(cond(&s, "Ready").1 == "CapturedWithWarnings", "not a silent Captured", &s);
    env.check(cond(&s, "Ready").2.contains("came up while volsnap read"), "the message names what came up", &s);
    drop(daemon);
}

#[test]
fn local_volumes_with_mount_options_are_read_where_their_data_is_or_skipped() {
    if !docker_ready("docker_volume_options") {
        return;
    }
    let env = Env::new();
    let (c, bound, tmp) = (unique(&env, "app"), unique(&env, "bound"), unique(&env, "tmpfs"));
    let _cleanup = Cleanup { containers: vec![c.clone()], volumes: vec![bound.clone(), tmp.clone()] };
    let device = env.data_dir("device");
    fs::write(device.join("f"), b"v1\n").unwrap();
    docker(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &format!("device={}", device.display()),
        &bound,
    ]);
    docker(&["volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", &tmp]);
    run_container(&c, &["-v", &format!("{bound}:/data"), "-v", &format!("{tmp}:/scratch")]);
    env.write_manifest("s.yaml", &snapshot_of("s", &format!("container: {c}"), "  quiesce: Stop\n"));
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let s = env.status(SNAPSHOTS, "s").unwrap();
    let vols = s["status"]["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 1, "{s}");
    env.check(vols[0]["path"] == device.to_str().unwrap(), "read from the device directory", &s);
    env.check(vols[0]["files"] == 1, "with its file", &s);
    assert!(skipped_reason(&s, "/scratch").contains("tmpfs"), "{s}");
    // Restored into the device directory, which the container binds again.
    fs::write(device.join("f"), b"v2\n").unwrap();
    env.write_manifest("r.yaml", &restore_yaml("r", "s", "  keepPreRestore: false\n"));
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(docker(&["exec", &c, "cat", "/data/f"]), "v1");
}

#[test]
fn a_bind_whose_path_was_re_pointed_after_the_container_started_is_skipped_with_a_reason() {
    if !docker_ready("docker_repointed_bind") {
        return;
    }
    let env = Env::new();
    let c = unique(&env, "app");
    let _cleanup = Cleanup { containers: vec![c.clone()], volumes: vec![] };
    for (rel, content) in [("releases/1", "one"), ("releases/2", "two")] {
        fs::write(env.data_dir(rel).join("f"), content).unwrap();
    }
    let current = env.data.join("current");
    std::os::unix::fs::symlink("releases/1", &current).unwrap();
    run_container(&c, &["-v", &format!("{}:/data", current.display())]);
    // A deploy re-points `current` while the container keeps release 1.
    let next = env.data.join("current.next");
    std::os::unix::fs::symlink("releases/2", &next).unwrap();
    fs::rename(&next, &current).unwrap();
    env.write_manifest("s.yaml", &snapshot_of("s", &format!("container: {c}"), ""));
    let out = env.run_once(&[]);
    assert_eq!(out.status.code(), Some(1), "nothing capturable: {}", show(&out));
    let s = env.status(SNAPSHOTS, "s").unwrap();
    env.check(cond(&s, "Ready").1 == "NoData", "never a silent capture of the other release", &s);
    let why = skipped_reason(&s, "/data");
    assert!(why.contains("no longer the directory") && why.contains("Restart the container"), "{why}");
}

/// A container whose PID 1 ignores SIGTERM (no `--init`): only the kill
/// after its stop timeout ends it.
fn stubborn(name: &str, bind: &str, stop_timeout: &str) -> String {
    docker(&[
        "run",
        "-d",
        "--pull",
        "never",
        "--network",
        "none",
        "--stop-timeout",
        stop_timeout,
        "--name",
        name,
        "-v",
        bind,
        IMAGE,
        "sleep",
        "100000",
    ])
}

#[test]
fn a_containers_own_stop_timeout_is_honoured_and_a_kill_is_reported() {
    if !docker_ready("docker_stop_timeout") {
        return;
    }
    let env = Env::new();
    let c = unique(&env, "quick");
    let _cleanup = Cleanup { containers: vec![c.clone()], volumes: vec![] };
    let (data, bind) = app_data(&env);
    stubborn(&c, &bind, "2");
    env.write_manifest("s.yaml", &snapshot_of("s", &format!("container: {c}"), ""));
    assert!(env.run_once(&[]).status.success());
    fs::write(data.join("f"), b"v2\n").unwrap();
    env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
    assert!(env.run_once(&[]).status.success());
    let r = env.status(RESTORES, "r").unwrap();
    let downtime = r["status"]["downtimeSeconds"].as_f64().unwrap();
    eprintln!("downtime with StopTimeout=2: {downtime} s");
    env.check((2.0..10.0).contains(&downtime), "the container's 2 s grace, not a fixed 30 s", &r);
    env.check(cond(&r, "Succeeded").2.contains("was killed"), "the kill is reported", &r);
    assert_eq!(state(&c), "running");
    // The object's stopTimeoutSeconds overrides the container's own.
    env.write_manifest("r2.yaml", &restore_yaml("r2", "s", "  stopTimeoutSeconds: 4\n  keepPreRestore: false\n"));
    assert!(env.run_once(&[]).status.success());
    let r2 = env.status(RESTORES, "r2").unwrap();
    let downtime = r2["status"]["downtimeSeconds"].as_f64().unwrap();
    eprintln!("downtime with stopTimeoutSeconds=4: {downtime} s");
    env.check((4.0..10.0).contains(&downtime), "the object's 4 s grace", &r2);
}

#[test]
fn kill_9_while_docker_is_still_stopping_a_container_leaves_it_running_after_recovery() {
    if !docker_ready("docker_kill9_mid_stop") {
        return;
    }
    let env = Env::new();
    let c = unique(&env, "slow");
    let _cleanup = Cleanup { containers: vec![c.clone()], volumes: vec![] };
    let (data, bind) = app_data(&env);
    let sig = env.data_dir("sig");
    // PID 1 notes the SIGTERM and keeps running until Docker kills it.
    let id = docker(&[
        "run",
        "-d",
        "--pull",
        "never",
        "--network",
        "none",
        "--stop-timeout",
        "6",
        "--name",
        &c,
        "-v",
        &bind,
        "-v",
        &format!("{}:/sig", sig.display()),
        IMAGE,
        "sh",
        "-c",
        "trap 'touch /sig/term' TERM; while true; do sleep 0.1; done",
    ]);
    env.write_manifest("s.yaml", &snapshot_of("s", &format!("container: {c}"), ""));
    assert!(env.run_once(&[]).status.success());
    fs::write(data.join("f"), b"v2\n").unwrap();
    let since = now_secs() - 1;
    let mut daemon = env.start(&[]);
    env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
    wait_for("the stop to be under way", TIMEOUT, || {
        if sig.join("term").exists() { Ok(()) } else { Err(daemon.log_text()) }
    });
    daemon.kill9();
    assert_eq!(state(&c), "running", "Docker's stop is still in flight");
    // Recovery alone (the restore is not redone).
    env.remove_manifest("r.yaml");
    let out = env.run_once(&[]);
    assert!(out.status.success(), "{}", show(&out));
    // Docker's stop ends (with the kill) whatever volsnap does; what matters
    // is that the container runs after it.
    wait_for("Docker's stop to end", Duration::from_secs(30), || {
        let ev = events(&id, since);
        if ev.contains(&"die".to_string()) { Ok(()) } else { Err(format!("{ev:?}")) }
    });
    assert_eq!(state(&c), "running", "recovery waited for the stop and started the container again");
    assert_eq!(docker(&["exec", &c, "cat", "/data/f"]), "v2", "rolled back: the live data is as it was");
}

fn netns(container: &str) -> String {
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", container]);
    fs::read_link(format!("/proc/{pid}/ns/net")).unwrap().display().to_string()
}

#[test]
fn namespace_sidecars_are_restarted_after_the_container_whose_namespace_they_share() {
    if !docker_ready("docker_sidecars") {
        return;
    }
    let env = Env::new();
    let (x, side) = (unique(&env, "x"), unique(&env, "side"));
    let _cleanup = Cleanup { containers: vec![side.clone(), x.clone()], volumes: vec![] };
    let (_, bind) = app_data(&env);
    run_container(&x, &["-v", &bind]);
    // The sidecar shares x's network namespace and mounts nothing.
    let net = format!("container:{x}");
    docker(&["run", "-d", "--pull", "never", "--init", "--network", &net, "--name", &side, IMAGE, "sleep", "100000"]);
    assert_eq!(netns(&side), netns(&x));
    env.write_manifest("s.yaml", &snapshot_of("s", &format!("container: {x}"), ""));
    assert!(env.run_once(&[]).status.success());
    env.write_manifest("r.yaml", &restore_yaml("r", "s", ""));
    assert!(env.run_once(&[]).status.success());
    assert_eq!((state(&x), state(&side)), ("running".into(), "running".into()));
    assert_eq!(netns(&side), netns(&x), "the sidecar is in x's new network namespace, not the dead one");
}

#[test]
fn restores_run_at_most_max_concurrent_at_once() {
    let env = Env::new();
    let mut manifests = Vec::new();
    for n in ["a", "b"] {
        let d = env.data_dir(n);
        fs::write(d.join("f"), n).unwrap();
        manifests.push((n, d));
    }
    for (n, d) in &manifests {
        env.write_manifest(&format!("s-{n}.yaml"), &snapshot_yaml(&format!("s-{n}"), &[("v", d)], ""));
    }
    assert!(env.run_once(&[]).status.success());
    let dir = pauses(&env);
    let mut cmd = Command::new(BIN);
    pause_at(&mut cmd, &dir, "restore:Extracted");
    let mut args = env.run_args();
    args.extend(["--max-concurrent", "1", "--docker", "off"].map(Into::into));
    let daemon = env.start_cmd(cmd, args);
    for (n, _) in &manifests {
        env.write_manifest(&format!("r-{n}.yaml"), &restore_yaml(&format!("r-{n}"), &format!("s-{n}"), ""));
    }
    wait_reached(&env, &dir, "restore:Extracted");
    // Both restores are known to the daemon before the first is released.
    wait_for("both restores seen", TIMEOUT, || {
        if ["r-a", "r-b"].iter().all(|n| env.status(RESTORES, n).is_some()) { Ok(()) } else { Err(env.logs()) }
    });
    let running: Vec<&str> = ["r-a", "r-b"]
        .into_iter()
        .filter(|n| env.status(RESTORES, n).is_some_and(|o| phase(&o) == "InProgress"))
        .collect();
    assert_eq!(running.len(), 1, "one restore at a time with --max-concurrent 1: {running:?}");
    release(&dir, "restore:Extracted");
    for n in ["r-a", "r-b"] {
        let o = env.wait_status(RESTORES, n, "Completed", |o| phase(o) == "Completed");
        env.check(o["status"].get("downtimeSeconds").is_none(), "nothing was stopped: no downtime", &o);
        env.check(!cond(&o, "Succeeded").2.contains("stopped for"), "and no 'stopped for' in the message", &o);
    }
    drop(daemon);
}

#[test]
fn once_ends_with_failure_when_the_manifests_directory_is_missing() {
    let env = Env::new();
    fs::remove_dir_all(&env.manifests).unwrap();
    let out = run_bounded(
        Command::new(BIN).args(env.run_args()).args(["--once", "--docker", "off"]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("manifests directory"), "{}", show(&out));
}
