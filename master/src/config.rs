//! Master configuration with defaults from `rdfs_proto::limits`; checked by `validate`
//! before anything touches the data directory.

use std::path::PathBuf;
use std::time::Duration;

use rdfs_proto::limits::{
    validate_chunk_size, DEFAULT_CHUNK_SIZE, DEFAULT_HEARTBEAT_INTERVAL_MS,
    DEFAULT_HEARTBEAT_TIMEOUT_MS, DEFAULT_LEASE_MS, DEFAULT_MIN_REPLICAS, DEFAULT_REPLICATION,
    MAX_REPLICATION,
};

use crate::error::MasterError;

/// Default time between periodic checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// Default master-side expectation of the chunkservers' full block report period.
pub const DEFAULT_BLOCK_REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// Default period of the failure-detection / re-replication scan.
pub const DEFAULT_REPLICATION_SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// Client session lifetime without renewal; clients renew every few seconds.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(15);
/// Default time a removed entry stays in its owner's trash before the master purges it.
pub const DEFAULT_TRASH_GRACE: Duration = Duration::from_secs(24 * 3600);
/// A checkpoint is also written after this many logged operations.
pub const CHECKPOINT_EVERY_OPS: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub data_dir: PathBuf,
    /// Only used when initialising an empty data dir; afterwards CLUSTER decides.
    pub chunk_size_bytes: u64,
    pub replication: u32,
    pub min_replicas: u32,
    /// Told to chunkservers at Register.
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub lease_duration: Duration,
    pub block_report_interval: Duration,
    pub checkpoint_interval: Duration,
    pub replication_scan_interval: Duration,
    /// How long a client session (and its open handles) lives without a renewal.
    pub session_ttl: Duration,
    /// How long `dfs rm` keeps an entry in its owner's trash before purging it (0: `rm`
    /// removes at once).
    pub trash_grace: Duration,
    /// Concurrent replica copies one chunkserver may send (repair and balancer throttle).
    pub max_transfers_per_source: u32,
    /// Run as a hot standby of the primary at this address (`--standby-of`).
    pub standby_of: Option<String>,
    /// A standby takes over after this long without a healthy primary; also the witness
    /// lease length (`--failover-timeout`).
    pub failover_timeout: Duration,
    /// The address clients, chunkservers and the other master use for this one; default:
    /// the listener's address.
    pub advertise_addr: Option<String>,
    /// Chunkservers become lease witnesses when they register (the SPEC's failover rule).
    /// Off: a single master that no standby can ever replace (unit tests with fake
    /// chunkservers); no witness lease is needed then.
    pub witnesses: bool,
}

impl MasterConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        MasterConfig {
            data_dir,
            chunk_size_bytes: DEFAULT_CHUNK_SIZE,
            replication: DEFAULT_REPLICATION,
            min_replicas: DEFAULT_MIN_REPLICAS,
            heartbeat_interval: Duration::from_millis(DEFAULT_HEARTBEAT_INTERVAL_MS),
            heartbeat_timeout: Duration::from_millis(DEFAULT_HEARTBEAT_TIMEOUT_MS),
            lease_duration: Duration::from_millis(DEFAULT_LEASE_MS),
            block_report_interval: DEFAULT_BLOCK_REPORT_INTERVAL,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            replication_scan_interval: DEFAULT_REPLICATION_SCAN_INTERVAL,
            session_ttl: DEFAULT_SESSION_TTL,
            trash_grace: DEFAULT_TRASH_GRACE,
            max_transfers_per_source: crate::chunk_map::DEFAULT_MAX_TRANSFERS_PER_SOURCE,
            standby_of: None,
            failover_timeout: crate::ha::DEFAULT_FAILOVER_TIMEOUT,
            advertise_addr: None,
            witnesses: true,
        }
    }

    pub fn validate(&self) -> Result<(), MasterError> {
        let bad = |m: String| Err(MasterError::Config(m));
        validate_chunk_size(self.chunk_size_bytes).map_err(MasterError::Config)?;
        if self.replication == 0 || self.replication > MAX_REPLICATION {
            return bad(format!(
                "replication {} must be between 1 and {MAX_REPLICATION}",
                self.replication
            ));
        }
        if self.min_replicas == 0 || self.min_replicas > self.replication {
            return bad(format!(
                "min_replicas {} must be between 1 and replication {}",
                self.min_replicas, self.replication
            ));
        }
        if self.max_transfers_per_source == 0 {
            return bad("max transfers per source must be at least 1".into());
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.heartbeat_timeout {
            return bad(format!(
                "heartbeat interval {:?} must be non-zero and below the timeout {:?}",
                self.heartbeat_interval, self.heartbeat_timeout
            ));
        }
        if self.failover_timeout < crate::ha::MIN_FAILOVER_TIMEOUT {
            return bad(format!(
                "failover timeout {:?} is below the minimum {:?}",
                self.failover_timeout,
                crate::ha::MIN_FAILOVER_TIMEOUT
            ));
        }
        if self.failover_timeout > rdfs_proto::limits::MAX_FAILOVER_TIMEOUT {
            return bad(format!(
                "failover timeout {:?} is above the maximum {:?}",
                self.failover_timeout,
                rdfs_proto::limits::MAX_FAILOVER_TIMEOUT
            ));
        }
        for (name, d) in [
            ("lease duration", self.lease_duration),
            ("block report interval", self.block_report_interval),
            ("checkpoint interval", self.checkpoint_interval),
            ("replication scan interval", self.replication_scan_interval),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be non-zero"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_refused() {
        let c = MasterConfig::new(PathBuf::from("/tmp/x"));
        assert!(c.validate().is_ok());
        assert_eq!(c.replication, 3);
        assert_eq!(c.min_replicas, 2);
        let mut bad = c.clone();
        bad.min_replicas = 4;
        assert!(matches!(bad.validate(), Err(MasterError::Config(_))));
        let mut bad = c.clone();
        bad.chunk_size_bytes = 1000;
        assert!(matches!(bad.validate(), Err(MasterError::Config(_))));
        let mut bad = c;
        bad.heartbeat_timeout = bad.heartbeat_interval;
        assert!(matches!(bad.validate(), Err(MasterError::Config(_))));
    }
}
