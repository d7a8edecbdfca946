//! The chunk map (memory only, rebuilt from registrations, heartbeats and block reports):
//! chunkservers, replica locations with their reported versions, replicas reported bad,
//! queued commands per chunkserver and in-flight re-replications.
//!
//! Version rule (SPEC): with master version `v`, a replica at `v` is current; a replica at
//! `v - 1` is current too as long as no replica is known to hold `v` (the grant that
//! bumped to `v` never completed). Everything older is stale.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use rdfs_proto::ids::{ChunkId, ChunkVersion, ChunkserverId};
use rdfs_proto::pb::{command, Command, DeleteChunkCommand, ScrubProgress};

/// Commands queued for one chunkserver; beyond this new ones are dropped (scans and block
/// reports regenerate them).
pub const MAX_QUEUED_COMMANDS: usize = 4096;
/// Deletes handed to one chunkserver per heartbeat (deletion is the dangerous direction).
pub const MAX_DELETES_PER_HEARTBEAT: usize = 64;
/// Default bound on concurrent copies one source serves (`--max-transfers-per-source`).
pub const DEFAULT_MAX_TRANSFERS_PER_SOURCE: u32 = 4;

/// Where a chunkserver is in decommissioning (`dfs admin decommission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// In service: takes new replicas, its replicas count towards replication.
    Active,
    /// Draining: takes nothing new; its replicas still serve reads and act as copy
    /// sources but no longer count, so every chunk it holds is copied elsewhere.
    Decommissioning,
    /// Every chunk it held has its full replication elsewhere; safe to stop.
    Decommissioned,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub id: ChunkserverId,
    pub addr: String,
    pub capacity: u64,
    pub used: u64,
    pub chunk_count: u64,
    pub last_heartbeat: Instant,
    pub live: bool,
    pub no_space: bool,
    /// Re-replications this server is the source of.
    pub active_transfers: u32,
    pub drain: Drain,
    /// Chunks it holds that are still short of replicas elsewhere (while draining).
    pub drain_remaining: u64,
    /// When the last full block report (registration included) arrived, and its size.
    pub last_block_report: Instant,
    pub block_report_chunks: u64,
    /// Replicas this server reported corrupt (scrubber or reads) since registration.
    pub corrupt_found: u64,
    /// The scrubber's progress from the last heartbeat.
    pub scrub: ScrubProgress,
    commands: VecDeque<Command>,
}

impl Server {
    pub fn free(&self) -> u64 {
        self.capacity.saturating_sub(self.used)
    }
    /// May receive new replicas.
    pub fn placeable(&self) -> bool {
        self.live && !self.no_space && self.drain == Drain::Active
    }
    /// Its replicas count towards a chunk's replication.
    pub fn counts(&self) -> bool {
        self.live && self.drain == Drain::Active
    }
    /// The state names of the CLI contract.
    pub fn state_name(&self) -> &'static str {
        match (self.drain, self.live) {
            (Drain::Decommissioned, _) => "decommissioned",
            (_, false) => "dead",
            (Drain::Decommissioning, true) => "decommissioning",
            (Drain::Active, true) => "live",
        }
    }
    pub fn queued_commands(&self) -> usize {
        self.commands.len()
    }
}

/// A re-replication ordered and not yet reported by its target.
#[derive(Debug, Clone, Copy)]
pub struct PendingCopy {
    pub source: ChunkserverId,
    pub deadline: Instant,
}

/// Room for 2^10 registrations per boot millisecond; ids stay below 2^53 (exact in JSON).
const SERVER_ID_BOOT_SHIFT: u32 = 10;

