//! Data operations of the chunk store: checksummed writes and reads, commit (meta + fsync),
//! and installing a whole replica received from another chunkserver.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use rdfs_proto::dataplane::ChunkInfo;
use rdfs_proto::ids::{ChunkId, ChunkVersion, LeaseSerial};
use rdfs_proto::limits::BLOCK_SIZE;

/// Bytes read at a time while copying a chunk locally.
const COPY_PIECE_BYTES: u64 = 4 << 20;

use super::{
    block_of, open_rw, read_at_zero_fill, sync_dir, write_meta, ChunkMeta, ChunkPaths, ChunkStore,
    Replica, Result, StoreError,
};

impl ChunkStore {
    /// Writes `data` at `offset`, zero-filling any gap past the end, and updates the CRCs of
    /// the touched blocks. Returns the replica's length afterwards. Not durable until
    /// [`ChunkStore::commit`].
    pub fn write(&self, id: ChunkId, offset: u64, data: &[u8]) -> Result<u64> {
        let paths = self.paths(id)?;
        let replica = self.get(id)?;
        let mut r = replica.lock();
        let len = self.write_in(&paths, &mut r, offset, data)?;
        // Arbitrary bytes may have replaced indexed records: rebuild the index when needed.
        self.forget_records(id);
        Ok(len)
    }

    /// [`ChunkStore::write`] on a replica whose lock the caller holds.
    pub(super) fn write_in(
        &self,
        paths: &ChunkPaths,
        r: &mut Replica,
        offset: u64,
        data: &[u8],
    ) -> Result<u64> {
        let id = r.meta.chunk_id;
        let end = self.check_range(id, offset, data.len() as u64)?;
        r.usable(id)?;
        let old_len = r.meta.len;
        if data.is_empty() && end <= old_len {
            return Ok(old_len);
        }
        let new_len = old_len.max(end);
        self.reserve(id, new_len - old_len)?;
        let file = open_rw(id, &paths.data)?;
        let span = Span {
            offset,
            data,
            old_len,
            new_len,
        };
        let saved_crcs = r.meta.crcs.clone();
        r.meta.crcs.resize(super::blocks_for(new_len) as usize, 0);
        for block in block_of(offset.min(old_len))..=block_of(end.max(1) - 1) {
            if let Err(e) = write_block(&file, &paths.data, r, block, &span) {
                self.fail_write(&file, r, &span, saved_crcs, &e);
                return Err(e);
            }
        }
        r.meta.len = new_len;
        self.used.fetch_add(new_len - old_len, Ordering::Relaxed);
        Ok(new_len)
    }

    /// Makes the writes so far visible to a restart: meta rewritten atomically, and with
    /// `sync` the data, meta and directory fsynced.
    pub fn commit(&self, id: ChunkId, sync: bool) -> Result<u64> {
        let paths = self.paths(id)?;
        let replica = self.get(id)?;
        let r = replica.lock();
        r.usable(id)?;
        if sync {
            open_rw(id, &paths.data)?
                .sync_data()
                .map_err(|e| StoreError::io(id, "fsync", &paths.data, e))?;
        }
        write_meta(&paths, &r.meta, sync).inspect_err(|e| self.note_io_error(e))?;
        Ok(r.meta.len)
    }

    /// Reads up to `len` bytes at `offset`: only what the replica holds (possibly nothing).
    /// Every touched block is verified; a mismatch quarantines the replica.
    pub fn read(&self, id: ChunkId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let paths = self.paths(id)?;
        let replica = self.get(id)?;
        let mut r = replica.lock();
        self.read_in(&paths, &mut r, offset, len)
    }

    /// [`ChunkStore::read`] on a replica whose lock the caller holds.
    pub(super) fn read_in(
        &self,
        paths: &ChunkPaths,
        r: &mut Replica,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let id = r.meta.chunk_id;
        r.usable(id)?;
        let file =
            File::open(&paths.data).map_err(|e| StoreError::io(id, "open", &paths.data, e))?;
        let mut buf = Vec::new();
        let range = read_verified(id, &file, &paths.data, r, offset, len, &mut buf)?;
        buf.truncate(range.end);
        buf.drain(..range.start);
        Ok(buf)
    }

