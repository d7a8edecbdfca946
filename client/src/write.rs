//! Writes: split at chunk boundaries, for each piece ask the master for a lease grant
//! (`PrepareWrite`), push the bytes to the chain's primary in one `Write` request followed by
//! `Data` packets (the chain forwards them), and wait for the `WriteOk` that means every
//! replica in the chain has them. A failed replica makes the client ask for a new grant naming
//! it in `failed_replicas`; the master re-grants without it. `CommitWrite` publishes the new
//! size only after the data is acknowledged.

use rdfs_proto::dataplane::{DataConn, Fence, Msg, WriteAck, WriteRequest};
use rdfs_proto::ids::{ChunkId, ChunkVersion, Epoch, LeaseSerial};
use rdfs_proto::limits::{MAX_FILE_SIZE, PACKET_BYTES};
use rdfs_proto::{pb, ErrorCode};
use std::time::Duration;
use tokio::time::Instant;

use crate::error::{ClientError, Result};
use crate::master::{backoff_sleep, initial_backoff};
use crate::read::PeerError;
use crate::{now_ns, ranges, Client};

/// Grants tried for one piece before the write fails (each names the replicas that failed).
const MAX_WRITE_ATTEMPTS: u32 = 6;
/// After a send fails, how long to wait for the error frame the primary may have sent first.
const EARLY_REPLY_WAIT: Duration = Duration::from_secs(1);

/// Why pushing a piece to a chain failed, and what to tell the master.
pub(crate) struct WriteFailure {
    pub(crate) error: ClientError,
    /// Chain members to report in `failed_replicas` on the next `PrepareWrite`.
    pub(crate) failed: Vec<String>,
    /// False when a new grant cannot help (bad request, permission).
    pub(crate) retry: bool,
}

impl Client {
    /// Writes `data` at `offset` of file `inode` (split at chunk boundaries), then publishes
    /// `size = max(size, offset + len)`. With `sync` every replica fsyncs before acking.
    pub async fn write_at(&self, inode: u64, offset: u64, data: &[u8], sync: bool) -> Result<()> {
        self.write_at_mtime(inode, offset, data, sync, now_ns())
            .await
    }

