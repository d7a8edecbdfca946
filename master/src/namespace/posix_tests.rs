//! Tests of the POSIX namespace surface: inode-based plans, hard links, orphans, rename
//! rules, permissions, truncate and xattrs. Every op is also replayed on a fresh namespace
//! to check the result is the same (determinism of replay).

use super::perm::Cred;
use super::*;
use rdfs_proto::ids::ChunkVersion;

const CHUNK: u64 = 1024;

fn root() -> Cred {
    Cred::root()
}

fn user(uid: u32, gid: u32) -> Cred {
    Cred {
        uid,
        gid,
        groups: vec![],
    }
}

/// A namespace that records every applied op so tests can replay them.
struct Ns {
    ns: Namespace,
    log: Vec<Op>,
}

impl Ns {
    fn new() -> Ns {
        Ns {
            ns: Namespace::new(),
            log: Vec::new(),
        }
    }

    fn apply(&mut self, op: Op) -> Applied {
        let applied = self.ns.apply(&op).expect("planned op applies");
        self.log.push(op);
        applied
    }

    fn create(
        &mut self,
        cred: &Cred,
        parent: InodeId,
        name: &str,
        kind: NewKind,
        mode: u32,
    ) -> InodeId {
        self.try_create(cred, parent, name, kind, mode)
            .expect("create")
    }

    fn try_create(
        &mut self,
        cred: &Cred,
        parent: InodeId,
        name: &str,
        kind: NewKind,
        mode: u32,
    ) -> Result<InodeId, NsError> {
        match self
            .ns
            .plan_create_at(cred, parent, name, kind, mode, true, 3, 10)?
        {
            CreatePlan::New(op) => {
                let Op::CreateNode { inode, .. } = &op else {
                    panic!("create plans CreateNode");
                };
                let id = *inode;
                self.apply(op);
                Ok(id)
            }
            CreatePlan::Existing(id) => Ok(id),
        }
    }

    /// Unlinks like the service does: `RemoveOrphan` right away unless `open`.
    fn unlink(
        &mut self,
        cred: &Cred,
        parent: InodeId,
        name: &str,
        is_dir: bool,
        open: bool,
    ) -> Result<Applied, NsError> {
        let (op, orphan) = self.ns.plan_unlink_at(cred, parent, name, is_dir, 20)?;
        let mut applied = self.apply(op);
        if let (Some(o), false) = (orphan, open) {
            applied = self.apply(Op::RemoveOrphan { inode: o });
        }
        Ok(applied)
    }

    fn rename(
        &mut self,
        cred: &Cred,
        sp: InodeId,
        sn: &str,
        dp: InodeId,
        dn: &str,
        no_replace: bool,
    ) -> Result<(), NsError> {
        if let Some((op, orphan)) = self
            .ns
            .plan_rename_at(cred, sp, sn, dp, dn, no_replace, 30)?
        {
            self.apply(op);
            if let Some(o) = orphan {
                self.apply(Op::RemoveOrphan { inode: o });
            }
        }
        Ok(())
    }

    fn replayed(&self) -> Namespace {
        let mut fresh = Namespace::new();
        for op in &self.log {
            fresh.apply(op).expect("replay applies");
        }
        fresh
    }

