//! Data-plane message headers. Variants are never reordered (bincode encodes the index).

use serde::{Deserialize, Serialize};

use crate::ids::{ChunkId, ChunkVersion, Epoch, LeaseSerial};
use crate::record::RecordId;
use crate::ErrorCode;

/// What every mutation carries so a stale primary or a deposed master can do no harm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub chunk_id: ChunkId,
    pub version: ChunkVersion,
    pub epoch: Epoch,
    pub lease_serial: LeaseSerial,
    /// Reserved for master-signed access tokens.
    pub token: Vec<u8>,
}

/// Write `len` bytes at `offset` of a chunk; the bytes follow as `Data` frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRequest {
    pub fence: Fence,
    pub offset: u64,
    pub len: u64,
    /// The rest of the chain after the receiver, in order.
    pub downstream: Vec<String>,
    /// Fsync data and checksums before acknowledging.
    pub sync: bool,
    /// Mutation serial assigned by the primary (0 from a client); replicas apply in this order.
    pub serial: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteAck {
    /// Bytes of data the replica holds after the write.
    pub chunk_len: u64,
    /// Serial the primary assigned to this mutation.
    pub serial: u64,
}

/// Read `len` bytes at `offset`; a replica returns at most what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRequest {
    pub chunk_id: ChunkId,
    pub version: ChunkVersion,
    pub offset: u64,
    pub len: u64,
    pub token: Vec<u8>,
}

/// From the master: persist a new version (and, with `create`, create an empty chunk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetVersionRequest {
    pub chunk_id: ChunkId,
    pub version: ChunkVersion,
    pub epoch: Epoch,
    pub lease_serial: LeaseSerial,
    pub create: bool,
}

/// From a chunkserver executing a master's replicate command: a whole replica follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateRequest {
    pub chunk_id: ChunkId,
    pub version: ChunkVersion,
    pub epoch: Epoch,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub chunk_id: ChunkId,
    pub version: ChunkVersion,
    pub len: u64,
}

/// Record append: `len` bytes of one framed record (see [`crate::record`]) follow as `Data`.
/// From a client `offset` is `None` and the primary chooses it (the end of its data, or
/// where the chunk already holds this record id); the primary forwards the record to the
/// rest of the chain with the chosen `offset` and its mutation `serial`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendRequest {
    pub fence: Fence,
    pub record_id: RecordId,
    pub len: u64,
    pub downstream: Vec<String>,
    pub sync: bool,
    pub serial: u64,
    pub offset: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendAck {
    /// Where the record starts in the chunk.
    pub offset: u64,
    /// Bytes of data the replica holds after the append.
    pub chunk_len: u64,
    pub serial: u64,
}

/// From a primary to its replicas: the record did not fit; zero-fill the chunk up to
/// `to_len` (the chunk size). Answered `WriteOk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PadRequest {
    pub fence: Fence,
    pub to_len: u64,
    pub downstream: Vec<String>,
    pub sync: bool,
    pub serial: u64,
}

/// From the master, for copy-on-write after a snapshot: copy the local replica of `src` (at
/// `src_version`) as a new replica `dst` at `dst_version` with the lease serial of the
/// grant that follows. Answered `Ok` once the copy is verified and durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyChunkRequest {
    pub src: ChunkId,
    pub src_version: ChunkVersion,
    pub dst: ChunkId,
    pub dst_version: ChunkVersion,
    pub epoch: Epoch,
    pub lease_serial: LeaseSerial,
}

/// Which standby the primary vouches for: the standby named in `in_sync` holds every record
/// the primary of `epoch` has acknowledged. A newer (epoch, serial) replaces an older mark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandbyMark {
    pub epoch: Epoch,
    pub serial: u64,
    /// Id of the in-sync standby; empty: no standby may take over.
    pub in_sync: String,
    /// When `in_sync` is empty: the seq up to which the dropped standby had everything.
    pub out_of_sync_at: u64,
}

impl StandbyMark {
    /// Order of marks: by epoch, then serial.
    pub fn key(&self) -> (Epoch, u64) {
        (self.epoch, self.serial)
    }
}

