//! Outgoing re-replication: on the master's `ReplicateChunk` command, push a verified copy
//! of a local replica to another chunkserver (`Replicate` + `Data`… → `Ok`).
//!
//! Bounded twice: a queue of `REPLICATION_QUEUE` commands (extra ones are dropped; the
//! master re-issues them at its next scan) and `REPLICATION_CONCURRENCY` transfers at once.

use std::sync::Arc;

use rdfs_proto::dataplane::{DataConn, FrameError, Msg, ReplicateRequest};
use rdfs_proto::ids::{ChunkId, ChunkVersion};
use rdfs_proto::limits::PACKET_BYTES;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::node::Node;
use crate::store::StoreError;

/// Most replications pushed at the same time.
pub const REPLICATION_CONCURRENCY: usize = 4;
/// Most replicate commands waiting for a free transfer slot.
pub const REPLICATION_QUEUE: usize = 64;

/// One `ReplicateChunk` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicateJob {
    pub chunk_id: ChunkId,
    pub version: ChunkVersion,
    pub target: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    #[error("local replica: {0}")]
    Store(#[from] StoreError),
    #[error("local replica is at version {held}, command is for {wanted}")]
    WrongVersion {
        held: ChunkVersion,
        wanted: ChunkVersion,
    },
    #[error("target {target}: {source}")]
    Conn { target: String, source: FrameError },
    #[error("target {target} refused: {message}")]
    Refused { target: String, message: String },
}

/// Queue of replication commands and the transfers in flight.
#[derive(Clone)]
pub struct Replicator {
    tx: mpsc::Sender<ReplicateJob>,
    slots: Arc<Semaphore>,
}

impl Replicator {
    /// Starts the dispatcher; it stops with `shutdown`.
    pub fn start(node: Arc<Node>, shutdown: CancellationToken) -> Replicator {
        let (tx, rx) = mpsc::channel(REPLICATION_QUEUE);
        let slots = Arc::new(Semaphore::new(REPLICATION_CONCURRENCY));
        tokio::spawn(dispatch(node, rx, slots.clone(), shutdown));
        Replicator { tx, slots }
    }

    /// Queues a command; a full queue drops it (the master will ask again).
    pub fn submit(&self, job: ReplicateJob) {
        if let Err(e) = self.tx.try_send(job) {
            tracing::warn!(error = %e, "replication queue full; command dropped");
        }
    }

    pub fn active_transfers(&self) -> u32 {
        (REPLICATION_CONCURRENCY - self.slots.available_permits()) as u32
    }
}

async fn dispatch(
    node: Arc<Node>,
    mut rx: mpsc::Receiver<ReplicateJob>,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let job = tokio::select! {
            job = rx.recv() => job,
            _ = shutdown.cancelled() => None,
        };
        let Some(job) = job else { return };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let node = node.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("replicate_out", chunk_id = %job.chunk_id, version = %job.version, target = %job.target);
        tokio::spawn(
            async move {
                tokio::select! {
                    res = push_replica(&node, &job) => match res {
                        Ok(len) => tracing::info!(len, "replica pushed"),
                        Err(e) => tracing::warn!(error = %e, "replication failed"),
                    },
                    _ = shutdown.cancelled() => {}
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Sends our verified replica of `job.chunk_id` to `job.target`; returns the bytes sent.
pub async fn push_replica(node: &Arc<Node>, job: &ReplicateJob) -> Result<u64, ReplicateError> {
    let id = job.chunk_id;
    // A consistent snapshot: no mutation of this chunk while it is copied.
    let _lock = node.lock_chunk(id).await;
    let st = node.store.state(id)?;
    if st.quarantined {
        return Err(StoreError::Quarantined(id).into());
    }
    if st.version != job.version {
        return Err(ReplicateError::WrongVersion {
            held: st.version,
            wanted: job.version,
        });
    }
    let target = job.target.clone();
    let conn_err = |source| ReplicateError::Conn {
        target: target.clone(),
        source,
    };
    let mut conn = DataConn::connect(&job.target).await.map_err(conn_err)?;
    let req = ReplicateRequest {
        chunk_id: id,
        version: st.version,
        epoch: node.highest_epoch(),
        len: st.len,
    };
    conn.send(&Msg::Replicate(req), &[])
        .await
        .map_err(conn_err)?;
    let mut pos = 0u64;
    while pos < st.len {
        let n = (st.len - pos).min(PACKET_BYTES as u64);
        let bytes = node
            .blocking(move |s| s.read(id, pos, n))
            .await
            .inspect_err(|e| {
                if matches!(e, StoreError::ChecksumMismatch { .. }) {
                    node.report_bad(id);
                }
            })?;
        if bytes.len() as u64 != n {
            return Err(StoreError::NoSuchChunk(id).into());
        }
        pos += n;
        conn.send(
            &Msg::Data {
                last: pos == st.len,
            },
            &bytes,
        )
        .await
        .map_err(conn_err)?;
    }
    let reply = conn.recv().await.map_err(conn_err)?;
    match reply.msg {
        Msg::Ok => Ok(st.len),
        Msg::Error { code, message } => Err(ReplicateError::Refused {
            target: job.target.clone(),
            message: format!("{code:?}: {message}"),
        }),
        other => Err(ReplicateError::Refused {
            target: job.target.clone(),
            message: format!("unexpected {}", other.kind()),
        }),
    }
}
