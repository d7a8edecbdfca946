//! Taking checkpoints: periodically, after `CHECKPOINT_EVERY_OPS` ops, and at shutdown.
//!
//! Under the state lock: encode the namespace at `last_seq` and queue a log rotation to
//! `last_seq + 1` (so later records land in a new segment). Then wait until the rotation
//! is done — which proves every record up to `last_seq` is durable — write the image
//! durably, and remove segments wholly covered by the oldest checkpoint kept and already
//! held by the standby (SPEC: segments are kept until every standby has them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::CHECKPOINT_EVERY_OPS;
use crate::error::MasterError;
use crate::oplog::LogCmd;
use crate::state::Master;
use crate::{checkpoint, oplog, recovery};

/// Records kept on disk for a standby that is behind; one further behind loads a
/// checkpoint instead, so a standby that went away does not make the log grow forever.
const MAX_RETAINED_OPS: u64 = 10 * CHECKPOINT_EVERY_OPS;
/// How often the periodic task checks whether a checkpoint is due.
const CHECKPOINT_POLL: Duration = Duration::from_secs(1);

pub async fn run_periodic(master: Arc<Master>, stop: CancellationToken) {
    let mut last = Instant::now();
    let poll = CHECKPOINT_POLL.min(master.config.checkpoint_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        let ops = master.state.lock().ops_since_checkpoint;
        if ops == 0
            || (last.elapsed() < master.config.checkpoint_interval && ops < CHECKPOINT_EVERY_OPS)
        {
            continue;
        }
        last = Instant::now();
        if let Err(e) = checkpoint(&master).await {
            tracing::error!(error = %e, "checkpoint failed");
        }
    }
}

/// Writes one checkpoint if anything was logged since the last one.
pub async fn checkpoint(master: &Master) -> Result<(), MasterError> {
    if master.log.is_failed() {
        return Err(MasterError::Log(
            "operation log failed; no checkpoint of unacknowledged state".into(),
        ));
    }
    let permit = master
        .log
        .tx
        .reserve()
        .await
        .map_err(|_| MasterError::Log("op-log writer stopped".into()))?;
    let (image, seq, rx) = {
        let mut st = master.state.lock();
        if st.last_seq == st.last_checkpoint_seq {
            return Ok(());
        }
        let image = checkpoint::encode(&st.ns, st.last_seq)?;
        let (tx, rx) = oneshot::channel();
        permit.send(LogCmd::Rotate {
            first_seq: st.last_seq + 1,
            done: tx,
        });
        st.ops_since_checkpoint = 0;
        (image, st.last_seq, rx)
    };
    rx.await
        .map_err(|_| MasterError::Log("op-log writer stopped".into()))?
        .map_err(MasterError::Log)?;
    let dir = master.config.data_dir.clone();
    // Segments a standby may still need to catch up from are kept (beyond a bound, it
    // loads a checkpoint instead).
    let retain = master
        .ha
        .retain_from()
        .filter(|from| seq.saturating_sub(*from) < MAX_RETAINED_OPS)
        .map(|from| from.saturating_sub(1));
    let oldest_kept = tokio::task::spawn_blocking(move || -> Result<u64, MasterError> {
        let oldest = checkpoint::write(&checkpoint::checkpoint_dir(&dir), seq, &image)?;
        let covered = retain.map_or(oldest, |r| r.min(oldest));
        recovery::remove_covered_segments(&oplog::segment_dir(&dir), covered)?;
        Ok(oldest)
    })
    .await
    .map_err(|e| MasterError::Log(format!("checkpoint task: {e}")))??;
    master.state.lock().last_checkpoint_seq = seq;
    tracing::info!(seq, oldest_kept, "checkpoint written");
    Ok(())
}
