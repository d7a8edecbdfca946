use super::*;

fn attrs(t: i64) -> NewNode {
    NewNode {
        mode: 0o644,
        uid: 1000,
        gid: 100,
        replication: 3,
        time_ns: t,
    }
}

fn mkdir(ns: &mut Namespace, p: &str, parents: bool) -> Result<(), NsError> {
    for op in ns.plan_mkdir(p, &attrs(1), parents)? {
        ns.apply(&op)?;
    }
    Ok(())
}

fn create(ns: &mut Namespace, p: &str, overwrite: bool) -> Result<InodeId, NsError> {
    let op = ns.plan_create(p, &attrs(2), overwrite)?;
    ns.apply(&op)?;
    ns.resolve(p)
}

fn code<T: std::fmt::Debug>(r: Result<T, NsError>) -> ErrorCode {
    r.expect_err("expected an error").code
}

#[test]
fn mkdir_create_and_resolve() {
    let mut ns = Namespace::new();
    mkdir(&mut ns, "/a/b/c", true).unwrap();
    let f = create(&mut ns, "/a/b/c/f", false).unwrap();
    assert_eq!(ns.resolve("/a/b/c").unwrap(), InodeId(4));
    assert_eq!(f, InodeId(5));
    assert_eq!(ns.path_of(f), "/a/b/c/f");
    assert_eq!(ns.counts(), (1, 4));
    // mkdir -p on an existing dir is a no-op; plain mkdir is AlreadyExists.
    assert!(ns.plan_mkdir("/a/b", &attrs(1), true).unwrap().is_empty());
    assert_eq!(
        code(mkdir(&mut ns, "/a/b", false)),
        ErrorCode::AlreadyExists
    );
    assert_eq!(code(mkdir(&mut ns, "/x/y", false)), ErrorCode::NotFound);
}

#[test]
fn name_and_path_errors() {
    let mut ns = Namespace::new();
    let long = format!("/{}", "n".repeat(256));
    assert_eq!(code(create(&mut ns, &long, false)), ErrorCode::NameTooLong);
    assert_eq!(code(ns.resolve("/missing")), ErrorCode::NotFound);
    assert_eq!(
        code(create(&mut ns, "relative", false)),
        ErrorCode::InvalidArgument
    );
    create(&mut ns, "/file", false).unwrap();
    assert_eq!(code(ns.resolve("/file/x")), ErrorCode::NotADirectory);
    assert_eq!(
        code(create(&mut ns, "/file/x", false)),
        ErrorCode::NotADirectory
    );
    assert_eq!(
        code(mkdir(&mut ns, "/file/d", true)),
        ErrorCode::NotADirectory
    );
    assert_eq!(
        code(create(&mut ns, "/file", false)),
        ErrorCode::AlreadyExists
    );
    mkdir(&mut ns, "/d", false).unwrap();
    assert_eq!(code(create(&mut ns, "/d", true)), ErrorCode::IsADirectory);
}

#[test]
fn delete_rules_and_freed_chunks() {
    let mut ns = Namespace::new();
    mkdir(&mut ns, "/d/e", true).unwrap();
    let f = create(&mut ns, "/d/e/f", false).unwrap();
    for (index, id) in [(0u64, 1u64), (1, 2)] {
        ns.apply(&Op::AllocateChunk {
            inode: f,
            index,
            chunk_id: ChunkId(id),
            version: ChunkVersion(1),
        })
        .unwrap();
    }
    assert_eq!(ns.chunk_count(), 2);
    assert_eq!(
        code(ns.plan_delete("/d", false, 5)),
        ErrorCode::DirectoryNotEmpty
    );
    assert_eq!(code(ns.plan_delete("/nope", false, 5)), ErrorCode::NotFound);
    assert_eq!(
        code(ns.plan_delete("/", true, 5)),
        ErrorCode::InvalidArgument
    );
    let op = ns.plan_delete("/d", true, 5).unwrap();
    let mut freed = ns.apply(&op).unwrap().freed_chunks;
    freed.sort();
    assert_eq!(freed, vec![ChunkId(1), ChunkId(2)]);
    assert_eq!(ns.chunk_count(), 0);
    assert_eq!(ns.counts(), (0, 1));
    assert_eq!(ns.next_chunk_id(), ChunkId(3));
}

