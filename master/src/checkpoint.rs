//! Checkpoints: `<data>/checkpoint/ckpt-<seq:020>.bin` holding the whole namespace as of op
//! `seq`. Layout: magic `RDFSCKPT` | version u32 | last seq u64 | len u64 | bincode(Namespace)
//! | crc32 of everything before it. Written to `.partial`, fsynced, renamed, dir fsynced.
//! Recovery loads the newest valid one; the two newest are kept.

use std::fs;
use std::path::{Path, PathBuf};

use bincode::Options;

use crate::error::MasterError;
use crate::fsutil::durable_write;
use crate::namespace::{Namespace, NamespaceV1, NamespaceV2, NamespaceV3};

pub const CHECKPOINT_MAGIC: &[u8; 8] = b"RDFSCKPT";
/// 3: chunks carry reference counts and pending copies (snapshots), the namespace keeps the
/// trash entries; still loaded.
const CHECKPOINT_VERSION_V3: u32 = 3;
/// 4: the namespace keeps the epoch history and the witness membership (failover).
pub const CHECKPOINT_VERSION: u32 = 4;
/// 2: inodes carry xattrs, symlinks/FIFOs exist, the namespace keeps orphans; still loaded.
const CHECKPOINT_VERSION_V2: u32 = 2;
/// The format before hard links and xattrs; still loaded (converted).
const CHECKPOINT_VERSION_V1: u32 = 1;
/// Checkpoints kept on disk (the older one covers a damaged newest one).
pub const CHECKPOINTS_KEPT: usize = 2;
/// magic + version + seq + len.
const HEADER_BYTES: usize = 28;
/// Largest namespace image accepted when loading.
pub const MAX_CHECKPOINT_BYTES: u64 = 16 << 30;

fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(MAX_CHECKPOINT_BYTES)
        .reject_trailing_bytes()
}

pub fn checkpoint_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoint")
}

/// Serialises the namespace into a complete checkpoint image (done under the state lock).
pub fn encode(ns: &Namespace, last_seq: u64) -> Result<Vec<u8>, MasterError> {
    let body = codec()
        .serialize(ns)
        .map_err(|e| MasterError::Recovery(format!("encoding checkpoint: {e}")))?;
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len() + 4);
    out.extend_from_slice(CHECKPOINT_MAGIC);
    out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    out.extend_from_slice(&last_seq.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes an image: (last seq, namespace), or why it is invalid.
pub fn decode(buf: &[u8]) -> Result<(u64, Namespace), String> {
    if buf.len() < HEADER_BYTES + 4 {
        return Err(format!("too short ({} bytes)", buf.len()));
    }
    if &buf[..8] != CHECKPOINT_MAGIC {
        return Err("bad magic".into());
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    let mut word = [0u8; 4];
    word.copy_from_slice(crc);
    if crc32fast::hash(body) != u32::from_le_bytes(word) {
        return Err("checksum mismatch".into());
    }
    word.copy_from_slice(&buf[8..12]);
    let version = u32::from_le_bytes(word);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&buf[12..20]);
    let ns = match version {
        CHECKPOINT_VERSION => codec()
            .deserialize(&body[HEADER_BYTES..])
            .map_err(|e| format!("undecodable namespace: {e}"))?,
        CHECKPOINT_VERSION_V3 => codec()
            .deserialize::<NamespaceV3>(&body[HEADER_BYTES..])
            .map_err(|e| format!("undecodable format-3 namespace: {e}"))?
            .into(),
        CHECKPOINT_VERSION_V2 => codec()
            .deserialize::<NamespaceV2>(&body[HEADER_BYTES..])
            .map_err(|e| format!("undecodable format-2 namespace: {e}"))?
            .into(),
        CHECKPOINT_VERSION_V1 => codec()
            .deserialize::<NamespaceV1>(&body[HEADER_BYTES..])
            .map_err(|e| format!("undecodable format-1 namespace: {e}"))?
            .into(),
        _ => return Err(format!("unsupported format version {version}")),
    };
    Ok((u64::from_le_bytes(seq), ns))
}

/// Checkpoint files, newest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, MasterError> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| MasterError::io(dir, "listing checkpoints", e))?;
    for entry in rd {
        let entry = entry.map_err(|e| MasterError::io(dir, "listing checkpoints", e))?;
        let name = entry.file_name();
        let seq = name
            .to_str()
            .and_then(|n| n.strip_prefix("ckpt-"))
            .and_then(|n| n.strip_suffix(".bin"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, entry.path()));
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.0));
    Ok(out)
}

