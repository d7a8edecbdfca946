//! rdfs-client: the async client library every rdfs user goes through (the `dfs` CLI,
//! FUSE, applications).
//!
//! Metadata calls go to the master (gRPC) through one retry loop ([`master`]): a list of
//! master addresses, sticking with the one that answers, a deadline on every call, retries
//! with backoff for retryable errors (safe mode included). Bytes move directly between the
//! client and chunkservers over the framed data plane: reads ([`read`]) pick a replica and
//! fail over to the others, never returning unverified bytes; writes ([`write`]) are split at
//! chunk boundaries, pushed along the replica chain the master granted, and retried with a
//! re-granted chain when a replica fails. [`stream`] builds `put`/`get` on top with
//! read-ahead so the network and the local disk work at the same time. [`inode`] is the
//! inode-based POSIX surface FUSE uses (lookups, creates, links, setattr, xattrs, open
//! handles with a renewed session), made as the [`Caller`] set by [`Client::with_caller`].
//! [`append`] is record append ([`Appender`]: the primary chooses offsets, retries never
//! append a record twice to one chunk) and [`records`] reads such files back
//! ([`RecordReader`]: padding and torn regions skipped, duplicates dropped by record id).
//!
//! Deadlines: every metadata call and every `read_at`/`write_at` must finish within
//! [`ClientConfig::timeout`]. Streaming transfers (`put_stream`/`get_stream`) apply the
//! deadline to each piece, so a large transfer fails only when it stops making progress.

mod admin;
mod append;
mod error;
mod inode;
mod master;
mod pool;
pub mod ranges;
mod read;
mod records;
mod snapshot;
mod stream;
mod trash;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rdfs_proto::limits::DEFAULT_CLIENT_TIMEOUT_MS;
use rdfs_proto::{pb, ErrorCode};
use tokio::time::Instant;

pub use append::Appender;
pub use error::{ClientError, Result};
pub use inode::{Caller, NewNode, SetAttr, StatFs, MAX_XATTR_VALUE_BYTES, SET_TIME_NOW};
pub use rdfs_proto::pb::{
    ClusterStatusResponse, DirEntry, FileAttr, FileType, FsckResponse, GetChunksResponse, TrashItem,
};
pub use rdfs_proto::record::RecordId;
pub use read::MAX_READ_AT_BYTES;
pub use records::{Record, RecordReader, READ_WINDOW_BYTES};
pub use snapshot::SnapshotInfo;
pub use stream::{PieceReader, GET_PIECE_BYTES, PUT_PIECE_BYTES};
pub use trash::TrashTarget;

use master::Masters;
use pool::ConnPool;

/// Permission bits of files created without an explicit mode (`put`).
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Permission bits of directories created without an explicit mode.
pub const DEFAULT_DIR_MODE: u32 = 0o755;
/// How long chunk locations stay cached for reads; writes and errors invalidate earlier.
const LOCATION_CACHE_TTL: Duration = Duration::from_secs(3);
/// Files whose locations are cached at once; the cache is emptied when it fills.
const LOCATION_CACHE_ENTRIES: usize = 1024;
/// Callers whose locations are cached per file; the file's entry is emptied when it fills.
const LOCATION_CACHE_CALLERS: usize = 16;
/// Bytes of random client id sent with mutations for the master's retry cache.
const CLIENT_ID_BYTES: usize = 16;

/// How to reach the cluster and as whom.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Master control-plane addresses (`host:port`); the active one is found by trying each.
    pub masters: Vec<String>,
    /// Deadline of one operation (metadata call, `read_at`, `write_at`, one streamed piece).
    pub timeout: Duration,
    /// Caller identity the master checks permissions against.
    pub uid: u32,
    pub gid: u32,
}

impl ClientConfig {
    /// Default deadline (15 s), caller uid/gid 0.
    pub fn new(masters: Vec<String>) -> ClientConfig {
        ClientConfig {
            masters,
            timeout: Duration::from_millis(DEFAULT_CLIENT_TIMEOUT_MS),
            uid: 0,
            gid: 0,
        }
    }
}

/// A connection to an rdfs cluster. Cheap to clone; clones share connections and caches.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Who requests are made as; [`Client::with_caller`] makes a clone with another one.
    caller: Arc<pb::Caller>,
}

