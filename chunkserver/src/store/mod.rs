//! The chunk store: one `.data` file (the bytes, growing with them) and one `.meta` file
//! (version, length, one CRC32 per 64 KiB block) per replica, under
//! `<data>/chunks/<id % 256 as 2 hex digits>/<id:016x>.{data,meta}`.
//!
//! Invariants:
//! - Paths are built only from a numeric, non-zero [`ChunkId`]; nothing from a request
//!   ever becomes a path component.
//! - Every block a read touches is verified against its CRC; a mismatch quarantines the
//!   replica (never served again until replaced) and is returned as `ChecksumMismatch`.
//! - A write that keeps part of an existing block verifies that block's old CRC first.
//! - `.meta` is replaced atomically (temp file + rename); with `sync` the data, the meta
//!   and the directory are fsynced before the caller acknowledges.
//! - At open, each replica is cut back to its last CRC-valid block (a torn tail after a
//!   crash); a meta that fails its own checks is reported bad, never served.
//!
//! The store is synchronous: the data plane calls it from `spawn_blocking`. Per-replica
//! state sits behind its own mutex, held for the duration of that replica's file I/O.

mod error;
mod meta;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rdfs_proto::dataplane::ChunkInfo;
use rdfs_proto::ids::{ChunkId, ChunkVersion, LeaseSerial};
use rdfs_proto::limits::{BLOCK_SIZE, DEFAULT_CHUNK_SIZE};

pub use error::StoreError;
pub use io::ReplicaReader;
pub use meta::{blocks_for, ChunkMeta, META_FORMAT_VERSION, META_MAGIC};

/// Sub-directory of the data directory holding the chunk fan-out.
pub const CHUNKS_DIR: &str = "chunks";
/// Suffix of in-progress files (replication copies, meta rewrites); removed at open.
const TMP_SUFFIX: &str = ".tmp";

type Result<T> = std::result::Result<T, StoreError>;

/// A snapshot of one replica's fencing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    pub chunk_id: ChunkId,
    pub version: ChunkVersion,
    pub len: u64,
    pub lease_serial: LeaseSerial,
    pub last_serial: u64,
    pub quarantined: bool,
}

impl ReplicaState {
    pub fn info(&self) -> ChunkInfo {
        ChunkInfo {
            chunk_id: self.chunk_id,
            version: self.version,
            len: self.len,
        }
    }
}

struct Replica {
    meta: ChunkMeta,
    /// Failed a CRC check (or its meta is unreadable): never served again.
    quarantined: bool,
    /// Deleted while someone still held this handle: every operation fails.
    deleted: bool,
    /// Bumped when an installed copy replaces the data file, so a [`ReplicaReader`] that
    /// opened the old file knows to reopen instead of checking new CRCs against old bytes.
    file_generation: u64,
}

impl Replica {
    fn usable(&self, id: ChunkId) -> Result<()> {
        if self.deleted {
            return Err(StoreError::NoSuchChunk(id));
        }
        if self.quarantined {
            return Err(StoreError::Quarantined(id));
        }
        Ok(())
    }

    fn state(&self) -> ReplicaState {
        ReplicaState {
            chunk_id: self.meta.chunk_id,
            version: self.meta.version,
            len: self.meta.len,
            lease_serial: self.meta.lease_serial,
            last_serial: self.meta.last_serial,
            quarantined: self.quarantined,
        }
    }
}

/// The file paths of one replica, all derived from its numeric id.
struct ChunkPaths {
    dir: PathBuf,
    data: PathBuf,
    meta: PathBuf,
    data_tmp: PathBuf,
    meta_tmp: PathBuf,
}

/// What opening the store found.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Replicas whose meta could not be trusted: report them bad to the master.
    pub bad: Vec<ChunkInfo>,
    /// Replicas cut back to their last CRC-valid block.
    pub trimmed: Vec<ChunkId>,
}

pub struct ChunkStore {
    chunks_dir: PathBuf,
    replicas: Mutex<HashMap<ChunkId, Arc<Mutex<Replica>>>>,
    /// Serialises creation and installation so two never race on one id's files.
    create_lock: Mutex<()>,
    capacity_limit: Option<u64>,
    /// Largest offset + length a write may reach (the cluster's chunk size).
    max_chunk_bytes: AtomicU64,
    /// Sum of the data lengths of every replica we hold.
    used: AtomicU64,
    /// Set on ENOSPC (or the capacity cap); cleared when space is freed.
    no_space: AtomicBool,
    /// Record ids of recently appended-to chunks (see `records`). Lock order: a replica's
    /// lock, then this one.
    records: Mutex<records::RecordIndexes>,
}

mod io;
mod open;
mod records;

pub use records::Placement;

