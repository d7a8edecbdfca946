//! Copy-on-write snapshots in the namespace: shared chunks with reference counts.
//!
//! A snapshot duplicates the metadata of a file or a directory tree (new inodes, the same
//! chunk ids) and raises the reference count of every chunk it shares. Nothing is copied on
//! the chunkservers until a shared chunk is written: then `CopyOnWrite` points the writer's
//! file at a new chunk id whose replicas are local copies of the shared one, and the write
//! goes to the copy. The copy's metadata remembers its source (`copy_of`) — holding one
//! reference on it — until `CopyDone` records that a replica of the copy exists; a copy that
//! failed everywhere can thus be made again, even after a master restart.
//!
//! Invariants: a chunk's `refs` is the number of file chunk-list entries naming it plus the
//! number of copies whose `copy_of` names it; a chunk leaves the table exactly when `refs`
//! reaches 0, and then its own `copy_of` source loses a reference.

use std::collections::BTreeMap;

use rdfs_proto::ids::{ChunkId, ChunkVersion, InodeId};
use rdfs_proto::path;
use rdfs_proto::ErrorCode;

use super::perm::{Cred, R, S_ISGID, S_ISUID, X};
use super::{Applied, ChunkMeta, Inode, Namespace, NodeKind, NsError, Op};

/// Most inodes one snapshot may copy (it is applied under the master's state lock).
pub const MAX_SNAPSHOT_INODES: usize = 1_000_000;

/// What a planned snapshot will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPlan {
    pub op: Op,
    /// Inodes the snapshot creates.
    pub inodes: u64,
    /// Distinct chunks the snapshot shares (their leases must be revoked before it is logged).
    pub chunks: Vec<ChunkId>,
}

impl Namespace {
    /// Drops one reference to each chunk; returns those no file and no pending copy
    /// references any more (removed from the table; their replicas are garbage).
    pub(super) fn release_chunks(&mut self, chunks: Vec<ChunkId>) -> Vec<ChunkId> {
        let mut freed = Vec::new();
        let mut stack = chunks;
        while let Some(c) = stack.pop() {
            let Some(meta) = self.chunks.get_mut(&c) else {
                continue;
            };
            meta.refs = meta.refs.saturating_sub(1);
            if meta.refs == 0 {
                let source = meta.copy_of;
                self.chunks.remove(&c);
                freed.push(c);
                stack.extend(source);
            }
        }
        freed
    }

