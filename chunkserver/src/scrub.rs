//! The background scrubber: verifies every block CRC of every idle replica, one pass after
//! another, reading at most `rate` bytes per second so foreground I/O keeps the disk.
//!
//! "Idle" means no mutation holds the chunk's lock: the scrubber only tries the lock and
//! skips a busy chunk for this pass, so it never delays a write. A mismatch is handled like
//! one found by a read (`Node::report_bad`): the replica is quarantined and reported in the
//! next heartbeat; the master deletes it and re-replicates from a good copy. Progress
//! (pass, chunks done, bytes verified, corruption found) goes out with every heartbeat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdfs_proto::dataplane::ChunkInfo;
use rdfs_proto::pb::ScrubProgress;
use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::store::StoreError;

/// Default bound on scrubbing reads: gentle enough for a disk in service.
pub const DEFAULT_SCRUB_RATE_BYTES_PER_SEC: u64 = 8 << 20;
/// Bytes verified per store call (the per-chunk lock is held only for this piece).
const SCRUB_PIECE_BYTES: u64 = 1 << 20;
/// Pause between two passes (a small store would otherwise be re-read continuously).
const SCRUB_PASS_PAUSE: Duration = Duration::from_secs(5);

/// Counters the heartbeat reports.
#[derive(Debug, Default)]
pub struct ScrubStats {
    passes_completed: AtomicU64,
    pass_chunks_done: AtomicU64,
    pass_chunks_total: AtomicU64,
    verified_bytes_total: AtomicU64,
    corrupt_found_total: AtomicU64,
    rate_bytes_per_sec: AtomicU64,
}

impl ScrubStats {
    pub fn progress(&self) -> ScrubProgress {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ScrubProgress {
            passes_completed: get(&self.passes_completed),
            pass_chunks_done: get(&self.pass_chunks_done),
            pass_chunks_total: get(&self.pass_chunks_total),
            verified_bytes_total: get(&self.verified_bytes_total),
            corrupt_found_total: get(&self.corrupt_found_total),
            rate_bytes_per_sec: get(&self.rate_bytes_per_sec),
        }
    }
}

/// What scrubbing one replica found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Verified,
    /// A mutation held the chunk: try again next pass.
    Busy,
    /// Deleted, or already quarantined, meanwhile.
    Gone,
    Corrupt,
}