impl ChunkStore {
    /// Opens (creating if needed) the store under `data_dir`, recovering every replica.
    pub fn open(data_dir: &Path, capacity_limit: Option<u64>) -> Result<(ChunkStore, OpenReport)> {
        let store = ChunkStore {
            chunks_dir: data_dir.join(CHUNKS_DIR),
            replicas: Mutex::new(HashMap::new()),
            create_lock: Mutex::new(()),
            capacity_limit,
            max_chunk_bytes: AtomicU64::new(DEFAULT_CHUNK_SIZE),
            used: AtomicU64::new(0),
            no_space: AtomicBool::new(false),
            records: Mutex::new(records::RecordIndexes::default()),
        };
        let report = store.scan()?;
        Ok((store, report))
    }

    pub fn set_max_chunk_bytes(&self, bytes: u64) {
        self.max_chunk_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn max_chunk_bytes(&self) -> u64 {
        self.max_chunk_bytes.load(Ordering::Relaxed)
    }

    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn no_space(&self) -> bool {
        self.no_space.load(Ordering::Relaxed)
    }

    /// Bytes we offer: the configured cap, else free space on the file system plus our use.
    pub fn capacity_bytes(&self) -> u64 {
        match self.capacity_limit {
            Some(cap) => cap,
            None => free_bytes(&self.chunks_dir).saturating_add(self.used_bytes()),
        }
    }

    pub fn chunk_count(&self) -> u64 {
        self.replicas.lock().len() as u64
    }

    /// The replica's state, quarantined ones included.
    pub fn state(&self, id: ChunkId) -> Result<ReplicaState> {
        let replica = self.get(id)?;
        let r = replica.lock();
        if r.deleted {
            return Err(StoreError::NoSuchChunk(id));
        }
        Ok(r.state())
    }

    /// Every servable replica (quarantined ones are reported separately, as bad).
    pub fn list(&self) -> Vec<ChunkInfo> {
        let handles: Vec<_> = self.replicas.lock().values().cloned().collect();
        let mut out: Vec<ChunkInfo> = handles
            .iter()
            .filter_map(|h| {
                let r = h.lock();
                (!r.quarantined && !r.deleted).then(|| r.state().info())
            })
            .collect();
        out.sort_by_key(|c| c.chunk_id);
        out
    }

    /// Marks a replica bad; returns its state the first time (for the report).
    pub fn quarantine(&self, id: ChunkId) -> Option<ChunkInfo> {
        let replica = self.get(id).ok()?;
        let mut r = replica.lock();
        if r.quarantined || r.deleted {
            return None;
        }
        r.quarantined = true;
        tracing::warn!(chunk_id = %id, "replica quarantined");
        Some(r.state().info())
    }

    /// Creates an empty replica at `version`; an existing one just takes the new version.
    pub fn create(&self, id: ChunkId, version: ChunkVersion, lease: LeaseSerial) -> Result<()> {
        let paths = self.paths(id)?;
        let guard = self.create_lock.lock();
        if self.replicas.lock().contains_key(&id) {
            drop(guard);
            return self.set_version(id, version, lease);
        }
        fs::create_dir_all(&paths.dir).map_err(|e| StoreError::io(id, "create", &paths.dir, e))?;
        // A data file without a meta is a leftover of an interrupted create: start empty.
        File::create(&paths.data)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::io(id, "create", &paths.data, e))?;
        let meta = ChunkMeta::new(id, version, lease);
        write_meta(&paths, &meta, true)?;
        let replica = Replica {
            meta,
            quarantined: false,
            deleted: false,
            file_generation: 0,
        };
        self.replicas
            .lock()
            .insert(id, Arc::new(Mutex::new(replica)));
        tracing::debug!(chunk_id = %id, version = %version, "replica created");
        Ok(())
    }

    /// Persists a new version and lease serial (fsynced before returning).
    pub fn set_version(
        &self,
        id: ChunkId,
        version: ChunkVersion,
        lease: LeaseSerial,
    ) -> Result<()> {
        let paths = self.paths(id)?;
        let replica = self.get(id)?;
        let mut r = replica.lock();
        r.usable(id)?;
        if version < r.meta.version {
            return Err(StoreError::VersionRegression {
                chunk: id,
                stored: r.meta.version,
                requested: version,
            });
        }
        let mut meta = r.meta.clone();
        if version != meta.version {
            // Mutation serials are scoped to a version: a new lease starts over.
            meta.last_serial = 0;
        }
        meta.version = version;
        meta.lease_serial = lease;
        write_meta(&paths, &meta, true)?;
        r.meta = meta;
        Ok(())
    }

    /// Orders a mutation: `None` (we are the primary) assigns the next serial; `Some`
    /// (a replica) accepts only a serial after the last applied one.
    pub fn begin_mutation(&self, id: ChunkId, serial: Option<u64>) -> Result<u64> {
        let replica = self.get(id)?;
        let mut r = replica.lock();
        r.usable(id)?;
        let last = r.meta.last_serial;
        let next = match serial {
            None => last + 1,
            Some(s) if s > last => s,
            Some(s) => {
                return Err(StoreError::SerialOutOfOrder {
                    chunk: id,
                    serial: s,
                    last,
                })
            }
        };
        // Taken at once, so a retry after a failure gets a fresh serial.
        r.meta.last_serial = next;
        Ok(next)
    }

