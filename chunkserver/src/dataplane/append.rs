//! `Append` and `Pad`: record append, where the primary chooses the offset.
//!
//! The client sends one framed record (at most a quarter chunk) to the primary, which holds
//! the chunk's mutation lock for the whole conversation, receives the record, checks the
//! fence and the record's framing, and then:
//! - if the chunk already holds this record id (a retry), re-sends it to the chain at the
//!   same offset, so every replica of the current chain has it exactly there;
//! - if it fits, appends it at the end of the primary's data;
//! - otherwise pads the chunk to its full size on every replica and answers `ChunkFull`.
//!
//! Each mutation takes a serial from the primary; the record goes down the chain with its
//! offset and serial (`AppendRequest.offset = Some`), each replica writing locally while
//! forwarding, and the primary acknowledges only after the whole chain did (and, with
//! `sync`, fsynced). Replicas apply the primary's offset whatever their own length: a replica
//! shorter than the primary (it missed an unacknowledged record) gets a zero gap, a longer
//! one has unacknowledged bytes overwritten.

use std::sync::Arc;

use rdfs_proto::dataplane::{
    AppendAck, AppendRequest, DataConn, FrameError, Msg, PadRequest, WriteAck,
};
use rdfs_proto::limits::PACKET_BYTES;
use rdfs_proto::record::{self, RecordId};
use rdfs_proto::ErrorCode;
use tracing::Instrument;

use super::write::{check_fence, downstream_ack, drain, forward, next_data, open_downstream};
use crate::node::{Node, ReqError};
use crate::store::Placement;

pub(super) async fn handle_append(
    node: &Arc<Node>,
    conn: &mut DataConn,
    req: AppendRequest,
) -> Result<(), FrameError> {
    let span = tracing::debug_span!(
        "append", chunk_id = %req.fence.chunk_id, record = %req.record_id, len = req.len,
        offset = ?req.offset, serial = req.serial
    );
    async move {
        let limit = record::max_framed_bytes(node.store.max_chunk_bytes());
        if req.len > limit {
            drain(conn, req.len).await?;
            let msg = format!(
                "chunk {}: framed record of {} bytes exceeds a quarter chunk ({limit} bytes)",
                req.fence.chunk_id, req.len
            );
            return conn
                .send(&Msg::error(ErrorCode::InvalidArgument, msg), &[])
                .await;
        }
        let _lock = node.lock_chunk(req.fence.chunk_id).await;
        let framed = receive_record(conn, req.len).await?;
        let reply = append(node, &req, framed)
            .await
            .unwrap_or_else(|e| Msg::error(e.code, e.message));
        if let Msg::Error { code, message } = &reply {
            tracing::warn!(?code, error = %message, "append failed");
        }
        conn.send(&reply, &[]).await
    }
    .instrument(span)
    .await
}

/// Reads exactly `len` bytes of `Data` (already bounded by a quarter chunk).
async fn receive_record(conn: &mut DataConn, len: u64) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        let (payload, last) = next_data(conn, len - out.len() as u64).await?;
        out.extend_from_slice(&payload);
        if last && (out.len() as u64) < len {
            return Err(FrameError::Decode(format!(
                "append ended after {} of {len} bytes",
                out.len()
            )));
        }
    }
    Ok(out)
}

async fn append(node: &Arc<Node>, req: &AppendRequest, framed: Vec<u8>) -> Result<Msg, ReqError> {
    let id = req.fence.chunk_id;
    check_fence(node, &req.fence).await?;
    let (rid, _) = record::check(&framed).map_err(|e| {
        ReqError::new(
            ErrorCode::Malformed,
            format!("chunk {id}: not a framed record: {e}"),
        )
    })?;
    if rid != req.record_id {
        return Err(ReqError::new(
            ErrorCode::Malformed,
            format!(
                "chunk {id}: record is framed as {rid}, request names {}",
                req.record_id
            ),
        ));
    }
    let offset = match req.offset {
        Some(offset) => offset,
        None => match place(node, id, rid, framed.len() as u64).await? {
            Placement::Existing(at) | Placement::New(at) => at,
            Placement::Full { len } => return pad_chain(node, req, len).await,
        },
    };
    let asked = req.offset.map(|_| req.serial);
    let serial = node.blocking(move |s| s.begin_mutation(id, asked)).await?;
    let forwarded = Msg::Append(AppendRequest {
        downstream: req.downstream.get(1..).unwrap_or_default().to_vec(),
        serial,
        offset: Some(offset),
        ..req.clone()
    });
    let framed = Arc::new(framed);
    let local_bytes = framed.clone();
    let local = node.blocking(move |s| {
        s.write_record(id, offset, &local_bytes)?;
        Ok(())
    });
    let chain = ChainReq {
        chunk: id,
        downstream: &req.downstream,
        sync: req.sync,
    };
    let chunk_len = chain.run(node, &forwarded, &framed, local).await?;
    Ok(Msg::AppendOk(AppendAck {
        offset,
        chunk_len,
        serial,
    }))
}

