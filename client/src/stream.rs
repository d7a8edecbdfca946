//! Whole-file transfers (`dfs put` / `dfs get`) built on the ranged reads and writes. Several
//! pieces travel at once (each on its own task) while the local side reads or writes, so the
//! disk, the network and the replicas all work at the same time.
//!
//! `put_stream` writes pieces of up to [`PUT_PIECE_BYTES`] (one data-plane request each, never
//! crossing a chunk boundary), several chunks at a time, each with `sync`, and commits the size
//! after the last one, so a `put` that returns `Ok` is durable on every replica of every chunk.

use std::collections::VecDeque;

use bytes::Bytes;
use rdfs_proto::{pb, ErrorCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{ClientError, Result};
use crate::ranges::next_piece_len;
use crate::{checked_path, Client, DEFAULT_FILE_MODE};

/// Bytes per streamed write request: large enough that per-request round trips vanish,
/// small enough that [`PUT_INFLIGHT_PIECES`] buffers in flight stay modest.
pub const PUT_PIECE_BYTES: u64 = 16 << 20;
/// First buffer size when reading a piece from the local reader.
const READ_BUF_START_BYTES: usize = 256 << 10;
/// Pieces of one `put` written at the same time (on distinct chunks).
pub const PUT_INFLIGHT_PIECES: usize = 4;
/// A long `put` commits its size at least this often, so progress is visible to readers.
const COMMIT_EVERY_BYTES: u64 = 256 << 20;
/// Bytes per streamed read request.
pub const GET_PIECE_BYTES: u64 = 16 << 20;
/// Pieces of one `get` read ahead at once (bounds memory to this many pieces).
pub const GET_INFLIGHT_PIECES: usize = 4;

impl Client {
    /// Creates `path` (truncating an existing file only with `overwrite`) and fills it from
    /// `reader`. `progress` gets the total bytes stored so far. Returns the byte count once
    /// every byte is acknowledged, fsynced on every replica and the size committed. When the
    /// transfer fails after the file was created, the partial file is deleted (best effort)
    /// so a failed `put` leaves nothing that looks like a complete copy.
    pub async fn put_stream<R, P>(
        &self,
        reader: R,
        path: &str,
        overwrite: bool,
        progress: P,
    ) -> Result<u64>
    where
        R: AsyncRead,
        P: Fn(u64),
    {
        let path = checked_path(path)?;
        let attr = self.create(&path, DEFAULT_FILE_MODE, overwrite).await?;
        let res = self.fill_from(reader, &path, attr.inode, progress).await;
        if let Err(err) = &res {
            if let Err(cleanup) = self.delete(&path, false).await {
                tracing::info!(%path, error = %cleanup, "could not remove partial file after: {err}");
            }
        }
        res
    }

    /// Writes `reader` into the empty file `inode` from offset 0.
    ///
    /// Up to [`PUT_INFLIGHT_PIECES`] pieces travel at once, each on its own task, but never
    /// two of the same chunk (they would only queue on the primary's chunk lock, and a new
    /// chunk's allocation must not race itself). Every piece is written with `sync`, so an
    /// acknowledged piece is on every replica's disk whatever order pieces finish in. The
    /// size is committed in order: every [`COMMIT_EVERY_BYTES`], so a long transfer becomes
    /// visible as it goes, and once at the end.
    async fn fill_from<R, P>(&self, reader: R, path: &str, inode: u64, progress: P) -> Result<u64>
    where
        R: AsyncRead,
        P: Fn(u64),
    {
        tokio::pin!(reader);
        let chunk_size = self.chunk_size().max(1);
        let mut inflight: VecDeque<InflightPiece> = VecDeque::with_capacity(PUT_INFLIGHT_PIECES);
        let mut eof = false;
        let mut read_pos = 0u64;
        let mut committed = 0u64;
        let result = loop {
            let next_index = read_pos / chunk_size;
            let can_start = !eof
                && inflight.len() < PUT_INFLIGHT_PIECES
                && inflight.iter().all(|p| p.index != next_index);
            if can_start {
                let want = next_piece_len(read_pos, PUT_PIECE_BYTES, chunk_size);
                let buf = match read_piece(&mut reader, want, &mut eof).await {
                    Ok(buf) => buf,
                    Err(e) => break Err(e),
                };
                if buf.is_empty() {
                    continue;
                }
                let offset = read_pos;
                read_pos += buf.len() as u64;
                let client = self.clone();
                let deadline = self.deadline();
                let task = tokio::spawn(async move {
                    client
                        .write_range(inode, offset, &buf, true, deadline)
                        .await
                });
                inflight.push_back(InflightPiece {
                    index: next_index,
                    end: read_pos,
                    task,
                });
                continue;
            }
            let Some(piece) = inflight.pop_front() else {
                break Ok(());
            };
            let end = piece.end;
            match piece.task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(join) => {
                    break Err(ClientError::Protocol(format!("write task failed: {join}")))
                }
            }
            if end - committed >= COMMIT_EVERY_BYTES {
                if let Err(e) = self.commit_write(inode, end, self.deadline()).await {
                    break Err(e);
                }
                committed = end;
            }
            progress(end);
        };
        for piece in &inflight {
            piece.task.abort();
        }
        result.map_err(|e| with_path(e, path))?;
        // The final size is committed here, once the loop has seen the end of input, which
        // can come only after the last piece finished (a read exactly up to EOF does not know
        // it is the last one, and the next read waits while a piece of the same chunk is in
        // flight).
        if committed < read_pos {
            self.commit_write(inode, read_pos, self.deadline())
                .await
                .map_err(|e| with_path(e, path))?;
        }
        Ok(read_pos)
    }

    /// Copies file `path` into `writer`; `progress` gets the total bytes written so far.
    pub async fn get_stream<W, P>(&self, path: &str, writer: W, progress: P) -> Result<u64>
    where
        W: AsyncWrite,
        P: Fn(u64),
    {
        let mut pieces = self.read_pieces(path).await?;
        tokio::pin!(writer);
        while let Some(data) = pieces.next_piece().await? {
            writer.write_all(&data).await?;
            progress(pieces.position());
        }
        writer.flush().await?;
        Ok(pieces.position())
    }

    /// Opens file `path` for reading in order, [`GET_INFLIGHT_PIECES`] pieces ahead; the
    /// caller takes each piece as owned bytes (so it can hand them to another thread
    /// without a copy).
    pub async fn read_pieces(&self, path: &str) -> Result<PieceReader> {
        let path = checked_path(path)?;
        let attr = self.stat(&path).await?;
        if attr.file_type == pb::FileType::Dir as i32 {
            return Err(ClientError::remote(&path, ErrorCode::IsADirectory, ""));
        }
        let inode = attr.inode;
        // Start from fresh locations (another client may have written since we cached them),
        // fetched once here so the read tasks share them.
        self.invalidate(inode);
        if attr.size > 0 {
            self.fetch_locations(inode, self.deadline())
                .await
                .map_err(|e| with_path(e, &path))?;
        }
        Ok(PieceReader {
            client: self.clone(),
            path,
            inode,
            size: attr.size,
            reads: ReadAhead::default(),
            scheduled: 0,
            position: 0,
            done: false,
        })
    }
}