    /// Opens a replica for one sequential read of `[offset, offset + len)` (the data plane's
    /// `Read`). The range is announced to the kernel (`POSIX_FADV_WILLNEED`) so a cold read
    /// streams from disk ahead of the packets instead of one synchronous read per packet.
    pub fn open_reader(&self, id: ChunkId, offset: u64, len: u64) -> Result<ReplicaReader> {
        let paths = self.paths(id)?;
        let replica = self.get(id)?;
        let r = replica.lock();
        r.usable(id)?;
        let file =
            File::open(&paths.data).map_err(|e| StoreError::io(id, "open", &paths.data, e))?;
        advise_willneed(&file, offset, len);
        let generation = r.file_generation;
        drop(r);
        Ok(ReplicaReader {
            id,
            path: paths.data,
            replica,
            generation,
            file,
        })
    }

    /// Reads and verifies up to `len` bytes at `offset` through `reader` into `buf` (reused
    /// across calls: its old bytes are overwritten, not zeroed first). Returns where the
    /// requested bytes lie in `buf`; like [`ChunkStore::read`] only what the replica holds.
    pub fn read_with(
        &self,
        reader: &mut ReplicaReader,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<std::ops::Range<usize>> {
        let id = reader.id;
        let replica = reader.replica.clone();
        let mut r = replica.lock();
        r.usable(id)?;
        if r.file_generation != reader.generation {
            // A copy was installed over the file we opened: read the new one.
            reader.file = File::open(&reader.path)
                .map_err(|e| StoreError::io(id, "open", &reader.path, e))?;
            reader.generation = r.file_generation;
        }
        read_verified(id, &reader.file, &reader.path, &mut r, offset, len, buf)
    }
    /// Starts receiving a whole replica into a temporary file.
    pub fn begin_install(&self, id: ChunkId) -> Result<Installer> {
        let paths = self.paths(id)?;
        fs::create_dir_all(&paths.dir).map_err(|e| StoreError::io(id, "create", &paths.dir, e))?;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&paths.data_tmp)
            .map_err(|e| StoreError::io(id, "create", &paths.data_tmp, e))?;
        Ok(Installer {
            chunk: id,
            paths,
            file,
            len: 0,
            crcs: Vec::new(),
            block: crc32fast::Hasher::new(),
            block_fill: 0,
        })
    }

    /// Verifies the received copy, fsyncs it and renames it over any older replica.
    pub fn finish_install(
        &self,
        mut inst: Installer,
        version: ChunkVersion,
        expected_len: u64,
    ) -> Result<ChunkInfo> {
        // On failure, dropping `inst` removes the temporary copy.
        self.install_checked(&mut inst, version, expected_len)
    }

