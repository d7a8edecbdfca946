//! Primary leases (memory only). A lease names the chain (primary first) at one chunk
//! version; it is valid until it expires or a chain member dies. `granting` marks chunks
//! whose version bump is in flight so two writers cannot bump the same chunk at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdfs_proto::ids::{ChunkId, ChunkVersion, ChunkserverId, LeaseSerial};

/// A grant-in-progress mark older than this is ignored: its handler was dropped between
/// logging the bump and starting the guarded data-plane phase (log commit + SetVersion
/// rounds always finish well within it).
pub const GRANT_STALE_AFTER: Duration = Duration::from_secs(45);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub version: ChunkVersion,
    /// Primary first.
    pub chain: Vec<ChunkserverId>,
    pub serial: LeaseSerial,
    pub expires: Instant,
}

#[derive(Debug, Default)]
pub struct LeaseTable {
    leases: HashMap<ChunkId, Lease>,
    granting: HashMap<ChunkId, Instant>,
}

impl LeaseTable {
    /// The unexpired lease on a chunk, if any.
    pub fn active(&self, chunk: ChunkId, now: Instant) -> Option<&Lease> {
        self.leases.get(&chunk).filter(|l| l.expires > now)
    }

    pub fn grant(&mut self, chunk: ChunkId, lease: Lease) {
        self.leases.insert(chunk, lease);
    }

    pub fn revoke(&mut self, chunk: ChunkId) {
        self.leases.remove(&chunk);
    }

    /// Revokes every lease whose chain includes a (dead) server; returns how many.
    pub fn revoke_server(&mut self, server: ChunkserverId) -> usize {
        let before = self.leases.len();
        self.leases.retain(|_, l| !l.chain.contains(&server));
        before - self.leases.len()
    }

    /// Drops expired leases (keeps the table small).
    pub fn expire(&mut self, now: Instant) {
        self.leases.retain(|_, l| l.expires > now);
    }

    /// Marks a bump in flight; false when one already is.
    pub fn begin_grant(&mut self, chunk: ChunkId) -> bool {
        if self.is_granting(chunk) {
            return false;
        }
        self.granting.insert(chunk, Instant::now());
        true
    }

    pub fn end_grant(&mut self, chunk: ChunkId) {
        self.granting.remove(&chunk);
    }

    pub fn is_granting(&self, chunk: ChunkId) -> bool {
        self.granting
            .get(&chunk)
            .is_some_and(|t| t.elapsed() < GRANT_STALE_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn leases_expire_and_die_with_their_servers() {
        let now = Instant::now();
        let mut t = LeaseTable::default();
        let lease = |chain: Vec<u64>, secs| Lease {
            version: ChunkVersion(2),
            chain: chain.into_iter().map(ChunkserverId).collect(),
            serial: LeaseSerial(1),
            expires: now + Duration::from_secs(secs),
        };
        t.grant(ChunkId(1), lease(vec![1, 2], 60));
        t.grant(ChunkId(2), lease(vec![3], 60));
        t.grant(ChunkId(3), lease(vec![3], 0));
        assert!(t.active(ChunkId(3), now).is_none());
        assert_eq!(t.revoke_server(ChunkserverId(2)), 1);
        assert!(t.active(ChunkId(1), now).is_none());
        assert_eq!(
            t.active(ChunkId(2), now).map(|l| l.version),
            Some(ChunkVersion(2))
        );
        assert!(t.begin_grant(ChunkId(2)));
        assert!(!t.begin_grant(ChunkId(2)));
        t.end_grant(ChunkId(2));
        assert!(!t.is_granting(ChunkId(2)));
    }
}
