//! The chunkserver as a witness for the masters' leases (SPEC "Standby and failover").
//!
//! The primary master holds a short lease from a majority of all registered chunkservers
//! and renews it every fraction of its length; a standby may promote itself only when a
//! majority grants it a higher epoch, which each witness does only when the current lease
//! has expired by its own clock and the primary's last standby mark says that this standby
//! holds every acknowledged record. The rules (in [`decide`], pure and unit-tested):
//!
//! - `Renew(e, holder)`: refused if `e` is below the highest epoch renewed or promised here,
//!   or if another holder's lease at the same epoch is still running. Granted: the lease runs
//!   `lease_ms` from now, `e` becomes the highest epoch (also the data-plane fence), and a
//!   standby mark of epoch `e` newer than ours replaces it.
//! - `Promote(e, candidate)`: granted once per epoch above everything seen (or again to the
//!   same candidate), when no other holder's lease runs and the mark of the highest epoch
//!   names the candidate as in sync. The promise is durable before the answer.
//! - `Release(holder)`: the holder's lease ends now.
//!
//! Everything but the lease expiry is in STATE (fsynced before the answer); after a restart
//! the lease is assumed to run its full length again, which can only delay a promotion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdfs_proto::dataplane::{WitnessOp, WitnessReply, WitnessRequest};
use tracing::Instrument;

use crate::node::Node;
use crate::state::NodeState;

/// Longest lease a master may ask for; a longer one would block failover for too long.
pub const MAX_WITNESS_LEASE: Duration = rdfs_proto::limits::MAX_FAILOVER_TIMEOUT;

/// The in-memory half of the witness: when the current lease ends by our clock. Requests
/// are decided one at a time (the async mutex), so a decision and its fsync are atomic.
pub struct WitnessLease {
    until: tokio::sync::Mutex<Instant>,
}

impl WitnessLease {
    /// After a (re)start the last lease is assumed to run its full length from now.
    pub fn after_start(st: &NodeState, now: Instant) -> WitnessLease {
        let held = if st.witness.holder_id.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_millis(st.witness.lease_ms).min(MAX_WITNESS_LEASE)
        };
        WitnessLease {
            until: tokio::sync::Mutex::new(now + held),
        }
    }
}

fn refuse(reason: String) -> WitnessReply {
    WitnessReply {
        granted: false,
        reason,
        ..WitnessReply::default()
    }
}

/// Decides one request against the durable state `st` (changed in place) and the lease
/// expiry `until`; returns the reply (its state fields are filled by the caller).
pub fn decide(
    st: &mut NodeState,
    until: &mut Instant,
    now: Instant,
    op: &WitnessOp,
) -> WitnessReply {
    let top = st.highest_epoch.max(st.witness.promised);
    let left = until.saturating_duration_since(now);
    let w = &mut st.witness;
    match op {
        WitnessOp::Renew {
            epoch,
            holder_id,
            holder_addr,
            lease_ms,
            mark,
        } => {
            if *epoch < top {
                return refuse(format!("epoch {epoch} is older than epoch {top}"));
            }
            if *epoch == top
                && !w.holder_id.is_empty()
                && w.holder_id != *holder_id
                && !left.is_zero()
            {
                return refuse(format!(
                    "the lease of {} runs {} ms more",
                    w.holder_addr,
                    left.as_millis()
                ));
            }
            let lease = Duration::from_millis(*lease_ms).min(MAX_WITNESS_LEASE);
            w.holder_id.clone_from(holder_id);
            w.holder_addr.clone_from(holder_addr);
            w.lease_ms = lease.as_millis() as u64;
            *until = now + lease;
            if let Some(m) = mark {
                if m.epoch == *epoch && m.key() > w.mark.key() {
                    w.mark = m.clone();
                }
            }
            st.highest_epoch = st.highest_epoch.max(*epoch);
            granted()
        }
        WitnessOp::Promote {
            epoch,
            candidate_id,
            candidate_addr,
            lease_ms,
        } => {
            let again = *epoch == w.promised && w.holder_id == *candidate_id;
            if *epoch < top || (*epoch == top && !again) {
                return refuse(format!("epoch {epoch} is not above epoch {top}"));
            }
            if !again {
                if !left.is_zero() && w.holder_id != *candidate_id {
                    return refuse(format!(
                        "the lease of {} runs {} ms more",
                        w.holder_addr,
                        left.as_millis()
                    ));
                }
                // The holder of the newest epoch may take a next one without a mark: only it
                // acknowledged in that epoch, always from its own durable log, and it had
                // every earlier acknowledged record when it got the epoch. (A primary that
                // stopped while its standby was out of sync can come back this way.)
                let last_holder = w.holder_id == *candidate_id;
                if !last_holder
                    && (w.mark.epoch != st.highest_epoch || w.mark.in_sync != *candidate_id)
                {
                    return refuse(format!(
                        "the primary of epoch {} did not vouch for {candidate_addr} (mark: epoch {}, in sync {:?}, out of sync at {})",
                        st.highest_epoch, w.mark.epoch, w.mark.in_sync, w.mark.out_of_sync_at
                    ));
                }
            }
            let lease = Duration::from_millis(*lease_ms).min(MAX_WITNESS_LEASE);
            w.promised = *epoch;
            w.holder_id.clone_from(candidate_id);
            w.holder_addr.clone_from(candidate_addr);
            w.lease_ms = lease.as_millis() as u64;
            *until = now + lease;
            granted()
        }
        WitnessOp::Release { holder_id, .. } => {
            if w.holder_id == *holder_id {
                *until = now;
            }
            granted()
        }
        WitnessOp::Query => granted(),
    }
}

