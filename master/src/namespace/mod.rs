//! The namespace: a pure inode tree (no I/O). `plan_*` validate a request against the
//! current tree and produce the [`Op`]s that carry it out; [`Namespace::apply`] is the only
//! way the tree changes, both live and at replay.
//!
//! Invariants: the root (inode 1) is a directory and its own parent; a directory is named by
//! exactly one entry and its `nlink` is 2 + its subdirectories; any other inode is named by
//! `nlink` entries (hard links), and one with `nlink == 0` is an orphan (in `orphans`) kept
//! alive for open handles until `RemoveOrphan`; every chunk in a file's chunk list is in the
//! chunk table, and a table entry's `refs` counts the chunk lists (and pending copies) naming
//! it (snapshots share chunks, see `snapshot`); `next_inode` / `next_chunk_id` are
//! above every allocated id. `parent`/`name` of a hard-linked inode name one of its links
//! (used only to print paths).

pub mod ha_meta;
mod op;
pub mod perm;
mod posix;
#[cfg(test)]
mod posix_tests;
#[cfg(test)]
mod recorder;
mod snapshot;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
mod trash;
#[cfg(test)]
mod trash_tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rdfs_proto::ids::{ChunkId, ChunkVersion, Epoch, InodeId};
use rdfs_proto::path;
use rdfs_proto::ErrorCode;
use serde::{Deserialize, Serialize};

pub use op::{NewKind, Op};
pub use perm::Cred;
pub use posix::{CreatePlan, SetAttrPlan};
pub use snapshot::{SnapshotPlan, MAX_SNAPSHOT_INODES};
pub use trash::{RestoreWhich, TrashItem, TRASH_DIR};

/// Default permission bits of the root directory.
const ROOT_MODE: u32 = 0o755;
/// Permission bits a mode may carry.
pub const MODE_MASK: u32 = 0o7777;

/// A request or replay error: the stable code plus a detail for the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}: {code}")]
pub struct NsError {
    pub code: ErrorCode,
    pub detail: String,
}

impl NsError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        NsError {
            code,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File {
        size: u64,
        chunks: BTreeMap<u64, ChunkId>,
    },
    Dir {
        entries: BTreeMap<String, InodeId>,
    },
    Symlink {
        target: String,
    },
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub id: InodeId,
    /// The directory holding this inode's one entry (the root is its own parent).
    pub parent: InodeId,
    /// This inode's name in `parent` (empty for the root); kept for fsck paths.
    pub name: String,
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub atime_ns: i64,
    pub nlink: u32,
    pub replication: u32,
    /// Extended attributes, name → value.
    #[serde(default)]
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }
}

/// Which version of a chunk is current, who first owned it, and who references it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    pub version: ChunkVersion,
    /// The file (and index) the chunk was allocated for; after a snapshot other files may
    /// reference it too, and this owner may be gone (used for the replication factor and
    /// for naming the chunk in reports).
    pub inode: InodeId,
    pub index: u64,
    /// File chunk-list entries naming this chunk, plus copies whose `copy_of` names it.
    pub refs: u32,
    /// A copy-on-write copy not yet made on any replica: the chunk it copies.
    pub copy_of: Option<ChunkId>,
}

/// The chunk table entry as checkpoint formats 1 and 2 stored it (no sharing).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ChunkMetaV2 {
    version: ChunkVersion,
    inode: InodeId,
    index: u64,
}

impl From<ChunkMetaV2> for ChunkMeta {
    fn from(m: ChunkMetaV2) -> ChunkMeta {
        ChunkMeta {
            version: m.version,
            inode: m.inode,
            index: m.index,
            refs: 1,
            copy_of: None,
        }
    }
}

/// A trashed entry (`dfs rm`): whose it is, where it was, and when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    pub uid: u32,
    /// Absolute path it had.
    pub origin: String,
    pub deleted_ns: i64,
}

