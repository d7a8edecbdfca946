//! The master loop: find a master that answers (trying each configured address in turn,
//! backing off), `Register` with a full block report, then `Heartbeat` every interval
//! (at once when a bad replica needs reporting) and a full `BlockReport` every
//! `block_report_interval`, executing the commands that come back.
//!
//! Invariants:
//! - A master serving another cluster is refused and nothing is deleted: `run` fails.
//! - A master whose epoch is below the highest we have seen is deposed: we look elsewhere.
//! - Reports that did not reach a master are kept for the next heartbeat.
//! - The data plane keeps serving whatever happens here (until a fatal error).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdfs_proto::dataplane::ChunkInfo;
use rdfs_proto::ids::{ChunkId, ChunkVersion, Epoch};
use rdfs_proto::limits::{validate_chunk_size, MAX_GRPC_MESSAGE_BYTES};
use rdfs_proto::pb::master_client::MasterClient;
use rdfs_proto::pb::{self, command::Kind};
use rdfs_proto::ErrorCode;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

use crate::error::ChunkserverError;
use crate::node::{Node, Reports};
use crate::replicate::{ReplicateJob, Replicator};

/// Deadline for connecting to a master.
const MASTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline for one control-plane RPC.
const MASTER_RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest wait between attempts to reach a master.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Floor on the heartbeat interval a master may ask for.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);

/// What the master loop needs to know.
pub struct MasterLoopConfig {
    pub masters: Vec<String>,
    pub data_addr: String,
    pub block_report_interval: Duration,
}

/// Why a session with one master ended.
enum SessionEnd {
    Shutdown,
    /// Try again (maybe another master) after a back-off.
    Retry(String),
    Fatal(ChunkserverError),
}

impl From<tonic::Status> for SessionEnd {
    fn from(s: tonic::Status) -> Self {
        SessionEnd::Retry(format!("{:?}: {}", ErrorCode::of_status(&s), s.message()))
    }
}

/// Bounds a whole control-plane call. The endpoint's own timeout does not cover the
/// channel's readiness wait, which can hang forever after the master is killed mid-call
/// (tonic waits on a reconnect that never completes), so every call goes through this.
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(MASTER_RPC_TIMEOUT, call).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer from the master within {MASTER_RPC_TIMEOUT:?}"
        ))),
    }
}

/// Runs until `shutdown` (Ok) or a fatal error such as a cluster id mismatch. Every master
/// in the list gets its own session (registration, heartbeats, block reports), so a standby
/// knows every replica location the moment it takes over; only the commands of a master
/// that says it is active, at an epoch no lower than ours, are obeyed.
pub async fn run(
    node: Arc<Node>,
    cfg: MasterLoopConfig,
    shutdown: CancellationToken,
) -> Result<(), ChunkserverError> {
    if cfg.masters.is_empty() {
        return Err(ChunkserverError::NoMasters);
    }
    node.set_master_count(cfg.masters.len());
    let replicator = Replicator::start(node.clone(), shutdown.clone());
    let cfg = Arc::new(cfg);
    // A fatal error in one session (another cluster's master) stops them all.
    let stop = shutdown.child_token();
    let mut sessions = tokio::task::JoinSet::new();
    for index in 0..cfg.masters.len() {
        let (node, cfg, replicator, stop) =
            (node.clone(), cfg.clone(), replicator.clone(), stop.clone());
        sessions.spawn(async move {
            let r = master_loop(&node, &cfg, index, &replicator, &stop).await;
            if r.is_err() {
                stop.cancel();
            }
            r
        });
    }
    let mut result = Ok(());
    while let Some(joined) = sessions.join_next().await {
        match joined {
            Ok(Err(e)) if result.is_ok() => result = Err(e),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "master session task failed"),
        }
    }
    result
}

/// Keeps a session with master `index` alive (backing off between attempts).
async fn master_loop(
    node: &Arc<Node>,
    cfg: &MasterLoopConfig,
    index: usize,
    replicator: &Replicator,
    shutdown: &CancellationToken,
) -> Result<(), ChunkserverError> {
    let addr = &cfg.masters[index];
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut session = Session {
            node,
            cfg,
            addr,
            index,
            replicator,
            shutdown,
            active: AtomicBool::new(false),
        };
        let started = Instant::now();
        match session.run().await {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Fatal(e) => {
                tracing::error!(master = %addr, error = %e, "giving up on the masters");
                return Err(e);
            }
            SessionEnd::Retry(why) => {
                tracing::warn!(master = %addr, reason = %why, "master unavailable; retrying")
            }
        }
        // A session that lasted a while was healthy: start backing off afresh.
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

struct Session<'a> {
    node: &'a Arc<Node>,
    cfg: &'a MasterLoopConfig,
    addr: &'a str,
    /// Which master of the list: selects this session's report queue.
    index: usize,
    replicator: &'a Replicator,
    shutdown: &'a CancellationToken,
    /// The master's last answer said it is active at an epoch no lower than ours.
    active: AtomicBool,
}