    fn install_checked(
        &self,
        inst: &mut Installer,
        version: ChunkVersion,
        expected_len: u64,
    ) -> Result<ChunkInfo> {
        let id = inst.chunk;
        if inst.len != expected_len {
            return Err(StoreError::ShortReplica {
                chunk: id,
                got: inst.len,
                expected: expected_len,
            });
        }
        self.check_range(id, 0, inst.len)?;
        inst.seal();
        let tmp = &inst.paths.data_tmp;
        inst.file
            .sync_all()
            .map_err(|e| StoreError::io(id, "fsync", tmp, e))?;
        verify_file(&inst.file, id, inst.len, &inst.crcs)
            .map_err(|e| e.unwrap_or_else(|e| StoreError::io(id, "read", tmp, e)))?;
        let _guard = self.create_lock.lock();
        let existing = self.get(id).ok();
        let old_len = existing.as_ref().map_or(0, |h| h.lock().meta.len);
        if let Some(h) = &existing {
            let r = h.lock();
            if !r.quarantined && !r.deleted && r.meta.version > version {
                return Err(StoreError::VersionRegression {
                    chunk: id,
                    stored: r.meta.version,
                    requested: version,
                });
            }
        }
        self.reserve(id, inst.len.saturating_sub(old_len))?;
        let meta = ChunkMeta {
            len: inst.len,
            crcs: std::mem::take(&mut inst.crcs),
            ..ChunkMeta::new(id, version, LeaseSerial(0))
        };
        let paths = &inst.paths;
        let handle = existing.unwrap_or_else(|| {
            Arc::new(Mutex::new(Replica {
                meta: meta.clone(),
                quarantined: false,
                deleted: false,
                file_generation: 0,
            }))
        });
        let mut r = handle.lock();
        // Data first: a crash between the renames leaves old meta over new data, which
        // fails its CRCs at restart instead of serving mixed bytes as valid.
        fs::rename(&paths.data_tmp, &paths.data)
            .map_err(|e| StoreError::io(id, "rename", &paths.data_tmp, e))?;
        write_meta(paths, &meta, true)?;
        sync_dir(id, &paths.dir)?;
        r.meta = meta;
        r.quarantined = false;
        r.deleted = false;
        r.file_generation += 1;
        drop(r);
        self.used.fetch_add(inst.len, Ordering::Relaxed);
        self.used.fetch_sub(old_len, Ordering::Relaxed);
        self.replicas.lock().insert(id, handle);
        self.forget_records(id);
        tracing::info!(chunk_id = %id, version = %version, len = inst.len, "replica installed");
        Ok(ChunkInfo {
            chunk_id: id,
            version,
            len: inst.len,
        })
    }

    /// Copy-on-write: makes a new local replica `dst` at `dst_version` (with lease serial
    /// `lease`) holding exactly the bytes of our replica of `src` at `src_version`. The source
    /// is read block-verified and the copy is verified, fsynced and installed like a received
    /// replica, so a corrupt source fails the copy instead of spreading. The caller holds both
    /// chunks' mutation locks.
    pub fn copy_local(
        &self,
        src: ChunkId,
        src_version: ChunkVersion,
        dst: ChunkId,
        dst_version: ChunkVersion,
        lease: LeaseSerial,
    ) -> Result<ChunkInfo> {
        if src == dst {
            return Err(StoreError::InvalidId(dst));
        }
        let st = self.state(src)?;
        if st.quarantined {
            return Err(StoreError::Quarantined(src));
        }
        if st.version != src_version {
            return Err(StoreError::WrongVersion {
                chunk: src,
                held: st.version,
                wanted: src_version,
            });
        }
        if let Ok(held) = self.state(dst) {
            // Never over a copy that may already have been written to.
            if !held.quarantined && held.version >= dst_version {
                return Err(StoreError::VersionRegression {
                    chunk: dst,
                    stored: held.version,
                    requested: dst_version,
                });
            }
        }
        let mut inst = self.begin_install(dst)?;
        let mut pos = 0u64;
        while pos < st.len {
            let n = (st.len - pos).min(COPY_PIECE_BYTES);
            let bytes = self.read(src, pos, n)?;
            if bytes.len() as u64 != n {
                return Err(StoreError::ShortReplica {
                    chunk: src,
                    got: pos + bytes.len() as u64,
                    expected: st.len,
                });
            }
            inst.append(&bytes)?;
            pos += n;
        }
        let info = self.finish_install(inst, dst_version, st.len)?;
        self.set_version(dst, dst_version, lease)?;
        tracing::info!(src = %src, dst = %dst, len = st.len, version = %dst_version, "chunk copied locally (copy-on-write)");
        Ok(info)
    }

    /// Checks `offset + len` against the chunk size; returns the end offset.
    fn check_range(&self, id: ChunkId, offset: u64, len: u64) -> Result<u64> {
        let limit = self.max_chunk_bytes();
        match offset.checked_add(len) {
            Some(end) if end <= limit => Ok(end),
            _ => Err(StoreError::OutOfRange {
                chunk: id,
                offset,
                len,
                limit,
            }),
        }
    }

