//! Versioned schema migrations.
//!
//! [`MIGRATIONS`] is an ordered list of SQL scripts; script `i` takes the
//! database from schema version `i` to `i + 1`. The version a database is at
//! is kept in `PRAGMA user_version` (0 for a new, empty file). Each script
//! runs in its own `BEGIN IMMEDIATE` transaction together with the update of
//! `user_version`, so a crash leaves the database at one version or the next,
//! never half-way. Scripts are append-only: never edit one that has shipped;
//! add a new one instead.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The migration scripts, in order. `MIGRATIONS[i]` upgrades version `i` to
/// `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // Version 1: objects and archives.
    r#"
CREATE TABLE objects (
    uid           TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    namespace     TEXT NOT NULL,
    name          TEXT NOT NULL,
    manifest_file TEXT,
    object_json   TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (kind, namespace, name)
);
CREATE TABLE archives (
    snapshot_uid   TEXT PRIMARY KEY,
    namespace      TEXT NOT NULL,
    name           TEXT NOT NULL,
    rel_path       TEXT NOT NULL UNIQUE,
    format         TEXT NOT NULL,
    size_bytes     INTEGER NOT NULL,
    sha256         TEXT NOT NULL,
    manifest_json  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    object_present INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX archives_by_name ON archives (namespace, name);
"#,
    // Version 2: the write-ahead journal of restores (see store/journal.rs).
    r#"
CREATE TABLE restore_journal (
    restore_uid TEXT PRIMARY KEY,
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    step        TEXT NOT NULL,
    plan_json   TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
"#,
    // Version 3: what a capture paused or stopped (see store/journal.rs).
    r#"
CREATE TABLE quiesce_journal (
    operation_uid TEXT PRIMARY KEY,
    namespace     TEXT NOT NULL,
    name          TEXT NOT NULL,
    units_json    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
"#,
];

/// The schema version this build writes and expects.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Reads `PRAGMA user_version`.
pub(crate) fn user_version(conn: &Connection, db_path: &Path) -> Result<u32, StoreError> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| StoreError::sqlite(db_path, "read the schema version", e))?;
    // user_version is a signed 32-bit integer in the file header; a negative
    // value was not written by volsnap: report it as "too new" below.
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

/// Brings the database up to [`SCHEMA_VERSION`], one transaction per script.
/// Fails with [`StoreError::TooNew`] if the database is newer than this build.
pub(crate) fn migrate(conn: &mut Connection, db_path: &Path) -> Result<(), StoreError> {
    migrate_with(conn, db_path, MIGRATIONS)
}

/// [`migrate`] over an explicit list of scripts (tests use longer lists).
pub(crate) fn migrate_with(conn: &mut Connection, db_path: &Path, scripts: &[&str]) -> Result<(), StoreError> {
    let supported = scripts.len() as u32;
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite(db_path, "begin a schema migration", e))?;
        // Read the version inside the write transaction: another process
        // may have migrated between our open and now.
        let version = user_version(&tx, db_path)?;
        if version > supported {
            return Err(StoreError::TooNew { path: db_path.to_path_buf(), found: version, supported });
        }
        if version == supported {
            // Nothing to do; dropping `tx` rolls back the empty transaction.
            return Ok(());
        }
        let script = scripts[version as usize];
        tx.execute_batch(script).map_err(|source| StoreError::Migration {
            path: db_path.to_path_buf(),
            version: version + 1,
            source,
        })?;
        tx.pragma_update(None, "user_version", i64::from(version + 1))
            .map_err(|e| StoreError::sqlite(db_path, "record the schema version", e))?;
        tx.commit().map_err(|e| StoreError::sqlite(db_path, "commit a schema migration", e))?;
        tracing::info!(db = %db_path.display(), version = version + 1, "applied state schema migration");
    }
}
