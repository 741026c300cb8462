use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use serde_json::json;
use tempfile::TempDir;

use super::*;

fn dirs() -> (TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let archives = state.join("archives");
    (tmp, state, archives)
}

fn obj(uid: &str, kind: Kind, ns: &str, name: &str) -> StoredObject {
    StoredObject {
        uid: uid.into(),
        key: ObjectKey { kind, namespace: ns.into(), name: name.into() },
        manifest_file: Some(format!("{name}.yaml")),
        object: json!({"kind": kind.name(), "metadata": {"name": name, "namespace": ns, "uid": uid}}),
    }
}

fn rec(uid: &str, rel: &str) -> ArchiveRecord {
    ArchiveRecord {
        snapshot_uid: uid.into(),
        namespace: "default".into(),
        name: format!("snap-{uid}"),
        rel_path: rel.into(),
        format: "tar+gzip".into(),
        size_bytes: 1234,
        sha256: "ab".repeat(32),
        manifest_json: r#"{"formatVersion":1}"#.into(),
        created_at: Time::now(),
        object_present: true,
    }
}

/// Writes a row bypassing `put_archive`'s checks, as a tampered database would hold.
fn tamper(store: &Store, uid: &str, rel: &str) {
    store
        .conn
        .execute(
            "INSERT INTO archives (snapshot_uid, namespace, name, rel_path, format, size_bytes, sha256, manifest_json, created_at)
             VALUES (?1, 'default', 'evil', ?2, 'tar+gzip', 1, 'x', '{}', '2026-01-01T00:00:00Z')",
            params![uid, rel],
        )
        .expect("insert tampered row");
}

fn write(path: &Path, data: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, data).expect("write");
}

#[test]
fn open_creates_dirs_and_migrates() {
    let (_tmp, state, archives) = dirs();
    let store = Store::open(&state, &archives).expect("open");
    assert!(archives.is_dir());
    assert_eq!(fs::metadata(&state).expect("stat").permissions().mode() & 0o777, 0o700);
    assert_eq!(migrations::user_version(&store.conn, store.db_path()).expect("version"), SCHEMA_VERSION);
    let mode: String = store.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).expect("pragma");
    assert_eq!(mode, "wal");
    let sync: i64 = store.conn.pragma_query_value(None, "synchronous", |r| r.get(0)).expect("pragma");
    assert_eq!(sync, 2, "synchronous=FULL");
    let fk: i64 = store.conn.pragma_query_value(None, "foreign_keys", |r| r.get(0)).expect("pragma");
    assert_eq!(fk, 1);
    store.put_object(&obj("u1", Kind::Snapshot, "default", "a")).expect("put");
    drop(store);

    // Re-open: idempotent, data kept.
    let store = Store::open(&state, &archives).expect("reopen");
    assert_eq!(migrations::user_version(&store.conn, store.db_path()).expect("version"), SCHEMA_VERSION);
    assert_eq!(store.objects(None, None).expect("list").len(), 1);
}

#[test]
fn migrations_apply_in_order_and_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("t.db");
    let mut conn = Connection::open(&db).expect("open");
    let scripts = ["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (y INTEGER); INSERT INTO a VALUES (1);"];
    migrations::migrate_with(&mut conn, &db, &scripts[..1]).expect("v1");
    assert_eq!(migrations::user_version(&conn, &db).expect("v"), 1);
    migrations::migrate_with(&mut conn, &db, &scripts).expect("v2");
    migrations::migrate_with(&mut conn, &db, &scripts).expect("v2 again");
    assert_eq!(migrations::user_version(&conn, &db).expect("v"), 2);
    let n: i64 = conn.query_row("SELECT count(*) FROM a", [], |r| r.get(0)).expect("count");
    assert_eq!(n, 1, "a script runs once");

    // A failing script leaves the previous version intact.
    let bad = [scripts[0], scripts[1], "CREATE TABLE c (z); THIS IS NOT SQL;"];
    let err = migrations::migrate_with(&mut conn, &db, &bad).expect_err("bad script");
    assert!(matches!(err, StoreError::Migration { version: 3, .. }), "{err}");
    assert_eq!(migrations::user_version(&conn, &db).expect("v"), 2);
    let c: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'c'", [], |r| r.get(0)).expect("count");
    assert_eq!(c, 0, "the failed migration was rolled back");
}

