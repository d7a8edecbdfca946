//! Reads: split the range at chunk boundaries, read each piece from one replica, fail over to
//! the others, refresh locations from the master when every replica failed.
//!
//! Invariant: bytes are returned only when a replica sent exactly the `ReadOk.len` bytes it
//! promised (the chunkserver verified their CRCs, the frame codec verified the transfer);
//! anything else is an error for that replica, never a silently short or wrong buffer.
//! Ranges inside the file size that no replica holds (holes) read as zeros.

use bytes::{Bytes, BytesMut};
use rdfs_proto::dataplane::{DataConn, FrameError, Msg, ReadRequest};
use rdfs_proto::ids::{ChunkId, ChunkVersion};
use rdfs_proto::{pb, ErrorCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::error::{ClientError, Result};
use crate::master::{backoff_sleep, initial_backoff};
use crate::ranges::{self, Piece};
use crate::Client;

/// Largest range one `read_at` may ask for (the result is one buffer in memory).
pub const MAX_READ_AT_BYTES: u64 = 1 << 30;
/// Rounds of "try every replica, then refresh locations" before a piece fails.
const READ_ROUNDS: u32 = 3;
/// One replica may use at most this fraction of the operation deadline before the next is
/// tried (per frame: a large read that keeps flowing is never cut off).
const READ_ATTEMPT_FRACTION: u32 = 3;
/// ... but never less than this, so a short deadline still gives each replica a fair chance.
const READ_ATTEMPT_MIN: Duration = Duration::from_secs(2);
/// How long a replica that did not answer is tried after the others.
const SUSPECT_FOR: Duration = Duration::from_secs(30);
/// Suspect addresses remembered at once.
const MAX_SUSPECTS: usize = 1024;
/// Deadline for the best-effort `ReportBadReplica` call, so reporting never stalls a read.
const REPORT_BAD_TIMEOUT: Duration = Duration::from_secs(2);

/// How one conversation with a chunkserver failed.
#[derive(Debug)]
pub(crate) enum PeerError {
    /// Transport trouble: connect, I/O, timeout, malformed frame.
    Frame(FrameError),
    /// The chunkserver answered `Error`.
    Remote { code: ErrorCode, message: String },
    /// The chunkserver answered something the protocol does not allow here.
    Protocol(String),
}

impl From<FrameError> for PeerError {
    fn from(e: FrameError) -> Self {
        PeerError::Frame(e)
    }
}

impl PeerError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            PeerError::Frame(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                ErrorCode::Timeout
            }
            PeerError::Frame(FrameError::Io(_) | FrameError::Closed) => ErrorCode::Unavailable,
            PeerError::Frame(_) | PeerError::Protocol(_) => ErrorCode::Malformed,
            PeerError::Remote { code, .. } => *code,
        }
    }

    /// The client error for this failure on `peer` while handling `chunk`.
    pub(crate) fn into_client(self, peer: &str, chunk: u64) -> ClientError {
        match self {
            PeerError::Frame(e) => ClientError::from_frame(peer, &e),
            PeerError::Remote { code, message } => ClientError::remote(
                &format!("chunk {chunk}"),
                code,
                format!("{peer}: {message}"),
            ),
            PeerError::Protocol(m) => ClientError::Protocol(format!("chunkserver {peer}: {m}")),
        }
    }
}

impl Client {
    /// Reads `len` bytes at `offset` of file `inode`, clipped to the file size; holes read as
    /// zeros. Fails (naming the chunk) rather than return bytes no replica could vouch for.
    pub async fn read_at(&self, inode: u64, offset: u64, len: u64) -> Result<Bytes> {
        self.read_range(inode, offset, len, self.deadline()).await
    }

