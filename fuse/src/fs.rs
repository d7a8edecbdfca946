//! The `fuser::Filesystem` implementation.
//!
//! fuser's session loop reads one kernel request at a time; every request that needs the
//! cluster is handed to a tokio task (which calls the client, then replies), so a slow read
//! never holds up a `stat`. State shared between tasks lives in [`Shared`].
//!
//! Data path:
//! - Writes are gathered per inode in a [`WriteBuffer`] (all handles of an inode share it,
//!   so two descriptors of one file stay in write order). A full buffer is written out in
//!   the background while the next one fills; at most one such flush is in flight per inode,
//!   so flushes land in order. Its error is reported by the next write, `flush` or `fsync`.
//!   `flush` (close) publishes everything; `fsync` writes with `sync` and re-syncs the chunks
//!   earlier flushes touched without it.
//! - The kernel serialises `write(2)` on one inode, so buffered writes arrive in order; only
//!   page-cache writeback (mmap) sends concurrent writes, and those never overlap.
//! - Reads see the inode's buffered writes by flushing them first. Sequential reads on a
//!   handle are served from a read-ahead window, and the next window is prefetched.
//! - Data I/O on an open handle runs as the mount's own identity: the kernel checked the
//!   caller's permission at open, and POSIX lets an open descriptor keep writing after a chmod.
//!   Metadata calls run as the requesting uid/gid/groups.
//!
//! Consistency: attributes and entries are cached by the kernel for `attr_ttl`. Close-to-open
//! between mounts: `open` re-reads the attributes from the master, drops the client's cached
//! chunk locations, and unless size and mtime are what the kernel already has, makes the
//! kernel drop its cached attributes and pages for the file.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fuser::{
    AccessFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, Notifier, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use rdfs_client::{Caller, Client, ClientError, NewNode, SetAttr};
use rdfs_proto::limits::MAX_NAME_LEN;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::attr::{kind_of, ns_of, to_fuse};
use crate::caller::GroupCache;
use crate::errno::{errno_of, fuse_errno};
use crate::readahead::ReadAhead;
use crate::wbuf::WriteBuffer;

/// Largest write the kernel is asked to send in one request.
pub const MAX_WRITE_BYTES: u32 = 1 << 20;
/// Kernel read-ahead asked for (the kernel may grant less).
pub const MAX_READAHEAD_BYTES: u32 = 1 << 20;
/// Requests the kernel may have outstanding in the background (read-ahead, writeback).
const MAX_BACKGROUND: u16 = 64;
/// Directory entries fetched from the master per page.
const DIR_PAGE_ENTRIES: u32 = 1024;
/// Block size reported by statfs.
const STATFS_BLOCK_SIZE: u32 = 4096;
/// Free inodes reported by statfs: the namespace has no fixed inode table.
const STATFS_FREE_INODES: u64 = 1 << 32;
/// Attributes remembered per inode to decide whether an open may keep the page cache.
const KNOWN_ATTR_ENTRIES: usize = 100_000;
/// The xattr the kernel looks up before every write (to clear file capabilities).
const CAPABILITY_XATTR: &str = "security.capability";
/// Inodes remembered as having no `security.capability`.
const NO_CAPS_ENTRIES: usize = 100_000;
/// XATTR_CREATE / XATTR_REPLACE from `<sys/xattr.h>`.
const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;

/// Tunables of a mount.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// How long the kernel may cache attributes and directory entries.
    pub attr_ttl: Duration,
    /// Most bytes gathered per inode before they are written out.
    pub write_buffer_bytes: usize,
    /// Most bytes buffered across all inodes; past it writes go straight through.
    pub max_buffered_bytes: u64,
    /// Size of one read-ahead window for sequential reads.
    pub readahead_bytes: u64,
    /// Windows fetched ahead of the reader (each one chunk read in flight).
    pub readahead_depth: usize,
}

impl Default for FsConfig {
    fn default() -> FsConfig {
        FsConfig {
            attr_ttl: Duration::from_secs(1),
            write_buffer_bytes: 8 << 20,
            max_buffered_bytes: 256 << 20,
            readahead_bytes: 4 << 20,
            readahead_depth: 4,
        }
    }
}

/// The file system handed to fuser.
pub struct RdfsFs {
    sh: Arc<Shared>,
}

/// State shared by every request task.
struct Shared {
    /// The mount's own client (root); metadata calls use `as_caller` clones of it.
    client: Client,
    rt: Handle,
    cfg: FsConfig,
    groups: GroupCache,
    next_fh: AtomicU64,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<DirStream>>>>,
    /// Inodes with open handles: their I/O state and how many handles share it.
    inodes: Mutex<HashMap<u64, (Arc<InodeIo>, usize)>>,
    /// (size, mtime) last reported to the kernel per inode.
    known: Mutex<HashMap<u64, (u64, i64)>>,
    /// Bytes sitting in write buffers, all inodes together.
    buffered: AtomicU64,
    /// Inodes known (since the instant) to have no `security.capability`: the kernel asks
    /// before every `write(2)`, and a master round trip per write would halve small-write
    /// throughput. Trusted for `attr_ttl`, like attributes; dropped on set/remove here.
    no_caps: Mutex<HashMap<u64, std::time::Instant>>,
    notifier: Arc<OnceLock<Notifier>>,
    /// Largest write and read requests the kernel sent: the unmount log line shows whether
    /// the large requests asked for at init (`max_write`, read-ahead) were granted.
    largest_write_bytes: AtomicU64,
    largest_read_bytes: AtomicU64,
}

