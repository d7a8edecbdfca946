//! The per-user trash: [`Client::trash`] is what `dfs rm` does (the entry moves to
//! `/.Trash/<uid>` and is purged by the master after its grace period);
//! [`Client::list_trash`], [`Client::restore_trash`] and [`Client::empty_trash`] manage it.
//! [`Client::delete`] (and FUSE unlink) never go through the trash.

use rdfs_proto::pb;

use crate::error::Result;
use crate::{checked_path, Client};

/// Which trashed entry to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrashTarget {
    /// The most recent deletion of this path.
    Path(String),
    /// The entry with this name in the caller's trash directory (as `list_trash` shows).
    Name(String),
}

impl Client {
    /// Moves `path` (a directory only with `recursive`) to the caller's trash.
    pub async fn trash(&self, path: &str, recursive: bool) -> Result<()> {
        self.remove(path, recursive, true).await
    }

    /// The caller's trashed entries, newest first (every user's with `all_users`, root
    /// only); the flag says whether the list was cut short.
    pub async fn list_trash(&self, all_users: bool) -> Result<(Vec<pb::TrashItem>, bool)> {
        let req = pb::ListTrashRequest {
            caller: self.caller(),
            all_users,
        };
        let resp = self
            .inner
            .masters
            .call("list trash", "", self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.list_trash(req).await }
            })
            .await?;
        Ok((resp.entries, resp.more))
    }

    /// Restores a trashed entry to `dst` (default: where it was, parents recreated);
    /// returns the path it was restored to.
    pub async fn restore_trash(&self, which: &TrashTarget, dst: Option<&str>) -> Result<String> {
        let (path, name) = match which {
            TrashTarget::Path(p) => (checked_path(p)?, String::new()),
            TrashTarget::Name(n) => (String::new(), n.clone()),
        };
        let dst = dst.map(checked_path).transpose()?.unwrap_or_default();
        let shown = if path.is_empty() {
            name.clone()
        } else {
            path.clone()
        };
        let req = pb::RestoreTrashRequest {
            path,
            name,
            dst,
            caller: self.caller(),
            request_id: self.request_id(),
        };
        let resp = self
            .inner
            .masters
            .call("restore", &shown, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.restore_trash(req).await }
            })
            .await?;
        Ok(resp.restored_to)
    }

    /// Purges every entry of the caller's trash now; returns how many were removed.
    pub async fn empty_trash(&self) -> Result<u64> {
        let mut removed = 0;
        loop {
            let req = pb::EmptyTrashRequest {
                caller: self.caller(),
                request_id: self.request_id(),
            };
            let resp = self
                .inner
                .masters
                .call("empty trash", "", self.deadline(), |mut m| {
                    let req = req.clone();
                    async move { m.empty_trash(req).await }
                })
                .await?;
            removed += resp.removed;
            if !resp.more || resp.removed == 0 {
                return Ok(removed);
            }
        }
    }
}
