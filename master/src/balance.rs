//! The balancer (`dfs admin balance`): moves replicas from the fullest chunkservers to the
//! emptiest until every counted server's usage is within a threshold of the mean.
//!
//! Usage here is what the chunk map knows (the sizes replicas reported, per server), so it
//! changes the moment a move completes instead of lagging a heartbeat behind.
//!
//! Safety: a move is copy-then-delete. The copy is an ordinary `ReplicateChunk`; the source
//! is deleted only after the target reported a replica that is current at the chunk's
//! version, and only while no lease or grant is active on the chunk. A write during the copy
//! bumps the version, leaving the new copy stale (it is trimmed) and the source in place.
//! Chunks under a lease, already being copied, short of replicas, or reported bad are never
//! picked. Throttled: at most `MAX_BALANCE_MOVES_IN_FLIGHT` moves at once, cluster-wide, on
//! top of the per-source transfer bound.

use std::collections::HashMap;
use std::time::Instant;

use rdfs_proto::ids::{ChunkId, ChunkVersion, ChunkserverId};
use rdfs_proto::pb::BalancerInfo;

use crate::replication::Transfer;
use crate::state::State;

/// `dfs admin balance` default: every server within 10 percentage points of the mean.
pub const DEFAULT_BALANCE_THRESHOLD_PERCENT: f64 = 10.0;
/// Moves in flight at once across the cluster.
pub const MAX_BALANCE_MOVES_IN_FLIGHT: usize = 8;
/// Scans in a row with nothing to move and nothing in flight before giving up.
const BALANCE_STUCK_SCANS: u32 = 20;

#[derive(Debug, Clone, Copy)]
struct Move {
    source: ChunkserverId,
    target: ChunkserverId,
    version: ChunkVersion,
    bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Balancer {
    threshold_percent: f64,
    moves: HashMap<ChunkId, Move>,
    moves_done: u64,
    idle_scans: u32,
    /// Set when it stops: "balanced", "stopped", "stuck: ...".
    result: Option<String>,
    max_deviation_percent: f64,
}

/// A counted server's usage as the balancer sees it.
#[derive(Debug, Clone, Copy)]
struct Usage {
    id: ChunkserverId,
    used: u64,
    capacity: u64,
}

impl Usage {
    fn percent(&self) -> f64 {
        self.used as f64 * 100.0 / self.capacity as f64
    }
}

impl State {
    /// Bytes a chunk holds: the largest size a replica reported, or (before any report,
    /// e.g. right after a write) what its file's size says it must hold.
    pub fn chunk_bytes(&self, chunk: ChunkId) -> u64 {
        let reported = self.cmap.size_of(chunk);
        let from_file = self.ns.chunk(chunk).and_then(|m| {
            let ino = self.ns.inode(m.inode)?;
            let crate::namespace::NodeKind::File { size, .. } = &ino.kind else {
                return None;
            };
            let start = m.index.saturating_mul(self.chunk_size_bytes);
            Some(size.saturating_sub(start).min(self.chunk_size_bytes))
        });
        reported.max(from_file.unwrap_or(0))
    }

    pub fn start_balance(&mut self, threshold_percent: f64) {
        tracing::info!(threshold_percent, "balancer started");
        self.balancer = Some(Balancer {
            threshold_percent,
            moves: HashMap::new(),
            moves_done: 0,
            idle_scans: 0,
            result: None,
            max_deviation_percent: 0.0,
        });
    }

    /// Stops ordering moves; copies already ordered finish as plain surplus replicas.
    pub fn stop_balance(&mut self) {
        if let Some(b) = self.balancer.as_mut().filter(|b| b.result.is_none()) {
            b.result = Some("stopped".into());
            b.moves.clear();
        }
    }

    pub fn balancer_info(&self) -> BalancerInfo {
        let Some(b) = &self.balancer else {
            return BalancerInfo::default();
        };
        BalancerInfo {
            running: b.result.is_none(),
            threshold_percent: b.threshold_percent,
            moves_done: b.moves_done,
            moves_in_flight: b.moves.len() as u64,
            max_deviation_percent: b.max_deviation_percent,
            result: b.result.clone().unwrap_or_default(),
        }
    }

    /// Bytes each counted server holds by the chunk map, with moves in flight applied.
    fn usages(&self, moves: &HashMap<ChunkId, Move>) -> Vec<Usage> {
        let mut used: HashMap<ChunkserverId, u64> = HashMap::new();
        for (chunk, server) in self.cmap.all_locations() {
            *used.entry(server).or_default() += self.chunk_bytes(chunk);
        }
        for m in moves.values() {
            *used.entry(m.target).or_default() += m.bytes;
            let s = used.entry(m.source).or_default();
            *s = s.saturating_sub(m.bytes);
        }
        self.cmap
            .servers()
            .filter(|s| s.counts() && s.capacity > 0)
            .map(|s| Usage {
                id: s.id,
                used: used.get(&s.id).copied().unwrap_or(0),
                capacity: s.capacity,
            })
            .collect()
    }

