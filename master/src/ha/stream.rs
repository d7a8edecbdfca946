//! The primary's side of the op-log stream (`MasterHa/Follow`) and of checkpoint transfer.
//!
//! A standby opens `Follow` with its last seq and epoch history. The primary answers with
//! `TRUNCATE` when the standby's newest records are not in its log (the standby cuts back
//! and reconnects), `NEED_CHECKPOINT` when the records it needs were removed, or else streams
//! every durable record after the standby's last one, whole group-commit batches at a time
//! (from memory when recent, from the segments otherwise), with a keepalive every
//! `renew_every` that says whether the primary holds its lease. The standby answers with the
//! seq it has made durable, which is what the primary's acknowledgements wait for.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rdfs_proto::pb::{
    CheckpointChunk, FetchCheckpointRequest, FollowKind, FollowRequest, FollowResponse,
};
use rdfs_proto::ErrorCode;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::namespace::ha_meta::shared_seq;
use crate::state::Master;
use crate::{checkpoint, oplog};

/// Most bytes of records in one stream message.
pub const MAX_FOLLOW_BATCH_BYTES: usize = 4 << 20;
/// Messages queued towards one standby (each at most a batch).
const FOLLOW_QUEUE: usize = 8;
/// Bytes per checkpoint chunk message.
const CHECKPOINT_CHUNK_BYTES: usize = 1 << 20;

pub type FollowStream = Pin<Box<dyn Stream<Item = Result<FollowResponse, Status>> + Send>>;
pub type CheckpointStream = Pin<Box<dyn Stream<Item = Result<CheckpointChunk, Status>> + Send>>;

fn one(msg: FollowResponse) -> FollowStream {
    Box::pin(futures::stream::iter([Ok(msg)]))
}

impl Master {
    /// Serves one standby's `Follow` stream.
    pub async fn follow(
        self: &Arc<Self>,
        mut inbound: Streaming<FollowRequest>,
    ) -> Result<FollowStream, Status> {
        self.ha.check_primary()?;
        let hello = inbound
            .message()
            .await?
            .and_then(|m| m.hello)
            .ok_or_else(|| ErrorCode::InvalidArgument.status("follow: no hello"))?;
        if hello.cluster_id != self.identity.cluster_id {
            return Err(ErrorCode::ClusterMismatch.status(format!(
                "standby {} belongs to cluster {}, this master to {}",
                hello.standby_addr, hello.cluster_id, self.identity.cluster_id
            )));
        }
        if hello.standby_id == self.ha.me_id {
            return Err(ErrorCode::InvalidArgument.status("a master cannot follow itself"));
        }
        let theirs: Vec<_> = hello
            .epochs
            .iter()
            .map(|e| (rdfs_proto::ids::Epoch(e.epoch), e.start_seq))
            .collect();
        let (ours, last) = {
            let st = self.state.lock();
            (st.ns.ha().history(), st.last_seq)
        };
        let epoch = self.ha.epoch().0;
        // A standby that has seen a newer epoch than ours holds records of a primary that
        // came after us, acknowledged ones among them: this master is the stale one (it will
        // learn so from the witnesses) and must never tell it to cut them back.
        if let Some(newer) = theirs.iter().map(|(e, _)| e.0).filter(|e| *e > epoch).max() {
            tracing::warn!(standby = %hello.standby_addr, their_epoch = newer, epoch, "a standby has a newer epoch than this master: refusing to lead it");
            return Err(ErrorCode::Unavailable.status(format!(
                "standby {} has epoch {newer}, newer than this master's epoch {epoch}: this master is stale",
                hello.standby_addr
            )));
        }
        let shared = shared_seq(&ours, last, &theirs, hello.last_seq);
        if shared < hello.last_seq {
            tracing::warn!(standby = %hello.standby_addr, their_last = hello.last_seq, shared, "standby holds records this log does not: it must cut back");
            return Ok(one(FollowResponse {
                kind: FollowKind::Truncate as i32,
                truncate_to: shared,
                epoch,
                ..Default::default()
            }));
        }
        let next = hello.last_seq + 1;
        if next <= self.log.durable_seq() && !self.has_record(next).await? {
            tracing::info!(standby = %hello.standby_addr, next, "records the standby needs are gone: it must load a checkpoint");
            return Ok(one(FollowResponse {
                kind: FollowKind::NeedCheckpoint as i32,
                epoch,
                ..Default::default()
            }));
        }
        let conn = self
            .ha
            .attach(&hello.standby_id, &hello.standby_addr, hello.last_seq)?;
        let (tx, rx) = mpsc::channel(FOLLOW_QUEUE);
        let span = tracing::info_span!("follow", standby = %hello.standby_addr, conn);
        let acks = self.clone();
        let ack_span = span.clone();
        tokio::spawn(
            async move {
                loop {
                    match inbound.message().await {
                        Ok(Some(m)) => acks.ha.on_ack(conn, m.acked_seq),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(error = %e, "standby stream ended");
                            break;
                        }
                    }
                }
                acks.ha.detach(conn);
            }
            .instrument(ack_span),
        );
        tokio::spawn(send_loop(self.clone(), conn, next, tx).instrument(span));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// Whether record `seq` can still be read (memory tail or segments).
    async fn has_record(&self, seq: u64) -> Result<bool, Status> {
        if self.log.tail.read_from(seq, 1).is_some() {
            return Ok(true);
        }
        let dir = oplog::segment_dir(&self.config.data_dir);
        let r = tokio::task::spawn_blocking(move || oplog::read_from(&dir, seq, seq, 1))
            .await
            .map_err(|e| ErrorCode::Internal.status(e.to_string()))?
            .map_err(|e| ErrorCode::Io.status(e.to_string()))?;
        Ok(r.is_some())
    }

