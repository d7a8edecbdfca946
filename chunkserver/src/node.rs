//! The state one chunkserver shares between its data plane and its master loop: the chunk
//! store, the durable STATE (highest epoch seen), per-chunk mutation locks and the reports
//! (added / removed / bad replicas) waiting for the next heartbeat.
//!
//! Invariant: the highest epoch only rises, and is on disk before a request carrying a
//! higher epoch is acted upon.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rdfs_proto::dataplane::ChunkInfo;
use rdfs_proto::ids::{ChunkId, Epoch};
use rdfs_proto::ErrorCode;
use tokio::sync::OwnedMutexGuard;

use crate::error::ChunkserverError;
use crate::state::StateFile;
use crate::store::{ChunkStore, StoreError};

/// Past this many idle per-chunk locks, unused ones are dropped.
const CHUNK_LOCKS_SOFT_MAX: usize = 1024;

/// Pending incremental reports kept for one unreachable master; past this the queue is
/// dropped and that master gets a full report (a new registration) instead.
pub const MAX_PENDING_REPORTS: usize = 100_000;

/// Replicas to tell the master about in the next heartbeat.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reports {
    pub added: Vec<ChunkInfo>,
    pub removed: Vec<ChunkId>,
    pub bad: Vec<ChunkInfo>,
    /// The queue overflowed and was dropped: only a full report brings the master up to date.
    pub overflowed: bool,
}

impl Reports {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.bad.is_empty() && !self.overflowed
    }

    /// Bounds the queue of a master that has been unreachable for long.
    fn cap(&mut self) {
        if self.added.len() + self.removed.len() > MAX_PENDING_REPORTS {
            self.added.clear();
            self.removed.clear();
            self.overflowed = true;
        }
    }
}

pub struct Node {
    pub(crate) store: Arc<ChunkStore>,
    pub(crate) state: Arc<StateFile>,
    /// Cache of the durable highest epoch, for the fast path.
    epoch: AtomicU64,
    /// Held by a primary for a whole mutation, so a chunk's mutations are serialised.
    chunk_locks: parking_lot::Mutex<HashMap<ChunkId, Arc<tokio::sync::Mutex<()>>>>,
    /// Pending reports, one queue per master (each master's session drains its own).
    reports: parking_lot::Mutex<Vec<Reports>>,
    /// Wakes the master sessions for an immediate heartbeat (a bad replica to report):
    /// the value is bumped, every session watches it.
    pub(crate) report_now: tokio::sync::watch::Sender<u64>,
    /// The background scrubber's progress (reported with every heartbeat).
    pub scrub: crate::scrub::ScrubStats,
    /// The witness lease expiry (the rest of the witness state is in STATE).
    pub(crate) witness: crate::witness::WitnessLease,
}

/// A request-level failure, answered as `Msg::Error` on the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReqError {
    pub code: ErrorCode,
    pub message: String,
}

impl ReqError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ReqError {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ReqError {
    fn from(e: StoreError) -> Self {
        ReqError::new(e.code(), e.to_string())
    }
}

impl Node {
    /// Locks `data_dir`, loads STATE and opens the chunk store (recovering every replica).
    pub fn open(
        data_dir: &Path,
        capacity_limit: Option<u64>,
    ) -> Result<Arc<Node>, ChunkserverError> {
        let state = Arc::new(StateFile::open(data_dir)?);
        let (store, report) = ChunkStore::open(data_dir, capacity_limit)?;
        let st = state.get();
        tracing::info!(
            data_dir = %data_dir.display(), node_id = %st.node_id, cluster_id = %st.cluster_id,
            chunks = store.chunk_count(), trimmed = report.trimmed.len(), bad = report.bad.len(),
            "chunk store opened"
        );
        let node = Node {
            store: Arc::new(store),
            epoch: AtomicU64::new(st.highest_epoch.0),
            witness: crate::witness::WitnessLease::after_start(&st, std::time::Instant::now()),
            state,
            chunk_locks: parking_lot::Mutex::new(HashMap::new()),
            reports: parking_lot::Mutex::new(vec![Reports {
                bad: report.bad,
                ..Reports::default()
            }]),
            report_now: tokio::sync::watch::channel(0).0,
            scrub: Default::default(),
        };
        Ok(Arc::new(node))
    }

    pub fn store(&self) -> &Arc<ChunkStore> {
        &self.store
    }

    pub fn highest_epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// Fences a request by epoch: lower than the highest seen is refused; higher is
    /// recorded durably before the request proceeds.
    pub async fn check_epoch(&self, epoch: Epoch) -> Result<(), ReqError> {
        let highest = self.highest_epoch();
        if epoch < highest {
            return Err(ReqError::new(
                ErrorCode::StaleEpoch,
                format!("epoch {epoch} is older than {highest}"),
            ));
        }
        if epoch > highest {
            let state = self.state.clone();
            tokio::task::spawn_blocking(move || state.raise_epoch(epoch))
                .await
                .map_err(|e| ReqError::new(ErrorCode::Internal, e.to_string()))?
                .map_err(|e| ReqError::new(ErrorCode::Io, e.to_string()))?;
            self.epoch.fetch_max(epoch.0, Ordering::AcqRel);
            tracing::info!(epoch = %epoch, "new highest master epoch recorded");
        }
        Ok(())
    }

