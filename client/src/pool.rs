//! A small pool of idle data-plane connections per chunkserver address, so sequential
//! reads and writes do not pay a TCP handshake each. A connection goes back to the pool
//! only after a conversation finished cleanly (the stream is at a frame boundary).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use rdfs_proto::dataplane::{DataConn, FrameError};
use rdfs_proto::limits::{DATAPLANE_CONNECT_TIMEOUT_MS, DATAPLANE_IO_TIMEOUT_MS};
use tokio::time::Instant;

/// Idle connections kept per address.
const IDLE_PER_ADDR: usize = 4;
/// Addresses with idle connections kept at once (a cluster rarely has more chunkservers).
const MAX_POOLED_ADDRS: usize = 1024;

/// A checked-out connection and whether it came from the pool (a pooled one may have been
/// closed by the server while idle, so its first failure deserves one fresh retry).
pub(crate) struct Checkout {
    pub conn: DataConn,
    pub reused: bool,
}

#[derive(Default)]
pub(crate) struct ConnPool {
    idle: Mutex<HashMap<String, Vec<DataConn>>>,
}

impl ConnPool {
    /// An idle connection to `addr`, or a new one; I/O deadline set from `deadline`.
    pub(crate) async fn get(&self, addr: &str, deadline: Instant) -> Result<Checkout, FrameError> {
        let pooled = self.idle.lock().get_mut(addr).and_then(Vec::pop);
        let (mut conn, reused) = match pooled {
            Some(conn) => (conn, true),
            None => (Self::connect(addr, deadline).await?, false),
        };
        conn.set_io_timeout(io_timeout(deadline));
        Ok(Checkout { conn, reused })
    }

    /// A new connection, never from the pool.
    pub(crate) async fn fresh(
        &self,
        addr: &str,
        deadline: Instant,
    ) -> Result<DataConn, FrameError> {
        let mut conn = Self::connect(addr, deadline).await?;
        conn.set_io_timeout(io_timeout(deadline));
        Ok(conn)
    }

    async fn connect(addr: &str, deadline: Instant) -> Result<DataConn, FrameError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let limit = Duration::from_millis(DATAPLANE_CONNECT_TIMEOUT_MS).min(remaining);
        DataConn::connect_timeout(addr, limit).await
    }

    /// Returns a connection whose last conversation completed.
    pub(crate) fn put(&self, conn: DataConn) {
        let mut idle = self.idle.lock();
        if idle.len() >= MAX_POOLED_ADDRS && !idle.contains_key(conn.peer()) {
            return;
        }
        let list = idle.entry(conn.peer().to_string()).or_default();
        if list.len() < IDLE_PER_ADDR {
            list.push(conn);
        }
    }

    /// Drops idle connections to `addr` (after it failed).
    pub(crate) fn forget(&self, addr: &str) {
        self.idle.lock().remove(addr);
    }
}

/// Per-frame I/O deadline: the data-plane default, cut to what is left of the operation.
fn io_timeout(deadline: Instant) -> Duration {
    let remaining = deadline.saturating_duration_since(Instant::now());
    Duration::from_millis(DATAPLANE_IO_TIMEOUT_MS)
        .min(remaining)
        .max(Duration::from_millis(1))
}
