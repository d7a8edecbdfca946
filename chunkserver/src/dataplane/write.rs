//! `Write`: the pipelined mutation. Each chunkserver checks the fence, forwards every packet
//! to the next replica while writing it locally, and acknowledges only after its downstream
//! acknowledged, so a `WriteOk` at the primary means every replica in the chain has the bytes
//! (and, with `sync`, has fsynced them).
//!
//! Invariants:
//! - The chunk's mutation lock is held for the whole conversation; the primary (request
//!   serial 0) assigns the next serial, a replica accepts only a serial after its last one.
//! - A refused or failed request still consumes exactly `len` bytes of `Data`, so the
//!   connection stays in step and the writer reads the error reply.
//! - An error caused by a downstream replica is answered `Unavailable` with a message that
//!   starts with `replica <addr>:` naming it, so the client can report that replica.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdfs_proto::dataplane::{DataConn, Fence, FrameError, Msg, WriteAck, WriteRequest};
use rdfs_proto::limits::{DATAPLANE_IO_TIMEOUT_MS, MAX_REPLICATION};
use rdfs_proto::ErrorCode;
use tracing::Instrument;

use crate::node::{Node, ReqError};

/// Start of every error message blaming a downstream replica: `replica <addr>: ...`.
pub const DOWNSTREAM_ERROR_PREFIX: &str = "replica ";

/// Extra deadline per replica below a hop (see `connect_downstream`).
const CHAIN_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// The downstream part of a pipeline.
pub(super) struct Downstream {
    addr: String,
    conn: DataConn,
}

/// Progress of one write conversation.
struct Transfer {
    serial: u64,
    down: Option<Downstream>,
    /// First failure; once set, bytes are only drained.
    error: Option<ReqError>,
    cursor: u64,
}

pub(super) async fn handle_write(
    node: &Arc<Node>,
    conn: &mut DataConn,
    req: WriteRequest,
) -> Result<(), FrameError> {
    let span = tracing::debug_span!(
        "write", chunk_id = %req.fence.chunk_id, offset = req.offset, len = req.len, serial = req.serial
    );
    async move {
        let _lock = node.lock_chunk(req.fence.chunk_id).await;
        let mut transfer = match prepare(node, &req).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(code = ?e.code, error = %e.message, "write refused");
                drain(conn, req.len).await?;
                return conn.send(&Msg::error(e.code, e.message), &[]).await;
            }
        };
        receive(node, conn, &req, &mut transfer).await?;
        let reply = finish(node, &req, transfer).await;
        if let Msg::Error { code, message } = &reply {
            tracing::warn!(?code, error = %message, "write failed");
        }
        conn.send(&reply, &[]).await
    }
    .instrument(span)
    .await
}

/// Checks the fence, takes a serial and opens the downstream pipeline.
async fn prepare(node: &Arc<Node>, req: &WriteRequest) -> Result<Transfer, ReqError> {
    let fence = &req.fence;
    let id = fence.chunk_id;
    if req.downstream.len() >= MAX_REPLICATION as usize {
        return Err(ReqError::new(
            ErrorCode::InvalidArgument,
            format!("chain of {} replicas", req.downstream.len() + 1),
        ));
    }
    let limit = node.store.max_chunk_bytes();
    if req
        .offset
        .checked_add(req.len)
        .is_none_or(|end| end > limit)
    {
        return Err(ReqError::new(
            ErrorCode::InvalidArgument,
            format!(
                "chunk {id}: range {}+{} exceeds the chunk size {limit}",
                req.offset, req.len
            ),
        ));
    }
    check_fence(node, fence).await?;
    let asked = (req.serial != 0).then_some(req.serial);
    let serial = node.blocking(move |s| s.begin_mutation(id, asked)).await?;
    let down = match req.downstream.first() {
        Some(addr) => {
            let forwarded = Msg::Write(WriteRequest {
                downstream: req.downstream[1..].to_vec(),
                serial,
                ..req.clone()
            });
            Some(open_downstream(addr, req.downstream.len(), &forwarded).await?)
        }
        None => None,
    };
    Ok(Transfer {
        serial,
        down,
        error: None,
        cursor: req.offset,
    })
}

/// Checks a mutation's fence against the replica: not quarantined, epoch not stale, same
/// version, and (once the master announced one) the same lease serial.
pub(super) async fn check_fence(node: &Arc<Node>, fence: &Fence) -> Result<(), ReqError> {
    let id = fence.chunk_id;
    let st = node.store.state(id)?;
    if st.quarantined {
        return Err(ReqError::new(
            ErrorCode::ChecksumMismatch,
            format!("chunk {id}: replica quarantined"),
        ));
    }
    node.check_epoch(fence.epoch).await?;
    if st.version != fence.version {
        return Err(ReqError::new(
            ErrorCode::StaleVersion,
            format!(
                "chunk {id}: replica holds version {}, mutation is for {}",
                st.version, fence.version
            ),
        ));
    }
    if st.lease_serial.0 != 0 && st.lease_serial != fence.lease_serial {
        return Err(ReqError::new(
            ErrorCode::LeaseMismatch,
            format!(
                "chunk {id}: lease serial {} is not the current {}",
                fence.lease_serial, st.lease_serial
            ),
        ));
    }
    Ok(())
}

