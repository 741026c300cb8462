//! SQLite state: archives and journals (both modes), objects (files mode
//! only), versioned migrations, the archives-directory containment check,
//! the start-up orphan sweep, and the locks that give one process a state
//! and an archives directory.
//!
//! # Tables
//!
//! - `archives`: every archive volsnap wrote or adopted, keyed by the uid of
//!   its snapshot object (a pre-restore archive, recorded before its object
//!   exists, by a record id until the object binds it). Both modes.
//! - `restore_journal`, `quiesce_journal`: the write-ahead journals of
//!   restores and of held workloads. Both modes.
//! - `objects`: the objects files mode reads from manifests, with their
//!   status. Files mode only (in a cluster the API server keeps them).
//!
//! # Layout
//!
//! - `<state>/volsnap.db`: SQLite in WAL mode, `synchronous=FULL` (a
//!   committed transaction survives a power cut), `foreign_keys=ON`, a 5 s
//!   busy timeout. The schema is versioned by `PRAGMA user_version` and
//!   upgraded by ordered migration scripts (see `migrations.rs`); a database
//!   written by a newer volsnap is refused ([`StoreError::TooNew`]).
//! - `<archives>/…`: archive files, recorded in the `archives` table by a
//!   path *relative* to the archives directory.
//!
//! # Containment
//!
//! A row of the database is not trusted to name a safe path: the file may
//! have been edited, restored from elsewhere, or the archives directory may
//! contain symlinks. Every stored path goes through
//! [`Store::archive_abs_path`] before the daemon reads, serves or deletes the
//! file it names; see there for the rules.
//!
//! # Start-up sweep
//!
//! [`Store::sweep_orphans`] reconciles the archives directory with the
//! `archives` table before any object is reconciled:
//!
//! - temporary archives (`*.partial`, left by a crash mid-capture) are
//!   removed;
//! - archive files no row knows are **quarantined, not deleted**: they are
//!   moved to `<archives>/_orphaned/<same relative path>` together with their
//!   `.sha256` file. An unknown archive most often means the database was
//!   lost or replaced (restored from an old backup, a new state dir pointed at
//!   an old archives dir); deleting would destroy the only copy of someone's
//!   data, while moving it aside costs nothing and leaves the operator to
//!   decide (the file can be adopted again with `source.archive`). The name
//!   `_orphaned` cannot clash with a namespace (DNS labels have no `_`);
//! - `.sha256` files whose archive is gone are removed;
//! - rows whose file is missing, or whose stored path fails the containment
//!   check, are reported (the caller marks their snapshots); the rows are
//!   kept, and a refused path is never touched;
//! - any other file is left alone.

pub mod fsutil;
mod journal;
mod lock;
mod migrations;
mod paths;
mod sweep;
#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::api::{Kind, ObjectKey, Time};

pub use journal::{JournalRow, QuiesceRow};
pub use lock::{Ownership, state_owned};
pub use migrations::SCHEMA_VERSION;

/// Suffix of an archive being written. Such files are never visible under a
/// final name and are removed by the start-up sweep.
pub const TEMP_SUFFIX: &str = ".partial";

/// Suffix of the checksum file written next to each archive, in the format of
/// `sha256sum` (so `sha256sum -c` works without volsnap).
pub const CHECKSUM_SUFFIX: &str = ".sha256";

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "volsnap.db";

