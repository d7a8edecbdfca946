//! Test helpers: a namespace that records the ops applied to it, so tests can check that
//! replaying the log reproduces it (determinism of replay), and checkpoint images in the
//! older formats, for the upgrade tests.

use super::perm::Cred;
use super::*;

pub(super) fn user(uid: u32) -> Cred {
    Cred {
        uid,
        gid: uid,
        groups: vec![],
    }
}

pub(super) struct Recorder {
    pub ns: Namespace,
    pub log: Vec<Op>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            ns: Namespace::new(),
            log: Vec::new(),
        }
    }

    /// Applies planned ops; returns the chunks they freed, sorted.
    pub fn apply_all(&mut self, ops: Vec<Op>) -> Vec<ChunkId> {
        let mut freed = Vec::new();
        for op in ops {
            freed.extend(self.ns.apply(&op).expect("planned op applies").freed_chunks);
            self.log.push(op);
        }
        freed.sort();
        freed
    }

    pub fn apply(&mut self, op: Op) -> Vec<ChunkId> {
        self.apply_all(vec![op])
    }

    /// `mkdir -p`.
    pub fn mkdir(&mut self, p: &str, uid: u32, mode: u32) {
        let node = NewNode {
            mode,
            uid,
            gid: uid,
            replication: 0,
            time_ns: 1,
        };
        let ops = self.ns.plan_mkdir(p, &node, true).expect("mkdir plans");
        self.apply_all(ops);
    }

    /// Creates file `p` with `chunks` chunks at version 1; returns its inode.
    pub fn file(&mut self, p: &str, uid: u32, mode: u32, chunks: u64) -> InodeId {
        let node = NewNode {
            mode,
            uid,
            gid: uid,
            replication: 3,
            time_ns: 2,
        };
        let op = self.ns.plan_create(p, &node, false).expect("create plans");
        self.apply(op);
        let id = self.ns.resolve(p).expect("created");
        for index in 0..chunks {
            let chunk_id = self.ns.next_chunk_id();
            self.apply(Op::AllocateChunk {
                inode: id,
                index,
                chunk_id,
                version: ChunkVersion(1),
            });
        }
        id
    }

    pub fn check_replay(&self) {
        let mut fresh = Namespace::new();
        for op in &self.log {
            fresh.apply(op).expect("replay applies");
        }
        assert_eq!(fresh, self.ns, "replay reproduces the namespace");
    }
}

/// A checkpoint image of format `version` holding `body` (the namespace as that format
/// serialized it), framed as `checkpoint::decode` expects: magic, version, op-log sequence,
/// body length, body, CRC32 of all that.
pub(super) fn legacy_checkpoint<T: serde::Serialize>(version: u32, seq: u64, body: &T) -> Vec<u8> {
    use bincode::Options;
    let body = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .serialize(body)
        .expect("old namespace serializes");
    let mut image = Vec::new();
    image.extend_from_slice(crate::checkpoint::CHECKPOINT_MAGIC);
    image.extend_from_slice(&version.to_le_bytes());
    image.extend_from_slice(&seq.to_le_bytes());
    image.extend_from_slice(&(body.len() as u64).to_le_bytes());
    image.extend_from_slice(&body);
    let crc = crc32fast::hash(&image);
    image.extend_from_slice(&crc.to_le_bytes());
    image
}