    /// Leaves the replica consistent after a failed write: an append is rolled back to the
    /// old length; a failed overwrite (or a bad old block) may have left bytes on disk that
    /// no CRC describes, so the replica is quarantined.
    fn fail_write(
        &self,
        file: &File,
        r: &mut Replica,
        span: &Span,
        saved_crcs: Vec<u32>,
        err: &StoreError,
    ) {
        self.note_io_error(err);
        let is_append = span.offset >= span.old_len;
        let checksum = matches!(err, StoreError::ChecksumMismatch { .. });
        if is_append && !checksum && file.set_len(span.old_len).is_ok() {
            r.meta.crcs = saved_crcs;
            return;
        }
        r.meta.crcs = saved_crcs;
        r.quarantined = true;
        tracing::warn!(chunk_id = %r.meta.chunk_id, error = %err, "replica quarantined after a failed write");
    }
}

/// A replica opened for reading by [`ChunkStore::open_reader`]. Keeping the file open across
/// the packets of one request keeps the kernel's read-ahead state, which a fresh open per
/// packet would restart from its smallest window.
pub struct ReplicaReader {
    id: ChunkId,
    path: std::path::PathBuf,
    replica: Arc<Mutex<Replica>>,
    /// `Replica::file_generation` when `file` was opened.
    generation: u64,
    file: File,
}

/// Reads the whole 64 KiB blocks covering `[offset, offset + len)` (clipped to the replica's
/// length) into `buf` and verifies each against its CRC; a mismatch quarantines the replica.
/// Returns the range of `buf` holding the requested bytes (empty past the end).
fn read_verified(
    id: ChunkId,
    file: &File,
    path: &Path,
    r: &mut Replica,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> Result<std::ops::Range<usize>> {
    let held = r.meta.len;
    let end = offset.saturating_add(len).min(held);
    if offset >= end {
        return Ok(0..0);
    }
    let span_start = block_of(offset) * BLOCK_SIZE;
    let span_end = ((block_of(end - 1) + 1) * BLOCK_SIZE).min(held);
    let span_len = (span_end - span_start) as usize;
    // Overwritten below by the read (zero-filled past EOF), so old contents may stay.
    if buf.len() >= span_len {
        buf.truncate(span_len);
    } else {
        buf.resize(span_len, 0);
    }
    read_at_zero_fill(file, buf, span_start).map_err(|e| StoreError::io(id, "read", path, e))?;
    for (i, block) in buf.chunks(BLOCK_SIZE as usize).enumerate() {
        let index = block_of(span_start) + i as u64;
        if crc32fast::hash(block) != r.meta.crcs[index as usize] {
            r.quarantined = true;
            tracing::warn!(chunk_id = %id, block = index, "checksum mismatch on read");
            return Err(StoreError::ChecksumMismatch {
                chunk: id,
                block: index,
            });
        }
    }
    let from = (offset - span_start) as usize;
    Ok(from..(end - span_start) as usize)
}

/// Tells the kernel the range will be read soon (starts read-ahead); advice only, so a
/// failure changes nothing but speed.
fn advise_willneed(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is valid for the life of `file`; fadvise reads no memory.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), off, n, libc::POSIX_FADV_WILLNEED) };
    if rc != 0 {
        tracing::debug!(rc, "posix_fadvise(WILLNEED) failed");
    }
}

/// One write request's byte range, as seen by each block it touches.
#[derive(Clone, Copy)]
struct Span<'a> {
    offset: u64,
    data: &'a [u8],
    old_len: u64,
    new_len: u64,
}

