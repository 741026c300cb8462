//! The write-ahead journal of restores.
//!
//! One row per restore that has started and not yet been cleaned up: its
//! plan (what goes where, JSON owned by [`crate::engine::restore`]) and the
//! last step reached. The restore engine records each step here, durably
//! (`synchronous=FULL`), BEFORE it takes it; the start-up recovery sweep
//! reads every row back and finishes or rolls back the restore it
//! describes, whether or not the `VolumeRestore` object still exists.

use rusqlite::{OptionalExtension, params};

use super::{ArchiveRecord, Store, StoreError};
use crate::api::Time;

/// One journal row.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalRow {
    /// UID of the restore.
    pub restore_uid: String,
    /// Namespace of the restore.
    pub namespace: String,
    /// Name of the restore.
    pub name: String,
    /// Last step recorded (a word the restore engine defines).
    pub step: String,
    /// The restore plan, JSON.
    pub plan_json: String,
}

impl Store {
    /// Inserts or updates the journal row of a restore.
    pub fn journal_put(&self, row: &JournalRow) -> Result<(), StoreError> {
        let sql = "INSERT INTO restore_journal (restore_uid, namespace, name, step, plan_json, updated_at)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                   ON CONFLICT (restore_uid) DO UPDATE SET
                     step = excluded.step, plan_json = excluded.plan_json, updated_at = excluded.updated_at";
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.execute(params![
                    row.restore_uid,
                    row.namespace,
                    row.name,
                    row.step,
                    row.plan_json,
                    Time::now().to_string()
                ])
            })
            .map_err(self.err("write restore journal"))?;
        Ok(())
    }

    /// The journal row of a restore, if any.
    pub fn journal_get(&self, restore_uid: &str) -> Result<Option<JournalRow>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT restore_uid, namespace, name, step, plan_json FROM restore_journal WHERE restore_uid = ?1",
            )
            .and_then(|mut s| s.query_row(params![restore_uid], row_from).optional())
            .map_err(self.err("read restore journal"))
    }

    /// Every journal row (restores that did not finish), oldest first.
    pub fn journal_rows(&self) -> Result<Vec<JournalRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT restore_uid, namespace, name, step, plan_json FROM restore_journal ORDER BY updated_at, restore_uid",
            )
            .map_err(self.err("read restore journal"))?;
        let rows = stmt.query_map([], row_from).map_err(self.err("read restore journal"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err("read restore journal"))
    }

    /// Removes the journal row of a finished restore.
    pub fn journal_delete(&self, restore_uid: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM restore_journal WHERE restore_uid = ?1")
            .and_then(|mut s| s.execute(params![restore_uid]))
            .map_err(self.err("delete restore journal row"))?;
        Ok(())
    }

    /// Records the pre-restore snapshot's archive and the journal step that
    /// says so, in one transaction: after a crash either both are there or
    /// neither is.
    pub fn commit_pre_restore(&self, archive: &ArchiveRecord, journal: &JournalRow) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err("begin pre-restore transaction"))?;
        self.put_archive(archive)?;
        self.journal_put(journal)?;
        tx.commit().map_err(self.err("commit pre-restore transaction"))
    }
}

/// What a capture paused or stopped, recorded before it acts.
#[derive(Clone, Debug, PartialEq)]
pub struct QuiesceRow {
    /// UID of the snapshot whose capture quiesced.
    pub operation_uid: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The units, JSON (owned by [`crate::engine::workload`]).
    pub units_json: String,
}

impl Store {
    /// Records (before acting) what a capture is about to pause or stop.
    pub fn quiesce_put(&self, row: &QuiesceRow) -> Result<(), StoreError> {
        let sql = "INSERT INTO quiesce_journal (operation_uid, namespace, name, units_json, updated_at)
                   VALUES (?1, ?2, ?3, ?4, ?5)
                   ON CONFLICT (operation_uid) DO UPDATE SET
                     units_json = excluded.units_json, updated_at = excluded.updated_at";
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.execute(params![row.operation_uid, row.namespace, row.name, row.units_json, Time::now().to_string()])
            })
            .map_err(self.err("write quiesce journal"))?;
        Ok(())
    }

    /// Every capture that quiesced and did not record the resume.
    pub fn quiesce_rows(&self) -> Result<Vec<QuiesceRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT operation_uid, namespace, name, units_json FROM quiesce_journal ORDER BY updated_at, operation_uid",
            )
            .map_err(self.err("read quiesce journal"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(QuiesceRow {
                    operation_uid: r.get(0)?,
                    namespace: r.get(1)?,
                    name: r.get(2)?,
                    units_json: r.get(3)?,
                })
            })
            .map_err(self.err("read quiesce journal"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err("read quiesce journal"))
    }

    /// Forgets a capture's quiesce once everything is resumed.
    pub fn quiesce_delete(&self, operation_uid: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM quiesce_journal WHERE operation_uid = ?1")
            .and_then(|mut s| s.execute(params![operation_uid]))
            .map_err(self.err("delete quiesce journal row"))?;
        Ok(())
    }
}

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<JournalRow> {
    Ok(JournalRow {
        restore_uid: r.get(0)?,
        namespace: r.get(1)?,
        name: r.get(2)?,
        step: r.get(3)?,
        plan_json: r.get(4)?,
    })
}
