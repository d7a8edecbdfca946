//! Record append on a replica: where a record goes, writing it, and padding a full chunk.
//!
//! Each replica keeps an index of the record ids its chunk holds (id → offset and framed
//! length). The ids are not stored anywhere but in the chunk's own bytes: every appended
//! record is framed (`rdfs_proto::record`) with its id and CRCs, and the index is rebuilt by
//! scanning the (CRC-verified) data the first time a chunk is appended to after a restart,
//! a re-replication or an eviction. So the ids are persisted, replicated and copied with the
//! data by construction, can never disagree with it, and a new primary knows every record
//! its replica holds.
//!
//! Invariants:
//! - An indexed record's bytes are in the chunk at its offset: a write over an indexed
//!   range drops the entries it overlaps; a non-append write drops the whole index.
//! - A replica holds at most one indexed copy of an id: writing a record whose id is
//!   indexed elsewhere zeroes the old copy's magic first (the old copy was never
//!   acknowledged: acknowledged records sit at the same offset on every replica of the chain,
//!   and the primary — which has all of them — only places records at its end or where it
//!   already holds that very record).
//! - Memory is bounded: at most [`MAX_INDEXED_RECORDS`] entries over all chunks; the least
//!   recently appended-to chunks are forgotten (and rescanned if appended to again).

use std::collections::{BTreeMap, HashMap, VecDeque};

use rdfs_proto::ids::ChunkId;
use rdfs_proto::record::{self, Found, RecordId, RECORD_HEADER_BYTES};

use super::{ChunkPaths, ChunkStore, Replica, Result, StoreError};

/// Most record entries indexed over all chunks (about 100 bytes each).
pub const MAX_INDEXED_RECORDS: usize = 1 << 21;
/// Bytes read at a time while scanning a chunk to rebuild its index.
const SCAN_WINDOW_BYTES: u64 = 4 << 20;

/// Where the primary puts a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The chunk already holds this record at this offset (a retry): write it there again
    /// so every replica of the current chain has it, and acknowledge that offset.
    Existing(u64),
    /// A new record at the end of the chunk's data.
    New(u64),
    /// It does not fit: pad the chunk to its full size; the client moves to the next chunk.
    Full { len: u64 },
}

/// The record ids one chunk holds.
#[derive(Debug, Default)]
struct RecordIndex {
    by_id: HashMap<RecordId, u64>,
    /// offset → (framed length, id)
    by_offset: BTreeMap<u64, (u64, RecordId)>,
}

impl RecordIndex {
    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn get(&self, id: &RecordId) -> Option<(u64, u64)> {
        let at = *self.by_id.get(id)?;
        self.by_offset.get(&at).map(|(len, _)| (at, *len))
    }

    /// Drops every entry overlapping `[from, to)`. Records are at most a quarter chunk, so
    /// only entries starting after `from - max_framed` can reach into the range.
    fn remove_overlapping(&mut self, from: u64, to: u64, max_framed: u64) {
        let lo = from.saturating_sub(max_framed);
        let hits: Vec<u64> = self
            .by_offset
            .range(lo..to)
            .filter(|(at, (len, _))| **at + *len > from)
            .map(|(at, _)| *at)
            .collect();
        for at in hits {
            if let Some((_, id)) = self.by_offset.remove(&at) {
                self.by_id.remove(&id);
            }
        }
    }

    fn insert(&mut self, at: u64, len: u64, id: RecordId) {
        if let Some(old) = self.by_id.insert(id, at) {
            self.by_offset.remove(&old);
        }
        self.by_offset.insert(at, (len, id));
    }
}

/// The indexes of recently appended-to chunks, least recently used first in `order`.
#[derive(Debug, Default)]
pub(super) struct RecordIndexes {
    map: HashMap<ChunkId, RecordIndex>,
    order: VecDeque<ChunkId>,
    entries: usize,
}

impl RecordIndexes {
    fn touch(&mut self, id: ChunkId) {
        self.order.retain(|c| *c != id);
        self.order.push_back(id);
    }

    fn remove(&mut self, id: ChunkId) {
        if let Some(ix) = self.map.remove(&id) {
            self.entries -= ix.len();
            self.order.retain(|c| *c != id);
        }
    }

    /// Evicts the least recently used indexes (never `keep`) until within the budget.
    fn shrink(&mut self, keep: ChunkId) {
        while self.entries > MAX_INDEXED_RECORDS {
            let Some(victim) = self.order.iter().copied().find(|c| *c != keep) else {
                break;
            };
            self.remove(victim);
        }
    }

    /// Runs `f` on `id`'s index, keeping the entry count up to date.
    fn with<T>(&mut self, id: ChunkId, f: impl FnOnce(&mut RecordIndex) -> T) -> Option<T> {
        let ix = self.map.get_mut(&id)?;
        let before = ix.len();
        let out = f(ix);
        let after = ix.len();
        self.entries = self.entries + after - before;
        self.touch(id);
        self.shrink(id);
        Some(out)
    }
}

