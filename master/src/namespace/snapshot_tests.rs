//! Snapshots in the namespace: shared chunks and reference counts, copy-on-write, freeing
//! only what nothing references, deterministic replay, and loading format-2 checkpoints.

use super::perm::Cred;
use super::*;

use super::recorder::{user, Recorder};

fn snapshot(t: &mut Recorder, cred: &Cred, src: &str, dst: &str) -> SnapshotPlan {
    let plan = t.ns.plan_snapshot(cred, src, dst, 50).unwrap();
    t.apply(plan.op.clone());
    plan
}

fn chunks_of(t: &Recorder, p: &str) -> Vec<ChunkId> {
    let id = t.ns.resolve(p).unwrap();
    match &t.ns.inode(id).unwrap().kind {
        NodeKind::File { chunks, .. } => chunks.values().copied().collect(),
        _ => panic!("{p} is not a file"),
    }
}

#[test]
fn a_file_snapshot_shares_chunks_until_copy_on_write() {
    let mut t = Recorder::new();
    t.file("/f", 1000, 0o4755, 3);
    let plan = snapshot(&mut t, &Cred::root(), "/f", "/f.snap");
    assert_eq!(plan.inodes, 1);
    assert_eq!(plan.chunks, vec![ChunkId(1), ChunkId(2), ChunkId(3)]);
    assert_eq!(chunks_of(&t, "/f.snap"), chunks_of(&t, "/f"));
    assert_eq!(t.ns.chunk_refs(ChunkId(2)), 2);
    let snap =
        t.ns.inode(t.ns.resolve("/f.snap").unwrap())
            .unwrap()
            .clone();
    assert_eq!(snap.mode, 0o4755, "root keeps modes and owners");
    assert_eq!((snap.uid, snap.nlink, snap.ctime_ns), (1000, 1, 50));

    // The first write to chunk 2 through /f: /f names a new chunk 4, a pending copy of 2.
    let f = t.ns.resolve("/f").unwrap();
    let cow = t.ns.plan_copy_on_write(f, 1).unwrap();
    assert_eq!(
        cow,
        Op::CopyOnWrite {
            inode: f,
            index: 1,
            from: ChunkId(2),
            to: ChunkId(4),
            version: ChunkVersion(1)
        }
    );
    assert!(t.apply(cow).is_empty());
    assert_eq!(
        chunks_of(&t, "/f"),
        vec![ChunkId(1), ChunkId(4), ChunkId(3)]
    );
    assert_eq!(t.ns.chunk(ChunkId(4)).unwrap().copy_of, Some(ChunkId(2)));
    assert_eq!(
        t.ns.chunk_refs(ChunkId(2)),
        2,
        "the pending copy holds a reference"
    );
    assert!(t.apply(Op::CopyDone { chunk: ChunkId(4) }).is_empty());
    assert_eq!(t.ns.chunk_refs(ChunkId(2)), 1);
    assert_eq!(t.ns.chunk(ChunkId(4)).unwrap().copy_of, None);

    // Deleting the snapshot frees only what it alone referenced (chunk 2).
    let (op, orphan) =
        t.ns.plan_unlink_at(&Cred::root(), InodeId::ROOT, "f.snap", false, 60)
            .unwrap();
    t.apply(op);
    let freed = t.apply(Op::RemoveOrphan {
        inode: orphan.unwrap(),
    });
    assert_eq!(freed, vec![ChunkId(2)]);
    assert_eq!(t.ns.chunk_refs(ChunkId(1)), 1);
    assert_eq!(t.ns.chunk_count(), 3);
    t.check_replay();
}

#[test]
fn a_tree_snapshot_copies_every_inode_in_a_fixed_order() {
    let mut t = Recorder::new();
    t.mkdir("/d/sub", 1000, 0o755);
    t.file("/d/b", 1000, 0o4755, 1);
    t.file("/d/a", 1000, 0o4755, 2);
    t.file("/d/sub/c", 1000, 0o4755, 1);
    let link =
        t.ns.plan_create_at(
            &Cred::root(),
            t.ns.resolve("/d").unwrap(),
            "ln",
            NewKind::Symlink("a".into()),
            0o777,
            true,
            0,
            3,
        )
        .unwrap();
    let CreatePlan::New(op) = link else {
        panic!("new symlink")
    };
    t.apply(op);
    let first = t.ns.next_inode();
    let plan = snapshot(&mut t, &Cred::root(), "/d", "/snap");
    assert_eq!(plan.inodes, 6, "d, a, b, ln, sub, sub/c");
    assert_eq!(plan.chunks.len(), 4);
    let snap = t.ns.resolve("/snap").unwrap();
    assert_eq!(snap, first);
    // Children are numbered in name order, depth first.
    for (i, name) in ["a", "b", "ln", "sub"].iter().enumerate() {
        assert_eq!(
            t.ns.resolve(&format!("/snap/{name}")).unwrap(),
            InodeId(first.0 + 1 + i as u64)
        );
    }
    assert_eq!(t.ns.resolve("/snap/sub/c").unwrap(), InodeId(first.0 + 5));
    assert_eq!(t.ns.next_inode(), InodeId(first.0 + 6));
    assert_eq!(t.ns.inode(snap).unwrap().nlink, 3, "2 + one subdirectory");
    assert_eq!(t.ns.inode(InodeId::ROOT).unwrap().nlink, 4, "/d and /snap");
    assert_eq!(
        t.ns.read_link(t.ns.resolve("/snap/ln").unwrap()).unwrap(),
        "a"
    );
    assert_eq!(chunks_of(&t, "/snap/a"), chunks_of(&t, "/d/a"));
    assert_eq!(
        t.ns.path_of(t.ns.resolve("/snap/sub/c").unwrap()),
        "/snap/sub/c"
    );
    for c in chunks_of(&t, "/d/sub/c") {
        assert_eq!(t.ns.chunk_refs(c), 2);
    }
    // Removing the original tree frees nothing: the snapshot still holds every chunk.
    let del = t.ns.plan_delete("/d", true, 70).unwrap();
    assert!(t.apply(del).is_empty());
    assert_eq!(t.ns.chunk_count(), 4);
    let del = t.ns.plan_delete("/snap", true, 71).unwrap();
    assert_eq!(t.apply(del).len(), 4);
    assert_eq!(t.ns.chunk_count(), 0);
    t.check_replay();
}