    /// One balancer round, from the scan: finish moves whose copy arrived, then order more
    /// while some server is further than the threshold from the mean.
    pub(crate) fn balance_step(&mut self, now: Instant) {
        let Some(mut b) = self.balancer.take() else {
            return;
        };
        if b.result.is_none() {
            self.finish_moves(&mut b, now);
            let ordered = self.order_moves(&mut b, now);
            if ordered == 0 && b.moves.is_empty() {
                b.idle_scans += 1;
                if b.max_deviation_percent <= b.threshold_percent {
                    tracing::info!(moves = b.moves_done, "balancer done: cluster is balanced");
                    b.result = Some("balanced".into());
                } else if b.idle_scans >= BALANCE_STUCK_SCANS {
                    tracing::warn!(deviation = b.max_deviation_percent, "balancer stuck");
                    b.result = Some("stuck: no chunk can be moved".into());
                }
            } else {
                b.idle_scans = 0;
            }
        }
        self.balancer = Some(b);
    }

    fn finish_moves(&mut self, b: &mut Balancer, now: Instant) {
        let moves: Vec<(ChunkId, Move)> = b.moves.iter().map(|(c, m)| (*c, *m)).collect();
        for (chunk, m) in moves {
            let Some(meta) = self.ns.chunk(chunk).copied() else {
                b.moves.remove(&chunk);
                continue;
            };
            let arrived = meta.version == m.version
                && self
                    .cmap
                    .current_replicas(chunk, meta.version)
                    .contains(&m.target);
            if arrived {
                if !self.settled(chunk, now) {
                    continue; // a writer is active: delete the source once it is done
                }
                let source_version = self.cmap.replicas(chunk).find(|r| r.0 == m.source);
                if let Some((_, v)) = source_version {
                    if self.queue_delete(m.source, chunk, v) {
                        self.cmap.remove_location(m.source, chunk);
                    }
                }
                tracing::info!(chunk_id = %chunk, source = %m.source, target = %m.target, "balancer move done");
                b.moves_done += 1;
                b.moves.remove(&chunk);
            } else if meta.version != m.version || self.cmap.pending_for(chunk).is_empty() {
                // Copy failed, timed out or was overtaken by a write: drop it.
                b.moves.remove(&chunk);
            }
        }
    }

    /// Orders moves from the fullest to the emptiest server; returns how many.
    fn order_moves(&mut self, b: &mut Balancer, now: Instant) -> usize {
        let mut usages = self.usages(&b.moves);
        if usages.len() < 2 {
            b.max_deviation_percent = 0.0;
            return 0;
        }
        let mut ordered = 0;
        loop {
            let total_used: u64 = usages.iter().map(|u| u.used).sum();
            let total_cap: u64 = usages.iter().map(|u| u.capacity).sum();
            let mean = total_used as f64 * 100.0 / total_cap as f64;
            let by_pct = |a: &&Usage, c: &&Usage| a.percent().total_cmp(&c.percent());
            let (Some(src), Some(dst)) = (
                usages.iter().max_by(by_pct).copied(),
                usages.iter().min_by(by_pct).copied(),
            ) else {
                return ordered;
            };
            b.max_deviation_percent = (src.percent() - mean).max(mean - dst.percent());
            if b.max_deviation_percent <= b.threshold_percent
                || b.moves.len() >= MAX_BALANCE_MOVES_IN_FLIGHT
            {
                return ordered;
            }
            let Some((chunk, version, bytes)) = self.movable_chunk(&src, &dst, b, now) else {
                return ordered;
            };
            if !self.order_move(chunk, version, src.id, dst.id, now) {
                return ordered;
            }
            let m = Move {
                source: src.id,
                target: dst.id,
                version,
                bytes,
            };
            b.moves.insert(chunk, m);
            ordered += 1;
            for u in usages.iter_mut() {
                if u.id == src.id {
                    u.used = u.used.saturating_sub(bytes);
                } else if u.id == dst.id {
                    u.used += bytes;
                }
            }
        }
    }

