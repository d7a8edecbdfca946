//! Errors that stop the chunkserver (returned by [`crate::run`]).

use crate::state::StateError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ChunkserverError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("chunk store: {0}")]
    Store(#[from] StoreError),
    #[error(
        "cluster id mismatch: this data directory belongs to cluster {ours:?} but master {master} \
         answered {theirs:?}; refusing it (nothing was deleted)"
    )]
    ClusterMismatch {
        ours: String,
        /// The master's cluster id, or its refusal message when it refused us.
        theirs: String,
        master: String,
    },
    #[error("no master address configured")]
    NoMasters,
    #[error("data-plane listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("background task failed: {0}")]
    Task(String),
}