/// One open file handle.
struct OpenFile {
    ino: u64,
    /// The master's open handle (keeps an unlinked inode alive until released).
    server_handle: u64,
    writable: bool,
    io: Arc<InodeIo>,
    ra: tokio::sync::Mutex<ReadAhead>,
}

/// Write state of one inode, shared by its handles.
struct InodeIo {
    ino: u64,
    /// End of the buffered or in-flight bytes (0 when none): getattr reports at least this.
    dirty_end: AtomicU64,
    /// Time of the latest `write(2)` not yet published (0 when none): getattr reports it as
    /// mtime/ctime (POSIX: a write marks them for update), and the flush publishes it.
    dirty_mtime_ns: AtomicI64,
    /// Bumped by every write and truncate; read-ahead windows of an older value are stale.
    generation: AtomicU64,
    state: tokio::sync::Mutex<IoState>,
}

#[derive(Default)]
struct IoState {
    buf: WriteBuffer,
    inflight: Option<JoinHandle<Result<(), ClientError>>>,
    /// Errno of a background flush that failed, reported by the next write/flush/fsync.
    error: Option<i32>,
    /// Indexes of chunks written without `sync` since the last fsync.
    unsynced: BTreeSet<u64>,
}

/// What an inode has buffered or in flight, for the attributes the kernel sees.
#[derive(Debug, Clone, Copy, Default)]
struct Dirty {
    end: u64,
    mtime_ns: i64,
}

impl InodeIo {
    fn dirty(&self) -> Dirty {
        Dirty {
            end: self.dirty_end.load(Ordering::Acquire),
            mtime_ns: self.dirty_mtime_ns.load(Ordering::Acquire),
        }
    }

    /// A `write(2)` ending at `end` was buffered now.
    fn note_write(&self, end: u64) {
        self.dirty_end.fetch_max(end, Ordering::AcqRel);
        self.dirty_mtime_ns
            .fetch_max(ns_of(SystemTime::now()), Ordering::AcqRel);
    }

    /// The mtime a flush publishes: that of the latest buffered write.
    fn publish_mtime(&self) -> i64 {
        match self.dirty_mtime_ns.load(Ordering::Acquire) {
            0 => ns_of(SystemTime::now()),
            t => t,
        }
    }

    /// Everything buffered was published (or dropped after an error).
    fn clear_dirty(&self) {
        self.dirty_end.store(0, Ordering::Release);
        self.dirty_mtime_ns.store(0, Ordering::Release);
    }
}

/// An open directory: entries fetched so far; the kernel's offset is an index into them.
struct DirStream {
    ino: u64,
    /// Name, inode, type and (except for `.` and `..`) the attributes the page carried.
    entries: Vec<DirItem>,
    done: bool,
    /// Whether any page was fetched (offset 0 after that is a rewinddir).
    fetched: bool,
    /// Name of the last entry fetched from the master (the next page starts after it).
    cursor: String,
}

struct DirItem {
    name: String,
    ino: u64,
    kind: FileType,
    attr: Option<rdfs_client::FileAttr>,
}

impl DirStream {
    fn new(ino: u64) -> DirStream {
        let dot = |name: &str| DirItem {
            name: name.to_string(),
            ino,
            kind: FileType::Directory,
            attr: None,
        };
        DirStream {
            ino,
            entries: vec![dot("."), dot("..")],
            done: false,
            fetched: false,
            cursor: String::new(),
        }
    }

    /// Prepares for a read at `offset`: a read from 0 after pages were fetched starts over
    /// (rewinddir shows the directory as it is now).
    fn rewind_if_needed(&mut self, offset: u64) {
        if offset == 0 && self.fetched {
            *self = DirStream::new(self.ino);
        }
    }

    /// Fetches pages until entry `index` exists or the directory ends.
    async fn fill_to(&mut self, client: &Client, index: usize) -> Result<(), ClientError> {
        while index >= self.entries.len() && !self.done {
            let (page, more) = client
                .readdir(self.ino, &self.cursor, DIR_PAGE_ENTRIES)
                .await?;
            self.fetched = true;
            // An empty page that claims more would loop forever: stop instead.
            self.done = !more || page.is_empty();
            if let Some(last) = page.last() {
                self.cursor = last.name.clone();
            }
            for e in page {
                let Some(a) = e.attr else { continue };
                self.entries.push(DirItem {
                    name: e.name,
                    ino: a.inode,
                    kind: kind_of(a.file_type),
                    attr: Some(a),
                });
            }
        }
        Ok(())
    }
}

type Res<T> = Result<T, i32>;

fn errno(code: i32) -> Errno {
    Errno::from_i32(code)
}