/// Runs passes until `shutdown`; `rate == 0` turns the scrubber off.
pub async fn run(node: Arc<Node>, rate_bytes_per_sec: u64, shutdown: CancellationToken) {
    node.scrub
        .rate_bytes_per_sec
        .store(rate_bytes_per_sec, Ordering::Relaxed);
    if rate_bytes_per_sec == 0 {
        tracing::info!("scrubber off");
        return;
    }
    while !shutdown.is_cancelled() {
        pass(&node, rate_bytes_per_sec, &shutdown).await;
        tokio::select! {
            () = tokio::time::sleep(SCRUB_PASS_PAUSE) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One pass over every replica held when it starts.
pub async fn pass(node: &Arc<Node>, rate: u64, shutdown: &CancellationToken) {
    let chunks = node.store.list();
    let stats = &node.scrub;
    stats
        .pass_chunks_total
        .store(chunks.len() as u64, Ordering::Relaxed);
    stats.pass_chunks_done.store(0, Ordering::Relaxed);
    for info in chunks {
        if shutdown.is_cancelled() {
            return;
        }
        scrub_chunk(node, info, rate, shutdown).await;
        stats.pass_chunks_done.fetch_add(1, Ordering::Relaxed);
    }
    stats.passes_completed.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        passes = stats.passes_completed.load(Ordering::Relaxed),
        "scrub pass done"
    );
}

/// Verifies one replica piece by piece, sleeping after each piece so reads stay under `rate`.
#[tracing::instrument(skip_all, fields(chunk_id = %info.chunk_id))]
pub async fn scrub_chunk(
    node: &Arc<Node>,
    info: ChunkInfo,
    rate: u64,
    shutdown: &CancellationToken,
) -> Outcome {
    let id = info.chunk_id;
    let mut offset = 0;
    while offset < info.len {
        let started = Instant::now();
        let Some(guard) = node.try_lock_chunk(id) else {
            return Outcome::Busy;
        };
        let len = SCRUB_PIECE_BYTES.min(info.len - offset);
        let res = node.blocking(move |s| s.read(id, offset, len)).await;
        drop(guard);
        match res {
            Ok(bytes) if bytes.is_empty() => break, // truncated meanwhile: nothing more to check
            Ok(bytes) => {
                node.scrub
                    .verified_bytes_total
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                offset += bytes.len() as u64;
            }
            Err(StoreError::ChecksumMismatch { block, .. }) => {
                tracing::warn!(
                    block,
                    "scrubber found a corrupt block; reporting the replica"
                );
                node.scrub
                    .corrupt_found_total
                    .fetch_add(1, Ordering::Relaxed);
                node.report_bad(id);
                return Outcome::Corrupt;
            }
            Err(StoreError::NoSuchChunk(_) | StoreError::Quarantined(_)) => return Outcome::Gone,
            Err(e) => {
                tracing::warn!(error = %e, "scrub read failed");
                return Outcome::Gone;
            }
        }
        let budget = Duration::from_secs_f64(len as f64 / rate as f64);
        tokio::select! {
            () = tokio::time::sleep(budget.saturating_sub(started.elapsed())) => {}
            _ = shutdown.cancelled() => return Outcome::Verified,
        }
    }
    Outcome::Verified
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdfs_proto::ids::{ChunkId, ChunkVersion, LeaseSerial};
    use std::os::unix::fs::FileExt;

    fn must_chunk(node: &Node, id: u64, len: usize) {
        let id = ChunkId(id);
        node.store
            .create(id, ChunkVersion(1), LeaseSerial(1))
            .unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        node.store.write(id, 0, &data).unwrap();
        node.store.commit(id, true).unwrap();
    }

    #[tokio::test]
    async fn a_pass_verifies_good_replicas_and_reports_a_corrupt_one() {
        let tmp = tempfile::tempdir().unwrap();
        let node = Node::open(tmp.path(), None).unwrap();
        must_chunk(&node, 1, 300_000);
        must_chunk(&node, 2, 200_000);
        // Flip one byte in the middle of chunk 2's third block, behind the store's back.
        let path = crate::store::data_file_path(tmp.path(), ChunkId(2)).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xFF ^ ((150_000 * 7 % 251) as u8)], 150_000)
            .unwrap();
        let stop = CancellationToken::new();
        pass(&node, 1 << 30, &stop).await;
        let p = node.scrub.progress();
        assert_eq!(p.passes_completed, 1);
        assert_eq!((p.pass_chunks_done, p.pass_chunks_total), (2, 2));
        assert_eq!(p.corrupt_found_total, 1);
        // Chunk 1 whole, chunk 2 up to the piece holding the bad block (none of it counted).
        assert_eq!(p.verified_bytes_total, 300_000);
        let reports = node.take_reports();
        assert_eq!(reports.bad.len(), 1);
        assert_eq!(reports.bad[0].chunk_id, ChunkId(2));
        assert!(node.store.state(ChunkId(2)).unwrap().quarantined);
        // The next pass skips the quarantined replica and verifies the good one again.
        pass(&node, 1 << 30, &stop).await;
        let p = node.scrub.progress();
        assert_eq!((p.pass_chunks_total, p.corrupt_found_total), (1, 1));
        assert_eq!(p.verified_bytes_total, 600_000);
    }

    #[tokio::test]
    async fn a_chunk_under_mutation_is_skipped_and_the_rate_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let node = Node::open(tmp.path(), None).unwrap();
        must_chunk(&node, 1, 2 << 20);
        let info = node.store.list().remove(0);
        let stop = CancellationToken::new();
        {
            let _held = node.lock_chunk(ChunkId(1)).await;
            assert_eq!(
                scrub_chunk(&node, info.clone(), 1 << 30, &stop).await,
                Outcome::Busy
            );
        }
        // 2 MiB at 8 MiB/s takes at least 250 ms.
        let t = Instant::now();
        assert_eq!(
            scrub_chunk(&node, info, 8 << 20, &stop).await,
            Outcome::Verified
        );
        assert!(
            t.elapsed() >= Duration::from_millis(240),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(node.scrub.progress().verified_bytes_total, 2 << 20);
    }
}
