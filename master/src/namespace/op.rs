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
    /// Removes an entry; a directory goes with its whole subtree.
    Delete {
        parent: InodeId,
        name: String,
        time_ns: i64,
    },
    /// Moves an entry, replacing an existing file (or empty directory) at the destination.
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
        }
    }
}