/// The errno for a failed call on an inode the kernel named: ESTALE when the inode is gone
/// (deleted through another mount while this kernel still had its name cached), so the
/// kernel looks the path up again instead of failing with ENOENT on a name that now names
/// another file.
fn stale_if_gone(e: &ClientError) -> i32 {
    match errno_of(e) {
        libc::ENOENT => libc::ESTALE,
        other => other,
    }
}

/// A request's name as UTF-8 of at most NAME_MAX bytes.
fn checked_name(name: &OsStr) -> Res<String> {
    let Some(s) = name.to_str() else {
        // The wire carries names as UTF-8 strings.
        return Err(libc::EINVAL);
    };
    if s.len() > MAX_NAME_LEN {
        return Err(libc::ENAMETOOLONG);
    }
    Ok(s.to_string())
}

fn time_ns(t: TimeOrNow) -> i64 {
    match t {
        TimeOrNow::Now => rdfs_client::SET_TIME_NOW,
        TimeOrNow::SpecificTime(t) => ns_of(t),
    }
}

impl RdfsFs {
    /// A file system over `client`, running its request tasks on `rt`. `notifier` is filled
    /// in once the session exists (invalidations are skipped until then).
    pub fn new(
        client: Client,
        rt: Handle,
        cfg: FsConfig,
        notifier: Arc<OnceLock<Notifier>>,
    ) -> RdfsFs {
        RdfsFs {
            sh: Arc::new(Shared {
                client,
                rt,
                cfg,
                groups: GroupCache::default(),
                next_fh: AtomicU64::new(1),
                files: Mutex::new(HashMap::new()),
                dirs: Mutex::new(HashMap::new()),
                inodes: Mutex::new(HashMap::new()),
                known: Mutex::new(HashMap::new()),
                buffered: AtomicU64::new(0),
                no_caps: Mutex::new(HashMap::new()),
                notifier,
                largest_write_bytes: AtomicU64::new(0),
                largest_read_bytes: AtomicU64::new(0),
            }),
        }
    }

    /// The client acting as the request's caller.
    fn as_caller(&self, req: &Request) -> Client {
        let caller: Caller = self.sh.groups.caller(req.pid(), req.uid(), req.gid());
        self.sh.client.with_caller(caller)
    }

    /// Runs `f` on the runtime.
    fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.sh.rt.spawn(f);
    }

    fn file(&self, fh: FileHandle) -> Option<Arc<OpenFile>> {
        self.sh.files.lock().get(&fh.0).cloned()
    }
}

impl Shared {
    /// Kernel attributes for `a`, with what is buffered, remembered for open.
    fn attr(&self, a: &rdfs_client::FileAttr) -> fuser::FileAttr {
        let dirty = self.dirty(a.inode);
        self.attr_with_dirty(a, dirty)
    }

    /// Kernel attributes for `a`: the size raised to the buffered end, mtime/ctime moved to
    /// the latest buffered write; remembered so `open` can tell whether the file changed.
    fn attr_with_dirty(&self, a: &rdfs_client::FileAttr, dirty: Dirty) -> fuser::FileAttr {
        let mut a = a.clone();
        a.size = a.size.max(dirty.end);
        if dirty.mtime_ns > a.mtime_ns {
            a.mtime_ns = dirty.mtime_ns;
            a.ctime_ns = a.ctime_ns.max(dirty.mtime_ns);
        }
        let mut known = self.known.lock();
        if known.len() >= KNOWN_ATTR_ENTRIES {
            known.clear();
        }
        known.insert(a.inode, (a.size, a.mtime_ns));
        to_fuse(&a, a.size)
    }

    /// What `ino` has buffered or in flight (zeros when nothing).
    fn dirty(&self, ino: u64) -> Dirty {
        self.inodes
            .lock()
            .get(&ino)
            .map(|(io, _)| io.dirty())
            .unwrap_or_default()
    }

    fn inode_io(&self, ino: u64) -> Option<Arc<InodeIo>> {
        self.inodes.lock().get(&ino).map(|(io, _)| io.clone())
    }

    /// The I/O state of `ino`, created for its first handle.
    fn acquire_io(&self, ino: u64) -> Arc<InodeIo> {
        let mut inodes = self.inodes.lock();
        let entry = inodes.entry(ino).or_insert_with(|| {
            (
                Arc::new(InodeIo {
                    ino,
                    dirty_end: AtomicU64::new(0),
                    dirty_mtime_ns: AtomicI64::new(0),
                    generation: AtomicU64::new(0),
                    state: tokio::sync::Mutex::new(IoState::default()),
                }),
                0,
            )
        });
        entry.1 += 1;
        entry.0.clone()
    }

