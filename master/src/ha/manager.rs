//! The primary's witness task and the clean handover.
//!
//! [`run`] renews the lease every `renew_every` with the current standby mark (at once when
//! a mark change is waiting), and applies what each round found: lease validity, the sync
//! state, deposition. [`Master::failover`] hands over to the in-sync standby.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdfs_proto::dataplane::WitnessOp;
use rdfs_proto::pb::FailoverResponse;
use rdfs_proto::ErrorCode;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{Role, Sync};
use crate::state::Master;

/// Pause between witness rounds that failed outright, so an unreachable majority does not
/// turn the task into a busy loop.
const FAILED_ROUND_PAUSE: Duration = Duration::from_millis(50);
/// Poll period while waiting for a handover to complete.
const HANDOVER_POLL: Duration = Duration::from_millis(50);

/// Renews the witness lease until `stop`, or until a round shows a newer primary.
pub async fn run(master: Arc<Master>, stop: CancellationToken) {
    let ha = &master.ha;
    loop {
        let durable = master.log.durable_seq();
        let Some(op) = ha.plan_round(Instant::now(), durable) else {
            // Released for a handover (or no longer primary): nothing to renew.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ha.deposed.cancelled() => return,
                () = ha.poke.notified() => continue,
                () = tokio::time::sleep(ha.timing.renew_every) => continue,
            }
        };
        let sent = Instant::now();
        let round = tokio::select! {
            r = ha.witness.ask(op) => r,
            _ = stop.cancelled() => return,
        };
        if ha.finish_round(sent, &round, durable).is_some() {
            return;
        }
        let pause = if round.won() && ha.mark_pending() {
            // A mark is waiting to be recorded: acknowledgements may be blocked on it.
            Duration::ZERO
        } else if round.won() {
            ha.timing.renew_every
        } else {
            FAILED_ROUND_PAUSE.max(ha.timing.renew_every / 4)
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            () = ha.poke.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

impl Master {
    /// Clean handover to the in-sync standby (`dfs admin failover`): stop taking mutations,
    /// wait until the standby has every record, tell it to take over, give the lease up, and
    /// wait until a witness majority shows its new epoch. If it does not come, renew again
    /// and stay primary.
    pub async fn failover(&self) -> Result<FailoverResponse, Status> {
        self.ha.check_primary()?;
        let link = match (self.ha.link(), self.ha.sync()) {
            (Some(l), Sync::InSync) => l,
            (l, sync) => {
                return Err(ErrorCode::Unavailable.status(format!(
                    "no standby in sync to hand over to (standby {}, {})",
                    l.map_or("none".to_string(), |l| l.addr),
                    sync.name()
                )))
            }
        };
        let deadline = Instant::now() + self.ha.timing.failover_timeout * 2;
        self.ha.set_role(Role::HandingOver {
            to: link.addr.clone(),
        });
        let target = self.state.lock().last_seq;
        loop {
            let acked = self.ha.link().map_or(0, |l| l.acked);
            if acked >= target {
                break;
            }
            if Instant::now() >= deadline {
                self.ha.resume();
                return Err(ErrorCode::Unavailable.status(format!(
                    "the standby did not catch up to seq {target} (it has {acked}); still primary"
                )));
            }
            self.ha.wait_change(HANDOVER_POLL).await;
        }
        tracing::info!(to = %link.addr, seq = target, "handing over: the standby has every record");
        self.ha.request_take_over();
        self.ha.release();
        let epoch = self.ha.epoch();
        let release = WitnessOp::Release {
            epoch,
            holder_id: self.ha.me_id.clone(),
        };
        while Instant::now() < deadline {
            let round = self.ha.witness.ask(release.clone()).await;
            if let Some((new_epoch, holder)) = round.newer {
                self.ha.set_role(Role::Deposed {
                    holder: holder.clone(),
                });
                tracing::info!(new_primary = %holder, epoch = %new_epoch, "handover complete");
                return Ok(FailoverResponse {
                    new_primary: holder,
                    epoch: new_epoch.0,
                });
            }
            tokio::time::sleep(HANDOVER_POLL).await;
        }
        tracing::warn!(to = %link.addr, "the standby did not take over; renewing the lease again");
        self.ha.resume();
        Err(ErrorCode::Unavailable.status(format!(
            "the standby at {} did not take over in time; this master stays primary",
            link.addr
        )))
    }
}