/// Writes the part of `data` (at `offset`) that falls into `block`, plus zero gap fill,
/// rewriting the whole block so its CRC covers exactly what is on disk.
fn write_block(file: &File, path: &Path, r: &mut Replica, block: u64, span: &Span) -> Result<()> {
    let id = r.meta.chunk_id;
    let Span {
        offset,
        data,
        old_len,
        new_len,
    } = *span;
    let block_start = block * BLOCK_SIZE;
    let block_new_len = (new_len - block_start).min(BLOCK_SIZE);
    let block_old_len = old_len.saturating_sub(block_start).min(BLOCK_SIZE);
    let end = offset + data.len() as u64;
    let w_start = offset.max(block_start);
    let w_end = end.min(block_start + BLOCK_SIZE);
    let covers_old = w_start <= block_start && w_end >= block_start + block_old_len;
    let mut buf = vec![0u8; block_new_len as usize];
    if block_old_len > 0 && !covers_old {
        let old = &mut buf[..block_old_len as usize];
        read_at_zero_fill(file, old, block_start)
            .map_err(|e| StoreError::io(id, "read", path, e))?;
        if crc32fast::hash(old) != r.meta.crcs[block as usize] {
            tracing::warn!(chunk_id = %id, block, "checksum mismatch before partial overwrite");
            return Err(StoreError::ChecksumMismatch { chunk: id, block });
        }
    }
    if w_start < w_end {
        let dst = &mut buf[(w_start - block_start) as usize..(w_end - block_start) as usize];
        dst.copy_from_slice(&data[(w_start - offset) as usize..(w_end - offset) as usize]);
    }
    file.write_all_at(&buf, block_start)
        .map_err(|e| StoreError::io(id, "write", path, e))?;
    r.meta.crcs[block as usize] = crc32fast::hash(&buf);
    Ok(())
}

/// Re-reads a file and compares every block with `crcs`. `Err(Ok(_))` is a mismatch.
fn verify_file(
    file: &File,
    id: ChunkId,
    len: u64,
    crcs: &[u32],
) -> std::result::Result<(), std::result::Result<StoreError, std::io::Error>> {
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    for (block, crc) in crcs.iter().enumerate() {
        let start = block as u64 * BLOCK_SIZE;
        let n = (len - start).min(BLOCK_SIZE) as usize;
        file.read_exact_at(&mut buf[..n], start).map_err(Err)?;
        if crc32fast::hash(&buf[..n]) != *crc {
            return Err(Ok(StoreError::ChecksumMismatch {
                chunk: id,
                block: block as u64,
            }));
        }
    }
    Ok(())
}

/// A replica being received; see [`ChunkStore::begin_install`].
pub struct Installer {
    chunk: ChunkId,
    paths: ChunkPaths,
    file: File,
    len: u64,
    crcs: Vec<u32>,
    /// CRC of the block being filled, and how many bytes it has.
    block: crc32fast::Hasher,
    block_fill: u64,
}

impl Drop for Installer {
    /// An unfinished copy is never needed again (after a successful install the temp
    /// name no longer exists and this is a no-op).
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.paths.data_tmp);
    }
}

impl Installer {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends received bytes, computing block CRCs as they come.
    pub fn append(&mut self, mut bytes: &[u8]) -> Result<()> {
        let id = self.chunk;
        self.file
            .write_all(bytes)
            .map_err(|e| StoreError::io(id, "write", &self.paths.data_tmp, e))?;
        self.len += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = ((BLOCK_SIZE - self.block_fill) as usize).min(bytes.len());
            self.block.update(&bytes[..take]);
            self.block_fill += take as u64;
            bytes = &bytes[take..];
            if self.block_fill == BLOCK_SIZE {
                let full = std::mem::replace(&mut self.block, crc32fast::Hasher::new());
                self.crcs.push(full.finalize());
                self.block_fill = 0;
            }
        }
        Ok(())
    }

    fn seal(&mut self) {
        if self.block_fill > 0 {
            let last = std::mem::replace(&mut self.block, crc32fast::Hasher::new());
            self.crcs.push(last.finalize());
            self.block_fill = 0;
        }
    }
}
