//! The master's shared state and the one mutation path.
//!
//! `State` (namespace + chunk map + leases + safe mode) sits behind one mutex that is never
//! held across an await. A mutation: reserve a log-queue slot, lock, plan (validate) → apply
//! in memory → enqueue the encoded records, unlock, await durability, then the HA commit
//! gate (witness lease held; the required standby has the records), answer. Seqs are
//! assigned and records enqueued under the lock, so the log holds them in seq order. A
//! mutation with a request id also logs its answer (`RequestDone`) in the same batch.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parking_lot::Mutex;
use rdfs_proto::ids::{ChunkId, ChunkVersion, ChunkserverId, LeaseSerial};
use rdfs_proto::pb::ChunkReport;
use rdfs_proto::ErrorCode;
use tokio::sync::oneshot;
use tonic::Status;

use crate::chunk_map::{delete_command, ChunkMap};
use crate::config::MasterConfig;
use crate::ha::{Ack, Ha};
use crate::handles::HandleTable;
use crate::identity::ClusterIdentity;
use crate::lease::LeaseTable;
use crate::namespace::{Applied, Namespace, Op};
use crate::oplog::{encode_record, Durable, LogCmd, LogHandle};
use crate::retry_cache::RetryCache;
use rdfs_proto::pb::RequestId;

/// Longest wait for a slot in the log queue.
const LOG_ENQUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a batch to be fsynced; past it the log is considered failed.
const LOG_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a durable record waits for the witness lease or the standby before the caller
/// gets a retryable error (the record stays; a retry with the same request id finds it).
const COMMIT_GATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Re-check period of the commit gate (the lease expires with time, not with an event).
const COMMIT_GATE_TICK: Duration = Duration::from_millis(20);
/// Fraction (per mille) of chunks that need a current replica before safe mode ends.
pub const SAFE_MODE_THRESHOLD_PER_MILLE: u64 = 999;

pub struct State {
    pub ns: Namespace,
    pub last_seq: u64,
    /// Seq the newest checkpoint on disk covers.
    pub last_checkpoint_seq: u64,
    pub ops_since_checkpoint: u64,
    pub cmap: ChunkMap,
    pub leases: LeaseTable,
    pub safe_mode: bool,
    /// Entered by an operator (`dfs admin safemode enter`): only `leave` ends it.
    pub safe_mode_manual: bool,
    /// The last status pass (every scan): what the dashboard, `ClusterStatus` and
    /// `/metrics` show, so serving them never walks the chunk table.
    pub health: Option<std::sync::Arc<crate::status::HealthSnapshot>>,
    /// How long the last background scan held the lock.
    pub last_scan_duration: std::time::Duration,
    /// Operation counters and their last hour of rates (dashboard, `/metrics`); shared
    /// with the sampler task, counted without the lock where it is not held anyway.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The running (or last finished) `dfs admin balance`.
    pub balancer: Option<crate::balance::Balancer>,
    /// Concurrent copies one chunkserver may be the source of (re-replication, draining,
    /// balancing): the repair throttle.
    pub max_transfers_per_source: u32,
    /// The cluster's chunk size (from the identity), for byte accounting.
    pub chunk_size_bytes: u64,
    /// File replication used when a file says 0.
    pub default_replication: u32,
    /// Open handles and client sessions (not logged).
    pub handles: HandleTable,
    /// Orphans found at recovery are kept until then, so clients can re-register handles.
    pub orphan_grace_until: std::time::Instant,
    /// Chunks a snapshot in progress is about to share (how many snapshots): no lease is
    /// granted on them until it is logged (not logged itself).
    pub frozen: std::collections::HashMap<ChunkId, u32>,
    /// A standby's state: locations are learnt but nothing is decided (no deletes, no
    /// re-replication, safe mode held) until it takes over.
    pub standby: bool,
}

pub struct Master {
    pub config: MasterConfig,
    pub identity: ClusterIdentity,
    pub state: Mutex<State>,
    pub log: LogHandle,
    /// Next lease serial (starts at the boot time in ms so serials grow across restarts).
    pub lease_serial: AtomicU64,
    /// Answers of recent mutations by request id, for retried calls.
    pub retry: RetryCache,
    pub started: std::time::Instant,
    /// Role, witness lease and standby (see the `ha` module).
    pub ha: Ha,
    /// One witness addition at a time (see `Master::add_witness`).
    pub witness_add: tokio::sync::Mutex<()>,
}

