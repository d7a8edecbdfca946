//! The JSON API's shapes. `status_json` is also what `dfs admin report --json` prints, so
//! the dashboard, the CLI and `/metrics` (built from the same `ClusterStatusResponse`)
//! always agree. Fixed by the CLI contract: `chunkservers: [{addr, state, capacity, used,
//! chunks, last_heartbeat_ms}]`; the rest are extra fields.

use std::time::Instant;

use rdfs_proto::pb::{BalancerInfo, ChunkserverStatus, ClusterStatusResponse, ScrubProgress};
use serde_json::{json, Value};

use crate::metrics::{RATES, RATE_SAMPLE_INTERVAL};
use crate::state::{Master, State};

/// Longest chunk lists in `/api/blocks` and a chunkserver's detail (counts are exact).
pub const MAX_LISTED_CHUNKS: usize = 500;

pub fn scrub_json(s: &ScrubProgress) -> Value {
    json!({
        "passes_completed": s.passes_completed,
        "pass_chunks_done": s.pass_chunks_done,
        "pass_chunks_total": s.pass_chunks_total,
        "verified_bytes_total": s.verified_bytes_total,
        "corrupt_found_total": s.corrupt_found_total,
        "rate_bytes_per_sec": s.rate_bytes_per_sec,
    })
}

pub fn server_json(c: &ChunkserverStatus) -> Value {
    json!({
        "id": c.id,
        "addr": c.addr,
        "state": c.state,
        "capacity": c.capacity,
        "used": c.used,
        "chunks": c.chunks,
        "last_heartbeat_ms": c.last_heartbeat_ms,
        "no_space": c.no_space,
        "last_block_report_ms": c.last_block_report_ms,
        "last_block_report_chunks": c.last_block_report_chunks,
        "corrupt_found": c.corrupt_found,
        "decommission_remaining": c.decommission_remaining,
        "queued_commands": c.queued_commands,
        "active_transfers": c.active_transfers,
        "scrub": scrub_json(&c.scrub.unwrap_or_default()),
    })
}

fn balancer_json(b: &BalancerInfo) -> Value {
    json!({
        "running": b.running,
        "threshold_percent": b.threshold_percent,
        "moves_done": b.moves_done,
        "moves_in_flight": b.moves_in_flight,
        "max_deviation_percent": b.max_deviation_percent,
        "result": b.result,
    })
}

