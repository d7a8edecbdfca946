//! `Read` (verified bytes out, in packets) and `Replicate` (a whole replica in, installed
//! atomically over any older copy).
//!
//! Invariant: no byte leaves this server before the CRC of its block has been checked; a
//! mismatch quarantines the replica and triggers an immediate report to the master.

use std::ops::Range;
use std::sync::Arc;

use rdfs_proto::dataplane::{DataConn, FrameError, Msg, ReadRequest, ReplicateRequest};
use rdfs_proto::ids::ChunkId;
use rdfs_proto::limits::PACKET_BYTES;
use rdfs_proto::ErrorCode;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::node::{Node, ReqError};
use crate::store::{ReplicaReader, StoreError};

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
        let id = req.chunk_id;
        let opened = node
            .blocking(move |s| s.open_reader(id, start, end - start))
            .await;
        let reader = match opened {
            Ok(reader) => reader,
            Err(e) => return conn.send(&error_msg(e.into()), &[]).await,
        };
        // The first packet is verified before `ReadOk`, so a small read fails cleanly.
        let first = spawn_packet(node, reader, Vec::new(), start, end);
        let mut packet = match finish_packet(node, id, first).await {
            Ok(packet) => packet,
            Err(e) => return conn.send(&error_msg(e), &[]).await,
        };
        conn.write(&Msg::ReadOk { len: end - start }, &[]).await?;
        let mut pos = start;
        let mut spare = Vec::new();
        while let Some(reader) = packet.reader.take() {
            if packet.range.is_empty() {
                break; // nothing held in the range: `ReadOk{0}` said it all
            }
            pos += packet.range.len() as u64;
            // Read (and verify) the next packet on a blocking thread while this one is
            // sent: the disk and the network work at the same time.
            let next = (pos < end).then(|| spawn_packet(node, reader, spare, pos, end));
            let bytes = &packet.buf[packet.range.clone()];
            conn.send(&Msg::Data { last: pos == end }, bytes).await?;
            let Some(next) = next else { break };
            spare = std::mem::take(&mut packet.buf);
            packet = match finish_packet(node, id, next).await {
                Ok(p) => p,
                // Mid-stream: the error frame ends the conversation.
                Err(e) => return conn.send(&error_msg(e), &[]).await,
            };
        }
        conn.flush().await
    }
    .instrument(span)
    .await
}

fn error_msg(e: ReqError) -> Msg {
    Msg::error(e.code, e.message)
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

/// One verified packet: `buf[range]` holds its bytes; the reader travels with it to the
/// next packet's read (None once the range is done).
struct Packet {
    reader: Option<ReplicaReader>,
    buf: Vec<u8>,
    range: Range<usize>,
}

/// What a blocking packet read hands back: the reader, and the buffer with the range of it
/// holding the bytes.
type PacketRead = (ReplicaReader, Result<(Vec<u8>, Range<usize>), StoreError>);

/// A packet being read on a blocking thread, and how many bytes it must have.
struct PacketTask {
    want: usize,
    task: JoinHandle<PacketRead>,
}

/// Starts reading the packet at `pos` of `[pos, end)` into `buf` (reused: no zeroing) on a
/// blocking thread right away, not when first polled, so it overlaps the caller's send.
fn spawn_packet(
    node: &Arc<Node>,
    mut reader: ReplicaReader,
    mut buf: Vec<u8>,
    pos: u64,
    end: u64,
) -> PacketTask {
    let store = node.store.clone();
    // `n` ≤ PACKET_BYTES, so it fits in usize.
    let n = (end - pos).min(PACKET_BYTES as u64);
    let task = tokio::task::spawn_blocking(move || {
        let res = store
            .read_with(&mut reader, pos, n, &mut buf)
            .map(|range| (buf, range));
        (reader, res)
    });
    PacketTask {
        want: n as usize,
        task,
    }
}

/// Waits for a packet read. A CRC failure is reported; a short packet (the replica shrank
/// under us: deleted or replaced) is refused rather than sent as a short stream.
async fn finish_packet(node: &Arc<Node>, id: ChunkId, p: PacketTask) -> Result<Packet, ReqError> {
    let (reader, res) = p
        .task
        .await
        .map_err(|e| ReqError::from(StoreError::Task(e.to_string())))?;
    let (buf, range) = res.inspect_err(|e| {
        if matches!(e, StoreError::ChecksumMismatch { .. }) {
            node.report_bad(id);
        }
    })?;
    if range.len() != p.want {
        return Err(ReqError::new(
            ErrorCode::NoSuchChunk,
            format!("chunk {id}: replica changed during read"),
        ));
    }
    Ok(Packet {
        reader: Some(reader),
        buf,
        range,
    })
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
