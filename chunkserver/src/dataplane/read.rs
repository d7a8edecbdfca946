//! `Read` (verified bytes out, in packets) and `Replicate` (a whole replica in, installed
//! atomically over any older copy).
//!
//! Invariant: no byte leaves this server before the CRC of its block has been checked; a
//! mismatch quarantines the replica and triggers an immediate report to the master.

use std::sync::Arc;

use rdfs_proto::dataplane::{DataConn, FrameError, Msg, ReadRequest, ReplicateRequest};
use rdfs_proto::limits::PACKET_BYTES;
use rdfs_proto::ErrorCode;
use tracing::Instrument;

use crate::node::{Node, ReqError};
use crate::store::StoreError;

pub(super) async fn handle_read(
    node: &Arc<Node>,
    conn: &mut DataConn,
    req: ReadRequest,
) -> Result<(), FrameError> {
    let span =
        tracing::debug_span!("read", chunk_id = %req.chunk_id, offset = req.offset, len = req.len);
    async move {
        let (start, end) = match read_range(node, &req) {
            Ok(range) => range,
            Err(e) => return conn.send(&Msg::error(e.code, e.message), &[]).await,
        };
        // The first packet is verified before `ReadOk`, so a small read fails cleanly.
        let first = match read_packet(node, &req, start, end).await {
            Ok(bytes) => bytes,
            Err(e) => return conn.send(&Msg::error(e.code, e.message), &[]).await,
        };
        conn.write(&Msg::ReadOk { len: end - start }, &[]).await?;
        let mut pos = start;
        let mut packet = first;
        while !packet.is_empty() {
            pos += packet.len() as u64;
            conn.send(&Msg::Data { last: pos == end }, &packet).await?;
            if pos == end {
                break;
            }
            packet = match read_packet(node, &req, pos, end).await {
                Ok(bytes) => bytes,
                // Mid-stream: the error frame ends the conversation.
                Err(e) => return conn.send(&Msg::error(e.code, e.message), &[]).await,
            };
        }
        conn.flush().await
    }
    .instrument(span)
    .await
}

/// Checks the version and clips the range to the bytes this replica holds.
fn read_range(node: &Node, req: &ReadRequest) -> Result<(u64, u64), ReqError> {
    let st = node.store.state(req.chunk_id)?;
    if st.quarantined {
        return Err(StoreError::Quarantined(req.chunk_id).into());
    }
    if st.version != req.version {
        return Err(ReqError::new(
            ErrorCode::StaleVersion,
            format!(
                "chunk {}: replica holds version {}, read is for {}",
                req.chunk_id, st.version, req.version
            ),
        ));
    }
    let end = req.offset.saturating_add(req.len).min(st.len);
    Ok((req.offset.min(end), end))
}

/// Reads and verifies the next packet of `[pos, end)`; a CRC failure is reported.
async fn read_packet(
    node: &Arc<Node>,
    req: &ReadRequest,
    pos: u64,
    end: u64,
) -> Result<Vec<u8>, ReqError> {
    let id = req.chunk_id;
    let n = (end - pos).min(PACKET_BYTES as u64);
    if n == 0 {
        return Ok(Vec::new());
    }
    let bytes = node
        .blocking(move |s| s.read(id, pos, n))
        .await
        .inspect_err(|e| {
            if matches!(e, StoreError::ChecksumMismatch { .. }) {
                node.report_bad(id);
            }
        })?;
    if bytes.len() as u64 != n {
        // The replica shrank under us (deleted or replaced): do not send a short stream.
        return Err(ReqError::new(
            ErrorCode::NoSuchChunk,
            format!("chunk {id}: replica changed during read"),
        ));
    }
    Ok(bytes)
}

pub(super) async fn handle_replicate(
    node: &Arc<Node>,
    conn: &mut DataConn,
    req: ReplicateRequest,
) -> Result<(), FrameError> {
    let span = tracing::info_span!("replicate_in", chunk_id = %req.chunk_id, version = %req.version, len = req.len);
    async move {
        let _lock = node.lock_chunk(req.chunk_id).await;
        let res = receive_replica(node, conn, &req).await?;
        let reply = match res {
            Ok(()) => Msg::Ok,
            Err(e) => {
                tracing::warn!(code = ?e.code, error = %e.message, "replica not installed");
                Msg::error(e.code, e.message)
            }
        };
        conn.send(&reply, &[]).await
    }
    .instrument(span)
    .await
}

/// Receives exactly `len` bytes into a temporary copy and installs it. The outer `Err`
/// is a broken connection; the inner one a refusal, answered after the bytes are consumed.
async fn receive_replica(
    node: &Arc<Node>,
    conn: &mut DataConn,
    req: &ReplicateRequest,
) -> Result<Result<(), ReqError>, FrameError> {
    let id = req.chunk_id;
    let mut refusal = check_replicate(node, req).await.err();
    let mut installer = None;
    if refusal.is_none() {
        match node.blocking(move |s| s.begin_install(id)).await {
            Ok(i) => installer = Some(i),
            Err(e) => refusal = Some(e.into()),
        }
    }
    let mut received = 0u64;
    while received < req.len {
        let frame = conn.recv().await?;
        let Msg::Data { last } = frame.msg else {
            return Err(FrameError::Decode(format!(
                "expected data, got {}",
                frame.msg.kind()
            )));
        };
        received += frame.payload.len() as u64;
        if received > req.len || (last && received < req.len) {
            return Err(FrameError::Decode(format!(
                "replica stream of {received} bytes, announced {}",
                req.len
            )));
        }
        if let Some(mut inst) = installer.take() {
            let payload = frame.payload;
            match node
                .blocking(move |_| inst.append(&payload).map(|()| inst))
                .await
            {
                Ok(inst) => installer = Some(inst),
                Err(e) => refusal = Some(e.into()),
            }
        }
    }
    if let Some(e) = refusal {
        return Ok(Err(e));
    }
    let Some(inst) = installer else {
        return Ok(Err(ReqError::new(ErrorCode::Internal, "replica copy lost")));
    };
    let (version, len) = (req.version, req.len);
    match node
        .blocking(move |s| s.finish_install(inst, version, len))
        .await
    {
        Ok(info) => {
            node.report_added(info);
            Ok(Ok(()))
        }
        Err(e) => Ok(Err(e.into())),
    }
}

async fn check_replicate(node: &Node, req: &ReplicateRequest) -> Result<(), ReqError> {
    node.check_epoch(req.epoch).await?;
    let limit = node.store.max_chunk_bytes();
    if req.len > limit {
        return Err(ReqError::new(
            ErrorCode::InvalidArgument,
            format!(
                "replica of {} bytes exceeds the chunk size {limit}",
                req.len
            ),
        ));
    }
    match node.store.state(req.chunk_id) {
        Ok(st) if !st.quarantined && st.version > req.version => Err(ReqError::new(
            ErrorCode::StaleVersion,
            format!(
                "chunk {}: we hold newer version {}",
                req.chunk_id, st.version
            ),
        )),
        _ => Ok(()),
    }
}
