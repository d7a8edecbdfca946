//! The standby: it joins the primary's cluster, follows its op-log stream (applying every
//! record to its own state and making it durable in its own log before acknowledging it),
//! and takes over when the primary has not been heard healthy for `failover_timeout` (or
//! when told to in a handover).
//!
//! Catching up: a standby whose newest records the primary does not have (a deposed
//! primary) cuts its log back to the last record both share, or, when a checkpoint of its
//! own already covers records past that point, loads the primary's checkpoint instead; so
//! does a standby whose records the primary no longer keeps, or whose own log is damaged
//! (the primary's log is the authoritative copy: it holds every acknowledged record).
//!
//! Promotion asks the witnesses for the next epoch; they grant it only when the primary's
//! lease has expired and its last mark names this standby as in sync. The first record the
//! new primary writes is `NewEpoch`.

use std::time::{Duration, Instant};

use rdfs_proto::dataplane::WitnessOp;
use rdfs_proto::ids::Epoch;
use rdfs_proto::limits::MAX_GRPC_MESSAGE_BYTES;
use rdfs_proto::pb::master_client::MasterClient;
use rdfs_proto::pb::master_ha_client::MasterHaClient;
use rdfs_proto::pb::{
    ClusterStatusRequest, EpochStart, FetchCheckpointRequest, FollowHello, FollowKind,
    FollowRequest, FollowResponse,
};
use rdfs_proto::ErrorCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use super::Role;
use crate::error::MasterError;
use crate::identity::{self, ClusterIdentity};
use crate::namespace::Op;
use crate::oplog::{self, LogCmd};
use crate::runtime::{self, Ctx, Exit, MasterCell};
use crate::state::Master;
use crate::{checkpoint, fsutil};

/// Deadline of connecting to the primary.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of one checkpoint transfer.
const CHECKPOINT_FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// Acks queued towards the primary.
const ACK_QUEUE: usize = 16;
/// Where a damaged or diverged local log is moved before the standby starts again.
const SET_ASIDE_DIR: &str = "set-aside";

/// Why a session with the primary ended.
enum End {
    Shutdown,
    /// Cut the local log back to this seq, then follow again.
    Truncate(u64),
    /// Load the primary's checkpoint, then follow again.
    NeedCheckpoint,
    /// Told to take over (handover).
    TakeOver,
    /// The witnesses granted the next epoch and it is logged: serve as primary.
    Promoted,
    /// The stream broke or went silent; reconnect (and maybe promote).
    Lost(String),
    /// A record did not apply: the local state is not a prefix of the primary's.
    Diverged(String),
    /// The local log failed: stop.
    Fatal(MasterError),
}