#[derive(Debug, Default)]
pub struct ChunkMap {
    servers: BTreeMap<ChunkserverId, Server>,
    by_node: HashMap<String, ChunkserverId>,
    next_server_id: u64,
    replicas: HashMap<ChunkId, BTreeMap<ChunkserverId, ChunkVersion>>,
    bad: HashMap<ChunkId, BTreeSet<ChunkserverId>>,
    /// Highest version some replica is known to have persisted (grant completed).
    confirmed: HashMap<ChunkId, ChunkVersion>,
    /// Ordered by chunk so `pending_for` is a range lookup (the scan asks for every chunk).
    pending: BTreeMap<(ChunkId, ChunkserverId), PendingCopy>,
    /// Data-plane addresses being (or done being) decommissioned; survives re-registration.
    draining: HashMap<String, Drain>,
    /// Largest size any replica of a chunk reported (for the balancer's byte accounting).
    sizes: HashMap<ChunkId, u64>,
}

impl ChunkMap {
    /// A map whose server ids start from this boot's wall-clock time, so an id handed out
    /// by an earlier run of the master is never given to another chunkserver now: a
    /// chunkserver that heartbeats with an id from before a restart is told to register
    /// again instead of being taken for another server.
    pub fn with_boot_ids() -> Self {
        let boot_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        ChunkMap {
            next_server_id: boot_ms.saturating_mul(1 << SERVER_ID_BOOT_SHIFT),
            ..ChunkMap::default()
        }
    }

    /// Registers (or re-registers) a server: same node id → same server id. Its old
    /// locations are forgotten; the full report that comes with registration refills them.
    pub fn register(&mut self, addr: &str, node_id: &str, now: Instant) -> ChunkserverId {
        let key = if node_id.is_empty() { addr } else { node_id };
        let id = match self.by_node.get(key) {
            Some(id) => *id,
            None => {
                self.next_server_id += 1;
                let id = ChunkserverId(self.next_server_id);
                self.by_node.insert(key.to_string(), id);
                id
            }
        };
        self.drop_locations(id);
        let drain = self.draining.get(addr).copied().unwrap_or(Drain::Active);
        self.servers.insert(
            id,
            Server {
                id,
                addr: addr.to_string(),
                capacity: 0,
                used: 0,
                chunk_count: 0,
                last_heartbeat: now,
                live: true,
                no_space: false,
                active_transfers: 0,
                drain,
                drain_remaining: 0,
                last_block_report: now,
                block_report_chunks: 0,
                corrupt_found: 0,
                scrub: ScrubProgress::default(),
                commands: VecDeque::new(),
            },
        );
        id
    }

    /// Sets a server's decommission state by data-plane address (remembered across
    /// re-registrations); `None` when no server ever registered with that address.
    pub fn set_drain(&mut self, addr: &str, drain: Drain) -> Option<ChunkserverId> {
        let ids: Vec<ChunkserverId> = self
            .servers
            .values()
            .filter(|s| s.addr == addr)
            .map(|s| s.id)
            .collect();
        if ids.is_empty() {
            return None;
        }
        match drain {
            Drain::Active => self.draining.remove(addr),
            d => self.draining.insert(addr.to_string(), d),
        };
        for id in &ids {
            if let Some(s) = self.servers.get_mut(id) {
                s.drain = drain;
            }
        }
        // The live one when several ids share the address (a re-registered node).
        ids.iter()
            .copied()
            .find(|id| self.servers.get(id).is_some_and(|s| s.live))
            .or(ids.first().copied())
    }

    pub fn note_size(&mut self, chunk: ChunkId, size: u64) {
        let s = self.sizes.entry(chunk).or_default();
        *s = (*s).max(size);
    }
    pub fn size_of(&self, chunk: ChunkId) -> u64 {
        self.sizes.get(&chunk).copied().unwrap_or(0)
    }

    pub fn server(&self, id: ChunkserverId) -> Option<&Server> {
        self.servers.get(&id)
    }
    pub fn server_mut(&mut self, id: ChunkserverId) -> Option<&mut Server> {
        self.servers.get_mut(&id)
    }
    pub fn servers(&self) -> impl Iterator<Item = &Server> {
        self.servers.values()
    }
    pub fn live_servers(&self) -> impl Iterator<Item = &Server> {
        self.servers.values().filter(|s| s.live)
    }
    pub fn live_by_addr(&self, addr: &str) -> Option<ChunkserverId> {
        self.live_servers().find(|s| s.addr == addr).map(|s| s.id)
    }
    pub fn addr(&self, id: ChunkserverId) -> Option<&str> {
        self.servers.get(&id).map(|s| s.addr.as_str())
    }