#[test]
fn newer_database_is_refused() {
    let (_tmp, state, archives) = dirs();
    drop(Store::open(&state, &archives).expect("open"));
    let conn = Connection::open(state.join(DB_FILE)).expect("raw open");
    conn.pragma_update(None, "user_version", i64::from(SCHEMA_VERSION + 1)).expect("bump");
    drop(conn);
    let err = Store::open(&state, &archives).expect_err("too new");
    match &err {
        StoreError::TooNew { found, supported, .. } => {
            assert_eq!(*found, SCHEMA_VERSION + 1);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("upgrade volsnap"));
    let err = Store::open_read_only(&state, &archives).expect_err("too new read-only");
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
}

#[test]
fn read_only_open() {
    let (_tmp, state, archives) = dirs();
    // Missing database: NoState, nothing created.
    let err = Store::open_read_only(&state, &archives).expect_err("no state");
    assert!(matches!(&err, StoreError::NoState { path } if path == &state), "{err}");
    assert!(err.to_string().contains("no volsnap state at"), "{err}");
    assert!(!state.exists(), "a read-only open creates nothing");

    // Older schema: told to run the daemon once.
    fs::create_dir_all(&state).expect("mkdir");
    let conn = Connection::open(state.join(DB_FILE)).expect("raw");
    conn.execute_batch("CREATE TABLE legacy (x);").expect("legacy");
    drop(conn);
    let err = Store::open_read_only(&state, &archives).expect_err("too old");
    assert!(matches!(err, StoreError::TooOld { found: 0, .. }), "{err}");
    assert!(err.to_string().contains("run the daemon"), "{err}");
    fs::remove_file(state.join(DB_FILE)).expect("rm");

    // A current database is readable while the daemon holds it open, and
    // after it closed; writes fail.
    let daemon = Store::open(&state, &archives).expect("open");
    daemon.put_object(&obj("u1", Kind::Snapshot, "default", "a")).expect("put");
    let cli = Store::open_read_only(&state, &archives).expect("ro open");
    assert!(cli.is_read_only());
    assert_eq!(cli.objects(None, None).expect("list").len(), 1);
    assert!(cli.put_object(&obj("u2", Kind::Snapshot, "default", "b")).is_err());
    assert!(matches!(cli.sweep_orphans(), Err(StoreError::ReadOnly { .. })));
    assert!(matches!(cli.delete_archive_file(&rec("u1", "default/a.tar.gz")), Err(StoreError::ReadOnly { .. })));
    daemon.put_object(&obj("u3", Kind::Snapshot, "default", "c")).expect("daemon writes while cli open");
    assert_eq!(cli.objects(None, None).expect("list").len(), 2);
    drop(cli);
    drop(daemon);
    let cli = Store::open_read_only(&state, &archives).expect("ro open, daemon gone");
    assert_eq!(cli.objects(None, None).expect("list").len(), 2);
}

#[test]
fn object_crud_and_uniqueness() {
    let (_tmp, state, archives) = dirs();
    let store = Store::open(&state, &archives).expect("open");
    store.put_object(&obj("u-s2", Kind::Snapshot, "prod", "b")).expect("put");
    store.put_object(&obj("u-r1", Kind::Restore, "default", "r")).expect("put");
    store.put_object(&obj("u-s1", Kind::Snapshot, "default", "z")).expect("put");
    store.put_object(&obj("u-s0", Kind::Snapshot, "prod", "a")).expect("put");
    store.put_object(&obj("u-h1", Kind::Schedule, "default", "nightly")).expect("put");

    let all: Vec<String> = store
        .objects(None, None)
        .expect("list")
        .iter()
        .map(|o| format!("{}/{}/{}", o.key.kind.name(), o.key.namespace, o.key.name))
        .collect();
    assert_eq!(
        all,
        [
            "VolumeSnapshot/default/z",
            "VolumeSnapshot/prod/a",
            "VolumeSnapshot/prod/b",
            "VolumeRestore/default/r",
            "VolumeSnapshotSchedule/default/nightly",
        ]
    );
    assert_eq!(store.objects(Some(Kind::Snapshot), None).expect("list").len(), 3);
    assert_eq!(store.objects(Some(Kind::Snapshot), Some("prod")).expect("list").len(), 2);
    assert_eq!(store.objects(None, Some("default")).expect("list").len(), 3);
    assert!(store.objects(Some(Kind::Restore), Some("prod")).expect("list").is_empty());

    let key = ObjectKey { kind: Kind::Snapshot, namespace: "prod".into(), name: "a".into() };
    let got = store.object(&key).expect("get").expect("present");
    assert_eq!(got, obj("u-s0", Kind::Snapshot, "prod", "a"));
    assert_eq!(store.object_by_uid("u-s0").expect("get"), Some(got.clone()));

    // Upsert by uid (status update, manifest moved to another file).
    let mut changed = got.clone();
    changed.manifest_file = None;
    changed.object["status"] = json!({"phase": "Completed"});
    store.put_object(&changed).expect("update");
    assert_eq!(store.object(&key).expect("get"), Some(changed));

    // Same kind/namespace/name under another uid: refused, original kept.
    let err = store.put_object(&obj("u-other", Kind::Snapshot, "prod", "a")).expect_err("duplicate");
    assert!(matches!(&err, StoreError::ObjectExists { existing_uid, .. } if existing_uid == "u-s0"), "{err}");
    // Same name in another kind is fine.
    store.put_object(&obj("u-r2", Kind::Restore, "prod", "a")).expect("other kind");

    assert!(store.delete_object("u-s0").expect("delete"));
    assert!(!store.delete_object("u-s0").expect("delete again"));
    assert_eq!(store.object(&key).expect("get"), None);
    // The name is free again.
    store.put_object(&obj("u-other", Kind::Snapshot, "prod", "a")).expect("reuse name");
}

#[test]
fn archive_crud() {
    let (_tmp, state, archives) = dirs();
    let store = Store::open(&state, &archives).expect("open");
    let a = rec("s1", "default/a.tar.gz");
    let mut b = rec("s2", "default/b.tar.zst");
    b.format = "tar+zstd".into();
    b.size_bytes = u64::from(u32::MAX) * 4;
    store.put_archive(&a).expect("put a");
    store.put_archive(&b).expect("put b");
    assert_eq!(store.archive("s1").expect("get"), Some(a.clone()));
    assert_eq!(store.archive_by_rel_path("default/b.tar.zst").expect("get"), Some(b.clone()));
    assert_eq!(store.archive("nope").expect("get"), None);
    assert_eq!(store.archives().expect("list"), vec![a.clone(), b.clone()]);

    assert!(store.set_archive_object_present("s1", false).expect("set"));
    assert!(!store.archive("s1").expect("get").expect("present").object_present);
    assert!(!store.set_archive_object_present("nope", false).expect("set"));

    // Same path for another snapshot: refused.
    let err = store.put_archive(&rec("s3", "default/a.tar.gz")).expect_err("path taken");
    assert!(matches!(&err, StoreError::ArchivePathTaken { existing_uid, .. } if existing_uid == "s1"), "{err}");
    // Paths that could never be contained are refused at write time.
    for bad in ["../x.tar.gz", "/etc/passwd", "", "a/./b.tar.gz", "a//b.tar.gz"] {
        assert!(matches!(store.put_archive(&rec("s4", bad)), Err(StoreError::PathEscapes { .. })), "{bad:?}");
    }

    assert!(store.delete_archive_record("s1").expect("delete"));
    assert!(!store.delete_archive_record("s1").expect("delete again"));
    assert_eq!(store.archives().expect("list"), vec![b]);
}

#[test]
fn containment_rejections() {
    let (tmp, state, archives) = dirs();
    let store = Store::open(&state, &archives).expect("open");
    let root = store.archives_dir().to_path_buf();

    // Outside files that must survive.
    let elsewhere = tmp.path().join("elsewhere");
    write(&elsewhere.join("victim.tar.gz"), "precious");
    write(&elsewhere.join("victim.tar.gz.sha256"), "precious");
    write(&tmp.path().join("x"), "precious");
    symlink(&elsewhere, root.join("evil")).expect("symlink dir");
    write(&root.join("default/real.tar.gz"), "data");
    symlink(root.join("default/real.tar.gz"), root.join("default/link.tar.gz")).expect("symlink file");

    for bad in [
        "../../etc/passwd",
        "/etc/passwd",
        "ns/../../x",
        "../x",
        "",
        ".",
        "./a.tar.gz",
        "a/./b.tar.gz",
        "a//b",
        "a/",
        "nul\0byte",
        "evil/victim.tar.gz",
        "evil/sub/new.tar.gz",
        "default/link.tar.gz",
    ] {
        let err = store.archive_abs_path(bad).expect_err(bad);
        assert!(matches!(err, StoreError::PathEscapes { .. }), "{bad:?}: {err}");
    }

    // Tampered rows: delete_archive_file refuses, nothing outside is touched.
    for (i, bad) in
        ["../../etc/passwd", "/etc/passwd", "ns/../../x", "evil/victim.tar.gz", "../elsewhere/victim.tar.gz"]
            .into_iter()
            .enumerate()
    {
        let uid = format!("t{i}");
        tamper(&store, &uid, bad);
        let r = store.archive(&uid).expect("get").expect("row");
        let err = store.delete_archive_file(&r).expect_err(bad);
        assert!(matches!(err, StoreError::PathEscapes { .. }), "{bad:?}: {err}");
    }
    assert!(elsewhere.join("victim.tar.gz").exists());
    assert!(elsewhere.join("victim.tar.gz.sha256").exists());
    assert!(tmp.path().join("x").exists());
    assert!(Path::new("/etc/passwd").exists());

    // Good paths: existing, and not yet existing (nested) ones.
    assert_eq!(store.archive_abs_path("default/real.tar.gz").expect("ok"), root.join("default/real.tar.gz"));
    assert_eq!(store.archive_abs_path("new-ns/deep/x.tar.gz").expect("ok"), root.join("new-ns/deep/x.tar.gz"));
    // A symlink inside the archives dir that stays inside is fine.
    symlink(root.join("default"), root.join("alias")).expect("symlink");
    assert_eq!(store.archive_abs_path("alias/real.tar.gz").expect("ok"), root.join("default/real.tar.gz"));
}

#[test]
fn archives_dir_behind_symlink_is_canonicalised() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let real = tmp.path().join("big-disk/archives");
    fs::create_dir_all(&real).expect("mkdir");
    let link = tmp.path().join("archives-link");
    symlink(&real, &link).expect("symlink");
    let store = Store::open(&tmp.path().join("state"), &link).expect("open");
    assert_eq!(store.archives_dir(), fs::canonicalize(&real).expect("canon"));
    assert!(store.archive_abs_path("default/a.tar.gz").expect("ok").starts_with(store.archives_dir()));
}