/// What one mutation put in the log.
struct Logged<T> {
    /// Fires when the records are durable; `None` when nothing was logged (the answer then
    /// waits for the last record it could have read).
    rx: Option<oneshot::Receiver<Durable>>,
    last_seq: u64,
    /// The answer (an error from the answer step still logs the applied ops).
    out: Result<T, Status>,
}

impl Master {
    /// Runs one mutation: `plan` validates and returns the ops to log (none = nothing to
    /// log) plus a value handed to `answer`, which builds the reply from the state after
    /// the ops were applied (still under the lock). The reply is returned once the records
    /// are durable and the commit gate allows acknowledging them.
    pub async fn mutate<P, T>(
        &self,
        plan: impl FnOnce(&State) -> Result<(Vec<Op>, P), Status>,
        answer: impl FnOnce(&mut State, P) -> T,
    ) -> Result<T, Status> {
        let logged = self
            .log_mutation(plan, |st, p| Ok((answer(st, p), None)))
            .await?;
        self.commit(logged).await
    }

    /// [`Master::mutate`] for a request with a request id: the encoded answer is logged in
    /// the same batch (`RequestDone`), so a retry finds it even after a failover.
    pub async fn mutate_req<P, R>(
        &self,
        id: &Option<RequestId>,
        plan: impl FnOnce(&State) -> Result<(Vec<Op>, P), Status>,
        answer: impl FnOnce(&mut State, P) -> Result<R, Status>,
    ) -> Result<R, Status>
    where
        R: prost::Message,
    {
        self.mutate_logged(id, plan, answer, |r| Some(r.encode_to_vec()))
            .await
    }

    /// [`Master::mutate_req`] for an answer that is not itself the reply: `record` gives the
    /// reply to log for it (`None`: nothing to remember).
    pub async fn mutate_logged<P, T>(
        &self,
        id: &Option<RequestId>,
        plan: impl FnOnce(&State) -> Result<(Vec<Op>, P), Status>,
        answer: impl FnOnce(&mut State, P) -> Result<T, Status>,
        record: impl FnOnce(&T) -> Option<Vec<u8>>,
    ) -> Result<T, Status> {
        let key = crate::retry_cache::key(id);
        let logged = self
            .log_mutation(plan, |st, p| {
                let r = answer(st, p)?;
                let done =
                    key.zip(record(&r))
                        .map(|((client_id, call_id), answer)| Op::RequestDone {
                            client_id,
                            call_id,
                            answer,
                        });
                Ok((r, done))
            })
            .await?;
        self.commit(logged).await
    }

    /// Plans, applies and enqueues one mutation (plus its answer record, if any).
    async fn log_mutation<P, T>(
        &self,
        plan: impl FnOnce(&State) -> Result<(Vec<Op>, P), Status>,
        answer: impl FnOnce(&mut State, P) -> Result<(T, Option<Op>), Status>,
    ) -> Result<Logged<T>, Status> {
        self.ha.check_primary()?;
        if self.log.is_failed() {
            return Err(ErrorCode::Io.status("operation log failed; master is read-only"));
        }
        let permit = tokio::time::timeout(LOG_ENQUEUE_TIMEOUT, self.log.tx.reserve())
            .await
            .map_err(|_| ErrorCode::Busy.status("operation log queue full"))?
            .map_err(|_| ErrorCode::Unavailable.status("master is shutting down"))?;
        let mut st = self.state.lock();
        let (ops, p) = plan(&st)?;
        if ops.is_empty() {
            // Nothing logged, but the answer must not run ahead of what it read: the last
            // record must be acknowledgeable too.
            return Ok(Logged {
                rx: None,
                last_seq: st.last_seq,
                out: answer(&mut st, p).map(|(out, _)| out),
            });
        }
        let first_seq = st.last_seq + 1;
        let mut bytes = st.apply_and_encode(&ops)?;
        st.metrics
            .count(crate::metrics::Rate::Mutations, ops.len() as u64);
        let applied = (st.last_seq + 1 - first_seq) as usize;
        self.note_applied(&ops[..applied], first_seq);
        let (out, done) = match answer(&mut st, p) {
            Ok((out, done)) => (Ok(out), done),
            Err(e) => (Err(e), None),
        };
        if let Some(done) = done {
            let done_seq = st.last_seq + 1;
            bytes.extend(st.apply_and_encode(std::slice::from_ref(&done))?);
            self.note_applied(std::slice::from_ref(&done), done_seq);
        }
        let last_seq = st.last_seq;
        let (tx, rx) = oneshot::channel();
        permit.send(LogCmd::Append {
            bytes,
            first_seq,
            last_seq,
            done: tx,
        });
        Ok(Logged {
            rx: Some(rx),
            last_seq,
            out,
        })
    }