    /// Declares a server dead: its locations and in-flight copies are dropped.
    pub fn mark_dead(&mut self, id: ChunkserverId) {
        if let Some(s) = self.servers.get_mut(&id) {
            s.live = false;
            s.commands.clear();
            s.active_transfers = 0;
        }
        self.drop_locations(id);
    }

    fn drop_locations(&mut self, id: ChunkserverId) {
        self.replicas.retain(|_, r| {
            r.remove(&id);
            !r.is_empty()
        });
        self.bad.retain(|_, b| {
            b.remove(&id);
            !b.is_empty()
        });
        let mut freed_sources = Vec::new();
        self.pending.retain(|(_, target), p| {
            let keep = *target != id && p.source != id;
            if !keep {
                freed_sources.push(p.source);
            }
            keep
        });
        for s in freed_sources {
            self.release_transfer(s);
        }
    }

    pub fn replicas(
        &self,
        chunk: ChunkId,
    ) -> impl Iterator<Item = (ChunkserverId, ChunkVersion)> + '_ {
        self.replicas
            .get(&chunk)
            .into_iter()
            .flatten()
            .map(|(s, v)| (*s, *v))
    }
    pub fn holds(&self, chunk: ChunkId, server: ChunkserverId) -> bool {
        self.replicas
            .get(&chunk)
            .is_some_and(|r| r.contains_key(&server))
    }
    pub fn set_location(&mut self, server: ChunkserverId, chunk: ChunkId, v: ChunkVersion) {
        self.replicas.entry(chunk).or_default().insert(server, v);
    }
    pub fn remove_location(&mut self, server: ChunkserverId, chunk: ChunkId) {
        if let Some(r) = self.replicas.get_mut(&chunk) {
            r.remove(&server);
            if r.is_empty() {
                self.replicas.remove(&chunk);
            }
        }
    }
    /// Forgets a chunk entirely (its file is gone); returns its holders.
    pub fn forget_chunk(&mut self, chunk: ChunkId) -> Vec<(ChunkserverId, ChunkVersion)> {
        self.bad.remove(&chunk);
        self.confirmed.remove(&chunk);
        self.sizes.remove(&chunk);
        self.replicas.remove(&chunk).into_iter().flatten().collect()
    }

    pub fn confirm(&mut self, chunk: ChunkId, v: ChunkVersion) {
        let c = self.confirmed.entry(chunk).or_default();
        *c = (*c).max(v);
    }

    /// Whether a replica at `rv` is current for master version `v` (see module docs).
    pub fn is_current(&self, chunk: ChunkId, v: ChunkVersion, rv: ChunkVersion) -> bool {
        if rv == v {
            return true;
        }
        if rv.0 + 1 != v.0 {
            return false;
        }
        let confirmed = self.confirmed.get(&chunk).is_some_and(|c| *c >= v);
        !confirmed && !self.replicas(chunk).any(|(_, x)| x == v)
    }

    /// Live, not-bad replicas holding a current version, in server-id order.
    pub fn current_replicas(&self, chunk: ChunkId, v: ChunkVersion) -> Vec<ChunkserverId> {
        self.replicas(chunk)
            .filter(|(s, rv)| {
                self.servers.get(s).is_some_and(|x| x.live)
                    && !self.is_bad(chunk, *s)
                    && self.is_current(chunk, v, *rv)
            })
            .map(|(s, _)| s)
            .collect()
    }

    /// Current replicas on servers that count (live, not draining): what replication
    /// health is judged by.
    pub fn counted_replicas(&self, chunk: ChunkId, v: ChunkVersion) -> Vec<ChunkserverId> {
        let mut out = self.current_replicas(chunk, v);
        out.retain(|s| self.servers.get(s).is_some_and(Server::counts));
        out
    }

    /// Copies ordered and not yet reported, all chunks.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    pub fn mark_bad(&mut self, server: ChunkserverId, chunk: ChunkId) {
        self.bad.entry(chunk).or_default().insert(server);
        self.remove_location(server, chunk);
    }
    pub fn clear_bad(&mut self, server: ChunkserverId, chunk: ChunkId) {
        if let Some(b) = self.bad.get_mut(&chunk) {
            b.remove(&server);
            if b.is_empty() {
                self.bad.remove(&chunk);
            }
        }
    }
    pub fn is_bad(&self, chunk: ChunkId, server: ChunkserverId) -> bool {
        self.bad.get(&chunk).is_some_and(|b| b.contains(&server))
    }
    pub fn has_bad(&self, chunk: ChunkId) -> bool {
        self.bad.contains_key(&chunk)
    }
    /// Chunks with bad markers held by `server` (for full-report reconciliation).
    pub fn bad_on(&self, server: ChunkserverId) -> Vec<ChunkId> {
        self.bad
            .iter()
            .filter(|(_, b)| b.contains(&server))
            .map(|(c, _)| *c)
            .collect()
    }
    /// Every (chunk, server) location in the map.
    pub fn all_locations(&self) -> impl Iterator<Item = (ChunkId, ChunkserverId)> + '_ {
        self.replicas
            .iter()
            .flat_map(|(c, r)| r.keys().map(move |s| (*c, *s)))
    }

    /// Chunks `server` holds according to the map.
    pub fn chunks_on(&self, server: ChunkserverId) -> Vec<ChunkId> {
        self.replicas
            .iter()
            .filter(|(_, r)| r.contains_key(&server))
            .map(|(c, _)| *c)
            .collect()
    }

    /// Queues a command; false (dropped) when the queue is full or the server unknown.
    pub fn queue(&mut self, server: ChunkserverId, cmd: Command) -> bool {
        match self.servers.get_mut(&server) {
            Some(s) if s.commands.len() < MAX_QUEUED_COMMANDS => {
                s.commands.push_back(cmd);
                true
            }
            _ => false,
        }
    }

    /// Whether a delete for this chunk is already queued on the server.
    pub fn delete_queued(&self, server: ChunkserverId, chunk: ChunkId) -> bool {
        self.servers.get(&server).is_some_and(|s| {
            s.commands
                .iter()
                .any(|c| matches!(&c.kind, Some(command::Kind::Delete(d)) if d.chunk_id == chunk.0))
        })
    }

    /// Takes the commands for one heartbeat: every replicate, at most
    /// `MAX_DELETES_PER_HEARTBEAT` deletes; the rest stay queued in order.
    pub fn drain(&mut self, server: ChunkserverId) -> Vec<Command> {
        let Some(s) = self.servers.get_mut(&server) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut keep = VecDeque::new();
        let mut deletes = 0;
        for cmd in s.commands.drain(..) {
            let is_delete = matches!(cmd.kind, Some(command::Kind::Delete(_)));
            if is_delete && deletes == MAX_DELETES_PER_HEARTBEAT {
                keep.push_back(cmd);
                continue;
            }
            deletes += usize::from(is_delete);
            out.push(cmd);
        }
        s.commands = keep;
        out
    }

    pub fn add_pending(&mut self, chunk: ChunkId, target: ChunkserverId, p: PendingCopy) {
        if let Some(s) = self.servers.get_mut(&p.source) {
            s.active_transfers += 1;
        }
        self.pending.insert((chunk, target), p);
    }
    /// The target reported the copy (or it is abandoned).
    pub fn finish_pending(&mut self, chunk: ChunkId, target: ChunkserverId) -> bool {
        match self.pending.remove(&(chunk, target)) {
            Some(p) => {
                self.release_transfer(p.source);
                true
            }
            None => false,
        }
    }
    /// A chunk's version was bumped: copies ordered at the old version would fail at their
    /// source (or make a stale replica), so they are dropped and the next scan orders new ones.
    pub fn cancel_pending(&mut self, chunk: ChunkId) -> usize {
        let targets = self.pending_for(chunk);
        for t in &targets {
            self.finish_pending(chunk, *t);
        }
        targets.len()
    }

    pub fn pending_for(&self, chunk: ChunkId) -> Vec<ChunkserverId> {
        self.pending
            .range((chunk, ChunkserverId(0))..=(chunk, ChunkserverId(u64::MAX)))
            .map(|((_, t), _)| *t)
            .collect()
    }
    /// Drops copies past their deadline; returns them.
    pub fn expire_pending(&mut self, now: Instant) -> Vec<(ChunkId, ChunkserverId)> {
        let expired: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for (c, t) in &expired {
            self.finish_pending(*c, *t);
        }
        expired
    }
    fn release_transfer(&mut self, source: ChunkserverId) {
        if let Some(s) = self.servers.get_mut(&source) {
            s.active_transfers = s.active_transfers.saturating_sub(1);
        }
    }
}

