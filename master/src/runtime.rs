//! One master incarnation at a time: opening the data directory into a [`Running`] master,
//! serving as primary until shutdown or deposition, and the [`MasterCell`] through which
//! the gRPC services reach whichever incarnation is current.
//!
//! A master switches roles in process: a standby that promotes keeps its state and log
//! writer and becomes primary; a deposed primary drops everything in memory (it may hold
//! records the new primary never had) and is rebuilt from disk as a standby.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use rdfs_proto::ErrorCode;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::config::MasterConfig;
use crate::error::MasterError;
use crate::ha::witness::{ChunkserverWitness, Members};
use crate::ha::{Ha, Role, Timing};
use crate::identity::ClusterIdentity;
use crate::state::{Master, State};
use crate::{checkpoint_task, oplog, recovery, retry_cache};

/// Longest wait for the op-log writer thread to finish.
const WRITER_JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a background task may take to notice a stop before it is aborted.
const TASK_STOP_GRACE: Duration = Duration::from_secs(2);
/// The scan pauses at least this many times its own length, so it holds the state lock at
/// most 1/(1+this) of the time however large the chunk map grows.
const SCAN_PAUSE_PER_SCAN_TIME: u32 = 4;
/// How often expired client sessions are dropped and orphans nobody holds are removed.
const SESSION_REAP_INTERVAL: Duration = Duration::from_secs(1);

/// What every incarnation of this master shares.
pub struct Ctx {
    pub config: MasterConfig,
    pub dir: PathBuf,
    /// This master's stable id (`MASTER_ID`).
    pub me_id: String,
    /// Where others reach this master.
    pub me_addr: String,
    pub timing: Timing,
    /// The dashboard's listening socket (`--http`); each incarnation serves a clone.
    pub http: Option<std::net::TcpListener>,
}

/// The current incarnation, for the gRPC services.
#[derive(Default)]
pub struct MasterCell {
    current: RwLock<Option<Arc<Master>>>,
}

impl MasterCell {
    pub fn set(&self, m: Arc<Master>) {
        *self.current.write() = Some(m);
    }

    pub fn clear(&self) {
        *self.current.write() = None;
    }

    /// The current master whatever its role (status, chunkserver calls).
    pub fn any(&self) -> Result<Arc<Master>, Status> {
        self.current
            .read()
            .clone()
            .ok_or_else(|| ErrorCode::Unavailable.status("master is starting; retry"))
    }

    /// The current master if it is the primary.
    pub fn primary(&self) -> Result<Arc<Master>, Status> {
        let m = self.any()?;
        m.ha.check_primary()?;
        Ok(m)
    }
}

/// An open master: its state, log writer and background tasks.
pub struct Running {
    pub master: Arc<Master>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    tasks: CancellationToken,
    handles: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops the background tasks of the current role.
    pub async fn stop_tasks(&mut self) {
        self.tasks.cancel();
        for mut t in self.handles.drain(..) {
            // A task in the middle of a mutation may wait for the commit gate (up to its
            // timeout) when the witnesses are already gone; its record is in the log either
            // way, so only the wait for the answer is cut short.
            if tokio::time::timeout(TASK_STOP_GRACE, &mut t).await.is_err() {
                t.abort();
                let _ = t.await;
            }
        }
        self.tasks = CancellationToken::new();
    }

    /// Stops everything; with `checkpoint`, writes one first (a clean shutdown; never for a
    /// deposed primary, whose unacknowledged records may be cut).
    pub async fn close(mut self, checkpoint: bool) -> Result<(), MasterError> {
        self.stop_tasks().await;
        let ckpt = if checkpoint {
            checkpoint_task::checkpoint(&self.master).await
        } else {
            Ok(())
        };
        self.master.ha.wake_all();
        let writer = self.writer.lock().take();
        stop_writer(&self.master, writer).await;
        ckpt
    }
}

