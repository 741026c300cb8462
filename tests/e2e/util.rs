//! Helpers for the end-to-end tests: temporary environments, a daemon that is
//! killed on drop, polling with a timeout (never sleeping as synchronisation),
//! status-file access, archive extraction with GNU tar, and a tree comparer.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_volsnap");

/// How long any single condition may take to become true. Generous: the
/// tests run the debug binary, two at a time, on a 2-core machine.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Poll interval of [`wait_for`].
pub const POLL: Duration = Duration::from_millis(50);

pub const SNAPSHOTS: &str = "volumesnapshots";
pub const RESTORES: &str = "volumerestores";
pub const SCHEDULES: &str = "volumesnapshotschedules";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn next_id() -> usize {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Whether the tests run as root (mounts, chown, setpriv).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Prints why a test is skipped; the caller returns right after.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// Whether a command is on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Polls `f` every [`POLL`] until it returns `Ok`, up to `timeout`. `Err`
/// carries the last observation, shown in the panic message on timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() >= timeout {
                    panic!("timed out after {timeout:?} waiting for {what}\n--- last observed ---\n{last}");
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Reads and parses a status file: `<state>/status/<ns>/<plural>/<name>.yaml`.
pub fn status(state: &Path, ns: &str, plural: &str, name: &str) -> Option<Value> {
    let text = fs::read_to_string(status_path(state, ns, plural, name)).ok()?;
    serde_yaml_ng::from_str(&text).ok()
}

/// Path of a status file.
pub fn status_path(state: &Path, ns: &str, plural: &str, name: &str) -> PathBuf {
    state.join("status").join(ns).join(plural).join(format!("{name}.yaml"))
}

/// Path of the report about an unusable manifest file.
pub fn invalid_report_path(state: &Path, file: &str) -> PathBuf {
    state.join("status").join("_invalid").join(format!("{file}.yaml"))
}

/// `status.phase`, or "" when absent.
pub fn phase(obj: &Value) -> &str {
    obj["status"]["phase"].as_str().unwrap_or("")
}

/// The condition of a type, if set.
pub fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == ty)
}

/// `(status, reason, message)` of a condition, "" for missing parts.
pub fn cond(obj: &Value, ty: &str) -> (String, String, String) {
    match condition(obj, ty) {
        Some(c) => (
            c["status"].as_str().unwrap_or("").to_string(),
            c["reason"].as_str().unwrap_or("").to_string(),
            c["message"].as_str().unwrap_or("").to_string(),
        ),
        None => (String::new(), String::new(), String::new()),
    }
}