async fn place(
    node: &Arc<Node>,
    id: rdfs_proto::ids::ChunkId,
    rid: RecordId,
    framed_len: u64,
) -> Result<Placement, ReqError> {
    let chunk_size = node.store.max_chunk_bytes();
    Ok(node
        .blocking(move |s| s.place_record(id, rid, framed_len, chunk_size))
        .await?)
}

/// The record does not fit: pad every replica of the chain, then tell the client.
async fn pad_chain(node: &Arc<Node>, req: &AppendRequest, len: u64) -> Result<Msg, ReqError> {
    let id = req.fence.chunk_id;
    let to_len = node.store.max_chunk_bytes();
    tracing::debug!(chunk_id = %id, len, to_len, "record does not fit; padding the chunk");
    let serial = node.blocking(move |s| s.begin_mutation(id, None)).await?;
    let pad = PadRequest {
        fence: req.fence.clone(),
        to_len,
        downstream: req.downstream.clone(),
        sync: req.sync,
        serial,
    };
    let chunk_len = pad_locally_and_downstream(node, &pad).await?;
    Ok(Msg::ChunkFull { chunk_len })
}

/// `Pad` from a primary: zero-fill to `to_len`, forward, acknowledge after the chain did.
pub(super) async fn handle_pad(
    node: &Arc<Node>,
    conn: &mut DataConn,
    req: PadRequest,
) -> Result<(), FrameError> {
    let span = tracing::debug_span!("pad", chunk_id = %req.fence.chunk_id, to_len = req.to_len, serial = req.serial);
    async move {
        let _lock = node.lock_chunk(req.fence.chunk_id).await;
        let reply = async {
            check_fence(node, &req.fence).await?;
            let id = req.fence.chunk_id;
            let serial = req.serial;
            node.blocking(move |s| s.begin_mutation(id, Some(serial)))
                .await?;
            pad_locally_and_downstream(node, &req).await
        }
        .await
        .map_or_else(
            |e: ReqError| Msg::error(e.code, e.message),
            |chunk_len| {
                Msg::WriteOk(WriteAck {
                    chunk_len,
                    serial: req.serial,
                })
            },
        );
        conn.send(&reply, &[]).await
    }
    .instrument(span)
    .await
}

/// Pads this replica and (when there is one) the rest of the chain given in `pad`.
async fn pad_locally_and_downstream(node: &Arc<Node>, pad: &PadRequest) -> Result<u64, ReqError> {
    let id = pad.fence.chunk_id;
    let to_len = pad.to_len;
    let forwarded = Msg::Pad(PadRequest {
        downstream: pad.downstream.get(1..).unwrap_or_default().to_vec(),
        ..pad.clone()
    });
    let local = node.blocking(move |s| {
        s.pad(id, to_len)?;
        Ok(())
    });
    let chain = ChainReq {
        chunk: id,
        downstream: &pad.downstream,
        sync: pad.sync,
    };
    chain.run(node, &forwarded, &[], local).await
}

/// One mutation's view of the chain below us.
struct ChainReq<'a> {
    chunk: rdfs_proto::ids::ChunkId,
    downstream: &'a [String],
    sync: bool,
}

impl ChainReq<'_> {
    /// Runs `local` while sending `forwarded` (+ `payload` as `Data`) to the next replica,
    /// then commits locally while the downstream acknowledges. Returns our chunk length.
    async fn run(
        &self,
        node: &Arc<Node>,
        forwarded: &Msg,
        payload: &[u8],
        local: impl std::future::Future<Output = Result<(), crate::store::StoreError>>,
    ) -> Result<u64, ReqError> {
        let remote = async {
            let Some(addr) = self.downstream.first() else {
                return Ok(None);
            };
            let mut down = open_downstream(addr, self.downstream.len(), forwarded).await?;
            let packets = payload.len().div_ceil(PACKET_BYTES);
            for (i, packet) in payload.chunks(PACKET_BYTES).enumerate() {
                forward(Some(&mut down), i + 1 == packets, packet).await?;
            }
            Ok::<_, ReqError>(Some(down))
        };
        let (local, remote) = tokio::join!(local, remote);
        local?;
        let mut down = remote?;
        let id = self.chunk;
        let sync = self.sync;
        let commit = node.blocking(move |s| s.commit(id, sync));
        let acked = async {
            match down.as_mut() {
                Some(d) => downstream_ack(d).await,
                None => Ok(()),
            }
        };
        let (committed, acked) = tokio::join!(commit, acked);
        let chunk_len = committed?;
        acked?;
        Ok(chunk_len)
    }
}
