//! `Snapshot`: copy-on-write snapshots of a file or directory tree (the namespace side is
//! in `namespace::snapshot`, the first write to a shared chunk in `write`).
//!
//! Order (GFS): (1) plan and freeze the chunks the snapshot will share, so no lease is
//! granted on them meanwhile; (2) revoke what may still be written: every such chunk with
//! a lease or a grant still in use gets a version bump on its replicas (logged first, as any
//! bump), which kills the old fence; (3) log the snapshot — under the same lock that checks
//! that none of its chunks has a lease, a grant in flight or a fence in use — and unfreeze.
//! After that every write to a shared chunk goes through `PrepareWrite`, which copies it.
//! The snapshot is metadata only and durable once logged (and in checkpoints).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use rdfs_proto::dataplane::SetVersionRequest;
use rdfs_proto::ids::{ChunkId, ChunkVersion, Epoch};
use rdfs_proto::pb::{SnapshotRequest, SnapshotResponse};
use rdfs_proto::{path, ErrorCode};
use tonic::Status;

use crate::inode_ops::cred_of;
use crate::namespace::Op;
use crate::service::{now_ns, ns_status};
use crate::state::{Master, State};
use crate::write::GrantGuard;

/// Revoke-then-log rounds before a snapshot of a tree that keeps being written gives up.
const MAX_SNAPSHOT_ROUNDS: usize = 8;
/// Pause between rounds (a grant in flight finishes within a few SetVersion deadlines).
const ROUND_PAUSE: Duration = Duration::from_millis(100);
/// Lease revocations (version bumps) in flight at once.
const REVOKE_CONCURRENCY: usize = 16;

/// What one locked attempt found.
enum Attempt {
    /// Logged: the response.
    Done(SnapshotResponse),
    /// Not yet: these chunks need their grants revoked (or their grant in flight to end);
    /// `more` are chunks the tree gained since it was frozen (frozen now too).
    Wait {
        revoke: Vec<ChunkId>,
        more: Vec<ChunkId>,
    },
}

/// Unfreezes the chunks when the snapshot ends, however it ends.
struct Thaw<'a> {
    master: &'a Master,
    chunks: HashSet<ChunkId>,
}

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        let mut st = self.master.state.lock();
        for c in &self.chunks {
            if let Some(n) = st.frozen.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    st.frozen.remove(c);
                }
            }
        }
    }
}

impl State {
    fn freeze(&mut self, chunks: &[ChunkId]) {
        for c in chunks {
            *self.frozen.entry(*c).or_default() += 1;
        }
    }

    /// Chunks whose current version may still be written through an earlier grant.
    fn needs_revoking(&self, chunks: &[ChunkId], now: Instant) -> Vec<ChunkId> {
        chunks
            .iter()
            .copied()
            .filter(|c| self.leases.may_be_written(*c, now) || self.leases.is_granting(*c))
            .collect()
    }
}

