//! Open handles and client sessions (in memory only).
//!
//! A handle pins an inode: an inode unlinked to zero links while a handle holds it stays as
//! an orphan until the last handle closes. Handles belong to a client session that expires
//! unless renewed; expired sessions release their handles. Handles are not logged: after a
//! master restart clients re-register theirs with the next renewal, and orphans get one
//! session TTL of grace before unheld ones are removed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdfs_proto::ids::InodeId;

/// Most handles open at once (all sessions); bounds the table.
pub const MAX_OPEN_HANDLES: usize = 1 << 20;
/// Longest session id a client may send (it sends 16 random bytes).
pub const MAX_SESSION_ID_BYTES: usize = 64;

#[derive(Debug)]
struct Handle {
    session: Vec<u8>,
    inode: InodeId,
}

/// Sessions, handles and per-inode open counts.
#[derive(Debug, Default)]
pub struct HandleTable {
    sessions: HashMap<Vec<u8>, Instant>,
    handles: HashMap<u64, Handle>,
    open: HashMap<InodeId, u32>,
}

/// Why a handle could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleError {
    TooMany,
    /// The id is taken by another session or inode.
    Conflict,
}

impl HandleTable {
    /// Marks `session` alive until `now + ttl`; returns whether it was known.
    pub fn renew(&mut self, session: &[u8], now: Instant, ttl: Duration) -> bool {
        match self.sessions.get_mut(session) {
            Some(exp) => {
                *exp = now + ttl;
                true
            }
            None => {
                self.sessions.insert(session.to_vec(), now + ttl);
                false
            }
        }
    }

    /// Registers handle `id` on `inode` for `session` (idempotent for the same triple).
    pub fn open(
        &mut self,
        id: u64,
        session: &[u8],
        inode: InodeId,
        now: Instant,
        ttl: Duration,
    ) -> Result<(), HandleError> {
        if let Some(h) = self.handles.get(&id) {
            return if h.session == session && h.inode == inode {
                Ok(())
            } else {
                Err(HandleError::Conflict)
            };
        }
        if self.handles.len() >= MAX_OPEN_HANDLES {
            return Err(HandleError::TooMany);
        }
        self.renew(session, now, ttl);
        self.handles.insert(
            id,
            Handle {
                session: session.to_vec(),
                inode,
            },
        );
        *self.open.entry(inode).or_insert(0) += 1;
        Ok(())
    }

    /// Releases handle `id` of `session`; returns its inode if that was its last handle.
    /// `None` as well for an unknown handle (a retried close).
    pub fn close(&mut self, id: u64, session: &[u8]) -> Option<InodeId> {
        match self.handles.get(&id) {
            Some(h) if h.session == session => {}
            _ => return None,
        }
        let h = self.handles.remove(&id)?;
        self.release(h.inode)
    }

    fn release(&mut self, inode: InodeId) -> Option<InodeId> {
        let count = self.open.get_mut(&inode)?;
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.open.remove(&inode);
            return Some(inode);
        }
        None
    }

    /// Whether any handle holds `inode`.
    pub fn is_open(&self, inode: InodeId) -> bool {
        self.open.contains_key(&inode)
    }

    /// Drops sessions expired at `now` and their handles; returns inodes no longer held.
    pub fn expire(&mut self, now: Instant) -> Vec<InodeId> {
        let dead: Vec<Vec<u8>> = self
            .sessions
            .iter()
            .filter(|(_, exp)| **exp <= now)
            .map(|(s, _)| s.clone())
            .collect();
        if dead.is_empty() {
            return Vec::new();
        }
        for s in &dead {
            self.sessions.remove(s);
        }
        let gone: Vec<u64> = self
            .handles
            .iter()
            .filter(|(_, h)| !self.sessions.contains_key(&h.session))
            .map(|(id, _)| *id)
            .collect();
        let mut freed = Vec::new();
        for id in gone {
            if let Some(h) = self.handles.remove(&id) {
                freed.extend(self.release(h.inode));
            }
        }
        freed
    }

    #[cfg(test)]
    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn last_close_reports_the_inode_and_retries_are_harmless() {
        let mut t = HandleTable::default();
        let now = Instant::now();
        t.open(1, b"s", InodeId(5), now, TTL).expect("room");
        t.open(2, b"s", InodeId(5), now, TTL).expect("room");
        t.open(2, b"s", InodeId(5), now, TTL).expect("idempotent");
        assert_eq!(t.handle_count(), 2);
        assert_eq!(
            t.open(2, b"x", InodeId(5), now, TTL),
            Err(HandleError::Conflict)
        );
        assert_eq!(t.close(1, b"s"), None);
        assert!(t.is_open(InodeId(5)));
        assert_eq!(
            t.close(2, b"other"),
            None,
            "another session cannot close it"
        );
        assert_eq!(t.close(2, b"s"), Some(InodeId(5)));
        assert_eq!(t.close(2, b"s"), None);
        assert!(!t.is_open(InodeId(5)));
    }

    #[test]
    fn an_expired_session_releases_its_handles_only() {
        let mut t = HandleTable::default();
        let now = Instant::now();
        t.open(1, b"a", InodeId(5), now, TTL).expect("room");
        t.open(2, b"b", InodeId(6), now, TTL * 3).expect("room");
        assert_eq!(t.expire(now + TTL / 2), Vec::<InodeId>::new());
        assert!(t.renew(b"b", now, TTL * 3));
        assert_eq!(t.expire(now + TTL), vec![InodeId(5)]);
        assert!(!t.is_open(InodeId(5)));
        assert!(t.is_open(InodeId(6)));
        assert!(!t.renew(b"a", now, TTL), "a was forgotten");
    }
}
