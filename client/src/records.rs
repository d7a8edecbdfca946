//! [`RecordReader`]: iterates the records of a file written by record append, each exactly
//! once and with verified bytes.
//!
//! The file is read chunk by chunk (a record never crosses a chunk boundary) in windows of
//! [`READ_WINDOW_BYTES`]; within a chunk the scanner (`rdfs_proto::record::find_record`)
//! resynchronises on the record magic, so padding, zero holes and torn or abandoned
//! records are skipped. Records whose id was already returned (copies left by retries) are
//! dropped. Memory: one window plus at most one record (a quarter chunk), and 16 bytes per
//! distinct record id seen.
//!
//! The reader covers the file as it was when opened (its size then); records appended later
//! are read by opening a new reader.

use std::collections::HashSet;

use bytes::Bytes;
use rdfs_proto::pb;
use rdfs_proto::record::{self, Found, RecordId, RECORD_HEADER_BYTES};
use rdfs_proto::ErrorCode;

use crate::error::{ClientError, Result};
use crate::Client;

/// Bytes read from the file at a time.
pub const READ_WINDOW_BYTES: u64 = 4 << 20;

/// One record as written by [`crate::Appender::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: RecordId,
    /// File offset of the framed record.
    pub offset: u64,
    pub data: Bytes,
}

/// See the module documentation.
pub struct RecordReader {
    client: Client,
    inode: u64,
    size: u64,
    chunk_size: u64,
    max_framed: usize,
    /// Index of the next chunk to start reading.
    next_chunk: u64,
    /// The chunk being read: bytes of `[base, base + buf.len())`, read up to `read_to`,
    /// ending at `chunk_end`. `None` between chunks.
    current: Option<ChunkWindow>,
    seen: HashSet<RecordId>,
    duplicates: u64,
}

struct ChunkWindow {
    buf: Vec<u8>,
    base: u64,
    pos: usize,
    read_to: u64,
    chunk_end: u64,
}

impl Client {
    /// Attributes of `path`, which must be a regular file (`IsADirectory` / `InvalidArgument`).
    pub(crate) async fn regular_file(&self, path: &str) -> Result<pb::FileAttr> {
        let attr = self.stat(path).await?;
        if attr.file_type != pb::FileType::File as i32 {
            let code = if attr.file_type == pb::FileType::Dir as i32 {
                ErrorCode::IsADirectory
            } else {
                ErrorCode::InvalidArgument
            };
            return Err(ClientError::remote(path, code, "not a regular file"));
        }
        Ok(attr)
    }

    /// A reader over the records of file `path`.
    pub async fn record_reader(&self, path: &str) -> Result<RecordReader> {
        let attr = self.regular_file(path).await?;
        // Reads must see at least the size just read, not an older cached one.
        self.invalidate(attr.inode);
        let chunk_size = self.chunk_size();
        if chunk_size == 0 {
            return Err(ClientError::Protocol("chunk size unknown".into()));
        }
        Ok(RecordReader {
            client: self.clone(),
            inode: attr.inode,
            size: attr.size,
            chunk_size,
            max_framed: (record::max_framed_bytes(chunk_size) as usize).max(RECORD_HEADER_BYTES),
            next_chunk: 0,
            current: None,
            seen: HashSet::new(),
            duplicates: 0,
        })
    }
}

impl RecordReader {
    /// The next record not returned before, or `None` at the end of the file.
    pub async fn next(&mut self) -> Result<Option<Record>> {
        loop {
            let Some(w) = self.current.as_mut() else {
                let start = self.next_chunk.saturating_mul(self.chunk_size);
                if start >= self.size {
                    return Ok(None);
                }
                self.next_chunk += 1;
                self.current = Some(ChunkWindow {
                    buf: Vec::new(),
                    base: start,
                    pos: 0,
                    read_to: start,
                    chunk_end: (start + self.chunk_size).min(self.size),
                });
                continue;
            };
            let complete = w.read_to >= w.chunk_end;
            match record::find_record(&w.buf, w.pos, complete, self.max_framed) {
                Found::Record { at, framed, id } => {
                    w.pos = at + framed;
                    if !self.seen.insert(id) {
                        self.duplicates += 1;
                        continue;
                    }
                    let data =
                        Bytes::copy_from_slice(&w.buf[at + RECORD_HEADER_BYTES..at + framed]);
                    return Ok(Some(Record {
                        id,
                        offset: w.base + at as u64,
                        data,
                    }));
                }
                Found::End => self.current = None,
                Found::NeedMore { keep_from } => {
                    w.buf.drain(..keep_from);
                    w.base += keep_from as u64;
                    w.pos = 0;
                    let want = READ_WINDOW_BYTES.min(w.chunk_end - w.read_to);
                    let bytes = self.client.read_at(self.inode, w.read_to, want).await?;
                    if bytes.is_empty() {
                        // The file ends earlier than it did at open (truncated): stop there.
                        w.read_to = w.chunk_end;
                        continue;
                    }
                    w.read_to += bytes.len() as u64;
                    w.buf.extend_from_slice(&bytes);
                }
            }
        }
    }

    /// Copies of already returned records skipped so far.
    pub fn duplicates_skipped(&self) -> u64 {
        self.duplicates
    }
}