    /// [`Client::write_at`] that publishes `mtime_ns` as the file's modification time: a
    /// writer that buffers (FUSE) passes the time of the buffered `write(2)`, which is what
    /// `fstat` showed meanwhile, rather than the later time of the flush.
    pub async fn write_at_mtime(
        &self,
        inode: u64,
        offset: u64,
        data: &[u8],
        sync: bool,
        mtime_ns: i64,
    ) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = checked_end(inode, offset, data.len())?;
        let deadline = self.deadline();
        self.write_range(inode, offset, data, sync, deadline)
            .await?;
        self.commit_write_at(inode, end, mtime_ns, deadline).await?;
        Ok(())
    }

    /// Makes every byte already written to chunk `index` of `inode` durable on each replica
    /// of its chain: an empty `Write` with `sync` (each replica fsyncs the chunk before it
    /// acks). Data, size and mtime are untouched; a chunk that does not exist (a hole, or
    /// truncated away) is skipped rather than allocated. What `fsync` needs for bytes that
    /// were written earlier without `sync`.
    pub async fn sync_chunk(&self, inode: u64, index: u64) -> Result<()> {
        let deadline = self.deadline();
        let locs = self.fetch_locations(inode, deadline).await?;
        if !locs.chunks.iter().any(|c| c.index == index) {
            return Ok(());
        }
        self.write_piece(inode, index, 0, &[], true, deadline).await
    }

    /// Pushes `data` at `offset` to the chains, without publishing the size.
    pub(crate) async fn write_range(
        &self,
        inode: u64,
        offset: u64,
        data: &[u8],
        sync: bool,
        deadline: Instant,
    ) -> Result<()> {
        checked_end(inode, offset, data.len())?;
        // Our own write makes cached versions and sizes stale.
        self.invalidate(inode);
        let chunk_size = self.chunk_size();
        for piece in ranges::split(offset, data.len() as u64, chunk_size) {
            let start = piece.buf_offset as usize;
            let bytes = &data[start..start + piece.len as usize];
            self.write_piece(
                inode,
                piece.index,
                piece.offset_in_chunk,
                bytes,
                sync,
                deadline,
            )
            .await?;
        }
        self.invalidate(inode);
        Ok(())
    }

    /// Publishes `size = max(size, end)` on the master.
    pub(crate) async fn commit_write(
        &self,
        inode: u64,
        end: u64,
        deadline: Instant,
    ) -> Result<pb::CommitWriteResponse> {
        self.commit_write_at(inode, end, now_ns(), deadline).await
    }

    /// Publishes `size = max(size, end)` and `mtime = ctime = mtime_ns` on the master.
    async fn commit_write_at(
        &self,
        inode: u64,
        end: u64,
        mtime_ns: i64,
        deadline: Instant,
    ) -> Result<pb::CommitWriteResponse> {
        let req = pb::CommitWriteRequest {
            inode,
            end_offset: end,
            mtime_ns,
            caller: self.caller(),
            request_id: self.request_id(),
        };
        let what = format!("inode {inode}");
        let resp = self
            .inner
            .masters
            .call("commit write", &what, deadline, |mut m| {
                let req = req.clone();
                async move { m.commit_write(req).await }
            })
            .await;
        // Locations fetched since the data went out carry the size from before this commit;
        // a read clipped to it would come back short (and FUSE takes a short read as EOF).
        self.invalidate(inode);
        resp
    }

    /// One piece inside chunk `index`: grant, push, retry with a new grant on failure.
    async fn write_piece(
        &self,
        inode: u64,
        index: u64,
        offset: u64,
        data: &[u8],
        sync: bool,
        deadline: Instant,
    ) -> Result<()> {
        let mut failed: Vec<String> = Vec::new();
        let mut backoff = initial_backoff();
        let mut last_err: Option<ClientError> = None;
        for attempt in 0..MAX_WRITE_ATTEMPTS {
            if attempt > 0 {
                if Instant::now() >= deadline {
                    break;
                }
                backoff_sleep(&mut backoff, deadline).await;
            }
            let grant = self.prepare_write(inode, index, &failed, deadline).await?;
            if grant.chunk_size != 0 && grant.chunk_size != self.chunk_size() {
                return Err(ClientError::Protocol(format!(
                    "master grants chunks of {} bytes, client split at {}",
                    grant.chunk_size,
                    self.chunk_size()
                )));
            }
            if grant.chain.is_empty() {
                last_err = Some(ClientError::Unavailable(format!(
                    "no chunkserver available for chunk {}",
                    grant.chunk_id
                )));
                failed.clear();
                continue;
            }
            match self.push(&grant, offset, data, sync, deadline).await {
                Ok(_) => return Ok(()),
                Err(f) => {
                    // Retried with a new grant; the caller sees the error only if that fails.
                    tracing::info!(
                        inode, index, chunk = grant.chunk_id, attempt,
                        failed = ?f.failed, error = %f.error, "write to chain failed"
                    );
                    if !f.retry {
                        return Err(f.error);
                    }
                    failed = f.failed;
                    last_err = Some(f.error);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| {
            ClientError::Timeout(format!("writing chunk index {index} of inode {inode}"))
        }))
    }

    async fn prepare_write(
        &self,
        inode: u64,
        index: u64,
        failed: &[String],
        deadline: Instant,
    ) -> Result<pb::PrepareWriteResponse> {
        let req = pb::PrepareWriteRequest {
            inode,
            chunk_index: index,
            failed_replicas: failed.to_vec(),
            caller: self.caller(),
        };
        let what = format!("inode {inode}");
        self.inner
            .masters
            .call("prepare write", &what, deadline, |mut m| {
                let req = req.clone();
                async move { m.prepare_write(req).await }
            })
            .await
    }

    /// Sends the piece to the chain's primary and waits for the chain's ack.
    async fn push(
        &self,
        grant: &pb::PrepareWriteResponse,
        offset: u64,
        data: &[u8],
        sync: bool,
        deadline: Instant,
    ) -> std::result::Result<WriteAck, WriteFailure> {
        let req = Msg::Write(WriteRequest {
            fence: fence_of(grant),
            offset,
            len: data.len() as u64,
            downstream: grant.chain[1..].to_vec(),
            sync,
            serial: 0,
        });
        match self.push_to_chain(grant, &req, data, deadline).await? {
            Msg::WriteOk(ack) => Ok(ack),
            other => Err(WriteFailure::protocol(grant, &other)),
        }
    }

    /// One mutation conversation with the chain's primary: `req` plus `data` as `Data`
    /// packets, then the primary's reply (anything but `Error`).
    pub(crate) async fn push_to_chain(
        &self,
        grant: &pb::PrepareWriteResponse,
        req: &Msg,
        data: &[u8],
        deadline: Instant,
    ) -> std::result::Result<Msg, WriteFailure> {
        let primary = grant.chain[0].as_str();
        let unreachable = |e: PeerError| WriteFailure {
            error: e.into_client(primary, grant.chunk_id),
            failed: vec![primary.to_string()],
            retry: true,
        };
        let checkout = self
            .inner
            .pool
            .get(primary, deadline)
            .await
            .map_err(|e| unreachable(e.into()))?;
        let mut conn = checkout.conn;
        let mut res = write_on(&mut conn, req, data).await;
        if checkout.reused && matches!(res, Err(PeerError::Frame(_))) {
            // A pooled connection the server closed while idle says nothing about the server.
            conn = self
                .inner
                .pool
                .fresh(primary, deadline)
                .await
                .map_err(|e| unreachable(e.into()))?;
            res = write_on(&mut conn, req, data).await;
        }
        match res {
            Ok(reply) => {
                self.inner.pool.put(conn);
                Ok(reply)
            }
            Err(PeerError::Remote { code, message }) => {
                let (failed, retry) = blame(code, &message, &grant.chain);
                Err(WriteFailure {
                    error: PeerError::Remote { code, message }.into_client(primary, grant.chunk_id),
                    failed,
                    retry,
                })
            }
            Err(e) => {
                self.inner.pool.forget(primary);
                Err(unreachable(e))
            }
        }
    }
}