/// Loads the newest valid checkpoint; a damaged one is skipped with a warning.
pub fn load_newest(dir: &Path) -> Result<Option<(u64, Namespace)>, MasterError> {
    for (seq, path) in list(dir)? {
        let buf = fs::read(&path).map_err(|e| MasterError::io(&path, "reading checkpoint", e))?;
        match decode(&buf) {
            Ok((s, ns)) if s == seq => return Ok(Some((s, ns))),
            Ok((s, _)) => {
                tracing::warn!(path = %path.display(), seq = s, "checkpoint seq does not match its name; skipped")
            }
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "invalid checkpoint skipped")
            }
        }
    }
    Ok(None)
}

/// Writes an image durably and removes all but the newest `CHECKPOINTS_KEPT`.
/// Returns the seq of the oldest checkpoint still kept.
pub fn write(dir: &Path, last_seq: u64, image: &[u8]) -> Result<u64, MasterError> {
    let path = dir.join(format!("ckpt-{last_seq:020}.bin"));
    durable_write(&path, image)?;
    let all = list(dir)?;
    for (_, old) in all.iter().skip(CHECKPOINTS_KEPT) {
        fs::remove_file(old).map_err(|e| MasterError::io(old, "removing old checkpoint", e))?;
    }
    let oldest_kept = all
        .iter()
        .take(CHECKPOINTS_KEPT)
        .map(|c| c.0)
        .min()
        .unwrap_or(last_seq);
    Ok(oldest_kept)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use bincode::Options;
    use rdfs_proto::ids::{ChunkId, Epoch, InodeId};
    use serde::Serialize;

    use super::*;
    use crate::namespace::{ChunkMeta, Inode, NewNode, Op, TrashEntry};

    /// Wraps a body in a checkpoint image of the given format version.
    fn image(version: u32, seq: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(CHECKPOINT_MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn format_3_images_load_with_an_empty_ha_history() {
        // The format-3 layout: the namespace fields before the HA metadata.
        #[derive(Serialize)]
        struct V3<'a> {
            inodes: HashMap<InodeId, &'a Inode>,
            chunks: HashMap<ChunkId, ChunkMeta>,
            next_inode: u64,
            next_chunk_id: u64,
            epoch: Epoch,
            orphans: BTreeSet<InodeId>,
            trash: BTreeMap<InodeId, TrashEntry>,
        }
        let mut ns = Namespace::new();
        let node = NewNode {
            mode: 0o755,
            uid: 0,
            gid: 0,
            replication: 0,
            time_ns: 1,
        };
        for op in ns.plan_mkdir("/a", &node, false).unwrap() {
            ns.apply(&op).unwrap();
        }
        let a = ns.resolve("/a").unwrap();
        let old = V3 {
            inodes: [InodeId::ROOT, a]
                .into_iter()
                .map(|id| (id, ns.inode(id).unwrap()))
                .collect(),
            chunks: HashMap::new(),
            next_inode: ns.next_inode().0,
            next_chunk_id: 1,
            epoch: Epoch(1),
            orphans: BTreeSet::new(),
            trash: BTreeMap::new(),
        };
        let body = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .serialize(&old)
            .unwrap();
        let (seq, loaded) = decode(&image(3, 9, &body)).unwrap();
        assert_eq!(seq, 9);
        assert_eq!(loaded, ns, "converted image equals the live namespace");
        assert_eq!(loaded.ha().history(), vec![(Epoch(1), 1)]);
        // And the current format round-trips the HA metadata.
        let mut ns = loaded;
        ns.apply(&Op::NewEpoch {
            epoch: Epoch(2),
            start_seq: 10,
        })
        .unwrap();
        ns.apply(&Op::AddWitness {
            node_id: "n1".into(),
            addr: "127.0.0.1:7".into(),
        })
        .unwrap();
        let (_, back) = decode(&encode(&ns, 11).unwrap()).unwrap();
        assert_eq!(back.ha().history(), vec![(Epoch(1), 1), (Epoch(2), 10)]);
        assert_eq!(back.ha().witnesses.len(), 1);
        assert_eq!(back.epoch(), Epoch(2));
    }
}
