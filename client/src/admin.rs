//! Operator calls (`dfs admin ...`, `dfs setrep`): thin wrappers that go through the same
//! master failover and deadline as every other call. The master checks that the caller is
//! root for the ones that change the cluster.

use rdfs_proto::pb;

use crate::{checked_path, Client, Result};

impl Client {
    /// Reads, enters or leaves safe mode.
    pub async fn safe_mode(&self, action: pb::SafeModeAction) -> Result<pb::SafeModeResponse> {
        let req = pb::SafeModeRequest {
            action: action as i32,
            caller: self.caller(),
        };
        self.inner
            .masters
            .call("safemode", "", self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.safe_mode(req).await }
            })
            .await
    }

    /// Starts (or with `cancel`, stops) draining the chunkserver at data-plane `addr`.
    pub async fn decommission(&self, addr: &str, cancel: bool) -> Result<pb::DecommissionResponse> {
        let req = pb::DecommissionRequest {
            addr: addr.to_string(),
            cancel,
            caller: self.caller(),
        };
        self.inner
            .masters
            .call("decommission", addr, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.decommission(req).await }
            })
            .await
    }

    /// Starts, stops or reads the balancer.
    pub async fn balance(
        &self,
        action: pb::BalanceAction,
        threshold_percent: f64,
    ) -> Result<pb::BalancerInfo> {
        let req = pb::BalanceRequest {
            action: action as i32,
            threshold_percent,
            caller: self.caller(),
        };
        let resp = self
            .inner
            .masters
            .call("balance", "", self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.balance(req).await }
            })
            .await?;
        Ok(resp.balancer.unwrap_or_default())
    }

    /// Sets the replication factor of `path` (every file under it for a directory);
    /// returns how many files changed.
    pub async fn set_replication(&self, path: &str, replication: u32) -> Result<u64> {
        let path = checked_path(path)?;
        let req = pb::SetReplicationRequest {
            path: path.clone(),
            replication,
            caller: self.caller(),
            request_id: self.request_id(),
        };
        let resp = self
            .inner
            .masters
            .call("setrep", &path, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.set_replication(req).await }
            })
            .await?;
        Ok(resp.files)
    }
}
