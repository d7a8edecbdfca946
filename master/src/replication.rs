//! The background scan (every `replication_scan_interval`): failure detection, safe-mode
//! exit, re-replication (most endangered first), and trimming of stale and surplus
//! replicas. Nothing is deleted in safe mode; chunks under a lease or a grant in progress
//! are left alone (a copy could miss a write).

use std::time::{Duration, Instant};

use rdfs_proto::ids::{ChunkId, ChunkVersion, ChunkserverId};
use rdfs_proto::pb::{command, Command, ReplicateChunkCommand};

use crate::chunk_map::PendingCopy;
use crate::state::State;
use crate::status::HealthSnapshot;

/// How long an ordered copy may take before it is ordered again elsewhere.
pub const REPLICATION_DEADLINE: Duration = Duration::from_secs(60);
/// Most copies ordered per scan (keeps one scan short under the lock).
pub const MAX_COPIES_PER_SCAN: usize = 256;

/// A chunk short of replicas (the repair queue, most endangered first).
pub(crate) struct Needy {
    pub chunk: ChunkId,
    pub version: ChunkVersion,
    /// Copies still to order (beyond those in flight).
    pub missing: u32,
}

/// One replica copy to order: `source` pushes its replica (at `version`) to `target`.
pub(crate) struct Transfer<'a> {
    pub chunk: ChunkId,
    pub version: ChunkVersion,
    pub source: ChunkserverId,
    pub target: ChunkserverId,
    pub target_addr: &'a str,
}

/// Tells a source to push its replica of `chunk` to `target`.
pub fn replicate_command(chunk: ChunkId, version: ChunkVersion, target: &str) -> Command {
    Command {
        kind: Some(command::Kind::Replicate(ReplicateChunkCommand {
            chunk_id: chunk.0,
            version: version.0,
            target: target.to_string(),
        })),
    }
}

impl State {
    pub fn scan(&mut self, now: Instant, heartbeat_timeout: Duration) {
        self.detect_dead(now, heartbeat_timeout);
        for (chunk, target) in self.cmap.expire_pending(now) {
            tracing::warn!(chunk_id = %chunk, target = %target, "re-replication timed out");
        }
        self.leases.expire(now);
        self.update_safe_mode();
        let snapshot = std::sync::Arc::new(self.health_pass());
        self.health = Some(snapshot.clone());
        if self.safe_mode {
            return;
        }
        self.schedule_copies(&snapshot, now);
        // Before trimming: a finished move deletes its own source, not the fullest copy.
        self.balance_step(now);
        self.trim_replicas(&snapshot, now);
        self.update_drain_progress();
    }

    /// Recounts what each draining server still holds that is short of replicas
    /// elsewhere; a server with nothing left becomes decommissioned.
    fn update_drain_progress(&mut self) {
        use crate::chunk_map::Drain;
        let draining: Vec<ChunkserverId> = self
            .cmap
            .servers()
            .filter(|s| s.drain == Drain::Decommissioning && s.live)
            .map(|s| s.id)
            .collect();
        for id in draining {
            let remaining = self.drain_remaining(id);
            let Some(s) = self.cmap.server_mut(id) else {
                continue;
            };
            s.drain_remaining = remaining;
            if remaining == 0 {
                let addr = s.addr.clone();
                self.cmap.set_drain(&addr, Drain::Decommissioned);
                tracing::info!(server = %id, %addr, "decommissioned: every chunk has its replicas elsewhere");
            }
        }
    }

    /// Chunks on `server` that would be short of replicas without it.
    pub fn drain_remaining(&self, server: ChunkserverId) -> u64 {
        self.cmap
            .chunks_on(server)
            .into_iter()
            .filter(|c| {
                self.chunk_health(*c)
                    .is_some_and(|h| h.counted < h.expected)
            })
            .count() as u64
    }

    fn detect_dead(&mut self, now: Instant, timeout: Duration) {
        let dead: Vec<ChunkserverId> = self
            .cmap
            .live_servers()
            .filter(|s| now.saturating_duration_since(s.last_heartbeat) > timeout)
            .map(|s| s.id)
            .collect();
        for id in dead {
            self.server_died(id);
        }
    }

    /// Chunks that may be copied or trimmed now.
    pub(crate) fn settled(&self, chunk: ChunkId, now: Instant) -> bool {
        !self.leases.is_granting(chunk) && self.leases.active(chunk, now).is_none()
    }