    fn release_io(&self, ino: u64) {
        let mut inodes = self.inodes.lock();
        if let Some(entry) = inodes.get_mut(&ino) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                inodes.remove(&ino);
            }
        }
    }

    fn note_unsynced(&self, st: &mut IoState, start: u64, len: u64) {
        let chunk = self.client.chunk_size().max(1);
        if len == 0 {
            return;
        }
        let end = start + len;
        st.unsynced.extend(start / chunk..=(end - 1) / chunk);
    }

    /// Waits for the in-flight flush of `io` and returns a pending background error.
    async fn settle(&self, st: &mut IoState) -> Res<()> {
        if let Some(handle) = st.inflight.take() {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!("background write failed: {e}");
                    return Err(errno_of(&e));
                }
                Err(e) => {
                    tracing::error!("background write task failed: {e}");
                    return Err(libc::EIO);
                }
            }
        }
        match st.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes out everything buffered for `io` (with `sync`, durably) and waits for it.
    async fn flush_locked(&self, io: &InodeIo, st: &mut IoState, sync: bool) -> Res<()> {
        let settled = self.settle(st).await;
        if let Some((start, data)) = st.buf.take() {
            self.buffered.fetch_sub(data.len() as u64, Ordering::AcqRel);
            if settled.is_ok() {
                let len = data.len() as u64;
                let mtime = io.publish_mtime();
                let res = self
                    .client
                    .write_at_mtime(io.ino, start, &data, sync, mtime)
                    .await;
                if let Err(e) = res {
                    tracing::warn!(
                        inode = io.ino,
                        "write of {len} bytes at {start} failed: {e}"
                    );
                    io.clear_dirty();
                    return Err(errno_of(&e));
                }
                if !sync {
                    self.note_unsynced(st, start, len);
                }
            }
        }
        io.clear_dirty();
        settled
    }

    /// `fsync`: flush with `sync`, then make the chunks earlier flushes wrote without `sync`
    /// durable (an empty synced write per chunk: no bytes rewritten, mtime unchanged).
    async fn fsync_locked(&self, io: &InodeIo, st: &mut IoState) -> Res<()> {
        let chunk = self.client.chunk_size().max(1);
        let covered = st.buf.start() / chunk..=st.buf.end().saturating_sub(1) / chunk;
        let had_buffer = !st.buf.is_empty();
        self.flush_locked(io, st, true).await?;
        let pending = std::mem::take(&mut st.unsynced);
        for index in pending {
            if had_buffer && covered.contains(&index) {
                continue;
            }
            self.client
                .sync_chunk(io.ino, index)
                .await
                .map_err(|e| errno_of(&e))?;
        }
        Ok(())
    }

    /// Buffers a write without waiting when the inode's state is free, nothing failed
    /// earlier and the bytes fit; None means the caller must take the slow path.
    fn try_buffer(&self, file: &OpenFile, offset: u64, data: &[u8]) -> Option<u32> {
        let io = &file.io;
        let written = u32::try_from(data.len()).ok()?;
        let end = offset.checked_add(data.len() as u64)?;
        let mut st = io.state.try_lock().ok()?;
        if st.error.is_some() || st.inflight.as_ref().is_some_and(|h| h.is_finished()) {
            // A finished background flush may carry an error the slow path must report.
            return None;
        }
        if self.buffered.load(Ordering::Acquire) + data.len() as u64 > self.cfg.max_buffered_bytes {
            return None;
        }
        if !st.buf.try_add(offset, data, self.cfg.write_buffer_bytes) {
            return None;
        }
        io.generation.fetch_add(1, Ordering::AcqRel);
        self.buffered.fetch_add(data.len() as u64, Ordering::AcqRel);
        io.note_write(end);
        Some(written)
    }

    async fn write(&self, file: &OpenFile, offset: u64, data: Vec<u8>) -> Res<u32> {
        let io = &file.io;
        let len = data.len();
        let written = u32::try_from(len).map_err(|_| libc::EINVAL)?;
        let end = offset.checked_add(len as u64).ok_or(libc::EFBIG)?;
        let mut st = io.state.lock().await;
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        if st.inflight.as_ref().is_some_and(|h| h.is_finished()) {
            // Collect a finished flush (and its error) so the fast path applies again.
            self.settle(&mut st).await?;
        }
        io.generation.fetch_add(1, Ordering::AcqRel);
        let cap = self.cfg.write_buffer_bytes;
        let over_budget =
            self.buffered.load(Ordering::Acquire) + len as u64 > self.cfg.max_buffered_bytes;
        if over_budget || !st.buf.try_add(offset, &data, cap) {
            // Start writing out what is buffered; waiting for the previous flush first keeps
            // flushes in order and at most one buffer in the air per inode.
            self.settle(&mut st).await?;
            if let Some((start, bytes)) = st.buf.take() {
                self.buffered
                    .fetch_sub(bytes.len() as u64, Ordering::AcqRel);
                self.note_unsynced(&mut st, start, bytes.len() as u64);
                let client = self.client.clone();
                let ino = io.ino;
                let mtime = io.publish_mtime();
                st.inflight = Some(self.rt.spawn(async move {
                    client
                        .write_at_mtime(ino, start, &bytes, false, mtime)
                        .await
                }));
            }
            let still_over =
                self.buffered.load(Ordering::Acquire) + len as u64 > self.cfg.max_buffered_bytes;
            if still_over || !st.buf.try_add(offset, &data, cap) {
                // Cannot buffer it: write through, after the in-flight flush (order).
                self.settle(&mut st).await?;
                self.client
                    .write_at(io.ino, offset, &data, false)
                    .await
                    .map_err(|e| errno_of(&e))?;
                self.note_unsynced(&mut st, offset, len as u64);
                if st.buf.is_empty() {
                    io.clear_dirty();
                }
                return Ok(written);
            }
        }
        self.buffered.fetch_add(len as u64, Ordering::AcqRel);
        io.note_write(end);
        Ok(written)
    }

    async fn read(&self, file: &OpenFile, offset: u64, size: u32) -> Res<Bytes> {
        let io = &file.io;
        if io.dirty_end.load(Ordering::Acquire) != 0 {
            let mut st = io.state.lock().await;
            self.flush_locked(io, &mut st, false).await?;
        }
        let size = u64::from(size);
        let mut ra = file.ra.lock().await;
        ra.sync_generation(io.generation.load(Ordering::Acquire));
        if !ra.is_sequential(offset) || size >= self.cfg.readahead_bytes {
            // Random access (or a read as large as a window): no read-ahead.
            let data = self
                .client
                .read_at(file.ino, offset, size)
                .await
                .map_err(|e| errno_of(&e))?;
            ra.note_direct(offset + data.len() as u64);
            return Ok(data);
        }
        let (client, rt, ino) = (self.client.clone(), self.rt.clone(), file.ino);
        let fetch = move |start: u64, len: u64| {
            let client = client.clone();
            rt.spawn(async move { client.read_at(ino, start, len).await })
        };
        ra.read(offset, size, fetch).await.map_err(|e| errno_of(&e))
    }
}

