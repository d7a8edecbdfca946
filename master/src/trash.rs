//! The trash on the master: `Delete` with `to_trash` (what `dfs rm` sends), `ListTrash`,
//! `RestoreTrash`, `EmptyTrash`, and the sweeper that purges entries older than the grace
//! period (`--trash-grace`). Purges are logged ops (`Delete`, or `Unlink` + `RemoveOrphan`
//! unless a handle holds the file); the chunks they free become garbage on the chunkservers
//! through the usual throttled delete commands and block-report reconciliation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdfs_proto::ids::InodeId;
use rdfs_proto::limits::MAX_LIST_ENTRIES;
use rdfs_proto::pb::{
    EmptyTrashRequest, EmptyTrashResponse, ListTrashRequest, ListTrashResponse,
    RestoreTrashRequest, RestoreTrashResponse, TrashItem,
};
use rdfs_proto::{path, ErrorCode};
use tonic::Status;

use crate::inode_ops::cred_of;
use crate::namespace::{Namespace, Op, RestoreWhich};
use crate::service::{attr, now_ns, ns_status};
use crate::state::{Master, State};

/// Most trashed entries one sweep (or one `EmptyTrash` call) purges; the rest wait for the
/// next one, so one mutation stays short under the state lock.
pub const MAX_PURGES_PER_SWEEP: usize = 256;
/// Shortest and longest pause between sweeps (a quarter of the grace period in between).
const SWEEP_INTERVAL_MIN: Duration = Duration::from_millis(100);
const SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(10);

/// How often the sweeper looks for expired entries under grace period `grace`.
pub fn sweep_interval(grace: Duration) -> Duration {
    (grace / 4).clamp(SWEEP_INTERVAL_MIN, SWEEP_INTERVAL_MAX)
}

fn grace_ns(grace: Duration) -> i64 {
    i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX)
}

impl State {
    /// Ops purging the trashed inodes `ids` (skipping any no longer in the trash).
    fn purge_ops(&self, ids: &[InodeId], time_ns: i64) -> Vec<Op> {
        let mut ops = Vec::new();
        for id in ids {
            match self.ns.plan_purge(*id, time_ns) {
                Ok((op, orphan)) => ops.extend(self.with_orphan(op, orphan)),
                Err(e) => tracing::warn!(inode = %id, error = %e, "trash entry not purged"),
            }
        }
        ops
    }
}

impl Master {
    /// `dfs rm` without `--skip-trash`: move into the caller's trash (a path already in the
    /// trash, or a grace period of 0, removes for good instead: `None`).
    pub(crate) fn plan_delete_to_trash(
        &self,
        st: &State,
        p: &str,
        recursive: bool,
        cred: &crate::namespace::Cred,
        time_ns: i64,
    ) -> Option<Result<Vec<Op>, Status>> {
        if self.config.trash_grace.is_zero() || Namespace::is_trash_path(p) {
            return None;
        }
        Some(
            st.ns
                .plan_trash(cred, p, recursive, time_ns)
                .map_err(|e| ns_status(p, e)),
        )
    }

    pub async fn list_trash(&self, r: ListTrashRequest) -> Result<ListTrashResponse, Status> {
        let cred = cred_of(&r.caller);
        if r.all_users && !cred.is_root() {
            return Err(ErrorCode::PermissionDenied.status("listing every user's trash needs root"));
        }
        let grace = grace_ns(self.config.trash_grace);
        let st = self.state.lock();
        let uid = (!r.all_users).then_some(cred.uid);
        let all = st.ns.trash_items(uid);
        let more = all.len() > MAX_LIST_ENTRIES as usize;
        let entries = all
            .into_iter()
            .take(MAX_LIST_ENTRIES as usize)
            .map(|t| TrashItem {
                name: t.inode.name.clone(),
                origin: t.entry.origin.clone(),
                deleted_ns: t.entry.deleted_ns,
                expires_ns: t.entry.deleted_ns.saturating_add(grace),
                uid: t.entry.uid,
                attr: Some(attr(t.inode, st.default_replication)),
            })
            .collect();
        Ok(ListTrashResponse { entries, more })
    }

    pub async fn restore_trash(
        &self,
        r: RestoreTrashRequest,
    ) -> Result<RestoreTrashResponse, Status> {
        let cred = cred_of(&r.caller);
        let origin = if r.path.is_empty() {
            String::new()
        } else {
            path::normalize(&r.path)
                .map_err(|c| c.status(format!("{:?}: {}", r.path, c.describe())))?
        };
        let dst = if r.dst.is_empty() {
            None
        } else {
            Some(
                path::normalize(&r.dst)
                    .map_err(|c| c.status(format!("{:?}: {}", r.dst, c.describe())))?,
            )
        };
        let which = if !r.name.is_empty() {
            RestoreWhich::Name(&r.name)
        } else if !origin.is_empty() {
            RestoreWhich::Origin(&origin)
        } else {
            return Err(ErrorCode::InvalidArgument.status("restore: name a path or a trash entry"));
        };
        let shown = if origin.is_empty() {
            r.name.clone()
        } else {
            origin.clone()
        };
        let t = now_ns();
        let resp = self
            .mutate_req(
                &r.request_id,
                |st| {
                    let (ops, to) = st
                        .ns
                        .plan_restore(&cred, which.clone(), dst.as_deref(), t)
                        .map_err(|e| ns_status(&shown, e))?;
                    Ok((ops, to))
                },
                |st, to| {
                    let attr = st.attr_of_path(&to).ok();
                    Ok(RestoreTrashResponse {
                        restored_to: to,
                        attr,
                    })
                },
            )
            .await?;
        tracing::info!(restored_to = %resp.restored_to, "restored from the trash");
        Ok(resp)
    }

    pub async fn empty_trash(&self, r: EmptyTrashRequest) -> Result<EmptyTrashResponse, Status> {
        let cred = cred_of(&r.caller);
        let t = now_ns();
        self.mutate_req(
            &r.request_id,
            |st| {
                let ids: Vec<InodeId> = st
                    .ns
                    .trash_items(Some(cred.uid))
                    .iter()
                    .map(|t| t.inode.id)
                    .collect();
                let more = ids.len() > MAX_PURGES_PER_SWEEP;
                let ids = &ids[..ids.len().min(MAX_PURGES_PER_SWEEP)];
                Ok((st.purge_ops(ids, t), (ids.len() as u64, more)))
            },
            |_, (removed, more)| Ok(EmptyTrashResponse { removed, more }),
        )
        .await
    }

    /// Purges trash entries older than the grace period (at most a batch per call).
    pub async fn sweep_trash(&self) -> Result<usize, Status> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let cutoff = now.saturating_sub(grace_ns(self.config.trash_grace));
        self.mutate(
            |st| {
                let ids = st.ns.expired_trash(cutoff, MAX_PURGES_PER_SWEEP);
                let n = ids.len();
                Ok((st.purge_ops(&ids, now), n))
            },
            |_, n| n,
        )
        .await
    }
}