    /// Every chunk in the subtree rooted at `root` (distinct, in id order) and its inode count.
    pub fn subtree_chunks(&self, root: InodeId) -> (Vec<ChunkId>, u64) {
        let mut chunks = std::collections::BTreeSet::new();
        let mut count = 0u64;
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            let Some(ino) = self.inodes.get(&id) else {
                continue;
            };
            count += 1;
            match &ino.kind {
                NodeKind::Dir { entries } => stack.extend(entries.values()),
                NodeKind::File { chunks: c, .. } => chunks.extend(c.values()),
                NodeKind::Symlink { .. } | NodeKind::Fifo => {}
            }
        }
        (chunks.into_iter().collect(), count)
    }

    /// Plans `snapshot SRC DST`: DST must not exist, its parent must be a directory the
    /// caller may write; the caller must be able to read everything it copies (root copies
    /// anything and keeps owners; others get copies they own, without set-id bits).
    pub fn plan_snapshot(
        &self,
        cred: &Cred,
        src: &str,
        dst: &str,
        time_ns: i64,
    ) -> Result<SnapshotPlan, NsError> {
        let src_id = self.resolve_as(src, cred)?;
        if src_id == InodeId::ROOT {
            return Err(NsError::new(
                ErrorCode::InvalidArgument,
                "cannot snapshot the root into itself",
            ));
        }
        let at_dst = |e: NsError| NsError::new(e.code, format!("destination {dst}: {}", e.detail));
        let (dst_parent, dst_name) = self.resolve_parent_as(dst, cred).map_err(at_dst)?;
        path::validate_name(dst_name).map_err(|c| at_dst(NsError::new(c, "name")))?;
        if self.child(dst_parent, dst_name).is_some() {
            return Err(at_dst(NsError::new(ErrorCode::AlreadyExists, "exists")));
        }
        if self.inodes.get(&src_id).is_some_and(Inode::is_dir) && self.is_within(dst_parent, src_id)
        {
            return Err(NsError::new(
                ErrorCode::InvalidArgument,
                "cannot snapshot a directory into its own subtree",
            ));
        }
        self.check_dir_write(dst_parent, cred).map_err(at_dst)?;
        self.check_subtree_read(src_id, cred)?;
        let (chunks, inodes) = self.subtree_chunks(src_id);
        if inodes as usize > MAX_SNAPSHOT_INODES {
            return Err(NsError::new(
                ErrorCode::InvalidArgument,
                format!("snapshot of {inodes} inodes exceeds the limit of {MAX_SNAPSHOT_INODES}"),
            ));
        }
        let owner = (!cred.is_root()).then_some((cred.uid, cred.gid));
        Ok(SnapshotPlan {
            op: Op::Snapshot {
                src: src_id,
                dst_parent,
                dst_name: dst_name.to_string(),
                first_inode: self.next_inode(),
                owner,
                time_ns,
            },
            inodes,
            chunks,
        })
    }

    /// Read on every file, read + search on every directory of the subtree (root: always).
    fn check_subtree_read(&self, root: InodeId, cred: &Cred) -> Result<(), NsError> {
        if cred.is_root() {
            return Ok(());
        }
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            let ino = self.get(id)?;
            match &ino.kind {
                NodeKind::Dir { entries } => {
                    cred.check(ino, R | X, "snapshot directory")?;
                    stack.extend(entries.values());
                }
                NodeKind::File { .. } => cred.check(ino, R, "snapshot file")?,
                NodeKind::Symlink { .. } | NodeKind::Fifo => {}
            }
        }
        Ok(())
    }

    /// Applies `Snapshot`: copies the subtree of `src` as `dst_name` in `dst_parent`, new
    /// inode ids from `first_inode` in a fixed order (depth first, entries by name).
    pub(super) fn apply_snapshot(
        &mut self,
        src: InodeId,
        dst_parent: InodeId,
        dst_name: &str,
        first_inode: InodeId,
        owner: Option<(u32, u32)>,
        time_ns: i64,
    ) -> Result<Applied, NsError> {
        path::validate_name(dst_name).map_err(|c| NsError::new(c, "snapshot name"))?;
        if first_inode.0 < self.next_inode {
            return Err(NsError::new(
                ErrorCode::Internal,
                format!(
                    "snapshot inode {first_inode} below next id {}",
                    self.next_inode
                ),
            ));
        }
        if self.child(dst_parent, dst_name).is_some() {
            return Err(NsError::new(ErrorCode::AlreadyExists, dst_name.to_string()));
        }
        self.entries_mut(dst_parent)?;
        let src_is_dir = self.get(src)?.is_dir();
        let mut next = first_inode.0;
        // (source inode, new parent, name, new id); children are pushed in reverse name
        // order so they are numbered in name order.
        let mut stack = vec![(src, dst_parent, dst_name.to_string(), InodeId(next))];
        next += 1;
        let mut shared = Vec::new();
        while let Some((from, parent, name, id)) = stack.pop() {
            let orig = self.get(from)?;
            let mut copy = Inode {
                id,
                parent,
                name,
                kind: orig.kind.clone(),
                nlink: 1,
                ctime_ns: time_ns,
                ..orig.clone()
            };
            match &mut copy.kind {
                NodeKind::Dir { entries } => {
                    let children: Vec<(String, InodeId)> =
                        std::mem::take(entries).into_iter().collect();
                    let mut subdirs = 0;
                    let mut new_entries = BTreeMap::new();
                    let mut pending = Vec::new();
                    for (child_name, child) in children {
                        let child_id = InodeId(next);
                        next += 1;
                        if self.inodes.get(&child).is_some_and(Inode::is_dir) {
                            subdirs += 1;
                        }
                        new_entries.insert(child_name.clone(), child_id);
                        pending.push((child, id, child_name, child_id));
                    }
                    *entries = new_entries;
                    copy.nlink = 2 + subdirs;
                    stack.extend(pending.into_iter().rev());
                }
                NodeKind::File { chunks, .. } => shared.extend(chunks.values().copied()),
                NodeKind::Symlink { .. } | NodeKind::Fifo => {}
            }
            if let Some((uid, gid)) = owner {
                copy.uid = uid;
                copy.gid = gid;
                if !copy.is_dir() {
                    copy.mode &= !(S_ISUID | S_ISGID);
                }
            }
            self.inodes.insert(id, copy);
        }
        for c in &shared {
            let meta = self.chunks.get_mut(c).ok_or_else(|| {
                NsError::new(
                    ErrorCode::Internal,
                    format!("snapshot of missing chunk {c}"),
                )
            })?;
            meta.refs += 1;
        }
        self.entries_mut(dst_parent)?
            .insert(dst_name.to_string(), InodeId(first_inode.0));
        if src_is_dir {
            self.add_links(dst_parent, 1);
        }
        self.touch_dir(dst_parent, time_ns);
        self.next_inode = next;
        Ok(Applied::default())
    }

    /// Plans the first write to a shared chunk of file `inode`: a new chunk `to` (version 1)
    /// that will be a local copy of `from` on its replicas.
    pub fn plan_copy_on_write(&self, inode: InodeId, index: u64) -> Result<Op, NsError> {
        let from = match &self.file(inode)?.kind {
            NodeKind::File { chunks, .. } => chunks.get(&index).copied(),
            _ => None,
        }
        .ok_or_else(|| {
            NsError::new(
                ErrorCode::NoSuchChunk,
                format!("inode {inode} index {index}"),
            )
        })?;
        Ok(Op::CopyOnWrite {
            inode,
            index,
            from,
            to: self.next_chunk_id(),
            version: ChunkVersion(1),
        })
    }

    pub(super) fn apply_copy_on_write(
        &mut self,
        inode: InodeId,
        index: u64,
        from: ChunkId,
        to: ChunkId,
        version: ChunkVersion,
    ) -> Result<Applied, NsError> {
        if to.0 < self.next_chunk_id || self.chunks.contains_key(&to) {
            return Err(NsError::new(
                ErrorCode::Internal,
                format!("copy chunk {to} below next id {}", self.next_chunk_id),
            ));
        }
        if !self.chunks.contains_key(&from) {
            return Err(NsError::new(
                ErrorCode::NoSuchChunk,
                format!("chunk {from}"),
            ));
        }
        let ino = self.file_mut(inode)?;
        let NodeKind::File { chunks, .. } = &mut ino.kind else {
            return Err(NsError::new(
                ErrorCode::Internal,
                "copy-on-write of a non-file",
            ));
        };
        match chunks.get_mut(&index) {
            Some(c) if *c == from => *c = to,
            _ => {
                return Err(NsError::new(
                    ErrorCode::Internal,
                    format!("inode {inode} index {index} does not hold chunk {from}"),
                ))
            }
        }
        // The file's reference on `from` becomes the pending copy's: `from.refs` is unchanged.
        self.chunks.insert(
            to,
            ChunkMeta {
                version,
                inode,
                index,
                refs: 1,
                copy_of: Some(from),
            },
        );
        self.next_chunk_id = to.0 + 1;
        Ok(Applied::default())
    }

    /// `CopyDone`: a replica of the copy exists; the copy lets go of its source.
    pub(super) fn apply_copy_done(&mut self, chunk: ChunkId) -> Result<Applied, NsError> {
        let meta = self
            .chunks
            .get_mut(&chunk)
            .ok_or_else(|| NsError::new(ErrorCode::NoSuchChunk, format!("chunk {chunk}")))?;
        let Some(source) = meta.copy_of.take() else {
            return Ok(Applied::default());
        };
        Ok(Applied {
            freed_chunks: self.release_chunks(vec![source]),
        })
    }

    /// Recomputes every chunk's reference count from the file chunk lists and pending copies
    /// (used when loading formats that had no counts). A chunk nobody references keeps one
    /// reference: never free what an old image might still need.
    pub(super) fn recount_refs(&mut self) {
        let mut counts: std::collections::HashMap<ChunkId, u32> = Default::default();
        for ino in self.inodes.values() {
            if let NodeKind::File { chunks, .. } = &ino.kind {
                for c in chunks.values() {
                    *counts.entry(*c).or_default() += 1;
                }
            }
        }
        let sources: Vec<ChunkId> = self.chunks.values().filter_map(|m| m.copy_of).collect();
        for s in sources {
            *counts.entry(s).or_default() += 1;
        }
        for (c, meta) in self.chunks.iter_mut() {
            meta.refs = counts.get(c).copied().unwrap_or(0).max(1);
        }
    }

    /// A chunk's reference count (0 when unknown).
    pub fn chunk_refs(&self, chunk: ChunkId) -> u32 {
        self.chunks.get(&chunk).map_or(0, |m| m.refs)
    }
}
