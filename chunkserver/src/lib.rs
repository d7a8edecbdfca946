//! rdfs-chunkserver: stores chunks as checksummed files and moves their bytes.
//!
//! # Layout
//! - [`store`]: the chunk store (`.data` + `.meta` per replica, one CRC32 per 64 KiB block,
//!   torn-tail recovery, quarantine of corrupt replicas). Synchronous.
//! - [`state`]: the data directory's `LOCK` and `STATE` (cluster id, node id, highest epoch).
//! - [`node`]: what the data plane and the master loop share (store, epoch fence,
//!   per-chunk mutation locks, pending reports).
//! - [`dataplane`]: the framed TCP server: fenced pipelined writes, verified reads,
//!   version bumps from the master, incoming replicas.
//! - [`replicate`]: outgoing replica copies ordered by the master.
//! - [`heartbeat`]: registration, heartbeats, block reports to every master; commands are
//!   obeyed only from the active one.
//! - [`scrub`]: the background scrubber (bounded-rate CRC verification of idle replicas).
//! - [`witness`]: the witness lease the masters' failover safety rests on.
//!
//! Callers: `dfs chunkserver` (rdfs-ops) and the test harness call [`run`]; tests of the
//! data plane alone use [`node::Node::open`] and [`dataplane::serve`].

pub mod dataplane;
pub mod error;
pub mod heartbeat;
pub mod node;
pub mod replicate;
pub mod scrub;
pub mod state;
pub mod store;
pub mod witness;

#[cfg(test)]
mod master_tests;

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ChunkserverError;
pub use node::Node;

/// Longest `run` waits at shutdown for background tasks to let go of the data directory.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Default interval between full block reports.
pub const DEFAULT_BLOCK_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// How to run one chunkserver.
#[derive(Debug, Clone)]
pub struct ChunkserverConfig {
    /// Holds `LOCK`, `STATE` and `chunks/`; created and initialised when empty.
    pub data_dir: PathBuf,
    /// Control-plane addresses; each is tried in turn and the one that answers is used.
    pub masters: Vec<String>,
    /// Data-plane address told to the master; default: the listener's local address.
    pub advertise_addr: Option<String>,
    /// Cap on the bytes we offer; default: free space on the file system plus our use.
    pub capacity_bytes: Option<u64>,
    /// Interval between full block reports.
    pub block_report_interval: Duration,
    /// Bound on the scrubber's reads; 0 turns it off.
    pub scrub_rate_bytes_per_sec: u64,
}

impl ChunkserverConfig {
    pub fn new(data_dir: PathBuf, masters: Vec<String>) -> Self {
        ChunkserverConfig {
            data_dir,
            masters,
            advertise_addr: None,
            capacity_bytes: None,
            block_report_interval: DEFAULT_BLOCK_REPORT_INTERVAL,
            scrub_rate_bytes_per_sec: scrub::DEFAULT_SCRUB_RATE_BYTES_PER_SEC,
        }
    }
}

/// Runs a chunkserver until `shutdown` is cancelled (Ok) or a fatal error (Err): the data
/// directory is locked by another process, its state is corrupt, or the master serves
/// another cluster (nothing is deleted then).
pub async fn run(
    config: ChunkserverConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ChunkserverError> {
    if config.masters.is_empty() {
        return Err(ChunkserverError::NoMasters);
    }
    let data_dir = config.data_dir.clone();
    let capacity = config.capacity_bytes;
    let node = tokio::task::spawn_blocking(move || Node::open(&data_dir, capacity))
        .await
        .map_err(|e| ChunkserverError::Task(e.to_string()))??;
    let data_addr = match config.advertise_addr.clone() {
        Some(addr) => addr,
        None => listener
            .local_addr()
            .map_err(ChunkserverError::Listener)?
            .to_string(),
    };
    // Our own token: a fatal master-loop error stops the data plane too.
    let stop = shutdown.child_token();
    let dataplane = tokio::spawn(dataplane::serve(node.clone(), listener, stop.clone()));
    let scrubber = tokio::spawn(scrub::run(
        node.clone(),
        config.scrub_rate_bytes_per_sec,
        stop.clone(),
    ));
    let loop_cfg = heartbeat::MasterLoopConfig {
        masters: config.masters,
        data_addr,
        block_report_interval: config.block_report_interval,
    };
    let res = heartbeat::run(node.clone(), loop_cfg, stop.clone()).await;
    stop.cancel();
    if let Err(e) = dataplane.await {
        tracing::warn!(error = %e, "data-plane task failed");
    }
    if let Err(e) = scrubber.await {
        tracing::warn!(error = %e, "scrubber task failed");
    }
    release(node).await;
    res
}

/// Waits (bounded) until background tasks have dropped the node, so the data directory's
/// lock is free when `run` returns and a restart on the same directory succeeds.
async fn release(node: std::sync::Arc<Node>) {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
    while std::sync::Arc::strong_count(&node) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if std::sync::Arc::strong_count(&node) > 1 {
        tracing::warn!("background tasks still hold the chunk store after shutdown");
    }
}
