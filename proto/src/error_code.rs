//! The one stable wire error code. Numbers are never reordered or reused.
//!
//! Control plane: carried in `tonic::Status` metadata (`rdfs-error-code`) next to a
//! matching gRPC code. Data plane: carried in `dataplane::Msg::Error`.

use serde::{Deserialize, Serialize};

/// Metadata key holding the numeric [`ErrorCode`] on a `tonic::Status`.
pub const ERROR_CODE_METADATA_KEY: &str = "rdfs-error-code";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(i32)]
pub enum ErrorCode {
    Unspecified = 0,
    NotFound = 1,
    AlreadyExists = 2,
    NotADirectory = 3,
    IsADirectory = 4,
    NameTooLong = 5,
    InvalidArgument = 6,
    DirectoryNotEmpty = 7,
    PermissionDenied = 8,
    NoSpace = 9,
    StaleVersion = 10,
    StaleEpoch = 11,
    ChecksumMismatch = 12,
    Unavailable = 13,
    Io = 14,
    NotPrimary = 15,
    SafeMode = 16,
    ClusterMismatch = 17,
    Internal = 18,
    Timeout = 19,
    Corrupt = 20,
    NoSuchChunk = 21,
    Busy = 22,
    InvalidName = 23,
    Malformed = 24,
    LeaseMismatch = 25,
    /// EPERM: not allowed whatever the mode bits say (chown by non-root, hard link to a dir).
    OperationNotPermitted = 26,
    /// ENODATA: no such extended attribute.
    NoData = 27,
    /// The operation is not supported for this object.
    NotSupported = 28,
}

impl ErrorCode {
    pub fn from_i32(v: i32) -> ErrorCode {
        use ErrorCode::*;
        match v {
            1 => NotFound,
            2 => AlreadyExists,
            3 => NotADirectory,
            4 => IsADirectory,
            5 => NameTooLong,
            6 => InvalidArgument,
            7 => DirectoryNotEmpty,
            8 => PermissionDenied,
            9 => NoSpace,
            10 => StaleVersion,
            11 => StaleEpoch,
            12 => ChecksumMismatch,
            13 => Unavailable,
            14 => Io,
            15 => NotPrimary,
            16 => SafeMode,
            17 => ClusterMismatch,
            18 => Internal,
            19 => Timeout,
            20 => Corrupt,
            21 => NoSuchChunk,
            22 => Busy,
            23 => InvalidName,
            24 => Malformed,
            25 => LeaseMismatch,
            26 => OperationNotPermitted,
            27 => NoData,
            28 => NotSupported,
            _ => Unspecified,
        }
    }

    /// Human cause, as printed after `dfs: PATH: `.
    pub fn describe(self) -> &'static str {
        use ErrorCode::*;
        match self {
            Unspecified => "unknown error",
            NotFound => "No such file or directory",
            AlreadyExists => "File exists",
            NotADirectory => "Not a directory",
            IsADirectory => "Is a directory",
            NameTooLong => "File name too long",
            InvalidArgument => "Invalid argument",
            DirectoryNotEmpty => "Directory not empty",
            PermissionDenied => "Permission denied",
            NoSpace => "No space left on device",
            StaleVersion => "stale chunk version",
            StaleEpoch => "stale master epoch",
            ChecksumMismatch => "checksum mismatch (corrupt replica)",
            Unavailable => "service unavailable",
            Io => "I/O error",
            NotPrimary => "master is not the primary",
            SafeMode => "master is in safe mode",
            ClusterMismatch => "cluster id mismatch",
            Internal => "internal error",
            Timeout => "timed out",
            Corrupt => "corrupt data",
            NoSuchChunk => "no such chunk",
            Busy => "busy, retry later",
            InvalidName => "invalid file name",
            Malformed => "malformed request",
            LeaseMismatch => "lease mismatch",
            OperationNotPermitted => "Operation not permitted",
            NoData => "No data available",
            NotSupported => "Operation not supported",
        }
    }

    /// The gRPC code a status with this error carries.
    pub fn grpc_code(self) -> tonic::Code {
        use ErrorCode::*;
        match self {
            NotFound | NoSuchChunk => tonic::Code::NotFound,
            AlreadyExists => tonic::Code::AlreadyExists,
            NotADirectory | IsADirectory | DirectoryNotEmpty | SafeMode | ClusterMismatch
            | StaleVersion | StaleEpoch | NotPrimary | LeaseMismatch => {
                tonic::Code::FailedPrecondition
            }
            NameTooLong | InvalidArgument | InvalidName | Malformed => tonic::Code::InvalidArgument,
            PermissionDenied | OperationNotPermitted => tonic::Code::PermissionDenied,
            NoData => tonic::Code::NotFound,
            NotSupported => tonic::Code::Unimplemented,
            NoSpace => tonic::Code::ResourceExhausted,
            Unavailable | Busy => tonic::Code::Unavailable,
            Timeout => tonic::Code::DeadlineExceeded,
            ChecksumMismatch | Corrupt => tonic::Code::DataLoss,
            Io | Internal | Unspecified => tonic::Code::Internal,
        }
    }

    /// A `tonic::Status` carrying this code in metadata.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        let mut status = tonic::Status::new(self.grpc_code(), message.into());
        if let Ok(v) = (self as i32).to_string().parse() {
            status.metadata_mut().insert(ERROR_CODE_METADATA_KEY, v);
        }
        status
    }

    /// Recovers the code from a status; transport-level failures map to `Unavailable`/`Timeout`.
    pub fn of_status(status: &tonic::Status) -> ErrorCode {
        if let Some(v) = status.metadata().get(ERROR_CODE_METADATA_KEY) {
            if let Some(n) = v.to_str().ok().and_then(|s| s.parse::<i32>().ok()) {
                return ErrorCode::from_i32(n);
            }
        }
        match status.code() {
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::AlreadyExists => ErrorCode::AlreadyExists,
            tonic::Code::InvalidArgument => ErrorCode::InvalidArgument,
            tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
            tonic::Code::ResourceExhausted => ErrorCode::NoSpace,
            tonic::Code::DeadlineExceeded => ErrorCode::Timeout,
            tonic::Code::DataLoss => ErrorCode::Corrupt,
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Internal,
        }
    }

    /// Whether a client may retry the same request (possibly on another replica or master).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable
                | ErrorCode::Timeout
                | ErrorCode::Busy
                | ErrorCode::SafeMode
                | ErrorCode::NotPrimary
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_status() {
        for n in 0..=28 {
            let code = ErrorCode::from_i32(n);
            assert_eq!(code as i32, n, "codes are dense and stable");
            let status = code.status("x");
            assert_eq!(ErrorCode::of_status(&status), code);
        }
        assert_eq!(ErrorCode::from_i32(9999), ErrorCode::Unspecified);
    }
}