/// What a master asks of a chunkserver acting as a witness (see the master's `ha` module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WitnessOp {
    /// The primary of `epoch` renews its lease for `lease_ms` and (with `mark`) records
    /// which standby is in sync.
    Renew {
        epoch: Epoch,
        holder_id: String,
        holder_addr: String,
        lease_ms: u64,
        mark: Option<StandbyMark>,
    },
    /// A standby asks for `epoch` (above every epoch the witness knows): granted only when
    /// the current lease has expired and the witness's mark says this standby is in sync.
    Promote {
        epoch: Epoch,
        candidate_id: String,
        candidate_addr: String,
        lease_ms: u64,
    },
    /// The holder gives its lease up early (clean handover).
    Release { epoch: Epoch, holder_id: String },
    /// The witness's state, changing nothing.
    Query,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessRequest {
    /// A witness answers only masters of its own cluster.
    pub cluster_id: String,
    pub op: WitnessOp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessReply {
    pub granted: bool,
    /// Why not, when not granted.
    pub reason: String,
    /// Highest epoch a primary has renewed a lease in (also the data-plane fence).
    pub epoch: Epoch,
    /// Highest epoch promised to a candidate (>= `epoch`).
    pub promised: Epoch,
    pub holder_id: String,
    pub holder_addr: String,
    /// Time left on the current holder's lease, by the witness's clock.
    pub lease_remaining_ms: u64,
    pub mark: StandbyMark,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Write(WriteRequest),
    Read(ReadRequest),
    SetVersion(SetVersionRequest),
    Replicate(ReplicateRequest),
    Ping,
    ChunkInfo {
        chunk_id: ChunkId,
    },
    /// Bulk bytes (the frame payload). `last` marks the final frame of a transfer.
    Data {
        last: bool,
    },
    WriteOk(WriteAck),
    ReadOk {
        len: u64,
    },
    Ok,
    Pong {
        epoch: Epoch,
    },
    ChunkInfoOk(ChunkInfo),
    Error {
        code: ErrorCode,
        message: String,
    },
    // ---- record append (appended: earlier variants keep their bincode index) ----
    /// `Append` → `Data`… → `AppendOk` | `ChunkFull` | `Error`.
    Append(AppendRequest),
    AppendOk(AppendAck),
    /// The primary padded the chunk: append to the next chunk instead.
    ChunkFull {
        chunk_len: u64,
    },
    /// `Pad` → `WriteOk` | `Error` (primary to replicas only).
    Pad(PadRequest),
    // ---- snapshots (appended) ----
    /// `CopyChunk` → `Ok` | `Error` (master to a chunkserver; a local copy, no transfer).
    CopyChunk(CopyChunkRequest),
    // ---- failover witnesses (appended) ----
    /// From a master: a witness-lease request (`WitnessReply` answers).
    Witness(WitnessRequest),
    WitnessReply(WitnessReply),
}

impl Msg {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Msg {
        Msg::Error {
            code,
            message: message.into(),
        }
    }

    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Write(_) => "write",
            Msg::Read(_) => "read",
            Msg::SetVersion(_) => "set_version",
            Msg::Replicate(_) => "replicate",
            Msg::Ping => "ping",
            Msg::ChunkInfo { .. } => "chunk_info",
            Msg::Data { .. } => "data",
            Msg::WriteOk(_) => "write_ok",
            Msg::ReadOk { .. } => "read_ok",
            Msg::Ok => "ok",
            Msg::Pong { .. } => "pong",
            Msg::ChunkInfoOk(_) => "chunk_info_ok",
            Msg::Error { .. } => "error",
            Msg::Append(_) => "append",
            Msg::AppendOk(_) => "append_ok",
            Msg::ChunkFull { .. } => "chunk_full",
            Msg::Pad(_) => "pad",
            Msg::CopyChunk(_) => "copy_chunk",
            Msg::Witness(_) => "witness",
            Msg::WitnessReply(_) => "witness_reply",
        }
    }
}
