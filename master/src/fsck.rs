//! Fsck: replica health of every chunk of every file under a path, from the chunk map.
//! A chunk is `missing` with no live current replica, `corrupt` while a replica reported
//! bad has not been repaired, `under_replicated` with 0 < live < expected and
//! `over_replicated` with live > expected.

use rdfs_proto::ids::InodeId;
use rdfs_proto::pb::{FsckChunk, FsckRequest, FsckResponse};
use rdfs_proto::{path, ErrorCode};
use tonic::Status;

use crate::namespace::NodeKind;
use crate::state::{Master, State};

impl State {
    fn fsck_file(&self, id: InodeId, list: bool, out: &mut FsckResponse) {
        let Some(ino) = self.ns.inode(id) else {
            return;
        };
        let NodeKind::File { size, chunks } = &ino.kind else {
            return;
        };
        out.files += 1;
        out.total_bytes += size;
        for (index, chunk) in chunks {
            let Some(meta) = self.ns.chunk(*chunk) else {
                continue;
            };
            out.chunks += 1;
            let (live, expected) = self.health(*chunk);
            let corrupt = self.cmap.has_bad(*chunk) && live < expected;
            let problem = match () {
                _ if live == 0 => "missing",
                _ if corrupt => "corrupt",
                _ if live < expected => "under_replicated",
                _ if live > expected => "over_replicated",
                _ => "",
            };
            out.missing += u64::from(live == 0);
            out.corrupt += u64::from(corrupt);
            out.under_replicated += u64::from(live > 0 && live < expected);
            out.over_replicated += u64::from(live > expected);
            if list {
                out.chunks_detail.push(FsckChunk {
                    path: self.ns.path_of(id),
                    index: *index,
                    chunk_id: chunk.0,
                    version: meta.version.0,
                    expected,
                    live,
                    replicas: self.replica_addrs(*chunk, meta.version),
                    problem: problem.to_string(),
                });
            }
        }
    }

    pub fn fsck(&self, root: InodeId, list: bool) -> FsckResponse {
        let mut out = FsckResponse::default();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            match self.ns.inode(id).map(|i| &i.kind) {
                Some(NodeKind::Dir { entries }) => {
                    out.dirs += 1;
                    stack.extend(entries.values().rev());
                }
                Some(NodeKind::File { .. }) => self.fsck_file(id, list, &mut out),
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
        Ok(st.fsck(root, r.list_chunks))
    }
}
