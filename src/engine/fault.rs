//! Fault injection for the crash tests.
//!
//! Built only with `--features fault-injection` (as `make test` does); in
//! every other build [`point`] is an empty inline function. With the feature,
//! `VOLSNAP_FAULT=<name>` makes the process kill itself with SIGKILL when it
//! reaches the point called `<name>`: no destructor, no flush, no cleanup,
//! exactly like `kill -9` or a power cut at that moment (the journal's
//! writes are already durable by then).

/// Dies here if `VOLSNAP_FAULT` names this point (test builds only).
#[inline]
pub fn point(name: &str) {
    #[cfg(feature = "fault-injection")]
    if std::env::var("VOLSNAP_FAULT").is_ok_and(|v| v == name) {
        eprintln!("volsnap: fault injection: killing the process at {name}");
        // SAFETY: kill(getpid(), SIGKILL) has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        // SIGKILL is not delivered synchronously on every kernel path.
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}

/// Test builds only: `VOLSNAP_FAIL=<name>` makes the point called `<name>`
/// return an I/O error, so tests can reach the error paths of operations
/// that do not fail on demand (a rename, say).
pub fn fail(name: &str) -> std::io::Result<()> {
    #[cfg(feature = "fault-injection")]
    if std::env::var("VOLSNAP_FAIL").is_ok_and(|v| v == name) {
        return Err(std::io::Error::other(format!("injected failure at {name}")));
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
    Ok(())
}

/// Test builds only: `VOLSNAP_PAUSE=<name>` and `VOLSNAP_PAUSE_DIR=<dir>` make
/// the process stop at the point called `<name>`: it creates
/// `<dir>/<name>.reached` and waits until `<dir>/<name>.release` exists. The
/// tests use it to hold an operation at a known step (to start a second
/// restore of the same target, to edit or delete an object mid-restore)
/// without racing against the clock.
pub fn pause(name: &str) {
    #[cfg(feature = "fault-injection")]
    if std::env::var("VOLSNAP_PAUSE").is_ok_and(|v| v == name)
        && let Some(dir) = std::env::var_os("VOLSNAP_PAUSE_DIR").map(std::path::PathBuf::from)
    {
        let file = |suffix: &str| dir.join(format!("{}.{suffix}", name.replace(':', "_")));
        let _ = std::fs::write(file("reached"), b"");
        while !file("release").exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}

/// Test builds only: `VOLSNAP_FORCE_TWO_STEP_RENAME=1` makes the swap use the
/// journaled two-step rename instead of `RENAME_EXCHANGE`, so the fallback is
/// tested on file systems that support the exchange.
pub fn force_two_step_rename() -> bool {
    #[cfg(feature = "fault-injection")]
    if std::env::var_os("VOLSNAP_FORCE_TWO_STEP_RENAME").is_some() {
        return true;
    }
    false
}