/// Whether the phase is terminal.
pub fn settled(obj: &Value) -> bool {
    matches!(phase(obj), "Completed" | "Failed")
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> String {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Hex sha256 of bytes.
pub fn sha256_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `len` pseudo-random bytes to a file, in chunks.
pub fn write_random_file(path: &Path, len: usize, seed: u64) {
    let mut f = File::create(path).unwrap();
    let chunk = 1 << 20;
    let mut done = 0;
    let mut s = seed;
    while done < len {
        let n = chunk.min(len - done);
        f.write_all(&random_bytes(n, s)).unwrap();
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        done += n;
    }
}

/// Asserts `cond` stays true for the whole window (a negative check needs a
/// window: we look for a change that must NOT happen).
pub fn holds_for(what: &str, window: Duration, mut cond: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    while start.elapsed() < window {
        if let Err(e) = cond() {
            panic!("{what} stopped holding after {:?}: {e}", start.elapsed());
        }
        std::thread::sleep(POLL);
    }
}

/// Writes `n` small files `f0`..`f<n-1>` into `dir`.
pub fn write_numbered_files(dir: &Path, n: usize) {
    for i in 0..n {
        fs::write(dir.join(format!("f{i}")), format!("file {i}\n")).unwrap();
    }
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
pub fn q(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).unwrap()
}

/// A VolumeSnapshot manifest over `(volume name, path)` pairs, in namespace
/// default. `extra_spec` lines are added under `spec:` (already indented by
/// the caller with two spaces, e.g. "  compression: zstd\n").
pub fn snapshot_yaml(name: &str, volumes: &[(&str, &Path)], extra_spec: &str) -> String {
    let mut y = format!("apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata:\n  name: {name}\nspec:\n");
    y.push_str("  source:\n    paths:\n");
    for (vol, path) in volumes {
        y.push_str(&format!("      - name: {vol}\n        path: {}\n", q(path.to_str().unwrap())));
    }
    y.push_str(extra_spec);
    y
}

/// One test environment: a temporary directory holding the manifests
/// directory, the state directory, and `data/` (the only allowed root).
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub manifests: PathBuf,
    pub state: PathBuf,
    pub data: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::Builder::new().prefix("volsnap-e2e-").tempdir().unwrap();
        // Canonical: the daemon reports resolved paths.
        let root = tmp.path().canonicalize().unwrap();
        let manifests = root.join("manifests");
        let state = root.join("state");
        let data = root.join("data");
        fs::create_dir(&manifests).unwrap();
        fs::create_dir(&data).unwrap();
        Env { tmp, root, manifests, state, data }
    }

    /// Archives directory (the default: `<state>/archives`).
    pub fn archives(&self) -> PathBuf {
        self.state.join("archives")
    }

    /// Where the archive of a default-namespace snapshot lands.
    pub fn archive_path(&self, name: &str, ext: &str) -> PathBuf {
        self.archives().join("default").join(format!("{name}.{ext}"))
    }

    /// A directory under `data/`, created.
    pub fn data_dir(&self, rel: &str) -> PathBuf {
        let p = self.data.join(rel);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Writes a manifest atomically (temp file outside the manifests dir,
    /// then rename), so the daemon never sees half a file.
    pub fn write_manifest(&self, file: &str, content: &str) {
        let staging = self.root.join(format!(".staging-{}", next_id()));
        fs::write(&staging, content).unwrap();
        fs::rename(&staging, self.manifests.join(file)).unwrap();
    }

    pub fn remove_manifest(&self, file: &str) {
        fs::remove_file(self.manifests.join(file)).unwrap();
    }

    /// `run --manifests M --state S --allowed-root DATA`.
    pub fn run_args(&self) -> Vec<OsString> {
        vec![
            "run".into(),
            "--manifests".into(),
            self.manifests.clone().into(),
            "--state".into(),
            self.state.clone().into(),
            "--allowed-root".into(),
            self.data.clone().into(),
        ]
    }

    fn log_path(&self, what: &str) -> PathBuf {
        self.root.join(format!("{what}-{}.log", next_id()))
    }

    /// Starts the daemon with extra arguments.
    pub fn start(&self, extra: &[&str]) -> Daemon {
        let mut args = self.run_args();
        args.extend(extra.iter().map(OsString::from));
        self.start_cmd(Command::new(BIN), args)
    }

    /// Starts `cmd args...` as a daemon (e.g. under setpriv).
    pub fn start_cmd(&self, mut cmd: Command, args: Vec<OsString>) -> Daemon {
        let log = self.log_path("daemon");
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Daemon { child: Some(child), log }
    }

    /// `volsnap run --once` with extra arguments; waits (bounded) for it.
    pub fn run_once(&self, extra: &[&str]) -> Output {
        let mut args = self.run_args();
        args.push("--once".into());
        args.extend(extra.iter().map(OsString::from));
        run_bounded(Command::new(BIN).args(&args), Duration::from_secs(300))
    }

    /// Status of a default-namespace object.
    pub fn status(&self, plural: &str, name: &str) -> Option<Value> {
        status(&self.state, "default", plural, name)
    }

    /// Raw text of a status file, for messages.
    pub fn status_text(&self, plural: &str, name: &str) -> String {
        fs::read_to_string(status_path(&self.state, "default", plural, name))
            .unwrap_or_else(|e| format!("<no status file: {e}>"))
    }

    /// Tail of every log written in this environment.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut entries: Vec<_> = fs::read_dir(&self.root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension() == Some(OsStr::new("log")))
            .collect();
        entries.sort();
        for p in entries {
            let text = fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {} (last {} lines) ---\n", p.display(), tail.len()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Waits until a default-namespace object's status satisfies `pred`.
    pub fn wait_status(&self, plural: &str, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for(&format!("{plural}/{name}: {what}"), TIMEOUT, || match self.status(plural, name) {
            Some(v) if pred(&v) => Ok(v),
            _ => Err(format!("{}\n{}", self.status_text(plural, name), self.logs())),
        })
    }

    /// Waits until a snapshot/restore is Completed or Failed.
    pub fn wait_settled(&self, plural: &str, name: &str) -> Value {
        self.wait_status(plural, name, "phase Completed or Failed", settled)
    }

    /// Waits until a snapshot is Completed.
    pub fn wait_completed(&self, name: &str) -> Value {
        self.wait_status(SNAPSHOTS, name, "phase Completed", |v| phase(v) == "Completed")
    }

    /// Panics with context unless `cond` holds.
    pub fn check(&self, cond: bool, what: &str, obj: &Value) {
        if !cond {
            panic!("{what}\n--- object ---\n{}\n{}", serde_yaml_ng::to_string(obj).unwrap(), self.logs());
        }
    }
}

/// Runs a command to completion with a time limit; kills it on timeout.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    // Drain the pipes on threads so a chatty child never blocks.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = t_err.join().unwrap();
            panic!("{cmd:?} did not finish within {limit:?}\nstderr:\n{}", String::from_utf8_lossy(&err));
        }
        std::thread::sleep(POLL);
    };
    Output { status, stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
}

/// Runs the binary with arguments (bounded), for the read-only commands.
pub fn volsnap(args: &[&OsStr]) -> Output {
    run_bounded(Command::new(BIN).args(args), Duration::from_secs(120))
}

/// Formats an Output for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running daemon; killed (SIGKILL) and reaped on drop.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child, which is not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Waits for exit up to `limit`; panics with the log on timeout.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > limit {
                panic!("daemon did not exit within {limit:?}\n{}", self.log_text());
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A tmpfs mounted for a test (root only); unmounted on drop.
pub struct Mount {
    pub path: PathBuf,
}

impl Mount {
    /// Mounts a tmpfs with `opts` (e.g. "size=2m" or "ro,size=1m") at `path`.
    /// None (after printing why) when mounting is not possible here.
    pub fn tmpfs(path: &Path, opts: &str) -> Option<Mount> {
        fs::create_dir_all(path).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", opts, "tmpfs"]).arg(path).output().ok()?;
        if !out.status.success() {
            eprintln!("mount -t tmpfs -o {opts} failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(Mount { path: path.to_path_buf() })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.path).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Lists an archive with GNU tar (`tar -tzf` / `tar --zstd -tf`).
pub fn tar_list(archive: &Path) -> Vec<String> {
    let mut cmd = Command::new("tar");
    if is_zstd(archive) {
        cmd.arg("--zstd").arg("-tf");
    } else {
        cmd.arg("-tzf");
    }
    let out = cmd.arg(archive).output().unwrap();
    assert!(out.status.success(), "tar -t {} failed: {}", archive.display(), show(&out));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn is_zstd(archive: &Path) -> bool {
    archive.to_string_lossy().ends_with(".zst")
}

/// Extracts an archive with GNU tar into a new directory under `parent`
/// (`--numeric-owner -p` as root, so ownership and modes are restored).
pub fn extract(archive: &Path, parent: &Path) -> PathBuf {
    let dest = parent.join(format!("extract-{}", next_id()));
    fs::create_dir_all(&dest).unwrap();
    let mut cmd = Command::new("tar");
    if is_zstd(archive) {
        cmd.arg("--zstd").arg("-xf");
    } else {
        cmd.arg("-xzf");
    }
    cmd.arg(archive).arg("-C").arg(&dest);
    if is_root() {
        cmd.args(["--numeric-owner", "-p"]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "GNU tar could not extract {}: {}", archive.display(), show(&out));
    dest
}

/// What the tree comparer records for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { sha256: String, size: u64 },
    Symlink(OsString),
    Special,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds; None for symlinks (not compared).
    pub mtime: Option<i64>,
}

/// A directory tree as seen with lstat, keyed by path relative to the root
/// ("" is the root itself), plus the hardlink groups of regular files.
#[derive(Debug, Default)]
pub struct Tree {
    pub entries: BTreeMap<PathBuf, Entry>,
    pub hardlinks: BTreeSet<BTreeSet<PathBuf>>,
}

impl Tree {
    pub fn count(&self, f: impl Fn(&EntryKind) -> bool) -> usize {
        self.entries.values().filter(|e| f(&e.kind)).count()
    }
}

/// Walks a tree with lstat, never following symlinks.
pub fn scan_tree(root: &Path) -> Tree {
    let mut tree = Tree::default();
    let mut inodes: HashMap<(u64, u64), BTreeSet<PathBuf>> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = if rel.as_os_str().is_empty() { root.to_path_buf() } else { root.join(&rel) };
        let md = fs::symlink_metadata(&abs).unwrap_or_else(|e| panic!("lstat {}: {e}", abs.display()));
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            let mut children: Vec<OsString> = fs::read_dir(&abs).unwrap().map(|e| e.unwrap().file_name()).collect();
            children.sort();
            for c in children {
                stack.push(rel.join(c));
            }
            EntryKind::Dir
        } else if ft.is_file() {
            if md.nlink() > 1 {
                inodes.entry((md.dev(), md.ino())).or_default().insert(rel.clone());
            }
            EntryKind::File { sha256: sha256_file(&abs), size: md.len() }
        } else if ft.is_symlink() {
            EntryKind::Symlink(fs::read_link(&abs).unwrap().into_os_string())
        } else {
            EntryKind::Special
        };
        let mtime = if ft.is_symlink() { None } else { Some(md.mtime()) };
        tree.entries.insert(rel, Entry { kind, mode: md.mode() & 0o7777, uid: md.uid(), gid: md.gid(), mtime });
    }
    tree.hardlinks = inodes.into_values().filter(|g| g.len() > 1).collect();
    tree
}

/// Asserts that `copy` holds the same tree as `orig`: same entries, content,
/// mode, uid/gid, mtime (seconds), symlink targets and hardlink grouping.
/// Special files (FIFOs, sockets, devices) of `orig` are expected to be
/// absent from `copy`: volsnap skips them.
pub fn assert_same_tree(orig: &Path, copy: &Path) {
    let a = scan_tree(orig);
    let b = scan_tree(copy);
    let mut problems = Vec::new();
    for (rel, ea) in &a.entries {
        match (b.entries.get(rel), &ea.kind) {
            (None, EntryKind::Special) => {}
            (Some(_), EntryKind::Special) => problems.push(format!("{rel:?}: special file should not be archived")),
            (None, _) => problems.push(format!("{rel:?}: missing from the copy")),
            (Some(eb), _) => {
                if ea != eb {
                    problems.push(format!("{rel:?}: differs\n    orig: {ea:?}\n    copy: {eb:?}"));
                }
            }
        }
    }
    for rel in b.entries.keys() {
        if !a.entries.contains_key(rel) {
            problems.push(format!("{rel:?}: in the copy but not in the original"));
        }
    }
    if a.hardlinks != b.hardlinks {
        problems.push(format!("hardlink groups differ\n    orig: {:?}\n    copy: {:?}", a.hardlinks, b.hardlinks));
    }
    assert!(
        problems.is_empty(),
        "trees differ ({} vs {}):\n  {}",
        orig.display(),
        copy.display(),
        problems.join("\n  ")
    );
}

/// Sets atime and mtime of a path (not following symlinks).
pub fn set_mtime(path: &Path, secs: i64) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let ts = libc::timespec { tv_sec: secs, tv_nsec: 0 };
    let times = [ts, ts];
    // SAFETY: valid NUL-terminated path and a two-element timespec array.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}: {}", path.display(), std::io::Error::last_os_error());
}

/// Creates a FIFO.
pub fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// chown -R (lchown: symlinks themselves, never their targets).
pub fn chown_r(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_r(&e.unwrap().path(), uid, gid);
        }
    }
}

/// Every non-directory under `root` (relative paths), for "nothing left
/// behind" checks.
pub fn non_dirs_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if !root.exists() {
        return out;
    }
    let tree = scan_tree(root);
    for (rel, e) in tree.entries {
        if e.kind != EntryKind::Dir {
            out.push(rel);
        }
    }
    out
}