/// Name of the quarantine directory inside the archives directory, where the
/// start-up sweep moves archive files that no record knows.
pub const QUARANTINE_DIR: &str = "_orphaned";

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process uses the same state directory.
    #[error("another volsnap daemon is using the state directory {0} (lock file volsnap.lock is held)")]
    StateLocked(PathBuf),
    /// Another process uses the same archives directory.
    #[error(
        "another volsnap daemon is using the archives directory {0} (it holds a lock on the directory); give each daemon its own --archives"
    )]
    ArchivesLocked(PathBuf),
    /// The lock file could not be created.
    #[error("cannot create lock file in state directory {path}: {source}")]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("state database {path}: {op}: {source}")]
    Sqlite {
        /// Database file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        source: rusqlite::Error,
    },
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A stored archive path does not lie inside the archives directory.
    #[error("refusing to use stored archive path {path:?}: {why}")]
    PathEscapes {
        /// The stored path.
        path: String,
        /// Why it was refused.
        why: String,
    },
    /// The database was written by a newer volsnap.
    #[error(
        "state database {path} has schema version {found}, newer than this volsnap supports ({supported}); upgrade volsnap"
    )]
    TooNew {
        /// Database file.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// The database has an older schema and was opened read-only, so it
    /// cannot be upgraded.
    #[error(
        "state database {path} has schema version {found}, older than this volsnap expects ({supported}); run the daemon (`volsnap run`) once with this state directory to upgrade it"
    )]
    TooOld {
        /// Database file.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Version this build expects.
        supported: u32,
    },
    /// A read-only open found no database.
    #[error(
        "no volsnap state at {path}: {DB_FILE} does not exist there; pass --state pointing at the daemon's state directory, or start `volsnap run` first"
    )]
    NoState {
        /// The state directory that was looked in.
        path: PathBuf,
    },
    /// A schema migration script failed.
    #[error("state database {path}: migration to schema version {version} failed: {source}")]
    Migration {
        /// Database file.
        path: PathBuf,
        /// The version the script would have produced.
        version: u32,
        /// The error.
        source: rusqlite::Error,
    },
    /// Another object (different uid) already has this kind/namespace/name.
    #[error("state database: {key} is already stored with uid {existing_uid}")]
    ObjectExists {
        /// The contested identity.
        key: ObjectKey,
        /// UID of the object that holds it.
        existing_uid: String,
    },
    /// Another archive record already uses this relative path.
    #[error("state database: archive path {rel_path:?} is already recorded for snapshot uid {existing_uid}")]
    ArchivePathTaken {
        /// The contested path.
        rel_path: String,
        /// UID of the snapshot whose record holds it.
        existing_uid: String,
    },
    /// A row holds a value this program could not have written.
    #[error("state database {path}: {what}")]
    Corrupt {
        /// Database file.
        path: PathBuf,
        /// Which row and field, and what is wrong.
        what: String,
    },
    /// A store opened with [`Store::open_read_only`] was asked to change files.
    #[error("the state store was opened read-only; cannot {op}")]
    ReadOnly {
        /// What was asked.
        op: &'static str,
    },
}

impl StoreError {
    fn sqlite(path: &Path, op: &'static str, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: path.to_path_buf(), op, source }
    }

    fn io(op: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io { op, path: path.to_path_buf(), source }
    }
}

/// One object as files mode keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredObject {
    /// metadata.uid, assigned on first sight.
    pub uid: String,
    /// Kind, namespace, name.
    pub key: ObjectKey,
    /// Manifest file that declares it (file name within the manifests dir).
    pub manifest_file: Option<String>,
    /// The whole object (apiVersion, kind, metadata, spec, status) as JSON.
    pub object: serde_json::Value,
}

/// One archive the store knows.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveRecord {
    /// UID of the snapshot object that produced or adopted it.
    pub snapshot_uid: String,
    /// Namespace of that snapshot.
    pub namespace: String,
    /// Name of that snapshot.
    pub name: String,
    /// Path relative to the archives directory.
    pub rel_path: String,
    /// `tar+gzip` or `tar+zstd`.
    pub format: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// sha256, hex.
    pub sha256: String,
    /// The archive's `volsnap.json`, as JSON text.
    pub manifest_json: String,
    /// When it was recorded.
    pub created_at: Time,
    /// False once the snapshot object was deleted and the archive retained.
    pub object_present: bool,
}

/// What the start-up sweep did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepReport {
    /// Temporary archives removed.
    pub removed_temp: Vec<PathBuf>,
    /// Unknown archive files moved to the quarantine directory (their new
    /// paths, under `<archives>/_orphaned/`).
    pub quarantined: Vec<PathBuf>,
    /// Records whose archive file is gone (or whose stored path was refused
    /// by the containment check).
    pub missing: Vec<ArchiveRecord>,
    /// For the refused ones among `missing`: snapshot uid and why (a symlink,
    /// not a regular file, outside the archives directory).
    pub refused: Vec<(String, String)>,
}

/// The state store: one SQLite connection plus the archives directory.
///
/// A `Store` is `Send` but not `Sync` (one connection); share it behind a
/// mutex, or open one per thread.
pub struct Store {
    conn: Connection,
    db_path: PathBuf,
    /// The archives directory, canonical (symlinks resolved).
    archives_dir: PathBuf,
    read_only: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db_path", &self.db_path)
            .field("archives_dir", &self.archives_dir)
            .field("read_only", &self.read_only)
            .finish()
    }
}

