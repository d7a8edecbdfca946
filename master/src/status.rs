//! Cluster status: one pass over the chunk table that feeds `ClusterStatus` (`dfs admin
//! report`, `dfs df`), the dashboard's JSON API and `/metrics`, so they always agree.
//!
//! The standby fields come from [`Master::standby_info`], the one place the hot standby
//! (the `ha` module) reports through; "none" when no standby is attached.

use std::collections::BTreeMap;
use std::time::Instant;

use rdfs_proto::ids::ChunkId;
use rdfs_proto::pb::{ChunkserverStatus, ClusterStatusResponse, StandbyInfo};

use crate::chunk_map::Server;
use crate::metrics::{Rate, REPAIR_RATE_WINDOW};
use crate::state::{Master, State};

/// Replication health of every chunk, counted in one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HealthSummary {
    pub chunks: u64,
    pub under_replicated: u64,
    pub over_replicated: u64,
    pub corrupt: u64,
    pub missing: u64,
    /// Replica copies still to make for full redundancy.
    pub copies_needed: u64,
    /// (expected replicas, counted live replicas) → chunks: the replication matrix.
    pub matrix: BTreeMap<(u32, u32), u64>,
}

/// A chunk short of replicas that has a copy to repair from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Short {
    /// Counted replicas (first: the repair order is fewest first).
    pub counted: u32,
    pub chunk: ChunkId,
    pub expected: u32,
}

/// One pass over the chunk table, taken by every scan.
#[derive(Debug, Clone)]
pub struct HealthSnapshot {
    pub summary: HealthSummary,
    /// Problem chunks, worst first: (severity 0 missing .. 3 over-replicated, counted, chunk).
    pub problems: Vec<(u8, u32, ChunkId)>,
    /// The repair queue in repair order.
    pub queue: Vec<Short>,
    /// Chunks with stale or surplus replicas to delete.
    pub trim: Vec<ChunkId>,
    pub taken: Instant,
}

fn severity(problem: &str) -> Option<u8> {
    match problem {
        "missing" => Some(0),
        "corrupt" => Some(1),
        "under_replicated" => Some(2),
        "over_replicated" => Some(3),
        _ => None,
    }
}

impl State {
    /// Classifies every chunk once: counts, the replication matrix, the problem list and
    /// the repair queue.
    pub fn health_pass(&self) -> HealthSnapshot {
        let mut h = HealthSummary::default();
        let (mut problems, mut queue, mut trim) = (Vec::new(), Vec::new(), Vec::new());
        for (chunk, _) in self.ns.chunks() {
            let Some(c) = self.chunk_health(*chunk) else {
                continue;
            };
            h.chunks += 1;
            h.under_replicated += u64::from(c.is_under());
            h.over_replicated += u64::from(c.is_over());
            h.corrupt += u64::from(c.is_corrupt());
            h.missing += u64::from(c.is_missing());
            h.copies_needed += u64::from(c.copies_needed());
            *h.matrix.entry((c.expected, c.counted)).or_default() += 1;
            if let Some(sev) = severity(c.problem()) {
                problems.push((sev, c.counted, *chunk));
            }
            if c.stale > 0 || c.is_over() {
                trim.push(*chunk);
            }
            if c.copies_needed() > 0 {
                queue.push(Short {
                    counted: c.counted,
                    chunk: *chunk,
                    expected: c.expected,
                });
            }
        }
        problems.sort_unstable();
        queue.sort_unstable();
        HealthSnapshot {
            summary: h,
            problems,
            queue,
            trim,
            taken: Instant::now(),
        }
    }

    /// The last scan's snapshot, or a fresh one before the first scan.
    pub fn health_snapshot(&self) -> std::sync::Arc<HealthSnapshot> {
        match &self.health {
            Some(h) => h.clone(),
            None => std::sync::Arc::new(self.health_pass()),
        }
    }