fn granted() -> WitnessReply {
    WitnessReply {
        granted: true,
        ..WitnessReply::default()
    }
}

/// Fills the state part of a reply.
fn describe(mut reply: WitnessReply, st: &NodeState, until: Instant, now: Instant) -> WitnessReply {
    reply.epoch = st.highest_epoch;
    reply.promised = st.witness.promised.max(st.highest_epoch);
    reply.holder_id.clone_from(&st.witness.holder_id);
    reply.holder_addr.clone_from(&st.witness.holder_addr);
    reply.lease_remaining_ms = until.saturating_duration_since(now).as_millis() as u64;
    reply.mark = st.witness.mark.clone();
    reply
}

/// Serves one witness request: decided and made durable before the reply is built.
pub async fn handle(node: &Arc<Node>, req: WitnessRequest) -> WitnessReply {
    let span = tracing::debug_span!("witness", op = ?std::mem::discriminant(&req.op));
    async move {
        let ours = node.state.get().cluster_id;
        if ours.is_empty() || ours != req.cluster_id {
            return refuse(format!(
                "this chunkserver belongs to cluster {ours:?}, not {:?}",
                req.cluster_id
            ));
        }
        let mut until = node.witness.until.lock().await;
        let now = Instant::now();
        let state = node.state.clone();
        let mut lease_end = *until;
        let op = req.op.clone();
        let decided = tokio::task::spawn_blocking(move || {
            let out = state.update_with(|st| decide(st, &mut lease_end, now, &op));
            (out, lease_end)
        })
        .await;
        let ((st, reply), lease_end) = match decided {
            Ok((Ok(done), lease_end)) => (done, lease_end),
            Ok((Err(e), _)) => return refuse(format!("recording the witness state: {e}")),
            Err(e) => return refuse(format!("witness task: {e}")),
        };
        *until = lease_end;
        node.note_epoch(st.highest_epoch);
        if reply.granted && !matches!(req.op, WitnessOp::Renew { .. } | WitnessOp::Query) {
            tracing::info!(epoch = %st.highest_epoch, promised = %st.witness.promised, holder = %st.witness.holder_addr, "witness: {:?}", req.op);
        } else if !reply.granted {
            tracing::info!(reason = %reply.reason, "witness refused {:?}", req.op);
        }
        describe(reply, &st, lease_end, now)
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::WitnessRecord;
    use rdfs_proto::dataplane::StandbyMark;
    use rdfs_proto::ids::Epoch;

    fn fresh() -> NodeState {
        NodeState {
            cluster_id: "c".into(),
            node_id: "n".into(),
            highest_epoch: Epoch(0),
            witness: WitnessRecord::default(),
        }
    }

    fn renew(epoch: u64, holder: &str, mark: Option<StandbyMark>) -> WitnessOp {
        WitnessOp::Renew {
            epoch: Epoch(epoch),
            holder_id: holder.into(),
            holder_addr: format!("addr-{holder}"),
            lease_ms: 1000,
            mark,
        }
    }

    fn promote(epoch: u64, who: &str) -> WitnessOp {
        WitnessOp::Promote {
            epoch: Epoch(epoch),
            candidate_id: who.into(),
            candidate_addr: format!("addr-{who}"),
            lease_ms: 1000,
        }
    }

    fn mark(epoch: u64, serial: u64, in_sync: &str) -> Option<StandbyMark> {
        Some(StandbyMark {
            epoch: Epoch(epoch),
            serial,
            in_sync: in_sync.into(),
            out_of_sync_at: 0,
        })
    }

    #[test]
    fn a_running_lease_blocks_promotion_and_expiry_allows_it() {
        let t0 = Instant::now();
        let (mut st, mut until) = (fresh(), t0);
        assert!(decide(&mut st, &mut until, t0, &renew(1, "a", mark(1, 1, "b"))).granted);
        assert_eq!(st.highest_epoch, Epoch(1));
        let early = t0 + Duration::from_millis(500);
        let r = decide(&mut st, &mut until, early, &promote(2, "b"));
        assert!(!r.granted && r.reason.contains("runs"), "{}", r.reason);
        let late = t0 + Duration::from_millis(1001);
        assert!(decide(&mut st, &mut until, late, &promote(2, "b")).granted);
        assert_eq!(st.witness.promised, Epoch(2));
        // The deposed primary can no longer renew; the new one can, at its epoch.
        let r = decide(&mut st, &mut until, late, &renew(1, "a", None));
        assert!(!r.granted && r.reason.contains("older"), "{}", r.reason);
        assert!(decide(&mut st, &mut until, late, &renew(2, "b", None)).granted);
        assert_eq!(st.highest_epoch, Epoch(2));
    }

    #[test]
    fn only_the_standby_the_mark_names_may_promote() {
        let t0 = Instant::now();
        let (mut st, mut until) = (fresh(), t0);
        decide(&mut st, &mut until, t0, &renew(3, "a", mark(3, 1, "b")));
        // Out of sync at seq 40: a newer mark replaces the in-sync one.
        let out = Some(StandbyMark {
            epoch: Epoch(3),
            serial: 2,
            in_sync: String::new(),
            out_of_sync_at: 40,
        });
        decide(&mut st, &mut until, t0, &renew(3, "a", out));
        // An older mark arriving late (a delayed renewal) changes nothing.
        decide(&mut st, &mut until, t0, &renew(3, "a", mark(3, 1, "b")));
        assert_eq!(st.witness.mark.out_of_sync_at, 40);
        let late = t0 + Duration::from_secs(2);
        let r = decide(&mut st, &mut until, late, &promote(4, "b"));
        assert!(!r.granted && r.reason.contains("vouch"), "{}", r.reason);
        let r = decide(&mut st, &mut until, late, &promote(4, "c"));
        assert!(!r.granted);
        assert_eq!(st.witness.promised, Epoch(0));
        // The primary of epoch 3 itself (restarted while its standby was out of sync) may
        // take epoch 4: it acknowledged everything of epoch 3 from its own log.
        assert!(decide(&mut st, &mut until, late, &promote(4, "a")).granted);
        assert_eq!(st.witness.promised, Epoch(4));
        // Now "a" is the holder of epoch 4; "b" is still not vouched for.
        let later = late + Duration::from_secs(2);
        assert!(!decide(&mut st, &mut until, later, &promote(5, "b")).granted);
    }

    #[test]
    fn one_promise_per_epoch_and_the_same_candidate_may_ask_again() {
        let t0 = Instant::now();
        let (mut st, mut until) = (fresh(), t0);
        decide(&mut st, &mut until, t0, &renew(1, "a", mark(1, 5, "b")));
        let late = t0 + Duration::from_secs(2);
        assert!(decide(&mut st, &mut until, late, &promote(2, "b")).granted);
        assert!(decide(&mut st, &mut until, late, &promote(2, "b")).granted);
        let r = decide(&mut st, &mut until, late, &promote(2, "c"));
        assert!(!r.granted);
        // A renewal at the promised epoch by another holder waits for the lease.
        let r = decide(&mut st, &mut until, late, &renew(2, "c", None));
        assert!(!r.granted && r.reason.contains("runs"), "{}", r.reason);
    }

    #[test]
    fn release_ends_the_lease_now() {
        let t0 = Instant::now();
        let (mut st, mut until) = (fresh(), t0);
        decide(&mut st, &mut until, t0, &renew(1, "a", mark(1, 1, "b")));
        let release = WitnessOp::Release {
            epoch: Epoch(1),
            holder_id: "a".into(),
        };
        assert!(decide(&mut st, &mut until, t0, &release).granted);
        assert!(decide(&mut st, &mut until, t0, &promote(2, "b")).granted);
    }

    #[test]
    fn a_restarted_witness_assumes_the_lease_still_runs() {
        let t0 = Instant::now();
        let (mut st, mut until) = (fresh(), t0);
        decide(&mut st, &mut until, t0, &renew(1, "a", mark(1, 1, "b")));
        let lease = WitnessLease::after_start(&st, t0 + Duration::from_secs(5));
        let until = lease.until.try_lock().map(|u| *u).unwrap();
        assert_eq!(until, t0 + Duration::from_secs(6));
    }
}
