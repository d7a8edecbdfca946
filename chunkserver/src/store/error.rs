//! Errors of the chunk store, each mapping to one wire [`ErrorCode`].

use std::path::PathBuf;

use rdfs_proto::ids::{ChunkId, ChunkVersion};
use rdfs_proto::record::RecordId;
use rdfs_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {0}: no such chunk")]
    NoSuchChunk(ChunkId),
    #[error("chunk {0}: invalid chunk id")]
    InvalidId(ChunkId),
    #[error("chunk {0}: replica quarantined after a checksum mismatch")]
    Quarantined(ChunkId),
    #[error("chunk {chunk}: checksum mismatch in block {block}")]
    ChecksumMismatch { chunk: ChunkId, block: u64 },
    #[error("chunk {chunk}: range {offset}+{len} exceeds the chunk size {limit}")]
    OutOfRange {
        chunk: ChunkId,
        offset: u64,
        len: u64,
        limit: u64,
    },
    #[error("chunk {0}: no space left on device")]
    NoSpace(ChunkId),
    #[error("chunk {chunk}: stored version {stored} is newer than {requested}")]
    VersionRegression {
        chunk: ChunkId,
        stored: ChunkVersion,
        requested: ChunkVersion,
    },
    #[error("chunk {chunk}: replica holds version {held}, the request is for {wanted}")]
    WrongVersion {
        chunk: ChunkId,
        held: ChunkVersion,
        wanted: ChunkVersion,
    },
    #[error("chunk {chunk}: mutation serial {serial} is not after the last applied {last}")]
    SerialOutOfOrder {
        chunk: ChunkId,
        serial: u64,
        last: u64,
    },
    #[error("chunk {chunk}: corrupt meta: {reason}")]
    CorruptMeta { chunk: ChunkId, reason: String },
    #[error("chunk {chunk}: replica copy has {got} bytes, expected {expected}")]
    ShortReplica {
        chunk: ChunkId,
        got: u64,
        expected: u64,
    },
    #[error(
        "chunk {chunk}: record {record} is held with {held} framed bytes, the retry has {got}"
    )]
    RecordConflict {
        chunk: ChunkId,
        record: RecordId,
        held: u64,
        got: u64,
    },
    #[error("chunk {chunk}: appended bytes are not one valid framed record: {reason}")]
    BadRecord { chunk: ChunkId, reason: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// The code a data-plane peer receives for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::NoSuchChunk(_) => ErrorCode::NoSuchChunk,
            StoreError::InvalidId(_) | StoreError::OutOfRange { .. } => ErrorCode::InvalidArgument,
            StoreError::Quarantined(_) | StoreError::ChecksumMismatch { .. } => {
                ErrorCode::ChecksumMismatch
            }
            StoreError::NoSpace(_) => ErrorCode::NoSpace,
            StoreError::VersionRegression { .. } | StoreError::WrongVersion { .. } => {
                ErrorCode::StaleVersion
            }
            StoreError::SerialOutOfOrder { .. } => ErrorCode::LeaseMismatch,
            StoreError::CorruptMeta { .. } => ErrorCode::Corrupt,
            StoreError::ShortReplica { .. } | StoreError::BadRecord { .. } => ErrorCode::Malformed,
            StoreError::RecordConflict { .. } => ErrorCode::InvalidArgument,
            StoreError::Io { .. } => ErrorCode::Io,
            StoreError::Task(_) => ErrorCode::Internal,
        }
    }

    /// Wraps an I/O error, turning a full disk into [`StoreError::NoSpace`].
    pub(crate) fn io(
        chunk: ChunkId,
        op: &'static str,
        path: &std::path::Path,
        e: std::io::Error,
    ) -> Self {
        if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
            return StoreError::NoSpace(chunk);
        }
        StoreError::Io {
            op,
            path: path.to_path_buf(),
            source: e,
        }
    }
}
