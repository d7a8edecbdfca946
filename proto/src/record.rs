//! Record framing for record append: the format every framed record has on disk, shared by
//! the client (which frames and reads records) and the chunkserver (which validates each
//! appended record and indexes the record ids a chunk holds).
//!
//! A framed record is a 32-byte header followed by the payload (all little-endian):
//!
//! ```text
//! magic u32 "RDRC" | payload_len u32 | record_id [16] | payload_crc u32 | header_crc u32 | payload
//! ```
//! `header_crc` covers the 28 bytes before it, `payload_crc` the payload. A record never
//! crosses a chunk boundary and its framed size is at most a quarter of the chunk size
//! ([`max_framed_bytes`]), so a reader needs at most one chunk's worth of context.
//!
//! Between records a chunk may hold padding (zeros up to the chunk end, written when a record
//! did not fit), zero holes, and torn or abandoned copies of records from failed attempts.
//! [`find_record`] resynchronises on the magic: it skips any byte that does not start a
//! header whose CRC matches and whose payload CRC matches, so readers only ever see whole,
//! verified records. The same record (same id) may appear more than once (retries); readers
//! drop duplicates by id.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// "RDRC" little-endian: the first four bytes of every framed record.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"RDRC");
/// Fixed header in front of every payload.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Bytes of a record id.
pub const RECORD_ID_BYTES: usize = 16;

/// A record's identity, chosen by the producer (client id + sequence number) and kept
/// across retries, so replicas and readers can recognise a retried record.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct RecordId(pub [u8; RECORD_ID_BYTES]);

impl RecordId {
    /// The id of record number `seq` of producer `producer` (8 bytes each, big-endian so
    /// ids of one producer sort in append order).
    pub fn new(producer: u64, seq: u64) -> RecordId {
        let mut b = [0u8; RECORD_ID_BYTES];
        b[..8].copy_from_slice(&producer.to_be_bytes());
        b[8..].copy_from_slice(&seq.to_be_bytes());
        RecordId(b)
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({self})")
    }
}

/// Largest framed record (header + payload) a chunk of `chunk_size` bytes accepts: a record
/// that does not fit makes the primary pad the chunk, so bounding records to a quarter
/// bounds the padding to a quarter of each chunk.
pub const fn max_framed_bytes(chunk_size: u64) -> u64 {
    chunk_size / 4
}

/// Framed size of a payload of `len` bytes.
pub const fn framed_len(len: usize) -> usize {
    RECORD_HEADER_BYTES + len
}

/// Frames `payload` under `id`.
pub fn encode(id: RecordId, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(framed_len(payload.len()));
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&id.0);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    debug_assert_eq!(out.len(), RECORD_HEADER_BYTES);
    out.extend_from_slice(payload);
    out
}

/// A header whose magic and CRC check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    id: RecordId,
    payload_len: usize,
    payload_crc: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses the header at the start of `b` (which must hold at least the header).
fn header(b: &[u8]) -> Option<Header> {
    if b.len() < RECORD_HEADER_BYTES || u32_at(b, 0) != RECORD_MAGIC {
        return None;
    }
    if crc32fast::hash(&b[..28]) != u32_at(b, 28) {
        return None;
    }
    let mut id = [0u8; RECORD_ID_BYTES];
    id.copy_from_slice(&b[8..24]);
    Some(Header {
        id: RecordId(id),
        payload_len: u32_at(b, 4) as usize,
        payload_crc: u32_at(b, 24),
    })
}

/// Why a buffer is not exactly one valid framed record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record header is missing or fails its checksum")]
    BadHeader,
    #[error("record announces {announced} payload bytes but {actual} follow")]
    Length { announced: usize, actual: usize },
    #[error("record payload fails its checksum")]
    BadPayload,
}

/// Checks that `framed` is exactly one valid record; returns its id and payload range.
pub fn check(framed: &[u8]) -> Result<(RecordId, Range<usize>), RecordError> {
    let h = header(framed).ok_or(RecordError::BadHeader)?;
    let actual = framed.len() - RECORD_HEADER_BYTES;
    if h.payload_len != actual {
        return Err(RecordError::Length {
            announced: h.payload_len,
            actual,
        });
    }
    let payload = RECORD_HEADER_BYTES..framed.len();
    if crc32fast::hash(&framed[payload.clone()]) != h.payload_crc {
        return Err(RecordError::BadPayload);
    }
    Ok((h.id, payload))
}

/// What [`find_record`] found in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A valid record starting at buffer offset `at`, `framed` bytes long.
    Record {
        at: usize,
        framed: usize,
        id: RecordId,
    },
    /// The buffer may end inside a record: read more and call again with the bytes from
    /// `keep_from` on (nothing before it can start a record).
    NeedMore { keep_from: usize },
    /// No record starts at or after the position (only with `complete`).
    End,
}