/// Runs as a standby of `primary` until shutdown, a fatal error, or promotion.
pub async fn run(
    ctx: &Ctx,
    primary: String,
    cell: &MasterCell,
    shutdown: &CancellationToken,
) -> Result<Exit, MasterError> {
    let Some(ident) = join_cluster(ctx, &primary, shutdown).await? else {
        return Ok(Exit::Shutdown);
    };
    loop {
        let role = Role::Standby {
            primary: primary.clone(),
        };
        let mut running = match runtime::open(ctx, ident.clone(), role).await {
            Ok(r) => r,
            Err(e @ (MasterError::Corrupt { .. } | MasterError::Recovery(_))) => {
                tracing::error!(error = %e, "the local op log is damaged; setting it aside and loading the primary's checkpoint");
                set_aside(&ctx.dir)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        cell.set(running.master.clone());
        runtime::spawn_checkpoints(&mut running);
        runtime::spawn_dashboard(ctx, &mut running);
        let end = follow(&running.master, &primary, shutdown).await;
        running.stop_tasks().await;
        match end {
            End::Shutdown => {
                running.close(true).await?;
                return Ok(Exit::Shutdown);
            }
            End::Promoted => return Ok(Exit::Promoted(running)),
            End::TakeOver | End::Lost(_) => {
                // follow() handles these itself; start over to be safe.
                tracing::error!("standby session ended unexpectedly; restarting it");
                running.close(false).await?;
            }
            End::Truncate(to) => {
                running.close(false).await?;
                cut_back(&ctx.dir, to)?;
            }
            End::NeedCheckpoint => {
                running.close(false).await?;
                if !load_checkpoint(ctx, &primary, &ident, shutdown).await? {
                    return Ok(Exit::Shutdown);
                }
            }
            End::Diverged(why) => {
                tracing::error!(reason = %why, "the local state diverged from the primary's; loading its checkpoint");
                running.close(false).await?;
                set_aside(&ctx.dir)?;
            }
            End::Fatal(e) => {
                let _ = running.close(false).await;
                return Err(e);
            }
        }
    }
}

/// Follows until promoted, told to cut back or load a checkpoint, or shut down (never
/// returns `TakeOver` or `Lost`: it handles those itself).
async fn follow(
    master: &std::sync::Arc<Master>,
    primary: &str,
    shutdown: &CancellationToken,
) -> End {
    let timing = master.ha.timing;
    let mut last_heard = Instant::now();
    let mut take_over = false;
    let mut last_refusal = String::new();
    loop {
        if shutdown.is_cancelled() {
            return End::Shutdown;
        }
        if take_over || last_heard.elapsed() >= timing.failover_timeout {
            match promote(master).await {
                Ok(()) => return End::Promoted,
                Err(why) => {
                    if why != last_refusal {
                        tracing::warn!(reason = %why, "cannot take over yet");
                        last_refusal = why;
                    }
                }
            }
        }
        let end = tokio::select! {
            e = session(master, primary, &mut last_heard) => e,
            _ = shutdown.cancelled() => End::Shutdown,
        };
        match end {
            End::TakeOver => take_over = true,
            End::Lost(why) => {
                tracing::debug!(primary, reason = %why, "not following the primary");
                tokio::select! {
                    () = tokio::time::sleep(timing.renew_every) => {}
                    _ = shutdown.cancelled() => return End::Shutdown,
                }
            }
            other => return other,
        }
    }
}

fn ha_client(addr: &str) -> Result<MasterHaClient<Channel>, String> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let ch = Endpoint::from_shared(uri)
        .map_err(|e| format!("primary address {addr}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_lazy();
    Ok(MasterHaClient::new(ch)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES))
}

/// One Follow stream: applies records, acks them, notes when the primary was last heard
/// healthy (holding its lease).
async fn session(master: &std::sync::Arc<Master>, primary: &str, last_heard: &mut Instant) -> End {
    let timing = master.ha.timing;
    let mut client = match ha_client(primary) {
        Ok(c) => c,
        Err(e) => return End::Lost(e),
    };
    let hello = {
        let st = master.state.lock();
        FollowHello {
            cluster_id: master.identity.cluster_id.clone(),
            standby_id: master.ha.me_id.clone(),
            standby_addr: master.ha.me_addr.clone(),
            last_seq: st.last_seq,
            epochs: st
                .ns
                .ha()
                .history()
                .into_iter()
                .map(|(e, s)| EpochStart {
                    epoch: e.0,
                    start_seq: s,
                })
                .collect(),
        }
    };
    let (tx, rx) = mpsc::channel(ACK_QUEUE);
    let first = FollowRequest {
        hello: Some(hello),
        acked_seq: 0,
    };
    if tx.send(first).await.is_err() {
        return End::Lost("ack queue closed".into());
    }
    let call = client.follow(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut inbound = match tokio::time::timeout(timing.failover_timeout, call).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) if ErrorCode::of_status(&s) == ErrorCode::ClusterMismatch => {
            return End::Fatal(MasterError::Config(format!(
                "the primary at {primary} serves another cluster: {}",
                s.message()
            )))
        }
        Ok(Err(s)) => return End::Lost(format!("follow {primary}: {}", s.message())),
        Err(_) => return End::Lost(format!("follow {primary}: no answer")),
    };
    loop {
        let msg = match tokio::time::timeout(timing.failover_timeout, inbound.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return End::Lost("the primary ended the stream".into()),
            Ok(Err(s)) => return End::Lost(format!("stream: {}", s.message())),
            Err(_) => return End::Lost("the primary went silent".into()),
        };
        if msg.lease_valid {
            *last_heard = Instant::now();
        }
        match FollowKind::try_from(msg.kind) {
            Ok(FollowKind::Records) => {
                let last = msg.last_seq;
                if let Err(end) = apply(master, msg).await {
                    return end;
                }
                let ack = FollowRequest {
                    hello: None,
                    acked_seq: last,
                };
                if tx.send(ack).await.is_err() {
                    return End::Lost("ack stream closed".into());
                }
            }
            Ok(FollowKind::Keepalive) => {}
            Ok(FollowKind::Truncate) => return End::Truncate(msg.truncate_to),
            Ok(FollowKind::NeedCheckpoint) => return End::NeedCheckpoint,
            Ok(FollowKind::TakeOver) => return End::TakeOver,
            _ => return End::Lost(format!("unknown stream message kind {}", msg.kind)),
        }
    }
}

/// Applies and logs one batch of followed records; returns once they are durable here.
async fn apply(master: &Master, msg: FollowResponse) -> Result<(), End> {
    let after = msg.first_seq.saturating_sub(1);
    let run = oplog::decode_run(&msg.records, after).map_err(End::Diverged)?;
    if run.last().map(|r| r.0) != Some(msg.last_seq) {
        return Err(End::Diverged(format!(
            "batch {}..={} holds other records",
            msg.first_seq, msg.last_seq
        )));
    }
    let permit = master
        .log
        .tx
        .reserve()
        .await
        .map_err(|_| End::Fatal(MasterError::Log("op-log writer stopped".into())))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let mut st = master.state.lock();
        for (seq, op) in &run {
            st.apply_followed(*seq, op).map_err(End::Diverged)?;
        }
        let ops: Vec<Op> = run.iter().map(|r| r.1.clone()).collect();
        master.note_applied(&ops, msg.first_seq);
        permit.send(LogCmd::Append {
            bytes: msg.records,
            first_seq: msg.first_seq,
            last_seq: msg.last_seq,
            done: tx,
        });
    }
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(End::Fatal(MasterError::Log(e))),
        Err(_) => Err(End::Fatal(MasterError::Log("op-log writer stopped".into()))),
    }
}