#[test]
fn delete_archive_file_removes_archive_and_checksum() {
    let (_tmp, state, archives) = dirs();
    let store = Store::open(&state, &archives).expect("open");
    let root = store.archives_dir().to_path_buf();
    let r = rec("s1", "default/a.tar.gz");
    store.put_archive(&r).expect("put");
    write(&root.join("default/a.tar.gz"), "data");
    write(&root.join("default/a.tar.gz.sha256"), "sum");
    write(&root.join("default/b.tar.gz"), "other");
    store.delete_archive_file(&r).expect("delete");
    assert!(!root.join("default/a.tar.gz").exists());
    assert!(!root.join("default/a.tar.gz.sha256").exists());
    assert!(root.join("default/b.tar.gz").exists());
    // Already gone: fine.
    store.delete_archive_file(&r).expect("delete again");
    // Only the checksum left: removed.
    write(&root.join("default/a.tar.gz.sha256"), "sum");
    store.delete_archive_file(&r).expect("delete checksum only");
    assert!(!root.join("default/a.tar.gz.sha256").exists());
}

#[test]
fn sweep() {
    let (tmp, state, archives) = dirs();
    let store = Store::open(&state, &archives).expect("open");
    let root = store.archives_dir().to_path_buf();

    // Known archive with checksum: kept.
    store.put_archive(&rec("known", "default/known.tar.gz")).expect("put");
    write(&root.join("default/known.tar.gz"), "known");
    write(&root.join("default/known.tar.gz.sha256"), "sum");
    // Known record, file missing: reported.
    store.put_archive(&rec("gone", "default/gone.tar.zst")).expect("put");
    // Temporary archive: removed.
    write(&root.join("default/new.tar.gz.partial"), "half");
    // Unknown archives: quarantined with their checksum; a name clash in
    // quarantine gets a suffix.
    write(&root.join("prod/lost.tar.gz"), "lost");
    write(&root.join("prod/lost.tar.gz.sha256"), "lost-sum");
    write(&root.join("top.tar.zst"), "top");
    write(&root.join("_orphaned/prod/lost.tar.gz"), "earlier");
    // Checksum whose archive is gone: removed.
    write(&root.join("default/stale.tar.gz.sha256"), "stale");
    // Other files: left alone.
    write(&root.join("default/README"), "hello");
    // Symlinked directory: not followed.
    let elsewhere = tmp.path().join("elsewhere");
    write(&elsewhere.join("victim.tar.gz"), "precious");
    write(&elsewhere.join("victim.tar.gz.partial"), "precious");
    write(&elsewhere.join("victim.tar.gz.sha256"), "precious");
    symlink(&elsewhere, root.join("evil")).expect("symlink");
    // Tampered rows: reported as missing, their targets untouched.
    write(&tmp.path().join("x"), "precious");
    tamper(&store, "t-dotdot", "../../x");
    tamper(&store, "t-abs", &tmp.path().join("x").display().to_string());
    tamper(&store, "t-link", "evil/victim.tar.gz");

    let report = store.sweep_orphans().expect("sweep");

    assert_eq!(report.removed_temp, vec![root.join("default/new.tar.gz.partial")]);
    assert!(!root.join("default/new.tar.gz.partial").exists());

    let mut quarantined = report.quarantined.clone();
    quarantined.sort();
    assert_eq!(quarantined, vec![root.join("_orphaned/prod/lost.tar.gz.1"), root.join("_orphaned/top.tar.zst")]);
    assert_eq!(fs::read_to_string(root.join("_orphaned/prod/lost.tar.gz.1")).expect("read"), "lost");
    assert_eq!(fs::read_to_string(root.join("_orphaned/prod/lost.tar.gz.1.sha256")).expect("read"), "lost-sum");
    assert_eq!(fs::read_to_string(root.join("_orphaned/prod/lost.tar.gz")).expect("read"), "earlier");
    assert!(!root.join("prod/lost.tar.gz").exists());
    assert!(!root.join("prod/lost.tar.gz.sha256").exists());
    assert!(root.join("_orphaned/top.tar.zst").exists());

    assert!(root.join("default/known.tar.gz").exists());
    assert!(root.join("default/known.tar.gz.sha256").exists());
    assert!(!root.join("default/stale.tar.gz.sha256").exists());
    assert!(root.join("default/README").exists());

    let mut missing: Vec<&str> = report.missing.iter().map(|r| r.snapshot_uid.as_str()).collect();
    missing.sort();
    assert_eq!(missing, ["gone", "t-abs", "t-dotdot", "t-link"]);
    // Rows are kept.
    assert!(store.archive("gone").expect("get").is_some());
    assert!(store.archive("t-dotdot").expect("get").is_some());

    for f in ["victim.tar.gz", "victim.tar.gz.partial", "victim.tar.gz.sha256"] {
        assert!(elsewhere.join(f).exists(), "{f} outside must be untouched");
    }
    assert!(tmp.path().join("x").exists());

    // A second sweep finds nothing new to do.
    let again = store.sweep_orphans().expect("sweep again");
    assert!(again.removed_temp.is_empty());
    assert!(again.quarantined.is_empty());
    assert_eq!(again.missing.len(), 4);
}