    /// A chunk on `src` that may move to `dst` without overshooting: settled, fully
    /// replicated, not being copied, not on `dst`, and small enough that `dst` stays below
    /// where `src` was.
    fn movable_chunk(
        &self,
        src: &Usage,
        dst: &Usage,
        b: &Balancer,
        now: Instant,
    ) -> Option<(ChunkId, ChunkVersion, u64)> {
        let source = self.cmap.server(src.id)?;
        if source.active_transfers >= self.max_transfers_per_source {
            return None;
        }
        self.cmap.chunks_on(src.id).into_iter().find_map(|chunk| {
            let bytes = self.chunk_bytes(chunk);
            let fits = (dst.used + bytes) as f64 * 100.0 / (dst.capacity as f64) <= src.percent();
            let version = self.ns.chunk(chunk)?.version;
            let ok = bytes > 0
                && fits
                && !b.moves.contains_key(&chunk)
                && self.settled(chunk, now)
                && self.cmap.pending_for(chunk).is_empty()
                && !self.cmap.holds(chunk, dst.id)
                && !self.cmap.is_bad(chunk, dst.id)
                && !self.cmap.has_bad(chunk)
                && self.cmap.current_replicas(chunk, version).contains(&src.id)
                && self
                    .chunk_health(chunk)
                    .is_some_and(|h| h.counted >= h.expected);
            ok.then_some((chunk, version, bytes))
        })
    }