/// A whole file read in order with read-ahead ([`Client::read_pieces`]). Each piece is one
/// data-plane request of up to [`GET_PIECE_BYTES`] inside one chunk, read on its own task.
pub struct PieceReader {
    client: Client,
    path: String,
    inode: u64,
    /// Size when opened: a file that grows meanwhile is read up to here.
    size: u64,
    reads: ReadAhead,
    /// File offset up to which reads were started.
    scheduled: u64,
    /// Bytes handed out so far.
    position: u64,
    done: bool,
}

impl PieceReader {
    /// Bytes handed out so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next piece in file order, or None at the end. Errors name the path.
    pub async fn next_piece(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let chunk_size = self.client.chunk_size().max(1);
        while self.scheduled < self.size && self.reads.0.len() < GET_INFLIGHT_PIECES {
            let len = next_piece_len(self.scheduled, GET_PIECE_BYTES, chunk_size)
                .min(self.size - self.scheduled);
            let client = self.client.clone();
            let (inode, offset, deadline) = (self.inode, self.scheduled, self.client.deadline());
            let task =
                tokio::spawn(async move { client.read_range(inode, offset, len, deadline).await });
            self.reads.0.push_back((len, task));
            self.scheduled += len;
        }
        let Some((want, task)) = self.reads.0.pop_front() else {
            self.done = true;
            return Ok(None);
        };
        let data = match task.await {
            Ok(res) => res.map_err(|e| with_path(e, &self.path))?,
            Err(join) => {
                return Err(ClientError::Protocol(format!("read task failed: {join}")));
            }
        };
        self.position += data.len() as u64;
        if (data.len() as u64) < want {
            // The file shrank while we read it: what is left is all there is.
            self.done = true;
        }
        Ok(Some(data))
    }
}

/// Read-ahead tasks of one `PieceReader`; aborted when it is dropped early.
#[derive(Default)]
struct ReadAhead(VecDeque<(u64, tokio::task::JoinHandle<Result<Bytes>>)>);

impl Drop for ReadAhead {
    fn drop(&mut self) {
        for (_, task) in &self.0 {
            task.abort();
        }
    }
}

/// A piece being written by its own task.
struct InflightPiece {
    /// Chunk the piece belongs to.
    index: u64,
    /// File offset just past the piece.
    end: u64,
    task: tokio::task::JoinHandle<Result<()>>,
}

/// Reads up to `len` bytes, stopping early only at end of input (then sets `eof`).
async fn read_piece<R: AsyncRead + ?Sized>(
    reader: &mut std::pin::Pin<&mut R>,
    len: u64,
    eof: &mut bool,
) -> Result<Vec<u8>> {
    // `len` ≤ PUT_PIECE_BYTES, so it fits in usize. The buffer grows as bytes arrive, so a
    // small file does not cost a whole piece of memory.
    let len = len as usize;
    let mut buf: Vec<u8> = Vec::with_capacity(len.min(READ_BUF_START_BYTES));
    while buf.len() < len {
        if buf.len() == buf.capacity() {
            buf.reserve_exact(
                buf.capacity()
                    .max(READ_BUF_START_BYTES)
                    .min(len - buf.len()),
            );
        }
        let remaining = (len - buf.len()) as u64;
        let n = reader.as_mut().take(remaining).read_buf(&mut buf).await?;
        if n == 0 {
            *eof = true;
            break;
        }
    }
    Ok(buf)
}

/// Data-plane errors name an inode; for a whole-file transfer the path says more.
fn with_path(err: ClientError, path: &str) -> ClientError {
    match err {
        ClientError::Remote {
            path: p,
            code,
            message,
        } if p.starts_with("inode ") => ClientError::Remote {
            path: path.to_string(),
            code,
            message,
        },
        other => other,
    }
}