    pub(crate) async fn read_range(
        &self,
        inode: u64,
        offset: u64,
        len: u64,
        deadline: Instant,
    ) -> Result<Bytes> {
        if len > MAX_READ_AT_BYTES {
            return Err(ClientError::remote(
                &format!("inode {inode}"),
                ErrorCode::InvalidArgument,
                format!("read of {len} bytes exceeds the {MAX_READ_AT_BYTES}-byte limit"),
            ));
        }
        let locs = self.locations(inode, deadline).await?;
        let end = offset.saturating_add(len).min(locs.file_size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let chunk_size = if locs.chunk_size != 0 {
            locs.chunk_size
        } else {
            self.chunk_size()
        };
        let total = end - offset;
        // `total` ≤ MAX_READ_AT_BYTES, so it fits in usize.
        let mut buf = BytesMut::zeroed(total as usize);
        for piece in ranges::split(offset, total, chunk_size) {
            let start = piece.buf_offset as usize;
            let dst = &mut buf[start..start + piece.len as usize];
            self.read_piece(inode, locs.clone(), piece, dst, deadline)
                .await?;
        }
        Ok(buf.freeze())
    }

    /// Fills `dst` with one chunk piece, refreshing locations between rounds.
    async fn read_piece(
        &self,
        inode: u64,
        mut locs: Arc<pb::GetChunksResponse>,
        piece: Piece,
        dst: &mut [u8],
        deadline: Instant,
    ) -> Result<()> {
        let mut backoff = initial_backoff();
        let mut last_err = None;
        for round in 0..READ_ROUNDS {
            if round > 0 {
                if Instant::now() >= deadline {
                    break;
                }
                backoff_sleep(&mut backoff, deadline).await;
                self.invalidate(inode);
                locs = self.fetch_locations(inode, deadline).await?;
            }
            let Some(loc) = locs.chunks.iter().find(|c| c.index == piece.index) else {
                // No chunk at this index: a hole, zeros (dst is zero-filled by the caller).
                dst.fill(0);
                return Ok(());
            };
            match self
                .read_chunk(loc, piece.offset_in_chunk, dst, deadline)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(inode, chunk = loc.chunk_id, round, error = %e, "read round failed");
                    last_err = Some(e);
                }
            }
        }
        self.invalidate(inode);
        Err(last_err.unwrap_or_else(|| {
            ClientError::Timeout(format!(
                "reading chunk index {} of inode {inode}",
                piece.index
            ))
        }))
    }

    /// Tries every replica of `loc` once, starting at a random one to spread load.
    async fn read_chunk(
        &self,
        loc: &pb::ChunkLocation,
        offset: u64,
        dst: &mut [u8],
        deadline: Instant,
    ) -> Result<()> {
        let n = loc.replicas.len();
        if n == 0 {
            return Err(ClientError::Unavailable(format!(
                "chunk {} has no live replica",
                loc.chunk_id
            )));
        }
        let order = self.replica_order(&loc.replicas, rand::random_range(0..n));
        let mut corrupt = 0usize;
        let mut failures = Vec::with_capacity(n);
        for addr in order {
            let err = match self.read_replica(addr, loc, offset, dst, deadline).await {
                Ok(()) => {
                    self.inner.suspects.lock().remove(addr);
                    return Ok(());
                }
                Err(e) => e,
            };
            let code = err.code();
            if matches!(code, ErrorCode::Unavailable | ErrorCode::Timeout) {
                self.suspect(addr);
            }
            let reason = err.into_client(addr, loc.chunk_id).to_string();
            // Failing over is normal; the caller reports the error only if every replica fails.
            tracing::info!(chunk = loc.chunk_id, replica = %addr, error = %reason, "replica read failed");
            if matches!(code, ErrorCode::ChecksumMismatch | ErrorCode::Corrupt) {
                corrupt += 1;
                self.report_bad_replica(loc.chunk_id, addr, &reason).await;
            }
            failures.push(reason);
            if Instant::now() >= deadline {
                break;
            }
        }
        let detail = failures.join("; ");
        if corrupt == n {
            Err(ClientError::Corrupt(format!(
                "chunk {}: every replica failed its checksum: {detail}",
                loc.chunk_id
            )))
        } else {
            Err(ClientError::Unavailable(format!(
                "chunk {}: no replica could be read: {detail}",
                loc.chunk_id
            )))
        }
    }

    /// Replicas starting at `start` (spreading load), those that recently failed to answer
    /// last, so one hung chunkserver does not cost every read its whole attempt timeout.
    fn replica_order<'a>(&self, replicas: &'a [String], start: usize) -> Vec<&'a String> {
        let n = replicas.len();
        let rotated = (0..n).map(|k| &replicas[(start + k) % n]);
        let suspects = self.inner.suspects.lock();
        let is_suspect = |addr: &String| {
            suspects
                .get(addr.as_str())
                .is_some_and(|since| since.elapsed() < SUSPECT_FOR)
        };
        let (mut order, late): (Vec<&String>, Vec<&String>) =
            rotated.partition(|addr| !is_suspect(addr));
        order.extend(late);
        order
    }

    /// Remembers that `addr` did not answer (bounded: the oldest entries go first).
    fn suspect(&self, addr: &str) {
        let mut suspects = self.inner.suspects.lock();
        if suspects.len() >= MAX_SUSPECTS {
            suspects.retain(|_, since| since.elapsed() < SUSPECT_FOR);
            if suspects.len() >= MAX_SUSPECTS {
                suspects.clear();
            }
        }
        suspects.insert(addr.to_string(), Instant::now());
    }

    /// One replica, with one fresh-connection retry when a pooled connection turns out dead.
    async fn read_replica(
        &self,
        addr: &str,
        loc: &pb::ChunkLocation,
        offset: u64,
        dst: &mut [u8],
        deadline: Instant,
    ) -> std::result::Result<(), PeerError> {
        let req = Msg::Read(ReadRequest {
            chunk_id: ChunkId(loc.chunk_id),
            version: ChunkVersion(loc.version),
            offset,
            len: dst.len() as u64,
            token: Vec::new(),
        });
        // A hung replica (stopped process, stalled disk) must leave time for the others.
        let attempt = (self.inner.timeout / READ_ATTEMPT_FRACTION).max(READ_ATTEMPT_MIN);
        let deadline = deadline.min(Instant::now() + attempt);
        let checkout = self.inner.pool.get(addr, deadline).await?;
        let mut conn = checkout.conn;
        let mut res = read_on(&mut conn, &req, dst).await;
        if checkout.reused && matches!(res, Err(PeerError::Frame(_))) {
            conn = self.inner.pool.fresh(addr, deadline).await?;
            res = read_on(&mut conn, &req, dst).await;
        }
        match res {
            Ok(true) => {
                self.inner.pool.put(conn);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                if matches!(e, PeerError::Frame(_)) {
                    self.inner.pool.forget(addr);
                }
                Err(e)
            }
        }
    }

    /// Tells the master a replica failed its checksum; best effort (the chunkserver also
    /// reports it in its next heartbeat).
    async fn report_bad_replica(&self, chunk_id: u64, addr: &str, reason: &str) {
        let req = pb::ReportBadReplicaRequest {
            chunk_id,
            replica: addr.to_string(),
            reason: reason.to_string(),
        };
        let deadline = Instant::now() + REPORT_BAD_TIMEOUT;
        let res = self
            .inner
            .masters
            .call("report bad replica", addr, deadline, |mut m| {
                let req = req.clone();
                async move { m.report_bad_replica(req).await }
            })
            .await;
        if let Err(e) = res {
            tracing::info!(chunk_id, replica = %addr, error = %e, "could not report bad replica");
        }
    }
}

