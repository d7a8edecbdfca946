//! The one map from client errors to errno values. Every FUSE reply that fails goes
//! through [`errno_of`], so a wire code means the same errno everywhere.
//!
//! Unreachable servers and deadlines become `EIO` (SPEC "CLI contract": a dead master makes
//! FUSE calls fail with EIO, never hang); anything without a better match is `EIO` too.

use rdfs_client::ClientError;
use rdfs_proto::ErrorCode;

/// The errno a FUSE reply carries for `err`.
pub fn errno_of(err: &ClientError) -> i32 {
    match err {
        // A local I/O error already has an errno; keep it when it is a real one.
        ClientError::Io(e) => e.raw_os_error().filter(|n| *n > 0).unwrap_or(libc::EIO),
        other => errno_of_code(other.code()),
    }
}

/// The errno for a wire error code.
pub fn errno_of_code(code: ErrorCode) -> i32 {
    use ErrorCode::*;
    match code {
        NotFound => libc::ENOENT,
        AlreadyExists => libc::EEXIST,
        NotADirectory => libc::ENOTDIR,
        IsADirectory => libc::EISDIR,
        NameTooLong => libc::ENAMETOOLONG,
        InvalidArgument | InvalidName => libc::EINVAL,
        DirectoryNotEmpty => libc::ENOTEMPTY,
        PermissionDenied => libc::EACCES,
        OperationNotPermitted => libc::EPERM,
        NoData => libc::ENODATA,
        NotSupported => libc::EOPNOTSUPP,
        NoSpace => libc::ENOSPC,
        // The client already retried these until its deadline: the caller sees an I/O error.
        Unavailable | Timeout | Busy | SafeMode | NotPrimary => libc::EIO,
        // Data that no replica could vouch for, protocol trouble, server faults.
        ChecksumMismatch | Corrupt | Io | Internal | Malformed | StaleVersion | StaleEpoch
        | NoSuchChunk | LeaseMismatch | ClusterMismatch | Unspecified => libc::EIO,
        #[allow(unreachable_patterns)]
        _ => libc::EIO,
    }
}

/// The fuser errno for `err`.
pub(crate) fn fuse_errno(err: &ClientError) -> fuser::Errno {
    fuser::Errno::from_i32(errno_of(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_codes_map_to_their_posix_errno() {
        let cases = [
            (ErrorCode::NotFound, libc::ENOENT),
            (ErrorCode::AlreadyExists, libc::EEXIST),
            (ErrorCode::NotADirectory, libc::ENOTDIR),
            (ErrorCode::IsADirectory, libc::EISDIR),
            (ErrorCode::NameTooLong, libc::ENAMETOOLONG),
            (ErrorCode::InvalidArgument, libc::EINVAL),
            (ErrorCode::DirectoryNotEmpty, libc::ENOTEMPTY),
            (ErrorCode::PermissionDenied, libc::EACCES),
            (ErrorCode::OperationNotPermitted, libc::EPERM),
            (ErrorCode::NoData, libc::ENODATA),
            (ErrorCode::NotSupported, libc::EOPNOTSUPP),
            (ErrorCode::NoSpace, libc::ENOSPC),
        ];
        for (code, errno) in cases {
            assert_eq!(errno_of_code(code), errno, "{code:?}");
        }
    }

    #[test]
    fn unreachable_servers_and_faults_are_eio() {
        for code in [
            ErrorCode::Unavailable,
            ErrorCode::Timeout,
            ErrorCode::SafeMode,
            ErrorCode::Corrupt,
            ErrorCode::Internal,
            ErrorCode::Unspecified,
        ] {
            assert_eq!(errno_of_code(code), libc::EIO, "{code:?}");
        }
        assert_eq!(
            errno_of(&ClientError::Unavailable("master down".into())),
            libc::EIO
        );
        assert_eq!(errno_of(&ClientError::Timeout("slow".into())), libc::EIO);
    }

    #[test]
    fn local_io_errors_keep_their_errno() {
        let e = ClientError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(errno_of(&e), libc::ENOSPC);
        let e = ClientError::Io(std::io::Error::other("no errno"));
        assert_eq!(errno_of(&e), libc::EIO);
    }
}
