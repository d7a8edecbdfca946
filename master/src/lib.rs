//! rdfs-master: the metadata server.
//!
//! # Layout
//! - [`config`]: [`MasterConfig`] and its defaults.
//! - [`namespace`]: the pure inode tree and the [`namespace::Op`]s that change it.
//! - [`oplog`], [`checkpoint`], [`recovery`], [`identity`]: durability on disk.
//! - `state`: the shared state behind one lock and the mutation path (log before answer).
//! - `chunk_map`, `chunkservers`, `placement`, `lease`, `write`, `replication`, `fsck`:
//!   chunk locations, chunkserver calls, leases and version bumps, re-replication.
//! - `service`: the tonic `Master` and `MasterHa` services; `admin`: safe mode,
//!   decommission, balance, setrep; `balance`: the balancer; `status`, `metrics`: cluster
//!   status and counters.
//! - [`dashboard`]: the HTTP dashboard, JSON API and `/metrics` (only with `--http`).
//! - [`ha`]: the hot standby, the witness lease, failover and fencing; `runtime`: one
//!   incarnation (primary or standby) at a time.
//!
//! [`run`] locks the data directory and serves it as primary or standby until shutdown,
//! changing roles in process; a clean stop writes a checkpoint.

mod admin;
pub mod balance;
mod checkpoint_task;
mod chunk_map;
mod chunkservers;
mod fsck;
mod fsutil;
mod handles;
mod inode_ops;
mod lease;
mod metrics;
mod placement;
mod replication;
mod retry_cache;
mod runtime;
mod service;
mod snapshot;
mod state;
mod status;
mod trash;
mod write;

pub mod checkpoint;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod ha;
pub mod identity;
pub mod namespace;
pub mod oplog;
pub mod recovery;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use rdfs_proto::limits::MAX_GRPC_MESSAGE_BYTES;
use rdfs_proto::pb::master_ha_server::MasterHaServer;
use rdfs_proto::pb::master_server::MasterServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::MasterConfig;
pub use error::MasterError;

use crate::ha::{Role, Timing};
use crate::runtime::{Ctx, Exit, MasterCell};
use crate::service::{EpochLayer, HaService, MasterService};

/// Runs a master on `listener` until `shutdown` is cancelled; then checkpoints and returns.
pub async fn run(
    config: MasterConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    run_with_http(config, listener, None, shutdown).await
}

/// Like [`run`], also serving the dashboard on `http` when given.
///
/// Without `standby_of` the master starts as the primary (rejoining as a standby if the
/// witnesses say a newer primary exists); with it, as a hot standby of that primary. Roles
/// change in process; the listeners serve throughout.
pub async fn run_with_http(
    config: MasterConfig,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    config.validate()?;
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir)
        .map_err(|e| MasterError::io(&dir, "creating data directory", e))?;
    let _lock = identity::lock_dir(&dir)?;
    let me_id = identity::master_id(&dir)?;
    let me_addr = match &config.advertise_addr {
        Some(a) => a.clone(),
        None => listener
            .local_addr()
            .map_err(|e| MasterError::io(&dir, "reading the listen address", e))?
            .to_string(),
    };
    // Each incarnation serves the dashboard on its own clone of the listening socket.
    let http = match http {
        Some(l) => Some(
            l.into_std()
                .map_err(|e| MasterError::io(&dir, "dashboard listener", e))?,
        ),
        None => None,
    };
    let ctx = Ctx {
        timing: Timing::from_failover_timeout(config.failover_timeout),
        dir: dir.clone(),
        me_id,
        me_addr,
        config,
        http,
    };
    let cell = Arc::new(MasterCell::default());
    // A primary recovers before it listens (callers never see it half-open); a standby
    // listens at once (chunkservers report to it while it joins and catches up).
    let first = match &ctx.config.standby_of {
        Some(p) => Next::Standby(p.clone()),
        None => {
            let (ident, _fresh) = identity::open_or_init(&dir, ctx.config.chunk_size_bytes)?;
            let running = runtime::open(&ctx, ident, Role::Primary).await?;
            cell.set(running.master.clone());
            Next::Open(running)
        }
    };
    let server_stop = shutdown.child_token();
    let server = tokio::spawn(serve(cell.clone(), listener, server_stop.clone()));
    let result = run_roles(&ctx, &cell, first, &shutdown).await;
    cell.clear();
    server_stop.cancel();
    let served = server
        .await
        .map_err(|e| MasterError::Transport(format!("server task: {e}")))?;
    result?;
    served?;
    tracing::info!("master stopped");
    Ok(())
}

/// What the role loop runs next.
enum Next {
    /// Serve this open master as primary (recovered, or a standby that took over).
    Open(runtime::Running),
    Standby(String),
}

/// The role loop: primary ⇄ standby until shutdown.
async fn run_roles(
    ctx: &Ctx,
    cell: &MasterCell,
    mut next: Next,
    shutdown: &CancellationToken,
) -> Result<(), MasterError> {
    loop {
        let exit = match next {
            Next::Open(running) => runtime::primary(ctx, running, cell, shutdown).await?,
            Next::Standby(primary) => {
                cell.clear();
                ha::standby::run(ctx, primary, cell, shutdown).await?
            }
        };
        next = match exit {
            Exit::Shutdown => return Ok(()),
            Exit::Deposed(holder) => {
                tracing::warn!(new_primary = %holder, "deposed: rejoining as a standby");
                cell.clear();
                Next::Standby(holder)
            }
            Exit::Promoted(running) => Next::Open(running),
        };
    }
}

async fn serve(
    cell: Arc<MasterCell>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    let svc = MasterServer::new(MasterService { cell: cell.clone() })
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let ha_svc = MasterHaServer::new(HaService { cell: cell.clone() })
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    // `Server::tcp_nodelay` only applies to listeners tonic binds itself: set it on each
    // accepted socket, or Nagle holds back the tail of a reply until the client's delayed
    // ACK (40 ms on Linux), which made about one metadata call in three take 40+ ms.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |accepted| {
            if let Ok(stream) = &accepted {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
            }
            accepted
        },
    );
    tonic::transport::Server::builder()
        .layer(EpochLayer { cell })
        .add_service(svc)
        .add_service(ha_svc)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(|e| MasterError::Transport(e.to_string()))
}
