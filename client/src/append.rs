//! Record append (GFS semantics, plus exactly-once per chunk): many producers append
//! framed records to one file concurrently; the primary of the file's last chunk chooses
//! each record's offset, so records from different clients never overwrite or interleave.
//!
//! Flow of one [`Appender::append`]: frame the payload under a fresh [`RecordId`]; get a
//! grant on the file's last chunk (`PrepareAppend`, reused while its lease lasts); send the
//! record to the primary. `AppendOk` → publish `size = max(size, end)` (`CommitWrite`) and
//! return the record's file offset. `ChunkFull` → ask for the chunk after it (the master
//! allocates it once, whoever asks first). A failure → ask for a new grant on the same chunk
//! naming the failed replicas, and send the same record again: a replica that already holds
//! that id puts it back at the same offset instead of appending it twice.
//!
//! Guarantees: an acknowledged record is on every replica of its chunk's chain (fsynced when
//! the appender syncs, the default) and inside the file size; it is atomic (one framed,
//! CRC-checked unit at one offset); it may also appear, unacknowledged, elsewhere after
//! retries that moved to another chunk. [`crate::records::RecordReader`] drops those
//! duplicates by id.

use rdfs_proto::dataplane::{AppendRequest, Msg};
use rdfs_proto::record::{self, RecordId};
use rdfs_proto::{pb, ErrorCode};
use std::time::Duration;
use tokio::time::Instant;

use crate::error::{ClientError, Result};
use crate::master::{backoff_sleep, initial_backoff};
use crate::write::{fence_of, WriteFailure};
use crate::Client;

/// Failed pushes tolerated for one record before the append fails.
const MAX_APPEND_ATTEMPTS: u32 = 8;
/// Full chunks one record may skip before giving up (each hop allocates a chunk; more
/// than a few means something is wrong, not that the file is busy).
const MAX_FULL_CHUNK_HOPS: u32 = 64;
/// A cached grant is dropped this long before its lease would expire.
const GRANT_REUSE_MARGIN: Duration = Duration::from_millis(500);

/// Appends records to one file. Cheap to create; one record in flight at a time (use one
/// appender per concurrent producer).
pub struct Appender {
    client: Client,
    path: String,
    inode: u64,
    /// Random per appender, so record ids never collide across producers.
    producer: u64,
    next_seq: u64,
    sync: bool,
    cached: Option<CachedGrant>,
}

/// A grant on the chunk records currently go to, reusable until `until`.
struct CachedGrant {
    index: u64,
    grant: pb::PrepareWriteResponse,
    until: Instant,
}

/// Where and how an append attempt goes.
#[derive(Default)]
struct Target {
    after: Option<u64>,
    retry: Option<u64>,
    failed: Vec<String>,
}

impl Client {
    /// An appender for the existing regular file `path`.
    pub async fn appender(&self, path: &str) -> Result<Appender> {
        let attr = self.regular_file(path).await?;
        Ok(Appender {
            client: self.clone(),
            path: path.to_string(),
            inode: attr.inode,
            producer: rand::random(),
            next_seq: 0,
            sync: true,
            cached: None,
        })
    }

    /// Appends one record to `path` and returns its file offset (see [`Appender`]).
    pub async fn append_record(&self, path: &str, data: &[u8]) -> Result<u64> {
        self.appender(path).await?.append(data).await
    }
}

impl Appender {
    /// Whether every replica fsyncs a record before it is acknowledged (default true).
    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    /// Largest payload one record may carry: framed, at most a quarter chunk.
    pub fn max_record_bytes(&self) -> usize {
        max_payload(self.client.chunk_size())
    }

    /// Appends `data` as one record; returns the file offset of its framed bytes.
    pub async fn append(&mut self, data: &[u8]) -> Result<u64> {
        let chunk_size = self.client.chunk_size();
        let max = max_payload(chunk_size);
        if data.len() > max {
            return Err(ClientError::remote(
                &self.path,
                ErrorCode::InvalidArgument,
                format!(
                    "record of {} bytes exceeds the limit of {max} bytes (a framed record is at \
                     most a quarter of the {chunk_size}-byte chunk)",
                    data.len()
                ),
            ));
        }
        let rid = RecordId::new(self.producer, self.next_seq);
        self.next_seq += 1;
        let framed = record::encode(rid, data);
        let deadline = Instant::now() + self.client.timeout();
        let (index, offset) = self.place(rid, &framed, deadline).await?;
        let start = index * chunk_size + offset;
        let end = start + framed.len() as u64;
        self.client.commit_write(self.inode, end, deadline).await?;
        self.client.invalidate(self.inode);
        Ok(start)
    }