const OBJECT_COLUMNS: &str = "uid, kind, namespace, name, manifest_file, object_json";
const ARCHIVE_COLUMNS: &str =
    "snapshot_uid, namespace, name, rel_path, format, size_bytes, sha256, manifest_json, created_at, object_present";

impl Store {
    /// Opens the state store for the daemon: creates the state directory
    /// (mode 0700) and the archives directory if missing, opens or creates
    /// `<state_dir>/volsnap.db` (WAL, `synchronous=FULL`, foreign keys on,
    /// 5 s busy timeout) and applies pending migrations.
    ///
    /// Both directories must be writable; if not (read-only media,
    /// permissions) the error names the directory and says so.
    pub fn open(state_dir: &Path, archives_dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(state_dir)?;
        probe_writable(state_dir, "the state directory must be writable; cannot create a file in")?;
        fs::create_dir_all(archives_dir)
            .map_err(|e| StoreError::io("the archives directory must be writable; cannot create", archives_dir, e))?;
        probe_writable(archives_dir, "the archives directory must be writable; cannot create a file in")?;
        let archives_dir = fs::canonicalize(archives_dir)
            .map_err(|e| StoreError::io("resolve the archives directory", archives_dir, e))?;

        let db_path = state_dir.join(DB_FILE);
        let mut conn = Connection::open(&db_path).map_err(|e| StoreError::sqlite(&db_path, "open (read-write)", e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| StoreError::sqlite(&db_path, "set the busy timeout", e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| StoreError::sqlite(&db_path, "switch to WAL journal mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                db = %db_path.display(),
                journal_mode = %mode,
                "the file system of the state directory does not support SQLite WAL mode; continuing in {mode} mode \
                 (read-only commands may wait while the daemon writes)"
            );
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| StoreError::sqlite(&db_path, "set synchronous=FULL", e))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| StoreError::sqlite(&db_path, "enable foreign keys", e))?;
        migrations::migrate(&mut conn, &db_path)?;
        Ok(Store { conn, db_path, archives_dir, read_only: false })
    }

    /// Opens an existing state store read-only, for the CLI (`get`,
    /// `describe`) while a daemon may be running. Creates nothing and applies
    /// no migrations: a missing database is [`StoreError::NoState`], an
    /// older schema [`StoreError::TooOld`] (run the daemon once), a newer one
    /// [`StoreError::TooNew`].
    pub fn open_read_only(state_dir: &Path, archives_dir: &Path) -> Result<Store, StoreError> {
        let db_path = state_dir.join(DB_FILE);
        match fs::metadata(&db_path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoState { path: state_dir.to_path_buf() });
            }
            Err(e) => return Err(StoreError::io("look for the state database", &db_path, e)),
        }
        let conn =
            Connection::open_with_flags(&db_path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| StoreError::sqlite(&db_path, "open (read-only)", e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| StoreError::sqlite(&db_path, "set the busy timeout", e))?;
        let found = migrations::user_version(&conn, &db_path)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew { path: db_path, found, supported: SCHEMA_VERSION });
        }
        if found < SCHEMA_VERSION {
            return Err(StoreError::TooOld { path: db_path, found, supported: SCHEMA_VERSION });
        }
        // The archives directory may not exist (no snapshot yet); containment
        // checks against it then fail cleanly when a path is resolved.
        let archives_dir = match fs::canonicalize(archives_dir) {
            Ok(p) => p,
            Err(_) => std::path::absolute(archives_dir)
                .map_err(|e| StoreError::io("resolve the archives directory", archives_dir, e))?,
        };
        Ok(Store { conn, db_path, archives_dir, read_only: true })
    }

    /// Path of the database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The archives directory, canonical (symlinks resolved).
    pub fn archives_dir(&self) -> &Path {
        &self.archives_dir
    }

    /// Whether the store was opened with [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn err(&self, op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| StoreError::sqlite(&self.db_path, op, e)
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt { path: self.db_path.clone(), what }
    }

    // ----- objects -------------------------------------------------------

    /// Stored objects, optionally of one kind and/or in one namespace,
    /// sorted by (kind, namespace, name) with kinds in [`Kind::ALL`] order.
    pub fn objects(&self, kind: Option<Kind>, namespace: Option<&str>) -> Result<Vec<StoredObject>, StoreError> {
        let sql = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR namespace = ?2)"
        );
        let op = "list objects";
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.err(op))?;
        let rows = stmt
            .query_map(params![kind.map(Kind::name), namespace], ObjectRow::from_row)
            .map_err(self.err(op))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err(op))?;
        let mut out = rows.into_iter().map(|r| self.object_from_row(r)).collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The object with this kind/namespace/name, if stored.
    pub fn object(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        let sql = format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3");
        let op = "read object";
        let row = self
            .conn
            .prepare_cached(&sql)
            .map_err(self.err(op))?
            .query_row(params![key.kind.name(), key.namespace, key.name], ObjectRow::from_row)
            .optional()
            .map_err(self.err(op))?;
        row.map(|r| self.object_from_row(r)).transpose()
    }

    /// The object with this uid, if stored.
    pub fn object_by_uid(&self, uid: &str) -> Result<Option<StoredObject>, StoreError> {
        let sql = format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE uid = ?1");
        let op = "read object by uid";
        let row = self
            .conn
            .prepare_cached(&sql)
            .map_err(self.err(op))?
            .query_row(params![uid], ObjectRow::from_row)
            .optional()
            .map_err(self.err(op))?;
        row.map(|r| self.object_from_row(r)).transpose()
    }

    /// Inserts or replaces (by uid) an object; `updated_at` becomes now.
    /// Fails with [`StoreError::ObjectExists`] if another uid already holds
    /// the same kind/namespace/name.
    pub fn put_object(&self, obj: &StoredObject) -> Result<(), StoreError> {
        let json = serde_json::to_string(&obj.object)
            .map_err(|e| self.corrupt(format!("object {} (uid {}) cannot be serialised: {e}", obj.key, obj.uid)))?;
        let sql = "INSERT INTO objects (uid, kind, namespace, name, manifest_file, object_json, updated_at)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                   ON CONFLICT (uid) DO UPDATE SET
                     kind = excluded.kind, namespace = excluded.namespace, name = excluded.name,
                     manifest_file = excluded.manifest_file, object_json = excluded.object_json,
                     updated_at = excluded.updated_at";
        let result = self.conn.prepare_cached(sql).and_then(|mut stmt| {
            stmt.execute(params![
                obj.uid,
                obj.key.kind.name(),
                obj.key.namespace,
                obj.key.name,
                obj.manifest_file,
                json,
                Time::now().to_string(),
            ])
        });
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => match self.object(&obj.key)? {
                Some(existing) if existing.uid != obj.uid => {
                    Err(StoreError::ObjectExists { key: obj.key.clone(), existing_uid: existing.uid })
                }
                _ => Err(StoreError::sqlite(&self.db_path, "write object", e)),
            },
            Err(e) => Err(StoreError::sqlite(&self.db_path, "write object", e)),
        }
    }

    /// Deletes the object with this uid. Returns whether it existed.
    pub fn delete_object(&self, uid: &str) -> Result<bool, StoreError> {
        let op = "delete object";
        let n = self
            .conn
            .prepare_cached("DELETE FROM objects WHERE uid = ?1")
            .and_then(|mut s| s.execute(params![uid]))
            .map_err(self.err(op))?;
        Ok(n > 0)
    }

    fn object_from_row(&self, r: ObjectRow) -> Result<StoredObject, StoreError> {
        let kind = Kind::from_name(&r.kind)
            .ok_or_else(|| self.corrupt(format!("objects row uid {}: unknown kind {:?}", r.uid, r.kind)))?;
        let object = serde_json::from_str(&r.object_json)
            .map_err(|e| self.corrupt(format!("objects row uid {}: object_json is not valid JSON: {e}", r.uid)))?;
        Ok(StoredObject {
            uid: r.uid,
            key: ObjectKey { kind, namespace: r.namespace, name: r.name },
            manifest_file: r.manifest_file,
            object,
        })
    }

    // ----- archives ------------------------------------------------------

    /// Inserts or replaces (by snapshot uid) an archive record. The relative
    /// path must pass the lexical part of the containment check (relative,
    /// no `..`/`.`/empty components, no NUL); another record holding the
    /// same path is [`StoreError::ArchivePathTaken`].
    pub fn put_archive(&self, rec: &ArchiveRecord) -> Result<(), StoreError> {
        paths::check_rel_path(&rec.rel_path)?;
        let size = i64::try_from(rec.size_bytes).map_err(|_| {
            self.corrupt(format!("archive of snapshot uid {}: size {} out of range", rec.snapshot_uid, rec.size_bytes))
        })?;
        let sql = "INSERT INTO archives (snapshot_uid, namespace, name, rel_path, format, size_bytes, sha256,
                                         manifest_json, created_at, object_present)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                   ON CONFLICT (snapshot_uid) DO UPDATE SET
                     namespace = excluded.namespace, name = excluded.name, rel_path = excluded.rel_path,
                     format = excluded.format, size_bytes = excluded.size_bytes, sha256 = excluded.sha256,
                     manifest_json = excluded.manifest_json, created_at = excluded.created_at,
                     object_present = excluded.object_present";
        let result = self.conn.prepare_cached(sql).and_then(|mut stmt| {
            stmt.execute(params![
                rec.snapshot_uid,
                rec.namespace,
                rec.name,
                rec.rel_path,
                rec.format,
                size,
                rec.sha256,
                rec.manifest_json,
                rec.created_at.to_string(),
                rec.object_present,
            ])
        });
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => match self.archive_by_rel_path(&rec.rel_path)? {
                Some(existing) if existing.snapshot_uid != rec.snapshot_uid => Err(StoreError::ArchivePathTaken {
                    rel_path: rec.rel_path.clone(),
                    existing_uid: existing.snapshot_uid,
                }),
                _ => Err(StoreError::sqlite(&self.db_path, "write archive record", e)),
            },
            Err(e) => Err(StoreError::sqlite(&self.db_path, "write archive record", e)),
        }
    }

    /// The archive record of this snapshot uid, if any.
    pub fn archive(&self, snapshot_uid: &str) -> Result<Option<ArchiveRecord>, StoreError> {
        self.archive_where("snapshot_uid = ?1", snapshot_uid, "read archive record")
    }

    /// The archive record with this relative path, if any.
    pub fn archive_by_rel_path(&self, rel_path: &str) -> Result<Option<ArchiveRecord>, StoreError> {
        self.archive_where("rel_path = ?1", rel_path, "read archive record by path")
    }

    fn archive_where(&self, cond: &str, arg: &str, op: &'static str) -> Result<Option<ArchiveRecord>, StoreError> {
        let sql = format!("SELECT {ARCHIVE_COLUMNS} FROM archives WHERE {cond}");
        let row = self
            .conn
            .prepare_cached(&sql)
            .map_err(self.err(op))?
            .query_row(params![arg], ArchiveRow::from_row)
            .optional()
            .map_err(self.err(op))?;
        row.map(|r| self.archive_from_row(r)).transpose()
    }

    /// Every archive record, sorted by (namespace, name, created_at).
    pub fn archives(&self) -> Result<Vec<ArchiveRecord>, StoreError> {
        let sql = format!("SELECT {ARCHIVE_COLUMNS} FROM archives ORDER BY namespace, name, created_at, snapshot_uid");
        let op = "list archive records";
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.err(op))?;
        let rows = stmt
            .query_map([], ArchiveRow::from_row)
            .map_err(self.err(op))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err(op))?;
        rows.into_iter().map(|r| self.archive_from_row(r)).collect()
    }

    /// Sets whether the snapshot object of an archive still exists. Returns
    /// whether the record exists.
    pub fn set_archive_object_present(&self, snapshot_uid: &str, present: bool) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached("UPDATE archives SET object_present = ?2 WHERE snapshot_uid = ?1")
            .and_then(|mut s| s.execute(params![snapshot_uid, present]))
            .map_err(self.err("update archive record"))?;
        Ok(n > 0)
    }

    /// Moves an archive record from the id it was recorded under (a
    /// pre-restore archive, recorded before its snapshot object existed) to
    /// the uid of the snapshot object that now holds it. Returns whether it
    /// moved.
    pub fn rebind_archive(&self, record_id: &str, snapshot_uid: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached("UPDATE archives SET snapshot_uid = ?2 WHERE snapshot_uid = ?1")
            .and_then(|mut s| s.execute(params![record_id, snapshot_uid]))
            .map_err(self.err("bind archive record"))?;
        Ok(n > 0)
    }

    /// Deletes an archive record (not the file: see
    /// [`Store::delete_archive_file`]). Returns whether it existed.
    pub fn delete_archive_record(&self, snapshot_uid: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM archives WHERE snapshot_uid = ?1")
            .and_then(|mut s| s.execute(params![snapshot_uid]))
            .map_err(self.err("delete archive record"))?;
        Ok(n > 0)
    }

    fn archive_from_row(&self, r: ArchiveRow) -> Result<ArchiveRecord, StoreError> {
        let size_bytes = u64::try_from(r.size_bytes).map_err(|_| {
            self.corrupt(format!("archives row snapshot_uid {}: negative size_bytes {}", r.snapshot_uid, r.size_bytes))
        })?;
        let created_at = r.created_at.parse::<jiff::Timestamp>().map(Time).map_err(|e| {
            self.corrupt(format!(
                "archives row snapshot_uid {}: created_at {:?} is not an RFC 3339 time: {e}",
                r.snapshot_uid, r.created_at
            ))
        })?;
        Ok(ArchiveRecord {
            snapshot_uid: r.snapshot_uid,
            namespace: r.namespace,
            name: r.name,
            rel_path: r.rel_path,
            format: r.format,
            size_bytes,
            sha256: r.sha256,
            manifest_json: r.manifest_json,
            created_at,
            object_present: r.object_present,
        })
    }

    // ----- archive files -------------------------------------------------

    /// Resolves a relative archive path read from the database to an
    /// absolute path inside the archives directory, or refuses it with
    /// [`StoreError::PathEscapes`]:
    ///
    /// - empty, absolute, containing NUL, or any component that is not a
    ///   plain name (`..`, `.`, empty, root) → refused;
    /// - the path is joined to the *canonical* archives directory, its
    ///   parent directory (or nearest existing ancestor) is canonicalised
    ///   and must still lie inside it, so a symlinked subdirectory cannot
    ///   lead out;
    /// - if the file exists it must be a regular file, not a symlink.
    ///
    /// The returned path is built from the canonical parent. The file need
    /// not exist (the path of an archive about to be written is checked the
    /// same way).
    pub fn archive_abs_path(&self, rel: &str) -> Result<PathBuf, StoreError> {
        paths::resolve(&self.archives_dir, rel)
    }

    /// Deletes an archive file and its `.sha256` checksum file (either may
    /// already be missing), after the containment check, then fsyncs the
    /// directory. The record is left to the caller.
    pub fn delete_archive_file(&self, rec: &ArchiveRecord) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly { op: "delete archive files" });
        }
        let path = self.archive_abs_path(&rec.rel_path)?;
        let checksum = paths::checksum_path(&path);
        let mut removed = false;
        for p in [&path, &checksum] {
            match fs::remove_file(p) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("delete archive file", p, e)),
            }
        }
        if removed && let Some(dir) = path.parent() {
            fsutil::fsync_dir(dir).map_err(|e| StoreError::io("fsync directory", dir, e))?;
        }
        Ok(())
    }
}