/// Recovers the data directory into a master in `role` (its log writer running).
pub async fn open(
    ctx: &Ctx,
    identity: ClusterIdentity,
    role: Role,
) -> Result<Running, MasterError> {
    let dir = ctx.dir.clone();
    let rec = tokio::task::spawn_blocking(move || recovery::recover(&dir))
        .await
        .map_err(|e| MasterError::Recovery(format!("recovery task: {e}")))??;
    let (log, writer) = oplog::start_writer(
        &oplog::segment_dir(&ctx.dir),
        rec.last_segment.clone(),
        rec.last_seq + 1,
    )?;
    let standby = !matches!(role, Role::Primary);
    let mut st = State::new(rec.ns, rec.last_seq, ctx.config.replication);
    st.last_checkpoint_seq = rec.checkpoint_seq;
    st.orphan_grace_until = Instant::now() + ctx.config.session_ttl;
    st.standby = standby;
    st.chunk_size_bytes = identity.chunk_size;
    st.max_transfers_per_source = ctx.config.max_transfers_per_source;
    if standby {
        st.safe_mode = true;
    }
    let members = Arc::new(Members::from_log(&st.ns.ha().witnesses));
    let witness = Arc::new(ChunkserverWitness::new(
        identity.cluster_id.clone(),
        members.clone(),
        ctx.timing.rpc_timeout,
    ));
    let epoch = st.ns.epoch();
    let ha = Ha::new(
        ctx.me_id.clone(),
        ctx.me_addr.clone(),
        ctx.timing,
        witness,
        members,
        role,
        epoch,
    );
    let retry = retry_cache::RetryCache::default();
    for a in &rec.answers {
        retry.put(&a.client_id, a.call_id, &a.answer, a.seq);
    }
    let boot_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let master = Arc::new(Master {
        config: ctx.config.clone(),
        identity,
        state: parking_lot::Mutex::new(st),
        log,
        lease_serial: std::sync::atomic::AtomicU64::new(boot_ms),
        retry,
        started: Instant::now(),
        ha,
        witness_add: tokio::sync::Mutex::new(()),
    });
    tracing::info!(
        cluster_id = %master.identity.cluster_id,
        last_seq = rec.last_seq,
        epoch = %epoch,
        witnesses = master.ha.members.len(),
        role = ?master.ha.role(),
        "master state recovered"
    );
    Ok(Running {
        master,
        writer: Mutex::new(Some(writer)),
        tasks: CancellationToken::new(),
        handles: Vec::new(),
    })
}

/// How a role's run ended.
pub enum Exit {
    Shutdown,
    /// A newer primary exists at this address: rejoin as its standby.
    Deposed(String),
    /// This standby took over: serve as primary with the same state.
    Promoted(Running),
}

/// Serves as primary until shutdown or until deposed.
pub async fn primary(
    ctx: &Ctx,
    mut running: Running,
    cell: &MasterCell,
    shutdown: &CancellationToken,
) -> Result<Exit, MasterError> {
    let m = running.master.clone();
    {
        let mut st = m.state.lock();
        if st.standby {
            st.standby = false;
            st.safe_mode = st.ns.chunk_count() > 0;
            st.orphan_grace_until = Instant::now() + m.config.session_ttl;
            st.update_safe_mode();
        }
    }
    if !matches!(m.ha.role(), Role::Primary) {
        m.ha.set_role(Role::Primary);
    }
    cell.set(m.clone());
    tracing::info!(
        addr = %m.ha.me_addr,
        epoch = %m.ha.epoch(),
        safe_mode = m.state.lock().safe_mode,
        "serving as primary"
    );
    running.handles = spawn_primary_tasks(&m, &running.tasks);
    spawn_dashboard(ctx, &mut running);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = m.ha.deposed.cancelled() => {}
    }
    let deposed = m.ha.deposed_by();
    running.close(deposed.is_none()).await?;
    Ok(match deposed {
        Some(holder) => Exit::Deposed(holder),
        None => Exit::Shutdown,
    })
}