/// Connects to the next replica and sends it `forwarded` (the request with the rest of the
/// chain and our serial); `hops_below` counts the replicas from it to the end of the chain.
pub(super) async fn open_downstream(
    addr: &str,
    hops_below: usize,
    forwarded: &Msg,
) -> Result<Downstream, ReqError> {
    let blame = |what: &str, e: FrameError| {
        ReqError::new(
            ErrorCode::Unavailable,
            format!("{DOWNSTREAM_ERROR_PREFIX}{addr}: {what}: {e}"),
        )
    };
    let mut conn = DataConn::connect(addr)
        .await
        .map_err(|e| blame("connect", e))?;
    // Each hop waits a little longer than the one below it, so when a replica further down
    // hangs, the hop next to it times out first and its answer names the right replica.
    conn.set_io_timeout(
        Duration::from_millis(DATAPLANE_IO_TIMEOUT_MS) + CHAIN_TIMEOUT_MARGIN * hops_below as u32,
    );
    conn.send(forwarded, &[])
        .await
        .map_err(|e| blame("send", e))?;
    Ok(Downstream {
        addr: addr.to_string(),
        conn,
    })
}

/// Receives the `Data` frames: forwards each downstream while writing it locally.
async fn receive(
    node: &Arc<Node>,
    conn: &mut DataConn,
    req: &WriteRequest,
    t: &mut Transfer,
) -> Result<(), FrameError> {
    let mut received = 0u64;
    while received < req.len {
        let (payload, last) = next_data(conn, req.len - received).await?;
        received += payload.len() as u64;
        if last && received < req.len {
            return Err(FrameError::Decode(format!(
                "write ended after {received} of {} bytes",
                req.len
            )));
        }
        if t.error.is_none() {
            let offset = t.cursor;
            let fwd = forward(t.down.as_mut(), last || received == req.len, &payload);
            let id = req.fence.chunk_id;
            let local_payload = payload.clone();
            let local = node.blocking(move |s| s.write(id, offset, &local_payload));
            let (fwd, local) = tokio::join!(fwd, local);
            if let Err(e) = local {
                t.fail(e.into());
            } else if let Err(e) = fwd {
                t.fail(e);
            }
        }
        t.cursor = req.offset + received;
    }
    Ok(())
}

/// Reads one `Data` frame of at most `remaining` bytes.
pub(super) async fn next_data(
    conn: &mut DataConn,
    remaining: u64,
) -> Result<(Bytes, bool), FrameError> {
    let frame = conn.recv().await?;
    let Msg::Data { last } = frame.msg else {
        return Err(FrameError::Decode(format!(
            "expected data, got {}",
            frame.msg.kind()
        )));
    };
    if frame.payload.len() as u64 > remaining {
        return Err(FrameError::Decode(format!(
            "{} bytes of data beyond the announced length",
            frame.payload.len()
        )));
    }
    Ok((frame.payload, last))
}

pub(super) async fn forward(
    down: Option<&mut Downstream>,
    last: bool,
    payload: &[u8],
) -> Result<(), ReqError> {
    let Some(down) = down else { return Ok(()) };
    down.conn
        .send(&Msg::Data { last }, payload)
        .await
        .map_err(|e| {
            ReqError::new(
                ErrorCode::Unavailable,
                format!("{DOWNSTREAM_ERROR_PREFIX}{}: forward: {e}", down.addr),
            )
        })
}

/// Consumes `len` bytes of a refused write so the connection stays in step.
pub(super) async fn drain(conn: &mut DataConn, len: u64) -> Result<(), FrameError> {
    let mut received = 0u64;
    while received < len {
        let (payload, last) = next_data(conn, len - received).await?;
        received += payload.len() as u64;
        if last && received < len {
            return Err(FrameError::Decode(format!(
                "write ended after {received} of {len} bytes"
            )));
        }
    }
    Ok(())
}

/// Commits locally (fsync with `sync`) while the downstream finishes, then builds the reply.
async fn finish(node: &Arc<Node>, req: &WriteRequest, mut t: Transfer) -> Msg {
    if let Some(e) = t.error.take() {
        return Msg::error(e.code, e.message);
    }
    let id = req.fence.chunk_id;
    let sync = req.sync;
    let local = node.blocking(move |s| s.commit(id, sync));
    let downstream = async {
        match t.down.as_mut() {
            Some(down) => downstream_ack(down).await,
            None => Ok(()),
        }
    };
    let (local, downstream) = tokio::join!(local, downstream);
    match (local, downstream) {
        (Err(e), _) => {
            let e = ReqError::from(e);
            Msg::error(e.code, e.message)
        }
        (Ok(_), Err(e)) => Msg::error(e.code, e.message),
        (Ok(chunk_len), Ok(())) => Msg::WriteOk(WriteAck {
            chunk_len,
            serial: t.serial,
        }),
    }
}

/// Waits for the downstream's answer; any failure blames the replica that caused it.
pub(super) async fn downstream_ack(down: &mut Downstream) -> Result<(), ReqError> {
    let addr = &down.addr;
    let unavailable = |detail: String| ReqError::new(ErrorCode::Unavailable, detail);
    match down.conn.recv().await {
        Ok(frame) => match frame.msg {
            Msg::WriteOk(_) | Msg::AppendOk(_) => Ok(()),
            // Already names the replica further down that failed.
            Msg::Error { message, .. } if message.starts_with(DOWNSTREAM_ERROR_PREFIX) => {
                Err(unavailable(message))
            }
            Msg::Error { code, message } => Err(unavailable(format!(
                "{DOWNSTREAM_ERROR_PREFIX}{addr}: {code:?}: {message}"
            ))),
            other => Err(unavailable(format!(
                "{DOWNSTREAM_ERROR_PREFIX}{addr}: unexpected {} reply",
                other.kind()
            ))),
        },
        Err(e) => Err(unavailable(format!("{DOWNSTREAM_ERROR_PREFIX}{addr}: {e}"))),
    }
}

impl Transfer {
    /// Records the first failure and abandons the downstream (dropping the connection makes
    /// it abort too rather than wait for bytes that will not come).
    fn fail(&mut self, e: ReqError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
        self.down = None;
    }
}