    fn chunk_lock(&self, id: ChunkId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.chunk_locks.lock();
        if locks.len() > CHUNK_LOCKS_SOFT_MAX {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(id).or_default().clone()
    }

    /// Notes an epoch the witness recorded durably (the fast-path cache follows it).
    pub(crate) fn note_epoch(&self, epoch: Epoch) {
        self.epoch.fetch_max(epoch.0, Ordering::AcqRel);
    }

    /// The per-chunk mutation lock.
    pub async fn lock_chunk(&self, id: ChunkId) -> OwnedMutexGuard<()> {
        self.chunk_lock(id).lock_owned().await
    }

    /// The per-chunk mutation lock if nobody holds it (the scrubber skips busy chunks).
    pub fn try_lock_chunk(&self, id: ChunkId) -> Option<OwnedMutexGuard<()>> {
        self.chunk_lock(id).try_lock_owned().ok()
    }

    /// Runs a store operation off the async runtime (file I/O and fsyncs block).
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ChunkStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Quarantines a replica that failed a CRC and asks for an immediate heartbeat.
    pub fn report_bad(&self, id: ChunkId) {
        if let Some(info) = self
            .store
            .quarantine(id)
            .or_else(|| self.quarantined_info(id))
        {
            for reports in self.reports.lock().iter_mut() {
                if !reports.bad.iter().any(|b| b.chunk_id == id) {
                    reports.bad.push(info.clone());
                }
            }
        }
        self.report_now.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn quarantined_info(&self, id: ChunkId) -> Option<ChunkInfo> {
        let st = self.store.state(id).ok()?;
        st.quarantined.then(|| st.info())
    }

    pub fn report_added(&self, info: ChunkInfo) {
        for reports in self.reports.lock().iter_mut() {
            reports.added.retain(|a| a.chunk_id != info.chunk_id);
            reports.bad.retain(|b| b.chunk_id != info.chunk_id);
            reports.added.push(info.clone());
            reports.cap();
        }
    }

    pub fn report_removed(&self, id: ChunkId) {
        for reports in self.reports.lock().iter_mut() {
            reports.added.retain(|a| a.chunk_id != id);
            reports.removed.push(id);
            reports.cap();
        }
    }

    /// Sizes the report queues for `n` masters (the master loop calls it once at start;
    /// before that, everything goes to queue 0).
    pub fn set_master_count(&self, n: usize) {
        let mut reports = self.reports.lock();
        let first = reports.first().cloned().unwrap_or_default();
        reports.resize(n.max(1), first);
    }

    /// Takes master 0's pending reports (single-master callers and tests).
    pub fn take_reports(&self) -> Reports {
        self.take_reports_for(0)
    }

    /// Takes the pending reports of master `i` for a heartbeat.
    pub fn take_reports_for(&self, i: usize) -> Reports {
        self.reports
            .lock()
            .get_mut(i)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Puts reports back after a heartbeat that did not reach master 0.
    pub fn restore_reports(&self, old: Reports) {
        self.restore_reports_for(0, old)
    }

    /// Puts reports back after a heartbeat that did not reach master `i`.
    pub fn restore_reports_for(&self, i: usize, old: Reports) {
        let mut all = self.reports.lock();
        let Some(reports) = all.get_mut(i) else {
            return;
        };
        let newer = std::mem::take(reports);
        *reports = old;
        reports.added.extend(newer.added);
        reports.removed.extend(newer.removed);
        reports.bad.extend(newer.bad);
        reports.overflowed |= newer.overflowed;
        reports.cap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn higher_epoch_is_durable_and_lower_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let node = Node::open(tmp.path(), None).unwrap();
            node.check_epoch(Epoch(4)).await.unwrap();
            let err = node.check_epoch(Epoch(3)).await.unwrap_err();
            assert_eq!(err.code, ErrorCode::StaleEpoch);
            assert!(matches!(
                Node::open(tmp.path(), None),
                Err(ChunkserverError::State(_))
            ));
        }
        let node = Node::open(tmp.path(), None).unwrap();
        assert_eq!(node.highest_epoch(), Epoch(4));
    }

    #[test]
    fn reports_put_back_after_a_failed_heartbeat_keep_their_order() {
        let tmp = tempfile::tempdir().unwrap();
        let node = Node::open(tmp.path(), None).unwrap();
        node.report_removed(ChunkId(1));
        let taken = node.take_reports();
        node.report_removed(ChunkId(2));
        node.restore_reports(taken);
        assert_eq!(node.take_reports().removed, vec![ChunkId(1), ChunkId(2)]);
        assert!(node.take_reports().is_empty());
    }
}