/// Asks the witnesses for the next epoch; on a grant, becomes primary and logs `NewEpoch`.
async fn promote(master: &Master) -> Result<(), String> {
    let timing = master.ha.timing;
    let epoch = Epoch(master.state.lock().ns.epoch().0 + 1);
    let op = WitnessOp::Promote {
        epoch,
        candidate_id: master.ha.me_id.clone(),
        candidate_addr: master.ha.me_addr.clone(),
        lease_ms: timing.lease.as_millis() as u64,
    };
    let sent = Instant::now();
    let round = master.ha.witness.ask(op).await;
    if !round.promoted() {
        return Err(format!(
            "{} of {} witnesses granted epoch {epoch} (need {}): {}",
            round.granted,
            round.members,
            round.majority(),
            round.refusals.join("; ")
        ));
    }
    tracing::info!(%epoch, granted = round.granted, members = round.members, "promoted by the witnesses");
    master.ha.promoted(epoch, sent + timing.valid_for);
    {
        let mut st = master.state.lock();
        st.standby = false;
    }
    let logged = master
        .mutate_ops(
            |st| {
                Ok(vec![Op::NewEpoch {
                    epoch,
                    start_seq: st.last_seq + 1,
                }])
            },
            |_| (),
        )
        .await;
    if let Err(e) = logged {
        // The promise stands (a retry asks for the same epoch again); this incarnation
        // does not serve.
        master.ha.set_role(Role::Starting);
        master.state.lock().standby = true;
        return Err(format!("logging epoch {epoch}: {}", e.message()));
    }
    Ok(())
}

/// The cluster identity: the local one, or (empty directory) the primary's.
async fn join_cluster(
    ctx: &Ctx,
    primary: &str,
    shutdown: &CancellationToken,
) -> Result<Option<ClusterIdentity>, MasterError> {
    if let Some(id) = identity::read(&ctx.dir)? {
        return Ok(Some(id));
    }
    loop {
        match primary_identity(primary).await {
            Ok(id) => {
                identity::init_with(&ctx.dir, &id)?;
                return Ok(Some(id));
            }
            Err(e) => {
                tracing::warn!(primary, error = %e, "waiting for the primary to join its cluster")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.timing.renew_every) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
    }
}

async fn primary_identity(primary: &str) -> Result<ClusterIdentity, String> {
    let uri = format!("http://{primary}");
    let ch = Endpoint::from_shared(uri)
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CONNECT_TIMEOUT)
        .connect_lazy();
    let status = MasterClient::new(ch)
        .cluster_status(ClusterStatusRequest {})
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    if status.cluster_id.is_empty() || status.chunk_size == 0 {
        return Err("the primary has no identity yet".into());
    }
    Ok(ClusterIdentity {
        cluster_id: status.cluster_id,
        chunk_size: status.chunk_size,
    })
}