struct ObjectRow {
    uid: String,
    kind: String,
    namespace: String,
    name: String,
    manifest_file: Option<String>,
    object_json: String,
}

impl ObjectRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectRow> {
        Ok(ObjectRow {
            uid: row.get(0)?,
            kind: row.get(1)?,
            namespace: row.get(2)?,
            name: row.get(3)?,
            manifest_file: row.get(4)?,
            object_json: row.get(5)?,
        })
    }
}

struct ArchiveRow {
    snapshot_uid: String,
    namespace: String,
    name: String,
    rel_path: String,
    format: String,
    size_bytes: i64,
    sha256: String,
    manifest_json: String,
    created_at: String,
    object_present: bool,
}

impl ArchiveRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ArchiveRow> {
        Ok(ArchiveRow {
            snapshot_uid: row.get(0)?,
            namespace: row.get(1)?,
            name: row.get(2)?,
            rel_path: row.get(3)?,
            format: row.get(4)?,
            size_bytes: row.get(5)?,
            sha256: row.get(6)?,
            manifest_json: row.get(7)?,
            created_at: row.get(8)?,
            object_present: row.get(9)?,
        })
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_error().is_some_and(|e| {
        e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    })
}

/// Creates the state directory: missing parents with default permissions,
/// the directory itself with mode 0700. An existing directory is left as is.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    const OP: &str = "the state directory must be writable; cannot create";
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| StoreError::io(OP, dir, e))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(StoreError::io(OP, dir, e)),
    }
}

/// Checks that files can be created in `dir` (an existing directory on
/// read-only media would otherwise only fail later, with a less clear
/// SQLite or capture error).
fn probe_writable(dir: &Path, op: &'static str) -> Result<(), StoreError> {
    // One name per probe: restores and captures open their own stores
    // concurrently, and a name per process let one remove another's probe.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".volsnap-write-probe.{}.{n}", std::process::id()));
    let _ = fs::remove_file(&probe);
    fs::OpenOptions::new().write(true).create_new(true).open(&probe).map_err(|e| StoreError::io(op, dir, e))?;
    fs::remove_file(&probe).map_err(|e| StoreError::io(op, dir, e))
}