    /// Side effects of applied ops outside the namespace (the retry cache, the witness
    /// membership, the served epoch), on the primary and on a standby alike.
    pub(crate) fn note_applied(&self, ops: &[Op], first_seq: u64) {
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::RequestDone {
                    client_id,
                    call_id,
                    answer,
                } => self
                    .retry
                    .put(client_id, *call_id, answer, first_seq + i as u64),
                Op::AddWitness { node_id, addr } => {
                    self.ha.members.set(node_id, addr);
                    self.ha.membership_changed();
                }
                Op::NewEpoch { epoch, .. } => self.ha.set_epoch(*epoch),
                _ => {}
            }
        }
    }

    /// Waits until a logged mutation is durable and acknowledgeable.
    async fn commit<T>(&self, logged: Logged<T>) -> Result<T, Status> {
        match logged.rx {
            Some(rx) => self.await_durable(rx).await?,
            None => self.wait_durable(logged.last_seq).await?,
        }
        self.commit_gate(logged.last_seq).await?;
        logged.out
    }

    /// Waits until record `seq` (durable here) may be acknowledged: the witness lease is
    /// held and the required standby has it (see `ha`).
    pub async fn commit_gate(&self, seq: u64) -> Result<(), Status> {
        let deadline = std::time::Instant::now() + COMMIT_GATE_TIMEOUT;
        loop {
            let now = std::time::Instant::now();
            match self.ha.can_ack(seq, now) {
                Ack::Yes => return Ok(()),
                Ack::No(status) => return Err(status),
                Ack::Wait if now >= deadline => {
                    return Err(ErrorCode::Unavailable.status(format!(
                        "record {seq} is durable but cannot be acknowledged yet (witness lease or standby); retry"
                    )))
                }
                Ack::Wait => self.ha.wait_change(COMMIT_GATE_TICK).await,
            }
        }
    }

    /// Waits until record `seq` is durable here (a retried request whose answer is cached).
    pub async fn wait_durable(&self, seq: u64) -> Result<(), Status> {
        let mut rx = self.log.durable.clone();
        let stopped =
            match tokio::time::timeout(LOG_COMMIT_TIMEOUT, rx.wait_for(|d| *d >= seq)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(_)) => true,
                Err(_) => false,
            };
        Err(ErrorCode::Unavailable.status(if stopped {
            "operation log writer stopped".to_string()
        } else {
            format!("record {seq} not durable yet")
        }))
    }

    /// Like [`Master::mutate`] for plans that need no extra value.
    pub async fn mutate_ops<T>(
        &self,
        plan: impl FnOnce(&State) -> Result<Vec<Op>, Status>,
        answer: impl FnOnce(&mut State) -> T,
    ) -> Result<T, Status> {
        self.mutate(|st| Ok((plan(st)?, ())), |st, ()| answer(st))
            .await
    }

    /// [`Master::mutate_req`] for plans that need no extra value.
    pub async fn mutate_ops_req<R: prost::Message>(
        &self,
        id: &Option<RequestId>,
        plan: impl FnOnce(&State) -> Result<Vec<Op>, Status>,
        answer: impl FnOnce(&mut State) -> Result<R, Status>,
    ) -> Result<R, Status> {
        self.mutate_req(id, |st| Ok((plan(st)?, ())), |st, ()| answer(st))
            .await
    }

    async fn await_durable(&self, rx: oneshot::Receiver<Durable>) -> Result<(), Status> {
        match tokio::time::timeout(LOG_COMMIT_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(ErrorCode::Io.status(e)),
            Ok(Err(_)) => Err(ErrorCode::Unavailable.status("operation log writer stopped")),
            Err(_) => {
                // Not knowing whether it is durable, acknowledge nothing from now on.
                self.log
                    .failed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Err(ErrorCode::Io.status("operation log fsync timed out"))
            }
        }
    }

    /// Next lease serial.
    pub fn next_lease_serial(&self) -> LeaseSerial {
        LeaseSerial(
            self.lease_serial
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        )
    }
}