struct Inner {
    masters: Masters,
    pool: ConnPool,
    /// inode → (caller uid, gid) → locations. Per caller because fetching them is where the
    /// master checks read permission; clones from `with_caller` share the map.
    locations: Mutex<HashMap<u64, PerCaller>>,
    /// Bumped by every [`Client::invalidate`]. A location fetch that was in flight across
    /// an invalidation (a truncate, a write) may carry the old size: its answer is used for
    /// the read that asked, but not cached, or a later read would be clipped to that size.
    invalidations: AtomicU64,
    /// Chunkservers that recently failed to answer a read, and since when.
    suspects: Mutex<HashMap<String, Instant>>,
    timeout: Duration,
    /// Also this client's session id for open handles.
    client_id: Vec<u8>,
    /// Whether the session-renewal task runs.
    session_started: AtomicBool,
    /// Open handles (handle → inode), re-registered with each session renewal so a
    /// restarted master learns them again.
    handles: Mutex<HashMap<u64, u64>>,
    /// Session lifetime the master announced (ms; 0 = not yet known).
    session_ttl_ms: AtomicU64,
    next_call_id: AtomicU64,
    chunk_size: AtomicU64,
}

/// Cached locations of one file, by caller (uid, gid).
type PerCaller = HashMap<(u32, u32), CachedLocations>;

struct CachedLocations {
    chunks: Arc<pb::GetChunksResponse>,
    fetched: Instant,
}

impl Client {
    /// Connects to the cluster: succeeds once a master answers `ClusterStatus`, fails with a
    /// clear error (naming the addresses) when none does within `cfg.timeout`.
    pub async fn connect(cfg: ClientConfig) -> Result<Client> {
        let client = Client::unconnected(cfg)?;
        let status = client.cluster_status().await?;
        if status.chunk_size == 0 {
            return Err(ClientError::Protocol(
                "master reported a chunk size of 0".to_string(),
            ));
        }
        Ok(client)
    }

    /// A client that has not talked to any master yet (no I/O).
    fn unconnected(cfg: ClientConfig) -> Result<Client> {
        let masters = Masters::new(&cfg.masters, cfg.timeout)?;
        let client_id: Vec<u8> = (0..CLIENT_ID_BYTES).map(|_| rand::random::<u8>()).collect();
        Ok(Client {
            inner: Arc::new(Inner {
                masters,
                pool: ConnPool::default(),
                locations: Mutex::new(HashMap::new()),
                invalidations: AtomicU64::new(0),
                suspects: Mutex::new(HashMap::new()),
                timeout: cfg.timeout,
                client_id,
                session_started: AtomicBool::new(false),
                handles: Mutex::new(HashMap::new()),
                session_ttl_ms: AtomicU64::new(0),
                next_call_id: AtomicU64::new(1),
                chunk_size: AtomicU64::new(0),
            }),
            caller: Arc::new(pb::Caller {
                uid: cfg.uid,
                gid: cfg.gid,
                groups: vec![cfg.gid],
            }),
        })
    }

    #[cfg(test)]
    pub(crate) fn offline_for_tests() -> Client {
        let mut cfg = ClientConfig::new(vec!["127.0.0.1:1".to_string()]);
        cfg.timeout = Duration::from_secs(1);
        Client::unconnected(cfg).expect("valid address")
    }

    /// The cluster's chunk size, learnt at connect.
    pub fn chunk_size(&self) -> u64 {
        self.inner.chunk_size.load(Ordering::Relaxed)
    }