/// Every file whose name ends in `.partial` under `root`.
pub fn partials_under(root: &Path) -> Vec<PathBuf> {
    non_dirs_under(root).into_iter().filter(|p| p.as_os_str().as_bytes().ends_with(b".partial")).collect()
}

/// Modification time of a file in nanoseconds.
pub fn mtime_ns(path: &Path) -> i128 {
    let md = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128
}

/// A fault-injection pause point (`VOLSNAP_PAUSE`): the daemon started with
/// [`Pause::start`] stops there until [`Pause::release`], so a test holds an
/// operation at a known step instead of racing the clock.
pub struct Pause {
    dir: PathBuf,
    point: String,
}

impl Pause {
    /// A pause at `point` (e.g. `restore:Extracted`, `capture:started`).
    pub fn new(env: &Env, point: &str) -> Pause {
        let dir = env.root.join(format!("pauses-{}", next_id()));
        fs::create_dir(&dir).unwrap();
        Pause { dir, point: point.into() }
    }

    fn file(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}.{suffix}", self.point.replace(':', "_")))
    }

    /// Starts the daemon (`run` with `extra` arguments) held at this point.
    pub fn start(&self, env: &Env, extra: &[&str]) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.env("VOLSNAP_PAUSE", &self.point).env("VOLSNAP_PAUSE_DIR", &self.dir);
        let mut args = env.run_args();
        args.extend(extra.iter().map(OsString::from));
        env.start_cmd(cmd, args)
    }

    /// Waits until the daemon stands at the point.
    pub fn wait_reached(&self, env: &Env, timeout: Duration) {
        let f = self.file("reached");
        wait_for(&format!("{} reached", self.point), timeout, || if f.exists() { Ok(()) } else { Err(env.logs()) });
    }

    /// Lets it go on.
    pub fn release(&self) {
        fs::write(self.file("release"), b"").unwrap();
    }
}