#[test]
fn snapshot_rules_and_non_root_copies() {
    let mut t = Recorder::new();
    t.mkdir("/d", 1000, 0o755);
    t.file("/d/f", 1000, 0o4755, 1);
    let code = |r: Result<SnapshotPlan, NsError>| r.expect_err("refused").code;
    let root = Cred::root();
    assert_eq!(
        code(t.ns.plan_snapshot(&root, "/d", "/d/inner", 1)),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(t.ns.plan_snapshot(&root, "/", "/x", 1)),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(t.ns.plan_snapshot(&root, "/d/f", "/d", 1)),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(t.ns.plan_snapshot(&root, "/nope", "/x", 1)),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(t.ns.plan_snapshot(&root, "/d", "/no/x", 1)),
        ErrorCode::NotFound
    );
    // A stranger may not write to / (owned by root, 0755).
    assert_eq!(
        code(t.ns.plan_snapshot(&user(2000), "/d/f", "/copy", 1)),
        ErrorCode::PermissionDenied
    );
    // The owner of /d may snapshot into it; the copy is theirs, without setuid.
    let plan = snapshot(&mut t, &user(1000), "/d/f", "/d/f.snap");
    assert_eq!(plan.inodes, 1);
    let copy = t.ns.inode(t.ns.resolve("/d/f.snap").unwrap()).unwrap();
    assert_eq!((copy.uid, copy.gid, copy.mode), (1000, 1000, 0o755));
    t.check_replay();
}

#[test]
fn a_copy_whose_file_goes_away_releases_its_source() {
    let mut t = Recorder::new();
    t.file("/f", 1000, 0o4755, 1);
    snapshot(&mut t, &Cred::root(), "/f", "/s");
    let f = t.ns.resolve("/f").unwrap();
    let cow = t.ns.plan_copy_on_write(f, 0).unwrap();
    t.apply(cow);
    // The copy was never made; /f is deleted: the copy and its hold on chunk 1 go.
    let (op, orphan) =
        t.ns.plan_unlink_at(&Cred::root(), InodeId::ROOT, "f", false, 5)
            .unwrap();
    t.apply(op);
    let freed = t.apply(Op::RemoveOrphan {
        inode: orphan.unwrap(),
    });
    assert_eq!(
        freed,
        vec![ChunkId(2)],
        "only the copy: /s still needs chunk 1"
    );
    assert_eq!(t.ns.chunk_refs(ChunkId(1)), 1);
    // Truncating /s to 0 frees chunk 1 at last.
    let s = t.ns.resolve("/s").unwrap();
    let trunc = Op::Truncate {
        inode: s,
        size: 0,
        drop_from_index: 0,
        time_ns: 6,
    };
    assert_eq!(t.apply(trunc), vec![ChunkId(1)]);
    assert_eq!(t.ns.chunk_count(), 0);
    t.check_replay();
}

#[test]
fn a_format_2_checkpoint_loads_with_one_reference_per_chunk() {
    use rdfs_proto::ids::Epoch;
    use std::collections::HashMap;
    // The format-2 layout: chunk metadata without counts, no trash.
    #[derive(Serialize)]
    struct OldMeta {
        version: ChunkVersion,
        inode: InodeId,
        index: u64,
    }
    #[derive(Serialize)]
    struct OldNs {
        inodes: HashMap<InodeId, Inode>,
        chunks: HashMap<ChunkId, OldMeta>,
        next_inode: u64,
        next_chunk_id: u64,
        epoch: Epoch,
        orphans: BTreeSet<InodeId>,
    }
    let mut t = Recorder::new();
    let f = t.file("/f", 1000, 0o4755, 2);
    let old = OldNs {
        inodes: t.ns.inodes.clone(),
        chunks: t
            .ns
            .chunks
            .iter()
            .map(|(c, m)| {
                (
                    *c,
                    OldMeta {
                        version: m.version,
                        inode: m.inode,
                        index: m.index,
                    },
                )
            })
            .collect(),
        next_inode: t.ns.next_inode,
        next_chunk_id: t.ns.next_chunk_id,
        epoch: Epoch(3),
        orphans: BTreeSet::new(),
    };
    let image = super::recorder::legacy_checkpoint(2, 9, &old);
    let (seq, ns) = crate::checkpoint::decode(&image).unwrap();
    assert_eq!(seq, 9);
    assert_eq!(ns.epoch(), Epoch(3));
    assert_eq!(ns.resolve("/f").unwrap(), f);
    for c in [ChunkId(1), ChunkId(2)] {
        let m = ns.chunk(c).unwrap();
        assert_eq!((m.refs, m.copy_of, m.inode), (1, None, f));
    }
    // And the current format round-trips a namespace with shared chunks.
    snapshot(&mut t, &Cred::root(), "/f", "/g");
    let image = crate::checkpoint::encode(&t.ns, 12).unwrap();
    let (_, back) = crate::checkpoint::decode(&image).unwrap();
    assert_eq!(back, t.ns);
    assert_eq!(back.chunk_refs(ChunkId(1)), 2);
}
