//! The per-user trash in the namespace: moving in (hidden, recorded, nothing freed),
//! restoring (same inode, parents recreated, conflicts refused), purging after the grace
//! period (chunks freed, records dropped), permissions, and deterministic replay.

use super::perm::Cred;
use super::*;

use super::recorder::{user, Recorder};

fn trash(t: &mut Recorder, cred: &Cred, p: &str, recursive: bool, at: i64) -> Result<(), NsError> {
    let ops = t.ns.plan_trash(cred, p, recursive, at)?;
    assert!(t.apply_all(ops).is_empty(), "trashing frees nothing");
    Ok(())
}

fn purge_expired(t: &mut Recorder, cutoff: i64) -> Vec<ChunkId> {
    let mut ops = Vec::new();
    for id in t.ns.expired_trash(cutoff, 100) {
        let (op, orphan) = t.ns.plan_purge(id, cutoff).unwrap();
        ops.push(op);
        ops.extend(orphan.map(|o| Op::RemoveOrphan { inode: o }));
    }
    t.apply_all(ops)
}

fn root_names(t: &Recorder) -> Vec<String> {
    let (page, _) = t.ns.list(InodeId::ROOT, "", 100).unwrap();
    page.into_iter().map(|(n, _)| n.to_string()).collect()
}

#[test]
fn rm_moves_to_a_hidden_per_user_trash_and_restore_brings_the_same_inode_back() {
    let mut t = Recorder::new();
    t.mkdir("/home/u", 1000, 0o755);
    let f = t.file("/home/u/a.txt", 1000, 0o644, 2);
    let alice = user(1000);
    trash(&mut t, &alice, "/home/u/a.txt", false, 111).unwrap();
    assert_eq!(code(t.ns.resolve("/home/u/a.txt")), ErrorCode::NotFound);
    assert_eq!(t.ns.resolve("/.Trash/1000/111").unwrap(), f, "same inode");
    assert_eq!(
        root_names(&t),
        vec!["home".to_string()],
        "the trash is hidden"
    );
    assert!(
        t.ns.lookup(InodeId::ROOT, ".Trash", &alice).is_ok(),
        "but can be looked up"
    );
    let trash_root = t.ns.inode(t.ns.resolve("/.Trash").unwrap()).unwrap();
    assert_eq!((trash_root.mode, trash_root.uid), (0o1777, 0));
    let mine = t.ns.inode(t.ns.resolve("/.Trash/1000").unwrap()).unwrap();
    assert_eq!((mine.mode, mine.uid), (0o700, 1000));
    let items = t.ns.trash_items(Some(1000));
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].entry.origin, "/home/u/a.txt");
    assert_eq!((items[0].entry.deleted_ns, items[0].inode.id), (111, f));
    assert_eq!(t.ns.chunk_count(), 2, "chunks live on in the trash");

    // Same path, same instant: the second entry gets a suffix.
    t.file("/home/u/a.txt", 1000, 0o644, 1);
    trash(&mut t, &alice, "/home/u/a.txt", false, 111).unwrap();
    assert!(t.ns.resolve("/.Trash/1000/111.1").is_ok());

    // Restoring by path takes the most recent deletion of it (the suffixed one here is
    // equally recent; names break the tie) and refuses to overwrite.
    let (ops, to) =
        t.ns.plan_restore(&alice, RestoreWhich::Name("111"), None, 200)
            .unwrap();
    assert_eq!(to, "/home/u/a.txt");
    t.apply_all(ops);
    assert_eq!(t.ns.resolve("/home/u/a.txt").unwrap(), f);
    assert_eq!(t.ns.trash_items(Some(1000)).len(), 1);
    let err =
        t.ns.plan_restore(&alice, RestoreWhich::Origin("/home/u/a.txt"), None, 201)
            .unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists);
    // Elsewhere, with missing parents recreated (owned by the restorer).
    let (ops, to) =
        t.ns.plan_restore(
            &alice,
            RestoreWhich::Origin("/home/u/a.txt"),
            Some("/home/u/old/copy.txt"),
            202,
        )
        .unwrap();
    assert_eq!(to, "/home/u/old/copy.txt");
    t.apply_all(ops);
    assert_eq!(
        t.ns.inode(t.ns.resolve("/home/u/old").unwrap())
            .unwrap()
            .uid,
        1000
    );
    assert!(t.ns.trash_items(None).is_empty());
    assert_eq!(
        t.ns.plan_restore(&alice, RestoreWhich::Name("111"), None, 203)
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    t.check_replay();
}

