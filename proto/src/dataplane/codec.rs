//! Async frame codec. Every length is checked before anything is allocated.

use bincode::Options;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::Msg;
use crate::limits::{MAX_FRAME_HEADER_BYTES, MAX_FRAME_PAYLOAD_BYTES};

/// "RDFP" little-endian: the first four bytes of every frame.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"RDFP");
/// Fixed prefix: magic, header_len, payload_len, header_crc, payload_crc.
pub const FRAME_PREFIX_BYTES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame magic {0:#010x}")]
    BadMagic(u32),
    #[error("frame header of {0} bytes exceeds the limit")]
    HeaderTooLarge(usize),
    #[error("frame payload of {0} bytes exceeds the limit")]
    PayloadTooLarge(usize),
    #[error("frame header checksum mismatch")]
    HeaderChecksum,
    #[error("frame payload checksum mismatch")]
    PayloadChecksum,
    #[error("undecodable frame header: {0}")]
    Decode(String),
}

impl FrameError {
    /// True when the peer sent bytes that do not form a valid frame (as opposed to I/O trouble).
    pub fn is_malformed(&self) -> bool {
        !matches!(self, FrameError::Closed | FrameError::Io(_))
    }
}

/// One decoded frame.
#[derive(Debug)]
pub struct Frame {
    pub msg: Msg,
    pub payload: Bytes,
}

fn header_codec() -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_limit(MAX_FRAME_HEADER_BYTES as u64)
        .with_fixint_encoding()
        .reject_trailing_bytes()
}