impl State {
    pub fn new(ns: Namespace, last_seq: u64, default_replication: u32) -> Self {
        let safe_mode = ns.chunk_count() > 0;
        State {
            ns,
            last_seq,
            last_checkpoint_seq: 0,
            ops_since_checkpoint: 0,
            cmap: ChunkMap::with_boot_ids(),
            leases: LeaseTable::default(),
            safe_mode,
            safe_mode_manual: false,
            max_transfers_per_source: crate::chunk_map::DEFAULT_MAX_TRANSFERS_PER_SOURCE,
            chunk_size_bytes: rdfs_proto::limits::DEFAULT_CHUNK_SIZE,
            metrics: Default::default(),
            health: None,
            last_scan_duration: std::time::Duration::ZERO,
            balancer: None,
            default_replication,
            handles: HandleTable::default(),
            orphan_grace_until: std::time::Instant::now(),
            frozen: Default::default(),
            standby: false,
        }
    }

    /// Applies records a standby received (already validated and ordered); `Err` means the
    /// two logs diverged.
    pub fn apply_followed(&mut self, seq: u64, op: &Op) -> Result<(), String> {
        if seq != self.last_seq + 1 {
            return Err(format!("record {seq} after {}", self.last_seq));
        }
        let applied = self
            .ns
            .apply(op)
            .map_err(|e| format!("record {seq} ({}) does not apply: {e}", op.kind()))?;
        self.after_apply(applied);
        self.last_seq = seq;
        self.ops_since_checkpoint += 1;
        Ok(())
    }

