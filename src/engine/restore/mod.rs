//! Restore: put a snapshot's data back, crash-safely, with downtime
//! independent of the data size.
//!
//! # The sequence
//!
//! 1. **Pre-flight** ([`preflight()`], all-or-nothing, touches nothing): the
//!    snapshot is Completed; every target is re-derived from the source's
//!    CURRENT configuration (never from paths in the archive) and checked
//!    against the allowed roots; targets are not mount points; each file
//!    system has room for the expanded data.
//! 2. **Extract** while the workload runs: the untrusted-archive extractor
//!    writes each volume into a sibling staging directory on the target's
//!    file system (`.<name>.volsnap-restore-<uid>-<index>`), checking the whole
//!    archive and its sha256 on the way; then one `syncfs` makes it durable.
//! 3. **Stop** the workload ([`Workload`](crate::engine::workload::Workload)), **swap** each staging directory
//!    with its target (`renameat2(RENAME_EXCHANGE)`, or a two-step rename
//!    through `.<name>.volsnap-old-<uid>-<index>` where the file system has no
//!    exchange), fsync the parents, **start** the workload. Downtime is
//!    stop + swap + start.
//! 4. **Pre-restore snapshot**: the replaced data (now in the staging or
//!    aside directory) is archived as the snapshot `<restore>-pre-restore`,
//!    its archive (zstd -1 on worker threads, [`PRE_RESTORE_COMPRESSION`])
//!    recorded in one transaction with the journal step, then removed. The engine returns the snapshot ([`PreRestoreSnapshot`]); the
//!    caller creates the object. The row stays at step `Recorded` until the
//!    caller [`acknowledge`]s the outcome, so a crash before the outcome is
//!    written reports it again rather than running the restore twice.
//!
//! # The journal
//!
//! Every step is written to the `restore_journal` table (SQLite,
//! `synchronous=FULL`) BEFORE it is taken, with the plan. [`recover()`] runs at
//! start-up, before any reconcile, and for every row: before the first swap
//! it rolls back (removes staging directories); once any swap has happened
//! it rolls forward (finishes the swaps); in both cases it starts the
//! workload units the journal says were stopped, then finishes the
//! pre-restore snapshot and cleans up. Which data lies where is read from
//! the file system by directory identity (device, inode), which renames
//! keep, so a crash between a rename and its journal write is harmless.
//! Live data is therefore always entirely old or entirely new, never mixed
//! and, once recovery has run, never missing.
//!
//! # The files
//!
//! One job per file; this one holds the re-exports (the public API is
//! `crate::engine::restore::*`) and the constants.
//!
//! - `plan`: the journaled plan ([`RestorePlan`] and its parts), the
//!   [`JournalStep`]s and how a step is written, [`Refusal`].
//! - `preflight`: [`preflight()`] and the checks behind it (targets, space).
//! - `execute`: the [`Executor`]: extraction, stop, swap, start.
//! - `swap_state`: where one volume's data lies, read from the file system,
//!   and the moves forward and back; shared by execution and recovery.
//! - `pre_restore`: after the swap, the replaced data archived as the
//!   pre-restore snapshot, recorded, removed; shared by both.
//! - `recover`: [`recover()`], the sweep over the journal.

mod execute;
mod plan;
mod pre_restore;
mod preflight;
mod recover;
mod swap_state;

pub use execute::{Executor, RestoreFailure, RestoreOutcome, RestoreProgress};
pub use plan::{
    Destination, JournalStep, ObjRef, PreRestorePlan, PreRestoreRecord, PreRestoreSnapshot, Refusal, RestorePlan,
    VolumePlan,
};
pub use preflight::{PreflightInput, preflight};
pub use recover::{Recovered, Stuck, recover};

/// Forgets a finished restore's journal row (step `Recorded`) once the
/// caller has written its outcome (and created its pre-restore snapshot)
/// where users see it. Until then the row lets a restarted process report
/// the outcome again instead of running the restore a second time.
pub fn acknowledge(store: &crate::store::Store, restore_uid: &str) -> Result<(), crate::store::StoreError> {
    match store.journal_get(restore_uid)? {
        Some(row) if JournalStep::parse(&row.step) == Some(JournalStep::Recorded) => store.journal_delete(restore_uid),
        _ => Ok(()),
    }
}

/// Suffix of the snapshot that keeps the replaced data.
pub const PRE_RESTORE_SUFFIX: &str = "-pre-restore";

/// Compression of every pre-restore snapshot, whatever that of the restored
/// snapshot: zstd, at [`PRE_RESTORE_ZSTD_LEVEL`], compressed on every core
/// as any capture is.
///
/// The pre-restore snapshot is written while the restore runs, after the
/// swap, and the restore is `Completed` only once it is durable: its
/// compression speed is restore time. gzip (level 6, one thread) compresses
/// about 33 MiB/s, which made an in-place restore of a 512 MiB volume take
/// 12 s where extracting it takes 2 s. zstd level 1 with worker threads
/// compresses text at several hundred MiB/s and passes incompressible data
/// through at memory speed, with a ratio close to gzip's on text. The
/// archive is an ordinary `tar.zst` (one zstd frame with a content
/// checksum): GNU tar (`tar --zstd -xf`), `zstd -t` and volsnap read it like
/// any other, and its snapshot says `compression: zstd`,
/// `format: tar+zstd`.
pub const PRE_RESTORE_COMPRESSION: crate::api::Compression = crate::api::Compression::Zstd;

/// zstd level of the pre-restore snapshot (see [`PRE_RESTORE_COMPRESSION`]).
pub const PRE_RESTORE_ZSTD_LEVEL: u32 = 1;

/// Headroom on the snapshot's recorded byte count before extraction is
/// refused as a decompression bomb: 1/8 more, plus 64 MiB.
const BOMB_HEADROOM_FRACTION: u64 = 8;
const BOMB_HEADROOM_BYTES: u64 = 64 << 20;
/// Space counted per entry on top of its content (inode, last block).
const SPACE_PER_ENTRY: u64 = 4096;