/// The dashboard (with `--http`), which both roles serve.
pub fn spawn_dashboard(ctx: &Ctx, running: &mut Running) {
    let Some(http) = &ctx.http else {
        return;
    };
    let listener = match http
        .try_clone()
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "dashboard listener");
            return;
        }
    };
    let (m, stop) = (running.master.clone(), running.tasks.clone());
    running.handles.push(tokio::spawn(async move {
        if let Err(e) = crate::dashboard::serve(m, listener, stop).await {
            tracing::error!(error = %e, "dashboard stopped");
        }
    }));
}

/// The checkpoint task, which both roles run.
pub fn spawn_checkpoints(running: &mut Running) {
    let m = running.master.clone();
    running
        .handles
        .push(tokio::spawn(checkpoint_task::run_periodic(
            m,
            running.tasks.clone(),
        )));
}

fn spawn_primary_tasks(master: &Arc<Master>, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
    let (m, s) = (master.clone(), stop.clone());
    let scan = tokio::spawn(async move {
        let mut pause = m.config.replication_scan_interval;
        loop {
            tokio::select! {
                _ = s.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
            // On a blocking thread: a long pass must not also take a runtime worker away
            // from tasks that do not need the state lock (lease renewals, the standby stream).
            let scanned = m.clone();
            let Ok(took) = tokio::task::spawn_blocking(move || {
                let timeout = scanned.config.heartbeat_timeout;
                let started = Instant::now();
                let mut st = scanned.state.lock();
                st.scan(started, timeout);
                // The scan holds the state lock: its length is how long metadata calls may stall.
                let took = started.elapsed();
                st.last_scan_duration = took;
                took
            })
            .await
            else {
                break;
            };
            // With millions of chunks one pass takes seconds; back to back, the lock (and a
            // runtime worker) would never be free for renewals, heartbeats and clients.
            pause = m
                .config
                .replication_scan_interval
                .max(took * SCAN_PAUSE_PER_SCAN_TIME);
        }
    });
    let ckpt = tokio::spawn(checkpoint_task::run_periodic(master.clone(), stop.clone()));
    let (m, s) = (master.clone(), stop.clone());
    let sessions = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SESSION_REAP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = s.cancelled() => break,
                _ = tick.tick() => {}
            }
            if !m.ha.is_primary() {
                continue;
            }
            if let Err(e) = m.reap_sessions(Instant::now()).await {
                tracing::warn!(error = %e, "removing released orphans failed");
            }
        }
    });
    let lease = tokio::spawn(crate::ha::manager::run(master.clone(), stop.clone()));
    let metrics = master.state.lock().metrics.clone();
    let s = stop.clone();
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::metrics::RATE_SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; the baseline is already taken
        loop {
            tokio::select! {
                _ = s.cancelled() => break,
                _ = tick.tick() => metrics.sample(),
            }
        }
    });
    let (m, s) = (master.clone(), stop.clone());
    let trash = tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::trash::sweep_interval(m.config.trash_grace));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = s.cancelled() => break,
                _ = tick.tick() => {}
            }
            match m.sweep_trash().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "expired trash entries purged"),
                // Safe mode refuses nothing here; a failed log stops the master anyway.
                Err(e) => tracing::warn!(error = %e, "purging expired trash failed"),
            }
        }
    });
    vec![scan, ckpt, sessions, lease, sampler, trash]
}

/// Tells the writer thread to stop after everything queued, and waits for it.
async fn stop_writer(master: &Master, writer: Option<std::thread::JoinHandle<()>>) {
    let Some(writer) = writer else {
        return;
    };
    if let Ok(permit) = master.log.tx.reserve().await {
        permit.send(oplog::LogCmd::Stop);
    }
    let join = tokio::task::spawn_blocking(move || writer.join());
    if tokio::time::timeout(WRITER_JOIN_TIMEOUT, join)
        .await
        .is_err()
    {
        tracing::warn!("op-log writer did not stop in time");
    }
}
