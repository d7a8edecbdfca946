//! Operator calls: safe mode, decommission, balance, setrep. Every call that changes the
//! cluster needs root (the caller's uid 0; a request without a caller is trusted, as
//! everywhere in the master). Reading state (`safemode get`, balance status) is open.

use rdfs_proto::ids::InodeId;
use rdfs_proto::limits::MAX_REPLICATION;
use rdfs_proto::pb::{
    BalanceAction, BalanceRequest, BalanceResponse, Caller, DecommissionRequest,
    DecommissionResponse, SafeModeAction, SafeModeRequest, SafeModeResponse, SetReplicationRequest,
    SetReplicationResponse,
};
use rdfs_proto::{path, ErrorCode};
use tonic::Status;

use crate::chunk_map::Drain;
use crate::inode_ops::cred_of;
use crate::namespace::perm::W;
use crate::namespace::{NodeKind, Op};
use crate::service::{now_ns, ns_status};
use crate::state::{Master, State, SAFE_MODE_THRESHOLD_PER_MILLE};

/// Most files one `setrep` may change (one op each, logged in one batch).
pub const MAX_SETREP_FILES: usize = 100_000;
/// Accepted balancer thresholds, in percentage points of usage.
const BALANCE_THRESHOLD_RANGE: std::ops::RangeInclusive<f64> = 0.1..=100.0;

/// Refuses a caller other than root.
pub(crate) fn require_root(caller: &Option<Caller>, what: &str) -> Result<(), Status> {
    match caller {
        Some(c) if c.uid != 0 => Err(ErrorCode::PermissionDenied
            .status(format!("{what}: needs root (caller uid {})", c.uid))),
        _ => Ok(()),
    }
}

impl State {
    fn safe_mode_answer(&self) -> SafeModeResponse {
        let (reported, total) = self.safe_mode_counts();
        SafeModeResponse {
            safe_mode: self.safe_mode,
            manual: self.safe_mode_manual,
            reported_chunks: reported,
            total_chunks: total,
            threshold_per_mille: SAFE_MODE_THRESHOLD_PER_MILLE as u32,
        }
    }

    /// Files under `root` (itself if a file), at most `MAX_SETREP_FILES`.
    fn files_under(&self, root: InodeId) -> Result<Vec<InodeId>, Status> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            match self.ns.inode(id).map(|i| &i.kind) {
                Some(NodeKind::Dir { entries }) => stack.extend(entries.values()),
                Some(NodeKind::File { .. }) => out.push(id),
                _ => {}
            }
            if out.len() > MAX_SETREP_FILES {
                return Err(ErrorCode::InvalidArgument.status(format!(
                    "more than {MAX_SETREP_FILES} files: set replication on smaller subtrees"
                )));
            }
        }
        Ok(out)
    }
}

impl Master {
    pub fn safe_mode(&self, r: SafeModeRequest) -> Result<SafeModeResponse, Status> {
        let action = SafeModeAction::try_from(r.action).unwrap_or(SafeModeAction::Unspecified);
        if !matches!(action, SafeModeAction::Get | SafeModeAction::Unspecified) {
            require_root(&r.caller, "safemode")?;
        }
        let mut st = self.state.lock();
        match action {
            SafeModeAction::Enter => {
                st.safe_mode = true;
                st.safe_mode_manual = true;
                tracing::warn!("safe mode entered by an operator");
            }
            SafeModeAction::Leave => {
                st.safe_mode = false;
                st.safe_mode_manual = false;
                tracing::warn!("safe mode left by an operator");
            }
            SafeModeAction::Get | SafeModeAction::Unspecified => {}
        }
        Ok(st.safe_mode_answer())
    }

    pub fn decommission(&self, r: DecommissionRequest) -> Result<DecommissionResponse, Status> {
        require_root(&r.caller, "decommission")?;
        let drain = if r.cancel {
            Drain::Active
        } else {
            Drain::Decommissioning
        };
        let mut st = self.state.lock();
        // Decommissioning a server already drained is a no-op, not a restart.
        let already = st
            .cmap
            .servers()
            .any(|s| s.addr == r.addr && s.drain == Drain::Decommissioned);
        let drain = if already && !r.cancel {
            Drain::Decommissioned
        } else {
            drain
        };
        let Some(id) = st.cmap.set_drain(&r.addr, drain) else {
            return Err(ErrorCode::NotFound.status(format!(
                "{}: no chunkserver registered with this address",
                r.addr
            )));
        };
        let remaining = if drain == Drain::Decommissioning {
            st.drain_remaining(id)
        } else {
            0
        };
        let s = st
            .cmap
            .server_mut(id)
            .ok_or_else(|| ErrorCode::Internal.status("server vanished"))?;
        s.drain_remaining = remaining;
        tracing::warn!(server = %id, addr = %r.addr, cancel = r.cancel, remaining, "decommission requested");
        Ok(DecommissionResponse {
            state: s.state_name().to_string(),
            remaining,
        })
    }

    pub fn balance(&self, r: BalanceRequest) -> Result<BalanceResponse, Status> {
        let action = BalanceAction::try_from(r.action).unwrap_or(BalanceAction::Unspecified);
        let mut st = self.state.lock();
        match action {
            BalanceAction::Start => {
                require_root(&r.caller, "balance")?;
                if !BALANCE_THRESHOLD_RANGE.contains(&r.threshold_percent) {
                    return Err(ErrorCode::InvalidArgument.status(format!(
                        "balance threshold {} must be between {} and {} percent",
                        r.threshold_percent,
                        BALANCE_THRESHOLD_RANGE.start(),
                        BALANCE_THRESHOLD_RANGE.end()
                    )));
                }
                st.start_balance(r.threshold_percent);
            }
            BalanceAction::Stop => {
                require_root(&r.caller, "balance")?;
                st.stop_balance();
            }
            BalanceAction::Status | BalanceAction::Unspecified => {}
        }
        Ok(BalanceResponse {
            balancer: Some(st.balancer_info()),
        })
    }

    pub async fn set_replication(
        &self,
        r: SetReplicationRequest,
    ) -> Result<SetReplicationResponse, Status> {
        let p = path::normalize(&r.path)
            .map_err(|c| c.status(format!("{:?}: {}", r.path, c.describe())))?;
        if r.replication == 0 || r.replication > MAX_REPLICATION {
            return Err(ErrorCode::InvalidArgument.status(format!(
                "{p}: replication {} must be between 1 and {MAX_REPLICATION}",
                r.replication
            )));
        }
        let cred = cred_of(&r.caller);
        let time_ns = now_ns();
        self.mutate_req(
            &r.request_id,
            |st| {
                let root = st.ns.resolve_as(&p, &cred).map_err(|e| ns_status(&p, e))?;
                let files = st.files_under(root)?;
                let mut ops = Vec::with_capacity(files.len());
                for inode in files {
                    st.ns
                        .check_data_access(inode, &cred, W)
                        .map_err(|e| ns_status(&st.ns.path_of(inode), e))?;
                    let same = st
                        .ns
                        .inode(inode)
                        .is_some_and(|i| i.replication == r.replication);
                    if !same {
                        ops.push(Op::SetReplication {
                            inode,
                            replication: r.replication,
                            time_ns,
                        });
                    }
                }
                let n = ops.len() as u64;
                tracing::info!(path = %p, replication = r.replication, files = n, "setrep");
                Ok((ops, n))
            },
            |_, files| Ok(SetReplicationResponse { files }),
        )
        .await
    }
}
