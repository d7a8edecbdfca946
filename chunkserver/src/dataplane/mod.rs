//! The data-plane server: an accept loop bounded by a semaphore
//! (`MAX_DATAPLANE_CONNECTIONS`), and per connection a loop serving one request after
//! another (conversations in `rdfs_proto::dataplane`).
//!
//! Invariants:
//! - A malformed frame gets a best-effort `Error{Malformed}` and closes only its own
//!   connection; everything else keeps being served.
//! - Once a transfer has started every frame read uses the `DataConn` deadline; only the
//!   wait for the next request on an idle connection has none.
//! - Every mutation is fenced (chunk, version, epoch, lease serial) before a byte is written.

mod append;
mod read;
mod write;

use std::sync::Arc;

use rdfs_proto::dataplane::{
    ChunkInfo, CopyChunkRequest, DataConn, Frame, FrameError, Msg, SetVersionRequest,
};
use rdfs_proto::limits::MAX_DATAPLANE_CONNECTIONS;
use rdfs_proto::ErrorCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::node::{Node, ReqError};
use crate::store::StoreError;

pub use write::DOWNSTREAM_ERROR_PREFIX;

/// Longest a `SetVersion` waits for an in-flight mutation of the same chunk; below the
/// master's own SetVersion deadline (2 s) so it hears `Busy` rather than a timeout.
const SET_VERSION_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves the data plane on `listener` until `shutdown` is cancelled.
pub async fn serve(node: Arc<Node>, listener: TcpListener, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_DATAPLANE_CONNECTIONS));
    // Connections are tracked so `serve` returns only when none still uses the node.
    let tracker = TaskTracker::new();
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(addr = %local, "data plane listening");
    loop {
        // Take a permit before accepting, so a flood waits in the kernel backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p,
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        let shutdown = shutdown.clone();
        let span = tracing::debug_span!("conn", peer = %peer);
        tracker.spawn(
            async move {
                tokio::select! {
                    () = serve_conn(node, stream, peer.to_string()) => {}
                    _ = shutdown.cancelled() => {}
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
    tracing::info!(addr = %local, "data plane stopped");
}

async fn serve_conn(node: Arc<Node>, stream: TcpStream, peer: String) {
    let mut conn = DataConn::from_stream(stream, peer);
    loop {
        let frame = match conn.recv_idle().await {
            Ok(frame) => frame,
            Err(e) => return close_on(&mut conn, e).await,
        };
        if let Err(e) = dispatch(&node, &mut conn, frame).await {
            return close_on(&mut conn, e).await;
        }
    }
}

/// Ends a connection: a malformed frame gets a best-effort error reply first.
async fn close_on(conn: &mut DataConn, err: FrameError) {
    if err.is_malformed() {
        tracing::warn!(peer = %conn.peer(), error = %err, "malformed data-plane frame; closing");
        let _ = conn
            .send(&Msg::error(ErrorCode::Malformed, err.to_string()), &[])
            .await;
    } else if !matches!(err, FrameError::Closed) {
        tracing::debug!(peer = %conn.peer(), error = %err, "data-plane connection ended");
    }
}

/// Serves one request. `Err` closes the connection (the stream position is lost).
async fn dispatch(node: &Arc<Node>, conn: &mut DataConn, frame: Frame) -> Result<(), FrameError> {
    match frame.msg {
        Msg::Write(req) => write::handle_write(node, conn, req).await,
        Msg::Append(req) => append::handle_append(node, conn, req).await,
        Msg::Pad(req) => append::handle_pad(node, conn, req).await,
        Msg::Read(req) => read::handle_read(node, conn, req).await,
        Msg::Replicate(req) => read::handle_replicate(node, conn, req).await,
        Msg::SetVersion(req) => {
            let reply = set_version(node, req)
                .await
                .map_or_else(error_msg, |()| Msg::Ok);
            conn.send(&reply, &[]).await
        }
        Msg::CopyChunk(req) => {
            let reply = copy_chunk(node, req)
                .await
                .map_or_else(error_msg, |()| Msg::Ok);
            conn.send(&reply, &[]).await
        }
        Msg::Ping => {
            conn.send(
                &Msg::Pong {
                    epoch: node.highest_epoch(),
                },
                &[],
            )
            .await
        }
        Msg::ChunkInfo { chunk_id } => {
            let reply = match node.store.state(chunk_id) {
                Ok(st) if !st.quarantined => Msg::ChunkInfoOk(ChunkInfo {
                    chunk_id,
                    version: st.version,
                    len: st.len,
                }),
                Ok(_) => Msg::error(
                    ErrorCode::ChecksumMismatch,
                    format!("chunk {chunk_id}: quarantined"),
                ),
                Err(e) => error_msg(e.into()),
            };
            conn.send(&reply, &[]).await
        }
        Msg::Witness(req) => {
            let reply = crate::witness::handle(node, req).await;
            conn.send(&Msg::WitnessReply(reply), &[]).await
        }
        // A writer may end a transfer with an empty `last` frame after the bytes we
        // counted; it carries nothing, so it is not a protocol violation.
        Msg::Data { last: true } if frame.payload.is_empty() => Ok(()),
        other => Err(FrameError::Decode(format!(
            "unexpected {} frame as a request",
            other.kind()
        ))),
    }
}

/// `SetVersion` from the master: persist (and fsync) the version before answering.
async fn set_version(node: &Arc<Node>, req: SetVersionRequest) -> Result<(), ReqError> {
    let span = tracing::info_span!("set_version", chunk_id = %req.chunk_id, version = %req.version, create = req.create);
    async move {
        node.check_epoch(req.epoch).await?;
        // Never change the version under an in-flight mutation; but a wedged one must not
        // stall the master's grant for long.
        let _lock = tokio::time::timeout(SET_VERSION_LOCK_WAIT, node.lock_chunk(req.chunk_id))
            .await
            .map_err(|_| {
                ReqError::new(
                    ErrorCode::Busy,
                    format!("chunk {}: mutation in progress", req.chunk_id),
                )
            })?;
        let SetVersionRequest {
            chunk_id,
            version,
            lease_serial,
            create,
            ..
        } = req;
        node.blocking(move |s| {
            if create {
                s.create(chunk_id, version, lease_serial)
            } else {
                s.set_version(chunk_id, version, lease_serial)
            }
        })
        .await?;
        tracing::debug!("version persisted");
        // Every master hears of it (the active one knows already): a standby that takes
        // over must know this replica without waiting for a full block report.
        if let Ok(st) = node.store.state(chunk_id) {
            node.report_added(st.info());
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// `CopyChunk` from the master (copy-on-write after a snapshot): a local copy of `src`
/// under the new id `dst`, durable and verified before answering.
async fn copy_chunk(node: &Arc<Node>, req: CopyChunkRequest) -> Result<(), ReqError> {
    let span = tracing::info_span!("copy_chunk", src = %req.src, dst = %req.dst, version = %req.dst_version);
    async move {
        node.check_epoch(req.epoch).await?;
        if req.src == req.dst {
            return Err(ReqError::new(
                ErrorCode::InvalidArgument,
                format!("chunk {}: copy onto itself", req.src),
            ));
        }
        // Both chunks' mutation locks, in id order so two copies never wait on each other.
        let (first, second) = if req.src < req.dst {
            (req.src, req.dst)
        } else {
            (req.dst, req.src)
        };
        let _a = node.lock_chunk(first).await;
        let _b = node.lock_chunk(second).await;
        let CopyChunkRequest {
            src,
            src_version,
            dst,
            dst_version,
            lease_serial,
            ..
        } = req;
        let copied = node
            .blocking(move |s| s.copy_local(src, src_version, dst, dst_version, lease_serial))
            .await;
        if let Err(StoreError::ChecksumMismatch { .. }) = &copied {
            node.report_bad(src);
        }
        copied?;
        Ok(())
    }
    .instrument(span)
    .await
}

fn error_msg(e: ReqError) -> Msg {
    Msg::error(e.code, e.message)
}

#[cfg(test)]
mod append_tests;
#[cfg(test)]
mod copy_tests;
#[cfg(test)]
mod tests;