#[test]
fn expired_entries_are_purged_and_their_chunks_freed() {
    let mut t = Recorder::new();
    t.mkdir("/d/sub", 0, 0o755);
    t.file("/d/sub/x", 0, 0o644, 2);
    t.file("/d/y", 0, 0o644, 1);
    t.file("/z", 0, 0o644, 1);
    let root = Cred::root();
    assert_eq!(
        t.ns.plan_trash(&root, "/d", false, 10).unwrap_err().code,
        ErrorCode::DirectoryNotEmpty
    );
    trash(&mut t, &root, "/d", true, 10).unwrap();
    trash(&mut t, &root, "/z", false, 20).unwrap();
    assert_eq!(t.ns.chunk_count(), 4);
    // Nothing older than 5; at 15 the directory; then the file.
    assert!(purge_expired(&mut t, 5).is_empty());
    assert_eq!(t.ns.trash_items(None).len(), 2);
    assert_eq!(
        purge_expired(&mut t, 15),
        vec![ChunkId(1), ChunkId(2), ChunkId(3)]
    );
    assert_eq!(purge_expired(&mut t, 25), vec![ChunkId(4)]);
    assert!(t.ns.trash_items(None).is_empty());
    assert_eq!(t.ns.chunk_count(), 0);
    assert_eq!(
        t.ns.counts(),
        (0, 3),
        "only /, /.Trash and /.Trash/0 are left"
    );
    t.check_replay();
}

#[test]
fn trash_permissions_and_records_that_leave_the_trash() {
    let mut t = Recorder::new();
    t.mkdir("/pub", 1000, 0o755);
    t.file("/pub/f", 1000, 0o644, 1);
    t.file("/pub/g", 1000, 0o644, 1);
    // Another user may not remove from a directory they cannot write.
    assert_eq!(
        t.ns.plan_trash(&user(2000), "/pub/f", false, 1)
            .unwrap_err()
            .code,
        ErrorCode::PermissionDenied
    );
    trash(&mut t, &user(1000), "/pub/f", false, 5).unwrap();
    trash(&mut t, &user(1000), "/pub/g", false, 6).unwrap();
    // Another user cannot restore it (it is not theirs), root can.
    assert_eq!(
        t.ns.plan_restore(&user(2000), RestoreWhich::Origin("/pub/f"), None, 7)
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    assert!(t
        .ns
        .plan_restore(&Cred::root(), RestoreWhich::Origin("/pub/f"), None, 7)
        .is_ok());
    // A plain rename out of the trash, or an unlink there, drops the record.
    let user_dir = t.ns.resolve("/.Trash/1000").unwrap();
    let pub_dir = t.ns.resolve("/pub").unwrap();
    let (op, _) =
        t.ns.plan_rename_at(&user(1000), user_dir, "5", pub_dir, "back", false, 8)
            .unwrap()
            .unwrap();
    t.apply_all(vec![op]);
    let (op, orphan) =
        t.ns.plan_unlink_at(&user(1000), user_dir, "6", false, 9)
            .unwrap();
    t.apply_all(vec![
        op,
        Op::RemoveOrphan {
            inode: orphan.unwrap(),
        },
    ]);
    assert!(t.ns.trash_items(None).is_empty());
    assert!(t.ns.expired_trash(i64::MAX, 10).is_empty());
    assert!(Namespace::is_trash_path("/.Trash"));
    assert!(Namespace::is_trash_path("/.Trash/1000/5"));
    assert!(!Namespace::is_trash_path("/.Trashcan"));
    t.check_replay();
}

fn code<T: std::fmt::Debug>(r: Result<T, NsError>) -> ErrorCode {
    r.expect_err("expected an error").code
}
