//! The witness seam: who grants the primary its lease, records which standby is in sync,
//! and promises a higher epoch to a standby that may take over.
//!
//! [`Witness`] is the trait the rest of the master sees; one round of a [`WitnessOp`] comes
//! back as a [`Round`] (how many of the membership granted, which marks they hold, whether
//! some primary of a higher epoch exists). [`ChunkserverWitness`] asks a majority of all
//! registered chunkservers over the data plane (SPEC's rule). An external lock service can
//! replace it: an etcd implementation would keep the holder in a key attached to an etcd
//! lease of the same length (Renew = keep-alive plus a compare-and-set of the mark key on
//! `(epoch, serial)`, Promote = a transaction that succeeds only when the holder key has
//! expired and the mark key names the candidate, writing the new epoch; Release = revoke)
//! and report a membership of one whose single grant is the transaction's outcome.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rdfs_proto::dataplane::{DataConn, Msg, StandbyMark, WitnessOp, WitnessReply, WitnessRequest};
use rdfs_proto::ids::Epoch;

/// What one round over the witnesses found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Size of the membership asked; a majority of it decides.
    pub members: usize,
    /// Members that granted the request.
    pub granted: usize,
    /// Granting members that now hold the mark the request carried (Renew with a mark).
    pub marked: usize,
    /// The highest epoch some primary renewed in, and that holder's address, when it is above
    /// the requester's epoch: the requester has been deposed.
    pub newer: Option<(Epoch, String)>,
    /// Highest mark serial seen at the requester's epoch (a restarted primary continues
    /// above it, so its marks replace its predecessor's).
    pub max_serial: u64,
    /// Why members refused, for logs and errors.
    pub refusals: Vec<String>,
}

impl Round {
    /// Grants needed: a majority of the membership.
    pub fn majority(&self) -> usize {
        self.members / 2 + 1
    }

    /// The request holds: a majority granted it. An empty membership grants a lease and a
    /// mark trivially (nobody could promote against it) but never a promotion.
    pub fn won(&self) -> bool {
        self.members == 0 || self.granted >= self.majority()
    }

    /// A promotion needs an actual majority of a non-empty membership.
    pub fn promoted(&self) -> bool {
        self.members > 0 && self.granted >= self.majority()
    }

    /// The mark the request carried is held by a majority.
    pub fn marked(&self) -> bool {
        self.members == 0 || self.marked >= self.majority()
    }

    /// Folds one member's answer into the round.
    pub fn add(&mut self, op: &WitnessOp, reply: Result<WitnessReply, String>) {
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.refusals.push(e);
                return;
            }
        };
        let mine = match op {
            WitnessOp::Renew { epoch, .. } | WitnessOp::Release { epoch, .. } => Some(*epoch),
            WitnessOp::Promote { .. } | WitnessOp::Query => None,
        };
        if let Some(mine) = mine {
            if reply.epoch > mine && self.newer.as_ref().is_none_or(|n| n.0 < reply.epoch) {
                self.newer = Some((reply.epoch, reply.holder_addr.clone()));
            }
            if reply.mark.epoch == mine {
                self.max_serial = self.max_serial.max(reply.mark.serial);
            }
        }
        if !reply.granted {
            self.refusals.push(reply.reason);
            return;
        }
        self.granted += 1;
        if let WitnessOp::Renew { mark: Some(m), .. } = op {
            if reply.mark == *m {
                self.marked += 1;
            }
        }
    }
}

/// Grants the primary's lease and guards promotion; see the module docs.
#[tonic::async_trait]
pub trait Witness: Send + Sync {
    /// Asks every member once (bounded by the implementation's deadline).
    async fn ask(&self, op: WitnessOp) -> Round;
    /// Members, for status pages.
    fn member_count(&self) -> usize;
}

/// Chunkserver node id → data-plane address, shared by the master's registration path
/// (addresses) and its log (membership).
#[derive(Default)]
pub struct Members {
    inner: parking_lot::Mutex<BTreeMap<String, String>>,
}

impl Members {
    /// Members from the namespace (with the address each first registered with).
    pub fn from_log(witnesses: &BTreeMap<String, String>) -> Members {
        Members {
            inner: parking_lot::Mutex::new(witnesses.clone()),
        }
    }

    pub fn contains(&self, node_id: &str) -> bool {
        self.inner.lock().contains_key(node_id)
    }