/// Chunkservers in each state of the CLI contract.
pub fn state_counts(s: &ClusterStatusResponse) -> [(&'static str, u64); 4] {
    let n = |state: &str| s.chunkservers.iter().filter(|c| c.state == state).count() as u64;
    [
        ("live", n("live")),
        ("dead", n("dead")),
        ("decommissioning", n("decommissioning")),
        ("decommissioned", n("decommissioned")),
    ]
}

pub fn healthy(s: &ClusterStatusResponse) -> bool {
    s.under_replicated + s.over_replicated + s.corrupt + s.missing == 0
}

/// The overview / `dfs admin report --json` document.
pub fn status_json(s: &ClusterStatusResponse) -> Value {
    let standby = s.standby.clone().unwrap_or_default();
    let mut v = json!({
        "cluster_id": s.cluster_id,
        "chunk_size": s.chunk_size,
        "replication": s.replication,
        "capacity": s.capacity,
        "used": s.used,
        "free": s.capacity.saturating_sub(s.used),
        "files": s.files,
        "dirs": s.dirs,
        "chunks": s.chunks,
        "epoch": s.epoch,
        "safe_mode": s.safe_mode,
        "safe_mode_manual": s.safe_mode_manual,
        "safe_mode_reported_chunks": s.safe_mode_reported_chunks,
        "last_op_seq": s.last_op_seq,
        "last_checkpoint_seq": s.last_checkpoint_seq,
        "uptime_ms": s.uptime_ms,
        "last_scan_us": s.last_scan_us,
        "under_replicated": s.under_replicated,
        "over_replicated": s.over_replicated,
        "corrupt": s.corrupt,
        "missing": s.missing,
        "healthy": healthy(s),
        "repair": {
            "copies_needed": s.repair_copies_needed,
            "in_flight": s.repairs_in_flight,
            "eta_ms": s.repair_eta_ms,
        },
        "standby": {
            "state": standby.state,
            "addr": standby.addr,
            "lag_ops": standby.lag_ops,
        },
        "balancer": balancer_json(&s.balancer.clone().unwrap_or_default()),
        "chunkservers": s.chunkservers.iter().map(server_json).collect::<Vec<_>>(),
    });
    for (state, n) in state_counts(s) {
        v[format!("chunkservers_{state}")] = json!(n);
    }
    v
}

/// Per-second operation rates over the last hour, for the overview charts.
pub fn rates_json(m: &Master) -> Value {
    let metrics = m.state.lock().metrics.clone();
    let series = metrics.rate_series();
    let mut out = serde_json::Map::new();
    for (i, r) in RATES.iter().enumerate() {
        let points: Vec<Value> = series.iter().map(|(t, v)| json!([t, v[i]])).collect();
        out.insert(r.name().to_string(), Value::Array(points));
    }
    json!({
        "interval_ms": RATE_SAMPLE_INTERVAL.as_millis() as u64,
        "series": out,
    })
}

pub fn overview_json(m: &Master) -> Value {
    let mut v = status_json(&m.cluster_status());
    v["rates"] = rates_json(m);
    v
}

fn chunk_row(st: &State, chunk: rdfs_proto::ids::ChunkId) -> Option<Value> {
    let meta = st.ns.chunk(chunk)?;
    let h = st.chunk_health(chunk)?;
    Some(json!({
        "chunk_id": chunk.0,
        "version": meta.version.0,
        "path": st.ns.path_of(meta.inode),
        "index": meta.index,
        "expected": h.expected,
        "live": h.counted,
        "problem": h.problem(),
        "replicas": st.replica_addrs(chunk, meta.version),
        "in_flight": st.cmap.pending_for(chunk).len(),
    }))
}

/// Block health: summary, replication matrix, problem chunks with their files, and the
/// repair queue in the order the scan repairs it (fewest live replicas first).
pub fn blocks_json(m: &Master) -> Value {
    let st = m.state.lock();
    let snapshot = st.health_snapshot();
    let health = &snapshot.summary;
    let (problems, queue) = (&snapshot.problems, &snapshot.queue);
    let rate = st.metrics.recent_rate(
        crate::metrics::Rate::ReplicasCopied,
        crate::metrics::REPAIR_RATE_WINDOW,
    );
    let matrix: Vec<Value> = health
        .matrix
        .iter()
        .map(|((expected, live), n)| json!({"expected": expected, "live": live, "chunks": n}))
        .collect();
    let list = |ids: &mut dyn Iterator<Item = rdfs_proto::ids::ChunkId>| -> Vec<Value> {
        ids.take(MAX_LISTED_CHUNKS)
            .filter_map(|c| chunk_row(&st, c))
            .collect()
    };
    json!({
        "chunks": health.chunks,
        "under_replicated": health.under_replicated,
        "over_replicated": health.over_replicated,
        "corrupt": health.corrupt,
        "missing": health.missing,
        "healthy": health.under_replicated + health.over_replicated + health.corrupt + health.missing == 0,
        "repair": {
            "copies_needed": health.copies_needed,
            "in_flight": st.cmap.pending_count(),
            "copies_per_sec": rate,
            "eta_ms": crate::status::repair_eta_ms(health.copies_needed, rate),
        },
        "matrix": matrix,
        "problems_total": problems.len(),
        "problems": list(&mut problems.iter().map(|p| p.2)),
        "repair_queue_total": queue.len(),
        "repair_queue": list(&mut queue.iter().map(|q| q.chunk)),
        "listed_max": MAX_LISTED_CHUNKS,
        "as_of_ms_ago": snapshot.taken.elapsed().as_millis() as u64,
    })
}

/// One chunkserver with (some of) the chunks it holds; `None` for an unknown id.
pub fn server_detail_json(m: &Master, id: u64) -> Option<Value> {
    let st = m.state.lock();
    let server = st.cmap.server(rdfs_proto::ids::ChunkserverId(id))?;
    let mut v = server_json(&st.server_status(server, Instant::now()));
    let mut held = st.cmap.chunks_on(server.id);
    held.sort_unstable();
    v["chunks_held"] = json!(held.len());
    v["chunk_list"] = Value::Array(
        held.iter()
            .take(MAX_LISTED_CHUNKS)
            .filter_map(|c| chunk_row(&st, *c))
            .collect(),
    );
    Some(v)
}
