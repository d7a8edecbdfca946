//! The operation-log record payload. Every decided value (inode ids, chunk ids, times) is
//! inside the op so that replay is deterministic. Variants are never reordered or removed:
//! bincode encodes the variant index.

use rdfs_proto::ids::{ChunkId, ChunkVersion, Epoch, InodeId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Written once when a data directory is initialised; fixes the starting epoch.
    ClusterInit { epoch: Epoch },
    Mkdir {
        parent: InodeId,
        name: String,
        inode: InodeId,
        mode: u32,
        uid: u32,
        gid: u32,
        time_ns: i64,
    },
    /// Creates a new file, or (when `inode` names the existing file at that entry)
    /// truncates it to 0: its chunks are dropped.
    Create {
        parent: InodeId,
        name: String,
        inode: InodeId,
        mode: u32,
        uid: u32,
        gid: u32,
        replication: u32,
        time_ns: i64,
    },
    /// Removes an entry; a directory goes with its whole subtree (a hard-linked file only
    /// loses a link). Planned only for directories now; files use `Unlink`.
    Delete {
        parent: InodeId,
        name: String,
        time_ns: i64,
    },
    /// Moves an entry, replacing an existing file (or empty directory) at the destination.
    /// Kept for replaying older logs; new renames log `RenameAt`.
    Rename {
        src_parent: InodeId,
        src_name: String,
        dst_parent: InodeId,
        dst_name: String,
        time_ns: i64,
    },
    AllocateChunk {
        inode: InodeId,
        index: u64,
        chunk_id: ChunkId,
        version: ChunkVersion,
    },
    SetChunkVersion {
        chunk_id: ChunkId,
        version: ChunkVersion,
    },
    CommitWrite {
        inode: InodeId,
        end: u64,
        mtime_ns: i64,
    },
    /// Creates a file, directory, symlink or FIFO (inode-based create). A directory adds one
    /// link to its parent.
    CreateNode {
        parent: InodeId,
        name: String,
        inode: InodeId,
        kind: NewKind,
        mode: u32,
        uid: u32,
        gid: u32,
        replication: u32,
        time_ns: i64,
    },
    /// Removes one entry. An (empty) directory goes at once; any other inode loses a link
    /// and, at zero links, becomes an orphan kept for its open handles (see `RemoveOrphan`).
    Unlink {
        parent: InodeId,
        name: String,
        time_ns: i64,
    },
    /// Removes an orphan (no links left) once no handle holds it; its chunks become garbage.
    RemoveOrphan { inode: InodeId },
    /// POSIX rename; a replaced destination is unlinked as by `Unlink`.
    RenameAt {
        src_parent: InodeId,
        src_name: String,
        dst_parent: InodeId,
        dst_name: String,
        time_ns: i64,
    },
    /// Hard link: a new entry for a non-directory inode.
    Link {
        inode: InodeId,
        parent: InodeId,
        name: String,
        time_ns: i64,
    },
    /// chmod / chown / utimens with the decided values; `ctime_ns` is always set.
    SetAttr {
        inode: InodeId,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime_ns: Option<i64>,
        mtime_ns: Option<i64>,
        ctime_ns: i64,
    },
    /// Sets a file's size; chunks at index `drop_from_index` and above are dropped.
    Truncate {
        inode: InodeId,
        size: u64,
        drop_from_index: u64,
        time_ns: i64,
    },
    SetXattr {
        inode: InodeId,
        name: String,
        value: Vec<u8>,
        time_ns: i64,
    },
    RemoveXattr {
        inode: InodeId,
        name: String,
        time_ns: i64,
    },
    /// `dfs setrep`: a file's replication factor; re-replication and surplus trimming
    /// follow from the chunk map, nothing else changes.
    SetReplication {
        inode: InodeId,
        replication: u32,
        time_ns: i64,
    },
    // ---- issue 4: snapshots (appended; earlier variants keep their bincode index) ----
    /// Copies the metadata of `src` (a file or a whole tree) as `dst_name` in `dst_parent`;
    /// new inode ids are `first_inode..` in depth-first, name order; shared chunks gain a
    /// reference. `owner`: copies owned by this (uid, gid), set-id bits cleared (a non-root
    /// caller); `None` keeps the owners.
    Snapshot {
        src: InodeId,
        dst_parent: InodeId,
        dst_name: String,
        first_inode: InodeId,
        owner: Option<(u32, u32)>,
        time_ns: i64,
    },
    /// The first write to shared chunk `from` at `index` of `inode`: the file now names chunk
    /// `to` (at `version`), a local copy of `from` to be made on `from`'s replicas.
    CopyOnWrite {
        inode: InodeId,
        index: u64,
        from: ChunkId,
        to: ChunkId,
        version: ChunkVersion,
    },
    /// A replica of copy `chunk` exists: it no longer needs (a reference on) its source.
    CopyDone { chunk: ChunkId },
    // ---- issue 4: trash (appended) ----
    /// `dfs rm`: moves entry `name` of `parent` to `entry` in `user_dir` (`/.Trash/<uid>`) and
    /// records `origin` (its path) and the deletion time.
    MoveToTrash {
        parent: InodeId,
        name: String,
        user_dir: InodeId,
        entry: String,
        uid: u32,
        origin: String,
        time_ns: i64,
    },
    /// Moves trash entry `entry` of `user_dir` back to `dst_name` in `dst_parent`.
    Untrash {
        user_dir: InodeId,
        entry: String,
        dst_parent: InodeId,
        dst_name: String,
        time_ns: i64,
    },
    // ---- issue 5: high availability (appended after the trash ops) ----
    /// The first record a promoted master writes: from `start_seq` (this record's seq) on,
    /// records belong to `epoch`.
    NewEpoch { epoch: Epoch, start_seq: u64 },
    /// A chunkserver joins the witness membership (its majority grants the primary's lease).
    AddWitness { node_id: String, addr: String },
    /// The answer a mutation with request id (client id, call id) got, written in the same
    /// batch as the mutation, so a retry finds it after a restart or a failover.
    RequestDone {
        client_id: Vec<u8>,
        call_id: u64,
        answer: Vec<u8>,
    },
}

/// What a `CreateNode` makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NewKind {
    File,
    Dir,
    Symlink(String),
    Fifo,
}

impl Op {
    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::ClusterInit { .. } => "cluster_init",
            Op::Mkdir { .. } => "mkdir",
            Op::Create { .. } => "create",
            Op::Delete { .. } => "delete",
            Op::Rename { .. } => "rename",
            Op::AllocateChunk { .. } => "allocate_chunk",
            Op::SetChunkVersion { .. } => "set_chunk_version",
            Op::CommitWrite { .. } => "commit_write",
            Op::CreateNode { .. } => "create_node",
            Op::Unlink { .. } => "unlink",
            Op::RemoveOrphan { .. } => "remove_orphan",
            Op::RenameAt { .. } => "rename_at",
            Op::Link { .. } => "link",
            Op::SetAttr { .. } => "set_attr",
            Op::Truncate { .. } => "truncate",
            Op::SetXattr { .. } => "set_xattr",
            Op::RemoveXattr { .. } => "remove_xattr",
            Op::SetReplication { .. } => "set_replication",
            Op::Snapshot { .. } => "snapshot",
            Op::CopyOnWrite { .. } => "copy_on_write",
            Op::CopyDone { .. } => "copy_done",
            Op::MoveToTrash { .. } => "move_to_trash",
            Op::Untrash { .. } => "untrash",
            Op::NewEpoch { .. } => "new_epoch",
            Op::AddWitness { .. } => "add_witness",
            Op::RequestDone { .. } => "request_done",
        }
    }
}
