//! Every limit and default as a named constant, with the relations between them asserted.

/// Longest file or directory name, in bytes (POSIX NAME_MAX).
pub const MAX_NAME_LEN: usize = 255;
/// Longest path accepted from a user, in bytes (POSIX PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;
/// Deepest directory nesting a path may have.
pub const MAX_PATH_DEPTH: usize = 512;

/// Checksum granularity on chunkservers: one CRC32 per block.
pub const BLOCK_SIZE: u64 = 64 << 10;
/// Default chunk size (GFS/HDFS style). Tests use smaller chunks (any multiple of BLOCK_SIZE).
pub const DEFAULT_CHUNK_SIZE: u64 = 64 << 20;
/// Smallest chunk size a cluster can be initialised with.
pub const MIN_CHUNK_SIZE: u64 = BLOCK_SIZE;
/// Largest chunk size a cluster can be initialised with.
pub const MAX_CHUNK_SIZE: u64 = 1 << 30;
/// Largest file offset accepted (the chunk index must fit comfortably in u64).
pub const MAX_FILE_SIZE: u64 = 1 << 50;

/// Data-plane packet payload the client and pipeline use for bulk transfers.
pub const PACKET_BYTES: usize = 1 << 20;
/// Largest payload a data-plane frame may carry; a larger length is a malformed frame.
pub const MAX_FRAME_PAYLOAD_BYTES: usize = 4 << 20;
/// Largest bincode header a data-plane frame may carry.
pub const MAX_FRAME_HEADER_BYTES: usize = 64 << 10;
/// Largest gRPC message either side accepts.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 << 20;
/// Most entries one List call returns; clients page with `start_after`.
pub const MAX_LIST_ENTRIES: u32 = 10_000;
/// Longest downstream chain a write may name (replication factor cap).
pub const MAX_REPLICATION: u32 = 16;

/// Default replication factor.
pub const DEFAULT_REPLICATION: u32 = 3;
/// Fewest replicas a new chunk is allocated on when fewer servers are live than the factor.
pub const DEFAULT_MIN_REPLICAS: u32 = 2;
/// Default primary lease length.
pub const DEFAULT_LEASE_MS: u64 = 60_000;
/// Default chunkserver heartbeat interval.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 1_000;
/// Default time without heartbeat after which a chunkserver is declared dead.
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u64 = 10_000;
/// Default client deadline for a whole operation (CLI `--timeout`).
pub const DEFAULT_CLIENT_TIMEOUT_MS: u64 = 15_000;
/// Deadline for one data-plane connect.
pub const DATAPLANE_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Deadline for one data-plane frame to arrive once a transfer has started.
pub const DATAPLANE_IO_TIMEOUT_MS: u64 = 30_000;
/// Most concurrent data-plane connections one chunkserver serves.
pub const MAX_DATAPLANE_CONNECTIONS: usize = 256;

const _: () = assert!((DEFAULT_CHUNK_SIZE).is_multiple_of(BLOCK_SIZE));
const _: () = assert!((MIN_CHUNK_SIZE).is_multiple_of(BLOCK_SIZE));
const _: () = assert!((MAX_CHUNK_SIZE).is_multiple_of(BLOCK_SIZE));
const _: () = assert!(PACKET_BYTES <= MAX_FRAME_PAYLOAD_BYTES);
const _: () = assert!((PACKET_BYTES as u64).is_multiple_of(BLOCK_SIZE));
const _: () = assert!(DEFAULT_MIN_REPLICAS <= DEFAULT_REPLICATION);
const _: () = assert!(DEFAULT_HEARTBEAT_INTERVAL_MS < DEFAULT_HEARTBEAT_TIMEOUT_MS);

/// Checks a chunk size given at cluster initialisation.
pub fn validate_chunk_size(bytes: u64) -> Result<(), String> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&bytes) || !bytes.is_multiple_of(BLOCK_SIZE) {
        return Err(format!(
            "chunk size {bytes} must be a multiple of {BLOCK_SIZE} between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"
        ));
    }
    Ok(())
}

/// Longest failover timeout (= witness lease) a master accepts; chunkservers cap the lease
/// they grant at the same value.
pub const MAX_FAILOVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