/// One `Read` conversation on `conn`. Fills the front of `dst` with the bytes the replica
/// holds (the rest stays zero: beyond the replica's length, inside the file, is a hole).
/// Returns whether the connection ended at a frame boundary and may be pooled again.
///
/// Packets are received straight into `dst` (no per-packet buffer and copy): on the read
/// path every pass over the bytes counts.
async fn read_on(
    conn: &mut DataConn,
    req: &Msg,
    dst: &mut [u8],
) -> std::result::Result<bool, PeerError> {
    conn.send(req, &[]).await?;
    let want = dst.len() as u64;
    let overlong = |promised: u64| {
        PeerError::Protocol(format!(
            "replica sent more than the {promised} bytes it promised"
        ))
    };
    // `ReadOk` carries no payload; an empty window makes any payload an overflow.
    let (first, _) = conn.recv_into(&mut []).await.map_err(|e| match e {
        FrameError::PayloadTooLarge(_) => overlong(0),
        other => PeerError::Frame(other),
    })?;
    let promised = match first {
        Msg::ReadOk { len } => len,
        Msg::Error { code, message } => return Err(PeerError::Remote { code, message }),
        other => {
            return Err(PeerError::Protocol(format!(
                "unexpected {} in reply to read",
                other.kind()
            )))
        }
    };
    if promised > want {
        return Err(PeerError::Protocol(format!(
            "replica promised {promised} bytes for a read of {want}"
        )));
    }
    // `promised` <= dst.len(), so it fits in usize.
    let end = promised as usize;
    let mut got = 0usize;
    let mut saw_last = false;
    while got < end {
        let (msg, n) = conn
            .recv_into(&mut dst[got..end])
            .await
            .map_err(|e| match e {
                FrameError::PayloadTooLarge(_) => overlong(promised),
                other => PeerError::Frame(other),
            })?;
        match msg {
            Msg::Data { last } => {
                got += n;
                saw_last = last;
                if last && got < end {
                    return Err(PeerError::Protocol(format!(
                        "replica sent {got} of the {promised} bytes it promised"
                    )));
                }
            }
            Msg::Error { code, message } => return Err(PeerError::Remote { code, message }),
            other => {
                return Err(PeerError::Protocol(format!(
                    "unexpected {} during read data",
                    other.kind()
                )))
            }
        }
    }
    // The short tail a replica did not send stays zero, but only inside `dst`'s range,
    // which the caller clipped to the file size.
    dst[got..].fill(0);
    // With nothing promised, whether an empty `Data{last}` follows is unspecified: do not
    // reuse a connection whose position is uncertain.
    Ok(promised > 0 && saw_last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Vec<String> {
        vec!["a:1".to_string(), "b:2".to_string(), "c:3".to_string()]
    }

    // The lazy master channel needs a runtime even though these tests do no I/O.
    #[tokio::test]
    async fn replicas_rotate_from_the_start_index() {
        let client = Client::offline_for_tests();
        let replicas = addrs();
        let order: Vec<&str> = client
            .replica_order(&replicas, 1)
            .into_iter()
            .map(String::as_str)
            .collect();
        assert_eq!(order, vec!["b:2", "c:3", "a:1"]);
    }

    #[tokio::test]
    async fn a_replica_that_did_not_answer_is_tried_last_until_it_answers() {
        let client = Client::offline_for_tests();
        let replicas = addrs();
        client.suspect("b:2");
        let order: Vec<&str> = client
            .replica_order(&replicas, 1)
            .into_iter()
            .map(String::as_str)
            .collect();
        assert_eq!(order, vec!["c:3", "a:1", "b:2"]);
        client.inner.suspects.lock().remove("b:2");
        let order: Vec<&str> = client
            .replica_order(&replicas, 0)
            .into_iter()
            .map(String::as_str)
            .collect();
        assert_eq!(order, vec!["a:1", "b:2", "c:3"]);
    }

    #[tokio::test]
    async fn a_read_refuses_oversized_ranges_without_io() {
        let client = Client::offline_for_tests();
        let err = client
            .read_at(7, 0, MAX_READ_AT_BYTES + 1)
            .await
            .expect_err("too large");
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
    }

    #[tokio::test]
    async fn read_on_rejects_a_replica_that_sends_more_than_it_promised() {
        // A fake chunkserver that promises 4 bytes and sends 5.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut conn = DataConn::from_stream(stream, "client".into());
            let _request = conn.recv().await.expect("request");
            conn.write(&Msg::ReadOk { len: 4 }, &[])
                .await
                .expect("reply");
            conn.send(&Msg::Data { last: true }, b"12345")
                .await
                .expect("data");
        });
        let mut conn = DataConn::connect(&addr).await.expect("connect");
        let req = Msg::Read(ReadRequest {
            chunk_id: ChunkId(1),
            version: ChunkVersion(1),
            offset: 0,
            len: 8,
            token: Vec::new(),
        });
        let mut dst = [0u8; 8];
        let err = read_on(&mut conn, &req, &mut dst)
            .await
            .expect_err("overlong");
        assert!(matches!(err, PeerError::Protocol(_)), "{err:?}");
        server.await.expect("server task");
    }

    #[tokio::test]
    async fn read_on_zero_fills_what_a_short_replica_does_not_hold() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut conn = DataConn::from_stream(stream, "client".into());
            let _request = conn.recv().await.expect("request");
            conn.write(&Msg::ReadOk { len: 3 }, &[])
                .await
                .expect("reply");
            conn.send(&Msg::Data { last: true }, b"abc")
                .await
                .expect("data");
        });
        let mut conn = DataConn::connect(&addr).await.expect("connect");
        let req = Msg::Read(ReadRequest {
            chunk_id: ChunkId(1),
            version: ChunkVersion(1),
            offset: 0,
            len: 6,
            token: Vec::new(),
        });
        let mut dst = [9u8; 6];
        let reusable = read_on(&mut conn, &req, &mut dst).await.expect("read");
        assert!(reusable);
        assert_eq!(&dst, b"abc\0\0\0");
        server.await.expect("server task");
    }
}