    fn order_move(
        &mut self,
        chunk: ChunkId,
        version: ChunkVersion,
        source: ChunkserverId,
        target: ChunkserverId,
        now: Instant,
    ) -> bool {
        let Some(addr) = self.cmap.addr(target).map(str::to_string) else {
            return false;
        };
        // The source's own version (v - 1 may still be current after an unfinished grant).
        let copy_version = self
            .cmap
            .replicas(chunk)
            .find(|r| r.0 == source)
            .map_or(version, |r| r.1);
        let copy = Transfer {
            chunk,
            version: copy_version,
            source,
            target,
            target_addr: &addr,
        };
        self.order_transfer(copy, now, "balancer move ordered")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_map::Drain;
    use crate::lease::Lease;
    use crate::namespace::{Namespace, NewNode};
    use rdfs_proto::ids::LeaseSerial;
    use rdfs_proto::pb::{command, HeartbeatRequest};
    use std::time::Duration;

    const MIB: u64 = 1 << 20;
    const HB_TIMEOUT: Duration = Duration::from_secs(60);

    /// `files` one-chunk files (chunk i+1 at version 1, replication `r`), `n` servers of
    /// 100 MiB each.
    fn state(files: u64, r: u32, n: u64) -> (State, Vec<ChunkserverId>, Instant) {
        let mut ns = Namespace::new();
        let node = NewNode {
            mode: 0o644,
            uid: 0,
            gid: 0,
            replication: r,
            time_ns: 1,
        };
        for i in 0..files {
            let p = format!("/f{i}");
            let create = ns.plan_create(&p, &node, false).unwrap();
            ns.apply(&create).unwrap();
            let inode = ns.resolve(&p).unwrap();
            let op = crate::namespace::Op::AllocateChunk {
                inode,
                index: 0,
                chunk_id: ChunkId(i + 1),
                version: ChunkVersion(1),
            };
            ns.apply(&op).unwrap();
        }
        let mut st = State::new(ns, 1, 3);
        st.safe_mode = false;
        let now = Instant::now();
        let ids = (0..n)
            .map(|i| {
                let id = st
                    .cmap
                    .register(&format!("10.0.0.{i}:1"), &format!("n{i}"), now);
                st.cmap.server_mut(id).unwrap().capacity = 100 * MIB;
                id
            })
            .collect();
        (st, ids, now)
    }

    fn place(st: &mut State, server: ChunkserverId, chunk: u64) {
        st.cmap
            .set_location(server, ChunkId(chunk), ChunkVersion(1));
        st.cmap.note_size(ChunkId(chunk), 10 * MIB);
    }

    /// Replicate commands drained from `server`: (chunk, target addr).
    fn copies(st: &mut State, server: ChunkserverId) -> Vec<(u64, String)> {
        st.cmap
            .drain(server)
            .into_iter()
            .filter_map(|c| match c.kind {
                Some(command::Kind::Replicate(r)) => Some((r.chunk_id, r.target)),
                _ => None,
            })
            .collect()
    }

    /// The target reports the copy, as its heartbeat would.
    fn arrive(st: &mut State, target: ChunkserverId, chunk: u64, now: Instant) {
        let hb = HeartbeatRequest {
            chunkserver_id: target.0,
            capacity: 100 * MIB,
            added: vec![rdfs_proto::pb::ChunkReport {
                chunk_id: chunk,
                version: 1,
                size: 10 * MIB,
            }],
            ..Default::default()
        };
        st.heartbeat(&hb, now).unwrap();
    }

    #[test]
    fn a_move_copies_first_and_deletes_the_source_only_once_no_lease_is_active() {
        // Two copies of 6 chunks on A and B (60% each), C empty: mean 40%.
        let (mut st, ids, now) = state(6, 2, 3);
        let (a, b, c) = (ids[0], ids[1], ids[2]);
        for chunk in 1..=6 {
            place(&mut st, a, chunk);
            place(&mut st, b, chunk);
        }
        st.start_balance(10.0);
        st.scan(now, HB_TIMEOUT);
        let mut ordered: Vec<(ChunkserverId, u64)> = Vec::new();
        for s in [a, b] {
            for (chunk, target) in copies(&mut st, s) {
                assert_eq!(target, "10.0.0.2:1", "moves go to the empty server");
                ordered.push((s, chunk));
            }
        }
        assert!(!ordered.is_empty());
        assert!(ordered.len() <= MAX_BALANCE_MOVES_IN_FLIGHT);
        let (source, chunk) = ordered[0];
        // A writer takes a lease before the copy lands: the source must stay.
        let lease = Lease {
            version: ChunkVersion(1),
            chain: vec![source],
            serial: LeaseSerial(1),
            expires: now + Duration::from_secs(30),
        };
        st.leases.grant(ChunkId(chunk), lease);
        arrive(&mut st, c, chunk, now);
        st.scan(now, HB_TIMEOUT);
        assert!(crate::tests::deletes(&st.cmap.drain(source)).is_empty());
        assert_eq!(st.health(ChunkId(chunk)), (3, 2), "copy first: 3 replicas");
        st.leases.revoke(ChunkId(chunk));
        st.scan(now, HB_TIMEOUT);
        assert_eq!(crate::tests::deletes(&st.cmap.drain(source)), vec![chunk]);
        assert_eq!(st.health(ChunkId(chunk)), (2, 2));
        assert!(st.cmap.holds(ChunkId(chunk), c));
        assert_eq!(st.balancer_info().moves_done, 1);
    }

    #[test]
    fn balancing_ends_within_the_threshold_of_the_mean() {
        let (mut st, ids, now) = state(8, 2, 3);
        for chunk in 1..=8 {
            place(&mut st, ids[0], chunk);
            place(&mut st, ids[1], chunk);
        }
        st.start_balance(10.0);
        for _ in 0..50 {
            st.scan(now, HB_TIMEOUT);
            for s in [ids[0], ids[1]] {
                for (chunk, _) in copies(&mut st, s) {
                    arrive(&mut st, ids[2], chunk, now);
                }
                st.cmap.drain(s);
            }
            if !st.balancer_info().running {
                break;
            }
        }
        let info = st.balancer_info();
        assert_eq!(info.result, "balanced");
        let used: Vec<u64> = ids
            .iter()
            .map(|s| st.cmap.chunks_on(*s).len() as u64 * 10)
            .collect();
        // 160 MiB over 300 MiB: mean 53.3%; every server within 10 points.
        for u in &used {
            assert!((*u as f64 - 160.0 / 3.0).abs() <= 10.0, "{used:?}");
        }
        assert_eq!(used.iter().sum::<u64>(), 160, "no replica lost: {used:?}");
        for chunk in 1..=8 {
            assert_eq!(st.health(ChunkId(chunk)), (2, 2));
        }
    }

    #[test]
    fn a_draining_server_takes_nothing_counts_nothing_and_ends_decommissioned() {
        let (mut st, ids, now) = state(1, 3, 4);
        for s in &ids[..3] {
            place(&mut st, *s, 1);
        }
        assert_eq!(
            st.cmap.set_drain("10.0.0.0:1", Drain::Decommissioning),
            Some(ids[0])
        );
        assert_eq!(st.health(ChunkId(1)), (2, 3));
        assert_eq!(st.drain_remaining(ids[0]), 1);
        st.scan(now, HB_TIMEOUT);
        let ordered: Vec<(u64, String)> =
            ids[..3].iter().flat_map(|s| copies(&mut st, *s)).collect();
        assert_eq!(ordered, vec![(1, "10.0.0.3:1".to_string())]);
        assert_eq!(
            st.cmap.server(ids[0]).unwrap().state_name(),
            "decommissioning"
        );
        arrive(&mut st, ids[3], 1, now);
        st.scan(now, HB_TIMEOUT);
        let s0 = st.cmap.server(ids[0]).unwrap();
        assert_eq!((s0.state_name(), s0.drain_remaining), ("decommissioned", 0));
        assert_eq!(st.health(ChunkId(1)), (3, 3));
        // Its copy is not trimmed as surplus: it goes when the server leaves.
        assert!(crate::tests::deletes(&st.cmap.drain(ids[0])).is_empty());
        // Readers get it last.
        let addrs = st.replica_addrs(ChunkId(1), ChunkVersion(1));
        assert_eq!(addrs.last().map(String::as_str), Some("10.0.0.0:1"));
    }
}