/// What an applied op changed that the rest of the master must react to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Chunks no file references any more: their replicas are garbage.
    pub freed_chunks: Vec<ChunkId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    inodes: HashMap<InodeId, Inode>,
    chunks: HashMap<ChunkId, ChunkMeta>,
    next_inode: u64,
    next_chunk_id: u64,
    epoch: Epoch,
    /// Inodes with no links left, kept for open handles.
    orphans: BTreeSet<InodeId>,
    /// Entries of the per-user trash directories, by inode.
    trash: BTreeMap<InodeId, TrashEntry>,
    /// Epoch history and witness membership (checkpoint format 4).
    ha: ha_meta::HaMeta,
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Namespace {
    /// An empty namespace: just the root directory.
    pub fn new() -> Self {
        let root = Inode {
            id: InodeId::ROOT,
            parent: InodeId::ROOT,
            name: String::new(),
            kind: NodeKind::Dir {
                entries: BTreeMap::new(),
            },
            mode: ROOT_MODE,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            atime_ns: 0,
            nlink: 2,
            replication: 0,
            xattrs: BTreeMap::new(),
        };
        Namespace {
            inodes: HashMap::from([(InodeId::ROOT, root)]),
            chunks: HashMap::new(),
            next_inode: InodeId::ROOT.0 + 1,
            // 0 is never allocated (chunk files are named by id).
            next_chunk_id: 1,
            epoch: ha_meta::FIRST_EPOCH,
            orphans: BTreeSet::new(),
            trash: BTreeMap::new(),
            ha: ha_meta::HaMeta::default(),
        }
    }

    pub fn next_inode(&self) -> InodeId {
        InodeId(self.next_inode)
    }
    pub fn next_chunk_id(&self) -> ChunkId {
        ChunkId(self.next_chunk_id)
    }
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
    /// Epoch history and witness membership.
    pub fn ha(&self) -> &ha_meta::HaMeta {
        &self.ha
    }
    pub fn inode(&self, id: InodeId) -> Option<&Inode> {
        self.inodes.get(&id)
    }
    pub fn chunk(&self, id: ChunkId) -> Option<&ChunkMeta> {
        self.chunks.get(&id)
    }
    pub fn chunks(&self) -> impl Iterator<Item = (&ChunkId, &ChunkMeta)> {
        self.chunks.iter()
    }
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
    /// (files, dirs) over the whole tree.
    pub fn counts(&self) -> (u64, u64) {
        let dirs = self.inodes.values().filter(|i| i.is_dir()).count() as u64;
        (self.inodes.len() as u64 - dirs, dirs)
    }

    /// The file inode with this id, or NotFound / IsADirectory.
    pub fn file(&self, id: InodeId) -> Result<&Inode, NsError> {
        let ino = self
            .inodes
            .get(&id)
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, format!("inode {id}")))?;
        match ino.kind {
            NodeKind::File { .. } => Ok(ino),
            NodeKind::Dir { .. } => {
                Err(NsError::new(ErrorCode::IsADirectory, format!("inode {id}")))
            }
            _ => Err(NsError::new(
                ErrorCode::InvalidArgument,
                format!("inode {id} is not a regular file"),
            )),
        }
    }

    /// Absolute path of an inode, rebuilt from parent links.
    pub fn path_of(&self, mut id: InodeId) -> String {
        let mut parts = Vec::new();
        while id != InodeId::ROOT {
            let Some(ino) = self.inodes.get(&id) else {
                break;
            };
            parts.push(ino.name.as_str());
            id = ino.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    fn dir_entries(&self, id: InodeId) -> Option<&BTreeMap<String, InodeId>> {
        match &self.inodes.get(&id)?.kind {
            NodeKind::Dir { entries } => Some(entries),
            _ => None,
        }
    }

    /// Looks `name` up in directory `dir`.
    pub fn child(&self, dir: InodeId, name: &str) -> Option<InodeId> {
        self.dir_entries(dir)?.get(name).copied()
    }

    /// Entries of a directory strictly after `start_after`, at most `limit`, sorted by name;
    /// the flag says whether more follow.
    pub fn list(
        &self,
        dir: InodeId,
        start_after: &str,
        limit: usize,
    ) -> Result<ListPage<'_>, NsError> {
        let entries = self
            .dir_entries(dir)
            .ok_or_else(|| NsError::new(ErrorCode::NotADirectory, "list"))?;
        let range = entries.range::<str, _>((
            std::ops::Bound::Excluded(start_after),
            std::ops::Bound::Unbounded,
        ));
        let mut out = Vec::new();
        let mut more = false;
        for (name, id) in range {
            // The trash is hidden from listings of the root (it can still be looked up).
            if dir == InodeId::ROOT && name == trash::TRASH_DIR {
                continue;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            if let Some(ino) = self.inodes.get(id) {
                out.push((name.as_str(), ino));
            }
        }
        Ok((out, more))
    }

    /// Resolves an absolute path to an inode.
    pub fn resolve(&self, p: &str) -> Result<InodeId, NsError> {
        let parts = path::components(p).map_err(|c| NsError::new(c, "path"))?;
        let mut cur = InodeId::ROOT;
        for part in parts {
            let entries = self
                .dir_entries(cur)
                .ok_or_else(|| NsError::new(ErrorCode::NotADirectory, "path component"))?;
            cur = *entries
                .get(part)
                .ok_or_else(|| NsError::new(ErrorCode::NotFound, "path"))?;
        }
        Ok(cur)
    }

    /// Resolves the parent directory of a non-root path; returns it and the last name.
    fn resolve_parent<'p>(&self, p: &'p str) -> Result<(InodeId, &'p str), NsError> {
        let parts = path::components(p).map_err(|c| NsError::new(c, "path"))?;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(NsError::new(ErrorCode::InvalidArgument, "the root"));
        };
        let mut cur = InodeId::ROOT;
        for part in dirs {
            let entries = self
                .dir_entries(cur)
                .ok_or_else(|| NsError::new(ErrorCode::NotADirectory, "path component"))?;
            cur = *entries
                .get(*part)
                .ok_or_else(|| NsError::new(ErrorCode::NotFound, "parent directory"))?;
        }
        if self.dir_entries(cur).is_none() {
            return Err(NsError::new(ErrorCode::NotADirectory, "parent"));
        }
        Ok((cur, last))
    }

    /// Whether `id` is `ancestor` or lies inside its subtree.
    fn is_within(&self, mut id: InodeId, ancestor: InodeId) -> bool {
        loop {
            if id == ancestor {
                return true;
            }
            if id == InodeId::ROOT {
                return false;
            }
            match self.inodes.get(&id) {
                Some(ino) => id = ino.parent,
                None => return false,
            }
        }
    }

    pub fn plan_mkdir(&self, p: &str, req: &NewNode, parents: bool) -> Result<Vec<Op>, NsError> {
        let parts = path::components(p).map_err(|c| NsError::new(c, "path"))?;
        if parts.is_empty() {
            return if parents {
                Ok(vec![])
            } else {
                Err(NsError::new(ErrorCode::AlreadyExists, "the root"))
            };
        }
        let mut ops = Vec::new();
        let mut cur = Some(InodeId::ROOT);
        let mut next = self.next_inode;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let found = match cur {
                Some(dir) => match self.dir_entries(dir) {
                    Some(entries) => entries.get(*part).copied(),
                    None => return Err(NsError::new(ErrorCode::NotADirectory, "path component")),
                },
                None => None,
            };
            match found {
                Some(_) if last && !parents => {
                    return Err(NsError::new(ErrorCode::AlreadyExists, "mkdir"))
                }
                Some(id) if last && !self.inodes.get(&id).is_some_and(Inode::is_dir) => {
                    return Err(NsError::new(ErrorCode::AlreadyExists, "mkdir"))
                }
                Some(id) => cur = Some(id),
                None if !last && !parents => {
                    return Err(NsError::new(ErrorCode::NotFound, "parent directory"))
                }
                None => {
                    let parent = cur.unwrap_or(InodeId(next - 1));
                    ops.push(Op::Mkdir {
                        parent,
                        name: (*part).to_string(),
                        inode: InodeId(next),
                        mode: req.mode & MODE_MASK,
                        uid: req.uid,
                        gid: req.gid,
                        time_ns: req.time_ns,
                    });
                    next += 1;
                    cur = None;
                }
            }
        }
        Ok(ops)
    }

    pub fn plan_create(&self, p: &str, req: &NewNode, overwrite: bool) -> Result<Op, NsError> {
        let (parent, name) = self.resolve_parent(p)?;
        let inode = match self.child(parent, name) {
            None => self.next_inode(),
            Some(id) => {
                let existing = self
                    .inodes
                    .get(&id)
                    .ok_or_else(|| NsError::new(ErrorCode::Internal, "dangling entry"))?;
                if existing.is_dir() {
                    return Err(NsError::new(ErrorCode::IsADirectory, "create"));
                }
                if !overwrite {
                    return Err(NsError::new(ErrorCode::AlreadyExists, "create"));
                }
                id
            }
        };
        Ok(Op::Create {
            parent,
            name: name.to_string(),
            inode,
            mode: req.mode & MODE_MASK,
            uid: req.uid,
            gid: req.gid,
            replication: req.replication,
            time_ns: req.time_ns,
        })
    }

    pub fn plan_delete(&self, p: &str, recursive: bool, time_ns: i64) -> Result<Op, NsError> {
        let (parent, name) = self.resolve_parent(p)?;
        let id = self
            .child(parent, name)
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, "delete"))?;
        if let Some(entries) = self.dir_entries(id) {
            if !entries.is_empty() && !recursive {
                return Err(NsError::new(ErrorCode::DirectoryNotEmpty, "delete"));
            }
        }
        Ok(Op::Delete {
            parent,
            name: name.to_string(),
            time_ns,
        })
    }

    /// Plans a rename; `None` when source and destination are already the same entry.
    pub fn plan_rename(
        &self,
        src: &str,
        dst: &str,
        no_replace: bool,
        time_ns: i64,
    ) -> Result<Option<Op>, NsError> {
        let (src_parent, src_name) = self.resolve_parent(src)?;
        let src_id = self
            .child(src_parent, src_name)
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, "rename source"))?;
        let (dst_parent, dst_name) = self.resolve_parent(dst)?;
        let src_is_dir = self.dir_entries(src_id).is_some();
        if src_is_dir && self.is_within(dst_parent, src_id) {
            return Err(NsError::new(
                ErrorCode::InvalidArgument,
                "cannot move a directory into its own subtree",
            ));
        }
        if let Some(dst_id) = self.child(dst_parent, dst_name) {
            if dst_id == src_id {
                return Ok(None);
            }
            if no_replace {
                return Err(NsError::new(ErrorCode::AlreadyExists, "rename destination"));
            }
            match (src_is_dir, self.dir_entries(dst_id)) {
                (false, Some(_)) => {
                    return Err(NsError::new(ErrorCode::IsADirectory, "rename destination"))
                }
                (true, None) => {
                    return Err(NsError::new(ErrorCode::NotADirectory, "rename destination"))
                }
                (true, Some(entries)) if !entries.is_empty() => {
                    return Err(NsError::new(
                        ErrorCode::DirectoryNotEmpty,
                        "rename destination",
                    ))
                }
                _ => {}
            }
        }
        Ok(Some(Op::Rename {
            src_parent,
            src_name: src_name.to_string(),
            dst_parent,
            dst_name: dst_name.to_string(),
            time_ns,
        }))
    }

    /// Applies one op. Plans were validated against the same state, so an error here means
    /// a corrupt or out-of-order log at replay (or a bug live).
    pub fn apply(&mut self, op: &Op) -> Result<Applied, NsError> {
        match op {
            Op::ClusterInit { epoch } => {
                self.epoch = *epoch;
                Ok(Applied::default())
            }
            Op::Mkdir {
                parent,
                name,
                inode,
                mode,
                uid,
                gid,
                time_ns,
            } => {
                let kind = NodeKind::Dir {
                    entries: BTreeMap::new(),
                };
                let attrs = (*mode, *uid, *gid, 0, *time_ns);
                self.insert_node(*parent, name, *inode, kind, attrs)?;
                Ok(Applied::default())
            }
            Op::Create {
                parent,
                name,
                inode,
                mode,
                uid,
                gid,
                replication,
                time_ns,
            } => {
                if self.child(*parent, name) == Some(*inode) {
                    return self.truncate(*inode, *time_ns);
                }
                let kind = NodeKind::File {
                    size: 0,
                    chunks: BTreeMap::new(),
                };
                let attrs = (*mode, *uid, *gid, *replication, *time_ns);
                self.insert_node(*parent, name, *inode, kind, attrs)?;
                Ok(Applied::default())
            }
            Op::Delete {
                parent,
                name,
                time_ns,
            } => self.delete_entry(*parent, name, *time_ns),
            Op::Rename {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                time_ns,
            } => self.rename(*src_parent, src_name, *dst_parent, dst_name, *time_ns),
            Op::AllocateChunk {
                inode,
                index,
                chunk_id,
                version,
            } => self.allocate_chunk(*inode, *index, *chunk_id, *version),
            Op::SetChunkVersion { chunk_id, version } => {
                let meta = self.chunks.get_mut(chunk_id).ok_or_else(|| {
                    NsError::new(ErrorCode::NoSuchChunk, format!("chunk {chunk_id}"))
                })?;
                meta.version = *version;
                Ok(Applied::default())
            }
            Op::NewEpoch { epoch, start_seq } => {
                if *epoch <= self.epoch {
                    return Err(NsError::new(
                        ErrorCode::StaleEpoch,
                        format!("new epoch {epoch} is not above epoch {}", self.epoch),
                    ));
                }
                self.epoch = *epoch;
                self.ha.epochs.push((*epoch, *start_seq));
                Ok(Applied::default())
            }
            Op::AddWitness { node_id, addr } => {
                self.ha.witnesses.insert(node_id.clone(), addr.clone());
                Ok(Applied::default())
            }
            // Answers live in the master's retry cache, not in the namespace.
            Op::RequestDone { .. } => Ok(Applied::default()),
            Op::CommitWrite {
                inode,
                end,
                mtime_ns,
            } => {
                let ino = self.file_mut(*inode)?;
                if let NodeKind::File { size, .. } = &mut ino.kind {
                    *size = (*size).max(*end);
                }
                ino.mtime_ns = *mtime_ns;
                ino.ctime_ns = *mtime_ns;
                Ok(Applied::default())
            }
            Op::SetReplication {
                inode,
                replication,
                time_ns,
            } => {
                let ino = self.file_mut(*inode)?;
                ino.replication = *replication;
                ino.ctime_ns = *time_ns;
                Ok(Applied::default())
            }
            Op::Snapshot {
                src,
                dst_parent,
                dst_name,
                first_inode,
                owner,
                time_ns,
            } => self.apply_snapshot(*src, *dst_parent, dst_name, *first_inode, *owner, *time_ns),
            Op::CopyOnWrite {
                inode,
                index,
                from,
                to,
                version,
            } => self.apply_copy_on_write(*inode, *index, *from, *to, *version),
            Op::CopyDone { chunk } => self.apply_copy_done(*chunk),
            Op::MoveToTrash {
                parent,
                name,
                user_dir,
                entry,
                uid,
                origin,
                time_ns,
            } => {
                let trashed = TrashEntry {
                    uid: *uid,
                    origin: origin.clone(),
                    deleted_ns: *time_ns,
                };
                self.apply_move_to_trash(*parent, name, *user_dir, entry, trashed, *time_ns)
            }
            Op::Untrash {
                user_dir,
                entry,
                dst_parent,
                dst_name,
                time_ns,
            } => self.apply_untrash(*user_dir, entry, *dst_parent, dst_name, *time_ns),
            other => self.apply_posix(other),
        }
    }

    fn file_mut(&mut self, id: InodeId) -> Result<&mut Inode, NsError> {
        match self.inodes.get_mut(&id) {
            Some(ino) if matches!(ino.kind, NodeKind::File { .. }) => Ok(ino),
            Some(ino) if ino.is_dir() => {
                Err(NsError::new(ErrorCode::IsADirectory, format!("inode {id}")))
            }
            Some(_) => Err(NsError::new(
                ErrorCode::InvalidArgument,
                format!("inode {id} is not a regular file"),
            )),
            None => Err(NsError::new(ErrorCode::NotFound, format!("inode {id}"))),
        }
    }

    fn entries_mut(&mut self, dir: InodeId) -> Result<&mut BTreeMap<String, InodeId>, NsError> {
        match self.inodes.get_mut(&dir).map(|i| &mut i.kind) {
            Some(NodeKind::Dir { entries }) => Ok(entries),
            Some(_) => Err(NsError::new(
                ErrorCode::NotADirectory,
                format!("inode {dir}"),
            )),
            None => Err(NsError::new(ErrorCode::NotFound, format!("inode {dir}"))),
        }
    }

    fn touch_dir(&mut self, dir: InodeId, time_ns: i64) {
        if let Some(d) = self.inodes.get_mut(&dir) {
            d.mtime_ns = time_ns;
            d.ctime_ns = time_ns;
        }
    }

    /// Inserts a new inode under `parent`; `attrs` = (mode, uid, gid, replication, time).
    fn insert_node(
        &mut self,
        parent: InodeId,
        name: &str,
        id: InodeId,
        kind: NodeKind,
        attrs: (u32, u32, u32, u32, i64),
    ) -> Result<(), NsError> {
        path::validate_name(name).map_err(|c| NsError::new(c, "name"))?;
        if id.0 < self.next_inode || self.inodes.contains_key(&id) {
            return Err(NsError::new(
                ErrorCode::Internal,
                format!("inode {id} below next id {}", self.next_inode),
            ));
        }
        let entries = self.entries_mut(parent)?;
        if entries.contains_key(name) {
            return Err(NsError::new(ErrorCode::AlreadyExists, name.to_string()));
        }
        entries.insert(name.to_string(), id);
        let (mode, uid, gid, replication, time_ns) = attrs;
        let is_dir = matches!(kind, NodeKind::Dir { .. });
        let nlink = if is_dir { 2 } else { 1 };
        self.inodes.insert(
            id,
            Inode {
                id,
                parent,
                name: name.to_string(),
                kind,
                mode,
                uid,
                gid,
                mtime_ns: time_ns,
                ctime_ns: time_ns,
                atime_ns: time_ns,
                nlink,
                replication,
                xattrs: BTreeMap::new(),
            },
        );
        self.next_inode = id.0 + 1;
        if is_dir {
            self.add_links(parent, 1);
        }
        self.touch_dir(parent, time_ns);
        Ok(())
    }

    fn truncate(&mut self, id: InodeId, time_ns: i64) -> Result<Applied, NsError> {
        let ino = self.file_mut(id)?;
        ino.mtime_ns = time_ns;
        ino.ctime_ns = time_ns;
        let dropped = match &mut ino.kind {
            NodeKind::File { size, chunks } => {
                *size = 0;
                std::mem::take(chunks).into_values().collect::<Vec<_>>()
            }
            _ => Vec::new(),
        };
        Ok(Applied {
            freed_chunks: self.release_chunks(dropped),
        })
    }

    /// Removes one link to `root` (already taken out of its parent's entries) and, for a
    /// directory, its whole subtree: directories go, other inodes lose one link per entry
    /// and go when none is left (hard links elsewhere keep them). Returns the freed chunks.
    fn drop_subtree(&mut self, root: InodeId) -> Vec<ChunkId> {
        let mut freed = Vec::new();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            let Some(ino) = self.inodes.get_mut(&id) else {
                continue;
            };
            if !ino.is_dir() && ino.nlink > 1 {
                ino.nlink -= 1;
                continue;
            }
            let Some(ino) = self.inodes.remove(&id) else {
                continue;
            };
            self.orphans.remove(&id);
            self.trash.remove(&id);
            match ino.kind {
                NodeKind::Dir { entries } => stack.extend(entries.into_values()),
                NodeKind::File { chunks, .. } => freed.extend(chunks.into_values()),
                NodeKind::Symlink { .. } | NodeKind::Fifo => {}
            }
        }
        self.release_chunks(freed)
    }

    fn delete_entry(
        &mut self,
        parent: InodeId,
        name: &str,
        time_ns: i64,
    ) -> Result<Applied, NsError> {
        let id = self
            .entries_mut(parent)?
            .remove(name)
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, name.to_string()))?;
        // Out of the trash whatever happens to the inode (a hard link elsewhere keeps it).
        self.trash.remove(&id);
        if self.inodes.get(&id).is_some_and(Inode::is_dir) {
            self.add_links(parent, -1);
        }
        self.touch_dir(parent, time_ns);
        Ok(Applied {
            freed_chunks: self.drop_subtree(id),
        })
    }

    /// The original path rename: like `RenameAt`, but a replaced inode left without links
    /// goes at once (it predates open-handle tracking).
    fn rename(
        &mut self,
        src_parent: InodeId,
        src_name: &str,
        dst_parent: InodeId,
        dst_name: &str,
        time_ns: i64,
    ) -> Result<Applied, NsError> {
        let replaced = self.child(dst_parent, dst_name);
        let mut applied = self.rename_at(src_parent, src_name, dst_parent, dst_name, time_ns)?;
        if let Some(old) = replaced {
            if self.orphans.contains(&old) {
                applied
                    .freed_chunks
                    .extend(self.remove_orphan(old)?.freed_chunks);
            }
        }
        Ok(applied)
    }

    fn allocate_chunk(
        &mut self,
        inode: InodeId,
        index: u64,
        chunk_id: ChunkId,
        version: ChunkVersion,
    ) -> Result<Applied, NsError> {
        if chunk_id.0 < self.next_chunk_id || self.chunks.contains_key(&chunk_id) {
            return Err(NsError::new(
                ErrorCode::Internal,
                format!("chunk {chunk_id} below next id {}", self.next_chunk_id),
            ));
        }
        let ino = self.file_mut(inode)?;
        let NodeKind::File { chunks, .. } = &mut ino.kind else {
            return Err(NsError::new(
                ErrorCode::IsADirectory,
                format!("inode {inode}"),
            ));
        };
        if chunks.contains_key(&index) {
            return Err(NsError::new(
                ErrorCode::AlreadyExists,
                format!("inode {inode} chunk index {index}"),
            ));
        }
        chunks.insert(index, chunk_id);
        self.chunks.insert(
            chunk_id,
            ChunkMeta {
                version,
                inode,
                index,
                refs: 1,
                copy_of: None,
            },
        );
        self.next_chunk_id = chunk_id.0 + 1;
        Ok(Applied::default())
    }
}