    /// Records from `next` on, up to what is durable: from memory, else from the segments.
    async fn records_from(
        &self,
        next: u64,
        durable: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, Status> {
        if let Some(r) = self.log.tail.read_from(next, MAX_FOLLOW_BATCH_BYTES) {
            return Ok(Some(r));
        }
        let dir = oplog::segment_dir(&self.config.data_dir);
        tokio::task::spawn_blocking(move || {
            oplog::read_from(&dir, next, durable, MAX_FOLLOW_BATCH_BYTES)
        })
        .await
        .map_err(|e| ErrorCode::Internal.status(e.to_string()))?
        .map_err(|e| ErrorCode::Io.status(e.to_string()))
    }

    /// Serves `FetchCheckpoint`: the newest checkpoint file, in chunks.
    pub async fn fetch_checkpoint(
        &self,
        r: FetchCheckpointRequest,
    ) -> Result<CheckpointStream, Status> {
        self.ha.check_primary()?;
        if r.cluster_id != self.identity.cluster_id {
            return Err(ErrorCode::ClusterMismatch.status("fetch checkpoint: another cluster"));
        }
        // A fresh one, so that the standby's log can start right after it.
        crate::checkpoint_task::checkpoint(self)
            .await
            .map_err(|e| ErrorCode::Io.status(format!("writing a checkpoint: {e}")))?;
        let dir = checkpoint::checkpoint_dir(&self.config.data_dir);
        let (seq, bytes) = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let (seq, path) = checkpoint::list(&dir)
                .map_err(|e| e.to_string())?
                .into_iter()
                .next()
                .ok_or("no checkpoint on disk")?;
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((seq, bytes))
        })
        .await
        .map_err(|e| ErrorCode::Internal.status(e.to_string()))?
        .map_err(|e| ErrorCode::Io.status(e))?;
        let total = bytes.len() as u64;
        tracing::info!(seq, bytes = total, "sending a checkpoint to a standby");
        let chunks: Vec<Result<CheckpointChunk, Status>> = bytes
            .chunks(CHECKPOINT_CHUNK_BYTES)
            .map(|c| {
                Ok(CheckpointChunk {
                    seq,
                    total_len: total,
                    data: c.to_vec(),
                })
            })
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

/// Sends records, keepalives and (on a handover) the order to take over, until the standby
/// goes away or this master stops being primary.
async fn send_loop(
    master: Arc<Master>,
    conn: u64,
    mut next: u64,
    tx: mpsc::Sender<Result<FollowResponse, Status>>,
) {
    let mut durable_rx = master.log.durable.clone();
    let every = master.ha.timing.renew_every;
    let mut told_take_over = false;
    let mut keepalive_at = tokio::time::Instant::now();
    loop {
        let Some(link) = master.ha.link().filter(|l| l.conn == conn) else {
            return;
        };
        let role_ok = matches!(
            master.ha.role(),
            super::Role::Primary | super::Role::HandingOver { .. }
        );
        if !role_ok && !told_take_over {
            return;
        }
        let durable = master.log.durable_seq();
        let base = FollowResponse {
            primary_seq: durable,
            epoch: master.ha.epoch().0,
            lease_valid: master.ha.lease_valid(std::time::Instant::now()),
            ..Default::default()
        };
        let msg = if next <= durable {
            match master.records_from(next, durable).await {
                Ok(Some((records, last))) => {
                    let m = FollowResponse {
                        kind: FollowKind::Records as i32,
                        records,
                        first_seq: next,
                        last_seq: last,
                        ..base
                    };
                    next = last + 1;
                    m
                }
                Ok(None) => FollowResponse {
                    kind: FollowKind::NeedCheckpoint as i32,
                    ..base
                },
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        } else if link.take_over && link.acked >= durable && !told_take_over {
            told_take_over = true;
            tracing::info!(seq = durable, "telling the standby to take over");
            FollowResponse {
                kind: FollowKind::TakeOver as i32,
                ..base
            }
        } else {
            tokio::select! {
                r = durable_rx.changed() => {
                    if r.is_err() {
                        return; // the log writer stopped
                    }
                    continue;
                }
                () = master.ha.wait_change(every) => continue,
                () = tokio::time::sleep_until(keepalive_at) => {}
            }
            FollowResponse {
                kind: FollowKind::Keepalive as i32,
                ..base
            }
        };
        let need_checkpoint = msg.kind == FollowKind::NeedCheckpoint as i32;
        if tx.send(Ok(msg)).await.is_err() || need_checkpoint {
            return;
        }
        keepalive_at = tokio::time::Instant::now() + every;
    }
}