    /// The snapshot's repair queue (already in order) less chunks under a lease and copies
    /// already in flight.
    pub(crate) fn needy_chunks(&self, snapshot: &HealthSnapshot, now: Instant) -> Vec<Needy> {
        snapshot
            .queue
            .iter()
            .filter(|s| self.settled(s.chunk, now))
            .filter_map(|s| {
                // Copies may come from draining servers; only counted ones make up the factor.
                let have = s.counted + self.cmap.pending_for(s.chunk).len() as u32;
                let version = self.ns.chunk(s.chunk)?.version;
                (have < s.expected).then(|| Needy {
                    chunk: s.chunk,
                    version,
                    missing: s.expected - have,
                })
            })
            .collect()
    }

    fn schedule_copies(&mut self, snapshot: &HealthSnapshot, now: Instant) {
        let mut ordered = 0;
        for n in self.needy_chunks(snapshot, now) {
            for _ in 0..n.missing {
                if ordered == MAX_COPIES_PER_SCAN || !self.order_copy(n.chunk, n.version, now) {
                    break;
                }
                ordered += 1;
            }
        }
    }

    /// Orders one copy of a chunk; false when no source or target is available.
    fn order_copy(&mut self, chunk: ChunkId, version: ChunkVersion, now: Instant) -> bool {
        let sources = self.cmap.current_replicas(chunk, version);
        let source = sources
            .iter()
            .filter_map(|s| self.cmap.server(*s))
            .filter(|s| s.active_transfers < self.max_transfers_per_source)
            .min_by_key(|s| (s.active_transfers, s.id))
            .map(|s| {
                (
                    s.id,
                    self.cmap.replicas(chunk).find(|r| r.0 == s.id).map(|r| r.1),
                )
            });
        let Some((source, Some(src_version))) = source else {
            return false;
        };
        let pending = self.cmap.pending_for(chunk);
        let target = self
            .cmap
            .live_servers()
            .filter(|s| s.placeable())
            .filter(|s| !self.cmap.holds(chunk, s.id) && !self.cmap.is_bad(chunk, s.id))
            .filter(|s| !pending.contains(&s.id))
            .max_by_key(|s| (s.free(), std::cmp::Reverse(s.id)))
            .map(|s| (s.id, s.addr.clone()));
        let Some((target, target_addr)) = target else {
            return false;
        };
        let copy = Transfer {
            chunk,
            version: src_version,
            source,
            target,
            target_addr: &target_addr,
        };
        self.order_transfer(copy, now, "re-replication ordered")
    }

    /// Queues a copy on its source and tracks it as pending until the target reports it
    /// (or `REPLICATION_DEADLINE` passes); false when the source's queue is full.
    pub(crate) fn order_transfer(&mut self, t: Transfer<'_>, now: Instant, why: &str) -> bool {
        let cmd = replicate_command(t.chunk, t.version, t.target_addr);
        if !self.cmap.queue(t.source, cmd) {
            return false;
        }
        let pending = PendingCopy {
            source: t.source,
            deadline: now + REPLICATION_DEADLINE,
        };
        self.cmap.add_pending(t.chunk, t.target, pending);
        tracing::info!(chunk_id = %t.chunk, source = %t.source, target = %t.target_addr, "{why}");
        true
    }

    /// Deletes stale replicas and, for over-replicated chunks, the copy on the fullest server.
    /// Only the chunks the snapshot found with stale or surplus replicas are looked at.
    fn trim_replicas(&mut self, snapshot: &HealthSnapshot, now: Instant) {
        let chunks: Vec<(ChunkId, ChunkVersion)> = snapshot
            .trim
            .iter()
            .filter(|c| self.settled(**c, now) && self.cmap.pending_for(**c).is_empty())
            .filter_map(|c| Some((*c, self.ns.chunk(*c)?.version)))
            .collect();
        for (chunk, v) in chunks {
            let stale: Vec<_> = self
                .cmap
                .replicas(chunk)
                .filter(|(_, rv)| *rv < v && !self.cmap.is_current(chunk, v, *rv))
                .collect();
            for (server, rv) in stale {
                self.cmap.remove_location(server, chunk);
                self.queue_delete(server, chunk, rv);
            }
            self.trim_surplus(chunk, v);
        }
    }