/// Encodes `msg` and writes the frame. Does not flush: callers flush at the end of a burst.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Msg,
    payload: &[u8],
) -> Result<(), FrameError> {
    let header = header_codec()
        .serialize(msg)
        .map_err(|e| FrameError::Decode(e.to_string()))?;
    if header.len() > MAX_FRAME_HEADER_BYTES {
        return Err(FrameError::HeaderTooLarge(header.len()));
    }
    if payload.len() > MAX_FRAME_PAYLOAD_BYTES {
        return Err(FrameError::PayloadTooLarge(payload.len()));
    }
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    prefix[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    prefix[4..8].copy_from_slice(&(header.len() as u32).to_le_bytes());
    prefix[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    prefix[12..16].copy_from_slice(&crc32fast::hash(&header).to_le_bytes());
    prefix[16..20].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    w.write_all(&prefix).await?;
    w.write_all(&header).await?;
    if !payload.is_empty() {
        w.write_all(payload).await?;
    }
    Ok(())
}

/// Reads one frame. A clean EOF before the first byte is `FrameError::Closed`.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, FrameError> {
    let (msg, payload_len, payload_crc) = read_head(r).await?;
    let mut payload = BytesMut::zeroed(payload_len);
    r.read_exact(&mut payload).await?;
    if crc32fast::hash(&payload) != payload_crc {
        return Err(FrameError::PayloadChecksum);
    }
    Ok(Frame {
        msg,
        payload: payload.freeze(),
    })
}

/// Reads one frame whose payload goes straight into the front of `dst` (no intermediate
/// buffer: bulk reads land where the caller wants them). Returns the message and the
/// payload length. A payload longer than `dst` is `PayloadTooLarge`, refused before any
/// payload byte is read (the connection is unusable afterwards).
pub async fn read_frame_into<R: AsyncRead + Unpin>(
    r: &mut R,
    dst: &mut [u8],
) -> Result<(Msg, usize), FrameError> {
    let (msg, payload_len, payload_crc) = read_head(r).await?;
    if payload_len > dst.len() {
        return Err(FrameError::PayloadTooLarge(payload_len));
    }
    let payload = &mut dst[..payload_len];
    r.read_exact(payload).await?;
    if crc32fast::hash(payload) != payload_crc {
        return Err(FrameError::PayloadChecksum);
    }
    Ok((msg, payload_len))
}

/// Reads and checks a frame's prefix and header; returns the message, the payload length
/// (within the limit) and the payload's expected CRC.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Msg, usize, u32), FrameError> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    let n = r.read(&mut prefix).await?;
    if n == 0 {
        return Err(FrameError::Closed);
    }
    r.read_exact(&mut prefix[n..]).await?;
    let word =
        |i: usize| u32::from_le_bytes([prefix[i], prefix[i + 1], prefix[i + 2], prefix[i + 3]]);
    let magic = word(0);
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let header_len = word(4) as usize;
    let payload_len = word(8) as usize;
    if header_len > MAX_FRAME_HEADER_BYTES {
        return Err(FrameError::HeaderTooLarge(header_len));
    }
    if payload_len > MAX_FRAME_PAYLOAD_BYTES {
        return Err(FrameError::PayloadTooLarge(payload_len));
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header).await?;
    if crc32fast::hash(&header) != word(12) {
        return Err(FrameError::HeaderChecksum);
    }
    let msg: Msg = header_codec()
        .deserialize(&header)
        .map_err(|e| FrameError::Decode(e.to_string()))?;
    Ok((msg, payload_len, word(16)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::frame::*;
    use crate::ids::*;
    use crate::ErrorCode;

    fn sample() -> Msg {
        Msg::Write(WriteRequest {
            fence: Fence {
                chunk_id: ChunkId(7),
                version: ChunkVersion(3),
                epoch: Epoch(1),
                lease_serial: LeaseSerial(9),
                token: vec![],
            },
            offset: 65536,
            len: 5,
            downstream: vec!["127.0.0.1:1".into()],
            sync: true,
            serial: 0,
        })
    }

    async fn encode(msg: &Msg, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        write_frame(&mut buf, msg, payload).await.unwrap();
        buf
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let buf = encode(&sample(), b"hello").await;
        let frame = read_frame(&mut buf.as_slice()).await.unwrap();
        assert_eq!(frame.msg, sample());
        assert_eq!(&frame.payload[..], b"hello");
        let err = Msg::error(ErrorCode::ChecksumMismatch, "block 3");
        let buf = encode(&err, &[]).await;
        assert_eq!(read_frame(&mut buf.as_slice()).await.unwrap().msg, err);
    }

    #[tokio::test]
    async fn every_truncation_is_an_error_not_a_panic() {
        let buf = encode(&sample(), b"hello world").await;
        for cut in 1..buf.len() {
            assert!(read_frame(&mut &buf[..cut]).await.is_err(), "cut at {cut}");
        }
        assert!(matches!(
            read_frame(&mut &buf[..0]).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn every_bit_flip_is_detected() {
        let buf = encode(&sample(), b"hello world").await;
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                let res = read_frame(&mut bad.as_slice()).await;
                assert!(res.is_err(), "flip at byte {i} bit {bit} went unnoticed");
            }
        }
    }

    #[tokio::test]
    async fn frames_read_into_a_buffer_match_read_frame_and_refuse_overflow() {
        let buf = encode(&sample(), b"hello").await;
        let mut dst = [0u8; 8];
        let (msg, n) = read_frame_into(&mut buf.as_slice(), &mut dst)
            .await
            .unwrap();
        assert_eq!((msg, n), (sample(), 5));
        assert_eq!(&dst[..5], b"hello");
        let mut small = [0u8; 4];
        assert!(matches!(
            read_frame_into(&mut buf.as_slice(), &mut small).await,
            Err(FrameError::PayloadTooLarge(5))
        ));
        for cut in 1..buf.len() {
            let res = read_frame_into(&mut &buf[..cut], &mut dst).await;
            assert!(res.is_err(), "cut at {cut}");
        }
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            read_frame_into(&mut bad.as_slice(), &mut dst).await,
            Err(FrameError::PayloadChecksum)
        ));
    }

    #[tokio::test]
    async fn oversized_lengths_are_refused_before_allocation() {
        let mut buf = encode(&Msg::Ping, &[]).await;
        buf[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_frame(&mut buf.as_slice()).await,
            Err(FrameError::PayloadTooLarge(_))
        ));
        let mut buf = encode(&Msg::Ping, &[]).await;
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_frame(&mut buf.as_slice()).await,
            Err(FrameError::HeaderTooLarge(_))
        ));
    }
}