/// The fence of a grant, as every data-plane mutation carries it.
pub(crate) fn fence_of(grant: &pb::PrepareWriteResponse) -> Fence {
    Fence {
        chunk_id: ChunkId(grant.chunk_id),
        version: ChunkVersion(grant.version),
        epoch: Epoch(grant.epoch),
        lease_serial: LeaseSerial(grant.lease_serial),
        token: grant.token.clone(),
    }
}

impl WriteFailure {
    /// The primary answered with a message the conversation does not allow.
    pub(crate) fn protocol(grant: &pb::PrepareWriteResponse, reply: &Msg) -> WriteFailure {
        let primary = grant.chain.first().map(String::as_str).unwrap_or("?");
        WriteFailure {
            error: ClientError::Protocol(format!(
                "chunkserver {primary}: unexpected {} reply for chunk {}",
                reply.kind(),
                grant.chunk_id
            )),
            failed: Vec::new(),
            retry: true,
        }
    }
}

/// One mutation conversation: header, the bytes as `Data` packets, one flush, then the reply.
async fn write_on(
    conn: &mut DataConn,
    req: &Msg,
    data: &[u8],
) -> std::result::Result<Msg, PeerError> {
    let sent = async {
        conn.write(req, &[]).await?;
        let packets = data.len().div_ceil(PACKET_BYTES);
        for (i, packet) in data.chunks(PACKET_BYTES).enumerate() {
            let last = i + 1 == packets;
            conn.write(&Msg::Data { last }, packet).await?;
        }
        conn.flush().await
    }
    .await;
    if let Err(e) = sent {
        // The primary may have refused the write and closed: its error frame says why.
        if let Ok(Ok(frame)) = tokio::time::timeout(EARLY_REPLY_WAIT, conn.recv()).await {
            if let Msg::Error { code, message } = frame.msg {
                return Err(PeerError::Remote { code, message });
            }
        }
        return Err(PeerError::Frame(e));
    }
    let reply = conn.recv().await?;
    match reply.msg {
        Msg::Error { code, message } => Err(PeerError::Remote { code, message }),
        other => Ok(other),
    }
}

