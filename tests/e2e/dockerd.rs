//! A Docker Engine of the test's own: its own socket, data root, exec root
//! and pidfile under a temporary directory, started with the flags
//! tests/docker/ensure-docker.sh uses (no iptables, no bridge, cgroupfs) and
//! `--live-restore` (containers outlive the engine, as on a production host
//! that restarts `dockerd`). A test stops it (SIGTERM) and starts it again
//! on the same directories mid-operation, so the shared engine other tests
//! use is never taken down.
//!
//! The test image is copied from the shared engine (`docker save`, then
//! `docker load`): no registry is reachable.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{run_bounded, show, wait_for};

/// How long the engine may take to answer or to exit.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(90);

/// A private `dockerd`; stopped, its containers removed and its mounts
/// undone on drop.
pub struct TestDockerd {
    /// Holds every directory of the engine (kept short: a unix socket path
    /// has at most 107 bytes).
    _tmp: tempfile::TempDir,
    root: PathBuf,
    child: Option<Child>,
}

impl TestDockerd {
    /// Starts an engine and loads `image` from the shared engine into it.
    pub fn start(image: &str) -> TestDockerd {
        let tmp = tempfile::Builder::new().prefix("vsd-").tempdir_in("/tmp").unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let mut d = TestDockerd { _tmp: tmp, root, child: None };
        d.launch();
        let tar = d.root.join("image.tar");
        let saved = run_bounded(Command::new("docker").args(["save", "-o"]).arg(&tar).arg(image), ENGINE_TIMEOUT);
        assert!(saved.status.success(), "docker save {image}: {}", show(&saved));
        let out = run_bounded(Command::new("docker").args(["-H", &d.url(), "load", "-i"]).arg(&tar), ENGINE_TIMEOUT);
        assert!(out.status.success(), "loading {image} into the test engine: {}", show(&out));
        d
    }

    /// `unix://<socket>`, for `--docker` and `docker -H`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.root.join("d.sock").display())
    }

    /// `docker -H <this engine> ARGS`, asserting success; trimmed stdout.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = run_bounded(Command::new("docker").arg("-H").arg(self.url()).args(args), ENGINE_TIMEOUT);
        assert!(out.status.success(), "docker {args:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether the engine answers.
    pub fn answers(&self) -> bool {
        Command::new("docker")
            .args(["-H", &self.url(), "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the engine with SIGTERM and waits for it to exit. With
    /// `--live-restore` its containers keep their state meanwhile.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > ENGINE_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the test dockerd did not exit within {ENGINE_TIMEOUT:?} of SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!self.answers(), "the engine still answers after it exited");
    }

    /// Starts the engine again on the same directories.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running engine");
        self.launch();
    }

    fn log(&self) -> String {
        fs::read_to_string(self.root.join("log")).unwrap_or_default()
    }

    fn launch(&mut self) {
        let log = fs::OpenOptions::new().create(true).append(true).open(self.root.join("log")).unwrap();
        let r = |p: &str| self.root.join(p);
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(self.url())
            .arg("--pidfile")
            .arg(r("d.pid"))
            .arg("--data-root")
            .arg(r("data"))
            .arg("--exec-root")
            .arg(r("exec"))
            .args([
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--bridge=none",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                "--live-restore",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning dockerd");
        self.child = Some(child);
        wait_for(
            "the test dockerd to answer",
            ENGINE_TIMEOUT,
            || {
                if self.answers() { Ok(()) } else { Err(self.log()) }
            },
        );
    }
}

impl Drop for TestDockerd {
    fn drop(&mut self) {
        if self.child.is_none() && Path::new(&self.root.join("data")).exists() {
            // Stopped by the test: start it once more to remove what it ran.
            self.launch();
        }
        let ids = Command::new("docker").args(["-H", &self.url(), "ps", "-aq"]).output();
        if let Ok(ids) = ids {
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["-H", &self.url(), "rm", "-f", id]).output();
            }
        }
        self.stop();
        // dockerd bind-mounts its data root onto itself; undo whatever is left
        // below our directory (deepest first) so the temporary directory can go.
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&self.root))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}