    pub fn server_status(&self, s: &Server, now: Instant) -> ChunkserverStatus {
        let age_ms = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
        ChunkserverStatus {
            id: s.id.0,
            addr: s.addr.clone(),
            state: s.state_name().to_string(),
            capacity: s.capacity,
            used: s.used,
            chunks: s.chunk_count,
            last_heartbeat_ms: age_ms(s.last_heartbeat),
            no_space: s.no_space,
            has_block_report: true,
            last_block_report_ms: age_ms(s.last_block_report),
            last_block_report_chunks: s.block_report_chunks,
            corrupt_found: s.corrupt_found,
            scrub: Some(s.scrub),
            decommission_remaining: s.drain_remaining,
            queued_commands: s.queued_commands() as u64,
            active_transfers: s.active_transfers,
        }
    }
}

/// Estimated milliseconds until full redundancy: 0 when nothing is needed, -1 while no copy
/// has completed recently (no rate to extrapolate from).
pub fn repair_eta_ms(copies_needed: u64, copies_per_sec: f64) -> i64 {
    if copies_needed == 0 {
        0
    } else if copies_per_sec <= 0.0 {
        -1
    } else {
        (copies_needed as f64 / copies_per_sec * 1000.0).ceil() as i64
    }
}

impl Master {
    /// The hot standby as the primary sees it (`ha`): the dashboard, `dfs admin report`
    /// and `/metrics` show what it returns.
    pub fn standby_info(&self) -> StandbyInfo {
        self.ha.standby_info(self.log.durable_seq(), Instant::now())
    }

    pub fn cluster_status(&self) -> ClusterStatusResponse {
        let st = self.state.lock();
        let now = Instant::now();
        let (files, dirs) = st.ns.counts();
        let snapshot = st.health_snapshot();
        let health = &snapshot.summary;
        let chunkservers: Vec<ChunkserverStatus> = st
            .cmap
            .servers()
            .map(|s| st.server_status(s, now))
            .collect();
        let (capacity, used) = st.cmap.live_servers().fold((0u64, 0u64), |(c, u), s| {
            (c.saturating_add(s.capacity), u.saturating_add(s.used))
        });
        let rate = st
            .metrics
            .recent_rate(Rate::ReplicasCopied, REPAIR_RATE_WINDOW);
        let (reported, _) = if st.safe_mode {
            st.safe_mode_counts()
        } else {
            let n = st.ns.chunk_count() as u64;
            (n, n)
        };
        ClusterStatusResponse {
            cluster_id: self.identity.cluster_id.clone(),
            chunk_size: self.identity.chunk_size,
            replication: self.config.replication,
            capacity,
            used,
            files,
            dirs,
            chunks: st.ns.chunk_count() as u64,
            epoch: st.ns.epoch().0,
            safe_mode: st.safe_mode,
            chunkservers,
            under_replicated: health.under_replicated,
            last_op_seq: st.last_seq,
            over_replicated: health.over_replicated,
            corrupt: health.corrupt,
            missing: health.missing,
            safe_mode_manual: st.safe_mode_manual,
            last_checkpoint_seq: st.last_checkpoint_seq,
            standby: Some(self.standby_info()),
            repair_copies_needed: health.copies_needed,
            repairs_in_flight: st.cmap.pending_count() as u64,
            repair_eta_ms: repair_eta_ms(health.copies_needed, rate),
            balancer: Some(st.balancer_info()),
            safe_mode_reported_chunks: reported,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            last_scan_us: st.last_scan_duration.as_micros() as u64,
            role: self.ha.role_name().to_string(),
            primary_addr: self.ha.primary_addr(),
            witnesses: self.ha.members.len() as u32,
            lease_valid: self.ha.lease_valid(now),
            master_addr: self.ha.me_addr.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_is_zero_when_healthy_unknown_without_rate_and_extrapolated_otherwise() {
        assert_eq!(repair_eta_ms(0, 0.0), 0);
        assert_eq!(repair_eta_ms(10, 0.0), -1);
        assert_eq!(repair_eta_ms(10, 4.0), 2500);
    }
}