/// A delete command for one replica.
pub fn delete_command(chunk: ChunkId, version: ChunkVersion) -> Command {
    Command {
        kind: Some(command::Kind::Delete(DeleteChunkCommand {
            chunk_id: chunk.0,
            version: version.0,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_of_a_restarted_master_never_reuse_earlier_ones() {
        let now = Instant::now();
        let mut before = ChunkMap::with_boot_ids();
        let old = before.register("a:1", "node-a", now);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut after = ChunkMap::with_boot_ids();
        let new = after.register("b:1", "node-b", now);
        assert!(new.0 > old.0, "{new} must not collide with {old}");
        assert!(
            after.server(old).is_none(),
            "an old id is unknown after a restart"
        );
        assert!(new.0 < 1 << 53, "ids stay exact in JSON");
    }

    #[test]
    fn version_rule_accepts_v_minus_one_until_v_is_known() {
        let now = Instant::now();
        let mut m = ChunkMap::default();
        let a = m.register("a:1", "na", now);
        let b = m.register("b:1", "nb", now);
        let c = ChunkId(5);
        m.set_location(a, c, ChunkVersion(3));
        assert_eq!(m.current_replicas(c, ChunkVersion(4)), vec![a]);
        assert!(!m.is_current(c, ChunkVersion(4), ChunkVersion(2)));
        m.set_location(b, c, ChunkVersion(4));
        assert_eq!(m.current_replicas(c, ChunkVersion(4)), vec![b]);
        // Once v is confirmed, v-1 stays stale even if the v holder dies.
        m.confirm(c, ChunkVersion(4));
        m.mark_dead(b);
        assert!(m.current_replicas(c, ChunkVersion(4)).is_empty());
    }

    #[test]
    fn drain_throttles_deletes_and_keeps_the_rest() {
        let mut m = ChunkMap::default();
        let a = m.register("a:1", "na", Instant::now());
        for i in 0..(MAX_DELETES_PER_HEARTBEAT as u64 + 10) {
            assert!(m.queue(a, delete_command(ChunkId(i + 1), ChunkVersion(1))));
        }
        assert_eq!(m.drain(a).len(), MAX_DELETES_PER_HEARTBEAT);
        assert_eq!(m.drain(a).len(), 10);
        assert!(m.drain(a).is_empty());
    }

    #[test]
    fn reregistering_node_keeps_its_id() {
        let now = Instant::now();
        let mut m = ChunkMap::default();
        let a = m.register("a:1", "node-a", now);
        m.set_location(a, ChunkId(1), ChunkVersion(1));
        assert_eq!(m.register("a:2", "node-a", now), a);
        assert_eq!(m.addr(a), Some("a:2"));
        assert!(!m.holds(ChunkId(1), a));
        assert_ne!(m.register("b:1", "node-b", now), a);
    }
}