#[test]
fn create_overwrite_truncates_and_drops_chunks() {
    let mut ns = Namespace::new();
    let f = create(&mut ns, "/f", false).unwrap();
    ns.apply(&Op::AllocateChunk {
        inode: f,
        index: 0,
        chunk_id: ChunkId(1),
        version: ChunkVersion(1),
    })
    .unwrap();
    ns.apply(&Op::CommitWrite {
        inode: f,
        end: 100,
        mtime_ns: 9,
    })
    .unwrap();
    let op = ns.plan_create("/f", &attrs(10), true).unwrap();
    assert_eq!(ns.apply(&op).unwrap().freed_chunks, vec![ChunkId(1)]);
    let ino = ns.file(f).unwrap();
    assert_eq!(
        ino.kind,
        NodeKind::File {
            size: 0,
            chunks: BTreeMap::new()
        }
    );
    assert_eq!(ns.resolve("/f").unwrap(), f);
}

#[test]
fn commit_write_keeps_the_larger_size() {
    let mut ns = Namespace::new();
    let f = create(&mut ns, "/f", false).unwrap();
    for end in [100, 50] {
        ns.apply(&Op::CommitWrite {
            inode: f,
            end,
            mtime_ns: end as i64,
        })
        .unwrap();
    }
    assert!(matches!(
        ns.file(f).unwrap().kind,
        NodeKind::File { size: 100, .. }
    ));
    assert_eq!(ns.file(f).unwrap().mtime_ns, 50);
}

#[test]
fn rename_rules() {
    let mut ns = Namespace::new();
    mkdir(&mut ns, "/a/b", true).unwrap();
    mkdir(&mut ns, "/empty", false).unwrap();
    let f = create(&mut ns, "/f", false).unwrap();
    let g = create(&mut ns, "/g", false).unwrap();
    assert_eq!(
        code(ns.plan_rename("/a", "/a/b/c", false, 1)),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(ns.plan_rename("/a", "/a/x", false, 1)),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(ns.plan_rename("/f", "/g", true, 1)),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(ns.plan_rename("/f", "/a", false, 1)),
        ErrorCode::IsADirectory
    );
    assert_eq!(
        code(ns.plan_rename("/empty", "/g", false, 1)),
        ErrorCode::NotADirectory
    );
    assert_eq!(
        code(ns.plan_rename("/empty", "/a", false, 1)),
        ErrorCode::DirectoryNotEmpty
    );
    assert_eq!(
        code(ns.plan_rename("/nope", "/z", false, 1)),
        ErrorCode::NotFound
    );
    assert_eq!(ns.plan_rename("/f", "/f", false, 1).unwrap(), None);
    // Over an existing file: the old target is gone, the source keeps its inode.
    let op = ns.plan_rename("/f", "/g", false, 1).unwrap().unwrap();
    ns.apply(&op).unwrap();
    assert_eq!(ns.resolve("/g").unwrap(), f);
    assert!(ns.inode(g).is_none());
    assert_eq!(code(ns.resolve("/f")), ErrorCode::NotFound);
    // A directory moves with its subtree.
    let op = ns
        .plan_rename("/a", "/empty/a2", false, 1)
        .unwrap()
        .unwrap();
    ns.apply(&op).unwrap();
    let b = ns.resolve("/empty/a2/b").unwrap();
    assert_eq!(ns.path_of(b), "/empty/a2/b");
}

#[test]
fn list_pages_in_name_order() {
    let mut ns = Namespace::new();
    for n in ["c", "a", "b", "d"] {
        create(&mut ns, &format!("/{n}"), false).unwrap();
    }
    let (page, more) = ns.list(InodeId::ROOT, "", 2).unwrap();
    assert_eq!(page.iter().map(|e| e.0).collect::<Vec<_>>(), vec!["a", "b"]);
    assert!(more);
    let (page, more) = ns.list(InodeId::ROOT, "b", 2).unwrap();
    assert_eq!(page.iter().map(|e| e.0).collect::<Vec<_>>(), vec!["c", "d"]);
    assert!(!more);
}

#[test]
fn replay_is_deterministic_and_rejects_reused_ids() {
    let mut live = Namespace::new();
    let mut ops = live.plan_mkdir("/x/y", &attrs(1), true).unwrap();
    for op in &ops {
        live.apply(op).unwrap();
    }
    let c = live.plan_create("/x/y/f", &attrs(2), false).unwrap();
    live.apply(&c).unwrap();
    ops.push(c.clone());
    let mut replayed = Namespace::new();
    for op in &ops {
        replayed.apply(op).unwrap();
    }
    assert_eq!(replayed, live);
    // Applying the same mkdir again must fail, not silently alias ids.
    assert_eq!(code(replayed.apply(&ops[0])), ErrorCode::Internal);
}