impl ChunkStore {
    /// Primary side: where a framed record of `framed_len` bytes with id `rid` goes in chunk
    /// `id`, whose full size is `chunk_size`.
    pub fn place_record(
        &self,
        id: ChunkId,
        rid: RecordId,
        framed_len: u64,
        chunk_size: u64,
    ) -> Result<Placement> {
        let paths = self.paths(id)?;
        let replica = self.get(id)?;
        let mut r = replica.lock();
        r.usable(id)?;
        self.load_records(&paths, &mut r)?;
        let existing = self.records.lock().with(id, |ix| ix.get(&rid)).flatten();
        if let Some((at, len)) = existing {
            if len != framed_len {
                return Err(StoreError::RecordConflict {
                    chunk: id,
                    record: rid,
                    held: len,
                    got: framed_len,
                });
            }
            return Ok(Placement::Existing(at));
        }
        let len = r.meta.len;
        if len.saturating_add(framed_len) > chunk_size {
            return Ok(Placement::Full { len });
        }
        Ok(Placement::New(len))
    }

    /// Any replica: writes one framed record at `offset` (not durable until `commit`).
    /// An older copy of the same id elsewhere in this chunk is disabled first. Returns the
    /// replica's length afterwards.
    pub fn write_record(&self, id: ChunkId, offset: u64, framed: &[u8]) -> Result<u64> {
        let (rid, _) = record::check(framed).map_err(|e| StoreError::BadRecord {
            chunk: id,
            reason: e.to_string(),
        })?;
        let paths = self.paths(id)?;
        let replica = self.get(id)?;
        let mut r = replica.lock();
        r.usable(id)?;
        self.load_records(&paths, &mut r)?;
        let len = framed.len() as u64;
        let max_framed = record::max_framed_bytes(self.max_chunk_bytes());
        let old = self.records.lock().with(id, |ix| ix.get(&rid)).flatten();
        if let Some((at, _)) = old.filter(|(at, _)| *at != offset) {
            // Zero its magic (never inside the new copy's range: that is overwritten anyway).
            let magic_end = at + 4;
            if magic_end <= offset || at >= offset + len {
                self.write_in(&paths, &mut r, at, &[0u8; 4])?;
                tracing::debug!(chunk_id = %id, record = %rid, old = at, new = offset, "older copy of a retried record disabled");
            }
        }
        let new_len = self.write_in(&paths, &mut r, offset, framed)?;
        self.records.lock().with(id, |ix| {
            if let Some((at, old_len)) = old {
                ix.remove_overlapping(at, at + old_len, max_framed);
            }
            ix.remove_overlapping(offset, offset + len, max_framed);
            ix.insert(offset, len, rid);
        });
        Ok(new_len)
    }

    /// Zero-fills chunk `id` up to `to_len` (a record did not fit). Returns the new length.
    pub fn pad(&self, id: ChunkId, to_len: u64) -> Result<u64> {
        let paths = self.paths(id)?;
        let replica = self.get(id)?;
        let mut r = replica.lock();
        // No record lies beyond the current length, so the index stays valid.
        self.write_in(&paths, &mut r, to_len, &[])
    }

    /// Record ids indexed for chunk `id` (for tests and diagnostics).
    pub fn indexed_records(&self, id: ChunkId) -> Option<Vec<(u64, RecordId)>> {
        let mut idx = self.records.lock();
        idx.with(id, |ix| {
            ix.by_offset
                .iter()
                .map(|(at, (_, rid))| (*at, *rid))
                .collect()
        })
    }

    /// Forgets chunk `id`'s index (its bytes changed under it, or it is gone).
    pub(super) fn forget_records(&self, id: ChunkId) {
        self.records.lock().remove(id);
    }

    /// Builds the chunk's index by scanning its data, unless it is already indexed.
    fn load_records(&self, paths: &ChunkPaths, r: &mut Replica) -> Result<()> {
        let id = r.meta.chunk_id;
        if self.records.lock().map.contains_key(&id) {
            return Ok(());
        }
        let max_framed = record::max_framed_bytes(self.max_chunk_bytes()) as usize;
        let held = r.meta.len;
        let mut ix = RecordIndex::default();
        // `buf` holds the chunk's bytes from `base`; a window is read whenever the scanner
        // needs more, and bytes that can no longer start a record are dropped.
        let mut buf: Vec<u8> = Vec::new();
        let mut base = 0u64;
        let mut next_read = 0u64;
        let mut pos = 0usize;
        loop {
            let complete = next_read >= held;
            match record::find_record(&buf, pos, complete, max_framed.max(RECORD_HEADER_BYTES)) {
                Found::Record {
                    at,
                    framed,
                    id: rid,
                } => {
                    ix.insert(base + at as u64, framed as u64, rid);
                    pos = at + framed;
                }
                Found::End => break,
                Found::NeedMore { keep_from } => {
                    buf.drain(..keep_from);
                    base += keep_from as u64;
                    pos = 0;
                    let want = SCAN_WINDOW_BYTES.min(held - next_read);
                    let bytes = self.read_in(paths, r, next_read, want)?;
                    if bytes.is_empty() {
                        // Shorter than recorded: treat what we have as complete.
                        next_read = held;
                        continue;
                    }
                    next_read += bytes.len() as u64;
                    buf.extend_from_slice(&bytes);
                }
            }
        }
        tracing::debug!(chunk_id = %id, records = ix.len(), bytes = held, "record index rebuilt from chunk data");
        let mut all = self.records.lock();
        all.entries += ix.len();
        all.map.insert(id, ix);
        all.touch(id);
        all.shrink(id);
        Ok(())
    }
}
