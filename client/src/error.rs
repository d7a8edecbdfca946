//! The client's error type: what a caller (CLI, FUSE) needs to decide what to do and to print
//! `dfs: PATH: cause`. `Display` is the cause text only; callers add the path themselves.

use rdfs_proto::dataplane::FrameError;
use rdfs_proto::ErrorCode;

/// Every error the client library returns.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The master (or a chunkserver) answered with an error about `path`.
    #[error("{}", remote_text(*.code, .path, .message))]
    Remote {
        path: String,
        code: ErrorCode,
        message: String,
    },
    /// No master or chunkserver could be reached.
    #[error("{}", describe_with_detail(ErrorCode::Unavailable, .0))]
    Unavailable(String),
    /// The operation did not finish within its deadline.
    #[error("{}", describe_with_detail(ErrorCode::Timeout, .0))]
    Timeout(String),
    /// No replica could return verified bytes (every copy failed its checksum).
    #[error("{}", describe_with_detail(ErrorCode::Corrupt, .0))]
    Corrupt(String),
    /// A peer answered with something the protocol does not allow.
    #[error("{}", describe_with_detail(ErrorCode::Malformed, .0))]
    Protocol(String),
    /// Local I/O (the reader or writer handed to put/get).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The cause of a remote error. Masters often phrase details as `PATH: cause (context)`:
/// the caller prints the path already, so a detail that repeats it is shortened, and a detail
/// that already states the cause is printed instead of the bare cause.
fn remote_text(code: ErrorCode, path: &str, detail: &str) -> String {
    let cause = code.describe();
    let detail = detail
        .strip_prefix(path)
        .and_then(|rest| rest.strip_prefix(": "))
        .filter(|_| !path.is_empty())
        .unwrap_or(detail);
    if detail.contains(cause) {
        detail.to_string()
    } else {
        describe_with_detail(code, detail)
    }
}

/// Result alias used across the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

fn describe_with_detail(code: ErrorCode, detail: &str) -> String {
    let cause = code.describe();
    if detail.is_empty() || detail == cause {
        cause.to_string()
    } else {
        format!("{cause} ({detail})")
    }
}

impl ClientError {
    /// The wire error code this error corresponds to (FUSE maps it to an errno).
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Remote { code, .. } => *code,
            ClientError::Unavailable(_) => ErrorCode::Unavailable,
            ClientError::Timeout(_) => ErrorCode::Timeout,
            ClientError::Corrupt(_) => ErrorCode::Corrupt,
            ClientError::Protocol(_) => ErrorCode::Malformed,
            ClientError::Io(_) => ErrorCode::Io,
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.code().is_retryable()
    }

    /// An error about `path` with a wire code and no further detail.
    pub(crate) fn remote(path: &str, code: ErrorCode, message: impl Into<String>) -> ClientError {
        ClientError::Remote {
            path: path.to_string(),
            code,
            message: message.into(),
        }
    }

    /// Maps a control-plane status about `path`. Transport failures become `Unavailable`.
    pub(crate) fn from_status(path: &str, master: &str, status: &tonic::Status) -> ClientError {
        let code = ErrorCode::of_status(status);
        match code {
            ErrorCode::Unavailable if !has_wire_code(status) => {
                ClientError::Unavailable(format!("master {master}: {}", status.message()))
            }
            ErrorCode::Timeout if !has_wire_code(status) => {
                ClientError::Timeout(format!("master {master}: {}", status.message()))
            }
            _ => ClientError::remote(path, code, status.message()),
        }
    }

    /// Maps a data-plane failure talking to `peer`.
    pub(crate) fn from_frame(peer: &str, err: &FrameError) -> ClientError {
        match err {
            FrameError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                ClientError::Timeout(format!("chunkserver {peer}: {e}"))
            }
            FrameError::Io(_) | FrameError::Closed => {
                ClientError::Unavailable(format!("chunkserver {peer}: {err}"))
            }
            _ => ClientError::Protocol(format!("chunkserver {peer}: {err}")),
        }
    }
}

/// True when the status carries an rdfs error code (the master itself answered).
fn has_wire_code(status: &tonic::Status) -> bool {
    status
        .metadata()
        .get(rdfs_proto::error_code::ERROR_CODE_METADATA_KEY)
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_errors_keep_their_code_and_print_the_cause() {
        let status = ErrorCode::NotFound.status("no entry b in /a");
        let err = ClientError::from_status("/a/b", "m:1", &status);
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert_eq!(
            err.to_string(),
            "No such file or directory (no entry b in /a)"
        );
        match err {
            ClientError::Remote { path, .. } => assert_eq!(path, "/a/b"),
            other => panic!("expected Remote, got {other:?}"),
        }
    }

    #[test]
    fn a_detail_repeating_path_and_cause_is_shortened() {
        let err = ClientError::remote(
            "/nope",
            ErrorCode::NotFound,
            "/nope: No such file or directory (path)",
        );
        assert_eq!(err.to_string(), "No such file or directory (path)");
        let err = ClientError::remote(
            "/a",
            ErrorCode::DirectoryNotEmpty,
            "/a -> /b/a: Directory not empty (rename destination)",
        );
        assert_eq!(
            err.to_string(),
            "/a -> /b/a: Directory not empty (rename destination)"
        );
    }

    #[test]
    fn empty_or_redundant_detail_is_not_repeated() {
        let err = ClientError::remote("/x", ErrorCode::AlreadyExists, "");
        assert_eq!(err.to_string(), "File exists");
        let err = ClientError::remote("/x", ErrorCode::AlreadyExists, "File exists");
        assert_eq!(err.to_string(), "File exists");
    }

    #[test]
    fn transport_failures_become_unavailable_naming_the_master() {
        let status = tonic::Status::unavailable("tcp connect error: Connection refused");
        let err = ClientError::from_status("/x", "127.0.0.1:9", &status);
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            "service unavailable (master 127.0.0.1:9: tcp connect error: Connection refused)"
        );
        let status = tonic::Status::deadline_exceeded("slow");
        let err = ClientError::from_status("/x", "m:1", &status);
        assert!(matches!(err, ClientError::Timeout(_)));
    }

    #[test]
    fn safe_mode_from_the_master_is_retryable_but_keeps_its_code() {
        let status = ErrorCode::SafeMode.status("waiting for block reports");
        let err = ClientError::from_status("/x", "m:1", &status);
        assert_eq!(err.code(), ErrorCode::SafeMode);
        assert!(err.is_retryable());
        let status = ErrorCode::PermissionDenied.status("");
        assert!(!ClientError::from_status("/x", "m:1", &status).is_retryable());
    }

    #[test]
    fn data_plane_failures_map_by_kind() {
        let closed = ClientError::from_frame("cs:1", &FrameError::Closed);
        assert_eq!(closed.code(), ErrorCode::Unavailable);
        let timed_out = ClientError::from_frame(
            "cs:1",
            &FrameError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "t")),
        );
        assert_eq!(timed_out.code(), ErrorCode::Timeout);
        let bad = ClientError::from_frame("cs:1", &FrameError::PayloadChecksum);
        assert_eq!(bad.code(), ErrorCode::Malformed);
        assert!(bad.to_string().contains("cs:1"));
    }
}