    /// Adds a member or updates its address.
    pub fn set(&self, node_id: &str, addr: &str) {
        self.inner
            .lock()
            .insert(node_id.to_string(), addr.to_string());
    }

    /// Updates the address of an existing member (a chunkserver registering again).
    pub fn update_addr(&self, node_id: &str, addr: &str) {
        if let Some(a) = self.inner.lock().get_mut(node_id) {
            if a != addr {
                *a = addr.to_string();
            }
        }
    }

    pub fn addrs(&self) -> Vec<String> {
        self.inner.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.lock().is_empty()
    }
}

/// The SPEC's witness: a majority of all registered chunkservers, asked over the data plane.
pub struct ChunkserverWitness {
    cluster_id: String,
    members: Arc<Members>,
    /// Deadline of one member's answer (connect included).
    timeout: Duration,
}

impl ChunkserverWitness {
    pub fn new(cluster_id: String, members: Arc<Members>, timeout: Duration) -> Self {
        ChunkserverWitness {
            cluster_id,
            members,
            timeout,
        }
    }
}

/// One request to one witness, within `timeout`.
async fn ask_one(
    addr: String,
    req: WitnessRequest,
    timeout: Duration,
) -> Result<WitnessReply, String> {
    let call = async {
        let mut conn = DataConn::connect_timeout(&addr, timeout)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        conn.set_io_timeout(timeout);
        let frame = conn
            .call(&Msg::Witness(req))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        match frame.msg {
            Msg::WitnessReply(r) => Ok(r),
            Msg::Error { code, message } => Err(format!("{addr}: {code}: {message}")),
            other => Err(format!("{addr}: unexpected reply {}", other.kind())),
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("{addr}: no answer within {timeout:?}"))?
}

#[tonic::async_trait]
impl Witness for ChunkserverWitness {
    async fn ask(&self, op: WitnessOp) -> Round {
        let addrs = self.members.addrs();
        let req = WitnessRequest {
            cluster_id: self.cluster_id.clone(),
            op: op.clone(),
        };
        let replies = join_all(
            addrs
                .iter()
                .map(|a| ask_one(a.clone(), req.clone(), self.timeout)),
        )
        .await;
        let mut round = Round {
            members: addrs.len(),
            ..Round::default()
        };
        for reply in replies {
            round.add(&op, reply);
        }
        round
    }

    fn member_count(&self) -> usize {
        self.members.len()
    }
}

/// The mark a primary writes when no standby may take over.
pub fn out_of_sync(epoch: Epoch, serial: u64, seq: u64) -> StandbyMark {
    StandbyMark {
        epoch,
        serial,
        in_sync: String::new(),
        out_of_sync_at: seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renew(mark: Option<StandbyMark>) -> WitnessOp {
        WitnessOp::Renew {
            epoch: Epoch(2),
            holder_id: "a".into(),
            holder_addr: "A".into(),
            lease_ms: 1000,
            mark,
        }
    }

    fn reply(granted: bool, epoch: u64, mark: StandbyMark) -> Result<WitnessReply, String> {
        Ok(WitnessReply {
            granted,
            epoch: Epoch(epoch),
            holder_addr: format!("holder-{epoch}"),
            mark,
            ..WitnessReply::default()
        })
    }

    #[test]
    fn a_round_counts_grants_marks_and_newer_epochs() {
        let m = out_of_sync(Epoch(2), 5, 77);
        let op = renew(Some(m.clone()));
        let mut r = Round {
            members: 3,
            ..Round::default()
        };
        r.add(&op, reply(true, 2, m.clone()));
        assert!(!r.won());
        // Granted but still holding a newer mark of an earlier run: lease yes, mark no.
        r.add(&op, reply(true, 2, out_of_sync(Epoch(2), 9, 70)));
        assert!(r.won() && !r.marked());
        assert_eq!(r.max_serial, 9);
        r.add(&op, Err("c: refused".into()));
        assert_eq!((r.granted, r.marked, r.refusals.len()), (2, 1, 1));
        assert!(r.newer.is_none());
        r.add(&op, reply(false, 3, StandbyMark::default()));
        assert_eq!(r.newer, Some((Epoch(3), "holder-3".into())));
    }

    #[test]
    fn an_empty_membership_never_promotes() {
        let r = Round::default();
        assert!(r.won() && r.marked() && !r.promoted());
        let r = Round {
            members: 2,
            granted: 1,
            ..Round::default()
        };
        assert!(!r.won(), "one of two is not a majority");
    }
}