/// One page of a directory listing: (name, inode) in name order, and whether more follow.
pub type ListPage<'a> = (Vec<(&'a str, &'a Inode)>, bool);

/// Attributes a new file or directory is created with.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Files only; 0 is replaced by the cluster default before planning.
    pub replication: u32,
    pub time_ns: i64,
}

/// An inode as checkpoint format 1 stored it (before xattrs).
#[derive(Debug, Deserialize)]
struct InodeV1 {
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

/// The namespace as checkpoint format 1 stored it (before hard links, xattrs and orphans).
/// Its `NodeKind` had only `File` and `Dir`, which keep their variant indexes.
#[derive(Debug, Deserialize)]
pub struct NamespaceV1 {
    inodes: HashMap<InodeId, InodeV1>,
    chunks: HashMap<ChunkId, ChunkMetaV2>,
    next_inode: u64,
    next_chunk_id: u64,
    epoch: Epoch,
}

/// The namespace as checkpoint format 2 stored it (before shared chunks and the trash).
#[derive(Debug, Deserialize)]
pub struct NamespaceV2 {
    inodes: HashMap<InodeId, Inode>,
    chunks: HashMap<ChunkId, ChunkMetaV2>,
    next_inode: u64,
    next_chunk_id: u64,
    epoch: Epoch,
    orphans: BTreeSet<InodeId>,
}

impl From<NamespaceV2> for Namespace {
    fn from(v2: NamespaceV2) -> Namespace {
        let mut ns = Namespace {
            inodes: v2.inodes,
            chunks: v2.chunks.into_iter().map(|(c, m)| (c, m.into())).collect(),
            next_inode: v2.next_inode,
            next_chunk_id: v2.next_chunk_id,
            epoch: v2.epoch,
            orphans: v2.orphans,
            trash: BTreeMap::new(),
            ha: ha_meta::HaMeta::default(),
        };
        ns.recount_refs();
        ns
    }
}

/// The namespace as checkpoint format 3 stored it (before the HA metadata).
#[derive(Debug, Deserialize)]
pub struct NamespaceV3 {
    inodes: HashMap<InodeId, Inode>,
    chunks: HashMap<ChunkId, ChunkMeta>,
    next_inode: u64,
    next_chunk_id: u64,
    epoch: Epoch,
    orphans: BTreeSet<InodeId>,
    trash: BTreeMap<InodeId, TrashEntry>,
}

impl From<NamespaceV3> for Namespace {
    fn from(v3: NamespaceV3) -> Namespace {
        // Format 3 predates failover: the epoch never moved past its first value, so the
        // history is just the first epoch, and nobody is a witness yet.
        Namespace {
            inodes: v3.inodes,
            chunks: v3.chunks,
            next_inode: v3.next_inode,
            next_chunk_id: v3.next_chunk_id,
            epoch: v3.epoch,
            orphans: v3.orphans,
            trash: v3.trash,
            ha: ha_meta::HaMeta::default(),
        }
    }
}

impl From<NamespaceV1> for Namespace {
    fn from(v1: NamespaceV1) -> Namespace {
        let mut inodes: HashMap<InodeId, Inode> = v1
            .inodes
            .into_iter()
            .map(|(id, i)| {
                let ino = Inode {
                    id: i.id,
                    parent: i.parent,
                    name: i.name,
                    kind: i.kind,
                    mode: i.mode,
                    uid: i.uid,
                    gid: i.gid,
                    mtime_ns: i.mtime_ns,
                    ctime_ns: i.ctime_ns,
                    atime_ns: i.atime_ns,
                    nlink: i.nlink,
                    replication: i.replication,
                    xattrs: BTreeMap::new(),
                };
                (id, ino)
            })
            .collect();
        // Format 1 counted every directory as 2 links; now it is 2 + subdirectories.
        let subdirs: Vec<(InodeId, u32)> = inodes
            .values()
            .filter_map(|i| match &i.kind {
                NodeKind::Dir { entries } => {
                    let n = entries
                        .values()
                        .filter(|c| inodes.get(c).is_some_and(Inode::is_dir))
                        .count();
                    Some((i.id, 2 + n as u32))
                }
                _ => None,
            })
            .collect();
        for (id, n) in subdirs {
            if let Some(d) = inodes.get_mut(&id) {
                d.nlink = n;
            }
        }
        let mut ns = Namespace {
            inodes,
            chunks: v1.chunks.into_iter().map(|(c, m)| (c, m.into())).collect(),
            next_inode: v1.next_inode,
            next_chunk_id: v1.next_chunk_id,
            epoch: v1.epoch,
            orphans: BTreeSet::new(),
            trash: BTreeMap::new(),
            ha: ha_meta::HaMeta::default(),
        };
        ns.recount_refs();
        ns
    }
}
