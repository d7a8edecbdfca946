//! Primary leases (memory only). A lease names the chain (primary first) at one chunk
//! version; it is valid until it expires or a chain member dies. `granting` marks chunks
//! whose version bump is in flight so two writers cannot bump the same chunk at once.
//!
//! Chunkservers do not know when a lease expires, so a client holding a grant may still push
//! with its fence a little after the master considers the lease over (a slow piece, a chain
//! member declared dead meanwhile). `fenced_until` remembers, per chunk, until when such a
//! grant may still be in use; a snapshot bumps the version of those chunks (which kills the
//! old fence on the replicas) before it shares them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdfs_proto::ids::{ChunkId, ChunkVersion, ChunkserverId, LeaseSerial};

/// A grant-in-progress mark older than this is ignored: its handler was dropped between
/// logging the bump and starting the guarded data-plane phase (log commit + SetVersion
/// rounds always finish well within it).
pub const GRANT_STALE_AFTER: Duration = Duration::from_secs(45);
/// How long after its lease expires a grant may still be pushed with (the client's deadline
/// for one piece, with a wide margin).
pub const LEASE_WRITE_GRACE: Duration = Duration::from_secs(60);

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
    /// Until when a grant at the chunk's current version may still be used by a client.
    fenced_until: HashMap<ChunkId, Instant>,
}

impl LeaseTable {
    /// The unexpired lease on a chunk, if any.
    pub fn active(&self, chunk: ChunkId, now: Instant) -> Option<&Lease> {
        self.leases.get(&chunk).filter(|l| l.expires > now)
    }

    pub fn grant(&mut self, chunk: ChunkId, lease: Lease) {
        self.fenced_until
            .insert(chunk, lease.expires + LEASE_WRITE_GRACE);
        self.leases.insert(chunk, lease);
    }

    /// Whether a client may still hold a usable grant on the chunk's current version.
    pub fn may_be_written(&self, chunk: ChunkId, now: Instant) -> bool {
        self.fenced_until.get(&chunk).is_some_and(|t| *t > now)
    }

    /// The chunk's version was bumped on its replicas: every earlier grant is dead.
    pub fn fence_bumped(&mut self, chunk: ChunkId) {
        self.fenced_until.remove(&chunk);
    }

    /// Forgets everything about a chunk that no longer exists.
    pub fn forget(&mut self, chunk: ChunkId) {
        self.leases.remove(&chunk);
        self.fenced_until.remove(&chunk);
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

    /// Drops expired leases and grace periods (keeps the table small).
    pub fn expire(&mut self, now: Instant) {
        self.leases.retain(|_, l| l.expires > now);
        self.fenced_until.retain(|_, t| *t > now);
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

    #[test]
    fn a_grant_stays_usable_for_the_grace_period_until_a_bump() {
        let now = Instant::now();
        let mut t = LeaseTable::default();
        let lease = Lease {
            version: ChunkVersion(1),
            chain: vec![ChunkserverId(1)],
            serial: LeaseSerial(1),
            expires: now,
        };
        t.grant(ChunkId(1), lease.clone());
        t.grant(ChunkId(2), lease);
        // Expired for the master, and its server died: clients may still push with it.
        t.revoke_server(ChunkserverId(1));
        t.expire(now + Duration::from_secs(1));
        assert!(t.active(ChunkId(1), now).is_none());
        assert!(t.may_be_written(ChunkId(1), now + Duration::from_secs(1)));
        assert!(!t.may_be_written(ChunkId(1), now + LEASE_WRITE_GRACE));
        t.fence_bumped(ChunkId(1));
        assert!(!t.may_be_written(ChunkId(1), now));
        t.forget(ChunkId(2));
        assert!(!t.may_be_written(ChunkId(2), now));
    }
}