    fn trim_surplus(&mut self, chunk: ChunkId, v: ChunkVersion) {
        // Draining servers are left alone: their copies go when the server leaves.
        let current = self.cmap.counted_replicas(chunk, v);
        if current.len() as u32 <= self.expected_replication(chunk) {
            return;
        }
        let fullest = current
            .iter()
            .filter_map(|s| self.cmap.server(*s))
            .min_by_key(|s| (s.free(), s.id))
            .map(|s| s.id);
        let rv = fullest.and_then(|f| self.cmap.replicas(chunk).find(|r| r.0 == f));
        if let Some((server, rv)) = rv {
            if self.queue_delete(server, chunk, rv) {
                self.cmap.remove_location(server, chunk);
                tracing::info!(chunk_id = %chunk, server = %server, "over-replicated: deleting one copy");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::{Namespace, NewNode, Op};
    use rdfs_proto::ids::InodeId;

    /// A state with /f (replication 3) holding chunk 1 at version 2, and `n` servers.
    fn state(n: u64, safe_mode: bool) -> (State, Vec<ChunkserverId>, Instant) {
        let mut ns = Namespace::new();
        let node = NewNode {
            mode: 0o644,
            uid: 0,
            gid: 0,
            replication: 3,
            time_ns: 1,
        };
        let create = ns.plan_create("/f", &node, false).unwrap();
        ns.apply(&create).unwrap();
        let inode = InodeId(2);
        let alloc = Op::AllocateChunk {
            inode,
            index: 0,
            chunk_id: ChunkId(1),
            version: ChunkVersion(2),
        };
        ns.apply(&alloc).unwrap();
        // The chunk holds acknowledged bytes (an empty one would not hold safe mode).
        ns.apply(&Op::CommitWrite {
            inode,
            end: 1,
            mtime_ns: 1,
        })
        .unwrap();
        let mut st = State::new(ns, 3, 3);
        let now = Instant::now();
        let ids = (0..n)
            .map(|i| {
                let id = st
                    .cmap
                    .register(&format!("10.0.0.{i}:1"), &format!("n{i}"), now);
                let s = st.cmap.server_mut(id).unwrap();
                s.capacity = 1000;
                s.used = i * 100;
                id
            })
            .collect();
        st.safe_mode = safe_mode;
        (st, ids, now)
    }

    fn deletes_on(st: &mut State, id: ChunkserverId) -> Vec<u64> {
        crate::tests::deletes(&st.cmap.drain(id))
    }

    #[test]
    fn surplus_and_stale_replicas_are_trimmed() {
        let (mut st, ids, now) = state(5, false);
        for id in &ids[..4] {
            st.cmap.set_location(*id, ChunkId(1), ChunkVersion(2));
        }
        st.cmap.set_location(ids[4], ChunkId(1), ChunkVersion(1));
        st.scan(now, Duration::from_secs(60));
        // Stale copy (version 1 while 2 is known) and the copy on the fullest server go.
        assert_eq!(deletes_on(&mut st, ids[4]), vec![1]);
        assert_eq!(deletes_on(&mut st, ids[3]), vec![1]);
        for id in &ids[..3] {
            assert!(deletes_on(&mut st, *id).is_empty());
        }
        assert_eq!(st.health(ChunkId(1)), (3, 3));
    }

    #[test]
    fn safe_mode_queues_no_deletes_and_no_copies() {
        let (mut st, ids, now) = state(5, true);
        // Only a stale replica is known: not enough to leave safe mode.
        st.cmap.set_location(ids[4], ChunkId(1), ChunkVersion(0));
        st.scan(now, Duration::from_secs(60));
        assert!(st.safe_mode);
        let stale = rdfs_proto::pb::ChunkReport {
            chunk_id: 1,
            version: 0,
            size: 0,
        };
        assert_eq!(st.reconcile_replica(ids[4], &stale), None);
        let orphan = rdfs_proto::pb::ChunkReport {
            chunk_id: 0,
            version: 1,
            size: 0,
        };
        st.reconcile_replica(ids[0], &orphan);
        for id in &ids {
            assert!(st.cmap.drain(*id).is_empty());
        }
    }

    #[test]
    fn copies_go_from_a_live_source_to_the_emptiest_new_target() {
        let (mut st, ids, now) = state(4, false);
        st.cmap.set_location(ids[2], ChunkId(1), ChunkVersion(2));
        st.scan(now, Duration::from_secs(60));
        let cmds = st.cmap.drain(ids[2]);
        let targets: Vec<String> = cmds
            .iter()
            .filter_map(|c| match &c.kind {
                Some(command::Kind::Replicate(r)) => Some(r.target.clone()),
                _ => None,
            })
            .collect();
        // Two missing copies; the source is full-ish, the emptiest others are 0 and 1.
        assert_eq!(
            targets,
            vec!["10.0.0.0:1".to_string(), "10.0.0.1:1".to_string()]
        );
        assert_eq!(st.cmap.pending_for(ChunkId(1)).len(), 2);
        // A second scan does not order duplicates.
        st.scan(now, Duration::from_secs(60));
        assert!(st.cmap.drain(ids[2]).is_empty());
    }
}