impl Filesystem for RdfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE_BYTES) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_READAHEAD_BYTES) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4);
        // Lookups and creates in one directory may run at once (the master serialises).
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // Directory listings carry attributes: `ls -l`, `cp -a`, `diff -r` then need no
        // lookup per entry.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        tracing::info!(
            "FUSE session initialised (kernel ABI {:?}, max_write {} bytes)",
            config.kernel_abi(),
            MAX_WRITE_BYTES
        );
        Ok(())
    }

    fn destroy(&mut self) {
        tracing::info!(
            "FUSE session ended; largest write request {} bytes, largest read request {} bytes",
            self.sh.largest_write_bytes.load(Ordering::Relaxed),
            self.sh.largest_read_bytes.load(Ordering::Relaxed)
        );
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match checked_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(errno(e)),
        };
        let client = self.as_caller(req);
        let sh = self.sh.clone();
        self.spawn(async move {
            match client.lookup(parent.0, &name).await {
                Ok(a) => reply.entry(&sh.cfg.attr_ttl, &sh.attr(&a), Generation(0)),
                Err(e) => reply.error(fuse_errno(&e)),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        // As the mount: the kernel asks for attributes it may cache for every user, and
        // stat needs no permission on the file itself.
        let sh = self.sh.clone();
        self.spawn(async move {
            // Read the buffered end first: a flush finishing meanwhile is then in the size.
            let dirty = sh.dirty(ino.0);
            match sh.client.getattr(ino.0).await {
                Ok(a) => reply.attr(&sh.cfg.attr_ttl, &sh.attr_with_dirty(&a, dirty)),
                Err(e) => reply.error(errno(stale_if_gone(&e))),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime_ns: atime.map(time_ns),
            mtime_ns: mtime.map(time_ns),
        };
        // ftruncate on a descriptor opened for writing needs no write permission now.
        let by_handle = fh.and_then(|fh| self.file(fh)).filter(|f| f.writable);
        let client = match (&by_handle, size) {
            (Some(_), Some(_)) if mode.is_none() && uid.is_none() && gid.is_none() => {
                self.sh.client.clone()
            }
            _ => self.as_caller(req),
        };
        let sh = self.sh.clone();
        self.spawn(async move {
            let io = sh.inode_io(ino.0);
            let result = match &io {
                Some(io) => {
                    // Buffered bytes land before any attribute changes: before a size change
                    // (no write may slip in between, so the state is held throughout), and
                    // before explicit times, which a later flush would otherwise overwrite
                    // (`cp -a` sets times on the descriptor before closing it).
                    let mut st = io.state.lock().await;
                    match sh.flush_locked(io, &mut st, false).await {
                        Err(e) => Err(e),
                        Ok(()) => {
                            if let Some(new_size) = size {
                                io.generation.fetch_add(1, Ordering::AcqRel);
                                let chunk = sh.client.chunk_size().max(1);
                                st.unsynced.retain(|index| index * chunk < new_size);
                            }
                            client.setattr(ino.0, set).await.map_err(|e| errno_of(&e))
                        }
                    }
                }
                None => client.setattr(ino.0, set).await.map_err(|e| errno_of(&e)),
            };
            match result {
                Ok(a) => reply.attr(&sh.cfg.attr_ttl, &sh.attr(&a)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let client = self.as_caller(req);
        self.spawn(async move {
            match client.readlink(ino.0).await {
                Ok(target) => reply.data(target.as_bytes()),
                Err(e) => reply.error(fuse_errno(&e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let node = match mode & libc::S_IFMT {
            libc::S_IFIFO => NewNode::Fifo,
            libc::S_IFREG | 0 => NewNode::File,
            // Devices and sockets are not stored (mknod(2): EPERM when unsupported).
            _ => return reply.error(Errno::EPERM),
        };
        self.make(req, parent, name, node, mode & !umask & 0o7777, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.make(
            req,
            parent,
            name,
            NewNode::Dir,
            mode & !umask & 0o7777,
            reply,
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(req, parent, name, false, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(req, parent, name, true, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let Some(target) = target.to_str() else {
            return reply.error(Errno::EINVAL);
        };
        let node = NewNode::Symlink(target.to_string());
        self.make(req, parent, link_name, node, 0o777, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let (name, newname) = match (checked_name(name), checked_name(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(errno(e)),
        };
        let client = self.as_caller(req);
        self.spawn(async move {
            match client
                .rename_at(parent.0, &name, newparent.0, &newname, no_replace)
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fuse_errno(&e)),
            }
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = match checked_name(newname) {
            Ok(n) => n,
            Err(e) => return reply.error(errno(e)),
        };
        let client = self.as_caller(req);
        let sh = self.sh.clone();
        self.spawn(async move {
            match client.link_at(ino.0, newparent.0, &newname).await {
                Ok(a) => reply.entry(&sh.cfg.attr_ttl, &sh.attr(&a), Generation(0)),
                Err(e) => reply.error(fuse_errno(&e)),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let client = self.as_caller(req);
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let sh = self.sh.clone();
        self.spawn(async move {
            match sh.open_handle(&client, ino.0, writable).await {
                Ok((fh, keep)) => {
                    let flags = if keep {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(fh), flags)
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        self.sh
            .largest_read_bytes
            .fetch_max(u64::from(size), Ordering::Relaxed);
        let sh = self.sh.clone();
        self.spawn(async move {
            match sh.read(&file, offset, size).await {
                Ok(data) => {
                    if data.len() < size as usize {
                        // The kernel takes a short read as the end of the file.
                        tracing::debug!(
                            inode = file.ino,
                            offset,
                            size,
                            got = data.len(),
                            "short read"
                        );
                    }
                    reply.data(&data)
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(file) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        self.sh
            .largest_write_bytes
            .fetch_max(data.len() as u64, Ordering::Relaxed);
        // Fast path, on the session thread: a write that fits the buffer needs no I/O, and
        // skipping the hand-off to a worker thread is most of the cost of a small write.
        if let Some(n) = self.sh.try_buffer(&file, offset, data) {
            return reply.written(n);
        }
        // The request buffer is reused for the next request: copy before going async.
        let data = data.to_vec();
        let sh = self.sh.clone();
        self.spawn(async move {
            match sh.write(&file, offset, data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let Some(file) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        let sh = self.sh.clone();
        self.spawn(async move {
            let mut st = file.io.state.lock().await;
            match sh.flush_locked(&file.io, &mut st, false).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let Some(file) = self.sh.files.lock().remove(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let sh = self.sh.clone();
        self.spawn(async move {
            let flushed = {
                let mut st = file.io.state.lock().await;
                sh.flush_locked(&file.io, &mut st, false).await
            };
            if let Err(e) = &flushed {
                tracing::warn!(inode = file.ino, "data lost at release: errno {e}");
            }
            if let Err(e) = sh.client.close_file(file.server_handle).await {
                // The master drops the handle when this mount's session expires.
                tracing::warn!(inode = file.ino, "close of open handle failed: {e}");
            }
            sh.release_io(file.ino);
            match flushed {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let Some(file) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        let sh = self.sh.clone();
        self.spawn(async move {
            let mut st = file.io.state.lock().await;
            match sh.fsync_locked(&file.io, &mut st).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fh = self.sh.next_fh.fetch_add(1, Ordering::Relaxed);
        self.sh
            .dirs
            .lock()
            .insert(fh, Arc::new(tokio::sync::Mutex::new(DirStream::new(ino.0))));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dir) = self.sh.dirs.lock().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        let Ok(mut index) = usize::try_from(offset) else {
            return reply.error(Errno::EINVAL);
        };
        let client = self.as_caller(req);
        self.spawn(async move {
            let mut d = dir.lock().await;
            d.rewind_if_needed(offset);
            loop {
                if let Err(e) = d.fill_to(&client, index).await {
                    return reply.error(fuse_errno(&e));
                }
                let Some(item) = d.entries.get(index) else {
                    break;
                };
                // The offset handed out is where the next readdir resumes.
                if reply.add(INodeNo(item.ino), index as u64 + 1, item.kind, &item.name) {
                    break;
                }
                index += 1;
            }
            reply.ok();
        });
    }

    fn readdirplus(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(dir) = self.sh.dirs.lock().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        let Ok(mut index) = usize::try_from(offset) else {
            return reply.error(Errno::EINVAL);
        };
        let client = self.as_caller(req);
        let sh = self.sh.clone();
        self.spawn(async move {
            let mut d = dir.lock().await;
            d.rewind_if_needed(offset);
            let ttl = sh.cfg.attr_ttl;
            loop {
                if let Err(e) = d.fill_to(&client, index).await {
                    return reply.error(fuse_errno(&e));
                }
                let Some(item) = d.entries.get(index) else {
                    break;
                };
                let attr = match &item.attr {
                    Some(a) => sh.attr(a),
                    // `.` and `..`: the kernel does not cache these, any attributes do.
                    None => to_fuse(
                        &rdfs_client::FileAttr {
                            inode: item.ino,
                            file_type: rdfs_client::FileType::Dir as i32,
                            ..Default::default()
                        },
                        0,
                    ),
                };
                let next = index as u64 + 1;
                if reply.add(
                    INodeNo(item.ino),
                    next,
                    &item.name,
                    &ttl,
                    &attr,
                    Generation(0),
                ) {
                    break;
                }
                index += 1;
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.sh.dirs.lock().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Metadata is durable on the master's log once acknowledged.
        reply.ok();
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let client = self.as_caller(req);
        self.spawn(async move {
            match client.statfs().await {
                Ok(s) => {
                    let bs = u64::from(STATFS_BLOCK_SIZE);
                    let blocks = s.capacity / bs;
                    let free = s.capacity.saturating_sub(s.used) / bs;
                    reply.statfs(
                        blocks,
                        free,
                        free,
                        s.files.saturating_add(STATFS_FREE_INODES),
                        STATFS_FREE_INODES,
                        STATFS_BLOCK_SIZE,
                        MAX_NAME_LEN as u32,
                        STATFS_BLOCK_SIZE,
                    )
                }
                Err(e) => reply.error(fuse_errno(&e)),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::EINVAL);
        };
        let value = value.to_vec();
        if name == CAPABILITY_XATTR {
            self.sh.no_caps.lock().remove(&ino.0);
        }
        let client = self.as_caller(req);
        self.spawn(async move {
            let create = flags & XATTR_CREATE != 0;
            let replace = flags & XATTR_REPLACE != 0;
            match client
                .set_xattr(ino.0, &name, &value, create, replace)
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fuse_errno(&e)),
            }
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::EINVAL);
        };
        let is_caps = name == CAPABILITY_XATTR;
        if is_caps {
            let fresh = self
                .sh
                .no_caps
                .lock()
                .get(&ino.0)
                .is_some_and(|at| at.elapsed() < self.sh.cfg.attr_ttl);
            if fresh {
                return reply.error(Errno::from_i32(libc::ENODATA));
            }
        }
        let client = self.as_caller(req);
        let sh = self.sh.clone();
        self.spawn(async move {
            match client.get_xattr(ino.0, &name).await {
                Ok(v) => reply_xattr(reply, &v, size),
                Err(e) => {
                    let errno = errno_of(&e);
                    if is_caps && errno == libc::ENODATA {
                        let mut no_caps = sh.no_caps.lock();
                        if no_caps.len() >= NO_CAPS_ENTRIES {
                            no_caps.clear();
                        }
                        no_caps.insert(ino.0, std::time::Instant::now());
                    }
                    reply.error(Errno::from_i32(errno))
                }
            }
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let client = self.as_caller(req);
        self.spawn(async move {
            match client.list_xattr(ino.0).await {
                Ok(names) => {
                    let mut buf = Vec::new();
                    for n in names {
                        buf.extend_from_slice(n.as_bytes());
                        buf.push(0);
                    }
                    reply_xattr(reply, &buf, size)
                }
                Err(e) => reply.error(fuse_errno(&e)),
            }
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::EINVAL);
        };
        if name == CAPABILITY_XATTR {
            self.sh.no_caps.lock().remove(&ino.0);
        }
        let client = self.as_caller(req);
        self.spawn(async move {
            match client.remove_xattr(ino.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fuse_errno(&e)),
            }
        });
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // Only called without `default_permissions`: check the mode bits here.
        let (uid, gid) = (req.uid(), req.gid());
        let caller = self.sh.groups.caller(req.pid(), uid, gid);
        let sh = self.sh.clone();
        self.spawn(async move {
            match sh.client.getattr(ino.0).await {
                Ok(a) => {
                    if may_access(&a, &caller, mask.bits()) {
                        reply.ok()
                    } else {
                        reply.error(Errno::EACCES)
                    }
                }
                Err(e) => reply.error(fuse_errno(&e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match checked_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(errno(e)),
        };
        let client = self.as_caller(req);
        let exclusive = flags & libc::O_EXCL != 0;
        let truncate = flags & libc::O_TRUNC != 0;
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let mode = mode & !umask & 0o7777;
        let sh = self.sh.clone();
        self.spawn(async move {
            // Created and opened in one round trip.
            let made = client
                .create_open_at(parent.0, &name, mode, exclusive)
                .await;
            let (mut a, server_handle) = match made {
                Ok(made) => made,
                Err(e) => return reply.error(fuse_errno(&e)),
            };
            if truncate && a.size > 0 {
                // O_CREAT|O_TRUNC found an existing file (created meanwhile elsewhere).
                let set = SetAttr {
                    size: Some(0),
                    ..SetAttr::default()
                };
                match client.setattr(a.inode, set).await {
                    Ok(t) => a = t,
                    Err(e) => return reply.error(fuse_errno(&e)),
                }
            }
            let fh = sh.add_handle(a.inode, server_handle, writable);
            reply.created(
                &sh.cfg.attr_ttl,
                &sh.attr(&a),
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            );
        });
    }
}

impl RdfsFs {
    /// mkdir / mknod / symlink.
    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        node: NewNode,
        mode: u32,
        reply: ReplyEntry,
    ) {
        let name = match checked_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(errno(e)),
        };
        let client = self.as_caller(req);
        let sh = self.sh.clone();
        self.spawn(async move {
            match client.create_at(parent.0, &name, node, mode, true).await {
                Ok(a) => reply.entry(&sh.cfg.attr_ttl, &sh.attr(&a), Generation(0)),
                Err(e) => reply.error(fuse_errno(&e)),
            }
        });
    }

    /// unlink / rmdir.
    fn remove(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        is_dir: bool,
        reply: ReplyEmpty,
    ) {
        let name = match checked_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(errno(e)),
        };
        let client = self.as_caller(req);
        self.spawn(async move {
            match client.unlink_at(parent.0, &name, is_dir).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fuse_errno(&e)),
            }
        });
    }
}

impl Shared {
    /// Opens `ino`: fresh attributes for close-to-open, a master handle, a local handle.
    /// Returns the handle and whether the kernel may keep its cached pages.
    async fn open_handle(&self, client: &Client, ino: u64, writable: bool) -> Res<(u64, bool)> {
        // Chunk locations cached before this open may carry an old size: forget them.
        self.client.invalidate(ino);
        let dirty = self.dirty(ino);
        let fresh = self
            .client
            .getattr(ino)
            .await
            .map_err(|e| stale_if_gone(&e))?;
        let known = self.known.lock().get(&ino).copied();
        let shown = self.attr_with_dirty(&fresh, dirty);
        let keep = known == Some((shown.size, ns_of(shown.mtime)));
        if !keep {
            if let Some(n) = self.notifier.get() {
                // Attributes only (offset < 0): pages are dropped because KEEP_CACHE is off.
                if let Err(e) = n.inval_inode(INodeNo(ino), -1, 0) {
                    tracing::debug!(inode = ino, "attribute invalidation failed: {e}");
                }
            }
        }
        let fh = self.register_handle(client, ino, writable).await?;
        Ok((fh, keep))
    }

    /// Registers an open handle with the master and in the handle table.
    async fn register_handle(&self, client: &Client, ino: u64, writable: bool) -> Res<u64> {
        let server_handle = client.open_file(ino).await.map_err(|e| errno_of(&e))?;
        Ok(self.add_handle(ino, server_handle, writable))
    }

    /// Adds a handle the master registered (`server_handle`) to the handle table.
    fn add_handle(&self, ino: u64, server_handle: u64, writable: bool) -> u64 {
        let io = self.acquire_io(ino);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let file = Arc::new(OpenFile {
            ino,
            server_handle,
            writable,
            io,
            ra: tokio::sync::Mutex::new(ReadAhead::new(
                self.cfg.readahead_bytes,
                self.cfg.readahead_depth,
            )),
        });
        self.files.lock().insert(fh, file);
        fh
    }
}

/// Replies to getxattr/listxattr: the size when asked (size 0), ERANGE when it does not fit.
fn reply_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        match u32::try_from(value.len()) {
            Ok(n) => reply.size(n),
            Err(_) => reply.error(Errno::E2BIG),
        }
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// POSIX mode-bit check for `access(2)` (root may do anything but execute a file
/// nobody can execute).
fn may_access(a: &rdfs_client::FileAttr, caller: &Caller, mask: i32) -> bool {
    let mode = a.mode;
    if caller.uid == 0 {
        let wants_exec = mask & libc::X_OK != 0;
        return !wants_exec || mode & 0o111 != 0 || kind_of(a.file_type) == FileType::Directory;
    }
    let bits = if caller.uid == a.uid {
        (mode >> 6) & 7
    } else if caller.gid == a.gid || caller.groups.contains(&a.gid) {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    let need = (if mask & libc::R_OK != 0 { 4 } else { 0 })
        | (if mask & libc::W_OK != 0 { 2 } else { 0 })
        | (if mask & libc::X_OK != 0 { 1 } else { 0 });
    bits & need == need
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_longer_than_name_max_are_refused() {
        let ok = "n".repeat(MAX_NAME_LEN);
        assert_eq!(checked_name(OsStr::new(&ok)), Ok(ok.clone()));
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert_eq!(checked_name(OsStr::new(&long)), Err(libc::ENAMETOOLONG));
    }

    #[test]
    fn access_follows_owner_group_other_bits() {
        let a = rdfs_client::FileAttr {
            mode: 0o640,
            uid: 10,
            gid: 20,
            ..Default::default()
        };
        let who = |uid, gid, groups: Vec<u32>| Caller { uid, gid, groups };
        assert!(may_access(&a, &who(10, 1, vec![]), libc::R_OK | libc::W_OK));
        assert!(may_access(&a, &who(11, 1, vec![20]), libc::R_OK));
        assert!(!may_access(&a, &who(11, 1, vec![20]), libc::W_OK));
        assert!(!may_access(&a, &who(12, 1, vec![]), libc::R_OK));
        assert!(may_access(&a, &who(0, 0, vec![]), libc::R_OK | libc::W_OK));
        assert!(!may_access(&a, &who(0, 0, vec![]), libc::X_OK));
    }
}
