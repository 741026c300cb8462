//! The tree comparer itself: it must notice every kind of difference the
//! capture tests rely on, or those tests prove nothing.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use crate::capture::make_rich_tree;
use crate::util::*;

fn copy(src: &Path, dst: &Path) {
    let st = Command::new("cp").arg("-a").arg(src).arg(dst).status().unwrap();
    assert!(st.success(), "cp -a");
}

fn differs(orig: &Path, copy: &Path) -> bool {
    std::panic::catch_unwind(|| assert_same_tree(orig, copy)).is_err()
}

#[test]
fn tree_comparer_detects_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    fs::create_dir(&orig).unwrap();
    make_rich_tree(&orig);
    let fresh = |name: &str| {
        let c = tmp.path().join(name);
        copy(&orig, &c);
        fs::remove_file(c.join("fifo")).unwrap();
        reset_dir_mtimes(&orig, &c);
        c
    };
    let same = fresh("same");
    assert_same_tree(&orig, &same);

    let c = fresh("content");
    fs::write(c.join("a.txt"), b"hello volsnaq\n").unwrap();
    set_mtime(&c.join("a.txt"), fs::symlink_metadata(orig.join("a.txt")).map(|m| filetime(&m)).unwrap());
    assert!(differs(&orig, &c), "content");

    let c = fresh("mode");
    chmod(&c.join("run.sh"), 0o744);
    assert!(differs(&orig, &c), "mode");

    let c = fresh("mtime");
    set_mtime(&c.join("nested/zeros.bin"), 1);
    assert!(differs(&orig, &c), "mtime");

    let c = fresh("dir-mtime");
    set_mtime(&c.join("nested"), 1);
    assert!(differs(&orig, &c), "directory mtime");

    let c = fresh("symlink");
    fs::remove_file(c.join("link-rel")).unwrap();
    symlink("a.txT", c.join("link-rel")).unwrap();
    assert!(differs(&orig, &c), "symlink target");

    let c = fresh("hardlink");
    fs::remove_file(c.join("nested/hard2")).unwrap();
    fs::copy(c.join("hard1"), c.join("nested/hard2")).unwrap();
    let hard1_mtime = fs::symlink_metadata(c.join("hard1")).map(|m| filetime(&m)).unwrap();
    set_mtime(&c.join("nested/hard2"), hard1_mtime);
    reset_dir_mtimes(&orig, &c);
    assert!(differs(&orig, &c), "hardlink grouping");

    let c = fresh("missing");
    fs::remove_dir(c.join("empty-dir")).unwrap();
    reset_dir_mtimes(&orig, &c);
    assert!(differs(&orig, &c), "missing empty dir");

    let c = fresh("fifo");
    mkfifo(&c.join("fifo"));
    reset_dir_mtimes(&orig, &c);
    assert!(differs(&orig, &c), "special file present in the copy");

    if is_root() {
        let c = fresh("owner");
        std::os::unix::fs::chown(c.join("a.txt"), Some(1), Some(1)).unwrap();
        assert!(differs(&orig, &c), "owner");
    }
}

fn filetime(m: &fs::Metadata) -> i64 {
    std::os::unix::fs::MetadataExt::mtime(m)
}

/// Gives the directories the mutations touch their original mtimes back, so
/// each mutation is the only difference.
fn reset_dir_mtimes(orig: &Path, copy: &Path) {
    for rel in ["", "nested"] {
        let t = fs::symlink_metadata(orig.join(rel)).map(|m| filetime(&m)).unwrap();
        set_mtime(&copy.join(rel), t);
    }
}
