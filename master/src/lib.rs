//! rdfs-master: the metadata server.
//!
//! # Layout
//! - [`config`]: [`MasterConfig`] and its defaults.
//! - [`namespace`]: the pure inode tree and the [`namespace::Op`]s that change it.
//! - [`oplog`], [`checkpoint`], [`recovery`], [`identity`]: durability on disk.
//! - `state`: the shared state behind one lock and the mutation path (log before answer).
//! - `chunk_map`, `chunkservers`, `placement`, `lease`, `write`, `replication`, `fsck`:
//!   chunk locations, chunkserver calls, leases and version bumps, re-replication.
//! - `service`: the tonic `Master` service; `admin`: safe mode, decommission, balance,
//!   setrep; `balance`: the balancer; `status`, `metrics`: cluster status and counters.
//! - [`dashboard`]: the HTTP dashboard, JSON API and `/metrics` (only with `--http`).
//!
//! [`run`] locks and opens the data directory, recovers, serves until shutdown, then
//! writes a checkpoint.

mod admin;
pub mod balance;
mod checkpoint_task;
mod chunk_map;
mod chunkservers;
mod fsck;
mod fsutil;
mod handles;
mod inode_ops;
mod lease;
mod metrics;
mod placement;
mod replication;
mod retry_cache;
mod service;
mod snapshot;
mod state;
mod status;
mod trash;
mod write;

pub mod checkpoint;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod identity;
pub mod namespace;
pub mod oplog;
pub mod recovery;

#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rdfs_proto::limits::MAX_GRPC_MESSAGE_BYTES;
use rdfs_proto::pb::master_server::MasterServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::MasterConfig;
pub use error::MasterError;

use crate::service::MasterService;
use crate::state::{Master, State};

/// Longest wait for the op-log writer thread to finish at shutdown.
const WRITER_JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often expired client sessions are dropped and orphans nobody holds are removed.
const SESSION_REAP_INTERVAL: Duration = Duration::from_secs(1);

/// Runs a master on `listener` until `shutdown` is cancelled; then checkpoints and returns.
pub async fn run(
    config: MasterConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    run_with_http(config, listener, None, shutdown).await
}

/// Like [`run`], also serving the dashboard on `http` when given.
pub async fn run_with_http(
    config: MasterConfig,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    config.validate()?;
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir)
        .map_err(|e| MasterError::io(&dir, "creating data directory", e))?;
    let _lock = identity::lock_dir(&dir)?;
    let (ident, _fresh) = identity::open_or_init(&dir, config.chunk_size_bytes)?;
    let rec_dir = dir.clone();
    let rec = tokio::task::spawn_blocking(move || recovery::recover(&rec_dir))
        .await
        .map_err(|e| MasterError::Recovery(format!("recovery task: {e}")))??;
    let (log, writer) = oplog::start_writer(
        &oplog::segment_dir(&dir),
        rec.last_segment.clone(),
        rec.last_seq + 1,
    )?;
    let mut st = State::new(rec.ns, rec.last_seq, config.replication);
    st.last_checkpoint_seq = rec.checkpoint_seq;
    st.max_transfers_per_source = config.max_transfers_per_source;
    st.chunk_size_bytes = ident.chunk_size;
    st.orphan_grace_until = std::time::Instant::now() + config.session_ttl;
    let boot_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let master = Arc::new(Master {
        config,
        identity: ident,
        state: Mutex::new(st),
        log,
        lease_serial: AtomicU64::new(boot_ms),
        retry: retry_cache::RetryCache::default(),
        started: std::time::Instant::now(),
    });
    tracing::info!(
        cluster_id = %master.identity.cluster_id,
        last_seq = rec.last_seq,
        safe_mode = master.state.lock().safe_mode,
        addr = ?listener.local_addr().ok(),
        "master serving"
    );
    let tasks = shutdown.child_token();
    let mut bg = spawn_background(&master, &tasks);
    if let Some(http) = http {
        tracing::info!(addr = ?http.local_addr().ok(), "dashboard serving");
        let (m, s) = (master.clone(), tasks.clone());
        bg.push(tokio::spawn(async move {
            if let Err(e) = dashboard::serve(m, http, s).await {
                tracing::error!(error = %e, "dashboard stopped");
            }
        }));
    }
    let served = serve(&master, listener, shutdown.clone()).await;
    tasks.cancel();
    for t in bg {
        let _ = t.await;
    }
    let ckpt = checkpoint_task::checkpoint(&master).await;
    stop_writer(&master, writer).await;
    served?;
    ckpt?;
    tracing::info!("master stopped");
    Ok(())
}

async fn serve(
    master: &Arc<Master>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    let svc = MasterServer::new(MasterService {
        master: master.clone(),
    })
    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    // `Server::tcp_nodelay` only applies to listeners tonic binds itself: set it on each
    // accepted socket, or Nagle holds back the tail of a reply until the client's delayed
    // ACK (40 ms on Linux), which made about one metadata call in three take 40+ ms.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |accepted| {
            if let Ok(stream) = &accepted {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
            }
            accepted
        },
    );
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(|e| MasterError::Transport(e.to_string()))
}

fn spawn_background(
    master: &Arc<Master>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (m, s) = (master.clone(), stop.clone());
    let scan = tokio::spawn(async move {
        let mut tick = tokio::time::interval(m.config.replication_scan_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = s.cancelled() => break,
                _ = tick.tick() => {}
            }
            let timeout = m.config.heartbeat_timeout;
            let started = std::time::Instant::now();
            let mut st = m.state.lock();
            st.scan(started, timeout);
            // The scan holds the state lock: its length is how long metadata calls may stall.
            st.last_scan_duration = started.elapsed();
        }
    });
    let ckpt = tokio::spawn(checkpoint_task::run_periodic(master.clone(), stop.clone()));
    let (m, s) = (master.clone(), stop.clone());
    let sessions = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SESSION_REAP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = s.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = m.reap_sessions(std::time::Instant::now()).await {
                tracing::warn!(error = %e, "removing released orphans failed");
            }
        }
    });
    let metrics = master.state.lock().metrics.clone();
    let s = stop.clone();
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(metrics::RATE_SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; the baseline is already taken
        loop {
            tokio::select! {
                _ = s.cancelled() => break,
                _ = tick.tick() => metrics.sample(),
            }
        }
    });
    let (m, s) = (master.clone(), stop.clone());
    let trash = tokio::spawn(async move {
        let mut tick = tokio::time::interval(trash::sweep_interval(m.config.trash_grace));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = s.cancelled() => break,
                _ = tick.tick() => {}
            }
            match m.sweep_trash().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "expired trash entries purged"),
                // Safe mode refuses nothing here; a failed log stops the master anyway.
                Err(e) => tracing::warn!(error = %e, "purging expired trash failed"),
            }
        }
    });
    vec![scan, ckpt, sessions, sampler, trash]
}

/// Tells the writer thread to stop after everything queued, and waits for it.
async fn stop_writer(master: &Master, writer: std::thread::JoinHandle<()>) {
    if let Ok(permit) = master.log.tx.reserve().await {
        permit.send(oplog::LogCmd::Stop);
    }
    let join = tokio::task::spawn_blocking(move || writer.join());
    if tokio::time::timeout(WRITER_JOIN_TIMEOUT, join)
        .await
        .is_err()
    {
        tracing::warn!("op-log writer did not stop in time");
    }
}