    /// Deletes a replica's files. Returns what was deleted, `None` if we had nothing.
    pub fn delete(&self, id: ChunkId) -> Result<Option<ChunkInfo>> {
        let paths = self.paths(id)?;
        let Ok(replica) = self.get(id) else {
            return Ok(None);
        };
        let mut r = replica.lock();
        if r.deleted {
            return Ok(None);
        }
        for path in [&paths.meta, &paths.data] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(id, "remove", path, e)),
            }
        }
        r.deleted = true;
        let info = r.state().info();
        self.used.fetch_sub(info.len, Ordering::Relaxed);
        self.no_space.store(false, Ordering::Relaxed);
        drop(r);
        self.replicas.lock().remove(&id);
        self.forget_records(id);
        tracing::info!(chunk_id = %id, version = %info.version, "replica deleted");
        Ok(Some(info))
    }

    fn get(&self, id: ChunkId) -> Result<Arc<Mutex<Replica>>> {
        self.replicas
            .lock()
            .get(&id)
            .cloned()
            .ok_or(StoreError::NoSuchChunk(id))
    }

    fn paths(&self, id: ChunkId) -> Result<ChunkPaths> {
        chunk_paths(&self.chunks_dir, id)
    }

    /// Refuses growth past the configured capacity.
    fn reserve(&self, id: ChunkId, growth: u64) -> Result<()> {
        if let Some(cap) = self.capacity_limit {
            if self.used_bytes().saturating_add(growth) > cap {
                self.no_space.store(true, Ordering::Relaxed);
                return Err(StoreError::NoSpace(id));
            }
        }
        Ok(())
    }

    fn note_io_error(&self, err: &StoreError) {
        if matches!(err, StoreError::NoSpace(_)) {
            self.no_space.store(true, Ordering::Relaxed);
        }
    }
}

/// Where a replica's bytes live under a chunkserver data directory (`None` for id 0).
/// For tests and tools that damage or inspect replicas on purpose.
pub fn data_file_path(data_dir: &Path, id: ChunkId) -> Option<PathBuf> {
    chunk_paths(&data_dir.join(CHUNKS_DIR), id)
        .ok()
        .map(|p| p.data)
}

/// The only place a chunk path is built: from the numeric id alone.
fn chunk_paths(chunks_dir: &Path, id: ChunkId) -> Result<ChunkPaths> {
    if id.0 == 0 {
        return Err(StoreError::InvalidId(id));
    }
    let dir = chunks_dir.join(format!("{:02x}", id.0 % 256));
    let stem = id.file_stem();
    debug_assert!(stem.len() == 16 && stem.bytes().all(|b| b.is_ascii_hexdigit()));
    Ok(ChunkPaths {
        data: dir.join(format!("{stem}.data")),
        meta: dir.join(format!("{stem}.meta")),
        data_tmp: dir.join(format!("{stem}.data{TMP_SUFFIX}")),
        meta_tmp: dir.join(format!("{stem}.meta{TMP_SUFFIX}")),
        dir,
    })
}

/// Replaces the meta file atomically; with `sync`, durably (file and directory fsynced).
fn write_meta(paths: &ChunkPaths, meta: &ChunkMeta, sync: bool) -> Result<()> {
    let id = meta.chunk_id;
    let tmp = &paths.meta_tmp;
    let mut f = File::create(tmp).map_err(|e| StoreError::io(id, "create", tmp, e))?;
    f.write_all(&meta.encode())
        .map_err(|e| StoreError::io(id, "write", tmp, e))?;
    if sync {
        f.sync_all()
            .map_err(|e| StoreError::io(id, "fsync", tmp, e))?;
    }
    fs::rename(tmp, &paths.meta).map_err(|e| StoreError::io(id, "rename", tmp, e))?;
    if sync {
        sync_dir(id, &paths.dir)?;
    }
    Ok(())
}

fn sync_dir(id: ChunkId, dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(id, "fsync dir", dir, e))
}

/// Reads `[offset, offset + buf.len())`, leaving zeros where the file is shorter
/// (a short file then fails its CRC check instead of an opaque EOF error).
fn read_at_zero_fill(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn open_rw(id: ChunkId, path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io(id, "open", path, e))
}

/// Free bytes available to us on the file system holding `path` (0 if unknown).
fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return 0;
    }
    (st.f_bavail as u64).saturating_mul(st.f_frsize as u64)
}

/// Block index and block start of a byte offset.
fn block_of(offset: u64) -> u64 {
    offset / BLOCK_SIZE
}

#[cfg(test)]
mod tests;
