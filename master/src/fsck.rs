//! Fsck: replica health of every chunk of every file under a path, from the chunk map.
//! A chunk is `missing` with no live current replica, `corrupt` while a replica reported
//! bad has not been repaired, `under_replicated` with 0 < live < expected and
//! `over_replicated` with live > expected.

use rdfs_proto::ids::{ChunkId, InodeId};
use rdfs_proto::pb::{FsckChunk, FsckFile, FsckRequest, FsckResponse};
use rdfs_proto::{path, ErrorCode};
use tonic::Status;

use crate::namespace::NodeKind;
use crate::state::{Master, State};

/// Replication health of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHealth {
    /// Current replicas on live servers that count (not draining).
    pub counted: u32,
    /// Current replicas on live servers, draining ones included (readable copies).
    pub current: u32,
    pub expected: u32,
    /// A replica was reported bad and the chunk is not back to full replication.
    pub corrupt: bool,
    /// Replicas at an older version that is no longer current (garbage to delete).
    pub stale: u32,
}

/// Problems from worst to mildest (a file shows its worst chunk's).
const PROBLEM_ORDER: [&str; 4] = ["missing", "corrupt", "under_replicated", "over_replicated"];

/// What one fsck walk lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsckLists {
    pub chunks: bool,
    pub files: bool,
}

impl ChunkHealth {
    pub fn problem(&self) -> &'static str {
        match () {
            _ if self.current == 0 => "missing",
            _ if self.corrupt => "corrupt",
            _ if self.counted < self.expected => "under_replicated",
            _ if self.counted > self.expected => "over_replicated",
            _ => "",
        }
    }
    pub fn is_missing(&self) -> bool {
        self.current == 0
    }
    pub fn is_under(&self) -> bool {
        self.current > 0 && self.counted < self.expected
    }
    pub fn is_over(&self) -> bool {
        self.counted > self.expected
    }
    /// Counted even when no copy is left (then it is missing too).
    pub fn is_corrupt(&self) -> bool {
        self.corrupt
    }
    /// Copies still to make for full redundancy (only possible while a copy exists).
    pub fn copies_needed(&self) -> u32 {
        if self.current == 0 {
            0
        } else {
            self.expected.saturating_sub(self.counted)
        }
    }
}

impl State {
    /// Health of one chunk (`None`: no such chunk). Allocation-free: the status pass runs
    /// it for every chunk under the state lock.
    pub fn chunk_health(&self, chunk: ChunkId) -> Option<ChunkHealth> {
        let meta = self.ns.chunk(chunk)?;
        let (mut current, mut counted, mut stale) = (0u32, 0u32, 0u32);
        for (server, rv) in self.cmap.replicas(chunk) {
            if rv < meta.version && !self.cmap.is_current(chunk, meta.version, rv) {
                stale += 1;
                continue;
            }
            let Some(s) = self.cmap.server(server) else {
                continue;
            };
            if !s.live
                || !self.cmap.is_current(chunk, meta.version, rv)
                || self.cmap.is_bad(chunk, server)
            {
                continue;
            }
            current += 1;
            counted += u32::from(s.counts());
        }
        let expected = self.replication_of(meta.inode);
        Some(ChunkHealth {
            counted,
            current,
            expected,
            corrupt: counted < expected && self.cmap.has_bad(chunk),
            stale,
        })
    }

    fn fsck_file(&self, id: InodeId, lists: FsckLists, out: &mut FsckResponse) {
        let Some(ino) = self.ns.inode(id) else {
            return;
        };
        let NodeKind::File { size, chunks } = &ino.kind else {
            return;
        };
        out.files += 1;
        out.total_bytes += size;
        let mut worst = PROBLEM_ORDER.len();
        for (index, chunk) in chunks {
            let Some(meta) = self.ns.chunk(*chunk) else {
                continue;
            };
            out.chunks += 1;
            let Some(h) = self.chunk_health(*chunk) else {
                continue;
            };
            out.missing += u64::from(h.is_missing());
            out.corrupt += u64::from(h.is_corrupt());
            out.under_replicated += u64::from(h.is_under());
            out.over_replicated += u64::from(h.is_over());
            if let Some(rank) = PROBLEM_ORDER.iter().position(|p| *p == h.problem()) {
                worst = worst.min(rank);
            }
            if lists.chunks {
                out.chunks_detail.push(FsckChunk {
                    path: self.ns.path_of(id),
                    index: *index,
                    chunk_id: chunk.0,
                    version: meta.version.0,
                    expected: h.expected,
                    live: h.counted,
                    replicas: self.replica_addrs(*chunk, meta.version),
                    problem: h.problem().to_string(),
                });
            }
        }
        if lists.files {
            out.files_detail.push(FsckFile {
                path: self.ns.path_of(id),
                size: *size,
                chunks: chunks.len() as u64,
                expected: self.replication_of(id),
                problem: PROBLEM_ORDER.get(worst).copied().unwrap_or("").to_string(),
            });
        }
    }

    pub fn fsck(&self, root: InodeId, lists: FsckLists) -> FsckResponse {
        let mut out = FsckResponse::default();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            match self.ns.inode(id).map(|i| &i.kind) {
                Some(NodeKind::Dir { entries }) => {
                    out.dirs += 1;
                    stack.extend(entries.values().rev());
                }
                Some(NodeKind::File { .. }) => self.fsck_file(id, lists, &mut out),
                Some(NodeKind::Symlink { .. } | NodeKind::Fifo) | None => {}
            }
        }
        out.healthy = out.under_replicated + out.over_replicated + out.corrupt + out.missing == 0;
        out
    }
}

impl Master {
    pub fn fsck(&self, r: FsckRequest) -> Result<FsckResponse, Status> {
        let p = if r.path.is_empty() {
            "/".to_string()
        } else {
            r.path
        };
        let p = path::normalize(&p).map_err(|c| c.status(format!("{p:?}: {}", c.describe())))?;
        let st = self.state.lock();
        let root = st
            .ns
            .resolve(&p)
            .map_err(|e| e.code.status(format!("{p}: {}", e.code.describe())))?;
        if st.ns.inode(root).is_none() {
            return Err(ErrorCode::NotFound.status(format!("{p}: not found")));
        }
        let lists = FsckLists {
            chunks: r.list_chunks,
            files: r.list_files,
        };
        Ok(st.fsck(root, lists))
    }
}