    fn nlink(&self, id: InodeId) -> u32 {
        self.ns.inode(id).expect("exists").nlink
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, NsError>) -> ErrorCode {
    r.expect_err("expected an error").code
}

const ROOT: InodeId = InodeId::ROOT;

#[test]
fn create_at_kinds_links_and_existing_files() {
    let mut t = Ns::new();
    let d = t.create(&root(), ROOT, "d", NewKind::Dir, 0o755);
    let f = t.create(&root(), d, "f", NewKind::File, 0o644);
    let l = t.create(&root(), d, "l", NewKind::Symlink("f".into()), 0o777);
    let p = t.create(&root(), d, "p", NewKind::Fifo, 0o600);
    let sub = t.create(&root(), d, "sub", NewKind::Dir, 0o700);
    assert_eq!(
        (d, f, l, p, sub),
        (InodeId(2), InodeId(3), InodeId(4), InodeId(5), InodeId(6))
    );
    assert_eq!(t.nlink(ROOT), 3, "root: 2 + d");
    assert_eq!(t.nlink(d), 3, "d: 2 + sub");
    assert_eq!(t.ns.read_link(l).unwrap(), "f");
    assert_eq!(code(t.ns.read_link(f)), ErrorCode::InvalidArgument);
    assert!(matches!(t.ns.inode(p).unwrap().kind, NodeKind::Fifo));
    // O_CREAT without O_EXCL returns the existing file; with O_EXCL it is EEXIST.
    assert_eq!(
        t.ns.plan_create_at(&root(), d, "f", NewKind::File, 0o600, false, 3, 11)
            .unwrap(),
        CreatePlan::Existing(f)
    );
    assert_eq!(
        code(t.ns.plan_create_at(&root(), d, "f", NewKind::File, 0o600, true, 3, 11)),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(t.ns.plan_create_at(&root(), ROOT, "d", NewKind::File, 0o600, false, 3, 11)),
        ErrorCode::IsADirectory
    );
    assert_eq!(
        code(t.ns.plan_create_at(
            &root(),
            d,
            &"n".repeat(256),
            NewKind::File,
            0o600,
            true,
            3,
            11
        )),
        ErrorCode::NameTooLong
    );
    assert_eq!(
        code(t.ns.plan_create_at(&root(), f, "x", NewKind::File, 0o600, true, 3, 11)),
        ErrorCode::NotADirectory
    );
    // Timestamps: the new inode and the parent's mtime/ctime are the create time.
    let di = t.ns.inode(d).unwrap();
    assert_eq!((di.mtime_ns, di.ctime_ns), (10, 10));
    assert_eq!(t.replayed(), t.ns);
}

#[test]
fn setgid_directories_pass_their_group_and_bit_on() {
    let mut t = Ns::new();
    let d = t.create(&root(), ROOT, "shared", NewKind::Dir, 0o2777);
    t.apply(Op::SetAttr {
        inode: d,
        mode: None,
        uid: None,
        gid: Some(50),
        atime_ns: None,
        mtime_ns: None,
        ctime_ns: 1,
    });
    let alice = user(1000, 100);
    let f = t.create(&alice, d, "f", NewKind::File, 0o644);
    let sub = t.create(&alice, d, "sub", NewKind::Dir, 0o755);
    let fi = t.ns.inode(f).unwrap();
    assert_eq!((fi.uid, fi.gid, fi.mode), (1000, 50, 0o644));
    let si = t.ns.inode(sub).unwrap();
    assert_eq!((si.gid, si.mode), (50, 0o2755));
    let plain = t.create(&alice, sub, "g", NewKind::File, 0o640);
    assert_eq!(t.ns.inode(plain).unwrap().gid, 50);
}

#[test]
fn hard_links_count_and_the_last_unlink_frees_the_chunks() {
    let mut t = Ns::new();
    let d = t.create(&root(), ROOT, "d", NewKind::Dir, 0o755);
    let f = t.create(&root(), ROOT, "f", NewKind::File, 0o644);
    t.apply(Op::AllocateChunk {
        inode: f,
        index: 0,
        chunk_id: ChunkId(1),
        version: ChunkVersion(1),
    });
    let op = t.ns.plan_link(&root(), f, d, "g", 40).unwrap();
    t.apply(op);
    assert_eq!(t.nlink(f), 2);
    assert_eq!(t.ns.inode(f).unwrap().ctime_ns, 40);
    assert_eq!(t.ns.child(d, "g"), Some(f));
    assert_eq!(
        code(t.ns.plan_link(&root(), d, ROOT, "dl", 41)),
        ErrorCode::OperationNotPermitted
    );
    assert_eq!(
        code(t.ns.plan_link(&root(), f, d, "g", 41)),
        ErrorCode::AlreadyExists
    );
    // Removing one name keeps the data.
    let applied = t.unlink(&root(), ROOT, "f", false, false).unwrap();
    assert_eq!(applied.freed_chunks, Vec::<ChunkId>::new());
    assert_eq!(t.nlink(f), 1);
    assert_eq!(t.ns.path_of(f), "/d/g");
    // The last one frees the chunk.
    let applied = t.unlink(&root(), d, "g", false, false).unwrap();
    assert_eq!(applied.freed_chunks, vec![ChunkId(1)]);
    assert!(t.ns.inode(f).is_none());
    assert!(t.ns.chunk(ChunkId(1)).is_none());
    assert_eq!(t.replayed(), t.ns);
}

#[test]
fn an_open_unlinked_file_is_an_orphan_until_removed() {
    let mut t = Ns::new();
    let f = t.create(&root(), ROOT, "f", NewKind::File, 0o644);
    t.apply(Op::AllocateChunk {
        inode: f,
        index: 0,
        chunk_id: ChunkId(1),
        version: ChunkVersion(1),
    });
    t.unlink(&root(), ROOT, "f", false, true).unwrap();
    assert_eq!(t.ns.child(ROOT, "f"), None);
    assert!(t.ns.is_orphan(f));
    assert_eq!(t.nlink(f), 0);
    assert!(t.ns.file(f).is_ok(), "still readable through its inode");
    assert_eq!(
        code(t.ns.plan_link(&root(), f, ROOT, "again", 1)),
        ErrorCode::NotFound
    );
    // Survives a checkpoint round trip.
    let image = crate::checkpoint::encode(&t.ns, 9).unwrap();
    let (_, loaded) = crate::checkpoint::decode(&image).unwrap();
    assert_eq!(loaded, t.ns);
    let applied = t.apply(Op::RemoveOrphan { inode: f });
    assert_eq!(applied.freed_chunks, vec![ChunkId(1)]);
    assert!(!t.ns.is_orphan(f));
    assert!(t.ns.inode(f).is_none());
    assert_eq!(t.replayed(), t.ns);
}

#[test]
fn rmdir_and_unlink_codes() {
    let mut t = Ns::new();
    let d = t.create(&root(), ROOT, "d", NewKind::Dir, 0o755);
    t.create(&root(), d, "f", NewKind::File, 0o644);
    assert_eq!(
        code(t.unlink(&root(), ROOT, "d", true, false)),
        ErrorCode::DirectoryNotEmpty
    );
    assert_eq!(
        code(t.unlink(&root(), ROOT, "d", false, false)),
        ErrorCode::IsADirectory
    );
    assert_eq!(
        code(t.unlink(&root(), d, "f", true, false)),
        ErrorCode::NotADirectory
    );
    assert_eq!(
        code(t.unlink(&root(), d, "nope", false, false)),
        ErrorCode::NotFound
    );
    t.unlink(&root(), d, "f", false, false).unwrap();
    assert_eq!(t.nlink(ROOT), 3);
    t.unlink(&root(), ROOT, "d", true, false).unwrap();
    assert_eq!(t.nlink(ROOT), 2);
    assert_eq!(t.ns.inode_count(), 1);
    assert_eq!(t.replayed(), t.ns);
}

#[test]
fn rename_follows_posix() {
    let mut t = Ns::new();
    let a = t.create(&root(), ROOT, "a", NewKind::Dir, 0o755);
    let b = t.create(&root(), ROOT, "b", NewKind::Dir, 0o755);
    let a_sub = t.create(&root(), a, "sub", NewKind::Dir, 0o755);
    let f = t.create(&root(), ROOT, "f", NewKind::File, 0o644);
    let g = t.create(&root(), ROOT, "g", NewKind::File, 0o644);
    t.apply(Op::AllocateChunk {
        inode: g,
        index: 0,
        chunk_id: ChunkId(1),
        version: ChunkVersion(1),
    });
    // File over file replaces it and frees its chunks.
    t.rename(&root(), ROOT, "f", ROOT, "g", false).unwrap();
    assert_eq!(t.ns.child(ROOT, "g"), Some(f));
    assert!(t.ns.inode(g).is_none());
    assert!(t.ns.chunk(ChunkId(1)).is_none());
    // no_replace refuses an existing destination.
    assert_eq!(
        code(t.rename(&root(), ROOT, "g", ROOT, "a", true)),
        ErrorCode::AlreadyExists
    );
    // File over dir, dir over file, dir over non-empty dir.
    assert_eq!(
        code(t.rename(&root(), ROOT, "g", ROOT, "a", false)),
        ErrorCode::IsADirectory
    );
    assert_eq!(
        code(t.rename(&root(), ROOT, "a", ROOT, "g", false)),
        ErrorCode::NotADirectory
    );
    assert_eq!(
        code(t.rename(&root(), ROOT, "b", ROOT, "a", false)),
        ErrorCode::DirectoryNotEmpty
    );
    // Into its own subtree.
    assert_eq!(
        code(t.rename(&root(), ROOT, "a", a_sub, "x", false)),
        ErrorCode::InvalidArgument
    );
    // Dir over an empty dir; link counts follow the moved directory.
    assert_eq!((t.nlink(ROOT), t.nlink(a), t.nlink(b)), (4, 3, 2));
    t.rename(&root(), a, "sub", ROOT, "b", false).unwrap();
    assert_eq!(t.ns.child(ROOT, "b"), Some(a_sub));
    assert!(t.ns.inode(b).is_none());
    assert_eq!((t.nlink(ROOT), t.nlink(a)), (4, 2));
    assert_eq!(t.ns.path_of(a_sub), "/b");
    // Two links to the same inode: nothing happens.
    let op = t.ns.plan_link(&root(), f, a, "f2", 31).unwrap();
    t.apply(op);
    assert_eq!(
        t.ns.plan_rename_at(&root(), ROOT, "g", a, "f2", false, 32)
            .unwrap(),
        None
    );
    assert_eq!(t.ns.inode(ROOT).unwrap().mtime_ns, 30);
    assert_eq!(t.replayed(), t.ns);
}

#[test]
fn permissions_for_a_non_root_caller() {
    let mut t = Ns::new();
    let alice = user(1000, 100);
    let bob = user(2000, 200);
    let home = t.create(&root(), ROOT, "home", NewKind::Dir, 0o755);
    t.apply(Op::SetAttr {
        inode: home,
        mode: None,
        uid: Some(1000),
        gid: Some(100),
        atime_ns: None,
        mtime_ns: None,
        ctime_ns: 1,
    });
    let secret = t.create(&alice, home, "secret", NewKind::File, 0o600);
    // Bob can look it up but not read it, nor create in alice's home.
    assert!(t.ns.lookup(home, "secret", &bob).is_ok());
    assert_eq!(
        code(t.ns.check_data_access(secret, &bob, perm::R)),
        ErrorCode::PermissionDenied
    );
    assert!(t.ns.check_data_access(secret, &alice, perm::R).is_ok());
    assert_eq!(
        code(t.try_create(&bob, home, "x", NewKind::File, 0o644)),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(t.unlink(&bob, home, "secret", false, false)),
        ErrorCode::PermissionDenied
    );
    // No search permission: lookups fail.
    let closed = t.create(&alice, home, "closed", NewKind::Dir, 0o700);
    t.create(&alice, closed, "in", NewKind::File, 0o644);
    assert_eq!(
        code(t.ns.lookup(closed, "in", &bob)),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(t.ns.resolve_as("/home/closed/in", &bob)),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(t.ns.read_dir(closed, "", 0, &bob)),
        ErrorCode::PermissionDenied
    );
    // chmod/chown/utimes by a non-owner.
    let chmod = SetAttrPlan {
        mode: Some(0o644),
        ..Default::default()
    };
    assert_eq!(
        code(t.ns.plan_set_attr(&bob, secret, &chmod, CHUNK, 5)),
        ErrorCode::OperationNotPermitted
    );
    let chown = SetAttrPlan {
        uid: Some(2000),
        ..Default::default()
    };
    assert_eq!(
        code(t.ns.plan_set_attr(&alice, secret, &chown, CHUNK, 5)),
        ErrorCode::OperationNotPermitted
    );
    let times = SetAttrPlan {
        mtime_ns: Some(7),
        ..Default::default()
    };
    assert_eq!(
        code(t.ns.plan_set_attr(&bob, secret, &times, CHUNK, 5)),
        ErrorCode::OperationNotPermitted
    );
    let now = SetAttrPlan {
        mtime_now: true,
        ..Default::default()
    };
    assert_eq!(
        code(t.ns.plan_set_attr(&bob, secret, &now, CHUNK, 5)),
        ErrorCode::PermissionDenied
    );
    // chgrp to a group the owner is in is fine; to another one is not.
    let alice_in_7 = Cred {
        uid: 1000,
        gid: 100,
        groups: vec![7],
    };
    let chgrp = SetAttrPlan {
        gid: Some(7),
        ..Default::default()
    };
    let planned =
        t.ns.plan_set_attr(&alice_in_7, secret, &chgrp, CHUNK, 5)
            .unwrap();
    for op in planned.ops {
        t.apply(op);
    }
    let s = t.ns.inode(secret).unwrap();
    assert_eq!((s.gid, s.ctime_ns), (7, 5));
    let chgrp = SetAttrPlan {
        gid: Some(8),
        ..Default::default()
    };
    assert_eq!(
        code(t.ns.plan_set_attr(&alice_in_7, secret, &chgrp, CHUNK, 5)),
        ErrorCode::OperationNotPermitted
    );
    // chmod g+s by an owner outside the group drops the setgid bit.
    let setgid = SetAttrPlan {
        mode: Some(0o2755),
        ..Default::default()
    };
    let planned =
        t.ns.plan_set_attr(&alice, secret, &setgid, CHUNK, 6)
            .unwrap();
    for op in planned.ops {
        t.apply(op);
    }
    assert_eq!(t.ns.inode(secret).unwrap().mode, 0o755);
    // Root may read anything but execute only with some x bit.
    let mut r = root();
    assert!(r.may(t.ns.inode(secret).unwrap(), perm::X));
    r.uid = 0;
    let plain = t.create(&alice, home, "plain", NewKind::File, 0o644);
    assert!(!r.may(t.ns.inode(plain).unwrap(), perm::X));
    assert!(r.may(t.ns.inode(plain).unwrap(), perm::R | perm::W));
    assert_eq!(t.replayed(), t.ns);
}

#[test]
fn sticky_directories_protect_other_users_entries() {
    let mut t = Ns::new();
    let tmp = t.create(&root(), ROOT, "tmp", NewKind::Dir, 0o1777);
    let alice = user(1000, 100);
    let bob = user(2000, 200);
    t.create(&alice, tmp, "a", NewKind::File, 0o666);
    assert_eq!(
        code(t.unlink(&bob, tmp, "a", false, false)),
        ErrorCode::OperationNotPermitted
    );
    assert_eq!(
        code(t.rename(&bob, tmp, "a", tmp, "b", false)),
        ErrorCode::OperationNotPermitted
    );
    t.unlink(&alice, tmp, "a", false, false).unwrap();
}

#[test]
fn truncate_drops_whole_chunks_and_asks_to_zero_the_cut_one() {
    let mut t = Ns::new();
    let f = t.create(&root(), ROOT, "f", NewKind::File, 0o644);
    for (i, c) in [(0u64, 1u64), (1, 2), (2, 3)] {
        t.apply(Op::AllocateChunk {
            inode: f,
            index: i,
            chunk_id: ChunkId(c),
            version: ChunkVersion(1),
        });
    }
    t.apply(Op::CommitWrite {
        inode: f,
        end: 2 * CHUNK + 100,
        mtime_ns: 3,
    });
    let shrink = SetAttrPlan {
        size: Some(CHUNK + 10),
        ..Default::default()
    };
    let planned = t.ns.plan_set_attr(&root(), f, &shrink, CHUNK, 50).unwrap();
    assert_eq!(planned.zero, Some((CHUNK + 10, 2 * CHUNK)));
    assert_eq!(
        planned.ops,
        vec![Op::Truncate {
            inode: f,
            size: CHUNK + 10,
            drop_from_index: 2,
            time_ns: 50
        }]
    );
    let mut freed = Vec::new();
    for op in planned.ops {
        freed.extend(t.apply(op).freed_chunks);
    }
    assert_eq!(freed, vec![ChunkId(3)]);
    let NodeKind::File { size, chunks } = &t.ns.inode(f).unwrap().kind else {
        panic!("file");
    };
    assert_eq!((*size, chunks.len()), (CHUNK + 10, 2));
    assert_eq!(t.ns.inode(f).unwrap().mtime_ns, 50);
    // Within the last chunk, bounded by the old size.
    let shrink = SetAttrPlan {
        size: Some(CHUNK + 5),
        ..Default::default()
    };
    assert_eq!(
        t.ns.plan_set_attr(&root(), f, &shrink, CHUNK, 51)
            .unwrap()
            .zero,
        Some((CHUNK + 5, CHUNK + 10))
    );
    // On a chunk boundary nothing needs zeroing; growing neither.
    let exact = SetAttrPlan {
        size: Some(CHUNK),
        ..Default::default()
    };
    assert_eq!(
        t.ns.plan_set_attr(&root(), f, &exact, CHUNK, 51)
            .unwrap()
            .zero,
        None
    );
    let grow = SetAttrPlan {
        size: Some(10 * CHUNK),
        ..Default::default()
    };
    let planned = t.ns.plan_set_attr(&root(), f, &grow, CHUNK, 52).unwrap();
    assert_eq!(planned.zero, None);
    for op in planned.ops {
        t.apply(op);
    }
    let NodeKind::File { size, chunks } = &t.ns.inode(f).unwrap().kind else {
        panic!("file");
    };
    assert_eq!((*size, chunks.len()), (10 * CHUNK, 2));
    let dir = SetAttrPlan {
        size: Some(0),
        ..Default::default()
    };
    assert_eq!(
        code(t.ns.plan_set_attr(&root(), ROOT, &dir, CHUNK, 5)),
        ErrorCode::IsADirectory
    );
    assert_eq!(t.replayed(), t.ns);
}

#[test]
fn xattrs_with_create_and_replace_flags() {
    let mut t = Ns::new();
    let f = t.create(&root(), ROOT, "f", NewKind::File, 0o644);
    let r = root();
    assert_eq!(
        code(t.ns.plan_set_xattr(&r, f, "user.a", b"1", false, true, 1)),
        ErrorCode::NoData
    );
    let op =
        t.ns.plan_set_xattr(&r, f, "user.a", b"1", true, false, 2)
            .unwrap();
    t.apply(op);
    assert_eq!(
        code(t.ns.plan_set_xattr(&r, f, "user.a", b"2", true, false, 3)),
        ErrorCode::AlreadyExists
    );
    let op =
        t.ns.plan_set_xattr(&r, f, "user.a", b"2", false, true, 4)
            .unwrap();
    t.apply(op);
    let op =
        t.ns.plan_set_xattr(&r, f, "trusted.t", b"x", false, false, 5)
            .unwrap();
    t.apply(op);
    assert_eq!(t.ns.get_xattr(&r, f, "user.a").unwrap(), b"2");
    assert_eq!(
        t.ns.list_xattr(&r, f).unwrap(),
        vec!["trusted.t".to_string(), "user.a".to_string()]
    );
    let bob = user(2000, 200);
    assert_eq!(
        t.ns.list_xattr(&bob, f).unwrap(),
        vec!["user.a".to_string()]
    );
    assert_eq!(
        code(t.ns.plan_set_xattr(&bob, f, "user.b", b"", false, false, 6)),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(t.ns.plan_set_xattr(&r, f, "system.posix_acl_access", b"", false, false, 6)),
        ErrorCode::NotSupported
    );
    assert_eq!(code(t.ns.get_xattr(&r, f, "user.none")), ErrorCode::NoData);
    let op = t.ns.plan_remove_xattr(&r, f, "user.a", 7).unwrap();
    t.apply(op);
    assert_eq!(
        code(t.ns.plan_remove_xattr(&r, f, "user.a", 8)),
        ErrorCode::NoData
    );
    assert_eq!(t.ns.inode(f).unwrap().ctime_ns, 7);
    assert_eq!(t.replayed(), t.ns);
}

#[test]
fn a_format_1_checkpoint_still_loads() {
    // The format-1 layout, built from the old field list.
    #[derive(Serialize)]
    struct OldInode {
        id: InodeId,
        parent: InodeId,
        name: String,
        kind: NodeKind,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: i64,
        ctime_ns: i64,
        atime_ns: i64,
        nlink: u32,
        replication: u32,
    }
    #[derive(Serialize)]
    struct OldNs {
        inodes: HashMap<InodeId, OldInode>,
        chunks: HashMap<ChunkId, ChunkMeta>,
        next_inode: u64,
        next_chunk_id: u64,
        epoch: Epoch,
    }
    let dir = |id: u64, parent: u64, name: &str, entries: Vec<(&str, u64)>| OldInode {
        id: InodeId(id),
        parent: InodeId(parent),
        name: name.into(),
        kind: NodeKind::Dir {
            entries: entries
                .into_iter()
                .map(|(n, i)| (n.to_string(), InodeId(i)))
                .collect(),
        },
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime_ns: 1,
        ctime_ns: 1,
        atime_ns: 1,
        nlink: 2,
        replication: 0,
    };
    let old = OldNs {
        inodes: HashMap::from([
            (InodeId(1), dir(1, 1, "", vec![("a", 2)])),
            (InodeId(2), dir(2, 1, "a", vec![])),
        ]),
        chunks: HashMap::new(),
        next_inode: 3,
        next_chunk_id: 1,
        epoch: Epoch(4),
    };
    let image = super::recorder::legacy_checkpoint(1, 17, &old);
    let (seq, ns) = crate::checkpoint::decode(&image).unwrap();
    assert_eq!(seq, 17);
    assert_eq!(ns.resolve("/a").unwrap(), InodeId(2));
    assert_eq!(
        ns.inode(InodeId::ROOT).unwrap().nlink,
        3,
        "recounted: 2 + one subdir"
    );
    assert_eq!(ns.epoch(), Epoch(4));
    assert_eq!(ns.orphans().count(), 0);
}
