//! Chunkserver calls on the state: registration, heartbeats, block reports. Each returns
//! the replica versions to adopt (newer than the master's), which the service then logs.

use std::time::Instant;

use rdfs_proto::ids::{ChunkId, ChunkVersion, ChunkserverId};
use rdfs_proto::pb::{Command, HeartbeatRequest, RegisterRequest};

use crate::state::State;

/// Versions reported newer than the master's: logged as `SetChunkVersion` (adopted).
pub type Adopt = Vec<(ChunkId, ChunkVersion)>;

impl State {
    pub fn register_server(
        &mut self,
        req: &RegisterRequest,
        now: Instant,
    ) -> (ChunkserverId, Adopt) {
        let id = self.cmap.register(&req.data_addr, &req.node_id, now);
        if let Some(s) = self.cmap.server_mut(id) {
            s.capacity = req.capacity;
            s.used = req.used;
            s.chunk_count = req.chunks.len() as u64;
            s.block_report_chunks = req.chunks.len() as u64;
            s.last_block_report = now;
        }
        tracing::info!(server = %id, addr = %req.data_addr, chunks = req.chunks.len(), "chunkserver registered");
        let adopt = self.full_report(id, &req.chunks);
        (id, adopt)
    }

    /// Applies a heartbeat; `None` when the server must register again (unknown or dead).
    pub fn heartbeat(
        &mut self,
        req: &HeartbeatRequest,
        now: Instant,
    ) -> Option<(Vec<Command>, Adopt)> {
        let id = ChunkserverId(req.chunkserver_id);
        let s = self.cmap.server_mut(id).filter(|s| s.live)?;
        s.capacity = req.capacity;
        s.used = req.used;
        s.chunk_count = req.chunk_count;
        s.no_space = req.no_space;
        s.last_heartbeat = now;
        if let Some(scrub) = &req.scrub {
            s.scrub = *scrub;
        }
        self.metrics.count(crate::metrics::Rate::Heartbeats, 1);
        for chunk in &req.removed {
            self.cmap.remove_location(id, ChunkId(*chunk));
            self.cmap.clear_bad(id, ChunkId(*chunk));
        }
        for bad in &req.bad {
            self.report_bad(id, ChunkId(bad.chunk_id), ChunkVersion(bad.version));
        }
        let mut adopt = Vec::new();
        for added in &req.added {
            let chunk = ChunkId(added.chunk_id);
            adopt.extend(self.reconcile_replica(id, added));
            if self.cmap.finish_pending(chunk, id) && self.cmap.holds(chunk, id) {
                self.metrics.count(crate::metrics::Rate::ReplicasCopied, 1);
                let (live, expected) = self.health(chunk);
                tracing::info!(chunk_id = %chunk, target = %id, live, expected, "re-replication complete");
            }
        }
        Some((self.cmap.drain(id), adopt))
    }

    pub fn block_report(
        &mut self,
        id: ChunkserverId,
        reports: &[rdfs_proto::pb::ChunkReport],
    ) -> Option<(Vec<Command>, Adopt)> {
        let s = self.cmap.server_mut(id).filter(|s| s.live)?;
        s.last_block_report = Instant::now();
        s.block_report_chunks = reports.len() as u64;
        let adopt = self.full_report(id, reports);
        Some((self.cmap.drain(id), adopt))
    }
}
