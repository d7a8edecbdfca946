//! Errors of the master process itself (startup, recovery, durability). Request errors
//! travel to clients as `tonic::Status` built from an `ErrorCode`; these do not.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: data directory is locked by another process")]
    Locked { path: PathBuf },
    #[error("{path}: not an rdfs master data directory: {reason}")]
    ForeignDir { path: PathBuf, reason: String },
    #[error("{path}: corrupt at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("recovery failed: {0}")]
    Recovery(String),
    #[error("operation log failed: {0}")]
    Log(String),
    #[error("serving gRPC: {0}")]
    Transport(String),
}

impl MasterError {
    pub(crate) fn io(path: impl Into<PathBuf>, what: &'static str, source: std::io::Error) -> Self {
        MasterError::Io {
            path: path.into(),
            what,
            source,
        }
    }
}