/// What a registration gave us.
struct Registered {
    id: u64,
    interval: Duration,
}

impl Session<'_> {
    async fn run(&mut self) -> SessionEnd {
        let mut client = match connect(self.addr).await {
            Ok(c) => c,
            Err(e) => return SessionEnd::Retry(e),
        };
        let mut reg = match self.register(&mut client).await {
            Ok(r) => r,
            Err(end) => return end,
        };
        let mut last_block_report = Instant::now();
        let mut report_now = self.node.report_now.subscribe();
        loop {
            tokio::select! {
                () = tokio::time::sleep(reg.interval) => {}
                _ = report_now.changed() => {}
                _ = self.shutdown.cancelled() => return SessionEnd::Shutdown,
            }
            match self.heartbeat(&mut client, reg.id).await {
                Ok(true) => {}
                Ok(false) => match self.register(&mut client).await {
                    Ok(r) => reg = r,
                    Err(end) => return end,
                },
                Err(end) => return end,
            }
            if last_block_report.elapsed() >= self.cfg.block_report_interval {
                if let Err(end) = self.block_report(&mut client, reg.id).await {
                    return end;
                }
                last_block_report = Instant::now();
            }
        }
    }

    async fn register(
        &mut self,
        client: &mut MasterClient<Channel>,
    ) -> Result<Registered, SessionEnd> {
        let st = self.node.state.get();
        let store = &self.node.store;
        // The full report supersedes pending added/removed; bad ones still need reporting.
        let pending = self.node.take_reports_for(self.index);
        self.node.restore_reports_for(
            self.index,
            Reports {
                bad: pending.bad,
                ..Reports::default()
            },
        );
        let req = pb::RegisterRequest {
            cluster_id: st.cluster_id.clone(),
            data_addr: self.cfg.data_addr.clone(),
            capacity: store.capacity_bytes(),
            used: store.used_bytes(),
            chunks: store.list().into_iter().map(report).collect(),
            highest_epoch: self.node.highest_epoch().0,
            node_id: st.node_id.clone(),
        };
        let resp = match bounded(client.register(req)).await {
            Ok(r) => r,
            Err(s) if ErrorCode::of_status(&s) == ErrorCode::ClusterMismatch => {
                return Err(self.mismatch(&st.cluster_id, s.message()));
            }
            Err(s) => return Err(s.into()),
        };
        self.adopt_identity(&st.cluster_id, &resp).await?;
        validate_chunk_size(resp.chunk_size).map_err(SessionEnd::Retry)?;
        store.set_max_chunk_bytes(resp.chunk_size);
        let interval =
            Duration::from_millis(resp.heartbeat_interval_ms).max(MIN_HEARTBEAT_INTERVAL);
        tracing::info!(
            master = %self.addr, chunkserver_id = resp.chunkserver_id, cluster_id = %resp.cluster_id,
            chunk_size = resp.chunk_size, "registered"
        );
        let obey = self.obey(resp.standby, Epoch(resp.epoch));
        self.execute(resp.commands, obey).await;
        Ok(Registered {
            id: resp.chunkserver_id,
            interval,
        })
    }

    /// Checks (or, on a fresh directory, adopts) the cluster id and the master's epoch.
    async fn adopt_identity(
        &self,
        ours: &str,
        resp: &pb::RegisterResponse,
    ) -> Result<(), SessionEnd> {
        if resp.cluster_id.is_empty() {
            return Err(SessionEnd::Retry("master sent an empty cluster id".into()));
        }
        if !ours.is_empty() && ours != resp.cluster_id {
            return Err(self.mismatch(ours, &resp.cluster_id));
        }
        self.accept_epoch(Epoch(resp.epoch)).await?;
        if ours.is_empty() {
            let state = self.node.state.clone();
            let id = resp.cluster_id.clone();
            tokio::task::spawn_blocking(move || state.set_cluster_id(&id))
                .await
                .map_err(|e| SessionEnd::Fatal(ChunkserverError::Task(e.to_string())))?
                .map_err(|e| SessionEnd::Fatal(e.into()))?;
            tracing::info!(cluster_id = %resp.cluster_id, "joined cluster");
        }
        Ok(())
    }

    fn mismatch(&self, ours: &str, theirs: &str) -> SessionEnd {
        SessionEnd::Fatal(ChunkserverError::ClusterMismatch {
            ours: ours.to_string(),
            theirs: theirs.to_string(),
            master: self.addr.to_string(),
        })
    }

    /// A higher epoch is recorded durably. A master below our highest epoch was deposed:
    /// it keeps getting reports (it may be rejoining as a standby) but no obedience.
    async fn accept_epoch(&self, epoch: Epoch) -> Result<(), SessionEnd> {
        match self.node.check_epoch(epoch).await {
            Ok(()) => Ok(()),
            Err(e) if e.code == ErrorCode::StaleEpoch => Ok(()),
            Err(e) => Err(SessionEnd::Retry(format!(
                "master {}: {}",
                self.addr, e.message
            ))),
        }
    }

    /// One heartbeat. `Ok(false)`: the master asks us to register again.
    async fn heartbeat(
        &mut self,
        client: &mut MasterClient<Channel>,
        id: u64,
    ) -> Result<bool, SessionEnd> {
        let store = &self.node.store;
        let reports = self.node.take_reports_for(self.index);
        if reports.overflowed {
            // Too much piled up while this master was away: a full report instead.
            return Ok(false);
        }
        let req = pb::HeartbeatRequest {
            chunkserver_id: id,
            capacity: store.capacity_bytes(),
            used: store.used_bytes(),
            chunk_count: store.chunk_count(),
            added: reports.added.iter().cloned().map(report).collect(),
            removed: reports.removed.iter().map(|c| c.0).collect(),
            bad: reports.bad.iter().cloned().map(report).collect(),
            no_space: store.no_space(),
            active_transfers: self.replicator.active_transfers(),
            scrub: Some(self.node.scrub.progress()),
        };
        let resp = match bounded(client.heartbeat(req)).await {
            Ok(r) => r,
            Err(s) => {
                self.node.restore_reports_for(self.index, reports);
                return Err(s.into());
            }
        };
        if resp.reregister {
            tracing::info!(master = %self.addr, "master asked for a new registration");
            return Ok(false);
        }
        self.accept_epoch(Epoch(resp.epoch)).await?;
        let obey = self.obey(resp.standby, Epoch(resp.epoch));
        self.execute(resp.commands, obey).await;
        Ok(true)
    }

    async fn block_report(
        &mut self,
        client: &mut MasterClient<Channel>,
        id: u64,
    ) -> Result<(), SessionEnd> {
        let chunks = self.node.store.list().into_iter().map(report).collect();
        let resp = bounded(client.block_report(pb::BlockReportRequest {
            chunkserver_id: id,
            chunks,
        }))
        .await?;
        // A block report answer carries no epoch: obey only while this master is active
        // at the highest epoch we know (its last heartbeat said so).
        let obey = !resp.standby && self.active.load(Ordering::Relaxed);
        self.execute(resp.commands, obey).await;
        Ok(())
    }

    /// Whether commands from this master are obeyed: it must be the active master, at an
    /// epoch no lower than the highest we have seen (a deposed one may still answer).
    fn obey(&self, standby: bool, epoch: Epoch) -> bool {
        let active = !standby && epoch >= self.node.highest_epoch();
        self.active.store(active, Ordering::Relaxed);
        active
    }

    async fn execute(&self, commands: Vec<pb::Command>, obey: bool) {
        if !obey {
            if !commands.is_empty() {
                tracing::warn!(master = %self.addr, n = commands.len(), "ignoring commands from a master that is not active");
            }
            return;
        }
        for cmd in commands {
            match cmd.kind {
                Some(Kind::Delete(d)) => {
                    delete_chunk(self.node, ChunkId(d.chunk_id), ChunkVersion(d.version)).await
                }
                Some(Kind::Replicate(r)) => self.replicator.submit(ReplicateJob {
                    chunk_id: ChunkId(r.chunk_id),
                    version: ChunkVersion(r.version),
                    target: r.target,
                }),
                None => tracing::warn!("empty command from the master ignored"),
            }
        }
    }
}

/// Deletes a replica on the master's word, unless ours is newer than the one it means.
async fn delete_chunk(node: &Arc<Node>, id: ChunkId, version: ChunkVersion) {
    let span = tracing::info_span!("delete", chunk_id = %id, version = %version);
    async move {
        match node.store.state(id) {
            Ok(st) if st.version > version => {
                tracing::warn!(held = %st.version, "not deleting a replica newer than the command's");
                return;
            }
            Ok(_) => {}
            // Already gone: say so, so the master stops asking.
            Err(_) => return node.report_removed(id),
        }
        match node.blocking(move |s| s.delete(id)).await {
            Ok(_) => node.report_removed(id),
            Err(e) => tracing::warn!(error = %e, "delete failed"),
        }
    }
    .instrument(span)
    .await
}

fn report(c: ChunkInfo) -> pb::ChunkReport {
    pb::ChunkReport {
        chunk_id: c.chunk_id.0,
        version: c.version.0,
        size: c.len,
    }
}

async fn connect(addr: &str) -> Result<MasterClient<Channel>, String> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| format!("bad master address {addr}: {e}"))?
        .connect_timeout(MASTER_CONNECT_TIMEOUT)
        .timeout(MASTER_RPC_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    Ok(MasterClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES))
}