#[test]
fn sweep_refuses_symlinked_quarantine_dir() {
    let (tmp, state, archives) = dirs();
    let store = Store::open(&state, &archives).expect("open");
    let root = store.archives_dir().to_path_buf();
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).expect("mkdir");
    symlink(&elsewhere, root.join(QUARANTINE_DIR)).expect("symlink");
    write(&root.join("default/lost.tar.gz"), "lost");
    let err = store.sweep_orphans().expect_err("refused");
    assert!(matches!(err, StoreError::PathEscapes { .. }), "{err}");
    assert!(root.join("default/lost.tar.gz").exists(), "data stays where it was");
    assert_eq!(fs::read_dir(&elsewhere).expect("ls").count(), 0);
}

/// Unmounts a test mount on drop.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn read_only_state_dir_is_a_clear_error() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipping read_only_state_dir_is_a_clear_error: needs root to mount a read-only tmpfs");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("ro");
    fs::create_dir_all(&mnt).expect("mkdir");
    let status = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "ro", "tmpfs"]).arg(&mnt).status();
    match status {
        Ok(s) if s.success() => {}
        other => {
            println!("skipping read_only_state_dir_is_a_clear_error: mount failed ({other:?})");
            return;
        }
    }
    let _guard = Unmount(mnt.clone());
    let archives = tmp.path().join("archives");

    // The state dir is the read-only mount itself (exists, not writable)...
    let err = Store::open(&mnt, &archives).expect_err("read-only");
    let msg = err.to_string();
    assert!(matches!(&err, StoreError::Io { path, .. } if path == &mnt), "{msg}");
    assert!(msg.contains("must be writable") && msg.contains(&mnt.display().to_string()), "{msg}");

    // ... or a directory to be created on it.
    let sub = mnt.join("state");
    let err = Store::open(&sub, &archives).expect_err("read-only");
    let msg = err.to_string();
    assert!(matches!(&err, StoreError::Io { path, .. } if path == &sub), "{msg}");
    assert!(msg.contains("must be writable") && msg.contains(&sub.display().to_string()), "{msg}");
}

#[test]
fn concurrent_opens_never_trip_over_each_others_write_probe() {
    let (_tmp, state, archives) = dirs();
    drop(Store::open(&state, &archives).expect("first open"));
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..40)
                        .filter_map(|_| Store::open(&state, &archives).err().map(|e| e.to_string()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("worker")).collect()
    });
    assert!(failures.is_empty(), "{} opens failed, e.g. {:?}", failures.len(), failures.first());
}