/// Finds the first valid record starting at or after `pos` in `buf`.
///
/// `complete` says that `buf` ends where the region ends (end of the chunk's data), so a
/// header or payload cut off by the end of `buf` is torn, not pending. Candidates longer
/// than `max_framed` are rejected, which bounds how much a caller ever buffers.
pub fn find_record(buf: &[u8], pos: usize, complete: bool, max_framed: usize) -> Found {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut p = pos;
    loop {
        let Some(i) = buf
            .get(p..)
            .and_then(|rest| rest.iter().position(|b| *b == magic[0]))
        else {
            return if complete {
                Found::End
            } else {
                Found::NeedMore {
                    keep_from: buf.len(),
                }
            };
        };
        p += i;
        let avail = buf.len() - p;
        if avail < RECORD_HEADER_BYTES {
            // A magic prefix at the very end: wait for the rest, unless nothing comes.
            if complete {
                return Found::End;
            }
            return Found::NeedMore { keep_from: p };
        }
        let Some(h) = header(&buf[p..]) else {
            p += 1;
            continue;
        };
        let framed = framed_len(h.payload_len);
        if framed > max_framed {
            p += 1;
            continue;
        }
        if avail < framed {
            if complete {
                p += 1;
                continue;
            }
            return Found::NeedMore { keep_from: p };
        }
        let payload = &buf[p + RECORD_HEADER_BYTES..p + framed];
        if crc32fast::hash(payload) != h.payload_crc {
            p += 1;
            continue;
        }
        return Found::Record {
            at: p,
            framed,
            id: h.id,
        };
    }
}

/// Every valid record of a complete region, in order: `(offset, framed length, id)`.
/// A valid record's bytes are skipped as a whole, so records nested inside payloads are
/// not reported.
pub fn scan_all(buf: &[u8], max_framed: usize) -> Vec<(usize, usize, RecordId)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Found::Record { at, framed, id } = find_record(buf, pos, true, max_framed) {
        out.push((at, framed, id));
        pos = at + framed;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn a_record_round_trips_and_every_bit_flip_is_caught() {
        let id = RecordId::new(7, 42);
        let framed = encode(id, b"hello, records");
        assert_eq!(framed.len(), framed_len(14));
        assert_eq!(&framed[..4], b"RDRC");
        let (got, payload) = check(&framed).unwrap();
        assert_eq!(got, id);
        assert_eq!(&framed[payload], b"hello, records");
        for i in 0..framed.len() {
            for bit in 0..8 {
                let mut bad = framed.clone();
                bad[i] ^= 1 << bit;
                assert!(check(&bad).is_err(), "flip of bit {bit} at {i} accepted");
            }
        }
        assert_eq!(
            check(&framed[..framed.len() - 1]),
            Err(RecordError::Length {
                announced: 14,
                actual: 13
            })
        );
    }

    #[test]
    fn empty_records_are_valid() {
        let framed = encode(RecordId::new(1, 1), b"");
        assert_eq!(framed.len(), RECORD_HEADER_BYTES);
        assert_eq!(check(&framed).unwrap().1, 32..32);
    }

    #[test]
    fn the_scanner_skips_padding_holes_and_torn_records() {
        let a = encode(RecordId::new(1, 1), b"first");
        let b = encode(RecordId::new(1, 2), &[b'R'; 100]);
        let c = encode(RecordId::new(2, 1), b"third");
        let mut region = Vec::new();
        region.extend_from_slice(&a);
        region.extend_from_slice(&[0u8; 77]); // a zero hole
        region.extend_from_slice(&c[..20]); // a torn header
        let b_at = region.len();
        region.extend_from_slice(&b);
        let mut torn = c.clone();
        let last = torn.len() - 1;
        torn[last] ^= 0xff; // a torn payload
        region.extend_from_slice(&torn);
        region.extend_from_slice(b"RDR"); // a magic prefix at the end
        let found = scan_all(&region, MAX);
        assert_eq!(
            found,
            vec![
                (0, a.len(), RecordId::new(1, 1)),
                (b_at, b.len(), RecordId::new(1, 2))
            ]
        );
    }

    #[test]
    fn an_incomplete_buffer_asks_for_more_from_the_record_start() {
        let a = encode(RecordId::new(3, 3), &[9u8; 1000]);
        let mut buf = vec![0u8; 10];
        buf.extend_from_slice(&a[..500]);
        assert_eq!(
            find_record(&buf, 0, false, MAX),
            Found::NeedMore { keep_from: 10 }
        );
        // The same bytes as the end of the region are torn: nothing is found.
        assert_eq!(find_record(&buf, 0, true, MAX), Found::End);
        buf.extend_from_slice(&a[500..]);
        assert_eq!(
            find_record(&buf, 0, false, MAX),
            Found::Record {
                at: 10,
                framed: a.len(),
                id: RecordId::new(3, 3)
            }
        );
    }

    #[test]
    fn oversized_candidates_are_rejected_so_buffers_stay_bounded() {
        let a = encode(RecordId::new(4, 4), &[1u8; 200]);
        assert_eq!(find_record(&a, 0, true, 100), Found::End);
        assert_eq!(
            find_record(&a, 0, false, 100),
            Found::NeedMore { keep_from: a.len() }
        );
    }

    #[test]
    fn record_ids_display_as_hex_and_sort_by_sequence() {
        let id = RecordId::new(0xab, 2);
        assert_eq!(id.to_string(), "00000000000000ab0000000000000002");
        assert!(RecordId::new(1, 2) < RecordId::new(1, 10));
    }
}