    /// Applies ops in order and encodes their records. An op that fails to apply stops the
    /// batch; the ones before it stay applied and are still logged.
    fn apply_and_encode(&mut self, ops: &[Op]) -> Result<Vec<u8>, Status> {
        let mut bytes = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let seq = self.last_seq + 1;
            let mut rec = Vec::new();
            encode_record(seq, op, &mut rec)
                .map_err(|e| ErrorCode::Internal.status(e.to_string()))?;
            match self.ns.apply(op) {
                Ok(applied) => self.after_apply(applied),
                Err(e) if i == 0 => return Err(e.code.status(e.detail)),
                Err(e) => {
                    tracing::error!(op = op.kind(), error = %e, "planned op did not apply");
                    break;
                }
            }
            self.last_seq = seq;
            self.ops_since_checkpoint += 1;
            bytes.extend_from_slice(&rec);
        }
        Ok(bytes)
    }

    /// Freed chunks: their replicas are garbage and their leases void.
    fn after_apply(&mut self, applied: Applied) {
        for chunk in applied.freed_chunks {
            self.leases.forget(chunk);
            for (server, version) in self.cmap.forget_chunk(chunk) {
                self.queue_delete(server, chunk, version);
            }
        }
    }

    /// Expected replica count of a chunk (its file's factor).
    pub fn expected_replication(&self, chunk: ChunkId) -> u32 {
        match self.ns.chunk(chunk) {
            Some(m) => self.replication_of(m.inode),
            None => self.default_replication,
        }
    }

    /// A file's replication factor (the cluster default for 0 or an unknown inode).
    pub fn replication_of(&self, inode: rdfs_proto::ids::InodeId) -> u32 {
        match self.ns.inode(inode).map(|i| i.replication) {
            Some(r) if r > 0 => r,
            _ => self.default_replication,
        }
    }

    /// Queues a delete, refusing in safe mode and for ids the master never allocated.
    pub fn queue_delete(&mut self, server: ChunkserverId, chunk: ChunkId, v: ChunkVersion) -> bool {
        if self.safe_mode || chunk >= self.ns.next_chunk_id() {
            return false;
        }
        if self.cmap.delete_queued(server, chunk) {
            return true;
        }
        tracing::debug!(chunk_id = %chunk, server = %server, version = %v, "queue delete");
        self.cmap.queue(server, delete_command(chunk, v))
    }

    /// Reconciles one reported replica; returns a version to adopt when it is newer.
    pub fn reconcile_replica(
        &mut self,
        server: ChunkserverId,
        r: &ChunkReport,
    ) -> Option<(ChunkId, ChunkVersion)> {
        let (chunk, rv) = (ChunkId(r.chunk_id), ChunkVersion(r.version));
        self.cmap.note_size(chunk, r.size);
        if self.cmap.is_bad(chunk, server) {
            // Its delete is queued; a fresh copy may come back only after it is gone.
            return None;
        }
        let Some(meta) = self.ns.chunk(chunk).copied() else {
            if chunk < self.ns.next_chunk_id() {
                self.queue_delete(server, chunk, rv);
            } else {
                tracing::warn!(chunk_id = %chunk, server = %server, "replica of a chunk id never allocated; kept");
            }
            return None;
        };
        if rv > meta.version {
            self.cmap.set_location(server, chunk, rv);
            return Some((chunk, rv));
        }
        if self.cmap.is_current(chunk, meta.version, rv) {
            self.cmap.set_location(server, chunk, rv);
            if rv == meta.version {
                self.cmap.confirm(chunk, rv);
            }
        } else if !self.leases.is_granting(chunk) {
            // While a bump is in flight this replica may be about to receive the new
            // version: only a settled chunk's old replicas are stale.
            self.cmap.remove_location(server, chunk);
            self.queue_delete(server, chunk, rv);
        }
        None
    }

    /// A full report: forget what the server no longer has, reconcile the rest.
    pub fn full_report(
        &mut self,
        server: ChunkserverId,
        reports: &[ChunkReport],
    ) -> Vec<(ChunkId, ChunkVersion)> {
        let listed: std::collections::HashSet<u64> = reports.iter().map(|r| r.chunk_id).collect();
        for chunk in self.cmap.chunks_on(server) {
            if !listed.contains(&chunk.0) {
                self.cmap.remove_location(server, chunk);
            }
        }
        for chunk in self.cmap.bad_on(server) {
            if !listed.contains(&chunk.0) {
                self.cmap.clear_bad(server, chunk);
            }
        }
        let adopt = reports
            .iter()
            .filter_map(|r| self.reconcile_replica(server, r))
            .collect();
        self.update_safe_mode();
        adopt
    }

    /// A replica found corrupt (by its chunkserver or a client): drop it, delete it, and
    /// let the scan re-replicate.
    pub fn report_bad(&mut self, server: ChunkserverId, chunk: ChunkId, v: ChunkVersion) {
        if self.ns.chunk(chunk).is_none() {
            return;
        }
        tracing::warn!(chunk_id = %chunk, server = %server, version = %v, "replica reported bad");
        if let Some(s) = self.cmap.server_mut(server) {
            s.corrupt_found += 1;
        }
        self.metrics.count(crate::metrics::Rate::CorruptReplicas, 1);
        self.cmap.mark_bad(server, chunk);
        self.queue_delete(server, chunk, v);
    }

    /// Declares a server dead: locations dropped, leases through it revoked.
    pub fn server_died(&mut self, server: ChunkserverId) {
        self.cmap.mark_dead(server);
        let revoked = self.leases.revoke_server(server);
        let addr = self.cmap.addr(server).unwrap_or("?").to_string();
        tracing::info!(server = %server, %addr, revoked_leases = revoked, "chunkserver declared dead");
    }

    /// (chunks with at least one current replica reported, chunks that need one). A chunk
    /// the file ends before holds nothing acknowledged (a write that died between the
    /// allocation and its commit, or one in flight at a failover): it needs no replica.
    pub fn safe_mode_counts(&self) -> (u64, u64) {
        let holds_data = |m: &crate::namespace::ChunkMeta| {
            self.ns.inode(m.inode).is_some_and(|ino| match &ino.kind {
                crate::namespace::NodeKind::File { size, .. } => {
                    *size > m.index.saturating_mul(self.chunk_size_bytes)
                }
                _ => true,
            })
        };
        let (mut reported, mut total) = (0u64, 0u64);
        for (c, m) in self.ns.chunks().filter(|(_, m)| holds_data(m)) {
            total += 1;
            if !self.cmap.current_replicas(*c, m.version).is_empty() {
                reported += 1;
            }
        }
        (reported, total)
    }

    /// Leaves safe mode once enough chunks have a current replica (never a manual one,
    /// never on a standby, which decides nothing until it takes over).
    pub fn update_safe_mode(&mut self) {
        if !self.safe_mode || self.safe_mode_manual || self.standby {
            return;
        }
        let (reported, total) = self.safe_mode_counts();
        if total == 0 || reported * 1000 >= total * SAFE_MODE_THRESHOLD_PER_MILLE {
            self.safe_mode = false;
            tracing::info!(total, reported, "leaving safe mode");
        }
    }

    /// Replicas counted for replication health: (live current ones on servers that are
    /// not draining, expected). Replicas on decommissioning servers still serve reads but
    /// do not count, which is what makes the scan copy them elsewhere.
    pub fn health(&self, chunk: ChunkId) -> (u32, u32) {
        let live = self
            .ns
            .chunk(chunk)
            .map(|m| self.cmap.counted_replicas(chunk, m.version).len() as u32)
            .unwrap_or(0);
        (live, self.expected_replication(chunk))
    }
}