impl Master {
    #[tracing::instrument(skip_all, fields(src = %r.src, dst = %r.dst))]
    pub async fn snapshot(&self, r: SnapshotRequest) -> Result<SnapshotResponse, Status> {
        let norm =
            |p: &str| path::normalize(p).map_err(|c| c.status(format!("{p:?}: {}", c.describe())));
        let (src, dst) = (norm(&r.src)?, norm(&r.dst)?);
        let cred = cred_of(&r.caller);
        let time_ns = now_ns();
        let err = |e| ns_status(&src, e);
        let planned = {
            let mut st = self.state.lock();
            let plan = st
                .ns
                .plan_snapshot(&cred, &src, &dst, time_ns)
                .map_err(err)?;
            st.freeze(&plan.chunks);
            plan.chunks
        };
        let mut thaw = Thaw {
            master: self,
            chunks: planned.iter().copied().collect(),
        };
        for _ in 0..MAX_SNAPSHOT_ROUNDS {
            let frozen = thaw.chunks.clone();
            let attempt = self
                .mutate_logged(
                    &r.request_id,
                    |st| {
                        let plan = st
                            .ns
                            .plan_snapshot(&cred, &src, &dst, time_ns)
                            .map_err(err)?;
                        let more: Vec<ChunkId> = plan
                            .chunks
                            .iter()
                            .filter(|c| !frozen.contains(c))
                            .copied()
                            .collect();
                        let revoke = st.needs_revoking(&plan.chunks, Instant::now());
                        if !more.is_empty() || !revoke.is_empty() {
                            return Ok((vec![], Err((revoke, more))));
                        }
                        Ok((vec![plan.op.clone()], Ok(plan)))
                    },
                    |st, planned| match planned {
                        Ok(plan) => {
                            let attr = st.attr_of_path(&dst).ok();
                            Ok(Attempt::Done(SnapshotResponse {
                                attr,
                                inodes: plan.inodes,
                                chunks: plan.chunks.len() as u64,
                            }))
                        }
                        Err((revoke, more)) => {
                            st.freeze(&more);
                            Ok(Attempt::Wait { revoke, more })
                        }
                    },
                    // The reply goes into the log with the snapshot, for a retry after a
                    // failover.
                    |a| match a {
                        Attempt::Done(resp) => Some(prost::Message::encode_to_vec(resp)),
                        Attempt::Wait { .. } => None,
                    },
                )
                .await?;
            match attempt {
                Attempt::Done(resp) => {
                    tracing::info!(inodes = resp.inodes, chunks = resp.chunks, "snapshot taken");
                    return Ok(resp);
                }
                Attempt::Wait { revoke, more } => {
                    thaw.chunks.extend(more);
                    self.revoke_all(revoke).await?;
                    tokio::time::sleep(ROUND_PAUSE).await;
                }
            }
        }
        Err(ErrorCode::Busy.status(format!(
            "{src}: its chunks kept being written during the snapshot; retry"
        )))
    }

    async fn revoke_all(&self, chunks: Vec<ChunkId>) -> Result<(), Status> {
        let results: Vec<Result<(), Status>> = stream::iter(chunks)
            .map(|c| self.revoke_grants(c))
            .buffer_unordered(REVOKE_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Bumps a chunk's version on its live replicas without granting a lease, so any grant
    /// handed out before is refused by the replicas from now on.
    async fn revoke_grants(&self, chunk: ChunkId) -> Result<(), Status> {
        let planned = self
            .mutate(
                |st| {
                    let now = Instant::now();
                    let Some(meta) = st.ns.chunk(chunk) else {
                        return Ok((vec![], None));
                    };
                    if st.leases.is_granting(chunk) || !st.leases.may_be_written(chunk, now) {
                        // Someone else is bumping it (checked again next round), or nothing to do.
                        return Ok((vec![], None));
                    }
                    let version = ChunkVersion(meta.version.0 + 1);
                    let targets = st.cmap.current_replicas(chunk, meta.version);
                    let op = Op::SetChunkVersion {
                        chunk_id: chunk,
                        version,
                    };
                    Ok((vec![op], Some((version, targets))))
                },
                |st, planned| {
                    if planned.is_some() {
                        st.leases.begin_grant(chunk);
                        st.leases.revoke(chunk);
                    }
                    planned
                },
            )
            .await?;
        let Some((version, targets)) = planned else {
            return Ok(());
        };
        let _guard = GrantGuard {
            master: self,
            chunk,
        };
        let req = SetVersionRequest {
            chunk_id: chunk,
            version,
            epoch: Epoch(self.state.lock().ns.epoch().0),
            lease_serial: self.next_lease_serial(),
            create: false,
        };
        let ok = self.set_versions(chunk, &targets, &req).await;
        let mut st = self.state.lock();
        for s in &ok {
            st.cmap.set_location(*s, chunk, version);
        }
        if !ok.is_empty() {
            st.cmap.confirm(chunk, version);
        }
        st.cmap.cancel_pending(chunk);
        // Replicas that missed the bump are stale now; either way no old grant works.
        st.leases.fence_bumped(chunk);
        tracing::info!(chunk_id = %chunk, %version, replicas = ok.len(), "grants revoked for a snapshot");
        Ok(())
    }
}