/// Cuts the local log back to `to` (or sets everything aside when a checkpoint of ours
/// already covers records past it).
fn cut_back(dir: &std::path::Path, to: u64) -> Result<(), MasterError> {
    let newest = checkpoint::list(&checkpoint::checkpoint_dir(dir))?
        .first()
        .map(|c| c.0);
    if newest.is_some_and(|c| c > to) {
        tracing::warn!(to, checkpoint = ?newest, "a local checkpoint covers records the primary does not have; loading the primary's instead");
        return set_aside(dir);
    }
    tracing::warn!(
        to,
        "cutting the local op log back to the last record shared with the primary"
    );
    oplog::truncate_after(&oplog::segment_dir(dir), to)
}

/// Moves the op log and checkpoints aside (kept for inspection, never read again), so the
/// next start loads the primary's checkpoint.
fn set_aside(dir: &std::path::Path) -> Result<(), MasterError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let aside = dir.join(SET_ASIDE_DIR).join(stamp.to_string());
    std::fs::create_dir_all(&aside).map_err(|e| MasterError::io(&aside, "creating", e))?;
    for sub in [oplog::segment_dir(dir), checkpoint::checkpoint_dir(dir)] {
        if sub.exists() {
            let name = sub
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            let to = aside.join(name);
            std::fs::rename(&sub, &to).map_err(|e| MasterError::io(&sub, "setting aside", e))?;
        }
    }
    fsutil::fsync_dir(&aside)?;
    fsutil::fsync_dir(dir)
}

/// Replaces the local state with the primary's newest checkpoint. False on shutdown.
async fn load_checkpoint(
    ctx: &Ctx,
    primary: &str,
    ident: &ClusterIdentity,
    shutdown: &CancellationToken,
) -> Result<bool, MasterError> {
    loop {
        let fetched = tokio::select! {
            r = tokio::time::timeout(CHECKPOINT_FETCH_TIMEOUT, fetch_checkpoint(primary, ident)) => {
                r.unwrap_or_else(|_| Err("timed out".into()))
            }
            _ = shutdown.cancelled() => return Ok(false),
        };
        match fetched {
            Ok((seq, image)) => {
                checkpoint::decode(&image).map_err(|e| {
                    MasterError::Recovery(format!("checkpoint from {primary}: {e}"))
                })?;
                set_aside(&ctx.dir)?;
                let dir = checkpoint::checkpoint_dir(&ctx.dir);
                std::fs::create_dir_all(&dir).map_err(|e| MasterError::io(&dir, "creating", e))?;
                checkpoint::write(&dir, seq, &image)?;
                tracing::info!(seq, bytes = image.len(), "loaded the primary's checkpoint");
                return Ok(true);
            }
            Err(e) => tracing::warn!(primary, error = %e, "fetching the primary's checkpoint"),
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.timing.failover_timeout) => {}
            _ = shutdown.cancelled() => return Ok(false),
        }
    }
}

async fn fetch_checkpoint(
    primary: &str,
    ident: &ClusterIdentity,
) -> Result<(u64, Vec<u8>), String> {
    let mut client = ha_client(primary)?;
    let mut stream = client
        .fetch_checkpoint(FetchCheckpointRequest {
            cluster_id: ident.cluster_id.clone(),
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let mut image = Vec::new();
    let mut seq = None;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| s.message().to_string())?
    {
        if *seq.get_or_insert(chunk.seq) != chunk.seq {
            return Err("checkpoint chunks of two checkpoints".into());
        }
        if image.len() + chunk.data.len() > checkpoint::MAX_CHECKPOINT_BYTES as usize {
            return Err("checkpoint larger than the limit".into());
        }
        image.extend_from_slice(&chunk.data);
    }
    let seq = seq.ok_or("empty checkpoint stream")?;
    Ok((seq, image))
}