    /// Gets the record acknowledged by some chain; returns (chunk index, offset in chunk).
    async fn place(
        &mut self,
        rid: RecordId,
        framed: &[u8],
        deadline: Instant,
    ) -> Result<(u64, u64)> {
        let mut target = Target::default();
        let mut failures = 0;
        let mut hops = 0;
        let mut backoff = initial_backoff();
        let mut last_err: Option<ClientError> = None;
        while failures < MAX_APPEND_ATTEMPTS && hops < MAX_FULL_CHUNK_HOPS {
            if Instant::now() >= deadline {
                break;
            }
            let (index, grant) = self.grant(&target, deadline).await?;
            // Whatever happens next, a retry of this record starts on this chunk.
            target.retry = Some(index);
            match self.push(&grant, rid, framed, deadline).await {
                Ok(Msg::AppendOk(ack)) => return Ok((index, ack.offset)),
                Ok(Msg::ChunkFull { .. }) => {
                    tracing::debug!(inode = self.inode, index, "chunk full; moving on");
                    self.cached = None;
                    hops += 1;
                    target = Target {
                        after: Some(index),
                        ..Target::default()
                    };
                }
                Ok(other) => {
                    self.cached = None;
                    failures += 1;
                    last_err = Some(WriteFailure::protocol(&grant, &other).error);
                }
                Err(f) => {
                    tracing::info!(
                        inode = self.inode, index, chunk = grant.chunk_id, record = %rid,
                        failed = ?f.failed, error = %f.error, "append to chain failed"
                    );
                    self.cached = None;
                    if !f.retry {
                        return Err(f.error);
                    }
                    failures += 1;
                    target.failed = f.failed;
                    target.after = None;
                    last_err = Some(f.error);
                    backoff_sleep(&mut backoff, deadline).await;
                }
            }
        }
        Err(last_err.unwrap_or_else(|| {
            ClientError::Timeout(format!("appending a record to {}", self.path))
        }))
    }

    /// The cached grant when it still fits `target`, else a fresh one from the master.
    async fn grant(
        &mut self,
        target: &Target,
        deadline: Instant,
    ) -> Result<(u64, pb::PrepareWriteResponse)> {
        if let Some(c) = &self.cached {
            let fits = target.after.is_none()
                && target.failed.is_empty()
                && target.retry.is_none_or(|r| r == c.index);
            if fits && Instant::now() < c.until {
                return Ok((c.index, c.grant.clone()));
            }
        }
        let req = pb::PrepareAppendRequest {
            inode: self.inode,
            after_index: target.after,
            retry_index: target.retry,
            failed_replicas: target.failed.clone(),
            caller: self.client.caller(),
        };
        let what = self.path.clone();
        let resp = self
            .client
            .inner
            .masters
            .call("prepare append", &what, deadline, |mut m| {
                let req = req.clone();
                async move { m.prepare_append(req).await }
            })
            .await?;
        let grant = resp.grant.ok_or_else(|| {
            ClientError::Protocol("master sent an append answer without a grant".into())
        })?;
        if grant.chain.is_empty() {
            return Err(ClientError::Unavailable(format!(
                "no chunkserver available for chunk {}",
                grant.chunk_id
            )));
        }
        if grant.chunk_size != 0 && grant.chunk_size != self.client.chunk_size() {
            return Err(ClientError::Protocol(format!(
                "master grants chunks of {} bytes, client framed for {}",
                grant.chunk_size,
                self.client.chunk_size()
            )));
        }
        let lease = Duration::from_millis(grant.lease_remaining_ms);
        self.cached = Some(CachedGrant {
            index: resp.chunk_index,
            grant: grant.clone(),
            until: Instant::now() + lease.saturating_sub(GRANT_REUSE_MARGIN),
        });
        Ok((resp.chunk_index, grant))
    }

    async fn push(
        &self,
        grant: &pb::PrepareWriteResponse,
        rid: RecordId,
        framed: &[u8],
        deadline: Instant,
    ) -> std::result::Result<Msg, WriteFailure> {
        let req = Msg::Append(AppendRequest {
            fence: fence_of(grant),
            record_id: rid,
            len: framed.len() as u64,
            downstream: grant.chain[1..].to_vec(),
            sync: self.sync,
            serial: 0,
            offset: None,
        });
        self.client
            .push_to_chain(grant, &req, framed, deadline)
            .await
    }
}

/// Largest payload whose framed record fits a quarter of `chunk_size`.
pub(crate) fn max_payload(chunk_size: u64) -> usize {
    (record::max_framed_bytes(chunk_size) as usize).saturating_sub(record::RECORD_HEADER_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_limit_leaves_room_for_the_header() {
        assert_eq!(max_payload(1 << 20), (256 << 10) - 32);
        assert_eq!(
            record::framed_len(max_payload(64 << 20)) as u64,
            record::max_framed_bytes(64 << 20)
        );
        assert_eq!(max_payload(0), 0);
    }
}
