//! `volsnap apply -f FILE [--wait] [--timeout D]`: hands a manifest to
//! files mode and (with `--wait`) reports until every object in it is
//! Completed or Failed.
//!
//! The file is checked first (bounded parsing, validation): a file with an
//! invalid object is refused and nothing is written. It is then written
//! into the manifests directory atomically (a hidden temporary file, which
//! the scanner ignores, renamed into place). If a daemon owns the state
//! directory, it picks the file up; otherwise the caller runs the daemon in
//! the foreground with `--once` over the same directory, and this command
//! reports the outcome of the file's objects only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{Kind, ObjectKey};
use crate::files::status::StatusFiles;
use crate::manifest::{decode, read_regular};

/// Why `apply` could not hand the file over.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The file cannot be read.
    #[error("{file}: {why}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        why: String,
    },
    /// The file does not declare valid objects.
    #[error("{file} is not applied: {}", problems.join("; "))]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong, per document.
        problems: Vec<String>,
    },
    /// Writing into the manifests directory failed.
    #[error("cannot write into the manifests directory {dir}: {source}")]
    Write {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The objects a checked manifest file declares.
pub fn check(file: &Path) -> Result<Vec<ObjectKey>, ApplyError> {
    let shown = file.display().to_string();
    let (bytes, _) = read_regular(file).map_err(|e| ApplyError::Read { file: shown.clone(), why: e.to_string() })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ApplyError::Read { file: shown.clone(), why: "it is not UTF-8 text".into() })?;
    let decoded = decode(&shown, &text);
    let mut problems: Vec<String> = decoded.errors.iter().filter(|e| !e.contains("are kept")).cloned().collect();
    for (key, decl) in &decoded.declarations {
        if let Err((field, message)) = &decl.parsed {
            problems.push(format!("{key}: {field}: {message}"));
        }
    }
    if !problems.is_empty() || decoded.declarations.is_empty() {
        if problems.is_empty() {
            problems.push("it declares no object".into());
        }
        return Err(ApplyError::Invalid { file: shown, problems });
    }
    Ok(decoded.declarations.into_iter().map(|(k, _)| k).collect())
}

/// Writes `file` into `manifests` under its own name, atomically.
pub fn hand_over(file: &Path, manifests: &Path) -> Result<PathBuf, ApplyError> {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "applied.yaml".into());
    let name = if name.ends_with(".yaml") || name.ends_with(".yml") { name } else { format!("{name}.yaml") };
    let target = manifests.join(&name);
    let write = |e| ApplyError::Write { dir: manifests.to_path_buf(), source: e };
    let text = std::fs::read(file).map_err(write)?;
    let temp = manifests.join(format!(".{name}.volsnap-apply-{}", std::process::id()));
    std::fs::create_dir_all(manifests).map_err(write)?;
    std::fs::write(&temp, &text).map_err(write)?;
    std::fs::rename(&temp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        write(e)
    })?;
    Ok(target)
}

/// How the applied objects ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// Every object reached Completed (schedules: Ready).
    AllCompleted,
    /// At least one Failed.
    SomeFailed,
    /// The timeout passed first.
    TimedOut,
}

/// Reports each object's phase (and progress) on `out` as it changes, until
/// all are settled or `timeout` passes. `interactive`: rewrite one line per
/// object (a terminal) rather than print a line per change.
pub fn wait(
    state: &Path,
    keys: &[ObjectKey],
    timeout: Duration,
    interactive: bool,
    out: &mut dyn Write,
) -> std::io::Result<Waited> {
    let files = StatusFiles::new(state);
    let deadline = Instant::now() + timeout;
    let mut shown: Vec<String> = vec![String::new(); keys.len()];
    loop {
        let mut settled = 0;
        let mut failed = false;
        for (i, key) in keys.iter().enumerate() {
            let object: Option<Value> =
                std::fs::read_to_string(files.path(key)).ok().and_then(|t| serde_yaml_ng::from_str(&t).ok());
            let (line, done, bad) = describe_progress(key, object.as_ref());
            settled += usize::from(done);
            failed |= bad;
            if line != shown[i] {
                if interactive {
                    write!(out, "\r\x1b[2K{line}")?;
                    if done {
                        writeln!(out)?;
                    }
                } else {
                    writeln!(out, "{line}")?;
                }
                out.flush()?;
                shown[i] = line;
            }
        }
        if settled == keys.len() {
            return Ok(if failed { Waited::SomeFailed } else { Waited::AllCompleted });
        }
        if Instant::now() >= deadline {
            if interactive {
                writeln!(out)?;
            }
            return Ok(Waited::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One object's line, whether it is settled, and whether it failed.
fn describe_progress(key: &ObjectKey, object: Option<&Value>) -> (String, bool, bool) {
    let Some(object) = object else { return (format!("{key}: waiting for the daemon to pick it up"), false, false) };
    let main = if key.kind == Kind::Restore { "Succeeded" } else { "Ready" };
    let condition = object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == main));
    let reason = condition.and_then(|c| c["reason"].as_str()).unwrap_or("");
    let message = condition.and_then(|c| c["message"].as_str()).unwrap_or("");
    if key.kind == Kind::Schedule {
        let ready = condition.is_some_and(|c| c["status"] == "True");
        return (format!("{key}: {reason}: {message}"), condition.is_some(), condition.is_some() && !ready);
    }
    let phase = object.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
    let progress = match (object.pointer("/status/progress/bytesDone"), object.pointer("/status/progress/bytesTotal")) {
        (Some(d), Some(t)) if phase == "InProgress" => {
            let (d, t) = (d.as_u64().unwrap_or(0), t.as_u64().unwrap_or(0));
            let pct = (d * 100).checked_div(t).unwrap_or(0).min(100);
            let bar = "#".repeat((pct / 5) as usize);
            format!(" [{bar:<20}] {pct}% ({d}/{t} bytes)")
        }
        _ => String::new(),
    };
    let done = phase == "Completed" || phase == "Failed";
    let tail = if done || phase == "Pending" { format!(" {reason}: {message}") } else { String::new() };
    (format!("{key}: {phase}{progress}{tail}"), done, phase == "Failed")
}