/// Which chain members a chunkserver's error blames, and whether a new grant may help.
///
/// The primary answered, so it is alive: downstream addresses named in the message are the
/// failed ones. Fence errors (stale version/epoch/lease) need a new grant but blame nobody
/// unless a replica is named. Any other failure naming nobody is the primary's own.
pub(crate) fn blame(code: ErrorCode, message: &str, chain: &[String]) -> (Vec<String>, bool) {
    if matches!(
        code,
        ErrorCode::InvalidArgument
            | ErrorCode::Malformed
            | ErrorCode::PermissionDenied
            | ErrorCode::InvalidName
            | ErrorCode::NameTooLong
            | ErrorCode::IsADirectory
            | ErrorCode::NotFound
    ) {
        return (Vec::new(), false);
    }
    let named: Vec<String> = chain
        .iter()
        .skip(1)
        .filter(|addr| mentions(message, addr))
        .cloned()
        .collect();
    if !named.is_empty() {
        return (named, true);
    }
    let fence_or_transient = matches!(
        code,
        ErrorCode::StaleVersion
            | ErrorCode::StaleEpoch
            | ErrorCode::LeaseMismatch
            | ErrorCode::NoSuchChunk
            | ErrorCode::ChecksumMismatch
            | ErrorCode::Busy
    );
    match chain.first() {
        Some(primary) if !fence_or_transient => (vec![primary.clone()], true),
        _ => (Vec::new(), true),
    }
}

/// Whether `message` names `addr` as a whole token (so `h:910` is not found in `h:9100`).
fn mentions(message: &str, addr: &str) -> bool {
    if addr.is_empty() {
        return false;
    }
    message.match_indices(addr).any(|(at, _)| {
        let before = message[..at].chars().next_back();
        let after = message[at + addr.len()..].chars().next();
        let part_of_addr =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.');
        !part_of_addr(before) && !part_of_addr(after)
    })
}

/// `offset + len`, refused beyond the largest file size.
fn checked_end(inode: u64, offset: u64, len: usize) -> Result<u64> {
    offset
        .checked_add(len as u64)
        .filter(|end| *end <= MAX_FILE_SIZE)
        .ok_or_else(|| {
            ClientError::remote(
                &format!("inode {inode}"),
                ErrorCode::InvalidArgument,
                format!("write beyond the {MAX_FILE_SIZE}-byte file size limit"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Vec<String> {
        vec![
            "127.0.0.1:9101".to_string(),
            "127.0.0.1:9102".to_string(),
            "127.0.0.1:910".to_string(),
        ]
    }

    #[test]
    fn a_named_downstream_replica_is_blamed_not_the_primary() {
        let (failed, retry) = blame(
            ErrorCode::Unavailable,
            "127.0.0.1:9101: downstream 127.0.0.1:9102 unreachable: connection refused",
            &chain(),
        );
        assert_eq!(failed, vec!["127.0.0.1:9102".to_string()]);
        assert!(retry);
    }

    #[test]
    fn an_address_prefix_is_not_a_mention() {
        assert!(!mentions(
            "downstream 127.0.0.1:9102 failed",
            "127.0.0.1:910"
        ));
        assert!(mentions("downstream 127.0.0.1:910 failed", "127.0.0.1:910"));
        assert!(mentions("127.0.0.1:910", "127.0.0.1:910"));
        assert!(!mentions("127.0.0.1:9101", ""));
    }

    #[test]
    fn an_io_error_naming_nobody_blames_the_primary() {
        let (failed, retry) = blame(ErrorCode::Io, "disk write failed", &chain());
        assert_eq!(failed, vec!["127.0.0.1:9101".to_string()]);
        assert!(retry);
    }

    #[test]
    fn fence_errors_ask_for_a_new_grant_without_blame() {
        let (failed, retry) = blame(ErrorCode::StaleVersion, "have 4, want 5", &chain());
        assert!(failed.is_empty());
        assert!(retry);
    }

    #[test]
    fn bad_requests_are_not_retried() {
        let (failed, retry) = blame(ErrorCode::Malformed, "127.0.0.1:9102 said so", &chain());
        assert!(failed.is_empty());
        assert!(!retry);
    }

    #[test]
    fn writes_beyond_the_size_limit_are_refused() {
        assert_eq!(checked_end(1, 10, 5).expect("small"), 15);
        let err = checked_end(1, MAX_FILE_SIZE, 1).expect_err("too far");
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(checked_end(1, u64::MAX, 2).is_err());
    }
}
