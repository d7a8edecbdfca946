//! Newtypes for ids and counters: a bare `u64` never crosses a crate boundary.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
        )]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }
    };
}

id_type!(
    /// A chunk's 64-bit id, allocated by the master (logged before it is handed out).
    ChunkId
);
id_type!(
    /// A chunk's version: bumped at every lease grant; older replicas are stale.
    ChunkVersion
);
id_type!(
    /// An inode number in the master's namespace. 1 is the root directory.
    InodeId
);
id_type!(
    /// The master's epoch: bumped at every failover, fences deposed masters.
    Epoch
);
id_type!(
    /// Sequence number of an operation-log record.
    OpSeq
);
id_type!(
    /// A chunkserver's id, assigned by the master at registration.
    ChunkserverId
);
id_type!(
    /// Serial of a primary lease; carried by every data-plane mutation.
    LeaseSerial
);

impl InodeId {
    pub const ROOT: InodeId = InodeId(1);
}

impl ChunkId {
    /// Chunk files are named by id in hex; 0 is never allocated.
    pub fn file_stem(self) -> String {
        format!("{:016x}", self.0)
    }
}
