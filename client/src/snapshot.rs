//! Copy-on-write snapshots: [`Client::snapshot`] copies the metadata of a file or a whole
//! directory tree; chunks are shared until either side writes them (the master then has the
//! chunkservers copy the written chunk locally). Fast (metadata only) and durable.

use rdfs_proto::pb;

use crate::error::Result;
use crate::{checked_path, need_attr, Client};

/// What a snapshot made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Attributes of the new snapshot (a file or a directory).
    pub attr: pb::FileAttr,
    /// Inodes copied.
    pub inodes: u64,
    /// Chunks now shared between the source and the snapshot.
    pub chunks: u64,
}

impl Client {
    /// Snapshots `src` (a file or a directory tree) as `dst`, which must not exist.
    pub async fn snapshot(&self, src: &str, dst: &str) -> Result<SnapshotInfo> {
        let src = checked_path(src)?;
        let dst = checked_path(dst)?;
        let req = pb::SnapshotRequest {
            src: src.clone(),
            dst: dst.clone(),
            caller: self.caller(),
            request_id: self.request_id(),
        };
        let resp = self
            .inner
            .masters
            .call("snapshot", &src, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.snapshot(req).await }
            })
            .await?;
        Ok(SnapshotInfo {
            attr: need_attr(resp.attr, &dst)?,
            inodes: resp.inodes,
            chunks: resp.chunks,
        })
    }
}
