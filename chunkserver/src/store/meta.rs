//! The `.meta` file of one replica: identity, version, length and one CRC32 per block.
//!
//! Layout (little-endian):
//! ```text
//! magic "RDFSCHNK" | format u32 | chunk_id u64 | version u64 | len u64 | lease_serial u64
//! | last_serial u64 | block_count u32 | crc u32 × block_count | meta_crc u32
//! ```
//! `meta_crc` covers every byte before it. Invariant: `block_count == ceil(len / BLOCK_SIZE)`.
//! A meta that fails any check is never trusted: the replica is reported bad instead.

use rdfs_proto::ids::{ChunkId, ChunkVersion, LeaseSerial};
use rdfs_proto::limits::{BLOCK_SIZE, MAX_CHUNK_SIZE};

/// First bytes of every meta file.
pub const META_MAGIC: &[u8; 8] = b"RDFSCHNK";
/// Bumped on any layout change; older formats get an upgrade path, never a reinterpretation.
pub const META_FORMAT_VERSION: u32 = 1;
/// Bytes before the CRC array: magic, format, id, version, len, lease serial, last serial, count.
const META_FIXED_BYTES: usize = 8 + 4 + 8 * 5 + 4;
/// Most blocks a chunk can have; bounds what a corrupt count can make us allocate.
const MAX_BLOCKS: u64 = MAX_CHUNK_SIZE / BLOCK_SIZE;

/// Everything the meta file records about one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkMeta {
    pub chunk_id: ChunkId,
    pub version: ChunkVersion,
    /// Bytes of data the replica holds.
    pub len: u64,
    /// Serial of the lease the master announced with the version (0: none yet).
    pub lease_serial: LeaseSerial,
    /// Highest mutation serial applied at this version (reset by a version change).
    pub last_serial: u64,
    /// CRC32 of each `BLOCK_SIZE` block; the last covers only the bytes up to `len`.
    pub crcs: Vec<u32>,
}

impl ChunkMeta {
    pub fn new(chunk_id: ChunkId, version: ChunkVersion, lease_serial: LeaseSerial) -> Self {
        ChunkMeta {
            chunk_id,
            version,
            len: 0,
            lease_serial,
            last_serial: 0,
            crcs: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        debug_assert_eq!(self.crcs.len() as u64, blocks_for(self.len));
        let mut out = Vec::with_capacity(META_FIXED_BYTES + 4 * self.crcs.len() + 4);
        out.extend_from_slice(META_MAGIC);
        out.extend_from_slice(&META_FORMAT_VERSION.to_le_bytes());
        for word in [
            self.chunk_id.0,
            self.version.0,
            self.len,
            self.lease_serial.0,
            self.last_serial,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&(self.crcs.len() as u32).to_le_bytes());
        for crc in &self.crcs {
            out.extend_from_slice(&crc.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a meta file that should belong to `expected`.
    pub fn decode(bytes: &[u8], expected: ChunkId) -> Result<ChunkMeta, String> {
        if bytes.len() < META_FIXED_BYTES + 4 {
            return Err(format!("meta of {} bytes is too short", bytes.len()));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored_crc = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if crc32fast::hash(body) != stored_crc {
            return Err("meta checksum mismatch".into());
        }
        if &body[..8] != META_MAGIC {
            return Err("bad meta magic".into());
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&body[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let format = u32_at(8);
        if format != META_FORMAT_VERSION {
            return Err(format!("unknown meta format version {format}"));
        }
        let meta = ChunkMeta {
            chunk_id: ChunkId(u64_at(12)),
            version: ChunkVersion(u64_at(20)),
            len: u64_at(28),
            lease_serial: LeaseSerial(u64_at(36)),
            last_serial: u64_at(44),
            crcs: Vec::new(),
        };
        let count = u64::from(u32_at(52));
        if meta.chunk_id != expected {
            return Err(format!("meta names chunk {} instead", meta.chunk_id));
        }
        if count > MAX_BLOCKS || count != blocks_for(meta.len) {
            return Err(format!("{count} block checksums for {} bytes", meta.len));
        }
        if body.len() != META_FIXED_BYTES + 4 * count as usize {
            return Err("meta length does not match its block count".into());
        }
        let crcs = (0..count as usize)
            .map(|i| u32_at(META_FIXED_BYTES + 4 * i))
            .collect();
        Ok(ChunkMeta { crcs, ..meta })
    }
}

/// Number of blocks holding `len` bytes.
pub fn blocks_for(len: u64) -> u64 {
    len.div_ceil(BLOCK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChunkMeta {
        ChunkMeta {
            chunk_id: ChunkId(0xabc),
            version: ChunkVersion(7),
            len: BLOCK_SIZE + 5,
            lease_serial: LeaseSerial(3),
            last_serial: 11,
            crcs: vec![0xdead_beef, 42],
        }
    }

    #[test]
    fn meta_round_trips() {
        let bytes = sample().encode();
        assert_eq!(&bytes[..8], b"RDFSCHNK");
        assert_eq!(ChunkMeta::decode(&bytes, ChunkId(0xabc)).unwrap(), sample());
    }

    #[test]
    fn every_bit_flip_and_truncation_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                ChunkMeta::decode(&bad, ChunkId(0xabc)).is_err(),
                "flip at {i}"
            );
            assert!(
                ChunkMeta::decode(&bytes[..i], ChunkId(0xabc)).is_err(),
                "cut at {i}"
            );
        }
    }

    #[test]
    fn meta_of_another_chunk_is_refused() {
        let bytes = sample().encode();
        let err = ChunkMeta::decode(&bytes, ChunkId(0xabd)).unwrap_err();
        assert!(err.contains("2748"), "{err}");
    }
}