    /// The per-operation deadline this client was configured with.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.timeout
    }

    fn caller(&self) -> Option<pb::Caller> {
        Some((*self.caller).clone())
    }

    /// A fresh request id; a retried call reuses it so the master can answer from its cache.
    fn request_id(&self) -> Option<pb::RequestId> {
        Some(pb::RequestId {
            client_id: self.inner.client_id.clone(),
            call_id: self.inner.next_call_id.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Attributes of `path`.
    pub async fn stat(&self, path: &str) -> Result<pb::FileAttr> {
        let path = checked_path(path)?;
        let req = pb::StatRequest {
            path: path.clone(),
            caller: self.caller(),
        };
        let resp = self
            .inner
            .masters
            .call("stat", &path, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.stat(req).await }
            })
            .await?;
        need_attr(resp.attr, &path)
    }

    /// Every entry of directory `path`, in name order (pages until the master says done).
    pub async fn list(&self, path: &str) -> Result<Vec<pb::DirEntry>> {
        let path = checked_path(path)?;
        let deadline = self.deadline();
        let mut entries: Vec<pb::DirEntry> = Vec::new();
        loop {
            let req = pb::ListRequest {
                path: path.clone(),
                caller: self.caller(),
                start_after: entries.last().map(|e| e.name.clone()).unwrap_or_default(),
                limit: 0,
            };
            let resp = self
                .inner
                .masters
                .call("list", &path, deadline, |mut m| {
                    let req = req.clone();
                    async move { m.list(req).await }
                })
                .await?;
            let got = resp.entries.len();
            entries.extend(resp.entries);
            // An empty page that claims more would loop forever: stop instead.
            if !resp.more || got == 0 {
                return Ok(entries);
            }
        }
    }

    /// Creates directory `path` (and missing parents with `parents`).
    pub async fn mkdir(&self, path: &str, mode: u32, parents: bool) -> Result<pb::FileAttr> {
        let path = checked_path(path)?;
        let req = pb::MkdirRequest {
            path: path.clone(),
            mode,
            parents,
            caller: self.caller(),
            request_id: self.request_id(),
        };
        let resp = self
            .inner
            .masters
            .call("mkdir", &path, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.mkdir(req).await }
            })
            .await?;
        need_attr(resp.attr, &path)
    }

    /// Creates file `path`; with `overwrite` an existing file is truncated to 0 instead of
    /// failing with `AlreadyExists`.
    pub async fn create(&self, path: &str, mode: u32, overwrite: bool) -> Result<pb::FileAttr> {
        let path = checked_path(path)?;
        let req = pb::CreateRequest {
            path: path.clone(),
            mode,
            overwrite,
            caller: self.caller(),
            request_id: self.request_id(),
            replication: 0,
        };
        let resp = self
            .inner
            .masters
            .call("create", &path, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.create(req).await }
            })
            .await?;
        let attr = need_attr(resp.attr, &path)?;
        self.invalidate(attr.inode);
        Ok(attr)
    }

    /// Deletes `path` (a non-empty directory only with `recursive`) at once, without the
    /// trash (`dfs rm` uses [`Client::trash`]).
    pub async fn delete(&self, path: &str, recursive: bool) -> Result<()> {
        self.remove(path, recursive, false).await
    }

    /// `Delete`, to the trash or not.
    async fn remove(&self, path: &str, recursive: bool, to_trash: bool) -> Result<()> {
        let path = checked_path(path)?;
        let req = pb::DeleteRequest {
            path: path.clone(),
            recursive,
            caller: self.caller(),
            request_id: self.request_id(),
            to_trash,
        };
        self.inner
            .masters
            .call("delete", &path, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.delete(req).await }
            })
            .await?;
        Ok(())
    }

    /// Renames `src` to `dst` (replacing an existing file at `dst`, as POSIX rename does).
    pub async fn rename(&self, src: &str, dst: &str) -> Result<()> {
        let src = checked_path(src)?;
        let dst = checked_path(dst)?;
        let req = pb::RenameRequest {
            src: src.clone(),
            dst,
            no_replace: false,
            caller: self.caller(),
            request_id: self.request_id(),
        };
        self.inner
            .masters
            .call("rename", &src, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.rename(req).await }
            })
            .await?;
        Ok(())
    }

    /// Fresh chunk locations of the file at `path` (for `dfs stat`).
    pub async fn chunk_locations(&self, path: &str) -> Result<pb::GetChunksResponse> {
        let attr = self.stat(path).await?;
        if attr.file_type == pb::FileType::Dir as i32 {
            return Err(ClientError::remote(path, ErrorCode::IsADirectory, ""));
        }
        let chunks = self.fetch_locations(attr.inode, self.deadline()).await?;
        Ok((*chunks).clone())
    }

    /// Cluster summary; also refreshes the chunk size this client splits writes with.
    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse> {
        let resp = self
            .inner
            .masters
            .call("cluster status", "", self.deadline(), |mut m| async move {
                m.cluster_status(pb::ClusterStatusRequest {}).await
            })
            .await?;
        if resp.chunk_size != 0 {
            self.inner
                .chunk_size
                .store(resp.chunk_size, Ordering::Relaxed);
        }
        Ok(resp)
    }

    /// Clean handover from the primary to its in-sync standby (`dfs admin failover`):
    /// returns the new primary's address and epoch. Not retried: a handover that failed
    /// leaves the old primary serving, and the caller decides whether to try again.
    pub async fn failover(&self) -> Result<pb::FailoverResponse> {
        let masters = &self.inner.masters;
        // Find the primary first (any call that only the primary answers).
        self.stat("/").await?;
        let index = masters.current_index();
        let addr = masters.addr(index).to_string();
        let mut ha = masters.ha_client(index);
        let call = ha.failover(pb::FailoverRequest {});
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(ClientError::from_status("failover", &addr, &status)),
            Err(_) => Err(ClientError::Timeout(format!(
                "master {addr} did not finish the handover"
            ))),
        }
    }

    /// The highest master epoch this client has seen.
    pub fn master_epoch(&self) -> u64 {
        self.inner.masters.epoch()
    }

    /// Health check of the tree under `path`.
    pub async fn fsck(&self, path: &str, list_chunks: bool) -> Result<pb::FsckResponse> {
        self.fsck_lists(path, list_chunks, false).await
    }

    /// Health check listing chunks and/or files.
    pub async fn fsck_lists(
        &self,
        path: &str,
        list_chunks: bool,
        list_files: bool,
    ) -> Result<pb::FsckResponse> {
        let path = checked_path(path)?;
        let req = pb::FsckRequest {
            path: path.clone(),
            list_chunks,
            list_files,
        };
        self.inner
            .masters
            .call("fsck", &path, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.fsck(req).await }
            })
            .await
    }

    /// Locations of `inode`'s chunks, from the cache when fresh enough.
    async fn locations(&self, inode: u64, deadline: Instant) -> Result<Arc<pb::GetChunksResponse>> {
        let who = (self.caller.uid, self.caller.gid);
        if let Some(cached) = self
            .inner
            .locations
            .lock()
            .get(&inode)
            .and_then(|m| m.get(&who))
        {
            if cached.fetched.elapsed() < LOCATION_CACHE_TTL {
                return Ok(cached.chunks.clone());
            }
        }
        self.fetch_locations(inode, deadline).await
    }

    /// Asks the master for `inode`'s chunk locations and caches the answer.
    async fn fetch_locations(
        &self,
        inode: u64,
        deadline: Instant,
    ) -> Result<Arc<pb::GetChunksResponse>> {
        let req = pb::GetChunksRequest {
            inode,
            first_index: 0,
            count: 0,
            caller: self.caller(),
        };
        let what = format!("inode {inode}");
        let before = self.inner.invalidations.load(Ordering::Acquire);
        let resp = self
            .inner
            .masters
            .call("get chunks", &what, deadline, |mut m| {
                let req = req.clone();
                async move { m.get_chunks(req).await }
            })
            .await?;
        let chunks = Arc::new(resp);
        let mut cache = self.inner.locations.lock();
        if self.inner.invalidations.load(Ordering::Acquire) != before {
            return Ok(chunks);
        }
        if cache.len() >= LOCATION_CACHE_ENTRIES {
            cache.retain(|_, m| {
                m.retain(|_, c| c.fetched.elapsed() < LOCATION_CACHE_TTL);
                !m.is_empty()
            });
            if cache.len() >= LOCATION_CACHE_ENTRIES {
                cache.clear();
            }
        }
        let per_inode = cache.entry(inode).or_default();
        if per_inode.len() >= LOCATION_CACHE_CALLERS {
            per_inode.clear();
        }
        per_inode.insert(
            (self.caller.uid, self.caller.gid),
            CachedLocations {
                chunks: chunks.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(chunks)
    }

    /// Forgets cached locations of `inode` (after a write or a failed read).
    pub fn invalidate(&self, inode: u64) {
        let mut cache = self.inner.locations.lock();
        // Bumped under the cache lock, so a fetch's check-then-insert cannot straddle it.
        self.inner.invalidations.fetch_add(1, Ordering::AcqRel);
        cache.remove(&inode);
    }
}

/// Validates and normalises a user path before it goes on the wire.
fn checked_path(path: &str) -> Result<String> {
    rdfs_proto::path::normalize(path).map_err(|code| ClientError::remote(path, code, ""))
}

fn need_attr(attr: Option<pb::FileAttr>, path: &str) -> Result<pb::FileAttr> {
    attr.ok_or_else(|| ClientError::Protocol(format!("master sent no attributes for {path}")))
}

/// Wall-clock now in nanoseconds since the epoch (mtime of a write).
fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_bad_ones_refused_with_their_code() {
        assert_eq!(checked_path("/a//b/").expect("valid"), "/a/b");
        let err = checked_path("relative").expect_err("must be absolute");
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        let long = format!("/{}", "x".repeat(300));
        assert_eq!(
            checked_path(&long).expect_err("too long").code(),
            ErrorCode::NameTooLong
        );
    }

    #[tokio::test]
    async fn connect_to_nothing_fails_within_the_timeout() {
        let mut cfg = ClientConfig::new(vec!["127.0.0.1:1".into()]);
        cfg.timeout = Duration::from_millis(500);
        let start = Instant::now();
        let err = Client::connect(cfg).await.err().expect("no master there");
        assert!(start.elapsed() < Duration::from_secs(3));
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
