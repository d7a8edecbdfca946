//! The data plane: a framed TCP protocol for bulk bytes between clients and chunkservers,
//! between chunkservers (pipeline, replication) and from the master (version bumps).
//!
//! A frame is a fixed 20-byte prefix, a bincode [`Msg`] header and a raw payload:
//!
//! ```text
//! magic u32 | header_len u32 | payload_len u32 | header_crc u32 | payload_crc u32 | header | payload
//! ```
//! (all little-endian). Bulk data travels only as payload, never inside bincode, so each byte
//! is copied once into the socket. Lengths are bounded by [`crate::limits`]; anything else is a
//! malformed frame and the connection is closed after an error reply.
//!
//! Conversations (each on a connection that may carry many, one after another):
//! - `Write` → `Data`… (exactly `len` bytes, last frame has `last = true`) → `WriteOk` | `Error`
//! - `Read` → `ReadOk { len }` → `Data`… (`len` bytes) | `Error` (also mid-stream)
//! - `SetVersion` → `Ok` | `Error`
//! - `Replicate` → `Data`… → `Ok` | `Error`
//! - `Ping` → `Pong`; `ChunkInfo` → `ChunkInfoOk` | `Error`
//! - `Append` → `Data`… (one framed record) → `AppendOk` | `ChunkFull` | `Error`
//! - `Pad` → `WriteOk` | `Error` (primary to replicas, when a record did not fit)
//! - `CopyChunk` → `Ok` | `Error` (master: copy a shared chunk locally under a new id)

pub mod codec;
pub mod conn;
pub mod frame;

pub use codec::{
    read_frame, read_frame_into, write_frame, Frame, FrameError, FRAME_MAGIC, FRAME_PREFIX_BYTES,
};
pub use conn::DataConn;
pub use frame::*;
